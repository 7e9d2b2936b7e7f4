/*
 * op.c - the operation engine (see op.h and docs/internals.md): the
 * resumable steps of a write, a read and an authentication, the driver of
 * a synchronous call (poll on the calling thread), the job of an
 * asynchronous one (a worker runs a step; if the transport would block,
 * the operation parks with the poller and the worker is free), and the
 * ways an operation ends: completion, close, cancel, timeout.
 *
 * Data flow of a write: negstream_begin_write (stream.c: checks, marks the
 * write pending) -> op_submit -> pool -> op_job -> write_step: for each
 * chunk of at most 64512 bytes: gss wrap (under gss_mu) -> length prefix
 * -> transport send; the transport full -> parked until POLLOUT -> ... ->
 * op_finish -> async settle -> callback -> the caller's end_write.
 * Reading is the mirror: transport recv -> reassembler -> (a whole frame)
 * gss unwrap -> the caller's buffer.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "async.h"
#include "error.h"
#include "frame.h"
#include "gss.h"
#include "op.h"
#include "poller.h"
#include "pool.h"
#include "scrub.h"
#include "stream.h"
#include "trace.h"
#include "util.h"

/* What a step returns. */
#define STEP_DONE        0
#define STEP_FAIL        (-1)
#define STEP_WANT_READ   1
#define STEP_WANT_WRITE  2

/* Size of the buffer one wrapped frame is built in: prefix + token. */
#define WBUF_SIZE (NEGSTREAM__DATA_HEADER_SIZE + NEGSTREAM__MAX_FRAME)
/* What wbuf needs for a chunk: the prefix, the chunk and the largest wrap
 * overhead a frame may carry (NEGSTREAM__MAX_FRAME - NEGSTREAM__MAX_CHUNK). */
#define WBUF_NEED(chunk) \
    (NEGSTREAM__DATA_HEADER_SIZE + (chunk) + \
     (NEGSTREAM__MAX_FRAME - NEGSTREAM__MAX_CHUNK))
/* The smallest frame buffer allocated. */
#define FRAME_BUF_MIN 1024

/* ---- small helpers ----------------------------------------------------- */

bool *negstream__op_pending_flag(negstream *s, int kind)
{
    switch (kind) {
    case NEGSTREAM__OP_WRITE:
        return &s->write_pending;
    case NEGSTREAM__OP_READ:
        return &s->read_pending;
    default:
        return &s->auth_pending;
    }
}

static negstream__op **op_slot(negstream *s, int kind)
{
    switch (kind) {
    case NEGSTREAM__OP_WRITE:
        return &s->op_write;
    case NEGSTREAM__OP_READ:
        return &s->op_read;
    default:
        return &s->op_auth;
    }
}

const char *negstream__op_kind_name(int kind)
{
    switch (kind) {
    case NEGSTREAM__OP_WRITE:
        return "write";
    case NEGSTREAM__OP_READ:
        return "read";
    case NEGSTREAM__OP_AUTH_CLIENT:
        return "client authentication";
    default:
        return "server authentication";
    }
}

static bool is_auth(int kind)
{
    return kind == NEGSTREAM__OP_AUTH_CLIENT
           || kind == NEGSTREAM__OP_AUTH_SERVER;
}

/* The poller slot of a kind: reads and authentications read first. */
static int poll_slot(int kind)
{
    return kind == NEGSTREAM__OP_WRITE ? NEGSTREAM__SLOT_WRITE
                                       : NEGSTREAM__SLOT_READ;
}

/* Records the first I/O failure after authentication (sticky fault). */
static void stream_fault(negstream *s, const negstream_error *e)
{
    pthread_mutex_lock(&s->mu);
    if (!s->faulted && !s->closed) {
        s->fault = *e;
        s->faulted = true;
        NEGSTREAM__TRACE("stream %p faulted: %s", (void *)s, e->message);
    }
    pthread_mutex_unlock(&s->mu);
}

void negstream__op_init(negstream__op *o, negstream *s, int kind)
{
    int timeout;

    memset(o, 0, sizeof(*o));
    o->s = s;
    o->kind = kind;
    pthread_mutex_lock(&s->mu);
    timeout = kind == NEGSTREAM__OP_WRITE ? s->write_timeout_ms
              : kind == NEGSTREAM__OP_READ ? s->read_timeout_ms
              : s->auth_timeout_ms;
    pthread_mutex_unlock(&s->mu);
    /* The whole operation, from now: a peer that trickles bytes cannot
     * stretch it. */
    o->timeout_ms = timeout;
    o->deadline = negstream__deadline_in(timeout);
}

