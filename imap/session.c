/*
 * One IMAP session: commands, in-flight tags, routing of responses, and
 * the public calls of imap.h.
 *
 * Routing rules (fixed, whatever the server sends):
 * - a tagged reply must carry the tag of a command in flight, else the
 *   connection ends (protocol error); replies may come in any order;
 * - "+" goes only to the command waiting for a continuation, else error;
 * - untagged data first updates the session's own state (capabilities,
 *   EXISTS/EXPUNGE, the sequence -> UID map), then each command in flight,
 *   oldest first, may claim it by keyword;
 * - literal bytes never reach the line parser: a FETCH body is streamed to
 *   the command's sink, anything else is buffered within the limits.
 * Commands are built on the caller's stack, sent in one write (up to each
 * synchronising literal), and leave the in-flight list before returning.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "imapfs/log.h"
#include "conn_i.h"
#include "imap_i.h"
#include "parser_i.h"
#include "quote_i.h"
#include "session_i.h"

#define SESSION_READ_BUFFER (64 * 1024)

/* Mod-sequences (RFC 7162) and RFC822.SIZE (number64, RFC 9051) are 63-bit:
 * a larger value is malformed, and would turn negative in an off_t or in
 * the cache's signed 64-bit columns. */
#define IMAP_NUMBER64_MAX ((uint64_t)INT64_MAX)

struct imap_session;
struct imap_cmd;

/* Returns 1 if the response was for this command, 0 if not, -1 on a
 * protocol error (err filled). */
typedef int (*cmd_untagged_fn)(struct imap_session *s, struct imap_cmd *cmd,
			       const struct imap_response *r, struct imap_error *err);

struct imap_cmd {
	char tag[16];
	unsigned tag_number;
	bool sent;
	char verb[24]; /* for messages: "SELECT", "UID FETCH" */
	struct imap_cmdbuf buf;
	cmd_untagged_fn on_untagged;
	/* FETCH body streaming (NULL: literals are buffered) */
	enum imap_literal_action (*on_literal)(struct imap_session *s, struct imap_cmd *cmd,
					       const struct imap_literal_info *info);
	void (*on_literal_data)(struct imap_cmd *cmd, const void *buf, size_t len);
	void (*on_literal_end)(struct imap_cmd *cmd);
	void *ctx;

	bool wants_continuation;
	bool got_continuation;
	bool done;
	bool stopped; /* a caller's callback asked to stop delivery */
	char status[4]; /* "OK", "NO", "BAD" */
	char code[IMAP_CODE_MAX + 1];
	char *code_args;
	char text[256];
	struct imap_cmd *next; /* in flight, oldest first */
};

struct imap_session {
	char *host;
	char *cafile;
	struct imap_limits lim;
	bool trace;
	enum imap_tls_mode tls;
	int timeout_ms;

	struct imap_conn *conn;
	struct imap_parser *parser;
	char *rbuf; /* bytes read but not yet parsed: rbuf[rpos..rlen) */
	size_t rpos;
	size_t rlen;

	unsigned tag_counter;
	struct imap_cmd *inflight;
	struct imap_cmd *stream_cmd; /* command receiving the streamed literal */
	unsigned untagged_count;      /* since the last tagged reply */

	bool broken;
	char broken_reason[256];
	bool logout_sent;

	char **caps;
	size_t ncaps;
	bool caps_fresh;
	bool condstore_enabled;
	bool qresync_enabled;

	char *selected;
	uint32_t exists;
	/* sequence number -> UID of the selected mailbox, 0 = unknown; only
	 * while seq_tracking (bounded by lim.max_untagged entries) */
	uint32_t *seq_uids;
	size_t seq_len;
	size_t seq_cap;
	bool seq_tracking;
	/* EXPUNGE/VANISHED reporting during imap_uid_fetch_meta */
	imap_vanished_cb vanished_cb;
	void *vanished_ctx;
	bool vanished_stopped;
};

/* ------------------------------------------------------------------ */
/* errors */

