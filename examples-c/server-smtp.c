/*
 * mailtls-server's SMTP (RFC 5321) and LMTP (RFC 2033) dialogue: EHLO/LHLO with the
 * STARTTLS offer, MAIL, RCPT, DATA into the maildir (or accepted and discarded without
 * --maildir), STARTTLS, and the few other verbs. For a session handed off to OpenSSL it
 * keeps the library's command checks itself (legacy_check).
 *
 * Depends on server-conn.c (replies, the reader, start_tls), common.c and the library;
 * used only by serve() in mailtls-server.c, through serve_smtp().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "server-dialogues.h"
#include "server.h"

#define CMD_LINE_MAX 1000     /* RFC 5321 4.5.3.1.4: 512; we accept up to 1000 with CRLF */
#define DATA_LINE_MAX 65536   /* longer than RFC 5321's 1000, refused beyond this */
#define MAX_ERRORS 20

static void txn_reset(struct txn *t)
{
    free(t->from);
    for (size_t i = 0; i < t->nrcpt; i++)
        free(t->rcpt[i]);
    memset(t, 0, sizeof *t);
}

/*
 * Parses "<path>" followed by optional " PARAM..." after a "FROM:" / "TO:" prefix.
 * `*addr` gets a malloc'd copy of the address, `*params` points at the parameters.
 * Returns 0, or -1 on a syntax error.
 */
static int parse_path(const char *s, char **addr, const char **params)
{
    while (*s == ' ')
        s++; /* "MAIL FROM: <a@b>" is common enough to accept */
    if (*s != '<')
        return -1;
    const char *e = strchr(s + 1, '>');
    if (!e)
        return -1;
    size_t n = (size_t)(e - s - 1);
    if (n > 254)
        return -1;
    for (const char *p = s + 1; p < e; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '<')
            return -1;
    if (e[1] != '\0' && e[1] != ' ')
        return -1;
    *addr = strndup(s + 1, n);
    if (!*addr)
        return -1;
    *params = e + 1;
    while (**params == ' ')
        (*params)++;
    return 0;
}

static void cmd_hello(struct conn *c, const char *verb, const char *arg)
{
    bool lhlo = strcasecmp(verb, "LHLO") == 0;
    if ((opt.proto == MAILTLS_PROTO_LMTP) != lhlo) {
        c->errors++;
        reply(c, "500 5.5.1 Error: %s", opt.proto == MAILTLS_PROTO_LMTP ? "this is LMTP, use LHLO" : "use EHLO or HELO");
        return;
    }
    if (!printable_token(arg, 255)) {
        c->errors++;
        reply(c, "501 5.5.4 Syntax: %s hostname", verb);
        return;
    }
    txn_reset(&c->t);
    snprintf(c->helo, sizeof c->helo, "%s", arg);
    c->have_helo = true;
    c->esmtp = strcasecmp(verb, "HELO") != 0;
    if (!c->esmtp) {
        reply(c, "250 %s", hostname);
        return;
    }
    reply(c, "250-%s greets %s", hostname, c->ip);
    reply(c, "250-PIPELINING");
    reply(c, "250-SIZE %zu", opt.max_size);
    reply(c, "250-8BITMIME");
    if (mailtls_server_offer_starttls(c->s))
        reply(c, "250-STARTTLS");
    reply(c, "250 ENHANCEDSTATUSCODES");
}

