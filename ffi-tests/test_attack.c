/* Injection and server-side STARTTLS rules: reply injection after the 220 (client),
 * command injection after STARTTLS (server), a second STARTTLS, require-TLS mode, the
 * state reset after TLS, and a server without a certificate. */
#include "support.h"

#include <sys/socket.h>
#include <unistd.h>

/* ---- reply injection (client side) ---- */

static void reply_injection(const struct step *script, size_t max_chunk, int hello_expected) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_session(cfg, "mx.test");
    REQUIRE(s);
    struct io_ctx *ctx = io_new(p->fd);
    ctx->max_chunk = max_chunk;
    REQUIRE_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
    CHECK_RC(negotiate_all(s, NULL, NULL), MAILTLS_RESULT_REPLY_INJECTION);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER); /* even under may: never plaintext after an attack */
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_REPLY_INJECTION);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(r), "validation-failure");
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_ATTACK);
    /* No handshake completed. */
    CHECK(!mailtls_session_tls_active(s));
    CHECK(mailtls_report_tls_version(r) == NULL);
    CHECK(mailtls_report_cipher(r) == NULL);
    CHECK(mailtls_report_peer_cert_sha256(r) == NULL);
    CHECK(mailtls_report_capability_count(r) == 0);
    const char *err = mailtls_session_last_error(s);
    CHECK(err != NULL && err[0] != 0);
    CHECK_PEER_OK(p);
    /* Whether a ClientHello went out depends on when the injection was seen. */
    int hello = memchr(p->sh->recv, 0x16, p->sh->nrecv) != NULL;
    if (hello != hello_expected)
        test_fail(__FILE__, __LINE__, "the peer %s a TLS ClientHello: %s", hello ? "received" : "did not receive",
                  show_bytes(p->sh->recv, p->sh->nrecv));
}

TEST(reply_injected_in_the_same_write_as_220_is_reply_injection) {
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("220 go\r\n250 injected\r\n"),
                                         EXPECT_EOF, END};
    reply_injection(script, 0, 0);
}

TEST(partial_injected_line_after_220_is_reply_injection) {
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("220 go\r\n25"), EXPECT_EOF, END};
    reply_injection(script, 0, 0);
}

TEST(reply_injected_in_a_later_write_where_server_hello_belongs_is_reply_injection) {
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("220 go\r\n"), READ_SOME,
                                         SEND("250 injected\r\n"), EXPECT_EOF, END};
    reply_injection(script, 0, 1);
}

TEST(reply_injection_read_one_byte_at_a_time_is_reply_injection) {
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("220 go\r\n250 injected\r\n"),
                                         EXPECT_EOF, END};
    reply_injection(script, 1, 1);
}

/* ---- command injection (server side) ---- */

/* The raw client's opening: greeting, EHLO (STARTTLS offered). */
static int raw_opening(int fd) {
    char reply[2048];
    if (!CHECK(raw_reply(fd, reply, sizeof reply) == 220))
        return 0;
    raw_send(fd, "EHLO x\r\n");
    if (!CHECK(raw_reply(fd, reply, sizeof reply) == 250))
        return 0;
    return CHECK_CONTAINS(reply, strlen(reply), "250-STARTTLS\r\n");
}

/* After raw bytes up to STARTTLS, a library client takes over the same connection:
 * the plaintext dialogue it expects is served from canned bytes and its own EHLO and
 * STARTTLS are swallowed, so what reaches the server is the handshake and the
 * encrypted dialogue. Returns the negotiated session, or NULL. */
static mailtls_session *library_client_takes_over(int fd, struct io_ctx **ctxp) {
    static const char canned[] = "220 fixture.test ESMTP\r\n250-fixture.test\r\n250 STARTTLS\r\n";
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    mailtls_session *s = client_session(cfg, "localhost");
    if (s == NULL)
        return NULL;
    struct io_ctx *ctx = io_new(fd);
    ctx->canned = canned;
    ctx->ncanned = strlen(canned);
    ctx->swallow_until_starttls = 1;
    *ctxp = ctx;
    if (!CHECK_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK))
        return NULL;
    mailtls_result rc = negotiate_all(s, NULL, NULL);
    if (!CHECK_RC(rc, MAILTLS_RESULT_OK)) {
        printf("    client: %s\n", mailtls_session_last_error(s));
        return NULL;
    }
    return s;
}

