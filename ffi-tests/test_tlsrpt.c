/* TLS-RPT (RFC 8460) through the header: record lines added up into an aggregate,
 * the report's JSON, refused lines, NULL arguments, the size query. */
#include "support.h"

#include <stdlib.h>
#include <unistd.h>

#define DAY 1704067200ull /* 2024-01-01T00:00:00Z */

/* Record lines as mailtls_report_tlsrpt_record writes them; TIME is the seconds
 * after DAY, as text. */
#define TLSA_POLICY                                                                  \
    "\"policy-type\":\"tlsa\",\"policy-string\":[\"3 1 1 0123456789abcdef\"],"       \
    "\"policy-domain\":\"a.example\",\"mx-host\":[\"mx.a.example\"]"
#define STS_POLICY                                                                   \
    "\"policy-type\":\"sts\",\"policy-string\":[\"version: STSv1\",\"mode: enforce\"," \
    "\"mx: *.b.example\"],\"policy-domain\":\"b.example\",\"mx-host\":[\"*.b.example\"]"
#define NO_POLICY                                                                    \
    "\"policy-type\":\"no-policy-found\",\"policy-string\":[],\"policy-domain\":\"c.example\",\"mx-host\":[]"
#define AT(secs) "{\"mailtls-tlsrpt\":1,\"time\":" #secs ","
#define OK "\"result\":\"success\"}"

/* DAY + 1 .. 7, with 1704067200 + n spelt out (the preprocessor cannot add). */
static const char *const lines[] = {
    AT(1704067201) TLSA_POLICY "," OK,
    AT(1704067202) TLSA_POLICY "," OK,
    AT(1704067203) TLSA_POLICY ",\"result\":\"failure\",\"result-type\":\"dnssec-invalid\","
                   "\"receiving-mx-hostname\":\"mx.a.example\",\"failure-reason-code\":\"bogus\"}",
    AT(1704067204) STS_POLICY "," OK,
    AT(1704067205) STS_POLICY ",\"result\":\"failure\",\"result-type\":\"certificate-expired\","
                   "\"sending-mta-ip\":\"192.0.2.1\",\"receiving-ip\":\"192.0.2.25\"}",
    AT(1704067206) STS_POLICY ",\"result\":\"failure\",\"result-type\":\"certificate-expired\","
                   "\"sending-mta-ip\":\"192.0.2.1\",\"receiving-ip\":\"192.0.2.25\"}\n",
    AT(1704067207) STS_POLICY ",\"result\":\"failure\",\"result-type\":\"sts-policy-fetch-error\"}\r\n",
    AT(1704067208) NO_POLICY "," OK,
    AT(1704067209) NO_POLICY ",\"result\":\"failure\",\"result-type\":\"starttls-not-supported\","
                   "\"receiving-mx-helo\":\"mx.c.example\",\"additional-information\":\"said \\\"no\\\"\"}",
    /* The day before and the day after: in no report of DAY. */
    AT(1704067199) NO_POLICY "," OK,
    AT(1704153600) TLSA_POLICY "," OK,
};
#define NLINES (sizeof lines / sizeof lines[0])

static void free_agg(void *a) { mailtls_tlsrpt_free(a); }

static mailtls_tlsrpt *new_agg(void) {
    mailtls_tlsrpt *a = NULL;
    if (!CHECK_RC(mailtls_tlsrpt_new("Example Sender", "mailto:tlsrpt@sender.example", &a), MAILTLS_RESULT_OK))
        return NULL;
    defer_call(free_agg, a);
    return a;
}

/* The report for [start, end) in a malloc'd buffer (deferred free), by the size query. */
static char *write_report(mailtls_tlsrpt *a, uint64_t start, uint64_t end, const char *id) {
    size_t needed = 0;
    if (!CHECK_RC(mailtls_tlsrpt_write(a, start, end, id, NULL, 0, &needed), MAILTLS_RESULT_BUFFER_TOO_SMALL))
        return NULL;
    CHECK(needed > 1);
    char *buf = malloc(needed);
    if (!buf)
        return NULL;
    defer_call(free, buf);
    size_t again = 0;
    if (!CHECK_RC(mailtls_tlsrpt_write(a, start, end, id, buf, needed, &again), MAILTLS_RESULT_OK))
        return NULL;
    CHECK(again == needed);
    CHECK(strlen(buf) + 1 == needed);
    return buf;
}

#define CHECK_HAS(json, fragment) CHECK_CONTAINS(json, strlen(json), fragment)
#define CHECK_HASNT(json, fragment) CHECK_NOT_CONTAINS(json, strlen(json), fragment)

