/*
 * fs/modify: changes to what exists on the server. user.imap.flags ->
 * UID STORE; rm -> UID STORE \Deleted + UID EXPUNGE of that UID only (or a
 * move to the trash mailbox given with -o trash=); mv of a message to
 * another mailbox -> UID MOVE (imap_uid_move falls back to COPY + STORE +
 * UID EXPUNGE); mkdir -> CREATE, rmdir -> DELETE, mv of a directory ->
 * RENAME. Every server call runs as an urgent pool job the FUSE thread
 * waits for (modify_call); afterwards the cache and the in-memory listing
 * are updated at once (and the kernel told through notify), so the next
 * ls shows the server's state without a resync.
 *
 * Names: a directory's server name is built from its escaped path
 * (names_mailbox_from_path reverses the escaping) and mutf7_encode, and
 * every mailbox argument goes through the imap module's quoting routine.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "flags_i.h"
#include "imapfs/log.h"
#include "imapfs/mutf7.h"
#include "names_i.h"
#include "sat_i.h"

#define XATTR_FLAGS "user.imap.flags"

static struct fs *modify_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* --- running a job and waiting for it --- */

struct modify_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int result;
	pool_fn fn;
	void *arg;
};

static int modify_call_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct modify_wait *w = arg;

	return w->fn(fs, conn, w->arg);
}

static void modify_call_done(struct fs *fs, void *arg, int result)
{
	struct modify_wait *w = arg;

	(void)fs;
	pthread_mutex_lock(&w->lock);
	w->done = true;
	w->result = result;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

int modify_call(struct fs *fs, pool_fn fn, void *arg)
{
	struct modify_wait w = { .fn = fn, .arg = arg };
	int r;

	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	/* the pool calls done for every job it took, also when stopping, and
	 * every server wait in a job is bounded by the I/O timeout */
	r = pool_submit(fs->pool, true, modify_call_job, modify_call_done, &w);
	if (r == 0) {
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.lock);
		r = w.result;
		pthread_mutex_unlock(&w.lock);
	}
	pthread_mutex_destroy(&w.lock);
	pthread_cond_destroy(&w.cond);
	return r;
}

int modify_select(struct fs *fs, struct pool_conn *conn, const char *server_name,
		  struct imap_select_info *info_out)
{
	(void)fs;
	free(conn->selected);
	conn->selected = NULL;
	if (imap_select(conn->session, server_name, false, info_out, &conn->err) != 0) {
		log_debug("SELECT %s: %s", server_name, conn->err.reason);
		return fs_errno_from_imap(&conn->err);
	}
	/* a read-write selection serves the read path's jobs as well */
	conn->selected = strdup(server_name);
	conn->selected_uidvalidity = info_out->uidvalidity;
	return 0;
}

/* --- the in-memory listing --- */

/* dir->msgs changed from index from on: the byte offsets from there, and
 * what depends on the listing. Only from there: a file copied into a
 * mailbox of 100,000 messages lands at the end, and recounting them all
 * took 5 ms per file. */
static void modify_listing_changed_locked(struct fs_dir *dir, size_t from)
{
	uint64_t bytes = 0;

	dir->local_gen++; /* a sync publishing what it read before must read again */
	if (from > 0 && from <= dir->nmsgs)
		bytes = sat_add_u64(dir->msgs[from - 1].bytes_before, dir->msgs[from - 1].size);
	else
		from = 0;
	for (size_t i = from; i < dir->nmsgs; i++) {
		dir->msgs[i].bytes_before = bytes;
		bytes = sat_add_u64(bytes, dir->msgs[i].size);
	}
	__atomic_store_n(&dir->mtime, time(NULL), __ATOMIC_RELAXED);
	dir->have_last = false;
	dir->seq_run = 0;
	dir->frontier = 0;
	dir->window = 0;
}

