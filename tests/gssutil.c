/*
 * gssutil.c - helpers shared by the check_gss_* suites (gssutil.h).
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "gss.h"
#include "handshake.h"
#include "gssutil.h"
#include "testutil.h"

#define CAP (NEGSTREAM__MAX_CHUNK + NEGSTREAM__WRAP_OVERHEAD_MAX)

/* ---- one side of a handshake, run on its own thread --------------------- */

static void side_zero(gu_side *s, bool server)
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

void gu_client_default(gu_side *c, negstream_protection p)
{
    side_zero(c, false);
    c->co.target_name = tu_env("NEGTEST_SPN");
    c->co.protection = p;
}

void gu_client_ntlm(gu_side *c, negstream_protection p)
{
    gu_client_default(c, p);
    c->co.mechanism = "ntlm";
    c->co.user = tu_env("NEGTEST_NTLM_USER");
    c->co.domain = tu_env("NEGTEST_NTLM_DOMAIN");
    c->co.password = tu_env("NEGTEST_NTLM_PASSWORD");
}

void gu_server_default(gu_side *s, negstream_protection p)
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
    gu_side *s = p;

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

void gu_side_start(gu_side *s)
{
    ck_assert_int_eq(pthread_create(&s->thread, NULL, side_run, s), 0);
}

void gu_side_join(gu_side *s)
{
    ck_assert_int_eq(pthread_join(s->thread, NULL), 0);
}

void gu_side_done(gu_side *s)
{
    negstream__gss_free(&s->g);
    if (s->t.ops != NULL)
        s->t.ops->close(&s->t);
    s->t.ops = NULL;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

void gu_make_pair(int fds[2], bool tcp)
{
    if (tcp)
        tu_tcp_pair(fds);
    else
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                                    fds), 0);
}

/* Runs client c against server s; both threads joined on return. */
void gu_run_pair(gu_side *c, gu_side *s, bool tcp)
{
    int fds[2];

    gu_make_pair(fds, tcp);
    c->fd = fds[0];
    s->fd = fds[1];
    gu_side_start(s);
    gu_side_start(c);
    gu_side_join(c);
    gu_side_join(s);
}

void gu_expect_ok(const gu_side *c, const gu_side *s)
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

void gu_expect_code(const gu_side *x, negstream_status code,
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

void gu_fill(uint8_t *p, size_t n, unsigned seed)
{
    size_t i;

    for (i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
}

/* Wraps n bytes on a, unwraps them on b, compares.  Returns the token
 * length. */
size_t gu_roundtrip(negstream__gss *a, negstream__gss *b, size_t n,
                    unsigned seed)
{
    uint8_t *in = malloc(n > 0 ? n : 1), *tok = malloc(CAP);
    negstream_error e;
    size_t off = 12345;
    ssize_t t, p;

    ck_assert(in != NULL && tok != NULL);
    gu_fill(in, n, seed);
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

void gu_roundtrips(gu_side *c, gu_side *s)
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
        gu_roundtrip(&c->g, &s->g, sizes[i], (unsigned)i);
        gu_roundtrip(&s->g, &c->g, sizes[i], (unsigned)i + 100);
    }
}

/* A token of n bytes from a, owned by the caller. */
uint8_t *gu_wrap_one(negstream__gss *a, size_t n, unsigned seed,
                     size_t *len)
{
    uint8_t in[256], *tok = malloc(CAP);
    negstream_error e;
    ssize_t t;

    ck_assert(tok != NULL && n <= sizeof(in));
    gu_fill(in, n, seed);
    t = negstream__gss_wrap(a, in, n, tok, CAP, &e);
    ck_assert_msg(t > 0, "wrap: %s", e.message);
    *len = (size_t)t;
    return tok;
}

void gu_unwrap_ok(negstream__gss *b, const uint8_t *tok, size_t len,
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

void gu_unwrap_fails(negstream__gss *b, const uint8_t *tok, size_t len)
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
 * sees exactly one attack, and reordering gets a fresh pair (gu_reorder()).
 */
void gu_attacks(gu_side *c, gu_side *s)
{
    uint8_t *t1;
    size_t l1;

    /* one flipped bit, in the middle of the token */
    t1 = gu_wrap_one(&c->g, 100, 1, &l1);
    t1[l1 / 2] ^= 0x10;
    gu_unwrap_fails(&s->g, t1, l1);
    free(t1);

    t1 = gu_wrap_one(&s->g, 50, 2, &l1);
    gu_unwrap_ok(&c->g, t1, l1, 50);
    gu_unwrap_fails(&c->g, t1, l1);                 /* replayed */
    free(t1);
}

/* The second of two tokens first: refused (a gap). */
void gu_reorder(gu_side *c, gu_side *s)
{
    uint8_t *t1, *t2;
    size_t l1, l2;

    t1 = gu_wrap_one(&c->g, 60, 3, &l1);
    t2 = gu_wrap_one(&c->g, 70, 4, &l2);
    gu_unwrap_fails(&s->g, t2, l2);
    free(t1);
    free(t2);
}

/*
 * No Kerberos credentials by default: no ccache, and no client keytab
 * (MIT would otherwise get alice a ticket from KRB5_CLIENT_KTNAME on its
 * own).  Each test runs in its own process (Check forks), so the change
 * stays in the test.
 */
void gu_no_ccache(void)
{
    static char ccname[512], ktname[512];

    snprintf(ccname, sizeof(ccname), "FILE:%s/no-such-ccache",
             tu_env("NEGTEST_REALM_DIR"));
    snprintf(ktname, sizeof(ktname), "FILE:%s/no-such-keytab",
             tu_env("NEGTEST_REALM_DIR"));
    ck_assert_int_eq(setenv("KRB5CCNAME", ccname, 1), 0);
    ck_assert_int_eq(setenv("KRB5_CLIENT_KTNAME", ktname, 1), 0);
}

void gu_krb_sides(gu_side *c, gu_side *s, const char *mech,
                  negstream_protection p)
{
    gu_client_default(c, p);
    c->co.mechanism = mech;
    gu_server_default(s, p);
}
