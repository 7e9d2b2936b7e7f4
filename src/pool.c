/*
 * pool.c - the worker pool: a FIFO queue of intrusive jobs run by between
 * min_threads and max_threads pthreads, growing on demand, shrinking after
 * an idle period, safe across fork().  Knows nothing of streams or GSSAPI.
 *
 * Locks: g_default_mu -> g_list_mu -> pool->mu (see stream.h for where
 * pool->mu sits in the library-wide order).  No lock is held while a job
 * runs.  A pool owns its poller (poller.c, created on first
 * negstream__pool_poller): poller->mu is never held together with pool->mu
 * (the poller resumes fired jobs after unlocking, and negstream_pool_free
 * calls negstream__poller_free without pool->mu), except in the fork
 * handlers, which take g_default_mu -> g_list_mu -> every pool->mu ->
 * every poller->mu: safe, since no other path holds poller->mu while it
 * waits for a pool lock.
 *
 * Freeing: negstream_pool_free first refuses submits ('closing'), then
 * frees the poller, whose parked jobs fire SHUTDOWN and come back through
 * negstream__pool_resume, which is still accepted; then the workers drain
 * the queue ('stopping': they exit when it is empty), jobs resumed by
 * those jobs included; 'closed' ends resumes once the queue is empty and
 * every worker has left.
 *
 * Blocked workers: a worker between negstream__pool_blocking_begin and
 * _end is counted in nblocked and not against max_threads, so a job queued
 * behind workers that all wait for it still gets a thread; a worker that
 * finds more than max_threads unblocked workers leaves instead of taking
 * another job.
 *
 * Joining: a worker that exits publishes its thread id as the pool's
 * "zombie" and joins the previous zombie first, so at most one exited
 * worker is ever unjoined; negstream_pool_free joins the last one, which
 * transitively means every worker has been joined.  No per-worker record
 * is allocated.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "poller.h"
#include "pool.h"
#include "trace.h"

/* job->state; 0 so that a zeroed job is idle. */
enum { JOB_IDLE = 0, JOB_QUEUED, JOB_TAKEN };

#define POOL_MAX_THREADS     1024u
/* The default pool's max_threads when NEGSTREAM_THREADS is not set:
 * POOL_DEFAULT_PER_CPU per CPU, at least POOL_DEFAULT_MIN_MAX (see
 * negstream__pool_default). */
#define POOL_DEFAULT_PER_CPU 4u
#define POOL_DEFAULT_MIN_MAX 8u
#define POOL_DEFAULT_IDLE_MS 10000

/*
 * An idle worker checks the queue for this long before it sleeps.  A job
 * submitted within that window (the next begin_write of a caller that just
 * ended the previous one) starts without a futex wake-up, which on a
 * virtual machine costs tens of microseconds.  20 us: with 4 us the
 * caller's turn-around (end_write, its own bookkeeping, begin_write) often
 * missed the window on a loaded 2-CPU machine, and wait-on-handle small
 * writes lost about a third (bench/smallwrite, bench/RESULTS.md).  The
 * spin happens once per idle period, after a job, never while the pool
 * stays idle, so an idle pool still uses no CPU.
 */
#ifndef POOL_SPIN_NS
# define POOL_SPIN_NS 20000
#endif

struct negstream_pool {
    pthread_mutex_t mu;
    pthread_cond_t  work_cv;      /* idle workers wait here for jobs */
    pthread_cond_t  done_cv;      /* negstream_pool_free waits for exits */
    negstream__job *head, *tail;  /* FIFO, linked through job->next */
    atomic_size_t   nqueued;      /* written under mu, read by spinners */
    atomic_bool     stopping;     /* draining: workers exit when idle */
    bool            closing;      /* pool_free called: submits refused */
    bool            closed;       /* drained: resumes refused too */
    negstream__poller *poller;    /* created on first use; NULL */
    unsigned        min_threads, max_threads;
    unsigned        nthreads;     /* live workers, spawn to exit */
    unsigned        nblocked;     /* in blocking_begin..end */
    unsigned        nstarting;    /* spawned, not yet at the queue */
    unsigned        nspin;        /* idle workers polling nqueued */
    unsigned        nsleep;       /* idle workers blocked on work_cv */
    atomic_uint     next_id;      /* for the thread names */
    int             idle_ms;
    unsigned        idle_gen;     /* bumped when idle_ms changes */
    bool            self_free;    /* freed from a worker: last one frees */
    bool            is_default;
    bool            has_zombie;
    pthread_t       zombie;       /* exited, not yet joined */
    negstream_pool *list_prev, *list_next;   /* g_pools, for fork */
};

