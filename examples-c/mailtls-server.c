/*
 * mailtls-server: a small SMTP/LMTP server that offers STARTTLS through mailtls and
 * delivers into a maildir, and an IMAP, POP3, NNTP or ManageSieve server that serves
 * that maildir, a news spool or a script store, with STARTTLS or implicit TLS. One
 * process per connection (fork). See usage() for the options.
 *
 * This file holds main (the options, the config built once, the listener, the
 * children) and serve(), which sets one connection up, runs its dialogue and closes
 * it. The dialogues are server-smtp.c, server-imap.c, server-pop3.c, server-nntp.c and
 * server-sieve.c (server-dialogues.h), on top of server-store.c (what the mailbox
 * dialogues share) and server-conn.c (the connection layer, server.h); nothing
 * depends on this file.
 *
 * It prints {"listening":"ADDR:PORT"} (the real port) as its first stdout line and,
 * with --json-log, one JSON line per connection. Human logs go to stderr.
 *
 * The server keeps its own command loop and line reader and calls the library at
 * three points: mailtls_server_offer_starttls() for the EHLO reply,
 * mailtls_server_check_command() before every command, mailtls_server_starttls() for
 * STARTTLS. Before TLS it reads the socket itself; after TLS every byte goes through
 * mailtls_session_read/_write. Writes always go through mailtls_session_write.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "common.h"
#include "legacy-tls.h"
#include "server-dialogues.h"
#include "server.h"

static const mailtls_config *cfg;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--proto smtp|lmtp|imap|pop3|nntp|sieve] [--implicit] [--listen ADDR:PORT]\n"
            "                      [--cert FILE --key FILE] [--no-tls] [--require-tls] [--maildir DIR]\n"
            "                      [--spool DIR] [--scripts DIR] [--user NAME --pass SECRET]\n"
            "                      [--json-log] [--once] [--hostname NAME] [--write-cert FILE]\n"
            "                      [--timeout SECS] [--max-size BYTES] [--legacy-hello refuse|handoff]\n"
            "                      [--memory FILE] [--ticket-keys FILE] [-v]\n"
            "\n"
            "  --proto       smtp (default) and lmtp deliver into --maildir; imap and pop3 serve it;\n"
            "                nntp serves --spool, sieve (ManageSieve) --scripts\n"
            "  --implicit    TLS from the first byte (RFC 8314: SMTP submission, IMAPS, POP3S, NNTPS)\n"
            "  --listen      address to listen on (default 127.0.0.1 and the protocol's port plus\n"
            "                1000: 2525 smtp, 2424 lmtp, 1143 imap, 1110 pop3, 1119 nntp, 4190 sieve;\n"
            "                with --implicit 1465, 1993, 1995, 1563; port 0: any)\n"
            "  --cert/--key  PEM certificate chain and key (default: a generated self-signed one)\n"
            "  --no-tls      never offer STARTTLS (the protocol's refusal if a client sends it anyway)\n"
            "  --require-tls SMTP: refuse mail before STARTTLS (530); the others: refuse logins before\n"
            "                TLS (IMAP LOGINDISABLED, POP3 -ERR, NNTP 483, ManageSieve ENCRYPT-NEEDED)\n"
            "  --maildir     deliver into DIR/new (default: accept and discard); imap/pop3 read\n"
            "                DIR/new and DIR/cur as INBOX (read-only for IMAP; POP3 DELE deletes)\n"
            "  --spool DIR   news spool: DIR/GROUP/NUMBER files (default: one sample group)\n"
            "  --scripts DIR Sieve scripts DIR/NAME.sieve, the active one named in DIR/.active\n"
            "                (default: one sample script)\n"
            "  --user/--pass the one account imap, pop3, nntp and sieve accept (none: every login\n"
            "                is refused; nntp then serves without a login)\n"
            "  --json-log    one JSON line per connection on stdout\n"
            "  --once        exit after the first connection\n"
            "  --hostname    name in the greeting and the generated certificate (default: host name)\n"
            "  --write-cert  write the generated certificate's PEM to FILE (a client's --cafile)\n"
            "  --timeout     idle timeout in seconds (default 300)\n"
            "  --max-size    largest message in bytes (default 10485760)\n"
            "  --legacy-hello  SSLv2-compatible, SSL 3.0, TLS 1.0/1.1 hellos (after STARTTLS,\n"
            "                or first on an --implicit port):\n"
            "                refuse (default: the right alert, one log line) or handoff (to the\n"
            "                system OpenSSL, which completes the session; needs --cert/--key;\n"
            "                smtp and lmtp only)\n"
            "  --memory FILE clients whose hello could not be served are not offered STARTTLS\n"
            "                for a day, so their plaintext retry gets through (not with\n"
            "                --require-tls); kept in FILE\n"
            "  --ticket-keys FILE  share TLS session tickets with other servers: FILE holds hex\n"
            "                keys, one a line, the current first, then the previous (mode 0600;\n"
            "                make one with: openssl rand -hex 32). Without it, only this\n"
            "                server's own children resume each other's sessions\n",
            prog);
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

static void json_log(struct conn *c, enum end_reason why)
{
    const mailtls_report *rep = mailtls_session_report(c->s);
    uint32_t outcome = rep ? mailtls_report_outcome(rep) : MAILTLS_OUTCOME_PENDING;
    struct sbuf j = {0};
    static const char *const proto_names[] = {"smtp", "lmtp", "imap", "pop3", "nntp", "sieve"};
    sb_puts(&j, "{\"peer\":");
    sb_json_str(&j, c->peer);
    sb_puts(&j, ",\"proto\":");
    sb_json_str(&j, opt.proto < 6 ? proto_names[opt.proto] : NULL);
    sb_printf(&j, ",\"implicit\":%s,\"user\":", opt.implicit ? "true" : "false");
    sb_json_str(&j, c->user[0] ? c->user : NULL);
    sb_puts(&j, ",\"tls_version\":");
    sb_json_str(&j, c->lver[0] ? c->lver : rep ? mailtls_report_tls_version(rep) : NULL);
    sb_puts(&j, ",\"cipher\":");
    sb_json_str(&j, c->lcipher[0] ? c->lcipher : rep ? mailtls_report_cipher(rep) : NULL);
    uint32_t hello = rep ? mailtls_report_hello(rep) : MAILTLS_HELLO_NONE;
    int32_t action = rep ? mailtls_report_hello_action(rep) : -1;
    static const char *const action_names[] = {"serve", "handoff", "refuse"};
    sb_puts(&j, ",\"hello\":");
    sb_json_str(&j, hello == MAILTLS_HELLO_NONE ? NULL : mailtls_hello_name(hello));
    sb_puts(&j, ",\"hello_action\":");
    sb_json_str(&j, action >= 0 && action <= 2 ? action_names[action] : NULL);
    sb_puts(&j, ",\"group\":");
    sb_json_str(&j, rep ? mailtls_report_group(rep) : NULL);
    sb_puts(&j, ",\"outcome\":");
    /* No STARTTLS (or a 454) leaves the report pending: the session was plaintext. */
    sb_json_str(&j, outcome == MAILTLS_OUTCOME_PENDING ? "plaintext" : mailtls_outcome_name(outcome));
    sb_puts(&j, ",\"reason\":");
    sb_json_str(&j, outcome == MAILTLS_OUTCOME_PENDING ? NULL : mailtls_result_name(mailtls_report_reason(rep)));
    sb_printf(&j, ",\"discarded_after_starttls\":%llu,\"messages\":%u,\"end\":",
              (unsigned long long)((rep ? mailtls_report_discarded_bytes(rep) : 0) + c->discarded), c->messages);
    sb_json_str(&j, end_names[why]);
    sb_puts(&j, ",\"error\":");
    sb_json_str(&j, c->err[0] ? c->err : NULL);
    sb_puts(&j, "}\n");
    if (j.p) {
        /* One write: lines from concurrent children never interleave. */
        if (write_all(STDOUT_FILENO, j.p, j.len) < 0)
            logmsg(c->peer, "json log: %s", strerror(errno));
    }
    sb_free(&j);
}

