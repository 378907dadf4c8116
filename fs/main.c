/*
 * fs/main: the imapfs daemon's entry point. Parses options, gets the
 * password, connects and logs in, checks the cache, mounts, and only then
 * goes to the background: a wrong host, a refused certificate or a bad
 * password prints one line on stderr, exits non-zero and leaves nothing
 * mounted. Then it starts the pool and the kernel-notify thread and runs
 * the multithreaded FUSE loop until unmount or SIGTERM/SIGINT/SIGHUP.
 *
 * Single-threaded until pool_start(); the password stays in memory (for
 * reconnecting), is never logged, never put in an environment, and is
 * wiped at exit.
 */
#define _GNU_SOURCE
#include "fs_i.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "imapfs/log.h"
#include "recent_i.h"

#define PASSWORD_MAX 4096
/* bodies just fetched kept for the next read: budget, and the largest */
#define MAIN_RECENT_BYTES (8u << 20)
#define MAIN_RECENT_MAX_BODY (128u << 10)

static void main_strip_line(char *s)
{
	s[strcspn(s, "\r\n")] = '\0';
}

/* Run cmd with /bin/sh -c; the first line of its stdout is the password. */
static int main_password_command(const char *cmd, char *buf, size_t size, char *err, size_t errlen)
{
	int fds[2], status = 0;
	size_t used = 0;
	pid_t pid, w;

	if (pipe2(fds, O_CLOEXEC) != 0) {
		snprintf(err, errlen, "password command: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "password command: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		ssize_t n;

		if (used + 1 >= size) {
			char drain[256];

			n = read(fds[0], drain, sizeof(drain)); /* rest: discarded */
		} else {
			n = read(fds[0], buf + used, size - 1 - used);
			if (n > 0)
				used += (size_t)n;
		}
		if (n == 0)
			break;
		if (n < 0 && errno != EINTR)
			break;
	}
	close(fds[0]);
	buf[used] = '\0';
	while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
		;
	if (w < 0) {
		/* e.g. ECHILD with SIGCHLD ignored: no exit status to trust */
		snprintf(err, errlen, "password command: waitpid: %s", strerror(errno));
		explicit_bzero(buf, size);
		return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		explicit_bzero(buf, size);
		snprintf(err, errlen, "password command failed (%s %d)",
			 WIFEXITED(status) ? "exit status" : "signal",
			 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		return -1;
	}
	main_strip_line(buf);
	if (buf[0] == '\0') {
		snprintf(err, errlen, "password command printed an empty password");
		return -1;
	}
	return 0;
}

static int main_password_stdin(char *buf, size_t size, char *err, size_t errlen)
{
	size_t used = 0;

	/* byte by byte: nothing after the first line is consumed */
	while (used + 1 < size) {
		char c;
		ssize_t n = read(STDIN_FILENO, &c, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || c == '\n')
			break;
		buf[used++] = c;
	}
	buf[used] = '\0';
	main_strip_line(buf); /* a lone "\r" is no password either */
	if (buf[0] == '\0') {
		snprintf(err, errlen, "no password on standard input");
		return -1;
	}
	return 0;
}

/* The terminal as it was before the prompt turned echo off, for the signal
 * handler: a SIGINT (or SIGTERM, SIGHUP, SIGQUIT) while the user types must
 * not leave the terminal without echo. */
static struct termios main_tty_saved;
static const int main_prompt_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
#define MAIN_PROMPT_NSIG (sizeof(main_prompt_signals) / sizeof(main_prompt_signals[0]))

static void main_prompt_signal(int sig)
{
	int saved_errno = errno;

	tcsetattr(STDIN_FILENO, TCSANOW, &main_tty_saved); /* async-signal-safe */
	signal(sig, SIG_DFL);
	raise(sig); /* delivered when the handler returns: ends the process */
	errno = saved_errno;
}

static int main_password_prompt(const char *user, const char *host, char *buf, size_t size,
				char *err, size_t errlen)
{
	struct sigaction sa, old_sa[MAIN_PROMPT_NSIG];
	struct termios noecho;
	size_t i;
	int r;

	if (tcgetattr(STDIN_FILENO, &main_tty_saved) != 0) {
		snprintf(err, errlen, "cannot prompt for a password: %s", strerror(errno));
		return -1;
	}
	noecho = main_tty_saved;
	noecho.c_lflag &= ~(tcflag_t)ECHO;
	noecho.c_lflag |= ECHONL;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = main_prompt_signal;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < MAIN_PROMPT_NSIG; i++) {
		sigaction(main_prompt_signals[i], NULL, &old_sa[i]);
		if (old_sa[i].sa_handler != SIG_IGN) /* e.g. nohup: stays ignored */
			sigaction(main_prompt_signals[i], &sa, NULL);
	}
	fprintf(stderr, "Password for %s@%s: ", user, host);
	fflush(stderr);
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho) != 0) {
		snprintf(err, errlen, "cannot turn off echo for the password: %s", strerror(errno));
		r = -1;
		goto out_signals;
	}
	r = main_password_stdin(buf, size, err, errlen);
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &main_tty_saved) != 0) {
		snprintf(err, errlen, "cannot turn echo back on: %s", strerror(errno));
		r = -1;
	}
