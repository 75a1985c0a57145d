/*
 * mailtls-dnslookup: what an SMTP client finds in the DNS before a DANE delivery
 * (dns-lookup.c): the MX host of a domain, its address, the TLSA base domain, the
 * DNSSEC status and the TLSA records, one per line:
 *
 *   next-hop example.test
 *   mx-host mail.example.test
 *   address 127.0.0.1
 *   tlsa-base mail.example.test
 *   dnssec secure
 *   tlsa 3 1 1 0123...
 *   why ...                    (when a lookup failed or was bogus)
 *
 *   mailtls-dnslookup [--dns ADDR[@PORT]] [--dns-anchor FILE] [--port N]
 *                     [--tlsa-file FILE] DOMAIN
 *
 * --tlsa-file writes the TLSA records alone, "U S M hex" a line, as
 * `mailtls-client --tlsa FILE` reads them (an empty file when there are none).
 * Exit status: 0 looked up (a "bogus" status included), 75 a lookup failed, 64 usage,
 * 73 the TLSA file cannot be written. A test tool: not installed.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "dns-lookup.h"

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--dns ADDR[@PORT]] [--dns-anchor FILE] [--port N] [--tlsa-file FILE] DOMAIN\n"
            "  --dns ADDR[@PORT]   the recursive resolver to ask (default: /etc/resolv.conf's)\n"
            "  --dns-anchor FILE   DNSSEC trust anchor (DS or DNSKEY records): validate here;\n"
            "                      without it every answer is insecure\n"
            "  --port N            the SMTP port whose TLSA records are looked up (default 25)\n"
            "  --tlsa-file FILE    also write the TLSA records to FILE, one \"U S M hex\" a line\n"
            "  --help              this text\n",
            prog);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "dns", required_argument, NULL, 'd' },      { "dns-anchor", required_argument, NULL, 'a' },
        { "port", required_argument, NULL, 'p' },     { "tlsa-file", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },           { NULL, 0, NULL, 0 },
    };
    const char *resolver = NULL, *anchor = NULL, *tlsa_file = NULL;
    unsigned long port = 25;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'd': resolver = optarg; break;
        case 'a': anchor = optarg; break;
        case 't': tlsa_file = optarg; break;
        case 'p':
            port = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || port == 0 || port > 65535) {
                fprintf(stderr, "%s: --port: 1..65535, not \"%s\"\n", argv[0], optarg);
                return EX_USAGE;
            }
            break;
        case 'h': usage(stdout, argv[0]); return 0;
        default: usage(stderr, argv[0]); return EX_USAGE;
        }
    }
    if (optind != argc - 1) {
        usage(stderr, argv[0]);
        return EX_USAGE;
    }

    struct dns_destination d;
    if (dns_lookup_destination(resolver, anchor, argv[optind], (unsigned)port, &d) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], d.why);
        printf("why %s\n", d.why);
        dns_destination_free(&d);
        return EX_TEMPFAIL;
    }
    printf("next-hop %s\nmx-host %s\naddress %s\ntlsa-base %s\ndnssec %s\n", d.next_hop, d.mx_host, d.address,
           d.tlsa_base, d.dnssec);
    for (size_t i = 0; i < d.ntlsa; i++)
        printf("tlsa %s\n", d.tlsa[i]);
    if (d.why[0] != '\0')
        printf("why %s\n", d.why);
    int rc = 0;
    if (tlsa_file != NULL) {
        FILE *f = fopen(tlsa_file, "w");
        if (f != NULL) {
            for (size_t i = 0; i < d.ntlsa; i++)
                fprintf(f, "%s\n", d.tlsa[i]);
        }
        if (f == NULL || fclose(f) != 0) {
            perror(tlsa_file);
            rc = EX_CANTCREAT;
        }
    }
    dns_destination_free(&d);
    return rc;
}