static void pipelined_command_is_discarded(int separate_segment) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", NULL, 0);
    REQUIRE(o.cfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    REQUIRE(raw_opening(p->fd));
    if (separate_segment) {
        raw_send(p->fd, "STARTTLS\r\n");
        usleep(100 * 1000);
        raw_send(p->fd, "MAIL FROM:<a@b>\r\n");
    } else {
        raw_send(p->fd, "STARTTLS\r\nMAIL FROM:<a@b>\r\n"); /* one segment */
    }
    struct io_ctx *ctx = NULL;
    mailtls_session *s = library_client_takes_over(p->fd, &ctx);
    REQUIRE(s);
    /* Before the handshake the server sent its 220 and nothing else (a 250 to the
     * injected MAIL would be there, and the client would have refused it). */
    const char *go = "220 2.0.0 Ready to start TLS\r\n";
    CHECK(ctx->ntap > strlen(go) && memcmp(ctx->tap, go, strlen(go)) == 0 && ctx->tap[strlen(go)] == 0x16);
    struct linebuf lb = {0};
    char reply[256];
    CHECK_RC(session_command(s, &lb, "MAIL FROM:<c@d>\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "250 2.1.0 sender ok\r\n");
    CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_PEER_OK(p);
    CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_OK);
    CHECK(p->sh->discarded == strlen("MAIL FROM:<a@b>\r\n"));
    CHECK(p->sh->mail_executed == 1); /* only the encrypted one */
    CHECK_NOT_CONTAINS(p->sh->log, p->sh->nlog, "C: MAIL FROM:<a@b>");
    CHECK_CONTAINS(p->sh->log, p->sh->nlog, "STARTTLS: ok\nC: EHLO client.test\nC: MAIL FROM:<c@d>\n");
}

TEST(server_discards_command_pipelined_with_starttls_and_tls_still_works) {
    pipelined_command_is_discarded(0);
}

TEST(server_discards_plaintext_command_sent_after_starttls_before_the_handshake) {
    pipelined_command_is_discarded(1);
}

TEST(server_with_close_action_refuses_pipelined_command_without_sending_220) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_injection_action(b, MAILTLS_INJECTION_ACTION_CLOSE), MAILTLS_RESULT_OK);
    o.cfg = build_config(b);
    REQUIRE(o.cfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    REQUIRE(raw_opening(p->fd));
    raw_send(p->fd, "STARTTLS\r\nMAIL FROM:<a@b>\r\n");
    static unsigned char rest[4096];
    size_t n = raw_read_to_eof(p->fd, rest, sizeof rest);
    CHECK(n == 0); /* no 220, nothing: the server closed */
    CHECK_NOT_CONTAINS(rest, n, "220");
    CHECK_PEER_OK(p);
    CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_COMMAND_INJECTION);
    CHECK(!p->sh->tls_was_active);
    CHECK(p->sh->mail_executed == 0);
    CHECK(p->sh->outcome == MAILTLS_OUTCOME_FAIL);
}

/* ---- a second STARTTLS under TLS ---- */

