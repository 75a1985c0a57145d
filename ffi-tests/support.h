/* mailtls C test suite: real peers (forked children over a socketpair or loopback
 * TCP), scripted misbehaving peers, the library-driven fixture server, transport
 * callbacks with fault injection, and config helpers. */
#ifndef MAILTLS_TEST_SUPPORT_H
#define MAILTLS_TEST_SUPPORT_H

#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

/* Every blocking wait is bounded: children die by alarm(), sockets time out. */
#define CHILD_ALARM_S 40
#define SOCKET_TIMEOUT_S 20
#define STEP_TIMEOUT_MS 20000
#define HELO_NAME "client.test"

enum transport { VIA_SOCKETPAIR, VIA_TCP };

/* Shared (MAP_SHARED) between the parent and a child peer: what the peer saw. */
struct shared {
    int ok;         /* the child's own checks passed */
    char err[1024]; /* else why not */
    size_t nrecv;   /* every byte the peer received (decrypted for the fixture after TLS) */
    unsigned char recv[96 * 1024];
    size_t nlog; /* fixture: one line per command and event */
    char log[16 * 1024];
    size_t nmsg; /* fixture: the DATA content as received, up to the final dot */
    char msg[96 * 1024];
    uint32_t starttls_rc;        /* fixture: mailtls_server_starttls's result (UINT32_MAX: never called) */
    uint32_t second_starttls_rc; /* fixture: what a STARTTLS under TLS gave */
    uint64_t discarded;          /* fixture: mailtls_report_discarded_bytes at the end */
    uint32_t outcome;            /* fixture: report outcome at the end */
    int tls_was_active;          /* fixture: TLS was established */
    int wouldblocks;             /* fixture: WOULD_BLOCK results seen */
    int mail_executed;           /* fixture: number of MAIL commands it answered 250 */
    unsigned io_calls;           /* fixture: read+write callback calls (callback modes) */
    unsigned read_eagains, write_eagains; /* fixture: EAGAINs its callbacks returned, by direction */
    char tls_version[32];
    int resumed;                 /* fixture: mailtls_report_resumed after STARTTLS */
};

typedef struct peer {
    pid_t pid;
    int fd; /* the parent's end; -1 once closed */
    struct shared *sh;
    int finished;
    int child_ok;
} peer_t;

typedef void (*peer_fn)(int fd, void *arg, struct shared *sh);

/* Forks a child running fn(fd) on the other end of a socketpair or of a loopback TCP
 * connection (127.0.0.1, port 0). The parent's end has send/receive timeouts. The
 * child is reaped after the test at the latest. */
peer_t *peer_start(enum transport t, peer_fn fn, void *arg);
/* Closes the parent's end (the child sees EOF), waits for the child (bounded, then
 * SIGKILL). Returns 1 when the child exited 0 with its checks passed. Idempotent. */
int peer_finish(peer_t *p);
void peer_close(peer_t *p);

/* A peer in a program of its own: the child execs this suite again, which runs the
 * exec peer `name` on its end of the connection with the NULL-terminated `args`.
 * Nothing of the suite's memory reaches it but the shared record: a server started
 * on its own, not forked from a process that built a config. Waited for, checked
 * and reaped as peer_start's children are. */
typedef void (*exec_peer_fn)(int fd, char **args, struct shared *sh);
void register_exec_peer(const char *name, exec_peer_fn fn);
#define EXEC_PEER(name)                                                        \
    static void name(int fd, char **args, struct shared *sh);                 \
    __attribute__((constructor)) static void register_peer_##name(void) {     \
        register_exec_peer(#name, name);                                       \
    }                                                                          \
    static void name(int fd, char **args, struct shared *sh)
peer_t *peer_exec(enum transport t, const char *name, const char *const *args);
/* The suite's main when its first argument is --exec-peer (the exec'd child). */
void exec_peer_main(int argc, char **argv) __attribute__((noreturn));
#define CHECK_PEER_OK(p) check_peer_ok(__FILE__, __LINE__, (p))
int check_peer_ok(const char *file, int line, peer_t *p);

