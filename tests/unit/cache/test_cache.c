/*
 * Unit tests of the cache API: mailboxes, messages and batches, bodies
 * (partial reads, chunk boundaries, 0 bytes and 50 MB), UIDVALIDITY
 * changes, eviction, statistics, the outbox and write groups.
 */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>

static int setup(void **state)
{
	struct tcache *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	tcache_dir(t);
	t->c = tcache_open(t->path, 0);
	t->mb = tcache_mailbox(t->c, "INBOX", 100);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tcache *t = *state;

	cache_close(t->c);
	tcache_rmrf(t->dir);
	free(t);
	return 0;
}

static void reopen(struct tcache *t, uint64_t budget)
{
	cache_close(t->c);
	t->c = tcache_open(t->path, budget);
}

static void put_messages(struct cache *c, int64_t mb, uint32_t lo, uint32_t hi, const char *flags)
{
	struct cache_batch *b = NULL;
	uint32_t uid;

	assert_int_equal(cache_batch_begin(c, mb, &b), 0);
	for (uid = lo; uid <= hi; uid++) {
		struct cache_message m = {
			.uid = uid,
			.size = 1000 + uid,
			.internaldate = 1700000000 + uid,
			.modseq = uid,
			.flags = flags,
		};
		assert_int_equal(cache_batch_put(b, &m), 0);
	}
	assert_int_equal(cache_batch_commit(b), 0);
}

static uint64_t count_of(struct cache *c, int64_t mb)
{
	uint64_t n = 99999;

	assert_int_equal(cache_message_count(c, mb, &n, NULL), 0);
	return n;
}

/* --- open --- */

static void test_open_args(void **state)
{
	struct cache *c = NULL;

	(void)state;
	assert_int_equal(cache_open(NULL, NULL, &c), -EINVAL);
	assert_int_equal(cache_open("", NULL, &c), -EINVAL);
	cache_close(NULL);
}

