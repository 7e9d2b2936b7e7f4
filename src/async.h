/*
 * async.h - negstream_async, the IAsyncResult: refcount, mutex + condvar,
 * optional eventfd, wait / wait_any / wait_all, cancel, and the one
 * completion sequence.  Knows nothing of streams: the owner hands it an
 * outcome.
 *
 * Two references exist while an operation is pending: the caller's,
 * dropped by negstream__async_end, and the completer's, dropped by the
 * call of negstream__async_complete that wins.
 */
#ifndef NEGSTREAM_ASYNC_H
#define NEGSTREAM_ASYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "negstream.h"

/* Kinds of operation, so that end_write rejects a read's result. */
enum {
    NEGSTREAM__OP_WRITE = 1,
    NEGSTREAM__OP_READ,
    NEGSTREAM__OP_AUTH_CLIENT,
    NEGSTREAM__OP_AUTH_SERVER
};

/* Cancel hook: called by negstream_async_cancel without any library lock.
 * Returns 0 if it stopped the operation before it ran (the hook itself
 * completes it with NEGSTREAM_E_CANCELED), -1 otherwise. */
typedef int (*negstream__cancel_fn)(negstream_async *ar);

/* A new pending result with two refs, tagged (kind, owner), with 'extra'
 * zeroed bytes for the owner's operation (negstream__async_extra).  NULL
 * with err (NEGSTREAM_E_NOMEM) on failure. */
negstream_async *negstream__async_new(int kind, const void *owner,
                                      negstream_callback cb, void *state,
                                      size_t extra, negstream_error *err);
void *negstream__async_extra(negstream_async *ar);
void  negstream__async_set_cancel(negstream_async *ar,
                                  negstream__cancel_fn fn);

/* True if ar was made for (kind, owner). */
bool negstream__async_matches(const negstream_async *ar, int kind,
                              const void *owner);

/* The one completion path.  The first call stores (outcome, result),
 * marks the result completed, wakes the waiters and the fd, then runs the
 * callback with no library lock held, on the calling thread, and drops
 * the completer's ref; it returns true.  Later calls do nothing (they drop
 * no ref, so a loser must hold a reference of its own, e.g. the caller's)
 * and return false. */
bool negstream__async_complete(negstream_async *ar,
                               const negstream_error *outcome,
                               ssize_t result, bool synchronously);

/*
 * The completion in two halves, for a result settled by a thread that
 * must not run the callback (close, cancel: the callback goes to a
 * worker).  settle: the first call stores (outcome, result), marks the
 * result completed and wakes the waiters and the fd; it returns true and
 * the caller then owns the completer's reference; later calls do nothing
 * and return false.  callback: runs the callback (if any) with no library
 * lock held and drops the completer's reference; call it exactly once
 * after a settle that returned true.  negstream__async_complete is
 * settle + callback.
 */
bool negstream__async_settle(negstream_async *ar,
                             const negstream_error *outcome, ssize_t result,
                             bool synchronously);
void negstream__async_callback(negstream_async *ar);
bool negstream__async_has_callback(const negstream_async *ar);

/* Frees a result that was never handed to the caller (begin_* failed
 * after making it): both references, no callback, no waiters. */
void negstream__async_discard(negstream_async *ar);

/* Waits for completion, copies the outcome into err, drops the caller's
 * ref (ar is invalid afterwards).  Returns the stored result (>= 0) or -1
 * with err.  The caller has validated ar with negstream__async_matches. */
ssize_t negstream__async_end(negstream_async *ar, negstream_error *err);

#endif
