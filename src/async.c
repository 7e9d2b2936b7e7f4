/*
 * async.c - negstream_async, the IAsyncResult: refcount, mutex + condvar,
 * a lazily made eventfd (pipe fallback), wait / wait_any / wait_all,
 * cancel through the owner's hook, and the one completion sequence.
 * Knows nothing of streams: the owner hands it an outcome.
 *
 * Lock order: ar->mu -> waiter->mu (a wait_any call's own lock, a leaf).
 * No two results' locks are ever held at once, and no lock is held while
 * the callback or the cancel hook runs.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "async.h"
#include "error.h"
#include "pool.h"
#include "wake.h"

/*
 * A waiter spins at most this long, watching the completed flag, before it
 * sleeps on the condition variable (less when spins fail: see spin_for).
 * Waking a sleeping thread on another core costs tens of microseconds on
 * a virtual machine, more than a small write takes; an operation that
 * completes within the window costs its waiter no system call at all.
 * The spin yields the CPU in its second half, so that a completer sharing
 * the core can run.
 */
#ifndef WAIT_SPIN_NS
# define WAIT_SPIN_NS 30000
#endif

/* A wait_any call registers one node per result; this many live on its
 * stack, more are allocated. */
#define WAIT_ANY_STACK 16

/* Suitably aligned for anything the owner keeps in the extra area. */
typedef union {
    long double ld;
    long long   ll;
    void       *p;
    void      (*fp)(void);
} max_align;

/* One blocked wait_any call. */
typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    bool            fired;
} waiter;

/* Its registration on one result, in ar->waiters. */
typedef struct wnode {
    struct wnode *prev, *next;
    waiter       *w;
} wnode;

struct negstream_async {
    pthread_mutex_t      mu;
    pthread_cond_t       cv;
    atomic_uint          refs;       /* caller's + completer's */
    atomic_bool          completed;  /* set (release) after the outcome */
    bool                 sync;       /* written before completed */
    unsigned             nwaiting;   /* threads blocked on cv, under mu */
    negstream_error      outcome;    /* written before completed */
    ssize_t              result;
    negstream_callback   cb;
    void                *state;
    int                  kind;
    const void          *owner;
    negstream__cancel_fn cancel;
    negstream__wake      fd;         /* negstream_async_fd, made on demand */
    wnode               *waiters;    /* wait_any registrations, under mu */
    max_align            extra[];    /* the owner's area */
};

static pthread_once_t     g_once = PTHREAD_ONCE_INIT;
static pthread_condattr_t g_condattr;
static bool               g_multicore;

/* Timed waits use CLOCK_MONOTONIC: a clock change must not end or stretch
 * a wait. */
static void async_init_once(void)
{
    pthread_condattr_init(&g_condattr);
    pthread_condattr_setclock(&g_condattr, CLOCK_MONOTONIC);
    g_multicore = sysconf(_SC_NPROCESSORS_ONLN) > 1;
}

static int cond_init(pthread_cond_t *cv)
{
    pthread_once(&g_once, async_init_once);
    return pthread_cond_init(cv, &g_condattr);
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static long long mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The absolute CLOCK_MONOTONIC time timeout_ms (> 0) from now. */
static void deadline_in(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static bool deadline_passed(const struct timespec *ts)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > ts->tv_sec
           || (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

static bool is_done(const negstream_async *ar)
{
    return atomic_load_explicit(&ar->completed, memory_order_acquire);
}

/* ---- life cycle -------------------------------------------------------- */

negstream_async *negstream__async_new(int kind, const void *owner,
                                      negstream_callback cb, void *state,
                                      size_t extra, negstream_error *err)
{
    negstream_async *ar;

    if (extra > SIZE_MAX - sizeof(*ar)) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, ENOMEM,
                           "cannot allocate an async result of %zu extra "
                           "bytes", extra);
        return NULL;
    }
    ar = calloc(1, sizeof(*ar) + extra);
    if (ar == NULL) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, ENOMEM,
                           "cannot allocate an async result");
        return NULL;
    }
    pthread_mutex_init(&ar->mu, NULL);
    cond_init(&ar->cv);
    atomic_init(&ar->refs, 2);
    atomic_init(&ar->completed, false);
    ar->cb = cb;
    ar->state = state;
    ar->kind = kind;
    ar->owner = owner;
    ar->fd.r = ar->fd.w = -1;
    negstream__err_ok(err);
    return ar;
}

static void async_unref(negstream_async *ar)
{
    if (atomic_fetch_sub_explicit(&ar->refs, 1, memory_order_acq_rel) != 1)
        return;
    negstream__wake_close(&ar->fd);
    pthread_cond_destroy(&ar->cv);
    pthread_mutex_destroy(&ar->mu);
    free(ar);
}

