/*
 * cache/message.c: message metadata, and batches of changes to it. A batch
 * is recorded in memory and applied in one short write transaction at
 * commit, so a caller that builds it while parsing a server response never
 * holds the database's write lock meanwhile.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/log.h"
#include "cache_i.h"

static void cache_message_from_row(sqlite3_stmt *st, struct cache_message *out)
{
	out->uid = (uint32_t)sqlite3_column_int64(st, 0);
	out->size = (uint64_t)sqlite3_column_int64(st, 1);
	out->internaldate = sqlite3_column_int64(st, 2);
	out->modseq = (uint64_t)sqlite3_column_int64(st, 3);
	out->flags = (const char *)sqlite3_column_text(st, 4);
	if (!out->flags)
		out->flags = "";
}

int cache_message_get(struct cache *c, int64_t mailbox_id, uint32_t uid, struct cache_message *out)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	int ret;

	if (!out)
		return -EINVAL;
	st = cache_conn_stmt(c, ST_MSG_GET, false, &cn);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	ret = cache_stmt_row(cn, st, "looking up a message");
	if (ret > 0) {
		cache_message_from_row(st, out);
		out->flags = cache_conn_strdup(cn, 0, out->flags);
		ret = out->flags ? 0 : -ENOMEM;
	} else if (ret == 0) {
		ret = -ENOENT;
	}
	cache_stmt_done(st);
	return ret;
}

int cache_message_list(struct cache *c, int64_t mailbox_id, cache_message_cb cb, void *ctx)
{
	struct cache_conn *cn;
	struct cache_message msg;
	sqlite3_stmt *st;
	int ret;

	if (!cb)
		return -EINVAL;
	st = cache_conn_stmt(c, ST_MSG_LIST, true, &cn);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	while ((ret = cache_stmt_row(cn, st, "listing messages")) > 0) {
		cache_message_from_row(st, &msg);
		ret = cb(ctx, &msg);
		if (ret)
			break;
	}
	cache_stmt_put(cn, ST_MSG_LIST, st);
	return ret;
}

int cache_message_count(struct cache *c, int64_t mailbox_id, uint64_t *count_out,
			uint32_t *max_uid_out)
{
	struct cache_conn *cn;
	sqlite3_stmt *st;
	int ret;

	st = cache_conn_stmt(c, ST_MSG_COUNT, false, &cn);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	ret = cache_stmt_row(cn, st, "counting messages");
	if (ret > 0) {
		if (count_out)
			*count_out = (uint64_t)sqlite3_column_int64(st, 0);
		if (max_uid_out)
			*max_uid_out = (uint32_t)sqlite3_column_int64(st, 1);
		ret = 0;
	}
	cache_stmt_done(st);
	return ret;
}

/* --- batches --- */

enum cache_batch_op_type {
	BATCH_PUT,
	BATCH_SET_FLAGS,
	BATCH_EXPUNGE,
	BATCH_RETAIN,
};

struct cache_batch_op {
	enum cache_batch_op_type type;
	uint32_t uid, uid_hi;
	int64_t internaldate;
	uint64_t size, modseq;
	size_t flags_off;   /* into batch->strings */
	uint32_t *uids;     /* BATCH_RETAIN: owned copy */
	size_t count;
};

struct cache_batch {
	struct cache *cache;
	int64_t mailbox_id;
	struct cache_batch_op *ops;
	size_t op_count, op_size;
	char *strings;
	size_t strings_len, strings_size;
};

int cache_batch_begin(struct cache *c, int64_t mailbox_id, struct cache_batch **out)
{
	struct cache_batch *b;

	if (!c || !out)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->cache = c;
	b->mailbox_id = mailbox_id;
	*out = b;
	return 0;
}

static struct cache_batch_op *cache_batch_add(struct cache_batch *b)
{
	if (b->op_count == b->op_size) {
		size_t size = b->op_size ? b->op_size * 2 : 64;
		struct cache_batch_op *ops = realloc(b->ops, size * sizeof(*ops));

		if (!ops)
			return NULL;
		b->ops = ops;
		b->op_size = size;
	}
	memset(&b->ops[b->op_count], 0, sizeof(b->ops[0]));
	return &b->ops[b->op_count++];
}

