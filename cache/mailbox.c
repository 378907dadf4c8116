/*
 * cache/mailbox.c: the mailbox rows and their sync state. A changed
 * UIDVALIDITY drops the mailbox's messages and bodies in the transaction
 * that stores it.
 */
#include <errno.h>
#include <string.h>

#include "imapfs/log.h"
#include "cache_i.h"

/* Fill *out from a row of ST_MB_*; strings point into the statement. */
static void cache_mailbox_from_row(sqlite3_stmt *st, struct cache_mailbox *out)
{
	out->id = sqlite3_column_int64(st, 0);
	out->name = (const char *)sqlite3_column_text(st, 1);
	out->server_name = (const char *)sqlite3_column_text(st, 2);
	out->delimiter = (char)sqlite3_column_int(st, 3);
	out->attrs = (unsigned)sqlite3_column_int64(st, 4);
	out->uidvalidity = (uint32_t)sqlite3_column_int64(st, 5);
	out->uidnext = (uint32_t)sqlite3_column_int64(st, 6);
	out->highestmodseq = (uint64_t)sqlite3_column_int64(st, 7);
	out->synced_at = sqlite3_column_int64(st, 8);
	if (!out->name)
		out->name = "";
	if (!out->server_name)
		out->server_name = "";
}

int cache_mailbox_put(struct cache *c, const struct cache_mailbox *mb, int64_t *id_out)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	int rc, ret;

	if (!mb || !mb->name || !mb->server_name)
		return -EINVAL;
	ret = cache_txn_open(c, &cn);
	if (ret)
		return ret;
	st = cache_stmt(cn, ST_MB_UPSERT);
	if (!st) {
		ret = -EIO;
		goto out_end;
	}
	sqlite3_bind_text(st, 1, mb->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, mb->server_name, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, (unsigned char)mb->delimiter);
	sqlite3_bind_int64(st, 4, mb->attrs);
	sqlite3_bind_int64(st, 5, mb->uidvalidity);
	sqlite3_bind_int64(st, 6, mb->uidnext);
	sqlite3_bind_int64(st, 7, (int64_t)mb->highestmodseq);
	sqlite3_bind_int64(st, 8, mb->synced_at);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (id_out)
			*id_out = sqlite3_column_int64(st, 0);
		rc = sqlite3_step(st);
	}
	if (rc != SQLITE_DONE)
		ret = cache_sqlite_error(cn, rc, "storing a mailbox");
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
out_end:
	return cache_txn_end(cn, ret);
}

static int cache_mailbox_lookup(struct cache *c, enum cache_stmt_id id, int64_t key_id,
				const char *key, struct cache_mailbox *out)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	int ret;

	if (!out || (id != ST_MB_BY_ID && !key))
		return -EINVAL;
	st = cache_conn_stmt(c, id, false, &cn);
	if (!st)
		return -EIO;
	if (id == ST_MB_BY_ID)
		sqlite3_bind_int64(st, 1, key_id);
	else
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	ret = cache_stmt_row(cn, st, "looking up a mailbox");
	if (ret > 0) {
		cache_mailbox_from_row(st, out);
		out->name = cache_conn_strdup(cn, 0, out->name);
		out->server_name = cache_conn_strdup(cn, 1, out->server_name);
		ret = !out->name || !out->server_name ? -ENOMEM : 0;
	} else if (ret == 0) {
		ret = -ENOENT;
	}
	cache_stmt_done(st);
	return ret;
}

int cache_mailbox_get_by_name(struct cache *c, const char *name, struct cache_mailbox *out)
{
	return cache_mailbox_lookup(c, ST_MB_BY_NAME, 0, name, out);
}

int cache_mailbox_get_by_server_name(struct cache *c, const char *server_name,
				     struct cache_mailbox *out)
{
	return cache_mailbox_lookup(c, ST_MB_BY_SERVER, 0, server_name, out);
}

int cache_mailbox_get(struct cache *c, int64_t id, struct cache_mailbox *out)
{
	return cache_mailbox_lookup(c, ST_MB_BY_ID, id, NULL, out);
}

