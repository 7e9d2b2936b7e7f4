/*
 * check_poller.c - the poller (src/poller.c) through its internal API, with
 * fake jobs on socketpairs and pipes: readiness, deadlines, disarm, two
 * slots on one fd, POLLHUP/POLLERR, 2000 fds at once, the heap's order,
 * shutdown through negstream_pool_free, re-arming from a job, fork.
 *
 * Built twice (Makefile.am): tests/check_poller with the library's backend
 * (epoll on Linux) and tests/check_poller_poll from the same sources with
 * NEGSTREAM_POLLER_FORCE_POLL and NEGSTREAM_WAKE_FORCE_PIPE (poll() and
 * a wake-up pipe); test_backend checks which one runs.
 *
 * No KDC.  Waits have a generous guard (a hang fails the test rather than
 * Check's timeout); nothing asserts on elapsed time except that a deadline
 * never fires early, and a CPU bound that catches a busy loop.  "Not fired
 * yet" is checked after a short sleep: such a check cannot fail by chance,
 * only miss a bug, and each is paired with a deterministic check where one
 * exists.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "negstream.h"
#include "poller.h"
#include "pool.h"
#include "util.h"

/* As in check_pool.c: under TSan a forked child of a threaded process
 * cannot start threads, so the child checks everything but that. */
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

#define GUARD_MS  10000     /* "never happened": a failure, not a bound */
#define NOT_YET_MS  100     /* how long "not fired yet" is watched */
#define MAXORDER   4096

/* ---- fake jobs ---------------------------------------------------------- */

typedef struct tctx {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             total;          /* runs of every job */
    bool            gate_open;
    int             order[MAXORDER];
    int             norder;
} tctx;

typedef struct pjob pjob;
struct pjob {
    negstream__job     job;         /* first: a job pointer is a pjob's */
    tctx              *c;
    int                id;
    negstream__pollfd *pfd;
    int                slot;
    bool               gated;       /* waits for c->gate_open */
    void             (*hook)(pjob *j);
    /* under c->mu */
    int                runs;
    int                fired;       /* why, as the last run saw it */
    int64_t            ran_at;
    /* for hooks */
    negstream_pool    *pool;
    negstream__poller *poller;
    int                fd;
    int                want;
    int                result, result2;
};

static void pjob_run(negstream__job *job)
{
    pjob *j = (pjob *)job;
    tctx *c = j->c;
    int fired = negstream__pollfd_fired(j->pfd, j->slot);
    int64_t now = negstream__mono_ms();

    pthread_mutex_lock(&c->mu);
    while (j->gated && !c->gate_open)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    if (j->hook != NULL)
        j->hook(j);
    /* Counted after the hook, so that a test that sees the run also sees
     * what the hook did (a re-arm). */
    pthread_mutex_lock(&c->mu);
    j->runs++;
    j->fired = fired;
    j->ran_at = now;
    if (c->norder < MAXORDER)
        c->order[c->norder++] = j->id;
    c->total++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void ctx_init(tctx *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
}

static void ctx_destroy(tctx *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

static void pjob_init(pjob *j, tctx *c, int id, negstream__pollfd *pfd,
                      int slot)
{
    memset(j, 0, sizeof(*j));
    j->job.run = pjob_run;
    j->c = c;
    j->id = id;
    j->pfd = pfd;
    j->slot = slot;
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

/* Waits (up to GUARD_MS) until *field >= n; returns the success. */
static bool wait_ge(tctx *c, const int *field, int n)
{
    struct timespec dl;
    bool ok;

    deadline_in(&dl, GUARD_MS);
    pthread_mutex_lock(&c->mu);
    while (*field < n)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    ok = *field >= n;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static int get(tctx *c, const int *field)
{
    int v;

    pthread_mutex_lock(&c->mu);
    v = *field;
    pthread_mutex_unlock(&c->mu);
    return v;
}

static void open_gate(tctx *c)
{
    pthread_mutex_lock(&c->mu);
    c->gate_open = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Threads of this process (Linux); -1 if it cannot tell. */
static int os_threads(void)
{
#ifdef __linux__
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
#else
    return -1;
#endif
}

static void *no_op_thread(void *arg)
{
    return arg;
}

/* The thread count before a test's pools exist (after TSan's own
 * background thread, started at the first pthread_create). */
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
    for (waited = 0; waited < GUARD_MS; waited += 5) {
        if (os_threads() == n)
            return true;
        sleep_ms(5);
    }
    return os_threads() == n;
}

/* ---- fds and the poller ------------------------------------------------- */

static void nonblock(int fd)
{
    ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

static void sockpair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                     0);
    nonblock(sv[0]);
    nonblock(sv[1]);
}

static void pipepair(int pv[2])
{
    ck_assert_int_eq(pipe(pv), 0);
    nonblock(pv[0]);
    nonblock(pv[1]);
}

static void put(int fd, const char *s)
{
    ck_assert_int_eq(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Writes until the fd is full (EAGAIN); returns the byte count. */
static size_t fill(int fd)
{
    static char buf[65536];
    size_t total = 0;
    ssize_t n;

    for (;;) {
        n = write(fd, buf, sizeof(buf));
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        ck_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        return total;
    }
}

/* Reads until empty (EAGAIN) or EOF. */
static size_t drain(int fd)
{
    static char buf[65536];
    size_t total = 0;
    ssize_t n;

    while ((n = read(fd, buf, sizeof(buf))) > 0)
        total += (size_t)n;
    return total;
}

static negstream_pool *new_pool(unsigned min, unsigned max)
{
    negstream_error e;
    negstream_pool *p = negstream_pool_new(min, max, &e);

    ck_assert_msg(p != NULL, "pool: %s", e.message);
    return p;
}

static negstream__poller *poller_of(negstream_pool *pool)
{
    negstream_error e;
    negstream__poller *p = negstream__pool_poller(pool, &e);

    ck_assert_msg(p != NULL, "poller: %s", e.message);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert_ptr_eq(negstream__pool_poller(pool, NULL), p);   /* one */
    return p;
}

static void arm_ok(negstream__poller *p, pjob *j, short events,
                   int64_t deadline)
{
    negstream_error e;

    ck_assert_msg(negstream__poller_arm(p, j->pfd, j->slot, events,
                                        deadline, &j->job, &e) == 0,
                  "arm fd %d slot %d: %s", j->pfd->fd, j->slot, e.message);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(test_backend)
{
    const char *b = negstream__poller_backend();

#if defined(NEGSTREAM_POLLER_FORCE_POLL)
    ck_assert_str_eq(b, "poll+pipe");
#elif defined(HAVE_EPOLL) && defined(HAVE_EVENTFD)
    ck_assert_str_eq(b, "epoll+eventfd");
#elif defined(HAVE_EPOLL)
    ck_assert_str_eq(b, "epoll+pipe");
#else
    ck_assert(strncmp(b, "poll+", 5) == 0);
#endif
}
END_TEST

/* A watch fires READY when data arrives, not before; the fd is not read by
 * the poller (the data is still there for the job). */
START_TEST(test_ready_on_data)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd;
    pjob j;
    tctx c;
    int sv[2];

    ctx_init(&c);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);
    ck_assert_int_eq(negstream__pollfd_fired(&pfd, 0), NEGSTREAM__FIRE_NONE);
    pjob_init(&j, &c, 1, &pfd, NEGSTREAM__SLOT_READ);
    arm_ok(p, &j, POLLIN, -1);
    ck_assert_uint_eq(negstream__poller_armed(p), 1);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &j.runs), 0);
    put(sv[1], "x");
    ck_assert_msg(wait_ge(&c, &j.runs, 1), "data arrived, no fire");
    ck_assert_int_eq(j.fired, NEGSTREAM__FIRE_READY);
    ck_assert_uint_eq(negstream__poller_armed(p), 0);
    ck_assert_uint_eq(drain(sv[0]), 1);
    /* Fired once only, although the fd stayed readable for a while. */
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &j.runs), 1);
    negstream__poller_forget(&pfd);
    negstream__poller_forget(&pfd);         /* twice: nothing */
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* POLLOUT on a full socket fires when the peer drains it. */
START_TEST(test_pollout_when_drained)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd;
    pjob j;
    tctx c;
    int sv[2];

    ctx_init(&c);
    sockpair(sv);
    ck_assert_uint_gt(fill(sv[0]), 0);
    negstream__pollfd_init(&pfd, sv[0]);
    pjob_init(&j, &c, 1, &pfd, NEGSTREAM__SLOT_WRITE);
    arm_ok(p, &j, POLLOUT, -1);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &j.runs), 0);
    ck_assert_uint_gt(drain(sv[1]), 0);
    ck_assert_msg(wait_ge(&c, &j.runs, 1), "peer drained, no fire");
    ck_assert_int_eq(j.fired, NEGSTREAM__FIRE_READY);
    negstream__poller_forget(&pfd);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* A deadline fires TIMEOUT, never before it; readiness before the deadline
 * wins; a deadline already past fires at once without looking at the fd. */
