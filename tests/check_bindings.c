/*
 * check_bindings.c - Extended Protection: channel bindings on the client,
 * the server's policy (Never, WhenSupported, Always) over Kerberos, NTLM
 * and SPNEGO (carrying either), over TCP on 127.0.0.1 in the test realm.
 *
 * The bindings are application data to GSSAPI, so no TLS channel is needed
 * here: each side is given the bytes a TLS layer would give it.  The
 * table every cell is checked against is the one measured with MIT krb5
 * 1.20 and gss-ntlmssp 1.2 (src/gss.c, negstream(7)):
 *
 *                     client: none       same             different
 *     Never           ok, not bound      ok, not bound    ok, not bound
 *     WhenSupported   ok, not bound      ok, bound        refused (GSS)
 *     Always          refused (policy)   ok, bound        refused (GSS)
 *
 * "refused (GSS)": the acceptor fails, GSS_S_BAD_BINDINGS for Kerberos,
 * GSS_S_DEFECTIVE_TOKEN for NTLM; "refused (policy)": GSSAPI accepts but
 * the context lacks GSS_C_CHANNEL_BOUND_FLAG.  Either way the server fails
 * with NEGSTREAM_E_AUTHENTICATION and sends ERROR_TRUST_FAILURE (1790), as
 * .NET does, and the client fails with NEGSTREAM_E_AUTHENTICATION.
 */
#include "config.h"

#include <check.h>
#include <gssapi/gssapi.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "negstream.h"
#include "testutil.h"
#if HAVE_OPENSSL
#include "tlsutil.h"
#endif

/* ---- the cells ---------------------------------------------------------- */

typedef enum { MECH_KRB5, MECH_NTLM, MECH_SPNEGO_KRB5, MECH_SPNEGO_NTLM,
               MECH_COUNT } mech;
typedef enum { CB_NONE, CB_SAME, CB_DIFFERENT, CB_COUNT } client_cb;
typedef enum { OUT_OK_UNBOUND, OUT_OK_BOUND, OUT_GSS_REFUSED,
               OUT_POLICY_REFUSED, OUT_NOT_SUPPORTED } outcome;

static const char *const mech_name[MECH_COUNT] = {
    "kerberos", "ntlm", "negotiate (krb5)", "negotiate (ntlm)"
};
static const char *const cb_name[CB_COUNT] = { "none", "same", "different" };
static const char *const ep_name[3] = { "Never", "WhenSupported", "Always" };

/* The observed table, [policy][client]. */
static const outcome table[3][CB_COUNT] = {
    /* Never */         { OUT_OK_UNBOUND, OUT_OK_UNBOUND, OUT_OK_UNBOUND },
    /* WhenSupported */ { OUT_OK_UNBOUND, OUT_OK_BOUND, OUT_GSS_REFUSED },
    /* Always */        { OUT_POLICY_REFUSED, OUT_OK_BOUND, OUT_GSS_REFUSED },
};

/*
 * Heimdal (7.8) checks bindings the client sent but never sets
 * GSS_C_CHANNEL_BOUND_FLAG: WhenSupported with the same bindings succeeds
 * unbound, and Always is refused by the server before it reads anything
 * (NEGSTREAM_E_NOT_SUPPORTED, src/gss.c server_bindings).
 */
static outcome expected(negstream_extended_protection ep, client_cb c)
{
#ifdef NEGSTREAM_HEIMDAL
    if (ep == NEGSTREAM_EXTENDED_PROTECTION_ALWAYS)
        return OUT_NOT_SUPPORTED;
    if (table[ep][c] == OUT_OK_BOUND)
        return OUT_OK_UNBOUND;
#endif
    return table[ep][c];
}

/* What a TLS layer would hand each side: "tls-server-end-point:" and a
 * SHA-256 hash; the relay's channel differs in one byte of the hash. */
#define PREFIX "tls-server-end-point:"
static unsigned char server_cb[sizeof(PREFIX) - 1 + 32];
static unsigned char other_cb[sizeof(PREFIX) - 1 + 32];

static void make_bindings(void)
{
    memcpy(server_cb, PREFIX, sizeof(PREFIX) - 1);
    tu_fill(server_cb + sizeof(PREFIX) - 1, 32, 16);
    memcpy(other_cb, server_cb, sizeof(server_cb));
    other_cb[sizeof(other_cb) - 1] ^= 0x01;
}

