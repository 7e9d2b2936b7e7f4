/*
 * stream.h - the negstream object.  Private.
 *
 * States: NEW -> AUTHENTICATING -> AUTHENTICATED, or -> FAILED (the
 * authentication failed: every later op repeats that failure); an I/O
 * failure after authentication sets 'fault' (sticky: the peer may hold
 * half a frame and the GSS sequence has moved); negstream_close sets
 * 'closed', which overrides everything (NEGSTREAM_E_DISPOSED).
 *
 * Lock order, taken only downwards, never two of one level at once:
 *     stream->mu  ->  pool->mu  ->  ar->mu
 * stream->gss_mu is a leaf held only around gss wrap/unwrap: one read and
 * one write may run at once on one GSS context, and MIT's per-message
 * calls are not safe concurrently on one context.  No lock is held across
 * a user callback, a blocking system call or a *_sec_context call.  The
 * write_pending / read_pending / auth_pending flags guard the operations.
 */
#ifndef NEGSTREAM_STREAM_H
#define NEGSTREAM_STREAM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "negstream.h"
#include "gss.h"
#include "transport.h"

enum negstream__state {
    NEGSTREAM__NEW = 0,
    NEGSTREAM__AUTHENTICATING,
    NEGSTREAM__AUTHENTICATED,
    NEGSTREAM__FAILED
};

struct negstream {
    pthread_mutex_t       mu;          /* guards everything below but gss */
    pthread_mutex_t       gss_mu;      /* leaf: around wrap / unwrap only */
    atomic_int            refs;        /* user's + one per pending job */
    negstream__transport  tr;
    bool                  leave_inner_open;
    bool                  closed;
    enum negstream__state state;
    bool                  framed;      /* INTEG or CONF granted */
    negstream_error       auth_failure;/* the stored failure when FAILED */
    negstream_error       fault;       /* first I/O failure after auth */
    bool                  faulted;
    bool                  write_pending, read_pending, auth_pending;
    bool                  is_server;   /* a server attempt was made */
    int                   read_timeout_ms, write_timeout_ms;
    negstream_pool       *pool;        /* NULL: the default pool */
    negstream__gss        gss;
    /* properties, copied out of the context once authenticated */
    bool                  p_encrypted, p_signed, p_mutual;
    negstream_impersonation p_impersonation;
    const char           *p_auth_type;
    /* pending async operations, so that close can cancel them */
    negstream_async      *pending_write, *pending_read, *pending_auth;
    /* reader side (only the one running read touches these) */
    uint8_t              *rbuf;        /* one received frame; grown on use */
    size_t                rcap;        /* its size (0: not allocated yet) */
    size_t                rpos, rlen;  /* buffered plaintext rbuf[rpos..rlen) */
    uint32_t              rframe;      /* length of a frame whose header was
                                        * read but whose buffer could not be
                                        * allocated (0: none) */
    /* writer side (only the one running write touches these) */
    uint8_t              *wbuf;        /* one wrapped frame; grown on use */
    size_t                wcap;        /* its size (0: not allocated yet) */
};

#endif
