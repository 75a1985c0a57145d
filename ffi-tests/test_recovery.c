/* The recovery zoo from C: the fallback ladder, downgrade protection and the
 * intolerance memory against real misbehaving servers (the mailtls-zoo program, one
 * process per case, on 127.0.0.1 with a port the kernel picks), through the header
 * only: connect/close callbacks, memory handles, files, stores and the report.
 *
 * Each case asserts the outcome, the rung, the connections on first contact and on
 * the next contact, and the memory record; the table of all cases is printed at the
 * end of the last test. */
#include "support.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- connections ---- */

struct dialer {
    int connects, closes;
    struct io_ctx *io; /* callback mode: the context whose fd follows the connection */
};

static int32_t on_connect(void *ud, const char *host, uint16_t port, int32_t *out_fd) {
    struct dialer *d = ud;
    (void)host; /* the cases name hosts freely; the zoo is always on 127.0.0.1 */
    int fd = dial(port, 10);
    if (fd < 0)
        return errno ? errno : ECONNREFUSED;
    d->connects++;
    if (d->io)
        d->io->fd = fd;
    *out_fd = fd;
    return 0;
}

static void on_close(void *ud, int32_t fd) {
    struct dialer *d = ud;
    d->closes++;
    if (fd >= 0)
        close(fd);
}

/* ---- one contact ---- */

enum via { FD_MODE, CALLBACKS_ONE_BYTE_EAGAIN };

struct contact {
    mailtls_result rc;
    uint32_t outcome, reason;
    int connections; /* connect callback calls, the first included */
    int rung;        /* of the last attempt, -1 when none */
    uint32_t first_class;
    char tls_version[16];
    char events[1024];
    char detail[512];
    char warnings[1024]; /* every warning, each followed by "; " */
};

/* The bound on a whole negotiation for the next contacts (0: the library's default). */
static uint32_t total_timeout_ms;

static struct contact contact_as(struct zoo *z, const char *host, uint32_t policy, const mailtls_memory *m,
                                 uint32_t hello_ms, enum via via) {
    struct contact c;
    memset(&c, 0, sizeof c);
    c.rc = MAILTLS_RESULT_PANIC;
    c.rung = -1;
    mailtls_config_builder *b = client_builder(policy);
    if (!b)
        return c;
    mailtls_config_builder_set_timeout_ms(b, 10000);
    if (hello_ms)
        mailtls_config_builder_set_hello_timeout_ms(b, hello_ms);
    if (total_timeout_ms)
        CHECK_RC(mailtls_config_builder_set_total_timeout_ms(b, total_timeout_ms), MAILTLS_RESULT_OK);
    if (m)
        CHECK_RC(mailtls_config_builder_set_memory(b, m), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    if (!cfg)
        return c;
    mailtls_session *s = NULL;
    if (!CHECK_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, host, z->port, &s), MAILTLS_RESULT_OK))
        return c;
    defer_session(s);
    CHECK_RC(mailtls_session_set_server_name(s, "localhost"), MAILTLS_RESULT_OK);
    struct dialer *d = calloc(1, sizeof *d);
    if (!d)
        return c;
    defer_call(free, d);
    int32_t fd = -1;
    if (on_connect(d, host, z->port, &fd) != 0) {
        test_fail(__FILE__, __LINE__, "cannot connect to the zoo on port %u", z->port);
        return c;
    }
    if (via == FD_MODE) {
        CHECK_RC(mailtls_session_set_fd(s, fd), MAILTLS_RESULT_OK);
    } else {
        struct io_ctx *io = io_new(fd);
        io->max_chunk = 1;
        io->eagain_alternate = 1;
        d->io = io;
        CHECK_RC(mailtls_session_set_io(s, io_read, io_write, io), MAILTLS_RESULT_OK);
    }
    CHECK_RC(mailtls_session_set_connector(s, on_connect, on_close, d), MAILTLS_RESULT_OK);
    c.rc = negotiate_all(s, NULL, NULL);
    if (c.rc == MAILTLS_RESULT_OK) {
        struct linebuf lb = {0};
        char reply[256];
        CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
        CHECK(strncmp(reply, "221", 3) == 0);
    }
    const mailtls_report *r = mailtls_session_report(s);
    c.outcome = mailtls_report_outcome(r);
    c.reason = mailtls_report_reason(r);
    c.connections = d->connects;
    size_t na = mailtls_report_attempt_count(r);
    CHECK((int)na == d->connects);
    if (na > 0) {
        c.rung = mailtls_report_attempt_rung(r, na - 1);
        c.first_class = mailtls_report_attempt_class(r, 0);
    }
    if (mailtls_report_tls_version(r))
        snprintf(c.tls_version, sizeof c.tls_version, "%s", mailtls_report_tls_version(r));
    for (size_t i = 0; i < mailtls_report_memory_event_count(r); i++) {
        size_t len = strlen(c.events);
        snprintf(c.events + len, sizeof c.events - len, "%s; ", mailtls_report_memory_event(r, i));
    }
    snprintf(c.detail, sizeof c.detail, "%s", mailtls_report_detail(r));
    for (size_t i = 0; i < mailtls_report_warning_count(r); i++) {
        size_t len = strlen(c.warnings);
        snprintf(c.warnings + len, sizeof c.warnings - len, "%s; ", mailtls_report_warning(r, i));
    }
    /* The connection in use at the end is the caller's. */
    int last = mailtls_session_fd(s);
    CHECK(d->closes == d->connects - 1);
    if (last >= 0)
        close(last);
    return c;
}

