/*
 * cache-bench: how fast the cache does what the fs daemon asks of it.
 * Built, not registered as a test (no timing asserts anywhere).
 *
 *   cache-bench [folder]    (default: $TMPDIR or /tmp)
 *
 * Prints: storing 100,000 messages' metadata in one batch, listing them
 * back, looking each up by UID; streaming 6,000 bodies of ~5.5 KB (~33 MB)
 * with one transaction per body and grouped with cache_write_begin, and
 * reading them back; a 4 KB read in a 50 MB body; opening the result again.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imapfs/cache.h"

#define MESSAGES 100000
#define BODIES 6000
#define GROUP 100

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int ret)
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

static size_t body_size(uint32_t uid)
{
	return 3000 + (uid * 7919u) % 5000; /* 3,000 .. 7,999, mean ~5.5 KB */
}

static double stream_bodies(struct cache *c, int64_t mb, bool grouped, uint64_t *bytes)
{
	static unsigned char data[8192];
	double t0 = now();
	uint32_t uid;
	int ret;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)("From: a@b\r\nSubject: x\r\n\r\nhello world "[i % 38]);
	*bytes = 0;
	for (uid = 1; uid <= BODIES; uid++) {
		struct cache_body_writer *w = NULL;
		size_t size = body_size(uid), off = 0;

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
		if (grouped && (uid % GROUP == 0 || uid == BODIES) && (ret = cache_write_commit(c)))
			die("cache_write_commit", ret);
		*bytes += size;
	}
	return now() - t0;
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

int main(int argc, char **argv)
{
	const char *tmp = argc > 1 ? argv[1] : getenv("TMPDIR");
	char dir[512], path[600];
	struct cache_params params = { 0 };
	struct cache_mailbox mbox = { .name = "INBOX", .server_name = "INBOX", .delimiter = '/' };
	struct cache_batch *b = NULL;
	struct cache *c = NULL;
	struct cache_message m;
	int64_t mb = 0, mb2 = 0, mb3 = 0;
	uint64_t n = 0, bytes = 0;
	double t0, t;
	uint32_t uid;
	int ret;

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
