/*
 * libFuzzer target: the modified UTF-7 decoder and encoder.
 *
 * Properties checked beyond "no crash": the decoder is strict, so whatever
 * it accepts must encode back to exactly the same bytes; whatever the
 * encoder accepts must decode back to the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/mutf7.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	char *dec, *enc;

	dec = mutf7_decode(in, size);
	if (dec) {
		enc = mutf7_encode(dec, strlen(dec));
		if (!enc || strlen(enc) != size || memcmp(enc, in, size) != 0)
			__builtin_trap(); /* two wire names for one UTF-8 name */
		free(enc);
		free(dec);
	}
	enc = mutf7_encode(in, size);
	if (enc) {
		dec = mutf7_decode(enc, strlen(enc));
		if (!dec || strlen(dec) != size || memcmp(dec, in, size) != 0)
			__builtin_trap(); /* encoder output the decoder refuses */
		free(dec);
		free(enc);
	}
	return 0;
}
