/*
 * Robustness of the cache: a writer killed with SIGKILL in the middle of a
 * transaction, damaged and foreign files, permissions under umask 000, and
 * a full disk (simulated with PRAGMA max_page_count on the calling
 * thread's connection).
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <sys/wait.h>

static int setup(void **state)
{
	struct tcache *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	tcache_dir(t);
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

/* A cache with 3 mailboxes, 100 messages and 5 bodies in INBOX; closed. */
static void populate(struct tcache *t)
{
	struct cache_batch *b = NULL;
	uint32_t uid;

	t->c = tcache_open(t->path, 0);
	t->mb = tcache_mailbox(t->c, "INBOX", 7);
	tcache_mailbox(t->c, "Sent", 8);
	tcache_mailbox(t->c, "Trash", 9);
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	for (uid = 1; uid <= 100; uid++) {
		struct cache_message m = { .uid = uid, .size = uid, .flags = "\\Seen" };

		assert_int_equal(cache_batch_put(b, &m), 0);
	}
	assert_int_equal(cache_batch_commit(b), 0);
	for (uid = 1; uid <= 5; uid++)
		assert_int_equal(tcache_put_body(t->c, t->mb, uid, 20000 * uid, 4096), 0);
	cache_close(t->c);
	t->c = NULL;
}

static int count_mailboxes_cb(void *ctx, const struct cache_mailbox *mb)
{
	(*(int *)ctx)++;
	(void)mb;
	return 0;
}

static int count_mailboxes(struct cache *c)
{
	int n = 0;

	assert_int_equal(cache_mailbox_list(c, count_mailboxes_cb, &n), 0);
	return n;
}

static uint64_t count_messages(struct cache *c, int64_t mb)
{
	uint64_t n = 0;

	assert_int_equal(cache_message_count(c, mb, &n, NULL), 0);
	return n;
}

/* --- SIGKILL in the middle of a write transaction --- */

static int kill_pipe = -1;
static int kill_after = 1;

/* In the child: when the chosen transaction is about to commit, tell the
 * parent and wait for the kill. */
static void hook_stop(const char *what)
{
	(void)what;
	if (--kill_after > 0)
		return;
	if (write(kill_pipe, "x", 1) != 1)
		_exit(3);
	for (;;)
		pause();
}

enum kill_what { KILL_BIG_BODY, KILL_BIG_BATCH, KILL_GROUP };

static void child_write(const char *path, enum kill_what what)
{
	struct cache_params p = { 0 };
	struct cache *c = NULL;
	struct cache_mailbox mb;
	uint32_t uid;

	if (cache_open(path, &p, &c) || cache_mailbox_get_by_name(c, "INBOX", &mb))
		_exit(2);
	cache_test_hook_before_commit = hook_stop;
	switch (what) {
	case KILL_BIG_BODY: {
		/* 40 MB; killed while its 20th chunk is being committed */
		kill_after = 20;
		tcache_put_body(c, mb.id, 1000, 40ull << 20, 1 << 16);
		break;
	}
	case KILL_BIG_BATCH: {
		struct cache_batch *b = NULL;

		kill_after = 1;
		if (cache_batch_begin(c, mb.id, &b))
			_exit(2);
		for (uid = 1; uid <= 200000; uid++) {
			struct cache_message m = { .uid = uid, .size = 5, .flags = "\\Deleted" };

			cache_batch_put(b, &m);
		}
		cache_batch_expunge(b, 1, 50);
		cache_batch_commit(b);
		break;
	}
	case KILL_GROUP:
		kill_after = 1;
		if (cache_write_begin(c))
			_exit(2);
		for (uid = 2000; uid < 2300; uid++)
			tcache_put_body(c, mb.id, uid, 50000, 50000);
		cache_write_commit(c);
		break;
	}
	_exit(4); /* the hook should have stopped us */
}

static void kill_during(struct tcache *t, enum kill_what what)
{
	int fds[2], status = 0;
	char x;
	pid_t pid;
	struct cache_stats st;
	unsigned char buf[100];
	size_t got;

	populate(t);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		kill_pipe = fds[1];
		child_write(t->path, what);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &x, 1), 1); /* the child is inside the transaction */
	close(fds[0]);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	t->c = tcache_open(t->path, 0);
	tcache_assert_integrity(t->path);
	/* what was committed before is intact, nothing of the killed writer is
	 * visible or left behind */
	assert_int_equal(count_mailboxes(t->c), 3);
	assert_int_equal(count_messages(t->c, t->mb), 100);
	assert_false(cache_body_has(t->c, t->mb, 1000, NULL));
	assert_false(cache_body_has(t->c, t->mb, 2000, NULL));
	assert_int_equal(cache_body_read(t->c, t->mb, 1000, 0, buf, sizeof(buf), &got), -ENOENT);
	assert_true(cache_body_has(t->c, t->mb, 5, NULL));
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body"), 5);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body WHERE complete = 0"), 0);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk WHERE (id >> 20)"
					      " NOT IN (SELECT id FROM body)"),
			 0);
	cache_get_stats(t->c, &st);
	assert_int_equal(st.bodies, 5);
	assert_int_equal(st.body_bytes, 20000 * 15);
	/* and it works */
	assert_int_equal(tcache_put_body(t->c, t->mb, 1000, 300000, 4096), 0);
	assert_true(cache_body_has(t->c, t->mb, 1000, NULL));
}

