/*
 * check_transport.c - transport.c on socketpairs, pipes and 127.0.0.1 TCP:
 * vectors with many and empty entries, short writes, EAGAIN on
 * non-blocking fds, timeouts with exact partial counts, EOF inside
 * read_exact, a closed peer without SIGPIPE, EINTR storms, and shutdown
 * waking a blocked reader or writer.  No KDC.
 *
 * Threads are started inside the tests only (Check forks each test).
 * Nothing here asserts on elapsed time: a timeout test only needs the
 * timeout to expire at some point, and a sleep only makes it likely that
 * a thread is already blocked (the result is the same if it is not).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "error.h"
#include "transport.h"

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

static void sock_pair(int fds[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
}

static void pipe_pair(int fds[2])
{
    /* fds[0] is the read end, as for pipe(). */
    ck_assert_int_eq(pipe(fds), 0);
}

/* A connected TCP pair on 127.0.0.1: fds[0] client, fds[1] server. */
static void tcp_pair(int fds[2])
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    ck_assert_int_ge(lfd, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(lfd, 1), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fds[0], 0);
    ck_assert_int_eq(connect(fds[0], (struct sockaddr *)&a, sizeof(a)), 0);
    fds[1] = accept(lfd, NULL, NULL);
    ck_assert_int_ge(fds[1], 0);
    close(lfd);
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void small_buffers(int fd_send, int fd_recv, int size)
{
    ck_assert_int_eq(setsockopt(fd_send, SOL_SOCKET, SO_SNDBUF, &size,
                                sizeof(size)), 0);
    ck_assert_int_eq(setsockopt(fd_recv, SOL_SOCKET, SO_RCVBUF, &size,
                                sizeof(size)), 0);
}

/* Reads fd up to EOF (the writer has closed or shut down its end),
 * checking the pattern from offset 0.  Returns the count.  Blocking
 * reads: on TCP, bytes still in the writer's send queue arrive later. */
static size_t drain_check(int fd)
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
        ck_assert_uint_eq(pattern_check(buf, (size_t)n, total), (size_t)n);
        total += (size_t)n;
    }
}

static void err_sentinel(negstream_error *e)
{
    memset(e, 0, sizeof(*e));
    e->code = NEGSTREAM_E_CANCELED;
    e->sys_errno = 4242;
    strcpy(e->message, "sentinel");
}

/* A thread that reads until EOF (or 'want' bytes) through the transport,
 * in chunks of 'chunk' bytes, yielding between reads when 'slow', and
 * checks the pattern. */
typedef struct reader {
    pthread_t thread;
    int fd, timeout_ms;
    size_t chunk, want, got, bad_at;
    bool slow, use_exact;
    int rc;
    negstream_error err;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    negstream__transport t;
    uint8_t *buf = malloc(r->chunk);

    negstream__transport_init(&t, r->fd);
    r->bad_at = SIZE_MAX;
    r->rc = 0;
    while (r->want == 0 || r->got < r->want) {
        size_t n = r->chunk;
        ssize_t k;

        if (r->want != 0 && n > r->want - r->got)
            n = r->want - r->got;
        if (r->use_exact)
            k = negstream__transport_read_exact(&t, buf, n, r->timeout_ms,
                                                &r->err);
        else
            k = negstream__transport_read_some(&t, buf, n, r->timeout_ms,
                                               &r->err);
        if (k < 0) {
            r->rc = -1;
            break;
        }
        if (k == 0)
            break;
        if (r->bad_at == SIZE_MAX &&
            pattern_check(buf, (size_t)k, r->got) != (size_t)k)
            r->bad_at = r->got + pattern_check(buf, (size_t)k, r->got);
        r->got += (size_t)k;
        if (r->slow)
            sched_yield();
        if (r->use_exact && (size_t)k < n)
            break;
    }
    free(buf);
    return NULL;
}

static void reader_start(reader *r, int fd, size_t chunk, size_t want,
                         bool slow, bool use_exact, int timeout_ms)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->chunk = chunk;
    r->want = want;
    r->slow = slow;
    r->use_exact = use_exact;
    r->timeout_ms = timeout_ms;
    ck_assert_int_eq(pthread_create(&r->thread, NULL, reader_main, r), 0);
}

