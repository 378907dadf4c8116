/*
 * imapfs IMAP client: one authenticated session over TCP + TLS.
 *
 * Contract
 * - A struct imap_session is used by one thread at a time; sessions share
 *   nothing, so different threads may drive different sessions at once.
 *   imap_global_init() must have been called once before any session opens.
 * - Every call that talks to the server is synchronous and bounded: each
 *   wait for the socket (connect, TLS handshake, read, write) is limited by
 *   params->io_timeout_ms, so no call blocks forever.
 * - Return values: 0 on success, -1 on failure with *err filled in (err may
 *   be NULL). After a failure of kind CONNECT, TLS, TIMEOUT, PROTOCOL or
 *   CLOSED the session is broken (imap_session_is_broken() is true): every
 *   later call fails at once with IMAP_ERR_CLOSED and the caller must close
 *   it and open a new one. NO and BAD leave the session usable.
 * - Mailbox arguments and names returned by LIST are server names, exactly
 *   as on the wire (modified UTF-7, see mutf7.h); the module quotes them
 *   with its one quoting routine (atom, quoted string or literal). Nothing
 *   given by the caller is ever pasted into a command unquoted.
 * - UID sets are strings in IMAP sequence-set syntax ("1:*", "4,7,9:12");
 *   they are validated (digits, ',', ':', '*') before use: anything else
 *   is IMAP_ERR_LOCAL.
 * - Every length the server sends is bounded by params->limits before use;
 *   exceeding a limit is IMAP_ERR_PROTOCOL and ends the connection.
 * - Credentials never reach the log: with params->trace the protocol is
 *   logged at LOG_LEVEL_TRACE with LOGIN/AUTHENTICATE arguments replaced
 *   and literal contents shown as a byte count.
 */
#ifndef IMAPFS_IMAP_H
#define IMAPFS_IMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum imap_tls_mode {
	IMAP_TLS_IMPLICIT = 0, /* TLS from the first byte (port 993) */
	IMAP_TLS_STARTTLS,     /* plain connect, STARTTLS mandatory (port 143) */
	IMAP_TLS_NONE,         /* plaintext: only when the user asked for it */
};

enum imap_error_kind {
	IMAP_ERR_NONE = 0,
	IMAP_ERR_CONNECT,  /* name resolution or TCP connect failed */
	IMAP_ERR_TLS,      /* handshake, certificate or host name check failed */
	IMAP_ERR_TIMEOUT,  /* the server did not answer within io_timeout_ms */
	IMAP_ERR_PROTOCOL, /* malformed or hostile response, a limit exceeded */
	IMAP_ERR_CLOSED,   /* BYE, EOF, or the session was already broken */
	IMAP_ERR_AUTH,     /* login refused (wrong user or password) */
	IMAP_ERR_NO,       /* tagged NO: the command failed, session usable */
	IMAP_ERR_BAD,      /* tagged BAD: the command was refused, session usable */
	IMAP_ERR_LOCAL,    /* out of memory, invalid argument, missing capability */
};

struct imap_error {
	enum imap_error_kind kind;
	/* response code of a NO/BAD without its arguments, upper case, e.g.
	 * "OVERQUOTA", "TRYCREATE", "NONEXISTENT", "ALREADYEXISTS"; "" if none */
	char code[32];
	/* human-readable reason, one line, never contains credentials */
	char reason[256];
};

/* Hard limits on what the server may send; 0 in a field means the default
 * given in the comment. */
struct imap_limits {
	size_t max_line;         /* one response line without literals: 64 KiB */
	uint64_t max_literal;    /* one literal: 256 MiB */
	unsigned max_depth;      /* nesting of parenthesised lists: 32 */
	unsigned max_untagged;   /* untagged responses buffered per command: 1,000,000 */
	size_t max_buffered_literal; /* a literal kept in memory (not a streamed body): 1 MiB */
};

