/*
 * What mailtls-server's IMAP, POP3, NNTP and ManageSieve dialogues share: the store
 * loaded whole (and the maildir that IMAP and POP3 serve), the account check, SASL
 * PLAIN, the readers of lines and words, dot-stuffed bodies, and the command loop.
 *
 * The library is called where the STARTTLS rules live: mailtls_server_check_command()
 * before every command, here in the loop (it refuses credentials before TLS under
 * --require-tls, a second STARTTLS, STARTTLS after login), and
 * mailtls_server_note_authenticated() after a login. The dialogues add
 * mailtls_server_offer_starttls() and mailtls_server_auth_allowed() for what their
 * capability lists advertise, and start_tls() (mailtls_server_starttls) for the go and
 * the handshake.
 *
 * Limits of the example: one account (--user/--pass), SASL PLAIN only, no client
 * literals (IMAP and ManageSieve commands must use quoted strings).
 *
 * Depends on server-conn.c (server.h), common.c and the library; knows no dialogue:
 * each brings its greeting, command function and replies in a struct mailbox_dialogue.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server-store.h"
#include "server.h"

#define MAX_ERRORS 20          /* bad commands before the connection is closed */
#define MAX_AUTH_FAILURES 3    /* failed logins before the connection is closed */
#define MAX_ITEMS 10000        /* messages, articles or scripts loaded */
#define MAX_STORE (64u << 20)  /* bytes loaded */

/* ---- the store ---- */

void store_free(struct store *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->v[i].name);
        free(st->v[i].path);
        free(st->v[i].data);
    }
    free(st->v);
    memset(st, 0, sizeof *st);
}

/* Text with any line ending (CRLF, LF) as CRLF, ending in CRLF. */
static int to_crlf(const char *in, size_t n, char **out, size_t *outlen)
{
    struct sbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')) {
            if (sb_append(&b, "\r\n", 2) < 0)
                goto oom;
        } else if (sb_append(&b, &in[i], 1) < 0) {
            goto oom;
        }
    }
    if ((b.len == 0 || b.p[b.len - 1] != '\n') && sb_append(&b, "\r\n", 2) < 0)
        goto oom;
    *out = b.p;
    *outlen = b.len;
    return 0;
oom:
    sb_free(&b);
    return -1;
}

static size_t header_length(const char *d, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (d[i] == '\r' && d[i + 1] == '\n' && (i == 0 || (i >= 2 && d[i - 2] == '\r' && d[i - 1] == '\n')))
            return i + 2;
    return n; /* no empty line: all header */
}

struct item *store_add(struct store *st, const char *name, const char *path, const char *text, size_t n)
{
    if (st->n >= MAX_ITEMS || st->bytes + n > MAX_STORE)
        return NULL;
    if (st->n == st->cap) {
        size_t nc = st->cap ? st->cap * 2 : 16;
        struct item *v = realloc(st->v, nc * sizeof *v);
        if (!v)
            return NULL;
        st->v = v;
        st->cap = nc;
    }
    struct item *it = &st->v[st->n];
    memset(it, 0, sizeof *it);
    it->name = strdup(name);
    it->path = path ? strdup(path) : NULL;
    if (!it->name || (path && !it->path) || to_crlf(text, n, &it->data, &it->len) < 0) {
        free(it->name);
        free(it->path);
        return NULL;
    }
    it->hdrlen = header_length(it->data, it->len);
    it->mtime = time(NULL);
    st->bytes += it->len;
    st->n++;
    return it;
}

struct item *store_add_file(struct store *st, const char *name, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat sb;
    struct sbuf raw = {0};
    struct item *it = NULL;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (size_t)sb.st_size <= MAX_STORE) {
        char buf[65536];
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0)
            if (sb_append(&raw, buf, (size_t)r) < 0)
                break;
        if (r == 0) {
            it = store_add(st, name, path, raw.p ? raw.p : "", raw.len);
            if (it)
                it->mtime = sb.st_mtime;
        }
    }
    sb_free(&raw);
    close(fd);
    return it;
}

