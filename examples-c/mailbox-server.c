/*
 * mailtls-server's IMAP, POP3, NNTP and ManageSieve dialogues: enough of each protocol
 * for real clients to log in over STARTTLS or implicit TLS and read what the server
 * holds. IMAP (RFC 9051/3501) and POP3 (RFC 1939/2449) serve the maildir that the SMTP
 * side delivers into (IMAP changes nothing; POP3 DELE deletes on QUIT), NNTP (RFC 3977) a
 * news spool, ManageSieve (RFC 5804) a read-only script store.
 *
 * The library is called where the STARTTLS rules live: mailtls_server_check_command()
 * before every command (it refuses credentials before TLS under --require-tls, a second
 * STARTTLS, STARTTLS after login), mailtls_server_offer_starttls() and
 * mailtls_server_auth_allowed() for what the capability lists advertise,
 * start_tls() (mailtls_server_starttls) for the go and the handshake, and
 * mailtls_server_note_authenticated() after a login.
 *
 * Limits of the example: one account (--user/--pass), SASL PLAIN only, no client
 * literals (IMAP and ManageSieve commands must use quoted strings), IMAP UIDs are
 * positions (UIDVALIDITY changes whenever the mailbox does).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server-dialogues.h"
#include "server.h"

#define LINE_MAX_IN 8192       /* longest command line accepted */
#define MAX_ERRORS 20          /* bad commands before the connection is closed */
#define MAX_AUTH_FAILURES 3    /* failed logins before the connection is closed */
#define MAX_ITEMS 10000        /* messages, articles or scripts loaded */
#define MAX_STORE (64u << 20)  /* bytes loaded */

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

static void store_free(struct store *st)
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

static struct item *store_add(struct store *st, const char *name, const char *path, const char *text, size_t n)
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

static struct item *store_add_file(struct store *st, const char *name, const char *path)
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

/* The maildir's new/ and cur/ as one mailbox, oldest first (maildir names start with
 * the delivery time). A message in cur/ with S among its flags is \Seen. */
static void load_maildir(struct conn *c, struct store *st)
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
    qsort(st->v, st->n, sizeof *st->v, by_name);
}

/* A group name: lowercase letters, digits and + - _ . (RFC 3977 section 4.1, narrowed). */
static bool valid_group(const char *g)
{
    if (!*g || strlen(g) > 200 || *g == '.')
        return false;
    for (const char *p = g; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || strchr("+-_.", *p)))
            return false;
    return true;
}

static void find_msgid(struct item *it)
{
    const char *d = it->data;
    for (size_t i = 0; i < it->hdrlen;) {
        const char *eol = memchr(d + i, '\r', it->hdrlen - i);
        size_t ll = eol ? (size_t)(eol - (d + i)) : it->hdrlen - i;
        if (ll > 11 && strncasecmp(d + i, "Message-ID:", 11) == 0) {
            const char *lt = memchr(d + i, '<', ll);
            const char *gt = lt ? memchr(lt, '>', ll - (size_t)(lt - (d + i))) : NULL;
            if (lt && gt && (size_t)(gt - lt) + 2 <= sizeof it->msgid) {
                memcpy(it->msgid, lt, (size_t)(gt - lt) + 1);
                it->msgid[gt - lt + 1] = '\0';
                return;
            }
        }
        i += ll + 2;
    }
    snprintf(it->msgid, sizeof it->msgid, "<%u.%.100s@%.100s>", it->num, it->name, hostname);
}

static const char sample_article[] =
    "From: mailtls-server <news@localhost>\n"
    "Newsgroups: local.mailtls\n"
    "Subject: Welcome to the mailtls news sample\n"
    "Message-ID: <welcome.1@mailtls.invalid>\n"
    "Date: Mon, 23 Nov 2026 00:00:00 +0000\n"
    "\n"
    "This group is served by mailtls-server's NNTP example, over STARTTLS\n"
    "(RFC 4642) or implicit TLS. Give --spool DIR for groups of your own:\n"
    ".one directory per group, one numbered file per article.\n";

/* The spool: DIR/GROUP/NUMBER files, sorted by group and number. */
static void load_spool(struct conn *c, struct store *st)
{
    store_free(st);
    st->loaded = true;
    if (!opt.spool) {
        struct item *it = store_add(st, "local.mailtls", NULL, sample_article, sizeof sample_article - 1);
        if (it) {
            it->num = 1;
            find_msgid(it);
        }
        return;
    }
    DIR *d = opendir(opt.spool);
    if (!d) {
        logmsg(c->peer, "spool %s: %s", opt.spool, strerror(errno));
        return;
    }
    struct dirent *g;
    while ((g = readdir(d))) {
        if (!valid_group(g->d_name))
            continue;
        char gdir[4096];
        snprintf(gdir, sizeof gdir, "%s/%s", opt.spool, g->d_name);
        DIR *a = opendir(gdir);
        if (!a)
            continue;
        struct dirent *e;
        while ((e = readdir(a))) {
            char *end;
            unsigned long num = strtoul(e->d_name, &end, 10);
            if (!isdigit((unsigned char)e->d_name[0]) || *end || num == 0 || num > 2147483647ul)
                continue;
            char path[8192];
            snprintf(path, sizeof path, "%s/%s", gdir, e->d_name);
            struct item *it = store_add_file(st, g->d_name, path);
            if (!it)
                continue;
            it->num = (unsigned)num;
            find_msgid(it);
        }
        closedir(a);
    }
    closedir(d);
    qsort(st->v, st->n, sizeof *st->v, by_name);
}

static const char sample_script[] =
    "# A sample script served by mailtls-server's ManageSieve example.\n"
    "require [\"fileinto\"];\n"
    "if header :contains \"subject\" \"mailtls\" {\n"
    "    fileinto \"INBOX.mailtls\";\n"
    "}\n";

/* The script store: DIR/NAME.sieve; DIR/.active holds the active script's name. */
static void load_scripts(struct conn *c, struct store *st)
{
    store_free(st);
    st->loaded = true;
    if (!opt.scripts) {
        struct item *it = store_add(st, "mailtls", NULL, sample_script, sizeof sample_script - 1);
        if (it)
            it->active = true;
        return;
    }
    char active[256] = "", path[8192];
    snprintf(path, sizeof path, "%s/.active", opt.scripts);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(active, sizeof active, f))
            active[strcspn(active, "\r\n")] = '\0';
        fclose(f);
    }
    DIR *d = opendir(opt.scripts);
    if (!d) {
        logmsg(c->peer, "scripts %s: %s", opt.scripts, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (e->d_name[0] == '.' || nl <= 6 || nl > 200 || strcmp(e->d_name + nl - 6, ".sieve") != 0)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(nl - 6), e->d_name);
        if (strchr(name, '"') || strchr(name, '\\'))
            continue;
        snprintf(path, sizeof path, "%s/%s", opt.scripts, e->d_name);
        struct item *it = store_add_file(st, name, path);
        if (it)
            it->active = strcmp(name, active) == 0;
    }
    closedir(d);
    qsort(st->v, st->n, sizeof *st->v, by_name);
}

/* ---- shared pieces ---- */

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

/* The one account; the comparison takes the same time wherever the strings differ. */
static bool account_ok(const char *user, const char *pass)
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
static bool login_result(struct mbox *m, const char *user, bool ok)
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
static bool sasl_plain(const char *b64, size_t n, char *user, size_t ucap, bool *ok)
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
static bool get_line(struct conn *c, char *line, size_t cap, size_t *len, enum end_reason *why, bool *toolong)
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
static void reply_dotted(struct conn *c, const char *d, size_t n)
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
static bool wild(const char *pat, const char *s)
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
static int next_word(const char **pp, char *out, size_t cap)
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