/* The timeout message for o's kind. */
static void timeout_error(const negstream__op *o, negstream_error *err)
{
    negstream *s = o->s;
    int ms = o->timeout_ms;

    if (o->kind == NEGSTREAM__OP_WRITE)
        negstream__err_set(err, NEGSTREAM_E_TIMEOUT,
                           "write timed out after %d ms (is the peer "
                           "reading?)", ms);
    else if (o->kind == NEGSTREAM__OP_READ)
        negstream__err_set(err, NEGSTREAM_E_TIMEOUT,
                           "read timed out after %d ms (the peer sent "
                           "%s)", ms, negstream__reasm_received(&s->rr) > 0
                           ? "part of a frame" : "nothing");
    else
        negstream__err_set(err, NEGSTREAM_E_TIMEOUT,
                           "authentication timed out after %d ms (the peer "
                           "did not finish the handshake in time)", ms);
}

/*
 * Makes *buf hold at least need bytes (need <= max).  The frame buffers
 * are allocated on first use and grown (doubling, at most max), so an idle
 * authenticated stream holds none and a stream of small messages holds
 * small ones.  Only the one running read (rbuf) or write (wbuf) calls
 * this, and only between frames.  The old buffer may hold plaintext (an
 * unwrapped frame, or a Sign/None token): it is wiped before it is freed.
 * On failure the old buffer is kept and err says NOMEM.
 */
static int grow_frame_buf(uint8_t **buf, size_t *cap, size_t need,
                          size_t max, const char *which, negstream_error *err)
{
    size_t ncap = *cap * 2;
    uint8_t *nb;

    if (*cap >= need)
        return 0;
    if (ncap < need)
        ncap = need;
    if (ncap < FRAME_BUF_MIN)
        ncap = FRAME_BUF_MIN;
    if (ncap > max)
        ncap = max;
    nb = malloc(ncap);
    if (nb == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory allocating the %s frame buffer "
                           "(%zu bytes)", which, ncap);
        return -1;
    }
    negstream__wipe(*buf, *cap);
    free(*buf);
    *buf = nb;
    *cap = ncap;
    return 0;
}

/* ---- the steps ---------------------------------------------------------- */

/*
 * A write: raw when nothing was negotiated (protection None), else in
 * frames of at most 64512 bytes, each wrapped straight into wbuf behind
 * its length prefix and sent, from where the last call stopped, before the
 * next chunk is wrapped, so the order of wraps is the order on the wire.
 * The write flag guarantees one writer: wbuf needs no lock.  A failure
 * faults the stream (the peer may hold half a frame), except a failed
 * first allocation, which sends nothing and changes nothing.
 */
static int write_step(negstream__op *o, negstream_error *err)
{
    negstream *s = o->s;
    struct iovec iov;
    int rc;

    if (!s->framed) {
        iov.iov_base = (void *)o->wdata;
        iov.iov_len = o->count;
        rc = negstream__transport_send_all(&s->tr, &iov, 1, &o->done, err);
        if (rc == NEGSTREAM__AGAIN)
            return STEP_WANT_WRITE;
        if (rc < 0)
            goto fail_io;
        o->result = (ssize_t)o->count;
        return STEP_DONE;
    }
    /* The first chunk is the largest: one buffer fits them all.  Nothing
     * is sent yet, so a failure leaves the stream unchanged. */
    if (o->done == 0 && o->flen == 0 && o->count > 0 &&
        grow_frame_buf(&s->wbuf, &s->wcap,
                       WBUF_NEED(o->count < NEGSTREAM__MAX_CHUNK
                                 ? o->count : NEGSTREAM__MAX_CHUNK),
                       WBUF_SIZE, "write", err) < 0) {
        negstream__err_prefix(err, "write failed, nothing sent");
        return STEP_FAIL;
    }
    for (;;) {
        size_t chunk;
        ssize_t tok;

        if (o->flen > 0) {
            iov.iov_base = s->wbuf;
            iov.iov_len = o->flen;
            rc = negstream__transport_send_all(&s->tr, &iov, 1, &o->foff,
                                               err);
            if (rc == NEGSTREAM__AGAIN)
                return STEP_WANT_WRITE;
            if (rc < 0)
                goto fail_io;
            NEGSTREAM__TRACE("stream %p: sent frame of %zu bytes (%zu "
                             "plaintext)", (void *)s,
                             o->flen - NEGSTREAM__DATA_HEADER_SIZE,
                             o->fchunk);
            o->done += o->fchunk;
            o->flen = o->foff = o->fchunk = 0;
        }
        if (o->done == o->count)
            break;
        chunk = o->count - o->done;
        if (chunk > NEGSTREAM__MAX_CHUNK)
            chunk = NEGSTREAM__MAX_CHUNK;
        pthread_mutex_lock(&s->gss_mu);
        tok = negstream__gss_wrap(&s->gss, o->wdata + o->done, chunk,
                                  s->wbuf + NEGSTREAM__DATA_HEADER_SIZE,
                                  s->wcap - NEGSTREAM__DATA_HEADER_SIZE, err);
        pthread_mutex_unlock(&s->gss_mu);
        if (tok < 0)
            goto fail;
        negstream__data_len_encode(s->wbuf, (uint32_t)tok);
        o->flen = NEGSTREAM__DATA_HEADER_SIZE + (size_t)tok;
        o->foff = 0;
        o->fchunk = chunk;
    }
    o->result = (ssize_t)o->count;
    return STEP_DONE;

fail_io:
    negstream__err_prefix(err, "write failed");
fail:
    stream_fault(s, err);
    return STEP_FAIL;
}

