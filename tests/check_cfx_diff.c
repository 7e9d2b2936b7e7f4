/*
 * check_cfx_diff.c - our RFC 4121 wrap/unwrap on OpenSSL (wrap_cfx.c)
 * against MIT krb5's gss_wrap/gss_unwrap_iov, in one process, under the
 * test realm (tests/kdc/with-realm: one service per enctype).
 *
 * For each enctype the KDC issues (aes128/aes256-cts-hmac-sha1-96,
 * aes128-cts-hmac-sha256-128, aes256-cts-hmac-sha384-192), for krb5 and
 * for SPNEGO, at Sign and at EncryptAndSign, a real handshake through
 * gss.c establishes a client and a server context; gss.c takes both over
 * (g->cfx).  The MIT contexts are then exported and imported, so that each
 * side exists twice: ours (OpenSSL) and MIT's.  For every message, in both
 * directions, sealed and integrity-only, sizes 0 to 200000 (every size
 * around the block, the 64512-byte frame and 65536):
 *  - our token and MIT's gss_wrap token for the same sequence number have
 *    the same length and the same 16-byte header;
 *  - one of them (alternately) goes to MIT's receiver (gss_unwrap_iov in
 *    stream mode, what gss.c's GSSAPI path calls for a CFX token) and to
 *    ours; both accept it with the same plaintext;
 *  - before that, one-bit changes of it go to both and get the same
 *    verdict: every bit of every token up to 256 bytes of plaintext (64
 *    at Sign), and for two large messages the header and 16 bits at
 *    random.  A change of RRC
 *    that rotates by a multiple of the rotated length is accepted by
 *    both; everything else is refused by both.
 * A change either side accepts is tried on a snapshot of both receivers
 * (MIT: export/import; ours: the window), so the two stay in step.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <gssapi/gssapi.h>
#ifdef HAVE_GSSAPI_GSSAPI_EXT_H      /* MIT; Heimdal: all in gssapi.h */
# include <gssapi/gssapi_ext.h>
#endif
#include <gssapi/gssapi_krb5.h>

#include "gss.h"
#include "mitunwrap.h"
#include "testutil.h"
#include "wrap_cfx.h"

static const char *const etype_names[4] = {
    "aes128-cts-hmac-sha1-96", "aes256-cts-hmac-sha1-96",
    "aes128-cts-hmac-sha256-128", "aes256-cts-hmac-sha384-192"
};
static const int etype_nums[4] = { 17, 18, 19, 20 };

static const size_t sizes[] = {
    0, 1, 2, 3, 4, 7, 8, 9, 11, 12, 13, 15, 16, 17, 23, 24, 25, 31, 32, 33,
    47, 48, 49, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 1023, 1024,
    1025, 4095, 4096, 4097, 16383, 16384, 16385, 64447, 64448, 64449,
    64463, 64464, 64465, 64495, 64496, 64497, 64511, 64512, 64513, 65535,
    65536, 65537, 131072, 199999, 200000
};
#define N_SIZES (sizeof(sizes) / sizeof(sizes[0]))
#define ALL_BITS_MAX 400    /* tokens up to this long: every bit */

static unsigned long flips_tried;     /* changed tokens compared */
static unsigned long accepted;        /* of those, accepted by both */

/* ---- MIT's side --------------------------------------------------------- */

/* MIT's verdict (mitunwrap.c); *plain gets a malloc'd copy of the
 * plaintext. */
static ssize_t mit_unwrap(gss_ctx_id_t ctx, const uint8_t *tok, size_t len,
                          uint8_t **plain)
{
    ssize_t n;

    *plain = malloc(len + 1);
    ck_assert_ptr_nonnull(*plain);
    n = mit_unwrap_into(ctx, tok, len, *plain);
    ck_assert_msg(n >= -1, "MIT's unwrap: out of memory, or more plaintext "
                  "than token");
    return n;
}

