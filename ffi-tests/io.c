/* mailtls C test suite: transport callbacks with fault injection, config and
 * session helpers, application I/O through a session. */
#include "support.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- callbacks ---- */

void io_init(struct io_ctx *c, int fd) {
    memset(c, 0, sizeof *c);
    c->fd = fd;
}

struct io_ctx *io_new(int fd) {
    struct io_ctx *c = malloc(sizeof *c);
    io_init(c, fd);
    defer_call(free, c);
    return c;
}

int32_t io_read(void *ud, uint8_t *buf, uintptr_t len, uintptr_t *out_n) {
    struct io_ctx *c = ud;
    c->rcalls++;
    if (c->read_errno)
        return c->read_errno;
    if (c->eagain_alternate && c->rcalls % 2 == 1) {
        c->eagains++;
        c->read_eagains++;
        c->last_block = 'r';
        return EAGAIN;
    }
    size_t want = len;
    if (c->max_chunk && want > c->max_chunk)
        want = c->max_chunk;
    if (c->canned_pos < c->ncanned) {
        size_t k = c->ncanned - c->canned_pos;
        if (k > want)
            k = want;
        memcpy(buf, c->canned + c->canned_pos, k);
        c->canned_pos += k;
        *out_n = k;
        return 0;
    }
    ssize_t n;
    do
        n = recv(c->fd, buf, want, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) /* SO_RCVTIMEO expired: never hang the caller */
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? ETIMEDOUT : errno;
    size_t k = (size_t)n < sizeof c->tap - c->ntap ? (size_t)n : sizeof c->tap - c->ntap;
    memcpy(c->tap + c->ntap, buf, k);
    c->ntap += k;
    *out_n = (uintptr_t)n;
    return 0;
}

int32_t io_write(void *ud, const uint8_t *buf, uintptr_t len, uintptr_t *out_n) {
    struct io_ctx *c = ud;
    c->wcalls++;
    if (c->eagain_alternate && c->wcalls % 2 == 1) {
        c->eagains++;
        c->write_eagains++;
        c->last_block = 'w';
        return EAGAIN;
    }
    size_t want = len;
    if (c->max_chunk && want > c->max_chunk)
        want = c->max_chunk;
    if (c->swallow_until_starttls) {
        /* Swallow (pretend to send) until "STARTTLS\r\n" has gone by. */
        for (size_t i = 0; i < want; i++) {
            memmove(c->wtail, c->wtail + 1, sizeof c->wtail - 2);
            c->wtail[sizeof c->wtail - 2] = (char)buf[i];
            c->wtail[sizeof c->wtail - 1] = 0;
            if (strstr(c->wtail, "STARTTLS\r\n")) {
                c->swallow_until_starttls = 0;
                *out_n = i + 1;
                return 0;
            }
        }
        *out_n = want;
        return 0;
    }
    ssize_t n;
    do
        n = send(c->fd, buf, want, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? ETIMEDOUT : errno;
    *out_n = (uintptr_t)n;
    c->written += (size_t)n;
    return 0;
}

/* ---- configs ---- */

mailtls_config_builder *client_builder(uint32_t policy) {
    mailtls_config_builder *b = NULL;
    if (!CHECK_RC(mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, &b), MAILTLS_RESULT_OK))
        return NULL;
    defer_builder(b);
    CHECK_RC(mailtls_config_builder_set_policy(b, policy), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_config_builder_set_helo_name(b, HELO_NAME), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_config_builder_set_timeout_ms(b, STEP_TIMEOUT_MS), MAILTLS_RESULT_OK);
    return b;
}

const mailtls_config *build_config(mailtls_config_builder *b) {
    const mailtls_config *cfg = NULL;
    if (b == NULL)
        return NULL;
    mailtls_result rc = mailtls_config_builder_build(b, &cfg);
    if (rc != MAILTLS_RESULT_OK) {
        char why[512];
        mailtls_config_builder_last_error(b, why, sizeof why);
        test_fail(__FILE__, __LINE__, "build: %s: %s", mailtls_result_name(rc), why);
        return NULL;
    }
    defer_config(cfg);
    return cfg;
}

const mailtls_config *client_cfg(uint32_t policy, const char *cafile) {
    mailtls_config_builder *b = client_builder(policy);
    if (b && cafile)
        CHECK_RC(mailtls_config_builder_set_ca_file(b, cafile), MAILTLS_RESULT_OK);
    return build_config(b);
}

mailtls_config_builder *server_builder(const char *hostname, char *pem_out, size_t pem_cap) {
    mailtls_config_builder *b = NULL;
    if (!CHECK_RC(mailtls_config_builder_new(MAILTLS_ROLE_SERVER, &b), MAILTLS_RESULT_OK))
        return NULL;
    defer_builder(b);
    CHECK_RC(mailtls_config_builder_set_timeout_ms(b, STEP_TIMEOUT_MS), MAILTLS_RESULT_OK);
    if (hostname) {
        uintptr_t written = 0;
        if (!CHECK_RC(mailtls_config_builder_generate_self_signed(b, hostname, pem_out, pem_cap, &written),
                      MAILTLS_RESULT_OK))
            return NULL;
        if (pem_out)
            CHECK(written == strlen(pem_out) && written > 100);
    }
    return b;
}

const mailtls_config *server_cfg(const char *hostname, char *pem_out, size_t pem_cap) {
    return build_config(server_builder(hostname, pem_out, pem_cap));
}

