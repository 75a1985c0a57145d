/* API hygiene: NULL handling, bad enum values, result strings, version, config
 * errors (key mismatch, garbage PEM, missing files), unsupported protocols, calls in
 * the wrong state, last-error messages. */
#include "support.h"

#include <errno.h>
#include <unistd.h>

#include "keys.h"

static const uint32_t all_codes[] = {
    MAILTLS_RESULT_OK, MAILTLS_RESULT_WOULD_BLOCK, MAILTLS_RESULT_CLOSED, MAILTLS_RESULT_NULL_PARAMETER,
    MAILTLS_RESULT_INVALID_PARAMETER, MAILTLS_RESULT_INVALID_STATE, MAILTLS_RESULT_PANIC,
    MAILTLS_RESULT_UNSUPPORTED, MAILTLS_RESULT_BUFFER_TOO_SMALL, MAILTLS_RESULT_CERTIFICATE_LOAD,
    MAILTLS_RESULT_PRIVATE_KEY_LOAD, MAILTLS_RESULT_KEY_MISMATCH, MAILTLS_RESULT_TRUST_ANCHORS,
    MAILTLS_RESULT_NO_CERTIFICATE, MAILTLS_RESULT_TLS_CONFIG, MAILTLS_RESULT_TICKET_KEY_LOAD, MAILTLS_RESULT_IO, MAILTLS_RESULT_TIMEOUT,
    MAILTLS_RESULT_PEER_CLOSED, MAILTLS_RESULT_CONNECT, MAILTLS_RESULT_PROTOCOL, MAILTLS_RESULT_LINE_TOO_LONG,
    MAILTLS_RESULT_TOO_MANY_LINES, MAILTLS_RESULT_TOO_MUCH_DATA, MAILTLS_RESULT_GREETING_REFUSED,
    MAILTLS_RESULT_STARTTLS_NOT_OFFERED, MAILTLS_RESULT_STARTTLS_REFUSED_TEMPORARY,
    MAILTLS_RESULT_STARTTLS_REFUSED_PERMANENT, MAILTLS_RESULT_STARTTLS_BAD_REPLY,
    MAILTLS_RESULT_REPLY_INJECTION, MAILTLS_RESULT_COMMAND_INJECTION, MAILTLS_RESULT_CAPABILITY_REFUSED,
    MAILTLS_RESULT_TLS_HANDSHAKE, MAILTLS_RESULT_CERTIFICATE_NAME_MISMATCH, MAILTLS_RESULT_CERTIFICATE_UNTRUSTED,
    MAILTLS_RESULT_CERTIFICATE_EXPIRED, MAILTLS_RESULT_CERTIFICATE_INVALID, MAILTLS_RESULT_TLS_ALERT_RECEIVED,
    MAILTLS_RESULT_TLS_RECORD, MAILTLS_RESULT_DOWNGRADE_DETECTED, MAILTLS_RESULT_TLS_UNAVAILABLE,
    MAILTLS_RESULT_TLS_ALREADY_ACTIVE, MAILTLS_RESULT_TLS_REQUIRED, MAILTLS_RESULT_STATE_RESET_REQUIRED,
};

TEST(every_result_code_has_a_description_and_a_distinct_name) {
    size_t n = sizeof all_codes / sizeof all_codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *d = mailtls_result_str(all_codes[i]);
        const char *name = mailtls_result_name(all_codes[i]);
        if (!CHECK(d != NULL && name != NULL))
            continue;
        if (d[0] == 0 || strcmp(d, "unknown result code") == 0)
            test_fail(__FILE__, __LINE__, "code %u has no description: \"%s\"", all_codes[i], d);
        if (name[0] == 0 || strcmp(name, "unknown") == 0)
            test_fail(__FILE__, __LINE__, "code %u has no name: \"%s\"", all_codes[i], name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(name, mailtls_result_name(all_codes[j])) == 0)
                test_fail(__FILE__, __LINE__, "codes %u and %u share the name \"%s\"", all_codes[j], all_codes[i],
                          name);
    }
    CHECK_STREQ(mailtls_result_name(MAILTLS_RESULT_REPLY_INJECTION), "reply-injection");
    CHECK_STREQ(mailtls_result_str(99999), "unknown result code");
    CHECK_STREQ(mailtls_result_name(99999), "unknown");
    CHECK(mailtls_result_str(3) != NULL);
}

