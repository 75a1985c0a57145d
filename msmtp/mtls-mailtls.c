/*
 * mtls-mailtls.c
 *
 * A TLS backend for msmtp (an SMTP client) on mailtls, the library of the
 * repository this file is kept in: it implements msmtp's src/mtls.h, as
 * mtls-gnutls.c, mtls-openssl.c and mtls-libtls.c do, and is compiled into msmtp
 * in their place (tests/msmtp/run.sh shows how).
 *
 * Copyright (C) 2026 the mailtls authors
 *
 * This file is written for msmtp and is licensed as msmtp is, unlike the rest
 * of mailtls (Apache-2.0 OR MIT):
 *
 *   This program is free software; you can redistribute it and/or modify
 *   it under the terms of the GNU General Public License as published by
 *   the Free Software Foundation; either version 3 of the License, or
 *   (at your option) any later version.
 *
 *   This program is distributed in the hope that it will be useful,
 *   but WITHOUT ANY WARRANTY; without even the implied warranty of
 *   MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
 *   GNU General Public License for more details.
 *
 *   You should have received a copy of the GNU General Public License
 *   along with this program.  If not, see <http://www.gnu.org/licenses/>.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * What it does with msmtp's settings:
 *   tls_trust_file FILE    policy verify against the CA certificates of FILE
 *   tls_trust_file system  policy verify against the system store
 *   tls_fingerprint SHA256 policy encrypt, and the peer certificate's SHA-256
 *                          must equal it (SHA-1 and MD5 are refused)
 *   tls_certcheck off      policy encrypt: the certificate is recorded, not checked
 *   tls_cert_file/key_file, tls_crl_file, tls_priorities, tls_min_dh_prime_bits:
 *                          refused with a message (mailtls has no such setting)
 *
 * The intolerance memory: when the environment variable MAILTLS_MEMORY names a
 * file, the backend opens it (mailtls_memory_open_file) and every handshake starts
 * at the rung the memory advises for (smtp, host, port). A handshake that fails in
 * a way a more conservative hello may avoid (the server, or a box in front of it,
 * reset the connection on the hello) is recorded there and the run fails with a
 * message naming the rung the next run starts at: msmtp's protocol code, not the
 * TLS layer, owns the connection, so the backend cannot redo the EHLO and STARTTLS
 * on a new one by itself. The next run delivers.
 */

#ifdef HAVE_CONFIG_H
# include "config.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <mailtls.h>

#include "gettext.h"
#define _(string) gettext(string)
#define N_(string) gettext_noop(string)

#include "xalloc.h"
#include "readbuf.h"
#include "tools.h"
#include "mtls.h"


struct mtls_internals_t
{
    mailtls_config_builder *builder;  /* kept until mtls_start: the timeout is on the socket */
    const mailtls_memory *memory;     /* NULL without MAILTLS_MEMORY */
    const mailtls_config *config;
    mailtls_session *session;
};


/* The builder's last error, in an allocated string. */
static char *builder_error(const mailtls_config_builder *b, mailtls_result r)
{
    char buf[1024];

    if (mailtls_config_builder_last_error(b, buf, sizeof(buf)) != MAILTLS_RESULT_OK
            || buf[0] == '\0')
    {
        return xstrdup(mailtls_result_str(r));
    }
    return xstrdup(buf);
}

static void internals_free(struct mtls_internals_t *in)
{
    if (in)
    {
        mailtls_session_free(in->session);
        mailtls_config_free(in->config);
        mailtls_config_builder_free(in->builder);
        mailtls_memory_free(in->memory);
        free(in);
    }
}


/*
 * mtls_lib_init()
 *
 * see mtls.h
 */

int mtls_lib_init(char **errstr)
{
    (void)errstr;
    return TLS_EOK;
}


/*
 * mtls_init()
 *
 * see mtls.h
 */

