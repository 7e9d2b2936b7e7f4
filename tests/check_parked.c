/*
 * check_parked.c - no thread waits on a peer (issue 11): operations that
 * wait for the peer park with the poller, so a small pool serves
 * thousands of quiet, slow or hostile peers; deadlines bound whole
 * operations; close, cancel, pool_free and fork reach parked operations
 * and complete each exactly once.  Against the real test realm
 * (tests/parked.krb).
 *
 * Every test here hangs or fails on a library whose pending reads and
 * handshakes hold a worker while they wait.  Nothing asserts on elapsed
 * time: a guard of tens of seconds only turns a hang into a failure.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "negstream.h"
#include "pool.h"
#include "testutil.h"

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

/* A wait that should take milliseconds; a hang becomes a failure. */
#define GUARD_MS 60000

/* ---- helpers ------------------------------------------------------------ */

/* Makes room for n more fds (each stream holds a duplicate of its fd). */
static void need_fds(unsigned n)
{
    struct rlimit rl;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < n + 64) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < n + 64)
            rl.rlim_max = n + 64;       /* root may raise it */
        rl.rlim_cur = n + 64;
        ck_assert_msg(setrlimit(RLIMIT_NOFILE, &rl) == 0,
                      "this test needs %u file descriptors: %s", n + 64,
                      strerror(errno));
    }
}

/* Threads of this process, from /proc/self/status. */
/* The names of the process's threads, for a failure message; *ours gets
 * the number of the library's own (named "negstream-..."). */
static const char *thread_names(int *ours)
{
    static char names[1024];
    size_t used = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;

    names[0] = '\0';
    *ours = 0;
    if (d == NULL)
        return names;
    while ((de = readdir(d)) != NULL && used + 40 < sizeof(names)) {
        char path[300], comm[32] = "";
        FILE *f;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
        f = fopen(path, "r");
        if (f != NULL) {
            if (fgets(comm, sizeof(comm), f) != NULL)
                comm[strcspn(comm, "\n")] = '\0';
            fclose(f);
        }
        if (strncmp(comm, "negstream-", 10) == 0)
            (*ours)++;
        used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
                                 used > 0 ? ", " : "", comm);
    }
    closedir(d);
    return names;
}

static int process_threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* One result a test waits for, with what its callback saw. */
typedef struct rec {
    negstream       *s;
    negstream_async *ar;
    atomic_int       calls;      /* callback invocations */
    atomic_int       ended;
    atomic_int       hold;       /* rec_cb waits while set, before ending */
    int              kind;       /* 'r' read, 'w' write, 'a' client
                                    authentication, 'S' server one */
    ssize_t          n;
    negstream_error  e;
    uint8_t          buf[64];
} rec;

static atomic_int g_callbacks;

/* Counts the call and ends the result in the callback, the usual pattern. */
static void rec_cb(negstream_async *ar)
{
    rec *r = negstream_async_state(ar);

    atomic_fetch_add(&r->calls, 1);
    while (atomic_load(&r->hold))
        usleep(1000);
    if (r->kind == 'r')
        r->n = negstream_end_read(r->s, ar, &r->e);
    else if (r->kind == 'w')
        r->n = negstream_end_write(r->s, ar, &r->e);
    else if (r->kind == 'S')
        r->n = negstream_end_authenticate_as_server(r->s, ar, &r->e);
    else
        r->n = negstream_end_authenticate_as_client(r->s, ar, &r->e);
    atomic_store(&r->ended, 1);
    atomic_fetch_add(&g_callbacks, 1);
}

/* Counts the call only: the test ends the result itself, later (so that
 * other threads may still cancel it meanwhile). */
static void count_cb(negstream_async *ar)
{
    rec *r = negstream_async_state(ar);

    atomic_fetch_add(&r->calls, 1);
    atomic_store(&r->ended, 1);
}

/* Waits until every one of recs[0..n) has run its callback. */
static void wait_ended(rec *recs, size_t n)
{
    int64_t left = GUARD_MS;
    size_t i;

    for (i = 0; i < n; i++) {
        while (!atomic_load(&recs[i].ended)) {
            ck_assert_msg(left-- > 0, "operation %zu of %zu never "
                          "completed", i, n);
            usleep(1000);
        }
    }
}

/*
 * n Kerberos-authenticated pairs (EncryptAndSign) on socketpairs, every
 * stream on pool p, authenticated asynchronously on both sides at once:
 * the handshakes themselves park while they wait.  cli/srv get the
 * streams; raw (may be NULL) the client-side fds.
 */
