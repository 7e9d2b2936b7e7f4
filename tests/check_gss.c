/*
 * check_gss.c - the GSSAPI glue (src/gss.c) and the [MS-NNS] handshake
 * (src/handshake.c) against a real MIT KDC (tests/kdc/with-realm) and
 * gss-ntlmssp: both sides run our code on two threads over a socketpair
 * or 127.0.0.1 TCP; a "raw" peer written here checks the bytes on the
 * wire and how garbage is handled.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef HAVE_GSSAPI_GSSAPI_EXT_H      /* MIT; Heimdal: all in gssapi.h */
# include <gssapi/gssapi_ext.h>
#endif

#include "frame.h"
#include "gss.h"
#include "handshake.h"
#include "testutil.h"

#define CAP (NEGSTREAM__MAX_CHUNK + NEGSTREAM__WRAP_OVERHEAD_MAX)

#if defined(__SANITIZE_ADDRESS__)
# define GSS_TEST_ASAN 1
#elif defined(__has_feature)
# if __has_feature(address_sanitizer)
#  define GSS_TEST_ASAN 1
# endif
#endif

#ifdef GSS_TEST_ASAN
/*
 * Leaks inside the GSSAPI libraries, not ours (LeakSanitizer reads this
 * hook at start-up):
 *  - gss-ntlmssp 1.2 loads OpenSSL's legacy provider into a new library
 *    context and fetches MD4/MD5/RC4 for every credential and context,
 *    never freeing them: everything allocated inside libcrypto (nothing
 *    here calls libcrypto; a leaked GSS object of ours would show up as a
 *    direct leak in libgssapi_krb5 instead, which is not suppressed);
 *  - gss-ntlmssp's acceptor credential leaks a 32-byte name per
 *    acquisition (only module names are available for its frames);
 *  - MIT krb5 1.20 leaks the principal it builds when an acceptor
 *    credential for a name without a keytab entry cannot be acquired.
 * The valgrind run (tests/valgrind.supp) matches the gss-ntlmssp entry on
 * the exact call path instead.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcrypto.so\n"
           "leak:gssntlmssp.so\n"
           "leak:krb5_build_principal_alloc_va\n";
}
#endif

/* ---- one side of a handshake, run on its own thread -------------------- */

typedef struct side {
    bool                     server;
    negstream_client_options co;
    negstream_server_options so;
    negstream__gss           g;
    negstream__transport     t;
    int                      fd;
    int                      timeout_ms;
    int                      init_rc, rc;
    negstream_error          err;
    pthread_t                thread;
} side;

static void side_zero(side *s, bool server)
{
    memset(s, 0, sizeof(*s));
    s->server = server;
    s->g.ctx = GSS_C_NO_CONTEXT;
    s->g.cred = GSS_C_NO_CREDENTIAL;
    s->g.target = GSS_C_NO_NAME;
    s->fd = -1;
    s->timeout_ms = -1;
    s->rc = s->init_rc = -2;
    negstream_client_options_init(&s->co);
    negstream_server_options_init(&s->so);
}

static void client_default(side *c, negstream_protection p)
{
    side_zero(c, false);
    c->co.target_name = tu_env("NEGTEST_SPN");
    c->co.protection = p;
}

static void client_ntlm(side *c, negstream_protection p)
{
    client_default(c, p);
    c->co.mechanism = "ntlm";
    c->co.user = tu_env("NEGTEST_NTLM_USER");
    c->co.domain = tu_env("NEGTEST_NTLM_DOMAIN");
    c->co.password = tu_env("NEGTEST_NTLM_PASSWORD");
}

static void server_default(side *s, negstream_protection p)
{
    side_zero(s, true);
    s->so.protection = p;
}

/*
 * Initialises and authenticates one side.  A side whose init fails shuts
 * its socket down, as an application would close it, so that the peer is
 * not left waiting; a failed handshake does not: the peer must have been
 * told by an error message.
 */
static void *side_run(void *p)
{
    side *s = p;

    if (negstream__transport_fd(&s->t, s->fd, &s->err) < 0) {
        s->rc = s->init_rc = -1;
        return NULL;
    }
    if (s->server)
        s->init_rc = negstream__gss_server_init(&s->g, &s->so, &s->err);
    else
        s->init_rc = negstream__gss_client_init(&s->g, &s->co, &s->err);
    if (s->init_rc < 0) {
        s->rc = -1;
        shutdown(s->fd, SHUT_RDWR);
        return NULL;
    }
    if (s->server)
        s->rc = negstream__handshake_server(&s->g, &s->t, s->timeout_ms,
                                            &s->err);
    else
        s->rc = negstream__handshake_client(&s->g, &s->t, s->timeout_ms,
                                            &s->err);
    return NULL;
}

static void side_start(side *s)
{
    ck_assert_int_eq(pthread_create(&s->thread, NULL, side_run, s), 0);
}

static void side_join(side *s)
{
    ck_assert_int_eq(pthread_join(s->thread, NULL), 0);
}

static void side_done(side *s)
{
    negstream__gss_free(&s->g);
    if (s->t.ops != NULL)
        s->t.ops->close(&s->t);
    s->t.ops = NULL;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static void make_pair(int fds[2], bool tcp)
{
    if (tcp)
        tu_tcp_pair(fds);
    else
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                                    fds), 0);
}

/* Runs client c against server s; both threads joined on return. */
static void run_pair(side *c, side *s, bool tcp)
{
    int fds[2];

    make_pair(fds, tcp);
    c->fd = fds[0];
    s->fd = fds[1];
    side_start(s);
    side_start(c);
    side_join(c);
    side_join(s);
}

static void expect_ok(const side *c, const side *s)
{
    ck_assert_msg(c->rc == 0, "client: %s: %s",
                  negstream_status_name(c->err.code), c->err.message);
    ck_assert_msg(s->rc == 0, "server: %s: %s",
                  negstream_status_name(s->err.code), s->err.message);
    ck_assert_int_eq(c->err.code, NEGSTREAM_OK);
    ck_assert_int_eq(s->err.code, NEGSTREAM_OK);
    ck_assert(c->g.complete && s->g.complete);
    /* Credentials are released once the context is established: one
     * acquired with a password may hold that password. */
    ck_assert_msg(c->g.cred == GSS_C_NO_CREDENTIAL,
                  "the client still holds its credential");
    ck_assert_msg(s->g.cred == GSS_C_NO_CREDENTIAL,
                  "the server still holds its credential");
}

static void expect_code(const side *x, negstream_status code,
                        const char *needle)
{
    ck_assert_msg(x->rc == -1 && x->err.code == code,
                  "%s: expected %s, got rc %d, %s: %s",
                  x->server ? "server" : "client",
                  negstream_status_name(code), x->rc,
                  negstream_status_name(x->err.code), x->err.message);
    if (needle != NULL)
        ck_assert_msg(strstr(x->err.message, needle) != NULL,
                      "%s: \"%s\" not in \"%s\"",
                      x->server ? "server" : "client", needle,
                      x->err.message);
}

/* ---- wrap / unwrap ------------------------------------------------------ */

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    size_t i;

    for (i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
}

/* Wraps n bytes on a, unwraps them on b, compares.  Returns the token
 * length. */
static size_t roundtrip(negstream__gss *a, negstream__gss *b, size_t n,
                        unsigned seed)
{
    uint8_t *in = malloc(n > 0 ? n : 1), *tok = malloc(CAP);
    negstream_error e;
    size_t off = 12345;
    ssize_t t, p;

    ck_assert(in != NULL && tok != NULL);
    fill(in, n, seed);
    t = negstream__gss_wrap(a, in, n, tok, CAP, &e);
    ck_assert_msg(t > 0, "wrap of %zu: %s", n, e.message);
    ck_assert_uint_le((size_t)t, n + NEGSTREAM__WRAP_OVERHEAD_MAX);
    if (n > 0 && negstream__gss_is_encrypted(a))
        ck_assert_msg(memmem(tok, (size_t)t, in, n < 16 ? n : 16) == NULL
                      || n < 4, "plaintext visible in an encrypted token");
    p = negstream__gss_unwrap(b, tok, (size_t)t, &off, &e);
    ck_assert_msg(p == (ssize_t)n, "unwrap of %zu: %zd: %s", n, p,
                  e.message);
    ck_assert_uint_le(off + n, (size_t)t);
    ck_assert(n == 0 || memcmp(tok + off, in, n) == 0);
    free(in);
    free(tok);
    return (size_t)t;
}

