/*
 * check_conformance.c - the parts of .NET's own NegotiateStream tests
 * (dotnet/runtime's System.Net.Security tests; the checklist is
 * tests/DOTNET-CONFORMANCE.md) that the other suites did not cover yet,
 * ported to the C API: the read/write shapes of the stream-to-stream and
 * stream conformance tests in every mode (sync, begin/wait/end,
 * callback), zero-byte reads and writes, end of stream, concurrent reads,
 * invalid end_* calls, the order of the argument and state errors
 * (.NET's: arguments first, then closed, failed, not authenticated,
 * pending), every call after close, the inner socket after close, an echo
 * server, and authentication outcomes through the public API.
 * tests/DOTNET-CONFORMANCE.md maps every checklist item to its test.  Run
 * under tests/kdc/with-realm (tests/conformance.krb).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "negstream.h"
#include "testutil.h"

static const negstream_protection levels[] = {
    NEGSTREAM_PROTECTION_NONE, NEGSTREAM_PROTECTION_SIGN,
    NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
};
#define NLEVELS ((int)(sizeof(levels) / sizeof(levels[0])))

/* ---- helpers ------------------------------------------------------------ */

/*
 * Authenticates a fresh TCP pair with explicit options on both sides, like
 * tu_auth_pair but with every option and leave_inner_open open to the
 * test.  The streams are always returned; the raw fds go to fds (may be
 * NULL).  True when both sides succeeded.
 */
static bool pair_with(const negstream_client_options *co,
                      const negstream_server_options *so, bool leave_open,
                      negstream **client, negstream **server,
                      negstream_error *cerr, negstream_error *serr,
                      int fds_out[2])
{
    int fds[2];

    tu_tcp_pair(fds);
    if (fds_out != NULL) {
        fds_out[0] = fds[0];
        fds_out[1] = fds[1];
    }
    return tu_auth_fds(fds[0], fds[1], leave_open, co, so, client, server,
                       cerr, serr);
}

/* Client options for the realm's NTLM user at 'level'. */
static void ntlm_client(negstream_client_options *co,
                        negstream_protection level)
{
    tu_auth a;

    tu_auth_init(&a, level);
    a.ntlm_creds = true;
    tu_client_options(&a, co);
}

/* The server's view of the NTLM user: "DOMAIN\user". */
static const char *ntlm_peer(void)
{
    static char peer[256];

    snprintf(peer, sizeof(peer), "%s\\%s", tu_env("NEGTEST_NTLM_DOMAIN"),
             tu_env("NEGTEST_NTLM_USER"));
    return peer;
}

static bool framed(negstream_protection level)
{
    return level != NEGSTREAM_PROTECTION_NONE;
}

/* A callback that only counts its calls. */
static atomic_int callbacks;

static void count_cb(negstream_async *ar)
{
    (void)ar;
    atomic_fetch_add(&callbacks, 1);
}

/* True when nothing is waiting to be read on the raw fd. */
static bool wire_empty(int fd)
{
    char b;
    ssize_t r = recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);

    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* ---- ReadWriteLongMsg_Success (item 7) ---------------------------------- */

/* One write of 64513 bytes (63 KiB + 1: two frames); the reader loops with
 * a buffer of the whole message until it has it all.  A read never spans
 * frames: 64512, then 1, when the data is framed. */
START_TEST(test_long_message_read_in_loop)
{
    enum { N = 64513 };
    uint8_t *src = malloc(N), *dst = malloc(N);
    negstream *c, *s;
    negstream_error e;
    size_t got = 0;
    int reads = 0;

    ck_assert_ptr_nonnull(src);
    ck_assert_ptr_nonnull(dst);
    tu_fill(src, N, 64513);
    memset(dst, 0, N);
    if (tu_skip_without_ntlm(__func__, _i,
                             levels[_i] == NEGSTREAM_PROTECTION_NONE)) {
        free(src); free(dst);
        return;
    }
    tu_pair(levels[_i], &c, &s);
    ck_assert_int_eq(negstream_write(c, src, N, 0, N, &e), N);
    while (got < N) {
        ssize_t n = negstream_read(s, dst, N, (ssize_t)got,
                                   (ssize_t)(N - got), &e);

        ck_assert_msg(n > 0, "read %d: %s", reads, n < 0 ? e.message : "EOF");
        if (framed(levels[_i]))
            ck_assert_int_eq(n, reads == 0 ? 64512 : 1);
        got += (size_t)n;
        reads++;
    }
    ck_assert_uint_eq(got, N);
    if (framed(levels[_i]))
        ck_assert_int_eq(reads, 2);
    ck_assert_mem_eq(src, dst, N);
    negstream_close(c);
    negstream_close(s);
    free(src);
    free(dst);
}
END_TEST

/* ---- Successive_ClientWrite_Success (item 6) ---------------------------- */

/* A message read whole; then another read in two parts: 5 bytes, then the
 * rest, which a framed stream hands out from the frame it kept.  _i: level
 * (_i % 3), sync or begin/end reads (_i / 3). */
