/*
 * fuzz_frame.c - libFuzzer target: the data-frame parser.
 *
 * The input is split into frames the way the reader in stream.c does:
 * a 4-byte little-endian length (negstream__data_len_decode), refused
 * unless 5 <= length <= 65536 before anything is allocated, then exactly
 * that many bytes of token, copied into a buffer of exactly that size
 * (AddressSanitizer catches a read past it), then the next frame.  EOF at
 * a frame boundary ends the stream cleanly; EOF inside a prefix or a
 * token, or a bad length, stops it as the reader's I/O error would.
 *
 * Checked promises (a broken one aborts, reported as a crash):
 *  - the decoded length is the little-endian value of the four bytes,
 *    accepted exactly when it is in 5..65536, and re-encodes to them;
 *  - the frames taken plus what was left cover the input exactly;
 *  - negstream__frame_count(n), for n read from the input, is the least
 *    number of 64512-byte chunks holding n bytes, without overflowing
 *    near SIZE_MAX.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "fuzz_frame: %s:%d: broken promise: %s\n",    \
                    __FILE__, __LINE__, #cond);                           \
            abort();                                                      \
        }                                                                 \
    } while (0)

static void check_frame_count(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    size_t i, want, got;

    for (i = 0; i < n && i < sizeof(v); i++)
        v |= (uint64_t)p[i] << (8 * i);
    if ((uint64_t)(size_t)v != v)
        return;
    got = negstream__frame_count((size_t)v);
    /* ceil(v / 64512), written so that it cannot overflow. */
    want = (size_t)(v / NEGSTREAM__MAX_CHUNK) +
           (v % NEGSTREAM__MAX_CHUNK != 0 ? 1 : 0);
    CHECK(got == want);
    if (v == 0)
        CHECK(got == 0);
    else
        CHECK((uint64_t)(got - 1) * NEGSTREAM__MAX_CHUNK < v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0, frames = 0, token_bytes = 0;

    check_frame_count(data, size);

    while (off < size) {
        uint8_t hdr[NEGSTREAM__DATA_HEADER_SIZE], again[sizeof(hdr)];
        negstream__frame_rc rc;
        uint32_t len = 0, le;
        uint8_t *token;

        if (size - off < sizeof(hdr))
            break;                  /* EOF inside a length prefix */
        memcpy(hdr, data + off, sizeof(hdr));
        rc = negstream__data_len_decode(hdr, &len);
        le = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 |
             (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
        CHECK(len == le);
        CHECK((rc == NEGSTREAM__FRAME_OK) ==
              (len >= NEGSTREAM__MIN_FRAME && len <= NEGSTREAM__MAX_FRAME));
        CHECK(rc == NEGSTREAM__FRAME_OK || rc == NEGSTREAM__FRAME_BAD_SIZE);
        negstream__data_len_encode(again, len);
        CHECK(memcmp(again, hdr, sizeof(hdr)) == 0);
        if (rc != NEGSTREAM__FRAME_OK)
            break;                  /* "invalid frame size": I/O error */
        off += sizeof(hdr);
        if (size - off < len) {
            off -= sizeof(hdr);
            break;                  /* EOF inside a token */
        }
        /* Only now is the token buffer allocated, at its exact size. */
        token = malloc(len);
        CHECK(token != NULL);
        memcpy(token, data + off, len);
        CHECK(token[0] == data[off] && token[len - 1] == data[off + len - 1]);
        free(token);
        off += len;
        token_bytes += len;
        frames++;
    }
    CHECK(off <= size);
    CHECK(off == frames * NEGSTREAM__DATA_HEADER_SIZE + token_bytes);
    return 0;
}