static gss_ctx_id_t import_ctx(const gss_buffer_desc *tok)
{
    OM_uint32 major, minor;
    gss_buffer_desc copy = *tok;
    gss_ctx_id_t ctx = GSS_C_NO_CONTEXT;

    major = gss_import_sec_context(&minor, &copy, &ctx);
    ck_assert_msg(major == GSS_S_COMPLETE, "gss_import_sec_context: 0x%x",
                  (unsigned)major);
    return ctx;
}

/* Replaces *ctx by a fresh import of itself and returns a second copy. */
static gss_ctx_id_t mit_snapshot(gss_ctx_id_t *ctx)
{
    OM_uint32 major, minor, tmp;
    gss_buffer_desc tok = GSS_C_EMPTY_BUFFER;
    gss_ctx_id_t copy;

    major = gss_export_sec_context(&minor, ctx, &tok);
    ck_assert_msg(major == GSS_S_COMPLETE, "gss_export_sec_context: 0x%x",
                  (unsigned)major);
    *ctx = import_ctx(&tok);
    copy = import_ctx(&tok);
    gss_release_buffer(&tmp, &tok);
    return copy;
}

static void mit_delete(gss_ctx_id_t *ctx)
{
    OM_uint32 minor;

    gss_delete_sec_context(&minor, ctx, GSS_C_NO_BUFFER);
}

/* ---- ours --------------------------------------------------------------- */

static ssize_t our_unwrap(negstream__cfx *c, const uint8_t *tok, size_t len,
                          uint8_t **plain, const char **why)
{
    uint8_t *buf = malloc(len + 1);
    size_t off = 0;
    bool sealed;
    ssize_t n;

    ck_assert_ptr_nonnull(buf);
    memcpy(buf, tok, len);
    *why = NULL;
    n = negstream__cfx_unwrap(c, buf, len, &off, &sealed, why);
    *plain = NULL;
    if (n >= 0) {
        *plain = malloc((size_t)n + 1);
        ck_assert_ptr_nonnull(*plain);
        if (n > 0)
            memcpy(*plain, buf + off, (size_t)n);
    }
    free(buf);
    return n;
}

/* ---- one established pair ----------------------------------------------- */

typedef struct end {
    negstream__cfx *cfx;     /* ours (taken from the gss.c handshake) */
    gss_ctx_id_t    mit;     /* MIT's, imported */
} end;

typedef struct session {
    negstream__gss c, s;
    end            ce, se;
    bool           conf;     /* CONF granted */
} session;

static void gss_zero(negstream__gss *g)
{
    memset(g, 0, sizeof(*g));
    g->ctx = GSS_C_NO_CONTEXT;
    g->cred = GSS_C_NO_CREDENTIAL;
    g->target = GSS_C_NO_NAME;
}

/* The test realm's krb5.conf with the enctype first in
 * permitted_enctypes: the acceptor's subkey (RFC 4537) is the first
 * enctype of the initiator's list that the acceptor permits, which would
 * otherwise be aes256-cts-hmac-sha1-96 whatever the ticket's session key
 * (the service's session_enctypes, tests/kdc/with-realm).  That one stays
 * second, for alice's TGT and long-term keys. */
static void use_enctype(int et)
{
    static char *orig;
    char path[4096], env[8300];
    FILE *f;

    if (orig == NULL)
        orig = strdup(tu_env("KRB5_CONFIG"));
    ck_assert_ptr_nonnull(orig);
    snprintf(path, sizeof(path), "%s/krb5-%s.conf",
             tu_env("NEGTEST_REALM_DIR"), etype_names[et]);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "[libdefaults]\n    permitted_enctypes = %s%s\n",
            etype_names[et], et == 1 ? "" : " aes256-cts-hmac-sha1-96");
    ck_assert_int_eq(fclose(f), 0);
    snprintf(env, sizeof(env), "%s:%s", path, orig);
    ck_assert_int_eq(setenv("KRB5_CONFIG", env, 1), 0);
}

/* Handshake in memory through gss.c, then split each side in two.
 * False (after one SKIP line) when there is no OpenSSL side to compare:
 * Heimdal gives no lucid context, so gss.c keeps the GSSAPI path. */
