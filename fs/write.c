/*
 * fs/write: new messages. A file created in a mailbox directory is kept
 * here while it is written (in memory up to WRITE_MEM_MAX, then in an
 * unlinked 0600 temporary file beside the cache), and APPENDed when the
 * handle that created it is flushed (close(2) returns FLUSH's result, so
 * close() fails when the server did not take it). Line ends are sent as
 * CRLF; flags and a modification time set before close go with the
 * APPEND. Afterwards the message is a <UID>.eml file (APPENDUID), entered
 * into the cache and the in-memory listing at once; the temporary name is
 * gone. A file closed empty is dropped.
 *
 * When the APPEND fails, the bytes go to the cache's outbox and the file
 * stays visible (readable) under its name; later activity (a directory
 * being opened) retries the outbox on a pool worker. After a failure that
 * may have reached the server (a lost connection), the message is first
 * looked for by its Message-ID among the mailbox's newest messages, so it
 * is appended exactly once. Unlinking the file abandons it.
 *
 * A file whose creating process is killed by a signal before it closes it
 * (^C on cp) is likely cut short: it is not APPENDed but kept in the
 * outbox held, shown and readable under its name, never retried, until
 * the user removes it.
 *
 * New files get inodes with WRITE_INO_BIT set. The registry below is
 * protected by write_lock; a file being sent (SENDING) or retried (busy)
 * is owned by that thread until it is done.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "flags_i.h"
#include "imapfs/log.h"
#include "names_i.h"
#include "outmsg_i.h"

#define WRITE_MEM_MAX (1024 * 1024)          /* bytes kept in memory per file */
#define WRITE_SIZE_MAX (256ull * 1024 * 1024) /* the largest message */
#define WRITE_HEAD (16 * 1024)               /* looked at for a Message-ID */
#define WRITE_SEARCH_BACK 200                /* newest messages looked at */
#define WRITE_RETRY_MS 1000                  /* between outbox retries */
#define WRITE_REFUSED_MS 30000               /* ... after the server refused one */
#define XATTR_FLAGS "user.imap.flags"

enum wstate {
	W_OPEN,    /* being written */
	W_SENDING, /* the APPEND runs */
	W_OUTBOX,  /* kept after a failed APPEND, or held (below) */
};

struct wfile {
	struct wfile *next;
	uint64_t ino;
	struct fs_dir *dir;
	char *name;
	enum wstate state;
	/* W_OPEN: the bytes */
	char *mem;
	size_t mem_cap;
	int fd;                  /* temporary file, or -1 */
	uint64_t size;
	char *flags;             /* canonical, "" for none */
	int64_t internaldate;    /* -1: the time of the APPEND */
	int64_t created;
	/* W_OUTBOX */
	int64_t outbox_id;       /* 0: the cache refused it; mem holds the bytes */
	char *message_id;
	bool ambiguous;          /* a failed attempt may have reached the server */
	uint32_t known_max;      /* the highest UID known before the first attempt */
	bool busy;               /* a retry holds it */
	bool abandoned;          /* unlinked while busy */
	bool hidden;             /* closed empty: gone by name, open by inode */
	int killed;              /* the signal that killed its creator before
				  * it closed the file, or 0 */
	bool held;               /* W_OUTBOX: from a killed writer, likely cut
				  * short: kept and shown, never retried */
	pid_t creator;           /* the process (thread group) that created it */
	pid_t creator_tid;       /* and the thread, as FUSE gave it */
};

static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
static struct wfile *write_files;   /* write_lock */
static uint64_t write_seq;          /* write_lock */
static bool write_outbox_loaded;    /* write_lock */
static bool write_retrying;         /* write_lock */
static int64_t write_retry_at_ms;   /* write_lock: the last round ended */
static int64_t write_retry_wait_ms; /* write_lock: before the next round */

static struct fs *write_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* The process (thread group) of the thread behind a request: FUSE gives
 * the thread's id. 0 if unknown. */
static pid_t write_req_process(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	char path[64], line[128];
	pid_t tgid = 0;
	FILE *f;
	int fd;

	if (!ctx || ctx->pid <= 0)
		return 0;
	/* pidfd_open takes only a thread group's leader: then the thread is
	 * its process (cp, shells, most writers), known in two system calls
	 * instead of opening and parsing /proc/PID/status */
	fd = (int)syscall(SYS_pidfd_open, ctx->pid, 0);
	if (fd >= 0) {
		close(fd);
		return ctx->pid;
	}
	snprintf(path, sizeof(path), "/proc/%d/status", (int)ctx->pid);
	f = fopen(path, "re");
	if (!f)
		return ctx->pid;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "Tgid:", 5) == 0) {
			tgid = (pid_t)atoi(line + 5);
			break;
		}
	fclose(f);
	return tgid > 0 ? tgid : ctx->pid;
}

/* The signal killing thread tid while it closes its files on the way out
 * (PF_EXITING in /proc/TID/stat, and an exit code that is a signal, as
 * waitpid would see it); 0 for a live thread or a plain exit. */
