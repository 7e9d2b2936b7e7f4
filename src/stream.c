/*
 * stream.c - the negstream object: creation, references and release,
 * settings, argument and state checks in .NET's order, the public
 * read/write/authenticate calls (synchronous and begin/end), close and
 * the properties.  The operations themselves run in op.c.
 *
 * References (see stream.h): the logical ones (the user's, one per
 * operation until ended) release the resources when the last goes; the
 * memory ones keep the struct alive across a completion's callback.
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
#include "op.h"
#include "options.h"
#include "pool.h"
#include "scrub.h"
#include "stream.h"
#include "trace.h"
#include "transport_io.h"

/* Authentication's whole-operation deadline unless set (issue 11): a
 * handshake that has not finished in a minute is a peer that will not. */
#define AUTH_TIMEOUT_DEFAULT_MS 60000

/* ---- references -------------------------------------------------------- */

static void stream_ref(negstream *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void negstream__stream_mhold(negstream *s)
{
    atomic_fetch_add_explicit(&s->mrefs, 1, memory_order_relaxed);
}

/* The last memory reference: only memory goes, no GSSAPI (this may run on
 * a worker after the application's main has returned). */
void negstream__stream_mdrop(negstream *s)
{
    if (atomic_fetch_sub_explicit(&s->mrefs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&s->gss_mu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/*
 * The last logical reference: the stream is closed and every operation
 * has ended, so nothing can use the transport, the context or the
 * buffers any more.  The read buffer may hold plaintext: wiped.
 */
void negstream__stream_unref(negstream *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    NEGSTREAM__TRACE("stream %p released", (void *)s);
    pthread_mutex_lock(&s->mu);
    negstream__op_unlock_tr(s);
    negstream__gss_free(&s->gss);
    negstream__wipe(s->rbuf, s->rcap);
    free(s->rbuf);
    negstream__wipe(s->wbuf, s->wcap);
    free(s->wbuf);
    negstream__wake_close(&s->wake);
    negstream__stream_mdrop(s);
}

/* ---- creation ---------------------------------------------------------- */

/* Everything but the transport (s->tr set up) and the caller's fd. */
static void stream_setup(negstream *s)
{
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->gss_mu, NULL);
    atomic_init(&s->refs, 1);
    atomic_init(&s->mrefs, 1);
    s->tr_open = true;
    negstream__pollfd_init(&s->pfd, s->tr.fd);
    negstream__pollfd_init(&s->pfd_out, s->tr.fd_out);
    s->wake.r = s->wake.w = -1;
    s->user_fd = -1;
    s->read_timeout_ms = -1;
    s->write_timeout_ms = -1;
    s->auth_timeout_ms = AUTH_TIMEOUT_DEFAULT_MS;
    s->gss.ctx = GSS_C_NO_CONTEXT;
    s->gss.cred = GSS_C_NO_CREDENTIAL;
    s->gss.target = GSS_C_NO_NAME;
    s->p_impersonation = NEGSTREAM_IMPERSONATION_NONE;
    negstream__reasm_init(&s->rr, NEGSTREAM__REASM_DATA);
}

/* A zeroed stream, or NULL (err set). */
static negstream *stream_alloc(negstream_error *err)
{
    negstream *s = calloc(1, sizeof(*s));

    if (s == NULL)
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory allocating a stream");
    return s;
}

/* Frees a stream from stream_alloc whose transport could not be set up,
 * passes that error on; returns NULL. */
static negstream *stream_discard(negstream *s, const negstream_error *e,
                                 negstream_error *err)
{
    free(s);
    negstream__err_copy(err, e);
    return NULL;
}

/*
 * The stream works on its own duplicate of fd, so that after
 * negstream_close nothing of the library ever touches the number fd
 * again, whatever the application does with it (close it, reuse it).
 * Without leave_inner_open, fd itself is closed by negstream_close.
 */
negstream *negstream_new(int fd, bool leave_inner_open, negstream_error *err)
{
    negstream *s;
    negstream_error e;

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
    s = stream_alloc(err);
    if (s == NULL)
        return NULL;
    if (negstream__transport_fd(&s->tr, fd, &e) < 0)
        return stream_discard(s, &e, err);
    stream_setup(s);
    s->user_fd = fd;
    s->leave_inner_open = leave_inner_open;
    NEGSTREAM__TRACE("stream %p created on fd %d (working on fd %d%s)",
                     (void *)s, fd, s->tr.fd,
                     s->tr.is_socket ? ", a socket" : "");
    negstream__err_ok(err);
    return s;
}

/*
 * A stream on the application's transport (transport_io.c): no fd of the
 * caller's to close; the table's shutdown is negstream_close's end of the
 * connection and its close the release of ctx, once no step can run.
 */
negstream *negstream_new_io(const negstream_io *io, void *ctx,
                            negstream_error *err)
{
    negstream *s;
    negstream_error e;

    if (io == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "io is NULL");
        return NULL;
    }
    s = stream_alloc(err);
    if (s == NULL)
        return NULL;
    if (negstream__transport_io(&s->tr, io, ctx, &e) < 0)
        return stream_discard(s, &e, err);
    stream_setup(s);
    s->leave_inner_open = true;     /* nothing of the caller's to close */
    if (s->tr.fd_out >= 0)
        NEGSTREAM__TRACE("stream %p created on a custom transport (polling "
                         "fd %d to read, fd %d to write)", (void *)s,
                         s->tr.fd, s->tr.fd_out);
    else
        NEGSTREAM__TRACE("stream %p created on a custom transport (polling "
                         "fd %d)", (void *)s, s->tr.fd);
    negstream__err_ok(err);
    return s;
}

/* Sets *field to ms under s->mu unless the stream is closed. */
static int set_locked_ms(negstream *s, int *a, int va, int *b, int vb,
                         negstream_error *err)
{
    int rc = -1;

    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED, "stream is closed");
        goto out;
    }
    *a = va;
    if (b != NULL)
        *b = vb;
    negstream__err_ok(err);
    rc = 0;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int negstream_set_timeouts(negstream *s, int read_timeout_ms,
                           int write_timeout_ms, negstream_error *err)
{
    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "stream is NULL");
        return -1;
    }
    if (read_timeout_ms < -1 || write_timeout_ms < -1) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "timeouts are milliseconds >= 0, or -1 for none");
        return -1;
    }
    return set_locked_ms(s, &s->read_timeout_ms, read_timeout_ms,
                         &s->write_timeout_ms, write_timeout_ms, err);
}

