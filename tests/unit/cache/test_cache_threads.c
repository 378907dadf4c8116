/*
 * Concurrency: reader threads walk listings, look messages up and read
 * bodies while one thread applies batches and another streams bodies
 * (small ones and ones spanning several chunks) under an eviction budget.
 * Readers check what they see: a listing is one generation of flags
 * (batches are atomic), generations never go back, and a body that is
 * visible is complete and byte-exact. Run under ASan (the test build) and
 * by hand under TSan.
 */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>

#define READERS 4
#define MESSAGES 300
#define GENERATIONS 40
#define BODY_ROUNDS 3

struct shared {
	struct cache *c;
	int64_t mb;
	int stop;            /* atomic */
	int errors;          /* atomic */
	uint64_t reads;      /* atomic: bodies read and checked */
	uint64_t listings;   /* atomic */
};

static void report(struct shared *s, const char *what, uint32_t uid, int ret)
{
	fprintf(stderr, "reader: %s (uid %u): %d\n", what, uid, ret);
	__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
}

static uint64_t body_size_of(uint32_t uid)
{
	/* every 10th body spans chunks, one of them exactly two */
	if (uid % 10 == 0)
		return uid == 100 ? 2 * CACHE_BODY_CHUNK : CACHE_BODY_CHUNK + 1000 + uid;
	return 100 + uid * 37;
}

struct listing {
	int gen;
	int mixed;
	uint32_t last_uid;
	uint64_t n;
	int unordered;
};

static int listing_cb(void *ctx, const struct cache_message *m)
{
	struct listing *l = ctx;
	int gen = atoi(m->flags + 1); /* "g<gen>" */

	if (l->n == 0)
		l->gen = gen;
	else if (gen != l->gen)
		l->mixed = 1;
	if (l->n && m->uid <= l->last_uid)
		l->unordered = 1;
	l->last_uid = m->uid;
	l->n++;
	return 0;
}

static void *reader(void *arg)
{
	struct shared *s = arg;
	unsigned char *buf = malloc(2 * CACHE_BODY_CHUNK + 16);
	unsigned seed = (unsigned)(uintptr_t)pthread_self();
	int last_gen = -1;

	if (!buf) {
		report(s, "malloc", 0, -ENOMEM);
		return NULL;
	}
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		struct listing l = { 0 };
		struct cache_message m;
		uint32_t uid = 1 + (uint32_t)(rand_r(&seed) % MESSAGES);
		uint64_t size = 0, off;
		size_t got = 0, len;
		int ret;

		ret = cache_message_list(s->c, s->mb, listing_cb, &l);
		if (ret)
			report(s, "cache_message_list", 0, ret);
		if (l.mixed)
			report(s, "a listing mixes two batches", 0, l.gen);
		if (l.unordered)
			report(s, "a listing is not in UID order", l.last_uid, 0);
		if (l.n && l.n != MESSAGES)
			report(s, "a listing has a partial batch", 0, (int)l.n);
		if (l.n && l.gen < last_gen)
			report(s, "generations went back", 0, l.gen);
		if (l.n)
			last_gen = l.gen;
		__atomic_add_fetch(&s->listings, 1, __ATOMIC_RELAXED);

		ret = cache_message_get(s->c, s->mb, uid, &m);
		if (ret && ret != -ENOENT)
			report(s, "cache_message_get", uid, ret);
		if (ret == 0 && (m.uid != uid || m.size != body_size_of(uid)))
			report(s, "cache_message_get: wrong message", uid, 0);

		/* a whole body, or a piece of it at a random offset */
		if (rand_r(&seed) % 2) {
			off = 0;
			len = 2 * CACHE_BODY_CHUNK + 16;
		} else {
			off = (uint64_t)rand_r(&seed) % body_size_of(uid);
			len = 1 + (size_t)(rand_r(&seed) % 70000);
		}
		ret = cache_body_read(s->c, s->mb, uid, off, buf, len, &got);
		if (ret == -ENOENT)
			continue;
		if (ret) {
			report(s, "cache_body_read", uid, ret);
			continue;
		}
		size = body_size_of(uid);
		if (got != (size - off < len ? size - off : len))
			report(s, "cache_body_read: short read of a visible body", uid, (int)got);
		else if (tcache_check(buf, uid, off, got))
			report(s, "cache_body_read: wrong bytes", uid, 0);
		else
			__atomic_add_fetch(&s->reads, 1, __ATOMIC_RELAXED);
		if (cache_body_has(s->c, s->mb, uid, &size) && size != body_size_of(uid))
			report(s, "cache_body_has: wrong size", uid, (int)size);
	}
	free(buf);
	return NULL;
}

static void *batch_writer(void *arg)
{
	struct shared *s = arg;
	char flags[16];
	int gen, ret;

	for (gen = 1; gen <= GENERATIONS; gen++) {
		struct cache_batch *b = NULL;
		uint32_t uid;

		snprintf(flags, sizeof(flags), "g%d", gen);
		ret = cache_batch_begin(s->c, s->mb, &b);
		/* every few generations drop everything first, in the same batch */
		if (ret == 0 && gen % 7 == 0)
			ret = cache_batch_retain(b, NULL, 0);
		for (uid = 1; ret == 0 && uid <= MESSAGES; uid++) {
			struct cache_message m = {
				.uid = uid, .size = body_size_of(uid), .flags = flags
			};
			ret = cache_batch_put(b, &m);
		}
		if (ret == 0)
			ret = cache_batch_commit(b);
		else
			cache_batch_abort(b);
		if (ret)
			report(s, "batch", 0, ret);
	}
	return NULL;
}

