/*
 * check_gss_ntlm.c - NTLM (gss-ntlmssp, MIT's mechglue plugin) between two
 * of our sides, against the realm's NTLM user file: every protection
 * level over a socketpair and TCP, .NET's Sign layout byte for byte, a
 * None client forced to NTLM, the password from NTLM_USER_FILE, and
 * SPNEGO falling back to NTLM when Kerberos has nothing for the user.
 * Under Heimdal each test says SKIP (TU_NEEDS_NTLM).
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "gss.h"
#include "gssutil.h"
#include "testutil.h"

/* ---- NTLM --------------------------------------------------------------- */

static void check_ntlm_props(gu_side *c, gu_side *s, negstream_protection p)
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
    gu_side c, s;

    gu_client_ntlm(&c, p);
    gu_server_default(&s, p);
    gu_run_pair(&c, &s, tcp);
    gu_expect_ok(&c, &s);
    check_ntlm_props(&c, &s, p);
    if (negstream__gss_is_framed(&c.g)) {
        size_t len;

        gu_roundtrips(&c, &s);
        if (!negstream__gss_is_encrypted(&c.g)) {
            /* .NET's NTLM Sign layout: 16-byte signature + plaintext */
            len = gu_roundtrip(&c.g, &s.g, 200, 5);
            ck_assert_uint_eq(len, 16 + 200);
        }
        gu_attacks(&c, &s);
    }
    gu_side_done(&c);
    gu_side_done(&s);

    if (p == NEGSTREAM_PROTECTION_NONE)
        return;
    gu_client_ntlm(&c, p);
    gu_server_default(&s, p);
    gu_run_pair(&c, &s, !tcp);
    gu_expect_ok(&c, &s);
    gu_reorder(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
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
    gu_side c, s;
    uint8_t in[40], tok[100];
    negstream_error e;
    ssize_t t;
    size_t off;

    TU_NEEDS_NTLM(true);

    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_SIGN);
    gu_server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_ok(&c, &s);
    ck_assert(!negstream__gss_is_encrypted(&c.g));
    gu_fill(in, sizeof(in), 3);
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
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

/* A None client always uses NTLM, even when asked for "kerberos". */
START_TEST(ntlm_forced_for_none)
{
    gu_side c, s;

    TU_NEEDS_NTLM(true);

    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_NONE);
    c.co.mechanism = "kerberos";
    gu_server_default(&s, NEGSTREAM_PROTECTION_NONE);
    gu_run_pair(&c, &s, false);
    gu_expect_ok(&c, &s);
    ck_assert(c.g.is_ntlm && s.g.is_ntlm);
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

/* User and domain without a password: gss-ntlmssp finds the password in
 * NTLM_USER_FILE. */
START_TEST(ntlm_user_file)
{
    gu_side c, s;

    TU_NEEDS_NTLM(true);

    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.password = NULL;
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, true);
    gu_expect_ok(&c, &s);
    check_ntlm_props(&c, &s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_roundtrips(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

/* SPNEGO falls back to NTLM when Kerberos has nothing for the user. */
static void spnego_fallback(negstream_protection p)
{
    gu_side c, s;

    gu_no_ccache();
    gu_client_ntlm(&c, p);
    c.co.mechanism = "negotiate";
    gu_server_default(&s, p);
    gu_run_pair(&c, &s, true);
    gu_expect_ok(&c, &s);
    check_ntlm_props(&c, &s, p);
    gu_roundtrips(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
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

static Suite *ntlm_suite(void)
{
    Suite *su = suite_create("gss_ntlm");
    TCase *tc;

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
    suite_add_tcase(su, tc);

    tc = tcase_create("spnego_fallback");
    tcase_add_test(tc, spnego_ntlm_fallback_eas);
    tcase_add_test(tc, spnego_ntlm_fallback_sign);
    suite_add_tcase(su, tc);
    return su;
}

int main(void)
{
    SRunner *sr = srunner_create(ntlm_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
