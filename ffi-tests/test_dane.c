/* DANE (RFC 7672) and MTA-STS (RFC 8461) from C: TLSA records, the DNSSEC status,
 * the destination's names and an MTA-STS policy set on a client session, against the
 * fixture server (the library's server API) serving certificates of a small PKI made
 * with the openssl command line when the first test needs it: a root CA, an
 * intermediate it signed, leaves the intermediate signed, a self-signed leaf and an
 * expired one. Each case asserts the outcome, the reason, the RFC 8460 result type,
 * the policy the session was held to, the certificate verdict, the attempts, and what
 * the server saw: STARTTLS and a command inside TLS, or not one byte when the
 * verdict comes before connecting. */
#include "support.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the PKI, made once per process ---- */

static char pki_dir[64];
static pid_t pki_owner;
static int pki_state; /* 0 not made yet, 1 made, -1 failed */

static void pki_remove(void) {
    /* Forked peers _exit; an exec'd one is another program: only the maker removes it. */
    if (pki_dir[0] && getpid() == pki_owner) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", pki_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", pki_dir);
    }
}

/* Runs a shell command in the PKI directory; its output goes to a log there. */
static int in_pki(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int in_pki(const char *fmt, ...) {
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "cd '%s' && { ", pki_dir);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    snprintf(cmd + n, sizeof cmd - (size_t)n, "; } >>openssl.log 2>&1");
    int rc = system(cmd);
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "PKI command failed (%d): %s", rc, cmd);
    return rc == 0;
}

static const char PKI_CNF[] =
    "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = placeholder\n"
    "[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier = hash\n"
    "[v3_mx]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:mx.example.test\n"
    "[v3_other]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:other.example.test\n"
    "[v3_hop]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:example.test\n"
    /* openssl 3.0 has no -not_before/-not_after: `openssl ca` sets past dates. */
    "[ca]\ndefault_ca = ca_default\n[ca_default]\ndatabase = index.txt\nnew_certs_dir = .\n"
    "default_md = sha256\npolicy = any\nrand_serial = yes\nunique_subject = no\n"
    "[any]\ncommonName = supplied\n";

#define NEWKEY "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -config pki.cnf"

/* A leaf for `cn` with the extensions of `section`, signed by the intermediate;
 * NAME-chain.pem is leaf + intermediate. */
static int pki_leaf(const char *name, const char *cn, const char *section, int serial) {
    return in_pki("openssl req -new " NEWKEY " -keyout %s.key -out %s.csr -subj '/CN=%s'", name, name, cn) &&
           in_pki("openssl x509 -req -in %s.csr -CA int.pem -CAkey int.key -set_serial %d -days 30 "
                  "-extfile pki.cnf -extensions %s -out %s.pem",
                  name, serial, section, name) &&
           in_pki("cat %s.pem int.pem > %s-chain.pem", name, name);
}

static int pki_make(void) {
    strcpy(pki_dir, "/tmp/mailtls-dane-XXXXXX");
    if (mkdtemp(pki_dir) == NULL) {
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        pki_dir[0] = 0;
        return 0;
    }
    pki_owner = getpid();
    atexit(pki_remove);
    char path[128];
    snprintf(path, sizeof path, "%s/pki.cnf", pki_dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(PKI_CNF, f) < 0 || fclose(f) != 0) {
        test_fail(__FILE__, __LINE__, "cannot write %s", path);
        return 0;
    }
    return in_pki("openssl req -x509 -new " NEWKEY " -extensions v3_ca -keyout root.key -out root.pem -days 30 "
                  "-subj '/CN=mailtls test root'") &&
           in_pki("openssl req -new " NEWKEY " -keyout int.key -out int.csr -subj '/CN=mailtls test intermediate'") &&
           in_pki("openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -set_serial 2 -days 30 "
                  "-extfile pki.cnf -extensions v3_ca -out int.pem") &&
           pki_leaf("mx", "mx.example.test", "v3_mx", 3) && in_pki("cat mx.pem int.pem root.pem > mx-full.pem") &&
           pki_leaf("other", "other.example.test", "v3_other", 4) &&
           pki_leaf("hop", "example.test", "v3_hop", 5) &&
           in_pki("openssl req -x509 -new " NEWKEY " -extensions v3_mx -keyout self.key -out self.pem -days 30 "
                  "-subj '/CN=mx.example.test'") &&
           in_pki("touch index.txt && openssl req -new " NEWKEY " -keyout expired.key -out expired.csr "
                  "-subj '/CN=mx.example.test' && openssl ca -config pki.cnf -batch -selfsign -keyfile expired.key "
                  "-in expired.csr -startdate 20200101000000Z -enddate 20200102000000Z -extensions v3_mx -notext "
                  "-out expired.pem") &&
           /* The intermediate is not self-signed: its issuer is the root. */
           in_pki("openssl verify -CAfile root.pem int.pem && openssl verify -CAfile root.pem -untrusted int.pem "
                  "mx.pem && ! openssl verify -CAfile int.pem int.pem");
}

/* The path of a PKI file ("mx-chain.pem"), or NULL when the PKI could not be made. */
static const char *pki(const char *file) {
    static char paths[16][128];
    static int next;
    if (pki_state == 0)
        pki_state = pki_make() ? 1 : -1;
    if (pki_state < 0)
        return NULL;
    char *p = paths[next++ % 16];
    snprintf(p, sizeof paths[0], "%s/%s", pki_dir, file);
    return p;
}

/* A TLSA record "U S M hex" for a certificate file (deferred free), by openssl. */
static const char *tlsa(int usage, int selector, int mtype, const char *certfile) {
    if (certfile == NULL)
        return NULL;
    static const char *const select[] = {"openssl x509 -in '%s' -outform DER",
                                         "openssl x509 -in '%s' -noout -pubkey | openssl pkey -pubin -outform DER"};
    static const char *const match[] = {"od -An -v -tx1 | tr -d ' \\n'", "sha256sum | cut -d' ' -f1",
                                        "sha512sum | cut -d' ' -f1"};
    char cmd[512];
    int n = snprintf(cmd, sizeof cmd, select[selector], certfile);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " | %s", match[mtype]);
    FILE *p = popen(cmd, "r");
    if (!p) {
        test_fail(__FILE__, __LINE__, "popen %s: %s", cmd, strerror(errno));
        return NULL;
    }
    char *rec = malloc(8192);
    defer_call(free, rec);
    int k = snprintf(rec, 8192, "%d %d %d ", usage, selector, mtype);
    size_t got = fread(rec + k, 1, 8192 - (size_t)k - 1, p);
    rec[(size_t)k + got] = 0;
    while (got > 0 && (rec[(size_t)k + got - 1] == '\n' || rec[(size_t)k + got - 1] == ' '))
        rec[(size_t)k + --got] = 0;
    if (pclose(p) != 0 || got < 64) {
        test_fail(__FILE__, __LINE__, "%s gave \"%s\"", cmd, rec);
        return NULL;
    }
    return rec;
}