/* ---- IMAP ---- */

static void imap_caps(struct mbox *m, struct sbuf *b)
{
    struct conn *c = m->c;
    sb_puts(b, "IMAP4rev1 SASL-IR UNSELECT");
    if (!c->tls && !m->authed && mailtls_server_offer_starttls(c->s))
        sb_puts(b, " STARTTLS");
    if (!m->authed)
        sb_puts(b, mailtls_server_auth_allowed(c->s) ? " AUTH=PLAIN" : " LOGINDISABLED");
}

static const char *capline(struct mbox *m, char *buf, size_t cap)
{
    struct sbuf b = {0};
    imap_caps(m, &b);
    snprintf(buf, cap, "%s", b.p ? b.p : "IMAP4rev1");
    sb_free(&b);
    return buf;
}

static unsigned uidvalidity(const struct store *st)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < st->n; i++)
        for (const char *p = st->v[i].name; *p; p++)
            h = (h ^ (uint8_t)*p) * 16777619u;
    h &= 0x7fffffff;
    return h ? h : 1;
}

/* A sequence set (RFC 9051 section 9: "1", "2:4", "*", "3:*", comma lists).
 * -1 when malformed; otherwise whether n (of max) is in it. */
static int seq_has(const char *set, unsigned n, unsigned max)
{
    const char *p = set;
    if (!*p)
        return -1;
    int hit = 0;
    while (*p) {
        unsigned a, b;
        char *end;
        if (*p == '*') {
            a = max;
            p++;
        } else {
            if (!isdigit((unsigned char)*p))
                return -1;
            unsigned long v = strtoul(p, &end, 10);
            if (v == 0 || v > 4294967295ul)
                return -1;
            a = (unsigned)v;
            p = end;
        }
        b = a;
        if (*p == ':') {
            p++;
            if (*p == '*') {
                b = max;
                p++;
            } else {
                if (!isdigit((unsigned char)*p))
                    return -1;
                unsigned long v = strtoul(p, &end, 10);
                if (v == 0 || v > 4294967295ul)
                    return -1;
                b = (unsigned)v;
                p = end;
            }
        }
        if (a > b) {
            unsigned t = a;
            a = b;
            b = t;
        }
        if (n >= a && n <= b)
            hit = 1;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return hit;
}

/* The largest number a sequence set names ("*" counts as max). */
static unsigned seq_top(const char *set, unsigned max)
{
    unsigned top = 0;
    for (const char *p = set; *p;) {
        if (*p == '*') {
            top = max > top ? max : top;
            p++;
        } else if (isdigit((unsigned char)*p)) {
            char *end;
            unsigned long v = strtoul(p, &end, 10);
            if (v > top)
                top = v > 4294967295ul ? 4294967295u : (unsigned)v;
            p = end;
        } else {
            p++;
        }
    }
    return top;
}

static void imap_date(time_t t, char *out, size_t cap)
{
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, cap, "%d-%b-%Y %H:%M:%S %z", &tm);
}

/* The header lines whose field names are in `fields` ("FROM SUBJECT"), then CRLF. */
static void header_fields(const struct item *it, const char *fields, struct sbuf *out)
{
    const char *d = it->data;
    bool keep = false;
    for (size_t i = 0; i < it->hdrlen;) {
        const char *eol = memchr(d + i, '\n', it->hdrlen - i);
        size_t ll = eol ? (size_t)(eol - (d + i)) + 1 : it->hdrlen - i;
        if (ll <= 2)
            break; /* the empty line */
        if (d[i] != ' ' && d[i] != '\t') {
            const char *colon = memchr(d + i, ':', ll);
            keep = false;
            if (colon) {
                size_t fl = (size_t)(colon - (d + i));
                for (const char *f = fields; *f;) {
                    while (*f == ' ')
                        f++;
                    size_t wl = strcspn(f, " ");
                    if (wl && wl == fl && strncasecmp(f, d + i, fl) == 0)
                        keep = true;
                    f += wl;
                }
            }
        }
        if (keep)
            sb_append(out, d + i, ll);
        i += ll;
    }
    sb_append(out, "\r\n", 2);
}

/* Splits the FETCH item list into items; brackets keep their spaces. */
static int fetch_items(char *s, char **items, int max)
{
    size_t n = strlen(s);
    if (n && s[0] == '(') {
        if (s[n - 1] != ')')
            return -1;
        s[n - 1] = '\0';
        s++;
    }
    int k = 0;
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        if (k == max)
            return -1;
        items[k++] = s;
        int depth = 0;
        for (; *s && (depth || *s != ' '); s++) {
            if (*s == '[')
                depth++;
            else if (*s == ']' && depth)
                depth--;
        }
        if (*s)
            *s++ = '\0';
    }
    return k;
}

/* One FETCH response; false with `bad` set when an item is not supported. */
static bool fetch_one(struct mbox *m, size_t idx, char **items, int nitems, bool uid, const char **bad)
{
    struct conn *c = m->c;
    const struct item *it = &m->st.v[idx];
    struct sbuf r = {0};
    sb_printf(&r, "* %zu FETCH (", idx + 1);
    bool first = true, uid_done = false;
    for (int k = 0; k < nitems + (uid ? 1 : 0); k++) {
        const char *name = k < nitems ? items[k] : "UID";
        if (k == nitems && uid_done)
            break;
        const char *data = NULL;
        size_t dlen = 0;
        char key[320];
        struct sbuf tmp = {0};
        if (!first)
            sb_puts(&r, " ");
        first = false;
        if (!strcasecmp(name, "UID")) {
            sb_printf(&r, "UID %zu", idx + 1);
            uid_done = true;
            continue;
        } else if (!strcasecmp(name, "FLAGS")) {
            sb_puts(&r, it->seen ? "FLAGS (\\Seen)" : "FLAGS ()");
            continue;
        } else if (!strcasecmp(name, "RFC822.SIZE")) {
            sb_printf(&r, "RFC822.SIZE %zu", it->len);
            continue;
        } else if (!strcasecmp(name, "INTERNALDATE")) {
            char date[64];
            imap_date(it->mtime, date, sizeof date);
            sb_printf(&r, "INTERNALDATE \"%s\"", date);
            continue;
        } else if (!strcasecmp(name, "RFC822") || !strcasecmp(name, "BODY[]") || !strcasecmp(name, "BODY.PEEK[]")) {
            data = it->data;
            dlen = it->len;
            snprintf(key, sizeof key, "%s", !strcasecmp(name, "RFC822") ? "RFC822" : "BODY[]");
        } else if (!strcasecmp(name, "RFC822.HEADER") || !strcasecmp(name, "BODY[HEADER]") ||
                   !strcasecmp(name, "BODY.PEEK[HEADER]")) {
            data = it->data;
            dlen = it->hdrlen;
            snprintf(key, sizeof key, "%s", !strcasecmp(name, "RFC822.HEADER") ? "RFC822.HEADER" : "BODY[HEADER]");
        } else if (!strcasecmp(name, "RFC822.TEXT") || !strcasecmp(name, "BODY[TEXT]") ||
                   !strcasecmp(name, "BODY.PEEK[TEXT]")) {
            data = it->data + it->hdrlen;
            dlen = it->len - it->hdrlen;
            snprintf(key, sizeof key, "%s", !strcasecmp(name, "RFC822.TEXT") ? "RFC822.TEXT" : "BODY[TEXT]");
        } else if (!strncasecmp(name, "BODY[HEADER.FIELDS (", 20) || !strncasecmp(name, "BODY.PEEK[HEADER.FIELDS (", 25)) {
            const char *lp = strchr(name, '(');
            const char *rp = strchr(lp, ')');
            if (!rp || strcmp(rp, ")]") != 0 || rp - lp > 256) {
                *bad = name;
                sb_free(&r);
                return false;
            }
            char fields[260];
            snprintf(fields, sizeof fields, "%.*s", (int)(rp - lp - 1), lp + 1);
            header_fields(it, fields, &tmp);
            data = tmp.p ? tmp.p : "";
            dlen = tmp.len;
            snprintf(key, sizeof key, "BODY[HEADER.FIELDS (%s)]", fields);
        } else {
            *bad = name;
            sb_free(&r);
            return false;
        }
        sb_printf(&r, "%s {%zu}\r\n", key, dlen);
        sb_append(&r, data, dlen);
        sb_free(&tmp);
        c->messages += data == it->data && dlen == it->len;
    }
    sb_puts(&r, ")\r\n");
    if (!r.p) {
        *bad = "(out of memory)";
        return false;
    }
    reply_bytes(c, r.p, r.len);
    sb_free(&r);
    return true;
}

