/*
 * fs/: the daemon's private header, shared by the files of fs/ only.
 *
 * Who owns what
 * - struct fs: one per mount, built by main() before the FUSE loop starts
 *   and torn down after it ends. Its immutable fields (options, cache,
 *   pool, session, ids) are read without locks.
 * - The directory tree (tree.c): struct fs_dir objects in fs->dirs, indexed
 *   by inode number. A directory is never freed while mounted, so a pointer
 *   to one stays valid; the table and the tree fields are protected by
 *   fs->tree_lock (rwlock). A directory's listing and fetch state are
 *   protected by its own dir->lock.
 * - Inode numbers: a directory's is its index in fs->dirs (root is 1); a
 *   message's is (directory index << 32) | UID, so messages need no table
 *   and FORGET has nothing to do.
 * - The pool (pool.c): worker threads each owning one IMAP session. Jobs
 *   are fire-and-forget; a FUSE thread that needs a result waits on the
 *   object the job updates (a directory, the mailbox list) with a deadline.
 * - Kernel cache invalidation (notify.c) runs on its own thread: it must
 *   never run inside a FUSE request on the same directory.
 * - Lock order: dir->lock may be held while taking fs->tree_lock (for
 *   reading), never the other way round; fs->list_lock is never held with
 *   either.
 * Errors inside fs/ are negative errno values; IMAP failures are translated
 * in one place, fs_errno_from_imap() in pool.c.
 */
#ifndef IMAPFS_FS_I_H
#define IMAPFS_FS_I_H

#define FUSE_USE_VERSION 314

#include <pthread.h>
#include <sys/statvfs.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <fuse_lowlevel.h>

#include "imapfs/cache.h"
#include "imapfs/imap.h"
#include "options_i.h"

#define FS_ROOT_INO 1
#define FS_MSG_INO(dir_ino, uid) (((uint64_t)(dir_ino) << 32) | (uint64_t)(uid))
#define FS_INO_IS_MSG(ino) ((uint64_t)(ino) >> 32 != 0)
#define FS_INO_DIR(ino) ((uint64_t)(ino) >> 32)
#define FS_INO_UID(ino) ((uint32_t)((uint64_t)(ino) & 0xffffffffu))

/* message files never change while UIDVALIDITY holds */
#define FS_MSG_TIMEOUT 86400.0

struct fs;
struct pool;
struct notify;
struct fs_fetch;
struct fs_head;
struct fs_stream;
struct recent;
struct fs_pin;
struct dir_snap;

/* One message in a directory's in-memory listing (a mirror of the cache's
 * rows, rebuilt after each sync). */
struct fs_msg {
	uint32_t uid;
	uint64_t size;
	int64_t internaldate;
	uint64_t bytes_before; /* sum of the sizes of the messages before it */
};

struct fs_dir {
	fuse_ino_t ino;              /* its index in fs->dirs */
	struct fs_dir *parent;       /* NULL for the root */
	char *name;                  /* escaped file name; "" for the root */

	/* protected by fs->tree_lock */
	struct fs_dir *first_child, *next_sibling;
	unsigned nsubdirs;           /* visible children: st_nlink = 2 + nsubdirs */
	bool visible;                /* listed (or an ancestor of a listed one) */
	bool selectable;             /* a mailbox holding messages */
	unsigned attrs;              /* IMAP_MBOX_* */
	char *server_name;           /* NULL for implied parents */
	int64_t mailbox_id;          /* cache id; 0 when not a mailbox */
	char delimiter;

