/*
 * stdio_adapter.h - negstream_fopen(3): a FILE * over a negstream.
 * Private.
 *
 * The adapter sits on the public API only (negstream_read and
 * negstream_write): it knows nothing of frames, GSSAPI or the stream's
 * state, and nothing below it knows of it.  Its own state is a cookie per
 * FILE (the stream, the stdio buffer, the last failure) and a process-wide
 * list of the open cookies, so that negstream_ferror can find a FILE's
 * cookie (glibc gives no way back from a FILE to its cookie).
 */
#ifndef NEGSTREAM_STDIO_ADAPTER_H
#define NEGSTREAM_STDIO_ADAPTER_H

#include "negstream.h"

/* The size of the stdio buffer of every FILE: one full frame. */
#define NEGSTREAM__FILE_BUFSIZE NEGSTREAM_MAX_FRAME_PLAINTEXT

/*
 * The errno a FILE operation reports for a failure 'e' (the table of
 * negstream_fopen(3)): the argument codes EINVAL, INVALID_OPERATION
 * ENOTCONN, NOT_SUPPORTED EBUSY, DISPOSED EBADF, IO the errno of the
 * failed system call (else EIO), AUTHENTICATION and INVALID_CREDENTIAL
 * EACCES, TIMEOUT ETIMEDOUT, CANCELED ECANCELED, NOMEM ENOMEM; 0 for OK.
 */
int negstream__status_errno(const negstream_error *e);

#endif
