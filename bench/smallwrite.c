/*
 * smallwrite.c - 64-byte writes, EncryptAndSign, peer draining: the
 * library's two async patterns beside hand-written baselines doing the
 * same work (gss_wrap of the 64 bytes with confidentiality, then one
 * writev of length prefix + token on a TCP socket over 127.0.0.1), all in
 * the same run:
 *
 *   lib-callback   begin_write chained from its callback, P streams
 *                  (BENCH_SW_STREAMS, default 64) in flight at once;
 *   lib-callback-1 the same on a pool of exactly one worker, the shape of
 *                  the hand-written queue below (the fair comparison: the
 *                  default pool may run up to 4 workers on 2 CPUs);
 *   lib-wait       begin_write, negstream_async_wait, end_write, one at a
 *                  time on one stream;
 *   queue-callback a minimal job queue (mutex, condvar, one worker): the
 *                  job wraps and sends, then its callback submits the next
 *                  one, P streams in flight;
 *   queue-condvar  that queue, submit then wait on a condvar, one at a time;
 *   queue-spin     the same with a short spin (BENCH_SW_SPIN_NS, default
 *                  20 us) before blocking, in the waiter and in the idle
 *                  worker;
 *   inline         no thread at all: the caller wraps and sends itself,
 *                  one at a time (the floor under every one-at-a-time
 *                  figure: what remains is the cost of the hand-off);
 *   aio-suspend    glibc POSIX AIO: wrap on the caller, aio_write,
 *                  aio_suspend, aio_return, one at a time;
 *   aio-sigev      aio_write with SIGEV_THREAD: the notification wraps and
 *                  issues the next write, P streams in flight.
 *
 * Every baseline uses the GSS context of a library stream authenticated
 * like the others (SPNEGO -> Kerberos, EncryptAndSign), never at the same
 * time as the library does.  One thread drains every server socket with
 * epoll, discarding the bytes.  Latency: begin to completion as the
 * issuer sees it (callback entry, or the wait returning).  CPU per op:
 * the process's CPU time over the variant's run (the drain thread's
 * included) divided by its operations: on a machine shared with other
 * work, a variant with more runnable threads gets a larger share of the
 * CPUs, which its ops/s shows and its CPU per op does not.
 */
#include "config.h"

#include <aio.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>
#include <gssapi/gssapi.h>

#include "benchutil.h"
#include "pool.h"
#include "stream.h"

#define MSG_SIZE 64
#define MAX_STREAMS 256

static size_t g_nstreams, g_ops_cb, g_ops_wait, g_ops_aio, g_spin_ns;
static negstream *g_client[MAX_STREAMS], *g_server[MAX_STREAMS];
static int g_cfd[MAX_STREAMS], g_sfd[MAX_STREAMS];
static uint8_t g_msg[MSG_SIZE];

/* ---- latencies and completion ----------------------------------------- */

static double *g_lat;              /* microseconds, by completion order */
static atomic_size_t g_issued, g_completed;
static size_t g_target;
static pthread_mutex_t g_done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_done_cv = PTHREAD_COND_INITIALIZER;
static bool g_done;

static void run_reset(size_t target)
{
    atomic_store(&g_issued, 0);
    atomic_store(&g_completed, 0);
    g_target = target;
    g_done = false;
}

/* Takes an issue ticket: false when target operations were issued. */
static bool take_ticket(void)
{
    return atomic_fetch_add(&g_issued, 1) < g_target;
}

/*
 * The pipelined variants run chains: each completion issues the next
 * operation while tickets last.  When the run's last operation is
 * recorded, other chains' completions may still be running; one that
 * took a ticket after the next run's reset would issue on a stream the
 * next run is also issuing on (two writes pending: NOT_SUPPORTED, or
 * more records than the run has room for).  So a run ends only when
 * every chain has ended.
 */
static atomic_int g_chains;

/* A chain's first ticket: false when none is left. */
static bool chain_start(void)
{
    if (!take_ticket())
        return false;
    atomic_fetch_add(&g_chains, 1);
    return true;
}