void imap_error_set(struct imap_error *err, enum imap_error_kind kind, const char *code,
		    const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->kind = kind;
	snprintf(err->code, sizeof(err->code), "%s", code ? code : "");
	va_start(ap, fmt);
	vsnprintf(err->reason, sizeof(err->reason), fmt, ap);
	va_end(ap);
	/* one line, printable */
	for (char *p = err->reason; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
}

void imap_limits_resolve(const struct imap_limits *in, struct imap_limits *out)
{
	struct imap_limits z = { 0 };

	if (!in)
		in = &z;
	out->max_line = in->max_line ? in->max_line : IMAP_DEFAULT_MAX_LINE;
	out->max_literal = in->max_literal ? in->max_literal : IMAP_DEFAULT_MAX_LITERAL;
	out->max_depth = in->max_depth ? in->max_depth : IMAP_DEFAULT_MAX_DEPTH;
	out->max_untagged = in->max_untagged ? in->max_untagged : IMAP_DEFAULT_MAX_UNTAGGED;
	out->max_buffered_literal =
		in->max_buffered_literal ? in->max_buffered_literal : IMAP_DEFAULT_MAX_BUFFERED_LITERAL;
}

const char *imap_error_kind_name(enum imap_error_kind kind)
{
	switch (kind) {
	case IMAP_ERR_NONE:
		return "no error";
	case IMAP_ERR_CONNECT:
		return "connection failed";
	case IMAP_ERR_TLS:
		return "TLS or certificate check failed";
	case IMAP_ERR_TIMEOUT:
		return "server timed out";
	case IMAP_ERR_PROTOCOL:
		return "protocol error";
	case IMAP_ERR_CLOSED:
		return "connection closed";
	case IMAP_ERR_AUTH:
		return "login refused";
	case IMAP_ERR_NO:
		return "server said NO";
	case IMAP_ERR_BAD:
		return "server said BAD";
	case IMAP_ERR_LOCAL:
		return "local error";
	}
	return "unknown error";
}

static bool error_is_fatal(enum imap_error_kind kind)
{
	return kind == IMAP_ERR_CONNECT || kind == IMAP_ERR_TLS || kind == IMAP_ERR_TIMEOUT ||
	       kind == IMAP_ERR_PROTOCOL || kind == IMAP_ERR_CLOSED;
}

/* The session is unusable from now on: drop every command in flight. */
static void session_mark_broken(struct imap_session *s, const struct imap_error *err)
{
	if (!s->broken) {
		s->broken = true;
		snprintf(s->broken_reason, sizeof(s->broken_reason), "%s",
			 err && err->reason[0] ? err->reason : "connection failed");
		log_debug("imap %s: session broken: %s", s->host, s->broken_reason);
	}
	s->inflight = NULL;
	s->stream_cmd = NULL;
}

static int session_fail(struct imap_session *s, struct imap_error *err, enum imap_error_kind kind,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int session_fail(struct imap_session *s, struct imap_error *err, enum imap_error_kind kind,
			const char *fmt, ...)
{
	char reason[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	imap_error_set(err, kind, NULL, "%s", reason);
	if (error_is_fatal(kind)) {
		struct imap_error e;

		imap_error_set(&e, kind, NULL, "%s", reason);
		session_mark_broken(s, &e);
	}
	return -1;
}

/* ------------------------------------------------------------------ */
/* capabilities */

static void caps_clear(struct imap_session *s)
{
	for (size_t i = 0; i < s->ncaps; i++)
		free(s->caps[i]);
	free(s->caps);
	s->caps = NULL;
	s->ncaps = 0;
	s->caps_fresh = false;
}

static int caps_add(struct imap_session *s, const char *cap, size_t len)
{
	char **nc;
	char *c;

	if (len == 0)
		return 0;
	nc = realloc(s->caps, (s->ncaps + 1) * sizeof(*nc));
	if (!nc)
		return -1;
	s->caps = nc;
	c = strndup(cap, len);
	if (!c)
		return -1;
	s->caps[s->ncaps++] = c;
	return 0;
}

/* From "IMAP4rev1 STARTTLS AUTH=PLAIN" (a CAPABILITY code). */
static int caps_set_from_text(struct imap_session *s, const char *text)
{
	const char *p = text;

	caps_clear(s);
	while (*p) {
		size_t n = strcspn(p, " ");

		if (caps_add(s, p, n) < 0)
			return -1;
		p += n;
		while (*p == ' ')
			p++;
	}
	s->caps_fresh = true;
	return 0;
}

static int caps_set_from_args(struct imap_session *s, const struct imap_value *args)
{
	caps_clear(s);
	for (size_t i = 0; i < args->count; i++) {
		const struct imap_value *v = args->items[i];

		if (v->type == IMAP_VAL_ATOM && caps_add(s, v->str, v->len) < 0)
			return -1;
	}
	s->caps_fresh = true;
	return 0;
}

bool imap_session_has_cap(const struct imap_session *s, const char *cap)
{
	for (size_t i = 0; i < s->ncaps; i++)
		if (strcasecmp(s->caps[i], cap) == 0)
			return true;
	return false;
}

bool imap_session_is_broken(const struct imap_session *s)
{
	return s->broken;
}

const char *imap_session_selected(const struct imap_session *s)
{
	return s->selected;
}

/* ------------------------------------------------------------------ */
/* sequence number -> UID map of the selected mailbox */

static void seq_reset(struct imap_session *s, uint32_t exists)
{
	s->seq_len = 0;
	s->seq_tracking = false;
	if (exists > s->lim.max_untagged)
		return;
	if (exists > s->seq_cap) {
		uint32_t *n = realloc(s->seq_uids, (size_t)exists * sizeof(*n));

		if (!n)
			return;
		s->seq_uids = n;
		s->seq_cap = exists;
	}
	if (exists)
		memset(s->seq_uids, 0, (size_t)exists * sizeof(*s->seq_uids));
	s->seq_len = exists;
	s->seq_tracking = true;
}

static void seq_grow(struct imap_session *s, uint32_t exists)
{
	if (!s->seq_tracking || exists <= s->seq_len)
		return;
	if (exists > s->lim.max_untagged) {
		s->seq_tracking = false;
		return;
	}
	if (exists > s->seq_cap) {
		size_t cap = s->seq_cap ? s->seq_cap : 64;
		uint32_t *n;

		while (cap < exists)
			cap *= 2;
		if (cap > s->lim.max_untagged)
			cap = s->lim.max_untagged;
		n = realloc(s->seq_uids, cap * sizeof(*n));
		if (!n) {
			s->seq_tracking = false;
			return;
		}
		s->seq_uids = n;
		s->seq_cap = cap;
	}
	memset(s->seq_uids + s->seq_len, 0, (exists - s->seq_len) * sizeof(*s->seq_uids));
	s->seq_len = exists;
}

static uint32_t seq_lookup(const struct imap_session *s, uint32_t seq)
{
	if (!s->seq_tracking || seq == 0 || seq > s->seq_len)
		return 0;
	return s->seq_uids[seq - 1];
}

/* ------------------------------------------------------------------ */
/* small parsers of response pieces */

static int number_from_text(const char *s, uint64_t max, uint64_t *out)
{
	return s ? imap_parse_number(s, strlen(s), max, out) : -1;
}

/* Calls fn for each range of a sequence set of UIDs ("1:3,7"), without
 * "*". -1 if malformed or fn fails. */
static int uid_set_each(const char *set, size_t len,
			int (*fn)(void *ctx, uint32_t lo, uint32_t hi), void *ctx)
{
	size_t i = 0;

	if (len == 0)
		return -1;
	while (i < len) {
		uint64_t a, b;
		size_t start = i;

		while (i < len && set[i] >= '0' && set[i] <= '9')
			i++;
		if (imap_parse_number(set + start, i - start, UINT32_MAX, &a) < 0 || a == 0)
			return -1;
		b = a;
		if (i < len && set[i] == ':') {
			start = ++i;
			while (i < len && set[i] >= '0' && set[i] <= '9')
				i++;
			if (imap_parse_number(set + start, i - start, UINT32_MAX, &b) < 0 ||
			    b == 0)
				return -1;
		}
		if (fn(ctx, (uint32_t)(a < b ? a : b), (uint32_t)(a < b ? b : a)) < 0)
			return -1;
		if (i < len) {
			if (set[i] != ',')
				return -1;
			i++;
			if (i == len)
				return -1;
		}
	}
	return 0;
}

static int first_uid_fn(void *ctx, uint32_t lo, uint32_t hi)
{
	uint32_t *first = ctx;

	if (*first == 0)
		*first = lo;
	return 0;
}

static const char *const month_names[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* "17-Jul-1996 02:44:25 -0700" (day may be " 7" or "7") */
static int parse_internaldate(const char *s, int64_t *t_out, int *tz_out)
{
	struct tm tm = { 0 };
	int day = 0, mon = -1, year = 0, hh, mm, ss, tzh, tzm, sign;
	size_t i = 0;

	if (s[i] == ' ')
		i++;
	while (s[i] >= '0' && s[i] <= '9' && day < 100)
		day = day * 10 + (s[i++] - '0');
	if (day < 1 || day > 31 || s[i] != '-')
		return -1;
	i++;
	for (int m = 0; m < 12; m++)
		if (strncasecmp(s + i, month_names[m], 3) == 0)
			mon = m;
	if (mon < 0 || s[i + 3] != '-')
		return -1;
	i += 4;
	for (int k = 0; k < 4; k++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		year = year * 10 + (s[i++] - '0');
	}
	if (s[i++] != ' ')
		return -1;
#define TWO(dst)                                                                           \
	do {                                                                               \
		if (s[i] < '0' || s[i] > '9' || s[i + 1] < '0' || s[i + 1] > '9')           \
			return -1;                                                         \
		dst = (s[i] - '0') * 10 + (s[i + 1] - '0');                                \
		i += 2;                                                                    \
	} while (0)
	TWO(hh);
	if (s[i++] != ':')
		return -1;
	TWO(mm);
	if (s[i++] != ':')
		return -1;
	TWO(ss);
	if (s[i++] != ' ')
		return -1;
	if (s[i] != '+' && s[i] != '-')
		return -1;
	sign = s[i++] == '-' ? -1 : 1;
	TWO(tzh);
	TWO(tzm);
#undef TWO
	if (s[i] != '\0' || hh > 23 || mm > 59 || ss > 60 || tzm > 59)
		return -1;
	tm.tm_year = year - 1900;
	tm.tm_mon = mon;
	tm.tm_mday = day;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	*tz_out = sign * (tzh * 60 + tzm);
	*t_out = (int64_t)timegm(&tm) - (int64_t)*tz_out * 60;
	return 0;
}

/* ------------------------------------------------------------------ */
/* reading and dispatching responses */

static enum imap_literal_action session_literal_begin(void *ctx,
						      const struct imap_literal_info *info)
{
	struct imap_session *s = ctx;

	s->stream_cmd = NULL;
	if (info->resp->type != IMAP_RESP_UNTAGGED)
		return IMAP_LITERAL_BUFFER;
	for (struct imap_cmd *c = s->inflight; c; c = c->next) {
		if (!c->on_literal)
			continue;
		enum imap_literal_action a = c->on_literal(s, c, info);
		if (a == IMAP_LITERAL_STREAM)
			s->stream_cmd = c;
		return a;
	}
	return IMAP_LITERAL_BUFFER;
}

static void session_literal_data(void *ctx, const void *buf, size_t len)
{
	struct imap_session *s = ctx;

	if (s->stream_cmd && s->stream_cmd->on_literal_data)
		s->stream_cmd->on_literal_data(s->stream_cmd, buf, len);
}

static void session_literal_end(void *ctx)
{
	struct imap_session *s = ctx;

	if (s->stream_cmd && s->stream_cmd->on_literal_end)
		s->stream_cmd->on_literal_end(s->stream_cmd);
	s->stream_cmd = NULL;
}

/* Read until one complete response is parsed. */
static int session_read_response(struct imap_session *s, struct imap_response **resp_out,
				 struct imap_error *err)
{
	for (;;) {
		if (s->rpos < s->rlen) {
			size_t used;
			enum imap_parse_status st = imap_parser_feed(
				s->parser, s->rbuf + s->rpos, s->rlen - s->rpos, &used, resp_out);

			s->rpos += used;
			if (st == IMAP_PARSE_DONE)
				return 0;
			if (st == IMAP_PARSE_ERROR)
				return session_fail(s, err, IMAP_ERR_PROTOCOL, "bad response from %s: %s",
						    s->host, imap_parser_error(s->parser));
		}
		struct imap_error e = { 0 };

		s->rpos = s->rlen = 0;
		ssize_t n = imap_conn_read(s->conn, s->rbuf, SESSION_READ_BUFFER, &e);
		if (n < 0) {
			session_mark_broken(s, &e);
			if (err)
				*err = e;
			return -1;
		}
		if (n == 0)
			return session_fail(s, err, IMAP_ERR_CLOSED, "%s closed the connection",
					    s->host);
		s->rlen = (size_t)n;
	}
}

/* Session state kept whatever command is running. */
static int session_untagged_default(struct imap_session *s, const struct imap_response *r,
				    struct imap_error *err)
{
	const struct imap_value *args = &r->args;

	if (r->is_status) {
		if (strcmp(r->code, "CAPABILITY") == 0 && r->code_args &&
		    caps_set_from_text(s, r->code_args) < 0)
			return session_fail(s, err, IMAP_ERR_LOCAL, "out of memory");
		if (strcmp(r->code, "ALERT") == 0)
			log_warnx("server %s says: %s", s->host, r->text);
		return 0;
	}
	if (strcmp(r->keyword, "CAPABILITY") == 0) {
		if (caps_set_from_args(s, args) < 0)
			return session_fail(s, err, IMAP_ERR_LOCAL, "out of memory");
	} else if (strcmp(r->keyword, "EXISTS") == 0 && r->has_number) {
		s->exists = r->number;
		seq_grow(s, r->number);
	} else if (strcmp(r->keyword, "EXPUNGE") == 0 && r->has_number) {
		uint32_t uid = seq_lookup(s, r->number);

		if (r->number == 0 || r->number > s->exists)
			return session_fail(s, err, IMAP_ERR_PROTOCOL,
					    "EXPUNGE of message %" PRIu32 " of %" PRIu32, r->number,
					    s->exists);
		s->exists--;
		if (s->seq_tracking && r->number <= s->seq_len) {
			memmove(s->seq_uids + r->number - 1, s->seq_uids + r->number,
				(s->seq_len - r->number) * sizeof(*s->seq_uids));
			s->seq_len--;
		}
		if (uid && s->vanished_cb && !s->vanished_stopped &&
		    s->vanished_cb(s->vanished_ctx, uid, uid) != 0)
			s->vanished_stopped = true;
	} else if (strcmp(r->keyword, "FETCH") == 0 && r->has_number) {
		if (args->count >= 1 && args->items[0]->type == IMAP_VAL_LIST) {
			const struct imap_value *l = args->items[0];
			uint64_t uid;

			for (size_t i = 0; i + 1 < l->count; i += 2)
				if (imap_value_is_atom(l->items[i], "UID") &&
				    imap_value_number(l->items[i + 1], UINT32_MAX, &uid) == 0 &&
				    s->seq_tracking && r->number >= 1 && r->number <= s->seq_len)
					s->seq_uids[r->number - 1] = (uint32_t)uid;
		}
	} else if (strcmp(r->keyword, "ENABLED") == 0) {
		for (size_t i = 0; i < args->count; i++) {
			if (imap_value_is_atom(args->items[i], "QRESYNC"))
				s->qresync_enabled = s->condstore_enabled = true;
			if (imap_value_is_atom(args->items[i], "CONDSTORE"))
				s->condstore_enabled = true;
		}
	} else if (strcmp(r->keyword, "VANISHED") == 0) {
		/* without (EARLIER) messages left: sequence numbers shift */
		if (!(args->count >= 1 && args->items[0]->type == IMAP_VAL_LIST))
			s->seq_tracking = false;
	}
	return 0;
}

static struct imap_cmd *session_find_tag(struct imap_session *s, const char *tag)
{
	for (struct imap_cmd *c = s->inflight; c; c = c->next)
		if (strcmp(c->tag, tag) == 0)
			return c;
	return NULL;
}

static void session_unlink(struct imap_session *s, struct imap_cmd *cmd)
{
	for (struct imap_cmd **pp = &s->inflight; *pp; pp = &(*pp)->next) {
		if (*pp == cmd) {
			*pp = cmd->next;
			cmd->next = NULL;
			return;
		}
	}
}

static int session_dispatch(struct imap_session *s, const struct imap_response *r,
			    struct imap_error *err)
{
	struct imap_cmd *c;

	switch (r->type) {
	case IMAP_RESP_CONTINUATION:
		for (c = s->inflight; c; c = c->next) {
			if (c->wants_continuation && !c->got_continuation) {
				c->got_continuation = true;
				return 0;
			}
		}
		return session_fail(s, err, IMAP_ERR_PROTOCOL,
				    "unexpected continuation request from %s", s->host);
	case IMAP_RESP_TAGGED:
		c = session_find_tag(s, r->tag);
		if (!c)
			return session_fail(s, err, IMAP_ERR_PROTOCOL,
					    "reply with unknown tag \"%s\" from %s", r->tag, s->host);
		c->done = true;
		snprintf(c->status, sizeof(c->status), "%.3s", r->keyword);
		snprintf(c->code, sizeof(c->code), "%s", r->code);
		free(c->code_args);
		c->code_args = r->code_args ? strdup(r->code_args) : NULL;
		snprintf(c->text, sizeof(c->text), "%s", r->text);
		session_unlink(s, c);
		s->untagged_count = 0;
		if (strcmp(r->code, "CAPABILITY") == 0 && r->code_args &&
		    caps_set_from_text(s, r->code_args) < 0)
			return session_fail(s, err, IMAP_ERR_LOCAL, "out of memory");
		return 0;
	case IMAP_RESP_UNTAGGED:
		break;
	}

	if (++s->untagged_count > s->lim.max_untagged)
		return session_fail(s, err, IMAP_ERR_PROTOCOL,
				    "more than %u untagged responses for one command from %s",
				    s->lim.max_untagged, s->host);
	if (strcmp(r->keyword, "BYE") == 0) {
		if (s->logout_sent)
			return 0;
		return session_fail(s, err, IMAP_ERR_CLOSED, "%s closed the session: %s", s->host,
				    r->text);
	}
	if (session_untagged_default(s, r, err) < 0)
		return -1;
	for (c = s->inflight; c; c = c->next) {
		if (!c->on_untagged)
			continue;
		int h = c->on_untagged(s, c, r, err);
		if (h < 0)
			return -1;
		if (h > 0)
			break;
	}
	return 0;
}

static int session_read_one(struct imap_session *s, struct imap_error *err)
{
	struct imap_response *r;
	int ret;

	if (session_read_response(s, &r, err) < 0)
		return -1;
	ret = session_dispatch(s, r, err);
	imap_response_free(r);
	return ret;
}

/* ------------------------------------------------------------------ */
/* commands */

static void cmd_init(struct imap_session *s, struct imap_cmd *cmd, const char *verb)
{
	memset(cmd, 0, sizeof(*cmd));
	s->tag_counter++;
	cmd->tag_number = s->tag_counter;
	snprintf(cmd->tag, sizeof(cmd->tag), "A%04u", s->tag_counter % 1000000u);
	snprintf(cmd->verb, sizeof(cmd->verb), "%s", verb);
	imap_cmdbuf_init(&cmd->buf, imap_session_has_cap(s, "LITERAL+"),
			 imap_session_has_cap(s, "LITERAL-"));
	imap_cmdbuf_add_raw(&cmd->buf, cmd->tag);
	imap_cmdbuf_add_raw(&cmd->buf, " ");
	imap_cmdbuf_add_raw(&cmd->buf, verb);
}

static void cmd_cleanup(struct imap_session *s, struct imap_cmd *cmd)
{
	/* a command refused before sending gives its tag back */
	if (!cmd->sent && cmd->tag_number == s->tag_counter)
		s->tag_counter--;
	session_unlink(s, cmd);
	if (s->stream_cmd == cmd)
		s->stream_cmd = NULL;
	imap_cmdbuf_free(&cmd->buf);
	free(cmd->code_args);
	cmd->code_args = NULL;
}

static int session_check_usable(struct imap_session *s, struct imap_error *err)
{
	if (s->broken) {
		imap_error_set(err, IMAP_ERR_CLOSED, NULL, "session is broken: %s",
			       s->broken_reason);
		return -1;
	}
	return 0;
}

static int session_write(struct imap_session *s, const char *buf, size_t len,
			 struct imap_error *err)
{
	struct imap_error e = { 0 };

	if (imap_conn_write(s->conn, buf, len, &e) < 0) {
		session_mark_broken(s, &e);
		if (err)
			*err = e;
		return -1;
	}
	return 0;
}

/* Send a built command: put it in flight and write it, waiting for "+"
 * at each synchronising literal. A tagged reply instead of "+" (the
 * server refused the literal) ends sending; cmd_wait then reports it. */
static int cmd_send(struct imap_session *s, struct imap_cmd *cmd, struct imap_error *err)
{
	size_t off = 0;

	if (session_check_usable(s, err) < 0)
		return -1;
	imap_cmdbuf_end(&cmd->buf);
	if (cmd->buf.failed) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "%s: out of memory", cmd->verb);
		return -1;
	}
	if (log_enabled(LOG_LEVEL_TRACE) && s->trace)
		log_trace("C: %s", cmd->buf.trace ? cmd->buf.trace : cmd->tag);

	struct imap_cmd **pp = &s->inflight;
	while (*pp)
		pp = &(*pp)->next;
	*pp = cmd;
	cmd->next = NULL;
	cmd->sent = true;

	for (size_t k = 0; k < cmd->buf.nsync; k++) {
		size_t end = cmd->buf.sync[k];

		if (session_write(s, cmd->buf.data + off, end - off, err) < 0)
			return -1;
		off = end;
		cmd->wants_continuation = true;
		cmd->got_continuation = false;
		while (!cmd->got_continuation && !cmd->done)
			if (session_read_one(s, err) < 0)
				return -1;
		cmd->wants_continuation = false;
		if (cmd->done)
			return 0;
	}
	return session_write(s, cmd->buf.data + off, cmd->buf.len - off, err);
}

/* Wait for the tagged reply of cmd; 0 for OK. */
static int cmd_wait(struct imap_session *s, struct imap_cmd *cmd, struct imap_error *err)
{
	while (!cmd->done)
		if (session_read_one(s, err) < 0)
			return -1;
	if (strcmp(cmd->status, "OK") == 0) {
		if (cmd->stopped) {
			imap_error_set(err, IMAP_ERR_LOCAL, NULL, "%s: stopped by the caller",
				       cmd->verb);
			return -1;
		}
		return 0;
	}
	imap_error_set(err, strcmp(cmd->status, "NO") == 0 ? IMAP_ERR_NO : IMAP_ERR_BAD, cmd->code,
		       "%s %s: %s", cmd->verb, cmd->status, cmd->text);
	return -1;
}

/* Send, wait, clean up. */
static int cmd_run(struct imap_session *s, struct imap_cmd *cmd, struct imap_error *err)
{
	int r = cmd_send(s, cmd, err);

	if (r == 0)
		r = cmd_wait(s, cmd, err);
	cmd_cleanup(s, cmd);
	return r;
}

static int cmd_add_mailbox(struct imap_cmd *cmd, const char *name, struct imap_error *err)
{
	if (!name || imap_cmdbuf_add_string(&cmd->buf, name, strlen(name), 0) < 0) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "%s: invalid mailbox name", cmd->verb);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* open, login, close */

int imap_global_init(void)
{
	struct sigaction sa;

	if (OPENSSL_init_ssl(0, NULL) != 1)
		return -1;
	/* OpenSSL writes to the socket with write(): a peer that has gone
	 * must give EPIPE, not kill the process. */
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_IGN;
		sigaction(SIGPIPE, &sa, NULL);
	}
	return 0;
}

static int session_capability(struct imap_session *s, struct imap_error *err)
{
	struct imap_cmd cmd;

	cmd_init(s, &cmd, "CAPABILITY");
	return cmd_run(s, &cmd, err);
}

static int session_login(struct imap_session *s, const char *user, const char *password,
			 struct imap_error *err)
{
	struct imap_cmd cmd;
	int r;

	if (!user || !password) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "no user name or password");
		return -1;
	}
	if (imap_session_has_cap(s, "LOGINDISABLED")) {
		size_t ul = strlen(user), pl = strlen(password);
		size_t rawlen = ul * 2 + pl + 2;
		unsigned char *raw = malloc(rawlen);
		char *b64 = malloc(4 * ((rawlen + 2) / 3) + 1);

		if (!imap_session_has_cap(s, "AUTH=PLAIN")) {
			free(raw);
			free(b64);
			imap_error_set(err, IMAP_ERR_LOCAL, NULL,
				       "%s refuses LOGIN and offers no AUTH=PLAIN", s->host);
			return -1;
		}
		if (!raw || !b64) {
			free(raw);
			free(b64);
			imap_error_set(err, IMAP_ERR_LOCAL, NULL, "out of memory");
			return -1;
		}
		/* authzid NUL authcid NUL password (RFC 4616), authzid = authcid */
		memcpy(raw, user, ul);
		raw[ul] = '\0';
		memcpy(raw + ul + 1, user, ul);
		raw[2 * ul + 1] = '\0';
		memcpy(raw + 2 * ul + 2, password, pl);
		EVP_EncodeBlock((unsigned char *)b64, raw, (int)rawlen);
		OPENSSL_cleanse(raw, rawlen);
		free(raw);
		cmd_init(s, &cmd, "AUTHENTICATE PLAIN");
		imap_cmdbuf_set_secret(&cmd.buf);
		if (imap_session_has_cap(s, "SASL-IR")) {
			imap_cmdbuf_add_raw(&cmd.buf, " ");
		} else {
			/* send the response after the server's "+" */
			imap_cmdbuf_end(&cmd.buf);
			imap_cmdbuf_add_sync(&cmd.buf);
		}
		if (imap_cmdbuf_add_string(&cmd.buf, b64, strlen(b64), IMAP_QUOTE_REDACT) < 0)
			cmd.buf.failed = true;
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
	} else {
		cmd_init(s, &cmd, "LOGIN");
		imap_cmdbuf_set_secret(&cmd.buf);
		imap_cmdbuf_add_raw(&cmd.buf, " ");
		if (imap_cmdbuf_add_string(&cmd.buf, user, strlen(user), IMAP_QUOTE_REDACT) < 0) {
			cmd_cleanup(s, &cmd);
			imap_error_set(err, IMAP_ERR_LOCAL, NULL, "invalid user name");
			return -1;
		}
		imap_cmdbuf_add_raw(&cmd.buf, " ");
		if (imap_cmdbuf_add_string(&cmd.buf, password, strlen(password),
					   IMAP_QUOTE_REDACT | IMAP_QUOTE_NO_ATOM) < 0) {
			cmd_cleanup(s, &cmd);
			imap_error_set(err, IMAP_ERR_LOCAL, NULL, "invalid password");
			return -1;
		}
	}
	s->caps_fresh = false;
	r = cmd_send(s, &cmd, err);
	if (r == 0)
		r = cmd_wait(s, &cmd, err);
	if (cmd.buf.data)
		OPENSSL_cleanse(cmd.buf.data, cmd.buf.len);
	cmd_cleanup(s, &cmd);
	if (r < 0 && err && (err->kind == IMAP_ERR_NO || err->kind == IMAP_ERR_BAD))
		err->kind = IMAP_ERR_AUTH;
	return r;
}