/* Adds a text record through mailtls_session_add_tlsa (its fields and bytes). */
static mailtls_result add_tlsa_fields(mailtls_session *s, const char *rec) {
    unsigned u, sel, mt;
    int off = 0;
    if (rec == NULL || sscanf(rec, "%u %u %u %n", &u, &sel, &mt, &off) != 3)
        return MAILTLS_RESULT_PANIC;
    const char *hex = rec + off;
    size_t n = strlen(hex) / 2;
    uint8_t *data = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        unsigned b;
        sscanf(hex + 2 * i, "%2x", &b);
        data[i] = (uint8_t)b;
    }
    mailtls_result rc = mailtls_session_add_tlsa(s, (uint8_t)u, (uint8_t)sel, (uint8_t)mt, data, n);
    free(data);
    return rc;
}

/* ---- one delivery attempt against the fixture ---- */

struct run {
    peer_t *p;
    mailtls_session *s;
    struct io_ctx *io; /* the client's callbacks, in the fault-injection runs */
    mailtls_result rc;
    const mailtls_report *r;
};

/* The fixture's config: a certificate chain file and its key. */
static const mailtls_config *fixture_cfg(const char *chain, const char *key) {
    if (chain == NULL || key == NULL)
        return NULL;
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    if (!b || !CHECK_RC(mailtls_config_builder_set_certificate_files(b, chain, key), MAILTLS_RESULT_OK))
        return NULL;
    return build_config(b);
}

/* Starts the fixture serving `chain` and a client session for `host` on it (fd mode,
 * or the callback transport with one-byte reads and writes and an EAGAIN before each
 * call that moves data, against a fixture reading one byte per call). */
static int start_with(struct run *run, const mailtls_config *ccfg, const char *chain, const char *key,
                      const char *host, int faults) {
    memset(run, 0, sizeof *run);
    run->rc = MAILTLS_RESULT_PANIC;
    struct fixture_opts *o = calloc(1, sizeof *o);
    defer_call(free, o);
    o->cfg = fixture_cfg(chain, key);
    o->io = faults ? FIX_ONE_BYTE : FIX_FD;
    if (!o->cfg || !ccfg)
        return 0;
    run->p = peer_start(VIA_SOCKETPAIR, fixture_server, o);
    if (!run->p)
        return 0;
    if (!faults) {
        run->s = client_on_fd(ccfg, host, run->p->fd);
    } else {
        run->s = client_session(ccfg, host);
        run->io = io_new(run->p->fd);
        run->io->max_chunk = 1;
        run->io->eagain_alternate = 1;
        if (run->s && !CHECK_RC(mailtls_session_set_io(run->s, io_read, io_write, run->io), MAILTLS_RESULT_OK))
            run->s = NULL;
    }
    return run->s != NULL;
}

static int start(struct run *run, uint32_t policy, const char *cafile, const char *chain, const char *key,
                 const char *host) {
    return start_with(run, client_cfg(policy, cafile), chain, key, host, 0);
}

static void negotiate(struct run *run) {
    run->rc = run->io ? negotiate_all(run->s, run->io, NULL) : mailtls_client_negotiate(run->s);
    run->r = mailtls_session_report(run->s);
}

static const char *json(const struct run *run) {
    const char *j = mailtls_report_json(run->r);
    return j ? j : "";
}

/* Whether the system trust store exists (may and encrypt check against it). */
static int32_t unverified_value(void) {
    return access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0 ? 0 : -1;
}

/* TLS established under `policy`, the certificate verdict `verified`; a command
 * inside TLS reaches the server, and the session ends cleanly. */
static void expect_tls(struct run *run, const char *policy, int32_t verified) {
    REQUIRE(run->s && run->r);
    if (!CHECK_RC(run->rc, MAILTLS_RESULT_OK))
        printf("    %s\n    %s\n", mailtls_session_last_error(run->s), json(run));
    CHECK_OUTCOME(run->r, MAILTLS_OUTCOME_TLS);
    CHECK_RC(mailtls_report_reason(run->r), MAILTLS_RESULT_OK);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(run->r), NULL);
    CHECK_STREQ(mailtls_report_policy(run->r), policy);
    CHECK(mailtls_report_peer_cert_verified(run->r) == verified);
    CHECK(mailtls_session_tls_active(run->s));
    CHECK(mailtls_report_attempt_count(run->r) == 1);
    CHECK(mailtls_report_attempt_class(run->r, 0) == MAILTLS_FAILURE_CLASS_NONE);
    char pj[64];
    snprintf(pj, sizeof pj, "\"policy\":\"%s\"", policy);
    CHECK_CONTAINS(json(run), strlen(json(run)), pj);
    if (mailtls_session_tls_active(run->s)) {
        struct linebuf *lb = calloc(1, sizeof *lb);
        defer_call(free, lb);
        char reply[512] = "";
        CHECK_RC(session_command(run->s, lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
        CHECK(strncmp(reply, "221", 3) == 0);
    }
    CHECK_PEER_OK(run->p);
    CHECK(run->p->sh->tls_was_active);
    CHECK_CONTAINS(run->p->sh->log, run->p->sh->nlog, "C: STARTTLS\nSTARTTLS: ok\nC: EHLO client.test\nC: QUIT");
}

/* The certificate was refused in the handshake: defer, one attempt, no retry. */
static void expect_cert_defer(struct run *run, mailtls_result code, const char *rfc8460, const char *policy) {
    REQUIRE(run->s && run->r);
    CHECK_RC(run->rc, code);
    CHECK_OUTCOME(run->r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(run->r), code);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(run->r), rfc8460);
    CHECK_STREQ(mailtls_report_policy(run->r), policy);
    CHECK(!mailtls_session_tls_active(run->s));
    CHECK(mailtls_report_attempt_count(run->r) == 1);
    CHECK_RC(mailtls_report_attempt_result(run->r, 0), code);
    CHECK(mailtls_report_attempt_class(run->r, 0) == MAILTLS_FAILURE_CLASS_CERTIFICATE);
    CHECK(mailtls_report_peer_cert_subject(run->r) != NULL);
    CHECK(mailtls_report_tls_version(run->r) == NULL);
    CHECK(mailtls_session_last_error(run->s)[0] != 0);
    CHECK_PEER_OK(run->p);
    CHECK(!run->p->sh->tls_was_active);
    CHECK_CONTAINS(run->p->sh->log, run->p->sh->nlog, "C: EHLO client.test\nC: STARTTLS\n");
    CHECK_NOT_CONTAINS(run->p->sh->log, run->p->sh->nlog, "STARTTLS: ok");
    CHECK_NOT_CONTAINS(run->p->sh->log, run->p->sh->nlog, "C: MAIL");
}

