/*
 * check_io.c - streams on custom transports (negstream_new_io(3)), under
 * the test realm (tests/io.krb).  Three transports (tests/iotransport.c):
 *
 *  - a pipe pair: a read fd and a write fd, NEGSTREAM_IO_CONCURRENT;
 *  - memory: one byte or "would block" per call, in every form the
 *    contract has (EAGAIN, EWOULDBLOCK, NEGSTREAM_IO_WANT_READ, and a read
 *    answering NEGSTREAM_IO_WANT_WRITE as TLS does), so that every step
 *    of a handshake and of a frame parks and resumes; it aborts if a
 *    write after "would block" does not repeat it;
 *  - OpenSSL TLS on 127.0.0.1, with the channel bindings of the server
 *    certificate on both sides and the server's policy ALWAYS
 *    (WHEN_SUPPORTED with Heimdal, which cannot require the bindings).
 *
 * For each: a full authentication (synchronous and asynchronous), data
 * both ways and both at once, close during a parked read and during a
 * blocked synchronous read, and failures of the transport's read and
 * write (NEGSTREAM_E_IO with the errno; the stream faulted).  Then what
 * the table promises: its checks, shutdown before close and each once,
 * close when no step runs (in negstream_close itself if none does),
 * serialised calls, no call after close, ctx freed by close, a transport
 * without shutdown leaving the connection usable (leave_inner_open),
 * bad return values, deadlines; and a man in the middle who terminates TLS
 * (tlsutil.c's relay): accepted under NEVER, refused under the TLS policy.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "iotransport.h"
#include "op.h"
#include "stream.h"
#include "testutil.h"
#if HAVE_OPENSSL
#include "tlsutil.h"
#endif

enum { T_PIPE, T_MEM, T_TLS, T_COUNT };
static const char *const tname[T_COUNT] = { "pipe pair", "memory", "TLS" };

static const negstream_protection levels[] = {
    NEGSTREAM_PROTECTION_NONE, NEGSTREAM_PROTECTION_SIGN,
    NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
};

/* Bytes of the big transfers: three frames (one partial) on the pipes and
 * TLS; two frames in memory, where each byte costs two parked steps. */
static size_t big_size(int kind)
{
    if (kind == T_MEM)
        return getenv("NEGTEST_UNDER_VALGRIND") != NULL ? 3000
               : NEGSTREAM_MAX_FRAME_PLAINTEXT + 700;
    return 2 * NEGSTREAM_MAX_FRAME_PLAINTEXT + 9000;
}

/* ---- a pair of streams on a pair of transports -------------------------- */