static int session_starttls(struct imap_session *s, struct imap_error *err)
{
	struct imap_cmd cmd;
	int r;

	if (!imap_session_has_cap(s, "STARTTLS")) {
		imap_error_set(err, IMAP_ERR_TLS, NULL,
			       "%s does not offer STARTTLS; refusing to continue in plaintext",
			       s->host);
		session_mark_broken(s, err);
		return -1;
	}
	cmd_init(s, &cmd, "STARTTLS");
	r = cmd_run(s, &cmd, err);
	if (r < 0) {
		if (err && !error_is_fatal(err->kind))
			err->kind = IMAP_ERR_TLS;
		session_mark_broken(s, err);
		return -1;
	}
	/* Anything the server sent after its OK was written before TLS and
	 * could be injected by an attacker: refuse it. */
	if (s->rpos < s->rlen || !imap_parser_idle(s->parser)) {
		imap_error_set(err, IMAP_ERR_TLS, NULL,
			       "%s sent data after the STARTTLS reply (response injection?)",
			       s->host);
		session_mark_broken(s, err);
		return -1;
	}
	if (imap_conn_start_tls(s->conn, s->host, s->cafile, err) < 0) {
		session_mark_broken(s, err);
		return -1;
	}
	/* Nothing learnt in plaintext is trusted: capabilities, and an
	 * injected "* ENABLED QRESYNC" or "* n EXISTS" before the OK. */
	caps_clear(s);
	s->condstore_enabled = false;
	s->qresync_enabled = false;
	s->exists = 0;
	seq_reset(s, 0);
	return 0;
}

