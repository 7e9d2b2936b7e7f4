/*
 * check_pool.c - the worker pool through its internal API, with small fake
 * jobs: FIFO order, growth up to max_threads and shrinking back to
 * min_threads, cancel, free (from outside and from a worker), resume while
 * a free drains, workers blocked on other jobs (blocking_begin/end), the
 * default pool and NEGSTREAM_THREADS, fork, signal masks, names and idle
 * CPU.
 *
 * No KDC, no GSSAPI.  Waits use condition variables with a generous
 * deadline (a hang fails the test rather than Check's timeout); nothing
 * asserts on elapsed time except the idle CPU bound, which guards against
 * a busy loop.  Tests that need a pristine process (the default pool)
 * fork themselves, so they work with CK_FORK=no as well.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "negstream.h"
#include "pool.h"

/*
 * Fork tests start threads in a forked child of a threaded process.  TSan
 * aborts that by default, and its runtime (GCC 12, LLVM 14) still lists
 * the parent's vanished threads in the child, so a new thread that gets a
 * dead one's stack (and so its id) kills the child.  Under TSan the child
 * of a threaded process therefore checks everything but new threads; the
 * default, ASan and valgrind runs cover those.
 */
#if defined(__SANITIZE_THREAD__)
# define UNDER_TSAN 1
#elif defined(__has_feature)
# if __has_feature(thread_sanitizer)
#  define UNDER_TSAN 1
# endif
#endif
#ifndef UNDER_TSAN
# define UNDER_TSAN 0
#endif

#if UNDER_TSAN
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

#define DEADLINE_MS 20000   /* "never happened": a failure, not a bound */
#define MAXJOBS     256

/* ---- fake jobs ---------------------------------------------------------- */

typedef struct ctx {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int  running, max_running, done;
    bool gate_open;
    int  order[MAXJOBS];
    int  norder;
} ctx;

typedef struct tjob tjob;
struct tjob {
    negstream__job job;         /* first: a job pointer is a tjob pointer */
    ctx           *c;
    int            id;
    bool           gated;       /* waits for c->gate_open */
    int            ran;         /* times run, under c->mu */
    void         (*hook)(tjob *j);   /* extra work after the bookkeeping */
    negstream_pool *pool;       /* for hooks */
    negstream_pool *other;      /* for hooks */
    int            result;      /* set by hooks */
    int            refused;     /* set by hooks */
    sigset_t       mask;        /* set by hooks */
    char           name[32];    /* set by hooks */
};

static void ctx_init(ctx *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
}