static void imap_fetch(struct mbox *m, const char *tag, const char *args, bool uid)
{
    struct conn *c = m->c;
    char set[512], rest[LINE_MAX_IN];
    const char *p = args;
    if (next_word(&p, set, sizeof set) != 1) {
        reply(c, "%s BAD FETCH needs a sequence set and items", tag);
        return;
    }
    while (*p == ' ')
        p++;
    snprintf(rest, sizeof rest, "%s", p);
    char *items[32];
    int n = fetch_items(rest, items, 32);
    if (n <= 0) {
        reply(c, "%s BAD FETCH needs data items", tag);
        return;
    }
    if (n == 1 && (!strcasecmp(items[0], "FAST"))) {
        static char f1[] = "FLAGS", f2[] = "INTERNALDATE", f3[] = "RFC822.SIZE";
        items[0] = f1;
        items[1] = f2;
        items[2] = f3;
        n = 3;
    }
    unsigned max = (unsigned)m->st.n;
    if (seq_has(set, 1, max) < 0) {
        reply(c, "%s BAD Invalid sequence set", tag);
        return;
    }
    if (!uid && (max == 0 || seq_top(set, max) > max)) {
        reply(c, "%s BAD Invalid message sequence number", tag);
        return;
    }
    for (size_t i = 0; i < m->st.n; i++) {
        if (seq_has(set, (unsigned)i + 1, max) != 1)
            continue;
        const char *bad = NULL;
        if (!fetch_one(m, i, items, n, uid, &bad)) {
            reply(c, "%s BAD FETCH item not supported by this server: %.100s", tag, bad);
            return;
        }
    }
    reply(c, "%s OK %sFETCH completed", tag, uid ? "UID " : "");
}

static void imap_search(struct mbox *m, const char *tag, const char *args, bool uid)
{
    struct conn *c = m->c;
    unsigned max = (unsigned)m->st.n;
    struct sbuf r = {0};
    sb_puts(&r, "* SEARCH");
    for (size_t i = 0; i < m->st.n; i++) {
        const struct item *it = &m->st.v[i];
        bool match = true;
        const char *p = args;
        char w[512];
        int wr;
        while ((wr = next_word(&p, w, sizeof w)) == 1) {
            if (!strcasecmp(w, "ALL"))
                continue;
            if (!strcasecmp(w, "SEEN"))
                match &= it->seen;
            else if (!strcasecmp(w, "UNSEEN") || !strcasecmp(w, "NEW"))
                match &= !it->seen;
            else if (!strcasecmp(w, "UID") && next_word(&p, w, sizeof w) == 1 && seq_has(w, (unsigned)i + 1, max) >= 0)
                match &= seq_has(w, (unsigned)i + 1, max) == 1;
            else if (seq_has(w, (unsigned)i + 1, max) >= 0)
                match &= seq_has(w, (unsigned)i + 1, max) == 1;
            else
                wr = -1;
            if (wr < 0)
                break;
        }
        if (wr < 0) {
            sb_free(&r);
            reply(c, "%s BAD SEARCH criterion not supported by this server (ALL, SEEN, UNSEEN, NEW, UID, sets)", tag);
            return;
        }
        if (match)
            sb_printf(&r, " %zu", i + 1);
    }
    if (r.p)
        reply(c, "%s", r.p);
    sb_free(&r);
    reply(c, "%s OK %sSEARCH completed", tag, uid ? "UID " : "");
}

static void imap_select(struct mbox *m, const char *tag, const char *verb, const char *args)
{
    struct conn *c = m->c;
    char name[256];
    const char *p = args;
    if (next_word(&p, name, sizeof name) != 1) {
        reply(c, "%s BAD %s needs a mailbox name", tag, verb);
        return;
    }
    if (strcasecmp(name, "INBOX") != 0) {
        m->selected = false;
        reply(c, "%s NO [NONEXISTENT] There is no mailbox %.100s here (only INBOX)", tag, name);
        return;
    }
    load_maildir(c, &m->st);
    m->selected = true;
    unsigned unseen = 0;
    for (size_t i = 0; i < m->st.n; i++)
        if (!m->st.v[i].seen && !unseen)
            unseen = (unsigned)i + 1;
    reply(c, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)");
    reply(c, "* OK [PERMANENTFLAGS ()] No flag can be changed here");
    reply(c, "* %zu EXISTS", m->st.n);
    reply(c, "* 0 RECENT");
    if (unseen)
        reply(c, "* OK [UNSEEN %u] First unseen", unseen);
    reply(c, "* OK [UIDVALIDITY %u] UIDs valid", uidvalidity(&m->st));
    reply(c, "* OK [UIDNEXT %zu] Predicted next UID", m->st.n + 1);
    /* SELECT is read-write in name (clients expect it) with no changeable flag; EXAMINE
     * is read-only (RFC 9051 section 6.3.2). */
    reply(c, "%s OK [%s] %s completed", tag, !strcmp(verb, "SELECT") ? "READ-WRITE" : "READ-ONLY", verb);
}

static void imap_status(struct mbox *m, const char *tag, const char *args)
{
    struct conn *c = m->c;
    char name[256];
    const char *p = args;
    if (next_word(&p, name, sizeof name) != 1 || strcasecmp(name, "INBOX") != 0) {
        reply(c, "%s NO [NONEXISTENT] Only INBOX is here", tag);
        return;
    }
    struct store st = {0};
    load_maildir(c, &st);
    unsigned unseen = 0;
    for (size_t i = 0; i < st.n; i++)
        unseen += !st.v[i].seen;
    char items[256];
    while (*p == ' ')
        p++;
    snprintf(items, sizeof items, "%s", p);
    struct sbuf r = {0};
    sb_puts(&r, "* STATUS INBOX (");
    bool first = true;
    for (char *w = strtok(items, " ()"); w; w = strtok(NULL, " ()")) {
        unsigned long v;
        if (!strcasecmp(w, "MESSAGES"))
            v = st.n;
        else if (!strcasecmp(w, "RECENT"))
            v = 0;
        else if (!strcasecmp(w, "UIDNEXT"))
            v = st.n + 1;
        else if (!strcasecmp(w, "UIDVALIDITY"))
            v = uidvalidity(&st);
        else if (!strcasecmp(w, "UNSEEN"))
            v = unseen;
        else
            continue;
        sb_printf(&r, "%s%s %lu", first ? "" : " ", w, v);
        first = false;
    }
    sb_puts(&r, ")");
    if (r.p)
        reply(c, "%s", r.p);
    sb_free(&r);
    store_free(&st);
    reply(c, "%s OK STATUS completed", tag);
}