TEST(library_version_equals_the_header_version) {
    const char *v = mailtls_version();
    REQUIRE(v != NULL);
    CHECK_STREQ(v, MAILTLS_VERSION_STRING);
    char composed[64];
    snprintf(composed, sizeof composed, "%d.%d.%d", MAILTLS_VERSION_MAJOR, MAILTLS_VERSION_MINOR,
             MAILTLS_VERSION_PATCH);
    CHECK_STREQ(v, composed);
}

TEST(outcome_names_are_the_documented_ones) {
    CHECK_STREQ(mailtls_outcome_name(MAILTLS_OUTCOME_PENDING), "pending");
    CHECK_STREQ(mailtls_outcome_name(MAILTLS_OUTCOME_TLS), "tls");
    CHECK_STREQ(mailtls_outcome_name(MAILTLS_OUTCOME_PLAINTEXT), "plaintext");
    CHECK_STREQ(mailtls_outcome_name(MAILTLS_OUTCOME_DEFER), "defer");
    CHECK_STREQ(mailtls_outcome_name(MAILTLS_OUTCOME_FAIL), "fail");
}

TEST(free_functions_accept_null) {
    mailtls_session_free(NULL);
    mailtls_config_free(NULL);
    mailtls_config_builder_free(NULL);
    /* Reaching here without a crash or a sanitizer report is the test; and a NULL
     * report pointer from a NULL session must be as harmless. */
    CHECK(mailtls_report_json(mailtls_session_report(NULL)) == NULL);
}

static int32_t dummy_read(void *ud, uint8_t *buf, uintptr_t len, uintptr_t *out_n) {
    (void)ud, (void)buf, (void)len, (void)out_n;
    return EIO;
}
static int32_t dummy_write(void *ud, const uint8_t *buf, uintptr_t len, uintptr_t *out_n) {
    (void)ud, (void)buf, (void)len, (void)out_n;
    return EIO;
}
static void dummy_log(void *ud, uint32_t level, const char *msg) { (void)ud, (void)level, (void)msg; }