/* The protocol's dialogue, once the greeting is due. */
static void run_dialogue(struct conn *c, enum end_reason *why)
{
    switch (opt.proto) {
    case MAILTLS_PROTO_SMTP:
    case MAILTLS_PROTO_LMTP: serve_smtp(c, why); break;
    case MAILTLS_PROTO_IMAP: serve_imap(c, why); break;
    case MAILTLS_PROTO_POP3: serve_pop3(c, why); break;
    case MAILTLS_PROTO_NNTP: serve_nntp(c, why); break;
    default: serve_sieve(c, why); break;
    }
}

/* The end of a connection: the last replies, close_notify, the log lines, the frees. */
static void close_connection(struct conn *c, enum end_reason why)
{
    flush(c);
    if (c->dead && why != END_TLS_FAILED)
        why = END_ERROR;

    if (c->legacy) {
        if (!c->dead)
            flush(c);
        legacy_close(c->legacy); /* close_notify */
        c->legacy = NULL;
    } else if (c->tls && !c->dead && why != END_TLS_FAILED) {
        mailtls_session_close(c->s); /* close_notify */
    }
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    {
        const mailtls_report *rep = mailtls_session_report(c->s);
        const char *ver = c->lver[0] ? c->lver : rep && c->tls ? mailtls_report_tls_version(rep) : NULL;
        logmsg(c->peer, "disconnected (%s): %s, %u message(s)%s%s", end_names[why], ver ? ver : "plaintext",
               c->messages, c->err[0] ? ", " : "", c->err);
    }
    if (opt.json_log)
        json_log(c, why);
    sb_free(&c->out);
    mailtls_session_free(c->s);
    free(c);
}

