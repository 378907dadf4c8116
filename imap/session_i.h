/*
 * Session internals for the unit tests (private to imap/).
 */
#ifndef IMAPFS_SESSION_I_H
#define IMAPFS_SESSION_I_H

#include "conn_i.h"
#include "imapfs/imap.h"

/* imap_session_open() on an already connected stream (a socketpair end in
 * tests): TLS as params->tls says (IMPLICIT starts TLS on conn), greeting,
 * STARTTLS, login, capabilities, ENABLE. Takes ownership of conn, also on
 * failure. */
int imap_session_open_conn(const struct imap_params *params, struct imap_conn *conn,
			   struct imap_session **out, struct imap_error *err);

/* Send n NOOP commands before reading any reply, then wait for all of
 * them: the tagged replies may come in any order. */
int imap_session_noop_pipelined(struct imap_session *s, unsigned n, struct imap_error *err);

#endif
