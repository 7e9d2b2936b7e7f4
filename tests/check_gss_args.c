/*
 * check_gss_args.c - the argument checks of the GSSAPI glue (src/gss.c)
 * in .NET's order, the Win32 codes its errors carry on the wire, and a
 * NULL error record accepted everywhere (src/handshake.c too).
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gss.h"
#include "handshake.h"
#include "gssutil.h"
#include "testutil.h"

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

/* err == NULL is allowed everywhere. */
START_TEST(null_err)
{
    gu_side c, s;
    int fds[2];

    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_make_pair(fds, false);
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
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

static Suite *args_suite(void)
{
    Suite *su = suite_create("gss_args");
    TCase *tc;

    tc = tcase_create("arguments");
    tcase_add_test(tc, args_client);
    tcase_add_test(tc, args_server);
    tcase_add_test(tc, error_codes);
    tcase_add_test(tc, null_err);
    suite_add_tcase(su, tc);
    return su;
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
