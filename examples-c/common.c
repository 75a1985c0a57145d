/* Helpers shared by the mailtls example programs (see common.h). */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- growable buffer ---- */

static int sb_reserve(struct sbuf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len - 1)
        return -1;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int sb_append(struct sbuf *b, const void *data, size_t n)
{
    if (sb_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int sb_puts(struct sbuf *b, const char *s)
{
    return sb_append(b, s, strlen(s));
}

int sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sb_reserve(b, (size_t)n) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* Length of the valid UTF-8 sequence at `s` (1..4), or 0 when it is not valid. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

int sb_json_str(struct sbuf *b, const char *s)
{
    if (!s)
        return sb_puts(b, "null");
    struct sbuf o = {0};
    int rc = sb_append(&o, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    while (rc == 0 && *p) {
        unsigned c = *p;
        if (c == '"') {
            rc = sb_puts(&o, "\\\"");
            p++;
        } else if (c == '\\') {
            rc = sb_puts(&o, "\\\\");
            p++;
        } else if (c == '\n') {
            rc = sb_puts(&o, "\\n");
            p++;
        } else if (c == '\r') {
            rc = sb_puts(&o, "\\r");
            p++;
        } else if (c == '\t') {
            rc = sb_puts(&o, "\\t");
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            rc = sb_printf(&o, "\\u%04x", c);
            p++;
        } else {
            size_t n = utf8_seq(p);
            if (n == 0) {
                rc = sb_puts(&o, "\\ufffd");
                p++;
            } else {
                rc = sb_append(&o, p, n);
                p += n;
            }
        }
    }
    if (rc == 0)
        rc = sb_append(&o, "\"", 1);
    if (rc == 0)
        rc = sb_append(b, o.p, o.len);
    sb_free(&o);
    return rc;
}

void sb_free(struct sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- line reader ---- */

void lr_init(struct linereader *r, lr_fill_fn fill, void *ud)
{
    r->start = r->end = 0;
    r->fill = fill;
    r->ud = ud;
}

int lr_getline(struct linereader *r, char *out, size_t cap, size_t *len, bool *crlf)
{
    size_t n = 0;          /* bytes of this line seen so far (copied or not) */
    bool toolong = false;
    bool last_cr = false;  /* the byte before the current one was CR */
    *len = 0;
    *crlf = false;
    if (cap == 0)
        return LR_ERROR;
    for (;;) {
        while (r->start < r->end) {
            uint8_t c = r->buf[r->start++];
            if (c == '\n') {
                if (toolong) {
                    *crlf = last_cr;
                    out[0] = '\0';
                    *len = 0;
                    return LR_TOOLONG;
                }
                if (last_cr) {
                    n--; /* drop the CR */
                    *crlf = true;
                }
                out[n] = '\0';
                *len = n;
                return LR_LINE;
            }
            last_cr = (c == '\r');
            if (!toolong) {
                if (n + 1 >= cap) {
                    /* Allow the one CR that may end a line of exactly cap-1 bytes. */
                    if (n + 1 == cap && c == '\r') {
                        out[n++] = (char)c; /* out has room: index cap-1, the NUL slot */
                        continue;
                    }
                    toolong = true;
                } else {
                    out[n++] = (char)c;
                }
            }
        }
        r->start = r->end = 0;
        size_t got = 0;
        int st = r->fill(r->ud, r->buf, sizeof r->buf, &got);
        if (st != LR_LINE)
            return st;
        if (got == 0)
            return LR_EOF;
        r->end = got;
    }
}

size_t lr_pending(const struct linereader *r, const uint8_t **p)
{
    *p = r->buf + r->start;
    return r->end - r->start;
}

void lr_discard(struct linereader *r)
{
    r->start = r->end = 0;
}

/* ---- misc ---- */

void ex_log_cb(void *userdata, uint32_t level, const char *message)
{
    const char *name;
    switch (level) {
    case MAILTLS_LOG_LEVEL_ERROR: name = "error"; break;
    case MAILTLS_LOG_LEVEL_WARN: name = "warn"; break;
    case MAILTLS_LOG_LEVEL_INFO: name = "info"; break;
    case MAILTLS_LOG_LEVEL_DEBUG: name = "debug"; break;
    default: name = "?"; break;
    }
    fprintf(stderr, "%s: [mailtls %s] %s\n", userdata ? (const char *)userdata : "mailtls", name,
            message ? message : "");
}

static int parse_port(const char *s, uint16_t *port)
{
    if (!*s)
        return -1;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return -1;
    }
    *port = (uint16_t)v;
    return 0;
}

int split_hostport(const char *arg, char *host, size_t hostcap, uint16_t default_port, uint16_t *port,
                   char *err, size_t errcap)
{
    const char *h = arg, *hend, *ps = NULL;
    if (arg[0] == '[') {
        h = arg + 1;
        hend = strchr(h, ']');
        if (!hend) {
            snprintf(err, errcap, "%s: missing ']'", arg);
            return -1;
        }
        if (hend[1] == ':')
            ps = hend + 2;
        else if (hend[1] != '\0') {
            snprintf(err, errcap, "%s: junk after ']'", arg);
            return -1;
        }
    } else {
        const char *c = strchr(arg, ':');
        if (c && strchr(c + 1, ':')) {
            hend = arg + strlen(arg); /* a bare IPv6 literal */
        } else if (c) {
            hend = c;
            ps = c + 1;
        } else {
            hend = arg + strlen(arg);
        }
    }
    size_t hl = (size_t)(hend - h);
    if (hl == 0 || hl >= hostcap) {
        snprintf(err, errcap, "%s: bad host", arg);
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = default_port;
    if (ps && parse_port(ps, port) < 0) {
        snprintf(err, errcap, "%s: bad port", arg);
        return -1;
    }
    return 0;
}

bool printable_token(const char *s, size_t max)
{
    size_t n = 0;
    if (!*s)
        return false;
    for (; *s; s++, n++) {
        if (n >= max || *s <= ' ' || *s == 0x7f || (unsigned char)*s >= 0x80)
            return false;
    }
    return true;
}

/* ---- SHA-256 (FIPS 180-4), for certificate fingerprints ---- */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256(const uint8_t *data, size_t len, uint8_t out[32])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t i = 0;
    for (; i + 64 <= len; i += 64)
        sha256_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t rest = len - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t tl = rest + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int k = 0; k < 8; k++)
        tail[tl - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha256_block(h, tail);
    if (tl == 128)
        sha256_block(h, tail + 64);
    for (int k = 0; k < 8; k++) {
        out[4 * k] = (uint8_t)(h[k] >> 24);
        out[4 * k + 1] = (uint8_t)(h[k] >> 16);
        out[4 * k + 2] = (uint8_t)(h[k] >> 8);
        out[4 * k + 3] = (uint8_t)h[k];
    }
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int pem_cert_sha256_hex(const char *pem, char out[65])
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    const char *p = strstr(pem, begin);
    if (!p)
        return -1;
    p += sizeof begin - 1;
    const char *e = strstr(p, "-----END CERTIFICATE-----");
    if (!e)
        return -1;
    uint8_t *der = malloc((size_t)(e - p));
    if (!der)
        return -1;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; p < e; p++) {
        int v = b64val((unsigned char)*p);
        if (v < 0)
            continue; /* whitespace and '=' padding */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            der[n++] = (uint8_t)(acc >> bits);
        }
    }
    uint8_t md[32];
    sha256(der, n, md);
    free(der);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return n ? 0 : -1;
}

int b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    size_t o = 0, pad = 0, digits = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '=') {
            pad++;
            continue;
        }
        int v = b64val(ch);
        if (v < 0 || pad)
            return -1; /* a stray character, or data after the padding */
        digits++;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if ((digits + pad) % 4 != 0 || pad > 2)
        return -1;
    *outlen = o;
    return 0;
}

int b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t need = (n + 2) / 3 * 4 + 1;
    if (cap < need)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
    return (int)o;
}

/* ---- TLS-RPT records ---- */

int tlsrpt_record_write(const char *dir, const char *line)
{
    static unsigned long n; /* per process; the pid tells processes apart */
    char tmp[4096], name[4096];
    if (!dir || !line || snprintf(tmp, sizeof tmp, "%s/.tlsrpt-XXXXXX", dir) >= (int)sizeof tmp) {
        errno = EINVAL;
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0)
        return -1;
    size_t len = strlen(line);
    int err = 0;
    const char *p = line;
    for (size_t left = len + 1; left > 0 && !err;) {
        /* The line, then its line end. */
        ssize_t w = left > 1 ? write(fd, p, left - 1) : write(fd, "\n", 1);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            err = w < 0 ? errno : EIO;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (!err && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    for (int tries = 0; !err; tries++) {
        snprintf(name, sizeof name, "%s/%lld-%ld-%lu.tlsrpt", dir, (long long)time(NULL), (long)getpid(), n++);
        if (link(tmp, name) == 0)
            break;
        if (errno != EEXIST || tries >= 100)
            err = errno;
    }
    unlink(tmp);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}
