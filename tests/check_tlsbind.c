/*
 * check_tlsbind.c - negstream_channel_binding_from_cert and
 * negstream_channel_binding_from_ssl.  Run by tests/tlsbind.sh, which
 * makes the certificates and computes the expected bindings with the
 * openssl command (NEGTEST_CERT_DIR/manifest).  In a build without
 * OpenSSL the helpers must fail with NEGSTREAM_E_NOT_SUPPORTED.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "negstream.h"

#if HAVE_OPENSSL

#include <openssl/x509.h>
#include "tlsutil.h"

/* ---- the manifest ------------------------------------------------------ */

typedef struct cert_case {
    char name[64], hash[16], expected[2 * NEGSTREAM_CHANNEL_BINDING_MAX + 1];
    int  seclevel;
} cert_case;

#define MAX_CASES 32
static cert_case cases[MAX_CASES];
static int ncases;

static const char *cert_dir(void)
{
    const char *d = getenv("NEGTEST_CERT_DIR");

    if (d == NULL || *d == '\0') {
        fprintf(stderr, "check_tlsbind: NEGTEST_CERT_DIR is not set: run "
                "tests/tlsbind.sh\n");
        exit(99);
    }
    return d;
}

static void read_manifest(void)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/manifest", cert_dir());
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "check_tlsbind: cannot open %s\n", path);
        exit(99);
    }
    while (ncases < MAX_CASES) {
        cert_case *c = &cases[ncases];

        if (fscanf(f, "%63s %15s %256s %d", c->name, c->hash, c->expected,
                   &c->seclevel) != 4)
            break;
        ncases++;
    }
    fclose(f);
    if (ncases < 8) {
        fprintf(stderr, "check_tlsbind: %s lists %d certificates\n", path,
                ncases);
        exit(99);
    }
}

