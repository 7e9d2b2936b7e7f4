/*
 * check_stream_auth.c - authentication through the public stream API
 * against a real MIT realm: what both sides report before and after it
 * (with a ticket, a password, an NTLM name with control characters), and
 * its failures (a wrong service, an unknown user, a bad password, a lower
 * protection level, mutual authentication NTLM cannot give): the right
 * code on each side, nobody hangs, the failure stays with the stream.
 * Run under tests/kdc/with-realm (tests/stream_auth.krb).
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "negstream.h"
#include "testutil.h"

/* ---- what an authenticated pair reports --------------------------------- */

START_TEST(test_properties)
{
    negstream *c, *s;
    negstream_error e;
    int fds[2];

    /* Before authentication: everything false / NULL. */
    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert(!negstream_is_authenticated(c));
    ck_assert(!negstream_is_encrypted(c));
    ck_assert(!negstream_is_signed(c));
    ck_assert(!negstream_is_mutually_authenticated(c));
    ck_assert(!negstream_is_server(c));
    ck_assert_ptr_null(negstream_remote_identity(c));
    ck_assert_ptr_null(negstream_authentication_type(c));
    negstream_close(c);
    close(fds[1]);

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert(negstream_is_authenticated(c));
    ck_assert(negstream_is_authenticated(s));
    ck_assert(negstream_is_encrypted(c) && negstream_is_encrypted(s));
    ck_assert(negstream_is_signed(c) && negstream_is_signed(s));
    ck_assert(negstream_is_mutually_authenticated(c));
    ck_assert(!negstream_is_server(c));
    ck_assert(negstream_is_server(s));
    ck_assert_str_eq(negstream_authentication_type(c), "Kerberos");
    ck_assert_str_eq(negstream_authentication_type(s), "Kerberos");
    /* The server sees the client's principal; the client its target. */
    ck_assert_str_eq(negstream_remote_identity(s), tu_env("NEGTEST_USER"));
    ck_assert_str_eq(negstream_remote_identity(c), tu_env("NEGTEST_SPN"));
    ck_assert_int_eq(negstream_impersonation_level(c),
                     NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    negstream_close(c);
    negstream_close(s);

    tu_pair(NEGSTREAM_PROTECTION_SIGN, &c, &s);
    ck_assert(!negstream_is_encrypted(c) && !negstream_is_encrypted(s));
    ck_assert(negstream_is_signed(c) && negstream_is_signed(s));
    negstream_close(c);
    negstream_close(s);

    TU_NEEDS_NTLM(true);
    tu_pair(NEGSTREAM_PROTECTION_NONE, &c, &s);
    ck_assert(!negstream_is_encrypted(c) && !negstream_is_signed(c));
    ck_assert(!negstream_is_mutually_authenticated(c));
    ck_assert_str_eq(negstream_authentication_type(c), "NTLM");
    ck_assert_str_eq(negstream_authentication_type(s), "NTLM");
    negstream_close(c);
    negstream_close(s);
}
END_TEST

START_TEST(test_password_credentials)
{
    negstream_error ce, se;
    negstream *c, *s;
    tu_auth a;

    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    a.password_creds = true;
    ck_assert_msg(tu_auth_pair(&a, &c, &s, &ce, &se), "%s / %s", ce.message,
                  se.message);
    ck_assert_str_eq(negstream_remote_identity(s), tu_env("NEGTEST_USER"));
    tu_transfer(c, s, 1000, 1);
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/*
 * A client name with control characters (an NTLM user the server's user
 * file knows, so the authentication succeeds): negstream_remote_identity
 * shows each as '?'.
 * The name is the peer's to choose; a terminal or a log that shows it
 * must not be driven by it.
 */
START_TEST(test_remote_identity_scrubbed)
{
    /* ASCII only: gss-ntlmssp compares names in the locale's charset,
     * ASCII in the tests' C locale (UTF-8 is kept: tests/check_frame.c) */
    static const char user[] = "ev\x01il\x1b[31m\x7fx";
    static const char shown[] = "ev?il?[31m?x";
    const char *old = getenv("NTLM_USER_FILE");
    char path[600], *saved = old != NULL ? strdup(old) : NULL;
    negstream_client_options co;
    negstream_server_options so;
    negstream_error ce, se;
    negstream *c, *s;
    const char *id;
    int fds[2];
    FILE *f;

    snprintf(path, sizeof(path), "%s/odd-ntlm-users",
             tu_env("NEGTEST_REALM_DIR"));
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s:%s:odd-password-42\n", tu_env("NEGTEST_NTLM_DOMAIN"),
            user);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(setenv("NTLM_USER_FILE", path, 1), 0);

    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = "ntlm";
    co.user = user;
    co.domain = tu_env("NEGTEST_NTLM_DOMAIN");
    co.password = "odd-password-42";
    negstream_server_options_init(&so);
    tu_tcp_pair(fds);
    ck_assert_msg(tu_auth_fds(fds[0], fds[1], false, &co, &so, &c, &s, &ce,
                              &se), "%s / %s", ce.message, se.message);
    id = negstream_remote_identity(s);
    ck_assert_ptr_nonnull(id);
    ck_assert_msg(strstr(id, shown) != NULL &&
                  strlen(id) == strlen(tu_env("NEGTEST_NTLM_DOMAIN")) + 1 +
                                strlen(shown),
                  "remote identity \"%s\"", id);
    tu_transfer(c, s, 1000, 3);
    negstream_close(c);
    negstream_close(s);
    if (saved != NULL)
        setenv("NTLM_USER_FILE", saved, 1);
    free(saved);
    unlink(path);
}
END_TEST

/* ---- authentication failures -------------------------------------------- */

/* Authentication failures: the right code on each side, nobody hangs, the
 * failure is stored, and a retry on the same stream is refused. */
static void expect_auth_failure(const tu_auth *a, negstream_status cexp,
                                negstream_status sexp)
{
    negstream_client_options co;
    negstream_error ce, se, e;
    negstream *c, *s;
    char b[1];

    ck_assert(!tu_auth_pair(a, &c, &s, &ce, &se));
    ck_assert_msg(ce.code == cexp, "client: expected %s, got %s: %s",
                  negstream_status_name(cexp), negstream_status_name(ce.code),
                  ce.message);
    if (sexp != NEGSTREAM_OK)
        ck_assert_msg(se.code == sexp, "server: expected %s, got %s: %s",
                      negstream_status_name(sexp),
                      negstream_status_name(se.code), se.message);
    else
        ck_assert_msg(se.code != NEGSTREAM_OK, "server succeeded");
    ck_assert(ce.message[0] != '\0' && se.message[0] != '\0');
    ck_assert(!negstream_is_authenticated(c));
    ck_assert(!negstream_is_authenticated(s));
    ck_assert(negstream_is_server(s));
    /* The stored failure comes back from read and write. */
    ck_assert_int_eq(negstream_write(c, "x", 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, ce.code);
    ck_assert_int_eq(negstream_read(s, b, 1, 0, 1, &e), -1);
    ck_assert_int_eq(e.code, se.code);
    /* No retry on a failed stream. */
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    negstream_close(c);
    negstream_close(s);
}

START_TEST(test_wrong_service_name)
{
    tu_auth a;

    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    a.target = "host/no-such-host.invalid";
    a.client_mech = "kerberos";
    expect_auth_failure(&a, NEGSTREAM_E_AUTHENTICATION, NEGSTREAM_OK);
}
END_TEST

START_TEST(test_unknown_user)
{
    negstream_client_options co;
    negstream_error e;
    negstream *c;
    int fds[2];

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = "kerberos";
    co.user = "nosuchuser";
    co.password = "whatever";
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_INVALID_CREDENTIAL, "%s: %s",
                  negstream_status_name(e.code), e.message);
    negstream_close(c);
    close(fds[1]);
}
END_TEST

START_TEST(test_bad_password)
{
    negstream_client_options co;
    negstream_error e;
    negstream *c;
    int fds[2];

    tu_tcp_pair(fds);
    c = negstream_new(fds[0], false, &e);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = "Kerberos";     /* any case */
    co.user = tu_env("NEGTEST_USER");
    co.password = "certainly-not-the-password";
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_INVALID_CREDENTIAL, "%s: %s",
                  negstream_status_name(e.code), e.message);
    negstream_close(c);
    close(fds[1]);
}
END_TEST

