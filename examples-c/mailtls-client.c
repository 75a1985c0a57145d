/*
 * mailtls-client: negotiates STARTTLS (or implicit TLS) through mailtls with an SMTP or
 * LMTP server and, with --message, delivers one message over the negotiated session;
 * or with an IMAP, POP3, NNTP or ManageSieve server and, with --user/--pass, logs in
 * and lists what it holds (mailbox-client.c).
 *
 *   mailtls-client [--proto smtp|lmtp|imap|pop3|nntp|sieve] [--implicit]
 *                  [--policy none|may|encrypt|verify|dane|dane-only] [--servername NAME] [--cafile FILE]
 *                  [--tlsa FILE --dnssec secure|insecure|bogus] [--mx-host NAME] [--tlsa-base NAME]
 *                  [--next-hop DOMAIN] [--mta-sts FILE] [--dns ADDR[@PORT] [--dns-anchor FILE]]
 *                  [--tlsrpt-dir DIR]
 *                  [--timeout SECS] [--total-timeout SECS] [--memory FILE | --memory-redis HOST[:PORT][/PREFIX]]
 *                  [--from ADDR --to ADDR... --message FILE]
 *                  [--user NAME --pass SECRET] [--plaintext-auth] [--json] [-v] HOST[:PORT]
 *
 * Exit status (sysexits): 0 done as the policy allows; 75 temporary failure (defer,
 * connection failure, 4xx reply); 69 permanent failure (fail, 5xx reply); 77 login or
 * listing refused; 64 usage; 66 the message file cannot be read; 78 the TLS
 * configuration cannot be built.
 *
 * The program connects the socket itself and hands the descriptor to the library
 * (mailtls_session_set_fd); after the negotiation every byte of its own SMTP dialogue
 * goes through mailtls_session_write/_read, encrypted or not as the outcome says.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "client-dest.h"
#include "common.h"
#include "dns-lookup.h"
#include "mailbox-client.h"
#include "redis-store.h"

static const char *const prog = "mailtls-client";
static int verbose;

#define MAX_REPLY_LINES 128
#define MAX_REPLY_LINE 4096
#define MAX_RCPTS 1000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--proto smtp|lmtp|imap|pop3|nntp|sieve] [--implicit]\n"
            "                      [--policy none|may|encrypt|verify|dane|dane-only] [--servername NAME] [--cafile FILE]\n"
            "                      [--tlsa FILE --dnssec secure|insecure|bogus] [--mx-host NAME] [--tlsa-base NAME]\n"
            "                      [--next-hop DOMAIN] [--mta-sts FILE] [--dns ADDR[@PORT] [--dns-anchor FILE]]\n"
            "                      [--tlsrpt-dir DIR]\n"
            "                      [--timeout SECS] [--total-timeout SECS] [--memory FILE | --memory-redis HOST[:PORT][/PREFIX]]\n"
            "                      [--from ADDR --to ADDR... --message FILE]\n"
            "                      [--user NAME --pass SECRET] [--plaintext-auth] [--json] [-v] HOST[:PORT]\n"
            "       %s --memory FILE --list-memory\n"
            "       %s --memory FILE --forget HOST[:PORT]\n"
            "       %s --memory FILE --export-memory TEXTFILE|-\n"
            "       %s --memory FILE --import-memory TEXTFILE\n"
            "\n"
            "  --proto       smtp (default, port 25), lmtp (24), imap (143), pop3 (110), nntp (119)\n"
            "                or sieve (ManageSieve, 4190)\n"
            "  --implicit    TLS from the first byte (RFC 8314): smtp 465, imap 993, pop3 995,\n"
            "                nntp 563; STARTTLS is never sent\n"
            "  --policy      TLS policy (default may); dane and dane-only check the certificate\n"
            "                against --tlsa records when --dnssec is secure (RFC 7672): dane falls\n"
            "                back to may (insecure lookup, no record) or encrypt (no usable\n"
            "                record); dane-only defers then; a bogus lookup defers both\n"
            "  --tlsa FILE   the MX host's TLSA RRset, one record a line: 3 1 1 <hex> (# comments)\n"
            "  --dnssec      what the validating resolver said of the MX and TLSA lookups\n"
            "  --mx-host     the MX host name (MTA-STS match, DANE-TA name, TLS-RPT), default HOST\n"
            "  --tlsa-base   the TLSA base domain (SNI under DANE), default the MX host\n"
            "  --next-hop    the recipient domain (TLS-RPT policy domain, DANE-TA name)\n"
            "  --mta-sts FILE  the MTA-STS policy body fetched for the next-hop domain (RFC 8461):\n"
            "                enforce requires a certificate valid for the MX host, which must\n"
            "                match an mx line; testing delivers and reports; DANE decides first\n"
            "  --dns ADDR[@PORT]  HOST is a domain: look up its MX, the MX host's address and\n"
            "                its TLSA records (_PORT._tcp) through this resolver with libunbound,\n"
            "                validating with --dns-anchor FILE (a DS or DNSKEY trust anchor), and\n"
            "                hand them to the library (instead of --tlsa, --dnssec, --mx-host)\n"
            "  --tlsrpt-dir DIR  record the session's TLS-RPT result (RFC 8460) as a new file in\n"
            "                DIR, for mailtls-tlsrpt DIR to add up into a report\n"
            "  --servername  reference name for verify and SNI (default HOST)\n"
            "  --cafile      PEM trust anchors instead of the system store\n"
            "  --timeout     seconds for the connect and for each step (default 60)\n"
            "  --total-timeout  seconds for the whole negotiation, every retry included\n"
            "                (default 300); then it defers as a timeout\n"
            "  --memory FILE the intolerance memory database (LMDB), shared with other runs and\n"
            "                processes; an older version's text file there is converted\n"
            "  --memory-redis HOST[:PORT][/PREFIX]  the intolerance memory in Redis (port 6379,\n"
            "                keys PREFIX + \"smtp HOST PORT\", PREFIX \"mailtls:\" by default), shared\n"
            "                with every process and host using it; Redis down or slow (1 s) is no\n"
            "                memory, never a failure. List and forget with redis-cli (SCAN, DEL)\n"
            "  --list-memory print every record of --memory FILE, one per line, and exit\n"
            "  --forget HOST[:PORT]  forget what --memory FILE knows of HOST (every port\n"
            "                without :PORT), print how many records went, and exit\n"
            "  --export-memory TEXTFILE  write every record of --memory FILE as text (the\n"
            "                mailtls-memory 1 format, one line a peer; - for stdout), and exit\n"
            "  --import-memory TEXTFILE  merge the records of such a text into --memory FILE\n"
            "                (for each peer the newer fact wins), and exit\n"
            "  --from/--to/--message  smtp/lmtp: deliver FILE from ADDR to each --to ADDR\n"
            "  --user/--pass imap/pop3/nntp/sieve: log in after TLS and list the mailbox (IMAP\n"
            "                SELECT INBOX, POP3 STAT/LIST, NNTP LIST ACTIVE, Sieve LISTSCRIPTS)\n"
            "                on stdout; without them only the negotiation and a logout\n"
            "  --plaintext-auth  under may, let the password travel in clear when TLS cannot be\n"
            "                had: STARTTLS not offered, STARTTLS refused (4xx/5xx, NO, -ERR),\n"
            "                or every TLS attempt failed (plaintext on a new connection); never\n"
            "                to a pinned peer or after a sign of attack, never under encrypt or\n"
            "                verify. Without it those cases defer and no password is sent. An\n"
            "                IMAP PREAUTH greeting never gets a login: without it the session\n"
            "                defers, with it the mailbox is listed without logging in\n"
            "  --json        print the library's report as one JSON line on stdout\n"
            "  -v            debug logging and the SMTP dialogue on stderr\n"
            "\n"
            "exit: 0 ok, 75 temporary failure, 69 permanent failure, 77 login refused, 64 usage,\n"
            "      66 unreadable message, 78 configuration error\n",
            prog, prog, prog, prog, prog);
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    usage(stderr);
    exit(EX_USAGE);
}

/* ---- connecting ---- */

