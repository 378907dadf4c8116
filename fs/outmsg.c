/*
 * fs/outmsg: the bytes of a new message (see outmsg_i.h). Pure.
 */
#define _GNU_SOURCE
#include "outmsg_i.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *outmsg_crlf(const char *in, size_t len, size_t *len_out)
{
	size_t extra = 0, j = 0;
	char *out;

	for (size_t i = 0; i < len; i++)
		if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
			extra++;
	out = malloc(len + extra + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
			out[j++] = '\r';
		out[j++] = in[i];
	}
	out[j] = '\0';
	*len_out = j;
	return out;
}

static bool outmsg_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

char *outmsg_message_id(const char *data, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t end = i;

		while (end < len && data[end] != '\n')
			end++;
		if (end == i || (end == i + 1 && data[i] == '\r'))
			break; /* the empty line ending the header */
		if (end - i >= 11 && strncasecmp(data + i, "Message-ID:", 11) == 0) {
			size_t a = i + 11, b = end;

			/* a folded value continues on the next line */
			if (b + 1 < len && (data[b + 1] == ' ' || data[b + 1] == '\t')) {
				b++;
				while (b < len && data[b] != '\n')
					b++;
			}
			while (a < b && outmsg_blank(data[a]))
				a++;
			while (b > a && outmsg_blank(data[b - 1]))
				b--;
			if (b - a > 998) /* longer than a header line may be: no usable id */
				break;
			/* not strndup: data is not NUL-terminated, and strndup
			 * may look one byte past b - a for the terminator */
			char *id = malloc(b - a + 1);

			if (id) {
				memcpy(id, data + a, b - a);
				id[b - a] = '\0';
			}
			return id;
		}
		i = end + 1;
	}
	return strdup("");
}
