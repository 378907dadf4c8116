/*
 * cache-bench: how fast the cache does what the fs daemon asks of it.
 * Built, not registered as a test (no timing asserts anywhere).
 *
 *   cache-bench [folder]    (default: $TMPDIR or /tmp)
 *   cache-bench --load MAILDIR DB
 *
 * --load stores every message file of a Maildir tree (each folder holding
 * a cur/ is a mailbox, the file's bytes its body) into a fresh cache at DB
 * the way the fs daemon does: one metadata batch per mailbox, then the
 * bodies in cache_write_begin groups of up to 100 bodies or 1 MB, bodies
 * over 128 KB alone. It prints the message bytes and the size of DB with
 * its -wal and -journal, measured before cache_close, as the bench script
 * measures a mounted cache. A second thread reads each body back as soon
 * as it is committed, as the cold grep does. Then look inside the file
 * with sqlite3's dbstat.
 *
 * Prints: storing 100,000 messages' metadata in one batch, listing them
 * back, looking each up by UID; streaming 6,000 bodies of ~5.5 KB (~33 MB)
 * with one transaction per body and grouped with cache_write_begin, and
 * 20,000 bodies of 1.3-2 KB grouped (wall and CPU time per body), and
 * reading them back; a 4 KB read in a 50 MB body; opening the result again.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imapfs/cache.h"

#define MESSAGES 100000
#define BODIES 6000
#define SMALL_BODIES 20000
#define GROUP 100

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((noreturn)) static void die(const char *what, int ret)
{
	fprintf(stderr, "cache-bench: %s failed: %d\n", what, ret);
	exit(1);
}

static int count_cb(void *ctx, const struct cache_message *m)
{
	uint64_t *n = ctx;

	(*n) += m->uid ? 1 : 0;
	return 0;
}

static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t body_size(uint32_t uid)
{
	return 3000 + (uid * 7919u) % 5000; /* 3,000 .. 7,999, mean ~5.5 KB */
}

/* the bulk of a real account: 1,300 .. 1,999 bytes */
static size_t small_body_size(uint32_t uid)
{
	return 1300 + (uid * 7919u) % 700;
}

static double stream_bodies_n(struct cache *c, int64_t mb, bool grouped, uint32_t count,
			      size_t (*size_of)(uint32_t), uint64_t *bytes)
{
	static unsigned char data[8192];
	double t0 = now();
	uint32_t uid;
	int ret;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)("From: a@b\r\nSubject: x\r\n\r\nhello world "[i % 38]);
	*bytes = 0;
	for (uid = 1; uid <= count; uid++) {
		struct cache_body_writer *w = NULL;
		size_t size = size_of(uid), off = 0;

		if (grouped && uid % GROUP == 1 && (ret = cache_write_begin(c)))
			die("cache_write_begin", ret);
		if ((ret = cache_body_begin(c, mb, uid, size, &w)))
			die("cache_body_begin", ret);
		while (off < size) { /* as a TLS reader would hand it over */
			size_t n = size - off < 1500 ? size - off : 1500;

			if ((ret = cache_body_write(w, data + off, n)))
				die("cache_body_write", ret);
			off += n;
		}
		if ((ret = cache_body_commit(w)))
			die("cache_body_commit", ret);
		if (grouped && (uid % GROUP == 0 || uid == count) && (ret = cache_write_commit(c)))
			die("cache_write_commit", ret);
		*bytes += size;
	}
	return now() - t0;
}

static double stream_bodies(struct cache *c, int64_t mb, bool grouped, uint64_t *bytes)
{
	return stream_bodies_n(c, mb, grouped, BODIES, body_size, bytes);
}

static double read_bodies(struct cache *c, int64_t mb)
{
	static unsigned char buf[131072];
	double t0 = now();
	uint32_t uid;
	size_t got;
	int ret;

	for (uid = 1; uid <= BODIES; uid++) {
		if (!cache_body_has(c, mb, uid, NULL))
			die("cache_body_has", -1);
		if ((ret = cache_body_read(c, mb, uid, 0, buf, sizeof(buf), &got)))
			die("cache_body_read", ret);
		if (got != body_size(uid))
			die("cache_body_read size", -1);
	}
	return now() - t0;
}

/* --- --load --- */

#define LOAD_GROUP_COUNT 100
#define LOAD_GROUP_BYTES (1024 * 1024)
#define LOAD_GROUP_BODY (128 * 1024)

struct load_body {
	int64_t mailbox_id;
	uint32_t uid;
	uint64_t size;
};

