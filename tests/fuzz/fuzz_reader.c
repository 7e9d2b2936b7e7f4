/*
 * fuzz_reader.c - libFuzzer target: the reader state machine of an
 * authenticated stream (negstream_read: length prefix, frame, unwrap,
 * buffered rest, skipped empty frames, sticky fault), fed by a fake peer.
 *
 * Once per process, a real Kerberos authentication runs in-process over a
 * socketpair against the test realm (run it under tests/kdc/with-realm),
 * at Sign and at EncryptAndSign, and both established contexts are
 * exported.  For each input, fresh copies are imported: the server's goes
 * into a new stream, put straight into the authenticated state, and the
 * client's becomes the fake peer, so every input starts from the same
 * GSS sequence numbers and runs are reproducible.
 *
 * The input is a script.  Byte 0 picks the level; then each op byte
 * (op % 8) says what the peer does:
 *   0 WRAP  u16 n   wraps min(n, 64512) bytes and sends the frame
 *   1 RAW   u8 n    sends the next n input bytes verbatim
 *   2 FLIP  u8 n, u16 b   wraps n bytes, flips bit b of the frame, sends
 *   3 DROP  u8 n    wraps n bytes and never sends them
 *   4 REPLAY        sends the last frame sent again
 *   5 COUNT u16 c   adds c + 1 to the counts the reader reads with
 *   6 CUT   u8 n, u8 m    wraps n bytes, sends m % size of them, stops
 *   7 EMPTY         wraps 0 bytes and sends the frame
 * Then the peer shuts its side down and the stream is read to the end.
 *
 * Each input runs twice: on a stream over the socket (negstream_new),
 * and on a stream over a custom transport on the same kind of socket
 * (negstream_new_io, tests/iotransport.c) that returns at most 'piece'
 * bytes per read and says "would block" every few calls although data
 * waits, piece and the rhythm derived from the input: the reader's
 * promises hold through the transport table too.
 *
 * Promises checked (a broken one aborts, reported as a crash):
 *  - the reader delivers exactly the plaintext of the frames the peer
 *    sent in order before its first deviation (garbage, a changed,
 *    replayed or cut frame, a frame after a dropped one; a change GSS
 *    itself cannot see is none, see flip_is_benign) -- nothing of a
 *    bad frame, nothing after it, nothing lost before it;
 *  - without a deviation the stream ends with a clean 0 (EOF at a frame
 *    boundary); after one the read fails with NEGSTREAM_E_IO, writes
 *    nothing into the caller's buffer, and the next read fails the same
 *    way (the stream is faulted).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "gss.h"
#include "iotransport.h"
#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "fuzz_reader: %s:%d: broken promise: %s\n",   \
                    __FILE__, __LINE__, #cond);                           \
            abort();                                                      \
        }                                                                 \
    } while (0)

/* Bytes the peer may send per input: far below the socket buffer, so
 * that the peer never blocks (the reader only runs afterwards). */
#define SEND_CAP   (200 * 1024)
#define FRAME_CAP  (NEGSTREAM__DATA_HEADER_SIZE + NEGSTREAM__MAX_FRAME)
#define MAX_COUNTS 16

/* What one level's authentication left behind. */
typedef struct level_tmpl {
    gss_buffer_desc server_ctx, client_ctx;     /* exported contexts */
    negstream__gss  server_gss, client_gss;     /* scalars only */
    bool            encrypted, is_signed, mutual;
    negstream_impersonation imp;
    const char     *auth_type;
} level_tmpl;

static level_tmpl tmpl[2];       /* [0] Sign, [1] EncryptAndSign */

static void die(const char *what, const negstream_error *e)
{
    fprintf(stderr, "fuzz_reader: %s: %s: %s\n", what,
            e != NULL ? negstream_status_name(e->code) : "",
            e != NULL ? e->message : "");
    fprintf(stderr, "fuzz_reader: run it under tests/kdc/with-realm\n");
    exit(2);
}

struct server_arg {
    negstream           *s;
    negstream_protection level;
    negstream_error      err;
    int                  rc;
};