static struct contact contact(struct zoo *z, uint32_t policy, const mailtls_memory *m) {
    return contact_as(z, "127.0.0.1", policy, m, 0, FD_MODE);
}

static void free_memory(void *m) { mailtls_memory_free(m); }

/* Rewrites the port of every record in an exported memory (version-1 text). */
static int rekey_file(const char *path, uint16_t from, uint16_t to) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    static char text[16384], out[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char pat[16], rep[16];
    snprintf(pat, sizeof pat, " %u ", from);
    snprintf(rep, sizeof rep, " %u ", to);
    size_t o = 0;
    int count = 0;
    for (const char *p = text; *p;) {
        const char *at = strstr(p, pat);
        size_t k = at ? (size_t)(at - p) : strlen(p);
        if (o + k + strlen(rep) + 1 >= sizeof out)
            return -1;
        memcpy(out + o, p, k);
        o += k;
        if (!at)
            break;
        memcpy(out + o, rep, strlen(rep));
        o += strlen(rep);
        p = at + strlen(pat);
        count++;
    }
    out[o] = 0;
    f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(out, f);
    fclose(f);
    return count;
}

/* What was learnt about one zoo now belongs to another on the same host (a server
 * replaced behind its address): the memory is exported as text, the port rewritten,
 * and the text imported into a new memory. */
static const mailtls_memory *rekeyed(const mailtls_memory *m, uint16_t from, uint16_t to) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/mailtls-export-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    close(fd);
    defer_unlink(path);
    uintptr_t n = 0;
    if (!CHECK_RC(mailtls_memory_export(m, path, &n), MAILTLS_RESULT_OK) || !CHECK(n == 1))
        return NULL;
    if (!CHECK(rekey_file(path, from, to) == 1))
        return NULL;
    const mailtls_memory *m2 = memory_new();
    if (!m2 || !CHECK_RC(mailtls_memory_import(m2, path, &n), MAILTLS_RESULT_OK) || !CHECK(n == 1))
        return NULL;
    return m2;
}

/* The memory record of the zoo peer, as text fields. */
static const char *record(const mailtls_memory *m, const char *host, struct zoo *z) {
    static char buf[512];
    buf[0] = 0;
    uintptr_t w = 0;
    CHECK_RC(mailtls_memory_lookup(m, MAILTLS_PROTO_SMTP, host, z->port, buf, sizeof buf, &w), MAILTLS_RESULT_OK);
    return buf;
}

/* ---- the table ---- */

struct row {
    char name[40];
    uint32_t outcome;
    int rung;
    int first, next;
};
static struct row rows[40];
static int nrows;

static void table_add(const char *name, const struct contact *c1, int next) {
    if (nrows >= (int)(sizeof rows / sizeof rows[0]))
        return;
    struct row *r = &rows[nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->outcome = c1->outcome;
    r->rung = c1->rung;
    r->first = c1->connections;
    r->next = next;
}

static const char *rung_name(int rung) {
    return rung < 0 ? "-" : mailtls_rung_name((uint32_t)rung);
}

/* Checks one contact against what the case expects. */
static void expect(const char *file, int line, const struct contact *c, uint32_t outcome, int rung, int conns) {
    if (c->outcome != outcome || c->rung != rung || c->connections != conns)
        test_fail(file, line, "outcome %s rung %s connections %d, expected %s rung %s connections %d (reason %s; memory: %s)",
                  mailtls_outcome_name(c->outcome), rung_name(c->rung), c->connections, mailtls_outcome_name(outcome),
                  rung_name(rung), conns, mailtls_result_name(c->reason), c->events);
}
#define EXPECT_AT(c, outcome, rung, conns) expect(__FILE__, __LINE__, &(c), (outcome), (rung), (conns))

/* A case of size or version intolerance that recovers: tls on the first contact at
 * `rung` with `first` connections (the failed attempt of class `cls` recorded), and one
 * connection at the same rung on the next contact. */
static void recovering_case(const char *mode, int rung, int first, uint32_t cls, uint32_t hello_ms) {
    struct zoo *z = zoo_start(mode);
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    struct contact c1 = contact_as(z, "127.0.0.1", MAILTLS_POLICY_ENCRYPT, m, hello_ms, FD_MODE);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, rung, first);
    CHECK(c1.first_class == cls);
    CHECK(zoo_connections_are(z, first));
    const char *rec = record(m, "127.0.0.1", z);
    CHECK(strstr(rec, "intolerant=") != NULL);
    CHECK(strstr(rec, "pinned@") != NULL);
    struct contact c2 = contact_as(z, "127.0.0.1", MAILTLS_POLICY_ENCRYPT, m, hello_ms, FD_MODE);
    CHECK_RC(c2.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, rung, 1);
    CHECK(zoo_connections_are(z, first + 1));
    table_add(mode, &c1, c2.connections);
}

/* ---- the cases ---- */

TEST(zoo_tolerant_server_one_connection_at_the_top_rung_and_pinned) {
    struct zoo *z = zoo_start("normal");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    struct contact c1 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_MODERN, 1);
    CHECK_STREQ(c1.tls_version, "TLSv1.3");
    const char *rec = record(m, "127.0.0.1", z);
    CHECK(strstr(rec, "tolerant=modern@") && strstr(rec, "pinned@") && strstr(rec, "tls13@"));
    CHECK(strstr(rec, "intolerant") == NULL);
    struct contact c2 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_MODERN, 1);
    table_add("normal", &c1, c2.connections);
}

