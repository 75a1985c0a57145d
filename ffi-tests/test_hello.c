/* The server's hello sniffer through the header: crafted first flights after the go
 * reply, byte for byte, whole and in one-byte reads with EAGAIN; their class, the
 * alert each format gets, the handoff of exactly the bytes read, the per-class
 * counters, command injection in one segment, and server-side memory. */
#include "support.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- crafted flights ---- */

struct flight {
    size_t n;
    uint8_t b[512];
};

static void put(struct flight *f, const void *p, size_t n) {
    memcpy(f->b + f->n, p, n);
    f->n += n;
}
static void put8(struct flight *f, unsigned v) {
    uint8_t b = (uint8_t)v;
    put(f, &b, 1);
}
static void put16(struct flight *f, unsigned v) {
    put8(f, v >> 8);
    put8(f, v);
}

/* An SSLv2-compatible ClientHello (RFC 5246 appendix E.2) offering `version`, with
 * three cipher specs (an SSLv2 one, TLS_RSA_WITH_AES_128_CBC_SHA, _256_) and a
 * 16-byte challenge. */
static struct flight sslv2_hello(unsigned version) {
    static const uint8_t specs[9] = {0x01, 0x00, 0x80, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x35};
    struct flight f = {0};
    unsigned len = 9 + sizeof specs + 16;
    put8(&f, 0x80 | (len >> 8));
    put8(&f, len & 0xff);
    put8(&f, 0x01); /* CLIENT-HELLO */
    put16(&f, version);
    put16(&f, sizeof specs);
    put16(&f, 0); /* session id */
    put16(&f, 16);
    put(&f, specs, sizeof specs);
    for (int i = 0; i < 16; i++)
        put8(&f, 0xa5);
    return f;
}

/* A TLS-format ClientHello record: record version, client_version, two suites, and
 * either no extensions or supported_groups (+ supported_versions 1.3/1.2 when tls13). */
static struct flight tls_hello(unsigned record_version, unsigned client_version, int tls13, int extensions) {
    struct flight body = {0};
    put16(&body, client_version);
    for (int i = 0; i < 32; i++)
        put8(&body, 0x3c);
    put8(&body, 0); /* session id */
    put16(&body, 4);
    put16(&body, 0x1301);
    put16(&body, 0xc02f);
    put8(&body, 1);
    put8(&body, 0); /* null compression */
    if (extensions) {
        struct flight ext = {0};
        put16(&ext, 0x000a); /* supported_groups: x25519 */
        put16(&ext, 4);
        put16(&ext, 2);
        put16(&ext, 0x001d);
        if (tls13) {
            put16(&ext, 0x002b); /* supported_versions: 1.3, 1.2 */
            put16(&ext, 5);
            put8(&ext, 4);
            put16(&ext, 0x0304);
            put16(&ext, 0x0303);
        }
        put16(&body, (unsigned)ext.n);
        put(&body, ext.b, ext.n);
    }
    struct flight f = {0};
    put8(&f, 0x16);
    put16(&f, record_version);
    put16(&f, (unsigned)body.n + 4);
    put8(&f, 0x01);
    put8(&f, 0);
    put16(&f, (unsigned)body.n);
    put(&f, body.b, body.n);
    return f;
}

/* The handshake message of a one-record hello re-cut into records of `first` bytes,
 * then of `rest` bytes each (RFC 8446 section 5.1 allows any split). */
static struct flight fragmented(const struct flight *one, size_t first, size_t rest) {
    struct flight f = {0};
    const uint8_t *msg = one->b + 5;
    size_t left = one->n - 5, n = first;
    while (left) {
        if (n > left)
            n = left;
        put(&f, one->b, 3);
        put16(&f, (unsigned)n);
        put(&f, msg, n);
        msg += n;
        left -= n;
        n = rest;
    }
    return f;
}

static struct flight text(const char *s) {
    struct flight f = {0};
    put(&f, s, strlen(s));
    return f;
}

/* Reproducible noise whose first byte is neither text nor a TLS content type. */
static struct flight noise(uint32_t seed) {
    struct flight f = {0};
    for (int i = 0; i < 64; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        put8(&f, seed);
    }
    f.b[0] = 0x00;
    return f;
}