TEST(null_arguments_give_null_parameter) {
    const uint32_t NP = MAILTLS_RESULT_NULL_PARAMETER;
    mailtls_config_builder *b = NULL;
    const mailtls_config *cfg = NULL;
    mailtls_session *s = NULL;
    char buf[64];
    uintptr_t n = 0;
    CHECK_RC(mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, NULL), NP);
    CHECK_RC(mailtls_config_builder_set_policy(NULL, MAILTLS_POLICY_MAY), NP);
    CHECK_RC(mailtls_config_builder_set_ca_file(NULL, "/x"), NP);
    CHECK_RC(mailtls_config_builder_set_certificate_pem(NULL, NULL, 0, NULL, 0), NP);
    CHECK_RC(mailtls_config_builder_set_certificate_files(NULL, "/a", "/b"), NP);
    CHECK_RC(mailtls_config_builder_generate_self_signed(NULL, "localhost", NULL, 0, NULL), NP);
    CHECK_RC(mailtls_config_builder_set_helo_name(NULL, "x"), NP);
    CHECK_RC(mailtls_config_builder_set_timeout_ms(NULL, 100), NP);
    CHECK_RC(mailtls_config_builder_set_limits(NULL, 0, 0, 0), NP);
    CHECK_RC(mailtls_config_builder_set_require_tls(NULL, true), NP);
    CHECK_RC(mailtls_config_builder_set_injection_action(NULL, 0), NP);
    CHECK_RC(mailtls_config_builder_set_log(NULL, dummy_log, NULL, MAILTLS_LOG_LEVEL_INFO), NP);
    CHECK_RC(mailtls_config_builder_build(NULL, &cfg), NP);
    CHECK_RC(mailtls_config_builder_last_error(NULL, buf, sizeof buf), NP);

    REQUIRE_RC(mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, &b), MAILTLS_RESULT_OK);
    defer_builder(b);
    CHECK_RC(mailtls_config_builder_set_ca_file(b, NULL), NP);
    CHECK_RC(mailtls_config_builder_set_certificate_pem(b, NULL, 10, (const uint8_t *)"k", 1), NP);
    CHECK_RC(mailtls_config_builder_set_certificate_files(b, NULL, "/b"), NP);
    CHECK_RC(mailtls_config_builder_set_certificate_files(b, "/a", NULL), NP);
    CHECK_RC(mailtls_config_builder_generate_self_signed(b, NULL, NULL, 0, NULL), NP);
    CHECK_RC(mailtls_config_builder_set_helo_name(b, NULL), NP);
    CHECK_RC(mailtls_config_builder_set_log(b, NULL, NULL, MAILTLS_LOG_LEVEL_INFO), NP);
    CHECK_RC(mailtls_config_builder_build(b, NULL), NP);
    CHECK_RC(mailtls_config_builder_set_helo_name(b, HELO_NAME), MAILTLS_RESULT_OK);
    cfg = build_config(b);
    REQUIRE(cfg);

    CHECK_RC(mailtls_client_new(NULL, MAILTLS_PROTO_SMTP, "h", 25, &s), NP);
    CHECK_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, NULL, 25, &s), NP);
    CHECK_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "h", 25, NULL), NP);
    CHECK_RC(mailtls_server_new(NULL, MAILTLS_PROTO_SMTP, "p", &s), NP);
    CHECK(s == NULL); /* outputs are written only on success */

    CHECK_RC(mailtls_session_set_server_name(NULL, "x"), NP);
    CHECK_RC(mailtls_session_set_io(NULL, dummy_read, dummy_write, NULL), NP);
    CHECK_RC(mailtls_session_set_fd(NULL, 0), NP);
    CHECK_RC(mailtls_client_negotiate(NULL), NP);
    CHECK_RC(mailtls_session_continue(NULL), NP);
    CHECK_RC(mailtls_session_read(NULL, (uint8_t *)buf, sizeof buf, &n), NP);
    CHECK_RC(mailtls_session_write(NULL, (const uint8_t *)"x", 1, &n), NP);
    CHECK_RC(mailtls_session_flush(NULL), NP);
    CHECK_RC(mailtls_session_close(NULL), NP);
    CHECK_RC(mailtls_server_check_command(NULL, (const uint8_t *)"NOOP", 4), NP);
    CHECK_RC(mailtls_server_starttls(NULL, NULL, 0), NP);
    CHECK(!mailtls_session_wants_read(NULL));
    CHECK(!mailtls_session_wants_write(NULL));
    CHECK(!mailtls_session_tls_active(NULL));
    CHECK(mailtls_session_last_error(NULL) == NULL);
    CHECK(mailtls_session_report(NULL) == NULL);
    CHECK(!mailtls_server_offer_starttls(NULL));
    CHECK(!mailtls_server_reset_required(NULL));
    CHECK(mailtls_server_reply(NULL, MAILTLS_RESULT_TLS_REQUIRED) == NULL);
    CHECK(!mailtls_config_server_tls_ready(NULL));

    s = client_session(cfg, "mx.test");
    REQUIRE(s);
    CHECK_RC(mailtls_session_set_server_name(s, NULL), NP);
    CHECK_RC(mailtls_session_set_io(s, NULL, dummy_write, NULL), NP);
    CHECK_RC(mailtls_session_set_io(s, dummy_read, NULL, NULL), NP);
    CHECK_RC(mailtls_session_read(s, NULL, 10, &n), NP);
    CHECK_RC(mailtls_session_read(s, (uint8_t *)buf, sizeof buf, NULL), NP);
    CHECK_RC(mailtls_session_write(s, NULL, 10, &n), NP);
    CHECK_RC(mailtls_session_write(s, (const uint8_t *)"x", 1, NULL), NP);

    /* Report accessors with NULL. */
    CHECK(mailtls_report_outcome(NULL) == MAILTLS_OUTCOME_PENDING);
    CHECK_RC(mailtls_report_reason(NULL), NP);
    CHECK(mailtls_report_detail(NULL) == NULL);
    CHECK(mailtls_report_tls_version(NULL) == NULL);
    CHECK(mailtls_report_cipher(NULL) == NULL);
    CHECK(mailtls_report_peer_cert_sha256(NULL) == NULL);
    CHECK(mailtls_report_capability_count(NULL) == 0);
    CHECK(mailtls_report_capability(NULL, 0) == NULL);
    CHECK(mailtls_report_attempt_count(NULL) == 0);
    CHECK(mailtls_report_peer_cert_verified(NULL) == -1);
    CHECK(mailtls_report_json(NULL) == NULL);
    CHECK(mailtls_report_discarded_bytes(NULL) == 0);
}

