/*
 * fuzz_reasm.c - libFuzzer target: the resumable message reader (reasm.c).
 *
 * The input is an arrival schedule and a stream:
 *
 *   byte 0      bit 7: the stream starts with handshake messages (else
 *               with data frames); bits 0-3: c, the number of piece sizes
 *               that follow (0: the stream arrives one byte at a time)
 *   bytes 1..c  piece sizes, used in turn: 0 is "all that is left"
 *   the rest    the stream: handshake messages until one with id 0x14
 *               (done), data frames after it, as on the wire
 *
 * The stream is read three times: with want / advance (the zero-copy path
 * of the library: each read returns what has arrived of the current
 * piece, at most what want asked for, as a non-blocking recv), with feed
 * (the copying path) on the same pieces shifted by one, and with feed on
 * the whole stream at once.  A plain, non-resumable parser written here
 * from negstream(7) (WIRE FORMAT), on the whole buffer, says what must
 * come out.
 *
 * Checked promises (a broken one aborts, reported as a crash):
 *  - every path delivers the plain parser's messages, in order, with the
 *    same kind, header fields and body bytes, and stops where it stops:
 *    a bad data length (outside 5..65536) or handshake id (not 0x14,
 *    0x15, 0x16) as soon as its header is in, before asking for a body;
 *  - want never asks for a byte past the current message (what it asks
 *    plus what it has is the header, or header plus body, exactly), and
 *    points where that byte belongs; each body buffer is allocated at
 *    exactly the length asked for, so AddressSanitizer sees a write past
 *    it;
 *  - received() is the current message's bytes at every step, and at the
 *    end of the input 0 exactly when it ends between messages;
 *  - a finished message or an error stays until init, and nothing more is
 *    consumed meanwhile.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reasm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "fuzz_reasm: %s:%d: broken promise: %s\n",    \
                    __FILE__, __LINE__, #cond);                           \
            abort();                                                      \
        }                                                                 \
    } while (0)

/* How the plain parser saw the stream end. */
enum { END_CLEAN = 1, END_CUT = 2 };

/* One message as the plain parser read it.  The one after the last whole
 * message (cut short, or with a bad header) is kept too: its header
 * fields are valid when hdr_in is. */
typedef struct msg {
    negstream__reasm_kind kind;
    size_t   off, hsize;
    bool     hdr_in;
    uint32_t len;
    uint8_t  id, major, minor;
} msg;

typedef struct plain {
    msg   *m;
    size_t count;           /* whole messages */
    int    end;             /* END_CLEAN, END_CUT or a reasm error */
    size_t consumed;        /* what a reader takes of the stream */
    size_t received;        /* the last message's bytes at the end */
} plain;

static negstream__reasm_kind next_kind(negstream__reasm_kind kind,
                                       uint8_t id)
{
    /* After the handshake's "done" message come data frames. */
    if (kind == NEGSTREAM__REASM_HANDSHAKE && id == 0x14)
        return NEGSTREAM__REASM_DATA;
    return kind;
}

/* negstream(7), WIRE FORMAT, read whole: a data frame is a 4-byte
 * little-endian length (5..65536) and the token; a handshake message is
 * id (0x14, 0x15, 0x16), major, minor, a 2-byte big-endian size and the
 * payload. */
static void plain_parse(const uint8_t *s, size_t n,
                        negstream__reasm_kind kind, plain *pl)
{
    size_t off = 0;

    pl->m = malloc((n / 4 + 1) * sizeof(*pl->m));
    CHECK(pl->m != NULL);
    pl->count = 0;
    for (;;) {
        msg *m = &pl->m[pl->count];
        const uint8_t *p = s + off;
        size_t left = n - off;

        memset(m, 0, sizeof(*m));
        m->kind = kind;
        m->off = off;
        m->hsize = kind == NEGSTREAM__REASM_HANDSHAKE ? 5 : 4;
        if (left == 0) {
            pl->end = END_CLEAN;
            pl->consumed = n;
            pl->received = 0;
            return;
        }
        if (left < m->hsize) {
            pl->end = END_CUT;
            pl->consumed = n;
            pl->received = left;
            return;
        }
        m->hdr_in = true;
        if (kind == NEGSTREAM__REASM_DATA) {
            m->len = (uint32_t)p[0] | (uint32_t)p[1] << 8 |
                     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            if (m->len < 5 || m->len > 65536) {
                pl->end = NEGSTREAM__REASM_BAD_SIZE;
                pl->consumed = off + 4;
                pl->received = 4;
                return;
            }
        } else {
            m->id = p[0];
            m->major = p[1];
            m->minor = p[2];
            m->len = (uint32_t)p[3] << 8 | p[4];
            if (m->id != 0x14 && m->id != 0x15 && m->id != 0x16) {
                pl->end = NEGSTREAM__REASM_BAD_ID;
                pl->consumed = off + 5;
                pl->received = 5;
                return;
            }
        }
        if (left - m->hsize < m->len) {
            pl->end = END_CUT;
            pl->consumed = n;
            pl->received = left;
            return;
        }
        off += m->hsize + m->len;
        pl->count++;
        kind = next_kind(kind, m->id);
    }
}

