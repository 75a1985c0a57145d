/*
 * mailtls-client's reading dialogues, after the library negotiated STARTTLS or
 * implicit TLS: log in (when a user is given) and list what the server holds.
 *
 *   IMAP        LOGIN (or AUTHENTICATE PLAIN when the server says LOGINDISABLED),
 *               SELECT INBOX, FETCH 1:* (RFC822.SIZE and the Subject), LOGOUT
 *   POP3        USER/PASS (or AUTH PLAIN when USER is not offered), STAT, LIST, QUIT
 *   NNTP        AUTHINFO USER/PASS (when a user is given), LIST ACTIVE, QUIT
 *   ManageSieve AUTHENTICATE "PLAIN", LISTSCRIPTS, LOGOUT
 *
 * The findings go to stdout, one line each ("INBOX 2 messages", "message 1 925 octets
 * Subject: ..."); the dialogue with -v to stderr. Every byte goes through
 * mailtls_session_read/_write, encrypted or not as the negotiation ended.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>

#include "mailbox-client.h"

#define LINE_CAP 8192

struct mc {
    mailtls_session *s;
    const mailtls_report *rep;
    struct linereader lr;
    const char *prog;
    int verbose;
    unsigned tag;
    char err[512];
    FILE *out;
};

static int fill(void *ud, uint8_t *buf, size_t cap, size_t *got)
{
    struct mc *m = ud;
    uint32_t rc = mailtls_session_read(m->s, buf, cap, got);
    if (rc == MAILTLS_RESULT_OK)
        return LR_LINE;
    const char *le = mailtls_session_last_error(m->s);
    snprintf(m->err, sizeof m->err, "read: %s (%s)", le && *le ? le : mailtls_result_str(rc), mailtls_result_name(rc));
    if (rc == MAILTLS_RESULT_CLOSED || rc == MAILTLS_RESULT_PEER_CLOSED)
        return LR_EOF;
    return rc == MAILTLS_RESULT_TIMEOUT ? LR_TIMEOUT : LR_ERROR;
}

/* Sends one command line; `secret` hides it from the -v log. */
static int sendf(struct mc *m, bool secret, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int sendf(struct mc *m, bool secret, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 2) {
        snprintf(m->err, sizeof m->err, "command too long");
        return -1;
    }
    if (m->verbose)
        fprintf(stderr, "%s: C: %s\n", m->prog, secret ? "(credentials)" : line);
    memcpy(line + n, "\r\n", 2);
    const uint8_t *p = (const uint8_t *)line;
    size_t left = (size_t)n + 2;
    while (left) {
        size_t w = 0;
        uint32_t rc = mailtls_session_write(m->s, p, left, &w);
        if (rc != MAILTLS_RESULT_OK) {
            snprintf(m->err, sizeof m->err, "write: %s (%s)", mailtls_session_last_error(m->s), mailtls_result_name(rc));
            return -1;
        }
        p += w;
        left -= w;
    }
    return 0;
}

/* One line; -1 with m->err at the end of the connection. */
static int getline_(struct mc *m, char *line, size_t *len)
{
    bool crlf;
    int st = lr_getline(&m->lr, line, LINE_CAP, len, &crlf);
    if (st == LR_TOOLONG) {
        snprintf(m->err, sizeof m->err, "a line longer than %d bytes", LINE_CAP);
        return -1;
    }
    if (st == LR_EOF && !m->err[0])
        snprintf(m->err, sizeof m->err, "the server closed the connection");
    if (st != LR_LINE)
        return -1;
    if (m->verbose)
        fprintf(stderr, "%s: S: %.*s\n", m->prog, (int)(*len > 200 ? 200 : *len), line);
    return 0;
}

/* Printable text for the output. */
static void clean(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < ' ' || (unsigned char)*s >= 0x7f)
            *s = '?';
}

static bool has_cap(const struct mc *m, const char *kw)
{
    size_t kl = strlen(kw);
    size_t n = mailtls_report_capability_count(m->rep);
    for (size_t i = 0; i < n; i++) {
        const char *cap = mailtls_report_capability(m->rep, i);
        if (cap && strncasecmp(cap, kw, kl) == 0 && (cap[kl] == '\0' || cap[kl] == ' '))
            return true;
    }
    return false;
}

