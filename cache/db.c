/*
 * cache/db.c: opening the database (creation with safe permissions, the
 * quick check, moving a damaged file aside, migrations), the per-thread
 * connections with their prepared statements, error mapping and write
 * transactions. Threading is described in cache_i.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "imapfs/log.h"
#include "cache_i.h"

void (*cache_test_hook_before_commit)(const char *what);

/* Every connection of every cache, so that cache_close can close them and
 * a thread's key destructor can tell whether its connection is still
 * alive. */
static pthread_mutex_t cache_conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cache_conn *cache_conns;

static const char *const cache_stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SAVEPOINT] = "SAVEPOINT s",
	[ST_RELEASE] = "RELEASE s",
	[ST_ROLLBACK_TO] = "ROLLBACK TO s",
	[ST_SYNC_FULL] = "PRAGMA synchronous = FULL",
	[ST_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",

	[ST_MB_UPSERT] = "INSERT INTO mailbox(name, server_name, delimiter, attrs, uidvalidity,"
			 " uidnext, highestmodseq, synced_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
			 " ON CONFLICT(server_name) DO UPDATE SET name = excluded.name,"
			 " delimiter = excluded.delimiter, attrs = excluded.attrs RETURNING id",
#define MB_COLUMNS                                                                                 \
	"id, name, server_name, delimiter, attrs, uidvalidity, uidnext, highestmodseq, synced_at"
	[ST_MB_BY_NAME] = "SELECT " MB_COLUMNS " FROM mailbox WHERE name = ?1",
	[ST_MB_BY_SERVER] = "SELECT " MB_COLUMNS " FROM mailbox WHERE server_name = ?1",
	[ST_MB_BY_ID] = "SELECT " MB_COLUMNS " FROM mailbox WHERE id = ?1",
	[ST_MB_LIST] = "SELECT " MB_COLUMNS " FROM mailbox ORDER BY name",
#undef MB_COLUMNS
	[ST_MB_UIDVALIDITY] = "SELECT uidvalidity FROM mailbox WHERE id = ?1",
	[ST_MB_SET_STATE] = "UPDATE mailbox SET uidvalidity = ?2, uidnext = ?3,"
			    " highestmodseq = ?4, synced_at = ?5 WHERE id = ?1",
	[ST_MB_RENAME] = "UPDATE mailbox SET name = ?2, server_name = ?3 WHERE id = ?1",
	[ST_MB_DELETE] = "DELETE FROM mailbox WHERE id = ?1",

	[ST_MSG_GET] = "SELECT uid, size, internaldate, modseq, flags FROM message"
		       " WHERE mailbox_id = ?1 AND uid = ?2",
	[ST_MSG_LIST] = "SELECT uid, size, internaldate, modseq, flags FROM message"
			" WHERE mailbox_id = ?1 ORDER BY uid",
	[ST_MSG_COUNT] = "SELECT count(*), max(uid) FROM message WHERE mailbox_id = ?1",
	[ST_MSG_PUT] = "INSERT OR REPLACE INTO message(mailbox_id, uid, size, internaldate, modseq,"
		       " flags) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
	[ST_MSG_SET_FLAGS] = "UPDATE message SET flags = ?3,"
			     " modseq = CASE WHEN ?4 > 0 THEN ?4 ELSE modseq END"
			     " WHERE mailbox_id = ?1 AND uid = ?2",
	[ST_MSG_DELETE_RANGE] = "DELETE FROM message WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3",
	[ST_MSG_UIDS] = "SELECT uid FROM message WHERE mailbox_id = ?1"
			" UNION SELECT uid FROM body WHERE mailbox_id = ?1 ORDER BY 1",

	[ST_MSG_EXISTS] = "SELECT 1 FROM message WHERE mailbox_id = ?1 AND uid = ?2",

	[ST_BODY_FIND] = "SELECT id, size FROM body WHERE mailbox_id = ?1 AND uid = ?2"
			 " AND complete = 1",
	[ST_BODY_PRECHECK] = "SELECT m.uidvalidity, EXISTS(SELECT 1 FROM message"
			     " WHERE mailbox_id = ?1 AND uid = ?2), b.id, b.size FROM mailbox m"
			     " LEFT JOIN body b ON b.mailbox_id = ?1 AND b.uid = ?2"
			     " AND b.complete = 1 WHERE m.id = ?1 LIMIT 1",
	[ST_BODY_HELD_RANGE] = "SELECT uid FROM body WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3"
			       " AND complete = 1 ORDER BY uid",
	[ST_BODY_RANGE] = "SELECT id, size, complete, uid FROM body WHERE mailbox_id = ?1"
			  " AND uid BETWEEN ?2 AND ?3",
	[ST_BODY_DELETE_RANGE] = "DELETE FROM body WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3",
	[ST_BODY_DELETE_ID] = "DELETE FROM body WHERE mailbox_id = ?1 AND uid = ?2 AND id = ?3",
	[ST_CHUNK_DELETE] = "DELETE FROM body_chunk WHERE id BETWEEN ?1 AND ?2",
	[ST_BODY_INSERT] = "INSERT INTO body(mailbox_id, uid, id, size, complete, last_read)"
			   " VALUES(?1, ?2, ?3, ?4, 0, 0)",
	[ST_BODY_INSERT_COMPLETE] = "INSERT INTO body(mailbox_id, uid, id, size, complete,"
				    " last_read) VALUES(?1, ?2, ?3, ?4, 1, ?5)",
	[ST_BODY_CHECK] = "UPDATE body SET complete = 0 WHERE mailbox_id = ?1 AND uid = ?2"
			  " AND id = ?3 AND complete = 0",
	[ST_CHUNK_INSERT] = "INSERT INTO body_chunk(id, data) VALUES(?1, ?2)",
	[ST_BODY_COMPLETE] = "UPDATE body SET complete = 1, last_read = ?4 WHERE mailbox_id = ?1"
			     " AND uid = ?2 AND id = ?3 AND complete = 0",
	[ST_BODY_TOUCH] = "UPDATE body SET last_read = ?4 WHERE mailbox_id = ?1 AND uid = ?2"
			  " AND id = ?3 AND last_read < ?4",
	[ST_BODY_LRU] = "SELECT id, size, mailbox_id, uid FROM body WHERE complete = 1"
			" ORDER BY last_read LIMIT 64",

	[ST_OB_PUT] = "INSERT INTO outbox(mailbox_id, name, flags, internaldate, size, message_id,"
		      " created_at, data, held) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
#define OB_COLUMNS "id, mailbox_id, name, flags, internaldate, size, message_id, created_at, held"
	[ST_OB_LIST_ALL] = "SELECT " OB_COLUMNS " FROM outbox ORDER BY id",
	[ST_OB_LIST_MB] = "SELECT " OB_COLUMNS " FROM outbox WHERE mailbox_id = ?1 ORDER BY id",
#undef OB_COLUMNS
	[ST_OB_DATA] = "SELECT data FROM outbox WHERE id = ?1",
	[ST_OB_DELETE] = "DELETE FROM outbox WHERE id = ?1",
};

