/*
 * fuzz_hs.c - libFuzzer target: the [MS-NNS] handshake message parser.
 *
 * The input is read the way the handshake loop reads a peer: a 5-byte
 * header (negstream__hs_header_decode), then as many payload bytes as it
 * announces, then the next header, until the input ends or an unknown
 * message id stops the reader.  An error message's payload goes through
 * negstream__hs_error_decode.  Every payload is copied into a buffer of
 * exactly its size, so AddressSanitizer catches any read past it.
 *
 * Besides "no crash", the target checks what the decoders promise:
 *  - the header fields are the input bytes (size big-endian), and the
 *    encoder gives the same 5 bytes back for a version 1.0 header;
 *  - the decoder accepts exactly the ids 0x14, 0x15 and 0x16;
 *  - an error payload shorter than 8 bytes is SHORT with code 0; a
 *    big-endian one (first four bytes zero) gives its last four bytes; a
 *    little-endian one gives the low 32 bits of the 64-bit value; the
 *    decoded code re-encodes to a payload that decodes to it again.
 * A broken promise aborts, which libFuzzer reports as a crash.
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
            fprintf(stderr, "fuzz_hs: %s:%d: broken promise: %s\n",       \
                    __FILE__, __LINE__, #cond);                           \
            abort();                                                      \
        }                                                                 \
    } while (0)

static void check_error_payload(const uint8_t *p, size_t n)
{
    uint8_t again[NEGSTREAM__HS_ERROR_SIZE];
    uint32_t code = 0xdeadbeef;
    negstream__frame_rc rc;

    rc = negstream__hs_error_decode(p, n, &code);
    if (n < NEGSTREAM__HS_ERROR_SIZE) {
        CHECK(rc == NEGSTREAM__FRAME_SHORT);
        CHECK(code == 0);
        return;
    }
    CHECK(rc == NEGSTREAM__FRAME_OK);
    if (p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0) {
        /* Big-endian, as .NET Framework and .NET Core <= 7 send it. */
        CHECK(code == ((uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
                       (uint32_t)p[6] << 8 | (uint32_t)p[7]));
    } else {
        /* Little-endian (.NET 8+): the low four bytes, in order. */
        CHECK(code == ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                       (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24));
    }
    if (code != 0) {
        uint32_t back = 0;

        negstream__hs_error_encode(again, code);
        CHECK(negstream__hs_error_decode(again, NEGSTREAM__HS_ERROR_SIZE,
                                         &back) == NEGSTREAM__FRAME_OK);
        CHECK(back == code);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    /* The error decoder on its own, over the whole input, and with the
     * NULL/0 a caller passes for an empty payload. */
    check_error_payload(data, size);
    check_error_payload(NULL, 0);

    while (size - off >= NEGSTREAM__HS_HEADER_SIZE) {
        uint8_t hdr[NEGSTREAM__HS_HEADER_SIZE], again[sizeof(hdr)];
        negstream__hs_header h;
        negstream__frame_rc rc;
        uint8_t *payload;
        size_t plen;

        memcpy(hdr, data + off, sizeof(hdr));
        rc = negstream__hs_header_decode(hdr, &h);
        CHECK(h.id == hdr[0] && h.major == hdr[1] && h.minor == hdr[2]);
        CHECK(h.size == (uint16_t)(hdr[3] << 8 | hdr[4]));
        CHECK((rc == NEGSTREAM__FRAME_OK) ==
              (h.id == NEGSTREAM__HS_DONE || h.id == NEGSTREAM__HS_ERROR ||
               h.id == NEGSTREAM__HS_IN_PROGRESS));
        CHECK(rc == NEGSTREAM__FRAME_OK || rc == NEGSTREAM__FRAME_BAD_ID);
        if (h.major == NEGSTREAM__HS_MAJOR && h.minor == NEGSTREAM__HS_MINOR) {
            negstream__hs_header_encode(again, h.id, h.size);
            CHECK(memcmp(again, hdr, sizeof(hdr)) == 0);
        }
        off += sizeof(hdr);
        if (rc != NEGSTREAM__FRAME_OK)
            break;                  /* the handshake fails here */

        /* A payload cut short by EOF is what a reader sees before it
         * reports the truncation; decode what there is. */
        plen = h.size;
        if (plen > size - off)
            plen = size - off;
        payload = malloc(plen > 0 ? plen : 1);
        CHECK(payload != NULL);
        memcpy(payload, data + off, plen);
        if (h.id == NEGSTREAM__HS_ERROR)
            check_error_payload(plen > 0 ? payload : NULL, plen);
        free(payload);
        off += plen;
    }
    return 0;
}