/* Hands out buffered plaintext.  Only the one pending read calls this. */
static size_t take_buffered(negstream *s, uint8_t *dst, size_t count)
{
    size_t n = s->rlen - s->rpos;

    if (n > count)
        n = count;
    memcpy(dst, s->rbuf + s->rpos, n);
    s->rpos += n;
    return n;
}

/*
 * A read of at most one frame's worth: buffered plaintext first, without
 * touching the network; else what has arrived goes into the reassembler
 * (s->rr, which keeps a frame cut by "would block" for the next call),
 * and a whole frame is unwrapped in place and buffered.  A frame that
 * unwraps to nothing is skipped.  A count of 0 with nothing buffered waits
 * for a frame, as .NET does.  A failure faults the stream (part of a frame
 * may be consumed), except a failed buffer allocation, after which the
 * reassembler keeps the frame's length and the next read goes on.
 */
static int read_step(negstream__op *o, negstream_error *err)
{
    negstream *s = o->s;

    if (!s->framed) {
        ssize_t n = 0;

        if (o->count > 0)
            n = s->tr.ops->recv(&s->tr, o->rdata, o->count, err);
        if (n == NEGSTREAM__AGAIN)
            return STEP_WANT_READ;
        if (n < 0)
            goto fail_io;
        o->result = n;
        return STEP_DONE;
    }
    if (s->rpos < s->rlen) {
        o->result = (ssize_t)take_buffered(s, o->rdata, o->count);
        return STEP_DONE;
    }
    for (;;) {
        negstream__reasm_rc rc = negstream__reasm_advance(&s->rr, 0);
        uint8_t *dst;
        size_t want, have;
        ssize_t got, plain;
        size_t off = 0;

        if (rc == NEGSTREAM__REASM_BODY) {
            if (grow_frame_buf(&s->rbuf, &s->rcap, s->rr.len,
                               NEGSTREAM__MAX_FRAME, "read", err) < 0) {
                /* The header is consumed and the reassembler keeps its
                 * length: the next read goes on with this frame. */
                negstream__err_prefix(err, "read failed, nothing consumed");
                return STEP_FAIL;
            }
            negstream__reasm_set_body(&s->rr, s->rbuf);
        }
        if (rc != NEGSTREAM__REASM_MESSAGE) {
            negstream__reasm_want(&s->rr, &dst, &want);
            got = s->tr.ops->recv(&s->tr, dst, want, err);
            if (got == NEGSTREAM__AGAIN)
                return STEP_WANT_READ;
            if (got < 0)
                goto fail_io;
            have = negstream__reasm_received(&s->rr);
            if (got == 0 && have == 0) {
                NEGSTREAM__TRACE("stream %p: end of stream", (void *)s);
                o->result = 0;
                return STEP_DONE;
            }
            if (got == 0) {
                if (have < NEGSTREAM__DATA_HEADER_SIZE)
                    negstream__err_set(err, NEGSTREAM_E_IO,
                                       "connection closed inside a frame "
                                       "header (%zu of 4 bytes)", have);
                else
                    negstream__err_set(err, NEGSTREAM_E_IO,
                                       "connection closed inside a frame "
                                       "(%zu of %u bytes)",
                                       have - NEGSTREAM__DATA_HEADER_SIZE,
                                       (unsigned)s->rr.len);
                goto fail_io;
            }
            rc = negstream__reasm_advance(&s->rr, (size_t)got);
            if (rc == NEGSTREAM__REASM_BAD_SIZE) {
                negstream__err_set(err, NEGSTREAM_E_IO,
                                   "invalid frame size %u (accepted: %d to "
                                   "%d)", (unsigned)s->rr.len,
                                   NEGSTREAM__MIN_FRAME,
                                   NEGSTREAM__MAX_FRAME);
                goto fail_io;
            }
            if (rc != NEGSTREAM__REASM_MESSAGE)
                continue;
        }
        pthread_mutex_lock(&s->gss_mu);
        plain = negstream__gss_unwrap(&s->gss, s->rbuf, s->rr.len, &off,
                                      err);
        pthread_mutex_unlock(&s->gss_mu);
        NEGSTREAM__TRACE("stream %p: received frame of %u bytes (%zd "
                         "plaintext)", (void *)s, (unsigned)s->rr.len, plain);
        negstream__reasm_init(&s->rr, NEGSTREAM__REASM_DATA);
        if (plain < 0)
            goto fail;
        if (plain == 0)
            continue;
        s->rpos = off;
        s->rlen = off + (size_t)plain;
        o->result = (ssize_t)take_buffered(s, o->rdata, o->count);
        return STEP_DONE;
    }

fail_io:
    negstream__err_prefix(err, "read failed");
fail:
    stream_fault(s, err);
    return STEP_FAIL;
}