static int write_killed_by(pid_t tid)
{
	char path[64], buf[1024];
	unsigned long flags = 0;
	long long exit_code = 0;
	const char *p;
	ssize_t n;
	int fd, field;

	if (tid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
	if (!p)
		return 0;
	p++;
	for (field = 3;; field++) {
		while (*p == ' ')
			p++;
		if (!*p || *p == '\n')
			return 0; /* a kernel without field 52 (before 3.5) */
		if (field == 9)
			flags = strtoul(p, NULL, 10);
		if (field == 52) {
			exit_code = strtoll(p, NULL, 10);
			break;
		}
		while (*p && *p != ' ')
			p++;
	}
	if (!(flags & 0x4)) /* PF_EXITING */
		return 0;
	return (int)(exit_code & 0x7f);
}

static void write_file_free(struct wfile *wf)
{
	if (!wf)
		return;
	if (wf->fd >= 0)
		close(wf->fd);
	free(wf->mem);
	free(wf->name);
	free(wf->flags);
	free(wf->message_id);
	free(wf);
}

/* write_lock held */
static struct wfile *write_find_ino_locked(fuse_ino_t ino)
{
	for (struct wfile *wf = write_files; wf; wf = wf->next)
		if (wf->ino == ino && !wf->abandoned)
			return wf;
	return NULL;
}

static struct wfile *write_find_name_locked(const struct fs_dir *dir, const char *name)
{
	for (struct wfile *wf = write_files; wf; wf = wf->next)
		if (wf->dir == dir && !wf->abandoned && !wf->hidden && strcmp(wf->name, name) == 0)
			return wf;
	return NULL;
}

static void write_unlink_locked(struct wfile *wf)
{
	for (struct wfile **p = &write_files; *p; p = &(*p)->next) {
		if (*p == wf) {
			*p = wf->next;
			return;
		}
	}
}

static void write_stat_locked(struct fs *fs, const struct wfile *wf, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = wf->ino;
	st->st_mode = S_IFREG | 0644;
	st->st_nlink = 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_size = (off_t)wf->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((wf->size + 511) / 512);
	st->st_atime = st->st_mtime = st->st_ctime =
		(time_t)(wf->internaldate >= 0 ? wf->internaldate : wf->created);
}

int write_getattr(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	struct wfile *wf;

	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	if (wf)
		write_stat_locked(fs, wf, st);
	pthread_mutex_unlock(&write_lock);
	return wf ? 0 : -ENOENT;
}

int write_lookup(struct fs *fs, struct fs_dir *dir, const char *name, struct fuse_entry_param *e)
{
	struct wfile *wf;

	pthread_mutex_lock(&write_lock);
	wf = write_find_name_locked(dir, name);
	if (wf) {
		memset(e, 0, sizeof(*e));
		e->ino = wf->ino;
		write_stat_locked(fs, wf, &e->attr);
	}
	pthread_mutex_unlock(&write_lock);
	return wf ? 0 : -ENOENT;
}

size_t write_count(struct fs *fs, struct fs_dir *dir)
{
	size_t n = 0;

	(void)fs;
	pthread_mutex_lock(&write_lock);
	for (struct wfile *wf = write_files; wf; wf = wf->next)
		n += wf->dir == dir && !wf->abandoned && !wf->hidden;
	pthread_mutex_unlock(&write_lock);
	return n;
}

/* --- message bytes --- */

/* The bytes of wf (write_lock held, state W_OPEN): malloc'd copy. */
static int write_take_bytes_locked(struct wfile *wf, char **out, size_t *len_out)
{
	char *buf;

	if (wf->fd < 0) {
		*out = wf->mem;
		*len_out = wf->size;
		wf->mem = NULL;
		wf->mem_cap = 0;
		return 0;
	}
	buf = malloc(wf->size ? wf->size : 1);
	if (!buf)
		return -ENOMEM;
	for (size_t got = 0; got < wf->size;) {
		ssize_t n = pread(wf->fd, buf + got, wf->size - got, (off_t)got);

		if (n <= 0) {
			free(buf);
			return n < 0 ? -errno : -EIO;
		}
		got += (size_t)n;
	}
	close(wf->fd);
	wf->fd = -1;
	*out = buf;
	*len_out = wf->size;
	return 0;
}

/* --- the APPEND --- */

struct append_job {
	struct fs_dir *dir;
	char *server_name;
	int64_t mailbox_id;
	const char *flags;
	int64_t internaldate;
	const char *data;        /* CRLF */
	size_t len;
	const char *message_id;
	bool ambiguous;
	uint32_t known_max;
	uint32_t uid, uidvalidity;   /* the result */
};

struct find_ctx {
	const char *needle;
	char *head;
	size_t len;
	uint32_t found;
};

static int write_find_begin(void *arg, uint32_t uid, uint64_t offset, uint64_t size)
{
	struct find_ctx *c = arg;

	(void)uid;
	(void)offset;
	(void)size;
	c->len = 0;
	return 0;
}

static int write_find_data(void *arg, uint32_t uid, const void *buf, size_t len)
{
	struct find_ctx *c = arg;

	(void)uid;
	if (len > WRITE_HEAD - c->len)
		len = WRITE_HEAD - c->len;
	memcpy(c->head + c->len, buf, len);
	c->len += len;
	return 0;
}

static int write_find_end(void *arg, uint32_t uid)
{
	struct find_ctx *c = arg;

	if (memmem(c->head, c->len, c->needle, strlen(c->needle)))
		c->found = uid;
	return 0;
}

static const struct imap_body_sink write_find_sink = {
	.begin = write_find_begin,
	.data = write_find_data,
	.end = write_find_end,
};

/* Did an earlier attempt reach the server? Looks for the Message-ID in the
 * heads of the messages above known_max (at most the newest few hundred). */
static int write_find_sent(struct fs *fs, struct pool_conn *conn, struct append_job *j)
{
	struct imap_select_info info;
	struct find_ctx c = { .needle = j->message_id };
	char set[32];
	uint32_t lo = j->known_max + 1;
	int r;

	r = pool_conn_examine(fs, conn, j->server_name, true, &info);
	if (r)
		return r;
	if (info.exists == 0)
		return 0;
	if (info.uidnext > WRITE_SEARCH_BACK && lo < info.uidnext - WRITE_SEARCH_BACK)
		lo = info.uidnext - WRITE_SEARCH_BACK;
	c.head = malloc(WRITE_HEAD);
	if (!c.head)
		return -ENOMEM;
	snprintf(set, sizeof(set), "%u:*", lo);
	if (imap_uid_fetch_bodies(conn->session, set, 0, WRITE_HEAD, &write_find_sink, &c,
				  &conn->err)) {
		free(c.head);
		return fs_errno_from_imap(&conn->err);
	}
	free(c.head);
	if (c.found) {
		log_info("%s: message %s was appended before (UID %u)", j->server_name,
			 j->message_id, c.found);
		j->uid = c.found;
		j->uidvalidity = info.uidvalidity;
		return 1;
	}
	return 0;
}

static int write_append_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct append_job *j = arg;
	int r;

	if (j->ambiguous && j->message_id && j->message_id[0]) {
		r = write_find_sent(fs, conn, j);
		if (r < 0)
			return r;
		if (r > 0)
			return 0;
	}
	if (imap_append(conn->session, j->server_name, j->flags && j->flags[0] ? j->flags : NULL,
			j->internaldate, j->data, j->len, &j->uidvalidity, &j->uid, &conn->err)) {
		log_warnx("APPEND to %s: %s", j->server_name, conn->err.reason);
		if (imap_session_is_broken(conn->session))
			j->ambiguous = true;
		r = fs_errno_from_imap(&conn->err);
		if (r == -ETIMEDOUT || r == -ENOENT)
			r = r == -ENOENT ? -ENOENT : -EIO;
		return r;
	}
	return 0;
}