/* SASL PLAIN's initial response: base64 of NUL user NUL pass. */
static int plain_response(const char *user, const char *pass, char *out, size_t cap)
{
    uint8_t raw[600];
    size_t ul = strlen(user), pl = strlen(pass);
    if (ul + pl + 2 > sizeof raw)
        return -1;
    raw[0] = 0;
    memcpy(raw + 1, user, ul);
    raw[1 + ul] = 0;
    memcpy(raw + 2 + ul, pass, pl);
    return b64_encode(raw, ul + pl + 2, out, cap) < 0 ? -1 : 0;
}

/* An IMAP quoted string (RFC 9051 section 4.3) of s: -1 for CR, LF or NUL. */
static int quoted(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    out[o++] = '"';
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n' || o + 4 >= cap)
            return -1;
        if (*s == '"' || *s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o++] = '"';
    out[o] = '\0';
    return 0;
}

/* ---- IMAP ---- */

/* Reads to the tagged reply of tag m->tag; untagged lines go to `each` (may be NULL).
 * A line ending in a literal {n} is followed by n raw bytes, read line by line.
 * Returns 0 with the status word ("OK", "NO", "BAD") in status, or -1. */
static int imap_wait(struct mc *m, char *status, size_t scap, void (*each)(struct mc *, char *, size_t, void *),
                     void *ud)
{
    char tag[16];
    snprintf(tag, sizeof tag, "C%u", m->tag);
    size_t tl = strlen(tag);
    static char line[LINE_CAP];
    for (;;) {
        size_t len;
        if (getline_(m, line, &len) < 0)
            return -1;
        if (len > tl && strncmp(line, tag, tl) == 0 && line[tl] == ' ') {
            const char *st = line + tl + 1;
            snprintf(status, scap, "%.*s", (int)strcspn(st, " "), st);
            if (strcasecmp(status, "OK") != 0) {
                snprintf(m->err, sizeof m->err, "%.300s", st);
                clean(m->err);
            }
            return 0;
        }
        if (line[0] == '*' && each)
            each(m, line, len, ud);
        if (len >= 3 && line[len - 1] == '}') {
            const char *lb = strrchr(line, '{');
            unsigned long n = lb ? strtoul(lb + 1, NULL, 10) : 0;
            while (n > 0) { /* the literal's bytes, which end in CRLF for headers */
                size_t l2;
                bool crlf;
                static char lit[LINE_CAP];
                int r = lr_getline(&m->lr, lit, sizeof lit, &l2, &crlf);
                if (r != LR_LINE) {
                    snprintf(m->err, sizeof m->err, "literal cut short");
                    return -1;
                }
                size_t used = l2 + (crlf ? 2 : 1);
                if (each)
                    each(m, lit, l2, ud);
                n = used >= n ? 0 : n - used;
            }
        }
    }
}

struct imap_list {
    unsigned exists;
    unsigned current;  /* the message whose FETCH is being read */
    size_t size;
    char subject[200];
    unsigned listed;
};

static void flush_message(struct mc *m, struct imap_list *l)
{
    if (!l->current)
        return;
    fprintf(m->out, "message %u %zu octets Subject: %s\n", l->current, l->size, l->subject[0] ? l->subject : "(none)");
    l->listed++;
    l->current = 0;
    l->subject[0] = '\0';
}

static void imap_each(struct mc *m, char *line, size_t len, void *ud)
{
    struct imap_list *l = ud;
    unsigned n;
    char word[32];
    (void)len;
    if (sscanf(line, "* %u %31s", &n, word) == 2) {
        if (!strcasecmp(word, "EXISTS")) {
            l->exists = n;
        } else if (!strcasecmp(word, "FETCH")) {
            flush_message(m, l);
            l->current = n;
            const char *sz = strcasestr(line, "RFC822.SIZE ");
            l->size = sz ? strtoul(sz + 12, NULL, 10) : 0;
        }
        return;
    }
    if (l->current && !strncasecmp(line, "Subject:", 8)) {
        const char *v = line + 8;
        while (*v == ' ')
            v++;
        snprintf(l->subject, sizeof l->subject, "%s", v);
        clean(l->subject);
    }
}

/* LOGIN, or AUTHENTICATE PLAIN under LOGINDISABLED: 0 logged in, EX_NOPERM refused
   (the caller logs out), EX_USAGE, -1 broken. Never called in the authenticated state. */
