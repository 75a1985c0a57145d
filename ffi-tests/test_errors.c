/* Peers that close, overflow limits, refuse the session or stay silent, and a TLS peer
 * that breaks the record layer after the handshake. */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long ms_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Runs a client (policy, optional builder tweak) against a script; checks the result,
 * the outcome DEFER and the reason. Returns the peer for more checks. */
static peer_t *client_fails(const mailtls_config *cfg, const struct step *script, mailtls_result expected) {
    if (cfg == NULL)
        return NULL;
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    if (p == NULL)
        return NULL;
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    if (s == NULL)
        return NULL;
    CHECK_RC(mailtls_client_negotiate(s), expected);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(r), expected);
    CHECK(!mailtls_session_tls_active(s));
    CHECK(mailtls_session_last_error(s)[0] != 0);
    /* A failed negotiation stays failed: calling again gives the same code. */
    CHECK_RC(mailtls_client_negotiate(s), expected);
    return p;
}

TEST(peer_closing_in_the_middle_of_a_multiline_reply_is_peer_closed) {
    static const struct step script[] = {SEND("220 mx.test ESMTP\r\n"), EXPECT("EHLO"), SEND("250-first\r\n"), CLOSE,
                                         END};
    peer_t *p = client_fails(client_cfg(MAILTLS_POLICY_MAY, NULL), script, MAILTLS_RESULT_PEER_CLOSED);
    CHECK_PEER_OK(p);
}

/* Without a connector the client cannot retry by itself: a first flight that failed
 * like intolerance ends in RETRY_NEEDED, with the cause in the attempt and the rung
 * for the next connection in the report. */
static void check_asks_for_retry(mailtls_session *s, mailtls_result cause, uint32_t class, int32_t next_rung) {
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_RETRY_NEEDED);
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK_RC(mailtls_report_attempt_result(r, 0), cause);
    CHECK(mailtls_report_attempt_class(r, 0) == class);
    CHECK(mailtls_report_attempt_rung(r, 0) == (int32_t)MAILTLS_RUNG_MODERN);
    CHECK(mailtls_report_retry_rung(r) == next_rung);
    CHECK(!mailtls_session_tls_active(s));
}

TEST(peer_closing_in_the_middle_of_the_tls_handshake_asks_for_a_retry_at_compact) {
    /* The peer reads the ClientHello, then hangs up. */
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("220 go\r\n"), READ_SOME, DRAIN(100), CLOSE, END};
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(cfg);
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_RETRY_NEEDED);
    check_asks_for_retry(s, MAILTLS_RESULT_PEER_CLOSED, MAILTLS_FAILURE_CLASS_INTOLERANCE, MAILTLS_RUNG_COMPACT);
    REQUIRE(CHECK_PEER_OK(p));
    const char *before = "EHLO client.test\r\nSTARTTLS\r\n";
    size_t k = strlen(before);
    CHECK(p->sh->nrecv > k + 5 && memcmp(p->sh->recv, before, k) == 0 && p->sh->recv[k] == 0x16);
}

TEST(reply_line_of_10000_bytes_is_line_too_long) {
    static char greeting[10010];
    memcpy(greeting, "220 ", 4);
    memset(greeting + 4, 'x', 10000);
    memcpy(greeting + 10004, "\r\n", 3);
    struct step script[] = {SEND(greeting), EXPECT_EOF, END};
    peer_t *p = client_fails(client_cfg(MAILTLS_POLICY_MAY, NULL), script, MAILTLS_RESULT_LINE_TOO_LONG);
    CHECK_PEER_OK(p);
    CHECK(p && p->sh->nrecv == 0); /* not even an EHLO */
}

TEST(reply_with_more_lines_than_the_limit_is_too_many_lines) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_limits(b, 0, 5, 0), MAILTLS_RESULT_OK);
    static const struct step script[] = {
        SEND("220 mx.test ESMTP\r\n"), EXPECT("EHLO"),
        SEND("250-a\r\n250-b\r\n250-c\r\n250-d\r\n250-e\r\n250-f\r\n250-g\r\n250 STARTTLS\r\n"), EXPECT_EOF, END};
    peer_t *p = client_fails(build_config(b), script, MAILTLS_RESULT_TOO_MANY_LINES);
    CHECK_PEER_OK(p);
}

TEST(reply_with_exactly_the_line_limit_is_accepted) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_limits(b, 0, 5, 0), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    static const struct step script[] = {SEND("220 mx.test ESMTP\r\n"), EXPECT("EHLO"),
                                         SEND("250-a\r\n250-b\r\n250-c\r\n250-d\r\n250 e\r\n"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_PLAINTEXT);
    CHECK_PEER_OK(p);
}