void modify_listing_insert(struct fs *fs, struct fs_dir *dir, const struct fs_msg *m)
{
	size_t lo = 0, hi;

	(void)fs;
	pthread_mutex_lock(&dir->lock);
	if (!dir->loaded)
		goto out; /* the first look reads the cache */
	hi = dir->nmsgs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (dir->msgs[mid].uid < m->uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < dir->nmsgs && dir->msgs[lo].uid == m->uid) {
		dir->msgs[lo].size = m->size;
		dir->msgs[lo].internaldate = m->internaldate;
	} else {
		struct fs_msg *bigger = realloc(dir->msgs, (dir->nmsgs + 1) * sizeof(*bigger));

		if (!bigger) {
			if (dir->synced_at_ms)
				dir->synced_at_ms = 1;
			goto out;
		}
		dir->msgs = bigger;
		memmove(&dir->msgs[lo + 1], &dir->msgs[lo], (dir->nmsgs - lo) * sizeof(*bigger));
		dir->msgs[lo] = *m;
		dir->nmsgs++;
	}
	modify_listing_changed_locked(dir, lo);
out:
	pthread_mutex_unlock(&dir->lock);
}

void modify_listing_remove(struct fs *fs, struct fs_dir *dir, uint32_t uid)
{
	char name[NAMES_MESSAGE_MAX];
	ssize_t idx;

	pthread_mutex_lock(&dir->lock);
	/* a listing under way may have seen the message before it went and
	 * would bring it back: it runs once more (sync_listing_done) */
	if (dir->syncing)
		dir->resync = true;
	idx = dir->loaded ? sync_find_locked(dir, uid) : -1;
	if (idx >= 0) {
		memmove(&dir->msgs[idx], &dir->msgs[idx + 1],
			(dir->nmsgs - (size_t)idx - 1) * sizeof(*dir->msgs));
		dir->nmsgs--;
		modify_listing_changed_locked(dir, (size_t)idx);
	}
	pthread_mutex_unlock(&dir->lock);
	names_message_format(uid, name, sizeof(name));
	notify_inval_entry(fs->notify, dir->ino, name);
	notify_inval_inode(fs->notify, FS_MSG_INO(dir->ino, uid));
}

void modify_mark_stale(struct fs *fs, struct fs_dir *dir)
{
	struct cache_mailbox mb;
	int64_t id;

	pthread_rwlock_rdlock(&fs->tree_lock);
	id = dir->selectable ? dir->mailbox_id : 0;
	pthread_rwlock_unlock(&fs->tree_lock);
	/* a directory not loaded yet takes its sync time from the cache */
	/* long ago, but not never: a failed sync still serves the listing */
	if (id && cache_mailbox_get(fs->cache, id, &mb) == 0 && mb.synced_at > 1)
		cache_mailbox_set_state(fs->cache, id, mb.uidvalidity, mb.uidnext, mb.highestmodseq,
					1);
	pthread_mutex_lock(&dir->lock);
	if (dir->synced_at_ms)
		dir->synced_at_ms = 1;
	if (dir->syncing)
		dir->resync = true; /* the listing under way may predate the change */
	pthread_mutex_unlock(&dir->lock);
}

struct fs_dir *modify_dir_by_server_name(struct fs *fs, const char *server_name)
{
	struct fs_dir *found = NULL;

	pthread_rwlock_rdlock(&fs->tree_lock);
	for (size_t i = 1; i < fs->ndirs && !found; i++) {
		struct fs_dir *d = fs->dirs[i];

		if (d->selectable && d->server_name && strcmp(d->server_name, server_name) == 0)
			found = d;
	}
	pthread_rwlock_unlock(&fs->tree_lock);
	return found;
}

/* Force a fresh LIST (the tree after CREATE, DELETE, RENAME). */
static void modify_relist(struct fs *fs)
{
	/* not one in flight that may have started before the change, nor one
	 * that finished within the same millisecond */
	sync_mailbox_list_after_change(fs);
}

/* --- messages: the mailbox they are in --- */

struct msg_ref {
	struct fs_dir *dir;
	char *server_name;
	int64_t mailbox_id;
	uint32_t uidvalidity;
	char delimiter;
	struct fs_msg msg;
};

static void modify_ref_free(struct msg_ref *ref)
{
	free(ref->server_name);
	ref->server_name = NULL;
}

