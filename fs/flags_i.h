/*
 * fs/flags: the value of the user.imap.flags extended attribute. Pure
 * functions, callable from any thread.
 */
#ifndef IMAPFS_FS_FLAGS_I_H
#define IMAPFS_FS_FLAGS_I_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Parse a user-given flag list (as written to user.imap.flags: flags and
 * keywords separated by spaces, tabs or newlines; a trailing NUL or newline
 * is allowed) into the canonical form sent to the server: single spaces,
 * system flags spelled as RFC 3501 does (\Seen, \Answered, \Flagged,
 * \Deleted, \Draft), duplicates (case-insensitive) dropped, order kept.
 * \Recent and other backslash names are refused, as are keywords with
 * characters outside IMAP's atom set. Returns 0 and a malloc'd *out, or
 * -EINVAL / -ENOMEM.
 */
int flags_parse(const char *in, size_t len, char **out);

/*
 * A change list: every word starts with '+' (add) or '-' (remove), e.g.
 * "+\Flagged -\Seen". Returns 1 with malloc'd *add_out and *remove_out
 * (canonical as flags_parse gives, "" when none); 0 when no word starts
 * with '+' or '-' (a replacement: use flags_parse); -EINVAL when only some
 * words do, or a word is not a valid flag; -ENOMEM.
 */
int flags_parse_change(const char *in, size_t len, char **add_out, char **remove_out);

/* cur (canonical, as flags_parse gives) with the flags of add added and
 * those of remove removed (case-insensitive; order kept, additions last).
 * malloc'd, NULL on ENOMEM. */
char *flags_apply_change(const char *cur, const char *add, const char *remove);

/* whether the space separated list holds the word of wlen bytes
 * (case-insensitive, as IMAP compares flags) */
bool flags_list_has(const char *list, const char *word, size_t wlen);

#endif
