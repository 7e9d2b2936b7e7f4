/*
 * check_stdio.c - negstream_fopen(3) and negstream_ferror(3) against a
 * real MIT realm: lines written with fprintf come back exactly through
 * fgets, a full buffer or an fflush is one frame on the wire (counted on
 * the raw socket), large fwrites, lines across frames, the errno table
 * (peer gone, stream closed, not authenticated, timeout, a read already
 * pending, fork), fclose leaving the stream usable, "r+" request/response
 * and two FILEs on one stream.
 * Run under tests/kdc/with-realm (tests/stdio.krb).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "negstream.h"
#include "stdio_adapter.h"
#include "testutil.h"

#define FRAME NEGSTREAM_MAX_FRAME_PLAINTEXT

static const negstream_protection levels[] = {
    NEGSTREAM_PROTECTION_NONE, NEGSTREAM_PROTECTION_SIGN,
    NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
};

/* negstream_ferror must say 'code'; returns its error for more checks. */
static negstream_error expect_ferror(FILE *f, negstream_status code)
{
    negstream_error e;
    int rc;

    memset(&e, 0xa5, sizeof(e));
    rc = negstream_ferror(f, &e);
    if (code == NEGSTREAM_OK) {
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(e.code, NEGSTREAM_OK);
    } else {
        ck_assert_msg(rc == 1 && e.code == code,
                      "negstream_ferror: rc %d, %s (%s), want %s", rc,
                      negstream_status_name(e.code), e.message,
                      negstream_status_name(code));
        ck_assert(e.message[0] != '\0');
    }
    return e;
}

/* Line i of the round-trip tests: its number and 0 to 299 letters. */
static int make_line(char *buf, size_t cap, int i)
{
    int len = (i * 37) % 300, j, n;

    n = snprintf(buf, cap, "%06d:", i);
    for (j = 0; j < len; j++)
        buf[n + j] = (char)('a' + (i + j) % 26);
    buf[n + len] = '\n';
    buf[n + len + 1] = '\0';
    return n + len + 1;
}

/* ---- a writer thread ---------------------------------------------------- */

struct line_writer {
    pthread_t  t;
    negstream *s;
    int        nlines;
    int        rc;                 /* 0 ok; else a description below */
    int        err;                /* errno of the failure */
};

/* fprintf's the lines through a FILE, fcloses it, closes the stream: the
 * reader sees the end of the stream after the last line. */
static void *line_writer_main(void *p)
{
    struct line_writer *w = p;
    char line[400];
    FILE *f;
    int i;

    f = negstream_fopen(w->s, "w");
    if (f == NULL) {
        w->rc = 1;
        w->err = errno;
        return NULL;
    }
    for (i = 0; i < w->nlines; i++) {
        make_line(line, sizeof(line), i);
        if (fprintf(f, "%s", line) < 0) {
            w->rc = 2;
            w->err = errno;
            break;
        }
    }
    if (fclose(f) != 0 && w->rc == 0) {
        w->rc = 3;
        w->err = errno;
    }
    negstream_close(w->s);
    return NULL;
}

/* Every line written with fprintf comes back exactly with fgets, at each
 * protection level, and then the end of the stream, not an error. */
START_TEST(test_lines_round_trip)
{
    struct line_writer w;
    char want[400], got[400];
    negstream *c, *s;
    FILE *f;
    int i;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    memset(&w, 0, sizeof(w));
    w.s = c;
    w.nlines = 5000;           /* about 0.8 MB: more than one buffer */
    ck_assert_int_eq(pthread_create(&w.t, NULL, line_writer_main, &w), 0);
    f = negstream_fopen(s, "r");
    ck_assert_ptr_nonnull(f);
    for (i = 0; i < w.nlines; i++) {
        make_line(want, sizeof(want), i);
        ck_assert_msg(fgets(got, sizeof(got), f) != NULL,
                      "line %d: fgets failed: %s", i, strerror(errno));
        ck_assert_str_eq(got, want);
    }
    ck_assert_ptr_null(fgets(got, sizeof(got), f));
    ck_assert(feof(f));
    ck_assert(!ferror(f));
    expect_ferror(f, NEGSTREAM_OK);
    pthread_join(w.t, NULL);
    ck_assert_msg(w.rc == 0, "writer failed at step %d: %s", w.rc,
                  strerror(w.err));
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(s);
}
END_TEST

