/*
 * fs/ops: the FUSE low-level operations. Each runs on a libfuse loop
 * thread; metadata comes from the in-memory listings (tree.c, sync.c) and
 * the cache, and anything that needs the server goes through the pool with
 * a deadline (sync.c), so no request waits without bound.
 *
 * Per-file requests are kept off the hot path: read-only open answers
 * ENOSYS (with FUSE_CAP_NO_OPEN_SUPPORT the kernel stops sending it and
 * keeps the page cache), flush answers at once (ENOSYS only with -o ro:
 * it would stop FLUSH for new files too, whose close() returns the APPEND),
 * readdirplus hands out every entry with its attributes, and message files
 * get long entry/attr timeouts because they never change while UIDVALIDITY
 * holds. Writes: write.c (new files) and modify.c (everything else).
 *
 * A directory handle (opendir) owns a snapshot of the listing so readdir
 * offsets stay stable while a sync replaces dir->msgs.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "imapfs/log.h"
#include "names_i.h"

static struct fs *ops_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

#define OPS_NEGATIVE_TIMEOUT 1.0 /* s a missing name may be remembered */

static double ops_dir_timeout(const struct fs *fs)
{
	return fs->opts->refresh ? (double)fs->opts->refresh : 0.5;
}

static int64_t ops_refresh_ms(const struct fs *fs)
{
	return (int64_t)fs->opts->refresh * 1000;
}

/* A directory listing older than refresh but not older than this is listed
 * at once while it is checked in the background (the next listing shows
 * what changed): a warm ls or grep -r does not wait a round trip per
 * directory. Older ones wait for the check. */
#define OPS_STALE_OK_MS 60000

static int64_t ops_stale_ok_ms(const struct fs *fs)
{
	int64_t r = ops_refresh_ms(fs);

	return r == 0 ? 0 : (2 * r > OPS_STALE_OK_MS ? 2 * r : OPS_STALE_OK_MS);
}

void fs_stat_dir(struct fs *fs, const struct fs_dir *dir, struct stat *st)
{
	time_t mtime = __atomic_load_n(&dir->mtime, __ATOMIC_RELAXED);

	memset(st, 0, sizeof(*st));
	st->st_ino = dir->ino;
	st->st_mode = S_IFDIR | (fs->opts->ro ? 0555 : 0755);
	st->st_nlink = 2 + dir->nsubdirs;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_size = 4096;
	st->st_blksize = 4096;
	st->st_atime = st->st_mtime = st->st_ctime = mtime;
}

void fs_stat_msg(struct fs *fs, const struct fs_dir *dir, const struct fs_msg *m, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = FS_MSG_INO(dir->ino, m->uid);
	st->st_mode = S_IFREG | (fs->opts->ro ? 0444 : 0644);
	st->st_nlink = 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_size = (off_t)m->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((m->size + 511) / 512);
	st->st_atime = st->st_mtime = st->st_ctime = (time_t)m->internaldate;
}

static void ops_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

	/* No-open only on a read-only mount: after one ENOSYS the kernel
	 * stops sending OPEN for every file, so a later open of a message
	 * for writing could no longer be refused with EPERM. A writable mount
	 * answers OPEN with keep_cache + noflush instead (no FLUSH on close). */
	if (fs->opts->ro && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)) {
		conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
		fs->no_open = true;
	}
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
}

/* Look up a message of dir by UID, syncing when it is not known and the
 * listing is older than the refresh interval. */