static void test_open_persists_and_schema(void **state)
{
	struct tcache *t = *state;
	struct cache_mailbox mb;

	assert_int_equal(tcache_sql_int(t->c, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA application_id"), CACHE_APPLICATION_ID);
	assert_int_equal(tcache_sql_int(t->c, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"),
			 1);
	/* synchronous = NORMAL (1) on every connection */
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA synchronous"), 1);
	put_messages(t->c, t->mb, 1, 3, "\\Seen");
	reopen(t, 0);
	assert_int_equal(cache_mailbox_get_by_name(t->c, "INBOX", &mb), 0);
	assert_int_equal(mb.id, t->mb);
	assert_int_equal(mb.uidvalidity, 100);
	assert_int_equal(count_of(t->c, t->mb), 3);
}

/* --- mailboxes --- */

static void test_mailbox_put_get(void **state)
{
	struct tcache *t = *state;
	struct cache_mailbox in = {
		.name = "Entwürfe/Ärger",
		.server_name = "Entw&APw-rfe.&AMQ-rger",
		.delimiter = '.',
		.attrs = 0x5,
		.uidvalidity = 7,
		.uidnext = 9,
		.highestmodseq = 1ull << 40,
		.synced_at = 1234,
	};
	struct cache_mailbox out;
	int64_t id = 0, id2 = 0;

	assert_int_equal(cache_mailbox_put(t->c, &in, &id), 0);
	assert_int_equal(cache_mailbox_get(t->c, id, &out), 0);
	assert_int_equal(out.id, id);
	assert_string_equal(out.name, in.name);
	assert_string_equal(out.server_name, in.server_name);
	assert_int_equal(out.delimiter, '.');
	assert_int_equal(out.attrs, 0x5);
	assert_int_equal(out.uidvalidity, 7);
	assert_int_equal(out.uidnext, 9);
	assert_true(out.highestmodseq == 1ull << 40);
	assert_int_equal(out.synced_at, 1234);

	assert_int_equal(cache_mailbox_get_by_server_name(t->c, in.server_name, &out), 0);
	assert_int_equal(out.id, id);
	assert_int_equal(cache_mailbox_get_by_name(t->c, in.name, &out), 0);
	assert_int_equal(out.id, id);

	/* a second put with the same server name updates names and attributes
	 * but not the sync state */
	in.name = "Drafts";
	in.attrs = 0x2;
	in.uidvalidity = 99;
	in.delimiter = '/';
	assert_int_equal(cache_mailbox_put(t->c, &in, &id2), 0);
	assert_int_equal(id2, id);
	assert_int_equal(cache_mailbox_get(t->c, id, &out), 0);
	assert_string_equal(out.name, "Drafts");
	assert_int_equal(out.attrs, 0x2);
	assert_int_equal(out.delimiter, '/');
	assert_int_equal(out.uidvalidity, 7);
	assert_int_equal(cache_mailbox_get_by_name(t->c, "Entwürfe/Ärger", &out), -ENOENT);

	/* no delimiter */
	in.server_name = "Flat";
	in.name = "Flat";
	in.delimiter = '\0';
	assert_int_equal(cache_mailbox_put(t->c, &in, NULL), 0);
	assert_int_equal(cache_mailbox_get_by_name(t->c, "Flat", &out), 0);
	assert_int_equal(out.delimiter, '\0');

	assert_int_equal(cache_mailbox_get(t->c, 424242, &out), -ENOENT);
	assert_int_equal(cache_mailbox_get_by_server_name(t->c, "nope", &out), -ENOENT);
	assert_int_equal(cache_mailbox_put(t->c, NULL, NULL), -EINVAL);
}

struct names {
	char s[8][64];
	int n;
	int stop_at;
};

static int collect_mailbox(void *ctx, const struct cache_mailbox *mb)
{
	struct names *n = ctx;

	if (n->n == n->stop_at)
		return 42;
	snprintf(n->s[n->n++], sizeof(n->s[0]), "%s", mb->name);
	return 0;
}

static void test_mailbox_list(void **state)
{
	struct tcache *t = *state;
	struct names n = { .stop_at = -1 };

	tcache_mailbox(t->c, "b", 0);
	tcache_mailbox(t->c, "a/c", 0);
	tcache_mailbox(t->c, "a", 0);
	assert_int_equal(cache_mailbox_list(t->c, collect_mailbox, &n), 0);
	assert_int_equal(n.n, 4);
	assert_string_equal(n.s[0], "INBOX");
	assert_string_equal(n.s[1], "a");
	assert_string_equal(n.s[2], "a/c");
	assert_string_equal(n.s[3], "b");

	memset(&n, 0, sizeof(n));
	n.stop_at = 2;
	assert_int_equal(cache_mailbox_list(t->c, collect_mailbox, &n), 42);
	assert_int_equal(n.n, 2);
}

static void test_bodies_held_range(void **state)
{
	struct tcache *t = *state;
	struct cache_body_writer *w = NULL;
	uint32_t uids[8];
	size_t n = 99;

	put_messages(t->c, t->mb, 1, 9, "");
	assert_int_equal(tcache_put_body(t->c, t->mb, 1, 100, 10), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 3, 100, 10), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 5, 100, 10), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 9, 100, 10), 0);
	/* begun, not complete: not held */
	assert_int_equal(cache_body_begin(t->c, t->mb, 4, 10, &w), 0);
	assert_int_equal(cache_body_write(w, "12345", 5), 0);

	assert_int_equal(cache_bodies_held(t->c, t->mb, 1, 5, uids, 8, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(uids[0], 1);
	assert_int_equal(uids[1], 3);
	assert_int_equal(uids[2], 5);
	/* the bounds are inclusive, and max is respected */
	assert_int_equal(cache_bodies_held(t->c, t->mb, 3, 9, uids, 2, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(uids[0], 3);
	assert_int_equal(uids[1], 5);
	assert_int_equal(cache_bodies_held(t->c, t->mb, 6, 8, uids, 8, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(cache_bodies_held(t->c, t->mb + 1000, 1, 9, uids, 8, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(cache_bodies_held(t->c, t->mb, 9, 1, uids, 8, &n), 0);
	assert_int_equal(n, 0);
	cache_body_abort(w);
	/* the statement is reusable after a read cut short by max */
	assert_int_equal(cache_bodies_held(t->c, t->mb, 1, 9, uids, 8, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(uids[3], 9);
}

static void test_mailbox_rename_delete(void **state)
{
	struct tcache *t = *state;
	struct cache_mailbox out;
	struct cache_outbox_entry e = { .mailbox_id = 0, .name = "x.eml", .internaldate = -1 };
	int64_t other = tcache_mailbox(t->c, "Other", 5);
	int64_t ob = 0;

	put_messages(t->c, t->mb, 1, 5, "");
	assert_int_equal(tcache_put_body(t->c, t->mb, 3, 100, 100), 0);

	assert_int_equal(cache_mailbox_rename(t->c, t->mb, "Renamed", "Renamed-wire"), 0);
	assert_int_equal(cache_mailbox_get(t->c, t->mb, &out), 0);
	assert_string_equal(out.name, "Renamed");
	assert_string_equal(out.server_name, "Renamed-wire");
	assert_int_equal(out.uidvalidity, 100);
	assert_int_equal(count_of(t->c, t->mb), 5);
	assert_true(cache_body_has(t->c, t->mb, 3, NULL));
	/* the name is taken */
	assert_int_equal(cache_mailbox_rename(t->c, other, "Renamed", "x"), -EEXIST);
	assert_int_equal(cache_mailbox_rename(t->c, 999, "Z", "Z"), -ENOENT);

	e.mailbox_id = t->mb;
	assert_int_equal(cache_outbox_put(t->c, &e, "abc", 3, &ob), 0);
	assert_int_equal(cache_mailbox_delete(t->c, t->mb), 0);
	assert_int_equal(cache_mailbox_get(t->c, t->mb, &out), -ENOENT);
	assert_int_equal(count_of(t->c, t->mb), 0);
	assert_false(cache_body_has(t->c, t->mb, 3, NULL));
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk"), 0);
	assert_int_equal(cache_mailbox_delete(t->c, t->mb), -ENOENT);
	/* the user's unsent message survives */
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM outbox"), 1);
	assert_int_equal(cache_mailbox_get(t->c, other, &out), 0);
}

static void test_uidvalidity_change(void **state)
{
	struct tcache *t = *state;
	int64_t other = tcache_mailbox(t->c, "Other", 5);
	struct cache_mailbox out;
	struct cache_stats st;

	put_messages(t->c, t->mb, 1, 10, "");
	put_messages(t->c, other, 1, 10, "");
	assert_int_equal(tcache_put_body(t->c, t->mb, 2, 5000, 999), 0);
	assert_int_equal(tcache_put_body(t->c, other, 2, 3000, 999), 0);

	/* same UIDVALIDITY: the state changes, messages stay */
	assert_int_equal(cache_mailbox_set_state(t->c, t->mb, 100, 11, 77, 1000), 0);
	assert_int_equal(count_of(t->c, t->mb), 10);
	assert_int_equal(cache_mailbox_get(t->c, t->mb, &out), 0);
	assert_int_equal(out.uidnext, 11);
	assert_int_equal(out.highestmodseq, 77);
	assert_int_equal(out.synced_at, 1000);

	/* another UIDVALIDITY: messages and bodies of this mailbox only go */
	assert_int_equal(cache_mailbox_set_state(t->c, t->mb, 101, 1, 0, 2000), 0);
	assert_int_equal(count_of(t->c, t->mb), 0);
	assert_false(cache_body_has(t->c, t->mb, 2, NULL));
	assert_int_equal(count_of(t->c, other), 10);
	assert_true(cache_body_has(t->c, other, 2, NULL));
	assert_int_equal(cache_mailbox_get(t->c, t->mb, &out), 0);
	assert_int_equal(out.uidvalidity, 101);
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 1);
	assert_int_equal(st.body_bytes, 3000);

	assert_int_equal(cache_mailbox_set_state(t->c, 9999, 1, 1, 1, 1), -ENOENT);
}

static void test_uidvalidity_during_body_write(void **state)
{
	struct tcache *t = *state;
	struct cache_body_writer *w = NULL;
	unsigned char buf[1000];
	size_t i;

	/* a body begun under UIDVALIDITY 100 must not land under 101: small
	 * (buffered) and large (chunks already stored) */
	tcache_fill(buf, 1, 0, sizeof(buf));
	assert_int_equal(cache_body_begin(t->c, t->mb, 1, sizeof(buf), &w), 0);
	assert_int_equal(cache_body_write(w, buf, sizeof(buf)), 0);
	assert_int_equal(cache_mailbox_set_state(t->c, t->mb, 101, 1, 0, 0), 0);
	assert_int_equal(cache_body_commit(w), -ENOENT);
	assert_false(cache_body_has(t->c, t->mb, 1, NULL));

	assert_int_equal(cache_body_begin(t->c, t->mb, 2, 4 * CACHE_BODY_CHUNK, &w), 0);
	for (i = 0; i < 2 * CACHE_BODY_CHUNK / sizeof(buf) + 1; i++)
		assert_int_equal(cache_body_write(w, buf, sizeof(buf)), 0);
	assert_true(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk") >= 2);
	assert_int_equal(cache_mailbox_set_state(t->c, t->mb, 102, 1, 0, 0), 0);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk"), 0);
	/* the writer notices at its next chunk or at commit */
	for (;;) {
		int ret = cache_body_write(w, buf, sizeof(buf));

		if (ret) {
			assert_int_equal(ret, -ENOENT);
			break;
		}
	}
	assert_int_equal(cache_body_commit(w), -ENOENT);
	assert_false(cache_body_has(t->c, t->mb, 2, NULL));
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body"), 0);
}

/* --- messages and batches --- */

struct msgs {
	uint32_t uids[64];
	char flags[64][32];
	int n;
	int stop_at;
	struct cache *c;
	int64_t mb;
};

static int collect_message(void *ctx, const struct cache_message *m)
{
	struct msgs *s = ctx;

	if (s->n == s->stop_at)
		return -7;
	s->uids[s->n] = m->uid;
	snprintf(s->flags[s->n], sizeof(s->flags[0]), "%s", m->flags);
	s->n++;
	return 0;
}

static void test_message_put_get_list(void **state)
{
	struct tcache *t = *state;
	struct cache_batch *b = NULL;
	struct cache_message m = { .uid = 0 };
	struct msgs s = { .stop_at = -1 };
	uint32_t order[] = { 50, 3, 7, 4000000000u, 1 };
	uint32_t max = 0;
	uint64_t n = 0;
	size_t i;

	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		struct cache_message in = {
			.uid = order[i],
			.size = 10ull * order[i],
			.internaldate = -5 + (int64_t)i,
			.modseq = 1ull << 50,
			.flags = i % 2 ? "\\Seen $Label1" : "",
		};
		assert_int_equal(cache_batch_put(b, &in), 0);
	}
	assert_int_equal(cache_batch_put(b, &m), -EINVAL); /* UID 0 */
	/* not visible before commit */
	assert_int_equal(cache_message_get(t->c, t->mb, 50, &m), -ENOENT);
	assert_int_equal(cache_batch_commit(b), 0);

	assert_int_equal(cache_message_get(t->c, t->mb, 3, &m), 0);
	assert_int_equal(m.uid, 3);
	assert_int_equal(m.size, 30);
	assert_int_equal(m.internaldate, -4);
	assert_true(m.modseq == 1ull << 50);
	assert_string_equal(m.flags, "\\Seen $Label1");
	assert_int_equal(cache_message_get(t->c, t->mb, 4000000000u, &m), 0);
	assert_int_equal(m.size, 40000000000ull);
	assert_string_equal(m.flags, "\\Seen $Label1");
	assert_int_equal(cache_message_get(t->c, t->mb, 50, &m), 0);
	assert_string_equal(m.flags, "");
	assert_int_equal(cache_message_get(t->c, t->mb, 2, &m), -ENOENT);
	assert_int_equal(cache_message_get(t->c, 4242, 3, &m), -ENOENT);

	assert_int_equal(cache_message_list(t->c, t->mb, collect_message, &s), 0);
	assert_int_equal(s.n, 5);
	assert_int_equal(s.uids[0], 1);
	assert_int_equal(s.uids[1], 3);
	assert_int_equal(s.uids[2], 7);
	assert_int_equal(s.uids[3], 50);
	assert_int_equal(s.uids[4], 4000000000u);

	memset(&s, 0, sizeof(s));
	s.stop_at = 2;
	assert_int_equal(cache_message_list(t->c, t->mb, collect_message, &s), -7);
	assert_int_equal(s.n, 2);

	assert_int_equal(cache_message_count(t->c, t->mb, &n, &max), 0);
	assert_int_equal(n, 5);
	assert_int_equal(max, 4000000000u);
	assert_int_equal(cache_message_count(t->c, 4242, &n, &max), 0);
	assert_int_equal(n, 0);
	assert_int_equal(max, 0);
}

static void test_batch_flags_expunge_retain(void **state)
{
	struct tcache *t = *state;
	struct cache_batch *b = NULL;
	struct cache_message m;
	struct msgs s = { .stop_at = -1 };
	uint32_t keep[] = { 2, 4, 6, 8, 100 };

	put_messages(t->c, t->mb, 1, 10, "old");
	assert_int_equal(tcache_put_body(t->c, t->mb, 3, 10, 10), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 5, 10, 10), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 8, 10, 10), 0);
	/* a body without metadata: retain removes it too */
	assert_int_equal(tcache_put_body(t->c, t->mb, 9999, 10, 10), 0);

	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_set_flags(b, 1, "\\Seen", 0), 0);
	assert_int_equal(cache_batch_set_flags(b, 2, "\\Flagged", 500), 0);
	assert_int_equal(cache_batch_set_flags(b, 77, "\\Seen", 0), 0); /* unknown: ignored */
	assert_int_equal(cache_batch_expunge(b, 3, 3), 0);
	assert_int_equal(cache_batch_expunge(b, 7, 1), -EINVAL);
	assert_int_equal(cache_batch_commit(b), 0);

	assert_int_equal(cache_message_get(t->c, t->mb, 1, &m), 0);
	assert_string_equal(m.flags, "\\Seen");
	assert_int_equal(m.modseq, 1); /* modseq 0 keeps it */
	assert_int_equal(cache_message_get(t->c, t->mb, 2, &m), 0);
	assert_string_equal(m.flags, "\\Flagged");
	assert_int_equal(m.modseq, 500);
	assert_int_equal(cache_message_get(t->c, t->mb, 77, &m), -ENOENT);
	assert_int_equal(cache_message_get(t->c, t->mb, 3, &m), -ENOENT);
	assert_false(cache_body_has(t->c, t->mb, 3, NULL));
	assert_true(cache_body_has(t->c, t->mb, 5, NULL));

	/* retain: unsorted input is refused */
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_retain(b, (uint32_t[]){ 3, 2 }, 2), -EINVAL);
	assert_int_equal(cache_batch_retain(b, keep, sizeof(keep) / sizeof(keep[0])), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	assert_int_equal(cache_message_list(t->c, t->mb, collect_message, &s), 0);
	assert_int_equal(s.n, 4);
	assert_int_equal(s.uids[0], 2);
	assert_int_equal(s.uids[1], 4);
	assert_int_equal(s.uids[2], 6);
	assert_int_equal(s.uids[3], 8);
	assert_false(cache_body_has(t->c, t->mb, 5, NULL));
	assert_true(cache_body_has(t->c, t->mb, 8, NULL));
	assert_false(cache_body_has(t->c, t->mb, 9999, NULL));

	/* expunge a range, then retain nothing */
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_expunge(b, 3, 5), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	assert_int_equal(count_of(t->c, t->mb), 3);
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_retain(b, NULL, 0), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	assert_int_equal(count_of(t->c, t->mb), 0);
	assert_false(cache_body_has(t->c, t->mb, 8, NULL));
}

/* retain below a limit: a listing made when UIDNEXT was 8 keeps 1 and 5,
 * and cannot speak for 8 and above (copied in since): those stay */
static void test_batch_retain_below(void **state)
{
	struct tcache *t = *state;
	struct cache_batch *b = NULL;
	struct msgs s = { .stop_at = -1 };
	uint32_t keep[] = { 1, 5 };

	put_messages(t->c, t->mb, 1, 10, "x");
	assert_int_equal(tcache_put_body(t->c, t->mb, 9, 10, 10), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 3, 10, 10), 0);
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_retain_below(b, (uint32_t[]){ 5, 1 }, 2, 8), -EINVAL);
	assert_int_equal(cache_batch_retain_below(b, keep, 2, 8), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	assert_int_equal(cache_message_list(t->c, t->mb, collect_message, &s), 0);
	assert_int_equal(s.n, 5);
	assert_int_equal(s.uids[0], 1);
	assert_int_equal(s.uids[1], 5);
	assert_int_equal(s.uids[2], 8);
	assert_int_equal(s.uids[3], 9);
	assert_int_equal(s.uids[4], 10);
	assert_true(cache_body_has(t->c, t->mb, 9, NULL));
	assert_false(cache_body_has(t->c, t->mb, 3, NULL));
	/* limit 0: everything not kept goes */
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_retain_below(b, keep, 2, 0), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	assert_int_equal(count_of(t->c, t->mb), 2);
	assert_false(cache_body_has(t->c, t->mb, 9, NULL));
}

static void test_batch_order_abort_missing(void **state)
{
	struct tcache *t = *state;
	struct cache_batch *b = NULL;
	struct cache_message m = { .uid = 5, .size = 1, .flags = "a" };

	/* operations apply in order: put, expunge, put again */
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_put(b, &m), 0);
	assert_int_equal(cache_batch_expunge(b, 1, 10), 0);
	m.flags = "b";
	m.uid = 6;
	assert_int_equal(cache_batch_put(b, &m), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	assert_int_equal(cache_message_get(t->c, t->mb, 5, &m), -ENOENT);
	assert_int_equal(cache_message_get(t->c, t->mb, 6, &m), 0);
	assert_string_equal(m.flags, "b");

	/* abort applies nothing */
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	m.uid = 7;
	assert_int_equal(cache_batch_put(b, &m), 0);
	assert_int_equal(cache_batch_expunge(b, 1, 100), 0);
	cache_batch_abort(b);
	cache_batch_abort(NULL);
	assert_int_equal(count_of(t->c, t->mb), 1);

	/* a batch for a mailbox that is gone: -ENOENT, nothing applied */
	assert_int_equal(cache_batch_begin(t->c, 31337, &b), 0);
	assert_int_equal(cache_batch_put(b, &m), 0);
	assert_int_equal(cache_batch_commit(b), -ENOENT);
	assert_int_equal(count_of(t->c, 31337), 0);
}

static int nested_list_cb(void *ctx, const struct cache_message *m)
{
	struct msgs *s = ctx;
	struct msgs inner = { .stop_at = -1 };
	struct cache_message other;

	/* calls back into the cache from inside a walk */
	assert_int_equal(cache_message_list(s->c, s->mb, collect_message, &inner), 0);
	assert_int_equal(inner.n, 3);
	assert_int_equal(cache_message_get(s->c, s->mb, 2, &other), 0);
	assert_false(cache_body_has(s->c, s->mb, m->uid, NULL));
	s->uids[s->n++] = m->uid;
	return 0;
}

static void test_message_list_reentrant(void **state)
{
	struct tcache *t = *state;
	struct msgs s = { .stop_at = -1, .c = t->c, .mb = t->mb };

	put_messages(t->c, t->mb, 1, 3, "");
	assert_int_equal(cache_message_list(t->c, t->mb, nested_list_cb, &s), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.uids[2], 3);
}

/* --- bodies --- */

static void read_check(struct cache *c, int64_t mb, uint32_t uid, uint64_t size, uint64_t off,
		       size_t len)
{
	unsigned char *buf = malloc(len + 16);
	size_t got = 12345;
	size_t want = off >= size ? 0 : (size - off < len ? (size_t)(size - off) : len);

	assert_non_null(buf);
	memset(buf, 0xAA, len + 16);
	assert_int_equal(cache_body_read(c, mb, uid, off, buf, len, &got), 0);
	assert_int_equal(got, want);
	assert_int_equal(tcache_check(buf, uid, off, got), 0);
	/* nothing written past what was read */
	assert_int_equal(buf[got], 0xAA);
	free(buf);
}

static void test_body_partial_reads(void **state)
{
	struct tcache *t = *state;
	const uint64_t size = 3 * CACHE_BODY_CHUNK + 12345;
	const uint64_t K = CACHE_BODY_CHUNK;
	uint64_t got_size = 0;

	/* odd piece size: chunk boundaries fall inside writes */
	assert_int_equal(tcache_put_body(t->c, t->mb, 9, size, 7777), 0);
	assert_true(cache_body_has(t->c, t->mb, 9, &got_size));
	assert_int_equal(got_size, size);
	read_check(t->c, t->mb, 9, size, 0, 4096);             /* start */
	read_check(t->c, t->mb, 9, size, 0, 1);
	read_check(t->c, t->mb, 9, size, size / 2, 4096);      /* middle */
	read_check(t->c, t->mb, 9, size, size - 4096, 4096);   /* end, exact */
	read_check(t->c, t->mb, 9, size, size - 100, 4096);    /* short at the end */
	read_check(t->c, t->mb, 9, size, size - 1, 1);
	read_check(t->c, t->mb, 9, size, size, 4096);          /* at the end: 0 */
	read_check(t->c, t->mb, 9, size, size + 5000, 10);     /* past the end: 0 */
	read_check(t->c, t->mb, 9, size, K - 10, 20);          /* across a boundary */
	read_check(t->c, t->mb, 9, size, K, 10);               /* at a boundary */
	read_check(t->c, t->mb, 9, size, K - 1, 2 * K + 2);    /* across two */
	read_check(t->c, t->mb, 9, size, 0, size + 1000);      /* everything */
	read_check(t->c, t->mb, 9, size, 3 * K - 3, 12345 + 3);
}

static void test_body_sizes(void **state)
{
	struct tcache *t = *state;
	uint64_t sizes[] = { 1, CACHE_BODY_CHUNK - 1, CACHE_BODY_CHUNK, CACHE_BODY_CHUNK + 1,
			     2 * CACHE_BODY_CHUNK };
	unsigned char b;
	uint64_t sz = 99;
	size_t got = 99;
	size_t i;

	/* 0 bytes: held, readable, empty */
	assert_int_equal(tcache_put_body(t->c, t->mb, 1, 0, 10), 0);
	assert_true(cache_body_has(t->c, t->mb, 1, &sz));
	assert_int_equal(sz, 0);
	assert_int_equal(cache_body_read(t->c, t->mb, 1, 0, &b, 1, &got), 0);
	assert_int_equal(got, 0);

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint32_t uid = 10 + (uint32_t)i;

		assert_int_equal(tcache_put_body(t->c, t->mb, uid, sizes[i], 65536), 0);
		read_check(t->c, t->mb, uid, sizes[i], 0, (size_t)sizes[i]);
		read_check(t->c, t->mb, uid, sizes[i], sizes[i] - 1, 10);
	}
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk WHERE (id >> 20) ="
					      " (SELECT id FROM body WHERE uid = 14)"),
			 2);
}

struct miss_ctx {
	struct cache *c;
	int64_t mb;
	uint64_t off;
	int misses;
};

/* On a new thread (a new connection with an empty page cache), read 4 KB
 * and count the pages SQLite had to load. */
static void *read_4k_thread(void *arg)
{
	struct miss_ctx *m = arg;
	unsigned char buf[4096];
	int cur = 0, hi = 0;
	size_t got = 0;

	if (cache_body_read(m->c, m->mb, 1, m->off, buf, sizeof(buf), &got) != 0 ||
	    got != sizeof(buf) || tcache_check(buf, 1, m->off, got) != 0) {
		m->misses = -1;
		return NULL;
	}
	sqlite3_db_status(cache_test_db(m->c), SQLITE_DBSTATUS_CACHE_MISS, &cur, &hi, 0);
	m->misses = cur;
	return NULL;
}

static void test_body_50mb(void **state)
{
	struct tcache *t = *state;
	const uint64_t size = 50ull * 1024 * 1024;
	uint64_t offs[] = { 0, size / 2 + 777, size - 4096 };
	struct cache_stats st;
	size_t i;

	assert_int_equal(tcache_put_body(t->c, t->mb, 1, size, 1 << 20), 0);
	cache_get_stats(t->c, &st);
	assert_int_equal(st.body_bytes, size);
	read_check(t->c, t->mb, 1, size, 0, 1 << 20);
	read_check(t->c, t->mb, 1, size, size - 3 * CACHE_BODY_CHUNK - 5, 3 * CACHE_BODY_CHUNK);
	read_check(t->c, t->mb, 1, size, size / 3, 4096);

	/* A 4 KB read loads at most one chunk's pages, never the body's
	 * (12,800 pages of 4 KB). */
	for (i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		struct miss_ctx m = { .c = t->c, .mb = t->mb, .off = offs[i] };
		pthread_t th;

		assert_int_equal(pthread_create(&th, NULL, read_4k_thread, &m), 0);
		pthread_join(th, NULL);
		assert_true(m.misses > 0);
		assert_true(m.misses < CACHE_BODY_CHUNK / 4096 + 32);
	}
}

static void test_body_invisible_until_commit(void **state)
{
	struct tcache *t = *state;
	struct cache_body_writer *w = NULL;
	unsigned char buf[8192];
	size_t got;
	int i;

	tcache_fill(buf, 4, 0, sizeof(buf));
	assert_int_equal(cache_body_begin(t->c, t->mb, 4, 100 * sizeof(buf), &w), 0);
	for (i = 0; i < 99; i++)
		assert_int_equal(cache_body_write(w, buf, sizeof(buf)), 0);
	/* chunks are stored, the body is not there */
	assert_true(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk") >= 3);
	assert_false(cache_body_has(t->c, t->mb, 4, NULL));
	assert_int_equal(cache_body_read(t->c, t->mb, 4, 0, buf, 10, &got), -ENOENT);
	assert_int_equal(cache_body_write(w, buf, sizeof(buf)), 0);
	assert_int_equal(cache_body_commit(w), 0);
	assert_true(cache_body_has(t->c, t->mb, 4, NULL));
}

static void test_body_wrong_size_abort_replace(void **state)
{
	struct tcache *t = *state;
	struct cache_body_writer *w = NULL;
	unsigned char buf[1000];
	struct cache_stats st;
	uint64_t sz = 0;
	size_t i;

	tcache_fill(buf, 1, 0, sizeof(buf));
	/* too short */
	assert_int_equal(cache_body_begin(t->c, t->mb, 1, 2000, &w), 0);
	assert_int_equal(cache_body_write(w, buf, 1000), 0);
	assert_int_equal(cache_body_commit(w), -EIO);
	assert_false(cache_body_has(t->c, t->mb, 1, NULL));
	/* too long */
	assert_int_equal(cache_body_begin(t->c, t->mb, 1, 500, &w), 0);
	assert_int_equal(cache_body_write(w, buf, 1000), -EIO);
	assert_int_equal(cache_body_commit(w), -EIO);
	assert_false(cache_body_has(t->c, t->mb, 1, NULL));
	/* too short after chunks were stored: they go too */
	assert_int_equal(cache_body_begin(t->c, t->mb, 1, 2 * CACHE_BODY_CHUNK, &w), 0);
	for (i = 0; i < CACHE_BODY_CHUNK / 1000 + 1; i++)
		assert_int_equal(cache_body_write(w, buf, 1000), 0);
	assert_int_equal(cache_body_commit(w), -EIO);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk"), 0);
	/* abort after chunks */
	assert_int_equal(cache_body_begin(t->c, t->mb, 1, 2 * CACHE_BODY_CHUNK, &w), 0);
	for (i = 0; i < CACHE_BODY_CHUNK / 1000 + 1; i++)
		assert_int_equal(cache_body_write(w, buf, 1000), 0);
	cache_body_abort(w);
	cache_body_abort(NULL);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body"), 0);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk"), 0);
	/* no such mailbox */
	assert_int_equal(cache_body_begin(t->c, 777, 1, 10, &w), -ENOENT);
	assert_int_equal(cache_body_begin(t->c, t->mb, 0, 10, &w), -EINVAL);

	/* replacing keeps one body with the new content */
	assert_int_equal(tcache_put_body(t->c, t->mb, 2, 3000, 100), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 2, 1234, 100), 0);
	assert_true(cache_body_has(t->c, t->mb, 2, &sz));
	assert_int_equal(sz, 1234);
	read_check(t->c, t->mb, 2, 1234, 0, 5000);
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 1);
	assert_int_equal(st.body_bytes, 1234);

	assert_int_equal(cache_body_delete(t->c, t->mb, 2), 0);
	assert_int_equal(cache_body_delete(t->c, t->mb, 2), -ENOENT);
	assert_false(cache_body_has(t->c, t->mb, 2, NULL));
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 0);
	assert_int_equal(st.body_bytes, 0);
}

