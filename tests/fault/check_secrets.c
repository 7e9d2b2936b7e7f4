/*
 * check_secrets.c - what the library leaves in the memory it frees.
 *
 * A client authenticates with a password (begin/end, the caller wiping
 * its own copy as soon as begin has returned), then a small and a large
 * message go each way, then both sides close.  Meanwhile the LD_PRELOAD
 * shim (shim.c) searches every block handed to free, or moved by
 * realloc, for the password and for the two small messages' plaintext:
 * none may be found.  The large messages make the frame buffers grow, so
 * the smaller buffers holding the small messages are freed on the way.
 *
 * The server runs on a thread of this process too; its frees are not
 * searched while it authenticates, because gss-ntlmssp then reads the
 * user's password from its own database (NTLM_USER_FILE), which is the
 * server's business and not a copy made by the library.
 *
 * Runs under tests/kdc/with-realm with the shim preloaded
 * (tests/fault/secrets.krb).
 */
#include "config.h"

#include <check.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faultutil.h"
#include "shim.h"

/* The two small messages: long enough that finding one elsewhere by
 * chance is out of the question. */
static const char msg_c2s[] = "c2s: the client's plaintext 5b1f0e9a77d3";
static const char msg_s2c[] = "s2c: the server's plaintext c3a8e2f41b60";
#define SMALL (sizeof(msg_c2s) - 1)
#define BIG 20000

static faultshim_api shim;

/* One case: the client's mechanism, protection level and credentials. */
typedef struct scase {
    const char          *name;
    const char          *mech;
    negstream_protection level;
    bool                 ntlm;     /* the NTLM user, else alice@REALM */
} scase;

static const scase cases[] = {
    { "kerberos, EncryptAndSign", "kerberos",
      NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false },
    { "kerberos, Sign", "kerberos", NEGSTREAM_PROTECTION_SIGN, false },
    { "negotiate (Kerberos), EncryptAndSign", "negotiate",
      NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, false },
    { "ntlm, EncryptAndSign", "ntlm",
      NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, true },
    { "ntlm, Sign", "ntlm", NEGSTREAM_PROTECTION_SIGN, true },
    { "ntlm, None", "ntlm", NEGSTREAM_PROTECTION_NONE, true },
};

/* The test's own wipe, so that it does not depend on the library's. */
static void test_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;

    while (n-- > 0)
        *v++ = 0;
}

/* A copy the compiler cannot drop as a dead store before free(). */
static void test_copy(void *dst, const void *src, size_t n)
{
    volatile unsigned char *d = dst;
    const unsigned char *q = src;

    while (n-- > 0)
        *d++ = *q++;
}

typedef struct server {
    negstream           *s;
    int                  fd;
    negstream_protection level;
    negstream_error      err;
    const char          *failed;   /* NULL, or what went wrong */
} server;

static void read_exact(negstream *s, uint8_t *buf, size_t n,
                       negstream_error *e, const char **failed,
                       const char *what)
{
    size_t got = 0;
    ssize_t r;

    while (*failed == NULL && got < n) {
        r = negstream_read(s, buf, n, (ssize_t)got, (ssize_t)(n - got), e);
        if (r <= 0)
            *failed = what;
        else
            got += (size_t)r;
    }
}

static void *server_main(void *p)
{
    server *sv = p;
    negstream_server_options so;
    uint8_t small[SMALL], *big = malloc(BIG), *want = malloc(BIG);
    ssize_t r;

    if (big == NULL || want == NULL) {
        sv->failed = "malloc";
        goto out;
    }
    negstream_server_options_init(&so);
    so.protection = sv->level;
    shim.secret_ignore_thread(true);
    r = negstream_authenticate_as_server(sv->s, &so, &sv->err);
    shim.secret_ignore_thread(false);
    if (r < 0) {
        sv->failed = "authenticate_as_server";
        shutdown(sv->fd, SHUT_RDWR);
        goto out;
    }
    read_exact(sv->s, small, SMALL, &sv->err, &sv->failed, "read small");
    if (sv->failed == NULL && memcmp(small, msg_c2s, SMALL) != 0)
        sv->failed = "the small message arrived changed";
    read_exact(sv->s, big, BIG, &sv->err, &sv->failed, "read big");
    tu_fill(want, BIG, 1);
    if (sv->failed == NULL && memcmp(big, want, BIG) != 0)
        sv->failed = "the big message arrived changed";
    if (sv->failed == NULL &&
        negstream_write(sv->s, msg_s2c, SMALL, 0, SMALL, &sv->err) < 0)
        sv->failed = "write small";
    tu_fill(want, BIG, 2);
    if (sv->failed == NULL &&
        negstream_write(sv->s, want, BIG, 0, BIG, &sv->err) < 0)
        sv->failed = "write big";
    /* until the client has closed */
    if (sv->failed == NULL &&
        negstream_read(sv->s, small, SMALL, 0, SMALL, &sv->err) != 0)
        sv->failed = "no end of stream after the data";
    test_wipe(small, sizeof(small));
out:
    /* The test's own buffers, wiped as the library must wipe its own. */
    if (big != NULL)
        test_wipe(big, BIG);
    free(big);
    free(want);
    return NULL;
}