void *negstream__async_extra(negstream_async *ar)
{
    return ar != NULL ? (void *)ar->extra : NULL;
}

void negstream__async_set_cancel(negstream_async *ar, negstream__cancel_fn fn)
{
    if (ar == NULL)
        return;
    pthread_mutex_lock(&ar->mu);
    ar->cancel = fn;
    pthread_mutex_unlock(&ar->mu);
}

bool negstream__async_matches(const negstream_async *ar, int kind,
                              const void *owner)
{
    return ar != NULL && ar->kind == kind && ar->owner == owner;
}

/* ---- the completion fd ------------------------------------------------- */

/*
 * The fd is made on first request: most results are waited on or called
 * back, and an eventfd per operation would cost two system calls.  If the
 * result is already complete the new fd is readable at once; otherwise
 * the completer signals it.
 */
int negstream_async_fd(negstream_async *ar)
{
    int fd = -1;

    if (ar == NULL) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&ar->mu);
    if (ar->fd.r < 0) {
        if (negstream__wake_open(&ar->fd) < 0)
            goto out;
        if (is_done(ar))
            negstream__wake_signal(&ar->fd);
    }
    fd = ar->fd.r;
out:
    pthread_mutex_unlock(&ar->mu);
    return fd;
}

/* ---- completion -------------------------------------------------------- */

/*
 * The order is .NET's: outcome stored -> is_completed -> waiters and fd
 * -> callback.  Only the winner owns the completer's reference, so only
 * the winner drops it: a loser of the race must hold a reference of its
 * own (in practice the pool's cancel rule leaves exactly one completer).
 * The fd written is the one that existed when the flag was set; an fd
 * made later is signalled by negstream_async_fd itself.
 */
bool negstream__async_settle(negstream_async *ar,
                             const negstream_error *outcome, ssize_t result,
                             bool synchronously)
{
    negstream__wake fd = NEGSTREAM__WAKE_INIT;
    bool won = false;
    wnode *n;

    if (ar == NULL)
        return false;
    pthread_mutex_lock(&ar->mu);
    if (!atomic_load_explicit(&ar->completed, memory_order_relaxed)) {
        if (outcome != NULL)
            ar->outcome = *outcome;
        else
            negstream__err_ok(&ar->outcome);
        ar->result = result;
        ar->sync = synchronously;
        atomic_store_explicit(&ar->completed, true, memory_order_release);
        fd = ar->fd;
        won = true;
        if (ar->nwaiting > 0)
            pthread_cond_broadcast(&ar->cv);
        for (n = ar->waiters; n != NULL; n = n->next) {
            pthread_mutex_lock(&n->w->mu);
            n->w->fired = true;
            pthread_cond_signal(&n->w->cv);
            pthread_mutex_unlock(&n->w->mu);
        }
    }
    pthread_mutex_unlock(&ar->mu);
    if (won)
        negstream__wake_signal(&fd);
    return won;
}

bool negstream__async_has_callback(const negstream_async *ar)
{
    return ar != NULL && ar->cb != NULL;
}

/* cb is written once, before the result is published: no lock needed. */
void negstream__async_callback(negstream_async *ar)
{
    if (ar == NULL)
        return;
    if (ar->cb != NULL)
        ar->cb(ar);         /* may end ar: our reference keeps it alive */
    async_unref(ar);        /* the completer's */
}

bool negstream__async_complete(negstream_async *ar,
                               const negstream_error *outcome,
                               ssize_t result, bool synchronously)
{
    if (!negstream__async_settle(ar, outcome, result, synchronously))
        return false;
    negstream__async_callback(ar);
    return true;
}

void negstream__async_discard(negstream_async *ar)
{
    if (ar == NULL)
        return;
    async_unref(ar);        /* the completer's */
    async_unref(ar);        /* the caller's */
}

/* ---- waiting ----------------------------------------------------------- */

/*
 * The spin adapts, process-wide.  A spin that sees the completion keeps
 * (or doubles back to) the full window; one that does not halves it, down
 * to WAIT_SPIN_MIN_NS.  When the other CPUs are busy (other processes, or
 * more runnable threads than cores), the completer cannot run while we
 * spin, spins fail, and waiters soon go straight to the condition
 * variable, which then costs less than spinning; every WAIT_SPIN_PROBE-th
 * wait spins the full window again, to notice when the machine is free.
 * Relaxed atomics: the budget is a hint, races only blur it.
 */
#define WAIT_SPIN_MIN_NS 1000
#define WAIT_SPIN_PROBE  64

static atomic_int  g_spin_budget = WAIT_SPIN_NS;
static atomic_uint g_spin_count;

