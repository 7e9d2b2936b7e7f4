/*
 * scrub.h - hygiene for secrets and for text from the network: wiping
 * memory that held a password or decrypted plaintext before it is freed,
 * and replacing control characters in peer-supplied text.
 *
 * Knows nothing but bytes: no GSSAPI, no streams.
 */
#ifndef NEGSTREAM_SCRUB_H
#define NEGSTREAM_SCRUB_H

#include <stddef.h>

/* Zeroes n bytes at p in a way the compiler may not drop as a dead store
 * (explicit_bzero where the C library has it, else a loop through a
 * volatile pointer).  p may be NULL when n is 0. */
void negstream__wipe(void *p, size_t n);

/* Replaces every control character (the bytes 0x00 to 0x1f and 0x7f) in
 * s[0..n) by '?', so that text from the peer cannot end a line, move a
 * terminal's cursor or change its colours where it is shown.  Bytes from
 * 0x80 up (UTF-8) are kept.  Returns how many were replaced. */
size_t negstream__scrub(char *s, size_t n);

#endif