/* ---- serving one flight ---- */

enum io_mode { WHOLE_FD, ONE_BYTE_EAGAIN };

struct served {
    mailtls_result rc;
    uint32_t hello, outcome;
    int32_t action;
    size_t nreply;
    uint8_t reply[4096]; /* what the client got after our STARTTLS */
    size_t nhandoff;
    uint8_t handoff[512];
    size_t nrest;
    uint8_t rest[512]; /* what was still on the transport after a handoff */
};

/* The client's side writes `f` right after STARTTLS and then half-closes; the server
 * session runs mailtls_server_starttls on the other end. */
static struct served serve_flight_on(const mailtls_config *cfg, const struct flight *f, enum io_mode mode,
                                     const char *peer, int implicit) {
    struct served r;
    memset(&r, 0, sizeof r);
    r.rc = MAILTLS_RESULT_PANIC;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        test_fail(__FILE__, __LINE__, "socketpair: %s", strerror(errno));
        return r;
    }
    defer_fd(sv[0]);
    defer_fd(sv[1]);
    if (f->n && write(sv[0], f->b, f->n) != (ssize_t)f->n) {
        test_fail(__FILE__, __LINE__, "write: %s", strerror(errno));
        return r;
    }
    shutdown(sv[0], SHUT_WR);
    mailtls_session *s = NULL;
    if (!CHECK_RC(mailtls_server_new(cfg, MAILTLS_PROTO_SMTP, peer, &s), MAILTLS_RESULT_OK))
        return r;
    defer_session(s);
    struct io_ctx *ctx = NULL;
    if (mode == WHOLE_FD) {
        CHECK_RC(mailtls_session_set_fd(s, sv[1]), MAILTLS_RESULT_OK);
    } else {
        ctx = io_new(sv[1]);
        ctx->max_chunk = 1;
        ctx->eagain_alternate = 1;
        CHECK_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
    }
    r.rc = implicit ? mailtls_server_start_implicit(s) : mailtls_server_starttls(s, NULL, 0);
    for (int i = 0; r.rc == MAILTLS_RESULT_WOULD_BLOCK && i < 100000; i++)
        r.rc = mailtls_session_continue(s);
    /* A failure's alert that a non-blocking transport did not take stays queued. */
    for (int i = 0; i < 100000 && mailtls_session_wants_write(s); i++)
        if (mailtls_session_flush(s) != MAILTLS_RESULT_WOULD_BLOCK)
            break;
    const mailtls_report *rep = mailtls_session_report(s);
    r.hello = mailtls_report_hello(rep);
    r.action = mailtls_report_hello_action(rep);
    r.outcome = mailtls_report_outcome(rep);
    if (r.rc == MAILTLS_RESULT_HANDOFF) {
        const uint8_t *p = NULL;
        uintptr_t n = 0;
        CHECK_RC(mailtls_session_handoff_bytes(s, &p, &n), MAILTLS_RESULT_OK);
        if (n <= sizeof r.handoff) {
            memcpy(r.handoff, p, n);
            r.nhandoff = n;
        }
        ssize_t k;
        while (r.nrest < sizeof r.rest && (k = read(sv[1], r.rest + r.nrest, sizeof r.rest - r.nrest)) > 0)
            r.nrest += (size_t)k;
    } else {
        CHECK_RC(mailtls_session_handoff_bytes(s, &(const uint8_t *){NULL}, &(uintptr_t){0}),
                 MAILTLS_RESULT_INVALID_STATE);
    }
    shutdown(sv[1], SHUT_WR);
    r.nreply = raw_read_to_eof(sv[0], r.reply, sizeof r.reply);
    return r;
}

static struct served serve_flight(const mailtls_config *cfg, const struct flight *f, enum io_mode mode,
                                  const char *peer) {
    return serve_flight_on(cfg, f, mode, peer, 0);
}

static const char GO[] = "220 2.0.0 Ready to start TLS\r\n";

