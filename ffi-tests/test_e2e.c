/* End to end: the library's client against the library's server (the fixture),
 * over a socketpair and loopback TCP, with whole, one-byte and would-block I/O. */
#include "support.h"

#include <errno.h>

/* The report of a completed STARTTLS against the fixture: only the capabilities
 * learnt under TLS, TLS 1.3 facts, one successful attempt. */
static void check_tls_report(mailtls_session *s) {
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_TLS);
    CHECK_RC(mailtls_report_reason(r), MAILTLS_RESULT_OK);
    CHECK(mailtls_session_tls_active(s));
    CHECK(mailtls_report_starttls_offered(r));
    CHECK_STREQ(mailtls_report_tls_version(r), "TLSv1.3");
    const char *cipher = mailtls_report_cipher(r);
    CHECK(cipher != NULL && strncmp(cipher, "TLS13_", 6) == 0);
    CHECK(mailtls_report_group(r) != NULL);
    CHECK(mailtls_report_peer_cert_sha256(r) != NULL);
    size_t n = mailtls_report_capability_count(r);
    CHECK(n == 3);
    int auth = 0, eightbit = 0, esc = 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = mailtls_report_capability(r, i);
        if (!CHECK(c != NULL))
            continue;
        auth += strcmp(c, "AUTH PLAIN") == 0;
        eightbit += strcmp(c, "8BITMIME") == 0;
        esc += strcmp(c, "ENHANCEDSTATUSCODES") == 0;
        if (strncmp(c, "PIPELINING", 10) == 0 || strncmp(c, "SIZE", 4) == 0 || strncmp(c, "STARTTLS", 8) == 0)
            test_fail(__FILE__, __LINE__, "a capability learnt before TLS is in the report: \"%s\"", c);
    }
    CHECK(auth == 1 && eightbit == 1 && esc == 1);
    CHECK(mailtls_report_capability(r, n) == NULL);
    CHECK(mailtls_report_attempt_count(r) == 1);
    CHECK_RC(mailtls_report_attempt_result(r, 0), MAILTLS_RESULT_OK);
    CHECK(mailtls_report_attempt_rung(r, 0) == (int32_t)MAILTLS_RUNG_MODERN);
    CHECK(mailtls_report_attempt_class(r, 0) == MAILTLS_FAILURE_CLASS_NONE);
    const char *json = mailtls_report_json(r);
    if (CHECK(json != NULL)) {
        CHECK_CONTAINS(json, strlen(json), "\"outcome\":\"tls\"");
        CHECK_CONTAINS(json, strlen(json), "\"AUTH PLAIN\"");
        CHECK_NOT_CONTAINS(json, strlen(json), "PIPELINING");
    }
}