typedef struct tpair {
    int          kind;
    void        *cctx, *sctx;
    negstream_io cio, sio;
    negstream   *c, *s;
#if HAVE_OPENSSL
    X509        *cert;
    EVP_PKEY    *key;
    unsigned char ccb[NEGSTREAM_CHANNEL_BINDING_MAX];
    unsigned char scb[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t       ccb_len, scb_len;
#endif
} tpair;

/* Transports of 'kind' and streams on them; false (a SKIP line printed)
 * when the build cannot make them. */
static bool pair_new(tpair *p, int kind)
{
    negstream_error e;

    memset(p, 0, sizeof(*p));
    p->kind = kind;
    switch (kind) {
    case T_PIPE:
        tio_pipe_pair(&p->cio, &p->cctx, &p->sio, &p->sctx);
        break;
    case T_MEM:
        tio_mem_pair(1, &p->cio, &p->cctx, &p->sio, &p->sctx);
        break;
    default:
#if HAVE_OPENSSL
    {
        SSL *cs, *ss;
        int fds[2];

        tt_make_cert("localhost", &p->cert, &p->key);
        tt_tcp_pair(p->cert, p->key, &cs, &ss, fds);
        p->ccb_len = sizeof(p->ccb);
        p->scb_len = sizeof(p->scb);
        ck_assert_int_eq(negstream_channel_binding_from_ssl(cs, p->ccb,
                                                            &p->ccb_len,
                                                            &e), 0);
        ck_assert_int_eq(negstream_channel_binding_from_ssl(ss, p->scb,
                                                            &p->scb_len,
                                                            &e), 0);
        p->cctx = tio_tls_new(cs, fds[0], &p->cio);
        p->sctx = tio_tls_new(ss, fds[1], &p->sio);
        break;
    }
#else
        printf("SKIP: TLS transport: built without OpenSSL\n");
        return false;
#endif
    }
    p->c = negstream_new_io(&p->cio, p->cctx, &e);
    ck_assert_msg(p->c != NULL, "negstream_new_io: %s", e.message);
    p->s = negstream_new_io(&p->sio, p->sctx, &e);
    ck_assert_msg(p->s != NULL, "negstream_new_io: %s", e.message);
    TIO_HOOKS(p->cctx)->lib_lock = &p->c->mu;
    TIO_HOOKS(p->sctx)->lib_lock = &p->s->mu;
    return true;
}

/* The library's promises about the calls it made on one transport. */
static void check_hooks(const tpair *p, void *ctx, const char *side)
{
    tio_hooks *h = TIO_HOOKS(ctx);

    ck_assert_msg(atomic_load(&h->closes) == 1, "%s %s: close called %d "
                  "times", tname[p->kind], side, atomic_load(&h->closes));
    ck_assert_msg(atomic_load(&h->shutdowns) <= 1, "%s %s: shutdown "
                  "called %d times", tname[p->kind], side,
                  atomic_load(&h->shutdowns));
    ck_assert_msg(atomic_load(&h->after_close) == 0, "%s %s: %d calls "
                  "after close", tname[p->kind], side,
                  atomic_load(&h->after_close));
    ck_assert_msg(atomic_load(&h->under_lock) == 0, "%s %s: shutdown or "
                  "close called %d times under the stream's lock",
                  tname[p->kind], side, atomic_load(&h->under_lock));
    /* Serialised unless the table says NEGSTREAM_IO_CONCURRENT. */
    if (p->kind != T_PIPE)
        ck_assert_msg(atomic_load(&h->overlaps) == 0, "%s %s: %d calls "
                      "overlapped", tname[p->kind], side,
                      atomic_load(&h->overlaps));
}

/* Closes what is left of the pair, waits for both transports' close and
 * checks what the library did with them. */
static void pair_free(tpair *p)
{
    if (p->c != NULL)
        negstream_close(p->c);
    if (p->s != NULL)
        negstream_close(p->s);
    ck_assert_msg(tio_wait_closed(p->cctx, 10000), "%s: the client's "
                  "transport was never closed", tname[p->kind]);
    ck_assert_msg(tio_wait_closed(p->sctx, 10000), "%s: the server's "
                  "transport was never closed", tname[p->kind]);
    check_hooks(p, p->cctx, "client");
    check_hooks(p, p->sctx, "server");
    tio_free(p->cctx);
    tio_free(p->sctx);
#if HAVE_OPENSSL
    X509_free(p->cert);
    EVP_PKEY_free(p->key);
#endif
}

/* TLS sessions bind the authentication to the channel.  Heimdal 7.8
 * never sets GSS_C_CHANNEL_BOUND_FLAG, so a server cannot require it
 * (ALWAYS is NEGSTREAM_E_NOT_SUPPORTED there, check_bindings.c): the
 * bindings are still sent and compared by GSSAPI, under WHEN_SUPPORTED. */
#if HAVE_DECL_GSS_C_CHANNEL_BOUND_FLAG
#define TLS_POLICY NEGSTREAM_EXTENDED_PROTECTION_ALWAYS
#define TLS_POLICY_NAME "ALWAYS"
#define TLS_BOUND  true
#else
#define TLS_POLICY NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED
#define TLS_POLICY_NAME "WHEN_SUPPORTED"
#define TLS_BOUND  false
#endif

/* The client's options for level (NONE: NTLM), with TLS's bindings. */
static void pair_options(tpair *p, negstream_protection level,
                         negstream_client_options *co,
                         negstream_server_options *so)
{
    tu_auth a;

    tu_auth_init(&a, level);
    tu_client_options(&a, co);
    negstream_server_options_init(so);
    so->protection = level;
#if HAVE_OPENSSL
    if (p->kind == T_TLS) {
        co->channel_binding = p->ccb;
        co->channel_binding_len = p->ccb_len;
        so->extended_protection = TLS_POLICY;
        so->channel_binding = p->scb;
        so->channel_binding_len = p->scb_len;
    }
#else
    (void)p;
#endif
}

/* Authenticates the pair: the server asynchronously, the client
 * synchronously or asynchronously. */
static void pair_auth(tpair *p, negstream_protection level,
                      bool client_async)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_async *sar, *car;
    negstream_error ce, se;
    int crc;

    pair_options(p, level, &co, &so);
    sar = negstream_begin_authenticate_as_server(p->s, &so, NULL, NULL,
                                                 &se);
    ck_assert_msg(sar != NULL, "begin server: %s", se.message);
    if (client_async) {
        car = negstream_begin_authenticate_as_client(p->c, &co, NULL, NULL,
                                                     &ce);
        ck_assert_msg(car != NULL, "begin client: %s", ce.message);
        crc = negstream_end_authenticate_as_client(p->c, car, &ce);
    } else {
        crc = negstream_authenticate_as_client(p->c, &co, &ce);
    }
    ck_assert_msg(crc == 0, "%s: client: %s: %s", tname[p->kind],
                  negstream_status_name(ce.code), ce.message);
    ck_assert_msg(negstream_end_authenticate_as_server(p->s, sar, &se) == 0,
                  "%s: server: %s: %s", tname[p->kind],
                  negstream_status_name(se.code), se.message);
    ck_assert(negstream_is_authenticated(p->c));
    ck_assert(negstream_is_authenticated(p->s));
    if (p->kind == T_TLS)
        ck_assert_msg(negstream_is_channel_bound(p->s) == TLS_BOUND,
                      "TLS: channel bound: %d", !TLS_BOUND);
}

