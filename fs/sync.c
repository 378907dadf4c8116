/*
 * fs/sync: fills the cache from the server and keeps each directory's
 * in-memory listing (dir->msgs) in step with the cache.
 *
 * - The mailbox list: LIST "" "*" on a pool worker, applied to the tree
 *   under fs->tree_lock; single flight through fs->list_lock.
 * - A listing: EXAMINE, then one bulk UID FETCH 1:* of the metadata the
 *   first time, an incremental one later (CONDSTORE CHANGEDSINCE + QRESYNC
 *   VANISHED where offered, else new UIDs above the last known plus one
 *   FLAGS fetch of the known range), applied in one cache batch. Single
 *   flight per directory through dir->syncing, waited on with a deadline.
 * - Bodies: a read miss starts one UID FETCH for the message and, when the
 *   directory is being read in listing order, the next uncached messages;
 *   further batches go ahead of the reader on other connections while the
 *   scan goes on (a window growing by bytes). Bodies stream into the cache
 *   on the worker; a reader waits only for its own message. Two readers of
 *   one message wait on the same fetch (struct fs_fetch in dir->fetches).
 *
 * Everything in a struct fs_dir below its lock is protected by dir->lock;
 * workers take it only briefly (to publish a listing, mark a body done).
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "imapfs/log.h"
#include "imapfs/mutf7.h"
#include "names_i.h"
#include "recent_i.h"
#include "sat_i.h"

#define PREFETCH_START (64 * 1024)         /* first look-ahead, bytes */
#define PREFETCH_MAX (4 * 1024 * 1024)     /* largest look-ahead */
#define PREFETCH_MAX_COUNT 1500            /* messages in one look-ahead */
#define FETCH_SET_MAX 4000                 /* bytes of one UID FETCH's UID set */
#define PREFETCH_SCAN_LIMIT 4000           /* candidates looked at per batch */
#define LARGE_MESSAGE (1024 * 1024)        /* above: the head is fetched alone first */
#define LARGE_HEAD (128 * 1024)            /* the part of a large message fetched first:
					    * as large as the first read the kernel
					    * sends (128 KiB readahead) */
#define GROUP_MAX_COUNT 100                /* bodies in one cache transaction */
#define GROUP_MAX_BYTES (1024 * 1024)      /* and their bytes */
#define GROUP_MAX_BODY (128 * 1024)        /* larger bodies stream into the cache alone */

/* The head of one large message, fetched with BODY.PEEK[]<0.LARGE_HEAD> and
 * kept in memory (dir->head): `head`, `file` or a mail client's preview
 * read it without pulling the whole message; a read past it fetches the
 * whole body into the cache as usual. */
struct fs_head {
	int refs;                /* dir->head + the job + waiters; dir->lock */
	struct fs *fs;
	struct fs_dir *dir;
	uint32_t uid;
	uint32_t uidvalidity;
	int64_t mailbox_id;
	char *server_name;
	char *data;              /* LARGE_HEAD bytes */
	size_t len;              /* bytes received; written by the worker only */
	bool busy;               /* the fetch is running; dir->lock */
	int error;               /* dir->lock */
};

struct held_body {
	size_t idx;              /* in the fetch's uids */
	uint32_t uid;
	char *data;
	size_t len;
};

struct fs_fetch {
	struct fs_fetch *next;   /* in dir->fetches */
	struct fs *fs;
	struct fs_dir *dir;
	int refs;                /* the job + waiters; protected by dir->lock */
	int64_t mailbox_id;
	char *server_name;
	uint32_t uidvalidity;
	size_t n;
	uint32_t *uids;          /* ascending */
	bool *done;              /* protected by dir->lock */
	bool finished;           /* protected by dir->lock */
	int error;               /* protected by dir->lock */
	unsigned waiting;        /* readers waiting; dir->lock to write, atomic to read */
	/* streaming state, touched only by the worker running the job */
	struct cache_body_writer *writer;
	uint32_t writer_uid;
	/* the small body arriving */
	char *mem;
	size_t mem_len, mem_size;
	uint32_t mem_uid;
	/* Small bodies that arrived, held in memory and stored in groups (one
	 * cache transaction each, fs->body_write_lock held only for that),
	 * marked done once stored: at once when a reader waits for this
	 * fetch, else every GROUP_MAX_* and at the end of the response. So
	 * no worker waits for the cache while it reads the network, and none
	 * holds the lock while it does. */
	struct held_body *held;
	size_t nheld, held_cap;
	uint64_t held_bytes;
};

/* --- helpers --- */

static void sync_dir_mailbox(struct fs *fs, struct fs_dir *dir, int64_t *id_out, char **server_out)
{
	pthread_rwlock_rdlock(&fs->tree_lock);
	*id_out = dir->selectable ? dir->mailbox_id : 0;
	if (server_out)
		*server_out = dir->selectable && dir->server_name ? strdup(dir->server_name) : NULL;
	pthread_rwlock_unlock(&fs->tree_lock);
}

