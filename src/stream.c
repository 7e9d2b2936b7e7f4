/*
 * stream.c - the negstream object: state, argument checks in .NET's order,
 * synchronous read/write, the asynchronous jobs, close and properties.
 *
 * Data flow of a write: negstream_begin_write (checks, marks the write
 * pending) -> async result -> pool job -> for each chunk of at most 64512
 * bytes: gss wrap (under gss_mu) -> length prefix -> transport -> the one
 * completion path (async.c) -> the caller's end_write or callback.
 *
 * References on a stream: the user's (dropped by negstream_close) and one
 * per async result not yet ended (taken when the operation is published,
 * dropped by the matching negstream_end_*).  So a running job, a queued
 * job and a completed-but-not-ended result all keep the stream alive; the
 * last reference closes the fd and frees the stream.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "async.h"
#include "error.h"
#include "frame.h"
#include "handshake.h"
#include "options.h"
#include "pool.h"
#include "scrub.h"
#include "stream.h"
#include "trace.h"

/* Size of the buffer one wrapped frame is built in: prefix + token. */
#define WBUF_SIZE (NEGSTREAM__DATA_HEADER_SIZE + NEGSTREAM__MAX_FRAME)
/* What wbuf needs for a chunk: the prefix, the chunk and the largest wrap
 * overhead a frame may carry (NEGSTREAM__MAX_FRAME - NEGSTREAM__MAX_CHUNK). */
#define WBUF_NEED(chunk) \
    (NEGSTREAM__DATA_HEADER_SIZE + (chunk) + \
     (NEGSTREAM__MAX_FRAME - NEGSTREAM__MAX_CHUNK))
/* The smallest frame buffer allocated. */
#define FRAME_BUF_MIN 1024

/*
 * One asynchronous operation.  It lives in the extra area of its async
 * result, so an operation costs one allocation.  The job is the first
 * member so that a job pointer is also an op pointer.
 */
typedef struct op {
    negstream__job   job;
    negstream       *s;
    negstream_async *ar;
    negstream_pool  *pool;      /* the pool the job was queued on */
    int              kind;      /* NEGSTREAM__OP_* */
    const uint8_t   *wdata;     /* write: caller's bytes (borrowed) */
    uint8_t         *rdata;     /* read: caller's buffer (borrowed) */
    size_t           count;
    /* authentication: the options, with private copies of the strings */
    negstream_client_options copt;
    negstream_server_options sopt;
    char            *strings;
    size_t           strings_len;
    char            *password;  /* in strings; wiped once acquired */
} op;

/* ---- references -------------------------------------------------------- */

/*
 * A stream is freed when its last reference goes: the user's (dropped by
 * negstream_close) and one per operation, taken under s->mu when the
 * operation is marked pending.  A synchronous call drops its own on
 * return; an asynchronous one hands it to its result, which end_* drops.
 * So a close from another thread never frees a stream under a call.
 */

static void stream_ref(negstream *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void stream_unref(negstream *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    NEGSTREAM__TRACE("stream %p freed", (void *)s);
    if (!s->leave_inner_open)
        close(s->tr.fd);
    negstream__gss_free(&s->gss);
    /* Plaintext after an in-place unwrap; in a Sign or None frame the
     * plaintext itself (scrub.c says what is wiped). */
    negstream__wipe(s->rbuf, s->rcap);
    negstream__wipe(s->wbuf, s->wcap);
    free(s->rbuf);
    free(s->wbuf);
    pthread_mutex_destroy(&s->gss_mu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- creation ---------------------------------------------------------- */

negstream *negstream_new(int fd, bool leave_inner_open, negstream_error *err)
{
    negstream *s;

    if (fd < 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "fd %d is not a file descriptor", fd);
        return NULL;
    }
    if (fcntl(fd, F_GETFD) < 0) {
        negstream__err_sys(err, NEGSTREAM_E_ARGUMENT, errno,
                           "fd %d is not open", fd);
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory allocating a stream");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->gss_mu, NULL);
    atomic_init(&s->refs, 1);
    negstream__transport_init(&s->tr, fd);
    s->leave_inner_open = leave_inner_open;
    s->read_timeout_ms = -1;
    s->write_timeout_ms = -1;
    s->gss.ctx = GSS_C_NO_CONTEXT;
    s->gss.cred = GSS_C_NO_CREDENTIAL;
    s->gss.target = GSS_C_NO_NAME;
    s->p_impersonation = NEGSTREAM_IMPERSONATION_NONE;
    NEGSTREAM__TRACE("stream %p created on fd %d%s", (void *)s, fd,
                     s->tr.is_socket ? " (socket)" : "");
    negstream__err_ok(err);
    return s;
}

int negstream_set_timeouts(negstream *s, int read_timeout_ms,
                           int write_timeout_ms, negstream_error *err)
{
    int rc = -1;

    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "stream is NULL");
        return -1;
    }
    if (read_timeout_ms < -1 || write_timeout_ms < -1) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "timeouts are milliseconds >= 0, or -1 for none");
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED, "stream is closed");
        goto out;
    }
    s->read_timeout_ms = read_timeout_ms;
    s->write_timeout_ms = write_timeout_ms;
    negstream__err_ok(err);
    rc = 0;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int negstream_set_pool(negstream *s, negstream_pool *p, negstream_error *err)
{
    int rc = -1;

    if (s == NULL || p == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           s == NULL ? "stream" : "pool");
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED, "stream is closed");
        goto out;
    }
    if (s->write_pending || s->read_pending || s->auth_pending) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "cannot change the pool while an operation is "
                           "pending");
        goto out;
    }
    s->pool = p;
    negstream__err_ok(err);
    rc = 0;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The pool operations of s run on.  Caller holds s->mu. */