static int connect_tcp(const char *host, uint16_t port, unsigned timeout_s, char *err, size_t errcap);

/* The library's retries (the fallback ladder, the plaintext retry under may) open new
 * connections through these callbacks; it closes the ones it gives up. */
struct redial {
    const char *host;
    unsigned timeout;
};

static int32_t redial_connect(void *ud, const char *host, uint16_t port, int32_t *out_fd)
{
    struct redial *rd = ud;
    char err[256];
    (void)host; /* the session's host, the same one this program resolved */
    int fd = connect_tcp(rd->host, port, rd->timeout, err, sizeof err);
    if (fd < 0) {
        fprintf(stderr, "%s: retry: %s\n", prog, err);
        return ECONNREFUSED;
    }
    if (verbose)
        fprintf(stderr, "%s: retry on a new connection (fd %d)\n", prog, fd);
    *out_fd = fd;
    return 0;
}

static void redial_close(void *ud, int32_t fd)
{
    (void)ud;
    if (fd >= 0)
        close(fd);
}

/* Connects to host:port with a timeout per address; returns a blocking fd or -1. */
static int connect_tcp(const char *host, uint16_t port, unsigned timeout_s, char *err, size_t errcap)
{
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0) {
        snprintf(err, errcap, "%s: %s", host, gai_strerror(g));
        return -1;
    }
    int fd = -1;
    snprintf(err, errcap, "%s: no address", host);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char addr[NI_MAXHOST] = "?";
        getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST);
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            snprintf(err, errcap, "socket: %s", strerror(errno));
            continue;
        }
        int e = 0;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            e = errno;
            if (e == EINPROGRESS) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                int r;
                do
                    r = poll(&p, 1, (int)(timeout_s * 1000u));
                while (r < 0 && errno == EINTR);
                if (r == 0) {
                    e = ETIMEDOUT;
                } else if (r < 0) {
                    e = errno;
                } else {
                    socklen_t sl = sizeof e;
                    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
                        e = errno;
                }
            }
        }
        if (e == 0) {
            int fl = fcntl(fd, F_GETFL);
            if (fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == 0)
                break;
            e = errno;
        }
        snprintf(err, errcap, "connect to %s port %u: %s", addr, (unsigned)port, strerror(e));
        if (verbose)
            fprintf(stderr, "%s: %s\n", prog, err);
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* ---- the SMTP dialogue after negotiation ---- */

struct client {
    mailtls_session *s;
    struct linereader lr;
    uint32_t last_rc;     /* the last library result of a read or write */
    char err[512];        /* why the dialogue broke */
};

static int fill_session(void *ud, uint8_t *buf, size_t cap, size_t *got)
{
    struct client *c = ud;
    uint32_t rc = mailtls_session_read(c->s, buf, cap, got);
    c->last_rc = rc;
    if (rc == MAILTLS_RESULT_OK)
        return LR_LINE;
    const char *le = mailtls_session_last_error(c->s);
    snprintf(c->err, sizeof c->err, "read: %s (%s)", le && *le ? le : mailtls_result_str(rc),
             mailtls_result_name(rc));
    if (rc == MAILTLS_RESULT_CLOSED || rc == MAILTLS_RESULT_PEER_CLOSED)
        return LR_EOF;
    if (rc == MAILTLS_RESULT_TIMEOUT)
        return LR_TIMEOUT;
    return LR_ERROR;
}

static int send_all(struct client *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        size_t n = 0;
        uint32_t rc = mailtls_session_write(c->s, p, len, &n);
        c->last_rc = rc;
        if (rc != MAILTLS_RESULT_OK) {
            const char *le = mailtls_session_last_error(c->s);
            snprintf(c->err, sizeof c->err, "write: %s (%s)", le && *le ? le : mailtls_result_str(rc),
                     mailtls_result_name(rc));
            return -1;
        }
        p += n;
        len -= n;
    }
    return 0;
}

static int vsend_cmd(struct client *c, const char *fmt, va_list ap)
{
    char line[1024];
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    if (n < 0 || (size_t)n >= sizeof line - 2) {
        snprintf(c->err, sizeof c->err, "command too long");
        return -1;
    }
    if (verbose)
        fprintf(stderr, "%s: C: %s\n", prog, line);
    memcpy(line + n, "\r\n", 2);
    return send_all(c, line, (size_t)n + 2);
}

/*
 * Reads one (possibly multi-line) reply: "NNN-text" continues, "NNN text" or "NNN"
 * ends it, every line carries the same code. `text` gets the lines' text joined
 * with " / " (truncated). Returns 0 with *code set, or -1 with c->err set.
 */
static int read_reply(struct client *c, int *code, char *text, size_t textcap)
{
    char line[MAX_REPLY_LINE];
    size_t tl = 0;
    text[0] = '\0';
    *code = 0;
    for (int nlines = 1;; nlines++) {
        size_t len;
        bool crlf;
        int st = lr_getline(&c->lr, line, sizeof line, &len, &crlf);
        if (st == LR_TOOLONG) {
            snprintf(c->err, sizeof c->err, "reply line longer than %d bytes", MAX_REPLY_LINE);
            return -1;
        }
        if (st == LR_EOF) {
            if (c->last_rc == MAILTLS_RESULT_OK)
                snprintf(c->err, sizeof c->err, "the server closed the connection");
            return -1;
        }
        if (st != LR_LINE)
            return -1; /* err set by fill_session */
        if (verbose)
            fprintf(stderr, "%s: S: %.*s\n", prog, (int)len, line);
        if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' ||
            line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-')) {
            snprintf(c->err, sizeof c->err, "not an SMTP reply: \"%.100s\"", line);
            return -1;
        }
        int lc = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (*code && lc != *code) {
            snprintf(c->err, sizeof c->err, "reply code changed from %d to %d inside a reply", *code, lc);
            return -1;
        }
        *code = lc;
        const char *t = len > 4 ? line + 4 : "";
        for (const char *q = t; *q && tl + 4 < textcap; q++) { /* printable text only */
            if (q == t && tl > 0) {
                memcpy(text + tl, " / ", 3);
                tl += 3;
            }
            text[tl++] = (*q >= ' ' && *q < 0x7f) ? *q : '?';
        }
        text[tl] = '\0';
        if (len == 3 || line[3] == ' ')
            return 0;
        if (nlines >= MAX_REPLY_LINES) {
            snprintf(c->err, sizeof c->err, "reply longer than %d lines", MAX_REPLY_LINES);
            return -1;
        }
    }
}