static void roundtrips(side *c, side *s)
{
    static const size_t sizes[] = { 0, 1, 64512, 1000, 0, 64512 };
    size_t i;

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (sizes[i] == 0 && c->g.is_ntlm) {
            /* gss-ntlmssp cannot protect an empty message: a clean
             * error, and nothing consumed (the next round trip works) */
            uint8_t tok[64];
            negstream_error e;

            ck_assert_int_eq(negstream__gss_wrap(&c->g, "", 0, tok,
                                                 sizeof(tok), &e), -1);
            ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
            ck_assert_ptr_nonnull(strstr(e.message, "empty message"));
            continue;
        }
        roundtrip(&c->g, &s->g, sizes[i], (unsigned)i);
        roundtrip(&s->g, &c->g, sizes[i], (unsigned)i + 100);
    }
}

/* A token of n bytes from a, owned by the caller. */
static uint8_t *wrap_one(negstream__gss *a, size_t n, unsigned seed,
                         size_t *len)
{
    uint8_t in[256], *tok = malloc(CAP);
    negstream_error e;
    ssize_t t;

    ck_assert(tok != NULL && n <= sizeof(in));
    fill(in, n, seed);
    t = negstream__gss_wrap(a, in, n, tok, CAP, &e);
    ck_assert_msg(t > 0, "wrap: %s", e.message);
    *len = (size_t)t;
    return tok;
}

static void unwrap_ok(negstream__gss *b, const uint8_t *tok, size_t len,
                      size_t n)
{
    uint8_t *copy = malloc(len);
    negstream_error e;
    size_t off;
    ssize_t p;

    ck_assert(copy != NULL);
    memcpy(copy, tok, len);
    p = negstream__gss_unwrap(b, copy, len, &off, &e);
    ck_assert_msg(p == (ssize_t)n, "unwrap: %zd: %s", p, e.message);
    free(copy);
}

static void unwrap_fails(negstream__gss *b, const uint8_t *tok, size_t len)
{
    uint8_t *copy = malloc(len);
    negstream_error e;
    size_t off;
    ssize_t p;

    ck_assert(copy != NULL);
    memcpy(copy, tok, len);
    p = negstream__gss_unwrap(b, copy, len, &off, &e);
    ck_assert_msg(p == -1, "unwrap of a bad token returned %zd", p);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_msg(strstr(e.message, "could not decrypt/verify the frame")
                  != NULL, "message: %s", e.message);
    free(copy);
}

/*
 * Tampering (client to server) and replay (server to client) are refused.
 * After a failed unwrap the receiving state of that direction is not
 * usable any more (gss-ntlmssp advances its sequence number and RC4 state
 * even for a bad signature; the stream faults anyway), so each direction
 * sees exactly one attack, and reordering gets a fresh pair (reorder()).
 */
static void attacks(side *c, side *s)
{
    uint8_t *t1;
    size_t l1;

    /* one flipped bit, in the middle of the token */
    t1 = wrap_one(&c->g, 100, 1, &l1);
    t1[l1 / 2] ^= 0x10;
    unwrap_fails(&s->g, t1, l1);
    free(t1);

    t1 = wrap_one(&s->g, 50, 2, &l1);
    unwrap_ok(&c->g, t1, l1, 50);
    unwrap_fails(&c->g, t1, l1);                 /* replayed */
    free(t1);
}

/* The second of two tokens first: refused (a gap). */
static void reorder(side *c, side *s)
{
    uint8_t *t1, *t2;
    size_t l1, l2;

    t1 = wrap_one(&c->g, 60, 3, &l1);
    t2 = wrap_one(&c->g, 70, 4, &l2);
    unwrap_fails(&s->g, t2, l2);
    free(t1);
    free(t2);
}

/* The tampering test alone, on a fresh pair: the very first frame. */
static void tamper_first(side *c, side *s)
{
    uint8_t *t;
    size_t l, i;

    for (i = 0; i < 3; i++) {
        size_t pos;

        t = wrap_one(&c->g, 64, 9, &l);
        pos = i == 0 ? 0 : i == 1 ? l / 2 : l - 1;
        t[pos] ^= 0x01;
        unwrap_fails(&s->g, t, l);
        free(t);
    }
}

/* ---- Kerberos ----------------------------------------------------------- */