static negstream_pool *stream_pool_locked(negstream *s, negstream_error *err)
{
    if (s->pool != NULL)
        return s->pool;
    return negstream__pool_default(err);
}

/* ---- pending flags ------------------------------------------------------ */

static bool *pending_flag(negstream *s, int kind)
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

static negstream_async **pending_slot(negstream *s, int kind)
{
    switch (kind) {
    case NEGSTREAM__OP_WRITE:
        return &s->pending_write;
    case NEGSTREAM__OP_READ:
        return &s->pending_read;
    default:
        return &s->pending_auth;
    }
}

static const char *kind_name(int kind)
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

/* ---- argument and state checks, in .NET's order ------------------------ */

/* ArgumentNull, then ArgumentOutOfRange, as Stream.ValidateBufferArguments
 * does: offset first, then count against what is left of the buffer. */
static int check_buffer_args(const negstream *s, const void *buffer,
                             size_t buffer_len, ssize_t offset,
                             ssize_t count, negstream_error *err)
{
    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "stream is NULL");
        return -1;
    }
    if (buffer == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "buffer is NULL");
        return -1;
    }
    if (offset < 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "offset %zd is negative", offset);
        return -1;
    }
    if (count < 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "count %zd is negative", count);
        return -1;
    }
    if ((size_t)offset > buffer_len
        || (size_t)count > buffer_len - (size_t)offset) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "offset %zd + count %zd exceed the buffer length "
                           "%zu", offset, count, buffer_len);
        return -1;
    }
    return 0;
}

/*
 * Closed, stored authentication failure, sticky fault, not authenticated,
 * already pending.  On success marks the operation pending.  Caller holds
 * s->mu.
 */
static int check_rw_state_locked(negstream *s, int kind, negstream_error *err)
{
    if (s->closed) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED, "stream is closed");
        return -1;
    }
    if (s->state == NEGSTREAM__FAILED) {
        negstream__err_copy(err, &s->auth_failure);
        return -1;
    }
    if (s->faulted) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "stream failed earlier: %s", s->fault.message);
        if (err != NULL) {
            err->sys_errno = s->fault.sys_errno;
            err->gss_major = s->fault.gss_major;
            err->gss_minor = s->fault.gss_minor;
        }
        return -1;
    }
    if (s->state != NEGSTREAM__AUTHENTICATED) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "stream is not authenticated");
        return -1;
    }
    if (*pending_flag(s, kind)) {
        negstream__err_set(err, NEGSTREAM_E_NOT_SUPPORTED,
                           "a %s is already pending on this stream",
                           kind_name(kind));
        return -1;
    }
    *pending_flag(s, kind) = true;
    stream_ref(s);      /* the operation's; see stream_unref */
    return 0;
}

static int begin_rw_checks(negstream *s, int kind, const void *buffer,
                           size_t buffer_len, ssize_t offset, ssize_t count,
                           negstream_error *err)
{
    int rc;

    if (check_buffer_args(s, buffer, buffer_len, offset, count, err) < 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    rc = check_rw_state_locked(s, kind, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void end_pending(negstream *s, int kind)
{
    pthread_mutex_lock(&s->mu);
    *pending_flag(s, kind) = false;
    *pending_slot(s, kind) = NULL;
    pthread_mutex_unlock(&s->mu);
}

/* Authentication: closed, already done or failed, in progress. */
static int check_auth_state_locked(negstream *s, negstream_error *err)
{
    if (s->closed) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED, "stream is closed");
        return -1;
    }
    if (s->state == NEGSTREAM__AUTHENTICATED) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "stream is already authenticated");
        return -1;
    }
    if (s->state == NEGSTREAM__FAILED) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "authentication already failed on this stream "
                           "(%s); open a new connection to retry",
                           s->auth_failure.message);
        return -1;
    }
    if (s->auth_pending || s->state == NEGSTREAM__AUTHENTICATING) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "an authentication is already in progress");
        return -1;
    }
    return 0;
}

static int check_mechanism(const char *mech, negstream_error *err)
{
    /* Any case, as gss.c matches them ("Kerberos", "NTLM"). */
    if (mech == NULL || strcasecmp(mech, "negotiate") == 0
        || strcasecmp(mech, "kerberos") == 0 || strcasecmp(mech, "ntlm") == 0)
        return 0;
    negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                       "unknown mechanism \"%.64s\" (use negotiate, "
                       "kerberos or ntlm)", mech);
    return -1;
}

static int check_protection(negstream_protection p, negstream_error *err)
{
    if (p == NEGSTREAM_PROTECTION_NONE || p == NEGSTREAM_PROTECTION_SIGN
        || p == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN)
        return 0;
    negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                       "protection level %d is not a negstream_protection",
                       (int)p);
    return -1;
}

