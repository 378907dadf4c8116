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

/* A cache file as version 1 of the schema made it, 4 KiB pages, with an
 * unsent message in the outbox, metadata and two bodies. */
static const char v1_file_sql[] =
	"PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;"
	"CREATE TABLE mailbox (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	" server_name TEXT NOT NULL UNIQUE, delimiter INTEGER NOT NULL DEFAULT 0,"
	" attrs INTEGER NOT NULL DEFAULT 0, uidvalidity INTEGER NOT NULL DEFAULT 0,"
	" uidnext INTEGER NOT NULL DEFAULT 0, highestmodseq INTEGER NOT NULL DEFAULT 0,"
	" synced_at INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE message (mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL,"
	" size INTEGER NOT NULL, internaldate INTEGER NOT NULL, modseq INTEGER NOT NULL,"
	" flags TEXT NOT NULL, PRIMARY KEY (mailbox_id, uid)) WITHOUT ROWID;"
	"CREATE TABLE body (id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox_id INTEGER NOT NULL,"
	" uid INTEGER NOT NULL, size INTEGER NOT NULL, complete INTEGER NOT NULL,"
	" last_read INTEGER NOT NULL);"
	"CREATE INDEX body_key ON body(mailbox_id, uid, complete);"
	"CREATE INDEX body_lru ON body(last_read) WHERE complete = 1;"
	"CREATE TABLE body_chunk (id INTEGER PRIMARY KEY, data BLOB NOT NULL);"
	"CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" mailbox_id INTEGER NOT NULL, name TEXT NOT NULL, flags TEXT NOT NULL,"
	" internaldate INTEGER NOT NULL, size INTEGER NOT NULL, message_id TEXT NOT NULL,"
	" created_at INTEGER NOT NULL, data BLOB NOT NULL);"
	"INSERT INTO mailbox VALUES(1, 'INBOX', 'INBOX', 47, 0, 100, 4, 77, 1234);"
	"INSERT INTO message VALUES(1, 1, 3, 1700000000, 5, '\\Seen');"
	"INSERT INTO message VALUES(1, 3, 4, 1700000001, 6, '');"
	"INSERT INTO body VALUES(1, 1, 1, 3, 1, 10);"
	"INSERT INTO body VALUES(2, 1, 3, 4, 1, 11);"
	"INSERT INTO body_chunk VALUES(1 << 20, x'616263');"
	"INSERT INTO body_chunk VALUES(2 << 20, x'64656667');"
	"INSERT INTO outbox VALUES(7, 1, 'draft.eml', '\\Draft', -1, 5, '<x@y>', 99, x'68656c6c6f');"
	"PRAGMA user_version = 1;";

static void test_upgrade_from_version_1(void **state)
{
	struct tcache *t = *state;
	struct ob_seen seen = { 0 };
	struct cache_message m;
	struct cache_mailbox mb;
	struct cache_stats st;
	unsigned char buf[16];
	sqlite3 *db = NULL;
	void *data = NULL;
	size_t len = 0, got = 0;
	char sql[400];

	cache_close(t->c);
	t->c = NULL;
	snprintf(sql, sizeof(sql), "%s-wal", t->path);
	unlink(sql);
	snprintf(sql, sizeof(sql), "%s-shm", t->path);
	unlink(sql);
	assert_int_equal(unlink(t->path), 0);
	assert_int_equal(sqlite3_open(t->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, v1_file_sql, NULL, NULL, NULL), SQLITE_OK);
	snprintf(sql, sizeof(sql), "PRAGMA application_id = %d", CACHE_APPLICATION_ID);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	t->c = tcache_open(t->path, 0);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA page_size"), CACHE_PAGE_SIZE);
	/* the outbox, the mailbox and the metadata stay */
	assert_int_equal(cache_outbox_list(t->c, 1, ob_cb, &seen), 0);
	assert_int_equal(seen.count, 1);
	assert_int_equal(seen.id, 7);
	assert_string_equal(seen.name, "draft.eml");
	/* version 3 added the held mark: an entry from before is not held */
	assert_int_equal(tcache_sql_int(t->c, "SELECT held FROM outbox WHERE id = 7"), 0);
	assert_int_equal(cache_outbox_get_data(t->c, 7, &data, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(data, "hello", 5);
	free(data);
	assert_int_equal(cache_mailbox_get(t->c, 1, &mb), 0);
	assert_int_equal(mb.uidvalidity, 100);
	assert_int_equal(mb.highestmodseq, 77);
	assert_int_equal(cache_message_get(t->c, 1, 3, &m), 0);
	assert_int_equal(m.size, 4);
	assert_int_equal(m.modseq, 6);
	/* the bodies go */
	assert_false(cache_body_has(t->c, 1, 1, NULL));
	assert_false(cache_body_has(t->c, 1, 3, NULL));
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 0);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk"), 0);
	/* and new ones work, the next outbox id follows the old ones */
	assert_int_equal(tcache_put_body(t->c, 1, 3, 4, 4), 0);
	assert_int_equal(cache_body_read(t->c, 1, 3, 1, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 3);
	assert_int_equal(tcache_check(buf, 3, 1, got), 0);
	{
		struct cache_outbox_entry e = { .mailbox_id = 1, .name = "b.eml",
						.internaldate = -1, .size = 1 };
		int64_t id = 0;

		assert_int_equal(cache_outbox_put(t->c, &e, "x", 1, &id), 0);
		assert_true(id > 7);
	}
	cache_close(t->c);
	t->c = NULL;
	tcache_assert_integrity(t->path);
	t->c = tcache_open(t->path, 0);
	assert_true(cache_body_has(t->c, 1, 3, NULL));
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
		cmocka_unit_test_setup_teardown(test_upgrade_from_version_1, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
