/*
 * parked.c - 10 000 authenticated streams, each with a negstream_begin_read
 * pending on a silent peer, on the default pool (issue 11's first figure).
 *
 * Each run, in a child process of its own (fresh default pool, per-run
 * peak RSS):
 *   1. BENCH_PARKED_STREAMS (default 10000) TCP connections on 127.0.0.1
 *      from a peers' process, authenticated asynchronously on both sides
 *      (EncryptAndSign, SPNEGO -> Kerberos; the server's on the default
 *      pool), the peers connecting BENCH_PARKED_BATCH (500) at a time;
 *      then the peers close their client streams, leaving the sockets
 *      open: the server streams' peers never speak;
 *   2. one 64-byte negstream_begin_read on every server stream, with a
 *      callback; the heap (mallinfo2) and RSS before the first begin_read
 *      and once every read is parked with the poller, divided by the
 *      number of reads, are the cost of a pending read; the process's
 *      threads (/proc/self/status) against the pool's workers;
 *   3. the process's CPU time over BENCH_PARKED_IDLE_S (2) idle seconds;
 *   4. BENCH_PARKED_WRITES (1000) 64-byte begin_writes on random server
 *      streams, one at a time: latency from begin_write to the callback
 *      having ended the write (the issue: p99 under 5 ms); then as many at
 *      once on distinct random streams (latency of each, begin to end).
 *      The one-at-a-time writes are also measured before the reads are
 *      posted, on the same streams: what the loaded machine gives a write
 *      without 10 000 parked reads (a same-run control);
 *   5. every server stream closed: time until each pending read's callback
 *      has run (DISPOSED).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchutil.h"
#include "poller.h"
#include "pool.h"

#define MSG 64

static size_t g_n;
static negstream **g_srv;
static atomic_size_t g_reads_ended;
static atomic_size_t g_reads_wrong;

/* The figures of one run, sent from the child to the parent. */
typedef struct result {
    double setup_s, pairs_per_s;
    double heap_per_stream, heap_per_read, rss_per_read;
    double park_s;
    double threads, workers, extra_threads, max_threads_seen;
    double idle_cpu_ms;
    double ctl_p50, ctl_p99;
    double seq_p50, seq_p99, seq_max;
    double burst_p50, burst_p99, burst_all;
    double close_s;
    double peak_rss_mib;
} result;

/* ---- callbacks ---------------------------------------------------------- */

typedef struct rd {
    negstream *s;
    uint8_t    buf[MSG];
} rd;

static void read_cb(negstream_async *ar)
{
    rd *r = negstream_async_state(ar);
    negstream_error err;

    /* Only close ends these reads: the peers never speak. */
    if (negstream_end_read(r->s, ar, &err) >= 0
        || err.code != NEGSTREAM_E_DISPOSED)
        atomic_fetch_add(&g_reads_wrong, 1);
    atomic_fetch_add(&g_reads_ended, 1);
}

typedef struct wr {
    negstream *s;
    uint64_t   t_begin;
    double     lat_ms;
    sem_t     *done;          /* posted after the end, if not NULL */
    atomic_size_t *left;      /* else counted down, and the last one */
    sem_t     *all_done;      /* posts this */
} wr;

static uint8_t g_msg[MSG];

static void write_cb(negstream_async *ar)
{
    wr *w = negstream_async_state(ar);
    negstream_error err;

    if (negstream_end_write(w->s, ar, &err) < 0)
        bu_die("parked: a 64-byte write failed: %s", err.message);
    w->lat_ms = (double)(bu_now_ns() - w->t_begin) / 1e6;
    if (w->done != NULL)
        sem_post(w->done);
    else if (atomic_fetch_sub(w->left, 1) == 1)
        sem_post(w->all_done);
}

static void begin_write(wr *w)
{
    negstream_error err;

    w->t_begin = bu_now_ns();
    if (negstream_begin_write(w->s, g_msg, MSG, 0, MSG, write_cb, w,
                              &err) == NULL)
        bu_die("parked: begin_write: %s", err.message);
}

