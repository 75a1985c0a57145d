/*
 * mailtls-client's destination facts for DANE (RFC 7672) and MTA-STS (RFC 8461):
 * what an MTA's resolver and policy fetcher found, read from files or given on the
 * command line, and handed to a session before it negotiates. The library does no
 * DNS; neither does this file (dns-lookup.c does, for --dns).
 */
#ifndef MAILTLS_EXAMPLES_CLIENT_DEST_H
#define MAILTLS_EXAMPLES_CLIENT_DEST_H

#include <mailtls.h>

struct dest_args {
    const char *tlsa_file;    /* --tlsa FILE: one record a line, "3 1 1 <hex>"; # comments */
    const char *dnssec;       /* --dnssec secure|insecure|bogus */
    const char *mx_host;      /* --mx-host NAME */
    const char *tlsa_base;    /* --tlsa-base NAME */
    const char *next_hop;     /* --next-hop DOMAIN */
    const char *mta_sts_file; /* --mta-sts FILE: the policy body */
    const char *dns;          /* --dns ADDR[@PORT]: look the destination up (dns-lookup.c) */
    const char *dns_anchor;   /* --dns-anchor FILE: the trust anchor libunbound validates with */
    struct dns_destination *found; /* what --dns found (dest_lookup) */
};

struct dns_destination;

/* --dns: looks up the MX of `domain`, its address and its TLSA records for `port`;
 * the MX host and address are then where the client goes. 0, or main's exit status
 * (EX_TEMPFAIL: the lookup failed; a bogus answer is not a failure here, the library
 * defers on it). */
int dest_lookup(struct dest_args *d, const char *domain, unsigned port, const char *prog);

/* Whether any destination option was given. */
int dest_given(const struct dest_args *d);

/* Hands the facts to the session. 0, or -1 after a message on stderr naming the
 * option (the caller exits with EX_USAGE or EX_NOINPUT: *status says which). */
int dest_apply(const struct dest_args *d, mailtls_session *s, const char *prog, int *status);

#endif