int negstream_set_auth_timeout(negstream *s, int timeout_ms,
                               negstream_error *err)
{
    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "stream is NULL");
        return -1;
    }
    if (timeout_ms < -1) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "the authentication timeout is milliseconds "
                           ">= 0, or -1 for none");
        return -1;
    }
    return set_locked_ms(s, &s->auth_timeout_ms, timeout_ms, NULL, 0, err);
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
    /* The fd may be known to the old pool's poller: nothing is armed
     * (nothing is pending), so it can forget it now. */
    if (p != s->pool) {
        negstream__poller_forget(&s->pfd);
        negstream__poller_forget(&s->pfd_out);
    }
    s->pool = p;
    negstream__err_ok(err);
    rc = 0;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
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
    if (*negstream__op_pending_flag(s, kind)) {
        negstream__err_set(err, NEGSTREAM_E_NOT_SUPPORTED,
                           "a %s is already pending on this stream",
                           negstream__op_kind_name(kind));
        return -1;
    }
    *negstream__op_pending_flag(s, kind) = true;
    stream_ref(s);      /* the operation's; see stream.h */
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

/* Channel bindings: len bytes at p, which may be NULL only when len is 0;
 * needed_by names the policy that needs them (NULL: none does). */
static int check_binding(const void *p, size_t len, const char *needed_by,
                         negstream_error *err)
{
    if (p == NULL && len > 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "channel_binding is NULL but channel_binding_len "
                           "is %zu", len);
        return -1;
    }
    if (needed_by != NULL && len == 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "Extended Protection %s needs the channel "
                           "bindings to expect (channel_binding_len is 0)",
                           needed_by);
        return -1;
    }
    return 0;
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
    if (check_mechanism(o->mechanism, err) < 0)
        return -1;
    if (o->ccache_name != NULL && o->password != NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "ccache_name and password are both set (a "
                           "password acquires new credentials; a ccache "
                           "holds existing ones)");
        return -1;
    }
    return check_binding(o->channel_binding, o->channel_binding_len, NULL,
                         err);
}