static int ops_find_msg(struct fs *fs, struct fs_dir *dir, uint32_t uid, struct fs_msg *out,
			bool may_sync)
{
	ssize_t idx = -1;
	bool loaded;
	int r;

	sync_wait_streamed(fs, dir);
	pthread_mutex_lock(&dir->lock);
	loaded = dir->loaded;
	if (loaded)
		idx = sync_find_locked(dir, uid);
	if (idx >= 0)
		*out = dir->msgs[idx];
	pthread_mutex_unlock(&dir->lock);
	if (idx >= 0)
		return 0;
	if (!may_sync && loaded)
		return -ENOENT;
	r = sync_dir_fresh(fs, dir, loaded ? ops_refresh_ms(fs) : INT64_MAX);
	if (r)
		return r;
	pthread_mutex_lock(&dir->lock);
	idx = sync_find_locked(dir, uid);
	if (idx >= 0)
		*out = dir->msgs[idx];
	pthread_mutex_unlock(&dir->lock);
	return idx >= 0 ? 0 : -ENOENT;
}

static void ops_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = ops_fs(req);
	struct fuse_entry_param e;
	struct fs_dir *dir = tree_dir(fs, parent), *child;
	struct fs_msg m;
	uint32_t uid;
	int r;

	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (write_lookup(fs, dir, name, &e) == 0) { /* a new file (write.c) */
		fuse_reply_entry(req, &e);
		return;
	}
	memset(&e, 0, sizeof(e));
	pthread_rwlock_rdlock(&fs->tree_lock);
	child = tree_child_locked(dir, name);
	if (child) {
		e.ino = child->ino;
		fs_stat_dir(fs, child, &e.attr);
	}
	pthread_rwlock_unlock(&fs->tree_lock);
	if (!child && !names_message_parse(name, &uid)) {
		/* maybe a mailbox created since the last LIST */
		if (sync_mailbox_list(fs, ops_refresh_ms(fs)) == 0) {
			pthread_rwlock_rdlock(&fs->tree_lock);
			child = tree_child_locked(dir, name);
			if (child) {
				e.ino = child->ino;
				fs_stat_dir(fs, child, &e.attr);
			}
			pthread_rwlock_unlock(&fs->tree_lock);
		}
	}
	if (child) {
		e.attr_timeout = e.entry_timeout = ops_dir_timeout(fs);
		fuse_reply_entry(req, &e);
		return;
	}
	if (!names_message_parse(name, &uid)) {
		/* neither a mailbox (the LIST is at most a refresh interval old)
		 * nor a message: the kernel may remember for a moment that the
		 * name does not exist (cp looks its target name up three times
		 * before it creates it, and once after). A second, not the
		 * refresh interval: a mailbox made by another client, an outbox
		 * entry loaded after the mount, show up under such a name
		 * without telling the kernel (an invalidation would also drop a
		 * directory someone has just made and entered). Files and
		 * directories made through the mount replace the entry. A
		 * <UID>.eml name is never remembered missing: messages come. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = ops_dir_timeout(fs) < OPS_NEGATIVE_TIMEOUT ?
					  ops_dir_timeout(fs) : OPS_NEGATIVE_TIMEOUT;
		fuse_reply_entry(req, &e);
		return;
	}
	r = ops_find_msg(fs, dir, uid, &m, true);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	e.ino = FS_MSG_INO(dir->ino, uid);
	fs_stat_msg(fs, dir, &m, &e.attr);
	e.attr_timeout = e.entry_timeout = FS_MSG_TIMEOUT;
	fuse_reply_entry(req, &e);
}

static void ops_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req); /* inodes are computed: nothing to drop */
}

static void ops_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

static void ops_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = ops_fs(req);
	struct stat st;
	struct fs_dir *dir;

	(void)fi;
	if (WRITE_INO_IS_NEW(ino)) {
		int r = write_getattr(fs, ino, &st);

		if (r)
			fuse_reply_err(req, -r);
		else
			fuse_reply_attr(req, &st, 0);
		return;
	}
	if (FS_INO_IS_MSG(ino)) {
		struct fs_msg m;
		int r;

		dir = tree_dir(fs, FS_INO_DIR(ino));
		r = dir ? ops_find_msg(fs, dir, FS_INO_UID(ino), &m, false) : -ENOENT;
		if (r) {
			fuse_reply_err(req, -r);
			return;
		}
		fs_stat_msg(fs, dir, &m, &st);
		fuse_reply_attr(req, &st, FS_MSG_TIMEOUT);
		return;
	}
	dir = tree_dir(fs, ino);
	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	pthread_rwlock_rdlock(&fs->tree_lock);
	fs_stat_dir(fs, dir, &st);
	pthread_rwlock_unlock(&fs->tree_lock);
	fuse_reply_attr(req, &st, ops_dir_timeout(fs));
}