/* The pool whose worker the calling thread is, if any. */
static __thread negstream_pool *current_pool;
/* Nesting depth of negstream__pool_blocking_begin on this thread. */
static __thread unsigned blocking_depth;

/* Every live pool, so that the fork handlers can reach their locks. */
static pthread_mutex_t g_list_mu = PTHREAD_MUTEX_INITIALIZER;
static negstream_pool *g_pools;
static pthread_once_t  g_atfork_once = PTHREAD_ONCE_INIT;

/* The default pool: created once, never freed. */
static pthread_mutex_t g_default_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(negstream_pool *) g_default;

static pthread_once_t     g_condattr_once = PTHREAD_ONCE_INIT;
static pthread_condattr_t g_condattr;
static int                g_ncpu;

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

static void now_mono(struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
}

static long long ts_ns(const struct timespec *ts)
{
    return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

/* Timed waits use CLOCK_MONOTONIC, so that setting the clock neither
 * ends an idle period early nor stretches it. */
static void condattr_init(void)
{
    long n;

    pthread_condattr_init(&g_condattr);
    pthread_condattr_setclock(&g_condattr, CLOCK_MONOTONIC);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    g_ncpu = n < 1 ? 1 : (n > INT_MAX ? INT_MAX : (int)n);
}

static int cond_init(pthread_cond_t *cv)
{
    pthread_once(&g_condattr_once, condattr_init);
    return pthread_cond_init(cv, &g_condattr);
}

/* ---- fork ------------------------------------------------------------- */

/*
 * fork() copies only the calling thread.  prepare takes every pool lock so
 * that no queue is half-updated in the copy; the parent just releases
 * them.  The child owns the locks (its one thread took them) and releases
 * them too, but rebuilds the condition variables, whose waiters are gone.
 *
 * In the child a pool has no workers (except the forking thread itself,
 * if it was one: it goes on as a worker when its job returns).  Workers
 * start again on the next submit.  Jobs queued at fork time are dropped:
 * they belong to the parent's streams, and running them in the child would
 * write on the parent's sockets.  Pools cross fork(); streams and async
 * results do not.
 */
/*
 * The pollers follow their pools' locks (see the top of the file).  A
 * pool's poller pointer changes only under pool->mu, which prepare holds;
 * a pool being freed has dropped its pointer before freeing the poller, so
 * a child forked meanwhile never sees that poller (nor may it use the
 * pool).  In the child, the poller drops the parent's watches and closes
 * the inherited epoll and wake-up fds without touching the epoll set,
 * which the parent still uses; it starts again at the next arm.
 */
static void atfork_prepare(void)
{
    negstream_pool *p;

    pthread_mutex_lock(&g_default_mu);
    pthread_mutex_lock(&g_list_mu);
    for (p = g_pools; p != NULL; p = p->list_next)
        pthread_mutex_lock(&p->mu);
    for (p = g_pools; p != NULL; p = p->list_next)
        negstream__poller_atfork_prepare(p->poller);
}

static void atfork_parent(void)
{
    negstream_pool *p;

    for (p = g_pools; p != NULL; p = p->list_next)
        negstream__poller_atfork_parent(p->poller);
    for (p = g_pools; p != NULL; p = p->list_next)
        pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&g_list_mu);
    pthread_mutex_unlock(&g_default_mu);
}