/* The client neither read nor wrote a byte: the fixture's greeting is still
 * there to read, and it received nothing. */
static void check_untouched(peer_t *p) {
    char line[512] = "";
    CHECK(raw_line(p->fd, line, sizeof line) > 0 && strncmp(line, "220 fixture.test", 16) == 0);
    CHECK_PEER_OK(p);
    CHECK(p->sh->nrecv == 0);
    CHECK_NOT_CONTAINS(p->sh->log, p->sh->nlog, "C: ");
    CHECK(p->sh->starttls_rc == UINT32_MAX);
}

/* Decided before connecting: defer, not one byte sent, no attempt. */
static void expect_early_defer(struct run *run, mailtls_result code, const char *rfc8460, const char *policy) {
    REQUIRE(run->s && run->r);
    CHECK_RC(run->rc, code);
    CHECK_OUTCOME(run->r, MAILTLS_OUTCOME_DEFER);
    CHECK_RC(mailtls_report_reason(run->r), code);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(run->r), rfc8460);
    CHECK_STREQ(mailtls_report_policy(run->r), policy);
    CHECK(!mailtls_session_tls_active(run->s));
    CHECK(mailtls_report_attempt_count(run->r) == 0);
    CHECK(mailtls_report_peer_cert_subject(run->r) == NULL);
    CHECK(mailtls_session_last_error(run->s)[0] != 0);
    /* The session is over: a second call gives the same verdict, still sending nothing. */
    CHECK_RC(mailtls_client_negotiate(run->s), code);
    check_untouched(run->p);
    CHECK(run->p->sh->nrecv == 0);
    CHECK_NOT_CONTAINS(run->p->sh->log, run->p->sh->nlog, "C: ");
    CHECK(run->p->sh->starttls_rc == UINT32_MAX);
}

/* The facts of a destination with a DNSSEC status (0: none given) and records. */
static void set_dane(struct run *run, uint32_t dnssec, const char *r1, const char *r2) {
    if (!run->s)
        return;
    if (dnssec)
        CHECK_RC(mailtls_session_set_dnssec(run->s, dnssec), MAILTLS_RESULT_OK);
    if (r1)
        CHECK_RC(mailtls_session_add_tlsa_text(run->s, r1), MAILTLS_RESULT_OK);
    if (r2)
        CHECK_RC(mailtls_session_add_tlsa_text(run->s, r2), MAILTLS_RESULT_OK);
}

#define MX_CHAIN pki("mx-chain.pem"), pki("mx.key")

/* ---- 1. DANE-EE ---- */

/* DANE-EE with each selector and matching type, by text and by fields. */
static void dane_ee_case(int selector, int mtype, int by_fields) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    const char *rec = tlsa(3, selector, mtype, pki("mx.pem"));
    REQUIRE(rec);
    CHECK_RC(mailtls_session_set_dnssec(run.s, MAILTLS_DNSSEC_SECURE), MAILTLS_RESULT_OK);
    if (by_fields)
        CHECK_RC(add_tlsa_fields(run.s, rec), MAILTLS_RESULT_OK);
    else
        CHECK_RC(mailtls_session_add_tlsa_text(run.s, rec), MAILTLS_RESULT_OK);
    negotiate(&run);
    expect_tls(&run, "dane-only", 1);
    const char *j = json(&run);
    CHECK_CONTAINS(j, strlen(j), "usable TLSA record");
}

TEST(dane_ee_spki_sha256_record_as_text_authenticates_the_server) { dane_ee_case(1, 1, 0); }
TEST(dane_ee_spki_sha256_record_by_fields_authenticates_the_server) { dane_ee_case(1, 1, 1); }
TEST(dane_ee_cert_sha256_record_authenticates_the_server) { dane_ee_case(0, 1, 0); }
TEST(dane_ee_spki_sha512_record_authenticates_the_server) { dane_ee_case(1, 2, 1); }
TEST(dane_ee_full_certificate_record_authenticates_the_server) { dane_ee_case(0, 0, 0); }
TEST(dane_ee_full_certificate_record_by_fields_authenticates_the_server) { dane_ee_case(0, 0, 1); }

TEST(dane_ee_mnemonic_record_under_policy_dane_is_policy_dane) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, MX_CHAIN, "mx.example.test"));
    const char *rec = tlsa(3, 1, 1, pki("mx.pem"));
    REQUIRE(rec);
    char mn[8192];
    snprintf(mn, sizeof mn, "DANE-EE SPKI SHA2-256 %s", rec + 6);
    /* A record of an unusable usage beside it changes nothing. */
    set_dane(&run, MAILTLS_DNSSEC_SECURE, mn, tlsa(1, 1, 1, pki("mx.pem")));
    negotiate(&run);
    expect_tls(&run, "dane", 1);
}

/* ---- 2. DANE-EE mismatch ---- */

TEST(dane_ee_mismatch_defers_certificate_not_trusted_after_one_attempt) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    /* Records for another key: the self-signed leaf's and the other leaf's. */
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 1, 1, pki("self.pem")), tlsa(3, 0, 1, pki("other.pem")));
    negotiate(&run);
    expect_cert_defer(&run, MAILTLS_RESULT_DANE_NO_MATCH, "certificate-not-trusted", "dane-only");
    const char *d = mailtls_report_detail(run.r);
    CHECK_CONTAINS(d, strlen(d), "TLSA");
}

struct redial {
    int connects, closes;
    struct fixture_opts plain; /* a fixture that never offers STARTTLS */
};

