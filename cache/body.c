/*
 * cache/body.c: message bodies. A body is written chunk by chunk as it
 * streams in; chunks that fill up before the end are stored in short
 * transactions of their own under a body row with complete = 0, which no
 * reader looks at, and cache_body_commit writes the last chunk and sets
 * complete = 1 in one transaction. A small body is therefore written in a
 * single transaction at commit. Reads open the chunk rows they need with
 * sqlite3_blob_read, so reading 4 KB costs a few pages, whatever the size
 * of the body. Eviction (least recently read first) and the in-memory list
 * of reads that keeps hits from writing are here too; see cache_i.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/log.h"
#include "cache_i.h"

struct cache_body_writer {
	struct cache *cache;
	struct cache_conn *conn;        /* of the thread that began it */
	int64_t mailbox_id;
	uint32_t uid;
	uint32_t uidvalidity;           /* at begin; checked at commit */
	bool had_metadata;              /* at begin; if it goes, so does the body */
	bool in_group;                  /* begun inside the thread's write group */
	uint64_t write_seq;             /* the connection's write_seq at begin */
	int64_t old_id, old_size;       /* at begin: the complete body it replaces */
	uint64_t expected, written;
	int64_t body_id;                /* 0 until the first chunk is stored */
	uint64_t seq;                   /* next chunk number */
	unsigned char *buf;
	size_t buf_len, buf_size;
	int error;                      /* first failure: the writer is dead */
};

/*
 * What a body's commit depends on, in one statement: the mailbox's
 * UIDVALIDITY (-ENOENT if the mailbox is gone), whether the message's
 * metadata is held, and the complete body the new one replaces.
 */
static int cache_body_precheck(struct cache_conn *cn, int64_t mailbox_id, uint32_t uid,
			       uint32_t *uidvalidity, bool *exists, int64_t *old_id,
			       int64_t *old_size)
{
	sqlite3_stmt *st = cache_stmt(cn, ST_BODY_PRECHECK);
	int ret;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	ret = cache_stmt_row(cn, st, "looking up a body's mailbox");
	if (ret > 0) {
		*uidvalidity = (uint32_t)sqlite3_column_int64(st, 0);
		*exists = sqlite3_column_int(st, 1) != 0;
		*old_id = sqlite3_column_int64(st, 2);
		*old_size = sqlite3_column_int64(st, 3);
		ret = 0;
	} else if (ret == 0) {
		ret = -ENOENT;
	}
	cache_stmt_done(st);
	return ret;
}

static uint64_t cache_clock_tick(struct cache *c)
{
	return __atomic_fetch_add(&c->clock, 1, __ATOMIC_RELAXED);
}

/* Bind a body's key, (mailbox_id, uid, id), to ?1, ?2, ?3. */
static void cache_body_bind_key(sqlite3_stmt *st, int64_t mailbox_id, uint32_t uid, int64_t id)
{
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	sqlite3_bind_int64(st, 3, id);
}

/* Inside a write transaction: delete one body's chunks and row. */
static int cache_body_delete_id(struct cache_conn *cn, int64_t mailbox_id, uint32_t uid, int64_t id)
{
	sqlite3_stmt *st = cache_stmt(cn, ST_CHUNK_DELETE);
	int ret;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, cache_chunk_rowid(id, 0));
	sqlite3_bind_int64(st, 2, cache_chunk_rowid(id + 1, 0) - 1);
	ret = cache_stmt_run(cn, st, "deleting body chunks");
	if (ret)
		return ret;
	st = cache_stmt(cn, ST_BODY_DELETE_ID);
	if (!st)
		return -EIO;
	cache_body_bind_key(st, mailbox_id, uid, id);
	return cache_stmt_run(cn, st, "deleting a body");
}

/* Inside a write transaction: delete the bodies (complete or being
 * written) of UIDs lo..hi. Returns how many complete ones went, or -errno. */