static void bulk_pairs(size_t n, negstream_pool *p, negstream **cli,
                       negstream **srv)
{
    negstream_client_options co;
    rec *ra = calloc(2 * n, sizeof(*ra));
    size_t i;

    ck_assert_ptr_nonnull(ra);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = "kerberos";
    for (i = 0; i < n; i++) {
        negstream_error e;
        int fds[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                                    fds), 0);
        cli[i] = negstream_new(fds[0], false, &e);
        srv[i] = negstream_new(fds[1], false, &e);
        ck_assert_ptr_nonnull(cli[i]);
        ck_assert_ptr_nonnull(srv[i]);
        ck_assert_int_eq(negstream_set_pool(cli[i], p, &e), 0);
        ck_assert_int_eq(negstream_set_pool(srv[i], p, &e), 0);
        ra[2 * i].s = srv[i];
        ra[2 * i].kind = 'S';
        ra[2 * i + 1].s = cli[i];
        ra[2 * i + 1].kind = 'a';
        ck_assert_ptr_nonnull(negstream_begin_authenticate_as_server(
            srv[i], NULL, rec_cb, &ra[2 * i], &e));
        ck_assert_ptr_nonnull(negstream_begin_authenticate_as_client(
            cli[i], &co, rec_cb, &ra[2 * i + 1], &e));
    }
    wait_ended(ra, 2 * n);
    for (i = 0; i < 2 * n; i++) {
        ck_assert_int_eq(atomic_load(&ra[i].calls), 1);
        ck_assert_msg(ra[i].n == 0, "authentication %zu failed: %s", i,
                      ra[i].e.message);
    }
    free(ra);
}

static void close_all(negstream **v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        negstream_close(v[i]);
}

/* ---- thousands of idle readers on four workers -------------------------- */

/*
 * 2000 server streams each with a read pending and a silent peer, on a
 * pool of 4 workers: the process keeps its handful of threads, and a
 * write on one of those streams, and a read on a fresh stream whose peer
 * has already sent its message, still complete.  Then close completes
 * every pending read exactly once.
 */
START_TEST(test_idle_readers_small_pool)
{
    enum { N = 2000 };
    negstream **cli = calloc(N + 1, sizeof(*cli));
    negstream **srv = calloc(N + 1, sizeof(*srv));
    rec *rd = calloc(N + 1, sizeof(*rd));
    negstream_pool *p;
    negstream_error e;
    negstream_async *ar;
    int threads_before, threads, ours;
    const char *names;
    char buf[16];
    size_t i;

    ck_assert_ptr_nonnull(cli);
    ck_assert_ptr_nonnull(srv);
    ck_assert_ptr_nonnull(rd);
    need_fds(4 * (N + 1) + 64);
    p = negstream_pool_new(4, 4, &e);
    ck_assert_ptr_nonnull(p);
    bulk_pairs(N + 1, p, cli, srv);
    threads_before = process_threads();
    for (i = 0; i < N; i++) {
        rd[i].s = srv[i];
        rd[i].kind = 'r';
        rd[i].ar = negstream_begin_read(srv[i], rd[i].buf, sizeof(rd[i].buf),
                                        0, sizeof(rd[i].buf), rec_cb, &rd[i],
                                        &e);
        ck_assert_msg(rd[i].ar != NULL, "begin_read %zu: %s", i, e.message);
    }
    /* A pending read costs no thread: the 4 workers and the poller. */
    threads = process_threads();
    /* The library's threads are named (a sanitizer adds its own). */
    names = thread_names(&ours);
    ck_assert_msg(threads <= threads_before + 1 && ours <= 4 + 1,
                  "%d threads with %d pending reads (were %d), %d of the "
                  "library: %s", threads, N, threads_before, ours, names);
    ck_assert_uint_le(negstream__pool_threads(p), 4);

    /* A write on a stream with a read pending. */
    ar = negstream_begin_write(srv[7], "pong", 4, 0, 4, NULL, NULL, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert_msg(negstream_async_wait(ar, GUARD_MS), "the write never ran");
    ck_assert_int_eq(negstream_end_write(srv[7], ar, &e), 0);
    tu_read_all(cli[7], buf, 4);
    ck_assert_mem_eq(buf, "pong", 4);

    /* A fresh read whose data is already there. */
    tu_write_all(cli[N], "ping", 4);
    rd[N].s = srv[N];
    rd[N].kind = 'r';
    ck_assert_ptr_nonnull(negstream_begin_read(srv[N], rd[N].buf, 16, 0, 16,
                                               rec_cb, &rd[N], &e));
    wait_ended(&rd[N], 1);
    ck_assert_int_eq(rd[N].n, 4);
    ck_assert_mem_eq(rd[N].buf, "ping", 4);

    /* And one of the idle ones, when its peer speaks at last. */
    tu_write_all(cli[1999], "late", 4);
    wait_ended(&rd[1999], 1);
    ck_assert_int_eq(rd[1999].n, 4);
    ck_assert_mem_eq(rd[1999].buf, "late", 4);

    /* Close: each pending read completes once, DISPOSED. */
    close_all(srv, N + 1);
    wait_ended(rd, N);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(atomic_load(&rd[i].calls), 1);
        if (i != 1999)
            ck_assert_msg(rd[i].n == -1 &&
                          rd[i].e.code == NEGSTREAM_E_DISPOSED,
                          "read %zu: %zd %s", i, rd[i].n, rd[i].e.message);
    }
    close_all(cli, N + 1);
    negstream_pool_free(p);
    free(cli);
    free(srv);
    free(rd);
}
END_TEST

/* ---- request/response, the server speaking first ------------------------ */

/*
 * A protocol where the server speaks first (a greeting, then request /
 * response): the server posts a read on every connection while waiting.
 * 50 connections x 20 exchanges on a pool of 2 workers, both sides driven
 * by callback chains.  With reads that hold a worker, two waiting reads
 * stop everything.
 */
