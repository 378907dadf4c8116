/*
 * fs/pool: the IMAP connection pool. N worker threads, each owning one
 * session (struct pool_conn, touched only by its worker), take jobs from
 * two queues: urgent (a FUSE request waits on it) before background
 * (prefetch). Background jobs never occupy every worker, so an urgent job
 * always finds one soon.
 *
 * Jobs are fire-and-forget: whoever needs the outcome waits on the object
 * the job updates, with a deadline, so no FUSE request waits without bound.
 * A broken session is closed and reopened lazily by the next job; failed
 * connection attempts back off (shared by all workers) so an unreachable
 * server costs each request one quick failure, not a connect timeout.
 *
 * The queues, the stop flag and the backoff state are protected by
 * pool->lock. fs_errno_from_imap() is the one place where IMAP failures
 * become errno values.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/log.h"
#include "route_i.h"

struct pool_job {
	struct pool_job *next;
	pool_fn fn;
	pool_done_fn done;
	void *arg;
	char *mailbox;          /* the mailbox the job selects, or NULL */
	bool urgent;
};

struct pool_worker {
	pthread_t thread;
	bool started;
	struct pool *pool;
	struct pool_conn conn;
	unsigned release_seen;  /* protected by pool->lock */
};

struct pool {
	struct fs *fs;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* protected by lock */
	struct pool_job *urgent_head, *urgent_tail;
	struct pool_job *bg_head, *bg_tail;
	unsigned running_bg;
	bool stopping;
	int64_t next_open_ms;   /* monotonic: no connection attempt before */
	int backoff_ms;
	/* a mailbox about to be deleted or renamed: idle workers that have it
	 * selected let go of it (pool_release_mailbox) */
	char *release_name;
	unsigned release_gen;
	/* what job routing knows of each worker (route_i.h): routes[i] is
	 * workers[i]'s; mailbox strings are owned here */
	struct route_worker *routes;
	/* fixed after pool_new */
	unsigned nworkers;
	struct pool_worker *workers;
};

int fs_errno_from_imap(const struct imap_error *err)
{
	switch (err->kind) {
	case IMAP_ERR_NONE:
		return 0;
	case IMAP_ERR_AUTH:
		return -EACCES;
	case IMAP_ERR_NO:
		if (strcmp(err->code, "NONEXISTENT") == 0 || strcmp(err->code, "TRYCREATE") == 0)
			return -ENOENT;
		if (strcmp(err->code, "ALREADYEXISTS") == 0)
			return -EEXIST;
		if (strcmp(err->code, "OVERQUOTA") == 0)
			return -EDQUOT;
		if (strcmp(err->code, "NOPERM") == 0 || strcmp(err->code, "AUTHORIZATIONFAILED") == 0)
			return -EACCES;
		if (strcmp(err->code, "LIMIT") == 0 || strcmp(err->code, "INUSE") == 0)
			return -EBUSY;
		return -EIO;
	case IMAP_ERR_TIMEOUT:
		return -ETIMEDOUT;
	case IMAP_ERR_BAD:
	case IMAP_ERR_CONNECT:
	case IMAP_ERR_TLS:
	case IMAP_ERR_PROTOCOL:
	case IMAP_ERR_CLOSED:
	case IMAP_ERR_LOCAL:
		return -EIO;
	}
	return -EIO;
}

static int64_t pool_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pool_conn_reset(struct pool_conn *conn)
{
	imap_session_close(conn->session);
	conn->session = NULL;
	free(conn->selected);
	conn->selected = NULL;
	conn->selected_uidvalidity = 0;
}

int pool_conn_examine(struct fs *fs, struct pool_conn *conn, const char *server_name, bool force,
		      struct imap_select_info *info_out)
{
	struct imap_select_info info;

	(void)fs;
	if (!force && conn->selected && strcmp(conn->selected, server_name) == 0) {
		if (info_out) {
			memset(info_out, 0, sizeof(*info_out));
			info_out->uidvalidity = conn->selected_uidvalidity;
		}
		return 0;
	}
	free(conn->selected);
	conn->selected = NULL;
	if (imap_select(conn->session, server_name, true, &info, &conn->err) != 0) {
		log_debug("EXAMINE %s: %s", server_name, conn->err.reason);
		return fs_errno_from_imap(&conn->err);
	}
	conn->selected = strdup(server_name);
	conn->selected_uidvalidity = info.uidvalidity;
	if (info_out)
		*info_out = info;
	return 0;
}