/* --- directories --- */

struct dir_entry {
	char *name;
	struct stat st;
};

struct dir_snap {
	struct dir_snap *prev, *next; /* fs->open_dirs, under fs->handles_lock */
	struct fs_dir *dir;
	struct dir_entry *subs; /* ".", "..", then subdirectories */
	size_t nsubs;
	struct fs_msg *msgs;
	size_t nmsgs;
	struct fs_stream *stream; /* the first listing, still arriving: listed
				   * after subs instead of msgs */
	uint64_t hash; /* of the names in order: what a cached readdir would show */
};

static void ops_snap_free(struct dir_snap *s)
{
	if (!s)
		return;
	if (s->stream) {
		pthread_mutex_lock(&s->dir->lock);
		sync_stream_unref_locked(s->stream);
		pthread_mutex_unlock(&s->dir->lock);
	}
	for (size_t i = 0; i < s->nsubs; i++)
		if (i >= 2)
			free(s->subs[i].name);
	free(s->subs);
	free(s->msgs);
	free(s);
}

/* FNV-1a over the entry names in listing order (messages by UID). */
static uint64_t ops_hash_bytes(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t ops_snap_hash(const struct dir_snap *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < s->nsubs; i++)
		h = ops_hash_bytes(h, s->subs[i].name, strlen(s->subs[i].name) + 1);
	for (size_t i = 0; i < s->nmsgs; i++)
		h = ops_hash_bytes(h, &s->msgs[i].uid, sizeof(s->msgs[i].uid));
	return h;
}

/* Register an open directory handle and decide what the kernel may do
 * with its readdir cache (FOPEN_CACHE_DIR): keep what it has when it was
 * filled from the same listing, else drop it; let this handle fill it
 * only when no open handle with another listing could fill it too. A
 * warm ls -l or grep -r of a 100,000-message mailbox then costs no
 * READDIRPLUS at all. */
static void ops_handle_link(struct fs *fs, struct dir_snap *s, struct fuse_file_info *fi)
{
	struct fs_dir *dir = s->dir;
	bool others_differ = false;

	s->hash = ops_snap_hash(s);
	pthread_mutex_lock(&fs->handles_lock);
	for (struct dir_snap *o = fs->open_dirs; o; o = o->next)
		if (o->dir == dir && !o->stream && o->hash != s->hash)
			others_differ = true;
	if (s->stream) { /* an unfinished listing: never cached */
		log_debug("%s: listing it while it arrives", dir->name);
		fi->keep_cache = 0;
		fi->cache_readdir = 0;
		dir->kcache_valid = false;
	} else {
		fi->keep_cache = dir->kcache_valid && dir->kcache_hash == s->hash && !others_differ;
		fi->cache_readdir = !others_differ;
		dir->kcache_valid = !others_differ;
		dir->kcache_hash = s->hash;
	}
	s->prev = NULL;
	s->next = fs->open_dirs;
	if (s->next)
		s->next->prev = s;
	fs->open_dirs = s;
	pthread_mutex_unlock(&fs->handles_lock);
}

static void ops_handle_unlink(struct fs *fs, struct dir_snap *s)
{
	pthread_mutex_lock(&fs->handles_lock);
	if (s->prev)
		s->prev->next = s->next;
	else
		fs->open_dirs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	pthread_mutex_unlock(&fs->handles_lock);
}

