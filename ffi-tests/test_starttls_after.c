/* mailtls_client_start_tls: programs that keep their own STARTTLS code (msmtp, Exim,
 * mutt-like clients) send EHLO and STARTTLS and read the 220 themselves, then hand
 * the connection to the library for the handshake alone. Here the test is that
 * application: it speaks SMTP on the raw socket, to the recovery zoo, the fixture
 * server or a scripted peer, and calls the library at the moment after the go reply.
 * What is asserted: the result, the report, the memory record, the rung of the next
 * contact (in this process and in another), and the bytes the peer received. */
#include "support.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the application's side ---- */

/* The application's own SMTP dialogue up to the go reply: greeting, EHLO, STARTTLS,
 * 220, each reply read line by line (raw_reply), so nothing past the 220 is consumed.
 * 0 when the server said go; else -1, with the reason in why. */
static int own_starttls(int fd, char *why, size_t cap) {
    char reply[2048];
    int code = raw_reply(fd, reply, sizeof reply);
    if (code != 220) {
        snprintf(why, cap, "greeting %d: %s", code, reply);
        return -1;
    }
    if (raw_send(fd, "EHLO " HELO_NAME "\r\n") < 0 || (code = raw_reply(fd, reply, sizeof reply)) != 250 ||
        !strstr(reply, "STARTTLS")) {
        snprintf(why, cap, "EHLO %d: %s", code, reply);
        return -1;
    }
    if (raw_send(fd, "STARTTLS\r\n") < 0 || (code = raw_reply(fd, reply, sizeof reply)) != 220) {
        snprintf(why, cap, "STARTTLS %d: %s", code, reply);
        return -1;
    }
    return 0;
}

#define OWN_STARTTLS(fd)                                                       \
    do {                                                                       \
        char why_[512] = {0};                                                  \
        if (own_starttls((fd), why_, sizeof why_) != 0) {                      \
            test_fail(__FILE__, __LINE__, "own STARTTLS dialogue: %s", why_);  \
            return;                                                            \
        }                                                                      \
    } while (0)

/* A client config of `policy` with `m` (may be NULL) and `cafile` (may be NULL). */
static const mailtls_config *cfg_with(uint32_t policy, const mailtls_memory *m, const char *cafile) {
    mailtls_config_builder *b = client_builder(policy);
    if (!b)
        return NULL;
    if (m)
        CHECK_RC(mailtls_config_builder_set_memory(b, m), MAILTLS_RESULT_OK);
    if (cafile)
        CHECK_RC(mailtls_config_builder_set_ca_file(b, cafile), MAILTLS_RESULT_OK);
    return build_config(b);
}

/* A client session for host:port on fd (its reference name: name), freed after the test. */
static mailtls_session *session_for(const mailtls_config *cfg, const char *host, uint16_t port, const char *name,
                                    int fd) {
    mailtls_session *s = NULL;
    if (!cfg || !CHECK_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, host, port, &s), MAILTLS_RESULT_OK))
        return NULL;
    defer_session(s);
    if (name)
        CHECK_RC(mailtls_session_set_server_name(s, name), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_fd(s, fd), MAILTLS_RESULT_OK);
    return s;
}

/* Drives mailtls_client_start_tls through WOULD_BLOCK, resuming alternately with
 * mailtls_session_continue and the same call again; checks that wants_read/_write
 * name the direction that blocked (when ctx is given) and counts the waits. */
static mailtls_result start_all(mailtls_session *s, struct io_ctx *ctx, int *wouldblocks) {
    mailtls_result rc = mailtls_client_start_tls(s, NULL, 0);
    int n = 0;
    while (rc == MAILTLS_RESULT_WOULD_BLOCK && n < 200000) {
        n++;
        if (ctx) {
            int wr = mailtls_session_wants_read(s), ww = mailtls_session_wants_write(s);
            if (wr != (ctx->last_block == 'r') || ww != (ctx->last_block == 'w')) {
                test_fail(__FILE__, __LINE__, "after WOULD_BLOCK #%d the %s callback blocked, but wants_read=%d wants_write=%d",
                          n, ctx->last_block == 'r' ? "read" : "write", wr, ww);
                ctx = NULL;
            }
        }
        rc = (n % 2) ? mailtls_session_continue(s) : mailtls_client_start_tls(s, NULL, 0);
    }
    if (wouldblocks)
        *wouldblocks = n;
    return rc;
}

/* A connector that only counts: the library must never use it here, since it cannot
 * redo the application's STARTTLS on a new connection. */
