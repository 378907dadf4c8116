/*
 * fs/options: command line parsing (see options_i.h). Runs once in main()
 * before any thread exists.
 */
#define _GNU_SOURCE
#include "options_i.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
	KEY_HELP,
	KEY_VERSION,
	KEY_FOREGROUND,
	KEY_DEBUG,
	KEY_TLS,
	KEY_PORT,
	KEY_USER,
	KEY_CAFILE,
	KEY_PASSWORD_COMMAND,
	KEY_PASSWORD_STDIN,
	KEY_PASSWORD,
	KEY_CACHE,
	KEY_CACHE_SIZE,
	KEY_CONNECTIONS,
	KEY_REFRESH,
	KEY_TIMEOUT,
	KEY_TRASH,
	KEY_RO,
	KEY_ALLOW_OTHER,
};

static const struct fuse_opt options_template[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("tls=", KEY_TLS),
	FUSE_OPT_KEY("port=", KEY_PORT),
	FUSE_OPT_KEY("user=", KEY_USER),
	FUSE_OPT_KEY("cafile=", KEY_CAFILE),
	FUSE_OPT_KEY("password_command=", KEY_PASSWORD_COMMAND),
	FUSE_OPT_KEY("password_stdin", KEY_PASSWORD_STDIN),
	FUSE_OPT_KEY("password=", KEY_PASSWORD),
	FUSE_OPT_KEY("pass=", KEY_PASSWORD),
	FUSE_OPT_KEY("cache=", KEY_CACHE),
	FUSE_OPT_KEY("cache_size=", KEY_CACHE_SIZE),
	FUSE_OPT_KEY("connections=", KEY_CONNECTIONS),
	FUSE_OPT_KEY("refresh=", KEY_REFRESH),
	FUSE_OPT_KEY("timeout=", KEY_TIMEOUT),
	FUSE_OPT_KEY("trash=", KEY_TRASH),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_END,
};

struct options_ctx {
	struct fs_options *o;
	char *err;
	size_t errlen;
	bool failed;
	char *spec;          /* [USER@]HOST[:PORT] as given */
	char *user_opt;      /* -o user= */
	uint16_t port_opt;   /* -o port= */
	bool tls_given;
	bool allow_other;
};

static int options_fail(struct options_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int options_fail(struct options_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	if (!ctx->failed) {
		va_start(ap, fmt);
		vsnprintf(ctx->err, ctx->errlen, fmt, ap);
		va_end(ap);
	}
	ctx->failed = true;
	return -1;
}

int options_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = 1ull << 10;
		end++;
		break;
	case 'm':
	case 'M':
		mult = 1ull << 20;
		end++;
		break;
	case 'g':
	case 'G':
		mult = 1ull << 30;
		end++;
		break;
	case 't':
	case 'T':
		mult = 1ull << 40;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end == 'i' && mult > 1)
		end++;
	if ((*end == 'B' || *end == 'b') && mult >= 1)
		end++;
	if (*end)
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -EINVAL;
	*out = v * mult;
	return 0;
}

static int options_parse_uint(const char *s, unsigned long min, unsigned long max,
			      unsigned long *out)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int options_parse_hostspec(const char *spec, char **user_out, char **host_out,
			   uint16_t *port_out)
{
	const char *at = strrchr(spec, '@');
	const char *hp = at ? at + 1 : spec;
	const char *host_end, *port_str = NULL;
	const char *host_start = hp;
	unsigned long port = 0;
	char *user = NULL, *host = NULL;

	if (at && at == spec)
		return -EINVAL;
	if (*hp == '[') {
		host_start = hp + 1;
		host_end = strchr(host_start, ']');
		if (!host_end)
			return -EINVAL;
		if (host_end[1] == ':')
			port_str = host_end + 2;
		else if (host_end[1])
			return -EINVAL;
	} else {
		const char *colon = strchr(hp, ':');

		if (colon && !strchr(colon + 1, ':')) {
			host_end = colon;
			port_str = colon + 1;
		} else {
			host_end = hp + strlen(hp); /* none, or a bare IPv6 address */
		}
	}
	if (host_end == host_start)
		return -EINVAL;
	if (port_str && options_parse_uint(port_str, 1, 65535, &port))
		return -EINVAL;
	if (at) {
		user = strndup(spec, (size_t)(at - spec));
		if (!user)
			return -ENOMEM;
	}
	host = strndup(host_start, (size_t)(host_end - host_start));
	if (!host) {
		free(user);
		return -ENOMEM;
	}
	*user_out = user;
	*host_out = host;
	*port_out = (uint16_t)port;
	return 0;
}

