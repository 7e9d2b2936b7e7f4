/*
 * handshake.c - the [MS-NNS] handshake (negstream(7), WIRE FORMAT) as a
 * resumable state machine.
 *
 * Client: sends first (in-progress), then alternates.  When its context
 * completes and the outcome check passes, its last token (if any) goes in
 * a done message, and it waits for the server's done unless that came
 * already.  Server: reads first; when its context completes and the
 * outcome check passes it ALWAYS sends done (empty if GSS had no token)
 * and is finished.  A done received while the local context is still
 * incomplete is a token like any other, and remembered ("remote OK").
 *
 * A failure detected here (GSS step or outcome check) sends an error
 * message first, so that the peer does not wait forever; a failure the
 * peer reported, a protocol error or a transport failure sends nothing.
 *
 * Phases: STEP (a GSS step on the message received, if any) -> SEND (the
 * message it produced) -> RECV (the peer's next) -> STEP ...; END.  SEND
 * and RECV return to the caller whenever the transport would block; the
 * state they keep (the bytes sent so far, the reassembler) lets the next
 * call go on where this one stopped.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "error.h"
#include "frame.h"
#include "handshake.h"
#include "trace.h"
#include "util.h"

enum { PH_STEP = 0, PH_SEND, PH_RECV, PH_SEND_ERROR, PH_FAILED, PH_END };

static const char *id_text(uint8_t id)
{
    switch (id) {
    case NEGSTREAM__HS_DONE:
        return "done";
    case NEGSTREAM__HS_ERROR:
        return "error";
    case NEGSTREAM__HS_IN_PROGRESS:
        return "in-progress";
    default:
        return "unknown";
    }
}

void negstream__hs_start(negstream__hs *x, negstream__gss *g, bool server)
{
    memset(x, 0, sizeof(*x));
    x->g = g;
    x->role = server ? "server" : "client";
    negstream__reasm_init(&x->r, NEGSTREAM__REASM_HANDSHAKE);
    /* The client speaks first; the server reads first. */
    x->phase = server ? PH_RECV : PH_STEP;
}

void negstream__hs_free(negstream__hs *x)
{
    free(x->out);
    x->out = NULL;
    free(x->in);
    x->in = NULL;
}

/* Frames message 'id' around p[0..n) in x->out, to be sent from the start.
 * Returns 0, or -1 with err (NOMEM; a token over 65535 bytes, which the
 * 16-bit size cannot carry: .NET throws too). */
static int queue_msg(negstream__hs *x, uint8_t id, const void *p, size_t n,
                     negstream_error *err)
{
    if (n > NEGSTREAM__HS_MAX_PAYLOAD) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "GSSAPI produced a token of %zu bytes; a "
                           "handshake message carries at most %d", n,
                           NEGSTREAM__HS_MAX_PAYLOAD);
        return -1;
    }
    free(x->out);
    x->out = malloc(NEGSTREAM__HS_HEADER_SIZE + n);
    if (x->out == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory for a handshake message");
        return -1;
    }
    negstream__hs_header_encode(x->out, id, (uint16_t)n);
    if (n > 0)
        memcpy(x->out + NEGSTREAM__HS_HEADER_SIZE, p, n);
    x->out_len = NEGSTREAM__HS_HEADER_SIZE + n;
    x->out_off = 0;
    x->out_id = id;
    return 0;
}

/* A local failure: keep it, and tell the peer why we give up. */
static void fail_with_error_msg(negstream__hs *x, const negstream_error *why)
{
    uint8_t payload[NEGSTREAM__HS_ERROR_SIZE];
    uint32_t code = negstream__gss_error_code(why);
    negstream_error ignored;

    x->failure = *why;
    negstream__hs_error_encode(payload, code);
    if (queue_msg(x, NEGSTREAM__HS_ERROR, payload, sizeof(payload),
                  &ignored) < 0) {
        NEGSTREAM__TRACE("handshake %s: could not send the error message: "
                         "%s", x->role, ignored.message);
        x->phase = PH_FAILED;
        return;
    }
    x->phase = PH_SEND_ERROR;
}