/* The exit status for a refusing reply code. */
static int exit_for_code(int code)
{
    return code >= 500 ? EX_UNAVAILABLE : EX_TEMPFAIL;
}

/* Sends a command and reads its reply; *code 0 when the dialogue broke. */
static int command(struct client *c, int *code, char *text, size_t textcap, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int command(struct client *c, int *code, char *text, size_t textcap, const char *fmt, ...)
{
    *code = 0;
    va_list ap;
    va_start(ap, fmt);
    int r = vsend_cmd(c, fmt, ap);
    va_end(ap);
    if (r < 0)
        return -1;
    return read_reply(c, code, text, textcap);
}

/* Ends a refused transaction politely; errors no longer matter (a 421 closes anyway). */
static void polite_quit(struct client *c)
{
    char text[256];
    int code;
    if (command(c, &code, text, sizeof text, "QUIT") < 0 && verbose)
        fprintf(stderr, "%s: QUIT: %s\n", prog, c->err);
}

/* Whether the report lists capability `kw` (keyword compare, case-insensitive). */
static bool has_capability(const mailtls_report *rep, const char *kw)
{
    size_t kl = strlen(kw);
    size_t n = mailtls_report_capability_count(rep);
    for (size_t i = 0; i < n; i++) {
        const char *cap = mailtls_report_capability(rep, i);
        if (cap && strncasecmp(cap, kw, kl) == 0 && (cap[kl] == '\0' || cap[kl] == ' '))
            return true;
    }
    return false;
}

/*
 * The message as it goes on the wire: every line ending (CRLF, bare LF, bare CR)
 * becomes CRLF, lines starting with '.' get another '.', a last line without an end
 * gets one, and ".\r\n" ends it.
 */
static int prepare_message(const uint8_t *in, size_t n, struct sbuf *out, bool *eightbit)
{
    bool bol = true;
    *eightbit = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = in[i];
        if (bol && ch == '.' && sb_append(out, ".", 1) < 0)
            return -1;
        bol = false;
        if (ch == '\r' || ch == '\n') {
            if (ch == '\r' && i + 1 < n && in[i + 1] == '\n')
                i++;
            if (sb_append(out, "\r\n", 2) < 0)
                return -1;
            bol = true;
            continue;
        }
        if (ch >= 0x80)
            *eightbit = true;
        if (sb_append(out, &ch, 1) < 0)
            return -1;
    }
    if (!bol && sb_append(out, "\r\n", 2) < 0)
        return -1;
    return sb_append(out, ".\r\n", 3);
}

static int read_file(const char *path, struct sbuf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (sb_append(out, buf, n) < 0) {
            fclose(f);
            errno = ENOMEM;
            return -1;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* An envelope address: printable ASCII, no spaces, no angle brackets. */
static bool valid_address(const char *a, bool allow_empty)
{
    if (!*a)
        return allow_empty;
    if (strlen(a) > 254)
        return false;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p <= ' ' || *p >= 0x7f || *p == '<' || *p == '>')
            return false;
    return true;
}

struct delivery {
    const char *from;
    const char *const *to;
    size_t nto;
    const struct sbuf *wire;   /* the prepared message, ending in ".\r\n" */
    bool eightbit;
    uint32_t proto;
};

/* The MAIL parameters the server's EHLO allows: SIZE, and BODY=8BITMIME for 8-bit text. */
static void mail_params(const mailtls_report *rep, const struct delivery *d, char *params, size_t cap)
{
    size_t plen = 0;
    if (has_capability(rep, "SIZE"))
        plen += (size_t)snprintf(params + plen, cap - plen, " SIZE=%zu", d->wire->len);
    if (d->eightbit) {
        if (has_capability(rep, "8BITMIME"))
            snprintf(params + plen, cap - plen, " BODY=8BITMIME");
        else
            fprintf(stderr, "%s: warning: 8-bit message but the server does not offer 8BITMIME\n", prog);
    }
}

/* The worse of two exit statuses: a deferral (4xx) wins over a refusal (5xx). */
static void note_refusal(int *worst, int code)
{
    if (exit_for_code(code) == EX_TEMPFAIL || *worst == 0)
        *worst = exit_for_code(code);
}

/* RCPT for every --to; accepted[i] says which got a 2xx. The number accepted, or -1
 * when the dialogue broke. */
static long send_rcpts(struct client *c, const struct delivery *d, bool *accepted, int *worst)
{
    char text[1024];
    int code;
    long naccepted = 0;
    for (size_t i = 0; i < d->nto; i++) {
        if (command(c, &code, text, sizeof text, "RCPT TO:<%s>", d->to[i]) < 0)
            return -1;
        if (code / 100 == 2) {
            accepted[i] = true;
            naccepted++;
        } else {
            fprintf(stderr, "%s: recipient <%s> refused: %d %s\n", prog, d->to[i], code, text);
            note_refusal(worst, code);
        }
    }
    return naccepted;
}

/* The replies after the final dot. SMTP: one for the message. LMTP: one per accepted
 * recipient, in order. 0, or -1 when the dialogue broke. */
static int read_data_replies(struct client *c, const struct delivery *d, const bool *accepted, size_t naccepted,
                             int *worst)
{
    char text[1024];
    int code;
    size_t nreplies = d->proto == MAILTLS_PROTO_LMTP ? naccepted : 1;
    for (size_t i = 0, k = 0; k < nreplies; i++) {
        if (d->proto == MAILTLS_PROTO_LMTP && !accepted[i])
            continue;
        k++;
        if (read_reply(c, &code, text, sizeof text) < 0)
            return -1;
        const char *who = d->proto == MAILTLS_PROTO_LMTP ? d->to[i] : NULL;
        if (code / 100 == 2) {
            fprintf(stderr, "%s: delivered%s%s%s: %d %s\n", prog, who ? " to <" : "", who ? who : "",
                    who ? ">" : "", code, text);
        } else {
            fprintf(stderr, "%s: message refused%s%s%s: %d %s\n", prog, who ? " for <" : "", who ? who : "",
                    who ? ">" : "", code, text);
            note_refusal(worst, code);
        }
    }
    return 0;
}

/* The dialogue broke: what failed, and the library's detail when it was the session. */
static int dialogue_broken(struct client *c)
{
    fprintf(stderr, "%s: dialogue failed: %s\n", prog, c->err);
    if (c->last_rc != MAILTLS_RESULT_OK) {
        const char *le = mailtls_session_last_error(c->s);
        if (le && *le)
            fprintf(stderr, "%s: library error: %s\n", prog, le);
    }
    return EX_TEMPFAIL;
}

/*
 * Runs MAIL, RCPT..., DATA, the message and QUIT. Returns the exit status: 0 when
 * every recipient got the message; 75 when the dialogue broke or any recipient was
 * deferred (4xx); otherwise 69 (5xx).
 */
static int deliver(struct client *c, const mailtls_report *rep, const struct delivery *d)
{
    char text[1024];
    int code;
    int worst = 0; /* 0, EX_UNAVAILABLE or EX_TEMPFAIL (which wins) */
    char params[128] = "";
    mail_params(rep, d, params, sizeof params);

    if (command(c, &code, text, sizeof text, "MAIL FROM:<%s>%s", d->from, params) < 0)
        return dialogue_broken(c);
    if (code / 100 != 2) {
        fprintf(stderr, "%s: MAIL FROM:<%s> refused: %d %s\n", prog, d->from, code, text);
        polite_quit(c);
        return exit_for_code(code);
    }

    bool *accepted = calloc(d->nto, sizeof *accepted);
    if (!accepted) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return EX_TEMPFAIL;
    }
    long naccepted = send_rcpts(c, d, accepted, &worst);
    if (naccepted < 0)
        goto broken;
    if (naccepted == 0) {
        fprintf(stderr, "%s: no recipient accepted\n", prog);
        polite_quit(c);
        free(accepted);
        return worst ? worst : EX_UNAVAILABLE;
    }

    if (command(c, &code, text, sizeof text, "DATA") < 0)
        goto broken;
    if (code != 354) {
        fprintf(stderr, "%s: DATA refused: %d %s\n", prog, code, text);
        polite_quit(c);
        free(accepted);
        return code / 100 == 4 || code / 100 == 5 ? exit_for_code(code) : EX_TEMPFAIL;
    }
    if (verbose)
        fprintf(stderr, "%s: C: (%zu bytes of message and the final dot)\n", prog, d->wire->len);
    if (send_all(c, d->wire->p, d->wire->len) < 0 || read_data_replies(c, d, accepted, (size_t)naccepted, &worst) < 0)
        goto broken;
    free(accepted);

    if (command(c, &code, text, sizeof text, "QUIT") < 0)
        fprintf(stderr, "%s: warning: QUIT: %s\n", prog, c->err);
    else if (code != 221)
        fprintf(stderr, "%s: warning: QUIT answered %d %s\n", prog, code, text);
    return worst;

broken:
    free(accepted);
    return dialogue_broken(c);
}