TEST(tlsrpt_records_of_three_policies_add_up_per_policy_and_failure) {
    mailtls_tlsrpt *a = new_agg();
    REQUIRE(a != NULL);
    for (size_t i = 0; i < NLINES; i++) {
        if (!CHECK_RC(mailtls_tlsrpt_add_record(a, lines[i]), MAILTLS_RESULT_OK))
            test_fail(__FILE__, __LINE__, "line %zu: %s", i, mailtls_tlsrpt_last_error(a));
    }
    CHECK(mailtls_tlsrpt_session_count(a) == NLINES);
    uint64_t first = 0, last = 0;
    CHECK_RC(mailtls_tlsrpt_time_range(a, &first, &last), MAILTLS_RESULT_OK);
    CHECK(first == DAY - 1);
    CHECK(last == DAY + 86400);

    const char *j = write_report(a, DAY, DAY + 86400, "2024-01-01T00:00:00Z_sender.example");
    REQUIRE(j != NULL);
    CHECK_HAS(j, "{\"organization-name\":\"Example Sender\",\"date-range\":{\"start-datetime\":"
                 "\"2024-01-01T00:00:00Z\",\"end-datetime\":\"2024-01-01T23:59:59Z\"},"
                 "\"contact-info\":\"mailto:tlsrpt@sender.example\","
                 "\"report-id\":\"2024-01-01T00:00:00Z_sender.example\",\"policies\":[");
    /* a.example: two successes (the one of the next day is out), one DNSSEC failure. */
    CHECK_HAS(j, "{\"policy\":{" TLSA_POLICY "},\"summary\":{\"total-successful-session-count\":2,"
                 "\"total-failure-session-count\":1},\"failure-details\":[{\"result-type\":\"dnssec-invalid\","
                 "\"receiving-mx-hostname\":\"mx.a.example\",\"failed-session-count\":1,"
                 "\"failure-reason-code\":\"bogus\"}]}");
    /* b.example: the two identical expired-certificate failures are one entry. */
    CHECK_HAS(j, "\"summary\":{\"total-successful-session-count\":1,\"total-failure-session-count\":3},"
                 "\"failure-details\":[{\"result-type\":\"certificate-expired\",\"sending-mta-ip\":\"192.0.2.1\","
                 "\"receiving-ip\":\"192.0.2.25\",\"failed-session-count\":2},"
                 "{\"result-type\":\"sts-policy-fetch-error\",\"failed-session-count\":1}]}");
    /* c.example: no policy, no MX host known (left out), one failure with its text escaped. */
    CHECK_HAS(j, "{\"policy\":{\"policy-type\":\"no-policy-found\",\"policy-string\":[],"
                 "\"policy-domain\":\"c.example\"},\"summary\":{\"total-successful-session-count\":1,"
                 "\"total-failure-session-count\":1},\"failure-details\":[{\"result-type\":"
                 "\"starttls-not-supported\",\"receiving-mx-helo\":\"mx.c.example\",\"failed-session-count\":1,"
                 "\"additional-information\":\"said \\\"no\\\"\"}]}]}");
    /* In order of domain. */
    const char *pa = strstr(j, "\"a.example\""), *pb = strstr(j, "\"b.example\""), *pc = strstr(j, "\"c.example\"");
    CHECK(pa && pb && pc && pa < pb && pb < pc);
    CHECK_HASNT(j, "null");

    /* The next day: only the session of 2024-01-02, and no failure-details for it. */
    const char *next = write_report(a, DAY + 86400, DAY + 2 * 86400, "next");
    REQUIRE(next != NULL);
    CHECK_HAS(next, "\"summary\":{\"total-successful-session-count\":1,\"total-failure-session-count\":0}}]}");
    CHECK_HASNT(next, "failure-details");
    CHECK_HASNT(next, "b.example");
}