/* Copy s into the batch's string arena; its offset in *off_out. */
static int cache_batch_string(struct cache_batch *b, const char *s, size_t *off_out)
{
	size_t len = strlen(s ? s : "") + 1;

	if (b->strings_len + len > b->strings_size) {
		size_t size = b->strings_size ? b->strings_size : 4096;
		char *p;

		while (size < b->strings_len + len)
			size *= 2;
		p = realloc(b->strings, size);
		if (!p)
			return -ENOMEM;
		b->strings = p;
		b->strings_size = size;
	}
	memcpy(b->strings + b->strings_len, s ? s : "", len);
	*off_out = b->strings_len;
	b->strings_len += len;
	return 0;
}

int cache_batch_put(struct cache_batch *b, const struct cache_message *msg)
{
	struct cache_batch_op *op;
	size_t off;

	if (!b || !msg || msg->uid == 0)
		return -EINVAL;
	if (cache_batch_string(b, msg->flags, &off))
		return -ENOMEM;
	op = cache_batch_add(b);
	if (!op)
		return -ENOMEM;
	op->type = BATCH_PUT;
	op->uid = msg->uid;
	op->size = msg->size;
	op->internaldate = msg->internaldate;
	op->modseq = msg->modseq;
	op->flags_off = off;
	return 0;
}

int cache_batch_set_flags(struct cache_batch *b, uint32_t uid, const char *flags, uint64_t modseq)
{
	struct cache_batch_op *op;
	size_t off;

	if (!b)
		return -EINVAL;
	if (cache_batch_string(b, flags, &off))
		return -ENOMEM;
	op = cache_batch_add(b);
	if (!op)
		return -ENOMEM;
	op->type = BATCH_SET_FLAGS;
	op->uid = uid;
	op->modseq = modseq;
	op->flags_off = off;
	return 0;
}

int cache_batch_expunge(struct cache_batch *b, uint32_t uid_lo, uint32_t uid_hi)
{
	struct cache_batch_op *op;

	if (!b || uid_lo > uid_hi)
		return -EINVAL;
	op = cache_batch_add(b);
	if (!op)
		return -ENOMEM;
	op->type = BATCH_EXPUNGE;
	op->uid = uid_lo;
	op->uid_hi = uid_hi;
	return 0;
}

int cache_batch_retain(struct cache_batch *b, const uint32_t *uids, size_t count)
{
	return cache_batch_retain_below(b, uids, count, 0);
}

int cache_batch_retain_below(struct cache_batch *b, const uint32_t *uids, size_t count,
			     uint32_t uid_limit)
{
	struct cache_batch_op *op;
	uint32_t *copy = NULL;
	size_t i;

	if (!b || (count && !uids))
		return -EINVAL;
	for (i = 1; i < count; i++)
		if (uids[i] <= uids[i - 1])
			return -EINVAL;
	if (count) {
		copy = malloc(count * sizeof(*copy));
		if (!copy)
			return -ENOMEM;
		memcpy(copy, uids, count * sizeof(*copy));
	}
	op = cache_batch_add(b);
	if (!op) {
		free(copy);
		return -ENOMEM;
	}
	op->type = BATCH_RETAIN;
	op->uids = copy;
	op->count = count;
	op->uid = uid_limit;
	return 0;
}

int cache_messages_delete_range(struct cache_conn *cn, int64_t mailbox_id, uint32_t lo, uint32_t hi,
				const char *what)
{
	sqlite3_stmt *st;
	int ret = cache_bodies_delete_range(cn, mailbox_id, lo, hi);

	if (ret < 0)
		return ret;
	st = cache_stmt(cn, ST_MSG_DELETE_RANGE);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, lo);
	sqlite3_bind_int64(st, 3, hi);
	return cache_stmt_run(cn, st, what);
}

/* Delete every message and body of the mailbox whose UID is not in op
 * (below op->uid, when that is not 0). */