struct imap_params {
	const char *host;
	uint16_t port;           /* 0: 993 for IMPLICIT, 143 otherwise */
	enum imap_tls_mode tls;
	const char *cafile;      /* trusted besides the system store; may be NULL */
	const char *user;
	const char *password;    /* copied only into the LOGIN command */
	int io_timeout_ms;       /* 0: 30000 */
	struct imap_limits limits;
	bool trace;              /* protocol trace to log_trace() */
};

/* Mailbox attributes from LIST, as a bit mask. */
enum {
	IMAP_MBOX_NOSELECT = 1u << 0,
	IMAP_MBOX_NOINFERIORS = 1u << 1,
	IMAP_MBOX_NONEXISTENT = 1u << 2,
	IMAP_MBOX_HASCHILDREN = 1u << 3,
	IMAP_MBOX_HASNOCHILDREN = 1u << 4,
	IMAP_MBOX_MARKED = 1u << 5,
	IMAP_MBOX_UNMARKED = 1u << 6,
	IMAP_MBOX_SUBSCRIBED = 1u << 7,
	IMAP_MBOX_ALL = 1u << 8, /* RFC 6154 special use */
	IMAP_MBOX_ARCHIVE = 1u << 9,
	IMAP_MBOX_DRAFTS = 1u << 10,
	IMAP_MBOX_FLAGGED = 1u << 11,
	IMAP_MBOX_JUNK = 1u << 12,
	IMAP_MBOX_SENT = 1u << 13,
	IMAP_MBOX_TRASH = 1u << 14,
};

struct imap_mailbox_info {
	const char *name; /* server name (modified UTF-7), NUL-terminated */
	char delimiter;   /* hierarchy delimiter, '\0' for NIL */
	unsigned attrs;   /* IMAP_MBOX_* */
};

struct imap_select_info {
	uint32_t uidvalidity;
	uint32_t uidnext;        /* 0 if the server did not say */
	uint32_t exists;
	uint64_t highestmodseq;  /* 0 without CONDSTORE or [NOMODSEQ]; at most INT64_MAX */
	bool read_only;          /* [READ-ONLY] or EXAMINE */
	/* PERMANENTFLAGS as the server spelled them, space separated, without
	 * parentheses; "\*" included when new keywords may be created. Empty
	 * when the server sent none (then FLAGS applies). */
	char permanent_flags[1024];
};

struct imap_status_info {
	uint32_t messages;
	uint32_t uidnext;
	uint32_t uidvalidity;
	uint64_t highestmodseq; /* 0 without CONDSTORE */
};

/* GETQUOTAROOT's answer: per resource, the quota root with the least left
 * (several roots may hold a mailbox). STORAGE is in units of 1024 octets
 * (RFC 9208), MESSAGE in messages; a resource no root limits is absent. */
struct imap_quota_info {
	bool have_storage;
	uint64_t storage_used, storage_limit;   /* KiB */
	bool have_messages;
	uint64_t messages_used, messages_limit;
};

/* What imap_uid_fetch_meta asks for. UID is always fetched. */
enum {
	IMAP_META_FLAGS = 1u << 0,
	IMAP_META_SIZE = 1u << 1,         /* RFC822.SIZE */
	IMAP_META_INTERNALDATE = 1u << 2,
	IMAP_META_MODSEQ = 1u << 3,       /* only with CONDSTORE */
};

struct imap_msg_meta {
	uint32_t uid;
	unsigned have;               /* IMAP_META_* present in this response */
	const char *flags;           /* "\Seen $Label1", space separated; valid during the callback */
	uint64_t size;               /* at most INT64_MAX, as modseq (else a protocol error) */
	int64_t internaldate;        /* seconds since the epoch, UTC */
	int internaldate_tz_minutes; /* the zone the server gave, e.g. +120 */
	uint64_t modseq;
};

/* Callbacks return 0 to go on; non-zero stops delivery for the rest of the
 * command (the command is still read to its end so the session stays in
 * step) and the call then fails with IMAP_ERR_LOCAL. */
typedef int (*imap_list_cb)(void *ctx, const struct imap_mailbox_info *mbox);
typedef int (*imap_meta_cb)(void *ctx, const struct imap_msg_meta *meta);
/* An expunged range from VANISHED (QRESYNC) or an EXPUNGE translated to a
 * UID by the session: lo..hi inclusive. */
