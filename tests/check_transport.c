/*
 * check_transport.c - the fd transport (transport.c) on socketpairs,
 * pipes, 127.0.0.1 TCP and files: it works on its own duplicate of the
 * caller's fd (which it never changes and never closes); recv and send
 * never block, even on a blocking fd (NEGSTREAM__AGAIN at once); vectors
 * with many and empty entries; short writes with exact offsets, and
 * send_all resuming from its offset; negstream__transport_block, the one
 * place a synchronous call waits (ready, woken, deadline); a closed peer
 * without SIGPIPE on sockets and pipes; EINTR storms.  No KDC.
 *
 * Threads are started inside the tests only (Check forks each test).
 * Nothing here asserts on elapsed time, except that a deadline is not
 * reported before it has passed; a sleep only makes it likely that a
 * thread is already waiting (the result is the same if it is not), and
 * alarm() is a generous guard against a call that would block for good.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "error.h"
#include "tcppair.h"
#include "transport.h"
#include "util.h"
#include "wake.h"

/* A call that should return at once gets this long before SIGALRM ends
 * the test (valgrind and a loaded builder included). */
#define GUARD_SECONDS 60

/* ---- helpers ------------------------------------------------------------ */

/* The byte at stream position i: position-dependent, so any loss,
 * duplication or reordering shows. */
static uint8_t pat(size_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u;

    return (uint8_t)((x >> 13) ^ (uint32_t)(i >> 16));
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    size_t i;

    ck_assert_ptr_nonnull(p);
    for (i = 0; i < n; i++)
        p[i] = pat(i);
    return p;
}

/* Index of the first byte of buf (stream offset 'off') that differs from
 * the pattern, or n. */
static size_t pattern_check(const uint8_t *buf, size_t n, size_t off)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (buf[i] != pat(off + i))
            return i;
    return n;
}

/* An unlinked temporary file under $TMPDIR. */
static int tmp_fd(void)
{
    const char *dir = getenv("TMPDIR");
    char path[512];
    int fd;

    snprintf(path, sizeof(path), "%s/negstream-transport-XXXXXX",
             dir != NULL && dir[0] != '\0' ? dir : "/tmp");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    return fd;
}

static void set_nonblocking(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);

    ck_assert_int_ge(fl, 0);
    fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl), 0);
}

static bool is_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    ck_assert_int_ge(fl, 0);
    return (fl & O_NONBLOCK) != 0;
}

enum { KIND_SOCK, KIND_PIPE, KIND_TCP, KINDS };

static const char *const kind_name[] = { "socketpair", "pipe", "tcp" };

/* A connected pair of 'kind', blocking: *wfd is written, *rfd read (for a
 * pipe, the write and read ends). */
static void make_pair(int kind, int *wfd, int *rfd)
{
    int fds[2];

    if (kind == KIND_SOCK)
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    else if (kind == KIND_PIPE)
        ck_assert_int_eq(pipe(fds), 0);
    else {
        const char *what;

        ck_assert_msg(tcp_pair_open(fds, &what) == 0, "%s on 127.0.0.1: %s",
                      what, strerror(errno));
    }
    if (kind == KIND_PIPE)
        *wfd = fds[1], *rfd = fds[0];
    else
        *wfd = fds[0], *rfd = fds[1];
}

static void small_buffers(int fd_send, int fd_recv, int size)
{
    ck_assert_int_eq(setsockopt(fd_send, SOL_SOCKET, SO_SNDBUF, &size,
                                sizeof(size)), 0);
    ck_assert_int_eq(setsockopt(fd_recv, SOL_SOCKET, SO_RCVBUF, &size,
                                sizeof(size)), 0);
}

static void err_sentinel(negstream_error *e)
{
    memset(e, 0, sizeof(*e));
    e->code = NEGSTREAM_E_CANCELED;
    e->sys_errno = 4242;
    strcpy(e->message, "sentinel");
}

/* The transport on fd; it must succeed. */
static void open_tr(negstream__transport *t, int fd)
{
    negstream_error e;

    err_sentinel(&e);
    ck_assert_msg(negstream__transport_fd(t, fd, &e) == 0, "%s", e.message);
    ck_assert_int_ge(t->fd, 0);
    ck_assert_int_ne(t->fd, fd);
}

static void close_tr(negstream__transport *t)
{
    t->ops->close(t);
    ck_assert_int_eq(t->fd, -1);
}

static ssize_t tr_send(negstream__transport *t, const void *buf, size_t n,
                       negstream_error *e)
{
    struct iovec iov;

    iov.iov_base = (void *)buf;
    iov.iov_len = n;
    return t->ops->send(t, &iov, 1, e);
}

/* Waits (block) until the transport can read, then reads: > 0, 0 at end
 * of stream, or -1.  What a synchronous read does. */
static ssize_t recv_wait(negstream__transport *t, void *buf, size_t n,
                         int64_t deadline, negstream_error *e)
{
    for (;;) {
        ssize_t k = t->ops->recv(t, buf, n, e);
        int rc;

        if (k != NEGSTREAM__AGAIN)
            return k;
        rc = negstream__transport_block(t, NEGSTREAM__DIR_READ, -1,
                                        deadline, "test read", e);
        if (rc < 0)
            return -1;
        if (rc != 1)
            return -3;      /* woken without a wake fd: a bug */
    }
}

/* send_all, waiting in block whenever it says AGAIN.  0 or -1. */
static int send_all_wait(negstream__transport *t, const struct iovec *iov,
                         int cnt, size_t *off, int64_t deadline,
                         negstream_error *e)
{
    for (;;) {
        int rc = negstream__transport_send_all(t, iov, cnt, off, e);

        if (rc != NEGSTREAM__AGAIN)
            return rc;
        rc = negstream__transport_block(t, NEGSTREAM__DIR_WRITE, -1,
                                        deadline, "test write", e);
        if (rc < 0)
            return -1;
        if (rc != 1)
            return -3;
    }
}

/* Reads fd (not through the transport) up to EOF, checking the pattern
 * from stream offset 'from'.  Returns the count.  Blocking reads: on TCP,
 * bytes still in the writer's send queue arrive later. */
static size_t drain_check(int fd, size_t from)
{
    uint8_t buf[8192];
    size_t total = 0;

    set_nonblocking(fd, false);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n < 0 && errno == EINTR)
            continue;
        ck_assert_int_ge(n, 0);
        if (n == 0)
            return total;
        if (pattern_check(buf, (size_t)n, from + total) != (size_t)n)
            ck_abort_msg("byte %zu differs", from + total +
                         pattern_check(buf, (size_t)n, from + total));
        total += (size_t)n;
    }
}

/* Reads exactly n bytes from fd (not through the transport), checking
 * the pattern from 'from'. */
static void read_exactly(int fd, size_t n, size_t from)
{
    uint8_t buf[8192];
    size_t got = 0;

    while (got < n) {
        size_t want = n - got < sizeof(buf) ? n - got : sizeof(buf);
        ssize_t k = read(fd, buf, want);

        if (k < 0 && errno == EINTR)
            continue;
        ck_assert_int_gt(k, 0);
        if (pattern_check(buf, (size_t)k, from + got) != (size_t)k)
            ck_abort_msg("byte %zu differs", from + got +
                         pattern_check(buf, (size_t)k, from + got));
        got += (size_t)k;
    }
}

/* Nothing (more) to read on fd right now. */
static void assert_nothing_to_read(int fd)
{
    struct pollfd p = { fd, POLLIN, 0 };

    ck_assert_int_eq(poll(&p, 1, 0), 0);
}

/* A thread that reads through its own transport on fd until end of
 * stream, in chunks of 'chunk' bytes (waiting in block when there is
 * nothing), yielding between reads when 'slow', and checks the pattern.
 * It asserts nothing itself (the test thread does, after join). */
