/*
 * Internals shared by the files of imap/: error reporting and defaults.
 */
#ifndef IMAPFS_IMAP_I_H
#define IMAPFS_IMAP_I_H

#include "imapfs/imap.h"

#define IMAP_DEFAULT_MAX_LINE ((size_t)64 * 1024)
#define IMAP_DEFAULT_MAX_LITERAL ((uint64_t)256 * 1024 * 1024)
#define IMAP_DEFAULT_MAX_DEPTH 32u
#define IMAP_DEFAULT_MAX_UNTAGGED 1000000u
#define IMAP_DEFAULT_MAX_BUFFERED_LITERAL ((size_t)1024 * 1024)
#define IMAP_DEFAULT_TIMEOUT_MS 30000

/* Fill *err (may be NULL): kind, response code (NULL for none) and a
 * printf-style one-line reason. */
void imap_error_set(struct imap_error *err, enum imap_error_kind kind, const char *code,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Copy limits, replacing zero fields by the defaults. */
void imap_limits_resolve(const struct imap_limits *in, struct imap_limits *out);

#endif