/* ---- frames on the wire ------------------------------------------------- */

struct wire_reader {
    pthread_t t;
    int       fd;
    size_t    n;
    uint32_t  len[64];             /* frame lengths (token sizes) */
    int       rc;                  /* 0: clean end between frames */
};

static int read_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return got == 0 && r == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

/* Reads MS-NNS data frames (4-byte little-endian length, token) from the
 * raw socket until the end, recording each frame's length. */
static void *wire_reader_main(void *p)
{
    struct wire_reader *wr = p;
    static uint8_t body[65536];
    uint8_t hdr[4];
    int r;

    for (;;) {
        uint32_t len;

        r = read_exact(wr->fd, hdr, 4);
        if (r <= 0) {
            wr->rc = r;
            return NULL;
        }
        len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8
              | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
        if (len == 0 || len > sizeof(body) || wr->n == 64
            || read_exact(wr->fd, body, len) != 1) {
            wr->rc = -1;
            return NULL;
        }
        wr->len[wr->n++] = len;
    }
}

static void put_chars(FILE *f, char c, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        ck_assert_int_eq(fputc(c, f), c);
}

/* What the stdio adapter promises about frames: the lines of one fflush
 * go out as one frame, an fflush with nothing buffered (or after a
 * 0-byte fwrite) sends none, a full buffer is one frame of 64512 bytes,
 * and a large fwrite is full frames plus the rest.  Counted on the raw
 * socket of the peer; every frame's token is its plaintext plus the same
 * Kerberos overhead, which shows the plaintext sizes too. */
START_TEST(test_frames_per_flush)
{
    static const size_t want[] = {
        5, 7,                      /* two fflushes of short lines */
        FRAME,                     /* 64512 fputc, fflush */
        FRAME, 10,                 /* 64522 fputc: full buffer, fflush */
        FRAME, FRAME, 100          /* one fwrite of 2 * 64512 + 100 */
    };
    const size_t nwant = sizeof(want) / sizeof(want[0]);
    struct wire_reader wr;
    negstream *c, *s;
    char *big;
    size_t i;
    long overhead;
    FILE *f;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    memset(&wr, 0, sizeof(wr));
    wr.fd = tu_fds[1];
    ck_assert_int_eq(pthread_create(&wr.t, NULL, wire_reader_main, &wr), 0);
    f = negstream_fopen(c, "w");
    ck_assert_ptr_nonnull(f);

    ck_assert_int_ge(fputs("a\n", f), 0);
    ck_assert_int_ge(fputs("bc\n", f), 0);
    ck_assert_int_eq(fflush(f), 0);
    ck_assert_int_eq(fprintf(f, "line %d\n", 7), 7);
    ck_assert_int_eq(fflush(f), 0);
    ck_assert_int_eq(fflush(f), 0);                  /* nothing: no frame */
    ck_assert_uint_eq(fwrite("x", 1, 0, f), 0);      /* 0 bytes: no frame */
    ck_assert_int_eq(fflush(f), 0);
    put_chars(f, 'p', FRAME);
    ck_assert_int_eq(fflush(f), 0);
    put_chars(f, 'q', FRAME + 10);
    ck_assert_int_eq(fflush(f), 0);
    big = malloc(2 * FRAME + 100);
    ck_assert_ptr_nonnull(big);
    memset(big, 'r', 2 * FRAME + 100);
    ck_assert_uint_eq(fwrite(big, 1, 2 * FRAME + 100, f), 2 * FRAME + 100);
    free(big);
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(c);                 /* the wire reader sees the end */
    pthread_join(wr.t, NULL);

    ck_assert_msg(wr.rc == 0, "the wire ended inside a frame");
    ck_assert_msg(wr.n == nwant, "%zu frames on the wire, want %zu", wr.n,
                  nwant);
    overhead = (long)wr.len[0] - (long)want[0];
    ck_assert_msg(overhead > 0 && overhead < 128, "overhead %ld", overhead);
    for (i = 0; i < nwant; i++)
        ck_assert_msg((long)wr.len[i] - (long)want[i] == overhead,
                      "frame %zu: token of %u bytes, want %zu + %ld", i,
                      wr.len[i], want[i], overhead);
    negstream_close(s);
}
END_TEST

