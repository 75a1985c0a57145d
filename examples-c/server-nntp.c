/*
 * mailtls-server's NNTP dialogue (RFC 3977, STARTTLS from RFC 4642, AUTHINFO USER/PASS
 * from RFC 4643): a read-only news spool, one directory per group and one numbered
 * file per article (--spool), or one sample group; no posting.
 *
 * Depends on server-store.c (the store, logins, the loop) and server-conn.c; used
 * only by serve() in mailtls-server.c, through serve_nntp().
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server-dialogues.h"
#include "server-store.h"
#include "server.h"

/* ---- the spool ---- */

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
    store_sort(st);
}

/* ---- the commands ---- */

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

/* AUTHINFO USER and PASS (RFC 4643 section 2.3). */
static int nntp_authinfo(struct mbox *m, const char *arg, enum end_reason *why)
{
    struct conn *c = m->c;
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
    return 1;
}

/* GROUP name, or LISTGROUP [name] with the article numbers. */
static void nntp_select_group(struct mbox *m, const char *arg, bool listgroup)
{
    struct conn *c = m->c;
    char g[256];
    const char *p = arg;
    if (next_word(&p, g, sizeof g) != 1) {
        if (!listgroup || !m->group) {
            reply(c, listgroup ? "412 No newsgroup selected" : "501 Syntax: GROUP name");
            return;
        }
        snprintf(g, sizeof g, "%s", m->group);
    }
    size_t lo, hi;
    if (!nntp_group(m, g, &lo, &hi)) {
        reply(c, "411 No such newsgroup");
        return;
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
}

/* ARTICLE, HEAD, BODY or STAT. */
static void nntp_read(struct mbox *m, const char *verb, const char *arg)
{
    struct conn *c = m->c;
    unsigned num = 0;
    struct item *it = nntp_article(m, arg, &num);
    if (!it)
        return;
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
}

/* NEXT or LAST: the current article moves within the group. */
static void nntp_next_last(struct mbox *m, bool next)
{
    struct conn *c = m->c;
    if (!m->group) {
        reply(c, "412 No newsgroup selected");
        return;
    }
    if (m->cur == SIZE_MAX) {
        reply(c, "420 Current article number is invalid");
        return;
    }
    size_t lo, hi;
    nntp_group(m, m->group, &lo, &hi);
    if (next ? m->cur + 1 >= hi : m->cur <= lo) {
        reply(c, next ? "421 No next article in this group" : "422 No previous article in this group");
        return;
    }
    m->cur = next ? m->cur + 1 : m->cur - 1;
    reply(c, "223 %u %s", m->st.v[m->cur].num, m->st.v[m->cur].msgid);
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
        return nntp_authinfo(m, arg, why);
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
        nntp_select_group(m, arg, !strcasecmp(verb, "LISTGROUP"));
    } else if (!strcasecmp(verb, "ARTICLE") || !strcasecmp(verb, "HEAD") || !strcasecmp(verb, "BODY") ||
               !strcasecmp(verb, "STAT")) {
        nntp_read(m, verb, arg);
    } else if (!strcasecmp(verb, "NEXT") || !strcasecmp(verb, "LAST")) {
        nntp_next_last(m, !strcasecmp(verb, "NEXT"));
    } else {
        c->errors++;
        reply(c, "500 Unknown command");
    }
    return 1;
}

static void nntp_greet(struct mbox *m)
{
    load_spool(m->c, &m->st);
    reply(m->c, "201 %s mailtls-server news ready (no posting)", hostname);
}

/* `refused` (a command the library refused without a reply of its own) is POP3's
 * "-ERR" here and in ManageSieve: what the example has always sent there. */
static const struct mailbox_dialogue nntp = {
    .greet = nntp_greet,
    .command = nntp_command,
    .too_many_errors = "400 Too many errors",
    .idle = "400 Idle for too long",
    .bad_line = "501 Line too long or NUL in it",
    .refused = "-ERR Command refused",
};

void serve_nntp(struct conn *c, enum end_reason *why)
{
    serve_mailbox(c, &nntp, why);
}