/* n writes one at a time on random streams; latencies (ms) into lat. */
static void seq_writes(wr *w, size_t n, double *lat, sem_t *done)
{
    size_t i;

    for (i = 0; i < n; i++) {
        w[i].s = g_srv[(size_t)rand() % g_n];
        w[i].done = done;
        begin_write(&w[i]);
        while (sem_wait(done) < 0 && errno == EINTR)
            ;
    }
    for (i = 0; i < n; i++)
        lat[i] = w[i].lat_ms;
}

static void track_threads(result *res)
{
    int t = bu_process_threads();

    if (t > res->max_threads_seen)
        res->max_threads_seen = t;
}

/* ---- the peers: another process ---------------------------------------- */

/*
 * The silent peers live in a process of their own, so that the server's
 * process holds only its streams (one fd each: see accept_all) and its
 * threads, heap and fds are the server's alone.  The peer connects n times
 * to 127.0.0.1:port, batch connections at a time, authenticates each as a
 * client (asynchronously, on its own default pool), closes the client
 * streams (leave_inner_open: the sockets stay open and say nothing more),
 * and waits until end_fd reaches end of file.
 */
static atomic_size_t g_peer_left;
static atomic_int g_peer_failed;

static void peer_cb(negstream_async *ar)
{
    negstream *s = negstream_async_state(ar);
    negstream_error err;

    if (negstream_end_authenticate_as_client(s, ar, &err) < 0) {
        fprintf(stderr, "bench: parked: peer authentication: %s\n",
                err.message);
        atomic_fetch_add(&g_peer_failed, 1);
    }
    atomic_fetch_sub(&g_peer_left, 1);
}

static void peer_main(int port, size_t batch, int go_fd, int end_fd)
{
    struct sockaddr_in a;
    negstream_client_options co;
    negstream_error err;
    negstream **cs;
    int *fds, one = 1;
    size_t first, i, m;
    char c;

    bu_need_fds(g_n + batch + 256, "parked (the peers' process)");
    cs = calloc(batch, sizeof(*cs));
    fds = calloc(g_n, sizeof(*fds));
    if (cs == NULL || fds == NULL)
        bu_die("out of memory");
    negstream_client_options_init(&co);
    co.target_name = getenv("NEGTEST_SPN");
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (read(go_fd, &c, 1) != 1)
        _exit(1);
    for (first = 0; first < g_n; first += batch) {
        m = g_n - first < batch ? g_n - first : batch;
        atomic_store(&g_peer_left, m);
        for (i = 0; i < m; i++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

            if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
                bu_die("parked: peer connect: %s", strerror(errno));
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            fds[first + i] = fd;
            cs[i] = negstream_new(fd, true, &err);
            if (cs[i] == NULL
                || negstream_begin_authenticate_as_client(cs[i], &co,
                                                          peer_cb, cs[i],
                                                          &err) == NULL)
                bu_die("parked: peer: %s", err.message);
        }
        while (atomic_load(&g_peer_left) > 0)
            usleep(1000);
        if (atomic_load(&g_peer_failed) > 0)
            bu_die("parked: peer authentications failed");
        for (i = 0; i < m; i++)
            negstream_close(cs[i]);     /* the socket stays open */
    }
    /* Silent until the server's process is done. */
    while (read(end_fd, &c, 1) > 0)
        ;
    for (i = 0; i < g_n; i++)
        close(fds[i]);
    free(fds);
    free(cs);
    _exit(0);
}

/* ---- the server's side -------------------------------------------------- */

typedef struct srv_auth {
    negstream      *s;
    int             rc;
    negstream_error err;
} srv_auth;

static atomic_size_t g_auth_left;

static void server_auth_cb(negstream_async *ar)
{
    srv_auth *a = negstream_async_state(ar);

    a->rc = negstream_end_authenticate_as_server(a->s, ar, &a->err);
    atomic_fetch_sub(&g_auth_left, 1);
}

