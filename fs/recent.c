/*
 * fs/recent.c: bodies just fetched, kept in memory for the next read (see
 * recent_i.h). A chained hash table over a FIFO list: the prefetch puts
 * bodies in the order a scan reads them, so the oldest is the one least
 * likely to be read still.
 */
#include "recent_i.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define RECENT_BUCKETS 4096 /* a power of two */

struct recent_entry {
	struct recent_entry *hnext;       /* bucket chain */
	struct recent_entry *older, *newer; /* FIFO */
	int64_t mailbox_id;
	uint32_t uidvalidity;
	uint32_t uid;
	char *data;
	size_t len;
};

struct recent {
	pthread_mutex_t lock;
	size_t max_bytes, max_body;
	size_t count, bytes;
	uint64_t hits, misses, evicted;
	struct recent_entry *oldest, *newest;
	struct recent_entry *buckets[RECENT_BUCKETS];
};

static size_t recent_hash(int64_t mailbox_id, uint32_t uidvalidity, uint32_t uid)
{
	uint64_t h = (uint64_t)mailbox_id * 0x9e3779b97f4a7c15ULL;

	h ^= ((uint64_t)uidvalidity << 32 | uid) * 0xc2b2ae3d27d4eb4fULL;
	h ^= h >> 29;
	return (size_t)(h & (RECENT_BUCKETS - 1));
}

struct recent *recent_new(size_t max_bytes, size_t max_body)
{
	struct recent *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	if (pthread_mutex_init(&r->lock, NULL) != 0) {
		free(r);
		return NULL;
	}
	r->max_bytes = max_bytes;
	r->max_body = max_body < max_bytes ? max_body : max_bytes;
	return r;
}

/* Unlink e from its bucket and the FIFO (lock held). */
static void recent_unlink_locked(struct recent *r, struct recent_entry *e)
{
	struct recent_entry **p = &r->buckets[recent_hash(e->mailbox_id, e->uidvalidity, e->uid)];

	while (*p && *p != e)
		p = &(*p)->hnext;
	if (*p)
		*p = e->hnext;
	if (e->older)
		e->older->newer = e->newer;
	else
		r->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		r->newest = e->older;
	r->count--;
	r->bytes -= e->len;
}

/* Unlink e and free it (lock held). */
static void recent_remove_locked(struct recent *r, struct recent_entry *e)
{
	recent_unlink_locked(r, e);
	free(e->data);
	free(e);
}

static struct recent_entry *recent_find_locked(struct recent *r, int64_t mailbox_id,
					       uint32_t uidvalidity, uint32_t uid)
{
	struct recent_entry *e = r->buckets[recent_hash(mailbox_id, uidvalidity, uid)];

	while (e && !(e->mailbox_id == mailbox_id && e->uidvalidity == uidvalidity && e->uid == uid))
		e = e->hnext;
	return e;
}

void recent_free(struct recent *r)
{
	if (!r)
		return;
	while (r->oldest)
		recent_remove_locked(r, r->oldest);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

int recent_put(struct recent *r, int64_t mailbox_id, uint32_t uidvalidity, uint32_t uid,
	       char *data, size_t len)
{
	struct recent_entry *e;
	size_t b;

	if (len > r->max_body) {
		free(data);
		return -E2BIG;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		free(data);
		return -ENOMEM;
	}
	e->mailbox_id = mailbox_id;
	e->uidvalidity = uidvalidity;
	e->uid = uid;
	e->data = data;
	e->len = len;
	b = recent_hash(mailbox_id, uidvalidity, uid);
	pthread_mutex_lock(&r->lock);
	{
		struct recent_entry *old = recent_find_locked(r, mailbox_id, uidvalidity, uid);

		if (old)
			recent_remove_locked(r, old);
	}
	while (r->oldest && r->bytes + len > r->max_bytes) {
		recent_remove_locked(r, r->oldest);
		r->evicted++;
	}
	e->hnext = r->buckets[b];
	r->buckets[b] = e;
	e->older = r->newest;
	if (r->newest)
		r->newest->newer = e;
	else
		r->oldest = e;
	r->newest = e;
	r->count++;
	r->bytes += len;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* Lock r and find an entry for a read or a take, counting the hit or the
 * miss; NULL (and r unlocked) on a miss. */
static struct recent_entry *recent_lock_find(struct recent *r, int64_t mailbox_id,
					     uint32_t uidvalidity, uint32_t uid)
{
	struct recent_entry *e;

	pthread_mutex_lock(&r->lock);
	e = recent_find_locked(r, mailbox_id, uidvalidity, uid);
	if (!e) {
		r->misses++;
		pthread_mutex_unlock(&r->lock);
		return NULL;
	}
	r->hits++;
	return e;
}

int recent_read(struct recent *r, int64_t mailbox_id, uint32_t uidvalidity, uint32_t uid,
		uint64_t offset, char *buf, size_t size, size_t *read_out)
{
	struct recent_entry *e = recent_lock_find(r, mailbox_id, uidvalidity, uid);
	size_t n = 0;

	if (!e)
		return -ENOENT;
	if (offset < e->len) {
		n = e->len - (size_t)offset;
		if (n > size)
			n = size;
		memcpy(buf, e->data + offset, n);
	}
	if (offset + n >= e->len)
		recent_remove_locked(r, e); /* read to its end: the page cache has it now */
	pthread_mutex_unlock(&r->lock);
	*read_out = n;
	return 0;
}

int recent_take(struct recent *r, int64_t mailbox_id, uint32_t uidvalidity, uint32_t uid,
		char **data_out, size_t *len_out)
{
	struct recent_entry *e = recent_lock_find(r, mailbox_id, uidvalidity, uid);

	if (!e)
		return -ENOENT;
	recent_unlink_locked(r, e);
	pthread_mutex_unlock(&r->lock);
	*data_out = e->data;
	*len_out = e->len;
	free(e);
	return 0;
}

void recent_stats(struct recent *r, struct recent_stats *out)
{
	pthread_mutex_lock(&r->lock);
	out->count = r->count;
	out->bytes = r->bytes;
	out->hits = r->hits;
	out->misses = r->misses;
	out->evicted = r->evicted;
	pthread_mutex_unlock(&r->lock);
}