typedef int (*imap_vanished_cb)(void *ctx, uint32_t uid_lo, uint32_t uid_hi);

/* A body arrives as begin, any number of data chunks (each at most a few
 * hundred KiB, never the whole literal buffered), then end. The literal is
 * streamed straight from the socket to the sink. */
struct imap_body_sink {
	/* size: the literal's size; offset: where it starts in the message
	 * (0 unless a partial fetch was asked for) */
	int (*begin)(void *ctx, uint32_t uid, uint64_t offset, uint64_t size);
	int (*data)(void *ctx, uint32_t uid, const void *buf, size_t len);
	/* called once all bytes of this body have arrived */
	int (*end)(void *ctx, uint32_t uid);
};

struct imap_session;

/* Once per process, before threads start: OpenSSL initialisation. */
int imap_global_init(void);

/*
 * Connect, set up TLS as params->tls says, read the greeting, check
 * capabilities, LOGIN (or AUTHENTICATE PLAIN), refresh capabilities and
 * ENABLE QRESYNC (or CONDSTORE) where offered.
 * - IMPLICIT and STARTTLS verify the certificate against the system store
 *   and params->cafile, check the host name, send SNI, require TLS 1.2.
 * - STARTTLS: a server without STARTTLS is refused (IMAP_ERR_TLS); a
 *   PREAUTH greeting is refused; any byte buffered after the tagged OK of
 *   STARTTLS and before the handshake aborts (response injection).
 * - No credential is sent before TLS is established unless tls is NONE.
 * On success *out is a logged-in session in the authenticated state.
 */
int imap_session_open(const struct imap_params *params, struct imap_session **out,
		      struct imap_error *err);

/* LOGOUT when the session is healthy (bounded by the timeout), close the
 * socket, free everything. NULL is a no-op. */
void imap_session_close(struct imap_session *s);

bool imap_session_is_broken(const struct imap_session *s);

/* true if the server announced the capability (case-insensitive), e.g.
 * "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "LITERAL+", "IDLE". */
bool imap_session_has_cap(const struct imap_session *s, const char *cap);

/* The server name of the selected mailbox, or NULL. */
const char *imap_session_selected(const struct imap_session *s);

/* LIST reference pattern; one callback per mailbox. */
int imap_list(struct imap_session *s, const char *reference, const char *pattern,
	      imap_list_cb cb, void *ctx, struct imap_error *err);

/* SELECT (read_only false) or EXAMINE (true) a mailbox. With CONDSTORE
 * enabled the reply carries HIGHESTMODSEQ. */
int imap_select(struct imap_session *s, const char *mailbox, bool read_only,
		struct imap_select_info *out, struct imap_error *err);

/* STATUS mailbox (MESSAGES UIDNEXT UIDVALIDITY [HIGHESTMODSEQ]). */
int imap_status(struct imap_session *s, const char *mailbox, struct imap_status_info *out,
		struct imap_error *err);

/* GETQUOTAROOT mailbox (QUOTA, RFC 9208 / 2087; the caller checks the
 * capability). A malformed QUOTA response is a protocol error. */
int imap_getquotaroot(struct imap_session *s, const char *mailbox,
		      struct imap_quota_info *out, struct imap_error *err);

/*
 * UID FETCH uid_set (UID + items) on the selected mailbox. With
 * changedsince > 0 (needs CONDSTORE) adds (CHANGEDSINCE n), and with
 * QRESYNC enabled also VANISHED, reported through vanished_cb (may be
 * NULL). Untagged EXPUNGE seen meanwhile is also reported through
 * vanished_cb when the session can map it to a UID.
 */
int imap_uid_fetch_meta(struct imap_session *s, const char *uid_set, unsigned items,
			uint64_t changedsince, imap_meta_cb meta_cb,
			imap_vanished_cb vanished_cb, void *ctx, struct imap_error *err);