/* The checks .NET makes on its arguments after the state checks. */
static int check_client_options(const negstream_client_options *o,
                                negstream_error *err)
{
    if (o->target_name == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "target_name is NULL");
        return -1;
    }
    if (o->impersonation != NEGSTREAM_IMPERSONATION_IDENTIFICATION
        && o->impersonation != NEGSTREAM_IMPERSONATION_IMPERSONATION
        && o->impersonation != NEGSTREAM_IMPERSONATION_DELEGATION) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "a client allows impersonation levels "
                           "IDENTIFICATION, IMPERSONATION or DELEGATION, "
                           "not %d", (int)o->impersonation);
        return -1;
    }
    if (check_protection(o->protection, err) < 0)
        return -1;
    return check_mechanism(o->mechanism, err);
}

static int check_server_options(const negstream_server_options *o,
                                negstream_error *err)
{
    if (o->impersonation < NEGSTREAM_IMPERSONATION_NONE
        || o->impersonation > NEGSTREAM_IMPERSONATION_DELEGATION) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "impersonation level %d is not a "
                           "negstream_impersonation", (int)o->impersonation);
        return -1;
    }
    if (check_protection(o->protection, err) < 0)
        return -1;
    return check_mechanism(o->mechanism, err);
}

/* ---- the work of a write ----------------------------------------------- */

static void timeouts(negstream *s, int *rd, int *wr)
{
    pthread_mutex_lock(&s->mu);
    *rd = s->read_timeout_ms;
    *wr = s->write_timeout_ms;
    pthread_mutex_unlock(&s->mu);
}

/*
 * Makes *buf hold at least need bytes (need <= max).  The frame buffers
 * are allocated on first use and grown (doubling, at most max), so an idle
 * authenticated stream holds none and a stream of small messages holds
 * small ones.  Only the one running read (rbuf) or write (wbuf) calls
 * this, and only between frames, when the buffer holds nothing.  On
 * failure the old buffer is kept and err says NOMEM.
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
    negstream__wipe(*buf, *cap);    /* the last frame's plaintext */
    free(*buf);
    *buf = nb;
    *cap = ncap;
    return 0;
}

/*
 * Writes count bytes: raw when nothing was negotiated (protection None),
 * else in frames of at most 64512 bytes, each wrapped straight into wbuf
 * behind its length prefix and sent with one call, before the next chunk
 * is wrapped, so the order of wraps is the order on the wire.  The write
 * flag guarantees one writer: wbuf needs no lock.  A failure faults the
 * stream: the peer may hold half a frame.  err must not be NULL.
 */
static ssize_t do_write(negstream *s, const uint8_t *data, size_t count,
                        negstream_error *err)
{
    struct iovec iov;
    size_t done = 0;
    int rd_to, wr_to;

    timeouts(s, &rd_to, &wr_to);
    if (!s->framed) {
        iov.iov_base = (void *)data;
        iov.iov_len = count;
        if (count > 0 && negstream__transport_writev_all(&s->tr, &iov, 1,
                                                         wr_to, NULL,
                                                         err) < 0)
            goto fail_io;
        negstream__err_ok(err);
        return (ssize_t)count;
    }
    /* The first chunk is the largest: one buffer fits them all.  Nothing
     * is sent yet, so a failure leaves the stream unchanged. */
    if (count > 0 &&
        grow_frame_buf(&s->wbuf, &s->wcap,
                       WBUF_NEED(count < NEGSTREAM__MAX_CHUNK
                                 ? count : NEGSTREAM__MAX_CHUNK),
                       WBUF_SIZE, "write", err) < 0) {
        negstream__err_prefix(err, "write failed, nothing sent");
        return -1;
    }
    while (done < count) {
        size_t chunk = count - done;
        ssize_t tok;

        if (chunk > NEGSTREAM__MAX_CHUNK)
            chunk = NEGSTREAM__MAX_CHUNK;
        pthread_mutex_lock(&s->gss_mu);
        tok = negstream__gss_wrap(&s->gss, data + done, chunk,
                                  s->wbuf + NEGSTREAM__DATA_HEADER_SIZE,
                                  s->wcap - NEGSTREAM__DATA_HEADER_SIZE, err);
        pthread_mutex_unlock(&s->gss_mu);
        if (tok < 0)
            goto fail;
        negstream__data_len_encode(s->wbuf, (uint32_t)tok);
        iov.iov_base = s->wbuf;
        iov.iov_len = NEGSTREAM__DATA_HEADER_SIZE + (size_t)tok;
        if (negstream__transport_writev_all(&s->tr, &iov, 1, wr_to, NULL,
                                            err) < 0)
            goto fail_io;
        NEGSTREAM__TRACE("stream %p: sent frame of %zd bytes (%zu plaintext)",
                         (void *)s, tok, chunk);
        done += chunk;
    }
    negstream__err_ok(err);
    return (ssize_t)count;

fail_io:
    negstream__err_prefix(err, "write failed");
fail:
    stream_fault(s, err);
    return -1;
}

/* ---- the work of a read ------------------------------------------------ */

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
 * Reads a data frame's length prefix.  Returns the length (5 to 65536), 0
 * at a clean end of stream, or -1 with err set (the caller faults the
 * stream: part of a header may be consumed).
 */