static int by_name(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->num > y->num) - (x->num < y->num);
}

void store_sort(struct store *st)
{
    qsort(st->v, st->n, sizeof *st->v, by_name);
}

/* The maildir's new/ and cur/ as one mailbox, oldest first (maildir names start with
 * the delivery time). A message in cur/ with S among its flags is \Seen. */
void load_maildir(struct conn *c, struct store *st)
{
    store_free(st);
    st->loaded = true;
    if (!opt.maildir)
        return;
    static const char *const sub[] = {"new", "cur"};
    for (int k = 0; k < 2; k++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/%s", opt.maildir, sub[k]);
        DIR *d = opendir(dir);
        if (!d) {
            logmsg(c->peer, "maildir %s: %s", dir, strerror(errno));
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[8192];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct item *it = store_add_file(st, e->d_name, path);
            if (!it) {
                logmsg(c->peer, "maildir %s: not loaded (%s)", path,
                       st->n >= MAX_ITEMS || st->bytes >= MAX_STORE ? "store limit" : strerror(errno));
                continue;
            }
            const char *info = strstr(it->name, ":2,");
            it->seen = k == 1 && info && strchr(info + 3, 'S');
        }
        closedir(d);
    }
    store_sort(st);
}

/* ---- shared pieces ---- */

/* The one account; the comparison takes the same time wherever the strings differ. */
bool account_ok(const char *user, const char *pass)
{
    if (!opt.user)
        return false;
    size_t ul = strlen(user), pl = strlen(pass), eu = strlen(opt.user), ep = strlen(opt.pass);
    unsigned diff = (unsigned)(ul != eu) | (unsigned)(pl != ep);
    for (size_t i = 0; i < ul && i < eu; i++)
        diff |= (unsigned)(user[i] ^ opt.user[i]);
    for (size_t i = 0; i < pl && i < ep; i++)
        diff |= (unsigned)(pass[i] ^ opt.pass[i]);
    return diff == 0;
}

/* Records a login attempt; false (and the connection is to end) after too many failures. */
bool login_result(struct mbox *m, const char *user, bool ok)
{
    struct conn *c = m->c;
    if (ok) {
        m->authed = true;
        snprintf(c->user, sizeof c->user, "%s", user);
        mailtls_server_note_authenticated(c->s);
        logmsg(c->peer, "login %s (%s)", user, c->tls ? "TLS" : "plaintext");
        return true;
    }
    m->auth_failures++;
    logmsg(c->peer, "login failed for \"%.64s\"%s", user, opt.user ? "" : " (no --user: no account)");
    return m->auth_failures < MAX_AUTH_FAILURES;
}

/* SASL PLAIN (RFC 4616): authzid NUL authcid NUL passwd, in base64. */
bool sasl_plain(const char *b64, size_t n, char *user, size_t ucap, bool *ok)
{
    uint8_t raw[1024];
    size_t len;
    *ok = false;
    user[0] = '\0';
    if (b64_decode(b64, n, raw, sizeof raw - 1, &len) < 0)
        return false;
    raw[len] = 0;
    const uint8_t *z1 = memchr(raw, 0, len);
    const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, len - (size_t)(z1 + 1 - raw)) : NULL;
    if (!z1 || !z2)
        return false;
    const char *authz = (const char *)raw, *authc = (const char *)z1 + 1, *pass = (const char *)z2 + 1;
    snprintf(user, ucap, "%s", authc);
    *ok = (*authz == '\0' || strcmp(authz, authc) == 0) && account_ok(authc, pass);
    return true;
}

