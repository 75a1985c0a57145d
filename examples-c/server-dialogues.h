/*
 * The dialogues of mailtls-server, one file each, and what serve() in
 * mailtls-server.c calls: each gets a connection whose greeting is due (TLS already
 * on with --implicit), runs the dialogue until the connection is to end and sets
 * *why. serve() then closes the connection and writes its log lines.
 */
#ifndef MAILTLS_EXAMPLES_SERVER_DIALOGUES_H
#define MAILTLS_EXAMPLES_SERVER_DIALOGUES_H

#include "server.h"

/* SMTP and LMTP (server-smtp.c). */
void serve_smtp(struct conn *c, enum end_reason *why);
/* IMAP (server-imap.c). */
void serve_imap(struct conn *c, enum end_reason *why);
/* POP3 (server-pop3.c). */
void serve_pop3(struct conn *c, enum end_reason *why);
/* NNTP (server-nntp.c). */
void serve_nntp(struct conn *c, enum end_reason *why);
/* ManageSieve (server-sieve.c). */
void serve_sieve(struct conn *c, enum end_reason *why);

#endif /* MAILTLS_EXAMPLES_SERVER_DIALOGUES_H */
