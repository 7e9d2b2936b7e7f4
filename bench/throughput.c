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
 *
 * With OpenSSL (issue 14) a Kerberos stream seals and opens its frames on
 * OpenSSL, so for Sign and EncryptAndSign each run also measures:
 *   library, NEGSTREAM_WRAP=gssapi: the same transfer on the GSSAPI path
 *            (what the library did before, and the fallback);
 *   OpenSSL limit: the ceiling pair's contexts as taken over, a loop of
 *            seal + open of 64512-byte frames in one thread, no I/O;
 *   MIT limit: the same loop with gss_wrap + gss_unwrap.
 * And once: sealing independent 64512-byte EncryptAndSign frames in 1 and
 * in 2 threads (each its own context), to see whether sealing the frames
 * of one large write in parallel could pay on this machine; and one
 * context sealing in one thread while opening in another, with one mutex
 * around both (the stream's gss_mu) and without (a mutex per direction
 * would allow it).
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
#ifdef HAVE_GSSAPI_GSSAPI_EXT_H      /* MIT; Heimdal: all in gssapi.h */
# include <gssapi/gssapi_ext.h>
#endif

#include "benchutil.h"
#include "frame.h"
#include "stream.h"
#if HAVE_OPENSSL
#include "wrap_cfx.h"
#endif

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

/* NEGSTREAM_WRAP is read when a context completes, in bu_pair: set it
 * around the handshake only, and put back what the caller had. */
static void pair_with_wrap(negstream_protection level, const char *wrap,
                           int fds[2], negstream **c, negstream **s)
{
    const char *was = getenv("NEGSTREAM_WRAP");
    char *saved = was != NULL ? strdup(was) : NULL;

    if (wrap != NULL)
        setenv("NEGSTREAM_WRAP", wrap, 1);
    bu_pair(level, true, fds, c, s);
    if (saved != NULL)
        setenv("NEGSTREAM_WRAP", saved, 1);
    else
        unsetenv("NEGSTREAM_WRAP");
    free(saved);
}

