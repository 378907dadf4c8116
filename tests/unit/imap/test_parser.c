/*
 * Response parser: every response form, fed whole, one byte at a time and
 * split at every boundary (the results must be identical); literals whose
 * content looks like protocol lines; every limit and syntax error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parser_i.h"

/* ------------------------------------------------------------------ */
/* a growable text buffer for canonical dumps */

struct text {
	char *s;
	size_t len;
	size_t cap;
};

static void text_add(struct text *t, const void *p, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		t->s = realloc(t->s, t->cap);
		assert_non_null(t->s);
	}
	memcpy(t->s + t->len, p, n);
	t->len += n;
	t->s[t->len] = '\0';
}

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(buf));
	text_add(t, buf, (size_t)n);
}

static void text_escaped(struct text *t, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c >= 0x7f || c == '\\' || c == '"')
			text_printf(t, "\\x%02x", c);
		else
			text_add(t, &s[i], 1);
	}
}

static void dump_value(struct text *t, const struct imap_value *v)
{
	switch (v->type) {
	case IMAP_VAL_ATOM:
		text_add(t, v->str, v->len);
		break;
	case IMAP_VAL_STRING:
		text_add(t, v->literal ? "L\"" : "\"", v->literal ? 2 : 1);
		text_escaped(t, v->str, v->len);
		text_add(t, "\"", 1);
		break;
	case IMAP_VAL_NIL:
		text_add(t, "NIL", 3);
		break;
	case IMAP_VAL_STREAMED:
		text_printf(t, "<streamed %llu>", (unsigned long long)v->size);
		break;
	case IMAP_VAL_LIST:
		text_add(t, "(", 1);
		for (size_t i = 0; i < v->count; i++) {
			if (i)
				text_add(t, " ", 1);
			dump_value(t, v->items[i]);
		}
		text_add(t, ")", 1);
		break;
	}
}

static void dump_response(struct text *t, const struct imap_response *r)
{
	switch (r->type) {
	case IMAP_RESP_CONTINUATION:
		text_printf(t, "+[%s]", r->text);
		break;
	case IMAP_RESP_TAGGED:
		text_printf(t, "T[%s] ", r->tag);
		break;
	case IMAP_RESP_UNTAGGED:
		text_add(t, "* ", 2);
		break;
	}
	if (r->type != IMAP_RESP_CONTINUATION) {
		if (r->has_number)
			text_printf(t, "#%u ", r->number);
		text_printf(t, "%s", r->keyword);
		if (r->is_status)
			text_printf(t, " code=[%s] args=[%s] text=[%s]", r->code,
				    r->code_args ? r->code_args : "(null)", r->text);
		else {
			text_add(t, " ", 1);
			dump_value(t, &r->args);
		}
	}
	text_add(t, "\n", 1);
}

/* ------------------------------------------------------------------ */
/* feeding */

struct run {
	struct text out;      /* dumped responses and streamed literal events */
	struct text streamed; /* raw bytes of streamed literals */
	char error[200];
	size_t used_total;
	bool reject_all;
};

static enum imap_literal_action test_literal_begin(void *ctx, const struct imap_literal_info *info)
{
	struct run *r = ctx;

	if (r->reject_all || strcmp(info->resp->keyword, "REJECTME") == 0)
		return IMAP_LITERAL_REJECT;
	if (info->depth == 1 && info->item && info->item->type == IMAP_VAL_ATOM &&
	    strncmp(info->item->str, "BODY[", 5) == 0) {
		text_printf(&r->out, "begin %s %llu\n", info->item->str,
			    (unsigned long long)info->size);
		return IMAP_LITERAL_STREAM;
	}
	return IMAP_LITERAL_BUFFER;
}

static void test_literal_data(void *ctx, const void *buf, size_t len)
{
	struct run *r = ctx;

	assert_true(len > 0);
	text_add(&r->streamed, buf, len);
}

