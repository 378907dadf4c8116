/* Unit tests of fs/outmsg: the bytes of a new message sent with APPEND. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "outmsg_i.h"

static void check_crlf(const char *in, size_t len, const char *want, size_t want_len)
{
	size_t got_len = 12345;
	char *got = outmsg_crlf(in, len, &got_len);

	assert_non_null(got);
	assert_int_equal(got_len, want_len);
	assert_memory_equal(got, want, want_len);
	assert_int_equal(got[got_len], '\0');
	free(got);
}

#define CRLF(in, want) check_crlf(in, sizeof(in) - 1, want, sizeof(want) - 1)

static void test_crlf(void **state)
{
	(void)state;
	CRLF("", "");
	CRLF("a", "a");
	CRLF("\n", "\r\n");
	CRLF("a\nb\n", "a\r\nb\r\n");
	CRLF("a\r\nb\r\n", "a\r\nb\r\n");
	CRLF("a\r\nb\nc\r\n\nd", "a\r\nb\r\nc\r\n\r\nd");
	CRLF("\n\n", "\r\n\r\n");
	CRLF("bare\rcr\n", "bare\rcr\r\n");
	CRLF("nul\0byte\n", "nul\0byte\r\n");
	CRLF("\r\r\n", "\r\r\n");
}

static void check_mid(const char *in, const char *want)
{
	char *got = outmsg_message_id(in, strlen(in));

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_message_id(void **state)
{
	(void)state;
	check_mid("Message-ID: <a@b>\n\nbody", "<a@b>");
	check_mid("From: x\r\nmessage-id:   <a.b@c>  \r\nTo: y\r\n\r\nbody", "<a.b@c>");
	check_mid("MESSAGE-ID:<x@y>\n", "<x@y>");
	check_mid("Message-ID:\n <folded@z>\nTo: y\n\n", "<folded@z>");
	check_mid("From: x\n\nMessage-ID: <in-body@z>\n", "");
	check_mid("From: x\r\n\r\nMessage-ID: <in-body@z>\r\n", "");
	check_mid("", "");
	check_mid("Message-IDX: <no@z>\n\n", "");
	check_mid("Subject: Message-ID: <no@z>\n\n", "");
}

/* The daemon hands over exactly the bytes written, with no NUL after them
 * (ASan catches a read past the end); a "value" longer than any header
 * line is no Message-ID. */
static void test_message_id_unterminated(void **state)
{
	static const char text[] = "From: x\nMessage-ID: <end@z>";
	size_t big = 4000;
	char *buf = malloc(sizeof(text) - 1), *got;

	(void)state;
	assert_non_null(buf);
	memcpy(buf, text, sizeof(text) - 1);
	got = outmsg_message_id(buf, sizeof(text) - 1);
	assert_string_equal(got, "<end@z>");
	free(got);
	free(buf);

	buf = malloc(12 + big);
	assert_non_null(buf);
	memcpy(buf, "Message-ID: ", 12);
	memset(buf + 12, 'x', big);
	got = outmsg_message_id(buf, 12 + big);
	assert_string_equal(got, "");
	free(got);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crlf),
		cmocka_unit_test(test_message_id),
		cmocka_unit_test(test_message_id_unterminated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