int mtls_init(mtls_t *mtls,
        const char *key_file, const char *cert_file, const char *pin,
        const char *trust_file, const char *crl_file,
        const unsigned char *sha256_fingerprint,
        const unsigned char *sha1_fingerprint,
        const unsigned char *md5_fingerprint,
        int min_dh_prime_bits, const char *priorities,
        const char *hostname,
        int no_certcheck,
        char **errstr)
{
    struct mtls_internals_t *in;
    const mailtls_config *probe = NULL;
    const char *memory_path;
    uint32_t policy;
    mailtls_result r;

    (void)pin;
    if (key_file || cert_file)
    {
        *errstr = xasprintf(_("cannot use a client certificate: %s"),
                _("mailtls has no client certificates"));
        return TLS_ELIBFAILED;
    }
    if (crl_file)
    {
        *errstr = xasprintf(_("cannot use the CRL file %s: %s"), crl_file,
                _("mailtls does not read CRL files"));
        return TLS_ELIBFAILED;
    }
    if (sha1_fingerprint || md5_fingerprint)
    {
        *errstr = xasprintf(
                _("cannot use deprecated fingerprints, please update to SHA256"));
        return TLS_ELIBFAILED;
    }
    if (min_dh_prime_bits >= 0)
    {
        *errstr = xasprintf(
                _("cannot set minimum number of DH prime bits for TLS: %s"),
                _("mailtls does not offer finite-field DH"));
        return TLS_ELIBFAILED;
    }
    if (priorities)
    {
        *errstr = xasprintf(_("cannot set priorities for TLS session: %s"),
                _("mailtls chooses its hellos itself (its fallback ladder)"));
        return TLS_ELIBFAILED;
    }

    in = xcalloc(1, sizeof(struct mtls_internals_t));
    if ((r = mailtls_config_builder_new(MAILTLS_ROLE_CLIENT, &in->builder))
            != MAILTLS_RESULT_OK)
    {
        *errstr = xasprintf(_("cannot initialize TLS session: %s"),
                mailtls_result_str(r));
        internals_free(in);
        return TLS_ELIBFAILED;
    }

    if (no_certcheck)
    {
        policy = MAILTLS_POLICY_ENCRYPT;
    }
    else if (sha256_fingerprint)
    {
        /* The certificate is recorded under encrypt; mtls_start compares its
         * fingerprint. */
        policy = MAILTLS_POLICY_ENCRYPT;
        memcpy(mtls->fingerprint, sha256_fingerprint, 32);
        mtls->have_sha256_fingerprint = 1;
    }
    else
    {
        policy = MAILTLS_POLICY_VERIFY;
        if (trust_file && strcmp(trust_file, "system") != 0)
        {
            r = mailtls_config_builder_set_ca_file(in->builder, trust_file);
            if (r != MAILTLS_RESULT_OK)
            {
                *errstr = xasprintf(
                        _("cannot set X509 trust file %s for TLS session: %s"),
                        trust_file, mailtls_result_str(r));
                internals_free(in);
                return TLS_EFILE;
            }
        }
        mtls->have_trust_file = (trust_file != NULL);
    }
    mailtls_config_builder_set_policy(in->builder, policy);

    memory_path = getenv("MAILTLS_MEMORY");
    if (memory_path && memory_path[0] != '\0')
    {
        if ((r = mailtls_memory_open_file(memory_path, &in->memory))
                != MAILTLS_RESULT_OK)
        {
            *errstr = xasprintf(_("cannot open the mailtls memory %s: %s"),
                    memory_path, mailtls_result_str(r));
            internals_free(in);
            return TLS_EFILE;
        }
        mailtls_config_builder_set_memory(in->builder, in->memory);
    }

    /* Build once now, so that an unreadable trust file is reported here, as the
     * other backends do; mtls_start builds again with the socket's timeout. */
    if ((r = mailtls_config_builder_build(in->builder, &probe)) != MAILTLS_RESULT_OK)
    {
        char *detail = builder_error(in->builder, r);
        *errstr = xasprintf(_("cannot initialize TLS session: %s"), detail);
        free(detail);
        internals_free(in);
        return r == MAILTLS_RESULT_TRUST_ANCHORS ? TLS_EFILE : TLS_ELIBFAILED;
    }
    mailtls_config_free(probe);

    mtls->internals = in;
    mtls->hostname = xstrdup(hostname);
    mtls->no_certcheck = no_certcheck;
    return TLS_EOK;
}


/* Decodes mailtls' 64 lowercase hex digits into 32 bytes. */
static int decode_sha256(unsigned char *dest, const char *hex)
{
    int i;
    unsigned int byte;

    if (!hex || strlen(hex) != 64)
    {
        return -1;
    }
    for (i = 0; i < 32; i++)
    {
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
        {
            return -1;
        }
        dest[i] = (unsigned char)byte;
    }
    return 0;
}

/* The peer's port, for the memory's key: msmtp does not hand it to the TLS layer. */
static uint16_t peer_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
    {
        return 0;
    }
    if (ss.ss_family == AF_INET)
    {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    if (ss.ss_family == AF_INET6)
    {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return 0;
}

/* msmtp's account timeout, which net.c set on the socket; 0 when none. */
static uint32_t socket_timeout_ms(int fd)
{
    struct timeval tv;
    socklen_t len = sizeof(tv);

    if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) != 0)
    {
        return 0;
    }
    return (uint32_t)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
}

/* After a failed mtls_start: msmtp calls mtls_close only on an active session,
 * so what mtls_init and mtls_start allocated is released here. */
