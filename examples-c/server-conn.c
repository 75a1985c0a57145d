/*
 * mailtls-server's connection layer, shared by every dialogue: the options and the
 * names they set, the log, one connection's line reader sources (plaintext socket,
 * TLS session, OpenSSL after a handoff), the reply queue and its flush, and the two
 * ways TLS starts (STARTTLS after a protocol's verb, implicit TLS before the greeting).
 *
 * Depends on common.c, legacy-tls.c and the library only: nothing here knows a
 * dialogue, so every dialogue file can use it and none of them is used by it.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "legacy-tls.h"
#include "server.h"

const char *const prog = "mailtls-server";

struct options opt = {
    .proto = MAILTLS_PROTO_SMTP,
    .timeout = 300,
    .max_size = 10 * 1024 * 1024,
};
char hostname[256];
struct legacy_ctx *handoff_engine;
const char *const end_names[] = {"quit", "eof", "timeout", "error", "too-many-errors", "tls-failed"};

void logmsg(const char *peer, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (peer)
        fprintf(stderr, "%s[%d]: %s: %s\n", prog, (int)getpid(), peer, buf);
    else
        fprintf(stderr, "%s[%d]: %s\n", prog, (int)getpid(), buf);
}

/* ---- the line reader's sources ---- */

/* The reader's sources: called only when every buffered line was handled, so this
 * is where queued replies go out (one write for a whole pipelined batch). */
static int fill_plain(void *ud, uint8_t *buf, size_t cap, size_t *got)
{
    struct conn *c = ud;
    flush(c);
    if (c->dead)
        return LR_ERROR;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, (int)(opt.timeout * 1000u));
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return LR_TIMEOUT;
    if (r < 0) {
        snprintf(c->err, sizeof c->err, "poll: %s", strerror(errno));
        return LR_ERROR;
    }
    ssize_t n;
    do
        n = read(c->fd, buf, cap);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return LR_EOF;
    if (n < 0) {
        snprintf(c->err, sizeof c->err, "read: %s", strerror(errno));
        return errno == ECONNRESET ? LR_EOF : LR_ERROR;
    }
    *got = (size_t)n;
    return LR_LINE;
}

static int fill_legacy(void *ud, uint8_t *buf, size_t cap, size_t *got)
{
    struct conn *c = ud;
    flush(c);
    if (c->dead)
        return LR_ERROR;
    if (legacy_read(c->legacy, buf, cap, got, c->err, sizeof c->err) < 0)
        return strcmp(c->err, "timeout") == 0 ? LR_TIMEOUT : LR_ERROR;
    return *got ? LR_LINE : LR_EOF;
}

static int fill_tls(void *ud, uint8_t *buf, size_t cap, size_t *got)
{
    struct conn *c = ud;
    flush(c);
    if (c->dead)
        return LR_ERROR;
    uint32_t rc = mailtls_session_read(c->s, buf, cap, got);
    if (rc == MAILTLS_RESULT_OK)
        return LR_LINE;
    snprintf(c->err, sizeof c->err, "%s [%s]", mailtls_session_last_error(c->s), mailtls_result_name(rc));
    if (rc == MAILTLS_RESULT_CLOSED || rc == MAILTLS_RESULT_PEER_CLOSED)
        return LR_EOF;
    if (rc == MAILTLS_RESULT_TIMEOUT)
        return LR_TIMEOUT;
    return LR_ERROR;
}

/* ---- the reply queue ---- */

/* Writes out the queued replies through the session (plaintext or TLS). */
void flush(struct conn *c)
{
    const uint8_t *p = (const uint8_t *)c->out.p;
    size_t left = c->out.len;
    if (c->legacy && !c->dead && left > 0 && legacy_write(c->legacy, p, left, c->err, sizeof c->err) < 0)
        c->dead = true;
    if (c->legacy)
        left = 0;
    while (!c->dead && left > 0) {
        size_t w = 0;
        uint32_t rc = mailtls_session_write(c->s, p, left, &w);
        if (rc != MAILTLS_RESULT_OK) {
            snprintf(c->err, sizeof c->err, "write: %s [%s]", mailtls_session_last_error(c->s),
                     mailtls_result_name(rc));
            c->dead = true;
            break;
        }
        p += w;
        left -= w;
    }
    c->out.len = 0;
}

/* Queues one reply line (CRLF added). */
void reply(struct conn *c, const char *fmt, ...)
{
    if (c->dead)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 3)
        n = (int)sizeof buf - 3;
    if (opt.verbose)
        logmsg(c->peer, "S: %.*s", n, buf);
    memcpy(buf + n, "\r\n", 2);
    if (sb_append(&c->out, buf, (size_t)n + 2) < 0) {
        snprintf(c->err, sizeof c->err, "out of memory");
        c->dead = true;
    }
}

