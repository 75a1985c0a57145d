/*
 * An SMTP client's DNS for DANE (RFC 7672) on libunbound: MX, then A for the chosen
 * host, then TLSA at _<port>._tcp.<base>, each validated by libunbound itself.
 * See dns-lookup.h for the contract.
 *
 * libunbound gives each record's rdata in wire format, names uncompressed (it
 * decompresses what it parsed; a compression pointer in an rdata is refused here as
 * malformed all the same). Nothing read from an answer is trusted for its length.
 */
#include "dns-lookup.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unbound.h>

#define RR_A 1
#define RR_MX 15
#define RR_TLSA 52
#define CLASS_IN 1
#define RCODE_NXDOMAIN 3

static void set_why(struct dns_destination *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(struct dns_destination *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->why, sizeof d->why, fmt, ap);
    va_end(ap);
}

static int host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : (char)c;
}

/*
 * A host name in text ("mx.example.org", a final dot allowed) into `out` (cap bytes),
 * lowercase, without the final dot. Only letters, digits, '-' and '_' in labels of 1
 * to 63 bytes, 253 bytes in all. Returns 0, or -1 with `out` untouched.
 */
static int text_name(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in), label = 0;
    if (n > 0 && in[n - 1] == '.')
        n--;
    if (n == 0 || n > 253 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '.') {
            if (label == 0)
                return -1;
            label = 0;
        } else if (host_char(c) && ++label <= 63) {
        } else {
            return -1;
        }
    }
    if (label == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = lower((unsigned char)in[i]);
    out[n] = '\0';
    return 0;
}

/*
 * An uncompressed wire-format name at p[0..n) into text as text_name writes it (the
 * root name gives ""). Returns the bytes it took, or -1: running past n, a label
 * length over 63 (compression pointers included), a name over 255 bytes on the wire,
 * a byte that is no host name character, or no room in `out`.
 */
static int wire_name(const unsigned char *p, size_t n, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    if (cap == 0)
        return -1;
    for (;;) {
        if (i >= n || i >= 255)
            return -1;
        size_t len = p[i++];
        if (len == 0)
            break;
        if (len > 63 || len > n - i)
            return -1;
        if (o + (o > 0) + len + 1 > cap)
            return -1;
        if (o > 0)
            out[o++] = '.';
        for (size_t k = 0; k < len; k++) {
            if (!host_char(p[i + k]))
                return -1;
            out[o++] = lower(p[i + k]);
        }
        i += len;
    }
    out[o] = '\0';
    return (int)i;
}

/* One query. Returns the result (freed by the caller) or NULL with why set. */
static struct ub_result *query(struct ub_ctx *ctx, const char *name, int type, const char *what,
                               struct dns_destination *d)
{
    struct ub_result *r = NULL;
    int err = ub_resolve(ctx, name, type, CLASS_IN, &r);
    if (err != 0) {
        set_why(d, "%s lookup for %s: %s", what, name, ub_strerror(err));
        return NULL;
    }
    return r;
}

/* Records a result's security; returns 1 when it is bogus (why set, dnssec "bogus"). */
static int note_security(const struct ub_result *r, const char *what, const char *name, int *all_secure,
                         struct dns_destination *d)
{
    if (r->bogus) {
        d->dnssec = "bogus";
        set_why(d, "%s lookup for %s is bogus: %s", what, name, r->why_bogus ? r->why_bogus : "(no reason given)");
        return 1;
    }
    if (!r->secure)
        *all_secure = 0;
    return 0;
}

static const char *rcode_name(int rcode)
{
    static const char *const names[] = {
        "NOERROR", "FORMERR", "SERVFAIL (the resolver failed or did not answer)", "NXDOMAIN", "NOTIMP", "REFUSED",
    };
    return (rcode >= 0 && rcode < 6) ? names[rcode] : "an error";
}

