/*
 * stdio.c - lines per second of the log shipper's loop of
 * examples/fprintf_log.c, four ways, all in the same run, over TCP on
 * 127.0.0.1, the peer draining on a thread:
 *
 *   send           each line formatted with snprintf and sent with one
 *                  send(2) on a plain socket: the shipper before
 *                  libnegstream, writing a line at a time;
 *   fdopen         the example's loop before the change: fprintf into
 *                  fdopen(fd, "w") on a plain socket, then fclose;
 *   negstream_write  each line formatted and sent with one
 *                  negstream_write (EncryptAndSign, Kerberos): one frame
 *                  per line;
 *   negstream_fopen  the example's loop after the change: fprintf into
 *                  negstream_fopen(s, "w"), then fclose: one frame per
 *                  64512 bytes.
 *
 * The clock runs from the first line to the moment the peer has read the
 * last byte (authentication and connection set-up are outside it).  The
 * order of the four rotates from run to run.  Lines: BENCH_STDIO_LINES
 * (default 200000), the example's format (about 70 bytes each).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchutil.h"

/* The log line of examples/fprintf_log.c. */
#define LINE_FORMAT "2026-12-06T10:%02ld:%02ld web01 app[%d]: " \
                    "GET /item/%ld 200 served in %ld ms\n"
#define LINE_ARGS(i) (i) / 60 % 60, (i) % 60, 4242, (i), (i) * 7 % 500

enum { V_SEND, V_FDOPEN, V_WRITE, V_FOPEN, NVARIANTS };

static const char *const names[NVARIANTS] = {
    "send per line (plain socket)",
    "fprintf to fdopen, fclose (plain socket)",
    "negstream_write per line",
    "fprintf to negstream_fopen, fclose"
};

static size_t total_bytes(long n)
{
    char line[256];
    size_t total = 0;
    long i;

    for (i = 0; i < n; i++)
        total += (size_t)snprintf(line, sizeof(line), LINE_FORMAT,
                                  LINE_ARGS(i));
    return total;
}

/* ---- the peer: drains until it has every byte -------------------------- */

typedef struct drain {
    negstream   *s;            /* NULL: recv on fd */
    int          fd;
    size_t       want, got;
    char         error[300];
} drain;

static void *drain_main(void *p)
{
    drain *d = p;
    static char buf[64 * 1024];
    negstream_error err;
    ssize_t n;

    while (d->got < d->want) {
        if (d->s != NULL)
            n = negstream_read(d->s, buf, sizeof(buf), 0, sizeof(buf),
                               &err);
        else
            n = recv(d->fd, buf, sizeof(buf), 0);
        if (n < 0 && d->s == NULL && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(d->error, sizeof(d->error), "%s",
                     n == 0 ? "early end of stream"
                     : d->s != NULL ? err.message : strerror(errno));
            break;
        }
        d->got += (size_t)n;
    }
    return NULL;
}

/* ---- the four loops ---------------------------------------------------- */

static void loop_send(int fd, long n)
{
    char line[256];
    long i;

    for (i = 0; i < n; i++) {
        int len = snprintf(line, sizeof(line), LINE_FORMAT, LINE_ARGS(i));

        if (send(fd, line, (size_t)len, MSG_NOSIGNAL) != len)
            bu_die("send: %s", strerror(errno));
    }
}

static void loop_fdopen(int fd, long n)
{
    FILE *out = fdopen(fd, "w");
    long i;

    if (out == NULL)
        bu_die("fdopen: %s", strerror(errno));
    for (i = 0; i < n; i++)
        fprintf(out, LINE_FORMAT, LINE_ARGS(i));
    if (fclose(out) != 0)       /* closes fd too */
        bu_die("fclose: %s", strerror(errno));
}

static void loop_write(negstream *s, long n)
{
    negstream_error err;
    char line[256];
    long i;

    for (i = 0; i < n; i++) {
        int len = snprintf(line, sizeof(line), LINE_FORMAT, LINE_ARGS(i));

        if (negstream_write(s, line, sizeof(line), 0, len, &err) != len)
            bu_die("negstream_write: %s", err.message);
    }
}

