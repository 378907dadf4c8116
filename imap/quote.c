/*
 * Command building and the one quoting routine (see quote_i.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "quote_i.h"

/* Non-synchronising literals under LITERAL- (RFC 7888) */
#define IMAP_LITERAL_MINUS_MAX 4096

void imap_cmdbuf_init(struct imap_cmdbuf *b, bool literal_plus, bool literal_minus)
{
	memset(b, 0, sizeof(*b));
	b->literal_plus = literal_plus;
	b->literal_minus = literal_minus;
}

void imap_cmdbuf_set_secret(struct imap_cmdbuf *b)
{
	b->secret = true;
}

void imap_cmdbuf_free(struct imap_cmdbuf *b)
{
	if (b->secret && b->data)
		explicit_bzero(b->data, b->cap);
	free(b->data);
	free(b->trace);
	free(b->sync);
	memset(b, 0, sizeof(*b));
}

static void cmdbuf_put(struct imap_cmdbuf *b, const void *s, size_t n)
{
	if (b->failed)
		return;
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 128;
		char *nd;

		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2) {
				b->failed = true;
				return;
			}
			cap *= 2;
		}
		if (b->secret) {
			nd = malloc(cap);
			if (nd && b->len)
				memcpy(nd, b->data, b->len);
			if (nd && b->data) {
				explicit_bzero(b->data, b->cap);
				free(b->data);
			}
		} else {
			nd = realloc(b->data, cap);
		}
		if (!nd) {
			b->failed = true;
			return;
		}
		b->data = nd;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

static void cmdbuf_trace(struct imap_cmdbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (!b->trace) {
		b->trace = malloc(IMAP_TRACE_MAX + 1);
		if (!b->trace) {
			b->failed = true;
			return;
		}
		b->trace[0] = '\0';
	}
	if (n > IMAP_TRACE_MAX - b->trace_len)
		n = IMAP_TRACE_MAX - b->trace_len;
	memcpy(b->trace + b->trace_len, s, n);
	b->trace_len += n;
	b->trace[b->trace_len] = '\0';
}

void imap_cmdbuf_add_raw(struct imap_cmdbuf *b, const char *text)
{
	size_t n = strlen(text);

	cmdbuf_put(b, text, n);
	cmdbuf_trace(b, text, n);
}

void imap_cmdbuf_add_rawf(struct imap_cmdbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		b->failed = true;
		return;
	}
	imap_cmdbuf_add_raw(b, tmp);
}

/* ATOM-CHAR: any CHAR except atom-specials: ( ) { SP CTL % * " \ ] */
static bool is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return !strchr("(){%*\"\\]", c);
}

/* ASTRING-CHAR = ATOM-CHAR / resp-specials ("]") */
static bool is_astring_char(unsigned char c)
{
	return c == ']' || is_atom_char(c);
}

static void cmdbuf_literal_header(struct imap_cmdbuf *b, size_t len)
{
	bool nonsync = b->literal_plus || (b->literal_minus && len <= IMAP_LITERAL_MINUS_MAX);
	char hdr[48];
	int n;

	n = snprintf(hdr, sizeof(hdr), nonsync ? "{%zu+}\r\n" : "{%zu}\r\n", len);
	cmdbuf_put(b, hdr, (size_t)n);
	if (!nonsync)
		imap_cmdbuf_add_sync(b);
}

void imap_cmdbuf_add_literal(struct imap_cmdbuf *b, const void *data, size_t len)
{
	char tr[48];

	cmdbuf_literal_header(b, len);
	cmdbuf_put(b, data, len);
	snprintf(tr, sizeof(tr), "{%zu bytes}", len);
	cmdbuf_trace(b, tr, strlen(tr));
}