ssize_t sync_find_locked(const struct fs_dir *dir, uint32_t uid)
{
	size_t lo = 0, hi = dir->nmsgs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (dir->msgs[mid].uid == uid)
			return (ssize_t)mid;
		if (dir->msgs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* Sort key of "<uid>.eml" in byte order: the digits scaled to ten places,
 * then the length ("1.eml" < "10.eml" < "100.eml" < "11.eml" < "2.eml"). */
static uint64_t sync_name_key(uint32_t uid)
{
	uint64_t scaled = uid;
	unsigned digits = 1;

	for (uint32_t v = uid; v >= 10; v /= 10)
		digits++;
	for (unsigned i = digits; i < 10; i++)
		scaled *= 10;
	return scaled << 4 | digits;
}

struct name_sort {
	uint64_t key;
	uint32_t index;
};

static int sync_cmp_name(const void *a, const void *b)
{
	uint64_t x = ((const struct name_sort *)a)->key, y = ((const struct name_sort *)b)->key;

	return x < y ? -1 : x > y;
}

bool sync_name_order_locked(struct fs_dir *dir, bool force)
{
	size_t n = dir->nmsgs;
	struct name_sort *tmp;
	uint32_t *order, *pos;
	uint64_t *bytes, sum = 0;

	if (!force && dir->name_for == dir->msgs && dir->name_for_n == n &&
	    (n == 0 || dir->name_for_first_uid == dir->msgs[0].uid))
		return true;
	tmp = malloc((n ? n : 1) * sizeof(*tmp));
	order = malloc((n ? n : 1) * sizeof(*order));
	pos = malloc((n ? n : 1) * sizeof(*pos));
	bytes = malloc((n ? n : 1) * sizeof(*bytes));
	if (!tmp || !order || !pos || !bytes) {
		free(tmp);
		free(order);
		free(pos);
		free(bytes);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		tmp[i].key = sync_name_key(dir->msgs[i].uid);
		tmp[i].index = (uint32_t)i;
	}
	if (n)
		qsort(tmp, n, sizeof(*tmp), sync_cmp_name);
	for (size_t i = 0; i < n; i++) {
		order[i] = tmp[i].index;
		pos[tmp[i].index] = (uint32_t)i;
		bytes[i] = sum;
		sum = sat_add_u64(sum, dir->msgs[tmp[i].index].size);
	}
	free(tmp);
	free(dir->name_order);
	free(dir->name_pos);
	free(dir->name_bytes);
	dir->name_order = order;
	dir->name_pos = pos;
	dir->name_bytes = bytes;
	dir->name_for = dir->msgs;
	dir->name_for_n = n;
	dir->name_for_first_uid = n ? dir->msgs[0].uid : 0;
	return true;
}

/* --- the mailbox list --- */

struct list_entry {
	char *server_name;
	char *path;
	char delimiter;
	unsigned attrs;
	int64_t mailbox_id;
};

struct list_ctx {
	struct list_entry *v;
	size_t n, cap;
};

static int sync_list_cb(void *arg, const struct imap_mailbox_info *mb)
{
	struct list_ctx *ctx = arg;
	struct list_entry *e;
	char *decoded;

	if (mb->attrs & IMAP_MBOX_NONEXISTENT)
		return 0;
	if (ctx->n == ctx->cap) {
		size_t cap = ctx->cap ? ctx->cap * 2 : 32;
		struct list_entry *bigger = realloc(ctx->v, cap * sizeof(*bigger));

		if (!bigger)
			return -1;
		ctx->v = bigger;
		ctx->cap = cap;
	}
	decoded = mutf7_decode(mb->name, strlen(mb->name));
	if (!decoded) {
		/* not valid modified UTF-7: show the name as the server spells it */
		log_warnx("mailbox name '%s' is not valid modified UTF-7", mb->name);
		decoded = strdup(mb->name);
		if (!decoded)
			return -1;
	}
	e = &ctx->v[ctx->n];
	memset(e, 0, sizeof(*e));
	e->server_name = strdup(mb->name);
	e->path = names_mailbox_path(decoded, mb->delimiter);
	free(decoded);
	if (!e->server_name || !e->path) {
		free(e->server_name);
		free(e->path);
		return -1;
	}
	e->delimiter = mb->delimiter;
	e->attrs = mb->attrs;
	ctx->n++;
	return 0;
}

static void sync_list_free(struct list_ctx *ctx)
{
	for (size_t i = 0; i < ctx->n; i++) {
		free(ctx->v[i].server_name);
		free(ctx->v[i].path);
	}
	free(ctx->v);
}

static void sync_apply_list(struct fs *fs, struct list_ctx *ctx)
{
	bool *was_visible;
	size_t ndirs_before;

	/* cache rows first, outside the tree lock */
	for (size_t i = 0; i < ctx->n; i++) {
		struct list_entry *e = &ctx->v[i];
		struct cache_mailbox mb = {
			.name = e->path,
			.server_name = e->server_name,
			.delimiter = e->delimiter,
			.attrs = e->attrs,
		};
		int r;

		if (e->attrs & IMAP_MBOX_NOSELECT)
			continue;
		r = cache_mailbox_put(fs->cache, &mb, &e->mailbox_id);
		if (r)
			log_warnx("cache: mailbox %s: %s", e->path, strerror(-r));
	}

	pthread_rwlock_wrlock(&fs->tree_lock);
	ndirs_before = fs->ndirs;
	was_visible = calloc(ndirs_before, sizeof(*was_visible));
	for (size_t i = 2; i < fs->ndirs; i++) {
		struct fs_dir *d = fs->dirs[i];

		if (was_visible)
			was_visible[i] = d->visible;
		d->visible = false;
		d->selectable = false;
	}
	for (size_t i = 0; i < ctx->n; i++) {
		struct list_entry *e = &ctx->v[i];
		struct fs_dir *d = tree_make_path_locked(fs, e->path);
		bool selectable = !(e->attrs & IMAP_MBOX_NOSELECT) && e->mailbox_id > 0;

		if (!d) {
			log_warnx("out of memory adding mailbox %s", e->path);
			continue;
		}
		if (d->selectable && selectable) {
			log_warnx("mailboxes '%s' and '%s' map to the same directory; showing the first",
				  d->server_name, e->server_name);
			continue;
		}
		if (!d->server_name || strcmp(d->server_name, e->server_name) != 0) {
			char *copy = strdup(e->server_name);

			if (copy) {
				free(d->server_name);
				d->server_name = copy;
			}
		}
		d->attrs = e->attrs;
		d->delimiter = e->delimiter;
		if (selectable) {
			d->selectable = true;
			d->mailbox_id = e->mailbox_id;
		}
	}
	tree_recount_locked(fs);
	for (size_t i = 2; i < ndirs_before && was_visible; i++) {
		struct fs_dir *d = fs->dirs[i];

		if (was_visible[i] && !d->visible)
			notify_inval_entry(fs->notify, d->parent->ino, d->name);
	}
	pthread_rwlock_unlock(&fs->tree_lock);
	free(was_visible);
}

#define SYNC_PIN_MS 60000 /* how long a created mailbox is shown unlisted */

struct fs_pin {
	char *server_name;
	char delimiter;
	int64_t until_ms;
};

void sync_pin_mailbox(struct fs *fs, const char *server_name, char delimiter)
{
	char *copy = strdup(server_name);
	struct fs_pin *bigger;

	if (!copy)
		return;
	sync_unpin_mailbox(fs, server_name);
	pthread_mutex_lock(&fs->list_lock);
	bigger = realloc(fs->pins, (fs->npins + 1) * sizeof(*bigger));
	if (bigger) {
		fs->pins = bigger;
		fs->pins[fs->npins].server_name = copy;
		fs->pins[fs->npins].delimiter = delimiter;
		fs->pins[fs->npins].until_ms = fs_now_ms() + SYNC_PIN_MS;
		fs->npins++;
		copy = NULL;
	}
	pthread_mutex_unlock(&fs->list_lock);
	free(copy);
}

void sync_unpin_mailbox(struct fs *fs, const char *server_name)
{
	int64_t now = fs_now_ms();
	size_t k = 0;

	pthread_mutex_lock(&fs->list_lock);
	for (size_t i = 0; i < fs->npins; i++) {
		if (strcmp(fs->pins[i].server_name, server_name) == 0 || fs->pins[i].until_ms < now)
			free(fs->pins[i].server_name);
		else
			fs->pins[k++] = fs->pins[i];
	}
	fs->npins = k;
	pthread_mutex_unlock(&fs->list_lock);
}

void sync_pins_free(struct fs *fs)
{
	for (size_t i = 0; i < fs->npins; i++)
		free(fs->pins[i].server_name);
	free(fs->pins);
	fs->pins = NULL;
	fs->npins = 0;
}

/* Pinned mailboxes the LIST left out: listed as if it had not. */
static int sync_list_add_pins(struct fs *fs, struct list_ctx *ctx)
{
	int64_t now = fs_now_ms();
	int r = 0;

	pthread_mutex_lock(&fs->list_lock);
	for (size_t i = 0; i < fs->npins && r == 0; i++) {
		const struct fs_pin *p = &fs->pins[i];
		struct imap_mailbox_info mb = { 0 };
		bool found = false;

		if (p->until_ms < now)
			continue;
		for (size_t k = 0; k < ctx->n && !found; k++)
			found = strcmp(ctx->v[k].server_name, p->server_name) == 0;
		if (found)
			continue;
		log_debug("LIST left out %s, created %lld ms ago: shown anyway", p->server_name,
			  (long long)(SYNC_PIN_MS - (p->until_ms - now)));
		mb.name = p->server_name;
		mb.delimiter = p->delimiter;
		r = sync_list_cb(ctx, &mb) ? -ENOMEM : 0;
	}
	pthread_mutex_unlock(&fs->list_lock);
	return r;
}

static int sync_list_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct list_ctx ctx = { 0 };
	int r = 0;

	(void)arg;
	if (imap_list(conn->session, "", "*", sync_list_cb, &ctx, &conn->err) != 0) {
		log_warnx("LIST: %s", conn->err.reason);
		r = fs_errno_from_imap(&conn->err);
		goto out;
	}
	r = sync_list_add_pins(fs, &ctx);
	if (r)
		goto out;
	sync_apply_list(fs, &ctx);
out:
	sync_list_free(&ctx);
	return r;
}

static void sync_list_done(struct fs *fs, void *arg, int result)
{
	(void)arg;
	pthread_mutex_lock(&fs->list_lock);
	fs->listing = false;
	fs->list_error = result;
	if (result == 0)
		fs->listed_at_ms = fs_now_ms();
	fs->list_gen++;
	pthread_cond_broadcast(&fs->list_cond);
	pthread_mutex_unlock(&fs->list_lock);
}

int sync_mailbox_list_after_change(struct fs *fs)
{
	struct timespec deadline;
	unsigned target;
	int r = 0;

	pthread_mutex_lock(&fs->list_lock);
	/* one in flight started before the change: the next one counts */
	target = fs->list_gen + (fs->listing ? 2 : 1);
	fs_deadline(&deadline, fs->timeout_ms);
	while ((int)(fs->list_gen - target) < 0 && r == 0) {
		if (!fs->listing) {
			r = pool_submit(fs->pool, true, sync_list_job, sync_list_done, NULL);
			if (r)
				break;
			fs->listing = true;
		}
		if (pthread_cond_timedwait(&fs->list_cond, &fs->list_lock, &deadline) == ETIMEDOUT)
			r = -ETIMEDOUT;
	}
	if (r == 0)
		r = fs->list_error;
	pthread_mutex_unlock(&fs->list_lock);
	return r;
}

int sync_mailbox_list(struct fs *fs, int64_t max_age_ms)
{
	struct timespec deadline;
	unsigned gen;
	int r = 0;

	pthread_mutex_lock(&fs->list_lock);
	if (fs->listed_at_ms && fs_now_ms() - fs->listed_at_ms <= max_age_ms)
		goto out;
	gen = fs->list_gen;
	if (!fs->listing) {
		r = pool_submit(fs->pool, true, sync_list_job, sync_list_done, NULL);
		if (r)
			goto out;
		fs->listing = true;
	}
	fs_deadline(&deadline, fs->timeout_ms);
	while (fs->list_gen == gen && r == 0)
		if (pthread_cond_timedwait(&fs->list_cond, &fs->list_lock, &deadline) == ETIMEDOUT)
			r = -ETIMEDOUT;
	if (r == 0)
		r = fs->list_error;
out:
	if (r && fs->listed_at_ms) {
		log_warnx("mailbox list: %s; showing the last one", strerror(-r));
		r = 0;
	}
	pthread_mutex_unlock(&fs->list_lock);
	return r;
}

/* --- listings --- */

struct mirror {
	struct fs_msg *msgs;
	size_t n, cap;
	uint64_t bytes;
};

static int sync_mirror_cb(void *arg, const struct cache_message *msg)
{
	struct mirror *m = arg;

	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 256;
		struct fs_msg *bigger = realloc(m->msgs, cap * sizeof(*bigger));

		if (!bigger)
			return -ENOMEM;
		m->msgs = bigger;
		m->cap = cap;
	}
	m->msgs[m->n].uid = msg->uid;
	m->msgs[m->n].size = msg->size;
	m->msgs[m->n].internaldate = msg->internaldate;
	m->msgs[m->n].bytes_before = m->bytes;
	m->bytes = sat_add_u64(m->bytes, msg->size);
	m->n++;
	return 0;
}

/* Read the listing from the cache and publish it in dir->msgs, telling the
 * kernel to forget messages that went away. */
static int sync_publish(struct fs *fs, struct fs_dir *dir, int64_t mailbox_id, bool from_sync)
{
	struct cache_mailbox mb;
	struct mirror m = { 0 };
	struct fs_msg *old;
	size_t nold, i = 0, j = 0;
	unsigned gen;
	bool changed;
	int r;

	for (int attempt = 0;; attempt++) {
		pthread_mutex_lock(&dir->lock);
		gen = dir->local_gen;
		pthread_mutex_unlock(&dir->lock);
		r = cache_mailbox_get(fs->cache, mailbox_id, &mb);
		if (r)
			return r;
		memset(&m, 0, sizeof(m));
		r = cache_message_list(fs->cache, mailbox_id, sync_mirror_cb, &m);
		if (r) {
			free(m.msgs);
			return r;
		}
		pthread_mutex_lock(&dir->lock);
		/* a message appended or removed here meanwhile (cache first,
		 * then dir->msgs) may be missing from what was read: read again
		 * rather than publish a listing without it */
		if (dir->local_gen == gen || attempt == 3)
			break;
		pthread_mutex_unlock(&dir->lock);
		free(m.msgs);
	}
	if (!from_sync && dir->loaded) { /* a sync published meanwhile */
		pthread_mutex_unlock(&dir->lock);
		free(m.msgs);
		return 0;
	}
	old = dir->msgs;
	nold = dir->nmsgs;
	changed = nold != m.n || (dir->loaded && dir->uidvalidity != mb.uidvalidity);
	if (dir->loaded && dir->uidvalidity != mb.uidvalidity) {
		for (i = 0; i < nold; i++) {
			char name[NAMES_MESSAGE_MAX];

			names_message_format(old[i].uid, name, sizeof(name));
			notify_inval_entry(fs->notify, dir->ino, name);
			notify_inval_inode(fs->notify, FS_MSG_INO(dir->ino, old[i].uid));
		}
	} else {
		/* both ascending: what old has and the new listing lacks */
		while (i < nold) {
			if (j < m.n && m.msgs[j].uid < old[i].uid) {
				j++;
				changed = true;
			} else if (j < m.n && m.msgs[j].uid == old[i].uid) {
				i++;
				j++;
			} else {
				char name[NAMES_MESSAGE_MAX];

				names_message_format(old[i].uid, name, sizeof(name));
				notify_inval_entry(fs->notify, dir->ino, name);
				changed = true;
				i++;
			}
		}
	}
	dir->msgs = m.msgs;
	dir->nmsgs = m.n;
	dir->uidvalidity = mb.uidvalidity;
	if (from_sync || !dir->loaded)
		dir->synced_at_ms = mb.synced_at * 1000;
	if (from_sync)
		dir->synced_at_ms = fs_now_ms();
	if (changed && dir->loaded) {
		__atomic_store_n(&dir->mtime, time(NULL), __ATOMIC_RELAXED);
		/* listing indexes moved: start the scan detection afresh */
		dir->have_last = false;
		dir->seq_run = 0;
		dir->frontier = 0;
		dir->window = 0;
	}
	dir->loaded = true;
	pthread_mutex_unlock(&dir->lock);
	free(old);
	return 0;
}

