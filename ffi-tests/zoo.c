/* mailtls C test suite: the recovery zoo (mailtls-zoo, zoo.rs: one server process
 * per kind of intolerance, on 127.0.0.1 with a port the kernel picks), connections to
 * it, and intolerance memories (in process or a database file) removed after the
 * test. Shared by the tests that meet the zoo. */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glob.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef ZOO_BIN
#define ZOO_BIN "../target/debug/mailtls-zoo"
#endif

/* ---- the zoo process ---- */

static void zoo_stop(void *arg) {
    struct zoo *z = arg;
    if (z->pid > 0) {
        kill(z->pid, SIGKILL);
        waitpid(z->pid, NULL, 0);
    }
    if (z->out >= 0)
        close(z->out);
    free(z);
}

/* Reads what the zoo printed, waiting up to ms for more; counts connection lines. */
static void zoo_pump(struct zoo *z, int ms) {
    for (;;) {
        struct pollfd p = {.fd = z->out, .events = POLLIN};
        if (poll(&p, 1, ms) != 1)
            return;
        if (z->nbuf >= sizeof z->buf - 1)
            z->nbuf = 0;
        ssize_t n = read(z->out, z->buf + z->nbuf, sizeof z->buf - 1 - z->nbuf);
        if (n <= 0)
            return;
        z->nbuf += (size_t)n;
        z->buf[z->nbuf] = 0;
        char *nl;
        while ((nl = strchr(z->buf, '\n')) != NULL) {
            *nl = 0;
            if (strstr(z->buf, "\"conn\":"))
                z->lines++;
            else if (strstr(z->buf, "\"listening\":")) {
                const char *c = strrchr(z->buf, ':');
                z->port = (uint16_t)atoi(c + 1);
            }
            size_t rest = z->nbuf - (size_t)(nl + 1 - z->buf);
            memmove(z->buf, nl + 1, rest);
            z->nbuf = rest;
            z->buf[z->nbuf] = 0;
        }
        ms = 0;
    }
}

struct zoo *zoo_start(const char *mode) {
    const char *bin = getenv("MAILTLS_ZOO") ? getenv("MAILTLS_ZOO") : ZOO_BIN;
    int pipefd[2];
    if (pipe(pipefd) < 0) {
        test_fail(__FILE__, __LINE__, "pipe: %s", strerror(errno));
        return NULL;
    }
    pid_t pid = fork();
    if (pid < 0) {
        test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        return NULL;
    }
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        alarm(CHILD_ALARM_S * 2);
        execl(bin, bin, mode, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    struct zoo *z = calloc(1, sizeof *z);
    if (!z) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(pipefd[0]);
        return NULL;
    }
    z->pid = pid;
    z->out = pipefd[0];
    defer_call(zoo_stop, z);
    for (int i = 0; i < 100 && z->port == 0; i++)
        zoo_pump(z, 100);
    if (z->port == 0) {
        test_fail(__FILE__, __LINE__, "%s %s did not print its port (is it built? cargo build)", bin, mode);
        return NULL;
    }
    return z;
}

/* Whether the zoo logs exactly `n` connections: waits up to 10 s for the n-th line
 * (a connection is logged when it ends, which a loaded machine may delay), then a
 * little longer for any line too many. */
int zoo_connections_are(struct zoo *z, int n) {
    for (int i = 0; i < 100 && z->lines < n; i++)
        zoo_pump(z, 100);
    zoo_pump(z, 200);
    if (z->lines != n)
        test_fail(__FILE__, __LINE__, "the zoo logged %d connections, expected %d", z->lines, n);
    return z->lines == n;
}

/* ---- connections ---- */

int dial(uint16_t port, int timeout_s) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = timeout_s, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* ---- memories ---- */

static void free_memory(void *m) { mailtls_memory_free(m); }

const mailtls_memory *memory_new(void) {
    const mailtls_memory *m = NULL;
    if (!CHECK_RC(mailtls_memory_new(&m), MAILTLS_RESULT_OK))
        return NULL;
    defer_call(free_memory, (void *)m);
    return m;
}

/* Removes a memory database and what the library keeps beside it: its two lock
 * files, the text it converted (.v1) and whatever it set aside (.corrupt-TIME). */
static void unlink_memory(void *arg) {
    char *path = arg, p[128];
    const char *suffixes[] = {"", "-lock", ".lock", ".v1"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s.corrupt-*", path);
    glob_t g;
    if (glob(p, 0, NULL, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++)
            unlink(g.gl_pathv[i]);
    globfree(&g);
    free(path);
}

void defer_unlink_memory(const char *path) { defer_call(unlink_memory, strdup(path)); }

/* A memory file of this test's own, removed afterwards; path is filled in. */
const mailtls_memory *memory_file(char path[64]) {
    snprintf(path, 64, "/tmp/mailtls-memory-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(path);
    if (fd < 0) {
        test_fail(__FILE__, __LINE__, "mkstemp: %s", strerror(errno));
        return NULL;
    }
    close(fd);
    unlink(path); /* the memory creates its database at open */
    defer_unlink_memory(path);
    const mailtls_memory *m = NULL;
    if (!CHECK_RC(mailtls_memory_open_file(path, &m), MAILTLS_RESULT_OK))
        return NULL;
    defer_call(free_memory, (void *)m);
    return m;
}
