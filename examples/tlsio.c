/*
 * tlsio.c - a libnegstream stream over an OpenSSL connection; see
 * tlsio.h.
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "negstream.h"
#include "tlsio.h"

/* ---- the transport: an SSL * on a non-blocking socket ------------------- */

/*
 * The functions of negstream_io(3).  None of them may wait: the socket is
 * non-blocking, and OpenSSL's "want" answers become the library's, which
 * then polls the socket for what OpenSSL needs (a read may need to write,
 * during a renegotiation or a TLS 1.3 key update).  The library never
 * calls two of them at once on one stream (an SSL * is not safe for a
 * concurrent SSL_read and SSL_write), unless the table says
 * NEGSTREAM_IO_CONCURRENT.
 */
typedef struct tls_conn {
    SSL *ssl;
    int  fd;
} tls_conn;

/* What SSL_read or SSL_write's failure n means to the library. */
static ssize_t tls_result(tls_conn *c, int n)
{
    int saved = errno;

    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return NEGSTREAM_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return NEGSTREAM_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:         /* the peer's close_notify */
        return 0;
    case SSL_ERROR_SYSCALL:
        errno = saved != 0 ? saved : ECONNRESET;
        return -1;
    default:                            /* a TLS protocol error */
        errno = EPROTO;
        return -1;
    }
}

static ssize_t tls_read(void *ctx, void *buf, size_t len)
{
    tls_conn *c = ctx;
    int n;

    ERR_clear_error();
    errno = 0;
    n = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    return n > 0 ? n : tls_result(c, n);
}

/* After "would block" the library calls again with the same bytes and
 * length, as SSL_write requires. */
static ssize_t tls_write(void *ctx, const void *buf, size_t len)
{
    tls_conn *c = ctx;
    int n;

    ERR_clear_error();
    errno = 0;
    n = SSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    return n > 0 ? n : tls_result(c, n);
}

/* negstream_close: end the connection as closing an SslStream does (a
 * close_notify, sent if the socket takes it now; no waiting for the
 * peer's). */
static void tls_shutdown(void *ctx)
{
    tls_conn *c = ctx;

    SSL_shutdown(c->ssl);
    shutdown(c->fd, SHUT_WR);
}

/* Once, when the library has finished with the transport. */
static void tls_close(void *ctx)
{
    tls_conn *c = ctx;

    SSL_free(c->ssl);
    close(c->fd);
    free(c);
}

/*
 * A stream on ssl (handshake done) over fd: the stream owns both from
 * here, whatever happens (tls_close releases them at negstream_close).
 */
negstream *tlsio_stream(SSL *ssl, int fd, negstream_error *err)
{
    tls_conn *c = malloc(sizeof(*c));
    negstream_io io;
    negstream *s;

    if (c == NULL || fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
        snprintf(err->message, sizeof(err->message), "%s",
                 c == NULL ? "out of memory" : strerror(errno));
        err->code = NEGSTREAM_E_IO;
        free(c);
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    c->ssl = ssl;
    c->fd = fd;
    negstream_io_init(&io);         /* first: it stamps the version */
    io.read_fd = fd;                /* polled for both directions */
    io.read = tls_read;
    io.write = tls_write;
    io.shutdown = tls_shutdown;
    io.close = tls_close;
    s = negstream_new_io(&io, c, err);
    if (s == NULL)
        tls_close(c);               /* not called by a failed new_io */
    return s;
}