/* Forward migrations: step i takes user_version i to i + 1. Append only. */
static const char *const cache_migrations[CACHE_SCHEMA_VERSION] = {
	"CREATE TABLE mailbox ("
	" id INTEGER PRIMARY KEY,"
	" name TEXT NOT NULL UNIQUE,"
	" server_name TEXT NOT NULL UNIQUE,"
	" delimiter INTEGER NOT NULL DEFAULT 0,"
	" attrs INTEGER NOT NULL DEFAULT 0,"
	" uidvalidity INTEGER NOT NULL DEFAULT 0,"
	" uidnext INTEGER NOT NULL DEFAULT 0,"
	" highestmodseq INTEGER NOT NULL DEFAULT 0,"
	" synced_at INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE message ("
	" mailbox_id INTEGER NOT NULL,"
	" uid INTEGER NOT NULL,"
	" size INTEGER NOT NULL,"
	" internaldate INTEGER NOT NULL,"
	" modseq INTEGER NOT NULL,"
	" flags TEXT NOT NULL,"
	" PRIMARY KEY (mailbox_id, uid)) WITHOUT ROWID;"
	"CREATE TABLE body ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" mailbox_id INTEGER NOT NULL,"
	" uid INTEGER NOT NULL,"
	" size INTEGER NOT NULL,"
	" complete INTEGER NOT NULL,"
	" last_read INTEGER NOT NULL);"
	"CREATE INDEX body_key ON body(mailbox_id, uid, complete);"
	"CREATE INDEX body_lru ON body(last_read) WHERE complete = 1;"
	"CREATE TABLE body_chunk (id INTEGER PRIMARY KEY, data BLOB NOT NULL);"
	"CREATE TABLE outbox ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" mailbox_id INTEGER NOT NULL,"
	" name TEXT NOT NULL,"
	" flags TEXT NOT NULL,"
	" internaldate INTEGER NOT NULL,"
	" size INTEGER NOT NULL,"
	" message_id TEXT NOT NULL,"
	" created_at INTEGER NOT NULL,"
	" data BLOB NOT NULL);",

	/*
	 * 2: body keyed by (mailbox_id, uid, id) without a rowid, so no
	 * separate index to find a message's body, and ids handed out by the
	 * cache (cache->next_body_id), not AUTOINCREMENT, whose sqlite_sequence
	 * row was one more page written by every body commit. Bodies dropped.
	 */
	"DROP TABLE body_chunk;"
	"DROP TABLE body;"
	"CREATE TABLE body ("
	" mailbox_id INTEGER NOT NULL,"
	" uid INTEGER NOT NULL,"
	" id INTEGER NOT NULL,"
	" size INTEGER NOT NULL,"
	" complete INTEGER NOT NULL,"
	" last_read INTEGER NOT NULL,"
	" PRIMARY KEY (mailbox_id, uid, id)) WITHOUT ROWID;"
	"CREATE INDEX body_lru ON body(last_read) WHERE complete = 1;"
	"CREATE TABLE body_chunk (id INTEGER PRIMARY KEY, data BLOB NOT NULL);",

	/*
	 * 3: an outbox entry can be held: its writer was killed before it
	 * closed the file, so the bytes are likely cut short; kept and shown,
	 * never appended by itself.
	 */
	"ALTER TABLE outbox ADD COLUMN held INTEGER NOT NULL DEFAULT 0;",
};