static void atfork_child(void)
{
    negstream_pool *p;
    negstream__job *job;

    for (p = g_pools; p != NULL; p = p->list_next)
        negstream__poller_atfork_child(p->poller);
    for (p = g_pools; p != NULL; p = p->list_next) {
        cond_init(&p->work_cv);
        cond_init(&p->done_cv);
        for (job = p->head; job != NULL; job = job->next)
            job->state = JOB_IDLE;
        p->head = p->tail = NULL;
        atomic_store_explicit(&p->nqueued, 0, memory_order_relaxed);
        p->nthreads = current_pool == p ? 1 : 0;
        p->nblocked = current_pool == p && blocking_depth > 0 ? 1 : 0;
        p->nspin = p->nsleep = p->nstarting = 0;
        p->has_zombie = false;     /* that thread does not exist here */
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&g_list_mu);
    pthread_mutex_unlock(&g_default_mu);
}

static void atfork_register(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ---- the queue (caller holds p->mu) ------------------------------------ */

static void queue_push(negstream_pool *p, negstream__job *job)
{
    job->next = NULL;
    job->state = JOB_QUEUED;
    if (p->tail != NULL)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    atomic_store_explicit(&p->nqueued,
        atomic_load_explicit(&p->nqueued, memory_order_relaxed) + 1,
        memory_order_relaxed);
}

static negstream__job *queue_pop(negstream_pool *p)
{
    negstream__job *job = p->head;

    if (job == NULL)
        return NULL;
    p->head = job->next;
    if (p->head == NULL)
        p->tail = NULL;
    job->next = NULL;
    job->state = JOB_TAKEN;
    atomic_store_explicit(&p->nqueued,
        atomic_load_explicit(&p->nqueued, memory_order_relaxed) - 1,
        memory_order_relaxed);
    return job;
}

/* Unlinks a queued job; false if it is not in p's queue. */
static bool queue_remove(negstream_pool *p, negstream__job *job)
{
    negstream__job *prev = NULL, *cur;

    for (cur = p->head; cur != NULL; prev = cur, cur = cur->next) {
        if (cur != job)
            continue;
        if (prev != NULL)
            prev->next = cur->next;
        else
            p->head = cur->next;
        if (p->tail == cur)
            p->tail = prev;
        cur->next = NULL;
        cur->state = JOB_IDLE;
        atomic_store_explicit(&p->nqueued,
            atomic_load_explicit(&p->nqueued, memory_order_relaxed) - 1,
            memory_order_relaxed);
        return true;
    }
    return false;
}

/* ---- workers ----------------------------------------------------------- */

static void pool_destroy(negstream_pool *p);

/* Thread names show up in top -H, gdb and /proc: "negstream-w3". */
static void name_thread(unsigned id)
{
#ifdef HAVE_PTHREAD_SETNAME_NP
    char name[16];

    snprintf(name, sizeof(name), "negstream-w%u", id % 10000u);
# if defined(__APPLE__)
    pthread_setname_np(name);
# elif defined(__NetBSD__)
    pthread_setname_np(pthread_self(), "%s", name);
# else
    pthread_setname_np(pthread_self(), name);
# endif
#else
    (void)id;
#endif
}

/*
 * Waits for work as an idle worker.  Caller holds p->mu.  Returns true if
 * the worker should exit: it is above min_threads and stayed idle for
 * idle_ms with nothing queued.
 */
static bool idle_wait(negstream_pool *p)
{
    struct timespec deadline, t0, t;
    bool have_deadline = false;
    unsigned gen = 0;
    unsigned i;
    int rc;

    /* A short spin first (never on one CPU: the submitter could not run
     * while we spin).  Spinners are counted so that submit does not wake
     * a sleeper, or start a thread, for a job a spinner will take. */
    if (g_ncpu > 1) {
        p->nspin++;
        pthread_mutex_unlock(&p->mu);
        now_mono(&t0);
        for (i = 1;; i++) {
            if (atomic_load_explicit(&p->nqueued, memory_order_relaxed) > 0
                || atomic_load_explicit(&p->stopping, memory_order_relaxed))
                break;
            cpu_relax();
            if (i % 16 == 0) {
                now_mono(&t);
                if (ts_ns(&t) - ts_ns(&t0) >= POOL_SPIN_NS)
                    break;
            }
        }
        pthread_mutex_lock(&p->mu);
        p->nspin--;
    }
    p->nsleep++;
    while (p->head == NULL && !atomic_load(&p->stopping)) {
        if (p->nthreads <= p->min_threads) {
            pthread_cond_wait(&p->work_cv, &p->mu);
            continue;
        }
        if (!have_deadline || gen != p->idle_gen) {
            now_mono(&deadline);
            deadline.tv_sec += p->idle_ms / 1000;
            deadline.tv_nsec += (long)(p->idle_ms % 1000) * 1000000L;
            if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
            }
            have_deadline = true;
            gen = p->idle_gen;
        }
        rc = pthread_cond_timedwait(&p->work_cv, &p->mu, &deadline);
        if (rc == ETIMEDOUT && p->head == NULL
            && !atomic_load(&p->stopping)
            && p->nthreads > p->min_threads && gen == p->idle_gen) {
            p->nsleep--;
            return true;
        }
    }
    p->nsleep--;
    return false;
}

