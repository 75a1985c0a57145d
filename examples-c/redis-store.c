/*
 * The intolerance memory on Redis: mailtls's three store callbacks (get, put, delete)
 * over one hiredis connection. See redis-store.h for what it promises.
 *
 * Why Redis and hiredis: the point is a memory that several hosts' MTAs share, and a
 * store that machines already run for that (replicated, with per-key expiry) beats
 * any distributed store of our own; hiredis is Redis's own C client, packaged by
 * Debian, small and synchronous, which is what callbacks that must answer before
 * they return need.
 */
#include "redis-store.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "common.h"

/* After a failure no command is tried for this long: with Redis down or black-holed,
 * every get would otherwise cost a connect timeout, and a negotiation makes several.
 * It also keeps a put from following a get that failed: the library takes a failed
 * get for "no record", and writing what it then learnt over a record it could not
 * read would lose that record's pin. */
#define RETRY_AFTER_MS 5000u

struct redis_store {
    pthread_mutex_t lock;   /* guards everything below: the callbacks come from any thread */
    redisContext *ctx;      /* NULL when not connected */
    char host[256];
    uint16_t port;
    char *prefix;
    size_t prefixlen;
    unsigned ttl_s;
    struct timeval tv;      /* connect and command timeout */
    const char *logname;
    bool down;              /* the last command failed: logged once, until Redis answers */
    uint64_t retry_at_ms;   /* while down: no command before this (monotonic clock) */
    char why[160];          /* what the last failure was, for the put and delete logs */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct redis_store *redis_store_new(const char *spec, unsigned ttl_s, unsigned timeout_ms, const char *logname,
                                    char *err, size_t errcap)
{
    /* HOST[:PORT] ends at the first '/': no host name or address holds one. */
    const char *slash = strchr(spec, '/');
    size_t hplen = slash ? (size_t)(slash - spec) : strlen(spec);
    char hostport[300];
    if (hplen == 0 || hplen >= sizeof hostport) {
        snprintf(err, errcap, "\"%s\": HOST[:PORT][/PREFIX] expected", spec);
        return NULL;
    }
    memcpy(hostport, spec, hplen);
    hostport[hplen] = '\0';

    struct redis_store *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    if (split_hostport(hostport, st->host, sizeof st->host, REDIS_STORE_DEFAULT_PORT, &st->port, err, errcap) < 0) {
        free(st);
        return NULL;
    }
    if (st->port == 0) {
        snprintf(err, errcap, "\"%s\": port 0", spec);
        free(st);
        return NULL;
    }
    st->prefix = strdup(slash ? slash + 1 : REDIS_STORE_DEFAULT_PREFIX);
    if (!st->prefix || pthread_mutex_init(&st->lock, NULL) != 0) {
        snprintf(err, errcap, "out of memory");
        free(st->prefix);
        free(st);
        return NULL;
    }
    st->prefixlen = strlen(st->prefix);
    st->ttl_s = ttl_s ? ttl_s : REDIS_STORE_DEFAULT_TTL_S;
    if (!timeout_ms)
        timeout_ms = REDIS_STORE_DEFAULT_TIMEOUT_MS;
    st->tv.tv_sec = (time_t)(timeout_ms / 1000u);
    st->tv.tv_usec = (suseconds_t)(timeout_ms % 1000u) * 1000;
    st->logname = logname ? logname : "redis-store";
    return st;
}

void redis_store_free(struct redis_store *st)
{
    if (!st)
        return;
    if (st->ctx)
        redisFree(st->ctx);
    pthread_mutex_destroy(&st->lock);
    free(st->prefix);
    free(st);
}

/* Called with the lock held. */
static int store_connect(struct redis_store *st)
{
    redisContext *c = redisConnectWithTimeout(st->host, st->port, st->tv);
    if (!c) {
        snprintf(st->why, sizeof st->why, "out of memory");
        return -1;
    }
    /* The connect timeout does not cover replies: without SO_RCVTIMEO a stopped
     * Redis that still accepts connections would hang every session. Keepalive
     * finds a peer that vanished while the connection sat idle between deliveries. */
    if (c->err || redisSetTimeout(c, st->tv) != REDIS_OK || redisEnableKeepAlive(c) != REDIS_OK) {
        snprintf(st->why, sizeof st->why, "%s", c->errstr[0] ? c->errstr : "connect failed");
        redisFree(c);
        return -1;
    }
    st->ctx = c;
    return 0;
}

static void mark_down(struct redis_store *st)
{
    st->retry_at_ms = now_ms() + RETRY_AFTER_MS;
    if (!st->down)
        fprintf(stderr, "%s: memory-redis %s:%u unavailable (%s): no advice and nothing kept until it answers\n",
                st->logname, st->host, st->port, st->why);
    st->down = true;
}

/*
 * One command, with the lock held: a reply (the caller frees it), or NULL when Redis
 * cannot be had (st->why says why). A reused connection that turns out closed (Redis
 * restarted, or dropped an idle client) gets one new connection at once; a timeout
 * does not, as that would double the wait.
 */
static redisReply *command(struct redis_store *st, int argc, const char **argv, const size_t *lens)
{
    if (st->down && !st->ctx && now_ms() < st->retry_at_ms)
        return NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh = false;
        if (!st->ctx) {
            if (store_connect(st) < 0)
                break;
            fresh = true;
        }
        redisReply *r = redisCommandArgv(st->ctx, argc, argv, lens);
        if (r) {
            if (st->down)
                fprintf(stderr, "%s: memory-redis %s:%u answers again\n", st->logname, st->host, st->port);
            st->down = false;
            return r;
        }
        /* hiredis leaves a context that failed unusable (a late reply would be taken
         * for the next command's): drop it. */
        int e = errno, kind = st->ctx->err;
        bool timeout = kind == REDIS_ERR_IO && (e == EAGAIN || e == EWOULDBLOCK);
#ifdef REDIS_ERR_TIMEOUT /* hiredis >= 1.1 names it */
        timeout = timeout || kind == REDIS_ERR_TIMEOUT;
#endif
        if (timeout) /* hiredis says "Resource temporarily unavailable" */
            snprintf(st->why, sizeof st->why, "no reply within %ld ms",
                     (long)st->tv.tv_sec * 1000 + (long)st->tv.tv_usec / 1000);
        else
            snprintf(st->why, sizeof st->why, "%s", st->ctx->errstr[0] ? st->ctx->errstr : "no reply");
        redisFree(st->ctx);
        st->ctx = NULL;
        if (fresh || timeout || (kind != REDIS_ERR_EOF && kind != REDIS_ERR_IO))
            break;
    }
    mark_down(st);
    return NULL;
}