static void test_literal_end(void *ctx)
{
	struct run *r = ctx;

	text_add(&r->out, "end\n", 4);
	text_add(&r->streamed, "|", 1);
}

static const struct imap_parser_callbacks test_cbs = {
	.literal_begin = test_literal_begin,
	.literal_data = test_literal_data,
	.literal_end = test_literal_end,
};

/* Feed input in pieces of the sizes given by split(): returns 0 if all
 * parsed, -1 on a parse error (message in run->error). */
static int feed_pieces(struct run *run, const struct imap_limits *lim, const char *in, size_t len,
		       size_t (*piece)(size_t pos, size_t len, size_t arg), size_t arg)
{
	struct imap_parser *p = imap_parser_new(lim, &test_cbs, run, false);
	size_t pos = 0;
	int ret = 0;

	assert_non_null(p);
	while (pos < len) {
		size_t n = piece(pos, len, arg), off = 0;

		while (off < n) {
			struct imap_response *resp;
			size_t used;
			enum imap_parse_status st =
				imap_parser_feed(p, in + pos + off, n - off, &used, &resp);

			assert_true(used <= n - off);
			off += used;
			run->used_total += used;
			if (st == IMAP_PARSE_ERROR) {
				snprintf(run->error, sizeof(run->error), "%s", imap_parser_error(p));
				/* sticky */
				assert_int_equal(imap_parser_feed(p, "x", 1, &used, &resp),
						 IMAP_PARSE_ERROR);
				ret = -1;
				goto out;
			}
			if (st == IMAP_PARSE_DONE) {
				assert_non_null(resp);
				dump_response(&run->out, resp);
				imap_response_free(resp);
			} else {
				assert_int_equal(off, n); /* NEED_MORE consumes everything */
			}
		}
		pos += n;
	}
	if (!imap_parser_idle(p))
		text_add(&run->out, "(incomplete)\n", 13);
out:
	imap_parser_free(p);
	return ret;
}

static size_t piece_all(size_t pos, size_t len, size_t arg)
{
	return len - pos;
}

static size_t piece_one(size_t pos, size_t len, size_t arg)
{
	return 1;
}

static size_t piece_split(size_t pos, size_t len, size_t arg)
{
	return pos < arg ? arg - pos : len - pos;
}

static void run_free(struct run *r)
{
	free(r->out.s);
	free(r->streamed.s);
	memset(r, 0, sizeof(*r));
}

/* Parse whole, byte by byte, and split at every boundary: all identical.
 * Returns the dump of the whole-input run (caller frees). */
static char *check_all_splits(const char *in, size_t len, const struct imap_limits *lim,
			      char **streamed_out)
{
	struct run ref = { 0 }, r = { 0 };
	int rc;

	rc = feed_pieces(&ref, lim, in, len, piece_all, 0);
	if (rc < 0)
		fail_msg("parse error on \"%s\": %s", in, ref.error);
	assert_non_null(ref.out.s);

	rc = feed_pieces(&r, lim, in, len, piece_one, 0);
	assert_int_equal(rc, 0);
	assert_string_equal(r.out.s, ref.out.s);
	assert_int_equal(r.streamed.len, ref.streamed.len);
	if (ref.streamed.len)
		assert_memory_equal(r.streamed.s, ref.streamed.s, ref.streamed.len);
	run_free(&r);

	for (size_t cut = 1; cut < len; cut++) {
		rc = feed_pieces(&r, lim, in, len, piece_split, cut);
		assert_int_equal(rc, 0);
		assert_string_equal(r.out.s, ref.out.s);
		assert_int_equal(r.streamed.len, ref.streamed.len);
		if (ref.streamed.len)
			assert_memory_equal(r.streamed.s, ref.streamed.s, ref.streamed.len);
		run_free(&r);
	}
	if (streamed_out)
		*streamed_out = ref.streamed.s ? strdup(ref.streamed.s) : strdup("");
	char *dump = ref.out.s;
	ref.out.s = NULL;
	run_free(&ref);
	return dump;
}