START_TEST(test_deadline)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd, bad;
    pjob j, k, late;
    int64_t deadline;
    tctx c;
    int sv[2];

    ctx_init(&c);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);
    pjob_init(&j, &c, 1, &pfd, NEGSTREAM__SLOT_READ);
    deadline = negstream__mono_ms() + 150;
    arm_ok(p, &j, POLLIN, deadline);
    ck_assert_msg(wait_ge(&c, &j.runs, 1), "no TIMEOUT");
    ck_assert_int_eq(j.fired, NEGSTREAM__FIRE_TIMEOUT);
    ck_assert_msg(j.ran_at >= deadline, "fired %lld ms early",
                  (long long)(deadline - j.ran_at));
    ck_assert_uint_eq(negstream__poller_armed(p), 0);

    /* Re-armed on the same slot: data well before the deadline. */
    pjob_init(&k, &c, 2, &pfd, NEGSTREAM__SLOT_READ);
    arm_ok(p, &k, POLLIN, negstream__mono_ms() + 60000);
    put(sv[1], "x");
    ck_assert(wait_ge(&c, &k.runs, 1));
    ck_assert_int_eq(k.fired, NEGSTREAM__FIRE_READY);
    ck_assert_uint_eq(negstream__poller_armed(p), 0);

    /* Past deadlines (and "now"): TIMEOUT at once, even on a bad fd,
     * with nothing left armed. */
    negstream__pollfd_init(&bad, -1);
    pjob_init(&late, &c, 3, &bad, NEGSTREAM__SLOT_WRITE);
    arm_ok(p, &late, POLLOUT, negstream__mono_ms() - 1);
    ck_assert(wait_ge(&c, &late.runs, 1));
    ck_assert_int_eq(late.fired, NEGSTREAM__FIRE_TIMEOUT);
    arm_ok(p, &late, POLLOUT, 0);
    ck_assert(wait_ge(&c, &late.runs, 2));
    ck_assert_int_eq(late.fired, NEGSTREAM__FIRE_TIMEOUT);
    ck_assert_uint_eq(negstream__poller_armed(p), 0);
    ck_assert(!negstream__poller_disarm(p, &bad, NEGSTREAM__SLOT_WRITE));
    negstream__poller_forget(&bad);     /* never registered */

    negstream__poller_forget(&pfd);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* Deadlines come out of the heap in order, whatever the order of arming,
 * and disarmed ones (taken from the middle of the heap) never fire.  One
 * worker, so the run order is the firing order. */
