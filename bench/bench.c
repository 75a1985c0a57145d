/*
 * mailtls against OpenSSL 3, measured in one run (issue 7). Both speak the same SMTP
 * dialogue over a socketpair, client in the main thread, server in a second one:
 * greeting, EHLO, STARTTLS, a TLS 1.3 handshake, EHLO, QUIT.
 *
 *   bench-c CERT KEY LABEL [--quick]
 *
 * CERT/KEY: the server's certificate (ECDSA P-256 or RSA-2048), LABEL names it in the
 * output. Prints one JSON object per figure on stdout:
 *   {"what":"sessions","impl":"mailtls-pq","cert":"ecdsa","runs":[...],"median":N}
 * sessions/s (full handshakes), resumed sessions/s, bulk MB/s (64 MiB through an
 * established session, handshake excluded), heap bytes per idle established session
 * (10,000 of them, client and server side apart), and the recovery cost against the
 * zoo (connections and round trips; MAILTLS_ZOO names the mailtls-zoo program).
 *
 * BENCH_PART=sessions|bulk|rest picks a part (run.sh runs the sessions part pinned to
 * one CPU); BENCH_ONLY=mailtls-pq|mailtls-x25519|openssl one implementation, for perf.
 *
 * OpenSSL is linked by this benchmark only (libssl from Debian's packages), never by
 * the library.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <mailtls.h>

static int quick;
static const char *label;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench-c: %s (%s)\n", what, strerror(errno));
    ERR_print_errors_fp(stderr);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void emit(const char *what, const char *impl, const double *runs, int n, const char *unit)
{
    double s[16];
    memcpy(s, runs, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    printf("{\"what\":\"%s\",\"impl\":\"%s\",\"cert\":\"%s\",\"unit\":\"%s\",\"runs\":[", what, impl, label, unit);
    for (int i = 0; i < n; i++)
        printf("%s%.1f", i ? "," : "", runs[i]);
    printf("],\"median\":%.1f}\n", med);
    fflush(stdout);
}

/* ---- plain socket lines ---- */

static void write_all(int fd, const void *p, size_t n)
{
    const char *q = p;
    while (n) {
        ssize_t w = write(fd, q, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write");
        q += w;
        n -= (size_t)w;
    }
}

/* Reads until the buffer holds a line ending in "\r\n" whose 4th byte is a space (an
 * SMTP reply's last line) or any CRLF line when `any_line`. */
static size_t read_reply_fd(int fd, char *buf, size_t cap, bool any_line)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0)
            die("read");
        n += (size_t)r;
        buf[n] = 0;
        if (n >= 2 && buf[n - 2] == '\r' && buf[n - 1] == '\n') {
            if (any_line)
                return n;
            char *last = buf + n - 2;
            while (last > buf && last[-1] != '\n')
                last--;
            if (strlen(last) >= 4 && last[3] == ' ')
                return n;
        }
    }
}

/* ---- a server thread fed socket descriptors through a pipe ---- */

enum server_kind { SRV_MAILTLS, SRV_OPENSSL };
enum keep { KEEP_NONE, KEEP_SERVER, DROP_SERVER }; /* after the EHLO inside TLS: keep the session, or drop it */

struct server {
    enum server_kind kind;
    int cmd[2];  /* fds to serve, -1 ends */
    int done[2]; /* one byte per session served */
    const mailtls_config *mcfg;
    SSL_CTX *octx;
    enum keep keep;
    bool bulk;
    /* kept sessions (memory benchmark) */
    void **kept;
    int *kept_fd;
    size_t nkept;
};

/* The bulk body: 64 MiB, 1 MiB in a quick run. */
static size_t bulk_bytes = 64u << 20;
/* Seconds from the first body byte written to the server's reply after the last. */
static double bulk_secs;

