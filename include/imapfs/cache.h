/*
 * imapfs cache: one SQLite database per account holding mailboxes, message
 * metadata and message bodies. Knows nothing of IMAP syntax or FUSE.
 *
 * Contract
 * - Return values: 0 on success or a negative errno: -ENOENT (no such
 *   mailbox/message/body), -ENOSPC (disk full: the write was rolled back,
 *   the cache stays consistent), -ENOMEM, -EINVAL (bad argument), -EIO (any
 *   other SQLite failure; logged with SQLite's message), and -EEXIST when a
 *   mailbox put or rename would give two mailboxes the same name.
 * - Threads: a struct cache may be used by any number of threads at once.
 *   It gives each calling thread its own SQLite connection (opened on that
 *   thread's first call, closed by cache_close or when the thread exits),
 *   with its own prepared statements, prepared once and reused. The
 *   database is in WAL mode, so readers never wait for the writer; writers
 *   serialise on SQLite's lock with a busy timeout. A batch or body writer
 *   belongs to the thread that began it.
 * - Bodies: written as they stream in, readable only once committed (a body
 *   being written, or one whose writer died, is never visible, not even in
 *   part). Read at any offset without loading the whole body: bodies are
 *   stored in chunks of CACHE_BODY_CHUNK bytes.
 * - A mailbox's UIDVALIDITY changing (cache_mailbox_set_state with another
 *   non-zero value) deletes its messages and bodies in the same transaction.
 * - Bodies are evicted least-recently-read first when their total exceeds
 *   the budget; metadata is never evicted. The body just committed is never
 *   evicted by its own commit, so one body larger than the whole budget
 *   stays until the next body comes.
 * - Walk callbacks (the *_list functions) may call the cache's read
 *   functions on the same thread; writes from inside a callback may fail.
 * - Opening: PRAGMA quick_check; a damaged or foreign file is renamed to
 *   "<path>.corrupt-<unix time>" with a warning and a fresh cache is
 *   created. The file is created 0600 and missing parent folders 0700,
 *   whatever the umask.
 */
#ifndef IMAPFS_CACHE_H
#define IMAPFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_BODY_CHUNK (256 * 1024)

struct cache;

struct cache_params {
	uint64_t body_budget;   /* bytes of bodies kept; 0: unlimited */
	int busy_timeout_ms;    /* 0: 10000 */
};

struct cache_mailbox {
	int64_t id;             /* assigned by the cache */
	const char *name;       /* UTF-8 path shown to the user, '/' separated */
	const char *server_name;/* as on the wire (modified UTF-7) */
	char delimiter;         /* '\0' for none */
	unsigned attrs;         /* the caller's attribute bits, stored as given */
	uint32_t uidvalidity;   /* 0: not selected yet */
	uint32_t uidnext;
	uint64_t highestmodseq;
	int64_t synced_at;      /* unix time of the last complete sync, 0 never */
};

struct cache_message {
	uint32_t uid;
	uint64_t size;          /* RFC822.SIZE */
	int64_t internaldate;   /* seconds since the epoch */
	uint64_t modseq;        /* 0 without CONDSTORE */
	const char *flags;      /* space separated; "" for none */
};

struct cache_stats {
	uint64_t bodies;        /* bodies held */
	uint64_t body_bytes;    /* their total size */
	uint64_t hits;          /* cache_body_read calls answered */
	uint64_t misses;        /* cache_body_read calls that found no body */
	uint64_t evictions;     /* bodies evicted since open */
};

/* Open or create the database at path. *out is freed with cache_close. */
int cache_open(const char *path, const struct cache_params *params, struct cache **out);
/* Closes every thread's connection. No call may be running. NULL is a no-op. */
void cache_close(struct cache *c);
void cache_set_budget(struct cache *c, uint64_t body_budget);

/* --- mailboxes --- */

/* Insert or update the mailbox with mb->server_name (name, delimiter,
 * attrs; uidvalidity & co. only on insert). *id_out gets its id (may be
 * NULL). */