void ops_free_open_handles(struct fs *fs)
{
	pthread_mutex_lock(&fs->handles_lock);
	while (fs->open_dirs) {
		struct dir_snap *s = fs->open_dirs;

		fs->open_dirs = s->next;
		ops_snap_free(s);
	}
	pthread_mutex_unlock(&fs->handles_lock);
}

/* new files (write.c) go after the subdirectories */
static void ops_snap_add_new(struct fs *fs, struct fs_dir *dir, struct dir_snap *s)
{
	struct dir_entry *bigger;
	struct stat *st;
	char **names;
	size_t n;

	if (write_list(fs, dir, &names, &st, &n) != 0 || n == 0)
		return;
	bigger = realloc(s->subs, (s->nsubs + n) * sizeof(*bigger));
	if (bigger) {
		s->subs = bigger;
		for (size_t i = 0; i < n; i++) {
			s->subs[s->nsubs].name = names[i];
			s->subs[s->nsubs].st = st[i];
			s->nsubs++;
		}
	} else {
		for (size_t i = 0; i < n; i++)
			free(names[i]);
	}
	free(names);
	free(st);
}

static int ops_snap_new(struct fs *fs, struct fs_dir *dir, struct fs_stream *stream,
			struct dir_snap **out)
{
	struct dir_snap *s = calloc(1, sizeof(*s));
	bool nomem = false;
	size_t n = 2;

	if (!s) {
		pthread_mutex_lock(&dir->lock);
		sync_stream_unref_locked(stream);
		pthread_mutex_unlock(&dir->lock);
		return -ENOMEM;
	}
	s->dir = dir;
	s->stream = stream; /* the reference is the handle's now */
	pthread_rwlock_rdlock(&fs->tree_lock);
	for (struct fs_dir *c = dir->first_child; c; c = c->next_sibling)
		n += c->visible;
	s->subs = calloc(n, sizeof(*s->subs));
	if (!s->subs) {
		pthread_rwlock_unlock(&fs->tree_lock);
		ops_snap_free(s);
		return -ENOMEM;
	}
	s->subs[0].name = (char *)".";
	fs_stat_dir(fs, dir, &s->subs[0].st);
	s->subs[1].name = (char *)"..";
	fs_stat_dir(fs, dir->parent ? dir->parent : dir, &s->subs[1].st);
	s->nsubs = 2;
	for (struct fs_dir *c = dir->first_child; c; c = c->next_sibling) {
		if (!c->visible)
			continue;
		s->subs[s->nsubs].name = strdup(c->name);
		if (!s->subs[s->nsubs].name)
			break;
		fs_stat_dir(fs, c, &s->subs[s->nsubs].st);
		s->nsubs++;
	}
	pthread_rwlock_unlock(&fs->tree_lock);
	ops_snap_add_new(fs, dir, s); /* files being written or in the outbox */

	pthread_mutex_lock(&dir->lock);
	if (dir->nmsgs && !s->stream) {
		s->msgs = malloc(dir->nmsgs * sizeof(*s->msgs));
		if (s->msgs) {
			/* in file-name order, as ls and globs sort: a scan by
			 * grep -r and one by cat * or rsync read in the same
			 * order, the one the prefetch follows */
			if (sync_name_order_locked(dir, true)) {
				for (size_t i = 0; i < dir->nmsgs; i++)
					s->msgs[i] = dir->msgs[dir->name_order[i]];
			} else {
				memcpy(s->msgs, dir->msgs, dir->nmsgs * sizeof(*s->msgs));
			}
			s->nmsgs = dir->nmsgs;
		} else {
			nomem = true;
		}
	}
	pthread_mutex_unlock(&dir->lock);
	if (nomem) {
		ops_snap_free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

static void ops_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = ops_fs(req);
	struct fs_dir *dir = tree_dir(fs, ino);
	struct fs_stream *stream = NULL;
	struct dir_snap *s;
	int r;

	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	r = sync_mailbox_list(fs, ops_refresh_ms(fs));
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	r = sync_dir_fresh_or_stream(fs, dir, ops_refresh_ms(fs), ops_stale_ok_ms(fs), &stream);
	if (r == 0)
		r = ops_snap_new(fs, dir, stream, &s);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uintptr_t)s;
	ops_handle_link(fs, s, fi);
	if (fuse_reply_open(req, fi) != 0) {
		ops_handle_unlink(fs, s);
		ops_snap_free(s);
	}
}