START_TEST(test_successive_write_partial_read)
{
    static const char m1[] = "first message of the client";
    static const char m2[] = "second message, read in two parts";
    const size_t n1 = sizeof(m1) - 1, n2 = sizeof(m2) - 1;
    negstream_protection level = levels[_i % 3];
    bool async = _i >= 3;
    char buf[64];
    negstream *c, *s;
    negstream_error e;
    negstream_async *ar;
    ssize_t n;
    size_t got;

    TU_NEEDS_NTLM(level == NEGSTREAM_PROTECTION_NONE);
    tu_pair(level, &c, &s);
    tu_write_all(c, m1, n1);
    tu_read_all(s, buf, n1);
    ck_assert_mem_eq(buf, m1, n1);

    tu_write_all(c, m2, n2);
    memset(buf, 0, sizeof(buf));
    if (async) {
        ar = negstream_begin_read(s, buf, sizeof(buf), 0, 5, NULL, NULL, &e);
        ck_assert_ptr_nonnull(ar);
        n = negstream_end_read(s, ar, &e);
    } else {
        n = negstream_read(s, buf, sizeof(buf), 0, 5, &e);
    }
    /* Without framing the socket may hand out fewer bytes. */
    ck_assert_msg(n > 0 && n <= 5, "first part: %zd (%s)", n, e.message);
    if (framed(level))
        ck_assert_int_eq(n, 5);
    got = (size_t)n;
    while (got < n2) {
        if (async) {
            ar = negstream_begin_read(s, buf, sizeof(buf), (ssize_t)got,
                                      (ssize_t)(sizeof(buf) - got), NULL,
                                      NULL, &e);
            ck_assert_ptr_nonnull(ar);
            n = negstream_end_read(s, ar, &e);
        } else {
            n = negstream_read(s, buf, sizeof(buf), (ssize_t)got,
                               (ssize_t)(sizeof(buf) - got), &e);
        }
        ck_assert_msg(n > 0, "rest: %zd (%s)", n, e.message);
        /* The rest of the kept frame, all of it, and nothing more. */
        if (framed(level))
            ck_assert_uint_eq((size_t)n, n2 - 5);
        got += (size_t)n;
    }
    ck_assert_uint_eq(got, n2);
    ck_assert_mem_eq(buf, m2, n2);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- ReadWriteByte_Success (item 27) ------------------------------------ */

/* 42 single-byte writes, then 42 single-byte reads (WriteByte/ReadByte:
 * count 1). */
START_TEST(test_read_write_byte)
{
    negstream *c, *s;
    negstream_error e;
    int i;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    for (i = 0; i < 42; i++) {
        uint8_t b = (uint8_t)(i * 7 + 1);

        ck_assert_int_eq(negstream_write(c, &b, 1, 0, 1, &e), 1);
    }
    for (i = 0; i < 42; i++) {
        uint8_t b = 0;

        ck_assert_int_eq(negstream_read(s, &b, 1, 0, 1, &e), 1);
        ck_assert_uint_eq(b, (uint8_t)(i * 7 + 1));
    }
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- ReadWrite_Success, offsets (items 28, 32) -------------------------- */

enum { MODE_SYNC, MODE_WAIT, MODE_CALLBACK, NMODES };

struct cb_done {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             done;
    negstream      *s;
    bool            write;
    ssize_t         result;
    negstream_error err;
};

/* Ends its own result inside the callback (the usual pattern). */
static void end_in_cb(negstream_async *ar)
{
    struct cb_done *d = negstream_async_state(ar);
    negstream_error e;
    ssize_t r;

    if (d->write)
        r = negstream_end_write(d->s, ar, &e);
    else
        r = negstream_end_read(d->s, ar, &e);
    pthread_mutex_lock(&d->mu);
    d->result = r;
    d->err = e;
    d->done = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* One write or read in the given mode; returns what it returned. */
static ssize_t io_mode(int mode, negstream *s, bool write, void *buf,
                       size_t len, ssize_t off, ssize_t count,
                       negstream_error *e)
{
    negstream_async *ar;
    struct cb_done d;

    switch (mode) {
    case MODE_SYNC:
        return write ? negstream_write(s, buf, len, off, count, e)
                     : negstream_read(s, buf, len, off, count, e);
    case MODE_WAIT:
        ar = write ? negstream_begin_write(s, buf, len, off, count, NULL,
                                           NULL, e)
                   : negstream_begin_read(s, buf, len, off, count, NULL,
                                          NULL, e);
        ck_assert_msg(ar != NULL, "begin: %s", e->message);
        ck_assert(negstream_async_wait(ar, -1));
        ck_assert(negstream_async_is_completed(ar));
        if (write)
            return negstream_end_write(s, ar, e) == 0 ? count : -1;
        return negstream_end_read(s, ar, e);
    default:
        memset(&d, 0, sizeof(d));
        pthread_mutex_init(&d.mu, NULL);
        pthread_cond_init(&d.cv, NULL);
        d.s = s;
        d.write = write;
        ar = write ? negstream_begin_write(s, buf, len, off, count,
                                           end_in_cb, &d, e)
                   : negstream_begin_read(s, buf, len, off, count,
                                          end_in_cb, &d, e);
        ck_assert_msg(ar != NULL, "begin: %s", e->message);
        pthread_mutex_lock(&d.mu);
        while (!d.done)
            pthread_cond_wait(&d.cv, &d.mu);
        pthread_mutex_unlock(&d.mu);
        pthread_mutex_destroy(&d.mu);
        pthread_cond_destroy(&d.cv);
        *e = d.err;
        if (write)
            return d.result == 0 ? count : -1;
        return d.result;
    }
}

/* Every mode x sizes 1, 42, 10240: written from offset 3 of the writer's
 * buffer, read in a loop into offset 5 of the reader's, whose edges stay
 * untouched.  _i: level. */
START_TEST(test_read_write_modes_sizes_offsets)
{
    static const size_t sizes[] = { 1, 42, 10240 };
    enum { WOFF = 3, ROFF = 5 };
    negstream *c, *s;
    negstream_error e;
    int mode;
    size_t k;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    for (mode = 0; mode < NMODES; mode++) {
        for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            size_t n = sizes[k], got = 0;
            uint8_t *src = malloc(n + WOFF + 2), *dst = malloc(n + ROFF + 2);

            ck_assert_ptr_nonnull(src);
            ck_assert_ptr_nonnull(dst);
            memset(src, 0xEE, n + WOFF + 2);
            tu_fill(src + WOFF, n, (uint32_t)(mode * 10 + k));
            memset(dst, 0xAA, n + ROFF + 2);
            ck_assert_int_eq(io_mode(mode, c, true, src, n + WOFF + 2, WOFF,
                                     (ssize_t)n, &e), (ssize_t)n);
            while (got < n) {
                ssize_t r = io_mode(mode, s, false, dst, n + ROFF + 2,
                                    (ssize_t)(ROFF + got),
                                    (ssize_t)(n - got), &e);

                ck_assert_msg(r > 0, "mode %d size %zu: %zd (%s)", mode, n,
                              r, e.message);
                got += (size_t)r;
            }
            ck_assert_mem_eq(dst + ROFF, src + WOFF, n);
            ck_assert_uint_eq(dst[ROFF - 1], 0xAA);
            ck_assert_uint_eq(dst[ROFF + n], 0xAA);
            free(src);
            free(dst);
        }
    }
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- ZeroByteRead_BlocksUntilDataAvailableOrNops (item 33) -------------- */

/* A 0-byte read on a framed stream with nothing buffered waits for a whole
 * frame, keeps it and returns 0; the data is then fully readable.  Twice,
 * sync and begin/end.  With data already buffered it returns 0 at once.
 * Without framing it returns 0 at once (negstream_read(3)).  _i: level. */
START_TEST(test_zero_byte_read_modes)
{
    negstream *c, *s;
    negstream_error e;
    char buf[16];
    int round;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    if (!framed(levels[_i])) {
        ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, 0, &e), 0);
        ck_assert_int_eq(e.code, NEGSTREAM_OK);
        tu_write_all(c, "abc", 3);
        tu_read_all(s, buf, 3);
        ck_assert_mem_eq(buf, "abc", 3);
        goto out;
    }
    for (round = 0; round < 2; round++) {
        tu_zero_read z;
        negstream_async *ar;

        /* sync */
        tu_zero_read_start(&z, s);
        usleep(100 * 1000);
        ck_assert(!tu_zero_read_done(&z));
        tu_write_all(c, "hello", 5);
        ck_assert_int_eq(tu_zero_read_join(&z), 0);
        /* The frame was kept: the data comes without the network. */
        ck_assert(wire_empty(tu_fds[1]));
        ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, sizeof(buf),
                                        &e), 5);
        ck_assert_mem_eq(buf, "hello", 5);

        /* begin/end */
        ar = negstream_begin_read(s, buf, sizeof(buf), 0, 0, NULL, NULL, &e);
        ck_assert_ptr_nonnull(ar);
        ck_assert(!negstream_async_wait(ar, 100));
        tu_write_all(c, "world", 5);
        ck_assert_int_eq(negstream_end_read(s, ar, &e), 0);
        ck_assert_int_eq(e.code, NEGSTREAM_OK);
        ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, sizeof(buf),
                                        &e), 5);
        ck_assert_mem_eq(buf, "world", 5);
    }
    /* Something buffered: a 0-byte read returns 0 at once. */
    tu_write_all(c, "abcdef", 6);
    ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, 2, &e), 2);
    ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, 0, &e), 0);
    ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, sizeof(buf), &e),
                     4);
    ck_assert_mem_eq(buf, "cdef", 4);