/*
 * UID FETCH uid_set BODY.PEEK[] (never BODY[]: reading does not set
 * \Seen), or BODY.PEEK[]<offset.length> when length > 0. Each body is
 * streamed to the sink. Flags or other items arriving alongside are
 * ignored. UIDs the server no longer has simply produce no callbacks.
 */
int imap_uid_fetch_bodies(struct imap_session *s, const char *uid_set, uint64_t offset,
			  uint64_t length, const struct imap_body_sink *sink, void *ctx,
			  struct imap_error *err);

/* UID SEARCH ALL on the selected mailbox: every UID, ascending, through
 * uids_out (malloc'd, caller frees) and *count_out. */
int imap_uid_search_all(struct imap_session *s, uint32_t **uids_out, size_t *count_out,
			struct imap_error *err);

/*
 * APPEND mailbox [(flags)] [internaldate] literal. flags: space separated
 * flags/keywords or NULL; internaldate: seconds since the epoch or -1 for
 * the server's time (so is a date after 9999-12-31, which IMAP's four-digit
 * year cannot carry). The message is sent exactly as given (the caller
 * converts line ends); as one literal ({n+} with LITERAL+, else waiting for
 * the continuation). With UIDPLUS, *uidvalidity_out and *uid_out get the
 * APPENDUID; otherwise both are 0. Either out pointer may be NULL.
 */
int imap_append(struct imap_session *s, const char *mailbox, const char *flags,
		int64_t internaldate, const void *data, size_t len, uint32_t *uidvalidity_out,
		uint32_t *uid_out, struct imap_error *err);

enum imap_store_op {
	IMAP_STORE_REPLACE, /* FLAGS.SILENT */
	IMAP_STORE_ADD,     /* +FLAGS.SILENT */
	IMAP_STORE_REMOVE,  /* -FLAGS.SILENT */
};

/* UID STORE uid_set [+-]FLAGS.SILENT (flags). flags: space separated,
 * each a valid flag or keyword atom (else IMAP_ERR_LOCAL, nothing sent);
 * "" clears with REPLACE. */
int imap_uid_store(struct imap_session *s, const char *uid_set, enum imap_store_op op,
		   const char *flags, struct imap_error *err);

/* UID EXPUNGE uid_set (needs UIDPLUS: without it IMAP_ERR_LOCAL and
 * nothing is sent; never falls back to a bare EXPUNGE). */
int imap_uid_expunge(struct imap_session *s, const char *uid_set, struct imap_error *err);

/* UID COPY uid to dest; COPYUID (UIDPLUS) gives the new UID, else 0. */
int imap_uid_copy(struct imap_session *s, uint32_t uid, const char *dest,
		  uint32_t *dest_uidvalidity_out, uint32_t *dest_uid_out, struct imap_error *err);

/* Move one message: UID MOVE (RFC 6851) when offered, else UID COPY +
 * UID STORE +FLAGS.SILENT (\Deleted) + UID EXPUNGE (needs UIDPLUS; without
 * it IMAP_ERR_LOCAL before anything is sent). COPYUID gives the new UID. */
int imap_uid_move(struct imap_session *s, uint32_t uid, const char *dest,
		  uint32_t *dest_uidvalidity_out, uint32_t *dest_uid_out, struct imap_error *err);

int imap_create(struct imap_session *s, const char *mailbox, struct imap_error *err);
int imap_delete(struct imap_session *s, const char *mailbox, struct imap_error *err);
int imap_rename(struct imap_session *s, const char *from, const char *to,
		struct imap_error *err);

/* NOOP: keeps the connection alive, detects a dead one, and lets pending
 * untagged updates arrive. */
int imap_noop(struct imap_session *s, struct imap_error *err);

/* UNSELECT (or CLOSE-free equivalent EXAMINE of nothing is not possible:
 * without UNSELECT the session just stays selected). */
int imap_unselect(struct imap_session *s, struct imap_error *err);

/* Short English name of an error kind, e.g. "certificate check failed". */
const char *imap_error_kind_name(enum imap_error_kind kind);

#endif