/* ---- large writes and lines across frames ------------------------------- */

struct blob_writer {
    pthread_t      t;
    negstream     *s;
    const uint8_t *data;
    size_t         n;
    size_t         wrote;
};

static void *blob_writer_main(void *p)
{
    struct blob_writer *b = p;
    FILE *f = negstream_fopen(b->s, "w");

    if (f != NULL) {
        b->wrote = fwrite(b->data, 1, b->n, f);
        if (fclose(f) != 0)
            b->wrote = 0;
    }
    negstream_close(b->s);
    return NULL;
}

/* One fwrite of 3 MiB + 123 bytes, read back with odd-sized freads. */
START_TEST(test_large_fwrite)
{
    const size_t n = (3u << 20) + 123;
    struct blob_writer b;
    uint8_t *data, chunk[1000];
    uint64_t h = TU_FNV_INIT;
    size_t got = 0, r;
    negstream *c, *s;
    FILE *f;

    data = malloc(n);
    ck_assert_ptr_nonnull(data);
    tu_fill(data, n, 42);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    memset(&b, 0, sizeof(b));
    b.s = c;
    b.data = data;
    b.n = n;
    ck_assert_int_eq(pthread_create(&b.t, NULL, blob_writer_main, &b), 0);
    f = negstream_fopen(s, "r");
    ck_assert_ptr_nonnull(f);
    while ((r = fread(chunk, 1, sizeof(chunk) - 1, f)) > 0) {
        h = tu_fnv(h, chunk, r);
        got += r;
    }
    ck_assert(feof(f) && !ferror(f));
    pthread_join(b.t, NULL);
    ck_assert_uint_eq(b.wrote, n);
    ck_assert_uint_eq(got, n);
    ck_assert(h == tu_fnv(TU_FNV_INIT, data, n));
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(s);
    free(data);
}
END_TEST

/* Lines cut across frames by the writer (negstream_write in pieces), a
 * line longer than a frame, and a last line without a newline: fgets puts
 * them back together. */
