/*
 * check_fault_krb.c - Kerberos infrastructure faults: the KDC stopped or
 * unreachable, an expired ticket, a keytab without the service's key.
 * Each must end in a clean INVALID_CREDENTIAL or AUTHENTICATION error
 * whose message says what to fix, on both sides, and never in a hang.
 *
 * Runs under tests/kdc/with-realm (tests/fault/krb.krb).  Each attempt
 * runs in a child process, because it changes the environment the
 * Kerberos library reads (KRB5_CONFIG, KRB5CCNAME, KRB5_KTNAME) and so
 * that an alarm can end a hang as a failure; the child reports both
 * sides' outcomes through a pipe.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultutil.h"

/* Seconds an attempt may take before it counts as a hang.  A stopped KDC
 * costs MIT krb5 about 30 s of retries. */
#define HANG_LIMIT 240

typedef struct outcome {
    int             client_rc, server_rc;
    negstream_error client, server;
} outcome;

/* Copies an error field by field: the tail of the message buffer is
 * uninitialised, and the outcome goes through a pipe whole. */
static void copy_err(negstream_error *dst, const negstream_error *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->code = src->code;
    dst->sys_errno = src->sys_errno;
    dst->gss_major = src->gss_major;
    dst->gss_minor = src->gss_minor;
    snprintf(dst->message, sizeof(dst->message), "%s", src->message);
}

/*
 * Runs one authentication as 'a' says in a child process, after setting
 * the environment in 'env' (NAME, VALUE pairs, NULL-terminated), and
 * returns what both sides got.  The test fails if the child hangs past
 * HANG_LIMIT or dies; 'resume' (if > 0) gets SIGCONT first, so that a
 * failure never leaves the realm's KDC stopped for the next tests.
 */
