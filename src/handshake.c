/*
 * handshake.c - the [MS-NNS] handshake loops (nns.md §1,
 * dotnet-behaviour.md §3) over a transport, driving negstream__gss_step.
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
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "error.h"
#include "frame.h"
#include "handshake.h"
#include "trace.h"

#define MSG_BUF_SIZE (NEGSTREAM__HS_HEADER_SIZE + NEGSTREAM__HS_MAX_PAYLOAD)

typedef struct hs {
    negstream__gss             *g;
    const negstream__transport *t;
    int                         timeout_ms;
    const char                 *role;     /* "client" / "server", traces */
    uint8_t                    *buf;      /* header + payload */
    negstream__hs_header        h;        /* the last message received */
} hs;

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

/* Header and payload in one writev, so that a message is never split by
 * our side into two segments without need. */
static int send_msg(const hs *x, uint8_t id, const void *p, size_t n,
                    negstream_error *err)
{
    uint8_t hdr[NEGSTREAM__HS_HEADER_SIZE];
    struct iovec iov[2];

    negstream__hs_header_encode(hdr, id, (uint16_t)n);
    iov[0].iov_base = hdr;
    iov[0].iov_len = sizeof(hdr);
    iov[1].iov_base = (void *)p;
    iov[1].iov_len = n;
    if (negstream__transport_writev_all(x->t, iov, n > 0 ? 2 : 1,
                                        x->timeout_ms, NULL, err) < 0) {
        negstream__err_prefix(err, "sending a handshake message");
        return -1;
    }
    NEGSTREAM__TRACE("handshake %s: sent %s message, %zu bytes of payload",
                     x->role, id_text(id), n);
    return 0;
}

/* Tells the peer why we give up; a failure to do so changes nothing (the
 * peer may be gone already), so it is only traced. */
static void send_error(const hs *x, const negstream_error *why)
{
    uint8_t payload[NEGSTREAM__HS_ERROR_SIZE];
    uint32_t code = negstream__gss_error_code(why);
    negstream_error ignored;

    negstream__hs_error_encode(payload, code);
    if (send_msg(x, NEGSTREAM__HS_ERROR, payload, sizeof(payload),
                 &ignored) < 0)
        NEGSTREAM__TRACE("handshake %s: could not send the error message "
                         "(0x%08x): %s", x->role, (unsigned)code,
                         ignored.message);
    else
        NEGSTREAM__TRACE("handshake %s: sent error 0x%08x", x->role,
                         (unsigned)code);
}

/*
 * Reads one message into x->buf (payload at x->buf + 5, x->h filled).
 * EOF before a header is an authentication failure, as in .NET; EOF
 * inside a message is an I/O error.
 */
static int recv_msg(hs *x, negstream_error *err)
{
    uint8_t *hdr = x->buf;
    ssize_t got;

    got = negstream__transport_read_exact(x->t, hdr,
                                          NEGSTREAM__HS_HEADER_SIZE,
                                          x->timeout_ms, err);
    if (got < 0) {
        negstream__err_prefix(err, "reading a handshake message");
        return -1;
    }
    if (got == 0) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "connection closed during authentication");
        return -1;
    }
    if (got < NEGSTREAM__HS_HEADER_SIZE) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "connection closed inside a handshake message "
                           "header (%zd of %d bytes)", got,
                           NEGSTREAM__HS_HEADER_SIZE);
        return -1;
    }
    if (negstream__hs_header_decode(hdr, &x->h) != NEGSTREAM__FRAME_OK) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "protocol error: unknown handshake message id "
                           "0x%02x (expected 0x14, 0x15 or 0x16)",
                           (unsigned)x->h.id);
        return -1;
    }
    got = negstream__transport_read_exact(x->t,
                                          hdr + NEGSTREAM__HS_HEADER_SIZE,
                                          x->h.size, x->timeout_ms, err);
    if (got < 0) {
        negstream__err_prefix(err, "reading a handshake message");
        return -1;
    }
    if ((size_t)got < x->h.size) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "connection closed inside a handshake message "
                           "(%zd of %u payload bytes)", got,
                           (unsigned)x->h.size);
        return -1;
    }
    NEGSTREAM__TRACE("handshake %s: received %s message (version %u.%u), "
                     "%u bytes of payload", x->role, id_text(x->h.id),
                     (unsigned)x->h.major, (unsigned)x->h.minor,
                     (unsigned)x->h.size);
    return 0;
}

/* An error message from the peer, mapped as .NET maps it. */
static void peer_error(const hs *x, negstream_error *err)
{
    const uint8_t *p = x->buf + NEGSTREAM__HS_HEADER_SIZE;
    uint32_t code;

    if (negstream__hs_error_decode(p, x->h.size, &code) !=
        NEGSTREAM__FRAME_OK) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "authentication failed on the remote side (its "
                           "error message has %u bytes, no code)",
                           (unsigned)x->h.size);
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
 * One GSS step on in/in_len, then, if the context is complete, the outcome
 * check.  On failure the error message is sent here.  Returns 1 / 0 as
 * negstream__gss_step, or -1.
 */