	pthread_mutex_t lock;        /* protects everything below */
	pthread_cond_t cond;         /* a sync finished, a body arrived */
	bool loaded;                 /* msgs mirrors the cache */
	struct fs_msg *msgs;         /* ascending UID */
	size_t nmsgs;
	uint32_t uidvalidity;
	/* while not loaded: the UIDVALIDITY an APPEND through the mount stored
	 * in the cache (write.c), so the next one need not read it back; 0
	 * unknown. A listing that finds another one clears it. */
	uint32_t appended_uidvalidity;
	int64_t synced_at_ms;        /* wall clock of the last good sync; 0 never */
	bool syncing;
	bool sync_background;        /* the running sync was queued as background */
	bool resync;                 /* changed through the mount while a sync ran
				      * (modify_mark_stale, a message removed): its
				      * answer may predate the change: stale, and
				      * run again once for its waiters */
	bool resync_run;             /* the running sync is that second run */
	int sync_error;              /* result of the last sync */
	unsigned sync_gen;           /* counts finished syncs */
	unsigned local_gen;          /* counts messages added or removed here (modify.c) */
	time_t mtime;                /* when the listing last changed; atomic */
	struct fs_fetch *fetches;    /* body fetches in flight */
	struct fs_head *head;        /* the head of the last large message read */
	struct fs_stream *stream;    /* the first listing while it arrives, else NULL */
	bool streamed;               /* a first listing was streamed; not published yet */
	/* prefetch: reads of this directory in scan order, which is file-name
	 * order (readdir, ls, shell globs, rsync) or UID order (the inode
	 * order fts, hence grep -r and find, sorts a directory of over 10,000
	 * entries in): scans are detected in both, the look-ahead follows the
	 * one the reads follow */
	size_t last_index;           /* listing index (msgs) of the last file read */
	bool have_last;
	bool scan_by_uid;            /* scan positions are listing indexes, else name positions */
	unsigned seq_run;            /* consecutive reads in scan order */
	size_t frontier;             /* scan position past the last one fetched ahead */
	uint64_t window;             /* bytes to fetch ahead */
	bool next_started;           /* this scan started the next directory's look-ahead */
	bool prefetch_first;         /* a walk gets here next: fetch the first files once listed */
	/* The listing in file-name order ("10.eml" before "2.eml"). Built
	 * from msgs when needed; the last three fields tell which msgs it was
	 * built for. */
	uint32_t *name_order;        /* name position -> index in msgs */
	uint32_t *name_pos;          /* index in msgs -> name position */
	uint64_t *name_bytes;        /* name position -> bytes of the files before it */
	const struct fs_msg *name_for;
	size_t name_for_n;
	uint32_t name_for_first_uid;
	/* the last read that timed out: the kernel retries a failed read at once */
	uint32_t failed_uid;
	int failed_error;
	int64_t failed_at_ms;

	/* What the kernel's readdir cache of this directory holds (ops.c),
	 * protected by fs->handles_lock: the hash of the listing that filled
	 * it, valid only while no handle with another listing could be
	 * filling it. */
	uint64_t kcache_hash;
	bool kcache_valid;
};

struct fs {
	struct fs_options *opts;
	struct imap_params params;   /* params.password points at password */
	char *password;
	struct cache *cache;
	struct recent *recent;       /* small bodies just fetched (recent_i.h); may be NULL */
	struct pool *pool;
	struct notify *notify;
	struct fuse_session *se;
	uid_t uid;
	gid_t gid;
	time_t mount_time;
	int timeout_ms;              /* bound on any wait for the server */
	bool no_open;                /* the kernel took FUSE_CAP_NO_OPEN_SUPPORT (set in init) */

	pthread_rwlock_t tree_lock;  /* the directory table and tree fields */
	struct fs_dir **dirs;        /* [0] unused, [1] the root */
	size_t ndirs, dirs_cap;

	/* taken around body writes to the cache: SQLite allows one writer at a
	 * time and makes the others sleep in its busy handler; a mutex hands
	 * over at once */
	pthread_mutex_t body_write_lock;

	/* counters for the -d summary at exit (atomic): reads that waited
	 * for a body fetch and for how long, and waits for body_write_lock */
	uint64_t stat_read_waits, stat_read_wait_us;
	uint64_t stat_lock_waits, stat_lock_wait_us;
	uint64_t stat_open_stores;   /* bodies put in the page cache at open */