out:
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- ZeroByteWrite_OtherDataReceivedSuccessfully, async (item 34) ------- */

/* "", "hello", "", "world" with begin_write: the 0-byte writes complete
 * with success, send nothing, and the reader gets "helloworld". */
START_TEST(test_zero_byte_writes_async)
{
    static const char *parts[] = { "", "hello", "", "world" };
    negstream *c, *s;
    negstream_error e;
    char buf[16];
    size_t i;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    for (i = 0; i < 4; i++) {
        size_t n = strlen(parts[i]);
        negstream_async *ar = negstream_begin_write(c, parts[i], n, 0,
                                                    (ssize_t)n, NULL, NULL,
                                                    &e);

        ck_assert_ptr_nonnull(ar);
        ck_assert_int_eq(negstream_end_write(c, ar, &e), 0);
        ck_assert_int_eq(e.code, NEGSTREAM_OK);
        if (i == 0)
            ck_assert(wire_empty(tu_fds[1]));
    }
    tu_read_all(s, buf, 10);
    ck_assert_mem_eq(buf, "helloworld", 10);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- Read_Eof_Returns0 (item 31) ---------------------------------------- */

/* The peer closes at once, or after "hello": every read then returns 0,
 * sync and begin/end.  _i: level (_i % 3), hello first (_i / 3). */
START_TEST(test_read_eof_returns_0)
{
    negstream *c, *s;
    negstream_error e;
    negstream_async *ar;
    char buf[8];

    TU_NEEDS_NTLM(levels[_i % 3] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i % 3], &c, &s);
    if (_i >= 3)
        tu_write_all(c, "hello", 5);
    negstream_close(c);
    if (_i >= 3) {
        tu_read_all(s, buf, 5);
        ck_assert_mem_eq(buf, "hello", 5);
    }
    ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, sizeof(buf), &e),
                     0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ar = negstream_begin_read(s, buf, sizeof(buf), 0, sizeof(buf), NULL, NULL,
                              &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert_int_eq(negstream_end_read(s, ar, &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, sizeof(buf), &e),
                     0);
    negstream_close(s);
}
END_TEST

/* ---- ReadAsync_DuringReadAsync_ThrowsIfUnsupported (item 39) ------------ */

/* A read pending: a second read (begin or sync) is NOT_SUPPORTED, a write
 * is not; the first read still completes with the data.  The same for a
 * write blocked on a peer that does not read.  _i: level. */