static int start_failed(mtls_t *mtls, int error_code)
{
    internals_free(mtls->internals);
    mtls->internals = NULL;
    free(mtls->hostname);
    mtls->hostname = NULL;
    return error_code;
}

/* Why the handshake failed, from the session and its report. */
static char *handshake_error(mailtls_session *s, mailtls_result r)
{
    const mailtls_report *rep = mailtls_session_report(s);
    const char *detail = mailtls_session_last_error(s);

    if (!detail || detail[0] == '\0')
    {
        detail = mailtls_result_str(r);
    }
    if (r == MAILTLS_RESULT_RETRY_NEEDED)
    {
        int32_t rung = mailtls_report_retry_rung(rep);
        const char *name = rung >= 0 ? mailtls_rung_name((uint32_t)rung) : NULL;
        if (getenv("MAILTLS_MEMORY") && getenv("MAILTLS_MEMORY")[0] != '\0')
        {
            return xasprintf(_("TLS handshake failed: the server broke off the TLS "
                        "handshake at the hello (intolerance recorded: the next run starts at "
                        "rung %s): %s"), name ? name : "?", detail);
        }
        return xasprintf(_("TLS handshake failed: the server broke off the TLS "
                    "handshake at the hello (a retry at rung %s may work; set MAILTLS_MEMORY "
                    "to a file to have it remembered): %s"),
                name ? name : "?", detail);
    }
    return xasprintf(_("TLS handshake failed: %s"), detail);
}


/*
 * mtls_cert_info_get()
 *
 * see mtls.h
 */

int mtls_cert_info_get(mtls_t *mtls, mtls_cert_info_t *mtci, char **errstr)
{
    const mailtls_report *rep = mailtls_session_report(mtls->internals->session);
    const char *subject;

    if (decode_sha256(mtci->sha256_fingerprint,
                mailtls_report_peer_cert_sha256(rep)) != 0)
    {
        *errstr = xasprintf(_("cannot get TLS certificate info: %s"),
                _("no peer certificate"));
        return TLS_ECERT;
    }
    /* mailtls' report has no issuer, no validity times and no SHA-1. */
    subject = mailtls_report_peer_cert_subject(rep);
    mtci->subject_info = xstrdup(subject ? subject : _("not available"));
    mtci->issuer_info = xstrdup(_("not available"));
    mtci->activation_time = 0;
    mtci->expiration_time = 0;
    return TLS_EOK;
}


/*
 * mtls_start()
 *
 * see mtls.h
 */

int mtls_start(mtls_t *mtls, int fd,
        mtls_cert_info_t *mtci, char **mtls_parameter_description, char **errstr)
{
    struct mtls_internals_t *in = mtls->internals;
    const mailtls_report *rep;
    uint32_t timeout;
    mailtls_result r;
    int error_code;

    if ((timeout = socket_timeout_ms(fd)) > 0)
    {
        mailtls_config_builder_set_timeout_ms(in->builder, timeout);
        mailtls_config_builder_set_total_timeout_ms(in->builder, timeout);
    }
    if ((r = mailtls_config_builder_build(in->builder, &in->config))
            != MAILTLS_RESULT_OK)
    {
        char *detail = builder_error(in->builder, r);
        *errstr = xasprintf(_("cannot initialize TLS session: %s"), detail);
        free(detail);
        return start_failed(mtls, TLS_ELIBFAILED);
    }
    if ((r = mailtls_client_new(in->config, MAILTLS_PROTO_SMTP, mtls->hostname,
                    peer_port(fd), &in->session)) != MAILTLS_RESULT_OK
            || (r = mailtls_session_set_fd(in->session, fd)) != MAILTLS_RESULT_OK)
    {
        *errstr = xasprintf(_("cannot create a TLS structure: %s"),
                mailtls_result_str(r));
        return start_failed(mtls, TLS_ELIBFAILED);
    }

    /* msmtp has read the 220 to STARTTLS line by line and refused to go on when
     * its buffer held more (smtp_tls_starttls), so there is never read-ahead here.
     * For implicit TLS (tls_starttls off) this is called right after connect. */
    r = mailtls_client_start_tls(in->session, NULL, 0);
    if (r != MAILTLS_RESULT_OK)
    {
        *errstr = handshake_error(in->session, r);
        switch (r)
        {
            case MAILTLS_RESULT_CERTIFICATE_NAME_MISMATCH:
            case MAILTLS_RESULT_CERTIFICATE_UNTRUSTED:
            case MAILTLS_RESULT_CERTIFICATE_EXPIRED:
            case MAILTLS_RESULT_CERTIFICATE_INVALID:
                return start_failed(mtls, TLS_ECERT);
            default:
                return start_failed(mtls, TLS_EHANDSHAKE);
        }
    }
    rep = mailtls_session_report(in->session);

    if (!mtls->no_certcheck && mtls->have_sha256_fingerprint)
    {
        unsigned char got[32];
        if (decode_sha256(got, mailtls_report_peer_cert_sha256(rep)) != 0)
        {
            *errstr = xasprintf(_("TLS certificate verification failed: %s"),
                    _("no peer certificate"));
            mailtls_session_close(in->session);
            return start_failed(mtls, TLS_ECERT);
        }
        if (memcmp(got, mtls->fingerprint, 32) != 0)
        {
            *errstr = xasprintf(_("TLS certificate verification failed: %s"),
                    _("the certificate fingerprint does not match"));
            mailtls_session_close(in->session);
            return start_failed(mtls, TLS_ECERT);
        }
    }

    if (mtls_parameter_description)
    {
        const char *v = mailtls_report_tls_version(rep);
        const char *c = mailtls_report_cipher(rep);
        const char *g = mailtls_report_group(rep);
        int32_t rung = mailtls_report_attempt_count(rep) > 0
            ? mailtls_report_attempt_rung(rep, mailtls_report_attempt_count(rep) - 1)
            : -1;
        const char *rn = rung >= 0 ? mailtls_rung_name((uint32_t)rung) : NULL;
        *mtls_parameter_description = xasprintf("%s %s %s (mailtls %s, rung %s)",
                v ? v : "?", c ? c : "?", g ? g : "?", mailtls_version(),
                rn ? rn : "?");
    }
    if (mtci)
    {
        if ((error_code = mtls_cert_info_get(mtls, mtci, errstr)) != TLS_EOK)
        {
            mailtls_session_close(in->session);
            return start_failed(mtls, error_code);
        }
    }

    {
        const char *v = mailtls_report_tls_version(rep);
        mtls->is_tls_1_3_or_newer = (v && strcmp(v, "TLSv1.3") == 0);
    }
    /* No channel binding: mailtls exports no keying material, so SCRAM-*-PLUS
     * is not offered over it. */
    mtls->channel_binding = NULL;
    mtls->is_active = 1;
    return TLS_EOK;
}


