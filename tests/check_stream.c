/*
 * check_stream.c - reads and writes of the synchronous stream against a
 * real MIT realm, at every protection level: every write size both ways
 * and both directions at once, frame boundaries, offsets, 0-byte reads
 * and writes, a clean EOF, a peer gone or silent, and close (the inner
 * fd left open, a call blocked in another thread).  Authentication is
 * check_stream_auth.c's, argument and option errors check_stream_args.c's,
 * bad frames from the wire check_stream_wire.c's.
 * Run under tests/kdc/with-realm (tests/stream.krb).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "negstream.h"
#include "testutil.h"

static const negstream_protection levels[] = {
    NEGSTREAM_PROTECTION_NONE, NEGSTREAM_PROTECTION_SIGN,
    NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
};

/* ---- sizes and both directions at once ---------------------------------- */

START_TEST(test_sizes_each_level)
{
    static const size_t sizes[] = { 0, 1, 64512, 64513, 10u << 20 };
    negstream *c, *s;
    size_t i;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        tu_transfer(c, s, sizes[i], (uint32_t)i);
        tu_transfer(s, c, sizes[i], (uint32_t)i + 100);
    }
    negstream_close(c);
    negstream_close(s);
}
END_TEST

struct duplex {
    negstream *s;
    size_t n;
    uint32_t seed;
    int rc;
};

static void *duplex_writer(void *p)
{
    struct duplex *d = p;
    uint8_t *buf = malloc(d->n);
    negstream_error e;

    tu_fill(buf, d->n, d->seed);
    d->rc = negstream_write(d->s, buf, d->n, 0, (ssize_t)d->n, &e) ==
            (ssize_t)d->n ? 0 : -1;
    free(buf);
    return NULL;
}

/* Both directions at once on both streams: one read and one write on one
 * GSS context concurrently (the gss_mu leaf lock). */
START_TEST(test_full_duplex)
{
    enum { N = 4 << 20 };
    struct duplex dc = { NULL, N, 1, -1 }, ds = { NULL, N, 2, -1 };
    tu_reader rc, rs;
    pthread_t tc, ts;
    negstream *c, *s;
    uint8_t *ref = malloc(N);

    if (tu_skip_without_ntlm(__func__, _i,
                             levels[_i] == NEGSTREAM_PROTECTION_NONE)) {

        free(ref);

        return;

    }
    tu_pair(levels[_i], &c, &s);
    dc.s = c;
    ds.s = s;
    tu_reader_start(&rc, c, 65536, N);
    tu_reader_start(&rs, s, 65536, N);
    pthread_create(&tc, NULL, duplex_writer, &dc);
    pthread_create(&ts, NULL, duplex_writer, &ds);
    pthread_join(tc, NULL);
    pthread_join(ts, NULL);
    tu_reader_join(&rc);
    tu_reader_join(&rs);
    ck_assert_int_eq(dc.rc, 0);
    ck_assert_int_eq(ds.rc, 0);
    ck_assert_int_eq(rc.rc, 0);
    ck_assert_int_eq(rs.rc, 0);
    tu_fill(ref, N, 2);
    ck_assert(rc.hash == tu_fnv(TU_FNV_INIT, ref, N));
    tu_fill(ref, N, 1);
    ck_assert(rs.hash == tu_fnv(TU_FNV_INIT, ref, N));
    free(ref);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- frame boundaries, offsets, zero bytes, EOF ------------------------- */

/* Reads never span frames; the rest of a frame is kept for later reads. */
START_TEST(test_partial_reads_across_frames)
{
    enum { N = 64512 + 101 };
    uint8_t *src = malloc(N), *dst = malloc(N);
    negstream *c, *s;
    negstream_error e;
    size_t got = 0;
    int reads = 0;

    ck_assert_ptr_nonnull(src);
    ck_assert_ptr_nonnull(dst);
    tu_fill(src, N, 7);
    if (tu_skip_without_ntlm(__func__, _i,
                             levels[_i] == NEGSTREAM_PROTECTION_NONE)) {
        free(src); free(dst);
        return;
    }
    tu_pair(levels[_i], &c, &s);
    tu_write_all(c, src, N);
    while (got < N) {
        ssize_t want = N - got < 1000 ? (ssize_t)(N - got) : 1000;
        ssize_t n = negstream_read(s, dst, N, (ssize_t)got, want, &e);

        ck_assert_msg(n > 0, "read: %s", e.message);
        if (levels[_i] != NEGSTREAM_PROTECTION_NONE) {
            /* 64 reads of 1000, then the 512 left in frame one, then
             * the 101 of frame two. */
            if (reads < 64)
                ck_assert_int_eq(n, 1000);
            else if (reads == 64)
                ck_assert_int_eq(n, 512);
            else
                ck_assert_int_eq(n, 101);
        }
        got += (size_t)n;
        reads++;
    }
    ck_assert_mem_eq(src, dst, N);
    negstream_close(c);
    negstream_close(s);
    free(src);
    free(dst);
}
END_TEST

/* Five 512-byte messages read into a 1024-byte buffer: one each. */
START_TEST(test_messages_smaller_than_buffer)
{
    uint8_t msg[512], buf[1024];
    negstream *c, *s;
    negstream_error e;
    int i;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    for (i = 0; i < 5; i++) {
        tu_fill(msg, sizeof(msg), (uint32_t)i);
        tu_write_all(c, msg, sizeof(msg));
        ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, sizeof(buf),
                                        &e), 512);
        ck_assert_mem_eq(buf, msg, sizeof(msg));
    }
    negstream_close(c);
    negstream_close(s);
}
END_TEST