static int options_set_string(char **dst, const char *value)
{
	char *copy = strdup(value);

	if (!copy)
		return -1;
	free(*dst);
	*dst = copy;
	return 0;
}

static int options_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options_ctx *ctx = data;
	struct fs_options *o = ctx->o;
	const char *value = strchr(arg, '=');
	unsigned long n;

	value = value ? value + 1 : "";
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (!ctx->spec)
			return options_set_string(&ctx->spec, arg);
		if (!o->mountpoint)
			return options_set_string(&o->mountpoint, arg);
		return options_fail(ctx, "unexpected argument '%s'", arg);
	case FUSE_OPT_KEY_OPT:
		if (arg[0] == '-')
			return options_fail(ctx, "unknown option '%s' (see --help)", arg);
		return 1; /* a FUSE mount option */
	case KEY_HELP:
		o->show_help = true;
		return 0;
	case KEY_VERSION:
		o->show_version = true;
		return 0;
	case KEY_FOREGROUND:
		o->foreground = true;
		return 0;
	case KEY_DEBUG:
		o->debug = true;
		o->foreground = true;
		return 0;
	case KEY_TLS:
		if (strcmp(value, "implicit") == 0)
			o->tls = IMAP_TLS_IMPLICIT;
		else if (strcmp(value, "starttls") == 0)
			o->tls = IMAP_TLS_STARTTLS;
		else if (strcmp(value, "none") == 0)
			o->tls = IMAP_TLS_NONE;
		else
			return options_fail(ctx, "tls= must be implicit, starttls or none, not '%s'",
					    value);
		ctx->tls_given = true;
		return 0;
	case KEY_PORT:
		if (options_parse_uint(value, 1, 65535, &n))
			return options_fail(ctx, "port= needs a number 1-65535, not '%s'", value);
		ctx->port_opt = (uint16_t)n;
		return 0;
	case KEY_USER:
		if (!*value)
			return options_fail(ctx, "user= needs a name");
		return options_set_string(&ctx->user_opt, value);
	case KEY_CAFILE:
		if (!*value)
			return options_fail(ctx, "cafile= needs a path");
		return options_set_string(&o->cafile, value);
	case KEY_PASSWORD_COMMAND:
		if (!*value)
			return options_fail(ctx, "password_command= needs a command");
		return options_set_string(&o->password_command, value);
	case KEY_PASSWORD_STDIN:
		if (strcmp(arg, "password_stdin") != 0)
			return options_fail(ctx, "unknown option '%s'", arg);
		o->password_stdin = true;
		return 0;
	case KEY_PASSWORD:
		return options_fail(ctx, "a password is never accepted on the command line: "
					 "use -o password_command=CMD or -o password_stdin");
	case KEY_CACHE:
		if (!*value)
			return options_fail(ctx, "cache= needs a path");
		return options_set_string(&o->cache_path, value);
	case KEY_CACHE_SIZE:
		if (options_parse_size(value, &o->cache_size))
			return options_fail(ctx, "cache_size= needs a size like 500M, not '%s'",
					    value);
		return 0;
	case KEY_CONNECTIONS:
		if (options_parse_uint(value, 1, OPTIONS_MAX_CONNECTIONS, &n))
			return options_fail(ctx, "connections= needs a number 1-%d, not '%s'",
					    OPTIONS_MAX_CONNECTIONS, value);
		o->connections = (unsigned)n;
		return 0;
	case KEY_REFRESH:
		if (options_parse_uint(value, 0, 86400, &n))
			return options_fail(ctx, "refresh= needs seconds 0-86400, not '%s'", value);
		o->refresh = (unsigned)n;
		return 0;
	case KEY_TIMEOUT:
		if (options_parse_uint(value, 1, 3600, &n))
			return options_fail(ctx, "timeout= needs seconds 1-3600, not '%s'", value);
		o->timeout = (unsigned)n;
		return 0;
	case KEY_TRASH:
		return options_set_string(&o->trash, value);
	case KEY_RO:
		if (strcmp(arg, "ro") != 0)
			return 1;
		o->ro = true;
		return 1; /* also a mount flag */
	case KEY_ALLOW_OTHER:
		if (strcmp(arg, "allow_other") != 0)
			return 1;
		ctx->allow_other = true;
		return 1;
	}
	(void)outargs;
	return options_fail(ctx, "internal error parsing '%s'", arg);
}