static void test_body_expunged_while_streaming(void **state)
{
	struct tcache *t = *state;
	struct cache_body_writer *w = NULL;
	struct cache_batch *b = NULL;
	unsigned char buf[100];

	put_messages(t->c, t->mb, 1, 2, "");
	tcache_fill(buf, 1, 0, sizeof(buf));
	assert_int_equal(cache_body_begin(t->c, t->mb, 1, sizeof(buf), &w), 0);
	assert_int_equal(cache_body_write(w, buf, sizeof(buf)), 0);
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_expunge(b, 1, 1), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	assert_int_equal(cache_body_commit(w), -ENOENT);
	assert_false(cache_body_has(t->c, t->mb, 1, NULL));
	/* UID 2 is untouched and its body lands */
	assert_int_equal(tcache_put_body(t->c, t->mb, 2, 100, 30), 0);
	assert_true(cache_body_has(t->c, t->mb, 2, NULL));
}

static void test_body_metadata_not_needed(void **state)
{
	struct tcache *t = *state;

	/* the body may arrive before the metadata */
	assert_int_equal(tcache_put_body(t->c, t->mb, 500, 10, 10), 0);
	assert_true(cache_body_has(t->c, t->mb, 500, NULL));
	put_messages(t->c, t->mb, 500, 500, "");
	assert_true(cache_body_has(t->c, t->mb, 500, NULL));
}