static void mt_server_session(struct server *sv, int fd)
{
    mailtls_session *s = NULL;
    if (mailtls_server_new(sv->mcfg, MAILTLS_PROTO_SMTP, "127.0.0.1:1", &s) || mailtls_session_set_fd(s, fd))
        die("mailtls_server_new");
    char buf[4096];
    static const char greet[] = "220 bench.test ESMTP\r\n", caps[] = "250-bench.test\r\n250 STARTTLS\r\n";
    write_all(fd, greet, sizeof greet - 1);
    read_reply_fd(fd, buf, sizeof buf, true); /* EHLO */
    write_all(fd, caps, sizeof caps - 1);
    read_reply_fd(fd, buf, sizeof buf, true); /* STARTTLS */
    if (mailtls_server_starttls(s, NULL, 0) != MAILTLS_RESULT_OK)
        die(mailtls_session_last_error(s));
    /* EHLO, then QUIT (or the bulk body) inside TLS */
    for (int step = 0; step < 2; step++) {
        if (step == 1 && sv->keep == KEEP_SERVER) {
            sv->kept_fd[sv->nkept] = fd;
            sv->kept[sv->nkept++] = s;
            return;
        }
        if (step == 1 && sv->keep == DROP_SERVER) {
            mailtls_session_free(s);
            close(fd);
            return;
        }
        size_t n = 0;
        if (step == 1 && sv->bulk) { /* the body, then QUIT, possibly in the same read */
            size_t total = 0;
            static uint8_t big[65536];
            while (total < bulk_bytes + 6) {
                uintptr_t got = 0;
                if (mailtls_session_read(s, big, sizeof big, &got) != MAILTLS_RESULT_OK)
                    die("bulk read");
                total += got;
            }
            buf[0] = '\r', buf[1] = '\n', n = 2;
        }
        while (n < 2 || buf[n - 2] != '\r' || buf[n - 1] != '\n') {
            uintptr_t got = 0;
            if (mailtls_session_read(s, (uint8_t *)buf + n, sizeof buf - n - 1, &got) != MAILTLS_RESULT_OK)
                die("server read");
            n += got;
            if (n >= 2 && buf[n - 2] == '\r' && buf[n - 1] == '\n')
                break;
        }
        const char *r = step == 0 ? "250-bench.test\r\n250 8BITMIME\r\n" : "221 bye\r\n";
        uintptr_t w;
        if (mailtls_session_write(s, (const uint8_t *)r, strlen(r), &w) != MAILTLS_RESULT_OK || mailtls_session_flush(s))
            die("server write");
    }
    mailtls_session_close(s);
    mailtls_session_free(s);
    close(fd);
}