static int32_t redial_connect(void *ud, const char *host, uint16_t port, int32_t *out_fd) {
    struct redial *d = ud;
    (void)host;
    (void)port;
    d->connects++;
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &d->plain);
    if (!p)
        return ECONNREFUSED;
    *out_fd = dup(p->fd);
    defer_fd(*out_fd);
    return 0;
}

static void redial_close(void *ud, int32_t fd) {
    struct redial *d = ud;
    (void)fd; /* every fd here is closed after the test */
    d->closes++;
}

TEST(dane_mismatch_with_a_connector_makes_no_second_connection_and_never_plaintext) {
    for (int pol = 0; pol < 2; pol++) {
        uint32_t policy = pol ? MAILTLS_POLICY_DANE_ONLY : MAILTLS_POLICY_DANE;
        struct run run;
        REQUIRE(start(&run, policy, NULL, MX_CHAIN, "mx.example.test"));
        struct redial *d = calloc(1, sizeof *d);
        defer_call(free, d);
        d->plain.cfg = server_cfg(NULL, NULL, 0);
        REQUIRE(d->plain.cfg);
        CHECK_RC(mailtls_session_set_connector(run.s, redial_connect, redial_close, d), MAILTLS_RESULT_OK);
        set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 1, 1, pki("self.pem")), NULL);
        negotiate(&run);
        expect_cert_defer(&run, MAILTLS_RESULT_DANE_NO_MATCH, "certificate-not-trusted", pol ? "dane-only" : "dane");
        CHECK(d->connects == 0);
        CHECK(d->closes == 0);
        CHECK(mailtls_report_outcome(run.r) != MAILTLS_OUTCOME_PLAINTEXT);
    }
}

/* ---- 3. DANE-EE ignores names and dates ---- */

TEST(dane_ee_accepts_an_expired_self_signed_certificate) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, pki("expired.pem"), pki("expired.key"), "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 1, 1, pki("expired.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "dane-only", 1);
}

TEST(dane_ee_accepts_a_certificate_for_another_name) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, pki("other-chain.pem"), pki("other.key"), "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 0, 1, pki("other.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "dane", 1);
}

/* ---- 4. DANE-TA of the intermediate, and the reference names ---- */

TEST(dane_ta_of_the_sent_intermediate_authenticates_the_chain) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(2, 1, 1, pki("int.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "dane-only", 1);
}

TEST(dane_ta_of_the_intermediate_by_certificate_digest_authenticates_the_chain) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(2, 0, 1, pki("int.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "dane", 1);
}

/* A DANE-TA chain for mx.example.test, reached as `host` with the other names set. */
static void dane_ta_names(const char *chain, const char *key, const char *host, const char *mx, const char *hop,
                          const char *base, int want_ok) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, chain, key, host));
    if (mx)
        CHECK_RC(mailtls_session_set_mx_host(run.s, mx), MAILTLS_RESULT_OK);
    if (hop)
        CHECK_RC(mailtls_session_set_next_hop(run.s, hop), MAILTLS_RESULT_OK);
    if (base)
        CHECK_RC(mailtls_session_set_tlsa_base(run.s, base), MAILTLS_RESULT_OK);
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(2, 1, 1, pki("int.pem")), NULL);
    negotiate(&run);
    if (want_ok) {
        expect_tls(&run, "dane-only", 1);
    } else {
        expect_cert_defer(&run, MAILTLS_RESULT_CERTIFICATE_NAME_MISMATCH, "certificate-host-mismatch", "dane-only");
        const char *d = mailtls_report_detail(run.r);
        CHECK_CONTAINS(d, strlen(d), "DANE-TA");
    }
}

TEST(dane_ta_certificate_naming_none_of_the_reference_names_is_host_mismatch) {
    dane_ta_names(MX_CHAIN, "relay.other.test", "mx2.other.test", "other.test", "mx3.other.test", 0);
}

TEST(dane_ta_name_may_be_the_tlsa_base_domain) {
    dane_ta_names(MX_CHAIN, "relay.other.test", NULL, NULL, "mx.example.test", 1);
}

TEST(dane_ta_name_may_be_the_mx_host) {
    dane_ta_names(MX_CHAIN, "relay.other.test", "mx.example.test", NULL, NULL, 1);
}

TEST(dane_ta_name_may_be_the_next_hop_domain) {
    /* The certificate names example.test, the recipient domain, not its MX. */
    dane_ta_names(pki("hop-chain.pem"), pki("hop.key"), "mx1.example.test", NULL, "example.test", NULL, 1);
    dane_ta_names(pki("hop-chain.pem"), pki("hop.key"), "mx1.example.test", NULL, NULL, NULL, 0);
}

TEST(dane_ta_of_an_unsent_intermediate_digest_is_no_match) {
    /* The server sends its leaf alone: a digest of the issuer cannot be matched. */
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, pki("mx.pem"), pki("mx.key"), "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(2, 1, 1, pki("int.pem")), NULL);
    negotiate(&run);
    expect_cert_defer(&run, MAILTLS_RESULT_DANE_NO_MATCH, "certificate-not-trusted", "dane-only");
}

/* ---- 5. DANE-TA of the root, not sent ---- */

static void dane_ta_root(const char *chain, const char *rec, int want_ok) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, chain, pki("mx.key"), "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, rec, NULL);
    negotiate(&run);
    if (want_ok)
        expect_tls(&run, "dane-only", 1);
    else
        expect_cert_defer(&run, MAILTLS_RESULT_DANE_NO_MATCH, "certificate-not-trusted", "dane-only");
}

TEST(dane_ta_full_certificate_of_an_unsent_root_is_the_anchor) {
    dane_ta_root(pki("mx-chain.pem"), tlsa(2, 0, 0, pki("root.pem")), 1);
}

TEST(dane_ta_digest_of_an_unsent_root_is_no_match) {
    dane_ta_root(pki("mx-chain.pem"), tlsa(2, 0, 1, pki("root.pem")), 0);
}

TEST(dane_ta_full_public_key_of_an_unsent_root_is_the_anchor) {
    dane_ta_root(pki("mx-chain.pem"), tlsa(2, 1, 0, pki("root.pem")), 1);
}

TEST(dane_ta_digest_of_a_sent_root_is_the_anchor) {
    dane_ta_root(pki("mx-full.pem"), tlsa(2, 1, 1, pki("root.pem")), 1);
}

TEST(dane_ta_full_public_key_of_another_ca_is_no_match) {
    /* The key of a CA that signed nothing here, under the issuer's name. */
    dane_ta_root(pki("mx-chain.pem"), tlsa(2, 1, 0, pki("self.pem")), 0);
}

