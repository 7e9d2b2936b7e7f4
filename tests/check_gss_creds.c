/*
 * check_gss_creds.c - failures of credentials and names between two of
 * our sides: a wrong password, an unknown user or no ticket (Kerberos,
 * SPNEGO and NTLM, also after a Kerberos authentication in the same
 * process), a target the KDC does not know (SPNEGO then falls back to
 * NTLM unless mutual authentication is required), a server named by its
 * service and one whose keytab lacks the service.  Each side gets the
 * right code and message, and nobody hangs.
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "gss.h"
#include "gssutil.h"
#include "testutil.h"

/* ---- credentials: bad, unknown or none ---------------------------------- */

static void bad_creds(const char *mech, const char *user, const char *pw,
                      const char *needle)
{
    gu_side c, s;

    gu_no_ccache();
    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = mech;
    c.co.user = user;
    c.co.password = pw;
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, needle);
    ck_assert_int_eq(c.init_rc, -1);
    /* The client closed its end: the server sees EOF, cleanly. */
    gu_expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "connection closed");
    gu_side_done(&c);
    gu_side_done(&s);
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
    gu_side c, s;

    TU_NEEDS_NTLM(true);

    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.password = "not-the-password";
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, true);
    gu_expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    gu_expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "rejected");
    gu_side_done(&c);
    gu_side_done(&s);
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
    gu_side c, s;

    gu_krb_sides(&c, &s, NULL, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_ok(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);

    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.password = "not-the-password";
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, true);
    gu_expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    ck_assert_uint_eq(negstream__gss_error_code(&s.err), 0x8009030Cu);
    /* what the client read from the wire: logon denied */
    gu_expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "0x8009030C");
    gu_side_done(&c);
    gu_side_done(&s);

    /* an unknown NTLM user, likewise */
    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_SIGN);
    c.co.user = "nosuchuser";
    gu_server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    gu_expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "0x8009030C");
    gu_side_done(&c);
    gu_side_done(&s);

    /* and a wrong password for NTLM inside SPNEGO (no Kerberos for this
     * user: the AUTHENTICATE message is SPNEGO's responseToken) */
    gu_no_ccache();
    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = "negotiate";
    c.co.password = "not-the-password";
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, true);
    gu_expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    gu_expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "0x8009030C");
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

START_TEST(unknown_user_ntlm)
{
    gu_side c, s;

    TU_NEEDS_NTLM(true);

    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_SIGN);
    c.co.user = "nosuchuser";
    gu_server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    gu_expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, "rejected");
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

/* No Kerberos ticket and default credentials. */
START_TEST(no_ticket_kerberos)
{
    gu_side c, s;

    gu_no_ccache();
    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = "kerberos";
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    /* found at the first step: the server got "logon denied" */
    gu_expect_code(&s, NEGSTREAM_E_INVALID_CREDENTIAL, "rejected");
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

START_TEST(no_ticket_sign)
{
    gu_side c, s;

    gu_no_ccache();
    gu_client_default(&c, NEGSTREAM_PROTECTION_SIGN);
    c.co.mechanism = "kerberos";
    gu_server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    gu_run_pair(&c, &s, false);
    /* Sign acquires the default credentials itself, in client_init */
    gu_expect_code(&c, NEGSTREAM_E_INVALID_CREDENTIAL, NULL);
    ck_assert_int_eq(c.init_rc, -1);
    gu_expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "connection closed");
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

/* ---- names: the target and the service ---------------------------------- */

START_TEST(wrong_service_kerberos)
{
    gu_side c, s;

    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = "kerberos";
    c.co.target_name = "host/nosuchhost";
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, true);
    gu_expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "not found in Kerberos");
    /* the client told the server, which did not hang */
    gu_expect_code(&s, NEGSTREAM_E_AUTHENTICATION, "remote side");
    gu_side_done(&c);
    gu_side_done(&s);
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
    gu_side c, s;

    TU_NEEDS_NTLM(true);

    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.target_name = "host/nosuchhost";
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, false);
    gu_expect_ok(&c, &s);
    ck_assert(c.g.is_ntlm && s.g.is_ntlm);
    ck_assert(!negstream__gss_is_mutual(&c.g));
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST

/* ... unless the client requires mutual authentication. */
START_TEST(wrong_service_negotiate_mutual)
{
    gu_side c, s;

    TU_NEEDS_NTLM(true);

    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.target_name = "host/nosuchhost";
    c.co.require_mutual_auth = true;
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_run_pair(&c, &s, true);
    gu_expect_code(&c, NEGSTREAM_E_AUTHENTICATION, "mutual");
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
    gu_side_done(&c);
    gu_side_done(&s);
}
END_TEST


START_TEST(server_named_service)
{
    gu_side c, s;
    char principal[256];

    snprintf(principal, sizeof(principal), "%s@%s", tu_env("NEGTEST_SPN"),
             tu_env("NEGTEST_REALM"));
    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.target_name = principal;            /* a krb5 principal name */
    c.co.mechanism = "kerberos";
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    s.so.service_name = tu_env("NEGTEST_SPN");
    s.so.mechanism = "kerberos";
    gu_run_pair(&c, &s, false);
    gu_expect_ok(&c, &s);
    ck_assert_str_eq(c.g.peer_name, principal);
    ck_assert_str_eq(s.g.peer_name, tu_env("NEGTEST_USER"));
    gu_side_done(&c);
    gu_side_done(&s);
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

static Suite *creds_suite(void)
{
    Suite *su = suite_create("gss_creds");
    TCase *tc;

    tc = tcase_create("credentials");
    tcase_add_test(tc, bad_password_kerberos);
    tcase_add_test(tc, bad_password_negotiate);
    tcase_add_test(tc, unknown_user_kerberos);
    tcase_add_test(tc, unknown_user_negotiate);
    tcase_add_test(tc, bad_password_ntlm);
    tcase_add_test(tc, unknown_user_ntlm);
    tcase_add_test(tc, bad_password_ntlm_after_kerberos);
    tcase_add_test(tc, no_ticket_kerberos);
    tcase_add_test(tc, no_ticket_sign);
    suite_add_tcase(su, tc);

    tc = tcase_create("names");
    tcase_add_test(tc, wrong_service_kerberos);
    tcase_add_test(tc, wrong_service_negotiate);
    tcase_add_test(tc, wrong_service_negotiate_mutual);
    tcase_add_test(tc, server_named_service);
    tcase_add_test(tc, server_missing_keytab_entry);
    suite_add_tcase(su, tc);
    return su;
}

int main(void)
{
    SRunner *sr = srunner_create(creds_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
