/* Unit tests of fs/recent.c: bodies just fetched, kept for the next read. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recent_i.h"

static char *dup_bytes(const char *s, size_t len)
{
	char *p = malloc(len ? len : 1);

	assert_non_null(p);
	memcpy(p, s, len);
	return p;
}

static void put(struct recent *r, int64_t mb, uint32_t uv, uint32_t uid, const char *s)
{
	assert_int_equal(recent_put(r, mb, uv, uid, dup_bytes(s, strlen(s)), strlen(s)), 0);
}

static void test_read_whole_drops(void **state)
{
	struct recent *r = recent_new(1024, 512);
	struct recent_stats st;
	char buf[64];
	size_t got = 99;

	(void)state;
	assert_non_null(r);
	put(r, 1, 7, 42, "hello world");
	assert_int_equal(recent_read(r, 1, 7, 42, 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 11);
	assert_memory_equal(buf, "hello world", 11);
	/* read to its end: gone, the page cache has it */
	assert_int_equal(recent_read(r, 1, 7, 42, 0, buf, sizeof(buf), &got), -ENOENT);
	recent_stats(r, &st);
	assert_int_equal(st.count, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 1);
	recent_free(r);
}

static void test_take_hands_over_the_body(void **state)
{
	struct recent *r = recent_new(1024, 512);
	struct recent_stats st;
	char *data = NULL, buf[8];
	size_t len = 0, got = 0;

	(void)state;
	assert_non_null(r);
	put(r, 1, 7, 3, "hello, world");
	put(r, 1, 7, 4, "other");
	assert_int_equal(recent_take(r, 1, 7, 3, &data, &len), 0);
	assert_int_equal(len, 12);
	assert_memory_equal(data, "hello, world", 12);
	free(data);
	/* gone: neither taken nor read again, the other one stays */
	assert_int_equal(recent_take(r, 1, 7, 3, &data, &len), -ENOENT);
	assert_int_equal(recent_read(r, 1, 7, 3, 0, buf, sizeof(buf), &got), -ENOENT);
	assert_int_equal(recent_take(r, 1, 8, 4, &data, &len), -ENOENT);
	recent_stats(r, &st);
	assert_int_equal(st.count, 1);
	assert_int_equal(st.bytes, 5);
	recent_free(r);
}

static void test_partial_reads(void **state)
{
	struct recent *r = recent_new(1024, 512);
	char buf[8];
	size_t got;

	(void)state;
	put(r, 1, 7, 1, "0123456789");
	/* a read short of the end keeps it, at any offset */
	assert_int_equal(recent_read(r, 1, 7, 1, 2, buf, 3, &got), 0);
	assert_int_equal(got, 3);
	assert_memory_equal(buf, "234", 3);
	assert_int_equal(recent_read(r, 1, 7, 1, 0, buf, 4, &got), 0);
	assert_memory_equal(buf, "0123", 4);
	/* the tail: served, then dropped */
	assert_int_equal(recent_read(r, 1, 7, 1, 6, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 4);
	assert_memory_equal(buf, "6789", 4);
	assert_int_equal(recent_read(r, 1, 7, 1, 0, buf, 1, &got), -ENOENT);
	/* past the end: 0 bytes, and dropped */
	put(r, 1, 7, 2, "abc");
	got = 99;
	assert_int_equal(recent_read(r, 1, 7, 2, 10, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 0);
	assert_int_equal(recent_read(r, 1, 7, 2, 0, buf, 1, &got), -ENOENT);
	recent_free(r);
}

static void test_key_has_uidvalidity_and_mailbox(void **state)
{
	struct recent *r = recent_new(1024, 512);
	char buf[16];
	size_t got;

	(void)state;
	put(r, 1, 7, 5, "old");
	/* same UID, another UIDVALIDITY (a recreated mailbox) or mailbox: no */
	assert_int_equal(recent_read(r, 1, 8, 5, 0, buf, sizeof(buf), &got), -ENOENT);
	assert_int_equal(recent_read(r, 2, 7, 5, 0, buf, sizeof(buf), &got), -ENOENT);
	/* the same key again replaces */
	put(r, 1, 7, 5, "newer");
	assert_int_equal(recent_read(r, 1, 7, 5, 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 5);
	assert_memory_equal(buf, "newer", 5);
	recent_free(r);
}

static void test_budget_drops_oldest(void **state)
{
	struct recent *r = recent_new(100, 60);
	struct recent_stats st;
	char body[41], buf[64];
	size_t got;

	(void)state;
	memset(body, 'x', 40);
	body[40] = '\0';
	put(r, 1, 1, 1, body);
	put(r, 1, 1, 2, body);
	put(r, 1, 1, 3, body); /* 120 > 100: the first goes */
	recent_stats(r, &st);
	assert_int_equal(st.count, 2);
	assert_int_equal(st.bytes, 80);
	assert_int_equal(st.evicted, 1);
	assert_int_equal(recent_read(r, 1, 1, 1, 0, buf, sizeof(buf), &got), -ENOENT);
	assert_int_equal(recent_read(r, 1, 1, 2, 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(recent_read(r, 1, 1, 3, 0, buf, sizeof(buf), &got), 0);
	/* over max_body: refused, the bytes freed (ASan checks) */
	assert_int_equal(recent_put(r, 1, 1, 4, dup_bytes(body, 40), 61), -E2BIG);
	recent_free(r);
}

static void test_many_keys(void **state)
{
	struct recent *r = recent_new(1 << 20, 1024);
	char buf[32], want[32];
	size_t got;

	(void)state;
	/* more entries than buckets: chains work */
	for (uint32_t uid = 1; uid <= 10000; uid++) {
		int n = snprintf(want, sizeof(want), "body %u", uid);

		assert_int_equal(recent_put(r, uid % 3, 9, uid, dup_bytes(want, (size_t)n), (size_t)n),
				 0);
	}
	for (uint32_t uid = 10000; uid >= 1; uid--) {
		int n = snprintf(want, sizeof(want), "body %u", uid);

		assert_int_equal(recent_read(r, uid % 3, 9, uid, 0, buf, sizeof(buf), &got), 0);
		assert_int_equal(got, (size_t)n);
		assert_memory_equal(buf, want, got);
	}
	recent_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_whole_drops),
		cmocka_unit_test(test_take_hands_over_the_body),
		cmocka_unit_test(test_partial_reads),
		cmocka_unit_test(test_key_has_uidvalidity_and_mailbox),
		cmocka_unit_test(test_budget_drops_oldest),
		cmocka_unit_test(test_many_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
