/*
 * reasm.c - the resumable message reader (see reasm.h): a header kept
 * inside, then a body in the caller's buffer, fed in pieces of any size.
 * Pure: frame.c decodes the headers; no I/O, no allocation.
 */
#include "config.h"

#include <string.h>

#include "reasm.h"

enum { ST_HEADER = 0, ST_NEED_BODY, ST_BODY, ST_DONE, ST_ERROR };

void negstream__reasm_init(negstream__reasm *r, negstream__reasm_kind kind)
{
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->state = ST_HEADER;
}

size_t negstream__reasm_header_size(const negstream__reasm *r)
{
    return r->kind == NEGSTREAM__REASM_HANDSHAKE
           ? NEGSTREAM__HS_HEADER_SIZE : NEGSTREAM__DATA_HEADER_SIZE;
}

void negstream__reasm_want(const negstream__reasm *r, uint8_t **dst,
                           size_t *n)
{
    if (r->state == ST_HEADER) {
        *dst = (uint8_t *)r->hdr + r->hdr_got;
        *n = negstream__reasm_header_size(r) - r->hdr_got;
    } else if (r->state == ST_BODY) {
        *dst = r->body + r->body_got;
        *n = r->len - r->body_got;
    } else {
        *dst = NULL;
        *n = 0;
    }
}

/* The header is complete: decode and check it. */
static negstream__reasm_rc header_done(negstream__reasm *r)
{
    if (r->kind == NEGSTREAM__REASM_HANDSHAKE) {
        if (negstream__hs_header_decode(r->hdr, &r->hs)
            != NEGSTREAM__FRAME_OK) {
            r->state = ST_ERROR;
            return NEGSTREAM__REASM_BAD_ID;
        }
        r->len = r->hs.size;
        if (r->len == 0) {
            r->state = ST_DONE;
            return NEGSTREAM__REASM_MESSAGE;
        }
    } else if (negstream__data_len_decode(r->hdr, &r->len)
               != NEGSTREAM__FRAME_OK) {
        /* Rejected before the caller allocates anything for it. */
        r->state = ST_ERROR;
        return NEGSTREAM__REASM_BAD_SIZE;
    }
    r->state = ST_NEED_BODY;
    return NEGSTREAM__REASM_BODY;
}

negstream__reasm_rc negstream__reasm_advance(negstream__reasm *r, size_t n)
{
    switch (r->state) {
    case ST_HEADER:
        r->hdr_got += n;
        if (r->hdr_got < negstream__reasm_header_size(r))
            return NEGSTREAM__REASM_MORE;
        return header_done(r);
    case ST_BODY:
        r->body_got += n;
        if (r->body_got < r->len)
            return NEGSTREAM__REASM_MORE;
        r->state = ST_DONE;
        return NEGSTREAM__REASM_MESSAGE;
    case ST_NEED_BODY:
        return NEGSTREAM__REASM_BODY;
    case ST_DONE:
        return NEGSTREAM__REASM_MESSAGE;
    default:
        return r->kind == NEGSTREAM__REASM_HANDSHAKE
               ? NEGSTREAM__REASM_BAD_ID : NEGSTREAM__REASM_BAD_SIZE;
    }
}

negstream__reasm_rc negstream__reasm_set_body(negstream__reasm *r,
                                              uint8_t *body)
{
    if (r->state != ST_NEED_BODY)
        return negstream__reasm_advance(r, 0);
    r->body = body;
    r->body_got = 0;
    r->state = ST_BODY;
    return NEGSTREAM__REASM_MORE;
}

negstream__reasm_rc negstream__reasm_feed(negstream__reasm *r,
                                          const uint8_t *in, size_t n,
                                          size_t *used)
{
    negstream__reasm_rc rc = NEGSTREAM__REASM_MORE;
    size_t done = 0;

    while (r->state == ST_HEADER || r->state == ST_BODY) {
        uint8_t *dst;
        size_t want;

        if (done == n)
            break;
        negstream__reasm_want(r, &dst, &want);
        if (want > n - done)
            want = n - done;
        memcpy(dst, in + done, want);
        done += want;
        rc = negstream__reasm_advance(r, want);
    }
    if (r->state != ST_HEADER && r->state != ST_BODY)
        rc = negstream__reasm_advance(r, 0);
    *used = done;
    return rc;
}

size_t negstream__reasm_received(const negstream__reasm *r)
{
    return r->hdr_got + r->body_got;
}