static bool session_open(session *ss, int et, bool spnego,
                         negstream_protection prot)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error err;
    gss_buffer_desc ctok = GSS_C_EMPTY_BUFFER, stok = GSS_C_EMPTY_BUFFER;
    gss_buffer_desc ex = GSS_C_EMPTY_BUFFER;
    OM_uint32 minor, tmp;
    char target[96];
    int crc = 1, src = 1, rounds = 0;

    use_enctype(et);
    memset(ss, 0, sizeof(*ss));
    gss_zero(&ss->c);
    gss_zero(&ss->s);
    snprintf(target, sizeof(target), "%s@localhost", etype_names[et]);
    negstream_client_options_init(&co);
    co.target_name = target;
    co.protection = prot;
    co.mechanism = spnego ? "negotiate" : "kerberos";
    negstream_server_options_init(&so);
    so.protection = prot;
    ck_assert_msg(negstream__gss_client_init(&ss->c, &co, &err) == 0, "%s",
                  err.message);
    ck_assert_msg(negstream__gss_server_init(&ss->s, &so, &err) == 0, "%s",
                  err.message);
    crc = negstream__gss_step(&ss->c, NULL, 0, &ctok, &err);
    ck_assert_msg(crc >= 0, "client: %s", err.message);
    while (rounds++ < 10) {
        if (ctok.length > 0) {
            src = negstream__gss_step(&ss->s, ctok.value, ctok.length,
                                      &stok, &err);
            ck_assert_msg(src >= 0, "server: %s", err.message);
        }
        negstream__gss_release(&ctok);
        if (stok.length > 0) {
            ck_assert_msg(crc != 0, "server token after the client "
                          "completed");
            crc = negstream__gss_step(&ss->c, stok.value, stok.length,
                                      &ctok, &err);
            ck_assert_msg(crc >= 0, "client: %s", err.message);
        }
        negstream__gss_release(&stok);
        if (crc == 0 && src == 0 && ctok.length == 0)
            break;
    }
    negstream__gss_release(&ctok);
    negstream__gss_release(&stok);
    ck_assert(ss->c.complete && ss->s.complete);
    if (tu_skip_under_heimdal("differential", et * 4 + (spnego ? 2 : 0) +
                              (prot == NEGSTREAM_PROTECTION_SIGN ? 0 : 1),
                              ss->c.cfx == NULL && ss->s.cfx == NULL,
                              "no lucid context, so no OpenSSL CFX path "
                              "to compare with the GSSAPI one"))
        return false;
    ck_assert_msg(ss->c.cfx != NULL && ss->s.cfx != NULL,
                  "gss.c did not take the %s context over",
                  etype_names[et]);
    ck_assert_msg(negstream__cfx_enctype(ss->c.cfx) == etype_nums[et],
                  "tokens go with enctype %d, not %d",
                  negstream__cfx_enctype(ss->c.cfx), etype_nums[et]);
    ss->conf = (ss->c.ret_flags & GSS_C_CONF_FLAG) != 0;
    ss->ce.cfx = ss->c.cfx;
    ss->se.cfx = ss->s.cfx;
    ck_assert_int_eq(gss_export_sec_context(&minor, &ss->c.ctx, &ex),
                     GSS_S_COMPLETE);
    ss->ce.mit = import_ctx(&ex);
    gss_release_buffer(&tmp, &ex);
    ck_assert_int_eq(gss_export_sec_context(&minor, &ss->s.ctx, &ex),
                     GSS_S_COMPLETE);
    ss->se.mit = import_ctx(&ex);
    gss_release_buffer(&tmp, &ex);
    return true;
}

static void session_close(session *ss)
{
    mit_delete(&ss->ce.mit);
    mit_delete(&ss->se.mit);
    negstream__gss_free(&ss->c);      /* frees and wipes the cfx state */
    negstream__gss_free(&ss->s);
}

/* ---- the comparison ----------------------------------------------------- */

typedef struct verdict {
    ssize_t  n;
    uint8_t *plain;
    const char *why;
} verdict;

static void verdict_free(verdict *v)
{
    free(v->plain);
    v->plain = NULL;
}

