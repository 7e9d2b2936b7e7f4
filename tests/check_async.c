/*
 * check_async.c - negstream_async through its internal API with a fake
 * owner: completion order as seen from the callback, exactly-once
 * completion under races (complete vs complete, cancel vs complete), the
 * waits (timed, polled, any, all), the fd, the reference count (ending
 * inside the callback, after it, and from another thread while it runs)
 * and NULL arguments.
 *
 * No KDC, no GSSAPI.  Run it under ASan and valgrind too: most of the
 * reference-count tests fail there, not here, if the count is wrong.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "negstream.h"
#include "async.h"
#include "error.h"
#include "pool.h"

#define DEADLINE_MS 20000   /* "never happened": a failure, not a bound */

static int owner;           /* the fake owner's identity */
static int other_owner;

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* The callback runs after the completed flag is set: a thread that saw
 * the flag (or ended the result) waits for the callback with this. */
static bool calls_become(atomic_int *calls, int n)
{
    int waited;

    for (waited = 0; waited < DEADLINE_MS; waited++) {
        if (atomic_load(calls) == n)
            return true;
        sleep_ms(1);
    }
    return atomic_load(calls) == n;
}

static bool fd_readable(int fd)
{
    struct pollfd pfd = { fd, POLLIN, 0 };

    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

static negstream_async *new_ar(negstream_callback cb, void *state,
                               size_t extra)
{
    negstream_error e;
    negstream_async *ar;

    ar = negstream__async_new(NEGSTREAM__OP_WRITE, &owner, cb, state, extra,
                              &e);
    ck_assert_msg(ar != NULL, "async_new: %s", e.message);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    return ar;
}

static bool complete_ok(negstream_async *ar, ssize_t result, bool sync)
{
    negstream_error ok;

    negstream__err_ok(&ok);
    return negstream__async_complete(ar, &ok, result, sync);
}

/* A thread that completes ar after a short delay. */
typedef struct later {
    negstream_async *ar;
    int              delay_ms;
    ssize_t          result;
    pthread_t        t;
} later;

static void *later_main(void *arg)
{
    later *l = arg;

    sleep_ms(l->delay_ms);
    complete_ok(l->ar, l->result, false);
    return NULL;
}

static void later_start(later *l, negstream_async *ar, int delay_ms,
                        ssize_t result)
{
    l->ar = ar;
    l->delay_ms = delay_ms;
    l->result = result;
    ck_assert_int_eq(pthread_create(&l->t, NULL, later_main, l), 0);
}

/* ---- basics ------------------------------------------------------------- */

START_TEST(test_accessors_and_end)
{
    negstream_error e;
    negstream_async *ar;
    unsigned char *x;
    size_t i;
    int st;

    ar = new_ar(NULL, &st, 100);
    ck_assert(!negstream_async_is_completed(ar));
    ck_assert(!negstream_async_completed_synchronously(ar));
    ck_assert_ptr_eq(negstream_async_state(ar), &st);
    ck_assert(negstream__async_matches(ar, NEGSTREAM__OP_WRITE, &owner));
    ck_assert(!negstream__async_matches(ar, NEGSTREAM__OP_READ, &owner));
    ck_assert(!negstream__async_matches(ar, NEGSTREAM__OP_WRITE,
                                        &other_owner));
    /* The owner's area: zeroed, aligned for anything, writable. */
    x = negstream__async_extra(ar);
    ck_assert_ptr_nonnull(x);
    ck_assert_uint_eq((uintptr_t)x % _Alignof(long double), 0);
    ck_assert_uint_eq((uintptr_t)x % _Alignof(long long), 0);
    for (i = 0; i < 100; i++)
        ck_assert_uint_eq(x[i], 0);
    memset(x, 0xa5, 100);
    ck_assert(!negstream_async_wait(ar, 0));
    ck_assert_int_eq(negstream_async_cancel(ar), -1);   /* no hook */

    ck_assert(complete_ok(ar, 42, true));
    ck_assert(negstream_async_is_completed(ar));
    ck_assert(negstream_async_completed_synchronously(ar));
    ck_assert(negstream_async_wait(ar, 0));
    ck_assert(negstream_async_wait(ar, -1));
    ck_assert_int_eq(negstream_async_cancel(ar), -1);   /* complete */
    ck_assert_int_eq(negstream__async_end(ar, &e), 42);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);

    /* Asynchronous completion; an err of NULL; no extra area. */
    ar = new_ar(NULL, NULL, 0);
    ck_assert_ptr_null(negstream_async_state(ar));
    ck_assert(complete_ok(ar, 0, false));
    ck_assert(negstream_async_is_completed(ar));
    ck_assert(!negstream_async_completed_synchronously(ar));
    ck_assert_int_eq(negstream__async_end(ar, NULL), 0);
}
END_TEST