TEST(zoo_tls12_only_server_succeeds_at_the_top_rung_without_fallback) {
    struct zoo *z = zoo_start("tls12-only");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    struct contact c1 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_MODERN, 1);
    CHECK_STREQ(c1.tls_version, "TLSv1.2");
    CHECK(strstr(record(m, "127.0.0.1", z), "intolerant") == NULL);
    struct contact c2 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_MODERN, 1);
    table_add("tls12-only", &c1, c2.connections);
}

TEST(zoo_reset_on_a_large_hello_recovers_at_compact) {
    recovering_case("reset-above:1000", MAILTLS_RUNG_COMPACT, 2, MAILTLS_FAILURE_CLASS_INTOLERANCE, 0);
}

TEST(zoo_eof_on_a_large_hello_recovers_at_compact) {
    recovering_case("eof-above:1000", MAILTLS_RUNG_COMPACT, 2, MAILTLS_FAILURE_CLASS_INTOLERANCE, 0);
}

TEST(zoo_hang_on_a_large_hello_times_out_once_then_compact) {
    recovering_case("hang-above:1000", MAILTLS_RUNG_COMPACT, 2, MAILTLS_FAILURE_CLASS_TIMEOUT, 800);
}

/* handshake_failure names no cause: it may be the key share, so the next hello is
 * classic (no PQ share, smaller) at once. */
TEST(zoo_handshake_failure_alert_on_a_large_hello_recovers_at_classic) {
    recovering_case("alert-above:1000:40", MAILTLS_RUNG_CLASSIC, 2, MAILTLS_FAILURE_CLASS_INTOLERANCE, 0);
}

/* protocol_version names the version: straight to the TLS 1.2 hello. */
TEST(zoo_protocol_version_alert_on_a_large_hello_jumps_to_tls12) {
    recovering_case("alert-above:1000:70", MAILTLS_RUNG_TLS12, 2, MAILTLS_FAILURE_CLASS_INTOLERANCE, 0);
}

/* A bare reset says nothing: the ladder goes down one rung at a time. */
TEST(zoo_reset_of_tls13_hellos_walks_the_ladder_to_tls12) {
    recovering_case("reset-tls13", MAILTLS_RUNG_TLS12, 4, MAILTLS_FAILURE_CLASS_INTOLERANCE, 0);
}

TEST(zoo_protocol_version_alert_to_tls13_hellos_jumps_to_tls12) {
    recovering_case("alert-tls13:70", MAILTLS_RUNG_TLS12, 2, MAILTLS_FAILURE_CLASS_INTOLERANCE, 0);
}

TEST(zoo_reset_of_pq_hellos_lands_on_classic) {
    recovering_case("reset-pq", MAILTLS_RUNG_CLASSIC, 3, MAILTLS_FAILURE_CLASS_INTOLERANCE, 0);
}

TEST(zoo_handshake_failure_to_pq_hellos_lands_on_classic) {
    recovering_case("alert-pq:40", MAILTLS_RUNG_CLASSIC, 2, MAILTLS_FAILURE_CLASS_INTOLERANCE, 0);
}

TEST(zoo_unrecognized_name_turns_sni_off_and_remembers) {
    struct zoo *z = zoo_start("unrecognized-name");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    struct contact c1 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_MODERN, 2);
    CHECK(strstr(record(m, "127.0.0.1", z), "sni-off@") != NULL);
    struct contact c2 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_MODERN, 1);
    table_add("unrecognized-name", &c1, c2.connections);
}

TEST(zoo_filter_of_tls13_in_front_of_a_tls13_server_is_a_downgrade_under_every_policy) {
    const uint32_t policies[] = {MAILTLS_POLICY_MAY, MAILTLS_POLICY_ENCRYPT, MAILTLS_POLICY_VERIFY};
    for (size_t i = 0; i < 3; i++) {
        struct zoo *z = zoo_start("filter-tls13");
        REQUIRE(z);
        const mailtls_memory *m = memory_new();
        REQUIRE(m);
        /* Resets walk the ladder down to the TLS 1.2 hello, whose ServerHello carries
         * the RFC 8446 sentinel: abort, whatever the policy. */
        struct contact c1 = contact(z, policies[i], m);
        CHECK_RC(c1.rc, MAILTLS_RESULT_DOWNGRADE_DETECTED);
        EXPECT_AT(c1, MAILTLS_OUTCOME_DEFER, MAILTLS_RUNG_TLS12, 4);
        const char *rec = record(m, "127.0.0.1", z);
        CHECK(strstr(rec, "tls13@") != NULL);
        CHECK(strstr(rec, "intolerant") == NULL);
        /* The next contact meets the filter again, and never sends a TLS 1.2-only
         * hello to a peer that proved it speaks TLS 1.3: no plaintext, no downgrade. */
        struct contact c2 = contact(z, policies[i], m);
        CHECK_RC(c2.rc, MAILTLS_RESULT_DOWNGRADE_SUSPECTED);
        EXPECT_AT(c2, MAILTLS_OUTCOME_DEFER, MAILTLS_RUNG_CLASSIC, 3);
        CHECK(strstr(record(m, "127.0.0.1", z), "tls13@") != NULL);
        if (i == 0)
            table_add("filter-tls13", &c1, c2.connections);
    }
}