static void test_kill_during_big_body(void **state)
{
	kill_during(*state, KILL_BIG_BODY);
}

static void test_kill_during_big_batch(void **state)
{
	kill_during(*state, KILL_BIG_BATCH);
}

static void test_kill_during_group(void **state)
{
	kill_during(*state, KILL_GROUP);
}

/* --- damaged and foreign files --- */

static int count_aside(const struct tcache *t, off_t *size_out)
{
	char pattern[400];
	struct stat sb;
	glob_t g;
	int n;

	snprintf(pattern, sizeof(pattern), "%s.corrupt-*", t->path);
	if (glob(pattern, 0, NULL, &g) != 0)
		return 0;
	n = 0;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		if (strstr(g.gl_pathv[i], "-wal"))
			continue;
		n++;
		if (size_out && stat(g.gl_pathv[i], &sb) == 0)
			*size_out = sb.st_size;
	}
	globfree(&g);
	return n;
}

static void flip_bytes(const char *path, off_t off, size_t len)
{
	unsigned char buf[64];
	int fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	assert_true(len <= sizeof(buf));
	assert_int_equal(pread(fd, buf, len, off), (ssize_t)len);
	for (size_t i = 0; i < len; i++)
		buf[i] ^= 0xff;
	assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
	close(fd);
}

static void assert_recovered_empty(struct tcache *t, off_t damaged_size)
{
	off_t aside_size = -1;

	t->c = tcache_open(t->path, 0);
	assert_int_equal(count_mailboxes(t->c), 0);
	assert_int_equal(count_aside(t, &aside_size), 1);
	if (damaged_size >= 0)
		assert_int_equal(aside_size, damaged_size);
	tcache_assert_integrity(t->path);
	/* the fresh cache works and stays */
	t->mb = tcache_mailbox(t->c, "INBOX", 1);
	assert_int_equal(tcache_put_body(t->c, t->mb, 1, 1000, 1000), 0);
	cache_close(t->c);
	t->c = tcache_open(t->path, 0);
	assert_int_equal(count_mailboxes(t->c), 1);
	assert_int_equal(count_aside(t, NULL), 1);
}

static off_t file_size(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	return sb.st_size;
}

static void test_flipped_bytes_in_pages(void **state)
{
	struct tcache *t = *state;
	off_t size, page;

	populate(t);
	size = file_size(t->path);
	assert_true(size >= 20 * 4096);
	/* flip the header bytes of b-tree pages 2.. */
	for (page = 1; page < 12; page++)
		flip_bytes(t->path, page * 4096, 12);
	assert_recovered_empty(t, size);
}

static void test_flipped_bytes_in_header(void **state)
{
	struct tcache *t = *state;
	off_t size;

	populate(t);
	size = file_size(t->path);
	flip_bytes(t->path, 0, 16); /* "SQLite format 3" */
	assert_recovered_empty(t, size);
}

static void test_not_sqlite(void **state)
{
	struct tcache *t = *state;
	FILE *f = fopen(t->path, "w");
	int i;

	assert_non_null(f);
	for (i = 0; i < 1000; i++)
		fprintf(f, "This is not a database, line %d.\n", i);
	fclose(f);
	assert_recovered_empty(t, file_size(t->path));
}