/* ---- the arrival schedule ---------------------------------------------- */

typedef struct pieces {
    const uint8_t *sizes;   /* NULL: one byte at a time */
    size_t count, next;
    bool   whole;           /* everything at once */
} pieces;

/* Where the next piece ends, from pos (< n). */
static size_t piece_end(pieces *pc, size_t pos, size_t n)
{
    size_t k = 1;

    if (pc->whole)
        return n;
    if (pc->sizes != NULL) {
        k = pc->sizes[pc->next % pc->count];
        pc->next++;
        if (k == 0)
            return n;
    }
    return k < n - pos ? pos + k : n;
}

/* ---- checks shared by both paths --------------------------------------- */

/* The reader is at 'got' bytes of message m: want must ask for the rest
 * of its header, or of its body, and no more, at the right place. */
static void check_want(const negstream__reasm *r, const msg *m,
                       const uint8_t *body, size_t got)
{
    uint8_t *dst = NULL;
    size_t k = 0;

    CHECK(negstream__reasm_received(r) == got);
    CHECK(negstream__reasm_header_size(r) == m->hsize);
    negstream__reasm_want(r, &dst, &k);
    CHECK(k > 0);
    if (got < m->hsize) {
        CHECK(k == m->hsize - got);
        CHECK(dst == r->hdr + got);
    } else {
        CHECK(m->hdr_in && body != NULL);
        CHECK(got + k == m->hsize + m->len);
        CHECK(dst == body + (got - m->hsize));
    }
}

/* A whole message came out: it is the plain parser's m. */
static void check_message(const negstream__reasm *r, const msg *m,
                          const uint8_t *s, const uint8_t *body)
{
    CHECK(r->kind == m->kind);
    CHECK(r->len == m->len);
    CHECK(negstream__reasm_received(r) == m->hsize + m->len);
    CHECK(memcmp(r->hdr, s + m->off, m->hsize) == 0);
    if (m->kind == NEGSTREAM__REASM_HANDSHAKE) {
        CHECK(r->hs.id == m->id);
        CHECK(r->hs.major == m->major);
        CHECK(r->hs.minor == m->minor);
        CHECK(r->hs.size == m->len);
    }
    if (m->len > 0)
        CHECK(memcmp(body, s + m->off + m->hsize, m->len) == 0);
    else
        CHECK(body == NULL);
}

/* A finished message or an error stays, consuming nothing, until init. */
static void check_sticky(negstream__reasm *r, negstream__reasm_rc rc,
                         const uint8_t *rest, size_t left)
{
    size_t got = negstream__reasm_received(r), used = 1, k = 1;
    uint8_t *dst = NULL, spare[1];
    uint8_t *body = r->body;

    CHECK(negstream__reasm_advance(r, 0) == rc);
    CHECK(negstream__reasm_feed(r, rest, left, &used) == rc);
    CHECK(used == 0);
    CHECK(negstream__reasm_set_body(r, spare) == rc);
    CHECK(r->body == body);
    negstream__reasm_want(r, &dst, &k);
    CHECK(k == 0 && dst == NULL);
    CHECK(negstream__reasm_received(r) == got);
}

/* The reader stopped with an error on message m. */
static void check_error(const negstream__reasm *r, const msg *m,
                        negstream__reasm_rc rc, const plain *pl)
{
    CHECK((int)rc == pl->end);
    CHECK(negstream__reasm_received(r) == m->hsize);
    CHECK(r->body == NULL);
    if (rc == NEGSTREAM__REASM_BAD_SIZE)
        CHECK(r->len == m->len);        /* named in the error message */
    else
        CHECK(r->hs.id == m->id);
}

/* ---- path 1: want, read into place, advance ---------------------------- */