int cache_bodies_delete_range(struct cache_conn *cn, int64_t mailbox_id, uint32_t lo,
			      uint32_t hi)
{
	struct cache_delta *d = cache_txn_delta(cn);
	sqlite3_stmt *st = cache_stmt(cn, ST_BODY_RANGE);
	struct cache_body_key {
		int64_t id;
		uint32_t uid;
	} *keys = NULL, *p;
	size_t count = 0, size = 0, i;
	int ret, complete = 0;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, lo);
	sqlite3_bind_int64(st, 3, hi);
	while ((ret = cache_stmt_row(cn, st, "finding bodies")) > 0) {
		if (count == size) {
			size = size ? size * 2 : 16;
			p = realloc(keys, size * sizeof(*keys));
			if (!p) {
				ret = -ENOMEM;
				break;
			}
			keys = p;
		}
		keys[count].id = sqlite3_column_int64(st, 0);
		keys[count++].uid = (uint32_t)sqlite3_column_int64(st, 3);
		if (sqlite3_column_int(st, 2)) {
			d->bodies--;
			d->body_bytes -= sqlite3_column_int64(st, 1);
			complete++;
		}
	}
	cache_stmt_done(st);
	for (i = 0; !ret && i < count; i++)
		ret = cache_body_delete_id(cn, mailbox_id, keys[i].uid, keys[i].id);
	free(keys);
	return ret ? ret : complete;
}

/* --- the list of reads not yet written down --- */

static void cache_body_touch(struct cache *c, struct cache_conn *cn, int64_t mailbox_id,
			     uint32_t uid, int64_t body_id)
{
	uint64_t now = cache_clock_tick(c);
	bool full = false;

	pthread_mutex_lock(&c->touch_lock);
	if (c->touch_count == c->touch_size) {
		size_t size = c->touch_size ? c->touch_size * 2 : 256;
		struct cache_touch *t = realloc(c->touches, size * sizeof(*t));

		if (t) {
			c->touches = t;
			c->touch_size = size;
		}
	}
	if (c->touch_count < c->touch_size) {
		c->touches[c->touch_count].mailbox_id = mailbox_id;
		c->touches[c->touch_count].uid = uid;
		c->touches[c->touch_count].body_id = body_id;
		c->touches[c->touch_count].clock = now;
		c->touch_count++;
	}
	full = c->touch_count >= CACHE_TOUCH_MAX;
	pthread_mutex_unlock(&c->touch_lock);

	if (full && cn->txn_depth == 0 && cache_txn_begin(cn) == 0)
		cache_txn_end(cn, cache_touches_flush(cn));
}

/* Inside a write transaction: write the pending reads to body.last_read.
 * The list is taken first, so reads on other threads go on meanwhile. */
int cache_touches_flush(struct cache_conn *cn)
{
	struct cache *c = cn->cache;
	struct cache_touch *list;
	size_t count, i;
	sqlite3_stmt *st;
	int ret = 0;

	pthread_mutex_lock(&c->touch_lock);
	list = c->touches;
	count = c->touch_count;
	c->touches = NULL;
	c->touch_count = c->touch_size = 0;
	pthread_mutex_unlock(&c->touch_lock);
	if (!count)
		goto out_free;
	st = cache_stmt(cn, ST_BODY_TOUCH);
	if (!st) {
		ret = -EIO;
		goto out_free;
	}
	for (i = 0; i < count && !ret; i++) {
		cache_body_bind_key(st, list[i].mailbox_id, list[i].uid, list[i].body_id);
		sqlite3_bind_int64(st, 4, (int64_t)list[i].clock);
		ret = cache_stmt_run(cn, st, "recording reads");
	}
out_free:
	free(list);
	return ret;
}

void cache_touches_free(struct cache *c)
{
	free(c->touches);
	c->touches = NULL;
	c->touch_count = c->touch_size = 0;
}

/* --- eviction --- */

/* The bytes of bodies held, as the calling thread's transaction sees them. */
static int64_t cache_body_total(struct cache_conn *cn)
{
	int64_t total = (int64_t)__atomic_load_n(&cn->cache->body_bytes, __ATOMIC_RELAXED);
	int i;

	for (i = 0; i < cn->txn_depth; i++)
		total += cn->delta[i].body_bytes;
	return total;
}

/* Whether storing size more bytes would make eviction run. */
static bool cache_evict_needed(struct cache_conn *cn, uint64_t size)
{
	uint64_t budget = __atomic_load_n(&cn->cache->budget, __ATOMIC_RELAXED);

	return budget && cache_body_total(cn) + (int64_t)size > (int64_t)budget;
}

/* Inside a write transaction: evict least recently read bodies until the
 * total fits the budget. protect_id (0: none) is never evicted: the body
 * just stored stays even if it alone is over the budget. */
