/*
 * op.h - one read, write or authentication on a stream, and the engine
 * that runs it: resumable steps that never wait, driven either by the
 * calling thread (synchronous calls: poll) or by the pool and its poller
 * (asynchronous ones: parked with the poller whenever the transport would
 * block).  Private to the stream (op.c, stream.c).
 *
 * The lifecycle (docs/internals.md): an asynchronous operation is QUEUED
 * on the pool by begin_*, RUNNING on a worker, PARKED with the poller
 * while the transport would block (its deadline with it), RUNNING again
 * when the fd is ready, then DONE: its result is settled (outcome stored,
 * completed, waiters and fd woken) and its callback runs on a worker; the
 * caller's end_* releases it.  close and cancel take a QUEUED or PARKED
 * operation away from the pool or the poller under stream->mu, settle it
 * at once and run its callback on a worker; a RUNNING one sees the close
 * itself when its step ends.
 */
#ifndef NEGSTREAM_OP_H
#define NEGSTREAM_OP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "negstream.h"
#include "async.h"
#include "handshake.h"
#include "pool.h"
#include "stream.h"

/* negstream__op.state, under stream->mu */
enum {
    NEGSTREAM__OP_IDLE = 0,     /* not published yet, or synchronous */
    NEGSTREAM__OP_QUEUED,       /* its job is in the pool's queue */
    NEGSTREAM__OP_RUNNING,      /* a worker (or the caller) runs a step */
    NEGSTREAM__OP_PARKED,       /* armed with the poller */
    NEGSTREAM__OP_DONE          /* settled, or being settled */
};

/* What an authentication needs beyond the common part. */
typedef struct negstream__auth {
    negstream_client_options copt;  /* private copies of the caller's */
    negstream_server_options sopt;
    char                    *strings;   /* the copied strings, one block */
    size_t                   strings_len;
    void                    *binding;   /* the copied channel bindings */
    bool                     gss_ready; /* gss init done, handshake begun */
    negstream__hs            hs;
} negstream__auth;

typedef struct negstream__op {
    negstream__job   job;       /* first: a job pointer is an op pointer */
    negstream       *s;
    negstream_async *ar;        /* NULL: a synchronous call */
    negstream_pool  *pool;      /* the pool an asynchronous op runs on */
    int              kind;      /* NEGSTREAM__OP_WRITE / _READ / _AUTH_* */
    int              state;     /* NEGSTREAM__OP_IDLE ... _DONE */
    int              timeout_ms;/* the stream's timeout at the start */
    int64_t          deadline;  /* CLOCK_MONOTONIC ms; -1: none */
    negstream__pollfd *pfd;     /* the one it parks on (s->pfd or
                                   s->pfd_out: the fd wait named) */
    /* read and write */
    const uint8_t   *wdata;     /* write: the caller's bytes (borrowed) */
    uint8_t         *rdata;     /* read: the caller's buffer (borrowed) */
    size_t           count;
    size_t           done;      /* write: plaintext bytes sent */
    size_t           foff, flen;/* write: the frame in wbuf, sent so far */
    size_t           fchunk;    /* write: that frame's plaintext bytes */
    ssize_t          result;    /* read: bytes delivered */
    negstream__auth *auth;      /* authentication only */
} negstream__op;

/* Prepares o for kind on s (deadline from the stream's timeouts). */
void negstream__op_init(negstream__op *o, negstream *s, int kind);

/*
 * Runs a synchronous operation to its end on the calling thread (the
 * caller has marked it pending and taken its reference, which this
 * drops, so s may be freed when it returns).  Returns the result (bytes,
 * 0, or 0 for an authentication) or -1 with err.
 */
ssize_t negstream__op_run_sync(negstream__op *o, negstream_error *err);

/*
 * Publishes and queues an asynchronous operation whose pending flag is set
 * and whose result o->ar holds the stream reference.  Returns that result
 * (read before queueing: o lives inside it and may be gone once a worker
 * has run it), or NULL with err after undoing everything (pending flag
 * cleared, reference dropped, the result freed without a callback).
 */
negstream_async *negstream__op_submit(negstream__op *o,
                                      negstream_error *err);

/* negstream_close's part: settles every QUEUED or PARKED operation with
 * NEGSTREAM_E_DISPOSED (callbacks on a worker), wakes synchronous calls,
 * closes the transport if nothing uses it.  Caller holds s->mu; the
 * operations to settle are returned in out[0..3) (NULL entries skipped)
 * and must be passed to negstream__op_settle_taken after unlocking.
 * Returns true when the caller must then call negstream__op_release_tr
 * (see negstream__op_maybe_close_tr_locked). */
bool negstream__op_close_locked(negstream *s, negstream__op *out[3]);
void negstream__op_settle_taken(negstream__op *o, negstream_status code,
                                const char *why);

/* Sets the cancel hook of an asynchronous operation's result. */
void negstream__op_set_cancel(negstream__op *o);

/* The pending flag of an operation kind on s (caller holds s->mu). */
bool *negstream__op_pending_flag(negstream *s, int kind);

/* "write", "read", "client authentication", "server authentication". */
const char *negstream__op_kind_name(int kind);

/* Releases what an operation owns (copies of secrets wiped). */
void negstream__op_free_auth(negstream__op *o);

/* Closes the transport if it is open and nobody uses it: forgets its fds
 * at the poller and marks it closed.  Caller holds s->mu.  Returns true
 * when it did: the caller, and only it, then calls
 * negstream__op_release_tr once it has unlocked, because the transport's
 * close may be the application's code, which runs under no library
 * lock. */
bool negstream__op_maybe_close_tr_locked(negstream *s);
void negstream__op_release_tr(negstream *s);

/* Unlocks s->mu, closing the transport if nobody uses it: the two above,
 * for a caller that has nothing else to do under the lock. */
void negstream__op_unlock_tr(negstream *s);

#endif