/* After a good APPEND: the cache, the listing, the kernel. */
static void write_appended(struct fs *fs, struct append_job *j, const char *name)
{
	struct cache_mailbox mb;
	struct cache_batch *b;
	struct fs_msg m = { .uid = j->uid, .size = j->len, .internaldate = j->internaldate };
	struct cache_message cm = {
		.uid = j->uid,
		.size = j->len,
		.internaldate = j->internaldate,
		.flags = j->flags ? j->flags : "",
	};
	int r;

	notify_inval_entry(fs->notify, j->dir->ino, name);
	if (!j->uid || !j->mailbox_id)
		goto out_stale;
	/* the listing in memory knows the mailbox's UIDVALIDITY, or an earlier
	 * APPEND into a mailbox not listed yet (cp into a new one); the cache
	 * is asked only when neither does */
	pthread_mutex_lock(&j->dir->lock);
	mb.uidvalidity = j->dir->loaded ? j->dir->uidvalidity : j->dir->appended_uidvalidity;
	if (!j->dir->loaded && mb.uidvalidity != j->uidvalidity)
		mb.uidvalidity = 0; /* remembered from before a change: ask the cache */
	pthread_mutex_unlock(&j->dir->lock);
	if (mb.uidvalidity == 0 && cache_mailbox_get(fs->cache, j->mailbox_id, &mb) != 0)
		goto out_stale;
	if (mb.uidvalidity == 0) {
		r = cache_mailbox_set_state(fs->cache, j->mailbox_id, j->uidvalidity, 0, 0, 0);
		if (r)
			goto out_stale;
	} else if (mb.uidvalidity != j->uidvalidity) {
		goto out_stale;
	}
	r = cache_batch_begin(fs->cache, j->mailbox_id, &b);
	if (r)
		goto out_stale;
	r = cache_batch_put(b, &cm);
	if (r == 0)
		r = cache_batch_commit(b);
	else
		cache_batch_abort(b);
	if (r)
		goto out_stale;
	pthread_mutex_lock(&j->dir->lock);
	if (j->dir->loaded && j->dir->uidvalidity == 0)
		j->dir->uidvalidity = j->uidvalidity;
	if (!j->dir->loaded)
		j->dir->appended_uidvalidity = j->uidvalidity;
	pthread_mutex_unlock(&j->dir->lock);
	modify_listing_insert(fs, j->dir, &m);
	return;

out_stale:
	modify_mark_stale(fs, j->dir);
}

static int write_job_init(struct fs *fs, struct fs_dir *dir, struct append_job *j)
{
	memset(j, 0, sizeof(*j));
	j->dir = dir;
	pthread_rwlock_rdlock(&fs->tree_lock);
	if (dir->selectable && dir->server_name) {
		j->server_name = strdup(dir->server_name);
		j->mailbox_id = dir->mailbox_id;
	}
	pthread_rwlock_unlock(&fs->tree_lock);
	if (!j->server_name)
		return -ENOENT;
	/* the highest UID in the listing: a COUNT in the cache would visit
	 * every message of the mailbox for each file copied in */
	pthread_mutex_lock(&dir->lock);
	j->known_max = dir->loaded && dir->nmsgs ? dir->msgs[dir->nmsgs - 1].uid : 0;
	pthread_mutex_unlock(&dir->lock);
	return 0;
}

/* Keep a message that did not reach the server (write_lock not held; wf
 * is owned by the caller in W_SENDING). */