START_TEST(test_deadline_order)
{
    enum { NFD = 100, N = 2 * NFD, NDIS = 50, STEP = 3 };
    static negstream__pollfd pfd[NFD];
    static pjob jobs[N];
    static int sv[NFD][2], perm[N];
    static bool disarmed[N];
    negstream_pool *pool = new_pool(1, 1);
    negstream__poller *p = poller_of(pool);
    int64_t base;
    unsigned seed = (unsigned)time(NULL);
    int i, k, t, prev, ran = 0;
    tctx c;

    ctx_init(&c);
    srand(seed);
    for (i = 0; i < NFD; i++) {
        sockpair(sv[i]);
        negstream__pollfd_init(&pfd[i], sv[i][0]);
    }
    for (i = 0; i < N; i++)
        perm[i] = i;
    for (i = N - 1; i > 0; i--) {
        k = rand() % (i + 1);
        t = perm[i], perm[i] = perm[k], perm[k] = t;
    }
    /* Watch id fires at base + id * STEP; armed in random order, on both
     * slots of each fd (never ready: POLLIN, nothing is sent). */
    base = negstream__mono_ms() + 3000;
    for (i = 0; i < N; i++) {
        k = perm[i];
        pjob_init(&jobs[k], &c, k, &pfd[k / 2], k % 2);
        arm_ok(p, &jobs[k], POLLIN, base + (int64_t)k * STEP);
    }
    ck_assert_uint_eq(negstream__poller_armed(p), N);
    for (i = 0; i < NDIS; i++) {
        k = rand() % N;
        ck_assert_msg(negstream__poller_disarm(p, jobs[k].pfd, jobs[k].slot)
                      == !disarmed[k], "seed %u: disarm %d", seed, k);
        disarmed[k] = true;
    }
    for (i = 0; i < N; i++)
        ran += !disarmed[i];
    ck_assert_msg(negstream__mono_ms() < base, "arming took over 3 s: the "
                  "machine is too slow for this test's premise");
    ck_assert_uint_eq(negstream__poller_armed(p), (unsigned)ran);
    ck_assert_msg(wait_ge(&c, &c.total, ran), "seed %u: %d of %d fired",
                  seed, get(&c, &c.total), ran);
    ck_assert_int_eq(c.norder, ran);
    for (i = 0, prev = -1; i < c.norder; i++) {
        k = c.order[i];
        ck_assert_msg(!disarmed[k], "seed %u: disarmed %d fired", seed, k);
        ck_assert_msg(k > prev, "seed %u: %d fired after %d", seed, k,
                      prev);
        ck_assert_int_eq(jobs[k].runs, 1);
        ck_assert_int_eq(jobs[k].fired, NEGSTREAM__FIRE_TIMEOUT);
        ck_assert(jobs[k].ran_at >= base + (int64_t)k * STEP);
        prev = k;
    }
    ck_assert_uint_eq(negstream__poller_armed(p), 0);
    for (i = 0; i < NFD; i++) {
        negstream__poller_forget(&pfd[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* Disarm before firing: true, once; the job never runs, although the fd
 * became ready (shown by a second watch on the same fd that does fire). */
START_TEST(test_disarm_before_fire)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd;
    pjob j, probe;
    tctx c;
    int sv[2];

    ctx_init(&c);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);
    pjob_init(&j, &c, 1, &pfd, NEGSTREAM__SLOT_READ);
    arm_ok(p, &j, POLLIN, negstream__mono_ms() + 60000);
    ck_assert(negstream__poller_disarm(p, &pfd, NEGSTREAM__SLOT_READ));
    ck_assert(!negstream__poller_disarm(p, &pfd, NEGSTREAM__SLOT_READ));
    ck_assert(!negstream__poller_disarm(p, &pfd, NEGSTREAM__SLOT_WRITE));
    ck_assert_uint_eq(negstream__poller_armed(p), 0);
    put(sv[1], "x");
    pjob_init(&probe, &c, 2, &pfd, NEGSTREAM__SLOT_WRITE);
    arm_ok(p, &probe, POLLIN, -1);
    ck_assert(wait_ge(&c, &probe.runs, 1));
    ck_assert_int_eq(probe.fired, NEGSTREAM__FIRE_READY);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &j.runs), 0);
    ck_assert_int_eq(negstream__pollfd_fired(&pfd, NEGSTREAM__SLOT_READ),
                     NEGSTREAM__FIRE_NONE);

    /* The slot can be armed again after a disarm; the data is there. */
    arm_ok(p, &j, POLLIN, -1);
    ck_assert(wait_ge(&c, &j.runs, 1));
    ck_assert_int_eq(j.fired, NEGSTREAM__FIRE_READY);
    negstream__poller_forget(&pfd);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* Disarm, ready, re-arm in a loop: with epoll the lazy kernel mask either
 * still holds (no system call) or was consumed by a dropped event; either
 * way the new watch must fire. */
START_TEST(test_rearm_after_disarm)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd;
    pjob j;
    tctx c;
    int sv[2], i;

    ctx_init(&c);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);
    pjob_init(&j, &c, 1, &pfd, NEGSTREAM__SLOT_READ);
    for (i = 0; i < 20; i++) {
        arm_ok(p, &j, POLLIN, -1);
        ck_assert(negstream__poller_disarm(p, &pfd, NEGSTREAM__SLOT_READ));
        arm_ok(p, &j, POLLIN, -1);             /* same mask */
        ck_assert(negstream__poller_disarm(p, &pfd, NEGSTREAM__SLOT_READ));
        put(sv[1], "x");
        if (i % 2 == 0)
            sleep_ms(10);       /* let the poller see (and drop) it */
        arm_ok(p, &j, POLLIN, -1);
        ck_assert_msg(wait_ge(&c, &j.runs, i + 1), "round %d", i);
        ck_assert_int_eq(j.fired, NEGSTREAM__FIRE_READY);
        ck_assert_uint_eq(drain(sv[0]), 1);
    }
    negstream__poller_forget(&pfd);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* Disarm after firing: false, and the job runs exactly once.  The only
 * worker is held by a gated job, so the fired job waits in the queue while
 * the disarm happens. */
