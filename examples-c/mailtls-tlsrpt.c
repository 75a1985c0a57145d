/*
 * mailtls-tlsrpt: the TLS-RPT (RFC 8460) report of a directory of record files.
 *
 * An MTA writes one record line per delivery attempt (mailtls_report_tlsrpt_record)
 * into files named *.tlsrpt in a directory (tlsrpt_record_write in common.c does it
 * atomically); once a day this tool adds them up through the library
 * (mailtls_tlsrpt_add_record) and writes the report of section 4.4 for the previous
 * UTC day, which section 4.1 asks for, or for another range.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static const char *prog = "mailtls-tlsrpt";

#define DAY_S 86400ull

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--organization NAME] [--contact ADDR] [--start UNIX --end UNIX | --all]\n"
            "                      [--report-id ID] [--output FILE] [--skip-bad] DIR\n"
            "\n"
            "Reads every record file of DIR: files named *.tlsrpt (not starting with a dot), each\n"
            "holding one or more record lines as mailtls_report_tlsrpt_record(3) writes them, one\n"
            "session a line (empty lines are skipped). Writes the RFC 8460 report of the sessions\n"
            "in the range as one line of JSON. Other files are left alone; none is removed.\n"
            "\n"
            "  --organization NAME  the report's organization-name (default: this host's name)\n"
            "  --contact ADDR  the report's contact-info, an email address or a URL\n"
            "                (default: postmaster@HOST, HOST this host's name)\n"
            "  --start UNIX --end UNIX\n"
            "                the range [start, end) in seconds since the epoch; sessions outside\n"
            "                it are in no count (default: the previous UTC day, 00:00 to 24:00,\n"
            "                as RFC 8460 section 4.1 asks of daily reports)\n"
            "  --all         the range from 00:00 UTC of the earliest record's day to 24:00 of\n"
            "                the latest's: every record counts\n"
            "  --report-id ID  the report's report-id (default: START_ORGANIZATION, START as\n"
            "                an RFC 3339 date-time: one report per organization and range)\n"
            "  --output FILE write the report to FILE, replaced whole (default: stdout)\n"
            "  --skip-bad    report the sessions of the good lines even when some lines are\n"
            "                not records (each bad line is still named on stderr)\n"
            "  -h, --help    this text\n"
            "\n"
            "exit: 0 ok, 64 usage, 65 a line is not a record (without --skip-bad),\n"
            "      66 DIR or a file cannot be read or --all found no record,\n"
            "      73 the report cannot be written\n",
            prog);
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    usage(stderr);
    exit(EX_USAGE);
}

static uint64_t parse_time(const char *opt, const char *arg)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno || *end || end == arg || arg[0] == '-')
        die_usage("%s: seconds since the epoch, not \"%s\"", opt, arg);
    return v;
}

static int is_record_file(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 7 && strcmp(name + n - 7, ".tlsrpt") == 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the lines of one file; returns the number of bad lines, or -1 when the file
 * cannot be read. */
static long add_file(mailtls_tlsrpt *agg, const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned long lineno = 0;
    long bad = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        if (len == 0)
            continue;
        if (strlen(line) != (size_t)len) {
            fprintf(stderr, "%s: %s:%lu: the line holds a NUL byte\n", prog, path, lineno);
            bad++;
            continue;
        }
        mailtls_result rc = mailtls_tlsrpt_add_record(agg, line);
        if (rc != MAILTLS_RESULT_OK) {
            fprintf(stderr, "%s: %s:%lu: %s\n", prog, path, lineno, mailtls_tlsrpt_last_error(agg));
            bad++;
        }
    }
    int err = ferror(f) ? errno : 0;
    free(line);
    fclose(f);
    if (err) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(err));
        return -1;
    }
    return bad;
}

/* Adds every record file of DIR, in name order (so messages come in a stable
 * order). Returns 0, EX_NOINPUT or EX_DATAERR; *bad counts the bad lines. */
static int add_dir(mailtls_tlsrpt *agg, const char *dir, long *bad)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "%s: %s: %s\n", prog, dir, strerror(errno));
        return EX_NOINPUT;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int status = 0;
    while ((e = readdir(d)) != NULL) {
        if (!is_record_file(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **more = realloc(names, cap * sizeof *names);
            if (!more) {
                fprintf(stderr, "%s: out of memory\n", prog);
                exit(EX_OSERR);
            }
            names = more;
        }
        if (!(names[n] = strdup(e->d_name))) {
            fprintf(stderr, "%s: out of memory\n", prog);
            exit(EX_OSERR);
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        long b = add_file(agg, dir, names[i]);
        if (b < 0)
            status = EX_NOINPUT;
        else
            *bad += b;
        free(names[i]);
    }
    free(names);
    return status;
}

static void rfc3339(uint64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, 32, "%llu", (unsigned long long)t);
}