static int cache_evict_protect(struct cache_conn *cn, int64_t protect_id)
{
	struct cache *c = cn->cache;
	uint64_t budget = __atomic_load_n(&c->budget, __ATOMIC_RELAXED);
	struct cache_delta *d = cache_txn_delta(cn);
	int64_t total, ids[64], sizes[64], mailboxes[64];
	uint32_t uids[64];
	sqlite3_stmt *st;
	int i, n, rc = SQLITE_DONE, ret, evicted;

	if (budget == 0)
		return 0;
	total = cache_body_total(cn);
	if (total <= (int64_t)budget)
		return 0;
	ret = cache_touches_flush(cn);
	if (ret)
		return ret;
	st = cache_stmt(cn, ST_BODY_LRU);
	if (!st)
		return -EIO;
	while (total > (int64_t)budget) {
		n = 0;
		while (n < 64 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
			ids[n] = sqlite3_column_int64(st, 0);
			sizes[n] = sqlite3_column_int64(st, 1);
			mailboxes[n] = sqlite3_column_int64(st, 2);
			uids[n] = (uint32_t)sqlite3_column_int64(st, 3);
			if (ids[n] != protect_id)
				n++;
		}
		if (n < 64 && rc != SQLITE_DONE) {
			sqlite3_reset(st);
			return cache_sqlite_error(cn, rc, "choosing bodies to evict");
		}
		sqlite3_reset(st);
		evicted = 0;
		for (i = 0; i < n && total > (int64_t)budget; i++) {
			ret = cache_body_delete_id(cn, mailboxes[i], uids[i], ids[i]);
			if (ret)
				return ret;
			total -= sizes[i];
			d->bodies--;
			d->body_bytes -= sizes[i];
			d->evictions++;
			evicted++;
		}
		if (!evicted)
			break;
	}
	return 0;
}

int cache_evict_locked(struct cache_conn *cn)
{
	return cache_evict_protect(cn, 0);
}

int cache_evict(struct cache *c)
{
	struct cache_conn *cn;
	int ret = cache_txn_open(c, &cn);

	if (ret)
		return ret;
	return cache_txn_end(cn, cache_evict_protect(cn, 0));
}

/* --- writing --- */

int cache_body_begin(struct cache *c, int64_t mailbox_id, uint32_t uid, uint64_t expected_size,
		     struct cache_body_writer **out)
{
	struct cache_body_writer *w;
	struct cache_conn *cn;
	uint32_t uidvalidity = 0;
	int64_t old_id = 0, old_size = 0;
	bool exists = false;
	int ret;

	if (!c || !out || uid == 0 || expected_size > CACHE_BODY_MAX)
		return -EINVAL;
	cn = cache_conn_get(c);
	if (!cn)
		return -EIO;
	ret = cache_body_precheck(cn, mailbox_id, uid, &uidvalidity, &exists, &old_id, &old_size);
	if (ret)
		return ret;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->buf_size = expected_size < CACHE_BODY_CHUNK ? expected_size : CACHE_BODY_CHUNK;
	if (w->buf_size) {
		w->buf = malloc(w->buf_size);
		if (!w->buf) {
			free(w);
			return -ENOMEM;
		}
	}
	w->cache = c;
	w->conn = cn;
	w->mailbox_id = mailbox_id;
	w->uid = uid;
	w->uidvalidity = uidvalidity;
	w->had_metadata = exists;
	w->in_group = cn->txn_depth > 0;
	w->write_seq = cn->write_seq;
	w->old_id = old_id;
	w->old_size = old_size;
	w->expected = expected_size;
	*out = w;
	return 0;
}

/* Inside a write transaction: create the writer's body row and note its
 * id; complete at once (read now), or invisible until cache_body_commit. */
static int cache_body_insert_row(struct cache_body_writer *w, bool complete)
{
	struct cache_conn *cn = w->conn;
	sqlite3_stmt *st = cache_stmt(cn, complete ? ST_BODY_INSERT_COMPLETE : ST_BODY_INSERT);
	int64_t id;
	int ret;

	if (!st)
		return -EIO;
	id = __atomic_fetch_add(&w->cache->next_body_id, 1, __ATOMIC_RELAXED);
	cache_body_bind_key(st, w->mailbox_id, w->uid, id);
	sqlite3_bind_int64(st, 4, (int64_t)w->expected);
	if (complete)
		sqlite3_bind_int64(st, 5, (int64_t)cache_clock_tick(w->cache));
	ret = cache_stmt_run(cn, st, "storing a body");
	if (ret == 0)
		w->body_id = id;
	return ret;
}

