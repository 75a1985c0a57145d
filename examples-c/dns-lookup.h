/*
 * The DNS an SMTP client does before it can use DANE (RFC 7672), on libunbound: the
 * MX of a domain, the address of the chosen MX host and the TLSA records of that host,
 * each with its DNSSEC status, validated here (libunbound holds the trust anchor and
 * checks the signatures itself; the resolver it asks only fetches).
 *
 * The mailtls library never does DNS: an MTA does, as here, and hands the library the
 * TLSA records, their DNSSEC status, the TLSA base domain and the MX host. This file
 * is self-contained (C11, <stddef.h> only) so that any example program can use it.
 */
#ifndef MAILTLS_EXAMPLES_DNS_LOOKUP_H
#define MAILTLS_EXAMPLES_DNS_LOOKUP_H

#include <stddef.h>

struct dns_destination {
    /* The domain asked for, lowercase, without a final dot. */
    char next_hop[256];
    /* The MX host chosen: the lowest preference (the first such record in the answer
     * when several share it), or the domain itself when it has no MX RRset (RFC 5321
     * 5.1, the implicit MX). Lowercase, without a final dot. */
    char mx_host[256];
    /* The MX host's first IPv4 (A) address, as text. */
    char address[64];
    /* The TLSA base domain (RFC 7672 2.2.2): the MX host, or the target of its CNAME
     * chain when every link of the chain was secure and TLSA records exist there (the
     * expanded name is tried first, then the MX host's own name). Empty when no TLSA
     * lookup was made (see dnssec). */
    char tlsa_base[256];
    /* The TLSA RRset at _<port>._tcp.<tlsa_base>, each record in presentation form
     * "U S M hex" (decimal usage, selector and matching type, lowercase hex data),
     * malloc'd; ntlsa of them. Records with no association data are dropped. */
    char **tlsa;
    size_t ntlsa;
    /* "secure" only when every lookup made was secure: the MX RRset (or its proven
     * absence), the A RRset and the TLSA RRset (or its proven absence). An insecure MX
     * or A RRset means DANE does not apply (RFC 7672 2.2.1, 2.2.2) and the TLSA lookup
     * is not made. "bogus" when a lookup failed validation: the fields after it are
     * empty and why says what failed. Else "insecure". A static string. */
    const char *dnssec;
    /* Why a lookup failed, or was bogus (libunbound's why_bogus); empty otherwise. */
    char why[256];
};

/*
 * Looks up where mail for `domain` goes and the TLSA records for `port`.
 *
 * resolver:    the recursive resolver to ask, "ADDR" or "ADDR@PORT" ("127.0.0.1@53");
 *              NULL: the nameservers of /etc/resolv.conf.
 * anchor_file: a DNSSEC trust anchor (DS or DNSKEY records, zone-file format, as
 *              unbound's trust-anchor-file) with which libunbound validates every
 *              answer itself. NULL: no validation, every answer is "insecure" (the
 *              resolver's AD bit is not trusted: libunbound gives its own verdict, not
 *              the resolver's).
 * port:        the SMTP server's port (the _<port>._tcp TLSA owner name), 1..65535.
 *
 * Returns 0 with *out filled (dnssec "bogus" included: an MTA defers, RFC 7672 2.1.1),
 * or -1 with out->why set: the resolver could not be asked or did not answer
 * (SERVFAIL without a validation failure), the domain does not exist, it has a null
 * MX (RFC 7505), the MX host has no A record, or a name does not fit. Answers are
 * parsed with every length checked: a hostile resolver gets a failure, not an
 * overflow. Free *out with dns_destination_free in every case.
 */
int dns_lookup_destination(const char *resolver, const char *anchor_file, const char *domain, unsigned port,
                           struct dns_destination *out);

/* Frees the TLSA records and clears *d. NULL and a cleared struct are fine. */
void dns_destination_free(struct dns_destination *d);

#endif /* MAILTLS_EXAMPLES_DNS_LOOKUP_H */