int cache_sqlite_error(struct cache_conn *cn, int rc, const char *what)
{
	const char *msg = cn && cn->db ? sqlite3_errmsg(cn->db) : sqlite3_errstr(rc);

	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_FULL:
		log_warnx("cache: %s: disk full (%s)", what, msg);
		return -ENOSPC;
	case SQLITE_NOMEM:
		log_warnx("cache: %s: out of memory", what);
		return -ENOMEM;
	case SQLITE_CONSTRAINT:
		log_debug("cache: %s: %s", what, msg);
		return -EEXIST;
	default:
		log_warnx("cache: %s: %s", what, msg);
		return -EIO;
	}
}

static int cache_exec(sqlite3 *db, const char *sql, const char *what)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);

	if (rc != SQLITE_OK) {
		log_warnx("cache: %s: %s", what, err ? err : sqlite3_errstr(rc));
		sqlite3_free(err);
	}
	return rc;
}

sqlite3_stmt *cache_stmt(struct cache_conn *cn, enum cache_stmt_id id)
{
	sqlite3_stmt *st = cn->stmt[id];
	int rc;

	if (st)
		return st;
	rc = sqlite3_prepare_v3(cn->db, cache_stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st,
				NULL);
	if (rc != SQLITE_OK) {
		log_warnx("cache: preparing \"%s\": %s", cache_stmt_sql[id], sqlite3_errmsg(cn->db));
		return NULL;
	}
	cn->stmt[id] = st;
	return st;
}

sqlite3_stmt *cache_stmt_take(struct cache_conn *cn, enum cache_stmt_id id)
{
	sqlite3_stmt *st;

	if (!cn->stmt_busy[id]) {
		st = cache_stmt(cn, id);
		if (st)
			cn->stmt_busy[id] = true;
		return st;
	}
	if (sqlite3_prepare_v2(cn->db, cache_stmt_sql[id], -1, &st, NULL) != SQLITE_OK) {
		log_warnx("cache: preparing \"%s\": %s", cache_stmt_sql[id], sqlite3_errmsg(cn->db));
		return NULL;
	}
	return st;
}

void cache_stmt_put(struct cache_conn *cn, enum cache_stmt_id id, sqlite3_stmt *st)
{
	if (!st)
		return;
	if (st == cn->stmt[id]) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		cn->stmt_busy[id] = false;
	} else {
		sqlite3_finalize(st);
	}
}

int cache_stmt_run(struct cache_conn *cn, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	int ret = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		ret = cache_sqlite_error(cn, rc, what);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

static int cache_stmt_exec_id(struct cache_conn *cn, enum cache_stmt_id id, const char *what)
{
	sqlite3_stmt *st = cache_stmt(cn, id);

	if (!st)
		return -EIO;
	return cache_stmt_run(cn, st, what);
}

sqlite3_stmt *cache_conn_stmt(struct cache *c, enum cache_stmt_id id, bool walk,
			      struct cache_conn **cn_out)
{
	struct cache_conn *cn = cache_conn_get(c);

	*cn_out = cn;
	if (!cn)
		return NULL;
	return walk ? cache_stmt_take(cn, id) : cache_stmt(cn, id);
}

int cache_stmt_run_key(struct cache_conn *cn, enum cache_stmt_id id, int64_t key, const char *what)
{
	sqlite3_stmt *st = cache_stmt(cn, id);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, key);
	return cache_stmt_run(cn, st, what);
}

int cache_stmt_row(struct cache_conn *cn, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return cache_sqlite_error(cn, rc, what);
}

void cache_stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

const char *cache_conn_strdup(struct cache_conn *cn, int slot, const char *s)
{
	size_t len;

	if (!s)
		s = "";
	len = strlen(s) + 1;
	if (len > cn->str_size[slot]) {
		size_t size = len < 256 ? 256 : len;
		char *p = realloc(cn->str[slot], size);

		if (!p)
			return NULL;
		cn->str[slot] = p;
		cn->str_size[slot] = size;
	}
	memcpy(cn->str[slot], s, len);
	return cn->str[slot];
}

/* --- connections --- */

static void cache_conn_free(struct cache_conn *cn)
{
	int i;

	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(cn->stmt[i]);
	sqlite3_close(cn->db);
	free(cn->str[0]);
	free(cn->str[1]);
	free(cn);
}

/* Unlink cn from the global list. Called with cache_conns_lock held. */
static void cache_conn_unlink(struct cache_conn *cn)
{
	if (cn->prev)
		cn->prev->next = cn->next;
	else
		cache_conns = cn->next;
	if (cn->next)
		cn->next->prev = cn->prev;
	cn->next = cn->prev = NULL;
}

/* A thread that used the cache exits: close its connection, unless
 * cache_close already did (then cn is no longer in the list). */