/* Copies what the context says into the stream, once it is complete.
 * The frame buffers come with the first read and the first write. */
static void finish_auth_locked(negstream *s)
{
    s->framed = negstream__gss_is_framed(&s->gss);
    s->p_encrypted = negstream__gss_is_encrypted(&s->gss);
    s->p_signed = negstream__gss_is_signed(&s->gss);
    s->p_mutual = negstream__gss_is_mutual(&s->gss);
    s->p_impersonation = negstream__gss_impersonation(&s->gss);
    s->p_auth_type = negstream__gss_auth_type(&s->gss);
}

/* An authentication: the GSS set-up (credentials, names) on the first
 * call, then the handshake machine.  The copies of the caller's strings,
 * the password among them, are wiped as soon as the credentials exist. */
static int auth_step(negstream__op *o, negstream_error *err)
{
    negstream *s = o->s;
    negstream__auth *a = o->auth;
    int rc;

    if (!a->gss_ready) {
        if (o->kind == NEGSTREAM__OP_AUTH_CLIENT)
            rc = negstream__gss_client_init(&s->gss, &a->copt, err);
        else
            rc = negstream__gss_server_init(&s->gss, &a->sopt, err);
        negstream__wipe(a->strings, a->strings_len);
        /* A set-up failure (bad password, no keytab entry) is still told
         * to the peer, as .NET does, so that it does not wait for us. */
        if (rc < 0)
            negstream__hs_start_failed(&a->hs, &s->gss,
                                       o->kind == NEGSTREAM__OP_AUTH_SERVER,
                                       err);
        else
            negstream__hs_start(&a->hs, &s->gss,
                                o->kind == NEGSTREAM__OP_AUTH_SERVER);
        a->gss_ready = true;
    }
    rc = negstream__hs_run(&a->hs, &s->tr, err);
    if (rc == NEGSTREAM__HS_WANT_READ)
        return STEP_WANT_READ;
    if (rc == NEGSTREAM__HS_WANT_WRITE)
        return STEP_WANT_WRITE;
    if (rc < 0) {
        NEGSTREAM__TRACE("handshake %s failed: %s: %s", a->hs.role,
                         negstream_status_name(err->code), err->message);
        return STEP_FAIL;
    }
    return STEP_DONE;
}

static int op_step(negstream__op *o, negstream_error *err)
{
    switch (o->kind) {
    case NEGSTREAM__OP_WRITE:
        return write_step(o, err);
    case NEGSTREAM__OP_READ:
        return read_step(o, err);
    default:
        return auth_step(o, err);
    }
}

/* ---- ends -------------------------------------------------------------- */

void negstream__op_free_auth(negstream__op *o)
{
    negstream__auth *a = o->auth;

    if (a == NULL)
        return;
    if (a->gss_ready)
        negstream__hs_free(&a->hs);
    negstream__wipe(a->strings, a->strings_len);
    free(a->strings);
    free(a->binding);
    negstream__wipe(a, sizeof(*a));
    free(a);
    o->auth = NULL;
}

bool negstream__op_maybe_close_tr_locked(negstream *s)
{
    if (!s->closed || !s->tr_open || s->io_busy > 0)
        return false;
    /* Nothing is armed (every operation was taken or has ended), and no
     * thread is inside a step: the fds can go.  No step can start again
     * (closed), so the transport is the caller's alone from here. */
    negstream__poller_forget(&s->pfd);
    negstream__poller_forget(&s->pfd_out);
    s->tr_open = false;
    return true;
}