int cache_mailbox_put(struct cache *c, const struct cache_mailbox *mb, int64_t *id_out);

/* Look up by the user-visible name or by the server name. Strings in *out
 * point into storage owned by the calling thread's connection, valid until
 * that thread's next cache call; copy them to keep them. */
int cache_mailbox_get_by_name(struct cache *c, const char *name, struct cache_mailbox *out);
int cache_mailbox_get_by_server_name(struct cache *c, const char *server_name,
				     struct cache_mailbox *out);
int cache_mailbox_get(struct cache *c, int64_t id, struct cache_mailbox *out);

/* Every mailbox, ordered by name. The struct is valid during the callback;
 * a non-zero return stops the walk and is returned. */
typedef int (*cache_mailbox_cb)(void *ctx, const struct cache_mailbox *mb);
int cache_mailbox_list(struct cache *c, cache_mailbox_cb cb, void *ctx);

/* Store the sync state. A uidvalidity different from a stored non-zero one
 * first deletes the mailbox's messages and bodies (same transaction). */
int cache_mailbox_set_state(struct cache *c, int64_t id, uint32_t uidvalidity, uint32_t uidnext,
			    uint64_t highestmodseq, int64_t synced_at);

/* Change the names of a mailbox (and nothing else); messages stay. */
int cache_mailbox_rename(struct cache *c, int64_t id, const char *name, const char *server_name);

/* Delete a mailbox with its messages and bodies. */
int cache_mailbox_delete(struct cache *c, int64_t id);

/* --- messages --- */

/* One message by UID; flags in *out as for cache_mailbox_get. */
int cache_message_get(struct cache *c, int64_t mailbox_id, uint32_t uid, struct cache_message *out);

/* Messages of a mailbox in ascending UID order. The struct is valid during
 * the callback; a non-zero return stops the walk and is returned. */
typedef int (*cache_message_cb)(void *ctx, const struct cache_message *msg);
int cache_message_list(struct cache *c, int64_t mailbox_id, cache_message_cb cb, void *ctx);

/* How many messages, and the highest UID (0 if empty). */
int cache_message_count(struct cache *c, int64_t mailbox_id, uint64_t *count_out,
			uint32_t *max_uid_out);

/* A batch of changes to one mailbox applied in one transaction: nothing of
 * it is visible before cache_batch_commit, all of it after. */
struct cache_batch;
int cache_batch_begin(struct cache *c, int64_t mailbox_id, struct cache_batch **out);
/* insert or replace a message's metadata */
int cache_batch_put(struct cache_batch *b, const struct cache_message *msg);
/* change flags (and modseq, when non-zero) of a known message; unknown UIDs are ignored */
int cache_batch_set_flags(struct cache_batch *b, uint32_t uid, const char *flags, uint64_t modseq);
/* remove messages lo..hi inclusive with their bodies */
int cache_batch_expunge(struct cache_batch *b, uint32_t uid_lo, uint32_t uid_hi);
/* Keep only the UIDs in uids (sorted ascending): everything else goes. For
 * servers without QRESYNC, after a UID SEARCH ALL. */
int cache_batch_retain(struct cache_batch *b, const uint32_t *uids, size_t count);
/* The same for the UIDs below uid_limit only (0: all): messages at or above
 * it stay whatever uids says. A listing made when the server's UIDNEXT was
 * uid_limit cannot speak for messages added after it (through this cache
 * meanwhile). */
int cache_batch_retain_below(struct cache_batch *b, const uint32_t *uids, size_t count,
			     uint32_t uid_limit);
/* Commit (also frees b). On failure nothing was applied. */
int cache_batch_commit(struct cache_batch *b);
/* Roll back and free. NULL is a no-op. */
void cache_batch_abort(struct cache_batch *b);

/* --- bodies --- */