static unsigned char *read_file(const char *name, const char *ext,
                                size_t *len)
{
    char path[1024];
    unsigned char *buf;
    long n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s.%s", cert_dir(), name, ext);
    f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    ck_assert_int_gt(n, 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static const char *path_of(const char *name, const char *ext)
{
    static __thread char buf[2][1024];
    static __thread int next;
    char *b = buf[next++ % 2];

    snprintf(b, sizeof(buf[0]), "%s/%s.%s", cert_dir(), name, ext);
    return b;
}

/* ---- each certificate -------------------------------------------------- */

static void expect_binding(const cert_case *c, int rc,
                           const unsigned char *out, size_t len,
                           const negstream_error *e, const char *how)
{
    if (strcmp(c->expected, "NOTSUP") == 0) {
        ck_assert_msg(rc == -1 && e->code == NEGSTREAM_E_NOT_SUPPORTED &&
                      strstr(e->message, "RFC 5929") != NULL,
                      "%s (%s): rc %d, %s: %s", c->name, how, rc,
                      negstream_status_name(e->code), e->message);
        return;
    }
    ck_assert_msg(rc == 0 && e->code == NEGSTREAM_OK, "%s (%s): %s: %s",
                  c->name, how, negstream_status_name(e->code), e->message);
    ck_assert_msg(strcmp(tt_hex(out, len), c->expected) == 0,
                  "%s (%s, %s): got %s, openssl says %s", c->name, how,
                  c->hash, tt_hex(out, len), c->expected);
}

/* From the DER file; then with out exactly big enough, and one byte too
 * small (ARGUMENT_RANGE, *out_len = the size needed). */
START_TEST(test_from_cert)
{
    const cert_case *c = &cases[_i];
    unsigned char out[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t der_len, len = sizeof(out), need;
    unsigned char *der = read_file(c->name, "der", &der_len);
    negstream_error e;
    int rc;

    rc = negstream_channel_binding_from_cert(der, der_len, out, &len, &e);
    expect_binding(c, rc, out, len, &e, "from_cert");
    if (rc == 0) {
        need = len;
        len = need;
        ck_assert_int_eq(negstream_channel_binding_from_cert(der, der_len,
                                                             out, &len, &e),
                         0);
        ck_assert_uint_eq(len, need);
        len = need - 1;
        ck_assert_int_eq(negstream_channel_binding_from_cert(der, der_len,
                                                             out, &len, &e),
                         -1);
        ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
        ck_assert_uint_eq(len, need);
    }
    free(der);
}
END_TEST

/* Over a TLS connection: the client's binding (the peer's certificate)
 * and the server's (its own) are the same bytes, and openssl's. */
START_TEST(test_from_ssl)
{
    const cert_case *c = &cases[_i];
    unsigned char cout[NEGSTREAM_CHANNEL_BINDING_MAX];
    unsigned char sout[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t clen = sizeof(cout), slen = sizeof(sout);
    negstream_error ce, se;
    SSL *cl, *sv;
    X509 *cert;
    EVP_PKEY *key;
    int crc, src;

    tt_load_pem(path_of(c->name, "pem"), path_of(c->name, "key"), &cert,
                &key);
    tt_pair(cert, key, c->seclevel, &cl, &sv);
    ck_assert(!SSL_is_server(cl) && SSL_is_server(sv));
    crc = negstream_channel_binding_from_ssl(cl, cout, &clen, &ce);
    src = negstream_channel_binding_from_ssl(sv, sout, &slen, &se);
    expect_binding(c, crc, cout, clen, &ce, "from_ssl, client");
    expect_binding(c, src, sout, slen, &se, "from_ssl, server");
    tt_pair_free(cl, sv);
    X509_free(cert);
    EVP_PKEY_free(key);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

static void refuse_der(const unsigned char *der, size_t len,
                       negstream_status code, const char *needle)
{
    unsigned char out[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t out_len = sizeof(out);
    negstream_error e;

    ck_assert_int_eq(negstream_channel_binding_from_cert(der, len, out,
                                                         &out_len, &e), -1);
    ck_assert_msg(e.code == code && strstr(e.message, needle) != NULL,
                  "%s: %s", negstream_status_name(e.code), e.message);
}

START_TEST(test_bad_der)
{
    static const unsigned char junk[] = "not a certificate";
    unsigned char out[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t der_len, out_len = sizeof(out);
    unsigned char *der = read_file(cases[0].name, "der", &der_len);
    negstream_error e;

    refuse_der(junk, sizeof(junk), NEGSTREAM_E_ARGUMENT, "not a DER");
    refuse_der(der, der_len - 1, NEGSTREAM_E_ARGUMENT, "not a DER");
    refuse_der(der, 0, NEGSTREAM_E_ARGUMENT_RANGE, "der_len 0");
    /* Two certificates back to back: a chain is not a certificate. */
    der = realloc(der, 2 * der_len);
    ck_assert_ptr_nonnull(der);
    memcpy(der + der_len, der, der_len);
    refuse_der(der, 2 * der_len, NEGSTREAM_E_ARGUMENT, "follow the DER");

    ck_assert_int_eq(negstream_channel_binding_from_cert(NULL, 1, out,
                                                         &out_len, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_channel_binding_from_cert(der, der_len, NULL,
                                                         &out_len, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_channel_binding_from_cert(der, der_len, out,
                                                         NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    /* And err may be NULL. */
    ck_assert_int_eq(negstream_channel_binding_from_cert(der, der_len, out,
                                                         &out_len, NULL), 0);
    free(der);
}
END_TEST

START_TEST(test_ssl_errors)
{
    unsigned char out[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t out_len = sizeof(out);
    negstream_error e;
    SSL *cl, *sv;
    X509 *cert;
    EVP_PKEY *key;

    ck_assert_int_eq(negstream_channel_binding_from_ssl(NULL, out, &out_len,
                                                        &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    tt_make_cert("localhost", &cert, &key);
    tt_pair_new(cert, key, 1, &cl, &sv);
    ck_assert_int_eq(negstream_channel_binding_from_ssl(cl, out, &out_len,
                                                        &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_msg(strstr(e.message, "handshake") != NULL, "%s", e.message);
    ck_assert_int_eq(negstream_channel_binding_from_ssl(sv, out, &out_len,
                                                        &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_int_eq(negstream_channel_binding_from_ssl(sv, NULL, &out_len,
                                                        &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    tt_pair_free(cl, sv);
    X509_free(cert);
    EVP_PKEY_free(key);
}
END_TEST

static Suite *tlsbind_suite(void)
{
    Suite *s = suite_create("tlsbind");
    TCase *t = tcase_create("tlsbind");

    tcase_set_timeout(t, 60);
    tcase_add_loop_test(t, test_from_cert, 0, ncases);
    tcase_add_loop_test(t, test_from_ssl, 0, ncases);
    tcase_add_test(t, test_bad_der);
    tcase_add_test(t, test_ssl_errors);
    suite_add_tcase(s, t);
    return s;
}

#else /* !HAVE_OPENSSL */

START_TEST(test_not_supported)
{
    static const unsigned char der[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
    unsigned char out[NEGSTREAM_CHANNEL_BINDING_MAX];
    size_t len = sizeof(out);
    negstream_error e;

    ck_assert_int_eq(negstream_channel_binding_from_cert(der, sizeof(der),
                                                         out, &len, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    ck_assert_msg(strstr(e.message, "without OpenSSL") != NULL, "%s",
                  e.message);
    ck_assert_int_eq(negstream_channel_binding_from_ssl(
                         (const struct ssl_st *)der, out, &len, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_NOT_SUPPORTED);
    ck_assert_int_eq(negstream_channel_binding_from_cert(NULL, 1, out, &len,
                                                         &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_channel_binding_from_ssl(NULL, out, &len,
                                                        &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
}
END_TEST

static Suite *tlsbind_suite(void)
{
    Suite *s = suite_create("tlsbind");
    TCase *t = tcase_create("without OpenSSL");

    tcase_add_test(t, test_not_supported);
    suite_add_tcase(s, t);
    return s;
}

#endif /* HAVE_OPENSSL */

int main(void)
{
    SRunner *sr;
    int failed;

#if HAVE_OPENSSL
    read_manifest();
#endif
    sr = srunner_create(tlsbind_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