static void test_foreign_sqlite(void **state)
{
	struct tcache *t = *state;
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(t->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE notes(x); INSERT INTO notes VALUES(1)", NULL,
				      NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_recovered_empty(t, file_size(t->path));
}

static void test_newer_schema(void **state)
{
	struct tcache *t = *state;
	sqlite3 *db = NULL;

	populate(t);
	assert_int_equal(sqlite3_open(t->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_recovered_empty(t, file_size(t->path));
}

static void test_empty_file_is_fine(void **state)
{
	struct tcache *t = *state;
	int fd = open(t->path, O_CREAT | O_WRONLY, 0600);

	assert_true(fd >= 0);
	close(fd);
	t->c = tcache_open(t->path, 0);
	assert_int_equal(count_aside(t, NULL), 0);
	assert_int_equal(tcache_sql_int(t->c, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
}

static void test_stale_wal_not_applied(void **state)
{
	struct tcache *t = *state;
	char wal[400];
	int fd;

	/* a damaged file with a WAL beside it: the WAL goes aside too */
	populate(t);
	snprintf(wal, sizeof(wal), "%s-wal", t->path);
	fd = open(wal, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "garbage", 7), 7);
	close(fd);
	flip_bytes(t->path, 0, 16);
	assert_recovered_empty(t, -1);
}

/* --- permissions --- */

static void test_permissions_umask_000(void **state)
{
	struct tcache *t = *state;
	char path[400], dir[400], wal[420];
	struct stat sb;
	mode_t old = umask(0);

	snprintf(dir, sizeof(dir), "%s/a", t->dir);
	snprintf(path, sizeof(path), "%s/a/b/cache.db", t->dir);
	t->c = tcache_open(path, 0);
	t->mb = tcache_mailbox(t->c, "INBOX", 1); /* a write: the WAL exists */
	umask(old);

	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	snprintf(dir, sizeof(dir), "%s/a/b", t->dir);
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	assert_int_equal(stat(wal, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
}

static void test_permissions_existing_folder_untouched(void **state)
{
	struct tcache *t = *state;
	struct stat sb;

	assert_int_equal(chmod(t->dir, 0750), 0);
	t->c = tcache_open(t->path, 0);
	assert_int_equal(stat(t->dir, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0750);
}

/* --- a full disk --- */

static void limit_pages(struct cache *c, int64_t extra)
{
	char sql[128];
	int64_t pages = tcache_sql_int(c, "PRAGMA page_count");

	snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld", (long long)(pages + extra));
	assert_int_equal(sqlite3_exec(cache_test_db(c), sql, NULL, NULL, NULL), SQLITE_OK);
}

static void assert_consistent(struct tcache *t)
{
	struct cache_stats st;

	cache_get_stats(t->c, &st);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body WHERE complete = 1"),
			 st.bodies);
	assert_int_equal(tcache_sql_int(t->c, "SELECT total(size) FROM body WHERE complete = 1"),
			 st.body_bytes);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body WHERE complete = 0"), 0);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM body_chunk WHERE (id >> 20)"
					      " NOT IN (SELECT id FROM body)"),
			 0);
	tcache_assert_integrity(t->path);
}

static void test_disk_full(void **state)
{
	struct tcache *t = *state;
	struct cache_outbox_entry e = { .name = "x.eml", .internaldate = -1 };
	struct cache_batch *b = NULL;
	struct cache_body_writer *w = NULL;
	static unsigned char big[1 << 20];
	int64_t id = 0;
	uint32_t uid;
	int ret;

	populate(t);
	t->c = tcache_open(t->path, 0);
	limit_pages(t->c, 20);

	/* a large body: fails while streaming or at commit, never half there */
	ret = tcache_put_body(t->c, t->mb, 50, 3u << 20, 1 << 16);
	assert_int_equal(ret, -ENOSPC);
	assert_false(cache_body_has(t->c, t->mb, 50, NULL));
	assert_consistent(t);

	/* a small body that does not fit */
	assert_int_equal(cache_body_begin(t->c, t->mb, 51, sizeof(big), &w), 0);
	assert_int_equal(cache_body_write(w, big, sizeof(big) / 8), 0);
	ret = cache_body_write(w, big, sizeof(big) - sizeof(big) / 8);
	if (ret == 0)
		ret = cache_body_commit(w);
	else
		cache_body_abort(w);
	assert_int_equal(ret, -ENOSPC);
	assert_false(cache_body_has(t->c, t->mb, 51, NULL));

	/* a big batch: nothing of it applied */
	assert_int_equal(cache_batch_begin(t->c, t->mb, &b), 0);
	for (uid = 1000; uid < 60000; uid++) {
		struct cache_message m = { .uid = uid, .size = 1, .flags = "\\Seen \\Answered" };

		assert_int_equal(cache_batch_put(b, &m), 0);
	}
	assert_int_equal(cache_batch_expunge(b, 1, 10), 0);
	assert_int_equal(cache_batch_commit(b), -ENOSPC);
	assert_int_equal(count_messages(t->c, t->mb), 100);

	/* the outbox */
	assert_int_equal(cache_outbox_put(t->c, &e, big, sizeof(big), &id), -ENOSPC);
	assert_int_equal(tcache_sql_int(t->c, "SELECT count(*) FROM outbox"), 0);

	/* a group: whatever it keeps, the totals match the database */
	assert_int_equal(cache_write_begin(t->c), 0);
	for (uid = 3000; uid < 3100; uid++) {
		ret = tcache_put_body(t->c, t->mb, uid, 20000, 20000);
		if (ret) {
			assert_int_equal(ret, -ENOSPC);
			break;
		}
	}
	assert_true(ret == -ENOSPC);
	ret = cache_write_commit(t->c);
	assert_true(ret == 0 || ret == -ENOSPC);
	assert_consistent(t);

	/* reads still work; with room again, writes too */
	assert_true(cache_body_has(t->c, t->mb, 5, NULL));
	limit_pages(t->c, 100000);
	assert_int_equal(tcache_put_body(t->c, t->mb, 50, 3u << 20, 1 << 16), 0);
	assert_int_equal(cache_outbox_put(t->c, &e, big, sizeof(big), &id), 0);
	assert_consistent(t);
	cache_close(t->c);
	t->c = tcache_open(t->path, 0);
	assert_consistent(t);
	assert_true(cache_body_has(t->c, t->mb, 50, NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_kill_during_big_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill_during_big_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill_during_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flipped_bytes_in_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flipped_bytes_in_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_sqlite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_sqlite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_file_is_fine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_wal_not_applied, setup, teardown),
		cmocka_unit_test_setup_teardown(test_permissions_umask_000, setup, teardown),
		cmocka_unit_test_setup_teardown(test_permissions_existing_folder_untouched, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