static ssize_t read_frame_len(negstream *s, int rd_to, negstream_error *err)
{
    uint8_t hdr[NEGSTREAM__DATA_HEADER_SIZE];
    uint32_t len;
    ssize_t got;

    got = negstream__transport_read_exact(&s->tr, hdr, sizeof(hdr), rd_to,
                                          err);
    if (got <= 0)
        return got;
    if ((size_t)got < sizeof(hdr)) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "connection closed inside a frame header "
                           "(%zd of 4 bytes)", got);
        return -1;
    }
    if (negstream__data_len_decode(hdr, &len) != NEGSTREAM__FRAME_OK) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "invalid frame size %u (accepted: %d to %d)",
                           len, NEGSTREAM__MIN_FRAME, NEGSTREAM__MAX_FRAME);
        return -1;
    }
    return (ssize_t)len;
}

/*
 * Reads at most one frame's worth.  Buffered plaintext first, without
 * touching the network; else one whole frame is read, checked, unwrapped
 * and buffered.  A frame that unwraps to nothing is skipped.  A count of 0
 * with nothing buffered waits for a frame, as .NET does.  err must not be
 * NULL.
 */
static ssize_t do_read(negstream *s, uint8_t *dst, size_t count,
                       negstream_error *err)
{
    int rd_to, wr_to;

    timeouts(s, &rd_to, &wr_to);
    if (!s->framed) {
        ssize_t n = negstream__transport_read_some(&s->tr, dst, count,
                                                   rd_to, err);
        if (n < 0)
            goto fail_io;
        negstream__err_ok(err);
        return n;
    }
    if (s->rpos < s->rlen) {
        negstream__err_ok(err);
        return (ssize_t)take_buffered(s, dst, count);
    }
    for (;;) {
        uint32_t len;
        size_t off = 0;
        ssize_t got, plain;

        /* rframe != 0: a header read before a failed allocation. */
        if (s->rframe == 0) {
            ssize_t n = read_frame_len(s, rd_to, err);

            if (n < 0)
                goto fail_io;
            if (n == 0) {
                NEGSTREAM__TRACE("stream %p: end of stream", (void *)s);
                negstream__err_ok(err);
                return 0;
            }
            s->rframe = (uint32_t)n;
        }
        if (grow_frame_buf(&s->rbuf, &s->rcap, s->rframe,
                           NEGSTREAM__MAX_FRAME, "read", err) < 0) {
            /* The header is consumed and rframe keeps its length, so the
             * next read goes on with this frame: nothing is lost. */
            negstream__err_prefix(err, "read failed, nothing consumed");
            return -1;
        }
        len = s->rframe;
        s->rframe = 0;
        got = negstream__transport_read_exact(&s->tr, s->rbuf, len, rd_to,
                                              err);
        if (got < 0)
            goto fail_io;
        if ((size_t)got < len) {
            negstream__err_set(err, NEGSTREAM_E_IO,
                               "connection closed inside a frame (%zd of "
                               "%u bytes)", got, len);
            goto fail_io;
        }
        pthread_mutex_lock(&s->gss_mu);
        plain = negstream__gss_unwrap(&s->gss, s->rbuf, len, &off, err);
        pthread_mutex_unlock(&s->gss_mu);
        if (plain < 0)
            goto fail;
        NEGSTREAM__TRACE("stream %p: received frame of %u bytes (%zd "
                         "plaintext)", (void *)s, len, plain);
        if (plain == 0)
            continue;
        s->rpos = off;
        s->rlen = off + (size_t)plain;
        negstream__err_ok(err);
        return (ssize_t)take_buffered(s, dst, count);
    }

fail_io:
    negstream__err_prefix(err, "read failed");
fail:
    stream_fault(s, err);
    return -1;
}

/* ---- the work of an authentication ------------------------------------- */

/* Copies what the context says into the stream, once it is complete.
 * The frame buffers come with the first read and the first write. */
static void finish_auth(negstream *s)
{
    bool framed = negstream__gss_is_framed(&s->gss);

    pthread_mutex_lock(&s->mu);
    s->framed = framed;
    s->p_encrypted = negstream__gss_is_encrypted(&s->gss);
    s->p_signed = negstream__gss_is_signed(&s->gss);
    s->p_mutual = negstream__gss_is_mutual(&s->gss);
    s->p_impersonation = negstream__gss_impersonation(&s->gss);
    s->p_auth_type = negstream__gss_auth_type(&s->gss);
    pthread_mutex_unlock(&s->mu);
}

/*
 * Runs a whole authentication, without s->mu (it blocks on the network).
 * The caller has moved the stream to AUTHENTICATING; this moves it to
 * AUTHENTICATED or FAILED.  A close during the handshake shuts the socket
 * down, so the handshake fails, and the failure is reported as DISPOSED.
 */
