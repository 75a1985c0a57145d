/* Client policies (none, may, encrypt, verify) with STARTTLS offered and not, and
 * the replies a server can give to STARTTLS (454, 554, 250, 354). */
#include "support.h"

#include "keys.h"

/* Every byte the peer got is plaintext: no TLS record (0x16 starts a ClientHello). */
static void check_no_tls_bytes(peer_t *p) {
    for (size_t i = 0; i < p->sh->nrecv; i++) {
        unsigned char c = p->sh->recv[i];
        if (!((c >= 0x20 && c < 0x7f) || c == '\r' || c == '\n')) {
            test_fail(__FILE__, __LINE__, "the peer received a non-text byte 0x%02x at %zu (a TLS hello?): %s", c, i,
                      show_bytes(p->sh->recv, p->sh->nrecv));
            return;
        }
    }
}

/* A NOOP through the (plaintext) session gets the peer's 250. */
static void check_noop_works(mailtls_session *s) {
    struct linebuf lb = {0};
    char reply[256];
    CHECK_RC(session_command(s, &lb, "NOOP\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "250 2.0.0 ok\r\n");
}

static const struct step plain_offer[] = {GREET_OFFER, EXPECT("NOOP"), SEND("250 2.0.0 ok\r\n"), EXPECT_EOF, END};
static const struct step plain_no_offer[] = {GREET_NO_OFFER, EXPECT("NOOP"), SEND("250 2.0.0 ok\r\n"), EXPECT_EOF,
                                             END};

static void plaintext_case(uint32_t policy, const struct step *script, int offered, uint32_t reason) {
    const mailtls_config *cfg = client_cfg(policy, NULL);
    REQUIRE(cfg);
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_PLAINTEXT);
    CHECK_RC(mailtls_report_reason(r), reason);
    CHECK(mailtls_report_starttls_offered(r) == (offered != 0));
    CHECK(!mailtls_session_tls_active(s));
    CHECK(mailtls_report_tls_version(r) == NULL);
    check_noop_works(s);
    CHECK_PEER_OK(p);
    CHECK_NOT_CONTAINS(p->sh->recv, p->sh->nrecv, "STARTTLS");
    CHECK_CONTAINS(p->sh->recv, p->sh->nrecv, "EHLO client.test\r\nNOOP\r\n");
}

TEST(policy_none_with_starttls_offered_stays_plaintext_and_never_sends_starttls) {
    plaintext_case(MAILTLS_POLICY_NONE, plain_offer, 1, MAILTLS_RESULT_OK);
}

TEST(policy_none_without_starttls_offered_stays_plaintext) {
    plaintext_case(MAILTLS_POLICY_NONE, plain_no_offer, 0, MAILTLS_RESULT_OK);
}

TEST(policy_may_without_starttls_offered_goes_plaintext_with_reason_not_offered) {
    plaintext_case(MAILTLS_POLICY_MAY, plain_no_offer, 0, MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
}

static void required_not_offered(uint32_t policy) {
    const char *ca = temp_file(UNRELATED_CERT_PEM);
    const mailtls_config *cfg = client_cfg(policy, ca);
    REQUIRE(cfg);
    static const struct step script[] = {GREET_NO_OFFER, EXPECT("QUIT"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(r), "starttls-not-supported");
    CHECK(!mailtls_report_starttls_offered(r));
    CHECK(mailtls_session_last_error(s)[0] != 0);
    /* The negotiation is over: the session carries no data. */
    uintptr_t n = 0;
    CHECK(mailtls_session_write(s, (const uint8_t *)"NOOP\r\n", 6, &n) != MAILTLS_RESULT_OK);
    CHECK_PEER_OK(p);
    CHECK_NOT_CONTAINS(p->sh->recv, p->sh->nrecv, "STARTTLS");
    CHECK_CONTAINS(p->sh->recv, p->sh->nrecv, "QUIT\r\n");
    CHECK_NOT_CONTAINS(p->sh->recv, p->sh->nrecv, "NOOP");
}

TEST(policy_encrypt_without_starttls_offered_defers_and_sends_quit) {
    required_not_offered(MAILTLS_POLICY_ENCRYPT);
}

TEST(policy_verify_without_starttls_offered_defers_and_sends_quit) {
    required_not_offered(MAILTLS_POLICY_VERIFY);
}

/* Offered: may, encrypt and verify all get TLS from the fixture. */
static void offered_gets_tls(uint32_t policy, int32_t verified) {
    static char pem[8192];
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", pem, sizeof pem);
    const mailtls_config *cfg = client_cfg(policy, policy == MAILTLS_POLICY_VERIFY ? temp_file(pem) : NULL);
    REQUIRE(o.cfg && cfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "localhost", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_TLS);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_OK);
    CHECK(mailtls_session_tls_active(s));
    if (verified != 2)
        CHECK(mailtls_report_peer_cert_verified(r) == verified);
    struct linebuf lb = {0};
    char reply[256];
    CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "221 2.0.0 bye\r\n");
    CHECK_PEER_OK(p);
    CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_OK);
}

