/*
 * libFuzzer target: the incremental response parser.
 *
 * The input is parsed twice, whole and in pieces of pseudo-random sizes
 * (seeded by the input), with small limits so every limit is reachable;
 * body literals are streamed, others buffered. Both runs must give the
 * same responses, streamed bytes and error: splitting never changes the
 * result.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parser_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct digest {
	uint64_t h;
	uint64_t responses;
	uint64_t streamed;
};

static void mix(struct digest *d, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		d->h = (d->h ^ b[i]) * 1099511628211ull;
}

static void mix_value(struct digest *d, const struct imap_value *v)
{
	uint64_t n;

	mix(d, &v->type, sizeof(v->type));
	switch (v->type) {
	case IMAP_VAL_ATOM:
		/* the accessors must cope with any atom */
		if (imap_value_number(v, UINT64_MAX, &n) == 0)
			mix(d, &n, sizeof(n));
		(void)imap_value_is_atom(v, "UID");
		/* fall through */
	case IMAP_VAL_STRING:
		mix(d, v->str, v->len);
		if (v->str[v->len] != '\0')
			__builtin_trap();
		break;
	case IMAP_VAL_STREAMED:
		mix(d, &v->size, sizeof(v->size));
		break;
	case IMAP_VAL_NIL:
		break;
	case IMAP_VAL_LIST:
		mix(d, &v->count, sizeof(v->count));
		for (size_t i = 0; i < v->count; i++)
			mix_value(d, v->items[i]);
		break;
	}
}

static enum imap_literal_action lit_begin(void *ctx, const struct imap_literal_info *info)
{
	struct digest *d = ctx;

	mix(d, &info->size, sizeof(info->size));
	if (info->depth == 1 && info->item && info->item->type == IMAP_VAL_ATOM &&
	    strncmp(info->item->str, "BODY[", 5) == 0)
		return IMAP_LITERAL_STREAM;
	if (strcmp(info->resp->keyword, "X-REJECT") == 0)
		return IMAP_LITERAL_REJECT;
	return IMAP_LITERAL_BUFFER;
}

static void lit_data(void *ctx, const void *buf, size_t len)
{
	struct digest *d = ctx;

	if (len == 0)
		__builtin_trap();
	d->streamed += len;
	mix(d, buf, len);
}

static void lit_end(void *ctx)
{
	struct digest *d = ctx;

	mix(d, "|", 1);
}

static void run(const uint8_t *data, size_t size, uint32_t seed, struct digest *d)
{
	static const struct imap_parser_callbacks cbs = { lit_begin, lit_data, lit_end };
	struct imap_limits lim = {
		.max_line = 4096,
		.max_literal = 1 << 20,
		.max_depth = 8,
		.max_buffered_literal = 1 << 16,
	};
	struct imap_parser *p = imap_parser_new(&lim, &cbs, d, false);
	size_t pos = 0;

	if (!p)
		abort();
	while (pos < size) {
		size_t n = size - pos;

		if (seed) {
			seed = seed * 1103515245u + 12345u;
			n = 1 + (seed >> 16) % 17;
			if (n > size - pos)
				n = size - pos;
		}
		size_t off = 0;
		while (off < n) {
			struct imap_response *r;
			size_t used;
			enum imap_parse_status st =
				imap_parser_feed(p, data + pos + off, n - off, &used, &r);

			if (used > n - off)
				__builtin_trap();
			off += used;
			if (st == IMAP_PARSE_ERROR) {
				const char *e = imap_parser_error(p);

				mix(d, e, strlen(e));
				imap_parser_free(p);
				return;
			}
			if (st == IMAP_PARSE_DONE) {
				d->responses++;
				mix(d, &r->type, sizeof(r->type));
				mix(d, r->tag, strlen(r->tag));
				mix(d, &r->number, sizeof(r->number));
				mix(d, r->keyword, strlen(r->keyword));
				mix(d, r->code, strlen(r->code));
				if (r->code_args)
					mix(d, r->code_args, strlen(r->code_args));
				if (r->text)
					mix(d, r->text, strlen(r->text));
				mix_value(d, &r->args);
				imap_response_free(r);
			} else if (off != n) {
				__builtin_trap(); /* NEED_MORE must consume all */
			}
		}
		pos += n;
	}
	mix(d, imap_parser_idle(p) ? "i" : "p", 1);
	imap_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct digest whole = { .h = 14695981039346656037ull };
	struct digest split = { .h = 14695981039346656037ull };
	uint32_t seed = 1;

	for (size_t i = 0; i < size && i < 8; i++)
		seed = seed * 31 + data[i];
	run(data, size, 0, &whole);
	run(data, size, seed | 1, &split);
	if (whole.h != split.h || whole.responses != split.responses ||
	    whole.streamed != split.streamed)
		__builtin_trap();
	return 0;
}
