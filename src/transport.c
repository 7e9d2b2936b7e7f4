/*
 * transport.c - moving bytes on a file descriptor: write-all of a vector,
 * read-exact, read-some.  Knows no GSSAPI and no frames.
 *
 * What every call handles (STYLE.md 4.8-4.9):
 *  - EINTR: retried; a wait interrupted by a signal goes on with the time
 *    that is left.
 *  - Short writes: the vector is advanced and the rest written.
 *  - Non-blocking fds: EAGAIN waits in poll() for the fd to be ready.
 *  - Timeouts (>= 0 ms) bound each wait for the fd to become ready.  On a
 *    blocking fd a plain read/write could sleep past the timeout, so with
 *    a timeout we poll first and then do I/O that cannot block: sockets
 *    get MSG_DONTWAIT, pipes a write of at most PIPE_BUF bytes (which fits
 *    once poll reports POLLOUT).
 *  - SIGPIPE: sockets are written with sendmsg(MSG_NOSIGNAL).  Other fds
 *    (pipes in tests, a tty) are written with writev while SIGPIPE is
 *    blocked in the calling thread only; a SIGPIPE our write raised is
 *    consumed with sigtimedwait before the mask is restored.  The process
 *    disposition of SIGPIPE belongs to the application and is never
 *    touched (rabbitmq-c PR#24).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "transport.h"

#ifndef IOV_MAX
# define IOV_MAX 1024
#endif

/* Without MSG_NOSIGNAL (e.g. older macOS) sockets take the pipe path:
 * writev with SIGPIPE blocked in the thread. */
#if defined(HAVE_DECL_MSG_NOSIGNAL) && HAVE_DECL_MSG_NOSIGNAL
# define USE_SENDMSG 1
#else
# define USE_SENDMSG 0
# define MSG_NOSIGNAL 0
#endif

