/*
 * Modified UTF-7 (RFC 3501 5.1.3), strict both ways: the decoder accepts
 * exactly what a correct encoder produces, so two different wire names can
 * never decode to the same UTF-8 name.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/mutf7.h"

static const char mutf7_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* Growable output string. */
struct mutf7_out {
	char *buf;
	size_t len;
	size_t cap;
};

static int mutf7_out_reserve(struct mutf7_out *o, size_t more)
{
	size_t need, cap;
	char *nbuf;

	if (more > SIZE_MAX - o->len - 1)
		return -1;
	need = o->len + more + 1;
	if (need <= o->cap)
		return 0;
	cap = o->cap ? o->cap : 32;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	nbuf = realloc(o->buf, cap);
	if (!nbuf)
		return -1;
	o->buf = nbuf;
	o->cap = cap;
	o->buf[o->len] = '\0';
	return 0;
}

static int mutf7_out_add(struct mutf7_out *o, const char *s, size_t n)
{
	if (mutf7_out_reserve(o, n) < 0)
		return -1;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = '\0';
	return 0;
}

static int mutf7_out_add_utf8(struct mutf7_out *o, uint32_t cp)
{
	char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return mutf7_out_add(o, b, n);
}

static int mutf7_b64_value(unsigned char c)
{
	const char *p;

	if (c == '\0')
		return -1;
	p = strchr(mutf7_alphabet, c);
	return p ? (int)(p - mutf7_alphabet) : -1;
}

static bool mutf7_is_direct(unsigned char c)
{
	return c >= 0x20 && c <= 0x7e;
}

/*
 * Decode one base64 run in[*pos..] up to its '-' into UTF-8. *pos points
 * after the '&' on entry and after the '-' on return.
 */
static int mutf7_decode_run(const char *in, size_t len, size_t *pos, struct mutf7_out *o)
{
	uint32_t bits = 0;
	unsigned nbits = 0;
	uint32_t high = 0; /* pending high surrogate, 0 if none */
	size_t i = *pos;
	size_t units = 0;

	for (;;) {
		int v;

		if (i >= len)
			return -1; /* unterminated shift */
		if (in[i] == '-')
			break;
		v = mutf7_b64_value((unsigned char)in[i]);
		if (v < 0)
			return -1;
		i++;
		bits = (bits << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits >= 16) {
			uint32_t u = (bits >> (nbits - 16)) & 0xffff;

			nbits -= 16;
			bits &= (1u << nbits) - 1;
			units++;
			if (high) {
				if (u < 0xdc00 || u > 0xdfff)
					return -1; /* high surrogate not followed by low */
				if (mutf7_out_add_utf8(o, 0x10000 + ((high - 0xd800) << 10) +
								  (u - 0xdc00)) < 0)
					return -2;
				high = 0;
			} else if (u >= 0xd800 && u <= 0xdbff) {
				high = u;
			} else if (u >= 0xdc00 && u <= 0xdfff) {
				return -1; /* lone low surrogate */
			} else if (u == 0 || (u < 0x80 && mutf7_is_direct((unsigned char)u))) {
				return -1; /* NUL or printable ASCII encoded in base64 */
			} else {
				if (mutf7_out_add_utf8(o, u) < 0)
					return -2;
			}
		}
	}
	/* A correct encoder leaves fewer than 6 bits, all zero. */
	if (units == 0 || nbits >= 6 || bits != 0 || high)
		return -1;
	*pos = i + 1;
	return 0;
}

char *mutf7_decode(const char *in, size_t len)
{
	struct mutf7_out o = { 0 };
	bool after_run = false;
	size_t i = 0;
	int r;

	if (mutf7_out_reserve(&o, len) < 0)
		goto out_nomem;
	while (i < len) {
		unsigned char c = (unsigned char)in[i];

		if (c != '&') {
			if (!mutf7_is_direct(c))
				goto out_inval; /* NUL, control or raw 8-bit byte */
			if (mutf7_out_add(&o, (const char *)&c, 1) < 0)
				goto out_nomem;
			after_run = false;
			i++;
			continue;
		}
		if (i + 1 < len && in[i + 1] == '-') {
			if (mutf7_out_add(&o, "&", 1) < 0)
				goto out_nomem;
			after_run = false;
			i += 2;
			continue;
		}
		if (after_run)
			goto out_inval; /* "&AOQ-&AOQ-": an encoder merges the runs */
		i++;
		r = mutf7_decode_run(in, len, &i, &o);
		if (r == -2)
			goto out_nomem;
		if (r < 0)
			goto out_inval;
		after_run = true;
	}
	return o.buf;

out_inval:
	free(o.buf);
	errno = EINVAL;
	return NULL;
out_nomem:
	free(o.buf);
	errno = ENOMEM;
	return NULL;
}