struct load_state {
	struct cache *c;
	uint64_t messages, bytes;
	double t_meta, t_bodies;
	/* bodies committed, for the reader thread (grep reading as they come) */
	struct load_body *done;
	size_t ndone, done_size; /* ndone: atomic */
	bool finished;           /* atomic */
	uint64_t read_bytes;
};

/* Read every body once as soon as it is committed, 128 KiB at a time like
 * FUSE reads, as the cold grep does while the bodies stream in. */
static void *load_reader(void *arg)
{
	static unsigned char buf[128 * 1024];
	struct load_state *ls = arg;
	size_t next = 0;

	for (;;) {
		size_t n = __atomic_load_n(&ls->ndone, __ATOMIC_ACQUIRE);
		bool fin = __atomic_load_n(&ls->finished, __ATOMIC_ACQUIRE);

		if (next == n) {
			if (fin)
				break;
			usleep(200);
			continue;
		}
		for (; next < n; next++) {
			struct load_body *b = &ls->done[next];
			uint64_t off = 0;
			size_t got = 0;
			int ret;

			while (off < b->size) {
				ret = cache_body_read(ls->c, b->mailbox_id, b->uid, off, buf,
						      sizeof(buf), &got);
				if (ret || got == 0)
					die("cache_body_read (reader)", ret);
				off += got;
			}
			ls->read_bytes += off;
		}
	}
	return NULL;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* The files of dir/cur, sorted (UIDs in that order). */
static char **load_list(const char *dir, size_t *count)
{
	char cur[4096];
	char **names = NULL;
	size_t n = 0, size = 0;
	struct dirent *de;
	DIR *d;

	snprintf(cur, sizeof(cur), "%s/cur", dir);
	d = opendir(cur);
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (n == size) {
			size = size ? size * 2 : 1024;
			names = realloc(names, size * sizeof(*names));
			if (!names)
				die("realloc", -1);
		}
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	*count = n;
	return names;
}

static void load_publish(struct load_state *ls, int64_t mb, const uint64_t *sizes, size_t from,
			 size_t to)
{
	size_t n = ls->ndone;

	if (n + (to - from) > ls->done_size)
		die("load_publish: too many bodies", -1);
	for (; from < to; from++, n++) {
		ls->done[n].mailbox_id = mb;
		ls->done[n].uid = (uint32_t)from + 1;
		ls->done[n].size = sizes[from];
	}
	__atomic_store_n(&ls->ndone, n, __ATOMIC_RELEASE);
}

static void load_mailbox(struct load_state *ls, const char *dir, const char *name)
{
	static unsigned char buf[65536];
	struct cache_mailbox mbox = { .name = name, .server_name = name, .delimiter = '/' };
	struct cache_batch *b = NULL;
	size_t count = 0, i, group_first = 0, in_group = 0, group_bytes = 0;
	char **names = load_list(dir, &count);
	uint64_t *sizes;
	char path[8192];
	int64_t mb = 0;
	double t0;
	int ret;

	if (!names)
		return;
	sizes = calloc(count + 1, sizeof(*sizes));
	if (!sizes)
		die("calloc", -1);
	if ((ret = cache_mailbox_put(ls->c, &mbox, &mb)))
		die("cache_mailbox_put", ret);
	cache_mailbox_set_state(ls->c, mb, 1, (uint32_t)count + 1, 0, 0);
	t0 = now();
	if ((ret = cache_batch_begin(ls->c, mb, &b)))
		die("cache_batch_begin", ret);
	for (i = 0; i < count; i++) {
		struct cache_message msg = {
			.uid = (uint32_t)i + 1,
			.internaldate = 1700000000 + (int64_t)i,
			.flags = i % 3 ? "\\Seen" : "",
		};

		snprintf(path, sizeof(path), "%s/cur/%s", dir, names[i]);
		msg.size = sizes[i] = file_size(path);
		if ((ret = cache_batch_put(b, &msg)))
			die("cache_batch_put", ret);
	}
	if ((ret = cache_batch_commit(b)))
		die("cache_batch_commit", ret);
	ls->t_meta += now() - t0;

	t0 = now();
	for (i = 0; i < count; i++) {
		struct cache_body_writer *w = NULL;
		uint64_t size = sizes[i];
		ssize_t n;
		int fd;

		if (in_group && (size > LOAD_GROUP_BODY || in_group >= LOAD_GROUP_COUNT ||
				 group_bytes >= LOAD_GROUP_BYTES)) {
			if ((ret = cache_write_commit(ls->c)))
				die("cache_write_commit", ret);
			load_publish(ls, mb, sizes, group_first, i);
			in_group = group_bytes = 0;
		}
		if (size <= LOAD_GROUP_BODY && !in_group) {
			if ((ret = cache_write_begin(ls->c)))
				die("cache_write_begin", ret);
			group_first = i;
		}
		snprintf(path, sizeof(path), "%s/cur/%s", dir, names[i]);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			die(path, -1);
		if ((ret = cache_body_begin(ls->c, mb, (uint32_t)i + 1, size, &w)))
			die("cache_body_begin", ret);
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if ((ret = cache_body_write(w, buf, (size_t)n)))
				die("cache_body_write", ret);
		close(fd);
		if ((ret = cache_body_commit(w)))
			die("cache_body_commit", ret);
		if (size <= LOAD_GROUP_BODY) {
			in_group++;
			group_bytes += size;
		} else {
			load_publish(ls, mb, sizes, i, i + 1);
		}
		ls->messages++;
		ls->bytes += size;
		free(names[i]);
	}
	if (in_group) {
		if ((ret = cache_write_commit(ls->c)))
			die("cache_write_commit", ret);
		load_publish(ls, mb, sizes, group_first, count);
	}
	ls->t_bodies += now() - t0;
	free(sizes);
	free(names);
}

/* Every folder under root holding a cur/, root itself as INBOX. */
static void load_tree(struct load_state *ls, const char *root, const char *dir, const char *name)
{
	char sub[4096], subname[4096];
	struct dirent *de;
	DIR *d;

	load_mailbox(ls, dir, name);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct stat st;

		if (de->d_name[0] == '.' || !strcmp(de->d_name, "cur") ||
		    !strcmp(de->d_name, "new") || !strcmp(de->d_name, "tmp"))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
		if (stat(sub, &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		if (dir == root)
			snprintf(subname, sizeof(subname), "%s", de->d_name);
		else
			snprintf(subname, sizeof(subname), "%s/%s", name, de->d_name);
		load_tree(ls, root, sub, subname);
	}
	closedir(d);
}

static int load_main(const char *maildir, const char *db)
{
	struct cache_params params = {0};
	struct load_state ls = {0};
	uint64_t total = 0;
	pthread_t reader;
	char side[4200];
	int ret;

	if ((ret = cache_open(db, &params, &ls.c)))
		die("cache_open", ret);
	ls.done_size = 1u << 22;
	ls.done = calloc(ls.done_size, sizeof(*ls.done));
	if (!ls.done || pthread_create(&reader, NULL, load_reader, &ls) != 0)
		die("starting the reader", -1);
	load_tree(&ls, maildir, maildir, "INBOX");
	__atomic_store_n(&ls.finished, true, __ATOMIC_RELEASE);
	pthread_join(reader, NULL);
	printf("reader: read %llu bytes back as they came\n", (unsigned long long)ls.read_bytes);
	total = file_size(db);
	snprintf(side, sizeof(side), "%s-wal", db);
	printf("wal: %llu bytes\n", (unsigned long long)file_size(side));
	total += file_size(side);
	snprintf(side, sizeof(side), "%s-journal", db);
	total += file_size(side);
	printf("loaded %llu messages, %llu bytes: metadata %.2f s, bodies %.2f s\n",
	       (unsigned long long)ls.messages, (unsigned long long)ls.bytes, ls.t_meta,
	       ls.t_bodies);
	printf("cache (db + wal + journal, open): %llu bytes, %.4f x the message bytes\n",
	       (unsigned long long)total, ls.bytes ? (double)total / (double)ls.bytes : 0.0);
	cache_close(ls.c);
	free(ls.done);
	return 0;
}

int main(int argc, char **argv)
{
	const char *tmp;
	char dir[512], path[600];
	struct cache_params params = { 0 };
	struct cache_mailbox mbox = { .name = "INBOX", .server_name = "INBOX", .delimiter = '/' };
	struct cache_batch *b = NULL;
	struct cache *c = NULL;
	struct cache_message m;
	int64_t mb = 0, mb2 = 0, mb3 = 0, mb4 = 0;
	uint64_t n = 0, bytes = 0;
	double t0, t;
	uint32_t uid;
	int ret;

	if (argc == 4 && !strcmp(argv[1], "--load"))
		return load_main(argv[2], argv[3]);
	tmp = argc > 1 ? argv[1] : getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/cache-bench-XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		die("mkdtemp", -1);
	snprintf(path, sizeof(path), "%s/cache.db", dir);
	if ((ret = cache_open(path, &params, &c)))
		die("cache_open", ret);
	if ((ret = cache_mailbox_put(c, &mbox, &mb)))
		die("cache_mailbox_put", ret);
	cache_mailbox_set_state(c, mb, 1, MESSAGES + 1, 0, 0);

	t0 = now();
	if ((ret = cache_batch_begin(c, mb, &b)))
		die("cache_batch_begin", ret);
	for (uid = 1; uid <= MESSAGES; uid++) {
		struct cache_message msg = {
			.uid = uid,
			.size = body_size(uid),
			.internaldate = 1700000000 + uid,
			.modseq = uid,
			.flags = uid % 3 ? "\\Seen" : "\\Seen \\Flagged $Label1",
		};
		if ((ret = cache_batch_put(b, &msg)))
			die("cache_batch_put", ret);
	}
	if ((ret = cache_batch_commit(b)))
		die("cache_batch_commit", ret);
	t = now() - t0;
	printf("metadata: store %d messages in one batch: %.3f s\n", MESSAGES, t);

	t0 = now();
	if ((ret = cache_message_list(c, mb, count_cb, &n)))
		die("cache_message_list", ret);
	t = now() - t0;
	printf("metadata: list them back (%llu): %.3f s\n", (unsigned long long)n, t);

	t0 = now();
	for (uid = 1; uid <= MESSAGES; uid++) {
		uint32_t u = 1 + (uid * 48271u) % MESSAGES;

		if ((ret = cache_message_get(c, mb, u, &m)))
			die("cache_message_get", ret);
	}
	t = now() - t0;
	printf("metadata: cache_message_get by UID, random order: %.2f us per call\n",
	       t * 1e6 / MESSAGES);

	mbox.name = mbox.server_name = "Bodies-each";
	cache_mailbox_put(c, &mbox, &mb2);
	mbox.name = mbox.server_name = "Bodies-grouped";
	cache_mailbox_put(c, &mbox, &mb3);

	t = stream_bodies(c, mb2, false, &bytes);
	printf("bodies: stream %d (%.1f MB), one transaction each: %.3f s (%.1f us per body)\n",
	       BODIES, bytes / 1e6, t, t * 1e6 / BODIES);
	t = stream_bodies(c, mb3, true, &bytes);
	printf("bodies: stream %d (%.1f MB), %d per cache_write_begin group: %.3f s "
	       "(%.1f us per body)\n",
	       BODIES, bytes / 1e6, GROUP, t, t * 1e6 / BODIES);
	mbox.name = mbox.server_name = "Bodies-small";
	cache_mailbox_put(c, &mbox, &mb4);
	t0 = cpu_now();
	t = stream_bodies_n(c, mb4, true, SMALL_BODIES, small_body_size, &bytes);
	t0 = cpu_now() - t0;
	printf("bodies: stream %d small (%.1f MB), %d per group: %.3f s (%.1f us per body,"
	       " %.1f us CPU)\n",
	       SMALL_BODIES, bytes / 1e6, GROUP, t, t * 1e6 / SMALL_BODIES,
	       t0 * 1e6 / SMALL_BODIES);
	t = read_bodies(c, mb2);
	printf("bodies: read all %d back (has + read): %.3f s (%.1f us per body)\n", BODIES, t,
	       t * 1e6 / BODIES);
	t = read_bodies(c, mb3);
	printf("bodies: again, warm: %.3f s\n", t);

	{
		const uint64_t big = 50ull << 20;
		static unsigned char chunk[1 << 20];
		struct cache_body_writer *w = NULL;
		size_t got;
		uint64_t off;
		int i;

		t0 = now();
		if ((ret = cache_body_begin(c, mb2, 100000, big, &w)))
			die("cache_body_begin", ret);
		for (off = 0; off < big; off += sizeof(chunk))
			if ((ret = cache_body_write(w, chunk, sizeof(chunk))))
				die("cache_body_write", ret);
		if ((ret = cache_body_commit(w)))
			die("cache_body_commit", ret);
		t = now() - t0;
		printf("bodies: store one 50 MB body: %.3f s\n", t);
		t0 = now();
		for (i = 0; i < 1000; i++)
			if ((ret = cache_body_read(c, mb2, 100000, (uint64_t)i * 52057 % big, chunk,
						   4096, &got)))
				die("cache_body_read", ret);
		t = now() - t0;
		printf("bodies: 4 KB read at a random offset of the 50 MB body: %.1f us\n",
		       t * 1e6 / 1000);
	}

	cache_close(c);
	t0 = now();
	if ((ret = cache_open(path, &params, &c)))
		die("cache_open", ret);
	t = now() - t0;
	{
		struct cache_stats st;

		cache_get_stats(c, &st);
		printf("open again (quick_check) with %.1f MB of bodies held: %.3f s\n",
		       st.body_bytes / 1e6, t);
	}
	cache_close(c);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	if (system(path) != 0)
		fprintf(stderr, "cache-bench: could not remove %s\n", dir);
	return 0;
}