/* The lowest-preference MX target of r into d->mx_host. 0, or -1 with why set. */
static int choose_mx(const struct ub_result *r, struct dns_destination *d)
{
    int best = -1, usable = 0, null_mx = 0;
    char name[256];
    for (size_t i = 0; r->data[i] != NULL; i++) {
        const unsigned char *p = (const unsigned char *)r->data[i];
        if (r->len[i] < 3)
            continue;
        size_t n = (size_t)r->len[i];
        int pref = (p[0] << 8) | p[1];
        int used = wire_name(p + 2, n - 2, name, sizeof name);
        if (used < 0 || (size_t)used != n - 2)
            continue; /* malformed, or bytes after the name */
        if (name[0] == '\0') {
            null_mx = 1; /* "0 ." (RFC 7505) */
            continue;
        }
        usable++;
        if (best < 0 || pref < best) {
            best = pref;
            memcpy(d->mx_host, name, strlen(name) + 1);
        }
    }
    if (usable == 0) {
        if (null_mx)
            set_why(d, "%s has a null MX (RFC 7505): it accepts no mail", d->next_hop);
        else
            set_why(d, "%s: no usable MX record", d->next_hop);
        return -1;
    }
    return 0;
}

/* The TLSA records of r into d->tlsa. 0, or -1 when memory runs out. */
static int take_tlsa(const struct ub_result *r, struct dns_destination *d)
{
    static const char hex[] = "0123456789abcdef";
    size_t count = 0;
    for (size_t i = 0; r->data[i] != NULL; i++)
        count++;
    if (count == 0)
        return 0;
    d->tlsa = calloc(count, sizeof *d->tlsa);
    if (d->tlsa == NULL)
        return -1;
    for (size_t i = 0; r->data[i] != NULL; i++) {
        const unsigned char *p = (const unsigned char *)r->data[i];
        if (r->len[i] <= 3)
            continue; /* no association data: no record can match */
        size_t dlen = (size_t)r->len[i] - 3;
        /* "255 255 255 " and two hex digits a byte, and the NUL */
        char *s = malloc(12 + 2 * dlen + 1);
        if (s == NULL)
            return -1;
        int o = snprintf(s, 13, "%u %u %u ", p[0], p[1], p[2]);
        for (size_t k = 0; k < dlen; k++) {
            s[o++] = hex[p[3 + k] >> 4];
            s[o++] = hex[p[3 + k] & 15];
        }
        s[o] = '\0';
        d->tlsa[d->ntlsa++] = s;
    }
    return 0;
}

/* The TLSA lookup at _<port>._tcp.<base>, its security noted. 1: records taken, 0:
 * none (NODATA or NXDOMAIN), base recorded in both cases; 2: bogus; -1 with why set. */
static int lookup_tlsa(struct ub_ctx *ctx, const char *base, unsigned port, int *all_secure,
                       struct dns_destination *d)
{
    char owner[300];
    int n = snprintf(owner, sizeof owner, "_%u._tcp.%s", port, base);
    if (n < 0 || n > 253) {
        set_why(d, "the TLSA name for %s does not fit in a domain name", base);
        return -1;
    }
    struct ub_result *r = query(ctx, owner, RR_TLSA, "TLSA", d);
    if (r == NULL)
        return -1;
    int rc;
    if (note_security(r, "TLSA", owner, all_secure, d)) {
        rc = 2;
    } else if (r->rcode != 0 && r->rcode != RCODE_NXDOMAIN) {
        set_why(d, "TLSA lookup for %s: %s", owner, rcode_name(r->rcode));
        rc = -1;
    } else if (!r->havedata) {
        rc = 0;
    } else if (take_tlsa(r, d) != 0) {
        set_why(d, "out of memory");
        rc = -1;
    } else {
        rc = 1;
    }
    if (rc == 0 || rc == 1)
        memcpy(d->tlsa_base, base, strlen(base) + 1);
    ub_resolve_free(r);
    return rc;
}