/* After the go reply, exactly `alert` (n bytes) and nothing else. */
static void check_reply(const char *file, int line, const struct served *r, const uint8_t *alert, size_t n) {
    size_t g = strlen(GO);
    if (r->nreply < g || memcmp(r->reply, GO, g) != 0) {
        test_fail(file, line, "no go reply: %s", show_bytes(r->reply, r->nreply));
        return;
    }
    if (r->nreply - g != n || memcmp(r->reply + g, alert, n) != 0)
        test_fail(file, line, "after the go reply %s, expected %s", show_bytes(r->reply + g, r->nreply - g),
                  show_bytes(alert, n));
}
#define CHECK_REPLY(r, a, n) check_reply(__FILE__, __LINE__, (r), (a), (n))

static const uint8_t SSL3_HANDSHAKE_FAILURE[] = {0x15, 0x03, 0x00, 0x00, 0x02, 0x02, 40};
static const uint8_t TLS10_PROTOCOL_VERSION[] = {0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 70};
static const uint8_t TLS10_DECODE_ERROR[] = {0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 50};
static const uint8_t TLS10_UNEXPECTED_MESSAGE[] = {0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 10};

struct hello_case {
    const char *name;
    struct flight f;
    uint32_t hello;
    int32_t action;
    mailtls_result rc;
    const uint8_t *alert; /* NULL: not checked (rustls speaks) */
    size_t nalert;
};

