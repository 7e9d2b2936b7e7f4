/*
 * poller.c - figures of the poller (src/poller.c) on its own, through the
 * internal API (it links the test build of the library, as the tests do;
 * bench/poller_poll is the same program with poll() and a wake-up pipe
 * forced, like tests/check_poller_poll):
 *
 *   - the CPU time of the poller thread (and of the whole process) while
 *     BENCH_POLLER_FDS (10000) watches without deadline sit armed on idle
 *     sockets for BENCH_POLLER_IDLE_S (10) seconds;
 *   - the cost of an arm + disarm pair on a registered fd, median of
 *     BENCH_RUNS (5) runs of 200000 pairs: same events without deadline
 *     (no system call with epoll), same events with a deadline while the
 *     other watches all have one (the heap's O(log n) path), alternating
 *     POLLIN/POLLOUT (an EPOLL_CTL_MOD per arm; with poll() a wake-up),
 *     and a first arm + forget (EPOLL_CTL_ADD + DEL, or fstat);
 *   - the time from a write to the start of the fired job on a worker,
 *     median and p99 of 2000 rounds, with the other watches armed.
 *
 * Needs no KDC.  Prints one line per figure.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "negstream.h"
#include "poller.h"
#include "pool.h"
#include "util.h"

#define MAX_RUNS 64
#define PAIRS    200000
#define ROUNDS   2000

static void die(const char *what)
{
    fprintf(stderr, "bench/poller: %s: %s\n", what, strerror(errno));
    exit(1);
}

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || *v == '\0')
        return def;
    n = strtol(v, &end, 10);
    if (*end != '\0' || n < 1) {
        fprintf(stderr, "bench/poller: %s=%s: not a positive integer\n",
                name, v);
        exit(2);
    }
    return n;
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double quantile(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[(int)(q * (n - 1) + 0.5)];
}

static void print_stat(const char *what, const char *unit, double *v,
                       int n)
{
    double med = quantile(v, n, 0.5);

    printf("%-52s %10.1f %s  (min %.1f, max %.1f, %d runs)\n", what, med,
           unit, v[0], v[n - 1], n);
}

/* ---- the poller thread's CPU time (Linux /proc) ------------------------ */

static long poller_tid(void)
{
    char path[300], name[32];
    struct dirent *de;
    long tid = -1;
    DIR *d;
    FILE *f;

    d = opendir("/proc/self/task");
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL && tid < 0) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(name, sizeof(name), f) != NULL
            && strncmp(name, "negstream-poll", 14) == 0)
            tid = strtol(de->d_name, NULL, 10);
        fclose(f);
    }
    closedir(d);
    return tid;
}

/* utime + stime of a thread, in clock ticks (/proc/.../stat, fields 14
 * and 15), and its run time in ns (/proc/.../schedstat, field 1; -1 if
 * the kernel has none). */
static void thread_cpu(long tid, long long *ticks, long long *ns)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;
    int i;

    *ticks = -1;
    *ns = -1;
    snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", tid);
    f = fopen(path, "r");
    if (f != NULL) {
        if (fgets(buf, sizeof(buf), f) != NULL
            && (p = strrchr(buf, ')')) != NULL) {
            /* After "pid (comm)": field 3 is the state. */
            p += 2;
            for (i = 3; i < 14 && p != NULL; i++) {
                p = strchr(p, ' ');
                if (p != NULL)
                    p++;
            }
            if (p != NULL && sscanf(p, "%llu %llu", &ut, &st) == 2)
                *ticks = (long long)(ut + st);
        }
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/self/task/%ld/schedstat", tid);
    f = fopen(path, "r");
    if (f != NULL) {
        if (fscanf(f, "%lld", ns) != 1)
            *ns = -1;
        fclose(f);
    }
}

static double process_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
           + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ---- jobs --------------------------------------------------------------- */

typedef struct bjob {
    negstream__job  job;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             runs;
    double          started;    /* now_ns() when it ran */
} bjob;