/* Without a message: QUIT, its 221. Returns 0, or 75 when the dialogue broke. */
static int just_quit(struct client *c)
{
    char text[512];
    int code;
    if (command(c, &code, text, sizeof text, "QUIT") < 0) {
        fprintf(stderr, "%s: QUIT failed: %s\n", prog, c->err);
        return EX_TEMPFAIL;
    }
    if (code != 221)
        fprintf(stderr, "%s: warning: QUIT answered %d %s\n", prog, code, text);
    return 0;
}

/* ---- report ---- */

static void print_summary(const mailtls_report *rep)
{
    uint32_t outcome = mailtls_report_outcome(rep);
    uint32_t reason = mailtls_report_reason(rep);
    const char *detail = mailtls_report_detail(rep);
    fprintf(stderr, "%s: outcome: %s (reason %s: %s)\n", prog, mailtls_outcome_name(outcome),
            mailtls_result_name(reason), mailtls_result_str(reason));
    if (detail && *detail)
        fprintf(stderr, "  detail:       %s\n", detail);
    const char *r8460 = mailtls_report_rfc8460_result_type(rep);
    if (r8460)
        fprintf(stderr, "  rfc8460:      %s\n", r8460);
    fprintf(stderr, "  starttls:     %s\n", mailtls_report_starttls_offered(rep) ? "offered" : "not offered");
    const char *ver = mailtls_report_tls_version(rep);
    if (ver)
        fprintf(stderr, "  tls:          %s %s %s%s\n", ver, mailtls_report_cipher(rep) ? mailtls_report_cipher(rep) : "?",
                mailtls_report_group(rep) ? mailtls_report_group(rep) : "?",
                mailtls_report_resumed(rep) ? " (resumed)" : "");
    else
        fprintf(stderr, "  tls:          none\n");
    const char *subj = mailtls_report_peer_cert_subject(rep);
    if (subj) {
        fprintf(stderr, "  cert subject: %s\n", subj);
        size_t nn = mailtls_report_peer_cert_name_count(rep);
        fprintf(stderr, "  cert names:  ");
        for (size_t i = 0; i < nn; i++)
            fprintf(stderr, " %s", mailtls_report_peer_cert_name(rep, i));
        fprintf(stderr, "%s\n", nn ? "" : " (none)");
        const char *sha = mailtls_report_peer_cert_sha256(rep);
        fprintf(stderr, "  cert sha256:  %s\n", sha ? sha : "?");
        int32_t v = mailtls_report_peer_cert_verified(rep);
        const char *verr = mailtls_report_peer_cert_error(rep);
        fprintf(stderr, "  cert verified: %s%s%s%s\n", v == 1 ? "yes" : v == 0 ? "no" : "not checked",
                verr ? " (" : "", verr ? verr : "", verr ? ")" : "");
    }
    size_t nc = mailtls_report_capability_count(rep);
    fprintf(stderr, "  capabilities:");
    for (size_t i = 0; i < nc; i++)
        fprintf(stderr, "%s%s", i ? ", " : " ", mailtls_report_capability(rep, i));
    fprintf(stderr, "%s\n", nc ? "" : " (none)");
    fprintf(stderr, "  attempts:     %zu\n", mailtls_report_attempt_count(rep));
}

/* A report-shaped JSON line for a failure before any session could negotiate. */
static void print_local_json(uint32_t reason, const char *detail)
{
    struct sbuf j = {0};
    sb_printf(&j, "{\"outcome\":\"defer\",\"reason\":\"%s\",\"reason_code\":%u,\"detail\":",
              mailtls_result_name(reason), reason);
    sb_json_str(&j, detail);
    sb_puts(&j, "}");
    if (j.p)
        printf("%s\n", j.p);
    sb_free(&j);
}