/*
 * Leaves the pool.  Caller holds p->mu; returns with it released and p
 * possibly freed.  The last worker of a pool freed from one of its own
 * workers frees it: nobody else is left to join, so it detaches itself.
 */
static void worker_exit(negstream_pool *p)
{
    bool join_prev = p->has_zombie, last;
    pthread_t prev = p->zombie;

    p->nthreads--;
    last = p->nthreads == 0 && p->self_free;
    if (last) {
        p->has_zombie = false;
    } else {
        p->zombie = pthread_self();
        p->has_zombie = true;
    }
    if (p->nthreads == 0 && atomic_load(&p->stopping))
        pthread_cond_broadcast(&p->done_cv);
    current_pool = NULL;
    pthread_mutex_unlock(&p->mu);
    /* From here on p may be freed by negstream_pool_free (unless last). */
    if (join_prev)
        pthread_join(prev, NULL);
    if (last) {
        pthread_detach(pthread_self());
        pool_destroy(p);
    }
}

static void *worker_main(void *arg)
{
    negstream_pool *p = arg;
    negstream__job *job;

    current_pool = p;
    name_thread(atomic_fetch_add_explicit(&p->next_id, 1,
                                          memory_order_relaxed));
    pthread_mutex_lock(&p->mu);
    p->nstarting--;
    for (;;) {
        /* Blocked workers came back: one too many would run.  Another
         * unblocked worker is left (max_threads >= 1); pass it a queued
         * job's wake-up in case it sleeps. */
        if (p->nthreads - p->nblocked > p->max_threads) {
            if (p->head != NULL)
                pthread_cond_signal(&p->work_cv);
            break;
        }
        job = queue_pop(p);
        if (job != NULL) {
            pthread_mutex_unlock(&p->mu);
            job->run(job);      /* job may be freed by now */
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (atomic_load(&p->stopping))
            break;
        if (idle_wait(p))
            break;
    }
    worker_exit(p);
    return NULL;
}

/*
 * Starts one worker.  Caller holds p->mu.  The worker starts with every
 * asynchronous signal blocked, so that the application's handlers never
 * run on our threads (signals go to a thread that can take them).  Faults
 * stay deliverable: a blocked SIGSEGV would kill the process without the
 * application's (or a sanitizer's) handler.
 */
static int spawn_locked(negstream_pool *p, negstream_error *err)
{
    static const int sync_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL,
                                        SIGTRAP, SIGSYS };
    sigset_t all, old;
    pthread_t t;
    size_t i;
    int rc;

    sigfillset(&all);
    for (i = 0; i < sizeof(sync_signals) / sizeof(sync_signals[0]); i++)
        sigdelset(&all, sync_signals[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&t, NULL, worker_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, rc,
                           "cannot start a worker thread (%u running); "
                           "check the thread and memory limits "
                           "(ulimit -u, ulimit -v)", p->nthreads);
        return -1;
    }
    /* Joined later through the zombie chain (see the top of the file). */
    p->nthreads++;
    p->nstarting++;
    return 0;
}

