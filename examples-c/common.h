/*
 * Helpers shared by the mailtls example programs: a growable byte buffer with JSON
 * string escaping, a buffered line reader over any byte source, the library log
 * callback, host:port parsing and a small SHA-256 (for certificate fingerprints).
 *
 * Only <mailtls.h> is used from the library; nothing here depends on its internals.
 */
#ifndef MAILTLS_EXAMPLES_COMMON_H
#define MAILTLS_EXAMPLES_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mailtls.h>

/* ---- growable buffer ---- */

struct sbuf {
    char *p;     /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
};

/* All return 0, or -1 when memory runs out (the buffer is then unchanged). */
int sb_append(struct sbuf *b, const void *data, size_t n);
int sb_puts(struct sbuf *b, const char *s);
int sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (RFC 8259), or `null` for NULL; invalid UTF-8 becomes U+FFFD. */
int sb_json_str(struct sbuf *b, const char *s);
void sb_free(struct sbuf *b);

/* ---- line reader ---- */

enum lr_status {
    LR_LINE = 0,   /* a complete line */
    LR_TOOLONG,    /* a line longer than the caller's limit: consumed and dropped */
    LR_EOF,        /* end of stream (a partial last line is dropped) */
    LR_TIMEOUT,    /* the source timed out */
    LR_ERROR,      /* the source failed */
};

/* Fills `buf` with up to `cap` bytes: returns LR_LINE (as "ok") with *got > 0,
 * or LR_EOF, LR_TIMEOUT, LR_ERROR. */
typedef int (*lr_fill_fn)(void *ud, uint8_t *buf, size_t cap, size_t *got);

#define LR_BUFSZ 16384

struct linereader {
    uint8_t buf[LR_BUFSZ];
    size_t start, end;
    lr_fill_fn fill;
    void *ud;
};

void lr_init(struct linereader *r, lr_fill_fn fill, void *ud);
/*
 * Reads one line terminated by LF. The line (without LF, and without the CR before
 * it) is copied to `out` (NUL-terminated; `*len` is authoritative, the line may hold
 * NULs). `*crlf` says whether the line ended in CRLF (false: a bare LF). A line whose
 * content does not fit in `cap - 1` bytes is consumed entirely and LR_TOOLONG returned.
 */
int lr_getline(struct linereader *r, char *out, size_t cap, size_t *len, bool *crlf);
/* The bytes already buffered after the last line returned. */
size_t lr_pending(const struct linereader *r, const uint8_t **p);
/* Forgets all buffered bytes. */
void lr_discard(struct linereader *r);

/* ---- misc ---- */

/* The mailtls log callback: `userdata` is the program name (a static string). */
void ex_log_cb(void *userdata, uint32_t level, const char *message);

/*
 * Splits "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 literal. `host`
 * gets the host without brackets; `*port` the port, or `default_port` when none.
 * Returns 0, or -1 with a message in `err`.
 */
int split_hostport(const char *arg, char *host, size_t hostcap, uint16_t default_port, uint16_t *port,
                   char *err, size_t errcap);

/* Lowercase hex SHA-256 (65 bytes with NUL) of the first certificate in a PEM text,
 * or -1 when there is none. */
int pem_cert_sha256_hex(const char *pem, char out[65]);

/* Whether `s` is non-empty printable ASCII without spaces, at most `max` bytes. */
bool printable_token(const char *s, size_t max);

/* Base64 (RFC 4648): decode returns 0 with *outlen, or -1 on a bad character, bad
 * padding or a full `out`; encode writes a NUL-terminated text and returns its length,
 * or -1 when `cap` is too small. */
int b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);
int b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/* ---- TLS-RPT records ---- */

/*
 * Writes one TLS-RPT record line (mailtls_report_tlsrpt_record) and a line end as a
 * new file in `dir`, the directory mailtls-tlsrpt(1) reads: the line goes to a
 * temporary ".tlsrpt-XXXXXX" (mkstemp, mode 0600; such names are never read as
 * records), is synced, then linked as "<unix time>-<pid>-<n>.tlsrpt", a name no
 * other process or call takes (link fails rather than replace a file; n counts
 * up then), so the reader sees the whole file or none. Returns 0, or -1 with errno.
 */
int tlsrpt_record_write(const char *dir, const char *line);

#endif /* MAILTLS_EXAMPLES_COMMON_H */
