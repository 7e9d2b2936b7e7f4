/*
 * reasm.h - the resumable message reader: bytes that arrived, in pieces of
 * any size, become whole [MS-NNS] messages (a handshake message or a data
 * frame).  Pure: no I/O, no GSSAPI, no allocation; frame.c decodes the
 * headers.  The blocking path and the event path both use it, and it is
 * unit-tested and fuzzed on its own.
 *
 * It never reads past the message it is assembling: the caller asks where
 * the next bytes go and how many the message still needs
 * (negstream__reasm_want), reads at most that many straight into place,
 * and reports them (negstream__reasm_advance).  So a data frame's body is
 * received in the caller's frame buffer with no copy, and nothing that
 * follows a handshake (the first data frames) is consumed by it.
 *
 * The header is kept inside the reader; the body goes to a buffer the
 * caller supplies once the header is known and its length has been
 * checked (NEGSTREAM__REASM_BODY): a length out of range is an error
 * before anything is allocated for it.
 */
#ifndef NEGSTREAM_REASM_H
#define NEGSTREAM_REASM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "frame.h"

typedef enum {
    NEGSTREAM__REASM_DATA = 0,      /* 4-byte LE length (5..65536) + token */
    NEGSTREAM__REASM_HANDSHAKE      /* 5-byte header (id, version, BE size) */
} negstream__reasm_kind;

typedef enum {
    NEGSTREAM__REASM_MORE = 0,      /* need more bytes (want says where) */
    NEGSTREAM__REASM_BODY = 1,      /* header done: supply a body buffer of
                                       r->len bytes (set_body) */
    NEGSTREAM__REASM_MESSAGE = 2,   /* a whole message is there */
    NEGSTREAM__REASM_BAD_SIZE = -1, /* data length outside 5..65536 */
    NEGSTREAM__REASM_BAD_ID = -2    /* handshake id not 0x14/0x15/0x16 */
} negstream__reasm_rc;

typedef struct negstream__reasm {
    negstream__reasm_kind kind;
    int                   state;      /* private */
    uint8_t               hdr[NEGSTREAM__HS_HEADER_SIZE];
    size_t                hdr_got;
    uint32_t              len;        /* body length, once the header is in */
    negstream__hs_header  hs;         /* handshake header, once it is in */
    uint8_t              *body;       /* the caller's, from set_body */
    size_t                body_got;
} negstream__reasm;

/* Starts (or restarts, after a message) assembling a message of 'kind'. */
void negstream__reasm_init(negstream__reasm *r, negstream__reasm_kind kind);

/* Where the next bytes go and the most the message still needs (> 0).
 * Only valid while the state is MORE (after init, or after advance or
 * set_body returned MORE). */
void negstream__reasm_want(const negstream__reasm *r, uint8_t **dst,
                           size_t *n);

/* n (<= what want gave) bytes were written at the place want gave.
 * Returns MORE, BODY, MESSAGE or an error; after an error the reader
 * stays in error until init. */
negstream__reasm_rc negstream__reasm_advance(negstream__reasm *r, size_t n);

/* Gives the body buffer (at least r->len bytes) after BODY; returns MORE.
 * (A handshake message with an empty payload never asks for one: advance
 * returns MESSAGE as soon as its header is in.) */
negstream__reasm_rc negstream__reasm_set_body(negstream__reasm *r,
                                              uint8_t *body);

/* Copying variant for callers that already hold the bytes (tests, fuzz):
 * consumes from in[0..n) what the message needs, *used says how much, and
 * returns as advance does.  On BODY the caller calls set_body and feeds the
 * rest of its bytes again. */
negstream__reasm_rc negstream__reasm_feed(negstream__reasm *r,
                                          const uint8_t *in, size_t n,
                                          size_t *used);

/* Bytes of the current message received so far (header and body), so that
 * an end of stream can be told apart: 0 is a clean end between messages,
 * anything else a message cut short. */
size_t negstream__reasm_received(const negstream__reasm *r);

/* The size of the message's header: 4 for data, 5 for handshake. */
size_t negstream__reasm_header_size(const negstream__reasm *r);

#endif