enum { RR_CONNS = 50, RR_ROUNDS = 20, RR_MSG = 24 };

typedef struct rr_side {
    negstream      *s;
    bool            server;
    int             conn, round;
    char            out[RR_MSG], in[RR_MSG];
    size_t          got;
    atomic_int     *done;        /* sides finished */
    atomic_int     *failed;
    negstream_error e;
} rr_side;

static void rr_read_cb(negstream_async *ar);

static void rr_fail(rr_side *x, const char *what)
{
    fprintf(stderr, "rr conn %d %s round %d: %s: %s\n", x->conn,
            x->server ? "server" : "client", x->round, what, x->e.message);
    atomic_fetch_add(x->failed, 1);
    atomic_fetch_add(x->done, 1);
}

static void rr_start_read(rr_side *x)
{
    x->got = 0;
    if (negstream_begin_read(x->s, x->in, RR_MSG, 0, RR_MSG, rr_read_cb, x,
                             &x->e) == NULL)
        rr_fail(x, "begin_read");
}

static void rr_write_cb(negstream_async *ar)
{
    rr_side *x = negstream_async_state(ar);

    if (negstream_end_write(x->s, ar, &x->e) < 0) {
        rr_fail(x, "end_write");
        return;
    }
    if (x->server && x->round == RR_ROUNDS) {
        atomic_fetch_add(x->done, 1);   /* the last response went out */
        return;
    }
    rr_start_read(x);
}

static void rr_send(rr_side *x)
{
    memset(x->out, 0, RR_MSG);
    snprintf(x->out, RR_MSG, "%c %d %d", x->server ? 'S' : 'C', x->conn,
             x->round);
    if (negstream_begin_write(x->s, x->out, RR_MSG, 0, RR_MSG, rr_write_cb,
                              x, &x->e) == NULL)
        rr_fail(x, "begin_write");
}

static void rr_read_cb(negstream_async *ar)
{
    rr_side *x = negstream_async_state(ar);
    char want[RR_MSG];
    ssize_t n = negstream_end_read(x->s, ar, &x->e);

    if (n <= 0) {
        rr_fail(x, n == 0 ? "unexpected end of stream" : "end_read");
        return;
    }
    x->got += (size_t)n;
    if (x->got < RR_MSG) {
        if (negstream_begin_read(x->s, x->in, RR_MSG, (ssize_t)x->got,
                                 (ssize_t)(RR_MSG - x->got), rr_read_cb, x,
                                 &x->e) == NULL)
            rr_fail(x, "begin_read");
        return;
    }
    /* Round r: the server's message "S conn r" (r = 0 is the greeting),
     * then, for r >= 1, preceded by the client's request "C conn r". */
    if (x->server)
        x->round++;
    memset(want, 0, RR_MSG);
    snprintf(want, RR_MSG, "%c %d %d", x->server ? 'C' : 'S', x->conn,
             x->round);
    if (memcmp(want, x->in, RR_MSG) != 0) {
        snprintf(x->e.message, sizeof(x->e.message), "got \"%.*s\", "
                 "wanted \"%s\"", RR_MSG, x->in, want);
        rr_fail(x, "wrong message");
        return;
    }
    if (!x->server && x->round == RR_ROUNDS) {
        atomic_fetch_add(x->done, 1);   /* the last response came */
        return;
    }
    if (!x->server)
        x->round++;
    rr_send(x);
}

START_TEST(test_server_first_request_response)
{
    negstream *cli[RR_CONNS], *srv[RR_CONNS];
    rr_side *sides = calloc(2 * RR_CONNS, sizeof(*sides));
    atomic_int done = 0, failed = 0;
    negstream_pool *p;
    negstream_error e;
    int i, left = GUARD_MS;

    ck_assert_ptr_nonnull(sides);
    need_fds(4 * RR_CONNS + 64);
    p = negstream_pool_new(1, 2, &e);
    ck_assert_ptr_nonnull(p);
    bulk_pairs(RR_CONNS, p, cli, srv);
    for (i = 0; i < RR_CONNS; i++) {
        rr_side *sv = &sides[2 * i], *cl = &sides[2 * i + 1];

        sv->s = srv[i];
        sv->server = true;
        cl->s = cli[i];
        sv->conn = cl->conn = i;
        sv->done = cl->done = &done;
        sv->failed = cl->failed = &failed;
        /* The client reads first: round 0 is the server's greeting. */
        rr_start_read(cl);
    }
    for (i = 0; i < RR_CONNS; i++)
        rr_send(&sides[2 * i]);         /* the greetings, round 0 */
    while (atomic_load(&done) < 2 * RR_CONNS && left-- > 0)
        usleep(1000);
    ck_assert_msg(atomic_load(&done) == 2 * RR_CONNS, "%d of %d sides "
                  "finished", atomic_load(&done), 2 * RR_CONNS);
    ck_assert_int_eq(atomic_load(&failed), 0);
    close_all(cli, RR_CONNS);
    close_all(srv, RR_CONNS);
    negstream_pool_free(p);
    free(sides);
}
END_TEST

/* ---- hostile handshakes -------------------------------------------------- */