/* ---- 6. only unusable records ---- */

TEST(dane_with_only_pkix_records_is_encrypt_and_unchecked) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(0, 1, 1, pki("root.pem")), tlsa(1, 0, 1, pki("mx.pem")));
    negotiate(&run);
    expect_tls(&run, "encrypt", unverified_value());
    const char *j = json(&run);
    CHECK_CONTAINS(j, strlen(j), "no usable TLSA record");
}

TEST(dane_with_only_pkix_records_and_a_self_signed_peer_still_delivers_encrypted) {
    /* As encrypt: the records are not used to refuse anything. */
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, pki("self.pem"), pki("self.key"), "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(1, 1, 1, pki("mx.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "encrypt", unverified_value());
}

TEST(dane_only_with_only_pkix_records_defers_tlsa_invalid_before_connecting) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(0, 1, 1, pki("root.pem")), tlsa(1, 1, 1, pki("mx.pem")));
    negotiate(&run);
    expect_early_defer(&run, MAILTLS_RESULT_TLSA_UNUSABLE, "tlsa-invalid", "dane-only");
}

TEST(dane_only_with_unknown_selector_and_matching_type_defers_tlsa_invalid) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    const char *rec = tlsa(3, 1, 1, pki("mx.pem"));
    REQUIRE(rec);
    char bad_sel[8192], bad_mt[8192], short_digest[128];
    snprintf(bad_sel, sizeof bad_sel, "3 2 1 %s", rec + 6);
    snprintf(bad_mt, sizeof bad_mt, "3 1 3 %s", rec + 6);
    snprintf(short_digest, sizeof short_digest, "3 1 2 %s", rec + 6); /* 32 bytes for SHA-512 */
    set_dane(&run, MAILTLS_DNSSEC_SECURE, bad_sel, bad_mt);
    CHECK_RC(mailtls_session_add_tlsa_text(run.s, short_digest), MAILTLS_RESULT_OK);
    negotiate(&run);
    expect_early_defer(&run, MAILTLS_RESULT_TLSA_UNUSABLE, "tlsa-invalid", "dane-only");
}

/* ---- 7. insecure, or no status ---- */

TEST(dane_with_an_insecure_lookup_is_may) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, pki("self.pem"), pki("self.key"), "mx.example.test"));
    /* Records that would refuse this certificate are not DANE when insecure. */
    set_dane(&run, MAILTLS_DNSSEC_INSECURE, tlsa(3, 1, 1, pki("mx.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "may", unverified_value());
}

TEST(dane_with_no_dnssec_status_is_may) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, pki("self.pem"), pki("self.key"), "mx.example.test"));
    set_dane(&run, 0, tlsa(3, 1, 1, pki("mx.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "may", unverified_value());
}

TEST(dane_with_a_secure_empty_rrset_is_may) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, pki("self.pem"), pki("self.key"), "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, NULL, NULL);
    negotiate(&run);
    expect_tls(&run, "may", unverified_value());
}

TEST(dane_only_with_an_insecure_lookup_defers_dane_required_before_connecting) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_INSECURE, tlsa(3, 1, 1, pki("mx.pem")), NULL);
    negotiate(&run);
    expect_early_defer(&run, MAILTLS_RESULT_DANE_REQUIRED, "dane-required", "dane-only");
}

TEST(dane_only_with_no_dnssec_status_defers_dane_required_before_connecting) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, 0, tlsa(3, 1, 1, pki("mx.pem")), NULL);
    negotiate(&run);
    expect_early_defer(&run, MAILTLS_RESULT_DANE_REQUIRED, "dane-required", "dane-only");
}

TEST(dane_only_with_a_secure_empty_rrset_defers_dane_required_before_connecting) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, NULL, NULL);
    negotiate(&run);
    expect_early_defer(&run, MAILTLS_RESULT_DANE_REQUIRED, "dane-required", "dane-only");
}

/* ---- 8. bogus ---- */

TEST(dane_and_dane_only_with_a_bogus_lookup_defer_dnssec_invalid_before_connecting) {
    for (int pol = 0; pol < 2; pol++) {
        struct run run;
        REQUIRE(start(&run, pol ? MAILTLS_POLICY_DANE_ONLY : MAILTLS_POLICY_DANE, NULL, MX_CHAIN, "mx.example.test"));
        /* Even a record that would match: bogus data is no data. */
        set_dane(&run, MAILTLS_DNSSEC_BOGUS, tlsa(3, 1, 1, pki("mx.pem")), NULL);
        negotiate(&run);
        expect_early_defer(&run, MAILTLS_RESULT_DNSSEC_BOGUS, "dnssec-invalid", pol ? "dane-only" : "dane");
    }
}

TEST(dane_with_a_bogus_lookup_and_no_records_defers_dnssec_invalid) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_BOGUS, NULL, NULL);
    negotiate(&run);
    expect_early_defer(&run, MAILTLS_RESULT_DNSSEC_BOGUS, "dnssec-invalid", "dane");
}

/* ---- 9. plaintext ---- */

static const struct step NO_STARTTLS_QUIT[] = {GREET_NO_OFFER, EXPECT("QUIT"), EXPECT_EOF, END};
static const struct step NO_STARTTLS[] = {GREET_NO_OFFER, EXPECT_EOF, END};

TEST(dane_with_usable_records_and_no_starttls_defers_never_plaintext) {
    for (int pol = 0; pol < 2; pol++) {
        const mailtls_config *cfg = client_cfg(pol ? MAILTLS_POLICY_DANE_ONLY : MAILTLS_POLICY_DANE, NULL);
        const char *rec = tlsa(3, 1, 1, pki("mx.pem"));
        REQUIRE(cfg && rec);
        peer_t *p = script_start(VIA_SOCKETPAIR, NO_STARTTLS_QUIT);
        REQUIRE(p);
        mailtls_session *s = client_on_fd(cfg, "mx.example.test", p->fd);
        REQUIRE(s);
        CHECK_RC(mailtls_session_set_dnssec(s, MAILTLS_DNSSEC_SECURE), MAILTLS_RESULT_OK);
        CHECK_RC(mailtls_session_add_tlsa_text(s, rec), MAILTLS_RESULT_OK);
        CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
        const mailtls_report *r = mailtls_session_report(s);
        CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
        CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
        CHECK_STREQ(mailtls_report_rfc8460_result_type(r), "starttls-not-supported");
        CHECK_STREQ(mailtls_report_policy(r), pol ? "dane-only" : "dane");
        CHECK(!mailtls_report_starttls_offered(r));
        /* No plaintext session to write into. */
        uintptr_t k = 0;
        CHECK(mailtls_session_write(s, (const uint8_t *)"MAIL FROM:<a@b>\r\n", 17, &k) != MAILTLS_RESULT_OK);
        CHECK_PEER_OK(p);
        CHECK_NOT_CONTAINS(p->sh->recv, p->sh->nrecv, "MAIL");
    }
}