static double run_library(negstream_protection level, const char *wrap)
{
    negstream *c, *s;
    pthread_t t;
    reader r;
    chain ch;
    int fds[2];
    double t0, t1;

    pair_with_wrap(level, wrap, fds, &c, &s);
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

/* ---- the limits without I/O --------------------------------------------- */

static size_t g_limit_total;

/* MIT: gss_wrap + gss_unwrap of 64512-byte frames, one thread. */
static double run_limit_mit(negstream_protection level)
{
    negstream *c, *s;
    int fds[2], conf = level == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    size_t done = 0;
    gss_buffer_desc in, tok, out;
    OM_uint32 maj, min;
    double t0, t1;

    bu_pair(level, true, fds, &c, &s);
    t0 = bu_now();
    while (done < g_limit_total) {
        in.value = g_buf;
        in.length = NEGSTREAM__MAX_CHUNK;
        maj = gss_wrap(&min, c->gss.ctx, conf, GSS_C_QOP_DEFAULT, &in, NULL,
                       &tok);
        if (maj != GSS_S_COMPLETE)
            bu_die("gss_wrap failed (major 0x%x)", (unsigned)maj);
        maj = gss_unwrap(&min, s->gss.ctx, &tok, &out, NULL, NULL);
        if (maj != GSS_S_COMPLETE || out.length != NEGSTREAM__MAX_CHUNK)
            bu_die("gss_unwrap failed (major 0x%x)", (unsigned)maj);
        gss_release_buffer(&min, &tok);
        gss_release_buffer(&min, &out);
        done += NEGSTREAM__MAX_CHUNK;
    }
    t1 = bu_now();
    negstream_close(c);
    negstream_close(s);
    return (double)done / (t1 - t0) / 1e6;
}

#if HAVE_OPENSSL
/* OpenSSL: the same token made and checked by wrap_cfx.c on the contexts
 * a pair's handshake took over. */
static double run_limit_openssl(negstream_protection level)
{
    negstream *c, *s;
    int fds[2];
    bool conf = level == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, sealed;
    size_t done = 0, cap = NEGSTREAM__MAX_CHUNK + 256, off;
    uint8_t *tok = malloc(cap);
    const char *why = "";
    ssize_t n;
    double t0, t1;

    if (tok == NULL)
        bu_die("out of memory");
    bu_pair(level, true, fds, &c, &s);
    if (c->gss.cfx == NULL || s->gss.cfx == NULL)
        bu_die("the pair was not taken over (NEGSTREAM_WRAP=gssapi?)");
    t0 = bu_now();
    while (done < g_limit_total) {
        n = negstream__cfx_wrap(c->gss.cfx, conf, g_buf,
                                NEGSTREAM__MAX_CHUNK, tok, cap, &why);
        if (n < 0 ||
            negstream__cfx_unwrap(s->gss.cfx, tok, (size_t)n, &off, &sealed,
                                  &why) != NEGSTREAM__MAX_CHUNK)
            bu_die("seal/open failed: %s", why);
        done += NEGSTREAM__MAX_CHUNK;
    }
    t1 = bu_now();
    negstream_close(c);
    negstream_close(s);
    free(tok);
    return (double)done / (t1 - t0) / 1e6;
}

/* 64-byte EncryptAndSign wraps without I/O, what a small write costs in
 * crypto: the library's GSSAPI path (gss_wrap_iov into a buffer, as
 * gss.c does) or its OpenSSL path, on one pair's client context. */
static double run_small_wrap(negstream *c, bool openssl, size_t ops)
{
    uint8_t out[512];
    const char *why = "";
    gss_iov_buffer_desc iov[4];
    OM_uint32 maj, min;
    int conf_state;
    size_t i;
    double t0, t1;

    t0 = bu_now();
    for (i = 0; i < ops; i++) {
        if (openssl) {
            if (negstream__cfx_wrap(c->gss.cfx, true, g_buf, 64, out,
                                    sizeof(out), &why) < 0)
                bu_die("seal failed: %s", why);
            continue;
        }
        memset(iov, 0, sizeof(iov));
        iov[0].type = GSS_IOV_BUFFER_TYPE_HEADER;
        iov[1].type = GSS_IOV_BUFFER_TYPE_DATA;
        iov[1].buffer.length = 64;
        iov[2].type = GSS_IOV_BUFFER_TYPE_PADDING;
        iov[3].type = GSS_IOV_BUFFER_TYPE_TRAILER;
        maj = gss_wrap_iov_length(&min, c->gss.ctx, 1, GSS_C_QOP_DEFAULT,
                                  &conf_state, iov, 4);
        if (maj != GSS_S_COMPLETE)
            bu_die("gss_wrap_iov_length failed");
        iov[0].buffer.value = out;
        iov[1].buffer.value = out + iov[0].buffer.length;
        iov[2].buffer.value = (uint8_t *)iov[1].buffer.value + 64;
        iov[3].buffer.value = (uint8_t *)iov[2].buffer.value +
                              iov[2].buffer.length;
        memcpy(iov[1].buffer.value, g_buf, 64);
        maj = gss_wrap_iov(&min, c->gss.ctx, 1, GSS_C_QOP_DEFAULT,
                           &conf_state, iov, 4);
        if (maj != GSS_S_COMPLETE)
            bu_die("gss_wrap_iov failed");
    }
    t1 = bu_now();
    return (double)ops / (t1 - t0);
}

/* Sealing independent frames in several threads, each with its own
 * context (synthetic aes256-cts-hmac-sha1-96 keys, the realm's enctype):
 * would sealing the frames of one large write in parallel pay here? */
typedef struct sealer {
    pthread_t       t;
    negstream__cfx *cfx;
    size_t          bytes;
} sealer;

static void *seal_loop(void *p)
{
    sealer *w = p;
    size_t cap = NEGSTREAM__MAX_CHUNK + 256, done = 0;
    uint8_t *tok = malloc(cap);
    const char *why = "";

    if (tok == NULL)
        bu_die("out of memory");
    while (done < w->bytes) {
        if (negstream__cfx_wrap(w->cfx, true, g_buf, NEGSTREAM__MAX_CHUNK,
                                tok, cap, &why) < 0)
            bu_die("seal failed: %s", why);
        done += NEGSTREAM__MAX_CHUNK;
    }
    free(tok);
    return NULL;
}

static double run_parallel_seal(int nthreads)
{
    sealer w[8];
    uint8_t key[32];
    negstream__cfx_keys k;
    const char *why = "";
    double t0, t1;
    int i;

    memset(&k, 0, sizeof(k));
    for (i = 0; i < 32; i++)
        key[i] = (uint8_t)(i * 29 + 7);
    k.initiator = true;
    k.ctx_enctype = NEGSTREAM__ETYPE_AES256_SHA1;
    k.ctx_key = key;
    k.ctx_key_len = 32;
    for (i = 0; i < nthreads; i++) {
        w[i].cfx = negstream__cfx_new(&k, &why);
        if (w[i].cfx == NULL)
            bu_die("negstream__cfx_new: %s", why);
        w[i].bytes = g_limit_total / (size_t)nthreads;
    }
    t0 = bu_now();
    for (i = 0; i < nthreads; i++)
        if (pthread_create(&w[i].t, NULL, seal_loop, &w[i]) != 0)
            bu_die("pthread_create failed");
    for (i = 0; i < nthreads; i++)
        pthread_join(w[i].t, NULL);
    t1 = bu_now();
    for (i = 0; i < nthreads; i++)
        negstream__cfx_free(w[i].cfx);
    return (double)(g_limit_total / (size_t)nthreads * (size_t)nthreads) /
           (t1 - t0) / 1e6;
}

/* One stream reading and writing at once, on OpenSSL: one thread seals
 * frames (the send half of a context) while another opens frames from
 * the peer (the receive half), with one mutex around every call (the
 * stream's gss_mu today) or none (send and receive halves are
 * independent in wrap_cfx.c).  Both directions' bytes per second. */
typedef struct duplex {
    negstream__cfx  *cfx;
    pthread_mutex_t *mu;
    uint8_t        **toks;
    size_t          *lens;
    size_t           n;
} duplex;

static void *duplex_seal(void *p)
{
    duplex *d = p;
    size_t cap = NEGSTREAM__MAX_CHUNK + 256, i;
    uint8_t *tok = malloc(cap);
    const char *why = "";
    ssize_t r;

    if (tok == NULL)
        bu_die("out of memory");
    for (i = 0; i < d->n; i++) {
        if (d->mu != NULL)
            pthread_mutex_lock(d->mu);
        r = negstream__cfx_wrap(d->cfx, true, g_buf, NEGSTREAM__MAX_CHUNK,
                                tok, cap, &why);
        if (d->mu != NULL)
            pthread_mutex_unlock(d->mu);
        if (r < 0)
            bu_die("seal failed: %s", why);
    }
    free(tok);
    return NULL;
}

static void *duplex_open(void *p)
{
    duplex *d = p;
    size_t i, off;
    const char *why = "";
    bool sealed;
    ssize_t r;

    for (i = 0; i < d->n; i++) {
        if (d->mu != NULL)
            pthread_mutex_lock(d->mu);
        r = negstream__cfx_unwrap(d->cfx, d->toks[i], d->lens[i], &off,
                                  &sealed, &why);
        if (d->mu != NULL)
            pthread_mutex_unlock(d->mu);
        if (r != NEGSTREAM__MAX_CHUNK)
            bu_die("open failed: %s", why);
    }
    return NULL;
}

static double run_duplex(bool one_mutex)
{
    uint8_t key[32];
    negstream__cfx_keys k;
    negstream__cfx *me, *peer;
    const char *why = "";
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_t ts, to;
    duplex ds, dop;
    size_t n = g_limit_total / 4 / NEGSTREAM__MAX_CHUNK, i;
    size_t cap = NEGSTREAM__MAX_CHUNK + 256;
    double t0, t1;

    memset(&k, 0, sizeof(k));
    for (i = 0; i < 32; i++)
        key[i] = (uint8_t)(i * 31 + 3);
    k.ctx_enctype = NEGSTREAM__ETYPE_AES256_SHA1;
    k.ctx_key = key;
    k.ctx_key_len = 32;
    k.do_replay = k.do_sequence = true;
    k.initiator = true;
    me = negstream__cfx_new(&k, &why);
    k.initiator = false;
    peer = negstream__cfx_new(&k, &why);
    if (me == NULL || peer == NULL || n == 0)
        bu_die("duplex set-up: %s", why);
    memset(&ds, 0, sizeof(ds));
    memset(&dop, 0, sizeof(dop));
    dop.toks = calloc(n, sizeof(*dop.toks));
    dop.lens = calloc(n, sizeof(*dop.lens));
    if (dop.toks == NULL || dop.lens == NULL)
        bu_die("out of memory");
    for (i = 0; i < n; i++) {
        ssize_t r;

        dop.toks[i] = malloc(cap);
        if (dop.toks[i] == NULL)
            bu_die("out of memory");
        r = negstream__cfx_wrap(peer, true, g_buf, NEGSTREAM__MAX_CHUNK,
                                dop.toks[i], cap, &why);
        if (r < 0)
            bu_die("seal failed: %s", why);
        dop.lens[i] = (size_t)r;
    }
    ds.cfx = dop.cfx = me;
    ds.n = dop.n = n;
    ds.mu = dop.mu = one_mutex ? &mu : NULL;
    t0 = bu_now();
    if (pthread_create(&ts, NULL, duplex_seal, &ds) != 0 ||
        pthread_create(&to, NULL, duplex_open, &dop) != 0)
        bu_die("pthread_create failed");
    pthread_join(ts, NULL);
    pthread_join(to, NULL);
    t1 = bu_now();
    for (i = 0; i < n; i++)
        free(dop.toks[i]);
    free(dop.toks);
    free(dop.lens);
    negstream__cfx_free(me);
    negstream__cfx_free(peer);
    return (double)(2 * n * NEGSTREAM__MAX_CHUNK) / (t1 - t0) / 1e6;
}
#endif

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

    g_limit_total = bu_env_size("BENCH_TP_LIMIT_BYTES", (size_t)256 << 20);
    for (l = 0; l < 3; l++) {
        bool framed = l > 0;
        double gssapi[BU_MAX_RUNS], ossl[BU_MAX_RUNS], mit[BU_MAX_RUNS];
        double r_gss[BU_MAX_RUNS], r_ossl[BU_MAX_RUNS];

        for (i = 0; i < runs; i++) {
            /* Alternate the order so that drift hurts both alike. */
            if (i % 2 == 0) {
                lib[i] = run_library(levels[l], NULL);
                ceil[i] = run_ceiling(levels[l]);
            } else {
                ceil[i] = run_ceiling(levels[l]);
                lib[i] = run_library(levels[l], NULL);
            }
            ratio[i] = lib[i] / ceil[i];
            if (framed) {
                gssapi[i] = run_library(levels[l], "gssapi");
                mit[i] = run_limit_mit(levels[l]);
                r_gss[i] = gssapi[i] / ceil[i];
#if HAVE_OPENSSL
                ossl[i] = run_limit_openssl(levels[l]);
                r_ossl[i] = lib[i] / ossl[i];
#else
                ossl[i] = r_ossl[i] = 0;
#endif
            }
            if (!bu_report_json())
                fprintf(stderr, "throughput %s run %d: library %.0f MB/s, "
                        "ceiling %.0f MB/s%s\n", bu_level_name(levels[l]),
                        i + 1, lib[i], ceil[i], framed ? "" : "");
            if (!bu_report_json() && framed)
                fprintf(stderr, "throughput %s run %d: library on GSSAPI "
                        "%.0f MB/s, limits: OpenSSL %.0f MB/s, MIT %.0f "
                        "MB/s\n", bu_level_name(levels[l]), i + 1,
                        gssapi[i], ossl[i], mit[i]);
        }
        snprintf(name, sizeof(name), "%s library begin_write chain",
                 bu_level_name(levels[l]));
        bu_report_row("throughput", name, "MB/s", bu_stats(lib, runs));
        if (framed) {
            snprintf(name, sizeof(name), "%s library, NEGSTREAM_WRAP=gssapi",
                     bu_level_name(levels[l]));
            bu_report_row("throughput", name, "MB/s", bu_stats(gssapi, runs));
        }
        snprintf(name, sizeof(name), "%s ceiling %s",
                 bu_level_name(levels[l]),
                 l == 0 ? "write/read"
                        : "gss_wrap+writev/read+gss_unwrap");
        bu_report_row("throughput", name, "MB/s", bu_stats(ceil, runs));
        if (framed) {
#if HAVE_OPENSSL
            snprintf(name, sizeof(name), "%s limit: OpenSSL seal+open, no "
                     "I/O", bu_level_name(levels[l]));
            bu_report_row("throughput", name, "MB/s", bu_stats(ossl, runs));
#endif
            snprintf(name, sizeof(name), "%s limit: gss_wrap+gss_unwrap, "
                     "no I/O", bu_level_name(levels[l]));
            bu_report_row("throughput", name, "MB/s", bu_stats(mit, runs));
        }
        snprintf(name, sizeof(name), "throughput %s library / ceiling",
                 bu_level_name(levels[l]));
        bu_report_ratio(name, bu_stats(ratio, runs),
                        l == 0 ? 0 : l == 1 ? 1.5 : 2.5,
                        l == 0 ? "" : l == 1 ? "target >= 1.5 (issue 14)"
                                             : "target >= 2.5 (issue 14)");
        if (framed) {
            snprintf(name, sizeof(name), "throughput %s library on GSSAPI / "
                     "ceiling", bu_level_name(levels[l]));
            bu_report_ratio(name, bu_stats(r_gss, runs), 0.9,
                            "target >= 0.90");
#if HAVE_OPENSSL
            snprintf(name, sizeof(name), "throughput %s library / OpenSSL "
                     "limit", bu_level_name(levels[l]));
            bu_report_ratio(name, bu_stats(r_ossl, runs), 0, "");
#endif
        }
    }
#if HAVE_OPENSSL
    {
        double one[BU_MAX_RUNS], two[BU_MAX_RUNS], sp[BU_MAX_RUNS];

        for (i = 0; i < runs; i++) {
            one[i] = run_parallel_seal(1);
            two[i] = run_parallel_seal(2);
            sp[i] = two[i] / one[i];
        }
        bu_report_row("throughput", "seal 64512-byte EncryptAndSign frames, "
                      "1 thread", "MB/s", bu_stats(one, runs));
        bu_report_row("throughput", "seal 64512-byte EncryptAndSign frames, "
                      "2 threads", "MB/s", bu_stats(two, runs));
        bu_report_ratio("seal 2 threads / 1 thread", bu_stats(sp, runs), 0,
                        "");
        {
            negstream *c, *s2;
            int fds[2];

            bu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true, fds, &c,
                    &s2);
            if (c->gss.cfx == NULL)
                bu_die("the pair was not taken over");
            for (i = 0; i < runs; i++) {
                if (i % 2 == 0) {
                    one[i] = run_small_wrap(c, false, 200000);
                    two[i] = run_small_wrap(c, true, 200000);
                } else {
                    two[i] = run_small_wrap(c, true, 200000);
                    one[i] = run_small_wrap(c, false, 200000);
                }
                sp[i] = two[i] / one[i];
            }
            negstream_close(c);
            negstream_close(s2);
        }
        bu_report_row("throughput", "64-byte EncryptAndSign wrap, "
                      "gss_wrap_iov (GSSAPI path)", "ops/s",
                      bu_stats(one, runs));
        bu_report_row("throughput", "64-byte EncryptAndSign wrap, OpenSSL "
                      "path", "ops/s", bu_stats(two, runs));
        bu_report_ratio("64-byte wrap OpenSSL / GSSAPI", bu_stats(sp, runs),
                        1.0, "target >= 1 (issue 14: small writes no "
                        "slower)");
        for (i = 0; i < runs; i++) {
            one[i] = run_duplex(true);
            two[i] = run_duplex(false);
            sp[i] = two[i] / one[i];
        }
        bu_report_row("throughput", "duplex seal || open on one context, "
                      "one mutex", "MB/s", bu_stats(one, runs));
        bu_report_row("throughput", "duplex seal || open on one context, "
                      "no mutex", "MB/s", bu_stats(two, runs));
        bu_report_ratio("duplex no mutex / one mutex", bu_stats(sp, runs), 0,
                        "");
    }
#endif
    bu_report_note("%zu MiB per transfer over TCP 127.0.0.1, begin_write of "
                   "%zu bytes each chained from its callback; frames of "
                   "%d bytes of plaintext; MB = 10^6 bytes",
                   g_total >> 20, g_per_op, NEGSTREAM__MAX_CHUNK);
    bu_report_print();
    free(g_buf);
    return 0;
}