/* Write one body as it streams in. It becomes readable at commit, and only
 * if exactly expected_size bytes were written (else -EIO, nothing kept).
 * The message's metadata need not exist yet, the mailbox must (-ENOENT).
 * No write lock is held between calls: full chunks are stored in short
 * transactions as they fill. If the mailbox's UIDVALIDITY changes, or the
 * message (when its metadata was held at begin) is expunged, while the body
 * streams in, write or commit give -ENOENT and nothing is kept. */
struct cache_body_writer;
int cache_body_begin(struct cache *c, int64_t mailbox_id, uint32_t uid, uint64_t expected_size,
		     struct cache_body_writer **out);
int cache_body_write(struct cache_body_writer *w, const void *data, size_t len);
int cache_body_commit(struct cache_body_writer *w); /* frees w */
void cache_body_abort(struct cache_body_writer *w); /* frees w; NULL no-op */

/* Read up to len bytes at offset. -ENOENT (a miss) when no complete body is
 * held. *read_out < len only at the end of the body. Marks it recently read. */
int cache_body_read(struct cache *c, int64_t mailbox_id, uint32_t uid, uint64_t offset, void *buf,
		    size_t len, size_t *read_out);

/* Whether a complete body is held, and its size (may be NULL). Does not
 * count as a read or a hit. */
bool cache_body_has(struct cache *c, int64_t mailbox_id, uint32_t uid, uint64_t *size_out);

/* The UIDs from lo to hi whose complete bodies are held, ascending: at
 * most max of them into uids, their number in *n_out (more may be held
 * when it equals max). 0 or -errno. One query for what cache_body_has
 * answers UID by UID; not a read or a hit either. */
int cache_bodies_held(struct cache *c, int64_t mailbox_id, uint32_t lo, uint32_t hi,
		      uint32_t *uids, size_t max, size_t *n_out);

int cache_body_delete(struct cache *c, int64_t mailbox_id, uint32_t uid);

/* Evict until bodies fit the budget (also done after each body commit). */
int cache_evict(struct cache *c);

void cache_get_stats(struct cache *c, struct cache_stats *out);

/* --- grouping writes (addition) ---
 * Between cache_write_begin and cache_write_commit, every write made by the
 * calling thread (body commits, batch commits, mailbox changes) joins one
 * transaction: cheaper than one commit each when many small bodies stream
 * in. Each write still succeeds or fails on its own (a failed small body
 * removes its own rows; when even that fails, the whole group fails), but
 * nothing of the group is visible to other threads before
 * cache_write_commit, and other threads' writes wait until then: keep
 * groups short (e.g. up to a few hundred bodies or a few MB). -EINVAL if
 * the thread already has a group open. cache_write_commit returns an error
 * (nothing of the group kept) if the whole transaction was lost, e.g. to
 * -ENOSPC; cache_write_abort rolls the group back. */
int cache_write_begin(struct cache *c);
int cache_write_commit(struct cache *c);
void cache_write_abort(struct cache *c);

/* --- outbox: messages written by the user not yet accepted by the server --- */

struct cache_outbox_entry {
	int64_t id;
	int64_t mailbox_id;
	const char *name;       /* the file name the user gave it */
	const char *flags;      /* flags to APPEND with */
	int64_t internaldate;   /* -1: server's time */
	uint64_t size;
	const char *message_id; /* Message-ID header value or "" */
	int64_t created_at;
	bool held;              /* its writer was killed before closing it: the
				 * bytes may be cut short; never appended by itself */
};

/* Keep a message durably until cache_outbox_delete. *id_out gets its id. */
int cache_outbox_put(struct cache *c, const struct cache_outbox_entry *e, const void *data,
		     size_t len, int64_t *id_out);
typedef int (*cache_outbox_cb)(void *ctx, const struct cache_outbox_entry *e);
/* All entries (mailbox_id 0) or those of one mailbox, oldest first. */
int cache_outbox_list(struct cache *c, int64_t mailbox_id, cache_outbox_cb cb, void *ctx);
/* The message bytes: malloc'd, caller frees. */
int cache_outbox_get_data(struct cache *c, int64_t id, void **data_out, size_t *len_out);
int cache_outbox_delete(struct cache *c, int64_t id);

#endif
