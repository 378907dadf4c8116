/*
 * fs/quota: what statfs (df, a file manager's free space) reports. IMAP
 * says nothing of space unless the server has QUOTA (RFC 9208 / 2087):
 * then the quota of INBOX's roots is asked with GETQUOTAROOT and shown
 * as the filesystem's size and free space (STORAGE, in KiB) and inodes
 * (MESSAGE). Without it, plenty is reported, so a file manager does not
 * refuse to copy into the mount.
 *
 * The first statfs waits for the answer (bounded by the I/O timeout);
 * later ones are answered at once from the last one, which a background
 * job renews once it is QUOTA_TTL_MS old. State under fs->quota_lock.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <string.h>

#include "imapfs/log.h"

#define QUOTA_TTL_MS 60000

/* on a pool connection: ask, and keep the answer */
static int quota_job(struct fs *fs, struct pool_conn *conn, void *arg)
{
	struct imap_quota_info q;
	bool known = false;
	int r = 0;

	(void)arg;
	if (imap_session_has_cap(conn->session, "QUOTA")) {
		if (imap_getquotaroot(conn->session, "INBOX", &q, &conn->err) == 0) {
			known = q.have_storage || q.have_messages;
		} else {
			log_debug("GETQUOTAROOT INBOX: %s", conn->err.reason);
			r = fs_errno_from_imap(&conn->err);
		}
	}
	pthread_mutex_lock(&fs->quota_lock);
	fs->quota_at_ms = fs_now_ms();
	if (r == 0) {
		/* a failure keeps what was known; no QUOTA: plenty from now on */
		fs->quota_known = known;
		if (known)
			fs->quota = q;
	}
	pthread_mutex_unlock(&fs->quota_lock);
	return r;
}

static void quota_done(struct fs *fs, void *arg, int result)
{
	(void)arg;
	(void)result;
	pthread_mutex_lock(&fs->quota_lock);
	fs->quota_busy = false;
	pthread_mutex_unlock(&fs->quota_lock);
}

void quota_statfs(struct fs *fs, struct statvfs *st)
{
	struct imap_quota_info q;
	struct cache_stats cs = { 0 };
	bool first, stale, known;

	pthread_mutex_lock(&fs->quota_lock);
	first = fs->quota_at_ms == 0 && !fs->quota_busy;
	stale = !first && !fs->quota_busy && fs_now_ms() - fs->quota_at_ms >= QUOTA_TTL_MS;
	if (stale)
		fs->quota_busy = true;
	pthread_mutex_unlock(&fs->quota_lock);
	if (first)
		(void)modify_call(fs, quota_job, NULL); /* sets quota_at_ms, even on failure */
	else if (stale && pool_submit(fs->pool, false, quota_job, quota_done, NULL) != 0)
		quota_done(fs, NULL, 0);

	pthread_mutex_lock(&fs->quota_lock);
	known = fs->quota_known;
	q = fs->quota;
	pthread_mutex_unlock(&fs->quota_lock);

	st->f_namemax = 255;
	if (!known || !q.have_storage || !q.have_messages)
		cache_get_stats(fs->cache, &cs); /* for what no quota says */
	if (known && q.have_storage) {
		st->f_bsize = st->f_frsize = 1024;
		st->f_blocks = q.storage_limit;
		st->f_bfree = st->f_bavail =
			q.storage_limit > q.storage_used ? q.storage_limit - q.storage_used : 0;
	} else {
		/* plenty free; "used" is what the cache holds */
		st->f_bsize = st->f_frsize = 4096;
		st->f_bfree = st->f_bavail = (1ull << 40) / 4096;
		st->f_blocks = (cs.body_bytes + 4095) / 4096 + st->f_bfree;
	}
	if (known && q.have_messages) {
		st->f_files = q.messages_limit;
		st->f_ffree = st->f_favail =
			q.messages_limit > q.messages_used ? q.messages_limit - q.messages_used : 0;
	} else {
		st->f_ffree = st->f_favail = 1u << 30;
		st->f_files = cs.bodies + st->f_ffree;
	}
}
