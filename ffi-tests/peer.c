/* mailtls C test suite: real peers in forked children, scripted peers, raw I/O. */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void set_timeouts(int fd, int seconds) {
    struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Both ends of a loopback TCP connection: listen on 127.0.0.1 port 0, read the port
 * back, connect, accept (the connection is already queued, so nothing blocks). */
static int tcp_pair(int fds[2]) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t al = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0 || a.sin_port == 0) {
        close(l);
        return -1;
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
        close(l);
        if (c >= 0)
            close(c);
        return -1;
    }
    struct pollfd p = {.fd = l, .events = POLLIN};
    int s = poll(&p, 1, 5000) == 1 ? accept(l, NULL, NULL) : -1;
    close(l);
    if (s < 0) {
        close(c);
        return -1;
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fds[0] = c;
    fds[1] = s;
    return 0;
}

static void peer_cleanup(void *arg) {
    peer_t *p = arg;
    peer_finish(p);
    munmap(p->sh, sizeof *p->sh);
    free(p);
}

/* The fork behind peer_start and peer_exec. With shm_fd, the shared record is a memfd
 * (its descriptor stored there before the fork, so the child can hand it on across
 * exec); otherwise an anonymous shared mapping. */
static peer_t *start(enum transport t, peer_fn fn, void *arg, int *shm_fd) {
    int fds[2];
    if (t == VIA_TCP ? tcp_pair(fds) < 0 : socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) {
        test_fail(__FILE__, __LINE__, "cannot make a %s connection: %s", t == VIA_TCP ? "TCP" : "socketpair",
                  strerror(errno));
        return NULL;
    }
    int mfd = -1;
    if (shm_fd) {
        mfd = memfd_create("mailtls-peer", 0);
        if (mfd < 0 || ftruncate(mfd, sizeof(struct shared)) < 0) {
            test_fail(__FILE__, __LINE__, "memfd: %s", strerror(errno));
            if (mfd >= 0)
                close(mfd);
            close(fds[0]);
            close(fds[1]);
            return NULL;
        }
        *shm_fd = mfd;
    }
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, shm_fd ? MAP_SHARED : MAP_SHARED | MAP_ANONYMOUS,
                             mfd, 0);
    if (sh == MAP_FAILED) {
        test_fail(__FILE__, __LINE__, "mmap: %s", strerror(errno));
        if (mfd >= 0)
            close(mfd);
        close(fds[0]);
        close(fds[1]);
        return NULL;
    }
    memset(sh, 0, sizeof *sh);
    sh->starttls_rc = UINT32_MAX;
    sh->second_starttls_rc = UINT32_MAX;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
        munmap(sh, sizeof *sh);
        if (mfd >= 0)
            close(mfd);
        close(fds[0]);
        close(fds[1]);
        return NULL;
    }
    if (pid == 0) {
        alarm(CHILD_ALARM_S);
        signal(SIGALRM, SIG_DFL);
        close(fds[0]);
        set_timeouts(fds[1], SOCKET_TIMEOUT_S);
        fn(fds[1], arg, sh);
        close(fds[1]);
        if (sh->err[0] == 0)
            sh->ok = 1;
        _exit(sh->ok ? 0 : 1);
    }
    close(fds[1]);
    if (mfd >= 0)
        close(mfd); /* the mapping stays */
    set_timeouts(fds[0], SOCKET_TIMEOUT_S);
    peer_t *p = calloc(1, sizeof *p);
    p->pid = pid;
    p->fd = fds[0];
    p->sh = sh;
    defer_call(peer_cleanup, p);
    return p;
}

peer_t *peer_start(enum transport t, peer_fn fn, void *arg) {
    return start(t, fn, arg, NULL);
}

/* ---- peers in a program of their own ---- */

struct exec_peer {
    const char *name;
    exec_peer_fn fn;
};
static struct exec_peer exec_peers[16];
static size_t nexec_peers;

void register_exec_peer(const char *name, exec_peer_fn fn) {
    if (nexec_peers < sizeof exec_peers / sizeof exec_peers[0])
        exec_peers[nexec_peers++] = (struct exec_peer){name, fn};
}

struct exec_request {
    const char *name;
    const char *const *args;
    int shm_fd;
};

