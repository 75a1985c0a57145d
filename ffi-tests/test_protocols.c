/* IMAP, POP3, NNTP and ManageSieve (and SMTP/LMTP alongside) through the header:
 * client to server over socketpairs and loopback TCP, whole and one-byte/EAGAIN
 * transports, STARTTLS and implicit TLS; every refusal; reply injection (whole and
 * partial lines, IMAP untagged replies before and after the tagged OK); command
 * injection after STARTTLS on the server; PREAUTH, ALERT, a second STARTTLS,
 * STARTTLS after login, require-TLS replies; plaintext on an implicit port; and the
 * recovery ladder behind each protocol's preamble. */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const uint32_t PROTOS[] = {MAILTLS_PROTO_SMTP, MAILTLS_PROTO_LMTP, MAILTLS_PROTO_IMAP,
                                  MAILTLS_PROTO_POP3, MAILTLS_PROTO_NNTP, MAILTLS_PROTO_SIEVE};
static const char *const NAMES[] = {"smtp", "lmtp", "imap", "pop3", "nntp", "sieve"};
#define NPROTOS 6

/* ---- a server for every protocol, on the library's server API (in a child) ---- */

struct proto_opts {
    const mailtls_config *cfg;
    uint32_t proto;
    int implicit;
};

struct psrv {
    mailtls_session *s;
    int fd, tls;
    struct shared *sh;
    uint32_t proto;
    size_t n;
    char b[16384];
};

static void ps_send(struct psrv *p, const char *text) {
    if (session_write_all(p->s, text, strlen(text)) != MAILTLS_RESULT_OK)
        child_fail(p->sh, "server write failed: %s", mailtls_session_last_error(p->s));
}

/* One line into out (CRLF kept); 0 at EOF or error. */
static int ps_line(struct psrv *p, char *out, size_t cap) {
    for (;;) {
        char *nl = memchr(p->b, '\n', p->n);
        if (nl) {
            size_t k = (size_t)(nl - p->b) + 1;
            if (k >= cap)
                child_fail(p->sh, "line too long");
            memcpy(out, p->b, k);
            out[k] = 0;
            memmove(p->b, p->b + k, p->n - k);
            p->n -= k;
            return 1;
        }
        if (p->n == sizeof p->b)
            child_fail(p->sh, "no line end");
        uintptr_t got = 0;
        if (p->tls) {
            mailtls_result rc;
            int tries = 0;
            while ((rc = mailtls_session_read(p->s, (uint8_t *)p->b + p->n, sizeof p->b - p->n, &got)) ==
                       MAILTLS_RESULT_WOULD_BLOCK &&
                   ++tries < 100000)
                ;
            if (rc != MAILTLS_RESULT_OK)
                return 0;
        } else {
            ssize_t r = read(p->fd, p->b + p->n, sizeof p->b - p->n);
            if (r <= 0)
                return 0;
            got = (uintptr_t)r;
        }
        p->n += got;
    }
}

static const char *greeting(uint32_t proto, int offer, int tls) {
    static char buf[512];
    switch (proto) {
    case MAILTLS_PROTO_IMAP: return "* OK test IMAP ready\r\n";
    case MAILTLS_PROTO_POP3: return "+OK test POP3 ready\r\n";
    case MAILTLS_PROTO_NNTP: return "200 test news ready\r\n";
    case MAILTLS_PROTO_SIEVE:
        snprintf(buf, sizeof buf, "\"IMPLEMENTATION\" \"test\"\r\n%s%s\"VERSION\" \"1.0\"\r\nOK\r\n",
                 tls ? "\"AFTERTLS\"\r\n\"SASL\" \"PLAIN\"\r\n" : "\"PLAINONLY\"\r\n", offer ? "\"STARTTLS\"\r\n" : "");
        return buf;
    default: return "220 test ESMTP\r\n";
    }
}

/* The capability reply; PLAINONLY marks what is only said before TLS, AFTERTLS what only after. */
static const char *capabilities(uint32_t proto, const char *tag, int offer, int tls) {
    static char buf[512];
    const char *extra = tls ? "AFTERTLS" : "PLAINONLY";
    switch (proto) {
    case MAILTLS_PROTO_IMAP:
        snprintf(buf, sizeof buf, "* CAPABILITY IMAP4rev1%s %s\r\n%s OK done\r\n", offer ? " STARTTLS" : "", extra, tag);
        break;
    case MAILTLS_PROTO_POP3: snprintf(buf, sizeof buf, "+OK\r\nTOP\r\n%s%s\r\n.\r\n", offer ? "STLS\r\n" : "", extra); break;
    case MAILTLS_PROTO_NNTP:
        snprintf(buf, sizeof buf, "101 caps\r\nVERSION 2\r\nREADER\r\n%s%s\r\n.\r\n", offer ? "STARTTLS\r\n" : "", extra);
        break;
    case MAILTLS_PROTO_SIEVE: return greeting(proto, offer, tls);
    default: snprintf(buf, sizeof buf, "250-test\r\n%s250 %s\r\n", offer ? "250-STARTTLS\r\n" : "", extra);
    }
    return buf;
}