START_TEST(test_fgets_across_frames)
{
    static const char *pieces[] = { "hel", "lo\nwor", "ld\n", "" };
    const size_t longlen = 100000;
    char *longline, *got;
    negstream *c, *s;
    size_t i;
    FILE *f;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    for (i = 0; i < 3; i++)
        tu_write_all(c, pieces[i], strlen(pieces[i]));
    longline = malloc(longlen + 2);
    got = malloc(longlen + 100);
    ck_assert_ptr_nonnull(longline);
    ck_assert_ptr_nonnull(got);
    memset(longline, 'y', longlen);
    longline[longlen] = '\n';
    longline[longlen + 1] = '\0';
    tu_write_all(c, longline, longlen + 1);   /* two frames */
    tu_write_all(c, "ta", 2);
    tu_write_all(c, "il", 2);
    negstream_close(c);

    f = negstream_fopen(s, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(got, (int)longlen + 100, f));
    ck_assert_str_eq(got, "hello\n");
    /* A small fgets buffer: "world\n" in pieces of at most 3 chars. */
    ck_assert_ptr_nonnull(fgets(got, 4, f));
    ck_assert_str_eq(got, "wor");
    ck_assert_ptr_nonnull(fgets(got, 4, f));
    ck_assert_str_eq(got, "ld\n");
    ck_assert_ptr_nonnull(fgets(got, (int)longlen + 100, f));
    ck_assert_uint_eq(strlen(got), longlen + 1);
    ck_assert_str_eq(got, longline);
    ck_assert_ptr_nonnull(fgets(got, (int)longlen + 100, f));
    ck_assert_str_eq(got, "tail");
    ck_assert(feof(f));
    ck_assert_ptr_null(fgets(got, (int)longlen + 100, f));
    ck_assert(!ferror(f));
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(s);
    free(longline);
    free(got);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

/* The peer closes between frames: the end of the file, not an error. */
START_TEST(test_peer_closes_is_eof)
{
    negstream *c, *s;
    char line[64];
    FILE *f;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    tu_write_all(s, "last\n", 5);
    negstream_close(s);
    f = negstream_fopen(c, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    ck_assert_str_eq(line, "last\n");
    ck_assert_int_eq(fgetc(f), EOF);
    ck_assert(feof(f) && !ferror(f));
    expect_ferror(f, NEGSTREAM_OK);
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(c);
}
END_TEST

/* The peer closes inside a frame: ferror, errno EIO, NEGSTREAM_E_IO. */
START_TEST(test_peer_closes_inside_frame)
{
    static const uint8_t half[] = { 64, 0, 0, 0, 'a', 'b' };
    negstream *c, *s;
    negstream_error e;
    FILE *f;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert_int_eq(write(tu_fds[1], half, sizeof(half)),
                     (ssize_t)sizeof(half));
    ck_assert_int_eq(shutdown(tu_fds[1], SHUT_WR), 0);
    f = negstream_fopen(c, "r");
    ck_assert_ptr_nonnull(f);
    errno = 0;
    ck_assert_int_eq(fgetc(f), EOF);
    ck_assert_int_eq(errno, EIO);
    ck_assert(ferror(f) && !feof(f));
    e = expect_ferror(f, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, 0);
    /* The stream is faulted: reading again fails again, same errno. */
    clearerr(f);
    errno = 0;
    ck_assert_int_eq(fgetc(f), EOF);
    ck_assert_int_eq(errno, EIO);
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* Writing to a peer that closed: fflush fails with the errno of the
 * failed send (EPIPE or ECONNRESET), and no SIGPIPE kills the test. */
START_TEST(test_write_to_closed_peer)
{
    negstream *c, *s;
    negstream_error e;
    int i, rc = 0, err = 0;
    FILE *f;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    negstream_close(s);
    f = negstream_fopen(c, "w");
    ck_assert_ptr_nonnull(f);
    /* The first frames may still fit in the socket; the reset follows. */
    for (i = 0; i < 200 && rc == 0; i++) {
        usleep(1000);
        fprintf(f, "line %d\n", i);
        rc = fflush(f);
        err = errno;
    }
    ck_assert_int_eq(rc, EOF);
    ck_assert_msg(err == EPIPE || err == ECONNRESET, "errno %d (%s)", err,
                  strerror(err));
    ck_assert(ferror(f));
    e = expect_ferror(f, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, err);
    /* fclose: nothing left to send (stdio dropped the failed buffer), the
     * stream stays open for negstream_close. */
    fclose(f);
    negstream_close(c);
}
END_TEST

/* No authentication yet: the FILE opens (it only wraps the stream), and
 * the first real write or read fails with ENOTCONN. */
START_TEST(test_not_authenticated)
{
    negstream *c;
    negstream_error e;
    int fds[2];
    FILE *w, *r;

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(c);
    w = negstream_fopen(c, "w");
    r = negstream_fopen(c, "r");
    ck_assert_ptr_nonnull(w);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_ge(fputs("buffered, not sent\n", w), 0);
    errno = 0;
    ck_assert_int_eq(fflush(w), EOF);
    ck_assert_int_eq(errno, ENOTCONN);
    ck_assert(ferror(w));
    expect_ferror(w, NEGSTREAM_E_INVALID_OPERATION);
    errno = 0;
    ck_assert_int_eq(fgetc(r), EOF);
    ck_assert_int_eq(errno, ENOTCONN);
    ck_assert(ferror(r));
    expect_ferror(r, NEGSTREAM_E_INVALID_OPERATION);
    fclose(w);
    ck_assert_int_eq(fclose(r), 0);
    negstream_close(c);
    close(fds[1]);
}
END_TEST

/* A read timeout on a silent peer: ETIMEDOUT and NEGSTREAM_E_TIMEOUT. */
START_TEST(test_read_timeout)
{
    negstream *c, *s;
    negstream_error e;
    FILE *f;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert_int_eq(negstream_set_timeouts(c, 100, -1, &e), 0);
    f = negstream_fopen(c, "r");
    ck_assert_ptr_nonnull(f);
    errno = 0;
    ck_assert_int_eq(fgetc(f), EOF);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert(ferror(f) && !feof(f));
    expect_ferror(f, NEGSTREAM_E_TIMEOUT);
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* A read of the stream already pending (negstream_begin_read): the FILE's
 * read fails with EBUSY (NEGSTREAM_E_NOT_SUPPORTED) and takes nothing;
 * the pending read gets the data. */
START_TEST(test_read_already_pending)
{
    negstream *c, *s;
    negstream_async *ar;
    negstream_error e;
    char buf[16];
    FILE *f;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ar = negstream_begin_read(c, buf, sizeof(buf), 0, sizeof(buf), NULL,
                              NULL, &e);
    ck_assert_ptr_nonnull(ar);
    f = negstream_fopen(c, "r");
    ck_assert_ptr_nonnull(f);
    errno = 0;
    ck_assert_int_eq(fgetc(f), EOF);
    ck_assert_int_eq(errno, EBUSY);
    expect_ferror(f, NEGSTREAM_E_NOT_SUPPORTED);
    tu_write_all(s, "data", 4);
    ck_assert_int_eq(negstream_end_read(c, ar, &e), 4);
    ck_assert_int_eq(memcmp(buf, "data", 4), 0);
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

struct blocked_fgets {
    pthread_t   t;
    FILE       *f;
    atomic_long tid;
    char       *got;
    int         err;
    bool        ferr;
};

static void *blocked_fgets_main(void *p)
{
    struct blocked_fgets *b = p;
    char line[64];

    atomic_store(&b->tid, (long)syscall(SYS_gettid));
    errno = 0;
    b->got = fgets(line, sizeof(line), b->f);
    b->err = errno;
    b->ferr = ferror(b->f) != 0;
    return NULL;
}

/* negstream_close from another thread wakes a FILE blocked in a read:
 * EBADF and NEGSTREAM_E_DISPOSED.  From then on every FILE of that stream
 * fails with EBADF without touching it (it is freed: ASan and valgrind
 * would see a use), so both fclose calls are safe; the buffered line of
 * the writing FILE is dropped.  negstream_ferror does not wait for the
 * FILE's lock, which the blocked fgets holds. */
START_TEST(test_stream_closed_under_file)
{
    struct blocked_fgets b;
    negstream *c, *s;
    long tid;
    FILE *w;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    memset(&b, 0, sizeof(b));
    atomic_init(&b.tid, 0);
    b.f = negstream_fopen(c, "r");
    w = negstream_fopen(c, "w");
    ck_assert_ptr_nonnull(b.f);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_ge(fputs("never sent\n", w), 0);
    ck_assert_int_eq(pthread_create(&b.t, NULL, blocked_fgets_main, &b), 0);
    while ((tid = atomic_load(&b.tid)) == 0 || !tu_blocked_in_io(tid))
        usleep(1000);
    expect_ferror(b.f, NEGSTREAM_OK);
    negstream_close(c);
    pthread_join(b.t, NULL);
    ck_assert_ptr_null(b.got);
    ck_assert_int_eq(b.err, EBADF);
    ck_assert(b.ferr);
    expect_ferror(b.f, NEGSTREAM_E_DISPOSED);
    errno = 0;
    ck_assert_int_eq(fflush(w), EOF);
    ck_assert_int_eq(errno, EBADF);
    expect_ferror(w, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(fclose(b.f), 0);
    fclose(w);
    negstream_close(s);
}
END_TEST

/* A forked child must not write into the parent's stream: its copy of
 * the FILE refuses with EBADF (DISPOSED, "fork" in the message), and
 * exit() in a child, which flushes every FILE, sends nothing.  The peer
 * receives the parent's lines exactly once. */
START_TEST(test_fork)
{
    char line[64];
    negstream *c, *s;
    int status;
    pid_t pid;
    FILE *w, *r;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    w = negstream_fopen(c, "w");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_ge(fputs("parent\n", w), 0);

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        exit(0);                /* flushes w: must send nothing */
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        negstream_error e;
        int code = 0;

        errno = 0;
        if (fflush(w) != EOF)
            code |= 1;
        if (errno != EBADF)
            code |= 2;
        if (negstream_ferror(w, &e) != 1 || e.code != NEGSTREAM_E_DISPOSED
            || strstr(e.message, "fork") == NULL)
            code |= 4;
        _exit(code);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child: status 0x%x", status);

    expect_ferror(w, NEGSTREAM_OK);     /* the parent's FILE is fine */
    ck_assert_int_ge(fputs("end\n", w), 0);
    ck_assert_int_eq(fclose(w), 0);
    negstream_close(c);
    r = negstream_fopen(s, "r");
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), r));
    ck_assert_str_eq(line, "parent\n");
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), r));
    ck_assert_str_eq(line, "end\n");
    ck_assert_ptr_null(fgets(line, sizeof(line), r));
    ck_assert(feof(r) && !ferror(r));
    ck_assert_int_eq(fclose(r), 0);
    negstream_close(s);
}
END_TEST