static int imap_login(struct mc *m, const char *user, const char *pass)
{
    char status[16];
    char qu[600], qp[600];
    m->tag++;
    int r;
    if (has_cap(m, "LOGINDISABLED")) {
        if (!has_cap(m, "AUTH=PLAIN")) {
            fprintf(stderr, "%s: the server forbids LOGIN (LOGINDISABLED) and offers no AUTH=PLAIN\n", m->prog);
            return EX_NOPERM;
        }
        char ir[1200];
        if (plain_response(user, pass, ir, sizeof ir) < 0) {
            fprintf(stderr, "%s: --user/--pass too long\n", m->prog);
            return EX_USAGE;
        }
        if (has_cap(m, "SASL-IR")) {
            r = sendf(m, true, "C%u AUTHENTICATE PLAIN %s", m->tag, ir);
        } else {
            static char line[LINE_CAP];
            size_t len;
            r = sendf(m, false, "C%u AUTHENTICATE PLAIN", m->tag);
            if (r == 0 && (r = getline_(m, line, &len)) == 0 && line[0] != '+') {
                snprintf(m->err, sizeof m->err, "no continuation for AUTHENTICATE: %.200s", line);
                r = -1;
            }
            if (r == 0)
                r = sendf(m, true, "%s", ir);
        }
    } else {
        if (quoted(user, qu, sizeof qu) < 0 || quoted(pass, qp, sizeof qp) < 0) {
            fprintf(stderr, "%s: --user/--pass: no CR, LF or NUL, at most 500 bytes\n", m->prog);
            return EX_USAGE;
        }
        r = sendf(m, true, "C%u LOGIN %s %s", m->tag, qu, qp);
    }
    if (r < 0 || imap_wait(m, status, sizeof status, NULL, NULL) < 0)
        return -1;
    if (strcasecmp(status, "OK") != 0) {
        fprintf(stderr, "%s: login refused: %s\n", m->prog, m->err);
        return EX_NOPERM;
    }
    fprintf(m->out, "logged in as %s\n", user);
    return 0;
}

static int imap_run(struct mc *m, const char *user, const char *pass)
{
    char status[16];
    if (user) {
        int r;
        if (mailtls_report_preauthenticated(m->rep)) {
            /* PREAUTH: already in the authenticated state (RFC 9051 section 7.1.4); a
               LOGIN now would be a protocol error and, in plaintext, a password in clear. */
            fprintf(stderr, "%s: the server pre-authenticated the connection (PREAUTH): no login sent\n", m->prog);
        } else if ((r = imap_login(m, user, pass)) != 0) {
            if (r == EX_NOPERM)
                goto logout_perm;
            return r;
        }
        struct imap_list l = {0};
        m->tag++;
        if (sendf(m, false, "C%u SELECT INBOX", m->tag) < 0 || imap_wait(m, status, sizeof status, imap_each, &l) < 0)
            return -1;
        if (strcasecmp(status, "OK") != 0) {
            fprintf(stderr, "%s: SELECT INBOX refused: %s\n", m->prog, m->err);
            goto logout_perm;
        }
        fprintf(m->out, "INBOX %u messages\n", l.exists);
        if (l.exists) {
            m->tag++;
            if (sendf(m, false, "C%u FETCH 1:* (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])", m->tag) < 0 ||
                imap_wait(m, status, sizeof status, imap_each, &l) < 0)
                return -1;
            flush_message(m, &l);
            if (strcasecmp(status, "OK") != 0)
                fprintf(stderr, "%s: FETCH refused: %s\n", m->prog, m->err);
        }
    }
    m->tag++;
    if (sendf(m, false, "C%u LOGOUT", m->tag) < 0 || imap_wait(m, status, sizeof status, NULL, NULL) < 0)
        fprintf(stderr, "%s: warning: LOGOUT: %s\n", m->prog, m->err);
    return 0;
logout_perm:
    m->tag++;
    if (sendf(m, false, "C%u LOGOUT", m->tag) == 0)
        (void)imap_wait(m, status, sizeof status, NULL, NULL);
    return EX_NOPERM;
}

/* ---- POP3 ---- */

