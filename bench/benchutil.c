/*
 * benchutil.c - helpers shared by the benchmark programs.
 */
#include "config.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "tcppair.h"

uint64_t bu_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

double bu_now(void)
{
    return (double)bu_now_ns() / 1e9;
}

void bu_die(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

size_t bu_env_size(const char *name, size_t def)
{
    const char *v = getenv(name);
    unsigned long long n;
    char *end;

    if (v == NULL || *v == '\0')
        return def;
    errno = 0;
    n = strtoull(v, &end, 10);
    if (errno != 0 || end == v)
        bu_die("%s=\"%s\" is not a number", name, v);
    switch (*end) {
    case 'K': case 'k': n <<= 10; end++; break;
    case 'M': case 'm': n <<= 20; end++; break;
    case 'G': case 'g': n <<= 30; end++; break;
    default: break;
    }
    if (*end != '\0')
        bu_die("%s=\"%s\": unknown suffix", name, v);
    return (size_t)n;
}

int bu_runs(void)
{
    size_t n = bu_env_size("BENCH_RUNS", 5);

    if (n < 1)
        n = 1;
    if (n > BU_MAX_RUNS)
        n = BU_MAX_RUNS;
    return (int)n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

bu_stat bu_stats(const double *v, int n)
{
    double s[BU_MAX_RUNS];
    bu_stat st = { 0, 0, 0 };

    if (n <= 0)
        return st;
    if (n > BU_MAX_RUNS)
        n = BU_MAX_RUNS;
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    st.min = s[0];
    st.max = s[n - 1];
    st.med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    return st;
}

double bu_quantile(double *v, size_t n, double q)
{
    size_t i;

    if (n == 0)
        return 0;
    qsort(v, n, sizeof(double), cmp_double);
    i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

void bu_socket_pair(int fds[2], bool tcp)
{
    const char *what;

    if (!tcp) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
            bu_die("socketpair: %s", strerror(errno));
        return;
    }
    if (tcp_pair_open(fds, &what) < 0)
        bu_die("%s on 127.0.0.1: %s", what, strerror(errno));
}

static const char *need_env(const char *name)
{
    const char *v = getenv(name);

    if (v == NULL || *v == '\0')
        bu_die("%s is not set: run the benchmarks under tests/kdc/with-realm "
               "(make bench does)", name);
    return v;
}

struct server_arg {
    negstream           *s;
    negstream_protection level;
    negstream_error      err;
    int                  rc;
};

static void *server_main(void *p)
{
    struct server_arg *sa = p;
    negstream_server_options so;

    negstream_server_options_init(&so);
    so.protection = sa->level;
    sa->rc = negstream_authenticate_as_server(sa->s, &so, &sa->err);
    return NULL;
}

int bu_auth_fds(int fds[2], negstream_protection level, negstream **client,
                negstream **server)
{
    struct server_arg sa;
    negstream_client_options co;
    negstream_error ce;
    pthread_t t;
    negstream *c;
    int crc;

    c = negstream_new(fds[0], false, &ce);
    memset(&sa, 0, sizeof(sa));
    sa.s = negstream_new(fds[1], false, &sa.err);
    if (c == NULL || sa.s == NULL)
        bu_die("negstream_new: %s", c == NULL ? ce.message : sa.err.message);
    sa.level = level;
    if (pthread_create(&t, NULL, server_main, &sa) != 0)
        bu_die("pthread_create failed");
    negstream_client_options_init(&co);
    co.protection = level;
    co.target_name = need_env("NEGTEST_SPN");
    if (level == NEGSTREAM_PROTECTION_NONE) {
        co.user = need_env("NEGTEST_NTLM_USER");
        co.domain = need_env("NEGTEST_NTLM_DOMAIN");
        co.password = need_env("NEGTEST_NTLM_PASSWORD");
        co.mechanism = "ntlm";
    }
    crc = negstream_authenticate_as_client(c, &co, &ce);
    if (crc < 0)
        shutdown(fds[0], SHUT_RDWR);    /* the server may wait for us */
    pthread_join(t, NULL);
    if (crc < 0 || sa.rc < 0) {
        fprintf(stderr, "bench: authentication failed: client: %s; "
                "server: %s\n", crc < 0 ? ce.message : "ok",
                sa.rc < 0 ? sa.err.message : "ok");
        negstream_close(c);
        negstream_close(sa.s);
        return -1;
    }
    *client = c;
    *server = sa.s;
    return 0;
}

void bu_pair(negstream_protection level, bool tcp, int fds[2],
             negstream **client, negstream **server)
{
    bu_socket_pair(fds, tcp);
    if (bu_auth_fds(fds, level, client, server) < 0)
        bu_die("cannot authenticate a %s pair", bu_level_name(level));
}

/* ---- many pairs at once ------------------------------------------------ */

typedef struct bulk_side {
    negstream       *s;
    bool             server;
    int              rc;
    negstream_error  err;
} bulk_side;

static pthread_mutex_t g_bulk_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  g_bulk_cv = PTHREAD_COND_INITIALIZER;
static size_t          g_bulk_left;

static void bulk_cb(negstream_async *ar)
{
    bulk_side *b = negstream_async_state(ar);

    if (b->server)
        b->rc = negstream_end_authenticate_as_server(b->s, ar, &b->err);
    else
        b->rc = negstream_end_authenticate_as_client(b->s, ar, &b->err);
    pthread_mutex_lock(&g_bulk_mu);
    if (--g_bulk_left == 0)
        pthread_cond_signal(&g_bulk_cv);
    pthread_mutex_unlock(&g_bulk_mu);
}

void bu_bulk_pairs(size_t n, size_t batch, negstream_protection level,
                   bool tcp, bool client_keep_fd, negstream_pool *pool,
                   negstream **client, negstream **server, int (*fds)[2])
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error err;
    bulk_side *b;
    size_t first, i, m;
    int fd[2];

    if (batch == 0 || batch > n)
        batch = n;
    b = calloc(2 * batch, sizeof(*b));
    if (b == NULL)
        bu_die("out of memory");
    negstream_client_options_init(&co);
    co.protection = level;
    co.target_name = need_env("NEGTEST_SPN");
    if (level == NEGSTREAM_PROTECTION_NONE) {
        co.user = need_env("NEGTEST_NTLM_USER");
        co.domain = need_env("NEGTEST_NTLM_DOMAIN");
        co.password = need_env("NEGTEST_NTLM_PASSWORD");
        co.mechanism = "ntlm";
    }
    negstream_server_options_init(&so);
    so.protection = level;
    for (first = 0; first < n; first += batch) {
        m = n - first < batch ? n - first : batch;
        g_bulk_left = 2 * m;
        for (i = 0; i < m; i++) {
            size_t k = first + i;

            bu_socket_pair(fd, tcp);
            client[k] = negstream_new(fd[0], client_keep_fd, &err);
            if (client[k] == NULL)
                bu_die("negstream_new: %s", err.message);
            server[k] = negstream_new(fd[1], false, &err);
            if (server[k] == NULL)
                bu_die("negstream_new: %s", err.message);
            if (pool != NULL
                && (negstream_set_pool(client[k], pool, &err) < 0
                    || negstream_set_pool(server[k], pool, &err) < 0))
                bu_die("negstream_set_pool: %s", err.message);
            if (fds != NULL) {
                fds[k][0] = fd[0];
                fds[k][1] = fd[1];
            }
            b[2 * i].s = server[k];
            b[2 * i].server = true;
            b[2 * i + 1].s = client[k];
            b[2 * i + 1].server = false;
            if (negstream_begin_authenticate_as_server(server[k], &so,
                                                       bulk_cb, &b[2 * i],
                                                       &err) == NULL
                || negstream_begin_authenticate_as_client(client[k], &co,
                                                          bulk_cb,
                                                          &b[2 * i + 1],
                                                          &err) == NULL)
                bu_die("begin_authenticate: %s", err.message);
        }
        pthread_mutex_lock(&g_bulk_mu);
        while (g_bulk_left > 0)
            pthread_cond_wait(&g_bulk_cv, &g_bulk_mu);
        pthread_mutex_unlock(&g_bulk_mu);
        for (i = 0; i < 2 * m; i++)
            if (b[i].rc < 0)
                bu_die("authentication of pair %zu (%s side) failed: %s",
                       first + i / 2, b[i].server ? "server" : "client",
                       b[i].err.message);
    }
    free(b);
}

void bu_need_fds(size_t n, const char *what)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        bu_die("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= n)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < n)
        rl.rlim_max = n;            /* only root may raise it */
    rl.rlim_cur = n;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        bu_die("%s needs %zu file descriptors and the limit cannot be "
               "raised (%s): raise ulimit -n or lower the size", what, n,
               strerror(errno));
}

int bu_process_threads(void)
{
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
}

const char *bu_level_name(negstream_protection level)
{
    switch (level) {
    case NEGSTREAM_PROTECTION_NONE: return "None";
    case NEGSTREAM_PROTECTION_SIGN: return "Sign";
    case NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN: return "EncryptAndSign";
    }
    return "?";
}

long bu_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;

    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
        res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

long bu_peak_rss_kib(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

double bu_cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
           + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

size_t bu_heap_bytes(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
#else
    return 0;
#endif
}

void bu_read_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;
    ssize_t r;

    while (got < n) {
        r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            bu_die("read: %s", r == 0 ? "end of stream" : strerror(errno));
        got += (size_t)r;
    }
}

void bu_writev_all(int fd, struct iovec *iov, int iovcnt)
{
    ssize_t n;

    while (iovcnt > 0) {
        n = writev(fd, iov, iovcnt);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            bu_die("writev: %s", strerror(errno));
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
}

/* ---- the report -------------------------------------------------------- */

#define MAX_ROWS  64
#define MAX_NOTES 32

typedef struct row {
    char     group[48], name[96], unit[16];
    bu_stat  st;
    bool     is_ratio;
    bool     is_max;     /* target is an upper bound */
    double   target;
    char     target_text[48];
} row;

static struct {
    const char *program;
    bool        json;
    char        cmd[512];
    row         rows[MAX_ROWS];
    int         nrows;
    char       *notes[MAX_NOTES];
    int         nnotes;
} rep;

void bu_report_begin(const char *program, int argc, char **argv)
{
    int i;
    size_t len = 0;

    rep.program = program;
    for (i = 1; i < argc; i++)
        if (strcmp(argv[i], "--json") == 0)
            rep.json = true;
    for (i = 0; i < argc && len + 2 < sizeof(rep.cmd); i++)
        len += (size_t)snprintf(rep.cmd + len, sizeof(rep.cmd) - len, "%s%s",
                                i ? " " : "", argv[i]);
}

bool bu_report_json(void)
{
    return rep.json;
}

static row *new_row(const char *group, const char *name, const char *unit)
{
    row *r;

    if (rep.nrows == MAX_ROWS)
        bu_die("too many report rows");
    r = &rep.rows[rep.nrows++];
    memset(r, 0, sizeof(*r));
    snprintf(r->group, sizeof(r->group), "%s", group);
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->unit, sizeof(r->unit), "%s", unit);
    return r;
}

void bu_report_row(const char *group, const char *name, const char *unit,
                   bu_stat st)
{
    new_row(group, name, unit)->st = st;
}

void bu_report_ratio(const char *name, bu_stat st, double target,
                     const char *target_text)
{
    row *r = new_row("ratio", name, "x");

    r->st = st;
    r->is_ratio = true;
    r->target = target;
    snprintf(r->target_text, sizeof(r->target_text), "%s",
             target_text != NULL ? target_text : "");
}

void bu_report_max(const char *group, const char *name, const char *unit,
                   bu_stat st, double max, const char *target_text)
{
    row *r = new_row(group, name, unit);

    r->st = st;
    r->is_max = true;
    r->target = max;
    snprintf(r->target_text, sizeof(r->target_text), "%s",
             target_text != NULL ? target_text : "");
}

void bu_report_note(const char *fmt, ...)
{
    va_list ap;
    char buf[1024];

    if (rep.nnotes == MAX_NOTES)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    rep.notes[rep.nnotes++] = strdup(buf);
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

static bool target_met(const row *r)
{
    return r->is_max ? r->st.med <= r->target : r->st.med >= r->target;
}

static const char *verdict(const row *r)
{
    if (r->is_max)
        return target_met(r) ? "met" : "NOT met";
    if (!r->is_ratio || r->target <= 0)
        return "";
    return target_met(r) ? "met" : "NOT met";
}

static void fmt_num(char *buf, size_t n, double v)
{
    if (v >= 1000 || v == (long long)v)
        snprintf(buf, n, "%.0f", v);
    else if (v >= 100)
        snprintf(buf, n, "%.1f", v);
    else
        snprintf(buf, n, "%.3g", v);
}

void bu_report_print(void)
{
    struct utsname u;
    char med[32], mn[32], mx[32];
    int i;

    uname(&u);
    if (rep.json) {
        printf("{\"program\":");
        json_str(rep.program);
        printf(",\"command\":");
        json_str(rep.cmd);
        printf(",\"runs\":%d,\"nproc\":%ld,\"kernel\":", bu_runs(),
               sysconf(_SC_NPROCESSORS_ONLN));
        json_str(u.release);
        printf(",\"rows\":[");
        for (i = 0; i < rep.nrows; i++) {
            row *r = &rep.rows[i];

            printf("%s\n {\"group\":", i ? "," : "");
            json_str(r->group);
            printf(",\"name\":");
            json_str(r->name);
            printf(",\"unit\":");
            json_str(r->unit);
            printf(",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g", r->st.med,
                   r->st.min, r->st.max);
            if ((r->is_ratio && r->target > 0) || r->is_max) {
                printf(",\"target\":%g,\"target_text\":", r->target);
                json_str(r->target_text);
                printf(",\"at_most\":%s,\"met\":%s",
                       r->is_max ? "true" : "false",
                       target_met(r) ? "true" : "false");
            }
            putchar('}');
        }
        printf("],\n\"notes\":[");
        for (i = 0; i < rep.nnotes; i++) {
            if (i)
                putchar(',');
            json_str(rep.notes[i]);
        }
        printf("]}\n");
        return;
    }
    printf("== %s (%s, %d runs each; median [min .. max]) ==\n",
           rep.program, rep.cmd, bu_runs());
    for (i = 0; i < rep.nrows; i++) {
        row *r = &rep.rows[i];

        fmt_num(med, sizeof(med), r->st.med);
        fmt_num(mn, sizeof(mn), r->st.min);
        fmt_num(mx, sizeof(mx), r->st.max);
        if (r->is_ratio)
            printf("  %-58s %9s  [%s .. %s]  %s%s%s\n", r->name, med, mn, mx,
                   r->target_text, *r->target_text ? " " : "", verdict(r));
        else
            printf("  %-14s %-43s %9s %-7s [%s .. %s]%s%s%s%s\n", r->group,
                   r->name, med, r->unit, mn, mx, r->is_max ? "  " : "",
                   r->target_text, r->is_max ? " " : "", verdict(r));
    }
    for (i = 0; i < rep.nnotes; i++)
        printf("  note: %s\n", rep.notes[i]);
    fflush(stdout);
}
