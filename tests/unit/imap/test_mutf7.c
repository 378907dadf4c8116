/*
 * Modified UTF-7: round trips and every rejection listed in mutf7.h.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imapfs/mutf7.h"

static void check_pair(const char *utf8, const char *wire)
{
	char *enc = mutf7_encode(utf8, strlen(utf8));
	char *dec = mutf7_decode(wire, strlen(wire));

	assert_non_null(enc);
	assert_string_equal(enc, wire);
	assert_non_null(dec);
	assert_string_equal(dec, utf8);
	free(enc);
	free(dec);
}

static void test_round_trips(void **state)
{
	(void)state;
	check_pair("", "");
	check_pair("INBOX", "INBOX");
	check_pair("&", "&-");
	check_pair("a&b", "a&-b");
	check_pair("&&", "&-&-");
	check_pair("Tr\xc3\xa4sh", "Tr&AOQ-sh");                       /* ä */
	check_pair("\xc3\xa4\xc3\xa4", "&AOQA5A-");                     /* two in one run */
	check_pair("\xc3\xa4&", "&AOQ-&-");                             /* shift then & */
	check_pair("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
		   "~peter/mail/&U,BTFw-/&ZeVnLIqe-");                  /* RFC 3501 example */
	check_pair("\xf0\x9f\x98\x80", "&2D3eAA-");                     /* U+1F600, non-BMP */
	check_pair("a\xf0\x9f\x98\x80" "b\xf0\x90\x80\x80", "a&2D3eAA-b&2ADcAA-");
	check_pair("\x01", "&AAE-");                                    /* control char */
	check_pair("\x7f", "&AH8-");
	check_pair("a b/c.d", "a b/c.d");
	check_pair("\xe2\x82\xac", "&IKw-");                            /* euro sign */
}

static void check_decode_rejects(const char *wire, size_t len)
{
	errno = 0;
	char *d = mutf7_decode(wire, len);
	if (d)
		fail_msg("decoded \"%s\" to \"%s\"", wire, d);
	assert_int_equal(errno, EINVAL);
}

static void test_decode_rejects(void **state)
{
	(void)state;
	check_decode_rejects("&AC8-", 5);      /* "/" in base64 */
	check_decode_rejects("&AC4ALg-", 8);   /* ".." in base64 */
	check_decode_rejects("&ACY-", 5);      /* "&" in base64 */
	check_decode_rejects("&AEE-", 5);      /* "A" in base64 */
	check_decode_rejects("&AAA-", 5);      /* NUL */
	check_decode_rejects("a\0b", 3);       /* raw NUL */
	check_decode_rejects("&2D0-", 5);      /* lone high surrogate */
	check_decode_rejects("&3gA-", 5);      /* lone low surrogate */
	check_decode_rejects("&2D0AQQ-", 8);   /* high surrogate + 'A' */
	check_decode_rejects("&AOQA-", 6);     /* 18 bits left over... */
	check_decode_rejects("&AOQAAA-", 8);   /* NUL as the second unit */
	check_decode_rejects("&AOR-", 5);      /* padding bits not zero */
	check_decode_rejects("&AO-", 4);       /* fewer than 16 bits */
	check_decode_rejects("&AOQ", 4);       /* unterminated */
	check_decode_rejects("&", 1);
	check_decode_rejects("&AOQ-&AOQ-", 10); /* adjacent shifts */
	check_decode_rejects("Tr\xc3\xa4sh", 6); /* raw 8-bit */
	check_decode_rejects("a\x01", 2);       /* raw control */
	check_decode_rejects("a\r\nb", 4);
	check_decode_rejects("&A/Q-", 5);       /* '/' is not modified base64 */
	check_decode_rejects("&A=Q-", 5);
}

static void test_decode_accepts_edge(void **state)
{
	char *d;

	(void)state;
	/* length is honoured: a NUL-free prefix */
	d = mutf7_decode("abc&-def", 5);
	assert_non_null(d);
	assert_string_equal(d, "abc&");
	free(d);
	/* a run followed by literal text then another run is fine */
	d = mutf7_decode("&AOQ-x&AOQ-", 11);
	assert_non_null(d);
	assert_string_equal(d, "\xc3\xa4x\xc3\xa4");
	free(d);
}

static void check_encode_rejects(const char *utf8, size_t len)
{
	errno = 0;
	char *e = mutf7_encode(utf8, len);
	if (e)
		fail_msg("encoded invalid UTF-8 to \"%s\"", e);
	assert_int_equal(errno, EINVAL);
}

static void test_encode_rejects(void **state)
{
	(void)state;
	check_encode_rejects("a\0b", 3);
	check_encode_rejects("\xc3", 1);             /* truncated */
	check_encode_rejects("\xc3\x28", 2);         /* bad continuation */
	check_encode_rejects("\xc0\xaf", 2);         /* overlong "/" */
	check_encode_rejects("\xe0\x80\xaf", 3);     /* overlong */
	check_encode_rejects("\xed\xa0\x80", 3);     /* surrogate D800 */
	check_encode_rejects("\xf4\x90\x80\x80", 4); /* > U+10FFFF */
	check_encode_rejects("\xff", 1);
	check_encode_rejects("\x80", 1);
}

/* Every BMP and some astral code points survive encode -> decode. */
static void test_exhaustive_round_trip(void **state)
{
	(void)state;
	for (uint32_t cp = 1; cp < 0x110000; cp += (cp < 0x10000 ? 1 : 251)) {
		char u[8];
		size_t n;

		if (cp >= 0xd800 && cp <= 0xdfff)
			continue;
		if (cp < 0x80) {
			u[0] = (char)cp;
			n = 1;
		} else if (cp < 0x800) {
			u[0] = (char)(0xc0 | (cp >> 6));
			u[1] = (char)(0x80 | (cp & 0x3f));
			n = 2;
		} else if (cp < 0x10000) {
			u[0] = (char)(0xe0 | (cp >> 12));
			u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
			u[2] = (char)(0x80 | (cp & 0x3f));
			n = 3;
		} else {
			u[0] = (char)(0xf0 | (cp >> 18));
			u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
			u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
			u[3] = (char)(0x80 | (cp & 0x3f));
			n = 4;
		}
		u[n] = 'x';
		n++;
		char *e = mutf7_encode(u, n);
		assert_non_null(e);
		char *d = mutf7_decode(e, strlen(e));
		if (!d || strlen(d) != n || memcmp(d, u, n) != 0)
			fail_msg("U+%04X does not round trip (%s)", cp, e);
		free(e);
		free(d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_decode_accepts_edge),
		cmocka_unit_test(test_encode_rejects),
		cmocka_unit_test(test_exhaustive_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