static int do_authenticate(negstream *s, int kind,
                           const negstream_client_options *co,
                           const negstream_server_options *so,
                           char *password_copy, negstream_error *err)
{
    int rd_to, wr_to, rc;

    timeouts(s, &rd_to, &wr_to);
    if (kind == NEGSTREAM__OP_AUTH_CLIENT) {
        rc = negstream__gss_client_init(&s->gss, co, err);
        /* The credentials are acquired (or could not be): our copy of
         * the password is of no more use. */
        if (password_copy != NULL)
            negstream__wipe(password_copy, strlen(password_copy));
        if (rc == 0)
            rc = negstream__handshake_client(&s->gss, &s->tr, rd_to, err);
    } else {
        rc = negstream__gss_server_init(&s->gss, so, err);
        if (rc == 0)
            rc = negstream__handshake_server(&s->gss, &s->tr, rd_to, err);
    }
    if (rc == 0)
        finish_auth(s);

    pthread_mutex_lock(&s->mu);
    s->auth_pending = false;
    s->pending_auth = NULL;
    if (rc == 0 && !s->closed) {
        s->state = NEGSTREAM__AUTHENTICATED;
        NEGSTREAM__TRACE("stream %p authenticated (%s, %s%s%s)", (void *)s,
                         s->p_auth_type, s->p_encrypted ? "encrypted" :
                         s->p_signed ? "signed" : "no protection",
                         s->p_mutual ? ", mutual" : "",
                         s->framed ? ", framed" : "");
    } else {
        if (rc == 0 || s->closed) {
            negstream__err_set(err, NEGSTREAM_E_DISPOSED,
                               "stream closed during authentication");
            rc = -1;
        }
        s->state = NEGSTREAM__FAILED;
        if (err != NULL)
            s->auth_failure = *err;
        else
            negstream__err_set(&s->auth_failure, NEGSTREAM_E_AUTHENTICATION,
                               "authentication failed");
        NEGSTREAM__TRACE("stream %p: authentication failed: %s", (void *)s,
                         s->auth_failure.message);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Auth state checks and the move to AUTHENTICATING, under s->mu. */
static int begin_auth_locked(negstream *s, int kind, negstream_error *err)
{
    if (check_auth_state_locked(s, err) < 0)
        return -1;
    s->auth_pending = true;
    s->state = NEGSTREAM__AUTHENTICATING;
    s->is_server = (kind == NEGSTREAM__OP_AUTH_SERVER);
    stream_ref(s);      /* the operation's; see stream_unref */
    return 0;
}

static int auth_sync(negstream *s, int kind,
                     const negstream_client_options *co,
                     const negstream_server_options *so,
                     negstream_error *err)
{
    negstream_error local;
    int rc;

    pthread_mutex_lock(&s->mu);
    rc = begin_auth_locked(s, kind, err);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return -1;
    /* do_authenticate needs an error record to store the failure.  The
     * password is the caller's: never written. */
    rc = do_authenticate(s, kind, co, so, NULL, err != NULL ? err : &local);
    stream_unref(s);    /* a close meanwhile may free the stream here */
    return rc;
}

int negstream_authenticate_as_client(negstream *s,
                                     const negstream_client_options *o,
                                     negstream_error *err)
{
    negstream_client_options co;

    if (s == NULL || o == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           s == NULL ? "stream" : "options");
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    if (check_auth_state_locked(s, err) < 0) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    pthread_mutex_unlock(&s->mu);
    /* From here on our copy, of this library's version (options.h). */
    if (negstream__client_options_import(&co, o, err) < 0 ||
        check_client_options(&co, err) < 0)
        return -1;
    return auth_sync(s, NEGSTREAM__OP_AUTH_CLIENT, &co, NULL, err);
}

int negstream_authenticate_as_server(negstream *s,
                                     const negstream_server_options *o,
                                     negstream_error *err)
{
    negstream_server_options defaults, so;

    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "stream is NULL");
        return -1;
    }
    if (o == NULL) {
        negstream_server_options_init(&defaults);
        o = &defaults;
    }
    pthread_mutex_lock(&s->mu);
    if (check_auth_state_locked(s, err) < 0) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    pthread_mutex_unlock(&s->mu);
    if (negstream__server_options_import(&so, o, err) < 0 ||
        check_server_options(&so, err) < 0)
        return -1;
    return auth_sync(s, NEGSTREAM__OP_AUTH_SERVER, NULL, &so, err);
}

/*
 * The outcome of an operation that ran while the stream was closed under
 * it: a failure becomes DISPOSED, and so does a read's end of stream (the
 * shut-down socket is our own close, not the peer's; .NET's read fails
 * after Dispose too).  Caller holds s->mu.
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
                           kind_name(kind), why.message);
    }
    return result;
}

/*
 * Ends a synchronous read or write: clears its pending flag, settles the
 * outcome against a concurrent close, and drops the operation's stream
 * reference (the stream may be freed here if it was closed meanwhile).
 */
static ssize_t end_sync(negstream *s, int kind, ssize_t result,
                        negstream_error *err)
{
    pthread_mutex_lock(&s->mu);
    *pending_flag(s, kind) = false;
    result = settle_closed_locked(s, kind, result, err);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
    return result;
}

/* ---- synchronous read and write ---------------------------------------- */

ssize_t negstream_write(negstream *s, const void *buffer, size_t buffer_len,
                        ssize_t offset, ssize_t count, negstream_error *err)
{
    negstream_error local;
    ssize_t n;

    if (err == NULL)
        err = &local;           /* the fault is recorded from it */
    if (begin_rw_checks(s, NEGSTREAM__OP_WRITE, buffer, buffer_len, offset,
                        count, err) < 0)
        return -1;
    n = do_write(s, (const uint8_t *)buffer + offset, (size_t)count, err);
    return end_sync(s, NEGSTREAM__OP_WRITE, n, err);
}

ssize_t negstream_read(negstream *s, void *buffer, size_t buffer_len,
                       ssize_t offset, ssize_t count, negstream_error *err)
{
    negstream_error local;
    ssize_t n;

    if (err == NULL)
        err = &local;           /* the fault is recorded from it */
    if (begin_rw_checks(s, NEGSTREAM__OP_READ, buffer, buffer_len, offset,
                        count, err) < 0)
        return -1;
    n = do_read(s, (uint8_t *)buffer + offset, (size_t)count, err);
    return end_sync(s, NEGSTREAM__OP_READ, n, err);
}