/* The table of negstream_fopen(3), code by code. */
START_TEST(test_errno_table)
{
    static const struct {
        negstream_status code;
        int sys_errno, want;
    } t[] = {
        { NEGSTREAM_OK, 0, 0 },
        { NEGSTREAM_E_ARGUMENT_NULL, 0, EINVAL },
        { NEGSTREAM_E_ARGUMENT_RANGE, 0, EINVAL },
        { NEGSTREAM_E_ARGUMENT, 0, EINVAL },
        { NEGSTREAM_E_INVALID_OPERATION, 0, ENOTCONN },
        { NEGSTREAM_E_NOT_SUPPORTED, 0, EBUSY },
        { NEGSTREAM_E_DISPOSED, 0, EBADF },
        { NEGSTREAM_E_IO, 0, EIO },
        { NEGSTREAM_E_IO, ECONNRESET, ECONNRESET },
        { NEGSTREAM_E_IO, EPIPE, EPIPE },
        { NEGSTREAM_E_IO, EAGAIN, EIO },
        { NEGSTREAM_E_IO, EINTR, EIO },
        { NEGSTREAM_E_AUTHENTICATION, 0, EACCES },
        { NEGSTREAM_E_INVALID_CREDENTIAL, 0, EACCES },
        { NEGSTREAM_E_TIMEOUT, 0, ETIMEDOUT },
        { NEGSTREAM_E_TIMEOUT, EAGAIN, ETIMEDOUT },
        { NEGSTREAM_E_CANCELED, 0, ECANCELED },
        { NEGSTREAM_E_NOMEM, 0, ENOMEM },
        { (negstream_status)999, 0, EIO },
    };
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        negstream_error e;

        memset(&e, 0, sizeof(e));
        e.code = t[i].code;
        e.sys_errno = t[i].sys_errno;
        ck_assert_msg(negstream__status_errno(&e) == t[i].want,
                      "%s / errno %d: got %d, want %d",
                      negstream_status_name(t[i].code), t[i].sys_errno,
                      negstream__status_errno(&e), t[i].want);
    }
}
END_TEST