TEST(dane_with_an_insecure_lookup_and_no_starttls_goes_plaintext_as_may) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_DANE, NULL);
    const char *rec = tlsa(3, 1, 1, pki("mx.pem"));
    REQUIRE(cfg && rec);
    peer_t *p = script_start(VIA_SOCKETPAIR, NO_STARTTLS);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.example.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_session_set_dnssec(s, MAILTLS_DNSSEC_INSECURE), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_add_tlsa_text(s, rec), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_PLAINTEXT);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(r), "starttls-not-supported");
    CHECK_STREQ(mailtls_report_policy(r), "may");
    CHECK(!mailtls_session_tls_active(s));
    CHECK_PEER_OK(p);
}

/* ---- 10. MTA-STS ---- */

static const char STS_ENFORCE[] = "version: STSv1\r\nmode: enforce\r\nmx: *.example.test\r\nmax_age: 86400\r\n";
static const char STS_TESTING[] = "version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 86400\n";

struct logbuf {
    size_t n;
    char text[32 * 1024];
};

static void on_log(void *ud, uint32_t level, const char *msg) {
    struct logbuf *l = ud;
    (void)level;
    int k = snprintf(l->text + l->n, sizeof l->text - l->n, "%s\n", msg);
    if (k > 0 && l->n + (size_t)k < sizeof l->text)
        l->n += (size_t)k;
}

/* A client config under `policy` trusting the test root, logging into `log`. */
static const mailtls_config *sts_client_cfg(uint32_t policy, struct logbuf *log) {
    mailtls_config_builder *b = client_builder(policy);
    const char *root = pki("root.pem");
    if (!b || !root || !CHECK_RC(mailtls_config_builder_set_ca_file(b, root), MAILTLS_RESULT_OK))
        return NULL;
    if (log)
        CHECK_RC(mailtls_config_builder_set_log(b, on_log, log, MAILTLS_LOG_LEVEL_DEBUG), MAILTLS_RESULT_OK);
    return build_config(b);
}

static mailtls_result set_sts(struct run *run, const char *policy) {
    return mailtls_session_set_mta_sts(run->s, (const uint8_t *)policy, strlen(policy));
}

TEST(mta_sts_enforce_with_a_listed_mx_and_a_valid_certificate_is_verify) {
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_MAY, NULL), MX_CHAIN, "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_ENFORCE), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_next_hop(run.s, "example.test"), MAILTLS_RESULT_OK);
    negotiate(&run);
    expect_tls(&run, "verify", 1);
}

TEST(mta_sts_enforce_with_an_mx_outside_the_policy_defers_before_connecting) {
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_MAY, NULL), MX_CHAIN, "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_ENFORCE), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_mx_host(run.s, "mx.other.test"), MAILTLS_RESULT_OK);
    negotiate(&run);
    /* Held to the enforced policy, which keeps this MX out. */
    expect_early_defer(&run, MAILTLS_RESULT_STS_MX_MISMATCH, "validation-failure", "verify");
    const char *d = mailtls_report_detail(run.r);
    CHECK_CONTAINS(d, strlen(d), "mx.other.test");
}

TEST(mta_sts_enforce_wildcard_matches_one_label_only) {
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_ENCRYPT, NULL), MX_CHAIN, "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_ENFORCE), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_mx_host(run.s, "a.mx.example.test"), MAILTLS_RESULT_OK);
    negotiate(&run);
    expect_early_defer(&run, MAILTLS_RESULT_STS_MX_MISMATCH, "validation-failure", "verify");
}

TEST(mta_sts_enforce_with_an_untrusted_certificate_defers_certificate_untrusted) {
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_MAY, NULL), pki("self.pem"), pki("self.key"),
                       "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_ENFORCE), MAILTLS_RESULT_OK);
    negotiate(&run);
    expect_cert_defer(&run, MAILTLS_RESULT_CERTIFICATE_UNTRUSTED, "certificate-not-trusted", "verify");
}

TEST(mta_sts_enforce_with_a_certificate_for_another_name_defers_host_mismatch) {
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_MAY, NULL), pki("other-chain.pem"), pki("other.key"),
                       "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_ENFORCE), MAILTLS_RESULT_OK);
    negotiate(&run);
    expect_cert_defer(&run, MAILTLS_RESULT_CERTIFICATE_NAME_MISMATCH, "certificate-host-mismatch", "verify");
}

TEST(mta_sts_enforce_without_starttls_defers_never_plaintext) {
    const mailtls_config *cfg = sts_client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg);
    peer_t *p = script_start(VIA_SOCKETPAIR, NO_STARTTLS_QUIT);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(cfg, "mx.example.test", p->fd);
    REQUIRE(s);
    CHECK_RC(mailtls_session_set_mta_sts(s, (const uint8_t *)STS_ENFORCE, strlen(STS_ENFORCE)), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_STARTTLS_NOT_OFFERED);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    CHECK_STREQ(mailtls_report_rfc8460_result_type(r), "starttls-not-supported");
    CHECK_STREQ(mailtls_report_policy(r), "verify");
    CHECK_PEER_OK(p);
}

TEST(mta_sts_testing_with_an_untrusted_certificate_delivers_and_logs_what_enforce_would_do) {
    /* The TLS-RPT record of the session has no accessor in this API yet; the
     * outcome, the policy, the certificate verdict and the log are checked. */
    struct logbuf *log = calloc(1, sizeof *log);
    defer_call(free, log);
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_MAY, log), pki("self.pem"), pki("self.key"),
                       "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_TESTING), MAILTLS_RESULT_OK);
    negotiate(&run);
    expect_tls(&run, "may", 0);
    const char *j = json(&run);
    CHECK_CONTAINS(j, strlen(j), "MTA-STS testing");
    CHECK_CONTAINS(log->text, log->n, "MTA-STS testing: the certificate would fail enforce");
}

