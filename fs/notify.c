/*
 * fs/notify: tells the kernel to forget cached entries and attributes
 * (an expunged message, a listing whose UIDVALIDITY changed). The calls go
 * through one thread of their own with a queue: invalidating an entry from
 * inside a FUSE request on the same directory would deadlock, and a sync
 * job may run while such a request waits for it. The queue is protected by
 * notify->lock.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/log.h"

struct notify_item {
	struct notify_item *next;
	fuse_ino_t parent; /* 0: invalidate the inode ino */
	fuse_ino_t ino;
	char name[];
};

struct notify {
	struct fuse_session *se;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* protected by lock */
	struct notify_item *head, *tail;
	bool stopping;
};

static void *notify_main(void *arg)
{
	struct notify *n = arg;

	for (;;) {
		struct notify_item *it;
		int r;

		pthread_mutex_lock(&n->lock);
		while (!n->stopping && !n->head)
			pthread_cond_wait(&n->cond, &n->lock);
		it = n->head;
		if (it) {
			n->head = it->next;
			if (!n->head)
				n->tail = NULL;
		}
		pthread_mutex_unlock(&n->lock);
		if (!it)
			break;
		if (it->parent)
			r = fuse_lowlevel_notify_inval_entry(n->se, it->parent, it->name,
							     strlen(it->name));
		else
			r = fuse_lowlevel_notify_inval_inode(n->se, it->ino, 0, 0);
		if (r && r != -ENOENT)
			log_debug("kernel cache invalidation: %s", strerror(-r));
		free(it);
	}
	return NULL;
}

int notify_new(struct fuse_session *se, struct notify **out)
{
	struct notify *n = calloc(1, sizeof(*n));
	sigset_t all, old;
	int r;

	if (!n)
		return -ENOMEM;
	n->se = se;
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->cond, NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&n->thread, NULL, notify_main, n);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		free(n);
		return -r;
	}
	*out = n;
	return 0;
}

void notify_free(struct notify *n)
{
	if (!n)
		return;
	pthread_mutex_lock(&n->lock);
	n->stopping = true;
	/* the kernel connection is going away: pending items do not matter */
	while (n->head) {
		struct notify_item *it = n->head;

		n->head = it->next;
		free(it);
	}
	n->tail = NULL;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
	pthread_join(n->thread, NULL);
	pthread_mutex_destroy(&n->lock);
	pthread_cond_destroy(&n->cond);
	free(n);
}

static void notify_push(struct notify *n, fuse_ino_t parent, fuse_ino_t ino, const char *name)
{
	size_t len = name ? strlen(name) : 0;
	struct notify_item *it = calloc(1, sizeof(*it) + len + 1);

	if (!it)
		return; /* the kernel keeps a stale entry until its timeout */
	it->parent = parent;
	it->ino = ino;
	if (name)
		memcpy(it->name, name, len);
	pthread_mutex_lock(&n->lock);
	if (n->stopping) {
		pthread_mutex_unlock(&n->lock);
		free(it);
		return;
	}
	if (n->tail)
		n->tail->next = it;
	else
		n->head = it;
	n->tail = it;
	pthread_cond_signal(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

void notify_inval_entry(struct notify *n, fuse_ino_t parent, const char *name)
{
	if (n)
		notify_push(n, parent, 0, name);
}

void notify_inval_inode(struct notify *n, fuse_ino_t ino)
{
	if (n)
		notify_push(n, 0, ino, NULL);
}