static void attempt(const char *const *env, const tu_auth *a,
                    const char *server_mech, outcome *out, pid_t resume)
{
    int p[2], status;
    ssize_t n;
    pid_t pid;

    ck_assert_int_eq(pipe(p), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        negstream *c = NULL, *s = NULL;
        negstream_error ce, se;
        outcome o;
        int fds[2], i;

        close(p[0]);
        alarm(HANG_LIMIT);
        for (i = 0; env != NULL && env[i] != NULL; i += 2)
            setenv(env[i], env[i + 1], 1);
        memset(&o, 0, sizeof(o));
        tu_tcp_pair(fds);
        fu_auth_fds_mech(a, server_mech, fds[0], fds[1], &c, &s, &ce, &se);
        copy_err(&o.client, &ce);
        copy_err(&o.server, &se);
        o.client_rc = o.client.code == NEGSTREAM_OK ? 0 : -1;
        o.server_rc = o.server.code == NEGSTREAM_OK ? 0 : -1;
        negstream_close(c);
        negstream_close(s);
        n = write(p[1], &o, sizeof(o));
        _exit(n == (ssize_t)sizeof(o) ? 0 : 1);
    }
    close(p[1]);
    do {
        n = read(p[0], out, sizeof(*out));
    } while (n < 0 && errno == EINTR);
    close(p[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    if (resume > 0)
        kill(resume, SIGCONT);
    ck_assert_msg(!WIFSIGNALED(status) || WTERMSIG(status) != SIGALRM,
                  "authentication still running after %d s: a hang",
                  HANG_LIMIT);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                  n == (ssize_t)sizeof(*out),
                  "the attempt died (status 0x%x)", status);
}

static void expect_failure(const char *side, const negstream_error *e,
                           const char *hint)
{
    ck_assert_msg(e->code == NEGSTREAM_E_INVALID_CREDENTIAL ||
                  e->code == NEGSTREAM_E_AUTHENTICATION,
                  "%s: %s: %s", side, negstream_status_name(e->code),
                  e->message);
    if (hint != NULL)
        ck_assert_msg(strcasestr(e->message, hint) != NULL,
                      "%s: the message does not mention '%s': %s", side,
                      hint, e->message);
}

/* A copy of the realm's krb5.conf (path freed by the caller) whose KDC
 * is a port nobody listens on (dead), or, for a stopped KDC, the real
 * one with request_timeout = 3 s.  MIT krb5 1.20 ignores that setting
 * (newer versions honour it) and waits on a silent KDC for about 27 s,
 * its fixed retry schedule: the one slow test of the fault suites. */
static char *kdc_config(bool dead)
{
    const char *conf = tu_env("KRB5_CONFIG");
    const char *port = tu_env("NEGTEST_KDC_PORT");
    char from[64], line[1024], *path;
    FILE *in, *out;
    int fd, dead_port;
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);

    /* A port that was free a moment ago: bind, learn it, close. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    dead_port = ntohs(sa.sin_port);
    close(fd);

    path = malloc(4096);
    ck_assert_ptr_nonnull(path);
    snprintf(path, 4096, "%s/%s-kdc-%ld.conf", tu_env("NEGTEST_REALM_DIR"),
             dead ? "dead" : "slow", (long)getpid());
    snprintf(from, sizeof(from), "127.0.0.1:%s", port);
    in = fopen(conf, "r");
    ck_assert_msg(in != NULL, "%s: %s", conf, strerror(errno));
    out = fopen(path, "w");
    ck_assert_ptr_nonnull(out);
    while (fgets(line, sizeof(line), in) != NULL) {
        char *at = strstr(line, from);

        if (!dead) {
            fputs(line, out);
            if (strstr(line, "[libdefaults]") != NULL)
                fputs("    request_timeout = 3\n", out);
        } else if (at != NULL) {
            *at = '\0';
            fprintf(out, "%s127.0.0.1:%d%s", line, dead_port,
                    at + strlen(from));
        } else {
            fputs(line, out);
        }
    }
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
    return path;
}

/* The KDC stopped (SIGSTOP: it accepts connections and never answers),
 * a ticket needed for a service not yet in the ccache. */
START_TEST(test_kdc_stopped)
{
    pid_t kdc = (pid_t)atol(tu_env("NEGTEST_KDC_PID"));
    char *conf = kdc_config(false);
    const char *env[] = { "KRB5_CONFIG", conf, NULL };
    tu_auth a;
    outcome o;

    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    /* Nothing in this program asks for HTTP/localhost, so its ticket is
     * not cached and the client must ask the KDC. */
    a.target = tu_env("NEGTEST_HTTP_SPN");
    a.client_mech = "kerberos";
    ck_assert_int_eq(kill(kdc, SIGSTOP), 0);
    attempt(env, &a, NULL, &o, kdc);
    unlink(conf);
    free(conf);
    ck_assert_int_eq(o.client_rc, -1);
    expect_failure("client", &o.client, "KDC");
    /* The server hears of it (an error message or the connection
     * closing) instead of waiting. */
    ck_assert_int_eq(o.server_rc, -1);
}
END_TEST

/* The client's krb5.conf names a port without a KDC.  _i: a service
 * ticket from the ccache's TGT (TGS), or a password (AS exchange). */
START_TEST(test_kdc_unreachable)
{
    char *conf = kdc_config(true);
    const char *env[] = { "KRB5_CONFIG", conf, NULL };
    tu_auth a;
    outcome o;

    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    a.target = tu_env("NEGTEST_HTTP_SPN");
    a.client_mech = "kerberos";
    a.password_creds = _i == 1;
    attempt(env, &a, NULL, &o, 0);
    ck_assert_int_eq(o.client_rc, -1);
    expect_failure("client", &o.client, "KDC");
    ck_assert_int_eq(o.server_rc, -1);
    unlink(conf);
    free(conf);
}
END_TEST

/* Runs kinit for alice into ccache with the given lifetime. */
static void kinit(const char *ccache, const char *lifetime)
{
    int p[2], status;
    pid_t pid;
    const char *pw = tu_env("NEGTEST_PASSWORD");
    ssize_t w;

    ck_assert_int_eq(pipe(p), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(p[0], 0);
        close(p[0]);
        close(p[1]);
        execlp("kinit", "kinit", "-l", lifetime, "-c", ccache,
               tu_env("NEGTEST_USER"), (char *)NULL);
        _exit(127);
    }
    close(p[0]);
    w = write(p[1], pw, strlen(pw));
    ck_assert_int_eq(w, (ssize_t)strlen(pw));
    ck_assert_int_eq(write(p[1], "\n", 1), 1);
    close(p[1]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "kinit failed (status 0x%x)", status);
}

/* A ccache whose TGT expired a moment ago. */
START_TEST(test_expired_ticket)
{
    char cc[4096];
    /* Without the client keytab: MIT would quietly get a fresh TGT from
     * it (KRB5_CLIENT_KTNAME) instead of failing. */
    const char *env[] = { "KRB5CCNAME", cc, "KRB5_CLIENT_KTNAME",
                          "FILE:/nonexistent/negstream-no-client.keytab",
                          NULL };
    tu_auth a;
    outcome o;

    snprintf(cc, sizeof(cc), "FILE:%s/expired-%ld.ccache",
             tu_env("NEGTEST_REALM_DIR"), (long)getpid());
    kinit(cc, "1s");
    sleep(2);                   /* let it expire: not a timed assertion */
    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    a.client_mech = "kerberos";
    attempt(env, &a, NULL, &o, 0);
    ck_assert_int_eq(o.client_rc, -1);
    ck_assert_msg(o.client.code == NEGSTREAM_E_INVALID_CREDENTIAL,
                  "client: %s: %s", negstream_status_name(o.client.code),
                  o.client.message);
    expect_failure("client", &o.client, "expired");
    ck_assert_int_eq(o.server_rc, -1);
    unlink(cc + 5);
}
END_TEST

/* The server's keytab lacks host/localhost: _i 0, alice's keytab (keys,
 * but not the service's); 1, no keytab file at all; 2, an empty file.
 * Kerberos on both sides: with SPNEGO, a server without a Kerberos key
 * falls back to NTLM (gss-ntlmssp and NTLM_USER_FILE), and succeeds. */
START_TEST(test_keytab_without_service_key)
{
    char kt[4096];
    const char *env[] = { "KRB5_KTNAME", kt, NULL };
    tu_auth a;
    outcome o;

    if (_i == 0) {
        snprintf(kt, sizeof(kt), "%s", tu_env("KRB5_CLIENT_KTNAME"));
    } else {
        snprintf(kt, sizeof(kt), "FILE:%s/keytab-%d-%ld",
                 tu_env("NEGTEST_REALM_DIR"), _i, (long)getpid());
        if (_i == 2) {
            FILE *f = fopen(kt + 5, "w");

            ck_assert_ptr_nonnull(f);
            fclose(f);
        }
    }
    tu_auth_init(&a, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    a.client_mech = "kerberos";
    attempt(env, &a, "kerberos", &o, 0);
    ck_assert_int_eq(o.server_rc, -1);
    /* No usable key at all is a credential problem; a keytab with other
     * keys fails when the client's ticket cannot be decrypted. */
    ck_assert_msg(o.server.code == (_i == 0 ? NEGSTREAM_E_AUTHENTICATION
                                            : NEGSTREAM_E_INVALID_CREDENTIAL),
                  "server: %s (gss 0x%x/%u): %s",
                  negstream_status_name(o.server.code),
                  (unsigned)o.server.gss_major, (unsigned)o.server.gss_minor,
                  o.server.message);
    expect_failure("server", &o.server, "keytab");
    ck_assert_int_eq(o.client_rc, -1);
    expect_failure("client", &o.client, NULL);
    if (_i == 2)
        unlink(kt + 5);
}
END_TEST

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault_krb");
    TCase *t = tcase_create("krb");

    tcase_set_timeout(t, HANG_LIMIT + 60);
    tcase_add_test(t, test_kdc_stopped);
    tcase_add_loop_test(t, test_kdc_unreachable, 0, 2);
    tcase_add_test(t, test_expired_ticket);
    tcase_add_loop_test(t, test_keytab_without_service_key, 0, 3);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fault_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