TEST(mta_sts_testing_with_a_valid_certificate_logs_no_failure) {
    struct logbuf *log = calloc(1, sizeof *log);
    defer_call(free, log);
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_MAY, log), MX_CHAIN, "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_TESTING), MAILTLS_RESULT_OK);
    negotiate(&run);
    expect_tls(&run, "may", 1);
    CHECK_NOT_CONTAINS(log->text, log->n, "would fail enforce");
}

TEST(mta_sts_invalid_policy_is_refused_and_the_session_keeps_its_config_policy) {
    static const char *const bad[] = {
        "version: STSv1\nmode: enforce\nmax_age: 86400\n",              /* no mx */
        "version: STSv2\nmode: enforce\nmx: *.example.test\nmax_age: 1\n", /* version */
        "mode: enforce\nmx: *.example.test\nmax_age: 1\n",             /* no version */
        "version: STSv1\nmode: strict\nmx: *.example.test\nmax_age: 1\n",  /* mode */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct run run;
        /* A self-signed certificate: under the config's may it is delivered to. */
        REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_MAY, NULL), pki("self.pem"), pki("self.key"),
                           "mx.example.test", 0));
        if (!CHECK_RC(set_sts(&run, bad[i]), MAILTLS_RESULT_STS_POLICY_INVALID))
            printf("    policy %zu: \"%s\"\n", i, show_bytes(bad[i], strlen(bad[i])));
        const char *e = mailtls_session_last_error(run.s);
        CHECK_CONTAINS(e, strlen(e), "MTA-STS policy");
        negotiate(&run);
        expect_tls(&run, "may", 0);
        const char *j = json(&run);
        CHECK_CONTAINS(j, strlen(j), "treated as no policy");
    }
}

/* ---- 11. DANE and MTA-STS ---- */

TEST(dane_decides_over_an_mta_sts_policy_that_does_not_list_the_mx) {
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_DANE, NULL), MX_CHAIN, "mx.example.test", 0));
    static const char other[] = "version: STSv1\nmode: enforce\nmx: mail.elsewhere.test\nmax_age: 86400\n";
    CHECK_RC(set_sts(&run, other), MAILTLS_RESULT_OK);
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 1, 1, pki("mx.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "dane", 1);
}

TEST(dane_decides_over_mta_sts_enforce_for_a_certificate_the_ca_does_not_vouch_for) {
    /* The self-signed leaf would fail enforce; its DANE-EE record makes it good. */
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_DANE, NULL), pki("self.pem"), pki("self.key"),
                       "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_ENFORCE), MAILTLS_RESULT_OK);
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 1, 1, pki("self.pem")), NULL);
    negotiate(&run);
    expect_tls(&run, "dane", 1);
}

TEST(dane_with_an_insecure_lookup_leaves_mta_sts_enforce_in_charge) {
    struct run run;
    REQUIRE(start_with(&run, sts_client_cfg(MAILTLS_POLICY_DANE, NULL), pki("self.pem"), pki("self.key"),
                       "mx.example.test", 0));
    CHECK_RC(set_sts(&run, STS_ENFORCE), MAILTLS_RESULT_OK);
    set_dane(&run, MAILTLS_DNSSEC_INSECURE, tlsa(3, 1, 1, pki("self.pem")), NULL);
    negotiate(&run);
    expect_cert_defer(&run, MAILTLS_RESULT_CERTIFICATE_UNTRUSTED, "certificate-not-trusted", "verify");
}

/* ---- 12. misuse ---- */

TEST(dane_setters_refuse_null_arguments) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_DANE, NULL);
    mailtls_session *s = client_session(cfg, "mx.example.test");
    REQUIRE(s);
    static const uint8_t d32[32] = {1};
    CHECK_RC(mailtls_session_add_tlsa(NULL, 3, 1, 1, d32, 32), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_add_tlsa(s, 3, 1, 1, NULL, 32), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_add_tlsa_text(NULL, "3 1 1 00"), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_add_tlsa_text(s, NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_dnssec(NULL, MAILTLS_DNSSEC_SECURE), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_tlsa_base(NULL, "mx.example.test"), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_tlsa_base(s, NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_mx_host(NULL, "mx.example.test"), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_mx_host(s, NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_next_hop(NULL, "example.test"), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_next_hop(s, NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_mta_sts(NULL, (const uint8_t *)STS_ENFORCE, strlen(STS_ENFORCE)),
             MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_session_set_mta_sts(s, NULL, 10), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK(mailtls_report_policy(NULL) == NULL);
    /* Before negotiating there is no policy yet. */
    CHECK(mailtls_report_policy(mailtls_session_report(s)) == NULL);
}

TEST(dane_malformed_tlsa_records_are_invalid_parameters_naming_tlsa) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_DANE, NULL);
    mailtls_session *s = client_session(cfg, "mx.example.test");
    REQUIRE(s);
    static const char *const bad[] = {"3 1 1 zz", "3 1", "", "3 1 1", "3 1 1 abc", "256 1 1 00", "x 1 1 00",
                                      "3 1 1 0g"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (!CHECK_RC(mailtls_session_add_tlsa_text(s, bad[i]), MAILTLS_RESULT_INVALID_PARAMETER))
            printf("    record \"%s\"\n", bad[i]);
        const char *e = mailtls_session_last_error(s);
        CHECK_CONTAINS(e, strlen(e), "TLSA");
    }
    /* Empty data by fields. */
    CHECK_RC(mailtls_session_add_tlsa(s, 3, 1, 1, NULL, 0), MAILTLS_RESULT_INVALID_PARAMETER);
    const char *e = mailtls_session_last_error(s);
    CHECK_CONTAINS(e, strlen(e), "TLSA");
    /* Hex split by spaces, and upper case, is fine. */
    CHECK_RC(mailtls_session_add_tlsa_text(s, "3 1 1 00112233445566778899AABBCCDDEEFF 00112233445566778899aabbccddeeff"),
             MAILTLS_RESULT_OK);
}

TEST(dane_dnssec_status_outside_the_enum_is_an_invalid_parameter) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_DANE, NULL);
    mailtls_session *s = client_session(cfg, "mx.example.test");
    REQUIRE(s);
    CHECK_RC(mailtls_session_set_dnssec(s, 0), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_session_set_dnssec(s, 4), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_session_set_dnssec(s, UINT32_MAX), MAILTLS_RESULT_INVALID_PARAMETER);
    const char *e = mailtls_session_last_error(s);
    CHECK_CONTAINS(e, strlen(e), "DNSSEC");
    CHECK_RC(mailtls_session_set_dnssec(s, MAILTLS_DNSSEC_BOGUS), MAILTLS_RESULT_OK);
}