/* Add one entry at *pos; false when it does not fit (the reply is full). */
static bool ops_add_entry(fuse_req_t req, char *buf, size_t size, size_t *pos, const char *name,
			  const struct fuse_entry_param *e, off_t next, bool plus)
{
	size_t len;

	if (plus)
		len = fuse_add_direntry_plus(req, buf + *pos, size - *pos, name, e, next);
	else
		len = fuse_add_direntry(req, buf + *pos, size - *pos, name, &e->attr, next);
	if (len > size - *pos)
		return false;
	*pos += len;
	return true;
}

static void ops_msg_entry(struct fs *fs, const struct fs_dir *dir, const struct fs_msg *m,
			  struct fuse_entry_param *e, char *name, size_t name_size)
{
	memset(e, 0, sizeof(*e));
	names_message_format(m->uid, name, name_size);
	fs_stat_msg(fs, dir, m, &e->attr);
	e->attr_timeout = e->entry_timeout = FS_MSG_TIMEOUT;
	e->ino = e->attr.st_ino;
}

#define OPS_STREAM_CHUNK 64

/* Entries from a listing still arriving, from its index j on: waits only
 * while the reply is empty. 0, or an errno when nothing could be listed. */
static int ops_stream_entries(fuse_req_t req, struct fs *fs, struct dir_snap *s, size_t j,
			      char *buf, size_t size, size_t *pos, bool plus)
{
	struct fs_stream *st = s->stream;
	struct fs_dir *dir = s->dir;
	struct fs_msg chunk[OPS_STREAM_CHUNK];

	for (;;) {
		struct timespec deadline;
		size_t got = 0;
		int err = 0;

		fs_deadline(&deadline, fs->timeout_ms);
		pthread_mutex_lock(&dir->lock);
		while (j >= st->n && !st->done && *pos == 0)
			if (pthread_cond_timedwait(&dir->cond, &dir->lock, &deadline) == ETIMEDOUT) {
				err = ETIMEDOUT;
				break;
			}
		if (j < st->n) {
			got = st->n - j < OPS_STREAM_CHUNK ? st->n - j : OPS_STREAM_CHUNK;
			memcpy(chunk, st->msgs + j, got * sizeof(*chunk));
		} else if (!err && st->done && st->error && *pos == 0) {
			err = -st->error;
		}
		pthread_mutex_unlock(&dir->lock);
		if (got == 0)
			return *pos == 0 ? err : 0;
		for (size_t k = 0; k < got; k++, j++) {
			struct fuse_entry_param e;
			char name[NAMES_MESSAGE_MAX];

			ops_msg_entry(fs, dir, &chunk[k], &e, name, sizeof(name));
			if (!ops_add_entry(req, buf, size, pos, name, &e, (off_t)(s->nsubs + j + 1),
					   plus))
				return 0;
		}
	}
}

