/*
 * fs/recent_i.h: bodies just fetched, kept in memory for the read that
 * comes for them next.
 *
 * A cold scan (grep -r, cp -r, tar) reads every message right after the
 * prefetch has fetched it; reading it back out of SQLite was a quarter of
 * the daemon's CPU time. Small bodies are kept here as they arrive, up to
 * a byte budget (oldest dropped first), and an entry goes away once a read
 * has reached its end: the kernel's page cache holds the file from then
 * on. Keyed by mailbox, UIDVALIDITY and UID, so a recreated mailbox never
 * meets old bytes. Thread-safe.
 */
#ifndef IMAPFS_FS_RECENT_I_H
#define IMAPFS_FS_RECENT_I_H

#include <stddef.h>
#include <stdint.h>

struct recent;

/* max_bytes: the budget for the bodies held; max_body: larger ones are
 * refused. NULL when out of memory. */
struct recent *recent_new(size_t max_bytes, size_t max_body);
void recent_free(struct recent *r); /* NULL no-op */

/* Keep data (len bytes, malloc'd: ownership passes to r whatever the
 * result). An entry with the same key is replaced. Returns 0, or -E2BIG
 * when len is over max_body (data freed). */
int recent_put(struct recent *r, int64_t mailbox_id, uint32_t uidvalidity, uint32_t uid,
	       char *data, size_t len);

/* Copy up to size bytes from offset into buf; *read_out tells how many
 * (0 at or past the end). -ENOENT when the body is not held. A read that
 * reaches the end of the body drops it. */
int recent_read(struct recent *r, int64_t mailbox_id, uint32_t uidvalidity, uint32_t uid,
		uint64_t offset, char *buf, size_t size, size_t *read_out);

/* Take a whole body out: *data_out (malloc'd, the caller's now) and
 * *len_out. -ENOENT when it is not held. */
int recent_take(struct recent *r, int64_t mailbox_id, uint32_t uidvalidity, uint32_t uid,
		char **data_out, size_t *len_out);

/* For tests and the debug log. */
struct recent_stats {
	size_t count, bytes;        /* held now */
	uint64_t hits, misses;      /* reads served, reads not */
	uint64_t evicted;           /* dropped for the budget before a read */
};
void recent_stats(struct recent *r, struct recent_stats *out);

#endif