START_TEST(test_disarm_after_fire)
{
    negstream_pool *pool = new_pool(1, 1);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd;
    negstream_error e;
    pjob gate, j;
    tctx c;
    int sv[2], waited;

    ctx_init(&c);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);
    pjob_init(&gate, &c, 0, &pfd, NEGSTREAM__SLOT_WRITE);
    gate.gated = true;
    ck_assert_int_eq(negstream__pool_submit(pool, &gate.job, &e), 0);
    pjob_init(&j, &c, 1, &pfd, NEGSTREAM__SLOT_READ);
    arm_ok(p, &j, POLLIN, -1);
    put(sv[1], "x");
    for (waited = 0; negstream__poller_armed(p) != 0 && waited < GUARD_MS;
         waited += 5)
        sleep_ms(5);
    ck_assert_uint_eq(negstream__poller_armed(p), 0);
    ck_assert(!negstream__poller_disarm(p, &pfd, NEGSTREAM__SLOT_READ));
    ck_assert_int_eq(get(&c, &j.runs), 0);      /* queued behind gate */
    open_gate(&c);
    ck_assert(wait_ge(&c, &j.runs, 1));
    ck_assert_int_eq(j.fired, NEGSTREAM__FIRE_READY);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &j.runs), 1);
    ck_assert_int_eq(gate.runs, 1);
    negstream__poller_forget(&pfd);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* Both slots of one fd: the same events (both fire), and different ones
 * (each fires on its own, and the one left armed stays watched). */