static void check_krb_props(side *c, side *s, bool encrypted)
{
    ck_assert_int_eq(negstream__gss_is_encrypted(&c->g), encrypted);
    ck_assert_int_eq(negstream__gss_is_encrypted(&s->g), encrypted);
    ck_assert(negstream__gss_is_signed(&c->g));
    ck_assert(negstream__gss_is_signed(&s->g));
    ck_assert(negstream__gss_is_framed(&c->g));
    ck_assert(negstream__gss_is_framed(&s->g));
    ck_assert(negstream__gss_is_mutual(&c->g));
    ck_assert(!c->g.is_ntlm && !s->g.is_ntlm);
    ck_assert_str_eq(negstream__gss_auth_type(&c->g), "Kerberos");
    ck_assert_str_eq(negstream__gss_auth_type(&s->g), "Kerberos");
    ck_assert_str_eq(c->g.peer_name, tu_env("NEGTEST_SPN"));
    ck_assert_str_eq(s->g.peer_name, tu_env("NEGTEST_USER"));
    /* MIT's acceptor reports IDENTIFY because the client asked for it */
    ck_assert_int_eq(negstream__gss_impersonation(&s->g),
                     NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    ck_assert_int_eq(negstream__gss_impersonation(&c->g),
                     NEGSTREAM_IMPERSONATION_IDENTIFICATION);
}

static void krb_sides(side *c, side *s, const char *mech,
                      negstream_protection p)
{
    client_default(c, p);
    c->co.mechanism = mech;
    server_default(s, p);
}

static void krb_case(const char *mech, negstream_protection p, bool tcp)
{
    side c, s;

    krb_sides(&c, &s, mech, p);
    run_pair(&c, &s, tcp);
    expect_ok(&c, &s);
    check_krb_props(&c, &s, p == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    roundtrips(&c, &s);
    attacks(&c, &s);
    side_done(&c);
    side_done(&s);

    krb_sides(&c, &s, mech, p);
    run_pair(&c, &s, !tcp);
    expect_ok(&c, &s);
    reorder(&c, &s);
    side_done(&c);
    side_done(&s);
}

START_TEST(krb_spnego_eas_socketpair)
{
    krb_case(NULL, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false);
}
END_TEST

START_TEST(krb_spnego_eas_tcp)
{
    krb_case("negotiate", NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true);
}
END_TEST

START_TEST(krb_raw_eas_socketpair)
{
    krb_case("kerberos", NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false);
}
END_TEST

START_TEST(krb_raw_eas_tcp)
{
    krb_case("Kerberos", NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true);
}
END_TEST

/* Sign: GSS_KRB5_CRED_NO_CI_FLAGS_X keeps MIT from granting CONF. */
START_TEST(krb_spnego_sign_socketpair)
{
    krb_case(NULL, NEGSTREAM_PROTECTION_SIGN, false);
}
END_TEST

START_TEST(krb_spnego_sign_tcp)
{
    krb_case(NULL, NEGSTREAM_PROTECTION_SIGN, true);
}
END_TEST

START_TEST(krb_raw_sign_socketpair)
{
    krb_case("kerberos", NEGSTREAM_PROTECTION_SIGN, false);
}
END_TEST

START_TEST(krb_raw_sign_tcp)
{
    krb_case("kerberos", NEGSTREAM_PROTECTION_SIGN, true);
}
END_TEST

START_TEST(krb_tamper_first_frame)
{
    side c, s;

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    tamper_first(&c, &s);
    side_done(&c);
    side_done(&s);
}
END_TEST

/* A whole reordered exchange: the later token is refused, and so is the
 * earlier one after it (the sequence window moved). */
START_TEST(krb_reorder_both)
{
    side c, s;
    uint8_t *t1, *t2;
    size_t l1, l2;

    client_default(&c, NEGSTREAM_PROTECTION_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    run_pair(&c, &s, true);
    expect_ok(&c, &s);
    t1 = wrap_one(&c.g, 10, 1, &l1);
    t2 = wrap_one(&c.g, 20, 2, &l2);
    unwrap_fails(&s.g, t2, l2);
    unwrap_fails(&s.g, t1, l1);
    free(t1);
    free(t2);
    side_done(&c);
    side_done(&s);
}
END_TEST

/* The token must fit the caller's buffer. */
START_TEST(wrap_no_room)
{
    side c, s;
    uint8_t in[64], out[70];
    negstream_error e;

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    fill(in, sizeof(in), 1);
    ck_assert_int_eq(negstream__gss_wrap(&c.g, in, sizeof(in), out,
                                         sizeof(out), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_ptr_nonnull(strstr(e.message, "does not fit"));
    side_done(&c);
    side_done(&s);
}
END_TEST

/*
 * No Kerberos credentials by default: no ccache, and no client keytab
 * (MIT would otherwise get alice a ticket from KRB5_CLIENT_KTNAME on its
 * own).  Each test runs in its own process (Check forks), so the change
 * stays in the test.
 */
static void no_ccache(void)
{
    static char ccname[512], ktname[512];

    snprintf(ccname, sizeof(ccname), "FILE:%s/no-such-ccache",
             tu_env("NEGTEST_REALM_DIR"));
    snprintf(ktname, sizeof(ktname), "FILE:%s/no-such-keytab",
             tu_env("NEGTEST_REALM_DIR"));
    ck_assert_int_eq(setenv("KRB5CCNAME", ccname, 1), 0);
    ck_assert_int_eq(setenv("KRB5_CLIENT_KTNAME", ktname, 1), 0);
}

static void password_case(const char *mech, negstream_protection p,
                          const char *user, const char *domain)
{
    side c, s;

    no_ccache();
    client_default(&c, p);
    c.co.mechanism = mech;
    c.co.user = user;
    c.co.domain = domain;
    c.co.password = tu_env("NEGTEST_PASSWORD");
    server_default(&s, p);
    run_pair(&c, &s, true);
    expect_ok(&c, &s);
    check_krb_props(&c, &s, p == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    roundtrips(&c, &s);
    side_done(&c);
    side_done(&s);
}

START_TEST(krb_password_kerberos)
{
    password_case("kerberos", NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN,
                  tu_env("NEGTEST_USER"), NULL);
}
END_TEST

START_TEST(krb_password_negotiate)
{
    password_case(NULL, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN,
                  tu_env("NEGTEST_USER"), NULL);
}
END_TEST

START_TEST(krb_password_sign)
{
    password_case(NULL, NEGSTREAM_PROTECTION_SIGN, tu_env("NEGTEST_USER"),
                  NULL);
}
END_TEST

/* "REALM\user" and user + domain both become user@REALM. */
START_TEST(krb_password_domain_forms)
{
    char user[256];

    snprintf(user, sizeof(user), "%s\\%s", tu_env("NEGTEST_REALM"),
             tu_env("NEGTEST_USER_SHORT"));
    password_case("kerberos", NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, user,
                  NULL);
}
END_TEST

START_TEST(krb_password_separate_domain)
{
    password_case("kerberos", NEGSTREAM_PROTECTION_SIGN,
                  tu_env("NEGTEST_USER_SHORT"), tu_env("NEGTEST_REALM"));
}
END_TEST

/* ---- NTLM --------------------------------------------------------------- */

static void check_ntlm_props(side *c, side *s, negstream_protection p)
{
    char peer[256];

    ck_assert(c->g.is_ntlm && s->g.is_ntlm);
    ck_assert_str_eq(negstream__gss_auth_type(&c->g), "NTLM");
    ck_assert_str_eq(negstream__gss_auth_type(&s->g), "NTLM");
    ck_assert(!negstream__gss_is_mutual(&c->g));
    ck_assert(!negstream__gss_is_mutual(&s->g));
    ck_assert_int_eq(negstream__gss_is_encrypted(&c->g),
                     p == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    ck_assert_int_eq(negstream__gss_is_encrypted(&s->g),
                     p == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    if (p != NEGSTREAM_PROTECTION_NONE) {
        ck_assert(negstream__gss_is_signed(&c->g));
        ck_assert(negstream__gss_is_signed(&s->g));
    }
    /* Whatever gss-ntlmssp grants at None, both sides must agree on
     * framing or the data phase breaks. */
    ck_assert_int_eq(negstream__gss_is_framed(&c->g),
                     negstream__gss_is_framed(&s->g));
    snprintf(peer, sizeof(peer), "%s\\%s", tu_env("NEGTEST_NTLM_DOMAIN"),
             tu_env("NEGTEST_NTLM_USER"));
    ck_assert_str_eq(s->g.peer_name, peer);
    ck_assert_str_eq(c->g.peer_name, tu_env("NEGTEST_SPN"));
    /* as .NET's Unix acceptor: NTLM counts as Identification */
    ck_assert_int_eq(negstream__gss_impersonation(&s->g),
                     NEGSTREAM_IMPERSONATION_IDENTIFICATION);
}

static void ntlm_case(negstream_protection p, bool tcp)
{
    side c, s;

    client_ntlm(&c, p);
    server_default(&s, p);
    run_pair(&c, &s, tcp);
    expect_ok(&c, &s);
    check_ntlm_props(&c, &s, p);
    if (negstream__gss_is_framed(&c.g)) {
        size_t len;

        roundtrips(&c, &s);
        if (!negstream__gss_is_encrypted(&c.g)) {
            /* .NET's NTLM Sign layout: 16-byte signature + plaintext */
            len = roundtrip(&c.g, &s.g, 200, 5);
            ck_assert_uint_eq(len, 16 + 200);
        }
        attacks(&c, &s);
    }
    side_done(&c);
    side_done(&s);

    if (p == NEGSTREAM_PROTECTION_NONE)
        return;
    client_ntlm(&c, p);
    server_default(&s, p);
    run_pair(&c, &s, !tcp);
    expect_ok(&c, &s);
    reorder(&c, &s);
    side_done(&c);
    side_done(&s);
}

START_TEST(ntlm_none_socketpair)
{
    TU_NEEDS_NTLM(true);
    ntlm_case(NEGSTREAM_PROTECTION_NONE, false);
}
END_TEST

START_TEST(ntlm_sign_socketpair)
{
    TU_NEEDS_NTLM(true);
    ntlm_case(NEGSTREAM_PROTECTION_SIGN, false);
}
END_TEST

START_TEST(ntlm_eas_socketpair)
{
    TU_NEEDS_NTLM(true);
    ntlm_case(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false);
}
END_TEST

START_TEST(ntlm_none_tcp)
{
    TU_NEEDS_NTLM(true);
    ntlm_case(NEGSTREAM_PROTECTION_NONE, true);
}
END_TEST

START_TEST(ntlm_sign_tcp)
{
    TU_NEEDS_NTLM(true);
    ntlm_case(NEGSTREAM_PROTECTION_SIGN, true);
}
END_TEST

START_TEST(ntlm_eas_tcp)
{
    TU_NEEDS_NTLM(true);
    ntlm_case(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true);
}
END_TEST

/* The NTLM Sign layout, byte for byte: the signature is what gss_get_mic
 * gives, then the plaintext in the clear. */
START_TEST(ntlm_sign_layout)
{
    side c, s;
    uint8_t in[40], tok[100];
    negstream_error e;
    ssize_t t;
    size_t off;

    TU_NEEDS_NTLM(true);

    client_ntlm(&c, NEGSTREAM_PROTECTION_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    ck_assert(!negstream__gss_is_encrypted(&c.g));
    fill(in, sizeof(in), 3);
    t = negstream__gss_wrap(&c.g, in, sizeof(in), tok, sizeof(tok), &e);
    ck_assert_int_eq(t, 16 + (ssize_t)sizeof(in));
    ck_assert(memcmp(tok + 16, in, sizeof(in)) == 0);
    /* NTLMSSP signature version 1 */
    ck_assert_int_eq(tok[0], 1);
    ck_assert_int_eq(negstream__gss_unwrap(&s.g, tok, (size_t)t, &off, &e),
                     (ssize_t)sizeof(in));
    ck_assert_uint_eq(off, 16);
    /* shorter than a signature, or a signature alone */
    ck_assert_int_eq(negstream__gss_unwrap(&s.g, tok, 15, &off, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(negstream__gss_unwrap(&s.g, tok, 16, &off, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    side_done(&c);
    side_done(&s);
}
END_TEST

/* A None client always uses NTLM, even when asked for "kerberos". */
START_TEST(ntlm_forced_for_none)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_ntlm(&c, NEGSTREAM_PROTECTION_NONE);
    c.co.mechanism = "kerberos";
    server_default(&s, NEGSTREAM_PROTECTION_NONE);
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    ck_assert(c.g.is_ntlm && s.g.is_ntlm);
    side_done(&c);
    side_done(&s);
}
END_TEST

/* User and domain without a password: gss-ntlmssp finds the password in
 * NTLM_USER_FILE. */
START_TEST(ntlm_user_file)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.password = NULL;
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, true);
    expect_ok(&c, &s);
    check_ntlm_props(&c, &s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    roundtrips(&c, &s);
    side_done(&c);
    side_done(&s);
}
END_TEST

/* SPNEGO falls back to NTLM when Kerberos has nothing for the user. */
static void spnego_fallback(negstream_protection p)
{
    side c, s;

    no_ccache();
    client_ntlm(&c, p);
    c.co.mechanism = "negotiate";
    server_default(&s, p);
    run_pair(&c, &s, true);
    expect_ok(&c, &s);
    check_ntlm_props(&c, &s, p);
    roundtrips(&c, &s);
    side_done(&c);
    side_done(&s);
}

START_TEST(spnego_ntlm_fallback_eas)
{
    TU_NEEDS_NTLM(true);
    spnego_fallback(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
}
END_TEST

START_TEST(spnego_ntlm_fallback_sign)
{
    TU_NEEDS_NTLM(true);
    spnego_fallback(NEGSTREAM_PROTECTION_SIGN);
}
END_TEST

/* ---- failures between two of our sides ---------------------------------- */

START_TEST(wrong_service_kerberos)
{
    side c, s;

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = "kerberos";
    c.co.target_name = "host/nosuchhost";
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, true);
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "not found in Kerberos");
    /* the client told the server, which did not hang */
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "remote side");
    side_done(&c);
    side_done(&s);
}
END_TEST

/*
 * With SPNEGO, MIT tries krb5 first and, when the KDC does not know the
 * service, goes on with the next mechanism: NTLM, whose default
 * credentials gss-ntlmssp finds in NTLM_USER_FILE.  NTLM does not check
 * the target name, so the exchange succeeds over NTLM (Windows'
 * Negotiate behaves the same).  "kerberos" above is the way to insist.
 */
START_TEST(wrong_service_negotiate)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.target_name = "host/nosuchhost";
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    ck_assert(c.g.is_ntlm && s.g.is_ntlm);
    ck_assert(!negstream__gss_is_mutual(&c.g));
    side_done(&c);
    side_done(&s);
}
END_TEST

/* ... unless the client requires mutual authentication. */
START_TEST(wrong_service_negotiate_mutual)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.target_name = "host/nosuchhost";
    c.co.require_mutual_auth = true;
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, true);
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "mutual");
    /* With SPNEGO the server completes (and sends done) before the client
     * can check: the server has succeeded; the client's error message
     * is the next thing on the wire, as with .NET. */
    ck_assert_msg(s.rc == 0, "%s", s.err.message);
    {
        uint8_t msg[13];

        ck_assert_uint_eq(recv(s.fd, msg, sizeof(msg), MSG_WAITALL),
                          sizeof(msg));
        /* 1790, little-endian then big-endian (frame.h) */
        ck_assert(memcmp(msg, "\x15\x01\x00\x00\x08"
                         "\xfe\x06\0\0\0\0\x06\xfe", 13) == 0);
    }
    side_done(&c);
    side_done(&s);
}
END_TEST

static void bad_creds(const char *mech, const char *user, const char *pw,
                      const char *needle)
{
    side c, s;

    no_ccache();
    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = mech;
    c.co.user = user;
    c.co.password = pw;
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, needle);
    ck_assert_int_eq(c.init_rc, -1);
    /* The client closed its end: the server sees EOF, cleanly. */
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "connection closed");
    side_done(&c);
    side_done(&s);
}

START_TEST(bad_password_kerberos)
{
    bad_creds("kerberos", tu_env("NEGTEST_USER"), "not-the-password",
              "wrong password");
}
END_TEST

START_TEST(bad_password_negotiate)
{
    bad_creds(NULL, tu_env("NEGTEST_USER"), "not-the-password",
              "wrong password");
}
END_TEST

START_TEST(unknown_user_kerberos)
{
    bad_creds("kerberos", "nosuchuser", "whatever", "not found");
}
END_TEST

START_TEST(unknown_user_negotiate)
{
    bad_creds("negotiate", "nosuchuser", "whatever", "not found");
}
END_TEST

/* NTLM finds a bad password only at the server, which says "logon
 * denied"; the client reports INVALID_CREDENTIAL too. */
START_TEST(bad_password_ntlm)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.password = "not-the-password";
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, true);
    expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "rejected");
    side_done(&c);
    side_done(&s);
}
END_TEST