/* ---- the memory commands ---- */

struct forget_ctx {
    const char *host;
    int port; /* -1: every port */
    size_t n;
    struct {
        char proto[16];
        char host[256];
        unsigned port;
    } hits[256];
};

static void print_line(void *ud, const char *line)
{
    (void)ud;
    printf("%s\n", line);
}

/* A record line is "PROTO HOST PORT fields...". */
static void match_line(void *ud, const char *line)
{
    struct forget_ctx *f = ud;
    char proto[16], host[256];
    unsigned port;
    if (f->n >= sizeof f->hits / sizeof f->hits[0] || sscanf(line, "%15s %255s %u", proto, host, &port) != 3)
        return;
    if (strcasecmp(host, f->host) != 0 || (f->port >= 0 && (unsigned)f->port != port))
        return;
    snprintf(f->hits[f->n].proto, sizeof f->hits[f->n].proto, "%s", proto);
    snprintf(f->hits[f->n].host, sizeof f->hits[f->n].host, "%s", host);
    f->hits[f->n].port = port;
    f->n++;
}

static int proto_number(const char *name, uint32_t *out)
{
    static const char *names[] = {"smtp", "lmtp", "imap", "pop3", "nntp", "sieve"};
    for (uint32_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return -1;
}

/* --export-memory: the text to TEXTFILE, or through a private temporary file to stdout. */
static int export_memory(const mailtls_memory *mem, const char *memfile, const char *textfile)
{
    char tmp[64] = "";
    const char *target = textfile;
    if (strcmp(textfile, "-") == 0) {
        snprintf(tmp, sizeof tmp, "/tmp/mailtls-export-%d-XXXXXX", (int)getpid());
        int fd = mkstemp(tmp);
        if (fd < 0) {
            fprintf(stderr, "%s: --export-memory: %s\n", prog, strerror(errno));
            return EX_CONFIG;
        }
        close(fd);
        target = tmp;
    }
    uintptr_t count = 0;
    uint32_t rc = mailtls_memory_export(mem, target, &count);
    int status = 0;
    if (rc != MAILTLS_RESULT_OK) {
        fprintf(stderr, "%s: exporting %s to %s: %s\n", prog, memfile, textfile, mailtls_result_str(rc));
        status = EX_CONFIG;
    } else if (*tmp) {
        FILE *f = fopen(tmp, "r");
        char buf[8192];
        size_t n;
        while (f && (n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, stdout);
        if (f)
            fclose(f);
    }
    if (*tmp)
        unlink(tmp);
    if (status == 0)
        fprintf(stderr, "%s: exported %lu record(s)\n", prog, (unsigned long)count);
    return status;
}

/* --list-memory, --forget, --export-memory, --import-memory: exit codes 0, 78 (unusable file). */
static int memory_command(const char *memfile, bool list, const char *forget, const char *export_to,
                          const char *import_from)
{
    const mailtls_memory *mem = NULL;
    uint32_t rc = mailtls_memory_open_file(memfile, &mem);
    if (rc != MAILTLS_RESULT_OK) {
        fprintf(stderr, "%s: --memory %s: %s\n", prog, memfile, mailtls_result_str(rc));
        return EX_CONFIG;
    }
    char problems[1024] = "";
    if (mailtls_memory_problems(mem, problems, sizeof problems, NULL) == MAILTLS_RESULT_OK && *problems)
        fprintf(stderr, "%s: --memory %s: %s\n", prog, memfile, problems);
    int status = 0;
    if (export_to) {
        status = export_memory(mem, memfile, export_to);
    } else if (import_from) {
        uintptr_t count = 0;
        rc = mailtls_memory_import(mem, import_from, &count);
        if (rc != MAILTLS_RESULT_OK) {
            fprintf(stderr, "%s: importing %s into %s: %s\n", prog, import_from, memfile, mailtls_result_str(rc));
            status = EX_CONFIG;
        } else {
            *problems = 0;
            if (mailtls_memory_problems(mem, problems, sizeof problems, NULL) == MAILTLS_RESULT_OK && *problems)
                fprintf(stderr, "%s: --import-memory %s: %s\n", prog, import_from, problems);
            printf("imported %lu record(s) from %s\n", (unsigned long)count, import_from);
        }
    } else if (list) {
        uintptr_t count = 0;
        rc = mailtls_memory_list(mem, print_line, NULL, &count);
        if (rc != MAILTLS_RESULT_OK) {
            fprintf(stderr, "%s: listing %s: %s\n", prog, memfile, mailtls_result_str(rc));
            status = EX_CONFIG;
        } else {
            fprintf(stderr, "%s: %lu record(s)\n", prog, (unsigned long)count);
        }
    } else {
        static struct forget_ctx f;
        char host[256], err[512];
        uint16_t port = 0;
        f.port = -1;
        if (strchr(forget, ':') && forget[0] != '[' && strchr(forget, ':') == strrchr(forget, ':')) {
            if (split_hostport(forget, host, sizeof host, 0, &port, err, sizeof err) < 0 || port == 0) {
                fprintf(stderr, "%s: --forget: not HOST[:PORT]: \"%s\"\n", prog, forget);
                mailtls_memory_free(mem);
                return EX_USAGE;
            }
            f.port = port;
        } else if (forget[0] == '[') {
            if (split_hostport(forget, host, sizeof host, 0, &port, err, sizeof err) < 0) {
                fprintf(stderr, "%s: --forget: not HOST[:PORT]: \"%s\"\n", prog, forget);
                mailtls_memory_free(mem);
                return EX_USAGE;
            }
            f.port = port ? port : -1;
        } else {
            snprintf(host, sizeof host, "%s", forget);
        }
        f.host = host;
        rc = mailtls_memory_list(mem, match_line, &f, NULL);
        for (size_t i = 0; rc == MAILTLS_RESULT_OK && i < f.n; i++) {
            uint32_t proto;
            if (proto_number(f.hits[i].proto, &proto) < 0)
                continue;
            rc = mailtls_memory_forget(mem, proto, f.hits[i].host, (uint16_t)f.hits[i].port);
        }
        if (rc != MAILTLS_RESULT_OK) {
            fprintf(stderr, "%s: --forget %s: %s\n", prog, forget, mailtls_result_str(rc));
            status = EX_CONFIG;
        } else {
            printf("forgot %zu record(s) of %s\n", f.n, forget);
        }
    }
    mailtls_memory_free(mem);
    return status;
}

/* ---- main ---- */

/* --memory-redis: the store outlives the memory and every config holding it, so it
 * goes at exit, whichever way main ends. */
static struct redis_store *redis;
static void free_redis(void) { redis_store_free(redis); }

/* The command line. */
struct args {
    uint32_t proto, policy;
    const char *servername, *cafile, *from, *message, *memfile;
    const char *to[MAX_RCPTS];
    size_t nto;
    unsigned long timeout, total_timeout;
    bool json, implicit, plaintext_auth, list_memory;
    const char *user, *pass, *forget, *export_to, *import_from;
    const char *memredis;
    struct dest_args dest;
    const char *connect_to; /* --dns: the MX host's address (HOST is then the MX host) */
    const char *tlsrpt_dir;
};

enum { O_PROTO = 256, O_POLICY, O_SERVERNAME, O_CAFILE, O_TIMEOUT, O_FROM, O_TO, O_MESSAGE, O_JSON, O_MEMORY,
       O_LIST_MEMORY, O_FORGET, O_EXPORT_MEMORY, O_IMPORT_MEMORY, O_IMPLICIT, O_USER, O_PASS, O_PLAINAUTH,
       O_TOTAL_TIMEOUT, O_MEMORY_REDIS, O_TLSA, O_DNSSEC, O_MX_HOST, O_TLSA_BASE, O_NEXT_HOP, O_MTA_STS, O_DNS, O_DNS_ANCHOR, O_TLSRPT_DIR };

static const struct option longopts[] = {
    {"proto", required_argument, NULL, O_PROTO},
    {"policy", required_argument, NULL, O_POLICY},
    {"servername", required_argument, NULL, O_SERVERNAME},
    {"cafile", required_argument, NULL, O_CAFILE},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"total-timeout", required_argument, NULL, O_TOTAL_TIMEOUT},
    {"from", required_argument, NULL, O_FROM},
    {"to", required_argument, NULL, O_TO},
    {"message", required_argument, NULL, O_MESSAGE},
    {"json", no_argument, NULL, O_JSON},
    {"memory", required_argument, NULL, O_MEMORY},
    {"memory-redis", required_argument, NULL, O_MEMORY_REDIS},
    {"list-memory", no_argument, NULL, O_LIST_MEMORY},
    {"forget", required_argument, NULL, O_FORGET},
    {"export-memory", required_argument, NULL, O_EXPORT_MEMORY},
    {"import-memory", required_argument, NULL, O_IMPORT_MEMORY},
    {"implicit", no_argument, NULL, O_IMPLICIT},
    {"user", required_argument, NULL, O_USER},
    {"pass", required_argument, NULL, O_PASS},
    {"plaintext-auth", no_argument, NULL, O_PLAINAUTH},
    {"tlsa", required_argument, NULL, O_TLSA},
    {"dnssec", required_argument, NULL, O_DNSSEC},
    {"mx-host", required_argument, NULL, O_MX_HOST},
    {"tlsa-base", required_argument, NULL, O_TLSA_BASE},
    {"next-hop", required_argument, NULL, O_NEXT_HOP},
    {"mta-sts", required_argument, NULL, O_MTA_STS},
    {"dns", required_argument, NULL, O_DNS},
    {"dns-anchor", required_argument, NULL, O_DNS_ANCHOR},
    {"tlsrpt-dir", required_argument, NULL, O_TLSRPT_DIR},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static uint32_t parse_policy(const char *name)
{
    if (strcmp(name, "none") == 0)
        return MAILTLS_POLICY_NONE;
    if (strcmp(name, "may") == 0)
        return MAILTLS_POLICY_MAY;
    if (strcmp(name, "encrypt") == 0)
        return MAILTLS_POLICY_ENCRYPT;
    if (strcmp(name, "verify") == 0)
        return MAILTLS_POLICY_VERIFY;
    if (strcmp(name, "dane") == 0)
        return MAILTLS_POLICY_DANE;
    if (strcmp(name, "dane-only") == 0)
        return MAILTLS_POLICY_DANE_ONLY;
    die_usage("--policy: none, may, encrypt, verify, dane or dane-only, not \"%s\"", name);
}

/* --timeout and --total-timeout: 1 to 86400 seconds. */
static unsigned long parse_seconds(const char *option, const char *arg)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || *end || end == arg || v == 0 || v > 86400)
        die_usage("%s: seconds, 1..86400, not \"%s\"", option, arg);
    return v;
}