static void ossl_server_session(struct server *sv, int fd)
{
    char buf[4096];
    static const char greet[] = "220 bench.test ESMTP\r\n", caps[] = "250-bench.test\r\n250 STARTTLS\r\n",
                      go[] = "220 go ahead\r\n";
    write_all(fd, greet, sizeof greet - 1);
    read_reply_fd(fd, buf, sizeof buf, true);
    write_all(fd, caps, sizeof caps - 1);
    read_reply_fd(fd, buf, sizeof buf, true);
    write_all(fd, go, sizeof go - 1);
    SSL *ssl = SSL_new(sv->octx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1)
        die("SSL_accept");
    for (int step = 0; step < 2; step++) {
        if (step == 1 && sv->keep == KEEP_SERVER) {
            sv->kept_fd[sv->nkept] = fd;
            sv->kept[sv->nkept++] = ssl;
            return;
        }
        if (step == 1 && sv->keep == DROP_SERVER) {
            SSL_free(ssl);
            close(fd);
            return;
        }
        size_t n = 0;
        if (step == 1 && sv->bulk) { /* the body, then QUIT, possibly in the same read */
            size_t total = 0;
            static uint8_t big[65536];
            while (total < bulk_bytes + 6) {
                int r = SSL_read(ssl, big, sizeof big);
                if (r <= 0)
                    die("bulk SSL_read");
                total += (size_t)r;
            }
            buf[0] = '\r', buf[1] = '\n', n = 2;
        }
        while (n < 2 || buf[n - 2] != '\r' || buf[n - 1] != '\n') {
            int r = SSL_read(ssl, buf + n, (int)(sizeof buf - n - 1));
            if (r <= 0)
                die("SSL_read");
            n += (size_t)r;
            if (n >= 2 && buf[n - 2] == '\r' && buf[n - 1] == '\n')
                break;
        }
        const char *r = step == 0 ? "250-bench.test\r\n250 8BITMIME\r\n" : "221 bye\r\n";
        if (SSL_write(ssl, r, (int)strlen(r)) <= 0)
            die("SSL_write");
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

static void *server_main(void *arg)
{
    struct server *sv = arg;
    for (;;) {
        int fd;
        if (read(sv->cmd[0], &fd, sizeof fd) != sizeof fd || fd < 0)
            return NULL;
        if (sv->kind == SRV_MAILTLS)
            mt_server_session(sv, fd);
        else
            ossl_server_session(sv, fd);
        char one = 1;
        if (write(sv->done[1], &one, 1) != 1)
            die("done pipe");
    }
}

static void server_start(struct server *sv, pthread_t *th)
{
    if (pipe(sv->cmd) || pipe(sv->done))
        die("pipe");
    if (pthread_create(th, NULL, server_main, sv))
        die("pthread_create");
}

static void server_stop(struct server *sv, pthread_t th)
{
    int end = -1;
    if (write(sv->cmd[1], &end, sizeof end) != sizeof end)
        die("cmd pipe");
    pthread_join(th, NULL);
    close(sv->cmd[0]);
    close(sv->cmd[1]);
    close(sv->done[0]);
    close(sv->done[1]);
}

/* A connected pair: the server thread gets one end, the caller the other. */
static int hand_over(struct server *sv)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp))
        die("socketpair");
    if (write(sv->cmd[1], &sp[1], sizeof sp[1]) != sizeof sp[1])
        die("cmd pipe");
    return sp[0];
}

static void wait_served(struct server *sv)
{
    char one;
    if (read(sv->done[0], &one, 1) != 1)
        die("done pipe");
}

/* ---- clients ---- */

struct client {
    const mailtls_config *mcfg;
    SSL_CTX *octx;
    bool x25519;        /* mailtls: start at the compact rung (X25519 key share) */
    bool resume;        /* the same server name every time (mailtls), the last session (OpenSSL) */
    bool bulk;
    SSL_SESSION *last;
    unsigned serial;
    unsigned resumed;
    bool keep;          /* keep the session, established and idle (memory benchmark) */
    void *kept;
};

static int32_t cb_read(void *ud, uint8_t *buf, uintptr_t len, uintptr_t *out)
{
    ssize_t r = read(*(int *)ud, buf, len);
    if (r < 0)
        return errno;
    *out = (uintptr_t)r;
    return 0;
}

static int32_t cb_write(void *ud, const uint8_t *buf, uintptr_t len, uintptr_t *out)
{
    ssize_t r = write(*(int *)ud, buf, len);
    if (r < 0)
        return errno;
    *out = (uintptr_t)r;
    return 0;
}