/* The Redis key: prefix + the library's key text. NULL when memory runs out. */
static char *full_key(const struct redis_store *st, const char *key, size_t *len)
{
    size_t kl = strlen(key);
    char *k = malloc(st->prefixlen + kl + 1);
    if (!k)
        return NULL;
    memcpy(k, st->prefix, st->prefixlen);
    memcpy(k + st->prefixlen, key, kl + 1);
    *len = st->prefixlen + kl;
    return k;
}

/*
 * get: the value when it is a string that fits, with its NUL, in the library's
 * buffer; ERANGE when it does not (the library asks again with a larger buffer: never
 * hand a value over cut short, which could turn it into a different, valid-looking
 * record). A key that holds no record (a NUL byte inside, another Redis type) is
 * none ("" returned), so the next change replaces it. Redis unreachable or failing:
 * EIO, which the library reports and which keeps it from writing over a record it
 * could not read.
 */
static int32_t store_get(void *ud, const char *key, char *buf, uintptr_t len)
{
    struct redis_store *st = ud;
    size_t klen;
    char *k = full_key(st, key, &klen);
    if (!k)
        return ENOMEM;
    const char *argv[] = {"GET", k};
    const size_t lens[] = {3, klen};
    pthread_mutex_lock(&st->lock);
    redisReply *r = command(st, 2, argv, lens);
    pthread_mutex_unlock(&st->lock);
    int32_t rc;
    if (!r) {
        rc = EIO; /* the outage is logged once, by command() */
    } else if (r->type == REDIS_REPLY_NIL) {
        rc = ENOENT;
    } else if (r->type == REDIS_REPLY_STRING) {
        if (r->len >= len) {
            rc = ERANGE;
        } else if (memchr(r->str, '\0', r->len)) {
            fprintf(stderr, "%s: memory-redis: %s holds a NUL byte, not a record: ignored\n", st->logname, k);
            buf[0] = '\0';
            rc = 0;
        } else {
            memcpy(buf, r->str, r->len);
            buf[r->len] = '\0';
            rc = 0;
        }
    } else if (r->type == REDIS_REPLY_ERROR && r->len >= 9 && memcmp(r->str, "WRONGTYPE", 9) == 0) {
        fprintf(stderr, "%s: memory-redis: GET %s: %.*s: not a record\n", st->logname, k, (int)r->len, r->str);
        buf[0] = '\0';
        rc = 0;
    } else if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "%s: memory-redis: GET %s: %.*s\n", st->logname, k, (int)r->len, r->str);
        rc = EIO;
    } else {
        fprintf(stderr, "%s: memory-redis: GET %s: unexpected reply type %d\n", st->logname, k, r->type);
        rc = EPROTO;
    }
    if (r)
        freeReplyObject(r);
    free(k);
    return rc;
}