static void run_cases(enum io_mode mode) {
    const mailtls_config *cfg = server_cfg("localhost", NULL, 0);
    REQUIRE(cfg);
    struct flight tls13 = tls_hello(0x0301, 0x0303, 1, 1);
    static const uint8_t appdata[] = {0x17, 0x03, 0x03, 0x00, 0x01, 0x00};
    struct flight early_data = {0};
    put(&early_data, appdata, sizeof appdata);
    struct hello_case cases[] = {
        /* SSLv2-format hellos get a TLS alert record, as OpenSSL answers them. */
        {"sslv2-compat offering TLS 1.0", sslv2_hello(0x0301), MAILTLS_HELLO_SSLV2_COMPAT, MAILTLS_HELLO_ACTION_REFUSE,
         MAILTLS_RESULT_HELLO_REFUSED, TLS10_PROTOCOL_VERSION, sizeof TLS10_PROTOCOL_VERSION},
        {"sslv2-compat offering TLS 1.2", sslv2_hello(0x0303), MAILTLS_HELLO_SSLV2_COMPAT, MAILTLS_HELLO_ACTION_REFUSE,
         MAILTLS_RESULT_HELLO_REFUSED, TLS10_PROTOCOL_VERSION, sizeof TLS10_PROTOCOL_VERSION},
        {"SSL 3.0", tls_hello(0x0300, 0x0300, 0, 0), MAILTLS_HELLO_SSL3, MAILTLS_HELLO_ACTION_REFUSE,
         MAILTLS_RESULT_HELLO_REFUSED, SSL3_HANDSHAKE_FAILURE, sizeof SSL3_HANDSHAKE_FAILURE},
        {"TLS 1.0", tls_hello(0x0301, 0x0301, 0, 1), MAILTLS_HELLO_TLS10, MAILTLS_HELLO_ACTION_REFUSE,
         MAILTLS_RESULT_HELLO_REFUSED, TLS10_PROTOCOL_VERSION, sizeof TLS10_PROTOCOL_VERSION},
        {"TLS 1.2 without extensions", tls_hello(0x0301, 0x0303, 0, 0), MAILTLS_HELLO_TLS12,
         MAILTLS_HELLO_ACTION_SERVE, 0, NULL, 0},
        {"TLS 1.3", tls13, MAILTLS_HELLO_TLS13, MAILTLS_HELLO_ACTION_SERVE, 0, NULL, 0},
        /* Split over records, the first holding fewer than 6 bytes of it: read on. */
        {"TLS 1.3 in records of 3, then 1, bytes", fragmented(&tls13, 3, 1), MAILTLS_HELLO_TLS13,
         MAILTLS_HELLO_ACTION_SERVE, 0, NULL, 0},
        {"TLS 1.3 in records of 5, then 64 bytes", fragmented(&tls13, 5, 64), MAILTLS_HELLO_TLS13,
         MAILTLS_HELLO_ACTION_SERVE, 0, NULL, 0},
        /* Versions above TLS 1.2 without supported_versions: TLS 1.2 (RFC 8446 D.2). */
        {"client_version 0x0401", tls_hello(0x0301, 0x0401, 0, 1), MAILTLS_HELLO_TLS12, MAILTLS_HELLO_ACTION_SERVE, 0,
         NULL, 0},
        {"client_version 0x0603", tls_hello(0x0301, 0x0603, 0, 1), MAILTLS_HELLO_TLS12, MAILTLS_HELLO_ACTION_SERVE, 0,
         NULL, 0},
        {"client_version 0xfefe", tls_hello(0x0301, 0xfefe, 0, 0), MAILTLS_HELLO_TLS12, MAILTLS_HELLO_ACTION_SERVE, 0,
         NULL, 0},
        /* Malformed and unknown flights get the alert that fits them. */
        {"random bytes", noise(0x2545f491), MAILTLS_HELLO_UNKNOWN, MAILTLS_HELLO_ACTION_REFUSE,
         MAILTLS_RESULT_HELLO_REFUSED, TLS10_DECODE_ERROR, sizeof TLS10_DECODE_ERROR},
        {"more random bytes", noise(0x9e3779b9), MAILTLS_HELLO_UNKNOWN, MAILTLS_HELLO_ACTION_REFUSE,
         MAILTLS_RESULT_HELLO_REFUSED, TLS10_DECODE_ERROR, sizeof TLS10_DECODE_ERROR},
        {"application data first", early_data, MAILTLS_HELLO_UNKNOWN, MAILTLS_HELLO_ACTION_REFUSE,
         MAILTLS_RESULT_HELLO_REFUSED, TLS10_UNEXPECTED_MESSAGE, sizeof TLS10_UNEXPECTED_MESSAGE},
    };
    uint64_t before[9];
    for (uint32_t h = 0; h < 9; h++)
        before[h] = mailtls_config_hello_count(cfg, h);
    uint64_t expect[9] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct hello_case *c = &cases[i];
        struct served r = serve_flight(cfg, &c->f, mode, "192.0.2.1:1025");
        expect[c->hello]++;
        if (r.hello != c->hello || r.action != c->action)
            test_fail(__FILE__, __LINE__, "%s: classified %s, action %d; expected %s, action %d", c->name,
                      mailtls_hello_name(r.hello), r.action, mailtls_hello_name(c->hello), c->action);
        if (c->rc) {
            if (r.rc != c->rc)
                test_fail(__FILE__, __LINE__, "%s: %s, expected %s", c->name, mailtls_result_name(r.rc),
                          mailtls_result_name(c->rc));
            CHECK_REPLY(&r, c->alert, c->nalert);
            CHECK(r.outcome == MAILTLS_OUTCOME_FAIL);
        } else {
            /* Served by rustls, which then fails on the crafted content with an alert of its own. */
            CHECK(r.rc != MAILTLS_RESULT_OK && r.rc != MAILTLS_RESULT_HELLO_REFUSED);
            CHECK(r.nreply > strlen(GO) && r.reply[strlen(GO)] == 0x15);
        }
    }
    for (uint32_t h = 0; h < 9; h++)
        if (mailtls_config_hello_count(cfg, h) - before[h] != expect[h])
            test_fail(__FILE__, __LINE__, "counter %s: %llu, expected %llu", mailtls_hello_name(h),
                      (unsigned long long)(mailtls_config_hello_count(cfg, h) - before[h]),
                      (unsigned long long)expect[h]);
}

TEST(crafted_first_flights_are_classified_and_get_their_formats_alert) {
    run_cases(WHOLE_FD);
}

TEST(crafted_first_flights_in_one_byte_reads_with_eagain_are_classified_the_same) {
    run_cases(ONE_BYTE_EAGAIN);
}

