/*
 * Incremental IMAP response parser: see parser_i.h for the contract.
 *
 * The input is cut into line segments (bytes up to CRLF) and literals.
 * A segment is parsed as soon as its CRLF arrives; a literal announced at
 * the end of a segment is then buffered or streamed without ever being
 * looked at as protocol text. Every allocation is bounded by the limits:
 * the non-literal bytes of one response by max_line, buffered literals by
 * max_buffered_literal, nesting by max_depth.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imapfs/log.h"
#include "imap_i.h"
#include "parser_i.h"

enum parser_state {
	PARSER_LINE,
	PARSER_LITERAL,
	PARSER_ERROR,
};

struct imap_parser {
	struct imap_limits lim;
	struct imap_parser_callbacks cbs;
	void *ctx;
	bool trace;
	enum parser_state state;

	char *line; /* current segment, bounded by lim.max_line + 2 */
	size_t line_len;
	size_t line_cap;
	size_t resp_line_total; /* segment bytes of this response before the current one */

	struct imap_response *resp; /* being built, NULL between responses */
	struct imap_value **stack;  /* open lists; stack[0] is &resp->args */
	unsigned depth;

	uint64_t lit_remaining;
	bool lit_stream;
	struct imap_value *lit_value; /* buffered literal being filled */
	size_t lit_fill;
	size_t buffered_total; /* buffered literal bytes in this response */

	char errmsg[160];
};

static void parser_fail(struct imap_parser *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void parser_fail(struct imap_parser *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->errmsg, sizeof(p->errmsg), fmt, ap);
	va_end(ap);
	p->state = PARSER_ERROR;
}

