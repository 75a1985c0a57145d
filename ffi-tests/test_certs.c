/* Certificates: verification under policy verify, recording under may and encrypt,
 * and server certificates from PEM data and files. */
#include "support.h"

#include <ctype.h>
#include <unistd.h>

#include "keys.h"

struct cert_run {
    peer_t *p;
    mailtls_session *s;
    mailtls_result rc;
};

/* A client (policy, cafile, host) against the fixture serving `scfg`. */
static struct cert_run run_against(const mailtls_config *scfg, uint32_t policy, const char *cafile,
                                   const char *host) {
    static struct fixture_opts o;
    struct cert_run run = {NULL, NULL, MAILTLS_RESULT_PANIC};
    memset(&o, 0, sizeof o);
    o.cfg = scfg;
    const mailtls_config *cfg = client_cfg(policy, cafile);
    if (!scfg || !cfg)
        return run;
    run.p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    if (!run.p)
        return run;
    run.s = client_on_fd(cfg, host, run.p->fd);
    if (!run.s)
        return run;
    run.rc = mailtls_client_negotiate(run.s);
    return run;
}

static void check_cert_rejected(struct cert_run run, mailtls_result code, const char *rfc8460) {
    REQUIRE(run.s);
    CHECK_RC(run.rc, code);
    const mailtls_report *r = mailtls_session_report(run.s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(r), code);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(r), rfc8460);
    CHECK(!mailtls_session_tls_active(run.s));
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_CERTIFICATE);
    CHECK(mailtls_report_capability_count(r) == 0);
    /* The handshake did not complete: nothing was negotiated, so nothing is claimed;
     * the certificate the server showed is a fact and is there. */
    CHECK(mailtls_report_tls_version(r) == NULL);
    CHECK(mailtls_report_cipher(r) == NULL);
    CHECK(mailtls_report_group(r) == NULL);
    CHECK(strstr(mailtls_report_json(r), "\"tls_version\":null,\"cipher\":null,\"group\":null") != NULL);
    CHECK(mailtls_report_peer_cert_subject(r) != NULL);
    CHECK(mailtls_session_last_error(run.s)[0] != 0);
    CHECK_PEER_OK(run.p);
    CHECK(!run.p->sh->tls_was_active);
    CHECK_NOT_CONTAINS(run.p->sh->log, run.p->sh->nlog, "C: EHLO client.test\nC: STARTTLS\nSTARTTLS: ok");
}

TEST(verify_with_certificate_for_another_name_is_name_mismatch_host_mismatch) {
    static char pem[8192];
    const mailtls_config *scfg = server_cfg("localhost", pem, sizeof pem);
    REQUIRE(scfg);
    check_cert_rejected(run_against(scfg, MAILTLS_POLICY_VERIFY, temp_file(pem), "wrong.example"),
                        MAILTLS_RESULT_CERTIFICATE_NAME_MISMATCH, "certificate-host-mismatch");
}

TEST(verify_with_server_name_override_checks_that_name) {
    static char pem[8192];
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", pem, sizeof pem);
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_VERIFY, temp_file(pem));
    REQUIRE(o.cfg && cfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "localhost", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_session_set_server_name(s, "wrong.example"), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_CERTIFICATE_NAME_MISMATCH);
    CHECK_RC(mailtls_session_set_server_name(s, "localhost"), MAILTLS_RESULT_INVALID_STATE);
    CHECK_PEER_OK(p);
}