/* The message uid of dir, known in the listing. */
static int modify_ref(struct fs *fs, struct fs_dir *dir, uint32_t uid, struct msg_ref *out)
{
	ssize_t idx;
	bool loaded;

	memset(out, 0, sizeof(*out));
	out->dir = dir;
	pthread_rwlock_rdlock(&fs->tree_lock);
	if (dir->selectable && dir->server_name) {
		out->server_name = strdup(dir->server_name);
		out->mailbox_id = dir->mailbox_id;
		out->delimiter = dir->delimiter;
	}
	pthread_rwlock_unlock(&fs->tree_lock);
	if (!out->server_name)
		return -ENOENT;
	pthread_mutex_lock(&dir->lock);
	loaded = dir->loaded;
	pthread_mutex_unlock(&dir->lock);
	if (!loaded)
		sync_dir_fresh(fs, dir, INT64_MAX);
	sync_wait_streamed(fs, dir);
	pthread_mutex_lock(&dir->lock);
	idx = dir->loaded ? sync_find_locked(dir, uid) : -1;
	if (idx >= 0)
		out->msg = dir->msgs[idx];
	out->uidvalidity = dir->uidvalidity;
	pthread_mutex_unlock(&dir->lock);
	if (idx < 0) {
		modify_ref_free(out);
		return -ENOENT;
	}
	return 0;
}

/* SELECT the message's mailbox; the UID must still mean the same message. */
static int modify_select_ref(struct fs *fs, struct pool_conn *conn, struct msg_ref *ref,
			     struct imap_select_info *info)
{
	int r = modify_select(fs, conn, ref->server_name, info);

	if (r)
		return r;
	if (ref->uidvalidity && info->uidvalidity != ref->uidvalidity) {
		modify_mark_stale(fs, ref->dir);
		return -ESTALE;
	}
	return 0;
}

/* --- flags --- */

struct flags_job {
	struct msg_ref ref;
	enum imap_store_op op;   /* REPLACE, or ADD then REMOVE */
	char *flags;             /* REPLACE */
	char *add, *remove;
	char *result;            /* the flags the server has afterwards */
	uint64_t modseq;
};

/* every flag of list may be stored in the selected mailbox */
static bool modify_flags_permitted(const char *permanent, const char *list)
{
	if (!permanent[0])
		return true; /* no PERMANENTFLAGS: the server decides */
	while (*list) {
		size_t l;

		while (*list == ' ')
			list++;
		l = strcspn(list, " ");
		if (l && !flags_list_has(permanent, list, l) &&
		    (list[0] == '\\' || !flags_list_has(permanent, "\\*", 2)))
			return false;
		list += l;
	}
	return true;
}

static int modify_flags_meta_cb(void *arg, const struct imap_msg_meta *meta)
{
	struct flags_job *j = arg;
	const char *in;
	char *out;
	size_t used = 0;

	if (meta->uid != j->ref.msg.uid || !(meta->have & IMAP_META_FLAGS))
		return 0;
	in = meta->flags ? meta->flags : "";
	out = malloc(strlen(in) + 1);
	if (!out)
		return 1;
	while (*in) { /* without \Recent, as the sync keeps them */
		size_t l;

		while (*in == ' ')
			in++;
		l = strcspn(in, " ");
		if (l && !(l == 7 && strncasecmp(in, "\\Recent", 7) == 0)) {
			if (used)
				out[used++] = ' ';
			memcpy(out + used, in, l);
			used += l;
		}
		in += l;
	}
	out[used] = '\0';
	free(j->result);
	j->result = out;
	if (meta->have & IMAP_META_MODSEQ)
		j->modseq = meta->modseq;
	return 0;
}

static int modify_flags_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct flags_job *j = arg;
	struct imap_select_info info;
	char set[16];
	unsigned items = IMAP_META_FLAGS;
	int r;

	r = modify_select_ref(fs, conn, &j->ref, &info);
	if (r)
		return r;
	if ((j->flags && !modify_flags_permitted(info.permanent_flags, j->flags)) ||
	    (j->add && !modify_flags_permitted(info.permanent_flags, j->add)))
		return -EINVAL;
	snprintf(set, sizeof(set), "%u", j->ref.msg.uid);
	if (j->flags) {
		if (imap_uid_store(conn->session, set, IMAP_STORE_REPLACE, j->flags, &conn->err))
			goto out_imap;
	} else {
		if (j->add[0] &&
		    imap_uid_store(conn->session, set, IMAP_STORE_ADD, j->add, &conn->err))
			goto out_imap;
		if (j->remove[0] &&
		    imap_uid_store(conn->session, set, IMAP_STORE_REMOVE, j->remove, &conn->err))
			goto out_imap;
	}
	if (info.highestmodseq)
		items |= IMAP_META_MODSEQ;
	/* what the server has now, other clients' changes included */
	if (imap_uid_fetch_meta(conn->session, set, items, 0, modify_flags_meta_cb, NULL, j,
				&conn->err))
		goto out_imap;
	return 0;