static int check_server_options(const negstream_server_options *o,
                                negstream_error *err)
{
    const char *ep = NULL;

    if (o->impersonation < NEGSTREAM_IMPERSONATION_NONE
        || o->impersonation > NEGSTREAM_IMPERSONATION_DELEGATION) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "impersonation level %d is not a "
                           "negstream_impersonation", (int)o->impersonation);
        return -1;
    }
    if (check_protection(o->protection, err) < 0)
        return -1;
    if (check_mechanism(o->mechanism, err) < 0)
        return -1;
    switch (o->extended_protection) {
    case NEGSTREAM_EXTENDED_PROTECTION_NEVER:
        return 0;           /* the bindings, if any, are not looked at */
    case NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED:
        ep = "WhenSupported";
        break;
    case NEGSTREAM_EXTENDED_PROTECTION_ALWAYS:
        ep = "Always";
        break;
    default:
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "extended_protection %d is not a "
                           "negstream_extended_protection",
                           (int)o->extended_protection);
        return -1;
    }
    return check_binding(o->channel_binding, o->channel_binding_len, ep,
                         err);
}

/* ---- reading and writing ----------------------------------------------- */

ssize_t negstream_write(negstream *s, const void *buffer, size_t buffer_len,
                        ssize_t offset, ssize_t count, negstream_error *err)
{
    negstream__op o;

    if (begin_rw_checks(s, NEGSTREAM__OP_WRITE, buffer, buffer_len, offset,
                        count, err) < 0)
        return -1;
    negstream__op_init(&o, s, NEGSTREAM__OP_WRITE);
    o.wdata = (const uint8_t *)buffer + offset;
    o.count = (size_t)count;
    return negstream__op_run_sync(&o, err);
}

ssize_t negstream_read(negstream *s, void *buffer, size_t buffer_len,
                       ssize_t offset, ssize_t count, negstream_error *err)
{
    negstream__op o;

    if (begin_rw_checks(s, NEGSTREAM__OP_READ, buffer, buffer_len, offset,
                        count, err) < 0)
        return -1;
    negstream__op_init(&o, s, NEGSTREAM__OP_READ);
    o.rdata = (uint8_t *)buffer + offset;
    o.count = (size_t)count;
    return negstream__op_run_sync(&o, err);
}

/*
 * A new result for an operation whose pending flag is set (and whose
 * reference the caller took); on failure the flag is cleared again, the
 * state of an authentication reset and the reference dropped.
 */
static negstream__op *op_new(negstream *s, int kind, negstream_callback cb,
                             void *state, negstream_error *err)
{
    negstream_async *ar;
    negstream__op *o;

    ar = negstream__async_new(kind, s, cb, state, sizeof(negstream__op),
                              err);
    if (ar == NULL) {
        pthread_mutex_lock(&s->mu);
        *negstream__op_pending_flag(s, kind) = false;
        if (kind == NEGSTREAM__OP_AUTH_CLIENT
            || kind == NEGSTREAM__OP_AUTH_SERVER)
            s->state = NEGSTREAM__NEW;
        pthread_mutex_unlock(&s->mu);
        negstream__stream_unref(s);
        return NULL;
    }
    o = negstream__async_extra(ar);
    negstream__op_init(o, s, kind);
    o->ar = ar;
    negstream__op_set_cancel(o);
    return o;
}