static void cache_conn_destroy(void *arg)
{
	struct cache_conn *cn = arg, *p;

	pthread_mutex_lock(&cache_conns_lock);
	for (p = cache_conns; p && p != cn; p = p->next)
		;
	if (p)
		cache_conn_unlink(cn);
	pthread_mutex_unlock(&cache_conns_lock);
	if (!p)
		return;
	if (cn->txn_depth) {
		/* A group (or a writer) left open by an exiting thread: roll it
		 * back and let the other writers go on. */
		log_warnx("cache: a thread exited inside a write transaction; rolled back");
		sqlite3_exec(cn->db, "ROLLBACK", NULL, NULL, NULL);
		cn->txn_depth = 0;
		pthread_mutex_unlock(&cn->cache->write_lock);
	}
	cache_conn_free(cn);
}

static const char cache_wal_sql[] = "PRAGMA wal_autocheckpoint = " CACHE_STR(CACHE_WAL_PAGES)
				    "; PRAGMA journal_size_limit = " CACHE_STR(CACHE_WAL_LIMIT);

static int cache_db_open(const char *path, int busy_timeout_ms, bool create, sqlite3 **out)
{
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	sqlite3 *db = NULL;
	int rc;

	if (create)
		flags |= SQLITE_OPEN_CREATE;
	rc = sqlite3_open_v2(path, &db, flags, NULL);
	if (rc != SQLITE_OK) {
		log_warnx("cache: opening %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return rc;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, busy_timeout_ms);
	rc = cache_exec(db, "PRAGMA synchronous = NORMAL", "setting synchronous");
	/*
	 * One connection per calling thread (FUSE threads and workers), each
	 * with its own page cache: SQLite's default of 2 MB apiece made up a
	 * good part of the daemon's peak RSS. The OS page cache holds the file
	 * anyway, so a small per-connection cache costs little speed, as long
	 * as it holds the pages one body write walks through (a leaf and its
	 * parents in five tables and indexes): 16 of our 16 KiB pages did not,
	 * and every write read pages back from the file.
	 */
	if (rc == SQLITE_OK)
		rc = cache_exec(db, "PRAGMA cache_size = -" CACHE_STR(CACHE_PAGE_CACHE_KIB),
				"setting cache_size");
	/*
	 * Keep the WAL small: it counts against the disk the cache takes, and
	 * SQLite's default lets it reach 1000 pages (16 MB here) and never
	 * shrinks the file. Checkpoint every CACHE_WAL_PAGES, and truncate the
	 * file back to CACHE_WAL_LIMIT when a checkpoint resets it.
	 */
	if (rc == SQLITE_OK)
		rc = cache_exec(db, cache_wal_sql, "setting the WAL size");
	/*
	 * A savepoint (each write inside a cache_write_begin group) keeps the
	 * pages it changes in a statement journal, which spills to a temporary
	 * file past 64 KiB: four of our pages, so nearly every body of a group
	 * went through a new file in /var/tmp. Keep it in memory (SQLite's
	 * own setting for a larger spill size, SQLITE_CONFIG_STMTJRNL_SPILL,
	 * fails with SQLITE_FULL in 3.40 when a journal is rolled back to a
	 * savepoint and then spills). Temporary tables, which the cache does
	 * not use, would be in memory too.
	 */
	if (rc == SQLITE_OK)
		rc = cache_exec(db, "PRAGMA temp_store = MEMORY", "setting temp_store");
	if (rc != SQLITE_OK) {
		sqlite3_close(db);
		return rc;
	}
	*out = db;
	return SQLITE_OK;
}

struct cache_conn *cache_conn_get(struct cache *c)
{
	struct cache_conn *cn = pthread_getspecific(c->key);

	if (cn)
		return cn;
	cn = calloc(1, sizeof(*cn));
	if (!cn)
		return NULL;
	if (cache_db_open(c->path, c->busy_timeout_ms, false, &cn->db) != SQLITE_OK) {
		free(cn);
		return NULL;
	}
	cn->cache = c;
	if (pthread_setspecific(c->key, cn) != 0) {
		cache_conn_free(cn);
		return NULL;
	}
	pthread_mutex_lock(&cache_conns_lock);
	cn->next = cache_conns;
	if (cache_conns)
		cache_conns->prev = cn;
	cache_conns = cn;
	pthread_mutex_unlock(&cache_conns_lock);
	return cn;
}

sqlite3 *cache_test_db(struct cache *c)
{
	struct cache_conn *cn = cache_conn_get(c);

	return cn ? cn->db : NULL;
}

/* --- write transactions --- */

struct cache_delta *cache_txn_delta(struct cache_conn *cn)
{
	return &cn->delta[cn->txn_depth - 1];
}

int cache_txn_begin(struct cache_conn *cn)
{
	int ret;

	if (cn->txn_depth >= CACHE_TXN_DEPTH_MAX)
		return -EINVAL;
	cn->write_seq++;
	if (cn->txn_depth == 0) {
		pthread_mutex_lock(&cn->cache->write_lock);
		ret = cache_stmt_exec_id(cn, ST_BEGIN, "beginning a transaction");
		if (ret) {
			pthread_mutex_unlock(&cn->cache->write_lock);
			return ret;
		}
		cn->txn_lost = false;
	} else {
		if (cn->txn_lost)
			return -EIO;
		ret = cache_stmt_exec_id(cn, ST_SAVEPOINT, "opening a savepoint");
		if (ret)
			return ret;
	}
	memset(&cn->delta[cn->txn_depth], 0, sizeof(cn->delta[0]));
	cn->txn_depth++;
	return 0;
}

static void cache_delta_apply(struct cache *c, const struct cache_delta *d)
{
	__atomic_add_fetch(&c->bodies, (uint64_t)d->bodies, __ATOMIC_RELAXED);
	__atomic_add_fetch(&c->body_bytes, (uint64_t)d->body_bytes, __ATOMIC_RELAXED);
	__atomic_add_fetch(&c->evictions, d->evictions, __ATOMIC_RELAXED);
}

int cache_txn_end(struct cache_conn *cn, int rc)
{
	struct cache *c = cn->cache;
	int depth = cn->txn_depth;

	if (depth > 1) {
		struct cache_delta *d = &cn->delta[depth - 1], *up = &cn->delta[depth - 2];

		if (rc == 0 && !cn->txn_lost)
			rc = cache_stmt_exec_id(cn, ST_RELEASE, "releasing a savepoint");
		if (rc == 0) {
			up->bodies += d->bodies;
			up->body_bytes += d->body_bytes;
			up->evictions += d->evictions;
		} else if (sqlite3_get_autocommit(cn->db)) {
			/* SQLite rolled back the whole transaction itself. */
			cn->txn_lost = true;
		} else if (!cn->txn_lost) {
			cache_stmt_exec_id(cn, ST_ROLLBACK_TO, "rolling back to a savepoint");
			cache_stmt_exec_id(cn, ST_RELEASE, "releasing a savepoint");
		}
		if (cn->txn_lost && rc == 0)
			rc = -EIO;
		if (rc && !cn->group_rc && cn->txn_lost)
			cn->group_rc = rc;
		cn->txn_depth--;
		return rc;
	}

	if (rc == 0 && cn->txn_lost)
		rc = cn->group_rc ? cn->group_rc : -EIO;
	if (rc == 0 && cache_test_hook_before_commit)
		cache_test_hook_before_commit("commit");
	if (rc == 0)
		rc = cache_stmt_exec_id(cn, ST_COMMIT, "committing");
	if (rc != 0 && !sqlite3_get_autocommit(cn->db))
		cache_stmt_exec_id(cn, ST_ROLLBACK, "rolling back");
	if (rc == 0)
		cache_delta_apply(c, &cn->delta[0]);
	cn->txn_depth = 0;
	cn->txn_lost = false;
	cn->group_rc = 0;
	pthread_mutex_unlock(&c->write_lock);
	return rc;
}

void cache_txn_fail(struct cache_conn *cn, int rc, bool undo_failed)
{
	if (!rc || cn->txn_depth == 0)
		return;
	if (undo_failed || sqlite3_get_autocommit(cn->db)) {
		cn->txn_lost = true;
		if (!cn->group_rc)
			cn->group_rc = rc;
	}
}

int cache_txn_open(struct cache *c, struct cache_conn **cn_out)
{
	struct cache_conn *cn = cache_conn_get(c);

	*cn_out = cn;
	if (!cn)
		return -EIO;
	return cache_txn_begin(cn);
}

int cache_write_begin(struct cache *c)
{
	struct cache_conn *cn = cache_conn_get(c);

	if (!cn)
		return -EIO;
	if (cn->txn_depth)
		return -EINVAL;
	return cache_txn_begin(cn);
}

int cache_write_commit(struct cache *c)
{
	struct cache_conn *cn = cache_conn_get(c);
	int ret;

	if (!cn || cn->txn_depth != 1)
		return -EINVAL;
	ret = cache_txn_end(cn, 0);
	if (ret == 0)
		cache_evict(c);
	return ret;
}

void cache_write_abort(struct cache *c)
{
	struct cache_conn *cn = cache_conn_get(c);

	if (cn && cn->txn_depth == 1)
		cache_txn_end(cn, -ECANCELED);
}

/* --- creating, checking and opening --- */

/* mkdir -p of path's parent, new folders 0700 whatever the umask. */
static int cache_make_parents(const char *path)
{
	char *dir = strdup(path);
	char *p;
	int ret = 0;

	if (!dir)
		return -ENOMEM;
	p = strrchr(dir, '/');
	if (!p || p == dir)
		goto out_free;
	*p = '\0';
	for (p = dir + 1;; p++) {
		bool last = *p == '\0';

		if (*p != '/' && !last)
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) == 0) {
			if (chmod(dir, 0700) != 0) {
				ret = -errno;
				log_warn("cache: chmod %s", dir);
				goto out_free;
			}
		} else if (errno != EEXIST) {
			ret = -errno;
			log_warn("cache: creating folder %s", dir);
			goto out_free;
		}
		if (last)
			break;
		*p = '/';
	}
out_free:
	free(dir);
	return ret;
}

