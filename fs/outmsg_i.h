/*
 * fs/outmsg: the bytes of a message written by the user, as they go to
 * the server with APPEND. Pure functions, callable from any thread.
 */
#ifndef IMAPFS_FS_OUTMSG_I_H
#define IMAPFS_FS_OUTMSG_I_H

#include <stddef.h>

/* The message with every bare LF turned into CRLF (a CR already before an
 * LF stays alone; nothing else changes). malloc'd with a NUL after the
 * *len_out bytes, or NULL on ENOMEM. */
char *outmsg_crlf(const char *in, size_t len, size_t *len_out);

/* The value of the Message-ID header (in the header only, name matched
 * case-insensitively, one folded continuation line joined, blanks around
 * trimmed), "" when there is none. malloc'd, NULL on ENOMEM. */
char *outmsg_message_id(const char *data, size_t len);

#endif
