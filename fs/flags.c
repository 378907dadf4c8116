/*
 * fs/flags: parsing user.imap.flags values (see flags_i.h). Pure.
 */
#include "flags_i.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const system_flags[] = {
	"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft",
};

/* RFC 3501 atom-char, minus ']' (resp-specials) as a keyword may not hold it */
static bool flags_is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return !strchr("(){%*\"\\]", c);
}

static bool flags_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int flags_parse(const char *in, size_t len, char **out)
{
	char *res = malloc(len + 1);
	size_t used = 0, i = 0;

	if (!res)
		return -ENOMEM;
	while (len > 0 && in[len - 1] == '\0')
		len--;
	while (i < len) {
		const char *word;
		size_t wlen, k;
		const char *canon = NULL;
		char *w;
		bool dup = false;

		while (i < len && flags_is_space(in[i]))
			i++;
		if (i >= len)
			break;
		word = in + i;
		while (i < len && !flags_is_space(in[i]))
			i++;
		wlen = (size_t)(in + i - word);
		if (word[0] == '\\') {
			for (k = 0; k < sizeof(system_flags) / sizeof(system_flags[0]); k++)
				if (strlen(system_flags[k]) == wlen &&
				    strncasecmp(system_flags[k], word, wlen) == 0)
					canon = system_flags[k];
			if (!canon)
				goto out_inval;
		} else {
			for (k = 0; k < wlen; k++)
				if (!flags_is_atom_char((unsigned char)word[k]))
					goto out_inval;
		}
		/* duplicates: compare with what is already in res */
		for (w = res; w < res + used;) {
			char *e = memchr(w, ' ', (size_t)(res + used - w));
			size_t l = e ? (size_t)(e - w) : (size_t)(res + used - w);

			if (l == wlen && strncasecmp(w, word, wlen) == 0)
				dup = true;
			w += l + 1;
		}
		if (dup)
			continue;
		if (used)
			res[used++] = ' ';
		memcpy(res + used, canon ? canon : word, wlen);
		used += wlen;
	}
	res[used] = '\0';
	*out = res;
	return 0;

out_inval:
	free(res);
	return -EINVAL;
}

int flags_parse_change(const char *in, size_t len, char **add_out, char **remove_out)
{
	char *add = malloc(len + 1), *rem = malloc(len + 1);
	size_t nadd = 0, nrem = 0, i = 0, words = 0, signed_words = 0;
	int r;

	*add_out = *remove_out = NULL;
	if (!add || !rem) {
		r = -ENOMEM;
		goto out_free;
	}
	while (len > 0 && in[len - 1] == '\0')
		len--;
	while (i < len) {
		const char *word;
		size_t wlen;
		char *to;
		size_t *used;

		while (i < len && flags_is_space(in[i]))
			i++;
		if (i >= len)
			break;
		word = in + i;
		while (i < len && !flags_is_space(in[i]))
			i++;
		wlen = (size_t)(in + i - word);
		words++;
		if (word[0] != '+' && word[0] != '-')
			continue;
		signed_words++;
		to = word[0] == '+' ? add : rem;
		used = word[0] == '+' ? &nadd : &nrem;
		if (wlen == 1) {
			r = -EINVAL;
			goto out_free;
		}
		if (*used)
			to[(*used)++] = ' ';
		memcpy(to + *used, word + 1, wlen - 1);
		*used += wlen - 1;
	}
	if (signed_words == 0) {
		r = 0;
		goto out_free;
	}
	if (signed_words != words) {
		r = -EINVAL;
		goto out_free;
	}
	r = flags_parse(add, nadd, add_out);
	if (r == 0)
		r = flags_parse(rem, nrem, remove_out);
	if (r) {
		free(*add_out);
		*add_out = NULL;
		goto out_free;
	}
	r = 1;
out_free:
	free(add);
	free(rem);
	return r;
}

bool flags_list_has(const char *list, const char *word, size_t wlen)
{
	while (*list) {
		size_t l;

		while (*list == ' ')
			list++;
		l = strcspn(list, " ");
		if (l == wlen && strncasecmp(list, word, wlen) == 0)
			return true;
		list += l;
	}
	return false;
}

char *flags_apply_change(const char *cur, const char *add, const char *remove)
{
	const char *lists[2] = { cur, add };
	char *out = malloc(strlen(cur) + strlen(add) + 2);
	size_t used = 0;

	if (!out)
		return NULL;
	out[0] = '\0';
	for (int l = 0; l < 2; l++) {
		for (const char *p = lists[l]; *p;) {
			size_t len;

			while (*p == ' ')
				p++;
			len = strcspn(p, " ");
			if (len && !flags_list_has(remove, p, len) &&
			    !flags_list_has(out, p, len)) {
				if (used)
					out[used++] = ' ';
				memcpy(out + used, p, len);
				used += len;
				out[used] = '\0';
			}
			p += len;
		}
	}
	return out;
}