START_TEST(test_two_slots)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd;
    pjob r, w;
    tctx c;
    int sv[2];

    ctx_init(&c);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);

    /* Same events. */
    pjob_init(&r, &c, 1, &pfd, NEGSTREAM__SLOT_READ);
    pjob_init(&w, &c, 2, &pfd, NEGSTREAM__SLOT_WRITE);
    arm_ok(p, &r, POLLIN, -1);
    arm_ok(p, &w, POLLIN, -1);
    ck_assert_uint_eq(negstream__poller_armed(p), 2);
    put(sv[1], "x");
    ck_assert(wait_ge(&c, &r.runs, 1));
    ck_assert(wait_ge(&c, &w.runs, 1));
    ck_assert_int_eq(r.fired, NEGSTREAM__FIRE_READY);
    ck_assert_int_eq(w.fired, NEGSTREAM__FIRE_READY);
    ck_assert_uint_eq(drain(sv[0]), 1);

    /* Different events: the socket is writable, not readable. */
    arm_ok(p, &r, POLLIN, -1);
    arm_ok(p, &w, POLLOUT, -1);
    ck_assert(wait_ge(&c, &w.runs, 2));
    ck_assert_int_eq(w.fired, NEGSTREAM__FIRE_READY);
    ck_assert_uint_eq(negstream__poller_armed(p), 1);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &r.runs), 1);
    put(sv[1], "y");
    ck_assert_msg(wait_ge(&c, &r.runs, 2), "the read slot was lost when "
                  "the write slot fired");
    ck_assert_int_eq(r.fired, NEGSTREAM__FIRE_READY);
    ck_assert_uint_eq(drain(sv[0]), 1);

    /* The other way round: the write slot waits on a full socket while
     * the read slot fires. */
    ck_assert_uint_gt(fill(sv[0]), 0);
    arm_ok(p, &w, POLLOUT, -1);
    arm_ok(p, &r, POLLIN, -1);
    put(sv[1], "z");
    ck_assert(wait_ge(&c, &r.runs, 3));
    ck_assert_uint_eq(drain(sv[0]), 1);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &w.runs), 2);
    ck_assert_uint_gt(drain(sv[1]), 0);
    ck_assert(wait_ge(&c, &w.runs, 3));
    ck_assert_int_eq(w.fired, NEGSTREAM__FIRE_READY);

    /* One job cannot wait on both slots (it is chained once fired). */
    {
        negstream_error e;

        arm_ok(p, &r, POLLIN, -1);
        ck_assert_int_eq(negstream__poller_arm(p, &pfd, 1, POLLIN, -1,
                                               &r.job, &e), -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
        ck_assert(negstream__poller_disarm(p, &pfd, 0));
    }
    negstream__poller_forget(&pfd);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* POLLHUP and POLLERR fire every armed slot of the fd, even one whose own
 * events can never be ready (POLLOUT on a pipe's read end, POLLIN on its
 * write end). */
START_TEST(test_hup_fires_every_slot)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd rd, wr, so;
    pjob a, b, x, y, s1, s2;
    tctx c;
    int pv[2], pw[2], sv[2];

    ctx_init(&c);
    /* Read end: the writer closes -> POLLHUP. */
    pipepair(pv);
    negstream__pollfd_init(&rd, pv[0]);
    pjob_init(&a, &c, 1, &rd, 0);
    pjob_init(&b, &c, 2, &rd, 1);
    arm_ok(p, &a, POLLIN, -1);
    arm_ok(p, &b, POLLOUT, -1);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &c.total), 0);
    close(pv[1]);
    ck_assert(wait_ge(&c, &a.runs, 1));
    ck_assert(wait_ge(&c, &b.runs, 1));
    ck_assert_int_eq(a.fired, NEGSTREAM__FIRE_READY);
    ck_assert_int_eq(b.fired, NEGSTREAM__FIRE_READY);

    /* Write end of a full pipe: the reader closes -> POLLERR. */
    pipepair(pw);
    ck_assert_uint_gt(fill(pw[1]), 0);
    negstream__pollfd_init(&wr, pw[1]);
    pjob_init(&x, &c, 3, &wr, 0);
    pjob_init(&y, &c, 4, &wr, 1);
    arm_ok(p, &x, POLLIN, -1);
    arm_ok(p, &y, POLLOUT, -1);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &c.total), 2);
    close(pw[0]);
    ck_assert(wait_ge(&c, &x.runs, 1));
    ck_assert(wait_ge(&c, &y.runs, 1));

    /* A socket whose peer is gone: both slots, one of them on a full
     * send buffer. */
    sockpair(sv);
    ck_assert_uint_gt(fill(sv[0]), 0);
    negstream__pollfd_init(&so, sv[0]);
    pjob_init(&s1, &c, 5, &so, 0);
    pjob_init(&s2, &c, 6, &so, 1);
    arm_ok(p, &s2, POLLOUT, -1);
    arm_ok(p, &s1, POLLIN, -1);
    close(sv[1]);
    ck_assert(wait_ge(&c, &s1.runs, 1));
    ck_assert(wait_ge(&c, &s2.runs, 1));
    ck_assert_uint_eq(negstream__poller_armed(p), 0);

    negstream__poller_forget(&rd);
    negstream__poller_forget(&wr);
    negstream__poller_forget(&so);
    close(pv[0]);
    close(pw[1]);
    close(sv[0]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* A pipe pair (not a socket): both directions. */
START_TEST(test_pipe)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd rd, wr;
    pjob r, w;
    tctx c;
    int pv[2];

    ctx_init(&c);
    pipepair(pv);
    negstream__pollfd_init(&rd, pv[0]);
    negstream__pollfd_init(&wr, pv[1]);
    pjob_init(&r, &c, 1, &rd, NEGSTREAM__SLOT_READ);
    pjob_init(&w, &c, 2, &wr, NEGSTREAM__SLOT_WRITE);
    arm_ok(p, &r, POLLIN, -1);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &r.runs), 0);
    put(pv[1], "x");
    ck_assert(wait_ge(&c, &r.runs, 1));
    ck_assert_int_eq(r.fired, NEGSTREAM__FIRE_READY);
    ck_assert_uint_eq(drain(pv[0]), 1);

    ck_assert_uint_gt(fill(pv[1]), 0);
    arm_ok(p, &w, POLLOUT, -1);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &w.runs), 0);
    ck_assert_uint_gt(drain(pv[0]), 0);
    ck_assert(wait_ge(&c, &w.runs, 1));
    ck_assert_int_eq(w.fired, NEGSTREAM__FIRE_READY);
    negstream__poller_forget(&rd);
    negstream__poller_forget(&wr);
    close(pv[0]);
    close(pv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* Errors: NULLs, a bad slot or event mask, an armed slot, a regular file
 * and a closed fd (IO with nothing armed, both backends). */
START_TEST(test_arm_errors)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd, file, dead;
    negstream_error e;
    const char *tmp = getenv("TMPDIR");
    char path[512];
    pjob j;
    tctx c;
    int sv[2], fd;

    ctx_init(&c);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);
    pjob_init(&j, &c, 1, &pfd, 0);
    ck_assert_int_eq(negstream__poller_arm(NULL, &pfd, 0, POLLIN, -1, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream__poller_arm(p, NULL, 0, POLLIN, -1, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream__poller_arm(p, &pfd, 0, POLLIN, -1, NULL, &e),
                     -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream__poller_arm(p, &pfd, 2, POLLIN, -1, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(negstream__poller_arm(p, &pfd, -1, POLLIN, -1, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(negstream__poller_arm(p, &pfd, 0, 0, -1, &j.job, &e),
                     -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(negstream__poller_arm(p, &pfd, 0, POLLPRI, -1, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert(!negstream__poller_disarm(NULL, &pfd, 0));
    ck_assert(!negstream__poller_disarm(p, &pfd, 5));
    ck_assert_int_eq(negstream__pollfd_fired(&pfd, 7), NEGSTREAM__FIRE_NONE);

    arm_ok(p, &j, POLLIN, -1);
    ck_assert_int_eq(negstream__poller_arm(p, &pfd, 0, POLLOUT, -1, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_uint_eq(negstream__poller_armed(p), 1);
    ck_assert(negstream__poller_disarm(p, &pfd, 0));

    snprintf(path, sizeof(path), "%s/check_poller.XXXXXX",
             tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    negstream__pollfd_init(&file, fd);
    ck_assert_int_eq(negstream__poller_arm(p, &file, 0, POLLIN, -1, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_msg(strstr(e.message, "regular file") != NULL, "%s",
                  e.message);
    ck_assert(!file.registered);
    close(fd);

    negstream__pollfd_init(&dead, sv[1]);
    close(sv[1]);
    ck_assert_int_eq(negstream__poller_arm(p, &dead, 0, POLLIN,
                                           negstream__mono_ms() + 60000,
                                           &j.job, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, EBADF);
    ck_assert_uint_eq(negstream__poller_armed(p), 0);

    /* The pool's poller after negstream_pool_free has begun: DISPOSED
     * (tested from a SHUTDOWN job in test_pool_free_fires_shutdown). */
    ck_assert_ptr_null(negstream__pool_poller(NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    negstream__poller_forget(&pfd);
    close(sv[0]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* A forgotten fd's number can be reused by a new registration, which works
 * (no stale kernel registration, no stale event). */
START_TEST(test_forget_and_reuse)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd;
    pjob j;
    tctx c;
    int sv[2], first, i;

    ctx_init(&c);
    for (i = 0; i < 20; i++) {
        sockpair(sv);
        if (i == 0)
            first = sv[0];
        else
            ck_assert_int_eq(sv[0], first);  /* the same number again */
        negstream__pollfd_init(&pfd, sv[0]);
        pjob_init(&j, &c, i, &pfd, 0);
        arm_ok(p, &j, POLLIN, -1);
        if (i % 3 == 0) {
            put(sv[1], "x");        /* ready, then forgotten unfired */
            sleep_ms(1);
            if (!negstream__poller_disarm(p, &pfd, 0))
                ck_assert(wait_ge(&c, &j.runs, 1));
        } else {
            put(sv[1], "x");
            ck_assert_msg(wait_ge(&c, &j.runs, 1), "round %d", i);
            ck_assert_int_eq(j.fired, NEGSTREAM__FIRE_READY);
        }
        negstream__poller_forget(&pfd);
        ck_assert(!pfd.registered);
        close(sv[0]);
        close(sv[1]);
    }
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* A job that re-arms its own slot from inside its run: one byte per run. */
static void read_one_and_rearm(pjob *j)
{
    negstream_error e;
    char ch;

    if (read(j->fd, &ch, 1) != 1) {
        j->result = -1;
        return;
    }
    if (++j->result < j->want
        && negstream__poller_arm(j->poller, j->pfd, j->slot, POLLIN, -1,
                                 &j->job, &e) < 0)
        j->result2 = e.code;
}

START_TEST(test_rearm_from_job)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd pfd;
    pjob j;
    tctx c;
    int sv[2];

    ctx_init(&c);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);
    pjob_init(&j, &c, 1, &pfd, 0);
    j.hook = read_one_and_rearm;
    j.poller = p;
    j.fd = sv[0];
    j.want = 8;
    arm_ok(p, &j, POLLIN, -1);
    put(sv[1], "abcde");
    ck_assert(wait_ge(&c, &j.runs, 5));
    ck_assert_int_eq(j.result, 5);
    ck_assert_int_eq(j.result2, 0);
    ck_assert_uint_eq(negstream__poller_armed(p), 1);   /* re-armed */
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &j.runs), 5);
    put(sv[1], "fgh");
    ck_assert(wait_ge(&c, &j.runs, 8));
    ck_assert_int_eq(j.result, 8);
    ck_assert_uint_eq(negstream__poller_armed(p), 0);   /* wanted 8 */
    negstream__poller_forget(&pfd);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* 2000 socketpairs armed at once on a pool of 2 workers; 10 random ones
 * made ready: exactly those fire. */
START_TEST(test_many_fds)
{
    enum { N = 2000, READY = 10 };
    static negstream__pollfd pfd[N];
    static pjob jobs[N];
    static int sv[N][2];
    static bool chosen[N];
    negstream_pool *pool = new_pool(2, 2);
    negstream__poller *p = poller_of(pool);
    unsigned seed = (unsigned)time(NULL);
    int i, k, left;
    tctx c;

    ctx_init(&c);
    srand(seed);
    for (i = 0; i < N; i++) {
        sockpair(sv[i]);
        negstream__pollfd_init(&pfd[i], sv[i][0]);
        pjob_init(&jobs[i], &c, i, &pfd[i], NEGSTREAM__SLOT_READ);
        arm_ok(p, &jobs[i], POLLIN, -1);
    }
    ck_assert_uint_eq(negstream__poller_armed(p), N);
    for (i = 0; i < READY; i++) {
        do
            k = rand() % N;
        while (chosen[k]);
        chosen[k] = true;
        put(sv[k][1], "x");
    }
    ck_assert_msg(wait_ge(&c, &c.total, READY), "seed %u: %d of %d fired",
                  seed, get(&c, &c.total), READY);
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &c.total), READY);
    ck_assert_uint_eq(negstream__poller_armed(p), N - READY);
    for (i = 0, left = 0; i < N; i++) {
        ck_assert_int_eq(jobs[i].runs, chosen[i] ? 1 : 0);
        if (chosen[i])
            ck_assert_int_eq(jobs[i].fired, NEGSTREAM__FIRE_READY);
        ck_assert(negstream__poller_disarm(p, &pfd[i], 0) == !chosen[i]);
        left += !chosen[i];
    }
    ck_assert_int_eq(left, N - READY);
    ck_assert_uint_eq(negstream__poller_armed(p), 0);
    for (i = 0; i < N; i++) {
        negstream__poller_forget(&pfd[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* 1000 armed watches on idle fds: no busy loop. */
static double cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(test_idle_uses_no_cpu)
{
    enum { N = 1000 };
    static negstream__pollfd pfd[N];
    static pjob jobs[N];
    static int sv[N][2];
    negstream_pool *pool = new_pool(1, 1);
    negstream__poller *p = poller_of(pool);
    double t0, used;
    int i;
    tctx c;

    ctx_init(&c);
    for (i = 0; i < N; i++) {
        sockpair(sv[i]);
        negstream__pollfd_init(&pfd[i], sv[i][0]);
        pjob_init(&jobs[i], &c, i, &pfd[i], NEGSTREAM__SLOT_READ);
        arm_ok(p, &jobs[i], POLLIN, -1);
    }
    sleep_ms(50);
    t0 = cpu_ms();
    sleep_ms(300);
    used = cpu_ms() - t0;
    /* A correctness bound (no busy loop), far above the real figure. */
    ck_assert_msg(used < 30.0, "%d idle watches used %.1f ms of CPU in "
                  "300 ms", N, used);
    ck_assert_int_eq(get(&c, &c.total), 0);
    for (i = 0; i < N; i++) {
        ck_assert(negstream__poller_disarm(p, &pfd[i], 0));
        negstream__poller_forget(&pfd[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* negstream_pool_free with 100 armed watches (half with a far deadline):
 * each fires SHUTDOWN exactly once, its job runs before the free returns
 * (on workers started again: the pool had shrunk to none), and from there
 * the pool's poller and an arm are DISPOSED. */
static void after_shutdown(pjob *j)
{
    negstream_error e;

    j->result = negstream__pool_poller(j->pool, &e) == NULL ? (int)e.code
                                                            : -1;
    j->result2 = negstream__poller_arm(j->poller, j->pfd, j->slot, POLLIN,
                                       -1, &j->job, &e) < 0 ? (int)e.code
                                                            : -1;
}

START_TEST(test_pool_free_fires_shutdown)
{
    enum { N = 100 };
    static negstream__pollfd pfd[N];
    static pjob jobs[N];
    static int sv[N][2];
    negstream_pool *pool = new_pool(0, 2);
    negstream__poller *p = poller_of(pool);
    int i;
    tctx c;

    ctx_init(&c);
    /* Reads on silent sockets, writes on full ones: nothing is ready. */
    for (i = 0; i < N; i++) {
        sockpair(sv[i]);
        if (i % 2 == 1)
            ck_assert_uint_gt(fill(sv[i][0]), 0);
        negstream__pollfd_init(&pfd[i], sv[i][0]);
        pjob_init(&jobs[i], &c, i, &pfd[i], i % 2);
        jobs[i].hook = after_shutdown;
        jobs[i].pool = pool;
        jobs[i].poller = p;
        arm_ok(p, &jobs[i], i % 2 ? POLLOUT : POLLIN,
               i % 4 < 2 ? -1 : negstream__mono_ms() + 60000);
    }
    sleep_ms(NOT_YET_MS);
    ck_assert_int_eq(get(&c, &c.total), 0);
    ck_assert_uint_eq(negstream__poller_armed(p), N);
    /* min 0 and nothing ever ran: no worker; the free must start some
     * (or run the jobs itself). */
    ck_assert_uint_eq(negstream__pool_threads(pool), 0);

    negstream_pool_free(pool);      /* must return: nothing is ready */
    ck_assert_int_eq(c.total, N);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(jobs[i].runs, 1);
        ck_assert_int_eq(jobs[i].fired, NEGSTREAM__FIRE_SHUTDOWN);
        ck_assert_int_eq(jobs[i].result, NEGSTREAM_E_DISPOSED);
        ck_assert_int_eq(jobs[i].result2, NEGSTREAM_E_DISPOSED);
    }
    ck_assert_uint_eq(negstream__poller_armed(p), 0);
    /* The poller outlives its pool until its last fd is forgotten. */
    ck_assert(!negstream__poller_disarm(p, &pfd[0], 0));
    for (i = 0; i < N; i++) {
        negstream__poller_forget(&pfd[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
    ctx_destroy(&c);
}
END_TEST

/* negstream_pool_free from one of the pool's own workers, with parked
 * watches: they fire SHUTDOWN, run, and the pool frees itself. */
static void free_own_pool(pjob *j)
{
    negstream_pool_free(j->pool);
}

START_TEST(test_pool_free_from_worker)
{
    enum { N = 10 };
    static negstream__pollfd pfd[N];
    static pjob jobs[N];
    static int sv[N][2];
    int base = base_threads();
    negstream_pool *pool = new_pool(1, 1);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd none;
    negstream_error e;
    pjob freer;
    int i;
    tctx c;

    ctx_init(&c);
    for (i = 0; i < N; i++) {
        sockpair(sv[i]);
        negstream__pollfd_init(&pfd[i], sv[i][0]);
        pjob_init(&jobs[i], &c, i, &pfd[i], 0);
        arm_ok(p, &jobs[i], POLLIN, -1);
    }
    negstream__pollfd_init(&none, -1);
    pjob_init(&freer, &c, 100, &none, 0);
    freer.hook = free_own_pool;
    freer.pool = pool;
    ck_assert_int_eq(negstream__pool_submit(pool, &freer.job, &e), 0);
    ck_assert(wait_ge(&c, &c.total, N + 1));
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(jobs[i].runs, 1);
        ck_assert_int_eq(jobs[i].fired, NEGSTREAM__FIRE_SHUTDOWN);
    }
    /* The worker and the poller thread are gone: the last worker out
     * freed the pool. */
    ck_assert_msg(os_threads_become(base), "%d threads, %d before",
                  os_threads(), base);
    for (i = 0; i < N; i++) {
        negstream__poller_forget(&pfd[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
    ctx_destroy(&c);
}
END_TEST

/* negstream__poller_free on a poller of one's own: arms after it fail
 * DISPOSED, disarm finds nothing, forget frees the memory (valgrind). */
START_TEST(test_arm_after_free)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p;
    negstream__pollfd pfd;
    negstream_error e;
    pjob j;
    tctx c;
    int sv[2];

    ctx_init(&c);
    p = negstream__poller_new(pool, &e);
    ck_assert_msg(p != NULL, "%s", e.message);
    sockpair(sv);
    negstream__pollfd_init(&pfd, sv[0]);
    pjob_init(&j, &c, 1, &pfd, 0);
    arm_ok(p, &j, POLLOUT, -1);             /* writable: fires */
    ck_assert(wait_ge(&c, &j.runs, 1));
    negstream__poller_free(p);
    ck_assert_int_eq(negstream__poller_arm(p, &pfd, 0, POLLIN, -1, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(negstream__poller_arm(p, &pfd, 1, POLLIN, 0, &j.job,
                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert(!negstream__poller_disarm(p, &pfd, 0));
    ck_assert_uint_eq(negstream__poller_armed(p), 0);
    negstream__poller_free(p);              /* second call: nothing */
    negstream__poller_forget(&pfd);         /* the last reference */
    ck_assert_int_eq(j.runs, 1);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* ---- fork --------------------------------------------------------------- */

#define CHILD_REQUIRE(cond, code) do { \
        if (!(cond)) { \
            fprintf(stderr, "child: %s:%d: %s failed\n", __FILE__, \
                    __LINE__, #cond); \
            _exit(code); \
        } \
    } while (0)

static negstream__pollfd fork_pfd[3];
static pjob fork_jobs[3];
static int fork_sv[3][2];

/* In the child: the parent's watches are gone and never run here; the
 * parent's epoll set is left alone (the parent checks); a new watch in
 * the child works. */
static int fork_child(negstream_pool *pool, negstream__poller *p)
{
    static negstream__pollfd mine;
    static pjob j;
    static tctx c;
    int sv[2];

    CHILD_REQUIRE(negstream__poller_armed(p) == 0, 20);
    CHILD_REQUIRE(!fork_pfd[0].registered, 21);
    CHILD_REQUIRE(!negstream__poller_disarm(p, &fork_pfd[1], 0), 22);
    negstream__poller_forget(&fork_pfd[2]);     /* not ours: nothing */
    CHILD_REQUIRE(negstream__pool_poller(pool, NULL) == p, 23);
    /* Make the parent's first watch ready from here. */
    CHILD_REQUIRE(write(fork_sv[0][1], "x", 1) == 1, 24);
    if (UNDER_TSAN)
        return 0;   /* no new threads in this child: see the top */
    ctx_init(&c);
    CHILD_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, 25);
    negstream__pollfd_init(&mine, sv[0]);
    pjob_init(&j, &c, 7, &mine, 0);
    CHILD_REQUIRE(negstream__poller_arm(p, &mine, 0, POLLIN, -1, &j.job,
                                        NULL) == 0, 26);
    CHILD_REQUIRE(write(sv[1], "y", 1) == 1, 27);
    CHILD_REQUIRE(wait_ge(&c, &j.runs, 1), 28);
    CHILD_REQUIRE(j.fired == NEGSTREAM__FIRE_READY, 29);
    /* Deadlines work in the child too. */
    CHILD_REQUIRE(negstream__poller_arm(p, &mine, 1, POLLOUT, 0, &j.job,
                                        NULL) == 0, 30);
    CHILD_REQUIRE(wait_ge(&c, &j.runs, 2), 31);
    CHILD_REQUIRE(fork_jobs[0].runs == 0 && fork_jobs[1].runs == 0
                  && fork_jobs[2].runs == 0, 32);
    negstream__poller_forget(&mine);
    negstream_pool_free(pool);
    return 0;
}

START_TEST(test_fork)
{
    negstream_pool *pool = new_pool(1, 2);
    negstream__poller *p = poller_of(pool);
    negstream__pollfd probe_pfd;
    pjob probe;
    pid_t pid;
    tctx c;
    int i, st, sv[2];

    ctx_init(&c);
    /* Fork only once the worker and the poller thread have started and
     * gone idle (ASan's allocator is not fork-safe, see check_pool.c): a
     * watch fired and run shows both got that far. */
    sockpair(sv);
    negstream__pollfd_init(&probe_pfd, sv[0]);
    pjob_init(&probe, &c, 9, &probe_pfd, 0);
    arm_ok(p, &probe, POLLOUT, -1);
    ck_assert(wait_ge(&c, &probe.runs, 1));
    negstream__poller_forget(&probe_pfd);
    close(sv[0]);
    close(sv[1]);
    for (i = 0; i < 3; i++) {
        sockpair(fork_sv[i]);
        negstream__pollfd_init(&fork_pfd[i], fork_sv[i][0]);
        pjob_init(&fork_jobs[i], &c, i, &fork_pfd[i], 0);
        arm_ok(p, &fork_jobs[i], POLLIN, i == 2 ? negstream__mono_ms()
                                                  + 60000 : -1);
    }
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fork_child(pool, p));
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "child status %d", st);
    /* The child wrote to the first socket: it fires here. */
    ck_assert(wait_ge(&c, &fork_jobs[0].runs, 1));
    ck_assert_int_eq(fork_jobs[0].fired, NEGSTREAM__FIRE_READY);
    /* The others are still registered in the parent's set (the child
     * closed its copy of the epoll fd without epoll_ctl). */
    ck_assert_uint_eq(negstream__poller_armed(p), 2);
    put(fork_sv[1][1], "x");
    put(fork_sv[2][1], "x");
    ck_assert(wait_ge(&c, &fork_jobs[1].runs, 1));
    ck_assert(wait_ge(&c, &fork_jobs[2].runs, 1));
    ck_assert_int_eq(fork_jobs[2].fired, NEGSTREAM__FIRE_READY);
    for (i = 0; i < 3; i++) {
        negstream__poller_forget(&fork_pfd[i]);
        close(fork_sv[i][0]);
        close(fork_sv[i][1]);
    }
    negstream_pool_free(pool);
    ctx_destroy(&c);
}
END_TEST

/* ---- the suite ---------------------------------------------------------- */

static Suite *poller_suite(void)
{
    Suite *s = suite_create("poller");
    TCase *t = tcase_create("poller");

    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_backend);
    tcase_add_test(t, test_ready_on_data);
    tcase_add_test(t, test_pollout_when_drained);
    tcase_add_test(t, test_deadline);
    tcase_add_test(t, test_deadline_order);
    tcase_add_test(t, test_disarm_before_fire);
    tcase_add_test(t, test_rearm_after_disarm);
    tcase_add_test(t, test_disarm_after_fire);
    tcase_add_test(t, test_two_slots);
    tcase_add_test(t, test_hup_fires_every_slot);
    tcase_add_test(t, test_pipe);
    tcase_add_test(t, test_arm_errors);
    tcase_add_test(t, test_forget_and_reuse);
    tcase_add_test(t, test_rearm_from_job);
    tcase_add_test(t, test_many_fds);
    tcase_add_test(t, test_idle_uses_no_cpu);
    tcase_add_test(t, test_pool_free_fires_shutdown);
    tcase_add_test(t, test_pool_free_from_worker);
    tcase_add_test(t, test_arm_after_free);
    tcase_add_test(t, test_fork);
    suite_add_tcase(s, t);
    return s;
}

/* test_many_fds needs 4000 fds and a few: raise the soft limit. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4200)
        fprintf(stderr, "check_poller: only %lu fds (ulimit -n); "
                "test_many_fds needs 4200\n", (unsigned long)rl.rlim_cur);
}

int main(void)
{
    SRunner *sr = srunner_create(poller_suite());
    int failed;

    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