static char *options_default_user(void)
{
	const char *u = getenv("USER");
	struct passwd *pw;

	if (u && *u)
		return strdup(u);
	pw = getpwuid(getuid());
	return pw ? strdup(pw->pw_name) : NULL;
}

/* USER@HOST.db as one file name: a '/' in either part (or a leading '.')
 * would put the cache outside imapfs/ or hide it, so they become '_'. */
static char *options_cache_name(const char *user, const char *host)
{
	char *name = NULL, *p;

	if (asprintf(&name, "%s@%s.db", user, host) < 0)
		return NULL;
	for (p = name; *p; p++)
		if (*p == '/')
			*p = '_';
	if (name[0] == '.')
		name[0] = '_';
	return name;
}

static char *options_default_cache(const char *user, const char *host)
{
	const char *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char *name, *path = NULL;
	int r;

	if (!(xdg && xdg[0] == '/') && !(home && *home))
		return NULL;
	name = options_cache_name(user, host);
	if (!name)
		return NULL;
	if (xdg && xdg[0] == '/')
		r = asprintf(&path, "%s/imapfs/%s", xdg, name);
	else
		r = asprintf(&path, "%s/.cache/imapfs/%s", home, name);
	free(name);
	return r < 0 ? NULL : path;
}

static int options_add_fsname(struct fs_options *o)
{
	char *opts = NULL, *fsname = NULL;
	int r = -1;

	if (asprintf(&fsname, "fsname=imapfs#%s@%s", o->user, o->host) < 0)
		return -1;
	if (fuse_opt_add_opt_escaped(&opts, fsname) == 0 &&
	    fuse_opt_add_opt(&opts, "subtype=imapfs") == 0 &&
	    fuse_opt_add_arg(&o->fuse_args, "-o") == 0 &&
	    fuse_opt_add_arg(&o->fuse_args, opts) == 0)
		r = 0;
	free(opts);
	free(fsname);
	return r;
}

