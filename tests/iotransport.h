/*
 * iotransport.h - custom transports for the tests (negstream_new_io(3)):
 * over a socket (optionally in small pieces with "would block" between),
 * over a pair of pipes (a read fd and a write fd), and in memory (one
 * byte or "would block" per call).  Every context starts with tio_hooks:
 * counters of what the library called, injected failures, and a check
 * that a serialised transport is never entered twice at once.
 *
 * No Check here (the fuzz targets use it too): a set-up failure aborts.
 */
#ifndef NEGSTREAM_IOTRANSPORT_H
#define NEGSTREAM_IOTRANSPORT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include "negstream.h"

typedef struct tio_hooks {
    atomic_int fail_read;       /* errno for the next read (0: none) */
    atomic_int fail_write;      /* errno for the next write (0: none) */
    atomic_int bad_read;        /* != 0: the next read returns this */
    atomic_int bad_write;       /* != 0: the next write returns this
                                   (memory only; TIO_BAD_ZERO: 0,
                                   TIO_BAD_MORE: len + 1) */
    atomic_int reads, writes;   /* calls */
    atomic_int would_blocks;    /* "would block" answers given */
    atomic_int want_write_reads;/* reads answered NEGSTREAM_IO_WANT_WRITE */
    atomic_int shutdowns, closes;
    atomic_int after_close;     /* calls after close (must stay 0) */
    atomic_int after_shutdown;  /* reads/writes after shutdown */
    atomic_int inside;          /* calls running now */
    atomic_int overlaps;        /* a call began while another ran */
    atomic_long close_tid;      /* the thread that called close */
    bool       free_on_close;   /* close frees the context */
    /* The stream's lock, if the test sets it: shutdown and close check
     * that it is not held by the calling thread (a trylock that still
     * fails after 2 s), and count it in under_lock. */
    pthread_mutex_t *lib_lock;
    atomic_int under_lock;
} tio_hooks;

/* bad_write values for what 0 cannot say */
#define TIO_BAD_ZERO (1 << 29)
#define TIO_BAD_MORE (1 << 30)

/* The hooks of any context made here. */
#define TIO_HOOKS(ctx) ((tio_hooks *)(ctx))

/*
 * A transport over a connected socket (owned: close closes it), writing
 * with MSG_NOSIGNAL, never blocking (MSG_DONTWAIT).  piece > 0: a read
 * returns at most piece bytes; wb_every > 0: every wb_every-th read and
 * write first says "would block" (-1, EAGAIN) although the socket may be
 * ready.  shutdown: shutdown(2) both ways.  Fills *io; returns the ctx.
 */
void *tio_socket_new(int fd, size_t piece, unsigned wb_every,
                     negstream_io *io);

/*
 * Two ends joined by two new pipes (O_NONBLOCK): *a reads what *b writes
 * and the other way round; read_fd and write_fd differ, and the table
 * says NEGSTREAM_IO_CONCURRENT (the pipes are independent).  A write to a
 * pipe whose reader is gone raises SIGPIPE: the library's guard around
 * the call (transport_io.c) consumes it.
 */
void tio_pipe_pair(negstream_io *ioa, void **a, negstream_io *iob,
                   void **b);

/*
 * Two ends joined in memory.  Each read or write moves at most 'piece'
 * bytes and every other call says "would block" first, in every form the
 * contract has: -1 with EAGAIN or EWOULDBLOCK, NEGSTREAM_IO_WANT_READ,
 * and, for reads, NEGSTREAM_IO_WANT_WRITE (a TLS read that must write
 * first): deterministic, so every step of a handshake and of a frame
 * parks and resumes.  The fds polled are pipes used only as signals:
 * read_fd is readable while bytes (or the end) wait, write_fd is always
 * writable.  shutdown ends what this end sends (the peer reads 0).
 * Serialised (no NEGSTREAM_IO_CONCURRENT): overlaps are counted.
 */
void tio_mem_pair(size_t piece, negstream_io *ioa, void **a,
                  negstream_io *iob, void **b);

#if HAVE_OPENSSL
#include <openssl/ssl.h>
/*
 * A transport over a TLS connection whose handshake is done (ssl on the
 * non-blocking socket fd): SSL_read and SSL_write, their
 * SSL_ERROR_WANT_READ / _WANT_WRITE as NEGSTREAM_IO_WANT_READ / _WRITE,
 * a close_notify as the end of the stream; shutdown sends close_notify
 * and shuts the socket's sending side; close frees ssl and closes fd.
 * Serialised by the library (an SSL * is not safe for a concurrent
 * SSL_read and SSL_write).
 */
void *tio_tls_new(SSL *ssl, int fd, negstream_io *io);
#endif

/* Waits (at most timeout_ms) until close was called on ctx. */
bool tio_wait_closed(void *ctx, int timeout_ms);

/* Frees a context whose close was called or which no stream has. */
void tio_free(void *ctx);

#endif