static void session_free(struct imap_session *s)
{
	if (!s)
		return;
	imap_conn_close(s->conn);
	imap_parser_free(s->parser);
	caps_clear(s);
	free(s->rbuf);
	free(s->host);
	free(s->cafile);
	free(s->selected);
	free(s->seq_uids);
	free(s);
}

int imap_session_open_conn(const struct imap_params *params, struct imap_conn *conn,
			   struct imap_session **out, struct imap_error *err)
{
	static const struct imap_parser_callbacks cbs = {
		.literal_begin = session_literal_begin,
		.literal_data = session_literal_data,
		.literal_end = session_literal_end,
	};
	struct imap_error tmp;
	struct imap_response *greet = NULL;
	struct imap_session *s;
	bool preauth;

	if (!err)
		err = &tmp;
	memset(err, 0, sizeof(*err));
	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		imap_conn_close(conn);
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "out of memory");
		return -1;
	}
	s->conn = conn;
	s->tls = params->tls;
	s->trace = params->trace;
	s->timeout_ms = params->io_timeout_ms > 0 ? params->io_timeout_ms : IMAP_DEFAULT_TIMEOUT_MS;
	imap_limits_resolve(&params->limits, &s->lim);
	s->host = strdup(params->host ? params->host : "");
	s->cafile = params->cafile ? strdup(params->cafile) : NULL;
	s->rbuf = malloc(SESSION_READ_BUFFER);
	s->parser = imap_parser_new(&s->lim, &cbs, s, s->trace);
	if (!s->host || (params->cafile && !s->cafile) || !s->rbuf || !s->parser) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "out of memory");
		goto out_free;
	}

	if (s->tls == IMAP_TLS_IMPLICIT && !imap_conn_is_tls(s->conn) &&
	    imap_conn_start_tls(s->conn, s->host, s->cafile, err) < 0)
		goto out_free;

	/* greeting: * OK / * PREAUTH / * BYE */
	if (session_read_response(s, &greet, err) < 0)
		goto out_free;
	if (greet->type != IMAP_RESP_UNTAGGED || !greet->is_status ||
	    (strcmp(greet->keyword, "OK") && strcmp(greet->keyword, "PREAUTH") &&
	     strcmp(greet->keyword, "BYE"))) {
		imap_error_set(err, IMAP_ERR_PROTOCOL, NULL, "%s: not an IMAP greeting", s->host);
		goto out_free;
	}
	if (strcmp(greet->keyword, "BYE") == 0) {
		imap_error_set(err, IMAP_ERR_CLOSED, NULL, "%s refused the connection: %s", s->host,
			       greet->text);
		goto out_free;
	}
	preauth = strcmp(greet->keyword, "PREAUTH") == 0;
	if (preauth && s->tls == IMAP_TLS_STARTTLS) {
		imap_error_set(err, IMAP_ERR_TLS, NULL,
			       "%s sent PREAUTH before STARTTLS: refusing an unencrypted session",
			       s->host);
		goto out_free;
	}
	if (strcmp(greet->code, "CAPABILITY") == 0 && greet->code_args &&
	    caps_set_from_text(s, greet->code_args) < 0) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "out of memory");
		goto out_free;
	}
	imap_response_free(greet);
	greet = NULL;

	if (!s->caps_fresh && session_capability(s, err) < 0)
		goto out_free;
	if (s->tls == IMAP_TLS_STARTTLS) {
		if (session_starttls(s, err) < 0)
			goto out_free;
		if (session_capability(s, err) < 0)
			goto out_free;
	}
	if (!preauth) {
		if (session_login(s, params->user, params->password, err) < 0)
			goto out_free;
		if (!s->caps_fresh && session_capability(s, err) < 0)
			goto out_free;
	}
	if (imap_session_has_cap(s, "ENABLE") &&
	    (imap_session_has_cap(s, "QRESYNC") || imap_session_has_cap(s, "CONDSTORE"))) {
		struct imap_cmd cmd;
		struct imap_error eerr;

		cmd_init(s, &cmd, "ENABLE");
		imap_cmdbuf_add_raw(&cmd.buf,
				    imap_session_has_cap(s, "QRESYNC") ? " QRESYNC" : " CONDSTORE");
		if (cmd_run(s, &cmd, &eerr) < 0) {
			if (error_is_fatal(eerr.kind)) {
				*err = eerr;
				goto out_free;
			}
			log_debug("imap %s: ENABLE refused: %s", s->host, eerr.reason);
		}
	}
	log_debug("imap %s: logged in (%s%s%s)", s->host,
		  imap_conn_is_tls(s->conn) ? "TLS" : "plaintext",
		  s->qresync_enabled ? ", QRESYNC" : "", s->condstore_enabled ? ", CONDSTORE" : "");
	*out = s;
	return 0;

out_free:
	imap_response_free(greet);
	session_free(s);
	return -1;
}

int imap_session_open(const struct imap_params *params, struct imap_session **out,
		      struct imap_error *err)
{
	struct imap_conn *conn;
	uint16_t port;

	*out = NULL;
	if (!params || !params->host || !*params->host) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "no server given");
		return -1;
	}
	if (params->tls != IMAP_TLS_IMPLICIT && params->tls != IMAP_TLS_STARTTLS &&
	    params->tls != IMAP_TLS_NONE) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "invalid TLS mode");
		return -1;
	}
	port = params->port ? params->port : params->tls == IMAP_TLS_IMPLICIT ? 993 : 143;
	if (imap_conn_connect(params->host, port,
			      params->io_timeout_ms > 0 ? params->io_timeout_ms
							: IMAP_DEFAULT_TIMEOUT_MS,
			      &conn, err) < 0)
		return -1;
	return imap_session_open_conn(params, conn, out, err);
}

void imap_session_close(struct imap_session *s)
{
	if (!s)
		return;
	if (!s->broken) {
		struct imap_cmd cmd;
		struct imap_error err;

		cmd_init(s, &cmd, "LOGOUT");
		s->logout_sent = true;
		(void)cmd_run(s, &cmd, &err);
	}
	session_free(s);
}

/* ------------------------------------------------------------------ */
/* LIST */

struct list_ctx {
	imap_list_cb cb;
	void *ctx;
};

static const struct {
	const char *name;
	unsigned bit;
} mbox_attrs[] = {
	{ "\\Noselect", IMAP_MBOX_NOSELECT },	{ "\\NoInferiors", IMAP_MBOX_NOINFERIORS },
	{ "\\NonExistent", IMAP_MBOX_NONEXISTENT }, { "\\HasChildren", IMAP_MBOX_HASCHILDREN },
	{ "\\HasNoChildren", IMAP_MBOX_HASNOCHILDREN }, { "\\Marked", IMAP_MBOX_MARKED },
	{ "\\Unmarked", IMAP_MBOX_UNMARKED },	{ "\\Subscribed", IMAP_MBOX_SUBSCRIBED },
	{ "\\All", IMAP_MBOX_ALL },		{ "\\Archive", IMAP_MBOX_ARCHIVE },
	{ "\\Drafts", IMAP_MBOX_DRAFTS },	{ "\\Flagged", IMAP_MBOX_FLAGGED },
	{ "\\Junk", IMAP_MBOX_JUNK },		{ "\\Sent", IMAP_MBOX_SENT },
	{ "\\Trash", IMAP_MBOX_TRASH },
};