int imap_parse_number(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return -1;
		d = (unsigned)(s[i] - '0');
		if (d > max || v > (max - d) / 10) /* d > max: max - d would wrap */
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/*
 * The values of a response (nodes, atoms, quoted strings, list arrays)
 * come from one arena per response and go with it: a listing of 100,000
 * messages parsed about 30 allocations per FETCH line, a fifth of the
 * daemon's CPU for it. Buffered literals, which may be large, keep their
 * own allocation. Every arena byte stands for at least one byte of the
 * response line or a bounded per-value cost, so max_line bounds it too.
 */
struct parser_arena {
	struct parser_arena *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

#define ARENA_FIRST 2048
#define ARENA_MAX_CHUNK (64 * 1024)

static void *arena_alloc(struct imap_parser *p, struct imap_response *r, size_t n)
{
	struct parser_arena *a = r->arena;
	size_t need = (n + 15) & ~(size_t)15;

	if (!a || a->cap - a->used < need) {
		size_t cap = a ? a->cap * 2 : ARENA_FIRST;

		if (cap > ARENA_MAX_CHUNK)
			cap = ARENA_MAX_CHUNK;
		if (cap < need)
			cap = need;
		a = malloc(sizeof(*a) + cap);
		if (!a) {
			parser_fail(p, "out of memory");
			return NULL;
		}
		a->next = r->arena;
		a->used = 0;
		a->cap = cap;
		r->arena = a;
	}
	a->used += need;
	return a->data + a->used - need;
}

/* free what the arena does not hold: buffered literals */
static void value_free_literals(struct imap_value *v)
{
	for (size_t i = 0; i < v->count; i++)
		value_free_literals(v->items[i]);
	if (v->literal)
		free(v->str);
}

void imap_response_free(struct imap_response *r)
{
	if (!r)
		return;
	value_free_literals(&r->args);
	while (r->arena) {
		struct parser_arena *next = r->arena->next;

		free(r->arena);
		r->arena = next;
	}
	free(r->code_args);
	free(r->text);
	free(r);
}

bool imap_value_is_atom(const struct imap_value *v, const char *name)
{
	return v && v->type == IMAP_VAL_ATOM && strcasecmp(v->str, name) == 0;
}

int imap_value_number(const struct imap_value *v, uint64_t max, uint64_t *out)
{
	if (!v || v->type != IMAP_VAL_ATOM)
		return -1;
	return imap_parse_number(v->str, v->len, max, out);
}

const char *imap_value_text(const struct imap_value *v)
{
	if (!v || (v->type != IMAP_VAL_ATOM && v->type != IMAP_VAL_STRING))
		return NULL;
	return v->str;
}

struct imap_parser *imap_parser_new(const struct imap_limits *limits,
				    const struct imap_parser_callbacks *cbs, void *ctx, bool trace)
{
	struct imap_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	imap_limits_resolve(limits, &p->lim);
	if (cbs)
		p->cbs = *cbs;
	p->ctx = ctx;
	p->trace = trace;
	p->stack = calloc(p->lim.max_depth + 1, sizeof(*p->stack));
	if (!p->stack) {
		free(p);
		return NULL;
	}
	return p;
}

void imap_parser_free(struct imap_parser *p)
{
	if (!p)
		return;
	imap_response_free(p->resp);
	free(p->stack);
	free(p->line);
	free(p);
}

const char *imap_parser_error(const struct imap_parser *p)
{
	return p->errmsg;
}

bool imap_parser_idle(const struct imap_parser *p)
{
	return p->state == PARSER_LINE && !p->resp && p->line_len == 0;
}

static struct imap_value *value_append(struct imap_parser *p, enum imap_value_type type)
{
	struct imap_value *list = p->stack[p->depth];
	struct imap_value *v;

	if (list->count == list->cap) {
		size_t cap = list->cap ? list->cap * 2 : 8;
		struct imap_value **items = arena_alloc(p, p->resp, cap * sizeof(*items));

		if (!items)
			return NULL;
		if (list->count)
			memcpy(items, list->items, list->count * sizeof(*items));
		list->items = items;
		list->cap = cap;
	}
	v = arena_alloc(p, p->resp, sizeof(*v));
	if (!v)
		return NULL;
	memset(v, 0, sizeof(*v));
	v->type = type;
	list->items[list->count++] = v;
	return v;
}

static char *parser_strndup(struct imap_parser *p, const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (!d) {
		parser_fail(p, "out of memory");
		return NULL;
	}
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static bool is_atom_char(unsigned char c)
{
	/* per byte of every atom: no strchr call */
	return c > 0x20 && c != 0x7f && c != '(' && c != ')' && c != '{' && c != '"';
}

/* tag = 1*<any ASTRING-CHAR except "+"> */
static bool is_tag_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return !strchr("(){%*\"\\+", c);
}

static const char *const status_keywords[] = { "OK", "NO", "BAD", "PREAUTH", "BYE" };

static bool keyword_is_status(const char *kw)
{
	size_t i;

	for (i = 0; i < sizeof(status_keywords) / sizeof(status_keywords[0]); i++)
		if (strcmp(kw, status_keywords[i]) == 0)
			return true;
	return false;
}

/* resp-text = ["[" code [SP args] "]" SP] text; s is NUL-free. */
static int parse_resp_text(struct imap_parser *p, const char *s, size_t len)
{
	struct imap_response *r = p->resp;
	size_t i = 0, start;

	if (i < len && s[i] == ' ')
		i++;
	if (i < len && s[i] == '[') {
		const char *close;

		i++;
		start = i;
		while (i < len && s[i] != ' ' && s[i] != ']')
			i++;
		if (i == start || i - start > IMAP_CODE_MAX) {
			parser_fail(p, "invalid response code");
			return -1;
		}
		for (size_t k = start; k < i; k++) {
			unsigned char c = (unsigned char)s[k];

			if (!is_atom_char(c) || c == '[') {
				parser_fail(p, "invalid response code");
				return -1;
			}
			r->code[k - start] = (char)toupper(c);
		}
		r->code[i - start] = '\0';
		close = memchr(s + i, ']', len - i);
		if (!close) {
			parser_fail(p, "unterminated response code");
			return -1;
		}
		if (s[i] == ' ') {
			r->code_args = parser_strndup(p, s + i + 1, (size_t)(close - s) - i - 1);
			if (!r->code_args)
				return -1;
		}
		i = (size_t)(close - s) + 1;
		if (i < len && s[i] == ' ')
			i++;
	}
	r->text = parser_strndup(p, s + i, len - i);
	return r->text ? 0 : -1;
}

/* Parse the start of a response: tag or "*" or "+", number, keyword.
 * Returns 1 when the response is complete, 0 when arguments follow at
 * *pos, -1 on error. */
static int parse_header(struct imap_parser *p, const char *s, size_t len, size_t *pos)
{
	struct imap_response *r = p->resp;
	size_t i = 0, start;

	if (len >= 1 && s[0] == '+') {
		r->type = IMAP_RESP_CONTINUATION;
		i = 1;
		if (i < len && s[i] == ' ')
			i++;
		r->text = parser_strndup(p, s + i, len - i);
		return r->text ? 1 : -1;
	}
	if (len >= 2 && s[0] == '*' && s[1] == ' ') {
		r->type = IMAP_RESP_UNTAGGED;
		i = 2;
		if (i < len && s[i] >= '0' && s[i] <= '9') {
			uint64_t n;

			start = i;
			while (i < len && s[i] >= '0' && s[i] <= '9')
				i++;
			if (imap_parse_number(s + start, i - start, UINT32_MAX, &n) < 0) {
				parser_fail(p, "message number out of range");
				return -1;
			}
			r->has_number = true;
			r->number = (uint32_t)n;
			if (i >= len || s[i] != ' ') {
				parser_fail(p, "missing keyword after number");
				return -1;
			}
			i++;
		}
	} else {
		r->type = IMAP_RESP_TAGGED;
		start = i;
		while (i < len && s[i] != ' ') {
			if (!is_tag_char((unsigned char)s[i])) {
				parser_fail(p, "invalid character in tag");
				return -1;
			}
			i++;
		}
		if (i == start || i - start > IMAP_TAG_MAX) {
			parser_fail(p, "invalid tag");
			return -1;
		}
		memcpy(r->tag, s + start, i - start);
		r->tag[i - start] = '\0';
		if (i >= len) {
			parser_fail(p, "tagged response without status");
			return -1;
		}
		i++;
	}

	start = i;
	while (i < len && s[i] != ' ') {
		if (!is_atom_char((unsigned char)s[i]) || s[i] == '[' || s[i] == ']') {
			parser_fail(p, "invalid character in response keyword");
			return -1;
		}
		i++;
	}
	if (i == start || i - start > IMAP_KEYWORD_MAX) {
		parser_fail(p, "invalid response keyword");
		return -1;
	}
	for (size_t k = start; k < i; k++)
		r->keyword[k - start] = (char)toupper((unsigned char)s[k]);
	r->keyword[i - start] = '\0';

	if (r->type == IMAP_RESP_TAGGED &&
	    strcmp(r->keyword, "OK") && strcmp(r->keyword, "NO") && strcmp(r->keyword, "BAD")) {
		parser_fail(p, "tagged response is not OK, NO or BAD");
		return -1;
	}
	if (!r->has_number && keyword_is_status(r->keyword)) {
		r->is_status = true;
		if (parse_resp_text(p, s + i, len - i) < 0)
			return -1;
		return 1;
	}
	if (i < len) {
		i++; /* the SP before the arguments */
	}
	*pos = i;
	return 0;
}

static int start_literal(struct imap_parser *p, uint64_t size)
{
	struct imap_value *list = p->stack[p->depth];
	enum imap_literal_action act = IMAP_LITERAL_BUFFER;
	struct imap_value *v;

	if (size > p->lim.max_literal) {
		parser_fail(p, "literal of %" PRIu64 " bytes exceeds the limit of %" PRIu64, size,
			    p->lim.max_literal);
		return -1;
	}
	if (p->cbs.literal_begin) {
		struct imap_literal_info info = {
			.resp = p->resp,
			.container = list,
			.item = list->count ? list->items[list->count - 1] : NULL,
			.depth = p->depth,
			.size = size,
		};
		act = p->cbs.literal_begin(p->ctx, &info);
	}
	if (act == IMAP_LITERAL_REJECT) {
		parser_fail(p, "unexpected literal in %s response", p->resp->keyword);
		return -1;
	}
	if (p->trace && log_enabled(LOG_LEVEL_TRACE))
		log_trace("S: {%" PRIu64 " bytes}", size);
	if (act == IMAP_LITERAL_STREAM) {
		v = value_append(p, IMAP_VAL_STREAMED);
		if (!v)
			return -1;
		v->size = size;
		p->lit_stream = true;
		p->lit_value = NULL;
	} else {
		if (size > p->lim.max_buffered_literal ||
		    p->buffered_total + size > p->lim.max_buffered_literal) {
			parser_fail(p,
				    "literal of %" PRIu64 " bytes exceeds the in-memory limit of %zu",
				    size, p->lim.max_buffered_literal);
			return -1;
		}
		v = value_append(p, IMAP_VAL_STRING);
		if (!v)
			return -1;
		v->literal = true;
		v->str = malloc((size_t)size + 1);
		if (!v->str) {
			parser_fail(p, "out of memory");
			return -1;
		}
		v->len = (size_t)size;
		v->str[size] = '\0';
		p->buffered_total += (size_t)size;
		p->lit_stream = false;
		p->lit_value = v;
		p->lit_fill = 0;
	}
	p->lit_remaining = size;
	p->state = PARSER_LITERAL;
	if (size == 0) {
		if (p->lit_stream && p->cbs.literal_end)
			p->cbs.literal_end(p->ctx);
		p->state = PARSER_LINE;
	}
	return 0;
}

/* Tokenize s[i..len) into the open lists. Returns 1 when the response is
 * complete, 0 when a literal follows, -1 on error. */
static int parse_args(struct imap_parser *p, const char *s, size_t len, size_t i)
{
	while (i < len) {
		unsigned char c = (unsigned char)s[i];
		struct imap_value *v;

		if (c == ' ') {
			i++;
		} else if (c == '(') {
			if (p->depth >= p->lim.max_depth) {
				parser_fail(p, "lists nested deeper than %u", p->lim.max_depth);
				return -1;
			}
			v = value_append(p, IMAP_VAL_LIST);
			if (!v)
				return -1;
			p->stack[++p->depth] = v;
			i++;
		} else if (c == ')') {
			if (p->depth == 0) {
				parser_fail(p, "unbalanced ')'");
				return -1;
			}
			p->depth--;
			i++;
		} else if (c == '"') {
			size_t start = ++i, n = 0;
			char *d;

			/* first pass: find the end and validate escapes */
			while (i < len && s[i] != '"') {
				if (s[i] == '\\') {
					if (i + 1 >= len || (s[i + 1] != '\\' && s[i + 1] != '"')) {
						parser_fail(p, "invalid escape in quoted string");
						return -1;
					}
					i++;
				}
				i++;
				n++;
			}
			if (i >= len) {
				parser_fail(p, "unterminated quoted string");
				return -1;
			}
			v = value_append(p, IMAP_VAL_STRING);
			if (!v)
				return -1;
			d = arena_alloc(p, p->resp, n + 1);
			if (!d)
				return -1;
			v->str = d;
			v->len = n;
			for (size_t k = start; k < i; k++) {
				if (s[k] == '\\')
					k++;
				*d++ = s[k];
			}
			*d = '\0';
			i++;
		} else if (c == '{') {
			size_t start = ++i;
			uint64_t size;

			while (i < len && s[i] >= '0' && s[i] <= '9')
				i++;
			if (i == start || i >= len ||
			    !(s[i] == '}' || (s[i] == '+' && i + 1 < len && s[i + 1] == '}'))) {
				parser_fail(p, "invalid literal size");
				return -1;
			}
			if (imap_parse_number(s + start, i - start, UINT64_MAX, &size) < 0) {
				parser_fail(p, "literal size does not fit in 64 bits");
				return -1;
			}
			i += s[i] == '+' ? 2 : 1;
			if (i != len) {
				parser_fail(p, "literal size not at the end of the line");
				return -1;
			}
			return start_literal(p, size) < 0 ? -1 : 0;
		} else if (c == '~' && i + 1 < len && s[i + 1] == '{') {
			parser_fail(p, "binary literal not supported");
			return -1;
		} else {
			size_t start = i;

			while (i < len && s[i] != ' ' && s[i] != '(' && s[i] != ')') {
				c = (unsigned char)s[i];
				if (c == '[') {
					/* section: BODY[HEADER.FIELDS (A B)] */
					const char *close = memchr(s + i, ']', len - i);

					if (!close) {
						parser_fail(p, "unterminated '['");
						return -1;
					}
					for (const char *q = s + i; q < close; q++) {
						if ((unsigned char)*q < 0x20 || *q == 0x7f) {
							parser_fail(p, "control character in atom");
							return -1;
						}
					}
					i = (size_t)(close - s) + 1;
					continue;
				}
				if (!is_atom_char(c)) {
					parser_fail(p, "invalid character 0x%02x in atom", c);
					return -1;
				}
				i++;
			}
			if (i - start == 3 && strncasecmp(s + start, "NIL", 3) == 0) {
				if (!value_append(p, IMAP_VAL_NIL))
					return -1;
			} else {
				v = value_append(p, IMAP_VAL_ATOM);
				if (!v)
					return -1;
				v->str = arena_alloc(p, p->resp, i - start + 1);
				if (!v->str)
					return -1;
				memcpy(v->str, s + start, i - start);
				v->str[i - start] = '\0';
				v->len = i - start;
			}
		}
	}
	if (p->depth != 0) {
		parser_fail(p, "unbalanced '('");
		return -1;
	}
	return 1;
}

/* A complete segment is in p->line (without CRLF, line_len bytes). */
static int parse_segment(struct imap_parser *p)
{
	const char *s = p->line;
	size_t len = p->line_len, pos = 0;
	int r;

	if (memchr(s, '\0', len)) {
		parser_fail(p, "NUL byte in response line");
		return -1;
	}
	if (memchr(s, '\r', len)) {
		parser_fail(p, "CR inside response line");
		return -1;
	}
	if (p->trace && log_enabled(LOG_LEVEL_TRACE))
		log_trace("S: %.*s", len > 1000 ? 1000 : (int)len, s);
	if (!p->resp) {
		p->resp = calloc(1, sizeof(*p->resp));
		if (!p->resp) {
			parser_fail(p, "out of memory");
			return -1;
		}
		p->resp->args.type = IMAP_VAL_LIST;
		p->stack[0] = &p->resp->args;
		p->depth = 0;
		p->buffered_total = 0;
		r = parse_header(p, s, len, &pos);
		if (r != 0)
			return r;
	}
	return parse_args(p, s, len, pos);
}

enum imap_parse_status imap_parser_feed(struct imap_parser *p, const void *buf, size_t len,
					size_t *used_out, struct imap_response **resp_out)
{
	const char *b = buf;
	size_t pos = 0;

	*used_out = 0;
	*resp_out = NULL;
	while (pos < len && p->state != PARSER_ERROR) {
		if (p->state == PARSER_LITERAL) {
			size_t n = len - pos;

			if ((uint64_t)n > p->lit_remaining)
				n = (size_t)p->lit_remaining;
			if (p->lit_stream) {
				if (p->cbs.literal_data)
					p->cbs.literal_data(p->ctx, b + pos, n);
			} else {
				memcpy(p->lit_value->str + p->lit_fill, b + pos, n);
				p->lit_fill += n;
			}
			pos += n;
			p->lit_remaining -= n;
			if (p->lit_remaining == 0) {
				if (p->lit_stream && p->cbs.literal_end)
					p->cbs.literal_end(p->ctx);
				p->lit_value = NULL;
				p->state = PARSER_LINE;
			}
			continue;
		}

		const char *lf = memchr(b + pos, '\n', len - pos);
		size_t n = lf ? (size_t)(lf - (b + pos)) + 1 : len - pos;

		if (p->resp_line_total + p->line_len + n > p->lim.max_line + 2) {
			parser_fail(p, "response line longer than %zu bytes", p->lim.max_line);
			break;
		}
		if (p->line_len + n > p->line_cap) {
			size_t cap = p->line_cap ? p->line_cap : 256;
			char *nl;

			while (cap < p->line_len + n)
				cap *= 2;
			nl = realloc(p->line, cap);
			if (!nl) {
				parser_fail(p, "out of memory");
				break;
			}
			p->line = nl;
			p->line_cap = cap;
		}
		memcpy(p->line + p->line_len, b + pos, n);
		p->line_len += n;
		pos += n;
		if (!lf)
			continue;

		if (p->line_len < 2 || p->line[p->line_len - 2] != '\r') {
			parser_fail(p, "line not terminated by CRLF");
			break;
		}
		p->resp_line_total += p->line_len;
		p->line_len -= 2;
		int r = parse_segment(p);
		p->line_len = 0;
		if (r < 0)
			break;
		if (r == 1) {
			*resp_out = p->resp;
			p->resp = NULL;
			p->resp_line_total = 0;
			*used_out = pos;
			return IMAP_PARSE_DONE;
		}
	}
	*used_out = pos;
	return p->state == PARSER_ERROR ? IMAP_PARSE_ERROR : IMAP_PARSE_NEED_MORE;
}