TEST(tlsrpt_bad_record_lines_are_refused_with_the_reason) {
    static const struct {
        const char *line, *why;
    } bad[] = {
        {"", "not a JSON object"},
        {"not json", "not a JSON object"},
        {"{\"mailtls-tlsrpt\":1", "EOF"},
        {AT(1) TLSA_POLICY ",\"result\":\"failure\",\"result-type\":\"certificate-stale\"}", "unknown result-type"},
        {AT(1) "\"policy-type\":\"dane\",\"policy-string\":[],\"policy-domain\":\"d\",\"mx-host\":[]," OK,
         "unknown policy-type \"dane\""},
        {AT(1) "\"policy-type\":\"sts\",\"policy-string\":[],\"mx-host\":[]," OK, "missing field `policy-domain`"},
        {AT(1) TLSA_POLICY ",\"result\":\"failure\"}", "a failure without result-type"},
        {AT(1) TLSA_POLICY ",\"result\":\"success\",\"receiving-ip\":\"192.0.2.1\"}", "a success with failure fields"},
        {AT(1) TLSA_POLICY ",\"colour\":\"red\"," OK, "unknown field `colour`"},
        {"{\"mailtls-tlsrpt\":7,\"time\":1," TLSA_POLICY "," OK, "format version 7"},
        {AT(1) TLSA_POLICY "," OK "\n" AT(2) TLSA_POLICY "," OK, "more than one line"},
    };
    mailtls_tlsrpt *a = new_agg();
    REQUIRE(a != NULL);
    CHECK_STREQ(mailtls_tlsrpt_last_error(a), "");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(mailtls_tlsrpt_add_record(a, bad[i].line), MAILTLS_RESULT_TLSRPT_RECORD_INVALID);
        const char *why = mailtls_tlsrpt_last_error(a);
        if (!CHECK(why != NULL && strstr(why, bad[i].why) != NULL))
            test_fail(__FILE__, __LINE__, "line %zu: \"%s\" does not say \"%s\"", i, why ? why : "(null)", bad[i].why);
    }
    /* Invalid UTF-8 and an over-long line. */
    CHECK_RC(mailtls_tlsrpt_add_record(a, "{\"\xff\"}"), MAILTLS_RESULT_TLSRPT_RECORD_INVALID);
    CHECK(strstr(mailtls_tlsrpt_last_error(a), "not UTF-8") != NULL);
    size_t n = 70000;
    char *huge = malloc(n + 1);
    REQUIRE(huge != NULL);
    defer_call(free, huge);
    memset(huge, ' ', n);
    huge[0] = '{';
    huge[n] = 0;
    CHECK_RC(mailtls_tlsrpt_add_record(a, huge), MAILTLS_RESULT_TLSRPT_RECORD_INVALID);
    CHECK(strstr(mailtls_tlsrpt_last_error(a), "more than the 65536") != NULL);
    CHECK_STREQ(mailtls_result_name(MAILTLS_RESULT_TLSRPT_RECORD_INVALID), "tlsrpt-record-invalid");

    /* Nothing refused was counted, and the aggregate still works. */
    CHECK(mailtls_tlsrpt_session_count(a) == 0);
    uint64_t first, last;
    CHECK_RC(mailtls_tlsrpt_time_range(a, &first, &last), MAILTLS_RESULT_INVALID_STATE);
    CHECK_RC(mailtls_tlsrpt_add_record(a, lines[0]), MAILTLS_RESULT_OK);
    CHECK(mailtls_tlsrpt_session_count(a) == 1);
}

TEST(tlsrpt_a_session_without_a_result_has_no_record) {
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_MAY, NULL);
    REQUIRE(cfg != NULL);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "mx.test", 25, &s), MAILTLS_RESULT_OK);
    defer_session(s);
    const mailtls_report *r = mailtls_session_report(s);
    REQUIRE(r != NULL);
    /* Not negotiated: no TLS-RPT result yet. */
    CHECK(mailtls_report_tlsrpt_record(r) == NULL);
    mailtls_tlsrpt *a = new_agg();
    REQUIRE(a != NULL);
    CHECK_RC(mailtls_tlsrpt_add_report(a, r), MAILTLS_RESULT_INVALID_STATE);
    CHECK(strstr(mailtls_tlsrpt_last_error(a), "no TLS-RPT result") != NULL);
    CHECK(mailtls_tlsrpt_session_count(a) == 0);
}