out_imap:
	log_warnx("UID STORE %s in %s: %s", set, j->ref.server_name, conn->err.reason);
	if (conn->err.kind == IMAP_ERR_BAD || conn->err.kind == IMAP_ERR_LOCAL)
		return -EINVAL;
	return fs_errno_from_imap(&conn->err);
}

static bool modify_is_ours(const char *name)
{
	return strncmp(name, "user.imap.", 10) == 0 &&
	       (strcmp(name + 10, "flags") == 0 || strcmp(name + 10, "uid") == 0 ||
		strcmp(name + 10, "uidvalidity") == 0 || strcmp(name + 10, "internaldate") == 0 ||
		strcmp(name + 10, "modseq") == 0);
}

static int modify_flags(struct fs *fs, fuse_ino_t ino, const char *value, size_t size)
{
	struct flags_job j = { 0 };
	struct fs_dir *dir;
	struct cache_batch *b;
	int r;

	dir = tree_dir(fs, FS_INO_DIR(ino));
	if (!dir)
		return -ENOENT;
	r = flags_parse_change(value, size, &j.add, &j.remove);
	if (r == 0)
		r = flags_parse(value, size, &j.flags);
	if (r < 0)
		return r;
	r = modify_ref(fs, dir, FS_INO_UID(ino), &j.ref);
	if (r)
		goto out_free;
	r = modify_call(fs, modify_flags_job, &j);
	if (r == 0 && j.result) {
		r = cache_batch_begin(fs->cache, j.ref.mailbox_id, &b);
		if (r == 0) {
			r = cache_batch_set_flags(b, j.ref.msg.uid, j.result, j.modseq);
			if (r == 0)
				r = cache_batch_commit(b);
			else
				cache_batch_abort(b);
		}
		if (r) {
			log_warnx("cache: flags of %u: %s", j.ref.msg.uid, strerror(-r));
			modify_mark_stale(fs, dir);
			r = 0;
		}
	} else if (r == 0) {
		modify_mark_stale(fs, dir);
	}
out_free:
	modify_ref_free(&j.ref);
	free(j.flags);
	free(j.add);
	free(j.remove);
	free(j.result);
	return r;
}

/* Whether name on a message may be written: 0, or the errno to refuse
 * with (ENOTSUP not ours, EROFS read-only mount, EPERM a read-only one). */
static int modify_xattr_writable(struct fs *fs, fuse_ino_t ino, const char *name)
{
	if (!FS_INO_IS_MSG(ino) || !modify_is_ours(name))
		return ENOTSUP;
	if (fs->opts->ro)
		return EROFS;
	if (strcmp(name, XATTR_FLAGS) != 0)
		return EPERM;
	return 0;
}

void modify_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		     size_t size, int flags)
{
	struct fs *fs = modify_fs(req);
	int r;

	(void)flags;
	if (WRITE_INO_IS_NEW(ino)) {
		write_setxattr(req, ino, name, value, size);
		return;
	}
	r = modify_xattr_writable(fs, ino, name);
	if (r) {
		fuse_reply_err(req, r);
		return;
	}
	fuse_reply_err(req, -modify_flags(fs, ino, value, size));
}

void modify_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct fs *fs = modify_fs(req);
	int r;

	if (WRITE_INO_IS_NEW(ino)) {
		write_removexattr(req, ino, name);
		return;
	}
	r = modify_xattr_writable(fs, ino, name);
	if (r) {
		fuse_reply_err(req, r);
		return;
	}
	fuse_reply_err(req, -modify_flags(fs, ino, "", 0));
}

void modify_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		    struct fuse_file_info *fi)
{
	struct fs *fs = modify_fs(req);

	(void)fi;
	if (WRITE_INO_IS_NEW(ino) && !fs->opts->ro) {
		write_setattr(req, ino, attr, to_set);
		return;
	}
	/* messages never change; directories have nothing to set */
	fuse_reply_err(req, fs->opts->ro ? EROFS : EPERM);
}

/* --- the name of a mailbox on the server --- */

/* the escaped path of dir ("" for the root); tree_lock held */
static char *modify_path_locked(const struct fs_dir *dir)
{
	size_t len = 0;
	char *p;

	for (const struct fs_dir *d = dir; d && d->parent; d = d->parent)
		len += strlen(d->name) + 1;
	if (len)
		len--; /* no separator before the first part */
	p = malloc(len + 1);
	if (!p)
		return NULL;
	p[len] = '\0';
	for (const struct fs_dir *d = dir; d && d->parent; d = d->parent) {
		size_t l = strlen(d->name);

		len -= l;
		memcpy(p + len, d->name, l);
		if (len) /* the separator before it */
			p[--len] = '/';
	}
	return p;
}