/* Could either side accept this changed token?  (Then it is tried on
 * snapshots.)  RRC changes, and EC changes of sealed tokens. */
static bool may_accept(const uint8_t *tok, size_t byte)
{
    return byte == 6 || byte == 7 || ((tok[2] & 2) && (byte == 4 ||
                                                       byte == 5));
}

/* Sends one changed token to both receivers and compares. */
static void try_flip(end *to, const uint8_t *tok, size_t len, size_t bit)
{
    uint8_t *bad = malloc(len);
    size_t byte = bit / 8;
    verdict m, o;
    gss_ctx_id_t trial = GSS_C_NO_CONTEXT;
    negstream__cfx_window w;
    bool snap = may_accept(tok, byte);

    ck_assert_ptr_nonnull(bad);
    memcpy(bad, tok, len);
    bad[byte] ^= (uint8_t)(1u << (bit % 8));
    flips_tried++;
    if (snap) {
        trial = mit_snapshot(&to->mit);
        negstream__cfx_window_get(to->cfx, &w);
    }
    m.n = mit_unwrap(snap ? trial : to->mit, bad, len, &m.plain);
    o.n = our_unwrap(to->cfx, bad, len, &o.plain, &o.why);
    if (snap) {
        mit_delete(&trial);
        negstream__cfx_window_set(to->cfx, &w);
    }
    ck_assert_msg((m.n >= 0) == (o.n >= 0),
                  "bit %zu of a %zu-byte token: MIT %s, we %s (%s)", bit,
                  len, m.n >= 0 ? "accept" : "refuse",
                  o.n >= 0 ? "accept" : "refuse", o.why ? o.why : "-");
    if (m.n >= 0) {
        ck_assert(snap);
        ck_assert_int_eq(m.n, o.n);
        if (m.n > 0)
            ck_assert_mem_eq(m.plain, o.plain, (size_t)m.n);
        accepted++;
    }
    verdict_free(&m);
    verdict_free(&o);
    free(bad);
}

static uint32_t rng = 12345;

static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static void flips(end *to, const uint8_t *tok, size_t len)
{
    size_t bit, i;

    if (len <= ALL_BITS_MAX) {
        for (bit = 0; bit < len * 8; bit++)
            try_flip(to, tok, len, bit);
        return;
    }
    for (bit = 0; bit < 16 * 8; bit++)              /* the header */
        try_flip(to, tok, len, bit);
    for (i = 0; i < 16; i++)                        /* and anywhere */
        try_flip(to, tok, len, next_rand() % (len * 8));
}

/* One message from 'from' to 'to': our token and MIT's, compared; one of
 * them, changed and then whole, to both receivers. */
static void one_message(end *from, end *to, bool conf, const uint8_t *msg,
                        size_t len, bool use_ours, bool with_flips)
{
    OM_uint32 major, minor, tmp;
    gss_buffer_desc in, mt = GSS_C_EMPTY_BUFFER;
    size_t cap = len + 256;
    uint8_t *ot = malloc(cap);
    const uint8_t *tok;
    const char *why = NULL;
    ssize_t on;
    size_t tlen;
    int conf_state = 0;
    verdict m, o;

    ck_assert_ptr_nonnull(ot);
    on = negstream__cfx_wrap(from->cfx, conf, msg, len, ot, cap, &why);
    ck_assert_msg(on > 0, "our wrap: %s", why);
    in.value = (void *)msg;
    in.length = len;
    major = gss_wrap(&minor, from->mit, conf, GSS_C_QOP_DEFAULT, &in,
                     &conf_state, &mt);
    ck_assert_int_eq(major, GSS_S_COMPLETE);
    ck_assert_int_eq(conf_state, conf);
    ck_assert_uint_eq((size_t)on, mt.length);
    ck_assert_msg(memcmp(ot, mt.value, 16) == 0,
                  "our header differs from MIT's (size %zu)", len);
    if (!conf)      /* no confounder: the whole token is deterministic */
        ck_assert_mem_eq(ot, mt.value, mt.length);
    tok = use_ours ? ot : (const uint8_t *)mt.value;
    tlen = (size_t)on;
    if (with_flips)
        flips(to, tok, tlen);
    m.n = mit_unwrap(to->mit, tok, tlen, &m.plain);
    o.n = our_unwrap(to->cfx, tok, tlen, &o.plain, &o.why);
    ck_assert_msg(m.n == (ssize_t)len, "MIT refused %s token of %zu",
                  use_ours ? "our" : "its own", len);
    ck_assert_msg(o.n == (ssize_t)len, "we refused %s token of %zu: %s",
                  use_ours ? "our" : "MIT's", len, o.why);
    if (len > 0) {
        ck_assert_mem_eq(m.plain, msg, len);
        ck_assert_mem_eq(o.plain, msg, len);
    }
    verdict_free(&m);
    verdict_free(&o);
    gss_release_buffer(&tmp, &mt);
    free(ot);
}

