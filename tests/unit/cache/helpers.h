/*
 * Shared helpers of the cache unit tests: a private temporary folder per
 * test, body contents that can be checked byte by byte, and a raw look at
 * the database.
 */
#ifndef IMAPFS_TEST_CACHE_HELPERS_H
#define IMAPFS_TEST_CACHE_HELPERS_H

#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <unistd.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "imapfs/cache.h"
#include "cache_i.h"

struct tcache {
	char dir[256];
	char path[300];
	struct cache *c;
	int64_t mb;
};

static inline int tcache_rm_one(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(p);
}

static inline void tcache_rmrf(const char *dir)
{
	nftw(dir, tcache_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh folder under TMPDIR (or /tmp) with path "<dir>/cache.db". */
static inline void tcache_dir(struct tcache *t)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(t->dir, sizeof(t->dir), "%s/imapfs-cache-test-XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/cache.db", t->dir);
}

static inline struct cache *tcache_open(const char *path, uint64_t budget)
{
	struct cache_params p = { .body_budget = budget };
	struct cache *c = NULL;

	assert_int_equal(cache_open(path, &p, &c), 0);
	assert_non_null(c);
	return c;
}

static inline int64_t tcache_mailbox(struct cache *c, const char *name, uint32_t uidvalidity)
{
	struct cache_mailbox mb = { .name = name, .server_name = name, .delimiter = '/' };
	int64_t id = 0;

	assert_int_equal(cache_mailbox_put(c, &mb, &id), 0);
	assert_true(id > 0);
	if (uidvalidity)
		assert_int_equal(cache_mailbox_set_state(c, id, uidvalidity, 1, 0, 0), 0);
	return id;
}

/* Byte i of the body of uid: depends on both, so a misplaced chunk shows. */
static inline unsigned char tcache_byte(uint32_t uid, uint64_t i)
{
	uint64_t x = (i + 1) * 2654435761u + uid * 40503u;

	return (unsigned char)(x ^ (x >> 13) ^ (i >> 8));
}

static inline void tcache_fill(unsigned char *buf, uint32_t uid, uint64_t off, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = tcache_byte(uid, off + i);
}

static inline int tcache_check(const unsigned char *buf, uint32_t uid, uint64_t off, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (buf[i] != tcache_byte(uid, off + i))
			return -1;
	return 0;
}

/* Store a body of size bytes, written in pieces of piece bytes. */
static inline int tcache_put_body(struct cache *c, int64_t mb, uint32_t uid, uint64_t size,
				  size_t piece)
{
	struct cache_body_writer *w = NULL;
	unsigned char *buf = malloc(piece ? piece : 1);
	uint64_t off = 0;
	int ret;

	assert_non_null(buf);
	ret = cache_body_begin(c, mb, uid, size, &w);
	if (ret) {
		free(buf);
		return ret;
	}
	while (off < size) {
		size_t n = size - off < piece ? (size_t)(size - off) : piece;

		tcache_fill(buf, uid, off, n);
		ret = cache_body_write(w, buf, n);
		if (ret) {
			cache_body_abort(w);
			free(buf);
			return ret;
		}
		off += n;
	}
	free(buf);
	return cache_body_commit(w);
}

/* One integer from SQL on the calling thread's connection. */
static inline int64_t tcache_sql_int(struct cache *c, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(cache_test_db(c), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* "ok" from PRAGMA integrity_check on a separate raw connection. */
static inline void tcache_assert_integrity(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

#endif