static void imap_list(struct mbox *m, const char *tag, const char *verb, const char *args)
{
    struct conn *c = m->c;
    char ref[256], pat[256];
    const char *p = args;
    if (next_word(&p, ref, sizeof ref) != 1 || next_word(&p, pat, sizeof pat) != 1) {
        reply(c, "%s BAD %s needs a reference and a mailbox pattern", tag, verb);
        return;
    }
    if (!*pat)
        reply(c, "* %s (\\Noselect) \"/\" \"\"", verb);
    else if (wild(pat, "INBOX"))
        reply(c, "* %s (\\HasNoChildren) \"/\" INBOX", verb);
    reply(c, "%s OK %s completed", tag, verb);
}

/* AUTHENTICATE PLAIN [initial-response]: false when the connection must end. */
static bool imap_authenticate(struct mbox *m, const char *tag, const char *args, enum end_reason *why)
{
    struct conn *c = m->c;
    char mech[64], ir[1400];
    const char *p = args;
    if (next_word(&p, mech, sizeof mech) != 1) {
        reply(c, "%s BAD AUTHENTICATE needs a mechanism", tag);
        return true;
    }
    if (strcasecmp(mech, "PLAIN") != 0) {
        reply(c, "%s NO [CANNOT] Only the PLAIN mechanism is offered", tag);
        return true;
    }
    int r = next_word(&p, ir, sizeof ir);
    if (r < 0) {
        reply(c, "%s BAD Malformed initial response", tag);
        return true;
    }
    if (r == 0) {
        reply(c, "+ ");
        size_t len;
        bool toolong;
        if (!get_line(c, ir, sizeof ir, &len, why, &toolong))
            return false;
        if (toolong) {
            reply(c, "%s BAD Response too long", tag);
            return true;
        }
    }
    if (!strcmp(ir, "*")) {
        reply(c, "%s BAD Authentication cancelled", tag);
        return true;
    }
    char user[256];
    bool ok;
    if (!sasl_plain(ir, !strcmp(ir, "=") ? 0 : strlen(ir), user, sizeof user, &ok)) {
        reply(c, "%s BAD Malformed SASL PLAIN response", tag);
        return true;
    }
    if (!login_result(m, user, ok)) {
        reply(c, "* BYE Too many failed logins");
        *why = END_TOO_MANY_ERRORS;
        return false;
    }
    char caps[256];
    if (ok)
        reply(c, "%s OK [CAPABILITY %s] Logged in", tag, capline(m, caps, sizeof caps));
    else
        reply(c, "%s NO [AUTHENTICATIONFAILED] Authentication failed", tag);
    return true;
}

/* One IMAP command: 1 go on, 0 LOGOUT, -1 the connection ends (why set). */
static int imap_command(struct mbox *m, char *line, enum end_reason *why)
{
    struct conn *c = m->c;
    char tag[80], verb[32];
    const char *p = line;
    if (next_word(&p, tag, sizeof tag) != 1 || strchr(tag, '*') || strchr(tag, '+') || strchr(tag, '(')) {
        c->errors++;
        reply(c, "* BAD Invalid tag");
        return 1;
    }
    if (next_word(&p, verb, sizeof verb) != 1) {
        c->errors++;
        reply(c, "%s BAD Missing command", tag);
        return 1;
    }
    while (*p == ' ')
        p++;
    const char *args = p;
    size_t al = strlen(args);
    if (al && args[al - 1] == '}') {
        c->errors++;
        reply(c, "%s BAD Literals are not supported by this server: use quoted strings", tag);
        return 1;
    }
    bool uid = false;
    if (!strcasecmp(verb, "UID")) {
        uid = true;
        if (next_word(&p, verb, sizeof verb) != 1) {
            reply(c, "%s BAD UID needs a command", tag);
            return 1;
        }
        while (*p == ' ')
            p++;
        args = p;
        if (strcasecmp(verb, "FETCH") && strcasecmp(verb, "SEARCH")) {
            reply(c, "%s BAD UID %s is not supported (read-only mailbox)", tag, verb);
            return 1;
        }
    }
    char caps[256];
    if (!strcasecmp(verb, "CAPABILITY")) {
        reply(c, "* CAPABILITY %s", capline(m, caps, sizeof caps));
        reply(c, "%s OK CAPABILITY completed", tag);
    } else if (!strcasecmp(verb, "NOOP") || !strcasecmp(verb, "CHECK")) {
        reply(c, "%s OK %s completed", tag, verb);
    } else if (!strcasecmp(verb, "LOGOUT")) {
        reply(c, "* BYE %s logging out", hostname);
        reply(c, "%s OK LOGOUT completed", tag);
        *why = END_QUIT;
        return 0;
    } else if (!strcasecmp(verb, "STARTTLS")) {
        if (*args) {
            reply(c, "%s BAD STARTTLS takes no arguments", tag);
            return 1;
        }
        int r = start_tls(c, why);
        return r < 0 ? -1 : 1; /* RFC 9051 section 6.2.1: the client asks CAPABILITY again */
    } else if (!strcasecmp(verb, "LOGIN")) {
        char user[256], pass[512];
        if (m->authed) {
            reply(c, "%s BAD Already logged in", tag);
        } else if (next_word(&p, user, sizeof user) != 1 || next_word(&p, pass, sizeof pass) != 1) {
            c->errors++;
            reply(c, "%s BAD LOGIN needs a user name and a password", tag);
        } else {
            bool ok = account_ok(user, pass);
            if (!login_result(m, user, ok)) {
                reply(c, "* BYE Too many failed logins");
                *why = END_TOO_MANY_ERRORS;
                return -1;
            }
            if (ok)
                reply(c, "%s OK [CAPABILITY %s] Logged in", tag, capline(m, caps, sizeof caps));
            else
                reply(c, "%s NO [AUTHENTICATIONFAILED] Authentication failed", tag);
        }
    } else if (!strcasecmp(verb, "AUTHENTICATE")) {
        if (m->authed)
            reply(c, "%s BAD Already logged in", tag);
        else if (!imap_authenticate(m, tag, args, why))
            return -1;
    } else if (!m->authed) {
        c->errors++;
        reply(c, "%s BAD %s: log in first", tag, verb);
    } else if (!strcasecmp(verb, "SELECT") || !strcasecmp(verb, "EXAMINE")) {
        imap_select(m, tag, !strcasecmp(verb, "SELECT") ? "SELECT" : "EXAMINE", args);
    } else if (!strcasecmp(verb, "LIST") || !strcasecmp(verb, "LSUB")) {
        imap_list(m, tag, !strcasecmp(verb, "LIST") ? "LIST" : "LSUB", args);
    } else if (!strcasecmp(verb, "STATUS")) {
        imap_status(m, tag, args);
    } else if (!strcasecmp(verb, "SUBSCRIBE") || !strcasecmp(verb, "UNSUBSCRIBE")) {
        reply(c, "%s OK %s completed (INBOX is always subscribed)", tag, verb);
    } else if (!strcasecmp(verb, "CREATE") || !strcasecmp(verb, "DELETE") || !strcasecmp(verb, "RENAME") ||
               !strcasecmp(verb, "APPEND")) {
        reply(c, "%s NO [CANNOT] This server's mailbox is read-only", tag);
    } else if (!m->selected) {
        c->errors++;
        reply(c, "%s BAD %s: no mailbox selected", tag, verb);
    } else if (!strcasecmp(verb, "FETCH")) {
        imap_fetch(m, tag, args, uid);
    } else if (!strcasecmp(verb, "SEARCH")) {
        imap_search(m, tag, args, uid);
    } else if (!strcasecmp(verb, "CLOSE") || !strcasecmp(verb, "UNSELECT")) {
        m->selected = false;
        reply(c, "%s OK %s completed", tag, verb);
    } else if (!strcasecmp(verb, "EXPUNGE")) {
        reply(c, "%s OK EXPUNGE completed (read-only: nothing expunged)", tag);
    } else if (!strcasecmp(verb, "STORE") || !strcasecmp(verb, "COPY") || !strcasecmp(verb, "MOVE")) {
        reply(c, "%s NO [CANNOT] Nothing can be changed in this server's mailbox", tag);
    } else {
        c->errors++;
        reply(c, "%s BAD Unknown command %.40s", tag, verb);
    }
    return 1;
}