/* Watches the flag for up to the current budget; true if it got set. */
static bool spin_for(const negstream_async *ar)
{
    long long t0, t, budget;
    unsigned i;
    bool done = false;

    if (!g_multicore) {
        sched_yield();
        return is_done(ar);
    }
    budget = atomic_load_explicit(&g_spin_budget, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&g_spin_count, 1, memory_order_relaxed)
        % WAIT_SPIN_PROBE == 0)
        budget = WAIT_SPIN_NS;
    t0 = mono_ns();
    for (i = 1;; i++) {
        if (is_done(ar)) {
            done = true;
            break;
        }
        if (i % 32 != 0) {
            cpu_relax();
            continue;
        }
        t = mono_ns() - t0;
        if (t >= budget) {
            done = is_done(ar);
            break;
        }
        if (t >= WAIT_SPIN_NS / 2)
            sched_yield();
    }
    if (done)
        budget = WAIT_SPIN_NS;
    else
        budget = budget / 2 > WAIT_SPIN_MIN_NS ? budget / 2
                                                : WAIT_SPIN_MIN_NS;
    atomic_store_explicit(&g_spin_budget, (int)budget,
                          memory_order_relaxed);
    return done;
}

/* Waits until completed or until *deadline (NULL: forever), after a spin
 * if asked. */
static bool wait_until(negstream_async *ar, const struct timespec *deadline,
                       bool spin)
{
    bool done;

    if (is_done(ar))
        return true;
    pthread_once(&g_once, async_init_once);
    if (spin && spin_for(ar))
        return true;
    /* A worker (a callback) about to sleep: its pool may start a thread
     * for the job it waits for.  Before ar->mu: pool->mu comes first. */
    negstream__pool_blocking_begin();
    pthread_mutex_lock(&ar->mu);
    ar->nwaiting++;
    while (!atomic_load_explicit(&ar->completed, memory_order_relaxed)) {
        if (deadline == NULL)
            pthread_cond_wait(&ar->cv, &ar->mu);
        else if (pthread_cond_timedwait(&ar->cv, &ar->mu, deadline)
                 == ETIMEDOUT)
            break;
    }
    ar->nwaiting--;
    done = atomic_load_explicit(&ar->completed, memory_order_relaxed);
    pthread_mutex_unlock(&ar->mu);
    negstream__pool_blocking_end();
    return done;
}

/*
 * timeout_ms: -1 waits forever, 0 polls.  Any other negative value is
 * taken as an expired timeout (a poll), not as "forever": a computed
 * remaining time that went below zero must not block for good.
 */
bool negstream_async_wait(negstream_async *ar, int timeout_ms)
{
    struct timespec deadline;

    if (ar == NULL)
        return false;
    if (timeout_ms == -1)
        return wait_until(ar, NULL, true);
    if (timeout_ms <= 0)
        return is_done(ar);
    deadline_in(&deadline, timeout_ms);
    return wait_until(ar, &deadline, true);
}

ssize_t negstream__async_end(negstream_async *ar, negstream_error *err)
{
    ssize_t rc;

    if (ar == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "async result is NULL");
        return -1;
    }
    wait_until(ar, NULL, true);
    if (ar->outcome.code == NEGSTREAM_OK) {
        negstream__err_ok(err);
        rc = ar->result;
    } else {
        negstream__err_copy(err, &ar->outcome);
        rc = -1;
    }
    async_unref(ar);        /* the caller's */
    return rc;
}

/* The lowest index of a completed result, or -1.  NULL entries never
 * complete. */
static ssize_t first_done(negstream_async *const *ars, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (ars[i] != NULL && is_done(ars[i]))
            return (ssize_t)i;
    return -1;
}

/* wait_any without registration, for when the nodes cannot be allocated:
 * polls with a growing sleep (1 us to 1 ms). */
static ssize_t wait_any_poll(negstream_async *const *ars, size_t n,
                             const struct timespec *deadline)
{
    struct timespec nap = { 0, 1000 };
    ssize_t idx;

    for (;;) {
        idx = first_done(ars, n);
        if (idx >= 0 || (deadline != NULL && deadline_passed(deadline)))
            return idx;
        nanosleep(&nap, NULL);
        if (nap.tv_nsec < 1000000L)
            nap.tv_nsec *= 2;
    }
}

/*
 * Registers a node on every pending result, sleeps until one of them
 * fires or the deadline passes, and unregisters.  Once the last node is
 * unlinked (under each result's lock) no completer can touch the waiter,
 * so it may live on this stack.  The index returned is the lowest of the
 * completed ones, as .NET's WaitAny does.
 */
