/* Legacy hellos handed off on an implicit-TLS port (RFC 8314) and completed by the
 * application's own engine: the system OpenSSL through examples-c/legacy-tls.c, the
 * engine mailtls-server uses. The library never links OpenSSL; this suite does, as
 * an MTA that keeps OpenSSL for its stragglers would. */
#include "support.h"

#include "keys.h"
#include "legacy-tls.h"

#include <openssl/bio.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

/* A server config on the fixed certificate, handing off TLS 1.0 and SSLv2-compatible hellos. */
static const mailtls_config *handoff_cfg(void) {
    mailtls_config_builder *b = NULL;
    if (!CHECK_RC(mailtls_config_builder_new(MAILTLS_ROLE_SERVER, &b), MAILTLS_RESULT_OK))
        return NULL;
    defer_builder(b);
    CHECK_RC(mailtls_config_builder_set_timeout_ms(b, STEP_TIMEOUT_MS), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_config_builder_set_certificate_files(b, temp_file(UNRELATED_CERT_PEM), temp_file(UNRELATED_KEY_PEM)),
             MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_config_builder_set_hello_action(b, MAILTLS_HELLO_SSLV2_COMPAT, MAILTLS_HELLO_ACTION_HANDOFF),
             MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_config_builder_set_hello_action(b, MAILTLS_HELLO_TLS10, MAILTLS_HELLO_ACTION_HANDOFF),
             MAILTLS_RESULT_OK);
    return build_config(b);
}

static void free_legacy_ctx(void *x) {
    legacy_ctx_free(x);
}

/* The client: OpenSSL limited to TLS 1.0 (security level 0 allows it), implicit TLS:
 * the handshake first, then the greeting and one command inside it. */
static void tls10_client(int fd, void *arg, struct shared *sh) {
    (void)arg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        child_fail(sh, "SSL_CTX_new");
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_VERSION);
    if (!SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0"))
        child_fail(sh, "SSL_CTX_set_cipher_list");
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1)
        child_fail(sh, "SSL_connect with a TLS 1.0 hello failed (error %d)", SSL_get_error(ssl, -1));
    snprintf(sh->tls_version, sizeof sh->tls_version, "%s", SSL_get_version(ssl));
    char buf[512];
    int n = SSL_read(ssl, buf, sizeof buf - 1);
    if (n <= 0)
        child_fail(sh, "no greeting over TLS 1.0");
    shared_record(sh, buf, (size_t)n);
    if (SSL_write(ssl, "QUIT\r\n", 6) != 6)
        child_fail(sh, "SSL_write");
    n = SSL_read(ssl, buf, sizeof buf - 1);
    if (n <= 0)
        child_fail(sh, "no reply to QUIT over TLS 1.0");
    shared_record(sh, buf, (size_t)n);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
}

TEST(implicit_tls_tls10_hello_handed_off_completes_through_openssl_and_carries_the_dialogue) {
    const mailtls_config *cfg = handoff_cfg();
    REQUIRE(cfg);
    char err[512] = "";
    struct legacy_ctx *engine = legacy_ctx_new(temp_file(UNRELATED_CERT_PEM), temp_file(UNRELATED_KEY_PEM), err, sizeof err);
    if (!engine)
        test_fail(__FILE__, __LINE__, "legacy_ctx_new: %s", err);
    REQUIRE(engine);
    defer_call(free_legacy_ctx, engine);
    peer_t *p = peer_start(VIA_TCP, tls10_client, NULL);
    REQUIRE(p);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_server_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1:1", &s), MAILTLS_RESULT_OK);
    defer_session(s);
    REQUIRE_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK);
    REQUIRE_RC(mailtls_server_start_implicit(s), MAILTLS_RESULT_HANDOFF);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK(mailtls_report_hello(r) == MAILTLS_HELLO_TLS10);
    CHECK(mailtls_report_outcome(r) == MAILTLS_OUTCOME_HANDOFF);
    const uint8_t *pre = NULL;
    uintptr_t npre = 0;
    REQUIRE_RC(mailtls_session_handoff_bytes(s, &pre, &npre), MAILTLS_RESULT_OK);
    REQUIRE(npre >= 5 && pre[0] == 0x16);
    struct legacy_conn *c = legacy_accept(engine, p->fd, pre, npre, SOCKET_TIMEOUT_S, err, sizeof err);
    if (!c)
        test_fail(__FILE__, __LINE__, "OpenSSL did not complete the handed-off handshake: %s", err);
    REQUIRE(c);
    CHECK_STREQ(legacy_version(c), "TLSv1");
    static const char greeting[] = "220 mx.test ESMTP over OpenSSL\r\n", bye[] = "221 2.0.0 bye\r\n";
    CHECK(legacy_write(c, (const uint8_t *)greeting, strlen(greeting), err, sizeof err) == 0);
    uint8_t buf[64];
    size_t n = 0, got = 0;
    while (n < 6 && legacy_read(c, buf + n, sizeof buf - n, &got, err, sizeof err) == 0 && got > 0)
        n += got;
    CHECK(n == 6 && memcmp(buf, "QUIT\r\n", 6) == 0);
    CHECK(legacy_write(c, (const uint8_t *)bye, strlen(bye), err, sizeof err) == 0);
    legacy_close(c);
    CHECK_PEER_OK(p);
    CHECK_STREQ(p->sh->tls_version, "TLSv1");
    CHECK_CONTAINS(p->sh->recv, p->sh->nrecv, "220 mx.test ESMTP over OpenSSL\r\n221 2.0.0 bye\r\n");
}