void negstream__hs_start_failed(negstream__hs *x, negstream__gss *g,
                                bool server, const negstream_error *why)
{
    negstream__hs_start(x, g, server);
    fail_with_error_msg(x, why);
}

/* The message received, then freed: x->in, x->r.len bytes. */
static void drop_input(negstream__hs *x)
{
    free(x->in);
    x->in = NULL;
}

/*
 * One GSS step on the message received (none for the client's first),
 * then the outcome check if the context is complete, then the next phase:
 * the message to send, or the next read, or the end.  Returns 0 to go on
 * or -1 when the handshake failed with nothing to send.
 */
static int do_step(negstream__hs *x, negstream_error *err)
{
    gss_buffer_desc tok = GSS_C_EMPTY_BUFFER;
    bool have_in = x->exchanged && x->r.len > 0;
    bool server = x->role[0] == 's';
    uint8_t id;
    int rc;

    rc = negstream__gss_step(x->g, have_in ? x->in : NULL,
                             have_in ? x->r.len : 0, &tok, err);
    drop_input(x);
    if (rc == 1 && tok.length == 0) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "GSSAPI asked for another round but produced no "
                           "token to send");
        rc = -1;
    }
    if (rc == 0 && negstream__gss_check_outcome(x->g, err) < 0)
        rc = -1;
    if (rc < 0) {
        negstream__gss_release(&tok);
        fail_with_error_msg(x, err);
        return 0;
    }
    negstream__reasm_init(&x->r, NEGSTREAM__REASM_HANDSHAKE);
    if (rc == 0 && !server && tok.length == 0) {
        /* Complete with nothing to say: wait for the server's done unless
         * it came already (nothing is sent, as .NET). */
        x->phase = x->remote_ok ? PH_END : PH_RECV;
        return 0;
    }
    /* In progress: in-progress.  Complete: done (the server's always,
     * with the last token or empty). */
    id = rc == 1 ? NEGSTREAM__HS_IN_PROGRESS : NEGSTREAM__HS_DONE;
    if (queue_msg(x, id, tok.value, tok.length, err) < 0) {
        negstream__gss_release(&tok);
        fail_with_error_msg(x, err);
        return 0;
    }
    negstream__gss_release(&tok);
    x->phase = PH_SEND;
    return 0;
}

/* The phase after a message of ours went out. */
static int after_send(negstream__hs *x)
{
    bool server = x->role[0] == 's';

    if (x->out_id == NEGSTREAM__HS_DONE && (server || x->remote_ok))
        return PH_END;
    return PH_RECV;
}

/* An error message from the peer, mapped as .NET maps it. */
static void peer_error(const negstream__hs *x, negstream_error *err)
{
    uint32_t code;

    if (negstream__hs_error_decode(x->in, x->r.len, &code) !=
        NEGSTREAM__FRAME_OK) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "authentication failed on the remote side (its "
                           "error message has %u bytes, no code)",
                           (unsigned)x->r.len);
        return;
    }
    NEGSTREAM__TRACE("handshake %s: the peer reported error 0x%08x",
                     x->role, (unsigned)code);
    if (code == NEGSTREAM__ERR_LOGON_DENIED)
        negstream__err_set(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                           "the remote side rejected the credentials "
                           "(logon denied, 0x%08X)", (unsigned)code);
    else if (code == NEGSTREAM__ERR_TRUST_FAILURE)
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "the remote side's expectations were not met "
                           "(error %u: protection level, impersonation "
                           "level or channel bindings)", (unsigned)code);
    else if (code == NEGSTREAM__ERR_BAD_BINDINGS)
        /* What a .NET Framework (SSPI) server sends. */
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "the remote side rejected the channel bindings "
                           "(0x%08X: is the client bound to the same TLS "
                           "channel?)", (unsigned)code);
    else
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "authentication failed on the remote side "
                           "(error 0x%08X)", (unsigned)code);
}