TEST(out_of_range_enum_values_give_invalid_parameter) {
    const uint32_t IP = MAILTLS_RESULT_INVALID_PARAMETER;
    mailtls_config_builder *b = NULL;
    CHECK_RC(mailtls_config_builder_new(2, &b), IP);
    CHECK(b == NULL);
    CHECK_RC(mailtls_config_builder_new(0xffffffffu, &b), IP);
    b = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(b);
    CHECK_RC(mailtls_config_builder_set_policy(b, MAILTLS_POLICY_DANE_ONLY + 1), IP);
    CHECK_RC(mailtls_config_builder_set_policy(b, 0x80000000u), IP);
    CHECK_RC(mailtls_config_builder_set_injection_action(b, 2), IP);
    CHECK_RC(mailtls_config_builder_set_log(b, dummy_log, NULL, 0), IP);
    CHECK_RC(mailtls_config_builder_set_log(b, dummy_log, NULL, 5), IP);
    CHECK_RC(mailtls_config_builder_set_timeout_ms(b, 0), IP);
    CHECK_RC(mailtls_config_builder_generate_self_signed(b, "", NULL, 0, NULL), IP);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    mailtls_session *s = NULL;
    CHECK_RC(mailtls_client_new(cfg, 6, "mx.test", 25, &s), IP);
    CHECK_RC(mailtls_client_new(cfg, 0xffffffffu, "mx.test", 25, &s), IP);
    CHECK_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "", 25, &s), IP);
    CHECK_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "bad host", 25, &s), IP);
    CHECK(s == NULL);
    s = client_session(cfg, "mx.test");
    REQUIRE(s);
    CHECK_RC(mailtls_session_set_fd(s, -1), IP);
    CHECK_RC(mailtls_session_set_server_name(s, "not a name!"), IP);
    uint8_t byte;
    uintptr_t n = 0;
    CHECK_RC(mailtls_session_read(s, &byte, 0, &n), IP);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK(mailtls_report_attempt_result(r, 99) == IP);
    CHECK(mailtls_report_attempt_rung(r, 99) == -1);
    CHECK(mailtls_report_time_ms(r, 7) == 0);
    CHECK(mailtls_server_reply(s, MAILTLS_RESULT_OK) == NULL);
}

TEST(limits_below_the_minimum_are_refused_when_building) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_limits(b, 10, 0, 0), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = NULL;
    CHECK_RC(mailtls_config_builder_build(b, &cfg), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK(cfg == NULL);
    char why[256];
    CHECK_RC(mailtls_config_builder_last_error(b, why, sizeof why), MAILTLS_RESULT_OK);
    CHECK(why[0] != 0);
}

