/*
 * scale.c - many authenticated streams on one small pool.
 *
 * Each run (in a child process of its own, so that peak RSS is the run's):
 *   1. BENCH_SCALE_STREAMS (default 10000) authenticated streams: half as
 *      many AF_UNIX socketpairs, both ends authenticated (EncryptAndSign,
 *      SPNEGO -> Kerberos), so every stream has its own GSS context.
 *      BENCH_SCALE_AUTH_THREADS (default 2) client threads authenticate
 *      against as many server threads, pair by pair in the same order;
 *   2. a pool of at most 16 threads (negstream_pool_new(1, 16)) for every
 *      stream; 16 extra authenticated streams each begin a 64-byte write
 *      whose callback holds its worker (waits on a semaphore) until
 *      released, so that all 16 workers are busy.  (Before issue 11 the
 *      blockers were 4 MiB writes to peers that did not read, holding
 *      their workers in send; such a write now parks with the poller and
 *      frees its worker, so only a callback can hold one.);
 *   3. one 64-byte begin_write (with a callback that ends it) on every one
 *      of the streams: all of them are then pending in the queue, and the
 *      heap and RSS growth divided by their number is the cost of one
 *      pending operation;
 *   4. the held callbacks are released, the 16 workers come free and run
 *      the queue: time until every callback ran;
 *   5. the pool, now idle with its 16 workers, is watched for 5 s
 *      (BENCH_SCALE_IDLE_S): CPU time of the whole process.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchutil.h"
#include "pool.h"

#define POOL_MAX  16
#define BLOCKERS  16

static size_t g_npairs, g_nauth;
static negstream **g_c, **g_s;

/* The figures of one run, sent from the child to the parent. */
typedef struct result {
    double auth_s, issue_s, complete_s, total_s;
    double heap_per_stream, rss_per_stream;
    double heap_per_op, rss_per_op;
    double peak_rss_mib, idle_cpu_ms;
    double pending_at_release;
} result;

/* ---- authentication ----------------------------------------------------- */

typedef struct authjob {
    int  t;
    bool server;
} authjob;

static void *auth_main(void *p)
{
    authjob *a = p;
    negstream_client_options co;
    negstream_server_options so;
    negstream_error err;
    size_t k;
    int rc;

    negstream_client_options_init(&co);
    co.target_name = getenv("NEGTEST_SPN");
    negstream_server_options_init(&so);
    for (k = (size_t)a->t; k < g_npairs; k += g_nauth) {
        if (a->server)
            rc = negstream_authenticate_as_server(g_s[k], &so, &err);
        else
            rc = negstream_authenticate_as_client(g_c[k], &co, &err);
        if (rc < 0)     /* fatal at once: the peer would wait for its
                         * deadline */
            bu_die("scale: %s %zu: %s", a->server ? "server" : "client", k,
                   err.message);
    }
    return NULL;
}