START_TEST(test_arguments)
{
    static const char *good[] = { "r", "w", "r+", "rb", "wb", "r+b", "rb+" };
    static const char *bad[] = { "", "a", "w+", "a+", "rw", "r++", "x",
                                 "re", "wr", "+" };
    negstream *c;
    negstream_error e;
    int fds[2];
    size_t i;
    FILE *f;

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(c);
    errno = 0;
    ck_assert_ptr_null(negstream_fopen(NULL, "r"));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(negstream_fopen(c, NULL));
    ck_assert_int_eq(errno, EINVAL);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errno = 0;
        ck_assert_msg(negstream_fopen(c, bad[i]) == NULL && errno == EINVAL,
                      "mode \"%s\" accepted", bad[i]);
    }
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        f = negstream_fopen(c, good[i]);
        ck_assert_msg(f != NULL, "mode \"%s\": %s", good[i],
                      strerror(errno));
        expect_ferror(f, NEGSTREAM_OK);
        ck_assert_int_eq(fclose(f), 0);
    }
    /* Not a FILE of ours. */
    ck_assert_int_eq(negstream_ferror(NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_ferror(stderr, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(negstream_ferror(stderr, NULL), -1);
    /* Seeking: a stream has no position. */
    f = negstream_fopen(c, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 0, SEEK_SET), -1);
    ck_assert_int_eq(ftell(f), -1);
    ck_assert_int_eq(fclose(f), 0);
    negstream_close(c);
    close(fds[1]);
}
END_TEST

/* ---- what fclose leaves ------------------------------------------------- */

/* fclose sends what is buffered and leaves the stream open: plain
 * negstream_write/read go on, and a new FILE can be opened. */
START_TEST(test_fclose_leaves_stream_usable)
{
    negstream *c, *s;
    char buf[64];
    FILE *w, *r;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    w = negstream_fopen(c, "w");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_ge(fputs("one\n", w), 0);
    ck_assert_int_eq(fclose(w), 0);                 /* one frame */
    r = negstream_fopen(s, "r");
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), r));
    ck_assert_str_eq(buf, "one\n");
    ck_assert_int_eq(fclose(r), 0);       /* nothing read ahead was lost */

    ck_assert(negstream_is_authenticated(c));
    tu_write_all(c, "two", 3);
    tu_read_all(s, buf, 3);
    ck_assert_int_eq(memcmp(buf, "two", 3), 0);

    w = negstream_fopen(c, "w");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(fprintf(w, "three %d\n", 3), 8);
    ck_assert_int_eq(fclose(w), 0);
    tu_read_all(s, buf, 8);
    ck_assert_int_eq(memcmp(buf, "three 3\n", 8), 0);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- "r+" and two FILEs ------------------------------------------------- */