TEST(every_protocol_makes_sessions_and_unknown_numbers_are_invalid) {
    const mailtls_config *ccfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    const mailtls_config *scfg = server_cfg(NULL, NULL, 0);
    REQUIRE(ccfg && scfg);
    const uint32_t protos[] = {MAILTLS_PROTO_SMTP, MAILTLS_PROTO_LMTP, MAILTLS_PROTO_IMAP,
                               MAILTLS_PROTO_POP3, MAILTLS_PROTO_NNTP, MAILTLS_PROTO_SIEVE};
    for (size_t i = 0; i < sizeof protos / sizeof protos[0]; i++) {
        mailtls_session *s = NULL;
        CHECK_RC(mailtls_client_new(ccfg, protos[i], "mx.test", 143, &s), MAILTLS_RESULT_OK);
        CHECK(s != NULL);
        mailtls_session_free(s);
        s = NULL;
        CHECK_RC(mailtls_server_new(scfg, protos[i], "peer", &s), MAILTLS_RESULT_OK);
        CHECK(s != NULL);
        mailtls_session_free(s);
    }
    mailtls_session *s = NULL;
    CHECK_RC(mailtls_client_new(ccfg, 6, "mx.test", 143, &s), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_server_new(scfg, 99, "peer", &s), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK(s == NULL);
}

TEST(calls_in_the_wrong_role_or_state_give_invalid_state) {
    const mailtls_config *ccfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
    REQUIRE(ccfg && scfg);
    mailtls_session *srv = NULL;
    REQUIRE_RC(mailtls_server_new(scfg, MAILTLS_PROTO_SMTP, "peer", &srv), MAILTLS_RESULT_OK);
    defer_session(srv);
    CHECK_RC(mailtls_client_negotiate(srv), MAILTLS_RESULT_INVALID_STATE);
    CHECK(mailtls_session_last_error(srv)[0] != 0);
    /* STARTTLS without a transport. */
    CHECK_RC(mailtls_server_starttls(srv, NULL, 0), MAILTLS_RESULT_INVALID_STATE);

    mailtls_session *cl = client_session(ccfg, "mx.test");
    REQUIRE(cl);
    CHECK(mailtls_session_last_error(cl) != NULL && mailtls_session_last_error(cl)[0] == 0);
    CHECK_RC(mailtls_client_negotiate(cl), MAILTLS_RESULT_INVALID_STATE); /* no transport */
    uint8_t buf[16];
    uintptr_t n = 0;
    CHECK_RC(mailtls_session_read(cl, buf, sizeof buf, &n), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_session_write(cl, (const uint8_t *)"x", 1, &n), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_server_starttls(cl, NULL, 0), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_server_check_command(cl, (const uint8_t *)"NOOP", 4), MAILTLS_RESULT_INVALID_STATE);
    CHECK(!mailtls_server_offer_starttls(cl));
    CHECK(mailtls_report_outcome(mailtls_session_report(cl)) == MAILTLS_OUTCOME_PENDING);

    /* A session needs a config of its own role. */
    mailtls_session *s = NULL;
    CHECK_RC(mailtls_client_new(scfg, MAILTLS_PROTO_SMTP, "mx.test", 25, &s), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_server_new(ccfg, MAILTLS_PROTO_SMTP, "peer", &s), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK(s == NULL);
}

static void check_build_fails(mailtls_config_builder *b, mailtls_result code) {
    const mailtls_config *cfg = NULL;
    CHECK_RC(mailtls_config_builder_build(b, &cfg), code);
    CHECK(cfg == NULL);
    char why[512];
    CHECK_RC(mailtls_config_builder_last_error(b, why, sizeof why), MAILTLS_RESULT_OK);
    if (!CHECK(why[0] != 0))
        return;
    /* Truncated to fit, still terminated. */
    char tiny[8];
    memset(tiny, 'z', sizeof tiny);
    if (CHECK_RC(mailtls_config_builder_last_error(b, tiny, sizeof tiny), MAILTLS_RESULT_OK))
        CHECK(memchr(tiny, 0, sizeof tiny) != NULL);
}

TEST(key_that_does_not_match_the_certificate_is_key_mismatch) {
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_certificate_pem(b, (const uint8_t *)UNRELATED_CERT_PEM,
                                                          strlen(UNRELATED_CERT_PEM), (const uint8_t *)OTHER_KEY_PEM,
                                                          strlen(OTHER_KEY_PEM)),
               MAILTLS_RESULT_OK);
    check_build_fails(b, MAILTLS_RESULT_KEY_MISMATCH);
}

TEST(generated_certificate_with_a_foreign_key_is_key_mismatch) {
    static char pem[8192];
    mailtls_config_builder *b = server_builder("localhost", pem, sizeof pem);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_certificate_pem(b, (const uint8_t *)pem, strlen(pem),
                                                          (const uint8_t *)OTHER_KEY_PEM, strlen(OTHER_KEY_PEM)),
               MAILTLS_RESULT_OK);
    check_build_fails(b, MAILTLS_RESULT_KEY_MISMATCH);
}