static int list_untagged(struct imap_session *s, struct imap_cmd *cmd,
			 const struct imap_response *r, struct imap_error *err)
{
	struct list_ctx *lc = cmd->ctx;
	struct imap_mailbox_info info = { 0 };
	const struct imap_value *a = &r->args, *attrs, *delim, *name;

	if (strcmp(r->keyword, "LIST") != 0)
		return 0;
	if (a->count < 3 || a->items[0]->type != IMAP_VAL_LIST)
		return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed LIST response from %s",
				    s->host);
	attrs = a->items[0];
	delim = a->items[1];
	name = a->items[2];
	for (size_t i = 0; i < attrs->count; i++) {
		const struct imap_value *v = attrs->items[i];

		for (size_t k = 0; k < sizeof(mbox_attrs) / sizeof(mbox_attrs[0]); k++)
			if (imap_value_is_atom(v, mbox_attrs[k].name))
				info.attrs |= mbox_attrs[k].bit;
	}
	if (delim->type == IMAP_VAL_STRING && delim->len == 1)
		info.delimiter = delim->str[0];
	else if (delim->type != IMAP_VAL_NIL)
		return session_fail(s, err, IMAP_ERR_PROTOCOL,
				    "malformed LIST delimiter from %s", s->host);
	if (name->type == IMAP_VAL_NIL) {
		info.name = "NIL"; /* an astring: a mailbox really named NIL */
	} else if ((name->type != IMAP_VAL_ATOM && name->type != IMAP_VAL_STRING) ||
		   strlen(name->str) != name->len) {
		return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed LIST name from %s",
				    s->host);
	} else {
		info.name = name->str;
	}
	if (!cmd->stopped && lc->cb(lc->ctx, &info) != 0)
		cmd->stopped = true;
	return 1;
}

int imap_list(struct imap_session *s, const char *reference, const char *pattern,
	      imap_list_cb cb, void *ctx, struct imap_error *err)
{
	struct list_ctx lc = { .cb = cb, .ctx = ctx };
	struct imap_cmd cmd;

	if (session_check_usable(s, err) < 0)
		return -1;
	if (!cb) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "LIST: no callback");
		return -1;
	}
	cmd_init(s, &cmd, "LIST");
	cmd.on_untagged = list_untagged;
	cmd.ctx = &lc;
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	if (imap_cmdbuf_add_string(&cmd.buf, reference ? reference : "",
				   reference ? strlen(reference) : 0, 0) < 0)
		goto out_inval;
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	if (imap_cmdbuf_add_string(&cmd.buf, pattern ? pattern : "*",
				   pattern ? strlen(pattern) : 1, 0) < 0)
		goto out_inval;
	return cmd_run(s, &cmd, err);

out_inval:
	cmd_cleanup(s, &cmd);
	imap_error_set(err, IMAP_ERR_LOCAL, NULL, "LIST: invalid argument");
	return -1;
}

/* ------------------------------------------------------------------ */
/* SELECT / EXAMINE */

static int select_untagged(struct imap_session *s, struct imap_cmd *cmd,
			   const struct imap_response *r, struct imap_error *err)
{
	struct imap_select_info *out = cmd->ctx;
	uint64_t n;

	if (strcmp(r->keyword, "EXISTS") == 0 && r->has_number) {
		out->exists = r->number;
		return 1;
	}
	if (!r->is_status || strcmp(r->keyword, "OK") != 0)
		return 0;
	if (strcmp(r->code, "UIDVALIDITY") == 0) {
		if (number_from_text(r->code_args, UINT32_MAX, &n) < 0 || n == 0)
			return session_fail(s, err, IMAP_ERR_PROTOCOL, "invalid UIDVALIDITY from %s",
					    s->host);
		out->uidvalidity = (uint32_t)n;
	} else if (strcmp(r->code, "UIDNEXT") == 0) {
		if (number_from_text(r->code_args, UINT32_MAX, &n) < 0)
			return session_fail(s, err, IMAP_ERR_PROTOCOL, "invalid UIDNEXT from %s",
					    s->host);
		out->uidnext = (uint32_t)n;
	} else if (strcmp(r->code, "HIGHESTMODSEQ") == 0) {
		if (number_from_text(r->code_args, IMAP_NUMBER64_MAX, &n) < 0)
			return session_fail(s, err, IMAP_ERR_PROTOCOL,
					    "invalid HIGHESTMODSEQ from %s", s->host);
		out->highestmodseq = n;
	} else if (strcmp(r->code, "NOMODSEQ") == 0) {
		out->highestmodseq = 0;
	} else if (strcmp(r->code, "PERMANENTFLAGS") == 0 && r->code_args) {
		const char *a = r->code_args;
		size_t len = strlen(a);

		if (len >= 2 && a[0] == '(' && a[len - 1] == ')') {
			a++;
			len -= 2;
		}
		if (len >= sizeof(out->permanent_flags))
			len = sizeof(out->permanent_flags) - 1;
		memcpy(out->permanent_flags, a, len);
		out->permanent_flags[len] = '\0';
	} else {
		return 0;
	}
	return 1;
}

int imap_select(struct imap_session *s, const char *mailbox, bool read_only,
		struct imap_select_info *out, struct imap_error *err)
{
	struct imap_select_info tmp;
	struct imap_cmd cmd;
	int r;

	if (session_check_usable(s, err) < 0)
		return -1;
	if (!out)
		out = &tmp;
	memset(out, 0, sizeof(*out));
	cmd_init(s, &cmd, read_only ? "EXAMINE" : "SELECT");
	cmd.on_untagged = select_untagged;
	cmd.ctx = out;
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	if (cmd_add_mailbox(&cmd, mailbox, err) < 0) {
		cmd_cleanup(s, &cmd);
		return -1;
	}
	if (imap_session_has_cap(s, "CONDSTORE") && !s->condstore_enabled)
		imap_cmdbuf_add_raw(&cmd.buf, " (CONDSTORE)");

	/* whatever the outcome, the old mailbox is no longer selected */
	free(s->selected);
	s->selected = NULL;
	s->exists = 0;
	seq_reset(s, 0);
	r = cmd_run(s, &cmd, err);
	if (r < 0)
		return -1;
	if (read_only || strcmp(cmd.code, "READ-ONLY") == 0)
		out->read_only = true;
	if (out->uidvalidity == 0)
		return session_fail(s, err, IMAP_ERR_PROTOCOL, "%s: no UIDVALIDITY for %s",
				    s->host, mailbox);
	s->selected = strdup(mailbox);
	if (!s->selected) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "out of memory");
		return -1;
	}
	if (s->condstore_enabled || imap_session_has_cap(s, "CONDSTORE"))
		s->condstore_enabled = s->condstore_enabled || out->highestmodseq > 0;
	s->exists = out->exists;
	seq_reset(s, out->exists);
	return 0;
}

/* ------------------------------------------------------------------ */
/* STATUS */

static int status_untagged(struct imap_session *s, struct imap_cmd *cmd,
			   const struct imap_response *r, struct imap_error *err)
{
	struct imap_status_info *out = cmd->ctx;
	const struct imap_value *l;
	uint64_t n;

	if (strcmp(r->keyword, "STATUS") != 0)
		return 0;
	if (r->args.count < 2 || r->args.items[1]->type != IMAP_VAL_LIST)
		return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed STATUS from %s",
				    s->host);
	l = r->args.items[1];
	for (size_t i = 0; i + 1 < l->count; i += 2) {
		const struct imap_value *k = l->items[i], *v = l->items[i + 1];
		bool is64 = imap_value_is_atom(k, "HIGHESTMODSEQ");

		if (imap_value_number(v, is64 ? IMAP_NUMBER64_MAX : UINT32_MAX, &n) < 0)
			return session_fail(s, err, IMAP_ERR_PROTOCOL,
					    "malformed STATUS item from %s", s->host);
		if (imap_value_is_atom(k, "MESSAGES"))
			out->messages = (uint32_t)n;
		else if (imap_value_is_atom(k, "UIDNEXT"))
			out->uidnext = (uint32_t)n;
		else if (imap_value_is_atom(k, "UIDVALIDITY"))
			out->uidvalidity = (uint32_t)n;
		else if (is64)
			out->highestmodseq = n;
	}
	return 1;
}

/* NAME mailbox[suffix]: a command on one mailbox whose untagged answers
 * go to on_untagged with ctx */
static int cmd_run_on_mailbox(struct imap_session *s, const char *name, const char *mailbox,
			      const char *suffix, cmd_untagged_fn on_untagged, void *ctx,
			      struct imap_error *err)
{
	struct imap_cmd cmd;

	if (session_check_usable(s, err) < 0)
		return -1;
	cmd_init(s, &cmd, name);
	cmd.on_untagged = on_untagged;
	cmd.ctx = ctx;
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	if (cmd_add_mailbox(&cmd, mailbox, err) < 0) {
		cmd_cleanup(s, &cmd);
		return -1;
	}
	if (suffix)
		imap_cmdbuf_add_raw(&cmd.buf, suffix);
	return cmd_run(s, &cmd, err);
}

int imap_status(struct imap_session *s, const char *mailbox, struct imap_status_info *out,
		struct imap_error *err)
{
	struct imap_status_info tmp;

	if (!out)
		out = &tmp;
	memset(out, 0, sizeof(*out));
	return cmd_run_on_mailbox(s, "STATUS", mailbox,
				  imap_session_has_cap(s, "CONDSTORE")
					  ? " (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
					  : " (MESSAGES UIDNEXT UIDVALIDITY)",
				  status_untagged, out, err);
}

/* ------------------------------------------------------------------ */
/* GETQUOTAROOT */

/* keep the (used, limit) pair with less left than the one held */
static void quota_keep(bool *have, uint64_t *used, uint64_t *limit, uint64_t u, uint64_t l)
{
	uint64_t left = l > u ? l - u : 0;

	if (!*have || left < (*limit > *used ? *limit - *used : 0)) {
		*have = true;
		*used = u;
		*limit = l;
	}
}

