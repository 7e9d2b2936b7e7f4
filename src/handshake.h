/*
 * handshake.h - the [MS-NNS] client and server handshake loops over a
 * transport, driving negstream__gss_step.  On a failure detected locally a
 * HandshakeError message is sent before returning, so the peer does not
 * hang.  No lock is held by the caller.
 */
#ifndef NEGSTREAM_HANDSHAKE_H
#define NEGSTREAM_HANDSHAKE_H

#include "gss.h"
#include "transport.h"

/* Both return 0 once authenticated (the client has its context complete
 * and has received the server's done message; the server has sent it),
 * or -1 with err: NEGSTREAM_E_AUTHENTICATION (also for EOF during the
 * handshake, a protocol error or an error message from the peer),
 * NEGSTREAM_E_INVALID_CREDENTIAL, NEGSTREAM_E_IO (transport failure,
 * truncated message), NEGSTREAM_E_TIMEOUT. */
int negstream__handshake_client(negstream__gss *g,
                                const negstream__transport *t,
                                int timeout_ms, negstream_error *err);
int negstream__handshake_server(negstream__gss *g,
                                const negstream__transport *t,
                                int timeout_ms, negstream_error *err);

#endif