TEST(policy_may_with_starttls_offered_gets_tls) {
    offered_gets_tls(MAILTLS_POLICY_MAY, 2);
}

TEST(policy_encrypt_with_starttls_offered_gets_tls) {
    offered_gets_tls(MAILTLS_POLICY_ENCRYPT, 2);
}

TEST(policy_verify_with_starttls_offered_and_trusted_cert_gets_verified_tls) {
    offered_gets_tls(MAILTLS_POLICY_VERIFY, 1);
}

/* ---- replies to STARTTLS ---- */

TEST(policy_may_with_454_to_starttls_continues_plaintext_on_same_connection) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("454 4.7.0 TLS not available\r\n"),
                                         EXPECT("NOOP"), SEND("250 2.0.0 ok\r\n"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_PLAINTEXT);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY);
    CHECK(mailtls_report_starttls_offered(r));
    CHECK(!mailtls_session_tls_active(s));
    check_noop_works(s);
    CHECK_PEER_OK(p);
    check_no_tls_bytes(p);
    CHECK_CONTAINS(p->sh->recv, p->sh->nrecv, "STARTTLS\r\nNOOP\r\n");
}

TEST(policy_may_with_554_to_starttls_continues_plaintext) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    static const struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND("554 5.7.0 no TLS for you\r\n"),
                                         EXPECT("NOOP"), SEND("250 2.0.0 ok\r\n"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_PLAINTEXT);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_STARTTLS_REFUSED_PERMANENT);
    check_noop_works(s);
    CHECK_PEER_OK(p);
    check_no_tls_bytes(p);
}

static void encrypt_refused(const char *reply, mailtls_result code, uint32_t outcome) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(cfg);
    struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND(reply), EXPECT("QUIT"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), code);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, outcome);
    CHECK_RC(mailtls_report_reason(r), code);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(r), "starttls-not-supported");
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_REFUSED);
    CHECK(mailtls_report_attempt_rung(r, 0) == -1); /* no handshake began */
    CHECK_PEER_OK(p);
    check_no_tls_bytes(p);
    CHECK_CONTAINS(p->sh->recv, p->sh->nrecv, "STARTTLS\r\nQUIT\r\n");
}

TEST(policy_encrypt_with_454_to_starttls_defers) {
    encrypt_refused("454 4.7.0 TLS not available\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY,
                    MAILTLS_OUTCOME_DEFER);
}

TEST(policy_encrypt_with_554_to_starttls_fails_permanently) {
    encrypt_refused("554 5.7.0 no TLS for you\r\n", MAILTLS_RESULT_STARTTLS_REFUSED_PERMANENT,
                    MAILTLS_OUTCOME_FAIL);
}

/* 250 or 354 to STARTTLS is never a go: no handshake, whatever the policy. */
static void bad_reply_never_handshakes(uint32_t policy, const char *reply) {
    const mailtls_config *cfg = client_cfg(policy, NULL);
    REQUIRE(cfg);
    struct step script[] = {GREET_OFFER, EXPECT("STARTTLS"), SEND(reply), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_STARTTLS_BAD_REPLY);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_STARTTLS_BAD_REPLY);
    CHECK(!mailtls_session_tls_active(s));
    CHECK(mailtls_report_tls_version(r) == NULL);
    CHECK(mailtls_report_attempt_rung(r, 0) == -1);
    CHECK_PEER_OK(p);
    check_no_tls_bytes(p);
    /* Nothing at all after STARTTLS: neither a hello nor a command a 354 would swallow as message text. */
    const char *tail = "EHLO client.test\r\nSTARTTLS\r\n";
    CHECK(p->sh->nrecv == strlen(tail) && memcmp(p->sh->recv, tail, strlen(tail)) == 0);
}

TEST(reply_250_to_starttls_never_handshakes_under_may_or_encrypt) {
    bad_reply_never_handshakes(MAILTLS_POLICY_MAY, "250 2.0.0 ok\r\n");
    bad_reply_never_handshakes(MAILTLS_POLICY_ENCRYPT, "250 2.0.0 ok\r\n");
}

TEST(reply_354_to_starttls_never_handshakes_under_may_or_encrypt) {
    bad_reply_never_handshakes(MAILTLS_POLICY_MAY, "354 go ahead\r\n");
    bad_reply_never_handshakes(MAILTLS_POLICY_ENCRYPT, "354 go ahead\r\n");
}
