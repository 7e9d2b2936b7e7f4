/*
 * throughput.c - bulk transfer through libnegstream against the same-run
 * ceiling.
 *
 * For each protection level (None, Sign, EncryptAndSign) and each run:
 *   library: a client stream sends BENCH_TP_BYTES (default 512 MiB) with
 *            begin_write calls of BENCH_TP_WRITE bytes (default 1 MiB),
 *            each issued from the callback of the previous one; a thread
 *            reads with negstream_read (64 KiB buffer) on the server end;
 *   ceiling: on another pair authenticated the same way (so the same
 *            mechanism, enctype and flags), a plain two-thread program
 *            uses the established GSS contexts directly: gss_wrap of
 *            64512-byte chunks (the library's frame size) + one writev of
 *            length prefix and token / read prefix + token + gss_unwrap.
 *            For None (no GSS framing): plain write / read of the same
 *            sizes.
 * Both on TCP over 127.0.0.1.  The ratio is library / ceiling per run.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <gssapi/gssapi.h>

#include "benchutil.h"
#include "frame.h"
#include "stream.h"

#define READ_BUF (64 * 1024)

static size_t g_total, g_per_op, g_buflen;
static uint8_t *g_buf;

/* ---- library: begin_write chained by callback ------------------------- */

typedef struct chain {
    negstream      *s;
    size_t          issued;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    bool            done, failed;
    negstream_error err;
} chain;

static void chain_finish(chain *c, bool failed)
{
    pthread_mutex_lock(&c->mu);
    c->done = true;
    c->failed = failed;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_written(negstream_async *ar);

/* Issues the next write.  issued is advanced before begin_write, because
 * the callback may run on a worker before begin_write returns. */
static void chain_issue(chain *c)
{
    size_t off = c->issued % g_buflen, count = g_total - c->issued;

    if (count > g_per_op)
        count = g_per_op;
    c->issued += count;
    if (negstream_begin_write(c->s, g_buf, g_buflen, (ssize_t)off,
                              (ssize_t)count, on_written, c, &c->err) == NULL)
        chain_finish(c, true);
}

static void on_written(negstream_async *ar)
{
    chain *c = negstream_async_state(ar);

    if (negstream_end_write(c->s, ar, &c->err) < 0) {
        chain_finish(c, true);
        return;
    }
    if (c->issued >= g_total)
        chain_finish(c, false);
    else
        chain_issue(c);
}

typedef struct reader {
    negstream      *s;       /* library reader, or NULL */
    int             fd;      /* raw reader */
    gss_ctx_id_t    ctx;     /* GSS_C_NO_CONTEXT: no unwrap */
    size_t          got;
    const char     *error;
} reader;

static void *lib_reader(void *p)
{
    reader *r = p;
    uint8_t *buf = malloc(READ_BUF);
    negstream_error err;
    ssize_t n;

    while (buf != NULL && r->got < g_total) {
        n = negstream_read(r->s, buf, READ_BUF, 0, READ_BUF, &err);
        if (n <= 0) {
            r->error = n == 0 ? "early end of stream" : strdup(err.message);
            break;
        }
        r->got += (size_t)n;
    }
    free(buf);
    return NULL;
}

static double run_library(negstream_protection level)
{
    negstream *c, *s;
    pthread_t t;
    reader r;
    chain ch;
    int fds[2];
    double t0, t1;

    bu_pair(level, true, fds, &c, &s);
    memset(&r, 0, sizeof(r));
    r.s = s;
    memset(&ch, 0, sizeof(ch));
    ch.s = c;
    pthread_mutex_init(&ch.mu, NULL);
    pthread_cond_init(&ch.cv, NULL);
    if (pthread_create(&t, NULL, lib_reader, &r) != 0)
        bu_die("pthread_create failed");
    t0 = bu_now();
    chain_issue(&ch);
    pthread_mutex_lock(&ch.mu);
    while (!ch.done)
        pthread_cond_wait(&ch.cv, &ch.mu);
    pthread_mutex_unlock(&ch.mu);
    pthread_join(t, NULL);
    t1 = bu_now();
    if (ch.failed)
        bu_die("library write failed: %s", ch.err.message);
    if (r.error != NULL)
        bu_die("library read failed: %s", r.error);
    negstream_close(c);
    negstream_close(s);
    pthread_cond_destroy(&ch.cv);
    pthread_mutex_destroy(&ch.mu);
    return (double)g_total / (t1 - t0) / 1e6;
}

/* ---- the ceiling: raw GSSAPI + write / read + unwrap -------------------- */

static void *raw_reader(void *p)
{
    reader *r = p;
    uint8_t *buf = malloc(READ_BUF + 1024);
    uint8_t hdr[4];
    OM_uint32 maj, min;
    gss_buffer_desc in, out;
    uint32_t len;
    ssize_t n;

    while (buf != NULL && r->got < g_total) {
        if (r->ctx == GSS_C_NO_CONTEXT) {
            n = read(r->fd, buf, READ_BUF);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                r->error = "raw read failed";
                break;
            }
            r->got += (size_t)n;
            continue;
        }
        bu_read_exact(r->fd, hdr, 4);
        len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8
              | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
        if (len > READ_BUF + 1024) {
            r->error = "frame too long";
            break;
        }
        bu_read_exact(r->fd, buf, len);
        in.value = buf;
        in.length = len;
        maj = gss_unwrap(&min, r->ctx, &in, &out, NULL, NULL);
        if (maj != GSS_S_COMPLETE) {
            r->error = "gss_unwrap failed";
            break;
        }
        r->got += out.length;
        gss_release_buffer(&min, &out);
    }
    free(buf);
    return NULL;
}