static void *echo_rplus_main(void *p)
{
    negstream *s = p;
    char line[128];
    FILE *f = negstream_fopen(s, "r+");

    if (f == NULL)
        return NULL;
    while (fgets(line, sizeof(line), f) != NULL) {
        fprintf(f, "echo: %s", line);
        if (fflush(f) != 0)
            break;
    }
    fclose(f);
    return NULL;
}

/* Request and response over one "r+" FILE on each side: write, fflush,
 * read the whole answer, write again (negstream_fopen(3)). */
START_TEST(test_rplus_request_response)
{
    negstream *c, *s;
    char line[128], want[128];
    pthread_t t;
    FILE *f;
    int i;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert_int_eq(pthread_create(&t, NULL, echo_rplus_main, s), 0);
    f = negstream_fopen(c, "r+");
    ck_assert_ptr_nonnull(f);
    for (i = 0; i < 20; i++) {
        ck_assert_int_gt(fprintf(f, "request %d\n", i), 0);
        ck_assert_int_eq(fflush(f), 0);
        ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
        snprintf(want, sizeof(want), "echo: request %d\n", i);
        ck_assert_str_eq(line, want);
    }
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(shutdown(tu_fds[0], SHUT_WR), 0);  /* server: EOF */
    pthread_join(t, NULL);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

struct echo_raw {
    negstream *s;
    int        fd;
};

/* Echoes what it reads with plain negstream_read/write until the end,
 * then ends its own side. */
static void *echo_raw_main(void *p)
{
    struct echo_raw *er = p;
    static char buf[FRAME];
    negstream_error e;
    ssize_t n;

    while ((n = negstream_read(er->s, buf, sizeof(buf), 0, sizeof(buf),
                               &e)) > 0)
        if (negstream_write(er->s, buf, sizeof(buf), 0, n, &e) < 0)
            break;
    shutdown(er->fd, SHUT_WR);
    return NULL;
}

struct two_files {
    negstream *c;
    int        fd;                 /* the client's socket */
};

static void *two_files_writer(void *p)
{
    struct two_files *tf = p;
    char line[400];
    FILE *w = negstream_fopen(tf->c, "w");
    int i;

    for (i = 0; w != NULL && i < 3000; i++) {
        make_line(line, sizeof(line), i);
        fputs(line, w);
        if (i % 100 == 99)
            fflush(w);
    }
    if (w != NULL)
        fclose(w);
    shutdown(tf->fd, SHUT_WR);
    return NULL;
}

/* One FILE reading and one writing on the same stream, in two threads
 * (one read and one write may run at once): all lines come back. */
START_TEST(test_two_files_full_duplex)
{
    struct echo_raw er;
    struct two_files tf;
    char line[400], want[400];
    negstream *c, *s;
    pthread_t te, tw;
    FILE *r;
    int i;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    tf.c = c;
    tf.fd = tu_fds[0];
    er.s = s;
    er.fd = tu_fds[1];
    ck_assert_int_eq(pthread_create(&te, NULL, echo_raw_main, &er), 0);
    r = negstream_fopen(c, "r");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(pthread_create(&tw, NULL, two_files_writer, &tf), 0);
    for (i = 0; i < 3000; i++) {
        make_line(want, sizeof(want), i);
        ck_assert_msg(fgets(line, sizeof(line), r) != NULL, "line %d", i);
        ck_assert_str_eq(line, want);
    }
    ck_assert_ptr_null(fgets(line, sizeof(line), r));
    ck_assert(feof(r) && !ferror(r));
    pthread_join(tw, NULL);
    pthread_join(te, NULL);
    ck_assert_int_eq(fclose(r), 0);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

static Suite *stdio_suite(void)
{
    Suite *s = suite_create("stdio");
    TCase *t = tcase_create("stdio");
    int nlevels = (int)(sizeof(levels) / sizeof(levels[0]));

    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, test_lines_round_trip, 0, nlevels);
    tcase_add_test(t, test_frames_per_flush);
    tcase_add_test(t, test_large_fwrite);
    tcase_add_test(t, test_fgets_across_frames);
    tcase_add_test(t, test_peer_closes_is_eof);
    tcase_add_test(t, test_peer_closes_inside_frame);
    tcase_add_test(t, test_write_to_closed_peer);
    tcase_add_test(t, test_not_authenticated);
    tcase_add_test(t, test_read_timeout);
    tcase_add_test(t, test_read_already_pending);
    tcase_add_test(t, test_stream_closed_under_file);
    tcase_add_test(t, test_fork);
    tcase_add_test(t, test_errno_table);
    tcase_add_test(t, test_arguments);
    tcase_add_test(t, test_fclose_leaves_stream_usable);
    tcase_add_test(t, test_rplus_request_response);
    tcase_add_test(t, test_two_files_full_duplex);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(stdio_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