/* ---- creation and destruction ------------------------------------------ */

static negstream_pool *pool_create(unsigned min_threads, unsigned max_threads,
                                   bool is_default, negstream_error *err)
{
    negstream_pool *p;
    unsigned i;

    pthread_once(&g_atfork_once, atfork_register);
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, ENOMEM,
                           "cannot allocate a worker pool");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    cond_init(&p->work_cv);
    cond_init(&p->done_cv);
    atomic_init(&p->nqueued, 0);
    atomic_init(&p->stopping, false);
    atomic_init(&p->next_id, 0);
    p->min_threads = min_threads;
    p->max_threads = max_threads;
    p->idle_ms = POOL_DEFAULT_IDLE_MS;
    p->is_default = is_default;

    /* Listed before any worker starts, so a fork in between is handled. */
    pthread_mutex_lock(&g_list_mu);
    p->list_next = g_pools;
    if (g_pools != NULL)
        g_pools->list_prev = p;
    g_pools = p;
    pthread_mutex_unlock(&g_list_mu);

    pthread_mutex_lock(&p->mu);
    for (i = 0; i < min_threads; i++) {
        if (spawn_locked(p, err) < 0) {
            pthread_mutex_unlock(&p->mu);
            p->is_default = false;
            negstream_pool_free(p);
            return NULL;
        }
    }
    pthread_mutex_unlock(&p->mu);
    NEGSTREAM__TRACE("pool %p: %u..%u workers", (void *)p, min_threads,
                     max_threads);
    negstream__err_ok(err);
    return p;
}

/* Unlists and frees p.  Every worker has exited and been joined. */
static void pool_destroy(negstream_pool *p)
{
    pthread_mutex_lock(&g_list_mu);
    if (p->list_prev != NULL)
        p->list_prev->list_next = p->list_next;
    else
        g_pools = p->list_next;
    if (p->list_next != NULL)
        p->list_next->list_prev = p->list_prev;
    pthread_mutex_unlock(&g_list_mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

negstream_pool *negstream_pool_new(unsigned min_threads, unsigned max_threads,
                                   negstream_error *err)
{
    if (max_threads < 1 || max_threads > POOL_MAX_THREADS) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "max_threads is %u; it must be between 1 and %u",
                           max_threads, POOL_MAX_THREADS);
        return NULL;
    }
    if (min_threads > max_threads) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "min_threads (%u) is greater than max_threads "
                           "(%u)", min_threads, max_threads);
        return NULL;
    }
    return pool_create(min_threads, max_threads, false, err);
}

/*
 * Refuses new jobs, frees the poller (every parked watch fires SHUTDOWN and
 * its job is resumed), lets the workers run everything queued, jobs they
 * resume included, and joins them.  From one of p's own workers it cannot
 * wait for itself: it returns at once, and the last worker to leave frees
 * the pool.  The default pool is never freed (streams may use it until
 * exit): the call is ignored for it, as is a second call for the same
 * pool.
 */
