/*
 * transport.h - moving bytes, without ever blocking: a table of functions
 * (curl's connection filters are the model) and the one implementation the
 * library has for a file descriptor.  Knows no GSSAPI and no frames.
 *
 * Every call either moves bytes, or says NEGSTREAM__AGAIN ("would block")
 * and, through wait, which fd to poll and for what, so that the caller can
 * park the operation with the poller (asynchronous) or poll itself
 * (synchronous).  A transport whose read may need the fd to be writable
 * (TLS) says so there.  wait returns one of at most two fds (fd, fd_out),
 * the same ones for the transport's whole life: the stream registers each
 * with the poller once.  The other implementation, the application's
 * functions of negstream_new_io(3), is in transport_io.c.
 *
 * The fd transport works on a duplicate of the caller's fd, made at
 * creation (F_DUPFD_CLOEXEC): after negstream_close the library never
 * touches the caller's fd number again, and the duplicate is closed once
 * no I/O can run on it any more.  It handles EINTR (retried), SIGPIPE
 * (MSG_NOSIGNAL on sockets; on other fds SIGPIPE is blocked in the calling
 * thread and one our write raised is consumed), and fds that cannot be
 * made non-blocking per call (pipes: poll with a zero timeout first, then
 * read what is there or write at most PIPE_BUF bytes, which fit once poll
 * says POLLOUT).  The fd's own O_NONBLOCK flag is never changed: it
 * belongs to the application.  Other character devices (a tty) take the
 * pipe path, but a tty may report POLLOUT and still block a write of
 * PIPE_BUF bytes while nobody drains it; negstream_new(3) says so.
 */
#ifndef NEGSTREAM_TRANSPORT_H
#define NEGSTREAM_TRANSPORT_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include "negstream.h"

/* Returned by recv and send when nothing can move now. */
#define NEGSTREAM__AGAIN (-2)

/* Directions, for wait. */
#define NEGSTREAM__DIR_READ  0
#define NEGSTREAM__DIR_WRITE 1

typedef struct negstream__transport negstream__transport;

typedef struct negstream__transport_ops {
    /* Reads 1..n bytes (n > 0): > 0, 0 at end of stream, NEGSTREAM__AGAIN,
     * or -1 with err (NEGSTREAM_E_IO, errno). */
    ssize_t (*recv)(negstream__transport *t, void *buf, size_t n,
                    negstream_error *err);
    /* Writes a prefix of the vector (total > 0): the count written (> 0),
     * NEGSTREAM__AGAIN, or -1 with err. */
    ssize_t (*send)(negstream__transport *t, const struct iovec *iov,
                    int cnt, negstream_error *err);
    /* After AGAIN in direction dir: the fd to poll and the events
     * (POLLIN / POLLOUT) that would let that direction go on. */
    int     (*wait)(negstream__transport *t, int dir, short *events);
    /* No more I/O will be done: release the transport's resources.
     * Called without any library lock (a custom transport's close is the
     * application's code). */
    void    (*close)(negstream__transport *t);
    /* Optional (NULL: nothing to do): negstream_close's end of the
     * connection, once, before close and without any library lock; a
     * step still running may call recv or send after it. */
    void    (*shutdown)(negstream__transport *t);
} negstream__transport_ops;

struct negstream__transport {
    const negstream__transport_ops *ops;
    int   fd;             /* the fd wait returns (the fd transport: our
                             duplicate of the caller's; -1: closed) */
    int   fd_out;         /* a second fd wait may return (a custom
                             transport's write side), or -1; both are
                             fixed for the transport's life */
    bool  is_socket;      /* decided once, at creation */
    void *ctx;            /* other transports: their own state */
};

/*
 * SIGPIPE around a write that cannot say MSG_NOSIGNAL (the fd transport
 * on a pipe, a custom transport's functions): blocked in the calling
 * thread only, and a SIGPIPE the write raised is consumed before the mask
 * is restored (got_epipe: one may be pending; one that was pending before
 * is left alone).  The process disposition is never touched.
 */
typedef struct negstream__sigpipe_guard {
    sigset_t old;
    bool     active, was_pending;
} negstream__sigpipe_guard;

void negstream__sigpipe_block(negstream__sigpipe_guard *g);
void negstream__sigpipe_restore(negstream__sigpipe_guard *g,
                                bool got_epipe);

/*
 * The fd transport on a duplicate of fd (F_DUPFD_CLOEXEC).  Returns 0, or
 * -1 with err (NEGSTREAM_E_ARGUMENT: fd not open; NEGSTREAM_E_IO: no fd
 * left for the duplicate, EMFILE).
 */
int negstream__transport_fd(negstream__transport *t, int fd,
                            negstream_error *err);

/*
 * Sends the whole vector, from its start; *off counts the bytes of it
 * already sent by earlier calls and is advanced.  Returns 0 once all is
 * sent, NEGSTREAM__AGAIN, or -1 with err.  The vector is not modified.
 */
int negstream__transport_send_all(negstream__transport *t,
                                  const struct iovec *iov, int cnt,
                                  size_t *off, negstream_error *err);

/*
 * Blocks the calling thread (synchronous calls only) until direction dir
 * can go on, wake_fd (>= 0) becomes readable, or deadline
 * (CLOCK_MONOTONIC ms, -1: none) passes.  Returns 1 (ready), 0 (woken
 * through wake_fd), or -1 with err (NEGSTREAM_E_TIMEOUT: 'what' says
 * which operation; NEGSTREAM_E_IO: poll failed).
 */
int negstream__transport_block(negstream__transport *t, int dir,
                               int wake_fd, int64_t deadline,
                               const char *what, negstream_error *err);

#endif