int options_parse(int argc, char **argv, struct fs_options *o, char *err, size_t errlen)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options_ctx ctx = { .o = o, .err = err, .errlen = errlen };
	char *spec_user = NULL;
	uint16_t spec_port = 0;
	int r = -1;

	memset(o, 0, sizeof(*o));
	o->tls = IMAP_TLS_IMPLICIT;
	o->connections = OPTIONS_DEFAULT_CONNECTIONS;
	o->refresh = OPTIONS_DEFAULT_REFRESH;
	o->timeout = OPTIONS_DEFAULT_TIMEOUT;
	if (errlen)
		err[0] = '\0';
	if (fuse_opt_parse(&args, &ctx, options_template, options_proc) != 0) {
		if (!ctx.failed)
			options_fail(&ctx, "invalid options (see --help)");
		goto out;
	}
	o->fuse_args = args;
	args = (struct fuse_args)FUSE_ARGS_INIT(0, NULL);
	if (o->show_help || o->show_version) {
		r = 0;
		goto out;
	}
	if (!ctx.spec || !o->mountpoint) {
		options_fail(&ctx, "usage: %s [options] [USER@]HOST[:PORT] MOUNTPOINT",
			     argc > 0 ? argv[0] : "imapfs");
		goto out;
	}
	if (options_parse_hostspec(ctx.spec, &spec_user, &o->host, &spec_port)) {
		options_fail(&ctx, "invalid server '%s': expected [USER@]HOST[:PORT]", ctx.spec);
		goto out;
	}
	if (spec_user && ctx.user_opt && strcmp(spec_user, ctx.user_opt) != 0) {
		options_fail(&ctx, "user given twice: '%s' and user=%s", spec_user, ctx.user_opt);
		goto out;
	}
	if (spec_port && ctx.port_opt && spec_port != ctx.port_opt) {
		options_fail(&ctx, "port given twice: %u and port=%u", spec_port, ctx.port_opt);
		goto out;
	}
	o->user = spec_user ? spec_user : ctx.user_opt ? strdup(ctx.user_opt) : options_default_user();
	spec_user = NULL;
	if (!o->user) {
		options_fail(&ctx, "no user name: give USER@HOST or -o user=NAME");
		goto out;
	}
	o->port = spec_port ? spec_port : ctx.port_opt;
	if (!o->port)
		o->port = o->tls == IMAP_TLS_IMPLICIT ? 993 : 143;
	if (o->password_command && o->password_stdin) {
		options_fail(&ctx, "password_command and password_stdin exclude each other");
		goto out;
	}
	if (!o->cache_path) {
		o->cache_path = options_default_cache(o->user, o->host);
		if (!o->cache_path) {
			options_fail(&ctx, "no cache path: set XDG_CACHE_HOME or HOME, or -o cache=PATH");
			goto out;
		}
	}
	if (options_add_fsname(o) != 0 ||
	    (ctx.allow_other && fuse_opt_add_arg(&o->fuse_args, "-odefault_permissions") != 0)) {
		options_fail(&ctx, "out of memory");
		goto out;
	}
	r = 0;
out:
	fuse_opt_free_args(&args);
	free(spec_user);
	free(ctx.spec);
	free(ctx.user_opt);
	return r;
}

void options_free(struct fs_options *o)
{
	free(o->user);
	free(o->host);
	free(o->cafile);
	free(o->password_command);
	free(o->cache_path);
	free(o->trash);
	free(o->mountpoint);
	fuse_opt_free_args(&o->fuse_args);
	memset(o, 0, sizeof(*o));
}

void options_print_usage(const char *progname)
{
	printf("usage: %s [options] [USER@]HOST[:PORT] MOUNTPOINT\n"
	       "\n"
	       "Mount an IMAP account: mailboxes are directories, messages are <UID>.eml files.\n"
	       "\n"
	       "options:\n"
	       "    -h, --help             this help\n"
	       "    -V, --version          print the version\n"
	       "    -f                     stay in the foreground\n"
	       "    -d                     debug: protocol trace (credentials redacted), implies -f\n"
	       "    -o tls=MODE            implicit (default, port 993), starttls (port 143) or none\n"
	       "    -o port=N              server port\n"
	       "    -o user=NAME           login name (default: USER@ or the local user)\n"
	       "    -o cafile=PATH         trust this CA besides the system store\n"
	       "    -o password_command=CMD  run with /bin/sh -c; first line of its output is the password\n"
	       "    -o password_stdin      read the password from standard input\n"
	       "                           (neither, on a terminal: prompt without echo)\n"
	       "    -o cache=PATH          cache database (default $XDG_CACHE_HOME/imapfs/USER@HOST.db)\n"
	       "    -o cache_size=BYTES    budget for cached bodies (suffixes K, M, G)\n"
	       "    -o connections=N       IMAP connections in the pool (default %d)\n"
	       "    -o refresh=SECONDS     how old a listing may get before it is checked (default %d;\n"
	       "                           older ones are listed at once and checked meanwhile)\n"
	       "    -o timeout=SECONDS     bound on any wait for the server (default %d)\n"
	       "    -o ro                  read-only\n"
	       "    plus the usual FUSE mount options (allow_other, default_permissions, ...)\n",
	       progname, OPTIONS_DEFAULT_CONNECTIONS, OPTIONS_DEFAULT_REFRESH,
	       OPTIONS_DEFAULT_TIMEOUT);
}