/* Prints where each freed block holding secret i was freed. */
static void report(size_t i, const char *what, unsigned long hits,
                   char *out, size_t cap)
{
    void *where[8];
    size_t k, len;

    snprintf(out, cap, "%s in %lu freed block(s), freed from:", what,
             hits);
    shim.secret_hits(i, where, 8);
    for (k = 0; k < 8 && where[k] != NULL; k++) {
        Dl_info info;

        len = strlen(out);
        if (dladdr(where[k], &info) != 0 && info.dli_sname != NULL)
            snprintf(out + len, cap - len, " %s+0x%lx (%s)", info.dli_sname,
                     (unsigned long)((char *)where[k] -
                                     (char *)info.dli_saddr),
                     info.dli_fname);
        else if (dladdr(where[k], &info) != 0)
            snprintf(out + len, cap - len, " %p (%s+0x%lx)", where[k],
                     info.dli_fname,
                     (unsigned long)((char *)where[k] -
                                     (char *)info.dli_fbase));
        else
            snprintf(out + len, cap - len, " %p", where[k]);
    }
    len = strlen(out);
    snprintf(out + len, cap - len, "; ");
}

/*
 * Heimdal 7.8 frees copies of what it is given unwiped: the password
 * (strndup'd in _gsskrb5_acquire_cred_ext, libgssapi.so.3) and the
 * plaintext (krb5 crypto's scratch copy in libkrb5.so.26; the CFX MIC's
 * in libgssapi.so.3).  True when every one of the 'hits' frees of secret i
 * was made by a Heimdal library (and all were recorded: at most 8), i.e.
 * none by libnegstream or the test.  Always false for MIT builds.
 */
static bool only_heimdal_freed(size_t i, unsigned long hits)
{
#ifdef NEGSTREAM_HEIMDAL
    static const char *const libs[] = {
        "/libgssapi.so.3", "/libkrb5.so.26", "/libhcrypto.so.5",
        "/libasn1.so.8", "/libroken.so.19", "/libheimbase.so.1"
    };
    void *where[8];
    size_t k, j;

    if (hits > 8)
        return false;
    shim.secret_hits(i, where, 8);
    for (k = 0; k < hits; k++) {
        Dl_info info;
        bool heimdal = false;

        if (where[k] == NULL || dladdr(where[k], &info) == 0 ||
            info.dli_fname == NULL)
            return false;
        for (j = 0; j < sizeof(libs) / sizeof(libs[0]); j++)
            if (strstr(info.dli_fname, libs[j]) != NULL)
                heimdal = true;
        if (!heimdal)
            return false;
    }
    return true;
#else
    (void)i;
    (void)hits;
    return false;
#endif
}