/*
 * mtls_readbuf_read()
 *
 * Wraps TLS read function to provide buffering for mtls_gets().
 */

int mtls_readbuf_read(mtls_t *mtls, readbuf_t *readbuf, char *ptr,
        char **errstr)
{
    mailtls_session *s = mtls->internals->session;

    if (readbuf->count <= 0)
    {
        size_t n = 0;
        mailtls_result r = mailtls_session_read(s, (uint8_t *)readbuf->buf,
                sizeof(readbuf->buf), &n);
        if (r == MAILTLS_RESULT_CLOSED)
        {
            return 0;
        }
        if (r != MAILTLS_RESULT_OK)
        {
            const char *detail = mailtls_session_last_error(s);
            *errstr = xasprintf(_("cannot read from TLS connection: %s"),
                    detail && detail[0] ? detail : mailtls_result_str(r));
            return TLS_EIO;
        }
        readbuf->count = (int)n;
        readbuf->ptr = readbuf->buf;
    }
    readbuf->count--;
    *ptr = *((readbuf->ptr)++);
    return 1;
}


/*
 * mtls_puts()
 *
 * see mtls.h
 */

int mtls_puts(mtls_t *mtls, const char *s, size_t len, char **errstr)
{
    mailtls_session *session = mtls->internals->session;

    while (len > 0)
    {
        size_t n = 0;
        mailtls_result r = mailtls_session_write(session, (const uint8_t *)s, len, &n);
        if (r != MAILTLS_RESULT_OK)
        {
            const char *detail = mailtls_session_last_error(session);
            *errstr = xasprintf(_("cannot write to TLS connection: %s"),
                    detail && detail[0] ? detail : mailtls_result_str(r));
            return TLS_EIO;
        }
        s += n;
        len -= n;
    }
    if (mailtls_session_flush(session) != MAILTLS_RESULT_OK)
    {
        const char *detail = mailtls_session_last_error(session);
        *errstr = xasprintf(_("cannot write to TLS connection: %s"), detail);
        return TLS_EIO;
    }
    return TLS_EOK;
}


/*
 * mtls_close()
 *
 * see mtls.h
 */

void mtls_close(mtls_t *mtls)
{
    if (mtls->is_active)
    {
        mailtls_session_close(mtls->internals->session);
    }
    internals_free(mtls->internals);
    mtls->internals = NULL;
    free(mtls->hostname);
    mtls_clear(mtls);
}


/*
 * mtls_lib_deinit()
 *
 * see mtls.h
 */

void mtls_lib_deinit(void)
{
}