/* Next code point of strict UTF-8 (no overlong forms, no surrogates, at
 * most U+10FFFF); -1 on invalid input. */
static int32_t mutf7_utf8_next(const unsigned char *s, size_t len, size_t *pos)
{
	size_t i = *pos, n, k;
	uint32_t cp, min;
	unsigned char c = s[i];

	if (c < 0x80) {
		*pos = i + 1;
		return c;
	} else if ((c & 0xe0) == 0xc0) {
		n = 1;
		cp = c & 0x1f;
		min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		n = 2;
		cp = c & 0x0f;
		min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		n = 3;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return -1;
	}
	if (len - i - 1 < n)
		return -1;
	for (k = 1; k <= n; k++) {
		if ((s[i + k] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[i + k] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*pos = i + n + 1;
	return (int32_t)cp;
}

static int mutf7_flush_units(struct mutf7_out *o, const uint16_t *units, size_t n)
{
	uint32_t bits = 0;
	unsigned nbits = 0;
	size_t k;
	char c;

	if (mutf7_out_add(o, "&", 1) < 0)
		return -1;
	for (k = 0; k < n; k++) {
		bits = (bits << 16) | units[k];
		nbits += 16;
		while (nbits >= 6) {
			c = mutf7_alphabet[(bits >> (nbits - 6)) & 0x3f];
			nbits -= 6;
			if (mutf7_out_add(o, &c, 1) < 0)
				return -1;
		}
		bits &= (1u << nbits) - 1;
	}
	if (nbits) {
		c = mutf7_alphabet[(bits << (6 - nbits)) & 0x3f];
		if (mutf7_out_add(o, &c, 1) < 0)
			return -1;
	}
	return mutf7_out_add(o, "-", 1);
}

char *mutf7_encode(const char *in, size_t len)
{
	const unsigned char *s = (const unsigned char *)in;
	struct mutf7_out o = { 0 };
	uint16_t *units = NULL;
	size_t nunits = 0, i = 0;
	int saved;

	/* Every input byte makes at most two UTF-16 units. */
	if (len > SIZE_MAX / (2 * sizeof(*units)) - 1)
		goto out_nomem;
	units = malloc((len + 1) * 2 * sizeof(*units));
	if (!units || mutf7_out_reserve(&o, len) < 0)
		goto out_nomem;
	while (i < len) {
		int32_t cp = mutf7_utf8_next(s, len, &i);

		if (cp <= 0)
			goto out_inval; /* invalid UTF-8 or NUL */
		if (mutf7_is_direct((unsigned char)cp) && cp < 0x80) {
			if (nunits) {
				if (mutf7_flush_units(&o, units, nunits) < 0)
					goto out_nomem;
				nunits = 0;
			}
			if (mutf7_out_add(&o, cp == '&' ? "&-" : (const char *)&s[i - 1],
					  cp == '&' ? 2 : 1) < 0)
				goto out_nomem;
		} else if (cp >= 0x10000) {
			units[nunits++] = (uint16_t)(0xd800 + ((cp - 0x10000) >> 10));
			units[nunits++] = (uint16_t)(0xdc00 + ((cp - 0x10000) & 0x3ff));
		} else {
			units[nunits++] = (uint16_t)cp;
		}
	}
	if (nunits && mutf7_flush_units(&o, units, nunits) < 0)
		goto out_nomem;
	free(units);
	return o.buf;

out_inval:
	saved = EINVAL;
	goto out_err;
out_nomem:
	saved = ENOMEM;
out_err:
	free(units);
	free(o.buf);
	errno = saved;
	return NULL;
}