/* Reads one line; false at the end of the connection (why set). */
bool get_line(struct conn *c, char *line, size_t cap, size_t *len, enum end_reason *why, bool *toolong)
{
    bool crlf;
    *toolong = false;
    int st = lr_getline(&c->lr, line, cap, len, &crlf);
    switch (st) {
    case LR_LINE:
        if (opt.verbose)
            logmsg(c->peer, "C: %.*s", (int)*len, line);
        return true;
    case LR_TOOLONG:
        *toolong = true;
        return true;
    case LR_EOF: *why = END_EOF; return false;
    case LR_TIMEOUT: *why = END_TIMEOUT; return false;
    default: *why = END_ERROR; return false;
    }
}

/* A multi-line body, dot-stuffed, ending in ".\r\n" (POP3 and NNTP). */
void reply_dotted(struct conn *c, const char *d, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const char *eol = memchr(d + i, '\n', n - i);
        size_t ll = eol ? (size_t)(eol - (d + i)) + 1 : n - i;
        if (d[i] == '.')
            reply_bytes(c, ".", 1);
        reply_bytes(c, d + i, ll);
        i += ll;
    }
    reply_bytes(c, ".\r\n", 3);
}

/* Case-insensitive wildcard match: `*` (and IMAP's `%`: our only mailbox name, INBOX,
 * has no hierarchy) any run, `?` one character. Linear backtracking over the last
 * star, so no pattern makes it slow (O(pattern x name)). */
bool wild(const char *pat, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '*' || *pat == '%') {
            star = pat++;
            resume = s;
        } else if (*pat && (*pat == '?' || tolower((unsigned char)*pat) == tolower((unsigned char)*s))) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pat == '*' || *pat == '%')
        pat++;
    return *pat == '\0';
}

/* Skips spaces; then a quoted string ("..." with \\ and \" escapes) or an atom (up to a
 * space). 1: a word; 0: nothing left; -1: malformed or a literal (not supported). */
int next_word(const char **pp, char *out, size_t cap)
{
    const char *p = *pp;
    while (*p == ' ')
        p++;
    if (!*p) {
        *pp = p;
        return 0;
    }
    size_t o = 0;
    if (*p == '"') {
        for (p++; *p != '"'; p++) {
            if (!*p)
                return -1;
            if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                p++;
            if (o + 1 >= cap)
                return -1;
            out[o++] = *p;
        }
        p++;
        if (*p && *p != ' ')
            return -1;
    } else {
        if (*p == '{')
            return -1;
        for (; *p && *p != ' '; p++) {
            if (o + 1 >= cap || *p == '"')
                return -1;
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    *pp = p;
    return 1;
}

/* ---- the loop ---- */

void serve_mailbox(struct conn *c, const struct mailbox_dialogue *d, enum end_reason *why)
{
    struct mbox *m = calloc(1, sizeof *m);
    if (!m) {
        *why = END_ERROR;
        return;
    }
    m->c = c;
    m->cur = SIZE_MAX;
    d->greet(m);

    static char line[LINE_MAX_IN];
    for (;;) {
        if (c->errors >= MAX_ERRORS) {
            reply(c, "%s", d->too_many_errors);
            *why = END_TOO_MANY_ERRORS;
            break;
        }
        size_t len;
        bool toolong;
        if (!get_line(c, line, sizeof line, &len, why, &toolong)) {
            if (*why == END_TIMEOUT)
                reply(c, "%s", d->idle);
            break;
        }
        if (toolong || memchr(line, '\0', len)) {
            c->errors++;
            reply(c, "%s", d->bad_line);
            continue;
        }
        /* The STARTTLS rules first: a second STARTTLS, STARTTLS after login, and
         * credentials before TLS under --require-tls get the library's reply. */
        uint32_t chk = mailtls_server_check_command(c->s, (const uint8_t *)line, len);
        if (chk != MAILTLS_RESULT_OK) {
            const char *text = mailtls_server_reply(c->s, chk);
            c->errors++;
            if (text)
                reply_raw(c, text);
            else
                reply(c, "%s", d->refused);
            continue;
        }
        if (d->command(m, line, why) <= 0)
            break;
        if (c->dead) {
            *why = END_ERROR;
            break;
        }
    }
    store_free(&m->st);
    free(m);
}