#define STREAM_BATCH 256 /* messages handed to a streaming listing at once */

struct meta_ctx {
	struct cache_batch *batch;
	uint32_t known_max;   /* UIDs above are new: stored whole */
	uint32_t min_uid;     /* ignore answers below ("n:*" may return the last) */
	uint32_t *uids;       /* every UID seen, when collecting */
	size_t n, cap;
	bool collect;
	int error;
	/* a first listing: new messages also go to dir->stream, in batches */
	struct fs_dir *stream_dir;
	struct fs_msg pending[STREAM_BATCH];
	size_t npending;
};

/* Tests only: IMAPFS_TEST_LISTING_DELAY_MS slows a streaming listing down
 * after each batch, so a test can list a directory while it arrives. */
static unsigned sync_test_listing_delay_ms(void)
{
	static int delay = -1;
	int d = __atomic_load_n(&delay, __ATOMIC_RELAXED);

	if (d < 0) {
		const char *v = getenv("IMAPFS_TEST_LISTING_DELAY_MS");

		d = v ? atoi(v) : 0;
		if (d < 0 || d > 10000)
			d = 0;
		__atomic_store_n(&delay, d, __ATOMIC_RELAXED);
	}
	return (unsigned)d;
}

/* Hand the pending messages to the streaming listing (readers wake up). */
static void sync_stream_flush(struct meta_ctx *ctx)
{
	struct fs_dir *dir = ctx->stream_dir;
	struct fs_stream *st;
	unsigned delay = sync_test_listing_delay_ms();

	if (!dir || ctx->npending == 0)
		return;
	pthread_mutex_lock(&dir->lock);
	st = dir->stream;
	if (st && st->n + ctx->npending > st->cap) {
		size_t cap = st->cap ? st->cap : 4096;
		struct fs_msg *bigger;

		while (cap < st->n + ctx->npending)
			cap *= 2;
		bigger = realloc(st->msgs, cap * sizeof(*bigger));
		if (bigger) {
			st->msgs = bigger;
			st->cap = cap;
		} else {
			/* out of memory: the stream ends with ENOMEM for its
			 * readers; later opens wait for the stored listing */
			st->done = true;
			st->error = -ENOMEM;
			dir->stream = NULL;
			sync_stream_unref_locked(st);
			ctx->stream_dir = NULL;
			st = NULL;
		}
	}
	if (st) {
		memcpy(st->msgs + st->n, ctx->pending, ctx->npending * sizeof(*st->msgs));
		st->n += ctx->npending;
		pthread_cond_broadcast(&dir->cond);
	}
	pthread_mutex_unlock(&dir->lock);
	ctx->npending = 0;
	if (delay)
		usleep(delay * 1000);
}

/* The streaming listing of dir ends: readers see its result; dir lets go
 * of it. */
static void sync_stream_end(struct fs_dir *dir, int result)
{
	if (!dir)
		return;
	pthread_mutex_lock(&dir->lock);
	if (dir->stream) {
		dir->stream->done = true;
		dir->stream->error = result;
		sync_stream_unref_locked(dir->stream);
		dir->stream = NULL;
		pthread_cond_broadcast(&dir->cond);
	}
	pthread_mutex_unlock(&dir->lock);
}

/* flags without \Recent: it belongs to one session, not to the message */
static void sync_flags_without_recent(const char *in, char *out)
{
	size_t used = 0;

	while (*in) {
		size_t len;

		while (*in == ' ')
			in++;
		len = strcspn(in, " ");
		if (len && !(len == 7 && strncasecmp(in, "\\Recent", 7) == 0)) {
			if (used)
				out[used++] = ' ';
			memcpy(out + used, in, len);
			used += len;
		}
		in += len;
	}
	out[used] = '\0';
}

static int sync_meta_cb(void *arg, const struct imap_msg_meta *meta)
{
	struct meta_ctx *ctx = arg;
	const char *given = (meta->have & IMAP_META_FLAGS) && meta->flags ? meta->flags : "";
	char *flags = malloc(strlen(given) + 1);
	int r;

	if (!flags) {
		ctx->error = -ENOMEM;
		return 1;
	}
	sync_flags_without_recent(given, flags);

	if (meta->uid < ctx->min_uid || meta->uid == 0) {
		free(flags);
		return 0;
	}
	if (ctx->collect) {
		if (ctx->n == ctx->cap) {
			size_t cap = ctx->cap ? ctx->cap * 2 : 1024;
			uint32_t *bigger = realloc(ctx->uids, cap * sizeof(*bigger));

			if (!bigger) {
				free(flags);
				ctx->error = -ENOMEM;
				return 1;
			}
			ctx->uids = bigger;
			ctx->cap = cap;
		}
		ctx->uids[ctx->n++] = meta->uid;
	}
	/* a whole record is stored whole, even below the highest UID cached:
	 * messages copied in through the mount can be cached above one that
	 * came from elsewhere in between and is not cached yet */
	if (meta->uid > ctx->known_max ||
	    ((meta->have & IMAP_META_SIZE) && (meta->have & IMAP_META_INTERNALDATE))) {
		struct cache_message msg = {
			.uid = meta->uid,
			.size = meta->size,
			.internaldate = meta->internaldate,
			.modseq = meta->modseq,
			.flags = flags,
		};

		r = cache_batch_put(ctx->batch, &msg);
		if (r == 0 && ctx->stream_dir) {
			struct fs_msg *m = &ctx->pending[ctx->npending++];

			memset(m, 0, sizeof(*m));
			m->uid = meta->uid;
			m->size = meta->size;
			m->internaldate = meta->internaldate;
			if (ctx->npending == STREAM_BATCH)
				sync_stream_flush(ctx);
		}
	} else if (meta->have & IMAP_META_FLAGS) {
		r = cache_batch_set_flags(ctx->batch, meta->uid, flags, meta->modseq);
	} else {
		r = 0;
	}
	free(flags);
	if (r) {
		ctx->error = r;
		return 1;
	}
	return 0;
}

static int sync_vanished_cb(void *arg, uint32_t lo, uint32_t hi)
{
	struct meta_ctx *ctx = arg;
	int r = cache_batch_expunge(ctx->batch, lo, hi);

	if (r) {
		ctx->error = r;
		return 1;
	}
	return 0;
}