/* Reads the command line into *a: -1 to go on, or main's exit status (0 after
 * --help). A bad value ends the program through die_usage. */
static int parse_args(int argc, char **argv, struct args *a)
{
    int opt;
    while ((opt = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        switch (opt) {
        case O_PROTO:
            if (proto_number(optarg, &a->proto) < 0)
                die_usage("--proto: smtp, lmtp, imap, pop3, nntp or sieve, not \"%s\"", optarg);
            break;
        case O_IMPLICIT: a->implicit = true; break;
        case O_USER: a->user = optarg; break;
        case O_PASS: a->pass = optarg; break;
        case O_PLAINAUTH: a->plaintext_auth = true; break;
        case O_POLICY: a->policy = parse_policy(optarg); break;
        case O_SERVERNAME: a->servername = optarg; break;
        case O_CAFILE: a->cafile = optarg; break;
        case O_TIMEOUT: a->timeout = parse_seconds("--timeout", optarg); break;
        case O_TOTAL_TIMEOUT: a->total_timeout = parse_seconds("--total-timeout", optarg); break;
        case O_FROM: a->from = optarg; break;
        case O_TO:
            if (a->nto >= MAX_RCPTS)
                die_usage("too many --to (at most %d)", MAX_RCPTS);
            a->to[a->nto++] = optarg;
            break;
        case O_MESSAGE: a->message = optarg; break;
        case O_JSON: a->json = true; break;
        case 'v': verbose = 1; break;
        case O_MEMORY: a->memfile = optarg; break;
        case O_MEMORY_REDIS: a->memredis = optarg; break;
        case O_LIST_MEMORY: a->list_memory = true; break;
        case O_FORGET: a->forget = optarg; break;
        case O_EXPORT_MEMORY: a->export_to = optarg; break;
        case O_IMPORT_MEMORY: a->import_from = optarg; break;
        case O_TLSA: a->dest.tlsa_file = optarg; break;
        case O_DNSSEC: a->dest.dnssec = optarg; break;
        case O_MX_HOST: a->dest.mx_host = optarg; break;
        case O_TLSA_BASE: a->dest.tlsa_base = optarg; break;
        case O_NEXT_HOP: a->dest.next_hop = optarg; break;
        case O_MTA_STS: a->dest.mta_sts_file = optarg; break;
        case O_DNS: a->dest.dns = optarg; break;
        case O_DNS_ANCHOR: a->dest.dns_anchor = optarg; break;
        case O_TLSRPT_DIR: a->tlsrpt_dir = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    return -1;
}

static bool mailbox_proto(const struct args *a)
{
    return a->proto != MAILTLS_PROTO_SMTP && a->proto != MAILTLS_PROTO_LMTP;
}

/* The options that exclude or need each other, and the addresses. */
static void check_args(int argc, const struct args *a)
{
    if (optind != argc - 1)
        die_usage(optind >= argc ? "HOST[:PORT] is required" : "one HOST[:PORT] only");
    bool mailbox = mailbox_proto(a);
    if ((a->from || a->nto || a->message) && !(a->from && a->nto && a->message))
        die_usage("--from, --to and --message go together");
    if (a->message && mailbox)
        die_usage("--from, --to and --message are for --proto smtp and lmtp");
    if (!a->user != !a->pass)
        die_usage("--user and --pass go together");
    if (a->user && !mailbox)
        die_usage("--user and --pass are for --proto imap, pop3, nntp and sieve");
    if (a->implicit && a->proto == MAILTLS_PROTO_LMTP)
        die_usage("--implicit: LMTP has no implicit-TLS port");
    if (a->from && !valid_address(a->from, true))
        die_usage("--from: not a usable address: \"%s\"", a->from);
    for (size_t i = 0; i < a->nto; i++)
        if (!valid_address(a->to[i], false))
            die_usage("--to: not a usable address: \"%s\"", a->to[i]);
}

/* The message first: a local problem must not cost a connection. 0, or main's exit
 * status. */
static int load_message(const struct args *a, struct sbuf *wire, bool *eightbit)
{
    static struct sbuf raw; /* file scope lifetime: no leak on any exit path */
    *eightbit = false;
    if (a->message) {
        if (read_file(a->message, &raw) < 0) {
            fprintf(stderr, "%s: %s: %s\n", prog, a->message, strerror(errno));
            return EX_NOINPUT;
        }
        if (prepare_message((const uint8_t *)raw.p, raw.len, wire, eightbit) < 0) {
            fprintf(stderr, "%s: out of memory\n", prog);
            return EX_OSERR;
        }
        sb_free(&raw);
    }
    return 0;
}

/* The config, built once. 0 and *cfg, or main's exit status. */
static int build_config(const struct args *a, const mailtls_config **cfg)
{
    mailtls_config_builder *b = NULL;
    uint32_t rc = mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, &b);
    if (rc != MAILTLS_RESULT_OK) {
        fprintf(stderr, "%s: mailtls_config_builder_new: %s\n", prog, mailtls_result_str(rc));
        return EX_SOFTWARE;
    }
    const char *step = "set_policy";
    rc = mailtls_config_builder_set_policy(b, a->policy);
    if (rc == MAILTLS_RESULT_OK) {
        step = "set_timeout_ms";
        rc = mailtls_config_builder_set_timeout_ms(b, (uint32_t)(a->timeout * 1000u));
    }
    if (rc == MAILTLS_RESULT_OK && a->total_timeout) {
        step = "set_total_timeout_ms";
        rc = mailtls_config_builder_set_total_timeout_ms(b, (uint32_t)(a->total_timeout * 1000u));
    }
    if (rc == MAILTLS_RESULT_OK && a->cafile) {
        step = "set_ca_file";
        rc = mailtls_config_builder_set_ca_file(b, a->cafile);
    }
    const mailtls_memory *mem = NULL;
    if (rc == MAILTLS_RESULT_OK && a->memfile) {
        step = "memory";
        rc = mailtls_memory_open_file(a->memfile, &mem);
        if (rc == MAILTLS_RESULT_OK) {
            char problems[1024] = "";
            if (mailtls_memory_problems(mem, problems, sizeof problems, NULL) == MAILTLS_RESULT_OK && *problems)
                fprintf(stderr, "%s: --memory %s: %s\n", prog, a->memfile, problems);
            rc = mailtls_config_builder_set_memory(b, mem);
            mailtls_memory_free(mem); /* the config holds its own reference */
        }
    }
    if (rc == MAILTLS_RESULT_OK && redis) {
        step = "memory-redis";
        rc = redis_store_memory(redis, &mem);
        if (rc == MAILTLS_RESULT_OK) {
            rc = mailtls_config_builder_set_memory(b, mem);
            mailtls_memory_free(mem);
        }
    }
    if (rc == MAILTLS_RESULT_OK && a->plaintext_auth) {
        step = "set_plaintext_auth";
        rc = mailtls_config_builder_set_plaintext_auth(b, true);
    }
    if (rc == MAILTLS_RESULT_OK) {
        step = "set_log";
        rc = mailtls_config_builder_set_log(b, ex_log_cb, (void *)prog,
                                            verbose ? MAILTLS_LOG_LEVEL_DEBUG : MAILTLS_LOG_LEVEL_INFO);
    }
    if (rc == MAILTLS_RESULT_OK) {
        step = "build";
        rc = mailtls_config_builder_build(b, cfg);
    }
    if (rc != MAILTLS_RESULT_OK) {
        char detail[512] = "";
        mailtls_config_builder_last_error(b, detail, sizeof detail);
        fprintf(stderr, "%s: configuration (%s): %s [%s]%s%s\n", prog, step, mailtls_result_str(rc),
                mailtls_result_name(rc), *detail ? ": " : "", detail);
        mailtls_config_builder_free(b);
        return rc == MAILTLS_RESULT_INVALID_PARAMETER ? EX_USAGE : EX_CONFIG;
    }
    mailtls_config_builder_free(b);
    return 0;
}

/* The session for host:port. 0 and *out, or main's exit status (cfg then freed). */
static int new_session(const struct args *a, const mailtls_config *cfg, const char *host, uint16_t port,
                       mailtls_session **out)
{
    mailtls_session *s = NULL;
    uint32_t rc = mailtls_client_new(cfg, a->proto, host, port, &s);
    if (rc != MAILTLS_RESULT_OK) {
        fprintf(stderr, "%s: mailtls_client_new(%s): %s [%s]\n", prog, host, mailtls_result_str(rc),
                mailtls_result_name(rc));
        mailtls_config_free(cfg);
        return rc == MAILTLS_RESULT_INVALID_PARAMETER ? EX_USAGE : EX_SOFTWARE;
    }
    if (a->servername && (rc = mailtls_session_set_server_name(s, a->servername)) != MAILTLS_RESULT_OK) {
        fprintf(stderr, "%s: --servername %s: %s\n", prog, a->servername, mailtls_session_last_error(s));
        mailtls_session_free(s);
        mailtls_config_free(cfg);
        return EX_USAGE;
    }
    int status = 0;
    if (dest_apply(&a->dest, s, prog, &status) < 0) {
        mailtls_session_free(s);
        mailtls_config_free(cfg);
        return status;
    }
    *out = s;
    return 0;
}

/* After a negotiation the policy accepts: the program's own dialogue, then the close. */
static int talk(const struct args *a, mailtls_session *s, const mailtls_report *rep, const struct sbuf *wire,
                bool eightbit)
{
    int status;
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "%s: out of memory\n", prog);
        status = EX_OSERR;
    } else {
        c->s = s;
        lr_init(&c->lr, fill_session, c);
        if (mailbox_proto(a)) {
            status = mailbox_dialogue(s, a->proto, a->user, a->pass, verbose, prog);
        } else if (a->message) {
            struct delivery d = {.from = a->from, .to = a->to, .nto = a->nto, .wire = wire, .eightbit = eightbit,
                                 .proto = a->proto};
            status = deliver(c, rep, &d);
        } else {
            status = just_quit(c);
        }
        free(c);
    }
    uint32_t rc = mailtls_session_close(s);
    if (rc != MAILTLS_RESULT_OK && verbose)
        fprintf(stderr, "%s: close: %s\n", prog, mailtls_session_last_error(s));
    return status;
}

