/*
 * Incremental IMAP response parser (private to imap/, used by the unit
 * tests and the fuzz target).
 *
 * Bytes are fed in pieces of any size; each call returns NEED_MORE (all
 * bytes consumed, no complete response yet), ERROR (sticky; the message
 * says which rule or limit was broken) or DONE with one complete response,
 * having consumed only the bytes up to the end of that response.
 *
 * A response is read as line segments separated by literals. A literal
 * announced by "{n}" is either buffered into the response (bounded by
 * max_buffered_literal per response) or streamed to the caller in chunks
 * as the bytes arrive, never held whole: the literal_begin callback
 * decides, seeing the response parsed so far and the item the literal
 * belongs to.
 *
 * Status responses (OK, NO, BAD, PREAUTH, BYE) keep their response code and
 * text raw; every other untagged response has its arguments parsed into a
 * tree of atoms, strings, NILs and lists.
 */
#ifndef IMAPFS_PARSER_I_H
#define IMAPFS_PARSER_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imapfs/imap.h"

enum imap_value_type {
	IMAP_VAL_ATOM,     /* includes numbers, flags, BODY[...]<n> */
	IMAP_VAL_STRING,   /* quoted string or buffered literal */
	IMAP_VAL_NIL,
	IMAP_VAL_LIST,
	IMAP_VAL_STREAMED, /* literal delivered to the callbacks; only its size kept */
};

struct parser_arena;

struct imap_value {
	enum imap_value_type type;
	bool literal;             /* STRING that arrived as a literal */
	char *str;                /* ATOM/STRING: NUL-terminated (a literal may hold NULs) */
	size_t len;               /* ATOM/STRING length */
	uint64_t size;            /* STREAMED: literal size */
	struct imap_value **items; /* LIST children */
	size_t count;
	size_t cap;
};

enum imap_resp_type {
	IMAP_RESP_UNTAGGED,
	IMAP_RESP_TAGGED,
	IMAP_RESP_CONTINUATION,
};

#define IMAP_TAG_MAX 32
#define IMAP_KEYWORD_MAX 32
#define IMAP_CODE_MAX 32

struct imap_response {
	enum imap_resp_type type;
	char tag[IMAP_TAG_MAX + 1];         /* TAGGED */
	bool has_number;                    /* "* 12 FETCH": number before keyword */
	uint32_t number;
	char keyword[IMAP_KEYWORD_MAX + 1]; /* upper case; "" for CONTINUATION */
	bool is_status;                     /* OK NO BAD PREAUTH BYE */
	char code[IMAP_CODE_MAX + 1];       /* upper case response code or "" */
	char *code_args;                    /* raw text after the code name, NULL if none */
	char *text;                         /* status or continuation text, never NULL */
	struct imap_value args;             /* LIST of the data arguments */
	struct parser_arena *arena;         /* holds args' values (parser.c) */
};

enum imap_parse_status {
	IMAP_PARSE_NEED_MORE,
	IMAP_PARSE_ERROR,
	IMAP_PARSE_DONE,
};

enum imap_literal_action {
	IMAP_LITERAL_BUFFER,
	IMAP_LITERAL_STREAM,
	IMAP_LITERAL_REJECT, /* the parse fails with "unexpected literal" */
};

struct imap_literal_info {
	const struct imap_response *resp;   /* parsed so far: type, tag, number, keyword */
	const struct imap_value *container; /* the list the literal is an element of */
	const struct imap_value *item;      /* element before it in container, or NULL */
	unsigned depth;                     /* 0: among the response arguments, 1: in a list (FETCH items) */
	uint64_t size;
};

struct imap_parser_callbacks {
	/* NULL: every literal is buffered */
	enum imap_literal_action (*literal_begin)(void *ctx, const struct imap_literal_info *info);
	/* streamed literal content, in order; chunks are at most one fed piece */
	void (*literal_data)(void *ctx, const void *buf, size_t len);
	void (*literal_end)(void *ctx);
};

struct imap_parser;

/* limits: zero fields mean the defaults of struct imap_limits. trace: log
 * each received line at LOG_LEVEL_TRACE, literal contents as a byte
 * count. Returns NULL when out of memory. */
struct imap_parser *imap_parser_new(const struct imap_limits *limits,
				    const struct imap_parser_callbacks *cbs, void *ctx, bool trace);
void imap_parser_free(struct imap_parser *p);

/* Feed bytes. *used_out: how many were consumed. On DONE *resp_out is a
 * response the caller frees with imap_response_free(). */
enum imap_parse_status imap_parser_feed(struct imap_parser *p, const void *buf, size_t len,
					size_t *used_out, struct imap_response **resp_out);

/* The error message after ERROR. */
const char *imap_parser_error(const struct imap_parser *p);

/* true between responses: no partial response pending */
bool imap_parser_idle(const struct imap_parser *p);

void imap_response_free(struct imap_response *r);

/* Helpers on values. */
bool imap_value_is_atom(const struct imap_value *v, const char *name); /* case-insensitive */
/* ATOM that is a number within max: 0 ok, -1 otherwise */
int imap_value_number(const struct imap_value *v, uint64_t max, uint64_t *out);
/* ATOM or STRING text */
const char *imap_value_text(const struct imap_value *v);

/* Parse a decimal number of at most max from s[0..len); 0 ok, -1 invalid. */
int imap_parse_number(const char *s, size_t len, uint64_t max, uint64_t *out);

#endif
