/*
 * Unit tests of cache/: the disk the cache takes (page size, WAL size,
 * bytes of file per byte of body) and the rebuild of a cache made with
 * SQLite's default 4 KiB pages, which must keep the outbox.
 */
#include "helpers.h"

#include <errno.h>

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

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static uint64_t wal_size(const struct tcache *t)
{
	char wal[400];

	snprintf(wal, sizeof(wal), "%s-wal", t->path);
	return file_size(wal);
}

/* Body size of message uid: 1,200 .. 1,799 bytes, 1.5 KB on average. */
static uint64_t small_size(uint32_t uid)
{
	return 1200 + (uid * 7919u) % 600;
}

/* Metadata and body of uids 1..count, bodies in groups of 100 as the
 * daemon writes them; returns the body bytes. */
static uint64_t store_small(struct tcache *t, uint32_t count)
{
	struct cache_batch *b = NULL;
	uint64_t bytes = 0;
	uint32_t uid;

	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	for (uid = 1; uid <= count; uid++) {
		struct cache_message m = { .uid = uid, .size = small_size(uid),
					   .internaldate = 1700000000 + uid, .flags = "\\Seen" };

		assert_int_equal(cache_batch_put(b, &m), 0);
	}
	assert_int_equal(cache_batch_commit(b), 0);
	for (uid = 1; uid <= count; uid++) {
		if (uid % 100 == 1)
			assert_int_equal(cache_write_begin(t->c), 0);
		assert_int_equal(tcache_put_body(t->c, t->mb, uid, small_size(uid), 1500), 0);
		bytes += small_size(uid);
		if (uid % 100 == 0 || uid == count)
			assert_int_equal(cache_write_commit(t->c), 0);
	}
	return bytes;
}

static void test_new_file_has_big_pages(void **state)
{
	struct tcache *t = *state;
	sqlite3_stmt *st = NULL;

	assert_int_equal(tcache_sql_int(t->c, "PRAGMA page_size"), CACHE_PAGE_SIZE);
	assert_int_equal(sqlite3_prepare_v2(cache_test_db(t->c), "PRAGMA journal_mode", -1, &st,
					    NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA wal_autocheckpoint"), CACHE_WAL_PAGES);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA journal_size_limit"), CACHE_WAL_LIMIT);
}

/*
 * 10,000 bodies of 1.5 KB with their metadata, as the bench account's
 * "Big" mailbox: the database stays within 1.12 x the body bytes (1.27 x
 * with 4 KiB pages and the old schema) while the cache is open, and the
 * WAL within its limit plus one write group.
 */
static void test_small_bodies_size_ratio(void **state)
{
	struct tcache *t = *state;
	uint64_t bytes = store_small(t, 10000);
	uint64_t db = file_size(t->path), wal = wal_size(t);

	print_message("db %llu + wal %llu bytes for %llu body bytes: %.4f (db alone %.4f)\n",
		      (unsigned long long)db, (unsigned long long)wal, (unsigned long long)bytes,
		      (double)(db + wal) / (double)bytes, (double)db / (double)bytes);
	assert_true(db * 100 <= bytes * 112);
	assert_true(wal <= CACHE_WAL_LIMIT + 64 * CACHE_PAGE_SIZE);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body WHERE complete = 1"),
			 10000);
}

/* Every offset of a small body reads back exactly, within one page. */
static void test_small_body_every_offset(void **state)
{
	struct tcache *t = *state;
	unsigned char buf[2048];
	uint64_t size = small_size(7), off;
	size_t got = 0;

	store_small(t, 20);
	for (off = 0; off <= size; off++) {
		assert_int_equal(cache_body_read(t->c, t->mb, 7, off, buf, sizeof(buf), &got), 0);
		assert_int_equal(got, size - off);
		assert_int_equal(tcache_check(buf, 7, off, got), 0);
	}
}

/* Turn the cache file into one as the previous version made it: 4 KiB
 * pages (SQLite's default), WAL mode. */
static void make_4k(const char *path)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "PRAGMA journal_mode = DELETE; PRAGMA page_size = 4096;"
				      " VACUUM; PRAGMA journal_mode = WAL",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
}

struct ob_seen {
	int count;
	int64_t id;
	char name[64];
};

static int ob_cb(void *ctx, const struct cache_outbox_entry *e)
{
	struct ob_seen *s = ctx;

	s->count++;
	s->id = e->id;
	snprintf(s->name, sizeof(s->name), "%s", e->name);
	return 0;
}