/* ---- asynchronous operations ------------------------------------------- */

/* The copies may hold a password: wiped before they are freed. */
static void op_free_strings(op *o)
{
    negstream__wipe(o->strings, o->strings_len);
    free(o->strings);
    o->strings = NULL;
    o->strings_len = 0;
    o->password = NULL;
}

/*
 * Ends an operation: clears its pending flag, turns a failure after close
 * into DISPOSED, and completes the result.  The last thing a job does: the
 * callback may end the result; the stream is freed after it returns if that
 * was the last reference.
 */
static void op_finish(op *o, ssize_t result, negstream_error *e)
{
    negstream *s = o->s;
    negstream_async *ar = o->ar;

    op_free_strings(o);
    pthread_mutex_lock(&s->mu);
    *pending_flag(s, o->kind) = false;
    *pending_slot(s, o->kind) = NULL;
    result = settle_closed_locked(s, o->kind, result, e);
    pthread_mutex_unlock(&s->mu);
    /* Last: the callback may end the result and drop the last reference
     * on the stream.  A callback that chains a begin_* must do so before
     * ending its own result (see negstream_new(3)). */
    negstream__async_complete(ar, e, result, false);
}

static void write_job(negstream__job *job)
{
    op *o = (op *)job;
    negstream_error e;
    ssize_t n;

    n = do_write(o->s, o->wdata, o->count, &e);
    op_finish(o, n, &e);
}

static void read_job(negstream__job *job)
{
    op *o = (op *)job;
    negstream_error e;
    ssize_t n;

    n = do_read(o->s, o->rdata, o->count, &e);
    op_finish(o, n, &e);
}

static void auth_job(negstream__job *job)
{
    op *o = (op *)job;
    negstream_error e;
    int rc;

    /* do_authenticate clears the auth flag itself (it owns the state
     * change); op_finish clearing it again is harmless. */
    rc = do_authenticate(o->s, o->kind, &o->copt, &o->sopt, o->password,
                         &e);
    op_finish(o, rc < 0 ? -1 : 0, &e);
}

/*
 * negstream_async_cancel's hook: takes the job out of the queue if no
 * worker has it yet.  The async result holds a stream reference until it
 * is ended, so o->s is alive here.
 */
static int op_cancel(negstream_async *ar)
{
    op *o = negstream__async_extra(ar);
    negstream *s = o->s;
    negstream_error e;
    bool removed;

    pthread_mutex_lock(&s->mu);
    removed = negstream__pool_cancel(o->pool, &o->job);
    if (removed && o->kind != NEGSTREAM__OP_WRITE
        && o->kind != NEGSTREAM__OP_READ)
        s->state = NEGSTREAM__NEW;    /* nothing was sent: may start over */
    pthread_mutex_unlock(&s->mu);
    if (!removed)
        return -1;
    negstream__err_set(&e, NEGSTREAM_E_CANCELED,
                       "%s cancelled before it started", kind_name(o->kind));
    op_finish(o, -1, &e);
    return 0;
}

/*
 * Publishes and queues an operation whose pending flag the caller has set.
 * Takes the result's stream reference.  If the stream was closed in the
 * meantime, or the pool refuses the job, the result completes at once
 * (synchronously) with that error: it is returned all the same, so that
 * exactly one completion reaches the caller.
 */
static negstream_async *op_submit(negstream *s, op *o)
{
    negstream_async *ar = o->ar;
    negstream_error e;
    int rc = -1;

    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        negstream__err_set(&e, NEGSTREAM_E_DISPOSED,
                           "stream closed before the %s started",
                           kind_name(o->kind));
    } else {
        o->pool = stream_pool_locked(s, &e);
        if (o->pool != NULL)
            rc = negstream__pool_submit(o->pool, &o->job, &e);
    }
    if (rc == 0)
        *pending_slot(s, o->kind) = ar;
    else if (o->kind == NEGSTREAM__OP_AUTH_CLIENT
             || o->kind == NEGSTREAM__OP_AUTH_SERVER)
        s->state = NEGSTREAM__NEW;
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        op_free_strings(o);
        end_pending(s, o->kind);
        negstream__async_complete(ar, &e, -1, true);
    }
    return ar;
}

/* A new result for an operation whose pending flag is set; on failure the
 * flag is cleared again (and, for authentication, the state reset). */
static op *op_new(negstream *s, int kind, negstream_callback cb,
                  void *state, negstream_error *err)
{
    negstream_async *ar;
    op *o;

    ar = negstream__async_new(kind, s, cb, state, sizeof(op), err);
    if (ar == NULL) {
        pthread_mutex_lock(&s->mu);
        *pending_flag(s, kind) = false;
        if (kind == NEGSTREAM__OP_AUTH_CLIENT
            || kind == NEGSTREAM__OP_AUTH_SERVER)
            s->state = NEGSTREAM__NEW;
        pthread_mutex_unlock(&s->mu);
        stream_unref(s);
        return NULL;
    }
    o = negstream__async_extra(ar);
    o->s = s;
    o->ar = ar;
    o->kind = kind;
    negstream__async_set_cancel(ar, op_cancel);
    return o;
}