/* In the forked child: become this program again, told which peer to run. */
static void exec_child(int fd, void *arg, struct shared *sh) {
    const struct exec_request *rq = arg;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        child_fail(sh, "readlink /proc/self/exe: %s", strerror(errno));
    self[n] = 0;
    char fdtxt[16], shmtxt[16];
    snprintf(fdtxt, sizeof fdtxt, "%d", fd);
    snprintf(shmtxt, sizeof shmtxt, "%d", rq->shm_fd);
    const char *argv[24] = {self, "--exec-peer", rq->name, fdtxt, shmtxt};
    size_t k = 5;
    for (size_t i = 0; rq->args && rq->args[i] && k < sizeof argv / sizeof argv[0] - 1; i++)
        argv[k++] = rq->args[i];
    argv[k] = NULL;
    execv(self, (char *const *)argv);
    child_fail(sh, "exec %s: %s", self, strerror(errno));
}

peer_t *peer_exec(enum transport t, const char *name, const char *const *args) {
    struct exec_request rq = {name, args, -1};
    return start(t, exec_child, &rq, &rq.shm_fd);
}

void exec_peer_main(int argc, char **argv) {
    if (argc < 5)
        _exit(2);
    int fd = atoi(argv[3]), shm = atoi(argv[4]);
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
    if (sh == MAP_FAILED)
        _exit(2);
    close(shm);
    for (size_t i = 0; i < nexec_peers; i++) {
        if (strcmp(exec_peers[i].name, argv[2]) == 0) {
            exec_peers[i].fn(fd, argv + 5, sh);
            close(fd);
            if (sh->err[0] == 0)
                sh->ok = 1;
            _exit(sh->ok ? 0 : 1);
        }
    }
    child_fail(sh, "no exec peer named %s", argv[2]);
}

void peer_close(peer_t *p) {
    if (p && p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
}

int peer_finish(peer_t *p) {
    if (p == NULL)
        return 0;
    peer_close(p);
    if (p->finished)
        return p->child_ok;
    int status = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid)
            break;
        if (r < 0 && errno != EINTR) {
            status = -1;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > CHILD_ALARM_S + 5) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            snprintf(p->sh->err, sizeof p->sh->err, "child killed: it did not finish");
            p->sh->ok = 0;
            break;
        }
        usleep(2000);
    }
    p->finished = 1;
    p->child_ok = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && p->sh->ok;
    if (!p->child_ok && p->sh->err[0] == 0) {
        if (WIFSIGNALED(status))
            snprintf(p->sh->err, sizeof p->sh->err, "child killed by signal %d", WTERMSIG(status));
        else
            snprintf(p->sh->err, sizeof p->sh->err, "child exit status %d (a leak or memory error report?)",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    return p->child_ok;
}

int check_peer_ok(const char *file, int line, peer_t *p) {
    if (p == NULL) {
        test_fail(file, line, "no peer");
        return 0;
    }
    if (peer_finish(p))
        return 1;
    test_fail(file, line, "peer failed: %s", p->sh->err);
    return 0;
}

void child_failf(struct shared *sh, const char *fmt, ...) {
    if (sh->err[0])
        return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->err, sizeof sh->err, fmt, ap);
    va_end(ap);
    sh->ok = 0;
}

void child_fail(struct shared *sh, const char *fmt, ...) {
    if (!sh->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sh->err, sizeof sh->err, fmt, ap);
        va_end(ap);
    }
    sh->ok = 0;
    _exit(1);
}

void shared_record(struct shared *sh, const void *p, size_t n) {
    size_t room = sizeof sh->recv - sh->nrecv;
    if (n > room)
        n = room;
    memcpy(sh->recv + sh->nrecv, p, n);
    sh->nrecv += n;
}