static void proto_server(int fd, void *arg, struct shared *sh) {
    const struct proto_opts *o = arg;
    static struct psrv p;
    memset(&p, 0, sizeof p);
    p.fd = fd;
    p.sh = sh;
    p.proto = o->proto;
    sh->starttls_rc = UINT32_MAX;
    if (mailtls_server_new(o->cfg, o->proto, "127.0.0.1:1", &p.s) != MAILTLS_RESULT_OK ||
        mailtls_session_set_fd(p.s, fd) != MAILTLS_RESULT_OK)
        child_fail(sh, "server session");
    if (o->implicit) {
        mailtls_result rc = mailtls_server_start_implicit(p.s);
        sh->starttls_rc = rc;
        if (rc != MAILTLS_RESULT_OK) {
            shared_log(sh, "implicit: %s\n", mailtls_result_name(rc));
            mailtls_session_free(p.s);
            return;
        }
        p.tls = 1;
        sh->tls_was_active = 1;
    }
    ps_send(&p, greeting(o->proto, mailtls_server_offer_starttls(p.s), p.tls));
    char line[4096];
    while (ps_line(&p, line, sizeof line)) {
        mailtls_result chk = mailtls_server_check_command(p.s, (const uint8_t *)line, strlen(line));
        if (chk != MAILTLS_RESULT_OK) {
            const char *r = mailtls_server_reply(p.s, chk);
            if (!r)
                child_fail(sh, "no reply for %s", mailtls_result_name(chk));
            shared_log(sh, "R: %s", r);
            if (chk == MAILTLS_RESULT_TLS_ALREADY_ACTIVE)
                sh->second_starttls_rc = chk;
            ps_send(&p, r);
            continue;
        }
        shared_log(sh, "C: %s", line);
        char tag[64] = "", verb[64] = "";
        if (o->proto == MAILTLS_PROTO_IMAP)
            sscanf(line, "%63s %63s", tag, verb);
        else
            sscanf(line, "%63s", verb);
        if (!strcasecmp(verb, "EHLO") || !strcasecmp(verb, "LHLO") || !strcasecmp(verb, "CAPABILITY") ||
            !strcasecmp(verb, "CAPA") || !strcasecmp(verb, "CAPABILITIES")) {
            ps_send(&p, capabilities(o->proto, tag, mailtls_server_offer_starttls(p.s), p.tls));
        } else if (!strcasecmp(verb, "STARTTLS") || !strcasecmp(verb, "STLS")) {
            mailtls_result rc = mailtls_server_starttls(p.s, (const uint8_t *)p.b, p.n);
            p.n = 0; /* never executed */
            sh->starttls_rc = rc;
            shared_log(sh, "STARTTLS: %s\n", mailtls_result_name(rc));
            if (rc == MAILTLS_RESULT_OK) {
                p.tls = 1;
                sh->tls_was_active = 1;
                if (o->proto == MAILTLS_PROTO_SIEVE)
                    ps_send(&p, greeting(o->proto, mailtls_server_offer_starttls(p.s), 1));
            } else if (rc != MAILTLS_RESULT_TLS_UNAVAILABLE && rc != MAILTLS_RESULT_TLS_ALREADY_ACTIVE &&
                       rc != MAILTLS_RESULT_STARTTLS_NOT_ALLOWED) {
                break;
            }
        } else if (!strcasecmp(verb, "LOGIN") || !strcasecmp(verb, "PASS") || !strcasecmp(verb, "AUTHINFO") ||
                   !strcasecmp(verb, "AUTHENTICATE")) {
            sh->mail_executed++; /* a login that ran */
            mailtls_server_note_authenticated(p.s);
            ps_send(&p, o->proto == MAILTLS_PROTO_IMAP ? "a OK logged in\r\n"
                        : o->proto == MAILTLS_PROTO_NNTP ? "281 ok\r\n"
                        : o->proto == MAILTLS_PROTO_SIEVE ? "OK\r\n"
                                                          : "+OK\r\n");
        } else if (!strcasecmp(verb, "USER")) {
            sh->mail_executed++;
            ps_send(&p, "+OK\r\n");
        } else if (!strcasecmp(verb, "ECHO")) {
            ps_send(&p, line);
        } else if (!strcasecmp(verb, "QUIT") || !strcasecmp(verb, "LOGOUT")) {
            ps_send(&p, o->proto == MAILTLS_PROTO_IMAP ? "* BYE\r\n" : o->proto == MAILTLS_PROTO_NNTP ? "205 bye\r\n"
                        : o->proto == MAILTLS_PROTO_POP3 ? "+OK bye\r\n"
                        : o->proto == MAILTLS_PROTO_SIEVE ? "OK \"bye\"\r\n"
                                                          : "221 bye\r\n");
            break;
        } else {
            ps_send(&p, o->proto == MAILTLS_PROTO_IMAP ? "* OK\r\n" : "250 ok\r\n");
        }
    }
    if (p.tls)
        mailtls_session_close(p.s);
    sh->discarded = mailtls_report_discarded_bytes(mailtls_session_report(p.s));
    sh->outcome = mailtls_report_outcome(mailtls_session_report(p.s));
    mailtls_session_free(p.s);
}

static peer_t *server_start(enum transport t, uint32_t proto, const mailtls_config *cfg, int implicit) {
    struct proto_opts *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    defer_call(free, o);
    o->cfg = cfg;
    o->proto = proto;
    o->implicit = implicit;
    return peer_start(t, proto_server, o);
}

/* ---- the client side ---- */

static mailtls_session *client_for(uint32_t proto, uint32_t policy, int fd, struct io_ctx **ctx_out) {
    const mailtls_config *cfg = client_cfg(policy, NULL);
    if (!cfg)
        return NULL;
    mailtls_session *s = NULL;
    if (!CHECK_RC(mailtls_client_new(cfg, proto, "localhost", 143, &s), MAILTLS_RESULT_OK))
        return NULL;
    defer_session(s);
    if (ctx_out) {
        struct io_ctx *ctx = io_new(fd);
        ctx->max_chunk = 1;
        ctx->eagain_alternate = 1;
        *ctx_out = ctx;
        CHECK_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
    } else {
        CHECK_RC(mailtls_session_set_fd(s, fd), MAILTLS_RESULT_OK);
    }
    return s;
}

static const char *quit_cmd(uint32_t proto) {
    return proto == MAILTLS_PROTO_IMAP ? "z LOGOUT\r\n" : proto == MAILTLS_PROTO_SIEVE ? "LOGOUT\r\n" : "QUIT\r\n";
}

static int has_cap(const mailtls_report *r, const char *word) {
    for (size_t i = 0; i < mailtls_report_capability_count(r); i++)
        if (strstr(mailtls_report_capability(r, i), word))
            return 1;
    return 0;
}