TEST(garbage_certificate_pem_is_certificate_load_and_garbage_key_is_private_key_load) {
    static const char garbage[] = "-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n";
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_certificate_pem(b, (const uint8_t *)garbage, strlen(garbage),
                                                          (const uint8_t *)UNRELATED_KEY_PEM,
                                                          strlen(UNRELATED_KEY_PEM)),
               MAILTLS_RESULT_OK);
    check_build_fails(b, MAILTLS_RESULT_CERTIFICATE_LOAD);
    REQUIRE_RC(mailtls_config_builder_set_certificate_pem(b, (const uint8_t *)"hello", 5,
                                                          (const uint8_t *)UNRELATED_KEY_PEM,
                                                          strlen(UNRELATED_KEY_PEM)),
               MAILTLS_RESULT_OK);
    check_build_fails(b, MAILTLS_RESULT_CERTIFICATE_LOAD);
    REQUIRE_RC(mailtls_config_builder_set_certificate_pem(b, (const uint8_t *)UNRELATED_CERT_PEM,
                                                          strlen(UNRELATED_CERT_PEM), (const uint8_t *)"hello", 5),
               MAILTLS_RESULT_OK);
    check_build_fails(b, MAILTLS_RESULT_PRIVATE_KEY_LOAD);
}

TEST(missing_certificate_or_key_file_is_a_load_error) {
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    const char *cert = temp_file(UNRELATED_CERT_PEM);
    CHECK_RC(mailtls_config_builder_set_certificate_files(b, "/nonexistent/cert.pem", cert),
             MAILTLS_RESULT_CERTIFICATE_LOAD);
    CHECK_RC(mailtls_config_builder_set_certificate_files(b, cert, "/nonexistent/key.pem"),
             MAILTLS_RESULT_PRIVATE_KEY_LOAD);
    char why[512];
    CHECK_RC(mailtls_config_builder_last_error(b, why, sizeof why), MAILTLS_RESULT_OK);
    CHECK_CONTAINS(why, strlen(why), "/nonexistent/key.pem");
}

TEST(verify_with_unreadable_ca_file_is_trust_anchors_error) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_VERIFY);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_ca_file(b, "/nonexistent/ca.pem"), MAILTLS_RESULT_OK);
    check_build_fails(b, MAILTLS_RESULT_TRUST_ANCHORS);
    REQUIRE_RC(mailtls_config_builder_set_ca_file(b, temp_file("no certificates here\n")), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = NULL;
    CHECK(mailtls_config_builder_build(b, &cfg) != MAILTLS_RESULT_OK);
    CHECK(cfg == NULL);
}

TEST(generate_self_signed_into_a_too_small_buffer_is_buffer_too_small) {
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    char small[64];
    uintptr_t written = 12345;
    CHECK_RC(mailtls_config_builder_generate_self_signed(b, "localhost", small, sizeof small, &written),
             MAILTLS_RESULT_BUFFER_TOO_SMALL);
    CHECK(written == 12345);
    static char pem[8192];
    CHECK_RC(mailtls_config_builder_generate_self_signed(b, "localhost", pem, sizeof pem, &written),
             MAILTLS_RESULT_OK);
    CHECK(written == strlen(pem));
    CHECK(strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) == 0);
    const mailtls_config *cfg = build_config(b);
    CHECK(cfg && mailtls_config_server_tls_ready(cfg));
}

TEST(server_role_without_certificate_builds_but_is_not_tls_ready) {
    const mailtls_config *cfg = server_cfg(NULL, NULL, 0);
    REQUIRE(cfg);
    CHECK(!mailtls_config_server_tls_ready(cfg));
    const mailtls_config *ccfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    CHECK(ccfg && !mailtls_config_server_tls_ready(ccfg));
}