/* --- eviction and statistics --- */

static void test_eviction_order(void **state)
{
	struct tcache *t = *state;
	struct cache_stats st;
	unsigned char b[16];
	size_t got;

	reopen(t, 3500);
	assert_int_equal(tcache_put_body(t->c, t->mb, 1, 1000, 1000), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 2, 1000, 1000), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 3, 1000, 1000), 0);
	/* read 1: now 2 is the least recently read */
	assert_int_equal(cache_body_read(t->c, t->mb, 1, 0, b, sizeof(b), &got), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 4, 1000, 1000), 0);
	assert_false(cache_body_has(t->c, t->mb, 2, NULL));
	assert_true(cache_body_has(t->c, t->mb, 1, NULL));
	assert_true(cache_body_has(t->c, t->mb, 3, NULL));
	assert_true(cache_body_has(t->c, t->mb, 4, NULL));
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 3);
	assert_int_equal(st.body_bytes, 3000);
	assert_int_equal(st.evictions, 1);

	/* cache_body_has is not a read: 3 stays the oldest */
	assert_true(cache_body_has(t->c, t->mb, 3, NULL));
	assert_int_equal(cache_body_read(t->c, t->mb, 4, 0, b, sizeof(b), &got), 0);
	assert_int_equal(cache_body_read(t->c, t->mb, 1, 0, b, sizeof(b), &got), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 5, 1000, 1000), 0);
	assert_false(cache_body_has(t->c, t->mb, 3, NULL));
	assert_true(cache_body_has(t->c, t->mb, 4, NULL));
	assert_true(cache_body_has(t->c, t->mb, 1, NULL));

	/* the read order survives a reopen: 4 was read before 1 */
	reopen(t, 3500);
	assert_int_equal(tcache_put_body(t->c, t->mb, 6, 1000, 1000), 0);
	assert_false(cache_body_has(t->c, t->mb, 4, NULL));
	assert_true(cache_body_has(t->c, t->mb, 1, NULL));
	assert_true(cache_body_has(t->c, t->mb, 5, NULL));
	assert_true(cache_body_has(t->c, t->mb, 6, NULL));

	/* lowering the budget and evicting */
	cache_set_budget(t->c, 1500);
	assert_int_equal(cache_evict(t->c), 0);
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 1);
	assert_int_equal(st.body_bytes, 1000);
	assert_true(cache_body_has(t->c, t->mb, 6, NULL));

	/* a body larger than the budget is kept until the next one comes */
	assert_int_equal(tcache_put_body(t->c, t->mb, 7, 5000, 1000), 0);
	assert_true(cache_body_has(t->c, t->mb, 7, NULL));
	assert_false(cache_body_has(t->c, t->mb, 6, NULL));
	assert_int_equal(tcache_put_body(t->c, t->mb, 8, 100, 1000), 0);
	assert_false(cache_body_has(t->c, t->mb, 7, NULL));
	assert_true(cache_body_has(t->c, t->mb, 8, NULL));

	/* metadata is never evicted; budget 0 means unlimited */
	put_messages(t->c, t->mb, 1, 8, "");
	cache_set_budget(t->c, 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 1, 100000, 50000), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 2, 100000, 50000), 0);
	assert_int_equal(cache_evict(t->c), 0);
	assert_true(cache_body_has(t->c, t->mb, 8, NULL));
	assert_int_equal(count_of(t->c, t->mb), 8);
}

