/*
 * imapfs logging: one small module with levels, used by every layer.
 *
 * Messages go to stderr until log_init() says syslog (the daemon in the
 * background). The functions are thread-safe: each message is formatted
 * into one buffer and written with a single call.
 *
 * log_warn()/log_error() append ": strerror(errno)" (errno as it was on
 * entry); the *x variants do not (OpenSMTPD's convention).
 */
#ifndef IMAPFS_LOG_H
#define IMAPFS_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_TRACE, /* protocol trace (-d) */
};

/* ident: program name shown in front of messages. to_syslog: after the
 * daemon has gone to the background. May be called again to switch. */
void log_init(const char *ident, enum log_level level, bool to_syslog);
void log_set_level(enum log_level level);
/* true when messages at this level are emitted: guard costly trace work */
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_errorx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