/* Logs why a put or delete did not happen; returns the errno for the library. */
static int32_t not_done(struct redis_store *st, const char *what, const char *k, const redisReply *r)
{
    if (!r)
        fprintf(stderr, "%s: memory-redis: %s %s not done: %s\n", st->logname, what, k, st->why);
    else if (r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "%s: memory-redis: %s %s: %.*s\n", st->logname, what, k, (int)r->len, r->str);
    else
        fprintf(stderr, "%s: memory-redis: %s %s: unexpected reply type %d\n", st->logname, what, k, r->type);
    return r ? EPROTO : EIO;
}

/* put: SET with EX, so a peer nobody contacts again leaves Redis when its facts
 * would have expired anyway. */
static int32_t store_put(void *ud, const char *key, const char *value)
{
    struct redis_store *st = ud;
    size_t klen;
    char *k = full_key(st, key, &klen);
    if (!k) {
        fprintf(stderr, "%s: memory-redis: out of memory\n", st->logname);
        return ENOMEM;
    }
    char ttl[24];
    int tl = snprintf(ttl, sizeof ttl, "%u", st->ttl_s);
    const char *argv[] = {"SET", k, value, "EX", ttl};
    const size_t lens[] = {3, klen, strlen(value), 2, (size_t)tl};
    pthread_mutex_lock(&st->lock);
    redisReply *r = command(st, 5, argv, lens);
    int32_t rc = 0;
    if (!r || r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0)
        rc = not_done(st, "SET", k, r);
    pthread_mutex_unlock(&st->lock); /* after the log: st->why is read under the lock */
    if (r)
        freeReplyObject(r);
    free(k);
    return rc;
}

static int32_t store_delete(void *ud, const char *key)
{
    struct redis_store *st = ud;
    size_t klen;
    char *k = full_key(st, key, &klen);
    if (!k) {
        fprintf(stderr, "%s: memory-redis: out of memory\n", st->logname);
        return ENOMEM;
    }
    const char *argv[] = {"DEL", k};
    const size_t lens[] = {3, klen};
    pthread_mutex_lock(&st->lock);
    redisReply *r = command(st, 2, argv, lens);
    int32_t rc = 0;
    if (!r || r->type != REDIS_REPLY_INTEGER) /* 0 or 1 keys removed: both are done */
        rc = not_done(st, "DEL", k, r);
    pthread_mutex_unlock(&st->lock);
    if (r)
        freeReplyObject(r);
    free(k);
    return rc;
}

mailtls_result redis_store_memory(struct redis_store *st, const mailtls_memory **out)
{
    return mailtls_memory_new_store(store_get, store_put, store_delete, st, out);
}