/* One connection, in the child: the session, the dialogue, the end. */
static void serve(int fd, const char *peer)
{
    struct conn *c = conn_new(fd, peer);
    if (!c) {
        close(fd);
        return;
    }

    uint32_t rc = mailtls_server_new(cfg, opt.proto, peer, &c->s);
    if (rc == MAILTLS_RESULT_OK)
        rc = mailtls_session_set_fd(c->s, fd);
    if (rc != MAILTLS_RESULT_OK) {
        logmsg(peer, "mailtls_server_new: %s [%s]", mailtls_result_str(rc), mailtls_result_name(rc));
        static const char busy[] = "421 4.3.0 Error: cannot start a session\r\n";
        (void)!write(fd, busy, sizeof busy - 1);
        mailtls_session_free(c->s);
        close(fd);
        free(c);
        return;
    }
    logmsg(peer, "connected");
    enum end_reason why = END_EOF;
    if (!opt.implicit || start_implicit(c, &why) > 0)
        run_dialogue(c, &why);
    close_connection(c, why);
}

/* ---- startup ---- */

static int mkdir_p(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int make_maildir(const char *dir)
{
    static const char *const sub[] = {"", "/tmp", "/new", "/cur"};
    for (size_t i = 0; i < 4; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s%s", dir, sub[i]);
        if (mkdir_p(p) < 0) {
            fprintf(stderr, "%s: %s: %s\n", prog, p, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static volatile sig_atomic_t got_chld;
static void on_sigchld(int sig)
{
    (void)sig;
    got_chld = 1;
}

static void reap(void)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (WIFSIGNALED(st))
            fprintf(stderr, "%s: child %d killed by signal %d\n", prog, (int)pid, WTERMSIG(st));
    }
}

static void format_addr(const struct sockaddr *sa, socklen_t sl, char *out, size_t cap)
{
    char h[NI_MAXHOST] = "?", s[NI_MAXSERV] = "?";
    getnameinfo(sa, sl, h, sizeof h, s, sizeof s, NI_NUMERICHOST | NI_NUMERICSERV);
    if (sa->sa_family == AF_INET6)
        snprintf(out, cap, "[%s]:%s", h, s);
    else
        snprintf(out, cap, "%s:%s", h, s);
}

static mailtls_config_builder *builder;
static void config_fail(const char *what, uint32_t rc)
{
    char detail[512] = "";
    mailtls_config_builder_last_error(builder, detail, sizeof detail);
    fprintf(stderr, "%s: %s: %s [%s]%s%s\n", prog, what, mailtls_result_str(rc), mailtls_result_name(rc),
            *detail ? ": " : "", detail);
    exit(EX_CONFIG);
}

/* ---- the command line ---- */

enum {
    O_PROTO = 256, O_LISTEN, O_CERT, O_KEY, O_NOTLS, O_REQTLS, O_MAILDIR, O_JSONLOG, O_ONCE,
    O_HOSTNAME, O_WRITECERT, O_TIMEOUT, O_MAXSIZE, O_LEGACY, O_MEMORY, O_IMPLICIT, O_SPOOL, O_SCRIPTS, O_USER,
    O_PASS, O_TICKET_KEYS
};
static const struct option longopts[] = {
    {"proto", required_argument, NULL, O_PROTO},
    {"listen", required_argument, NULL, O_LISTEN},
    {"cert", required_argument, NULL, O_CERT},
    {"key", required_argument, NULL, O_KEY},
    {"no-tls", no_argument, NULL, O_NOTLS},
    {"require-tls", no_argument, NULL, O_REQTLS},
    {"maildir", required_argument, NULL, O_MAILDIR},
    {"json-log", no_argument, NULL, O_JSONLOG},
    {"once", no_argument, NULL, O_ONCE},
    {"hostname", required_argument, NULL, O_HOSTNAME},
    {"write-cert", required_argument, NULL, O_WRITECERT},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"max-size", required_argument, NULL, O_MAXSIZE},
    {"legacy-hello", required_argument, NULL, O_LEGACY},
    {"memory", required_argument, NULL, O_MEMORY},
    {"ticket-keys", required_argument, NULL, O_TICKET_KEYS},
    {"implicit", no_argument, NULL, O_IMPLICIT},
    {"spool", required_argument, NULL, O_SPOOL},
    {"scripts", required_argument, NULL, O_SCRIPTS},
    {"user", required_argument, NULL, O_USER},
    {"pass", required_argument, NULL, O_PASS},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static uint32_t parse_proto(const char *name)
{
    if (strcmp(name, "smtp") == 0)
        return MAILTLS_PROTO_SMTP;
    if (strcmp(name, "lmtp") == 0)
        return MAILTLS_PROTO_LMTP;
    if (strcmp(name, "imap") == 0)
        return MAILTLS_PROTO_IMAP;
    if (strcmp(name, "pop3") == 0)
        return MAILTLS_PROTO_POP3;
    if (strcmp(name, "nntp") == 0)
        return MAILTLS_PROTO_NNTP;
    if (strcmp(name, "sieve") == 0)
        return MAILTLS_PROTO_SIEVE;
    die_usage("--proto: smtp, lmtp, imap, pop3, nntp or sieve, not \"%s\"", name);
}

/* Reads the command line into opt: -1 to go on, or main's exit status (0 after
 * --help). A bad value ends the program through die_usage. */
static int parse_options(int argc, char **argv)
{
    int o;
    while ((o = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        switch (o) {
        case O_PROTO: opt.proto = parse_proto(optarg); break;
        case O_IMPLICIT: opt.implicit = true; break;
        case O_SPOOL: opt.spool = optarg; break;
        case O_SCRIPTS: opt.scripts = optarg; break;
        case O_USER: opt.user = optarg; break;
        case O_PASS: opt.pass = optarg; break;
        case O_LISTEN: opt.listen = optarg; break;
        case O_CERT: opt.cert = optarg; break;
        case O_KEY: opt.key = optarg; break;
        case O_NOTLS: opt.no_tls = true; break;
        case O_REQTLS: opt.require_tls = true; break;
        case O_MAILDIR: opt.maildir = optarg; break;
        case O_JSONLOG: opt.json_log = true; break;
        case O_ONCE: opt.once = true; break;
        case O_HOSTNAME: opt.hostname = optarg; break;
        case O_WRITECERT: opt.write_cert = optarg; break;
        case O_LEGACY:
            if (strcmp(optarg, "refuse") == 0)
                opt.legacy_handoff = false;
            else if (strcmp(optarg, "handoff") == 0)
                opt.legacy_handoff = true;
            else
                die_usage("--legacy-hello: refuse or handoff, not \"%s\"", optarg);
            break;
        case O_MEMORY: opt.memory = optarg; break;
        case O_TICKET_KEYS: opt.ticket_keys = optarg; break;
        case O_TIMEOUT:
        case O_MAXSIZE: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (o == O_TIMEOUT) {
                if (errno || *end || end == optarg || v == 0 || v > 86400)
                    die_usage("--timeout: seconds, 1..86400, not \"%s\"", optarg);
                opt.timeout = (unsigned)v;
            } else {
                if (errno || *end || end == optarg || v == 0 || v > (1ull << 31))
                    die_usage("--max-size: bytes, 1..2147483648, not \"%s\"", optarg);
                opt.max_size = (size_t)v;
            }
            break;
        }
        case 'v': opt.verbose = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    return -1;
}

static bool mailbox_proto(void)
{
    return opt.proto != MAILTLS_PROTO_SMTP && opt.proto != MAILTLS_PROTO_LMTP;
}

/* The options that exclude or need each other, and the host name. */
static void check_options(int argc, char **argv)
{
    if (optind != argc)
        die_usage("unexpected argument \"%s\"", argv[optind]);
    if (!opt.cert != !opt.key)
        die_usage("--cert and --key go together");
    if (opt.no_tls && (opt.cert || opt.require_tls || opt.write_cert))
        die_usage("--no-tls excludes --cert, --require-tls and --write-cert");
    if (opt.write_cert && opt.cert)
        die_usage("--write-cert is for the generated certificate (without --cert)");
    if (opt.legacy_handoff && !opt.cert)
        die_usage("--legacy-hello handoff needs --cert and --key (OpenSSL loads them too)");
    bool mailbox = mailbox_proto();
    if (opt.legacy_handoff && mailbox)
        die_usage("--legacy-hello handoff is for --proto smtp and lmtp in this example");
    if (opt.implicit && opt.no_tls)
        die_usage("--implicit and --no-tls exclude each other");
    if (!opt.user != !opt.pass)
        die_usage("--user and --pass go together");
    if (opt.user && (!printable_token(opt.user, 64) || strlen(opt.pass) > 256 || !*opt.pass))
        die_usage("--user: printable, no spaces, at most 64 bytes; --pass: 1 to 256 bytes");
    if ((opt.user || opt.spool || opt.scripts) && !mailbox)
        die_usage("--user, --pass, --spool and --scripts are for --proto imap, pop3, nntp and sieve");
    if (opt.spool && opt.proto != MAILTLS_PROTO_NNTP)
        die_usage("--spool is for --proto nntp");
    if (opt.scripts && opt.proto != MAILTLS_PROTO_SIEVE)
        die_usage("--scripts is for --proto sieve");
    if (opt.maildir && (opt.proto == MAILTLS_PROTO_NNTP || opt.proto == MAILTLS_PROTO_SIEVE))
        die_usage("--maildir is for --proto smtp, lmtp, imap and pop3");

    if (opt.hostname) {
        if (!printable_token(opt.hostname, 253))
            die_usage("--hostname: not a host name: \"%s\"", opt.hostname);
        snprintf(hostname, sizeof hostname, "%s", opt.hostname);
    } else if (gethostname(hostname, sizeof hostname - 1) < 0 || !printable_token(hostname, 253)) {
        snprintf(hostname, sizeof hostname, "localhost");
    }
}

/* --legacy-hello handoff: old hellos go to OpenSSL. 0, or EX_CONFIG. */
static int configure_handoff(void)
{
    uint32_t rc;
    char err[512];
    static const uint32_t old[] = {MAILTLS_HELLO_SSLV2_COMPAT, MAILTLS_HELLO_SSL3, MAILTLS_HELLO_TLS10,
                                   MAILTLS_HELLO_TLS11};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++)
        if ((rc = mailtls_config_builder_set_hello_action(builder, old[i], MAILTLS_HELLO_ACTION_HANDOFF)))
            config_fail("set_hello_action", rc);
    handoff_engine = legacy_ctx_new(opt.cert, opt.key, err, sizeof err);
    if (!handoff_engine) {
        fprintf(stderr, "%s: --legacy-hello handoff: %s\n", prog, err);
        return EX_CONFIG;
    }
    fprintf(stderr, "%s: SSLv2-compatible, SSL 3.0, TLS 1.0 and 1.1 hellos go to %s\n", prog,
            legacy_engine_name());
    return 0;
}

/* --memory: the server-side memory of clients whose hello could not be served. */
static void configure_memory(void)
{
    uint32_t rc;
    const mailtls_memory *mem = NULL;
    if ((rc = mailtls_memory_open_file(opt.memory, &mem)))
        config_fail("--memory", rc);
    char problems[1024] = "";
    if (mailtls_memory_problems(mem, problems, sizeof problems, NULL) == MAILTLS_RESULT_OK && *problems)
        fprintf(stderr, "%s: --memory %s: %s\n", prog, opt.memory, problems);
    rc = mailtls_config_builder_set_server_memory(builder, mem, 0);
    mailtls_memory_free(mem); /* the config holds its own reference */
    if (rc)
        config_fail("set_server_memory", rc);
}

/* The certificate: --cert/--key, or a generated one (--write-cert), or none with
 * --no-tls. 0, or EX_CANTCREAT. */
static int configure_certificate(void)
{
    uint32_t rc;
    if (opt.cert) {
        if ((rc = mailtls_config_builder_set_certificate_files(builder, opt.cert, opt.key)))
            config_fail("--cert/--key", rc);
        fprintf(stderr, "%s: certificate from %s, key from %s\n", prog, opt.cert, opt.key);
    } else if (!opt.no_tls) {
        static char pem[16384];
        uintptr_t n = 0;
        if ((rc = mailtls_config_builder_generate_self_signed(builder, hostname, pem, sizeof pem, &n)))
            config_fail("generate_self_signed", rc);
        char sha[65] = "?";
        pem_cert_sha256_hex(pem, sha);
        fprintf(stderr, "%s: no --cert: generated a self-signed certificate for %s, sha256 %s\n", prog, hostname,
                sha);
        if (opt.write_cert) {
            FILE *f = fopen(opt.write_cert, "w");
            if (!f || fwrite(pem, 1, n, f) != n || fclose(f) != 0) {
                fprintf(stderr, "%s: --write-cert %s: %s\n", prog, opt.write_cert, strerror(errno));
                return EX_CANTCREAT;
            }
            fprintf(stderr, "%s: certificate written to %s\n", prog, opt.write_cert);
        }
    } else {
        fprintf(stderr, "%s: --no-tls: STARTTLS is not offered\n", prog);
    }
    return 0;
}

/* The config, built once and shared by every connection. 0, or main's exit status. */
static int build_config(void)
{
    uint32_t rc = mailtls_config_builder_new(MAILTLS_ROLE_SERVER, &builder);
    if (rc != MAILTLS_RESULT_OK)
        config_fail("mailtls_config_builder_new", rc);
    if ((rc = mailtls_config_builder_set_log(builder, ex_log_cb, (void *)prog,
                                             opt.verbose ? MAILTLS_LOG_LEVEL_DEBUG : MAILTLS_LOG_LEVEL_INFO)))
        config_fail("set_log", rc);
    if ((rc = mailtls_config_builder_set_timeout_ms(builder, opt.timeout * 1000u)))
        config_fail("set_timeout_ms", rc);
    if (opt.require_tls && (rc = mailtls_config_builder_set_require_tls(builder, true)))
        config_fail("set_require_tls", rc);
    if (opt.legacy_handoff && configure_handoff() != 0)
        return EX_CONFIG;
    if (opt.memory)
        configure_memory();
    if (opt.ticket_keys && (rc = mailtls_config_builder_set_ticket_key_file(builder, opt.ticket_keys)))
        config_fail("--ticket-keys", rc);
    if (configure_certificate() != 0)
        return EX_CANTCREAT;
    if ((rc = mailtls_config_builder_build(builder, &cfg)))
        config_fail("build", rc);
    mailtls_config_builder_free(builder);
    builder = NULL;
    if (!opt.no_tls && !mailtls_config_server_tls_ready(cfg))
        fprintf(stderr, "%s: warning: no usable certificate, STARTTLS will not be offered\n", prog);
    return 0;
}

/* ---- listening ---- */

/* A listening socket on --listen: 0 and *out, or main's exit status. */
static int open_listener(const char *lhost, uint16_t lport, int *out)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)lport);
    int g = getaddrinfo(lhost, portstr, &hints, &res);
    if (g != 0) {
        fprintf(stderr, "%s: --listen %s: %s\n", prog, opt.listen, gai_strerror(g));
        return EX_USAGE;
    }
    int lfd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, res->ai_addr, res->ai_addrlen) < 0 || listen(lfd, 64) < 0) {
        fprintf(stderr, "%s: listen on %s: %s\n", prog, opt.listen, strerror(errno));
        freeaddrinfo(res);
        return EX_UNAVAILABLE;
    }
    freeaddrinfo(res);
    *out = lfd;
    return 0;
}