/* Inside a write transaction: store the buffer as the next chunk. */
static int cache_body_insert_chunk(struct cache_body_writer *w)
{
	struct cache_conn *cn = w->conn;
	sqlite3_stmt *st;
	int ret;

	if (w->buf_len == 0)
		return 0;
	st = cache_stmt(cn, ST_CHUNK_INSERT);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, cache_chunk_rowid(w->body_id, w->seq));
	sqlite3_bind_blob(st, 2, w->buf, (int)w->buf_len, SQLITE_STATIC);
	ret = cache_stmt_run(cn, st, "storing a body chunk");
	if (ret)
		return ret;
	w->seq++;
	w->buf_len = 0;
	return 0;
}

/* Store a full buffer before the end of the body, in a transaction of its
 * own, under the (invisible) body row, created on the first call. */
static int cache_body_flush(struct cache_body_writer *w)
{
	struct cache_conn *cn = w->conn;
	int64_t had_id = w->body_id;
	int ret;

	ret = cache_txn_begin(cn);
	if (ret)
		return ret;
	if (w->body_id == 0) {
		ret = cache_body_insert_row(w, false);
	} else {
		/* Still there? An expunge or a UIDVALIDITY change drops it. */
		sqlite3_stmt *st = cache_stmt(cn, ST_BODY_CHECK);

		ret = -EIO;
		if (st) {
			cache_body_bind_key(st, w->mailbox_id, w->uid, w->body_id);
			ret = cache_stmt_run(cn, st, "storing a body");
		}
		if (ret == 0 && sqlite3_changes(cn->db) == 0)
			ret = -ENOENT;
	}
	if (ret == 0)
		ret = cache_body_insert_chunk(w);
	ret = cache_txn_end(cn, ret);
	/* An id from a rolled back insert may be handed out again: forget it. */
	if (ret && !had_id)
		w->body_id = 0;
	return ret;
}

int cache_body_write(struct cache_body_writer *w, const void *data, size_t len)
{
	const unsigned char *p = data;
	int ret;

	if (!w || (len && !data))
		return -EINVAL;
	if (w->error)
		return w->error;
	if (len > w->expected - w->written) {
		log_warnx("cache: body of UID %u: more than the %llu bytes announced", w->uid,
			  (unsigned long long)w->expected);
		w->error = -EIO;
		return w->error;
	}
	while (len) {
		size_t n;

		if (w->buf_len == w->buf_size) {
			ret = cache_body_flush(w);
			if (ret) {
				w->error = ret;
				return ret;
			}
		}
		n = w->buf_size - w->buf_len;
		if (n > len)
			n = len;
		memcpy(w->buf + w->buf_len, p, n);
		w->buf_len += n;
		w->written += n;
		p += n;
		len -= n;
	}
	return 0;
}

/* Remove what a failed or abandoned writer stored. */
static void cache_body_discard(struct cache_body_writer *w)
{
	struct cache_conn *cn = w->conn;

	if (w->body_id == 0)
		return;
	if (cache_txn_begin(cn) == 0)
		cache_txn_end(cn, cache_body_delete_id(cn, w->mailbox_id, w->uid, w->body_id));
	/* If that failed too, cache_open drops the rows next time. */
	w->body_id = 0;
}

static void cache_body_writer_free(struct cache_body_writer *w)
{
	free(w->buf);
	free(w);
}

/*
 * Inside the thread's group, with nothing written by this connection since
 * the writer began in it (cn->write_seq unchanged; the group holds the
 * write lock, so no one else wrote either): what begin found still holds,
 * so the body is stored with no checks and no savepoint of its own. This
 * is the small body of a grouped sync. A failure undoes the rows it made,
 * or, if SQLite dropped the transaction or the undo failed, fails the
 * group (cache_txn_fail): either way nothing of this body stays.
 */