static void client_opts(mech m, negstream_client_options *co)
{
    tu_auth a;

    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    switch (m) {
    case MECH_KRB5:
        a.client_mech = "kerberos";
        break;
    case MECH_NTLM:
        a.ntlm_creds = true;
        a.client_mech = "ntlm";
        break;
    case MECH_SPNEGO_KRB5:
        a.client_mech = "negotiate";
        break;
    case MECH_SPNEGO_NTLM:
        /* NTLM credentials (the NTLM domain is no realm): SPNEGO can only
         * use NTLM. */
        a.ntlm_creds = true;
        a.client_mech = "negotiate";
        break;
    case MECH_COUNT:
        break;
    }
    tu_client_options(&a, co);
}

static void set_client_cb(negstream_client_options *co, client_cb c)
{
    if (c == CB_SAME) {
        co->channel_binding = server_cb;
        co->channel_binding_len = sizeof(server_cb);
    } else if (c == CB_DIFFERENT) {
        co->channel_binding = other_cb;
        co->channel_binding_len = sizeof(other_cb);
    }
}

static void server_opts(negstream_extended_protection ep,
                        negstream_server_options *so)
{
    negstream_server_options_init(so);
    so->extended_protection = ep;
    so->channel_binding = server_cb;
    so->channel_binding_len = sizeof(server_cb);
}

/* One cell: index = (mech * 3 + policy) * 3 + client. */
START_TEST(test_policy_cell)
{
    mech m = (mech)(_i / 9);
    negstream_extended_protection ep =
        (negstream_extended_protection)(_i / 3 % 3);
    client_cb c = (client_cb)(_i % 3);
    outcome want = expected(ep, c);
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *cs = NULL, *ss = NULL;
    int fds[2];
    bool ok;

    TU_NEEDS_NTLM(m == MECH_NTLM || m == MECH_SPNEGO_NTLM);
    make_bindings();
    client_opts(m, &co);
    set_client_cb(&co, c);
    server_opts(ep, &so);
    tu_tcp_pair(fds);
    ok = tu_auth_fds(fds[0], fds[1], false, &co, &so, &cs, &ss, &ce, &se);
    switch (want) {
    case OUT_OK_UNBOUND:
    case OUT_OK_BOUND:
        ck_assert_msg(ok, "%s, %s, client %s: client %s [%s], server %s "
                      "[%s]", mech_name[m], ep_name[ep], cb_name[c],
                      negstream_status_name(ce.code), ce.message,
                      negstream_status_name(se.code), se.message);
        ck_assert_msg(negstream_is_channel_bound(ss) ==
                      (want == OUT_OK_BOUND), "%s, %s, client %s: bound %d",
                      mech_name[m], ep_name[ep], cb_name[c],
                      (int)negstream_is_channel_bound(ss));
        /* A client never learns whether the server checked them. */
        ck_assert(!negstream_is_channel_bound(cs));
        ck_assert_str_eq(negstream_authentication_type(ss),
                         m == MECH_NTLM || m == MECH_SPNEGO_NTLM ? "NTLM" :
                         "Kerberos");
        tu_write_all(cs, "x", 1);
        {
            char b;

            tu_read_all(ss, &b, 1);
            ck_assert_int_eq(b, 'x');
        }
        break;
    case OUT_GSS_REFUSED:
    case OUT_POLICY_REFUSED:
        ck_assert_msg(!ok, "%s, %s, client %s: authenticated",
                      mech_name[m], ep_name[ep], cb_name[c]);
        ck_assert_msg(se.code == NEGSTREAM_E_AUTHENTICATION &&
                      strstr(se.message, "channel bindings") != NULL,
                      "%s, %s, client %s: server %s [%s]", mech_name[m],
                      ep_name[ep], cb_name[c],
                      negstream_status_name(se.code), se.message);
        /* The client heard ERROR_TRUST_FAILURE (1790). */
        ck_assert_msg(ce.code == NEGSTREAM_E_AUTHENTICATION &&
                      strstr(ce.message, "error 1790") != NULL,
                      "%s, %s, client %s: client %s [%s]", mech_name[m],
                      ep_name[ep], cb_name[c],
                      negstream_status_name(ce.code), ce.message);
        if (want == OUT_POLICY_REFUSED) {
            ck_assert_uint_eq(se.gss_major, 0);
            ck_assert_msg(strstr(se.message, "sent none") != NULL, "%s",
                          se.message);
        } else {
            ck_assert_uint_eq(GSS_ROUTINE_ERROR(se.gss_major),
                              m == MECH_NTLM || m == MECH_SPNEGO_NTLM ?
                              GSS_S_DEFECTIVE_TOKEN : GSS_S_BAD_BINDINGS);
            ck_assert_msg(strstr(se.message, "do not match") != NULL, "%s",
                          se.message);
        }
        ck_assert(!negstream_is_channel_bound(ss));
        ck_assert(!negstream_is_authenticated(ss));
        break;
    case OUT_NOT_SUPPORTED:
        /* the server's set-up fails; it tells the client (0x80090304) */
        ck_assert_msg(!ok && se.code == NEGSTREAM_E_NOT_SUPPORTED &&
                      se.gss_major == 0 &&
                      strstr(se.message, "GSS_C_CHANNEL_BOUND_FLAG") != NULL,
                      "%s, %s, client %s: server %s [%s]", mech_name[m],
                      ep_name[ep], cb_name[c],
                      negstream_status_name(se.code), se.message);
        ck_assert_msg(ce.code == NEGSTREAM_E_AUTHENTICATION &&
                      strstr(ce.message, "0x80090304") != NULL,
                      "%s, %s, client %s: client %s [%s]", mech_name[m],
                      ep_name[ep], cb_name[c],
                      negstream_status_name(ce.code), ce.message);
        ck_assert(!negstream_is_authenticated(ss));
        ck_assert(!negstream_is_authenticated(cs));
        break;
    }
    negstream_close(cs);
    negstream_close(ss);
}
END_TEST