/* ---- POP3 ---- */

static void pop3_totals(const struct mbox *m, size_t *count, size_t *octets)
{
    *count = *octets = 0;
    for (size_t i = 0; i < m->st.n; i++)
        if (!m->st.v[i].deleted) {
            (*count)++;
            *octets += m->st.v[i].len;
        }
}

/* A unique-id (RFC 1939 section 7): 1 to 70 characters 0x21..0x7E. */
static void pop3_uid(const struct item *it, char out[72])
{
    size_t n = strcspn(it->name, ":");
    bool ok = n > 0 && n <= 70;
    for (size_t i = 0; ok && i < n; i++)
        ok = it->name[i] > 0x20 && it->name[i] < 0x7f;
    if (ok) {
        snprintf(out, 72, "%.*s", (int)n, it->name);
        return;
    }
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)it->name[i]) * 1099511628211ull;
    snprintf(out, 72, "%016llx", (unsigned long long)h);
}

/* The message a POP3 argument names; NULL (with the reply sent) when none. */
static struct item *pop3_msg(struct mbox *m, const char *arg)
{
    char *end;
    unsigned long n = strtoul(arg, &end, 10);
    if (!isdigit((unsigned char)*arg) || (*end && *end != ' ') || n == 0 || n > m->st.n) {
        reply(m->c, "-ERR No such message");
        return NULL;
    }
    struct item *it = &m->st.v[n - 1];
    if (it->deleted) {
        reply(m->c, "-ERR Message %lu is deleted", n);
        return NULL;
    }
    return it;
}

static void pop3_capa(struct mbox *m)
{
    struct conn *c = m->c;
    reply(c, "+OK Capability list follows");
    reply(c, "TOP");
    reply(c, "UIDL");
    reply(c, "RESP-CODES");
    reply(c, "AUTH-RESP-CODE");
    if (!m->authed && mailtls_server_auth_allowed(c->s)) {
        reply(c, "USER");
        reply(c, "SASL PLAIN");
    }
    if (!c->tls && !m->authed && mailtls_server_offer_starttls(c->s))
        reply(c, "STLS");
    reply(c, "IMPLEMENTATION mailtls-server");
    reply(c, ".");
}

static void pop3_logged_in(struct mbox *m)
{
    load_maildir(m->c, &m->st);
    size_t n, octets;
    pop3_totals(m, &n, &octets);
    reply(m->c, "+OK %s's maildrop has %zu messages (%zu octets)", m->c->user, n, octets);
}

/* At QUIT in the TRANSACTION state: the deleted messages go (RFC 1939 section 6). */
static unsigned pop3_update(struct mbox *m)
{
    unsigned gone = 0;
    for (size_t i = 0; i < m->st.n; i++) {
        const struct item *it = &m->st.v[i];
        if (!it->deleted || !it->path)
            continue;
        if (unlink(it->path) == 0)
            gone++;
        else
            logmsg(m->c->peer, "DELE %s: %s", it->path, strerror(errno));
    }
    return gone;
}

static int pop3_command(struct mbox *m, char *line, enum end_reason *why)
{
    struct conn *c = m->c;
    char *sp = strchr(line, ' ');
    const char *arg = "";
    if (sp) {
        *sp = '\0';
        arg = sp + 1;
    }
    const char *verb = line;
    if (!strcasecmp(verb, "CAPA")) {
        pop3_capa(m);
    } else if (!strcasecmp(verb, "QUIT")) {
        if (m->authed) {
            unsigned gone = pop3_update(m);
            reply(c, "+OK %s signing off (%u messages deleted)", hostname, gone);
        } else {
            reply(c, "+OK %s signing off", hostname);
        }
        *why = END_QUIT;
        return 0;
    } else if (!strcasecmp(verb, "NOOP") && m->authed) {
        reply(c, "+OK");
    } else if (!strcasecmp(verb, "STLS")) {
        if (*arg) {
            reply(c, "-ERR STLS takes no arguments");
            return 1;
        }
        int r = start_tls(c, why);
        if (r > 0)
            m->pop_user[0] = '\0'; /* RFC 2595 section 4: forget what was said before TLS */
        return r < 0 ? -1 : 1;
    } else if (!m->authed) {
        if (!strcasecmp(verb, "USER")) {
            if (!*arg || strlen(arg) >= sizeof m->pop_user) {
                reply(c, "-ERR USER needs a name");
            } else {
                snprintf(m->pop_user, sizeof m->pop_user, "%s", arg);
                reply(c, "+OK Send PASS");
            }
        } else if (!strcasecmp(verb, "PASS")) {
            if (!m->pop_user[0]) {
                reply(c, "-ERR USER first");
                return 1;
            }
            char user[128];
            snprintf(user, sizeof user, "%s", m->pop_user);
            m->pop_user[0] = '\0';
            bool ok = account_ok(user, arg);
            if (!login_result(m, user, ok)) {
                reply(c, "-ERR [AUTH] Too many failed logins");
                *why = END_TOO_MANY_ERRORS;
                return -1;
            }
            if (ok)
                pop3_logged_in(m);
            else
                reply(c, "-ERR [AUTH] Invalid user name or password");
        } else if (!strcasecmp(verb, "AUTH")) {
            char mech[64], ir[1400];
            const char *p = arg;
            int r = next_word(&p, mech, sizeof mech);
            if (r == 0) {
                reply(c, "+OK Mechanisms follow");
                reply(c, "PLAIN");
                reply(c, ".");
                return 1;
            }
            if (r < 0 || strcasecmp(mech, "PLAIN") != 0) {
                reply(c, "-ERR Only the PLAIN mechanism is offered");
                return 1;
            }
            r = next_word(&p, ir, sizeof ir);
            if (r <= 0) {
                reply(c, "+ ");
                size_t len;
                bool toolong;
                if (!get_line(c, ir, sizeof ir, &len, why, &toolong))
                    return -1;
                if (toolong) {
                    reply(c, "-ERR Response too long");
                    return 1;
                }
            }
            if (!strcmp(ir, "*")) {
                reply(c, "-ERR Authentication cancelled");
                return 1;
            }
            char user[256];
            bool ok;
            if (!sasl_plain(ir, !strcmp(ir, "=") ? 0 : strlen(ir), user, sizeof user, &ok)) {
                reply(c, "-ERR Malformed SASL PLAIN response");
                return 1;
            }
            if (!login_result(m, user, ok)) {
                reply(c, "-ERR [AUTH] Too many failed logins");
                *why = END_TOO_MANY_ERRORS;
                return -1;
            }
            if (ok)
                pop3_logged_in(m);
            else
                reply(c, "-ERR [AUTH] Authentication failed");
        } else if (!strcasecmp(verb, "APOP")) {
            reply(c, "-ERR APOP is not offered (the greeting has no timestamp)");
        } else {
            c->errors++;
            reply(c, "-ERR %.40s: log in first (USER/PASS or AUTH PLAIN)", verb);
        }
    } else if (!strcasecmp(verb, "STAT")) {
        size_t n, octets;
        pop3_totals(m, &n, &octets);
        reply(c, "+OK %zu %zu", n, octets);
    } else if (!strcasecmp(verb, "LIST") || !strcasecmp(verb, "UIDL")) {
        bool uidl = !strcasecmp(verb, "UIDL");
        char uid[72];
        if (*arg) {
            struct item *it = pop3_msg(m, arg);
            if (!it)
                return 1;
            size_t n = (size_t)(it - m->st.v) + 1;
            if (uidl) {
                pop3_uid(it, uid);
                reply(c, "+OK %zu %s", n, uid);
            } else {
                reply(c, "+OK %zu %zu", n, it->len);
            }
            return 1;
        }
        reply(c, "+OK Listing follows");
        for (size_t i = 0; i < m->st.n; i++) {
            if (m->st.v[i].deleted)
                continue;
            if (uidl) {
                pop3_uid(&m->st.v[i], uid);
                reply(c, "%zu %s", i + 1, uid);
            } else {
                reply(c, "%zu %zu", i + 1, m->st.v[i].len);
            }
        }
        reply(c, ".");
    } else if (!strcasecmp(verb, "RETR")) {
        struct item *it = pop3_msg(m, arg);
        if (!it)
            return 1;
        reply(c, "+OK %zu octets", it->len);
        reply_dotted(c, it->data, it->len);
        c->messages++;
    } else if (!strcasecmp(verb, "TOP")) {
        struct item *it = pop3_msg(m, arg);
        const char *sp2 = strchr(arg, ' ');
        char *end;
        unsigned long lines = sp2 ? strtoul(sp2 + 1, &end, 10) : 0;
        if (!it)
            return 1;
        if (!sp2 || !isdigit((unsigned char)sp2[1]) || *end) {
            reply(c, "-ERR TOP needs a message number and a line count");
            return 1;
        }
        size_t n = it->hdrlen;
        for (unsigned long k = 0; k < lines && n < it->len; k++) {
            const char *eol = memchr(it->data + n, '\n', it->len - n);
            n = eol ? (size_t)(eol - it->data) + 1 : it->len;
        }
        reply(c, "+OK Top of message follows");
        reply_dotted(c, it->data, n);
    } else if (!strcasecmp(verb, "DELE")) {
        struct item *it = pop3_msg(m, arg);
        if (!it)
            return 1;
        it->deleted = true;
        reply(c, "+OK Message %zu deleted", (size_t)(it - m->st.v) + 1);
    } else if (!strcasecmp(verb, "RSET")) {
        for (size_t i = 0; i < m->st.n; i++)
            m->st.v[i].deleted = false;
        size_t n, octets;
        pop3_totals(m, &n, &octets);
        reply(c, "+OK Maildrop has %zu messages (%zu octets)", n, octets);
    } else if (!strcasecmp(verb, "USER") || !strcasecmp(verb, "PASS") || !strcasecmp(verb, "AUTH") ||
               !strcasecmp(verb, "APOP")) {
        reply(c, "-ERR Already logged in");
    } else {
        c->errors++;
        reply(c, "-ERR Unknown command %.40s", verb);
    }
    return 1;
}