TEST(zoo_tls11_server_is_incompatible_plaintext_under_may_defer_under_encrypt) {
    struct zoo *z = zoo_start("tls11");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    struct contact c1 = contact(z, MAILTLS_POLICY_MAY, m);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_PLAINTEXT, -1, 2);
    CHECK(c1.first_class == MAILTLS_FAILURE_CLASS_INCOMPATIBLE);
    const char *rec = record(m, "127.0.0.1", z);
    CHECK(strstr(rec, "incompatible") != NULL);
    CHECK(strstr(rec, ",intolerance,") == NULL); /* not poisoned as intolerance */
    struct contact c2 = contact(z, MAILTLS_POLICY_MAY, m);
    EXPECT_AT(c2, MAILTLS_OUTCOME_PLAINTEXT, -1, 1);
    table_add("tls11 (may)", &c1, c2.connections);
    const mailtls_memory *m2 = memory_new();
    REQUIRE(m2);
    struct contact e1 = contact(z, MAILTLS_POLICY_ENCRYPT, m2);
    EXPECT_AT(e1, MAILTLS_OUTCOME_DEFER, MAILTLS_RUNG_MODERN, 1);
    struct contact e2 = contact(z, MAILTLS_POLICY_ENCRYPT, m2);
    EXPECT_AT(e2, MAILTLS_OUTCOME_DEFER, MAILTLS_RUNG_MODERN, 1);
    table_add("tls11 (encrypt)", &e1, e2.connections);
}

TEST(zoo_cbc_only_server_exhausts_the_ladder_and_is_recorded_incompatible) {
    struct zoo *z = zoo_start("cbc-only");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    struct contact c1 = contact(z, MAILTLS_POLICY_MAY, m);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_PLAINTEXT, -1, 4);
    CHECK_RC(c1.reason, MAILTLS_RESULT_LADDER_EXHAUSTED);
    CHECK(strstr(record(m, "127.0.0.1", z), "incompatible") != NULL);
    struct contact c2 = contact(z, MAILTLS_POLICY_MAY, m);
    EXPECT_AT(c2, MAILTLS_OUTCOME_PLAINTEXT, -1, 1);
    table_add("cbc-only (may)", &c1, c2.connections);
    const mailtls_memory *m2 = memory_new();
    REQUIRE(m2);
    struct contact e1 = contact(z, MAILTLS_POLICY_ENCRYPT, m2);
    CHECK(e1.outcome == MAILTLS_OUTCOME_DEFER);
    CHECK(e1.connections <= 4);
}

/* A peer that closes the connection on every hello: under may the first contact
 * still delivers, in plaintext on a fifth connection after the four TLS attempts (the
 * bound counts TLS attempts), says so in a machine-readable warning and claims no
 * negotiated TLS; the next contact takes one connection. Under encrypt: four, defer. */
TEST(zoo_eof_on_every_hello_delivers_in_plaintext_under_may_on_first_contact) {
    struct zoo *z = zoo_start("eof-above:0");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    struct contact c1 = contact(z, MAILTLS_POLICY_MAY, m);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_PLAINTEXT, -1, 5);
    CHECK_RC(c1.reason, MAILTLS_RESULT_LADDER_EXHAUSTED);
    CHECK_STREQ(c1.tls_version, "");
    if (!strstr(c1.warnings, "plaintext-downgrade ladder-exhausted: "))
        test_fail(__FILE__, __LINE__, "no downgrade warning: %s", c1.warnings);
    CHECK(zoo_connections_are(z, 5));
    CHECK(strstr(record(m, "127.0.0.1", z), "incompatible") != NULL);
    struct contact c2 = contact(z, MAILTLS_POLICY_MAY, m);
    CHECK_RC(c2.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c2, MAILTLS_OUTCOME_PLAINTEXT, -1, 1);
    CHECK(strstr(c2.warnings, "plaintext-downgrade ") != NULL);
    table_add("eof on every hello (may)", &c1, c2.connections);
    const mailtls_memory *m2 = memory_new();
    REQUIRE(m2);
    struct contact e1 = contact(z, MAILTLS_POLICY_ENCRYPT, m2);
    EXPECT_AT(e1, MAILTLS_OUTCOME_DEFER, MAILTLS_RUNG_TLS12, 4);
    CHECK_STREQ(e1.tls_version, "");
}

/* A server that answers the go reply and then never speaks TLS: the total deadline
 * ends the negotiation, however long each step may wait (here the hello timeout alone
 * would cost 5 s a rung), with a timeout and no further connection. */
TEST(zoo_total_deadline_bounds_a_negotiation_whose_server_never_speaks_tls) {
    struct zoo *z = zoo_start("hang-above:0");
    REQUIRE(z);
    total_timeout_ms = 1500;
    struct contact c = contact_as(z, "127.0.0.1", MAILTLS_POLICY_MAY, NULL, 5000, FD_MODE);
    total_timeout_ms = 0;
    CHECK_RC(c.rc, MAILTLS_RESULT_TIMEOUT);
    CHECK(c.outcome == MAILTLS_OUTCOME_DEFER);
    CHECK(c.connections == 1);
    if (!strstr(c.detail, "1500 ms in all"))
        test_fail(__FILE__, __LINE__, "detail: %s", c.detail);
    CHECK_STREQ(c.tls_version, "");
}

