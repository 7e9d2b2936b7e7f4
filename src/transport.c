/*
 * transport.c - the fd transport (see transport.h): non-blocking send and
 * receive on a duplicate of the caller's fd, the send-all helper, and the
 * one place a synchronous call blocks the calling thread (poll).
 *
 * What every call handles:
 *  - Never blocking: sockets get MSG_DONTWAIT per call (the fd's own
 *    O_NONBLOCK flag is the application's and is never changed); other
 *    fds (pipes, ttys) are polled with a zero timeout first, then read
 *    (which returns what is there) or written with at most PIPE_BUF bytes
 *    (which fit once poll reports POLLOUT).
 *  - EINTR: retried.  Short writes: the caller keeps an offset.
 *  - SIGPIPE: sockets are written with sendmsg(MSG_NOSIGNAL).  Other fds
 *    are written with writev while SIGPIPE is blocked in the calling
 *    thread only; a SIGPIPE our write raised is consumed with sigtimedwait
 *    before the mask is restored.  The process disposition of SIGPIPE
 *    belongs to the application and is never touched (rabbitmq-c PR#24).
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
#include <unistd.h>

#include "error.h"
#include "transport.h"
#include "util.h"

#ifndef IOV_MAX
# define IOV_MAX 1024
#endif

/* The most entries send_all takes (a frame is 1, a handshake message 2). */
#define SEND_ALL_MAX_IOV 8

#if defined(HAVE_DECL_MSG_NOSIGNAL) && HAVE_DECL_MSG_NOSIGNAL
# define HAVE_NOSIGNAL 1
#else
# define HAVE_NOSIGNAL 0
# define MSG_NOSIGNAL 0
#endif

/* ---- SIGPIPE for writes that cannot say MSG_NOSIGNAL ------------------- */

/* Block SIGPIPE in this thread, remembering whether one was already
 * pending (then it is not ours to consume). */
void negstream__sigpipe_block(negstream__sigpipe_guard *g)
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
void negstream__sigpipe_restore(negstream__sigpipe_guard *g,
                                bool got_epipe)
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

/* ---- the fd transport --------------------------------------------------- */

/* For a non-socket: is the fd ready for 'events' right now?  1 yes, 0 no,
 * -1 with errno. */
static int ready_now(int fd, short events)
{
    struct pollfd pfd;
    int rc;

    pfd.fd = fd;
    pfd.events = events;
    do {
        pfd.revents = 0;
        rc = poll(&pfd, 1, 0);
    } while (rc < 0 && errno == EINTR);
    if (rc > 0 && (pfd.revents & POLLNVAL)) {
        errno = EBADF;
        return -1;
    }
    return rc;
}

static void io_failed(const negstream__transport *t, negstream_error *err,
                      const char *op, int errnum)
{
    if (errnum == EPIPE || errnum == ECONNRESET)
        negstream__err_sys(err, NEGSTREAM_E_IO, errnum,
                           "%s fd %d: peer closed the connection", op,
                           t->fd);
    else
        negstream__err_sys(err, NEGSTREAM_E_IO, errnum, "%s fd %d failed",
                           op, t->fd);
}

static ssize_t fd_recv(negstream__transport *t, void *buf, size_t n,
                       negstream_error *err)
{
    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    for (;;) {
        ssize_t r;

        if (t->is_socket) {
            r = recv(t->fd, buf, n, MSG_DONTWAIT);
        } else {
            int ready = ready_now(t->fd, POLLIN);

            if (ready == 0)
                return NEGSTREAM__AGAIN;
            r = ready < 0 ? -1 : read(t->fd, buf, n);
        }
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return NEGSTREAM__AGAIN;
        io_failed(t, err, "read from", errno);
        return -1;
    }
}

/* At most PIPE_BUF bytes of the vector's front, in *one (or the vector's
 * own first entries): what a blocking non-socket takes without blocking
 * once poll says POLLOUT. */
static int cap_iov(const struct iovec *iov, int cnt, struct iovec *one,
                   const struct iovec **out)
{
    size_t sum = 0;
    int i;

    /* Empty entries in front carry nothing; left in, they would be all
     * that is written when the first non-empty one exceeds PIPE_BUF. */
    while (cnt > 1 && iov[0].iov_len == 0)
        iov++, cnt--;
    if (iov[0].iov_len >= PIPE_BUF) {
        one->iov_base = iov[0].iov_base;
        one->iov_len = PIPE_BUF;
        *out = one;
        return 1;
    }
    for (i = 0; i < cnt && sum + iov[i].iov_len <= PIPE_BUF; i++)
        sum += iov[i].iov_len;
    *out = iov;
    return i;
}