/* A session for this worker, opening one if needed. */
static int pool_conn_open(struct pool_worker *w)
{
	struct pool *p = w->pool;
	struct imap_error err = { 0 };
	struct imap_session *s = NULL;
	int64_t now = pool_mono_ms();

	pthread_mutex_lock(&p->lock);
	if (now < p->next_open_ms) {
		pthread_mutex_unlock(&p->lock);
		return -EIO; /* still backing off after a failed attempt */
	}
	pthread_mutex_unlock(&p->lock);

	if (imap_session_open(&p->fs->params, &s, &err) != 0) {
		pthread_mutex_lock(&p->lock);
		p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : 250;
		if (p->backoff_ms > 4000)
			p->backoff_ms = 4000;
		p->next_open_ms = pool_mono_ms() + p->backoff_ms;
		pthread_mutex_unlock(&p->lock);
		w->conn.err = err;
		log_warnx("connection %u to %s: %s", w->conn.index, p->fs->params.host, err.reason);
		return fs_errno_from_imap(&err);
	}
	pthread_mutex_lock(&p->lock);
	p->backoff_ms = 0;
	p->next_open_ms = 0;
	pthread_mutex_unlock(&p->lock);
	log_debug("connection %u open", w->conn.index);
	w->conn.session = s;
	return 0;
}

static int pool_run_job(struct pool_worker *w, struct pool_job *job)
{
	struct pool_conn *conn = &w->conn;
	int r = -EIO;

	for (int attempt = 0; attempt < 2; attempt++) {
		bool fresh = false;

		if (!conn->session) {
			r = pool_conn_open(w);
			if (r)
				return r;
			fresh = true;
		}
		memset(&conn->err, 0, sizeof(conn->err));
		r = job->fn(w->pool->fs, conn, job->arg);
		if (!imap_session_is_broken(conn->session))
			return r;
		log_info("connection %u lost: %s", conn->index,
			 conn->err.reason[0] ? conn->err.reason : "broken");
		pool_conn_reset(conn);
		/* a connection that sat idle may have died meanwhile: once more */
		if (r == 0 || fresh)
			return r;
	}
	return r;
}

static size_t pool_index(const struct pool *p, const struct pool_worker *w)
{
	return (size_t)(w - p->workers);
}

/* Unlink job (after prev, NULL for the head) from a queue. */
static void pool_unlink(struct pool_job **head, struct pool_job **tail, struct pool_job *prev,
			struct pool_job *job)
{
	if (prev)
		prev->next = job->next;
	else
		*head = job->next;
	if (*tail == job)
		*tail = prev;
	job->next = NULL;
}

/* The job worker w runs next, or NULL (pool->lock held): urgent ones
 * first, background ones only while a worker stays free for urgent ones;
 * which of them as route_i.h says. */
static struct pool_job *pool_take_locked(struct pool *p, struct pool_worker *w)
{
	size_t self = pool_index(p, w);
	struct pool_job *job, *prev = NULL;

	for (job = p->urgent_head; job; prev = job, job = job->next) {
		if (route_urgent(p->routes, p->nworkers, self, job->mailbox)) {
			pool_unlink(&p->urgent_head, &p->urgent_tail, prev, job);
			return job;
		}
	}
	if (!(p->nworkers == 1 || p->running_bg + 1 < p->nworkers))
		return NULL;
	prev = NULL;
	for (job = p->bg_head; job; prev = job, job = job->next) {
		struct pool_job *last = job, *last_prev = prev;
		size_t same = 0;

		if (job->mailbox) {
			for (struct pool_job *q = job, *qp = prev; q; qp = q, q = q->next) {
				if (q->mailbox && strcmp(q->mailbox, job->mailbox) == 0) {
					same++;
					last = q;
					last_prev = qp;
				}
			}
		}
		switch (route_background(p->routes, p->nworkers, self, job->mailbox, same ? same : 1)) {
		case ROUTE_SKIP:
			continue;
		case ROUTE_TAKE_LAST:
			job = last;
			prev = last_prev;
			break;
		case ROUTE_TAKE:
			break;
		}
		pool_unlink(&p->bg_head, &p->bg_tail, prev, job);
		p->running_bg++;
		return job;
	}
	return NULL;
}

/* Note the mailbox worker i fetches from (pool->lock held), NULL for none. */
static void pool_route_set_locked(struct pool *p, size_t i, const char *mailbox)
{
	struct route_worker *r = &p->routes[i];

	if (mailbox && r->mailbox && strcmp(mailbox, r->mailbox) == 0)
		return;
	free((char *)r->mailbox);
	r->mailbox = mailbox ? strdup(mailbox) : NULL;
}

