/*
 * cache/ internals shared by its .c files and by the unit tests.
 *
 * Threads: a struct cache owns one SQLite connection per calling thread
 * (struct cache_conn, found through a pthread key). A connection and its
 * prepared statements are only ever used by their thread (SQLite opened in
 * multi-thread mode, no SQLite mutexes). All write transactions of the
 * process are serialised on cache->write_lock, taken around BEGIN IMMEDIATE
 * .. COMMIT, so the threads of one process queue on a mutex instead of
 * polling SQLite's busy handler; the busy timeout still covers other
 * processes. No write transaction is ever held while the caller does
 * something else (network): batches are buffered in memory and applied at
 * commit, bodies are written chunk by chunk in short transactions as rows
 * that stay invisible (complete = 0) until cache_body_commit flips them.
 * The exception is the explicit group (cache_write_begin .. _commit), which
 * the caller asks for. Inside a group each write is a savepoint, except the
 * commit of a small body that only adds rows (body.c: nothing written by
 * the connection since the writer began, cache_conn.write_seq): it undoes
 * its own rows if it fails, or fails the group (cache_txn_fail).
 *
 * Schema (version CACHE_SCHEMA_VERSION, PRAGMA user_version; steps in
 * cache_migrations[] in db.c):
 *   mailbox(id, name UNIQUE, server_name UNIQUE, delimiter, attrs,
 *           uidvalidity, uidnext, highestmodseq, synced_at)
 *   message(mailbox_id, uid, size, internaldate, modseq, flags)
 *           WITHOUT ROWID, primary key (mailbox_id, uid)
 *   body(mailbox_id, uid, id, size, complete, last_read) WITHOUT ROWID,
 *           primary key (mailbox_id, uid, id); id from cache->next_body_id,
 *           never handed out twice while the cache is open, and at open
 *           above every id held, so a writer's chunk rowids are its own
 *   body_chunk(id, data): chunk n of body b has rowid (b << 20) | n, so
 *           a chunk is found by arithmetic and read with sqlite3_blob_read
 *           (only the pages asked for), and a body's chunks are one rowid
 *           range.
 *   outbox(id AUTOINCREMENT, mailbox_id, name, flags, internaldate, size,
 *          message_id, created_at, data)
 *
 * LRU: last_read is a logical clock (cache->clock), not a time. A hit only
 * appends (body key, clock) to cache->touches in memory; the list is written
 * to the database by the next write transaction that evicts, or when it
 * grows past CACHE_TOUCH_MAX, or at close. A hit never writes by itself.
 */
#ifndef IMAPFS_CACHE_I_H
#define IMAPFS_CACHE_I_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "imapfs/cache.h"

#define CACHE_SCHEMA_VERSION 3
#define CACHE_APPLICATION_ID 0x494d4653 /* "IMFS" */
#define CACHE_CHUNK_SEQ_BITS 20
#define CACHE_BODY_MAX ((uint64_t)CACHE_BODY_CHUNK << CACHE_CHUNK_SEQ_BITS)
#define CACHE_TOUCH_MAX 16384
#define CACHE_TXN_DEPTH_MAX 4
/*
 * Pages of 16 KiB: a body row of 1.5 KB left ~20% of a 4 KiB page unused
 * on average (rows do not split across leaf pages), ~5% of a 16 KiB one.
 * Larger pages waste less still but make every small write and read move
 * more bytes; 16 KiB measured fastest for grouped writes and reads.
 */
#define CACHE_PAGE_SIZE 16384
/* WAL: checkpoint every 2 MB of pages, keep at most 2 MB of file after one. */
#define CACHE_WAL_PAGES 128
#define CACHE_WAL_LIMIT 2097152
/* page cache per connection, KiB: 32 pages */
#define CACHE_PAGE_CACHE_KIB 512
#define CACHE_STR_(x) #x
#define CACHE_STR(x) CACHE_STR_(x)

static inline int64_t cache_chunk_rowid(int64_t body_id, uint64_t seq)
{
	return (int64_t)(((uint64_t)body_id << CACHE_CHUNK_SEQ_BITS) | seq);
}

enum cache_stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_SYNC_FULL,
	ST_SYNC_NORMAL,

	ST_MB_UPSERT,
	ST_MB_BY_NAME,
	ST_MB_BY_SERVER,
	ST_MB_BY_ID,
	ST_MB_LIST,
	ST_MB_UIDVALIDITY,
	ST_MB_SET_STATE,
	ST_MB_RENAME,
	ST_MB_DELETE,

	ST_MSG_GET,
	ST_MSG_LIST,
	ST_MSG_COUNT,
	ST_MSG_PUT,
	ST_MSG_SET_FLAGS,
	ST_MSG_DELETE_RANGE,
	ST_MSG_UIDS,
	ST_MSG_EXISTS,

	ST_BODY_FIND,
	ST_BODY_HELD_RANGE,
	ST_BODY_PRECHECK,
	ST_BODY_RANGE,
	ST_BODY_DELETE_RANGE,
	ST_BODY_DELETE_ID,
	ST_CHUNK_DELETE,
	ST_BODY_INSERT,
	ST_BODY_INSERT_COMPLETE,
	ST_BODY_CHECK,
	ST_CHUNK_INSERT,
	ST_BODY_COMPLETE,
	ST_BODY_TOUCH,
	ST_BODY_LRU,

	ST_OB_PUT,
	ST_OB_LIST_ALL,
	ST_OB_LIST_MB,
	ST_OB_DATA,
	ST_OB_DELETE,

	ST_COUNT
};

/* Changes of the body totals made by a transaction level, applied to the
 * cache when the outermost transaction commits. */
struct cache_delta {
	int64_t bodies;
	int64_t body_bytes;
	uint64_t evictions;
};