TEST(plaintext_ehlo_after_the_go_reply_is_classified_plaintext_and_never_executed) {
    for (int close_mode = 0; close_mode < 2; close_mode++) {
        mailtls_config_builder *b = server_builder("localhost", NULL, 0);
        REQUIRE(b);
        REQUIRE_RC(mailtls_config_builder_set_injection_action(
                       b, close_mode ? MAILTLS_INJECTION_ACTION_CLOSE : MAILTLS_INJECTION_ACTION_DISCARD),
                   MAILTLS_RESULT_OK);
        const mailtls_config *cfg = build_config(b);
        REQUIRE(cfg);
        for (int mode = 0; mode < 2; mode++) {
            struct flight f = text("EHLO plaintext.test\r\n");
            struct served r = serve_flight(cfg, &f, mode ? ONE_BYTE_EAGAIN : WHOLE_FD, "192.0.2.2:1025");
            CHECK(r.hello == MAILTLS_HELLO_PLAINTEXT);
            /* close: refused at once; discard: dropped, then the client's EOF ends it. */
            CHECK_RC(r.rc, close_mode ? MAILTLS_RESULT_COMMAND_INJECTION : MAILTLS_RESULT_PEER_CLOSED);
            CHECK(r.nreply == strlen(GO) && memcmp(r.reply, GO, strlen(GO)) == 0);
        }
    }
}

/* An implicit-TLS server session fed `f`, then EOF: the result and the last error. */
static mailtls_result serve_implicit(const mailtls_config *cfg, const struct flight *f, uint32_t *hello, char *err,
                                     size_t errlen) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return MAILTLS_RESULT_PANIC;
    defer_fd(sv[0]);
    defer_fd(sv[1]);
    if (f->n && write(sv[0], f->b, f->n) != (ssize_t)f->n)
        return MAILTLS_RESULT_PANIC;
    shutdown(sv[0], SHUT_WR);
    mailtls_session *s = NULL;
    if (!CHECK_RC(mailtls_server_new(cfg, MAILTLS_PROTO_SMTP, "192.0.2.9:1025", &s), MAILTLS_RESULT_OK))
        return MAILTLS_RESULT_PANIC;
    defer_session(s);
    CHECK_RC(mailtls_session_set_fd(s, sv[1]), MAILTLS_RESULT_OK);
    mailtls_result rc = mailtls_server_start_implicit(s);
    *hello = mailtls_report_hello(mailtls_session_report(s));
    snprintf(err, errlen, "%s", mailtls_session_last_error(s));
    return rc;
}

/* On an implicit-TLS port a plaintext command is the client's mistake, not a command
 * pipelined after STARTTLS; and a client that stops after a few bytes of its hello
 * did send bytes: the log says both as they are. */
TEST(plaintext_on_an_implicit_port_and_a_stalled_first_flight_are_named_as_they_are) {
    const mailtls_config *cfg = server_cfg("localhost", NULL, 0);
    REQUIRE(cfg);
    uint32_t hello = 0;
    char err[512];
    struct flight f = text("EHLO plaintext.test\r\n");
    CHECK_RC(serve_implicit(cfg, &f, &hello, err, sizeof err), MAILTLS_RESULT_NOT_TLS);
    CHECK(hello == MAILTLS_HELLO_PLAINTEXT);
    if (!strstr(err, "implicit-TLS port") || strstr(err, "STARTTLS"))
        test_fail(__FILE__, __LINE__, "last error: %s", err);
    struct flight tls13 = tls_hello(0x0301, 0x0303, 1, 1);
    for (size_t n = 2; n <= 5; n++) {
        struct flight part = tls13;
        part.n = n;
        CHECK_RC(serve_implicit(cfg, &part, &hello, err, sizeof err), MAILTLS_RESULT_PEER_CLOSED);
        char want[64];
        snprintf(want, sizeof want, "after %zu bytes of its first flight", n);
        if (!strstr(err, want) || strstr(err, "before any TLS byte"))
            test_fail(__FILE__, __LINE__, "%zu bytes: last error: %s", n, err);
    }
    struct flight none = {0};
    CHECK_RC(serve_implicit(cfg, &none, &hello, err, sizeof err), MAILTLS_RESULT_PEER_CLOSED);
    CHECK(strstr(err, "before any TLS byte") != NULL);
}