static int sync_cmp_uid(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int sync_fetch_meta(struct pool_conn *conn, const char *set, unsigned items,
			   uint64_t changedsince, struct meta_ctx *ctx)
{
	if (imap_uid_fetch_meta(conn->session, set, items, changedsince, sync_meta_cb,
				sync_vanished_cb, ctx, &conn->err) != 0) {
		if (ctx->error)
			return ctx->error;
		log_warnx("UID FETCH %s: %s", set, conn->err.reason);
		return fs_errno_from_imap(&conn->err);
	}
	return ctx->error;
}

/* Store what a listing job collected (r: how the fetch went). retain: keep
 * only the UIDs seen, below uidnext (EXAMINE's UIDNEXT: messages copied in
 * through the mount meanwhile stay). Frees ctx->uids. */
static int sync_batch_finish(struct meta_ctx *ctx, int r, bool retain, uint32_t uidnext)
{
	if (r == 0 && retain) {
		if (ctx->n)
			qsort(ctx->uids, ctx->n, sizeof(*ctx->uids), sync_cmp_uid);
		r = cache_batch_retain_below(ctx->batch, ctx->uids, ctx->n, uidnext);
	}
	if (r == 0)
		r = cache_batch_commit(ctx->batch);
	else
		cache_batch_abort(ctx->batch);
	free(ctx->uids);
	ctx->uids = NULL;
	return r;
}

/* Messages at or above uidnext (as EXAMINE reported it before the FETCH)
 * came after the answer was made: files copied in through the mount
 * meanwhile. The answer cannot speak for them (retains keep them). */
static size_t sync_count_newer_locked(const struct fs_dir *dir, uint32_t uidnext)
{
	size_t n = 0;

	if (uidnext == 0)
		return 0;
	for (size_t i = dir->nmsgs; i > 0 && dir->msgs[i - 1].uid >= uidnext; i--)
		n++;
	return n;
}

/* Everything afresh: UID FETCH 1:* and keep only what the server has.
 * was_empty: the cache holds no message of the mailbox (first listing, or
 * a new UIDVALIDITY dropped them): nothing to drop afterwards, and
 * readers of a directory showing no messages yet may list the answer
 * while it arrives. */
static int sync_listing_full(struct fs *fs, struct pool_conn *conn, struct fs_dir *dir,
			     int64_t id, unsigned items, const struct imap_select_info *info,
			     bool was_empty)
{
	bool may_stream = was_empty;
	struct fs_dir *stream_dir = may_stream ? dir : NULL;
	struct meta_ctx ctx = { .collect = true };
	int r;

	r = cache_batch_begin(fs->cache, id, &ctx.batch);
	if (r)
		return r;
	if (stream_dir && info->exists > 0) {
		pthread_mutex_lock(&stream_dir->lock);
		if (!stream_dir->stream && stream_dir->nmsgs == 0) {
			struct fs_stream *st = calloc(1, sizeof(*st));

			if (st) {
				st->refs = 1;
				stream_dir->stream = st;
				stream_dir->streamed = true; /* until the job is done */
				ctx.stream_dir = stream_dir;
				pthread_cond_broadcast(&stream_dir->cond);
			}
		}
		pthread_mutex_unlock(&stream_dir->lock);
	}
	if (info->exists > 0)
		r = sync_fetch_meta(conn, "1:*", items, 0, &ctx);
	/* the listing is the server's answer: readers have it all now, before
	 * it is stored (later opens wait for the stored one) */
	if (r == 0)
		sync_stream_flush(&ctx);
	sync_stream_end(ctx.stream_dir, r);
	if (ctx.stream_dir && sync_test_listing_delay_ms())
		usleep(sync_test_listing_delay_ms() * 10000); /* readers meet the unpublished listing */
	/* a mailbox with nothing cached before has nothing to drop: spare the
	 * walk over every UID just stored (100,000 rows for Big) */
	return sync_batch_finish(&ctx, r, !was_empty, info->uidnext);
}

/* Changes since the last sync. *check_out: verify the count afterwards. */
static int sync_listing_incremental(struct fs *fs, struct pool_conn *conn, int64_t id,
				    unsigned items, const struct imap_select_info *info,
				    const struct cache_mailbox *cached, uint32_t max_uid)
{
	struct meta_ctx ctx = { .known_max = max_uid };
	bool condstore = info->highestmodseq > 0 && cached->highestmodseq > 0;
	char set[32];
	int r;

	r = cache_batch_begin(fs->cache, id, &ctx.batch);
	if (r)
		return r;
	if (condstore) {
		/* CONDSTORE: changed and new messages; QRESYNC adds VANISHED */
		r = sync_fetch_meta(conn, "1:*", items, cached->highestmodseq, &ctx);
	} else {
		ctx.collect = true;
		if (info->uidnext == 0 || info->uidnext > max_uid + 1) {
			snprintf(set, sizeof(set), "%u:*", max_uid + 1);
			ctx.min_uid = max_uid + 1;
			r = sync_fetch_meta(conn, set, items, 0, &ctx);
			ctx.min_uid = 0;
		}
		if (r == 0 && max_uid > 0) {
			snprintf(set, sizeof(set), "1:%u", max_uid);
			r = sync_fetch_meta(conn, set, IMAP_META_FLAGS, 0, &ctx);
		}
	}
	/* without CONDSTORE, what the server did not list is gone */
	return sync_batch_finish(&ctx, r, !condstore, info->uidnext);
}

static int sync_listing_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct fs_dir *dir = arg;
	struct imap_select_info info;
	struct cache_mailbox cached;
	uint64_t count = 0;
	uint32_t max_uid = 0, uidvalidity_cached, uidnext;
	unsigned items = IMAP_META_FLAGS | IMAP_META_SIZE | IMAP_META_INTERNALDATE;
	char *server_name = NULL;
	int64_t id, t0 = fs_now_ms(), t1 = 0, t2 = 0;
	bool unchanged = false;
	size_t newer = 0;
	int r;

	sync_dir_mailbox(fs, dir, &id, &server_name);
	if (!id || !server_name) {
		r = -ENOENT;
		goto out;
	}
	r = cache_mailbox_get(fs->cache, id, &cached);
	if (r == 0)
		r = cache_message_count(fs->cache, id, &count, &max_uid);
	if (r)
		goto out;
	uidvalidity_cached = cached.uidvalidity; /* strings in cached die at the next cache call */
	r = pool_conn_examine(fs, conn, server_name, true, &info);
	if (r)
		goto out;
	if (info.highestmodseq > 0)
		items |= IMAP_META_MODSEQ;
	if (uidvalidity_cached != info.uidvalidity) {
		if (uidvalidity_cached)
			log_info("%s: UIDVALIDITY changed, dropping its cache", server_name);
		pthread_mutex_lock(&dir->lock);
		dir->appended_uidvalidity = 0; /* an APPEND reads the cache again */
		pthread_mutex_unlock(&dir->lock);
		/* a new UIDVALIDITY drops the old messages; state follows the batch */
		r = cache_mailbox_set_state(fs->cache, id, info.uidvalidity, 0, 0, 0);
		if (r)
			goto out;
		r = sync_listing_full(fs, conn, dir, id, items, &info, true);
	} else if (info.highestmodseq > 0 && cached.highestmodseq == info.highestmodseq &&
		   info.uidnext != 0 && cached.uidnext == info.uidnext && count == info.exists) {
		r = 0; /* nothing changed */
		unchanged = true;
	} else if (count == 0) {
		r = sync_listing_full(fs, conn, dir, id, items, &info, true);
	} else {
		r = sync_listing_incremental(fs, conn, id, items, &info, &cached, max_uid);
		if (r == 0)
			r = cache_message_count(fs->cache, id, &count, &max_uid);
		if (r == 0) {
			/* files copied in since EXAMINE are in the cache, not in
			 * its count of messages */
			pthread_mutex_lock(&dir->lock);
			newer = sync_count_newer_locked(dir, info.uidnext);
			pthread_mutex_unlock(&dir->lock);
		}
		if (r == 0 && count != (uint64_t)info.exists + newer) {
			log_debug("%s: %llu cached, server has %u: full listing", server_name,
				  (unsigned long long)count, info.exists);
			r = sync_listing_full(fs, conn, dir, id, items, &info, false);
		}
	}
	if (r)
		goto out;
	t1 = fs_now_ms();
	r = cache_message_count(fs->cache, id, &count, &max_uid);
	if (r)
		goto out;
	uidnext = info.uidnext ? info.uidnext : max_uid + 1;
	r = cache_mailbox_set_state(fs->cache, id, info.uidvalidity, uidnext, info.highestmodseq,
				    (int64_t)time(NULL));
	if (r == 0 && unchanged) {
		/* the listing in hand is current: no need to read it all back
		 * (100,000 rows for a big mailbox) and sort it again */
		pthread_mutex_lock(&dir->lock);
		if (dir->loaded && dir->uidvalidity == info.uidvalidity)
			dir->synced_at_ms = fs_now_ms();
		else
			unchanged = false;
		pthread_mutex_unlock(&dir->lock);
	}
	if (r == 0 && !unchanged)
		r = sync_publish(fs, dir, id, true);
	t2 = fs_now_ms();
	log_debug("%s: listing of %llu messages: server and cache %lld ms, publishing %lld ms",
		  server_name, (unsigned long long)count, (long long)(t1 - t0), (long long)(t2 - t1));
out:
	if (r)
		log_warnx("sync of %s: %s", server_name ? server_name : dir->name, strerror(-r));
	free(server_name);
	return r;
}

static void sync_prefetch_first(struct fs *fs, struct fs_dir *dir, int64_t id);

static void sync_listing_done(struct fs *fs, void *arg, int result)
{
	struct fs_dir *dir = arg;
	bool first, again;

	pthread_mutex_lock(&dir->lock);
	/* the mailbox changed through the mount while this listing ran (a
	 * message moved into the trash, one removed): its answer may be from
	 * before. Stale, then; and when someone waits for it (not a
	 * background refresh), once more, at most once, so they wake on an
	 * answer from after the change. An rm -rf during a refresh does not
	 * make the listing run again and again. */
	again = dir->resync && result == 0 && !dir->resync_run && !dir->sync_background;
	if (dir->resync && dir->synced_at_ms)
		dir->synced_at_ms = 1;
	dir->resync = false;
	dir->resync_run = again;
	if (again) {
		dir->streamed = false;
		pthread_mutex_unlock(&dir->lock);
		if (pool_submit(fs->pool, true, sync_listing_job, sync_listing_done, dir) == 0)
			return;
		pthread_mutex_lock(&dir->lock);
		dir->resync_run = false;
	}
	dir->streamed = false;
	dir->syncing = false;
	dir->sync_background = false;
	dir->sync_error = result;
	dir->sync_gen++;
	first = dir->prefetch_first && result == 0;
	dir->prefetch_first = false;
	pthread_cond_broadcast(&dir->cond);
	pthread_mutex_unlock(&dir->lock);
	if (first) {
		int64_t id;

		sync_dir_mailbox(fs, dir, &id, NULL);
		if (id)
			sync_prefetch_first(fs, dir, id);
	}
}

void sync_stream_unref_locked(struct fs_stream *s)
{
	if (!s || --s->refs > 0)
		return;
	free(s->msgs);
	free(s);
}

void sync_wait_streamed(struct fs *fs, struct fs_dir *dir)
{
	struct timespec deadline;
	unsigned gen;

	pthread_mutex_lock(&dir->lock);
	if (dir->streamed) {
		gen = dir->sync_gen;
		fs_deadline(&deadline, fs->timeout_ms);
		while (dir->streamed && dir->sync_gen == gen)
			if (pthread_cond_timedwait(&dir->cond, &dir->lock, &deadline) == ETIMEDOUT)
				break;
	}
	pthread_mutex_unlock(&dir->lock);
}

int sync_dir_fresh(struct fs *fs, struct fs_dir *dir, int64_t max_age_ms)
{
	return sync_dir_fresh_or_stream(fs, dir, max_age_ms, 0, NULL);
}

