/* mailtls-client's IMAP, POP3, NNTP and ManageSieve reading dialogues (mailbox-client.c). */
#ifndef MAILTLS_EXAMPLES_MAILBOX_CLIENT_H
#define MAILTLS_EXAMPLES_MAILBOX_CLIENT_H

#include "common.h"

/*
 * Runs the dialogue of `proto` on a negotiated session: log in as `user` (NULL: no
 * login), list what the server holds on stdout, log out. Returns the exit status: 0,
 * 75 when the dialogue broke, 77 when the login or the listing was refused, 64 for
 * unusable credentials.
 */
int mailbox_dialogue(mailtls_session *s, uint32_t proto, const char *user, const char *pass, int verbose,
                     const char *prog);

#endif