struct counts {
    int connects, closes;
};
static int32_t count_connect(void *ud, const char *host, uint16_t port, int32_t *out_fd) {
    (void)host;
    (void)port;
    (void)out_fd;
    ((struct counts *)ud)->connects++;
    return ECONNREFUSED;
}
static void count_close(void *ud, int32_t fd) {
    (void)fd;
    ((struct counts *)ud)->closes++;
}

/* The memory record of (smtp, host, port) as text; "" when there is none. */
static const char *lookup(const mailtls_memory *m, const char *host, uint16_t port) {
    static char buf[512];
    buf[0] = 0;
    uintptr_t w = 0;
    CHECK_RC(mailtls_memory_lookup(m, MAILTLS_PROTO_SMTP, host, port, buf, sizeof buf, &w), MAILTLS_RESULT_OK);
    return buf;
}

/* Every memory event of the report, each followed by "; ". */
static const char *events(const mailtls_report *r) {
    static char buf[2048];
    buf[0] = 0;
    for (size_t i = 0; i < mailtls_report_memory_event_count(r); i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s; ", mailtls_report_memory_event(r, i));
    }
    return buf;
}

#define CHECK_HAS(hay, needle)                                                 \
    ((strstr((hay), (needle)) != NULL)                                         \
         ? 1                                                                   \
         : (test_fail(__FILE__, __LINE__, "no \"%s\" in \"%s\"", (needle), (hay)), 0))

/* EHLO inside TLS: the protected capability list, read to its last line. */
static void check_ehlo_inside_tls(mailtls_session *s, const char *last_line) {
    struct linebuf lb = {0};
    char reply[512];
    CHECK_RC(session_command(s, &lb, "EHLO " HELO_NAME "\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    if (strncmp(reply, last_line, strlen(last_line)) != 0)
        test_fail(__FILE__, __LINE__, "EHLO under TLS ended with \"%s\", expected \"%s\"", show_bytes(reply, strlen(reply)),
                  last_line);
    CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK(strncmp(reply, "221", 3) == 0);
}

/* ---- the tests ---- */

TEST(starttls_after_tolerant_server_gives_tls13_a_full_report_and_ehlo_inside_tls) {
    struct zoo *z = zoo_start("normal");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_ENCRYPT, m, NULL);
    int fd = dial(z->port, 10);
    REQUIRE(m && cfg && fd >= 0);
    defer_fd(fd);
    mailtls_session *s = session_for(cfg, "127.0.0.1", z->port, "localhost", fd);
    REQUIRE(s);
    OWN_STARTTLS(fd);
    REQUIRE_RC(mailtls_client_start_tls(s, NULL, 0), MAILTLS_RESULT_OK);
    CHECK(mailtls_session_tls_active(s));
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_TLS);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_OK);
    CHECK_STREQ(mailtls_report_tls_version(r), "TLSv1.3");
    CHECK(mailtls_report_cipher(r) != NULL && mailtls_report_group(r) != NULL);
    CHECK(mailtls_report_peer_cert_subject(r) != NULL);
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK(mailtls_report_attempt_rung(r, 0) == MAILTLS_RUNG_MODERN);
    CHECK_RC(mailtls_report_attempt_result(r, 0), MAILTLS_RESULT_OK);
    CHECK(mailtls_report_retry_rung(r) == -1);
    /* The plaintext dialogue was the application's: the report claims none of it. */
    CHECK(mailtls_report_capability_count(r) == 0);
    CHECK(mailtls_report_time_ms(r, 0) == 0);
    CHECK_HAS(events(r), "recorded success at rung modern (pinned)");
    const char *rec = lookup(m, "127.0.0.1", z->port);
    CHECK_HAS(rec, "tolerant=modern@");
    CHECK_HAS(rec, "pinned@");
    /* STARTTLS happens once per connection; the session is still good afterwards. */
    CHECK_RC(mailtls_client_start_tls(s, NULL, 0), MAILTLS_RESULT_INVALID_STATE);
    CHECK(strstr(mailtls_session_last_error(s), "once per connection") != NULL);
    CHECK(mailtls_session_tls_active(s));
    check_ehlo_inside_tls(s, "250 AUTH PLAIN");
    CHECK(zoo_connections_are(z, 1));
}

/* The next contact from another process: it opens the same memory database, does
 * its own STARTTLS and must start at compact on its one connection. Exit status: 0
 * as expected, else which step failed. */