static void expect_parse(const char *in, const char *dump_expected)
{
	char *dump = check_all_splits(in, strlen(in), NULL, NULL);

	assert_string_equal(dump, dump_expected);
	free(dump);
}

/* ------------------------------------------------------------------ */

static void test_status_responses(void **state)
{
	(void)state;
	expect_parse("* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n",
		     "* OK code=[CAPABILITY] args=[IMAP4rev1 LITERAL+ AUTH=PLAIN] text=[Dovecot ready.]\n");
	expect_parse("* PREAUTH welcome\r\n", "* PREAUTH code=[] args=[(null)] text=[welcome]\n");
	expect_parse("* BYE Logging out\r\n", "* BYE code=[] args=[(null)] text=[Logging out]\n");
	expect_parse("* OK\r\n", "* OK code=[] args=[(null)] text=[]\n");
	expect_parse("A0001 OK [READ-WRITE] Select completed.\r\n",
		     "T[A0001] OK code=[READ-WRITE] args=[(null)] text=[Select completed.]\n");
	expect_parse("A0002 NO [TRYCREATE] No such mailbox\r\n",
		     "T[A0002] NO code=[TRYCREATE] args=[(null)] text=[No such mailbox]\n");
	expect_parse("a.3 bad syntax (with \"odd\" [text] {5}\r\n",
		     "T[a.3] BAD code=[] args=[(null)] text=[syntax (with \"odd\" [text] {5}]\n");
	expect_parse("A1 ok done\r\n", "T[A1] OK code=[] args=[(null)] text=[done]\n");
	expect_parse("* OK [UIDVALIDITY 3857529045] UIDs valid\r\n",
		     "* OK code=[UIDVALIDITY] args=[3857529045] text=[UIDs valid]\n");
	expect_parse("* OK [UIDNEXT 4392] Predicted next UID\r\n",
		     "* OK code=[UIDNEXT] args=[4392] text=[Predicted next UID]\n");
	expect_parse("A3 OK [APPENDUID 38505 3955] APPEND completed\r\n",
		     "T[A3] OK code=[APPENDUID] args=[38505 3955] text=[APPEND completed]\n");
	expect_parse("A4 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
		     "T[A4] OK code=[COPYUID] args=[38505 304,319:320 3956:3958] text=[Done]\n");
	expect_parse("* OK [HIGHESTMODSEQ 715194045007] Highest\r\n",
		     "* OK code=[HIGHESTMODSEQ] args=[715194045007] text=[Highest]\n");
	expect_parse("* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n",
		     "* OK code=[PERMANENTFLAGS] args=[(\\Deleted \\Seen \\*)] text=[Limited]\n");
	expect_parse("* OK [ALERT] System shutdown in 10 minutes\r\n",
		     "* OK code=[ALERT] args=[(null)] text=[System shutdown in 10 minutes]\n");
	expect_parse("A5 NO [OVERQUOTA] Quota exceeded\r\n",
		     "T[A5] NO code=[OVERQUOTA] args=[(null)] text=[Quota exceeded]\n");
	expect_parse("* OK [NOMODSEQ] Sorry\r\n",
		     "* OK code=[NOMODSEQ] args=[(null)] text=[Sorry]\n");
	expect_parse("A6 OK [read-only] EXAMINE completed\r\n",
		     "T[A6] OK code=[READ-ONLY] args=[(null)] text=[EXAMINE completed]\n");
	expect_parse("* NO [BADCHARSET (UTF-8 US-ASCII)] x\r\n",
		     "* NO code=[BADCHARSET] args=[(UTF-8 US-ASCII)] text=[x]\n");
	expect_parse("* OK [X-UNKNOWN-CODE] y\r\n",
		     "* OK code=[X-UNKNOWN-CODE] args=[(null)] text=[y]\n");
}

