/* Unit tests of fs/options: the command line contract. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "options_i.h"

/* argv from string literals: options_parse may not write to them, but its
 * signature is main()'s, so hand it copies */
static int parse_args(struct fs_options *o, char *err, size_t errlen, const char *const *in)
{
	char *argv[64];
	int argc = 0, r;

	while (in[argc] && argc < 63) {
		argv[argc] = strdup(in[argc]);
		argc++;
	}
	argv[argc] = NULL;
	r = options_parse(argc, argv, o, err, errlen);
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	return r;
}

#define PARSE(o, err, ...) parse_args((o), (err), sizeof(err), (const char *[]){ "imapfs", __VA_ARGS__, NULL })

static int setup_env(void **state)
{
	(void)state;
	setenv("USER", "localuser", 1);
	setenv("HOME", "/home/localuser", 1);
	unsetenv("XDG_CACHE_HOME");
	return 0;
}

static bool fuse_args_have(const struct fs_options *o, const char *needle)
{
	for (int i = 0; i < o->fuse_args.argc; i++)
		if (strstr(o->fuse_args.argv[i], needle))
			return true;
	return false;
}

static void test_minimal(void **state)
{
	struct fs_options o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "mail.example.org", "/mnt/m"), 0);
	assert_string_equal(o.host, "mail.example.org");
	assert_string_equal(o.user, "localuser");
	assert_int_equal(o.port, 993);
	assert_int_equal(o.tls, IMAP_TLS_IMPLICIT);
	assert_string_equal(o.mountpoint, "/mnt/m");
	assert_string_equal(o.cache_path, "/home/localuser/.cache/imapfs/localuser@mail.example.org.db");
	assert_int_equal(o.connections, OPTIONS_DEFAULT_CONNECTIONS);
	assert_int_equal(o.refresh, OPTIONS_DEFAULT_REFRESH);
	assert_false(o.foreground);
	assert_false(o.debug);
	assert_false(o.ro);
	assert_null(o.password_command);
	assert_false(o.password_stdin);
	assert_string_equal(o.fuse_args.argv[0], "imapfs");
	assert_true(fuse_args_have(&o, "fsname=imapfs#localuser@mail.example.org"));
	assert_true(fuse_args_have(&o, "subtype=imapfs"));
	options_free(&o);
}

static void test_full(void **state)
{
	struct fs_options o;
	char err[256];

	(void)state;
	setenv("XDG_CACHE_HOME", "/xdg", 1);
	assert_int_equal(PARSE(&o, err, "-d", "-o", "tls=starttls,cafile=/ca.pem",
			       "-o", "password_command=cat /p", "-ocache_size=10M,connections=8",
			       "-o", "refresh=1", "-o", "ro,allow_other,max_read=65536",
			       "me@example.com@127.0.0.1", "mnt"),
			 0);
	assert_string_equal(o.user, "me@example.com");
	assert_string_equal(o.host, "127.0.0.1");
	assert_int_equal(o.port, 143);
	assert_int_equal(o.tls, IMAP_TLS_STARTTLS);
	assert_string_equal(o.cafile, "/ca.pem");
	assert_string_equal(o.password_command, "cat /p");
	assert_int_equal(o.cache_size, 10u << 20);
	assert_int_equal(o.connections, 8);
	assert_int_equal(o.refresh, 1);
	assert_true(o.debug);
	assert_true(o.foreground);
	assert_true(o.ro);
	assert_string_equal(o.cache_path, "/xdg/imapfs/me@example.com@127.0.0.1.db");
	/* FUSE options pass through; allow_other brings default_permissions */
	assert_true(fuse_args_have(&o, "ro"));
	assert_true(fuse_args_have(&o, "allow_other"));
	assert_true(fuse_args_have(&o, "max_read=65536"));
	assert_true(fuse_args_have(&o, "default_permissions"));
	/* our own options do not */
	assert_false(fuse_args_have(&o, "password_command"));
	assert_false(fuse_args_have(&o, "cafile"));
	assert_false(fuse_args_have(&o, "connections"));
	options_free(&o);
	unsetenv("XDG_CACHE_HOME");
}

/* the default cache file stays in imapfs/: no '/' from USER or HOST, no
 * leading '.' */
static void test_cache_name(void **state)
{
	struct fs_options o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "-o", "user=../../x", "h", "/mnt/m"), 0);
	assert_string_equal(o.user, "../../x");
	assert_string_equal(o.cache_path, "/home/localuser/.cache/imapfs/_._.._x@h.db");
	options_free(&o);
	assert_int_equal(PARSE(&o, err, "a/b@h", "/mnt/m"), 0);
	assert_string_equal(o.cache_path, "/home/localuser/.cache/imapfs/a_b@h.db");
	options_free(&o);
	setenv("XDG_CACHE_HOME", "/xdg", 1);
	assert_int_equal(PARSE(&o, err, "-o", "user=.hidden", "h", "/mnt/m"), 0);
	assert_string_equal(o.cache_path, "/xdg/imapfs/_hidden@h.db");
	options_free(&o);
	/* an explicit cache= is the user's own choice: untouched */
	assert_int_equal(PARSE(&o, err, "-o", "cache=../c.db", "a/b@h", "/mnt/m"), 0);
	assert_string_equal(o.cache_path, "../c.db");
	options_free(&o);
	unsetenv("XDG_CACHE_HOME");
}

