/*
 * The one quoting routine and the argument validators: atoms, quoted
 * strings, literals (synchronising or not), flag lists, sequence sets, and
 * the trace copy with credentials redacted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "quote_i.h"

/* quote s and compare the wire bytes (and number of sync points) */
static void check_quote(const char *s, size_t len, bool literal_plus, const char *wire,
			size_t wire_len, size_t nsync)
{
	struct imap_cmdbuf b;

	imap_cmdbuf_init(&b, literal_plus, false);
	assert_int_equal(imap_cmdbuf_add_string(&b, s, len, 0), 0);
	assert_int_equal(b.len, wire_len);
	assert_memory_equal(b.data, wire, wire_len);
	assert_int_equal(b.nsync, nsync);
	imap_cmdbuf_free(&b);
}

#define CHECK(s, lp, wire, nsync) check_quote(s, strlen(s), lp, wire, strlen(wire), nsync)

static void test_quote_choices(void **state)
{
	(void)state;
	CHECK("INBOX", false, "INBOX", 0);
	CHECK("Lists/easy-ham-2", false, "Lists/easy-ham-2", 0);
	CHECK("a]b", false, "a]b", 0); /* ASTRING-CHAR includes ']' */
	CHECK("Tr&AOQ-sh", false, "Tr&AOQ-sh", 0);
	CHECK("", false, "\"\"", 0);
	CHECK("NIL", false, "\"NIL\"", 0);
	CHECK("nil", false, "\"nil\"", 0);
	CHECK("a b", false, "\"a b\"", 0);
	CHECK("a\"b", false, "\"a\\\"b\"", 0);
	CHECK("a\\b", false, "\"a\\\\b\"", 0);
	CHECK("\"\\", false, "\"\\\"\\\\\"", 0);
	CHECK("%", false, "\"%\"", 0);
	CHECK("*", false, "\"*\"", 0);
	CHECK("(x)", false, "\"(x)\"", 0);
	CHECK("{5}", false, "\"{5}\"", 0);
	/* CR, LF, 8-bit, controls: a literal */
	CHECK("a\r\nb", true, "{4+}\r\na\r\nb", 0);
	CHECK("a\r\nb", false, "{4}\r\na\r\nb", 1);
	CHECK("a\nb", false, "{3}\r\na\nb", 1);
	CHECK("Tr\xc3\xa4sh", true, "{6+}\r\nTr\xc3\xa4sh", 0);
	CHECK("tab\there", true, "{8+}\r\ntab\there", 0);
	CHECK("\x7f", true, "{1+}\r\n\x7f", 0);
}

static void test_quote_rejects_nul(void **state)
{
	struct imap_cmdbuf b;

	(void)state;
	imap_cmdbuf_init(&b, true, false);
	assert_int_equal(imap_cmdbuf_add_string(&b, "a\0b", 3, 0), -1);
	imap_cmdbuf_free(&b);
}

static void test_quote_flags(void **state)
{
	struct imap_cmdbuf b;

	(void)state;
	imap_cmdbuf_init(&b, false, false);
	assert_int_equal(imap_cmdbuf_add_string(&b, "secret", 6, IMAP_QUOTE_NO_ATOM), 0);
	assert_int_equal(b.len, 8);
	assert_memory_equal(b.data, "\"secret\"", 8);
	imap_cmdbuf_free(&b);
}

/* LITERAL- (RFC 7888): non-synchronising only up to 4096 bytes */
static void test_literal_minus(void **state)
{
	struct imap_cmdbuf b;
	char *big = malloc(5000);

	(void)state;
	memset(big, '\n', 5000);
	imap_cmdbuf_init(&b, false, true);
	imap_cmdbuf_add_literal(&b, big, 4096);
	assert_memory_equal(b.data, "{4096+}\r\n", 9);
	assert_int_equal(b.nsync, 0);
	imap_cmdbuf_free(&b);
	imap_cmdbuf_init(&b, false, true);
	imap_cmdbuf_add_literal(&b, big, 4097);
	assert_memory_equal(b.data, "{4097}\r\n", 8);
	assert_int_equal(b.nsync, 1);
	assert_int_equal(b.sync[0], 8);
	imap_cmdbuf_free(&b);
	free(big);
}

