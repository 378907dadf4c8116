/*
 * fs/names: mapping between mailbox names and file names. Pure functions,
 * no state, safe from any thread.
 *
 * A mailbox's decoded (UTF-8) name is split on the server's hierarchy
 * delimiter; each part becomes one directory name. A part that cannot be a
 * file name, or that could be mistaken for something else in the tree, is
 * escaped reversibly with '%XX' (upper-case hex of the byte):
 *   - '%' itself, '/', NUL, control bytes (0x01-0x1f, 0x7f)
 *   - the whole part "." or ".." (the first '.' is escaped)
 *   - a part that looks like a message file ("123.eml": the first digit)
 *   - the empty part is the lone "%"
 * Escaping is canonical: names_unescape_part() accepts exactly what
 * names_escape_part() produces, so one mailbox has one file name.
 */
#ifndef IMAPFS_FS_NAMES_I_H
#define IMAPFS_FS_NAMES_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NAMES_ESCAPE '%'
/* "4294967295.eml" plus NUL */
#define NAMES_MESSAGE_MAX 16

/* Escape one name part of len bytes (may hold NUL). Returns a malloc'd
 * string, or NULL with errno ENOMEM. */
char *names_escape_part(const char *part, size_t len);

/* Reverse of names_escape_part. Returns a malloc'd buffer (NUL-terminated
 * for convenience; *len_out gets the length, which counts inner NULs) or
 * NULL with errno EINVAL (not a canonical escaped name, or "", ".", "..")
 * or ENOMEM. */
char *names_unescape_part(const char *name, size_t *len_out);

/* Path of a mailbox in the tree: decoded name split on delimiter ('\0':
 * the name is one part), each part escaped, joined with '/'. malloc'd, or
 * NULL with errno ENOMEM. */
char *names_mailbox_path(const char *decoded, char delimiter);

/* Reverse of names_mailbox_path: the decoded mailbox name for a path of
 * escaped parts. NULL with errno EINVAL when a part does not unescape or
 * holds the delimiter (it could not be told apart from a hierarchy step),
 * or holds NUL. */
char *names_mailbox_from_path(const char *path, char delimiter);

/* "<uid>.eml" into buf (at least NAMES_MESSAGE_MAX bytes). Returns the
 * length. */
int names_message_format(uint32_t uid, char *buf, size_t size);

/* true and *uid_out if name is exactly a message file name: decimal UID
 * 1..4294967295 without leading zeros, then ".eml". */
bool names_message_parse(const char *name, uint32_t *uid_out);

#endif
