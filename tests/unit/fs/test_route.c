/* Unit tests of fs/route.c: which pool worker runs which job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "route_i.h"

/* four workers: 0 idle with Big, 1 busy with Big, 2 idle with INBOX, 3 idle with none */
static const struct route_worker four[] = {
	{ .present = true, .busy = false, .mailbox = "Big" },
	{ .present = true, .busy = true, .mailbox = "Big" },
	{ .present = true, .busy = false, .mailbox = "INBOX" },
	{ .present = true, .busy = false, .mailbox = NULL },
};

static void test_urgent_any_mailbox(void **state)
{
	(void)state;
	for (size_t i = 0; i < 4; i++)
		assert_true(route_urgent(four, 4, i, NULL));
}

static void test_urgent_left_to_idle_worker_with_it(void **state)
{
	(void)state;
	assert_true(route_urgent(four, 4, 0, "Big"));  /* has it */
	assert_false(route_urgent(four, 4, 2, "Big")); /* 0 is idle with Big */
	assert_false(route_urgent(four, 4, 3, "Big"));
	/* a mailbox nobody has: whoever comes first */
	assert_true(route_urgent(four, 4, 3, "Spam"));
	assert_true(route_urgent(four, 4, 2, "Spam"));
}

static void test_urgent_not_left_to_busy_worker(void **state)
{
	/* only a busy worker has Big: a reader waits, so another takes it */
	struct route_worker w[] = {
		{ .present = true, .busy = true, .mailbox = "Big" },
		{ .present = true, .busy = false, .mailbox = "INBOX" },
	};

	(void)state;
	assert_true(route_urgent(w, 2, 1, "Big"));
}

static void test_urgent_absent_worker_does_not_count(void **state)
{
	struct route_worker w[] = {
		{ .present = false, .busy = false, .mailbox = "Big" },
		{ .present = true, .busy = false, .mailbox = NULL },
	};

	(void)state;
	assert_true(route_urgent(w, 2, 1, "Big"));
}

static void test_background_own_mailbox_first(void **state)
{
	(void)state;
	assert_int_equal(route_background(four, 4, 0, "Big", 1), ROUTE_TAKE);
	assert_int_equal(route_background(four, 4, 0, "Big", 5), ROUTE_TAKE);
	assert_int_equal(route_background(four, 4, 3, NULL, 1), ROUTE_TAKE);
	/* nobody has Spam */
	assert_int_equal(route_background(four, 4, 3, "Spam", 1), ROUTE_TAKE);
}

static void test_background_others_take_the_last(void **state)
{
	(void)state;
	/* one job for Big: left to the workers that have it */
	assert_int_equal(route_background(four, 4, 2, "Big", 1), ROUTE_SKIP);
	assert_int_equal(route_background(four, 4, 3, "Big", 1), ROUTE_SKIP);
	/* more queued: another worker takes the one needed latest */
	assert_int_equal(route_background(four, 4, 2, "Big", 2), ROUTE_TAKE_LAST);
	assert_int_equal(route_background(four, 4, 3, "Big", 7), ROUTE_TAKE_LAST);
}

static void test_background_busy_owner_still_counts(void **state)
{
	/* the only worker with Big is busy: a lone job waits for it */
	struct route_worker w[] = {
		{ .present = true, .busy = true, .mailbox = "Big" },
		{ .present = true, .busy = false, .mailbox = NULL },
	};

	(void)state;
	assert_int_equal(route_background(w, 2, 1, "Big", 1), ROUTE_SKIP);
	assert_int_equal(route_background(w, 2, 1, "Big", 2), ROUTE_TAKE_LAST);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_urgent_any_mailbox),
		cmocka_unit_test(test_urgent_left_to_idle_worker_with_it),
		cmocka_unit_test(test_urgent_not_left_to_busy_worker),
		cmocka_unit_test(test_urgent_absent_worker_does_not_count),
		cmocka_unit_test(test_background_own_mailbox_first),
		cmocka_unit_test(test_background_others_take_the_last),
		cmocka_unit_test(test_background_busy_owner_still_counts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