/* A whole command and its trace: credentials and literals never shown. */
static void test_trace(void **state)
{
	struct imap_cmdbuf b;
	static const char wire[] = "A0001 LOGIN joe {7}\r\npa\r\nss!\r\n";

	(void)state;
	imap_cmdbuf_init(&b, false, false);
	imap_cmdbuf_add_raw(&b, "A0001 LOGIN ");
	assert_int_equal(imap_cmdbuf_add_string(&b, "joe", 3, IMAP_QUOTE_REDACT), 0);
	imap_cmdbuf_add_raw(&b, " ");
	assert_int_equal(imap_cmdbuf_add_string(&b, "pa\r\nss!", 7,
						IMAP_QUOTE_REDACT | IMAP_QUOTE_NO_ATOM),
			 0);
	imap_cmdbuf_end(&b);
	assert_int_equal(b.len, sizeof(wire) - 1);
	assert_memory_equal(b.data, wire, b.len);
	assert_int_equal(b.nsync, 1);
	assert_int_equal(b.sync[0], strlen("A0001 LOGIN joe {7}\r\n"));
	assert_string_equal(b.trace, "A0001 LOGIN <redacted> <redacted>");
	assert_null(strstr(b.trace, "pa"));
	imap_cmdbuf_free(&b);

	imap_cmdbuf_init(&b, true, false);
	imap_cmdbuf_add_raw(&b, "A0002 APPEND ");
	assert_int_equal(imap_cmdbuf_add_string(&b, "a \"b\"", 5, 0), 0);
	imap_cmdbuf_add_raw(&b, " ");
	imap_cmdbuf_add_literal(&b, "Subject: x\r\n\r\nsecret body\r\n", 27);
	imap_cmdbuf_end(&b);
	assert_string_equal(b.trace, "A0002 APPEND \"a \\\"b\\\"\" {27 bytes}");
	imap_cmdbuf_free(&b);
}

static void test_flags(void **state)
{
	static const struct {
		const char *in;
		const char *wire; /* NULL: rejected */
	} cases[] = {
		{ "\\Seen", "(\\Seen)" },
		{ "\\Seen \\Flagged $Label1 Junk", "(\\Seen \\Flagged $Label1 Junk)" },
		{ "", "()" },
		{ "  \\Seen   foo  ", "(\\Seen foo)" },
		{ "\\Deleted", "(\\Deleted)" },
		{ "\\", NULL },
		{ "\\*", NULL },
		{ "a(b", NULL },
		{ "a)b", NULL },
		{ "a\"b", NULL },
		{ "a]b", NULL },
		{ "a%b", NULL },
		{ "a*", NULL },
		{ "a{3}", NULL },
		{ "\\Se\\en", NULL },
		{ "caf\xc3\xa9", NULL },
		{ "a\tb", NULL },
		{ "a\r\nb", NULL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct imap_cmdbuf b;
		int r;

		imap_cmdbuf_init(&b, true, false);
		r = imap_cmdbuf_add_flag_list(&b, cases[i].in);
		assert_int_equal(imap_flags_valid(cases[i].in), cases[i].wire != NULL);
		if (cases[i].wire) {
			assert_int_equal(r, 0);
			assert_int_equal(b.len, strlen(cases[i].wire));
			assert_memory_equal(b.data, cases[i].wire, b.len);
		} else {
			if (r != -1)
				fail_msg("flags \"%s\" accepted", cases[i].in);
		}
		imap_cmdbuf_free(&b);
	}
}

static void test_sequence_sets(void **state)
{
	static const char *const good[] = { "1", "1:*", "4,7,9:12", "*", "*:4", "4294967295",
					    "1:4294967295", "10,20" };
	static const char *const bad[] = { "", "0", "1,", ",1", "1::2", "1:2:3", "a", "1 2",
					   "01", "4294967296", "1:0", "1;2", "1,,2", "1:",
					   ":1", "1 ", "1)" };

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!imap_sequence_set_valid(good[i]))
			fail_msg("\"%s\" rejected", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (imap_sequence_set_valid(bad[i]))
			fail_msg("\"%s\" accepted", bad[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote_choices),
		cmocka_unit_test(test_quote_rejects_nul),
		cmocka_unit_test(test_quote_flags),
		cmocka_unit_test(test_literal_minus),
		cmocka_unit_test(test_trace),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_sequence_sets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