static void *body_writer(void *arg)
{
	struct shared *s = arg;
	int round, ret;

	for (round = 0; round < BODY_ROUNDS; round++) {
		uint32_t uid;

		for (uid = 1; uid <= MESSAGES; uid++) {
			if (round == 1 && uid % 50 == 1 && cache_write_begin(s->c))
				report(s, "cache_write_begin", uid, -1);
			/* odd piece sizes; some bodies are replaced while read */
			ret = tcache_put_body(s->c, s->mb, uid, body_size_of(uid), 3000 + uid);
			/* retain (in a batch) may remove the mailbox's bodies
			 * meanwhile: never a failure otherwise */
			if (ret && ret != -ENOENT)
				report(s, "body", uid, ret);
			if (round == 1 && (uid % 50 == 0 || uid == MESSAGES) &&
			    cache_write_commit(s->c))
				report(s, "cache_write_commit", uid, -1);
			if (uid % 37 == 0 && cache_body_delete(s->c, s->mb, uid - 1) == -EIO)
				report(s, "cache_body_delete", uid, -EIO);
		}
	}
	return NULL;
}

static void test_readers_and_writers(void **state)
{
	struct tcache t;
	struct shared s = { 0 };
	pthread_t readers[READERS], bw, mw;
	struct cache_stats st;
	int i;

	(void)state;
	tcache_dir(&t);
	/* a budget smaller than what is written: eviction runs concurrently */
	s.c = tcache_open(t.path, 3 * CACHE_BODY_CHUNK);
	s.mb = tcache_mailbox(s.c, "INBOX", 1);
	for (i = 0; i < READERS; i++)
		assert_int_equal(pthread_create(&readers[i], NULL, reader, &s), 0);
	assert_int_equal(pthread_create(&mw, NULL, batch_writer, &s), 0);
	assert_int_equal(pthread_create(&bw, NULL, body_writer, &s), 0);
	pthread_join(mw, NULL);
	pthread_join(bw, NULL);
	__atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < READERS; i++)
		pthread_join(readers[i], NULL);

	assert_int_equal(s.errors, 0);
	assert_true(s.listings > 0);
	assert_true(s.reads > 0);
	cache_get_stats(s.c, &st);
	assert_true(st.evictions > 0);
	assert_true(st.body_bytes <= 3 * CACHE_BODY_CHUNK + 2 * CACHE_BODY_CHUNK);
	assert_int_equal(tcache_sql_int(s.c, "SELECT count(*) FROM body WHERE complete = 1"),
			 st.bodies);
	assert_int_equal(tcache_sql_int(s.c, "SELECT total(size) FROM body WHERE complete = 1"),
			 st.body_bytes);
	assert_int_equal(tcache_sql_int(s.c, "SELECT count(*) FROM body WHERE complete = 0"), 0);
	printf("listings %llu, bodies read and checked %llu, evictions %llu\n",
	       (unsigned long long)s.listings, (unsigned long long)s.reads,
	       (unsigned long long)st.evictions);
	cache_close(s.c);
	tcache_assert_integrity(t.path);
	tcache_rmrf(t.dir);
}

/* Threads that come and go: each opens its own connection, which closes
 * when the thread exits; cache_close closes the rest. */
static void *short_lived(void *arg)
{
	struct shared *s = arg;
	struct cache_message m;

	if (cache_message_get(s->c, s->mb, 1, &m) != 0)
		__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
	return NULL;
}

static void test_threads_come_and_go(void **state)
{
	struct tcache t;
	struct shared s = { 0 };
	struct cache_batch *b = NULL;
	struct cache_message m = { .uid = 1, .flags = "" };
	pthread_t th[8];
	int i, round;

	(void)state;
	tcache_dir(&t);
	s.c = tcache_open(t.path, 0);
	s.mb = tcache_mailbox(s.c, "INBOX", 1);
	assert_int_equal(cache_batch_begin(s.c, s.mb, &b), 0);
	assert_int_equal(cache_batch_put(b, &m), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	for (round = 0; round < 20; round++) {
		for (i = 0; i < 8; i++)
			assert_int_equal(pthread_create(&th[i], NULL, short_lived, &s), 0);
		for (i = 0; i < 8; i++)
			pthread_join(th[i], NULL);
	}
	assert_int_equal(s.errors, 0);
	cache_close(s.c);
	tcache_rmrf(t.dir);
}

static void *leave_group_open(void *arg)
{
	struct shared *s = arg;

	if (cache_write_begin(s->c) != 0 || tcache_put_body(s->c, s->mb, 7, 100, 100) != 0)
		__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
	return NULL; /* exits without cache_write_commit */
}

static void test_thread_exits_inside_group(void **state)
{
	struct tcache t;
	struct shared s = { 0 };
	pthread_t th;

	(void)state;
	tcache_dir(&t);
	s.c = tcache_open(t.path, 0);
	s.mb = tcache_mailbox(s.c, "INBOX", 1);
	assert_int_equal(pthread_create(&th, NULL, leave_group_open, &s), 0);
	pthread_join(th, NULL);
	assert_int_equal(s.errors, 0);
	/* its group was rolled back, and writers are not blocked */
	assert_false(cache_body_has(s.c, s.mb, 7, NULL));
	assert_int_equal(tcache_put_body(s.c, s.mb, 8, 100, 100), 0);
	assert_true(cache_body_has(s.c, s.mb, 8, NULL));
	cache_close(s.c);
	tcache_rmrf(t.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_readers_and_writers),
		cmocka_unit_test(test_threads_come_and_go),
		cmocka_unit_test(test_thread_exits_inside_group),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