static void write_keep(struct fs *fs, struct wfile *wf, char *raw, size_t len,
		       const struct append_job *j, bool held)
{
	struct cache_outbox_entry e = {
		.mailbox_id = j->mailbox_id,
		.name = wf->name,
		.flags = wf->flags ? wf->flags : "",
		.internaldate = wf->internaldate,
		.size = len,
		.message_id = wf->message_id ? wf->message_id : "",
		.created_at = wf->created,
		.held = held,
	};
	int64_t id = 0;
	int r = cache_outbox_put(fs->cache, &e, raw, len, &id);

	pthread_mutex_lock(&write_lock);
	if (r == 0) {
		wf->outbox_id = id;
		free(raw);
	} else {
		log_warnx("outbox: %s: %s; kept in memory only", wf->name, strerror(-r));
		wf->outbox_id = 0;
		free(wf->mem);
		wf->mem = raw;
		wf->mem_cap = len;
	}
	wf->size = len;
	wf->ambiguous = j->ambiguous;
	wf->known_max = j->known_max;
	wf->held = held;
	wf->state = W_OUTBOX;
	pthread_mutex_unlock(&write_lock);
}

/* The flush of the creating handle: APPEND now. The caller set wf's state
 * to W_SENDING, which makes wf ours. */
static int write_send(struct fs *fs, struct wfile *wf)
{
	struct append_job j;
	char *raw = NULL, *crlf = NULL;
	size_t len = 0, clen = 0;
	int r;

	pthread_mutex_lock(&write_lock);
	if (wf->size == 0) {
		/* nothing written: no message. Still open by inode (touch
		 * closes a dup of its descriptor, then sets the times) until
		 * release; gone by name at once. */
		wf->state = W_OPEN;
		if (!wf->hidden) {
			wf->hidden = true;
			notify_inval_entry(fs->notify, wf->dir->ino, wf->name);
		}
		pthread_mutex_unlock(&write_lock);
		return 0;
	}
	r = write_take_bytes_locked(wf, &raw, &len);
	if (r)
		wf->state = W_OPEN;
	pthread_mutex_unlock(&write_lock);
	if (r)
		return r;

	r = write_job_init(fs, wf->dir, &j);
	if (r == 0) {
		crlf = outmsg_crlf(raw, len, &clen);
		free(wf->message_id);
		wf->message_id = outmsg_message_id(raw, len);
		if (!crlf || !wf->message_id)
			r = -ENOMEM;
	}
	if (r == 0) {
		j.flags = wf->flags;
		j.internaldate = wf->internaldate >= 0 ? wf->internaldate : (int64_t)time(NULL);
		j.data = crlf;
		j.len = clen;
		j.message_id = wf->message_id;
		r = modify_call(fs, write_append_job, &j);
	}
	free(crlf);
	if (r == 0) {
		write_appended(fs, &j, wf->name);
		pthread_mutex_lock(&write_lock);
		write_unlink_locked(wf);
		pthread_mutex_unlock(&write_lock);
		write_file_free(wf);
		free(raw);
	} else {
		log_warnx("%s: APPEND failed (%s); kept in the outbox", wf->name, strerror(-r));
		write_keep(fs, wf, raw, len, &j, false);
		if (r != -EDQUOT && r != -ENOENT && r != -ENOMEM)
			r = -EIO;
	}
	free(j.server_name);
	return r;
}

/* The flush of a file whose creator is being killed before it closed it
 * (caller set W_SENDING): its bytes are likely cut short, so they go to
 * the outbox held, shown under their name and never appended by
 * themselves, rather than to the server as a broken message. The user
 * removes the file or copies it again. */
static void write_hold(struct fs *fs, struct wfile *wf)
{
	struct append_job j = { .dir = wf->dir };
	char *raw = NULL;
	size_t len = 0;
	int r;

	pthread_mutex_lock(&write_lock);
	r = write_take_bytes_locked(wf, &raw, &len);
	if (r)
		wf->state = W_OPEN;
	pthread_mutex_unlock(&write_lock);
	if (r) {
		log_warnx("%s: cannot keep it (%s)", wf->name, strerror(-r));
		return;
	}
	pthread_rwlock_rdlock(&fs->tree_lock);
	j.mailbox_id = wf->dir->mailbox_id;
	pthread_rwlock_unlock(&fs->tree_lock);
	free(wf->message_id);
	wf->message_id = outmsg_message_id(raw, len);
	log_warnx("%s: its writer was killed (signal %d) before closing it; %zu bytes kept "
		  "as a file, not appended (remove it, or copy it again)",
		  wf->name, wf->killed, len);
	write_keep(fs, wf, raw, len, &j, true);
}

/* --- the outbox --- */

struct load_ctx {
	struct fs *fs;
	size_t missing;          /* entries whose mailbox is not in the tree yet */
};

static int write_load_cb(void *arg, const struct cache_outbox_entry *e)
{
	struct load_ctx *ctx = arg;
	struct fs *fs = ctx->fs;
	struct fs_dir *dir = NULL;
	struct wfile *wf;

	for (struct wfile *w = write_files; w; w = w->next)
		if (w->outbox_id == e->id)
			return 0;
	pthread_rwlock_rdlock(&fs->tree_lock);
	for (size_t i = 1; i < fs->ndirs && !dir; i++)
		if (fs->dirs[i]->selectable && fs->dirs[i]->mailbox_id == e->mailbox_id)
			dir = fs->dirs[i];
	pthread_rwlock_unlock(&fs->tree_lock);
	if (!dir) {
		ctx->missing++;
		return 0;
	}
	wf = calloc(1, sizeof(*wf));
	if (!wf)
		return 0;
	wf->fd = -1;
	wf->ino = WRITE_INO_BIT | ++write_seq;
	wf->dir = dir;
	wf->name = strdup(e->name);
	wf->flags = strdup(e->flags ? e->flags : "");
	wf->message_id = strdup(e->message_id ? e->message_id : "");
	wf->internaldate = e->internaldate;
	wf->created = e->created_at;
	wf->size = e->size;
	wf->outbox_id = e->id;
	wf->held = e->held;
	wf->state = W_OUTBOX;
	wf->ambiguous = true; /* nobody knows how the last attempt ended */
	if (!wf->name || !wf->flags || !wf->message_id) {
		write_file_free(wf);
		return 0;
	}
	wf->next = write_files;
	write_files = wf;
	return 0;
}