/*
 * 500 peers send the header of a 100-byte handshake message and then
 * nothing; a real client beside them authenticates all the same, on a pool
 * of 4 workers.  Closing the hostile streams completes each of their
 * authentications once, with DISPOSED.
 */
START_TEST(test_hostile_handshakes)
{
    enum { N = 500 };
    static const uint8_t hdr[5] = { 0x16, 0x01, 0x00, 0x00, 0x64 };
    negstream **srv = calloc(N, sizeof(*srv));
    int *hostile = calloc(N, sizeof(*hostile));
    rec *ra = calloc(N + 1, sizeof(*ra));
    negstream_client_options co;
    negstream_pool *p;
    negstream_error e;
    negstream *c, *s;
    int fds[2];
    size_t i;

    ck_assert_ptr_nonnull(srv);
    ck_assert_ptr_nonnull(hostile);
    ck_assert_ptr_nonnull(ra);
    need_fds(3 * (N + 1) + 64);
    p = negstream_pool_new(4, 4, &e);
    ck_assert_ptr_nonnull(p);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                                    fds), 0);
        hostile[i] = fds[0];
        ck_assert_int_eq(write(hostile[i], hdr, sizeof(hdr)), 5);
        srv[i] = negstream_new(fds[1], false, &e);
        ck_assert_ptr_nonnull(srv[i]);
        ck_assert_int_eq(negstream_set_pool(srv[i], p, &e), 0);
        ra[i].s = srv[i];
        ra[i].kind = 'S';
        ck_assert_ptr_nonnull(negstream_begin_authenticate_as_server(
            srv[i], NULL, rec_cb, &ra[i], &e));
    }
    /* The real client: synchronous on this thread, its server on p. */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds),
                     0);
    c = negstream_new(fds[0], false, &e);
    s = negstream_new(fds[1], false, &e);
    ck_assert_int_eq(negstream_set_pool(s, p, &e), 0);
    ra[N].s = s;
    ra[N].kind = 'S';
    ck_assert_ptr_nonnull(negstream_begin_authenticate_as_server(
        s, NULL, rec_cb, &ra[N], &e));
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    ck_assert_int_eq(negstream_set_auth_timeout(c, GUARD_MS, &e), 0);
    ck_assert_msg(negstream_authenticate_as_client(c, &co, &e) == 0,
                  "the real client failed: %s", e.message);
    wait_ended(&ra[N], 1);
    ck_assert_msg(ra[N].n == 0, "its server failed: %s", ra[N].e.message);
    ck_assert(negstream_is_authenticated(s));
    /* None of the hostile handshakes has ended on its own. */
    for (i = 0; i < N; i++)
        ck_assert_int_eq(atomic_load(&ra[i].calls), 0);
    close_all(srv, N);
    wait_ended(ra, N);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(atomic_load(&ra[i].calls), 1);
        ck_assert_int_eq(ra[i].e.code, NEGSTREAM_E_DISPOSED);
        close(hostile[i]);
    }
    negstream_close(c);
    negstream_close(s);
    negstream_pool_free(p);
    free(srv);
    free(hostile);
    free(ra);
}
END_TEST

/* ---- deadlines bound whole operations ---------------------------------- */

/* A peer that sends its bytes one at a time, every interval_ms. */
typedef struct trickle {
    pthread_t      thread;
    int            fd;
    uint8_t        bytes[128];
    size_t         len;
    int            interval_ms;
    atomic_size_t  sent;
    atomic_int     stop;
} trickle;

static void *trickle_main(void *arg)
{
    trickle *t = arg;
    size_t i;

    for (i = 0; i < t->len && !atomic_load(&t->stop); i++) {
        if (send(t->fd, &t->bytes[i], 1, MSG_NOSIGNAL) != 1)
            break;
        atomic_fetch_add(&t->sent, 1);
        usleep((useconds_t)t->interval_ms * 1000);
    }
    return NULL;
}

static void trickle_start(trickle *t, int fd, const uint8_t *hdr,
                          size_t hdr_len, size_t len, int interval_ms)
{
    memset(t, 0, sizeof(*t));
    t->fd = fd;
    t->len = len;
    t->interval_ms = interval_ms;
    memcpy(t->bytes, hdr, hdr_len);
    memset(t->bytes + hdr_len, 0x5a, len - hdr_len);
    ck_assert_int_eq(pthread_create(&t->thread, NULL, trickle_main, t), 0);
}

static void trickle_stop(trickle *t)
{
    atomic_store(&t->stop, 1);
    pthread_join(t->thread, NULL);
}

/*
 * A handshake message trickled at a byte every 200 ms (105 bytes: 21 s)
 * against a 1 s authentication deadline: the authentication fails with
 * TIMEOUT while the peer still has bytes to send.  _i: 0 synchronous,
 * 1 asynchronous (parked between bytes).
 */