/* ---- NNTP ---- */

static bool nntp_need_auth(const struct mbox *m)
{
    return opt.user && !m->authed;
}

/* The articles of a group: [*lo, *hi) indexes into the sorted store. */
static bool nntp_group(const struct mbox *m, const char *g, size_t *lo, size_t *hi)
{
    size_t i = 0;
    while (i < m->st.n && strcmp(m->st.v[i].name, g) != 0)
        i++;
    if (i == m->st.n)
        return false;
    size_t j = i;
    while (j < m->st.n && strcmp(m->st.v[j].name, g) == 0)
        j++;
    *lo = i;
    *hi = j;
    return true;
}

static void nntp_caps(struct mbox *m)
{
    struct conn *c = m->c;
    reply(c, "101 Capability list:");
    reply(c, "VERSION 2");
    reply(c, "READER");
    reply(c, "LIST ACTIVE NEWSGROUPS");
    reply(c, "IMPLEMENTATION mailtls-server");
    if (!c->tls && !m->authed && mailtls_server_offer_starttls(c->s))
        reply(c, "STARTTLS");
    if (opt.user && !m->authed && mailtls_server_auth_allowed(c->s))
        reply(c, "AUTHINFO USER");
    reply(c, ".");
}

static void nntp_list(struct mbox *m, const char *arg)
{
    struct conn *c = m->c;
    char kw[32] = "ACTIVE", pat[256] = "*";
    const char *p = arg;
    if (next_word(&p, kw, sizeof kw) < 0 || next_word(&p, pat, sizeof pat) < 0) {
        reply(c, "501 Syntax: LIST [ACTIVE|NEWSGROUPS [wildmat]]");
        return;
    }
    bool active = !strcasecmp(kw, "ACTIVE");
    if (!active && strcasecmp(kw, "NEWSGROUPS") != 0) {
        reply(c, "503 LIST %.40s is not supported (ACTIVE, NEWSGROUPS)", kw);
        return;
    }
    reply(c, active ? "215 List of newsgroups follows" : "215 Descriptions follow");
    for (size_t i = 0; i < m->st.n;) {
        size_t lo, hi;
        nntp_group(m, m->st.v[i].name, &lo, &hi);
        const char *g = m->st.v[i].name;
        if (wild(pat, g)) {
            if (active)
                reply(c, "%s %u %u n", g, m->st.v[hi - 1].num, m->st.v[lo].num);
            else
                reply(c, "%s\tServed by mailtls-server", g);
        }
        i = hi;
    }
    reply(c, ".");
}

/* The article ARTICLE/HEAD/BODY/STAT name: NULL with the reply sent when none. */
static struct item *nntp_article(struct mbox *m, const char *arg, unsigned *num)
{
    struct conn *c = m->c;
    if (*arg == '<') {
        for (size_t i = 0; i < m->st.n; i++)
            if (!strcmp(m->st.v[i].msgid, arg)) {
                *num = 0;
                return &m->st.v[i];
            }
        reply(c, "430 No article with that message-id");
        return NULL;
    }
    if (!m->group) {
        reply(c, "412 No newsgroup selected");
        return NULL;
    }
    if (!*arg) {
        if (m->cur == SIZE_MAX) {
            reply(c, "420 Current article number is invalid");
            return NULL;
        }
        *num = m->st.v[m->cur].num;
        return &m->st.v[m->cur];
    }
    char *end;
    unsigned long n = strtoul(arg, &end, 10);
    if (!isdigit((unsigned char)*arg) || *end) {
        reply(c, "501 Syntax: a number or a <message-id>");
        return NULL;
    }
    size_t lo, hi;
    nntp_group(m, m->group, &lo, &hi);
    for (size_t i = lo; i < hi; i++)
        if (m->st.v[i].num == n) {
            m->cur = i;
            *num = (unsigned)n;
            return &m->st.v[i];
        }
    reply(c, "423 No article with that number");
    return NULL;
}