static void mt_client_session(struct client *c, int fd)
{
    mailtls_session *s = NULL;
    char name[64];
    /* A new name each time keeps the client's session cache from resuming. */
    snprintf(name, sizeof name, c->resume ? "bench.test" : "h%u.bench.test", c->serial++);
    if (mailtls_client_new(c->mcfg, MAILTLS_PROTO_SMTP, name, 25, &s))
        die("mailtls_client_new");
    /* The callback path (what an event loop uses), here over the blocking socket. */
    static int fdbox;
    fdbox = fd;
    if (mailtls_session_set_io(s, cb_read, cb_write, &fdbox))
        die("set_io");
    if (c->x25519 && mailtls_session_set_start_rung(s, MAILTLS_RUNG_COMPACT, true))
        die("set_start_rung");
    if (mailtls_client_negotiate(s) != MAILTLS_RESULT_OK)
        die(mailtls_session_last_error(s));
    const mailtls_report *rep = mailtls_session_report(s);
    if (mailtls_report_outcome(rep) != MAILTLS_OUTCOME_TLS)
        die("not tls");
    c->resumed += mailtls_report_resumed(rep);
    if (c->keep) {
        c->kept = s;
        return;
    }
    uintptr_t w;
    double t0 = now_s();
    if (c->bulk) {
        static uint8_t big[16384];
        for (size_t sent = 0; sent < bulk_bytes; sent += sizeof big)
            for (size_t off = 0; off < sizeof big; off += w)
                if (mailtls_session_write(s, big + off, sizeof big - off, &w) != MAILTLS_RESULT_OK)
                    die("bulk write");
    }
    if (mailtls_session_write(s, (const uint8_t *)"QUIT\r\n", 6, &w) || mailtls_session_flush(s))
        die("QUIT");
    char buf[256];
    size_t n = 0;
    while (n < 2 || buf[n - 1] != '\n') {
        uintptr_t got = 0;
        if (mailtls_session_read(s, (uint8_t *)buf + n, sizeof buf - n, &got) != MAILTLS_RESULT_OK || !got)
            die("221");
        n += got;
    }
    bulk_secs = now_s() - t0;
    mailtls_session_close(s);
    mailtls_session_free(s);
    close(fd);
}