START_TEST(test_trickle_auth_deadline)
{
    static const uint8_t hdr[5] = { 0x16, 0x01, 0x00, 0x00, 0x64 };
    negstream_error e;
    negstream *s;
    trickle t;
    rec r;
    int fds[2];
    int rc;
    size_t sent;

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds),
                     0);
    s = negstream_new(fds[1], false, &e);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(negstream_set_auth_timeout(s, 1000, &e), 0);
    trickle_start(&t, fds[0], hdr, sizeof(hdr), 105, 200);
    if (_i == 0) {
        rc = negstream_authenticate_as_server(s, NULL, &e);
    } else {
        memset(&r, 0, sizeof(r));
        r.s = s;
        r.kind = 'S';
        ck_assert_ptr_nonnull(negstream_begin_authenticate_as_server(
            s, NULL, rec_cb, &r, &e));
        wait_ended(&r, 1);
        rc = (int)r.n;
        e = r.e;
    }
    sent = atomic_load(&t.sent);
    trickle_stop(&t);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(e.code == NEGSTREAM_E_TIMEOUT, "%s: %s",
                  negstream_status_name(e.code), e.message);
    ck_assert_msg(sent < 105, "the deadline did not end the trickle (%zu "
                  "bytes sent)", sent);
    negstream_close(s);
    close(fds[0]);
}
END_TEST

/*
 * The same for a read: an authenticated pair, a frame trickled at a byte
 * every 200 ms against a 1 s read timeout.  The read fails with TIMEOUT
 * and the stream is faulted.  _i: 0 synchronous, 1 asynchronous.
 */