static void end_to_end(enum transport t, int one_byte, int implicit) {
    for (int i = 0; i < NPROTOS; i++) {
        const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
        REQUIRE(scfg);
        peer_t *p = server_start(t, PROTOS[i], scfg, implicit);
        REQUIRE(p);
        struct io_ctx *ctx = NULL;
        mailtls_session *s = client_for(PROTOS[i], MAILTLS_POLICY_ENCRYPT, p->fd, one_byte ? &ctx : NULL);
        REQUIRE(s);
        if (implicit)
            CHECK_RC(mailtls_session_set_implicit_tls(s, true), MAILTLS_RESULT_OK);
        int wb = 0;
        mailtls_result rc = negotiate_all(s, ctx, &wb);
        if (!CHECK_RC(rc, MAILTLS_RESULT_OK)) {
            test_fail(__FILE__, __LINE__, "%s: %s", NAMES[i], mailtls_session_last_error(s));
            continue;
        }
        const mailtls_report *r = mailtls_session_report(s);
        CHECK_OUTCOME(r, MAILTLS_OUTCOME_TLS);
        CHECK(mailtls_report_starttls_offered(r) == !implicit);
        if (implicit) /* no plaintext phase happened, so none is timed */
            CHECK(strstr(mailtls_report_json(r), "\"timings_ms\":{\"plaintext\":0,") != NULL);
        if (!has_cap(r, "AFTERTLS") || has_cap(r, "PLAINONLY") || has_cap(r, "STARTTLS") || has_cap(r, "STLS"))
            test_fail(__FILE__, __LINE__, "%s: capabilities after TLS wrong (%zu)", NAMES[i],
                      mailtls_report_capability_count(r));
        if (one_byte)
            CHECK(wb > 0);
        struct linebuf lb = {0};
        char reply[512];
        const char *echo = PROTOS[i] == MAILTLS_PROTO_IMAP ? "e ECHO hello there\r\n" : "ECHO hello there\r\n";
        CHECK_RC(session_command(s, &lb, echo, reply, sizeof reply), MAILTLS_RESULT_OK);
        CHECK_STREQ(reply, echo);
        CHECK_RC(session_command(s, &lb, quit_cmd(PROTOS[i]), reply, sizeof reply), MAILTLS_RESULT_OK);
        CHECK_PEER_OK(p);
        CHECK(p->sh->tls_was_active);
        CHECK(p->sh->discarded == 0);
    }
}

TEST(every_protocol_starttls_over_a_socketpair) {
    end_to_end(VIA_SOCKETPAIR, 0, 0);
}

TEST(every_protocol_starttls_over_loopback_tcp_with_one_byte_reads_and_eagain) {
    end_to_end(VIA_TCP, 1, 0);
}

TEST(every_protocol_implicit_tls_over_loopback_tcp) {
    end_to_end(VIA_TCP, 0, 1);
}

TEST(every_protocol_implicit_tls_with_one_byte_reads_and_eagain) {
    end_to_end(VIA_SOCKETPAIR, 1, 1);
}

/* ---- refusals from scripted servers ---- */

struct refusal {
    uint32_t proto;
    const char *opening; /* greeting + capabilities, then the STARTTLS command is expected */
    const char *expect;  /* the STARTTLS command's prefix */
    const char *reply;
    uint32_t code;       /* what encrypt gives */
    uint32_t outcome;    /* under encrypt */
    int may_plaintext;   /* whether may goes on in plaintext */
};

#define IMAP_OPEN "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"
#define POP3_OPEN "+OK hi\r\n"
#define NNTP_OPEN "200 hi\r\n"
#define SIEVE_OPEN "\"IMPLEMENTATION\" \"x\"\r\n\"STARTTLS\"\r\nOK\r\n"

