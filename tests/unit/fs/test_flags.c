/* Unit tests of fs/flags: user.imap.flags values. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "flags_i.h"

static void check_ok(const char *in, size_t len, const char *expected)
{
	char *out = NULL;

	assert_int_equal(flags_parse(in, len, &out), 0);
	assert_non_null(out);
	assert_string_equal(out, expected);
	free(out);
}

static void check_bad(const char *in)
{
	char *out = (char *)"untouched";

	assert_int_equal(flags_parse(in, strlen(in), &out), -EINVAL);
	assert_string_equal(out, "untouched");
}

static void test_flags_ok(void **state)
{
	(void)state;
	check_ok("", 0, "");
	check_ok("   \n", 4, "");
	check_ok("\\Seen", 5, "\\Seen");
	check_ok("\\seen \\FLAGGED", 14, "\\Seen \\Flagged");
	check_ok("  \\Seen\t$Label1\n", 16, "\\Seen $Label1");
	check_ok("\\Seen \\seen $a $A", 17, "\\Seen $a");
	check_ok("\\Answered \\Deleted \\Draft", 25, "\\Answered \\Deleted \\Draft");
	check_ok("Junk NonJunk", 12, "Junk NonJunk");
	/* setfattr may pass the terminating NUL */
	check_ok("\\Seen\0", 6, "\\Seen");
	/* length is honoured */
	check_ok("\\Seen \\Flagged", 5, "\\Seen");
}

static void test_flags_bad(void **state)
{
	(void)state;
	check_bad("\\Recent");
	check_bad("\\Bogus");
	check_bad("\\");
	check_bad("(\\Seen)");
	check_bad("a\"b");
	check_bad("a%b");
	check_bad("a*");
	check_bad("a]b");
	check_bad("k\\w");
	check_bad("caf\xc3\xa9");
	check_bad("a{3}");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flags_ok),
		cmocka_unit_test(test_flags_bad),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