static void other_process_contact(const char *path, uint16_t port) {
    const mailtls_memory *m = NULL;
    if (mailtls_memory_open_file(path, &m) != MAILTLS_RESULT_OK)
        _exit(2);
    mailtls_config_builder *b = NULL;
    const mailtls_config *cfg = NULL;
    mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, &b);
    mailtls_config_builder_set_policy(b, MAILTLS_POLICY_ENCRYPT);
    mailtls_config_builder_set_timeout_ms(b, 10000);
    mailtls_config_builder_set_memory(b, m);
    if (mailtls_config_builder_build(b, &cfg) != MAILTLS_RESULT_OK)
        _exit(3);
    mailtls_config_builder_free(b);
    int fd = dial(port, 10);
    char why[512];
    if (fd < 0 || own_starttls(fd, why, sizeof why) != 0)
        _exit(4);
    mailtls_session *s = NULL;
    mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1", port, &s);
    mailtls_session_set_server_name(s, "localhost");
    mailtls_session_set_fd(s, fd);
    int status = 0;
    if (mailtls_client_start_tls(s, NULL, 0) != MAILTLS_RESULT_OK)
        status = 5;
    const mailtls_report *r = mailtls_session_report(s);
    if (!status && (mailtls_report_attempt_count(r) != 1 || mailtls_report_attempt_rung(r, 0) != MAILTLS_RUNG_COMPACT))
        status = 6;
    mailtls_session_close(s);
    mailtls_session_free(s);
    close(fd);
    mailtls_config_free(cfg);
    mailtls_memory_free(m);
    _exit(status);
}

TEST(starttls_after_reset_asks_for_a_retry_and_each_next_contact_even_in_another_process_starts_at_compact) {
    struct zoo *z = zoo_start("reset-above:1000");
    REQUIRE(z);
    char path[64];
    const mailtls_memory *m = memory_file(path);
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_ENCRYPT, m, NULL);
    REQUIRE(m && cfg);

    /* First contact: the modern hello is reset; the library cannot redo the
     * application's STARTTLS, so it records the intolerance and asks for a retry,
     * connector or not. */
    int fd = dial(z->port, 10);
    REQUIRE(fd >= 0);
    defer_fd(fd);
    mailtls_session *s = session_for(cfg, "127.0.0.1", z->port, "localhost", fd);
    REQUIRE(s);
    struct counts c = {0, 0};
    CHECK_RC(mailtls_session_set_connector(s, count_connect, count_close, &c), MAILTLS_RESULT_OK);
    OWN_STARTTLS(fd);
    CHECK_RC(mailtls_client_start_tls(s, NULL, 0), MAILTLS_RESULT_RETRY_NEEDED);
    CHECK(c.connects == 0 && c.closes == 0);
    CHECK(!mailtls_session_tls_active(s));
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK(mailtls_report_retry_rung(r) == MAILTLS_RUNG_COMPACT);
    CHECK(!mailtls_report_retry_without_sni(r));
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK(mailtls_report_attempt_rung(r, 0) == MAILTLS_RUNG_MODERN);
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_INTOLERANCE);
    CHECK_HAS(events(r), "recorded intolerance at rung modern");
    CHECK_HAS(lookup(m, "127.0.0.1", z->port), "intolerant=modern@");

    /* The application reconnects, redoes its STARTTLS, and a new session on the same
     * config starts at compact by itself. */
    int fd2 = dial(z->port, 10);
    REQUIRE(fd2 >= 0);
    defer_fd(fd2);
    mailtls_session *s2 = session_for(cfg, "127.0.0.1", z->port, "localhost", fd2);
    REQUIRE(s2);
    OWN_STARTTLS(fd2);
    CHECK_RC(mailtls_client_start_tls(s2, NULL, 0), MAILTLS_RESULT_OK);
    const mailtls_report *r2 = mailtls_session_report(s2);
    CHECK(mailtls_report_attempt_count(r2) == 1);
    CHECK(mailtls_report_attempt_rung(r2, 0) == MAILTLS_RUNG_COMPACT);
    CHECK_HAS(events(r2), "start at rung compact");
    CHECK_HAS(lookup(m, "127.0.0.1", z->port), "tolerant=compact@");
    check_ehlo_inside_tls(s2, "250 AUTH PLAIN");

    /* A third contact by another process sharing the memory file: one connection. */
    pid_t kid = fork();
    REQUIRE(kid >= 0);
    if (kid == 0) {
        alarm(CHILD_ALARM_S);
        other_process_contact(path, z->port);
    }
    int st = 0;
    CHECK(waitpid(kid, &st, 0) == kid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        test_fail(__FILE__, __LINE__, "the other process's contact failed (status %d)", st);
    CHECK(zoo_connections_are(z, 3));
}