START_TEST(test_nothing_left_in_freed_memory)
{
    const scase *sc = &cases[_i];
    negstream_client_options co;
    negstream_error ce;
    negstream_async *ar;
    negstream *c;
    server sv;
    pthread_t t;
    char pw[256], msg[2048];
    uint8_t small[SMALL], *big, *want;
    const char *failed = NULL, *names[3] = {
        "the password", "the client's plaintext", "the server's plaintext"
    };
    unsigned long hits[3];
    int fds[2];
    size_t i;

    TU_NEEDS_NTLM(sc->ntlm);
    ck_assert_msg(faultshim_load(&shim),
                  "the fault shim is not preloaded: run this program through "
                  "tests/fault/secrets.krb (LD_PRELOAD=.../libfaultshim.so)");
    snprintf(pw, sizeof(pw), "%s",
             tu_env(sc->ntlm ? "NEGTEST_NTLM_PASSWORD" : "NEGTEST_PASSWORD"));
    ck_assert(shim.secret_watch(pw, strlen(pw)));
    ck_assert(shim.secret_watch(msg_c2s, SMALL));
    ck_assert(shim.secret_watch(msg_s2c, SMALL));
    big = malloc(BIG);
    want = malloc(BIG);
    ck_assert(big != NULL && want != NULL);

    tu_tcp_pair(fds);
    memset(&sv, 0, sizeof(sv));
    sv.fd = fds[1];
    sv.level = sc->level;
    sv.s = negstream_new(fds[1], false, &sv.err);
    ck_assert_msg(sv.s != NULL, "negstream_new: %s", sv.err.message);
    c = negstream_new(fds[0], false, &ce);
    ck_assert_msg(c != NULL, "negstream_new: %s", ce.message);
    ck_assert_int_eq(pthread_create(&t, NULL, server_main, &sv), 0);

    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = sc->mech;
    co.protection = sc->level;
    co.user = tu_env(sc->ntlm ? "NEGTEST_NTLM_USER" : "NEGTEST_USER");
    if (sc->ntlm)
        co.domain = tu_env("NEGTEST_NTLM_DOMAIN");
    co.password = pw;
    ar = negstream_begin_authenticate_as_client(c, &co, NULL, NULL, &ce);
    /* As a careful caller does: its own copy is gone at once. */
    test_wipe(pw, sizeof(pw));
    ck_assert_msg(ar != NULL, "begin: %s", ce.message);
    if (negstream_end_authenticate_as_client(c, ar, &ce) < 0) {
        failed = "authenticate_as_client";
        shutdown(fds[0], SHUT_RDWR);
    }
    if (failed == NULL &&
        negstream_write(c, msg_c2s, SMALL, 0, SMALL, &ce) < 0)
        failed = "write small";
    tu_fill(want, BIG, 1);
    if (failed == NULL && negstream_write(c, want, BIG, 0, BIG, &ce) < 0)
        failed = "write big";
    read_exact(c, small, SMALL, &ce, &failed, "read small");
    if (failed == NULL && memcmp(small, msg_s2c, SMALL) != 0)
        failed = "the small message arrived changed";
    read_exact(c, big, BIG, &ce, &failed, "read big");
    tu_fill(want, BIG, 2);
    if (failed == NULL && memcmp(big, want, BIG) != 0)
        failed = "the big message arrived changed";
    test_wipe(small, sizeof(small));
    test_wipe(big, BIG);
    negstream_close(c);
    pthread_join(t, NULL);
    negstream_close(sv.s);
    free(big);
    free(want);

    for (i = 0; i < 3; i++)
        hits[i] = shim.secret_hits(i, NULL, 0);
    msg[0] = '\0';
    for (i = 0; i < 3; i++)
        if (hits[i] > 0 && only_heimdal_freed(i, hits[i])) {
            printf("SKIP: %s: %s in %lu block(s) freed unwiped by "
                   "Heimdal's own libraries (not libnegstream's); this "
                   "build uses Heimdal\n", sc->name, names[i], hits[i]);
            hits[i] = 0;
        }
    for (i = 0; i < 3; i++)
        if (hits[i] > 0)
            report(i, names[i], hits[i], msg + strlen(msg),
                   sizeof(msg) - strlen(msg));
    shim.secret_clear();
    ck_assert_msg(failed == NULL, "%s: client: %s: %s", sc->name, failed,
                  ce.message);
    ck_assert_msg(sv.failed == NULL, "%s: server: %s: %s", sc->name,
                  sv.failed, sv.err.message);
    ck_assert_msg(msg[0] == '\0', "%s: %s", sc->name, msg);
}
END_TEST

/* The watch itself works: a block freed with a secret in it is counted,
 * one wiped first is not, and a thread that is ignored is not searched
 * (otherwise the test above could pass by seeing nothing). */
START_TEST(test_the_watch_sees_a_secret)
{
    static const char secret[] = "a secret the shim must see 0123456789";
    void *where[1];
    char *p;

    ck_assert(faultshim_load(&shim));
    ck_assert(shim.secret_watch(secret, sizeof(secret) - 1));
    p = malloc(100);
    ck_assert_ptr_nonnull(p);
    test_copy(p + 10, secret, sizeof(secret));
    free(p);
    ck_assert_uint_eq(shim.secret_hits(0, where, 1), 1);
    ck_assert_ptr_nonnull(where[0]);

    p = malloc(100);
    ck_assert_ptr_nonnull(p);
    memcpy(p, secret, sizeof(secret));
    p = realloc(p, 1 << 20);       /* moves: the old block is freed */
    ck_assert_ptr_nonnull(p);
    test_wipe(p, sizeof(secret));
    free(p);
    ck_assert_uint_eq(shim.secret_hits(0, NULL, 0), 2);

    shim.secret_ignore_thread(true);
    p = strdup(secret);
    ck_assert_ptr_nonnull(p);
    free(p);
    shim.secret_ignore_thread(false);
    ck_assert_uint_eq(shim.secret_hits(0, NULL, 0), 2);
    shim.secret_clear();
}
END_TEST

static Suite *secrets_suite(void)
{
    Suite *s = suite_create("secrets");
    TCase *tc = tcase_create("freed");

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_the_watch_sees_a_secret);
    tcase_add_loop_test(tc, test_nothing_left_in_freed_memory, 0,
                        (int)(sizeof(cases) / sizeof(cases[0])));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(secrets_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
