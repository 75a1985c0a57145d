/*
 * mailtls-server's IMAP dialogue (RFC 9051/3501): enough for real clients to log in
 * over STARTTLS or implicit TLS and read the maildir that the SMTP side delivers into,
 * as INBOX; nothing in it is changed. UIDs are positions (UIDVALIDITY changes whenever
 * the mailbox does).
 *
 * Depends on server-store.c (the store, logins, the loop), server-conn.c and common.c;
 * used only by serve() in mailtls-server.c, through serve_imap().
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server-dialogues.h"
#include "server-store.h"
#include "server.h"

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

/* LOGIN user password: false when the connection must end. */
static bool imap_login(struct mbox *m, const char *tag, const char *p, enum end_reason *why)
{
    struct conn *c = m->c;
    char caps[256];
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
            return false;
        }
        if (ok)
            reply(c, "%s OK [CAPABILITY %s] Logged in", tag, capline(m, caps, sizeof caps));
        else
            reply(c, "%s NO [AUTHENTICATIONFAILED] Authentication failed", tag);
    }
    return true;
}

/* The commands after a login (RFC 9051 sections 6.3 and 6.4). */
static void imap_authenticated(struct mbox *m, const char *tag, const char *verb, const char *args, bool uid)
{
    struct conn *c = m->c;
    if (!strcasecmp(verb, "SELECT") || !strcasecmp(verb, "EXAMINE")) {
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
        if (!imap_login(m, tag, args, why))
            return -1;
    } else if (!strcasecmp(verb, "AUTHENTICATE")) {
        if (m->authed)
            reply(c, "%s BAD Already logged in", tag);
        else if (!imap_authenticate(m, tag, args, why))
            return -1;
    } else if (!m->authed) {
        c->errors++;
        reply(c, "%s BAD %s: log in first", tag, verb);
    } else {
        imap_authenticated(m, tag, verb, args, uid);
    }
    return 1;
}

static void imap_greet(struct mbox *m)
{
    char caps[256];
    reply(m->c, "* OK [CAPABILITY %s] %s mailtls-server IMAP4rev1 ready", capline(m, caps, sizeof caps), hostname);
}

static const struct mailbox_dialogue imap = {
    .greet = imap_greet,
    .command = imap_command,
    .too_many_errors = "* BYE Too many errors",
    .idle = "* BYE Idle for too long",
    .bad_line = "* BAD Line too long or NUL in it",
    .refused = "* BAD Command refused",
};

void serve_imap(struct conn *c, enum end_reason *why)
{
    serve_mailbox(c, &imap, why);
}