/* ---- with real TLS connections ------------------------------------------ */

#if HAVE_OPENSSL
/*
 * The bindings from real TLS connections (negstream_channel_binding_from_
 * ssl), the NegotiateStream exchange beside them over TCP (running it
 * inside TLS needs the custom transports of phase 2).  _i / 2: Kerberos or
 * NTLM; _i % 2: direct or relayed.
 *
 * Direct: the client's TLS peer is the server; the bindings agree and the
 * stream is channel-bound.  Relayed: a man in the middle terminates the
 * client's TLS with a certificate of its own (same name, another key) and
 * opens its own TLS connection to the server, then passes the
 * authentication tokens through unchanged.  The client binds to the
 * relay's certificate, the server expects its own: refused, even under
 * WhenSupported.
 */
START_TEST(test_tls_relay)
{
    bool relayed = _i % 2 == 1;
    mech m = _i / 2 == 0 ? MECH_KRB5 : MECH_NTLM;
    unsigned char cb[NEGSTREAM_CHANNEL_BINDING_MAX];
    unsigned char sb[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t cb_len = sizeof(cb), sb_len = sizeof(sb);
    X509 *srv_cert, *mitm_cert;
    EVP_PKEY *srv_key, *mitm_key;
    SSL *client_tls, *relay_srv_tls, *relay_cli_tls, *server_tls;
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *cs, *ss;
    int fds[2];
    bool ok;

    TU_NEEDS_NTLM(m == MECH_NTLM);
    tt_make_cert("localhost", &srv_cert, &srv_key);
    tt_make_cert("localhost", &mitm_cert, &mitm_key);
    if (relayed) {
        tt_pair(mitm_cert, mitm_key, 1, &client_tls, &relay_srv_tls);
        tt_pair(srv_cert, srv_key, 1, &relay_cli_tls, &server_tls);
    } else {
        tt_pair(srv_cert, srv_key, 1, &client_tls, &server_tls);
        relay_srv_tls = relay_cli_tls = NULL;
    }
    ck_assert_int_eq(negstream_channel_binding_from_ssl(client_tls, cb,
                                                        &cb_len, &ce), 0);
    ck_assert_int_eq(negstream_channel_binding_from_ssl(server_tls, sb,
                                                        &sb_len, &se), 0);

    client_opts(m, &co);
    co.channel_binding = cb;
    co.channel_binding_len = cb_len;
    negstream_server_options_init(&so);
    so.extended_protection = NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED;
    so.channel_binding = sb;
    so.channel_binding_len = sb_len;
    tu_tcp_pair(fds);
    ok = tu_auth_fds(fds[0], fds[1], false, &co, &so, &cs, &ss, &ce, &se);
    if (relayed) {
        ck_assert_msg(!ok, "a relayed %s authentication was accepted",
                      mech_name[m]);
        ck_assert_msg(se.code == NEGSTREAM_E_AUTHENTICATION &&
                      strstr(se.message, "channel bindings") != NULL,
                      "%s: %s", negstream_status_name(se.code), se.message);
        ck_assert_int_eq(ce.code, NEGSTREAM_E_AUTHENTICATION);
    } else {
        ck_assert_msg(ok, "client %s; server %s", ce.message, se.message);
        /* Heimdal checks them but cannot say so (expected()) */
        ck_assert(negstream_is_channel_bound(ss) ==
                  (expected(so.extended_protection, CB_SAME) ==
                   OUT_OK_BOUND));
    }
    negstream_close(cs);
    negstream_close(ss);
    tt_pair_free(client_tls, relay_srv_tls);
    tt_pair_free(relay_cli_tls, server_tls);
    X509_free(srv_cert);
    X509_free(mitm_cert);
    EVP_PKEY_free(srv_key);
    EVP_PKEY_free(mitm_key);
}
END_TEST
#endif

/* ---- the copies: begin_* must not read the caller's bytes later --------- */

/* A two-thread pool kept busy by two callbacks that wait for 'go', so
 * that the operations queued behind them run only after the test says so
 * (two: the server's and the client's authentication need a worker
 * each). */
typedef struct blocker {
    sem_t entered, go;
} blocker;

static void blocking_cb(negstream_async *ar)
{
    blocker *b = negstream_async_state(ar);

    sem_post(&b->entered);
    while (sem_wait(&b->go) != 0)
        ;
}

/* The server's expected bindings and the client's live in buffers the
 * caller overwrites and frees as soon as begin_* has returned; the
 * operations run afterwards and must still match (they use copies). */
START_TEST(test_begin_copies_bindings)
{
    negstream_pool *pool;
    negstream *busy_c, *busy_s, *cs, *ss;
    negstream_async *war[2], *car, *sar;
    negstream_client_options co;
    negstream_server_options so;
    negstream_error e;
    unsigned char *cbuf, *sbuf;
    blocker b;
    int fds[2];

    make_bindings();
    ck_assert_int_eq(sem_init(&b.entered, 0, 0), 0);
    ck_assert_int_eq(sem_init(&b.go, 0, 0), 0);
    pool = negstream_pool_new(2, 2, &e);
    ck_assert_ptr_nonnull(pool);

    /* Occupy both workers. */
    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &busy_c, &busy_s);
    ck_assert_int_eq(negstream_set_pool(busy_c, pool, &e), 0);
    ck_assert_int_eq(negstream_set_pool(busy_s, pool, &e), 0);
    war[0] = negstream_begin_write(busy_c, "x", 1, 0, 1, blocking_cb, &b,
                                   &e);
    war[1] = negstream_begin_write(busy_s, "y", 1, 0, 1, blocking_cb, &b,
                                   &e);
    ck_assert(war[0] != NULL && war[1] != NULL);
    while (sem_wait(&b.entered) != 0)
        ;
    while (sem_wait(&b.entered) != 0)
        ;

    tu_tcp_pair(fds);
    cs = negstream_new(fds[0], false, &e);
    ss = negstream_new(fds[1], false, &e);
    ck_assert_ptr_nonnull(cs);
    ck_assert_ptr_nonnull(ss);
    ck_assert_int_eq(negstream_set_pool(cs, pool, &e), 0);
    ck_assert_int_eq(negstream_set_pool(ss, pool, &e), 0);
    cbuf = malloc(sizeof(server_cb));
    sbuf = malloc(sizeof(server_cb));
    ck_assert(cbuf != NULL && sbuf != NULL);
    memcpy(cbuf, server_cb, sizeof(server_cb));
    memcpy(sbuf, server_cb, sizeof(server_cb));

    client_opts(MECH_KRB5, &co);
    co.channel_binding = cbuf;
    co.channel_binding_len = sizeof(server_cb);
    negstream_server_options_init(&so);
    /* Heimdal refuses Always; under WhenSupported it still refuses
     * bindings that differ, so the copies are still tested */
    so.extended_protection =
        expected(NEGSTREAM_EXTENDED_PROTECTION_ALWAYS, CB_SAME) ==
        OUT_NOT_SUPPORTED ? NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED :
        NEGSTREAM_EXTENDED_PROTECTION_ALWAYS;
    so.channel_binding = sbuf;
    so.channel_binding_len = sizeof(server_cb);
    sar = negstream_begin_authenticate_as_server(ss, &so, NULL, NULL, &e);
    ck_assert_ptr_nonnull(sar);
    car = negstream_begin_authenticate_as_client(cs, &co, NULL, NULL, &e);
    ck_assert_ptr_nonnull(car);
    /* Neither has started: the worker is still in the callback. */
    ck_assert(!negstream_async_is_completed(sar));
    memcpy(cbuf, other_cb, sizeof(other_cb));
    memset(sbuf, 0, sizeof(server_cb));
    free(cbuf);
    free(sbuf);

    sem_post(&b.go);
    sem_post(&b.go);
    ck_assert_int_eq(negstream_end_write(busy_c, war[0], &e), 0);
    ck_assert_int_eq(negstream_end_write(busy_s, war[1], &e), 0);
    ck_assert_msg(negstream_end_authenticate_as_client(cs, car, &e) == 0,
                  "client: %s", e.message);
    ck_assert_msg(negstream_end_authenticate_as_server(ss, sar, &e) == 0,
                  "server: %s", e.message);
    ck_assert(negstream_is_channel_bound(ss) ==
              (expected(so.extended_protection, CB_SAME) == OUT_OK_BOUND));

    negstream_close(cs);
    negstream_close(ss);
    negstream_close(busy_c);
    negstream_close(busy_s);
    negstream_pool_free(pool);
    sem_destroy(&b.entered);
    sem_destroy(&b.go);
}
END_TEST

