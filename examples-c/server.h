/*
 * mailtls-server's connection layer (server-conn.c), which every part of the server
 * uses: the options, one connection's state, the log, the reply queue and the two
 * ways TLS starts. It depends on common.c and legacy-tls.c only, never on a dialogue.
 *
 * The server's files, each using only the ones below it:
 *   mailtls-server.c  main: options, config, listener; serve() picks the dialogue
 *   server-smtp.c, server-imap.c, server-pop3.c, server-nntp.c, server-sieve.c
 *                     one dialogue each (their entries: server-dialogues.h); none
 *                     uses another; all but SMTP/LMTP are built on server-store.c
 *   server-store.c    what the mailbox dialogues share (server-store.h)
 *   server-conn.c     this header
 *   common.c, legacy-tls.c
 */
#ifndef MAILTLS_EXAMPLES_SERVER_H
#define MAILTLS_EXAMPLES_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define MAX_RCPTS 100

struct options {
    uint32_t proto;
    const char *listen;
    const char *cert, *key;
    bool no_tls, require_tls, json_log, once, verbose;
    bool implicit;        /* TLS from the first byte (RFC 8314) */
    const char *maildir;  /* SMTP/LMTP deliver into it; IMAP and POP3 serve it */
    const char *spool;    /* NNTP: one directory per group, one file per article */
    const char *scripts;  /* ManageSieve: NAME.sieve files, the active one named in .active */
    const char *user, *pass; /* the one account IMAP, POP3, NNTP and ManageSieve accept */
    const char *write_cert;
    const char *hostname;
    const char *memory;   /* server-side memory file */
    const char *ticket_keys; /* session ticket key file, shared with other servers */
    bool legacy_handoff;  /* old hellos to OpenSSL instead of refusing them */
    unsigned timeout;     /* idle timeout, seconds */
    size_t max_size;
};

extern const char *const prog;  /* "mailtls-server", in every log line */
extern struct options opt;
extern char hostname[256];
/* The OpenSSL context hellos are handed off to (--legacy-hello handoff), or NULL. */
extern struct legacy_ctx *handoff_engine;

struct txn {
    bool active;
    char *from;
    char *rcpt[MAX_RCPTS];
    size_t nrcpt;
};

enum end_reason { END_QUIT, END_EOF, END_TIMEOUT, END_ERROR, END_TOO_MANY_ERRORS, END_TLS_FAILED };
/* Their names in the logs ("quit", "eof" ...), indexed by the enum. */
extern const char *const end_names[];

struct conn {
    int fd;
    mailtls_session *s;
    struct legacy_conn *legacy; /* a handed-off session on OpenSSL */
    char lver[16], lcipher[64];  /* what OpenSSL negotiated */
    const char *peer;    /* "ip:port" */
    char ip[64];
    bool tls;
    bool have_helo, esmtp; /* SMTP/LMTP: the hello and the transaction */
    char helo[256];
    struct txn t;
    struct linereader lr;
    unsigned messages;   /* SMTP: messages accepted; the others: messages or articles read */
    unsigned errors;
    char user[128];      /* who logged in (the mailbox protocols) */
    struct sbuf out;     /* replies not written yet (flushed before every blocking read) */
    bool dead;           /* the transport failed: no more replies */
    char err[512];
    uint64_t discarded;  /* bytes we dropped after STARTTLS when the library did not count them */
};

void logmsg(const char *peer, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queues one reply line (CRLF added; at most 1000 bytes). */
void reply(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queues a ready-made line from the library (its CRLF replaced by ours). */
void reply_raw(struct conn *c, const char *line);
/* Queues bytes as they are (a message body, a literal). */
void reply_bytes(struct conn *c, const void *p, size_t n);
/* Writes the queue out through the session (plaintext or TLS). */
void flush(struct conn *c);
/* Writes all of it to a file descriptor (not through the session): 0, or -1 with errno. */
int write_all(int fd, const void *p, size_t n);

/* A connection on an accepted socket, its reader on the plaintext socket; c->s is
 * still to be set. NULL when memory runs out. */
struct conn *conn_new(int fd, const char *peer);

/*
 * The STARTTLS step of every protocol, after the verb was accepted: the library sends
 * the go (or the refusal), never executes what the client pipelined after it and runs
 * the handshake. Returns 1 when TLS is on (the reader now reads through TLS), 0 when it
 * was refused and the plaintext dialogue goes on, -1 when the connection must end
 * (*why set).
 */
int start_tls(struct conn *c, enum end_reason *why);
/* Implicit TLS (--implicit): the handshake before the greeting, with the handoff of
 * an old hello. 1 when TLS is on, -1 when the connection must end (*why set). */
int start_implicit(struct conn *c, enum end_reason *why);

#endif /* MAILTLS_EXAMPLES_SERVER_H */