static int quota_untagged(struct imap_session *s, struct imap_cmd *cmd,
			  const struct imap_response *r, struct imap_error *err)
{
	struct imap_quota_info *out = cmd->ctx;
	const struct imap_value *l;

	if (strcmp(r->keyword, "QUOTAROOT") == 0)
		return 1; /* the roots' names: not needed, their QUOTA follows */
	if (strcmp(r->keyword, "QUOTA") != 0)
		return 0;
	/* QUOTA root (resource usage limit ...) */
	if (r->args.count < 2 || r->args.items[1]->type != IMAP_VAL_LIST ||
	    r->args.items[1]->count % 3 != 0)
		return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed QUOTA from %s", s->host);
	l = r->args.items[1];
	for (size_t i = 0; i < l->count; i += 3) {
		uint64_t used, limit;

		if (l->items[i]->type != IMAP_VAL_ATOM ||
		    imap_value_number(l->items[i + 1], IMAP_NUMBER64_MAX, &used) < 0 ||
		    imap_value_number(l->items[i + 2], IMAP_NUMBER64_MAX, &limit) < 0)
			return session_fail(s, err, IMAP_ERR_PROTOCOL,
					    "malformed QUOTA resource from %s", s->host);
		if (imap_value_is_atom(l->items[i], "STORAGE"))
			quota_keep(&out->have_storage, &out->storage_used, &out->storage_limit,
				   used, limit);
		else if (imap_value_is_atom(l->items[i], "MESSAGE"))
			quota_keep(&out->have_messages, &out->messages_used, &out->messages_limit,
				   used, limit);
	}
	return 1;
}

int imap_getquotaroot(struct imap_session *s, const char *mailbox,
		      struct imap_quota_info *out, struct imap_error *err)
{
	struct imap_quota_info tmp;

	if (!out)
		out = &tmp;
	memset(out, 0, sizeof(*out));
	return cmd_run_on_mailbox(s, "GETQUOTAROOT", mailbox, NULL, quota_untagged, out, err);
}

/* ------------------------------------------------------------------ */
/* UID FETCH metadata */

struct meta_ctx {
	imap_meta_cb meta_cb;
	imap_vanished_cb vanished_cb;
	void *ctx;
	char *flags;
	size_t flags_cap;
};

static int vanished_range_fn(void *ctx, uint32_t lo, uint32_t hi)
{
	struct imap_session *s = ctx;

	if (!s->vanished_stopped && s->vanished_cb(s->vanished_ctx, lo, hi) != 0)
		s->vanished_stopped = true;
	return 0;
}

static int meta_untagged(struct imap_session *s, struct imap_cmd *cmd,
			 const struct imap_response *r, struct imap_error *err)
{
	struct meta_ctx *mc = cmd->ctx;
	struct imap_msg_meta m = { 0 };
	const struct imap_value *l;
	bool have_uid = false;
	uint64_t n;

	if (strcmp(r->keyword, "VANISHED") == 0) {
		const struct imap_value *set;
		size_t i = 0;

		if (r->args.count && r->args.items[0]->type == IMAP_VAL_LIST)
			i = 1; /* (EARLIER) */
		if (i >= r->args.count)
			return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed VANISHED from %s",
					    s->host);
		set = r->args.items[i];
		if (!mc->vanished_cb)
			return 1;
		if (set->type != IMAP_VAL_ATOM ||
		    uid_set_each(set->str, set->len, vanished_range_fn, s) < 0)
			return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed VANISHED from %s",
					    s->host);
		return 1;
	}
	if (strcmp(r->keyword, "FETCH") != 0 || !r->has_number)
		return 0;
	if (r->args.count < 1 || r->args.items[0]->type != IMAP_VAL_LIST)
		return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed FETCH from %s", s->host);
	l = r->args.items[0];
	for (size_t i = 0; i + 1 < l->count; i += 2) {
		const struct imap_value *k = l->items[i], *v = l->items[i + 1];

		if (imap_value_is_atom(k, "UID")) {
			if (imap_value_number(v, UINT32_MAX, &n) < 0 || n == 0)
				goto out_malformed;
			m.uid = (uint32_t)n;
			have_uid = true;
		} else if (imap_value_is_atom(k, "FLAGS")) {
			size_t need = 1, pos = 0;

			if (v->type != IMAP_VAL_LIST)
				goto out_malformed;
			for (size_t j = 0; j < v->count; j++) {
				if (v->items[j]->type != IMAP_VAL_ATOM)
					goto out_malformed;
				need += v->items[j]->len + 1;
			}
			if (need > mc->flags_cap) {
				char *nf = realloc(mc->flags, need);

				if (!nf)
					return session_fail(s, err, IMAP_ERR_LOCAL, "out of memory");
				mc->flags = nf;
				mc->flags_cap = need;
			}
			for (size_t j = 0; j < v->count; j++) {
				if (j)
					mc->flags[pos++] = ' ';
				memcpy(mc->flags + pos, v->items[j]->str, v->items[j]->len);
				pos += v->items[j]->len;
			}
			mc->flags[pos] = '\0';
			m.flags = mc->flags;
			m.have |= IMAP_META_FLAGS;
		} else if (imap_value_is_atom(k, "RFC822.SIZE")) {
			if (imap_value_number(v, IMAP_NUMBER64_MAX, &n) < 0)
				goto out_malformed;
			m.size = n;
			m.have |= IMAP_META_SIZE;
		} else if (imap_value_is_atom(k, "INTERNALDATE")) {
			if (v->type != IMAP_VAL_STRING ||
			    parse_internaldate(v->str, &m.internaldate,
					       &m.internaldate_tz_minutes) < 0)
				goto out_malformed;
			m.have |= IMAP_META_INTERNALDATE;
		} else if (imap_value_is_atom(k, "MODSEQ")) {
			if (v->type != IMAP_VAL_LIST || v->count != 1 ||
			    imap_value_number(v->items[0], IMAP_NUMBER64_MAX, &n) < 0)
				goto out_malformed;
			m.modseq = n;
			m.have |= IMAP_META_MODSEQ;
		}
	}
	if (!have_uid)
		return 0; /* unsolicited flag update without UID */
	/* a stop from either callback ends both */
	if (!cmd->stopped && !s->vanished_stopped && mc->meta_cb(mc->ctx, &m) != 0) {
		cmd->stopped = true;
		s->vanished_stopped = true;
	}
	return 1;

out_malformed:
	return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed FETCH item from %s", s->host);
}

int imap_uid_fetch_meta(struct imap_session *s, const char *uid_set, unsigned items,
			uint64_t changedsince, imap_meta_cb meta_cb,
			imap_vanished_cb vanished_cb, void *ctx, struct imap_error *err)
{
	struct meta_ctx mc = { .meta_cb = meta_cb, .vanished_cb = vanished_cb, .ctx = ctx };
	struct imap_cmd cmd;
	bool condstore = s->condstore_enabled || imap_session_has_cap(s, "CONDSTORE");
	int r;

	if (session_check_usable(s, err) < 0)
		return -1;
	if (!uid_set || !imap_sequence_set_valid(uid_set) || !meta_cb) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "UID FETCH: invalid UID set");
		return -1;
	}
	if (changedsince && !condstore) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "CHANGEDSINCE needs CONDSTORE");
		return -1;
	}
	cmd_init(s, &cmd, "UID FETCH");
	cmd.on_untagged = meta_untagged;
	cmd.ctx = &mc;
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	imap_cmdbuf_add_raw(&cmd.buf, uid_set); /* validated above */
	imap_cmdbuf_add_raw(&cmd.buf, " (UID");
	if (items & IMAP_META_FLAGS)
		imap_cmdbuf_add_raw(&cmd.buf, " FLAGS");
	if (items & IMAP_META_SIZE)
		imap_cmdbuf_add_raw(&cmd.buf, " RFC822.SIZE");
	if (items & IMAP_META_INTERNALDATE)
		imap_cmdbuf_add_raw(&cmd.buf, " INTERNALDATE");
	if ((items & IMAP_META_MODSEQ) && condstore)
		imap_cmdbuf_add_raw(&cmd.buf, " MODSEQ");
	imap_cmdbuf_add_raw(&cmd.buf, ")");
	if (changedsince) {
		imap_cmdbuf_add_rawf(&cmd.buf, " (CHANGEDSINCE %" PRIu64 "%s)", changedsince,
				     s->qresync_enabled ? " VANISHED" : "");
	}
	s->vanished_cb = vanished_cb;
	s->vanished_ctx = ctx;
	s->vanished_stopped = false;
	r = cmd_run(s, &cmd, err);
	if (r == 0 && s->vanished_stopped) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "UID FETCH: stopped by the caller");
		r = -1;
	}
	s->vanished_cb = NULL;
	s->vanished_ctx = NULL;
	free(mc.flags);
	return r;
}

/* ------------------------------------------------------------------ */
/* UID FETCH bodies */

struct body_ctx {
	const struct imap_body_sink *sink;
	void *ctx;
	uint32_t uid; /* of the body being streamed */
	struct imap_cmd *cmd;
};

/* "BODY[]" or "BODY[]<123>": is it a body item, and its origin */
static bool body_item(const struct imap_value *item, uint64_t *offset_out)
{
	const char *p;

	*offset_out = 0;
	if (!item || item->type != IMAP_VAL_ATOM || strncasecmp(item->str, "BODY[", 5) != 0)
		return false;
	p = strchr(item->str, ']');
	if (!p)
		return false;
	if (p[1] == '<') {
		const char *e = strchr(p + 2, '>');

		if (!e || e[1] != '\0' ||
		    imap_parse_number(p + 2, (size_t)(e - p - 2), UINT64_MAX, offset_out) < 0)
			return false;
	} else if (p[1] != '\0') {
		return false;
	}
	return true;
}

static uint32_t fetch_list_uid(const struct imap_value *l)
{
	uint64_t n;

	for (size_t i = 0; i + 1 < l->count; i += 2)
		if (imap_value_is_atom(l->items[i], "UID") &&
		    imap_value_number(l->items[i + 1], UINT32_MAX, &n) == 0)
			return (uint32_t)n;
	return 0;
}