static int nntp_command(struct mbox *m, char *line, enum end_reason *why)
{
    struct conn *c = m->c;
    char *sp = strchr(line, ' ');
    const char *arg = "";
    if (sp) {
        *sp = '\0';
        arg = sp + 1;
        while (*arg == ' ')
            arg++;
    }
    const char *verb = line;
    if (!strcasecmp(verb, "CAPABILITIES")) {
        nntp_caps(m);
    } else if (!strcasecmp(verb, "QUIT")) {
        reply(c, "205 Bye");
        *why = END_QUIT;
        return 0;
    } else if (!strcasecmp(verb, "STARTTLS")) {
        if (*arg) {
            reply(c, "501 STARTTLS takes no arguments");
            return 1;
        }
        int r = start_tls(c, why);
        if (r > 0)
            m->nntp_user_given = false; /* RFC 4642 section 2.2.2: discard what came before */
        return r < 0 ? -1 : 1;
    } else if (!strcasecmp(verb, "MODE")) {
        if (strcasecmp(arg, "READER") != 0)
            reply(c, "501 Syntax: MODE READER");
        else
            reply(c, "201 Posting prohibited");
    } else if (!strcasecmp(verb, "DATE")) {
        char d[32];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(d, sizeof d, "%Y%m%d%H%M%S", &tm);
        reply(c, "111 %s", d);
    } else if (!strcasecmp(verb, "HELP")) {
        reply(c, "100 Help text follows");
        reply(c, "CAPABILITIES DATE GROUP LISTGROUP LIST [ACTIVE|NEWSGROUPS] ARTICLE HEAD BODY STAT NEXT LAST");
        reply(c, "STARTTLS AUTHINFO USER/PASS MODE READER QUIT");
        reply(c, ".");
    } else if (!strcasecmp(verb, "AUTHINFO")) {
        char sub[16], val[256];
        const char *p = arg;
        if (m->authed) {
            reply(c, "502 Already authenticated");
        } else if (next_word(&p, sub, sizeof sub) != 1) {
            reply(c, "501 Syntax: AUTHINFO USER name / AUTHINFO PASS password");
        } else if (!strcasecmp(sub, "USER")) {
            while (*p == ' ')
                p++;
            snprintf(val, sizeof val, "%s", p);
            if (!*val || strlen(val) >= sizeof m->nntp_user) {
                reply(c, "501 AUTHINFO USER needs a name");
                return 1;
            }
            memcpy(m->nntp_user, val, strlen(val) + 1);
            m->nntp_user_given = true;
            reply(c, "381 Password required");
        } else if (!strcasecmp(sub, "PASS")) {
            while (*p == ' ')
                p++;
            if (!m->nntp_user_given) {
                reply(c, "482 Authentication commands issued out of sequence");
                return 1;
            }
            m->nntp_user_given = false;
            bool ok = account_ok(m->nntp_user, p);
            if (!login_result(m, m->nntp_user, ok)) {
                reply(c, "481 Too many failed logins");
                *why = END_TOO_MANY_ERRORS;
                return -1;
            }
            reply(c, ok ? "281 Authentication accepted" : "481 Authentication failed");
        } else {
            reply(c, "503 AUTHINFO %.16s is not supported (USER/PASS)", sub);
        }
    } else if (!strcasecmp(verb, "POST") || !strcasecmp(verb, "IHAVE")) {
        reply(c, "%s", !strcasecmp(verb, "POST") ? "440 Posting not permitted" : "502 Transit not offered");
    } else if (nntp_need_auth(m) && (!strcasecmp(verb, "LIST") || !strcasecmp(verb, "GROUP") ||
                                     !strcasecmp(verb, "LISTGROUP") || !strcasecmp(verb, "ARTICLE") ||
                                     !strcasecmp(verb, "HEAD") || !strcasecmp(verb, "BODY") ||
                                     !strcasecmp(verb, "STAT") || !strcasecmp(verb, "NEXT") ||
                                     !strcasecmp(verb, "LAST"))) {
        reply(c, "480 Authentication required");
    } else if (!strcasecmp(verb, "LIST")) {
        nntp_list(m, arg);
    } else if (!strcasecmp(verb, "GROUP") || !strcasecmp(verb, "LISTGROUP")) {
        bool listgroup = !strcasecmp(verb, "LISTGROUP");
        char g[256];
        const char *p = arg;
        if (next_word(&p, g, sizeof g) != 1) {
            if (!listgroup || !m->group) {
                reply(c, listgroup ? "412 No newsgroup selected" : "501 Syntax: GROUP name");
                return 1;
            }
            snprintf(g, sizeof g, "%s", m->group);
        }
        size_t lo, hi;
        if (!nntp_group(m, g, &lo, &hi)) {
            reply(c, "411 No such newsgroup");
            return 1;
        }
        m->group = m->st.v[lo].name;
        m->cur = lo;
        reply(c, "211 %zu %u %u %s%s", hi - lo, m->st.v[lo].num, m->st.v[hi - 1].num, m->group,
              listgroup ? " list follows" : "");
        if (listgroup) {
            for (size_t i = lo; i < hi; i++)
                reply(c, "%u", m->st.v[i].num);
            reply(c, ".");
        }
    } else if (!strcasecmp(verb, "ARTICLE") || !strcasecmp(verb, "HEAD") || !strcasecmp(verb, "BODY") ||
               !strcasecmp(verb, "STAT")) {
        unsigned num = 0;
        struct item *it = nntp_article(m, arg, &num);
        if (!it)
            return 1;
        int code = !strcasecmp(verb, "ARTICLE") ? 220 : !strcasecmp(verb, "HEAD") ? 221 : !strcasecmp(verb, "BODY") ? 222 : 223;
        reply(c, "%d %u %s", code, num, it->msgid);
        if (code == 220) {
            reply_dotted(c, it->data, it->len);
            c->messages++;
        } else if (code == 221) {
            reply_dotted(c, it->data, it->hdrlen > 2 ? it->hdrlen - 2 : it->hdrlen);
        } else if (code == 222) {
            reply_dotted(c, it->data + it->hdrlen, it->len - it->hdrlen);
            c->messages++;
        }
    } else if (!strcasecmp(verb, "NEXT") || !strcasecmp(verb, "LAST")) {
        if (!m->group) {
            reply(c, "412 No newsgroup selected");
            return 1;
        }
        if (m->cur == SIZE_MAX) {
            reply(c, "420 Current article number is invalid");
            return 1;
        }
        size_t lo, hi;
        nntp_group(m, m->group, &lo, &hi);
        bool next = !strcasecmp(verb, "NEXT");
        if (next ? m->cur + 1 >= hi : m->cur <= lo) {
            reply(c, next ? "421 No next article in this group" : "422 No previous article in this group");
            return 1;
        }
        m->cur = next ? m->cur + 1 : m->cur - 1;
        reply(c, "223 %u %s", m->st.v[m->cur].num, m->st.v[m->cur].msgid);
    } else {
        c->errors++;
        reply(c, "500 Unknown command");
    }
    return 1;
}

/* ---- ManageSieve ---- */

static void sieve_caps(struct mbox *m, const char *ok_text)
{
    struct conn *c = m->c;
    reply(c, "\"IMPLEMENTATION\" \"mailtls-server\"");
    reply(c, "\"SASL\" \"%s\"", !m->authed && mailtls_server_auth_allowed(c->s) ? "PLAIN" : "");
    reply(c, "\"SIEVE\" \"fileinto reject envelope vacation\"");
    if (!c->tls && !m->authed && mailtls_server_offer_starttls(c->s))
        reply(c, "\"STARTTLS\"");
    reply(c, "\"VERSION\" \"1.0\"");
    reply(c, "OK \"%s\"", ok_text);
}

static void sieve_string(struct conn *c, const char *s)
{
    struct sbuf b = {0};
    sb_puts(&b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_append(&b, "\\", 1);
        sb_append(&b, s, 1);
    }
    sb_puts(&b, "\"");
    if (b.p)
        reply_bytes(c, b.p, b.len);
    sb_free(&b);
}

