/*
 * reqresp.c - request/response exchanges with the server speaking first
 * (issue 11's second figure): the library's server, driven by callback
 * chains on the default pool, against a hand-written single-threaded
 * epoll server doing the same framing and the same GSS work, both served
 * by the same client load generator, in the same run.
 *
 * The protocol, per connection: the server sends a greeting; then, R
 * times, the client sends a request and the server a response.  An
 * exchange is one request and its response.  Every message is a
 * BENCH_RR_BYTES (64) byte [MS-NNS] data frame, EncryptAndSign on a
 * Kerberos context (SPNEGO), over TCP 127.0.0.1.
 *
 *   lib    each connection is a chain of callbacks: begin_write (the
 *          greeting) -> its callback ends it and posts begin_read -> its
 *          callback ends it and posts begin_write (the response) -> ...
 *          The reads wait parked with the poller (issue 11).
 *   epoll  one thread, level-triggered epoll over every connection:
 *          recv(MSG_DONTWAIT) into a per-connection buffer, whole frames
 *          unwrapped, the response wrapped into a buffer behind its length
 *          prefix and sent with one send (EPOLLOUT only if the socket is
 *          full).  The GSS work is the library's own internal wrap and
 *          unwrap (src/gss.c: gss_wrap_iov into the frame buffer,
 *          gss_unwrap_iov in place) on the server streams' contexts, so
 *          both servers do exactly the same crypto per message.
 *   client one thread, the same for both: epoll over its connections,
 *          unwrap each greeting or response, wrap and send the next
 *          request, until every connection has its R responses.
 *
 * Shapes (BENCH_RR_SHAPES, default "100x100 1x1000"): connections x
 * exchanges per connection.  100 x 100 is the 10 000 exchanges
 * with 100 requests in flight, enough to keep every worker and the
 * epoll thread busy (throughput-bound); 1 x 1000 is one connection in
 * lock step (latency-bound: every exchange pays the full path, park,
 * wake-up, worker, callback).  The two servers use different connections
 * of the same kind (authenticated the same way); per run, they go in
 * alternating order.  Figures per server: exchanges/s (wall), the
 * server's CPU time per exchange (the process's CPU minus the client
 * thread's), context switches per exchange, and the client's latency
 * from a request to its response.  BENCH_RR_ONLY=lib or =epoll runs one
 * server only (for a profiler); the ratios are then left out.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "frame.h"
#include "gss.h"
#include "stream.h"

#define MAX_MSG   1024
#define FRAME_CAP (NEGSTREAM__DATA_HEADER_SIZE + MAX_MSG + 256)
#define IN_CAP    (4 * FRAME_CAP)
#define MAX_SHAPES 4

static size_t g_msg_len;
static uint8_t g_payload[MAX_MSG];

/* The pairs: [0, g_nconn) for the library's server, [g_nconn, 2 g_nconn)
 * for the epoll server. */
static size_t g_nconn;
static negstream **g_cli, **g_srv;
static int (*g_fds)[2];

/* ---- framing, shared by the client and the epoll server ----------------- */

/* Wraps the payload into out: length prefix + token.  Returns its size. */
static size_t wrap_frame(negstream *s, uint8_t *out)
{
    negstream_error err;
    ssize_t tok;

    tok = negstream__gss_wrap(&s->gss, g_payload, g_msg_len,
                              out + NEGSTREAM__DATA_HEADER_SIZE,
                              FRAME_CAP - NEGSTREAM__DATA_HEADER_SIZE, &err);
    if (tok < 0)
        bu_die("reqresp: wrap: %s", err.message);
    negstream__data_len_encode(out, (uint32_t)tok);
    return NEGSTREAM__DATA_HEADER_SIZE + (size_t)tok;
}

/* If in[0..*have) starts with a whole frame: unwraps it (checking its
 * length), drops it from the buffer, returns true. */
static bool take_frame(negstream *s, uint8_t *in, size_t *have)
{
    negstream_error err;
    uint32_t len;
    size_t off, total;
    ssize_t plain;

    if (*have < NEGSTREAM__DATA_HEADER_SIZE)
        return false;
    negstream__data_len_decode(in, &len);
    if (len > FRAME_CAP - NEGSTREAM__DATA_HEADER_SIZE)
        bu_die("reqresp: frame of %u bytes", (unsigned)len);
    total = NEGSTREAM__DATA_HEADER_SIZE + len;
    if (*have < total)
        return false;
    plain = negstream__gss_unwrap(&s->gss, in + NEGSTREAM__DATA_HEADER_SIZE,
                                  len, &off, &err);
    if (plain != (ssize_t)g_msg_len)
        bu_die("reqresp: unwrap gave %zd bytes (%s)", plain,
               plain < 0 ? err.message : "wrong length");
    *have -= total;
    memmove(in, in + total, *have);
    return true;
}

