/* A program written outside the tree, built against an installed mailtls: a client
 * and a server over a socketpair negotiate STARTTLS in SMTP (greeting, EHLO,
 * STARTTLS, handshake, EHLO again under TLS, QUIT), the client verifying the
 * server's certificate against a CA file. tests/install/run.sh builds it three
 * ways: linked with `pkg-config --libs mailtls` (the shared library), with
 * `pkg-config --static --libs mailtls` (the static one), and with -DUSE_DLOPEN,
 * where it links nothing of mailtls and takes every function from
 * dlopen("libmailtls.so.0") and dlvsym(..., "MAILTLS_0").
 *
 *   starttls CERT KEY CAFILE
 *
 * Prints what was negotiated on one line; exits 0 when both sides did what SMTP
 * over STARTTLS asks of them, 1 otherwise. */
#define _GNU_SOURCE
#include <mailtls.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef USE_DLOPEN
#include <dlfcn.h>
#endif

/* Every function the program calls, taken from the library one way or the other. */
#define FUNCS(X)                                                                  \
    X(version) X(result_name) X(config_builder_new) X(config_builder_free)        \
    X(config_builder_set_policy) X(config_builder_set_ca_file)                    \
    X(config_builder_set_certificate_files) X(config_builder_set_helo_name)       \
    X(config_builder_set_timeout_ms) X(config_builder_build)                      \
    X(config_builder_last_error) X(config_free) X(client_new) X(server_new)       \
    X(session_free) X(session_set_fd) X(client_negotiate) X(session_read)         \
    X(session_write) X(session_flush) X(session_close) X(session_last_error)      \
    X(session_report) X(report_outcome) X(report_tls_version) X(report_cipher)    \
    X(report_group) X(report_peer_cert_verified) X(report_capability_count)       \
    X(report_capability) X(server_offer_starttls) X(server_check_command)         \
    X(server_reply) X(server_starttls)