/*
 * Accepts g_n connections and authenticates each as a server,
 * asynchronously.  The hard fd limit here is 20 000 and cannot be raised
 * (no CAP_SYS_RESOURCE), so a stream is made with leave_inner_open and
 * the accepted fd is closed at once: the stream works on its own
 * duplicate and never uses the caller's fd (negstream_new(3)), so each
 * server stream costs one fd.
 */
static void accept_all(int lst)
{
    negstream_server_options so;
    negstream_error err;
    srv_auth *a;
    size_t k;
    int fd, one = 1;

    a = calloc(g_n, sizeof(*a));
    if (a == NULL)
        bu_die("out of memory");
    negstream_server_options_init(&so);
    atomic_store(&g_auth_left, g_n);
    for (k = 0; k < g_n; k++) {
        fd = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            bu_die("parked: accept: %s", strerror(errno));
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        g_srv[k] = negstream_new(fd, true, &err);
        if (g_srv[k] == NULL)
            bu_die("negstream_new: %s", err.message);
        close(fd);
        a[k].s = g_srv[k];
        if (negstream_begin_authenticate_as_server(g_srv[k], &so,
                                                   server_auth_cb, &a[k],
                                                   &err) == NULL)
            bu_die("parked: begin_authenticate_as_server: %s", err.message);
    }
    while (atomic_load(&g_auth_left) > 0)
        usleep(1000);
    for (k = 0; k < g_n; k++)
        if (a[k].rc < 0)
            bu_die("parked: server authentication %zu: %s", k,
                   a[k].err.message);
    free(a);
}

/* Listens on 127.0.0.1, an ephemeral port; returns the fd, *port. */
static int listen_loopback(int *port)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lst < 0 || bind(lst, (struct sockaddr *)&a, sizeof(a)) < 0
        || listen(lst, 4096) < 0
        || getsockname(lst, (struct sockaddr *)&a, &alen) < 0)
        bu_die("listen on 127.0.0.1: %s", strerror(errno));
    *port = ntohs(a.sin_port);
    return lst;
}

/* ---- one run ------------------------------------------------------------ */