TEST(zoo_reset_of_a_host_with_a_fresh_tolerant_record_does_not_fall_back) {
    struct zoo *good = zoo_start("normal");
    REQUIRE(good);
    struct zoo *bad = zoo_start("reset-above:1000");
    REQUIRE(bad);
    char path[64];
    const mailtls_memory *m = memory_file(path);
    REQUIRE(m);
    struct contact c0 = contact(good, MAILTLS_POLICY_MAY, m);
    CHECK_RC(c0.rc, MAILTLS_RESULT_OK);
    const mailtls_memory *m2 = rekeyed(m, good->port, bad->port);
    REQUIRE(m2);
    CHECK(strstr(record(m2, "127.0.0.1", bad), "tolerant=modern@") != NULL);
    struct contact c1 = contact(bad, MAILTLS_POLICY_MAY, m2);
    CHECK_RC(c1.rc, MAILTLS_RESULT_DOWNGRADE_SUSPECTED);
    EXPECT_AT(c1, MAILTLS_OUTCOME_DEFER, MAILTLS_RUNG_MODERN, 1);
    CHECK(strstr(c1.events, "downgrade suspected") != NULL);
    /* Nothing recorded as intolerance: the record still says modern works. */
    CHECK(strstr(record(m2, "127.0.0.1", bad), "intolerant") == NULL);
    struct contact c2 = contact(bad, MAILTLS_POLICY_MAY, m2);
    EXPECT_AT(c2, MAILTLS_OUTCOME_DEFER, MAILTLS_RUNG_MODERN, 1);
    table_add("reset, fresh tolerance", &c1, c2.connections);
}

TEST(zoo_pinned_host_that_stops_offering_starttls_is_a_stripping_suspect) {
    struct zoo *good = zoo_start("normal");
    REQUIRE(good);
    struct zoo *strip = zoo_start("no-starttls");
    REQUIRE(strip);
    char path[64];
    const mailtls_memory *m = memory_file(path);
    REQUIRE(m);
    struct contact c0 = contact(good, MAILTLS_POLICY_MAY, m);
    CHECK_RC(c0.rc, MAILTLS_RESULT_OK);
    const mailtls_memory *m2 = rekeyed(m, good->port, strip->port);
    REQUIRE(m2);
    CHECK(strstr(record(m2, "127.0.0.1", strip), "pinned@") != NULL);
    struct contact c1 = contact(strip, MAILTLS_POLICY_MAY, m2);
    CHECK_RC(c1.rc, MAILTLS_RESULT_STRIPPING_SUSPECTED);
    EXPECT_AT(c1, MAILTLS_OUTCOME_DEFER, -1, 1);
    CHECK(strstr(c1.events, "stripping") != NULL);
    /* Without the pin the same server is plain plaintext under may. */
    struct contact fresh = contact(strip, MAILTLS_POLICY_MAY, memory_new());
    EXPECT_AT(fresh, MAILTLS_OUTCOME_PLAINTEXT, -1, 1);
    struct contact c2 = contact(strip, MAILTLS_POLICY_MAY, m2);
    EXPECT_AT(c2, MAILTLS_OUTCOME_DEFER, -1, 1);
    table_add("no-starttls, pinned", &c1, c2.connections);
}

TEST(zoo_server_resetting_one_connection_in_three_recovers_without_lasting_harm) {
    struct zoo *z = zoo_start("flaky:3");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    /* Connection 1 is reset (looks like intolerance of the modern hello): compact on
     * connection 2, remembered. Connection 3 is served at compact. Connection 4 is
     * reset at compact, which this peer accepted moments ago: no fallback (a reset is
     * no proof of intolerance, and the MTA retries later); connection 5 is served at
     * compact again: nothing was poisoned. */
    struct contact c1 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 2);
    struct contact c2 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    CHECK_RC(c2.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 1);
    struct contact c3 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    CHECK_RC(c3.rc, MAILTLS_RESULT_DOWNGRADE_SUSPECTED);
    EXPECT_AT(c3, MAILTLS_OUTCOME_DEFER, MAILTLS_RUNG_COMPACT, 1);
    const char *rec = record(m, "127.0.0.1", z);
    CHECK(strstr(rec, "tolerant=compact@") != NULL);
    CHECK(strstr(rec, "intolerant=modern@") != NULL);
    struct contact c4 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    CHECK_RC(c4.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c4, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 1);
    CHECK(zoo_connections_are(z, 5));
    table_add("flaky:3", &c1, c2.connections);
}

TEST(zoo_intolerance_expires_and_is_reprobed_at_the_top_after_a_day) {
    struct zoo *z = zoo_start("reset-above:1000");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    const uint64_t t0 = 1900000000;
    CHECK_RC(mailtls_memory_set_clock(m, t0), MAILTLS_RESULT_OK);
    struct contact c1 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 2);
    struct contact c2 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 1);
    /* 25 hours later: one try at the top rung, then back to what worked. */
    CHECK_RC(mailtls_memory_set_clock(m, t0 + 25 * 3600), MAILTLS_RESULT_OK);
    struct contact c3 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c3, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 2);
    CHECK(strstr(c3.events, "re-probe") != NULL);
    struct contact c4 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c4, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 1);
    /* 61 days after the last contact everything has expired: a first contact again. */
    CHECK_RC(mailtls_memory_set_clock(m, t0 + 25 * 3600 + 61 * 86400), MAILTLS_RESULT_OK);
    CHECK_STREQ(record(m, "127.0.0.1", z), "");
    struct contact c5 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c5, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 2);
    CHECK(strstr(c5.events, "expired and not used: tolerance, intolerance, pin") != NULL);
    table_add("re-probe after 25 h", &c3, c4.connections);
}