/* An SSLv2-compatible ClientHello (RFC 5246 E.2) offering TLS 1.0 and what such
 * clients offer, RSA key exchange with AES-CBC (0x002f, 0x0035), as 3-byte SSLv2
 * cipher specs. (It has no room for extensions, so no ECDHE.) */
static size_t sslv2_rsa_hello(uint8_t *out) {
    static const uint8_t specs[] = {0x00, 0x00, 0x2f, 0x00, 0x00, 0x35};
    size_t len = 9 + sizeof specs + 16, n = 0;
    out[n++] = (uint8_t)(0x80 | (len >> 8));
    out[n++] = (uint8_t)len;
    out[n++] = 0x01;
    out[n++] = 0x03;
    out[n++] = 0x01;
    out[n++] = 0;
    out[n++] = sizeof specs;
    out[n++] = 0;
    out[n++] = 0;
    out[n++] = 0;
    out[n++] = 16;
    memcpy(out + n, specs, sizeof specs);
    n += sizeof specs;
    for (int i = 0; i < 16; i++)
        out[n++] = 0x5a;
    return n;
}

/* OpenSSL accepts the handed SSLv2-compatible bytes as a hello: it answers with a
 * TLS 1.0 ServerHello. (A whole session after an SSLv2-compatible hello needs a
 * client that can send one; tests/real-clients/run.sh has it, on tlslite-ng.) */
TEST(implicit_tls_sslv2_compatible_hello_handed_off_is_answered_by_openssl_with_a_tls10_server_hello) {
    const mailtls_config *cfg = handoff_cfg();
    REQUIRE(cfg);
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    defer_fd(sv[0]);
    defer_fd(sv[1]);
    uint8_t hello[64];
    size_t nh = sslv2_rsa_hello(hello);
    REQUIRE(write(sv[0], hello, nh) == (ssize_t)nh);
    shutdown(sv[0], SHUT_WR);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_server_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1:1", &s), MAILTLS_RESULT_OK);
    defer_session(s);
    REQUIRE_RC(mailtls_session_set_fd(s, sv[1]), MAILTLS_RESULT_OK);
    REQUIRE_RC(mailtls_server_start_implicit(s), MAILTLS_RESULT_HANDOFF);
    CHECK(mailtls_report_hello(mailtls_session_report(s)) == MAILTLS_HELLO_SSLV2_COMPAT);
    const uint8_t *pre = NULL;
    uintptr_t npre = 0;
    REQUIRE_RC(mailtls_session_handoff_bytes(s, &pre, &npre), MAILTLS_RESULT_OK);
    /* The library read no further than it needed; OpenSSL gets those bytes and then
     * reads on from the transport, as legacy-tls.c's BIO does. */
    REQUIRE(npre > 0 && npre <= nh && memcmp(pre, hello, npre) == 0);
    uint8_t all[64];
    memcpy(all, pre, npre);
    size_t nall = npre + raw_read_to_eof(sv[1], all + npre, sizeof all - npre);
    CHECK(nall == nh && memcmp(all, hello, nh) == 0);

    /* OpenSSL as legacy-tls.c sets it up, on memory BIOs: in, the handed bytes. */
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    REQUIRE(ctx);
    SSL_CTX_set_min_proto_version(ctx, 0);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_security_level(ctx, 0);
    /* RSA key exchange needs an RSA certificate: a throwaway one, made here. */
    EVP_PKEY *k = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    REQUIRE(k && x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    CHECK(X509_sign(x, k, EVP_sha256()) > 0);
    CHECK(SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0") && SSL_CTX_use_certificate(ctx, x) == 1 &&
          SSL_CTX_use_PrivateKey(ctx, k) == 1);
    SSL *ssl = SSL_new(ctx);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in, -1); /* no more yet: want read, not EOF */
    BIO_write(in, all, (int)nall);
    SSL_set_bio(ssl, in, out);
    int rc = SSL_accept(ssl);
    CHECK(rc < 0 && SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ); /* waits for the client's next flight */
    const uint8_t *o = NULL;
    long no = BIO_get_mem_data(out, (char **)&o);
    /* A handshake record of TLS 1.0 whose first message is a ServerHello for TLS 1.0. */
    if (!(no > 11 && o[0] == 0x16 && o[1] == 0x03 && o[2] == 0x01 && o[5] == 0x02 && o[9] == 0x03 && o[10] == 0x01))
        test_fail(__FILE__, __LINE__, "OpenSSL answered %s", show_bytes(o, no > 0 ? (size_t)no : 0));
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    X509_free(x);
    EVP_PKEY_free(k);
}