static void second_starttls_refused(int via_library) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", NULL, 0);
    o.second_starttls_via_library = via_library;
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(o.cfg && cfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    mailtls_session *s = client_session(cfg, "localhost");
    REQUIRE(s);
    struct io_ctx *ctx = io_new(p->fd);
    REQUIRE_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
    REQUIRE_RC(negotiate_all(s, NULL, NULL), MAILTLS_RESULT_OK);
    struct linebuf lb = {0};
    char reply[256];
    CHECK_RC(session_command(s, &lb, "STARTTLS\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "554 5.5.1 Error: TLS already active\r\n");
    /* It came encrypted: the text is nowhere in the raw bytes. */
    CHECK_NOT_CONTAINS(ctx->tap, ctx->ntap, "TLS already active");
    CHECK_NOT_CONTAINS(ctx->tap, ctx->ntap, "554");
    /* The session goes on. */
    CHECK_RC(session_command(s, &lb, "NOOP\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "250 2.0.0 ok\r\n");
    CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_PEER_OK(p);
    CHECK_RC(p->sh->second_starttls_rc, MAILTLS_RESULT_TLS_ALREADY_ACTIVE);
}

TEST(second_starttls_is_refused_by_check_command_with_encrypted_reply) {
    second_starttls_refused(0);
}

TEST(second_starttls_passed_to_server_starttls_is_refused_with_encrypted_reply) {
    second_starttls_refused(1);
}

/* ---- require-TLS ---- */

TEST(require_tls_refuses_mail_before_starttls_with_530_but_allows_noop_ehlo_quit) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_require_tls(b, true), MAILTLS_RESULT_OK);
    o.cfg = build_config(b);
    REQUIRE(o.cfg);
    peer_t *p = peer_start(VIA_TCP, fixture_server, &o);
    REQUIRE(p);
    int fd = p->fd;
    char reply[2048];
    CHECK(raw_reply(fd, reply, sizeof reply) == 220);
    raw_send(fd, "MAIL FROM:<a@b>\r\n");
    CHECK(raw_reply(fd, reply, sizeof reply) == 530);
    CHECK(strncmp(reply, "530 5.7.0 ", 10) == 0);
    raw_send(fd, "NOOP\r\n");
    CHECK(raw_reply(fd, reply, sizeof reply) == 250);
    raw_send(fd, "EHLO x\r\n");
    CHECK(raw_reply(fd, reply, sizeof reply) == 250);
    CHECK_CONTAINS(reply, strlen(reply), "STARTTLS");
    raw_send(fd, "RCPT TO:<b@c>\r\n");
    CHECK(raw_reply(fd, reply, sizeof reply) == 530);
    raw_send(fd, "DATA\r\n");
    CHECK(raw_reply(fd, reply, sizeof reply) == 530);
    raw_send(fd, "QUIT\r\n");
    CHECK(raw_reply(fd, reply, sizeof reply) == 221);
    CHECK_PEER_OK(p);
    CHECK(p->sh->mail_executed == 0);
    CHECK_CONTAINS(p->sh->log, p->sh->nlog, "C: MAIL FROM:<a@b>\nR: tls-required\n");
    CHECK_CONTAINS(p->sh->log, p->sh->nlog, "C: RCPT TO:<b@c>\nR: tls-required\nC: DATA\nR: tls-required\n");
}

/* A library client in the child: negotiates TLS, then MAIL and QUIT. */
struct client_args {
    const mailtls_config *cfg;
};

static void client_child(int fd, void *arg, struct shared *sh) {
    struct client_args *a = arg;
    mailtls_session *s = NULL;
    if (mailtls_client_new(a->cfg, MAILTLS_PROTO_SMTP, "localhost", 25, &s) != MAILTLS_RESULT_OK)
        child_fail(sh, "client_new");
    mailtls_session_set_fd(s, fd);
    mailtls_result rc = mailtls_client_negotiate(s);
    if (rc != MAILTLS_RESULT_OK) {
        child_failf(sh, "client negotiate: %s: %s", mailtls_result_name(rc), mailtls_session_last_error(s));
    } else {
        struct linebuf lb = {0};
        char reply[256];
        rc = session_command(s, &lb, "MAIL FROM:<a@b>\r\n", reply, sizeof reply);
        shared_log(sh, "MAIL: %s %s", mailtls_result_name(rc), reply);
        rc = session_command(s, &lb, "QUIT\r\n", reply, sizeof reply);
        shared_log(sh, "QUIT: %s %s", mailtls_result_name(rc), reply);
        /* Stay until the server's close_notify. */
        rc = session_read_line(s, &lb, reply, sizeof reply);
        shared_log(sh, "END: %s\n", mailtls_result_name(rc));
    }
    mailtls_session_free(s);
}

static mailtls_result server_read_line(mailtls_session *s, struct linebuf *lb, char *out, size_t cap) {
    mailtls_result rc = session_read_line(s, lb, out, cap);
    size_t l = strlen(out);
    while (l > 0 && (out[l - 1] == '\n' || out[l - 1] == '\r'))
        out[--l] = 0;
    return rc;
}

TEST(after_starttls_commands_before_the_new_ehlo_need_state_reset_then_are_allowed) {
    static struct client_args a;
    a.cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b && a.cfg);
    REQUIRE_RC(mailtls_config_builder_set_require_tls(b, true), MAILTLS_RESULT_OK);
    const mailtls_config *scfg = build_config(b);
    REQUIRE(scfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, client_child, &a);
    REQUIRE(p);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_server_new(scfg, MAILTLS_PROTO_SMTP, "peer", &s), MAILTLS_RESULT_OK);
    defer_session(s);
    REQUIRE_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK);
    char line[1024];
    raw_send(p->fd, "220 parent.test ESMTP\r\n");
    REQUIRE(raw_line(p->fd, line, sizeof line) > 0);
    CHECK(strncmp(line, "EHLO client.test", 16) == 0);
    CHECK_RC(mailtls_server_check_command(s, (const uint8_t *)line, strlen(line)), MAILTLS_RESULT_OK);
    CHECK(!mailtls_server_reset_required(s));
    REQUIRE(mailtls_server_offer_starttls(s));
    raw_send(p->fd, "250-parent.test\r\n250 STARTTLS\r\n");
    REQUIRE(raw_line(p->fd, line, sizeof line) > 0);
    CHECK_STREQ(line, "STARTTLS\r\n");
    CHECK_RC(mailtls_server_check_command(s, (const uint8_t *)line, strlen(line)), MAILTLS_RESULT_OK);
    REQUIRE_RC(mailtls_server_starttls(s, NULL, 0), MAILTLS_RESULT_OK);
    CHECK(mailtls_session_tls_active(s));
    CHECK(!mailtls_server_offer_starttls(s));
    CHECK(mailtls_server_reset_required(s));
    /* MAIL before the client's new EHLO: refused, with 503. */
    static const char mail[] = "MAIL FROM:<early@b>";
    CHECK_RC(mailtls_server_check_command(s, (const uint8_t *)mail, strlen(mail)), MAILTLS_RESULT_STATE_RESET_REQUIRED);
    const char *r503 = mailtls_server_reply(s, MAILTLS_RESULT_STATE_RESET_REQUIRED);
    CHECK(r503 != NULL && strncmp(r503, "503 ", 4) == 0);
    CHECK_RC(mailtls_server_check_command(s, (const uint8_t *)"NOOP", 4), MAILTLS_RESULT_OK);
    CHECK(mailtls_server_reset_required(s));
    /* The client's real EHLO, decrypted, clears it. */
    struct linebuf lb = {0};
    REQUIRE_RC(server_read_line(s, &lb, line, sizeof line), MAILTLS_RESULT_OK);
    CHECK_STREQ(line, "EHLO client.test");
    CHECK_RC(mailtls_server_check_command(s, (const uint8_t *)line, strlen(line)), MAILTLS_RESULT_OK);
    CHECK(!mailtls_server_reset_required(s));
    REQUIRE_RC(session_write_all(s, "250-parent.test\r\n250 AUTH PLAIN\r\n", 33), MAILTLS_RESULT_OK);
    REQUIRE_RC(server_read_line(s, &lb, line, sizeof line), MAILTLS_RESULT_OK);
    CHECK_STREQ(line, "MAIL FROM:<a@b>");
    CHECK_RC(mailtls_server_check_command(s, (const uint8_t *)line, strlen(line)), MAILTLS_RESULT_OK);
    REQUIRE_RC(session_write_all(s, "250 2.1.0 ok\r\n", 14), MAILTLS_RESULT_OK);
    REQUIRE_RC(server_read_line(s, &lb, line, sizeof line), MAILTLS_RESULT_OK);
    CHECK_STREQ(line, "QUIT");
    REQUIRE_RC(session_write_all(s, "221 2.0.0 bye\r\n", 15), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_close(s), MAILTLS_RESULT_OK);
    CHECK_PEER_OK(p);
    CHECK_CONTAINS(p->sh->log, p->sh->nlog, "MAIL: ok 250 2.1.0 ok\r\nQUIT: ok 221 2.0.0 bye\r\nEND: closed\n");
}

