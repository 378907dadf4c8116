/*
 * Command building (private to imap/): every argument a caller gives goes
 * through imap_cmdbuf_add_string(), the one quoting routine, which picks an
 * atom, a quoted string or a literal. The buffer also keeps a trace copy
 * with credentials replaced and literal contents shown as a byte count,
 * and the offsets where the sender must wait for a "+" continuation
 * (synchronising literals, when the server lacks LITERAL+).
 */
#ifndef IMAPFS_QUOTE_I_H
#define IMAPFS_QUOTE_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct imap_cmdbuf {
	char *data;
	size_t len;
	size_t cap;
	char *trace; /* NUL-terminated, bounded by IMAP_TRACE_MAX */
	size_t trace_len;
	size_t *sync; /* offsets in data just after each "{n}\r\n" needing a "+" */
	size_t nsync;
	bool literal_plus;  /* LITERAL+: every literal non-synchronising */
	bool literal_minus; /* LITERAL-: non-synchronising up to 4096 bytes */
	bool failed;        /* out of memory: the command must not be sent */
	bool secret;        /* holds a credential: no copy is left behind (see below) */
};

#define IMAP_TRACE_MAX 1024

enum {
	IMAP_QUOTE_REDACT = 1u << 0,     /* trace shows <redacted> */
	IMAP_QUOTE_NO_ATOM = 1u << 1,    /* always a string, never an atom */
};

void imap_cmdbuf_init(struct imap_cmdbuf *b, bool literal_plus, bool literal_minus);
void imap_cmdbuf_free(struct imap_cmdbuf *b);

/* From now on the buffer holds a credential: it grows by copy and wipe
 * instead of realloc (which would free an unwiped copy), and
 * imap_cmdbuf_free wipes it. Call before adding the credential. */
void imap_cmdbuf_set_secret(struct imap_cmdbuf *b);

/* Fixed protocol text (a verb, SP, a number): appended as is. Never use
 * this for a value that came from a caller. */
void imap_cmdbuf_add_raw(struct imap_cmdbuf *b, const char *text);
void imap_cmdbuf_add_rawf(struct imap_cmdbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The quoting routine: s[0..len) as an atom when every byte is an
 * ASTRING-CHAR (and it is not "NIL"), a quoted string when every byte is
 * printable ASCII, else a literal. NUL cannot be sent: -1. */
int imap_cmdbuf_add_string(struct imap_cmdbuf *b, const char *s, size_t len, unsigned flags);

/* A literal of arbitrary bytes (APPEND message). */
void imap_cmdbuf_add_literal(struct imap_cmdbuf *b, const void *data, size_t len);

/* "(flag flag ...)" from a space separated list; each must be a flag
 * ("\Seen") or keyword atom. -1 if any is invalid (nothing sensible can be sent). */
int imap_cmdbuf_add_flag_list(struct imap_cmdbuf *b, const char *flags);

/* true if flags is a valid space separated list of flags/keywords */
bool imap_flags_valid(const char *flags);

/* true if set is a valid sequence set: seq (":" seq)? ("," ...)*, seq =
 * nz-number or "*" */
bool imap_sequence_set_valid(const char *set);

/* The sender waits for a "+" continuation at this point (SASL). */
void imap_cmdbuf_add_sync(struct imap_cmdbuf *b);

/* CRLF at the end of the command (or of a line before a sync point). */
void imap_cmdbuf_end(struct imap_cmdbuf *b);

#endif