TEST(verify_with_the_right_name_and_ca_file_succeeds_and_reports_verified) {
    static char pem[8192];
    const mailtls_config *scfg = server_cfg("localhost", pem, sizeof pem);
    REQUIRE(scfg);
    struct cert_run run = run_against(scfg, MAILTLS_POLICY_VERIFY, temp_file(pem), "localhost");
    REQUIRE(run.s);
    CHECK_RC(run.rc, MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(run.s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_TLS);
    CHECK(mailtls_report_peer_cert_verified(r) == 1);
    CHECK(mailtls_report_peer_cert_error(r) == NULL);
    CHECK(mailtls_report_rfc8460_result_type(r) == NULL);
    CHECK_RC(mailtls_session_close(run.s), MAILTLS_RESULT_OK);
    CHECK_PEER_OK(run.p);
}

TEST(verify_without_ca_file_rejects_self_signed_certificate_as_untrusted) {
    const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
    check_cert_rejected(run_against(scfg, MAILTLS_POLICY_VERIFY, NULL, "localhost"),
                        MAILTLS_RESULT_CERTIFICATE_UNTRUSTED, "certificate-not-trusted");
}

TEST(verify_with_another_ca_rejects_certificate_as_untrusted) {
    const mailtls_config *scfg = server_cfg("localhost", NULL, 0);
    check_cert_rejected(run_against(scfg, MAILTLS_POLICY_VERIFY, temp_file(UNRELATED_CERT_PEM), "localhost"),
                        MAILTLS_RESULT_CERTIFICATE_UNTRUSTED, "certificate-not-trusted");
}

static int is_lower_hex64(const char *s) {
    if (s == NULL || strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return 0;
    return 1;
}

/* Under may and encrypt a self-signed certificate is recorded, not enforced. */
static void self_signed_recorded(uint32_t policy, const char *cafile, int32_t verified) {
    const mailtls_config *scfg = server_cfg("self-signed.test", NULL, 0);
    REQUIRE(scfg);
    struct cert_run run = run_against(scfg, policy, cafile, "self-signed.test");
    REQUIRE(run.s);
    CHECK_RC(run.rc, MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(run.s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_TLS);
    CHECK(mailtls_report_peer_cert_verified(r) == verified);
    if (verified == 0)
        CHECK(mailtls_report_peer_cert_error(r) != NULL);
    const char *sha = mailtls_report_peer_cert_sha256(r);
    if (!CHECK(is_lower_hex64(sha)))
        printf("    sha256: %s\n", sha ? sha : "NULL");
    CHECK(mailtls_report_peer_cert_subject(r) != NULL);
    size_t n = mailtls_report_peer_cert_name_count(r);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found += mailtls_report_peer_cert_name(r, i) && strcmp(mailtls_report_peer_cert_name(r, i), "self-signed.test") == 0;
    CHECK(n >= 1 && found == 1);
    CHECK(mailtls_report_peer_cert_name(r, n) == NULL);
    const char *json = mailtls_report_json(r);
    if (CHECK(json != NULL)) {
        CHECK_CONTAINS(json, strlen(json), sha ? sha : "(no sha)");
        CHECK_CONTAINS(json, strlen(json), verified == 0 ? "\"verified\":false" : "\"verified\":null");
    }
    CHECK_RC(mailtls_session_close(run.s), MAILTLS_RESULT_OK);
    CHECK_PEER_OK(run.p);
}

TEST(policy_may_accepts_self_signed_peer_and_records_it_unverified) {
    /* Checked against the system store when there is one: 0; else not checked: -1. */
    int system_store = access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0;
    self_signed_recorded(MAILTLS_POLICY_MAY, NULL, system_store ? 0 : -1);
}

TEST(policy_encrypt_accepts_self_signed_peer_and_records_it_unverified) {
    self_signed_recorded(MAILTLS_POLICY_ENCRYPT, temp_file(UNRELATED_CERT_PEM), 0);
}

TEST(policy_encrypt_with_matching_ca_file_records_certificate_verified) {
    static char pem[8192];
    const mailtls_config *scfg = server_cfg("localhost", pem, sizeof pem);
    REQUIRE(scfg);
    struct cert_run run = run_against(scfg, MAILTLS_POLICY_ENCRYPT, temp_file(pem), "localhost");
    REQUIRE(run.s);
    CHECK_RC(run.rc, MAILTLS_RESULT_OK);
    CHECK(mailtls_report_peer_cert_verified(mailtls_session_report(run.s)) == 1);
    CHECK_PEER_OK(run.p);
}

TEST(server_certificate_from_pem_data_serves_and_verifies) {
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_certificate_pem(b, (const uint8_t *)UNRELATED_CERT_PEM,
                                                          strlen(UNRELATED_CERT_PEM),
                                                          (const uint8_t *)UNRELATED_KEY_PEM,
                                                          strlen(UNRELATED_KEY_PEM)),
               MAILTLS_RESULT_OK);
    const mailtls_config *scfg = build_config(b);
    REQUIRE(scfg);
    CHECK(mailtls_config_server_tls_ready(scfg));
    struct cert_run run =
        run_against(scfg, MAILTLS_POLICY_VERIFY, temp_file(UNRELATED_CERT_PEM), "unrelated.example");
    REQUIRE(run.s);
    CHECK_RC(run.rc, MAILTLS_RESULT_OK);
    CHECK(mailtls_report_peer_cert_verified(mailtls_session_report(run.s)) == 1);
    CHECK_PEER_OK(run.p);
}

TEST(server_certificate_from_pem_files_serves_and_verifies) {
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    const char *cert = temp_file(UNRELATED_CERT_PEM);
    const char *key = temp_file(UNRELATED_KEY_PEM);
    REQUIRE_RC(mailtls_config_builder_set_certificate_files(b, cert, key), MAILTLS_RESULT_OK);
    const mailtls_config *scfg = build_config(b);
    REQUIRE(scfg);
    struct cert_run run = run_against(scfg, MAILTLS_POLICY_VERIFY, cert, "unrelated.example");
    REQUIRE(run.s);
    CHECK_RC(run.rc, MAILTLS_RESULT_OK);
    CHECK_PEER_OK(run.p);
}