/* A server requiring EncryptAndSign refuses a client that offers less. */
START_TEST(test_protection_downgrade_refused)
{
    tu_auth a;

    tu_auth_init(&a, NEGSTREAM_PROTECTION_SIGN);
    a.server_level = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    expect_auth_failure(&a, NEGSTREAM_E_AUTHENTICATION,
                        NEGSTREAM_E_AUTHENTICATION);
    TU_NEEDS_NTLM(true);
    tu_auth_init(&a, NEGSTREAM_PROTECTION_NONE);
    a.server_level = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    expect_auth_failure(&a, NEGSTREAM_E_AUTHENTICATION,
                        NEGSTREAM_E_AUTHENTICATION);
}
END_TEST

START_TEST(test_require_mutual_auth)
{
    negstream_client_options co;
    negstream_error e;
    negstream *c;
    int fds[2];
    pid_t pid;

    /* NTLM cannot give mutual authentication: a client that requires it
     * fails, whatever the server does.  The server runs in a child. */
    tu_tcp_pair(fds);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        negstream *s = negstream_new(fds[1], false, NULL);

        close(fds[0]);
        negstream_authenticate_as_server(s, NULL, NULL);
        negstream_close(s);
        _exit(0);
    }
    close(fds[1]);
    c = negstream_new(fds[0], false, &e);
    negstream_client_options_init(&co);
    co.target_name = tu_env("NEGTEST_SPN");
    co.mechanism = "ntlm";
    co.user = tu_env("NEGTEST_NTLM_USER");
    co.domain = tu_env("NEGTEST_NTLM_DOMAIN");
    co.password = tu_env("NEGTEST_NTLM_PASSWORD");
    co.require_mutual_auth = true;
    ck_assert_int_eq(negstream_authenticate_as_client(c, &co, &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_AUTHENTICATION, "%s: %s",
                  negstream_status_name(e.code), e.message);
    negstream_close(c);
    waitpid(pid, NULL, 0);
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("stream_auth");
    TCase *t;

    t = tcase_create("properties");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_properties);
    tcase_add_test(t, test_password_credentials);
    tcase_add_test(t, test_remote_identity_scrubbed);
    suite_add_tcase(s, t);

    t = tcase_create("failures");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_wrong_service_name);
    tcase_add_test(t, test_unknown_user);
    tcase_add_test(t, test_bad_password);
    tcase_add_test(t, test_protection_downgrade_refused);
    tcase_add_test(t, test_require_mutual_auth);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(auth_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