negstream_async *negstream_begin_write(negstream *s, const void *buffer,
                                       size_t buffer_len, ssize_t offset,
                                       ssize_t count, negstream_callback cb,
                                       void *state, negstream_error *err)
{
    op *o;

    if (begin_rw_checks(s, NEGSTREAM__OP_WRITE, buffer, buffer_len, offset,
                        count, err) < 0)
        return NULL;
    o = op_new(s, NEGSTREAM__OP_WRITE, cb, state, err);
    if (o == NULL)
        return NULL;
    o->job.run = write_job;
    o->wdata = (const uint8_t *)buffer + offset;
    o->count = (size_t)count;
    negstream__err_ok(err);
    return op_submit(s, o);
}

negstream_async *negstream_begin_read(negstream *s, void *buffer,
                                      size_t buffer_len, ssize_t offset,
                                      ssize_t count, negstream_callback cb,
                                      void *state, negstream_error *err)
{
    op *o;

    if (begin_rw_checks(s, NEGSTREAM__OP_READ, buffer, buffer_len, offset,
                        count, err) < 0)
        return NULL;
    o = op_new(s, NEGSTREAM__OP_READ, cb, state, err);
    if (o == NULL)
        return NULL;
    o->job.run = read_job;
    o->rdata = (uint8_t *)buffer + offset;
    o->count = (size_t)count;
    negstream__err_ok(err);
    return op_submit(s, o);
}

/* Copies the option strings into one private block, so that the caller's
 * options need not outlive begin_*. */
static int copy_strings(op *o, const char **fields[], size_t n,
                        negstream_error *err)
{
    size_t i, total = 0;
    char *p;

    for (i = 0; i < n; i++)
        if (*fields[i] != NULL)
            total += strlen(*fields[i]) + 1;
    if (total == 0)
        return 0;
    o->strings = p = malloc(total);
    if (p == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory copying the options");
        return -1;
    }
    o->strings_len = total;
    for (i = 0; i < n; i++) {
        size_t len;

        if (*fields[i] == NULL)
            continue;
        len = strlen(*fields[i]) + 1;
        memcpy(p, *fields[i], len);
        *fields[i] = p;
        p += len;
    }
    return 0;
}

/* Drops an op that was never queued: it completes synchronously with err,
 * as op_submit does for a refused job. */
static negstream_async *op_fail_early(negstream *s, op *o,
                                      const negstream_error *err)
{
    negstream_error e = *err;

    pthread_mutex_lock(&s->mu);
    s->state = NEGSTREAM__NEW;
    pthread_mutex_unlock(&s->mu);
    end_pending(s, o->kind);
    negstream__async_complete(o->ar, &e, -1, true);
    return o->ar;
}

static negstream_async *begin_auth(negstream *s, int kind,
                                   const negstream_client_options *co,
                                   const negstream_server_options *so,
                                   negstream_callback cb, void *state,
                                   negstream_error *err)
{
    negstream_error e;
    op *o;
    int rc;

    pthread_mutex_lock(&s->mu);
    rc = begin_auth_locked(s, kind, err);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return NULL;
    o = op_new(s, kind, cb, state, err);
    if (o == NULL)
        return NULL;
    o->job.run = auth_job;
    if (kind == NEGSTREAM__OP_AUTH_CLIENT) {
        const char **f[] = { &o->copt.target_name, &o->copt.user,
                             &o->copt.domain, &o->copt.password,
                             &o->copt.mechanism };

        o->copt = *co;
        rc = copy_strings(o, f, sizeof(f) / sizeof(f[0]), &e);
        if (rc == 0)    /* then ours, in strings */
            o->password = (char *)o->copt.password;
    } else {
        const char **f[] = { &o->sopt.service_name, &o->sopt.mechanism };

        o->sopt = *so;
        rc = copy_strings(o, f, sizeof(f) / sizeof(f[0]), &e);
    }
    if (rc < 0)
        return op_fail_early(s, o, &e);
    negstream__err_ok(err);
    return op_submit(s, o);
}

negstream_async *negstream_begin_authenticate_as_client(
        negstream *s, const negstream_client_options *o,
        negstream_callback cb, void *state, negstream_error *err)
{
    negstream_client_options co;

    if (s == NULL || o == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           s == NULL ? "stream" : "options");
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    if (check_auth_state_locked(s, err) < 0) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (negstream__client_options_import(&co, o, err) < 0 ||
        check_client_options(&co, err) < 0)
        return NULL;
    return begin_auth(s, NEGSTREAM__OP_AUTH_CLIENT, &co, NULL, cb, state,
                      err);
}

negstream_async *negstream_begin_authenticate_as_server(
        negstream *s, const negstream_server_options *o,
        negstream_callback cb, void *state, negstream_error *err)
{
    negstream_server_options defaults, so;

    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "stream is NULL");
        return NULL;
    }
    if (o == NULL) {
        negstream_server_options_init(&defaults);
        o = &defaults;
    }
    pthread_mutex_lock(&s->mu);
    if (check_auth_state_locked(s, err) < 0) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (negstream__server_options_import(&so, o, err) < 0 ||
        check_server_options(&so, err) < 0)
        return NULL;
    return begin_auth(s, NEGSTREAM__OP_AUTH_SERVER, NULL, &so, cb, state,
                      err);
}

/*
 * Pool starvation guard: a callback running on a worker that ends a result
 * whose job is still queued on the same pool would wait for a worker that
 * may never come (every worker could be doing the same).  Run the job here
 * instead.
 */
