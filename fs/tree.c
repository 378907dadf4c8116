/*
 * fs/tree: the directory table. Owns fs->dirs and the tree links of every
 * struct fs_dir (parent, children, visibility), all protected by
 * fs->tree_lock. Directories live until unmount, so pointers handed out
 * stay valid without reference counts. Also small time helpers.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int64_t fs_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t fs_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void fs_cond_init(pthread_cond_t *cond)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
}

void fs_deadline(struct timespec *ts, int timeout_ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += timeout_ms / 1000;
	ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static struct fs_dir *tree_dir_new(struct fs *fs, struct fs_dir *parent, const char *name)
{
	struct fs_dir *d;

	if (fs->ndirs == fs->dirs_cap) {
		size_t cap = fs->dirs_cap ? fs->dirs_cap * 2 : 16;
		struct fs_dir **bigger = realloc(fs->dirs, cap * sizeof(*bigger));

		if (!bigger)
			return NULL;
		fs->dirs = bigger;
		fs->dirs_cap = cap;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->name = strdup(name);
	if (!d->name) {
		free(d);
		return NULL;
	}
	d->ino = fs->ndirs;
	d->parent = parent;
	d->visible = true;
	d->mtime = fs->mount_time;
	pthread_mutex_init(&d->lock, NULL);
	fs_cond_init(&d->cond);
	if (parent) {
		d->next_sibling = parent->first_child;
		parent->first_child = d;
	}
	fs->dirs[fs->ndirs++] = d;
	return d;
}

int tree_init(struct fs *fs)
{
	pthread_rwlock_init(&fs->tree_lock, NULL);
	fs->ndirs = 1; /* inode 0 is not used */
	fs->dirs_cap = 16;
	fs->dirs = calloc(fs->dirs_cap, sizeof(*fs->dirs));
	if (!fs->dirs)
		return -ENOMEM;
	if (!tree_dir_new(fs, NULL, ""))
		return -ENOMEM;
	return 0;
}

void tree_free(struct fs *fs)
{
	for (size_t i = 1; i < fs->ndirs; i++) {
		struct fs_dir *d = fs->dirs[i];

		sync_dir_free(d);
		pthread_mutex_destroy(&d->lock);
		pthread_cond_destroy(&d->cond);
		free(d->name);
		free(d->server_name);
		free(d->msgs);
		free(d);
	}
	free(fs->dirs);
	fs->dirs = NULL;
	fs->ndirs = 0;
	pthread_rwlock_destroy(&fs->tree_lock);
}

struct fs_dir *tree_dir(struct fs *fs, fuse_ino_t ino)
{
	struct fs_dir *d = NULL;

	if (FS_INO_IS_MSG(ino))
		return NULL;
	pthread_rwlock_rdlock(&fs->tree_lock);
	if (ino >= 1 && ino < fs->ndirs && fs->dirs[ino]->visible)
		d = fs->dirs[ino];
	pthread_rwlock_unlock(&fs->tree_lock);
	return d;
}

struct fs_dir *tree_child_locked(struct fs_dir *dir, const char *name)
{
	for (struct fs_dir *c = dir->first_child; c; c = c->next_sibling)
		if (c->visible && strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

struct fs_dir *tree_make_path_locked(struct fs *fs, const char *path)
{
	struct fs_dir *d = fs->dirs[FS_ROOT_INO];
	const char *part = path;

	for (;;) {
		const char *end = strchr(part, '/');
		size_t len = end ? (size_t)(end - part) : strlen(part);
		char *name = strndup(part, len);
		struct fs_dir *c;

		if (!name)
			return NULL;
		for (c = d->first_child; c; c = c->next_sibling)
			if (strcmp(c->name, name) == 0)
				break;
		if (!c)
			c = tree_dir_new(fs, d, name);
		free(name);
		if (!c)
			return NULL;
		c->visible = true;
		d = c;
		if (!end)
			return d;
		part = end + 1;
	}
}

void tree_recount_locked(struct fs *fs)
{
	for (size_t i = 1; i < fs->ndirs; i++)
		fs->dirs[i]->nsubdirs = 0;
	for (size_t i = 1; i < fs->ndirs; i++) {
		struct fs_dir *d = fs->dirs[i];

		if (d->parent && d->visible)
			d->parent->nsubdirs++;
	}
}
