/*
 * libFuzzer target: a whole session against a server whose every byte is
 * the fuzz input. The input is written to one end of a socketpair and
 * closed; the client logs in and runs LIST, SELECT, UID FETCH (metadata
 * and bodies), UID SEARCH, STATUS, APPEND, UID MOVE and NOOP on the other
 * end. Every response handler sees hostile data; the calls must fail
 * cleanly, never crash or leak.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_i.h"
#include "imapfs/imap.h"
#include "session_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int list_cb(void *ctx, const struct imap_mailbox_info *m)
{
	return m->name[0] == 'Z'; /* sometimes stop */
}

static int meta_cb(void *ctx, const struct imap_msg_meta *m)
{
	return m->uid == 77;
}

static int vanished_cb(void *ctx, uint32_t lo, uint32_t hi)
{
	if (lo > hi)
		__builtin_trap();
	return 0;
}

struct body_state {
	int open;
	uint64_t size;
	uint64_t got;
};

static int body_begin(void *ctx, uint32_t uid, uint64_t offset, uint64_t size)
{
	struct body_state *b = ctx;

	if (b->open || uid == 0)
		__builtin_trap();
	b->open = 1;
	b->size = size;
	b->got = 0;
	return 0;
}

static int body_data(void *ctx, uint32_t uid, const void *buf, size_t len)
{
	struct body_state *b = ctx;

	if (!b->open || len == 0)
		__builtin_trap();
	b->got += len;
	if (b->got > b->size)
		__builtin_trap();
	return 0;
}

static int body_end(void *ctx, uint32_t uid)
{
	struct body_state *b = ctx;

	if (!b->open || b->got != b->size)
		__builtin_trap();
	b->open = 0;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct imap_body_sink sink = { body_begin, body_data, body_end };
	struct imap_params p = {
		.host = "fuzz.invalid",
		.tls = IMAP_TLS_NONE,
		.user = "joe",
		.password = "secret",
		.io_timeout_ms = 1000,
		.limits = { .max_line = 8192, .max_untagged = 2000, .max_buffered_literal = 65536 },
	};
	struct imap_session *s;
	struct imap_error err;
	struct imap_select_info si;
	struct imap_status_info st;
	struct body_state b = { 0 };
	struct imap_conn *c;
	uint32_t *uids, v, u;
	size_t n;
	int sv[2], sndbuf = 1 << 20;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	for (size_t off = 0; off < size;) {
		ssize_t w = write(sv[0], data + off, size - off);
		if (w <= 0)
			break; /* buffer full: the rest is cut off */
		off += (size_t)w;
	}
	shutdown(sv[0], SHUT_WR);

	c = imap_conn_from_fd(sv[1], p.io_timeout_ms);
	if (c && imap_session_open_conn(&p, c, &s, &err) == 0) {
		imap_list(s, "", "*", list_cb, NULL, &err);
		imap_select(s, "INBOX", false, &si, &err);
		imap_uid_fetch_meta(s, "1:*",
				    IMAP_META_FLAGS | IMAP_META_SIZE | IMAP_META_INTERNALDATE |
					    IMAP_META_MODSEQ,
				    imap_session_has_cap(s, "CONDSTORE") ? 5 : 0, meta_cb,
				    vanished_cb, NULL, &err);
		imap_uid_fetch_bodies(s, "1:*", 0, 0, &sink, &b, &err);
		b.open = 0;
		if (imap_uid_search_all(s, &uids, &n, &err) == 0) {
			for (size_t i = 1; i < n; i++)
				if (uids[i - 1] >= uids[i])
					__builtin_trap();
			free(uids);
		}
		imap_status(s, "INBOX", &st, &err);
		imap_append(s, "Sent", "\\Seen", 0, "hello\r\n", 7, &v, &u, &err);
		imap_uid_move(s, 3, "Trash", &v, &u, &err);
		imap_noop(s, &err);
		imap_session_close(s);
	}
	close(sv[0]);
	return 0;
}
