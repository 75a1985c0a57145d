/*
 * mailtls-server's POP3 dialogue (RFC 1939/2449, STLS from RFC 2595): USER/PASS and
 * AUTH PLAIN, then the maildir that the SMTP side delivers into; DELE deletes at QUIT.
 *
 * Depends on server-store.c (the store, logins, the loop) and server-conn.c; used
 * only by serve() in mailtls-server.c, through serve_pop3().
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "server-dialogues.h"
#include "server-store.h"
#include "server.h"

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

/* After a login, in both its forms: false when the connection is to end. */
static bool pop3_login(struct mbox *m, const char *user, bool ok, const char *refusal, enum end_reason *why)
{
    if (!login_result(m, user, ok)) {
        reply(m->c, "-ERR [AUTH] Too many failed logins");
        *why = END_TOO_MANY_ERRORS;
        return false;
    }
    if (ok)
        pop3_logged_in(m);
    else
        reply(m->c, "%s", refusal);
    return true;
}

static int pop3_pass(struct mbox *m, const char *arg, enum end_reason *why)
{
    if (!m->pop_user[0]) {
        reply(m->c, "-ERR USER first");
        return 1;
    }
    char user[128];
    snprintf(user, sizeof user, "%s", m->pop_user);
    m->pop_user[0] = '\0';
    bool ok = account_ok(user, arg);
    return pop3_login(m, user, ok, "-ERR [AUTH] Invalid user name or password", why) ? 1 : -1;
}

/* AUTH [PLAIN [initial-response]] (RFC 5034). */
static int pop3_auth(struct mbox *m, const char *arg, enum end_reason *why)
{
    struct conn *c = m->c;
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
    return pop3_login(m, user, ok, "-ERR [AUTH] Authentication failed", why) ? 1 : -1;
}

/* The AUTHORIZATION state (RFC 1939 section 4): only the login commands. */
static int pop3_authorization(struct mbox *m, const char *verb, const char *arg, enum end_reason *why)
{
    struct conn *c = m->c;
    if (!strcasecmp(verb, "USER")) {
        if (!*arg || strlen(arg) >= sizeof m->pop_user) {
            reply(c, "-ERR USER needs a name");
        } else {
            snprintf(m->pop_user, sizeof m->pop_user, "%s", arg);
            reply(c, "+OK Send PASS");
        }
    } else if (!strcasecmp(verb, "PASS")) {
        return pop3_pass(m, arg, why);
    } else if (!strcasecmp(verb, "AUTH")) {
        return pop3_auth(m, arg, why);
    } else if (!strcasecmp(verb, "APOP")) {
        reply(c, "-ERR APOP is not offered (the greeting has no timestamp)");
    } else {
        c->errors++;
        reply(c, "-ERR %.40s: log in first (USER/PASS or AUTH PLAIN)", verb);
    }
    return 1;
}

/* LIST or UIDL, of one message or of all. */
static void pop3_list(struct mbox *m, const char *arg, bool uidl)
{
    struct conn *c = m->c;
    char uid[72];
    if (*arg) {
        struct item *it = pop3_msg(m, arg);
        if (!it)
            return;
        size_t n = (size_t)(it - m->st.v) + 1;
        if (uidl) {
            pop3_uid(it, uid);
            reply(c, "+OK %zu %s", n, uid);
        } else {
            reply(c, "+OK %zu %zu", n, it->len);
        }
        return;
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
}

/* TOP msg n: the header and the first n lines of the body. */
static void pop3_top(struct mbox *m, const char *arg)
{
    struct conn *c = m->c;
    struct item *it = pop3_msg(m, arg);
    const char *sp2 = strchr(arg, ' ');
    char *end;
    unsigned long lines = sp2 ? strtoul(sp2 + 1, &end, 10) : 0;
    if (!it)
        return;
    if (!sp2 || !isdigit((unsigned char)sp2[1]) || *end) {
        reply(c, "-ERR TOP needs a message number and a line count");
        return;
    }
    size_t n = it->hdrlen;
    for (unsigned long k = 0; k < lines && n < it->len; k++) {
        const char *eol = memchr(it->data + n, '\n', it->len - n);
        n = eol ? (size_t)(eol - it->data) + 1 : it->len;
    }
    reply(c, "+OK Top of message follows");
    reply_dotted(c, it->data, n);
}

/* The TRANSACTION state (RFC 1939 section 5): the maildrop's commands. */
static void pop3_transaction(struct mbox *m, const char *verb, const char *arg)
{
    struct conn *c = m->c;
    if (!strcasecmp(verb, "STAT")) {
        size_t n, octets;
        pop3_totals(m, &n, &octets);
        reply(c, "+OK %zu %zu", n, octets);
    } else if (!strcasecmp(verb, "LIST") || !strcasecmp(verb, "UIDL")) {
        pop3_list(m, arg, !strcasecmp(verb, "UIDL"));
    } else if (!strcasecmp(verb, "RETR")) {
        struct item *it = pop3_msg(m, arg);
        if (!it)
            return;
        reply(c, "+OK %zu octets", it->len);
        reply_dotted(c, it->data, it->len);
        c->messages++;
    } else if (!strcasecmp(verb, "TOP")) {
        pop3_top(m, arg);
    } else if (!strcasecmp(verb, "DELE")) {
        struct item *it = pop3_msg(m, arg);
        if (!it)
            return;
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
}

/* The commands of every state first, then those of the state we are in. */
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
        return pop3_authorization(m, verb, arg, why);
    } else {
        pop3_transaction(m, verb, arg);
    }
    return 1;
}

static void pop3_greet(struct mbox *m)
{
    reply(m->c, "+OK %s mailtls-server POP3 ready", hostname);
}

static const struct mailbox_dialogue pop3 = {
    .greet = pop3_greet,
    .command = pop3_command,
    .too_many_errors = "-ERR Too many errors",
    .idle = "-ERR Idle for too long",
    .bad_line = "-ERR Line too long or NUL in it",
    .refused = "-ERR Command refused",
};

void serve_pop3(struct conn *c, enum end_reason *why)
{
    serve_mailbox(c, &pop3, why);
}