typedef struct reader {
    pthread_t thread;
    int fd;
    size_t chunk, from, got, bad_at;
    bool slow;
    ssize_t rc;
    negstream_error err;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    negstream__transport t;
    uint8_t *buf = malloc(r->chunk);

    r->bad_at = SIZE_MAX;
    r->rc = -4;
    if (buf == NULL || negstream__transport_fd(&t, r->fd, &r->err) < 0)
        goto out;
    for (;;) {
        ssize_t k = recv_wait(&t, buf, r->chunk, -1, &r->err);

        if (k <= 0) {
            r->rc = k;
            break;
        }
        if (r->bad_at == SIZE_MAX &&
            pattern_check(buf, (size_t)k, r->from + r->got) != (size_t)k)
            r->bad_at = r->got + pattern_check(buf, (size_t)k,
                                               r->from + r->got);
        r->got += (size_t)k;
        if (r->slow)
            sched_yield();
    }
    t.ops->close(&t);
out:
    free(buf);
    return NULL;
}

/* The pattern is checked from stream offset 'from'. */
static void reader_start(reader *r, int fd, size_t chunk, size_t from,
                         bool slow)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->chunk = chunk;
    r->from = from;
    r->slow = slow;
    ck_assert_int_eq(pthread_create(&r->thread, NULL, reader_main, r), 0);
}

/* Joins; the reader must have seen a clean end after 'total' good
 * bytes. */
static void reader_join(reader *r, size_t total)
{
    ck_assert_int_eq(pthread_join(r->thread, NULL), 0);
    ck_assert_msg(r->rc == 0, "reader: rc %zd: %s", r->rc, r->err.message);
    ck_assert_uint_eq(r->got, total);
    ck_assert_uint_eq(r->bad_at, SIZE_MAX);
}

/* ---- the duplicate ------------------------------------------------------ */