int sync_dir_fresh_or_stream(struct fs *fs, struct fs_dir *dir, int64_t max_age_ms,
			     int64_t stale_ok_ms, struct fs_stream **stream_out)
{
	struct timespec deadline;
	unsigned gen;
	int64_t id;
	bool have;
	int r = 0;

	if (stream_out)
		*stream_out = NULL;
	sync_dir_mailbox(fs, dir, &id, NULL);
	if (!id)
		return 0; /* not a mailbox: nothing to list */
	pthread_mutex_lock(&dir->lock);
	if (!dir->loaded) {
		pthread_mutex_unlock(&dir->lock);
		r = sync_publish(fs, dir, id, false);
		if (r)
			log_warnx("cache: listing of %s: %s", dir->name, strerror(-r));
		pthread_mutex_lock(&dir->lock);
		r = 0;
	}
	if (dir->synced_at_ms && fs_now_ms() - dir->synced_at_ms <= max_age_ms)
		goto out;
	if (dir->loaded && dir->synced_at_ms && fs_now_ms() - dir->synced_at_ms <= stale_ok_ms) {
		/* serve the listing in hand; check it in the background */
		if (!dir->syncing &&
		    pool_submit(fs->pool, false, sync_listing_job, sync_listing_done, dir) == 0) {
			dir->syncing = true;
			dir->sync_background = true;
		}
		goto out;
	}
	if (!dir->syncing) {
		r = pool_submit(fs->pool, true, sync_listing_job, sync_listing_done, dir);
		if (r)
			goto out;
		dir->syncing = true;
	} else if (dir->sync_background) {
		/* queued behind prefetching: someone waits for it now */
		pool_promote(fs->pool, sync_listing_job, dir);
		dir->sync_background = false;
	}
	fs_deadline(&deadline, fs->timeout_ms);
	gen = dir->sync_gen;
	while (dir->sync_gen == gen) {
		if (stream_out && dir->stream && !dir->stream->done) {
			dir->stream->refs++;
			*stream_out = dir->stream;
			goto out;
		}
		if (pthread_cond_timedwait(&dir->cond, &dir->lock, &deadline) == ETIMEDOUT) {
			r = -ETIMEDOUT;
			break;
		}
	}
	if (r == 0)
		r = dir->sync_error;
out:
	have = dir->loaded && dir->synced_at_ms != 0;
	pthread_mutex_unlock(&dir->lock);
	if (r && have) {
		log_warnx("%s: %s; showing the cached listing", dir->name, strerror(-r));
		r = 0;
	}
	return r;
}

#define PREFETCH_LISTINGS_MAX 64

void sync_prefetch_listings(struct fs *fs)
{
	struct fs_dir *dirs[PREFETCH_LISTINGS_MAX];
	size_t n = 0;

	pthread_rwlock_rdlock(&fs->tree_lock);
	for (size_t i = 1; i < fs->ndirs && n < PREFETCH_LISTINGS_MAX; i++)
		if (fs->dirs[i]->visible && fs->dirs[i]->selectable)
			dirs[n++] = fs->dirs[i];
	pthread_rwlock_unlock(&fs->tree_lock);
	for (size_t i = 0; i < n; i++) {
		struct fs_dir *dir = dirs[i];

		pthread_mutex_lock(&dir->lock);
		if (!dir->syncing &&
		    pool_submit(fs->pool, false, sync_listing_job, sync_listing_done, dir) == 0) {
			dir->syncing = true;
			dir->sync_background = true;
		}
		pthread_mutex_unlock(&dir->lock);
	}
}

/* --- bodies --- */

static void sync_fetch_unref_locked(struct fs_fetch *f)
{
	if (--f->refs > 0)
		return;
	free(f->server_name);
	free(f->uids);
	free(f->done);
	for (size_t k = 0; k < f->nheld; k++)
		free(f->held[k].data);
	free(f->held);
	free(f->mem);
	free(f);
}