	/* directory handles not released yet (the kernel may never send
	 * RELEASEDIR for some when the daemon stops): freed at exit */
	pthread_mutex_t handles_lock;
	struct dir_snap *open_dirs;  /* protected by handles_lock */

	pthread_mutex_t list_lock;   /* protects the mailbox-list state below */
	pthread_cond_t list_cond;
	bool listing;
	int list_error;
	unsigned list_gen;
	int64_t listed_at_ms;        /* 0: never */
	/* mailboxes this daemon created, shown for a while even when a LIST
	 * leaves them out (sync.c) */
	struct fs_pin *pins;
	size_t npins;

	pthread_mutex_t quota_lock;  /* protects the quota state below (quota.c) */
	bool quota_busy;             /* a refresh is queued or running */
	bool quota_known;            /* quota holds the server's answer */
	int64_t quota_at_ms;         /* when the server was last asked; 0 never */
	struct imap_quota_info quota;
};

/* --- util (tree.c) --- */
int64_t fs_now_ms(void);         /* wall clock */
uint64_t fs_mono_us(void);       /* monotonic clock, microseconds */
void fs_cond_init(pthread_cond_t *cond); /* timed waits on CLOCK_MONOTONIC */
/* the absolute CLOCK_MONOTONIC time timeout_ms from now, for timed waits */
void fs_deadline(struct timespec *ts, int timeout_ms);

/* --- tree (tree.c) --- */
int tree_init(struct fs *fs);
void tree_free(struct fs *fs);
/* NULL if ino is not a directory */
struct fs_dir *tree_dir(struct fs *fs, fuse_ino_t ino);
/* child directory by file name, NULL if none (caller holds tree_lock) */
struct fs_dir *tree_child_locked(struct fs_dir *dir, const char *name);
/* find or create the directory at an escaped path (caller holds tree_lock
 * for writing); NULL on ENOMEM */
struct fs_dir *tree_make_path_locked(struct fs *fs, const char *path);
/* recount nsubdirs after visibility changes (tree_lock for writing) */
void tree_recount_locked(struct fs *fs);

/* --- pool (pool.c) --- */
struct pool_conn {
	struct imap_session *session;    /* owned by the worker */
	char *selected;                  /* server name EXAMINEd, or NULL */
	uint32_t selected_uidvalidity;
	unsigned index;
	struct imap_error err;           /* the last failure */
};
/* A job: returns 0 or -errno. It runs on a worker with a logged-in session.
 * If it fails and the session broke, and the session had served an earlier
 * job (a stale connection), it is run once more on a new session. */
typedef int (*pool_fn)(struct fs *fs, struct pool_conn *conn, void *arg);
/* called once the job is over (done, failed, or never run): result given */
typedef void (*pool_done_fn)(struct fs *fs, void *arg, int result);

int pool_new(struct fs *fs, unsigned nconn, struct imap_session *first, struct pool **out);
int pool_start(struct pool *p);
void pool_free(struct pool *p); /* stops and joins the workers; NULL no-op */
/* urgent jobs go before background ones (prefetch). done may be NULL. */
int pool_submit(struct pool *p, bool urgent, pool_fn fn, pool_done_fn done, void *arg);
/* the same for a job that selects mailbox (server name): it goes to a
 * worker that has it selected when one can take it (pool.c) */
int pool_submit_for(struct pool *p, bool urgent, const char *mailbox, pool_fn fn,
		    pool_done_fn done, void *arg);
/* Move a queued background job (fn, arg) to the urgent queue: someone now
 * waits for it. false if it is not queued (running or done). */
bool pool_promote(struct pool *p, pool_fn fn, void *arg);
/* EXAMINE server_name unless it is selected already (force: always). */
int pool_conn_examine(struct fs *fs, struct pool_conn *conn, const char *server_name, bool force,
		      struct imap_select_info *info_out);
/* Before DELETE or RENAME of a mailbox, from a job on worker self: every
 * other idle worker that has it selected lets go of it (a session holding
 * it selected keeps it alive on Dovecot). Waits up to timeout_ms for the
 * workers; busy ones let go after their job. */