void negstream_pool_free(negstream_pool *p)
{
    negstream__poller *poller;
    negstream__job *job;
    bool join_last;
    pthread_t last;

    if (p == NULL || p->is_default)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->closing = true;
    /* Dropped before the poller is freed, so that the fork handlers never
     * reach a poller on its way out. */
    poller = p->poller;
    p->poller = NULL;
    pthread_mutex_unlock(&p->mu);

    /* Without pool->mu: the poller resumes the fired jobs through it.
     * The workers keep going meanwhile (stopping is not set yet), so the
     * resumed jobs find them. */
    negstream__poller_free(poller);

    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stopping, true);
    pthread_cond_broadcast(&p->work_cv);
    if (current_pool == p) {
        p->self_free = true;
        pthread_mutex_unlock(&p->mu);
        NEGSTREAM__TRACE("pool %p freed from its own worker; the last "
                         "worker out frees it", (void *)p);
        return;
    }
    /* A job resumed once every worker has left (or whose worker could not
     * start, or whose workers vanished in fork()) runs here rather than
     * being dropped; one that starts a worker again is waited for. */
    for (;;) {
        while (p->nthreads > 0)
            pthread_cond_wait(&p->done_cv, &p->mu);
        job = queue_pop(p);
        if (job == NULL)
            break;
        pthread_mutex_unlock(&p->mu);
        job->run(job);
        pthread_mutex_lock(&p->mu);
    }
    p->closed = true;
    join_last = p->has_zombie;
    last = p->zombie;
    p->has_zombie = false;
    pthread_mutex_unlock(&p->mu);
    if (join_last)
        pthread_join(last, NULL);
    pool_destroy(p);
}

/*
 * The default pool: min 1 worker (kept, so that a lone stream does not pay
 * a thread start per operation), max NEGSTREAM_THREADS if that is an
 * integer from 1 to 1024, else four per CPU, at least 8.  Workers run
 * only CPU work (an operation waiting for its peer is parked with the
 * poller), so the pool needs enough threads to keep the CPUs busy, plus
 * room for what may still block a worker: a KDC exchange inside GSSAPI, a
 * callback that blocks (one blocked in end_* or a wait is not counted, see
 * negstream__pool_blocking_begin).  bench/RESULTS.md has the figures.
 * Any other NEGSTREAM_THREADS value is ignored (and traced).
 */
negstream_pool *negstream__pool_default(negstream_error *err)
{
    negstream_pool *p;
    unsigned max;
    const char *env;
    char *end;
    long v;

    p = atomic_load_explicit(&g_default, memory_order_acquire);
    if (p != NULL) {
        negstream__err_ok(err);
        return p;
    }
    pthread_mutex_lock(&g_default_mu);
    p = atomic_load_explicit(&g_default, memory_order_relaxed);
    if (p != NULL) {
        negstream__err_ok(err);
        goto out;
    }
    pthread_once(&g_condattr_once, condattr_init);
    max = POOL_DEFAULT_PER_CPU * (unsigned)(g_ncpu < 256 ? g_ncpu : 256);
    if (max < POOL_DEFAULT_MIN_MAX)
        max = POOL_DEFAULT_MIN_MAX;
    env = getenv("NEGSTREAM_THREADS");
    if (env != NULL && *env != '\0') {
        errno = 0;
        v = strtol(env, &end, 10);
        if (errno == 0 && *end == '\0' && v >= 1
            && v <= (long)POOL_MAX_THREADS)
            max = (unsigned)v;
        else
            NEGSTREAM__TRACE("NEGSTREAM_THREADS=\"%s\" ignored: not an "
                             "integer from 1 to %u", env, POOL_MAX_THREADS);
    }
    p = pool_create(1, max, true, err);
    if (p != NULL)
        atomic_store_explicit(&g_default, p, memory_order_release);
out:
    pthread_mutex_unlock(&g_default_mu);
    return p;
}

/* ---- jobs -------------------------------------------------------------- */

/*
 * Wakes a sleeper only if the workers already awake and idle (spinning,
 * or just started) cannot take every queued job, and starts a worker only
 * if the sleepers cannot either: a job that finds no idle worker gets a
 * new thread while fewer than max_threads run unblocked.  Caller holds
 * p->mu.  -1 with err if a thread was needed and could not be started.
 */
static int grow_locked(negstream_pool *p, negstream_error *err)
{
    size_t queued, awake;

    queued = atomic_load_explicit(&p->nqueued, memory_order_relaxed);
    awake = (size_t)p->nspin + p->nstarting;
    if (queued > awake && p->nsleep > 0)
        pthread_cond_signal(&p->work_cv);
    if (queued > awake + p->nsleep
        && p->nthreads - p->nblocked < p->max_threads)
        return spawn_locked(p, err);
    return 0;
}