static void check_dup(int fd, bool socket_expected)
{
    negstream__transport t;
    short ev = 0;
    int dup_fd, fdflags;

    fdflags = fcntl(fd, F_GETFD);
    ck_assert_int_ge(fdflags, 0);
    open_tr(&t, fd);
    ck_assert(t.is_socket == socket_expected);
    ck_assert_ptr_nonnull(t.ops);
    ck_assert(t.ops->recv != NULL && t.ops->send != NULL &&
              t.ops->wait != NULL && t.ops->close != NULL);
    /* The duplicate is close-on-exec; the caller's fd flags are its own. */
    ck_assert_int_ne(fcntl(t.fd, F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_eq(fcntl(fd, F_GETFD), fdflags);
    /* wait names the duplicate and the direction's event. */
    ck_assert_int_eq(t.ops->wait(&t, NEGSTREAM__DIR_READ, &ev), t.fd);
    ck_assert_int_eq(ev, POLLIN);
    ck_assert_int_eq(t.ops->wait(&t, NEGSTREAM__DIR_WRITE, &ev), t.fd);
    ck_assert_int_eq(ev, POLLOUT);
    dup_fd = t.fd;
    close_tr(&t);
    /* close closed the duplicate (nothing else runs here that could take
     * its number), and only it. */
    ck_assert_int_eq(fcntl(dup_fd, F_GETFD), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_eq(fcntl(fd, F_GETFD), fdflags);
    /* A second close is harmless. */
    t.ops->close(&t);
    ck_assert_int_eq(t.fd, -1);
}

START_TEST(dup_of_each_kind)
{
    int w, r, kind, fd;

    for (kind = 0; kind < KINDS; kind++) {
        make_pair(kind, &w, &r);
        check_dup(w, kind != KIND_PIPE);
        check_dup(r, kind != KIND_PIPE);
        close(w);
        close(r);
    }
    fd = tmp_fd();
    check_dup(fd, false);
    close(fd);
    fd = open("/dev/null", O_RDWR);
    ck_assert_int_ge(fd, 0);
    check_dup(fd, false);
    close(fd);
}
END_TEST

START_TEST(dup_of_bad_fd)
{
    negstream__transport t;
    negstream_error e;
    int fds[2], bad[3], i;

    ck_assert_int_eq(pipe(fds), 0);
    close(fds[0]);
    close(fds[1]);
    bad[0] = -1;
    bad[1] = fds[0];            /* closed */
    bad[2] = INT_MAX;
    for (i = 0; i < 3; i++) {
        char want[64];

        err_sentinel(&e);
        memset(&t, 0x5A, sizeof(t));
        ck_assert_int_eq(negstream__transport_fd(&t, bad[i], &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
        ck_assert_int_eq(e.sys_errno, EBADF);
        snprintf(want, sizeof(want), "fd %d is not open", bad[i]);
        ck_assert_msg(strstr(e.message, want) != NULL, "%s", e.message);
        ck_assert_int_eq(t.fd, -1);
        /* err may be NULL. */
        ck_assert_int_eq(negstream__transport_fd(&t, bad[i], NULL), -1);
    }
}
END_TEST

/* No fd left for the duplicate: an I/O error naming the cause (EMFILE),
 * not an argument error. */
START_TEST(dup_without_fds_left)
{
    struct rlimit old, low;
    negstream__transport t;
    negstream_error e;
    int fds[80], n = 0, rc, i;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 64;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    while (n < 80 && (fds[n] = dup(0)) >= 0)
        n++;
    ck_assert_int_lt(n, 80);
    ck_assert_int_eq(errno, EMFILE);
    err_sentinel(&e);
    rc = negstream__transport_fd(&t, 0, &e);
    for (i = 0; i < n; i++)
        close(fds[i]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, EMFILE);
    ck_assert_msg(strstr(e.message, "cannot duplicate fd 0") != NULL, "%s",
                  e.message);
    ck_assert_int_eq(t.fd, -1);
}
END_TEST

/* The transport keeps working after the caller closed its fd, even when
 * the number is reused at once; closing the transport then ends the
 * connection (the duplicate was the last reference). */
START_TEST(dup_outlives_the_original)
{
    int kind;

    for (kind = 0; kind < KINDS; kind++) {
        negstream__transport tw, tr;
        negstream_error e;
        uint8_t buf[16];
        int w, r, w_num, r_num, reuse;

        make_pair(kind, &w, &r);
        open_tr(&tw, w);
        open_tr(&tr, r);
        w_num = w;
        r_num = r;
        close(w);
        close(r);
        /* The numbers go to files now: a transport that used them would
         * write into /dev/null and read from /dev/zero. */
        reuse = open("/dev/null", O_WRONLY);
        ck_assert_int_eq(reuse, w_num < r_num ? w_num : r_num);
        ck_assert_int_eq(open("/dev/zero", O_RDONLY),
                         w_num < r_num ? r_num : w_num);
        ck_assert_int_eq(tr_send(&tw, "through", 7, &e), 7);
        ck_assert_int_eq(recv_wait(&tr, buf, sizeof(buf), -1, &e), 7);
        ck_assert_mem_eq(buf, "through", 7);
        close_tr(&tw);
        ck_assert_msg(recv_wait(&tr, buf, sizeof(buf), -1, &e) == 0,
                      "%s: no end of stream after closing the writer's "
                      "duplicate", kind_name[kind]);
        close_tr(&tr);
        close(w_num);
        close(r_num);
    }
}
END_TEST

/* ops->close closes the duplicate only: the caller's fd still works and
 * the peer sees no end of stream. */
START_TEST(close_leaves_the_original)
{
    int kind;

    for (kind = 0; kind < KINDS; kind++) {
        negstream__transport t;
        uint8_t b = 0;
        int w, r;

        make_pair(kind, &w, &r);
        open_tr(&t, w);
        close_tr(&t);
        ck_assert_int_eq(write(w, "x", 1), 1);
        ck_assert_int_eq(read(r, &b, 1), 1);
        ck_assert_int_eq(b, 'x');
        assert_nothing_to_read(r);      /* no EOF: w is still open */
        open_tr(&t, r);
        close_tr(&t);
        ck_assert_int_eq(write(w, "y", 1), 1);
        ck_assert_int_eq(read(r, &b, 1), 1);
        ck_assert_int_eq(b, 'y');
        close(w);
        close(r);
    }
}
END_TEST

/* The caller's O_NONBLOCK is never changed (the duplicate shares the
 * open file description, so a change would show on the caller's fd),
 * whatever recv, send and close do. */
START_TEST(nonblock_flag_untouched)
{
    static uint8_t chunk[65536];
    int kind, nb;

    for (kind = 0; kind < KINDS; kind++) {
        for (nb = 0; nb < 2; nb++) {
            negstream__transport tw, tr;
            negstream_error e;
            uint8_t buf[8];
            ssize_t k;
            int w, r, i;

            make_pair(kind, &w, &r);
            if (kind != KIND_PIPE)
                small_buffers(w, r, 4096);
            set_nonblocking(w, nb);
            set_nonblocking(r, nb);
            open_tr(&tw, w);
            open_tr(&tr, r);
            ck_assert_int_eq(tr.ops->recv(&tr, buf, sizeof(buf), &e),
                             NEGSTREAM__AGAIN);
            for (i = 0; i < 10000; i++) {
                k = tr_send(&tw, chunk, sizeof(chunk), &e);
                if (k == NEGSTREAM__AGAIN)
                    break;
                ck_assert_int_gt(k, 0);
            }
            ck_assert_int_lt(i, 10000);
            ck_assert_int_gt(tr.ops->recv(&tr, buf, sizeof(buf), &e), 0);
            ck_assert(is_nonblocking(w) == (nb != 0));
            ck_assert(is_nonblocking(r) == (nb != 0));
            close_tr(&tw);
            close_tr(&tr);
            ck_assert(is_nonblocking(w) == (nb != 0));
            ck_assert(is_nonblocking(r) == (nb != 0));
            close(w);
            close(r);
        }
    }
}
END_TEST

/* ---- recv --------------------------------------------------------------- */

/* Nothing to read: AGAIN at once, on a blocking fd too. */
START_TEST(recv_never_blocks)
{
    int kind, nb;

    alarm(GUARD_SECONDS);
    for (kind = 0; kind < KINDS; kind++) {
        for (nb = 0; nb < 2; nb++) {
            negstream__transport t;
            negstream_error e;
            uint8_t buf[64];
            int w, r, i;

            make_pair(kind, &w, &r);
            set_nonblocking(r, nb);
            open_tr(&t, r);
            for (i = 0; i < 3; i++)
                ck_assert_int_eq(t.ops->recv(&t, buf, sizeof(buf), &e),
                                 NEGSTREAM__AGAIN);
            /* Once data is there, it is read; then AGAIN again. */
            ck_assert_int_eq(write(w, "abc", 3), 3);
            ck_assert_int_eq(recv_wait(&t, buf, sizeof(buf), -1, &e), 3);
            ck_assert_mem_eq(buf, "abc", 3);
            ck_assert_int_eq(t.ops->recv(&t, buf, sizeof(buf), &e),
                             NEGSTREAM__AGAIN);
            close_tr(&t);
            close(w);
            close(r);
        }
    }
    alarm(0);
}
END_TEST

/* recv returns what is there, never more than asked. */
START_TEST(recv_what_is_there)
{
    int kind;

    alarm(GUARD_SECONDS);
    for (kind = 0; kind < KINDS; kind++) {
        negstream__transport t;
        negstream_error e;
        uint8_t buf[100];
        int w, r;

        make_pair(kind, &w, &r);
        open_tr(&t, r);
        ck_assert_int_eq(write(w, "hello", 5), 5);
        ck_assert_int_eq(recv_wait(&t, buf, sizeof(buf), -1, &e), 5);
        ck_assert_mem_eq(buf, "hello", 5);
        ck_assert_int_eq(write(w, "world", 5), 5);
        ck_assert_int_eq(recv_wait(&t, buf, 3, -1, &e), 3);
        ck_assert_mem_eq(buf, "wor", 3);
        ck_assert_int_eq(t.ops->recv(&t, buf, 3, &e), 2);
        ck_assert_mem_eq(buf, "ld", 2);
        ck_assert_int_eq(t.ops->recv(&t, buf, 3, &e), NEGSTREAM__AGAIN);
        close_tr(&t);
        close(w);
        close(r);
    }
    alarm(0);
}
END_TEST

/* The writer gone: what was sent, then 0 (end of stream), again and
 * again. */
START_TEST(recv_end_of_stream)
{
    negstream__transport t;
    negstream_error e;
    uint8_t buf[16];
    int kind, fd;

    alarm(GUARD_SECONDS);
    for (kind = 0; kind < KINDS; kind++) {
        int w, r;

        make_pair(kind, &w, &r);
        open_tr(&t, r);
        ck_assert_int_eq(write(w, "bye", 3), 3);
        close(w);
        ck_assert_int_eq(recv_wait(&t, buf, sizeof(buf), -1, &e), 3);
        ck_assert_int_eq(negstream__transport_block(&t, NEGSTREAM__DIR_READ,
                                                    -1, -1, "read", &e), 1);
        ck_assert_int_eq(t.ops->recv(&t, buf, sizeof(buf), &e), 0);
        ck_assert_int_eq(t.ops->recv(&t, buf, sizeof(buf), &e), 0);
        close_tr(&t);
        close(r);
    }
    /* Files: at the end, 0 at once. */
    fd = open("/dev/null", O_RDONLY);
    ck_assert_int_ge(fd, 0);
    open_tr(&t, fd);
    ck_assert_int_eq(t.ops->recv(&t, buf, sizeof(buf), &e), 0);
    close_tr(&t);
    close(fd);
    alarm(0);
}
END_TEST

START_TEST(recv_errors)
{
    struct linger lin = { 1, 0 };
    negstream__transport t;
    negstream_error e;
    uint8_t buf[16];
    int w, r, kind;

    alarm(GUARD_SECONDS);
    /* A TCP peer that resets the connection. */
    make_pair(KIND_TCP, &w, &r);
    open_tr(&t, r);
    ck_assert_int_eq(setsockopt(w, SOL_SOCKET, SO_LINGER, &lin,
                                sizeof(lin)), 0);
    close(w);
    err_sentinel(&e);
    ck_assert_int_eq(recv_wait(&t, buf, sizeof(buf), -1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, ECONNRESET);
    ck_assert_msg(strstr(e.message, "peer closed the connection") != NULL,
                  "%s", e.message);
    close_tr(&t);
    close(r);

    /* The duplicate closed under the transport (a broken caller): an I/O
     * error with EBADF, on a socket and on a pipe. */
    for (kind = 0; kind < 2; kind++) {
        make_pair(kind, &w, &r);
        open_tr(&t, r);
        close(t.fd);
        err_sentinel(&e);
        ck_assert_int_eq(t.ops->recv(&t, buf, sizeof(buf), &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
        ck_assert_int_eq(e.sys_errno, EBADF);
        ck_assert_msg(strstr(e.message, strerror(EBADF)) != NULL, "%s",
                      e.message);
        t.fd = -1;
        close(w);
        close(r);
    }
    alarm(0);
}
END_TEST

/* ---- send --------------------------------------------------------------- */

/* A peer that does not read: send takes what fits and then says AGAIN at
 * once, on a blocking fd too; the counts are exactly what the peer then
 * reads. */
START_TEST(send_never_blocks)
{
    static uint8_t *data;
    const size_t total = 16 << 20;
    int kind, nb;

    alarm(GUARD_SECONDS);
    data = pattern(total);
    for (kind = 0; kind < KINDS; kind++) {
        for (nb = 0; nb < 2; nb++) {
            negstream__transport t;
            negstream_error e;
            size_t sent = 0;
            int w, r, i;

            make_pair(kind, &w, &r);
            if (kind != KIND_PIPE)
                small_buffers(w, r, 65536);
            set_nonblocking(w, nb);
            open_tr(&t, w);
            for (;;) {
                size_t n = total - sent < 100000 ? total - sent : 100000;
                ssize_t k = tr_send(&t, data + sent, n, &e);

                if (k == NEGSTREAM__AGAIN)
                    break;
                if (k <= 0 || (size_t)k > n)
                    ck_abort_msg("%s: send: %zd (%s)", kind_name[kind], k,
                                 e.message);
                sent += (size_t)k;
                ck_assert_uint_lt(sent, total);
            }
            ck_assert_uint_gt(sent, 0);
            for (i = 0; i < 3; i++)
                ck_assert_int_eq(tr_send(&t, data + sent, 1000, &e),
                                 NEGSTREAM__AGAIN);
            close_tr(&t);
            close(w);
            ck_assert_uint_eq(drain_check(r, 0), sent);
            close(r);
        }
    }
    free(data);
    alarm(0);
}
END_TEST

/* On a blocking pipe a write may only be as large as poll's POLLOUT
 * guarantees room for: PIPE_BUF. */
START_TEST(send_pipe_at_most_pipe_buf)
{
    uint8_t *data = pattern(100000);
    negstream__transport t;
    negstream_error e;
    struct iovec iov[3];
    ssize_t k;
    int w, r;

    alarm(GUARD_SECONDS);
    make_pair(KIND_PIPE, &w, &r);
    open_tr(&t, w);
    k = tr_send(&t, data, 100000, &e);
    ck_assert_int_gt(k, 0);
    ck_assert_int_le(k, PIPE_BUF);
    read_exactly(r, (size_t)k, 0);
    /* Several small entries: a prefix of them, together. */
    iov[0].iov_base = data, iov[0].iov_len = 1000;
    iov[1].iov_base = data + 1000, iov[1].iov_len = 1;
    iov[2].iov_base = data + 1001, iov[2].iov_len = 1500;
    k = t.ops->send(&t, iov, 3, &e);
    ck_assert_int_gt(k, 0);
    ck_assert_int_le(k, 2501);
    read_exactly(r, (size_t)k, 0);
    assert_nothing_to_read(r);
    close_tr(&t);
    close(w);
    close(r);
    free(data);
    alarm(0);
}
END_TEST

/* A vector that starts with empty entries is still written from its first
 * byte (send's contract: any vector with a total > 0). */
START_TEST(send_leading_empty_entries)
{
    static const size_t lens[][4] = {
        { 0, 5000, 0, 0 }, { 0, 0, 0, 70000 }, { 0, 0, 100, 5000 },
        { 0, PIPE_BUF, 1, 0 }, { 0, 0, 1, 0 }
    };
    uint8_t *data = pattern(80000);
    int kind;
    size_t v;

    alarm(GUARD_SECONDS);
    for (kind = 0; kind < KINDS; kind++) {
        for (v = 0; v < sizeof(lens) / sizeof(lens[0]); v++) {
            negstream__transport t;
            negstream_error e;
            struct iovec iov[4];
            size_t off = 0, total = 0;
            reader rd;
            ssize_t k;
            int w, r, i;

            for (i = 0; i < 4; i++) {
                iov[i].iov_base = data + total;
                iov[i].iov_len = lens[v][i];
                total += lens[v][i];
            }
            make_pair(kind, &w, &r);
            open_tr(&t, w);
            err_sentinel(&e);
            k = t.ops->send(&t, iov, 4, &e);
            ck_assert_msg(k > 0, "%s, vector %zu: send returned %zd: %s",
                          kind_name[kind], v, k, e.message);
            ck_assert_uint_le((size_t)k, total);
            read_exactly(r, (size_t)k, 0);
            /* And send_all finishes it, to a reader thread. */
            reader_start(&rd, r, 4096, (size_t)k, false);
            off = (size_t)k;
            ck_assert_int_eq(send_all_wait(&t, iov, 4, &off, -1, &e), 0);
            ck_assert_uint_eq(off, total);
            close_tr(&t);
            close(w);
            reader_join(&rd, total - (size_t)k);
            close(r);
        }
    }
    free(data);
    alarm(0);
}
END_TEST

/* 3000 entries, every third one empty, lengths 0..700, sent with send_all
 * (waiting in block) to 'kind' with a reader thread; the vector is left
 * as it was. */
static void many_iovecs(int kind, int64_t timeout_ms)
{
    enum { N = 3000 };
    struct iovec *iov = calloc(N, sizeof(*iov));
    struct iovec *copy = calloc(N, sizeof(*iov));
    size_t total = 0, off = 0;
    negstream__transport t;
    negstream_error e;
    uint8_t *data;
    reader rd;
    int w, r, i;

    ck_assert_ptr_nonnull(iov);
    ck_assert_ptr_nonnull(copy);
    for (i = 0; i < N; i++)
        total += i % 3 == 0 ? 0 : (size_t)(i * 7919) % 701;
    data = pattern(total);
    total = 0;
    for (i = 0; i < N; i++) {
        size_t len = i % 3 == 0 ? 0 : (size_t)(i * 7919) % 701;

        iov[i].iov_base = data + total;
        iov[i].iov_len = len;
        total += len;
    }
    memcpy(copy, iov, N * sizeof(*iov));
    make_pair(kind, &w, &r);
    reader_start(&rd, r, 4096, 0, false);
    open_tr(&t, w);
    ck_assert_msg(send_all_wait(&t, iov, N, &off,
                                negstream__deadline_in((int)timeout_ms),
                                &e) == 0, "%s", e.message);
    ck_assert_uint_eq(off, total);
    ck_assert_mem_eq(copy, iov, N * sizeof(*iov));
    close_tr(&t);
    close(w);
    reader_join(&rd, total);
    close(r);
    free(data);
    free(copy);
    free(iov);
}

START_TEST(send_all_many_iovecs)
{
    int kind;

    for (kind = 0; kind < KINDS; kind++) {
        many_iovecs(kind, -1);
        many_iovecs(kind, 600000);
    }
}
END_TEST

START_TEST(send_all_nothing_to_send)
{
    struct iovec iov[3] = { { NULL, 0 }, { NULL, 0 }, { NULL, 0 } };
    struct iovec some[2];
    negstream__transport t;
    negstream_error e;
    size_t off = 0;
    int w, r;

    make_pair(KIND_SOCK, &w, &r);
    open_tr(&t, w);
    ck_assert_int_eq(negstream__transport_send_all(&t, iov, 3, &off, &e),
                     0);
    ck_assert_uint_eq(off, 0);
    ck_assert_int_eq(negstream__transport_send_all(&t, iov, 0, &off, NULL),
                     0);
    ck_assert_uint_eq(off, 0);
    /* Everything already sent: nothing goes out again. */
    some[0].iov_base = (void *)"abc";
    some[0].iov_len = 3;
    some[1].iov_base = (void *)"de";
    some[1].iov_len = 2;
    off = 5;
    ck_assert_int_eq(negstream__transport_send_all(&t, some, 2, &off, &e),
                     0);
    ck_assert_uint_eq(off, 5);
    assert_nothing_to_read(r);
    /* From the middle of the second entry: only its rest. */
    off = 4;
    ck_assert_int_eq(negstream__transport_send_all(&t, some, 2, &off, &e),
                     0);
    ck_assert_uint_eq(off, 5);
    {
        char b[4] = { 0 };

        ck_assert_int_eq(read(r, b, sizeof(b)), 1);
        ck_assert_int_eq(b[0], 'e');
    }
    assert_nothing_to_read(r);
    close_tr(&t);
    close(w);
    close(r);
}
END_TEST

/* A peer that reads only when told: send_all stops with AGAIN at exactly
 * what the peer can then read, says AGAIN again without moving while the
 * peer reads nothing, and resumes from its offset until all is sent; a
 * send_all started at an offset sends only the rest. */
static void resume(int kind, bool nonblocking)
{
    const size_t total = 4 << 20;
    uint8_t *data = pattern(total);
    negstream__transport t;
    negstream_error e;
    struct iovec iov[3];
    size_t off, read_total = 0;
    int w, r, rounds = 0, rc;
    reader rd;

    alarm(GUARD_SECONDS);
    iov[0].iov_base = data;
    iov[0].iov_len = 3;
    iov[1].iov_base = data + 3;
    iov[1].iov_len = total / 2;
    iov[2].iov_base = data + 3 + total / 2;
    iov[2].iov_len = total - 3 - total / 2;
    make_pair(kind, &w, &r);
    if (kind != KIND_PIPE)
        small_buffers(w, r, 65536);
    set_nonblocking(w, nonblocking);
    open_tr(&t, w);
    off = 0;
    for (;;) {
        size_t before = off;

        rc = negstream__transport_send_all(&t, iov, 3, &off, &e);
        if (rc == 0)
            break;
        ck_assert_msg(rc == NEGSTREAM__AGAIN, "send_all: %d: %s", rc,
                      e.message);
        ck_assert_uint_ge(off, before);
        ck_assert_uint_lt(off, total);
        /* Nothing read: still full, nothing moves.  (On TCP the window
         * the peer's last read opened may only now reach the sender.) */
        before = off;
        rc = negstream__transport_send_all(&t, iov, 3, &off, &e);
        if (kind != KIND_TCP) {
            ck_assert_int_eq(rc, NEGSTREAM__AGAIN);
            ck_assert_uint_eq(off, before);
        }
        if (rc == 0)
            break;
        /* The peer reads part of what was sent (the pattern from where it
         * is), and the sender goes on. */
        {
            size_t n = (off - read_total) / 2 + 1;

            read_exactly(r, n, read_total);
            read_total += n;
        }
        rounds++;
    }
    ck_assert_uint_eq(off, total);
    ck_assert_int_gt(rounds, 1);
    close_tr(&t);
    close(w);
    ck_assert_uint_eq(drain_check(r, read_total), total - read_total);
    close(r);

    /* Started at an offset inside the second entry: only the rest goes
     * out, waiting in block while a reader thread drains it. */
    make_pair(kind, &w, &r);
    if (kind != KIND_PIPE)
        small_buffers(w, r, 65536);
    set_nonblocking(w, nonblocking);
    reader_start(&rd, r, 1000, 1001, false);
    open_tr(&t, w);
    off = 1001;
    ck_assert_msg(send_all_wait(&t, iov, 3, &off, -1, &e) == 0, "%s",
                  e.message);
    ck_assert_uint_eq(off, total);
    close_tr(&t);
    close(w);
    reader_join(&rd, total - 1001);
    close(r);
    free(data);
    alarm(0);
}

START_TEST(send_all_resumes_socketpair)
{
    resume(KIND_SOCK, false);
    resume(KIND_SOCK, true);
}
END_TEST

START_TEST(send_all_resumes_pipe)
{
    resume(KIND_PIPE, false);
    resume(KIND_PIPE, true);
}
END_TEST

START_TEST(send_all_resumes_tcp)
{
    resume(KIND_TCP, false);
    resume(KIND_TCP, true);
}
END_TEST

/* A regular file: written whole, read back whole, then end of file. */
START_TEST(send_all_regular_file)
{
    uint8_t *data = pattern(100000), *back = malloc(100000);
    struct iovec iov[4];
    negstream__transport t;
    negstream_error e;
    size_t off = 0, got = 0;
    int fd = tmp_fd();

    ck_assert_ptr_nonnull(back);
    iov[0].iov_base = data, iov[0].iov_len = 10;
    iov[1].iov_base = data + 10, iov[1].iov_len = 0;
    iov[2].iov_base = data + 10, iov[2].iov_len = 50000;
    iov[3].iov_base = data + 50010, iov[3].iov_len = 49990;
    open_tr(&t, fd);
    ck_assert_int_eq(send_all_wait(&t, iov, 4, &off, -1, &e), 0);
    ck_assert_uint_eq(off, 100000);
    /* The duplicate shares the file offset with the caller's fd. */
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 100000);
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    while (got < 100000) {
        ssize_t k = recv_wait(&t, back + got, 100000 - got, -1, &e);

        ck_assert_int_gt(k, 0);
        got += (size_t)k;
    }
    ck_assert_mem_eq(back, data, 100000);
    ck_assert_int_eq(t.ops->recv(&t, back, 10, &e), 0);
    close_tr(&t);
    close(fd);
    free(back);
    free(data);
}
END_TEST

/* Tiny buffers and a slow reader: many short writes and waits in block;
 * every byte arrives, in order. */
static void short_writes(int kind, bool nonblocking)
{
    const size_t total = 256 << 10;
    uint8_t *data = pattern(total);
    struct iovec iov[3];
    negstream__transport t;
    negstream_error e;
    size_t off = 0;
    reader rd;
    int w, r, size = 4096;

    make_pair(kind, &w, &r);
    /* On TCP the receive buffer keeps its default: a tiny window meets
     * delayed ACKs and crawls. */
    if (kind == KIND_TCP)
        ck_assert_int_eq(setsockopt(w, SOL_SOCKET, SO_SNDBUF, &size,
                                    sizeof(size)), 0);
    else if (kind == KIND_SOCK)
        small_buffers(w, r, size);
    set_nonblocking(w, nonblocking);
    reader_start(&rd, r, 97, 0, true);
    iov[0].iov_base = data, iov[0].iov_len = 3;
    iov[1].iov_base = data + 3, iov[1].iov_len = total / 2;
    iov[2].iov_base = data + 3 + total / 2;
    iov[2].iov_len = total - 3 - total / 2;
    open_tr(&t, w);
    ck_assert_msg(send_all_wait(&t, iov, 3, &off,
                                negstream__deadline_in(600000), &e) == 0,
                  "%s", e.message);
    ck_assert_uint_eq(off, total);
    close_tr(&t);
    close(w);
    reader_join(&rd, total);
    close(r);
    free(data);
}

START_TEST(send_all_short_writes)
{
    int kind;

    for (kind = 0; kind < KINDS; kind++) {
        short_writes(kind, false);
        short_writes(kind, true);
    }
}
END_TEST

/* ---- block -------------------------------------------------------------- */

/* Direction ready now: 1 at once, with or without a wake fd and a
 * deadline (also one already past: readiness is looked at first). */
START_TEST(block_ready_at_once)
{
    negstream__wake wk = NEGSTREAM__WAKE_INIT;
    int kind;

    alarm(GUARD_SECONDS);
    ck_assert_int_eq(negstream__wake_open(&wk), 0);
    for (kind = 0; kind < KINDS; kind++) {
        negstream__transport tw, tr;
        negstream_error e;
        int w, r;

        make_pair(kind, &w, &r);
        open_tr(&tw, w);
        open_tr(&tr, r);
        ck_assert_int_eq(write(w, "x", 1), 1);
        ck_assert_int_eq(negstream__transport_block(&tr, NEGSTREAM__DIR_READ,
                                                    -1, -1, "read", &e), 1);
        ck_assert_int_eq(negstream__transport_block(&tr, NEGSTREAM__DIR_READ,
                                                    wk.r,
                                                    negstream__deadline_in(
                                                        60000),
                                                    "read", &e), 1);
        ck_assert_int_eq(negstream__transport_block(&tw,
                                                    NEGSTREAM__DIR_WRITE,
                                                    wk.r, -1, "write", &e),
                         1);
        ck_assert_int_eq(negstream__transport_block(&tw,
                                                    NEGSTREAM__DIR_WRITE,
                                                    -1,
                                                    negstream__mono_ms() - 1,
                                                    "write", &e), 1);
        close_tr(&tw);
        close_tr(&tr);
        close(w);
        close(r);
    }
    negstream__wake_close(&wk);
    alarm(0);
}
END_TEST

/* A thread that, after a short sleep, writes a byte to fd, or drains fd
 * (reads all that is there), or signals a wake. */
typedef struct later {
    pthread_t thread;
    int what;               /* 0 write, 1 drain, 2 wake */
    int fd;
    const negstream__wake *wake;
} later;

static void *later_main(void *arg)
{
    later *l = arg;
    uint8_t buf[65536];

    usleep(50 * 1000);
    if (l->what == 0) {
        if (write(l->fd, "!", 1) != 1)
            abort();
    } else if (l->what == 1) {
        struct pollfd p = { l->fd, POLLIN, 0 };

        /* All that is there: an AF_UNIX socket is writable again only
         * once most of its buffer is free. */
        while (poll(&p, 1, 0) > 0)
            if (read(l->fd, buf, sizeof(buf)) <= 0)
                abort();
    } else {
        negstream__wake_signal(l->wake);
    }
    return NULL;
}

static void later_start(later *l, int what, int fd,
                        const negstream__wake *wake)
{
    memset(l, 0, sizeof(*l));
    l->what = what;
    l->fd = fd;
    l->wake = wake;
    ck_assert_int_eq(pthread_create(&l->thread, NULL, later_main, l), 0);
}

static void later_join(later *l)
{
    ck_assert_int_eq(pthread_join(l->thread, NULL), 0);
}

/* Fills the transport's direction until send says AGAIN; returns the
 * count. */
static size_t fill(negstream__transport *t)
{
    static uint8_t chunk[65536];
    negstream_error e;
    size_t total = 0;
    int i;

    for (i = 0; i < 100000; i++) {
        ssize_t k = tr_send(t, chunk, sizeof(chunk), &e);

        if (k == NEGSTREAM__AGAIN)
            return total;
        if (k <= 0)
            ck_abort_msg("fill: %zd: %s", k, e.message);
        total += (size_t)k;
    }
    ck_abort_msg("fill: never full");
    return total;
}

/* Fills until the direction stays full: on TCP what the send buffer held
 * moves on to the peer's receive buffer, and the fd is writable again
 * until the peer's window is closed too. */
static void fill_settled(negstream__transport *t)
{
    struct pollfd p = { t->fd, POLLOUT, 0 };
    int i;

    for (i = 0; i < 1000; i++) {
        fill(t);
        if (poll(&p, 1, 100) == 0)
            return;
    }
    ck_abort_msg("fd %d never stays full", t->fd);
}

/* Not ready now, ready later: block waits for it (with a wake fd that
 * stays quiet, and a deadline far away) and returns 1. */
START_TEST(block_waits_until_ready)
{
    negstream__wake wk = NEGSTREAM__WAKE_INIT;
    int kind;

    alarm(GUARD_SECONDS);
    ck_assert_int_eq(negstream__wake_open(&wk), 0);
    for (kind = 0; kind < KINDS; kind++) {
        negstream__transport tw, tr;
        negstream_error e;
        uint8_t b;
        later l;
        int w, r;

        make_pair(kind, &w, &r);
        if (kind != KIND_PIPE)
            small_buffers(w, r, 65536);
        open_tr(&tw, w);
        open_tr(&tr, r);
        /* Readable later. */
        later_start(&l, 0, w, NULL);
        err_sentinel(&e);
        ck_assert_msg(negstream__transport_block(&tr, NEGSTREAM__DIR_READ,
                                                 wk.r,
                                                 negstream__deadline_in(
                                                     600000),
                                                 "read", &e) == 1,
                      "%s", e.message);
        later_join(&l);
        ck_assert_int_eq(tr.ops->recv(&tr, &b, 1, &e), 1);
        ck_assert_int_eq(b, '!');
        /* Writable later: full now, drained by the thread. */
        fill_settled(&tw);
        later_start(&l, 1, r, NULL);
        ck_assert_msg(negstream__transport_block(&tw, NEGSTREAM__DIR_WRITE,
                                                 wk.r, -1, "write",
                                                 &e) == 1,
                      "%s", e.message);
        later_join(&l);
        /* poll said so, so the next send moves bytes: on TCP the window
         * may still open in steps, hence block again if it must. */
        {
            uint8_t x[16] = { 0 };
            ssize_t k;

            while ((k = tr_send(&tw, x, sizeof(x), &e)) ==
                   NEGSTREAM__AGAIN)
                ck_assert_int_eq(negstream__transport_block(
                                     &tw, NEGSTREAM__DIR_WRITE, -1, -1,
                                     "write", &e), 1);
            ck_assert_int_gt(k, 0);
        }
        close_tr(&tw);
        close_tr(&tr);
        close(w);
        close(r);
    }
    negstream__wake_close(&wk);
    alarm(0);
}
END_TEST

/* The wake fd fires (another thread signals the wake): 0, in either
 * direction, with or without a deadline; and it stays readable, so a
 * later block returns 0 at once. */
START_TEST(block_woken)
{
    int kind, dir;

    alarm(GUARD_SECONDS);
    for (kind = 0; kind < KINDS; kind++) {
        for (dir = 0; dir < 2; dir++) {
            negstream__wake wk = NEGSTREAM__WAKE_INIT;
            negstream__transport tw, tr, *t;
            negstream_error e;
            later l;
            int w, r;

            ck_assert_int_eq(negstream__wake_open(&wk), 0);
            make_pair(kind, &w, &r);
            if (kind != KIND_PIPE)
                small_buffers(w, r, 65536);
            open_tr(&tw, w);
            open_tr(&tr, r);
            t = dir == NEGSTREAM__DIR_READ ? &tr : &tw;
            if (dir == NEGSTREAM__DIR_WRITE)
                fill_settled(&tw);
            later_start(&l, 2, -1, &wk);
            err_sentinel(&e);
            ck_assert_msg(negstream__transport_block(t, dir, wk.r, -1, "op",
                                                     &e) == 0,
                          "%s, direction %d", kind_name[kind], dir);
            later_join(&l);
            ck_assert_int_eq(negstream__transport_block(t, dir, wk.r,
                                                        negstream__deadline_in(
                                                            600000),
                                                        "op", &e), 0);
            ck_assert_int_eq(negstream__transport_block(t, dir, wk.r,
                                                        negstream__mono_ms()
                                                        - 1, "op", &e), 0);
            close_tr(&tw);
            close_tr(&tr);
            close(w);
            close(r);
            negstream__wake_close(&wk);
        }
    }
    alarm(0);
}
END_TEST

/* Nothing happens: -1 with TIMEOUT once the deadline has passed (not
 * before), the message naming the operation; a deadline already past
 * gives it at once. */
START_TEST(block_timeout)
{
    negstream__wake wk = NEGSTREAM__WAKE_INIT;
    int kind, dir, past;

    alarm(GUARD_SECONDS);
    ck_assert_int_eq(negstream__wake_open(&wk), 0);
    for (kind = 0; kind < KINDS; kind++) {
        for (dir = 0; dir < 2; dir++) {
            for (past = 0; past < 2; past++) {
                negstream__transport tw, tr, *t;
                negstream_error e;
                int64_t deadline;
                int w, r;

                make_pair(kind, &w, &r);
                if (kind != KIND_PIPE)
                    small_buffers(w, r, 65536);
                open_tr(&tw, w);
                open_tr(&tr, r);
                t = dir == NEGSTREAM__DIR_READ ? &tr : &tw;
                if (dir == NEGSTREAM__DIR_WRITE)
                    fill_settled(&tw);
                deadline = past ? negstream__mono_ms() - 5 :
                                  negstream__deadline_in(50);
                err_sentinel(&e);
                ck_assert_msg(negstream__transport_block(
                                  t, dir, past ? -1 : wk.r, deadline,
                                  "reading the test message", &e) == -1,
                              "%s, direction %d", kind_name[kind], dir);
                ck_assert_int_ge(negstream__mono_ms(), deadline);
                ck_assert_int_eq(e.code, NEGSTREAM_E_TIMEOUT);
                ck_assert_str_eq(e.message,
                                 "reading the test message timed out");
                close_tr(&tw);
                close_tr(&tr);
                close(w);
                close(r);
            }
        }
    }
    negstream__wake_close(&wk);
    alarm(0);
}
END_TEST

/* A peer gone counts as ready: the next call reports what happened (end
 * of stream for a read, EPIPE for a write). */
START_TEST(block_peer_gone)
{
    int kind;

    alarm(GUARD_SECONDS);
    for (kind = 0; kind < KINDS; kind++) {
        negstream__transport t;
        negstream_error e;
        uint8_t b;
        int w, r;

        make_pair(kind, &w, &r);
        open_tr(&t, r);
        close(w);
        ck_assert_int_eq(negstream__transport_block(&t, NEGSTREAM__DIR_READ,
                                                    -1,
                                                    negstream__deadline_in(
                                                        600000),
                                                    "read", &e), 1);
        ck_assert_int_eq(t.ops->recv(&t, &b, 1, &e), 0);
        close_tr(&t);
        close(r);
    }
    {
        negstream__transport t;
        negstream_error e;
        int w, r;

        make_pair(KIND_PIPE, &w, &r);
        open_tr(&t, w);
        fill(&t);
        close(r);
        ck_assert_int_eq(negstream__transport_block(&t,
                                                    NEGSTREAM__DIR_WRITE,
                                                    -1, -1, "write", &e), 1);
        err_sentinel(&e);
        ck_assert_int_eq(tr_send(&t, "x", 1, &e), -1);
        ck_assert_int_eq(e.sys_errno, EPIPE);
        close_tr(&t);
        close(w);
    }
    alarm(0);
}
END_TEST

/* ---- a closed peer, and SIGPIPE ----------------------------------------- */

static atomic_int sigpipes;

static void count_sigpipe(int sig)
{
    (void)sig;
    atomic_fetch_add(&sigpipes, 1);
}

static void install(int sig, void (*fn)(int), struct sigaction *old)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;                    /* no SA_RESTART */
    ck_assert_int_eq(sigaction(sig, &sa, old), 0);
}

/* Sends to a peer that has gone, waiting in block when full, until the
 * transport reports the error. */
static void send_to_closed(int wfd, negstream_error *e)
{
    const size_t total = 4 << 20;
    uint8_t *data = pattern(total);
    negstream__transport t;
    struct iovec iov;
    size_t off = 0;

    iov.iov_base = data;
    iov.iov_len = total;
    open_tr(&t, wfd);
    err_sentinel(e);
    ck_assert_int_eq(send_all_wait(&t, &iov, 1, &off, -1, e), -1);
    ck_assert_uint_lt(off, total);
    close_tr(&t);
    free(data);
}

/* No SIGPIPE was delivered or left pending, the thread's mask is as it
 * was, and the process disposition is still 'handler'. */
static void assert_sigpipe_clean(void (*handler)(int), bool blocked)
{
    struct sigaction cur;
    sigset_t mask, pending;

    ck_assert_int_eq(atomic_load(&sigpipes), 0);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &mask), 0);
    ck_assert_int_eq(sigismember(&mask, SIGPIPE), blocked ? 1 : 0);
    ck_assert_int_eq(sigpending(&pending), 0);
    ck_assert_int_eq(sigismember(&pending, SIGPIPE), 0);
    ck_assert_int_eq(sigaction(SIGPIPE, NULL, &cur), 0);
    ck_assert_ptr_eq((void *)cur.sa_handler, (void *)handler);
}

static void check_closed_peer_error(int kind, const negstream_error *e)
{
    ck_assert_int_eq(e->code, NEGSTREAM_E_IO);
    if (kind == KIND_PIPE)
        ck_assert_int_eq(e->sys_errno, EPIPE);
    else
        ck_assert_msg(e->sys_errno == EPIPE || e->sys_errno == ECONNRESET,
                      "errno %d", e->sys_errno);
    ck_assert_msg(strstr(e->message, "peer closed the connection") != NULL,
                  "%s", e->message);
    ck_assert_msg(strstr(e->message, strerror(e->sys_errno)) != NULL, "%s",
                  e->message);
}

/* With the application's handler installed: never called. */
START_TEST(peer_closed_no_sigpipe)
{
    struct sigaction old;
    negstream_error e;
    int kind, nb;

    alarm(GUARD_SECONDS);
    atomic_store(&sigpipes, 0);
    install(SIGPIPE, count_sigpipe, &old);
    for (kind = 0; kind < KINDS; kind++) {
        for (nb = 0; nb < 2; nb++) {
            int w, r;

            make_pair(kind, &w, &r);
            set_nonblocking(w, nb);
            close(r);
            send_to_closed(w, &e);
            check_closed_peer_error(kind, &e);
            close(w);
            assert_sigpipe_clean(count_sigpipe, false);
        }
    }
    ck_assert_int_eq(sigaction(SIGPIPE, &old, NULL), 0);
    alarm(0);
}
END_TEST

/* With SIGPIPE's default disposition (terminate) or SIG_IGN: the process
 * survives (this test would die of SIGPIPE otherwise) and the disposition
 * is still the application's. */
START_TEST(peer_closed_default_disposition)
{
    static void (*const dispositions[])(int) = { SIG_DFL, SIG_IGN };
    struct sigaction old;
    negstream_error e;
    int kind, d;

    alarm(GUARD_SECONDS);
    atomic_store(&sigpipes, 0);
    for (d = 0; d < 2; d++) {
        install(SIGPIPE, dispositions[d], &old);
        for (kind = 0; kind < KINDS; kind++) {
            int w, r;

            make_pair(kind, &w, &r);
            close(r);
            send_to_closed(w, &e);
            check_closed_peer_error(kind, &e);
            close(w);
            assert_sigpipe_clean(dispositions[d], false);
        }
        ck_assert_int_eq(sigaction(SIGPIPE, &old, NULL), 0);
    }
    alarm(0);
}
END_TEST

/* SIGPIPE from a writer thread is consumed in that thread; the other
 * threads (and the process) never see it. */
static void *pipe_writer(void *arg)
{
    negstream_error *e = arg;
    int w, r;

    make_pair(KIND_PIPE, &w, &r);
    close(r);
    send_to_closed(w, e);
    close(w);
    return NULL;
}

START_TEST(peer_closed_no_sigpipe_thread)
{
    struct sigaction old;
    negstream_error e;
    pthread_t th;

    alarm(GUARD_SECONDS);
    atomic_store(&sigpipes, 0);
    install(SIGPIPE, count_sigpipe, &old);
    ck_assert_int_eq(pthread_create(&th, NULL, pipe_writer, &e), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    check_closed_peer_error(KIND_PIPE, &e);
    assert_sigpipe_clean(count_sigpipe, false);
    ck_assert_int_eq(sigaction(SIGPIPE, &old, NULL), 0);
    alarm(0);
}
END_TEST

/* The application blocks SIGPIPE itself: the one our write raised is
 * consumed (nothing pending afterwards) and the mask stays blocked. */
START_TEST(sigpipe_blocked_by_application)
{
    sigset_t set;
    negstream_error e;
    int w, r;

    alarm(GUARD_SECONDS);
    atomic_store(&sigpipes, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
    make_pair(KIND_PIPE, &w, &r);
    close(r);
    send_to_closed(w, &e);
    check_closed_peer_error(KIND_PIPE, &e);
    close(w);
    assert_sigpipe_clean(SIG_DFL, true);
    ck_assert_int_eq(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
    alarm(0);
}
END_TEST

/* A SIGPIPE the application already had pending (with SIGPIPE blocked)
 * is the application's: the transport must not consume it. */
START_TEST(pending_sigpipe_left_alone)
{
    sigset_t set, pending;
    negstream_error e;
    int w, r, sig = 0;

    alarm(GUARD_SECONDS);
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
    ck_assert_int_eq(pthread_kill(pthread_self(), SIGPIPE), 0);
    make_pair(KIND_PIPE, &w, &r);
    close(r);
    send_to_closed(w, &e);
    ck_assert_int_eq(e.sys_errno, EPIPE);
    ck_assert_int_eq(sigpending(&pending), 0);
    ck_assert_int_eq(sigismember(&pending, SIGPIPE), 1);
    /* And the mask is still the application's: SIGPIPE blocked. */
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &pending), 0);
    ck_assert_int_eq(sigismember(&pending, SIGPIPE), 1);
    ck_assert_int_eq(sigwait(&set, &sig), 0);
    ck_assert_int_eq(sig, SIGPIPE);
    ck_assert_int_eq(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
    close(w);
    alarm(0);
}
END_TEST

/* ---- EINTR storms ------------------------------------------------------- */

static atomic_int usr1_count;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&usr1_count, 1);
}

typedef struct storm {
    pthread_t thread;
    pthread_t targets[2];
    int ntargets;
    atomic_bool stop;
    unsigned long sent;
} storm;

static void *storm_main(void *arg)
{
    storm *s = arg;

    while (!atomic_load(&s->stop)) {
        pthread_kill(s->targets[s->sent % (unsigned long)s->ntargets],
                     SIGUSR1);
        s->sent++;
        sched_yield();
    }
    return NULL;
}

static void storm_start(storm *s, pthread_t a, pthread_t b, int n)
{
    memset(s, 0, sizeof(*s));
    atomic_init(&s->stop, false);
    s->targets[0] = a;
    s->targets[1] = b;
    s->ntargets = n;
    ck_assert_int_eq(pthread_create(&s->thread, NULL, storm_main, s), 0);
}

static void storm_stop(storm *s)
{
    atomic_store(&s->stop, true);
    ck_assert_int_eq(pthread_join(s->thread, NULL), 0);
}

typedef struct writer {
    pthread_t thread;
    int fd;
    int64_t deadline;
    const uint8_t *data;
    size_t total, off;
    int rc;
    negstream_error err;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    negstream__transport t;
    struct iovec iov[3];

    iov[0].iov_base = (void *)w->data;
    iov[0].iov_len = 1;
    iov[1].iov_base = (void *)(w->data + 1);
    iov[1].iov_len = w->total / 3;
    iov[2].iov_base = (void *)(w->data + 1 + w->total / 3);
    iov[2].iov_len = w->total - 1 - w->total / 3;
    w->rc = -4;
    if (negstream__transport_fd(&t, w->fd, &w->err) < 0)
        return NULL;
    w->rc = send_all_wait(&t, iov, 3, &w->off, w->deadline, &w->err);
    t.ops->close(&t);
    return NULL;
}

/*
 * A writer thread (send_all, waiting in block) and the test thread
 * (recv, waiting in block) move 'total' bytes while a third thread sends
 * SIGUSR1 to both, over and over.  The reader stops half way until 200
 * signals have been delivered, so the storm certainly hits a writer
 * waiting on a full buffer.
 */
static void eintr_storm(int kind, int timeout_ms, bool nonblocking)
{
    const size_t total = 8 << 20;
    uint8_t *data = pattern(total), *buf = malloc(4099);
    int64_t deadline = negstream__deadline_in(timeout_ms);
    negstream__transport t;
    struct sigaction old;
    negstream_error e;
    size_t got = 0;
    bool paused = false;
    writer wr;
    storm s;
    int w, r;

    ck_assert_ptr_nonnull(buf);
    make_pair(kind, &w, &r);
    if (nonblocking) {
        set_nonblocking(w, true);
        set_nonblocking(r, true);
    }
    atomic_store(&usr1_count, 0);
    install(SIGUSR1, on_usr1, &old);

    memset(&wr, 0, sizeof(wr));
    wr.fd = w;
    wr.deadline = deadline;
    wr.data = data;
    wr.total = total;
    ck_assert_int_eq(pthread_create(&wr.thread, NULL, writer_main, &wr), 0);
    storm_start(&s, wr.thread, pthread_self(), 2);

    open_tr(&t, r);
    while (got < total) {
        ssize_t k;

        if (!paused && got >= total / 2) {
            paused = true;
            while (atomic_load(&usr1_count) < 200)
                sched_yield();
        }
        k = recv_wait(&t, buf, 4099, deadline, &e);
        if (k <= 0)
            ck_abort_msg("recv: %zd (%s)", k, e.message);
        if (pattern_check(buf, (size_t)k, got) != (size_t)k)
            ck_abort_msg("byte %zu differs",
                         got + pattern_check(buf, (size_t)k, got));
        got += (size_t)k;
    }
    storm_stop(&s);
    ck_assert_int_eq(pthread_join(wr.thread, NULL), 0);
    ck_assert_msg(wr.rc == 0, "writer: %s", wr.err.message);
    ck_assert_uint_eq(wr.off, total);
    ck_assert_uint_eq(got, total);
    ck_assert_int_ge(atomic_load(&usr1_count), 200);
    ck_assert_int_eq(sigaction(SIGUSR1, &old, NULL), 0);
    close_tr(&t);
    close(w);
    close(r);
    free(buf);
    free(data);
}

START_TEST(eintr_storm_socketpair)
{
    eintr_storm(KIND_SOCK, -1, false);
    eintr_storm(KIND_SOCK, 600000, false);
    eintr_storm(KIND_SOCK, -1, true);
}
END_TEST

START_TEST(eintr_storm_pipe)
{
    eintr_storm(KIND_PIPE, -1, false);
    eintr_storm(KIND_PIPE, 600000, false);
    eintr_storm(KIND_PIPE, 600000, true);
}
END_TEST

START_TEST(eintr_storm_tcp)
{
    eintr_storm(KIND_TCP, -1, false);
    eintr_storm(KIND_TCP, 600000, true);
}
END_TEST

/* Signals while block waits for a deadline do not stretch it: each
 * interrupted poll goes on with the time that is left.  (Were it to start
 * the timeout again, the storm, which lasts until block returns, would
 * keep it waiting until the guard alarm.) */
START_TEST(block_deadline_survives_signals)
{
    negstream__transport t;
    struct sigaction old;
    negstream_error e;
    int64_t deadline;
    storm s;
    int w, r;

    alarm(GUARD_SECONDS);
    atomic_store(&usr1_count, 0);
    install(SIGUSR1, on_usr1, &old);
    make_pair(KIND_SOCK, &w, &r);
    open_tr(&t, r);
    storm_start(&s, pthread_self(), pthread_self(), 1);
    /* Long enough that the storm certainly interrupts it. */
    deadline = negstream__deadline_in(300);
    err_sentinel(&e);
    ck_assert_int_eq(negstream__transport_block(&t, NEGSTREAM__DIR_READ, -1,
                                                deadline, "read", &e), -1);
    storm_stop(&s);
    ck_assert_int_eq(e.code, NEGSTREAM_E_TIMEOUT);
    ck_assert_int_ge(negstream__mono_ms(), deadline);
    ck_assert_int_gt(atomic_load(&usr1_count), 0);
    ck_assert_int_eq(sigaction(SIGUSR1, &old, NULL), 0);
    close_tr(&t);
    close(w);
    close(r);
    alarm(0);
}
END_TEST

/* Check's 4 s default is too short for sanitizer builds; make check sets
 * CK_DEFAULT_TIMEOUT, which then wins. */
static void set_timeout(TCase *tc)
{
    if (getenv("CK_DEFAULT_TIMEOUT") == NULL)
        tcase_set_timeout(tc, 120);
}

static Suite *transport_suite(void)
{
    Suite *s = suite_create("transport");
    TCase *tc;

    tc = tcase_create("dup");
    set_timeout(tc);
    tcase_add_test(tc, dup_of_each_kind);
    tcase_add_test(tc, dup_of_bad_fd);
    tcase_add_test(tc, dup_without_fds_left);
    tcase_add_test(tc, dup_outlives_the_original);
    tcase_add_test(tc, close_leaves_the_original);
    tcase_add_test(tc, nonblock_flag_untouched);
    suite_add_tcase(s, tc);

    tc = tcase_create("recv");
    set_timeout(tc);
    tcase_add_test(tc, recv_never_blocks);
    tcase_add_test(tc, recv_what_is_there);
    tcase_add_test(tc, recv_end_of_stream);
    tcase_add_test(tc, recv_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("send");
    set_timeout(tc);
    tcase_add_test(tc, send_never_blocks);
    tcase_add_test(tc, send_pipe_at_most_pipe_buf);
    tcase_add_test(tc, send_leading_empty_entries);
    tcase_add_test(tc, send_all_many_iovecs);
    tcase_add_test(tc, send_all_nothing_to_send);
    tcase_add_test(tc, send_all_resumes_socketpair);
    tcase_add_test(tc, send_all_resumes_pipe);
    tcase_add_test(tc, send_all_resumes_tcp);
    tcase_add_test(tc, send_all_regular_file);
    tcase_add_test(tc, send_all_short_writes);
    suite_add_tcase(s, tc);

    tc = tcase_create("block");
    set_timeout(tc);
    tcase_add_test(tc, block_ready_at_once);
    tcase_add_test(tc, block_waits_until_ready);
    tcase_add_test(tc, block_woken);
    tcase_add_test(tc, block_timeout);
    tcase_add_test(tc, block_peer_gone);
    suite_add_tcase(s, tc);

    tc = tcase_create("signals");
    set_timeout(tc);
    tcase_add_test(tc, peer_closed_no_sigpipe);
    tcase_add_test(tc, peer_closed_default_disposition);
    tcase_add_test(tc, peer_closed_no_sigpipe_thread);
    tcase_add_test(tc, sigpipe_blocked_by_application);
    tcase_add_test(tc, pending_sigpipe_left_alone);
    tcase_add_test(tc, eintr_storm_socketpair);
    tcase_add_test(tc, eintr_storm_pipe);
    tcase_add_test(tc, eintr_storm_tcp);
    tcase_add_test(tc, block_deadline_survives_signals);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(transport_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