static ssize_t sync_fetch_index(const struct fs_fetch *f, uint32_t uid)
{
	size_t lo = 0, hi = f->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (f->uids[mid] == uid)
			return (ssize_t)mid;
		if (f->uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* the unfinished fetch that will bring uid, if any (dir->lock held) */
static struct fs_fetch *sync_fetch_find_locked(struct fs_dir *dir, uint32_t uid, size_t *index_out)
{
	for (struct fs_fetch *f = dir->fetches; f; f = f->next) {
		ssize_t i;

		if (f->finished)
			continue;
		i = sync_fetch_index(f, uid);
		if (i >= 0 && !f->done[i]) {
			*index_out = (size_t)i;
			return f;
		}
	}
	return NULL;
}

/* Take fs->body_write_lock for f, telling a group holding it to let go:
 * soon, or at once when a reader waits for f. */
static void sync_body_lock(struct fs_fetch *f)
{
	struct fs *fs = f->fs;
	uint64_t t0;

	if (pthread_mutex_trylock(&fs->body_write_lock) == 0)
		return;
	t0 = fs_mono_us();
	pthread_mutex_lock(&fs->body_write_lock);
	__atomic_add_fetch(&fs->stat_lock_waits, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&fs->stat_lock_wait_us, fs_mono_us() - t0, __ATOMIC_RELAXED);
}

/* Store the held bodies in one cache transaction, hand them to fs->recent
 * and mark them done. fs->body_write_lock is taken only for the cache
 * writes, never while the response is read from the network. */
static void sync_held_flush(struct fs_fetch *f)
{
	struct fs *fs = f->fs;
	bool group;
	int r;

	if (f->nheld == 0)
		return;
	sync_body_lock(f);
	group = cache_write_begin(fs->cache) == 0;
	for (size_t k = 0; k < f->nheld; k++) {
		struct held_body *h = &f->held[k];
		struct cache_body_writer *w = NULL;

		r = cache_body_begin(fs->cache, f->mailbox_id, h->uid, h->len, &w);
		if (r == 0 && (r = cache_body_write(w, h->data, h->len)) != 0)
			cache_body_abort(w);
		else if (r == 0)
			r = cache_body_commit(w);
		if (r)
			log_warnx("cache: body of %u: %s", h->uid, strerror(-r));
	}
	r = group ? cache_write_commit(fs->cache) : 0;
	pthread_mutex_unlock(&fs->body_write_lock);
	if (r)
		log_warnx("cache: %zu bodies of %s: %s", f->nheld, f->server_name, strerror(-r));
	for (size_t k = 0; k < f->nheld; k++) {
		struct held_body *h = &f->held[k];

		if (fs->recent)
			recent_put(fs->recent, f->mailbox_id, f->uidvalidity, h->uid, h->data, h->len);
		else
			free(h->data);
		h->data = NULL;
	}
	pthread_mutex_lock(&f->dir->lock);
	for (size_t k = 0; k < f->nheld; k++)
		f->done[f->held[k].idx] = true;
	pthread_cond_broadcast(&f->dir->cond);
	pthread_mutex_unlock(&f->dir->lock);
	f->nheld = 0;
	f->held_bytes = 0;
}

/* whether the held bodies should be stored now: a reader waits for this
 * fetch, or enough are held */
static bool sync_held_due(const struct fs_fetch *f)
{
	return f->nheld > 0 &&
	       (f->nheld >= GROUP_MAX_COUNT || f->held_bytes >= GROUP_MAX_BYTES ||
		__atomic_load_n(&f->waiting, __ATOMIC_SEQ_CST) > 0);
}

/* drop a large body being streamed into the cache */
static void sync_writer_abort(struct fs_fetch *f)
{
	if (!f->writer)
		return;
	sync_body_lock(f);
	cache_body_abort(f->writer);
	pthread_mutex_unlock(&f->fs->body_write_lock);
	f->writer = NULL;
}

static int sync_sink_begin(void *arg, uint32_t uid, uint64_t offset, uint64_t size)
{
	struct fs_fetch *f = arg;
	int r;

	sync_writer_abort(f);
	free(f->mem);
	f->mem = NULL;
	if (offset != 0 || sync_fetch_index(f, uid) < 0)
		return 0; /* not asked for: ignore */
	if (size <= GROUP_MAX_BODY) {
		/* held in memory until stored with others (sync_held_flush) */
		f->mem = malloc(size ? size : 1);
		f->mem_len = 0;
		f->mem_size = size;
		f->mem_uid = uid;
		if (!f->mem)
			log_warnx("body of %u: %s", uid, strerror(ENOMEM));
		return 0;
	}
	/* a large body streams into the cache: the held ones go first */
	sync_held_flush(f);
	sync_body_lock(f);
	r = cache_body_begin(f->fs->cache, f->mailbox_id, uid, size, &f->writer);
	pthread_mutex_unlock(&f->fs->body_write_lock);
	if (r) {
		log_warnx("cache: body of %u: %s", uid, strerror(-r));
		f->writer = NULL;
	}
	f->writer_uid = uid;
	return 0;
}

static int sync_sink_data(void *arg, uint32_t uid, const void *buf, size_t len)
{
	struct fs_fetch *f = arg;

	if (f->mem && uid == f->mem_uid) {
		if (len <= f->mem_size - f->mem_len) {
			memcpy(f->mem + f->mem_len, buf, len);
			f->mem_len += len;
		} else { /* more than announced: not kept */
			log_warnx("%s/%u.eml: more bytes than announced", f->server_name, uid);
			free(f->mem);
			f->mem = NULL;
		}
	}
	if (f->writer && uid == f->writer_uid) {
		int r;

		sync_body_lock(f);
		r = cache_body_write(f->writer, buf, len);
		if (r)
			cache_body_abort(f->writer);
		pthread_mutex_unlock(&f->fs->body_write_lock);
		if (r)
			f->writer = NULL;
	}
	return 0;
}

static int sync_sink_end(void *arg, uint32_t uid)
{
	struct fs_fetch *f = arg;
	ssize_t i = sync_fetch_index(f, uid);

	if (f->mem && uid == f->mem_uid && f->mem_len == f->mem_size && i >= 0) {
		if (f->nheld == f->held_cap) {
			size_t cap = f->held_cap ? f->held_cap * 2 : 16;
			struct held_body *bigger = realloc(f->held, cap * sizeof(*bigger));

			if (!bigger) {
				sync_held_flush(f);
				cap = f->held_cap;
			} else {
				f->held = bigger;
				f->held_cap = cap;
			}
		}
		if (f->nheld < f->held_cap) {
			f->held[f->nheld++] = (struct held_body){
				.idx = (size_t)i, .uid = uid, .data = f->mem, .len = f->mem_len
			};
			f->held_bytes += f->mem_len;
			f->mem = NULL;
			if (sync_held_due(f))
				sync_held_flush(f);
			return 0;
		}
	}
	free(f->mem);
	f->mem = NULL;
	if (f->writer && uid == f->writer_uid) {
		int r;

		sync_body_lock(f);
		r = cache_body_commit(f->writer);
		pthread_mutex_unlock(&f->fs->body_write_lock);
		f->writer = NULL;
		if (r)
			log_warnx("cache: body of %u: %s", uid, strerror(-r));
		else if (i >= 0) {
			pthread_mutex_lock(&f->dir->lock);
			f->done[i] = true;
			pthread_cond_broadcast(&f->dir->cond);
			pthread_mutex_unlock(&f->dir->lock);
		}
	}
	f->writer = NULL;
	return 0;
}

static const struct imap_body_sink sync_sink = {
	.begin = sync_sink_begin,
	.data = sync_sink_data,
	.end = sync_sink_end,
};

/* "1:3,7,9:12" for the UIDs not fetched yet; NULL when none or ENOMEM */
static char *sync_uid_set(struct fs_fetch *f)
{
	char *set = malloc(f->n * 22 + 1);
	size_t used = 0, i = 0;

	if (!set)
		return NULL;
	pthread_mutex_lock(&f->dir->lock);
	while (i < f->n) {
		size_t j = i;

		if (f->done[i]) {
			i++;
			continue;
		}
		while (j + 1 < f->n && !f->done[j + 1] && f->uids[j + 1] == f->uids[j] + 1)
			j++;
		if (used)
			set[used++] = ',';
		if (j > i)
			used += (size_t)sprintf(set + used, "%u:%u", f->uids[i], f->uids[j]);
		else
			used += (size_t)sprintf(set + used, "%u", f->uids[i]);
		i = j + 1;
	}
	pthread_mutex_unlock(&f->dir->lock);
	set[used] = '\0';
	if (!used) {
		free(set);
		return NULL;
	}
	return set;
}

static bool sync_conn_has_selected(const struct pool_conn *conn, const char *server_name)
{
	return conn->selected && strcmp(conn->selected, server_name) == 0;
}

static int sync_fetch_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct fs_fetch *f = arg;
	bool reused = sync_conn_has_selected(conn, f->server_name);
	char *set;
	int r = 0;

	for (int round = 0; round < 2; round++) {
		set = sync_uid_set(f); /* what has not come yet */
		if (!set)
			break;
		/* A mailbox selected since an earlier job does not show messages
		 * added meanwhile: when some did not come, select it afresh and
		 * ask once more. */
		if (round > 0 && !reused) {
			free(set);
			break;
		}
		/* a selection from before a new UIDVALIDITY is no use either */
		r = pool_conn_examine(fs, conn, f->server_name,
				      round > 0 || (reused && conn->selected_uidvalidity != f->uidvalidity),
				      NULL);
		if (r == 0 && conn->selected_uidvalidity != f->uidvalidity) {
			log_info("%s: UIDVALIDITY changed", f->server_name);
			r = -ESTALE;
		}
		if (r == 0)
			log_debug("%s: UID FETCH of %zu bodies, a UID set of %zu bytes", f->server_name,
				  f->n, strlen(set));
		if (r == 0 &&
		    imap_uid_fetch_bodies(conn->session, set, 0, 0, &sync_sink, f, &conn->err) != 0) {
			log_warnx("UID FETCH %s BODY.PEEK[]: %s", f->server_name, conn->err.reason);
			r = fs_errno_from_imap(&conn->err);
		}
		sync_writer_abort(f);
		free(f->mem);
		f->mem = NULL;
		sync_held_flush(f);
		free(set);
		if (r)
			break;
	}
	log_debug("%s: fetch of %zu bodies over", f->server_name, f->n);
	return r;
}

static void sync_fetch_done(struct fs *fs, void *arg, int result)
{
	struct fs_fetch *f = arg;
	struct fs_dir *dir = f->dir;
	bool missing = false;

	(void)fs;
	pthread_mutex_lock(&dir->lock);
	f->finished = true;
	f->error = result;
	for (size_t i = 0; i < f->n; i++)
		missing |= !f->done[i];
	/* an unknown UID or a new UIDVALIDITY: the listing is out of date */
	if (result == -ESTALE || (result == 0 && missing))
		dir->synced_at_ms = 0;
	for (struct fs_fetch **pp = &dir->fetches; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	}
	pthread_cond_broadcast(&dir->cond);
	sync_fetch_unref_locked(f);
	pthread_mutex_unlock(&dir->lock);
}

/* Start fetching uids (ascending, n > 0) of dir (dir->lock held). On
 * success the fetch is in dir->fetches and holds one reference (the job). */
static struct fs_fetch *sync_fetch_start_locked(struct fs *fs, struct fs_dir *dir, uint32_t *uids,
						size_t n, bool urgent)
{
	struct fs_fetch *f = calloc(1, sizeof(*f));

	if (!f)
		goto out_free;
	f->done = calloc(n, sizeof(*f->done));
	sync_dir_mailbox(fs, dir, &f->mailbox_id, &f->server_name);
	if (!f->done || !f->server_name)
		goto out_free;
	f->fs = fs;
	f->dir = dir;
	f->refs = 1;
	f->uids = uids;
	f->n = n;
	f->uidvalidity = dir->uidvalidity;
	if (pool_submit_for(fs->pool, urgent, f->server_name, sync_fetch_job, sync_fetch_done, f) !=
	    0) {
		f->uids = NULL;
		goto out_free;
	}
	f->next = dir->fetches;
	dir->fetches = f;
	return f;

out_free:
	if (f) {
		free(f->done);
		free(f->server_name);
		free(f);
	}
	free(uids);
	return NULL;
}

static size_t sync_digits(uint32_t v)
{
	size_t d = 1;

	while (v >= 10) {
		v /= 10;
		d++;
	}
	return d;
}

/*
 * Start fetching uids (ascending, n > 0; the array is the callee's) as
 * one UID FETCH or, when its UID set would be longer than FETCH_SET_MAX
 * bytes (a servers' line limit can be 8 KiB), as several. Only the one
 * holding want (0: none) is urgent. Returns that one (or the first when
 * want is 0); NULL if it could not start. dir->lock held.
 */
static struct fs_fetch *sync_fetch_start_split_locked(struct fs *fs, struct fs_dir *dir,
						      uint32_t *uids, size_t n, bool urgent,
						      uint32_t want)
{
	struct fs_fetch *ret = NULL;
	size_t start = 0;

	while (start < n) {
		size_t end = start, len = 0;
		bool holds;
		uint32_t *part;
		struct fs_fetch *f;

		while (end < n) {
			size_t r = end, add;

			while (r + 1 < n && uids[r + 1] == uids[r] + 1)
				r++;
			add = sync_digits(uids[end]) + (r > end ? 1 + sync_digits(uids[r]) : 0) + 1;
			if (end > start && len + add > FETCH_SET_MAX)
				break;
			len += add;
			end = r + 1;
		}
		holds = want ? want >= uids[start] && want <= uids[end - 1] : start == 0;
		if (start == 0 && end == n) {
			part = uids; /* all of it: handed over as it is */
			uids = NULL;
		} else {
			part = malloc((end - start) * sizeof(*part));
			if (part)
				memcpy(part, uids + start, (end - start) * sizeof(*part));
		}
		f = part ? sync_fetch_start_locked(fs, dir, part, end - start, urgent && holds)
			 : NULL;
		if (holds)
			ret = f;
		start = end;
	}
	free(uids);
	return ret;
}

/* Scan positions (name order current): a listing index's position in
 * file-name order or in UID order (the listing index itself), the message
 * at a position of the current scan order, and the bytes before it. */
static size_t sync_scan_pos_locked(const struct fs_dir *dir, bool by_uid, size_t idx)
{
	return by_uid ? idx : dir->name_pos[idx];
}

static const struct fs_msg *sync_scan_msg_locked(const struct fs_dir *dir, bool by_uid, size_t pos)
{
	return &dir->msgs[by_uid ? pos : dir->name_order[pos]];
}

static uint64_t sync_scan_bytes_locked(const struct fs_dir *dir, size_t pos)
{
	return dir->scan_by_uid ? dir->msgs[pos].bytes_before : dir->name_bytes[pos];
}

/* drop repeats from a sorted array; returns the new count */
static size_t sync_uniq(uint32_t *v, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (k == 0 || v[k - 1] != v[i])
			v[k++] = v[i];
	return k;
}

static int sync_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Drop from uids[0..n) (any order) the UIDs whose bodies the cache holds;
 * returns how many are left. UIDs close together (a scan in UID order, or
 * by name through a run of same-length names) take one range query, not
 * one query each: that was 5% of the daemon's CPU in a cold grep -r. */
static size_t sync_drop_held(struct fs *fs, int64_t mailbox_id, uint32_t *uids, size_t n)
{
	uint32_t lo = UINT32_MAX, hi = 0, *held = NULL;
	size_t nheld = 0, k = 0;

	for (size_t i = 0; i < n; i++) {
		lo = uids[i] < lo ? uids[i] : lo;
		hi = uids[i] > hi ? uids[i] : hi;
	}
	if (n > 0 && (uint64_t)hi - lo < 8 * (uint64_t)n &&
	    (held = malloc(((size_t)(hi - lo) + 1) * sizeof(*held))) &&
	    cache_bodies_held(fs->cache, mailbox_id, lo, hi, held, (size_t)(hi - lo) + 1,
			      &nheld) == 0) {
		for (size_t i = 0; i < n; i++)
			if (!bsearch(&uids[i], held, nheld, sizeof(*held), sync_cmp_u32))
				uids[k++] = uids[i];
		free(held);
		return k;
	}
	free(held);
	for (size_t i = 0; i < n; i++)
		if (!cache_body_has(fs->cache, mailbox_id, uids[i], NULL))
			uids[k++] = uids[i];
	return k;
}

/* Collect not-in-flight messages the cache does not hold, from position
 * *from on in UID order (by_uid) or name order, up to bytes (of
 * candidates, held or not); advances *from past what was looked at. */
static size_t sync_collect_locked(struct fs *fs, struct fs_dir *dir, int64_t mailbox_id,
				  bool by_uid, size_t *from, uint64_t bytes, uint32_t *uids,
				  size_t max)
{
	size_t n = 0, scanned = 0, i = *from, dummy;
	uint64_t got = 0;

	if (!sync_name_order_locked(dir, false))
		return 0;
	for (; i < dir->name_for_n && n < max && got < bytes && scanned < PREFETCH_SCAN_LIMIT;
	     i++) {
		const struct fs_msg *m = sync_scan_msg_locked(dir, by_uid, i);

		scanned++;
		if (sync_fetch_find_locked(dir, m->uid, &dummy))
			continue;
		uids[n++] = m->uid;
		got += m->size;
	}
	*from = i;
	return sync_drop_held(fs, mailbox_id, uids, n);
}

/* Note a read at the start of the file at listing index idx (name order
 * current): detect a scan in either order and keep the look-ahead ahead of
 * it (dir->lock held). */
static void sync_track_locked(struct fs_dir *dir, size_t idx)
{
	if (dir->have_last && idx == dir->last_index)
		return;
	if (dir->have_last && dir->last_index < dir->nmsgs) {
		/* the order being followed first, then the other one */
		for (int k = 0; k < 2; k++) {
			bool by_uid = k == 0 ? dir->scan_by_uid : !dir->scan_by_uid;
			size_t last = sync_scan_pos_locked(dir, by_uid, dir->last_index);
			size_t pos = sync_scan_pos_locked(dir, by_uid, idx);

			if (pos <= last || pos > last + 8)
				continue;
			if (k == 0) {
				dir->seq_run++;
			} else {
				dir->scan_by_uid = by_uid;
				dir->seq_run = 1;
				dir->window = 0;
				dir->frontier = pos + 1;
			}
			goto out;
		}
		dir->seq_run = 0;
		dir->window = 0;
		dir->frontier = sync_scan_pos_locked(dir, dir->scan_by_uid, idx) + 1;
	} else if (dir->name_pos[idx] == 0 || idx == 0) {
		/* the first file of a directory not read yet: grep -r, tar and
		 * rsync start there; a little look-ahead saves a round trip */
		dir->scan_by_uid = dir->name_pos[idx] != 0;
		dir->seq_run = 1;
		dir->window = 0;
		dir->frontier = 1;
		dir->next_started = false;
	} else {
		dir->seq_run = 0;
		dir->window = 0;
		dir->frontier = sync_scan_pos_locked(dir, dir->scan_by_uid, idx) + 1;
	}
out:
	dir->have_last = true;
	dir->last_index = idx;
}

/* Keep the look-ahead ahead of a read of listing index idx. True when a
 * scan of the directory has begun (two reads in order) and the next
 * directory's first files are due (sync_prefetch_next, without
 * dir->lock): a directory ahead, so that the server's slow first fetch
 * from a large mailbox is over before the scan gets there. */
static bool sync_prefetch_locked(struct fs *fs, struct fs_dir *dir, size_t idx, int64_t mailbox_id)
{
	uint64_t ahead = 0, end_idx;
	uint32_t *uids;
	size_t n, pos;
	bool next = false;

	if (dir->seq_run < 1 || !sync_name_order_locked(dir, false) || idx >= dir->name_for_n)
		return false;
	if (dir->seq_run >= 2 && !dir->next_started) {
		dir->next_started = true;
		next = true;
	}
	pos = sync_scan_pos_locked(dir, dir->scan_by_uid, idx);
	if (dir->frontier < pos + 1)
		dir->frontier = pos + 1;
	if (dir->frontier >= dir->name_for_n)
		return next;
	end_idx = sat_add_u64(sync_scan_bytes_locked(dir, pos), dir->msgs[idx].size);
	ahead = sync_scan_bytes_locked(dir, dir->frontier) - end_idx;
	if (dir->window == 0)
		dir->window = PREFETCH_START;
	if (ahead >= dir->window)
		return next;
	uids = malloc(PREFETCH_MAX_COUNT * sizeof(*uids));
	if (!uids)
		return next;
	n = sync_collect_locked(fs, dir, mailbox_id, dir->scan_by_uid, &dir->frontier, dir->window,
				uids, PREFETCH_MAX_COUNT);
	if (dir->window < PREFETCH_MAX)
		dir->window *= 2;
	if (n == 0) {
		free(uids);
		return next;
	}
	log_debug("%s: prefetching %zu messages ahead of #%zu (%s order)", dir->name, n, pos,
		  dir->scan_by_uid ? "UID" : "name");
	qsort(uids, n, sizeof(*uids), sync_cmp_uid);
	sync_fetch_start_split_locked(fs, dir, uids, n, false, 0);
	return next;
}

/* The mailbox whose files a walk of the tree in readdir order (grep -r,
 * find, tar: subdirectories are listed before files, so a directory's
 * files come after its subdirectories') reads after dir's: the deepest
 * first subdirectory of the next sibling, else the parent. NULL at the
 * end. fs->tree_lock held. */
static struct fs_dir *sync_walk_next_locked(struct fs_dir *dir)
{
	struct fs_dir *next = dir->next_sibling;

	while (next && !next->visible)
		next = next->next_sibling;
	if (!next)
		return dir->parent && dir->parent->parent ? dir->parent : NULL;
	for (;;) {
		struct fs_dir *c = next->first_child;

		while (c && !c->visible)
			c = c->next_sibling;
		if (!c)
			return next;
		next = c;
	}
}

/* Start fetching the first files of dir (mailbox id) in both orders, as
 * a first read would, before anyone reads it; when its listing is not
 * there yet, once it is (sync_listing_done). Large messages are left to
 * the read that wants them (their head comes first). */
static void sync_prefetch_first(struct fs *fs, struct fs_dir *dir, int64_t id)
{
	uint32_t *uids;
	size_t n = 0, k = 0;

	pthread_mutex_lock(&dir->lock);
	if (dir->have_last || dir->fetches) {
		dir->prefetch_first = false; /* being read already */
		pthread_mutex_unlock(&dir->lock);
		return;
	}
	if (!dir->loaded || dir->stream || dir->streamed || dir->syncing) {
		dir->prefetch_first = dir->syncing;
		pthread_mutex_unlock(&dir->lock);
		return;
	}
	dir->prefetch_first = false;
	if (dir->nmsgs == 0 || !sync_name_order_locked(dir, false) ||
	    !(uids = malloc(PREFETCH_MAX_COUNT * sizeof(*uids)))) {
		pthread_mutex_unlock(&dir->lock);
		return;
	}
	for (int by_uid = 0; by_uid < 2 && n < PREFETCH_MAX_COUNT; by_uid++) {
		size_t from = 0;

		n += sync_collect_locked(fs, dir, id, by_uid, &from, PREFETCH_START / 2, uids + n,
					 PREFETCH_MAX_COUNT - n);
	}
	qsort(uids, n, sizeof(*uids), sync_cmp_uid);
	n = sync_uniq(uids, n);
	for (size_t i = 0; i < n; i++) {
		ssize_t idx = sync_find_locked(dir, uids[i]);

		if (idx >= 0 && dir->msgs[idx].size <= LARGE_MESSAGE)
			uids[k++] = uids[i];
	}
	if (k == 0) {
		free(uids);
		pthread_mutex_unlock(&dir->lock);
		return;
	}
	log_debug("%s: prefetching its first %zu messages before a walk gets there", dir->name, k);
	sync_fetch_start_split_locked(fs, dir, uids, k, false, 0);
	pthread_mutex_unlock(&dir->lock);
}

/* A scan of dir has begun: fetch the first files of the mailbox a walk
 * of the tree reads next, so that grep -r finds them
 * cached and the connection that fetches them has that mailbox ready
 * (Dovecot's first fetch from a large Maildir is slow). */
static void sync_prefetch_next(struct fs *fs, struct fs_dir *dir)
{
	struct fs_dir *next = dir;
	int64_t id = 0;

	pthread_rwlock_rdlock(&fs->tree_lock);
	for (int hops = 0; hops < 16; hops++) {
		next = sync_walk_next_locked(next);
		if (!next || (next->selectable && next->mailbox_id))
			break;
	}
	if (next && next->selectable)
		id = next->mailbox_id;
	pthread_rwlock_unlock(&fs->tree_lock);
	if (next && id)
		sync_prefetch_first(fs, next, id);
}

/* Make sure uid is being fetched and wait for it. 0: it arrived (or was
 * there already). */
static int sync_fetch_wait(struct fs *fs, struct fs_dir *dir, int64_t mailbox_id, uint32_t uid)
{
	struct timespec deadline;
	struct fs_fetch *f;
	size_t fi = 0;
	uint64_t t0;
	ssize_t idx;
	int r = 0;

	pthread_mutex_lock(&dir->lock);
	idx = sync_find_locked(dir, uid);
	if (idx < 0) {
		r = -ENOENT;
		goto out_unlock;
	}
	if (dir->failed_uid == uid && fs_now_ms() - dir->failed_at_ms < 1000) {
		/* the kernel retries a failed read at once: do not wait out a
		 * second timeout for the same answer */
		r = dir->failed_error;
		goto out_unlock;
	}
	f = sync_fetch_find_locked(dir, uid, &fi);
	if (!f) {
		bool ordered = sync_name_order_locked(dir, false) && (size_t)idx < dir->name_for_n;
		uint32_t *uids;
		size_t n = 1, from = 0;

		if (cache_body_has(fs->cache, mailbox_id, uid, NULL))
			goto out_unlock; /* arrived meanwhile */
		if (ordered) {
			sync_track_locked(dir, (size_t)idx);
			from = sync_scan_pos_locked(dir, dir->scan_by_uid, (size_t)idx) + 1;
		}
		uids = malloc(PREFETCH_MAX_COUNT * sizeof(*uids));
		if (!uids) {
			r = -ENOMEM;
			goto out_unlock;
		}
		uids[0] = uid;
		if (ordered && dir->seq_run >= 1) {
			if (dir->window == 0)
				dir->window = PREFETCH_START;
			n += sync_collect_locked(fs, dir, mailbox_id, dir->scan_by_uid, &from,
						 dir->window, uids + 1, PREFETCH_MAX_COUNT - 1);
			if (from > dir->frontier)
				dir->frontier = from;
			if (idx == 0 && dir->name_pos[0] == 0 && n < PREFETCH_MAX_COUNT) {
				/* the first file in both orders: which one a scan
				 * follows shows only with the next read, so look
				 * ahead in the other order too (grep -r walks a large
				 * directory in UID order, ls and globs by name) */
				size_t other = 1;

				n += sync_collect_locked(fs, dir, mailbox_id, !dir->scan_by_uid,
							 &other, dir->window, uids + n,
							 PREFETCH_MAX_COUNT - n);
			}
		}
		qsort(uids, n, sizeof(*uids), sync_cmp_uid);
		n = sync_uniq(uids, n);
		f = sync_fetch_start_split_locked(fs, dir, uids, n, true, uid);
		if (!f) {
			r = -EIO;
			goto out_unlock;
		}
		fi = (size_t)sync_fetch_index(f, uid);
	}
	f->refs++;
	/* the fetch commits what it holds at once while someone waits */
	__atomic_add_fetch(&f->waiting, 1, __ATOMIC_SEQ_CST);
	t0 = fs_mono_us();
	fs_deadline(&deadline, fs->timeout_ms);
	while (!f->done[fi] && !f->finished && r == 0)
		if (pthread_cond_timedwait(&dir->cond, &dir->lock, &deadline) == ETIMEDOUT)
			r = -ETIMEDOUT;
	__atomic_sub_fetch(&f->waiting, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&fs->stat_read_waits, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&fs->stat_read_wait_us, fs_mono_us() - t0, __ATOMIC_RELAXED);
	if (r == 0 && !f->done[fi])
		r = f->error ? f->error : -ENOENT;
	if (r == -ETIMEDOUT) {
		dir->failed_uid = uid;
		dir->failed_error = r;
		dir->failed_at_ms = fs_now_ms();
	}
	sync_fetch_unref_locked(f);
out_unlock:
	pthread_mutex_unlock(&dir->lock);
	if (r == -ETIMEDOUT)
		log_warnx("%s/%u.eml: no answer from the server in time", dir->name, uid);
	return r;
}

/* --- the head of a large message --- */

static void sync_head_unref_locked(struct fs_head *h)
{
	if (!h || --h->refs > 0)
		return;
	free(h->server_name);
	free(h->data);
	free(h);
}

static int sync_head_sink_begin(void *arg, uint32_t uid, uint64_t offset, uint64_t size)
{
	(void)arg;
	(void)uid;
	(void)offset;
	(void)size;
	return 0;
}

static int sync_head_sink_data(void *arg, uint32_t uid, const void *buf, size_t len)
{
	struct fs_head *h = arg;

	if (uid != h->uid)
		return 0;
	if (len > LARGE_HEAD - h->len)
		len = LARGE_HEAD - h->len;
	memcpy(h->data + h->len, buf, len);
	h->len += len;
	return 0;
}

static int sync_head_sink_end(void *arg, uint32_t uid)
{
	(void)arg;
	(void)uid;
	return 0;
}

static const struct imap_body_sink sync_head_sink = {
	.begin = sync_head_sink_begin,
	.data = sync_head_sink_data,
	.end = sync_head_sink_end,
};

static int sync_head_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct fs_head *h = arg;
	bool reused = sync_conn_has_selected(conn, h->server_name);
	char set[16];
	int r;

	snprintf(set, sizeof(set), "%u", h->uid);
	for (int round = 0; round < 2; round++) {
		/* see sync_fetch_job: a reused selection may not know the message */
		r = pool_conn_examine(fs, conn, h->server_name,
				      round > 0 || (reused && conn->selected_uidvalidity != h->uidvalidity),
				      NULL);
		if (r)
			return r;
		if (conn->selected_uidvalidity != h->uidvalidity)
			return -ESTALE;
		h->len = 0; /* a retry starts over */
		if (imap_uid_fetch_bodies(conn->session, set, 0, LARGE_HEAD, &sync_head_sink, h,
					  &conn->err) != 0) {
			log_warnx("UID FETCH %s BODY.PEEK[]<0.%d>: %s", h->server_name, LARGE_HEAD,
				  conn->err.reason);
			return fs_errno_from_imap(&conn->err);
		}
		if (h->len || !reused)
			break;
	}
	return h->len ? 0 : -ENOENT;
}