TEST(config_outlives_the_callers_reference_while_a_session_holds_it) {
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_NONE);
    REQUIRE(b);
    const mailtls_config *cfg = NULL;
    REQUIRE_RC(mailtls_config_builder_build(b, &cfg), MAILTLS_RESULT_OK);
    mailtls_session *s = NULL;
    CHECK_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "mx.test", 25, &s), MAILTLS_RESULT_OK);
    mailtls_config_free(cfg); /* the session keeps its own reference */
    defer_session(s);
    static const struct step script[] = {SEND("220 mx.test ESMTP\r\n"), EXPECT("EHLO client.test"),
                                         SEND("250 mx.test\r\n"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p && s);
    REQUIRE_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_PLAINTEXT);
    CHECK_PEER_OK(p);
}

struct log_capture {
    int lines;
    int warn_or_error;
    char last[512];
};

static void capture_log(void *ud, uint32_t level, const char *msg) {
    struct log_capture *c = ud;
    c->lines++;
    if (level <= MAILTLS_LOG_LEVEL_WARN)
        c->warn_or_error++;
    snprintf(c->last, sizeof c->last, "%s", msg);
}

TEST(log_callback_receives_the_failure_with_its_reason) {
    static struct log_capture cap;
    memset(&cap, 0, sizeof cap);
    mailtls_config_builder *b = client_builder(MAILTLS_POLICY_ENCRYPT);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_log(b, capture_log, &cap, MAILTLS_LOG_LEVEL_DEBUG), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    static const struct step script[] = {GREET_NO_OFFER, EXPECT("QUIT"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
    CHECK(cap.lines >= 3);
    CHECK(cap.warn_or_error >= 1);
    CHECK_CONTAINS(cap.last, strlen(cap.last), "starttls-not-offered");
    CHECK_PEER_OK(p);
}

TEST(last_error_describes_a_failed_negotiation) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    static const struct step script[] = {SEND("554 5.3.2 no service here\r\n"), EXPECT("QUIT"), EXPECT_EOF, END};
    peer_t *p = script_start(VIA_SOCKETPAIR, script);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.test", p->fd);
    REQUIRE(s);
    CHECK_STREQ(mailtls_session_last_error(s), "");
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_GREETING_REFUSED);
    const char *e = mailtls_session_last_error(s);
    REQUIRE(e != NULL);
    CHECK(e[0] != 0);
    CHECK_CONTAINS(e, strlen(e), "no service here");
    const mailtls_report *r = mailtls_session_report(s);
    const char *d = mailtls_report_detail(r);
    CHECK(d != NULL && strstr(d, "no service here") != NULL);
    const char *json = mailtls_report_json(r);
    if (CHECK(json != NULL))
        CHECK_CONTAINS(json, strlen(json), "\"reason\":\"greeting-refused\"");
    CHECK_PEER_OK(p);
}

TEST(report_pointer_stays_valid_and_unchanged_until_the_report_changes) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    mailtls_session *s = client_session(cfg, "mx.test");
    REQUIRE(s);
    const mailtls_report *r1 = mailtls_session_report(s);
    const mailtls_report *r2 = mailtls_session_report(s);
    CHECK(r1 != NULL && r1 == r2);
    CHECK(mailtls_report_outcome(r1) == MAILTLS_OUTCOME_PENDING);
}

/* The header exports no Rust constants as macros (a Rust-named variant list once
 * leaked as mailtls_rung_ALL and did not compile); the rungs are named through
 * mailtls_rung_name instead. */
TEST(rungs_are_named_through_the_api_not_rust_macros) {
#ifdef mailtls_rung_ALL
    test_fail(__FILE__, __LINE__, "mailtls_rung_ALL leaked from Rust into the header");
#endif
    CHECK_STREQ(mailtls_rung_name(MAILTLS_RUNG_MODERN), "modern");
    CHECK_STREQ(mailtls_rung_name(MAILTLS_RUNG_COMPACT), "compact");
    CHECK_STREQ(mailtls_rung_name(MAILTLS_RUNG_CLASSIC), "classic");
    CHECK_STREQ(mailtls_rung_name(MAILTLS_RUNG_TLS12), "tls12");
    CHECK(mailtls_rung_name(4) == NULL);
    CHECK_STREQ(mailtls_failure_class_name(MAILTLS_FAILURE_CLASS_INTOLERANCE), "intolerance");
    CHECK(mailtls_failure_class_name(99) == NULL);
}

