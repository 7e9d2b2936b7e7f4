/*
 * poll_fd.c - pattern 3: many connections, one thread, one poll() loop.
 *
 * Every async result has a file descriptor (negstream_async_fd) that
 * becomes readable once the operation has completed.  An event loop puts
 * those descriptors into its poll() set next to its own (here the
 * listening socket) and, when one fires, calls the matching end_* - which
 * then never blocks - and begins the next step.  The blocking work
 * (authentication round trips, reading frames) runs on the library's
 * workers; the loop itself never waits on a single client.
 *
 * Each connection goes through three steps:
 *   AUTH   negstream_begin_authenticate_as_server
 *   READ   negstream_begin_read, again and again, counting bytes, until
 *          the client half-closes (end_read returns 0)
 *   REPLY  negstream_begin_write of the 8-byte count; then close.
 *
 * Self-contained: NCLIENTS client threads (plain blocking calls, each a
 * different amount of data) connect to the loop on 127.0.0.1 and check
 * the count they get back.
 *
 *   usage: poll_fd [TARGET]     (default: $NEGTEST_SPN, else host/localhost)
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "negstream.h"

#define NCLIENTS 8
#define RBUF     (64 * 1024)

static const char *target;
static uint16_t port;

static void print_err(const char *who, const char *what,
                      const negstream_error *err)
{
    fprintf(stderr, "poll_fd: %s: %s: %s [%s]\n", who, what, err->message,
            negstream_status_name(err->code));
}

static size_t client_size(int i)
{
    return (size_t)(i + 1) * 150000 + (size_t)i;   /* all different */
}

/* ---- the server: one thread, one poll() -------------------------------- */

enum phase { AUTH, READ, REPLY };

struct conn {
    negstream *s;
    negstream_async *ar;         /* the one pending operation */
    enum phase phase;
    uint64_t count;
    unsigned char buf[RBUF];     /* borrowed by the pending read */
    unsigned char reply[8];      /* borrowed by the pending write */
};

/* Frees a connection; its pending result, if any, is completed by
 * negstream_close (DISPOSED or CANCELED) and must still be ended once. */
static void conn_free(struct conn *c)
{
    negstream_async *ar = c->ar;

    negstream_close(c->s);
    if (ar != NULL) {
        if (c->phase == AUTH)
            negstream_end_authenticate_as_server(c->s, ar, NULL);
        else if (c->phase == READ)
            negstream_end_read(c->s, ar, NULL);
        else
            negstream_end_write(c->s, ar, NULL);
    }
    free(c);
}

/* The operation of c has completed: end it and begin the next one.
 * Returns 1 while the connection goes on, 0 when it is finished, -1 on
 * failure.  No call here blocks: the result is complete. */
static int conn_step(struct conn *c)
{
    negstream_async *ar = c->ar;
    negstream_error err;
    ssize_t n;
    int i;

    c->ar = NULL;                          /* every end_* frees it */
    switch (c->phase) {
    case AUTH:
        if (negstream_end_authenticate_as_server(c->s, ar, &err) != 0) {
            print_err("server", "authenticate", &err);
            return -1;
        }
        printf("server: %s authenticated with %s\n",
               negstream_remote_identity(c->s),
               negstream_authentication_type(c->s));
        c->phase = READ;
        break;
    case READ:
        n = negstream_end_read(c->s, ar, &err);
        if (n < 0) {
            print_err("server", "read", &err);
            return -1;
        }
        if (n == 0) {                      /* the client half-closed */
            for (i = 0; i < 8; i++)
                c->reply[i] = (unsigned char)(c->count >> (56 - 8 * i));
            c->phase = REPLY;
            c->ar = negstream_begin_write(c->s, c->reply, 8, 0, 8, NULL,
                                          NULL, &err);
            if (c->ar == NULL) {
                print_err("server", "begin_write", &err);
                return -1;
            }
            return 1;
        }
        c->count += (uint64_t)n;
        break;
    case REPLY:
        if (negstream_end_write(c->s, ar, &err) != 0) {
            print_err("server", "write", &err);
            return -1;
        }
        printf("server: %s sent %" PRIu64 " bytes\n",
               negstream_remote_identity(c->s), c->count);
        return 0;
    }
    c->ar = negstream_begin_read(c->s, c->buf, RBUF, 0, RBUF, NULL, NULL,
                                 &err);
    if (c->ar == NULL) {
        print_err("server", "begin_read", &err);
        return -1;
    }
    return 1;
}

/* Accepts one connection and begins its authentication. */
static struct conn *conn_accept(int lfd)
{
    negstream_error err;
    struct conn *c;
    int fd;

    fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
        perror("poll_fd: server: accept");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->s = negstream_new(fd, false, &err);
    if (c->s == NULL) {
        print_err("server", "negstream_new", &err);
        close(fd);
        free(c);
        return NULL;
    }
    c->phase = AUTH;
    /* No callback: completion is seen through negstream_async_fd. */
    c->ar = negstream_begin_authenticate_as_server(c->s, NULL, NULL, NULL,
                                                   &err);
    if (c->ar == NULL) {
        print_err("server", "begin_authenticate_as_server", &err);
        conn_free(c);
        return NULL;
    }
    return c;
}

