/*
 * The byte stream under a session (private to imap/): a TCP socket,
 * optionally wrapped in TLS. Every wait goes through poll() bounded by the
 * timeout given at creation.
 */
#ifndef IMAPFS_CONN_I_H
#define IMAPFS_CONN_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "imapfs/imap.h"

struct imap_conn;

/* Resolve host and connect (non-blocking connect + poll), TCP_NODELAY. */
int imap_conn_connect(const char *host, uint16_t port, int timeout_ms, struct imap_conn **out,
		      struct imap_error *err);

/* Wrap an already connected socket (tests: a socketpair end). Takes
 * ownership of fd. NULL when out of memory (fd is then closed). */
struct imap_conn *imap_conn_from_fd(int fd, int timeout_ms);

/* TLS handshake as a client: TLS 1.2 minimum, peer verified against the
 * system store and cafile, host name (or IP address) checked, SNI for
 * names. */
int imap_conn_start_tls(struct imap_conn *c, const char *host, const char *cafile,
			struct imap_error *err);

bool imap_conn_is_tls(const struct imap_conn *c);

/* Read what is available (waiting up to the timeout): > 0 bytes, 0 at
 * EOF, -1 on error with *err filled (TIMEOUT, CLOSED, TLS). */
ssize_t imap_conn_read(struct imap_conn *c, void *buf, size_t len, struct imap_error *err);

/* Write everything, -1 on error. */
int imap_conn_write(struct imap_conn *c, const void *buf, size_t len, struct imap_error *err);

/* Close (TLS close_notify best effort, without waiting) and free. NULL ok. */
void imap_conn_close(struct imap_conn *c);

#endif