negstream_async *negstream_begin_write(negstream *s, const void *buffer,
                                       size_t buffer_len, ssize_t offset,
                                       ssize_t count, negstream_callback cb,
                                       void *state, negstream_error *err)
{
    negstream__op *o;

    if (begin_rw_checks(s, NEGSTREAM__OP_WRITE, buffer, buffer_len, offset,
                        count, err) < 0)
        return NULL;
    o = op_new(s, NEGSTREAM__OP_WRITE, cb, state, err);
    if (o == NULL)
        return NULL;
    o->wdata = (const uint8_t *)buffer + offset;
    o->count = (size_t)count;
    return negstream__op_submit(o, err);
}

negstream_async *negstream_begin_read(negstream *s, void *buffer,
                                      size_t buffer_len, ssize_t offset,
                                      ssize_t count, negstream_callback cb,
                                      void *state, negstream_error *err)
{
    negstream__op *o;

    if (begin_rw_checks(s, NEGSTREAM__OP_READ, buffer, buffer_len, offset,
                        count, err) < 0)
        return NULL;
    o = op_new(s, NEGSTREAM__OP_READ, cb, state, err);
    if (o == NULL)
        return NULL;
    o->rdata = (uint8_t *)buffer + offset;
    o->count = (size_t)count;
    return negstream__op_submit(o, err);
}

/* ---- authentication ---------------------------------------------------- */

/* Copies the option strings into one private block, so that the caller's
 * options need not outlive begin_*. */