/* Create the file 0600 whatever the umask, if it does not exist. */
static int cache_create_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd < 0) {
		if (errno == EEXIST)
			return 0;
		log_warn("cache: creating %s", path);
		return -errno;
	}
	if (fchmod(fd, 0600) != 0) {
		int ret = -errno;

		log_warn("cache: chmod %s", path);
		close(fd);
		return ret;
	}
	close(fd);
	return 0;
}

static bool cache_rc_is_damage(int rc)
{
	return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

#define CACHE_OPEN_DAMAGED 1

/* One-row integer query; damage is reported as CACHE_OPEN_DAMAGED. */
static int cache_query_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*out = sqlite3_column_int64(st, 0);
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_OK)
		return 0;
	if (cache_rc_is_damage(rc))
		return CACHE_OPEN_DAMAGED;
	log_warnx("cache: %s: %s", sql, sqlite3_errmsg(db));
	return -EIO;
}

/* Run PRAGMA quick_check: 0 if "ok", CACHE_OPEN_DAMAGED, or -EIO. */
static int cache_quick_check(sqlite3 *db, const char *path)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
	int ret = 0;

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *res = (const char *)sqlite3_column_text(st, 0);
		int len;

		if (!res || strcmp(res, "ok") != 0) {
			const char *nl;

			if (res && strncmp(res, "*** in database main ***\n", 25) == 0)
				res += 25;
			nl = res ? strchr(res, '\n') : NULL;
			len = nl ? (int)(nl - res) : 200;
			log_warnx("cache: %s fails its check: %.*s%s", path, len, res ? res : "?",
				  nl ? " ..." : "");
			ret = CACHE_OPEN_DAMAGED;
		}
	} else if (cache_rc_is_damage(rc)) {
		log_warnx("cache: %s: %s", path, sqlite3_errmsg(db));
		ret = CACHE_OPEN_DAMAGED;
	} else {
		log_warnx("cache: checking %s: %s", path, sqlite3_errmsg(db));
		ret = -EIO;
	}
	sqlite3_finalize(st);
	return ret;
}