TEST(zoo_recovery_through_callbacks_with_one_byte_reads_and_eagain) {
    struct zoo *z = zoo_start("reset-above:1000");
    REQUIRE(z);
    const mailtls_memory *m = memory_new();
    REQUIRE(m);
    struct contact c1 = contact_as(z, "127.0.0.1", MAILTLS_POLICY_ENCRYPT, m, 0, CALLBACKS_ONE_BYTE_EAGAIN);
    CHECK_RC(c1.rc, MAILTLS_RESULT_OK);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 2);
    struct contact c2 = contact_as(z, "127.0.0.1", MAILTLS_POLICY_ENCRYPT, m, 0, CALLBACKS_ONE_BYTE_EAGAIN);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 1);
    table_add("reset-above, callbacks", &c1, c2.connections);
}

TEST(zoo_without_a_connector_the_report_asks_for_a_retry_and_the_next_session_takes_the_rung) {
    struct zoo *z = zoo_start("reset-above:1000");
    REQUIRE(z);
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(cfg);
    int fd = dial(z->port, 10);
    REQUIRE(fd >= 0);
    defer_fd(fd);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1", z->port, &s), MAILTLS_RESULT_OK);
    defer_session(s);
    CHECK_RC(mailtls_session_set_server_name(s, "localhost"), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_fd(s, fd), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_RETRY_NEEDED);
    const mailtls_report *r = mailtls_session_report(s);
    int rung = mailtls_report_retry_rung(r);
    CHECK(rung == MAILTLS_RUNG_COMPACT);
    CHECK(!mailtls_report_retry_without_sni(r));
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_DEFER);
    /* The caller's own retry on a new connection. */
    int fd2 = dial(z->port, 10);
    REQUIRE(fd2 >= 0);
    defer_fd(fd2);
    mailtls_session *s2 = NULL;
    REQUIRE_RC(mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1", z->port, &s2), MAILTLS_RESULT_OK);
    defer_session(s2);
    CHECK_RC(mailtls_session_set_server_name(s2, "localhost"), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_fd(s2, fd2), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_start_rung(s2, (uint32_t)rung, true), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_client_negotiate(s2), MAILTLS_RESULT_OK);
    const mailtls_report *r2 = mailtls_session_report(s2);
    CHECK_OUTCOME(r2, MAILTLS_OUTCOME_TLS);
    CHECK(mailtls_report_attempt_rung(r2, 0) == MAILTLS_RUNG_COMPACT);
    struct linebuf lb = {0};
    char reply[256];
    CHECK_RC(session_command(s2, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_session_set_start_rung(s2, MAILTLS_RUNG_MODERN, true), MAILTLS_RESULT_INVALID_STATE);
    mailtls_session *s3 = client_session(cfg, "mx.test");
    REQUIRE(s3);
    CHECK_RC(mailtls_session_set_start_rung(s3, 9, true), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK(zoo_connections_are(z, 2));
}

/* Two processes share one memory file and record at once: no record is lost. */
static void share_child(const char *path, uint16_t port, char tag) {
    const mailtls_memory *m = NULL;
    if (mailtls_memory_open_file(path, &m) != MAILTLS_RESULT_OK)
        _exit(2);
    mailtls_config_builder *b = NULL;
    const mailtls_config *cfg = NULL;
    mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, &b);
    mailtls_config_builder_set_policy(b, MAILTLS_POLICY_ENCRYPT);
    mailtls_config_builder_set_helo_name(b, HELO_NAME);
    mailtls_config_builder_set_timeout_ms(b, 10000);
    mailtls_config_builder_set_memory(b, m);
    if (mailtls_config_builder_build(b, &cfg) != MAILTLS_RESULT_OK)
        _exit(3);
    mailtls_config_builder_free(b);
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        char host[32];
        snprintf(host, sizeof host, "%c%d.test", tag, i);
        int fd = dial(port, 10);
        mailtls_session *s = NULL;
        if (fd < 0 || mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, host, port, &s) != MAILTLS_RESULT_OK) {
            bad++;
            continue;
        }
        mailtls_session_set_server_name(s, "localhost");
        mailtls_session_set_fd(s, fd);
        if (mailtls_client_negotiate(s) != MAILTLS_RESULT_OK)
            bad++;
        mailtls_session_free(s);
        close(fd);
    }
    mailtls_config_free(cfg);
    mailtls_memory_free(m);
    _exit(bad ? 4 : 0);
}

static void count_line(void *ud, const char *line) {
    (void)line;
    (*(int *)ud)++;
}

