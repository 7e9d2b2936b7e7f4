/*
 * transport_io.h - the application's transport (negstream_new_io(3)) as
 * the second implementation of the internal table (transport.h), so that
 * the steps of op.c and handshake.c run on it exactly as on an fd.
 * Knows no GSSAPI, no frames, no streams.
 */
#ifndef NEGSTREAM_TRANSPORT_IO_H
#define NEGSTREAM_TRANSPORT_IO_H

#include "negstream.h"
#include "transport.h"

/*
 * Sets t up on the caller's table (copied: the caller's may go) and
 * ctx (borrowed until t's close, which calls io->close(ctx)).  Checks
 * the table: NEGSTREAM_E_ARGUMENT (not stamped by negstream_io_init, or
 * from a newer header; an fd that is not open), NEGSTREAM_E_ARGUMENT_NULL
 * (read, write or close missing), NEGSTREAM_E_ARGUMENT_RANGE (read_fd
 * negative, unknown flags), NEGSTREAM_E_IO (no fd left for the
 * duplicates that are polled), NEGSTREAM_E_NOMEM.  Returns 0, or -1 with
 * err and nothing kept (io->close is not called: ctx stays the
 * caller's).
 */
int negstream__transport_io(negstream__transport *t, const negstream_io *io,
                            void *ctx, negstream_error *err);

#endif