static void authenticate_all(void)
{
    pthread_t t[64];
    authjob a[64];
    size_t i, n = 2 * g_nauth;

    for (i = 0; i < n; i++) {
        a[i].t = (int)(i / 2);
        a[i].server = i % 2;
        if (pthread_create(&t[i], NULL, auth_main, &a[i]) != 0)
            bu_die("pthread_create failed");
    }
    for (i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

/* ---- completions -------------------------------------------------------- */

static atomic_size_t g_ncomplete;
static size_t g_nwrites;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static bool g_all_done;

static void on_written(negstream_async *ar)
{
    negstream *s = negstream_async_state(ar);
    negstream_error err;

    if (negstream_end_write(s, ar, &err) < 0)
        bu_die("scale: a 64-byte write failed: %s", err.message);
    if (atomic_fetch_add(&g_ncomplete, 1) + 1 == g_nwrites) {
        pthread_mutex_lock(&g_mu);
        g_all_done = true;
        pthread_cond_signal(&g_cv);
        pthread_mutex_unlock(&g_mu);
    }
}

/* The blockers' callbacks: each holds its worker until released. */
static sem_t g_release;
static atomic_int g_held;

static void hold_cb(negstream_async *ar)
{
    negstream *s = negstream_async_state(ar);
    negstream_error err;

    atomic_fetch_add(&g_held, 1);
    while (sem_wait(&g_release) < 0 && errno == EINTR)
        ;
    if (negstream_end_write(s, ar, &err) < 0)
        bu_die("scale: a blocker's write failed: %s", err.message);
}

/* ---- one run ------------------------------------------------------------ */

static void one_run(result *res, unsigned idle_s)
{
    static uint8_t msg[64];
    negstream *bc[BLOCKERS], *bs[BLOCKERS];
    int bfds[BLOCKERS][2];
    negstream_pool *pool;
    negstream_error err;
    negstream *wc, *ws;
    int wfds[2];
    size_t heap0, heap1, heap2, heap3, k, i;
    long rss0, rss1, rss2, rss3;
    double t0, t1, t2, t3, cpu0, cpu1;

    memset(msg, 'm', sizeof(msg));
    sem_init(&g_release, 0, 0);
    g_c = calloc(g_npairs, sizeof(*g_c));
    g_s = calloc(g_npairs, sizeof(*g_s));
    if (g_c == NULL || g_s == NULL)
        bu_die("out of memory");

    /* Warm-up pair: mechanism plugins, ccache, replay cache, first
     * thread stacks are not charged to the streams. */
    bu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false, wfds, &wc, &ws);
    negstream_close(wc);
    negstream_close(ws);

    heap0 = bu_heap_bytes();
    rss0 = bu_rss_kib();
    t0 = bu_now();
    for (k = 0; k < g_npairs; k++) {
        int fds[2];

        /* One fd per stream: the stream works on its own duplicate and
         * never uses the caller's fd (negstream_new(3)), which is closed
         * at once (leave_inner_open), since 10 000 streams with two fds
         * each would not fit under the hard limit of 20 000 here. */
        bu_socket_pair(fds, false);
        g_c[k] = negstream_new(fds[0], true, &err);
        g_s[k] = negstream_new(fds[1], true, &err);
        if (g_c[k] == NULL || g_s[k] == NULL)
            bu_die("negstream_new: %s", err.message);
        close(fds[0]);
        close(fds[1]);
    }
    authenticate_all();
    t1 = bu_now();
    heap1 = bu_heap_bytes();
    rss1 = bu_rss_kib();

    pool = negstream_pool_new(1, POOL_MAX, &err);
    if (pool == NULL)
        bu_die("negstream_pool_new: %s", err.message);
    for (k = 0; k < g_npairs; k++)
        if (negstream_set_pool(g_c[k], pool, &err) < 0
            || negstream_set_pool(g_s[k], pool, &err) < 0)
            bu_die("negstream_set_pool: %s", err.message);
    for (i = 0; i < BLOCKERS; i++) {
        bu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false, bfds[i],
                &bc[i], &bs[i]);
        if (negstream_set_pool(bc[i], pool, &err) < 0)
            bu_die("negstream_set_pool: %s", err.message);
        if (negstream_begin_write(bc[i], msg, sizeof(msg), 0, sizeof(msg),
                                  hold_cb, bc[i], &err) == NULL)
            bu_die("begin_write: %s", err.message);
    }
    /* Until every worker is held in a blocker's callback. */
    while (atomic_load(&g_held) < BLOCKERS)
        usleep(1000);
    usleep(200000);

    heap2 = bu_heap_bytes();
    rss2 = bu_rss_kib();
    g_nwrites = 2 * g_npairs;
    t2 = bu_now();
    for (k = 0; k < g_npairs; k++) {
        if (negstream_begin_write(g_c[k], msg, sizeof(msg), 0, sizeof(msg),
                                  on_written, g_c[k], &err) == NULL
            || negstream_begin_write(g_s[k], msg, sizeof(msg), 0,
                                     sizeof(msg), on_written, g_s[k],
                                     &err) == NULL)
            bu_die("begin_write: %s", err.message);
    }
    t3 = bu_now();
    heap3 = bu_heap_bytes();
    rss3 = bu_rss_kib();
    res->pending_at_release = (double)(g_nwrites
                                       - atomic_load(&g_ncomplete));

    /* Free the workers. */
    for (i = 0; i < BLOCKERS; i++)
        sem_post(&g_release);
    pthread_mutex_lock(&g_mu);
    while (!g_all_done)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    res->complete_s = bu_now() - t2;
    for (i = 0; i < BLOCKERS; i++) {
        negstream_close(bc[i]);
        negstream_close(bs[i]);
    }

    res->auth_s = t1 - t0;
    res->issue_s = t3 - t2;
    res->total_s = res->auth_s + res->complete_s;
    res->heap_per_stream = (double)(heap1 - heap0) / (double)(2 * g_npairs);
    res->rss_per_stream = (double)(rss1 - rss0) * 1024.0
                          / (double)(2 * g_npairs);
    res->heap_per_op = (double)(heap3 - heap2) / (double)g_nwrites;
    res->rss_per_op = (double)(rss3 - rss2) * 1024.0 / (double)g_nwrites;

    /* The idle pool: 16 workers, nothing to do. */
    usleep(100000);
    cpu0 = bu_cpu_seconds();
    sleep(idle_s);
    cpu1 = bu_cpu_seconds();
    res->idle_cpu_ms = (cpu1 - cpu0) * 1e3;
    if (negstream__pool_threads(pool) != POOL_MAX)
        fprintf(stderr, "bench: scale: %u workers alive after idle\n",
                negstream__pool_threads(pool));
    res->peak_rss_mib = (double)bu_peak_rss_kib() / 1024.0;

    for (k = 0; k < g_npairs; k++) {
        negstream_close(g_c[k]);
        negstream_close(g_s[k]);
    }
    negstream_pool_free(pool);
    free(g_s);
    free(g_c);
    sem_destroy(&g_release);
}