/* In a child: record a failure; child_fail also exits. */
void child_failf(struct shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void child_fail(struct shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
void shared_record(struct shared *sh, const void *p, size_t n);
void shared_log(struct shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- scripted peers ---- */
enum step_op {
    S_END = 0,
    S_SEND,       /* send s (n bytes, or strlen(s) when n == 0) in one write */
    S_EXPECT,     /* read one line; it must start with s */
    S_EXPECT_EOF, /* read (and record) until EOF */
    S_SLEEP,      /* sleep ms */
    S_CLOSE,      /* close the connection now and end */
    S_READ_SOME,  /* read at least one byte (e.g. part of a ClientHello) */
    S_DRAIN,      /* read (and record) whatever comes for ms, or until EOF */
};
struct step {
    enum step_op op;
    const char *s;
    size_t n;
    int ms;
};
#define SEND(str) {S_SEND, (str), 0, 0}
#define SEND_N(buf, len) {S_SEND, (buf), (len), 0}
#define EXPECT(prefix) {S_EXPECT, (prefix), 0, 0}
#define EXPECT_EOF {S_EXPECT_EOF, NULL, 0, 0}
#define SLEEP(ms) {S_SLEEP, NULL, 0, (ms)}
#define CLOSE {S_CLOSE, NULL, 0, 0}
#define READ_SOME {S_READ_SOME, NULL, 0, 0}
#define DRAIN(ms) {S_DRAIN, NULL, 0, (ms)}
#define END {S_END, NULL, 0, 0}

peer_t *script_start(enum transport t, const struct step *steps);
/* The usual opening of a server: greeting, EHLO reply with (or without) STARTTLS. */
#define GREET_OFFER SEND("220 mx.test ESMTP\r\n"), EXPECT("EHLO " HELO_NAME), \
    SEND("250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
#define GREET_NO_OFFER SEND("220 mx.test ESMTP\r\n"), EXPECT("EHLO " HELO_NAME), \
    SEND("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")

/* ---- transport callbacks with fault injection ---- */
struct io_ctx {
    int fd;
    size_t max_chunk;       /* move at most this many bytes per call (0: no limit) */
    int eagain_alternate;   /* EAGAIN on every other call (the first of each pair) */
    unsigned rcalls, wcalls, eagains;
    unsigned read_eagains, write_eagains; /* eagains, by direction */
    char last_block;        /* 'r' or 'w': which callback returned EAGAIN last */
    int32_t read_errno;     /* return this from every read when non-zero */
    /* splice: serve canned bytes first, swallow writes until "STARTTLS\r\n" went by */
    const char *canned;
    size_t ncanned, canned_pos;
    int swallow_until_starttls;
    char wtail[16];
    size_t written; /* bytes the write callback sent to the socket */
    size_t ntap; /* raw bytes received through the callbacks */
    unsigned char tap[128 * 1024];
};
struct io_ctx *io_new(int fd); /* freed after the test */
void io_init(struct io_ctx *c, int fd);
int32_t io_read(void *ud, uint8_t *buf, uintptr_t len, uintptr_t *out_n);
int32_t io_write(void *ud, const uint8_t *buf, uintptr_t len, uintptr_t *out_n);

/* ---- configs and sessions (all freed after the test) ---- */
mailtls_config_builder *client_builder(uint32_t policy);
const mailtls_config *build_config(mailtls_config_builder *b);
const mailtls_config *client_cfg(uint32_t policy, const char *cafile);
/* A server config with a generated self-signed certificate for `hostname` (NULL: no
 * certificate at all); the PEM goes to pem_out when given. */
const mailtls_config *server_cfg(const char *hostname, char *pem_out, size_t pem_cap);
mailtls_config_builder *server_builder(const char *hostname, char *pem_out, size_t pem_cap);
/* Writes text to a temp file removed after the test; returns its path (static per call site use). */
const char *temp_file(const char *text);
mailtls_session *client_session(const mailtls_config *cfg, const char *host);
mailtls_session *client_on_fd(const mailtls_config *cfg, const char *host, int fd);

/* Drives negotiate/continue through WOULD_BLOCK; counts them and checks that
 * wants_read/wants_write name the direction that blocked (when ctx is given). */
mailtls_result negotiate_all(mailtls_session *s, struct io_ctx *ctx, int *wouldblocks);

/* Application data over a session, retrying WOULD_BLOCK (bounded). */
mailtls_result session_write_all(mailtls_session *s, const void *buf, size_t n);
/* Reads one reply line (CRLF included) into out; 0 or a result code. */
struct linebuf {
    size_t n;
    char b[8192];
};
mailtls_result session_read_line(mailtls_session *s, struct linebuf *lb, char *out, size_t cap);
/* Sends a command and reads the (last line of the) reply into out. */
mailtls_result session_command(mailtls_session *s, struct linebuf *lb, const char *cmd, char *out, size_t cap);

/* Raw plaintext on the parent's socket. */
int raw_send(int fd, const char *s);
/* Reads one line (byte by byte, so nothing past it is consumed); -1 on EOF/timeout. */
int raw_line(int fd, char *out, size_t cap);
/* Reads a whole (multi-line) SMTP reply; returns its code or -1. */
int raw_reply(int fd, char *out, size_t cap);
/* Reads until EOF (bounded by the socket timeout); returns the count. */
size_t raw_read_to_eof(int fd, unsigned char *out, size_t cap);

/* ---- the fixture server (runs in a child, uses the library's server API) ---- */
enum fixture_io { FIX_FD = 0, FIX_ONE_BYTE, FIX_EAGAIN };
struct fixture_opts {
    const mailtls_config *cfg;
    uint32_t proto;
    enum fixture_io io;
    int second_starttls_via_library; /* a STARTTLS under TLS goes to mailtls_server_starttls */
    int no_close_notify;             /* end the TLS session by just closing the socket */
};
void fixture_server(int fd, void *arg, struct shared *sh);

/* ---- the recovery zoo (zoo.c): mailtls-zoo, one server process per case ---- */
struct zoo {
    pid_t pid;
    int out; /* its stdout: one JSON line per connection */
    uint16_t port;
    int lines; /* connection lines read so far */
    char buf[8192];
    size_t nbuf;
};
/* Starts `mailtls-zoo MODE` ("normal", "reset-above:1000", ...), stopped after the test. */
struct zoo *zoo_start(const char *mode);
/* Whether the zoo logs exactly `n` connections: waits up to 10 s for the n-th line
 * (a connection is logged when it ends), then a little longer for any line too many. */
int zoo_connections_are(struct zoo *z, int n);
/* A blocking loopback TCP connection to `port`, with send/receive timeouts; -1 on failure. */
int dial(uint16_t port, int timeout_s);
/* An in-process memory, freed after the test. */
const mailtls_memory *memory_new(void);
/* A memory database file of the test's own (path filled in), freed and removed after it. */
const mailtls_memory *memory_file(char path[64]);
/* Removes a memory database and its companions (locks, .v1, .corrupt-*) after the test. */
void defer_unlink_memory(const char *path);

/* A message of many lines (over one TLS record), NUL-terminated, static. */
const char *big_message(void);

#endif
