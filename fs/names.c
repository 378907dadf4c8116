/*
 * fs/names: mailbox name <-> file name mapping (see names_i.h for the
 * escaping rules). Pure functions: no state, callable from any thread.
 */
#include "names_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char hex_digits[] = "0123456789ABCDEF";

static bool names_byte_needs_escape(unsigned char c)
{
	return c == NAMES_ESCAPE || c == '/' || c < 0x20 || c == 0x7f;
}

/* digits then ".eml": would be taken for a message file */
static bool names_looks_like_message(const char *part, size_t len)
{
	size_t i = 0;

	while (i < len && part[i] >= '0' && part[i] <= '9')
		i++;
	return i > 0 && len - i == 4 && memcmp(part + i, ".eml", 4) == 0;
}

char *names_escape_part(const char *part, size_t len)
{
	bool dots = (len == 1 && part[0] == '.') || (len == 2 && part[0] == '.' && part[1] == '.');
	bool message = names_looks_like_message(part, len);
	char *out, *p;
	size_t i;

	if (len == 0)
		return strdup("%");
	out = malloc(len * 3 + 1);
	if (!out)
		return NULL;
	p = out;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)part[i];

		if (names_byte_needs_escape(c) || (i == 0 && (dots || message))) {
			*p++ = NAMES_ESCAPE;
			*p++ = hex_digits[c >> 4];
			*p++ = hex_digits[c & 0xf];
		} else {
			*p++ = (char)c;
		}
	}
	*p = '\0';
	return out;
}

static int names_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1; /* lower case is not canonical */
}

char *names_unescape_part(const char *name, size_t *len_out)
{
	size_t len = strlen(name), i;
	char *out, *p, *check;

	if (len == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
		errno = EINVAL;
		return NULL;
	}
	if (strcmp(name, "%") == 0) {
		out = strdup("");
		if (out && len_out)
			*len_out = 0;
		return out;
	}
	out = malloc(len + 1);
	if (!out)
		return NULL;
	p = out;
	for (i = 0; i < len; i++) {
		if (name[i] == NAMES_ESCAPE) {
			int hi, lo;

			if (i + 2 >= len)
				goto out_inval;
			hi = names_hex_value(name[i + 1]);
			lo = hi < 0 ? -1 : names_hex_value(name[i + 2]);
			if (hi < 0 || lo < 0)
				goto out_inval;
			*p++ = (char)(hi << 4 | lo);
			i += 2;
		} else {
			*p++ = name[i];
		}
	}
	*p = '\0';
	/* canonical: escaping the result must give back exactly the name */
	check = names_escape_part(out, (size_t)(p - out));
	if (!check)
		goto out_free;
	if (strcmp(check, name) != 0) {
		free(check);
		goto out_inval;
	}
	free(check);
	if (len_out)
		*len_out = (size_t)(p - out);
	return out;

out_inval:
	errno = EINVAL;
out_free:
	free(out);
	return NULL;
}

char *names_mailbox_path(const char *decoded, char delimiter)
{
	size_t cap = strlen(decoded) * 3 + 2, used = 0;
	const char *part = decoded;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	for (;;) {
		const char *end = delimiter ? strchr(part, delimiter) : NULL;
		size_t plen = end ? (size_t)(end - part) : strlen(part);
		char *esc = names_escape_part(part, plen);
		size_t elen;

		if (!esc) {
			free(out);
			return NULL;
		}
		elen = strlen(esc);
		if (used + elen + 2 > cap) { /* only "%" for "" can outgrow 3x */
			char *bigger;

			cap = (used + elen + 2) * 2;
			bigger = realloc(out, cap);
			if (!bigger) {
				free(esc);
				free(out);
				return NULL;
			}
			out = bigger;
		}
		if (used)
			out[used++] = '/';
		memcpy(out + used, esc, elen);
		used += elen;
		free(esc);
		if (!end)
			break;
		part = end + 1;
	}
	out[used] = '\0';
	return out;
}

char *names_mailbox_from_path(const char *path, char delimiter)
{
	size_t cap = strlen(path) + 2, used = 0;
	const char *part = path;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	for (;;) {
		const char *end = strchr(part, '/');
		size_t plen = end ? (size_t)(end - part) : strlen(part);
		char *name = strndup(part, plen), *raw;
		size_t rlen;

		if (!name)
			goto out_free;
		raw = names_unescape_part(name, &rlen);
		free(name);
		if (!raw)
			goto out_free;
		if (memchr(raw, '\0', rlen) || (delimiter && memchr(raw, delimiter, rlen)) ||
		    (!delimiter && used)) {
			free(raw);
			errno = EINVAL;
			goto out_free;
		}
		/* unescaped parts are never longer than escaped ones */
		if (used)
			out[used++] = delimiter;
		memcpy(out + used, raw, rlen);
		used += rlen;
		free(raw);
		if (!end)
			break;
		part = end + 1;
	}
	out[used] = '\0';
	return out;

out_free:
	free(out);
	return NULL;
}

int names_message_format(uint32_t uid, char *buf, size_t size)
{
	return snprintf(buf, size, "%u.eml", uid);
}

bool names_message_parse(const char *name, uint32_t *uid_out)
{
	uint64_t v = 0;
	const char *p = name;

	if (*p < '1' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return false;
		p++;
	}
	if (strcmp(p, ".eml") != 0)
		return false;
	*uid_out = (uint32_t)v;
	return true;
}
