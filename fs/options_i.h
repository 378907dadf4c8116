/*
 * fs/options: the command line (sshfs-like, the contract):
 *   imapfs [options] [USER@]HOST[:PORT] MOUNTPOINT
 * Parsed once by main() before any thread starts; read-only afterwards.
 */
#ifndef IMAPFS_FS_OPTIONS_I_H
#define IMAPFS_FS_OPTIONS_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fuse_opt.h>

#include "imapfs/imap.h"

#define OPTIONS_DEFAULT_CONNECTIONS 4
#define OPTIONS_MAX_CONNECTIONS 64
#define OPTIONS_DEFAULT_REFRESH 5 /* seconds */
#define OPTIONS_DEFAULT_TIMEOUT 30 /* seconds */

struct fs_options {
	char *user;             /* from USER@ or -o user=, else the login name */
	char *host;
	uint16_t port;          /* resolved: given, or 993/143 by tls */
	enum imap_tls_mode tls;
	char *cafile;
	char *password_command;
	bool password_stdin;
	char *cache_path;       /* resolved: given, or $XDG_CACHE_HOME/imapfs/USER@HOST.db */
	uint64_t cache_size;    /* 0: unlimited */
	unsigned connections;
	unsigned refresh;       /* seconds */
	unsigned timeout;       /* seconds: bound on any wait for the server */
	char *trash;            /* for the write path; kept, unused for now */
	bool ro;
	bool foreground;
	bool debug;
	bool show_help;
	bool show_version;
	char *mountpoint;
	/* what goes to fuse_session_new: argv[0] and the FUSE -o options */
	struct fuse_args fuse_args;
};

/*
 * Parse argv into *o (zeroed first). Returns 0, or -1 with a one-line
 * reason in err. With -h or -V, returns 0 with show_help/show_version set
 * and the rest possibly incomplete. Environment used for defaults: USER,
 * XDG_CACHE_HOME, HOME. options_free() must be called in both cases.
 */
int options_parse(int argc, char **argv, struct fs_options *o, char *err, size_t errlen);
void options_free(struct fs_options *o);

/* "123", "64K", "10M", "2G" (powers of 1024). 0 or -EINVAL. */
int options_parse_size(const char *s, uint64_t *out);

/* "[USER@]HOST[:PORT]", HOST may be "[v6addr]". The user part ends at the
 * last '@' (logins are often addresses). *user_out is NULL when absent,
 * *port_out 0. 0 or -EINVAL. */
int options_parse_hostspec(const char *spec, char **user_out, char **host_out,
			   uint16_t *port_out);

/* The --help text. */
void options_print_usage(const char *progname);

#endif