TEST(zoo_two_processes_sharing_one_memory_file_lose_no_record) {
    struct zoo *z = zoo_start("normal");
    REQUIRE(z);
    char path[64];
    const mailtls_memory *m = memory_file(path);
    REQUIRE(m);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        REQUIRE(kids[k] >= 0);
        if (kids[k] == 0) {
            alarm(CHILD_ALARM_S);
            share_child(path, z->port, k ? 'b' : 'a');
        }
    }
    for (int k = 0; k < 2; k++) {
        int st = 0;
        CHECK(waitpid(kids[k], &st, 0) == kids[k]);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    /* A fresh handle reads the file both wrote. */
    const mailtls_memory *m2 = NULL;
    REQUIRE_RC(mailtls_memory_open_file(path, &m2), MAILTLS_RESULT_OK);
    defer_call(free_memory, (void *)m2);
    int lines = 0;
    uintptr_t count = 0;
    CHECK_RC(mailtls_memory_list(m2, count_line, &lines, &count), MAILTLS_RESULT_OK);
    CHECK(count == 16);
    CHECK(lines == 16);
    char problems[512] = {0};
    uintptr_t w = 0;
    CHECK_RC(mailtls_memory_problems(m2, problems, sizeof problems, &w), MAILTLS_RESULT_OK);
    CHECK_STREQ(problems, "");
    for (int i = 0; i < 8; i++) {
        char host[32];
        snprintf(host, sizeof host, "a%d.test", i);
        CHECK(strstr(record(m2, host, z), "pinned@") != NULL);
        snprintf(host, sizeof host, "b%d.test", i);
        CHECK(strstr(record(m2, host, z), "pinned@") != NULL);
    }
    /* Forget works on the file too. */
    CHECK_RC(mailtls_memory_forget(m2, MAILTLS_PROTO_SMTP, "a0.test", z->port), MAILTLS_RESULT_OK);
    const mailtls_memory *m3 = NULL;
    REQUIRE_RC(mailtls_memory_open_file(path, &m3), MAILTLS_RESULT_OK);
    defer_call(free_memory, (void *)m3);
    CHECK_STREQ(record(m3, "a0.test", z), "");
    CHECK(strstr(record(m3, "a1.test", z), "pinned@") != NULL);
}

TEST(zoo_corrupt_truncated_or_foreign_memory_files_are_reported_and_ignored) {
    struct zoo *z = zoo_start("reset-above:1000");
    REQUIRE(z);
    char good_line[128];
    snprintf(good_line, sizeof good_line, "smtp 127.0.0.1 %u intolerant=modern@%lld,intolerance,1,%lld\n", z->port,
             (long long)time(NULL), (long long)time(NULL));
    char corrupt[512], truncated[512];
    snprintf(corrupt, sizeof corrupt, "mailtls-memory 1\n%sthis is not a record\nsmtp x.test 25 tolerant=nonsense@1\n",
             good_line);
    snprintf(truncated, sizeof truncated, "mailtls-memory 1\n%ssmtp y.test 25 tolerant=mod", good_line);
    const char *files[] = {corrupt, truncated, "\x89PNG\r\n\x1a\n binary junk", "some other program's file\n"};
    const int keeps_good[] = {1, 1, 0, 0};
    for (int i = 0; i < 4; i++) {
        const char *path = temp_file(files[i]);
        REQUIRE(path);
        defer_unlink_memory(path);
        const mailtls_memory *m = NULL;
        REQUIRE_RC(mailtls_memory_open_file(path, &m), MAILTLS_RESULT_OK);
        defer_call(free_memory, (void *)m);
        char problems[1024] = {0};
        uintptr_t w = 0;
        CHECK_RC(mailtls_memory_problems(m, problems, sizeof problems, &w), MAILTLS_RESULT_OK);
        CHECK(problems[0] != 0);
        /* A version-1 text file is converted (the text kept beside it); anything else
         * is set aside, renamed, and a new memory starts. */
        char kept[128];
        snprintf(kept, sizeof kept, "%s.v1", path);
        CHECK((access(kept, F_OK) == 0) == (keeps_good[i] == 1));
        if (!keeps_good[i] && !strstr(problems, "not a memory database; set aside as"))
            test_fail(__FILE__, __LINE__, "problems: %s", problems);
        /* What could be read is used: the good line sends the first try to compact. */
        struct contact c = contact(z, MAILTLS_POLICY_ENCRYPT, m);
        CHECK_RC(c.rc, MAILTLS_RESULT_OK);
        EXPECT_AT(c, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, keeps_good[i] ? 1 : 2);
    }
}

/* An application store: a tiny key/value table. */
struct kv {
    int gets, puts, dels;
    int n;
    char key[16][128];
    char val[16][512];
};

static int kv_find(struct kv *t, const char *k) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->key[i], k) == 0)
            return i;
    return -1;
}

static int32_t kv_get(void *ud, const char *key, char *buf, uintptr_t len) {
    struct kv *t = ud;
    t->gets++;
    int i = kv_find(t, key);
    if (i < 0) {
        if (len)
            buf[0] = 0;
        return 0;
    }
    snprintf(buf, len, "%s", t->val[i]);
    return 0;
}

static int32_t kv_put(void *ud, const char *key, const char *value) {
    struct kv *t = ud;
    t->puts++;
    int i = kv_find(t, key);
    if (i < 0) {
        if (t->n >= 16)
            return ENOSPC;
        i = t->n++;
        snprintf(t->key[i], sizeof t->key[i], "%s", key);
    }
    snprintf(t->val[i], sizeof t->val[i], "%s", value);
    return 0;
}

static int32_t kv_del(void *ud, const char *key) {
    struct kv *t = ud;
    t->dels++;
    int i = kv_find(t, key);
    if (i >= 0) {
        t->n--;
        memmove(t->key[i], t->key[i + 1], (size_t)(t->n - i) * sizeof t->key[0]);
        memmove(t->val[i], t->val[i + 1], (size_t)(t->n - i) * sizeof t->val[0]);
    }
    return 0;
}

