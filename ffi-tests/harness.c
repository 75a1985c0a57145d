/* mailtls C test suite: the harness. Runs every registered test (or those whose
 * names contain one of the command-line arguments) in this process, one after the
 * other, cleans up after each, and ends with the line "N passed, N failed". */
#include "support.h" /* harness.h, and exec_peer_main */

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_TESTS 256
#define MAX_DEFERRED 128

struct test {
    const char *name;
    test_fn fn;
};

static struct test tests[MAX_TESTS];
static size_t ntests;
static int cur_failed;
static const char *cur_name;
static int passed, failed;

struct deferred {
    void (*fn)(void *);
    void *arg;
};
static struct deferred deferred[MAX_DEFERRED];
static size_t ndeferred;

void register_test(const char *name, test_fn fn) {
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

void test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stdout, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    cur_failed = 1;
}

int test_failed(void) { return cur_failed; }

int check_rc(const char *file, int line, const char *expr, uint32_t actual, uint32_t expected) {
    if (actual == expected)
        return 1;
    test_fail(file, line, "%s is %u (%s), expected %u (%s)", expr, actual, mailtls_result_name(actual),
              expected, mailtls_result_name(expected));
    return 0;
}

int check_outcome(const char *file, int line, const mailtls_report *r, uint32_t expected) {
    uint32_t o = mailtls_report_outcome(r);
    if (o == expected)
        return 1;
    test_fail(file, line, "outcome is %s, expected %s (reason %s, detail \"%s\")", mailtls_outcome_name(o),
              mailtls_outcome_name(expected), mailtls_result_name(mailtls_report_reason(r)),
              r ? mailtls_report_detail(r) : "(no report)");
    return 0;
}

int check_streq(const char *file, int line, const char *expr, const char *actual, const char *expected) {
    if (actual != NULL && expected != NULL && strcmp(actual, expected) == 0)
        return 1;
    if (actual == NULL && expected == NULL)
        return 1;
    test_fail(file, line, "%s is %s%s%s, expected %s%s%s", expr, actual ? "\"" : "", actual ? actual : "NULL",
              actual ? "\"" : "", expected ? "\"" : "", expected ? expected : "NULL", expected ? "\"" : "");
    return 0;
}

int check_contains(const char *file, int line, const char *expr, const void *hay, size_t haylen,
                   const char *needle, int want) {
    int has = hay != NULL && memmem(hay, haylen, needle, strlen(needle)) != NULL;
    if (has == want)
        return 1;
    test_fail(file, line, "%s %s \"%s\"; it holds %zu bytes: %s", expr, want ? "lacks" : "contains",
              show_bytes(needle, strlen(needle)), haylen, show_bytes(hay, haylen));
    return 0;
}

const char *show_bytes(const void *p, size_t n) {
    static char out[4][1200];
    static int which;
    char *o = out[which++ % 4];
    size_t j = 0;
    const unsigned char *b = p;
    for (size_t i = 0; b != NULL && i < n && j < sizeof out[0] - 8; i++) {
        unsigned char c = b[i];
        if (c == '\r') { o[j++] = '\\'; o[j++] = 'r'; }
        else if (c == '\n') { o[j++] = '\\'; o[j++] = 'n'; }
        else if (c >= 0x20 && c < 0x7f) o[j++] = (char)c;
        else j += (size_t)snprintf(o + j, 5, "\\x%02x", c);
    }
    if (b != NULL && j >= sizeof out[0] - 8) { o[j++] = '.'; o[j++] = '.'; o[j++] = '.'; }
    o[j] = 0;
    return o;
}

void defer_call(void (*fn)(void *), void *arg) {
    if (ndeferred == MAX_DEFERRED) {
        fprintf(stderr, "too many deferred cleanups\n");
        abort();
    }
    deferred[ndeferred].fn = fn;
    deferred[ndeferred].arg = arg;
    ndeferred++;
}

static void free_session(void *p) { mailtls_session_free(p); }
static void free_config(void *p) { mailtls_config_free(p); }
static void free_builder(void *p) { mailtls_config_builder_free(p); }
static void close_fd(void *p) { close((int)(intptr_t)p); }
static void unlink_path(void *p) { unlink(p); free(p); }

void defer_session(mailtls_session *s) { if (s) defer_call(free_session, s); }
void defer_config(const mailtls_config *c) { if (c) defer_call(free_config, (void *)c); }
void defer_builder(mailtls_config_builder *b) { if (b) defer_call(free_builder, b); }
void defer_fd(int fd) { if (fd >= 0) defer_call(close_fd, (void *)(intptr_t)fd); }
void defer_unlink(const char *path) { defer_call(unlink_path, strdup(path)); }

void run_deferred(void) {
    while (ndeferred > 0) {
        ndeferred--;
        deferred[ndeferred].fn(deferred[ndeferred].arg);
    }
}

static void on_watchdog(int sig) {
    (void)sig;
    char msg[512];
    int n = snprintf(msg, sizeof msg, "FAIL %s: watchdog: the test did not finish in time\n%d passed, %d failed\n",
                     cur_name ? cur_name : "?", passed, failed + 1);
    if (n > 0)
        (void)!write(STDOUT_FILENO, msg, (size_t)n);
    _exit(1);
}

static int selected(const char *name, int argc, char **argv) {
    int any = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            continue;
        any = 1;
        if (strstr(name, argv[i]))
            return 1;
    }
    return !any;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--exec-peer") == 0)
        exec_peer_main(argc, argv); /* a peer of peer_exec, in a process of its own */
    int watchdog = 60;
    const char *w = getenv("MAILTLS_TEST_WATCHDOG");
    if (w && atoi(w) > 0)
        watchdog = atoi(w);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_watchdog);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0) {
            for (size_t t = 0; t < ntests; t++)
                printf("%s\n", tests[t].name);
            return 0;
        }
        if (strcmp(argv[i], "--leak-on-purpose") == 0) {
            /* Proves that the leak checkers are active: the run must fail. */
            mailtls_config_builder *b = NULL;
            if (mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, &b) != MAILTLS_RESULT_OK)
                return 2;
            b = NULL;
            printf("leaked a config builder on purpose\n");
            return 0;
        }
    }
    for (size_t t = 0; t < ntests; t++) {
        if (!selected(tests[t].name, argc, argv))
            continue;
        cur_name = tests[t].name;
        cur_failed = 0;
        alarm((unsigned)watchdog);
        tests[t].fn();
        run_deferred();
        alarm(0);
        /* No child of this test may survive it. */
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        if (cur_failed) {
            printf("FAIL %s\n", tests[t].name);
            failed++;
        } else {
            printf("ok   %s\n", tests[t].name);
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
