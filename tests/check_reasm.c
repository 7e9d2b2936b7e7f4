/*
 * check_reasm.c - the resumable message reader (reasm.c): data frames and
 * handshake messages fed whole, byte by byte and in every split into two
 * or three pieces; the zero-copy path (want / advance) and the copying
 * one (feed) deliver the same messages; bad lengths and ids are errors as
 * soon as the header is in, before a body buffer is asked for; the bytes
 * received so far classify an end of stream; the reader never asks for a
 * byte of the next message; errors stay until init.  Pure: no KDC, no
 * network, no threads.
 *
 * Each body buffer is allocated at exactly the length the reader asks
 * for, so AddressSanitizer and valgrind see any write past it.
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "reasm.h"

/*
 * Check's ck_assert_* records every assertion that passes (in fork mode,
 * a write to the parent per call): the drivers below check millions of
 * things, so they fail through ck_abort_msg only when a check fails.
 */
#define EXPECT_OP(a, op, b)                                               \
    do {                                                                  \
        long long a_ = (long long)(a), b_ = (long long)(b);               \
                                                                          \
        if (!(a_ op b_))                                                  \
            ck_abort_msg("%s:%d: %s %s %s failed: %lld vs %lld",          \
                         __FILE__, __LINE__, #a, #op, #b, a_, b_);        \
    } while (0)
#define EXPECT_EQ(a, b) EXPECT_OP(a, ==, b)
#define EXPECT_NE(a, b) EXPECT_OP(a, !=, b)
#define EXPECT_GT(a, b) EXPECT_OP(a, >, b)
#define EXPECT_LT(a, b) EXPECT_OP(a, <, b)
#define EXPECT_LE(a, b) EXPECT_OP(a, <=, b)
#define EXPECT(cond)                                                      \
    do {                                                                  \
        if (!(cond))                                                      \
            ck_abort_msg("%s:%d: %s failed", __FILE__, __LINE__, #cond);  \
    } while (0)
#define EXPECT_PTR_EQ(a, b) EXPECT((const void *)(a) == (const void *)(b))
#define EXPECT_PTR_NE(a, b) EXPECT((const void *)(a) != (const void *)(b))
#define EXPECT_NULL(a) EXPECT((a) == NULL)
#define EXPECT_NONNULL(a) EXPECT((a) != NULL)
#define EXPECT_MEM_EQ(a, b, n) EXPECT(memcmp((a), (b), (n)) == 0)

/* ---- a stream of messages, built for a test ----------------------------- */

#define MAX_MSGS 64

/* What one message of a stream is, as written. */
typedef struct spec_msg {
    negstream__reasm_kind kind;
    size_t   off;           /* first byte (header) in the stream */
    size_t   hsize;         /* 4 or 5 */
    uint32_t len;           /* body length as the header says */
    uint8_t  id, major, minor;      /* handshake only */
    int      bad;           /* 0, or the error its header must give */
} spec_msg;

typedef struct spec {
    uint8_t  *bytes;
    size_t    size, cap;
    spec_msg  m[MAX_MSGS];
    size_t    count;
} spec;

/* The byte at stream position i: position-dependent, so a byte delivered
 * at the wrong place shows. */
static uint8_t pat(size_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u;

    return (uint8_t)((x >> 11) ^ (uint32_t)(i >> 8));
}

static void spec_init(spec *s)
{
    memset(s, 0, sizeof(*s));
}

static void spec_free(spec *s)
{
    free(s->bytes);
    memset(s, 0, sizeof(*s));
}

static uint8_t *spec_grow(spec *s, size_t n)
{
    uint8_t *p;

    if (s->size + n > s->cap) {
        size_t cap = s->cap ? s->cap : 256;

        while (cap < s->size + n)
            cap *= 2;
        s->bytes = realloc(s->bytes, cap);
        EXPECT_NONNULL(s->bytes);
        s->cap = cap;
    }
    p = s->bytes + s->size;
    s->size += n;
    return p;
}

static spec_msg *spec_add(spec *s, negstream__reasm_kind kind, size_t hsize,
                          uint32_t len)
{
    spec_msg *m;

    EXPECT_LT(s->count, MAX_MSGS);
    m = &s->m[s->count++];
    memset(m, 0, sizeof(*m));
    m->kind = kind;
    m->off = s->size;
    m->hsize = hsize;
    m->len = len;
    return m;
}

/* A data frame of 'len' body bytes (5..65536), or, with bad set, only the
 * 4-byte header announcing 'len'. */
static void add_data(spec *s, uint32_t len)
{
    bool bad = len < NEGSTREAM__MIN_FRAME || len > NEGSTREAM__MAX_FRAME;
    spec_msg *m = spec_add(s, NEGSTREAM__REASM_DATA, 4, len);
    uint8_t *p = spec_grow(s, 4);
    size_t i;

    /* Written out by hand: little-endian. */
    p[0] = (uint8_t)len;
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 24);
    if (bad) {
        m->bad = NEGSTREAM__REASM_BAD_SIZE;
        return;
    }
    p = spec_grow(s, len);
    for (i = 0; i < len; i++)
        p[i] = pat(m->off + 4 + i);
}

/* A handshake message: header (id, version, big-endian size), then the
 * payload (none for an unknown id: the reader must stop at its header). */
static void add_hs_ver(spec *s, uint8_t id, uint8_t major, uint8_t minor,
                       uint16_t len)
{
    spec_msg *m = spec_add(s, NEGSTREAM__REASM_HANDSHAKE, 5, len);
    uint8_t *p = spec_grow(s, 5);
    size_t i;

    m->id = id;
    m->major = major;
    m->minor = minor;
    p[0] = id;
    p[1] = major;
    p[2] = minor;
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    if (id != 0x14 && id != 0x15 && id != 0x16) {
        m->bad = NEGSTREAM__REASM_BAD_ID;
        return;
    }
    p = spec_grow(s, len);
    for (i = 0; i < len; i++)
        p[i] = pat(m->off + 5 + i);
}

static void add_hs(spec *s, uint8_t id, uint16_t len)
{
    add_hs_ver(s, id, 1, 0, len);
}

/* Bytes after the last message that the reader must never consume (after
 * an error: whatever the peer sent next). */
static void add_trailer(spec *s, size_t n)
{
    uint8_t *p = spec_grow(s, n);

    memset(p, 0xEE, n);
}

/* The kind the reader is set to for message i (after the last one: data,
 * as after a handshake). */
static negstream__reasm_kind kind_of(const spec *s, size_t i)
{
    return i < s->count ? s->m[i].kind : NEGSTREAM__REASM_DATA;
}

/* ---- what a reader delivered ------------------------------------------- */

typedef struct outcome {
    size_t   messages;      /* whole messages delivered */
    int      error;         /* 0, or the error that stopped the reader */
    size_t   consumed;      /* stream bytes taken by the reader */
    size_t   received;      /* negstream__reasm_received at the end */
    uint32_t digest;        /* over every delivered message's fields and
                               body, in order */
} outcome;

static uint32_t mix(uint32_t h, uint32_t v)
{
    return (h ^ v) * 16777619u;
}

/* Checks a delivered message against the spec and folds it into o. */
static void delivered(const spec *s, size_t i, const negstream__reasm *r,
                      const uint8_t *body, outcome *o)
{
    const spec_msg *m = &s->m[i];
    size_t k;

    EXPECT_EQ(m->bad, 0);
    EXPECT_EQ(r->kind, m->kind);
    EXPECT_EQ(r->len, m->len);
    EXPECT_EQ(negstream__reasm_received(r), m->hsize + m->len);
    EXPECT_MEM_EQ(r->hdr, s->bytes + m->off, m->hsize);
    if (m->kind == NEGSTREAM__REASM_HANDSHAKE) {
        EXPECT_EQ(r->hs.id, m->id);
        EXPECT_EQ(r->hs.major, m->major);
        EXPECT_EQ(r->hs.minor, m->minor);
        EXPECT_EQ(r->hs.size, m->len);
    }
    if (m->len > 0)
        EXPECT_MEM_EQ(body, s->bytes + m->off + m->hsize, m->len);
    o->digest = mix(o->digest, (uint32_t)m->kind);
    o->digest = mix(o->digest, r->len);
    o->digest = mix(o->digest, r->hs.id);
    for (k = 0; k < m->len; k++)
        o->digest = mix(o->digest, body[k]);
    o->messages++;
}

/* The reader stopped on message i with rc: it must be that message's
 * header error, with nothing of the message consumed past its header. */
static void stopped(const spec *s, size_t i, const negstream__reasm *r,
                    int rc, outcome *o)
{
    const spec_msg *m = &s->m[i];

    EXPECT_NE(m->bad, 0);
    EXPECT_EQ(rc, m->bad);
    EXPECT_EQ(negstream__reasm_received(r), m->hsize);
    if (m->bad == NEGSTREAM__REASM_BAD_SIZE)
        EXPECT_EQ(r->len, m->len);      /* for the error message */
    else
        EXPECT_EQ(r->hs.id, m->id);
    o->error = rc;
}

/* Where the reader is inside message i after 'got' of its bytes: what
 * want must say.  Only the current message's bytes are ever asked for. */
static void check_want(const spec *s, size_t i, const negstream__reasm *r,
                       const uint8_t *body, size_t got)
{
    const spec_msg *m = &s->m[i];
    uint8_t *dst = NULL;
    size_t n = 0;

    EXPECT_EQ(negstream__reasm_received(r), got);
    negstream__reasm_want(r, &dst, &n);
    EXPECT_GT(n, 0);
    if (got < m->hsize) {
        EXPECT_EQ(n, m->hsize - got);
        EXPECT_PTR_EQ(dst, r->hdr + got);
    } else {
        EXPECT_NONNULL(body);
        EXPECT_EQ(got + n, m->hsize + m->len);
        EXPECT_PTR_EQ(dst, body + (got - m->hsize));
    }
}

/* ---- the zero-copy driver: want, read into place, advance ---------------
 *
 * The stream arrives in pieces (sizes in 'pieces', summing to at most the
 * stream's size); a read returns what has arrived and is not consumed yet,
 * at most what want asked for, as a non-blocking recv does.  When nothing
 * is left the next piece arrives; after the last one the stream ends.
 */
static void drive_want(const spec *s, const size_t *pieces, size_t npieces,
                       outcome *o)
{
    negstream__reasm r;
    size_t arrived = 0, pos = 0, next = 0, i = 0, start = 0;
    uint8_t *body = NULL;

    memset(o, 0, sizeof(*o));
    o->digest = 2166136261u;
    negstream__reasm_init(&r, kind_of(s, 0));
    EXPECT_EQ(negstream__reasm_received(&r), 0);
    for (;;) {
        negstream__reasm_rc rc;
        uint8_t *dst;
        size_t n;

        if (pos == arrived) {
            if (next == npieces)
                break;                      /* end of stream */
            arrived += pieces[next++];
            EXPECT_LE(arrived, s->size);
            continue;
        }
        EXPECT_LT(i, s->count);
        check_want(s, i, &r, body, pos - start);
        negstream__reasm_want(&r, &dst, &n);
        if (n > arrived - pos)
            n = arrived - pos;
        memcpy(dst, s->bytes + pos, n);
        pos += n;
        rc = negstream__reasm_advance(&r, n);
        EXPECT_EQ(negstream__reasm_received(&r), pos - start);
        if (rc == NEGSTREAM__REASM_MORE)
            continue;
        if (rc == NEGSTREAM__REASM_BODY) {
            /* Exactly at the end of the header, and only then. */
            EXPECT_EQ(pos - start, s->m[i].hsize);
            EXPECT_GT(r.len, 0);
            EXPECT_EQ(s->m[i].bad, 0);
            /* Asked again, it says the same until it has a body. */
            EXPECT_EQ(negstream__reasm_advance(&r, 0),
                      NEGSTREAM__REASM_BODY);
            body = malloc(r.len);
            EXPECT_NONNULL(body);
            EXPECT_EQ(negstream__reasm_set_body(&r, body),
                      NEGSTREAM__REASM_MORE);
            continue;
        }
        if (rc == NEGSTREAM__REASM_MESSAGE) {
            EXPECT_EQ(pos - start, s->m[i].hsize + s->m[i].len);
            delivered(s, i, &r, body, o);
            free(body);
            body = NULL;
            i++;
            start = pos;
            negstream__reasm_init(&r, kind_of(s, i));
            EXPECT_EQ(negstream__reasm_received(&r), 0);
            continue;
        }
        stopped(s, i, &r, rc, o);
        break;
    }
    o->consumed = pos;
    o->received = negstream__reasm_received(&r);
    free(body);
}

/* ---- the copying driver: feed each piece as it arrives ------------------ */

static void drive_feed(const spec *s, const size_t *pieces, size_t npieces,
                       outcome *o)
{
    negstream__reasm r;
    size_t pos = 0, k, i = 0, start = 0;
    uint8_t *body = NULL;
    bool done = false;

    memset(o, 0, sizeof(*o));
    o->digest = 2166136261u;
    negstream__reasm_init(&r, kind_of(s, 0));
    for (k = 0; k < npieces && !done; k++) {
        size_t end = pos + pieces[k];

        EXPECT_LE(end, s->size);
        while (!done) {
            negstream__reasm_rc rc;
            size_t used = 12345;

            rc = negstream__reasm_feed(&r, s->bytes + pos, end - pos, &used);
            EXPECT_LE(used, end - pos);
            pos += used;
            EXPECT_EQ(negstream__reasm_received(&r), pos - start);
            if (rc == NEGSTREAM__REASM_MORE) {
                /* Everything offered was taken: the message needs more. */
                EXPECT_EQ(pos, end);
                if (i < s->count)
                    check_want(s, i, &r, body, pos - start);
                break;
            }
            EXPECT_LT(i, s->count);
            if (rc == NEGSTREAM__REASM_BODY) {
                EXPECT_EQ(pos - start, s->m[i].hsize);
                body = malloc(r.len);
                EXPECT_NONNULL(body);
                EXPECT_EQ(negstream__reasm_set_body(&r, body),
                          NEGSTREAM__REASM_MORE);
            } else if (rc == NEGSTREAM__REASM_MESSAGE) {
                EXPECT_EQ(pos - start, s->m[i].hsize + s->m[i].len);
                delivered(s, i, &r, body, o);
                free(body);
                body = NULL;
                i++;
                start = pos;
                negstream__reasm_init(&r, kind_of(s, i));
            } else {
                stopped(s, i, &r, rc, o);
                done = true;
            }
        }
    }
    o->consumed = pos;
    o->received = negstream__reasm_received(&r);
    free(body);
}

/* Both drivers over one arrival schedule: they must agree with each other
 * and with the spec (every message up to the end of the input or the
 * first bad header; then the bytes of the message cut short). */
static void drive_both(const spec *s, const size_t *pieces, size_t npieces)
{
    size_t total = 0, k, i, whole = 0, boundary = 0;
    outcome a, b;

    for (k = 0; k < npieces; k++)
        total += pieces[k];
    drive_want(s, pieces, npieces, &a);
    drive_feed(s, pieces, npieces, &b);
    EXPECT_EQ(a.messages, b.messages);
    EXPECT_EQ(a.error, b.error);
    EXPECT_EQ(a.consumed, b.consumed);
    EXPECT_EQ(a.received, b.received);
    EXPECT_EQ(a.digest, b.digest);

    /* What a plain, whole-buffer reading of the spec says. */
    for (i = 0; i < s->count; i++) {
        const spec_msg *m = &s->m[i];

        if (m->bad != 0) {
            if (total >= m->off + m->hsize) {
                EXPECT_EQ(a.error, m->bad);
                EXPECT_EQ(a.consumed, m->off + m->hsize);
                EXPECT_EQ(a.received, m->hsize);
                EXPECT_EQ(a.messages, whole);
                return;
            }
            break;
        }
        if (total < m->off + m->hsize + m->len)
            break;
        whole++;
        boundary = m->off + m->hsize + m->len;
    }
    EXPECT_EQ(a.error, 0);
    EXPECT_EQ(a.messages, whole);
    /* All that arrived is consumed, up to the end of the last message (a
     * reader set to the next message takes nothing past the spec). */
    if (whole == s->count)
        EXPECT_EQ(a.consumed, boundary);
    else
        EXPECT_EQ(a.consumed, total);
    /* An end of stream here: 0 exactly at a message boundary. */
    EXPECT_EQ(a.received, a.consumed - boundary);
}

/* ---- tests: whole, byte by byte, every split ---------------------------- */

static const uint32_t data_lens[] = {
    5, 6, 7, 100, 4095, 4096, 4097, 64512, 65535, 65536
};
static const uint16_t hs_lens[] = { 0, 1, 2, 8, 255, 256, 4096, 65535 };
static const uint8_t hs_ids[] = { 0x14, 0x15, 0x16 };

/* One piece: the whole stream at once. */
static void drive_whole(const spec *s)
{
    size_t one = s->size;

    drive_both(s, &one, 1);
}

static void drive_bytes(const spec *s)
{
    size_t *pieces = malloc(s->size * sizeof(*pieces)), i;

    EXPECT_NONNULL(pieces);
    for (i = 0; i < s->size; i++)
        pieces[i] = 1;
    drive_both(s, pieces, s->size);
    free(pieces);
}

START_TEST(data_frames_whole_and_bytewise)
{
    size_t i;

    for (i = 0; i < sizeof(data_lens) / sizeof(data_lens[0]); i++) {
        spec s;

        spec_init(&s);
        add_data(&s, data_lens[i]);
        drive_whole(&s);
        drive_bytes(&s);
        spec_free(&s);
    }
    /* All of them back to back, on one reader restarted each time. */
    {
        spec s;

        spec_init(&s);
        for (i = 0; i < sizeof(data_lens) / sizeof(data_lens[0]); i++)
            add_data(&s, data_lens[i]);
        drive_whole(&s);
        drive_bytes(&s);
        spec_free(&s);
    }
}
END_TEST

START_TEST(handshake_messages_whole_and_bytewise)
{
    size_t i, j;
    spec all;

    spec_init(&all);
    for (i = 0; i < sizeof(hs_ids); i++) {
        for (j = 0; j < sizeof(hs_lens) / sizeof(hs_lens[0]); j++) {
            spec s;

            spec_init(&s);
            add_hs(&s, hs_ids[i], hs_lens[j]);
            drive_whole(&s);
            drive_bytes(&s);
            spec_free(&s);
            add_hs(&all, hs_ids[i], hs_lens[j]);
        }
    }
    drive_whole(&all);
    drive_bytes(&all);
    spec_free(&all);
}
END_TEST

/* The version bytes are carried, never checked (MS-NNS: ignored). */
START_TEST(handshake_version_ignored)
{
    spec s;

    spec_init(&s);
    add_hs_ver(&s, 0x16, 0, 0, 3);
    add_hs_ver(&s, 0x16, 2, 7, 0);
    add_hs_ver(&s, 0x14, 0xFF, 0xFF, 1);
    drive_whole(&s);
    drive_bytes(&s);
    spec_free(&s);
}
END_TEST

/* A handshake, then data frames: the reader is restarted with the other
 * kind after the last handshake message, as the stream does. */
static void mixed_spec(spec *s)
{
    spec_init(s);
    add_hs(s, 0x16, 3);
    add_hs(s, 0x14, 0);
    add_hs(s, 0x15, 8);
    add_data(s, 5);
    add_data(s, 7);
}

/* Every split of a small stream into two and three pieces (every piece
 * non-empty), and the same with a bad header at the end. */
static void every_split(const spec *s)
{
    size_t a, b, pieces[3];

    for (a = 1; a < s->size; a++) {
        pieces[0] = a;
        pieces[1] = s->size - a;
        drive_both(s, pieces, 2);
        for (b = a + 1; b < s->size; b++) {
            pieces[1] = b - a;
            pieces[2] = s->size - b;
            drive_both(s, pieces, 3);
        }
    }
}

START_TEST(every_split_in_two_and_three)
{
    spec s;

    mixed_spec(&s);
    every_split(&s);
    spec_free(&s);

    /* Small messages of each kind alone, and two of a kind. */
    spec_init(&s);
    add_hs(&s, 0x14, 0);
    add_hs(&s, 0x16, 1);
    every_split(&s);
    spec_free(&s);
    spec_init(&s);
    add_data(&s, 5);
    add_data(&s, 6);
    every_split(&s);
    spec_free(&s);

    /* A bad header after good messages, then bytes never to be read. */
    mixed_spec(&s);
    add_data(&s, 4);
    add_trailer(&s, 6);
    every_split(&s);
    spec_free(&s);
    spec_init(&s);
    add_hs(&s, 0x16, 2);
    add_hs(&s, 0x17, 0);
    add_trailer(&s, 6);
    every_split(&s);
    spec_free(&s);
}
END_TEST

/* Every prefix of a stream: the stream ends there.  received is what the
 * message cut short had, 0 exactly between messages. */
START_TEST(every_cut_classified)
{
    size_t cut, i;
    spec s;

    mixed_spec(&s);
    add_hs(&s, 0x16, 300);      /* and back to a handshake message */
    for (cut = 0; cut <= s.size; cut++) {
        size_t pieces[2] = { cut, s.size - cut };
        size_t inside = 0;
        outcome o;

        /* Where cut falls. */
        for (i = 0; i < s.count; i++) {
            size_t end = s.m[i].off + s.m[i].hsize + s.m[i].len;

            if (cut >= s.m[i].off && cut < end)
                inside = cut - s.m[i].off;
        }
        drive_want(&s, pieces, 1, &o);
        EXPECT_EQ(o.consumed, cut);
        EXPECT_EQ(o.received, inside);
        drive_feed(&s, pieces, 1, &o);
        EXPECT_EQ(o.consumed, cut);
        EXPECT_EQ(o.received, inside);
        /* And the rest arriving later still gives every message. */
        drive_both(&s, pieces, 2);
    }
    spec_free(&s);
}
END_TEST

/* Larger messages in pseudo-random pieces (1 byte to several KiB), the
 * two paths compared on each schedule. */
static uint32_t rng_next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

START_TEST(random_pieces_both_paths_agree)
{
    uint32_t seed = 0x9E3779B9u;
    size_t round, i;
    spec s;

    spec_init(&s);
    add_hs(&s, 0x16, 1200);
    add_hs(&s, 0x16, 0);
    add_hs(&s, 0x14, 90);
    for (i = 0; i < sizeof(data_lens) / sizeof(data_lens[0]); i++)
        add_data(&s, data_lens[i]);
    add_data(&s, 5);
    for (round = 0; round < 40; round++) {
        size_t *pieces = malloc(s.size * sizeof(*pieces)), n = 0, left;
        uint32_t scale = round % 4 == 0 ? 8 : round % 4 == 1 ? 300 : 9000;

        EXPECT_NONNULL(pieces);
        for (left = s.size; left > 0; ) {
            size_t p = 1 + rng_next(&seed) % scale;

            if (p > left)
                p = left;
            pieces[n++] = p;
            left -= p;
        }
        drive_both(&s, pieces, n);
        free(pieces);
    }
    spec_free(&s);
}
END_TEST

/* ---- bad headers -------------------------------------------------------- */

/* Feeds hdr one byte at a time: MORE until the last byte, then 'want';
 * never BODY. */
static negstream__reasm_rc bytewise_header(negstream__reasm *r,
                                           const uint8_t *hdr, size_t n)
{
    negstream__reasm_rc rc = NEGSTREAM__REASM_MORE;
    size_t i;

    for (i = 0; i < n; i++) {
        uint8_t *dst;
        size_t want;

        EXPECT_EQ(rc, NEGSTREAM__REASM_MORE);
        negstream__reasm_want(r, &dst, &want);
        EXPECT_EQ(want, n - i);
        *dst = hdr[i];
        rc = negstream__reasm_advance(r, 1);
        EXPECT_EQ(negstream__reasm_received(r), i + 1);
    }
    return rc;
}

/* An error stays: every call says it again and consumes nothing, the
 * body is never asked for, until init. */
static void assert_sticky(negstream__reasm *r, negstream__reasm_rc err,
                          size_t received)
{
    static const uint8_t more[16] = { 5, 0, 0, 0, 0x16, 1, 0, 0, 1 };
    uint8_t body[8], *dst = (uint8_t *)1;
    size_t used = 99, n = 99;
    int k;

    for (k = 0; k < 3; k++) {
        EXPECT_EQ(negstream__reasm_advance(r, 0), err);
        used = 99;
        EXPECT_EQ(negstream__reasm_feed(r, more, sizeof(more), &used),
                  err);
        EXPECT_EQ(used, 0);
        EXPECT_EQ(negstream__reasm_set_body(r, body), err);
        EXPECT_PTR_NE(r->body, body);
        negstream__reasm_want(r, &dst, &n);
        EXPECT_EQ(n, 0);
        EXPECT_NULL(dst);
        EXPECT_EQ(negstream__reasm_received(r), received);
    }
}

static void good_after_init(negstream__reasm *r)
{
    static const uint8_t frame[] = { 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o' };
    static const uint8_t hs[] = { 0x14, 1, 0, 0, 2, 'o', 'k' };
    uint8_t body[5];
    size_t used;

    negstream__reasm_init(r, NEGSTREAM__REASM_DATA);
    EXPECT_EQ(negstream__reasm_received(r), 0);
    EXPECT_EQ(negstream__reasm_feed(r, frame, sizeof(frame), &used),
              NEGSTREAM__REASM_BODY);
    EXPECT_EQ(used, 4);
    EXPECT_EQ(negstream__reasm_set_body(r, body),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(negstream__reasm_feed(r, frame + 4, 5, &used),
              NEGSTREAM__REASM_MESSAGE);
    EXPECT_EQ(used, 5);
    EXPECT_MEM_EQ(body, "hello", 5);

    negstream__reasm_init(r, NEGSTREAM__REASM_HANDSHAKE);
    EXPECT_EQ(negstream__reasm_feed(r, hs, sizeof(hs), &used),
              NEGSTREAM__REASM_BODY);
    EXPECT_EQ(used, 5);
    EXPECT_EQ(negstream__reasm_set_body(r, body),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(negstream__reasm_feed(r, hs + 5, 2, &used),
              NEGSTREAM__REASM_MESSAGE);
    EXPECT_MEM_EQ(body, "ok", 2);
}

static const uint32_t bad_lens[] = {
    0, 1, 2, 3, 4, 65537, 65538, 0x10000 * 2, 0x7FFFFFFF, 0x80000000u,
    0xFFFFFFFBu, 0xFFFFFFFFu
};

START_TEST(data_bad_size_at_fourth_byte)
{
    size_t i;

    for (i = 0; i < sizeof(bad_lens) / sizeof(bad_lens[0]); i++) {
        uint32_t len = bad_lens[i];
        uint8_t hdr[4] = {
            (uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
            (uint8_t)(len >> 24)
        };
        uint8_t in[64];
        negstream__reasm r;
        size_t used = 99;

        /* Byte by byte: the 4th byte gives the error. */
        negstream__reasm_init(&r, NEGSTREAM__REASM_DATA);
        EXPECT_EQ(bytewise_header(&r, hdr, 4),
                  NEGSTREAM__REASM_BAD_SIZE);
        EXPECT_EQ(r.len, len);          /* what the error names */
        EXPECT_NULL(r.body);
        assert_sticky(&r, NEGSTREAM__REASM_BAD_SIZE, 4);
        good_after_init(&r);

        /* Fed with plenty after it: exactly the header is taken. */
        memset(in, 0x41, sizeof(in));
        memcpy(in, hdr, 4);
        negstream__reasm_init(&r, NEGSTREAM__REASM_DATA);
        EXPECT_EQ(negstream__reasm_feed(&r, in, sizeof(in), &used),
                  NEGSTREAM__REASM_BAD_SIZE);
        EXPECT_EQ(used, 4);
        EXPECT_EQ(r.len, len);
        assert_sticky(&r, NEGSTREAM__REASM_BAD_SIZE, 4);
    }
}
END_TEST

/* The bounds themselves are accepted: 5 and 65536 ask for a body. */
START_TEST(data_size_bounds_accepted)
{
    static const uint32_t ok[] = { 5, 65536 };
    size_t i;

    for (i = 0; i < 2; i++) {
        uint8_t hdr[4] = {
            (uint8_t)ok[i], (uint8_t)(ok[i] >> 8), (uint8_t)(ok[i] >> 16), 0
        };
        negstream__reasm r;

        negstream__reasm_init(&r, NEGSTREAM__REASM_DATA);
        EXPECT_EQ(bytewise_header(&r, hdr, 4), NEGSTREAM__REASM_BODY);
        EXPECT_EQ(r.len, ok[i]);
    }
}
END_TEST

START_TEST(handshake_bad_id_at_fifth_byte)
{
    unsigned id;
    int bad = 0;

    for (id = 0; id <= 0xFF; id++) {
        /* Size 0 too: an unknown id is not an empty message. */
        static const uint16_t sizes[] = { 0, 1, 0xFFFF };
        size_t j;

        if (id == 0x14 || id == 0x15 || id == 0x16)
            continue;
        bad++;
        for (j = 0; j < 3; j++) {
            uint8_t hdr[5] = { (uint8_t)id, 1, 0, (uint8_t)(sizes[j] >> 8),
                               (uint8_t)sizes[j] };
            uint8_t in[32];
            negstream__reasm r;
            size_t used = 99;

            negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
            EXPECT_EQ(bytewise_header(&r, hdr, 5),
                      NEGSTREAM__REASM_BAD_ID);
            EXPECT_EQ(r.hs.id, id);     /* what the error names */
            EXPECT_NULL(r.body);
            assert_sticky(&r, NEGSTREAM__REASM_BAD_ID, 5);

            memset(in, 0x41, sizeof(in));
            memcpy(in, hdr, 5);
            negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
            EXPECT_EQ(negstream__reasm_feed(&r, in, sizeof(in), &used),
                      NEGSTREAM__REASM_BAD_ID);
            EXPECT_EQ(used, 5);
            assert_sticky(&r, NEGSTREAM__REASM_BAD_ID, 5);
            good_after_init(&r);
        }
    }
    EXPECT_EQ(bad, 253);
}
END_TEST

/* A handshake header that would be a fine data frame length is still read
 * as a handshake header (and the other way round): the kind decides. */
START_TEST(kind_decides_the_header)
{
    /* As data: a length of 0x00010016 = 65558, too big, at the 4th byte.
     * As a handshake: an in-progress message (version 0.1) with an empty
     * payload, whole only at the 5th byte. */
    static const uint8_t b[] = { 0x16, 0x00, 0x01, 0x00, 0x00 };
    negstream__reasm r;
    size_t used;

    negstream__reasm_init(&r, NEGSTREAM__REASM_DATA);
    EXPECT_EQ(negstream__reasm_header_size(&r), 4);
    EXPECT_EQ(negstream__reasm_feed(&r, b, sizeof(b), &used),
              NEGSTREAM__REASM_BAD_SIZE);
    EXPECT_EQ(used, 4);
    EXPECT_EQ(r.len, 0x00010016u);

    negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
    EXPECT_EQ(negstream__reasm_header_size(&r), 5);
    EXPECT_EQ(negstream__reasm_feed(&r, b, 4, &used),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(used, 4);
    EXPECT_EQ(negstream__reasm_feed(&r, b + 4, 1, &used),
              NEGSTREAM__REASM_MESSAGE);
    EXPECT_EQ(r.hs.id, 0x16);
    EXPECT_EQ(r.hs.major, 0);
    EXPECT_EQ(r.hs.minor, 1);
    EXPECT_EQ(r.len, 0);
}
END_TEST

/* ---- states: empty payloads, what each call says in each state ---------- */

START_TEST(empty_handshake_payload_is_message_without_body)
{
    size_t i;

    for (i = 0; i < sizeof(hs_ids); i++) {
        uint8_t in[] = { hs_ids[i], 1, 0, 0, 0, 0x16, 1, 0, 0, 0 };
        uint8_t body[4], *dst = (uint8_t *)1;
        negstream__reasm r;
        size_t used = 0, n = 99;
        int k;

        /* Byte by byte: the 5th byte completes it, no BODY on the way. */
        negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
        EXPECT_EQ(bytewise_header(&r, in, 5),
                  NEGSTREAM__REASM_MESSAGE);
        EXPECT_EQ(r.len, 0);
        EXPECT_EQ(r.hs.id, hs_ids[i]);
        EXPECT_EQ(r.hs.size, 0);
        EXPECT_NULL(r.body);
        EXPECT_EQ(negstream__reasm_received(&r), 5);
        /* Done stays done, and takes nothing more, until init. */
        for (k = 0; k < 2; k++) {
            EXPECT_EQ(negstream__reasm_advance(&r, 0),
                      NEGSTREAM__REASM_MESSAGE);
            EXPECT_EQ(negstream__reasm_feed(&r, in + 5, 5, &used),
                      NEGSTREAM__REASM_MESSAGE);
            EXPECT_EQ(used, 0);
            EXPECT_EQ(negstream__reasm_set_body(&r, body),
                      NEGSTREAM__REASM_MESSAGE);
            EXPECT_NULL(r.body);
            negstream__reasm_want(&r, &dst, &n);
            EXPECT_EQ(n, 0);
            EXPECT_NULL(dst);
            EXPECT_EQ(negstream__reasm_received(&r), 5);
        }

        /* Fed with the next message behind it: only its 5 bytes. */
        negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
        EXPECT_EQ(negstream__reasm_feed(&r, in, sizeof(in), &used),
                  NEGSTREAM__REASM_MESSAGE);
        EXPECT_EQ(used, 5);
        EXPECT_EQ(r.hs.id, hs_ids[i]);
        /* The next one, on a restarted reader. */
        negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
        EXPECT_EQ(negstream__reasm_feed(&r, in + 5, 5, &used),
                  NEGSTREAM__REASM_MESSAGE);
        EXPECT_EQ(used, 5);
        EXPECT_EQ(r.hs.id, 0x16);
    }
}
END_TEST

/* advance(r, 0) is how a caller asks where it is (op.c does, at the top of
 * its read loop, after a failed body allocation): it must say the state
 * and change nothing, at every step. */
START_TEST(advance_zero_reports_state)
{
    static const uint8_t frame[] = { 6, 0, 0, 0, 1, 2, 3, 4, 5, 6 };
    uint8_t body[6], *dst;
    negstream__reasm r;
    size_t i, n;

    negstream__reasm_init(&r, NEGSTREAM__REASM_DATA);
    for (i = 0; i < sizeof(frame); i++) {
        negstream__reasm_rc rc;
        int k;

        for (k = 0; k < 3; k++) {
            rc = negstream__reasm_advance(&r, 0);
            if (i == 4 && r.body == NULL)
                EXPECT_EQ(rc, NEGSTREAM__REASM_BODY);
            else
                EXPECT_EQ(rc, NEGSTREAM__REASM_MORE);
            EXPECT_EQ(negstream__reasm_received(&r), i);
        }
        if (i == 4) {
            /* The body buffer is still not given: still BODY, and the
             * length is kept (the read goes on with this frame). */
            EXPECT_EQ(r.len, 6);
            EXPECT_EQ(negstream__reasm_set_body(&r, body),
                      NEGSTREAM__REASM_MORE);
            EXPECT_EQ(negstream__reasm_advance(&r, 0),
                      NEGSTREAM__REASM_MORE);
        }
        negstream__reasm_want(&r, &dst, &n);
        EXPECT_EQ(n, (i < 4 ? 4 : 10) - i);
        *dst = frame[i];
        rc = negstream__reasm_advance(&r, 1);
        EXPECT_EQ(rc, i == 3 ? NEGSTREAM__REASM_BODY :
                      i == 9 ? NEGSTREAM__REASM_MESSAGE :
                               NEGSTREAM__REASM_MORE);
    }
    EXPECT_EQ(negstream__reasm_advance(&r, 0),
              NEGSTREAM__REASM_MESSAGE);
    EXPECT_MEM_EQ(body, frame + 4, 6);
}
END_TEST

/* A body buffer larger than the message: nothing past the message's
 * length is written, however the bytes are offered. */
START_TEST(body_written_only_to_length)
{
    uint8_t in[7 + 4 + 20], canary[64];
    negstream__reasm r;
    size_t used, i;

    in[0] = 7, in[1] = 0, in[2] = 0, in[3] = 0;
    for (i = 4; i < sizeof(in); i++)
        in[i] = (uint8_t)(0x30 + i);
    memset(canary, 0xA5, sizeof(canary));
    negstream__reasm_init(&r, NEGSTREAM__REASM_DATA);
    EXPECT_EQ(negstream__reasm_feed(&r, in, sizeof(in), &used),
              NEGSTREAM__REASM_BODY);
    EXPECT_EQ(negstream__reasm_set_body(&r, canary),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(negstream__reasm_feed(&r, in + 4, sizeof(in) - 4,
                                    &used),
              NEGSTREAM__REASM_MESSAGE);
    EXPECT_EQ(used, 7);
    EXPECT_MEM_EQ(canary, in + 4, 7);
    for (i = 7; i < sizeof(canary); i++)
        EXPECT_EQ(canary[i], 0xA5);
}
END_TEST

/* feed with nothing to give (in may be NULL then) takes nothing and says
 * MORE, in the header and in the body. */
START_TEST(feed_nothing)
{
    static const uint8_t hdr[] = { 0x16, 1, 0, 0, 3 };
    uint8_t body[3];
    negstream__reasm r;
    size_t used = 99;

    negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
    EXPECT_EQ(negstream__reasm_feed(&r, NULL, 0, &used),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(used, 0);
    EXPECT_EQ(negstream__reasm_feed(&r, hdr, 2, &used),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(negstream__reasm_feed(&r, NULL, 0, &used),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(used, 0);
    EXPECT_EQ(negstream__reasm_feed(&r, hdr + 2, 3, &used),
              NEGSTREAM__REASM_BODY);
    /* BODY pending: feeding more takes nothing until a body is given. */
    EXPECT_EQ(negstream__reasm_feed(&r, (const uint8_t *)"abc", 3,
                                    &used),
              NEGSTREAM__REASM_BODY);
    EXPECT_EQ(used, 0);
    EXPECT_EQ(negstream__reasm_received(&r), 5);
    EXPECT_EQ(negstream__reasm_set_body(&r, body),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(negstream__reasm_feed(&r, NULL, 0, &used),
              NEGSTREAM__REASM_MORE);
    EXPECT_EQ(used, 0);
    EXPECT_EQ(negstream__reasm_feed(&r, (const uint8_t *)"abc", 3,
                                    &used),
              NEGSTREAM__REASM_MESSAGE);
    EXPECT_MEM_EQ(body, "abc", 3);
}
END_TEST

/* init resets everything, whatever state the reader was left in. */
static void assert_fresh(negstream__reasm *r, negstream__reasm_kind kind)
{
    negstream__reasm_init(r, kind);
    EXPECT_EQ(r->kind, kind);
    EXPECT_NULL(r->body);
    EXPECT_EQ(r->len, 0);
    EXPECT_EQ(negstream__reasm_received(r), 0);
    EXPECT_EQ(negstream__reasm_advance(r, 0), NEGSTREAM__REASM_MORE);
    good_after_init(r);
}

START_TEST(init_restarts_from_any_state)
{
    static const uint8_t part[] = { 0x16, 1, 0, 0, 9, 1, 2 };
    static const uint8_t zero[5];
    uint8_t body[9];
    negstream__reasm r;
    size_t used;
    int kind;

    for (kind = 0; kind < 2; kind++) {
        negstream__reasm_kind k = kind ? NEGSTREAM__REASM_HANDSHAKE :
                                         NEGSTREAM__REASM_DATA;

        /* Mid-header. */
        negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
        EXPECT_EQ(negstream__reasm_feed(&r, part, 3, &used),
                  NEGSTREAM__REASM_MORE);
        assert_fresh(&r, k);
        /* Header in, no body yet. */
        negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
        EXPECT_EQ(negstream__reasm_feed(&r, part, 5, &used),
                  NEGSTREAM__REASM_BODY);
        assert_fresh(&r, k);
        /* Mid-body. */
        negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
        EXPECT_EQ(negstream__reasm_feed(&r, part, 5, &used),
                  NEGSTREAM__REASM_BODY);
        negstream__reasm_set_body(&r, body);
        EXPECT_EQ(negstream__reasm_feed(&r, part + 5, 2, &used),
                  NEGSTREAM__REASM_MORE);
        EXPECT_EQ(negstream__reasm_received(&r), 7);
        assert_fresh(&r, k);
        /* Done (good_after_init leaves it so), and in error. */
        assert_fresh(&r, k);
        negstream__reasm_init(&r, NEGSTREAM__REASM_DATA);
        EXPECT_EQ(negstream__reasm_feed(&r, zero, 4, &used),
                  NEGSTREAM__REASM_BAD_SIZE);
        assert_fresh(&r, k);
        negstream__reasm_init(&r, NEGSTREAM__REASM_HANDSHAKE);
        EXPECT_EQ(negstream__reasm_feed(&r, zero, 5, &used),
                  NEGSTREAM__REASM_BAD_ID);
        assert_fresh(&r, k);
    }
}
END_TEST

static Suite *reasm_suite(void)
{
    Suite *s = suite_create("reasm");
    TCase *tc;

    tc = tcase_create("messages");
    /* Check's 4 s default is short for valgrind; make check sets
     * CK_DEFAULT_TIMEOUT, which then wins. */
    if (getenv("CK_DEFAULT_TIMEOUT") == NULL)
        tcase_set_timeout(tc, 120);
    tcase_add_test(tc, data_frames_whole_and_bytewise);
    tcase_add_test(tc, handshake_messages_whole_and_bytewise);
    tcase_add_test(tc, handshake_version_ignored);
    tcase_add_test(tc, every_split_in_two_and_three);
    tcase_add_test(tc, every_cut_classified);
    tcase_add_test(tc, random_pieces_both_paths_agree);
    suite_add_tcase(s, tc);

    tc = tcase_create("headers");
    if (getenv("CK_DEFAULT_TIMEOUT") == NULL)
        tcase_set_timeout(tc, 120);
    tcase_add_test(tc, data_bad_size_at_fourth_byte);
    tcase_add_test(tc, data_size_bounds_accepted);
    tcase_add_test(tc, handshake_bad_id_at_fifth_byte);
    tcase_add_test(tc, kind_decides_the_header);
    suite_add_tcase(s, tc);

    tc = tcase_create("states");
    if (getenv("CK_DEFAULT_TIMEOUT") == NULL)
        tcase_set_timeout(tc, 120);
    tcase_add_test(tc, empty_handshake_payload_is_message_without_body);
    tcase_add_test(tc, advance_zero_reports_state);
    tcase_add_test(tc, body_written_only_to_length);
    tcase_add_test(tc, feed_nothing);
    tcase_add_test(tc, init_restarts_from_any_state);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(reasm_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