/* submit (resume false) and resume (true). */
static int enqueue(negstream_pool *p, negstream__job *job, bool resume,
                   negstream_error *err)
{
    int rc = -1;

    if (p == NULL || job == NULL || job->run == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           p == NULL ? "pool" : job == NULL ? "job"
                                                            : "job->run");
        return -1;
    }
    pthread_mutex_lock(&p->mu);
    if (resume ? p->closed : p->closing) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED,
                           "the worker pool is being freed");
        goto out;
    }
    if (job->state == JOB_QUEUED) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "the job is already queued");
        goto out;
    }
    queue_push(p, job);
    if (grow_locked(p, err) < 0 && p->nthreads == 0) {
        /* Nobody would ever run it, unless negstream_pool_free (from a
         * thread of its own) is draining: it runs what is left. */
        if (!(resume && p->closing && !p->self_free)) {
            queue_remove(p, job);
            goto out;
        }
    }
    negstream__err_ok(err);
    rc = 0;
out:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int negstream__pool_submit(negstream_pool *p, negstream__job *job,
                           negstream_error *err)
{
    return enqueue(p, job, false, err);
}

int negstream__pool_resume(negstream_pool *p, negstream__job *job,
                           negstream_error *err)
{
    return enqueue(p, job, true, err);
}

negstream__poller *negstream__pool_poller(negstream_pool *p,
                                          negstream_error *err)
{
    negstream__poller *poller = NULL;

    if (p == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "pool is NULL");
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED,
                           "the worker pool is being freed");
        goto out;
    }
    /* Made under pool->mu so that there is only ever one; the new
     * poller's lock is nobody else's yet, so no order is broken. */
    if (p->poller == NULL)
        p->poller = negstream__poller_new(p, err);
    else
        negstream__err_ok(err);
    poller = p->poller;
out:
    pthread_mutex_unlock(&p->mu);
    return poller;
}

/*
 * Only the outermost begin of a worker counts.  Growing here matters when
 * the job the worker waits for was queued before it blocked: that submit
 * found max_threads running and started nobody.
 */
void negstream__pool_blocking_begin(void)
{
    negstream_pool *p = current_pool;

    if (p == NULL || blocking_depth++ > 0)
        return;
    pthread_mutex_lock(&p->mu);
    p->nblocked++;
    if (grow_locked(p, NULL) < 0)
        NEGSTREAM__TRACE("pool %p: no thread for the jobs queued behind "
                         "a blocked worker", (void *)p);
    pthread_mutex_unlock(&p->mu);
}

void negstream__pool_blocking_end(void)
{
    negstream_pool *p = current_pool;

    if (p == NULL || blocking_depth == 0 || --blocking_depth > 0)
        return;
    pthread_mutex_lock(&p->mu);
    p->nblocked--;
    pthread_mutex_unlock(&p->mu);
}

bool negstream__pool_cancel(negstream_pool *p, negstream__job *job)
{
    bool removed = false;

    if (p == NULL || job == NULL)
        return false;
    pthread_mutex_lock(&p->mu);
    if (job->state == JOB_QUEUED)
        removed = queue_remove(p, job);
    pthread_mutex_unlock(&p->mu);
    return removed;
}

bool negstream__pool_is_worker(const negstream_pool *p)
{
    return p != NULL && current_pool == p;
}

void negstream__pool_set_idle_ms(negstream_pool *p, int ms)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->idle_ms = ms < 1 ? 1 : ms;
    p->idle_gen++;
    pthread_cond_broadcast(&p->work_cv);   /* sleepers restart the clock */
    pthread_mutex_unlock(&p->mu);
}

unsigned negstream__pool_threads(negstream_pool *p)
{
    unsigned n;

    if (p == NULL)
        return 0;
    pthread_mutex_lock(&p->mu);
    n = p->nthreads;
    pthread_mutex_unlock(&p->mu);
    return n;
}