void negstream__transport_init(negstream__transport *t, int fd)
{
    struct stat st;

    t->fd = fd;
    /* Decided once: fstat cannot fail later in a way that matters, and a
     * socket stays a socket.  An fd fstat rejects (EBADF) is treated as a
     * non-socket; the first I/O then reports the error. */
    t->is_socket = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* The fd's own O_NONBLOCK, read per call: the application may change it
 * between calls.  Unreadable flags count as blocking. */
static bool fd_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl >= 0 && (fl & O_NONBLOCK) != 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Waits until fd is ready for 'events' (POLLIN or POLLOUT) or timeout_ms
 * passes (< 0: forever).  POLLERR/POLLHUP count as ready: the following
 * read or write then reports what happened.  Returns 0, or -1 with err.
 */
static int wait_fd(int fd, short events, int timeout_ms,
                   negstream_error *err)
{
    struct pollfd pfd;
    int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    int left = timeout_ms;

    pfd.fd = fd;
    pfd.events = events;
    for (;;) {
        int rc;

        pfd.revents = 0;
        rc = poll(&pfd, 1, left);
        if (rc > 0)
            return 0;
        if (rc == 0) {
            negstream__err_set(err, NEGSTREAM_E_TIMEOUT,
                               "%s on fd %d timed out after %d ms%s",
                               events == POLLOUT ? "write" : "read", fd,
                               timeout_ms,
                               events == POLLOUT ?
                                   " (is the peer reading?)" :
                                   " (the peer sent nothing)");
            return -1;
        }
        if (errno != EINTR) {
            negstream__err_sys(err, NEGSTREAM_E_IO, errno,
                               "poll on fd %d failed", fd);
            return -1;
        }
        if (timeout_ms >= 0) {
            int64_t rest = deadline - now_ms();

            left = rest > 0 ? (int)rest : 0;
        }
    }
}

/* transport.c: drop 'n' written bytes from the front of the vector.
 * Empty entries at the front are dropped too (n == 0 does just that). */
static void iov_advance(struct iovec **iov, int *cnt, size_t n)
{
    while (*cnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++, (*cnt)--;
    }
    if (*cnt > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/*
 * One write attempt of (a prefix of) the vector; returns what the system
 * call returns, errno intact.  'cap' > 0 limits the bytes written (the
 * PIPE_BUF rule for blocking non-sockets with a timeout); 'dontwait'
 * makes a socket write non-blocking for this call only.
 */
static ssize_t write_once(const negstream__transport *t,
                          const struct iovec *iov, int cnt, size_t cap,
                          bool dontwait)
{
    struct iovec one;

    if (cnt > IOV_MAX)
        cnt = IOV_MAX;
    if (cap > 0) {
        size_t sum = 0;
        int i;

        if (iov[0].iov_len >= cap) {
            one.iov_base = iov[0].iov_base;
            one.iov_len = cap;
            iov = &one;
            cnt = 1;
        } else {
            for (i = 0; i < cnt && sum + iov[i].iov_len <= cap; i++)
                sum += iov[i].iov_len;
            cnt = i;
        }
    }
    if (USE_SENDMSG && t->is_socket) {
        struct msghdr msg;

        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = (struct iovec *)iov;
        msg.msg_iovlen = (size_t)cnt;
        return sendmsg(t->fd, &msg,
                       MSG_NOSIGNAL | (dontwait ? MSG_DONTWAIT : 0));
    }
    return writev(t->fd, iov, cnt);
}

/* The SIGPIPE guard of the writev path: block SIGPIPE in this thread,
 * remembering whether one was already pending (then it is not ours to
 * consume). */
typedef struct sigpipe_guard {
    sigset_t old;
    bool     active, was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g)
{
    sigset_t set, pending;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    g->was_pending = sigpending(&pending) == 0 &&
                     sigismember(&pending, SIGPIPE) == 1;
    g->active = pthread_sigmask(SIG_BLOCK, &set, &g->old) == 0;
}

/* Consumes the SIGPIPE our EPIPE raised (if any) and restores the mask.
 * The zero timeout makes sigtimedwait a poll: it never sleeps. */
static void sigpipe_restore(sigpipe_guard *g, bool got_epipe)
{
    if (!g->active)
        return;
    if (got_epipe && !g->was_pending) {
        static const struct timespec zero = { 0, 0 };
        sigset_t set;

        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    g->active = false;
}

int negstream__transport_writev_all(const negstream__transport *t,
                                    struct iovec *iov, int iovcnt,
                                    int timeout_ms, size_t *sent,
                                    negstream_error *err)
{
    bool use_sendmsg = USE_SENDMSG && t->is_socket;
    /*
     * On a socket the first attempt is a send that cannot block
     * (MSG_DONTWAIT): it does what a blocking send would whenever the
     * socket has room, which is almost always, and then the O_NONBLOCK
     * flag need not be read at all (an fcntl per write, a few per cent of
     * a small write).  Only if something is left is the flag read, and the
     * loop goes on as for any other fd.
     */
    bool probe = use_sendmsg, known = false;
    bool nonblocking = false, poll_first = false, need_wait = false;
    size_t cap = 0;
    bool got_epipe = false;
    sigpipe_guard guard = { .active = false };
    size_t total = 0;
    int rc = -1;

    iov_advance(&iov, &iovcnt, 0);
    if (!use_sendmsg && iovcnt > 0)
        sigpipe_block(&guard);
    while (iovcnt > 0) {
        ssize_t n;

        if (!probe && !known) {
            nonblocking = fd_nonblocking(t->fd);
            /* Blocking fd + timeout: poll first, then I/O that cannot
             * block. */
            poll_first = !nonblocking && timeout_ms >= 0;
            cap = poll_first && !use_sendmsg ? PIPE_BUF : 0;
            need_wait = need_wait || poll_first;
            known = true;
        }
        if (need_wait && wait_fd(t->fd, POLLOUT, timeout_ms, err) < 0)
            goto out;
        n = write_once(t, iov, iovcnt, cap, probe || poll_first);
        probe = false;
        if (n > 0) {
            total += (size_t)n;
            iov_advance(&iov, &iovcnt, (size_t)n);
            need_wait = poll_first;
            continue;
        }
        if (n == 0) {
            /* Only possible for a non-empty vector if the fd is broken
             * (e.g. a full device); looping would spin. */
            negstream__err_set(err, NEGSTREAM_E_IO,
                               "write to fd %d wrote nothing", t->fd);
            goto out;
        }
        if (errno == EINTR) {
            need_wait = poll_first;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            need_wait = true;
            continue;
        }
        if (errno == EPIPE || errno == ECONNRESET) {
            got_epipe = errno == EPIPE;
            negstream__err_sys(err, NEGSTREAM_E_IO, errno,
                               "write to fd %d: peer closed the connection",
                               t->fd);
        } else {
            negstream__err_sys(err, NEGSTREAM_E_IO, errno,
                               "write to fd %d failed", t->fd);
        }
        goto out;
    }
    negstream__err_ok(err);
    rc = 0;
out:
    sigpipe_restore(&guard, got_epipe);
    if (sent != NULL)
        *sent = total;
    return rc;
}

static void read_failed(const negstream__transport *t, negstream_error *err)
{
    if (errno == ECONNRESET)
        negstream__err_sys(err, NEGSTREAM_E_IO, errno,
                           "read from fd %d: peer closed the connection",
                           t->fd);
    else
        negstream__err_sys(err, NEGSTREAM_E_IO, errno,
                           "read from fd %d failed", t->fd);
}

/*
 * A socket read that cannot block, tried before the fd's O_NONBLOCK is
 * read (see writev_all): returns > 0 bytes, 0 at EOF, -1 with err on a
 * failure, or -2 if nothing is there yet (EAGAIN, EINTR): then the caller
 * goes the ordinary way.  Not for other fds: a read of a pipe cannot be
 * made non-blocking for one call.
 */
static ssize_t read_probe(const negstream__transport *t, void *buf, size_t n,
                          negstream_error *err)
{
    ssize_t r;

    if (!t->is_socket)
        return -2;
    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    r = recv(t->fd, buf, n, MSG_DONTWAIT);
    if (r >= 0)
        return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return -2;
    read_failed(t, err);
    return -1;
}

/* One read of 1..n bytes (n > 0): returns > 0, 0 at EOF, or -1 with err.
 * nonblocking is the fd's O_NONBLOCK, read once by the caller. */
static ssize_t read_once(const negstream__transport *t, void *buf, size_t n,
                         int timeout_ms, bool nonblocking,
                         negstream_error *err)
{
    bool poll_first = !nonblocking && timeout_ms >= 0;
    bool need_wait = poll_first;

    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    for (;;) {
        ssize_t r;

        if (need_wait && wait_fd(t->fd, POLLIN, timeout_ms, err) < 0)
            return -1;
        if (t->is_socket)
            r = recv(t->fd, buf, n, poll_first ? MSG_DONTWAIT : 0);
        else
            r = read(t->fd, buf, n);
        if (r >= 0)
            return r;
        if (errno == EINTR) {
            need_wait = poll_first;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            need_wait = true;
            continue;
        }
        read_failed(t, err);
        return -1;
    }
}

ssize_t negstream__transport_read_exact(const negstream__transport *t,
                                        void *buf, size_t n, int timeout_ms,
                                        negstream_error *err)
{
    bool nonblocking = false;
    size_t got = 0;

    if (n > SSIZE_MAX) {
        negstream__err_sys(err, NEGSTREAM_E_IO, EINVAL,
                           "read of %zu bytes from fd %d", n, t->fd);
        return -1;
    }
    if (n > 0) {
        ssize_t r = read_probe(t, buf, n, err);

        if (r == -1)
            return -1;
        if (r == 0)
            return 0;               /* EOF: the caller judges it */
        if (r > 0)
            got = (size_t)r;
    }
    if (got < n)
        nonblocking = fd_nonblocking(t->fd);
    while (got < n) {
        ssize_t r = read_once(t, (char *)buf + got, n - got, timeout_ms,
                              nonblocking, err);

        if (r < 0)
            return -1;
        if (r == 0)
            return (ssize_t)got;    /* EOF: the caller judges it */
        got += (size_t)r;
    }
    negstream__err_ok(err);
    return (ssize_t)got;
}

ssize_t negstream__transport_read_some(const negstream__transport *t,
                                       void *buf, size_t n, int timeout_ms,
                                       negstream_error *err)
{
    ssize_t r;

    if (n == 0) {
        negstream__err_ok(err);
        return 0;
    }
    r = read_probe(t, buf, n, err);
    if (r == -2)
        r = read_once(t, buf, n, timeout_ms, fd_nonblocking(t->fd), err);
    if (r >= 0)
        negstream__err_ok(err);
    return r;
}

void negstream__transport_shutdown(const negstream__transport *t)
{
    /*
     * On a socket, shutdown(SHUT_RDWR) wakes a thread blocked in recv
     * (EOF) or sendmsg (EPIPE) or poll, and keeps the fd number taken so
     * it cannot be reused under that thread.  For any other fd there is
     * nothing safe: close() would free the number while a worker still
     * uses it, and dup2() of /dev/null over it would change an fd the
     * application may still own (leave_inner_open).  A worker blocked on
     * a pipe wakes only when the peer acts or its timeout expires.
     * Errors (ENOTCONN: never connected or already shut) are harmless.
     */
    if (t->is_socket)
        (void)shutdown(t->fd, SHUT_RDWR);
}