/* the hierarchy delimiter: the parent's, else the server's (from any mailbox) */
static char modify_delimiter_locked(struct fs *fs, const struct fs_dir *parent)
{
	if (parent && parent->server_name && parent->delimiter)
		return parent->delimiter;
	for (size_t i = 2; i < fs->ndirs; i++)
		if (fs->dirs[i]->visible && fs->dirs[i]->server_name && fs->dirs[i]->delimiter)
			return fs->dirs[i]->delimiter;
	return '/';
}

/* The server name of the mailbox parent/name. */
static int modify_server_name(struct fs *fs, struct fs_dir *parent, const char *name,
			      char **out)
{
	char *path, *full, *decoded, *encoded, delim;
	int r = 0;

	*out = NULL;
	pthread_rwlock_rdlock(&fs->tree_lock);
	path = modify_path_locked(parent);
	delim = modify_delimiter_locked(fs, parent);
	pthread_rwlock_unlock(&fs->tree_lock);
	if (!path)
		return -ENOMEM;
	if (asprintf(&full, "%s%s%s", path, path[0] ? "/" : "", name) < 0) {
		free(path);
		return -ENOMEM;
	}
	free(path);
	decoded = names_mailbox_from_path(full, delim);
	free(full);
	if (!decoded)
		return errno == ENOMEM ? -ENOMEM : -EINVAL;
	encoded = mutf7_encode(decoded, strlen(decoded));
	free(decoded);
	if (!encoded)
		r = errno == ENOMEM ? -ENOMEM : -EINVAL;
	*out = encoded;
	return r;
}

/* --- unlink: rm of a message --- */

struct unlink_job {
	struct msg_ref ref;
	const char *trash;       /* server name of the trash mailbox, or NULL */
};

static int modify_unlink_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct unlink_job *j = arg;
	struct imap_select_info info;
	char set[16];
	int r;

	r = modify_select_ref(fs, conn, &j->ref, &info);
	if (r)
		return r;
	snprintf(set, sizeof(set), "%u", j->ref.msg.uid);
	if (j->trash) {
		if (imap_uid_move(conn->session, j->ref.msg.uid, j->trash, NULL, NULL, &conn->err))
			goto out_imap;
		return 0;
	}
	if (!imap_session_has_cap(conn->session, "UIDPLUS"))
		return -EPERM; /* never a bare EXPUNGE: it would take others' \Deleted too */
	if (imap_uid_store(conn->session, set, IMAP_STORE_ADD, "\\Deleted", &conn->err) ||
	    imap_uid_expunge(conn->session, set, &conn->err))
		goto out_imap;
	return 0;

out_imap:
	log_warnx("removing %s in %s: %s", set, j->ref.server_name, conn->err.reason);
	return fs_errno_from_imap(&conn->err);
}

/* The trash mailbox's server name when rm in dir should move there. */
static char *modify_trash_for(struct fs *fs, const struct msg_ref *ref)
{
	char *name, *enc;

	if (!fs->opts->trash || !fs->opts->trash[0])
		return NULL;
	name = strdup(fs->opts->trash);
	if (!name)
		return NULL;
	if (ref->delimiter)
		for (char *p = name; *p; p++)
			if (*p == '/')
				*p = ref->delimiter;
	enc = mutf7_encode(name, strlen(name));
	free(name);
	if (enc && strcmp(enc, ref->server_name) == 0) { /* rm inside the trash expunges */
		free(enc);
		enc = NULL;
	}
	return enc;
}

static void modify_forget_message(struct fs *fs, struct msg_ref *ref)
{
	struct cache_batch *b;
	int r = cache_batch_begin(fs->cache, ref->mailbox_id, &b);

	if (r == 0) {
		r = cache_batch_expunge(b, ref->msg.uid, ref->msg.uid);
		if (r == 0)
			r = cache_batch_commit(b);
		else
			cache_batch_abort(b);
	}
	if (r)
		log_warnx("cache: removing %u: %s", ref->msg.uid, strerror(-r));
	modify_listing_remove(fs, ref->dir, ref->msg.uid);
}