static int cache_exec_checked(sqlite3 *db, const char *sql, const char *what)
{
	int rc = cache_exec(db, sql, what);

	if (rc == SQLITE_OK)
		return 0;
	if (cache_rc_is_damage(rc) || (rc & 0xff) == SQLITE_ERROR)
		return CACHE_OPEN_DAMAGED; /* SQLITE_ERROR: e.g. a table exists */
	return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
}

static int cache_migrate(sqlite3 *db, int64_t from)
{
	char sql[128];
	int64_t v;
	int ret;

	for (v = from; v < CACHE_SCHEMA_VERSION; v++) {
		ret = cache_exec_checked(db, "BEGIN IMMEDIATE", "migrating");
		if (ret)
			return ret;
		ret = cache_exec_checked(db, cache_migrations[v], "migrating");
		if (ret == 0) {
			snprintf(sql, sizeof(sql), "PRAGMA user_version = %d; PRAGMA application_id = %d",
				 (int)(v + 1), CACHE_APPLICATION_ID);
			ret = cache_exec_checked(db, sql, "migrating");
		}
		if (ret == 0)
			ret = cache_exec_checked(db, "COMMIT", "migrating");
		if (ret) {
			cache_exec(db, "ROLLBACK", "rolling back a migration");
			return ret;
		}
		log_info("cache: schema migrated to version %d", (int)(v + 1));
	}
	return 0;
}

/* Whether a one-row text query answers want (case-insensitive). */
static int cache_query_is(sqlite3 *db, const char *sql, const char *want)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	int ret = 0;

	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *res = (const char *)sqlite3_column_text(st, 0);

		ret = res && sqlite3_stricmp(res, want) == 0;
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_OK)
		return ret;
	if (cache_rc_is_damage(rc))
		return CACHE_OPEN_DAMAGED;
	log_warnx("cache: %s: %s", sql, sqlite3_errmsg(db));
	return -EIO;
}

/*
 * Give the file pages of CACHE_PAGE_SIZE. A new file just needs the
 * pragma before its first table. An existing one with other pages (every
 * cache made before, at SQLite's 4 KiB) is rebuilt: its bodies, only a
 * cache, are dropped (copying them would take a long VACUUM), mailboxes,
 * metadata and the outbox are kept, and VACUUM, which can change the page
 * size only outside WAL mode, rewrites it. If another process holds the
 * file (WAL mode cannot be left), the old size is kept for now.
 */