/*
 * Receives what has arrived of the next message.  Returns 1 once it is
 * whole (x->r.hs, x->in), NEGSTREAM__AGAIN, or -1 with err.  An end of
 * stream before a message is an authentication failure, as in .NET; one
 * inside a message is an I/O error.
 */
static int recv_msg(negstream__hs *x, negstream__transport *t,
                    negstream_error *err)
{
    for (;;) {
        negstream__reasm_rc rc;
        uint8_t *dst;
        size_t want, have;
        ssize_t got;

        negstream__reasm_want(&x->r, &dst, &want);
        got = t->ops->recv(t, dst, want, err);
        if (got == NEGSTREAM__AGAIN)
            return NEGSTREAM__AGAIN;
        if (got < 0) {
            negstream__err_prefix(err, "reading a handshake message");
            return -1;
        }
        have = negstream__reasm_received(&x->r);
        if (got == 0 && have == 0) {
            negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                               "connection closed during authentication");
            return -1;
        }
        if (got == 0 && have < NEGSTREAM__HS_HEADER_SIZE) {
            negstream__err_set(err, NEGSTREAM_E_IO,
                               "connection closed inside a handshake "
                               "message header (%zu of %d bytes)", have,
                               NEGSTREAM__HS_HEADER_SIZE);
            return -1;
        }
        if (got == 0) {
            negstream__err_set(err, NEGSTREAM_E_IO,
                               "connection closed inside a handshake "
                               "message (%zu of %u payload bytes)",
                               have - NEGSTREAM__HS_HEADER_SIZE,
                               (unsigned)x->r.len);
            return -1;
        }
        x->exchanged = true;
        rc = negstream__reasm_advance(&x->r, (size_t)got);
        if (rc == NEGSTREAM__REASM_BAD_ID) {
            negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                               "protocol error: unknown handshake message "
                               "id 0x%02x (expected 0x14, 0x15 or 0x16)",
                               (unsigned)x->r.hs.id);
            return -1;
        }
        if (rc == NEGSTREAM__REASM_BODY) {
            /* Exactly the announced size, at most 65535 bytes. */
            x->in = malloc(x->r.len);
            if (x->in == NULL) {
                negstream__err_set(err, NEGSTREAM_E_NOMEM,
                                   "out of memory for a handshake message "
                                   "of %u bytes", (unsigned)x->r.len);
                return -1;
            }
            negstream__reasm_set_body(&x->r, x->in);
            continue;
        }
        if (rc == NEGSTREAM__REASM_MESSAGE) {
            NEGSTREAM__TRACE("handshake %s: received %s message (version "
                             "%u.%u), %u bytes of payload", x->role,
                             id_text(x->r.hs.id), (unsigned)x->r.hs.major,
                             (unsigned)x->r.hs.minor, (unsigned)x->r.len);
            return 1;
        }
    }
}

/* What a whole message received means.  Returns 0 to go on (x->phase
 * set) or -1 with err (nothing is sent back). */
static int on_message(negstream__hs *x, negstream_error *err)
{
    bool server = x->role[0] == 's';

    if (x->r.hs.id == NEGSTREAM__HS_ERROR) {
        peer_error(x, err);
        return -1;
    }
    if (server) {
        /* In-progress or done: the server's context is never complete
         * here (it ends when it is), so both carry a token. */
        x->phase = PH_STEP;
        return 0;
    }
    if (x->r.hs.id == NEGSTREAM__HS_DONE) {
        x->remote_ok = true;
        if (x->g->complete) {
            /* MIT has nothing left to check once complete (a newer .NET
             * would feed a non-empty payload to one more step); the
             * payload is only traced. */
            if (x->r.len > 0)
                NEGSTREAM__TRACE("handshake client: ignoring %u bytes in "
                                 "the server's done message after "
                                 "completion", (unsigned)x->r.len);
            drop_input(x);
            x->phase = PH_END;
            return 0;
        }
    } else if (x->g->complete) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "protocol error: the server sent an in-progress "
                           "message after the client's context was "
                           "complete (expected done)");
        return -1;
    }
    x->phase = PH_STEP;
    return 0;
}

