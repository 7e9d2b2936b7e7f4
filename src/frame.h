/*
 * frame.h - [MS-NNS] encoding and decoding.  Pure functions on bytes: no
 * I/O, no GSSAPI, no allocation, so they can be unit-tested and fuzzed.
 */
#ifndef NEGSTREAM_FRAME_H
#define NEGSTREAM_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Handshake message: id, major, minor, 16-bit big-endian payload size. */
#define NEGSTREAM__HS_HEADER_SIZE   5
#define NEGSTREAM__HS_DONE          0x14
#define NEGSTREAM__HS_ERROR         0x15
#define NEGSTREAM__HS_IN_PROGRESS   0x16
#define NEGSTREAM__HS_MAJOR         1
#define NEGSTREAM__HS_MINOR         0
#define NEGSTREAM__HS_MAX_PAYLOAD   0xFFFF
#define NEGSTREAM__HS_ERROR_SIZE    8

/* Error codes carried by a HandshakeError message. */
#define NEGSTREAM__ERR_TRUST_FAILURE   0x000006FEu  /* 1790, policy failure */
#define NEGSTREAM__ERR_LOGON_DENIED    0x8009030Cu
#define NEGSTREAM__ERR_INTERNAL        0x80090304u
#define NEGSTREAM__ERR_BAD_BINDINGS    0x80090346u  /* SEC_E_BAD_BINDINGS */

/* Data frame: 4-byte little-endian length, then one wrap token. */
#define NEGSTREAM__DATA_HEADER_SIZE 4
#define NEGSTREAM__MAX_CHUNK        64512      /* plaintext per frame */
#define NEGSTREAM__MIN_FRAME        5          /* smallest accepted length */
#define NEGSTREAM__MAX_FRAME        65536      /* largest accepted length */

typedef struct negstream__hs_header {
    uint8_t  id;
    uint8_t  major, minor;
    uint16_t size;
} negstream__hs_header;

typedef enum {
    NEGSTREAM__FRAME_OK = 0,
    NEGSTREAM__FRAME_BAD_ID = -1,      /* not 0x14 / 0x15 / 0x16 */
    NEGSTREAM__FRAME_BAD_SIZE = -2,    /* data length outside 5..65536 */
    NEGSTREAM__FRAME_SHORT = -3        /* fewer bytes than the field needs */
} negstream__frame_rc;

/* Writes the 5-byte header for 'id' and 'size'. */
void negstream__hs_header_encode(uint8_t out[NEGSTREAM__HS_HEADER_SIZE],
                                 uint8_t id, uint16_t size);

/* Decodes a header.  Version bytes are reported but never checked (MS-NNS:
 * they MUST be ignored).  Returns NEGSTREAM__FRAME_BAD_ID for an unknown
 * message id (h is still filled). */
negstream__frame_rc negstream__hs_header_decode(
        const uint8_t in[NEGSTREAM__HS_HEADER_SIZE], negstream__hs_header *h);

/* HandshakeError payload: 8 bytes, the code little-endian in the first
 * four and big-endian in the last four, so that both .NET readers (64-bit
 * big-endian before .NET 8, little-endian since, truncated to 32 bits)
 * get the code. */
void negstream__hs_error_encode(uint8_t out[NEGSTREAM__HS_ERROR_SIZE],
                                uint32_t code);

/* Decodes a HandshakeError payload of n bytes, accepting either byte order:
 * high four bytes zero -> big-endian (Fx/Core <= 7), else little-endian
 * (.NET 8+).  Returns NEGSTREAM__FRAME_SHORT when n < 8. */
negstream__frame_rc negstream__hs_error_decode(const uint8_t *p, size_t n,
                                               uint32_t *code);

/* Data-frame length prefix. */
void negstream__data_len_encode(uint8_t out[NEGSTREAM__DATA_HEADER_SIZE],
                                uint32_t len);
/* Returns NEGSTREAM__FRAME_BAD_SIZE unless 5 <= len <= 65536 (*len is
 * still set, as a signed .NET int32 would read it, for the message). */
negstream__frame_rc negstream__data_len_decode(
        const uint8_t in[NEGSTREAM__DATA_HEADER_SIZE], uint32_t *len);

/* Number of frames a write of n plaintext bytes becomes (0 for n == 0). */
size_t negstream__frame_count(size_t n);

#endif