static int copy_strings(negstream__auth *a, const char **fields[], size_t n,
                        negstream_error *err)
{
    size_t i, total = 0;
    char *p;

    for (i = 0; i < n; i++)
        if (*fields[i] != NULL)
            total += strlen(*fields[i]) + 1;
    a->strings_len = total;
    if (total == 0)
        return 0;
    a->strings = p = malloc(total);
    if (p == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory copying the options");
        return -1;
    }
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

/* Copies the channel bindings (*data, len bytes) likewise; *data then
 * points to the copy. */
static int copy_binding(negstream__auth *a, const void **data, size_t len,
                        negstream_error *err)
{
    if (len == 0 || *data == NULL)
        return 0;
    a->binding = malloc(len);
    if (a->binding == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory copying the channel bindings");
        return -1;
    }
    memcpy(a->binding, *data, len);
    *data = a->binding;
    return 0;
}

/* Auth state checks and the move to AUTHENTICATING, under s->mu. */
static int begin_auth_locked(negstream *s, int kind, negstream_error *err)
{
    if (check_auth_state_locked(s, err) < 0)
        return -1;
    s->auth_pending = true;
    s->state = NEGSTREAM__AUTHENTICATING;
    s->is_server = (kind == NEGSTREAM__OP_AUTH_SERVER);
    stream_ref(s);      /* the operation's; see stream.h */
    return 0;
}

/*
 * The checks of both authentications, in .NET's order: the stream and its
 * state first, then the options, read from the caller's structure of
 * whatever version into *cco / *sso (this library's; options.c) and
 * checked there.
 */
static int auth_checks(negstream *s, const negstream_client_options *co,
                       const negstream_server_options *so,
                       negstream_client_options *cco,
                       negstream_server_options *sso, negstream_error *err)
{
    int rc;

    pthread_mutex_lock(&s->mu);
    rc = check_auth_state_locked(s, err);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return -1;
    if (co != NULL)
        return negstream__client_options_import(cco, co, err) < 0 ? -1
               : check_client_options(cco, err);
    return negstream__server_options_import(sso, so, err) < 0 ? -1
           : check_server_options(sso, err);
}

/*
 * Marks the authentication pending and gives o its arguments: private
 * copies of the option strings for an asynchronous one (the caller's
 * options need not outlive begin_*), the caller's own for a synchronous
 * one.  Returns 0, or -1 with err (NOMEM) with everything undone.
 */
static int auth_args(negstream__op *o, const negstream_client_options *co,
                     const negstream_server_options *so, bool copy,
                     negstream_error *err)
{
    negstream__auth *a = calloc(1, sizeof(*a));
    int rc = 0;

    if (a == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory for an authentication");
        return -1;
    }
    o->auth = a;
    if (co != NULL) {
        const char **f[] = { &a->copt.target_name, &a->copt.user,
                             &a->copt.domain, &a->copt.password,
                             &a->copt.mechanism, &a->copt.ccache_name };

        a->copt = *co;
        if (copy)
            rc = copy_strings(a, f, sizeof(f) / sizeof(f[0]), err);
        if (copy && rc == 0)
            rc = copy_binding(a, &a->copt.channel_binding,
                              a->copt.channel_binding_len, err);
    } else {
        const char **f[] = { &a->sopt.service_name, &a->sopt.mechanism };

        a->sopt = *so;
        if (copy)
            rc = copy_strings(a, f, sizeof(f) / sizeof(f[0]), err);
        if (copy && rc == 0)
            rc = copy_binding(a, &a->sopt.channel_binding,
                              a->sopt.channel_binding_len, err);
    }
    return rc;
}

/* Undoes begin_auth_locked for an operation that never started. */
static void auth_undo(negstream *s)
{
    pthread_mutex_lock(&s->mu);
    s->auth_pending = false;
    s->state = NEGSTREAM__NEW;
    pthread_mutex_unlock(&s->mu);
    negstream__stream_unref(s);
}

static int auth_sync(negstream *s, int kind,
                     const negstream_client_options *co,
                     const negstream_server_options *so,
                     negstream_error *err)
{
    negstream_client_options cco;
    negstream_server_options sso;
    negstream__op o;
    int rc;

    if (auth_checks(s, co, so, &cco, &sso, err) < 0)
        return -1;
    co = co != NULL ? &cco : NULL;
    so = so != NULL ? &sso : NULL;
    pthread_mutex_lock(&s->mu);
    rc = begin_auth_locked(s, kind, err);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return -1;
    negstream__op_init(&o, s, kind);
    if (auth_args(&o, co, so, false, err) < 0) {
        negstream__op_free_auth(&o);
        auth_undo(s);
        return -1;
    }
    return negstream__op_run_sync(&o, err) < 0 ? -1 : 0;
}

static negstream_async *begin_auth(negstream *s, int kind,
                                   const negstream_client_options *co,
                                   const negstream_server_options *so,
                                   negstream_callback cb, void *state,
                                   negstream_error *err)
{
    negstream_client_options cco;
    negstream_server_options sso;
    negstream__op *o;
    int rc;

    if (auth_checks(s, co, so, &cco, &sso, err) < 0)
        return NULL;
    co = co != NULL ? &cco : NULL;
    so = so != NULL ? &sso : NULL;
    pthread_mutex_lock(&s->mu);
    rc = begin_auth_locked(s, kind, err);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return NULL;
    o = op_new(s, kind, cb, state, err);
    if (o == NULL)
        return NULL;
    if (auth_args(o, co, so, true, err) < 0) {
        negstream__op_free_auth(o);
        negstream__async_discard(o->ar);
        auth_undo(s);
        return NULL;
    }
    return negstream__op_submit(o, err);
}

int negstream_authenticate_as_client(negstream *s,
                                     const negstream_client_options *o,
                                     negstream_error *err)
{
    if (s == NULL || o == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           s == NULL ? "stream" : "options");
        return -1;
    }
    return auth_sync(s, NEGSTREAM__OP_AUTH_CLIENT, o, NULL, err);
}

int negstream_authenticate_as_server(negstream *s,
                                     const negstream_server_options *o,
                                     negstream_error *err)
{
    negstream_server_options defaults;

    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "stream is NULL");
        return -1;
    }
    if (o == NULL) {
        negstream_server_options_init(&defaults);
        o = &defaults;
    }
    return auth_sync(s, NEGSTREAM__OP_AUTH_SERVER, NULL, o, err);
}

negstream_async *negstream_begin_authenticate_as_client(
        negstream *s, const negstream_client_options *o,
        negstream_callback cb, void *state, negstream_error *err)
{
    if (s == NULL || o == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           s == NULL ? "stream" : "options");
        return NULL;
    }
    return begin_auth(s, NEGSTREAM__OP_AUTH_CLIENT, o, NULL, cb, state, err);
}