static void run_want(const uint8_t *s, size_t n, pieces *pc,
                     negstream__reasm_kind kind, const plain *pl)
{
    negstream__reasm r;
    size_t pos = 0, end = 0, start = 0, i = 0;
    uint8_t *body = NULL;

    negstream__reasm_init(&r, kind);
    for (;;) {
        negstream__reasm_rc rc;
        const msg *m = &pl->m[i];
        uint8_t *dst;
        size_t k;

        CHECK(i <= pl->count);
        if (pos == end) {
            if (end == n)
                break;                  /* the input ends */
            end = piece_end(pc, pos, n);
            continue;
        }
        check_want(&r, m, body, pos - start);
        negstream__reasm_want(&r, &dst, &k);
        if (k > end - pos)
            k = end - pos;
        memcpy(dst, s + pos, k);
        pos += k;
        rc = negstream__reasm_advance(&r, k);
        CHECK(negstream__reasm_received(&r) == pos - start);
        if (rc == NEGSTREAM__REASM_MORE)
            continue;
        if (rc == NEGSTREAM__REASM_BODY) {
            /* Only at the end of a good header, for a non-empty body. */
            CHECK(pos - start == m->hsize && m->hdr_in && m->len > 0);
            CHECK(r.len == m->len);
            CHECK(negstream__reasm_advance(&r, 0) ==
                  NEGSTREAM__REASM_BODY);
            body = malloc(r.len);
            CHECK(body != NULL);
            CHECK(negstream__reasm_set_body(&r, body) ==
                  NEGSTREAM__REASM_MORE);
            continue;
        }
        if (rc == NEGSTREAM__REASM_MESSAGE) {
            CHECK(i < pl->count);
            check_message(&r, m, s, body);
            check_sticky(&r, rc, s + pos, n - pos);
            free(body);
            body = NULL;
            kind = next_kind(kind, m->id);
            negstream__reasm_init(&r, kind);
            CHECK(negstream__reasm_received(&r) == 0);
            start = pos;
            i++;
            continue;
        }
        CHECK(i == pl->count);
        check_error(&r, m, rc, pl);
        check_sticky(&r, rc, s + pos, n - pos);
        CHECK(pos == pl->consumed);
        free(body);
        return;
    }
    /* The input ended: where the plain parser says, with the bytes of a
     * message cut short, or 0 between messages. */
    CHECK(i == pl->count);
    CHECK(pl->end == END_CLEAN || pl->end == END_CUT);
    CHECK(negstream__reasm_received(&r) == pl->received);
    CHECK((pl->received == 0) == (pl->end == END_CLEAN));
    CHECK(pos == pl->consumed);
    free(body);
}

/* ---- path 2: feed each piece as it arrives ------------------------------ */

static void run_feed(const uint8_t *s, size_t n, pieces *pc,
                     negstream__reasm_kind kind, const plain *pl)
{
    negstream__reasm r;
    size_t pos = 0, start = 0, i = 0;
    uint8_t *body = NULL;

    negstream__reasm_init(&r, kind);
    while (pos < n) {
        size_t end = piece_end(pc, pos, n);

        for (;;) {
            const msg *m = &pl->m[i];
            negstream__reasm_rc rc;
            size_t used = (size_t)-1;

            CHECK(i <= pl->count);
            rc = negstream__reasm_feed(&r, s + pos, end - pos, &used);
            CHECK(used <= end - pos);
            pos += used;
            CHECK(negstream__reasm_received(&r) == pos - start);
            if (rc == NEGSTREAM__REASM_MORE) {
                /* All of the piece taken; the message needs more. */
                CHECK(pos == end);
                if (pos < n)
                    check_want(&r, m, body, pos - start);
                break;
            }
            if (rc == NEGSTREAM__REASM_BODY) {
                CHECK(pos - start == m->hsize && m->hdr_in && m->len > 0);
                body = malloc(r.len);
                CHECK(body != NULL);
                CHECK(negstream__reasm_set_body(&r, body) ==
                      NEGSTREAM__REASM_MORE);
                continue;
            }
            if (rc == NEGSTREAM__REASM_MESSAGE) {
                CHECK(i < pl->count);
                check_message(&r, m, s, body);
                check_sticky(&r, rc, s + pos, n - pos);
                free(body);
                body = NULL;
                kind = next_kind(kind, m->id);
                negstream__reasm_init(&r, kind);
                start = pos;
                i++;
                continue;
            }
            CHECK(i == pl->count);
            check_error(&r, m, rc, pl);
            check_sticky(&r, rc, s + pos, n - pos);
            CHECK(pos == pl->consumed);
            free(body);
            return;
        }
    }
    CHECK(i == pl->count);
    CHECK(pl->end == END_CLEAN || pl->end == END_CUT);
    CHECK(negstream__reasm_received(&r) == pl->received);
    CHECK(pos == pl->consumed);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    negstream__reasm_kind kind;
    const uint8_t *stream;
    size_t c, n;
    pieces pc;
    plain pl;

    if (size == 0)
        return 0;
    kind = data[0] & 0x80 ? NEGSTREAM__REASM_HANDSHAKE :
                            NEGSTREAM__REASM_DATA;
    c = data[0] & 0x0F;
    if (c > size - 1)
        c = size - 1;
    stream = data + 1 + c;
    n = size - 1 - c;
    plain_parse(stream, n, kind, &pl);

    memset(&pc, 0, sizeof(pc));
    pc.sizes = c > 0 ? data + 1 : NULL;
    pc.count = c;
    run_want(stream, n, &pc, kind, &pl);

    /* The same sizes from the second one on: other piece boundaries. */
    pc.next = 1;
    run_feed(stream, n, &pc, kind, &pl);

    memset(&pc, 0, sizeof(pc));
    pc.whole = true;
    run_feed(stream, n, &pc, kind, &pl);
    free(pl.m);
    return 0;
}