TEST(more_plaintext_than_the_pre_tls_limit_is_too_much_data) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_limits(b, 0, 0, 1024), MAILTLS_RESULT_OK);
    static char ehlo[4096];
    size_t n = 0;
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(ehlo + n, sizeof ehlo - n, "250-X-PADDING-%02d-aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", i);
    snprintf(ehlo + n, sizeof ehlo - n, "250 STARTTLS\r\n");
    struct step script[] = {SEND("220 mx.test ESMTP\r\n"), EXPECT("EHLO"), SEND(ehlo), EXPECT_EOF, END};
    peer_t *p = client_fails(build_config(b), script, MAILTLS_RESULT_TOO_MUCH_DATA);
    CHECK_PEER_OK(p);
}

TEST(greeting_554_is_greeting_refused_and_the_client_quits) {
    static const struct step script[] = {SEND("554 5.3.2 go away\r\n"), EXPECT("QUIT"), EXPECT_EOF, END};
    peer_t *p = client_fails(client_cfg(MAILTLS_POLICY_MAY, NULL), script, MAILTLS_RESULT_GREETING_REFUSED);
    REQUIRE(CHECK_PEER_OK(p));
    CHECK(p->sh->nrecv == 6 && memcmp(p->sh->recv, "QUIT\r\n", 6) == 0);
}

TEST(garbage_instead_of_a_reply_is_protocol_error) {
    static const struct step script[] = {SEND("hello there\r\n"), EXPECT_EOF, END};
    peer_t *p = client_fails(client_cfg(MAILTLS_POLICY_MAY, NULL), script, MAILTLS_RESULT_PROTOCOL);
    CHECK_PEER_OK(p);
}

TEST(server_that_never_greets_times_out_within_the_step_timeout_in_fd_mode) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_timeout_ms(b, 300), MAILTLS_RESULT_OK);
    static const struct step script[] = {EXPECT_EOF, END};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    peer_t *p = client_fails(build_config(b), script, MAILTLS_RESULT_TIMEOUT);
    long el = ms_since(&t0);
    CHECK(el >= 280);
    if (el > 3000)
        test_fail(__FILE__, __LINE__, "a 300 ms timeout took %ld ms", el);
    CHECK_PEER_OK(p);
}

TEST(server_that_stalls_the_handshake_times_out_in_fd_mode_and_asks_for_compact) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_ENCRYPT);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_timeout_ms(b, 300), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("220 go\r\n"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_RETRY_NEEDED);
    long el = ms_since(&t0);
    if (el > 3000)
        test_fail(__FILE__, __LINE__, "a 300 ms timeout took %ld ms", el);
    /* A hang waiting for the ServerHello at the top rung: the large hello is the suspect. */
    check_asks_for_retry(s, MAILTLS_RESULT_TIMEOUT, MAILTLS_FAILURE_CLASS_TIMEOUT, MAILTLS_RUNG_COMPACT);
    CHECK_PEER_OK(p);
}

TEST(read_callback_returning_etimedout_is_timeout) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    /* The peer would greet, but the callback fails before reading anything. */
    static const struct step script[] = {EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_session(cfg, "mx.test");
    REQUIRE(s);
    struct io_ctx *ctx = io_new(p->fd);
    ctx->read_errno = ETIMEDOUT;
    REQUIRE_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_TIMEOUT);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_TIMEOUT);
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_TIMEOUT);
    CHECK(ctx->rcalls >= 1);
    CHECK_PEER_OK(p);
}

TEST(read_callback_returning_another_errno_is_io_error) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    /* The peer would greet, but the callback fails before reading anything. */
    static const struct step script[] = {EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_session(cfg, "mx.test");
    REQUIRE(s);
    struct io_ctx *ctx = io_new(p->fd);
    ctx->read_errno = ECONNRESET;
    REQUIRE_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_IO);
    CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_DEFER);
    CHECK_PEER_OK(p);
}

TEST(callbacks_that_would_block_forever_time_out_on_a_later_continue) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_timeout_ms(b, 300), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    static const struct step script[] = {EXPECT_EOF, END}; /* never greets */
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_session(cfg, "mx.test");
    REQUIRE(s);
    struct io_ctx *ctx = io_new(p->fd);
    ctx->read_errno = EAGAIN;
    REQUIRE_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mailtls_result rc = mailtls_client_negotiate(s);
    CHECK_RC(rc, MAILTLS_RESULT_WOULD_BLOCK);
    CHECK(mailtls_session_wants_read(s) && !mailtls_session_wants_write(s));
    while (rc == MAILTLS_RESULT_WOULD_BLOCK && ms_since(&t0) < 3000) {
        usleep(20 * 1000);
        rc = mailtls_session_continue(s);
    }
    CHECK_RC(rc, MAILTLS_RESULT_TIMEOUT);
    long el = ms_since(&t0);
    CHECK(el >= 280 && el < 3000);
    CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_DEFER);
    CHECK_PEER_OK(p);
}