/* A +OK/-ERR reply: 1 +OK, 0 -ERR (text in m->err), -1 broken. */
static int pop_reply(struct mc *m, char *line, size_t *len)
{
    if (getline_(m, line, len) < 0)
        return -1;
    if (!strncmp(line, "+OK", 3))
        return 1;
    snprintf(m->err, sizeof m->err, "%.300s", line);
    clean(m->err);
    return line[0] == '-' ? 0 : -1;
}

static int pop3_run(struct mc *m, const char *user, const char *pass)
{
    static char line[LINE_CAP];
    size_t len;
    int r;
    if (user) {
        if (!has_cap(m, "USER") && has_cap(m, "SASL")) {
            char ir[1200];
            if (plain_response(user, pass, ir, sizeof ir) < 0)
                return EX_USAGE;
            if (sendf(m, true, "AUTH PLAIN %s", ir) < 0 || (r = pop_reply(m, line, &len)) < 0)
                return -1;
        } else {
            if (strpbrk(user, "\r\n ") || strpbrk(pass, "\r\n")) {
                fprintf(stderr, "%s: --user: no spaces, CR or LF; --pass: no CR or LF\n", m->prog);
                return EX_USAGE;
            }
            if (sendf(m, false, "USER %s", user) < 0 || (r = pop_reply(m, line, &len)) < 0)
                return -1;
            if (r == 1 && (sendf(m, true, "PASS %s", pass) < 0 || (r = pop_reply(m, line, &len)) < 0))
                return -1;
        }
        if (r == 0) {
            fprintf(stderr, "%s: login refused: %s\n", m->prog, m->err);
            if (sendf(m, false, "QUIT") == 0)
                (void)pop_reply(m, line, &len);
            return EX_NOPERM;
        }
        fprintf(m->out, "logged in as %s\n", user);
        if (sendf(m, false, "STAT") < 0 || (r = pop_reply(m, line, &len)) < 0)
            return -1;
        unsigned long n = 0, octets = 0;
        if (r == 1 && sscanf(line, "+OK %lu %lu", &n, &octets) == 2)
            fprintf(m->out, "maildrop %lu messages %lu octets\n", n, octets);
        else
            fprintf(stderr, "%s: STAT: %s\n", m->prog, r ? "unparseable reply" : m->err);
        if (sendf(m, false, "LIST") < 0 || (r = pop_reply(m, line, &len)) < 0)
            return -1;
        while (r == 1) {
            if (getline_(m, line, &len) < 0)
                return -1;
            if (!strcmp(line, "."))
                break;
            unsigned long k, sz;
            if (sscanf(line, "%lu %lu", &k, &sz) == 2)
                fprintf(m->out, "message %lu %lu octets\n", k, sz);
        }
    }
    if (sendf(m, false, "QUIT") < 0 || pop_reply(m, line, &len) < 0)
        fprintf(stderr, "%s: warning: QUIT: %s\n", m->prog, m->err);
    return 0;
}

/* ---- NNTP ---- */