TEST(tlsrpt_null_and_bad_arguments) {
    mailtls_tlsrpt *a = (mailtls_tlsrpt *)0x1; /* must stay untouched on failure */
    CHECK_RC(mailtls_tlsrpt_new(NULL, "c", &a), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_new("o", NULL, &a), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_new("o", "c", NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_new("", "c", &a), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_new("o", "", &a), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK(a == (mailtls_tlsrpt *)0x1);
    mailtls_tlsrpt_free(NULL);
    CHECK_RC(mailtls_tlsrpt_add_record(NULL, lines[0]), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_add_report(NULL, NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK(mailtls_tlsrpt_session_count(NULL) == 0);
    CHECK(mailtls_tlsrpt_last_error(NULL) == NULL);
    CHECK(mailtls_report_tlsrpt_record(NULL) == NULL);
    size_t needed = 0;
    CHECK_RC(mailtls_tlsrpt_write(NULL, 0, 1, "r", NULL, 0, &needed), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_write_file(NULL, 0, 1, "r", "/dev/null"), MAILTLS_RESULT_NULL_PARAMETER);

    a = new_agg();
    REQUIRE(a != NULL);
    uint64_t t;
    CHECK_RC(mailtls_tlsrpt_add_record(a, NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_add_report(a, NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_time_range(a, NULL, &t), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_time_range(a, &t, NULL), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_write(a, 0, 1, NULL, NULL, 0, &needed), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_write_file(a, 0, 1, "r", NULL), MAILTLS_RESULT_NULL_PARAMETER);
    /* An empty range, a range past year 9999, an empty report id. */
    needed = 12345;
    CHECK_RC(mailtls_tlsrpt_write(a, 5, 5, "r", NULL, 0, &needed), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK(strstr(mailtls_tlsrpt_last_error(a), "is empty") != NULL);
    CHECK_RC(mailtls_tlsrpt_write(a, 0, 253402300801ull, "r", NULL, 0, &needed), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_tlsrpt_write(a, 0, 1, "", NULL, 0, &needed), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK(needed == 12345);
}

TEST(tlsrpt_buffer_too_small_writes_nothing_then_the_retry_fits) {
    mailtls_tlsrpt *a = new_agg();
    REQUIRE(a != NULL);
    REQUIRE_RC(mailtls_tlsrpt_add_record(a, lines[4]), MAILTLS_RESULT_OK);
    size_t needed = 0;
    char small[64];
    memset(small, 'x', sizeof small);
    CHECK_RC(mailtls_tlsrpt_write(a, DAY, DAY + 86400, "r1", small, sizeof small, &needed),
             MAILTLS_RESULT_BUFFER_TOO_SMALL);
    CHECK(needed > sizeof small);
    CHECK(small[0] == 'x' && small[sizeof small - 1] == 'x');
    /* Without `needed` the answer is the same. */
    CHECK_RC(mailtls_tlsrpt_write(a, DAY, DAY + 86400, "r1", small, sizeof small, NULL),
             MAILTLS_RESULT_BUFFER_TOO_SMALL);
    char *buf = malloc(needed);
    REQUIRE(buf != NULL);
    defer_call(free, buf);
    /* One byte short of the NUL is still too small. */
    CHECK_RC(mailtls_tlsrpt_write(a, DAY, DAY + 86400, "r1", buf, needed - 1, NULL), MAILTLS_RESULT_BUFFER_TOO_SMALL);
    CHECK_RC(mailtls_tlsrpt_write(a, DAY, DAY + 86400, "r1", buf, needed, NULL), MAILTLS_RESULT_OK);
    CHECK(strlen(buf) == needed - 1);
    CHECK_HAS(buf, "\"total-failure-session-count\":1");
}

TEST(tlsrpt_write_file_replaces_the_file_whole) {
    mailtls_tlsrpt *a = new_agg();
    REQUIRE(a != NULL);
    REQUIRE_RC(mailtls_tlsrpt_add_record(a, lines[0]), MAILTLS_RESULT_OK);
    char dir[] = "/tmp/mailtls-tlsrpt-test.XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/report.json", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("an older, much longer report that must not survive in part ......................................"
          "...............................................................................................",
          f);
    fclose(f);
    CHECK_RC(mailtls_tlsrpt_write_file(a, DAY, DAY + 86400, "file-report", path), MAILTLS_RESULT_OK);
    char got[4096] = {0};
    f = fopen(path, "r");
    REQUIRE(f != NULL);
    size_t n = fread(got, 1, sizeof got - 1, f);
    fclose(f);
    unlink(path);
    CHECK(n > 0 && got[n - 1] == '\n');
    CHECK(strncmp(got, "{\"organization-name\":\"Example Sender\"", 37) == 0);
    CHECK_HAS(got, "\"report-id\":\"file-report\"");
    CHECK_HASNT(got, "older");
    /* A directory that is not there: an I/O error naming the file. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/no/such/dir/report.json", dir);
    CHECK_RC(mailtls_tlsrpt_write_file(a, DAY, DAY + 86400, "r", missing), MAILTLS_RESULT_IO);
    CHECK(strstr(mailtls_tlsrpt_last_error(a), "no/such/dir") != NULL);
    rmdir(dir);
}

/* One client session against the fixture serving `scfg`, with the TLSA record
 * `tlsa` (NULL: none) under policy dane-only and a secure lookup; its report is added
 * to `a`. Returns the negotiation's result. */
static mailtls_result dane_session(const mailtls_config *scfg, const mailtls_config *ccfg, const char *tlsa,
                                   mailtls_tlsrpt *a, char *sha256_out) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = scfg;
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    if (!CHECK(p))
        return MAILTLS_RESULT_PANIC;
    mailtls_session *s = client_on_fd(ccfg, "mx.a.example", p->fd);
    if (!CHECK(s))
        return MAILTLS_RESULT_PANIC;
    if (tlsa) {
        CHECK_RC(mailtls_session_add_tlsa_text(s, tlsa), MAILTLS_RESULT_OK);
        CHECK_RC(mailtls_session_set_dnssec(s, MAILTLS_DNSSEC_SECURE), MAILTLS_RESULT_OK);
    }
    CHECK_RC(mailtls_session_set_next_hop(s, "a.example"), MAILTLS_RESULT_OK);
    mailtls_result rc = mailtls_client_negotiate(s);
    const mailtls_report *r = mailtls_session_report(s);
    if (sha256_out && mailtls_report_peer_cert_sha256(r))
        snprintf(sha256_out, 65, "%s", mailtls_report_peer_cert_sha256(r));
    const char *line = mailtls_report_tlsrpt_record(r);
    CHECK(line != NULL);
    if (line)
        CHECK(strchr(line, '\n') == NULL);
    CHECK_RC(mailtls_tlsrpt_add_report(a, r), MAILTLS_RESULT_OK);
    if (rc == MAILTLS_RESULT_OK)
        mailtls_session_close(s);
    peer_finish(p);
    return rc;
}

TEST(tlsrpt_sessions_under_dane_add_up_from_their_reports) {
    static char pem[8192];
    const mailtls_config *scfg = server_cfg("mx.a.example", pem, sizeof pem);
    const mailtls_config *may = client_cfg(MAILTLS_POLICY_MAY, NULL);
    const mailtls_config *dane = client_cfg(MAILTLS_POLICY_DANE_ONLY, NULL);
    mailtls_tlsrpt *a = new_agg();
    REQUIRE(scfg && may && dane && a);
    /* A first session learns the certificate's SHA-256: the DANE-EE 3 0 1 record. */
    char sha[65] = "";
    CHECK_RC(dane_session(scfg, may, NULL, a, sha), MAILTLS_RESULT_OK);
    REQUIRE(strlen(sha) == 64);
    char good[80], bad[80];
    snprintf(good, sizeof good, "3 0 1 %s", sha);
    snprintf(bad, sizeof bad, "3 0 1 %064d", 0);
    CHECK_RC(dane_session(scfg, dane, good, a, NULL), MAILTLS_RESULT_OK);
    CHECK_RC(dane_session(scfg, dane, good, a, NULL), MAILTLS_RESULT_OK);
    CHECK_RC(dane_session(scfg, dane, bad, a, NULL), MAILTLS_RESULT_DANE_NO_MATCH);
    CHECK(mailtls_tlsrpt_session_count(a) == 4);
    uint64_t first = 0, last = 0;
    REQUIRE_RC(mailtls_tlsrpt_time_range(a, &first, &last), MAILTLS_RESULT_OK);
    char *json = write_report(a, first, last + 1, "dane-1");
    REQUIRE(json);
    /* The policy-may session: no policy found, a success. */
    CHECK_CONTAINS(json, strlen(json), "\"policy-type\":\"no-policy-found\"");
    /* The record that matched: two successes, under its own policy string. */
    char frag[256];
    snprintf(frag, sizeof frag,
             "\"policy-string\":[\"%s\"],\"policy-domain\":\"a.example\",\"mx-host\":[\"mx.a.example\"]},"
             "\"summary\":{\"total-successful-session-count\":2,\"total-failure-session-count\":0}",
             good);
    CHECK_CONTAINS(json, strlen(json), frag);
    /* The one that did not: a failure, certificate-not-trusted, with our reason. */
    CHECK_CONTAINS(json, strlen(json), "\"total-successful-session-count\":0,\"total-failure-session-count\":1}");
    CHECK_CONTAINS(json, strlen(json), "\"result-type\":\"certificate-not-trusted\"");
    CHECK_CONTAINS(json, strlen(json), "\"failure-reason-code\":\"dane-no-match: ");
}