/* ---- what the client hears ---------------------------------------------- */

/*
 * A .NET Framework server (SSPI) answers bindings that do not match with
 * SEC_E_BAD_BINDINGS (0x80090346) in its error message, where .NET 8 and
 * libnegstream send 1790: the client says what that code means.  The
 * server here is a raw socket that reads the client's first message and
 * answers with that error.
 */
START_TEST(test_client_hears_bad_bindings)
{
    uint8_t hdr[NEGSTREAM__HS_HEADER_SIZE], payload[65535];
    uint8_t msg[NEGSTREAM__HS_HEADER_SIZE + NEGSTREAM__HS_ERROR_SIZE];
    negstream__hs_header h;
    negstream_client_options co;
    negstream_error e;
    negstream *cs;
    size_t got;
    int fds[2];

    make_bindings();
    tu_tcp_pair(fds);
    /* The first token goes out before any answer is read, so the client
     * can run here and the "server" afterwards: the kernel buffers it. */
    negstream__hs_header_encode(msg, NEGSTREAM__HS_ERROR,
                                NEGSTREAM__HS_ERROR_SIZE);
    negstream__hs_error_encode(msg + NEGSTREAM__HS_HEADER_SIZE,
                               NEGSTREAM__ERR_BAD_BINDINGS);
    ck_assert_int_eq(write(fds[1], msg, sizeof(msg)), (ssize_t)sizeof(msg));
    client_opts(MECH_KRB5, &co);
    set_client_cb(&co, CB_SAME);
    cs = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(cs);
    ck_assert_int_eq(negstream_authenticate_as_client(cs, &co, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_AUTHENTICATION &&
                  strstr(e.message, "rejected the channel bindings") !=
                  NULL, "%s: %s", negstream_status_name(e.code), e.message);
    /* And the client did send its token first. */
    ck_assert_int_eq(read(fds[1], hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
    ck_assert_int_eq(negstream__hs_header_decode(hdr, &h),
                     NEGSTREAM__FRAME_OK);
    ck_assert_int_eq(h.id, NEGSTREAM__HS_IN_PROGRESS);
    for (got = 0; got < h.size;) {
        ssize_t n = read(fds[1], payload + got, h.size - got);

        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
    negstream_close(cs);
    close(fds[1]);
}
END_TEST

/* ---- argument checks ---------------------------------------------------- */

/* An option error is reported at once by both the synchronous call and
 * begin_*, before anything is sent. */
static void server_refuses(const negstream_server_options *so,
                           negstream_status code, const char *needle)
{
    negstream_error e;
    negstream *s;
    int fds[2];

    tu_tcp_pair(fds);
    s = negstream_new(fds[1], false, &e);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(negstream_authenticate_as_server(s, so, &e), -1);
    ck_assert_msg(e.code == code && strstr(e.message, needle) != NULL,
                  "%s: %s", negstream_status_name(e.code), e.message);
    ck_assert_ptr_null(negstream_begin_authenticate_as_server(s, so, NULL,
                                                               NULL, &e));
    ck_assert_msg(e.code == code && strstr(e.message, needle) != NULL,
                  "%s: %s", negstream_status_name(e.code), e.message);
    ck_assert(!negstream_is_server(s));
    negstream_close(s);
    close(fds[0]);
}

static void client_refuses(const negstream_client_options *co,
                           negstream_status code, const char *needle)
{
    negstream_error e;
    negstream *s;
    int fds[2];

    tu_tcp_pair(fds);
    s = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(negstream_authenticate_as_client(s, co, &e), -1);
    ck_assert_msg(e.code == code && strstr(e.message, needle) != NULL,
                  "%s: %s", negstream_status_name(e.code), e.message);
    ck_assert_ptr_null(negstream_begin_authenticate_as_client(s, co, NULL,
                                                               NULL, &e));
    ck_assert_msg(e.code == code && strstr(e.message, needle) != NULL,
                  "%s: %s", negstream_status_name(e.code), e.message);
    negstream_close(s);
    close(fds[1]);
}

START_TEST(test_option_errors)
{
    negstream_server_options so;
    negstream_client_options co;

    make_bindings();
    negstream_server_options_init(&so);
    ck_assert_int_eq(so.extended_protection,
                     NEGSTREAM_EXTENDED_PROTECTION_NEVER);
    ck_assert_ptr_null(so.channel_binding);
    ck_assert_uint_eq(so.channel_binding_len, 0);
    so.extended_protection = NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED;
    server_refuses(&so, NEGSTREAM_E_ARGUMENT, "WhenSupported needs");
    so.extended_protection = NEGSTREAM_EXTENDED_PROTECTION_ALWAYS;
    server_refuses(&so, NEGSTREAM_E_ARGUMENT, "Always needs");
    so.channel_binding_len = 4;
    server_refuses(&so, NEGSTREAM_E_ARGUMENT_NULL, "channel_binding is NULL");
    so.channel_binding = server_cb;
    so.extended_protection = (negstream_extended_protection)3;
    server_refuses(&so, NEGSTREAM_E_ARGUMENT_RANGE, "extended_protection 3");

    negstream_client_options_init(&co);
    ck_assert_ptr_null(co.channel_binding);
    ck_assert_uint_eq(co.channel_binding_len, 0);
    ck_assert_ptr_null(co.ccache_name);
    co.target_name = tu_env("NEGTEST_SPN");
    co.channel_binding_len = 4;
    client_refuses(&co, NEGSTREAM_E_ARGUMENT_NULL, "channel_binding is NULL");
    co.channel_binding_len = 0;
    co.ccache_name = "FILE:/nonexistent";
    co.user = tu_env("NEGTEST_USER");
    co.password = tu_env("NEGTEST_PASSWORD");
    client_refuses(&co, NEGSTREAM_E_ARGUMENT, "ccache_name and password");
}
END_TEST

/* Never ignores the bindings entirely: none given is fine, and so is a
 * NULL pointer with a length (they are not looked at). */
START_TEST(test_never_ignores_binding_fields)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *cs, *ss;
    int fds[2];

    make_bindings();
    client_opts(MECH_KRB5, &co);
    set_client_cb(&co, CB_DIFFERENT);
    negstream_server_options_init(&so);
    so.channel_binding_len = 99;
    tu_tcp_pair(fds);
    ck_assert_msg(tu_auth_fds(fds[0], fds[1], false, &co, &so, &cs, &ss,
                              &ce, &se), "%s / %s", ce.message, se.message);
    ck_assert(!negstream_is_channel_bound(ss));
    negstream_close(cs);
    negstream_close(ss);
}
END_TEST

/* Before authentication, after a failure and on a client the property is
 * false, and NULL is no stream. */
START_TEST(test_bound_property_states)
{
    negstream_error e;
    negstream *s;
    int fds[2];

    ck_assert(!negstream_is_channel_bound(NULL));
    tu_tcp_pair(fds);
    s = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(s);
    ck_assert(!negstream_is_channel_bound(s));
    negstream_close(s);
    close(fds[1]);
}
END_TEST

static Suite *bindings_suite(void)
{
    Suite *s = suite_create("bindings");
    TCase *t = tcase_create("policy");
    TCase *a = tcase_create("api");

    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, test_policy_cell, 0, MECH_COUNT * 3 * CB_COUNT);
    suite_add_tcase(s, t);
    tcase_set_timeout(a, 120);
    tcase_add_test(a, test_begin_copies_bindings);
    tcase_add_test(a, test_option_errors);
    tcase_add_test(a, test_never_ignores_binding_fields);
    tcase_add_test(a, test_bound_property_states);
    tcase_add_test(a, test_client_hears_bad_bindings);
#if HAVE_OPENSSL
    tcase_add_loop_test(a, test_tls_relay, 0, 4);
#endif
    suite_add_tcase(s, a);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(bindings_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