negstream_async *negstream_begin_authenticate_as_server(
        negstream *s, const negstream_server_options *o,
        negstream_callback cb, void *state, negstream_error *err)
{
    negstream_server_options defaults;

    if (s == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "stream is NULL");
        return NULL;
    }
    if (o == NULL) {
        negstream_server_options_init(&defaults);
        o = &defaults;
    }
    return begin_auth(s, NEGSTREAM__OP_AUTH_SERVER, NULL, o, cb, state, err);
}

/* ---- end_* ------------------------------------------------------------ */

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
                           "on this stream", negstream__op_kind_name(kind));
        return -1;
    }
    n = negstream__async_end(ar, err);
    negstream__stream_unref(s);
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
 * Dispose.  Operations still queued or parked are taken off the pool or
 * the poller (under s->mu, so that no worker can take them meanwhile) and
 * complete with DISPOSED at once; their callbacks run on a worker, never
 * here, so a caller holding its own lock around close cannot deadlock
 * with a callback that takes it.  Running ones end with DISPOSED when
 * their step returns (a step never waits); synchronous calls blocked in
 * poll are woken.  Nothing is sent to the peer (but what a custom
 * transport's shutdown sends: TLS's close_notify).  The caller's fd is
 * closed now unless leave_inner_open; the library's duplicate, or a custom
 * transport (its close), once no thread can use it: here, or when the
 * last running step or synchronous call ends.  Safe from a callback: it
 * never waits for a job.
 */
void negstream_close(negstream *s)
{
    negstream__op *taken[3];
    bool shut, release;
    size_t i, n = 0;

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->closed = true;
    if (!s->leave_inner_open && s->user_fd >= 0)
        close(s->user_fd);
    s->user_fd = -1;
    /* A custom transport's shutdown runs after the unlock, counted as I/O
     * so that its close cannot come first. */
    shut = s->tr_open && s->tr.ops->shutdown != NULL;
    if (shut)
        s->io_busy++;
    release = negstream__op_close_locked(s, taken);
    pthread_mutex_unlock(&s->mu);
    for (i = 0; i < 3; i++) {
        if (taken[i] == NULL)
            continue;
        n++;
        negstream__op_settle_taken(taken[i], NEGSTREAM_E_DISPOSED,
                                   "did not finish: the stream was closed");
    }
    if (shut) {                 /* then release was false: io_busy */
        s->tr.ops->shutdown(&s->tr);
        pthread_mutex_lock(&s->mu);
        s->io_busy--;
        negstream__op_unlock_tr(s);
    } else if (release) {
        negstream__op_release_tr(s);
    }
    NEGSTREAM__TRACE("stream %p closed (%zu operations settled)", (void *)s,
                     n);
    negstream__stream_unref(s);
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
PROPERTY(bool, negstream_is_channel_bound,
         negstream__gss_is_channel_bound(&s->gss), false)

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

/* ---- delegation -------------------------------------------------------- */

/*
 * The state is checked under s->mu; the store itself (file I/O) runs
 * without it, under a reference, like a synchronous operation.  The
 * delegated credential is set before the stream is AUTHENTICATED and
 * released only when the stream is released, so it is stable here.
 */
int negstream_store_delegated_credentials(negstream *s,
                                          const char *ccache_name,
                                          negstream_error *err)
{
    int rc = -1;

    if (s == NULL || ccache_name == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           s == NULL ? "stream" : "ccache_name");
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED, "stream is closed");
    } else if (s->state != NEGSTREAM__AUTHENTICATED) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "stream is not authenticated: delegated "
                           "credentials exist only after a successful "
                           "server authentication");
    } else if (!s->is_server) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "stream is a client: only a server receives "
                           "delegated credentials");
    } else {
        stream_ref(s);
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return -1;
    rc = negstream__gss_store_delegated(&s->gss, ccache_name, err);
    negstream__stream_unref(s);
    return rc;
}
