/* The legacy TLS engine of mailtls-server: the system OpenSSL, for the client hellos
 * that rustls does not serve (SSLv2-compatible, SSL 3.0, TLS 1.0 and 1.1), reached
 * through the library's handoff. Linked by the example only, never by the library. */
#ifndef MAILTLS_EXAMPLE_LEGACY_TLS_H
#define MAILTLS_EXAMPLE_LEGACY_TLS_H

#include <stddef.h>
#include <stdint.h>

struct legacy_ctx;
struct legacy_conn;

/* An OpenSSL server context with this certificate chain and key (PEM files), every
 * protocol version OpenSSL still has, at security level 0. NULL on error (err says). */
struct legacy_ctx *legacy_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errcap);
void legacy_ctx_free(struct legacy_ctx *x);
/* "OpenSSL 3.0.x ..." */
const char *legacy_engine_name(void);

/* Runs the server handshake on fd, first feeding OpenSSL the bytes of the client's
 * hello that the library already read (`pre`). timeout_s bounds each wait. NULL on
 * error (err says). */
struct legacy_conn *legacy_accept(struct legacy_ctx *x, int fd, const uint8_t *pre, size_t npre, unsigned timeout_s,
                                  char *err, size_t errcap);
/* 0 and *got (0 at a clean close), or -1 (err says; timeouts included). */
int legacy_read(struct legacy_conn *c, uint8_t *buf, size_t cap, size_t *got, char *err, size_t errcap);
int legacy_write(struct legacy_conn *c, const uint8_t *buf, size_t n, char *err, size_t errcap);
const char *legacy_version(const struct legacy_conn *c); /* "TLSv1", "TLSv1.1", ... */
const char *legacy_cipher(const struct legacy_conn *c);
/* Sends close_notify and frees. */
void legacy_close(struct legacy_conn *c);

#endif