TEST(server_handshake_with_a_silent_client_times_out) {
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_timeout_ms(b, 300), MAILTLS_RESULT_OK);
    const mailtls_config *scfg = build_config(b);
    REQUIRE(scfg);
    static const struct step script[] = {EXPECT("220 2.0.0"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_server_new(scfg, MAILTLS_PROTO_SMTP, "peer", &s), MAILTLS_RESULT_OK);
    defer_session(s);
    REQUIRE_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_RC(mailtls_server_starttls(s, NULL, 0), MAILTLS_RESULT_TIMEOUT);
    long el = ms_since(&t0);
    CHECK(el >= 280 && el < 3000);
    CHECK(!mailtls_session_tls_active(s));
    CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_FAIL);
    CHECK_PEER_OK(p);
}

TEST(failure_report_records_timings_and_one_attempt) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_timeout_ms(b, 300), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    /* Greets, then never answers the EHLO. */
    static const struct step script[] = {SEND("220 mx.test\r\n"), EXPECT("EHLO"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_TIMEOUT);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK_RC(mailtls_report_attempt_result(r, 0), MAILTLS_RESULT_TIMEOUT);
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_TIMEOUT);
    uint64_t total = mailtls_report_time_ms(r, 2);
    CHECK(total >= 250 && total < 3000);
    CHECK(mailtls_report_time_ms(r, 1) == 0); /* no handshake */
    CHECK(mailtls_report_time_ms(r, 1) <= total && mailtls_report_time_ms(r, 0) <= total);
    CHECK_PEER_OK(p);
}

TEST(ehlo_refused_falls_back_to_helo_without_extensions) {
    static const struct step script[] = {SEND("220 old.test\r\n"), EXPECT("EHLO client.test"),
                                         SEND("502 5.5.2 what?\r\n"), EXPECT("HELO client.test"),
                                         SEND("250 old.test\r\n"), EXPECT("QUIT"), EXPECT_EOF, END};
    peer_t *p = client_fails(client_cfg(MAILTLS_POLICY_ENCRYPT, NULL), script, MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
    CHECK_PEER_OK(p);
}

/* A plaintext-phase failure happens before any ClientHello: it is not hello
 * intolerance ("the peer choked on the hello"), which the fallback ladder would
 * answer with a different hello. A close after the hello is. */
TEST(peer_closing_before_any_hello_is_not_classified_as_hello_intolerance) {
    static const struct step script[] = {SEND("220 mx.test ESMTP\r\n"), EXPECT("EHLO"), SEND("250-first\r\n"), CLOSE,
                                         END};
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(cfg);
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_PEER_CLOSED);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK(mailtls_report_attempt_rung(r, 0) == -1); /* no handshake began */
    uint32_t cls = mailtls_report_attempt_class(r, 0);
    if (cls == MAILTLS_FAILURE_CLASS_INTOLERANCE)
        test_fail(__FILE__, __LINE__, "no hello was sent, yet the attempt is classed INTOLERANCE (json: %s)",
                  mailtls_report_json(r));
    CHECK_PEER_OK(p);
}

TEST(peer_closing_after_the_hello_is_classified_as_hello_intolerance) {
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("220 go\r\n"), READ_SOME, DRAIN(100), CLOSE, END};
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(cfg);
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_RETRY_NEEDED);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK(mailtls_report_attempt_rung(r, 0) == (int32_t)MAILTLS_RUNG_MODERN);
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_INTOLERANCE);
    CHECK_PEER_OK(p);
}

TEST(report_json_escapes_quotes_and_controls_from_the_peer) {
    static const struct step script[] = {SEND("554 say \"hi\" \\ and\x01 bye\r\n"), EXPECT("QUIT"), EXPECT_EOF, END};
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_GREETING_REFUSED);
    const char *json = mailtls_report_json(mailtls_session_report(s));
    REQUIRE(json != NULL);
    CHECK_CONTAINS(json, strlen(json), "say \\\"hi\\\" \\\\ and");
    for (const char *c = json; *c; c++)
        if ((unsigned char)*c < 0x20) {
            test_fail(__FILE__, __LINE__, "raw control byte 0x%02x in the JSON: %s", *c, show_bytes(json, strlen(json)));
            break;
        }
    CHECK_PEER_OK(p);
}