/* The first stdout line with the real address, and what is served on stderr. */
static void announce(int lfd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(lfd, (struct sockaddr *)&ss, &sl);
    char laddr[NI_MAXHOST + 16];
    format_addr((struct sockaddr *)&ss, sl, laddr, sizeof laddr);
    printf("{\"listening\":\"%s\"}\n", laddr);
    fflush(stdout);
    static const char *const proto_label[] = {"SMTP", "LMTP", "IMAP", "POP3", "NNTP", "ManageSieve"};
    const char *store_note = "";
    bool mailbox = mailbox_proto();
    if (!mailbox && !opt.maildir)
        store_note = " (no --maildir: mail is discarded)";
    else if ((opt.proto == MAILTLS_PROTO_IMAP || opt.proto == MAILTLS_PROTO_POP3) && !opt.maildir)
        store_note = " (no --maildir: the mailbox is empty)";
    else if (opt.proto == MAILTLS_PROTO_NNTP && !opt.spool)
        store_note = " (no --spool: one sample group)";
    else if (opt.proto == MAILTLS_PROTO_SIEVE && !opt.scripts)
        store_note = " (no --scripts: one sample script)";
    fprintf(stderr, "%s: %s server %s listening on %s%s%s%s%s\n", prog, proto_label[opt.proto], hostname, laddr,
            opt.implicit ? " (implicit TLS)" : "", opt.require_tls ? " (TLS required)" : "", store_note,
            mailbox && !opt.user ? " (no --user: every login is refused)" : "");
}