/*
 * The same after a Kerberos authentication in the same process.  MIT's
 * mechglue numbers the minor codes of each mechanism per process, in the
 * order they first appear; after the Kerberos handshake gss-ntlmssp's
 * "wrong password" no longer came out as EINVAL, and the server reported
 * an internal error (0x80090304) instead of "logon denied".  Check forks
 * a fresh process per test, so the Kerberos run must be in this one.
 */
START_TEST(bad_password_ntlm_after_kerberos)
{
    side c, s;

    krb_sides(&c, &s, NULL, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    side_done(&c);
    side_done(&s);

    client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.password = "not-the-password";
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, true);
    expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    ck_assert_uint_eq(negstream__gss_error_code(&s.err), 0x8009030Cu);
    /* what the client read from the wire: logon denied */
    expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "0x8009030C");
    side_done(&c);
    side_done(&s);

    /* an unknown NTLM user, likewise */
    client_ntlm(&c, NEGSTREAM_PROTECTION_SIGN);
    c.co.user = "nosuchuser";
    server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    run_pair(&c, &s, false);
    expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "0x8009030C");
    side_done(&c);
    side_done(&s);

    /* and a wrong password for NTLM inside SPNEGO (no Kerberos for this
     * user: the AUTHENTICATE message is SPNEGO's responseToken) */
    no_ccache();
    client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = "negotiate";
    c.co.password = "not-the-password";
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, true);
    expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "0x8009030C");
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(unknown_user_ntlm)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_ntlm(&c, NEGSTREAM_PROTECTION_SIGN);
    c.co.user = "nosuchuser";
    server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    run_pair(&c, &s, false);
    expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "rejected");
    side_done(&c);
    side_done(&s);
}
END_TEST

/* No Kerberos ticket and default credentials. */
START_TEST(no_ticket_kerberos)
{
    side c, s;

    no_ccache();
    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = "kerberos";
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    /* found at the first step: the server got "logon denied" */
    expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, "rejected");
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(no_ticket_sign)
{
    side c, s;

    no_ccache();
    client_default(&c, NEGSTREAM_PROTECTION_SIGN);
    c.co.mechanism = "kerberos";
    server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    run_pair(&c, &s, false);
    /* Sign acquires the default credentials itself, in client_init */
    expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    ck_assert_int_eq(c.init_rc, -1);
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "connection closed");
    side_done(&c);
    side_done(&s);
}
END_TEST

/* Server requires EncryptAndSign, the client offers None (NTLM): the
 * server refuses with 1790 and the client is told so. */
START_TEST(level_too_low)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_ntlm(&c, NEGSTREAM_PROTECTION_NONE);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, true);
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION,
                "required protection level (required EncryptAndSign");
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "expectations were not met");
    ck_assert_uint_eq(negstream__gss_error_code(&s.err), 1790);
    side_done(&c);
    side_done(&s);
}
END_TEST

/* Kerberos Sign against a server that wants EncryptAndSign: CONF is not
 * granted (NO_CI_FLAGS), so the server refuses. */
START_TEST(sign_vs_eas_server)
{
    side c, s;

    client_default(&c, NEGSTREAM_PROTECTION_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "got Sign");
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "expectations were not met");
    side_done(&c);
    side_done(&s);
}
END_TEST

/* Impersonation levels on the server, with what MIT reports. */
START_TEST(impersonation_delegation_required)
{
    side c, s;

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    s.so.impersonation = NEGSTREAM_IMPERSONATION_DELEGATION;
    run_pair(&c, &s, true);
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "impersonation level");
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "expectations were not met");
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(impersonation_client_allows_impersonation)
{
    side c, s;

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.impersonation = NEGSTREAM_IMPERSONATION_IMPERSONATION;
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    s.so.impersonation = NEGSTREAM_IMPERSONATION_IMPERSONATION;
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    /* no IDENTIFY asked, none reported */
    ck_assert_int_eq(s.g.ret_flags & GSS_C_IDENTIFY_FLAG, 0);
    ck_assert_int_eq(negstream__gss_impersonation(&s.g),
                     NEGSTREAM_IMPERSONATION_IMPERSONATION);
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(impersonation_identification_vs_impersonation_server)
{
    side c, s;

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    s.so.impersonation = NEGSTREAM_IMPERSONATION_IMPERSONATION;
    run_pair(&c, &s, false);
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION,
                "impersonation level Identification");
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "expectations were not met");
    side_done(&c);
    side_done(&s);
}
END_TEST

/* Delegation asked by the client: DELEG needs a forwardable TGT, which
 * the test realm's kinit does not get; the default server still accepts. */