/* ---- sessions ----------------------------------------------------------- */

/*
 * Authentication, then the client writes asynchronously what the server
 * reads synchronously (a thread), then the server writes synchronously
 * what the client reads in a callback chain.  _i: transport (_i / 3),
 * level (_i % 3); the client authenticates asynchronously when _i is
 * odd.
 */
START_TEST(test_session)
{
    int kind = _i / 3;
    negstream_protection level = levels[_i % 3];
    size_t big = big_size(kind), back = big / 3 + 1;
    uint8_t *data, *data2;
    negstream_async *war;
    negstream_error e;
    tu_reader rd;
    tu_chain x;
    tpair p;

    TU_NEEDS_NTLM(level == NEGSTREAM_PROTECTION_NONE);
    if (!pair_new(&p, kind))
        return;
    pair_auth(&p, level, _i % 2 == 1);
    ck_assert_int_eq(negstream_is_encrypted(p.s),
                     level == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);

    data = malloc(big);
    data2 = malloc(back);
    ck_assert(data != NULL && data2 != NULL);
    tu_fill(data, big, 11u + (uint32_t)_i);
    tu_fill(data2, back, 12u + (uint32_t)_i);

    tu_reader_start(&rd, p.s, 7000, big);
    war = negstream_begin_write(p.c, data, big, 0, (ssize_t)big, NULL, NULL,
                                &e);
    ck_assert_msg(war != NULL, "begin_write: %s", e.message);
    ck_assert_msg(negstream_end_write(p.c, war, &e) == 0, "%s: write: %s",
                  tname[kind], e.message);
    tu_reader_join(&rd);
    ck_assert_msg(rd.rc == 0, "%s: reader: %s", tname[kind],
                  rd.err.message);
    ck_assert_uint_eq(rd.got, big);
    ck_assert(rd.hash == tu_fnv(TU_FNV_INIT, data, big));

    tu_chain_start(&x, p.c, 5000, back);
    tu_write_all(p.s, data2, back);
    tu_chain_wait(&x, data2, 120000);

    if (kind == T_MEM) {
        /* Every step parked: "would block" in each of its forms. */
        ck_assert_int_gt(atomic_load(&TIO_HOOKS(p.cctx)->would_blocks),
                         (int)big);
        ck_assert_int_gt(atomic_load(&TIO_HOOKS(p.sctx)->want_write_reads),
                         (int)big / 3);
    }
    free(data);
    free(data2);
    pair_free(&p);
}
END_TEST

/*
 * Both directions at once, on both streams: a read and a write pending on
 * each stream, each running on a worker whenever its transport is ready.
 * A serialised transport (memory, TLS) is never entered twice at once;
 * TLS is the case that matters (SSL_read and SSL_write on one SSL * at
 * the same time corrupt it).  _i: transport.
 */
START_TEST(test_full_duplex)
{
    int kind = _i;
    size_t big = big_size(kind);
    negstream_async *wc, *ws;
    uint8_t *dc, *ds;
    negstream_error e;
    tu_chain xc, xs;
    tpair p;

    if (!pair_new(&p, kind))
        return;
    pair_auth(&p, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true);
    dc = malloc(big);
    ds = malloc(big);
    ck_assert(dc != NULL && ds != NULL);
    tu_fill(dc, big, 21);
    tu_fill(ds, big, 22);
    tu_chain_start(&xs, p.s, 5000, big);
    tu_chain_start(&xc, p.c, 5000, big);
    wc = negstream_begin_write(p.c, dc, big, 0, (ssize_t)big, NULL, NULL,
                               &e);
    ws = negstream_begin_write(p.s, ds, big, 0, (ssize_t)big, NULL, NULL,
                               &e);
    ck_assert(wc != NULL && ws != NULL);
    ck_assert_msg(negstream_end_write(p.c, wc, &e) == 0, "%s", e.message);
    ck_assert_msg(negstream_end_write(p.s, ws, &e) == 0, "%s", e.message);
    tu_chain_wait(&xs, dc, 120000);
    tu_chain_wait(&xc, ds, 120000);
    free(dc);
    free(ds);
    pair_free(&p);          /* checks: no overlap on memory and TLS */
}
END_TEST

/* ---- close ------------------------------------------------------------- */

static atomic_int cb_calls;

/* Counts its calls; the test ends the result. */
static void read_cb(negstream_async *ar)
{
    (void)ar;
    atomic_fetch_add(&cb_calls, 1);
}

/* Whether s's pending read is parked with the poller. */
static bool read_parked(negstream *s)
{
    bool parked;

    pthread_mutex_lock(&s->mu);
    parked = s->op_read != NULL && s->op_read->state == NEGSTREAM__OP_PARKED;
    pthread_mutex_unlock(&s->mu);
    return parked;
}