/* Sends a ready-made reply line (with CRLF) from the library. */
void reply_raw(struct conn *c, const char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        n--;
    reply(c, "%.*s", (int)n, line);
}

void reply_bytes(struct conn *c, const void *p, size_t n)
{
    if (c->dead)
        return;
    if (sb_append(&c->out, p, n) < 0) {
        snprintf(c->err, sizeof c->err, "out of memory");
        c->dead = true;
    }
}

int write_all(int fd, const void *p, size_t n)
{
    const char *q = p;
    while (n > 0) {
        ssize_t w = write(fd, q, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- a new connection ---- */

struct conn *conn_new(int fd, const char *peer)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->peer = peer;
    snprintf(c->ip, sizeof c->ip, "%s", peer);
    char *colon = strrchr(c->ip, ':');
    if (colon)
        *colon = '\0';
    if (c->ip[0] == '[') {
        memmove(c->ip, c->ip + 1, strlen(c->ip));
        char *rb = strchr(c->ip, ']');
        if (rb)
            *rb = '\0';
    }
    lr_init(&c->lr, fill_plain, c);
    return c;
}

/* ---- starting TLS ---- */

/* After MAILTLS_RESULT_HANDOFF (a hello rustls does not serve, after STARTTLS or on
 * an implicit-TLS port): OpenSSL continues from the bytes the library already read.
 * 1: TLS is up through OpenSSL; -1: the connection must end. */
static int hand_off(struct conn *c, enum end_reason *why)
{
    const uint8_t *pre = NULL;
    size_t npre = 0;
    mailtls_session_handoff_bytes(c->s, &pre, &npre);
    c->legacy = legacy_accept(handoff_engine, c->fd, pre, npre, opt.timeout, c->err, sizeof c->err);
    if (!c->legacy) {
        logmsg(c->peer, "handoff to OpenSSL failed: %s", c->err);
        *why = END_TLS_FAILED;
        return -1;
    }
    snprintf(c->lver, sizeof c->lver, "%s", legacy_version(c->legacy));
    snprintf(c->lcipher, sizeof c->lcipher, "%s", legacy_cipher(c->legacy));
    logmsg(c->peer, "%s hello handed off: OpenSSL negotiated %s %s",
           mailtls_hello_name(mailtls_report_hello(mailtls_session_report(c->s))), legacy_version(c->legacy),
           legacy_cipher(c->legacy));
    c->tls = true;
    lr_init(&c->lr, fill_legacy, c);
    return 1;
}

int start_tls(struct conn *c, enum end_reason *why)
{
    flush(c); /* our earlier replies go out before the library's go */
    if (c->dead) {
        *why = END_ERROR;
        return -1;
    }
    const uint8_t *pending;
    size_t npending = lr_pending(&c->lr, &pending);
    uint32_t rc = mailtls_server_starttls(c->s, pending, npending);
    /* Whatever followed STARTTLS in the buffer is never executed. */
    lr_discard(&c->lr);
    if (rc == MAILTLS_RESULT_OK) {
        c->tls = true;
        lr_init(&c->lr, fill_tls, c);
        return 1;
    }
    if (rc == MAILTLS_RESULT_HANDOFF && handoff_engine)
        return hand_off(c, why);
    if (rc == MAILTLS_RESULT_TLS_UNAVAILABLE || rc == MAILTLS_RESULT_TLS_ALREADY_ACTIVE ||
        rc == MAILTLS_RESULT_STARTTLS_NOT_ALLOWED) {
        /* The library sent the protocol's refusal itself: go on as before. */
        if (npending) {
            c->discarded += npending;
            logmsg(c->peer, "discarded %zu bytes pipelined after STARTTLS", npending);
        }
        logmsg(c->peer, "STARTTLS refused: %s", mailtls_session_last_error(c->s));
        return 0;
    }
    snprintf(c->err, sizeof c->err, "%s [%s]", mailtls_session_last_error(c->s), mailtls_result_name(rc));
    logmsg(c->peer, "STARTTLS failed: %s", c->err);
    *why = END_TLS_FAILED;
    return -1;
}

/* RFC 8314: the handshake comes first, the greeting goes out encrypted. */
int start_implicit(struct conn *c, enum end_reason *why)
{
    uint32_t rc = mailtls_server_start_implicit(c->s);
    if (rc == MAILTLS_RESULT_HANDOFF && handoff_engine)
        return hand_off(c, why);
    if (rc != MAILTLS_RESULT_OK) {
        snprintf(c->err, sizeof c->err, "%s [%s]", mailtls_session_last_error(c->s), mailtls_result_name(rc));
        logmsg(c->peer, "implicit TLS failed: %s", c->err);
        *why = END_TLS_FAILED;
        return -1;
    }
    c->tls = true;
    lr_init(&c->lr, fill_tls, c);
    return 1;
}