/* Sends what is left of out[*off..len) without blocking; true when all
 * of it is sent. */
static bool send_some(int fd, const uint8_t *out, size_t len, size_t *off)
{
    ssize_t n;

    while (*off < len) {
        n = send(fd, out + *off, len - *off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        if (n < 0)
            bu_die("reqresp: send: %s", strerror(errno));
        *off += (size_t)n;
    }
    return true;
}

/* Sends all of out, waiting in poll if the socket is full. */
static void send_all(int fd, const uint8_t *out, size_t len)
{
    struct pollfd p = { fd, POLLOUT, 0 };
    size_t off = 0;

    while (!send_some(fd, out, len, &off))
        poll(&p, 1, -1);
}

/* recv without blocking; 0 if nothing is there, fatal on end/error. */
static size_t recv_some(int fd, uint8_t *buf, size_t cap)
{
    ssize_t n;

    for (;;) {
        n = recv(fd, buf, cap, MSG_DONTWAIT);
        if (n > 0)
            return (size_t)n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        bu_die("reqresp: recv: %s", n == 0 ? "end of stream"
                                           : strerror(errno));
    }
}

/* ---- the client load generator ------------------------------------------ */

typedef struct cconn {
    negstream *cs;              /* its context (the stream is idle) */
    int        fd;
    uint8_t    in[IN_CAP];
    size_t     have;
    uint8_t    out[FRAME_CAP];
    bool       greeted;
    size_t     responses;
    uint64_t   t_req;
} cconn;

typedef struct client_run {
    size_t    first, nconn, rounds;
    double   *lat_us;           /* nconn * rounds */
    size_t    nlat;
    double    cpu_s;            /* this thread's CPU time */
    double    t_end;
} client_run;

/* Names the calling thread, for profilers ("perf report --comms"). */
static void name_thread(const char *name)
{
#if defined(HAVE_PTHREAD_SETNAME_NP) && defined(__linux__)
    pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}

static double thread_cpu(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *client_main(void *arg)
{
    client_run *cr = arg;
    struct epoll_event ev, evs[256];
    cconn *c = calloc(cr->nconn, sizeof(*c));
    size_t i, done = 0;
    double cpu0 = thread_cpu();
    int ep, n, k;

    name_thread("rr-client");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (c == NULL || ep < 0)
        bu_die("reqresp: client: out of memory or epoll");
    for (i = 0; i < cr->nconn; i++) {
        c[i].cs = g_cli[cr->first + i];
        c[i].fd = g_fds[cr->first + i][0];
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) < 0)
            bu_die("reqresp: epoll_ctl: %s", strerror(errno));
    }
    while (done < cr->nconn) {
        n = epoll_wait(ep, evs, 256, 60000);
        if (n == 0)
            bu_die("reqresp: no response for 60 s (%zu of %zu connections "
                   "done)", done, cr->nconn);
        for (k = 0; k < n; k++) {
            cconn *x = &c[evs[k].data.u64];

            x->have += recv_some(x->fd, x->in + x->have,
                                 sizeof(x->in) - x->have);
            while (take_frame(x->cs, x->in, &x->have)) {
                if (!x->greeted) {
                    x->greeted = true;
                } else {
                    cr->lat_us[cr->nlat++] =
                        (double)(bu_now_ns() - x->t_req) / 1e3;
                    if (++x->responses == cr->rounds) {
                        done++;
                        continue;
                    }
                }
                x->t_req = bu_now_ns();
                send_all(x->fd, x->out, wrap_frame(x->cs, x->out));
            }
        }
    }
    cr->t_end = bu_now();
    cr->cpu_s = thread_cpu() - cpu0;
    close(ep);
    free(c);
    return NULL;
}

/* ---- the library's server ------------------------------------------------ */

typedef struct lconn {
    negstream *s;
    uint8_t    in[MAX_MSG];
    size_t     rounds, round;
} lconn;

static atomic_size_t g_lib_left;
static sem_t g_lib_done;        /* posted by the last chain's end */

static void lib_read_cb(negstream_async *ar);

