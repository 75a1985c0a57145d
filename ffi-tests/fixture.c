/* mailtls C test suite: the fixture server. A small SMTP/LMTP server written with
 * the library's server API, run in a child process. It advertises PIPELINING and
 * SIZE only before TLS and AUTH PLAIN and 8BITMIME only after it, records every
 * command (and the message) in shared memory, and checks the library's answers. */
#include "support.h"

#include <ctype.h>
#include <errno.h>
#include <strings.h>
#include <sys/socket.h>

struct fix {
    mailtls_session *s;
    struct io_ctx io;
    struct shared *sh;
    const struct fixture_opts *o;
    int tls;
    size_t n;
    unsigned char b[64 * 1024];
};

/* Writes through the session (plaintext before TLS, encrypted after). */
static void fx_write(struct fix *f, const char *text) {
    size_t n = strlen(text), off = 0;
    int tries = 0;
    while (off < n) {
        uintptr_t k = 0;
        mailtls_result rc = mailtls_session_write(f->s, (const uint8_t *)text + off, n - off, &k);
        if (rc == MAILTLS_RESULT_WOULD_BLOCK) {
            f->sh->wouldblocks++;
            if (!mailtls_session_wants_write(f->s))
                child_failf(f->sh, "write would block but wants_write is false");
            if (++tries > 1000000)
                child_fail(f->sh, "write never completes");
            continue;
        }
        if (rc != MAILTLS_RESULT_OK)
            child_fail(f->sh, "server write of \"%s\": %s: %s", show_bytes(text, n), mailtls_result_name(rc),
                       mailtls_session_last_error(f->s));
        off += k;
    }
    for (;;) {
        mailtls_result rc = mailtls_session_flush(f->s);
        if (rc == MAILTLS_RESULT_OK)
            break;
        if (rc != MAILTLS_RESULT_WOULD_BLOCK)
            child_fail(f->sh, "server flush: %s", mailtls_result_name(rc));
        f->sh->wouldblocks++;
        if (++tries > 1000000)
            child_fail(f->sh, "flush never completes");
    }
}

/* More input: raw through the transport before TLS, decrypted after. 0 at the end. */
static int fx_fill(struct fix *f) {
    if (f->n == sizeof f->b)
        child_fail(f->sh, "line too long for the fixture");
    int tries = 0;
    for (;;) {
        uintptr_t k = 0;
        mailtls_result rc;
        int32_t e = 0;
        if (f->tls) {
            rc = mailtls_session_read(f->s, f->b + f->n, sizeof f->b - f->n, &k);
        } else {
            e = io_read(&f->io, f->b + f->n, sizeof f->b - f->n, &k);
            rc = e == 0 ? MAILTLS_RESULT_OK : e == EAGAIN ? MAILTLS_RESULT_WOULD_BLOCK : MAILTLS_RESULT_IO;
            if (rc == MAILTLS_RESULT_OK && k == 0)
                rc = MAILTLS_RESULT_CLOSED;
        }
        if (rc == MAILTLS_RESULT_WOULD_BLOCK) {
            f->sh->wouldblocks++;
            if (f->tls && !mailtls_session_wants_read(f->s))
                child_failf(f->sh, "read would block but wants_read is false");
            if (++tries > 1000000)
                child_fail(f->sh, "read never completes");
            continue;
        }
        if (rc == MAILTLS_RESULT_CLOSED || rc == MAILTLS_RESULT_PEER_CLOSED || rc == MAILTLS_RESULT_IO) {
            shared_log(f->sh, "EOF %s\n", mailtls_result_name(rc));
            return 0;
        }
        if (rc != MAILTLS_RESULT_OK)
            child_fail(f->sh, "server read: %s: %s", mailtls_result_name(rc), mailtls_session_last_error(f->s));
        shared_record(f->sh, f->b + f->n, k);
        f->n += k;
        return 1;
    }
}