static int cache_page_size_set(sqlite3 *db, const char *path, int busy_timeout_ms,
			       int64_t version)
{
	int64_t size = 0;
	int ret = cache_query_int(db, "PRAGMA page_size", &size);
	int rc;

	if (ret || size == CACHE_PAGE_SIZE)
		return ret;
	/* No waiting: whoever holds the file keeps it. */
	sqlite3_busy_timeout(db, 0);
	rc = sqlite3_exec(db, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
	sqlite3_busy_timeout(db, busy_timeout_ms);
	if (rc == SQLITE_OK)
		ret = cache_query_is(db, "PRAGMA journal_mode", "delete");
	else if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
		ret = 0;
	else
		ret = cache_rc_is_damage(rc) ? CACHE_OPEN_DAMAGED : -EIO;
	if (ret <= 0) {
		if (ret == 0)
			log_warnx("cache: %s in use elsewhere; keeping its %lld-byte pages", path,
				  (long long)size);
		else if (ret == -EIO)
			log_warnx("cache: leaving WAL mode in %s: %s", path, sqlite3_errmsg(db));
		return ret;
	}
	if (version > 0) {
		log_info("cache: rebuilding %s with %d-byte pages; cached bodies are dropped", path,
			 CACHE_PAGE_SIZE);
		ret = cache_exec_checked(db, "BEGIN IMMEDIATE; DELETE FROM body_chunk;"
					 " DELETE FROM body; COMMIT", "dropping bodies");
		if (ret) {
			cache_exec(db, "ROLLBACK", "rolling back");
			return ret;
		}
	}
	ret = cache_exec_checked(db, "PRAGMA page_size = " CACHE_STR(CACHE_PAGE_SIZE) "; VACUUM",
				 "changing the page size");
	/* Disk full or the like: go on with the old pages. */
	return ret < 0 ? 0 : ret;
}

/* Remove bodies whose writer died (never visible, now unreachable). */
static int cache_drop_incomplete(sqlite3 *db)
{
	sqlite3_stmt *sel = NULL, *del = NULL;
	int rc, ret;

	ret = cache_exec_checked(db, "BEGIN IMMEDIATE", "dropping unfinished bodies");
	if (ret)
		return ret;
	rc = sqlite3_prepare_v2(db, "SELECT id FROM body WHERE complete = 0", -1, &sel, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "DELETE FROM body_chunk WHERE id BETWEEN ?1 AND ?2", -1,
					&del, NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(sel, 0);

		sqlite3_bind_int64(del, 1, cache_chunk_rowid(id, 0));
		sqlite3_bind_int64(del, 2, cache_chunk_rowid(id + 1, 0) - 1);
		rc = sqlite3_step(del);
		sqlite3_reset(del);
		if (rc == SQLITE_DONE)
			rc = SQLITE_OK;
	}
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
	sqlite3_finalize(sel);
	sqlite3_finalize(del);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "DELETE FROM body WHERE complete = 0; COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		log_warnx("cache: dropping unfinished bodies: %s", sqlite3_errmsg(db));
		cache_exec(db, "ROLLBACK", "rolling back");
		if (cache_rc_is_damage(rc))
			return CACHE_OPEN_DAMAGED;
		return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
	}
	return 0;
}

/* Check, migrate and load the totals. 0, CACHE_OPEN_DAMAGED or -errno. */
static int cache_db_prepare(struct cache *c)
{
	sqlite3 *db = NULL;
	int64_t app_id = 0, version = 0, tables = 0, v;
	sqlite3_stmt *st = NULL;
	int rc, ret;

	ret = cache_make_parents(c->path);
	if (ret == 0)
		ret = cache_create_file(c->path);
	if (ret)
		return ret;
	rc = cache_db_open(c->path, c->busy_timeout_ms, true, &db);
	if (rc != SQLITE_OK)
		return cache_rc_is_damage(rc) ? CACHE_OPEN_DAMAGED : -EIO;

	ret = cache_quick_check(db, c->path);
	if (ret == 0)
		ret = cache_query_int(db, "PRAGMA application_id", &app_id);
	if (ret == 0)
		ret = cache_query_int(db, "PRAGMA user_version", &version);
	if (ret == 0)
		ret = cache_query_int(db, "SELECT count(*) FROM sqlite_master", &tables);
	if (ret)
		goto out_close;
	if ((app_id != 0 && app_id != CACHE_APPLICATION_ID) || (version == 0 && tables != 0)) {
		log_warnx("cache: %s is not an imapfs cache", c->path);
		ret = CACHE_OPEN_DAMAGED;
		goto out_close;
	}
	if (version > CACHE_SCHEMA_VERSION) {
		log_warnx("cache: %s has schema version %lld, newer than this program's %d",
			  c->path, (long long)version, CACHE_SCHEMA_VERSION);
		ret = CACHE_OPEN_DAMAGED;
		goto out_close;
	}
	ret = cache_page_size_set(db, c->path, c->busy_timeout_ms, version);
	if (ret == 0)
		ret = cache_exec_checked(db, "PRAGMA journal_mode = WAL", "setting WAL mode");
	if (ret == 0)
		ret = cache_migrate(db, version);
	if (ret == 0)
		ret = cache_drop_incomplete(db);
	if (ret)
		goto out_close;

	rc = sqlite3_prepare_v2(db,
				"SELECT count(*), total(size), (SELECT max(last_read) FROM body),"
				" (SELECT max(id) FROM body) FROM body WHERE complete = 1",
				-1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		ret = cache_rc_is_damage(rc) ? CACHE_OPEN_DAMAGED : -EIO;
		log_warnx("cache: reading totals: %s", sqlite3_errmsg(db));
		goto out_close;
	}
	c->bodies = (uint64_t)sqlite3_column_int64(st, 0);
	c->body_bytes = (uint64_t)sqlite3_column_double(st, 1);
	v = sqlite3_column_int64(st, 2);
	c->clock = (uint64_t)v + 1;
	v = sqlite3_column_int64(st, 3);
	c->next_body_id = v + 1;
out_close:
	sqlite3_finalize(st);
	sqlite3_close(db);
	return ret;
}