static void one_run(result *res, size_t nwrites, size_t batch,
                    unsigned idle_s, unsigned seed)
{
    rd *reads;
    wr *w;
    double *lat;
    size_t *perm, heap0, heap1, heap2, heap3, k, i;
    long rss2, rss3;
    negstream_pool *pool;
    negstream__poller *poller;
    negstream_error err;
    negstream *wc, *ws;
    int wfds[2], go[2], end[2], lst, port, status;
    double t0, t1, t2, t3, cpu0;
    sem_t done;
    atomic_size_t left;
    pid_t peer;

    memset(g_msg, 'w', sizeof(g_msg));
    g_srv = calloc(g_n, sizeof(*g_srv));
    reads = calloc(g_n, sizeof(*reads));
    perm = calloc(g_n, sizeof(*perm));
    w = calloc(nwrites, sizeof(*w));
    lat = calloc(nwrites, sizeof(*lat));
    if (g_srv == NULL || reads == NULL || perm == NULL || w == NULL
        || lat == NULL)
        bu_die("out of memory");
    sem_init(&done, 0, 0);

    /* The peers' process first, before this one uses the library. */
    lst = listen_loopback(&port);
    if (pipe(go) < 0 || pipe(end) < 0)
        bu_die("pipe: %s", strerror(errno));
    fflush(NULL);
    peer = fork();
    if (peer < 0)
        bu_die("fork: %s", strerror(errno));
    if (peer == 0) {
        close(lst);
        close(go[1]);
        close(end[1]);
        peer_main(port, batch, go[0], end[0]);
    }
    close(go[0]);
    close(end[0]);

    pool = negstream__pool_default(&err);
    if (pool == NULL)
        bu_die("default pool: %s", err.message);
    /* Warm-up pair: mechanism plugins, keytab, replay cache. */
    bu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false, wfds, &wc, &ws);
    negstream_close(wc);
    negstream_close(ws);

    heap0 = bu_heap_bytes();
    t0 = bu_now();
    if (write(go[1], "g", 1) != 1)
        bu_die("parked: cannot start the peers");
    accept_all(lst);
    t1 = bu_now();
    close(lst);
    res->setup_s = t1 - t0;
    res->pairs_per_s = (double)g_n / (t1 - t0);
    heap1 = bu_heap_bytes();
    res->heap_per_stream = ((double)heap1 - (double)heap0) / (double)g_n;

    poller = negstream__pool_poller(pool, &err);
    if (poller == NULL)
        bu_die("the default pool's poller: %s", err.message);
    for (k = 0; k < g_n; k++)
        reads[k].s = g_srv[k];
    /* The same writes with no read pending: what the machine gives a
     * write at this moment (a control for the figure below). */
    srand(seed);
    seq_writes(w, nwrites, lat, &done);
    res->ctl_p50 = bu_quantile(lat, nwrites, 0.50);
    res->ctl_p99 = bu_quantile(lat, nwrites, 0.99);
    usleep(100000);
    heap2 = bu_heap_bytes();
    rss2 = bu_rss_kib();
    t2 = bu_now();
    for (k = 0; k < g_n; k++)
        if (negstream_begin_read(g_srv[k], reads[k].buf, MSG, 0, MSG,
                                 read_cb, &reads[k], &err) == NULL)
            bu_die("parked: begin_read %zu: %s", k, err.message);
    /* Until every read has tried, found nothing, and parked. */
    while (negstream__poller_armed(poller) < g_n) {
        if (bu_now() - t2 > 120)
            bu_die("parked: only %zu of %zu reads parked after 120 s",
                   negstream__poller_armed(poller), g_n);
        usleep(1000);
    }
    t3 = bu_now();
    res->park_s = t3 - t2;
    heap3 = bu_heap_bytes();
    rss3 = bu_rss_kib();
    res->heap_per_read = ((double)heap3 - (double)heap2) / (double)g_n;
    res->rss_per_read = (double)(rss3 - rss2) * 1024.0 / (double)g_n;
    res->threads = bu_process_threads();
    res->workers = negstream__pool_threads(pool);
    res->extra_threads = res->threads - res->workers;
    res->max_threads_seen = res->threads;

    /* Idle: 10 000 parked reads, nothing to do. */
    cpu0 = bu_cpu_seconds();
    sleep(idle_s);
    res->idle_cpu_ms = (bu_cpu_seconds() - cpu0) * 1e3;
    track_threads(res);

    /* One write at a time, on a random stream each. */
    seq_writes(w, nwrites, lat, &done);
    track_threads(res);
    res->seq_p50 = bu_quantile(lat, nwrites, 0.50);
    res->seq_p99 = bu_quantile(lat, nwrites, 0.99);
    res->seq_max = lat[nwrites - 1];

    /* As many at once, on distinct random streams. */
    for (k = 0; k < g_n; k++)
        perm[k] = k;
    for (k = g_n - 1; k > 0; k--) {
        size_t j = (size_t)rand() % (k + 1), tmp = perm[k];

        perm[k] = perm[j];
        perm[j] = tmp;
    }
    atomic_init(&left, nwrites);
    for (i = 0; i < nwrites; i++) {
        w[i].s = g_srv[perm[i % g_n]];
        w[i].done = NULL;
        w[i].left = &left;
        w[i].all_done = &done;
    }
    t0 = bu_now();
    for (i = 0; i < nwrites; i++)
        begin_write(&w[i]);
    while (sem_wait(&done) < 0 && errno == EINTR)
        ;
    res->burst_all = (bu_now() - t0) * 1e3;
    track_threads(res);
    for (i = 0; i < nwrites; i++)
        lat[i] = w[i].lat_ms;
    res->burst_p50 = bu_quantile(lat, nwrites, 0.50);
    res->burst_p99 = bu_quantile(lat, nwrites, 0.99);

    /* Close: every parked read completes once, DISPOSED. */
    t0 = bu_now();
    for (k = 0; k < g_n; k++)
        negstream_close(g_srv[k]);
    while (atomic_load(&g_reads_ended) < g_n) {
        if (bu_now() - t0 > 120)
            bu_die("parked: %zu of %zu reads ended 120 s after close",
                   atomic_load(&g_reads_ended), g_n);
        usleep(100);
    }
    res->close_s = bu_now() - t0;
    if (atomic_load(&g_reads_wrong) > 0)
        bu_die("parked: %zu reads did not end with DISPOSED",
               atomic_load(&g_reads_wrong));
    res->peak_rss_mib = (double)bu_peak_rss_kib() / 1024.0;
    close(end[1]);                  /* the peers may go */
    close(go[1]);
    if (waitpid(peer, &status, 0) < 0 || !WIFEXITED(status)
        || WEXITSTATUS(status) != 0)
        bu_die("parked: the peers' process failed");
    sem_destroy(&done);
    free(lat);
    free(w);
    free(perm);
    free(reads);
    free(g_srv);
}