int dns_lookup_destination(const char *resolver, const char *anchor_file, const char *domain, unsigned port,
                           struct dns_destination *out)
{
    memset(out, 0, sizeof *out);
    out->dnssec = "insecure";
    if (domain == NULL || text_name(domain, out->next_hop, sizeof out->next_hop) != 0) {
        set_why(out, "'%s' is not a host name", domain ? domain : "(null)");
        return -1;
    }
    if (port == 0 || port > 65535) {
        set_why(out, "port %u is out of range", port);
        return -1;
    }
    struct ub_ctx *ctx = ub_ctx_create();
    if (ctx == NULL) {
        set_why(out, "ub_ctx_create failed");
        return -1;
    }
    int rc = -1, all_secure = 1, err, t = 0;
    struct ub_result *r = NULL;
    char canon[256] = "";
    /* The resolver is on loopback in the tests and for an MTA with a local one;
     * libunbound refuses to query 127.0.0.0/8 unless told. */
    if ((err = ub_ctx_set_option(ctx, "do-not-query-localhost:", "no")) != 0 ||
        /* a resolver that does not answer fails the lookup in seconds, not tens */
        (err = ub_ctx_set_option(ctx, "infra-cache-max-rtt:", "1000")) != 0 ||
        (err = resolver ? ub_ctx_set_fwd(ctx, resolver) : ub_ctx_resolvconf(ctx, NULL)) != 0) {
        set_why(out, "resolver %s: %s", resolver ? resolver : "from /etc/resolv.conf", ub_strerror(err));
        goto done;
    }
    if (anchor_file != NULL && (err = ub_ctx_add_ta_file(ctx, anchor_file)) != 0) {
        set_why(out, "trust anchor %s: %s", anchor_file, ub_strerror(err));
        goto done;
    }
    /* libunbound answers names under test. itself with NXDOMAIN, as a caching
     * resolver should (RFC 6761 6.2, item 4); a resolution library should not treat
     * them as special (items 2 and 3), and this one only asks a resolver: it decides. */
    if ((err = ub_ctx_zone_add(ctx, "test.", "transparent")) != 0) {
        set_why(out, "libunbound local zone test.: %s", ub_strerror(err));
        goto done;
    }

    /* MX */
    if ((r = query(ctx, out->next_hop, RR_MX, "MX", out)) == NULL)
        goto done;
    if (note_security(r, "MX", out->next_hop, &all_secure, out)) {
        rc = 0;
        goto done;
    }
    if (r->rcode == RCODE_NXDOMAIN) {
        set_why(out, "%s does not exist (NXDOMAIN)", out->next_hop);
        goto done;
    }
    if (r->rcode != 0) {
        set_why(out, "MX lookup for %s: %s", out->next_hop, rcode_name(r->rcode));
        goto done;
    }
    if (r->havedata) {
        if (choose_mx(r, out) != 0)
            goto done;
    } else {
        memcpy(out->mx_host, out->next_hop, sizeof out->mx_host); /* RFC 5321 5.1 */
    }
    ub_resolve_free(r);

    /* A, following a CNAME chain (libunbound does; canonname is where it ended) */
    if ((r = query(ctx, out->mx_host, RR_A, "A", out)) == NULL)
        goto done;
    if (note_security(r, "A", out->mx_host, &all_secure, out)) {
        rc = 0;
        goto done;
    }
    if (r->rcode != 0 || !r->havedata || r->len[0] != 4) {
        set_why(out, "%s has no IPv4 address (%s)", out->mx_host,
                r->rcode != 0 ? rcode_name(r->rcode) : r->havedata ? "malformed A record" : "no A record");
        goto done;
    }
    if (inet_ntop(AF_INET, r->data[0], out->address, sizeof out->address) == NULL) {
        set_why(out, "%s: unprintable address", out->mx_host);
        goto done;
    }
    if (r->canonname == NULL || text_name(r->canonname, canon, sizeof canon) != 0 ||
        strcmp(canon, out->mx_host) == 0)
        canon[0] = '\0';
    ub_resolve_free(r);
    r = NULL;

    /* TLSA: only for a host whose MX and address RRsets are secure (RFC 7672 2.2) */
    if (!all_secure) {
        rc = 0;
        goto done;
    }
    if (canon[0] != '\0') /* a secure CNAME chain: its target first (RFC 7672 2.2.2) */
        t = lookup_tlsa(ctx, canon, port, &all_secure, out);
    if (t == 0 && out->ntlsa == 0)
        t = lookup_tlsa(ctx, out->mx_host, port, &all_secure, out);
    if (t < 0)
        goto done;
    rc = 0;

done:
    if (r != NULL)
        ub_resolve_free(r);
    ub_ctx_delete(ctx);
    if (rc == 0 && out->dnssec[0] != 'b')
        out->dnssec = all_secure ? "secure" : "insecure";
    return rc;
}

void dns_destination_free(struct dns_destination *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->ntlsa; i++)
        free(d->tlsa[i]);
    free(d->tlsa);
    memset(d, 0, sizeof *d);
    d->dnssec = "insecure";
}