START_TEST(test_trickle_read_deadline)
{
    static const uint8_t hdr[4] = { 100, 0, 0, 0 };
    negstream *c, *s;
    negstream_error e;
    uint8_t buf[16];
    trickle t;
    rec r;
    ssize_t n;
    size_t sent;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert_int_eq(negstream_set_timeouts(s, 1000, -1, &e), 0);
    trickle_start(&t, tu_fds[0], hdr, sizeof(hdr), 104, 200);
    if (_i == 0) {
        n = negstream_read(s, buf, sizeof(buf), 0, sizeof(buf), &e);
    } else {
        memset(&r, 0, sizeof(r));
        r.s = s;
        r.kind = 'r';
        ck_assert_ptr_nonnull(negstream_begin_read(s, r.buf, 16, 0, 16,
                                                   rec_cb, &r, &e));
        wait_ended(&r, 1);
        n = r.n;
        e = r.e;
    }
    sent = atomic_load(&t.sent);
    trickle_stop(&t);
    ck_assert_int_eq(n, -1);
    ck_assert_msg(e.code == NEGSTREAM_E_TIMEOUT, "%s: %s",
                  negstream_status_name(e.code), e.message);
    ck_assert_msg(sent < 104, "the deadline did not end the trickle (%zu "
                  "bytes sent)", sent);
    /* Part of a frame was consumed: the stream is faulted. */
    ck_assert_int_eq(negstream_read(s, buf, sizeof(buf), 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* Without a timeout, a read waits as long as the peer is silent (.NET's
 * default); the authentication default is 60 s (not waited for here). */
START_TEST(test_default_timeouts)
{
    negstream *c, *s;
    negstream_error e;
    negstream_async *ar;
    uint8_t buf[4];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ar = negstream_begin_read(s, buf, 4, 0, 4, NULL, NULL, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert(!negstream_async_wait(ar, 1500));
    tu_write_all(c, "late", 4);
    ck_assert_int_eq(negstream_end_read(s, ar, &e), 4);
    ck_assert_int_eq(negstream_set_auth_timeout(s, -2, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(negstream_set_auth_timeout(NULL, 5, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- close and cancel of parked operations ------------------------------ */

/* Cancels ar, retrying while its step is running (it parks soon).  The
 * callback must not end ar before this returns (rec.hold). */
static void cancel_parked(negstream_async *ar)
{
    int left = GUARD_MS;

    while (negstream_async_cancel(ar) != 0) {
        ck_assert_msg(!negstream_async_is_completed(ar),
                      "completed before it could be cancelled");
        ck_assert_msg(left-- > 0, "never cancellable");
        usleep(1000);
    }
    /* Settled by cancel itself: no worker needed to see it completed. */
    ck_assert(negstream_async_is_completed(ar));
}

/*
 * A parked read, write or authentication, cancelled (_i = 0..3) or closed
 * (_i = 4..7): each completes once, CANCELED / DISPOSED.  A cancelled read
 * that had consumed nothing leaves the stream usable; one inside a frame,
 * and a write that had sent part of a frame, fault it; a cancelled
 * authentication leaves it failed.
 */
START_TEST(test_cancel_close_parked)
{
    int what = _i % 4;
    bool by_close = _i >= 4;
    negstream *c = NULL, *s = NULL;
    negstream_error e;
    rec r;
    uint8_t *big = NULL;
    int fds[2];
    const size_t big_len = 8u << 20;

    memset(&r, 0, sizeof(r));
    /* The callback ends the result: held until cancel_parked has looked
     * at it. */
    atomic_store(&r.hold, 1);
    if (what == 3) {
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                                    fds), 0);
        s = negstream_new(fds[1], false, &e);
        r.s = s;
        r.kind = 'S';
        r.ar = negstream_begin_authenticate_as_server(s, NULL, rec_cb, &r,
                                                      &e);
    } else {
        tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
        r.s = s;
        if (what == 1)      /* two bytes of a frame header */
            ck_assert_int_eq(write(tu_fds[0], "\x40\x00", 2), 2);
        if (what == 2) {
            big = malloc(big_len);
            ck_assert_ptr_nonnull(big);
            tu_fill(big, big_len, 3);
            r.kind = 'w';
            r.ar = negstream_begin_write(s, big, big_len, 0,
                                         (ssize_t)big_len, rec_cb, &r, &e);
        } else {
            r.kind = 'r';
            r.ar = negstream_begin_read(s, r.buf, 16, 0, 16, rec_cb, &r,
                                        &e);
        }
    }
    ck_assert_ptr_nonnull(r.ar);
    usleep(100 * 1000);     /* likely parked by now; cancel retries */
    if (by_close)
        negstream_close(s);
    else
        cancel_parked(r.ar);
    atomic_store(&r.hold, 0);
    wait_ended(&r, 1);
    ck_assert_int_eq(atomic_load(&r.calls), 1);
    ck_assert_int_eq(r.n, -1);
    ck_assert_int_eq(r.e.code, by_close ? NEGSTREAM_E_DISPOSED
                                        : NEGSTREAM_E_CANCELED);
    if (!by_close) {
        uint8_t buf[4];

        if (what == 0) {
            tu_write_all(c, "more", 4);
            tu_read_all(s, buf, 4);
            ck_assert_mem_eq(buf, "more", 4);
        } else if (what == 1) {
            ck_assert_int_eq(negstream_read(s, buf, 4, 0, 4, &e), -1);
            ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
        } else if (what == 2) {
            ck_assert_int_eq(negstream_write(s, "x", 1, 0, 1, &e), -1);
            ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
        } else {
            ck_assert_int_eq(negstream_authenticate_as_server(s, NULL, &e),
                             -1);
            ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
        }
        negstream_close(s);
    }
    /* A second cancel, after completion, does nothing. */
    if (c != NULL)
        negstream_close(c);
    if (what == 3)
        close(fds[0]);
    free(big);
}
END_TEST

/*
 * Many threads race a peer's data, cancel and close against parked reads
 * and writes (also under ThreadSanitizer): every operation completes
 * exactly once, with data, CANCELED or DISPOSED.
 */
enum { RACE_PAIRS = 64 };

typedef struct racer {
    negstream      *c, *s;
    rec             rd, wr;
    uint8_t        *big;
    pthread_t       t[3];
    unsigned        seed;
} racer;

static void *race_data(void *p)
{
    racer *x = p;
    negstream_error e;
    uint8_t sink[4096];

    usleep(rand_r(&x->seed) % 2000);
    negstream_write(x->c, "data", 4, 0, 4, &e);
    /* Drain the big write a little. */
    negstream_read(x->c, sink, sizeof(sink), 0, sizeof(sink), &e);
    return NULL;
}

static void *race_cancel(void *p)
{
    racer *x = p;

    usleep(rand_r(&x->seed) % 2000);
    negstream_async_cancel(x->rd.ar);
    negstream_async_cancel(x->wr.ar);
    return NULL;
}

static void *race_close(void *p)
{
    racer *x = p;

    usleep(rand_r(&x->seed) % 3000);
    negstream_close(x->s);
    return NULL;
}

START_TEST(test_race_parked_exactly_once)
{
    racer *x = calloc(RACE_PAIRS, sizeof(*x));
    negstream *cli[RACE_PAIRS], *srv[RACE_PAIRS];
    negstream_pool *p;
    negstream_error e;
    const size_t big_len = 1u << 20;
    size_t i, j;

    ck_assert_ptr_nonnull(x);
    need_fds(4 * RACE_PAIRS + 64);
    p = negstream_pool_new(2, 4, &e);
    ck_assert_ptr_nonnull(p);
    bulk_pairs(RACE_PAIRS, p, cli, srv);
    for (i = 0; i < RACE_PAIRS; i++) {
        x[i].c = cli[i];
        x[i].s = srv[i];
        x[i].seed = (unsigned)i * 7919u + 1;
        x[i].big = malloc(big_len);
        ck_assert_ptr_nonnull(x[i].big);
        memset(x[i].big, 0x33, big_len);
        x[i].rd.s = x[i].wr.s = srv[i];
        x[i].rd.kind = 'r';
        x[i].wr.kind = 'w';
        x[i].rd.ar = negstream_begin_read(srv[i], x[i].rd.buf, 16, 0, 16,
                                          count_cb, &x[i].rd, &e);
        ck_assert_ptr_nonnull(x[i].rd.ar);
        x[i].wr.ar = negstream_begin_write(srv[i], x[i].big, big_len, 0,
                                           (ssize_t)big_len, count_cb,
                                           &x[i].wr, &e);
        ck_assert_ptr_nonnull(x[i].wr.ar);
    }
    for (i = 0; i < RACE_PAIRS; i++) {
        ck_assert_int_eq(pthread_create(&x[i].t[0], NULL, race_data, &x[i]),
                         0);
        ck_assert_int_eq(pthread_create(&x[i].t[1], NULL, race_cancel,
                                        &x[i]), 0);
        ck_assert_int_eq(pthread_create(&x[i].t[2], NULL, race_close,
                                        &x[i]), 0);
    }
    for (i = 0; i < RACE_PAIRS; i++) {
        for (j = 0; j < 3; j++)
            pthread_join(x[i].t[j], NULL);
        wait_ended(&x[i].rd, 1);
        wait_ended(&x[i].wr, 1);
        x[i].rd.n = negstream_end_read(srv[i], x[i].rd.ar, &x[i].rd.e);
        x[i].wr.n = negstream_end_write(srv[i], x[i].wr.ar, &x[i].wr.e);
        usleep(1000);
        ck_assert_int_eq(atomic_load(&x[i].rd.calls), 1);
        ck_assert_int_eq(atomic_load(&x[i].wr.calls), 1);
        ck_assert(x[i].rd.n == 4 || x[i].rd.e.code == NEGSTREAM_E_CANCELED
                  || x[i].rd.e.code == NEGSTREAM_E_DISPOSED);
        ck_assert(x[i].wr.n == 0 || x[i].wr.e.code == NEGSTREAM_E_CANCELED
                  || x[i].wr.e.code == NEGSTREAM_E_DISPOSED
                  || x[i].wr.e.code == NEGSTREAM_E_IO);
        negstream_close(x[i].c);
        free(x[i].big);
    }
    negstream_pool_free(p);
    free(x);
}
END_TEST

/* ---- pool_free and fork with parked operations ------------------------- */

typedef struct pool_freer {
    negstream_pool *p;
    atomic_int      done;
} pool_freer;

static void *pool_free_main(void *arg)
{
    pool_freer *f = arg;

    negstream_pool_free(f->p);
    atomic_store(&f->done, 1);
    return NULL;
}

/*
 * negstream_pool_free with 50 parked reads, a parked write and a parked
 * handshake completes each once (DISPOSED) and returns; the streams can
 * still be closed afterwards.
 */
START_TEST(test_pool_free_parked)
{
    enum { N = 50 };
    negstream *cli[N], *srv[N], *hs;
    rec rd[N], wr, ha;
    negstream_error e;
    pool_freer f;
    pthread_t t;
    uint8_t *big;
    const size_t big_len = 8u << 20;
    int fds[2], left = GUARD_MS;
    size_t i;

    need_fds(4 * N + 64);
    memset(&f, 0, sizeof(f));
    f.p = negstream_pool_new(2, 2, &e);
    ck_assert_ptr_nonnull(f.p);
    bulk_pairs(N, f.p, cli, srv);
    memset(rd, 0, sizeof(rd));
    for (i = 0; i < N; i++) {
        rd[i].s = srv[i];
        rd[i].kind = 'r';
        ck_assert_ptr_nonnull(negstream_begin_read(srv[i], rd[i].buf, 16, 0,
                                                   16, rec_cb, &rd[i], &e));
    }
    big = malloc(big_len);
    ck_assert_ptr_nonnull(big);
    memset(big, 7, big_len);
    /* A write parked on a full socket: srv[0] writes to cli[0], which
     * reads nothing. */
    memset(&wr, 0, sizeof(wr));
    wr.s = srv[0];
    wr.kind = 'w';
    ck_assert_ptr_nonnull(negstream_begin_write(srv[0], big, big_len, 0,
                                                (ssize_t)big_len, rec_cb,
                                                &wr, &e));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds),
                     0);
    hs = negstream_new(fds[1], false, &e);
    ck_assert_int_eq(negstream_set_pool(hs, f.p, &e), 0);
    memset(&ha, 0, sizeof(ha));
    ha.s = hs;
    ha.kind = 'S';
    ck_assert_ptr_nonnull(negstream_begin_authenticate_as_server(
        hs, NULL, rec_cb, &ha, &e));
    usleep(100 * 1000);
    ck_assert_int_eq(pthread_create(&t, NULL, pool_free_main, &f), 0);
    while (!atomic_load(&f.done) && left-- > 0)
        usleep(1000);
    ck_assert_msg(atomic_load(&f.done), "negstream_pool_free hangs");
    pthread_join(t, NULL);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(atomic_load(&rd[i].calls), 1);
        ck_assert_int_eq(rd[i].e.code, NEGSTREAM_E_DISPOSED);
    }
    ck_assert_int_eq(atomic_load(&wr.calls), 1);
    ck_assert_int_eq(wr.e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(atomic_load(&ha.calls), 1);
    ck_assert_int_eq(ha.e.code, NEGSTREAM_E_DISPOSED);
    close_all(cli, N);
    close_all(srv, N);
    negstream_close(hs);
    close(fds[0]);
    free(big);
}
END_TEST

/*
 * fork with reads parked on a pool: the child uses the same pool for new
 * streams (its workers and poller start again); the parent's parked reads
 * complete when their peers speak.
 */
START_TEST(test_fork_parked)
{
    enum { N = 8 };
    negstream *cli[N], *srv[N];
    rec rd[N];
    negstream_pool *p;
    negstream_error e;
    pid_t pid;
    int status;
    size_t i;

    p = negstream_pool_new(1, 2, &e);
    ck_assert_ptr_nonnull(p);
    bulk_pairs(N, p, cli, srv);
    memset(rd, 0, sizeof(rd));
    for (i = 0; i < N; i++) {
        rd[i].s = srv[i];
        rd[i].kind = 'r';
        ck_assert_ptr_nonnull(negstream_begin_read(srv[i], rd[i].buf, 16, 0,
                                                   16, rec_cb, &rd[i], &e));
    }
    usleep(50 * 1000);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        negstream *cc, *cs;
        negstream_async *ar;
        char buf[5];
        negstream_error ce;

        if (UNDER_TSAN)
            _exit(0);   /* TSan cannot start threads after this fork */
        bulk_pairs(1, p, &cc, &cs);
        ar = negstream_begin_read(cs, buf, 5, 0, 5, NULL, NULL, &ce);
        if (ar == NULL)
            _exit(2);
        if (negstream_write(cc, "child", 5, 0, 5, &ce) != 5)
            _exit(3);
        if (negstream_end_read(cs, ar, &ce) != 5 ||
            memcmp(buf, "child", 5) != 0)
            _exit(4);
        negstream_close(cc);
        negstream_close(cs);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    for (i = 0; i < N; i++)
        tu_write_all(cli[i], "hi", 2);
    wait_ended(rd, N);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(rd[i].n, 2);
        ck_assert_mem_eq(rd[i].buf, "hi", 2);
    }
    close_all(cli, N);
    close_all(srv, N);
    negstream_pool_free(p);
}
END_TEST

/* ---- a stream that is not a socket --------------------------------------- */

/* A raw pseudo-terminal pair: a bidirectional fd that is not a socket, so
 * every byte goes through the poll-then-read/write path, and the tty's
 * small buffer makes a large write park again and again. */
static void pty_pair(int fds[2])
{
    struct termios t;
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);

    ck_assert_int_ge(m, 0);
    ck_assert_int_eq(grantpt(m), 0);
    ck_assert_int_eq(unlockpt(m), 0);
    fds[1] = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC);
    ck_assert_int_ge(fds[1], 0);
    ck_assert_int_eq(tcgetattr(fds[1], &t), 0);
    cfmakeraw(&t);
    ck_assert_int_eq(tcsetattr(fds[1], TCSANOW, &t), 0);
    ck_assert_int_eq(tcgetattr(m, &t), 0);
    cfmakeraw(&t);
    ck_assert_int_eq(tcsetattr(m, TCSANOW, &t), 0);
    fds[0] = m;
}

START_TEST(test_pty_parked_read_and_write)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream *c, *s;
    negstream_error ce, se;
    rec rd, wr;
    uint8_t *big, *back;
    const size_t big_len = 1u << 20;
    int fds[2];

    pty_pair(fds);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = "kerberos";
    negstream_server_options_init(&so);
    ck_assert_msg(tu_auth_fds(fds[0], fds[1], false, &co, &so, &c, &s, &ce,
                              &se), "authentication over a pty: %s / %s",
                  ce.message, se.message);
    /* A read parked on a tty. */
    memset(&rd, 0, sizeof(rd));
    rd.s = s;
    rd.kind = 'r';
    ck_assert_ptr_nonnull(negstream_begin_read(s, rd.buf, 16, 0, 16, rec_cb,
                                               &rd, &se));
    usleep(50 * 1000);
    ck_assert_int_eq(atomic_load(&rd.calls), 0);
    tu_write_all(c, "tty!", 4);
    wait_ended(&rd, 1);
    ck_assert_int_eq(rd.n, 4);
    ck_assert_mem_eq(rd.buf, "tty!", 4);
    /* A large write that parks on the full tty while the reader drains. */
    big = malloc(big_len);
    back = malloc(big_len);
    ck_assert_ptr_nonnull(big);
    ck_assert_ptr_nonnull(back);
    tu_fill(big, big_len, 9);
    memset(&wr, 0, sizeof(wr));
    wr.s = s;
    wr.kind = 'w';
    ck_assert_ptr_nonnull(negstream_begin_write(s, big, big_len, 0,
                                                (ssize_t)big_len, rec_cb,
                                                &wr, &se));
    tu_read_all(c, back, big_len);
    wait_ended(&wr, 1);
    ck_assert_int_eq(wr.n, 0);
    ck_assert_mem_eq(back, big, big_len);
    negstream_close(c);
    negstream_close(s);
    free(big);
    free(back);
}
END_TEST

static Suite *parked_suite(void)
{
    Suite *su = suite_create("parked");
    TCase *t = tcase_create("parked");
    TCase *heavy = tcase_create("heavy");

    tcase_set_timeout(t, 300);
    tcase_set_timeout(heavy, 900);
    tcase_add_loop_test(t, test_trickle_auth_deadline, 0, 2);
    tcase_add_loop_test(t, test_trickle_read_deadline, 0, 2);
    tcase_add_test(t, test_default_timeouts);
    tcase_add_loop_test(t, test_cancel_close_parked, 0, 8);
    tcase_add_test(t, test_fork_parked);
    tcase_add_test(t, test_pty_parked_read_and_write);
    tcase_add_test(t, test_pool_free_parked);
    tcase_add_test(heavy, test_server_first_request_response);
    tcase_add_test(heavy, test_hostile_handshakes);
    tcase_add_test(heavy, test_race_parked_exactly_once);
    tcase_add_test(heavy, test_idle_readers_small_pool);
    suite_add_tcase(su, t);
    suite_add_tcase(su, heavy);
    return su;
}

int main(void)
{
    SRunner *sr = srunner_create(parked_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
