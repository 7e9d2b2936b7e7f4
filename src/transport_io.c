/*
 * transport_io.c - the application's transport (negstream_new_io(3))
 * behind the internal table of transport.h: one I/O path, whatever the
 * transport.
 *
 * What this file adds between the steps and the application's functions:
 *  - "Would block": -1 with EAGAIN/EWOULDBLOCK (the call's own
 *    direction), NEGSTREAM_IO_WANT_READ or NEGSTREAM_IO_WANT_WRITE become
 *    NEGSTREAM__AGAIN, and the readiness asked for is remembered per
 *    direction, for wait: POLLIN on the read fd, POLLOUT on the write fd.
 *    A TLS read that must write first thus waits for POLLOUT.  The
 *    remembered value is written and read by the one operation of that
 *    direction (a read, or the authentication; a write), on one thread at
 *    a time: no lock.
 *  - What is polled: duplicates (F_DUPFD_CLOEXEC) of read_fd and write_fd
 *    made here, so that the poller registers fds of the library's own,
 *    whatever the application does with its numbers, and so that two
 *    streams whose transports share a wake-up fd are no clash for epoll.
 *    They are fixed for the stream's life (the transport must keep its I/O
 *    on the same connection).
 *  - Serialisation: a read and a write may run at once on two workers (one
 *    read and one write may be pending), and an OpenSSL SSL * is not safe
 *    for a concurrent SSL_read and SSL_write.  Unless the table says
 *    NEGSTREAM_IO_CONCURRENT, a leaf mutex (st->mu) is held around each
 *    call of read, write and shutdown, and around nothing else: those
 *    calls never wait, so it is never held for long, and no other library
 *    lock is ever held with it (docs/internals.md, the lock order).
 *  - Misbehaviour is an I/O error with a message saying what the
 *    transport did (more bytes than asked, 0 from a write, a return value
 *    that is none of the documented ones), never a crash or a spin.
 *  - EINTR is retried.
 *  - SIGPIPE: the application's functions may write to a socket or pipe
 *    without MSG_NOSIGNAL (OpenSSL's socket BIO writes with write(2), and
 *    SSL_read may write too), so each call runs with SIGPIPE blocked in
 *    the calling thread and a SIGPIPE it raised is consumed, as for the
 *    fd transport's pipes (transport.c): the library raises none.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "options.h"
#include "transport_io.h"

/* Every flag this library knows. */
#define IO_KNOWN_FLAGS NEGSTREAM_IO_CONCURRENT

typedef struct io_state {
    negstream_io    io;         /* the caller's table, copied */
    void           *ctx;        /* the caller's, borrowed until close */
    bool            serial;     /* not CONCURRENT: mu around every call */
    pthread_mutex_t mu;         /* leaf: around read, write, shutdown */
    short           want[2];    /* per direction: POLLIN or POLLOUT */
} io_state;

/* Before and after each call of the application's read, write or
 * shutdown: the lock (unless CONCURRENT) and SIGPIPE blocked. */
static void io_enter(io_state *st, negstream__sigpipe_guard *g)
{
    negstream__sigpipe_block(g);
    if (st->serial)
        pthread_mutex_lock(&st->mu);
}

static void io_leave(io_state *st, negstream__sigpipe_guard *g)
{
    if (st->serial)
        pthread_mutex_unlock(&st->mu);
    negstream__sigpipe_restore(g, true);
}

/*
 * What one call of the application's read (dir READ) or write returned:
 * r with errno e, for a call of n bytes.  Returns the count, 0 (end of
 * stream, read only), NEGSTREAM__AGAIN (the readiness needed is kept for
 * wait), or -1 with err.
 */
static ssize_t io_result(io_state *st, int dir, ssize_t r, int e, size_t n,
                         negstream_error *err)
{
    const char *what = dir == NEGSTREAM__DIR_READ ? "read" : "write";

    if (r > 0 && (size_t)r <= n)
        return r;
    if (r == 0 && dir == NEGSTREAM__DIR_READ)
        return 0;
    if (r == NEGSTREAM_IO_WANT_READ || r == NEGSTREAM_IO_WANT_WRITE ||
        (r == -1 && (e == EAGAIN || e == EWOULDBLOCK))) {
        if (r == -1)
            st->want[dir] = dir == NEGSTREAM__DIR_READ ? POLLIN : POLLOUT;
        else
            st->want[dir] = r == NEGSTREAM_IO_WANT_READ ? POLLIN : POLLOUT;
        return NEGSTREAM__AGAIN;
    }
    if (r == -1 && (e == EPIPE || e == ECONNRESET))
        negstream__err_sys(err, NEGSTREAM_E_IO, e, "the transport's %s "
                           "failed: peer closed the connection", what);
    else if (r == -1 && e != 0)
        negstream__err_sys(err, NEGSTREAM_E_IO, e, "the transport's %s "
                           "failed", what);
    else if (r == -1)
        negstream__err_set(err, NEGSTREAM_E_IO, "the transport's %s "
                           "failed (returned -1 without setting errno)",
                           what);
    else if (r == 0)
        negstream__err_set(err, NEGSTREAM_E_IO, "the transport's write "
                           "returned 0 for %zu bytes (a write sends at "
                           "least one byte or says it would block)", n);
    else if (r > 0)
        negstream__err_set(err, NEGSTREAM_E_IO, "the transport's %s "
                           "returned %zd for %zu bytes (more than asked)",
                           what, r, n);
    else
        negstream__err_set(err, NEGSTREAM_E_IO, "the transport's %s "
                           "returned %zd (expected a count, -1 with errno, "
                           "NEGSTREAM_IO_WANT_READ or "
                           "NEGSTREAM_IO_WANT_WRITE)", what, r);
    return -1;
}