TEST(handoff_hands_over_exactly_the_bytes_read_and_leaves_the_rest_on_the_transport) {
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_hello_action(b, MAILTLS_HELLO_SSLV2_COMPAT, MAILTLS_HELLO_ACTION_HANDOFF),
               MAILTLS_RESULT_OK);
    REQUIRE_RC(mailtls_config_builder_set_hello_action(b, MAILTLS_HELLO_TLS10, MAILTLS_HELLO_ACTION_HANDOFF),
               MAILTLS_RESULT_OK);
    /* rustls cannot serve what it does not speak, and TLS 1.3 cannot be handed off. */
    CHECK_RC(mailtls_config_builder_set_hello_action(b, MAILTLS_HELLO_SSL3, MAILTLS_HELLO_ACTION_SERVE),
             MAILTLS_RESULT_INVALID_PARAMETER);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    const struct flight flights[] = {sslv2_hello(0x0301), sslv2_hello(0x0303), tls_hello(0x0301, 0x0301, 0, 1)};
    for (size_t i = 0; i < 3; i++) {
        for (int mode = 0; mode < 2; mode++) {
            struct served r = serve_flight(cfg, &flights[i], mode ? ONE_BYTE_EAGAIN : WHOLE_FD, "192.0.2.3:1025");
            CHECK_RC(r.rc, MAILTLS_RESULT_HANDOFF);
            CHECK(r.outcome == MAILTLS_OUTCOME_HANDOFF);
            CHECK(r.action == MAILTLS_HELLO_ACTION_HANDOFF);
            /* Nothing lost, nothing invented: handed bytes + what is left = the flight. */
            CHECK(r.nhandoff > 0 && r.nhandoff + r.nrest == flights[i].n);
            CHECK(memcmp(r.handoff, flights[i].b, r.nhandoff) == 0);
            CHECK(memcmp(r.rest, flights[i].b + r.nhandoff, r.nrest) == 0);
            /* The library sent its go reply and no alert. */
            CHECK(r.nreply == strlen(GO));
        }
    }
}

/* RFC 8314 ports get the same legacy hellos as STARTTLS: the first bytes on the
 * connection are the hello, and a handoff gives the application exactly those. */
TEST(implicit_tls_hands_off_sslv2_compatible_and_tls10_hellos_with_exactly_the_bytes_read) {
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_hello_action(b, MAILTLS_HELLO_SSLV2_COMPAT, MAILTLS_HELLO_ACTION_HANDOFF),
               MAILTLS_RESULT_OK);
    REQUIRE_RC(mailtls_config_builder_set_hello_action(b, MAILTLS_HELLO_TLS10, MAILTLS_HELLO_ACTION_HANDOFF),
               MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    const struct flight flights[] = {sslv2_hello(0x0301), sslv2_hello(0x0303), tls_hello(0x0301, 0x0301, 0, 1)};
    const uint32_t kinds[] = {MAILTLS_HELLO_SSLV2_COMPAT, MAILTLS_HELLO_SSLV2_COMPAT, MAILTLS_HELLO_TLS10};
    for (size_t i = 0; i < 3; i++) {
        for (int mode = 0; mode < 2; mode++) {
            uint64_t before = mailtls_config_hello_count(cfg, kinds[i]);
            struct served r = serve_flight_on(cfg, &flights[i], mode ? ONE_BYTE_EAGAIN : WHOLE_FD, "192.0.2.4:1025", 1);
            CHECK_RC(r.rc, MAILTLS_RESULT_HANDOFF);
            CHECK(r.hello == kinds[i]);
            CHECK(r.outcome == MAILTLS_OUTCOME_HANDOFF);
            CHECK(r.action == MAILTLS_HELLO_ACTION_HANDOFF);
            CHECK(mailtls_config_hello_count(cfg, kinds[i]) == before + 1);
            CHECK(r.nhandoff > 0 && r.nhandoff + r.nrest == flights[i].n);
            CHECK(memcmp(r.handoff, flights[i].b, r.nhandoff) == 0);
            CHECK(memcmp(r.rest, flights[i].b + r.nhandoff, r.nrest) == 0);
            /* No go reply on an implicit port, and no alert: the client got nothing. */
            if (r.nreply != 0)
                test_fail(__FILE__, __LINE__, "flight %zu: the client got %s", i, show_bytes(r.reply, r.nreply));
        }
    }
    /* Without handoff the same hellos are refused with their format's alert. */
    const mailtls_config *refusing = server_cfg("localhost", NULL, 0);
    REQUIRE(refusing);
    struct served r = serve_flight_on(refusing, &flights[2], WHOLE_FD, "192.0.2.4:1025", 1);
    CHECK_RC(r.rc, MAILTLS_RESULT_HELLO_REFUSED);
    CHECK(r.nreply == sizeof TLS10_PROTOCOL_VERSION && memcmp(r.reply, TLS10_PROTOCOL_VERSION, r.nreply) == 0);
}