START_TEST(test_end_returns_stored_error)
{
    negstream_error why, e;
    negstream_async *ar;

    ar = new_ar(NULL, NULL, 0);
    negstream__err_sys(&why, NEGSTREAM_E_IO, ECONNRESET, "sending a frame");
    ck_assert(negstream__async_complete(ar, &why, -1, false));
    /* Later completions lose and change nothing. */
    ck_assert(!complete_ok(ar, 7, true));
    ck_assert(!negstream_async_completed_synchronously(ar));
    memset(&e, 0x5a, sizeof(e));
    ck_assert_int_eq(negstream__async_end(ar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, ECONNRESET);
    ck_assert_str_eq(e.message, why.message);

    /* A NULL outcome means success. */
    ar = new_ar(NULL, NULL, 0);
    ck_assert(negstream__async_complete(ar, NULL, 5, false));
    ck_assert_int_eq(negstream__async_end(ar, &e), 5);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
}
END_TEST

START_TEST(test_null_arguments)
{
    negstream_error e;
    negstream_async *none[3] = { NULL, NULL, NULL };

    ck_assert(!negstream_async_is_completed(NULL));
    ck_assert(!negstream_async_completed_synchronously(NULL));
    ck_assert_ptr_null(negstream_async_state(NULL));
    ck_assert(!negstream_async_wait(NULL, 0));
    ck_assert(!negstream_async_wait(NULL, -1));
    errno = 0;
    ck_assert_int_eq(negstream_async_fd(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(negstream_async_wait_any(NULL, 3, -1), -1);
    ck_assert_int_eq(negstream_async_wait_any(none, 0, -1), -1);
    ck_assert_int_eq(negstream_async_wait_any(none, 3, 0), -1);
    ck_assert_int_eq(negstream_async_wait_any(none, 3, 10), -1);
    ck_assert(!negstream_async_wait_all(NULL, 3, -1));
    ck_assert(!negstream_async_wait_all(none, 3, -1));
    ck_assert(negstream_async_wait_all(NULL, 0, -1));
    ck_assert_int_eq(negstream_async_cancel(NULL), -1);
    ck_assert_ptr_null(negstream__async_extra(NULL));
    negstream__async_set_cancel(NULL, NULL);
    ck_assert(!negstream__async_matches(NULL, NEGSTREAM__OP_WRITE, &owner));
    ck_assert(!negstream__async_complete(NULL, NULL, 0, false));
    ck_assert_int_eq(negstream__async_end(NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
}
END_TEST

/* ---- the callback ------------------------------------------------------- */

/* What the callback saw. */
typedef struct seen {
    int     calls;
    bool    completed, wait0, fd_early_readable, fd_late_readable;
    bool    sync;
    int     fd_early;
    ssize_t end_result;
    negstream_status end_code;
    bool    end_in_cb;
    double  end_ms;
} seen;

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void observing_cb(negstream_async *ar)
{
    seen *s = negstream_async_state(ar);
    negstream_error e;
    double t0;

    s->calls++;
    s->completed = negstream_async_is_completed(ar);
    s->wait0 = negstream_async_wait(ar, 0);
    s->sync = negstream_async_completed_synchronously(ar);
    if (s->fd_early >= 0)
        s->fd_early_readable = fd_readable(s->fd_early);
    s->fd_late_readable = fd_readable(negstream_async_fd(ar));
    if (s->end_in_cb) {
        t0 = now_ms();
        s->end_result = negstream__async_end(ar, &e);
        s->end_ms = now_ms() - t0;
        s->end_code = e.code;
    }
}

START_TEST(test_callback_sees_completed_state)
{
    negstream_error why;
    negstream_async *ar;
    later l;
    seen s;

    /* Completed from another thread; fd asked for before completion;
     * the callback ends the result. */
    memset(&s, 0, sizeof(s));
    s.end_in_cb = true;
    ar = new_ar(observing_cb, &s, 0);
    s.fd_early = negstream_async_fd(ar);
    ck_assert_int_ge(s.fd_early, 0);
    ck_assert(!fd_readable(s.fd_early));
    later_start(&l, ar, 0, 99);
    pthread_join(l.t, NULL);
    /* ar is gone now (ended in the callback, completer's ref dropped). */
    ck_assert_int_eq(s.calls, 1);
    ck_assert(s.completed);
    ck_assert(s.wait0);
    ck_assert(s.fd_early_readable);
    ck_assert(s.fd_late_readable);
    ck_assert(!s.sync);
    ck_assert_int_eq(s.end_result, 99);
    ck_assert_int_eq(s.end_code, NEGSTREAM_OK);
    /* "Does not block": a generous bound against a wait that only a
     * timeout would end. */
    ck_assert_msg(s.end_ms < 1000.0, "end inside the callback took %.0f ms",
                  s.end_ms);

    /* Synchronous failure; no early fd; the caller ends it afterwards. */
    memset(&s, 0, sizeof(s));
    s.fd_early = -1;
    ar = new_ar(observing_cb, &s, 0);
    negstream__err_set(&why, NEGSTREAM_E_DISPOSED, "stream closed");
    ck_assert(negstream__async_complete(ar, &why, -1, true));
    ck_assert_int_eq(s.calls, 1);
    ck_assert(s.completed && s.wait0 && s.sync && s.fd_late_readable);
    ck_assert_int_eq(negstream__async_end(ar, &why), -1);
    ck_assert_int_eq(why.code, NEGSTREAM_E_DISPOSED);
}
END_TEST

/* The callback parks until another thread has ended the result, then
 * still uses it: the completer's reference must keep it alive. */
typedef struct parked {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    bool            in_cb, ended;
    void           *state_after;
    ssize_t         end_result;
} parked;

static void parking_cb(negstream_async *ar)
{
    parked *pk = negstream_async_state(ar);

    pthread_mutex_lock(&pk->mu);
    pk->in_cb = true;
    pthread_cond_broadcast(&pk->cv);
    while (!pk->ended)
        pthread_cond_wait(&pk->cv, &pk->mu);
    pthread_mutex_unlock(&pk->mu);
    pk->state_after = negstream_async_state(ar);     /* still valid */
    (void)negstream_async_fd(ar);
}

static void *ender_main(void *arg)
{
    negstream_async *ar = arg;
    parked *pk = negstream_async_state(ar);
    ssize_t n;

    n = negstream__async_end(ar, NULL);     /* completes before the cb */
    pthread_mutex_lock(&pk->mu);
    pk->end_result = n;
    pk->ended = true;
    pthread_cond_broadcast(&pk->cv);
    pthread_mutex_unlock(&pk->mu);
    return NULL;
}

START_TEST(test_end_from_other_thread_during_callback)
{
    negstream_async *ar;
    pthread_t ender;
    parked pk;
    later l;

    memset(&pk, 0, sizeof(pk));
    pthread_mutex_init(&pk.mu, NULL);
    pthread_cond_init(&pk.cv, NULL);
    ar = new_ar(parking_cb, &pk, 32);
    ck_assert_int_eq(pthread_create(&ender, NULL, ender_main, ar), 0);
    later_start(&l, ar, 5, 17);
    pthread_join(l.t, NULL);          /* the callback has returned */
    pthread_join(ender, NULL);
    ck_assert(pk.in_cb);
    ck_assert_int_eq(pk.end_result, 17);
    ck_assert_ptr_eq(pk.state_after, &pk);
    pthread_cond_destroy(&pk.cv);
    pthread_mutex_destroy(&pk.mu);
}
END_TEST

/* ---- exactly once ------------------------------------------------------- */

typedef struct racer {
    negstream_async   *ar;
    pthread_barrier_t *go;
    ssize_t            value;
    bool               won;
} racer;

static void counting_cb(negstream_async *ar)
{
    atomic_int *calls = negstream_async_state(ar);

    atomic_fetch_add(calls, 1);
}

static void *racer_main(void *arg)
{
    racer *r = arg;
    negstream_error e;

    negstream__err_set(&e, r->value % 2 ? NEGSTREAM_E_CANCELED
                                        : NEGSTREAM_OK, "racer %zd",
                       r->value);
    if (e.code == NEGSTREAM_OK)
        negstream__err_ok(&e);
    pthread_barrier_wait(r->go);
    r->won = negstream__async_complete(r->ar, &e, r->value, false);
    return NULL;
}

START_TEST(test_complete_exactly_once_under_race)
{
    enum { T = 8, ROUNDS = 300 };
    pthread_barrier_t go;
    pthread_t th[T];
    racer r[T];
    atomic_int calls;
    negstream_async *ar;
    negstream_error e;
    int round, i, wins, winner;
    ssize_t n;

    pthread_barrier_init(&go, NULL, T);
    for (round = 0; round < ROUNDS; round++) {
        atomic_init(&calls, 0);
        ar = new_ar(counting_cb, &calls, 0);
        for (i = 0; i < T; i++) {
            r[i] = (racer){ ar, &go, i, false };
            ck_assert_int_eq(pthread_create(&th[i], NULL, racer_main, &r[i]),
                             0);
        }
        wins = 0;
        winner = -1;
        for (i = 0; i < T; i++) {
            pthread_join(th[i], NULL);
            if (r[i].won) {
                wins++;
                winner = i;
            }
        }
        ck_assert_int_eq(wins, 1);
        ck_assert_int_eq(atomic_load(&calls), 1);
        /* The stored outcome is the winner's. */
        n = negstream__async_end(ar, &e);
        if (winner % 2) {
            ck_assert_int_eq(n, -1);
            ck_assert_int_eq(e.code, NEGSTREAM_E_CANCELED);
        } else {
            ck_assert_int_eq(n, winner);
            ck_assert_int_eq(e.code, NEGSTREAM_OK);
        }
    }
    pthread_barrier_destroy(&go);
}
END_TEST

/* A fake owner on a real pool: the job completes the result with success,
 * the cancel hook takes the job back and completes it with CANCELED. */
typedef struct fake_op {
    negstream__job   job;       /* first */
    negstream_pool  *pool;
    negstream_async *ar;
    atomic_int       ran;
} fake_op;

static void fake_job(negstream__job *job)
{
    fake_op *o = (fake_op *)job;

    atomic_fetch_add(&o->ran, 1);
    complete_ok(o->ar, 1, false);
}

static int fake_cancel(negstream_async *ar)
{
    fake_op *o = negstream__async_extra(ar);
    negstream_error e;

    if (!negstream__pool_cancel(o->pool, &o->job))
        return -1;
    negstream__err_set(&e, NEGSTREAM_E_CANCELED, "cancelled");
    negstream__async_complete(ar, &e, -1, false);
    return 0;
}

static negstream_async *fake_begin(negstream_pool *p, atomic_int *calls)
{
    negstream_async *ar = new_ar(counting_cb, calls, sizeof(fake_op));
    fake_op *o = negstream__async_extra(ar);

    o->job.run = fake_job;
    o->pool = p;
    o->ar = ar;
    atomic_init(&o->ran, 0);
    negstream__async_set_cancel(ar, fake_cancel);
    ck_assert_int_eq(negstream__pool_submit(p, &o->job, NULL), 0);
    return ar;
}

typedef struct blocker {
    negstream__job  job;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    bool            running, release;
} blocker;

static void blocker_run(negstream__job *job)
{
    blocker *b = (blocker *)job;

    pthread_mutex_lock(&b->mu);
    b->running = true;
    pthread_cond_broadcast(&b->cv);
    while (!b->release)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

START_TEST(test_cancel_queued_and_taken)
{
    negstream_error e;
    negstream_pool *p;
    negstream_async *ar;
    atomic_int calls;
    blocker b;
    fake_op *o;

    p = negstream_pool_new(1, 1, &e);
    ck_assert_ptr_nonnull(p);
    memset(&b, 0, sizeof(b));
    b.job.run = blocker_run;
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    ck_assert_int_eq(negstream__pool_submit(p, &b.job, NULL), 0);
    pthread_mutex_lock(&b.mu);
    while (!b.running)
        pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);

    /* Queued behind the blocker: cancel wins, the job never runs. */
    atomic_init(&calls, 0);
    ar = fake_begin(p, &calls);
    o = negstream__async_extra(ar);
    ck_assert_int_eq(negstream_async_cancel(ar), 0);
    ck_assert(negstream_async_is_completed(ar));
    ck_assert_int_eq(atomic_load(&calls), 1);
    ck_assert_int_eq(negstream_async_cancel(ar), -1);
    pthread_mutex_lock(&b.mu);
    b.release = true;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);
    ck_assert_int_eq(atomic_load(&o->ran), 0);
    ck_assert_int_eq(negstream__async_end(ar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_CANCELED);

    /* Already run: too late. */
    atomic_init(&calls, 0);
    ar = fake_begin(p, &calls);
    ck_assert(negstream_async_wait(ar, DEADLINE_MS));
    ck_assert_int_eq(negstream_async_cancel(ar), -1);
    ck_assert_int_eq(negstream__async_end(ar, &e), 1);
    ck_assert(calls_become(&calls, 1));

    negstream_pool_free(p);
    pthread_cond_destroy(&b.cv);
    pthread_mutex_destroy(&b.mu);
}
END_TEST

START_TEST(test_cancel_races_complete)
{
    enum { ROUNDS = 2000 };
    negstream_error e;
    negstream_pool *p;
    negstream_async *ar;
    atomic_int calls;
    int round, cancelled = 0, rc;
    ssize_t n;

    p = negstream_pool_new(1, 2, &e);
    ck_assert_ptr_nonnull(p);
    for (round = 0; round < ROUNDS; round++) {
        atomic_init(&calls, 0);
        ar = fake_begin(p, &calls);
        if (round % 3)
            sched_yield();
        rc = negstream_async_cancel(ar);
        n = negstream__async_end(ar, &e);
        /* end may return before the worker's callback has run: 'calls'
         * must not be reused until it has, exactly once. */
        ck_assert(calls_become(&calls, 1));
        if (rc == 0) {
            cancelled++;
            ck_assert_int_eq(n, -1);
            ck_assert_int_eq(e.code, NEGSTREAM_E_CANCELED);
        } else {
            ck_assert_int_eq(n, 1);
            ck_assert_int_eq(e.code, NEGSTREAM_OK);
        }
    }
    negstream_pool_free(p);
    /* Both sides of the race happen (not asserted: it is scheduling). */
    fprintf(stderr, "cancel won %d of %d races\n", cancelled, ROUNDS);
}
END_TEST

/* ---- waiting ------------------------------------------------------------ */

START_TEST(test_wait_timeout_then_complete)
{
    negstream_async *ar;
    later l;

    ar = new_ar(NULL, NULL, 0);
    ck_assert(!negstream_async_wait(ar, 0));
    ck_assert(!negstream_async_wait(ar, 20));
    ck_assert(!negstream_async_wait(ar, -5));   /* expired: a poll */
    complete_ok(ar, 3, false);
    ck_assert(negstream_async_wait(ar, 20));
    ck_assert(negstream_async_wait(ar, 0));
    ck_assert_int_eq(negstream__async_end(ar, NULL), 3);

    /* A timed and an endless wait woken by a completion elsewhere. */
    ar = new_ar(NULL, NULL, 0);
    later_start(&l, ar, 20, 4);
    ck_assert(negstream_async_wait(ar, DEADLINE_MS));
    pthread_join(l.t, NULL);
    ck_assert_int_eq(negstream__async_end(ar, NULL), 4);

    ar = new_ar(NULL, NULL, 0);
    later_start(&l, ar, 20, 5);
    ck_assert(negstream_async_wait(ar, -1));
    pthread_join(l.t, NULL);
    ck_assert_int_eq(negstream__async_end(ar, NULL), 5);

    /* end blocks until completion. */
    ar = new_ar(NULL, NULL, 0);
    later_start(&l, ar, 20, 6);
    ck_assert_int_eq(negstream__async_end(ar, NULL), 6);
    pthread_join(l.t, NULL);
}
END_TEST

static void *waiter_main(void *arg)
{
    return negstream_async_wait(arg, -1) ? arg : NULL;
}

START_TEST(test_many_waiters_all_woken)
{
    enum { T = 8 };
    negstream_async *ar;
    pthread_t th[T];
    void *rv;
    int i;

    ar = new_ar(NULL, NULL, 0);
    for (i = 0; i < T; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, waiter_main, ar), 0);
    sleep_ms(10);       /* let some of them block (not required) */
    complete_ok(ar, 1, false);
    for (i = 0; i < T; i++) {
        pthread_join(th[i], &rv);
        ck_assert_ptr_eq(rv, ar);
    }
    ck_assert_int_eq(negstream__async_end(ar, NULL), 1);
}
END_TEST

/* Completes ars[order[i]] one by one from another thread. */
typedef struct shuffler {
    negstream_async **ars;
    int              *order;
    int               n;
} shuffler;

static void *shuffler_main(void *arg)
{
    shuffler *s = arg;
    int i;

    for (i = 0; i < s->n; i++) {
        if (i % 4 == 0)
            sleep_ms(1);
        complete_ok(s->ars[s->order[i]], s->order[i], false);
    }
    return NULL;
}

START_TEST(test_wait_any_random_order)
{
    enum { N = 64 };
    negstream_async *ars[N], *live[N];
    int ids[N], order[N], got[N];
    shuffler sh = { ars, order, N };
    unsigned seed = 12345u + (unsigned)_i;
    pthread_t t;
    ssize_t idx;
    int i, j, m, tmp;

    for (i = 0; i < N; i++) {
        ars[i] = new_ar(NULL, NULL, 0);
        live[i] = ars[i];
        ids[i] = i;
        order[i] = i;
        got[i] = 0;
    }
    for (i = N - 1; i > 0; i--) {
        j = (int)(rand_r(&seed) % (unsigned)(i + 1));
        tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    /* Nothing complete: a timed wait_any times out. */
    ck_assert_int_eq(negstream_async_wait_any(live, N, 0), -1);
    ck_assert_int_eq(negstream_async_wait_any(live, N, 10), -1);

    ck_assert_int_eq(pthread_create(&t, NULL, shuffler_main, &sh), 0);
    for (m = N; m > 0; m--) {
        idx = negstream_async_wait_any(live, (size_t)m,
                                       m % 2 ? -1 : DEADLINE_MS);
        ck_assert_int_ge(idx, 0);
        ck_assert_int_lt(idx, m);
        ck_assert(negstream_async_is_completed(live[idx]));
        ck_assert_int_eq(negstream__async_end(live[idx], NULL), ids[idx]);
        got[ids[idx]]++;
        live[idx] = live[m - 1];
        ids[idx] = ids[m - 1];
    }
    pthread_join(t, NULL);
    for (i = 0; i < N; i++)
        ck_assert_int_eq(got[i], 1);
}
END_TEST

START_TEST(test_wait_any_small_and_nulls)
{
    negstream_async *ars[3];
    later l;

    ars[0] = new_ar(NULL, NULL, 0);
    ars[1] = NULL;                      /* never completes */
    ars[2] = new_ar(NULL, NULL, 0);
    ck_assert_int_eq(negstream_async_wait_any(ars, 3, 10), -1);
    later_start(&l, ars[2], 10, 2);
    ck_assert_int_eq(negstream_async_wait_any(ars, 3, -1), 2);
    pthread_join(l.t, NULL);
    /* Two complete: the lowest index. */
    complete_ok(ars[0], 0, false);
    ck_assert_int_eq(negstream_async_wait_any(ars, 3, -1), 0);
    ck_assert_int_eq(negstream_async_wait_any(ars + 1, 2, -1), 1);
    /* Only NULLs: nothing can complete, so even an endless wait returns
     * -1 at once instead of hanging. */
    ck_assert_int_eq(negstream_async_wait_any(ars + 1, 1, -1), -1);
    /* The same result twice in the array. */
    {
        negstream_async *dup[2];

        dup[0] = dup[1] = new_ar(NULL, NULL, 0);
        later_start(&l, dup[0], 10, 9);
        ck_assert_int_eq(negstream_async_wait_any(dup, 2, -1), 0);
        pthread_join(l.t, NULL);
        ck_assert_int_eq(negstream__async_end(dup[0], NULL), 9);
    }
    ck_assert_int_eq(negstream__async_end(ars[0], NULL), 0);
    ck_assert_int_eq(negstream__async_end(ars[2], NULL), 2);
}
END_TEST

/* Completes one result after a barrier and a varying delay, so that the
 * completion lands anywhere in wait_any's registration loop. */
typedef struct racing_completer {
    negstream_async   *ar;
    pthread_barrier_t *go;
    unsigned           spins;
    pthread_t          t;
} racing_completer;

static void *racing_completer_main(void *arg)
{
    racing_completer *rc = arg;
    volatile unsigned i;

    pthread_barrier_wait(rc->go);
    for (i = 0; i < rc->spins; i++)
        ;
    complete_ok(rc->ar, 1, false);
    return NULL;
}

/* Completion racing registration: wait_any must never miss a wake-up.
 * The wait is endless, so a miss hangs (and fails) instead of only
 * taking longer. */
START_TEST(test_wait_any_registration_race)
{
    enum { ROUNDS = 3000, N = 64 };
    negstream_async *ars[N];
    pthread_barrier_t go;
    racing_completer rc;
    unsigned seed = 7;
    int round, i, target;

    pthread_barrier_init(&go, NULL, 2);
    for (round = 0; round < ROUNDS; round++) {
        for (i = 0; i < N; i++)
            ars[i] = new_ar(NULL, NULL, 0);
        target = N / 2 + round % (N / 2);
        rc.ar = ars[target];
        rc.go = &go;
        rc.spins = rand_r(&seed) % 4000;
        ck_assert_int_eq(pthread_create(&rc.t, NULL, racing_completer_main,
                                        &rc), 0);
        pthread_barrier_wait(&go);
        ck_assert_int_eq(negstream_async_wait_any(ars, N, -1), target);
        pthread_join(rc.t, NULL);
        for (i = 0; i < N; i++) {
            if (i != target)
                complete_ok(ars[i], 1, false);
            ck_assert_int_eq(negstream__async_end(ars[i], NULL), 1);
        }
    }
    pthread_barrier_destroy(&go);
}
END_TEST

START_TEST(test_wait_all)
{
    enum { N = 10 };
    negstream_async *ars[N];
    later l;
    int i;

    for (i = 0; i < N; i++)
        ars[i] = new_ar(NULL, NULL, 0);
    ck_assert(!negstream_async_wait_all(ars, N, 0));
    ck_assert(!negstream_async_wait_all(ars, N, 20));
    for (i = 0; i < N - 1; i++)
        complete_ok(ars[i], i, false);
    ck_assert(!negstream_async_wait_all(ars, N, 0));
    ck_assert(!negstream_async_wait_all(ars, N, 20));
    ck_assert(negstream_async_wait_all(ars, N - 1, 0));
    later_start(&l, ars[N - 1], 20, N - 1);
    ck_assert(negstream_async_wait_all(ars, N, DEADLINE_MS));
    pthread_join(l.t, NULL);
    ck_assert(negstream_async_wait_all(ars, N, 0));
    ck_assert(negstream_async_wait_all(ars, N, -1));
    for (i = 0; i < N; i++)
        ck_assert_int_eq(negstream__async_end(ars[i], NULL), i);

    for (i = 0; i < 2; i++)
        ars[i] = new_ar(NULL, NULL, 0);
    later_start(&l, ars[1], 10, 1);
    complete_ok(ars[0], 0, false);
    ck_assert(negstream_async_wait_all(ars, 2, -1));
    pthread_join(l.t, NULL);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(negstream__async_end(ars[i], NULL), i);
}
END_TEST

/* ---- the fd ------------------------------------------------------------- */

static void *poller_main(void *arg)
{
    struct pollfd pfd = { *(int *)arg, POLLIN, 0 };

    return poll(&pfd, 1, DEADLINE_MS) == 1 ? arg : NULL;
}

START_TEST(test_fd)
{
    negstream_async *ar;
    pthread_t t;
    void *rv;
    int fd, fl;

    /* Asked for before completion: not readable, then readable; a
     * blocked poll() is woken. */
    ar = new_ar(NULL, NULL, 0);
    fd = negstream_async_fd(ar);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(negstream_async_fd(ar), fd);       /* one per ar */
    fl = fcntl(fd, F_GETFD);
    ck_assert(fl >= 0 && (fl & FD_CLOEXEC));
    ck_assert(!fd_readable(fd));
    ck_assert_int_eq(pthread_create(&t, NULL, poller_main, &fd), 0);
    sleep_ms(10);       /* let it block (not required) */
    complete_ok(ar, 1, false);
    pthread_join(t, &rv);
    ck_assert_ptr_eq(rv, &fd);
    ck_assert(fd_readable(fd));
    ck_assert(fd_readable(fd));     /* stays readable */
    ck_assert_int_eq(negstream__async_end(ar, NULL), 1);
    /* Closed with the result. */
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);

    /* Asked for after completion: readable at once. */
    ar = new_ar(NULL, NULL, 0);
    complete_ok(ar, 2, true);
    fd = negstream_async_fd(ar);
    ck_assert_int_ge(fd, 0);
    ck_assert(fd_readable(fd));
    ck_assert_int_eq(negstream__async_end(ar, NULL), 2);
}
END_TEST

/* With no descriptor left (EMFILE), negstream_async_fd returns -1 with
 * errno set: the examples and pages check for it, because poll() ignores
 * a negative fd and would wait for ever.  The result itself still works
 * (wait, end), and a later call makes the fd once one is free. */
START_TEST(test_fd_exhausted)
{
    struct rlimit old, low;
    negstream_async *ar;
    int fds[512], n = 0, fd, i;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    if (low.rlim_cur == RLIM_INFINITY || low.rlim_cur > 256)
        low.rlim_cur = 256;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    ar = new_ar(NULL, NULL, 0);
    while (n < 512 && (fd = dup(0)) >= 0)
        fds[n++] = fd;
    ck_assert_msg(n < 512 && errno == EMFILE, "could not exhaust the fds");
    errno = 0;
    ck_assert_int_eq(negstream_async_fd(ar), -1);
    ck_assert(errno == EMFILE || errno == ENFILE);
    complete_ok(ar, 3, false);
    ck_assert(negstream_async_wait(ar, 0));
    close(fds[--n]);
    close(fds[--n]);                /* an eventfd, or a pipe's two ends */
    fd = negstream_async_fd(ar);
    ck_assert_int_ge(fd, 0);
    ck_assert(fd_readable(fd));
    ck_assert_int_eq(negstream__async_end(ar, NULL), 3);
    for (i = 0; i < n; i++)
        close(fds[i]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
}
END_TEST

/* ---- reference counting under churn ------------------------------------- */

/* Ends the result inside its own callback about half the time; the rest
 * are ended by the test thread, racing the callback. */
static void maybe_end_cb(negstream_async *ar)
{
    intptr_t v = (intptr_t)negstream_async_state(ar);

    if (v % 2)
        negstream__async_end(ar, NULL);
}

START_TEST(test_refcount_churn)
{
    enum { ROUNDS = 3000 };
    negstream_async *ar;
    later l;
    intptr_t i;

    for (i = 0; i < ROUNDS; i++) {
        ar = new_ar(maybe_end_cb, (void *)i, (size_t)(i % 64));
        if (i % 3 == 0)
            (void)negstream_async_fd(ar);
        later_start(&l, ar, 0, 1);
        if (i % 2 == 0)
            ck_assert_int_eq(negstream__async_end(ar, NULL), 1);
        pthread_join(l.t, NULL);
    }
}
END_TEST

/* ---- the suite ---------------------------------------------------------- */

static Suite *async_suite(void)
{
    Suite *s = suite_create("async");
    TCase *t = tcase_create("async");

    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_accessors_and_end);
    tcase_add_test(t, test_end_returns_stored_error);
    tcase_add_test(t, test_null_arguments);
    tcase_add_test(t, test_callback_sees_completed_state);
    tcase_add_test(t, test_end_from_other_thread_during_callback);
    tcase_add_test(t, test_complete_exactly_once_under_race);
    tcase_add_test(t, test_cancel_queued_and_taken);
    tcase_add_test(t, test_cancel_races_complete);
    tcase_add_test(t, test_wait_timeout_then_complete);
    tcase_add_test(t, test_many_waiters_all_woken);
    tcase_add_loop_test(t, test_wait_any_random_order, 0, 3);
    tcase_add_test(t, test_wait_any_small_and_nulls);
    tcase_add_test(t, test_wait_any_registration_race);
    tcase_add_test(t, test_wait_all);
    tcase_add_test(t, test_fd);
    tcase_add_test(t, test_fd_exhausted);
    tcase_add_test(t, test_refcount_churn);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(async_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