static void loop_fopen(negstream *s, long n)
{
    FILE *out = negstream_fopen(s, "w");
    long i;

    if (out == NULL)
        bu_die("negstream_fopen: %s", strerror(errno));
    for (i = 0; i < n; i++)
        fprintf(out, LINE_FORMAT, LINE_ARGS(i));
    if (fclose(out) != 0)
        bu_die("fclose: %s", strerror(errno));
}

/* One variant, one run: lines per second. */
static double run_variant(int v, long n, size_t total)
{
    negstream *c = NULL, *s = NULL;
    pthread_t t;
    drain d;
    int fds[2];
    double t0, t1;

    memset(&d, 0, sizeof(d));
    if (v == V_WRITE || v == V_FOPEN) {
        bu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true, fds, &c, &s);
        d.s = s;
    } else {
        bu_socket_pair(fds, true);
        d.fd = fds[1];
    }
    d.want = total;
    if (pthread_create(&t, NULL, drain_main, &d) != 0)
        bu_die("pthread_create failed");
    t0 = bu_now();
    switch (v) {
    case V_SEND:
        loop_send(fds[0], n);
        break;
    case V_FDOPEN:
        loop_fdopen(fds[0], n);
        fds[0] = -1;
        break;
    case V_WRITE:
        loop_write(c, n);
        break;
    case V_FOPEN:
        loop_fopen(c, n);
        break;
    }
    pthread_join(t, NULL);
    t1 = bu_now();
    if (d.error[0] != '\0')
        bu_die("%s: reader: %s", names[v], d.error);
    if (c != NULL) {
        negstream_close(c);
        negstream_close(s);
    } else {
        if (fds[0] >= 0)
            close(fds[0]);
        close(fds[1]);
    }
    return (double)n / (t1 - t0);
}

int main(int argc, char **argv)
{
    double lps[NVARIANTS][BU_MAX_RUNS];
    double r_fopen_send[BU_MAX_RUNS], r_fopen_write[BU_MAX_RUNS];
    double r_write_send[BU_MAX_RUNS], r_fopen_fdopen[BU_MAX_RUNS];
    long n = (long)bu_env_size("BENCH_STDIO_LINES", 200000);
    int runs = bu_runs(), i, k;
    size_t total;

    bu_report_begin("stdio", argc, argv);
    if (n < 1)
        bu_die("BENCH_STDIO_LINES must be positive");
    total = total_bytes(n);
    for (i = 0; i < runs; i++) {
        for (k = 0; k < NVARIANTS; k++) {
            int v = (i + k) % NVARIANTS;

            lps[v][i] = run_variant(v, n, total);
        }
        r_fopen_send[i] = lps[V_FOPEN][i] / lps[V_SEND][i];
        r_fopen_write[i] = lps[V_FOPEN][i] / lps[V_WRITE][i];
        r_write_send[i] = lps[V_WRITE][i] / lps[V_SEND][i];
        r_fopen_fdopen[i] = lps[V_FOPEN][i] / lps[V_FDOPEN][i];
        if (!bu_report_json())
            fprintf(stderr, "stdio run %d: send %.0f, fdopen %.0f, "
                    "negstream_write %.0f, negstream_fopen %.0f lines/s\n",
                    i + 1, lps[V_SEND][i], lps[V_FDOPEN][i],
                    lps[V_WRITE][i], lps[V_FOPEN][i]);
    }
    for (k = 0; k < NVARIANTS; k++)
        bu_report_row("stdio", names[k], "lines/s", bu_stats(lps[k], runs));
    bu_report_ratio("negstream_fopen / send per line",
                    bu_stats(r_fopen_send, runs), 0, NULL);
    bu_report_ratio("negstream_fopen / negstream_write per line",
                    bu_stats(r_fopen_write, runs), 0, NULL);
    bu_report_ratio("negstream_write per line / send per line",
                    bu_stats(r_write_send, runs), 0, NULL);
    bu_report_ratio("negstream_fopen / fdopen",
                    bu_stats(r_fopen_fdopen, runs), 0, NULL);
    bu_report_note("%ld lines of about %zu bytes (%zu bytes), the format "
                   "of examples/fprintf_log.c; TCP 127.0.0.1; "
                   "EncryptAndSign (SPNEGO -> Kerberos) for the two "
                   "negstream rows; from the first line until the peer "
                   "has read the last byte", n, total / (size_t)n, total);
    bu_report_print();
    return 0;
}