static void ops_readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			       struct fuse_file_info *fi, bool plus)
{
	struct fs *fs = ops_fs(req);
	struct dir_snap *s = (struct dir_snap *)(uintptr_t)fi->fh;
	size_t total, i, pos = 0;
	char *buf;

	(void)ino;
	if (!s) {
		fuse_reply_err(req, EBADF);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	total = s->nsubs + s->nmsgs;
	for (i = off < 0 ? 0 : (size_t)off; i < total; i++) {
		struct fuse_entry_param e;
		char msgname[NAMES_MESSAGE_MAX];
		const char *name;

		if (i < s->nsubs) {
			memset(&e, 0, sizeof(e));
			name = s->subs[i].name;
			e.attr = s->subs[i].st;
			e.attr_timeout = e.entry_timeout = ops_dir_timeout(fs);
			e.ino = e.attr.st_ino;
		} else {
			ops_msg_entry(fs, s->dir, &s->msgs[i - s->nsubs], &e, msgname,
				      sizeof(msgname));
			name = msgname;
		}
		if (!ops_add_entry(req, buf, size, &pos, name, &e, (off_t)(i + 1), plus))
			break;
	}
	if (s->stream && i >= total) {
		int err = ops_stream_entries(req, fs, s, i - s->nsubs, buf, size, &pos, plus);

		if (err) {
			fuse_reply_err(req, err);
			free(buf);
			return;
		}
	}
	fuse_reply_buf(req, buf, pos);
	free(buf);
}

static void ops_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	ops_readdir_common(req, ino, size, off, fi, false);
}

static void ops_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			    struct fuse_file_info *fi)
{
	ops_readdir_common(req, ino, size, off, fi, true);
}

static void ops_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dir_snap *s = (struct dir_snap *)(uintptr_t)fi->fh;

	(void)ino;
	if (s) {
		ops_handle_unlink(ops_fs(req), s);
		ops_snap_free(s);
	}
	fuse_reply_err(req, 0);
}

/* --- files --- */

/*
 * A message just fetched for a scan (grep -r, cp -r, tar) is still in
 * memory when its file is opened: put it in the kernel's page cache with
 * the open, so the reads that follow find it there instead of each costing
 * a READ request (a round trip through the daemon, a third of a cold
 * scan's requests). keep_cache on the open keeps it there. If the store
 * fails, the reads come as usual and find the body in the cache.
 */
static void ops_open_store(struct fs *fs, fuse_ino_t ino)
{
	struct fs_dir *dir = tree_dir(fs, FS_INO_DIR(ino));
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(0);
	struct fs_msg m;
	char *data;

	if (!dir || !fs->se || ops_find_msg(fs, dir, FS_INO_UID(ino), &m, false) != 0)
		return;
	data = sync_take_recent(fs, dir, m.uid, m.size);
	if (!data)
		return;
	bv.buf[0].mem = data;
	bv.buf[0].size = (size_t)m.size;
	if (fuse_lowlevel_notify_store(fs->se, ino, 0, &bv, 0) == 0) {
		__atomic_add_fetch(&fs->stat_open_stores, 1, __ATOMIC_RELAXED);
		log_debug("%s/%u.eml: in the page cache with the open", dir->name, m.uid);
	} else {
		log_debug("%s/%u.eml: page cache store refused", dir->name, m.uid);
	}
	free(data);
}

static void ops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = ops_fs(req);

	if (WRITE_INO_IS_NEW(ino)) {
		write_open(req, ino, fi);
		return;
	}
	if (!FS_INO_IS_MSG(ino)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		/* messages are immutable */
		fuse_reply_err(req, fs->opts->ro ? EROFS : EPERM);
		return;
	}
	if (fs->no_open) {
		/* read-only: no per-file state; the kernel stops asking and
		 * keeps its page cache */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	fi->keep_cache = 1; /* message files never change */
	fi->noflush = 1;    /* nothing to flush: spare close() a round trip */
	ops_open_store(fs, ino);
	fuse_reply_open(req, fi);
}