static const struct refusal refusals[] = {
    {MAILTLS_PROTO_IMAP, IMAP_OPEN, "MT1 STARTTLS", "MT1 NO [UNAVAILABLE] later\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY, MAILTLS_OUTCOME_DEFER, 1},
    {MAILTLS_PROTO_IMAP, IMAP_OPEN, "MT1 STARTTLS", "MT1 BAD what\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_PERMANENT, MAILTLS_OUTCOME_FAIL, 1},
    {MAILTLS_PROTO_IMAP, IMAP_OPEN, "MT1 STARTTLS", "X9 OK go\r\n", MAILTLS_RESULT_STARTTLS_BAD_REPLY, MAILTLS_OUTCOME_DEFER, 0},
    {MAILTLS_PROTO_IMAP, IMAP_OPEN, "MT1 STARTTLS", "+ go ahead\r\n", MAILTLS_RESULT_STARTTLS_BAD_REPLY, MAILTLS_OUTCOME_DEFER, 0},
    {MAILTLS_PROTO_IMAP, IMAP_OPEN, "MT1 STARTTLS", "* OK untagged only\r\n* BYE later\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY, MAILTLS_OUTCOME_DEFER, 1},
    {MAILTLS_PROTO_POP3, POP3_OPEN, "STLS", "-ERR [SYS/TEMP] later\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY, MAILTLS_OUTCOME_DEFER, 1},
    {MAILTLS_PROTO_POP3, POP3_OPEN, "STLS", "-ERR [SYS/PERM] never\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_PERMANENT, MAILTLS_OUTCOME_FAIL, 1},
    {MAILTLS_PROTO_POP3, POP3_OPEN, "STLS", "-ERR no\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY, MAILTLS_OUTCOME_DEFER, 1},
    {MAILTLS_PROTO_NNTP, NNTP_OPEN, "STARTTLS", "580 can not\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY, MAILTLS_OUTCOME_DEFER, 1},
    {MAILTLS_PROTO_NNTP, NNTP_OPEN, "STARTTLS", "502 not permitted\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_PERMANENT, MAILTLS_OUTCOME_FAIL, 1},
    {MAILTLS_PROTO_SIEVE, SIEVE_OPEN, "STARTTLS", "NO (TRYLATER) \"later\"\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY, MAILTLS_OUTCOME_DEFER, 1},
    {MAILTLS_PROTO_SIEVE, SIEVE_OPEN, "STARTTLS", "NO \"never\"\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_PERMANENT, MAILTLS_OUTCOME_FAIL, 1},
    {MAILTLS_PROTO_SIEVE, SIEVE_OPEN, "STARTTLS", "BYE \"bye\"\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY, MAILTLS_OUTCOME_DEFER, 1},
};

/* The capability exchange a scripted server needs before STARTTLS. */
static void opening_steps(uint32_t proto, const char *opening, struct step *st, int *k) {
    st[(*k)++] = (struct step)SEND(opening);
    if (proto == MAILTLS_PROTO_POP3) {
        st[(*k)++] = (struct step)EXPECT("CAPA");
        st[(*k)++] = (struct step)SEND("+OK\r\nSTLS\r\nUSER\r\n.\r\n");
    } else if (proto == MAILTLS_PROTO_NNTP) {
        st[(*k)++] = (struct step)EXPECT("CAPABILITIES");
        st[(*k)++] = (struct step)SEND("101 caps\r\nVERSION 2\r\nSTARTTLS\r\n.\r\n");
    }
}

TEST(every_refusal_of_every_protocol_under_may_and_encrypt) {
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        const struct refusal *c = &refusals[i];
        for (int may = 0; may < 2; may++) {
            struct step st[12];
            int k = 0;
            opening_steps(c->proto, c->opening, st, &k);
            st[k++] = (struct step)EXPECT(c->expect);
            st[k++] = (struct step)SEND(c->reply);
            st[k++] = (struct step)EXPECT_EOF;
            st[k++] = (struct step)END;
            peer_t *p = script_start(VIA_SOCKETPAIR, st);
            REQUIRE(p);
            mailtls_session *s = client_for(c->proto, may ? MAILTLS_POLICY_MAY : MAILTLS_POLICY_ENCRYPT, p->fd, NULL);
            REQUIRE(s);
            mailtls_result rc = mailtls_client_negotiate(s);
            const mailtls_report *r = mailtls_session_report(s);
            if (may && c->may_plaintext) {
                if (rc != MAILTLS_RESULT_OK || mailtls_report_outcome(r) != MAILTLS_OUTCOME_PLAINTEXT)
                    test_fail(__FILE__, __LINE__, "case %zu (%s) under may: %s, outcome %s", i, c->reply,
                              mailtls_result_name(rc), mailtls_outcome_name(mailtls_report_outcome(r)));
                CHECK_RC(mailtls_report_reason(r), c->code);
            } else {
                if (rc != c->code)
                    test_fail(__FILE__, __LINE__, "case %zu (%s) under %s: %s, expected %s", i, c->reply,
                              may ? "may" : "encrypt", mailtls_result_name(rc), mailtls_result_name(c->code));
                uint32_t want = may ? MAILTLS_OUTCOME_DEFER : c->outcome;
                if (mailtls_report_outcome(r) != want)
                    test_fail(__FILE__, __LINE__, "case %zu: outcome %s, expected %s", i,
                              mailtls_outcome_name(mailtls_report_outcome(r)), mailtls_outcome_name(want));
            }
            peer_finish(p);
            /* Never a TLS byte to a server that did not say go. */
            for (size_t b = 0; b < p->sh->nrecv; b++)
                if (p->sh->recv[b] == 0x16) {
                    test_fail(__FILE__, __LINE__, "case %zu: a ClientHello went out", i);
                    break;
                }
        }
    }
}

/* ---- reply injection ---- */

struct injection {
    uint32_t proto;
    const char *opening, *expect, *go_and_more;
    int injected; /* 1: reply injection expected; 0: the handshake starts */
};

static const struct injection injections[] = {
    {MAILTLS_PROTO_IMAP, IMAP_OPEN, "MT1 STARTTLS", "MT1 OK go\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n", 1},
    {MAILTLS_PROTO_IMAP, IMAP_OPEN, "MT1 STARTTLS", "MT1 OK go\r\n* CAP", 1},
    {MAILTLS_PROTO_IMAP, IMAP_OPEN, "MT1 STARTTLS", "* OK [ALERT] not yet\r\n* CAPABILITY X\r\nMT1 OK go\r\n", 0},
    {MAILTLS_PROTO_POP3, POP3_OPEN, "STLS", "+OK go\r\n+OK 1 message\r\n", 1},
    {MAILTLS_PROTO_POP3, POP3_OPEN, "STLS", "+OK go\r\n+O", 1},
    {MAILTLS_PROTO_NNTP, NNTP_OPEN, "STARTTLS", "382 go\r\n200 again\r\n", 1},
    {MAILTLS_PROTO_NNTP, NNTP_OPEN, "STARTTLS", "382 go\r\n2", 1},
    {MAILTLS_PROTO_SIEVE, SIEVE_OPEN, "STARTTLS", "OK\r\n\"SASL\" \"PLAIN\"\r\n", 1},
    {MAILTLS_PROTO_SIEVE, SIEVE_OPEN, "STARTTLS", "OK \"go\"\r\n\"SA", 1},
};

TEST(reply_injection_after_the_go_reply_of_every_protocol) {
    for (size_t i = 0; i < sizeof injections / sizeof injections[0]; i++) {
        const struct injection *c = &injections[i];
        for (int one = 0; one < 2; one++) {
            struct step st[12];
            int k = 0;
            opening_steps(c->proto, c->opening, st, &k);
            st[k++] = (struct step)EXPECT(c->expect);
            st[k++] = (struct step)SEND(c->go_and_more);
            /* Injected: the client must close without a hello (whole) or right after
             * it (byte by byte): record until it does. Not injected: the handshake
             * starts; wait for the hello however late it comes, then close. */
            st[k++] = c->injected ? (struct step)EXPECT_EOF : (struct step)READ_SOME;
            st[k++] = (struct step)END;
            peer_t *p = script_start(VIA_SOCKETPAIR, st);
            REQUIRE(p);
            struct io_ctx *ctx = NULL;
            mailtls_session *s = client_for(c->proto, MAILTLS_POLICY_MAY, p->fd, one ? &ctx : NULL);
            REQUIRE(s);
            mailtls_result rc = negotiate_all(s, NULL, NULL);
            peer_finish(p);
            int hello_sent = 0;
            for (size_t x = 0; x < p->sh->nrecv; x++)
                if (p->sh->recv[x] == 0x16)
                    hello_sent = 1;
            if (c->injected) {
                if (rc != MAILTLS_RESULT_REPLY_INJECTION)
                    test_fail(__FILE__, __LINE__, "case %zu: %s, expected reply-injection", i, mailtls_result_name(rc));
                /* Read whole, the injected bytes are seen with the go reply and no hello
                 * goes out; read a byte at a time, they arrive where the ServerHello
                 * belongs, after our hello: detected all the same. */
                if (!one)
                    CHECK(!hello_sent);
                CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_DEFER);
            } else {
                /* Untagged replies before the tagged OK are not a go and not injection:
                 * the handshake starts (and fails here: the script speaks no TLS). */
                CHECK(rc != MAILTLS_RESULT_REPLY_INJECTION);
                CHECK(hello_sent);
                const mailtls_report *r = mailtls_session_report(s);
                CHECK(mailtls_report_warning_count(r) == 1);
                CHECK(mailtls_report_warning(r, 0) && strstr(mailtls_report_warning(r, 0), "[ALERT]"));
            }
        }
    }
}

/* ---- IMAP PREAUTH and ALERT ---- */

TEST(imap_preauth_in_plaintext_logs_out_under_encrypt_and_is_plaintext_under_may) {
    for (int may = 0; may < 2; may++) {
        /* Under verify the client must log out; under may it sends nothing (the script
         * records everything until the client's side closes). */
        static const struct step st_may[] = {SEND("* PREAUTH [CAPABILITY IMAP4rev1] welcome back\r\n"), EXPECT_EOF, END};
        static const struct step st_verify[] = {SEND("* PREAUTH [CAPABILITY IMAP4rev1] welcome back\r\n"),
                                                EXPECT("MT1 LOGOUT"), EXPECT_EOF, END};
        peer_t *p = script_start(VIA_SOCKETPAIR, may ? st_may : st_verify);
        REQUIRE(p);
        mailtls_session *s = client_for(MAILTLS_PROTO_IMAP, may ? MAILTLS_POLICY_MAY : MAILTLS_POLICY_VERIFY, p->fd, NULL);
        REQUIRE(s);
        mailtls_result rc = mailtls_client_negotiate(s);
        const mailtls_report *r = mailtls_session_report(s);
        if (may) {
            CHECK_RC(rc, MAILTLS_RESULT_OK);
            CHECK_OUTCOME(r, MAILTLS_OUTCOME_PLAINTEXT);
            CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_PREAUTH_PLAINTEXT);
        } else {
            CHECK_RC(rc, MAILTLS_RESULT_PREAUTH_PLAINTEXT);
            CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
        }
        peer_finish(p);
        if (may)
            CHECK_NOT_CONTAINS(p->sh->recv, p->sh->nrecv, "LOGOUT");
        else
            CHECK_CONTAINS(p->sh->recv, p->sh->nrecv, "LOGOUT");
        CHECK_NOT_CONTAINS(p->sh->recv, p->sh->nrecv, "STARTTLS");
    }
}

/* A forged PREAUTH is how STARTTLS is stripped from an IMAP client. A session that will
 * log in, without plaintext authentication allowed, defers without sending a byte:
 * no LOGIN, no AUTHENTICATE, not even a LOGOUT. With plaintext authentication allowed
 * it goes on in plaintext and the report says the connection is pre-authenticated, so
 * the application sends no login at all. */
TEST(imap_preauth_under_may_with_credentials_defers_and_sends_nothing) {
    for (int allowed = 0; allowed < 2; allowed++) {
        static const struct step st[] = {SEND("* PREAUTH [CAPABILITY IMAP4rev1] welcome back\r\n"), EXPECT_EOF, END};
        peer_t *p = script_start(VIA_SOCKETPAIR, st);
        REQUIRE(p);
        mailtls_config_builder *b = client_builder(MAILTLS_POLICY_MAY);
        REQUIRE(b);
        CHECK_RC(mailtls_config_builder_set_plaintext_auth(b, allowed), MAILTLS_RESULT_OK);
        const mailtls_config *cfg = build_config(b);
        REQUIRE(cfg);
        mailtls_session *s = NULL;
        REQUIRE_RC(mailtls_client_new(cfg, MAILTLS_PROTO_IMAP, "localhost", 143, &s), MAILTLS_RESULT_OK);
        defer_session(s);
        CHECK_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK);
        CHECK_RC(mailtls_session_set_will_authenticate(s, true), MAILTLS_RESULT_OK);
        mailtls_result rc = mailtls_client_negotiate(s);
        const mailtls_report *r = mailtls_session_report(s);
        CHECK(mailtls_report_preauthenticated(r));
        CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_PREAUTH_PLAINTEXT);
        if (allowed) {
            CHECK_RC(rc, MAILTLS_RESULT_OK);
            CHECK_OUTCOME(r, MAILTLS_OUTCOME_PLAINTEXT);
            CHECK(mailtls_report_warning_count(r) == 1);
            CHECK(strncmp(mailtls_report_warning(r, 0), "plaintext-downgrade preauth-plaintext: ", 39) == 0);
        } else {
            CHECK_RC(rc, MAILTLS_RESULT_PREAUTH_PLAINTEXT);
            CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
            CHECK(strstr(mailtls_session_last_error(s), "will authenticate") != NULL);
        }
        CHECK(strstr(mailtls_report_json(r), "\"preauth\":true") != NULL);
        CHECK_PEER_OK(p);
        if (p->sh->nrecv != 0)
            test_fail(__FILE__, __LINE__, "the client sent %zu bytes after a PREAUTH greeting: %.*s", p->sh->nrecv,
                      (int)p->sh->nrecv, p->sh->recv);
    }
}

TEST(imap_alert_before_tls_is_a_warning_not_trusted_text) {
    static const struct step st[] = {SEND("* OK [ALERT] Your account expires: call +1 555 0100\r\n"),
                                     EXPECT("MT1 CAPABILITY"), SEND("* CAPABILITY IMAP4rev1\r\nMT1 OK\r\n"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, st);
    REQUIRE(p);
    mailtls_session *s = client_for(MAILTLS_PROTO_IMAP, MAILTLS_POLICY_MAY, p->fd, NULL);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
    REQUIRE(mailtls_report_warning_count(r) == 2);
    CHECK(strstr(mailtls_report_warning(r, 0), "before TLS") && strstr(mailtls_report_warning(r, 0), "555 0100"));
    /* Going on in plaintext is itself a downgrade, said in a form a program matches. */
    CHECK(strncmp(mailtls_report_warning(r, 1), "plaintext-downgrade starttls-not-offered: ", 42) == 0);
    CHECK(mailtls_report_warning(r, 2) == NULL);
    CHECK(strstr(mailtls_report_json(r), "\"warnings\":[\"IMAP [ALERT]") != NULL);
    peer_finish(p);
}

/* ---- the server side ---- */

struct inj_case {
    uint32_t proto;
    const char *opening_cmd; /* the capability command the raw client sends first */
    const char *segment;     /* STARTTLS and the injected commands, in one write */
};

static const struct inj_case cmd_injections[] = {
    {MAILTLS_PROTO_IMAP, "a CAPABILITY\r\n", "a STARTTLS\r\nb LOGIN u p\r\n"},
    {MAILTLS_PROTO_POP3, "CAPA\r\n", "STLS\r\nUSER u\r\n"},
    {MAILTLS_PROTO_NNTP, "CAPABILITIES\r\n", "STARTTLS\r\nAUTHINFO USER u\r\n"},
    {MAILTLS_PROTO_SIEVE, NULL, "STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"AHUAcA==\"\r\n"},
};

/* Reads until the opening (greeting and capabilities) is over: a line that ends it. */
static int read_opening(int fd, uint32_t proto) {
    char line[1024];
    const char *end = proto == MAILTLS_PROTO_IMAP ? "a OK" : proto == MAILTLS_PROTO_SIEVE ? "OK" : ".";
    for (int i = 0; i < 64; i++) {
        if (raw_line(fd, line, sizeof line) < 0)
            return -1;
        if (strncmp(line, end, strlen(end)) == 0)
            return 0;
    }
    return -1;
}

TEST(commands_pipelined_after_starttls_are_never_executed_by_any_protocol) {
    for (size_t i = 0; i < sizeof cmd_injections / sizeof cmd_injections[0]; i++) {
        const struct inj_case *c = &cmd_injections[i];
        for (int close_mode = 0; close_mode < 2; close_mode++) {
            mailtls_config_builder *b = server_builder("localhost", NULL, 0);
            REQUIRE(b);
            REQUIRE_RC(mailtls_config_builder_set_injection_action(
                           b, close_mode ? MAILTLS_INJECTION_ACTION_CLOSE : MAILTLS_INJECTION_ACTION_DISCARD),
                       MAILTLS_RESULT_OK);
            const mailtls_config *cfg = build_config(b);
            REQUIRE(cfg);
            peer_t *p = server_start(VIA_SOCKETPAIR, c->proto, cfg, 0);
            REQUIRE(p);
            char line[1024];
            if (c->proto == MAILTLS_PROTO_IMAP || c->proto == MAILTLS_PROTO_NNTP || c->proto == MAILTLS_PROTO_POP3)
                REQUIRE(raw_line(p->fd, line, sizeof line) > 0); /* greeting */
            if (c->opening_cmd)
                raw_send(p->fd, c->opening_cmd);
            REQUIRE(read_opening(p->fd, c->proto) == 0);
            raw_send(p->fd, c->segment);
            static unsigned char got[4096];
            size_t n = 0;
            if (close_mode) {
                n = raw_read_to_eof(p->fd, got, sizeof got);
                CHECK(n == 0);
            } else {
                /* The go reply, then our hello would follow; we just leave. */
                CHECK(raw_line(p->fd, line, sizeof line) > 0);
                CHECK(strncmp(line, c->proto == MAILTLS_PROTO_IMAP ? "a OK" : c->proto == MAILTLS_PROTO_POP3 ? "+OK"
                                       : c->proto == MAILTLS_PROTO_NNTP ? "382" : "OK", 2) == 0);
            }
            peer_finish(p);
            CHECK(p->sh->mail_executed == 0);
            size_t injected = strlen(strchr(c->segment, '\n') + 1);
            if (close_mode) {
                CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_COMMAND_INJECTION);
            } else if (p->sh->discarded != injected) {
                test_fail(__FILE__, __LINE__, "%s: %llu bytes discarded, expected %zu", NAMES[c->proto],
                          (unsigned long long)p->sh->discarded, injected);
            }
        }
    }
}

TEST(require_tls_refuses_credentials_in_clear_with_each_protocols_reply) {
    static const struct {
        uint32_t proto;
        const char *cmd, *reply;
    } cases[] = {
        {MAILTLS_PROTO_IMAP, "a1 LOGIN u p\r\n", "a1 NO [PRIVACYREQUIRED]"},
        {MAILTLS_PROTO_POP3, "USER u\r\n", "-ERR [SYS/PERM]"},
        {MAILTLS_PROTO_NNTP, "AUTHINFO USER u\r\n", "483 "},
        {MAILTLS_PROTO_SIEVE, "AUTHENTICATE \"PLAIN\" \"AHUAcA==\"\r\n", "NO (ENCRYPT-NEEDED)"},
        {MAILTLS_PROTO_SMTP, "MAIL FROM:<a@b>\r\n", "530 5.7.0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mailtls_config_builder *b = server_builder("localhost", NULL, 0);
        REQUIRE(b);
        REQUIRE_RC(mailtls_config_builder_set_require_tls(b, true), MAILTLS_RESULT_OK);
        const mailtls_config *cfg = build_config(b);
        REQUIRE(cfg);
        peer_t *p = server_start(VIA_SOCKETPAIR, cases[i].proto, cfg, 0);
        REQUIRE(p);
        char line[1024];
        if (cases[i].proto == MAILTLS_PROTO_SIEVE) {
            /* The greeting lists no SASL before TLS. */
            REQUIRE(read_opening(p->fd, cases[i].proto) == 0);
        } else {
            REQUIRE(raw_line(p->fd, line, sizeof line) > 0);
        }
        raw_send(p->fd, cases[i].cmd);
        CHECK(raw_line(p->fd, line, sizeof line) > 0);
        if (strncmp(line, cases[i].reply, strlen(cases[i].reply)) != 0)
            test_fail(__FILE__, __LINE__, "%s: %s", NAMES[cases[i].proto], line);
        peer_finish(p);
        CHECK(p->sh->mail_executed == 0);
    }
}

/* A client session drives the server to TLS; then a second STARTTLS, and STARTTLS after
 * a login, get the protocol's refusals, encrypted. */
TEST(second_starttls_and_starttls_after_login_are_refused_in_each_protocol) {
    static const struct {
        uint32_t proto;
        const char *starttls, *active;
    } cases[] = {
        {MAILTLS_PROTO_IMAP, "s STARTTLS\r\n", "s BAD "},
        {MAILTLS_PROTO_POP3, "STLS\r\n", "-ERR "},
        {MAILTLS_PROTO_NNTP, "STARTTLS\r\n", "502 "},
        {MAILTLS_PROTO_SIEVE, "STARTTLS\r\n", "NO "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
        REQUIRE(scfg);
        peer_t *p = server_start(VIA_SOCKETPAIR, cases[i].proto, scfg, 0);
        REQUIRE(p);
        mailtls_session *s = client_for(cases[i].proto, MAILTLS_POLICY_ENCRYPT, p->fd, NULL);
        REQUIRE(s);
        REQUIRE_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
        struct linebuf lb = {0};
        char reply[512];
        CHECK_RC(session_command(s, &lb, cases[i].starttls, reply, sizeof reply), MAILTLS_RESULT_OK);
        if (strncmp(reply, cases[i].active, strlen(cases[i].active)) != 0)
            test_fail(__FILE__, __LINE__, "%s: second STARTTLS got %s", NAMES[cases[i].proto], reply);
        CHECK_RC(session_command(s, &lb, quit_cmd(cases[i].proto), reply, sizeof reply), MAILTLS_RESULT_OK);
        CHECK_PEER_OK(p);
        CHECK_RC(p->sh->second_starttls_rc, MAILTLS_RESULT_TLS_ALREADY_ACTIVE);
    }
    /* After a login in plaintext (no require-TLS), STARTTLS is neither offered nor accepted. */
    static const struct {
        uint32_t proto;
        const char *login, *starttls, *refusal;
    } after[] = {
        {MAILTLS_PROTO_IMAP, "a LOGIN u p\r\n", "b STARTTLS\r\n", "b BAD "},
        {MAILTLS_PROTO_POP3, "PASS p\r\n", "STLS\r\n", "-ERR "},
        {MAILTLS_PROTO_NNTP, "AUTHINFO PASS p\r\n", "STARTTLS\r\n", "502 "},
    };
    for (size_t i = 0; i < sizeof after / sizeof after[0]; i++) {
        const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
        REQUIRE(scfg);
        peer_t *p = server_start(VIA_SOCKETPAIR, after[i].proto, scfg, 0);
        REQUIRE(p);
        char line[1024];
        REQUIRE(raw_line(p->fd, line, sizeof line) > 0);
        raw_send(p->fd, after[i].login);
        REQUIRE(raw_line(p->fd, line, sizeof line) > 0);
        raw_send(p->fd, after[i].starttls);
        CHECK(raw_line(p->fd, line, sizeof line) > 0);
        if (strncmp(line, after[i].refusal, strlen(after[i].refusal)) != 0)
            test_fail(__FILE__, __LINE__, "%s: STARTTLS after login got %s", NAMES[after[i].proto], line);
        peer_finish(p);
        CHECK_RC(p->sh->starttls_rc, UINT32_MAX); /* never reached mailtls_server_starttls */
    }
}

TEST(plaintext_on_an_implicit_tls_port_is_not_tls_even_under_may) {
    static const struct {
        uint32_t proto;
        const char *greeting;
    } cases[] = {
        {MAILTLS_PROTO_IMAP, "* OK IMAP ready\r\n"},
        {MAILTLS_PROTO_POP3, "+OK POP3 ready\r\n"},
        {MAILTLS_PROTO_NNTP, "200 news\r\n"},
        {MAILTLS_PROTO_SMTP, "220 mx ESMTP\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* The greeting is waiting in the socket before the client says anything; the
         * peer then reads the client's first bytes (its ClientHello) whenever they come. */
        struct step st[] = {SEND(cases[i].greeting), READ_SOME, EXPECT_EOF, END};
        peer_t *p = script_start(VIA_SOCKETPAIR, st);
        REQUIRE(p);
        mailtls_session *s = client_for(cases[i].proto, MAILTLS_POLICY_MAY, p->fd, NULL);
        REQUIRE(s);
        CHECK_RC(mailtls_session_set_implicit_tls(s, true), MAILTLS_RESULT_OK);
        CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_NOT_TLS);
        CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_DEFER);
        CHECK_RC(mailtls_session_set_implicit_tls(s, false), MAILTLS_RESULT_INVALID_STATE);
        peer_finish(p);
        CHECK(p->sh->nrecv > 0 && p->sh->recv[0] == 0x16); /* it spoke TLS first */
    }
}

/* ---- the ladder behind each protocol's preamble ---- */

/* A server behind each protocol's preamble that resets ClientHellos larger than 1000
 * bytes (size intolerance) or offering TLS 1.3 (a filter in front of a TLS 1.3 server),
 * and otherwise serves TLS through the library. Accepts connections on a listener in
 * a child; the shared counter counts them. */
struct intolerant {
    uint32_t proto;
    int tls13_filter;
    int listener;
    const mailtls_config *cfg;
};

static int offers_tls13(const uint8_t *h, size_t n) {
    /* record(5) handshake(4) version(2) random(32) */
    size_t i = 5 + 4 + 2 + 32;
    if (i >= n)
        return 0;
    i += 1 + h[i];
    if (i + 2 > n)
        return 0;
    i += 2 + ((size_t)h[i] << 8 | h[i + 1]);
    if (i >= n)
        return 0;
    i += 1 + h[i];
    if (i + 2 > n)
        return 0;
    size_t end = i + 2 + ((size_t)h[i] << 8 | h[i + 1]);
    i += 2;
    while (i + 4 <= n && i + 4 <= end) {
        unsigned type = (unsigned)h[i] << 8 | h[i + 1];
        size_t len = (size_t)h[i + 2] << 8 | h[i + 3];
        if (type == 0x002b && i + 5 <= n) {
            for (size_t v = i + 5; v + 1 < i + 4 + len && v + 1 < n; v += 2)
                if (h[v] == 3 && h[v + 1] == 4)
                    return 1;
        }
        i += 4 + len;
    }
    return 0;
}

static void serve_one_intolerant(int fd, const struct intolerant *z, struct shared *sh) {
    static struct psrv p;
    memset(&p, 0, sizeof p);
    p.fd = fd;
    p.sh = sh;
    p.proto = z->proto;
    if (mailtls_server_new(z->cfg, z->proto, "127.0.0.1:1", &p.s) != MAILTLS_RESULT_OK ||
        mailtls_session_set_fd(p.s, fd) != MAILTLS_RESULT_OK)
        child_fail(sh, "server session");
    ps_send(&p, greeting(z->proto, 1, 1));
    char line[4096];
    while (ps_line(&p, line, sizeof line)) {
        char tag[64] = "", verb[64] = "";
        if (z->proto == MAILTLS_PROTO_IMAP)
            sscanf(line, "%63s %63s", tag, verb);
        else
            sscanf(line, "%63s", verb);
        if (strcasecmp(verb, "STARTTLS") && strcasecmp(verb, "STLS")) {
            if (!strcasecmp(verb, "QUIT") || !strcasecmp(verb, "LOGOUT"))
                break;
            ps_send(&p, capabilities(z->proto, tag, 1, p.tls));
            continue;
        }
        /* The go reply by hand, then a look at the hello before deciding. */
        char go[128];
        snprintf(go, sizeof go, "%s",
                 z->proto == MAILTLS_PROTO_IMAP ? "" : z->proto == MAILTLS_PROTO_POP3 ? "+OK go\r\n"
                 : z->proto == MAILTLS_PROTO_NNTP ? "382 go\r\n" : z->proto == MAILTLS_PROTO_SIEVE ? "OK\r\n"
                 : "220 go\r\n");
        if (z->proto == MAILTLS_PROTO_IMAP)
            snprintf(go, sizeof go, "%s OK go\r\n", tag);
        if (write(fd, go, strlen(go)) < 0)
            break;
        static uint8_t peek[2048];
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        ssize_t n = 0;
        for (int t = 0; t < 50; t++) {
            if (poll(&pf, 1, 100) == 1)
                n = recv(fd, peek, sizeof peek, MSG_PEEK);
            if (n >= 5 && (size_t)n >= 5 + ((size_t)peek[3] << 8 | peek[4]))
                break;
        }
        size_t len = n >= 5 ? ((size_t)peek[3] << 8 | peek[4]) + 5 : 0;
        int reset = z->tls13_filter ? offers_tls13(peek, (size_t)n) : len > 1000;
        if (reset) {
            struct linger l = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            shared_log(sh, "reset %zu\n", len);
            break;
        }
        if (mailtls_server_start_implicit(p.s) != MAILTLS_RESULT_OK)
            break;
        p.tls = 1;
        if (z->proto == MAILTLS_PROTO_SIEVE)
            ps_send(&p, greeting(z->proto, 0, 1));
    }
    if (p.tls)
        mailtls_session_close(p.s);
    mailtls_session_free(p.s);
}

static void intolerant_server(int fd, void *arg, struct shared *sh) {
    const struct intolerant *z = arg;
    for (;;) {
        /* Serves connections until the test closes its end of the socketpair. */
        struct pollfd pf[2] = {{.fd = z->listener, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
        if (poll(pf, 2, 10000) <= 0 || pf[1].revents || !(pf[0].revents & POLLIN))
            return;
        int c = accept(z->listener, NULL, NULL);
        if (c < 0)
            return;
        sh->io_calls++; /* connections */
        serve_one_intolerant(c, z, sh);
        close(c);
    }
}

static uint16_t listen_port(int *lfd) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 8) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
        return 0;
    *lfd = l;
    return ntohs(a.sin_port);
}

static int32_t dial_cb(void *ud, const char *host, uint16_t port, int32_t *out_fd) {
    (void)host;
    (*(int *)ud)++;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (fd >= 0)
            close(fd);
        return ECONNREFUSED;
    }
    *out_fd = fd;
    return 0;
}

static void close_cb(void *ud, int32_t fd) {
    (void)ud;
    if (fd >= 0)
        close(fd);
}

static void free_memory(void *m) { mailtls_memory_free(m); }

/* One contact: outcome, last rung, connections. */
static void contact(uint32_t proto, uint16_t port, const mailtls_memory *m, mailtls_result *rc, uint32_t *outcome,
                    int *rung, int *conns) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_ENCRYPT);
    mailtls_config_builder_set_memory(b, m);
    mailtls_config_builder_set_timeout_ms(b, 10000);
    const mailtls_config *cfg = build_config(b);
    mailtls_session *s = NULL;
    *conns = 0;
    *rc = MAILTLS_RESULT_PANIC;
    if (!cfg || mailtls_client_new(cfg, proto, "127.0.0.1", port, &s) != MAILTLS_RESULT_OK)
        return;
    defer_session(s);
    mailtls_session_set_server_name(s, "localhost");
    int32_t fd = -1;
    if (dial_cb(conns, "127.0.0.1", port, &fd) != 0)
        return;
    mailtls_session_set_fd(s, fd);
    mailtls_session_set_connector(s, dial_cb, close_cb, conns);
    *rc = mailtls_client_negotiate(s);
    const mailtls_report *r = mailtls_session_report(s);
    *outcome = mailtls_report_outcome(r);
    size_t na = mailtls_report_attempt_count(r);
    *rung = na ? mailtls_report_attempt_rung(r, na - 1) : -1;
    if (*rc == MAILTLS_RESULT_OK) {
        struct linebuf lb = {0};
        char reply[512];
        session_command(s, &lb, quit_cmd(proto), reply, sizeof reply);
    }
    close(mailtls_session_fd(s));
}

TEST(size_intolerance_behind_each_protocols_preamble_recovers_and_is_remembered) {
    for (int i = 2; i < NPROTOS; i++) {
        static struct intolerant z;
        memset(&z, 0, sizeof z);
        z.proto = PROTOS[i];
        z.cfg = server_cfg("localhost", NULL, 0);
        REQUIRE(z.cfg);
        uint16_t port = listen_port(&z.listener);
        REQUIRE(port);
        defer_fd(z.listener);
        peer_t *p = peer_start(VIA_SOCKETPAIR, intolerant_server, &z);
        REQUIRE(p);
        const mailtls_memory *m = NULL;
        REQUIRE_RC(mailtls_memory_new(&m), MAILTLS_RESULT_OK);
        defer_call(free_memory, (void *)m);
        mailtls_result rc;
        uint32_t outcome = 0;
        int rung = -1, conns = 0;
        contact(PROTOS[i], port, m, &rc, &outcome, &rung, &conns);
        if (rc != MAILTLS_RESULT_OK || rung != MAILTLS_RUNG_COMPACT || conns != 2)
            test_fail(__FILE__, __LINE__, "%s first contact: %s, rung %d, %d connections", NAMES[i],
                      mailtls_result_name(rc), rung, conns);
        contact(PROTOS[i], port, m, &rc, &outcome, &rung, &conns);
        if (rc != MAILTLS_RESULT_OK || rung != MAILTLS_RUNG_COMPACT || conns != 1)
            test_fail(__FILE__, __LINE__, "%s next contact: %s, rung %d, %d connections", NAMES[i],
                      mailtls_result_name(rc), rung, conns);
        peer_finish(p);
        CHECK(p->sh->io_calls == 3);
    }
}

TEST(tls13_filter_behind_each_protocols_preamble_is_a_downgrade_not_a_fallback) {
    for (int i = 2; i < NPROTOS; i++) {
        static struct intolerant z;
        memset(&z, 0, sizeof z);
        z.proto = PROTOS[i];
        z.tls13_filter = 1;
        z.cfg = server_cfg("localhost", NULL, 0);
        REQUIRE(z.cfg);
        uint16_t port = listen_port(&z.listener);
        REQUIRE(port);
        defer_fd(z.listener);
        peer_t *p = peer_start(VIA_SOCKETPAIR, intolerant_server, &z);
        REQUIRE(p);
        const mailtls_memory *m = NULL;
        REQUIRE_RC(mailtls_memory_new(&m), MAILTLS_RESULT_OK);
        defer_call(free_memory, (void *)m);
        mailtls_result rc;
        uint32_t outcome = 0;
        int rung = -1, conns = 0;
        contact(PROTOS[i], port, m, &rc, &outcome, &rung, &conns);
        if (rc != MAILTLS_RESULT_DOWNGRADE_DETECTED || rung != MAILTLS_RUNG_TLS12 || outcome != MAILTLS_OUTCOME_DEFER)
            test_fail(__FILE__, __LINE__, "%s: %s, rung %d, outcome %s, %d connections", NAMES[i],
                      mailtls_result_name(rc), rung, mailtls_outcome_name(outcome), conns);
        peer_finish(p);
    }
}