int main(int argc, char **argv)
{
    static const char *const names[][2] = {
        { "authenticate all streams", "s" },
        { "issue one begin_write per stream", "s" },
        { "complete all writes (16 workers)", "s" },
        { "total (authenticate + complete)", "s" },
        { "heap per authenticated stream", "bytes" },
        { "RSS per authenticated stream", "bytes" },
        { "heap per pending write", "bytes" },
        { "RSS per pending write", "bytes" },
        { "peak RSS of the run", "MiB" },
        { "idle pool CPU time over the window", "ms" },
        { "writes still pending at release", "ops" },
    };
    enum { NFIG = sizeof(names) / sizeof(names[0]) };
    double fig[NFIG][BU_MAX_RUNS];
    size_t nstreams = bu_env_size("BENCH_SCALE_STREAMS", 10000);
    unsigned idle_s = (unsigned)bu_env_size("BENCH_SCALE_IDLE_S", 5);
    int runs = bu_runs(), r, f, p[2], status;
    struct rlimit rl;
    result res;
    pid_t pid;
    char name[128];

    bu_report_begin("scale", argc, argv);
    g_npairs = nstreams / 2;
    g_nauth = bu_env_size("BENCH_SCALE_AUTH_THREADS", 2);
    if (g_npairs < 1 || g_nauth < 1 || g_nauth > 32)
        bu_die("BENCH_SCALE_STREAMS >= 2, BENCH_SCALE_AUTH_THREADS 1..32");
    /* Two fds per pair, plus the blockers and a margin. */
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * g_npairs + 4 * BLOCKERS + 64)
        bu_die("scale: %zu streams need %zu fds; the limit is %llu (lower "
               "BENCH_SCALE_STREAMS)", 2 * g_npairs,
               2 * g_npairs + 4 * BLOCKERS + 64,
               (unsigned long long)rl.rlim_cur);

    for (r = 0; r < runs; r++) {
        if (pipe(p) < 0)
            bu_die("pipe: %s", strerror(errno));
        fflush(NULL);
        pid = fork();
        if (pid < 0)
            bu_die("fork: %s", strerror(errno));
        if (pid == 0) {
            close(p[0]);
            memset(&res, 0, sizeof(res));
            one_run(&res, idle_s);
            if (write(p[1], &res, sizeof(res)) != (ssize_t)sizeof(res))
                _exit(1);
            _exit(0);
        }
        close(p[1]);
        if (read(p[0], &res, sizeof(res)) != (ssize_t)sizeof(res))
            bu_die("scale run %d failed", r + 1);
        close(p[0]);
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bu_die("scale run %d: child failed", r + 1);
        fig[0][r] = res.auth_s;
        fig[1][r] = res.issue_s;
        fig[2][r] = res.complete_s;
        fig[3][r] = res.total_s;
        fig[4][r] = res.heap_per_stream;
        fig[5][r] = res.rss_per_stream;
        fig[6][r] = res.heap_per_op;
        fig[7][r] = res.rss_per_op;
        fig[8][r] = res.peak_rss_mib;
        fig[9][r] = res.idle_cpu_ms;
        fig[10][r] = res.pending_at_release;
        if (!bu_report_json())
            fprintf(stderr, "scale run %d: auth %.2f s, complete %.3f s, "
                    "%.0f B/stream, %.0f B/pending op, peak %.0f MiB, "
                    "idle CPU %.2f ms\n", r + 1, res.auth_s, res.complete_s,
                    res.heap_per_stream, res.heap_per_op, res.peak_rss_mib,
                    res.idle_cpu_ms);
    }
    for (f = 0; f < NFIG; f++) {
        snprintf(name, sizeof(name), "%s", names[f][0]);
        bu_report_row("scale", name, names[f][1], bu_stats(fig[f], runs));
    }
    bu_report_note("%zu authenticated streams = %zu AF_UNIX socketpairs, "
                   "both ends authenticated (EncryptAndSign, Kerberos via "
                   "SPNEGO), %zu client + %zu server threads; one 64-byte "
                   "begin_write per stream queued behind %d workers held "
                   "in callbacks; pool of at most %d threads; idle window %u s; "
                   "heap = malloc in use (mallinfo2)", 2 * g_npairs,
                   g_npairs, g_nauth, g_nauth, BLOCKERS, POOL_MAX, idle_s);
    bu_report_print();
    return 0;
}