static enum imap_literal_action body_literal(struct imap_session *s, struct imap_cmd *cmd,
					     const struct imap_literal_info *info)
{
	struct body_ctx *bc = cmd->ctx;
	uint64_t offset;
	uint32_t uid;

	if (strcmp(info->resp->keyword, "FETCH") != 0 || info->depth != 1 ||
	    (info->container->count % 2) != 1 || !body_item(info->item, &offset))
		return IMAP_LITERAL_BUFFER;
	uid = fetch_list_uid(info->container);
	if (!uid)
		uid = seq_lookup(s, info->resp->number);
	if (!uid)
		return IMAP_LITERAL_BUFFER; /* UID after the body: within the limit */
	bc->uid = uid;
	if (!cmd->stopped && bc->sink->begin && bc->sink->begin(bc->ctx, uid, offset, info->size))
		cmd->stopped = true;
	return IMAP_LITERAL_STREAM;
}

static void body_literal_data(struct imap_cmd *cmd, const void *buf, size_t len)
{
	struct body_ctx *bc = cmd->ctx;

	if (!cmd->stopped && bc->sink->data && bc->sink->data(bc->ctx, bc->uid, buf, len))
		cmd->stopped = true;
}

static void body_literal_end(struct imap_cmd *cmd)
{
	struct body_ctx *bc = cmd->ctx;

	if (!cmd->stopped && bc->sink->end && bc->sink->end(bc->ctx, bc->uid))
		cmd->stopped = true;
}

/* A FETCH whose body came buffered (quoted, or a literal before the UID). */
static int body_untagged(struct imap_session *s, struct imap_cmd *cmd,
			 const struct imap_response *r, struct imap_error *err)
{
	struct body_ctx *bc = cmd->ctx;
	const struct imap_value *l;
	uint32_t uid;

	if (strcmp(r->keyword, "FETCH") != 0 || !r->has_number)
		return 0;
	if (r->args.count < 1 || r->args.items[0]->type != IMAP_VAL_LIST)
		return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed FETCH from %s", s->host);
	l = r->args.items[0];
	uid = fetch_list_uid(l);
	for (size_t i = 0; i + 1 < l->count; i += 2) {
		const struct imap_value *v = l->items[i + 1];
		uint64_t offset;

		if (!body_item(l->items[i], &offset) || v->type != IMAP_VAL_STRING)
			continue;
		if (!uid)
			return session_fail(s, err, IMAP_ERR_PROTOCOL, "FETCH body without UID from %s",
					    s->host);
		if (cmd->stopped)
			continue;
		bc->uid = uid;
		if ((bc->sink->begin && bc->sink->begin(bc->ctx, uid, offset, v->len)) ||
		    (v->len && bc->sink->data && bc->sink->data(bc->ctx, uid, v->str, v->len)) ||
		    (bc->sink->end && bc->sink->end(bc->ctx, uid)))
			cmd->stopped = true;
	}
	return 1;
}

int imap_uid_fetch_bodies(struct imap_session *s, const char *uid_set, uint64_t offset,
			  uint64_t length, const struct imap_body_sink *sink, void *ctx,
			  struct imap_error *err)
{
	struct body_ctx bc = { .sink = sink, .ctx = ctx };
	struct imap_cmd cmd;

	if (session_check_usable(s, err) < 0)
		return -1;
	if (!uid_set || !imap_sequence_set_valid(uid_set) || !sink) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "UID FETCH: invalid argument");
		return -1;
	}
	cmd_init(s, &cmd, "UID FETCH");
	cmd.on_untagged = body_untagged;
	cmd.on_literal = body_literal;
	cmd.on_literal_data = body_literal_data;
	cmd.on_literal_end = body_literal_end;
	cmd.ctx = &bc;
	bc.cmd = &cmd;
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	imap_cmdbuf_add_raw(&cmd.buf, uid_set); /* validated above */
	if (length > 0)
		imap_cmdbuf_add_rawf(&cmd.buf, " (UID BODY.PEEK[]<%" PRIu64 ".%" PRIu64 ">)", offset,
				     length);
	else
		imap_cmdbuf_add_raw(&cmd.buf, " (UID BODY.PEEK[])");
	return cmd_run(s, &cmd, err);
}

/* ------------------------------------------------------------------ */
/* UID SEARCH ALL */

struct search_ctx {
	uint32_t *uids;
	size_t count;
	size_t cap;
	size_t max;
	const char *tag;
	bool overflow;
};

static int search_add(void *ctx, uint32_t lo, uint32_t hi)
{
	struct search_ctx *sc = ctx;

	for (uint64_t u = lo; u <= hi; u++) {
		if (sc->count == sc->cap) {
			size_t cap = sc->cap ? sc->cap * 2 : 256;
			uint32_t *n;

			if (sc->count >= sc->max) {
				sc->overflow = true;
				return -1;
			}
			if (cap > sc->max)
				cap = sc->max;
			n = realloc(sc->uids, cap * sizeof(*n));
			if (!n) {
				sc->overflow = true;
				return -1;
			}
			sc->uids = n;
			sc->cap = cap;
		}
		sc->uids[sc->count++] = (uint32_t)u;
	}
	return 0;
}

static int search_untagged(struct imap_session *s, struct imap_cmd *cmd,
			   const struct imap_response *r, struct imap_error *err)
{
	struct search_ctx *sc = cmd->ctx;
	const struct imap_value *a = &r->args;
	uint64_t n;

	if (strcmp(r->keyword, "SEARCH") == 0) {
		for (size_t i = 0; i < a->count; i++) {
			if (a->items[i]->type == IMAP_VAL_LIST)
				continue; /* (MODSEQ n) */
			if (imap_value_number(a->items[i], UINT32_MAX, &n) < 0 || n == 0)
				goto out_malformed;
			if (search_add(sc, (uint32_t)n, (uint32_t)n) < 0)
				goto out_overflow;
		}
		return 1;
	}
	if (strcmp(r->keyword, "ESEARCH") == 0) {
		size_t i = 0;

		/* (TAG "A0005") correlator: ignore other commands' results */
		if (a->count && a->items[0]->type == IMAP_VAL_LIST) {
			const struct imap_value *c = a->items[0];

			if (c->count != 2 || !imap_value_is_atom(c->items[0], "TAG") ||
			    !imap_value_text(c->items[1]) || strcmp(c->items[1]->str, sc->tag))
				return 0;
			i = 1;
		}
		if (i < a->count && imap_value_is_atom(a->items[i], "UID"))
			i++;
		for (; i + 1 < a->count; i += 2) {
			const struct imap_value *v = a->items[i + 1];

			if (!imap_value_is_atom(a->items[i], "ALL"))
				continue;
			if (v->type != IMAP_VAL_ATOM)
				goto out_malformed;
			if (uid_set_each(v->str, v->len, search_add, sc) < 0)
				goto out_overflow;
		}
		return 1;
	}
	return 0;

out_overflow:
	if (sc->overflow)
		return session_fail(s, err, IMAP_ERR_PROTOCOL,
				    "SEARCH result from %s larger than %zu UIDs", s->host, sc->max);
out_malformed:
	return session_fail(s, err, IMAP_ERR_PROTOCOL, "malformed SEARCH result from %s", s->host);
}

static int uid_compare(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int imap_uid_search_all(struct imap_session *s, uint32_t **uids_out, size_t *count_out,
			struct imap_error *err)
{
	struct search_ctx sc = { .max = s->lim.max_untagged };
	struct imap_cmd cmd;
	size_t k = 0;

	*uids_out = NULL;
	*count_out = 0;
	if (session_check_usable(s, err) < 0)
		return -1;
	cmd_init(s, &cmd, "UID SEARCH");
	cmd.on_untagged = search_untagged;
	cmd.ctx = &sc;
	sc.tag = cmd.tag;
	if (imap_session_has_cap(s, "ESEARCH"))
		imap_cmdbuf_add_raw(&cmd.buf, " RETURN (ALL) ALL");
	else
		imap_cmdbuf_add_raw(&cmd.buf, " ALL");
	if (cmd_run(s, &cmd, err) < 0) {
		free(sc.uids);
		return -1;
	}
	if (sc.count) {
		qsort(sc.uids, sc.count, sizeof(*sc.uids), uid_compare);
		for (size_t i = 0; i < sc.count; i++)
			if (k == 0 || sc.uids[i] != sc.uids[k - 1])
				sc.uids[k++] = sc.uids[i];
	}
	*uids_out = sc.uids;
	*count_out = k;
	return 0;
}

/* ------------------------------------------------------------------ */
/* simple commands */

int imap_noop(struct imap_session *s, struct imap_error *err)
{
	struct imap_cmd cmd;

	if (session_check_usable(s, err) < 0)
		return -1;
	cmd_init(s, &cmd, "NOOP");
	return cmd_run(s, &cmd, err);
}

int imap_session_noop_pipelined(struct imap_session *s, unsigned n, struct imap_error *err)
{
	struct imap_cmd *cmds;
	unsigned sent = 0;
	int r = 0;

	if (session_check_usable(s, err) < 0)
		return -1;
	cmds = calloc(n ? n : 1, sizeof(*cmds));
	if (!cmds) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "out of memory");
		return -1;
	}
	for (; sent < n; sent++) {
		cmd_init(s, &cmds[sent], "NOOP");
		if (cmd_send(s, &cmds[sent], err) < 0) {
			sent++;
			r = -1;
			break;
		}
	}
	/* wait for every reply (even after a NO) so no tag is left pending;
	 * report the first failure */
	for (unsigned i = 0; i < sent && !s->broken; i++) {
		struct imap_error e;

		if (cmd_wait(s, &cmds[i], &e) < 0 && r == 0) {
			r = -1;
			if (err)
				*err = e;
		}
	}
	for (unsigned i = 0; i < sent; i++)
		cmd_cleanup(s, &cmds[i]);
	free(cmds);
	return r;
}

int imap_unselect(struct imap_session *s, struct imap_error *err)
{
	struct imap_cmd cmd;

	if (session_check_usable(s, err) < 0)
		return -1;
	if (!s->selected)
		return 0;
	if (!imap_session_has_cap(s, "UNSELECT"))
		return 0; /* the session stays selected (see imap.h) */
	cmd_init(s, &cmd, "UNSELECT");
	if (cmd_run(s, &cmd, err) < 0)
		return -1;
	free(s->selected);
	s->selected = NULL;
	seq_reset(s, 0);
	return 0;
}

/* ------------------------------------------------------------------ */
/* writes: APPEND, STORE, EXPUNGE, COPY, MOVE, CREATE, DELETE, RENAME */