TEST(starttls_after_refuses_bytes_read_past_the_go_reply_and_sends_nothing) {
    static const struct step script[] = {
        SEND("220 mx.test ESMTP\r\n"),
        EXPECT("EHLO " HELO_NAME),
        SEND("250-mx.test\r\n250 STARTTLS\r\n"),
        EXPECT("STARTTLS"),
        SEND("220 go\r\n250 injected\r\n"),
        EXPECT_EOF,
        END,
    };
    const mailtls_memory *m = memory_new();
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_ENCRYPT, m, NULL);
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(m && cfg && p);
    mailtls_session *s = session_for(cfg, "mx.test", 25, NULL, p->fd);
    REQUIRE(s);
    char reply[1024];
    REQUIRE(raw_reply(p->fd, reply, sizeof reply) == 220);
    REQUIRE(raw_send(p->fd, "EHLO " HELO_NAME "\r\n") == 0);
    REQUIRE(raw_reply(p->fd, reply, sizeof reply) == 250);
    REQUIRE(raw_send(p->fd, "STARTTLS\r\n") == 0);
    /* Then it reads in blocks, as most programs do: the go reply and what came with it. */
    char buf[1024] = {0};
    size_t n = 0;
    while (n < sizeof buf - 1 && !strstr(buf, "250 injected\r\n")) {
        ssize_t k = recv(p->fd, buf + n, sizeof buf - 1 - n, 0);
        REQUIRE(k > 0);
        n += (size_t)k;
        buf[n] = 0;
    }
    const char *go = strstr(buf, "220 go\r\n");
    REQUIRE(go);
    const char *after = go + strlen("220 go\r\n");
    size_t extra = n - (size_t)(after - buf);
    CHECK(extra == strlen("250 injected\r\n"));
    CHECK_RC(mailtls_client_start_tls(s, (const uint8_t *)after, extra), MAILTLS_RESULT_REPLY_INJECTION);
    CHECK(!mailtls_session_tls_active(s));
    CHECK(!mailtls_session_wants_write(s));
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_REPLY_INJECTION);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(r), "validation-failure");
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK(mailtls_report_attempt_rung(r, 0) == -1);
    CHECK_HAS(mailtls_session_last_error(s), "14 bytes after the go reply to STARTTLS, before the TLS handshake");
    CHECK_HAS(mailtls_session_last_error(s), "250 injected");
    CHECK_STREQ(lookup(m, "mx.test", 25), "");
    /* The session is over: a second call says so and still sends nothing. */
    CHECK_RC(mailtls_client_start_tls(s, NULL, 0), MAILTLS_RESULT_INVALID_STATE);
    CHECK_HAS(mailtls_session_last_error(s), "has ended (reply-injection)");
    CHECK_PEER_OK(p);
    /* The peer received the application's two commands and not one byte more. */
    const char *sent = "EHLO " HELO_NAME "\r\nSTARTTLS\r\n";
    if (p->sh->nrecv != strlen(sent) || memcmp(p->sh->recv, sent, strlen(sent)) != 0)
        test_fail(__FILE__, __LINE__, "the peer received %s", show_bytes(p->sh->recv, p->sh->nrecv));
}

/* The injected line arrives after the application read exactly the go reply: the
 * library's hello has gone out, and the plaintext where the server's handshake
 * belongs ends it as reply injection, as in a negotiation. */
TEST(starttls_after_refuses_plaintext_where_the_servers_handshake_belongs) {
    static const struct step script[] = {
        GREET_OFFER,
        EXPECT("STARTTLS"),
        SEND("220 go\r\n250 injected\r\n"),
        DRAIN(3000),
        END,
    };
    const mailtls_memory *m = memory_new();
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_ENCRYPT, m, NULL);
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(m && cfg && p);
    mailtls_session *s = session_for(cfg, "mx.test", 25, NULL, p->fd);
    REQUIRE(s);
    OWN_STARTTLS(p->fd);
    CHECK_RC(mailtls_client_start_tls(s, NULL, 0), MAILTLS_RESULT_REPLY_INJECTION);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK(mailtls_report_retry_rung(r) == -1);
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_ATTACK);
    CHECK_HAS(mailtls_session_last_error(s), "plaintext from the server after its go reply");
    CHECK(strstr(lookup(m, "mx.test", 25), "intolerant") == NULL);
    peer_close(p);
    CHECK_PEER_OK(p);
    /* What it did send after STARTTLS was a TLS handshake record. */
    const unsigned char *rec = p->sh->recv;
    size_t head = strlen("EHLO " HELO_NAME "\r\nSTARTTLS\r\n");
    CHECK(p->sh->nrecv > head && rec[head] == 0x16);
}