static int step(hs *x, const void *in, size_t in_len, gss_buffer_desc *out,
                negstream_error *err)
{
    int rc = negstream__gss_step(x->g, in, in_len, out, err);

    if (rc == 1 && out->length == 0) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "GSSAPI asked for another round but produced no "
                           "token to send");
        rc = -1;
    }
    if (rc == 0 && negstream__gss_check_outcome(x->g, err) < 0)
        rc = -1;
    if (rc < 0) {
        negstream__gss_release(out);
        send_error(x, err);
    }
    return rc;
}

static int hs_begin(hs *x, negstream__gss *g, const negstream__transport *t,
                    int timeout_ms, const char *role, negstream_error *err)
{
    memset(x, 0, sizeof(*x));
    x->g = g;
    x->t = t;
    x->timeout_ms = timeout_ms;
    x->role = role;
    x->buf = malloc(MSG_BUF_SIZE);
    if (x->buf == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory for the handshake buffer");
        return -1;
    }
    return 0;
}

int negstream__handshake_client(negstream__gss *g,
                                const negstream__transport *t,
                                int timeout_ms, negstream_error *err)
{
    negstream_error e;
    gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
    const uint8_t *in = NULL;
    size_t in_len = 0;
    bool remote_ok = false;
    int rc = -1;
    hs x;

    negstream__err_ok(&e);
    if (hs_begin(&x, g, t, timeout_ms, "client", &e) < 0)
        goto out;
    for (;;) {
        int r = step(&x, in, in_len, &out, &e);

        if (r < 0)
            goto out;
        if (r == 1) {
            if (send_msg(&x, NEGSTREAM__HS_IN_PROGRESS, out.value,
                         out.length, &e) < 0)
                goto out;
        } else {
            /* Complete: the last token, if any, goes in a done message;
             * with no token nothing is sent (as .NET). */
            if (out.length > 0 &&
                send_msg(&x, NEGSTREAM__HS_DONE, out.value, out.length,
                         &e) < 0)
                goto out;
            if (remote_ok)
                break;
        }
        negstream__gss_release(&out);

        if (recv_msg(&x, &e) < 0)
            goto out;
        in = x.buf + NEGSTREAM__HS_HEADER_SIZE;
        in_len = x.h.size;
        if (x.h.id == NEGSTREAM__HS_ERROR) {
            peer_error(&x, &e);
            goto out;
        }
        if (x.h.id == NEGSTREAM__HS_DONE) {
            remote_ok = true;
            if (g->complete) {
                /* MIT has nothing left to check once complete (a
                 * newer .NET would feed a non-empty payload to one more
                 * step); the payload is only traced. */
                if (in_len > 0)
                    NEGSTREAM__TRACE("handshake client: ignoring %zu bytes "
                                     "in the server's done message after "
                                     "completion", in_len);
                break;
            }
        } else if (g->complete) {
            negstream__err_set(&e, NEGSTREAM_E_AUTHENTICATION,
                               "protocol error: the server sent an "
                               "in-progress message after the client's "
                               "context was complete (expected done)");
            goto out;
        }
    }
    NEGSTREAM__TRACE("handshake client: authenticated");
    negstream__err_ok(&e);
    rc = 0;
out:
    negstream__gss_release(&out);
    free(x.buf);
    if (rc < 0)
        NEGSTREAM__TRACE("handshake client failed: %s: %s",
                         negstream_status_name(e.code), e.message);
    negstream__err_copy(err, &e);
    return rc;
}

int negstream__handshake_server(negstream__gss *g,
                                const negstream__transport *t,
                                int timeout_ms, negstream_error *err)
{
    negstream_error e;
    gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
    int rc = -1;
    hs x;

    negstream__err_ok(&e);
    if (hs_begin(&x, g, t, timeout_ms, "server", &e) < 0)
        goto out;
    for (;;) {
        int r;

        if (recv_msg(&x, &e) < 0)
            goto out;
        if (x.h.id == NEGSTREAM__HS_ERROR) {
            peer_error(&x, &e);
            goto out;
        }
        /* In-progress or done: the server's context is never complete
         * here (it leaves the loop when it is), so both carry a token. */
        r = step(&x, x.buf + NEGSTREAM__HS_HEADER_SIZE, x.h.size, &out,
                 &e);
        if (r < 0)
            goto out;
        if (r == 1) {
            if (send_msg(&x, NEGSTREAM__HS_IN_PROGRESS, out.value,
                         out.length, &e) < 0)
                goto out;
            negstream__gss_release(&out);
            continue;
        }
        /* Complete and accepted: done, with the last token or empty. */
        if (send_msg(&x, NEGSTREAM__HS_DONE, out.value, out.length,
                     &e) < 0)
            goto out;
        break;
    }
    NEGSTREAM__TRACE("handshake server: authenticated %s",
                     g->peer_name != NULL ? g->peer_name : "?");
    negstream__err_ok(&e);
    rc = 0;
out:
    negstream__gss_release(&out);
    free(x.buf);
    if (rc < 0)
        NEGSTREAM__TRACE("handshake server failed: %s: %s",
                         negstream_status_name(e.code), e.message);
    negstream__err_copy(err, &e);
    return rc;
}
