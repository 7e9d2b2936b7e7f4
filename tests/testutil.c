/*
 * testutil.c - helpers shared by the stream test suites.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tcppair.h"
#include "testutil.h"

__thread int tu_fds[2] = { -1, -1 };

void tu_tcp_pair(int fds[2])
{
    const char *what;

    ck_assert_msg(tcp_pair_open(fds, &what) == 0, "%s on 127.0.0.1: %s",
                  what, strerror(errno));
}

const char *tu_env(const char *name)
{
    const char *v = getenv(name);

    ck_assert_msg(v != NULL && *v != '\0',
                  "%s is not set: run this test under tests/kdc/with-realm",
                  name);
    return v;
}

void tu_auth_init(tu_auth *a, negstream_protection level)
{
    memset(a, 0, sizeof(*a));
    a->client_level = level;
    a->server_level = level;
    a->ntlm_creds = (level == NEGSTREAM_PROTECTION_NONE);
}

void tu_client_options(const tu_auth *a, negstream_client_options *co)
{
    negstream_client_options_init(co);
    co->protection = a->client_level;
    if (a->client_mech != NULL)
        co->mechanism = a->client_mech;
    co->target_name = a->target != NULL ? a->target : tu_env("NEGTEST_SPN");
    if (a->ntlm_creds) {
        co->user = tu_env("NEGTEST_NTLM_USER");
        co->domain = tu_env("NEGTEST_NTLM_DOMAIN");
        co->password = tu_env("NEGTEST_NTLM_PASSWORD");
        if (a->client_mech == NULL)
            co->mechanism = "ntlm";
    } else if (a->password_creds) {
        co->user = tu_env("NEGTEST_USER");
        co->password = tu_env("NEGTEST_PASSWORD");
    }
}

struct server_arg {
    negstream               *s;
    /* the caller's, not a copy: a structure of an older version may be
     * smaller than this header's (test_options_of_version_1) */
    const negstream_server_options *so;
    negstream_error          err;
    int                      rc;
};

static void *server_main(void *p)
{
    struct server_arg *sa = p;

    sa->rc = negstream_authenticate_as_server(sa->s, sa->so, &sa->err);
    return NULL;
}

bool tu_auth_fds(int cfd, int sfd, bool leave_open,
                 const negstream_client_options *co,
                 const negstream_server_options *so, negstream **client,
                 negstream **server, negstream_error *cerr,
                 negstream_error *serr)
{
    struct server_arg sa;
    negstream_error ce;
    pthread_t t;
    negstream *c;
    int crc;

    c = negstream_new(cfd, leave_open, &ce);
    ck_assert_ptr_nonnull(c);
    memset(&sa, 0, sizeof(sa));
    sa.so = so;
    sa.s = negstream_new(sfd, leave_open, &sa.err);
    ck_assert_ptr_nonnull(sa.s);
    ck_assert_int_eq(pthread_create(&t, NULL, server_main, &sa), 0);
    crc = negstream_authenticate_as_client(c, co, &ce);
    if (crc < 0) {
        /* The server may wait for a message that never comes: wake it. */
        shutdown(cfd, SHUT_RDWR);
    }
    pthread_join(t, NULL);
    if (cerr != NULL)
        *cerr = ce;
    if (serr != NULL)
        *serr = sa.err;
    if (client != NULL)
        *client = c;
    else
        negstream_close(c);
    if (server != NULL)
        *server = sa.s;
    else
        negstream_close(sa.s);
    return crc == 0 && sa.rc == 0;
}

bool tu_auth_pair(const tu_auth *a, negstream **client, negstream **server,
                  negstream_error *cerr, negstream_error *serr)
{
    negstream_client_options co;
    negstream_server_options so;
    int fds[2];

    tu_tcp_pair(fds);
    tu_fds[0] = fds[0];
    tu_fds[1] = fds[1];
    tu_client_options(a, &co);
    negstream_server_options_init(&so);
    so.protection = a->server_level;
    return tu_auth_fds(fds[0], fds[1], false, &co, &so, client, server, cerr,
                       serr);
}

