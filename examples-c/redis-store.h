/*
 * An intolerance-memory store on Redis, for the mailtls store callbacks
 * (mailtls_memory_new_store): every process that names the same Redis and prefix,
 * on one host or many, shares one memory, so a peer's intolerance learnt by one MTA
 * saves the others their extra connection.
 *
 * It talks to Redis through hiredis (libhiredis-dev, link -lhiredis), over one
 * connection guarded by a mutex. The memory is advice: Redis being slow, down or
 * answering nonsense never fails or stalls a delivery for longer than the timeout.
 * A failed get is "no record", a failed put or delete is logged and dropped, and
 * after a failure no command is tried for a few seconds (then it reconnects).
 *
 * Keys are the prefix followed by the library's key text (`mailtls:smtp
 * mx.example.org 25`); values are the record's text fields, set with a TTL so that a
 * peer nobody contacts any more leaves Redis by itself.
 *
 * Two things the program must do: ignore SIGPIPE (hiredis writes to the socket with
 * write(2), and a Redis that went away would kill the process), and open the store
 * after any fork(), as one connection cannot serve two processes.
 */
#ifndef MAILTLS_EXAMPLES_REDIS_STORE_H
#define MAILTLS_EXAMPLES_REDIS_STORE_H

#include <stddef.h>

#include <mailtls.h>

/* The library's longest default lifetime (tolerance and pins: 60 days without a
 * refresh, src/recovery/memory/mod.rs Lifetimes); no fact of a record outlives it,
 * so neither need the key. Each put starts the TTL again. */
#define REDIS_STORE_DEFAULT_TTL_S (60u * 86400u)
/* Connect and command timeout: Redis is on the local network or the host, and every
 * session of the memory waits while a command is outstanding. */
#define REDIS_STORE_DEFAULT_TIMEOUT_MS 1000u
#define REDIS_STORE_DEFAULT_PREFIX "mailtls:"
#define REDIS_STORE_DEFAULT_PORT 6379

struct redis_store;

/*
 * A store for `spec`, `HOST[:PORT][/PREFIX]` (HOST may be `[IPv6]`; PORT 6379 by
 * default; PREFIX, taken verbatim and possibly empty, is `mailtls:` by default).
 * `ttl_s` and `timeout_ms` of 0 take the defaults above; `logname` (a string that
 * outlives the store) starts every log line on stderr. Nothing is connected yet: the
 * first command connects. Returns NULL with a message in `err` for a bad spec or
 * when memory runs out.
 */
struct redis_store *redis_store_new(const char *spec, unsigned ttl_s, unsigned timeout_ms, const char *logname,
                                    char *err, size_t errcap);

/*
 * A new memory on the store (mailtls_memory_new_store with this file's callbacks).
 * The store must outlive it: free the memory, and every config that holds it, first.
 */
mailtls_result redis_store_memory(struct redis_store *st, const mailtls_memory **out);

/* Closes the connection and frees the store. NULL is a no-op. */
void redis_store_free(struct redis_store *st);

#endif