out_signals:
	for (i = 0; i < MAIN_PROMPT_NSIG; i++)
		sigaction(main_prompt_signals[i], &old_sa[i], NULL);
	return r;
}

static char *main_get_password(const struct fs_options *o, char *err, size_t errlen)
{
	char *buf = malloc(PASSWORD_MAX);
	int r;

	if (!buf) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	mlock(buf, PASSWORD_MAX);
	if (o->password_command)
		r = main_password_command(o->password_command, buf, PASSWORD_MAX, err, errlen);
	else if (o->password_stdin)
		r = main_password_stdin(buf, PASSWORD_MAX, err, errlen);
	else if (isatty(STDIN_FILENO))
		r = main_password_prompt(o->user, o->host, buf, PASSWORD_MAX, err, errlen);
	else {
		snprintf(err, errlen, "no password: give -o password_command=CMD or -o password_stdin");
		r = -1;
	}
	if (r) {
		explicit_bzero(buf, PASSWORD_MAX);
		free(buf);
		return NULL;
	}
	return buf;
}

static void main_free_password(char *pw)
{
	if (!pw)
		return;
	explicit_bzero(pw, PASSWORD_MAX);
	munlock(pw, PASSWORD_MAX);
	free(pw);
}

int main(int argc, char **argv)
{
	struct fs_options opts;
	struct fs fs;
	struct imap_session *first = NULL;
	struct imap_error ierr = { 0 };
	struct cache_params cparams = { 0 };
	struct fuse_loop_config *loop_config = NULL;
	struct fuse_session *se = NULL;
	struct stat st;
	char err[512];
	bool mounted = false, signals_set = false;
	int r, ret = 1;

	/*
	 * glibc gives each new thread its own malloc arena (up to 8 per core),
	 * and each arena keeps its freed memory: with the FUSE threads and the
	 * workers that held about a quarter of the daemon's peak RSS. Two
	 * arenas measured no slower.
	 */
	mallopt(M_ARENA_MAX, 2);
	memset(&fs, 0, sizeof(fs));
	if (options_parse(argc, argv, &opts, err, sizeof(err)) != 0) {
		fprintf(stderr, "imapfs: %s\n", err);
		options_free(&opts);
		return 1;
	}
	if (opts.show_help) {
		options_print_usage(argv[0]);
		options_free(&opts);
		return 0;
	}
	if (opts.show_version) {
		printf("imapfs %s (libfuse %s)\n", IMAPFS_VERSION, fuse_pkgversion());
		options_free(&opts);
		return 0;
	}
	log_init("imapfs", opts.debug ? LOG_LEVEL_TRACE : LOG_LEVEL_WARN, false);

	fs.opts = &opts;
	fs.uid = getuid();
	fs.gid = getgid();
	fs.mount_time = time(NULL);
	fs.timeout_ms = (int)opts.timeout * 1000;
	pthread_mutex_init(&fs.list_lock, NULL);
	pthread_mutex_init(&fs.body_write_lock, NULL);
	pthread_mutex_init(&fs.handles_lock, NULL);
	pthread_mutex_init(&fs.quota_lock, NULL);
	fs_cond_init(&fs.list_cond);
	if (tree_init(&fs) != 0) {
		fprintf(stderr, "imapfs: out of memory\n");
		goto out;
	}

	/* what can be checked locally fails before a password is asked for */
	if (stat(opts.mountpoint, &st) != 0) {
		fprintf(stderr, "imapfs: mount point %s: %s\n", opts.mountpoint, strerror(errno));
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "imapfs: mount point %s: %s\n", opts.mountpoint, strerror(ENOTDIR));
		goto out;
	}
	se = fuse_session_new(&opts.fuse_args, &fs_ops, sizeof(fs_ops), &fs);
	if (!se)
		goto out; /* libfuse said which option */
	fs.se = se;

	fs.password = main_get_password(&opts, err, sizeof(err));
	if (!fs.password) {
		fprintf(stderr, "imapfs: %s\n", err);
		goto out;
	}
	fs.params.host = opts.host;
	fs.params.port = opts.port;
	fs.params.tls = opts.tls;
	fs.params.cafile = opts.cafile;
	fs.params.user = opts.user;
	fs.params.password = fs.password;
	fs.params.io_timeout_ms = fs.timeout_ms;
	fs.params.trace = opts.debug;

	if (imap_global_init() != 0) {
		fprintf(stderr, "imapfs: TLS library initialisation failed\n");
		goto out;
	}
	/* connect and log in before anything is mounted */
	if (imap_session_open(&fs.params, &first, &ierr) != 0) {
		fprintf(stderr, "imapfs: %s:%u: %s\n", opts.host, opts.port,
			ierr.reason[0] ? ierr.reason : imap_error_kind_name(ierr.kind));
		goto out;
	}
	/* the cache must open too; it is reopened after the fork below */
	cparams.body_budget = opts.cache_size;
	r = cache_open(opts.cache_path, &cparams, &fs.cache);
	if (r) {
		fprintf(stderr, "imapfs: cache %s: %s\n", opts.cache_path, strerror(-r));
		goto out;
	}
	cache_close(fs.cache);
	fs.cache = NULL;

	if (fuse_set_signal_handlers(se) != 0) {
		fprintf(stderr, "imapfs: cannot set signal handlers\n");
		goto out;
	}
	signals_set = true;
	if (fuse_session_mount(se, opts.mountpoint) != 0) {
		fprintf(stderr, "imapfs: cannot mount on %s\n", opts.mountpoint);
		goto out;
	}
	mounted = true;
	if (fuse_daemonize(opts.foreground) != 0) {
		fprintf(stderr, "imapfs: cannot go to the background\n");
		goto out;
	}
	if (!opts.foreground)
		log_init("imapfs", LOG_LEVEL_WARN, true);

	r = cache_open(opts.cache_path, &cparams, &fs.cache);
	if (r) {
		log_errorx("cache %s: %s", opts.cache_path, strerror(-r));
		goto out;
	}
	/* bodies just fetched, for the read that follows (none: reads use
	 * the cache, a little slower) */
	fs.recent = recent_new(MAIN_RECENT_BYTES, MAIN_RECENT_MAX_BODY);
	r = pool_new(&fs, opts.connections, first, &fs.pool);
	if (r) {
		log_errorx("pool: %s", strerror(-r));
		goto out;
	}
	first = NULL; /* the pool's now */
	r = notify_new(se, &fs.notify);
	if (r == 0)
		r = pool_start(fs.pool);
	if (r) {
		log_errorx("threads: %s", strerror(-r));
		goto out;
	}
	/* the mailbox list and the listings, so the first ls finds them ready */
	if (sync_mailbox_list(&fs, 0) == 0)
		sync_prefetch_listings(&fs);

	loop_config = fuse_loop_cfg_create();
	if (!loop_config) {
		log_errorx("out of memory");
		goto out;
	}
	fuse_loop_cfg_set_clone_fd(loop_config, 0);
	fuse_loop_cfg_set_idle_threads(loop_config, 16);
	fuse_loop_cfg_set_max_threads(loop_config, 64);
	r = fuse_session_loop_mt(se, loop_config);
	ret = r < 0 ? 1 : 0;