static void cmd_mail(struct conn *c, const char *arg)
{
    if (!c->have_helo) {
        c->errors++;
        reply(c, "503 5.5.1 Error: send %s first", opt.proto == MAILTLS_PROTO_LMTP ? "LHLO" : "HELO/EHLO");
        return;
    }
    if (c->t.active) {
        c->errors++;
        reply(c, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    char *addr = NULL;
    const char *params;
    if (strncasecmp(arg, "FROM:", 5) != 0 || parse_path(arg + 5, &addr, &params) < 0) {
        c->errors++;
        reply(c, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    /* Parameters (ESMTP only): SIZE and BODY. */
    char pbuf[CMD_LINE_MAX];
    snprintf(pbuf, sizeof pbuf, "%s", params);
    for (char *save = NULL, *p = strtok_r(pbuf, " ", &save); p; p = strtok_r(NULL, " ", &save)) {
        if (!c->esmtp) {
            free(addr);
            c->errors++;
            reply(c, "555 5.5.4 Error: parameters need EHLO");
            return;
        }
        if (strncasecmp(p, "SIZE=", 5) == 0) {
            char *end;
            errno = 0;
            unsigned long long sz = strtoull(p + 5, &end, 10);
            if (errno || *end || end == p + 5) {
                free(addr);
                c->errors++;
                reply(c, "501 5.5.4 Error: bad SIZE parameter");
                return;
            }
            if (sz > opt.max_size) {
                free(addr);
                reply(c, "552 5.3.4 Error: message size exceeds fixed limit");
                return;
            }
        } else if (strcasecmp(p, "BODY=7BIT") == 0 || strcasecmp(p, "BODY=8BITMIME") == 0) {
            /* fine: the store is 8-bit clean */
        } else {
            free(addr);
            c->errors++;
            reply(c, "555 5.5.4 Error: unsupported parameter \"%.50s\"", p);
            return;
        }
    }
    txn_reset(&c->t);
    c->t.active = true;
    c->t.from = addr;
    reply(c, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct conn *c, const char *arg)
{
    if (!c->t.active) {
        c->errors++;
        reply(c, "503 5.5.1 Error: need MAIL command");
        return;
    }
    char *addr = NULL;
    const char *params;
    if (strncasecmp(arg, "TO:", 3) != 0 || parse_path(arg + 3, &addr, &params) < 0) {
        c->errors++;
        reply(c, "501 5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (*addr == '\0') {
        free(addr);
        c->errors++;
        reply(c, "501 5.1.3 Error: empty recipient");
        return;
    }
    if (*params) {
        free(addr);
        c->errors++;
        reply(c, "555 5.5.4 Error: unsupported parameter");
        return;
    }
    if (c->t.nrcpt >= MAX_RCPTS) {
        free(addr);
        reply(c, "452 4.5.3 Error: too many recipients");
        return;
    }
    c->t.rcpt[c->t.nrcpt++] = addr;
    reply(c, "250 2.1.5 Ok");
}

/* A maildir file name part: no '/' or ':'. */
static void safe_name(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; *src && i + 1 < cap; src++)
        dst[i++] = (*src == '/' || *src == ':' || (unsigned char)*src <= ' ') ? '_' : *src;
    dst[i] = '\0';
}

/* Writes the header and the body to tmp/NAME, syncs it and renames it to `dst`
 * (new/NAME). 0, or -1 with errno (tmp/NAME then removed). */
static int maildir_write(const char *name, const struct sbuf *h, const struct sbuf *body, const char *dst)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/tmp/%s", opt.maildir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int rc = write_all(fd, h->p, h->len);
    if (rc == 0 && body->len)
        rc = write_all(fd, body->p, body->len);
    if (rc == 0)
        rc = fsync(fd);
    int e = errno;
    if (close(fd) < 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc == 0 && rename(tmp, dst) < 0) {
        rc = -1;
        e = errno;
    }
    if (rc < 0) {
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/*
 * Stores one message into the maildir: tmp/NAME then rename to new/NAME. `for_rcpt`
 * names the recipient in Delivered-To and the Received header (LMTP: one file each).
 * Writes a queue id into `id`. Returns 0, or -1 with errno.
 */
static int store(struct conn *c, const struct sbuf *body, const char *for_rcpt, char id[64])
{
    static unsigned seq;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    snprintf(id, 64, "%lX%05lX%X", (unsigned long)tv.tv_sec, (unsigned long)tv.tv_usec, ++seq);

    const mailtls_report *rep = mailtls_session_report(c->s);
    const char *ver = c->lver[0] ? c->lver : c->tls ? mailtls_report_tls_version(rep) : NULL;
    const char *cipher = c->lcipher[0] ? c->lcipher : c->tls ? mailtls_report_cipher(rep) : NULL;
    const char *group = c->tls ? mailtls_report_group(rep) : NULL;
    const char *with = opt.proto == MAILTLS_PROTO_LMTP ? (c->tls ? "LMTPS" : "LMTP")
                       : c->tls                        ? "ESMTPS"
                       : c->esmtp                      ? "ESMTP"
                                                       : "SMTP";
    char date[64];
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);

    struct sbuf h = {0};
    sb_printf(&h, "Return-Path: <%s>\n", c->t.from);
    if (for_rcpt && opt.proto == MAILTLS_PROTO_LMTP)
        sb_printf(&h, "Delivered-To: %s\n", for_rcpt);
    sb_printf(&h, "Received: from %s ([%s])\n\tby %s (mailtls-server %s) with %s id %s\n", c->helo, c->ip,
              hostname, mailtls_version(), with, id);
    if (c->tls)
        sb_printf(&h, "\t(using %s with cipher %s, group %s)\n", ver ? ver : "?", cipher ? cipher : "?",
                  group ? group : "?");
    else
        sb_printf(&h, "\t(no TLS: received in plaintext)\n");
    if (for_rcpt)
        sb_printf(&h, "\tfor <%s>; %s\n", for_rcpt, date);
    else
        sb_printf(&h, "\t; %s\n", date);
    if (!h.p) {
        errno = ENOMEM;
        return -1;
    }

    if (!opt.maildir) {
        logmsg(c->peer, "message %s (%zu bytes) accepted and discarded: no --maildir", id, body->len);
        sb_free(&h);
        return 0;
    }
    char host[128], name[256], dst[4096];
    safe_name(host, sizeof host, hostname);
    snprintf(name, sizeof name, "%ld.M%06ldP%dQ%u.%s", (long)tv.tv_sec, (long)tv.tv_usec, (int)getpid(), seq, host);
    snprintf(dst, sizeof dst, "%s/new/%s", opt.maildir, name);
    int rc = maildir_write(name, &h, body, dst);
    int e = errno;
    sb_free(&h);
    if (rc < 0) {
        errno = e;
        return -1;
    }
    logmsg(c->peer, "delivered %s from <%s> to %s (%zu bytes, %s%s%s)", id, c->t.from, dst, body->len,
           c->tls ? ver : "plaintext", c->tls ? " " : "", c->tls ? cipher : "");
    return 0;
}

/* Reads the data after the 354 up to <CRLF>.<CRLF> into `body`, dots unstuffed.
 * *refusal: why the message cannot be taken (NULL: it can). False when the connection
 * ended during the data (*why set, `body` freed). */
static bool read_data(struct conn *c, struct sbuf *body, const char **refusal, enum end_reason *why)
{
    static char line[DATA_LINE_MAX];
    bool too_big = false, bare_lf = false, overlong = false, nomem = false;
    bool prev_crlf = true;
    for (;;) {
        size_t len;
        bool crlf;
        int st = lr_getline(&c->lr, line, sizeof line, &len, &crlf);
        if (st == LR_EOF || st == LR_TIMEOUT || st == LR_ERROR) {
            sb_free(body);
            *why = st == LR_EOF ? END_EOF : st == LR_TIMEOUT ? END_TIMEOUT : END_ERROR;
            if (st == LR_TIMEOUT)
                reply(c, "421 4.4.2 %s Error: timeout exceeded", hostname);
            logmsg(c->peer, "connection lost during DATA: %s", end_names[*why]);
            return false;
        }
        if (!crlf)
            bare_lf = true;
        if (st == LR_TOOLONG) {
            overlong = true;
            prev_crlf = crlf;
            continue;
        }
        /* Only <CRLF>.<CRLF> ends the data: never a dot line next to a bare LF. */
        if (len == 1 && line[0] == '.' && crlf && prev_crlf)
            break;
        prev_crlf = crlf;
        const char *p = line;
        if (len > 0 && line[0] == '.') {
            p++;
            len--;
        }
        if (too_big || nomem)
            continue;
        if (body->len + len + 1 > opt.max_size) {
            too_big = true;
            continue;
        }
        if (sb_append(body, p, len) < 0 || sb_append(body, "\n", 1) < 0)
            nomem = true;
    }

    *refusal = NULL;
    if (too_big)
        *refusal = "552 5.3.4 Error: message size exceeds fixed limit";
    else if (overlong)
        *refusal = "554 5.6.0 Error: message line too long";
    else if (bare_lf)
        *refusal = "554 5.6.0 Error: bare <LF> received (RFC 5321 section 2.3.8)";
    else if (nomem)
        *refusal = "451 4.3.0 Error: out of memory";
    return true;
}

/* The replies at the end of the data, each after its delivery: one for SMTP, one
 * per recipient for LMTP (RFC 2033 section 4.2). */
static void deliver(struct conn *c, const struct sbuf *body, const char *refusal)
{
    if (opt.proto == MAILTLS_PROTO_LMTP) {
        /* One reply per accepted recipient, in RCPT order. */
        for (size_t i = 0; i < c->t.nrcpt; i++) {
            char id[64];
            if (refusal)
                reply(c, "%s", refusal);
            else if (store(c, body, c->t.rcpt[i], id) < 0)
                reply(c, "451 4.3.0 <%s> Error: cannot store the message: %s", c->t.rcpt[i], strerror(errno));
            else {
                c->messages++;
                reply(c, "250 2.0.0 <%s> Ok: delivered as %s", c->t.rcpt[i], id);
            }
        }
    } else {
        char id[64];
        if (refusal)
            reply(c, "%s", refusal);
        else if (store(c, body, c->t.nrcpt == 1 ? c->t.rcpt[0] : NULL, id) < 0)
            reply(c, "451 4.3.0 Error: cannot store the message: %s", strerror(errno));
        else {
            c->messages++;
            reply(c, "250 2.0.0 Ok: queued as %s", id);
        }
    }
}

/* Returns false when the connection must end (EOF, timeout, error while reading data). */
static bool cmd_data(struct conn *c, const char *arg, enum end_reason *why)
{
    if (!c->t.active) {
        c->errors++;
        reply(c, "503 5.5.1 Error: need MAIL command");
        return true;
    }
    if (c->t.nrcpt == 0) {
        c->errors++;
        reply(c, "554 5.5.1 Error: no valid recipients");
        return true;
    }
    if (*arg) {
        c->errors++;
        reply(c, "501 5.5.4 Syntax: DATA");
        return true;
    }
    reply(c, "354 End data with <CR><LF>.<CR><LF>");
    flush(c);
    if (c->dead) {
        *why = END_ERROR;
        return false;
    }

    struct sbuf body = {0};
    const char *refusal;
    if (!read_data(c, &body, &refusal, why))
        return false;
    deliver(c, &body, refusal);
    if (refusal)
        logmsg(c->peer, "message refused: %s", refusal);
    sb_free(&body);
    txn_reset(&c->t);
    return true;
}

/* Returns false when the connection must end. */
static bool cmd_starttls(struct conn *c, const char *arg, enum end_reason *why)
{
    if (*arg) {
        c->errors++;
        reply(c, "501 5.5.4 Syntax: STARTTLS");
        return true;
    }
    int r = start_tls(c, why);
    if (r > 0) {
        /* RFC 3207 section 4.2: the client starts over with EHLO. */
        c->have_helo = false;
        c->esmtp = false;
        c->helo[0] = '\0';
        txn_reset(&c->t);
    }
    return r >= 0;
}

/* The library's command checks for a session it handed off (TLS is active). */
static uint32_t legacy_check(struct conn *c, const char *line, size_t len)
{
    size_t v = 0;
    while (v < len && line[v] != ' ')
        v++;
    if (v == 8 && strncasecmp(line, "STARTTLS", 8) == 0)
        return MAILTLS_RESULT_TLS_ALREADY_ACTIVE;
    bool hello = v == 4 && (!strncasecmp(line, "EHLO", 4) || !strncasecmp(line, "HELO", 4) || !strncasecmp(line, "LHLO", 4));
    bool harmless = v == 4 && (!strncasecmp(line, "NOOP", 4) || !strncasecmp(line, "QUIT", 4) || !strncasecmp(line, "RSET", 4));
    if (!c->have_helo && !hello && !harmless)
        return MAILTLS_RESULT_STATE_RESET_REQUIRED;
    return MAILTLS_RESULT_OK;
}

/* One command that passed the checks: false when the connection must end. */
static bool smtp_command(struct conn *c, char *line, enum end_reason *why)
{
    /* Verb and argument. */
    char *sp = strchr(line, ' ');
    const char *arg = "";
    if (sp) {
        *sp = '\0';
        arg = sp + 1;
        char *end = sp + 1 + strlen(sp + 1);
        while (end > sp + 1 && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
    }
    const char *verb = line;
    if (!strcasecmp(verb, "EHLO") || !strcasecmp(verb, "HELO") || !strcasecmp(verb, "LHLO")) {
        cmd_hello(c, verb, arg);
    } else if (!strcasecmp(verb, "MAIL")) {
        cmd_mail(c, arg);
    } else if (!strcasecmp(verb, "RCPT")) {
        cmd_rcpt(c, arg);
    } else if (!strcasecmp(verb, "DATA")) {
        return cmd_data(c, arg, why);
    } else if (!strcasecmp(verb, "STARTTLS")) {
        return cmd_starttls(c, arg, why);
    } else if (!strcasecmp(verb, "RSET")) {
        txn_reset(&c->t);
        reply(c, "250 2.0.0 Ok");
    } else if (!strcasecmp(verb, "NOOP")) {
        reply(c, "250 2.0.0 Ok");
    } else if (!strcasecmp(verb, "QUIT")) {
        reply(c, "221 2.0.0 Bye");
        *why = END_QUIT;
        return false;
    } else if (!strcasecmp(verb, "VRFY")) {
        reply(c, "252 2.0.0 Cannot VRFY, send some mail");
    } else if (!strcasecmp(verb, "HELP")) {
        reply(c, "214 2.0.0 EHLO HELO LHLO MAIL RCPT DATA RSET NOOP QUIT STARTTLS");
    } else if (*verb == '\0') {
        c->errors++;
        reply(c, "500 5.5.2 Error: bad syntax");
    } else {
        c->errors++;
        reply(c, "502 5.5.2 Error: command not recognized");
    }
    return true;
}

/* The greeting, then one line at a time: read, checked by the library (or by
 * legacy_check after a handoff) and handed to smtp_command. */
void serve_smtp(struct conn *c, enum end_reason *why)
{
    reply(c, "220 %s %s mailtls-server ready", hostname, opt.proto == MAILTLS_PROTO_LMTP ? "LMTP" : "ESMTP");

    static char line[CMD_LINE_MAX];
    while (!c->dead) {
        if (c->errors >= MAX_ERRORS) {
            reply(c, "421 4.7.0 %s Error: too many errors", hostname);
            *why = END_TOO_MANY_ERRORS;
            break;
        }
        size_t len;
        bool crlf;
        int st = lr_getline(&c->lr, line, sizeof line, &len, &crlf);
        if (st == LR_EOF) {
            *why = END_EOF;
            break;
        }
        if (st == LR_TIMEOUT) {
            reply(c, "421 4.4.2 %s Error: timeout exceeded", hostname);
            *why = END_TIMEOUT;
            break;
        }
        if (st == LR_ERROR) {
            *why = END_ERROR;
            break;
        }
        if (st == LR_TOOLONG) {
            c->errors++;
            reply(c, "500 5.5.0 Error: line too long");
            continue;
        }
        if (opt.verbose)
            logmsg(c->peer, "C: %.*s", (int)len, line);
        if (memchr(line, '\0', len)) {
            c->errors++;
            reply(c, "500 5.5.2 Error: NUL in command");
            continue;
        }
        /* A handed-off session is the example's own: the same rules, kept here. */
        uint32_t chk = c->legacy ? legacy_check(c, line, len) : mailtls_server_check_command(c->s, (const uint8_t *)line, len);
        if (chk != MAILTLS_RESULT_OK) {
            const char *text = mailtls_server_reply(c->s, chk);
            c->errors++;
            if (text)
                reply_raw(c, text);
            else
                reply(c, "503 5.5.1 Error: command refused (%s)", mailtls_result_name(chk));
            continue;
        }
        if (!smtp_command(c, line, why))
            break;
    }
    txn_reset(&c->t);
}
