/*
 * check_fault_proxy.c - faults on the wire, through the misbehaving proxy
 * (proxy.c), plus the secrecy checks: what crosses the wire and what goes
 * into error messages and NEGSTREAM_TRACE output.
 *
 * Runs under tests/kdc/with-realm (tests/fault/proxy.krb).  What
 * tests/check_stream_wire.c already covers by injecting bytes on a raw
 * socket (a bad first frame, bad lengths at the start, a first frame
 * tampered, replayed or reordered, the first frame's confidentiality) is not
 * repeated; here the faults hit the handshake, the middle of a stream
 * and the frames after good ones.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <gssapi/gssapi.h>
#ifdef HAVE_GSSAPI_GSSAPI_EXT_H      /* MIT; Heimdal: all in gssapi.h */
# include <gssapi/gssapi_ext.h>
#endif
#include <gssapi/gssapi_krb5.h>

#include "faultutil.h"
#include "frame.h"
#include "proxy.h"
#include "stream.h"

static const negstream_protection levels[] = {
    NEGSTREAM_PROTECTION_NONE, NEGSTREAM_PROTECTION_SIGN,
    NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
};

/* Authenticates a pair through a new proxy; aborts on failure. */
static fp_proxy *proxied_pair(const tu_auth *a, negstream **c,
                              negstream **s)
{
    negstream_error ce, se;
    fp_proxy *p;
    int cfd, sfd;

    p = fp_start(&cfd, &sfd);
    ck_assert_msg(fu_auth_fds(a, cfd, sfd, c, s, &ce, &se),
                  "authentication through the proxy failed: client: %s "
                  "[%s]; server: %s [%s]", negstream_status_name(ce.code),
                  ce.message, negstream_status_name(se.code), se.message);
    return p;
}

/* n writes of sz bytes (one frame each when sz <= 64512). */
static void write_msgs(negstream *w, int n, size_t sz, uint32_t seed)
{
    uint8_t *b = malloc(sz);
    int i;

    ck_assert_ptr_nonnull(b);
    for (i = 0; i < n; i++) {
        tu_fill(b, sz, seed + (uint32_t)i);
        tu_write_all(w, b, sz);
    }
    free(b);
}

/* Reads message i of write_msgs and checks it. */
static void expect_msg(negstream *r, size_t sz, uint32_t seed, int i)
{
    uint8_t *want = malloc(sz), *got = malloc(sz);

    ck_assert_ptr_nonnull(want);
    ck_assert_ptr_nonnull(got);
    tu_fill(want, sz, seed + (uint32_t)i);
    tu_read_all(r, got, sz);
    ck_assert_msg(memcmp(want, got, sz) == 0, "message %d corrupted", i);
    free(want);
    free(got);
}

/* The next read fails with IO and hands out nothing; the stream is then
 * faulted: reads and writes fail at once, naming the first failure. */