START_TEST(test_second_read_or_write_while_pending)
{
    const size_t big = 32u << 20;
    uint8_t *blob = calloc(1, big);
    negstream *c, *s;
    negstream_error e;
    negstream_async *rd, *wr;
    char buf[8], other[8];
    tu_reader r;

    ck_assert_ptr_nonnull(blob);
    atomic_store(&callbacks, 0);
    if (tu_skip_without_ntlm(__func__, _i,
                             levels[_i] == NEGSTREAM_PROTECTION_NONE)) {
        free(blob);
        return;
    }
    tu_pair(levels[_i], &c, &s);
    rd = negstream_begin_read(s, buf, sizeof(buf), 0, sizeof(buf), NULL,
                              NULL, &e);
    ck_assert_ptr_nonnull(rd);
    ck_assert(!negstream_async_wait(rd, 50));
    ck_assert_ptr_null(negstream_begin_read(s, other, sizeof(other), 0,
                                            sizeof(other), count_cb, NULL,
                                            &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    ck_assert_int_eq(negstream_read(s, other, sizeof(other), 0,
                                    sizeof(other), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    /* Full duplex: a write on the same stream is fine meanwhile. */
    tu_write_all(s, "pong", 4);
    tu_read_all(c, other, 4);
    ck_assert_mem_eq(other, "pong", 4);
    tu_write_all(c, "data", 4);
    ck_assert_int_eq(negstream_end_read(s, rd, &e), 4);
    ck_assert_mem_eq(buf, "data", 4);

    /* A write that cannot finish until the peer reads. */
    wr = negstream_begin_write(c, blob, big, 0, (ssize_t)big, NULL, NULL, &e);
    ck_assert_ptr_nonnull(wr);
    ck_assert(!negstream_async_wait(wr, 100));
    ck_assert_ptr_null(negstream_begin_write(c, "x", 1, 0, 1, count_cb, NULL,
                                             &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    ck_assert_int_eq(negstream_write(c, "x", 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    tu_reader_start(&r, s, 1 << 16, big);
    ck_assert_int_eq(negstream_end_write(c, wr, &e), 0);
    tu_reader_join(&r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.got, big);
    ck_assert(r.hash == tu_fnv(TU_FNV_INIT, blob, big));
    ck_assert_int_eq(atomic_load(&callbacks), 0);   /* refused: never */
    negstream_close(c);
    negstream_close(s);
    free(blob);
}
END_TEST

/* ---- EndReadEndWriteInvalidParameter_Throws (item 12) ------------------- */

struct end_probe {
    negstream      *s, *other;
    negstream_async *foreign;
    negstream_status null_code, kind_code, other_code, foreign_code;
    int              real_rc;
    struct cb_done   done;
};

/* Inside the callback: end with NULL, with the wrong kind, on the wrong
 * stream, with another stream's result; then the real end. */
static void end_probe_cb(negstream_async *ar)
{
    struct end_probe *p = negstream_async_state(ar);
    negstream_error e;

    negstream_end_write(p->s, NULL, &e);
    p->null_code = e.code;
    negstream_end_read(p->s, ar, &e);
    p->kind_code = e.code;
    negstream_end_write(p->other, ar, &e);
    p->other_code = e.code;
    negstream_end_write(p->s, p->foreign, &e);
    p->foreign_code = e.code;
    p->real_rc = negstream_end_write(p->s, ar, &e);
    pthread_mutex_lock(&p->done.mu);
    p->done.done = 1;
    pthread_cond_broadcast(&p->done.cv);
    pthread_mutex_unlock(&p->done.mu);
}

START_TEST(test_end_invalid_parameter_in_callback)
{
    struct end_probe p;
    negstream *c, *s, *c2, *s2;
    negstream_async *ar;
    negstream_error e;
    char buf[8];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c2, &s2);
    memset(&p, 0, sizeof(p));
    pthread_mutex_init(&p.done.mu, NULL);
    pthread_cond_init(&p.done.cv, NULL);
    p.s = c;
    p.other = c2;
    /* A completed write of another stream, not yet ended. */
    p.foreign = negstream_begin_write(c2, "f", 1, 0, 1, NULL, NULL, &e);
    ck_assert_ptr_nonnull(p.foreign);
    ck_assert(negstream_async_wait(p.foreign, -1));
    ar = negstream_begin_write(c, "hello", 5, 0, 5, end_probe_cb, &p, &e);
    ck_assert_ptr_nonnull(ar);
    pthread_mutex_lock(&p.done.mu);
    while (!p.done.done)
        pthread_cond_wait(&p.done.cv, &p.done.mu);
    pthread_mutex_unlock(&p.done.mu);
    ck_assert_int_eq(p.null_code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(p.kind_code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(p.other_code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(p.foreign_code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(p.real_rc, 0);
    /* The foreign result was not released by the refused end. */
    ck_assert_int_eq(negstream_end_write(c2, p.foreign, &e), 0);
    tu_read_all(s, buf, 5);
    ck_assert_mem_eq(buf, "hello", 5);
    tu_read_all(s2, buf, 1);
    ck_assert_int_eq(buf[0], 'f');
    negstream_close(c);
    negstream_close(s);
    negstream_close(c2);
    negstream_close(s2);
}
END_TEST

/* ---- EndAuthenticateInvalidParameter_Throws (item 21) ------------------- */

START_TEST(test_end_authenticate_invalid_parameter)
{
    negstream_client_options co;
    negstream_async *car, *sar, *foreign;
    negstream *c, *s, *c2, *s2;
    negstream_error e;
    int fds[2];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c2, &s2);
    foreign = negstream_begin_write(c2, "f", 1, 0, 1, NULL, NULL, &e);
    ck_assert_ptr_nonnull(foreign);

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    s = negstream_new(fds[1], false, &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(s);
    sar = negstream_begin_authenticate_as_server(s, NULL, NULL, NULL, &e);
    ck_assert_ptr_nonnull(sar);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    car = negstream_begin_authenticate_as_client(c, &co, NULL, NULL, &e);
    ck_assert_ptr_nonnull(car);

    ck_assert_int_eq(negstream_end_authenticate_as_client(c, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_end_authenticate_as_server(s, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_end_authenticate_as_client(c, foreign, &e),
                     -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(negstream_end_authenticate_as_server(s, foreign, &e),
                     -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(negstream_end_authenticate_as_client(c, sar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(negstream_end_authenticate_as_server(s, car, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    /* The real results then end fine. */
    ck_assert_msg(negstream_end_authenticate_as_client(c, car, &e) == 0,
                  "client: %s", e.message);
    ck_assert_msg(negstream_end_authenticate_as_server(s, sar, &e) == 0,
                  "server: %s", e.message);
    ck_assert(negstream_is_authenticated(c));
    ck_assert(negstream_is_authenticated(s));
    ck_assert_int_eq(negstream_end_write(c2, foreign, &e), 0);
    negstream_close(c);
    negstream_close(s);
    negstream_close(c2);
    negstream_close(s2);
}
END_TEST

/* ---- ArgumentValidation for begin_* (item 23) --------------------------- */

/* The (buffer, offset, count) cases of .NET's ArgumentValidation test on a
 * one-byte buffer, for begin_write and begin_read: refused at once, no
 * callback ever. */
START_TEST(test_begin_argument_validation)
{
    static const struct {
        bool null_buf;
        size_t len;
        ssize_t off, cnt;
        negstream_status want;
    } t[] = {
        { true, 1, 0, 1, NEGSTREAM_E_ARGUMENT_NULL },
        { true, 0, 0, 0, NEGSTREAM_E_ARGUMENT_NULL },
        { true, 1, -1, -1, NEGSTREAM_E_ARGUMENT_NULL },
        { false, 1, -1, 1, NEGSTREAM_E_ARGUMENT_RANGE },
        { false, 1, 0, -1, NEGSTREAM_E_ARGUMENT_RANGE },
        { false, 1, 0, 2, NEGSTREAM_E_ARGUMENT_RANGE },
        { false, 1, 1, 1, NEGSTREAM_E_ARGUMENT_RANGE },
        { false, 1, 2, 0, NEGSTREAM_E_ARGUMENT_RANGE },
        { false, 1, SSIZE_MAX, SSIZE_MAX, NEGSTREAM_E_ARGUMENT_RANGE },
        { false, 1, 1, SSIZE_MAX, NEGSTREAM_E_ARGUMENT_RANGE },
    };
    char one[1] = { 'x' };
    negstream *c, *s;
    negstream_error e;
    size_t i;

    atomic_store(&callbacks, 0);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        void *buf = t[i].null_buf ? NULL : one;

        e.code = NEGSTREAM_OK;
        ck_assert_ptr_null(negstream_begin_write(c, buf, t[i].len, t[i].off,
                                                 t[i].cnt, count_cb, NULL,
                                                 &e));
        ck_assert_msg(e.code == t[i].want, "begin_write case %zu: %s", i,
                      negstream_status_name(e.code));
        e.code = NEGSTREAM_OK;
        ck_assert_ptr_null(negstream_begin_read(s, buf, t[i].len, t[i].off,
                                                t[i].cnt, count_cb, NULL,
                                                &e));
        ck_assert_msg(e.code == t[i].want, "begin_read case %zu: %s", i,
                      negstream_status_name(e.code));
    }
    ck_assert_int_eq(negstream_end_read(s, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_end_write(c, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    /* offset == length with count 0 is valid, in both directions. */
    {
        negstream_async *ar = negstream_begin_write(c, one, 1, 1, 0, NULL,
                                                    NULL, &e);

        ck_assert_ptr_nonnull(ar);
        ck_assert_int_eq(negstream_end_write(c, ar, &e), 0);
    }
    /* Nothing was consumed or sent by the refused calls. */
    tu_write_all(c, "ok", 2);
    tu_read_all(s, one, 1);
    ck_assert_int_eq(one[0], 'o');
    ck_assert_int_eq(atomic_load(&callbacks), 0);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- the order of the errors, as .NET checks them ----------------------- */

/*
 * For read, write, begin_read and begin_write on s: a NULL buffer is
 * ARGUMENT_NULL and a bad range ARGUMENT_RANGE whatever the state, and
 * valid arguments meet the state error 'state'.
 */
static void expect_order(negstream *s, negstream_status state)
{
    char one[1] = { 'x' };
    negstream_error e;
    int op;

    atomic_store(&callbacks, 0);
    for (op = 0; op < 4; op++) {
        const struct {
            void *buf;
            ssize_t off, cnt;
            negstream_status want;
        } t[] = {
            { NULL, -1, 5, NEGSTREAM_E_ARGUMENT_NULL },
            { one, -1, 1, NEGSTREAM_E_ARGUMENT_RANGE },
            { one, 0, 2, NEGSTREAM_E_ARGUMENT_RANGE },
            { one, 0, 1, state },
        };
        size_t i;

        for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            ssize_t rc = 0;
            negstream_async *ar = NULL;

            e.code = NEGSTREAM_OK;
            switch (op) {
            case 0:
                rc = negstream_write(s, t[i].buf, 1, t[i].off, t[i].cnt, &e);
                break;
            case 1:
                rc = negstream_read(s, t[i].buf, 1, t[i].off, t[i].cnt, &e);
                break;
            case 2:
                ar = negstream_begin_write(s, t[i].buf, 1, t[i].off,
                                           t[i].cnt, count_cb, NULL, &e);
                rc = ar == NULL ? -1 : 0;
                break;
            default:
                ar = negstream_begin_read(s, t[i].buf, 1, t[i].off,
                                          t[i].cnt, count_cb, NULL, &e);
                rc = ar == NULL ? -1 : 0;
                break;
            }
            ck_assert_int_eq(rc, -1);
            ck_assert_ptr_null(ar);
            ck_assert_msg(e.code == t[i].want, "op %d case %zu: expected %s, "
                          "got %s (%s)", op, i, negstream_status_name(
                          t[i].want), negstream_status_name(e.code),
                          e.message);
        }
    }
    ck_assert_int_eq(atomic_load(&callbacks), 0);
}

/* Arguments first; then: closed, stored authentication failure, not
 * authenticated, operation pending; authentication: state first, then the
 * options. */
START_TEST(test_error_order)
{
    negstream_client_options co, co_null;
    negstream *c, *s, *u;
    negstream_error e;
    negstream_async *rd, *hold;
    tu_auth a;
    char buf[4];
    int fds[2];

    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    negstream_client_options_init(&co_null);    /* target NULL */
    co_null.impersonation = NEGSTREAM_IMPERSONATION_NONE;

    /* Not authenticated. */
    tu_tcp_pair(fds);
    u = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(u);
    expect_order(u, NEGSTREAM_E_INVALID_OPERATION);
    /* target NULL before the impersonation level (6.1 steps 4, 5) */
    ck_assert_int_eq(negstream_authenticate_as_client(u, &co_null, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    co_null.target_name = "host/localhost";
    ck_assert_int_eq(negstream_authenticate_as_client(u, &co_null, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    co_null.target_name = NULL;
    negstream_close(u);
    close(fds[1]);

    /* Authenticated, a read pending: NOT_SUPPORTED comes last.  Then the
     * second authentication is refused before its options are looked at
     * (6.1 step 2 before step 4). */
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    rd = negstream_begin_read(s, buf, sizeof(buf), 0, sizeof(buf), NULL, NULL,
                              &e);
    ck_assert_ptr_nonnull(rd);
    {
        /* only the read kinds are pending: write at 'state' would send */
        char one[1] = { 'x' };

        ck_assert_int_eq(negstream_read(s, NULL, 1, -1, 5, &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
        ck_assert_int_eq(negstream_read(s, one, 1, 0, 2, &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
        ck_assert_ptr_null(negstream_begin_read(s, one, 1, -1, 1, NULL, NULL,
                                                &e));
        ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
        ck_assert_int_eq(negstream_read(s, one, 1, 0, 1, &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    }
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co_null, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_int_eq(negstream_authenticate_as_server(s, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    tu_write_all(c, "go", 2);
    ck_assert_int_eq(negstream_end_read(s, rd, &e), 2);

    /* Closed (a completed, unended write keeps the stream alive): the
     * arguments still come first, then DISPOSED, for authentication too
     * (6.1 step 1 before step 4). */
    hold = negstream_begin_write(c, "h", 1, 0, 1, NULL, NULL, &e);
    ck_assert_ptr_nonnull(hold);
    ck_assert(negstream_async_wait(hold, -1));
    negstream_close(c);
    expect_order(c, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co_null, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(negstream_end_write(c, hold, &e), 0);
    negstream_close(s);

    /* A failed authentication is stored: it comes back after the argument
     * errors, and a new authentication is refused before its options. */
    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    a.target = "host/no-such-host.invalid";
    a.client_mech = "kerberos";
    ck_assert(!tu_auth_pair(&a, &c, &s, &e, NULL));
    ck_assert_int_eq(e.code, NEGSTREAM_E_AUTHENTICATION);
    expect_order(c, NEGSTREAM_E_AUTHENTICATION);
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co_null, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- Disposed_ThrowsObjectDisposedException (items 2, 16, 24, 41) ------- */

static void expect_disposed_everywhere(negstream *s)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_pool *pool;
    negstream_error e;
    char b[4];

    /* Properties: false / NONE / NULL. */
    ck_assert(!negstream_is_authenticated(s));
    ck_assert(!negstream_is_encrypted(s));
    ck_assert(!negstream_is_signed(s));
    ck_assert(!negstream_is_mutually_authenticated(s));
    ck_assert(!negstream_is_server(s));
    ck_assert_int_eq(negstream_impersonation_level(s),
                     NEGSTREAM_IMPERSONATION_NONE);
    ck_assert_ptr_null(negstream_remote_identity(s));
    ck_assert_ptr_null(negstream_authentication_type(s));

    atomic_store(&callbacks, 0);
    ck_assert_int_eq(negstream_write(s, "x", 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, 0, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_ptr_null(negstream_begin_write(s, "x", 1, 0, 1, count_cb, NULL,
                                             &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_ptr_null(negstream_begin_read(s, b, sizeof(b), 0, sizeof(b),
                                            count_cb, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);

    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    negstream_server_options_init(&so);
    ck_assert_int_eq(negstream_authenticate_as_client(s, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(negstream_authenticate_as_server(s, &so, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_ptr_null(negstream_begin_authenticate_as_client(s, &co,
                       count_cb, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_ptr_null(negstream_begin_authenticate_as_server(s, &so,
                       count_cb, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);

    ck_assert_int_eq(negstream_set_timeouts(s, 100, 100, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    pool = negstream_pool_new(1, 1, &e);
    ck_assert_ptr_nonnull(pool);
    ck_assert_int_eq(negstream_set_pool(s, pool, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    negstream_pool_free(pool);
    ck_assert_int_eq(atomic_load(&callbacks), 0);
}

/* After close every call fails with DISPOSED and every property reads
 * false or NULL (negstream_close(3)).  The stream is kept alive for the
 * calls by an async result not yet ended, the one case where calls after
 * close are defined: a completed write on an authenticated stream (_i 0,
 * client; 1, server), and a server authentication still waiting for its
 * client (_i 2: Dispose, then AuthenticateAsClient). */
START_TEST(test_every_call_after_close)
{
    negstream *c, *s, *victim;
    negstream_async *hold;
    negstream_error e;
    int fds[2];

    if (_i < 2) {
        tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
        victim = _i == 0 ? c : s;
        ck_assert(negstream_is_authenticated(victim));
        hold = negstream_begin_write(victim, "h", 1, 0, 1, NULL, NULL, &e);
        ck_assert_ptr_nonnull(hold);
        ck_assert(negstream_async_wait(hold, -1));
        negstream_close(victim);
        expect_disposed_everywhere(victim);
        /* It had completed before the close: its outcome stands. */
        ck_assert_int_eq(negstream_end_write(victim, hold, &e), 0);
        negstream_close(victim == c ? s : c);
        return;
    }
    tu_tcp_pair(fds);
    s = negstream_new(fds[1], false, &e);
    ck_assert_ptr_nonnull(s);
    hold = negstream_begin_authenticate_as_server(s, NULL, NULL, NULL, &e);
    ck_assert_ptr_nonnull(hold);
    ck_assert(!negstream_async_wait(hold, 50));
    negstream_close(s);
    ck_assert(negstream_async_wait(hold, -1));
    expect_disposed_everywhere(s);
    ck_assert_int_eq(negstream_end_authenticate_as_server(s, hold, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    close(fds[0]);
}
END_TEST

/* ---- UseWrappedAfterClose_Success (item 45) ----------------------------- */

/* leave_inner_open on both sides of an authenticated pair: after both
 * streams are closed the raw sockets still carry bytes both ways (and
 * nothing was sent on close). */
START_TEST(test_inner_usable_after_close)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *c, *s;
    int fds[2];
    char buf[8];

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.protection = levels[_i];
    if (levels[_i] == NEGSTREAM_PROTECTION_NONE)
        ntlm_client(&co, NEGSTREAM_PROTECTION_NONE);
    negstream_server_options_init(&so);
    so.protection = levels[_i];
    ck_assert_msg(pair_with(&co, &so, true, &c, &s, &ce, &se, fds),
                  "%s / %s", ce.message, se.message);
    tu_write_all(c, "abc", 3);
    tu_read_all(s, buf, 3);
    ck_assert_mem_eq(buf, "abc", 3);
    negstream_close(c);
    negstream_close(s);
    ck_assert(wire_empty(fds[0]));
    ck_assert(wire_empty(fds[1]));
    ck_assert_int_eq(send(fds[0], "raw1", 4, MSG_NOSIGNAL), 4);
    ck_assert_int_eq(recv(fds[1], buf, 4, MSG_WAITALL), 4);
    ck_assert_mem_eq(buf, "raw1", 4);
    ck_assert_int_eq(send(fds[1], "raw2", 4, MSG_NOSIGNAL), 4);
    ck_assert_int_eq(recv(fds[0], buf, 4, MSG_WAITALL), 4);
    ck_assert_mem_eq(buf, "raw2", 4);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* ---- ClientWriteRead_Successive_Sync/Async against an echo server (51) -- */

static void *echo_main(void *p)
{
    negstream *s = p;
    negstream_error e;
    uint8_t buf[4096];
    ssize_t n;

    while ((n = negstream_read(s, buf, sizeof(buf), 0, sizeof(buf), &e)) > 0)
        if (negstream_write(s, buf, sizeof(buf), 0, n, &e) != n)
            break;
    return NULL;
}

/* Two writes, then two reads of the echoed (re-wrapped) messages.  _i:
 * Kerberos or NTLM (bit 0), sync or begin/end (bit 1). */
START_TEST(test_echo_successive_writes_reads)
{
    static const char m1[] = "Sending a message";
    static const char m2[] = "and a second, longer one after it";
    const size_t n1 = sizeof(m1) - 1, n2 = sizeof(m2) - 1;
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se, e;
    int mode = (_i & 2) ? MODE_WAIT : MODE_SYNC;
    negstream *c, *s;
    pthread_t t;
    char buf[64];
    size_t got;

    TU_NEEDS_NTLM(_i & 1);
    if (_i & 1) {
        ntlm_client(&co, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    } else {
        negstream_client_options_init(&co);
        co.target_name = tu_env("NEGTEST_SPN");
    }
    negstream_server_options_init(&so);
    ck_assert_msg(pair_with(&co, &so, false, &c, &s, &ce, &se, NULL),
                  "%s / %s", ce.message, se.message);
    ck_assert_str_eq(negstream_authentication_type(c),
                     (_i & 1) ? "NTLM" : "Kerberos");
    ck_assert(negstream_is_encrypted(c));
    ck_assert_int_eq(pthread_create(&t, NULL, echo_main, s), 0);
    ck_assert_int_eq(io_mode(mode, c, true, (void *)m1, n1, 0, (ssize_t)n1,
                             &e), (ssize_t)n1);
    ck_assert_int_eq(io_mode(mode, c, true, (void *)m2, n2, 0, (ssize_t)n2,
                             &e), (ssize_t)n2);
    for (got = 0; got < n1 + n2;) {
        ssize_t r = io_mode(mode, c, false, buf, sizeof(buf), (ssize_t)got,
                            (ssize_t)(n1 + n2 - got), &e);

        ck_assert_msg(r > 0, "echo read: %zd (%s)", r, e.message);
        got += (size_t)r;
    }
    ck_assert_mem_eq(buf, m1, n1);
    ck_assert_mem_eq(buf + n1, m2, n2);
    negstream_close(c);               /* the echo thread sees EOF */
    pthread_join(t, NULL);
    negstream_close(s);
}
END_TEST

/* ---- authentication outcomes through the public API --------------------- */

/* Item 4: the client's remote identity is the target as given.  NTLM does
 * not check the target, so any name authenticates. */
START_TEST(test_target_name_identity)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *c, *s;

    TU_NEEDS_NTLM(true);

    ntlm_client(&co, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    co.target_name = "testTargetName";
    negstream_server_options_init(&so);
    ck_assert_msg(pair_with(&co, &so, false, &c, &s, &ce, &se, NULL),
                  "%s / %s", ce.message, se.message);
    ck_assert(negstream_is_authenticated(c));
    ck_assert_str_eq(negstream_remote_identity(c), "testTargetName");
    ck_assert_str_eq(negstream_authentication_type(c), "NTLM");
    ck_assert_str_eq(negstream_remote_identity(s), ntlm_peer());
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* Items 1, 47, 49: every property on both sides after a default
 * (Kerberos, EncryptAndSign) authentication; then the server reads until
 * the client's end of stream. */
START_TEST(test_kerberos_properties_both_sides)
{
    negstream *c, *s;
    tu_reader r;
    uint8_t msg[3000];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert(negstream_is_authenticated(s));
    ck_assert(negstream_is_server(s));
    ck_assert(!negstream_is_server(c));
    ck_assert(negstream_is_encrypted(s) && negstream_is_signed(s));
    ck_assert(negstream_is_mutually_authenticated(c));
    ck_assert(negstream_is_mutually_authenticated(s));
    ck_assert_str_eq(negstream_authentication_type(s), "Kerberos");
    ck_assert_str_eq(negstream_remote_identity(s), tu_env("NEGTEST_USER"));
    ck_assert_int_eq(negstream_impersonation_level(s),
                     NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    tu_fill(msg, sizeof(msg), 49);
    tu_reader_start(&r, s, 1000, 0);
    tu_write_all(c, msg, sizeof(msg));
    tu_write_all(c, msg, sizeof(msg));
    negstream_close(c);
    tu_reader_join(&r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.got, 2 * sizeof(msg));
    ck_assert(r.hash == tu_fnv(tu_fnv(TU_FNV_INIT, msg, sizeof(msg)), msg,
                               sizeof(msg)));
    negstream_close(s);
}
END_TEST

/* Item 20: a None client against a server that requires Sign: both fail
 * with AUTHENTICATION, and the client's later write reports that stored
 * failure. */
START_TEST(test_security_requirement_not_met)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se, e;
    negstream *c, *s;

    ntlm_client(&co, NEGSTREAM_PROTECTION_NONE);
    negstream_server_options_init(&so);
    so.protection = NEGSTREAM_PROTECTION_SIGN;
    ck_assert(!pair_with(&co, &so, false, &c, &s, &ce, &se, NULL));
    ck_assert_msg(ce.code == NEGSTREAM_E_AUTHENTICATION, "client %s: %s",
                  negstream_status_name(ce.code), ce.message);
    ck_assert_msg(se.code == NEGSTREAM_E_AUTHENTICATION, "server %s: %s",
                  negstream_status_name(se.code), se.message);
    ck_assert_int_eq(negstream_write(c, "x", 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_AUTHENTICATION);
    ck_assert(!negstream_is_authenticated(c));
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* Item 15: the server accepts only its own service name; a client with a
 * ticket for another real service of the realm is refused on both sides. */
START_TEST(test_service_name_not_accepted)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *c, *s;

    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_HTTP_SPN");
    co.mechanism = "kerberos";
    negstream_server_options_init(&so);
    so.service_name = tu_env("NEGTEST_SPN");
    so.mechanism = "kerberos";
    ck_assert(!pair_with(&co, &so, false, &c, &s, &ce, &se, NULL));
    ck_assert_msg(se.code == NEGSTREAM_E_AUTHENTICATION
                  || se.code == NEGSTREAM_E_INVALID_CREDENTIAL,
                  "server %s: %s", negstream_status_name(se.code),
                  se.message);
    ck_assert_msg(ce.code == NEGSTREAM_E_AUTHENTICATION
                  || ce.code == NEGSTREAM_E_INVALID_CREDENTIAL,
                  "client %s: %s", negstream_status_name(ce.code),
                  ce.message);
    ck_assert(!negstream_is_authenticated(c));
    ck_assert(!negstream_is_authenticated(s));
    negstream_close(c);
    negstream_close(s);

    /* The same client against a server of that name succeeds. */
    so.service_name = tu_env("NEGTEST_HTTP_SPN");
    ck_assert_msg(pair_with(&co, &so, false, &c, &s, &ce, &se, NULL),
                  "%s / %s", ce.message, se.message);
    ck_assert_str_eq(negstream_remote_identity(c), tu_env("NEGTEST_HTTP_SPN"));
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* Item 52: NTLM at None with the three ways of naming the user (user +
 * domain, "DOMAIN\user", "user@DOMAIN"): no framing, not mutual, NTLM;
 * the server names the client "DOMAIN\user". */
START_TEST(test_ntlm_none_name_forms)
{
    char form[256];
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *c, *s;
    char buf[4];

    TU_NEEDS_NTLM(true);

    ntlm_client(&co, NEGSTREAM_PROTECTION_NONE);
    if (_i == 1) {
        snprintf(form, sizeof(form), "%s\\%s", tu_env("NEGTEST_NTLM_DOMAIN"),
                 tu_env("NEGTEST_NTLM_USER"));
        co.user = form;
        co.domain = NULL;
    } else if (_i == 2) {
        snprintf(form, sizeof(form), "%s@%s", tu_env("NEGTEST_NTLM_USER"),
                 tu_env("NEGTEST_NTLM_DOMAIN"));
        co.user = form;
        co.domain = NULL;
    }
    negstream_server_options_init(&so);
    so.protection = NEGSTREAM_PROTECTION_NONE;
    ck_assert_msg(pair_with(&co, &so, false, &c, &s, &ce, &se, NULL),
                  "form %d: %s / %s", _i, ce.message, se.message);
    ck_assert(!negstream_is_encrypted(c) && !negstream_is_signed(c));
    ck_assert(!negstream_is_mutually_authenticated(c));
    ck_assert_str_eq(negstream_authentication_type(c), "NTLM");
    ck_assert_str_eq(negstream_authentication_type(s), "NTLM");
    ck_assert_str_eq(negstream_remote_identity(s), ntlm_peer());
    tu_write_all(c, "none", 4);
    tu_read_all(s, buf, 4);
    ck_assert_mem_eq(buf, "none", 4);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* Item 50, KerberosAuthWithoutRealm_Success: a user name without a realm
 * and a password; the default realm completes it. */
START_TEST(test_kerberos_user_without_realm)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *c, *s;

    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = "kerberos";
    co.user = tu_env("NEGTEST_USER_SHORT");
    co.password = tu_env("NEGTEST_PASSWORD");
    ck_assert_ptr_null(strchr(co.user, '@'));
    negstream_server_options_init(&so);
    ck_assert_msg(pair_with(&co, &so, false, &c, &s, &ce, &se, NULL),
                  "%s / %s", ce.message, se.message);
    ck_assert_str_eq(negstream_authentication_type(c), "Kerberos");
    ck_assert(negstream_is_mutually_authenticated(c));
    ck_assert_str_eq(negstream_remote_identity(s), tu_env("NEGTEST_USER"));
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* Item 5, Authentication_EmptyCredentials_Fails: an empty user name is an
 * explicit credential, not the default one (user == NULL is); it names no
 * principal, so the client fails with INVALID_CREDENTIAL before its first
 * token, even though the default ccache holds a ticket.  Like .NET's
 * client failing before its first token, it tells the server: one
 * HandshakeError message with the logon-denied code, no token.  _i:
 * mechanism (negotiate, kerberos, ntlm). */
START_TEST(test_empty_user_is_not_default)
{
    static const char *mechs[] = { "negotiate", "kerberos", "ntlm" };
    negstream_client_options co;
    negstream_error e;
    negstream *c;
    int fds[2];

    TU_NEEDS_NTLM(strcmp(mechs[_i], "ntlm") == 0);
    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(c);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = mechs[_i];
    co.user = "";
    co.domain = "";
    co.password = "";
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_INVALID_CREDENTIAL, "%s: %s",
                  negstream_status_name(e.code), e.message);
    ck_assert_msg(strstr(e.message, "user name is empty") != NULL, "%s",
                  e.message);
    ck_assert(!negstream_is_authenticated(c));
    /* No token: only the error message (logon denied, 0x8009030C, as
     * frame.c encodes it), then nothing. */
    {
        static const uint8_t want[13] = {
            0x15, 0x01, 0x00, 0x00, 0x08,
            0x0c, 0x03, 0x09, 0x80, 0x80, 0x09, 0x03, 0x0c
        };
        uint8_t got[13];

        ck_assert_int_eq(recv(fds[1], got, sizeof(got), MSG_WAITALL), 13);
        ck_assert_mem_eq(got, want, sizeof(want));
        ck_assert(wire_empty(fds[1]));
    }
    negstream_close(c);
    close(fds[1]);
}
END_TEST

/* Item 38, the write side of ReadTimeout_Expires_Throws: a write blocked
 * on a peer that does not read fails with TIMEOUT once the write timeout
 * expires; the stream is then faulted (a frame may be half sent). */
START_TEST(test_write_timeout_expires)
{
    const size_t big = 64u << 20;
    uint8_t *blob = calloc(1, big);
    negstream *c, *s;
    negstream_error e;

    ck_assert_ptr_nonnull(blob);
    if (tu_skip_without_ntlm(__func__, _i,
                             levels[_i] == NEGSTREAM_PROTECTION_NONE)) {
        free(blob);
        return;
    }
    tu_pair(levels[_i], &c, &s);
    ck_assert_int_eq(negstream_set_timeouts(c, -1, 200, &e), 0);
    ck_assert_int_eq(negstream_write(c, blob, big, 0, (ssize_t)big, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_TIMEOUT, "%s: %s",
                  negstream_status_name(e.code), e.message);
    ck_assert_int_eq(negstream_write(c, "x", 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    negstream_close(c);
    negstream_close(s);
    free(blob);
}
END_TEST

/* ---- the suite ---------------------------------------------------------- */

static Suite *conformance_suite(void)
{
    Suite *su = suite_create("conformance");
    TCase *t = tcase_create("stream");
    TCase *a = tcase_create("authentication");

    tcase_set_timeout(t, 300);
    tcase_set_timeout(a, 300);
    tcase_add_loop_test(t, test_long_message_read_in_loop, 0, NLEVELS);
    tcase_add_loop_test(t, test_successive_write_partial_read, 0,
                        2 * NLEVELS);
    tcase_add_loop_test(t, test_read_write_byte, 0, NLEVELS);
    tcase_add_loop_test(t, test_read_write_modes_sizes_offsets, 0, NLEVELS);
    tcase_add_loop_test(t, test_zero_byte_read_modes, 0, NLEVELS);
    tcase_add_loop_test(t, test_zero_byte_writes_async, 0, NLEVELS);
    tcase_add_loop_test(t, test_read_eof_returns_0, 0, 2 * NLEVELS);
    tcase_add_loop_test(t, test_second_read_or_write_while_pending, 0,
                        NLEVELS);
    tcase_add_test(t, test_end_invalid_parameter_in_callback);
    tcase_add_test(t, test_begin_argument_validation);
    tcase_add_test(t, test_error_order);
    tcase_add_loop_test(t, test_every_call_after_close, 0, 3);
    tcase_add_loop_test(t, test_inner_usable_after_close, 0, NLEVELS);
    tcase_add_loop_test(t, test_echo_successive_writes_reads, 0, 4);
    tcase_add_loop_test(t, test_write_timeout_expires, 0, NLEVELS);
    tcase_add_test(a, test_end_authenticate_invalid_parameter);
    tcase_add_test(a, test_target_name_identity);
    tcase_add_test(a, test_kerberos_properties_both_sides);
    tcase_add_test(a, test_security_requirement_not_met);
    tcase_add_test(a, test_service_name_not_accepted);
    tcase_add_loop_test(a, test_ntlm_none_name_forms, 0, 3);
    tcase_add_test(a, test_kerberos_user_without_realm);
    tcase_add_loop_test(a, test_empty_user_is_not_default, 0, 3);
    suite_add_tcase(su, t);
    suite_add_tcase(su, a);
    return su;
}

int main(void)
{
    SRunner *sr = srunner_create(conformance_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