/* A peer that accepted the modern hello recently and now resets it (here: the same
 * name, reached through another server, as someone on the path would arrange) is not
 * fallen back from, and nothing is recorded against it. */
TEST(starttls_after_refuses_to_fall_back_from_a_rung_the_peer_accepted_recently) {
    struct zoo *good = zoo_start("normal");
    struct zoo *bad = zoo_start("reset-above:1000");
    REQUIRE(good && bad);
    const mailtls_memory *m = memory_new();
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_ENCRYPT, m, NULL);
    REQUIRE(m && cfg);
    int fd = dial(good->port, 10);
    REQUIRE(fd >= 0);
    defer_fd(fd);
    mailtls_session *s = session_for(cfg, "mx.test", 25, "localhost", fd);
    REQUIRE(s);
    OWN_STARTTLS(fd);
    CHECK_RC(mailtls_client_start_tls(s, NULL, 0), MAILTLS_RESULT_OK);
    CHECK_HAS(lookup(m, "mx.test", 25), "tolerant=modern@");

    int fd2 = dial(bad->port, 10);
    REQUIRE(fd2 >= 0);
    defer_fd(fd2);
    mailtls_session *s2 = session_for(cfg, "mx.test", 25, "localhost", fd2);
    REQUIRE(s2);
    OWN_STARTTLS(fd2);
    CHECK_RC(mailtls_client_start_tls(s2, NULL, 0), MAILTLS_RESULT_DOWNGRADE_SUSPECTED);
    const mailtls_report *r = mailtls_session_report(s2);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK(mailtls_report_retry_rung(r) == -1);
    CHECK(mailtls_report_attempt_rung(r, 0) == MAILTLS_RUNG_MODERN);
    CHECK_HAS(events(r), "downgrade suspected");
    const char *rec = lookup(m, "mx.test", 25);
    CHECK_HAS(rec, "tolerant=modern@");
    CHECK(strstr(rec, "intolerant") == NULL);
}

/* The fixture server with a certificate for localhost, and an application that
 * checks it for `name` at `rung` (-1: memory's choice) with or without SNI. */
static mailtls_result verified_start(const char *name, int rung, int sni, const mailtls_memory *m,
                                     mailtls_session **out, peer_t **peer) {
    static char pem[8192];
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", pem, sizeof pem);
    const mailtls_config *cfg = o.cfg ? cfg_with(MAILTLS_POLICY_VERIFY, m, temp_file(pem)) : NULL;
    peer_t *p = cfg ? peer_start(VIA_SOCKETPAIR, fixture_server, &o) : NULL;
    mailtls_session *s = p ? session_for(cfg, name, 25, NULL, p->fd) : NULL;
    char why[512] = {0};
    if (!s || own_starttls(p->fd, why, sizeof why) != 0) {
        test_fail(__FILE__, __LINE__, "setting up: %s", why);
        return MAILTLS_RESULT_PANIC;
    }
    if (rung >= 0)
        CHECK_RC(mailtls_session_set_start_rung(s, (uint32_t)rung, sni), MAILTLS_RESULT_OK);
    *out = s;
    *peer = p;
    return mailtls_client_start_tls(s, NULL, 0);
}