static void ossl_client_session(struct client *c, int fd)
{
    char buf[4096];
    read_reply_fd(fd, buf, sizeof buf, false);
    write_all(fd, "EHLO client.test\r\n", 18);
    read_reply_fd(fd, buf, sizeof buf, false);
    write_all(fd, "STARTTLS\r\n", 10);
    read_reply_fd(fd, buf, sizeof buf, false);
    SSL *ssl = SSL_new(c->octx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "bench.test");
    if (c->resume && c->last)
        SSL_set_session(ssl, c->last);
    if (SSL_connect(ssl) != 1)
        die("SSL_connect");
    if (SSL_write(ssl, "EHLO client.test\r\n", 18) <= 0)
        die("SSL_write");
    size_t n = 0;
    while (n < 2 || buf[n - 1] != '\n' || !strstr(buf, "250 ")) {
        int r = SSL_read(ssl, buf + n, (int)(sizeof buf - n - 1));
        if (r <= 0)
            die("SSL_read");
        n += (size_t)r;
        buf[n] = 0;
    }
    c->resumed += SSL_session_reused(ssl);
    if (c->keep) {
        c->kept = ssl;
        return;
    }
    double t0 = now_s();
    if (c->bulk) {
        static uint8_t big[16384];
        for (size_t sent = 0; sent < bulk_bytes; sent += sizeof big)
            if (SSL_write(ssl, big, sizeof big) != (int)sizeof big)
                die("bulk SSL_write");
    }
    if (SSL_write(ssl, "QUIT\r\n", 6) <= 0)
        die("QUIT");
    n = 0;
    while (n < 2 || buf[n - 1] != '\n') {
        int r = SSL_read(ssl, buf + n, (int)(sizeof buf - n));
        if (r <= 0)
            die("221");
        n += (size_t)r;
    }
    bulk_secs = now_s() - t0;
    if (c->resume) {
        if (c->last)
            SSL_SESSION_free(c->last);
        c->last = SSL_get1_session(ssl);
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

static void client_session(struct client *c, int fd)
{
    if (c->octx)
        ossl_client_session(c, fd);
    else
        mt_client_session(c, fd);
}

/* ---- the figures ---- */

static SSL_CTX *ossl_server_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die("OpenSSL server context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    return ctx;
}

static SSL_CTX *ossl_client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("OpenSSL client context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* like mailtls under encrypt */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    return ctx;
}

static const mailtls_config *mt_config(uint32_t role, const char *cert, const char *key)
{
    mailtls_config_builder *b = NULL;
    const mailtls_config *cfg = NULL;
    if (mailtls_config_builder_new(role, &b))
        die("builder");
    if (role == MAILTLS_ROLE_SERVER && mailtls_config_builder_set_certificate_files(b, cert, key))
        die("server certificate");
    if (role == MAILTLS_ROLE_CLIENT && mailtls_config_builder_set_policy(b, MAILTLS_POLICY_ENCRYPT))
        die("policy");
    if (mailtls_config_builder_build(b, &cfg))
        die("build");
    mailtls_config_builder_free(b);
    return cfg;
}

struct impl {
    const char *name;
    bool openssl;
    bool x25519;
};

/* Sessions per second for `secs` seconds; `resume` as in struct client. */
static double sessions_per_s(const struct impl *im, const char *cert, const char *key, bool resume, double secs,
                             unsigned *resumed, unsigned *total)
{
    struct server sv = {.kind = im->openssl ? SRV_OPENSSL : SRV_MAILTLS};
    struct client c = {.x25519 = im->x25519, .resume = resume};
    if (im->openssl) {
        sv.octx = ossl_server_ctx(cert, key);
        c.octx = ossl_client_ctx();
    } else {
        sv.mcfg = mt_config(MAILTLS_ROLE_SERVER, cert, key);
        c.mcfg = mt_config(MAILTLS_ROLE_CLIENT, NULL, NULL);
    }
    pthread_t th;
    server_start(&sv, &th);
    /* one warm-up session (and, resuming, the first full handshake) */
    client_session(&c, hand_over(&sv));
    wait_served(&sv);
    c.resumed = 0;
    unsigned n = 0;
    double t0 = now_s(), t;
    do {
        client_session(&c, hand_over(&sv));
        wait_served(&sv);
        n++;
        t = now_s();
    } while (t - t0 < secs);
    server_stop(&sv, th);
    *resumed = c.resumed;
    *total = n;
    if (c.last)
        SSL_SESSION_free(c.last);
    if (im->openssl) {
        SSL_CTX_free(sv.octx);
        SSL_CTX_free(c.octx);
    } else {
        mailtls_config_free(sv.mcfg);
        mailtls_config_free(c.mcfg);
    }
    return n / (t - t0);
}

static double bulk_mb_s(const struct impl *im, const char *cert, const char *key)
{
    struct server sv = {.kind = im->openssl ? SRV_OPENSSL : SRV_MAILTLS, .bulk = true};
    struct client c = {.x25519 = im->x25519, .bulk = true};
    if (im->openssl) {
        sv.octx = ossl_server_ctx(cert, key);
        c.octx = ossl_client_ctx();
    } else {
        sv.mcfg = mt_config(MAILTLS_ROLE_SERVER, cert, key);
        c.mcfg = mt_config(MAILTLS_ROLE_CLIENT, NULL, NULL);
    }
    pthread_t th;
    server_start(&sv, &th);
    client_session(&c, hand_over(&sv));
    wait_served(&sv);
    double t = bulk_secs;
    server_stop(&sv, th);
    if (im->openssl) {
        SSL_CTX_free(sv.octx);
        SSL_CTX_free(c.octx);
    } else {
        mailtls_config_free(sv.mcfg);
        mailtls_config_free(c.mcfg);
    }
    return bulk_bytes / 1e6 / t;
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Heap bytes per idle established session: `n` sessions kept on one side while the
 * other side's ends are freed. */
static double bytes_per_session(const struct impl *im, const char *cert, const char *key, bool server_side, size_t n)
{
    struct server sv = {.kind = im->openssl ? SRV_OPENSSL : SRV_MAILTLS, .keep = server_side ? KEEP_SERVER : DROP_SERVER};
    struct client c = {.x25519 = im->x25519, .keep = !server_side};
    if (im->openssl) {
        sv.octx = ossl_server_ctx(cert, key);
        c.octx = ossl_client_ctx();
    } else {
        sv.mcfg = mt_config(MAILTLS_ROLE_SERVER, cert, key);
        c.mcfg = mt_config(MAILTLS_ROLE_CLIENT, NULL, NULL);
    }
    void **kept = calloc(n, sizeof *kept);
    int *fds = calloc(n, sizeof *fds);
    sv.kept = server_side ? calloc(n, sizeof *sv.kept) : NULL;
    sv.kept_fd = server_side ? calloc(n, sizeof *sv.kept_fd) : NULL;
    if (!kept || !fds || (server_side && (!sv.kept || !sv.kept_fd)))
        die("out of memory");
    pthread_t th;
    server_start(&sv, &th);
    for (int warm = 0; warm < 3; warm++) { /* caches and lazily built state first */
        struct client w = c;
        w.keep = false;
        struct server *s = &sv;
        enum keep k = s->keep;
        s->keep = KEEP_NONE;
        client_session(&w, hand_over(s));
        wait_served(s);
        s->keep = k;
    }
    size_t before = heap_in_use();
    for (size_t i = 0; i < n; i++) {
        int fd = hand_over(&sv);
        if (server_side) {
            /* the client end goes once the server's session is established and idle */
            struct client w = c;
            w.keep = true;
            client_session(&w, fd);
            wait_served(&sv);
            if (im->openssl)
                SSL_free(w.kept);
            else
                mailtls_session_free(w.kept);
            close(fd);
        } else {
            client_session(&c, fd);
            kept[i] = c.kept;
            fds[i] = fd;
            wait_served(&sv); /* the server's end was dropped after its EHLO reply */
        }
    }
    size_t after = heap_in_use();
    server_stop(&sv, th);
    for (size_t i = 0; i < n; i++) {
        if (server_side) {
            if (im->openssl)
                SSL_free(sv.kept[i]);
            else
                mailtls_session_free(sv.kept[i]);
            close(sv.kept_fd[i]); /* neither library closes a descriptor it was given */
        } else {
            if (im->openssl)
                SSL_free(kept[i]);
            else
                mailtls_session_free(kept[i]);
            close(fds[i]);
        }
    }
    free(kept);
    free(fds);
    free(sv.kept);
    free(sv.kept_fd);
    if (im->openssl) {
        SSL_CTX_free(sv.octx);
        SSL_CTX_free(c.octx);
    } else {
        mailtls_config_free(sv.mcfg);
        mailtls_config_free(c.mcfg);
    }
    return ((double)after - (double)before) / (double)n;
}

/* ---- recovery cost: connections and round trips against the zoo ---- */

/* The client's view of one contact: each connection opened, and each time it wrote and
 * then read (it waited for the server: one round trip). A TCP connect is one more. */
struct counted {
    int fd;
    int connects;
    int flights;
    bool wrote;
};

static int32_t rt_read(void *ud, uint8_t *buf, uintptr_t len, uintptr_t *out)
{
    struct counted *c = ud;
    if (c->wrote)
        c->flights++;
    c->wrote = false;
    ssize_t r = read(c->fd, buf, len);
    if (r < 0)
        return errno;
    *out = (uintptr_t)r;
    return 0;
}

static int32_t rt_write(void *ud, const uint8_t *buf, uintptr_t len, uintptr_t *out)
{
    struct counted *c = ud;
    ssize_t r = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (r < 0)
        return errno;
    c->wrote = c->wrote || r > 0;
    *out = (uintptr_t)r;
    return 0;
}

static int dial_port(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a))
        die("connect to the zoo");
    return fd;
}

static int32_t rt_connect(void *ud, const char *host, uint16_t port, int32_t *out_fd)
{
    (void)host;
    (void)out_fd;
    struct counted *c = ud;
    c->fd = dial_port(port);
    c->connects++;
    c->wrote = false;
    return 0;
}

static void rt_close(void *ud, int32_t fd)
{
    (void)fd;
    close(((struct counted *)ud)->fd);
}

struct zoo {
    pid_t pid;
    uint16_t port;
};

/* Starts `mailtls-zoo MODE` ($MAILTLS_ZOO) and reads the port it printed. */
static struct zoo zoo_start(const char *mode)
{
    const char *bin = getenv("MAILTLS_ZOO");
    int p[2];
    if (!bin || pipe(p))
        die("MAILTLS_ZOO (the path of mailtls-zoo) or pipe");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl(bin, bin, mode, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char line[256];
    size_t n = 0;
    while (n < sizeof line - 1) { /* {"listening":"127.0.0.1:PORT"}\n, byte by byte: nothing more is read */
        ssize_t r = read(p[0], line + n, 1);
        if (r <= 0)
            die("the zoo printed no port");
        if (line[n++] == '\n')
            break;
    }
    line[n] = 0;
    const char *colon = strrchr(line, ':');
    struct zoo z = {.pid = pid, .port = colon ? (uint16_t)atoi(colon + 1) : 0};
    if (!z.port)
        die("the zoo's port");
    /* its log lines go to a pipe nobody reads; a few contacts do not fill it */
    return z;
}

static void zoo_stop(struct zoo z)
{
    kill(z.pid, SIGKILL);
    waitpid(z.pid, NULL, 0);
}

/* One SMTP contact through the C API, EHLO and QUIT inside TLS: connections, round trips. */
static void contact_cost(uint16_t port, const mailtls_memory *m, int *connections, int *round_trips)
{
    mailtls_config_builder *b = NULL;
    const mailtls_config *cfg = NULL;
    if (mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, &b) || mailtls_config_builder_set_policy(b, MAILTLS_POLICY_ENCRYPT) ||
        mailtls_config_builder_set_memory(b, m) || mailtls_config_builder_build(b, &cfg))
        die("recovery config");
    mailtls_config_builder_free(b);
    mailtls_session *s = NULL;
    if (mailtls_client_new(cfg, MAILTLS_PROTO_SMTP, "127.0.0.1", port, &s))
        die("mailtls_client_new");
    struct counted c = {.fd = dial_port(port), .connects = 1};
    if (mailtls_session_set_io(s, rt_read, rt_write, &c) || mailtls_session_set_connector(s, rt_connect, rt_close, &c))
        die("set_io");
    if (mailtls_client_negotiate(s) != MAILTLS_RESULT_OK)
        die(mailtls_session_last_error(s));
    uintptr_t w;
    if (mailtls_session_write(s, (const uint8_t *)"QUIT\r\n", 6, &w) || mailtls_session_flush(s))
        die("QUIT");
    char buf[256];
    size_t n = 0;
    while (n < 2 || buf[n - 1] != '\n') {
        uintptr_t got = 0;
        if (mailtls_session_read(s, (uint8_t *)buf + n, sizeof buf - n, &got) != MAILTLS_RESULT_OK || !got)
            die("221");
        n += got;
    }
    *connections = c.connects;
    *round_trips = c.connects + c.flights; /* each TCP handshake, then each wait for the server */
    mailtls_session_close(s);
    mailtls_session_free(s);
    mailtls_config_free(cfg);
    close(c.fd);
}

static void emit_count(const char *what, const char *impl, int v, const char *unit)
{
    double d = v;
    emit(what, impl, &d, 1, unit);
}

static void recovery_cost(void)
{
    const mailtls_memory *m = NULL;
    int conns, rts;
    struct zoo z = zoo_start("normal");
    if (mailtls_memory_new(&m))
        die("memory");
    contact_cost(z.port, m, &conns, &rts);
    emit_count("recovery-tolerant-connections", "mailtls-pq", conns, "connections");
    emit_count("recovery-tolerant-round-trips", "mailtls-pq", rts, "round trips");
    mailtls_memory_free(m);
    zoo_stop(z);
    /* an intolerant server: it resets any ClientHello over 1000 bytes (the hybrid
     * key share makes ours about 1,300) */
    z = zoo_start("reset-above:1000");
    if (mailtls_memory_new(&m))
        die("memory");
    contact_cost(z.port, m, &conns, &rts);
    emit_count("recovery-intolerant-first-connections", "mailtls-pq", conns, "connections");
    emit_count("recovery-intolerant-first-round-trips", "mailtls-pq", rts, "round trips");
    contact_cost(z.port, m, &conns, &rts);
    emit_count("recovery-intolerant-next-connections", "mailtls-pq", conns, "connections");
    emit_count("recovery-intolerant-next-round-trips", "mailtls-pq", rts, "round trips");
    mailtls_memory_free(m);
    zoo_stop(z);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench-c CERT KEY LABEL [--quick]\n");
        return 2;
    }
    const char *cert = argv[1], *key = argv[2];
    label = argv[3];
    quick = argc > 4 && strcmp(argv[4], "--quick") == 0;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    const struct impl impls[] = {
        {"mailtls-pq", false, false},
        {"mailtls-x25519", false, true},
        {"openssl", true, false},
    };
    int runs = quick ? 1 : 5;
    double secs = quick ? 0.2 : 1.0;
    const char *only = getenv("BENCH_ONLY"); /* profiling one implementation: perf record */
    /* BENCH_PART=sessions: the handshake figures only (run.sh pins them to one CPU);
     * BENCH_PART=rest: everything else. Unset: all. */
    const char *part = getenv("BENCH_PART");
    bool sessions = !part || !strcmp(part, "sessions"), rest = !part || !strcmp(part, "rest");
    bool bulk = rest || (part && !strcmp(part, "bulk")); /* BENCH_PART=bulk: that alone (profiling) */
    if (quick)
        bulk_bytes = 1u << 20;
    for (size_t k = 0; k < 3 && sessions; k++) {
        double v[16];
        unsigned resumed = 0, total = 0;
        if (only && strcmp(only, impls[k].name))
            continue;
        for (int r = 0; r < runs; r++)
            v[r] = sessions_per_s(&impls[k], cert, key, false, secs, &resumed, &total);
        if (resumed)
            fprintf(stderr, "bench-c: %s: %u of %u full-handshake sessions resumed\n", impls[k].name, resumed, total);
        emit("sessions", impls[k].name, v, runs, "sessions/s");
        for (int r = 0; r < runs; r++)
            v[r] = sessions_per_s(&impls[k], cert, key, true, secs, &resumed, &total);
        fprintf(stderr, "bench-c: %s: %u of %u sessions resumed\n", impls[k].name, resumed, total);
        emit(resumed * 2 > total ? "resumed" : "resumed-not-resuming", impls[k].name, v, runs, "sessions/s");
    }
    if (strcmp(label, "ecdsa") == 0 && bulk)
        for (size_t k = 0; k < 3; k += 2) { /* bulk: the key exchange does not matter */
            double v[16];
            if (only && strcmp(only, impls[k].name))
                continue;
            for (int r = 0; r < (quick ? 1 : 5); r++)
                v[r] = bulk_mb_s(&impls[k], cert, key);
            emit("bulk", impls[k].name, v, quick ? 1 : 5, "MB/s");
        }
    if (strcmp(label, "ecdsa") == 0 && !only && rest) {
        size_t n = quick ? 50 : getenv("BENCH_SESSIONS") ? strtoul(getenv("BENCH_SESSIONS"), NULL, 10) : 10000;
        for (size_t k = 0; k < 3; k += 2)
            for (int side = 0; side < 2; side++) {
                double v = bytes_per_session(&impls[k], cert, key, side == 1, n);
                emit(side ? "memory-server" : "memory-client", impls[k].name, &v, 1, "bytes/session");
            }
        recovery_cost();
    }
    return 0;
}
