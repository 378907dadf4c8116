/* Unit tests of fs/sat: saturating sums of server-given sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sat_i.h"

static void test_sat_add(void **state)
{
	(void)state;
	assert_true(sat_add_u64(0, 0) == 0);
	assert_true(sat_add_u64(2, 3) == 5);
	assert_true(sat_add_u64(UINT64_MAX - 1, 1) == UINT64_MAX);
	assert_true(sat_add_u64(UINT64_MAX - 1, 2) == UINT64_MAX);
	assert_true(sat_add_u64(UINT64_MAX, UINT64_MAX) == UINT64_MAX);
	assert_true(sat_add_u64(1, UINT64_MAX) == UINT64_MAX);
}

/* the running "bytes before" of a listing never decreases, whatever the
 * server claims */
static void test_sat_running_sum(void **state)
{
	const uint64_t sizes[] = { 100, UINT64_MAX - 50, 7, UINT64_MAX, 1 };
	uint64_t sum = 0, prev = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		sum = sat_add_u64(sum, sizes[i]);
		assert_true(sum >= prev);
		prev = sum;
	}
	assert_true(sum == UINT64_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sat_add),
		cmocka_unit_test(test_sat_running_sum),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
