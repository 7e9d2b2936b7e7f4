/*
 * check_async_stream.c - BeginWrite/EndWrite, BeginRead/EndRead and async
 * authentication on the worker pool, against a real MIT realm: the three
 * usage patterns, exactly-once completion under close, cancel, resets,
 * fork, and a randomised stress run.  Run under tests/kdc/with-realm
 * (tests/async_stream.krb).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "negstream.h"
#include "testutil.h"

/* ---- small helpers ----------------------------------------------------- */

struct flag {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             value;
};

/* ThreadSanitizer cannot start threads in the child of a multi-threaded
 * fork ("not supported": it dies, or reports a duplicate thread id). */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#define FLAG_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }

static void flag_add(struct flag *f, int n)
{
    pthread_mutex_lock(&f->mu);
    f->value += n;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void flag_wait_ge(struct flag *f, int n)
{
    pthread_mutex_lock(&f->mu);
    while (f->value < n)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- callback on a pool thread; completion order seen from inside ------ */

struct cb_probe {
    negstream      *s;
    pthread_t       caller;
    bool            other_thread, completed_inside, fd_readable;
    bool            state_ok;
    int             end_rc;
    negstream_error end_err;
    struct flag     done;
};

static void probe_cb(negstream_async *ar)
{
    struct cb_probe *p = negstream_async_state(ar);
    struct pollfd pfd;

    p->other_thread = !pthread_equal(pthread_self(), p->caller);
    p->completed_inside = negstream_async_is_completed(ar)
                          && negstream_async_wait(ar, 0);
    pfd.fd = negstream_async_fd(ar);
    pfd.events = POLLIN;
    p->fd_readable = pfd.fd >= 0 && poll(&pfd, 1, 0) == 1;
    p->state_ok = !negstream_async_completed_synchronously(ar);
    p->end_rc = negstream_end_write(p->s, ar, &p->end_err);
    flag_add(&p->done, 1);
}

START_TEST(test_callback_runs_on_pool_thread)
{
    struct cb_probe p;
    negstream *c, *s;
    negstream_error e;
    negstream_async *ar;
    char buf[5];

    memset(&p, 0, sizeof(p));
    pthread_mutex_init(&p.done.mu, NULL);
    pthread_cond_init(&p.done.cv, NULL);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    p.s = c;
    p.caller = pthread_self();
    ar = negstream_begin_write(c, "hello", 5, 0, 5, probe_cb, &p, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    flag_wait_ge(&p.done, 1);
    ck_assert(p.other_thread);
    ck_assert(p.completed_inside);
    ck_assert(p.fd_readable);
    ck_assert(p.state_ok);
    ck_assert_msg(p.end_rc == 0, "end_write: %s", p.end_err.message);
    tu_read_all(s, buf, 5);
    ck_assert_mem_eq(buf, "hello", 5);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- wait-on-handle pattern --------------------------------------------- */

START_TEST(test_wait_on_handle)
{
    enum { COUNT = 2000, SIZE = 64 };
    uint8_t msg[SIZE];
    uint64_t h = TU_FNV_INIT;
    negstream *c, *s;
    negstream_error e;
    tu_reader r;
    int i;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    tu_reader_start(&r, s, 4096, (size_t)COUNT * SIZE);
    for (i = 0; i < COUNT; i++) {
        negstream_async *ar;

        tu_fill(msg, SIZE, (uint32_t)i);
        h = tu_fnv(h, msg, SIZE);
        ar = negstream_begin_write(c, msg, SIZE, 0, SIZE, NULL, NULL, &e);
        ck_assert_msg(ar != NULL, "begin_write %d: %s", i, e.message);
        ck_assert(negstream_async_wait(ar, -1));
        ck_assert(negstream_async_is_completed(ar));
        ck_assert_ptr_null(negstream_async_state(ar));
        ck_assert_int_eq(negstream_end_write(c, ar, &e), 0);
    }
    tu_reader_join(&r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.got, (size_t)COUNT * SIZE);
    ck_assert(r.hash == h);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- callback pattern: chained writes of 100 MiB ------------------------ */

struct chain {
    negstream      *s;
    uint8_t        *buf;
    size_t          chunk, left;
    uint32_t        seq;
    uint64_t        hash;
    bool            begin_before_end;
    int             writes;     /* how many the chain issues in all */
    atomic_int      failures;
    negstream_error err;
    struct flag     done;       /* one per callback that has finished */
};

static void chain_next(struct chain *ch);

/*
 * Every callback ends its own write and adds one to done as the very last
 * thing it does with ch; the test waits for all of them, so no callback
 * still runs when ch goes away.  With begin_before_end the next write is
 * begun before this one is ended (once its callback runs, a write is no
 * longer pending), so two callbacks may overlap.
 */
static void chain_cb(negstream_async *ar)
{
    struct chain *ch = negstream_async_state(ar);
    negstream_error e;
    bool more = ch->left > 0;

    if (ch->begin_before_end && more)
        chain_next(ch);
    if (negstream_end_write(ch->s, ar, &e) < 0) {
        if (atomic_fetch_add(&ch->failures, 1) == 0)
            ch->err = e;
        /* The chain stops here: count the writes never issued as done. */
        flag_add(&ch->done, ch->writes);
        return;
    }
    if (!ch->begin_before_end && more)
        chain_next(ch);
    flag_add(&ch->done, 1);
}

/* Refills the buffer (the previous write has completed) and begins the
 * next write, from the callback. */
static void chain_next(struct chain *ch)
{
    size_t n = ch->left < ch->chunk ? ch->left : ch->chunk;
    negstream_error e;

    tu_fill(ch->buf, n, ch->seq++);
    ch->hash = tu_fnv(ch->hash, ch->buf, n);
    ch->left -= n;
    if (negstream_begin_write(ch->s, ch->buf, n, 0, (ssize_t)n, chain_cb, ch,
                              &e) == NULL) {
        if (atomic_fetch_add(&ch->failures, 1) == 0)
            ch->err = e;
        ch->left = 0;
        flag_add(&ch->done, ch->writes);
    }
}

static void run_chain(negstream_protection level, size_t total, size_t chunk,
                      bool begin_before_end)
{
    struct chain ch;
    negstream *c, *s;
    tu_reader r;

    memset(&ch, 0, sizeof(ch));
    pthread_mutex_init(&ch.done.mu, NULL);
    pthread_cond_init(&ch.done.cv, NULL);
    atomic_init(&ch.failures, 0);
    tu_pair(level, &c, &s);
    ch.s = c;
    ch.buf = malloc(chunk);
    ch.chunk = chunk;
    ch.left = total;
    ch.writes = (int)((total + chunk - 1) / chunk);
    ch.hash = TU_FNV_INIT;
    ch.begin_before_end = begin_before_end;
    tu_reader_start(&r, s, 1 << 16, total);
    chain_next(&ch);
    flag_wait_ge(&ch.done, ch.writes);
    if (atomic_load(&ch.failures) > 0)
        negstream_close(c);     /* wakes the reader at once */
    tu_reader_join(&r);
    ck_assert_msg(atomic_load(&ch.failures) == 0, "chain: %s",
                  ch.err.message);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.got, total);
    ck_assert(r.hash == ch.hash);
    free(ch.buf);
    negstream_close(c);
    negstream_close(s);
}

START_TEST(test_callback_chain_100mib)
{
    run_chain(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, 100u << 20, 1u << 20,
              false);
}
END_TEST

START_TEST(test_callback_chain_each_level)
{
    static const negstream_protection lv[] = {
        NEGSTREAM_PROTECTION_NONE, NEGSTREAM_PROTECTION_SIGN,
        NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
    };

    TU_NEEDS_NTLM(lv[_i] == NEGSTREAM_PROTECTION_NONE);
    run_chain(lv[_i], 8u << 20, 100000, false);
    run_chain(lv[_i], 4u << 20, 64513, true);
}
END_TEST

/* ---- wait with a timeout while the peer does not read ------------------- */

START_TEST(test_wait_timeout_then_complete)
{
    const size_t n = 64u << 20;
    uint8_t *big = calloc(1, n);
    negstream *c, *s;
    negstream_error e;
    negstream_async *ar;
    tu_reader r;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ar = negstream_begin_write(c, big, n, 0, (ssize_t)n, NULL, NULL, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert(!negstream_async_wait(ar, 200));
    ck_assert(!negstream_async_is_completed(ar));
    /* A second write while this one is pending: NotSupported, at once. */
    ck_assert_ptr_null(negstream_begin_write(c, big, 1, 0, 1, NULL, NULL,
                                             &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    ck_assert_int_eq(negstream_write(c, big, 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    tu_reader_start(&r, s, 1 << 16, n);
    ck_assert(negstream_async_wait(ar, -1));
    ck_assert_int_eq(negstream_end_write(c, ar, &e), 0);
    tu_reader_join(&r);
    ck_assert_uint_eq(r.got, n);
    free(big);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- wait_any / wait_all over 64 streams; the fd with poll -------------- */

START_TEST(test_wait_any_all_64)
{
    enum { N = 64 };
    negstream *c[N], *s[N];
    negstream_async *rd[N], *wr[N];
    char bufs[N][8];
    negstream_error e;
    bool seen[N];
    int i, order[N];

    for (i = 0; i < N; i++) {
        tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c[i], &s[i]);
        rd[i] = negstream_begin_read(s[i], bufs[i], 8, 0, 8, NULL, NULL, &e);
        ck_assert_ptr_nonnull(rd[i]);
        order[i] = i;
        seen[i] = false;
    }
    ck_assert_int_eq(negstream_async_wait_any(rd, N, 0), -1);
    ck_assert_int_eq(negstream_async_wait_any(rd, N, 50), -1);
    ck_assert(!negstream_async_wait_all(rd, N, 0));
    /* Feed the streams in a shuffled order; wait_any names each. */
    srand(42);
    for (i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = order[i];

        order[i] = order[j];
        order[j] = t;
    }
    for (i = 0; i < N; i++) {
        int k = order[i];
        ssize_t got;

        tu_write_all(c[k], "ping", 4);
        got = negstream_async_wait_any(rd, N, -1);
        ck_assert_int_eq(got, k);
        ck_assert(!seen[k]);
        seen[k] = true;
        ck_assert_int_eq(negstream_end_read(s[k], rd[k], &e), 4);
        ck_assert_mem_eq(bufs[k], "ping", 4);
        /* Replace it with a read that will never complete before close. */
        rd[k] = negstream_begin_read(s[k], bufs[k], 8, 0, 8, NULL, NULL, &e);
        ck_assert_ptr_nonnull(rd[k]);
    }
    for (i = 0; i < N; i++) {
        wr[i] = negstream_begin_write(s[i], "pong", 4, 0, 4, NULL, NULL, &e);
        ck_assert_ptr_nonnull(wr[i]);
    }
    ck_assert(negstream_async_wait_all(wr, N, -1));
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(negstream_end_write(s[i], wr[i], &e), 0);
        tu_read_all(c[i], bufs[i], 4);
        ck_assert_mem_eq(bufs[i], "pong", 4);
    }
    /* Closing the servers completes the pending reads with DISPOSED. */
    for (i = 0; i < N; i++)
        negstream_close(s[i]);
    ck_assert(negstream_async_wait_all(rd, N, -1));
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(negstream_end_read(s[i], rd[i], &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
        negstream_close(c[i]);
    }
}
END_TEST

START_TEST(test_async_fd_poll)
{
    negstream *c, *s;
    negstream_error e;
    negstream_async *ar;
    struct pollfd pfd;
    char buf[8];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ar = negstream_begin_read(s, buf, sizeof(buf), 0, sizeof(buf), NULL,
                              NULL, &e);
    ck_assert_ptr_nonnull(ar);
    pfd.fd = negstream_async_fd(ar);
    pfd.events = POLLIN;
    ck_assert_int_ge(pfd.fd, 0);
    ck_assert_int_eq(negstream_async_fd(ar), pfd.fd);  /* same fd */
    ck_assert_int_eq(poll(&pfd, 1, 50), 0);
    tu_write_all(c, "data", 4);
    ck_assert_int_eq(poll(&pfd, 1, 10000), 1);
    ck_assert(pfd.revents & POLLIN);
    ck_assert(negstream_async_is_completed(ar));
    ck_assert_int_eq(negstream_end_read(s, ar, &e), 4);
    ck_assert_mem_eq(buf, "data", 4);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- synchronous errors of begin_* never invoke the callback ------------ */

static atomic_int never_calls;

static void never_cb(negstream_async *ar)
{
    (void)ar;
    atomic_fetch_add(&never_calls, 1);
}

START_TEST(test_begin_errors_no_callback)
{
    char one[1] = { 'x' }, buf[4];
    negstream *c, *s, *u;
    negstream_error e;
    negstream_async *ar, *rd;
    int fds[2];

    atomic_store(&never_calls, 0);
    tu_tcp_pair(fds);
    u = negstream_new(fds[0], false, &e);
    /* Unauthenticated, after the argument checks. */
    ck_assert_ptr_null(negstream_begin_write(u, one, 1, 0, 1, never_cb, NULL,
                                             &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_ptr_null(negstream_begin_write(u, one, 1, 0, 2, never_cb, NULL,
                                             &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_ptr_null(negstream_begin_read(u, one, 1, 0, 1, never_cb, NULL,
                                            &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    negstream_close(u);
    close(fds[1]);

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert_ptr_null(negstream_begin_write(NULL, one, 1, 0, 1, never_cb,
                                             NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_ptr_null(negstream_begin_write(c, NULL, 1, 0, 1, never_cb,
                                             NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_ptr_null(negstream_begin_write(c, one, 1, -1, 1, never_cb,
                                             NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_ptr_null(negstream_begin_write(c, one, 1, 2, 0, never_cb,
                                             NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_ptr_null(negstream_begin_write(c, one, 1, 0, -1, never_cb,
                                             NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_ptr_null(negstream_begin_write(c, one, 1, 1, 1, never_cb,
                                             NULL, NULL));

    /* A read pending: a second read is NotSupported; a write is fine. */
    rd = negstream_begin_read(c, buf, 4, 0, 4, never_cb, NULL, &e);
    ck_assert_ptr_nonnull(rd);
    ck_assert_ptr_null(negstream_begin_read(c, buf, 4, 0, 4, never_cb, NULL,
                                            &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    ar = negstream_begin_write(c, one, 1, 0, 1, NULL, NULL, &e);
    ck_assert_ptr_nonnull(ar);

    /* End with the wrong kind or the wrong stream: ARGUMENT, not released. */
    ck_assert_int_eq(negstream_end_read(c, ar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(negstream_end_write(s, ar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(negstream_end_authenticate_as_client(c, ar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(negstream_end_write(c, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_end_write(NULL, ar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_end_write(c, ar, &e), 0);

    /* Closed while a read is pending: the read completes DISPOSED (its
     * callback runs once), and until it is ended the stream answers
     * DISPOSED. */
    negstream_close(c);
    ck_assert(negstream_async_wait(rd, -1));
    ck_assert_ptr_null(negstream_begin_write(c, one, 1, 0, 1, never_cb, NULL,
                                             &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(negstream_end_read(c, rd, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    /* The read's callback, the only one: run by a worker, never inside
     * close, so it may come a little after the result completed. */
    {
        int left = 60000;

        while (atomic_load(&never_calls) == 0 && left-- > 0)
            usleep(1000);
    }
    usleep(20 * 1000);
    ck_assert_int_eq(atomic_load(&never_calls), 1);
    negstream_close(s);
}
END_TEST

/* ---- two threads racing begin_write on one stream ----------------------- */

enum { REC = 1024, RECS_PER_THREAD = 300 };

struct racer {
    negstream *s;
    int        id;
    int        ok, refused;
};

/* A record: thread id, sequence number, then bytes derived from both. */
static void make_record(uint8_t *r, int id, int seq)
{
    r[0] = (uint8_t)id;
    r[1] = (uint8_t)(seq >> 8);
    r[2] = (uint8_t)seq;
    tu_fill(r + 3, REC - 3, (uint32_t)(id * 100000 + seq));
}

static void *racer_main(void *p)
{
    struct racer *rc = p;
    uint8_t rec[REC];
    negstream_error e;
    int seq = 0;

    while (seq < RECS_PER_THREAD) {
        negstream_async *ar;

        make_record(rec, rc->id, seq);
        ar = negstream_begin_write(rc->s, rec, REC, 0, REC, NULL, NULL, &e);
        if (ar == NULL) {
            ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
            rc->refused++;
            sched_yield();
            continue;
        }
        ck_assert_int_eq(negstream_end_write(rc->s, ar, &e), 0);
        rc->ok++;
        seq++;
    }
    return NULL;
}

START_TEST(test_concurrent_begin_write)
{
    struct racer a = { NULL, 1, 0, 0 }, b = { NULL, 2, 0, 0 };
    uint8_t rec[REC], want[REC];
    int next[3] = { 0, 0, 0 }, i;
    negstream *c, *s;
    pthread_t ta, tb;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    a.s = b.s = c;
    pthread_create(&ta, NULL, racer_main, &a);
    pthread_create(&tb, NULL, racer_main, &b);
    /* Every record arrives whole and in each thread's order. */
    for (i = 0; i < 2 * RECS_PER_THREAD; i++) {
        int id, seq;

        tu_read_all(s, rec, REC);
        id = rec[0];
        ck_assert(id == 1 || id == 2);
        seq = rec[1] << 8 | rec[2];
        ck_assert_int_eq(seq, next[id]);
        make_record(want, id, seq);
        ck_assert_mem_eq(rec, want, REC);
        next[id]++;
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_int_eq(a.ok + b.ok, 2 * RECS_PER_THREAD);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- close while many writes are pending: every callback exactly once --- */

enum { CLOSE_PAIRS = 100, CLOSE_WRITES_PER_STREAM = 10 };

struct closer_stream {
    negstream      *s;
    atomic_int      begun, called, ended_ok, ended_disposed, ended_other;
    int             issued;
};

static uint8_t close_buf[1 << 20];
static struct flag close_progress = FLAG_INIT;

static void closer_begin(struct closer_stream *cs);

static void closer_cb(negstream_async *ar)
{
    struct closer_stream *cs = negstream_async_state(ar);
    negstream_error e;

    atomic_fetch_add(&cs->called, 1);
    /* Chain the next write before ending this one: this result's reference
     * keeps the stream valid even after the main thread's close, so the
     * begin gets DISPOSED; after the end it might already be freed. */
    closer_begin(cs);
    if (negstream_end_write(cs->s, ar, &e) == 0)
        atomic_fetch_add(&cs->ended_ok, 1);
    else if (e.code == NEGSTREAM_E_DISPOSED)
        atomic_fetch_add(&cs->ended_disposed, 1);
    else
        atomic_fetch_add(&cs->ended_other, 1);
    flag_add(&close_progress, 1);
}

static void closer_begin(struct closer_stream *cs)
{
    negstream_error e;

    if (cs->issued >= CLOSE_WRITES_PER_STREAM)
        return;
    cs->issued++;
    if (negstream_begin_write(cs->s, close_buf, sizeof(close_buf), 0,
                              sizeof(close_buf), closer_cb, cs, &e) != NULL)
        atomic_fetch_add(&cs->begun, 1);
    else
        ck_assert_msg(e.code == NEGSTREAM_E_DISPOSED, "%s", e.message);
}

START_TEST(test_close_with_pending_writes)
{
    static struct closer_stream cs[CLOSE_PAIRS];
    negstream *srv[CLOSE_PAIRS];
    negstream_pool *pool;
    negstream_error e;
    int i, begun = 0, called = 0, ok = 0, disposed = 0, other = 0;

    /* A small pool, so that most writes wait in the queue. */
    pool = negstream_pool_new(1, 4, &e);
    ck_assert_ptr_nonnull(pool);
    for (i = 0; i < CLOSE_PAIRS; i++) {
        memset(&cs[i], 0, sizeof(cs[i]));
        tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &cs[i].s, &srv[i]);
        ck_assert_int_eq(negstream_set_pool(cs[i].s, pool, &e), 0);
    }
    for (i = 0; i < CLOSE_PAIRS; i++)
        closer_begin(&cs[i]);
    /* The servers never read: the socket buffers fill up and the writes
     * block or queue.  Close every client while that is so. */
    for (i = 0; i < CLOSE_PAIRS; i++)
        negstream_close(cs[i].s);
    /* Every begun write completes, once. */
    for (i = 0; i < CLOSE_PAIRS; i++)
        while (atomic_load(&cs[i].called) < atomic_load(&cs[i].begun))
            usleep(1000);
    negstream_pool_free(pool);     /* runs what is queued, joins */
    for (i = 0; i < CLOSE_PAIRS; i++) {
        ck_assert_int_eq(atomic_load(&cs[i].called),
                         atomic_load(&cs[i].begun));
        begun += atomic_load(&cs[i].begun);
        called += atomic_load(&cs[i].called);
        ok += atomic_load(&cs[i].ended_ok);
        disposed += atomic_load(&cs[i].ended_disposed);
        other += atomic_load(&cs[i].ended_other);
        negstream_close(srv[i]);
    }
    ck_assert_int_eq(called, begun);
    ck_assert_int_eq(ok + disposed + other, called);
    ck_assert_int_eq(other, 0);
    ck_assert_int_ge(disposed, CLOSE_PAIRS / 2);
}
END_TEST

/* 1000 operations pending at once (a read and a write on each end of 250
 * pairs), all completed exactly once by closing the streams. */
static atomic_int pending_calls;

static void pending_cb(negstream_async *ar)
{
    (void)ar;
    atomic_fetch_add(&pending_calls, 1);
}

START_TEST(test_close_1000_pending_ops)
{
    enum { PAIRS = 250, OPS = PAIRS * 4 };
    static negstream *st[2 * PAIRS];
    static negstream_async *ars[OPS];
    static uint8_t rbufs[2 * PAIRS][16];
    uint8_t *big = calloc(1, 8u << 20);
    negstream_pool *pool;
    negstream_error e;
    int i, n = 0;

    atomic_store(&pending_calls, 0);
    pool = negstream_pool_new(2, 8, &e);
    ck_assert_ptr_nonnull(pool);
    for (i = 0; i < PAIRS; i++) {
        tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &st[2 * i],
                &st[2 * i + 1]);
        negstream_set_pool(st[2 * i], pool, NULL);
        negstream_set_pool(st[2 * i + 1], pool, NULL);
    }
    for (i = 0; i < 2 * PAIRS; i++) {
        ars[n] = negstream_begin_read(st[i], rbufs[i], 16, 0, 16, pending_cb,
                                      NULL, &e);
        ck_assert_ptr_nonnull(ars[n++]);
        ars[n] = negstream_begin_write(st[i], big, 8u << 20, 0, 8u << 20,
                                       pending_cb, NULL, &e);
        ck_assert_ptr_nonnull(ars[n++]);
    }
    ck_assert_int_eq(n, OPS);
    for (i = 0; i < 2 * PAIRS; i++)
        negstream_close(st[i]);
    ck_assert(negstream_async_wait_all(ars, OPS, -1));
    for (i = 0; i < OPS; i++) {
        negstream *owner = st[i / 2];

        if (i % 2 == 0)
            negstream_end_read(owner, ars[i], &e);
        else
            negstream_end_write(owner, ars[i], &e);
        /* DISPOSED if its own close came first, IO if its peer's close
         * broke the connection first, OK if it finished in time. */
        ck_assert_msg(e.code == NEGSTREAM_E_DISPOSED
                      || e.code == NEGSTREAM_E_IO
                      || e.code == NEGSTREAM_OK, "op %d: %s", i, e.message);
    }
    negstream_pool_free(pool);
    ck_assert_int_eq(atomic_load(&pending_calls), OPS);
    free(big);
}
END_TEST

/* ---- the peer resets the connection mid-write --------------------------- */

START_TEST(test_peer_reset_mid_write)
{
    const size_t n = 32u << 20;
    uint8_t *big = calloc(1, n);
    struct linger lg = { 1, 0 };
    negstream *c, *s;
    negstream_error e;
    negstream_async *ar;
    char b[4];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ar = negstream_begin_write(c, big, n, 0, (ssize_t)n, NULL, NULL, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert(!negstream_async_wait(ar, 100));
    /* RST instead of FIN. */
    setsockopt(tu_fds[1], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    negstream_close(s);
    ck_assert_int_eq(negstream_end_write(c, ar, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_IO, "%s: %s",
                  negstream_status_name(e.code), e.message);
    /* Faulted: reads fail too, naming the first failure. */
    ck_assert_int_eq(negstream_read(c, b, 4, 0, 4, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    negstream_close(c);
    free(big);
}
END_TEST

/* ---- fork, then async writes in the child ------------------------------- */

START_TEST(test_fork_then_async_in_child)
{
    negstream *c, *s;
    negstream_error e;
    negstream_async *ar;
    char buf[6];
    pid_t pid;
    int status;

    /* The parent uses the default pool first, so the child inherits a pool
     * whose threads did not cross fork(). */
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ar = negstream_begin_write(c, "parent", 6, 0, 6, NULL, NULL, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert_int_eq(negstream_end_write(c, ar, &e), 0);
    tu_read_all(s, buf, 6);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        negstream *cc, *cs;
        negstream_async *car;
        char cbuf[5];
        negstream_error ce;

        if (UNDER_TSAN)
            _exit(0);   /* the child's part runs in every other build */
        tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &cc, &cs);
        car = negstream_begin_write(cc, "child", 5, 0, 5, NULL, NULL, &ce);
        if (car == NULL || negstream_end_write(cc, car, &ce) != 0)
            _exit(2);
        tu_read_all(cs, cbuf, 5);
        if (memcmp(cbuf, "child", 5) != 0)
            _exit(3);
        negstream_close(cc);
        negstream_close(cs);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    /* The parent's pool is untouched. */
    ar = negstream_begin_write(c, "again", 5, 0, 5, NULL, NULL, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert_int_eq(negstream_end_write(c, ar, &e), 0);
    tu_read_all(s, buf, 5);
    ck_assert_mem_eq(buf, "again", 5);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- async authentication ---------------------------------------------- */

struct auth_cb {
    struct flag done;
    int         calls;
};

static void auth_done_cb(negstream_async *ar)
{
    struct auth_cb *a = negstream_async_state(ar);

    a->calls++;
    flag_add(&a->done, 1);
}

START_TEST(test_async_authentication)
{
    negstream_client_options co;
    negstream_server_options so;
    struct auth_cb ca = { FLAG_INIT, 0 }, sa = { FLAG_INIT, 0 };
    negstream_async *car, *sar;
    negstream *c, *s;
    negstream_error e;
    int fds[2];
    char buf[3];

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    s = negstream_new(fds[1], false, &e);
    negstream_server_options_init(&so);
    sar = negstream_begin_authenticate_as_server(s, &so, auth_done_cb, &sa,
                                                 &e);
    ck_assert_ptr_nonnull(sar);
    /* A second authentication while one is in progress. */
    ck_assert_ptr_null(negstream_begin_authenticate_as_server(s, &so, NULL,
                                                              NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    negstream_client_options_init(&co);
    {
        /* The options' strings are copied: this buffer dies at once. */
        char target[64];

        strncpy(target, tu_env("NEGTEST_SPN"), sizeof(target) - 1);
        target[sizeof(target) - 1] = '\0';
        co.target_name = target;
        car = negstream_begin_authenticate_as_client(c, &co, auth_done_cb,
                                                     &ca, &e);
        memset(target, 'x', sizeof(target) - 1);
    }
    ck_assert_ptr_nonnull(car);
    ck_assert_int_eq(negstream_end_authenticate_as_server(s, car, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(negstream_end_authenticate_as_client(c, car, &e), 0);
    ck_assert_int_eq(negstream_end_authenticate_as_server(s, sar, &e), 0);
    flag_wait_ge(&ca.done, 1);
    flag_wait_ge(&sa.done, 1);
    ck_assert_int_eq(ca.calls, 1);
    ck_assert_int_eq(sa.calls, 1);
    ck_assert(negstream_is_authenticated(c) && negstream_is_authenticated(s));
    ck_assert_str_eq(negstream_remote_identity(s), tu_env("NEGTEST_USER"));
    tu_write_all(c, "abc", 3);
    tu_read_all(s, buf, 3);
    ck_assert_mem_eq(buf, "abc", 3);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

START_TEST(test_async_authentication_failure)
{
    negstream_client_options co;
    negstream_async *car, *sar;
    negstream *c, *s;
    negstream_error e;
    int fds[2];

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    s = negstream_new(fds[1], false, &e);
    sar = negstream_begin_authenticate_as_server(s, NULL, NULL, NULL, &e);
    ck_assert_ptr_nonnull(sar);
    negstream_client_options_init(&co);
    co.target_name = "host/no-such-host.invalid";
    co.mechanism = "kerberos";
    car = negstream_begin_authenticate_as_client(c, &co, NULL, NULL, &e);
    ck_assert_ptr_nonnull(car);
    ck_assert_int_eq(negstream_end_authenticate_as_client(c, car, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_AUTHENTICATION);
    /* The client sent an error message or nothing; either way the server
     * must not hang once the client side is gone. */
    negstream_close(c);
    ck_assert_int_eq(negstream_end_authenticate_as_server(s, sar, &e), -1);
    ck_assert(e.code != NEGSTREAM_OK);
    negstream_close(s);
}
END_TEST

/* Closing a stream whose server authentication waits for a client. */
START_TEST(test_close_during_async_authentication)
{
    negstream_async *sar;
    negstream *s;
    negstream_error e;
    int fds[2];

    tu_tcp_pair(fds);
    s = negstream_new(fds[1], false, &e);
    sar = negstream_begin_authenticate_as_server(s, NULL, NULL, NULL, &e);
    ck_assert_ptr_nonnull(sar);
    ck_assert(!negstream_async_wait(sar, 50));
    negstream_close(s);
    ck_assert_int_eq(negstream_end_authenticate_as_server(s, sar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    close(fds[0]);
}
END_TEST

/* ---- cancel ------------------------------------------------------------- */

static void cancel_cb(negstream_async *ar)
{
    struct auth_cb *a = negstream_async_state(ar);

    a->calls++;
    flag_add(&a->done, 1);
}

/* Keeps the pool's only worker busy in a callback until released. */
struct hold {
    negstream  *s;
    atomic_int  release, holding;
};

static void hold_cb(negstream_async *ar)
{
    struct hold *h = negstream_async_state(ar);

    negstream_end_write(h->s, ar, NULL);
    atomic_store(&h->holding, 1);
    while (!atomic_load(&h->release))
        usleep(1000);
}

START_TEST(test_cancel_queued_write)
{
    struct auth_cb cb = { FLAG_INIT, 0 };
    struct hold h;
    negstream *c1, *s1, *c2, *s2;
    negstream_async *victim;
    negstream_pool *pool;
    negstream_error e;
    char buf[4];

    pool = negstream_pool_new(1, 1, &e);
    ck_assert_ptr_nonnull(pool);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c1, &s1);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c2, &s2);
    negstream_set_pool(c1, pool, NULL);
    negstream_set_pool(c2, pool, NULL);
    /* The only worker is busy in a callback (a write parked on a full
     * socket would not hold it). */
    memset(&h, 0, sizeof(h));
    h.s = c1;
    ck_assert_ptr_nonnull(negstream_begin_write(c1, "h", 1, 0, 1, hold_cb,
                                                &h, &e));
    while (!atomic_load(&h.holding))
        usleep(1000);
    victim = negstream_begin_write(c2, "nope", 4, 0, 4, cancel_cb, &cb, &e);
    ck_assert_ptr_nonnull(victim);
    ck_assert_int_eq(negstream_async_cancel(victim), 0);
    /* Completed by cancel at once; the callback runs on the worker, once
     * it is free, never inside cancel. */
    ck_assert(negstream_async_is_completed(victim));
    ck_assert_int_eq(cb.calls, 0);
    ck_assert_int_eq(negstream_async_cancel(victim), -1);   /* done */
    atomic_store(&h.release, 1);
    flag_wait_ge(&cb.done, 1);
    ck_assert_int_eq(cb.calls, 1);
    ck_assert_int_eq(negstream_end_write(c2, victim, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_CANCELED);
    ck_assert_int_eq(cb.calls, 1);
    /* Nothing went out, and the stream is usable afterwards. */
    tu_read_all(s1, buf, 1);
    tu_write_all(c2, "yes!", 4);
    tu_read_all(s2, buf, 4);
    ck_assert_mem_eq(buf, "yes!", 4);
    negstream_close(c1);
    negstream_close(s1);
    negstream_close(c2);
    negstream_close(s2);
    negstream_pool_free(pool);
}
END_TEST

/* ---- starvation: a callback on the only worker waits for a queued job --- */

struct starve {
    negstream      *other;
    int             rc;
    negstream_error err;
    struct flag     done;
};

static void starve_cb(negstream_async *ar)
{
    struct starve *st = negstream_async_state(ar);
    negstream_async *inner;

    inner = negstream_begin_write(st->other, "inner", 5, 0, 5, NULL, NULL,
                                  &st->err);
    /* This would wait forever for the only worker, which is us. */
    st->rc = inner == NULL ? -1
                           : negstream_end_write(st->other, inner, &st->err);
    flag_add(&st->done, 1);
}

START_TEST(test_end_on_only_worker_runs_inline)
{
    struct starve st;
    negstream *c1, *s1, *c2, *s2;
    negstream_async *ar;
    negstream_pool *pool;
    negstream_error e;
    char buf[5];

    memset(&st, 0, sizeof(st));
    pthread_mutex_init(&st.done.mu, NULL);
    pthread_cond_init(&st.done.cv, NULL);
    pool = negstream_pool_new(1, 1, &e);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c1, &s1);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c2, &s2);
    negstream_set_pool(c1, pool, NULL);
    negstream_set_pool(c2, pool, NULL);
    st.other = c2;
    ar = negstream_begin_write(c1, "outer", 5, 0, 5, starve_cb, &st, &e);
    ck_assert_ptr_nonnull(ar);
    flag_wait_ge(&st.done, 1);
    ck_assert_msg(st.rc == 0, "%s", st.err.message);
    ck_assert_int_eq(negstream_end_write(c1, ar, &e), 0);
    tu_read_all(s2, buf, 5);
    ck_assert_mem_eq(buf, "inner", 5);
    negstream_close(c1);
    negstream_close(s1);
    negstream_close(c2);
    negstream_close(s2);
    negstream_pool_free(pool);
}
END_TEST

/* ---- close from inside a callback --------------------------------------- */

static void close_in_cb(negstream_async *ar)
{
    struct chain *ch = negstream_async_state(ar);
    negstream_error e;

    negstream_end_write(ch->s, ar, &e);
    negstream_close(ch->s);
    flag_add(&ch->done, 1);
}

START_TEST(test_close_from_callback)
{
    struct chain ch;
    negstream *c, *s;
    negstream_error e;
    char buf[8];

    memset(&ch, 0, sizeof(ch));
    pthread_mutex_init(&ch.done.mu, NULL);
    pthread_cond_init(&ch.done.cv, NULL);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ch.s = c;
    ck_assert_ptr_nonnull(negstream_begin_write(c, "last", 4, 0, 4,
                                                close_in_cb, &ch, &e));
    flag_wait_ge(&ch.done, 1);
    tu_read_all(s, buf, 4);
    ck_assert_mem_eq(buf, "last", 4);
    ck_assert_int_eq(negstream_read(s, buf, 8, 0, 8, &e), 0);   /* EOF */
    negstream_close(s);
}
END_TEST

/* ---- random begin/end/close from 8 threads over 200 streams ------------- */

enum { ST_PAIRS = 100, ST_THREADS = 8 };

struct slot {
    pthread_mutex_t  mu;
    negstream       *s;
    negstream_async *w, *r;
    uint8_t          rbuf[4096];
};

static struct slot slots[2 * ST_PAIRS];
static uint8_t stress_data[256 * 1024];
static atomic_long st_begun, st_called, st_ended;
static double st_deadline;

static void stress_cb(negstream_async *ar)
{
    (void)ar;
    atomic_fetch_add(&st_called, 1);
}

static void end_slot_ops(struct slot *sl)
{
    negstream_error e;

    if (sl->w != NULL) {
        negstream_end_write(sl->s, sl->w, &e);
        sl->w = NULL;
        atomic_fetch_add(&st_ended, 1);
    }
    if (sl->r != NULL) {
        negstream_end_read(sl->s, sl->r, &e);
        sl->r = NULL;
        atomic_fetch_add(&st_ended, 1);
    }
}

/* Closes both ends of pair p (both slot locks held), ends what they had
 * pending, and puts a fresh authenticated pair in their place. */
static void renew_pair(int p)
{
    struct slot *a = &slots[2 * p], *b = &slots[2 * p + 1];

    negstream_close(a->s);
    negstream_close(b->s);
    end_slot_ops(a);
    end_slot_ops(b);
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &a->s, &b->s);
}

static void *stress_main(void *p)
{
    unsigned seed = (unsigned)(uintptr_t)p * 7919u + 1;

    while (now_s() < st_deadline) {
        int i = rand_r(&seed) % (2 * ST_PAIRS), act = rand_r(&seed) % 100;
        struct slot *sl = &slots[i];
        negstream_error e;

        if (act < 2) {
            /* Close and renew the whole pair: lock both, lower first. */
            int pr = i / 2;

            if (pthread_mutex_trylock(&slots[2 * pr].mu) != 0)
                continue;
            if (pthread_mutex_trylock(&slots[2 * pr + 1].mu) != 0) {
                pthread_mutex_unlock(&slots[2 * pr].mu);
                continue;
            }
            renew_pair(pr);
            pthread_mutex_unlock(&slots[2 * pr + 1].mu);
            pthread_mutex_unlock(&slots[2 * pr].mu);
            continue;
        }
        if (pthread_mutex_trylock(&sl->mu) != 0)
            continue;
        if (act < 35 && sl->w == NULL) {
            size_t n = (size_t)rand_r(&seed) % sizeof(stress_data);

            sl->w = negstream_begin_write(sl->s, stress_data,
                                          sizeof(stress_data), 0,
                                          (ssize_t)n, stress_cb, NULL, &e);
            if (sl->w != NULL)
                atomic_fetch_add(&st_begun, 1);
        } else if (act < 70 && sl->r == NULL) {
            sl->r = negstream_begin_read(sl->s, sl->rbuf, sizeof(sl->rbuf),
                                         0, sizeof(sl->rbuf), stress_cb,
                                         NULL, &e);
            if (sl->r != NULL)
                atomic_fetch_add(&st_begun, 1);
        } else if (act < 80 && sl->w != NULL) {
            if (negstream_async_cancel(sl->w) == 0
                || negstream_async_wait(sl->w, 5)) {
                negstream_end_write(sl->s, sl->w, &e);
                sl->w = NULL;
                atomic_fetch_add(&st_ended, 1);
            }
        } else if (sl->r != NULL) {
            if (negstream_async_wait(sl->r, act % 3 == 0 ? 0 : 5)) {
                negstream_end_read(sl->s, sl->r, &e);
                sl->r = NULL;
                atomic_fetch_add(&st_ended, 1);
            }
        }
        pthread_mutex_unlock(&sl->mu);
    }
    return NULL;
}

START_TEST(test_stress_random_begin_end_close)
{
    const char *secs = getenv("NEGTEST_STRESS_SECONDS");
    pthread_t th[ST_THREADS];
    int i;

    atomic_store(&st_begun, 0);
    atomic_store(&st_called, 0);
    atomic_store(&st_ended, 0);
    for (i = 0; i < 2 * ST_PAIRS; i++) {
        pthread_mutex_init(&slots[i].mu, NULL);
        slots[i].w = slots[i].r = NULL;
    }
    for (i = 0; i < ST_PAIRS; i++)
        tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &slots[2 * i].s,
                &slots[2 * i + 1].s);
    st_deadline = now_s() + (secs != NULL ? atof(secs) : 20.0);
    for (i = 0; i < ST_THREADS; i++)
        pthread_create(&th[i], NULL, stress_main, (void *)(uintptr_t)i);
    for (i = 0; i < ST_THREADS; i++)
        pthread_join(th[i], NULL);
    /* Close everything; every begun operation completes and is ended. */
    for (i = 0; i < 2 * ST_PAIRS; i++)
        negstream_close(slots[i].s);
    for (i = 0; i < 2 * ST_PAIRS; i++)
        end_slot_ops(&slots[i]);
    ck_assert_int_gt(atomic_load(&st_begun), 100);
    ck_assert_int_eq(atomic_load(&st_ended), atomic_load(&st_begun));
    /* Every callback exactly once.  A result is ended as soon as it is
     * completed; the callbacks of those that close completed run on a
     * worker, possibly after that: wait for them (60 s at most). */
    for (i = 0; i < 60000 &&
                atomic_load(&st_called) < atomic_load(&st_begun); i++)
        usleep(1000);
    usleep(100 * 1000);     /* a second call would show up by now */
    ck_assert_int_eq(atomic_load(&st_called), atomic_load(&st_begun));
}
END_TEST

static Suite *async_suite(void)
{
    Suite *s = suite_create("async_stream");
    TCase *t = tcase_create("async");
    TCase *heavy = tcase_create("heavy");

    tcase_set_timeout(t, 300);
    tcase_set_timeout(heavy, 900);
    tcase_add_test(t, test_callback_runs_on_pool_thread);
    tcase_add_test(t, test_wait_on_handle);
    tcase_add_loop_test(t, test_callback_chain_each_level, 0, 3);
    tcase_add_test(t, test_wait_timeout_then_complete);
    tcase_add_test(t, test_async_fd_poll);
    tcase_add_test(t, test_begin_errors_no_callback);
    tcase_add_test(t, test_concurrent_begin_write);
    tcase_add_test(t, test_peer_reset_mid_write);
    tcase_add_test(t, test_fork_then_async_in_child);
    tcase_add_test(t, test_async_authentication);
    tcase_add_test(t, test_async_authentication_failure);
    tcase_add_test(t, test_close_during_async_authentication);
    tcase_add_test(t, test_cancel_queued_write);
    tcase_add_test(t, test_end_on_only_worker_runs_inline);
    tcase_add_test(t, test_close_from_callback);
    tcase_add_test(heavy, test_callback_chain_100mib);
    tcase_add_test(heavy, test_wait_any_all_64);
    tcase_add_test(heavy, test_close_with_pending_writes);
    tcase_add_test(heavy, test_close_1000_pending_ops);
    tcase_add_test(heavy, test_stress_random_begin_end_close);
    suite_add_tcase(s, t);
    suite_add_tcase(s, heavy);
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