static void test_eviction_budget_many(void **state)
{
	struct tcache *t = *state;
	struct cache_stats st;
	uint32_t uid;

	/* 500 bodies of 1,000 bytes under a 100,000 budget: the total never
	 * exceeds it and the newest 100 stay */
	cache_set_budget(t->c, 100000);
	for (uid = 1; uid <= 500; uid++) {
		assert_int_equal(tcache_put_body(t->c, t->mb, uid, 1000, 1000), 0);
		cache_get_stats(t->c, &st);
		assert_true(st.body_bytes <= 100000);
	}
	assert_int_equal(st.bodies, 100);
	assert_int_equal(st.evictions, 400);
	assert_false(cache_body_has(t->c, t->mb, 400, NULL));
	assert_true(cache_body_has(t->c, t->mb, 401, NULL));
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body"), 100);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(DISTINCT id >> 20) FROM body_chunk"), 100);
}

static void test_stats(void **state)
{
	struct tcache *t = *state;
	struct cache_stats st;
	unsigned char b[10];
	size_t got;

	assert_int_equal(tcache_put_body(t->c, t->mb, 1, 100, 100), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 2, 250, 100), 0);
	assert_int_equal(cache_body_read(t->c, t->mb, 1, 0, b, sizeof(b), &got), 0);
	assert_int_equal(cache_body_read(t->c, t->mb, 2, 0, b, sizeof(b), &got), 0);
	assert_int_equal(cache_body_read(t->c, t->mb, 3, 0, b, sizeof(b), &got), -ENOENT);
	assert_false(cache_body_has(t->c, t->mb, 3, NULL)); /* not a miss */
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 2);
	assert_int_equal(st.body_bytes, 350);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.evictions, 0);
	/* held bodies are counted again after a reopen; counters restart */
	reopen(t, 0);
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 2);
	assert_int_equal(st.body_bytes, 350);
	assert_int_equal(st.hits, 0);
}