out:
	if (mounted)
		fuse_session_unmount(se);
	pool_free(fs.pool);
	notify_free(fs.notify);
	if (loop_config)
		fuse_loop_cfg_destroy(loop_config);
	if (se) {
		if (signals_set)
			fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
	}
	imap_session_close(first);
	ops_free_open_handles(&fs);
	cache_close(fs.cache);
	log_debug("reads that waited for the server: %llu, %llu ms in all; waits for the cache "
		  "writer: %llu, %llu ms in all; bodies put in the page cache at open: %llu",
		  (unsigned long long)fs.stat_read_waits,
		  (unsigned long long)(fs.stat_read_wait_us / 1000),
		  (unsigned long long)fs.stat_lock_waits,
		  (unsigned long long)(fs.stat_lock_wait_us / 1000),
		  (unsigned long long)fs.stat_open_stores);
	if (fs.recent) {
		struct recent_stats rs;

		recent_stats(fs.recent, &rs);
		log_debug("recent bodies: %llu reads served from memory, %llu not, %llu dropped "
			  "unread", (unsigned long long)rs.hits, (unsigned long long)rs.misses,
			  (unsigned long long)rs.evicted);
	}
	recent_free(fs.recent);
	sync_pins_free(&fs);
	tree_free(&fs);
	main_free_password(fs.password);
	pthread_mutex_destroy(&fs.list_lock);
	pthread_mutex_destroy(&fs.body_write_lock);
	pthread_mutex_destroy(&fs.handles_lock);
	pthread_mutex_destroy(&fs.quota_lock);
	pthread_cond_destroy(&fs.list_cond);
	options_free(&opts);
	return ret;
}