START_TEST(test_offsets_honoured)
{
    const char src[] = "xxxhelloyyy";
    char dst[16];
    negstream *c, *s;
    negstream_error e;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    ck_assert_int_eq(negstream_write(c, src, sizeof(src) - 1, 3, 5, &e), 5);
    memset(dst, '.', sizeof(dst));
    ck_assert_int_eq(negstream_read(s, dst, sizeof(dst), 7, 5, &e), 5);
    ck_assert_mem_eq(dst + 7, "hello", 5);
    ck_assert_int_eq(dst[6], '.');
    ck_assert_int_eq(dst[12], '.');
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* "", "hello", "", "world" -> "helloworld"; a 0-byte write sends nothing. */
START_TEST(test_zero_byte_writes)
{
    char buf[16];
    negstream *c, *s;
    negstream_error e;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    ck_assert_int_eq(negstream_write(c, "", 0, 0, 0, &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    {
        char peek;
        ssize_t r = recv(tu_fds[1], &peek, 1, MSG_DONTWAIT | MSG_PEEK);

        ck_assert_msg(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                      "a 0-byte write put bytes on the wire");
    }
    ck_assert_int_eq(negstream_write(c, "hello", 5, 0, 5, &e), 5);
    ck_assert_int_eq(negstream_write(c, "", 0, 0, 0, &e), 0);
    ck_assert_int_eq(negstream_write(c, "world", 5, 0, 5, &e), 5);
    tu_read_all(s, buf, 10);
    ck_assert_mem_eq(buf, "helloworld", 10);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* A 0-byte read blocks until a frame arrives, returns 0, and the data is
 * then fully readable (.NET's BlocksOnZeroByteReads). */
START_TEST(test_zero_byte_read_blocks)
{
    tu_zero_read z;
    negstream *c, *s;
    char buf[4];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    tu_zero_read_start(&z, s);
    usleep(100 * 1000);
    ck_assert(!tu_zero_read_done(&z));
    tu_write_all(c, "abc", 3);
    ck_assert_int_eq(tu_zero_read_join(&z), 0);
    tu_read_all(s, buf, 3);
    ck_assert_mem_eq(buf, "abc", 3);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

START_TEST(test_clean_eof)
{
    negstream *c, *s;
    negstream_error e;
    char b[8];

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    tu_write_all(c, "bye", 3);
    negstream_close(c);
    tu_read_all(s, b, 3);
    ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e), 0);
    negstream_close(s);
}
END_TEST

/* ---- faults of the transport -------------------------------------------- */

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

START_TEST(test_peer_closed_write_fails_without_sigpipe)
{
    static uint8_t buf[1 << 16];
    negstream *c, *s;
    negstream_error e;
    int i;

    signal(SIGPIPE, on_sigpipe);
    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    negstream_close(s);
    for (i = 0; i < 1000; i++)
        if (negstream_write(c, buf, sizeof(buf), 0, sizeof(buf), &e) < 0)
            break;
    ck_assert_int_lt(i, 1000);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(sigpipes, 0);
    ck_assert_int_eq(negstream_write(c, buf, 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_ptr_nonnull(strstr(e.message, "earlier"));
    negstream_close(c);
    signal(SIGPIPE, SIG_DFL);
}
END_TEST

START_TEST(test_read_timeout_faults)
{
    negstream *c, *s;
    negstream_error e;
    char b[4];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert_int_eq(negstream_set_timeouts(s, 100, -1, &e), 0);
    ck_assert_int_eq(negstream_read(s, b, 4, 0, 4, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_TIMEOUT);
    ck_assert_int_eq(negstream_read(s, b, 4, 0, 4, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- close -------------------------------------------------------------- */

START_TEST(test_leave_inner_open)
{
    negstream_error e;
    negstream *s;
    int fds[2];
    char b;

    tu_tcp_pair(fds);
    s = negstream_new(fds[0], true, &e);
    ck_assert_ptr_nonnull(s);
    negstream_close(s);
    /* Still open and usable. */
    ck_assert_int_eq(send(fds[0], "z", 1, 0), 1);
    ck_assert_int_eq(recv(fds[1], &b, 1, 0), 1);
    close(fds[0]);
    s = negstream_new(fds[1], false, &e);
    negstream_close(s);
    ck_assert_int_eq(fcntl(fds[1], F_GETFD), -1);
}
END_TEST

/* A synchronous call that another thread closes the stream under. */

struct sync_call {
    negstream      *s;
    bool            write;
    size_t          n;
    char           *buf;
    atomic_long     tid;
    ssize_t         rc;
    negstream_error err;
};

static void *sync_call_main(void *arg)
{
    struct sync_call *sc = arg;

    atomic_store(&sc->tid, (long)syscall(SYS_gettid));
    if (sc->write)
        sc->rc = negstream_write(sc->s, sc->buf, sc->n, 0, (ssize_t)sc->n,
                                 &sc->err);
    else
        sc->rc = negstream_read(sc->s, sc->buf, sc->n, 0, (ssize_t)sc->n,
                                &sc->err);
    return NULL;
}

/* A read blocked on a silent peer (_i == 0), or a write blocked on a peer
 * that does not read (_i == 1): negstream_close from another thread wakes
 * it with DISPOSED, and the stream is freed when the call has returned
 * (ASan and valgrind check there is no use after free). */
START_TEST(test_close_during_sync_call)
{
    struct sync_call sc;
    negstream *c, *s;
    pthread_t t;
    long tid;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    memset(&sc, 0, sizeof(sc));
    atomic_init(&sc.tid, 0);
    sc.s = c;
    sc.write = (_i == 1);
    sc.n = sc.write ? 64u << 20 : 100;
    sc.buf = calloc(1, sc.n);
    ck_assert_ptr_nonnull(sc.buf);
    ck_assert_int_eq(pthread_create(&t, NULL, sync_call_main, &sc), 0);
    while ((tid = atomic_load(&sc.tid)) == 0 || !tu_blocked_in_io(tid))
        usleep(1000);
    negstream_close(c);
    pthread_join(t, NULL);
    ck_assert_int_eq(sc.rc, -1);
    ck_assert_msg(sc.err.code == NEGSTREAM_E_DISPOSED, "%s: %s",
                  negstream_status_name(sc.err.code), sc.err.message);
    free(sc.buf);
    negstream_close(s);
}
END_TEST

static Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");
    int nlevels = (int)(sizeof(levels) / sizeof(levels[0]));
    TCase *t;

    t = tcase_create("transfer");
    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, test_sizes_each_level, 0, nlevels);
    tcase_add_loop_test(t, test_full_duplex, 0, nlevels);
    suite_add_tcase(s, t);

    t = tcase_create("boundaries");
    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, test_partial_reads_across_frames, 0, nlevels);
    tcase_add_test(t, test_messages_smaller_than_buffer);
    tcase_add_loop_test(t, test_offsets_honoured, 0, nlevels);
    tcase_add_loop_test(t, test_zero_byte_writes, 0, nlevels);
    tcase_add_test(t, test_zero_byte_read_blocks);
    tcase_add_loop_test(t, test_clean_eof, 0, nlevels);
    suite_add_tcase(s, t);

    t = tcase_create("faults");
    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, test_peer_closed_write_fails_without_sigpipe, 0,
                        nlevels);
    tcase_add_test(t, test_read_timeout_faults);
    suite_add_tcase(s, t);

    t = tcase_create("close");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_leave_inner_open);
    tcase_add_loop_test(t, test_close_during_sync_call, 0, 2);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(stream_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
