/*
 * frame.c - [MS-NNS] encoding and decoding: the 5-byte handshake header,
 * the HandshakeError payload and the 4-byte data-frame length prefix.
 *
 * Pure functions on bytes: no I/O, no GSSAPI, no allocation, no global
 * state, so that every one can be unit-tested and fuzzed on its own.
 * Multi-byte fields are assembled byte by byte, never by casting, so the
 * code is the same on any host byte order and has no alignment needs.
 */
#include "config.h"

#include "frame.h"

void negstream__hs_header_encode(uint8_t out[NEGSTREAM__HS_HEADER_SIZE],
                                 uint8_t id, uint16_t size)
{
    out[0] = id;
    out[1] = NEGSTREAM__HS_MAJOR;
    out[2] = NEGSTREAM__HS_MINOR;
    out[3] = (uint8_t)(size >> 8);      /* the payload size is big-endian */
    out[4] = (uint8_t)size;
}

negstream__frame_rc negstream__hs_header_decode(
        const uint8_t in[NEGSTREAM__HS_HEADER_SIZE], negstream__hs_header *h)
{
    h->id = in[0];
    /* Reported for tracing only: MS-NNS says the receiver MUST ignore
     * the version, and .NET does. */
    h->major = in[1];
    h->minor = in[2];
    h->size = (uint16_t)((in[3] << 8) | in[4]);
    switch (h->id) {
    case NEGSTREAM__HS_DONE:
    case NEGSTREAM__HS_ERROR:
    case NEGSTREAM__HS_IN_PROGRESS:
        return NEGSTREAM__FRAME_OK;
    default:
        return NEGSTREAM__FRAME_BAD_ID;
    }
}

void negstream__hs_error_encode(uint8_t out[NEGSTREAM__HS_ERROR_SIZE],
                                uint32_t code)
{
    /* .NET reads the 8 bytes as a 64-bit integer and keeps its low 32
     * bits: .NET Framework and .NET Core <= 7 read it big-endian (low
     * half = bytes 4-7), .NET 8+ little-endian (low half = bytes 0-3).
     * The code little-endian in bytes 0-3 and big-endian in bytes 4-7
     * reads as the code in both (tests/interop/FINDINGS.md: a big-endian
     * code alone reads as 0 in .NET 10, which then reports neither 1790
     * nor logon denied). */
    out[0] = (uint8_t)code;
    out[1] = (uint8_t)(code >> 8);
    out[2] = (uint8_t)(code >> 16);
    out[3] = (uint8_t)(code >> 24);
    out[4] = (uint8_t)(code >> 24);
    out[5] = (uint8_t)(code >> 16);
    out[6] = (uint8_t)(code >> 8);
    out[7] = (uint8_t)code;
}

negstream__frame_rc negstream__hs_error_decode(const uint8_t *p, size_t n,
                                               uint32_t *code)
{
    if (n < NEGSTREAM__HS_ERROR_SIZE || p == NULL) {
        *code = 0;
        return NEGSTREAM__FRAME_SHORT;
    }
    /*
     * Every code fits in 32 bits.  Big-endian, its first four bytes are
     * zero; little-endian (.NET 8+), they hold the code itself, which is
     * never zero in an error message.  A little-endian 64-bit value
     * (e.g. a sign-extended HRESULT) is truncated to its low 32 bits.
     */
    if (p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0)
        *code = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
                (uint32_t)p[6] << 8 | (uint32_t)p[7];
    else
        *code = (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 |
                (uint32_t)p[1] << 8 | (uint32_t)p[0];
    return NEGSTREAM__FRAME_OK;
}

void negstream__data_len_encode(uint8_t out[NEGSTREAM__DATA_HEADER_SIZE],
                                uint32_t len)
{
    /* Little-endian, unlike the handshake header (CoreWCF#1013). */
    out[0] = (uint8_t)len;
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 24);
}

negstream__frame_rc negstream__data_len_decode(
        const uint8_t in[NEGSTREAM__DATA_HEADER_SIZE], uint32_t *len)
{
    *len = (uint32_t)in[0] | (uint32_t)in[1] << 8 |
           (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
    /* .NET reads an int32: a value with the high bit set is negative
     * there and rejected as well; unsigned, it is simply > 65536.  The
     * check comes before anyone allocates (Cyrus _plug_decode). */
    if (*len < NEGSTREAM__MIN_FRAME || *len > NEGSTREAM__MAX_FRAME)
        return NEGSTREAM__FRAME_BAD_SIZE;
    return NEGSTREAM__FRAME_OK;
}

size_t negstream__frame_count(size_t n)
{
    /* Not (n + 64511) / 64512: that overflows near SIZE_MAX. */
    return n / NEGSTREAM__MAX_CHUNK + (n % NEGSTREAM__MAX_CHUNK != 0);
}