void negstream__op_release_tr(negstream *s)
{
    s->tr.ops->close(&s->tr);
    NEGSTREAM__TRACE("stream %p: transport closed", (void *)s);
}

void negstream__op_unlock_tr(negstream *s)
{
    bool release = negstream__op_maybe_close_tr_locked(s);

    pthread_mutex_unlock(&s->mu);
    if (release)
        negstream__op_release_tr(s);
}

/*
 * The outcome of an operation that ended while the stream was closed
 * under it: a failure becomes DISPOSED, and so does a read's end of
 * stream (.NET's read fails after Dispose too).  Caller holds s->mu.
 */
static ssize_t settle_closed_locked(negstream *s, int kind, ssize_t result,
                                    negstream_error *e)
{
    if (!s->closed)
        return result;
    if (result == 0 && kind == NEGSTREAM__OP_READ) {
        negstream__err_set(e, NEGSTREAM_E_DISPOSED,
                           "stream closed while the read was in progress");
        return -1;
    }
    if (result < 0 && e->code != NEGSTREAM_E_DISPOSED) {
        negstream_error why = *e;

        negstream__err_set(e, NEGSTREAM_E_DISPOSED,
                           "stream closed while the %s was in progress (%s)",
                           negstream__op_kind_name(kind), why.message);
    }
    return result;
}

/*
 * The stream state an authentication leaves: AUTHENTICATED, or FAILED with
 * its failure stored (a close meanwhile makes it DISPOSED).  Caller holds
 * s->mu.
 */
static int end_auth_locked(negstream *s, int rc, negstream_error *e)
{
    if (rc == 0 && !s->closed) {
        finish_auth_locked(s);
        s->state = NEGSTREAM__AUTHENTICATED;
        NEGSTREAM__TRACE("stream %p authenticated (%s, %s%s%s)", (void *)s,
                         s->p_auth_type, s->p_encrypted ? "encrypted" :
                         s->p_signed ? "signed" : "no protection",
                         s->p_mutual ? ", mutual" : "",
                         s->framed ? ", framed" : "");
        return 0;
    }
    if (rc == 0 || s->closed) {
        negstream__err_set(e, NEGSTREAM_E_DISPOSED,
                           "stream closed during authentication");
        rc = -1;
    }
    s->state = NEGSTREAM__FAILED;
    s->auth_failure = *e;
    NEGSTREAM__TRACE("stream %p: authentication failed: %s", (void *)s,
                     s->auth_failure.message);
    return rc;
}

/*
 * The bookkeeping every end shares, under s->mu: the pending flag and the
 * slot cleared, the stream state of an authentication, the outcome of a
 * close meanwhile.  Returns the result to report.
 */
static ssize_t end_locked(negstream__op *o, ssize_t result,
                          negstream_error *e)
{
    negstream *s = o->s;

    o->state = NEGSTREAM__OP_DONE;
    *negstream__op_pending_flag(s, o->kind) = false;
    if (*op_slot(s, o->kind) == o)
        *op_slot(s, o->kind) = NULL;
    if (is_auth(o->kind))
        return end_auth_locked(s, result < 0 ? -1 : 0, e);
    return settle_closed_locked(s, o->kind, result, e);
}

/* Runs o's callback (if any) on this worker and drops the completer's
 * reference; the stream's memory stays while the callback runs. */
static void callback_job(negstream__job *job)
{
    negstream__op *o = (negstream__op *)job;
    negstream *s = o->s;

    negstream__async_callback(o->ar);
    negstream__stream_mdrop(s);
}

/*
 * Settles a result whose job is not running (taken from the queue or the
 * poller by close or cancel): stored, completed, waiters and fd woken at
 * once; the callback goes to a worker, never runs here (the closing thread
 * may hold its own locks).
 */
static void settle_deferred(negstream__op *o, const negstream_error *e,
                            ssize_t result)
{
    negstream *s = o->s;
    negstream_error ignored;

    negstream__op_free_auth(o);
    negstream__stream_mhold(s);
    negstream__async_settle(o->ar, e, result, false);
    if (!negstream__async_has_callback(o->ar)) {
        negstream__async_callback(o->ar);
        negstream__stream_mdrop(s);
        return;
    }
    memset(&o->job, 0, sizeof(o->job));
    o->job.run = callback_job;
    if (negstream__pool_resume(o->pool, &o->job, &ignored) < 0) {
        /* The pool was drained and freed under a pending operation, which
         * negstream_pool_free(3) forbids; running the callback here is
         * the only way left to complete it exactly once. */
        NEGSTREAM__TRACE("stream %p: callback run by the closing thread: "
                         "%s", (void *)s, ignored.message);
        callback_job(&o->job);
    }
}