/* One outbox entry; on the worker. Returns the attempt's result. */
static int write_retry_one(struct fs *fs, struct pool_conn *conn, struct wfile *wf)
{
	struct append_job j;
	char *raw = NULL, *crlf = NULL;
	size_t len = 0, clen = 0;
	int r;

	r = write_job_init(fs, wf->dir, &j);
	if (r)
		return r;
	j.known_max = wf->known_max ? wf->known_max : j.known_max;
	if (wf->known_max == 0 && wf->ambiguous)
		j.known_max = 0;
	if (wf->outbox_id) {
		r = cache_outbox_get_data(fs->cache, wf->outbox_id, (void **)&raw, &len);
	} else {
		raw = malloc(wf->size ? wf->size : 1);
		len = wf->size;
		if (raw)
			memcpy(raw, wf->mem, len);
		else
			r = -ENOMEM;
	}
	if (r == 0) {
		crlf = outmsg_crlf(raw, len, &clen);
		if (!crlf)
			r = -ENOMEM;
	}
	if (r == 0) {
		j.flags = wf->flags;
		j.internaldate = wf->internaldate >= 0 ? wf->internaldate : (int64_t)time(NULL);
		j.data = crlf;
		j.len = clen;
		j.message_id = wf->message_id;
		j.ambiguous = wf->ambiguous;
		r = write_append_job(fs, conn, &j);
		wf->ambiguous = j.ambiguous;
	}
	if (r == 0) {
		log_info("%s: appended from the outbox (UID %u)", wf->name, j.uid);
		if (wf->outbox_id)
			cache_outbox_delete(fs->cache, wf->outbox_id);
		write_appended(fs, &j, wf->name);
	}
	free(crlf);
	free(raw);
	free(j.server_name);
	return r;
}

static int write_retry_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	int r = 0;

	(void)arg;
	for (;;) {
		struct wfile *wf = NULL;

		pthread_mutex_lock(&write_lock);
		for (struct wfile *w = write_files; w && !wf; w = w->next)
			if (w->state == W_OUTBOX && !w->held && !w->busy && !w->abandoned)
				wf = w;
		if (wf)
			wf->busy = true;
		pthread_mutex_unlock(&write_lock);
		if (!wf)
			break;
		r = write_retry_one(fs, conn, wf);
		pthread_mutex_lock(&write_lock);
		wf->busy = false;
		if (r == 0 || wf->abandoned) {
			if (r != 0 && wf->outbox_id)
				cache_outbox_delete(fs->cache, wf->outbox_id);
			write_unlink_locked(wf);
			write_file_free(wf);
			wf = NULL;
		}
		pthread_mutex_unlock(&write_lock);
		if (r && (imap_session_is_broken(conn->session) || r == -EIO))
			break; /* the server is away: later */
		if (r && wf) {
			/* refused (quota, ...): leave it for the next round; stop this one */
			break;
		}
	}
	return r;
}

static void write_retry_done(struct fs *fs, void *arg, int result)
{
	(void)fs;
	(void)arg;
	pthread_mutex_lock(&write_lock);
	write_retrying = false;
	write_retry_at_ms = fs_now_ms();
	/* the server away: soon again (connecting backs off by itself); a
	 * refusal (quota, ...) will not go away at once */
	write_retry_wait_ms = result == 0 || result == -EIO || result == -ETIMEDOUT ?
				      WRITE_RETRY_MS : WRITE_REFUSED_MS;
	pthread_mutex_unlock(&write_lock);
}

/* Load the outbox of an earlier run once; retry it now and then. */
static void write_kick(struct fs *fs)
{
	bool any = false, submit = false, listed;

	pthread_mutex_lock(&fs->list_lock);
	listed = fs->listed_at_ms != 0;
	pthread_mutex_unlock(&fs->list_lock);
	pthread_mutex_lock(&write_lock);
	if (!write_outbox_loaded && listed) {
		struct load_ctx ctx = { .fs = fs };

		/* again next time while some entry's mailbox is not known yet */
		if (cache_outbox_list(fs->cache, 0, write_load_cb, &ctx) == 0 && !ctx.missing)
			write_outbox_loaded = true;
	}
	for (struct wfile *wf = write_files; wf && !any; wf = wf->next)
		any = wf->state == W_OUTBOX && !wf->held && !wf->busy && !wf->abandoned;
	if (any && !write_retrying &&
	    fs_now_ms() - write_retry_at_ms >=
		    (write_retry_wait_ms ? write_retry_wait_ms : WRITE_RETRY_MS)) {
		write_retrying = true;
		submit = true;
	}
	pthread_mutex_unlock(&write_lock);
	if (submit && pool_submit(fs->pool, true, write_retry_job, write_retry_done, NULL) != 0) {
		pthread_mutex_lock(&write_lock);
		write_retrying = false;
		pthread_mutex_unlock(&write_lock);
	}
}