/* In a completion: true to issue the chain's next operation; false ends
 * the chain, whose completion must then touch nothing of the run. */
static bool chain_next(void)
{
    if (take_ticket())
        return true;
    atomic_fetch_sub(&g_chains, 1);
    return false;
}

static void wait_chains_ended(void)
{
    while (atomic_load(&g_chains) > 0)
        sched_yield();
}

static void record(uint64_t t_begin)
{
    size_t i = atomic_fetch_add(&g_completed, 1);

    g_lat[i] = (double)(bu_now_ns() - t_begin) / 1e3;
    if (i + 1 == g_target) {
        pthread_mutex_lock(&g_done_mu);
        g_done = true;
        pthread_cond_signal(&g_done_cv);
        pthread_mutex_unlock(&g_done_mu);
    }
}

static void wait_all_done(void)
{
    pthread_mutex_lock(&g_done_mu);
    while (!g_done)
        pthread_cond_wait(&g_done_cv, &g_done_mu);
    pthread_mutex_unlock(&g_done_mu);
}

/* ---- the drain -------------------------------------------------------- */

static int g_epfd, g_stopfd;
static pthread_t g_drain_thread;

static void *drain_main(void *arg)
{
    struct epoll_event ev[64];
    static uint8_t buf[256 * 1024];
    int n, i;

    (void)arg;
    for (;;) {
        n = epoll_wait(g_epfd, ev, 64, -1);
        for (i = 0; i < n; i++) {
            if (ev[i].data.fd == g_stopfd)
                return NULL;
            while (read(ev[i].data.fd, buf, sizeof(buf)) == (ssize_t)
                   sizeof(buf))
                ;
        }
    }
}

static void drain_start(void)
{
    struct epoll_event ev;
    size_t i;

    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    g_stopfd = eventfd(0, EFD_CLOEXEC);
    if (g_epfd < 0 || g_stopfd < 0)
        bu_die("epoll/eventfd: %s", strerror(errno));
    ev.events = EPOLLIN;
    ev.data.fd = g_stopfd;
    epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_stopfd, &ev);
    for (i = 0; i < g_nstreams; i++) {
        ev.data.fd = g_sfd[i];
        if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_sfd[i], &ev) < 0)
            bu_die("epoll_ctl: %s", strerror(errno));
    }
    if (pthread_create(&g_drain_thread, NULL, drain_main, NULL) != 0)
        bu_die("pthread_create failed");
}

static void drain_stop(void)
{
    uint64_t one = 1;

    if (write(g_stopfd, &one, sizeof(one)) != sizeof(one))
        bu_die("eventfd write failed");
    pthread_join(g_drain_thread, NULL);
    close(g_epfd);
    close(g_stopfd);
}

/* ---- the baselines' send: gss_wrap + one writev ------------------------- */

static void wrap_send(int i)
{
    gss_buffer_desc in = { MSG_SIZE, g_msg }, out;
    OM_uint32 maj, min;
    struct iovec iov[2];
    uint8_t hdr[4];

    maj = gss_wrap(&min, g_client[i]->gss.ctx, 1, GSS_C_QOP_DEFAULT, &in,
                   NULL, &out);
    if (maj != GSS_S_COMPLETE)
        bu_die("gss_wrap failed (major 0x%x)", (unsigned)maj);
    hdr[0] = (uint8_t)out.length;
    hdr[1] = (uint8_t)(out.length >> 8);
    hdr[2] = (uint8_t)(out.length >> 16);
    hdr[3] = (uint8_t)(out.length >> 24);
    iov[0].iov_base = hdr;
    iov[0].iov_len = 4;
    iov[1].iov_base = out.value;
    iov[1].iov_len = out.length;
    bu_writev_all(g_cfd[i], iov, 2);
    gss_release_buffer(&min, &out);
}