static void test_continuation(void **state)
{
	(void)state;
	expect_parse("+ Ready for literal data\r\n", "+[Ready for literal data]\n");
	expect_parse("+\r\n", "+[]\n");
	expect_parse("+ \r\n", "+[]\n");
	expect_parse("+ YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ=\r\n",
		     "+[YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ=]\n");
}

static void test_data_responses(void **state)
{
	(void)state;
	expect_parse("* 23 EXISTS\r\n", "* #23 EXISTS ()\n");
	expect_parse("* 3 EXPUNGE\r\n", "* #3 EXPUNGE ()\n");
	expect_parse("* 0 RECENT\r\n", "* #0 RECENT ()\n");
	expect_parse("* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI\r\n",
		     "* CAPABILITY (IMAP4rev1 STARTTLS AUTH=GSSAPI)\n");
	expect_parse("* LIST (\\HasNoChildren) \"/\" \"a \\\"b\\\" \\\\c\"\r\n",
		     "* LIST ((\\HasNoChildren) \"/\" \"a \\x22b\\x22 \\x5cc\")\n");
	expect_parse("* LIST (\\Noselect \\HasChildren) NIL INBOX\r\n",
		     "* LIST ((\\Noselect \\HasChildren) NIL INBOX)\n");
	expect_parse("* list () \".\" {5}\r\nab\r\nc\r\n", "* LIST (() \".\" L\"ab\\x0d\\x0ac\")\n");
	expect_parse("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n",
		     "* STATUS (blurdybloop (MESSAGES 231 UIDNEXT 44292))\n");
	expect_parse("* SEARCH 2 84 882\r\n", "* SEARCH (2 84 882)\n");
	expect_parse("* SEARCH\r\n", "* SEARCH ()\n");
	expect_parse("* ESEARCH (TAG \"A5\") UID ALL 1:3,5\r\n",
		     "* ESEARCH ((TAG \"A5\") UID ALL 1:3,5)\n");
	expect_parse("* 12 FETCH (UID 5 FLAGS (\\Seen $X) INTERNALDATE \"17-Jul-1996 02:44:25 "
		     "-0700\" RFC822.SIZE 44827 MODSEQ (12121231000))\r\n",
		     "* #12 FETCH ((UID 5 FLAGS (\\Seen $X) INTERNALDATE \"17-Jul-1996 02:44:25 "
		     "-0700\" RFC822.SIZE 44827 MODSEQ (12121231000)))\n");
	expect_parse("* 3 FETCH (FLAGS ())\r\n", "* #3 FETCH ((FLAGS ()))\n");
	expect_parse("* VANISHED (EARLIER) 41,43:116\r\n", "* VANISHED ((EARLIER) 41,43:116)\n");
	expect_parse("* ENABLED QRESYNC\r\n", "* ENABLED (QRESYNC)\n");
	expect_parse("* FLAGS (\\Answered \\Flagged \\*)\r\n", "* FLAGS ((\\Answered \\Flagged \\*))\n");
	expect_parse("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n",
		     "* NAMESPACE (((\"\" \"/\")) NIL NIL)\n");
	expect_parse("* X (((a) b) c)\r\n", "* X ((((a) b) c))\n");
	expect_parse("* X \"\" nil Nil\r\n", "* X (\"\" NIL NIL)\n");
	expect_parse("* X \"8bit \xc3\xa4\"\r\n", "* X (\"8bit \\xc3\\xa4\")\n");
	expect_parse("* X {0}\r\n\r\n", "* X (L\"\")\n");
	expect_parse("* X {3+}\r\nabc\r\n", "* X (L\"abc\")\n");
	/* several responses in one stream */
	expect_parse("* 1 EXISTS\r\n* 2 EXISTS\r\nA1 OK x\r\n",
		     "* #1 EXISTS ()\n* #2 EXISTS ()\nT[A1] OK code=[] args=[(null)] text=[x]\n");
}