TEST(server_without_certificate_does_not_offer_starttls_and_answers_454) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg(NULL, NULL, 0);
    REQUIRE(o.cfg);
    CHECK(!mailtls_config_server_tls_ready(o.cfg));
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    char reply[2048];
    CHECK(raw_reply(p->fd, reply, sizeof reply) == 220);
    raw_send(p->fd, "EHLO x\r\n");
    CHECK(raw_reply(p->fd, reply, sizeof reply) == 250);
    CHECK_NOT_CONTAINS(reply, strlen(reply), "STARTTLS");
    raw_send(p->fd, "STARTTLS\r\n");
    CHECK(raw_reply(p->fd, reply, sizeof reply) == 454);
    CHECK(strncmp(reply, "454 4.7.0 ", 10) == 0);
    raw_send(p->fd, "NOOP\r\n");
    CHECK(raw_reply(p->fd, reply, sizeof reply) == 250);
    raw_send(p->fd, "QUIT\r\n");
    CHECK(raw_reply(p->fd, reply, sizeof reply) == 221);
    CHECK_PEER_OK(p);
    CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_TLS_UNAVAILABLE);
}

TEST(server_sees_peer_closed_when_client_hangs_up_mid_handshake) {
    const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
    REQUIRE(scfg);
    static const struct step script[] = {EXPECT("220 "), SEND("STARTTLS\r\n"), EXPECT("220 2.0.0"),
                                         SEND("\x16\x03\x01\x00\x50"), CLOSE, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_server_new(scfg, MAILTLS_PROTO_SMTP, "peer", &s), MAILTLS_RESULT_OK);
    defer_session(s);
    REQUIRE_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK);
    raw_send(p->fd, "220 parent.test ESMTP\r\n");
    char line[256];
    REQUIRE(raw_line(p->fd, line, sizeof line) > 0);
    CHECK_STREQ(line, "STARTTLS\r\n");
    CHECK_RC(mailtls_server_starttls(s, NULL, 0), MAILTLS_RESULT_PEER_CLOSED);
    CHECK(!mailtls_session_tls_active(s));
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_FAIL);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_PEER_CLOSED);
    CHECK(mailtls_session_last_error(s)[0] != 0);
    CHECK_PEER_OK(p);
}