void pool_release_mailbox(struct pool *p, struct pool_conn *self, const char *server_name,
			  int timeout_ms);
/* the one translation from IMAP failures to errno values */
int fs_errno_from_imap(const struct imap_error *err);

/* --- notify (notify.c) --- */
int notify_new(struct fuse_session *se, struct notify **out);
void notify_free(struct notify *n); /* NULL no-op */
void notify_inval_entry(struct notify *n, fuse_ino_t parent, const char *name);
void notify_inval_inode(struct notify *n, fuse_ino_t ino);

/* --- sync (sync.c) --- */
/* The mailbox list: LIST "" "*" when older than max_age_ms (waits). */
int sync_mailbox_list(struct fs *fs, int64_t max_age_ms);
/* The mailbox list by a LIST sent after this call (after a CREATE, DELETE
 * or RENAME): one already in flight may not have seen the change. */
int sync_mailbox_list_after_change(struct fs *fs);
/* After a good CREATE: LISTs for the next while count the mailbox as
 * listed even if they leave it out (Dovecot 2.3 can leave out a mailbox
 * created right after another was deleted, in every session open at the
 * time). Unpinned by a DELETE or RENAME of it. */
void sync_pin_mailbox(struct fs *fs, const char *server_name, char delimiter);
void sync_unpin_mailbox(struct fs *fs, const char *server_name);
void sync_pins_free(struct fs *fs);
/* In the background, bring the listings of the first mailboxes up to date
 * (after mounting, so the first ls or grep finds them ready). */
void sync_prefetch_listings(struct fs *fs);
/* Make dir's listing at most max_age_ms old (syncing with the server if
 * needed, waiting with the deadline). A failed sync with an earlier
 * listing at hand serves the earlier one (returns 0). */
int sync_dir_fresh(struct fs *fs, struct fs_dir *dir, int64_t max_age_ms);

/* The first listing of a mailbox, readable while it arrives: a cold ls of
 * 100,000 messages lists them as the server sends them instead of after
 * the whole answer is stored. Messages only ever get appended, in the
 * server's (UID) order; fields under dir->lock, which is signalled (cond)
 * on every append and at the end. */
struct fs_stream {
	struct fs_msg *msgs;
	size_t n, cap;
	bool done;                   /* no more will come */
	int error;                   /* why the listing failed, when done */
	unsigned refs;               /* dir->stream and each handle reading it */
};
/* Like sync_dir_fresh, but when the first listing of dir starts streaming
 * before it ends, return at once with *stream_out set (a reference to
 * drop with sync_stream_unref_locked); and a listing older than max_age_ms
 * but not older than stale_ok_ms is served as it is while a sync runs in
 * the background (its changes reach the kernel through notify). */
int sync_dir_fresh_or_stream(struct fs *fs, struct fs_dir *dir, int64_t max_age_ms,
			     int64_t stale_ok_ms, struct fs_stream **stream_out);
void sync_stream_unref_locked(struct fs_stream *s); /* NULL no-op; dir->lock held */
/* Before looking up a message of dir by UID: when readdir may have shown
 * it from a first listing not yet in dir->msgs, wait (with the deadline)
 * until that listing is published. */
void sync_wait_streamed(struct fs *fs, struct fs_dir *dir);
/* Listing index of uid in dir->msgs, or -1 (dir->lock held). */
ssize_t sync_find_locked(const struct fs_dir *dir, uint32_t uid);
/* dir->name_order & co. up to date for dir->msgs (dir->lock held); false
 * when out of memory. force: rebuild even if they look current. */
bool sync_name_order_locked(struct fs_dir *dir, bool force);
/* The whole body of uid (msg_size bytes) if it was just fetched and is
 * still held in memory, taken out for the kernel's page cache at open,
 * and noted as a read from its start (the look-ahead follows it); NULL
 * otherwise. The caller frees it. */