/* Serves NCLIENTS connections.  Returns the number that failed. */
static int serve(int lfd)
{
    struct conn *conns[NCLIENTS];
    struct pollfd pfd[NCLIENTS + 1];
    struct conn *owner[NCLIENTS + 1];
    int accepted = 0, finished = 0, failed = 0, nconns = 0, i, k;

    while (finished < NCLIENTS) {
        int n = 0;

        /* Rebuilt every turn: an async fd belongs to its result and is
         * gone once the result has been ended. */
        if (accepted < NCLIENTS) {
            pfd[n].fd = lfd;
            pfd[n].events = POLLIN;
            owner[n++] = NULL;
        }
        for (i = 0; i < nconns; i++) {
            int fd = negstream_async_fd(conns[i]->ar);

            if (fd < 0) {
                /* No descriptor (e.g. EMFILE): poll() would ignore a
                 * negative fd and wait for ever.  Give this one up. */
                perror("poll_fd: negstream_async_fd");
                conn_free(conns[i]);
                conns[i--] = conns[--nconns];
                failed++;
                finished++;
                continue;
            }
            pfd[n].fd = fd;
            pfd[n].events = POLLIN;
            owner[n++] = conns[i];
        }
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("poll_fd: poll");
            return failed + NCLIENTS - finished;
        }
        for (k = 0; k < n; k++) {
            struct conn *c = owner[k];
            int r;

            if (pfd[k].revents == 0)
                continue;
            if (c == NULL) {                   /* the listening socket */
                accepted++;
                c = conn_accept(lfd);
                if (c == NULL) {
                    failed++;
                    finished++;
                } else {
                    conns[nconns++] = c;
                }
                continue;
            }
            r = conn_step(c);
            if (r == 1)
                continue;
            failed += r < 0;
            finished++;
            conn_free(c);
            for (i = 0; i < nconns && conns[i] != c; i++)
                continue;
            conns[i] = conns[--nconns];
        }
    }
    return failed;
}

/* ---- the clients: ordinary blocking code on threads --------------------- */

struct client {
    int index;
    int ok;
};

static void *client_main(void *arg)
{
    struct client *cl = arg;
    size_t size = client_size(cl->index), got = 0, k;
    unsigned char *data = malloc(size), reply[8];
    negstream_client_options co;
    negstream_error err;
    struct sockaddr_in sin;
    negstream *s = NULL;
    uint64_t count = 0;
    int fd;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (data == NULL || fd < 0 ||
        connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        perror("poll_fd: client: connect");
        if (fd >= 0)
            close(fd);
        goto out;
    }
    s = negstream_new(fd, false, &err);
    if (s == NULL) {
        close(fd);
        print_err("client", "negstream_new", &err);
        goto out;
    }
    negstream_client_options_init(&co);
    co.target_name = target;
    if (negstream_authenticate_as_client(s, &co, &err) != 0) {
        print_err("client", "authenticate", &err);
        goto out;
    }
    for (k = 0; k < size; k++)
        data[k] = (unsigned char)(k + (size_t)cl->index);
    if (negstream_write(s, data, size, 0, (ssize_t)size, &err) < 0) {
        print_err("client", "write", &err);
        goto out;
    }
    shutdown(fd, SHUT_WR);           /* the server's end_read returns 0 */
    while (got < 8) {
        ssize_t n = negstream_read(s, reply, 8, (ssize_t)got,
                                   (ssize_t)(8 - got), &err);

        if (n <= 0) {
            if (n < 0)
                print_err("client", "read", &err);
            goto out;
        }
        got += (size_t)n;
    }
    for (k = 0; k < 8; k++)
        count = count << 8 | reply[k];
    cl->ok = count == size;
    printf("client %d: sent %zu bytes, server counted %" PRIu64 "%s\n",
           cl->index, size, count, cl->ok ? "" : "  MISMATCH");
out:
    negstream_close(s);
    free(data);
    return NULL;
}

int main(int argc, char **argv)
{
    struct client cl[NCLIENTS];
    pthread_t th[NCLIENTS];
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int lfd, i, started = 0, failed = NCLIENTS, rc = 1;

    target = argc > 1 ? argv[1] : getenv("NEGTEST_SPN");
    if (target == NULL)
        target = "host/localhost";
    signal(SIGPIPE, SIG_IGN);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, len) != 0 ||
        listen(lfd, NCLIENTS) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sin, &len) != 0) {
        perror("poll_fd: listen");
        goto out;
    }
    port = ntohs(sin.sin_port);
    for (i = 0; i < NCLIENTS; i++) {
        cl[i].index = i;
        cl[i].ok = 0;
        if (pthread_create(&th[i], NULL, client_main, &cl[i]) != 0) {
            perror("poll_fd: pthread_create");
            break;
        }
        started++;
    }
    /* Clients that never started count as failed, and the loop would
     * wait for them forever: run it only with all of them. */
    if (started == NCLIENTS)
        failed = serve(lfd);
    else
        shutdown(lfd, SHUT_RDWR);
    for (i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        if (!cl[i].ok)
            failed++;
    }
    if (failed != 0) {
        fprintf(stderr, "poll_fd: %d failure(s)\n", failed);
        goto out;
    }
    printf("poll_fd: OK: %d clients served by one poll() loop\n", NCLIENTS);
    rc = 0;
out:
    if (lfd >= 0)
        close(lfd);
    return rc;
}