/* The normal end of an asynchronous operation, on a worker: bookkeeping,
 * then the one completion (callback included, here). */
static void op_finish(negstream__op *o, ssize_t result, negstream_error *e)
{
    negstream *s = o->s;

    negstream__op_free_auth(o);
    pthread_mutex_lock(&s->mu);
    result = end_locked(o, result, e);
    pthread_mutex_unlock(&s->mu);
    /* The callback may end the result and drop the last logical
     * reference; the memory hold keeps s valid until it returns. */
    negstream__stream_mhold(s);
    negstream__async_complete(o->ar, e, result, false);
    negstream__stream_mdrop(s);
}

/* ---- the asynchronous driver ------------------------------------------- */

/*
 * The job of an asynchronous operation: run when it is first queued and
 * every time the poller hands it back.  Checks why it runs (closed,
 * cancelled, timed out, the pool freed), runs a step, and either ends the
 * operation or parks it again.  Never waits.
 */
static void op_job(negstream__job *job)
{
    negstream__op *o = (negstream__op *)job;
    negstream *s = o->s;
    negstream__poller *poller;
    negstream__pollfd *pfd;
    negstream_error e;
    int fired = NEGSTREAM__FIRE_NONE, rc, fd;
    bool release = false;
    short events;

    pthread_mutex_lock(&s->mu);
    if (o->state == NEGSTREAM__OP_PARKED)
        fired = negstream__pollfd_fired(o->pfd, poll_slot(o->kind));
    if (s->closed) {
        negstream__err_set(&e, NEGSTREAM_E_DISPOSED, "stream closed before "
                           "the %s finished",
                           negstream__op_kind_name(o->kind));
        goto end_locked_fail;
    }
    if (fired == NEGSTREAM__FIRE_SHUTDOWN) {
        negstream__err_set(&e, NEGSTREAM_E_DISPOSED, "the worker pool was "
                           "freed while the %s waited for the peer",
                           negstream__op_kind_name(o->kind));
        goto end_locked_fail;
    }
    if (fired == NEGSTREAM__FIRE_TIMEOUT) {
        timeout_error(o, &e);
        goto timed_out;
    }
    o->state = NEGSTREAM__OP_RUNNING;
    s->io_busy++;
    pthread_mutex_unlock(&s->mu);

    rc = op_step(o, &e);

    pthread_mutex_lock(&s->mu);
    s->io_busy--;
    if (rc == STEP_DONE || rc == STEP_FAIL) {
        negstream__op_unlock_tr(s);
        if (rc == STEP_DONE)
            negstream__err_ok(&e);
        op_finish(o, rc == STEP_DONE ? o->result : -1, &e);
        return;
    }
    /* The transport would block: park, unless that cannot be. */
    if (s->closed) {
        release = negstream__op_maybe_close_tr_locked(s);
        negstream__err_set(&e, NEGSTREAM_E_DISPOSED, "stream closed before "
                           "the %s finished",
                           negstream__op_kind_name(o->kind));
        goto end_locked_fail;
    }
    if (o->deadline >= 0 && negstream__mono_ms() >= o->deadline) {
        timeout_error(o, &e);
        goto timed_out;
    }
    fd = s->tr.ops->wait(&s->tr, rc == STEP_WANT_READ ? NEGSTREAM__DIR_READ
                                                      : NEGSTREAM__DIR_WRITE,
                         &events);
    /* One of the transport's fixed fds (transport.h), each registered
     * with one poller. */
    pfd = fd >= 0 && fd == s->pfd.fd ? &s->pfd
          : fd >= 0 && fd == s->pfd_out.fd ? &s->pfd_out : NULL;
    poller = negstream__pool_poller(o->pool, &e);
    if (poller == NULL || pfd == NULL ||
        (pfd->poller != NULL && pfd->poller != poller) ||
        negstream__poller_arm(poller, pfd, poll_slot(o->kind), events,
                              o->deadline, &o->job, &e) < 0) {
        if (poller != NULL && (pfd == NULL ||
                               (pfd->poller != NULL &&
                                pfd->poller != poller)))
            negstream__err_set(&e, NEGSTREAM_E_IO, "internal error: the "
                               "transport changed its fd or its poller");
        negstream__err_prefix(&e, "cannot wait for the peer");
        goto end_locked_fail;
    }
    o->pfd = pfd;
    o->state = NEGSTREAM__OP_PARKED;
    pthread_mutex_unlock(&s->mu);
    return;

timed_out:
    /* Part of a frame or a handshake message may be consumed or sent:
     * the stream cannot go on (the fault is recorded below). */
    if (o->kind == NEGSTREAM__OP_READ || o->kind == NEGSTREAM__OP_WRITE) {
        if (!s->faulted && !s->closed) {
            s->fault = e;
            s->faulted = true;
        }
    }
end_locked_fail:
    pthread_mutex_unlock(&s->mu);
    if (release)
        negstream__op_release_tr(s);
    op_finish(o, -1, &e);
}

