/*
 * cache/outbox.c: messages the user wrote that the server has not accepted
 * yet. Unlike the rest of the cache they are the user's only copy, so they
 * are committed with synchronous = FULL (the WAL is synced before
 * cache_outbox_put returns) and never evicted; deleting a mailbox keeps
 * them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imapfs/log.h"
#include "cache_i.h"

int cache_outbox_put(struct cache *c, const struct cache_outbox_entry *e, const void *data,
		     size_t len, int64_t *id_out)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	int64_t created_at;
	int ret;

	if (!c || !e || (len && !data) || len > INT32_MAX)
		return -EINVAL;
	cn = cache_conn_get(c);
	if (!cn)
		return -EIO;
	created_at = e->created_at ? e->created_at : (int64_t)time(NULL);
	st = cache_stmt(cn, ST_SYNC_FULL);
	if (!st || cache_stmt_run(cn, st, "asking for a durable commit"))
		return -EIO;
	ret = cache_txn_begin(cn);
	if (ret)
		goto out_sync;
	st = cache_stmt(cn, ST_OB_PUT);
	if (!st) {
		ret = -EIO;
		goto out_end;
	}
	sqlite3_bind_int64(st, 1, e->mailbox_id);
	sqlite3_bind_text(st, 2, e->name ? e->name : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, e->flags ? e->flags : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, e->internaldate);
	sqlite3_bind_int64(st, 5, (int64_t)len);
	sqlite3_bind_text(st, 6, e->message_id ? e->message_id : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, created_at);
	sqlite3_bind_blob(st, 8, len ? data : "", (int)len, SQLITE_STATIC);
	sqlite3_bind_int(st, 9, e->held ? 1 : 0);
	ret = cache_stmt_run(cn, st, "storing an outbox message");
	if (ret == 0 && id_out)
		*id_out = sqlite3_last_insert_rowid(cn->db);
out_end:
	ret = cache_txn_end(cn, ret);
out_sync:
	st = cache_stmt(cn, ST_SYNC_NORMAL);
	if (st)
		cache_stmt_run(cn, st, "back to normal commits");
	return ret;
}

int cache_outbox_list(struct cache *c, int64_t mailbox_id, cache_outbox_cb cb, void *ctx)
{
	enum cache_stmt_id id = mailbox_id ? ST_OB_LIST_MB : ST_OB_LIST_ALL;
	struct cache_outbox_entry e;
	struct cache_conn *cn;
	sqlite3_stmt *st;
	int ret;

	if (!cb)
		return -EINVAL;
	st = cache_conn_stmt(c, id, true, &cn);
	if (!st)
		return -EIO;
	if (mailbox_id)
		sqlite3_bind_int64(st, 1, mailbox_id);
	while ((ret = cache_stmt_row(cn, st, "listing the outbox")) > 0) {
		e.id = sqlite3_column_int64(st, 0);
		e.mailbox_id = sqlite3_column_int64(st, 1);
		e.name = (const char *)sqlite3_column_text(st, 2);
		e.flags = (const char *)sqlite3_column_text(st, 3);
		e.internaldate = sqlite3_column_int64(st, 4);
		e.size = (uint64_t)sqlite3_column_int64(st, 5);
		e.message_id = (const char *)sqlite3_column_text(st, 6);
		e.created_at = sqlite3_column_int64(st, 7);
		e.held = sqlite3_column_int(st, 8) != 0;
		if (!e.name)
			e.name = "";
		if (!e.flags)
			e.flags = "";
		if (!e.message_id)
			e.message_id = "";
		ret = cb(ctx, &e);
		if (ret)
			break;
	}
	cache_stmt_put(cn, id, st);
	return ret;
}

int cache_outbox_get_data(struct cache *c, int64_t id, void **data_out, size_t *len_out)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	int ret;

	if (!data_out || !len_out)
		return -EINVAL;
	st = cache_conn_stmt(c, ST_OB_DATA, false, &cn);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	ret = cache_stmt_row(cn, st, "reading an outbox message");
	if (ret > 0) {
		const void *p = sqlite3_column_blob(st, 0);
		size_t len = (size_t)sqlite3_column_bytes(st, 0);
		void *copy = malloc(len ? len : 1);

		ret = 0;
		if (!copy) {
			ret = -ENOMEM;
		} else {
			if (len)
				memcpy(copy, p, len);
			*data_out = copy;
			*len_out = len;
		}
	} else if (ret == 0) {
		ret = -ENOENT;
	}
	cache_stmt_done(st);
	return ret;
}

int cache_outbox_delete(struct cache *c, int64_t id)
{
	struct cache_conn *cn;
	int ret;

	ret = cache_txn_open(c, &cn);
	if (ret)
		return ret;
	ret = cache_stmt_run_key(cn, ST_OB_DELETE, id, "deleting an outbox message");
	if (ret == 0 && sqlite3_changes(cn->db) == 0)
		ret = -ENOENT;
	return cache_txn_end(cn, ret);
}
