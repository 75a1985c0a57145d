/* Session tickets under caller-supplied keys: servers whose configs are built in
 * processes of their own (exec'd, sharing nothing with the suite) resume each
 * other's sessions when given the same keys, a rotated server still opens the
 * previous key's tickets, a server without that key does a full handshake; the key
 * file's format and mode checks; the setters' refusals. */
#include "support.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys.h"

#define HOST "unrelated.example" /* the name of keys.h's certificate */

/* 32 and 40 bytes, in hex: "OLD key of mailtls tickets, 2025", "NEW key ..., 2026, longer". */
static const char OLD_KEY[] = "4f4c44206b6579206f66206d61696c746c73207469636b6574732c2032303235";
static const char NEW_KEY[] = "4e4557206b6579206f66206d61696c746c73207469636b6574732c20323032362c206c6f6e676572";

static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n && i < cap; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n < cap ? n : cap;
}

/* A server in a process of its own, as one started on another host or after a restart
 * would be: it builds its config there, with keys.h's certificate and the ticket keys
 * its arguments give, and serves one connection with the fixture.
 * args: fixture I/O mode ("0" fd, "1" one byte, "2" EAGAIN), then "none", or "keys"
 * CURRENT-HEX [PREVIOUS-HEX], or "file" PATH. */
EXEC_PEER(ticket_server) {
    mailtls_config_builder *b = NULL;
    if (mailtls_config_builder_new(MAILTLS_ROLE_SERVER, &b) != MAILTLS_RESULT_OK)
        child_fail(sh, "builder_new failed");
    mailtls_config_builder_set_timeout_ms(b, STEP_TIMEOUT_MS);
    mailtls_result rc = mailtls_config_builder_set_certificate_pem(
        b, (const uint8_t *)UNRELATED_CERT_PEM, strlen(UNRELATED_CERT_PEM), (const uint8_t *)UNRELATED_KEY_PEM,
        strlen(UNRELATED_KEY_PEM));
    if (rc == MAILTLS_RESULT_OK && strcmp(args[1], "keys") == 0) {
        uint8_t cur[64], prev[64];
        size_t nc = unhex(args[2], cur, sizeof cur), np = args[3] ? unhex(args[3], prev, sizeof prev) : 0;
        rc = mailtls_config_builder_set_ticket_keys(b, cur, nc, np ? prev : NULL, np);
    } else if (rc == MAILTLS_RESULT_OK && strcmp(args[1], "file") == 0) {
        rc = mailtls_config_builder_set_ticket_key_file(b, args[2]);
    }
    const mailtls_config *cfg = NULL;
    if (rc == MAILTLS_RESULT_OK)
        rc = mailtls_config_builder_build(b, &cfg);
    if (rc != MAILTLS_RESULT_OK) {
        char why[512];
        mailtls_config_builder_last_error(b, why, sizeof why);
        child_fail(sh, "server config (%s): %s: %s", args[1], mailtls_result_name(rc), why);
    }
    mailtls_config_builder_free(b);
    struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.cfg = cfg;
    o.proto = MAILTLS_PROTO_SMTP;
    o.io = (enum fixture_io)atoi(args[0]);
    fixture_server(fd, &o, sh);
    mailtls_config_free(cfg);
}

enum client_io { CLIENT_FD, CLIENT_ONE_BYTE, CLIENT_EAGAIN };

/* One connection to a peer running the fixture: STARTTLS, then QUIT, whose reply and
 * the close_notify after it bring the tickets (they follow the handshake). Returns
 * whether the session resumed, -1 when the connection failed; client and server must
 * agree on it. */