char *sync_take_recent(struct fs *fs, struct fs_dir *dir, uint32_t uid, uint64_t msg_size);
/* Read a message's bytes: cache, or a fetch (with prefetch); the first
 * bytes of a large message from a partial fetch of its head. */
int sync_read_body(struct fs *fs, struct fs_dir *dir, uint32_t uid, uint64_t msg_size,
		   uint64_t offset, char *buf, size_t size, size_t *read_out);
/* drop fetch state at unmount */
void sync_dir_free(struct fs_dir *dir);

/* --- ops (ops.c) and xattr (xattr.c) --- */
extern const struct fuse_lowlevel_ops fs_ops;
/* free the directory handles the kernel did not release (after the loop) */
void ops_free_open_handles(struct fs *fs);
void fs_stat_dir(struct fs *fs, const struct fs_dir *dir, struct stat *st); /* tree_lock held */
void fs_stat_msg(struct fs *fs, const struct fs_dir *dir, const struct fs_msg *m, struct stat *st);
void xattr_get(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void xattr_list(fuse_req_t req, fuse_ino_t ino, size_t size);
void xattr_set(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
	       int flags);
void xattr_remove(fuse_req_t req, fuse_ino_t ino, const char *name);

/* --- writes (write.c: new files, APPEND, outbox; modify.c: flags,
 * rm, mv, mkdir, rmdir, rename) ---
 * A new file being written (or kept in the outbox after a failed APPEND)
 * has an inode with WRITE_INO_BIT set; it is not a message (no UID yet).
 * Its state lives in write.c's registry, protected by that file's lock. */
#define WRITE_INO_BIT (1ull << 63)
#define WRITE_INO_IS_NEW(ino) (((uint64_t)(ino) & WRITE_INO_BIT) != 0)

/* Run fn(fs, conn, arg) on a pool worker (urgent) and wait for its result. */
int modify_call(struct fs *fs, pool_fn fn, void *arg);

/* quota.c: size and free space for statfs, from the server's QUOTA when
 * it has one; fills the block and inode counts and f_namemax of st */
void quota_statfs(struct fs *fs, struct statvfs *st);
/* SELECT (read-write) a mailbox on a worker's connection. */
int modify_select(struct fs *fs, struct pool_conn *conn, const char *server_name,
		  struct imap_select_info *info_out);
/* the in-memory listing after a change made here (the cache first) */
void modify_listing_insert(struct fs *fs, struct fs_dir *dir, const struct fs_msg *m);
void modify_listing_remove(struct fs *fs, struct fs_dir *dir, uint32_t uid);
/* the next look at dir asks the server */
void modify_mark_stale(struct fs *fs, struct fs_dir *dir);
/* the selectable directory of a server name, or NULL */
struct fs_dir *modify_dir_by_server_name(struct fs *fs, const char *server_name);

void modify_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void modify_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void modify_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void modify_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		   const char *newname, unsigned int flags);
void modify_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		    struct fuse_file_info *fi);
/* user.imap.flags of a message (others: EPERM / ENOTSUP) */
void modify_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		     size_t size, int flags);
void modify_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

void write_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi);
void write_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void write_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi);
void write_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
void write_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void write_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void write_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set);
void write_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void write_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void write_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size);
void write_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
/* attributes of a new file; -ENOENT if gone */
int write_getattr(struct fs *fs, fuse_ino_t ino, struct stat *st);
/* a new file of dir by name: 0 and its entry, or -ENOENT */
int write_lookup(struct fs *fs, struct fs_dir *dir, const char *name, struct fuse_entry_param *e);
/* remove a new file by name (abandons an outbox entry): 0 or -ENOENT */
int write_unlink(struct fs *fs, struct fs_dir *dir, const char *name);
/* the names and attributes of dir's new files (for readdir), malloc'd
 * arrays; also retries the outbox now and then */
int write_list(struct fs *fs, struct fs_dir *dir, char ***names_out, struct stat **st_out,
	       size_t *n_out);
/* how many new files dir holds */
size_t write_count(struct fs *fs, struct fs_dir *dir);

#endif