int write_list(struct fs *fs, struct fs_dir *dir, char ***names_out, struct stat **st_out,
	       size_t *n_out)
{
	char **names = NULL;
	struct stat *st = NULL;
	size_t n = 0, k = 0;
	int r = 0;

	write_kick(fs);
	*names_out = NULL;
	*st_out = NULL;
	*n_out = 0;
	pthread_mutex_lock(&write_lock);
	for (struct wfile *wf = write_files; wf; wf = wf->next)
		n += wf->dir == dir && !wf->abandoned && !wf->hidden;
	if (n) {
		names = calloc(n, sizeof(*names));
		st = calloc(n, sizeof(*st));
		if (!names || !st) {
			r = -ENOMEM;
			goto out_unlock;
		}
		for (struct wfile *wf = write_files; wf && k < n; wf = wf->next) {
			if (wf->dir != dir || wf->abandoned || wf->hidden)
				continue;
			names[k] = strdup(wf->name);
			if (!names[k]) {
				r = -ENOMEM;
				goto out_unlock;
			}
			write_stat_locked(fs, wf, &st[k]);
			k++;
		}
	}
out_unlock:
	pthread_mutex_unlock(&write_lock);
	if (r) {
		for (size_t i = 0; i < k; i++)
			free(names[i]);
		free(names);
		free(st);
		return r;
	}
	*names_out = names;
	*st_out = st;
	*n_out = k;
	return 0;
}

int write_unlink(struct fs *fs, struct fs_dir *dir, const char *name)
{
	struct wfile *wf;
	int64_t outbox_id = 0;

	pthread_mutex_lock(&write_lock);
	wf = write_find_name_locked(dir, name);
	if (!wf) {
		pthread_mutex_unlock(&write_lock);
		return -ENOENT;
	}
	if (wf->state == W_SENDING) {
		pthread_mutex_unlock(&write_lock);
		return -EBUSY;
	}
	if (wf->busy) { /* the retry finishes it */
		wf->abandoned = true;
		pthread_mutex_unlock(&write_lock);
		return 0;
	}
	if (wf->state == W_OUTBOX)
		outbox_id = wf->outbox_id;
	write_unlink_locked(wf);
	pthread_mutex_unlock(&write_lock);
	if (outbox_id)
		cache_outbox_delete(fs->cache, outbox_id);
	log_info("%s: abandoned, never appended", wf->name);
	write_file_free(wf);
	return 0;
}

/* --- FUSE requests on new files --- */

void write_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi)
{
	struct fs *fs = write_fs(req);
	struct fs_dir *dir = tree_dir(fs, parent), *child = NULL;
	struct fuse_entry_param e;
	struct wfile *wf;
	bool mailbox = false;
	uint32_t uid;

	if (fs->opts->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!S_ISREG(mode) && (mode & S_IFMT) != 0) {
		fuse_reply_err(req, EPERM);
		return;
	}
	pthread_rwlock_rdlock(&fs->tree_lock);
	mailbox = dir->selectable && dir->server_name && dir->mailbox_id;
	child = tree_child_locked(dir, name);
	if (child && !child->visible)
		child = NULL;
	pthread_rwlock_unlock(&fs->tree_lock);
	if (child) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	if (!mailbox) {
		fuse_reply_err(req, EPERM); /* only mailboxes hold messages */
		return;
	}
	if (names_message_parse(name, &uid)) {
		pthread_mutex_lock(&dir->lock);
		bool exists = dir->loaded && sync_find_locked(dir, uid) >= 0;
		pthread_mutex_unlock(&dir->lock);
		if (exists) {
			fuse_reply_err(req, EPERM); /* messages are immutable */
			return;
		}
	}
	wf = calloc(1, sizeof(*wf));
	if (!wf || !(wf->name = strdup(name)) || !(wf->flags = strdup(""))) {
		write_file_free(wf);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	wf->fd = -1;
	wf->dir = dir;
	wf->internaldate = -1;
	wf->created = (int64_t)time(NULL);
	wf->state = W_OPEN;
	wf->creator = write_req_process(req);
	wf->creator_tid = fuse_req_ctx(req) ? fuse_req_ctx(req)->pid : 0;
	memset(&e, 0, sizeof(e));
	pthread_mutex_lock(&write_lock);
	if (write_find_name_locked(dir, name)) {
		pthread_mutex_unlock(&write_lock);
		write_file_free(wf);
		fuse_reply_err(req, EEXIST);
		return;
	}
	wf->ino = WRITE_INO_BIT | ++write_seq;
	wf->next = write_files;
	write_files = wf;
	e.ino = wf->ino;
	write_stat_locked(fs, wf, &e.attr);
	/* what the kernel is told here stays true while the creator writes
	 * (it keeps the size itself): its fstat after open needs no GETATTR.
	 * The name itself is looked up afresh each time (entry_timeout 0). */
	e.attr_timeout = 1.0;
	pthread_mutex_unlock(&write_lock);
	fi->fh = e.ino; /* the creating handle: its flush APPENDs */
	fi->direct_io = 1;
	fi->keep_cache = 0;
	if (fuse_reply_create(req, &e, fi) != 0) {
		pthread_mutex_lock(&write_lock);
		write_unlink_locked(wf);
		pthread_mutex_unlock(&write_lock);
		write_file_free(wf);
	}
}

void write_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = write_fs(req);
	struct wfile *wf;
	int r = 0;

	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	if (!wf)
		r = ENOENT;
	else if ((fi->flags & O_ACCMODE) != O_RDONLY && wf->state != W_OPEN)
		r = fs->opts->ro ? EROFS : EPERM;
	pthread_mutex_unlock(&write_lock);
	if (r) {
		fuse_reply_err(req, r);
		return;
	}
	fi->fh = 0; /* not the creating handle */
	fi->direct_io = 1;
	fuse_reply_open(req, fi);
}