static void lib_write_cb(negstream_async *ar)
{
    lconn *x = negstream_async_state(ar);
    negstream_error err;

    if (negstream_end_write(x->s, ar, &err) < 0)
        bu_die("reqresp: lib: end_write: %s", err.message);
    if (x->round == x->rounds) {
        if (atomic_fetch_sub(&g_lib_left, 1) == 1)
            sem_post(&g_lib_done);
        return;
    }
    if (negstream_begin_read(x->s, x->in, sizeof(x->in), 0, sizeof(x->in),
                             lib_read_cb, x, &err) == NULL)
        bu_die("reqresp: lib: begin_read: %s", err.message);
}

static void lib_read_cb(negstream_async *ar)
{
    lconn *x = negstream_async_state(ar);
    negstream_error err;
    ssize_t n;

    n = negstream_end_read(x->s, ar, &err);
    if (n != (ssize_t)g_msg_len)
        bu_die("reqresp: lib: read %zd bytes (%s)", n,
               n < 0 ? err.message : "wrong length");
    x->round++;
    if (negstream_begin_write(x->s, g_payload, g_msg_len, 0,
                              (ssize_t)g_msg_len, lib_write_cb, x,
                              &err) == NULL)
        bu_die("reqresp: lib: begin_write: %s", err.message);
}

static void lib_serve(size_t nconn, size_t rounds)
{
    lconn *c = calloc(nconn, sizeof(*c));
    negstream_error err;
    size_t i;

    if (c == NULL)
        bu_die("out of memory");
    atomic_store(&g_lib_left, nconn);
    for (i = 0; i < nconn; i++) {
        c[i].s = g_srv[i];
        c[i].rounds = rounds;
        if (negstream_begin_write(c[i].s, g_payload, g_msg_len, 0,
                                  (ssize_t)g_msg_len, lib_write_cb, &c[i],
                                  &err) == NULL)
            bu_die("reqresp: lib: greeting: %s", err.message);
    }
    /* Every chain's last callback has run: its memory may go.  (Not a
     * polling loop: its wake-ups would be charged to the server.) */
    while (sem_wait(&g_lib_done) < 0 && errno == EINTR)
        ;
    free(c);
}

/* ---- the hand-written epoll server -------------------------------------- */

typedef struct econn {
    negstream *ss;              /* its context (the stream is idle) */
    int        fd;
    uint8_t    in[IN_CAP];
    size_t     have;
    uint8_t    out[FRAME_CAP];
    size_t     olen, ooff;      /* the frame being sent */
    size_t     round;
    bool       want_out;        /* EPOLLOUT armed */
} econn;

typedef struct epoll_run {
    size_t nconn, rounds;
} epoll_run;

/* Sends what is pending; true if the connection is finished. */
static bool econn_flush(int ep, econn *x, size_t rounds, size_t idx)
{
    struct epoll_event ev;
    bool sent = send_some(x->fd, x->out, x->olen, &x->ooff);

    if (sent != !x->want_out) {
        x->want_out = !sent;
        ev.events = EPOLLIN | (sent ? 0 : EPOLLOUT);
        ev.data.u64 = idx;
        if (epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &ev) < 0)
            bu_die("reqresp: epoll_ctl: %s", strerror(errno));
    }
    if (sent)
        x->olen = x->ooff = 0;
    return sent && x->round == rounds;
}

static void *epoll_main(void *arg)
{
    epoll_run *er = arg;
    struct epoll_event ev, evs[256];
    econn *c = calloc(er->nconn, sizeof(*c));
    size_t i, done = 0;
    int ep, n, k;

    name_thread("rr-epoll");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (c == NULL || ep < 0)
        bu_die("reqresp: epoll server: out of memory or epoll");
    for (i = 0; i < er->nconn; i++) {
        c[i].ss = g_srv[g_nconn + i];
        c[i].fd = g_fds[g_nconn + i][1];
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) < 0)
            bu_die("reqresp: epoll_ctl: %s", strerror(errno));
        /* The greeting. */
        c[i].olen = wrap_frame(c[i].ss, c[i].out);
        econn_flush(ep, &c[i], er->rounds, i);
    }
    while (done < er->nconn) {
        n = epoll_wait(ep, evs, 256, 60000);
        if (n == 0)
            bu_die("reqresp: epoll server: nothing for 60 s");
        for (k = 0; k < n; k++) {
            size_t idx = evs[k].data.u64;
            econn *x = &c[idx];

            if (x->olen > 0) {
                if (econn_flush(ep, x, er->rounds, idx))
                    done++;
                if (x->olen > 0)
                    continue;   /* still full: the request can wait */
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            x->have += recv_some(x->fd, x->in + x->have,
                                 sizeof(x->in) - x->have);
            /* The client sends one request per response: at most one
             * whole frame is here. */
            if (take_frame(x->ss, x->in, &x->have)) {
                x->round++;
                x->olen = wrap_frame(x->ss, x->out);
                if (econn_flush(ep, x, er->rounds, idx))
                    done++;
            }
        }
    }
    close(ep);
    free(c);
    return NULL;
}