static void reader_join(reader *r)
{
    ck_assert_int_eq(pthread_join(r->thread, NULL), 0);
}

/* ---- init -------------------------------------------------------------- */

START_TEST(init_kinds)
{
    negstream__transport t;
    int fds[2], fd;

    sock_pair(fds);
    negstream__transport_init(&t, fds[0]);
    ck_assert_int_eq(t.fd, fds[0]);
    ck_assert(t.is_socket);
    close(fds[0]);
    close(fds[1]);

    tcp_pair(fds);
    negstream__transport_init(&t, fds[1]);
    ck_assert(t.is_socket);
    close(fds[0]);
    close(fds[1]);

    pipe_pair(fds);
    negstream__transport_init(&t, fds[1]);
    ck_assert(!t.is_socket);
    close(fds[0]);
    close(fds[1]);

    fd = tmp_fd();
    negstream__transport_init(&t, fd);
    ck_assert(!t.is_socket);
    close(fd);

    negstream__transport_init(&t, -1);
    ck_assert_int_eq(t.fd, -1);
    ck_assert(!t.is_socket);
}
END_TEST

/* ---- writev_all --------------------------------------------------------- */

/* 3000 entries (more than IOV_MAX), every third one empty, lengths 0..700,
 * written to 'kind' (0 socketpair, 1 pipe, 2 TCP) with a reader thread. */