static double run_ceiling(negstream_protection level)
{
    negstream *c, *s;
    pthread_t t;
    reader r;
    int fds[2], conf = level == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    size_t done = 0, chunk, off;
    gss_ctx_id_t ctx;
    gss_buffer_desc in, out;
    OM_uint32 maj, min;
    struct iovec iov[2];
    uint8_t hdr[4];
    double t0, t1;

    bu_pair(level, true, fds, &c, &s);
    ctx = c->framed ? c->gss.ctx : GSS_C_NO_CONTEXT;
    memset(&r, 0, sizeof(r));
    r.fd = fds[1];
    r.ctx = s->framed ? s->gss.ctx : GSS_C_NO_CONTEXT;
    if (pthread_create(&t, NULL, raw_reader, &r) != 0)
        bu_die("pthread_create failed");
    t0 = bu_now();
    while (done < g_total) {
        off = done % g_buflen;
        chunk = g_total - done;
        if (ctx == GSS_C_NO_CONTEXT) {
            if (chunk > g_per_op)
                chunk = g_per_op;
            iov[0].iov_base = g_buf + off;
            iov[0].iov_len = chunk;
            bu_writev_all(fds[0], iov, 1);
            done += chunk;
            continue;
        }
        if (chunk > NEGSTREAM__MAX_CHUNK)
            chunk = NEGSTREAM__MAX_CHUNK;
        if (chunk > g_buflen - off)
            chunk = g_buflen - off;
        in.value = g_buf + off;
        in.length = chunk;
        maj = gss_wrap(&min, ctx, conf, GSS_C_QOP_DEFAULT, &in, NULL, &out);
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
        bu_writev_all(fds[0], iov, 2);
        gss_release_buffer(&min, &out);
        done += chunk;
    }
    pthread_join(t, NULL);
    t1 = bu_now();
    if (r.error != NULL)
        bu_die("ceiling reader: %s", r.error);
    negstream_close(c);
    negstream_close(s);
    return (double)g_total / (t1 - t0) / 1e6;
}

int main(int argc, char **argv)
{
    static const negstream_protection levels[] = {
        NEGSTREAM_PROTECTION_NONE, NEGSTREAM_PROTECTION_SIGN,
        NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
    };
    double lib[BU_MAX_RUNS], ceil[BU_MAX_RUNS], ratio[BU_MAX_RUNS];
    int runs = bu_runs(), i, l;
    char name[96];
    size_t k;

    bu_report_begin("throughput", argc, argv);
    g_total = bu_env_size("BENCH_TP_BYTES", (size_t)512 << 20);
    g_per_op = bu_env_size("BENCH_TP_WRITE", (size_t)1 << 20);
    if (g_total == 0 || g_per_op == 0)
        bu_die("BENCH_TP_BYTES and BENCH_TP_WRITE must be positive");
    /* Four writes' worth of source, reused cyclically. */
    g_buflen = g_per_op * 4;
    g_buf = malloc(g_buflen);
    if (g_buf == NULL)
        bu_die("cannot allocate %zu bytes", g_buflen);
    for (k = 0; k < g_buflen; k++)
        g_buf[k] = (uint8_t)(k * 2654435761u >> 13);

    for (l = 0; l < 3; l++) {
        for (i = 0; i < runs; i++) {
            /* Alternate the order so that drift hurts both alike. */
            if (i % 2 == 0) {
                lib[i] = run_library(levels[l]);
                ceil[i] = run_ceiling(levels[l]);
            } else {
                ceil[i] = run_ceiling(levels[l]);
                lib[i] = run_library(levels[l]);
            }
            ratio[i] = lib[i] / ceil[i];
            if (!bu_report_json())
                fprintf(stderr, "throughput %s run %d: library %.0f MB/s, "
                        "ceiling %.0f MB/s\n", bu_level_name(levels[l]),
                        i + 1, lib[i], ceil[i]);
        }
        snprintf(name, sizeof(name), "%s library begin_write chain",
                 bu_level_name(levels[l]));
        bu_report_row("throughput", name, "MB/s", bu_stats(lib, runs));
        snprintf(name, sizeof(name), "%s ceiling %s",
                 bu_level_name(levels[l]),
                 l == 0 ? "write/read"
                        : "gss_wrap+writev/read+gss_unwrap");
        bu_report_row("throughput", name, "MB/s", bu_stats(ceil, runs));
        snprintf(name, sizeof(name), "throughput %s library / ceiling",
                 bu_level_name(levels[l]));
        bu_report_ratio(name, bu_stats(ratio, runs), l == 0 ? 0 : 0.9,
                        l == 0 ? "" : "target >= 0.90");
    }
    bu_report_note("%zu MiB per transfer over TCP 127.0.0.1, begin_write of "
                   "%zu bytes each chained from its callback; frames of "
                   "%d bytes of plaintext; MB = 10^6 bytes",
                   g_total >> 20, g_per_op, NEGSTREAM__MAX_CHUNK);
    bu_report_print();
    free(g_buf);
    return 0;
}