/* ---- one measurement ----------------------------------------------------- */

enum { S_LIB, S_EPOLL, NSERVERS };
static const char *const g_sname[NSERVERS] = { "lib", "epoll" };

typedef struct meas {
    double rate, cpu_us, csw, p50, p99;
} meas;

static long csw_now(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_nvcsw + ru.ru_nivcsw;
}

static meas run_one(int server, size_t nconn, size_t rounds)
{
    client_run cr;
    epoll_run er;
    pthread_t ct, st;
    double t0, cpu0, cpu1;
    long csw0;
    meas m;

    memset(&cr, 0, sizeof(cr));
    cr.first = server == S_LIB ? 0 : g_nconn;
    cr.nconn = nconn;
    cr.rounds = rounds;
    cr.lat_us = malloc(nconn * rounds * sizeof(double));
    if (cr.lat_us == NULL)
        bu_die("out of memory");
    er.nconn = nconn;
    er.rounds = rounds;
    cpu0 = bu_cpu_seconds();
    csw0 = csw_now();
    t0 = bu_now();
    if (pthread_create(&ct, NULL, client_main, &cr) != 0)
        bu_die("pthread_create failed");
    if (server == S_LIB) {
        lib_serve(nconn, rounds);
    } else {
        if (pthread_create(&st, NULL, epoll_main, &er) != 0)
            bu_die("pthread_create failed");
        pthread_join(st, NULL);
    }
    pthread_join(ct, NULL);
    cpu1 = bu_cpu_seconds();
    m.rate = (double)(nconn * rounds) / (cr.t_end - t0);
    m.cpu_us = (cpu1 - cpu0 - cr.cpu_s) * 1e6 / (double)(nconn * rounds);
    m.csw = (double)(csw_now() - csw0) / (double)(nconn * rounds);
    m.p50 = bu_quantile(cr.lat_us, cr.nlat, 0.50);
    m.p99 = bu_quantile(cr.lat_us, cr.nlat, 0.99);
    free(cr.lat_us);
    return m;
}