/* One child per connection until --once is done or accept fails: main's exit status. */
static int accept_loop(int lfd)
{
    int status = 0;
    for (;;) {
        if (got_chld) {
            got_chld = 0;
            reap();
        }
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        int cfd = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                fprintf(stderr, "%s: accept: %s\n", prog, strerror(errno));
                sleep(1);
                continue;
            }
            fprintf(stderr, "%s: accept: %s\n", prog, strerror(errno));
            status = EX_OSERR;
            break;
        }
        char peername[NI_MAXHOST + 16];
        format_addr((struct sockaddr *)&peer, pl, peername, sizeof peername);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            signal(SIGCHLD, SIG_DFL);
            serve(cfd, peername);
            mailtls_config_free(cfg);
            _exit(0);
        }
        if (pid < 0) {
            fprintf(stderr, "%s: fork: %s\n", prog, strerror(errno));
            static const char busy[] = "421 4.3.2 Error: try again later\r\n";
            (void)!write(cfd, busy, sizeof busy - 1);
        }
        close(cfd);
        if (opt.once) {
            if (pid > 0) {
                int st;
                while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                    ;
                if (WIFSIGNALED(st)) {
                    fprintf(stderr, "%s: child killed by signal %d\n", prog, WTERMSIG(st));
                    status = EX_SOFTWARE;
                }
            }
            break;
        }
    }
    return status;
}