/* MAIL, RCPT, DATA with a multi-record message, QUIT, then the server's close_notify. */
static void deliver(mailtls_session *s, int lmtp) {
    struct linebuf lb = {0};
    char reply[1024];
    const char *msg = big_message();
    REQUIRE_RC(session_command(s, &lb, "MAIL FROM:<a@example.test>\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "250 2.1.0 sender ok\r\n");
    REQUIRE_RC(session_command(s, &lb, "RCPT TO:<b@example.test>\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK(strncmp(reply, "250 ", 4) == 0);
    REQUIRE_RC(session_command(s, &lb, "DATA\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    REQUIRE(strncmp(reply, "354 ", 4) == 0);
    REQUIRE_RC(session_write_all(s, msg, strlen(msg)), MAILTLS_RESULT_OK);
    REQUIRE_RC(session_command(s, &lb, ".\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, lmtp ? "250 2.0.0 delivered\r\n" : "250 2.0.0 queued\r\n");
    REQUIRE_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "221 2.0.0 bye\r\n");
    /* The fixture ends with close_notify: a clean close, not a truncation. */
    CHECK_RC(session_read_line(s, &lb, reply, sizeof reply), MAILTLS_RESULT_CLOSED);
}

/* What the fixture saw: the dialogue in order, the message byte for byte. */
static void check_fixture_saw_delivery(peer_t *p, int lmtp) {
    const char *msg = big_message();
    struct shared *sh = p->sh;
    CHECK_RC(sh->starttls_rc, MAILTLS_RESULT_OK);
    CHECK(sh->tls_was_active);
    CHECK_STREQ(sh->tls_version, "TLSv1.3");
    CHECK(sh->discarded == 0);
    CHECK(sh->outcome == MAILTLS_OUTCOME_TLS);
    CHECK(sh->mail_executed == 1);
    const char *seq = lmtp ? "C: LHLO client.test\nC: STARTTLS\nSTARTTLS: ok\nC: LHLO client.test\n"
                             "C: MAIL FROM:<a@example.test>\nC: RCPT TO:<b@example.test>\nC: DATA\n"
                           : "C: EHLO client.test\nC: STARTTLS\nSTARTTLS: ok\nC: EHLO client.test\n"
                             "C: MAIL FROM:<a@example.test>\nC: RCPT TO:<b@example.test>\nC: DATA\n";
    CHECK_CONTAINS(sh->log, sh->nlog, seq);
    CHECK_CONTAINS(sh->log, sh->nlog, "C: QUIT\n");
    if (CHECK(sh->nmsg == strlen(msg)))
        CHECK(memcmp(sh->msg, msg, sh->nmsg) == 0);
}

enum client_io { CLIENT_FD, CLIENT_ONE_BYTE, CLIENT_EAGAIN };

static void starttls_delivery(enum transport t, enum client_io cio, enum fixture_io sio, uint32_t proto) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", NULL, 0);
    o.proto = proto;
    o.io = sio;
    const mailtls_config *ccfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(o.cfg && ccfg);
    peer_t *p = peer_start(t, fixture_server, &o);
    REQUIRE(p);
    mailtls_session *s = NULL;
    REQUIRE_RC(mailtls_client_new(ccfg, proto, "localhost", 25, &s), MAILTLS_RESULT_OK);
    defer_session(s);
    struct io_ctx *ctx = NULL;
    if (cio == CLIENT_FD) {
        REQUIRE_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK);
    } else {
        ctx = io_new(p->fd);
        ctx->max_chunk = cio == CLIENT_ONE_BYTE ? 1 : 0;
        ctx->eagain_alternate = cio == CLIENT_EAGAIN;
        REQUIRE_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK);
    }
    int wb = 0;
    mailtls_result rc = negotiate_all(s, cio == CLIENT_EAGAIN ? ctx : NULL, &wb);
    if (!CHECK_RC(rc, MAILTLS_RESULT_OK))
        printf("    last error: %s\n", mailtls_session_last_error(s));
    unsigned neg_reads = 0, neg_writes = 0;
    if (cio == CLIENT_EAGAIN) {
        /* How many calls the negotiation takes depends on how the peer's bytes were
         * segmented, which is the scheduler's business; what holds by construction is
         * that the first read and the first write callback returned EAGAIN (the
         * callbacks refuse the first of every pair of calls), that each of those
         * surfaced as WOULD_BLOCK and was resumed by continue/negotiate (negotiate_all
         * checked wants_read/wants_write against the blocked direction each time), and
         * that nothing else produced a WOULD_BLOCK. */
        neg_reads = ctx->read_eagains;
        neg_writes = ctx->write_eagains;
        CHECK(neg_reads >= 1 && neg_writes >= 1);
        CHECK(wb >= 2 && (unsigned)wb <= ctx->eagains);
        /* Done: nothing to wait for any more. */
        CHECK(!mailtls_session_wants_read(s) && !mailtls_session_wants_write(s));
    } else
        CHECK(wb == 0);
    check_tls_report(s);
    /* Negotiating again once done changes nothing. */
    const mailtls_report *before = mailtls_session_report(s);
    CHECK_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    CHECK(mailtls_session_report(s) == before);
    deliver(s, proto == MAILTLS_PROTO_LMTP);
    if (cio == CLIENT_ONE_BYTE)
        CHECK(ctx->rcalls > 2000 && ctx->wcalls > 2000); /* every byte one call */
    if (cio == CLIENT_EAGAIN) {
        /* The delivery is five commands, each written after the previous reply was
         * read: five successful writes and five successful reads, and between two
         * successful calls of one callback there is always a refused one. */
        CHECK(ctx->write_eagains - neg_writes >= 4);
        CHECK(ctx->read_eagains - neg_reads >= 4);
    }
    CHECK_PEER_OK(p);
    check_fixture_saw_delivery(p, proto == MAILTLS_PROTO_LMTP);
    if (sio == FIX_ONE_BYTE)
        CHECK(p->sh->io_calls > 2000);
    if (sio == FIX_EAGAIN) {
        /* The same by construction on the server side: its first read and write were
         * refused, and every refusal the fixture saw came back as WOULD_BLOCK. */
        CHECK(p->sh->read_eagains >= 1 && p->sh->write_eagains >= 1);
        CHECK(p->sh->wouldblocks >= 2 && (unsigned)p->sh->wouldblocks <= p->sh->read_eagains + p->sh->write_eagains);
    }
}

TEST(starttls_over_socketpair_reports_tls_facts_and_delivers_message_intact) {
    starttls_delivery(VIA_SOCKETPAIR, CLIENT_FD, FIX_FD, MAILTLS_PROTO_SMTP);
}

TEST(starttls_over_loopback_tcp_reports_tls_facts_and_delivers_message_intact) {
    starttls_delivery(VIA_TCP, CLIENT_FD, FIX_FD, MAILTLS_PROTO_SMTP);
}

TEST(lmtp_starttls_uses_lhlo_before_and_after_tls) {
    starttls_delivery(VIA_SOCKETPAIR, CLIENT_FD, FIX_FD, MAILTLS_PROTO_LMTP);
}

TEST(client_with_one_byte_callback_reads_and_writes_completes_starttls) {
    starttls_delivery(VIA_SOCKETPAIR, CLIENT_ONE_BYTE, FIX_FD, MAILTLS_PROTO_SMTP);
}

TEST(server_with_one_byte_callback_reads_and_writes_completes_starttls) {
    starttls_delivery(VIA_SOCKETPAIR, CLIENT_FD, FIX_ONE_BYTE, MAILTLS_PROTO_SMTP);
}

TEST(client_callbacks_returning_eagain_every_other_call_complete_via_continue) {
    starttls_delivery(VIA_TCP, CLIENT_EAGAIN, FIX_FD, MAILTLS_PROTO_SMTP);
}

TEST(server_callbacks_returning_eagain_every_other_call_complete_via_continue) {
    starttls_delivery(VIA_SOCKETPAIR, CLIENT_FD, FIX_EAGAIN, MAILTLS_PROTO_SMTP);
}

TEST(both_sides_with_one_byte_callbacks_over_tcp_complete_starttls) {
    starttls_delivery(VIA_TCP, CLIENT_ONE_BYTE, FIX_ONE_BYTE, MAILTLS_PROTO_SMTP);
}

TEST(tls_session_ended_without_close_notify_reads_as_peer_closed_not_closed) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", NULL, 0);
    o.no_close_notify = 1;
    const mailtls_config *ccfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(o.cfg && ccfg);
    peer_t *p = peer_start(VIA_SOCKETPAIR, fixture_server, &o);
    REQUIRE(p);
    mailtls_session *s = client_on_fd(ccfg, "localhost", p->fd);
    REQUIRE(s);
    REQUIRE_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
    struct linebuf lb = {0};
    char reply[256];
    CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "221 2.0.0 bye\r\n");
    /* The fixture exits without close_notify: a possible truncation. */
    CHECK_RC(session_read_line(s, &lb, reply, sizeof reply), MAILTLS_RESULT_PEER_CLOSED);
    CHECK_PEER_OK(p);
}

/* Servers that fork a child per connection (Postfix's smtpd, mailtls-server) build
 * the config once and fork after: a session ticket one child issued must open in
 * the next child, which has issued none itself. */
TEST(a_server_forked_after_building_its_config_resumes_the_session_an_earlier_child_began) {
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = server_cfg("localhost", NULL, 0);
    o.proto = MAILTLS_PROTO_SMTP;
    const mailtls_config *ccfg = client_cfg(MAILTLS_POLICY_ENCRYPT, NULL);
    REQUIRE(o.cfg && ccfg);
    for (int i = 0; i < 3; i++) {
        peer_t *p = peer_start(VIA_TCP, fixture_server, &o); /* a new child, forked now */
        REQUIRE(p);
        mailtls_session *s = client_on_fd(ccfg, "localhost", p->fd);
        REQUIRE(s);
        REQUIRE_RC(mailtls_client_negotiate(s), MAILTLS_RESULT_OK);
        const mailtls_report *r = mailtls_session_report(s);
        CHECK_STREQ(mailtls_report_tls_version(r), "TLSv1.3");
        /* The tickets come after the handshake: a command and its reply read them. */
        struct linebuf lb = {0};
        char reply[256];
        CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
        CHECK_STREQ(reply, "221 2.0.0 bye\r\n");
        CHECK_RC(session_read_line(s, &lb, reply, sizeof reply), MAILTLS_RESULT_CLOSED);
        CHECK_PEER_OK(p);
        CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_OK);
        if (mailtls_report_resumed(r) != (i > 0) || p->sh->resumed != (i > 0))
            test_fail(__FILE__, __LINE__, "connection %d (child %d): client resumed=%d, server resumed=%d; expected %d",
                      i + 1, (int)p->pid, mailtls_report_resumed(r), p->sh->resumed, i > 0);
    }
}