int imap_cmdbuf_add_string(struct imap_cmdbuf *b, const char *s, size_t len, unsigned flags)
{
	bool atom = len > 0 && !(flags & IMAP_QUOTE_NO_ATOM), quoted = true;
	size_t i;

	if (memchr(s, '\0', len))
		return -1;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_astring_char(c))
			atom = false;
		if (c < 0x20 || c >= 0x7f)
			quoted = false;
	}
	if (len == 3 && strncasecmp(s, "NIL", 3) == 0)
		atom = false;

	if (atom) {
		cmdbuf_put(b, s, len);
		if (flags & IMAP_QUOTE_REDACT)
			cmdbuf_trace(b, "<redacted>", 10);
		else
			cmdbuf_trace(b, s, len);
	} else if (quoted) {
		size_t start = b->len;

		cmdbuf_put(b, "\"", 1);
		for (i = 0; i < len; i++) {
			if (s[i] == '"' || s[i] == '\\')
				cmdbuf_put(b, "\\", 1);
			cmdbuf_put(b, s + i, 1);
		}
		cmdbuf_put(b, "\"", 1);
		if (flags & IMAP_QUOTE_REDACT)
			cmdbuf_trace(b, "<redacted>", 10);
		else if (!b->failed)
			cmdbuf_trace(b, b->data + start, b->len - start);
	} else {
		if (flags & IMAP_QUOTE_REDACT) {
			cmdbuf_literal_header(b, len);
			cmdbuf_put(b, s, len);
			cmdbuf_trace(b, "<redacted>", 10);
		} else {
			imap_cmdbuf_add_literal(b, s, len);
		}
	}
	return b->failed ? -1 : 0;
}

static bool flag_token_valid(const char *s, size_t n)
{
	size_t i = 0;

	if (n && s[0] == '\\') {
		i = 1;
		if (n == 2 && s[1] == '*')
			return false;
	}
	if (i == n)
		return false;
	for (; i < n; i++)
		if (!is_atom_char((unsigned char)s[i]))
			return false;
	return true;
}

bool imap_flags_valid(const char *flags)
{
	const char *p = flags;

	while (*p) {
		size_t n;

		if (*p == ' ') {
			p++;
			continue;
		}
		n = strcspn(p, " ");
		if (!flag_token_valid(p, n))
			return false;
		p += n;
	}
	return true;
}

int imap_cmdbuf_add_flag_list(struct imap_cmdbuf *b, const char *flags)
{
	const char *p = flags;
	bool first = true;

	if (!imap_flags_valid(flags))
		return -1;
	imap_cmdbuf_add_raw(b, "(");
	while (*p) {
		size_t n;

		if (*p == ' ') {
			p++;
			continue;
		}
		n = strcspn(p, " ");
		if (!first)
			imap_cmdbuf_add_raw(b, " ");
		cmdbuf_put(b, p, n);
		cmdbuf_trace(b, p, n);
		first = false;
		p += n;
	}
	imap_cmdbuf_add_raw(b, ")");
	return b->failed ? -1 : 0;
}

bool imap_sequence_set_valid(const char *set)
{
	const char *p = set;

	for (;;) {
		/* seq-number, optionally ":" seq-number */
		for (int part = 0; part < 2; part++) {
			if (*p == '*') {
				p++;
			} else if (*p >= '1' && *p <= '9') {
				unsigned long long v = 0;

				while (*p >= '0' && *p <= '9') {
					v = v * 10 + (unsigned)(*p - '0');
					if (v > 0xffffffffULL)
						return false;
					p++;
				}
			} else {
				return false;
			}
			if (part == 0 && *p == ':')
				p++;
			else
				break;
		}
		if (*p == '\0')
			return true;
		if (*p != ',')
			return false;
		p++;
	}
}

void imap_cmdbuf_add_sync(struct imap_cmdbuf *b)
{
	size_t *ns;

	if (b->failed)
		return;
	ns = realloc(b->sync, (b->nsync + 1) * sizeof(*ns));
	if (!ns) {
		b->failed = true;
		return;
	}
	b->sync = ns;
	b->sync[b->nsync++] = b->len;
}

void imap_cmdbuf_end(struct imap_cmdbuf *b)
{
	cmdbuf_put(b, "\r\n", 2);
}