/* malloc'd "<a><b>"; NULL when out of memory */
static char *cache_strcat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 1);

	if (s) {
		memcpy(s, a, la);
		memcpy(s + la, b, lb + 1);
	}
	return s;
}

static void cache_move_aside(const char *path)
{
	char suffix[64];
	char *aside = NULL, *from = NULL, *to = NULL;
	long long now = (long long)time(NULL);
	int n;

	snprintf(suffix, sizeof(suffix), ".corrupt-%lld", now);
	aside = cache_strcat(path, suffix);
	for (n = 1; aside && access(aside, F_OK) == 0 && n < 1000; n++) {
		free(aside);
		snprintf(suffix, sizeof(suffix), ".corrupt-%lld.%d", now, n);
		aside = cache_strcat(path, suffix);
	}
	if (!aside || rename(path, aside) != 0) {
		log_warn("cache: moving damaged %s aside", path);
		if (unlink(path) != 0 && errno != ENOENT)
			log_warn("cache: removing damaged %s", path);
	} else {
		log_warnx("cache: %s was damaged or not a cache; moved to %s, starting empty", path,
			  aside);
	}
	/* A WAL left by the old file must never be applied to the new one. */
	from = cache_strcat(path, "-wal");
	to = aside ? cache_strcat(aside, "-wal") : NULL;
	if (from && (!to || rename(from, to) != 0))
		unlink(from);
	free(from);
	from = cache_strcat(path, "-shm");
	if (from)
		unlink(from);
	free(from);
	free(to);
	free(aside);
}

int cache_open(const char *path, const struct cache_params *params, struct cache **out)
{
	struct cache *c;
	int ret;

	if (!path || !*path || !out)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->path = strdup(path);
	if (!c->path) {
		free(c);
		return -ENOMEM;
	}
	c->busy_timeout_ms = params && params->busy_timeout_ms > 0 ? params->busy_timeout_ms : 10000;
	c->budget = params ? params->body_budget : 0;
	pthread_mutex_init(&c->write_lock, NULL);
	pthread_mutex_init(&c->touch_lock, NULL);
	if (pthread_key_create(&c->key, cache_conn_destroy) != 0) {
		ret = -EAGAIN;
		goto out_free;
	}

	ret = cache_db_prepare(c);
	if (ret == CACHE_OPEN_DAMAGED) {
		cache_move_aside(path);
		ret = cache_db_prepare(c);
		if (ret == CACHE_OPEN_DAMAGED)
			ret = -EIO;
	}
	if (ret)
		goto out_key;
	*out = c;
	return 0;

out_key:
	pthread_key_delete(c->key);
out_free:
	pthread_mutex_destroy(&c->write_lock);
	pthread_mutex_destroy(&c->touch_lock);
	free(c->path);
	free(c);
	return ret;
}

void cache_close(struct cache *c)
{
	struct cache_conn *cn, *next;

	if (!c)
		return;
	/* Keep the LRU order of reads not yet written down. */
	if (c->touch_count) {
		cn = cache_conn_get(c);
		if (cn && cn->txn_depth == 0 && cache_txn_begin(cn) == 0)
			cache_txn_end(cn, cache_touches_flush(cn));
	}
	pthread_mutex_lock(&cache_conns_lock);
	pthread_key_delete(c->key);
	for (cn = cache_conns; cn; cn = next) {
		next = cn->next;
		if (cn->cache != c)
			continue;
		cache_conn_unlink(cn);
		cn->cache = NULL;
		cache_conn_free(cn);
	}
	pthread_mutex_unlock(&cache_conns_lock);
	cache_touches_free(c);
	pthread_mutex_destroy(&c->write_lock);
	pthread_mutex_destroy(&c->touch_lock);
	free(c->path);
	free(c);
}

void cache_set_budget(struct cache *c, uint64_t body_budget)
{
	__atomic_store_n(&c->budget, body_budget, __ATOMIC_RELAXED);
}

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
	out->bodies = __atomic_load_n(&c->bodies, __ATOMIC_RELAXED);
	out->body_bytes = __atomic_load_n(&c->body_bytes, __ATOMIC_RELAXED);
	out->hits = __atomic_load_n(&c->hits, __ATOMIC_RELAXED);
	out->misses = __atomic_load_n(&c->misses, __ATOMIC_RELAXED);
	out->evictions = __atomic_load_n(&c->evictions, __ATOMIC_RELAXED);
}