static void sync_head_done(struct fs *fs, void *arg, int result)
{
	struct fs_head *h = arg;
	struct fs_dir *dir = h->dir;

	(void)fs;
	pthread_mutex_lock(&dir->lock);
	h->busy = false;
	h->error = result;
	if (result == -ESTALE || result == -ENOENT)
		dir->synced_at_ms = 0;
	pthread_cond_broadcast(&dir->cond);
	sync_head_unref_locked(h);
	pthread_mutex_unlock(&dir->lock);
}

/* Serve a read of a large message from its head. -EAGAIN: not from the
 * head (past it, or the whole body is coming anyway): fetch the body. */
static int sync_head_read(struct fs *fs, struct fs_dir *dir, int64_t mailbox_id, uint32_t uid,
			  uint64_t offset, char *buf, size_t size, size_t *read_out)
{
	struct timespec deadline;
	struct fs_head *h;
	size_t dummy;
	int r = 0;

	if (offset + size > LARGE_HEAD)
		return -EAGAIN;
	pthread_mutex_lock(&dir->lock);
	h = dir->head;
	if (!h || h->uid != uid || h->uidvalidity != dir->uidvalidity || (!h->busy && h->error)) {
		if (sync_fetch_find_locked(dir, uid, &dummy)) {
			r = -EAGAIN; /* the whole body is on its way */
			goto out_unlock;
		}
		h = calloc(1, sizeof(*h));
		if (!h || !(h->data = malloc(LARGE_HEAD))) {
			free(h);
			r = -EAGAIN;
			goto out_unlock;
		}
		h->fs = fs;
		h->dir = dir;
		h->uid = uid;
		h->uidvalidity = dir->uidvalidity;
		h->mailbox_id = mailbox_id;
		sync_dir_mailbox(fs, dir, &h->mailbox_id, &h->server_name);
		h->busy = true;
		h->refs = 2; /* dir->head and the job */
		if (!h->server_name || pool_submit_for(fs->pool, true, h->server_name, sync_head_job, sync_head_done, h)) {
			h->refs = 1;
			sync_head_unref_locked(h);
			r = -EAGAIN;
			goto out_unlock;
		}
		sync_head_unref_locked(dir->head);
		dir->head = h;
	}
	h->refs++;
	fs_deadline(&deadline, fs->timeout_ms);
	while (h->busy && r == 0)
		if (pthread_cond_timedwait(&dir->cond, &dir->lock, &deadline) == ETIMEDOUT)
			r = -ETIMEDOUT;
	if (r == 0 && h->error)
		r = h->error;
	if (r == 0 && offset + size <= h->len) {
		/* only whole answers: a short read is end of file to the kernel */
		memcpy(buf, h->data + offset, size);
		*read_out = size;
	} else if (r == 0) {
		r = -EAGAIN;
	}
	sync_head_unref_locked(h);
out_unlock:
	pthread_mutex_unlock(&dir->lock);
	return r;
}