negstream_async *negstream__op_submit(negstream__op *o,
                                      negstream_error *err)
{
    negstream *s = o->s;
    negstream_async *ar = o->ar;    /* o lives in ar: see below */
    negstream_error e;
    int rc = -1;

    o->job.run = op_job;
    /* The caller's err is written now, never after the job is queued:
     * from then on a worker may complete the operation and its callback
     * may reuse or free err (a callback chain that ends with the
     * structure holding err) before this function returns. */
    negstream__err_ok(err);
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        negstream__err_set(&e, NEGSTREAM_E_DISPOSED,
                           "stream closed before the %s started",
                           negstream__op_kind_name(o->kind));
    } else {
        o->pool = s->pool != NULL ? s->pool : negstream__pool_default(&e);
        if (o->pool != NULL) {
            o->state = NEGSTREAM__OP_QUEUED;
            *op_slot(s, o->kind) = o;
            rc = negstream__pool_submit(o->pool, &o->job, &e);
            if (rc < 0) {
                *op_slot(s, o->kind) = NULL;
                o->state = NEGSTREAM__OP_IDLE;
            }
        }
    }
    if (rc < 0) {
        *negstream__op_pending_flag(s, o->kind) = false;
        if (is_auth(o->kind))
            s->state = NEGSTREAM__NEW;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == 0)
        return ar;      /* o, *ar and err may be gone already */
    /* Never published: nobody else has the result.  No callback. */
    negstream__op_free_auth(o);
    negstream__async_discard(ar);
    negstream__stream_unref(s);
    negstream__err_copy(err, &e);
    return NULL;
}

/* ---- the synchronous driver --------------------------------------------- */

ssize_t negstream__op_run_sync(negstream__op *o, negstream_error *err)
{
    negstream *s = o->s;
    negstream_error e;
    ssize_t result = -1;
    int rc;

    pthread_mutex_lock(&s->mu);
    s->io_busy++;           /* the whole call: we poll on the fd too */
    pthread_mutex_unlock(&s->mu);
    for (;;) {
        int wake_fd, dir;

        pthread_mutex_lock(&s->mu);
        if (s->closed) {
            negstream__err_set(&e, NEGSTREAM_E_DISPOSED,
                               "stream closed while the %s was in progress",
                               negstream__op_kind_name(o->kind));
            pthread_mutex_unlock(&s->mu);
            rc = STEP_FAIL;
            break;
        }
        pthread_mutex_unlock(&s->mu);

        rc = op_step(o, &e);
        if (rc == STEP_DONE || rc == STEP_FAIL)
            break;

        /* The transport would block: poll here, where close can wake us
         * through the stream's wake fd (made on first need). */
        pthread_mutex_lock(&s->mu);
        if (s->wake.r < 0 && negstream__wake_open(&s->wake) < 0) {
            negstream__err_sys(&e, NEGSTREAM_E_IO, errno,
                               "cannot create the stream's wake-up fd");
            pthread_mutex_unlock(&s->mu);
            rc = STEP_FAIL;
            break;
        }
        wake_fd = s->closed ? -1 : s->wake.r;
        s->sync_waiting++;
        pthread_mutex_unlock(&s->mu);
        if (wake_fd < 0) {
            pthread_mutex_lock(&s->mu);
            s->sync_waiting--;
            pthread_mutex_unlock(&s->mu);
            continue;           /* closed meanwhile: the loop says so */
        }
        dir = rc == STEP_WANT_READ ? NEGSTREAM__DIR_READ
                                   : NEGSTREAM__DIR_WRITE;
        rc = negstream__transport_block(&s->tr, dir, wake_fd, o->deadline,
                                        negstream__op_kind_name(o->kind),
                                        &e);
        pthread_mutex_lock(&s->mu);
        s->sync_waiting--;
        pthread_mutex_unlock(&s->mu);
        if (rc < 0) {
            if (e.code == NEGSTREAM_E_TIMEOUT)
                timeout_error(o, &e);
            if (!is_auth(o->kind))
                stream_fault(s, &e);
            rc = STEP_FAIL;
            break;
        }
    }
    if (rc == STEP_DONE) {
        result = o->result;
        negstream__err_ok(&e);
    }
    negstream__op_free_auth(o);
    pthread_mutex_lock(&s->mu);
    s->io_busy--;
    result = end_locked(o, result, &e);
    negstream__op_unlock_tr(s);
    negstream__err_copy(err, &e);
    negstream__stream_unref(s);     /* the call's; s may be freed here */
    return result;
}