/* A literal whose content holds protocol-looking lines is data, never
 * parsed; split at every boundary. */
static void test_streamed_literals(void **state)
{
	static const char body[] = "* OK fake\r\n+ cont\r\nA0001 OK fake\r\n{5}\r\n)";
	char in[512], expect[512];
	char *dump, *streamed;
	int n;

	(void)state;
	n = snprintf(in, sizeof(in),
		     "* 1 FETCH (UID 7 BODY[] {%zu}\r\n%s)\r\n"
		     "* 2 FETCH (BODY[]<10> {3}\r\nabc UID 8)\r\n"
		     "* 3 FETCH (UID 9 BODY[HEADER.FIELDS (FROM TO)] {0}\r\n)\r\n"
		     "A1 OK done\r\n",
		     strlen(body), body);
	dump = check_all_splits(in, (size_t)n, NULL, &streamed);
	snprintf(expect, sizeof(expect),
		 "begin BODY[] %zu\nend\n* #1 FETCH ((UID 7 BODY[] <streamed %zu>))\n"
		 "begin BODY[]<10> 3\nend\n* #2 FETCH ((BODY[]<10> <streamed 3> UID 8))\n"
		 "begin BODY[HEADER.FIELDS (FROM TO)] 0\nend\n"
		 "* #3 FETCH ((UID 9 BODY[HEADER.FIELDS (FROM TO)] <streamed 0>))\n"
		 "T[A1] OK code=[] args=[(null)] text=[done]\n",
		 strlen(body), strlen(body));
	assert_string_equal(dump, expect);
	snprintf(expect, sizeof(expect), "%s|abc||", body);
	assert_string_equal(streamed, expect);
	free(dump);
	free(streamed);
}

/* Binary content (NUL, CR alone, 8-bit) in a literal passes untouched. */
static void test_binary_literal(void **state)
{
	static const char in[] = "* 1 FETCH (BODY[] {6}\r\n\0\r\xff\n*\r)\r\n";
	char *dump, *streamed;

	(void)state;
	dump = check_all_splits(in, sizeof(in) - 1, NULL, &streamed);
	assert_string_equal(dump, "begin BODY[] 6\nend\n* #1 FETCH ((BODY[] <streamed 6>))\n");
	free(dump);
	free(streamed);
}

/* ------------------------------------------------------------------ */
/* errors */

static void expect_error_lim(const char *in, size_t len, const struct imap_limits *lim,
			     const char *msg_part)
{
	struct run r = { 0 };
	int rc = feed_pieces(&r, lim, in, len, piece_all, 0);

	if (rc == 0)
		fail_msg("no error for \"%.60s\": %s", in, r.out.s ? r.out.s : "");
	if (!strstr(r.error, msg_part))
		fail_msg("error for \"%.60s\" is \"%s\", expected \"%s\"", in, r.error, msg_part);
	run_free(&r);
	/* byte by byte gives the same error */
	rc = feed_pieces(&r, lim, in, len, piece_one, 0);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(r.error, msg_part));
	run_free(&r);
}

static void expect_error(const char *in, const char *msg_part)
{
	expect_error_lim(in, strlen(in), NULL, msg_part);
}