void modify_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = modify_fs(req);
	struct fs_dir *dir = tree_dir(fs, parent), *child;
	struct unlink_job j = { 0 };
	char *trash = NULL;
	uint32_t uid;
	int r;

	if (fs->opts->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (write_unlink(fs, dir, name) == 0) {
		fuse_reply_err(req, 0);
		return;
	}
	pthread_rwlock_rdlock(&fs->tree_lock);
	child = tree_child_locked(dir, name);
	pthread_rwlock_unlock(&fs->tree_lock);
	if (child) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (!names_message_parse(name, &uid)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	r = modify_ref(fs, dir, uid, &j.ref);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	trash = modify_trash_for(fs, &j.ref);
	j.trash = trash;
	r = modify_call(fs, modify_unlink_job, &j);
	if (r == 0) {
		modify_forget_message(fs, &j.ref);
		if (trash) {
			struct fs_dir *t = modify_dir_by_server_name(fs, trash);

			if (t)
				modify_mark_stale(fs, t);
		}
	}
	free(trash);
	modify_ref_free(&j.ref);
	fuse_reply_err(req, -r);
}

/* --- directories --- */

struct mbox_job {
	const char *name;        /* server name */
	const char *to;          /* RENAME target */
	char delimiter;
	bool check_empty;        /* DELETE: refuse with messages or children */
};

struct children_ctx {
	const char *self;
	bool any;
};

static int modify_children_cb(void *arg, const struct imap_mailbox_info *mb)
{
	struct children_ctx *c = arg;

	if (strcmp(mb->name, c->self) != 0)
		c->any = true;
	return 0;
}

static int modify_create_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct mbox_job *j = arg;

	(void)fs;
	if (imap_create(conn->session, j->name, &conn->err)) {
		log_warnx("CREATE %s: %s", j->name, conn->err.reason);
		return fs_errno_from_imap(&conn->err);
	}
	return 0;
}

/* Nobody may have the mailbox selected while it is deleted or renamed:
 * the other connections let go of it, and so does this one. */
static void modify_let_go(struct fs *fs, struct pool_conn *conn, const char *name)
{
	pool_release_mailbox(fs->pool, conn, name, 2000);
	if (conn->selected && strcmp(conn->selected, name) == 0) {
		free(conn->selected);
		conn->selected = NULL;
		imap_unselect(conn->session, NULL);
	}
}

static int modify_delete_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct mbox_job *j = arg;
	struct imap_status_info st;
	struct children_ctx c = { .self = j->name };

	/* before STATUS too: a session's STATUS of its selected mailbox
	 * answers from its own view, which can still count messages other
	 * sessions just expunged (rm -rf of a mailbox filled a moment before
	 * failed with ENOTEMPTY) */
	modify_let_go(fs, conn, j->name);
	if (j->check_empty) {
		char *pattern;

		if (imap_status(conn->session, j->name, &st, &conn->err) == 0 && st.messages > 0)
			return -ENOTEMPTY;
		if (j->delimiter) {
			if (asprintf(&pattern, "%s%c%%", j->name, j->delimiter) < 0)
				return -ENOMEM;
			if (imap_list(conn->session, "", pattern, modify_children_cb, &c,
				      &conn->err)) {
				free(pattern);
				return fs_errno_from_imap(&conn->err);
			}
			free(pattern);
			if (c.any)
				return -ENOTEMPTY;
		}
	}
	if (imap_delete(conn->session, j->name, &conn->err)) {
		log_warnx("DELETE %s: %s", j->name, conn->err.reason);
		return fs_errno_from_imap(&conn->err);
	}
	return 0;
}

static int modify_rename_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct mbox_job *j = arg;

	modify_let_go(fs, conn, j->name);
	if (conn->selected) { /* names under it change too: select afresh */
		free(conn->selected);
		conn->selected = NULL;
	}
	if (imap_rename(conn->session, j->name, j->to, &conn->err)) {
		log_warnx("RENAME %s %s: %s", j->name, j->to, conn->err.reason);
		return fs_errno_from_imap(&conn->err);
	}
	return 0;
}