/* ---- command injection after STARTTLS, in one segment ---- */

static mailtls_result library_client_after_raw_starttls(int fd, const char *injected, mailtls_session **out,
                                                        struct io_ctx **ctx_out) {
    char line[512];
    if (raw_reply(fd, line, sizeof line) != 220)
        return MAILTLS_RESULT_PROTOCOL;
    raw_send(fd, "EHLO client.test\r\n");
    if (raw_reply(fd, line, sizeof line) != 250)
        return MAILTLS_RESULT_PROTOCOL;
    raw_send(fd, injected);
    /* The library client takes over from the go reply: canned EHLO exchange spliced
     * away, so the session sees only what follows. */
    const mailtls_config *cfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    struct io_ctx *ctx = io_new(fd);
    static const char canned[] = "220 mx.test ESMTP\r\n250-mx.test\r\n250 STARTTLS\r\n";
    ctx->canned = canned;
    ctx->ncanned = strlen(canned);
    ctx->swallow_until_starttls = 1;
    mailtls_session *s = client_session(cfg, "localhost");
    if (!s)
        return MAILTLS_RESULT_PANIC;
    mailtls_session_set_io(s, io_read, io_write, ctx);
    *out = s;
    *ctx_out = ctx;
    return negotiate_all(s, NULL, NULL);
}

TEST(starttls_rset_mail_in_one_segment_is_never_executed_in_discard_mode) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", NULL, 0);
    REQUIRE(o.cfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    const char *inj = "STARTTLS\r\nRSET\r\nMAIL FROM:<x@y>\r\n";
    mailtls_session *s = NULL;
    struct io_ctx *ctx = NULL;
    CHECK_RC(library_client_after_raw_starttls(p->fd, inj, &s, &ctx), MAILTLS_RESULT_OK);
    REQUIRE(s);
    struct linebuf lb = {0};
    char reply[256];
    CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_PEER_OK(p);
    CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_OK);
    CHECK(p->sh->discarded == strlen("RSET\r\nMAIL FROM:<x@y>\r\n"));
    CHECK(p->sh->mail_executed == 0);
    CHECK_NOT_CONTAINS(p->sh->log, p->sh->nlog, "C: RSET");
    CHECK_NOT_CONTAINS(p->sh->log, p->sh->nlog, "C: MAIL");
}

TEST(starttls_rset_mail_in_one_segment_closes_the_connection_in_close_mode) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_injection_action(b, MAILTLS_INJECTION_ACTION_CLOSE), MAILTLS_RESULT_OK);
    o.cfg = build_config(b);
    REQUIRE(o.cfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    char line[512];
    REQUIRE(raw_reply(p->fd, line, sizeof line) == 220);
    raw_send(p->fd, "EHLO client.test\r\n");
    REQUIRE(raw_reply(p->fd, line, sizeof line) == 250);
    raw_send(p->fd, "STARTTLS\r\nRSET\r\nMAIL FROM:<x@y>\r\n");
    static unsigned char rest[4096];
    size_t n = raw_read_to_eof(p->fd, rest, sizeof rest);
    CHECK(n == 0); /* no 220, no 250: closed */
    CHECK_PEER_OK(p);
    CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_COMMAND_INJECTION);
    CHECK(p->sh->mail_executed == 0);
    CHECK_NOT_CONTAINS(p->sh->log, p->sh->nlog, "C: RSET");
}