/* ---- main ----------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static meas res[MAX_SHAPES][NSERVERS][BU_MAX_RUNS];
    const char *shapes_env = getenv("BENCH_RR_SHAPES");
    size_t conns[MAX_SHAPES], rounds[MAX_SHAPES];
    int nshapes = 0, runs = bu_runs(), r, sh, v;
    char buf[256], name[160], *tok, *save;
    double vals[BU_MAX_RUNS];
    const char *threads = getenv("NEGSTREAM_THREADS");
    const char *only = getenv("BENCH_RR_ONLY");
    int only_v = -1;

    bu_report_begin("reqresp", argc, argv);
    sem_init(&g_lib_done, 0, 0);
    g_msg_len = bu_env_size("BENCH_RR_BYTES", 64);
    if (g_msg_len < 1 || g_msg_len > MAX_MSG)
        bu_die("BENCH_RR_BYTES must be 1..%d", MAX_MSG);
    memset(g_payload, 'q', sizeof(g_payload));
    if (only != NULL && *only != '\0') {
        for (v = 0; v < NSERVERS; v++)
            if (strcmp(only, g_sname[v]) == 0)
                only_v = v;
        if (only_v < 0)
            bu_die("BENCH_RR_ONLY=\"%s\": lib or epoll", only);
    }
    snprintf(buf, sizeof(buf), "%s", shapes_env != NULL && *shapes_env
             ? shapes_env : "100x100 1x1000");
    for (tok = strtok_r(buf, " ,", &save); tok != NULL;
         tok = strtok_r(NULL, " ,", &save)) {
        unsigned long a, b;

        if (nshapes == MAX_SHAPES || sscanf(tok, "%lux%lu", &a, &b) != 2
            || a < 1 || b < 1 || a > 4096)
            bu_die("BENCH_RR_SHAPES: \"%s\": want up to %d words like "
                   "100x100 (connections x exchanges)", tok, MAX_SHAPES);
        conns[nshapes] = a;
        rounds[nshapes] = b;
        if (a > g_nconn)
            g_nconn = a;
        nshapes++;
    }
    if (nshapes == 0)
        bu_die("BENCH_RR_SHAPES is empty");
    bu_need_fds(8 * g_nconn + 256, "reqresp");
    g_cli = calloc(2 * g_nconn, sizeof(*g_cli));
    g_srv = calloc(2 * g_nconn, sizeof(*g_srv));
    g_fds = calloc(2 * g_nconn, sizeof(*g_fds));
    if (g_cli == NULL || g_srv == NULL || g_fds == NULL)
        bu_die("out of memory");
    bu_bulk_pairs(2 * g_nconn, 0, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN,
                  true, false, NULL, g_cli, g_srv, g_fds);

    /* Warm-up: threads, poller, caches. */
    for (sh = 0; sh < nshapes; sh++)
        for (v = 0; v < NSERVERS; v++)
            if (only_v < 0 || v == only_v)
                run_one(v, conns[sh], rounds[sh] / 10 + 1);

    for (r = 0; r < runs; r++) {
        for (sh = 0; sh < nshapes; sh++) {
            for (v = 0; v < NSERVERS; v++) {
                int vv = (v + r) % NSERVERS;    /* alternate the order */
                meas *m = &res[sh][vv][r];

                if (only_v >= 0 && vv != only_v)
                    continue;
                *m = run_one(vv, conns[sh], rounds[sh]);
                if (!bu_report_json())
                    fprintf(stderr, "reqresp run %d: %zux%zu %-5s %8.0f "
                            "exchanges/s  server CPU %6.1f us/exchange  "
                            "csw %.2f  p50 %7.1f us  p99 %8.1f us\n", r + 1,
                            conns[sh], rounds[sh], g_sname[vv], m->rate,
                            m->cpu_us, m->csw, m->p50, m->p99);
            }
        }
    }

    for (sh = 0; sh < nshapes; sh++) {
        char grp[48];

        snprintf(grp, sizeof(grp), "%zux%zu", conns[sh], rounds[sh]);
        for (v = 0; v < NSERVERS; v++) {
            const char *what = v == S_LIB ? "lib, callback chains"
                                          : "epoll, one thread";

            if (only_v >= 0 && v != only_v)
                continue;

#define ROW(field, label, unit)                                         \
            do {                                                        \
                for (r = 0; r < runs; r++)                              \
                    vals[r] = res[sh][v][r].field;                      \
                snprintf(name, sizeof(name), "%s: %s", what, label);   \
                bu_report_row(grp, name, unit, bu_stats(vals, runs));   \
            } while (0)
            ROW(rate, "exchanges/s", "exch/s");
            ROW(cpu_us, "server CPU per exchange", "us");
            ROW(csw, "context switches per exchange", "csw");
            ROW(p50, "request to response p50", "us");
            ROW(p99, "request to response p99", "us");
#undef ROW
        }
        if (only_v >= 0)
            continue;
        for (r = 0; r < runs; r++)
            vals[r] = res[sh][S_LIB][r].rate / res[sh][S_EPOLL][r].rate;
        snprintf(name, sizeof(name), "%s exchanges/s, lib / epoll", grp);
        bu_report_ratio(name, bu_stats(vals, runs), 0.7, "target >= 0.70");
        for (r = 0; r < runs; r++)
            vals[r] = res[sh][S_EPOLL][r].cpu_us / res[sh][S_LIB][r].cpu_us;
        snprintf(name, sizeof(name), "%s server CPU per exchange, epoll / "
                 "lib", grp);
        bu_report_ratio(name, bu_stats(vals, runs), 0, "");
    }
    bu_report_note("server speaks first: greeting, then request/response; "
                   "%zu-byte messages, EncryptAndSign (Kerberos via "
                   "SPNEGO), TCP 127.0.0.1; lib = default pool (max %s) "
                   "with callback chains; epoll = one thread, the same "
                   "framing and the library's own gss wrap/unwrap; one "
                   "client thread for both; server CPU = process CPU "
                   "minus the client thread's", g_msg_len,
                   threads != NULL ? threads : "4 per CPU, >= 8");
    bu_report_print();
    for (sh = 0; sh < (int)(2 * g_nconn); sh++) {
        negstream_close(g_cli[sh]);
        negstream_close(g_srv[sh]);
    }
    free(g_fds);
    free(g_srv);
    free(g_cli);
    return 0;
}
