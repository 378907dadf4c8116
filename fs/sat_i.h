/*
 * fs/sat: saturating arithmetic for byte counts that come from the server
 * (RFC822.SIZE is a 64-bit number a hostile server chooses): a sum of them
 * sticks at UINT64_MAX instead of wrapping to a small number.
 */
#ifndef IMAPFS_FS_SAT_I_H
#define IMAPFS_FS_SAT_I_H

#include <stdint.h>

static inline uint64_t sat_add_u64(uint64_t a, uint64_t b)
{
	uint64_t r;

	return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

#endif
