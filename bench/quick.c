/*
 * quick.c - the two figures of the async issue's closing note:
 *   - ops/s of 64-byte begin_write/end_write pairs (EncryptAndSign, one
 *     stream, one at a time, the peer draining with negstream_read);
 *   - MB/s of one 256 MiB EncryptAndSign begin_write (then end_write), the
 *     peer reading with negstream_read.
 * TCP over 127.0.0.1, default pool.  Sizes: BENCH_QUICK_OPS (default
 * 50000), BENCH_QUICK_BYTES (default 256 MiB).
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"

typedef struct drain {
    negstream      *s;
    size_t          want, got;
    const char     *error;
} drain;

static void *drain_main(void *p)
{
    drain *d = p;
    static uint8_t buf[64 * 1024];
    negstream_error err;
    ssize_t n;

    while (d->got < d->want) {
        n = negstream_read(d->s, buf, sizeof(buf), 0, sizeof(buf), &err);
        if (n <= 0) {
            d->error = n == 0 ? "early end of stream" : strdup(err.message);
            break;
        }
        d->got += (size_t)n;
    }
    return NULL;
}

static double small_pairs(size_t nops)
{
    uint8_t msg[64];
    negstream *c, *s;
    negstream_async *ar;
    negstream_error err;
    pthread_t t;
    drain d;
    int fds[2];
    double t0, t1;
    size_t k;

    memset(msg, 'q', sizeof(msg));
    bu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true, fds, &c, &s);
    memset(&d, 0, sizeof(d));
    d.s = s;
    d.want = nops * sizeof(msg);
    if (pthread_create(&t, NULL, drain_main, &d) != 0)
        bu_die("pthread_create failed");
    t0 = bu_now();
    for (k = 0; k < nops; k++) {
        ar = negstream_begin_write(c, msg, sizeof(msg), 0, sizeof(msg), NULL,
                                   NULL, &err);
        if (ar == NULL || negstream_end_write(c, ar, &err) < 0)
            bu_die("write %zu: %s", k, err.message);
    }
    t1 = bu_now();
    pthread_join(t, NULL);
    if (d.error != NULL)
        bu_die("reader: %s", d.error);
    negstream_close(c);
    negstream_close(s);
    return (double)nops / (t1 - t0);
}

static double big_write(uint8_t *buf, size_t len)
{
    negstream *c, *s;
    negstream_async *ar;
    negstream_error err;
    pthread_t t;
    drain d;
    int fds[2];
    double t0, t1;

    bu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true, fds, &c, &s);
    memset(&d, 0, sizeof(d));
    d.s = s;
    d.want = len;
    if (pthread_create(&t, NULL, drain_main, &d) != 0)
        bu_die("pthread_create failed");
    t0 = bu_now();
    ar = negstream_begin_write(c, buf, len, 0, (ssize_t)len, NULL, NULL,
                               &err);
    if (ar == NULL || negstream_end_write(c, ar, &err) < 0)
        bu_die("256 MiB write: %s", err.message);
    pthread_join(t, NULL);
    t1 = bu_now();
    if (d.error != NULL)
        bu_die("reader: %s", d.error);
    negstream_close(c);
    negstream_close(s);
    return (double)len / (t1 - t0) / 1e6;
}

int main(int argc, char **argv)
{
    double ops[BU_MAX_RUNS], mbs[BU_MAX_RUNS];
    size_t nops = bu_env_size("BENCH_QUICK_OPS", 50000);
    size_t len = bu_env_size("BENCH_QUICK_BYTES", (size_t)256 << 20);
    int runs = bu_runs(), i;
    uint8_t *buf;
    size_t k;

    bu_report_begin("quick", argc, argv);
    if (nops < 1 || len < 1)
        bu_die("BENCH_QUICK_OPS and BENCH_QUICK_BYTES must be positive");
    buf = malloc(len);
    if (buf == NULL)
        bu_die("cannot allocate %zu bytes", len);
    for (k = 0; k < len; k++)
        buf[k] = (uint8_t)(k * 2654435761u >> 11);
    for (i = 0; i < runs; i++) {
        ops[i] = small_pairs(nops);
        mbs[i] = big_write(buf, len);
        if (!bu_report_json())
            fprintf(stderr, "quick run %d: %.0f ops/s, %.0f MB/s\n", i + 1,
                    ops[i], mbs[i]);
    }
    bu_report_row("async", "64-byte begin_write+end_write pairs", "ops/s",
                  bu_stats(ops, runs));
    bu_report_row("async", "one EncryptAndSign begin_write of 256 MiB",
                  "MB/s", bu_stats(mbs, runs));
    bu_report_note("EncryptAndSign (SPNEGO -> Kerberos), TCP 127.0.0.1, "
                   "default pool; %zu pairs per run; %zu MiB write, peer "
                   "reading with negstream_read; MB = 10^6 bytes", nops,
                   len >> 20);
    bu_report_print();
    free(buf);
    return 0;
}