static ssize_t io_recv(negstream__transport *t, void *buf, size_t n,
                       negstream_error *err)
{
    io_state *st = t->ctx;
    negstream__sigpipe_guard g;
    ssize_t r;
    int e;

    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    do {
        io_enter(st, &g);
        errno = 0;
        r = st->io.read(st->ctx, buf, n);
        e = errno;
        io_leave(st, &g);
    } while (r == -1 && e == EINTR);
    return io_result(st, NEGSTREAM__DIR_READ, r, e, n, err);
}

/* Writes from the first non-empty entry of the vector (the application's
 * write takes one buffer); send_all calls again for the rest.  After
 * "would block" the next call starts at the same byte with the same
 * length, as SSL_write requires: send_all's offset does not move. */
static ssize_t io_send(negstream__transport *t, const struct iovec *iov,
                       int cnt, negstream_error *err)
{
    io_state *st = t->ctx;
    negstream__sigpipe_guard g;
    size_t n;
    ssize_t r;
    int e, i = 0;

    while (i < cnt - 1 && iov[i].iov_len == 0)
        i++;
    n = iov[i].iov_len;
    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    do {
        io_enter(st, &g);
        errno = 0;
        r = st->io.write(st->ctx, iov[i].iov_base, n);
        e = errno;
        io_leave(st, &g);
    } while (r == -1 && e == EINTR);
    return io_result(st, NEGSTREAM__DIR_WRITE, r, e, n, err);
}

static int io_wait(negstream__transport *t, int dir, short *events)
{
    io_state *st = t->ctx;

    *events = st->want[dir];
    return *events == POLLOUT && t->fd_out >= 0 ? t->fd_out : t->fd;
}

static void io_shutdown(negstream__transport *t)
{
    io_state *st = t->ctx;
    negstream__sigpipe_guard g;

    if (st->io.shutdown == NULL)
        return;
    io_enter(st, &g);
    st->io.shutdown(st->ctx);
    io_leave(st, &g);
}

/* No call can run any more (transport.h): the library's duplicates go
 * first, then the application's close, then our state. */
static void io_close(negstream__transport *t)
{
    io_state *st = t->ctx;

    if (t->fd >= 0)
        close(t->fd);
    if (t->fd_out >= 0)
        close(t->fd_out);
    t->fd = t->fd_out = -1;
    t->ctx = NULL;
    st->io.close(st->ctx);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

static const negstream__transport_ops io_ops = {
    io_recv, io_send, io_wait, io_close, io_shutdown
};

/* The duplicate of one of the table's fds; -1 with err. */
static int dup_fd(int fd, const char *field, negstream_error *err)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);

    if (d >= 0)
        return d;
    if (errno == EBADF)
        negstream__err_sys(err, NEGSTREAM_E_ARGUMENT, errno,
                           "io->%s %d is not open", field, fd);
    else
        negstream__err_sys(err, NEGSTREAM_E_IO, errno,
                           "cannot duplicate io->%s %d (the stream polls "
                           "its own copy)", field, fd);
    return -1;
}

/* The table's fields, in the order they are declared. */
static int check_table(const negstream_io *io, negstream_error *err)
{
    if ((io->flags & ~(uint32_t)IO_KNOWN_FLAGS) != 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "io->flags has unknown bits 0x%x (this "
                           "libnegstream knows 0x%x)",
                           (unsigned)(io->flags & ~(uint32_t)IO_KNOWN_FLAGS),
                           (unsigned)IO_KNOWN_FLAGS);
        return -1;
    }
    if (io->read_fd < 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "io->read_fd %d is not a file descriptor (the "
                           "stream polls it when the transport would "
                           "block)", io->read_fd);
        return -1;
    }
    if (io->write_fd < -1) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "io->write_fd %d is not a file descriptor (-1: "
                           "the same as read_fd)", io->write_fd);
        return -1;
    }
    if (io->read == NULL || io->write == NULL || io->close == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "io->%s is NULL (read, write and close are "
                           "required)", io->read == NULL ? "read" :
                           io->write == NULL ? "write" : "close");
        return -1;
    }
    return 0;
}

int negstream__transport_io(negstream__transport *t, const negstream_io *io,
                            void *ctx, negstream_error *err)
{
    io_state *st;
    int rc = -1;

    memset(t, 0, sizeof(*t));
    t->fd = t->fd_out = -1;
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory for a custom transport");
        return -1;
    }
    if (negstream__io_import(&st->io, io, err) < 0 ||
        check_table(&st->io, err) < 0)
        goto out;
    t->fd = dup_fd(st->io.read_fd, "read_fd", err);
    if (t->fd < 0)
        goto out;
    if (st->io.write_fd >= 0 && st->io.write_fd != st->io.read_fd) {
        t->fd_out = dup_fd(st->io.write_fd, "write_fd", err);
        if (t->fd_out < 0)
            goto out;
    }
    st->ctx = ctx;
    st->serial = (st->io.flags & NEGSTREAM_IO_CONCURRENT) == 0;
    st->want[NEGSTREAM__DIR_READ] = POLLIN;
    st->want[NEGSTREAM__DIR_WRITE] = POLLOUT;
    pthread_mutex_init(&st->mu, NULL);
    t->ops = &io_ops;
    t->ctx = st;
    negstream__err_ok(err);
    rc = 0;
out:
    if (rc < 0) {
        if (t->fd >= 0)
            close(t->fd);
        t->fd = -1;
        free(st);
    }
    return rc;
}