static void many_iovecs(int kind, int timeout_ms)
{
    enum { N = 3000 };
    struct iovec *iov = calloc(N, sizeof(*iov));
    size_t total = 0, sent = 12345;
    negstream__transport t;
    negstream_error e;
    uint8_t *data;
    reader r;
    int fds[2], wfd, rfd, i;

    ck_assert_ptr_nonnull(iov);
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
    if (kind == 0)
        sock_pair(fds), wfd = fds[0], rfd = fds[1];
    else if (kind == 1)
        pipe_pair(fds), wfd = fds[1], rfd = fds[0];
    else
        tcp_pair(fds), wfd = fds[0], rfd = fds[1];
    reader_start(&r, rfd, 4096, 0, false, false, -1);
    negstream__transport_init(&t, wfd);
    err_sentinel(&e);
    ck_assert_int_eq(negstream__transport_writev_all(&t, iov, N, timeout_ms,
                                                     &sent, &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert_uint_eq(sent, total);
    close(wfd);
    reader_join(&r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.got, total);
    ck_assert_uint_eq(r.bad_at, SIZE_MAX);
    close(rfd);
    free(data);
    free(iov);
}

START_TEST(writev_many_iovecs_socketpair)
{
    many_iovecs(0, -1);
    many_iovecs(0, 60000);
}
END_TEST

START_TEST(writev_many_iovecs_pipe)
{
    many_iovecs(1, -1);
    many_iovecs(1, 60000);      /* the PIPE_BUF-at-a-time path */
}
END_TEST

START_TEST(writev_many_iovecs_tcp)
{
    many_iovecs(2, -1);
    many_iovecs(2, 60000);
}
END_TEST

START_TEST(writev_empty)
{
    struct iovec iov[3] = { { NULL, 0 }, { NULL, 0 }, { NULL, 0 } };
    negstream__transport t;
    negstream_error e;
    size_t sent = 99;
    int fds[2];
    uint8_t b;

    sock_pair(fds);
    negstream__transport_init(&t, fds[0]);
    err_sentinel(&e);
    ck_assert_int_eq(negstream__transport_writev_all(&t, iov, 3, 0, &sent,
                                                     &e), 0);
    ck_assert_uint_eq(sent, 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert_int_eq(negstream__transport_writev_all(&t, iov, 0, -1, NULL,
                                                     NULL), 0);
    /* Nothing went out. */
    set_nonblocking(fds[1], true);
    ck_assert_int_eq(read(fds[1], &b, 1), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

START_TEST(writev_regular_file)
{
    uint8_t *data = pattern(100000), *back = malloc(100000);
    struct iovec iov[4];
    negstream__transport t;
    negstream_error e;
    size_t sent = 0;
    int fd = tmp_fd();

    iov[0].iov_base = data, iov[0].iov_len = 10;
    iov[1].iov_base = data + 10, iov[1].iov_len = 0;
    iov[2].iov_base = data + 10, iov[2].iov_len = 50000;
    iov[3].iov_base = data + 50010, iov[3].iov_len = 49990;
    negstream__transport_init(&t, fd);
    ck_assert_int_eq(negstream__transport_writev_all(&t, iov, 4, 1000,
                                                     &sent, &e), 0);
    ck_assert_uint_eq(sent, 100000);
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    ck_assert_int_eq(negstream__transport_read_exact(&t, back, 100000, -1,
                                                     &e), 100000);
    ck_assert_mem_eq(back, data, 100000);
    /* At end of file: EOF at once. */
    ck_assert_int_eq(negstream__transport_read_exact(&t, back, 10, 1000,
                                                     &e), 0);
    close(fd);
    free(back);
    free(data);
}
END_TEST

/* Non-blocking socketpair with tiny buffers and a slow reader: the write
 * is cut into many short writes and EAGAIN waits; every byte arrives, in
 * order. */
static void short_writes(bool tcp, int timeout_ms)
{
    const size_t total = 256 << 10;
    uint8_t *data = pattern(total);
    struct iovec iov[3];
    negstream__transport t;
    negstream_error e;
    size_t sent = 0;
    reader r;
    int fds[2], size = 4096;

    /* A tiny send buffer.  On TCP the receive buffer keeps its default:
     * a tiny window meets delayed ACKs and crawls. */
    if (tcp) {
        tcp_pair(fds);
        ck_assert_int_eq(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &size,
                                    sizeof(size)), 0);
    } else {
        sock_pair(fds);
        small_buffers(fds[0], fds[1], size);
    }
    set_nonblocking(fds[0], true);
    reader_start(&r, fds[1], 97, 0, true, false, -1);
    iov[0].iov_base = data, iov[0].iov_len = 3;
    iov[1].iov_base = data + 3, iov[1].iov_len = total / 2;
    iov[2].iov_base = data + 3 + total / 2,
    iov[2].iov_len = total - 3 - total / 2;
    negstream__transport_init(&t, fds[0]);
    ck_assert_int_eq(negstream__transport_writev_all(&t, iov, 3, timeout_ms,
                                                     &sent, &e), 0);
    ck_assert_uint_eq(sent, total);
    close(fds[0]);
    reader_join(&r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.got, total);
    ck_assert_uint_eq(r.bad_at, SIZE_MAX);
    close(fds[1]);
    free(data);
}

START_TEST(writev_short_writes_socketpair)
{
    short_writes(false, -1);
    short_writes(false, 60000);
}
END_TEST

START_TEST(writev_short_writes_tcp)
{
    short_writes(true, -1);
    short_writes(true, 60000);
}
END_TEST

/* A full non-blocking pipe: the write must wait in poll, not fail with
 * EAGAIN, until the reader makes room. */
START_TEST(writev_eagain_waits)
{
    uint8_t *data = pattern(1 << 20);
    negstream__transport t;
    negstream_error e;
    struct iovec iov;
    size_t pre = 0, sent = 0;
    reader r;
    int fds[2];

    pipe_pair(fds);
    set_nonblocking(fds[1], true);
    /* Fill the pipe completely, with the pattern's first bytes. */
    for (;;) {
        ssize_t n = write(fds[1], data + pre, 1024);

        if (n < 0) {
            ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
            break;
        }
        pre += (size_t)n;
    }
    ck_assert_uint_gt(pre, 0);
    reader_start(&r, fds[0], 4096, 0, true, false, -1);
    iov.iov_base = data + pre;
    iov.iov_len = (1 << 20) - pre;
    negstream__transport_init(&t, fds[1]);
    ck_assert_int_eq(negstream__transport_writev_all(&t, &iov, 1, -1, &sent,
                                                     &e), 0);
    ck_assert_uint_eq(sent, (1 << 20) - pre);
    close(fds[1]);
    reader_join(&r);
    ck_assert_uint_eq(r.got, 1 << 20);
    ck_assert_uint_eq(r.bad_at, SIZE_MAX);
    close(fds[0]);
    free(data);
}
END_TEST

/* The peer never reads: the write times out, and *sent is exactly what
 * the peer can then read. */
static void write_timeout(int kind, bool nonblocking)
{
    const size_t total = 16 << 20;
    uint8_t *data = pattern(total);
    negstream__transport t;
    negstream_error e;
    struct iovec iov[2];
    size_t sent = 0;
    int fds[2], wfd, rfd;

    if (kind == 0)
        sock_pair(fds), wfd = fds[0], rfd = fds[1];
    else if (kind == 1)
        pipe_pair(fds), wfd = fds[1], rfd = fds[0];
    else
        tcp_pair(fds), wfd = fds[0], rfd = fds[1];
    if (kind != 1)
        small_buffers(wfd, rfd, 65536);
    if (nonblocking)
        set_nonblocking(wfd, true);
    iov[0].iov_base = data;
    iov[0].iov_len = 1000;
    iov[1].iov_base = data + 1000;
    iov[1].iov_len = total - 1000;
    negstream__transport_init(&t, wfd);
    err_sentinel(&e);
    ck_assert_int_eq(negstream__transport_writev_all(&t, iov, 2, 100, &sent,
                                                     &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_TIMEOUT);
    ck_assert_msg(strstr(e.message, "timed out") != NULL, "%s", e.message);
    ck_assert_uint_gt(sent, 0);
    ck_assert_uint_lt(sent, total);
    close(wfd);
    ck_assert_uint_eq(drain_check(rfd), sent);
    close(rfd);
    free(data);
}

START_TEST(writev_timeout_socketpair)
{
    write_timeout(0, false);
    write_timeout(0, true);
}
END_TEST

START_TEST(writev_timeout_pipe)
{
    write_timeout(1, false);
    write_timeout(1, true);
}
END_TEST

START_TEST(writev_timeout_tcp)
{
    write_timeout(2, false);
    write_timeout(2, true);
}
END_TEST

/* ---- reads -------------------------------------------------------------- */

START_TEST(read_timeout)
{
    negstream__transport t;
    negstream_error e;
    uint8_t buf[16];
    int fds[2], round;

    for (round = 0; round < 4; round++) {
        if (round < 2)
            sock_pair(fds);
        else
            pipe_pair(fds);
        if (round % 2)
            set_nonblocking(fds[0], true);
        negstream__transport_init(&t, fds[0]);
        err_sentinel(&e);
        ck_assert_int_eq(negstream__transport_read_exact(&t, buf, 10, 50,
                                                         &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_TIMEOUT);
        err_sentinel(&e);
        ck_assert_int_eq(negstream__transport_read_some(&t, buf, 10, 0,
                                                        &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_TIMEOUT);
        /* Part of the bytes, then silence: still a timeout. */
        ck_assert_int_eq(write(fds[1], "abc", 3), 3);
        err_sentinel(&e);
        ck_assert_int_eq(negstream__transport_read_exact(&t, buf, 10, 50,
                                                         &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_TIMEOUT);
        /* Data there: a timeout of 0 does not stop a read. */
        ck_assert_int_eq(write(fds[1], "defg", 4), 4);
        ck_assert_int_eq(negstream__transport_read_exact(&t, buf, 4, 0, &e),
                         4);
        ck_assert_int_eq(e.code, NEGSTREAM_OK);
        ck_assert_mem_eq(buf, "defg", 4);
        close(fds[0]);
        close(fds[1]);
    }
}
END_TEST

START_TEST(read_exact_eof_midway)
{
    negstream__transport t;
    negstream_error e;
    uint8_t *data = pattern(1000), buf[1000];
    int fds[2], round;

    for (round = 0; round < 3; round++) {
        if (round == 0)
            sock_pair(fds);
        else if (round == 1)
            pipe_pair(fds);
        else
            tcp_pair(fds);
        /* fds[1] writes (pipe: the write end), fds[0] reads. */
        ck_assert_int_eq(write(fds[1], data, 300), 300);
        close(fds[1]);
        negstream__transport_init(&t, fds[0]);
        err_sentinel(&e);
        ck_assert_int_eq(negstream__transport_read_exact(&t, buf, 1000,
                                                         round == 2 ? -1 :
                                                         5000, &e), 300);
        /* EOF is the caller's to judge: err untouched. */
        ck_assert_int_eq(e.code, NEGSTREAM_E_CANCELED);
        ck_assert_str_eq(e.message, "sentinel");
        ck_assert_mem_eq(buf, data, 300);
        /* At EOF: 0, for read_exact and read_some. */
        ck_assert_int_eq(negstream__transport_read_exact(&t, buf, 10, -1,
                                                         &e), 0);
        ck_assert_int_eq(negstream__transport_read_some(&t, buf, 10, 1000,
                                                        &e), 0);
        ck_assert_int_eq(e.code, NEGSTREAM_OK);
        close(fds[0]);
    }
    free(data);
}
END_TEST

START_TEST(read_some_and_zero)
{
    negstream__transport t;
    negstream_error e;
    uint8_t buf[100];
    int fds[2];

    sock_pair(fds);
    negstream__transport_init(&t, fds[0]);
    /* n == 0 returns at once, even with nothing to read. */
    err_sentinel(&e);
    ck_assert_int_eq(negstream__transport_read_some(&t, buf, 0, -1, &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert_int_eq(negstream__transport_read_exact(&t, buf, 0, -1, &e), 0);
    /* read_some returns what is there, not more. */
    ck_assert_int_eq(write(fds[1], "hello", 5), 5);
    ck_assert_int_eq(negstream__transport_read_some(&t, buf, sizeof(buf), -1,
                                                    &e), 5);
    ck_assert_mem_eq(buf, "hello", 5);
    ck_assert_int_eq(write(fds[1], "world", 5), 5);
    ck_assert_int_eq(negstream__transport_read_some(&t, buf, 3, -1, &e), 3);
    ck_assert_mem_eq(buf, "wor", 3);
    ck_assert_int_eq(negstream__transport_read_some(&t, buf, 3, 100, &e), 2);
    ck_assert_mem_eq(buf, "ld", 2);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

START_TEST(read_errors)
{
    negstream__transport t;
    negstream_error e;
    uint8_t buf[10];
    int fds[2];

    /* A closed fd: IO with errno EBADF, both for reads and writes. */
    pipe_pair(fds);
    close(fds[0]);
    close(fds[1]);
    negstream__transport_init(&t, fds[0]);
    err_sentinel(&e);
    ck_assert_int_eq(negstream__transport_read_exact(&t, buf, 10, -1, &e),
                     -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, EBADF);
    ck_assert_msg(strstr(e.message, strerror(EBADF)) != NULL, "%s",
                  e.message);
    err_sentinel(&e);
    ck_assert_int_eq(negstream__transport_read_exact(&t, buf, 10, 100, &e),
                     -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
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

/* Writes to a peer that has gone; returns the error. */
static void write_to_closed(int wfd, int timeout_ms, negstream_error *e)
{
    const size_t total = 4 << 20;
    uint8_t *data = pattern(total);
    negstream__transport t;
    struct iovec iov;
    size_t sent = 0;

    iov.iov_base = data;
    iov.iov_len = total;
    negstream__transport_init(&t, wfd);
    err_sentinel(e);
    ck_assert_int_eq(negstream__transport_writev_all(&t, &iov, 1, timeout_ms,
                                                     &sent, e), -1);
    ck_assert_uint_lt(sent, total);
    free(data);
}

static void assert_sigpipe_clean(void)
{
    sigset_t mask, pending;

    ck_assert_int_eq(atomic_load(&sigpipes), 0);
    /* The thread's mask is as before (SIGPIPE not blocked) and nothing
     * is left pending. */
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &mask), 0);
    ck_assert_int_eq(sigismember(&mask, SIGPIPE), 0);
    ck_assert_int_eq(sigpending(&pending), 0);
    ck_assert_int_eq(sigismember(&pending, SIGPIPE), 0);
}

START_TEST(peer_closed_no_sigpipe)
{
    struct sigaction old;
    negstream_error e;
    int fds[2], kind, timeout;

    atomic_store(&sigpipes, 0);
    install(SIGPIPE, count_sigpipe, &old);
    for (kind = 0; kind < 3; kind++) {
        for (timeout = -1; timeout <= 1000; timeout += 1001) {
            int wfd;

            if (kind == 0)
                sock_pair(fds), wfd = fds[0], close(fds[1]);
            else if (kind == 1)
                pipe_pair(fds), wfd = fds[1], close(fds[0]);
            else
                tcp_pair(fds), wfd = fds[0], close(fds[1]);
            write_to_closed(wfd, timeout, &e);
            ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
            ck_assert_msg(e.sys_errno == EPIPE || e.sys_errno == ECONNRESET,
                          "errno %d", e.sys_errno);
            ck_assert_msg(strstr(e.message, "peer closed the connection")
                          != NULL, "%s", e.message);
            ck_assert_msg(strstr(e.message, strerror(e.sys_errno)) != NULL,
                          "%s", e.message);
            close(wfd);
            assert_sigpipe_clean();
        }
    }
    ck_assert_int_eq(sigaction(SIGPIPE, &old, NULL), 0);
}
END_TEST

/* SIGPIPE from a writer thread is consumed in that thread; the other
 * threads (and the process) never see it. */
static void *pipe_writer(void *arg)
{
    negstream_error *e = arg;
    int fds[2];

    pipe_pair(fds);
    close(fds[0]);
    write_to_closed(fds[1], -1, e);
    close(fds[1]);
    return NULL;
}

START_TEST(peer_closed_no_sigpipe_thread)
{
    struct sigaction old;
    negstream_error e;
    pthread_t th;

    atomic_store(&sigpipes, 0);
    install(SIGPIPE, count_sigpipe, &old);
    ck_assert_int_eq(pthread_create(&th, NULL, pipe_writer, &e), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, EPIPE);
    assert_sigpipe_clean();
    ck_assert_int_eq(sigaction(SIGPIPE, &old, NULL), 0);
}
END_TEST

/* A SIGPIPE the application already had pending (with SIGPIPE blocked)
 * is the application's: the transport must not consume it. */
START_TEST(pending_sigpipe_left_alone)
{
    sigset_t set, pending;
    negstream_error e;
    int fds[2], sig = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
    ck_assert_int_eq(pthread_kill(pthread_self(), SIGPIPE), 0);
    pipe_pair(fds);
    close(fds[0]);
    write_to_closed(fds[1], -1, &e);
    ck_assert_int_eq(e.sys_errno, EPIPE);
    ck_assert_int_eq(sigpending(&pending), 0);
    ck_assert_int_eq(sigismember(&pending, SIGPIPE), 1);
    /* And the mask is still the application's: SIGPIPE blocked. */
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &pending), 0);
    ck_assert_int_eq(sigismember(&pending, SIGPIPE), 1);
    ck_assert_int_eq(sigwait(&set, &sig), 0);
    ck_assert_int_eq(sig, SIGPIPE);
    ck_assert_int_eq(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
    close(fds[1]);
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
    atomic_bool stop;
    unsigned long sent;
} storm;

static void *storm_main(void *arg)
{
    storm *s = arg;

    while (!atomic_load(&s->stop)) {
        pthread_kill(s->targets[s->sent % 2], SIGUSR1);
        s->sent++;
        sched_yield();
    }
    return NULL;
}

typedef struct writer {
    pthread_t thread;
    int fd, timeout_ms;
    const uint8_t *data;
    size_t total, sent;
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
    negstream__transport_init(&t, w->fd);
    w->rc = negstream__transport_writev_all(&t, iov, 3, w->timeout_ms,
                                            &w->sent, &w->err);
    return NULL;
}

/*
 * A writer thread and the test thread (reading with read_exact) move
 * 'total' bytes while a third thread sends SIGUSR1 to both, over and over.
 * The reader stops half way until 200 signals have been delivered, so the
 * storm certainly hits a writer blocked on a full buffer.
 */
static void eintr_storm(int kind, int timeout_ms, bool nonblocking)
{
    const size_t total = 8 << 20;
    uint8_t *data = pattern(total), *buf = malloc(4099);
    negstream__transport t;
    struct sigaction old;
    negstream_error e;
    size_t got = 0;
    writer w;
    storm s;
    int fds[2], wfd, rfd;

    if (kind == 0)
        sock_pair(fds), wfd = fds[0], rfd = fds[1];
    else if (kind == 1)
        pipe_pair(fds), wfd = fds[1], rfd = fds[0];
    else
        tcp_pair(fds), wfd = fds[0], rfd = fds[1];
    if (nonblocking) {
        set_nonblocking(wfd, true);
        set_nonblocking(rfd, true);
    }
    atomic_store(&usr1_count, 0);
    install(SIGUSR1, on_usr1, &old);

    memset(&w, 0, sizeof(w));
    w.fd = wfd;
    w.timeout_ms = timeout_ms;
    w.data = data;
    w.total = total;
    ck_assert_int_eq(pthread_create(&w.thread, NULL, writer_main, &w), 0);
    memset(&s, 0, sizeof(s));
    atomic_init(&s.stop, false);
    s.targets[0] = w.thread;
    s.targets[1] = pthread_self();
    ck_assert_int_eq(pthread_create(&s.thread, NULL, storm_main, &s), 0);

    negstream__transport_init(&t, rfd);
    while (got < total) {
        size_t n = total - got < 4099 ? total - got : 4099;
        ssize_t k;

        if (got >= total / 2 && got < total / 2 + 4099)
            while (atomic_load(&usr1_count) < 200)
                sched_yield();
        k = negstream__transport_read_exact(&t, buf, n, timeout_ms, &e);
        ck_assert_msg(k == (ssize_t)n, "read_exact: %zd (%s)", k,
                      e.message);
        ck_assert_uint_eq(pattern_check(buf, n, got), n);
        got += n;
    }
    atomic_store(&s.stop, true);
    ck_assert_int_eq(pthread_join(s.thread, NULL), 0);
    ck_assert_int_eq(pthread_join(w.thread, NULL), 0);
    ck_assert_msg(w.rc == 0, "writer: %s", w.err.message);
    ck_assert_uint_eq(w.sent, total);
    ck_assert_int_ge(atomic_load(&usr1_count), 200);
    ck_assert_int_eq(sigaction(SIGUSR1, &old, NULL), 0);
    close(wfd);
    close(rfd);
    free(buf);
    free(data);
}

START_TEST(eintr_storm_socketpair)
{
    eintr_storm(0, -1, false);
    eintr_storm(0, 60000, false);
    eintr_storm(0, -1, true);
}
END_TEST

START_TEST(eintr_storm_pipe)
{
    eintr_storm(1, -1, false);
    eintr_storm(1, 60000, false);
    eintr_storm(1, 60000, true);
}
END_TEST

START_TEST(eintr_storm_tcp)
{
    eintr_storm(2, -1, false);
    eintr_storm(2, 60000, true);
}
END_TEST

/* ---- shutdown ----------------------------------------------------------- */

static void shutdown_wakes_reader(bool tcp, int timeout_ms)
{
    negstream__transport t;
    reader r;
    int fds[2];

    if (tcp)
        tcp_pair(fds);
    else
        sock_pair(fds);
    reader_start(&r, fds[0], 100, 100, false, true, timeout_ms);
    usleep(50 * 1000);           /* likely blocked by now; either way the
                                    read must end at EOF */
    negstream__transport_init(&t, fds[0]);
    negstream__transport_shutdown(&t);
    reader_join(&r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.got, 0);
    close(fds[0]);
    close(fds[1]);
}

START_TEST(shutdown_wakes_blocked_read)
{
    shutdown_wakes_reader(false, -1);
    shutdown_wakes_reader(true, -1);
}
END_TEST

static void shutdown_wakes_writer(bool tcp, int timeout_ms)
{
    const size_t total = 16 << 20;
    uint8_t *data = pattern(total);
    negstream__transport t;
    writer w;
    int fds[2];

    if (tcp)
        tcp_pair(fds);
    else
        sock_pair(fds);
    small_buffers(fds[0], fds[1], 65536);
    memset(&w, 0, sizeof(w));
    w.fd = fds[0];
    w.timeout_ms = timeout_ms;
    w.data = data;
    w.total = total;
    ck_assert_int_eq(pthread_create(&w.thread, NULL, writer_main, &w), 0);
    usleep(50 * 1000);
    negstream__transport_init(&t, fds[0]);
    negstream__transport_shutdown(&t);
    ck_assert_int_eq(pthread_join(w.thread, NULL), 0);
    ck_assert_int_eq(w.rc, -1);
    ck_assert_int_eq(w.err.code, NEGSTREAM_E_IO);
    ck_assert_uint_lt(w.sent, total);
    /* What did go out is intact and complete. */
    ck_assert_uint_eq(drain_check(fds[1]), w.sent);
    close(fds[0]);
    close(fds[1]);
    free(data);
}

START_TEST(shutdown_wakes_blocked_write)
{
    shutdown_wakes_writer(false, -1);
    shutdown_wakes_writer(true, -1);
}
END_TEST

START_TEST(shutdown_wakes_blocked_poll)
{
    /* With a timeout the threads sleep in poll(), not in recv/sendmsg. */
    shutdown_wakes_reader(false, 600000);
    shutdown_wakes_reader(true, 600000);
    shutdown_wakes_writer(false, 600000);
    shutdown_wakes_writer(true, 600000);
}
END_TEST

START_TEST(shutdown_pipe_harmless)
{
    negstream__transport t;
    negstream_error e;
    uint8_t b = 0;
    int fds[2];

    /* Nothing to do on a pipe, and the fd stays open and usable. */
    pipe_pair(fds);
    negstream__transport_init(&t, fds[1]);
    negstream__transport_shutdown(&t);
    ck_assert_int_ge(fcntl(fds[1], F_GETFD), 0);
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    negstream__transport_init(&t, fds[0]);
    ck_assert_int_eq(negstream__transport_read_exact(&t, &b, 1, -1, &e), 1);
    ck_assert_int_eq(b, 'x');
    close(fds[0]);
    close(fds[1]);
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

    tc = tcase_create("write");
    set_timeout(tc);
    tcase_add_test(tc, init_kinds);
    tcase_add_test(tc, writev_many_iovecs_socketpair);
    tcase_add_test(tc, writev_many_iovecs_pipe);
    tcase_add_test(tc, writev_many_iovecs_tcp);
    tcase_add_test(tc, writev_empty);
    tcase_add_test(tc, writev_regular_file);
    tcase_add_test(tc, writev_short_writes_socketpair);
    tcase_add_test(tc, writev_short_writes_tcp);
    tcase_add_test(tc, writev_eagain_waits);
    tcase_add_test(tc, writev_timeout_socketpair);
    tcase_add_test(tc, writev_timeout_pipe);
    tcase_add_test(tc, writev_timeout_tcp);
    suite_add_tcase(s, tc);

    tc = tcase_create("read");
    set_timeout(tc);
    tcase_add_test(tc, read_timeout);
    tcase_add_test(tc, read_exact_eof_midway);
    tcase_add_test(tc, read_some_and_zero);
    tcase_add_test(tc, read_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("signals");
    set_timeout(tc);
    tcase_add_test(tc, peer_closed_no_sigpipe);
    tcase_add_test(tc, peer_closed_no_sigpipe_thread);
    tcase_add_test(tc, pending_sigpipe_left_alone);
    tcase_add_test(tc, eintr_storm_socketpair);
    tcase_add_test(tc, eintr_storm_pipe);
    tcase_add_test(tc, eintr_storm_tcp);
    suite_add_tcase(s, tc);

    tc = tcase_create("shutdown");
    set_timeout(tc);
    tcase_add_test(tc, shutdown_wakes_blocked_read);
    tcase_add_test(tc, shutdown_wakes_blocked_write);
    tcase_add_test(tc, shutdown_wakes_blocked_poll);
    tcase_add_test(tc, shutdown_pipe_harmless);
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