struct cache_conn {
	struct cache *cache;            /* NULL once cache_close has run */
	sqlite3 *db;
	sqlite3_stmt *stmt[ST_COUNT];   /* prepared on first use */
	bool stmt_busy[ST_COUNT];       /* in a walk: a nested use prepares a copy */
	struct cache_conn *next, *prev; /* protected by cache_conns_lock */

	int txn_depth;                  /* 0: no write transaction */
	bool txn_lost;                  /* SQLite rolled back the whole transaction */
	struct cache_delta delta[CACHE_TXN_DEPTH_MAX];
	int group_rc;                   /* first failure inside a group */
	uint64_t write_seq;             /* bumped by every write: see body.c */

	/* strings handed out by the get functions, valid until the next call */
	char *str[2];
	size_t str_size[2];
};

struct cache_touch {
	int64_t mailbox_id;
	uint32_t uid;
	int64_t body_id;
	uint64_t clock;
};

struct cache {
	char *path;
	int busy_timeout_ms;
	pthread_key_t key;

	pthread_mutex_t write_lock;     /* held by the thread in a write transaction */

	/* Body totals: changed only under write_lock, read with atomics. */
	uint64_t bodies;
	uint64_t body_bytes;
	uint64_t budget;                /* atomic */
	uint64_t clock;                 /* atomic; logical time of reads */
	int64_t next_body_id;           /* atomic; the next body id to hand out */
	uint64_t hits, misses, evictions; /* atomic */

	pthread_mutex_t touch_lock;
	struct cache_touch *touches;    /* protected by touch_lock */
	size_t touch_count, touch_size; /* protected by touch_lock */
};

/* db.c */
struct cache_conn *cache_conn_get(struct cache *c);
/* The statement, reset and unbound; NULL on failure (logged). */
sqlite3_stmt *cache_stmt(struct cache_conn *cn, enum cache_stmt_id id);
/* For walks that call back into the cache: marks the statement busy, or
 * returns a fresh copy if it already is. Give it back with cache_stmt_put. */
sqlite3_stmt *cache_stmt_take(struct cache_conn *cn, enum cache_stmt_id id);
void cache_stmt_put(struct cache_conn *cn, enum cache_stmt_id id, sqlite3_stmt *st);
/* The calling thread's connection (in *cn_out, NULL on failure) and its
 * statement id: as cache_stmt_take when walk (give it back with
 * cache_stmt_put), else as cache_stmt. NULL on failure. */
sqlite3_stmt *cache_conn_stmt(struct cache *c, enum cache_stmt_id id, bool walk,
			      struct cache_conn **cn_out);
/* Map an SQLite result code to -errno, logging what failed. */
int cache_sqlite_error(struct cache_conn *cn, int rc, const char *what);
/* Step a statement that returns no row (or whose row is ignored) and reset. */
int cache_stmt_run(struct cache_conn *cn, sqlite3_stmt *st, const char *what);

/* Get statement id, bind key to ?1, then as cache_stmt_run; -EIO if the
 * statement cannot be prepared. */
int cache_stmt_run_key(struct cache_conn *cn, enum cache_stmt_id id, int64_t key, const char *what);
/* Step a query: 1 with the statement on the next row, 0 when there are no
 * more, or -errno (logged). It does not reset: read the row, and when done
 * call cache_stmt_done (or cache_stmt_put for a taken statement). */
int cache_stmt_row(struct cache_conn *cn, sqlite3_stmt *st, const char *what);
/* Reset the statement and clear its bindings. */
void cache_stmt_done(sqlite3_stmt *st);

/* Write transactions: nest with savepoints. cache_txn_end commits when rc
 * is 0 and rolls back otherwise; it returns the final result. */
int cache_txn_begin(struct cache_conn *cn);
/* The calling thread's connection (in *cn_out, NULL on failure) with a
 * write transaction begun: 0, or -errno and no transaction. */
int cache_txn_open(struct cache *c, struct cache_conn **cn_out);
int cache_txn_end(struct cache_conn *cn, int rc);
/* Inside a group, after a write that failed without a savepoint of its
 * own: note that the transaction was lost, or that the group must fail
 * (undo_failed: the failed write's rows could not be removed). */
void cache_txn_fail(struct cache_conn *cn, int rc, bool undo_failed);
struct cache_delta *cache_txn_delta(struct cache_conn *cn);

/* Copy a string into the connection's slot (0 or 1); NULL if out of memory. */
const char *cache_conn_strdup(struct cache_conn *cn, int slot, const char *s);

/* mailbox.c, inside a write transaction: -ENOENT if there is no such
 * mailbox, else 0 and its UIDVALIDITY (out may be NULL). */
int cache_mailbox_check_locked(struct cache_conn *cn, int64_t id, uint32_t *uidvalidity_out);

/* message.c, inside a write transaction: drop the messages and bodies of
 * UIDs lo..hi; what names the step in the log. 0 or -errno. */
int cache_messages_delete_range(struct cache_conn *cn, int64_t mailbox_id, uint32_t lo, uint32_t hi,
				const char *what);

/* body.c, inside a write transaction */
int cache_bodies_delete_range(struct cache_conn *cn, int64_t mailbox_id, uint32_t lo,
			      uint32_t hi);
int cache_evict_locked(struct cache_conn *cn);
void cache_touches_free(struct cache *c);
int cache_touches_flush(struct cache_conn *cn);

/* --- test hooks --- */

/* Called inside every outermost write transaction just before COMMIT, with
 * the name of the operation. NULL (the default) in production. */
extern void (*cache_test_hook_before_commit)(const char *what);
/* The calling thread's connection, for tests that poke at the file
 * (PRAGMA max_page_count, integrity_check). */
sqlite3 *cache_test_db(struct cache *c);

#endif