/* A read of uid from its start found the body at hand: follow the scan
 * it may be part of and keep the look-ahead ahead of it. */
static void sync_note_read(struct fs *fs, struct fs_dir *dir, int64_t id, uint32_t uid)
{
	ssize_t idx;
	bool next = false;

	pthread_mutex_lock(&dir->lock);
	idx = sync_find_locked(dir, uid);
	if (idx >= 0 && sync_name_order_locked(dir, false) && (size_t)idx < dir->name_for_n) {
		sync_track_locked(dir, (size_t)idx);
		next = sync_prefetch_locked(fs, dir, (size_t)idx, id);
	}
	pthread_mutex_unlock(&dir->lock);
	if (next)
		sync_prefetch_next(fs, dir);
}

char *sync_take_recent(struct fs *fs, struct fs_dir *dir, uint32_t uid, uint64_t msg_size)
{
	uint32_t uidvalidity;
	char *data = NULL;
	size_t len = 0;
	int64_t id;

	if (!fs->recent || msg_size == 0 || msg_size > GROUP_MAX_BODY)
		return NULL;
	sync_dir_mailbox(fs, dir, &id, NULL);
	if (!id)
		return NULL;
	pthread_mutex_lock(&dir->lock);
	uidvalidity = dir->uidvalidity;
	pthread_mutex_unlock(&dir->lock);
	if (recent_take(fs->recent, id, uidvalidity, uid, &data, &len) != 0)
		return NULL;
	if (len != msg_size) {
		/* not the size the file shows: the reads go the usual way */
		free(data);
		return NULL;
	}
	sync_note_read(fs, dir, id, uid);
	return data;
}

int sync_read_body(struct fs *fs, struct fs_dir *dir, uint32_t uid, uint64_t msg_size,
		   uint64_t offset, char *buf, size_t size, size_t *read_out)
{
	int64_t id;
	int r;

	sync_dir_mailbox(fs, dir, &id, NULL);
	if (!id)
		return -ENOENT;
	for (int attempt = 0;; attempt++) {
		r = -ENOENT;
		if (fs->recent) {
			uint32_t uidvalidity;

			pthread_mutex_lock(&dir->lock);
			uidvalidity = dir->uidvalidity;
			pthread_mutex_unlock(&dir->lock);
			r = recent_read(fs->recent, id, uidvalidity, uid, offset, buf, size, read_out);
		}
		if (r == -ENOENT)
			r = cache_body_read(fs->cache, id, uid, offset, buf, size, read_out);
		if (r == 0) {
			if (offset == 0)
				sync_note_read(fs, dir, id, uid);
			return 0;
		}
		if (r != -ENOENT)
			return r;
		if (attempt == 0 && msg_size > LARGE_MESSAGE) {
			r = sync_head_read(fs, dir, id, uid, offset, buf, size, read_out);
			if (r != -EAGAIN)
				return r;
		}
		if (attempt == 2)
			return -EIO; /* fetched, yet not kept (cache full or failing) */
		r = sync_fetch_wait(fs, dir, id, uid);
		if (r)
			return r;
	}
}

void sync_dir_free(struct fs_dir *dir)
{
	/* the pool is stopped: every fetch has finished and been unlinked,
	 * every head job has dropped its reference */
	sync_head_unref_locked(dir->head);
	dir->head = NULL;
	sync_stream_unref_locked(dir->stream);
	dir->stream = NULL;
	free(dir->name_order);
	free(dir->name_pos);
	free(dir->name_bytes);
	dir->name_order = dir->name_pos = NULL;
	dir->name_bytes = NULL;
}