static void *server_main(void *p)
{
    struct server_arg *sa = p;
    negstream_server_options so;

    negstream_server_options_init(&so);
    so.protection = sa->level;
    so.mechanism = "kerberos";
    sa->rc = negstream_authenticate_as_server(sa->s, &so, &sa->err);
    return NULL;
}

/* The scalars of g: the pointers belong to the stream they came from. */
static negstream__gss scalars(const negstream__gss *g)
{
    negstream__gss c = *g;

    c.ctx = GSS_C_NO_CONTEXT;
    c.cred = GSS_C_NO_CREDENTIAL;
    c.target = GSS_C_NO_NAME;
    c.target_str = NULL;
    c.peer_name = NULL;
    c.cfx = NULL;
    return c;
}

static void export_ctx(negstream__gss *g, gss_buffer_desc *out)
{
    OM_uint32 major, minor;

    major = gss_export_sec_context(&minor, &g->ctx, out);
    if (GSS_ERROR(major))
        die("gss_export_sec_context failed", NULL);
}

static void authenticate(int idx, negstream_protection level)
{
    const char *spn = getenv("NEGTEST_SPN");
    negstream_client_options co;
    struct server_arg sa;
    negstream_error e;
    negstream *c;
    pthread_t t;
    int fds[2];

    if (spn == NULL)
        die("NEGTEST_SPN is not set", NULL);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        die("socketpair failed", NULL);
    c = negstream_new(fds[0], false, &e);
    if (c == NULL)
        die("negstream_new", &e);
    memset(&sa, 0, sizeof(sa));
    sa.level = level;
    sa.s = negstream_new(fds[1], false, &sa.err);
    if (sa.s == NULL)
        die("negstream_new", &sa.err);
    if (pthread_create(&t, NULL, server_main, &sa) != 0)
        die("pthread_create failed", NULL);
    negstream_client_options_init(&co);
    co.target_name = spn;
    co.mechanism = "kerberos";
    co.protection = level;
    if (negstream_authenticate_as_client(c, &co, &e) < 0) {
        shutdown(fds[0], SHUT_RDWR);
        pthread_join(t, NULL);
        die("client authentication", &e);
    }
    pthread_join(t, NULL);
    if (sa.rc < 0)
        die("server authentication", &sa.err);

    tmpl[idx].server_gss = scalars(&sa.s->gss);
    tmpl[idx].client_gss = scalars(&c->gss);
    tmpl[idx].encrypted = sa.s->p_encrypted;
    tmpl[idx].is_signed = sa.s->p_signed;
    tmpl[idx].mutual = sa.s->p_mutual;
    tmpl[idx].imp = sa.s->p_impersonation;
    tmpl[idx].auth_type = sa.s->p_auth_type;
    export_ctx(&sa.s->gss, &tmpl[idx].server_ctx);
    export_ctx(&c->gss, &tmpl[idx].client_ctx);
    if (level == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN)
        CHECK(tmpl[idx].encrypted);
    else
        CHECK(!tmpl[idx].encrypted && tmpl[idx].is_signed);
    negstream_close(c);
    negstream_close(sa.s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    authenticate(0, NEGSTREAM_PROTECTION_SIGN);
    authenticate(1, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    return 0;
}

static gss_ctx_id_t import_ctx(gss_buffer_desc *tok)
{
    gss_ctx_id_t ctx = GSS_C_NO_CONTEXT;
    gss_buffer_desc copy = *tok;        /* import does not keep it */
    OM_uint32 major, minor;

    major = gss_import_sec_context(&minor, &copy, &ctx);
    CHECK(!GSS_ERROR(major));
    return ctx;
}

/* A new stream on fd in the state a real authentication leaves: on fd
 * itself (piece 0), or through a custom transport that owns fd, reads at
 * most piece bytes per call and says "would block" every wb_every-th
 * call. */
static negstream *authenticated_stream(int fd, const level_tmpl *t,
                                       size_t piece, unsigned wb_every,
                                       void **ctxp)
{
    negstream_error e;
    negstream *s;

    if (piece == 0) {
        s = negstream_new(fd, false, &e);
    } else {
        negstream_io io;
        *ctxp = tio_socket_new(fd, piece, wb_every, &io);
        s = negstream_new_io(&io, *ctxp, &e);
    }
    CHECK(s != NULL);
    s->gss = t->server_gss;
    s->gss.ctx = import_ctx((gss_buffer_desc *)&t->server_ctx);
    /* as at the end of a real handshake: Kerberos frames on OpenSSL
     * where the build has it (gss.c) */
    negstream__gss_take_over(&s->gss);
    s->state = NEGSTREAM__AUTHENTICATED;
    s->is_server = true;
    s->framed = true;
    s->p_encrypted = t->encrypted;
    s->p_signed = t->is_signed;
    s->p_mutual = t->mutual;
    s->p_impersonation = t->imp;
    s->p_auth_type = t->auth_type;
    s->rbuf = malloc(NEGSTREAM__MAX_FRAME);
    CHECK(s->rbuf != NULL);
    return s;
}

/* The fake peer and its bookkeeping. */
typedef struct peer {
    negstream__gss g;
    const level_tmpl *t;            /* for flip_is_benign */
    int            fd;
    const uint8_t *in;
    size_t         in_len, pos;
    size_t         sent;            /* bytes sent so far */
    bool           deviated;        /* sent something not in order */
    bool           gap;             /* a wrapped frame was dropped */
    bool           stopped;         /* CUT: nothing more is sent */
    uint32_t       wraps;           /* frames wrapped, for the pattern */
    uint8_t        frame[FRAME_CAP], last[FRAME_CAP];
    size_t         last_len;
    uint8_t        plain[NEGSTREAM__MAX_CHUNK];
    uint8_t       *expect;          /* plaintext the reader must deliver */
    size_t         expect_len;
    size_t         counts[MAX_COUNTS];
    int            ncounts;
} peer;

static uint8_t in_u8(peer *p)
{
    return p->pos < p->in_len ? p->in[p->pos++] : 0;
}

static uint16_t in_u16(peer *p)
{
    uint16_t lo = in_u8(p);

    return (uint16_t)(lo | (uint16_t)in_u8(p) << 8);
}

/* Sends n bytes; the socket buffer holds them all (SEND_CAP). */
static void send_bytes(peer *p, const uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(p->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (w < 0 && errno == EINTR)
            continue;
        CHECK(w > 0);
        b += w;
        n -= (size_t)w;
        p->sent += (size_t)w;
    }
}

/* Wraps n bytes of this frame's pattern into p->frame (prefix and
 * token); returns the frame's size, or 0 if GSS refused to wrap. */
static size_t wrap_frame(peer *p, size_t n)
{
    negstream_error e;
    ssize_t tok;
    size_t i;

    p->wraps++;
    for (i = 0; i < n; i++)
        p->plain[i] = (uint8_t)(p->wraps * 131u + i * 7u + (i >> 8));
    tok = negstream__gss_wrap(&p->g, p->plain, n,
                              p->frame + NEGSTREAM__DATA_HEADER_SIZE,
                              sizeof(p->frame) - NEGSTREAM__DATA_HEADER_SIZE,
                              &e);
    /* Nothing the library itself sends is refused: a wrap of up to
     * 64512 bytes always fits a frame. */
    CHECK(tok >= NEGSTREAM__MIN_FRAME && tok <= NEGSTREAM__MAX_FRAME);
    negstream__data_len_encode(p->frame, (uint32_t)tok);
    return NEGSTREAM__DATA_HEADER_SIZE + (size_t)tok;
}

/*
 * Whether a token changed by FLIP is still, for GSS itself, the message
 * the peer wrapped.  RFC 4121 leaves the EC and RRC fields of a wrap token
 * out of its checksum, and the receiver rotates what follows the 16-byte
 * header by RRC modulo its length: a flip that turns RRC into a multiple
 * of that length (RRC 0 -> 32 when 4 bytes of data and a 12-byte checksum
 * follow) changes bytes on the wire but not the message, and no reader
 * can tell.  A fresh copy of the receiving context decides (a sequence
 * gap is only a supplementary status there); the frame then counts as
 * intact.  A flip in the length prefix never is.
 */
static bool flip_is_benign(const peer *p, size_t len, size_t at, size_t n)
{
    gss_buffer_desc tok, msg = GSS_C_EMPTY_BUFFER;
    OM_uint32 major, minor;
    gss_ctx_id_t ctx;
    bool same;

    if (at < NEGSTREAM__DATA_HEADER_SIZE)
        return false;
    ctx = import_ctx((gss_buffer_desc *)&p->t->server_ctx);
    /* A copy: MIT's gss_unwrap may rotate the token it is given in place
     * (RRC), although its input is const. */
    tok.length = len - NEGSTREAM__DATA_HEADER_SIZE;
    tok.value = malloc(tok.length);
    CHECK(tok.value != NULL);
    memcpy(tok.value, p->frame + NEGSTREAM__DATA_HEADER_SIZE, tok.length);
    major = gss_unwrap(&minor, ctx, &tok, &msg, NULL, NULL);
    same = !GSS_ERROR(major) && msg.length == n &&
           (n == 0 || memcmp(msg.value, p->plain, n) == 0);
    gss_release_buffer(&minor, &msg);
    gss_delete_sec_context(&minor, &ctx, GSS_C_NO_BUFFER);
    free(tok.value);
    return same;
}

static bool room(const peer *p, size_t n)
{
    return !p->stopped && p->sent + n <= SEND_CAP;
}

/* Sends frame[0..len); 'intact' when it is the untouched next frame. */
static void send_frame(peer *p, size_t len, size_t plain_len, bool intact)
{
    if (len == 0)
        return;
    if (!intact || p->gap)
        p->deviated = true;
    send_bytes(p, p->frame, len);
    if (!p->deviated) {
        memcpy(p->expect + p->expect_len, p->plain, plain_len);
        p->expect_len += plain_len;
    }
    memcpy(p->last, p->frame, len);
    p->last_len = len;
}

static void run_script(peer *p)
{
    while (p->pos < p->in_len && !p->stopped) {
        uint8_t op = in_u8(p);
        size_t n, len, m;
        uint16_t b;

        switch (op % 8) {
        case 0:                                         /* WRAP */
            n = in_u16(p);
            if (n > NEGSTREAM__MAX_CHUNK)
                n = NEGSTREAM__MAX_CHUNK;
            if (!room(p, n + 200))
                return;
            len = wrap_frame(p, n);
            send_frame(p, len, n, true);
            break;
        case 1:                                         /* RAW */
            n = in_u8(p);
            if (n > p->in_len - p->pos)
                n = p->in_len - p->pos;
            if (!room(p, n))
                return;
            if (n > 0) {
                p->deviated = true;
                send_bytes(p, p->in + p->pos, n);
                p->pos += n;
            }
            break;
        case 2:                                         /* FLIP */
            n = in_u8(p);
            b = in_u16(p);
            if (!room(p, n + 200))
                return;
            len = wrap_frame(p, n);
            m = (b / 8) % len;
            p->frame[m] ^= (uint8_t)(1u << (b % 8));
            send_frame(p, len, n, flip_is_benign(p, len, m, n));
            break;
        case 3:                                         /* DROP */
            n = in_u8(p);
            wrap_frame(p, n);
            p->gap = true;
            break;
        case 4:                                         /* REPLAY */
            if (p->last_len == 0 || !room(p, p->last_len))
                break;
            memcpy(p->frame, p->last, p->last_len);
            send_frame(p, p->last_len, 0, false);
            break;
        case 5:                                         /* COUNT */
            b = in_u16(p);
            if (p->ncounts < MAX_COUNTS)
                p->counts[p->ncounts++] = (size_t)b + 1;
            break;
        case 6:                                         /* CUT */
            n = in_u8(p);
            m = in_u8(p);
            if (!room(p, n + 200))
                return;
            len = wrap_frame(p, n);
            m %= len;               /* never the whole frame */
            if (m > 0) {
                p->deviated = true;
                send_bytes(p, p->frame, m);
            }
            p->stopped = true;
            break;
        default:                                        /* EMPTY */
            if (!room(p, 200))
                return;
            len = wrap_frame(p, 0);
            send_frame(p, len, 0, true);
            break;
        }
    }
}

/* Reads the stream to its end and checks what came out. */
static void read_all(negstream *s, const peer *p)
{
    static uint8_t buf[65536 + 16];
    size_t got = 0, i;
    negstream_error e, e2;
    int k;

    for (k = 0;; k++) {
        size_t cnt = p->ncounts > 0 ? p->counts[k % p->ncounts] : 4096;
        ssize_t r;

        memset(buf, 0xA5, cnt);
        r = negstream_read(s, buf, sizeof(buf), 0, (ssize_t)cnt, &e);
        if (r > 0) {
            CHECK((size_t)r <= cnt);
            CHECK(got + (size_t)r <= p->expect_len);
            CHECK(memcmp(buf, p->expect + got, (size_t)r) == 0);
            got += (size_t)r;
            continue;
        }
        if (r == 0) {
            CHECK(e.code == NEGSTREAM_OK);
            CHECK(!p->deviated);
            break;
        }
        CHECK(r == -1);
        CHECK(e.code == NEGSTREAM_E_IO);
        CHECK(e.message[0] != '\0');
        if (!p->deviated)
            fprintf(stderr, "fuzz_reader: read failed after %zu of %zu "
                    "bytes: %s\n", got, p->expect_len, e.message);
        CHECK(p->deviated);
        for (i = 0; i < cnt; i++)
            CHECK(buf[i] == 0xA5);
        /* Sticky: the next read fails at once, the same way. */
        CHECK(negstream_read(s, buf, sizeof(buf), 0, 1, &e2) == -1);
        CHECK(e2.code == NEGSTREAM_E_IO);
        break;
    }
    CHECK(got == p->expect_len);
}

/* One run of the script in data[0..size) against a stream on fd
 * (piece 0) or on a custom transport (see authenticated_stream). */
static void run_one(const uint8_t *data, size_t size, size_t piece,
                    unsigned wb_every)
{
    static peer p;
    static uint8_t expect[SEND_CAP];
    const level_tmpl *t;
    negstream *s;
    void *ctx = NULL;
    int fds[2], sz = 1 << 20;

    t = &tmpl[data[0] & 1];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    /* Room for SEND_CAP bytes, so the peer never waits for the reader. */
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));

    memset(&p, 0, offsetof(peer, frame));
    p.g = t->client_gss;
    p.t = t;
    p.g.ctx = import_ctx((gss_buffer_desc *)&t->client_ctx);
    negstream__gss_take_over(&p.g);
    p.fd = fds[0];
    p.in = data;
    p.in_len = size;
    p.pos = 1;
    p.expect = expect;
    p.expect_len = 0;
    p.last_len = 0;
    p.ncounts = 0;
    s = authenticated_stream(fds[1], t, piece, wb_every, &ctx);

    run_script(&p);
    shutdown(fds[0], SHUT_WR);
    read_all(s, &p);

    negstream_close(s);     /* closes fds[1] (either way) */
    if (ctx != NULL) {
        tio_hooks *h = TIO_HOOKS(ctx);

        /* The reads went through the table, with their "would block"
         * answers; close came once, and nothing after it. */
        CHECK(atomic_load(&h->reads) > 0);
        CHECK(atomic_load(&h->would_blocks) > 0);
        CHECK(atomic_load(&h->closes) == 1);
        CHECK(atomic_load(&h->after_close) == 0);
        tio_free(ctx);
    }
    close(fds[0]);
    negstream__gss_free(&p.g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t h = 2166136261u;           /* FNV-1a of the input */
    size_t i;

    if (size < 1)
        return 0;
    run_one(data, size, 0, 0);
    for (i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    /* 1..4096 bytes per read, "would block" every 2nd to 6th call */
    run_one(data, size, 1 + h % 4096, 2 + (h >> 12) % 5);
    return 0;
}