static void test_syntax_errors(void **state)
{
	(void)state;
	expect_error("* OK a\rb\r\n", "CR inside");
	expect_error("* OK a\n", "CRLF");
	expect_error("\n", "CRLF");
	expect_error("* X \"abc\r\n", "unterminated quoted");
	expect_error("* X \"a\\b\"\r\n", "invalid escape");
	expect_error_lim("* X a\0b\r\n", 9, NULL, "NUL");
	expect_error_lim("* X \"a\0b\"\r\n", 11, NULL, "NUL");
	expect_error("* X {-1}\r\n", "invalid literal size");
	expect_error("* X {}\r\n", "invalid literal size");
	expect_error("* X {12\r\n", "invalid literal size");
	expect_error("* X {1 2}\r\n", "invalid literal size");
	expect_error("* X {5}abc\r\n", "not at the end");
	expect_error("* X {18446744073709551616}\r\n", "64 bits");
	expect_error("* X {99999999999999999999999999}\r\n", "64 bits");
	expect_error("* X ~{5}\r\nabcde\r\n", "binary literal");
	expect_error("* X (a))\r\n", "unbalanced ')'");
	expect_error("* X ((a)\r\n", "unbalanced '('");
	expect_error("* X (a {1}\r\nb\r\n", "unbalanced '('");
	expect_error("* X BODY[HEADER\r\n", "unterminated '['");
	expect_error("* X a\x01z\r\n", "in atom");
	expect_error("* X a\"b\r\n", "in atom");
	expect_error("A+1 OK x\r\n", "tag");
	expect_error("A\"1 OK x\r\n", "tag");
	expect_error("A1 FETCH x\r\n", "not OK, NO or BAD");
	expect_error("A1 PREAUTH x\r\n", "not OK, NO or BAD");
	expect_error("A1\r\n", "without status");
	expect_error("A123456789012345678901234567890123 OK x\r\n", "invalid tag");
	expect_error("* 99999999999 EXISTS\r\n", "out of range");
	expect_error("* 5\r\n", "missing keyword");
	expect_error("*\r\n", "tag");
	expect_error("* \r\n", "keyword");
	expect_error("* OK [UNTERMINATED code\r\n", "unterminated response code");
	expect_error("* OK [] x\r\n", "invalid response code");
	expect_error("* REJECTME {3}\r\nabc\r\n", "unexpected literal");
}

static void test_limits(void **state)
{
	struct imap_limits lim = { 0 };
	char *big;
	size_t n;

	(void)state;
	/* literal sizes: 64-bit parse, bounded by max_literal (default 256 MiB) */
	expect_error("* 1 FETCH (BODY[] {4294967296}\r\n", "exceeds the limit");
	expect_error("* 1 FETCH (BODY[] {268435457}\r\n", "exceeds the limit");
	lim.max_literal = 10;
	expect_error_lim("* 1 FETCH (BODY[] {11}\r\n", 24, &lim, "exceeds the limit of 10");
	{
		char *d = check_all_splits("* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n", 37, &lim,
					   NULL);
		free(d);
	}

	/* buffered literals: per literal and per response */
	memset(&lim, 0, sizeof(lim));
	expect_error("* X {1048577}\r\n", "in-memory limit");
	lim.max_buffered_literal = 10;
	expect_error_lim("* X {6}\r\nabcdef {6}\r\nabcdef\r\n", 29, &lim, "in-memory limit");
	{
		/* streamed literals do not count */
		char *d = check_all_splits("* 1 FETCH (BODY[] {20}\r\n01234567890123456789)\r\n",
					   47, &lim, NULL);
		free(d);
	}

	/* nesting */
	memset(&lim, 0, sizeof(lim));
	big = malloc(200);
	n = (size_t)sprintf(big, "* X ");
	for (int i = 0; i < 33; i++)
		big[n++] = '(';
	for (int i = 0; i < 33; i++)
		big[n++] = ')';
	memcpy(big + n, "\r\n", 3);
	expect_error(big, "nested deeper than 32");
	/* exactly 32 is fine */
	n = (size_t)sprintf(big, "* X ");
	for (int i = 0; i < 32; i++)
		big[n++] = '(';
	for (int i = 0; i < 32; i++)
		big[n++] = ')';
	memcpy(big + n, "\r\n", 3);
	{
		struct run r = { 0 };
		assert_int_equal(feed_pieces(&r, NULL, big, strlen(big), piece_all, 0), 0);
		run_free(&r);
	}
	lim.max_depth = 2;
	expect_error_lim("* X (((a)))\r\n", 13, &lim, "nested deeper than 2");
	free(big);

	/* line length: stops as soon as the limit is passed, without CRLF */
	memset(&lim, 0, sizeof(lim));
	n = 1024 * 1024;
	big = malloc(n);
	memset(big, 'a', n);
	memcpy(big, "* OK ", 5);
	{
		struct run r = { 0 };

		assert_int_equal(feed_pieces(&r, NULL, big, n, piece_all, 0), -1);
		assert_non_null(strstr(r.error, "longer than 65536"));
		assert_true(r.used_total <= 65536 + 2);
		run_free(&r);
	}
	/* the limit counts every segment of one response, not each alone */
	lim.max_line = 100;
	{
		struct text t = { 0 };

		text_add(&t, "* X (", 5);
		for (int i = 0; i < 30; i++)
			text_add(&t, "a {1}\r\nb ", 9);
		text_add(&t, ")\r\n", 3);
		expect_error_lim(t.s, t.len, &lim, "longer than 100");
		free(t.s);
	}
	/* exactly max_line bytes plus CRLF is accepted */
	memset(big, 'a', 102);
	memcpy(big, "* OK ", 5);
	memcpy(big + 100, "\r\n", 2);
	{
		struct run r = { 0 };

		assert_int_equal(feed_pieces(&r, &lim, big, 102, piece_all, 0), 0);
		run_free(&r);
		big[99] = 'b';
		memcpy(big + 101, "\r\n", 2);
		big[100] = 'c';
		assert_int_equal(feed_pieces(&r, &lim, big, 103, piece_all, 0), -1);
		run_free(&r);
	}
	free(big);
}