void tu_pair(negstream_protection level, negstream **client,
             negstream **server)
{
    negstream_error ce, se;
    tu_auth a;

    tu_auth_init(&a, level);
    ck_assert_msg(tu_auth_pair(&a, client, server, &ce, &se),
                  "authentication failed: client: %s [%s]; server: %s [%s]",
                  negstream_status_name(ce.code), ce.message,
                  negstream_status_name(se.code), se.message);
}

bool tu_skip_under_heimdal(const char *test, int iteration, bool cond,
                           const char *why)
{
#ifdef NEGSTREAM_HEIMDAL
    if (!cond)
        return false;
    printf("SKIP: %s (iteration %d): %s; this build uses Heimdal\n", test,
           iteration, why);
    fflush(stdout);
    return true;
#else
    (void)test;
    (void)iteration;
    (void)cond;
    (void)why;
    return false;
#endif
}

bool tu_skip_without_ntlm(const char *test, int iteration, bool cond)
{
#if HAVE_NTLM_MECHGLUE_PLUGIN
    (void)test;
    (void)iteration;
    (void)cond;
    return false;
#else
    return tu_skip_under_heimdal(test, iteration, cond, "NTLM needs MIT "
                                 "krb5 with gss-ntlmssp");
#endif
}

void tu_fill(uint8_t *buf, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 12345u;
    size_t i;

    for (i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

uint64_t tu_fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void *reader_main(void *p)
{
    tu_reader *r = p;
    uint8_t *buf = malloc(r->chunk);

    r->hash = TU_FNV_INIT;
    r->rc = 0;
    if (buf == NULL) {
        r->rc = -1;
        return NULL;
    }
    for (;;) {
        size_t want = r->chunk;
        ssize_t n;

        if (r->limit > 0 && r->limit - r->got < want)
            want = r->limit - r->got;
        if (r->limit > 0 && want == 0)
            break;
        n = negstream_read(r->s, buf, r->chunk, 0, (ssize_t)want, &r->err);
        if (n < 0) {
            r->rc = -1;
            break;
        }
        if (n == 0)
            break;
        r->hash = tu_fnv(r->hash, buf, (size_t)n);
        r->got += (size_t)n;
    }
    free(buf);
    return NULL;
}

void tu_reader_start(tu_reader *r, negstream *s, size_t chunk, size_t limit)
{
    memset(r, 0, sizeof(*r));
    r->s = s;
    r->chunk = chunk;
    r->limit = limit;
    ck_assert_int_eq(pthread_create(&r->thread, NULL, reader_main, r), 0);
}

void tu_reader_join(tu_reader *r)
{
    pthread_join(r->thread, NULL);
}

/* The next read's begin gets an error structure of its own: once it has
 * queued the read, that read's callback may run on another worker, end
 * the chain and let the test return while begin still fills its err (the
 * chain is often on the test's stack: that write would land in a dead
 * frame, or race with the callback's). */
static void chain_cb(negstream_async *ar)
{
    tu_chain *x = negstream_async_state(ar);
    ssize_t n = negstream_end_read(x->s, ar, &x->e);
    negstream_error be;

    if (n <= 0) {
        atomic_store(&x->over, -1);
        return;
    }
    x->hash = tu_fnv(x->hash, x->buf, (size_t)n);
    x->got += (size_t)n;
    if (x->got == x->want) {
        atomic_store(&x->over, 1);
        return;
    }
    if (negstream_begin_read(x->s, x->buf, x->chunk, 0, (ssize_t)x->chunk,
                             chain_cb, x, &be) == NULL) {
        x->e = be;
        atomic_store(&x->over, -1);
    }
}

void tu_chain_start(tu_chain *x, negstream *s, size_t chunk, size_t want)
{
    negstream_error e;

    ck_assert_uint_le(chunk, sizeof(x->buf));
    memset(x, 0, sizeof(*x));
    x->s = s;
    x->chunk = chunk;
    x->want = want;
    x->hash = TU_FNV_INIT;
    ck_assert_msg(negstream_begin_read(s, x->buf, chunk, 0, (ssize_t)chunk,
                                       chain_cb, x, &e) != NULL,
                  "read chain: %s", e.message);
}

void tu_chain_wait(tu_chain *x, const uint8_t *data, int ms)
{
    while (atomic_load(&x->over) == 0 && ms-- > 0)
        usleep(1000);
    ck_assert_msg(atomic_load(&x->over) == 1, "read chain: %s after %zu of "
                  "%zu bytes", atomic_load(&x->over) == 0 ? "no end" :
                  x->e.message, x->got, x->want);
    ck_assert(x->hash == tu_fnv(TU_FNV_INIT, data, x->want));
}

static void *zero_read_main(void *p)
{
    tu_zero_read *z = p;
    char b;
    negstream_error e;

    z->n = negstream_read(z->s, &b, 1, 0, 0, &e);
    __atomic_store_n(&z->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

void tu_zero_read_start(tu_zero_read *z, negstream *s)
{
    memset(z, 0, sizeof(*z));
    z->s = s;
    ck_assert_int_eq(pthread_create(&z->thread, NULL, zero_read_main, z), 0);
}

bool tu_zero_read_done(tu_zero_read *z)
{
    return __atomic_load_n(&z->done, __ATOMIC_SEQ_CST) != 0;
}

ssize_t tu_zero_read_join(tu_zero_read *z)
{
    pthread_join(z->thread, NULL);
    return z->n;
}

void tu_read_all(negstream *s, void *buf, size_t n)
{
    size_t got = 0;
    negstream_error e;

    while (got < n) {
        ssize_t r = negstream_read(s, buf, n, (ssize_t)got,
                                   (ssize_t)(n - got), &e);

        ck_assert_msg(r > 0, "read failed or EOF after %zu of %zu: %s", got,
                      n, r < 0 ? e.message : "EOF");
        got += (size_t)r;
    }
}

void tu_write_all(negstream *s, const void *buf, size_t n)
{
    negstream_error e;
    ssize_t w = negstream_write(s, buf, n, 0, (ssize_t)n, &e);

    ck_assert_msg(w == (ssize_t)n, "write of %zu failed: %s", n, e.message);
}

void tu_transfer(negstream *from, negstream *to, size_t n, uint32_t seed)
{
    uint8_t *buf = malloc(n > 0 ? n : 1);
    tu_reader r;
    negstream_error e;
    ssize_t w;

    ck_assert_ptr_nonnull(buf);
    tu_fill(buf, n, seed);
    tu_reader_start(&r, to, 100000, n + 1);
    w = negstream_write(from, buf, n, 0, (ssize_t)n, &e);
    ck_assert_msg(w == (ssize_t)n, "write of %zu: %s", n, e.message);
    /* A one-byte sentinel: the reader stops at n + 1, and a 0-byte write
     * must have added nothing in between. */
    ck_assert_int_eq(negstream_write(from, "!", 1, 0, 1, &e), 1);
    tu_reader_join(&r);
    ck_assert_msg(r.rc == 0, "reader: %s", r.err.message);
    ck_assert_uint_eq(r.got, n + 1);
    ck_assert(r.hash == tu_fnv(tu_fnv(TU_FNV_INIT, buf, n), "!", 1));
    free(buf);
}

/* The x86-64 and generic numbers of read, write, poll, writev, sendto,
 * recvfrom, sendmsg, recvmsg and ppoll, in /proc/self/task/TID/syscall
 * while the thread sleeps ('S' in its stat). */
bool tu_blocked_in_io(long tid)
{
    static const long io_calls[] = {
#ifdef SYS_poll
        SYS_poll,
#endif
        SYS_read, SYS_write, SYS_writev, SYS_sendto, SYS_recvfrom,
        SYS_sendmsg, SYS_recvmsg, SYS_ppoll
    };
    char path[64], line[512], *p, state = '?';
    long nr = -1;
    FILE *f;
    size_t i;

    snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", tid);
    f = fopen(path, "r");
    if (f == NULL)
        return false;
    /* "pid (comm) S ...": comm may hold spaces, so find the last ')'. */
    if (fgets(line, sizeof(line), f) != NULL
        && (p = strrchr(line, ')')) != NULL && p[1] == ' ')
        state = p[2];
    fclose(f);
    if (state != 'S')
        return false;
    snprintf(path, sizeof(path), "/proc/self/task/%ld/syscall", tid);
    f = fopen(path, "r");
    if (f == NULL)
        return false;
    if (fscanf(f, "%ld", &nr) != 1)
        nr = -1;
    fclose(f);
    for (i = 0; i < sizeof(io_calls) / sizeof(io_calls[0]); i++)
        if (nr == io_calls[i])
            return true;
    return false;
}
