/*
 * check_delegation.c - Kerberos delegation through libnegstream, in the
 * test realm over TCP on 127.0.0.1: alice delegates to server A
 * (host/localhost), A stores the credential in a FILE: ccache and
 * authenticates as alice to server B (HTTP/localhost); what happens
 * without a forwardable ticket; the errors of
 * negstream_store_delegated_credentials; the client's ccache_name option.
 */
#include "config.h"

#include <check.h>
#include <gssapi/gssapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "negstream.h"
#include "stream.h"
#include "testutil.h"

/* A path in the realm's directory, as a "FILE:" ccache name. */
static const char *ccache_path(const char *leaf)
{
    static __thread char buf[4][512];
    static __thread int next;
    char *b = buf[next++ % 4];

    snprintf(b, sizeof(buf[0]), "FILE:%s/%s", tu_env("NEGTEST_REALM_DIR"),
             leaf);
    return b;
}

/* Any later use of the default credentials (ccache, and the client keytab
 * MIT falls back to) fails: what a test proves it does not rely on.
 * Restored by restore_default_credentials (for CK_FORK=no). */
static char *saved_ccname, *saved_ktname;

static void hide_default_credentials(void)
{
    saved_ccname = strdup(tu_env("KRB5CCNAME"));
    saved_ktname = strdup(tu_env("KRB5_CLIENT_KTNAME"));
    ck_assert(saved_ccname != NULL && saved_ktname != NULL);
    ck_assert_int_eq(setenv("KRB5CCNAME",
                            ccache_path("no-such-ccache"), 1), 0);
    ck_assert_int_eq(setenv("KRB5_CLIENT_KTNAME",
                            ccache_path("no-such-keytab"), 1), 0);
}

static void restore_default_credentials(void)
{
    ck_assert_int_eq(setenv("KRB5CCNAME", saved_ccname, 1), 0);
    ck_assert_int_eq(setenv("KRB5_CLIENT_KTNAME", saved_ktname, 1), 0);
    free(saved_ccname);
    free(saved_ktname);
    saved_ccname = saved_ktname = NULL;
}

static void client_opts(negstream_client_options *co, const char *mech,
                        const char *target, negstream_impersonation imp)
{
    negstream_client_options_init(co);
    co->target_name = target;
    co->mechanism = mech;
    co->impersonation = imp;
}

static void server_opts(negstream_server_options *so, const char *service,
                        negstream_impersonation required)
{
    negstream_server_options_init(so);
    so->service_name = service;
    so->impersonation = required;
}

static void auth_ok(const negstream_client_options *co,
                    const negstream_server_options *so, negstream **cs,
                    negstream **ss)
{
    negstream_error ce, se;
    int fds[2];

    tu_tcp_pair(fds);
    ck_assert_msg(tu_auth_fds(fds[0], fds[1], false, co, so, cs, ss, &ce,
                              &se),
                  "client %s [%s], server %s [%s]",
                  negstream_status_name(ce.code), ce.message,
                  negstream_status_name(se.code), se.message);
}

/*
 * Without gss_store_cred_into (Heimdal 7.8) storing is NOT_SUPPORTED:
 * asserts that on 'ss' and prints one SKIP line for the rest of 'test'.
 * False where storing exists (MIT).
 */