static ssize_t fd_send(negstream__transport *t, const struct iovec *iov,
                       int cnt, negstream_error *err)
{
    negstream__sigpipe_guard guard = { .active = false };
    bool guarded = !t->is_socket || !HAVE_NOSIGNAL;
    ssize_t r;
    int errnum = 0;

    if (cnt > IOV_MAX)
        cnt = IOV_MAX;
    if (guarded)
        negstream__sigpipe_block(&guard);
    for (;;) {
        if (t->is_socket) {
            struct msghdr msg;

            memset(&msg, 0, sizeof(msg));
            msg.msg_iov = (struct iovec *)iov;
            msg.msg_iovlen = (size_t)cnt;
            r = sendmsg(t->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            const struct iovec *v;
            struct iovec one;
            int ready = ready_now(t->fd, POLLOUT), n;

            if (ready == 0) {
                r = NEGSTREAM__AGAIN;
                break;
            }
            n = cap_iov(iov, cnt, &one, &v);
            r = ready < 0 ? -1 : writev(t->fd, v, n);
        }
        if (r > 0)
            break;
        if (r == 0) {
            /* Only for a broken fd (e.g. a full device): looping would
             * spin. */
            negstream__err_set(err, NEGSTREAM_E_IO,
                               "write to fd %d wrote nothing", t->fd);
            r = -1;
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            r = NEGSTREAM__AGAIN;
            break;
        }
        errnum = errno;
        io_failed(t, err, "write to", errnum);
        break;
    }
    if (guarded)
        negstream__sigpipe_restore(&guard, errnum == EPIPE);
    return r;
}

static int fd_wait(negstream__transport *t, int dir, short *events)
{
    *events = dir == NEGSTREAM__DIR_WRITE ? POLLOUT : POLLIN;
    return t->fd;
}

static void fd_close(negstream__transport *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

static const negstream__transport_ops fd_ops = {
    fd_recv, fd_send, fd_wait, fd_close, NULL
};

int negstream__transport_fd(negstream__transport *t, int fd,
                            negstream_error *err)
{
    struct stat st;
    int dup_fd;

    memset(t, 0, sizeof(*t));
    t->fd = -1;
    t->fd_out = -1;
    dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
        int e = errno;

        if (e == EBADF)
            negstream__err_sys(err, NEGSTREAM_E_ARGUMENT, e,
                               "fd %d is not open", fd);
        else
            negstream__err_sys(err, NEGSTREAM_E_IO, e,
                               "cannot duplicate fd %d (the stream works "
                               "on its own copy)", fd);
        return -1;
    }
    t->ops = &fd_ops;
    t->fd = dup_fd;
    /* Decided once: a socket stays a socket. */
    t->is_socket = fstat(dup_fd, &st) == 0 && S_ISSOCK(st.st_mode);
    return 0;
}

/* ---- helpers over any transport ----------------------------------------- */

int negstream__transport_send_all(negstream__transport *t,
                                  const struct iovec *iov, int cnt,
                                  size_t *off, negstream_error *err)
{
    for (;;) {
        struct iovec v[SEND_ALL_MAX_IOV];
        size_t skip = *off;
        ssize_t n;
        int i, k = 0;

        /* The part of the vector not sent yet. */
        for (i = 0; i < cnt && k < SEND_ALL_MAX_IOV; i++) {
            if (skip >= iov[i].iov_len) {
                skip -= iov[i].iov_len;
                continue;
            }
            v[k].iov_base = (char *)iov[i].iov_base + skip;
            v[k].iov_len = iov[i].iov_len - skip;
            skip = 0;
            k++;
        }
        if (k == 0)
            return 0;
        n = t->ops->send(t, v, k, err);
        if (n < 0)
            return (int)n;          /* NEGSTREAM__AGAIN or -1 */
        *off += (size_t)n;
    }
}

int negstream__transport_block(negstream__transport *t, int dir,
                               int wake_fd, int64_t deadline,
                               const char *what, negstream_error *err)
{
    struct pollfd pfd[2];
    nfds_t n = 1;

    pfd[0].fd = t->ops->wait(t, dir, &pfd[0].events);
    if (wake_fd >= 0) {
        pfd[1].fd = wake_fd;
        pfd[1].events = POLLIN;
        n = 2;
    }
    for (;;) {
        int rc;

        pfd[0].revents = pfd[1].revents = 0;
        rc = poll(pfd, n, negstream__ms_left(deadline));
        if (rc > 0) {
            if (n == 2 && pfd[1].revents != 0)
                return 0;
            /* POLLERR / POLLHUP / POLLNVAL count as ready: the next call
             * reports what happened. */
            return 1;
        }
        if (rc == 0) {
            negstream__err_set(err, NEGSTREAM_E_TIMEOUT, "%s timed out",
                               what);
            return -1;
        }
        if (errno != EINTR) {
            negstream__err_sys(err, NEGSTREAM_E_IO, errno,
                               "poll on fd %d failed", pfd[0].fd);
            return -1;
        }
    }
}