static void ctx_destroy(ctx *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

static void tjob_run(negstream__job *job)
{
    tjob *j = (tjob *)job;
    ctx *c = j->c;

    pthread_mutex_lock(&c->mu);
    c->running++;
    if (c->running > c->max_running)
        c->max_running = c->running;
    if (c->norder < MAXJOBS)
        c->order[c->norder++] = j->id;
    j->ran++;
    pthread_cond_broadcast(&c->cv);
    while (j->gated && !c->gate_open)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    if (j->hook != NULL)
        j->hook(j);
    pthread_mutex_lock(&c->mu);
    c->running--;
    c->done++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void tjob_init(tjob *j, ctx *c, int id, bool gated)
{
    memset(j, 0, sizeof(*j));
    j->job.run = tjob_run;
    j->c = c;
    j->id = id;
    j->gated = gated;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Waits (up to DEADLINE_MS) until c->FIELD >= n; returns the success. */
static bool ctx_wait_ge(ctx *c, const int *field, int n)
{
    struct timespec dl;
    bool ok;

    deadline_in(&dl, DEADLINE_MS);
    pthread_mutex_lock(&c->mu);
    while (*field < n)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    ok = *field >= n;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static void ctx_open_gate(ctx *c)
{
    pthread_mutex_lock(&c->mu);
    c->gate_open = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static int ctx_get(ctx *c, const int *field)
{
    int v;

    pthread_mutex_lock(&c->mu);
    v = *field;
    pthread_mutex_unlock(&c->mu);
    return v;
}

static void submit_ok(negstream_pool *p, tjob *j)
{
    negstream_error e;

    ck_assert_msg(negstream__pool_submit(p, &j->job, &e) == 0,
                  "submit: %s", e.message);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Polls negstream__pool_threads(p) until it equals n (or the deadline). */
static bool threads_become(negstream_pool *p, unsigned n)
{
    int waited;

    for (waited = 0; waited < DEADLINE_MS; waited += 5) {
        if (negstream__pool_threads(p) == n)
            return true;
        sleep_ms(5);
    }
    return negstream__pool_threads(p) == n;
}

/* Threads of this process that the kernel still runs (Linux); -1 if it
 * cannot tell. */
static int os_threads(void)
{
#ifdef __linux__
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
#else
    return -1;
#endif
}

static void *no_op_thread(void *arg)
{
    return arg;
}

/* The thread count before a test's pools exist.  One thread is started
 * and joined first: ThreadSanitizer starts its own background thread at
 * the first pthread_create, which must not be taken for a worker. */
static int base_threads(void)
{
    pthread_t t;

    if (pthread_create(&t, NULL, no_op_thread, NULL) == 0)
        pthread_join(t, NULL);
    return os_threads();
}

static bool os_threads_become(int n)
{
    int waited;

    if (n < 0)
        return true;
    for (waited = 0; waited < DEADLINE_MS; waited += 5) {
        if (os_threads() == n)
            return true;
        sleep_ms(5);
    }
    return os_threads() == n;
}

/* ---- arguments ---------------------------------------------------------- */

START_TEST(test_new_arguments)
{
    negstream_error e;
    negstream_pool *p;
    tjob j;

    ck_assert_ptr_null(negstream_pool_new(0, 0, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_ptr_null(negstream_pool_new(3, 2, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert(strstr(e.message, "min_threads") != NULL);
    ck_assert_ptr_null(negstream_pool_new(0, 1025, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_ptr_null(negstream_pool_new(0, 0, NULL));

    /* min 0: no thread until there is work. */
    p = negstream_pool_new(0, 1024, &e);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert_uint_eq(negstream__pool_threads(p), 0);

    ck_assert_int_eq(negstream__pool_submit(NULL, &j.job, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream__pool_submit(p, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    memset(&j, 0, sizeof(j));
    ck_assert_int_eq(negstream__pool_submit(p, &j.job, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert(!negstream__pool_cancel(NULL, &j.job));
    ck_assert(!negstream__pool_cancel(p, NULL));
    ck_assert(!negstream__pool_is_worker(NULL));
    ck_assert(!negstream__pool_is_worker(p));
    ck_assert_uint_eq(negstream__pool_threads(NULL), 0);
    negstream__pool_set_idle_ms(NULL, 5);
    negstream_pool_free(p);
    negstream_pool_free(NULL);
}
END_TEST

/* ---- order and bounds --------------------------------------------------- */

START_TEST(test_fifo_one_worker)
{
    enum { N = 100 };
    static tjob jobs[N + 1];
    negstream_error e;
    negstream_pool *p;
    ctx c;
    int i;

    ctx_init(&c);
    p = negstream_pool_new(1, 1, &e);
    ck_assert_ptr_nonnull(p);
    /* Job 0 holds the only worker, so the rest queue up behind it. */
    tjob_init(&jobs[0], &c, 0, true);
    submit_ok(p, &jobs[0]);
    ck_assert(ctx_wait_ge(&c, &c.running, 1));
    for (i = 1; i <= N; i++) {
        tjob_init(&jobs[i], &c, i, false);
        submit_ok(p, &jobs[i]);
    }
    /* A queued job cannot be queued twice. */
    ck_assert_int_eq(negstream__pool_submit(p, &jobs[N].job, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ctx_open_gate(&c);
    ck_assert(ctx_wait_ge(&c, &c.done, N + 1));
    ck_assert_int_eq(c.norder, N + 1);
    for (i = 0; i <= N; i++) {
        ck_assert_int_eq(c.order[i], i);
        ck_assert_int_eq(jobs[i].ran, 1);
    }
    ck_assert_int_eq(c.max_running, 1);
    ck_assert_uint_eq(negstream__pool_threads(p), 1);
    /* A job that has run may be submitted again. */
    submit_ok(p, &jobs[5]);
    ck_assert(ctx_wait_ge(&c, &c.done, N + 2));
    ck_assert_int_eq(jobs[5].ran, 2);
    negstream_pool_free(p);
    ctx_destroy(&c);
}
END_TEST

START_TEST(test_grows_to_max_only)
{
    enum { MAX = 4, EXTRA = 5 };
    static tjob jobs[MAX + EXTRA];
    negstream_error e;
    negstream_pool *p;
    int base = base_threads();
    ctx c;
    int i;

    ctx_init(&c);
    p = negstream_pool_new(1, MAX, &e);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(negstream__pool_threads(p), 1);
    /* Each blocking job finds every worker busy: a new one must start. */
    for (i = 0; i < MAX; i++) {
        tjob_init(&jobs[i], &c, i, true);
        submit_ok(p, &jobs[i]);
        ck_assert_msg(ctx_wait_ge(&c, &c.running, i + 1),
                      "job %d never started: the pool did not grow", i);
        ck_assert_uint_eq(negstream__pool_threads(p), (unsigned)i + 1);
    }
    /* At max: the next jobs wait in the queue, no thread is added. */
    for (i = MAX; i < MAX + EXTRA; i++) {
        tjob_init(&jobs[i], &c, i, true);
        submit_ok(p, &jobs[i]);
    }
    ck_assert_uint_eq(negstream__pool_threads(p), MAX);
    if (base >= 0)
        ck_assert_int_le(os_threads(), base + MAX);
    ck_assert_int_eq(ctx_get(&c, &c.running), MAX);
    ctx_open_gate(&c);
    ck_assert(ctx_wait_ge(&c, &c.done, MAX + EXTRA));
    ck_assert_int_eq(c.max_running, MAX);
    for (i = 0; i < MAX + EXTRA; i++)
        ck_assert_int_eq(jobs[i].ran, 1);
    negstream_pool_free(p);
    ck_assert(os_threads_become(base));
    ctx_destroy(&c);
}
END_TEST

START_TEST(test_idle_shrink)
{
    enum { MAX = 4 };
    static tjob jobs[2 * MAX];
    negstream_error e;
    negstream_pool *p;
    int base = base_threads();
    unsigned min;
    ctx c;
    int i, round = 0;

    for (min = 0; min <= 1; min++) {
        ctx_init(&c);
        p = negstream_pool_new(min, MAX, &e);
        ck_assert_ptr_nonnull(p);
        negstream__pool_set_idle_ms(p, 50);
        /* Twice: the pool must grow again after shrinking. */
        for (round = 0; round < 2; round++) {
            pthread_mutex_lock(&c.mu);
            c.gate_open = false;
            pthread_mutex_unlock(&c.mu);
            for (i = 0; i < MAX; i++) {
                tjob_init(&jobs[round * MAX + i], &c, i, true);
                submit_ok(p, &jobs[round * MAX + i]);
            }
            ck_assert(ctx_wait_ge(&c, &c.running, MAX));
            ck_assert_uint_eq(negstream__pool_threads(p), MAX);
            ctx_open_gate(&c);
            ck_assert(ctx_wait_ge(&c, &c.done, (round + 1) * MAX));
            ck_assert_msg(threads_become(p, min),
                          "still %u workers, expected %u after idling",
                          negstream__pool_threads(p), min);
            ck_assert_msg(os_threads_become(base < 0 ? -1
                                            : base + (int)min),
                          "%d threads, expected %d", os_threads(),
                          base + (int)min);
        }
        /* Three more idle periods: min workers stay. */
        sleep_ms(150);
        ck_assert_uint_eq(negstream__pool_threads(p), min);
        negstream_pool_free(p);
        ck_assert(os_threads_become(base));
        ctx_destroy(&c);
    }
}
END_TEST

/* ---- cancel ------------------------------------------------------------- */

START_TEST(test_cancel)
{
    static tjob gate, a, b, cc, never;
    negstream_error e;
    negstream_pool *p;
    ctx c;

    ctx_init(&c);
    p = negstream_pool_new(1, 1, &e);
    ck_assert_ptr_nonnull(p);
    tjob_init(&gate, &c, 0, true);
    tjob_init(&a, &c, 1, false);
    tjob_init(&b, &c, 2, false);
    tjob_init(&cc, &c, 3, false);
    tjob_init(&never, &c, 4, false);
    submit_ok(p, &gate);
    ck_assert(ctx_wait_ge(&c, &c.running, 1));
    submit_ok(p, &a);
    submit_ok(p, &b);
    submit_ok(p, &cc);

    ck_assert(!negstream__pool_cancel(p, &gate.job));   /* taken */
    ck_assert(!negstream__pool_cancel(p, &never.job));  /* not queued */
    ck_assert(negstream__pool_cancel(p, &cc.job));      /* the tail */
    ck_assert(negstream__pool_cancel(p, &a.job));       /* the head */
    ck_assert(!negstream__pool_cancel(p, &a.job));      /* only once */
    /* The queue stays consistent: b alone, then a re-queued behind it. */
    submit_ok(p, &a);
    ctx_open_gate(&c);
    ck_assert(ctx_wait_ge(&c, &c.done, 3));
    negstream_pool_free(p);
    ck_assert_int_eq(c.norder, 3);
    ck_assert_int_eq(c.order[0], 0);
    ck_assert_int_eq(c.order[1], 2);
    ck_assert_int_eq(c.order[2], 1);
    ck_assert_int_eq(cc.ran, 0);
    ck_assert_int_eq(never.ran, 0);
    ck_assert(!negstream__pool_cancel(NULL, &b.job));
    ctx_destroy(&c);
}
END_TEST

/* Submitters and cancellers race with the workers: every job either ran
 * once or was cancelled, never both, never lost. */
typedef struct race {
    negstream_pool *p;
    tjob           *jobs;
    int             first, n;
    int             cancelled;
    int             errors;
} race;

static void *race_main(void *arg)
{
    race *r = arg;
    negstream_error e;
    int i;

    for (i = r->first; i < r->first + r->n; i++) {
        if (negstream__pool_submit(r->p, &r->jobs[i].job, &e) < 0) {
            r->errors++;
            continue;
        }
        /* Try to cancel every other one, some time after submitting. */
        if (i % 2 == 0 && i >= r->first + 2
            && negstream__pool_cancel(r->p, &r->jobs[i - 2].job))
            r->cancelled++;
    }
    return NULL;
}

START_TEST(test_submit_cancel_race)
{
    enum { T = 4, PER = 2000 };
    static tjob jobs[T * PER];
    negstream_error e;
    negstream_pool *p;
    pthread_t th[T];
    race r[T];
    int i, ran = 0, cancelled = 0;
    ctx c;

    ctx_init(&c);
    p = negstream_pool_new(0, 3, &e);
    ck_assert_ptr_nonnull(p);
    for (i = 0; i < T * PER; i++)
        tjob_init(&jobs[i], &c, i, false);
    for (i = 0; i < T; i++) {
        r[i] = (race){ p, jobs, i * PER, PER, 0, 0 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, race_main, &r[i]), 0);
    }
    for (i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(r[i].errors, 0);
        cancelled += r[i].cancelled;
    }
    negstream_pool_free(p);     /* runs what is still queued */
    for (i = 0; i < T * PER; i++) {
        ck_assert_int_le(jobs[i].ran, 1);
        ran += jobs[i].ran;
    }
    ck_assert_int_eq(ran + cancelled, T * PER);
    ck_assert_int_eq(c.done, ran);
    ck_assert_int_le(c.max_running, 3);
    ctx_destroy(&c);
}
END_TEST

/* ---- free --------------------------------------------------------------- */

/* Submits filler jobs until the pool refuses with DISPOSED (it is being
 * freed and cannot finish while the gate is shut), then opens the gate. */
typedef struct freer {
    negstream_pool *p;
    ctx            *c;
    tjob           *fill;
    int             nfill, max;
    negstream_status last;
} freer;

static void *fill_until_disposed(void *arg)
{
    freer *f = arg;
    negstream_error e;
    tjob probe;
    tjob *j;

    tjob_init(&probe, f->c, -1, false);
    for (;;) {
        /* Once the fill array is used up, probe with one job that is
         * taken back at once: the gate holds the only worker, so it
         * cannot have been taken. */
        j = f->nfill < f->max ? &f->fill[f->nfill] : &probe;
        if (j != &probe)
            tjob_init(j, f->c, 1000 + f->nfill, false);
        if (negstream__pool_submit(f->p, &j->job, &e) < 0) {
            f->last = e.code;
            break;
        }
        if (j == &probe) {
            if (!negstream__pool_cancel(f->p, &probe.job))
                f->last = NEGSTREAM_E_IO;   /* fails the test */
        } else {
            f->nfill++;
        }
        sleep_ms(1);
    }
    ctx_open_gate(f->c);
    return NULL;
}

START_TEST(test_free_runs_queued_then_joins)
{
    enum { N = 10, MAXFILL = 200 };
    static tjob jobs[N + 1], fill[MAXFILL];
    negstream_error e;
    negstream_pool *p;
    int base = base_threads();
    pthread_t t;
    freer f;
    ctx c;
    int i;

    ctx_init(&c);
    p = negstream_pool_new(1, 1, &e);
    ck_assert_ptr_nonnull(p);
    tjob_init(&jobs[0], &c, 0, true);
    submit_ok(p, &jobs[0]);
    ck_assert(ctx_wait_ge(&c, &c.running, 1));
    for (i = 1; i <= N; i++) {
        tjob_init(&jobs[i], &c, i, false);
        submit_ok(p, &jobs[i]);
    }
    f = (freer){ p, &c, fill, 0, MAXFILL, NEGSTREAM_OK };
    ck_assert_int_eq(pthread_create(&t, NULL, fill_until_disposed, &f), 0);
    negstream_pool_free(p);      /* blocks until the gate opens */
    /* Everything queued before the free ran, in order, before it
     * returned; and the worker is gone. */
    ck_assert_int_eq(c.done, N + 1 + f.nfill);
    for (i = 0; i <= N; i++)
        ck_assert_int_eq(c.order[i], i);
    pthread_join(t, NULL);
    ck_assert_int_eq(f.last, NEGSTREAM_E_DISPOSED);
    ck_assert(os_threads_become(base));
    ctx_destroy(&c);
}
END_TEST

/* A job that frees its own pool, then tries to submit to it. */
static void free_own_pool(tjob *j)
{
    negstream_error e;
    tjob late;

    negstream_pool_free(j->pool);
    negstream_pool_free(j->pool);       /* second call: ignored */
    tjob_init(&late, j->c, -1, false);
    j->result = negstream__pool_submit(j->pool, &late.job, &e) < 0
                ? (int)e.code : -1;
}

START_TEST(test_free_from_worker)
{
    static tjob a, b, blockers[2];
    negstream_error e;
    negstream_pool *p;
    int base = base_threads();
    unsigned max;
    ctx c;

    for (max = 1; max <= 3; max += 2) {
        ctx_init(&c);
        p = negstream_pool_new(1, max, &e);
        ck_assert_ptr_nonnull(p);
        /* a waits at the gate until b is queued behind it: once a has
         * freed the pool, p may be gone as soon as the queue is empty. */
        tjob_init(&a, &c, 0, true);
        a.hook = free_own_pool;
        a.pool = p;
        tjob_init(&b, &c, 1, false);
        if (max > 1) {
            /* Other workers busy while the pool is freed. */
            tjob_init(&blockers[0], &c, 10, true);
            tjob_init(&blockers[1], &c, 11, true);
            submit_ok(p, &blockers[0]);
            submit_ok(p, &blockers[1]);
            ck_assert(ctx_wait_ge(&c, &c.running, 2));
        }
        submit_ok(p, &a);
        submit_ok(p, &b);       /* queued behind a: must still run */
        ctx_open_gate(&c);
        ck_assert(ctx_wait_ge(&c, &c.done, max > 1 ? 4 : 2));
        ck_assert_int_eq(a.result, NEGSTREAM_E_DISPOSED);
        ck_assert_int_eq(b.ran, 1);
        /* The last worker frees the pool and exits on its own. */
        ck_assert_msg(os_threads_become(base), "%d threads left, %d before",
                      os_threads(), base);
        ctx_destroy(&c);
    }
}
END_TEST

/* ---- resume while draining ---------------------------------------------- */

/* Chained resumes: each hook resumes j->next_job (if any) and records the
 * outcome; the gate's hook also tries a plain submit, refused. */
static tjob drain_gate, drain_b, drain_c, drain_x, drain_late;

static void resume_next(tjob *j)
{
    negstream_error e;
    tjob *next = j == &drain_gate ? &drain_b : j == &drain_b ? &drain_c
                                                             : NULL;

    if (next != NULL)
        j->result = negstream__pool_resume(j->pool, &next->job, &e) == 0
                    ? 0 : (int)e.code;
    if (j == &drain_gate)
        j->refused = negstream__pool_submit(j->pool, &drain_late.job, &e)
                     < 0 ? (int)e.code : -1;
}

static void *free_in_thread(void *arg)
{
    negstream_pool_free(arg);
    return NULL;
}

/* Submits a probe and takes it back until the pool refuses it: then
 * negstream_pool_free has begun.  The gate holds the only worker, so the
 * probe cannot have been taken. */
static bool wait_until_closing(negstream_pool *p, ctx *c)
{
    negstream_error e;
    tjob probe;
    int waited;

    tjob_init(&probe, c, -1, false);
    for (waited = 0; waited < DEADLINE_MS; waited += 1) {
        if (negstream__pool_submit(p, &probe.job, &e) < 0)
            return e.code == NEGSTREAM_E_DISPOSED;
        if (!negstream__pool_cancel(p, &probe.job))
            return false;
        sleep_ms(1);
    }
    return false;
}

START_TEST(test_resume_while_draining)
{
    negstream_error e;
    negstream_pool *p;
    pthread_t t;
    ctx c;

    ctx_init(&c);
    p = negstream_pool_new(1, 1, &e);
    ck_assert_ptr_nonnull(p);
    tjob_init(&drain_gate, &c, 0, true);
    tjob_init(&drain_b, &c, 1, false);
    tjob_init(&drain_c, &c, 2, false);
    tjob_init(&drain_x, &c, 3, false);
    tjob_init(&drain_late, &c, 4, false);
    drain_gate.hook = drain_b.hook = resume_next;
    drain_gate.pool = drain_b.pool = p;
    drain_gate.result = drain_b.result = -1;
    submit_ok(p, &drain_gate);
    ck_assert(ctx_wait_ge(&c, &c.running, 1));
    ck_assert_int_eq(pthread_create(&t, NULL, free_in_thread, p), 0);
    ck_assert(wait_until_closing(p, &c));
    /* From another thread (as the poller does): accepted. */
    ck_assert_int_eq(negstream__pool_resume(p, &drain_x.job, &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    /* Resumed twice while queued: refused as a submit would be. */
    ck_assert_int_eq(negstream__pool_resume(p, &drain_x.job, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ctx_open_gate(&c);
    pthread_join(t, NULL);
    /* Everything resumed ran, exactly once, before the free returned;
     * the plain submit from the gate's job was refused. */
    ck_assert_int_eq(drain_gate.result, 0);
    ck_assert_int_eq(drain_b.result, 0);
    ck_assert_int_eq(drain_gate.refused, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(drain_gate.ran, 1);
    ck_assert_int_eq(drain_x.ran, 1);
    ck_assert_int_eq(drain_b.ran, 1);
    ck_assert_int_eq(drain_c.ran, 1);
    ck_assert_int_eq(drain_late.ran, 0);
    ck_assert_int_eq(c.done, 4);
    ctx_destroy(&c);
}
END_TEST

/* ---- blocked workers ---------------------------------------------------- */

/* A job that blocks (announced) until c->flag is set by another job, then
 * optionally waits at a second gate. */
typedef struct blk {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    bool flag;              /* set by the helper job */
    bool b_submitted;       /* set by the test */
    bool unblocked;         /* the blocker called blocking_end */
    bool after_open;        /* second gate of the blocker */
    bool wait_b_queued;
    int  saw_flag;
} blk;

static blk g_blk;

static bool blk_wait(bool *field)
{
    struct timespec dl;
    bool ok;

    deadline_in(&dl, DEADLINE_MS);
    pthread_mutex_lock(&g_blk.mu);
    while (!*field)
        if (pthread_cond_timedwait(&g_blk.cv, &g_blk.mu, &dl) == ETIMEDOUT)
            break;
    ok = *field;
    pthread_mutex_unlock(&g_blk.mu);
    return ok;
}

static void blk_set(bool *field)
{
    pthread_mutex_lock(&g_blk.mu);
    *field = true;
    pthread_cond_broadcast(&g_blk.cv);
    pthread_mutex_unlock(&g_blk.mu);
}

static void blocker(tjob *j)
{
    if (g_blk.wait_b_queued)
        blk_wait(&g_blk.b_submitted);
    negstream__pool_blocking_begin();
    negstream__pool_blocking_begin();       /* nested: counted once */
    g_blk.saw_flag = blk_wait(&g_blk.flag);
    negstream__pool_blocking_end();
    negstream__pool_blocking_end();
    (void)j;
    blk_set(&g_blk.unblocked);
    blk_wait(&g_blk.after_open);
}

static void helper(tjob *j)
{
    (void)j;
    blk_set(&g_blk.flag);
}

/* A pool of at most 1 whose only worker blocks on a condition that only a
 * second job can satisfy: the second job gets a thread, whether it was
 * queued before the worker blocked (_i == 1) or after (_i == 0).  Once the
 * blocker is back, max_threads holds again. */
START_TEST(test_blocking_worker)
{
    static tjob a, b, after;
    negstream_error e;
    negstream_pool *p;
    ctx c;

    ctx_init(&c);
    memset(&g_blk, 0, sizeof(g_blk));
    pthread_mutex_init(&g_blk.mu, NULL);
    pthread_cond_init(&g_blk.cv, NULL);
    g_blk.wait_b_queued = _i == 1;
    /* Not from a worker: does nothing. */
    negstream__pool_blocking_begin();
    negstream__pool_blocking_end();
    negstream__pool_blocking_end();

    p = negstream_pool_new(1, 1, &e);
    ck_assert_ptr_nonnull(p);
    tjob_init(&a, &c, 0, false);
    a.hook = blocker;
    tjob_init(&b, &c, 1, false);
    b.hook = helper;
    submit_ok(p, &a);
    ck_assert(ctx_wait_ge(&c, &c.running, 1));
    submit_ok(p, &b);
    blk_set(&g_blk.b_submitted);
    ck_assert_msg(ctx_wait_ge(&c, &c.done, 1), "the blocked worker's "
                  "helper job never ran");
    ck_assert_int_eq(b.ran, 1);
    /* The blocker is back (not blocked, still in its job): a new job
     * must wait for it, max_threads is 1 again. */
    ck_assert(blk_wait(&g_blk.unblocked));
    tjob_init(&after, &c, 2, false);
    submit_ok(p, &after);
    sleep_ms(100);
    ck_assert_int_eq(after.ran, 0);
    blk_set(&g_blk.after_open);
    ck_assert(ctx_wait_ge(&c, &c.done, 3));
    ck_assert_int_eq(g_blk.saw_flag, 1);
    ck_assert_int_eq(c.max_running, 2);
    ck_assert(threads_become(p, 1));
    negstream_pool_free(p);
    pthread_cond_destroy(&g_blk.cv);
    pthread_mutex_destroy(&g_blk.mu);
    ctx_destroy(&c);
}
END_TEST

/* ---- identity, signals, names ------------------------------------------- */

static void inspect(tjob *j)
{
    j->result = (negstream__pool_is_worker(j->pool) ? 1 : 0)
                | (negstream__pool_is_worker(j->other) ? 2 : 0);
    pthread_sigmask(SIG_BLOCK, NULL, &j->mask);
#if defined(HAVE_PTHREAD_SETNAME_NP) && defined(__linux__)
    pthread_getname_np(pthread_self(), j->name, sizeof(j->name));
#endif
}

START_TEST(test_worker_identity_signals_name)
{
    static const int blocked[] = { SIGUSR1, SIGUSR2, SIGINT, SIGTERM,
                                   SIGPIPE, SIGCHLD, SIGALRM, SIGHUP };
    static const int open_[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL };
    static tjob j;
    negstream_error e;
    negstream_pool *p, *q;
    sigset_t none, old, saved;
    size_t i;
    ctx c;

    ctx_init(&c);
    /* The submitting thread's own mask must not leak into workers. */
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, &saved);
    p = negstream_pool_new(0, 2, &e);
    q = negstream_pool_new(0, 1, &e);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(q);
    tjob_init(&j, &c, 0, false);
    j.hook = inspect;
    j.pool = p;
    j.other = q;
    submit_ok(p, &j);
    ck_assert(ctx_wait_ge(&c, &c.done, 1));
    ck_assert_int_eq(j.result, 1);
    ck_assert(!negstream__pool_is_worker(p));
    for (i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++)
        ck_assert_msg(sigismember(&j.mask, blocked[i]) == 1,
                      "signal %d not blocked on a worker", blocked[i]);
    for (i = 0; i < sizeof(open_) / sizeof(open_[0]); i++)
        ck_assert_msg(sigismember(&j.mask, open_[i]) == 0,
                      "fault signal %d blocked on a worker", open_[i]);
    /* ... and the spawner's mask is restored. */
    pthread_sigmask(SIG_BLOCK, NULL, &old);
    ck_assert_int_eq(sigismember(&old, SIGUSR1), 0);
#if defined(HAVE_PTHREAD_SETNAME_NP) && defined(__linux__)
    ck_assert_msg(strncmp(j.name, "negstream-w", 11) == 0, "name \"%s\"",
                  j.name);
#endif
    negstream_pool_free(q);
    negstream_pool_free(p);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    ctx_destroy(&c);
}
END_TEST

/* ---- idle CPU ------------------------------------------------------------ */

static double cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(test_idle_uses_no_cpu)
{
    enum { N = 4 };
    static tjob jobs[N];
    negstream_error e;
    negstream_pool *p;
    double t0, used;
    ctx c;
    int i;

    ctx_init(&c);
    p = negstream_pool_new(N, N, &e);
    ck_assert_ptr_nonnull(p);
    /* Make every worker run once (all four at the same time), so that
     * each has been through its spin and gone to sleep. */
    for (i = 0; i < N; i++) {
        tjob_init(&jobs[i], &c, i, true);
        submit_ok(p, &jobs[i]);
    }
    ck_assert(ctx_wait_ge(&c, &c.running, N));
    ctx_open_gate(&c);
    ck_assert(ctx_wait_ge(&c, &c.done, N));
    sleep_ms(20);
    t0 = cpu_ms();
    sleep_ms(300);
    used = cpu_ms() - t0;
    /* A correctness bound (no busy loop), far above the real figure. */
    ck_assert_msg(used < 30.0, "4 idle workers used %.1f ms of CPU in "
                  "300 ms", used);
    negstream_pool_free(p);
    ctx_destroy(&c);
}
END_TEST

/* ---- fork and the default pool ------------------------------------------ */

/* In a forked child: no Check, report with the exit status. */
#define CHILD_REQUIRE(cond, code) do { \
        if (!(cond)) { \
            fprintf(stderr, "child: %s:%d: %s failed\n", __FILE__, \
                    __LINE__, #cond); \
            _exit(code); \
        } \
    } while (0)

/* Runs fn in a forked child and returns its exit status (or 128+sig). */
static int in_child(int (*fn)(void *), void *arg)
{
    pid_t pid;
    int st;

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fn(arg));
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

/* Fills p with gated jobs and checks it grows to exactly 'want' workers. */
static int check_pool_max(negstream_pool *p, unsigned want)
{
    static tjob jobs[160];
    static ctx c;   /* a worker may still be leaving it when we return */
    int i;

    CHILD_REQUIRE(want + 2 <= 160, 10);
    ctx_init(&c);
    for (i = 0; i < (int)want + 2; i++) {
        tjob_init(&jobs[i], &c, i, true);
        CHILD_REQUIRE(negstream__pool_submit(p, &jobs[i].job, NULL) == 0,
                      11);
    }
    CHILD_REQUIRE(ctx_wait_ge(&c, &c.running, (int)want), 12);
    CHILD_REQUIRE(negstream__pool_threads(p) == want, 13);
    ctx_open_gate(&c);
    CHILD_REQUIRE(ctx_wait_ge(&c, &c.done, (int)want + 2), 14);
    CHILD_REQUIRE(c.max_running == (int)want, 15);
    return 0;
}

static int default_pool_child(void *arg)
{
    const char *value = arg;
    negstream_error e;
    negstream_pool *p, *again;
    unsigned want;

    if (value != NULL)
        setenv("NEGSTREAM_THREADS", value, 1);
    else
        unsetenv("NEGSTREAM_THREADS");
    p = negstream__pool_default(&e);
    CHILD_REQUIRE(p != NULL && e.code == NEGSTREAM_OK, 2);
    again = negstream__pool_default(NULL);
    CHILD_REQUIRE(again == p, 3);
    /* Freeing the default pool is ignored. */
    negstream_pool_free(p);
    if (value != NULL && strcmp(value, "3") == 0)
        want = 3;
    else if (value != NULL && strcmp(value, "1") == 0)
        want = 1;
    else {
        /* The default: four per CPU, at least 8 (workers only run CPU
         * work; waiting for a peer costs no thread). */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

        want = 4u * (unsigned)(ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
        if (want < 8)
            want = 8;
    }
    return check_pool_max(p, want);
}

START_TEST(test_default_pool_threads_env)
{
    static const char *values[] = { "3", "1", NULL, "0", "-2", "abc",
                                    "3x", "2000", "" };
    int st;

    st = in_child(default_pool_child, (void *)values[_i]);
    ck_assert_msg(st == 0, "NEGSTREAM_THREADS=%s: child status %d",
                  values[_i] ? values[_i] : "(unset)", st);
}
END_TEST

/* Runs two jobs on p and waits for them.  Each call has its own ctx and
 * jobs: a worker may still be leaving the previous ones. */
static void submit_then_wait(negstream_pool *p, int code)
{
    static tjob jobs[8][2];
    static ctx ctxs[8];
    static int next;
    tjob *j;
    ctx *c;

    CHILD_REQUIRE(next < 8, code);
    j = jobs[next];
    c = &ctxs[next++];
    ctx_init(c);
    tjob_init(&j[0], c, 0, false);
    tjob_init(&j[1], c, 1, false);
    CHILD_REQUIRE(negstream__pool_submit(p, &j[0].job, NULL) == 0, code);
    CHILD_REQUIRE(negstream__pool_submit(p, &j[1].job, NULL) == 0, code);
    CHILD_REQUIRE(ctx_wait_ge(c, &c->done, 2), code + 1);
}

static tjob fork_blockers[2], fork_queued;

/* Grandchild: the pools were copied with no workers and the queued job
 * dropped; both pools must work. */
static int after_fork_child(void *arg)
{
    negstream_pool *p = arg;
    negstream_pool *d = negstream__pool_default(NULL);

    CHILD_REQUIRE(d != NULL, 20);
    CHILD_REQUIRE(negstream__pool_threads(p) == 0, 21);
    CHILD_REQUIRE(negstream__pool_threads(d) == 0, 22);
    CHILD_REQUIRE(!negstream__pool_is_worker(p), 23);
    CHILD_REQUIRE(!negstream__pool_cancel(p, &fork_queued.job), 24);
    if (UNDER_TSAN)
        return 0;       /* see the top of the file */
    submit_then_wait(p, 30);
    submit_then_wait(d, 40);
    CHILD_REQUIRE(fork_queued.ran == 0, 25);
    /* And a pool can still be freed (joining fresh workers). */
    negstream_pool_free(p);
    return 0;
}

static int fork_while_running_child(void *arg)
{
    negstream_pool *p, *d;
    ctx c;
    pid_t pid;
    int st, i;

    (void)arg;
    ctx_init(&c);
    p = negstream_pool_new(1, 2, NULL);
    d = negstream__pool_default(NULL);
    CHILD_REQUIRE(p != NULL && d != NULL, 2);
    submit_then_wait(d, 3);              /* the default pool has workers */
    /* Both workers of p busy, a third job queued behind them. */
    for (i = 0; i < 2; i++) {
        tjob_init(&fork_blockers[i], &c, i, true);
        CHILD_REQUIRE(negstream__pool_submit(p, &fork_blockers[i].job,
                                             NULL) == 0, 5);
    }
    tjob_init(&fork_queued, &c, 2, false);
    CHILD_REQUIRE(negstream__pool_submit(p, &fork_queued.job, NULL) == 0, 6);
    /* Fork only once every worker is parked in a job or idle: ASan's
     * allocator (GCC 12) is not fork-safe, and a thread still starting
     * up may hold one of its locks. */
    CHILD_REQUIRE(ctx_wait_ge(&c, &c.running, 2), 7);

    pid = fork();
    CHILD_REQUIRE(pid >= 0, 8);
    if (pid == 0)
        _exit(after_fork_child(p));
    CHILD_REQUIRE(waitpid(pid, &st, 0) == pid, 9);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    /* The parent's pool is untouched: the queued job runs here. */
    ctx_open_gate(&c);
    CHILD_REQUIRE(ctx_wait_ge(&c, &c.done, 3), 10);
    CHILD_REQUIRE(fork_queued.ran == 1, 11);
    submit_then_wait(p, 12);
    negstream_pool_free(p);
    return 0;
}

START_TEST(test_fork_while_job_runs)
{
    int st = in_child(fork_while_running_child, NULL);

    ck_assert_msg(st == 0, "child status %d", st);
}
END_TEST

/* A worker forks from inside its job: in the child it is still a worker
 * of its pool (the one thread there), and the pool works. */
static void fork_in_job(tjob *j)
{
    pid_t pid = fork();
    int st;

    if (pid == 0) {
        static tjob k;
        ctx c;

        if (!negstream__pool_is_worker(j->pool))
            _exit(50);
        if (negstream__pool_threads(j->pool) != 1)
            _exit(51);
        ctx_init(&c);
        tjob_init(&k, &c, 0, false);
        if (negstream__pool_submit(j->pool, &k.job, NULL) != 0)
            _exit(52);
        if (!ctx_wait_ge(&c, &c.done, 1))
            _exit(53);
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        j->result = 99;
    else
        j->result = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int fork_in_job_child(void *arg)
{
    static tjob j;
    negstream_pool *p = negstream_pool_new(1, 2, NULL);
    ctx c;

    (void)arg;
    CHILD_REQUIRE(p != NULL, 2);
    ctx_init(&c);
    tjob_init(&j, &c, 0, false);
    j.hook = fork_in_job;
    j.pool = p;
    CHILD_REQUIRE(negstream__pool_submit(p, &j.job, NULL) == 0, 3);
    CHILD_REQUIRE(ctx_wait_ge(&c, &c.done, 1), 4);
    negstream_pool_free(p);
    return j.result;
}

START_TEST(test_fork_from_worker)
{
    int st = in_child(fork_in_job_child, NULL);

    ck_assert_msg(st == 0, "child status %d", st);
}
END_TEST

/* ---- the suite ---------------------------------------------------------- */

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *t = tcase_create("pool");

    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_new_arguments);
    tcase_add_test(t, test_fifo_one_worker);
    tcase_add_test(t, test_grows_to_max_only);
    tcase_add_test(t, test_idle_shrink);
    tcase_add_test(t, test_cancel);
    tcase_add_test(t, test_submit_cancel_race);
    tcase_add_test(t, test_free_runs_queued_then_joins);
    tcase_add_test(t, test_free_from_worker);
    tcase_add_test(t, test_resume_while_draining);
    tcase_add_loop_test(t, test_blocking_worker, 0, 2);
    tcase_add_test(t, test_worker_identity_signals_name);
    tcase_add_test(t, test_idle_uses_no_cpu);
    tcase_add_loop_test(t, test_default_pool_threads_env, 0, 9);
    tcase_add_test(t, test_fork_while_job_runs);
    tcase_add_test(t, test_fork_from_worker);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pool_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