int main(int argc, char **argv)
{
    enum { O_ORG = 256, O_CONTACT, O_START, O_END, O_ALL, O_ID, O_OUTPUT, O_SKIP };
    static const struct option longopts[] = {
        {"organization", required_argument, NULL, O_ORG}, {"contact", required_argument, NULL, O_CONTACT},
        {"start", required_argument, NULL, O_START},      {"end", required_argument, NULL, O_END},
        {"all", no_argument, NULL, O_ALL},                {"report-id", required_argument, NULL, O_ID},
        {"output", required_argument, NULL, O_OUTPUT},    {"skip-bad", no_argument, NULL, O_SKIP},
        {"help", no_argument, NULL, 'h'},                 {NULL, 0, NULL, 0},
    };
    const char *org = NULL, *contact = NULL, *report_id = NULL, *output = NULL;
    uint64_t start = 0, end = 0;
    int have_start = 0, have_end = 0, all = 0, skip_bad = 0, o;
    while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (o) {
        case O_ORG: org = optarg; break;
        case O_CONTACT: contact = optarg; break;
        case O_START: start = parse_time("--start", optarg); have_start = 1; break;
        case O_END: end = parse_time("--end", optarg); have_end = 1; break;
        case O_ALL: all = 1; break;
        case O_ID: report_id = optarg; break;
        case O_OUTPUT: output = optarg; break;
        case O_SKIP: skip_bad = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    if (optind == argc)
        die_usage("DIR is missing");
    if (optind + 1 != argc)
        die_usage("one DIR only, not also \"%s\"", argv[optind + 1]);
    const char *dir = argv[optind];
    if (have_start != have_end)
        die_usage("--start and --end go together");
    if (all && have_start)
        die_usage("--all excludes --start and --end");
    if (have_start && start >= end)
        die_usage("--start must be before --end");
    if ((org && !*org) || (contact && !*contact) || (report_id && !*report_id) || (output && !*output))
        die_usage("--organization, --contact, --report-id and --output take a non-empty value");

    char host[256] = "localhost", default_contact[300];
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    if (!org)
        org = host;
    if (!contact) {
        snprintf(default_contact, sizeof default_contact, "postmaster@%s", host);
        contact = default_contact;
    }

    mailtls_tlsrpt *agg = NULL;
    mailtls_result rc = mailtls_tlsrpt_new(org, contact, &agg);
    if (rc != MAILTLS_RESULT_OK) {
        fprintf(stderr, "%s: %s\n", prog, mailtls_result_str(rc));
        return EX_USAGE;
    }
    long bad = 0;
    int status = add_dir(agg, dir, &bad);
    if (status == 0 && bad > 0) {
        if (!skip_bad) {
            fprintf(stderr, "%s: %ld line(s) of %s are not records: no report (--skip-bad reports the others)\n",
                    prog, bad, dir);
            status = EX_DATAERR;
        } else {
            fprintf(stderr, "%s: skipped %ld line(s) that are not records\n", prog, bad);
        }
    }
    if (status == 0 && all) {
        uint64_t first, last;
        if (mailtls_tlsrpt_time_range(agg, &first, &last) != MAILTLS_RESULT_OK) {
            fprintf(stderr, "%s: --all: no record in %s\n", prog, dir);
            status = EX_NOINPUT;
        } else {
            start = first - first % DAY_S;
            end = last - last % DAY_S + DAY_S;
        }
    } else if (status == 0 && !have_start) {
        uint64_t now = (uint64_t)time(NULL);
        end = now - now % DAY_S;
        start = end - DAY_S;
    }
    char id[512];
    if (status == 0 && !report_id) {
        char when[32];
        rfc3339(start, when);
        snprintf(id, sizeof id, "%s_%s", when, org);
        report_id = id;
    }
    if (status == 0 && output) {
        rc = mailtls_tlsrpt_write_file(agg, start, end, report_id, output);
        if (rc != MAILTLS_RESULT_OK) {
            fprintf(stderr, "%s: %s\n", prog, mailtls_tlsrpt_last_error(agg));
            status = rc == MAILTLS_RESULT_IO ? EX_CANTCREAT : EX_USAGE;
        }
    } else if (status == 0) {
        size_t needed = 0;
        char *buf = NULL;
        /* The size query, then the report. */
        rc = mailtls_tlsrpt_write(agg, start, end, report_id, NULL, 0, &needed);
        if (rc == MAILTLS_RESULT_BUFFER_TOO_SMALL) {
            if (!(buf = malloc(needed))) {
                fprintf(stderr, "%s: out of memory\n", prog);
                exit(EX_OSERR);
            }
            rc = mailtls_tlsrpt_write(agg, start, end, report_id, buf, needed, NULL);
        }
        if (rc != MAILTLS_RESULT_OK) {
            fprintf(stderr, "%s: %s\n", prog, mailtls_tlsrpt_last_error(agg));
            status = EX_USAGE;
        } else if (printf("%s\n", buf) < 0 || fflush(stdout) != 0) {
            fprintf(stderr, "%s: stdout: %s\n", prog, strerror(errno));
            status = EX_CANTCREAT;
        }
        free(buf);
    }
    mailtls_tlsrpt_free(agg);
    return status;
}