void modify_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs *fs = modify_fs(req);
	struct fs_dir *dir = tree_dir(fs, parent), *child = NULL;
	struct fuse_entry_param e;
	struct mbox_job j = { 0 };
	char *server = NULL;
	int r;

	(void)mode;
	if (fs->opts->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (names_message_parse(name, &(uint32_t){ 0 })) {
		fuse_reply_err(req, EINVAL); /* would read as a message */
		return;
	}
	pthread_rwlock_rdlock(&fs->tree_lock);
	child = tree_child_locked(dir, name);
	if (child && !child->visible)
		child = NULL;
	pthread_rwlock_unlock(&fs->tree_lock);
	if (child) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	r = modify_server_name(fs, dir, name, &server);
	if (r == 0) {
		j.name = server;
		r = modify_call(fs, modify_create_job, &j);
	}
	if (r == 0) {
		char delim;

		/* Dovecot 2.3 can leave a mailbox created right after another
		 * was deleted out of every LIST for a while: show it anyway */
		pthread_rwlock_rdlock(&fs->tree_lock);
		delim = modify_delimiter_locked(fs, dir);
		pthread_rwlock_unlock(&fs->tree_lock);
		sync_pin_mailbox(fs, server, delim);
		modify_relist(fs);
		memset(&e, 0, sizeof(e));
		pthread_rwlock_rdlock(&fs->tree_lock);
		child = tree_child_locked(dir, name);
		if (child && child->visible) {
			e.ino = child->ino;
			fs_stat_dir(fs, child, &e.attr);
		} else {
			r = -EIO;
		}
		pthread_rwlock_unlock(&fs->tree_lock);
	}
	free(server);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	e.attr_timeout = e.entry_timeout = fs->opts->refresh ? (double)fs->opts->refresh : 0.5;
	fuse_reply_entry(req, &e);
}

void modify_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = modify_fs(req);
	struct fs_dir *dir = tree_dir(fs, parent), *child = NULL;
	struct mbox_job j = { .check_empty = true };
	char *server = NULL;
	bool children = false, inbox = false;
	int64_t id = 0;
	int r;

	if (fs->opts->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	pthread_rwlock_rdlock(&fs->tree_lock);
	child = tree_child_locked(dir, name);
	if (child && !child->visible)
		child = NULL;
	if (child) {
		for (struct fs_dir *c = child->first_child; c; c = c->next_sibling)
			children |= c->visible;
		inbox = child->server_name && strcasecmp(child->server_name, "INBOX") == 0;
		id = child->selectable ? child->mailbox_id : 0;
		j.delimiter = modify_delimiter_locked(fs, child);
		if (child->server_name)
			server = strdup(child->server_name);
	}
	pthread_rwlock_unlock(&fs->tree_lock);
	if (!child) {
		uint32_t uid;

		fuse_reply_err(req, names_message_parse(name, &uid) ? ENOTDIR : ENOENT);
		return;
	}
	if (inbox) {
		free(server);
		fuse_reply_err(req, EPERM);
		return;
	}
	if (children || write_count(fs, child) > 0) {
		free(server);
		fuse_reply_err(req, ENOTEMPTY);
		return;
	}
	r = server ? 0 : modify_server_name(fs, dir, name, &server);
	if (r == 0) {
		j.name = server;
		r = modify_call(fs, modify_delete_job, &j);
	}
	if (r == 0) {
		if (id)
			cache_mailbox_delete(fs->cache, id);
		sync_unpin_mailbox(fs, server);
		modify_relist(fs);
	}
	free(server);
	fuse_reply_err(req, -r);
}

static void modify_rename_dir(fuse_req_t req, struct fs_dir *dir, struct fs_dir *child,
			      struct fs_dir *newdir, const char *newname)
{
	struct fs *fs = modify_fs(req);
	struct mbox_job j = { 0 };
	char *from = NULL, *to = NULL, *path = NULL;
	int64_t id = 0;
	int r;