/* Let go of the mailbox named in pool->release_name if this worker has it
 * selected: Dovecot keeps a mailbox that another session has selected, and
 * DELETE would leave it on the server. Called with pool->lock held; returns
 * with it released. */
static void pool_worker_release_locked(struct pool_worker *w)
{
	struct pool *p = w->pool;
	struct pool_conn *conn = &w->conn;
	bool mine = p->release_name && conn->selected &&
		    strcmp(conn->selected, p->release_name) == 0;

	w->release_seen = p->release_gen;
	pthread_mutex_unlock(&p->lock);
	if (mine) {
		if (!imap_session_has_cap(conn->session, "UNSELECT") ||
		    imap_unselect(conn->session, NULL) != 0 ||
		    imap_session_is_broken(conn->session)) {
			/* no way to let go but to drop the connection */
			pool_conn_reset(conn);
		} else {
			free(conn->selected);
			conn->selected = NULL;
			conn->selected_uidvalidity = 0;
		}
	}
	pthread_mutex_lock(&p->lock);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

void pool_release_mailbox(struct pool *p, struct pool_conn *self, const char *server_name,
			  int timeout_ms)
{
	int64_t end = pool_mono_ms() + timeout_ms;
	char *name = strdup(server_name);

	if (!name)
		return;
	pthread_mutex_lock(&p->lock);
	free(p->release_name);
	p->release_name = name;
	p->release_gen++;
	pthread_cond_broadcast(&p->cond);
	for (;;) {
		unsigned pending = 0;
		struct timespec ts;
		int64_t left = end - pool_mono_ms();

		for (unsigned i = 0; i < p->nworkers; i++)
			if (&p->workers[i].conn != self && p->workers[i].started &&
			    p->workers[i].release_seen != p->release_gen)
				pending++;
		if (pending == 0 || left <= 0 || p->stopping)
			break;
		/* p->cond runs on the realtime clock */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (left % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
	}
	pthread_mutex_unlock(&p->lock);
}

/* After a job: note where other workers can see it which mailbox this
 * worker has bodies fetched from (pool->lock held; only the worker itself
 * calls this). A job for a mailbox (pool_submit_for) leaves its
 * selection ready for the next; any other job that changed the selection
 * leaves none (a fresh selection is as slow to fetch from as any). */
static void pool_worker_note_selected_locked(struct pool_worker *w, const struct pool_job *job)
{
	struct pool *p = w->pool;
	size_t i = pool_index(p, w);
	const char *now = w->conn.selected;
	const char *had = p->routes[i].mailbox;

	if (now && had && strcmp(now, had) == 0)
		return;
	pool_route_set_locked(p, i,
			      now && job && job->mailbox && strcmp(now, job->mailbox) == 0 ? now : NULL);
}

static void *pool_worker_main(void *arg)
{
	struct pool_worker *w = arg;
	struct pool *p = w->pool;

	/* log in at once rather than with the first job: the worker kept free
	 * for urgent jobs would otherwise make the first reader that needs it
	 * wait for a TCP, TLS and LOGIN round trips (about 0.1 s at 20 ms) */
	if (!w->conn.session)
		(void)pool_conn_open(w);
	for (;;) {
		struct pool_job *job = NULL;
		int r;

		pthread_mutex_lock(&p->lock);
		while (!p->stopping && w->release_seen == p->release_gen &&
		       !(job = pool_take_locked(p, w)))
			pthread_cond_wait(&p->cond, &p->lock);
		if (job) {
			p->routes[pool_index(p, w)].busy = true;
			/* claimed at once: other workers see where the job's
			 * mailbox will be ready while it runs */
			if (job->mailbox)
				pool_route_set_locked(p, pool_index(p, w), job->mailbox);
		}
		if (w->release_seen != p->release_gen) {
			pool_worker_release_locked(w);
			if (!job)
				continue; /* lock released by the call */
			pthread_mutex_lock(&p->lock);
		}
		pthread_mutex_unlock(&p->lock);
		if (p->stopping && !job)
			break;
		if (p->stopping) {
			r = -EIO;
		} else {
			r = pool_run_job(w, job);
		}
		if (job->done)
			job->done(p->fs, job->arg, r);
		pthread_mutex_lock(&p->lock);
		if (!job->urgent)
			p->running_bg--;
		p->routes[pool_index(p, w)].busy = false;
		pool_worker_note_selected_locked(w, job);
		pthread_cond_broadcast(&p->cond); /* a background slot may be free */
		pthread_mutex_unlock(&p->lock);
		free(job->mailbox);
		free(job);
	}
	pool_conn_reset(&w->conn);
	pthread_mutex_lock(&p->lock);
	pool_worker_note_selected_locked(w, NULL);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int pool_new(struct fs *fs, unsigned nconn, struct imap_session *first, struct pool **out)
{
	struct pool *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->workers = calloc(nconn, sizeof(*p->workers));
	p->routes = calloc(nconn, sizeof(*p->routes));
	if (!p->workers || !p->routes) {
		free(p->workers);
		free(p->routes);
		free(p);
		return -ENOMEM;
	}
	p->fs = fs;
	p->nworkers = nconn;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	for (unsigned i = 0; i < nconn; i++) {
		p->workers[i].pool = p;
		p->workers[i].conn.index = i;
	}
	p->workers[0].conn.session = first;
	*out = p;
	return 0;
}

int pool_start(struct pool *p)
{
	sigset_t all, old;
	int r = 0;

	/* signals are for the main thread and the FUSE loop */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (unsigned i = 0; i < p->nworkers; i++) {
		r = pthread_create(&p->workers[i].thread, NULL, pool_worker_main, &p->workers[i]);
		if (r) {
			r = -r;
			break;
		}
		p->workers[i].started = true;
		pthread_mutex_lock(&p->lock);
		p->routes[i].present = true;
		pthread_mutex_unlock(&p->lock);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

int pool_submit(struct pool *p, bool urgent, pool_fn fn, pool_done_fn done, void *arg)
{
	return pool_submit_for(p, urgent, NULL, fn, done, arg);
}

int pool_submit_for(struct pool *p, bool urgent, const char *mailbox, pool_fn fn,
		    pool_done_fn done, void *arg)
{
	struct pool_job *job = calloc(1, sizeof(*job));

	if (!job)
		return -ENOMEM;
	/* without its name the job just goes to any worker */
	job->mailbox = mailbox ? strdup(mailbox) : NULL;
	job->fn = fn;
	job->done = done;
	job->arg = arg;
	job->urgent = urgent;
	pthread_mutex_lock(&p->lock);
	if (p->stopping) {
		pthread_mutex_unlock(&p->lock);
		free(job->mailbox);
		free(job);
		return -ESHUTDOWN;
	}
	if (urgent) {
		if (p->urgent_tail)
			p->urgent_tail->next = job;
		else
			p->urgent_head = job;
		p->urgent_tail = job;
	} else {
		if (p->bg_tail)
			p->bg_tail->next = job;
		else
			p->bg_head = job;
		p->bg_tail = job;
	}
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

bool pool_promote(struct pool *p, pool_fn fn, void *arg)
{
	struct pool_job **pp, *prev = NULL;
	bool found = false;

	pthread_mutex_lock(&p->lock);
	for (pp = &p->bg_head; *pp; prev = *pp, pp = &(*pp)->next) {
		struct pool_job *job = *pp;

		if (job->fn != fn || job->arg != arg)
			continue;
		*pp = job->next;
		if (p->bg_tail == job)
			p->bg_tail = prev;
		job->next = NULL;
		job->urgent = true;
		if (p->urgent_tail)
			p->urgent_tail->next = job;
		else
			p->urgent_head = job;
		p->urgent_tail = job;
		found = true;
		pthread_cond_broadcast(&p->cond);
		break;
	}
	pthread_mutex_unlock(&p->lock);
	return found;
}

void pool_free(struct pool *p)
{
	struct pool_job *lists[2];

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nworkers; i++) {
		if (p->workers[i].started)
			pthread_join(p->workers[i].thread, NULL);
		else
			pool_conn_reset(&p->workers[i].conn);
	}
	lists[0] = p->urgent_head;
	lists[1] = p->bg_head;
	for (int l = 0; l < 2; l++) {
		while (lists[l]) {
			struct pool_job *job = lists[l];

			lists[l] = job->next;
			if (job->done)
				job->done(p->fs, job->arg, -EIO);
			free(job->mailbox);
			free(job);
		}
	}
	for (unsigned i = 0; i < p->nworkers; i++)
		free((char *)p->routes[i].mailbox);
	free(p->routes);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->release_name);
	free(p->workers);
	free(p);
}
