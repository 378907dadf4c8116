/*
 * Modified UTF-7 (RFC 3501 5.1.3) for mailbox names, strict both ways.
 *
 * The decoder rejects what a correct encoder never produces: base64 runs
 * that encode printable US-ASCII (so "&AC8-" never becomes "/" and
 * "&AC4ALg-" never becomes ".."), NUL, unpaired surrogates, a byte count
 * that is not a whole number of UTF-16 units, bad padding bits, an
 * unterminated shift, adjacent shifts ("&AOQ-&AOQ-"), and raw 8-bit bytes.
 * The encoder rejects input that is not valid UTF-8 or contains NUL.
 */
#ifndef IMAPFS_MUTF7_H
#define IMAPFS_MUTF7_H

#include <stddef.h>

/* Modified UTF-7 -> UTF-8. Returns a malloc'd NUL-terminated string the
 * caller frees, or NULL with errno EINVAL (invalid input) or ENOMEM. */
char *mutf7_decode(const char *in, size_t len);

/* UTF-8 -> modified UTF-7. Same ownership and errors. */
char *mutf7_encode(const char *in, size_t len);

#endif
