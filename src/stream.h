/*
 * stream.h - the negstream object.  Private.
 *
 * States: NEW -> AUTHENTICATING -> AUTHENTICATED, or -> FAILED (the
 * authentication failed: every later op repeats that failure); an I/O
 * failure after authentication sets 'fault' (sticky: the peer may hold
 * half a frame and the GSS sequence has moved); negstream_close sets
 * 'closed', which overrides everything (NEGSTREAM_E_DISPOSED).
 *
 * The lifecycle of an operation, its owners and the one lock order are
 * written down in docs/internals.md; in short:
 *     stream->mu  ->  poller->mu
 *     stream->mu  ->  pool->mu  ->  ar->mu  (-> a wait_any's own lock)
 * stream->gss_mu is a leaf held only around gss wrap/unwrap: one read and
 * one write may run at once on one GSS context, and MIT's per-message
 * calls are not safe concurrently on one context.  No lock is held across
 * a user callback, a blocking system call or a *_sec_context call.  The
 * write_pending / read_pending / auth_pending flags guard the operations.
 *
 * Two reference counts:
 *  - refs, the logical ones: the user's (dropped by negstream_close) and
 *    one per operation until it is ended (a synchronous call: until it
 *    returns).  The last one releases the resources: the GSS context, the
 *    buffers, the wake fd, the transport if still open.  It is dropped on
 *    the user's threads (close, end_*), or inside a callback that ends
 *    its own result, so no GSSAPI call happens after main has returned
 *    while the application has ended every result.
 *  - mrefs, the memory: one for all the logical refs together, plus one
 *    per completion in progress (held across the user's callback).  The
 *    last one frees the struct: no GSSAPI, only memory.  So a callback may
 *    always call begin_* on its stream, even if another thread closed it
 *    and ended every result meanwhile: it gets NEGSTREAM_E_DISPOSED.
 */
#ifndef NEGSTREAM_STREAM_H
#define NEGSTREAM_STREAM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "negstream.h"
#include "gss.h"
#include "poller.h"
#include "reasm.h"
#include "transport.h"
#include "wake.h"

enum negstream__state {
    NEGSTREAM__NEW = 0,
    NEGSTREAM__AUTHENTICATING,
    NEGSTREAM__AUTHENTICATED,
    NEGSTREAM__FAILED
};

struct negstream__op;

struct negstream {
    pthread_mutex_t       mu;          /* guards everything below but gss */
    pthread_mutex_t       gss_mu;      /* leaf: around wrap / unwrap only */
    atomic_int            refs;        /* logical: see above */
    atomic_int            mrefs;       /* memory: see above */
    negstream__transport  tr;          /* works on a duplicate of user_fd,
                                          or the application's functions */
    negstream__pollfd     pfd;         /* tr's fd, for the poller */
    negstream__pollfd     pfd_out;     /* tr's fd_out (fd -1: none) */
    negstream__wake       wake;        /* wakes synchronous calls in poll */
    int                   io_busy;     /* threads that may use tr now */
    int                   sync_waiting;/* synchronous calls in poll */
    bool                  tr_open;     /* tr not closed yet */
    int                   user_fd;     /* the caller's fd (never used) */
    bool                  leave_inner_open;
    bool                  closed;
    enum negstream__state state;
    bool                  framed;      /* INTEG or CONF granted */
    negstream_error       auth_failure;/* the stored failure when FAILED */
    negstream_error       fault;       /* first I/O failure after auth */
    bool                  faulted;
    bool                  write_pending, read_pending, auth_pending;
    bool                  is_server;   /* a server attempt was made */
    int                   read_timeout_ms, write_timeout_ms, auth_timeout_ms;
    negstream_pool       *pool;        /* NULL: the default pool */
    negstream__gss        gss;
    /* properties, copied out of the context once authenticated */
    bool                  p_encrypted, p_signed, p_mutual;
    negstream_impersonation p_impersonation;
    const char           *p_auth_type;
    /* asynchronous operations in flight, so that close can reach them */
    struct negstream__op *op_write, *op_read, *op_auth;
    /* reader side (only the one pending read touches these) */
    negstream__reasm      rr;          /* the data frame being received */
    uint8_t              *rbuf;        /* its body; grown on use */
    size_t                rcap;        /* its size (0: not allocated yet) */
    size_t                rpos, rlen;  /* buffered plaintext rbuf[rpos..rlen) */
    /* writer side (only the one pending write touches these) */
    uint8_t              *wbuf;        /* one wrapped frame; grown on use */
    size_t                wcap;        /* its size (0: not allocated yet) */
};

/* Drops a logical reference; the last releases the resources. */
void negstream__stream_unref(negstream *s);
/* Holds / drops the memory across a completion (see above). */
void negstream__stream_mhold(negstream *s);
void negstream__stream_mdrop(negstream *s);

#endif