static void bjob_run(negstream__job *job)
{
    bjob *j = (bjob *)job;
    double t = now_ns();

    pthread_mutex_lock(&j->mu);
    j->runs++;
    j->started = t;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void bjob_init(bjob *j)
{
    memset(j, 0, sizeof(*j));
    j->job.run = bjob_run;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
}

static void arm(negstream__poller *p, negstream__pollfd *pfd, int slot,
                short ev, int64_t deadline, negstream__job *job)
{
    negstream_error e;

    if (negstream__poller_arm(p, pfd, slot, ev, deadline, job, &e) < 0) {
        fprintf(stderr, "bench/poller: arm fd %d: %s\n", pfd->fd,
                e.message);
        exit(1);
    }
}

int main(void)
{
    long nfds = env_long("BENCH_POLLER_FDS", 10000);
    long idle_s = env_long("BENCH_POLLER_IDLE_S", 10);
    int runs = (int)env_long("BENCH_RUNS", 5), r, i, k;
    negstream__pollfd *pfds, one, fresh;
    negstream__poller *p;
    negstream_pool *pool;
    negstream_error e;
    struct rlimit rl;
    bjob idle, j, latj;
    double v[MAX_RUNS], lat[ROUNDS], t0, c0;
    long long tk0, tk1, ns0, ns1;
    struct timespec ts;
    long tid, hz = sysconf(_SC_CLK_TCK);
    char label[80];
    int sv[2], fd, quiet;

    if (runs > MAX_RUNS)
        runs = MAX_RUNS;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pool = negstream_pool_new(1, 2, &e);
    if (pool == NULL || (p = negstream__pool_poller(pool, &e)) == NULL) {
        fprintf(stderr, "bench/poller: %s\n", e.message);
        return 1;
    }
    printf("bench/poller: backend %s, %ld watches, %d runs\n",
           negstream__poller_backend(), nfds, runs);

    /* N idle watches: unbound datagram sockets (one fd each) never get
     * POLLIN. */
    pfds = calloc((size_t)nfds, sizeof(*pfds));
    if (pfds == NULL)
        die("calloc");
    bjob_init(&idle);
    for (i = 0; i < nfds; i++) {
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket (raise ulimit -n or lower BENCH_POLLER_FDS)");
        negstream__pollfd_init(&pfds[i], fd);
        arm(p, &pfds[i], 0, POLLIN, -1, &idle.job);
    }

    /* Idle CPU. */
    ts.tv_sec = 0;
    ts.tv_nsec = 200000000;
    nanosleep(&ts, NULL);       /* the poll() copy is made by now */
    tid = poller_tid();
    if (tid < 0) {
        fprintf(stderr, "bench/poller: no negstream-poll thread found\n");
        return 1;
    }
    thread_cpu(tid, &tk0, &ns0);
    c0 = process_cpu_s();
    t0 = now_ns();
    ts.tv_sec = idle_s;
    ts.tv_nsec = 0;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    thread_cpu(tid, &tk1, &ns1);
    printf("%-52s %10.3f ms  (%lld ticks of 1/%ld s; process %.3f ms; "
           "%.1f s)\n", "idle: poller thread CPU (schedstat)",
           ns0 >= 0 ? (ns1 - ns0) / 1e6 : -1.0, tk1 - tk0, hz,
           (process_cpu_s() - c0) * 1e3, (now_ns() - t0) / 1e9);
    if (idle.runs != 0) {
        fprintf(stderr, "bench/poller: an idle watch fired\n");
        return 1;
    }

    /* arm + disarm on one registered socket, neither readable nor (once
     * its send buffer is full) writable, so that nothing fires: a fired
     * job must run before it is armed again. */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    {
        static char buf[65536];

        while (write(sv[0], buf, sizeof(buf)) > 0)
            ;
    }
    quiet = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (quiet < 0)
        die("socket");
    negstream__pollfd_init(&one, sv[0]);
    bjob_init(&j);
    arm(p, &one, 0, POLLIN, -1, &j.job);
    negstream__poller_disarm(p, &one, 0);
    for (r = 0; r < runs; r++) {
        t0 = now_ns();
        for (k = 0; k < PAIRS; k++) {
            arm(p, &one, 0, POLLIN, -1, &j.job);
            negstream__poller_disarm(p, &one, 0);
        }
        v[r] = (now_ns() - t0) / PAIRS;
    }
    print_stat("arm+disarm, same events, no deadline", "ns/pair", v, runs);

    for (r = 0; r < runs; r++) {
        t0 = now_ns();
        for (k = 0; k < PAIRS; k++) {
            arm(p, &one, 0, (k & 1) ? POLLOUT : POLLIN, -1, &j.job);
            negstream__poller_disarm(p, &one, 0);
        }
        v[r] = (now_ns() - t0) / PAIRS;
    }
    print_stat("arm+disarm, POLLIN/POLLOUT alternating", "ns/pair", v,
               runs);

    for (r = 0; r < runs; r++) {
        t0 = now_ns();
        for (k = 0; k < PAIRS / 10; k++) {
            negstream__pollfd_init(&fresh, quiet);
            arm(p, &fresh, 0, POLLIN, -1, &j.job);
            negstream__poller_disarm(p, &fresh, 0);
            negstream__poller_forget(&fresh);
        }
        v[r] = (now_ns() - t0) / (PAIRS / 10);
    }
    print_stat("first arm+disarm+forget (register, unregister)",
               "ns/triple", v, runs);

    /* Every idle watch gets a deadline 20 to 30 minutes ahead, so that
     * the heap holds nfds + 1 timers.  (They share one job: none may
     * fire, so the program must end well before.) */
    for (i = 0; i < nfds; i++) {
        negstream__poller_disarm(p, &pfds[i], 0);
        arm(p, &pfds[i], 0, POLLIN,
            negstream__mono_ms() + 1200000 + (i * 7919L) % 600000,
            &idle.job);
    }
    /* A deadline later than the earliest one (a 60 s timeout armed after
     * others: the usual case): heap work only. */
    for (r = 0; r < runs; r++) {
        t0 = now_ns();
        for (k = 0; k < PAIRS; k++) {
            arm(p, &one, 0, POLLIN, negstream__mono_ms() + 3000000 + k % 1000,
                &j.job);
            negstream__poller_disarm(p, &one, 0);
        }
        v[r] = (now_ns() - t0) / PAIRS;
    }
    snprintf(label, sizeof(label), "arm+disarm, deadline, %ld in the heap",
             nfds);
    print_stat(label, "ns/pair", v, runs);
    /* A deadline earlier than all others: the sleeping thread must be
     * woken to shorten its wait (one eventfd or pipe write per arm). */
    for (r = 0; r < runs; r++) {
        t0 = now_ns();
        for (k = 0; k < PAIRS / 10; k++) {
            arm(p, &one, 0, POLLIN, negstream__mono_ms() + 600000, &j.job);
            negstream__poller_disarm(p, &one, 0);
        }
        v[r] = (now_ns() - t0) / (PAIRS / 10);
    }
    print_stat("arm+disarm, deadline earlier than all (wake-up)",
               "ns/pair", v, runs);

    /* Ready -> job started. */
    bjob_init(&latj);
    for (k = 0; k < ROUNDS; k++) {
        char ch;

        arm(p, &one, 0, POLLIN, -1, &latj.job);
        t0 = now_ns();
        if (write(sv[1], "x", 1) != 1)
            die("write");
        pthread_mutex_lock(&latj.mu);
        while (latj.runs <= k)
            pthread_cond_wait(&latj.cv, &latj.mu);
        lat[k] = (latj.started - t0) / 1e3;
        pthread_mutex_unlock(&latj.mu);
        if (read(sv[0], &ch, 1) != 1)
            die("read");
    }
    {
        double med = quantile(lat, ROUNDS, 0.5);
        double p99 = quantile(lat, ROUNDS, 0.99);

        printf("%-52s %10.1f us  (p99 %.1f us, %d rounds)\n",
               "write -> fired job starts on a worker", med, p99, ROUNDS);
    }

    for (i = 0; i < nfds; i++) {
        negstream__poller_disarm(p, &pfds[i], 0);
        negstream__poller_forget(&pfds[i]);
        close(pfds[i].fd);
    }
    negstream__poller_forget(&one);
    close(quiet);
    close(sv[0]);
    close(sv[1]);
    negstream_pool_free(pool);
    free(pfds);
    return 0;
}