static void run_inline_if_queued(negstream *s, negstream_async *ar)
{
    op *o = negstream__async_extra(ar);
    bool stolen = false;

    if (negstream_async_is_completed(ar) || o->pool == NULL
        || !negstream__pool_is_worker(o->pool))
        return;
    pthread_mutex_lock(&s->mu);
    stolen = negstream__pool_cancel(o->pool, &o->job);
    pthread_mutex_unlock(&s->mu);
    if (stolen)
        o->job.run(&o->job);
}

/* Validates, waits, releases the result and its stream reference. */
static ssize_t end_op(negstream *s, negstream_async *ar, int kind,
                      negstream_error *err)
{
    ssize_t n;

    if (s == NULL || ar == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           s == NULL ? "stream" : "async result");
        return -1;
    }
    if (!negstream__async_matches(ar, kind, s)) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "the async result does not come from a %s begun "
                           "on this stream", kind_name(kind));
        return -1;
    }
    run_inline_if_queued(s, ar);
    n = negstream__async_end(ar, err);
    stream_unref(s);
    return n;
}

int negstream_end_write(negstream *s, negstream_async *ar,
                        negstream_error *err)
{
    return end_op(s, ar, NEGSTREAM__OP_WRITE, err) < 0 ? -1 : 0;
}

ssize_t negstream_end_read(negstream *s, negstream_async *ar,
                           negstream_error *err)
{
    return end_op(s, ar, NEGSTREAM__OP_READ, err);
}

int negstream_end_authenticate_as_client(negstream *s, negstream_async *ar,
                                         negstream_error *err)
{
    return end_op(s, ar, NEGSTREAM__OP_AUTH_CLIENT, err) < 0 ? -1 : 0;
}

int negstream_end_authenticate_as_server(negstream *s, negstream_async *ar,
                                         negstream_error *err)
{
    return end_op(s, ar, NEGSTREAM__OP_AUTH_SERVER, err) < 0 ? -1 : 0;
}

/* ---- close ------------------------------------------------------------- */

/*
 * Dispose.  Queued operations are taken off the queue (under s->mu, so
 * that no worker can take and finish them meanwhile) and complete with
 * DISPOSED; running ones are woken by shutting the socket down and finish
 * with DISPOSED themselves.  Nothing is sent to the peer.  Safe from a
 * callback: it never waits for a job.
 */
void negstream_close(negstream *s)
{
    op *cancelled[3];
    size_t i, n = 0;
    bool running = false;
    int kinds[3] = { NEGSTREAM__OP_WRITE, NEGSTREAM__OP_READ,
                     NEGSTREAM__OP_AUTH_CLIENT };

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->closed = true;
    for (i = 0; i < 3; i++) {
        negstream_async *ar = *pending_slot(s, kinds[i]);
        op *o;

        if (ar == NULL) {
            /* A synchronous call in progress holds the flag alone. */
            running |= *pending_flag(s, kinds[i]);
            continue;
        }
        o = negstream__async_extra(ar);
        if (negstream__pool_cancel(o->pool, &o->job))
            cancelled[n++] = o;
        else
            running = true;
    }
    pthread_mutex_unlock(&s->mu);
    NEGSTREAM__TRACE("stream %p closed (%zu queued, %s running)", (void *)s,
                     n, running ? "some" : "none");
    if (running)
        negstream__transport_shutdown(&s->tr);
    for (i = 0; i < n; i++) {
        negstream_error e;

        negstream__err_set(&e, NEGSTREAM_E_DISPOSED,
                           "stream closed before the %s started",
                           kind_name(cancelled[i]->kind));
        op_finish(cancelled[i], -1, &e);
    }
    stream_unref(s);
}

/* ---- properties -------------------------------------------------------- */

/* Properties are false / NONE / NULL unless the stream is authenticated
 * and not closed, as in .NET. */
#define PROPERTY(type, name, expr, otherwise)                              \
    type name(const negstream *cs)                                         \
    {                                                                      \
        negstream *s = (negstream *)cs;                                    \
        type v = otherwise;                                                \
                                                                           \
        if (s == NULL)                                                     \
            return otherwise;                                              \
        pthread_mutex_lock(&s->mu);                                        \
        if (s->state == NEGSTREAM__AUTHENTICATED && !s->closed)            \
            v = (expr);                                                    \
        pthread_mutex_unlock(&s->mu);                                      \
        return v;                                                          \
    }

PROPERTY(bool, negstream_is_authenticated, true, false)
PROPERTY(bool, negstream_is_encrypted, s->p_encrypted, false)
PROPERTY(bool, negstream_is_signed, s->p_signed, false)
PROPERTY(bool, negstream_is_mutually_authenticated, s->p_mutual, false)
PROPERTY(negstream_impersonation, negstream_impersonation_level,
         s->p_impersonation, NEGSTREAM_IMPERSONATION_NONE)
PROPERTY(const char *, negstream_remote_identity, s->gss.peer_name, NULL)
PROPERTY(const char *, negstream_authentication_type, s->p_auth_type, NULL)

/* IsServer: true once a server authentication was attempted, even if it
 * failed, as in .NET. */
bool negstream_is_server(const negstream *cs)
{
    negstream *s = (negstream *)cs;
    bool v;

    if (s == NULL)
        return false;
    pthread_mutex_lock(&s->mu);
    v = s->is_server && !s->closed;
    pthread_mutex_unlock(&s->mu);
    return v;
}