/* "APPENDUID 38505 3955" / "COPYUID 38505 304 3956": uidvalidity and the
 * first UID of the last set */
static int parse_uidplus(const char *args, bool copy, uint32_t *validity_out, uint32_t *uid_out)
{
	const char *p = args, *sp;
	uint64_t v;
	uint32_t first = 0;

	if (!p)
		return -1;
	sp = strchr(p, ' ');
	if (!sp || imap_parse_number(p, (size_t)(sp - p), UINT32_MAX, &v) < 0 || v == 0)
		return -1;
	p = sp + 1;
	if (copy) {
		sp = strchr(p, ' ');
		if (!sp)
			return -1;
		p = sp + 1;
	}
	if (uid_set_each(p, strlen(p), first_uid_fn, &first) < 0 || !first)
		return -1;
	*validity_out = (uint32_t)v;
	*uid_out = first;
	return 0;
}

/* Last second of 9999-12-31 UTC: date-year is four digits (RFC 3501). */
#define IMAP_DATE_MAX INT64_C(253402300799)

/* 0 with buf filled; -1 if t cannot be written as an IMAP date-time (then
 * gmtime_r would fail or the year would not fit in four digits). */
static int format_internaldate(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t < 0 || t > IMAP_DATE_MAX || (int64_t)tt != t || !gmtime_r(&tt, &tm) ||
	    tm.tm_mon < 0 || tm.tm_mon > 11)
		return -1;
	snprintf(buf, len, "\"%02d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday,
		 month_names[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return 0;
}

int imap_append(struct imap_session *s, const char *mailbox, const char *flags,
		int64_t internaldate, const void *data, size_t len, uint32_t *uidvalidity_out,
		uint32_t *uid_out, struct imap_error *err)
{
	struct imap_cmd cmd;
	uint32_t v = 0, u = 0;
	int r;

	if (uidvalidity_out)
		*uidvalidity_out = 0;
	if (uid_out)
		*uid_out = 0;
	if (session_check_usable(s, err) < 0)
		return -1;
	if ((!data && len) || (flags && !imap_flags_valid(flags))) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "APPEND: invalid flags or message");
		return -1;
	}
	cmd_init(s, &cmd, "APPEND");
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	if (cmd_add_mailbox(&cmd, mailbox, err) < 0) {
		cmd_cleanup(s, &cmd);
		return -1;
	}
	if (flags && flags[strspn(flags, " ")]) {
		imap_cmdbuf_add_raw(&cmd.buf, " ");
		imap_cmdbuf_add_flag_list(&cmd.buf, flags);
	}
	if (internaldate >= 0) {
		char date[48];

		/* a date IMAP cannot carry: the server's time rather than a
		 * message lost or a garbage date */
		if (format_internaldate(internaldate, date, sizeof(date)) == 0) {
			imap_cmdbuf_add_raw(&cmd.buf, " ");
			imap_cmdbuf_add_raw(&cmd.buf, date);
		} else {
			log_debug("imap %s: APPEND: internal date %" PRId64
				  " out of IMAP's range, not sent", s->host, internaldate);
		}
	}
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	imap_cmdbuf_add_literal(&cmd.buf, data ? data : "", len);
	r = cmd_send(s, &cmd, err);
	if (r == 0)
		r = cmd_wait(s, &cmd, err);
	if (r == 0 && strcmp(cmd.code, "APPENDUID") == 0 &&
	    parse_uidplus(cmd.code_args, false, &v, &u) == 0) {
		if (uidvalidity_out)
			*uidvalidity_out = v;
		if (uid_out)
			*uid_out = u;
	}
	cmd_cleanup(s, &cmd);
	return r;
}

int imap_uid_store(struct imap_session *s, const char *uid_set, enum imap_store_op op,
		   const char *flags, struct imap_error *err)
{
	static const char *const items[] = { " FLAGS.SILENT ", " +FLAGS.SILENT ",
					     " -FLAGS.SILENT " };
	struct imap_cmd cmd;

	if (session_check_usable(s, err) < 0)
		return -1;
	if (!uid_set || !imap_sequence_set_valid(uid_set) || !flags || !imap_flags_valid(flags) ||
	    (unsigned)op > IMAP_STORE_REMOVE) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "UID STORE: invalid UID set or flags");
		return -1;
	}
	cmd_init(s, &cmd, "UID STORE");
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	imap_cmdbuf_add_raw(&cmd.buf, uid_set); /* validated above */
	imap_cmdbuf_add_raw(&cmd.buf, items[op]);
	imap_cmdbuf_add_flag_list(&cmd.buf, flags);
	return cmd_run(s, &cmd, err);
}

int imap_uid_expunge(struct imap_session *s, const char *uid_set, struct imap_error *err)
{
	struct imap_cmd cmd;

	if (session_check_usable(s, err) < 0)
		return -1;
	if (!uid_set || !imap_sequence_set_valid(uid_set)) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "UID EXPUNGE: invalid UID set");
		return -1;
	}
	if (!imap_session_has_cap(s, "UIDPLUS")) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "UID EXPUNGE needs UIDPLUS");
		return -1;
	}
	cmd_init(s, &cmd, "UID EXPUNGE");
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	imap_cmdbuf_add_raw(&cmd.buf, uid_set);
	return cmd_run(s, &cmd, err);
}

struct copy_ctx {
	bool have;
	uint32_t validity;
	uint32_t uid;
};

/* MOVE reports COPYUID in an untagged OK before the EXPUNGEs */
static int copy_untagged(struct imap_session *s, struct imap_cmd *cmd,
			 const struct imap_response *r, struct imap_error *err)
{
	struct copy_ctx *cc = cmd->ctx;

	if (!r->is_status || strcmp(r->keyword, "OK") || strcmp(r->code, "COPYUID"))
		return 0;
	if (parse_uidplus(r->code_args, true, &cc->validity, &cc->uid) == 0)
		cc->have = true;
	return 1;
}

static int session_copy_move(struct imap_session *s, const char *verb, uint32_t uid,
			     const char *dest, uint32_t *validity_out, uint32_t *uid_out,
			     struct imap_error *err)
{
	struct copy_ctx cc = { 0 };
	struct imap_cmd cmd;
	int r;

	cmd_init(s, &cmd, verb);
	cmd.on_untagged = copy_untagged;
	cmd.ctx = &cc;
	imap_cmdbuf_add_rawf(&cmd.buf, " %" PRIu32 " ", uid);
	if (cmd_add_mailbox(&cmd, dest, err) < 0) {
		cmd_cleanup(s, &cmd);
		return -1;
	}
	r = cmd_send(s, &cmd, err);
	if (r == 0)
		r = cmd_wait(s, &cmd, err);
	if (r == 0 && strcmp(cmd.code, "COPYUID") == 0 &&
	    parse_uidplus(cmd.code_args, true, &cc.validity, &cc.uid) == 0)
		cc.have = true;
	cmd_cleanup(s, &cmd);
	if (r == 0 && cc.have) {
		if (validity_out)
			*validity_out = cc.validity;
		if (uid_out)
			*uid_out = cc.uid;
	}
	return r;
}

int imap_uid_copy(struct imap_session *s, uint32_t uid, const char *dest,
		  uint32_t *dest_uidvalidity_out, uint32_t *dest_uid_out, struct imap_error *err)
{
	if (dest_uidvalidity_out)
		*dest_uidvalidity_out = 0;
	if (dest_uid_out)
		*dest_uid_out = 0;
	if (session_check_usable(s, err) < 0)
		return -1;
	if (uid == 0) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "UID COPY: invalid UID");
		return -1;
	}
	return session_copy_move(s, "UID COPY", uid, dest, dest_uidvalidity_out, dest_uid_out,
				 err);
}

int imap_uid_move(struct imap_session *s, uint32_t uid, const char *dest,
		  uint32_t *dest_uidvalidity_out, uint32_t *dest_uid_out, struct imap_error *err)
{
	char set[16];

	if (dest_uidvalidity_out)
		*dest_uidvalidity_out = 0;
	if (dest_uid_out)
		*dest_uid_out = 0;
	if (session_check_usable(s, err) < 0)
		return -1;
	if (uid == 0) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "UID MOVE: invalid UID");
		return -1;
	}
	if (imap_session_has_cap(s, "MOVE"))
		return session_copy_move(s, "UID MOVE", uid, dest, dest_uidvalidity_out,
					 dest_uid_out, err);
	if (!imap_session_has_cap(s, "UIDPLUS")) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL,
			       "moving a message needs MOVE or UIDPLUS, the server has neither");
		return -1;
	}
	if (session_copy_move(s, "UID COPY", uid, dest, dest_uidvalidity_out, dest_uid_out,
			      err) < 0)
		return -1;
	snprintf(set, sizeof(set), "%" PRIu32, uid);
	if (imap_uid_store(s, set, IMAP_STORE_ADD, "\\Deleted", err) < 0)
		return -1;
	return imap_uid_expunge(s, set, err);
}

static int session_mailbox_cmd(struct imap_session *s, const char *verb, const char *a,
			       const char *b, struct imap_error *err)
{
	struct imap_cmd cmd;

	if (session_check_usable(s, err) < 0)
		return -1;
	cmd_init(s, &cmd, verb);
	imap_cmdbuf_add_raw(&cmd.buf, " ");
	if (cmd_add_mailbox(&cmd, a, err) < 0)
		goto out_cleanup;
	if (b) {
		imap_cmdbuf_add_raw(&cmd.buf, " ");
		if (cmd_add_mailbox(&cmd, b, err) < 0)
			goto out_cleanup;
	}
	return cmd_run(s, &cmd, err);

out_cleanup:
	cmd_cleanup(s, &cmd);
	return -1;
}

int imap_create(struct imap_session *s, const char *mailbox, struct imap_error *err)
{
	return session_mailbox_cmd(s, "CREATE", mailbox, NULL, err);
}

int imap_delete(struct imap_session *s, const char *mailbox, struct imap_error *err)
{
	return session_mailbox_cmd(s, "DELETE", mailbox, NULL, err);
}

int imap_rename(struct imap_session *s, const char *from, const char *to,
		struct imap_error *err)
{
	if (!to) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "RENAME: no new name");
		return -1;
	}
	return session_mailbox_cmd(s, "RENAME", from, to, err);
}
