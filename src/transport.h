/*
 * transport.h - moving bytes on a file descriptor.  Knows no GSSAPI and no
 * frames.  Handles EINTR, short writes, EAGAIN on non-blocking fds (poll),
 * timeouts, and SIGPIPE (MSG_NOSIGNAL on sockets; on other fds SIGPIPE is
 * blocked in the calling thread and a pending one consumed).
 */
#ifndef NEGSTREAM_TRANSPORT_H
#define NEGSTREAM_TRANSPORT_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>
#include "negstream.h"

typedef struct negstream__transport {
    int  fd;
    bool is_socket;      /* decided once, by negstream__transport_init */
} negstream__transport;

void negstream__transport_init(negstream__transport *t, int fd);

/* Writes every byte described by iov.  The vector is modified (pass a
 * private copy).  timeout_ms < 0 waits forever; it bounds each wait for
 * the fd to become writable.  Returns 0, or -1 with err: NEGSTREAM_E_IO
 * (errno, "peer closed the connection" for EPIPE/ECONNRESET) or
 * NEGSTREAM_E_TIMEOUT.  *sent (may be NULL) gets the bytes written, also
 * on failure. */
int negstream__transport_writev_all(const negstream__transport *t,
                                    struct iovec *iov, int iovcnt,
                                    int timeout_ms, size_t *sent,
                                    negstream_error *err);

/* Reads exactly n bytes.  Returns n; or the count read before EOF (< n,
 * err untouched: the caller decides whether EOF there is clean); or -1
 * with err (IO or TIMEOUT). */
ssize_t negstream__transport_read_exact(const negstream__transport *t,
                                        void *buf, size_t n, int timeout_ms,
                                        negstream_error *err);

/* Reads 1..n bytes (0 at EOF; n == 0 returns 0 at once), or -1 with err. */
ssize_t negstream__transport_read_some(const negstream__transport *t,
                                       void *buf, size_t n, int timeout_ms,
                                       negstream_error *err);

/* Wakes any thread blocked on the fd (shutdown(SHUT_RDWR) on a socket).
 * Does not close the fd, so its number cannot be reused under a worker. */
void negstream__transport_shutdown(const negstream__transport *t);

#endif