TEST(dane_destination_names_must_be_dns_names) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_DANE, NULL);
    mailtls_session *s = client_session(cfg, "mx.example.test");
    REQUIRE(s);
    static const char *const bad[] = {"a b", "127.0.0.1", "::1", "", "mx..example.test", "-mx.example.test"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int ok = CHECK_RC(mailtls_session_set_tlsa_base(s, bad[i]), MAILTLS_RESULT_INVALID_PARAMETER);
        ok &= CHECK_RC(mailtls_session_set_mx_host(s, bad[i]), MAILTLS_RESULT_INVALID_PARAMETER);
        ok &= CHECK_RC(mailtls_session_set_next_hop(s, bad[i]), MAILTLS_RESULT_INVALID_PARAMETER);
        if (!ok)
            printf("    name \"%s\"\n", bad[i]);
    }
    /* An absolute name (trailing dot) and upper case are DNS names. */
    CHECK_RC(mailtls_session_set_tlsa_base(s, "MX.Example.Test."), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_mx_host(s, "mx.example.test."), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_next_hop(s, "example.test"), MAILTLS_RESULT_OK);
}

TEST(dane_at_most_64_tlsa_records_and_duplicates_count_once) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_DANE, NULL);
    mailtls_session *s = client_session(cfg, "mx.example.test");
    REQUIRE(s);
    uint8_t d[32] = {0};
    CHECK_RC(mailtls_session_add_tlsa(s, 3, 1, 1, d, sizeof d), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_add_tlsa(s, 3, 1, 1, d, sizeof d), MAILTLS_RESULT_OK); /* a duplicate */
    for (int i = 1; i < 64; i++) {
        d[0] = (uint8_t)i;
        if (!CHECK_RC(mailtls_session_add_tlsa(s, 3, 1, 1, d, sizeof d), MAILTLS_RESULT_OK))
            printf("    record %d\n", i + 1);
    }
    /* Full: a duplicate is still ignored, a new record is refused. */
    d[0] = 17;
    CHECK_RC(mailtls_session_add_tlsa(s, 3, 1, 1, d, sizeof d), MAILTLS_RESULT_OK);
    d[0] = 200;
    CHECK_RC(mailtls_session_add_tlsa(s, 3, 1, 1, d, sizeof d), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_session_add_tlsa_text(s, "2 0 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
             MAILTLS_RESULT_INVALID_PARAMETER);
    const char *e = mailtls_session_last_error(s);
    CHECK_CONTAINS(e, strlen(e), "64");
}

/* Every destination setter on a session that may no longer take one. */
static void check_setters_state(mailtls_session *s) {
    static const uint8_t d32[32] = {7};
    CHECK_RC(mailtls_session_add_tlsa(s, 3, 1, 1, d32, 32), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_session_add_tlsa_text(s, "3 1 1 0707070707070707070707070707070707070707070707070707070707070707"),
             MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_session_set_dnssec(s, MAILTLS_DNSSEC_SECURE), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_session_set_tlsa_base(s, "mx.example.test"), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_session_set_mx_host(s, "mx.example.test"), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_session_set_next_hop(s, "example.test"), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_session_set_mta_sts(s, (const uint8_t *)STS_ENFORCE, strlen(STS_ENFORCE)),
             MAILTLS_RESULT_INVALID_STATE);
}

TEST(dane_setters_after_negotiating_are_invalid_state) {
    struct run run;
    REQUIRE(start(&run, MAILTLS_POLICY_DANE, NULL, MX_CHAIN, "mx.example.test"));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 1, 1, pki("mx.pem")), NULL);
    negotiate(&run);
    CHECK_RC(run.rc, MAILTLS_RESULT_OK);
    check_setters_state(run.s);
    /* And the refused setters changed nothing: still TLS under dane. */
    expect_tls(&run, "dane", 1);
    /* After an early defer too. */
    struct run early;
    REQUIRE(start(&early, MAILTLS_POLICY_DANE_ONLY, NULL, MX_CHAIN, "mx.example.test"));
    negotiate(&early);
    CHECK_RC(early.rc, MAILTLS_RESULT_DANE_REQUIRED);
    check_setters_state(early.s);
    check_untouched(early.p);
}

TEST(dane_setters_on_a_server_session_are_invalid_state) {
    const mailtls_config *scfg = fixture_cfg(MX_CHAIN);
    REQUIRE(scfg);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_server_new(scfg, MAILTLS_PROTO_SMTP, "127.0.0.1", &s), MAILTLS_RESULT_OK);
    defer_session(s);
    check_setters_state(s);
}

/* ---- 13. read sizes and EAGAIN ---- */

TEST(dane_ee_match_with_one_byte_reads_and_eagain) {
    struct run run;
    REQUIRE(start_with(&run, client_cfg(MAILTLS_POLICY_DANE_ONLY, NULL), MX_CHAIN, "mx.example.test", 1));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 1, 1, pki("mx.pem")), NULL);
    negotiate(&run);
    CHECK(run.io->eagains > 10 && run.io->rcalls > 1000);
    expect_tls(&run, "dane-only", 1);
}

TEST(dane_ta_match_with_one_byte_reads_and_eagain) {
    struct run run;
    REQUIRE(start_with(&run, client_cfg(MAILTLS_POLICY_DANE, NULL), MX_CHAIN, "mx.example.test", 1));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(2, 0, 0, pki("root.pem")), NULL);
    negotiate(&run);
    CHECK(run.io->eagains > 10);
    expect_tls(&run, "dane", 1);
}

TEST(dane_mismatch_with_one_byte_reads_and_eagain) {
    struct run run;
    REQUIRE(start_with(&run, client_cfg(MAILTLS_POLICY_DANE_ONLY, NULL), MX_CHAIN, "mx.example.test", 1));
    set_dane(&run, MAILTLS_DNSSEC_SECURE, tlsa(3, 1, 1, pki("self.pem")), NULL);
    negotiate(&run);
    CHECK(run.io->eagains > 10);
    expect_cert_defer(&run, MAILTLS_RESULT_DANE_NO_MATCH, "certificate-not-trusted", "dane-only");
}