int negstream__hs_run(negstream__hs *x, negstream__transport *t,
                      negstream_error *err)
{
    for (;;) {
        struct iovec iov;
        int rc;

        switch (x->phase) {
        case PH_STEP:
            if (do_step(x, err) < 0)
                return -1;
            break;
        case PH_SEND:
        case PH_SEND_ERROR:
            iov.iov_base = x->out;
            iov.iov_len = x->out_len;
            rc = negstream__transport_send_all(t, &iov, 1, &x->out_off, err);
            if (rc == NEGSTREAM__AGAIN)
                return NEGSTREAM__HS_WANT_WRITE;
            if (x->out_off > 0)
                x->exchanged = true;
            if (x->phase == PH_SEND_ERROR) {
                if (rc < 0)
                    NEGSTREAM__TRACE("handshake %s: could not send the "
                                     "error message: %s", x->role,
                                     err != NULL ? err->message : "");
                else
                    NEGSTREAM__TRACE("handshake %s: sent error message",
                                     x->role);
                negstream__err_copy(err, &x->failure);
                x->phase = PH_FAILED;
                return -1;
            }
            if (rc < 0) {
                negstream__err_prefix(err, "sending a handshake message");
                return -1;
            }
            NEGSTREAM__TRACE("handshake %s: sent %s message, %zu bytes of "
                             "payload", x->role, id_text(x->out_id),
                             x->out_len - NEGSTREAM__HS_HEADER_SIZE);
            x->phase = after_send(x);
            break;
        case PH_RECV:
            rc = recv_msg(x, t, err);
            if (rc == NEGSTREAM__AGAIN)
                return NEGSTREAM__HS_WANT_READ;
            if (rc < 0 || on_message(x, err) < 0)
                return -1;
            break;
        case PH_FAILED:
            negstream__err_copy(err, &x->failure);
            return -1;
        default:
            NEGSTREAM__TRACE("handshake %s: authenticated%s%s", x->role,
                             x->g->peer_name != NULL ? " " : "",
                             x->g->peer_name != NULL ? x->g->peer_name : "");
            negstream__err_ok(err);
            return 0;
        }
    }
}

/* ---- the blocking driver, for tests ------------------------------------- */

static int handshake_blocking(negstream__gss *g, negstream__transport *t,
                              bool server, int timeout_ms,
                              negstream_error *err)
{
    int64_t deadline = negstream__deadline_in(timeout_ms);
    negstream_error e;
    negstream__hs x;
    int rc;

    negstream__hs_start(&x, g, server);
    for (;;) {
        rc = negstream__hs_run(&x, t, &e);
        if (rc <= 0)
            break;
        rc = negstream__transport_block(t, rc == NEGSTREAM__HS_WANT_READ
                                        ? NEGSTREAM__DIR_READ
                                        : NEGSTREAM__DIR_WRITE, -1,
                                        deadline, "authentication", &e);
        if (rc < 0)
            break;
    }
    negstream__hs_free(&x);
    if (rc < 0)
        NEGSTREAM__TRACE("handshake %s failed: %s: %s", x.role,
                         negstream_status_name(e.code), e.message);
    negstream__err_copy(err, &e);
    return rc < 0 ? -1 : 0;
}

int negstream__handshake_client(negstream__gss *g, negstream__transport *t,
                                int timeout_ms, negstream_error *err)
{
    return handshake_blocking(g, t, false, timeout_ms, err);
}

int negstream__handshake_server(negstream__gss *g, negstream__transport *t,
                                int timeout_ms, negstream_error *err)
{
    return handshake_blocking(g, t, true, timeout_ms, err);
}