static int write_spill_locked(struct fs *fs, struct wfile *wf)
{
	char *dir_copy = strdup(fs->opts->cache_path), *path = NULL;
	int fd;

	if (!dir_copy)
		return -ENOMEM;
	if (asprintf(&path, "%s/.imapfs-new.XXXXXX", dirname(dir_copy)) < 0) {
		free(dir_copy);
		return -ENOMEM;
	}
	free(dir_copy);
	fd = mkostemp(path, O_CLOEXEC); /* 0600 */
	if (fd < 0) {
		int e = errno;

		log_warn("temporary file %s", path);
		free(path);
		return -e;
	}
	unlink(path);
	free(path);
	for (size_t done = 0; done < wf->size;) {
		ssize_t n = pwrite(fd, wf->mem + done, wf->size - done, (off_t)done);

		if (n <= 0) {
			int e = n < 0 ? errno : EIO;

			close(fd);
			return -e;
		}
		done += (size_t)n;
	}
	free(wf->mem);
	wf->mem = NULL;
	wf->mem_cap = 0;
	wf->fd = fd;
	return 0;
}

void write_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi)
{
	struct fs *fs = write_fs(req);
	struct wfile *wf;
	uint64_t end;
	int r = 0;

	(void)fi;
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	end = (uint64_t)off + size;
	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	if (!wf) {
		r = -EBADF;
		goto out;
	}
	if (wf->state != W_OPEN) {
		r = -EPERM;
		goto out;
	}
	if (end > WRITE_SIZE_MAX) {
		r = -EFBIG;
		goto out;
	}
	if (wf->fd < 0 && end > WRITE_MEM_MAX) {
		r = write_spill_locked(fs, wf);
		if (r)
			goto out;
	}
	if (wf->fd >= 0) {
		for (size_t done = 0; done < size;) {
			ssize_t n = pwrite(wf->fd, buf + done, size - done, off + (off_t)done);

			if (n <= 0) {
				r = n < 0 ? -errno : -EIO;
				goto out;
			}
			done += (size_t)n;
		}
	} else {
		if (end > wf->mem_cap) {
			size_t cap = wf->mem_cap ? wf->mem_cap : 16384;
			char *bigger;

			while (cap < end)
				cap *= 2;
			if (cap > WRITE_MEM_MAX)
				cap = WRITE_MEM_MAX;
			bigger = realloc(wf->mem, cap);
			if (!bigger) {
				r = -ENOMEM;
				goto out;
			}
			wf->mem = bigger;
			wf->mem_cap = cap;
		}
		if ((uint64_t)off > wf->size)
			memset(wf->mem + wf->size, 0, (size_t)((uint64_t)off - wf->size));
		memcpy(wf->mem + off, buf, size);
	}
	if (end > wf->size)
		wf->size = end;
	wf->hidden = false;
out:
	pthread_mutex_unlock(&write_lock);
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

void write_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off)
{
	struct fs *fs = write_fs(req);
	struct wfile *wf;
	char *buf = NULL, *all = NULL;
	size_t got = 0, len = 0;
	int64_t outbox_id = 0;
	int r = 0;

	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	if (!wf) {
		r = -EBADF;
	} else if (wf->state == W_SENDING) {
		r = -EBUSY;
	} else if (off >= 0 && (uint64_t)off < wf->size) {
		if ((uint64_t)off + size > wf->size)
			size = (size_t)(wf->size - (uint64_t)off);
		if (wf->state == W_OUTBOX && wf->outbox_id) {
			outbox_id = wf->outbox_id;
		} else if (!(buf = malloc(size))) {
			r = -ENOMEM;
		} else if (wf->fd >= 0) {
			ssize_t n = pread(wf->fd, buf, size, off);

			if (n < 0)
				r = -errno;
			else
				got = (size_t)n;
		} else {
			memcpy(buf, wf->mem + off, size);
			got = size;
		}
	}
	pthread_mutex_unlock(&write_lock);
	if (r == 0 && outbox_id) {
		r = cache_outbox_get_data(fs->cache, outbox_id, (void **)&all, &len);
		if (r == 0 && (uint64_t)off < len) {
			got = len - (size_t)off < size ? len - (size_t)off : size;
			buf = all;
			memmove(buf, all + off, got);
			all = NULL;
		}
		free(all);
	}
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

void write_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = write_fs(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	pid_t tid = ctx ? ctx->pid : 0;
	struct wfile *wf;
	bool send = false, creating, hold = false;
	pid_t who = -1;
	int sig = 0;

	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	/* the thread that created the file is in the creating process: no
	 * need to read /proc for it (cp closes what it created, every time) */
	if (wf && tid > 0 && tid == wf->creator_tid)
		who = wf->creator;
	creating = wf && fi->fh == ino && wf->state == W_OPEN;
	pthread_mutex_unlock(&write_lock);
	if (who == -1)
		who = write_req_process(req);
	/* a process killed by a signal (^C on cp) closes its files on its way
	 * out: what it wrote is likely cut short, and must not become a
	 * broken message on the server */
	if (creating)
		sig = write_killed_by(tid);

	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	/* only the handle that created the file sends it (touch, or a second
	 * descriptor, may open and close it meanwhile), and only when the
	 * creating process closes it: a child it forks closes its copy of the
	 * descriptor at exec, which flushes too */
	send = wf && fi->fh == ino && wf->state == W_OPEN &&
	       (!wf->creator || !who || who == wf->creator);
	if (wf)
		log_debug("new file %s: flush of handle %llx%s", wf->name,
			  (unsigned long long)fi->fh, !send ? "" : sig ? ": held" : ": APPEND");
	if (send) {
		wf->state = W_SENDING; /* ours until write_send is done */
		wf->killed = sig;
		hold = sig && wf->size > 0; /* nothing written: dropped as usual */
	}
	pthread_mutex_unlock(&write_lock);
	if (!send) {
		fuse_reply_err(req, 0);
		return;
	}
	if (hold) {
		/* held now, not at the release: the process is reaped only
		 * after this flush, so whoever waited for it finds the file
		 * readable under its name */
		write_hold(fs, wf);
		fuse_reply_err(req, 0);
		return;
	}
	fuse_reply_err(req, -write_send(fs, wf));
}

void write_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = write_fs(req);
	struct wfile *wf;
	bool send;

	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	send = wf && fi->fh == ino && wf->state == W_OPEN;
	if (send && wf->killed && wf->size > 0)
		send = false; /* its hold failed (logged): never sent */
	if (send && wf->size == 0) { /* closed empty: dropped */
		write_unlink_locked(wf);
		pthread_mutex_unlock(&write_lock);
		if (!wf->hidden)
			notify_inval_entry(fs->notify, wf->dir->ino, wf->name);
		write_file_free(wf);
		fuse_reply_err(req, 0);
		return;
	}
	if (send) /* no flush came */
		wf->state = W_SENDING;
	pthread_mutex_unlock(&write_lock);
	if (send)
		(void)write_send(fs, wf);
	fuse_reply_err(req, 0);
}