TEST(zoo_memory_on_an_application_store_through_callbacks) {
    struct zoo *z = zoo_start("reset-above:1000");
    REQUIRE(z);
    struct kv *t = calloc(1, sizeof *t);
    REQUIRE(t);
    defer_call(free, t);
    const mailtls_memory *m = NULL;
    REQUIRE_RC(mailtls_memory_new_store(kv_get, kv_put, kv_del, t, &m), MAILTLS_RESULT_OK);
    defer_call(free_memory, (void *)m);
    struct contact c1 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 2);
    CHECK(t->puts > 0);
    REQUIRE(t->n == 1);
    char key[64];
    snprintf(key, sizeof key, "smtp 127.0.0.1 %u", z->port);
    CHECK_STREQ(t->key[0], key);
    CHECK(strstr(t->val[0], "intolerant=modern@") != NULL);
    /* Another process's handle on the same store (here: a new handle) knows it. */
    const mailtls_memory *m2 = NULL;
    REQUIRE_RC(mailtls_memory_new_store(kv_get, kv_put, kv_del, t, &m2), MAILTLS_RESULT_OK);
    defer_call(free_memory, (void *)m2);
    struct contact c2 = contact(z, MAILTLS_POLICY_ENCRYPT, m2);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 1);
    CHECK(t->gets > 0);
    CHECK_RC(mailtls_memory_list(m2, count_line, &(int){0}, NULL), MAILTLS_RESULT_UNSUPPORTED);
    CHECK_RC(mailtls_memory_forget(m2, MAILTLS_PROTO_SMTP, "127.0.0.1", z->port), MAILTLS_RESULT_OK);
    CHECK(t->dels == 1 && t->n == 0);
    table_add("reset-above, store", &c1, c2.connections);
}

/* A store that fails its gets with EIO, or answers ERANGE until the buffer is large. */
struct flaky_kv {
    struct kv kv;
    int fail_gets;      /* EIO for every get while set */
    uintptr_t need;     /* ERANGE while the buffer is smaller than this */
    uintptr_t lens[8];  /* the buffer sizes offered, in order */
    int nlens;
};

static int32_t flaky_get(void *ud, const char *key, char *buf, uintptr_t len) {
    struct flaky_kv *f = ud;
    if (f->nlens < 8)
        f->lens[f->nlens++] = len;
    if (f->fail_gets)
        return EIO;
    if (len < f->need)
        return ERANGE;
    return kv_get(&f->kv, key, buf, len);
}

static int32_t flaky_put(void *ud, const char *key, const char *value) { return kv_put(&((struct flaky_kv *)ud)->kv, key, value); }
static int32_t flaky_del(void *ud, const char *key) { return kv_del(&((struct flaky_kv *)ud)->kv, key); }

TEST(store_failures_are_reported_and_a_record_that_could_not_be_read_is_never_overwritten) {
    struct zoo *z = zoo_start("reset-above:1000");
    REQUIRE(z);
    struct flaky_kv *f = calloc(1, sizeof *f);
    REQUIRE(f);
    defer_call(free, f);
    const mailtls_memory *m = NULL;
    REQUIRE_RC(mailtls_memory_new_store(flaky_get, flaky_put, flaky_del, f, &m), MAILTLS_RESULT_OK);
    defer_call(free_memory, (void *)m);
    struct contact c1 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c1, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 2);
    REQUIRE(f->kv.n == 1);
    char before[512];
    snprintf(before, sizeof before, "%s", f->kv.val[0]);
    /* The store fails: the contact still works (from the top), nothing is written over
     * the record it could not read, and the failure is reported. */
    f->fail_gets = 1;
    int puts = f->kv.puts;
    struct contact c2 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c2, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 2);
    CHECK(f->kv.puts == puts);
    CHECK_STREQ(f->kv.val[0], before);
    char problems[2048] = {0};
    uintptr_t w = 0;
    CHECK_RC(mailtls_memory_problems(m, problems, sizeof problems, &w), MAILTLS_RESULT_OK);
    if (!strstr(problems, "store get smtp 127.0.0.1") || !strstr(problems, "(errno 5)") ||
        !strstr(problems, "is not written: its record could not be read"))
        test_fail(__FILE__, __LINE__, "problems: %s", problems);
    /* ERANGE: the library offers a buffer four times larger, up to 65536 bytes. */
    f->fail_gets = 0;
    f->need = 20000;
    f->nlens = 0;
    struct contact c3 = contact(z, MAILTLS_POLICY_ENCRYPT, m);
    EXPECT_AT(c3, MAILTLS_OUTCOME_TLS, MAILTLS_RUNG_COMPACT, 1);
    CHECK(f->nlens >= 3 && f->lens[0] == 4096 && f->lens[1] == 16384 && f->lens[2] == 65536);
}

/* Last in this file: the table of every case above. */
TEST(zoo_table) {
    printf("\n  %-24s %-10s %-8s %-6s %-5s\n", "case", "outcome", "rung", "first", "next");
    for (int i = 0; i < nrows; i++) {
        printf("  %-24s %-10s %-8s %-6d %-5d\n", rows[i].name, mailtls_outcome_name(rows[i].outcome),
               rung_name(rows[i].rung), rows[i].first, rows[i].next);
        /* The memory never makes a next contact cost more than the first. */
        CHECK(rows[i].first >= 1 && rows[i].next <= rows[i].first);
    }
}