/* A descriptor that is not a socket (a pipe): the library falls back from sendmsg
 * to poll + writev, and the bytes arrive whole, in order. */
TEST(a_pipe_descriptor_is_written_like_a_socket) {
    const mailtls_config *cfg = server_cfg("mx.test", NULL, 0);
    REQUIRE(cfg);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_server_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1:1", &s), MAILTLS_RESULT_OK);
    defer_session(s);
    int p[2];
    REQUIRE(pipe(p) == 0);
    REQUIRE_RC(mailtls_session_set_fd(s, p[1]), MAILTLS_RESULT_OK);
    static const char greet[] = "220 mx.test ESMTP\r\n", more[] = "250-mx.test\r\n250 STARTTLS\r\n";
    uintptr_t w = 0;
    CHECK_RC(mailtls_session_write(s, (const uint8_t *)greet, sizeof greet - 1, &w), MAILTLS_RESULT_OK);
    CHECK(w == sizeof greet - 1);
    CHECK_RC(mailtls_session_write(s, (const uint8_t *)more, sizeof more - 1, &w), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_flush(s), MAILTLS_RESULT_OK);
    char got[128] = {0};
    size_t n = 0;
    while (n < sizeof greet - 1 + sizeof more - 1) {
        ssize_t r = read(p[0], got + n, sizeof got - 1 - n);
        REQUIRE(r > 0);
        n += (size_t)r;
    }
    CHECK(strcmp(got, "220 mx.test ESMTP\r\n250-mx.test\r\n250 STARTTLS\r\n") == 0);
    close(p[0]);
    close(p[1]);
}

/* Found by the ffi_session fuzz target: a close in the middle of a handshake used to
 * leave the session handshaking, so the next call went on with rustls after its own
 * close_notify (a rustls assertion, MAILTLS_RESULT_PANIC, in a debug build). A close
 * during the negotiation ends it: nothing more of the hello goes out, and every later
 * call says the session was closed. */
TEST(close_during_the_handshake_ends_the_negotiation_and_sends_nothing_more) {
    for (int server_first = 0; server_first < 2; server_first++) {
        static const struct step st[] = {EXPECT_EOF, END};
        peer_t *p = script_start(VIA_SOCKETPAIR, st);
        REQUIRE(p);
        const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
        REQUIRE(cfg);
        mailtls_session *s = NULL;
        REQUIRE_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "localhost", 465, &s), MAILTLS_RESULT_OK);
        defer_session(s);
        struct io_ctx *ctx = io_new(p->fd);
        ctx->max_chunk = 1;
        ctx->eagain_alternate = 1;
        CHECK_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
        CHECK_RC(mailtls_session_set_implicit_tls(s, true), MAILTLS_RESULT_OK);
        /* The hello is under way: the first write callback was refused, or took a few bytes. */
        CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_WOULD_BLOCK);
        if (server_first)
            CHECK_RC(mailtls_session_continue(s), MAILTLS_RESULT_WOULD_BLOCK);
        size_t sent = ctx->written;
        CHECK_RC(mailtls_session_close(s), MAILTLS_RESULT_OK);
        CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_INVALID_STATE);
        CHECK_RC(mailtls_session_continue(s), MAILTLS_RESULT_INVALID_STATE);
        CHECK(strstr(mailtls_session_last_error(s), "closed the session during the negotiation") != NULL);
        CHECK_OUTCOME(mailtls_session_report(s), MAILTLS_OUTCOME_DEFER);
        CHECK(!mailtls_session_tls_active(s));
        CHECK(ctx->written == sent); /* not one more byte of the hello, no alert */
        CHECK_RC(mailtls_session_close(s), MAILTLS_RESULT_OK);
        CHECK(ctx->written == sent);
        CHECK_PEER_OK(p);
        CHECK(p->sh->nrecv == sent);
    }
}