static int one_session(peer_t *p, const mailtls_config *ccfg, enum client_io cio, const char *what) {
    if (p == NULL)
        return -1;
    mailtls_session *s = client_session(ccfg, HOST);
    if (s == NULL)
        return -1;
    struct io_ctx *ctx = NULL;
    if (cio == CLIENT_FD) {
        if (!CHECK_RC(mailtls_session_set_fd(s, p->fd), MAILTLS_RESULT_OK))
            return -1;
    } else {
        ctx = io_new(p->fd);
        ctx->max_chunk = cio == CLIENT_ONE_BYTE ? 1 : 0;
        ctx->eagain_alternate = cio == CLIENT_EAGAIN;
        if (!CHECK_RC(mailtls_session_set_io(s, io_read, io_write, ctx), MAILTLS_RESULT_OK))
            return -1;
    }
    int wb = 0;
    mailtls_result rc = negotiate_all(s, cio == CLIENT_EAGAIN ? ctx : NULL, &wb);
    if (!CHECK_RC(rc, MAILTLS_RESULT_OK)) {
        printf("    %s: last error: %s\n", what, mailtls_session_last_error(s));
        CHECK_PEER_OK(p);
        return -1;
    }
    if (cio == CLIENT_EAGAIN)
        CHECK(wb >= 2 && ctx->read_eagains >= 1 && ctx->write_eagains >= 1);
    if (cio == CLIENT_ONE_BYTE)
        CHECK(ctx->rcalls > 100 && ctx->wcalls > 100);
    const mailtls_report *r = mailtls_session_report(s);
    CHECK_OUTCOME(r, MAILTLS_OUTCOME_TLS);
    CHECK_STREQ(mailtls_report_tls_version(r), "TLSv1.3");
    struct linebuf lb = {0};
    char reply[256];
    CHECK_RC(session_command(s, &lb, "QUIT\r\n", reply, sizeof reply), MAILTLS_RESULT_OK);
    CHECK_STREQ(reply, "221 2.0.0 bye\r\n");
    CHECK_RC(session_read_line(s, &lb, reply, sizeof reply), MAILTLS_RESULT_CLOSED);
    if (!CHECK_PEER_OK(p))
        return -1;
    CHECK_RC(p->sh->starttls_rc, MAILTLS_RESULT_OK);
    int resumed = mailtls_report_resumed(r) ? 1 : 0;
    if (resumed != (p->sh->resumed ? 1 : 0))
        test_fail(__FILE__, __LINE__, "%s: the client says resumed=%d, the server resumed=%d", what, resumed,
                  p->sh->resumed);
    return resumed;
}

static const mailtls_config *fresh_client(void) {
    return client_cfg(MAILTLS_POLICY_ENCRYPT, NULL); /* a session cache of its own */
}

#define EXPECT_RESUMED(got, want, what)                                                                      \
    do {                                                                                                     \
        int got_ = (got);                                                                                    \
        if (got_ != (want))                                                                                  \
            test_fail(__FILE__, __LINE__, "%s: resumed=%d, expected %d", (what), got_, (want));           \
    } while (0)

static void two_servers_started_apart(enum client_io cio, const char *sio) {
    const mailtls_config *ccfg = fresh_client();
    REQUIRE(ccfg);
    const char *a[] = {"0", "keys", OLD_KEY, NULL};
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", a), ccfg, CLIENT_FD, "server A"), 0,
                   "server A, first contact");
    const char *b[] = {sio, "keys", OLD_KEY, NULL};
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", b), ccfg, cio, "server B"), 1,
                   "server B, same key, built in a process of its own");
    /* The control: a server of its own without the key (a random secret) cannot. */
    const char *c[] = {"0", "none", NULL};
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", c), ccfg, CLIENT_FD, "server C"), 0,
                   "server C, no key");
}

/* Two servers, each started on its own (exec'd: not forked from anything that built a
 * config), given the same ticket key: a session begun on A resumes on B. */
TEST(servers_started_apart_with_the_same_ticket_key_resume_each_others_sessions) {
    two_servers_started_apart(CLIENT_FD, "0");
}

TEST(servers_started_apart_resume_with_one_byte_callback_io_on_both_sides) {
    two_servers_started_apart(CLIENT_ONE_BYTE, "1");
}

TEST(servers_started_apart_resume_with_eagain_every_other_call_on_both_sides) {
    two_servers_started_apart(CLIENT_EAGAIN, "2");
}

/* Rotation: A still has only the old key; B has rotated (new, old) and opens A's
 * ticket; C has dropped the old key, so A's ticket is not resumed there, and the
 * handshake completes in full instead of failing. */
TEST(a_rotated_server_opens_the_previous_keys_tickets_and_one_without_it_does_a_full_handshake) {
    const char *a[] = {"0", "keys", OLD_KEY, NULL};
    const char *b[] = {"0", "keys", NEW_KEY, OLD_KEY, NULL};
    const char *c[] = {"0", "keys", NEW_KEY, NULL};
    const mailtls_config *c1 = fresh_client(), *c2 = fresh_client();
    REQUIRE(c1 && c2);
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", a), c1, CLIENT_FD, "A"), 0, "A (old)");
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", b), c1, CLIENT_FD, "B"), 1, "B (new, old)");
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", a), c2, CLIENT_FD, "A"), 0, "A (old)");
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", c), c2, CLIENT_FD, "C"), 0, "C (new only)");
}

