/*
 * tlsio.h - a libnegstream stream over an OpenSSL connection (an SSL *
 * on a socket): the custom transport of negstream_new_io(3) that
 * examples/tls.c uses, in a file of its own so that a program can take
 * it as it is (tests/interop/nns_peer.c does).
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#ifndef NEGSTREAM_EXAMPLE_TLSIO_H
#define NEGSTREAM_EXAMPLE_TLSIO_H

#include <openssl/ssl.h>

#include "negstream.h"

/*
 * A stream on ssl (its handshake done) over the socket fd, which becomes
 * non-blocking: the library calls SSL_read and SSL_write instead of recv
 * and send.  The stream owns ssl and fd from here, whatever happens: on
 * failure (NULL, *err set) they are already released, else
 * negstream_close() sends a close_notify and releases them.
 */
negstream *tlsio_stream(SSL *ssl, int fd, negstream_error *err);

#endif
