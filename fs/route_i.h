/*
 * fs/route_i.h: which pool worker runs which job (the policy of
 * fs/pool.c, kept apart so it is tested on its own).
 *
 * Selecting a mailbox costs the server: Dovecot reads a Maildir's whole
 * UID list on a session's first body fetch from a mailbox (about 0.25 s
 * for 100,000 messages), later fetches take a millisecond. So a job that
 * names its mailbox goes to a worker that already fetches from it when
 * one can take it:
 * - an urgent job (a reader waits) is left to an idle worker that has its
 *   mailbox; with none idle, any worker takes it at once;
 * - a background job for a mailbox another worker has is left to that
 *   worker unless more are queued for it, and then another worker takes
 *   the last of them, the one a scan needs latest, so that its own slow
 *   first fetch is over before the scan gets there.
 * Jobs naming no mailbox go to any worker.
 */
#ifndef IMAPFS_FS_ROUTE_I_H
#define IMAPFS_FS_ROUTE_I_H

#include <stdbool.h>
#include <stddef.h>

/* What the pool knows of each worker. */
struct route_worker {
	bool present;           /* started */
	bool busy;              /* running a job */
	const char *mailbox;    /* the mailbox it fetches from, or NULL */
};

/* Whether worker self of w[0..n) takes an urgent job for mailbox (NULL:
 * any) now. */
bool route_urgent(const struct route_worker *w, size_t n, size_t self, const char *mailbox);

enum route_bg {
	ROUTE_TAKE,             /* this job */
	ROUTE_TAKE_LAST,        /* the last queued job for the same mailbox */
	ROUTE_SKIP,             /* none for that mailbox: leave it */
};

/* What worker self does about a background job for mailbox (NULL: any)
 * when queued jobs (this one included, one or more) are queued for that
 * mailbox. */
enum route_bg route_background(const struct route_worker *w, size_t n, size_t self,
			       const char *mailbox, size_t queued);

#endif