/* DONE consumes only up to the end of its response. */
static void test_done_stops_at_response(void **state)
{
	struct imap_parser *p = imap_parser_new(NULL, NULL, NULL, false);
	static const char in[] = "A1 OK done\r\n* OK injected\r\n";
	struct imap_response *r;
	size_t used;

	(void)state;
	assert_int_equal(imap_parser_feed(p, in, sizeof(in) - 1, &used, &r), IMAP_PARSE_DONE);
	assert_int_equal(used, 12);
	assert_true(imap_parser_idle(p));
	imap_response_free(r);
	assert_int_equal(imap_parser_feed(p, in + used, 5, &used, &r), IMAP_PARSE_NEED_MORE);
	assert_int_equal(used, 5);
	assert_false(imap_parser_idle(p));
	imap_parser_free(p);
}

static void test_numbers(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(imap_parse_number("0", 1, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(imap_parse_number("4294967295", 10, UINT32_MAX, &v), 0);
	assert_int_equal(v, 4294967295u);
	assert_int_equal(imap_parse_number("4294967296", 10, UINT32_MAX, &v), -1);
	assert_int_equal(imap_parse_number("18446744073709551615", 20, UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(imap_parse_number("18446744073709551616", 20, UINT64_MAX, &v), -1);
	assert_int_equal(imap_parse_number("", 0, 10, &v), -1);
	assert_int_equal(imap_parse_number("-1", 2, 10, &v), -1);
	assert_int_equal(imap_parse_number("1a", 2, 10, &v), -1);
	/* a maximum below 9: a digit above it is out of range, not a wrap */
	assert_int_equal(imap_parse_number("7", 1, 5, &v), -1);
	assert_int_equal(imap_parse_number("5", 1, 5, &v), 0);
	assert_int_equal(v, 5);
	assert_int_equal(imap_parse_number("1", 1, 0, &v), -1);
	assert_int_equal(imap_parse_number("00", 2, 0, &v), 0);
	assert_int_equal(imap_parse_number("15", 2, 9, &v), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_responses),
		cmocka_unit_test(test_continuation),
		cmocka_unit_test(test_data_responses),
		cmocka_unit_test(test_streamed_literals),
		cmocka_unit_test(test_binary_literal),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_done_stops_at_response),
		cmocka_unit_test(test_numbers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