static int cache_body_commit_grouped(struct cache_body_writer *w)
{
	struct cache_conn *cn = w->conn;
	struct cache_delta *d = cache_txn_delta(cn);
	bool undo_failed = false;
	int ret;

	cn->write_seq++;
	ret = cache_body_insert_row(w, true);
	if (ret == 0)
		ret = cache_body_insert_chunk(w);
	if (ret == 0) {
		d->bodies++;
		d->body_bytes += (int64_t)w->expected;
		return 0;
	}
	if (w->body_id && !sqlite3_get_autocommit(cn->db))
		undo_failed = cache_body_delete_id(cn, w->mailbox_id, w->uid, w->body_id) != 0;
	cache_txn_fail(cn, ret, undo_failed);
	w->body_id = 0;
	return ret;
}

/* Whether the commit can take cache_body_commit_grouped's path: only
 * rows to add, nothing to replace or evict. */
static bool cache_body_commit_is_plain(const struct cache_body_writer *w)
{
	const struct cache_conn *cn = w->conn;

	return w->in_group && cn->txn_depth == 1 && !cn->txn_lost &&
	       cn->write_seq == w->write_seq && w->body_id == 0 && w->old_id == 0 &&
	       !cache_evict_needed(w->conn, w->expected);
}

int cache_body_commit(struct cache_body_writer *w)
{
	struct cache_conn *cn;
	struct cache_delta *d;
	sqlite3_stmt *st;
	uint32_t uidvalidity = 0;
	int64_t old_id = 0, old_size = 0, had_id;
	bool exists = false;
	int ret;

	if (!w)
		return -EINVAL;
	cn = w->conn;
	had_id = w->body_id;
	ret = w->error;
	if (ret == 0 && w->written != w->expected) {
		log_warnx("cache: body of UID %u: %llu bytes of %llu, not kept", w->uid,
			  (unsigned long long)w->written, (unsigned long long)w->expected);
		ret = -EIO;
	}
	if (ret)
		goto out_discard;
	if (cache_body_commit_is_plain(w)) {
		ret = cache_body_commit_grouped(w);
		cache_body_writer_free(w);
		return ret;
	}
	ret = cache_txn_begin(cn);
	if (ret)
		goto out_discard;
	d = cache_txn_delta(cn);
	ret = cache_body_precheck(cn, w->mailbox_id, w->uid, &uidvalidity, &exists, &old_id,
				  &old_size);
	if (ret == 0 && uidvalidity != w->uidvalidity)
		ret = -ENOENT; /* the body belongs to a past UIDVALIDITY */
	if (ret == 0 && w->had_metadata && !exists)
		ret = -ENOENT; /* expunged meanwhile */
	if (ret)
		goto out_end;

	/* Replace a complete body of the same message, if any. */
	if (old_id) {
		ret = cache_body_delete_id(cn, w->mailbox_id, w->uid, old_id);
		d->bodies--;
		d->body_bytes -= old_size;
	}
	if (ret)
		goto out_end;

	if (w->body_id == 0) {
		/* All of it is in the buffer: one row, complete at once. */
		ret = cache_body_insert_row(w, true);
		if (ret == 0)
			ret = cache_body_insert_chunk(w);
	} else {
		ret = cache_body_insert_chunk(w);
		st = ret ? NULL : cache_stmt(cn, ST_BODY_COMPLETE);
		if (!ret && !st)
			ret = -EIO;
		if (ret == 0) {
			cache_body_bind_key(st, w->mailbox_id, w->uid, w->body_id);
			sqlite3_bind_int64(st, 4, (int64_t)cache_clock_tick(w->cache));
			ret = cache_stmt_run(cn, st, "storing a body");
		}
		if (ret == 0 && sqlite3_changes(cn->db) == 0)
			ret = -ENOENT;
	}
	if (ret)
		goto out_end;
	d->bodies++;
	d->body_bytes += (int64_t)w->expected;
	ret = cache_evict_protect(cn, w->body_id);
out_end:
	ret = cache_txn_end(cn, ret);
	if (ret == 0) {
		cache_body_writer_free(w);
		return 0;
	}
	if (!had_id)
		w->body_id = 0; /* rolled back: the id may be handed out again */
out_discard:
	cache_body_discard(w);
	cache_body_writer_free(w);
	return ret;
}

void cache_body_abort(struct cache_body_writer *w)
{
	if (!w)
		return;
	cache_body_discard(w);
	cache_body_writer_free(w);
}

