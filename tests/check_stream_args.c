/*
 * check_stream_args.c - argument, option and state errors of the public
 * stream API, in .NET's order (tests/DOTNET-CONFORMANCE.md, items 18,
 * 19, 22 and 23): NULL and out-of-range
 * arguments of read and write before and after authentication, of
 * negstream_new and the authentication calls, options structures not
 * stamped by their init function or of an older version, a second
 * authentication; and the status names and version string.
 * Run under tests/kdc/with-realm (tests/stream_args.krb).
 */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "negstream.h"
#include "options.h"
#include "testutil.h"

/* ---- read and write arguments ------------------------------------------- */

/* Argument checks, in .NET's order, for read and write. */
static void check_rw_errors(negstream *s, bool write)
{
    char one[1] = { 0 };
    negstream_error e;
#define RW(st, buf, len, off, cnt)                                        \
    (write ? negstream_write((st), (buf), (len), (off), (cnt), &e)         \
           : negstream_read((st), (buf), (len), (off), (cnt), &e))

    ck_assert_int_eq(RW(NULL, one, 1, 0, 1), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(RW(s, NULL, 1, 0, 1), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(RW(s, NULL, 0, 0, 0), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    /* NULL buffer wins over a bad offset. */
    ck_assert_int_eq(RW(s, NULL, 1, -1, 1), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(RW(s, one, 1, -1, 1), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(RW(s, one, 1, 0, -1), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(RW(s, one, 1, 0, 2), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(RW(s, one, 1, 1, 1), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(RW(s, one, 1, 2, 0), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(RW(s, one, 1, SSIZE_MAX, SSIZE_MAX), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(RW(s, one, 1, 1, SSIZE_MAX), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    /* Error record may be NULL. */
    ck_assert_int_eq(write ? negstream_write(s, NULL, 0, 0, 0, NULL)
                           : negstream_read(s, NULL, 0, 0, 0, NULL), -1);
#undef RW
}

START_TEST(test_argument_errors)
{
    negstream *c, *s;
    negstream_error e;
    char one[1] = { 'x' };
    int fds[2];

    /* On an unauthenticated stream: argument errors come first ... */
    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(c);
    check_rw_errors(c, true);
    check_rw_errors(c, false);
    /* ... and valid arguments then meet InvalidOperation. */
    ck_assert_int_eq(negstream_write(c, one, 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_int_eq(negstream_read(c, one, 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_int_eq(negstream_read(c, one, 1, 1, 0, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    negstream_close(c);
    close(fds[1]);

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    check_rw_errors(c, true);
    check_rw_errors(s, false);
    /* offset == length with count 0 is valid. */
    ck_assert_int_eq(negstream_write(c, one, 1, 1, 0, &e), 0);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* ---- stream and options arguments --------------------------------------- */

START_TEST(test_new_and_options_errors)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error e;
    negstream *c;
    int fds[2], devnull;

    ck_assert_ptr_null(negstream_new(-1, false, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    devnull = open("/dev/null", O_RDONLY);
    ck_assert_int_ge(devnull, 0);
    close(devnull);
    ck_assert_ptr_null(negstream_new(devnull, false, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_ptr_null(negstream_new(-1, false, NULL));

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(negstream_authenticate_as_client(NULL, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_authenticate_as_client(c, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    negstream_client_options_init(&co);
    ck_assert_int_eq(co.protection, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    ck_assert_int_eq(co.impersonation, NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    ck_assert(!co.require_mutual_auth);
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);    /* target */
    co.target_name = "host/localhost";
    co.impersonation = NEGSTREAM_IMPERSONATION_ANONYMOUS;
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    co.impersonation = NEGSTREAM_IMPERSONATION_IDENTIFICATION;
    co.mechanism = "digest";
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    co.mechanism = NULL;
    co.protection = (negstream_protection)7;
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    negstream_server_options_init(&so);
    so.mechanism = "digest";
    ck_assert_int_eq(negstream_authenticate_as_server(c, &so, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    /* None of these consumed the stream: it is still NEW. */
    ck_assert(!negstream_is_authenticated(c));
    ck_assert_int_eq(negstream_set_timeouts(c, -2, 0, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(negstream_set_timeouts(NULL, 0, 0, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    negstream_close(c);
    close(fds[1]);
}
END_TEST

/*
 * Options that negstream_*_options_init() did not stamp (filled by hand,
 * zeroed, or garbage) are refused with NEGSTREAM_E_ARGUMENT and a message
 * that says what to do; the stream is left as it was.
 */
START_TEST(test_options_must_be_initialized)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream_error e;
    negstream *c;
    int fds[2];

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(c);

    /* every field valid, but filled by hand */
    memset(&co, 0, sizeof(co));
    co.target_name = tu_env("NEGTEST_SPN");
    co.protection = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    co.impersonation = NEGSTREAM_IMPERSONATION_IDENTIFICATION;
    co.mechanism = "negotiate";
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_msg(strstr(e.message, "call negstream_client_options_init()")
                  != NULL, "message: %s", e.message);
    ck_assert_ptr_null(negstream_begin_authenticate_as_client(c, &co, NULL,
                                                              NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    /* garbage where the stamp is */
    memset(&co.struct_version, 0xa5, sizeof(co.struct_version));
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    /* the version number alone is not the stamp either */
    co.struct_version = NEGSTREAM_CLIENT_OPTIONS_VERSION;
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    /* built against a newer header than this library knows */
    negstream_client_options_init_version(&co,
            NEGSTREAM_CLIENT_OPTIONS_VERSION + 1);
    co.target_name = tu_env("NEGTEST_SPN");
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_msg(strstr(e.message, "newer negstream.h") != NULL,
                  "message: %s", e.message);

    memset(&so, 0, sizeof(so));
    so.protection = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    so.impersonation = NEGSTREAM_IMPERSONATION_IDENTIFICATION;
    ck_assert_int_eq(negstream_authenticate_as_server(c, &so, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_msg(strstr(e.message, "call negstream_server_options_init()")
                  != NULL, "message: %s", e.message);
    ck_assert_ptr_null(negstream_begin_authenticate_as_server(c, &so, NULL,
                                                              NULL, &e));
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);

    /* nothing was consumed: the next check is reached as before */
    ck_assert(!negstream_is_authenticated(c));
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.impersonation = NEGSTREAM_IMPERSONATION_ANONYMOUS;
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    negstream_close(c);
    close(fds[1]);
}
END_TEST

/*
 * A program built against the first header with options fields has
 * structures exactly that big: stamped version 1, they are read no
 * further (AddressSanitizer and valgrind see any byte read past the
 * malloc'd block), and the authentication works.
 */
START_TEST(test_options_of_version_1)
{
    size_t csize = negstream__client_options_size(1);
    size_t ssize = negstream__server_options_size(1);
    negstream_client_options *co = malloc(csize);
    negstream_server_options *so = malloc(ssize);
    negstream_error ce, se;
    negstream *c, *s;
    int fds[2];

    ck_assert(co != NULL && so != NULL);
    negstream_client_options_init_version(co, 1);
    co->target_name = tu_env("NEGTEST_SPN");
    negstream_server_options_init_version(so, 1);
    ck_assert_int_eq(so->protection, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    tu_tcp_pair(fds);
    ck_assert_msg(tu_auth_fds(fds[0], fds[1], false, co, so, &c, &s, &ce,
                              &se), "%s / %s", ce.message, se.message);
    ck_assert(negstream_is_encrypted(c));
    tu_transfer(c, s, 1000, 4);
    negstream_close(c);
    negstream_close(s);
    free(co);
    free(so);
}
END_TEST

/* ---- state -------------------------------------------------------------- */

START_TEST(test_double_authentication)
{
    negstream_client_options co;
    negstream_error e;
    negstream *c, *s;

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_int_eq(negstream_authenticate_as_server(s, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_int_eq(negstream_authenticate_as_server(c, NULL, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    /* Still usable. */
    tu_write_all(c, "ok", 2);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

START_TEST(test_status_names_and_version)
{
    ck_assert_str_eq(negstream_status_name(NEGSTREAM_OK), "NEGSTREAM_OK");
    ck_assert_str_eq(negstream_status_name(NEGSTREAM_E_IO), "NEGSTREAM_E_IO");
    ck_assert_str_eq(negstream_status_name(NEGSTREAM_E_NOMEM),
                     "NEGSTREAM_E_NOMEM");
    ck_assert_str_eq(negstream_version(), "0.1.0");
}
END_TEST

static Suite *args_suite(void)
{
    Suite *s = suite_create("stream_args");
    TCase *t;

    t = tcase_create("arguments");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_argument_errors);
    tcase_add_test(t, test_new_and_options_errors);
    suite_add_tcase(s, t);

    t = tcase_create("options");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_options_must_be_initialized);
    tcase_add_test(t, test_options_of_version_1);
    suite_add_tcase(s, t);

    t = tcase_create("state");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_double_authentication);
    tcase_add_test(t, test_status_names_and_version);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(args_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