/*
 * A read parked with the poller (the peer says nothing), then
 * negstream_close: the read completes with DISPOSED, its callback runs
 * once; the transport's shutdown and close were both called, once, before
 * negstream_close returned (no step was running); the peer, whose
 * transport sees the end (pipe closed, memory end, TLS close_notify),
 * reads the end of the stream.  _i: transport.
 */
START_TEST(test_close_parked_read)
{
    int kind = _i, left = 20000;
    tio_hooks *sh;
    uint8_t buf[100];
    negstream_async *ar;
    negstream_error e;
    tpair p;

    if (!pair_new(&p, kind))
        return;
    pair_auth(&p, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false);
    sh = TIO_HOOKS(p.sctx);
    atomic_store(&cb_calls, 0);
    ar = negstream_begin_read(p.s, buf, sizeof(buf), 0, sizeof(buf),
                              read_cb, p.s, &e);
    ck_assert_ptr_nonnull(ar);
    while (!read_parked(p.s) && left-- > 0)
        usleep(1000);
    ck_assert_msg(read_parked(p.s), "%s: the read never parked",
                  tname[kind]);
    ck_assert_int_eq(atomic_load(&sh->shutdowns), 0);

    negstream_close(p.s);
    ck_assert_int_eq(atomic_load(&sh->shutdowns), 1);
    ck_assert_int_eq(atomic_load(&sh->closes), 1);
    ck_assert_int_eq(negstream_end_read(p.s, ar, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    left = 10000;
    while (atomic_load(&cb_calls) == 0 && left-- > 0)
        usleep(1000);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&cb_calls), 1);
    p.s = NULL;

    /* The peer reads the end of the stream (shutdown's role). */
    ck_assert_int_eq(negstream_read(p.c, buf, sizeof(buf), 0, sizeof(buf),
                                    &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    pair_free(&p);
}
END_TEST

typedef struct sync_reader {
    negstream      *s;
    long            tid;
    atomic_int      started;
    ssize_t         n;
    negstream_error e;
} sync_reader;

static void *sync_reader_main(void *arg)
{
    sync_reader *r = arg;
    uint8_t b[64];

    r->tid = (long)syscall(SYS_gettid);
    atomic_store(&r->started, 1);
    r->n = negstream_read(r->s, b, sizeof(b), 0, sizeof(b), &r->e);
    return NULL;
}

/*
 * A synchronous read blocked in poll on another thread, then
 * negstream_close: the read fails with DISPOSED; shutdown and close are
 * each called once, shutdown first, whichever thread ends last closes.
 * _i: transport.
 */
START_TEST(test_close_blocked_sync_read)
{
    int kind = _i, left = 20000;
    sync_reader r;
    pthread_t th;
    tpair p;

    if (!pair_new(&p, kind))
        return;
    pair_auth(&p, NEGSTREAM_PROTECTION_SIGN, true);
    memset(&r, 0, sizeof(r));
    r.s = p.s;
    ck_assert_int_eq(pthread_create(&th, NULL, sync_reader_main, &r), 0);
    while ((atomic_load(&r.started) == 0 || !tu_blocked_in_io(r.tid)) &&
           left-- > 0)
        usleep(1000);
    ck_assert_msg(left > 0, "the reader never blocked");
    negstream_close(p.s);
    pthread_join(th, NULL);
    ck_assert_int_eq(r.n, -1);
    ck_assert_msg(r.e.code == NEGSTREAM_E_DISPOSED, "%s: %s",
                  negstream_status_name(r.e.code), r.e.message);
    ck_assert(tio_wait_closed(p.sctx, 10000));
    ck_assert_int_eq(atomic_load(&TIO_HOOKS(p.sctx)->shutdowns), 1);
    p.s = NULL;
    pair_free(&p);
}
END_TEST

/* ---- transport failures ------------------------------------------------ */

/*
 * The transport's read fails (ECONNRESET) under a synchronous read, its
 * write (EPIPE) under an asynchronous write: NEGSTREAM_E_IO with that
 * errno, and the stream faulted: every later read and write fails at once
 * with the first failure and its errno.  _i: transport.
 */
START_TEST(test_transport_errors)
{
    int kind = _i;
    uint8_t buf[100];
    negstream_async *ar;
    negstream_error e, e2;
    tpair p;

    if (!pair_new(&p, kind))
        return;
    pair_auth(&p, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false);

    atomic_store(&TIO_HOOKS(p.sctx)->fail_read, ECONNRESET);
    ck_assert_int_eq(negstream_read(p.s, buf, sizeof(buf), 0, sizeof(buf),
                                    &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_IO && e.sys_errno == ECONNRESET &&
                  strstr(e.message, "transport's read failed") != NULL,
                  "%s: %s (errno %d): %s", tname[kind],
                  negstream_status_name(e.code), e.sys_errno, e.message);
    ck_assert_int_eq(negstream_write(p.s, "x", 1, 0, 1, &e2), -1);
    ck_assert_int_eq(e2.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e2.sys_errno, ECONNRESET);
    ck_assert_msg(strstr(e2.message, "failed earlier") != NULL, "%s",
                  e2.message);

    atomic_store(&TIO_HOOKS(p.cctx)->fail_write, EPIPE);
    ar = negstream_begin_write(p.c, "hello", 5, 0, 5, NULL, NULL, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert_int_eq(negstream_end_write(p.c, ar, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_IO && e.sys_errno == EPIPE &&
                  strstr(e.message, "transport's write failed") != NULL,
                  "%s: %s (errno %d): %s", tname[kind],
                  negstream_status_name(e.code), e.sys_errno, e.message);
    ck_assert_int_eq(negstream_read(p.c, buf, sizeof(buf), 0, sizeof(buf),
                                    &e2), -1);
    ck_assert_int_eq(e2.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e2.sys_errno, EPIPE);
    pair_free(&p);
}
END_TEST

/*
 * A synchronous write, on the application's thread, to a pipe whose
 * reader is gone (the peer's stream closed its transport), with SIGPIPE's
 * default disposition (death): NEGSTREAM_E_IO with EPIPE, and no SIGPIPE
 * delivered or left pending (the library consumes the one its call
 * raised).  Under Check's fork mode a SIGPIPE would end the test with a
 * signal.
 */
START_TEST(test_sigpipe_sync_write)
{
    uint8_t data[100] = { 0 };
    negstream_error e;
    sigset_t pending;
    tpair p;

    ck_assert(pair_new(&p, T_PIPE));
    pair_auth(&p, NEGSTREAM_PROTECTION_SIGN, false);
    ck_assert(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    negstream_close(p.s);
    p.s = NULL;
    ck_assert(tio_wait_closed(p.sctx, 10000));
    ck_assert_int_eq(negstream_write(p.c, data, sizeof(data), 0,
                                     sizeof(data), &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_IO && e.sys_errno == EPIPE &&
                  strstr(e.message, "peer closed") != NULL,
                  "%s (errno %d): %s", negstream_status_name(e.code),
                  e.sys_errno, e.message);
    ck_assert_int_eq(sigpending(&pending), 0);
    ck_assert(!sigismember(&pending, SIGPIPE));
    pair_free(&p);
}
END_TEST

/*
 * The client's transport fails its first write (ENETDOWN) during the
 * handshake: the client's authentication fails with NEGSTREAM_E_IO and
 * that errno; once it is closed, its shutdown ends the connection and the
 * server's authentication fails too, without waiting for its deadline.
 * _i: transport.
 */
START_TEST(test_transport_error_in_handshake)
{
    int kind = _i;
    negstream_client_options co;
    negstream_server_options so;
    negstream_async *sar;
    negstream_error ce, se;
    tpair p;

    if (!pair_new(&p, kind))
        return;
    pair_options(&p, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &co, &so);
    sar = negstream_begin_authenticate_as_server(p.s, &so, NULL, NULL, &se);
    ck_assert_ptr_nonnull(sar);
    atomic_store(&TIO_HOOKS(p.cctx)->fail_write, ENETDOWN);
    ck_assert_int_eq(negstream_authenticate_as_client(p.c, &co, &ce), -1);
    ck_assert_msg(ce.code == NEGSTREAM_E_IO && ce.sys_errno == ENETDOWN,
                  "%s: %s (errno %d): %s", tname[kind],
                  negstream_status_name(ce.code), ce.sys_errno, ce.message);
    negstream_close(p.c);
    p.c = NULL;
    ck_assert_int_eq(negstream_end_authenticate_as_server(p.s, sar, &se),
                     -1);
    ck_assert_msg(se.code == NEGSTREAM_E_IO || se.code ==
                  NEGSTREAM_E_AUTHENTICATION, "%s: server: %s: %s",
                  tname[kind], negstream_status_name(se.code), se.message);
    pair_free(&p);
}
END_TEST

/*
 * A man in the middle who terminates TLS with a certificate of his own
 * (tlsutil.c's relay) and passes every byte on unchanged: the client
 * binds to the relay's certificate, the server to its own.  _i 0: policy
 * NEVER, the relayed authentication succeeds and data flows through the
 * relay (the attack Extended Protection exists for); _i 1: the TLS policy
 * (ALWAYS; WHEN_SUPPORTED with Heimdal) refuses it on the server, and the
 * client is told.
 */
START_TEST(test_tls_relay)
{
#if HAVE_OPENSSL
    X509 *scert, *rcert;
    EVP_PKEY *skey, *rkey;
    SSL *cs, *ss;
    tt_relay *relay;
    unsigned char ccb[NEGSTREAM_CHANNEL_BINDING_MAX];
    unsigned char scb[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t ccb_len = sizeof(ccb), scb_len = sizeof(scb);
    negstream_io cio, sio;
    void *cctx, *sctx;
    negstream *c, *s;
    negstream_client_options co;
    negstream_server_options so;
    negstream_async *sar;
    negstream_error ce, se, e;
    tu_auth a;
    int cfd, sfd, crc, src;

    tt_make_cert("localhost", &scert, &skey);
    tt_make_cert("localhost", &rcert, &rkey);
    relay = tt_relay_start(rcert, rkey, scert, skey, &cs, &cfd, &ss, &sfd);
    ck_assert_int_eq(negstream_channel_binding_from_ssl(cs, ccb, &ccb_len,
                                                        &e), 0);
    ck_assert_int_eq(negstream_channel_binding_from_ssl(ss, scb, &scb_len,
                                                        &e), 0);
    ck_assert(ccb_len != scb_len || memcmp(ccb, scb, ccb_len) != 0);
    cctx = tio_tls_new(cs, cfd, &cio);
    sctx = tio_tls_new(ss, sfd, &sio);
    c = negstream_new_io(&cio, cctx, &e);
    ck_assert_msg(c != NULL, "negstream_new_io: %s", e.message);
    s = negstream_new_io(&sio, sctx, &e);
    ck_assert_msg(s != NULL, "negstream_new_io: %s", e.message);

    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    tu_client_options(&a, &co);
    co.channel_binding = ccb;
    co.channel_binding_len = ccb_len;
    negstream_server_options_init(&so);
    so.protection = a.server_level;
    so.extended_protection = _i == 0 ? NEGSTREAM_EXTENDED_PROTECTION_NEVER
                                     : TLS_POLICY;
    so.channel_binding = scb;
    so.channel_binding_len = scb_len;
    sar = negstream_begin_authenticate_as_server(s, &so, NULL, NULL, &se);
    ck_assert_msg(sar != NULL, "begin server: %s", se.message);
    crc = negstream_authenticate_as_client(c, &co, &ce);
    src = negstream_end_authenticate_as_server(s, sar, &se);
    if (_i == 0) {
        ck_assert_msg(crc == 0 && src == 0, "relayed, NEVER: client %s; "
                      "server %s", ce.message, se.message);
        ck_assert(!negstream_is_channel_bound(s));
        tu_transfer(c, s, 100000, 9);
        tu_transfer(s, c, 100000, 10);
    } else {
        ck_assert_msg(crc == -1 && src == -1, "relayed, %s: authenticated",
                      TLS_POLICY_NAME);
        ck_assert_msg(se.code == NEGSTREAM_E_AUTHENTICATION, "server: %s "
                      "[%s]", negstream_status_name(se.code), se.message);
        ck_assert_msg(ce.code == NEGSTREAM_E_AUTHENTICATION, "client: %s "
                      "[%s]", negstream_status_name(ce.code), ce.message);
#if HAVE_DECL_GSS_C_CHANNEL_BOUND_FLAG
        ck_assert_msg(strstr(se.message, "do not match") != NULL &&
                      se.gss_major != 0, "server: %s", se.message);
        ck_assert_msg(strstr(ce.message, "error 1790") != NULL,
                      "client: %s", ce.message);
#endif
        ck_assert(!negstream_is_authenticated(s));
    }
    negstream_close(c);
    negstream_close(s);
    ck_assert(tio_wait_closed(cctx, 10000) && tio_wait_closed(sctx, 10000));
    tio_free(cctx);
    tio_free(sctx);
    tt_relay_stop(relay);
    X509_free(scert);
    X509_free(rcert);
    EVP_PKEY_free(skey);
    EVP_PKEY_free(rkey);
#else
    printf("SKIP: test_tls_relay (%d): built without OpenSSL\n", _i);
#endif
}
END_TEST

/*
 * A transport that breaks the contract: a read returning more than asked,
 * or a value that is neither a count nor one of the documented ones; a
 * write returning 0, more than asked, or an unknown value.
 * NEGSTREAM_E_IO with a message that says so, never a crash or a spin.
 * _i 0..2: the server's read (its authentication reads first); 3..5: the
 * client's write (its authentication writes first).
 */
START_TEST(test_bad_return_values)
{
    static const int bad[] = { 100000, -9, -4, TIO_BAD_ZERO, TIO_BAD_MORE,
                               -7 };
    static const char *const says[] = {
        "read returned 100000 for", "read returned -9",
        "read returned -4", "write returned 0 for", "(more than asked)",
        "write returned -7"
    };
    negstream_client_options co;
    negstream_server_options so;
    negstream_error e;
    tpair p;
    int rc;

    ck_assert(pair_new(&p, T_MEM));
    if (_i < 3) {
        atomic_store(&TIO_HOOKS(p.sctx)->bad_read, bad[_i]);
        negstream_server_options_init(&so);
        rc = negstream_authenticate_as_server(p.s, &so, &e);
    } else {
        atomic_store(&TIO_HOOKS(p.cctx)->bad_write, bad[_i]);
        pair_options(&p, NEGSTREAM_PROTECTION_SIGN, &co, &so);
        rc = negstream_authenticate_as_client(p.c, &co, &e);
    }
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(e.code == NEGSTREAM_E_IO && strstr(e.message, says[_i]),
                  "%s: %s", negstream_status_name(e.code), e.message);
    pair_free(&p);
}
END_TEST

/* A parked read's deadline, on the transport's fd: TIMEOUT, faulted. */
START_TEST(test_read_deadline)
{
    uint8_t buf[10];
    negstream_async *ar;
    negstream_error e;
    tpair p;

    ck_assert(pair_new(&p, T_MEM));
    pair_auth(&p, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true);
    ck_assert_int_eq(negstream_set_timeouts(p.s, 200, -1, &e), 0);
    ar = negstream_begin_read(p.s, buf, sizeof(buf), 0, sizeof(buf), NULL,
                              NULL, &e);
    ck_assert_ptr_nonnull(ar);
    ck_assert_int_eq(negstream_end_read(p.s, ar, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_TIMEOUT, "%s: %s",
                  negstream_status_name(e.code), e.message);
    ck_assert_int_eq(negstream_read(p.s, buf, sizeof(buf), 0, sizeof(buf),
                                    &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    pair_free(&p);
}
END_TEST

/* ---- the table's own rules --------------------------------------------- */

static ssize_t nop_read(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    (void)len;
    errno = EAGAIN;
    return -1;
}

static ssize_t nop_write(void *ctx, const void *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    return (ssize_t)len;
}

static atomic_int nop_closes;

static void nop_close(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&nop_closes, 1);
}

/* negstream_new_io refuses a table it cannot use, in the order of its
 * fields, and never calls close then (ctx stays the caller's). */
START_TEST(test_new_io_errors)
{
    negstream_io io;
    negstream_error e;
    struct rlimit rl, low;
    int fds[2], bad_fd;

    ck_assert_int_eq(pipe(fds), 0);
    atomic_store(&nop_closes, 0);
    ck_assert_ptr_null(negstream_new_io(NULL, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);

    memset(&io, 0, sizeof(io));             /* no negstream_io_init */
    io.read_fd = fds[0];
    io.read = nop_read;
    io.write = nop_write;
    io.close = nop_close;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_msg(strstr(e.message, "negstream_io_init") != NULL, "%s",
                  e.message);

    negstream_io_init(&io);
    io.read_fd = fds[0];
    io.read = nop_read;
    io.write = nop_write;
    io.close = nop_close;
    io.flags = 0x80;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    io.flags = 0;

    io.read_fd = -1;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    io.read_fd = fds[0];
    io.write_fd = -2;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    io.write_fd = -1;

    io.read = NULL;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_msg(strstr(e.message, "io->read") != NULL, "%s", e.message);
    io.read = nop_read;
    io.write = NULL;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    io.write = nop_write;
    io.close = NULL;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_msg(strstr(e.message, "io->close") != NULL, "%s", e.message);
    io.close = nop_close;

    /* fds that are not open (a high number: the duplicate of read_fd
     * takes the lowest free one) */
    bad_fd = 900;
    ck_assert_int_eq(fcntl(bad_fd, F_GETFD), -1);
    io.read_fd = bad_fd;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(e.sys_errno, EBADF);
    io.read_fd = fds[0];
    io.write_fd = bad_fd;
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_msg(strstr(e.message, "write_fd") != NULL, "%s", e.message);
    io.write_fd = fds[1];

    /* no fd left for the duplicates: the limit at the lowest free
     * number */
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    bad_fd = dup(fds[0]);
    ck_assert_int_ge(bad_fd, 0);
    close(bad_fd);
    low = rl;
    low.rlim_cur = (rlim_t)bad_fd;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    ck_assert_ptr_null(negstream_new_io(&io, NULL, &e));
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, EMFILE);

    ck_assert_int_eq(atomic_load(&nop_closes), 0);
    /* and a good one: close runs once, at negstream_close */
    {
        negstream *s = negstream_new_io(&io, NULL, &e);

        ck_assert_msg(s != NULL, "%s", e.message);
        ck_assert_int_eq(e.code, NEGSTREAM_OK);
        negstream_close(s);
        ck_assert_int_eq(atomic_load(&nop_closes), 1);
    }
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* leave_inner_open: a transport without shutdown whose close gives the
 * socket back.  After both streams are closed the connection is the
 * application's again, and plain bytes cross it. */
typedef struct keep_ctx {
    int        fd;
    atomic_int closes;
} keep_ctx;

static ssize_t keep_read(void *ctx, void *buf, size_t len)
{
    return recv(((keep_ctx *)ctx)->fd, buf, len, MSG_DONTWAIT);
}

static ssize_t keep_write(void *ctx, const void *buf, size_t len)
{
    return send(((keep_ctx *)ctx)->fd, buf, len,
                MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void keep_close(void *ctx)
{
    atomic_fetch_add(&((keep_ctx *)ctx)->closes, 1);  /* fd stays open */
}

START_TEST(test_leave_open_without_shutdown)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_io cio, sio;
    keep_ctx kc, ks;
    negstream *c, *s;
    negstream_error ce, se;
    char buf[16];
    int fds[2];
    tu_auth a;

    tu_tcp_pair(fds);
    kc.fd = fds[0];
    ks.fd = fds[1];
    atomic_init(&kc.closes, 0);
    atomic_init(&ks.closes, 0);
    negstream_io_init(&cio);
    cio.read_fd = fds[0];
    cio.read = keep_read;
    cio.write = keep_write;
    cio.close = keep_close;
    sio = cio;
    sio.read_fd = fds[1];
    c = negstream_new_io(&cio, &kc, &ce);
    s = negstream_new_io(&sio, &ks, &se);
    ck_assert(c != NULL && s != NULL);
    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    tu_client_options(&a, &co);
    negstream_server_options_init(&so);
    {
        negstream_async *sar = negstream_begin_authenticate_as_server(
                s, &so, NULL, NULL, &se);

        ck_assert_ptr_nonnull(sar);
        ck_assert_msg(negstream_authenticate_as_client(c, &co, &ce) == 0,
                      "%s", ce.message);
        ck_assert_msg(negstream_end_authenticate_as_server(s, sar, &se) ==
                      0, "%s", se.message);
    }
    tu_write_all(c, "ping", 4);
    tu_read_all(s, buf, 4);
    ck_assert(memcmp(buf, "ping", 4) == 0);
    negstream_close(c);
    negstream_close(s);
    ck_assert_int_eq(atomic_load(&kc.closes), 1);
    ck_assert_int_eq(atomic_load(&ks.closes), 1);
    /* The connection goes on without the streams. */
    ck_assert_int_eq(send(fds[1], "plain", 5, MSG_NOSIGNAL), 5);
    ck_assert_int_eq(recv(fds[0], buf, 5, MSG_WAITALL), 5);
    ck_assert(memcmp(buf, "plain", 5) == 0);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/*
 * A context that close frees (the usual ownership): both streams closed
 * while a read and a write are parked on them.  AddressSanitizer and
 * valgrind see any call or touch after the free.
 */
START_TEST(test_ctx_freed_by_close)
{
    uint8_t buf[64], *big;
    const size_t n = 300000;
    negstream_async *r, *w;
    negstream_error e;
    tpair p;
    int left = 20000;

    ck_assert(pair_new(&p, T_PIPE));
    pair_auth(&p, NEGSTREAM_PROTECTION_SIGN, false);
    big = malloc(n);
    ck_assert_ptr_nonnull(big);
    tu_fill(big, n, 3);
    TIO_HOOKS(p.cctx)->free_on_close = true;
    TIO_HOOKS(p.sctx)->free_on_close = true;
    /* A read parked on the server; a write parked on the client: nobody
     * reads it, the pipe fills. */
    r = negstream_begin_read(p.s, buf, sizeof(buf), 0, sizeof(buf), NULL,
                             NULL, &e);
    ck_assert_ptr_nonnull(r);
    while (!read_parked(p.s) && left-- > 0)
        usleep(1000);
    negstream_close(p.s);
    w = negstream_begin_write(p.c, big, n, 0, (ssize_t)n, NULL, NULL, &e);
    ck_assert_ptr_nonnull(w);
    usleep(50000);
    negstream_close(p.c);
    ck_assert_int_eq(negstream_end_read(p.s, r, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_DISPOSED);
    ck_assert_int_eq(negstream_end_write(p.c, w, &e), -1);
    ck_assert(e.code == NEGSTREAM_E_DISPOSED || e.code == NEGSTREAM_E_IO);
    free(big);
}
END_TEST

static Suite *io_suite(void)
{
    Suite *su = suite_create("io");
    TCase *t = tcase_create("transports");
    TCase *r = tcase_create("rules");

    tcase_set_timeout(t, 240);
    tcase_add_loop_test(t, test_session, 0, T_COUNT * 3);
    tcase_add_loop_test(t, test_full_duplex, 0, T_COUNT);
    tcase_add_loop_test(t, test_close_parked_read, 0, T_COUNT);
    tcase_add_loop_test(t, test_close_blocked_sync_read, 0, T_COUNT);
    tcase_add_loop_test(t, test_transport_errors, 0, T_COUNT);
    tcase_add_loop_test(t, test_transport_error_in_handshake, 0, T_COUNT);
    tcase_add_loop_test(t, test_tls_relay, 0, 2);
    suite_add_tcase(su, t);
    tcase_set_timeout(r, 120);
    tcase_add_loop_test(r, test_bad_return_values, 0, 6);
    tcase_add_test(r, test_read_deadline);
    tcase_add_test(r, test_sigpipe_sync_write);
    tcase_add_test(r, test_new_io_errors);
    tcase_add_test(r, test_leave_open_without_shutdown);
    tcase_add_test(r, test_ctx_freed_by_close);
    suite_add_tcase(su, r);
    return su;
}

int main(void)
{
    SRunner *sr = srunner_create(io_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