TEST(starttls_after_verify_with_a_wrong_name_is_a_certificate_failure_never_a_retry) {
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    mailtls_session *s = NULL;
    peer_t *p = NULL;
    CHECK_RC(verified_start("wrong.example", -1, 1, m, &s, &p), MAILTLS_RESULT_CERTIFICATE_NAME_MISMATCH);
    REQUIRE(s && p);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(r), "certificate-host-mismatch");
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_CERTIFICATE);
    CHECK(mailtls_report_retry_rung(r) == -1);
    CHECK(mailtls_report_tls_version(r) == NULL);
    CHECK(mailtls_report_peer_cert_subject(r) != NULL);
    CHECK(strstr(lookup(m, "wrong.example", 25), "intolerant") == NULL);
    peer_close(p);
    CHECK_PEER_OK(p);
    CHECK(!p->sh->tls_was_active);

    /* The right name verifies, and the application's EHLO under TLS gets the
     * fixture's protected capabilities. */
    mailtls_session *s2 = NULL;
    peer_t *p2 = NULL;
    CHECK_RC(verified_start("localhost", -1, 1, m, &s2, &p2), MAILTLS_RESULT_OK);
    REQUIRE(s2 && p2);
    CHECK(mailtls_report_peer_cert_verified(mailtls_session_report(s2)) == 1);
    check_ehlo_inside_tls(s2, "250 ENHANCEDSTATUSCODES");
    CHECK_PEER_OK(p2);
    CHECK(p2->sh->tls_was_active);
    CHECK_CONTAINS(p2->sh->log, p2->sh->nlog, "STARTTLS: ok\nC: EHLO " HELO_NAME "\n");
}

/* mailtls_session_set_start_rung is honoured, and a lower rung without SNI weakens
 * nothing of verify: the wrong name still fails, the right one verifies. */
TEST(starttls_after_honours_set_start_rung_and_verify_holds_at_classic_without_sni) {
    mailtls_session *s = NULL;
    peer_t *p = NULL;
    CHECK_RC(verified_start("wrong.example", MAILTLS_RUNG_CLASSIC, 0, NULL, &s, &p),
             MAILTLS_RESULT_CERTIFICATE_NAME_MISMATCH);
    REQUIRE(s && p);
    CHECK(mailtls_report_attempt_rung(mailtls_session_report(s), 0) == MAILTLS_RUNG_CLASSIC);
    peer_close(p);
    CHECK_PEER_OK(p);

    mailtls_session *s2 = NULL;
    peer_t *p2 = NULL;
    CHECK_RC(verified_start("localhost", MAILTLS_RUNG_CLASSIC, 0, NULL, &s2, &p2), MAILTLS_RESULT_OK);
    REQUIRE(s2 && p2);
    const mailtls_report *r = mailtls_session_report(s2);
    CHECK(mailtls_report_attempt_rung(r, 0) == MAILTLS_RUNG_CLASSIC);
    CHECK(mailtls_report_peer_cert_verified(r) == 1);
    /* classic offers no post-quantum group. */
    CHECK(mailtls_report_group(r) && strstr(mailtls_report_group(r), "MLKEM") == NULL);
    check_ehlo_inside_tls(s2, "250 ENHANCEDSTATUSCODES");
    CHECK_PEER_OK(p2);
}

/* The TLS 1.2-only hello to a server that speaks TLS 1.3: its ServerHello carries
 * the RFC 8446 sentinel, which the library checks itself at that rung. A downgrade,
 * never a retry; the memory learns that the peer speaks TLS 1.3. */
TEST(starttls_after_tls12_hello_to_a_tls13_server_detects_the_downgrade_sentinel) {
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    mailtls_session *s = NULL;
    peer_t *p = NULL;
    CHECK_RC(verified_start("localhost", MAILTLS_RUNG_TLS12, 1, m, &s, &p), MAILTLS_RESULT_DOWNGRADE_DETECTED);
    REQUIRE(s && p);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK(mailtls_report_retry_rung(r) == -1);
    CHECK(mailtls_report_attempt_rung(r, 0) == MAILTLS_RUNG_TLS12);
    CHECK(mailtls_report_tls_version(r) == NULL);
    const char *rec = lookup(m, "localhost", 25);
    CHECK_HAS(rec, "tls13@");
    CHECK(strstr(rec, "intolerant") == NULL);
    peer_close(p);
    CHECK_PEER_OK(p);
    CHECK(!p->sh->tls_was_active);
}

/* One byte per read and write, EAGAIN on every other call: the handshake resumes
 * through mailtls_session_continue (and the call itself) to the retry and, on the
 * next connection, to TLS at compact. */