int cache_mailbox_list(struct cache *c, cache_mailbox_cb cb, void *ctx)
{
	struct cache_conn *cn;
	struct cache_mailbox mb;
	sqlite3_stmt *st;
	int ret;

	if (!cb)
		return -EINVAL;
	st = cache_conn_stmt(c, ST_MB_LIST, true, &cn);
	if (!st)
		return -EIO;
	while ((ret = cache_stmt_row(cn, st, "listing mailboxes")) > 0) {
		cache_mailbox_from_row(st, &mb);
		ret = cb(ctx, &mb);
		if (ret)
			break;
	}
	cache_stmt_put(cn, ST_MB_LIST, st);
	return ret;
}

/* Inside a write transaction: the stored UIDVALIDITY, or -ENOENT. */
static int cache_mailbox_uidvalidity(struct cache_conn *cn, int64_t id, uint32_t *out)
{
	sqlite3_stmt *st = cache_stmt(cn, ST_MB_UIDVALIDITY);
	int ret;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	ret = cache_stmt_row(cn, st, "reading a mailbox");
	if (ret > 0) {
		*out = (uint32_t)sqlite3_column_int64(st, 0);
		ret = 0;
	} else if (ret == 0) {
		ret = -ENOENT;
	}
	cache_stmt_done(st);
	return ret;
}

int cache_mailbox_check_locked(struct cache_conn *cn, int64_t id, uint32_t *uidvalidity_out)
{
	uint32_t uv = 0;
	int ret = cache_mailbox_uidvalidity(cn, id, &uv);

	if (ret == 0 && uidvalidity_out)
		*uidvalidity_out = uv;
	return ret;
}

/* Inside a write transaction: drop all messages and bodies of a mailbox. */
static int cache_mailbox_empty(struct cache_conn *cn, int64_t id)
{
	return cache_messages_delete_range(cn, id, 0, UINT32_MAX, "dropping messages");
}

int cache_mailbox_set_state(struct cache *c, int64_t id, uint32_t uidvalidity, uint32_t uidnext,
			    uint64_t highestmodseq, int64_t synced_at)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	uint32_t old = 0;
	int ret;

	ret = cache_txn_open(c, &cn);
	if (ret)
		return ret;
	ret = cache_mailbox_uidvalidity(cn, id, &old);
	if (ret)
		goto out_end;
	if (old != 0 && uidvalidity != 0 && uidvalidity != old) {
		log_info("cache: mailbox %lld: UIDVALIDITY %u -> %u, dropping its messages",
			 (long long)id, old, uidvalidity);
		ret = cache_mailbox_empty(cn, id);
		if (ret)
			goto out_end;
	}
	st = cache_stmt(cn, ST_MB_SET_STATE);
	if (!st) {
		ret = -EIO;
		goto out_end;
	}
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, uidvalidity);
	sqlite3_bind_int64(st, 3, uidnext);
	sqlite3_bind_int64(st, 4, (int64_t)highestmodseq);
	sqlite3_bind_int64(st, 5, synced_at);
	ret = cache_stmt_run(cn, st, "storing mailbox state");
out_end:
	return cache_txn_end(cn, ret);
}

int cache_mailbox_rename(struct cache *c, int64_t id, const char *name, const char *server_name)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	int ret;

	if (!name || !server_name)
		return -EINVAL;
	ret = cache_txn_open(c, &cn);
	if (ret)
		return ret;
	st = cache_stmt(cn, ST_MB_RENAME);
	if (!st) {
		ret = -EIO;
		goto out_end;
	}
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, server_name, -1, SQLITE_STATIC);
	ret = cache_stmt_run(cn, st, "renaming a mailbox");
	if (ret == 0 && sqlite3_changes(cn->db) == 0)
		ret = -ENOENT;
out_end:
	return cache_txn_end(cn, ret);
}

int cache_mailbox_delete(struct cache *c, int64_t id)
{
	struct cache_conn *cn;
	int ret;

	ret = cache_txn_open(c, &cn);
	if (ret)
		return ret;
	ret = cache_mailbox_empty(cn, id);
	if (ret == 0)
		ret = cache_stmt_run_key(cn, ST_MB_DELETE, id, "deleting a mailbox");
	if (ret == 0 && sqlite3_changes(cn->db) == 0)
		ret = -ENOENT;
	return cache_txn_end(cn, ret);
}
