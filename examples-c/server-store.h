/*
 * What mailtls-server's mailbox dialogues (IMAP, POP3, NNTP, ManageSieve) share, in
 * server-store.c: the store of messages, articles or scripts loaded whole, one
 * connection's mailbox state, the account check and SASL PLAIN, the word and line
 * readers, and the command loop each dialogue runs with its own replies.
 *
 * Depends on server-conn.c (server.h) and common.c; server-imap.c, server-pop3.c,
 * server-nntp.c and server-sieve.c are built on it.
 */
#ifndef MAILTLS_EXAMPLES_SERVER_STORE_H
#define MAILTLS_EXAMPLES_SERVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "server.h"

#define LINE_MAX_IN 8192       /* longest command line accepted */

/* ---- the store: messages, articles or scripts, loaded whole (they are small) ---- */

struct item {
    char *name;      /* maildir file name, script name, or the article's group */
    char *path;      /* the file, or NULL for a built-in sample */
    char *data;      /* CRLF text */
    size_t len;
    size_t hdrlen;   /* bytes of the header including the empty line */
    unsigned num;    /* NNTP article number */
    char msgid[256]; /* NNTP Message-ID, with the angle brackets */
    time_t mtime;
    bool seen, deleted, active;
};

struct store {
    struct item *v;
    size_t n, cap;
    size_t bytes;
    bool loaded;
};

void store_free(struct store *st);
/* Adds an item whose text (any line ending) is kept as CRLF; `path` NULL for a
 * built-in sample. NULL when a limit or memory runs out. */
struct item *store_add(struct store *st, const char *name, const char *path, const char *text, size_t n);
/* Adds a regular file's text; NULL when it cannot be read (errno) or a limit is hit. */
struct item *store_add_file(struct store *st, const char *name, const char *path);
/* Sorts by name, then by article number. */
void store_sort(struct store *st);
/* The maildir's new/ and cur/ as one mailbox (IMAP and POP3). */
void load_maildir(struct conn *c, struct store *st);

/* ---- one connection's mailbox state ---- */

struct mbox {
    struct conn *c;
    struct store st;
    bool authed;
    bool selected;          /* IMAP: INBOX selected; NNTP: a group selected */
    char pop_user[128];     /* POP3: the name from USER */
    bool nntp_user_given;   /* NNTP: AUTHINFO USER came */
    char nntp_user[128];
    const char *group;      /* NNTP: the selected group (points into the store) */
    size_t cur;             /* NNTP: index of the current article, SIZE_MAX for none */
    unsigned auth_failures;
};

/* The one account (--user/--pass). */
bool account_ok(const char *user, const char *pass);
/* Records a login attempt; false (and the connection is to end) after too many failures. */
bool login_result(struct mbox *m, const char *user, bool ok);
/* SASL PLAIN (RFC 4616) in base64: false when malformed; else *ok and the user named. */
bool sasl_plain(const char *b64, size_t n, char *user, size_t ucap, bool *ok);
/* Reads one line; false at the end of the connection (why set). */
bool get_line(struct conn *c, char *line, size_t cap, size_t *len, enum end_reason *why, bool *toolong);
/* A multi-line body, dot-stuffed, ending in ".\r\n" (POP3 and NNTP). */
void reply_dotted(struct conn *c, const char *d, size_t n);
/* Case-insensitive wildcard match: `*` and `%` any run, `?` one character. */
bool wild(const char *pat, const char *s);
/* Skips spaces; then a quoted string or an atom. 1: a word; 0: nothing left; -1:
 * malformed or a literal (not supported). */
int next_word(const char **pp, char *out, size_t cap);

/* ---- the command loop ---- */

/* What one mailbox protocol brings to the loop. */
struct mailbox_dialogue {
    void (*greet)(struct mbox *m);
    /* One command line: 1 go on, 0 the session ended (QUIT, LOGOUT), -1 the
     * connection must end; *why set for 0 and -1. */
    int (*command)(struct mbox *m, char *line, enum end_reason *why);
    /* The protocol's replies for the loop's own refusals. */
    const char *too_many_errors, *idle, *bad_line, *refused;
};

/* Greets, then reads and checks commands (the library's STARTTLS rules first) and
 * hands each to the dialogue, until the connection is to end (*why set). */
void serve_mailbox(struct conn *c, const struct mailbox_dialogue *d, enum end_reason *why);

#endif /* MAILTLS_EXAMPLES_SERVER_STORE_H */