static bool store_unsupported(negstream *ss, const char *test, int i)
{
#if HAVE_GSS_STORE_CRED_INTO
    (void)ss;
    (void)test;
    (void)i;
    return false;
#else
    negstream_error e;

    ck_assert_int_eq(negstream_store_delegated_credentials(
                         ss, ccache_path("never-written"), &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_NOT_SUPPORTED &&
                  strstr(e.message, "gss_store_cred_into") != NULL,
                  "%s: %s", negstream_status_name(e.code), e.message);
    ck_assert_int_ne(access(ccache_path("never-written") + 5, F_OK), 0);
    printf("SKIP: %s (iteration %d): the rest stores delegated "
           "credentials, which needs gss_store_cred_into (not in this "
           "GSSAPI library)\n", test, i);
    fflush(stdout);
    return true;
#endif
}

static void exchange(negstream *from, negstream *to)
{
    char buf[5];

    tu_write_all(from, "hello", 5);
    tu_read_all(to, buf, 5);
    ck_assert(memcmp(buf, "hello", 5) == 0);
}

/* alice -> A (delegates) -> A stores -> A as alice -> B.  _i: 0 Kerberos,
 * 1 SPNEGO (which carries Kerberos and its delegation). */
START_TEST(test_delegate_store_and_use)
{
    const char *mech = _i == 0 ? "kerberos" : "negotiate";
    const char *stored = ccache_path(_i == 0 ? "deleg-krb5" : "deleg-spnego");
    negstream_client_options co;
    negstream_server_options so;
    negstream *alice, *a_srv, *a_cli, *b_srv;
    negstream_error e;

    client_opts(&co, mech, tu_env("NEGTEST_SPN"),
                NEGSTREAM_IMPERSONATION_DELEGATION);
    server_opts(&so, tu_env("NEGTEST_SPN"),
                NEGSTREAM_IMPERSONATION_DELEGATION);
    auth_ok(&co, &so, &alice, &a_srv);
    ck_assert_int_eq(negstream_impersonation_level(a_srv),
                     NEGSTREAM_IMPERSONATION_DELEGATION);
    ck_assert_str_eq(negstream_remote_identity(a_srv), tu_env("NEGTEST_USER"));
    if (store_unsupported(a_srv, __func__, _i)) {
        exchange(alice, a_srv);
        negstream_close(alice);
        negstream_close(a_srv);
        return;
    }
    ck_assert_msg(negstream_store_delegated_credentials(a_srv, stored,
                                                         &e) == 0,
                  "%s: %s", negstream_status_name(e.code), e.message);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    /* Twice: the ccache is replaced, not refused. */
    ck_assert_msg(negstream_store_delegated_credentials(a_srv, stored,
                                                         &e) == 0,
                  "%s: %s", negstream_status_name(e.code), e.message);
    exchange(alice, a_srv);

    /* A, as alice, towards B: only the stored ccache can make that
     * work, since the default ccache and client keytab are gone. */
    hide_default_credentials();
    client_opts(&co, "kerberos", tu_env("NEGTEST_HTTP_SPN"),
                NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    co.ccache_name = stored;
    server_opts(&so, tu_env("NEGTEST_HTTP_SPN"),
                NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    auth_ok(&co, &so, &a_cli, &b_srv);
    restore_default_credentials();
    ck_assert_str_eq(negstream_remote_identity(b_srv), tu_env("NEGTEST_USER"));
    exchange(a_cli, b_srv);
    exchange(b_srv, a_cli);

    negstream_close(a_cli);
    negstream_close(b_srv);
    negstream_close(alice);
    negstream_close(a_srv);
}
END_TEST

/* alice's ticket, not forwardable (kinit -F), in its own ccache. */
static const char *nonforwardable_ccache(void)
{
    const char *cc = ccache_path("nofwd");
    const char *kt = tu_env("KRB5_CLIENT_KTNAME");
    char cmd[2048];

    snprintf(cmd, sizeof(cmd), "kinit -F -k -t '%s' -c '%s' '%s' "
             ">/dev/null 2>&1", kt, cc, tu_env("NEGTEST_USER"));
    ck_assert_msg(system(cmd) == 0, "failed: %s", cmd);
    return cc;
}

/*
 * Without a forwardable TGT MIT drops GSS_C_DELEG_FLAG quietly: the
 * authentication succeeds at Impersonation level and nothing is
 * delegated; a server that requires Delegation refuses it (1790).
 */
START_TEST(test_not_forwardable)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream *cs, *ss;
    negstream_error ce, se, e;
    int fds[2];

#if !HAVE_GSS_ACQUIRE_CRED_FROM
    /* test_client_ccache_name asserts NOT_SUPPORTED for ccache_name */
    printf("SKIP: %s: needs ccache_name, i.e. gss_acquire_cred_from (not "
           "in this GSSAPI library)\n", __func__);
    fflush(stdout);
    return;
#endif
    client_opts(&co, "kerberos", tu_env("NEGTEST_SPN"),
                NEGSTREAM_IMPERSONATION_DELEGATION);
    co.ccache_name = nonforwardable_ccache();
    server_opts(&so, NULL, NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    auth_ok(&co, &so, &cs, &ss);
    ck_assert_int_eq(negstream_impersonation_level(ss),
                     NEGSTREAM_IMPERSONATION_IMPERSONATION);
    ck_assert_int_eq(negstream_store_delegated_credentials(
                         ss, ccache_path("never-written"), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_msg(strstr(e.message, "forwardable") != NULL, "%s", e.message);
    ck_assert_int_ne(access(ccache_path("never-written") + 5, F_OK), 0);
    negstream_close(cs);
    negstream_close(ss);

    server_opts(&so, NULL, NEGSTREAM_IMPERSONATION_DELEGATION);
    tu_tcp_pair(fds);
    ck_assert(!tu_auth_fds(fds[0], fds[1], false, &co, &so, &cs, &ss, &ce,
                           &se));
    ck_assert_int_eq(se.code, NEGSTREAM_E_AUTHENTICATION);
    ck_assert_msg(strstr(se.message, "server requires Delegation") != NULL,
                  "%s", se.message);
    ck_assert_int_eq(ce.code, NEGSTREAM_E_AUTHENTICATION);
    ck_assert_msg(strstr(ce.message, "error 1790") != NULL, "%s",
                  ce.message);
    negstream_close(cs);
    negstream_close(ss);
}
END_TEST

/*
 * A delegated credential does not outlive a refused authentication: here
 * the client delegates but sends no channel bindings to a server whose
 * Extended Protection is Always.
 */
START_TEST(test_refusal_releases_delegation)
{
    static const unsigned char cb[] = "tls-server-end-point:0123456789";
    negstream_client_options co;
    negstream_server_options so;
    negstream *cs, *ss;
    negstream_error ce, se;
    int fds[2];

    /* (tests/bindings.krb asserts that Always is NOT_SUPPORTED there) */
    if (tu_skip_under_heimdal(__func__, 0, true, "Extended Protection "
                              "Always is not supported (no "
                              "GSS_C_CHANNEL_BOUND_FLAG)"))
        return;
    client_opts(&co, "kerberos", tu_env("NEGTEST_SPN"),
                NEGSTREAM_IMPERSONATION_DELEGATION);
    server_opts(&so, NULL, NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    so.extended_protection = NEGSTREAM_EXTENDED_PROTECTION_ALWAYS;
    so.channel_binding = cb;
    so.channel_binding_len = sizeof(cb) - 1;
    tu_tcp_pair(fds);
    ck_assert(!tu_auth_fds(fds[0], fds[1], false, &co, &so, &cs, &ss, &ce,
                           &se));
    ck_assert_msg(strstr(se.message, "sent none") != NULL, "%s",
                  se.message);
    /* The context was complete and delegated (the check is after it). */
    ck_assert(ss->gss.complete);
    ck_assert(ss->gss.ret_flags & GSS_C_DELEG_FLAG);
    ck_assert(ss->gss.deleg_cred == GSS_C_NO_CREDENTIAL);
    negstream_close(cs);
    negstream_close(ss);
}
END_TEST

START_TEST(test_store_errors)
{
    negstream_client_options co;
    negstream_server_options so;
    negstream *cs, *ss, *fresh;
    negstream_error e;
    int fds[2];

    ck_assert_int_eq(negstream_store_delegated_credentials(NULL, "FILE:x",
                                                           &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);

    tu_tcp_pair(fds);
    fresh = negstream_new(fds[1], false, &e);
    ck_assert_ptr_nonnull(fresh);
    ck_assert_int_eq(negstream_store_delegated_credentials(fresh, NULL, &e),
                     -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_NULL);
    ck_assert_int_eq(negstream_store_delegated_credentials(
                         fresh, ccache_path("x"), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_msg(strstr(e.message, "not authenticated") != NULL, "%s",
                  e.message);
    negstream_close(fresh);
    close(fds[0]);

    /* A delegating pair: the client side has nothing to store. */
    client_opts(&co, "kerberos", tu_env("NEGTEST_SPN"),
                NEGSTREAM_IMPERSONATION_DELEGATION);
    server_opts(&so, NULL, NEGSTREAM_IMPERSONATION_DELEGATION);
    auth_ok(&co, &so, &cs, &ss);
    ck_assert_int_eq(negstream_store_delegated_credentials(
                         cs, ccache_path("x"), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_msg(strstr(e.message, "client") != NULL, "%s", e.message);
    if (store_unsupported(ss, __func__, 0)) {
        negstream_close(cs);
        negstream_close(ss);
        return;
    }
    /* A ccache that cannot be written: the delegated one stays usable. */
    ck_assert_int_eq(negstream_store_delegated_credentials(
                         ss, "FILE:/nonexistent-dir/negtest/cc", &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_IO && e.gss_major != 0 &&
                  strstr(e.message, "storing the delegated") != NULL,
                  "%s: %s", negstream_status_name(e.code), e.message);
    ck_assert_int_eq(negstream_store_delegated_credentials(
                         ss, ccache_path("after-failure"), &e), 0);
    negstream_close(cs);
    negstream_close(ss);

    /* A client that did not ask (Identification), and NTLM. */
    client_opts(&co, "kerberos", tu_env("NEGTEST_SPN"),
                NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    server_opts(&so, NULL, NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    auth_ok(&co, &so, &cs, &ss);
    ck_assert_int_eq(negstream_store_delegated_credentials(
                         ss, ccache_path("x"), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_msg(strstr(e.message, "delegated no credentials") != NULL,
                  "%s", e.message);
    negstream_close(cs);
    negstream_close(ss);

    client_opts(&co, "ntlm", tu_env("NEGTEST_SPN"),
                NEGSTREAM_IMPERSONATION_DELEGATION);
    co.user = tu_env("NEGTEST_NTLM_USER");
    co.domain = tu_env("NEGTEST_NTLM_DOMAIN");
    co.password = tu_env("NEGTEST_NTLM_PASSWORD");
    auth_ok(&co, &so, &cs, &ss);
    ck_assert_int_eq(negstream_store_delegated_credentials(
                         ss, ccache_path("x"), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_OPERATION);
    ck_assert_int_ne(access(ccache_path("x") + 5, F_OK), 0);
    negstream_close(cs);
    negstream_close(ss);
}
END_TEST

/* ccache_name: the named ccache is used (with the default credentials
 * gone), for Kerberos and SPNEGO, and a missing one (with no client keytab
 * to fill it from) is INVALID_CREDENTIAL. */
START_TEST(test_client_ccache_name)
{
    char default_cc[512];
    negstream_client_options co;
    negstream_server_options so;
    negstream *cs, *ss;
    negstream_error ce, se;
    int fds[2];

    snprintf(default_cc, sizeof(default_cc), "%s", tu_env("KRB5CCNAME"));
    hide_default_credentials();
    client_opts(&co, _i == 0 ? "kerberos" : "negotiate",
                tu_env("NEGTEST_SPN"),
                NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    co.ccache_name = default_cc;
    server_opts(&so, NULL, NEGSTREAM_IMPERSONATION_IDENTIFICATION);
#if !HAVE_GSS_ACQUIRE_CRED_FROM
    /* refused before anything is acquired or sent; the server hears
     * that the client failed (0x80090304) */
    tu_tcp_pair(fds);
    ck_assert(!tu_auth_fds(fds[0], fds[1], false, &co, &so, &cs, &ss, &ce,
                           &se));
    ck_assert_msg(ce.code == NEGSTREAM_E_NOT_SUPPORTED &&
                  strstr(ce.message, "gss_acquire_cred_from") != NULL,
                  "%s: %s", negstream_status_name(ce.code), ce.message);
    ck_assert_int_eq(se.code, NEGSTREAM_E_AUTHENTICATION);
    negstream_close(cs);
    negstream_close(ss);
    restore_default_credentials();
    printf("SKIP: %s (iteration %d): ccache_name needs "
           "gss_acquire_cred_from (not in this GSSAPI library)\n", __func__,
           _i);
    fflush(stdout);
    return;
#endif
    auth_ok(&co, &so, &cs, &ss);
    ck_assert_str_eq(negstream_remote_identity(ss), tu_env("NEGTEST_USER"));
    ck_assert_str_eq(negstream_authentication_type(ss), "Kerberos");
    negstream_close(cs);
    negstream_close(ss);

    co.ccache_name = ccache_path("no-such-ccache-either");
    tu_tcp_pair(fds);
    ck_assert(!tu_auth_fds(fds[0], fds[1], false, &co, &so, &cs, &ss, &ce,
                           &se));
    ck_assert_msg(ce.code == NEGSTREAM_E_INVALID_CREDENTIAL &&
                  strstr(ce.message, "ccache_name") != NULL, "%s: %s",
                  negstream_status_name(ce.code), ce.message);
    negstream_close(cs);
    negstream_close(ss);
    restore_default_credentials();
}
END_TEST

static Suite *delegation_suite(void)
{
    Suite *s = suite_create("delegation");
    TCase *t = tcase_create("delegation");

    tcase_set_timeout(t, 120);
    tcase_add_loop_test(t, test_delegate_store_and_use, 0, 2);
    tcase_add_test(t, test_not_forwardable);
    tcase_add_test(t, test_refusal_releases_delegation);
    tcase_add_test(t, test_store_errors);
    tcase_add_loop_test(t, test_client_ccache_name, 0, 2);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(delegation_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