/* A key file the owner alone may read or write (mkstemp makes it 0600). */
static const char *key_file(const char *text) {
    const char *path = temp_file(text);
    CHECK(chmod(path, 0600) == 0);
    return path;
}

static void last_error(mailtls_config_builder *b, char *buf, size_t cap) {
    buf[0] = 0;
    CHECK_RC(mailtls_config_builder_last_error(b, buf, cap), MAILTLS_RESULT_OK);
}

/* Servers reading key files: A's file has the old key, B's the new one and the old
 * one after it (with comments and blank lines), as a rotation leaves them. */
TEST(servers_reading_rotated_ticket_key_files_resume_each_others_sessions) {
    char text[512];
    snprintf(text, sizeof text, "# mailtls ticket keys\n%s\n", OLD_KEY);
    const char *fa = key_file(text);
    snprintf(text, sizeof text, "# rotated: current key first\n\n%s\n# the previous key\n  %s  \n", NEW_KEY, OLD_KEY);
    const char *fb = key_file(text);
    const char *a[] = {"0", "file", fa, NULL};
    const char *b[] = {"0", "file", fb, NULL};
    const mailtls_config *ccfg = fresh_client();
    REQUIRE(ccfg);
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", a), ccfg, CLIENT_FD, "A"), 0, "A (file: old)");
    EXPECT_RESUMED(one_session(peer_exec(VIA_TCP, "ticket_server", b), ccfg, CLIENT_FD, "B"), 1,
                   "B (file: new, old)");
}

/* The file is read again at each build: a config rebuilt after the file lost the old
 * key no longer opens that key's tickets. */
TEST(a_config_rebuilt_after_the_key_file_changed_uses_the_new_keys) {
    char text[512];
    snprintf(text, sizeof text, "%s\n", OLD_KEY);
    const char *path = key_file(text);
    mailtls_config_builder *b = server_builder(HOST, NULL, 0);
    REQUIRE(b);
    REQUIRE_RC(mailtls_config_builder_set_ticket_key_file(b, path), MAILTLS_RESULT_OK);
    const mailtls_config *old_cfg = build_config(b);
    snprintf(text, sizeof text, "%s\n", NEW_KEY);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
    const mailtls_config *new_cfg = build_config(b);
    const mailtls_config *ccfg = fresh_client();
    REQUIRE(old_cfg && new_cfg && ccfg);
    static struct fixture_opts o;
    memset(&o, 0, sizeof o);
    o.proto = MAILTLS_PROTO_SMTP;
    o.cfg = old_cfg;
    EXPECT_RESUMED(one_session(peer_start(VIA_SOCKETPAIR, fixture_server, &o), ccfg, CLIENT_FD, "old"), 0,
                   "built with the old key");
    EXPECT_RESUMED(one_session(peer_start(VIA_SOCKETPAIR, fixture_server, &o), ccfg, CLIENT_FD, "old again"), 1,
                   "the same config again");
    o.cfg = new_cfg;
    EXPECT_RESUMED(one_session(peer_start(VIA_SOCKETPAIR, fixture_server, &o), ccfg, CLIENT_FD, "new"), 0,
                   "rebuilt with the new key only");
}

TEST(a_ticket_key_file_open_to_group_or_others_is_refused_naming_its_mode) {
    char text[512], why[1024], want[128];
    snprintf(text, sizeof text, "%s\n", NEW_KEY);
    const char *path = key_file(text);
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    static const mode_t modes[] = {0644, 0640, 0604, 0620};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        REQUIRE(chmod(path, modes[i]) == 0);
        CHECK_RC(mailtls_config_builder_set_ticket_key_file(b, path), MAILTLS_RESULT_TICKET_KEY_LOAD);
        last_error(b, why, sizeof why);
        snprintf(want, sizeof want, "%s: mode %04o ", path, (unsigned)modes[i]);
        CHECK_CONTAINS(why, strlen(why), want);
        CHECK_CONTAINS(why, strlen(why), "group or others");
        CHECK_NOT_CONTAINS(why, strlen(why), "4e4557");
    }
    REQUIRE(chmod(path, 0400) == 0);
    CHECK_RC(mailtls_config_builder_set_ticket_key_file(b, path), MAILTLS_RESULT_OK);
    REQUIRE(chmod(path, 0600) == 0);
    CHECK_RC(mailtls_config_builder_set_ticket_key_file(b, path), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_config_builder_set_ticket_key_file(b, "/nonexistent/mailtls-keys"),
             MAILTLS_RESULT_TICKET_KEY_LOAD);
    last_error(b, why, sizeof why);
    CHECK_CONTAINS(why, strlen(why), "/nonexistent/mailtls-keys: No such file");
}