void shared_log(struct shared *sh, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = sizeof sh->log - sh->nlog;
    int n = vsnprintf(sh->log + sh->nlog, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        sh->nlog += (size_t)n < room ? (size_t)n : room - 1;
}

/* ---- scripted peers ---- */

static void script_child(int fd, void *arg, struct shared *sh) {
    const struct step *st = arg;
    for (int i = 0; st[i].op != S_END; i++) {
        const struct step *s = &st[i];
        switch (s->op) {
        case S_SEND: {
            size_t n = s->n ? s->n : strlen(s->s), off = 0;
            while (off < n) {
                ssize_t w = send(fd, s->s + off, n - off, MSG_NOSIGNAL);
                if (w <= 0)
                    child_fail(sh, "step %d: send: %s", i, strerror(errno));
                off += (size_t)w;
            }
            break;
        }
        case S_EXPECT: {
            char line[1024];
            size_t n = 0;
            for (;;) {
                char c;
                ssize_t r = recv(fd, &c, 1, 0);
                if (r <= 0)
                    child_fail(sh, "step %d: expected a line starting with \"%s\", got %s after \"%s\"", i, s->s,
                               r == 0 ? "EOF" : strerror(errno), show_bytes(line, n));
                shared_record(sh, &c, 1);
                if (n < sizeof line)
                    line[n++] = c;
                if (c == '\n')
                    break;
            }
            if (n < strlen(s->s) || memcmp(line, s->s, strlen(s->s)) != 0)
                child_fail(sh, "step %d: expected a line starting with \"%s\", got \"%s\"", i, s->s,
                           show_bytes(line, n));
            break;
        }
        case S_EXPECT_EOF:
        case S_DRAIN: {
            struct timespec t0, now;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            for (;;) {
                int wait_ms = -1;
                if (s->op == S_DRAIN) {
                    clock_gettime(CLOCK_MONOTONIC, &now);
                    long el = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
                    if (el >= s->ms)
                        break;
                    wait_ms = s->ms - (int)el;
                } else {
                    wait_ms = SOCKET_TIMEOUT_S * 1000;
                }
                struct pollfd p = {.fd = fd, .events = POLLIN};
                int pr = poll(&p, 1, wait_ms);
                if (pr == 0) {
                    if (s->op == S_EXPECT_EOF)
                        child_fail(sh, "step %d: no EOF within %d s", i, SOCKET_TIMEOUT_S);
                    break;
                }
                unsigned char buf[4096];
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r == 0)
                    break;
                if (r < 0) {
                    if (errno == EINTR)
                        continue;
                    if (errno == ECONNRESET)
                        break;
                    child_fail(sh, "step %d: recv: %s", i, strerror(errno));
                }
                shared_record(sh, buf, (size_t)r);
            }
            break;
        }
        case S_SLEEP:
            usleep((useconds_t)s->ms * 1000);
            break;
        case S_CLOSE:
            return;
        case S_READ_SOME: {
            unsigned char buf[4096];
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0)
                child_fail(sh, "step %d: expected some bytes, got %s", i, r == 0 ? "EOF" : strerror(errno));
            shared_record(sh, buf, (size_t)r);
            break;
        }
        case S_END:
            break;
        }
    }
}

peer_t *script_start(enum transport t, const struct step *steps) {
    return peer_start(t, script_child, (void *)steps);
}

/* ---- raw plaintext on the parent's end ---- */

int raw_send(int fd, const char *s) {
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t w = send(fd, s + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

int raw_line(int fd, char *out, size_t cap) {
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = recv(fd, &c, 1, 0);
        if (r <= 0) {
            out[n < cap ? n : cap - 1] = 0;
            return -1;
        }
        if (n + 1 < cap)
            out[n++] = c;
        if (c == '\n')
            break;
    }
    out[n] = 0;
    return (int)n;
}

int raw_reply(int fd, char *out, size_t cap) {
    size_t used = 0;
    out[0] = 0;
    for (;;) {
        char line[1024];
        if (raw_line(fd, line, sizeof line) < 0)
            return -1;
        size_t l = strlen(line);
        if (used + l < cap) {
            memcpy(out + used, line, l + 1);
            used += l;
        }
        if (l < 4 || line[3] != '-')
            return atoi(line);
    }
}

size_t raw_read_to_eof(int fd, unsigned char *out, size_t cap) {
    size_t n = 0;
    for (;;) {
        unsigned char buf[4096];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0)
            return n;
        size_t k = (size_t)r < cap - n ? (size_t)r : cap - n;
        memcpy(out + n, buf, k);
        n += k;
    }
}
