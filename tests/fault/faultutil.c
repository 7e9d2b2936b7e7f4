/*
 * faultutil.c - helpers shared by the fault suites.
 */
#include "config.h"

#include <check.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "faultutil.h"
#include "shim.h"

struct server_arg {
    negstream            *s;
    int                   fd;
    negstream_protection  level;
    const char           *mech;
    negstream_error       err;
    int                   rc;
};

static void *server_main(void *p)
{
    struct server_arg *sa = p;
    negstream_server_options so;

    negstream_server_options_init(&so);
    so.protection = sa->level;
    if (sa->mech != NULL)
        so.mechanism = sa->mech;
    sa->rc = negstream_authenticate_as_server(sa->s, &so, &sa->err);
    /* A server that fails before its first message (no keytab, say)
     * sends nothing; an application would close the connection, which
     * is what tells the client.  Do the same, or the client waits. */
    if (sa->rc < 0)
        shutdown(sa->fd, SHUT_RDWR);
    return NULL;
}

bool fu_auth_fds(const tu_auth *a, int cfd, int sfd, negstream **client,
                 negstream **server, negstream_error *cerr,
                 negstream_error *serr)
{
    return fu_auth_fds_mech(a, NULL, cfd, sfd, client, server, cerr, serr);
}

bool fu_auth_fds_mech(const tu_auth *a, const char *server_mech, int cfd,
                      int sfd, negstream **client, negstream **server,
                      negstream_error *cerr, negstream_error *serr)
{
    struct server_arg sa;
    negstream_client_options co;
    negstream_error ce;
    pthread_t t;
    negstream *c;
    int crc;

    c = negstream_new(cfd, false, &ce);
    ck_assert_msg(c != NULL, "negstream_new: %s", ce.message);
    memset(&sa, 0, sizeof(sa));
    sa.s = negstream_new(sfd, false, &sa.err);
    ck_assert_msg(sa.s != NULL, "negstream_new: %s", sa.err.message);
    sa.fd = sfd;
    sa.level = a->server_level;
    sa.mech = server_mech;
    ck_assert_int_eq(pthread_create(&t, NULL, server_main, &sa), 0);

    tu_client_options(a, &co);
    crc = negstream_authenticate_as_client(c, &co, &ce);
    if (crc < 0)
        shutdown(cfd, SHUT_RDWR);
    pthread_join(t, NULL);
    if (cerr != NULL)
        *cerr = ce;
    if (serr != NULL)
        *serr = sa.err;
    *client = c;
    *server = sa.s;
    return crc == 0 && sa.rc == 0;
}

bool fu_clean_io_failure(const negstream_error *e)
{
    return (e->code == NEGSTREAM_E_IO || e->code == NEGSTREAM_E_NOMEM) &&
           e->message[0] != '\0';
}

bool fu_clean_auth_failure(const negstream_error *e)
{
    return (e->code == NEGSTREAM_E_AUTHENTICATION ||
            e->code == NEGSTREAM_E_INVALID_CREDENTIAL ||
            e->code == NEGSTREAM_E_IO || e->code == NEGSTREAM_E_NOMEM) &&
           e->message[0] != '\0';
}

bool fu_contains(const void *hay, size_t hay_len, const void *needle,
                 size_t n)
{
    return n > 0 && memmem(hay, hay_len, needle, n) != NULL;
}

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

void fu_count_sigpipe(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
    sigpipes = 0;
}

int fu_sigpipes(void)
{
    return (int)sigpipes;
}

bool faultshim_load(faultshim_api *api)
{
    faultshim_api a;

    *(void **)&a.io_arm = dlsym(RTLD_DEFAULT, "faultshim_io_arm");
    *(void **)&a.io_disarm_all = dlsym(RTLD_DEFAULT,
                                       "faultshim_io_disarm_all");
    *(void **)&a.io_stats = dlsym(RTLD_DEFAULT, "faultshim_io_stats");
    *(void **)&a.malloc_arm = dlsym(RTLD_DEFAULT, "faultshim_malloc_arm");
    *(void **)&a.malloc_disarm = dlsym(RTLD_DEFAULT,
                                       "faultshim_malloc_disarm");
    *(void **)&a.malloc_count = dlsym(RTLD_DEFAULT,
                                      "faultshim_malloc_count");
    *(void **)&a.thread_fail = dlsym(RTLD_DEFAULT, "faultshim_thread_fail");
    *(void **)&a.thread_failures = dlsym(RTLD_DEFAULT,
                                         "faultshim_thread_failures");
    *(void **)&a.secret_watch = dlsym(RTLD_DEFAULT,
                                      "faultshim_secret_watch");
    *(void **)&a.secret_ignore_thread =
        dlsym(RTLD_DEFAULT, "faultshim_secret_ignore_thread");
    *(void **)&a.secret_hits = dlsym(RTLD_DEFAULT, "faultshim_secret_hits");
    *(void **)&a.secret_clear = dlsym(RTLD_DEFAULT,
                                      "faultshim_secret_clear");
    if (a.io_arm == NULL || a.io_disarm_all == NULL || a.io_stats == NULL ||
        a.malloc_arm == NULL || a.malloc_disarm == NULL ||
        a.malloc_count == NULL || a.thread_fail == NULL ||
        a.thread_failures == NULL || a.secret_watch == NULL ||
        a.secret_ignore_thread == NULL || a.secret_hits == NULL ||
        a.secret_clear == NULL)
        return false;
    *api = a;
    return true;
}
