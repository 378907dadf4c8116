/* Unit tests of fs/flags: "+flag -flag" change lists of user.imap.flags. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "flags_i.h"

static void check_change(const char *in, int want, const char *add, const char *rem)
{
	char *a = NULL, *r = NULL;

	assert_int_equal(flags_parse_change(in, strlen(in) + 1, &a, &r), want);
	if (want == 1) {
		assert_string_equal(a, add);
		assert_string_equal(r, rem);
	} else {
		assert_null(a);
		assert_null(r);
	}
	free(a);
	free(r);
}

static void test_change(void **state)
{
	(void)state;
	check_change("+\\Flagged -\\Seen", 1, "\\Flagged", "\\Seen");
	check_change("+$Tag1 +$Tag2", 1, "$Tag1 $Tag2", "");
	check_change("-$Tag1\t-$work\n", 1, "", "$Tag1 $work");
	check_change("+\\flagged +\\FLAGGED", 1, "\\Flagged", "");
	check_change("\\Seen \\Flagged", 0, NULL, NULL);
	check_change("", 0, NULL, NULL);
	check_change("$Only", 0, NULL, NULL);
}

static void test_change_bad(void **state)
{
	(void)state;
	check_change("+\\Flagged \\Seen", -EINVAL, NULL, NULL);
	check_change("\\Seen -\\Flagged", -EINVAL, NULL, NULL);
	check_change("+\\Bogus", -EINVAL, NULL, NULL);
	check_change("+$Fine -a(b", -EINVAL, NULL, NULL);
	check_change("+", -EINVAL, NULL, NULL);
	check_change("-\\Recent", -EINVAL, NULL, NULL);
	check_change("+br{ace", -EINVAL, NULL, NULL);
}

static void check_apply(const char *cur, const char *add, const char *rem, const char *want)
{
	char *got = flags_apply_change(cur, add, rem);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_apply(void **state)
{
	(void)state;
	check_apply("", "", "", "");
	check_apply("\\Seen $Work", "\\Flagged", "\\Seen", "$Work \\Flagged");
	check_apply("\\Seen", "\\Seen", "", "\\Seen");
	check_apply("$a $B", "$b $c", "", "$a $B $c");
	check_apply("$a $B", "", "$b $zz", "$a");
	check_apply("$a", "$new", "$new", "$a");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_change),
		cmocka_unit_test(test_change_bad),
		cmocka_unit_test(test_apply),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
