/*
 * pool.h - worker pool: a FIFO queue of opaque jobs run by between
 * min_threads and max_threads pthreads.  Knows nothing of streams or
 * GSSAPI.  Jobs are intrusive (embedded in the caller's memory), so
 * submitting allocates nothing.
 *
 * Lock order (see stream.h): stream->mu -> pool->mu -> ar->mu.
 */
#ifndef NEGSTREAM_POOL_H
#define NEGSTREAM_POOL_H

#include <stdbool.h>
#include "negstream.h"

typedef struct negstream__job negstream__job;
typedef void (*negstream__job_fn)(negstream__job *job);

struct negstream__job {
    negstream__job   *next;    /* queue link, owned by the pool */
    negstream__job_fn run;     /* called once on a worker, no lock held */
    int               state;   /* pool-private: idle / queued / taken */
};

/* Queues job (job->run must be set).  Starts a worker if none is idle and
 * fewer than max_threads run.  Returns 0, or -1 with err
 * (NEGSTREAM_E_NOMEM, NEGSTREAM_E_DISPOSED if the pool is being freed). */
int negstream__pool_submit(negstream_pool *p, negstream__job *job,
                           negstream_error *err);

/* Removes job from the queue if no worker has taken it yet (libuv's rule).
 * Returns true if removed: job->run will never be called. */
bool negstream__pool_cancel(negstream_pool *p, negstream__job *job);

/* True if the calling thread is a worker of p. */
bool negstream__pool_is_worker(const negstream_pool *p);

/* The process-wide default pool, created on first use; size from
 * NEGSTREAM_THREADS (else from the CPU count).  NULL with err on failure. */
negstream_pool *negstream__pool_default(negstream_error *err);

/* For tests: how long a worker above min_threads stays idle before it
 * exits (default 10 s).  Values below 1 are taken as 1. */
void negstream__pool_set_idle_ms(negstream_pool *p, int ms);

/* For tests and tracing: the number of live workers of p. */
unsigned negstream__pool_threads(negstream_pool *p);

/*
 * Queues a job that continues an operation the pool already accepted: a
 * watch that fired (poller.c), the callback of a result completed by close
 * or cancel.  Unlike negstream__pool_submit it is also accepted while
 * negstream_pool_free drains the pool (until its last worker has left),
 * so that nothing accepted is ever dropped.  Same return values.
 */
int negstream__pool_resume(negstream_pool *p, negstream__job *job,
                           negstream_error *err);

/*
 * The calling thread is about to block on something only another job can
 * finish (end_* or a wait on an incomplete result, from a callback).  If
 * it is a worker of a pool, that pool counts it as blocked and may start
 * a thread beyond max_threads while it is, so that a pool whose every
 * worker waits this way still runs the jobs they wait for (GTask's
 * overflow thread).  Pair every begin with an end on the same thread.
 */
void negstream__pool_blocking_begin(void);
void negstream__pool_blocking_end(void);

#endif