/* --- reading --- */

int cache_body_read(struct cache *c, int64_t mailbox_id, uint32_t uid, uint64_t offset, void *buf,
		    size_t len, size_t *read_out)
{
	struct cache_conn *cn;
	sqlite3_blob *blob = NULL;
	sqlite3_stmt *st;
	unsigned char *dst = buf;
	int64_t body_id = 0, size = 0;
	size_t done = 0;
	int rc, ret = 0;

	if (!c || (len && !buf))
		return -EINVAL;
	if (read_out)
		*read_out = 0;
	/* The statement stays active until the end: one read snapshot for the
	 * lookup and the chunks. */
	st = cache_conn_stmt(c, ST_BODY_FIND, true, &cn);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		__atomic_add_fetch(&c->misses, 1, __ATOMIC_RELAXED);
		ret = -ENOENT;
		goto out_put;
	}
	if (rc != SQLITE_ROW) {
		ret = cache_sqlite_error(cn, rc, "finding a body");
		goto out_put;
	}
	body_id = sqlite3_column_int64(st, 0);
	size = sqlite3_column_int64(st, 1);
	if (offset < (uint64_t)size && len > (uint64_t)size - offset)
		len = (size_t)((uint64_t)size - offset);
	while (offset < (uint64_t)size && done < len) {
		uint64_t seq = offset / CACHE_BODY_CHUNK;
		size_t in_chunk = (size_t)(offset % CACHE_BODY_CHUNK);
		size_t n = CACHE_BODY_CHUNK - in_chunk;
		int64_t rowid = cache_chunk_rowid(body_id, seq);

		if (n > len - done)
			n = len - done;
		if (!blob)
			rc = sqlite3_blob_open(cn->db, "main", "body_chunk", "data", rowid, 0, &blob);
		else
			rc = sqlite3_blob_reopen(blob, rowid);
		if (rc == SQLITE_OK)
			rc = sqlite3_blob_read(blob, dst + done, (int)n, (int)in_chunk);
		if (rc != SQLITE_OK) {
			ret = cache_sqlite_error(cn, rc, "reading a body");
			goto out_put;
		}
		done += n;
		offset += n;
	}
	__atomic_add_fetch(&c->hits, 1, __ATOMIC_RELAXED);
	if (read_out)
		*read_out = done;
out_put:
	sqlite3_blob_close(blob);
	cache_stmt_put(cn, ST_BODY_FIND, st);
	if (ret == 0)
		cache_body_touch(c, cn, mailbox_id, uid, body_id);
	return ret;
}

bool cache_body_has(struct cache *c, int64_t mailbox_id, uint32_t uid, uint64_t *size_out)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	bool found;

	st = cache_conn_stmt(c, ST_BODY_FIND, true, &cn);
	if (!st)
		return false;
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	found = cache_stmt_row(cn, st, "finding a body") > 0;
	if (found && size_out)
		*size_out = (uint64_t)sqlite3_column_int64(st, 1);
	cache_stmt_put(cn, ST_BODY_FIND, st);
	return found;
}

int cache_bodies_held(struct cache *c, int64_t mailbox_id, uint32_t lo, uint32_t hi,
		      uint32_t *uids, size_t max, size_t *n_out)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	size_t n = 0;
	int ret = 0;

	*n_out = 0;
	if (lo > hi || max == 0)
		return 0;
	st = cache_conn_stmt(c, ST_BODY_HELD_RANGE, true, &cn);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, lo);
	sqlite3_bind_int64(st, 3, hi);
	while (n < max && (ret = cache_stmt_row(cn, st, "listing held bodies")) > 0)
		uids[n++] = (uint32_t)sqlite3_column_int64(st, 0);
	cache_stmt_put(cn, ST_BODY_HELD_RANGE, st);
	if (ret < 0)
		return ret;
	*n_out = n;
	return 0;
}

int cache_body_delete(struct cache *c, int64_t mailbox_id, uint32_t uid)
{
	struct cache_conn *cn;
	int ret = cache_txn_open(c, &cn);

	if (ret)
		return ret;
	ret = cache_bodies_delete_range(cn, mailbox_id, uid, uid);
	if (ret == 0)
		ret = -ENOENT;
	else if (ret > 0)
		ret = 0;
	return cache_txn_end(cn, ret);
}
