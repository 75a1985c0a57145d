/*
 * mailtls-server's ManageSieve dialogue (RFC 5804): AUTHENTICATE "PLAIN", then a
 * read-only script store (--scripts: NAME.sieve files, the active one named in
 * .active), or one sample script.
 *
 * Depends on server-store.c (the store, logins, the loop), server-conn.c and common.c;
 * used only by serve() in mailtls-server.c, through serve_sieve().
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "server-dialogues.h"
#include "server-store.h"
#include "server.h"

/* ---- the script store ---- */

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
    store_sort(st);
}

/* ---- the commands ---- */

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

/* AUTHENTICATE "PLAIN" [initial-response] (RFC 5804 section 2.1): -1 when the
 * connection must end. */
static int sieve_authenticate(struct mbox *m, const char *p, enum end_reason *why)
{
    struct conn *c = m->c;
    char mech[1400];
    if (m->authed) {
        reply(c, "NO \"Already authenticated\"");
        return 1;
    }
    if (next_word(&p, mech, sizeof mech) != 1 || strcasecmp(mech, "PLAIN") != 0) {
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
    return 1;
}

/* GETSCRIPT name: the script as a literal. */
static void sieve_getscript(struct mbox *m, const char *p)
{
    struct conn *c = m->c;
    char name[1400];
    if (next_word(&p, name, sizeof name) != 1) {
        reply(c, "NO \"GETSCRIPT needs a script name\"");
        return;
    }
    for (size_t i = 0; i < m->st.n; i++) {
        if (strcmp(m->st.v[i].name, name) != 0)
            continue;
        reply(c, "{%zu}", m->st.v[i].len);
        reply_bytes(c, m->st.v[i].data, m->st.v[i].len);
        reply(c, "OK \"Getscript completed\"");
        c->messages++;
        return;
    }
    reply(c, "NO (NONEXISTENT) \"There is no script by that name\"");
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
        return sieve_authenticate(m, p, why);
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
        sieve_getscript(m, p);
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

static void sieve_greet(struct mbox *m)
{
    sieve_caps(m, "mailtls-server ManageSieve ready");
}

static const struct mailbox_dialogue sieve = {
    .greet = sieve_greet,
    .command = sieve_command,
    .too_many_errors = "BYE \"Too many errors\"",
    .idle = "BYE \"Idle for too long\"",
    .bad_line = "NO \"Line too long or NUL in it\"",
    .refused = "-ERR Command refused",
};

void serve_sieve(struct conn *c, enum end_reason *why)
{
    serve_mailbox(c, &sieve, why);
}