static void ops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fs *fs = ops_fs(req);
	struct fs_dir *dir;
	struct fs_msg m;
	size_t got = 0;
	char *buf;
	int r;

	(void)fi;
	if (WRITE_INO_IS_NEW(ino)) {
		write_read(req, ino, size, off);
		return;
	}
	if (!FS_INO_IS_MSG(ino)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	dir = tree_dir(fs, FS_INO_DIR(ino));
	r = dir ? ops_find_msg(fs, dir, FS_INO_UID(ino), &m, false) : -ENOENT;
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	if (off < 0 || (uint64_t)off >= m.size || size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > m.size - (uint64_t)off)
		size = (size_t)(m.size - (uint64_t)off);
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = sync_read_body(fs, dir, m.uid, m.size, (uint64_t)off, buf, size, &got);
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

static void ops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (WRITE_INO_IS_NEW(ino)) {
		write_flush(req, ino, fi); /* close() of a new file: the APPEND */
		return;
	}
	/* message files are opened with noflush, so FLUSH comes only for
	 * the odd case; never ENOSYS on a writable mount: the kernel would
	 * stop sending FLUSH for new files too, and close() must report the
	 * APPEND. On a read-only mount no file is ever new. */
	fuse_reply_err(req, ops_fs(req)->opts->ro ? ENOSYS : 0);
}

static void ops_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (WRITE_INO_IS_NEW(ino)) {
		write_release(req, ino, fi);
		return;
	}
	fuse_reply_err(req, 0);
}

static void ops_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = ops_fs(req);
	struct statvfs st;

	(void)ino;
	memset(&st, 0, sizeof(st));
	quota_statfs(fs, &st);
	fuse_reply_statfs(req, &st);
}

/* --- changes: the write path (write.c: new files; modify.c: the rest) --- */

static void ops_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	modify_setattr(req, ino, attr, to_set, fi);
}

static void ops_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	if (WRITE_INO_IS_NEW(ino)) {
		write_write(req, ino, buf, size, off, fi);
		return;
	}
	fuse_reply_err(req, ops_fs(req)->opts->ro ? EROFS : EPERM); /* messages are immutable */
}

static void ops_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      dev_t rdev)
{
	(void)parent;
	(void)name;
	(void)mode;
	(void)rdev;
	fuse_reply_err(req, ops_fs(req)->opts->ro ? EROFS : EPERM); /* create() makes files */
}

static void ops_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	modify_mkdir(req, parent, name, mode);
}

static void ops_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	modify_unlink(req, parent, name);
}

static void ops_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	modify_rmdir(req, parent, name);
}

static void ops_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	modify_rename(req, parent, name, newparent, newname, flags);
}

static void ops_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	write_create(req, parent, name, mode, fi);
}

static void ops_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	/* Only user.* attributes exist here. ENOTSUP (not ENODATA) for the
	 * others tells ls -l that this file system has no SELinux labels and
	 * no POSIX ACLs: coreutils then stops asking for the rest of the
	 * mount instead of sending two getxattr per file listed. */
	if (strncmp(name, "user.", 5) != 0) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	if (WRITE_INO_IS_NEW(ino)) {
		write_getxattr(req, ino, name, size);
		return;
	}
	xattr_get(req, ino, name, size);
}

static void ops_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	if (WRITE_INO_IS_NEW(ino)) {
		write_listxattr(req, ino, size);
		return;
	}
	xattr_list(req, ino, size);
}

static void ops_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	modify_setxattr(req, ino, name, value, size, flags);
}

static void ops_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	modify_removexattr(req, ino, name);
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = ops_init,
	.lookup = ops_lookup,
	.forget = ops_forget,
	.forget_multi = ops_forget_multi,
	.getattr = ops_getattr,
	.setattr = ops_setattr,
	.mknod = ops_mknod,
	.mkdir = ops_mkdir,
	.unlink = ops_unlink,
	.rmdir = ops_rmdir,
	.rename = ops_rename,
	.create = ops_create,
	.open = ops_open,
	.read = ops_read,
	.write = ops_write,
	.flush = ops_flush,
	.release = ops_release,
	.opendir = ops_opendir,
	.readdir = ops_readdir,
	.readdirplus = ops_readdirplus,
	.releasedir = ops_releasedir,
	.statfs = ops_statfs,
	.getxattr = ops_getxattr,
	.listxattr = ops_listxattr,
	.setxattr = ops_setxattr,
	.removexattr = ops_removexattr,
};