static int cache_batch_apply_retain(struct cache_conn *cn, int64_t mailbox_id,
				    const struct cache_batch_op *op)
{
	sqlite3_stmt *st = cache_stmt(cn, ST_MSG_UIDS);
	uint32_t *gone = NULL, *p;
	size_t gone_count = 0, gone_size = 0, i = 0, k;
	int ret;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, mailbox_id);
	while ((ret = cache_stmt_row(cn, st, "listing UIDs")) > 0) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(st, 0);

		if (op->uid && uid >= op->uid)
			continue;
		while (i < op->count && op->uids[i] < uid)
			i++;
		if (i < op->count && op->uids[i] == uid)
			continue;
		if (gone_count == gone_size) {
			gone_size = gone_size ? gone_size * 2 : 256;
			p = realloc(gone, gone_size * sizeof(*gone));
			if (!p) {
				ret = -ENOMEM;
				break;
			}
			gone = p;
		}
		gone[gone_count++] = uid;
	}
	cache_stmt_done(st);
	/* Delete runs of consecutive UIDs as ranges. */
	for (i = 0; !ret && i < gone_count; i = k) {
		for (k = i + 1; k < gone_count && gone[k] == gone[k - 1] + 1; k++)
			;
		ret = cache_messages_delete_range(cn, mailbox_id, gone[i], gone[k - 1],
						  "expunging messages");
	}
	free(gone);
	return ret;
}

static int cache_batch_apply(struct cache_conn *cn, struct cache_batch *b)
{
	sqlite3_stmt *put = NULL, *flags = NULL;
	size_t i;
	int rc, ret = 0;

	for (i = 0; i < b->op_count && !ret; i++) {
		const struct cache_batch_op *op = &b->ops[i];

		switch (op->type) {
		case BATCH_PUT:
			if (!put && !(put = cache_stmt(cn, ST_MSG_PUT)))
				return -EIO;
			sqlite3_bind_int64(put, 1, b->mailbox_id);
			sqlite3_bind_int64(put, 2, op->uid);
			sqlite3_bind_int64(put, 3, (int64_t)op->size);
			sqlite3_bind_int64(put, 4, op->internaldate);
			sqlite3_bind_int64(put, 5, (int64_t)op->modseq);
			sqlite3_bind_text(put, 6, b->strings + op->flags_off, -1, SQLITE_STATIC);
			rc = sqlite3_step(put);
			sqlite3_reset(put);
			if (rc != SQLITE_DONE)
				ret = cache_sqlite_error(cn, rc, "storing a message");
			break;
		case BATCH_SET_FLAGS:
			if (!flags && !(flags = cache_stmt(cn, ST_MSG_SET_FLAGS)))
				return -EIO;
			sqlite3_bind_int64(flags, 1, b->mailbox_id);
			sqlite3_bind_int64(flags, 2, op->uid);
			sqlite3_bind_text(flags, 3, b->strings + op->flags_off, -1, SQLITE_STATIC);
			sqlite3_bind_int64(flags, 4, (int64_t)op->modseq);
			rc = sqlite3_step(flags);
			sqlite3_reset(flags);
			if (rc != SQLITE_DONE)
				ret = cache_sqlite_error(cn, rc, "storing flags");
			break;
		case BATCH_EXPUNGE:
			ret = cache_messages_delete_range(cn, b->mailbox_id, op->uid, op->uid_hi,
							  "expunging messages");
			break;
		case BATCH_RETAIN:
			ret = cache_batch_apply_retain(cn, b->mailbox_id, op);
			break;
		}
	}
	if (put)
		sqlite3_clear_bindings(put);
	if (flags)
		sqlite3_clear_bindings(flags);
	return ret;
}

int cache_batch_commit(struct cache_batch *b)
{
	struct cache_conn *cn;
	int ret;

	if (!b)
		return -EINVAL;
	ret = cache_txn_open(b->cache, &cn);
	if (ret)
		goto out_free;
	ret = cache_mailbox_check_locked(cn, b->mailbox_id, NULL);
	if (ret == 0)
		ret = cache_batch_apply(cn, b);
	ret = cache_txn_end(cn, ret);
out_free:
	cache_batch_abort(b);
	return ret;
}

void cache_batch_abort(struct cache_batch *b)
{
	size_t i;

	if (!b)
		return;
	for (i = 0; i < b->op_count; i++)
		free(b->ops[i].uids);
	free(b->ops);
	free(b->strings);
	free(b);
}