static void expect_read_fault(negstream *r, const char *what)
{
    uint8_t b[2048];
    negstream_error e, e2;
    size_t i;

    memset(b, 0xAA, sizeof(b));
    ck_assert_int_eq(negstream_read(r, b, sizeof(b), 0, sizeof(b), &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_IO, "%s: %s: %s", what,
                  negstream_status_name(e.code), e.message);
    for (i = 0; i < sizeof(b); i++)
        ck_assert_msg(b[i] == 0xAA, "%s: byte %zu of a failed read was "
                      "written", what, i);
    ck_assert_int_eq(negstream_read(r, b, sizeof(b), 0, sizeof(b), &e2), -1);
    ck_assert_int_eq(e2.code, NEGSTREAM_E_IO);
    ck_assert_msg(strstr(e2.message, e.message) != NULL,
                  "%s: second failure '%s' does not name the first '%s'",
                  what, e2.message, e.message);
    ck_assert_int_eq(negstream_write(r, "x", 1, 0, 1, &e2), -1);
    ck_assert_int_eq(e2.code, NEGSTREAM_E_IO);
}

/* ---- one byte at a time ------------------------------------------- */

/* The whole session, handshake included, arrives one byte per recv in
 * both directions; data still arrives intact at every level. */
START_TEST(test_one_byte_at_a_time)
{
    negstream *c, *s;
    fp_proxy *p;
    tu_auth a;
    int cfd, sfd;
    negstream_error ce, se;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_auth_init(&a, levels[_i]);
    p = fp_start(&cfd, &sfd);
    fp_one_byte(p, FP_C2S, true);
    fp_one_byte(p, FP_S2C, true);
    ck_assert_msg(fu_auth_fds(&a, cfd, sfd, &c, &s, &ce, &se),
                  "client: %s; server: %s", ce.message, se.message);
    write_msgs(c, 3, 700, 11);
    expect_msg(s, 700, 11, 0);
    expect_msg(s, 700, 11, 1);
    expect_msg(s, 700, 11, 2);
    write_msgs(s, 1, 3000, 12);
    expect_msg(c, 3000, 12, 0);
    ck_assert_uint_gt(fp_count(p, FP_C2S), 2100);
    negstream_close(c);
    negstream_close(s);
    fp_stop(p);
}
END_TEST

/* ---- the connection cut during the handshake ----------------------- */

/* Bytes each direction carries during a clean handshake. */
static void handshake_sizes(const tu_auth *a, uint64_t sz[2])
{
    negstream *c, *s;
    fp_proxy *p = proxied_pair(a, &c, &s);

    sz[FP_C2S] = fp_count(p, FP_C2S);
    sz[FP_S2C] = fp_count(p, FP_S2C);
    negstream_close(c);
    negstream_close(s);
    fp_stop(p);
}

/* _i: direction (bit 0), close or reset (bit 1), where (the rest):
 * inside the first header, its last byte, right after it, one byte into
 * the payload, the middle, the last byte but one. */
START_TEST(test_cut_during_handshake)
{
    int dir = _i & 1, how = (_i & 2) ? FP_RST : FP_FIN, where = _i >> 2;
    negstream_error ce, se, e;
    negstream *c, *s;
    uint64_t sz[2], at;
    fp_proxy *p;
    tu_auth a;
    int cfd, sfd, attempt;
    bool ok;

    fu_count_sigpipe();
    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    for (attempt = 1;; attempt++) {
        handshake_sizes(&a, sz);
        ck_assert_uint_gt(sz[dir], 8);
        switch (where) {
        case 0: at = 1; break;
        case 1: at = 4; break;
        case 2: at = 5; break;
        case 3: at = 6; break;
        case 4: at = sz[dir] / 2; break;
        default: at = sz[dir] - 1; break;
        }
        p = fp_start(&cfd, &sfd);
        fp_cut_at(p, dir, at, how);
        ok = fu_auth_fds(&a, cfd, sfd, &c, &s, &ce, &se);
        /* Kerberos messages vary by a byte or two from one handshake to
         * the next (DER lengths of the microseconds and the sequence
         * number, which is random): a handshake shorter than the one
         * measured ends before the cut, and the side it was going to
         * completes whatever the other does.  Only a cut that the proxy
         * saw more bytes than 'at' for tested anything: measure again and
         * retry otherwise (a shorter one is common, 20 in a row is not). */
        if (fp_count(p, dir) > at || attempt == 20)
            break;
        negstream_close(c);
        negstream_close(s);
        fp_stop(p);
    }
    ck_assert_msg(!ok, "authentication survived a cut at byte %llu (of "
                  "%llu, %d attempts)", (unsigned long long)at,
                  (unsigned long long)fp_count(p, dir), attempt);
    ck_assert_msg(fu_clean_auth_failure(&ce), "client: %s: %s",
                  negstream_status_name(ce.code), ce.message);
    ck_assert(!negstream_is_authenticated(c));
    /* The failure sticks: data calls repeat it. */
    ck_assert_int_eq(negstream_write(c, "x", 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, ce.code);
    if (dir == FP_C2S || se.code != NEGSTREAM_OK) {
        /* A server cut off before the client's last byte cannot be done;
         * one whose own last message was cut may be. */
        ck_assert_msg(fu_clean_auth_failure(&se), "server: %s: %s",
                      negstream_status_name(se.code), se.message);
        ck_assert(!negstream_is_authenticated(s));
    } else {
        char b[8];

        /* It sent everything and is authenticated; the connection it
         * then reads from is gone. */
        ck_assert_int_le(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e),
                         0);
    }
    ck_assert_int_eq(fu_sigpipes(), 0);
    negstream_close(c);
    negstream_close(s);
    fp_stop(p);
}
END_TEST

/* ---- the connection cut between and inside data frames ------------- */

/* _i: direction (bit 0), close or reset (bit 1), where in frame 1 of a
 * 3-frame write (the rest): right before it, inside its length prefix,
 * right after the prefix, one byte into the token, near the end. */
START_TEST(test_cut_during_data)
{
    static const uint32_t where[] = { 0, 2, 4, 5, 64000 };
    int dir = _i & 1, how = (_i & 2) ? FP_RST : FP_FIN;
    uint32_t at = where[_i >> 2];
    const size_t total = 2 * NEGSTREAM__MAX_CHUNK + 20000;
    negstream *c, *s, *w, *r;
    negstream_error e;
    uint8_t *data, *got;
    fp_proxy *p;
    ssize_t n;
    tu_auth a;
    int i;

    fu_count_sigpipe();
    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    p = proxied_pair(&a, &c, &s);
    w = dir == FP_C2S ? c : s;
    r = dir == FP_C2S ? s : c;
    fp_frames_start(p, dir);
    fp_frame_rule(p, dir, FP_CUT, 1, at, (uint32_t)how);

    data = malloc(total);
    got = malloc(total);
    ck_assert_ptr_nonnull(data);
    ck_assert_ptr_nonnull(got);
    tu_fill(data, total, 21);
    /* The proxy takes all of it before it cuts, so the write itself may
     * succeed; if it fails, it fails cleanly. */
    n = negstream_write(w, data, total, 0, (ssize_t)total, &e);
    ck_assert_msg(n == (ssize_t)total || fu_clean_io_failure(&e),
                  "write: %s: %s", negstream_status_name(e.code), e.message);

    /* Frame 0 arrives whole and intact, nothing after it. */
    tu_read_all(r, got, NEGSTREAM__MAX_CHUNK);
    ck_assert(memcmp(got, data, NEGSTREAM__MAX_CHUNK) == 0);
    if (at == 0 && how == FP_FIN) {
        /* EOF at a frame boundary is a clean end of stream. */
        ck_assert_int_eq(negstream_read(r, got, total, 0, (ssize_t)total,
                                        &e), 0);
        ck_assert_int_eq(e.code, NEGSTREAM_OK);
        ck_assert_int_eq(negstream_read(r, got, total, 0, (ssize_t)total,
                                        &e), 0);
    } else {
        expect_read_fault(r, "cut inside a frame or reset");
    }

    /* The writer learns it too, sooner or later, without SIGPIPE. */
    for (i = 0; i < 200; i++)
        if (negstream_write(w, data, total, 0, NEGSTREAM__MAX_CHUNK, &e) < 0)
            break;
    ck_assert_msg(i < 200, "writes into a cut connection kept succeeding");
    ck_assert_msg(fu_clean_io_failure(&e), "%s: %s",
                  negstream_status_name(e.code), e.message);
    ck_assert_int_eq(negstream_write(w, data, 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(fu_sigpipes(), 0);
    free(data);
    free(got);
    negstream_close(c);
    negstream_close(s);
    fp_stop(p);
}
END_TEST

/* ---- one frame tampered with in the middle of a stream ------------- */

/* _i: level (bit 0: Sign / EncryptAndSign), frame 0..2 (_i >> 1) % 3,
 * byte: first of the token, middle, last (_i / 6). */
START_TEST(test_bit_flip_mid_stream)
{
    static const uint32_t pos[] = { 0, 300, 0xffffffffu };
    negstream_protection lv = (_i & 1) ? NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
                                       : NEGSTREAM_PROTECTION_SIGN;
    unsigned frame = (unsigned)((_i >> 1) % 3);
    uint32_t at = pos[_i / 6];
    negstream *c, *s;
    fp_proxy *p;
    tu_auth a;
    unsigned i;

    tu_auth_init(&a, lv);
    p = proxied_pair(&a, &c, &s);
    fp_frames_start(p, FP_C2S);
    fp_frame_rule(p, FP_C2S, FP_FLIP, frame, at, 0x01);
    write_msgs(c, 3, 1000, 31);
    for (i = 0; i < frame; i++)
        expect_msg(s, 1000, 31, (int)i);
    expect_read_fault(s, "bit flipped");
    negstream_close(c);
    negstream_close(s);
    fp_stop(p);
}
END_TEST

/* ---- frames replayed, swapped or dropped mid-stream ----------------- */

/* _i: level (bit 0), op (replay, swap, drop: (_i >> 1) % 3), frame 0 or 1
 * (_i / 6). */
START_TEST(test_replay_swap_drop_mid_stream)
{
    static const int ops[] = { FP_REPLAY, FP_SWAP, FP_DROP };
    negstream_protection lv = (_i & 1) ? NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
                                       : NEGSTREAM_PROTECTION_SIGN;
    int op = ops[(_i >> 1) % 3];
    unsigned frame = (unsigned)(_i / 6), i;
    negstream *c, *s;
    fp_proxy *p;
    tu_auth a;

    tu_auth_init(&a, lv);
    p = proxied_pair(&a, &c, &s);
    fp_frames_start(p, FP_C2S);
    fp_frame_rule(p, FP_C2S, op, frame, 0, 0);
    write_msgs(c, 4, 500, 41);
    for (i = 0; i < frame; i++)
        expect_msg(s, 500, 41, (int)i);
    if (op == FP_REPLAY)
        expect_msg(s, 500, 41, (int)frame);   /* the original is fine */
    expect_read_fault(s, op == FP_REPLAY ? "replayed frame" :
                         op == FP_SWAP ? "frames out of order" :
                         "frame missing");
    negstream_close(c);
    negstream_close(s);
    fp_stop(p);
}
END_TEST

/* ---- a length prefix rewritten mid-stream --------------------------- */

START_TEST(test_length_prefix_rewritten)
{
    /* 0 and 4: too small; 64513, 65536: acceptable sizes that swallow
     * the next frames and then hit EOF; 65537, 2^31, 2^32-1: too large;
     * 5: a 5-byte "token"; -1/+1: one byte off the real size. */
    static const int64_t lens[] = { 0, 4, 5, 64513, 65536, 65537,
                                    0x80000000LL, 0xffffffffLL, -1, +1 };
    int64_t v = lens[_i];
    negstream *c, *s;
    uint64_t start;
    uint8_t *cap;
    fp_proxy *p;
    tu_auth a;
    uint32_t len;
    size_t n;

    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    p = proxied_pair(&a, &c, &s);
    fp_frames_start(p, FP_C2S);
    /* Frame 0 passes untouched; its prefix gives the real size of a
     * frame of 1000 bytes in this session. */
    start = fp_count(p, FP_C2S);
    write_msgs(c, 1, 1000, 51);
    expect_msg(s, 1000, 51, 0);
    cap = fp_capture(p, FP_C2S, &n);
    ck_assert_uint_ge(n, start + 4 + 1000);
    len = (uint32_t)cap[start] | (uint32_t)cap[start + 1] << 8 |
          (uint32_t)cap[start + 2] << 16 | (uint32_t)cap[start + 3] << 24;
    ck_assert_uint_eq(start + 4 + len, n);
    free(cap);
    if (v == -1 || v == 1)
        v += len;
    fp_frame_rule(p, FP_C2S, FP_SETLEN, 1, (uint32_t)v, 0);
    write_msgs(c, 3, 1000, 52);
    negstream_close(c);         /* EOF after the frames */
    expect_read_fault(s, "length prefix rewritten");
    negstream_close(s);
    fp_stop(p);
}
END_TEST

/* ---- what the wire shows -------------------------------------------- */

#define MARKER "PLAINTEXT-MARKER-negstream-7f3a"

/* A recognisable plaintext: the marker over and over. */
static void fill_marker(uint8_t *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        b[i] = (uint8_t)MARKER[i % (sizeof(MARKER) - 1)];
}

/* EncryptAndSign through the proxy, both directions, several frames:
 * neither the plaintext nor the password appears in any byte of the
 * session, handshake included.  _i: Kerberos from the ccache, Kerberos
 * with a password, NTLM with a password. */
START_TEST(test_wire_shows_no_plaintext)
{
    const size_t sz = 100000;
    uint8_t *b, *got, *cap;
    negstream *c, *s;
    const char *pw;
    fp_proxy *p;
    size_t n;
    tu_auth a;
    int d;

    TU_NEEDS_NTLM(_i == 2);
    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    if (_i == 1) {
        a.password_creds = true;
        a.client_mech = "kerberos";
    } else if (_i == 2) {
        a.ntlm_creds = true;
    }
    pw = tu_env(_i == 2 ? "NEGTEST_NTLM_PASSWORD" : "NEGTEST_PASSWORD");
    p = proxied_pair(&a, &c, &s);
    ck_assert(negstream_is_encrypted(c));
    b = malloc(sz);
    got = malloc(sz);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(got);
    fill_marker(b, sz);
    tu_write_all(c, b, sz);
    tu_read_all(s, got, sz);
    ck_assert(memcmp(b, got, sz) == 0);
    tu_write_all(s, b, 5000);
    tu_read_all(c, got, 5000);
    for (d = 0; d < 2; d++) {
        cap = fp_capture(p, d, &n);
        ck_assert_uint_gt(n, d == FP_C2S ? sz : 5000);
        ck_assert_msg(!fu_contains(cap, n, MARKER, 8),
                      "plaintext on the wire (%s)", d ? "S2C" : "C2S");
        ck_assert_msg(!fu_contains(cap, n, pw, strlen(pw)),
                      "password on the wire");
        free(cap);
    }
    free(b);
    free(got);
    negstream_close(c);
    negstream_close(s);
    fp_stop(p);
}
END_TEST

/* ---- NEGSTREAM_TRACE and error messages keep secrets ---------------- */

/*
 * The scenario runs in a fresh process (this program re-executed with
 * --trace-scenario DIR), because the library reads NEGSTREAM_TRACE once
 * per process.  It traces to DIR/trace.log, writes every error message
 * it gets to DIR/errors.txt and the session keys of its contexts to
 * DIR/keys.bin; the test then looks for secrets in the first two.
 */

static FILE *scenario_errors;
static FILE *scenario_keys;

static void note_error(const char *what, const negstream_error *e)
{
    fprintf(scenario_errors, "%s: %s: %s\n", what,
            negstream_status_name(e->code), e->message);
}

/* The session key of an established context (internal access).  The OID
 * is GSS_C_INQ_SSPI_SESSION_KEY, spelt out: Heimdal's header declares
 * that name but its libgssapi does not export it. */
static void save_session_key(negstream *st)
{
    static gss_OID_desc inq_session_key = {
        11, (void *)"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x05\x05"
    };
    OM_uint32 major, minor;
    gss_buffer_set_t set = GSS_C_NO_BUFFER_SET;
    size_t i;

    major = gss_inquire_sec_context_by_oid(&minor, st->gss.ctx,
                                           &inq_session_key, &set);
    if (GSS_ERROR(major) || set == GSS_C_NO_BUFFER_SET)
        return;
    for (i = 0; i < set->count; i++) {
        uint32_t len = (uint32_t)set->elements[i].length;

        /* Only the key itself (the set's second element is its type). */
        if (len < 16)
            continue;
        fwrite(&len, sizeof(len), 1, scenario_keys);
        fwrite(set->elements[i].value, 1, len, scenario_keys);
    }
    gss_release_buffer_set(&minor, &set);
}

struct scen_srv {
    negstream *s;
    negstream_error e;
    int rc;
};

static void *scen_server(void *arg)
{
    struct scen_srv *ss = arg;

    ss->rc = negstream_authenticate_as_server(ss->s, NULL, &ss->e);
    return NULL;
}

/* Authenticates over a plain pair; 0 on success. */
static int scenario_pair(const negstream_client_options *co,
                         negstream **c, negstream **s, int fds[2])
{
    struct scen_srv ss;
    negstream_error e;
    pthread_t t;
    int rc;

    /* Not tu_tcp_pair: its Check assertions need a running test, and
     * this process is not one. */
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
        return -1;
    *c = negstream_new(fds[0], false, &e);
    memset(&ss, 0, sizeof(ss));
    ss.s = *s = negstream_new(fds[1], false, &e);
    if (*c == NULL || *s == NULL)
        return -1;
    pthread_create(&t, NULL, scen_server, &ss);
    rc = negstream_authenticate_as_client(*c, co, &e);
    if (rc < 0) {
        note_error("client authentication", &e);
        shutdown(fds[0], SHUT_RDWR);
    }
    pthread_join(t, NULL);
    if (ss.rc < 0)
        note_error("server authentication", &ss.e);
    return rc == 0 && ss.rc == 0 ? 0 : -1;
}

static int trace_scenario(const char *dir)
{
    static const char *wrong_pw = "Wrong-Password-5ecret-91c4";
    char path[4096];
    negstream_client_options co;
    negstream *c, *s;
    negstream_error e;
    uint8_t b[4096], garbage[4 + 64];
    int fds[2], round;

    snprintf(path, sizeof(path), "%s/trace.log", dir);
    setenv("NEGSTREAM_TRACE", path, 1);
    snprintf(path, sizeof(path), "%s/errors.txt", dir);
    scenario_errors = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/keys.bin", dir);
    scenario_keys = fopen(path, "wb");
    if (scenario_errors == NULL || scenario_keys == NULL)
        return 2;

    for (round = 0; round < 2; round++) {
        /* Kerberos with alice's password, then NTLM with hers. */
        if (round == 1 && tu_skip_without_ntlm(__func__, round, true))
            break;
        negstream_client_options_init(&co);
        co.target_name = getenv("NEGTEST_SPN");
        if (round == 0) {
            co.mechanism = "kerberos";
            co.user = getenv("NEGTEST_USER");
            co.password = getenv("NEGTEST_PASSWORD");
        } else {
            co.mechanism = "ntlm";
            co.user = getenv("NEGTEST_NTLM_USER");
            co.domain = getenv("NEGTEST_NTLM_DOMAIN");
            co.password = getenv("NEGTEST_NTLM_PASSWORD");
        }
        if (scenario_pair(&co, &c, &s, fds) < 0)
            return 3;
        save_session_key(c);
        save_session_key(s);
        fill_marker(b, sizeof(b));
        if (negstream_write(c, b, sizeof(b), 0, sizeof(b), &e) < 0 ||
            negstream_write(s, b, sizeof(b), 0, sizeof(b), &e) < 0)
            return 4;
        memset(b, 0, sizeof(b));
        if (negstream_read(s, b, sizeof(b), 0, sizeof(b), &e) <= 0 ||
            negstream_read(c, b, sizeof(b), 0, sizeof(b), &e) <= 0)
            return 5;
        /* A forged frame whose "token" is plaintext: the error must not
         * quote it. */
        garbage[0] = 64;
        garbage[1] = garbage[2] = garbage[3] = 0;
        fill_marker(garbage + 4, 64);
        if (send(fds[0], garbage, sizeof(garbage), MSG_NOSIGNAL) !=
            (ssize_t)sizeof(garbage))
            return 6;
        if (negstream_read(s, b, sizeof(b), 0, sizeof(b), &e) != -1)
            return 7;
        note_error("forged frame", &e);
        if (negstream_read(s, b, sizeof(b), 0, sizeof(b), &e) != -1)
            return 7;
        note_error("read after the fault", &e);
        negstream_close(c);
        negstream_close(s);

        /* A wrong password. */
        co.password = wrong_pw;
        if (scenario_pair(&co, &c, &s, fds) == 0)
            return 8;
        negstream_close(c);
        negstream_close(s);
    }
    fclose(scenario_errors);
    fclose(scenario_keys);
    return 0;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p = NULL;
    size_t cap = 0;

    *n = 0;
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    for (;;) {
        size_t r;

        if (*n + 4096 > cap) {
            cap = cap ? 2 * cap : 65536;
            p = realloc(p, cap);
            ck_assert_ptr_nonnull(p);
        }
        r = fread(p + *n, 1, cap - *n, f);
        if (r == 0)
            break;
        *n += r;
    }
    fclose(f);
    return p;
}

static void assert_no_secret(const char *name, const uint8_t *hay,
                             size_t n, const void *secret, size_t len,
                             const char *what)
{
    ck_assert_msg(!fu_contains(hay, n, secret, len), "%s contains %s", name,
                  what);
}

/* Both the raw bytes and hex (either case) of a key. */
static void assert_no_key(const char *name, const uint8_t *hay, size_t n,
                          const uint8_t *key, size_t len)
{
    char lo[2 * 64 + 1], up[2 * 64 + 1];
    size_t i;

    if (len > 64)
        len = 64;
    for (i = 0; i < len; i++) {
        sprintf(lo + 2 * i, "%02x", key[i]);
        sprintf(up + 2 * i, "%02X", key[i]);
    }
    assert_no_secret(name, hay, n, key, len, "a session key");
    /* 8 hex digits of the key are already a leak. */
    for (i = 0; i + 16 <= 2 * len; i += 2) {
        assert_no_secret(name, hay, n, lo + i, 16, "a session key in hex");
        assert_no_secret(name, hay, n, up + i, 16, "a session key in hex");
    }
}

START_TEST(test_trace_and_errors_keep_secrets)
{
    char dir[4096], path[4200], self[4096];
    uint8_t *trace, *errs, *keys;
    size_t tn, en, kn, off;
    const char *files[2] = { "trace.log", "errors.txt" };
    const char *secrets[4];
    int status, f, i, nkeys = 0;
    ssize_t sl;
    pid_t pid;

    /* In the realm's directory: removed with it, and never in srcdir. */
    snprintf(dir, sizeof(dir), "%s/trace-XXXXXX",
             tu_env("NEGTEST_REALM_DIR"));
    ck_assert_ptr_nonnull(mkdtemp(dir));
    sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    ck_assert_int_gt(sl, 0);
    self[sl] = '\0';
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(600);             /* a hang ends as a failure, not forever */
        execl(self, self, "--trace-scenario", dir, (char *)NULL);
        _exit(127);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "trace scenario failed (status 0x%x; see its stderr)",
                  status);

    snprintf(path, sizeof(path), "%s/trace.log", dir);
    trace = slurp(path, &tn);
    snprintf(path, sizeof(path), "%s/errors.txt", dir);
    errs = slurp(path, &en);
    snprintf(path, sizeof(path), "%s/keys.bin", dir);
    keys = slurp(path, &kn);
    /* The scenario did trace and did fail where it should. */
    ck_assert_msg(fu_contains(trace, tn, "authenticated", 13),
                  "no authentication in the trace");
    ck_assert_uint_gt(en, 0);
    secrets[0] = MARKER;
    secrets[1] = tu_env("NEGTEST_PASSWORD");
    secrets[2] = tu_env("NEGTEST_NTLM_PASSWORD");
    secrets[3] = "Wrong-Password-5ecret-91c4";
    for (f = 0; f < 2; f++) {
        const uint8_t *hay = f == 0 ? trace : errs;
        size_t n = f == 0 ? tn : en;

        assert_no_secret(files[f], hay, n, "PLAINTEXT-MARKER", 16,
                         "plaintext");
        for (i = 1; i < 4; i++)
            assert_no_secret(files[f], hay, n, secrets[i],
                             strlen(secrets[i]), "a password");
        for (off = 0; off + 4 <= kn;) {
            uint32_t len;

            memcpy(&len, keys + off, 4);
            ck_assert_uint_le(off + 4 + len, kn);
            assert_no_key(files[f], hay, n, keys + off + 4, len);
            off += 4 + len;
            if (f == 0)
                nkeys++;
        }
    }
    /* At least the Kerberos contexts gave their keys. */
    ck_assert_int_ge(nkeys, 2);
    free(trace);
    free(errs);
    free(keys);
    for (f = 0; f < 3; f++) {
        static const char *names[3] = { "trace.log", "errors.txt",
                                        "keys.bin" };

        snprintf(path, sizeof(path), "%s/%s", dir, names[f]);
        unlink(path);
    }
    rmdir(dir);
}
END_TEST

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault_proxy");
    TCase *t = tcase_create("proxy");

    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, test_one_byte_at_a_time, 0, 3);
    tcase_add_loop_test(t, test_cut_during_handshake, 0, 24);
    tcase_add_loop_test(t, test_cut_during_data, 0, 20);
    tcase_add_loop_test(t, test_bit_flip_mid_stream, 0, 18);
    tcase_add_loop_test(t, test_replay_swap_drop_mid_stream, 0, 12);
    tcase_add_loop_test(t, test_length_prefix_rewritten, 0, 10);
    tcase_add_loop_test(t, test_wire_shows_no_plaintext, 0, 3);
    tcase_add_test(t, test_trace_and_errors_keep_secrets);
    suite_add_tcase(s, t);
    return s;
}

int main(int argc, char **argv)
{
    SRunner *sr;
    int failed;

    if (argc == 3 && strcmp(argv[1], "--trace-scenario") == 0)
        return trace_scenario(argv[2]);
    sr = srunner_create(fault_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
