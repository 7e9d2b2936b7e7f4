/*
 * debian/tests/hello.c - a program built against the installed
 * libnegstream-dev (pkg-config negstream) for the autopkgtest: a server
 * thread and a client in one process, over a socketpair, authenticate
 * with Kerberos in the throwaway realm of tests/kdc/with-realm, then send
 * one message each way encrypted.  Public API only.  Exit 0 on success,
 * 1 with a line on stderr on any failure.
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <negstream.h>

static const char ping[] = "ping over an installed libnegstream";
static const char pong[] = "pong";

struct server {
    negstream *s;
    negstream_error err;
    char got[64];
    int rc;
};

static void *serve(void *arg)
{
    struct server *sv = arg;
    negstream_server_options so;
    ssize_t n;

    negstream_server_options_init(&so);
    sv->rc = -1;
    if (negstream_authenticate_as_server(sv->s, &so, &sv->err) < 0)
        return NULL;
    n = negstream_read(sv->s, sv->got, sizeof(sv->got) - 1, 0,
                       (ssize_t)sizeof(sv->got) - 1, &sv->err);
    if (n < 0)
        return NULL;
    sv->got[n] = '\0';
    if (negstream_write(sv->s, pong, sizeof(pong) - 1, 0,
                        (ssize_t)sizeof(pong) - 1, &sv->err) < 0)
        return NULL;
    sv->rc = 0;
    return NULL;
}

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "hello: FAIL: %s: %s\n", what, detail);
    return 1;
}

int main(void)
{
    const char *spn = getenv("NEGTEST_SPN"), *user = getenv("NEGTEST_USER");
    negstream_client_options co;
    negstream_error err;
    struct server sv;
    negstream *c = NULL;
    pthread_t t;
    char got[64];
    int fds[2], rc = 1;
    ssize_t n;

    if (spn == NULL || user == NULL)
        return fail("environment", "run under tests/kdc/with-realm");
    printf("hello: libnegstream %s (header %d.%d.%d)\n", negstream_version(),
           NEGSTREAM_VERSION_MAJOR, NEGSTREAM_VERSION_MINOR,
           NEGSTREAM_VERSION_PATCH);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
        return fail("socketpair", "failed");
    memset(&sv, 0, sizeof(sv));
    c = negstream_new(fds[0], false, &err);
    sv.s = negstream_new(fds[1], false, &err);
    if (c == NULL || sv.s == NULL)
        return fail("negstream_new", err.message);
    if (pthread_create(&t, NULL, serve, &sv) != 0)
        return fail("pthread_create", "failed");

    negstream_client_options_init(&co);
    co.target_name = spn;
    co.mechanism = "kerberos";
    co.require_mutual_auth = true;
    if (negstream_authenticate_as_client(c, &co, &err) < 0) {
        fail("client authentication", err.message);
        shutdown(fds[0], SHUT_RDWR);
        pthread_join(t, NULL);
        goto out;
    }
    if (negstream_write(c, ping, sizeof(ping) - 1, 0,
                        (ssize_t)sizeof(ping) - 1, &err) < 0) {
        fail("client write", err.message);
        shutdown(fds[0], SHUT_RDWR);
        pthread_join(t, NULL);
        goto out;
    }
    n = negstream_read(c, got, sizeof(got) - 1, 0, (ssize_t)sizeof(got) - 1,
                       &err);
    pthread_join(t, NULL);
    if (sv.rc < 0) {
        fail("server", sv.err.message);
        goto out;
    }
    if (n < 0) {
        fail("client read", err.message);
        goto out;
    }
    got[n] = '\0';
    if (strcmp(sv.got, ping) != 0 || strcmp(got, pong) != 0) {
        fail("data", "the messages did not arrive intact");
        goto out;
    }
    if (!negstream_is_encrypted(c) || !negstream_is_mutually_authenticated(c)
        || strcmp(negstream_authentication_type(c), "Kerberos") != 0) {
        fail("properties", "not encrypted, mutual Kerberos");
        goto out;
    }
    if (strcmp(negstream_remote_identity(sv.s), user) != 0) {
        fail("server's remote identity", negstream_remote_identity(sv.s));
        goto out;
    }
    printf("hello: %s authenticated to %s with %s, encrypted, mutual; "
           "\"%s\" and \"%s\" arrived\n", negstream_remote_identity(sv.s),
           negstream_remote_identity(c), negstream_authentication_type(c),
           sv.got, got);
    rc = 0;
out:
    negstream_close(c);
    negstream_close(sv.s);
    return rc;
}