/* Connects, negotiates, talks and reports; frees the session, the config and the
 * message. Returns main's exit status. */
static int run(const struct args *a, const mailtls_config *cfg, mailtls_session *s, const char *host,
               uint16_t port, struct sbuf *wire, bool eightbit)
{
    char err[512];
    uint32_t rc;
    int status;
    const char *to = a->connect_to ? a->connect_to : host;
    /* A bogus DNS answer may leave no address: the library defers on it before any
     * connection is needed. */
    int fd = a->connect_to && !*a->connect_to ? -2 : connect_tcp(to, port, (unsigned)a->timeout, err, sizeof err);
    if (fd == -1) {
        fprintf(stderr, "%s: %s\n", prog, err);
        if (a->json)
            print_local_json(MAILTLS_RESULT_CONNECT, err);
        mailtls_session_free(s);
        mailtls_config_free(cfg);
        sb_free(wire);
        return EX_TEMPFAIL;
    }

    struct redial rd = {.host = to, .timeout = (unsigned)a->timeout};
    rc = fd >= 0 ? mailtls_session_set_fd(s, fd) : MAILTLS_RESULT_OK;
    if (rc == MAILTLS_RESULT_OK && a->implicit)
        rc = mailtls_session_set_implicit_tls(s, true);
    if (rc == MAILTLS_RESULT_OK && a->user) /* no password in plaintext unless --plaintext-auth */
        rc = mailtls_session_set_will_authenticate(s, true);
    if (rc == MAILTLS_RESULT_OK)
        rc = mailtls_session_set_connector(s, redial_connect, redial_close, &rd);
    if (rc == MAILTLS_RESULT_OK)
        rc = mailtls_client_negotiate(s);
    fd = mailtls_session_fd(s); /* a retry may have replaced the first connection */
    const mailtls_report *rep = mailtls_session_report(s);
    if (rc != MAILTLS_RESULT_OK) {
        fprintf(stderr, "%s: negotiation failed: %s\n", prog, mailtls_session_last_error(s));
        print_summary(rep);
        uint32_t outcome = mailtls_report_outcome(rep);
        status = outcome == MAILTLS_OUTCOME_FAIL ? EX_UNAVAILABLE : EX_TEMPFAIL;
    } else {
        print_summary(rep);
        status = talk(a, s, rep, wire, eightbit);
    }
    if (fd >= 0)
        close(fd);

    /* The TLS-RPT record: what an MTA logs per session for its daily report. */
    const char *record = a->tlsrpt_dir ? mailtls_report_tlsrpt_record(mailtls_session_report(s)) : NULL;
    if (record && tlsrpt_record_write(a->tlsrpt_dir, record) < 0)
        fprintf(stderr, "%s: --tlsrpt-dir %s: %s\n", prog, a->tlsrpt_dir, strerror(errno));
    if (a->json) {
        rep = mailtls_session_report(s);
        const char *j = mailtls_report_json(rep);
        printf("%s\n", j ? j : "null");
    }
    fprintf(stderr, "%s: exit %d\n", prog, status);
    mailtls_session_free(s);
    mailtls_config_free(cfg);
    sb_free(wire);
    return status;
}