void write_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set)
{
	struct fs *fs = write_fs(req);
	struct wfile *wf;
	struct stat st;
	int r = 0;

	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	if (!wf) {
		r = ENOENT;
		goto out;
	}
	if ((to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) &&
	    wf->state != W_OPEN) {
		r = EPERM; /* sent or kept: its bytes and date are fixed */
		goto out;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		uint64_t size = (uint64_t)attr->st_size;

		if (attr->st_size < 0 || size > WRITE_SIZE_MAX) {
			r = EINVAL;
			goto out;
		}
		if (wf->fd >= 0) {
			if (ftruncate(wf->fd, attr->st_size) != 0) {
				r = errno;
				goto out;
			}
		} else if (size > wf->size) {
			if (size > WRITE_MEM_MAX) {
				r = -write_spill_locked(fs, wf);
				if (r || ftruncate(wf->fd, attr->st_size) != 0) {
					r = r ? r : errno;
					goto out;
				}
			} else {
				char *bigger = realloc(wf->mem, size);

				if (!bigger) {
					r = ENOMEM;
					goto out;
				}
				memset(bigger + wf->size, 0, size - wf->size);
				wf->mem = bigger;
				wf->mem_cap = size;
			}
		}
		wf->size = size;
	}
	log_debug("new file %s: setattr 0x%x", wf->name, (unsigned)to_set);
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		wf->internaldate = (int64_t)time(NULL);
	else if (to_set & FUSE_SET_ATTR_MTIME)
		wf->internaldate = (int64_t)attr->st_mtime;
	/* mode, owner, atime: nothing to keep */
	write_stat_locked(fs, wf, &st);
out:
	pthread_mutex_unlock(&write_lock);
	if (r)
		fuse_reply_err(req, r);
	else
		fuse_reply_attr(req, &st, 0);
}

/* --- extended attributes of new files --- */

static bool write_is_imap_attr(const char *name)
{
	return strncmp(name, "user.imap.", 10) == 0;
}

void write_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size)
{
	struct fs *fs = write_fs(req);
	char *flags = NULL, *add = NULL, *rem = NULL;
	struct wfile *wf;
	int r;

	if (!write_is_imap_attr(name)) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	if (fs->opts->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (strcmp(name, XATTR_FLAGS) != 0) {
		fuse_reply_err(req, EPERM);
		return;
	}
	r = flags_parse_change(value, size, &add, &rem);
	if (r == 0)
		r = flags_parse(value, size, &flags);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	if (!wf) {
		r = -ENOENT;
	} else if (wf->state != W_OPEN) {
		r = -EPERM;
	} else {
		if (!flags)
			flags = flags_apply_change(wf->flags, add, rem);
		if (flags) {
			free(wf->flags);
			wf->flags = flags;
			flags = NULL;
			r = 0;
		} else {
			r = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&write_lock);
	free(flags);
	free(add);
	free(rem);
	fuse_reply_err(req, -r);
}

void write_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	write_setxattr(req, ino, name, "", 0);
}

void write_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct wfile *wf;
	char *value = NULL;
	int r = 0;

	if (strcmp(name, XATTR_FLAGS) != 0) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	pthread_mutex_lock(&write_lock);
	wf = write_find_ino_locked(ino);
	if (!wf)
		r = ENOENT;
	else if (!(value = strdup(wf->flags ? wf->flags : "")))
		r = ENOMEM;
	pthread_mutex_unlock(&write_lock);
	if (r)
		fuse_reply_err(req, r);
	else if (size == 0)
		fuse_reply_xattr(req, strlen(value));
	else if (size < strlen(value))
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, strlen(value));
	free(value);
}

void write_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char names[] = XATTR_FLAGS;

	(void)ino;
	if (size == 0)
		fuse_reply_xattr(req, sizeof(names));
	else if (size < sizeof(names))
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, names, sizeof(names));
}