TEST(starttls_after_one_byte_reads_and_eagain_resume_to_the_retry_and_then_to_tls) {
    struct zoo *z = zoo_start("reset-above:1000");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_ENCRYPT, m, NULL);
    REQUIRE(m && cfg);
    const mailtls_result expected[2] = {MAILTLS_RESULT_RETRY_NEEDED, MAILTLS_RESULT_OK};
    for (int i = 0; i < 2; i++) {
        int fd = dial(z->port, 10);
        REQUIRE(fd >= 0);
        defer_fd(fd);
        OWN_STARTTLS(fd);
        mailtls_session *s = NULL;
        REQUIRE_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1", z->port, &s), MAILTLS_RESULT_OK);
        defer_session(s);
        CHECK_RC(mailtls_session_set_server_name(s, "localhost"), MAILTLS_RESULT_OK);
        struct io_ctx *io = io_new(fd);
        io->max_chunk = 1;
        io->eagain_alternate = 1;
        CHECK_RC(mailtls_session_set_io(s, io_read, io_write, io), MAILTLS_RESULT_OK);
        int waits = 0;
        CHECK_RC(start_all(s, io, &waits), expected[i]);
        CHECK(waits > 10);
        CHECK(io->read_eagains > 0 && io->write_eagains > 0);
        const mailtls_report *r = mailtls_session_report(s);
        CHECK(mailtls_report_attempt_rung(r, 0) == (i == 0 ? MAILTLS_RUNG_MODERN : MAILTLS_RUNG_COMPACT));
        if (i == 0)
            CHECK(mailtls_report_retry_rung(r) == MAILTLS_RUNG_COMPACT);
        else
            check_ehlo_inside_tls(s, "250 AUTH PLAIN");
    }
    CHECK(zoo_connections_are(z, 2));
}

/* Under may the library never goes on in plaintext after the application's
 * STARTTLS: the server waits for a handshake, and plaintext on a new connection is
 * the application's decision. Every hello closed: the last rung fails too. */
TEST(starttls_after_under_may_never_goes_on_in_plaintext) {
    struct zoo *z = zoo_start("eof-above:0");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_MAY, m, NULL);
    int fd = dial(z->port, 10);
    REQUIRE(m && cfg && fd >= 0);
    defer_fd(fd);
    mailtls_session *s = session_for(cfg, "127.0.0.1", z->port, "localhost", fd);
    REQUIRE(s);
    struct counts c = {0, 0};
    CHECK_RC(mailtls_session_set_connector(s, count_connect, count_close, &c), MAILTLS_RESULT_OK);
    OWN_STARTTLS(fd);
    CHECK_RC(mailtls_session_set_start_rung(s, MAILTLS_RUNG_TLS12, true), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_start_tls(s, NULL, 0), MAILTLS_RESULT_LADDER_EXHAUSTED);
    CHECK(c.connects == 0 && c.closes == 0);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK(mailtls_report_warning_count(r) == 0);
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK(!mailtls_session_tls_active(s));
    uintptr_t n = 0;
    CHECK_RC(mailtls_session_write(s, (const uint8_t *)"MAIL FROM:<a@b>\r\n", 17, &n), MAILTLS_RESULT_INVALID_STATE);
    CHECK_HAS(lookup(m, "127.0.0.1", z->port), "incompatible");
    CHECK(zoo_connections_are(z, 1));
}