TEST(lmtp_lhlo_refused_is_capability_refused_without_helo_fallback) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    static const struct step script[] = {SEND("220 lmtp.test LMTP\r\n"), EXPECT("LHLO client.test"),
                                         SEND("500 5.5.1 no\r\n"), EXPECT("QUIT"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_client_new(cfg, MAILTLS_PROTO_LMTP, "lmtp.test", 24, &s), MAILTLS_RESULT_OK);
    defer_session(s);
    REQUIRE_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_CAPABILITY_REFUSED);
    CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_DEFER);
    CHECK_PEER_OK(p);
    CHECK_NOT_CONTAINS(p->sh->recv, p->sh->nrecv, "HELO");
}

/* ---- errors after the handshake (mailtls-badpeer, a TLS 1.3 client writing its own records) ---- */

#ifndef BADPEER_BIN
#define BADPEER_BIN "../target/debug/mailtls-badpeer"
#endif

struct bad_run {
    mailtls_result rc;   /* of the read (or STARTTLS) that failed */
    char err[512];       /* the session's last error */
    char peer[1024];     /* the badpeer's JSON line */
};

/* A server through the header against `mailtls-badpeer MODE`: STARTTLS, reads until an
 * error, then closes as any server does. */
static struct bad_run serve_badpeer(const char *mode) {
    struct bad_run r;
    memset(&r, 0, sizeof r);
    r.rc = MAILTLS_RESULT_PANIC;
    const mailtls_config *cfg = server_cfg("localhost", NULL, 0);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (!cfg || l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0) {
        test_fail(__FILE__, __LINE__, "listen: %s", strerror(errno));
        return r;
    }
    defer_fd(l);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", ntohs(a.sin_port));
    int out[2];
    if (pipe(out) < 0)
        return r;
    const char *bin = getenv("MAILTLS_BADPEER") ? getenv("MAILTLS_BADPEER") : BADPEER_BIN;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        alarm(CHILD_ALARM_S);
        execl(bin, bin, mode, addr, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    defer_fd(out[0]);
    int c = accept(l, NULL, NULL);
    if (c < 0) {
        test_fail(__FILE__, __LINE__, "accept: %s", strerror(errno));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return r;
    }
    defer_fd(c);
    mailtls_session *s = NULL;
    if (CHECK_RC(mailtls_server_new(cfg, MAILTLS_PROTO_SMTP, "192.0.2.8:1025", &s), MAILTLS_RESULT_OK)) {
        CHECK_RC(mailtls_session_set_fd(s, c), MAILTLS_RESULT_OK);
        /* The client's last flight and its bad records may come in one read. */
        r.rc = mailtls_server_starttls(s, NULL, 0);
        uint8_t buf[256];
        size_t n;
        while (r.rc == MAILTLS_RESULT_OK)
            r.rc = mailtls_session_read(s, buf, sizeof buf, &n);
        snprintf(r.err, sizeof r.err, "%s", mailtls_session_last_error(s));
        mailtls_session_close(s);
        mailtls_session_free(s);
    }
    shutdown(c, SHUT_RDWR);
    size_t got = 0;
    ssize_t k;
    while (got < sizeof r.peer - 1 && (k = read(out[0], r.peer + got, sizeof r.peer - 1 - got)) > 0)
        got += (size_t)k;
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        test_fail(__FILE__, __LINE__, "%s %s: exit status %d (is it built? cargo build)", bin, mode, st);
    return r;
}

TEST(record_without_content_type_after_the_handshake_gets_unexpected_message_never_close_notify) {
    struct bad_run r = serve_badpeer("no-content-type");
    CHECK_RC(r.rc, MAILTLS_RESULT_TLS_RECORD);
    if (!strstr(r.err, "no content type") || strstr(r.err, "handshake failed"))
        test_fail(__FILE__, __LINE__, "last error: %s", r.err);
    if (!strstr(r.peer, "\"after\":[\"unexpected_message\"],\"undecryptable\":0"))
        test_fail(__FILE__, __LINE__, "the peer got: %s", r.peer);
}

TEST(application_data_inside_a_fragmented_key_update_gets_unexpected_message_never_close_notify) {
    struct bad_run r = serve_badpeer("interleaved-key-update");
    CHECK_RC(r.rc, MAILTLS_RESULT_TLS_RECORD);
    if (!strstr(r.err, "between the fragments of a handshake message"))
        test_fail(__FILE__, __LINE__, "last error: %s", r.err);
    if (!strstr(r.peer, "\"after\":[\"unexpected_message\"],\"undecryptable\":0"))
        test_fail(__FILE__, __LINE__, "the peer got: %s", r.peer);
}

TEST(a_whole_key_update_is_honoured_and_a_truncated_end_still_gets_close_notify) {
    struct bad_run r = serve_badpeer("key-update");
    CHECK_RC(r.rc, MAILTLS_RESULT_PEER_CLOSED);
    if (!strstr(r.peer, "\"after\":[\"close_notify\"]"))
        test_fail(__FILE__, __LINE__, "the peer got: %s", r.peer);
}
