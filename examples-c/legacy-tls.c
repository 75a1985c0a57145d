/* mailtls-server's legacy TLS engine on the system OpenSSL (see legacy-tls.h). */
#include "legacy-tls.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

struct legacy_ctx {
    SSL_CTX *ctx;
};

struct legacy_conn {
    SSL *ssl;
    int fd;
    unsigned timeout_s;
};

/* A BIO that serves the bytes already read first, then the socket. */
struct prefix_bio {
    int fd;
    uint8_t *pre;
    size_t npre, off;
};

static BIO_METHOD *prefix_method;

static int prefix_read(BIO *b, char *out, int len)
{
    struct prefix_bio *p = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (p->off < p->npre) {
        size_t n = p->npre - p->off;
        if (n > (size_t)len)
            n = (size_t)len;
        memcpy(out, p->pre + p->off, n);
        p->off += n;
        return (int)n;
    }
    ssize_t n;
    do
        n = read(p->fd, out, (size_t)len);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_read(b);
    return (int)n;
}

static int prefix_write(BIO *b, const char *in, int len)
{
    struct prefix_bio *p = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do
        n = write(p->fd, in, (size_t)len);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(b);
    return (int)n;
}

static long prefix_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int prefix_destroy(BIO *b)
{
    struct prefix_bio *p = BIO_get_data(b);
    if (p) {
        free(p->pre);
        free(p);
    }
    BIO_set_data(b, NULL);
    return 1;
}

static void set_err(char *err, size_t cap, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, cap, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
}

struct legacy_ctx *legacy_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errcap)
{
    if (!prefix_method) {
        prefix_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mailtls prefix");
        if (!prefix_method || !BIO_meth_set_read(prefix_method, prefix_read) ||
            !BIO_meth_set_write(prefix_method, prefix_write) || !BIO_meth_set_ctrl(prefix_method, prefix_ctrl) ||
            !BIO_meth_set_destroy(prefix_method, prefix_destroy)) {
            set_err(err, errcap, "BIO_meth_new");
            return NULL;
        }
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        set_err(err, errcap, "SSL_CTX_new");
        return NULL;
    }
    /* Old clients only get here: every version OpenSSL was built with, and the old
     * ciphers they need (security level 0), on this one connection. */
    SSL_CTX_set_min_proto_version(ctx, 0);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_security_level(ctx, 0);
    if (!SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0") ||
        SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        set_err(err, errcap, "loading the certificate and key into OpenSSL");
        SSL_CTX_free(ctx);
        return NULL;
    }
    struct legacy_ctx *x = calloc(1, sizeof *x);
    if (!x) {
        SSL_CTX_free(ctx);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    x->ctx = ctx;
    return x;
}

void legacy_ctx_free(struct legacy_ctx *x)
{
    if (!x)
        return;
    SSL_CTX_free(x->ctx);
    free(x);
}

/* Waits for the direction OpenSSL wants; 0 ready, -1 timeout or error. */
static int wait_for(struct legacy_conn *c, int r)
{
    int e = SSL_get_error(c->ssl, r);
    short ev = e == SSL_ERROR_WANT_WRITE ? POLLOUT : e == SSL_ERROR_WANT_READ ? POLLIN : 0;
    if (!ev)
        return -1;
    struct pollfd p = {.fd = c->fd, .events = ev};
    int n;
    do
        n = poll(&p, 1, (int)c->timeout_s * 1000);
    while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -1;
}

struct legacy_conn *legacy_accept(struct legacy_ctx *x, int fd, const uint8_t *pre, size_t npre, unsigned timeout_s,
                                  char *err, size_t errcap)
{
    struct legacy_conn *c = calloc(1, sizeof *c);
    struct prefix_bio *p = calloc(1, sizeof *p);
    BIO *b = BIO_new(prefix_method);
    if (!c || !p || !b || (npre && !(p->pre = malloc(npre)))) {
        free(c);
        if (p)
            free(p->pre);
        free(p);
        BIO_free(b);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    if (npre)
        memcpy(p->pre, pre, npre);
    p->npre = npre;
    p->fd = fd;
    BIO_set_data(b, p);
    BIO_set_init(b, 1);
    c->fd = fd;
    c->timeout_s = timeout_s;
    c->ssl = SSL_new(x->ctx);
    if (!c->ssl) {
        BIO_free(b);
        free(c);
        set_err(err, errcap, "SSL_new");
        return NULL;
    }
    SSL_set_bio(c->ssl, b, b);
    for (;;) {
        int r = SSL_accept(c->ssl);
        if (r == 1)
            return c;
        if (wait_for(c, r) < 0) {
            set_err(err, errcap, "OpenSSL handshake");
            SSL_free(c->ssl);
            free(c);
            return NULL;
        }
    }
}

int legacy_read(struct legacy_conn *c, uint8_t *buf, size_t cap, size_t *got, char *err, size_t errcap)
{
    for (;;) {
        int r = SSL_read(c->ssl, buf, cap > 0x7fffffff ? 0x7fffffff : (int)cap);
        if (r > 0) {
            *got = (size_t)r;
            return 0;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {
            *got = 0;
            return 0;
        }
        if (wait_for(c, r) < 0) {
            set_err(err, errcap, e == SSL_ERROR_WANT_READ ? "timeout" : "OpenSSL read");
            return -1;
        }
    }
}

int legacy_write(struct legacy_conn *c, const uint8_t *buf, size_t n, char *err, size_t errcap)
{
    while (n > 0) {
        int r = SSL_write(c->ssl, buf, n > 0x7fffffff ? 0x7fffffff : (int)n);
        if (r > 0) {
            buf += r;
            n -= (size_t)r;
            continue;
        }
        if (wait_for(c, r) < 0) {
            set_err(err, errcap, "OpenSSL write");
            return -1;
        }
    }
    return 0;
}

const char *legacy_version(const struct legacy_conn *c)
{
    return SSL_get_version(c->ssl);
}

const char *legacy_cipher(const struct legacy_conn *c)
{
    return SSL_get_cipher_name(c->ssl);
}

void legacy_close(struct legacy_conn *c)
{
    if (!c)
        return;
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
    free(c);
}

const char *legacy_engine_name(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}