const char *temp_file(const char *text) {
    static char paths[8][64];
    static int next;
    char *p = paths[next++ % 8];
    strcpy(p, "/tmp/mailtls-test-XXXXXX");
    int fd = mkstemp(p);
    if (fd < 0) {
        test_fail(__FILE__, __LINE__, "mkstemp: %s", strerror(errno));
        return "/nonexistent";
    }
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n)
        test_fail(__FILE__, __LINE__, "write %s: %s", p, strerror(errno));
    close(fd);
    defer_unlink(p);
    return p;
}

mailtls_session *client_session(const mailtls_config *cfg, const char *host) {
    mailtls_session *s = NULL;
    if (cfg == NULL)
        return NULL;
    if (!CHECK_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, host, 25, &s), MAILTLS_RESULT_OK))
        return NULL;
    defer_session(s);
    return s;
}

mailtls_session *client_on_fd(const mailtls_config *cfg, const char *host, int fd) {
    mailtls_session *s = client_session(cfg, host);
    if (s && !CHECK_RC(mailtls_session_set_fd(s, fd), MAILTLS_RESULT_OK))
        return NULL;
    return s;
}

/* ---- driving sessions ---- */

#define MAX_RETRIES 200000

mailtls_result negotiate_all(mailtls_session *s, struct io_ctx *ctx, int *wouldblocks) {
    mailtls_result rc = mailtls_client_negotiate(s);
    int n = 0;
    while (rc == MAILTLS_RESULT_WOULD_BLOCK && n < MAX_RETRIES) {
        n++;
        if (ctx) {
            int wr = mailtls_session_wants_read(s), ww = mailtls_session_wants_write(s);
            if (wr != (ctx->last_block == 'r') || ww != (ctx->last_block == 'w')) {
                test_fail(__FILE__, __LINE__,
                          "after WOULD_BLOCK #%d the %s callback blocked, but wants_read=%d wants_write=%d", n,
                          ctx->last_block == 'r' ? "read" : "write", wr, ww);
                ctx = NULL; /* report once */
            }
        }
        /* Alternate the two documented ways of resuming. */
        rc = (n % 2) ? mailtls_session_continue(s) : mailtls_client_negotiate(s);
    }
    if (wouldblocks)
        *wouldblocks = n;
    return rc;
}

mailtls_result session_write_all(mailtls_session *s, const void *buf, size_t n) {
    const unsigned char *p = buf;
    size_t off = 0;
    int tries = 0;
    while (off < n) {
        uintptr_t k = 0;
        mailtls_result rc = mailtls_session_write(s, p + off, n - off, &k);
        if (rc == MAILTLS_RESULT_WOULD_BLOCK) {
            if (++tries > MAX_RETRIES)
                return rc;
            continue;
        }
        if (rc != MAILTLS_RESULT_OK)
            return rc;
        off += k;
    }
    for (;;) {
        mailtls_result rc = mailtls_session_flush(s);
        if (rc != MAILTLS_RESULT_WOULD_BLOCK)
            return rc;
        if (++tries > MAX_RETRIES)
            return rc;
    }
}

mailtls_result session_read_line(mailtls_session *s, struct linebuf *lb, char *out, size_t cap) {
    int tries = 0;
    for (;;) {
        char *nl = memchr(lb->b, '\n', lb->n);
        if (nl) {
            size_t l = (size_t)(nl - lb->b) + 1;
            size_t c = l < cap - 1 ? l : cap - 1;
            memcpy(out, lb->b, c);
            out[c] = 0;
            memmove(lb->b, lb->b + l, lb->n - l);
            lb->n -= l;
            return MAILTLS_RESULT_OK;
        }
        if (lb->n == sizeof lb->b)
            return MAILTLS_RESULT_LINE_TOO_LONG;
        uintptr_t k = 0;
        mailtls_result rc = mailtls_session_read(s, (uint8_t *)lb->b + lb->n, sizeof lb->b - lb->n, &k);
        if (rc == MAILTLS_RESULT_WOULD_BLOCK) {
            if (++tries > MAX_RETRIES)
                return rc;
            continue;
        }
        if (rc != MAILTLS_RESULT_OK)
            return rc;
        lb->n += k;
    }
}

mailtls_result session_command(mailtls_session *s, struct linebuf *lb, const char *cmd, char *out, size_t cap) {
    mailtls_result rc = session_write_all(s, cmd, strlen(cmd));
    if (rc != MAILTLS_RESULT_OK)
        return rc;
    for (;;) {
        rc = session_read_line(s, lb, out, cap);
        if (rc != MAILTLS_RESULT_OK || strlen(out) < 4 || out[3] != '-')
            return rc;
    }
}

const char *big_message(void) {
    static char msg[40000];
    if (msg[0] == 0) {
        size_t n = 0;
        n += (size_t)snprintf(msg + n, sizeof msg - n, "From: a@example.test\r\nTo: b@example.test\r\n"
                                                       "Subject: over STARTTLS\r\n\r\n");
        for (int i = 0; n + 100 < sizeof msg - 200 && i < 400; i++)
            n += (size_t)snprintf(msg + n, sizeof msg - n, "line %03d of a message longer than one TLS record: "
                                                           "the quick brown fox jumps.\r\n", i);
        snprintf(msg + n, sizeof msg - n, "..a dot-stuffed line\r\nthe end\r\n");
    }
    return msg;
}
