/*
 * check_gss_kerberos.c - Kerberos between two of our sides (src/gss.c and
 * the [MS-NNS] handshake of src/handshake.c, each on a thread, over a
 * socketpair or 127.0.0.1 TCP) against the realm of tests/kdc/with-realm:
 * raw krb5 and SPNEGO at Sign and EncryptAndSign, with alice's ticket or
 * her password; what both sides then report, round trips of every size,
 * and tampered, replayed and reordered tokens refused.
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gss.h"
#include "gssutil.h"
#include "testutil.h"

/* ---- Kerberos with default credentials ---------------------------------- */

static void check_krb_props(gu_side *c, gu_side *s, bool encrypted)
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


static void krb_case(const char *mech, negstream_protection p, bool tcp)
{
    gu_side c, s;

    gu_krb_sides(&c, &s, mech, p);
    gu_run_pair(&c, &s, tcp);
    gu_expect_ok(&c, &s);
    check_krb_props(&c, &s, p == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_roundtrips(&c, &s);
    gu_attacks(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);

    gu_krb_sides(&c, &s, mech, p);
    gu_run_pair(&c, &s, !tcp);
    gu_expect_ok(&c, &s);
    gu_reorder(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
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

/* ---- tampered frames ---------------------------------------------------- */

/* The tampering test alone, on a fresh pair: the very first frame. */
static void tamper_first(gu_side *c, gu_side *s)
{
    uint8_t *t;
    size_t l, i;

    for (i = 0; i < 3; i++) {
        size_t pos;

        t = gu_wrap_one(&c->g, 64, 9, &l);
        pos = i == 0 ? 0 : i == 1 ? l / 2 : l - 1;
        t[pos] ^= 0x01;
        gu_unwrap_fails(&s->g, t, l);
        free(t);
    }
}

START_TEST(krb_tamper_first_frame)
{
    gu_side c, s;

    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_ok(&c, &s);
    tamper_first(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

/* A whole reordered exchange: the later token is refused, and so is the
 * earlier one after it (the sequence window moved). */
START_TEST(krb_reorder_both)
{
    gu_side c, s;
    uint8_t *t1, *t2;
    size_t l1, l2;

    gu_client_default(&c, NEGSTREAM_PROTECTION_SIGN);
    gu_server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    gu_run_pair(&c, &s, true);
    gu_expect_ok(&c, &s);
    t1 = gu_wrap_one(&c.g, 10, 1, &l1);
    t2 = gu_wrap_one(&c.g, 20, 2, &l2);
    gu_unwrap_fails(&s.g, t2, l2);
    gu_unwrap_fails(&s.g, t1, l1);
    free(t1);
    free(t2);
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

/* The token must fit the caller's buffer. */
START_TEST(wrap_no_room)
{
    gu_side c, s;
    uint8_t in[64], out[70];
    negstream_error e;

    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_ok(&c, &s);
    gu_fill(in, sizeof(in), 1);
    ck_assert_int_eq(negstream__gss_wrap(&c.g, in, sizeof(in), out,
                                         sizeof(out), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_ptr_nonnull(strstr(e.message, "does not fit"));
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST


/* ---- with a password ---------------------------------------------------- */

static void password_case(const char *mech, negstream_protection p,
                          const char *user, const char *domain)
{
    gu_side c, s;

    gu_no_ccache();
    gu_client_default(&c, p);
    c.co.mechanism = mech;
    c.co.user = user;
    c.co.domain = domain;
    c.co.password = tu_env("NEGTEST_PASSWORD");
    gu_server_default(&s, p);
    gu_run_pair(&c, &s, true);
    gu_expect_ok(&c, &s);
    check_krb_props(&c, &s, p == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_roundtrips(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
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

static Suite *kerberos_suite(void)
{
    Suite *su = suite_create("gss_kerberos");
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
    suite_add_tcase(su, tc);

    tc = tcase_create("frames");
    tcase_add_test(tc, krb_tamper_first_frame);
    tcase_add_test(tc, krb_reorder_both);
    tcase_add_test(tc, wrap_no_room);
    suite_add_tcase(su, tc);

    tc = tcase_create("password");
    tcase_add_test(tc, krb_password_kerberos);
    tcase_add_test(tc, krb_password_negotiate);
    tcase_add_test(tc, krb_password_sign);
    tcase_add_test(tc, krb_password_domain_forms);
    tcase_add_test(tc, krb_password_separate_domain);
    suite_add_tcase(su, tc);
    return su;
}

int main(void)
{
    SRunner *sr = srunner_create(kerberos_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
