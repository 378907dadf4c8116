/* Unit tests of fs/names: mailbox name <-> file name mapping. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "names_i.h"

static void check_escape(const char *part, size_t len, const char *expected)
{
	char *esc = names_escape_part(part, len);
	char *back;
	size_t back_len = 12345;

	assert_non_null(esc);
	assert_string_equal(esc, expected);
	back = names_unescape_part(esc, &back_len);
	assert_non_null(back);
	assert_int_equal(back_len, len);
	assert_memory_equal(back, part, len);
	free(back);
	free(esc);
}

static void test_escape_plain(void **state)
{
	(void)state;
	check_escape("INBOX", 5, "INBOX");
	check_escape("Entwürfe", strlen("Entwürfe"), "Entwürfe");
	check_escape("日本語", strlen("日本語"), "日本語");
	check_escape("a&b", 3, "a&b");
	check_escape("a b.c", 5, "a b.c");
	check_escape("...", 3, "...");
	check_escape(".hidden", 7, ".hidden");
	check_escape("12.emlx", 7, "12.emlx");
	check_escape(".eml", 4, ".eml");
}

static void test_escape_special(void **state)
{
	(void)state;
	check_escape("a/b", 3, "a%2Fb");
	check_escape("100%", 4, "100%25");
	check_escape("%2F", 3, "%252F");
	check_escape(".", 1, "%2E");
	check_escape("..", 2, "%2E.");
	check_escape("", 0, "%");
	check_escape("%", 1, "%25");
	check_escape("a\tb\x7f", 4, "a%09b%7F");
	check_escape("nul\0x", 5, "nul%00x");
	check_escape("\n", 1, "%0A");
	/* would be taken for message 12 */
	check_escape("12.eml", 6, "%312.eml");
	check_escape("007.eml", 7, "%3007.eml");
}

static void check_unescape_fails(const char *name)
{
	size_t len;

	errno = 0;
	assert_null(names_unescape_part(name, &len));
	assert_int_equal(errno, EINVAL);
}

static void test_unescape_rejects(void **state)
{
	(void)state;
	check_unescape_fails("");
	check_unescape_fails(".");
	check_unescape_fails("..");
	check_unescape_fails("a%");
	check_unescape_fails("a%2");
	check_unescape_fails("a%2f");   /* lower case: not canonical */
	check_unescape_fails("%41");    /* 'A' needs no escape */
	check_unescape_fails("a%zzb");
	check_unescape_fails("%%");
	check_unescape_fails("12%2Eeml"); /* escapes the wrong byte */
	check_unescape_fails("..%2E");  /* '.' only escaped as a whole part */
}

static void check_path(const char *decoded, char delim, const char *expected)
{
	char *path = names_mailbox_path(decoded, delim);
	char *back;

	assert_non_null(path);
	assert_string_equal(path, expected);
	back = names_mailbox_from_path(path, delim);
	assert_non_null(back);
	assert_string_equal(back, decoded);
	free(back);
	free(path);
}

static void test_mailbox_path(void **state)
{
	(void)state;
	check_path("INBOX", '/', "INBOX");
	check_path("Lists/easy-ham-2", '/', "Lists/easy-ham-2");
	check_path("Lists.easy-ham-2", '.', "Lists/easy-ham-2");
	check_path("a/b.c", '.', "a%2Fb/c");
	check_path("x..y", '.', "x/%/y");
	check_path("Entwürfe", '/', "Entwürfe");
	check_path("../etc", '/', "%2E./etc");
	check_path("a/./b", '/', "a/%2E/b");
	check_path("flat/name", '\0', "flat%2Fname");
	check_path("INBOX.12.eml", '.', "INBOX/12/eml");
	check_path("INBOX/12.eml", '/', "INBOX/%312.eml");
}

static void test_mailbox_from_path_rejects(void **state)
{
	(void)state;
	/* a part holding the delimiter cannot be told from a level */
	errno = 0;
	assert_null(names_mailbox_from_path("a.b", '.'));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(names_mailbox_from_path("a/b", '\0'));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(names_mailbox_from_path("a/%00", '/'));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(names_mailbox_from_path("a/..", '/'));
	assert_int_equal(errno, EINVAL);
}

static void test_message_names(void **state)
{
	char buf[NAMES_MESSAGE_MAX];
	uint32_t uid = 0;

	(void)state;
	assert_int_equal(names_message_format(1, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "1.eml");
	assert_int_equal(names_message_format(UINT32_MAX, buf, sizeof(buf)), 14);
	assert_string_equal(buf, "4294967295.eml");
	assert_true(names_message_parse("4294967295.eml", &uid));
	assert_int_equal(uid, UINT32_MAX);
	assert_true(names_message_parse("42.eml", &uid));
	assert_int_equal(uid, 42);
	assert_false(names_message_parse("4294967296.eml", &uid));
	assert_false(names_message_parse("99999999999999999999.eml", &uid));
	assert_false(names_message_parse("0.eml", &uid));
	assert_false(names_message_parse("042.eml", &uid));
	assert_false(names_message_parse("42.EML", &uid));
	assert_false(names_message_parse("42.eml~", &uid));
	assert_false(names_message_parse("42", &uid));
	assert_false(names_message_parse(".eml", &uid));
	assert_false(names_message_parse("-1.eml", &uid));
	assert_false(names_message_parse("+1.eml", &uid));
	assert_false(names_message_parse(" 1.eml", &uid));
	assert_false(names_message_parse("", &uid));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_plain),
		cmocka_unit_test(test_escape_special),
		cmocka_unit_test(test_unescape_rejects),
		cmocka_unit_test(test_mailbox_path),
		cmocka_unit_test(test_mailbox_from_path_rejects),
		cmocka_unit_test(test_message_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
