/*
 * The destination's DANE and MTA-STS facts, from mailtls-client's options into the
 * session (client-dest.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "client-dest.h"
#include "common.h"
#include "dns-lookup.h"

int dest_given(const struct dest_args *d)
{
    return d->tlsa_file || d->dnssec || d->mx_host || d->tlsa_base || d->next_hop || d->mta_sts_file;
}

static int fail(const char *prog, const char *opt, const char *what, mailtls_session *s, int *status, int code)
{
    fprintf(stderr, "%s: %s: %s\n", prog, opt, what ? what : mailtls_session_last_error(s));
    *status = code;
    return -1;
}

static struct dns_destination found;
static void free_found(void) { dns_destination_free(&found); }

int dest_lookup(struct dest_args *d, const char *domain, unsigned port, const char *prog)
{
    atexit(free_found);
    if (dns_lookup_destination(d->dns, d->dns_anchor, domain, port, &found) < 0) {
        fprintf(stderr, "%s: --dns %s: %s: %s\n", prog, d->dns, domain, found.why);
        return EX_TEMPFAIL;
    }
    fprintf(stderr, "%s: %s: MX %s at %s, TLSA base %s, %zu TLSA record(s), DNSSEC %s%s%s\n", prog, domain,
            found.mx_host, found.address[0] ? found.address : "-", found.tlsa_base[0] ? found.tlsa_base : "-",
            found.ntlsa, found.dnssec, found.why[0] ? ": " : "", found.why);
    d->found = &found;
    return 0;
}

/* What --dns found, into the session. */
static int apply_found(const struct dns_destination *f, mailtls_session *s, const char *prog, int *status)
{
    for (size_t i = 0; i < f->ntlsa; i++)
        if (mailtls_session_add_tlsa_text(s, f->tlsa[i]) != MAILTLS_RESULT_OK)
            return fail(prog, "--dns TLSA record", NULL, s, status, EX_DATAERR);
    uint32_t v = strcmp(f->dnssec, "secure") == 0 ? MAILTLS_DNSSEC_SECURE
                 : strcmp(f->dnssec, "bogus") == 0 ? MAILTLS_DNSSEC_BOGUS
                                                   : MAILTLS_DNSSEC_INSECURE;
    if (mailtls_session_set_dnssec(s, v) != MAILTLS_RESULT_OK ||
        (f->mx_host[0] && mailtls_session_set_mx_host(s, f->mx_host) != MAILTLS_RESULT_OK) ||
        (f->tlsa_base[0] && mailtls_session_set_tlsa_base(s, f->tlsa_base) != MAILTLS_RESULT_OK) ||
        (f->next_hop[0] && mailtls_session_set_next_hop(s, f->next_hop) != MAILTLS_RESULT_OK))
        return fail(prog, "--dns", NULL, s, status, EX_DATAERR);
    return 0;
}


/* Every record line of FILE: blank lines and # comments are skipped. */
static int add_tlsa_file(const char *path, mailtls_session *s, const char *prog, int *status)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(prog, "--tlsa", strerror(errno), s, status, EX_NOINPUT);
    char line[16384];
    unsigned n = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        n++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            fprintf(stderr, "%s: --tlsa %s:%u: line too long\n", prog, path, n);
            *status = EX_DATAERR;
            rc = -1;
            break;
        }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        char *p = line + strspn(line, " \t");
        if (!*p || *p == '#')
            continue;
        if (mailtls_session_add_tlsa_text(s, p) != MAILTLS_RESULT_OK) {
            fprintf(stderr, "%s: --tlsa %s:%u: %s\n", prog, path, n, mailtls_session_last_error(s));
            *status = EX_DATAERR;
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f))
        rc = fail(prog, "--tlsa", strerror(errno), s, status, EX_NOINPUT);
    fclose(f);
    return rc;
}

static int set_sts(const char *path, mailtls_session *s, const char *prog, int *status)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(prog, "--mta-sts", strerror(errno), s, status, EX_NOINPUT);
    static char body[64 * 1024 + 2];
    size_t n = fread(body, 1, sizeof body, f);
    int err = ferror(f);
    fclose(f);
    if (err)
        return fail(prog, "--mta-sts", strerror(errno), s, status, EX_NOINPUT);
    uint32_t rc = mailtls_session_set_mta_sts(s, (const uint8_t *)body, n);
    /* An invalid policy is no policy (RFC 8461 section 5): said, reported, not fatal. */
    if (rc == MAILTLS_RESULT_STS_POLICY_INVALID)
        fprintf(stderr, "%s: --mta-sts %s: %s (going on without it)\n", prog, path, mailtls_session_last_error(s));
    else if (rc != MAILTLS_RESULT_OK)
        return fail(prog, "--mta-sts", NULL, s, status, EX_USAGE);
    return 0;
}

int dest_apply(const struct dest_args *d, mailtls_session *s, const char *prog, int *status)
{
    if (d->found && apply_found(d->found, s, prog, status) < 0)
        return -1;
    if (d->tlsa_file && add_tlsa_file(d->tlsa_file, s, prog, status) < 0)
        return -1;
    if (d->dnssec) {
        uint32_t v = strcmp(d->dnssec, "secure") == 0     ? MAILTLS_DNSSEC_SECURE
                     : strcmp(d->dnssec, "insecure") == 0 ? MAILTLS_DNSSEC_INSECURE
                     : strcmp(d->dnssec, "bogus") == 0    ? MAILTLS_DNSSEC_BOGUS
                                                          : 0;
        if (!v)
            return fail(prog, "--dnssec", "secure, insecure or bogus", s, status, EX_USAGE);
        if (mailtls_session_set_dnssec(s, v) != MAILTLS_RESULT_OK)
            return fail(prog, "--dnssec", NULL, s, status, EX_USAGE);
    }
    if (d->mx_host && mailtls_session_set_mx_host(s, d->mx_host) != MAILTLS_RESULT_OK)
        return fail(prog, "--mx-host", NULL, s, status, EX_USAGE);
    if (d->tlsa_base && mailtls_session_set_tlsa_base(s, d->tlsa_base) != MAILTLS_RESULT_OK)
        return fail(prog, "--tlsa-base", NULL, s, status, EX_USAGE);
    if (d->next_hop && mailtls_session_set_next_hop(s, d->next_hop) != MAILTLS_RESULT_OK)
        return fail(prog, "--next-hop", NULL, s, status, EX_USAGE);
    if (d->mta_sts_file && set_sts(d->mta_sts_file, s, prog, status) < 0)
        return -1;
    return 0;
}