/* Builds the frame in buf (for AIO, which takes one buffer). */
static size_t wrap_frame(int i, uint8_t *buf, size_t cap)
{
    gss_buffer_desc in = { MSG_SIZE, g_msg }, out;
    OM_uint32 maj, min;
    size_t n;

    maj = gss_wrap(&min, g_client[i]->gss.ctx, 1, GSS_C_QOP_DEFAULT, &in,
                   NULL, &out);
    if (maj != GSS_S_COMPLETE || out.length + 4 > cap)
        bu_die("gss_wrap failed (major 0x%x)", (unsigned)maj);
    buf[0] = (uint8_t)out.length;
    buf[1] = (uint8_t)(out.length >> 8);
    buf[2] = (uint8_t)(out.length >> 16);
    buf[3] = (uint8_t)(out.length >> 24);
    memcpy(buf + 4, out.value, out.length);
    n = out.length + 4;
    gss_release_buffer(&min, &out);
    return n;
}

/* ---- library: callback chain -------------------------------------------- */

typedef struct lstate {
    int      i;
    uint64_t t_begin;
} lstate;

static lstate g_ls[MAX_STREAMS];

static void lib_cb(negstream_async *ar);

static void lib_issue(lstate *st)
{
    negstream_error err;

    st->t_begin = bu_now_ns();
    if (negstream_begin_write(g_client[st->i], g_msg, MSG_SIZE, 0, MSG_SIZE,
                              lib_cb, st, &err) == NULL)
        bu_die("begin_write: %s (%s)", err.message,
               negstream_status_name(err.code));
}

static void lib_cb(negstream_async *ar)
{
    lstate *st = negstream_async_state(ar);
    negstream_error err;

    record(st->t_begin);
    if (negstream_end_write(g_client[st->i], ar, &err) < 0)
        bu_die("end_write: %s", err.message);
    if (chain_next())
        lib_issue(st);
}

static negstream_pool *g_pool1;

/* All client streams on pool p (NULL: the default pool). */
static void set_pools(negstream_pool *p)
{
    negstream_error err;
    size_t i;

    if (p == NULL && (p = negstream__pool_default(&err)) == NULL)
        bu_die("default pool: %s", err.message);
    for (i = 0; i < g_nstreams; i++)
        if (negstream_set_pool(g_client[i], p, &err) < 0)
            bu_die("negstream_set_pool: %s", err.message);
}

static double run_lib_callback(bool one_worker)
{
    double t0, t1, rate;
    size_t i;

    if (one_worker)
        set_pools(g_pool1);
    run_reset(g_ops_cb);
    t0 = bu_now();
    for (i = 0; i < g_nstreams; i++) {
        g_ls[i].i = (int)i;
        if (chain_start())
            lib_issue(&g_ls[i]);
    }
    wait_all_done();
    t1 = bu_now();
    wait_chains_ended();
    rate = (double)g_ops_cb / (t1 - t0);
    if (one_worker)
        set_pools(NULL);    /* every chain has ended its last result */
    return rate;
}

static double run_lib_wait(void)
{
    negstream_async *ar;
    negstream_error err;
    uint64_t tb;
    double t0, t1;
    size_t k;

    run_reset(g_ops_wait);
    t0 = bu_now();
    for (k = 0; k < g_ops_wait; k++) {
        tb = bu_now_ns();
        ar = negstream_begin_write(g_client[0], g_msg, MSG_SIZE, 0, MSG_SIZE,
                                   NULL, NULL, &err);
        if (ar == NULL)
            bu_die("begin_write: %s (%s)", err.message,
               negstream_status_name(err.code));
        negstream_async_wait(ar, -1);
        record(tb);
        if (negstream_end_write(g_client[0], ar, &err) < 0)
            bu_die("end_write: %s", err.message);
    }
    t1 = bu_now();
    return (double)g_ops_wait / (t1 - t0);
}

/* ---- the hand-written job queue ----------------------------------------- */

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

typedef struct qjob {
    struct qjob *next;
    int          i;                 /* stream */
    uint64_t     t_begin;
    bool         callback;          /* else signal the waiter */
    atomic_bool  done;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
} qjob;

typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    qjob           *head, *tail;
    atomic_int      nq;
    int             nsleep;
    bool            stop, spin;
    pthread_t       worker;
} queue;

static queue g_q;

static void q_submit(queue *q, qjob *j)
{
    pthread_mutex_lock(&q->mu);
    j->next = NULL;
    if (q->tail != NULL)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    atomic_fetch_add_explicit(&q->nq, 1, memory_order_relaxed);
    if (q->nsleep > 0)
        pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static void q_job_done(qjob *j);

static void *q_worker(void *arg)
{
    queue *q = arg;
    qjob *j;
    uint64_t t0;
    bool spun = false;

    pthread_mutex_lock(&q->mu);
    for (;;) {
        j = q->head;
        if (j != NULL) {
            q->head = j->next;
            if (q->head == NULL)
                q->tail = NULL;
            atomic_fetch_sub_explicit(&q->nq, 1, memory_order_relaxed);
            pthread_mutex_unlock(&q->mu);
            wrap_send(j->i);
            q_job_done(j);
            pthread_mutex_lock(&q->mu);
            spun = false;
            continue;
        }
        if (q->stop)
            break;
        if (q->spin && !spun) {
            /* Spin once per idle period, then look again (a job or the
             * stop may have come), then sleep. */
            pthread_mutex_unlock(&q->mu);
            t0 = bu_now_ns();
            while (atomic_load_explicit(&q->nq, memory_order_relaxed) == 0
                   && bu_now_ns() - t0 < g_spin_ns)
                cpu_relax();
            pthread_mutex_lock(&q->mu);
            spun = true;
            continue;
        }
        q->nsleep++;
        pthread_cond_wait(&q->cv, &q->mu);
        q->nsleep--;
        spun = false;
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void q_start(queue *q, bool spin)
{
    memset(q, 0, sizeof(*q));
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->spin = spin;
    if (pthread_create(&q->worker, NULL, q_worker, q) != 0)
        bu_die("pthread_create failed");
}

static void q_stop(queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->worker, NULL);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

static qjob g_qj[MAX_STREAMS];

static void q_job_done(qjob *j)
{
    if (j->callback) {
        record(j->t_begin);
        if (chain_next()) {
            j->t_begin = bu_now_ns();
            q_submit(&g_q, j);
        }
        return;
    }
    pthread_mutex_lock(&j->mu);
    atomic_store_explicit(&j->done, true, memory_order_release);
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static double run_queue_callback(void)
{
    double t0, t1;
    size_t i;

    q_start(&g_q, false);
    run_reset(g_ops_cb);
    t0 = bu_now();
    for (i = 0; i < g_nstreams; i++) {
        g_qj[i].i = (int)i;
        g_qj[i].callback = true;
        if (chain_start()) {
            g_qj[i].t_begin = bu_now_ns();
            q_submit(&g_q, &g_qj[i]);
        }
    }
    wait_all_done();
    t1 = bu_now();
    wait_chains_ended();
    q_stop(&g_q);
    return (double)g_ops_cb / (t1 - t0);
}

static double run_queue_wait(bool spin)
{
    qjob *j = &g_qj[0];
    double t0, t1;
    uint64_t ts;
    size_t k;

    q_start(&g_q, spin);
    run_reset(g_ops_wait);
    j->i = 0;
    j->callback = false;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    t0 = bu_now();
    for (k = 0; k < g_ops_wait; k++) {
        j->t_begin = bu_now_ns();
        atomic_store(&j->done, false);
        q_submit(&g_q, j);
        if (spin) {
            ts = bu_now_ns();
            while (!atomic_load_explicit(&j->done, memory_order_acquire)
                   && bu_now_ns() - ts < g_spin_ns)
                cpu_relax();
        }
        if (!atomic_load_explicit(&j->done, memory_order_acquire)) {
            pthread_mutex_lock(&j->mu);
            while (!atomic_load_explicit(&j->done, memory_order_relaxed))
                pthread_cond_wait(&j->cv, &j->mu);
            pthread_mutex_unlock(&j->mu);
        }
        record(j->t_begin);
    }
    t1 = bu_now();
    q_stop(&g_q);
    /* The worker may still be inside q_job_done's unlock: q_stop joined
     * it, so the mutex is free now. */
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    return (double)g_ops_wait / (t1 - t0);
}

/* ---- inline: the work alone ------------------------------------------- */

static double run_inline(void)
{
    double t0, t1;
    uint64_t tb;
    size_t k;

    run_reset(g_ops_wait);
    t0 = bu_now();
    for (k = 0; k < g_ops_wait; k++) {
        tb = bu_now_ns();
        wrap_send(0);
        record(tb);
    }
    t1 = bu_now();
    return (double)g_ops_wait / (t1 - t0);
}

/* ---- glibc POSIX AIO ---------------------------------------------------- */

typedef struct aioop {
    struct aiocb cb;
    uint8_t      frame[256];
    int          i;
    uint64_t     t_begin;
} aioop;

static aioop g_aio[MAX_STREAMS];

static double run_aio_suspend(void)
{
    aioop *a = &g_aio[0];
    const struct aiocb *list[1] = { &a->cb };
    double t0, t1;
    size_t k;
    ssize_t r;

    run_reset(g_ops_aio);
    t0 = bu_now();
    for (k = 0; k < g_ops_aio; k++) {
        a->t_begin = bu_now_ns();
        memset(&a->cb, 0, sizeof(a->cb));
        a->cb.aio_fildes = g_cfd[0];
        a->cb.aio_buf = a->frame;
        a->cb.aio_nbytes = wrap_frame(0, a->frame, sizeof(a->frame));
        a->cb.aio_sigevent.sigev_notify = SIGEV_NONE;
        if (aio_write(&a->cb) < 0)
            bu_die("aio_write: %s", strerror(errno));
        while (aio_error(&a->cb) == EINPROGRESS)
            aio_suspend(list, 1, NULL);
        r = aio_return(&a->cb);
        if (r != (ssize_t)a->cb.aio_nbytes)
            bu_die("aio_write wrote %zd of %zu bytes", r, a->cb.aio_nbytes);
        record(a->t_begin);
    }
    t1 = bu_now();
    return (double)g_ops_aio / (t1 - t0);
}

static void aio_issue(aioop *a);

static void aio_notify(union sigval sv)
{
    aioop *a = sv.sival_ptr;
    ssize_t r = aio_return(&a->cb);

    if (r != (ssize_t)a->cb.aio_nbytes)
        bu_die("aio_write (SIGEV_THREAD) wrote %zd of %zu bytes", r,
               a->cb.aio_nbytes);
    record(a->t_begin);
    if (chain_next())
        aio_issue(a);
}

static void aio_issue(aioop *a)
{
    a->t_begin = bu_now_ns();
    memset(&a->cb, 0, sizeof(a->cb));
    a->cb.aio_fildes = g_cfd[a->i];
    a->cb.aio_buf = a->frame;
    a->cb.aio_nbytes = wrap_frame(a->i, a->frame, sizeof(a->frame));
    a->cb.aio_sigevent.sigev_notify = SIGEV_THREAD;
    a->cb.aio_sigevent.sigev_notify_function = aio_notify;
    a->cb.aio_sigevent.sigev_value.sival_ptr = a;
    if (aio_write(&a->cb) < 0)
        bu_die("aio_write: %s", strerror(errno));
}

static double run_aio_sigev(void)
{
    double t0, t1;
    size_t i;

    run_reset(g_ops_aio);
    t0 = bu_now();
    for (i = 0; i < g_nstreams; i++) {
        g_aio[i].i = (int)i;
        if (chain_start())
            aio_issue(&g_aio[i]);
    }
    wait_all_done();
    t1 = bu_now();
    wait_chains_ended();
    return (double)g_ops_aio / (t1 - t0);
}

/* ---- main --------------------------------------------------------------- */

enum { V_LIB_CB, V_LIB_CB1, V_LIB_WAIT, V_Q_CB, V_Q_COND, V_Q_SPIN, V_AIO_SUSP,
       V_AIO_SIGEV, V_INLINE, NV };

static const char *const vname[NV] = {
    "lib callback-chained begin_write",
    "lib callback-chained, 1-worker pool", "lib wait-on-handle",
    "queue callback (pipelined)", "queue submit+condvar wait",
    "queue submit+spin-then-block", "glibc aio_write+aio_suspend",
    "glibc aio_write SIGEV_THREAD", "inline wrap+send, no thread"
};

static double run_variant(int v, size_t *nops)
{
    switch (v) {
    case V_LIB_CB:    *nops = g_ops_cb; return run_lib_callback(false);
    case V_LIB_CB1:   *nops = g_ops_cb; return run_lib_callback(true);
    case V_LIB_WAIT:  *nops = g_ops_wait; return run_lib_wait();
    case V_Q_CB:      *nops = g_ops_cb; return run_queue_callback();
    case V_Q_COND:    *nops = g_ops_wait; return run_queue_wait(false);
    case V_Q_SPIN:    *nops = g_ops_wait; return run_queue_wait(true);
    case V_AIO_SUSP:  *nops = g_ops_aio; return run_aio_suspend();
    case V_AIO_SIGEV: *nops = g_ops_aio; return run_aio_sigev();
    default:          *nops = g_ops_wait; return run_inline();
    }
}

static void add_ratio(double ops[NV][BU_MAX_RUNS], int runs, int a, int b,
                      double target, const char *text)
{
    double r[BU_MAX_RUNS];
    char name[160];
    int i;

    for (i = 0; i < runs; i++)
        r[i] = ops[a][i] / ops[b][i];
    snprintf(name, sizeof(name), "%s / %s", vname[a], vname[b]);
    bu_report_ratio(name, bu_stats(r, runs), target, text);
}

int main(int argc, char **argv)
{
    static double ops[NV][BU_MAX_RUNS], p50[NV][BU_MAX_RUNS],
                  p99[NV][BU_MAX_RUNS], cpu[NV][BU_MAX_RUNS];
    double cpu0;
    int runs = bu_runs(), r, v;
    unsigned only;
    negstream_error err;
    size_t i, n, maxops;
    char name[128];
    bool tcp;

    bu_report_begin("smallwrite", argc, argv);
    g_nstreams = bu_env_size("BENCH_SW_STREAMS", 64);
    g_ops_cb = bu_env_size("BENCH_SW_OPS", 200000);
    g_ops_wait = bu_env_size("BENCH_SW_WAIT_OPS", 50000);
    g_ops_aio = bu_env_size("BENCH_SW_AIO_OPS", 10000);
    g_spin_ns = bu_env_size("BENCH_SW_SPIN_NS", 20000);
    /* For profiling: a bit mask of the variants to run (default all). */
    only = (unsigned)bu_env_size("BENCH_SW_ONLY", (1u << NV) - 1);
    tcp = bu_env_size("BENCH_SW_TCP", 1) != 0;
    if (g_nstreams < 1 || g_nstreams > MAX_STREAMS)
        bu_die("BENCH_SW_STREAMS must be 1..%d", MAX_STREAMS);
    if (g_ops_cb < 1 || g_ops_wait < 1 || g_ops_aio < 1)
        bu_die("operation counts must be positive");
    maxops = g_ops_cb > g_ops_wait ? g_ops_cb : g_ops_wait;
    maxops = maxops > g_ops_aio ? maxops : g_ops_aio;
    g_lat = malloc(maxops * sizeof(double));
    if (g_lat == NULL)
        bu_die("out of memory");
    memset(g_msg, 'x', sizeof(g_msg));

    /* The library's streams use the default pool, as most users', except
     * in lib-callback-1. */
    g_pool1 = negstream_pool_new(1, 1, &err);
    if (g_pool1 == NULL)
        bu_die("negstream_pool_new: %s", err.message);
    for (i = 0; i < g_nstreams; i++) {
        int fds[2];

        bu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, tcp, fds,
                &g_client[i], &g_server[i]);
        g_cfd[i] = fds[0];
        g_sfd[i] = fds[1];
    }
    drain_start();
    /* Warm up: threads, caches, glibc's AIO threads. */
    g_ops_cb /= 10;
    g_ops_wait /= 10;
    g_ops_aio /= 10;
    for (v = 0; v < NV; v++)
        if (only & (1u << v))
            run_variant(v, &n);
    g_ops_cb *= 10;
    g_ops_wait *= 10;
    g_ops_aio *= 10;

    for (r = 0; r < runs; r++) {
        for (v = 0; v < NV; v++) {
            /* Rotate the order between runs. */
            int vv = (v + r) % NV;

            if (!(only & (1u << vv)))
                continue;
            cpu0 = bu_cpu_seconds();
            ops[vv][r] = run_variant(vv, &n);
            cpu[vv][r] = (bu_cpu_seconds() - cpu0) * 1e6 / (double)n;
            p50[vv][r] = bu_quantile(g_lat, n, 0.50);
            p99[vv][r] = bu_quantile(g_lat, n, 0.99);
            if (!bu_report_json())
                fprintf(stderr, "smallwrite run %d: %-34s %8.0f ops/s  "
                        "p50 %6.1f us  p99 %7.1f us\n", r + 1, vname[vv],
                        ops[vv][r], p50[vv][r], p99[vv][r]);
        }
    }
    drain_stop();

    for (v = 0; v < NV; v++) {
        bu_report_row("ops/s", vname[v], "ops/s", bu_stats(ops[v], runs));
        snprintf(name, sizeof(name), "%s p50", vname[v]);
        bu_report_row("latency", name, "us", bu_stats(p50[v], runs));
        snprintf(name, sizeof(name), "%s p99", vname[v]);
        bu_report_row("latency", name, "us", bu_stats(p99[v], runs));
        snprintf(name, sizeof(name), "%s CPU per op", vname[v]);
        bu_report_row("cpu", name, "us", bu_stats(cpu[v], runs));
    }
    add_ratio(ops, runs, V_LIB_CB1, V_Q_CB, 0.9, "target >= 0.90");
    add_ratio(ops, runs, V_LIB_CB, V_Q_CB, 0.9, "target >= 0.90");
    add_ratio(ops, runs, V_LIB_WAIT, V_Q_SPIN, 0.5, "target >= 0.50");
    add_ratio(ops, runs, V_LIB_WAIT, V_AIO_SUSP, 10, "target >= 10");
    add_ratio(ops, runs, V_LIB_WAIT, V_Q_COND, 0, "");
    add_ratio(ops, runs, V_LIB_CB, V_AIO_SIGEV, 0, "");
    add_ratio(ops, runs, V_LIB_CB, V_Q_SPIN, 0, "");
    add_ratio(ops, runs, V_Q_SPIN, V_Q_COND, 0, "");
    add_ratio(ops, runs, V_LIB_WAIT, V_INLINE, 0, "");
    add_ratio(ops, runs, V_Q_SPIN, V_INLINE, 0, "");
    bu_report_note("64-byte writes, EncryptAndSign (SPNEGO -> Kerberos), "
                   "%s; every variant wraps with confidentiality and sends "
                   "prefix + token in one call; %zu streams in flight for "
                   "the pipelined variants; ops per run: %zu callback, %zu "
                   "wait, %zu aio; baseline spin %zu ns",
                   tcp ? "TCP 127.0.0.1" : "AF_UNIX socketpairs",
                   g_nstreams, g_ops_cb, g_ops_wait, g_ops_aio, g_spin_ns);
    bu_report_print();

    for (i = 0; i < g_nstreams; i++) {
        negstream_close(g_client[i]);
        negstream_close(g_server[i]);
    }
    negstream_pool_free(g_pool1);
    free(g_lat);
    return 0;
}