static void test_ports(void **state)
{
	struct fs_options o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "-o", "port=10993", "h", "m"), 0);
	assert_int_equal(o.port, 10993);
	options_free(&o);
	assert_int_equal(PARSE(&o, err, "u@h:10143", "-o", "tls=none", "m"), 0);
	assert_int_equal(o.port, 10143);
	assert_int_equal(o.tls, IMAP_TLS_NONE);
	assert_string_equal(o.user, "u");
	options_free(&o);
	assert_int_equal(PARSE(&o, err, "[::1]:1993", "m"), 0);
	assert_string_equal(o.host, "::1");
	assert_int_equal(o.port, 1993);
	options_free(&o);
	assert_int_equal(PARSE(&o, err, "::1", "m"), 0);
	assert_string_equal(o.host, "::1");
	assert_int_equal(o.port, 993);
	options_free(&o);
	assert_int_equal(PARSE(&o, err, "-o", "user=bob", "h", "m"), 0);
	assert_string_equal(o.user, "bob");
	options_free(&o);
}

static void check_fails(const char *needle, const char *const *argv)
{
	struct fs_options o;
	char err[256];

	assert_int_equal(parse_args(&o, err, sizeof(err), argv), -1);
	if (!strstr(err, needle))
		fail_msg("error '%s' lacks '%s'", err, needle);
	options_free(&o);
}

#define FAILS(needle, ...) check_fails(needle, (const char *[]){ "imapfs", __VA_ARGS__, NULL })

static void test_errors(void **state)
{
	(void)state;
	FAILS("usage", "h");
	FAILS("unexpected", "h", "m", "extra");
	FAILS("never accepted", "-o", "password=secret", "h", "m");
	FAILS("never accepted", "-o", "pass=secret", "h", "m");
	FAILS("tls=", "-o", "tls=ssl", "h", "m");
	FAILS("port=", "-o", "port=0", "h", "m");
	FAILS("port=", "-o", "port=65536", "h", "m");
	FAILS("port=", "-o", "port=12x", "h", "m");
	FAILS("invalid server", "h:99999", "m");
	FAILS("invalid server", "@h", "m");
	FAILS("invalid server", "u@", "m");
	FAILS("invalid server", "[::1", "m");
	FAILS("port given twice", "-o", "port=1", "h:2", "m");
	FAILS("user given twice", "-o", "user=a", "b@h", "m");
	FAILS("connections=", "-o", "connections=0", "h", "m");
	FAILS("connections=", "-o", "connections=1000", "h", "m");
	FAILS("cache_size=", "-o", "cache_size=12Q", "h", "m");
	FAILS("refresh=", "-o", "refresh=-1", "h", "m");
	FAILS("exclude", "-o", "password_stdin,password_command=x", "h", "m");
	FAILS("unknown option", "-x", "h", "m");
}

static void test_help_version(void **state)
{
	struct fs_options o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "--help"), 0);
	assert_true(o.show_help);
	options_free(&o);
	assert_int_equal(PARSE(&o, err, "-V"), 0);
	assert_true(o.show_version);
	options_free(&o);
}

static void test_sizes(void **state)
{
	uint64_t v = 0;

	(void)state;
	assert_int_equal(options_parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(options_parse_size("123", &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(options_parse_size("64K", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(options_parse_size("10M", &v), 0);
	assert_int_equal(v, 10u << 20);
	assert_int_equal(options_parse_size("2G", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(options_parse_size("1GiB", &v), 0);
	assert_int_equal(v, 1ull << 30);
	assert_int_equal(options_parse_size("", &v), -EINVAL);
	assert_int_equal(options_parse_size("M", &v), -EINVAL);
	assert_int_equal(options_parse_size("-1", &v), -EINVAL);
	assert_int_equal(options_parse_size("1X", &v), -EINVAL);
	assert_int_equal(options_parse_size("1MM", &v), -EINVAL);
	assert_int_equal(options_parse_size("99999999999999999999", &v), -EINVAL);
	assert_int_equal(options_parse_size("17179869184G", &v), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_minimal, setup_env),
		cmocka_unit_test_setup(test_full, setup_env),
		cmocka_unit_test_setup(test_cache_name, setup_env),
		cmocka_unit_test_setup(test_ports, setup_env),
		cmocka_unit_test_setup(test_errors, setup_env),
		cmocka_unit_test_setup(test_help_version, setup_env),
		cmocka_unit_test(test_sizes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
