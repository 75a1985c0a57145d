/* mailtls C test suite: the test harness (registry, checks, per-test cleanup). */
#ifndef MAILTLS_TEST_HARNESS_H
#define MAILTLS_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mailtls.h"

typedef void (*test_fn)(void);

void register_test(const char *name, test_fn fn);

/* Defines a test and registers it (in source order within a file). */
#define TEST(name)                                                             \
    static void name(void);                                                    \
    __attribute__((constructor)) static void register_##name(void) {          \
        register_test(#name, name);                                            \
    }                                                                          \
    static void name(void)

/* Records a failure of the current test (file:line and a message). */
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int test_failed(void);

#define CHECK(cond)                                                            \
    ((cond) ? 1 : (test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond), 0))
#define REQUIRE(cond)                                                          \
    do {                                                                       \
        if (!(cond)) {                                                         \
            test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);               \
            return;                                                            \
        }                                                                      \
    } while (0)

/* Result codes, compared and printed by name. */
#define CHECK_RC(actual, expected)                                             \
    check_rc(__FILE__, __LINE__, #actual, (uint32_t)(actual), (uint32_t)(expected))
#define REQUIRE_RC(actual, expected)                                           \
    do {                                                                       \
        if (!CHECK_RC(actual, expected))                                       \
            return;                                                            \
    } while (0)
int check_rc(const char *file, int line, const char *expr, uint32_t actual, uint32_t expected);

#define CHECK_OUTCOME(rep, expected)                                           \
    check_outcome(__FILE__, __LINE__, (rep), (uint32_t)(expected))
int check_outcome(const char *file, int line, const mailtls_report *r, uint32_t expected);

#define CHECK_STREQ(actual, expected)                                          \
    check_streq(__FILE__, __LINE__, #actual, (actual), (expected))
int check_streq(const char *file, int line, const char *expr, const char *actual, const char *expected);

#define CHECK_CONTAINS(hay, haylen, needle)                                    \
    check_contains(__FILE__, __LINE__, #hay, (const void *)(hay), (haylen), (needle), 1)
#define CHECK_NOT_CONTAINS(hay, haylen, needle)                                \
    check_contains(__FILE__, __LINE__, #hay, (const void *)(hay), (haylen), (needle), 0)
int check_contains(const char *file, int line, const char *expr, const void *hay, size_t haylen,
                   const char *needle, int want);

/* Per-test cleanup: run in reverse order after the test, even when it returned early. */
void defer_call(void (*fn)(void *), void *arg);
void defer_session(mailtls_session *s);
void defer_config(const mailtls_config *c);
void defer_builder(mailtls_config_builder *b);
void defer_fd(int fd);
void defer_unlink(const char *path); /* copies the path */
void run_deferred(void);

/* Printable rendering of bytes for failure messages (static buffer). */
const char *show_bytes(const void *p, size_t n);

#endif