int main(int argc, char **argv)
{
    int status = parse_options(argc, argv);
    if (status >= 0)
        return status;
    check_options(argc, argv);

    char lhost[256];
    uint16_t lport;
    char err[512];
    /* The standard ports plus 1000 (1143 for IMAP, 1993 for IMAPS ...): no root needed. */
    static const uint16_t ports[6][2] = {{2525, 1465}, {2424, 2424}, {1143, 1993}, {1110, 1995}, {1119, 1563},
                                         {4190, 4190}};
    uint16_t default_port = ports[opt.proto][opt.implicit ? 1 : 0];
    char default_listen[32];
    snprintf(default_listen, sizeof default_listen, "127.0.0.1:%u", (unsigned)default_port);
    if (!opt.listen)
        opt.listen = default_listen;
    if (split_hostport(opt.listen, lhost, sizeof lhost, default_port, &lport, err, sizeof err) < 0)
        die_usage("--listen: %s", err);
    if (opt.maildir && make_maildir(opt.maildir) < 0)
        return EX_CANTCREAT;

    signal(SIGPIPE, SIG_IGN);

    if ((status = build_config()) != 0)
        return status;
    int lfd;
    if ((status = open_listener(lhost, lport, &lfd)) != 0)
        return status;
    announce(lfd);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_NOCLDSTOP; /* no SA_RESTART: accept() wakes up to reap */
    sigaction(SIGCHLD, &sa, NULL);

    status = accept_loop(lfd);
    close(lfd);
    mailtls_config_free(cfg);
    return status;
}
