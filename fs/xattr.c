/*
 * fs/xattr: the user.imap.* extended attributes of message files. Values
 * come from the in-memory listing and the cache (flags after a listing
 * check no older than the refresh interval). Writing them comes with the
 * write path; until then the read-only ones give EPERM and flags EROFS on a
 * read-only mount, EPERM otherwise. Runs on FUSE threads; shares state only
 * through tree.c and sync.c.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/log.h"

#define XATTR_FLAGS "user.imap.flags"
#define XATTR_UID "user.imap.uid"
#define XATTR_UIDVALIDITY "user.imap.uidvalidity"
#define XATTR_INTERNALDATE "user.imap.internaldate"
#define XATTR_MODSEQ "user.imap.modseq"

static struct fs *xattr_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void xattr_reply(fuse_req_t req, const char *value, size_t len, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
}

/* The message behind ino, with its directory, mailbox id and uidvalidity. */
static int xattr_message(struct fs *fs, fuse_ino_t ino, struct fs_dir **dir_out,
			 struct fs_msg *msg_out, int64_t *mailbox_id_out, uint32_t *uidvalidity_out)
{
	struct fs_dir *dir;
	ssize_t idx;

	if (!FS_INO_IS_MSG(ino))
		return -ENODATA;
	dir = tree_dir(fs, FS_INO_DIR(ino));
	if (!dir)
		return -ENOENT;
	pthread_rwlock_rdlock(&fs->tree_lock);
	*mailbox_id_out = dir->mailbox_id;
	pthread_rwlock_unlock(&fs->tree_lock);
	sync_wait_streamed(fs, dir);
	pthread_mutex_lock(&dir->lock);
	idx = dir->loaded ? sync_find_locked(dir, FS_INO_UID(ino)) : -1;
	if (idx >= 0)
		*msg_out = dir->msgs[idx];
	*uidvalidity_out = dir->uidvalidity;
	pthread_mutex_unlock(&dir->lock);
	*dir_out = dir;
	return idx >= 0 ? 0 : -ENOENT;
}

void xattr_get(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = xattr_fs(req);
	struct fs_dir *dir;
	struct fs_msg m;
	struct cache_message cm;
	int64_t id;
	uint32_t uidvalidity;
	char buf[64], *value = buf;
	size_t len;
	int r;

	r = xattr_message(fs, ino, &dir, &m, &id, &uidvalidity);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	if (strcmp(name, XATTR_UID) == 0) {
		len = (size_t)snprintf(buf, sizeof(buf), "%" PRIu32, m.uid);
	} else if (strcmp(name, XATTR_UIDVALIDITY) == 0) {
		len = (size_t)snprintf(buf, sizeof(buf), "%" PRIu32, uidvalidity);
	} else if (strcmp(name, XATTR_INTERNALDATE) == 0) {
		time_t t = (time_t)m.internaldate;
		struct tm tm;

		gmtime_r(&t, &tm);
		len = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	} else if (strcmp(name, XATTR_FLAGS) == 0 || strcmp(name, XATTR_MODSEQ) == 0) {
		bool flags = strcmp(name, XATTR_FLAGS) == 0;

		/* flags change: answer no older than the refresh interval */
		if (flags)
			sync_dir_fresh(fs, dir, (int64_t)fs->opts->refresh * 1000);
		r = cache_message_get(fs->cache, id, m.uid, &cm);
		if (r) {
			fuse_reply_err(req, r == -ENOENT ? ENOENT : -r);
			return;
		}
		if (flags) {
			value = strdup(cm.flags ? cm.flags : "");
			if (!value) {
				fuse_reply_err(req, ENOMEM);
				return;
			}
			len = strlen(value);
		} else {
			if (cm.modseq == 0) {
				fuse_reply_err(req, ENODATA);
				return;
			}
			len = (size_t)snprintf(buf, sizeof(buf), "%" PRIu64, cm.modseq);
		}
	} else {
		fuse_reply_err(req, ENODATA);
		return;
	}
	xattr_reply(req, value, len, size);
	if (value != buf)
		free(value);
}

void xattr_list(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char names[] = XATTR_FLAGS "\0" XATTR_UID "\0" XATTR_UIDVALIDITY
					    "\0" XATTR_INTERNALDATE "\0" XATTR_MODSEQ;
	struct fs *fs = xattr_fs(req);
	struct fs_dir *dir;
	struct fs_msg m;
	struct cache_message cm;
	int64_t id;
	uint32_t uidvalidity;
	size_t len = sizeof(names); /* with modseq and its NUL */
	int r;

	if (!FS_INO_IS_MSG(ino)) {
		xattr_reply(req, "", 0, size); /* directories have none */
		return;
	}
	r = xattr_message(fs, ino, &dir, &m, &id, &uidvalidity);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	if (cache_message_get(fs->cache, id, m.uid, &cm) != 0 || cm.modseq == 0)
		len -= sizeof(XATTR_MODSEQ);
	xattr_reply(req, names, len, size);
}

static bool xattr_is_ours(const char *name)
{
	return strcmp(name, XATTR_FLAGS) == 0 || strcmp(name, XATTR_UID) == 0 ||
	       strcmp(name, XATTR_UIDVALIDITY) == 0 || strcmp(name, XATTR_INTERNALDATE) == 0 ||
	       strcmp(name, XATTR_MODSEQ) == 0;
}

static int xattr_refuse(struct fs *fs, fuse_ino_t ino, const char *name)
{
	if (!FS_INO_IS_MSG(ino) || !xattr_is_ours(name))
		return ENOTSUP;
	if (strcmp(name, XATTR_FLAGS) == 0 && fs->opts->ro)
		return EROFS;
	return EPERM; /* read-only attributes; flags: comes with the write path */
}

void xattr_set(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
	       int flags)
{
	(void)value;
	(void)size;
	(void)flags;
	fuse_reply_err(req, xattr_refuse(xattr_fs(req), ino, name));
}

void xattr_remove(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, xattr_refuse(xattr_fs(req), ino, name));
}