	(void)dir;
	pthread_rwlock_rdlock(&fs->tree_lock);
	if (child->server_name)
		from = strdup(child->server_name);
	id = child->selectable ? child->mailbox_id : 0;
	pthread_rwlock_unlock(&fs->tree_lock);
	if (!from || strcasecmp(from, "INBOX") == 0) {
		free(from);
		fuse_reply_err(req, EPERM);
		return;
	}
	r = modify_server_name(fs, newdir, newname, &to);
	if (r == 0) {
		j.name = from;
		j.to = to;
		r = modify_call(fs, modify_rename_job, &j);
	}
	if (r == 0)
		sync_unpin_mailbox(fs, from);
	if (r == 0) {
		/* move the directory itself: the kernel keeps the renamed entry
		 * with the same inode, so the node must stay valid under its
		 * new name (children move along) */
		char *nm = strdup(newname), *sn = strdup(to);

		pthread_rwlock_wrlock(&fs->tree_lock);
		if (nm && sn) {
			struct fs_dir **pp = &child->parent->first_child;

			while (*pp && *pp != child)
				pp = &(*pp)->next_sibling;
			if (*pp)
				*pp = child->next_sibling;
			free(child->name);
			child->name = nm;
			free(child->server_name);
			child->server_name = sn;
			child->parent = newdir;
			child->next_sibling = newdir->first_child;
			newdir->first_child = child;
			nm = sn = NULL;
			tree_recount_locked(fs);
		}
		pthread_rwlock_unlock(&fs->tree_lock);
		free(nm);
		free(sn);
		/* keep the cached messages: the mailbox keeps its UIDVALIDITY */
		pthread_rwlock_rdlock(&fs->tree_lock);
		path = modify_path_locked(newdir);
		pthread_rwlock_unlock(&fs->tree_lock);
		if (id && path) {
			char *full = NULL;

			if (asprintf(&full, "%s%s%s", path, path[0] ? "/" : "", newname) >= 0) {
				if (cache_mailbox_rename(fs->cache, id, full, to) != 0)
					log_debug("cache: rename of %s kept apart", from);
				free(full);
			}
		}
		modify_relist(fs);
		pthread_rwlock_rdlock(&fs->tree_lock);
		struct fs_dir *moved = tree_child_locked(newdir, newname);
		pthread_rwlock_unlock(&fs->tree_lock);
		if (moved)
			modify_mark_stale(fs, moved);
	}
	free(path);
	free(from);
	free(to);
	fuse_reply_err(req, -r);
}

struct move_job {
	struct msg_ref ref;
	const char *dest;
};

static int modify_move_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct move_job *j = arg;
	struct imap_select_info info;
	int r;

	r = modify_select_ref(fs, conn, &j->ref, &info);
	if (r)
		return r;
	if (imap_uid_move(conn->session, j->ref.msg.uid, j->dest, NULL, NULL, &conn->err)) {
		log_warnx("moving %u from %s to %s: %s", j->ref.msg.uid, j->ref.server_name,
			  j->dest, conn->err.reason);
		if (conn->err.kind == IMAP_ERR_LOCAL)
			return -EPERM; /* neither MOVE nor UIDPLUS */
		return fs_errno_from_imap(&conn->err);
	}
	return 0;
}

void modify_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		   const char *newname, unsigned int flags)
{
	struct fs *fs = modify_fs(req);
	struct fs_dir *dir = tree_dir(fs, parent), *newdir = tree_dir(fs, newparent), *child;
	struct move_job j = { 0 };
	char *dest = NULL;
	uint32_t uid;
	int r;

	if (fs->opts->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!dir || !newdir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (flags & ~(unsigned)RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	pthread_rwlock_rdlock(&fs->tree_lock);
	child = tree_child_locked(dir, name);
	if (child && !child->visible)
		child = NULL;
	pthread_rwlock_unlock(&fs->tree_lock);
	if (child) {
		modify_rename_dir(req, dir, child, newdir, newname);
		return;
	}
	if (!names_message_parse(name, &uid)) {
		struct fuse_entry_param e;

		/* a new file keeps its name until the APPEND */
		fuse_reply_err(req, write_lookup(fs, dir, name, &e) == 0 ? EPERM : ENOENT);
		return;
	}
	r = modify_ref(fs, dir, uid, &j.ref);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	pthread_rwlock_rdlock(&fs->tree_lock);
	if (newdir != dir && newdir->selectable && newdir->server_name)
		dest = strdup(newdir->server_name);
	pthread_rwlock_unlock(&fs->tree_lock);
	if (!dest) {
		/* within its mailbox a message keeps its name: the UID */
		modify_ref_free(&j.ref);
		fuse_reply_err(req, EPERM);
		return;
	}
	j.dest = dest;
	r = modify_call(fs, modify_move_job, &j);
	if (r == 0) {
		modify_forget_message(fs, &j.ref);
		modify_mark_stale(fs, newdir);
		notify_inval_entry(fs->notify, newdir->ino, newname);
	}
	free(dest);
	modify_ref_free(&j.ref);
	fuse_reply_err(req, -r);
}