int main(int argc, char **argv)
{
    static struct args a = {.proto = MAILTLS_PROTO_SMTP, .policy = MAILTLS_POLICY_MAY, .timeout = 60};
    signal(SIGPIPE, SIG_IGN);
    int status = parse_args(argc, argv, &a);
    if (status >= 0)
        return status;
    if (a.memredis) {
        if (a.memfile)
            die_usage("--memory FILE and --memory-redis: one memory or the other");
        char rerr[512];
        if (!(redis = redis_store_new(a.memredis, 0, 0, prog, rerr, sizeof rerr)))
            die_usage("--memory-redis: %s", rerr);
        atexit(free_redis); /* after main's return has freed the config, the memory's last holder */
    }
    int memory_commands = a.list_memory + !!a.forget + !!a.export_to + !!a.import_from;
    if (memory_commands) {
        if (!a.memfile)
            die_usage("--list-memory, --forget, --export-memory and --import-memory need --memory FILE%s",
                      redis ? " (a Redis memory is listed and edited with redis-cli)" : "");
        if (memory_commands > 1)
            die_usage("--list-memory, --forget, --export-memory and --import-memory are separate commands");
        if (optind != argc)
            die_usage("--list-memory, --forget, --export-memory and --import-memory take no HOST argument");
        return memory_command(a.memfile, a.list_memory, a.forget, a.export_to, a.import_from);
    }
    check_args(argc, &a);

    char host[256];
    uint16_t port;
    char err[512];
    static const uint16_t ports[6][2] = {{25, 465}, {24, 24}, {143, 993}, {110, 995}, {119, 563}, {4190, 4190}};
    if (split_hostport(argv[optind], host, sizeof host, ports[a.proto][a.implicit ? 1 : 0], &port, err, sizeof err) < 0 ||
        port == 0)
        die_usage("%s", port == 0 ? "port 0" : err);

    static struct sbuf wire; /* file scope lifetime: no leak on any exit path */
    bool eightbit;
    if ((status = load_message(&a, &wire, &eightbit)) != 0)
        return status;
    if (a.dest.dns) {
        if (a.dest.tlsa_file || a.dest.dnssec || a.dest.mx_host || a.dest.tlsa_base || a.dest.next_hop || a.servername)
            die_usage("--dns looks the destination up: no --tlsa, --dnssec, --mx-host, --tlsa-base, --next-hop, --servername");
        if ((status = dest_lookup(&a.dest, host, port, prog)) != 0)
            return status;
        a.connect_to = a.dest.found->address;
        if (a.dest.found->mx_host[0]) /* a bogus MX answer leaves none: the library defers */
            snprintf(host, sizeof host, "%s", a.dest.found->mx_host);
    } else if (a.dest.dns_anchor) {
        die_usage("--dns-anchor goes with --dns");
    }
    const mailtls_config *cfg = NULL;
    if ((status = build_config(&a, &cfg)) != 0)
        return status;
    mailtls_session *s = NULL;
    if ((status = new_session(&a, cfg, host, port, &s)) != 0)
        return status;
    return run(&a, cfg, s, host, port, &wire, eightbit);
}