static void populate_old(struct tcache *t, int64_t *ob_id, unsigned char *data, size_t len)
{
	struct cache_outbox_entry e = { .mailbox_id = t->mb, .name = "unsent.eml",
					.flags = "\\Seen", .internaldate = -1, .size = len,
					.message_id = "<a@b>", .created_at = 1 };

	tcache_fill(data, 99, 0, len);
	assert_int_equal(cache_outbox_put(t->c, &e, data, len, ob_id), 0);
	store_small(t, 300);
	assert_int_equal(tcache_put_body(t->c, t->mb, 1000, 3 * CACHE_BODY_CHUNK + 5, 65536), 0);
	assert_int_equal(cache_mailbox_set_state(t->c, t->mb, 100, 1001, 77, 1234), 0);
	cache_close(t->c);
	t->c = NULL;
	make_4k(t->path);
}

static void assert_kept(struct tcache *t, int64_t ob_id, const unsigned char *data, size_t len)
{
	struct cache_mailbox mb;
	struct cache_message m;
	struct ob_seen seen = { 0 };
	void *got = NULL;
	size_t got_len = 0;
	uint64_t count = 0;
	uint32_t max_uid = 0;

	assert_int_equal(cache_outbox_list(t->c, 0, ob_cb, &seen), 0);
	assert_int_equal(seen.count, 1);
	assert_int_equal(seen.id, ob_id);
	assert_string_equal(seen.name, "unsent.eml");
	assert_int_equal(cache_outbox_get_data(t->c, ob_id, &got, &got_len), 0);
	assert_int_equal(got_len, len);
	assert_memory_equal(got, data, len);
	free(got);
	assert_int_equal(cache_mailbox_get(t->c, t->mb, &mb), 0);
	assert_string_equal(mb.name, "INBOX");
	assert_int_equal(mb.uidvalidity, 100);
	assert_int_equal(mb.highestmodseq, 77);
	assert_int_equal(cache_message_count(t->c, t->mb, &count, &max_uid), 0);
	assert_int_equal(count, 300);
	assert_int_equal(max_uid, 300);
	assert_int_equal(cache_message_get(t->c, t->mb, 42, &m), 0);
	assert_int_equal(m.size, small_size(42));
	assert_string_equal(m.flags, "\\Seen");
}

/* An old cache is rebuilt with the new pages: mailboxes, metadata and the
 * outbox stay, bodies go; the cache works as a new one afterwards. */
static void test_upgrade_from_4k_keeps_outbox(void **state)
{
	struct tcache *t = *state;
	unsigned char data[5000];
	struct cache_stats st;
	int64_t ob_id = 0;
	unsigned char buf[64];
	size_t got = 0;

	populate_old(t, &ob_id, data, sizeof(data));
	t->c = tcache_open(t->path, 0);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA page_size"), CACHE_PAGE_SIZE);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	assert_kept(t, ob_id, data, sizeof(data));
	assert_false(cache_body_has(t->c, t->mb, 1, NULL));
	assert_false(cache_body_has(t->c, t->mb, 1000, NULL));
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk"), 0);
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 0);
	assert_int_equal(st.body_bytes, 0);
	/* usable again */
	assert_int_equal(tcache_put_body(t->c, t->mb, 5, 3000, 1000), 0);
	assert_int_equal(cache_body_read(t->c, t->mb, 5, 2990, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 10);
	assert_int_equal(tcache_check(buf, 5, 2990, got), 0);
	cache_close(t->c);
	t->c = NULL;
	tcache_assert_integrity(t->path);
	/* once only: the next open keeps the bodies */
	t->c = tcache_open(t->path, 0);
	assert_true(cache_body_has(t->c, t->mb, 5, NULL));
}

/* Another process holds the old file open (it cannot leave WAL mode): the
 * cache opens with its old pages and loses nothing. */
static void test_upgrade_deferred_while_in_use(void **state)
{
	struct tcache *t = *state;
	unsigned char data[700];
	int64_t ob_id = 0;
	sqlite3 *other = NULL;
	sqlite3_stmt *st = NULL;

	populate_old(t, &ob_id, data, sizeof(data));
	assert_int_equal(sqlite3_open(t->path, &other), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(other, "SELECT count(*) FROM message", -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	t->c = tcache_open(t->path, 0);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA page_size"), 4096);
	assert_kept(t, ob_id, data, sizeof(data));
	assert_true(cache_body_has(t->c, t->mb, 1000, NULL));
	sqlite3_finalize(st);
	sqlite3_close(other);
	/* the next open, alone, rebuilds */
	cache_close(t->c);
	t->c = tcache_open(t->path, 0);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA page_size"), CACHE_PAGE_SIZE);
	assert_kept(t, ob_id, data, sizeof(data));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_new_file_has_big_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_bodies_size_ratio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_body_every_offset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_from_4k_keeps_outbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_deferred_while_in_use, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