/* --- outbox --- */

struct ob_list {
	int64_t ids[8];
	char names[8][32];
	bool held[8];
	int n;
};

static int collect_outbox(void *ctx, const struct cache_outbox_entry *e)
{
	struct ob_list *l = ctx;

	l->ids[l->n] = e->id;
	snprintf(l->names[l->n], sizeof(l->names[0]), "%s", e->name);
	l->held[l->n] = e->held;
	l->n++;
	return 0;
}

static int check_first_outbox(void *ctx, const struct cache_outbox_entry *e)
{
	(void)ctx;
	assert_string_equal(e->name, "draft.eml");
	assert_string_equal(e->flags, "\\Seen \\Draft");
	assert_int_equal(e->internaldate, 1600000000);
	assert_int_equal(e->size, 11);
	assert_string_equal(e->message_id, "<a@b>");
	assert_int_equal(e->created_at, 42);
	return 1;
}

static void test_outbox(void **state)
{
	struct tcache *t = *state;
	int64_t other = tcache_mailbox(t->c, "Sent", 1);
	struct cache_outbox_entry e = {
		.mailbox_id = t->mb,
		.name = "draft.eml",
		.flags = "\\Seen \\Draft",
		.internaldate = 1600000000,
		.message_id = "<a@b>",
		.created_at = 42,
	};
	struct ob_list l = { 0 };
	int64_t id1 = 0, id2 = 0, id3 = 0;
	void *data = NULL;
	size_t len = 0;

	assert_int_equal(cache_outbox_put(t->c, &e, "Hello\r\n\r\nX", 11, &id1), 0);
	e.mailbox_id = other;
	e.name = "b.eml";
	e.flags = NULL;
	e.message_id = NULL;
	e.created_at = 0;
	e.internaldate = -1;
	assert_int_equal(cache_outbox_put(t->c, &e, "B", 1, &id2), 0);
	e.mailbox_id = t->mb;
	e.name = "empty.eml";
	e.held = true; /* a killed writer's file: the flag survives a reopen */
	assert_int_equal(cache_outbox_put(t->c, &e, NULL, 0, &id3), 0);
	assert_true(id1 < id2 && id2 < id3);

	reopen(t, 0); /* durable */
	assert_int_equal(cache_outbox_list(t->c, 0, collect_outbox, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.names[0], "draft.eml");
	assert_string_equal(l.names[1], "b.eml");
	assert_string_equal(l.names[2], "empty.eml");
	assert_false(l.held[0]);
	assert_false(l.held[1]);
	assert_true(l.held[2]);
	memset(&l, 0, sizeof(l));
	assert_int_equal(cache_outbox_list(t->c, t->mb, collect_outbox, &l), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.ids[0], id1);
	assert_int_equal(l.ids[1], id3);
	assert_int_equal(cache_outbox_list(t->c, t->mb, check_first_outbox, NULL), 1);

	assert_int_equal(cache_outbox_get_data(t->c, id1, &data, &len), 0);
	assert_int_equal(len, 11);
	assert_memory_equal(data, "Hello\r\n\r\nX", 11);
	free(data);
	assert_int_equal(cache_outbox_get_data(t->c, id3, &data, &len), 0);
	assert_int_equal(len, 0);
	free(data);
	assert_int_equal(cache_outbox_get_data(t->c, 9999, &data, &len), -ENOENT);

	assert_int_equal(cache_outbox_delete(t->c, id1), 0);
	assert_int_equal(cache_outbox_delete(t->c, id1), -ENOENT);
	memset(&l, 0, sizeof(l));
	assert_int_equal(cache_outbox_list(t->c, 0, collect_outbox, &l), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.ids[0], id2);
}

/* --- write groups --- */

struct has_ctx {
	struct cache *c;
	int64_t mb;
	uint32_t uid;
	bool has;
	uint64_t count;
};

static void *has_thread(void *arg)
{
	struct has_ctx *h = arg;

	h->has = cache_body_has(h->c, h->mb, h->uid, NULL);
	cache_message_count(h->c, h->mb, &h->count, NULL);
	return NULL;
}

static bool has_on_other_thread(struct cache *c, int64_t mb, uint32_t uid, uint64_t *count)
{
	struct has_ctx h = { .c = c, .mb = mb, .uid = uid };
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, has_thread, &h), 0);
	pthread_join(th, NULL);
	if (count)
		*count = h.count;
	return h.has;
}

