/*
 * Logging with levels to stderr or syslog. Each message is formatted into
 * one stack buffer and emitted with one write, so lines from different
 * threads never interleave. The level is read without a lock: it is an int
 * set at start-up and by -d.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "imapfs/log.h"

static const char *log_ident = "imapfs";
static enum log_level log_current_level = LOG_LEVEL_WARN;
static bool log_to_syslog;

void log_init(const char *ident, enum log_level level, bool to_syslog)
{
	if (ident)
		log_ident = ident;
	log_current_level = level;
	if (to_syslog && !log_to_syslog)
		openlog(log_ident, LOG_PID, LOG_DAEMON);
	log_to_syslog = to_syslog;
}

void log_set_level(enum log_level level)
{
	log_current_level = level;
}

bool log_enabled(enum log_level level)
{
	return level <= log_current_level;
}

__attribute__((format(printf, 3, 0))) static void log_emit(enum log_level level, int errnum,
							  const char *fmt, va_list ap)
{
	static const char *const names[] = { "error", "warning", "info", "debug", "trace" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG };
	char buf[2048];
	int n;

	if (!log_enabled(level))
		return;
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (errnum)
		n += snprintf(buf + n, sizeof(buf) - n, ": %s", strerror(errnum));
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	/* One line, no terminal control: messages carry server text (the
	 * -d trace, [ALERT]) and names, which must not drive a terminal
	 * with escape sequences or forge log lines. */
	for (int i = 0; i < n; i++)
		if (((unsigned char)buf[i] < 0x20 && buf[i] != '\t') || buf[i] == 0x7f)
			buf[i] = '?';

	if (log_to_syslog) {
		syslog(prio[level], "%s", buf);
	} else {
		char line[2200];
		int m = snprintf(line, sizeof(line), "%s: %s%s%s\n", log_ident,
				 level == LOG_LEVEL_INFO || level == LOG_LEVEL_TRACE ? "" : names[level],
				 level == LOG_LEVEL_INFO || level == LOG_LEVEL_TRACE ? "" : ": ", buf);
		if (m > 0) {
			if ((size_t)m >= sizeof(line))
				m = sizeof(line) - 1;
			ssize_t unused = write(STDERR_FILENO, line, (size_t)m);
			(void)unused;
		}
	}
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(level, 0, fmt, ap);
	va_end(ap);
}

#define LOG_FUNC(name, level, with_errno)                                                          \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		int saved = errno;                                                                 \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		log_emit(level, with_errno ? saved : 0, fmt, ap);                                  \
		va_end(ap);                                                                        \
		errno = saved;                                                                     \
	}

LOG_FUNC(log_error, LOG_LEVEL_ERROR, 1)
LOG_FUNC(log_errorx, LOG_LEVEL_ERROR, 0)
LOG_FUNC(log_warn, LOG_LEVEL_WARN, 1)
LOG_FUNC(log_warnx, LOG_LEVEL_WARN, 0)
LOG_FUNC(log_info, LOG_LEVEL_INFO, 0)
LOG_FUNC(log_debug, LOG_LEVEL_DEBUG, 0)
LOG_FUNC(log_trace, LOG_LEVEL_TRACE, 0)