int main(int argc, char **argv)
{
    enum { F_SETUP, F_RATE, F_HEAP_STREAM, F_HEAP_READ, F_RSS_READ, F_PARK,
           F_THREADS, F_WORKERS, F_EXTRA, F_MAXTHREADS, F_IDLE, F_CTL50,
           F_CTL99, F_SEQ50,
           F_SEQ99, F_SEQMAX, F_BURST50, F_BURST99, F_BURSTALL, F_CLOSE,
           F_PEAK, NFIG };
    static double fig[NFIG][BU_MAX_RUNS];
    size_t nwrites = bu_env_size("BENCH_PARKED_WRITES", 1000);
    size_t batch = bu_env_size("BENCH_PARKED_BATCH", 500);
    unsigned idle_s = (unsigned)bu_env_size("BENCH_PARKED_IDLE_S", 2);
    int runs = bu_runs(), r, p[2], status;
    char name[160];
    result res;
    pid_t pid;

    bu_report_begin("parked", argc, argv);
    g_n = bu_env_size("BENCH_PARKED_STREAMS", 10000);
    if (g_n < 1 || nwrites < 1 || nwrites > g_n)
        bu_die("BENCH_PARKED_STREAMS >= 1 and BENCH_PARKED_WRITES 1.."
               "BENCH_PARKED_STREAMS");
    /* One fd per server stream (see accept_all); the peers' process
     * checks its own. */
    bu_need_fds(g_n + 256, "parked");

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
            one_run(&res, nwrites, batch, idle_s, 1234u + (unsigned)r);
            if (write(p[1], &res, sizeof(res)) != (ssize_t)sizeof(res))
                _exit(1);
            _exit(0);
        }
        close(p[1]);
        if (read(p[0], &res, sizeof(res)) != (ssize_t)sizeof(res))
            bu_die("parked run %d failed", r + 1);
        close(p[0]);
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bu_die("parked run %d: child failed", r + 1);
        fig[F_SETUP][r] = res.setup_s;
        fig[F_RATE][r] = res.pairs_per_s;
        fig[F_HEAP_STREAM][r] = res.heap_per_stream;
        fig[F_HEAP_READ][r] = res.heap_per_read;
        fig[F_RSS_READ][r] = res.rss_per_read;
        fig[F_PARK][r] = res.park_s;
        fig[F_THREADS][r] = res.threads;
        fig[F_WORKERS][r] = res.workers;
        fig[F_EXTRA][r] = res.extra_threads;
        fig[F_MAXTHREADS][r] = res.max_threads_seen;
        fig[F_IDLE][r] = res.idle_cpu_ms;
        fig[F_CTL50][r] = res.ctl_p50;
        fig[F_CTL99][r] = res.ctl_p99;
        fig[F_SEQ50][r] = res.seq_p50;
        fig[F_SEQ99][r] = res.seq_p99;
        fig[F_SEQMAX][r] = res.seq_max;
        fig[F_BURST50][r] = res.burst_p50;
        fig[F_BURST99][r] = res.burst_p99;
        fig[F_BURSTALL][r] = res.burst_all;
        fig[F_CLOSE][r] = res.close_s;
        fig[F_PEAK][r] = res.peak_rss_mib;
        if (!bu_report_json())
            fprintf(stderr, "parked run %d: setup %.1f s, %.0f B/stream, "
                    "%.0f B/read, threads %.0f (workers %.0f), write p99 "
                    "%.2f ms, burst p99 %.2f ms\n", r + 1, res.setup_s,
                    res.heap_per_stream, res.heap_per_read, res.threads,
                    res.workers, res.seq_p99, res.burst_p99);
    }