/* ---- server-side memory ---- */

static void free_memory(void *m) { mailtls_memory_free(m); }

static int offered_to(const mailtls_config *cfg, const char *peer) {
    mailtls_session *s = NULL;
    if (!CHECK_RC(mailtls_server_new(cfg, MAILTLS_PROTO_SMTP, peer, &s), MAILTLS_RESULT_OK))
        return -1;
    int o = mailtls_server_offer_starttls(s);
    mailtls_session_free(s);
    return o;
}

TEST(server_memory_stops_offering_starttls_to_a_client_whose_hello_was_refused) {
    const mailtls_memory *m = NULL;
    REQUIRE_RC(mailtls_memory_new(&m), MAILTLS_RESULT_OK);
    defer_call(free_memory, (void *)m);
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_server_memory(b, m, 3600), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    CHECK(offered_to(cfg, "192.0.2.7:4000") == 1);
    struct flight f = sslv2_hello(0x0301);
    struct served r = serve_flight(cfg, &f, WHOLE_FD, "192.0.2.7:4001");
    CHECK_RC(r.rc, MAILTLS_RESULT_HELLO_REFUSED);
    /* The legacy sender reconnects: no STARTTLS, so its plaintext retry gets through. */
    CHECK(offered_to(cfg, "192.0.2.7:4002") == 0);
    CHECK(offered_to(cfg, "198.51.100.9:4002") == 1);
    char rec[256];
    uintptr_t w = 0;
    CHECK_RC(mailtls_memory_lookup(m, MAILTLS_PROTO_SMTP, "192.0.2.7", 0, rec, sizeof rec, &w), MAILTLS_RESULT_OK);
    CHECK(strstr(rec, "incompatible") != NULL);
    /* It expires: an hour and a second later STARTTLS is offered again. */
    CHECK_RC(mailtls_memory_set_clock(m, (uint64_t)time(NULL) + 3601), MAILTLS_RESULT_OK);
    CHECK(offered_to(cfg, "192.0.2.7:4003") == 1);
    CHECK_RC(mailtls_memory_set_clock(m, 0), MAILTLS_RESULT_OK);
    CHECK(offered_to(cfg, "192.0.2.7:4004") == 0);
    /* Clearable from C. */
    CHECK_RC(mailtls_memory_forget(m, MAILTLS_PROTO_SMTP, "192.0.2.7", 0), MAILTLS_RESULT_OK);
    CHECK(offered_to(cfg, "192.0.2.7:4005") == 1);
}

TEST(server_memory_does_not_apply_when_the_server_requires_tls) {
    const mailtls_memory *m = NULL;
    REQUIRE_RC(mailtls_memory_new(&m), MAILTLS_RESULT_OK);
    defer_call(free_memory, (void *)m);
    mailtls_config_builder *b = server_builder("localhost", NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_server_memory(b, m, 0), MAILTLS_RESULT_OK);
    REQUIRE_RC(mailtls_config_builder_set_require_tls(b, true), MAILTLS_RESULT_OK);
    const mailtls_config *cfg = build_config(b);
    REQUIRE(cfg);
    struct flight f = sslv2_hello(0x0301);
    struct served r = serve_flight(cfg, &f, WHOLE_FD, "192.0.2.8:4001");
    CHECK_RC(r.rc, MAILTLS_RESULT_HELLO_REFUSED);
    CHECK(offered_to(cfg, "192.0.2.8:4002") == 1);
    char rec[256];
    uintptr_t w = 0;
    CHECK_RC(mailtls_memory_lookup(m, MAILTLS_PROTO_SMTP, "192.0.2.8", 0, rec, sizeof rec, &w), MAILTLS_RESULT_OK);
    CHECK_STREQ(rec, "");
}