static void test_write_group(void **state)
{
	struct tcache *t = *state;
	struct cache_stats st;
	struct cache_body_writer *w = NULL;
	uint64_t n = 0;
	uint32_t uid;

	assert_int_equal(cache_write_begin(t->c), 0);
	assert_int_equal(cache_write_begin(t->c), -EINVAL);
	for (uid = 1; uid <= 20; uid++)
		assert_int_equal(tcache_put_body(t->c, t->mb, uid, 5000, 1500), 0);
	put_messages(t->c, t->mb, 1, 20, "");
	/* a failing write inside the group fails alone */
	assert_int_equal(cache_body_begin(t->c, t->mb, 21, 10, &w), 0);
	assert_int_equal(cache_body_commit(w), -EIO);
	/* this thread sees its group, others do not yet */
	assert_true(cache_body_has(t->c, t->mb, 20, NULL));
	assert_false(has_on_other_thread(t->c, t->mb, 20, &n));
	assert_int_equal(n, 0);
	assert_int_equal(cache_write_commit(t->c), 0);
	assert_true(has_on_other_thread(t->c, t->mb, 20, &n));
	assert_int_equal(n, 20);
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 20);
	assert_int_equal(st.body_bytes, 100000);
	assert_int_equal(cache_write_commit(t->c), -EINVAL);

	/* abort drops the whole group */
	assert_int_equal(cache_write_begin(t->c), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 30, 5000, 5000), 0);
	cache_write_abort(t->c);
	assert_false(cache_body_has(t->c, t->mb, 30, NULL));
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 20);

	/* eviction inside a group counts the group's bodies */
	cache_set_budget(t->c, 50000);
	assert_int_equal(cache_write_begin(t->c), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 31, 5000, 5000), 0);
	assert_int_equal(cache_write_commit(t->c), 0);
	cache_get_stats(t->c, &st);
	assert_true(st.body_bytes <= 50000);
	assert_true(cache_body_has(t->c, t->mb, 31, NULL));
	assert_int_equal(tcache_sql_int(t->c, "SELECT total(size) FROM body"), st.body_bytes);
}

static void exec_sql(struct cache *c, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(cache_test_db(c), sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err ? err : "?");
}

/* Every body of uids (n of them) is there, byte-exact, on another thread
 * too; the totals match the rows, and no row is left of any other body. */
static void assert_bodies_exact(struct cache *c, int64_t mb, const uint32_t *uids,
				const size_t *sizes, size_t n)
{
	static unsigned char buf[8192];
	struct cache_stats st;
	uint64_t size, total = 0;
	size_t i, got;

	for (i = 0; i < n; i++) {
		assert_true(cache_body_has(c, mb, uids[i], &size));
		assert_int_equal(size, sizes[i]);
		assert_int_equal(cache_body_read(c, mb, uids[i], 0, buf, sizeof(buf), &got), 0);
		assert_int_equal(got, sizes[i]);
		assert_int_equal(tcache_check(buf, uids[i], 0, got), 0);
		total += sizes[i];
	}
	cache_get_stats(c, &st);
	assert_int_equal(st.bodies, n);
	assert_int_equal(st.body_bytes, total);
	assert_int_equal(tcache_sql_int(c, "SELECT count(*) FROM body"), n);
	assert_int_equal(tcache_sql_int(c, "SELECT total(size) FROM body"), total);
	assert_int_equal(tcache_sql_int(c, "SELECT count(*) FROM body_chunk"), n);
	assert_int_equal(tcache_sql_int(c, "SELECT count(*) FROM body_chunk WHERE id >> 20 NOT IN"
					   " (SELECT id FROM body)"),
			 0);
}

/*
 * Bodies that fail in the middle of a group (abandoned, short, or refused
 * by SQLite after their row went in) leave nothing; the others of the
 * group are kept byte-exact. If undoing a failed body fails as well, the
 * whole group goes, and the bodies committed before it stay.
 */