#define ROW(g, f, n, u) bu_report_row(g, n, u, bu_stats(fig[f], runs))
    snprintf(name, sizeof(name), "authenticate %zu pairs (async, both ends)",
             g_n);
    ROW("setup", F_SETUP, name, "s");
    ROW("setup", F_RATE, "pairs authenticated per second", "pairs/s");
    ROW("memory", F_HEAP_STREAM, "heap per authenticated server stream",
        "bytes");
    bu_report_max("memory", "heap per pending read", "bytes",
                  bu_stats(fig[F_HEAP_READ], runs), 1024,
                  "target <= 1024");
    ROW("memory", F_RSS_READ, "RSS per pending read", "bytes");
    ROW("memory", F_PEAK, "peak RSS of the run", "MiB");
    snprintf(name, sizeof(name), "post %zu begin_reads until all parked",
             g_n);
    ROW("reads", F_PARK, name, "s");
    ROW("threads", F_THREADS, "process threads, reads parked", "threads");
    ROW("threads", F_WORKERS, "pool workers, reads parked", "threads");
    bu_report_max("threads", "threads beyond the workers", "threads",
                  bu_stats(fig[F_EXTRA], runs), 2, "target <= 2");
    ROW("threads", F_MAXTHREADS, "most process threads seen", "threads");
    snprintf(name, sizeof(name), "process CPU, %u s idle", idle_s);
    ROW("idle", F_IDLE, name, "ms");
    ROW("write", F_CTL50, "no read pending: one at a time, p50", "ms");
    ROW("write", F_CTL99, "no read pending: one at a time, p99", "ms");
    ROW("write", F_SEQ50, "begin_write to end, one at a time, p50", "ms");
    bu_report_max("write", "begin_write to end, one at a time, p99", "ms",
                  bu_stats(fig[F_SEQ99], runs), 5, "target <= 5");
    ROW("write", F_SEQMAX, "begin_write to end, one at a time, max", "ms");
    snprintf(name, sizeof(name), "%zu at once: p50 begin to end", nwrites);
    ROW("write", F_BURST50, name, "ms");
    snprintf(name, sizeof(name), "%zu at once: p99 begin to end", nwrites);
    ROW("write", F_BURST99, name, "ms");
    snprintf(name, sizeof(name), "%zu at once: until all ended", nwrites);
    ROW("write", F_BURSTALL, name, "ms");
    snprintf(name, sizeof(name), "close %zu streams until every read "
             "ended", g_n);
    ROW("close", F_CLOSE, name, "s");
#undef ROW
    bu_report_note("%zu server streams with a 64-byte begin_read pending, "
                   "default pool (max %s), TCP 127.0.0.1 from a peers' "
                   "process whose client streams were authenticated "
                   "(EncryptAndSign, Kerberos via SPNEGO) and then closed, "
                   "leaving silent sockets; one fd per server stream "
                   "(leave_inner_open, the accepted fd closed); %zu writes "
                   "of 64 bytes; heap = "
                   "malloc in use (mallinfo2); poller backend %s",
                   g_n, getenv("NEGSTREAM_THREADS") != NULL
                   ? getenv("NEGSTREAM_THREADS") : "4 per CPU, >= 8",
                   nwrites, negstream__poller_backend());
    bu_report_print();
    return 0;
}