static int sieve_command(struct mbox *m, char *line, enum end_reason *why)
{
    struct conn *c = m->c;
    char verb[32], a1[1400];
    const char *p = line;
    if (next_word(&p, verb, sizeof verb) != 1) {
        c->errors++;
        reply(c, "NO \"Malformed command\"");
        return 1;
    }
    size_t ll = strlen(line);
    if (ll && line[ll - 1] == '}') {
        c->errors++;
        reply(c, "NO \"Literals are not supported by this server: use quoted strings\"");
        return 1;
    }
    if (!strcasecmp(verb, "CAPABILITY")) {
        sieve_caps(m, "Capability completed");
    } else if (!strcasecmp(verb, "LOGOUT")) {
        reply(c, "OK \"Logout completed\"");
        *why = END_QUIT;
        return 0;
    } else if (!strcasecmp(verb, "NOOP")) {
        int r = next_word(&p, a1, sizeof a1);
        if (r == 1) {
            reply_bytes(c, "OK (TAG ", 8);
            sieve_string(c, a1);
            reply(c, ") \"Done\"");
        } else {
            reply(c, "OK \"NOOP completed\"");
        }
    } else if (!strcasecmp(verb, "STARTTLS")) {
        int r = start_tls(c, why);
        if (r > 0) /* RFC 5804 section 2.2: the capabilities again, over TLS */
            sieve_caps(m, "TLS negotiation successful");
        return r < 0 ? -1 : 1;
    } else if (!strcasecmp(verb, "AUTHENTICATE")) {
        if (m->authed) {
            reply(c, "NO \"Already authenticated\"");
            return 1;
        }
        if (next_word(&p, a1, sizeof a1) != 1 || strcasecmp(a1, "PLAIN") != 0) {
            reply(c, "NO \"Only the PLAIN mechanism is offered\"");
            return 1;
        }
        char ir[1400];
        int r = next_word(&p, ir, sizeof ir);
        if (r < 0) {
            reply(c, "NO \"Malformed initial response\"");
            return 1;
        }
        if (r == 0) {
            reply(c, "\"\""); /* the empty challenge */
            char resp[1500];
            size_t len;
            bool toolong;
            if (!get_line(c, resp, sizeof resp, &len, why, &toolong))
                return -1;
            const char *q = resp;
            if (toolong || next_word(&q, ir, sizeof ir) != 1) {
                reply(c, "NO \"Malformed SASL response\"");
                return 1;
            }
            if (!strcmp(ir, "*")) {
                reply(c, "NO \"Authentication aborted\"");
                return 1;
            }
        }
        char user[256];
        bool ok;
        if (!sasl_plain(ir, strlen(ir), user, sizeof user, &ok)) {
            reply(c, "NO \"Malformed SASL PLAIN response\"");
            return 1;
        }
        if (!login_result(m, user, ok)) {
            reply(c, "BYE \"Too many failed logins\"");
            *why = END_TOO_MANY_ERRORS;
            return -1;
        }
        reply(c, ok ? "OK \"Logged in\"" : "NO \"Authentication failed\"");
        if (ok)
            load_scripts(c, &m->st);
    } else if (!m->authed) {
        c->errors++;
        reply(c, "NO \"Authenticate first\"");
    } else if (!strcasecmp(verb, "LISTSCRIPTS")) {
        for (size_t i = 0; i < m->st.n; i++) {
            sieve_string(c, m->st.v[i].name);
            reply(c, "%s", m->st.v[i].active ? " ACTIVE" : "");
        }
        reply(c, "OK \"Listscripts completed\"");
    } else if (!strcasecmp(verb, "GETSCRIPT")) {
        if (next_word(&p, a1, sizeof a1) != 1) {
            reply(c, "NO \"GETSCRIPT needs a script name\"");
            return 1;
        }
        for (size_t i = 0; i < m->st.n; i++) {
            if (strcmp(m->st.v[i].name, a1) != 0)
                continue;
            reply(c, "{%zu}", m->st.v[i].len);
            reply_bytes(c, m->st.v[i].data, m->st.v[i].len);
            reply(c, "OK \"Getscript completed\"");
            c->messages++;
            return 1;
        }
        reply(c, "NO (NONEXISTENT) \"There is no script by that name\"");
    } else if (!strcasecmp(verb, "HAVESPACE") || !strcasecmp(verb, "PUTSCRIPT") || !strcasecmp(verb, "SETACTIVE") ||
               !strcasecmp(verb, "DELETESCRIPT") || !strcasecmp(verb, "RENAMESCRIPT") ||
               !strcasecmp(verb, "CHECKSCRIPT")) {
        reply(c, "NO \"This server's script store is read-only\"");
    } else {
        c->errors++;
        reply(c, "NO \"Unknown command\"");
    }
    return 1;
}

/* ---- the loop ---- */

void serve_mailbox(struct conn *c, enum end_reason *why)
{
    struct mbox *m = calloc(1, sizeof *m);
    if (!m) {
        *why = END_ERROR;
        return;
    }
    m->c = c;
    m->cur = SIZE_MAX;
    uint32_t proto = opt.proto;
    char caps[256];
    switch (proto) {
    case MAILTLS_PROTO_IMAP:
        reply(c, "* OK [CAPABILITY %s] %s mailtls-server IMAP4rev1 ready", capline(m, caps, sizeof caps), hostname);
        break;
    case MAILTLS_PROTO_POP3: reply(c, "+OK %s mailtls-server POP3 ready", hostname); break;
    case MAILTLS_PROTO_NNTP:
        load_spool(c, &m->st);
        reply(c, "201 %s mailtls-server news ready (no posting)", hostname);
        break;
    default: sieve_caps(m, "mailtls-server ManageSieve ready"); break;
    }

    static char line[LINE_MAX_IN];
    for (;;) {
        if (c->errors >= MAX_ERRORS) {
            reply(c, "%s", proto == MAILTLS_PROTO_IMAP   ? "* BYE Too many errors"
                           : proto == MAILTLS_PROTO_POP3 ? "-ERR Too many errors"
                           : proto == MAILTLS_PROTO_NNTP ? "400 Too many errors"
                                                         : "BYE \"Too many errors\"");
            *why = END_TOO_MANY_ERRORS;
            break;
        }
        size_t len;
        bool toolong;
        if (!get_line(c, line, sizeof line, &len, why, &toolong)) {
            if (*why == END_TIMEOUT)
                reply(c, "%s", proto == MAILTLS_PROTO_IMAP   ? "* BYE Idle for too long"
                               : proto == MAILTLS_PROTO_POP3 ? "-ERR Idle for too long"
                               : proto == MAILTLS_PROTO_NNTP ? "400 Idle for too long"
                                                             : "BYE \"Idle for too long\"");
            break;
        }
        if (toolong || memchr(line, '\0', len)) {
            c->errors++;
            reply(c, "%s", proto == MAILTLS_PROTO_IMAP   ? "* BAD Line too long or NUL in it"
                           : proto == MAILTLS_PROTO_POP3 ? "-ERR Line too long or NUL in it"
                           : proto == MAILTLS_PROTO_NNTP ? "501 Line too long or NUL in it"
                                                         : "NO \"Line too long or NUL in it\"");
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
                reply(c, "%s", proto == MAILTLS_PROTO_IMAP ? "* BAD Command refused" : "-ERR Command refused");
            continue;
        }
        int r;
        switch (proto) {
        case MAILTLS_PROTO_IMAP: r = imap_command(m, line, why); break;
        case MAILTLS_PROTO_POP3: r = pop3_command(m, line, why); break;
        case MAILTLS_PROTO_NNTP: r = nntp_command(m, line, why); break;
        default: r = sieve_command(m, line, why); break;
        }
        if (r <= 0)
            break;
        if (c->dead) {
            *why = END_ERROR;
            break;
        }
    }
    store_free(&m->st);
    free(m);
}