static void test_write_group_failures_inside(void **state)
{
	struct tcache *t = *state;
	struct cache_body_writer *w = NULL;
	unsigned char part[100];
	uint32_t uids[20];
	size_t sizes[20], n = 0;
	uint32_t uid;

	/* a chunk of 1,234 bytes is refused after its body row is stored;
	 * deleting a body of 1,235 bytes is refused too */
	exec_sql(t->c, "CREATE TEMP TRIGGER refuse_chunk BEFORE INSERT ON main.body_chunk"
		       " WHEN length(NEW.data) IN (1234, 1235) BEGIN SELECT RAISE(ABORT, 'test'); END;"
		       "CREATE TEMP TRIGGER refuse_delete BEFORE DELETE ON main.body"
		       " WHEN OLD.size = 1235 BEGIN SELECT RAISE(ABORT, 'test'); END");
	put_messages(t->c, t->mb, 1, 40, "");

	assert_int_equal(cache_write_begin(t->c), 0);
	for (uid = 1; uid <= 20; uid++) {
		size_t size = 1300 + uid * 37;

		switch (uid) {
		case 5: /* abandoned half way */
			assert_int_equal(cache_body_begin(t->c, t->mb, uid, size, &w), 0);
			tcache_fill(part, uid, 0, sizeof(part));
			assert_int_equal(cache_body_write(w, part, sizeof(part)), 0);
			cache_body_abort(w);
			break;
		case 8: /* short */
			assert_int_equal(cache_body_begin(t->c, t->mb, uid, size, &w), 0);
			tcache_fill(part, uid, 0, sizeof(part));
			assert_int_equal(cache_body_write(w, part, sizeof(part)), 0);
			assert_int_equal(cache_body_commit(w), -EIO);
			break;
		case 11: /* refused by SQLite after its row went in */
		case 12:
			assert_int_equal(tcache_put_body(t->c, t->mb, uid, 1234, 500), -EEXIST);
			break;
		default:
			assert_int_equal(tcache_put_body(t->c, t->mb, uid, size, 700), 0);
			uids[n] = uid;
			sizes[n++] = size;
		}
	}
	assert_false(has_on_other_thread(t->c, t->mb, 1, NULL));
	assert_int_equal(cache_write_commit(t->c), 0);
	assert_true(has_on_other_thread(t->c, t->mb, 20, NULL));
	assert_false(cache_body_has(t->c, t->mb, 5, NULL));
	assert_false(cache_body_has(t->c, t->mb, 8, NULL));
	assert_false(cache_body_has(t->c, t->mb, 11, NULL));
	assert_false(cache_body_has(t->c, t->mb, 12, NULL));
	assert_bodies_exact(t->c, t->mb, uids, sizes, n);

	/* the undo of a refused body is refused: the group fails as a whole */
	assert_int_equal(cache_write_begin(t->c), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 30, 1500, 1500), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 31, 1235, 1235), -EEXIST);
	assert_int_equal(tcache_put_body(t->c, t->mb, 32, 1500, 1500), -EIO);
	assert_int_equal(cache_write_commit(t->c), -EEXIST);
	assert_false(cache_body_has(t->c, t->mb, 30, NULL));
	assert_false(cache_body_has(t->c, t->mb, 31, NULL));
	assert_bodies_exact(t->c, t->mb, uids, sizes, n);

	/* and the next group works */
	exec_sql(t->c, "DROP TRIGGER refuse_chunk; DROP TRIGGER refuse_delete");
	assert_int_equal(cache_write_begin(t->c), 0);
	assert_int_equal(tcache_put_body(t->c, t->mb, 30, 1500, 1500), 0);
	assert_int_equal(cache_write_commit(t->c), 0);
	uids[n] = 30;
	sizes[n++] = 1500;
	assert_bodies_exact(t->c, t->mb, uids, sizes, n);
}

/* Write a whole body with an open writer: uid's bytes, size bytes. */
static void write_all(struct cache_body_writer *w, uint32_t uid, size_t size)
{
	unsigned char buf[4096];

	assert_true(size <= sizeof(buf));
	tcache_fill(buf, uid, 0, size);
	assert_int_equal(cache_body_write(w, buf, size), 0);
}

/*
 * Inside a group a body commit skips the checks only while nothing was
 * written since its begin: an expunge in the same group still drops it,
 * and of two writers of one message the second replaces the first.
 */
static void test_write_group_changes_between(void **state)
{
	struct tcache *t = *state;
	struct cache_body_writer *w = NULL, *w2 = NULL;
	struct cache_batch *b = NULL;
	unsigned char buf[4096];
	uint64_t size = 0;
	size_t got = 0;

	put_messages(t->c, t->mb, 1, 10, "");
	assert_int_equal(tcache_put_body(t->c, t->mb, 3, 1000, 1000), 0);
	assert_int_equal(cache_write_begin(t->c), 0);

	/* expunged by the same thread while it streams */
	assert_int_equal(cache_body_begin(t->c, t->mb, 1, 1500, &w), 0);
	write_all(w, 1, 1500);
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	assert_int_equal(cache_batch_expunge(b, 1, 1), 0);
	assert_int_equal(cache_batch_commit(b), 0);
	assert_int_equal(cache_body_commit(w), -ENOENT);

	/* two writers of one message: one complete body, the last one */
	assert_int_equal(cache_body_begin(t->c, t->mb, 2, 1500, &w), 0);
	assert_int_equal(cache_body_begin(t->c, t->mb, 2, 1700, &w2), 0);
	write_all(w, 2, 1500);
	write_all(w2, 2, 1700);
	assert_int_equal(cache_body_commit(w), 0);
	assert_int_equal(cache_body_commit(w2), 0);

	/* a body replaced inside the group */
	assert_int_equal(tcache_put_body(t->c, t->mb, 3, 2000, 700), 0);
	assert_int_equal(cache_write_commit(t->c), 0);

	assert_false(cache_body_has(t->c, t->mb, 1, NULL));
	assert_true(cache_body_has(t->c, t->mb, 2, &size));
	assert_int_equal(size, 1700);
	assert_int_equal(cache_body_read(t->c, t->mb, 2, 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 1700);
	assert_int_equal(tcache_check(buf, 2, 0, got), 0);
	assert_true(cache_body_has(t->c, t->mb, 3, &size));
	assert_int_equal(size, 2000);
	assert_int_equal(cache_body_read(t->c, t->mb, 3, 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 2000);
	assert_int_equal(tcache_check(buf, 3, 0, got), 0);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body"), 2);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk"), 2);
	assert_int_equal(tcache_sql_int(t->c, "SELECT total(size) FROM body"), 3700);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_args),
		cmocka_unit_test_setup_teardown(test_open_persists_and_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mailbox_put_get, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mailbox_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bodies_held_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mailbox_rename_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uidvalidity_change, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uidvalidity_during_body_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_message_put_get_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_flags_expunge_retain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_retain_below, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_order_abort_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_message_list_reentrant, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_partial_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_50mb, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_invisible_until_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_wrong_size_abort_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_expunged_while_streaming, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_metadata_not_needed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eviction_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eviction_budget_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_group_failures_inside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_group_changes_between, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