/* ---- close and cancel --------------------------------------------------- */

/*
 * Takes o away from the pool's queue or the poller, if it is still there.
 * Returns true if taken: no job of o will run, and the caller settles it.
 * Caller holds o->s->mu.
 */
static bool take_locked(negstream__op *o)
{
    if (o->state == NEGSTREAM__OP_QUEUED)
        return negstream__pool_cancel(o->pool, &o->job);
    if (o->state == NEGSTREAM__OP_PARKED && o->pfd->poller != NULL)
        return negstream__poller_disarm(o->pfd->poller, o->pfd,
                                        poll_slot(o->kind));
    return false;
}

bool negstream__op_close_locked(negstream *s, negstream__op *out[3])
{
    negstream__op *ops[3] = { s->op_write, s->op_read, s->op_auth };
    size_t i;

    for (i = 0; i < 3; i++) {
        out[i] = NULL;
        if (ops[i] == NULL || !take_locked(ops[i]))
            continue;       /* running: it sees the close when it ends */
        out[i] = ops[i];
    }
    if (s->sync_waiting > 0)
        negstream__wake_signal(&s->wake);
    return negstream__op_maybe_close_tr_locked(s);
}

void negstream__op_settle_taken(negstream__op *o, negstream_status code,
                                const char *why)
{
    negstream *s = o->s;
    negstream_error e;
    ssize_t result;

    negstream__err_set(&e, code, "%s %s", negstream__op_kind_name(o->kind),
                       why);
    pthread_mutex_lock(&s->mu);
    result = end_locked(o, -1, &e);
    pthread_mutex_unlock(&s->mu);
    settle_deferred(o, &e, result);
}

/*
 * negstream_async_cancel's hook.  A QUEUED operation had not started: the
 * stream is as before (an authentication may start again).  A PARKED one
 * may have consumed or sent part of a frame or handshake: a read or write
 * with partial progress faults the stream, an authentication that
 * exchanged anything fails it.  A RUNNING one cannot be cancelled.  The
 * result holds a stream reference until ended, so o->s is alive here.
 */
static int op_cancel(negstream_async *ar)
{
    negstream__op *o = negstream__async_extra(ar);
    negstream *s = o->s;
    negstream_error e;
    bool taken, queued;

    pthread_mutex_lock(&s->mu);
    queued = o->state == NEGSTREAM__OP_QUEUED;
    taken = take_locked(o);
    if (taken) {
        const char *what = negstream__op_kind_name(o->kind);
        bool partial = false;

        if (o->kind == NEGSTREAM__OP_READ)
            partial = negstream__reasm_received(&s->rr) > 0;
        else if (o->kind == NEGSTREAM__OP_WRITE)
            partial = o->done > 0 || o->foff > 0;
        else
            partial = !queued && o->auth != NULL && o->auth->gss_ready &&
                      o->auth->hs.exchanged;
        negstream__err_set(&e, NEGSTREAM_E_CANCELED, "%s cancelled %s", what,
                           queued ? "before it started"
                                  : partial ? "in the middle of a message"
                                            : "while it waited for the peer");
        o->state = NEGSTREAM__OP_DONE;
        *negstream__op_pending_flag(s, o->kind) = false;
        *op_slot(s, o->kind) = NULL;
        if (is_auth(o->kind)) {
            if (queued) {
                s->state = NEGSTREAM__NEW;  /* nothing happened */
            } else {
                s->state = NEGSTREAM__FAILED;
                s->auth_failure = e;
            }
        } else if (partial && !s->faulted && !s->closed) {
            s->fault = e;
            s->faulted = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!taken)
        return -1;
    NEGSTREAM__TRACE("stream %p: %s", (void *)s, e.message);
    settle_deferred(o, &e, -1);
    return 0;
}

void negstream__op_set_cancel(negstream__op *o)
{
    negstream__async_set_cancel(o->ar, op_cancel);
}