/* NEGTEST_CFX_DIFF_QUICK=1 (tests/valgrind-check sets it: memcheck is
 * 20-50 times slower): sizes up to 1025, changed tokens up to 17 bytes. */
static bool quick(void)
{
    const char *v = getenv("NEGTEST_CFX_DIFF_QUICK");

    return v != NULL && strcmp(v, "1") == 0;
}

static void run_session(session *ss, bool all_flips)
{
    size_t i, k = 0;
    int conf, dir;

    for (i = 0; i < N_SIZES; i++) {
        if (quick() && sizes[i] > 1025)
            break;
        uint8_t *msg = malloc(sizes[i] + 1);
        size_t j;

        ck_assert_ptr_nonnull(msg);
        for (j = 0; j < sizes[i]; j++)
            msg[j] = (uint8_t)(next_rand() >> 7);
        for (conf = ss->conf ? 1 : 0; conf >= 0; conf--) {
            for (dir = 0; dir < 2; dir++) {
                end *from = dir ? &ss->se : &ss->ce;
                end *to = dir ? &ss->ce : &ss->se;
                /* changed tokens: up to 256 bytes at EncryptAndSign
                 * (sealed and integrity-only tokens), up to 64 at Sign,
                 * and two large ones (the CPU time of every bit of a
                 * 64 KiB token twice through both would be hours) */
                bool fl = sizes[i] <= (quick() ? 17 : all_flips ? 256 : 64) ||
                          (all_flips && dir == 0 &&
                           (sizes[i] == 4097 || sizes[i] == 65537));

                one_message(from, to, conf != 0, msg, sizes[i], (k++ & 1),
                            fl);
            }
        }
        free(msg);
    }
}

/* _i: enctype (0-3) x SPNEGO x level */
START_TEST(differential)
{
    int et = _i / 4;
    bool spnego = (_i & 2) != 0;
    negstream_protection prot = NEGSTREAM_PROTECTION_SIGN;
    session ss;

    if (_i & 1)
        prot = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    if (!session_open(&ss, et, spnego, prot)) {
        session_close(&ss);
        return;
    }
    /* the full set of changed tokens for EncryptAndSign (sealed and
     * integrity-only tokens), the small and boundary sizes for Sign */
    run_session(&ss, (_i & 1) != 0);
    session_close(&ss);
}
END_TEST

/* After a run: the one allowed difference was seen (the raised EC), and
 * the counts for the log. */
/* The counts for the log; a run that compared nothing would be a
 * broken test. */
START_TEST(counts)
{
    printf("cfx_diff: %lu changed tokens compared, %lu of them accepted by "
           "both (RRC rotations by a multiple of the length)\n",
           flips_tried, accepted);
    if (tu_skip_under_heimdal(__func__, 0, flips_tried == 0,
                              "differential compared nothing (no lucid "
                              "context)"))
        return;
    ck_assert_uint_gt(flips_tried, quick() ? 10000 : 50000);
    ck_assert_uint_gt(accepted, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cfx_diff");
    TCase *tc = tcase_create("mit");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, differential, 0, 16);
    tcase_add_test(tc, counts);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