/* The next line without its CRLF into out; 0 at the end of input. */
static int fx_line(struct fix *f, char *out, size_t cap) {
    for (;;) {
        unsigned char *nl = memchr(f->b, '\n', f->n);
        if (nl) {
            size_t l = (size_t)(nl - f->b) + 1, c = l;
            while (c > 0 && (f->b[c - 1] == '\n' || f->b[c - 1] == '\r'))
                c--;
            if (c >= cap)
                c = cap - 1;
            memcpy(out, f->b, c);
            out[c] = 0;
            memmove(f->b, f->b + l, f->n - l);
            f->n -= l;
            return 1;
        }
        if (!fx_fill(f))
            return 0;
    }
}

static void fx_ehlo(struct fix *f) {
    char r[512];
    if (!f->tls)
        snprintf(r, sizeof r, "250-fixture.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n%s250 ENHANCEDSTATUSCODES\r\n",
                 mailtls_server_offer_starttls(f->s) ? "250-STARTTLS\r\n" : "");
    else {
        if (mailtls_server_offer_starttls(f->s))
            child_failf(f->sh, "offer_starttls is true under TLS");
        snprintf(r, sizeof r, "250-fixture.test\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n");
    }
    fx_write(f, r);
}

static mailtls_result fx_finish_starttls(struct fix *f, mailtls_result rc) {
    int tries = 0;
    while (rc == MAILTLS_RESULT_WOULD_BLOCK) {
        f->sh->wouldblocks++;
        int wr = mailtls_session_wants_read(f->s), ww = mailtls_session_wants_write(f->s);
        if (f->o->io == FIX_EAGAIN &&
            (wr != (f->io.last_block == 'r') || ww != (f->io.last_block == 'w')))
            child_failf(f->sh, "server handshake: the %s callback blocked but wants_read=%d wants_write=%d",
                        f->io.last_block == 'r' ? "read" : "write", wr, ww);
        if (++tries > 1000000)
            child_fail(f->sh, "server handshake never completes");
        rc = mailtls_session_continue(f->s);
    }
    return rc;
}