TEST(starttls_after_refuses_null_a_server_session_and_sessions_it_does_not_fit) {
    CHECK_RC(mailtls_client_start_tls(NULL, NULL, 0), MAILTLS_RESULT_NULL_PARAMETER);
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_ENCRYPT, NULL, NULL);
    REQUIRE(cfg);
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    defer_fd(sv[0]);
    defer_fd(sv[1]);

    /* Bytes announced without a buffer. */
    mailtls_session *s = session_for(cfg, "mx.test", 25, NULL, sv[0]);
    REQUIRE(s);
    CHECK_RC(mailtls_client_start_tls(s, NULL, 3), MAILTLS_RESULT_NULL_PARAMETER);

    /* No transport yet: nothing starts, and the session stays usable. */
    mailtls_session *bare = client_session(cfg, "mx.test");
    REQUIRE(bare);
    CHECK_RC(mailtls_client_start_tls(bare, NULL, 0), MAILTLS_RESULT_INVALID_STATE);
    CHECK_HAS(mailtls_session_last_error(bare), "no transport");
    CHECK_RC(mailtls_session_set_start_rung(bare, MAILTLS_RUNG_COMPACT, true), MAILTLS_RESULT_OK);

    /* A server session. */
    const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
    REQUIRE(scfg);
    mailtls_session *srv = NULL;
    REQUIRE_RC(mailtls_server_new(scfg, MAILTLS_PROTO_SMTP, "127.0.0.1:2525", &srv), MAILTLS_RESULT_OK);
    defer_session(srv);
    CHECK_RC(mailtls_session_set_fd(srv, sv[1]), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_start_tls(srv, NULL, 0), MAILTLS_RESULT_INVALID_STATE);
    CHECK_HAS(mailtls_session_last_error(srv), "client sessions");

    /* Implicit TLS is negotiate's; policy none never starts TLS. */
    mailtls_session *imp = session_for(cfg, "mx.test", 465, NULL, sv[0]);
    REQUIRE(imp);
    CHECK_RC(mailtls_session_set_implicit_tls(imp, true), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_start_tls(imp, NULL, 0), MAILTLS_RESULT_INVALID_STATE);
    CHECK_HAS(mailtls_session_last_error(imp), "implicit TLS");
    mailtls_session *none = session_for(cfg_with(MAILTLS_POLICY_NONE, NULL, NULL), "mx.test", 25, NULL, sv[0]);
    REQUIRE(none);
    CHECK_RC(mailtls_client_start_tls(none, NULL, 0), MAILTLS_RESULT_INVALID_STATE);
    CHECK_HAS(mailtls_session_last_error(none), "policy is none");

    /* A session that negotiates by itself is not handed over half-way. */
    static const struct step script[] = {EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *neg = NULL;
    REQUIRE_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "mx.test", 25, &neg), MAILTLS_RESULT_OK);
    defer_session(neg);
    struct io_ctx *io = io_new(p->fd);
    io->eagain_alternate = 1;
    CHECK_RC(mailtls_session_set_io(neg, io_read, io_write, io), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(neg), MAILTLS_RESULT_WOULD_BLOCK);
    CHECK_RC(mailtls_client_start_tls(neg, NULL, 0), MAILTLS_RESULT_INVALID_STATE);
    CHECK_HAS(mailtls_session_last_error(neg), "negotiates by itself");
    peer_close(p);
    CHECK_PEER_OK(p);
}

/* An implicit-TLS SMTP server (RFC 8314, port 465): the handshake first, then the
 * greeting, EHLO and QUIT inside TLS. */
static void implicit_smtp_server(int fd, void *arg, struct shared *sh) {
    const mailtls_config *cfg = arg;
    mailtls_session *s = NULL;
    if (mailtls_server_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1:1", &s) != MAILTLS_RESULT_OK ||
        mailtls_session_set_fd(s, fd) != MAILTLS_RESULT_OK)
        child_fail(sh, "server session");
    mailtls_result rc = mailtls_server_start_implicit(s);
    if (rc != MAILTLS_RESULT_OK)
        child_fail(sh, "start_implicit: %s", mailtls_result_name(rc));
    struct linebuf lb = {0};
    char line[512];
    if (session_write_all(s, "220 implicit.test ESMTP\r\n", 25) != MAILTLS_RESULT_OK)
        child_fail(sh, "greeting");
    while (session_read_line(s, &lb, line, sizeof line) == MAILTLS_RESULT_OK) {
        const char *reply = strncmp(line, "QUIT", 4) == 0 ? "221 bye\r\n" : "250 implicit.test\r\n";
        if (session_write_all(s, reply, strlen(reply)) != MAILTLS_RESULT_OK)
            child_fail(sh, "reply");
        if (reply[0] == '2' && reply[1] == '2')
            break;
    }
    mailtls_session_close(s);
    mailtls_session_free(s);
}

TEST(starttls_after_implicit_tls_handshake_right_after_connect_then_the_greeting_inside_tls) {
    const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
    const mailtls_memory *m = memory_new();
    const mailtls_config *cfg = cfg_with(MAILTLS_POLICY_ENCRYPT, m, NULL);
    REQUIRE(scfg && m && cfg);
    peer_t *p = peer_start(VIA_TCP, implicit_smtp_server, (void *)scfg);
    REQUIRE(p);
    /* The application connected to port 465 and reads nothing before the handshake. */
    mailtls_session *s = session_for(cfg, "127.0.0.1", 465, "localhost", p->fd);
    REQUIRE(s);
    REQUIRE_RC(mailtls_client_start_tls(s, NULL, 0), MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_STREQ(mailtls_report_tls_version(r), "TLSv1.3");
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK_HAS(lookup(m, "127.0.0.1", 465), "tolerant=modern@");
    struct linebuf lb = {0};
    char line[512];
    CHECK_RC(session_read_line(s, &lb, line, sizeof line), MAILTLS_RESULT_OK);
    CHECK(strncmp(line, "220 implicit.test", 17) == 0);
    check_ehlo_inside_tls(s, "250 implicit.test");
    CHECK_PEER_OK(p);
}