START_TEST(impersonation_client_delegation)
{
    side c, s;

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.impersonation = NEGSTREAM_IMPERSONATION_DELEGATION;
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    ck_assert(c.g.req_flags & GSS_C_DELEG_FLAG);
    ck_assert(!(c.g.req_flags & GSS_C_IDENTIFY_FLAG));
    ck_assert_int_ge(negstream__gss_impersonation(&s.g),
                     NEGSTREAM_IMPERSONATION_IMPERSONATION);
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(require_mutual_ntlm)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.require_mutual_auth = true;
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, false);
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "mutual authentication");
    ck_assert_uint_eq(negstream__gss_error_code(&c.err), 1790);
    /* The client completes first here (NTLM), so the server gets the
     * client's error before its own done... or its done fails to matter:
     * it must not hang, and reports the remote refusal. */
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "expectations were not met");
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(require_mutual_kerberos)
{
    side c, s;

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.require_mutual_auth = true;
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    run_pair(&c, &s, true);
    expect_ok(&c, &s);
    ck_assert(negstream__gss_is_mutual(&c.g));
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(server_mechanism_mismatch)
{
    side c, s;

    TU_NEEDS_NTLM(true);

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    s.so.mechanism = "ntlm";
    run_pair(&c, &s, false);
    expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "requires NTLM");
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "expectations were not met");
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(server_named_service)
{
    side c, s;
    char principal[256];

    snprintf(principal, sizeof(principal), "%s@%s", tu_env("NEGTEST_SPN"),
             tu_env("NEGTEST_REALM"));
    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.target_name = principal;            /* a krb5 principal name */
    c.co.mechanism = "kerberos";
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    s.so.service_name = tu_env("NEGTEST_SPN");
    s.so.mechanism = "kerberos";
    run_pair(&c, &s, false);
    expect_ok(&c, &s);
    ck_assert_str_eq(c.g.peer_name, principal);
    ck_assert_str_eq(s.g.peer_name, tu_env("NEGTEST_USER"));
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(server_missing_keytab_entry)
{
    negstream__gss g;
    negstream_server_options o;
    negstream_error e;

    memset(&g, 0, sizeof(g));
    negstream_server_options_init(&o);
    o.service_name = "host/nosuchhost";
    ck_assert_int_eq(negstream__gss_server_init(&g, &o, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_CREDENTIAL);
    ck_assert_msg(strstr(e.message, "keytab") != NULL, "%s", e.message);
    negstream__gss_free(&g);
}
END_TEST

/* ---- argument checks ---------------------------------------------------- */

static void client_init_fails(negstream_client_options *o,
                              negstream_status code, const char *needle)
{
    negstream__gss g;
    negstream_error e;

    memset(&g, 0, sizeof(g));
    ck_assert_int_eq(negstream__gss_client_init(&g, o, &e), -1);
    ck_assert_msg(e.code == code, "expected %s, got %s: %s",
                  negstream_status_name(code), negstream_status_name(e.code),
                  e.message);
    ck_assert_msg(strstr(e.message, needle) != NULL, "%s", e.message);
    ck_assert(g.cred == GSS_C_NO_CREDENTIAL && g.target == GSS_C_NO_NAME &&
              g.target_str == NULL);
    negstream__gss_free(&g);
}

START_TEST(args_client)
{
    negstream_client_options o;

    negstream_client_options_init(&o);
    o.target_name = NULL;
    client_init_fails(&o, NEGSTREAM_E_ARGUMENT_NULL, "target_name is NULL");
    o.target_name = "";
    client_init_fails(&o, NEGSTREAM_E_AUTHENTICATION, "empty");
    o.target_name = tu_env("NEGTEST_SPN");
    o.impersonation = NEGSTREAM_IMPERSONATION_NONE;
    client_init_fails(&o, NEGSTREAM_E_ARGUMENT_RANGE, "impersonation");
    o.impersonation = NEGSTREAM_IMPERSONATION_ANONYMOUS;
    client_init_fails(&o, NEGSTREAM_E_ARGUMENT_RANGE, "impersonation");
    o.impersonation = (negstream_impersonation)9;
    client_init_fails(&o, NEGSTREAM_E_ARGUMENT_RANGE, "impersonation");
    o.impersonation = NEGSTREAM_IMPERSONATION_IDENTIFICATION;
    o.protection = (negstream_protection)3;
    client_init_fails(&o, NEGSTREAM_E_ARGUMENT_RANGE, "protection");
    o.protection = NEGSTREAM_PROTECTION_SIGN;
    o.mechanism = "digest";
    client_init_fails(&o, NEGSTREAM_E_ARGUMENT, "unknown mechanism");
    o.mechanism = "";
    client_init_fails(&o, NEGSTREAM_E_ARGUMENT, "unknown mechanism");
    /* .NET's order: the target is checked before the impersonation */
    o.mechanism = NULL;
    o.target_name = NULL;
    o.impersonation = NEGSTREAM_IMPERSONATION_NONE;
    client_init_fails(&o, NEGSTREAM_E_ARGUMENT_NULL, "target_name");
    client_init_fails(NULL, NEGSTREAM_E_ARGUMENT_NULL, "NULL");
}
END_TEST

START_TEST(args_server)
{
    negstream__gss g;
    negstream_server_options o;
    negstream_error e;

    memset(&g, 0, sizeof(g));
    negstream_server_options_init(&o);
    o.mechanism = "kerberos5";
    ck_assert_int_eq(negstream__gss_server_init(&g, &o, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    o.mechanism = NULL;
    o.impersonation = (negstream_impersonation)-1;
    ck_assert_int_eq(negstream__gss_server_init(&g, &o, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    o.impersonation = NEGSTREAM_IMPERSONATION_NONE;    /* no requirement */
    o.protection = (negstream_protection)7;
    ck_assert_int_eq(negstream__gss_server_init(&g, &o, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(negstream__gss_server_init(&g, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    o.protection = NEGSTREAM_PROTECTION_NONE;
    ck_assert_int_eq(negstream__gss_server_init(&g, &o, &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    negstream__gss_free(&g);
    negstream__gss_free(&g);                 /* idempotent */
}
END_TEST

/*
 * What asks for NTLM: mechanism "ntlm" on either side, and protection
 * None on a client (.NET's rule).  With MIT krb5 and gss-ntlmssp that is
 * fine; a Heimdal build refuses it at once with a message naming the
 * cause (Heimdal's own NTLM mechanism took no password, found no default
 * credentials and had no acceptor credentials here: configure.ac).
 */
START_TEST(ntlm_needs_mit)
{
    static const char *why[] = {
        "the client asks for NTLM", "protection None authenticates with "
        "NTLM", "the server requires NTLM"
    };
    size_t i;

    for (i = 0; i < 3; i++) {
        negstream__gss g;
        negstream_client_options co;
        negstream_server_options so;
        negstream_error e;
        int rc;

        memset(&g, 0, sizeof(g));
        negstream_client_options_init(&co);
        co.target_name = tu_env("NEGTEST_SPN");
        co.mechanism = i == 0 ? "ntlm" : "kerberos";
        co.protection = i == 1 ? NEGSTREAM_PROTECTION_NONE :
                        NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
        co.user = tu_env("NEGTEST_NTLM_USER");
        co.domain = tu_env("NEGTEST_NTLM_DOMAIN");
        co.password = tu_env("NEGTEST_NTLM_PASSWORD");
        negstream_server_options_init(&so);
        so.mechanism = "ntlm";
        rc = i < 2 ? negstream__gss_client_init(&g, &co, &e) :
             negstream__gss_server_init(&g, &so, &e);
#if HAVE_NTLM_MECHGLUE_PLUGIN
        ck_assert_msg(rc == 0, "%zu: %s", i, e.message);
        ck_assert_int_eq(g.mech, NEGSTREAM__MECH_NTLM);
#else
        ck_assert_int_eq(rc, -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_AUTHENTICATION);
        ck_assert_msg(strncmp(e.message, why[i], strlen(why[i])) == 0 &&
                      strstr(e.message, "NTLM needs MIT krb5 with "
                             "gss-ntlmssp") != NULL &&
                      strstr(e.message, "built with Heimdal") != NULL,
                      "%zu: %s", i, e.message);
#endif
        (void)why;
        negstream__gss_free(&g);
    }
}
END_TEST

START_TEST(client_flags_per_level)
{
    static const struct {
        negstream_protection p;
        negstream_impersonation i;
        OM_uint32 want, never;
    } t[] = {
        { NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN,
          NEGSTREAM_IMPERSONATION_IDENTIFICATION,
          GSS_C_CONF_FLAG | GSS_C_INTEG_FLAG | GSS_C_MUTUAL_FLAG |
          GSS_C_IDENTIFY_FLAG, GSS_C_DELEG_FLAG },
        { NEGSTREAM_PROTECTION_SIGN, NEGSTREAM_IMPERSONATION_IMPERSONATION,
          GSS_C_INTEG_FLAG | GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG |
          GSS_C_MUTUAL_FLAG,
          GSS_C_CONF_FLAG | GSS_C_IDENTIFY_FLAG | GSS_C_DELEG_FLAG },
        { NEGSTREAM_PROTECTION_NONE, NEGSTREAM_IMPERSONATION_DELEGATION,
          GSS_C_DELEG_FLAG,
          GSS_C_CONF_FLAG | GSS_C_INTEG_FLAG | GSS_C_MUTUAL_FLAG |
          GSS_C_IDENTIFY_FLAG },
    };
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        negstream__gss g;
        negstream_client_options o;
        negstream_error e;

        if (tu_skip_without_ntlm(__func__, (int)i,
                                 t[i].p == NEGSTREAM_PROTECTION_NONE))
            continue;
        memset(&g, 0, sizeof(g));
        negstream_client_options_init(&o);
        o.target_name = tu_env("NEGTEST_SPN");
        o.protection = t[i].p;
        o.impersonation = t[i].i;
        if (t[i].p == NEGSTREAM_PROTECTION_NONE) {
            o.user = tu_env("NEGTEST_NTLM_USER");
            o.domain = tu_env("NEGTEST_NTLM_DOMAIN");
            o.password = tu_env("NEGTEST_NTLM_PASSWORD");
        }
        ck_assert_msg(negstream__gss_client_init(&g, &o, &e) == 0, "%s",
                      e.message);
        ck_assert_uint_eq(g.req_flags & t[i].want, t[i].want);
        ck_assert_uint_eq(g.req_flags & t[i].never, 0);
        ck_assert_int_eq(g.mech, t[i].p == NEGSTREAM_PROTECTION_NONE ?
                         NEGSTREAM__MECH_NTLM : NEGSTREAM__MECH_NEGOTIATE);
        negstream__gss_free(&g);
    }
}
END_TEST

START_TEST(error_codes)
{
    negstream_error e;

    memset(&e, 0, sizeof(e));
    e.code = NEGSTREAM_E_INVALID_CREDENTIAL;
    ck_assert_uint_eq(negstream__gss_error_code(&e), 0x8009030Cu);
    e.code = NEGSTREAM_E_AUTHENTICATION;
    snprintf(e.message, sizeof(e.message), "accepting: whatever");
    ck_assert_uint_eq(negstream__gss_error_code(&e), 0x80090304u);
    e.code = NEGSTREAM_E_IO;
    ck_assert_uint_eq(negstream__gss_error_code(&e), 0x80090304u);
    ck_assert_uint_eq(negstream__gss_error_code(NULL), 0x80090304u);
}
END_TEST

/* ---- the raw peer ------------------------------------------------------- */

static void raw_write(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;

    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

        ck_assert_msg(w > 0, "raw send: %s", strerror(errno));
        b += w;
        n -= (size_t)w;
    }
}

/* Reads n bytes; returns how many came before EOF. */
static size_t raw_read(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    size_t got = 0;

    while (got < n) {
        ssize_t r = recv(fd, b + got, n - got, 0);

        if (r == 0)
            break;
        ck_assert_msg(r > 0, "raw recv: %s", strerror(errno));
        got += (size_t)r;
    }
    return got;
}

static void raw_send_msg(int fd, uint8_t id, const void *p, size_t n)
{
    uint8_t hdr[5] = { id, 1, 0, (uint8_t)(n >> 8), (uint8_t)n };

    raw_write(fd, hdr, 5);
    if (n > 0)
        raw_write(fd, p, n);
}

/* Reads one message; returns its payload size (payload in buf), or -1 at
 * EOF before a header. */
static int raw_recv_msg(int fd, uint8_t hdr[5], uint8_t *buf)
{
    size_t n;

    if (raw_read(fd, hdr, 5) < 5)
        return -1;
    n = (size_t)hdr[3] << 8 | hdr[4];
    ck_assert_uint_eq(raw_read(fd, buf, n), n);
    return (int)n;
}

static bool raw_at_eof(int fd)
{
    uint8_t b;

    return recv(fd, &b, 1, 0) == 0;
}

/* Our side on its thread against the raw end fds[1]. */
static void start_against_raw(side *x, int fds[2], bool tcp)
{
    make_pair(fds, tcp);
    x->fd = fds[0];
    side_start(x);
}

/* The exact first bytes of a client: 16 01 00 then the BE length. */
START_TEST(client_first_message_bytes)
{
    static const char *mechs[] = { NULL, "kerberos", "ntlm" };
    size_t i;

    for (i = 0; i < 3; i++) {
        side c;
        int fds[2], n;
        uint8_t hdr[5], *buf = malloc(65536);

        ck_assert(buf != NULL);
        if (tu_skip_without_ntlm(__func__, (int)i, i == 2)) {
            free(buf);
            continue;
        }
        if (mechs[i] != NULL && strcmp(mechs[i], "ntlm") == 0)
            client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
        else
            client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
        c.co.mechanism = mechs[i];
        start_against_raw(&c, fds, i == 1);
        n = raw_recv_msg(fds[1], hdr, buf);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(hdr[0], 0x16);
        ck_assert_int_eq(hdr[1], 0x01);
        ck_assert_int_eq(hdr[2], 0x00);
        ck_assert_int_eq((hdr[3] << 8) | hdr[4], n);
        if (i == 0)         /* GSS InitialContextToken with the SPNEGO OID */
            ck_assert(buf[0] == 0x60 &&
                      memmem(buf, 20, "\x06\x06\x2b\x06\x01\x05\x05\x02",
                             8) != NULL);
        else if (i == 1)    /* ... with the krb5 OID */
            ck_assert(buf[0] == 0x60 &&
                      memmem(buf, 20, "\x06\x09\x2a\x86\x48\x86\xf7\x12",
                             8) != NULL);
        else                /* raw NTLMSSP NEGOTIATE */
            ck_assert(memcmp(buf, "NTLMSSP\0\x01\0\0\0", 12) == 0);
        /* now go away: the client reports EOF during authentication */
        shutdown(fds[1], SHUT_RDWR);
        side_join(&c);
        expect_code(&c, NEGSTREAM_E_AUTHENTICATION,
                    "connection closed during authentication");
        side_done(&c);
        close(fds[1]);
        free(buf);
    }
}
END_TEST

/* What a server does with garbage from a client. */
typedef enum {
    G_EOF, G_PARTIAL_HEADER, G_UNKNOWN_ID, G_TRUNCATED, G_BAD_TOKEN,
    G_EMPTY_TOKEN, G_ERROR_SHORT, G_ERROR_LOGON, G_ERROR_1790_LE,
    G_ERROR_OTHER
} garbage;

static void server_gets(garbage what, negstream_status code,
                        const char *needle, bool expect_error_msg)
{
    side s;
    int fds[2];
    uint8_t junk[100], hdr[5], buf[64];

    memset(junk, 0x41, sizeof(junk));
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    start_against_raw(&s, fds, what % 2 == 0);
    switch (what) {
    case G_EOF:
        break;
    case G_PARTIAL_HEADER:
        raw_write(fds[1], "\x16\x01", 2);
        break;
    case G_UNKNOWN_ID:
        raw_send_msg(fds[1], 0x17, junk, 10);
        break;
    case G_TRUNCATED:
        raw_write(fds[1], "\x16\x01\x00\x00\x64", 5);
        raw_write(fds[1], junk, 10);
        break;
    case G_BAD_TOKEN:
        raw_send_msg(fds[1], 0x16, junk, sizeof(junk));
        break;
    case G_EMPTY_TOKEN:
        raw_send_msg(fds[1], 0x16, NULL, 0);
        break;
    case G_ERROR_SHORT:
        raw_send_msg(fds[1], 0x15, "\x00\x01", 2);
        break;
    case G_ERROR_LOGON:
        raw_send_msg(fds[1], 0x15, "\0\0\0\0\x80\x09\x03\x0c", 8);
        break;
    case G_ERROR_1790_LE:
        raw_send_msg(fds[1], 0x15, "\xfe\x06\0\0\0\0\0\0", 8);
        break;
    case G_ERROR_OTHER:
        raw_send_msg(fds[1], 0x15, "\0\0\0\0\x80\x00\x40\x05", 8);
        break;
    }
    if (what == G_EMPTY_TOKEN) {
        /* MIT's SPNEGO acceptor answers an empty token with its own
         * NegTokenInit2 (the mechanisms it offers), in progress */
        uint8_t *tok = malloc(65536);

        ck_assert(tok != NULL);
        ck_assert_int_gt(raw_recv_msg(fds[1], hdr, tok), 0);
        ck_assert_int_eq(hdr[0], 0x16);
        ck_assert(tok[0] == 0x60 &&
                  memmem(tok, 20, "\x06\x06\x2b\x06\x01\x05\x05\x02",
                         8) != NULL);
        free(tok);
        shutdown(fds[1], SHUT_WR);
    } else if (!expect_error_msg)
        shutdown(fds[1], SHUT_WR);
    else {
        /* the server tells us before failing: 15 01 00 00 08 + code */
        ck_assert_int_eq(raw_recv_msg(fds[1], hdr, buf), 8);
        ck_assert_int_eq(hdr[0], 0x15);
        /* 0x80090304, little-endian then big-endian */
        ck_assert(memcmp(buf, "\x04\x03\x09\x80\x80\x09\x03\x04", 8) == 0);
    }
    side_join(&s);
    expect_code(&s, code, needle);
    /* and sends nothing (more) */
    shutdown(s.fd, SHUT_WR);
    ck_assert(raw_at_eof(fds[1]));
    side_done(&s);
    close(fds[1]);
}

START_TEST(server_garbage)
{
    server_gets(G_EOF, NEGSTREAM_E_AUTHENTICATION,
                "connection closed during authentication", false);
    server_gets(G_PARTIAL_HEADER, NEGSTREAM_E_IO, "header (2 of 5", false);
    server_gets(G_UNKNOWN_ID, NEGSTREAM_E_AUTHENTICATION,
                "unknown handshake message id 0x17", false);
    server_gets(G_TRUNCATED, NEGSTREAM_E_IO, "(10 of 100", false);
    server_gets(G_BAD_TOKEN, NEGSTREAM_E_AUTHENTICATION, "accepting", true);
    server_gets(G_EMPTY_TOKEN, NEGSTREAM_E_AUTHENTICATION,
                "connection closed during authentication", false);
    server_gets(G_ERROR_SHORT, NEGSTREAM_E_AUTHENTICATION, "2 bytes", false);
    server_gets(G_ERROR_LOGON, NEGSTREAM_E_INVALID_CREDENTIAL,
                "rejected the credentials", false);
    server_gets(G_ERROR_1790_LE, NEGSTREAM_E_AUTHENTICATION,
                "expectations were not met", false);
    server_gets(G_ERROR_OTHER, NEGSTREAM_E_AUTHENTICATION, "0x80004005",
                false);
}
END_TEST

/* What a client does with garbage from a server, after its first
 * message. */
static void client_gets(garbage what, negstream_status code,
                        const char *needle, bool expect_error_msg)
{
    side c;
    int fds[2], n;
    uint8_t junk[100], hdr[5], *buf = malloc(65536);

    ck_assert(buf != NULL);
    memset(junk, 0x41, sizeof(junk));
    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = "kerberos";
    start_against_raw(&c, fds, what % 2 == 1);
    n = raw_recv_msg(fds[1], hdr, buf);
    ck_assert_int_gt(n, 0);
    switch (what) {
    case G_EOF:
        break;
    case G_PARTIAL_HEADER:
        raw_write(fds[1], "\x14", 1);
        break;
    case G_UNKNOWN_ID:
        raw_send_msg(fds[1], 0x00, junk, 3);
        break;
    case G_TRUNCATED:
        raw_write(fds[1], "\x14\x01\x00\x01\x00", 5);
        raw_write(fds[1], junk, 99);
        break;
    case G_BAD_TOKEN:
        raw_send_msg(fds[1], 0x14, junk, sizeof(junk));
        break;
    case G_EMPTY_TOKEN:
        /* an empty done before the context is complete: fed to GSS as a
         * token, which cannot complete krb5's mutual authentication */
        raw_send_msg(fds[1], 0x14, NULL, 0);
        break;
    case G_ERROR_SHORT:
        raw_send_msg(fds[1], 0x15, "\x00", 1);
        break;
    case G_ERROR_LOGON:
        raw_send_msg(fds[1], 0x15, "\0\0\0\0\x80\x09\x03\x0c", 8);
        break;
    case G_ERROR_1790_LE:
        raw_send_msg(fds[1], 0x15, "\xfe\x06\0\0\0\0\0\0", 8);
        break;
    case G_ERROR_OTHER:
        raw_send_msg(fds[1], 0x15, "\0\0\0\0\0\0\0\x14", 8);
        break;
    }
    if (!expect_error_msg)
        shutdown(fds[1], SHUT_WR);
    else {
        ck_assert_int_eq(raw_recv_msg(fds[1], hdr, buf), 8);
        ck_assert_int_eq(hdr[0], 0x15);
        /* 0x80090304, little-endian then big-endian */
        ck_assert(memcmp(buf, "\x04\x03\x09\x80\x80\x09\x03\x04", 8) == 0);
    }
    side_join(&c);
    expect_code(&c, code, needle);
    shutdown(c.fd, SHUT_WR);
    ck_assert(raw_at_eof(fds[1]));
    side_done(&c);
    close(fds[1]);
    free(buf);
}

START_TEST(client_garbage)
{
    client_gets(G_EOF, NEGSTREAM_E_AUTHENTICATION,
                "connection closed during authentication", false);
    client_gets(G_PARTIAL_HEADER, NEGSTREAM_E_IO, "header (1 of 5", false);
    client_gets(G_UNKNOWN_ID, NEGSTREAM_E_AUTHENTICATION,
                "unknown handshake message id 0x00", false);
    client_gets(G_TRUNCATED, NEGSTREAM_E_IO, "(99 of 256", false);
    client_gets(G_BAD_TOKEN, NEGSTREAM_E_AUTHENTICATION,
                "processing the server's token", true);
    client_gets(G_EMPTY_TOKEN, NEGSTREAM_E_AUTHENTICATION, NULL, true);
    client_gets(G_ERROR_SHORT, NEGSTREAM_E_AUTHENTICATION, "1 bytes", false);
    client_gets(G_ERROR_LOGON, NEGSTREAM_E_INVALID_CREDENTIAL,
                "rejected the credentials", false);
    client_gets(G_ERROR_1790_LE, NEGSTREAM_E_AUTHENTICATION,
                "expectations were not met", false);
    client_gets(G_ERROR_OTHER, NEGSTREAM_E_AUTHENTICATION, "0x00000014",
                false);
}
END_TEST

/*
 * A relay between a real client and a real server that changes one
 * message: the server's final token (sent in done) is passed on in an
 * in-progress message, followed by an empty done.  The client completes
 * ON that token, so it is not an in-progress after completion; it then
 * waits for the done.  The .NET Core 2.0 client accepts this too.
 */
START_TEST(client_final_token_in_progress_then_done)
{
    side c, s;
    int cf[2], sf[2], n;
    uint8_t hdr[5], *buf = malloc(65536);

    ck_assert(buf != NULL);
    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    start_against_raw(&c, cf, false);
    start_against_raw(&s, sf, false);
    /* client -> server: the first token */
    n = raw_recv_msg(cf[1], hdr, buf);
    ck_assert_int_gt(n, 0);
    raw_send_msg(sf[1], hdr[0], buf, (size_t)n);
    /* server -> client: done with the final token (Kerberos: one trip) */
    n = raw_recv_msg(sf[1], hdr, buf);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(hdr[0], 0x14);
    side_join(&s);
    ck_assert_msg(s.rc == 0, "%s", s.err.message);
    raw_send_msg(cf[1], 0x16, buf, (size_t)n);
    raw_send_msg(cf[1], 0x14, NULL, 0);
    side_join(&c);
    ck_assert_msg(c.rc == 0, "%s", c.err.message);
    roundtrips(&c, &s);
    side_done(&c);
    side_done(&s);
    close(cf[1]);
    close(sf[1]);
    free(buf);
}
END_TEST

/* ... and an in-progress AFTER the client completed is a protocol error;
 * nothing is sent back. */
START_TEST(client_in_progress_after_complete)
{
    side c, s;
    int cf[2], sf[2], n;
    uint8_t hdr[5], *buf = malloc(65536);

    ck_assert(buf != NULL);
    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    start_against_raw(&c, cf, true);
    start_against_raw(&s, sf, false);
    n = raw_recv_msg(cf[1], hdr, buf);
    raw_send_msg(sf[1], hdr[0], buf, (size_t)n);
    n = raw_recv_msg(sf[1], hdr, buf);
    side_join(&s);
    raw_send_msg(cf[1], 0x16, buf, (size_t)n);
    raw_send_msg(cf[1], 0x16, "x", 1);
    side_join(&c);
    expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "in-progress message after");
    shutdown(c.fd, SHUT_WR);
    ck_assert(raw_at_eof(cf[1]));
    side_done(&c);
    side_done(&s);
    close(cf[1]);
    close(sf[1]);
    free(buf);
}
END_TEST

/* The version bytes are ignored on receive (MS-NNS, .NET). */
START_TEST(version_bytes_ignored)
{
    side c, s;
    int cf[2], sf[2], n;
    uint8_t hdr[5], *buf = malloc(65536);

    ck_assert(buf != NULL);
    client_default(&c, NEGSTREAM_PROTECTION_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    start_against_raw(&c, cf, false);
    start_against_raw(&s, sf, true);
    n = raw_recv_msg(cf[1], hdr, buf);
    hdr[1] = 7;
    hdr[2] = 9;
    raw_write(sf[1], hdr, 5);
    raw_write(sf[1], buf, (size_t)n);
    n = raw_recv_msg(sf[1], hdr, buf);
    hdr[1] = 2;
    hdr[2] = 5;
    raw_write(cf[1], hdr, 5);
    raw_write(cf[1], buf, (size_t)n);
    side_join(&c);
    side_join(&s);
    expect_ok(&c, &s);
    side_done(&c);
    side_done(&s);
    close(cf[1]);
    close(sf[1]);
    free(buf);
}
END_TEST

/* The full NTLM exchange, relayed, as nns.md §3.4 traces it:
 * C in-progress(NEGOTIATE), S in-progress(CHALLENGE),
 * C done(AUTHENTICATE), S done(empty). */
START_TEST(ntlm_message_sequence)
{
    side c, s;
    int cf[2], sf[2], n;
    uint8_t hdr[5], *buf = malloc(65536);
    static const uint8_t ids[4] = { 0x16, 0x16, 0x14, 0x14 };
    int i;

    if (tu_skip_without_ntlm(__func__, _i, true)) {
        free(buf);
        return;
    }
    ck_assert(buf != NULL);
    client_ntlm(&c, NEGSTREAM_PROTECTION_NONE);
    server_default(&s, NEGSTREAM_PROTECTION_NONE);
    start_against_raw(&c, cf, false);
    start_against_raw(&s, sf, false);
    for (i = 0; i < 4; i++) {
        int from = i % 2 == 0 ? cf[1] : sf[1];
        int to = i % 2 == 0 ? sf[1] : cf[1];

        n = raw_recv_msg(from, hdr, buf);
        ck_assert_int_eq(hdr[0], ids[i]);
        if (i == 3)
            ck_assert_int_eq(n, 0);
        else
            ck_assert_int_gt(n, 0);
        raw_send_msg(to, hdr[0], buf, (size_t)n);
    }
    side_join(&c);
    side_join(&s);
    expect_ok(&c, &s);
    side_done(&c);
    side_done(&s);
    close(cf[1]);
    close(sf[1]);
    free(buf);
}
END_TEST

/* A silent peer and a timeout: the handshake gives up. */
START_TEST(handshake_timeout)
{
    side s;
    int fds[2];

    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    s.timeout_ms = 200;
    start_against_raw(&s, fds, false);
    side_join(&s);
    ck_assert_int_eq(s.rc, -1);
    ck_assert_int_eq(s.err.code, NEGSTREAM_E_TIMEOUT);
    side_done(&s);
    close(fds[1]);
}
END_TEST

/* err == NULL is allowed everywhere. */
START_TEST(null_err)
{
    side c, s;
    int fds[2];

    client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    make_pair(fds, false);
    ck_assert_int_eq(negstream__transport_fd(&c.t, fds[0], NULL), 0);
    ck_assert_int_eq(negstream__transport_fd(&s.t, fds[1], NULL), 0);
    c.fd = fds[0];
    s.fd = fds[1];
    ck_assert_int_eq(negstream__gss_client_init(&c.g, &c.co, NULL), 0);
    ck_assert_int_eq(negstream__gss_server_init(&s.g, &s.so, NULL), 0);
    /* nobody on the other end: the send or the read fails */
    s.t.ops->close(&s.t);
    s.t.ops = NULL;
    close(fds[1]);
    s.fd = -1;
    ck_assert_int_eq(negstream__handshake_client(&c.g, &c.t, -1, NULL), -1);
    side_done(&c);
    side_done(&s);
}
END_TEST

static Suite *gss_suite(void)
{
    Suite *su = suite_create("gss");
    TCase *tc;

    tc = tcase_create("kerberos");
    tcase_add_test(tc, krb_spnego_eas_socketpair);
    tcase_add_test(tc, krb_spnego_eas_tcp);
    tcase_add_test(tc, krb_raw_eas_socketpair);
    tcase_add_test(tc, krb_raw_eas_tcp);
    tcase_add_test(tc, krb_spnego_sign_socketpair);
    tcase_add_test(tc, krb_spnego_sign_tcp);
    tcase_add_test(tc, krb_raw_sign_socketpair);
    tcase_add_test(tc, krb_raw_sign_tcp);
    tcase_add_test(tc, krb_tamper_first_frame);
    tcase_add_test(tc, krb_reorder_both);
    tcase_add_test(tc, wrap_no_room);
    tcase_add_test(tc, krb_password_kerberos);
    tcase_add_test(tc, krb_password_negotiate);
    tcase_add_test(tc, krb_password_sign);
    tcase_add_test(tc, krb_password_domain_forms);
    tcase_add_test(tc, krb_password_separate_domain);
    suite_add_tcase(su, tc);

    tc = tcase_create("ntlm");
    tcase_add_test(tc, ntlm_none_socketpair);
    tcase_add_test(tc, ntlm_sign_socketpair);
    tcase_add_test(tc, ntlm_eas_socketpair);
    tcase_add_test(tc, ntlm_none_tcp);
    tcase_add_test(tc, ntlm_sign_tcp);
    tcase_add_test(tc, ntlm_eas_tcp);
    tcase_add_test(tc, ntlm_sign_layout);
    tcase_add_test(tc, ntlm_forced_for_none);
    tcase_add_test(tc, ntlm_user_file);
    tcase_add_test(tc, spnego_ntlm_fallback_eas);
    tcase_add_test(tc, spnego_ntlm_fallback_sign);
    suite_add_tcase(su, tc);

    tc = tcase_create("failures");
    tcase_add_test(tc, wrong_service_kerberos);
    tcase_add_test(tc, wrong_service_negotiate);
    tcase_add_test(tc, wrong_service_negotiate_mutual);
    tcase_add_test(tc, bad_password_kerberos);
    tcase_add_test(tc, bad_password_negotiate);
    tcase_add_test(tc, unknown_user_kerberos);
    tcase_add_test(tc, unknown_user_negotiate);
    tcase_add_test(tc, bad_password_ntlm);
    tcase_add_test(tc, unknown_user_ntlm);
    tcase_add_test(tc, bad_password_ntlm_after_kerberos);
    tcase_add_test(tc, no_ticket_kerberos);
    tcase_add_test(tc, no_ticket_sign);
    tcase_add_test(tc, level_too_low);
    tcase_add_test(tc, sign_vs_eas_server);
    tcase_add_test(tc, impersonation_delegation_required);
    tcase_add_test(tc, impersonation_client_allows_impersonation);
    tcase_add_test(tc, impersonation_identification_vs_impersonation_server);
    tcase_add_test(tc, impersonation_client_delegation);
    tcase_add_test(tc, require_mutual_ntlm);
    tcase_add_test(tc, require_mutual_kerberos);
    tcase_add_test(tc, server_mechanism_mismatch);
    tcase_add_test(tc, server_named_service);
    tcase_add_test(tc, server_missing_keytab_entry);
    suite_add_tcase(su, tc);

    tc = tcase_create("arguments");
    tcase_add_test(tc, args_client);
    tcase_add_test(tc, args_server);
    tcase_add_test(tc, client_flags_per_level);
    tcase_add_test(tc, ntlm_needs_mit);
    tcase_add_test(tc, error_codes);
    suite_add_tcase(su, tc);

    tc = tcase_create("wire");
    tcase_add_test(tc, client_first_message_bytes);
    tcase_add_test(tc, server_garbage);
    tcase_add_test(tc, client_garbage);
    tcase_add_test(tc, client_final_token_in_progress_then_done);
    tcase_add_test(tc, client_in_progress_after_complete);
    tcase_add_test(tc, version_bytes_ignored);
    tcase_add_test(tc, ntlm_message_sequence);
    tcase_add_test(tc, handshake_timeout);
    tcase_add_test(tc, null_err);
    suite_add_tcase(su, tc);
    return su;
}

int main(void)
{
    SRunner *sr = srunner_create(gss_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