void fixture_server(int fd, void *arg, struct shared *sh) {
    static struct fix fx; /* large: keep it off the stack */
    struct fix *f = &fx;
    memset(f, 0, sizeof *f);
    f->sh = sh;
    f->o = arg;
    io_init(&f->io, fd);
    if (mailtls_server_new(f->o->cfg, f->o->proto, "127.0.0.1", &f->s) != MAILTLS_RESULT_OK)
        child_fail(sh, "mailtls_server_new failed");
    mailtls_result rc = MAILTLS_RESULT_OK;
    if (f->o->io == FIX_FD) {
        rc = mailtls_session_set_fd(f->s, fd);
    } else {
        f->io.max_chunk = f->o->io == FIX_ONE_BYTE ? 1 : 0;
        f->io.eagain_alternate = f->o->io == FIX_EAGAIN;
        rc = mailtls_session_set_io(f->s, io_read, io_write, &f->io);
    }
    if (rc != MAILTLS_RESULT_OK)
        child_fail(sh, "setting the server transport: %s", mailtls_result_name(rc));

    fx_write(f, "220 fixture.test ESMTP mailtls fixture\r\n");
    char line[2048];
    int quit = 0;
    while (!quit && fx_line(f, line, sizeof line)) {
        shared_log(sh, "C: %s\n", line);
        char verb[16] = {0};
        for (size_t i = 0; i < sizeof verb - 1 && line[i] && line[i] != ' '; i++)
            verb[i] = (char)toupper((unsigned char)line[i]);

        if (f->tls && strcmp(verb, "STARTTLS") == 0 && f->o->second_starttls_via_library) {
            rc = mailtls_server_starttls(f->s, NULL, 0);
            sh->second_starttls_rc = rc;
            shared_log(sh, "R: %s\n", mailtls_result_name(rc));
            continue;
        }
        rc = mailtls_server_check_command(f->s, (const uint8_t *)line, strlen(line));
        if (rc != MAILTLS_RESULT_OK) {
            const char *reply = mailtls_server_reply(f->s, rc);
            shared_log(sh, "R: %s\n", mailtls_result_name(rc));
            if (strcmp(verb, "STARTTLS") == 0)
                sh->second_starttls_rc = rc;
            if (reply == NULL)
                child_fail(sh, "no reply text for refusal %s", mailtls_result_name(rc));
            fx_write(f, reply);
            continue;
        }
        if (!strcmp(verb, "EHLO") || !strcmp(verb, "HELO") || !strcmp(verb, "LHLO")) {
            if (f->tls && mailtls_server_reset_required(f->s))
                child_failf(sh, "reset_required still true after the new EHLO passed check_command");
            fx_ehlo(f);
        } else if (!strcmp(verb, "STARTTLS")) {
            if (f->tls)
                child_fail(sh, "check_command let a second STARTTLS through");
            rc = mailtls_server_starttls(f->s, f->b, f->n);
            f->n = 0; /* whatever followed the command is the library's now: never executed */
            rc = fx_finish_starttls(f, rc);
            sh->starttls_rc = rc;
            shared_log(sh, "STARTTLS: %s\n", mailtls_result_name(rc));
            if (rc == MAILTLS_RESULT_OK) {
                f->tls = 1;
                sh->tls_was_active = 1;
                if (!mailtls_session_tls_active(f->s))
                    child_failf(sh, "STARTTLS OK but tls_active is false");
                if (!mailtls_server_reset_required(f->s))
                    child_failf(sh, "reset_required is false right after STARTTLS");
                const char *v = mailtls_report_tls_version(mailtls_session_report(f->s));
                snprintf(sh->tls_version, sizeof sh->tls_version, "%s", v ? v : "");
                sh->resumed = mailtls_report_resumed(mailtls_session_report(f->s));
            } else if (rc != MAILTLS_RESULT_TLS_UNAVAILABLE) {
                break; /* injection, handshake failure: close the connection */
            }
        } else if (!strcmp(verb, "MAIL")) {
            sh->mail_executed++;
            fx_write(f, "250 2.1.0 sender ok\r\n");
        } else if (!strcmp(verb, "RCPT")) {
            fx_write(f, "250 2.1.5 recipient ok\r\n");
        } else if (!strcmp(verb, "DATA")) {
            fx_write(f, "354 end with <CRLF>.<CRLF>\r\n");
            int ended = 0;
            while (fx_line(f, line, sizeof line)) {
                if (strcmp(line, ".") == 0) {
                    ended = 1;
                    break;
                }
                size_t l = strlen(line);
                if (sh->nmsg + l + 2 <= sizeof sh->msg) {
                    memcpy(sh->msg + sh->nmsg, line, l);
                    memcpy(sh->msg + sh->nmsg + l, "\r\n", 2);
                    sh->nmsg += l + 2;
                }
            }
            if (!ended)
                break;
            shared_log(sh, "message: %zu bytes\n", sh->nmsg);
            fx_write(f, f->o->proto == MAILTLS_PROTO_LMTP ? "250 2.0.0 delivered\r\n" : "250 2.0.0 queued\r\n");
        } else if (!strcmp(verb, "NOOP") || !strcmp(verb, "RSET")) {
            fx_write(f, "250 2.0.0 ok\r\n");
        } else if (!strcmp(verb, "QUIT")) {
            fx_write(f, "221 2.0.0 bye\r\n");
            quit = 1;
        } else {
            fx_write(f, "502 5.5.2 command not recognized\r\n");
        }
    }
    if (f->tls && !f->o->no_close_notify) {
        rc = mailtls_session_close(f->s);
        while (rc == MAILTLS_RESULT_WOULD_BLOCK)
            rc = mailtls_session_flush(f->s);
    }
    const mailtls_report *r = mailtls_session_report(f->s);
    sh->discarded = mailtls_report_discarded_bytes(r);
    sh->outcome = mailtls_report_outcome(r);
    sh->io_calls = f->io.rcalls + f->io.wcalls;
    sh->read_eagains = f->io.read_eagains;
    sh->write_eagains = f->io.write_eagains;
    mailtls_session_free(f->s);
    f->s = NULL;
}
