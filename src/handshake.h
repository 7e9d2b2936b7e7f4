/*
 * handshake.h - the [MS-NNS] client and server handshakes as resumable
 * state machines over a transport, driving negstream__gss_step.
 *
 * negstream__hs_run does every step it can without waiting: GSS steps
 * (CPU, and the KDC for a client's first step), sending what the transport
 * takes, reading what has arrived (through the reassembler).  When the
 * transport would block it returns NEGSTREAM__HS_WANT_READ or _WANT_WRITE;
 * the caller waits (the poller for an asynchronous authentication, poll
 * on the calling thread for a synchronous one) and calls it again.  On a
 * failure detected locally a HandshakeError message is sent first (which
 * may itself have to wait), so the peer does not hang.  No lock is held by
 * the caller.
 */
#ifndef NEGSTREAM_HANDSHAKE_H
#define NEGSTREAM_HANDSHAKE_H

#include <stdbool.h>
#include <stdint.h>
#include "gss.h"
#include "reasm.h"
#include "transport.h"

#define NEGSTREAM__HS_WANT_READ  1
#define NEGSTREAM__HS_WANT_WRITE 2

typedef struct negstream__hs {
    negstream__gss       *g;
    const char           *role;       /* "client" / "server", traces */
    int                   phase;      /* private */
    bool                  remote_ok;  /* the peer's done message came */
    bool                  exchanged;  /* a message was sent or received */
    /* the message being sent: header + payload, and how much went out */
    uint8_t              *out;
    size_t                out_len, out_off;
    uint8_t               out_id;
    /* the message being received */
    negstream__reasm      r;
    uint8_t              *in;         /* its payload (exactly r.len bytes) */
    negstream_error       failure;    /* kept while the error message goes */
} negstream__hs;

/* Prepares a client or server handshake over g (initialised by
 * negstream__gss_client_init / _server_init). */
void negstream__hs_start(negstream__hs *x, negstream__gss *g, bool server);

/* Prepares a handshake that failed before its first message (the GSS
 * set-up: credentials, names): run sends the peer an error message for
 * 'why', as .NET does, then returns -1 with 'why'. */
void negstream__hs_start_failed(negstream__hs *x, negstream__gss *g,
                                bool server, const negstream_error *why);

/* Runs until done (0), or until the transport would block
 * (NEGSTREAM__HS_WANT_READ / _WANT_WRITE), or fails (-1 with err:
 * NEGSTREAM_E_AUTHENTICATION (also for an end of stream between messages,
 * a protocol error or an error message from the peer),
 * NEGSTREAM_E_INVALID_CREDENTIAL, NEGSTREAM_E_IO (transport failure,
 * truncated message), NEGSTREAM_E_NOMEM).  After 0 or -1 it must not be
 * called again. */
int negstream__hs_run(negstream__hs *x, negstream__transport *t,
                      negstream_error *err);

/* Releases the buffers (the GSS context stays in g). */
void negstream__hs_free(negstream__hs *x);

/* A whole handshake on the calling thread, blocking in poll for at most
 * timeout_ms in all (-1: no limit): for tests that drive a transport
 * themselves.  Returns 0 or -1 with err (NEGSTREAM_E_TIMEOUT too). */
int negstream__handshake_client(negstream__gss *g, negstream__transport *t,
                                int timeout_ms, negstream_error *err);
int negstream__handshake_server(negstream__gss *g, negstream__transport *t,
                                int timeout_ms, negstream_error *err);

#endif