static int nntp_reply(struct mc *m, char *line, size_t *len)
{
    if (getline_(m, line, len) < 0)
        return -1;
    if (*len < 3 || !isdigit((unsigned char)line[0])) {
        snprintf(m->err, sizeof m->err, "not an NNTP reply: %.200s", line);
        clean(m->err);
        return -1;
    }
    snprintf(m->err, sizeof m->err, "%.300s", line);
    clean(m->err);
    return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

static int nntp_run(struct mc *m, const char *user, const char *pass)
{
    static char line[LINE_CAP];
    size_t len;
    int code;
    if (user) {
        if (strpbrk(user, "\r\n") || strpbrk(pass, "\r\n"))
            return EX_USAGE;
        if (sendf(m, false, "AUTHINFO USER %s", user) < 0 || (code = nntp_reply(m, line, &len)) < 0)
            return -1;
        if (code == 381 && (sendf(m, true, "AUTHINFO PASS %s", pass) < 0 || (code = nntp_reply(m, line, &len)) < 0))
            return -1;
        if (code != 281) {
            fprintf(stderr, "%s: login refused: %s\n", m->prog, m->err);
            if (sendf(m, false, "QUIT") == 0)
                (void)nntp_reply(m, line, &len);
            return EX_NOPERM;
        }
        fprintf(m->out, "logged in as %s\n", user);
    }
    if (sendf(m, false, "LIST ACTIVE") < 0 || (code = nntp_reply(m, line, &len)) < 0)
        return -1;
    int status = 0;
    if (code != 215) {
        fprintf(stderr, "%s: LIST ACTIVE refused: %s\n", m->prog, m->err);
        status = code == 480 || code == 483 ? EX_NOPERM : EX_UNAVAILABLE;
    } else {
        unsigned groups = 0;
        for (;;) {
            if (getline_(m, line, &len) < 0)
                return -1;
            if (!strcmp(line, "."))
                break;
            char g[256];
            unsigned long hi, lo;
            if (sscanf(line, "%255s %lu %lu", g, &hi, &lo) == 3) {
                clean(g);
                fprintf(m->out, "group %s articles %lu-%lu\n", g, lo, hi);
                groups++;
            }
        }
        fprintf(m->out, "%u groups\n", groups);
    }
    if (sendf(m, false, "QUIT") < 0 || nntp_reply(m, line, &len) < 0)
        fprintf(stderr, "%s: warning: QUIT: %s\n", m->prog, m->err);
    return status;
}

/* ---- ManageSieve ---- */

/* Lines up to OK/NO/BYE: 1 OK, 0 NO/BYE, -1 broken. Script lines go to stdout. */
static int sieve_wait(struct mc *m, bool list)
{
    static char line[LINE_CAP];
    size_t len;
    for (;;) {
        if (getline_(m, line, &len) < 0)
            return -1;
        if (!strncasecmp(line, "OK", 2) && (len == 2 || line[2] == ' '))
            return 1;
        if ((!strncasecmp(line, "NO", 2) && (len == 2 || line[2] == ' ')) || !strncasecmp(line, "BYE", 3)) {
            snprintf(m->err, sizeof m->err, "%.300s", line);
            clean(m->err);
            return 0;
        }
        if (list && line[0] == '"') {
            char *end = strchr(line + 1, '"');
            if (!end)
                continue;
            *end = '\0';
            clean(line + 1);
            fprintf(m->out, "script %s%s\n", line + 1, strcasestr(end + 1, "ACTIVE") ? " (active)" : "");
        }
    }
}

static int sieve_run(struct mc *m, const char *user, const char *pass)
{
    int r;
    if (user) {
        char ir[1200];
        if (plain_response(user, pass, ir, sizeof ir) < 0)
            return EX_USAGE;
        if (sendf(m, true, "AUTHENTICATE \"PLAIN\" \"%s\"", ir) < 0 || (r = sieve_wait(m, false)) < 0)
            return -1;
        if (r == 0) {
            fprintf(stderr, "%s: login refused: %s\n", m->prog, m->err);
            if (sendf(m, false, "LOGOUT") == 0)
                (void)sieve_wait(m, false);
            return EX_NOPERM;
        }
        fprintf(m->out, "logged in as %s\n", user);
        if (sendf(m, false, "LISTSCRIPTS") < 0 || (r = sieve_wait(m, true)) < 0)
            return -1;
        if (r == 0)
            fprintf(stderr, "%s: LISTSCRIPTS refused: %s\n", m->prog, m->err);
    }
    if (sendf(m, false, "LOGOUT") < 0 || sieve_wait(m, false) < 0)
        fprintf(stderr, "%s: warning: LOGOUT: %s\n", m->prog, m->err);
    return 0;
}

int mailbox_dialogue(mailtls_session *s, uint32_t proto, const char *user, const char *pass, int verbose,
                     const char *prog)
{
    struct mc *m = calloc(1, sizeof *m);
    if (!m) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return EX_OSERR;
    }
    m->s = s;
    m->rep = mailtls_session_report(s);
    m->prog = prog;
    m->verbose = verbose;
    m->out = stdout;
    lr_init(&m->lr, fill, m);
    int r;
    switch (proto) {
    case MAILTLS_PROTO_IMAP: r = imap_run(m, user, pass); break;
    case MAILTLS_PROTO_POP3: r = pop3_run(m, user, pass); break;
    case MAILTLS_PROTO_NNTP: r = nntp_run(m, user, pass); break;
    case MAILTLS_PROTO_SIEVE: r = sieve_run(m, user, pass); break;
    default: r = EX_SOFTWARE; break;
    }
    if (r < 0) {
        fprintf(stderr, "%s: dialogue failed: %s\n", prog, m->err);
        r = EX_TEMPFAIL;
    }
    fflush(m->out);
    free(m);
    return r;
}