ssize_t negstream_async_wait_any(negstream_async *const *ars, size_t n,
                                 int timeout_ms)
{
    wnode stack_nodes[WAIT_ANY_STACK], *nodes = stack_nodes;
    struct timespec deadline;
    const struct timespec *dl = NULL;
    waiter w;
    size_t i, registered = 0;
    bool found = false;
    ssize_t idx;

    if (ars == NULL || n == 0)
        return -1;
    for (i = 0; i < n && ars[i] == NULL; i++)
        ;
    if (i == n)
        return -1;      /* nothing could ever complete: never wait */
    idx = first_done(ars, n);
    if (idx >= 0 || (timeout_ms != -1 && timeout_ms <= 0))
        return idx;
    if (timeout_ms > 0) {
        deadline_in(&deadline, timeout_ms);
        dl = &deadline;
    }
    if (n > WAIT_ANY_STACK) {
        nodes = n <= SIZE_MAX / sizeof(*nodes)
                ? malloc(n * sizeof(*nodes)) : NULL;
        if (nodes == NULL)
            return wait_any_poll(ars, n, dl);
    }
    pthread_mutex_init(&w.mu, NULL);
    cond_init(&w.cv);
    w.fired = false;

    for (i = 0; i < n && !found; i++, registered++) {
        negstream_async *ar = ars[i];

        nodes[i].w = &w;
        nodes[i].prev = nodes[i].next = NULL;
        if (ar == NULL)
            continue;
        pthread_mutex_lock(&ar->mu);
        if (atomic_load_explicit(&ar->completed, memory_order_relaxed)) {
            found = true;           /* no completer is left to tell us */
        } else {
            nodes[i].next = ar->waiters;
            if (ar->waiters != NULL)
                ar->waiters->prev = &nodes[i];
            ar->waiters = &nodes[i];
        }
        pthread_mutex_unlock(&ar->mu);
    }

    negstream__pool_blocking_begin();
    pthread_mutex_lock(&w.mu);
    while (!w.fired && !found) {
        if (dl == NULL)
            pthread_cond_wait(&w.cv, &w.mu);
        else if (pthread_cond_timedwait(&w.cv, &w.mu, dl) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&w.mu);
    negstream__pool_blocking_end();

    for (i = 0; i < registered; i++) {
        negstream_async *ar = ars[i];

        if (ar == NULL)
            continue;
        pthread_mutex_lock(&ar->mu);
        if (nodes[i].prev != NULL || ar->waiters == &nodes[i]) {
            if (nodes[i].prev != NULL)
                nodes[i].prev->next = nodes[i].next;
            else
                ar->waiters = nodes[i].next;
            if (nodes[i].next != NULL)
                nodes[i].next->prev = nodes[i].prev;
        }
        pthread_mutex_unlock(&ar->mu);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    if (nodes != stack_nodes)
        free(nodes);
    return first_done(ars, n);
}

/* n == 0 is vacuously true; a NULL entry never completes (false). */
bool negstream_async_wait_all(negstream_async *const *ars, size_t n,
                              int timeout_ms)
{
    struct timespec deadline;
    const struct timespec *dl = NULL;
    size_t i;

    if (n == 0)
        return true;
    if (ars == NULL)
        return false;
    for (i = 0; i < n; i++)
        if (ars[i] == NULL)
            return false;
    if (timeout_ms != -1 && timeout_ms <= 0) {
        for (i = 0; i < n; i++)
            if (!is_done(ars[i]))
                return false;
        return true;
    }
    if (timeout_ms > 0) {
        deadline_in(&deadline, timeout_ms);
        dl = &deadline;
    }
    /* Spin on the first pending one only: n spins would add up. */
    for (i = 0; i < n; i++)
        if (!wait_until(ars[i], dl, i == 0))
            return false;
    return true;
}

/* ---- the rest of IAsyncResult ------------------------------------------ */

bool negstream_async_is_completed(const negstream_async *ar)
{
    return ar != NULL && is_done(ar);
}

bool negstream_async_completed_synchronously(const negstream_async *ar)
{
    /* sync is written before the release store of completed. */
    return ar != NULL && is_done(ar) && ar->sync;
}

void *negstream_async_state(const negstream_async *ar)
{
    return ar != NULL ? ar->state : NULL;
}

/*
 * The owner's hook decides (it knows whether its job was taken); the hook
 * completes the result itself.  No library lock is held while it runs.
 */
int negstream_async_cancel(negstream_async *ar)
{
    negstream__cancel_fn fn;

    if (ar == NULL || is_done(ar))
        return -1;
    pthread_mutex_lock(&ar->mu);
    fn = ar->cancel;
    pthread_mutex_unlock(&ar->mu);
    if (fn == NULL)
        return -1;
    return fn(ar) == 0 ? 0 : -1;
}
