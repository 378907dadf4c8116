/*
 * Session tests against a small scripted server on a socketpair: exact
 * command transcripts (what the client writes, byte for byte), and hostile
 * servers (STARTTLS injection, huge literals, endless lines and untagged
 * streams, unknown tags, replies out of order) that must end the session
 * with an error and bounded memory, never a crash.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <malloc.h>

#include "conn_i.h"
#include "imapfs/imap.h"
#include "imapfs/log.h"
#include "session_i.h"

/* ------------------------------------------------------------------ */
/* the scripted server: runs fn in a thread on its end of a socketpair */

struct srv {
	int fd;
	pthread_t thread;
	void (*fn)(struct srv *v);
	bool failed;
	char why[512];
	char *after; /* bytes received by srv_drain */
	size_t after_len;
	const void *arg;
};

static void srv_fail(struct srv *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void srv_fail(struct srv *v, const char *fmt, ...)
{
	va_list ap;

	if (v->failed)
		return;
	v->failed = true;
	va_start(ap, fmt);
	vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
}

/* Send bytes; false when the client has gone (which hostile tests expect). */
static bool srv_send_n(struct srv *v, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(v->fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static bool srv_send(struct srv *v, const char *s)
{
	return srv_send_n(v, s, strlen(s));
}

/* Read exactly n bytes (5 s at most); false on EOF or timeout. */
static bool srv_read_n(struct srv *v, char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd pfd = { .fd = v->fd, .events = POLLIN };
		ssize_t r;

		if (poll(&pfd, 1, 5000) <= 0)
			return false;
		r = read(v->fd, buf + got, n - got);
		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

/* The client must send exactly these bytes next. */
static bool srv_expect(struct srv *v, const char *exp)
{
	size_t n = strlen(exp);
	char *buf = calloc(1, n + 1);
	bool ok;

	ok = srv_read_n(v, buf, n);
	if (!ok || memcmp(buf, exp, n) != 0) {
		srv_fail(v, "expected \"%s\", got \"%s\"%s", exp, buf, ok ? "" : " (short)");
		ok = false;
	}
	free(buf);
	return ok;
}

/* Everything the client sends until it closes. */
static void srv_drain(struct srv *v)
{
	char buf[4096];

	for (;;) {
		struct pollfd pfd = { .fd = v->fd, .events = POLLIN };
		ssize_t r;

		if (poll(&pfd, 1, 5000) <= 0)
			return;
		r = read(v->fd, buf, sizeof(buf));
		if (r <= 0)
			return;
		v->after = realloc(v->after, v->after_len + (size_t)r + 1);
		memcpy(v->after + v->after_len, buf, (size_t)r);
		v->after_len += (size_t)r;
		v->after[v->after_len] = '\0';
	}
}

static void *srv_main(void *arg)
{
	struct srv *v = arg;

	v->fn(v);
	shutdown(v->fd, SHUT_WR);
	srv_drain(v);
	return NULL;
}

static struct srv *srv_start(void (*fn)(struct srv *v), const void *arg, int *client_fd)
{
	struct srv *v = calloc(1, sizeof(*v));
	int sv[2];

	assert_non_null(v);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	v->fd = sv[0];
	v->fn = fn;
	v->arg = arg;
	*client_fd = sv[1];
	assert_int_equal(pthread_create(&v->thread, NULL, srv_main, v), 0);
	return v;
}

/* Wait for the server thread (it ends when the client has closed). */
static void srv_join(struct srv *v)
{
	pthread_join(v->thread, NULL);
	close(v->fd);
	v->fd = -1;
}

static void srv_free(struct srv *v)
{
	free(v->after);
	free(v);
}

/* Join; fail the test if the server's script failed. */
static void srv_finish(struct srv *v)
{
	srv_join(v);
	if (v->failed)
		fail_msg("server: %s", v->why);
	srv_free(v);
}

/* ------------------------------------------------------------------ */
/* the client side */

static struct imap_params test_params(enum imap_tls_mode tls)
{
	struct imap_params p = {
		.host = "test.invalid",
		.tls = tls,
		.user = "joe",
		.password = "secret",
		.io_timeout_ms = 10000,
	};
	return p;
}

static int open_session(int fd, const struct imap_params *p, struct imap_session **s,
			struct imap_error *err)
{
	struct imap_conn *c = imap_conn_from_fd(fd, p->io_timeout_ms);

	assert_non_null(c);
	return imap_session_open_conn(p, c, s, err);
}

/* Greeting with capabilities, LOGIN joe "secret", OK with capabilities:
 * the next client tag is A0002. */
static bool srv_login(struct srv *v, const char *caps)
{
	char buf[512];

	snprintf(buf, sizeof(buf), "* OK [CAPABILITY IMAP4rev1 %s] ready\r\n", caps);
	if (!srv_send(v, buf) || !srv_expect(v, "A0001 LOGIN joe \"secret\"\r\n"))
		return false;
	snprintf(buf, sizeof(buf), "A0001 OK [CAPABILITY IMAP4rev1 %s] Logged in\r\n", caps);
	return srv_send(v, buf);
}

/* Peak resident set size in KiB, after resetting it if the kernel can. */
static long peak_rss_kib(bool reset)
{
	char line[256];
	long kib = -1;
	FILE *f;

	if (reset) {
		f = fopen("/proc/self/clear_refs", "w");
		if (f) {
			fputs("5", f);
			fclose(f);
		}
	}
	f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* ------------------------------------------------------------------ */
/* transcripts */

static void srv_transcript_basic(struct srv *v)
{
	if (!srv_send(v, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n") ||
	    !srv_expect(v, "A0001 LOGIN joe \"p\\\"a\\\\ss\"\r\n") ||
	    !srv_send(v, "A0001 OK done\r\n") || /* no capabilities: the client asks */
	    !srv_expect(v, "A0002 CAPABILITY\r\n") ||
	    !srv_send(v, "* CAPABILITY IMAP4rev1 UIDPLUS ENABLE CONDSTORE UNSELECT\r\n"
			 "A0002 OK done\r\n") ||
	    !srv_expect(v, "A0003 ENABLE CONDSTORE\r\n") ||
	    !srv_send(v, "* ENABLED CONDSTORE\r\nA0003 OK enabled\r\n") ||
	    !srv_expect(v, "A0004 SELECT \"a \\\"b\\\"\"\r\n") ||
	    !srv_send(v, "* FLAGS (\\Seen \\Deleted)\r\n"
			 "* OK [PERMANENTFLAGS (\\Seen \\Deleted \\*)] x\r\n"
			 "* 3 EXISTS\r\n* 0 RECENT\r\n"
			 "* OK [UIDVALIDITY 42] x\r\n* OK [UIDNEXT 9] x\r\n"
			 "* OK [HIGHESTMODSEQ 1234567890123] x\r\n"
			 "A0004 OK [READ-WRITE] done\r\n") ||
	    !srv_expect(v, "A0005 UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE MODSEQ) "
			   "(CHANGEDSINCE 77)\r\n") ||
	    !srv_send(v, "* 1 FETCH (UID 4 FLAGS (\\Seen $Label1) RFC822.SIZE 100 "
			 "INTERNALDATE \" 7-Jul-1996 02:44:25 -0700\" MODSEQ (80))\r\n"
			 "* 2 FETCH (FLAGS ())\r\n" /* unsolicited, no UID: ignored */
			 "* 2 FETCH (UID 6 FLAGS () RFC822.SIZE 5 INTERNALDATE "
			 "\"01-Jan-2020 00:00:00 +0130\" MODSEQ (81))\r\n"
			 "A0005 OK done\r\n") ||
	    !srv_expect(v, "A0006 UID STORE 4,6 -FLAGS.SILENT (\\Seen $Label1)\r\n") ||
	    !srv_send(v, "A0006 OK done\r\n") ||
	    !srv_expect(v, "A0007 UID EXPUNGE 4\r\n") ||
	    !srv_send(v, "* 1 EXPUNGE\r\nA0007 OK done\r\n") ||
	    !srv_expect(v, "A0008 APPEND {6}\r\n") || /* 8-bit name: a literal */
	    !srv_send(v, "+ go\r\n") ||
	    !srv_expect(v, "Tr\xc3\xa4sh (\\Seen) \"01-Jan-2020 00:00:00 +0000\" {12}\r\n") ||
	    !srv_send(v, "+ go on\r\n") ||
	    !srv_expect(v, "a\r\n* OK x\r\nb\r\n") ||
	    !srv_send(v, "A0008 OK [APPENDUID 42 10] done\r\n") ||
	    !srv_expect(v, "A0009 UNSELECT\r\n") ||
	    !srv_send(v, "A0009 OK done\r\n") ||
	    !srv_expect(v, "A0010 LOGOUT\r\n"))
		return;
	srv_send(v, "* BYE bye\r\nA0010 OK done\r\n");
}

struct meta_rec {
	char text[1024];
	size_t len;
};

static int rec_meta(void *ctx, const struct imap_msg_meta *m)
{
	struct meta_rec *r = ctx;

	r->len += (size_t)snprintf(r->text + r->len, sizeof(r->text) - r->len,
				   "%u:%u:%s:%llu:%lld:%d:%llu;", m->uid, m->have,
				   m->flags ? m->flags : "-", (unsigned long long)m->size,
				   (long long)m->internaldate, m->internaldate_tz_minutes,
				   (unsigned long long)m->modseq);
	return 0;
}

static int rec_vanished(void *ctx, uint32_t lo, uint32_t hi)
{
	struct meta_rec *r = ctx;

	r->len += (size_t)snprintf(r->text + r->len, sizeof(r->text) - r->len, "V%u-%u;", lo, hi);
	return 0;
}

static void test_transcript_basic(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_select_info si;
	struct imap_error err;
	struct meta_rec rec = { 0 };
	uint32_t v = 0, u = 0;
	struct srv *srv;
	int fd;

	(void)state;
	p.password = "p\"a\\ss";
	srv = srv_start(srv_transcript_basic, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_true(imap_session_has_cap(s, "uidplus"));
	assert_false(imap_session_has_cap(s, "MOVE"));
	assert_int_equal(imap_select(s, "a \"b\"", false, &si, &err), 0);
	assert_int_equal(si.uidvalidity, 42);
	assert_int_equal(si.uidnext, 9);
	assert_int_equal(si.exists, 3);
	assert_true(si.highestmodseq == 1234567890123ull);
	assert_false(si.read_only);
	assert_string_equal(si.permanent_flags, "\\Seen \\Deleted \\*");
	assert_string_equal(imap_session_selected(s), "a \"b\"");
	assert_int_equal(imap_uid_fetch_meta(s, "1:*",
					     IMAP_META_FLAGS | IMAP_META_SIZE |
						     IMAP_META_INTERNALDATE | IMAP_META_MODSEQ,
					     77, rec_meta, rec_vanished, &rec, &err),
			 0);
	assert_string_equal(rec.text, "4:15:\\Seen $Label1:100:836732665:-420:80;"
				      "6:15::5:1577831400:90:81;");
	assert_int_equal(imap_uid_store(s, "4,6", IMAP_STORE_REMOVE, "\\Seen $Label1", &err), 0);
	assert_int_equal(imap_uid_expunge(s, "4", &err), 0);
	assert_int_equal(imap_append(s, "Tr\xc3\xa4sh", "\\Seen", 1577836800, "a\r\n* OK x\r\nb", 12,
				     &v, &u, &err),
			 0);
	assert_int_equal(v, 42);
	assert_int_equal(u, 10);
	assert_int_equal(imap_unselect(s, &err), 0);
	assert_null(imap_session_selected(s));
	imap_session_close(s);
	srv_finish(srv);
}

/* Invalid arguments are refused before anything is sent. */
static void srv_local_errors(struct srv *v)
{
	if (!srv_login(v, "X-NONE") || !srv_expect(v, "A0002 NOOP\r\n") ||
	    !srv_send(v, "A0002 OK done\r\n") || !srv_expect(v, "A0003 LOGOUT\r\n"))
		return;
	srv_send(v, "* BYE x\r\nA0003 OK done\r\n");
}

static void test_local_errors(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	struct srv *srv;
	int fd;

	(void)state;
	srv = srv_start(srv_local_errors, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_uid_store(s, "1 2", IMAP_STORE_ADD, "\\Seen", &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL);
	assert_int_equal(imap_uid_store(s, "1", IMAP_STORE_ADD, "\\Seen)(", &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL);
	assert_int_equal(imap_uid_expunge(s, "1\r\nA1 DELETE INBOX", &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL);
	assert_int_equal(imap_uid_fetch_meta(s, "1:*", 0, 5, rec_meta, NULL, NULL, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL); /* CHANGEDSINCE without CONDSTORE */
	assert_int_equal(imap_uid_expunge(s, "1", &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL); /* no UIDPLUS: never a bare EXPUNGE */
	assert_int_equal(imap_uid_move(s, 1, "x", NULL, NULL, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL); /* neither MOVE nor UIDPLUS */
	assert_int_equal(imap_append(s, "INBOX", "\\Seen (", -1, "x", 1, NULL, NULL, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL);
	assert_int_equal(imap_select(s, NULL, false, NULL, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL);
	assert_false(imap_session_is_broken(s));
	assert_int_equal(imap_noop(s, &err), 0); /* the first thing the server sees */
	imap_session_close(s);
	srv_finish(srv);
}

/* ------------------------------------------------------------------ */
/* STARTTLS */

static void srv_starttls_injection(struct srv *v)
{
	if (!srv_send(v, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n") ||
	    !srv_expect(v, "A0001 STARTTLS\r\n"))
		return;
	/* the tagged OK and an injected response in one segment */
	srv_send(v, "A0001 OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] x\r\n");
}

static void test_starttls_injection(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_STARTTLS);
	struct imap_session *s = NULL;
	struct imap_error err;
	struct srv *srv;
	int fd;

	(void)state;
	srv = srv_start(srv_starttls_injection, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), -1);
	assert_null(s);
	assert_int_equal(err.kind, IMAP_ERR_TLS);
	assert_non_null(strstr(err.reason, "after the STARTTLS reply"));
	srv_join(srv);
	assert_false(srv->failed);
	/* no handshake, no credentials: nothing after STARTTLS */
	assert_int_equal(srv->after_len, 0);
	srv_free(srv);
}

static void srv_preauth(struct srv *v)
{
	srv_send(v, "* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] welcome\r\n");
}

static void srv_no_starttls(struct srv *v)
{
	srv_send(v, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
}

static void srv_no_starttls_nocaps(struct srv *v)
{
	if (!srv_send(v, "* OK hi\r\n") || !srv_expect(v, "A0001 CAPABILITY\r\n"))
		return;
	srv_send(v, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nA0001 OK done\r\n");
}

static void srv_starttls_refused(struct srv *v)
{
	if (!srv_send(v, "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n") ||
	    !srv_expect(v, "A0001 STARTTLS\r\n"))
		return;
	srv_send(v, "A0001 NO not today\r\n");
}

/* Each of these must fail with a TLS error and send no credentials. */
static void check_starttls_refused(void (*fn)(struct srv *v), const char *reason_part)
{
	struct imap_params p = test_params(IMAP_TLS_STARTTLS);
	struct imap_session *s = NULL;
	struct imap_error err;
	struct srv *srv;
	int fd;

	srv = srv_start(fn, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), -1);
	assert_null(s);
	assert_int_equal(err.kind, IMAP_ERR_TLS);
	if (!strstr(err.reason, reason_part))
		fail_msg("reason \"%s\"", err.reason);
	srv_join(srv);
	if (srv->after_len)
		fail_msg("sent after the refusal: %s", srv->after);
	assert_false(srv->failed);
	srv_free(srv);
}

static void test_starttls_refusals(void **state)
{
	(void)state;
	check_starttls_refused(srv_preauth, "PREAUTH");
	check_starttls_refused(srv_no_starttls, "does not offer STARTTLS");
	check_starttls_refused(srv_no_starttls_nocaps, "does not offer STARTTLS");
	check_starttls_refused(srv_starttls_refused, "STARTTLS NO");
}

/* ------------------------------------------------------------------ */
/* hostile servers during a command (plaintext) */

struct hostile {
	const char *reply;  /* sent in answer to A0002 NOOP */
	size_t reply_len;   /* 0: strlen */
	int endless;        /* 1: endless line, 2: endless untagged, 3: endless literal */
	bool hold;          /* keep the connection open until the client closes */
};

static void srv_hostile(struct srv *v)
{
	const struct hostile *h = v->arg;

	if (!srv_login(v, "UIDPLUS") || !srv_expect(v, "A0002 NOOP\r\n"))
		return;
	if (h->reply && !srv_send_n(v, h->reply, h->reply_len ? h->reply_len : strlen(h->reply)))
		return;
	if (h->endless) {
		size_t chunk = 64 * 1024, total = 0;
		char *buf = malloc(chunk);

		if (h->endless == 2) {
			for (size_t i = 0; i + 12 <= chunk; i += 12)
				memcpy(buf + i, "* 1 RECENT\r\n", 12);
			chunk -= chunk % 12;
		} else {
			memset(buf, 'a', chunk);
		}
		/* until the client gives up and closes (100 MB at most) */
		while (total < 100u * 1024 * 1024 && srv_send_n(v, buf, chunk))
			total += chunk;
		free(buf);
	}
	if (h->hold)
		srv_drain(v);
}

static void check_hostile(const struct hostile *h, const struct imap_limits *lim,
			  enum imap_error_kind kind, const char *reason_part)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	struct srv *srv;
	long before, after;
	int fd;

	if (lim)
		p.limits = *lim;
	srv = srv_start(srv_hostile, h, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	before = peak_rss_kib(true);
	assert_int_equal(imap_noop(s, &err), -1);
	after = peak_rss_kib(false);
	assert_int_equal(err.kind, kind);
	if (!strstr(err.reason, reason_part))
		fail_msg("reason \"%s\", expected \"%s\"", err.reason, reason_part);
	assert_true(imap_session_is_broken(s));
	/* every later call fails at once */
	assert_int_equal(imap_noop(s, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_CLOSED);
	imap_session_close(s); /* closes the socket: the server's writes fail */
	srv_finish(srv);
	/* bounded memory: nowhere near the 100 MB the server offered */
	if (before > 0 && after > 0 && after - before > 48 * 1024)
		fail_msg("peak RSS grew by %ld KiB", after - before);
}

static void test_hostile_literal_sizes(void **state)
{
	struct hostile h = { 0 };

	(void)state;
	h.reply = "* 1 FETCH (BODY[] {4294967296}\r\n";
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "exceeds the limit");
	h.reply = "* 1 FETCH (BODY[] {-1}\r\n";
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "invalid literal size");
	h.reply = "* 1 FETCH (BODY[] {99999999999999999999999}\r\n";
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "64 bits");
	/* a literal nobody streams is buffered only up to the limit */
	h.reply = "* LIST () \"/\" {2000000}\r\n";
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "in-memory limit");
}

static void test_hostile_endless_line(void **state)
{
	struct hostile h = { .reply = "* OK ", .endless = 1 };

	(void)state;
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "longer than 65536");
}

static void test_hostile_endless_untagged(void **state)
{
	struct hostile h = { .endless = 2 };
	struct imap_limits lim = { .max_untagged = 10000 };

	(void)state;
	check_hostile(&h, &lim, IMAP_ERR_PROTOCOL, "more than 10000 untagged");
}

static void test_hostile_endless_literal(void **state)
{
	/* a 256 MiB body literal to a NOOP: nobody asked for it, so it would
	 * have to be buffered: refused before a byte of it is kept */
	struct hostile h = { .reply = "* 1 FETCH (BODY[] {268435456}\r\n", .endless = 3 };

	(void)state;
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "in-memory limit");
}

static void test_hostile_protocol(void **state)
{
	struct hostile h = { 0 };

	(void)state;
	h.reply = "A9999 OK who?\r\n";
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "unknown tag \"A9999\"");
	h.reply = "A0001 OK again\r\n"; /* an old tag */
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "unknown tag \"A0001\"");
	h.reply = "+ send more\r\n";
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "unexpected continuation");
	h.reply = "* BYE shutting down\r\n";
	check_hostile(&h, NULL, IMAP_ERR_CLOSED, "shutting down");
	h.reply = "* 1 FETCH (UID 1 BODY[] {5}\r\nab";
	check_hostile(&h, NULL, IMAP_ERR_CLOSED, "closed the connection");
	h.reply = "A0002 FETCH done\r\n";
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "not OK, NO or BAD");
	h.reply = "* 1 EXPUNGE\r\n"; /* nothing selected: nothing to expunge */
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "EXPUNGE");
	h.reply = "* OK \0\r\n";
	h.reply_len = 8;
	check_hostile(&h, NULL, IMAP_ERR_PROTOCOL, "NUL");
}

static void test_timeout(void **state)
{
	struct hostile h = { .hold = true };
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	struct srv *srv;
	int fd;

	(void)state;
	p.io_timeout_ms = 200; /* the server never answers the NOOP */
	srv = srv_start(srv_hostile, &h, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_noop(s, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_TIMEOUT);
	assert_true(imap_session_is_broken(s));
	imap_session_close(s);
	srv_finish(srv);
}

/* ------------------------------------------------------------------ */
/* pipelining: replies out of order */

static void srv_out_of_order(struct srv *v)
{
	if (!srv_login(v, "UIDPLUS") || !srv_expect(v, "A0002 NOOP\r\nA0003 NOOP\r\nA0004 NOOP\r\n") ||
	    !srv_send(v, "* 5 EXISTS\r\nA0003 OK second\r\nA0004 OK third\r\nA0002 OK first\r\n") ||
	    !srv_expect(v, "A0005 NOOP\r\nA0006 NOOP\r\n") ||
	    !srv_send(v, "A0006 NO [ALERT] nope\r\nA0005 OK fine\r\n") ||
	    !srv_expect(v, "A0007 NOOP\r\nA0008 NOOP\r\n") ||
	    !srv_send(v, "A0007 NO first\r\n* 6 EXISTS\r\nA0008 OK second\r\n") ||
	    !srv_expect(v, "A0009 NOOP\r\n") || !srv_send(v, "A0009 OK done\r\n") ||
	    !srv_expect(v, "A0010 LOGOUT\r\n"))
		return;
	srv_send(v, "A0010 OK done\r\n"); /* no BYE: fine too */
}

static void test_out_of_order(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	struct srv *srv;
	int fd;

	(void)state;
	srv = srv_start(srv_out_of_order, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_session_noop_pipelined(s, 3, &err), 0);
	assert_int_equal(imap_session_noop_pipelined(s, 2, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_NO);
	assert_false(imap_session_is_broken(s));
	/* the first fails: the second's reply is still read, no tag left over */
	assert_int_equal(imap_session_noop_pipelined(s, 2, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_NO);
	assert_non_null(strstr(err.reason, "first"));
	assert_int_equal(imap_noop(s, &err), 0);
	imap_session_close(s);
	srv_finish(srv);
}

/* ------------------------------------------------------------------ */
/* bodies: streamed, in chunks, literal content that looks like protocol */

#define BIG_BODY (3 * 1024 * 1024 + 17)

static void srv_bodies(struct srv *v)
{
	char hdr[128];
	char *big = malloc(BIG_BODY);

	for (size_t i = 0; i < BIG_BODY; i++)
		big[i] = (char)("* OK x\r\n+ y\r\n"[i % 13]);
	if (!srv_login(v, "UIDPLUS") ||
	    !srv_expect(v, "A0002 UID FETCH 3:5,9 (UID BODY.PEEK[])\r\n"))
		goto out;
	snprintf(hdr, sizeof(hdr), "* 1 FETCH (UID 3 BODY[] {%d}\r\n", BIG_BODY);
	if (!srv_send(v, hdr) || !srv_send_n(v, big, BIG_BODY / 2) ||
	    !srv_send_n(v, big + BIG_BODY / 2, BIG_BODY - BIG_BODY / 2) ||
	    !srv_send(v, " FLAGS (\\Seen))\r\n"
			 "* 2 FETCH (FLAGS (\\Seen))\r\n"          /* unsolicited */
			 "* 3 FETCH (BODY[] {4}\r\nA1 O UID 5)\r\n" /* UID after the body */
			 "* 4 FETCH (UID 9 BODY[] \"quoted\")\r\n"
			 "A0002 OK done\r\n") ||
	    !srv_expect(v, "A0003 UID FETCH 9 (UID BODY.PEEK[]<100.50>)\r\n") ||
	    !srv_send(v, "* 4 FETCH (UID 9 BODY[]<100> {3}\r\nxyz)\r\nA0003 OK done\r\n") ||
	    !srv_expect(v, "A0004 UID FETCH 1:* (UID BODY.PEEK[])\r\n") ||
	    !srv_send(v, "* 1 FETCH (UID 3 BODY[] {10}\r\n0123456789)\r\n"
			 "* 2 FETCH (UID 4 BODY[] {3}\r\nabc)\r\nA0004 OK done\r\n") ||
	    !srv_expect(v, "A0005 NOOP\r\n") || !srv_send(v, "A0005 OK done\r\n") ||
	    !srv_expect(v, "A0006 LOGOUT\r\n"))
		goto out;
	srv_send(v, "* BYE\r\nA0006 OK done\r\n");
out:
	free(big);
}

struct sink_rec {
	char log[512];
	size_t log_len;
	size_t max_chunk;
	uint64_t got;
	uint32_t hash;
	int stop_after; /* stop delivery at this begin (1-based), 0: never */
	int begins;
};

static int sink_begin(void *ctx, uint32_t uid, uint64_t offset, uint64_t size)
{
	struct sink_rec *r = ctx;

	r->begins++;
	r->got = 0;
	r->hash = 2166136261u;
	r->log_len += (size_t)snprintf(r->log + r->log_len, sizeof(r->log) - r->log_len,
				       "B%u@%llu+%llu;", uid, (unsigned long long)offset,
				       (unsigned long long)size);
	return r->stop_after && r->begins >= r->stop_after;
}

static int sink_data(void *ctx, uint32_t uid, const void *buf, size_t len)
{
	struct sink_rec *r = ctx;
	const unsigned char *p = buf;

	if (len > r->max_chunk)
		r->max_chunk = len;
	r->got += len;
	for (size_t i = 0; i < len; i++)
		r->hash = (r->hash ^ p[i]) * 16777619u;
	return 0;
}

static int sink_end(void *ctx, uint32_t uid)
{
	struct sink_rec *r = ctx;

	r->log_len += (size_t)snprintf(r->log + r->log_len, sizeof(r->log) - r->log_len,
				       "E%u:%llu:%08x;", uid, (unsigned long long)r->got, r->hash);
	return 0;
}

static uint32_t fnv(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static void test_bodies(void **state)
{
	static const struct imap_body_sink sink = { sink_begin, sink_data, sink_end };
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	struct sink_rec rec = { 0 };
	char expect[512];
	char *big = malloc(BIG_BODY);
	struct srv *srv;
	int fd;

	(void)state;
	for (size_t i = 0; i < BIG_BODY; i++)
		big[i] = (char)("* OK x\r\n+ y\r\n"[i % 13]);
	srv = srv_start(srv_bodies, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_uid_fetch_bodies(s, "3:5,9", 0, 0, &sink, &rec, &err), 0);
	snprintf(expect, sizeof(expect),
		 "B3@0+%d;E3:%d:%08x;B5@0+4;E5:4:%08x;B9@0+6;E9:6:%08x;", BIG_BODY, BIG_BODY,
		 fnv(big, BIG_BODY), fnv("A1 O", 4), fnv("quoted", 6));
	assert_string_equal(rec.log, expect);
	/* streamed in pieces, never the whole body at once */
	assert_true(rec.max_chunk <= 64 * 1024);

	memset(&rec, 0, sizeof(rec));
	assert_int_equal(imap_uid_fetch_bodies(s, "9", 100, 50, &sink, &rec, &err), 0);
	snprintf(expect, sizeof(expect), "B9@100+3;E9:3:%08x;", fnv("xyz", 3));
	assert_string_equal(rec.log, expect);

	/* the caller stops at the first body: no more callbacks, LOCAL, usable */
	memset(&rec, 0, sizeof(rec));
	rec.stop_after = 1;
	assert_int_equal(imap_uid_fetch_bodies(s, "1:*", 0, 0, &sink, &rec, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL);
	assert_string_equal(rec.log, "B3@0+10;");
	assert_false(imap_session_is_broken(s));
	assert_int_equal(imap_noop(s, &err), 0);
	imap_session_close(s);
	srv_finish(srv);
	free(big);
}

/* ------------------------------------------------------------------ */
/* synchronising literal refused, AUTHENTICATE PLAIN, trace redaction */

static void srv_literal_refused(struct srv *v)
{
	if (!srv_login(v, "UIDPLUS") || !srv_expect(v, "A0002 APPEND INBOX {5}\r\n") ||
	    !srv_send(v, "A0002 NO [TOOBIG] too big\r\n") || !srv_expect(v, "A0003 NOOP\r\n") ||
	    !srv_send(v, "A0003 OK done\r\n") || !srv_expect(v, "A0004 LOGOUT\r\n"))
		return;
	srv_send(v, "A0004 OK done\r\n");
}

static void test_literal_refused(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	struct srv *srv;
	uint32_t v = 1, u = 1;
	int fd;

	(void)state;
	srv = srv_start(srv_literal_refused, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_append(s, "INBOX", NULL, -1, "hello", 5, &v, &u, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_NO);
	assert_string_equal(err.code, "TOOBIG");
	assert_int_equal(v, 0);
	assert_int_equal(u, 0);
	assert_int_equal(imap_noop(s, &err), 0);
	imap_session_close(s);
	srv_finish(srv);
}

static void srv_auth_plain(struct srv *v)
{
	/* base64("joe\0joe\0secret") */
	if (!srv_send(v, "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=PLAIN] hi\r\n") ||
	    !srv_expect(v, "A0001 AUTHENTICATE PLAIN\r\n") || !srv_send(v, "+ \r\n") ||
	    !srv_expect(v, "am9lAGpvZQBzZWNyZXQ=\r\n") ||
	    !srv_send(v, "A0001 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"))
		return;
}

static void test_auth_plain(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s = NULL;
	struct imap_error err;
	struct srv *srv;
	int fd;

	(void)state;
	srv = srv_start(srv_auth_plain, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_AUTH);
	assert_string_equal(err.code, "AUTHENTICATIONFAILED");
	srv_finish(srv);
}

static void srv_trace(struct srv *v)
{
	if (!srv_send(v, "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n") ||
	    !srv_expect(v, "A0001 LOGIN joe {11+}\r\nse cr\r\net\xc3\xa4\r\n") ||
	    !srv_send(v, "A0001 OK [CAPABILITY IMAP4rev1 LITERAL+] in\r\n") ||
	    !srv_expect(v, "A0002 APPEND INBOX {9+}\r\nsecretmsg\r\n") ||
	    !srv_send(v, "A0002 OK done\r\n") || !srv_expect(v, "A0003 LOGOUT\r\n"))
		return;
	srv_send(v, "A0003 OK done\r\n");
}

static void test_trace_redacted(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	char path[] = "/tmp/imap-trace-XXXXXX";
	char buf[8192];
	struct srv *srv;
	int fd, tfd, saved;
	ssize_t n;

	(void)state;
	p.password = "se cr\r\net\xc3\xa4";
	p.trace = true;
	tfd = mkstemp(path);
	assert_true(tfd >= 0);
	unlink(path);
	saved = dup(STDERR_FILENO);
	dup2(tfd, STDERR_FILENO);
	log_init("test", LOG_LEVEL_TRACE, false);

	srv = srv_start(srv_trace, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_append(s, "INBOX", NULL, -1, "secretmsg", 9, NULL, NULL, &err), 0);
	imap_session_close(s);
	srv_finish(srv);

	log_init("test", LOG_LEVEL_WARN, false);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(tfd, buf, sizeof(buf) - 1, 0);
	close(tfd);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "C: A0001 LOGIN <redacted> <redacted>"));
	assert_non_null(strstr(buf, "C: A0002 APPEND INBOX {9 bytes}"));
	assert_non_null(strstr(buf, "S: A0002 OK done"));
	assert_null(strstr(buf, "se cr"));
	assert_null(strstr(buf, "joe"));
	assert_null(strstr(buf, "secretmsg"));
}

/* ------------------------------------------------------------------ */
/* a callback that stops: the command is read to its end, LOCAL, usable */

static void srv_meta_stop(struct srv *v)
{
	if (!srv_login(v, "UIDPLUS CONDSTORE ENABLE QRESYNC") ||
	    !srv_expect(v, "A0002 ENABLE QRESYNC\r\n") ||
	    !srv_send(v, "* ENABLED QRESYNC\r\nA0002 OK on\r\n") ||
	    !srv_expect(v, "A0003 UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 9 VANISHED)\r\n") ||
	    !srv_send(v, "* VANISHED (EARLIER) 3:4,8\r\n"
			 "* 1 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (10))\r\n"
			 "* 2 FETCH (UID 6 FLAGS () MODSEQ (11))\r\n"
			 "* VANISHED 9\r\n"
			 "A0003 OK done\r\n") ||
	    !srv_expect(v, "A0004 LIST \"\" \"*\"\r\n") ||
	    !srv_send(v, "* LIST (\\HasNoChildren \\Sent) \"/\" {5}\r\nSe nt\r\n"
			 "* LIST (\\Noselect) NIL NIL\r\n"
			 "* LIST (\\Noselect) NIL Other\r\n"
			 "A0004 OK done\r\n") ||
	    !srv_expect(v, "A0005 NOOP\r\n") || !srv_send(v, "A0005 OK done\r\n") ||
	    !srv_expect(v, "A0006 LOGOUT\r\n"))
		return;
	srv_send(v, "A0006 OK done\r\n");
}

static int stop_meta(void *ctx, const struct imap_msg_meta *m)
{
	struct meta_rec *r = ctx;

	rec_meta(ctx, m);
	return r->len > 0;
}

static int list_first(void *ctx, const struct imap_mailbox_info *m)
{
	struct meta_rec *r = ctx;

	r->len += (size_t)snprintf(r->text + r->len, sizeof(r->text) - r->len, "%s|%c|%x;",
				   m->name, m->delimiter ? m->delimiter : '0', m->attrs);
	return strcmp(m->name, "NIL") == 0; /* a mailbox named NIL: stop there */
}

static void test_callback_stop(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	struct meta_rec rec = { 0 };
	struct srv *srv;
	int fd;

	(void)state;
	srv = srv_start(srv_meta_stop, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	/* the VANISHED range is delivered, then the first message stops it all */
	assert_int_equal(imap_uid_fetch_meta(s, "1:*", IMAP_META_FLAGS, 9, stop_meta, rec_vanished,
					     &rec, &err),
			 -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL);
	assert_string_equal(rec.text, "V3-4;V8-8;5:9:\\Seen:0:0:0:10;");
	assert_false(imap_session_is_broken(s));
	memset(&rec, 0, sizeof(rec));
	assert_int_equal(imap_list(s, "", "*", list_first, &rec, &err), -1);
	assert_int_equal(err.kind, IMAP_ERR_LOCAL);
	assert_string_equal(rec.text, "Se nt|/|2010;NIL|0|1;");
	assert_int_equal(imap_noop(s, &err), 0);
	imap_session_close(s);
	srv_finish(srv);
}

/* ------------------------------------------------------------------ */
/* APPEND dates IMAP cannot carry: no date (the server's time), never a
 * garbage one (gmtime_r fails for INT64_MAX: its struct tm was read
 * uninitialised, month_names[] indexed out of bounds) */

static void srv_append_dates(struct srv *v)
{
	if (!srv_login(v, "LITERAL+ UIDPLUS") ||
	    !srv_expect(v, "A0002 APPEND INBOX \"31-Dec-9999 23:59:59 +0000\" {1+}\r\nx\r\n") ||
	    !srv_send(v, "A0002 OK done\r\n") ||
	    !srv_expect(v, "A0003 APPEND INBOX {1+}\r\nx\r\n") ||
	    !srv_send(v, "A0003 OK done\r\n") ||
	    !srv_expect(v, "A0004 APPEND INBOX {1+}\r\nx\r\n") ||
	    !srv_send(v, "A0004 OK done\r\n") ||
	    !srv_expect(v, "A0005 LOGOUT\r\n"))
		return;
	srv_send(v, "* BYE\r\nA0005 OK done\r\n");
}

static void test_append_date_range(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	struct srv *srv;
	int fd;

	(void)state;
	srv = srv_start(srv_append_dates, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_append(s, "INBOX", NULL, INT64_C(253402300799), "x", 1, NULL, NULL,
				     &err),
			 0);
	assert_int_equal(imap_append(s, "INBOX", NULL, INT64_C(253402300800), "x", 1, NULL, NULL,
				     &err),
			 0);
	assert_int_equal(imap_append(s, "INBOX", NULL, INT64_MAX, "x", 1, NULL, NULL, &err), 0);
	imap_session_close(s);
	srv_finish(srv);
}

/* ------------------------------------------------------------------ */
/* 63-bit numbers: RFC822.SIZE, MODSEQ, HIGHESTMODSEQ up to 2^63-1 are
 * taken, 2^63 (which would turn negative in an off_t or the cache) is a
 * protocol error */

#define SELECT_TAIL "* 1 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n"

/* after login: pairs of (expected command, reply), NULL-terminated */
static void srv_pairs(struct srv *v)
{
	const char *const *pairs = v->arg;

	if (!srv_login(v, "CONDSTORE"))
		return;
	for (; pairs[0]; pairs += 2)
		if (!srv_expect(v, pairs[0]) || !srv_send(v, pairs[1]))
			return;
}

static void test_number64_bounds(void **state)
{
	static const char *const ok[] = {
		"A0002 SELECT INBOX (CONDSTORE)\r\n",
		SELECT_TAIL "* OK [HIGHESTMODSEQ 9223372036854775807] x\r\nA0002 OK done\r\n",
		"A0003 UID FETCH 1 (UID RFC822.SIZE MODSEQ)\r\n",
		"* 1 FETCH (UID 1 RFC822.SIZE 9223372036854775807 MODSEQ (9223372036854775807))\r\n"
		"A0003 OK done\r\n",
		"A0004 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)\r\n",
		"* STATUS INBOX (HIGHESTMODSEQ 9223372036854775807)\r\nA0004 OK done\r\n",
		"A0005 LOGOUT\r\n",
		"* BYE\r\nA0005 OK done\r\n",
		NULL,
	};
	static const char *const bad_select[] = {
		"A0002 SELECT INBOX (CONDSTORE)\r\n",
		SELECT_TAIL "* OK [HIGHESTMODSEQ 9223372036854775808] x\r\nA0002 OK done\r\n",
		NULL,
	};
	static const char *const bad_size[] = {
		"A0002 UID FETCH 1 (UID RFC822.SIZE MODSEQ)\r\n",
		"* 1 FETCH (UID 1 RFC822.SIZE 9223372036854775808 MODSEQ (1))\r\nA0002 OK done\r\n",
		NULL,
	};
	static const char *const bad_modseq[] = {
		"A0002 UID FETCH 1 (UID RFC822.SIZE MODSEQ)\r\n",
		"* 1 FETCH (UID 1 RFC822.SIZE 1 MODSEQ (18446744073709551615))\r\nA0002 OK done\r\n",
		NULL,
	};
	static const char *const bad_status[] = {
		"A0002 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)\r\n",
		"* STATUS INBOX (HIGHESTMODSEQ 9223372036854775808)\r\nA0002 OK done\r\n",
		NULL,
	};
	const char *const *bad[] = { bad_select, bad_size, bad_modseq, bad_status };
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_select_info si;
	struct imap_status_info st;
	struct imap_session *s;
	struct imap_error err;
	struct meta_rec rec = { 0 };
	struct srv *srv;
	int fd, r;

	(void)state;
	srv = srv_start(srv_pairs, ok, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_select(s, "INBOX", false, &si, &err), 0);
	assert_true(si.highestmodseq == (uint64_t)INT64_MAX);
	assert_int_equal(imap_uid_fetch_meta(s, "1", IMAP_META_SIZE | IMAP_META_MODSEQ, 0, rec_meta,
					     NULL, &rec, &err),
			 0);
	assert_string_equal(rec.text, "1:10:-:9223372036854775807:0:0:9223372036854775807;");
	assert_int_equal(imap_status(s, "INBOX", &st, &err), 0);
	assert_true(st.highestmodseq == (uint64_t)INT64_MAX);
	imap_session_close(s);
	srv_finish(srv);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		srv = srv_start(srv_pairs, bad[i], &fd);
		assert_int_equal(open_session(fd, &p, &s, &err), 0);
		memset(&rec, 0, sizeof(rec));
		if (i == 0)
			r = imap_select(s, "INBOX", false, &si, &err);
		else if (i == 3)
			r = imap_status(s, "INBOX", &st, &err);
		else
			r = imap_uid_fetch_meta(s, "1", IMAP_META_SIZE | IMAP_META_MODSEQ, 0,
						rec_meta, NULL, &rec, &err);
		if (r != -1 || err.kind != IMAP_ERR_PROTOCOL)
			fail_msg("case %zu: %d, kind %d, \"%s\"", i, r, err.kind, err.reason);
		assert_int_equal(rec.len, 0);
		assert_true(imap_session_is_broken(s));
		imap_session_close(s);
		srv_finish(srv);
	}
}

/* GETQUOTAROOT: two roots, the one with less storage left wins; MESSAGE
 * apart; unknown resources skipped; malformed QUOTA ends the session */
static void test_getquotaroot(void **state)
{
	static const char *const ok[] = {
		"A0002 GETQUOTAROOT INBOX\r\n",
		"* QUOTAROOT INBOX \"User quota\" shared\r\n"
		"* QUOTA \"User quota\" (STORAGE 10 1000 MESSAGE 5 100)\r\n"
		"* QUOTA shared (STORAGE 900 950 X-OTHER 1 2)\r\n"
		"A0002 OK done\r\n",
		"A0003 GETQUOTAROOT Other\r\n",
		"* QUOTAROOT Other\r\nA0003 OK no quota\r\n",
		"A0004 LOGOUT\r\n",
		"* BYE\r\nA0004 OK done\r\n",
		NULL,
	};
	static const char *const bad_odd[] = {
		"A0002 GETQUOTAROOT INBOX\r\n",
		"* QUOTA r (STORAGE 10)\r\nA0002 OK done\r\n",
		NULL,
	};
	static const char *const bad_number[] = {
		"A0002 GETQUOTAROOT INBOX\r\n",
		"* QUOTA r (STORAGE 10 9223372036854775808)\r\nA0002 OK done\r\n",
		NULL,
	};
	static const char *const bad_shape[] = {
		"A0002 GETQUOTAROOT INBOX\r\n",
		"* QUOTA r STORAGE\r\nA0002 OK done\r\n",
		NULL,
	};
	static const char *const bad_name[] = {
		"A0002 GETQUOTAROOT INBOX\r\n",
		"* QUOTA r ((STORAGE) 1 2)\r\nA0002 OK done\r\n",
		NULL,
	};
	const char *const *bad[] = { bad_odd, bad_number, bad_shape, bad_name };
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_quota_info q;
	struct imap_session *s;
	struct imap_error err;
	struct srv *srv;
	int fd;

	(void)state;
	srv = srv_start(srv_pairs, ok, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_getquotaroot(s, "INBOX", &q, &err), 0);
	assert_true(q.have_storage);
	assert_int_equal(q.storage_used, 900);
	assert_int_equal(q.storage_limit, 950);
	assert_true(q.have_messages);
	assert_int_equal(q.messages_used, 5);
	assert_int_equal(q.messages_limit, 100);
	assert_int_equal(imap_getquotaroot(s, "Other", &q, &err), 0);
	assert_false(q.have_storage);
	assert_false(q.have_messages);
	imap_session_close(s);
	srv_finish(srv);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		srv = srv_start(srv_pairs, bad[i], &fd);
		assert_int_equal(open_session(fd, &p, &s, &err), 0);
		if (imap_getquotaroot(s, "INBOX", &q, &err) != -1 || err.kind != IMAP_ERR_PROTOCOL)
			fail_msg("case %zu: kind %d, \"%s\"", i, err.kind, err.reason);
		assert_true(imap_session_is_broken(s));
		imap_session_close(s);
		srv_finish(srv);
	}
}

/* ------------------------------------------------------------------ */
/* server text reaches the log (the -d trace, [ALERT]) without terminal
 * control characters: an escape sequence or BEL is shown as '?' */

static void srv_control_chars(struct srv *v)
{
	if (!srv_login(v, "X-NONE") || !srv_expect(v, "A0002 NOOP\r\n") ||
	    !srv_send(v, "* OK [ALERT] \x1b]0;owned\x07 \x1b[2Jgone\x7f\r\nA0002 OK done\r\n") ||
	    !srv_expect(v, "A0003 LOGOUT\r\n"))
		return;
	srv_send(v, "* BYE\r\nA0003 OK done\r\n");
}

static void test_log_control_chars(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	struct imap_session *s;
	struct imap_error err;
	char path[] = "/tmp/imap-trace-XXXXXX";
	char buf[8192];
	struct srv *srv;
	int fd, tfd, saved;
	ssize_t n;

	(void)state;
	p.trace = true;
	tfd = mkstemp(path);
	assert_true(tfd >= 0);
	unlink(path);
	saved = dup(STDERR_FILENO);
	dup2(tfd, STDERR_FILENO);
	log_init("test", LOG_LEVEL_TRACE, false);

	srv = srv_start(srv_control_chars, NULL, &fd);
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	assert_int_equal(imap_noop(s, &err), 0);
	imap_session_close(s);
	srv_finish(srv);

	log_init("test", LOG_LEVEL_WARN, false);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(tfd, buf, sizeof(buf) - 1, 0);
	close(tfd);
	assert_true(n > 0);
	buf[n] = '\0';
	/* the trace line and the warning, both sanitised */
	assert_non_null(strstr(buf, "S: * OK [ALERT] ?]0;owned? ?[2Jgone?\n"));
	assert_non_null(strstr(buf, "says: ?]0;owned? ?[2Jgone?\n"));
	for (ssize_t i = 0; i < n; i++)
		if (((unsigned char)buf[i] < 0x20 && buf[i] != '\n') || buf[i] == 0x7f)
			fail_msg("control character 0x%02x at %zd", (unsigned char)buf[i], i);
}

/* ------------------------------------------------------------------ */
/* the password leaves no unwiped copy in freed memory: this program is
 * linked with --wrap=free,--wrap=realloc (meson.build), and on the
 * client's thread every block freed or moved is searched for it */

void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

static __thread const char *secret_watch; /* set on the client's thread only */
static __thread unsigned secret_leaks;

static void secret_check(const void *p)
{
	size_t n, k;

	if (!p || !secret_watch)
		return;
	n = malloc_usable_size((void *)p);
	k = strlen(secret_watch);
	for (size_t i = 0; i + k <= n; i++)
		if (memcmp((const char *)p + i, secret_watch, k) == 0) {
			secret_leaks++;
			return;
		}
}

void *__wrap_realloc(void *p, size_t n)
{
	secret_check(p);
	return __real_realloc(p, n);
}

void __wrap_free(void *p)
{
	secret_check(p);
	__real_free(p);
}

#define LONG_PASSWORD_LEN 1000

static void srv_long_password(struct srv *v)
{
	const char *pw = v->arg;
	size_t n = strlen(pw) + 32;
	char *exp = malloc(n);

	snprintf(exp, n, "A0001 LOGIN joe \"%s\"\r\n", pw);
	if (srv_send(v, "* OK [CAPABILITY IMAP4rev1] hi\r\n") && srv_expect(v, exp) &&
	    srv_send(v, "A0001 OK [CAPABILITY IMAP4rev1] in\r\n") &&
	    srv_expect(v, "A0002 LOGOUT\r\n"))
		srv_send(v, "* BYE\r\nA0002 OK done\r\n");
	free(exp);
}

static void test_password_not_left_in_freed_memory(void **state)
{
	struct imap_params p = test_params(IMAP_TLS_NONE);
	char pw[LONG_PASSWORD_LEN + 1];
	struct imap_session *s;
	struct imap_error err;
	struct srv *srv;
	unsigned leaks;
	int fd;

	(void)state;
	/* a quoted string, added byte by byte: the buffer grows inside it */
	memset(pw, 'p', LONG_PASSWORD_LEN);
	memcpy(pw, "Q7zK9mW2", 8);
	pw[LONG_PASSWORD_LEN] = '\0';
	p.password = pw;
	srv = srv_start(srv_long_password, pw, &fd);
	secret_watch = "Q7zK9mW2";
	secret_leaks = 0;
	assert_int_equal(open_session(fd, &p, &s, &err), 0);
	imap_session_close(s);
	leaks = secret_leaks;
	secret_watch = NULL;
	srv_finish(srv);
	assert_int_equal(leaks, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostile_endless_line),
		cmocka_unit_test(test_hostile_endless_untagged),
		cmocka_unit_test(test_hostile_endless_literal),
		cmocka_unit_test(test_hostile_literal_sizes),
		cmocka_unit_test(test_hostile_protocol),
		cmocka_unit_test(test_transcript_basic),
		cmocka_unit_test(test_local_errors),
		cmocka_unit_test(test_starttls_injection),
		cmocka_unit_test(test_starttls_refusals),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_out_of_order),
		cmocka_unit_test(test_bodies),
		cmocka_unit_test(test_literal_refused),
		cmocka_unit_test(test_auth_plain),
		cmocka_unit_test(test_trace_redacted),
		cmocka_unit_test(test_callback_stop),
		cmocka_unit_test(test_append_date_range),
		cmocka_unit_test(test_number64_bounds),
		cmocka_unit_test(test_getquotaroot),
		cmocka_unit_test(test_log_control_chars),
		cmocka_unit_test(test_password_not_left_in_freed_memory),
	};

	imap_global_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