#define FIELD(f) __typeof__(&mailtls_##f) f;
static struct {
    FUNCS(FIELD)
} mt;
/* Where the functions came from, for the summary line. */
static const char *origin = "linked";

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "starttls[%d]: ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void load(void) {
#ifdef USE_DLOPEN
    /* By soname, as a program that loads it at run time would: the dynamic loader
     * finds it through LD_LIBRARY_PATH, the cache or the default directories. */
    void *h = dlopen("libmailtls.so.0", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        die("dlopen libmailtls.so.0: %s", dlerror());
#define LOAD(f)                                                                   \
    {                                                                             \
        void *p = dlvsym(h, "mailtls_" #f, "MAILTLS_0");                          \
        if (p == NULL)                                                            \
            die("dlvsym mailtls_" #f "@MAILTLS_0: %s", dlerror());                \
        memcpy(&mt.f, &p, sizeof p);                                              \
    }
#else
#define LOAD(f) mt.f = mailtls_##f;
#endif
    FUNCS(LOAD)
#ifdef USE_DLOPEN
    Dl_info info;
    void *p;
    memcpy(&p, &mt.version, sizeof p);
    if (dladdr(p, &info) != 0 && info.dli_fname != NULL)
        origin = info.dli_fname;
#endif
}

static const mailtls_config *build(mailtls_config_builder *b, const char *who) {
    const mailtls_config *cfg = NULL;
    if (mt.config_builder_build(b, &cfg) != MAILTLS_RESULT_OK) {
        char err[512];
        mt.config_builder_last_error(b, err, sizeof err);
        die("%s config: %s", who, err);
    }
    mt.config_builder_free(b);
    return cfg;
}

static void check(mailtls_result rc, mailtls_session *s, const char *what) {
    if (rc != MAILTLS_RESULT_OK)
        die("%s: %s: %s", what, mt.result_name(rc), s ? mt.session_last_error(s) : "");
}

static void send_all(mailtls_session *s, const char *text) {
    size_t n = strlen(text), off = 0;
    while (off < n) {
        uintptr_t k = 0;
        check(mt.session_write(s, (const uint8_t *)text + off, n - off, &k), s, "write");
        off += k;
    }
    check(mt.session_flush(s), s, "flush");
}

/* The server's input: raw from the socket before TLS, through the session after. */
struct input {
    int fd, tls;
    mailtls_session *s;
    size_t n;
    char b[4096];
};

static int next_line(struct input *in, char *out, size_t cap) {
    for (;;) {
        char *nl = memchr(in->b, '\n', in->n);
        if (nl != NULL) {
            size_t len = (size_t)(nl - in->b) + 1, c = len;
            while (c > 0 && (in->b[c - 1] == '\n' || in->b[c - 1] == '\r'))
                c--;
            if (c >= cap)
                die("line too long");
            memcpy(out, in->b, c);
            out[c] = 0;
            memmove(in->b, in->b + len, in->n - len);
            in->n -= len;
            return 1;
        }
        if (in->n == sizeof in->b)
            die("no end of line");
        uintptr_t k = 0;
        if (in->tls) {
            mailtls_result rc = mt.session_read(in->s, (uint8_t *)in->b + in->n, sizeof in->b - in->n, &k);
            if (rc == MAILTLS_RESULT_CLOSED)
                return 0;
            check(rc, in->s, "server read");
        } else {
            ssize_t r = read(in->fd, in->b + in->n, sizeof in->b - in->n);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return 0;
            k = (uintptr_t)r;
        }
        in->n += k;
    }
}

static int server(int fd, const char *cert, const char *key) {
    mailtls_config_builder *b = NULL;
    check(mt.config_builder_new(MAILTLS_ROLE_SERVER, &b), NULL, "server builder");
    check(mt.config_builder_set_certificate_files(b, cert, key), NULL, "certificate files");
    check(mt.config_builder_set_timeout_ms(b, 10000), NULL, "server timeout");
    const mailtls_config *cfg = build(b, "server");

    mailtls_session *s = NULL;
    check(mt.server_new(cfg, MAILTLS_PROTO_SMTP, "socketpair", &s), NULL, "server_new");
    check(mt.session_set_fd(s, fd), s, "server set_fd");
    static struct input in;
    in.fd = fd;
    in.s = s;
    send_all(s, "220 mx.install.test ESMTP\r\n");
    char line[1024];
    int quit_under_tls = 0;
    while (next_line(&in, line, sizeof line)) {
        mailtls_result rc = mt.server_check_command(s, (const uint8_t *)line, strlen(line));
        if (rc != MAILTLS_RESULT_OK) {
            send_all(s, mt.server_reply(s, rc));
            continue;
        }
        if (strncasecmp(line, "EHLO ", 5) == 0) {
            if (in.tls)
                send_all(s, "250-mx.install.test\r\n250 AUTH PLAIN\r\n");
            else if (mt.server_offer_starttls(s))
                send_all(s, "250-mx.install.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
            else
                die("the server config cannot offer STARTTLS");
        } else if (strcasecmp(line, "STARTTLS") == 0) {
            /* Whatever followed the command is the library's: never executed. */
            check(mt.server_starttls(s, (const uint8_t *)in.b, in.n), s, "server STARTTLS");
            in.n = 0;
            in.tls = 1;
        } else if (strcasecmp(line, "QUIT") == 0) {
            send_all(s, "221 2.0.0 bye\r\n");
            quit_under_tls = in.tls;
            break;
        } else {
            send_all(s, "502 5.5.2 not here\r\n");
        }
    }
    mt.session_close(s);
    mt.session_free(s);
    mt.config_free(cfg);
    if (!quit_under_tls)
        die("server: the client did not QUIT under TLS");
    return 0;
}

static int client(int fd, const char *cafile) {
    mailtls_config_builder *b = NULL;
    check(mt.config_builder_new(MAILTLS_ROLE_CLIENT, &b), NULL, "client builder");
    check(mt.config_builder_set_policy(b, MAILTLS_POLICY_VERIFY), NULL, "policy");
    check(mt.config_builder_set_ca_file(b, cafile), NULL, "CA file");
    check(mt.config_builder_set_helo_name(b, "client.install.test"), NULL, "helo name");
    check(mt.config_builder_set_timeout_ms(b, 10000), NULL, "client timeout");
    const mailtls_config *cfg = build(b, "client");

    mailtls_session *s = NULL;
    check(mt.client_new(cfg, MAILTLS_PROTO_SMTP, "mx.install.test", 25, &s), NULL, "client_new");
    check(mt.session_set_fd(s, fd), s, "client set_fd");
    check(mt.client_negotiate(s), s, "negotiate");

    const mailtls_report *r = mt.session_report(s);
    if (mt.report_outcome(r) != MAILTLS_OUTCOME_TLS)
        die("outcome %u, not TLS", mt.report_outcome(r));
    if (mt.report_peer_cert_verified(r) != 1)
        die("the server's certificate did not verify");
    /* Only what the server said under TLS: AUTH PLAIN, not PIPELINING or STARTTLS. */
    int auth = 0;
    for (uintptr_t i = 0; i < mt.report_capability_count(r); i++) {
        const char *c = mt.report_capability(r, i);
        if (strcmp(c, "AUTH PLAIN") == 0)
            auth = 1;
        if (strcmp(c, "STARTTLS") == 0 || strcmp(c, "PIPELINING") == 0)
            die("capability %s learnt in plaintext survived TLS", c);
    }
    if (!auth)
        die("no AUTH PLAIN in the capabilities learnt under TLS");
    char summary[256];
    snprintf(summary, sizeof summary, "%s %s %s", mt.report_tls_version(r), mt.report_cipher(r),
             mt.report_group(r));

    send_all(s, "QUIT\r\n");
    char reply[256];
    size_t got = 0;
    while (got < 5 || memchr(reply, '\n', got) == NULL) {
        uintptr_t k = 0;
        check(mt.session_read(s, (uint8_t *)reply + got, sizeof reply - 1 - got, &k), s, "client read");
        got += k;
    }
    reply[got] = 0;
    if (strncmp(reply, "221 ", 4) != 0)
        die("QUIT got %s", reply);
    mt.session_close(s);
    mt.session_free(s);
    mt.config_free(cfg);
    printf("libmailtls %s (%s): verified STARTTLS, %s, 221 to QUIT under TLS\n", mt.version(), origin, summary);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: starttls CERT KEY CAFILE\n");
        return 64;
    }
    alarm(60);
    load();
    if (strcmp(mt.version(), MAILTLS_VERSION_STRING) != 0)
        die("the library is %s, the header %s", mt.version(), MAILTLS_VERSION_STRING);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("socketpair: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(sv[0]);
        _exit(server(sv[1], argv[1], argv[2]));
    }
    close(sv[1]);
    int rc = client(sv[0], argv[3]);
    close(sv[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the server side failed (status %d)", status);
    return rc;
}