TEST(a_malformed_ticket_key_file_is_refused_naming_the_line) {
    static const struct {
        const char *fmt; /* %s: a good key */
        const char *want;
    } cases[] = {
        {"# keys\n%s\nnot a key\n", ":3: column 1: not a hex digit"},
        {"%s # the current key\n", ":1: column 65: not a hex digit"},
        {"\n\n0123456789abcdef0123456789abcdef\n", ":3: the key has 16 bytes; a ticket key needs at least 32"},
        {"%s\n%s0\n", ":2: an odd number of hex digits"},
        {"%s\n%s\n%s\n", ":3: a third key"},
        {"# nothing but comments\n\n", ": no key"},
    };
    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512], why[1024], want[256];
        snprintf(text, sizeof text, cases[i].fmt, OLD_KEY, OLD_KEY, OLD_KEY);
        const char *path = key_file(text);
        CHECK_RC(mailtls_config_builder_set_ticket_key_file(b, path), MAILTLS_RESULT_TICKET_KEY_LOAD);
        last_error(b, why, sizeof why);
        snprintf(want, sizeof want, "%s%s", path, cases[i].want);
        if (!CHECK_CONTAINS(why, strlen(why), want))
            printf("    case %zu\n", i);
        CHECK_NOT_CONTAINS(why, strlen(why), "4f4c44");
    }
    /* A failed setter leaves the config buildable, with the default (random) secret. */
    CHECK(build_config(b) != NULL);
}

TEST(ticket_key_setters_refuse_a_client_builder_nulls_and_keys_of_the_wrong_size) {
    uint8_t key[80];
    memset(key, 'K', sizeof key);
    char why[1024];
    mailtls_config_builder *client = client_builder(MAILTLS_POLICY_MAY);
    REQUIRE(client);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(client, key, 32, NULL, 0), MAILTLS_RESULT_INVALID_PARAMETER);
    last_error(client, why, sizeof why);
    CHECK_CONTAINS(why, strlen(why), "for a server config");
    CHECK_RC(mailtls_config_builder_set_ticket_key_file(client, "/dev/null"), MAILTLS_RESULT_INVALID_PARAMETER);
    last_error(client, why, sizeof why);
    CHECK_CONTAINS(why, strlen(why), "for a server config");

    mailtls_config_builder *b = server_builder(NULL, NULL, 0);
    REQUIRE(b);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(NULL, key, 32, NULL, 0), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, NULL, 32, NULL, 0), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, NULL, 0, NULL, 0), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, key, 32, NULL, 32), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_config_builder_set_ticket_key_file(NULL, "/dev/null"), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_config_builder_set_ticket_key_file(b, NULL), MAILTLS_RESULT_NULL_PARAMETER);

    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, key, 31, NULL, 0), MAILTLS_RESULT_INVALID_PARAMETER);
    last_error(b, why, sizeof why);
    CHECK_CONTAINS(why, strlen(why), "current session ticket key: the key has 31 bytes; a ticket key needs at least 32");
    CHECK_NOT_CONTAINS(why, strlen(why), "KKKK");
    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, key, 65, NULL, 0), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, key, 0, NULL, 0), MAILTLS_RESULT_INVALID_PARAMETER);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, key, 32, key, 16), MAILTLS_RESULT_INVALID_PARAMETER);
    last_error(b, why, sizeof why);
    CHECK_CONTAINS(why, strlen(why), "previous session ticket key: the key has 16 bytes");

    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, key, 32, NULL, 0), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, key, 64, key, 32), MAILTLS_RESULT_OK);
    CHECK_RC(mailtls_config_builder_set_ticket_keys(b, key, 32, key, 0), MAILTLS_RESULT_OK); /* 0: no previous */
    /* keys.h's material is shared with test_api.c, which uses all of it. */
    (void)OTHER_KEY_PEM;
}
