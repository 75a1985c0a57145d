/* The memory database as a multi-process MTA uses it: eight processes writing at
 * once, a process killed in the middle of its writes, children forked after the
 * parent opened the memory, the file's mode, the conversion of a version-1 text file,
 * export and import. Records are written through mailtls_memory_import of one-line
 * files: each import of one record is one write transaction, as a session's is. */
#include "support.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void free_mem(void *m) { mailtls_memory_free(m); }

/* A path for a database of this test's own (nothing there yet), removed afterwards
 * with everything the library keeps beside it. */
static const char *db_path(char path[96]) {
    snprintf(path, 96, "/tmp/mailtls-db-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(path);
    if (fd < 0) {
        test_fail(__FILE__, __LINE__, "mkstemp: %s", strerror(errno));
        return NULL;
    }
    close(fd);
    unlink(path);
    defer_unlink_memory(path);
    return path;
}

static const mailtls_memory *open_db(const char *path) {
    const mailtls_memory *m = NULL;
    if (!CHECK_RC(mailtls_memory_open_file(path, &m), MAILTLS_RESULT_OK))
        return NULL;
    defer_call(free_mem, (void *)m);
    return m;
}

/* Writes one record of host `h`, port `port` through a one-line import. In a child:
 * returns 0 or -1, no test machinery. */
static int put_record(const mailtls_memory *m, const char *dir, const char *h, unsigned port) {
    char file[160], text[256];
    snprintf(file, sizeof file, "%s/%d-%s-%u", dir, (int)getpid(), h, port);
    snprintf(text, sizeof text, "mailtls-memory 1\nsmtp %s %u tolerant=compact@%lld pinned@%lld\n", h, port,
             (long long)time(NULL), (long long)time(NULL));
    FILE *f = fopen(file, "w");
    if (!f)
        return -1;
    fputs(text, f);
    fclose(f);
    uintptr_t n = 0;
    int rc = mailtls_memory_import(m, file, &n);
    unlink(file);
    return rc == MAILTLS_RESULT_OK && n == 1 ? 0 : -1;
}

static void count_line(void *ud, const char *line) {
    (void)line;
    (*(int *)ud)++;
}

static int count_records(const mailtls_memory *m) {
    int n = 0;
    uintptr_t count = 0;
    CHECK_RC(mailtls_memory_list(m, count_line, &n, &count), MAILTLS_RESULT_OK);
    CHECK((int)count == n);
    return n;
}

static int has_record(const mailtls_memory *m, const char *host, unsigned port) {
    char buf[256] = {0};
    uintptr_t w = 0;
    if (mailtls_memory_lookup(m, MAILTLS_PROTO_SMTP, host, (uint16_t)port, buf, sizeof buf, &w) != MAILTLS_RESULT_OK)
        return 0;
    return strstr(buf, "tolerant=compact@") != NULL;
}

static void remove_dir(void *arg) {
    rmdir(arg);
    free(arg);
}

static const char *scratch_dir(char dir[64]) {
    snprintf(dir, 64, "/tmp/mailtls-scratch-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(dir)) {
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        return NULL;
    }
    defer_call(remove_dir, strdup(dir));
    return dir;
}

static void problems_empty(const mailtls_memory *m) {
    char problems[2048] = {0};
    uintptr_t w = 0;
    CHECK_RC(mailtls_memory_problems(m, problems, sizeof problems, &w), MAILTLS_RESULT_OK);
    CHECK_STREQ(problems, "");
}

#define WRITERS 8
#define PER_WRITER 250

TEST(memory_db_eight_processes_writing_at_once_lose_no_record) {
    char path[96], dir[64];
    REQUIRE(db_path(path) && scratch_dir(dir));
    pid_t kids[WRITERS];
    for (int k = 0; k < WRITERS; k++) {
        kids[k] = fork();
        REQUIRE(kids[k] >= 0);
        if (kids[k] == 0) {
            /* Each child opens the database itself, as a new delivery process does. */
            const mailtls_memory *m = NULL;
            if (mailtls_memory_open_file(path, &m) != MAILTLS_RESULT_OK)
                _exit(2);
            char host[32];
            snprintf(host, sizeof host, "w%d.test", k);
            for (unsigned i = 0; i < PER_WRITER; i++) {
                if (put_record(m, dir, host, 1000 + i) != 0 || put_record(m, dir, "shared.test", 1000 + i) != 0)
                    _exit(3);
                /* Opened again now and then, as a new delivery process opens it while
                 * the others write: opening must never take a growing file for a
                 * truncated one. */
                if (i % 25 == 24) {
                    mailtls_memory_free(m);
                    if (mailtls_memory_open_file(path, &m) != MAILTLS_RESULT_OK)
                        _exit(2);
                    char problems[512] = "";
                    if (mailtls_memory_problems(m, problems, sizeof problems, NULL) != MAILTLS_RESULT_OK || *problems)
                        _exit(4);
                }
            }
            mailtls_memory_free(m);
            _exit(0);
        }
    }
    for (int k = 0; k < WRITERS; k++) {
        int st = 0;
        REQUIRE(waitpid(kids[k], &st, 0) == kids[k]);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    const mailtls_memory *m = open_db(path);
    REQUIRE(m);
    problems_empty(m);
    CHECK(count_records(m) == WRITERS * PER_WRITER + PER_WRITER);
    int missing = 0;
    for (int k = 0; k < WRITERS; k++) {
        char host[32];
        snprintf(host, sizeof host, "w%d.test", k);
        for (unsigned i = 0; i < PER_WRITER; i++)
            missing += !has_record(m, host, 1000 + i);
    }
    CHECK(missing == 0);
}

TEST(memory_db_a_process_killed_in_the_middle_of_its_writes_loses_nothing_it_committed) {
    char path[96], dir[64];
    REQUIRE(db_path(path) && scratch_dir(dir));
    int acks[2];
    REQUIRE(pipe(acks) == 0);
    pid_t kid = fork();
    REQUIRE(kid >= 0);
    if (kid == 0) {
        close(acks[0]);
        const mailtls_memory *m = NULL;
        if (mailtls_memory_open_file(path, &m) != MAILTLS_RESULT_OK)
            _exit(2);
        /* Writes until killed; after each committed record, says which. */
        for (uint32_t i = 0;; i++) {
            if (put_record(m, dir, "killed.test", 1 + i % 60000) != 0)
                _exit(3);
            if (write(acks[1], &i, sizeof i) != sizeof i)
                _exit(4);
        }
    }
    close(acks[1]);
    uint32_t last = 0;
    for (int got = 0; got < 300; got++)
        REQUIRE(read(acks[0], &last, sizeof last) == sizeof last);
    /* Killed wherever it is: most likely inside its next write transaction. */
    kill(kid, SIGKILL);
    int st = 0;
    REQUIRE(waitpid(kid, &st, 0) == kid);
    CHECK(WIFSIGNALED(st));
    uint32_t more;
    while (read(acks[0], &more, sizeof more) == sizeof more)
        last = more;
    close(acks[0]);
    const mailtls_memory *m = open_db(path);
    REQUIRE(m);
    problems_empty(m);
    int missing = 0;
    for (uint32_t i = 0; i <= last; i++)
        missing += !has_record(m, "killed.test", 1 + i % 60000);
    CHECK(missing == 0);
    /* The database takes writes again: the dead writer's lock was released. */
    CHECK(put_record(m, dir, "after.test", 25) == 0);
    CHECK(has_record(m, "after.test", 25));
}

TEST(memory_db_children_forked_after_the_parent_opened_it_write_through_their_own_environment) {
    char path[96], dir[64];
    REQUIRE(db_path(path) && scratch_dir(dir));
    const mailtls_memory *m = open_db(path);
    REQUIRE(m);
    CHECK(put_record(m, dir, "parent.test", 1) == 0);
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork();
        REQUIRE(kids[k] >= 0);
        if (kids[k] == 0) {
            /* The inherited handle, as a forking server's child uses its config's. */
            char host[32];
            snprintf(host, sizeof host, "child%d.test", k);
            for (unsigned i = 0; i < 50; i++)
                if (put_record(m, dir, host, 1 + i) != 0)
                    _exit(3);
            _exit(has_record(m, "parent.test", 1) ? 0 : 5);
        }
    }
    for (int k = 0; k < 4; k++) {
        int st = 0;
        REQUIRE(waitpid(kids[k], &st, 0) == kids[k]);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    /* The parent sees every child's records and its own handle still writes. */
    CHECK(count_records(m) == 1 + 4 * 50);
    CHECK(put_record(m, dir, "parent.test", 2) == 0);
    CHECK(count_records(m) == 2 + 4 * 50);
    problems_empty(m);
}

TEST(memory_db_is_private_to_its_owner) {
    char path[96];
    REQUIRE(db_path(path));
    mode_t old = umask(0);
    const mailtls_memory *m = NULL;
    REQUIRE_RC(mailtls_memory_open_file(path, &m), MAILTLS_RESULT_OK);
    umask(old);
    char lock[128];
    snprintf(lock, sizeof lock, "%s-lock", path);
    struct stat st;
    REQUIRE(stat(path, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(stat(lock, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    mailtls_memory_free(m);
    /* A database someone opened up is closed again at the next open. */
    REQUIRE(chmod(path, 0644) == 0);
    pid_t kid = fork();
    REQUIRE(kid >= 0);
    if (kid == 0) {
        const mailtls_memory *m2 = NULL;
        _exit(mailtls_memory_open_file(path, &m2) == MAILTLS_RESULT_OK ? 0 : 2);
    }
    int wst = 0;
    REQUIRE(waitpid(kid, &wst, 0) == kid);
    CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    REQUIRE(stat(path, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
}

TEST(memory_db_converts_a_version_1_text_file_and_exports_and_imports_the_text_format) {
    char path[96];
    REQUIRE(db_path(path));
    long long now = (long long)time(NULL);
    char text[512];
    snprintf(text, sizeof text,
             "mailtls-memory 1\n"
             "smtp a.test 25 tolerant=compact@%lld pinned@%lld\n"
             "imap b.test 143 intolerant=modern@%lld,intolerance,2,%lld\n"
             "pop3 c.test 110 sni-off@%lld\n",
             now, now, now, now, now);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
    const mailtls_memory *m = open_db(path);
    REQUIRE(m);
    problems_empty(m);
    CHECK(count_records(m) == 3);
    char kept[128];
    snprintf(kept, sizeof kept, "%s.v1", path);
    CHECK(access(kept, F_OK) == 0);
    /* The export is the same text (sorted by key, as the conversion's input was). */
    char out[128];
    snprintf(out, sizeof out, "%s.export", path);
    uintptr_t n = 0;
    REQUIRE_RC(mailtls_memory_export(m, out, &n), MAILTLS_RESULT_OK);
    defer_unlink(out);
    CHECK(n == 3);
    char back[512] = {0};
    f = fopen(out, "r");
    REQUIRE(f);
    size_t got = fread(back, 1, sizeof back - 1, f);
    fclose(f);
    back[got] = 0;
    CHECK_STREQ(back, text);
    struct stat st;
    REQUIRE(stat(out, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    /* Imported into a process memory, every record is there. */
    const mailtls_memory *p = NULL;
    REQUIRE_RC(mailtls_memory_new(&p), MAILTLS_RESULT_OK);
    defer_call(free_mem, (void *)p);
    REQUIRE_RC(mailtls_memory_import(p, out, &n), MAILTLS_RESULT_OK);
    CHECK(n == 3);
    CHECK(count_records(p) == 3);
    /* Errors are clear, never fatal. */
    CHECK_RC(mailtls_memory_import(p, "/nonexistent/file", &n), MAILTLS_RESULT_IO);
    CHECK_RC(mailtls_memory_export(p, "/nonexistent/dir/file", &n), MAILTLS_RESULT_IO);
    CHECK_RC(mailtls_memory_export(NULL, out, &n), MAILTLS_RESULT_NULL_PARAMETER);
    CHECK_RC(mailtls_memory_import(p, NULL, &n), MAILTLS_RESULT_NULL_PARAMETER);
    const mailtls_memory *none = NULL;
    CHECK_RC(mailtls_memory_open_file("/nonexistent/dir/memory", &none), MAILTLS_RESULT_IO);
    CHECK(none == NULL);
}
