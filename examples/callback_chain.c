/*
 * callback_chain.c - pattern 2: a chain of callbacks.
 *
 * .NET code often sends a large buffer like this:
 *
 *     void OnWritten(IAsyncResult ar) {
 *         stream.EndWrite(ar);
 *         if (more) stream.BeginWrite(buf, off, n, OnWritten, state);
 *         else done.Set();
 *     }
 *
 * The same in C: every callback ends its own write (negstream_end_write
 * does not block inside the callback: the result is already complete) and
 * begins the next piece.  Nothing waits in between; main() sleeps on a
 * condition variable until the last callback says the chain is over.
 *
 * The callbacks run on a library worker thread, never on main(), and no
 * library lock is held while they run, so calling begin_write from one is
 * allowed.  They must not block for long (they share the worker pool).
 *
 * Self-contained: a server thread on 127.0.0.1 counts what it receives
 * and sends the count back; main() checks it against what was sent.
 *
 *   usage: callback_chain [TARGET]    (default: $NEGTEST_SPN, else
 *                                       host/localhost)
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
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

#define TOTAL (3 * 1024 * 1024 + 12345)  /* any size: not a block multiple */
#define PIECE 100000                     /* one begin_write per piece */

/* Everything the callbacks share with main(). */
struct chain {
    negstream *s;
    const unsigned char *data;      /* borrowed by every pending write */
    size_t len;                     /* of data */
    size_t off;                     /* next byte to send */
    size_t inflight;                /* bytes of the pending write */
    unsigned writes;
    pthread_mutex_t mu;             /* guards done and err for main() */
    pthread_cond_t cv;
    bool done;
    negstream_error err;            /* code NEGSTREAM_OK on success */
};

static void on_written(negstream_async *ar);

/* Ends the chain: record the outcome and wake main(). */
static void chain_finish(struct chain *c, const negstream_error *err)
{
    pthread_mutex_lock(&c->mu);
    if (err != NULL)
        c->err = *err;
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Begins the write of the next piece.  The chain's fields are written
 * before begin_write: its callback may run on another worker before
 * begin_write has even returned here. */
static int chain_next(struct chain *c, negstream_error *err)
{
    size_t n = c->len - c->off < PIECE ? c->len - c->off : PIECE;

    c->inflight = n;
    c->writes++;
    /* buffer, buffer_len, offset, count: .NET's (buffer, offset, count). */
    return negstream_begin_write(c->s, c->data, c->len, (ssize_t)c->off,
                                 (ssize_t)n, on_written, c, err)
           != NULL ? 0 : -1;
}

/* The AsyncCallback: runs once per write, on a worker thread. */
static void on_written(negstream_async *ar)
{
    struct chain *c = negstream_async_state(ar);   /* the 'state' pointer */
    negstream_error err;

    /* End it here: reports the outcome and frees 'ar'. */
    if (negstream_end_write(c->s, ar, &err) != 0) {
        chain_finish(c, &err);
        return;
    }
    c->off += c->inflight;
    if (c->off == c->len) {
        chain_finish(c, NULL);
        return;
    }
    if (chain_next(c, &err) != 0)
        chain_finish(c, &err);      /* no callback comes for a NULL begin */
}

static int fail(const char *what, const negstream_error *err)
{
    fprintf(stderr, "callback_chain: %s: %s [%s]\n", what, err->message,
            negstream_status_name(err->code));
    return 1;
}

/* ---- the server thread: count, then send the count back ---------------- */

struct server {
    int lfd;
    uint64_t count;
    int rc;
};

static void *server_main(void *arg)
{
    struct server *sv = arg;
    static unsigned char buf[64 * 1024];   /* only this thread uses it */
    unsigned char reply[8];
    negstream_error err;
    negstream *s = NULL;
    int fd, i;

    sv->rc = 1;
    fd = accept(sv->lfd, NULL, NULL);
    if (fd < 0) {
        perror("callback_chain: server: accept");
        goto out;
    }
    s = negstream_new(fd, false, &err);
    if (s == NULL) {
        close(fd);
        fail("server: negstream_new", &err);
        goto out;
    }
    if (negstream_authenticate_as_server(s, NULL, &err) != 0) {
        fail("server: authenticate", &err);
        goto out;
    }
    for (;;) {
        ssize_t n = negstream_read(s, buf, sizeof(buf), 0, sizeof(buf),
                                   &err);

        if (n < 0) {
            fail("server: read", &err);
            goto out;
        }
        if (n == 0)          /* the client shut down its sending side */
            break;
        sv->count += (uint64_t)n;
    }
    for (i = 0; i < 8; i++)                       /* big-endian */
        reply[i] = (unsigned char)(sv->count >> (56 - 8 * i));
    if (negstream_write(s, reply, sizeof(reply), 0, sizeof(reply),
                        &err) < 0) {
        fail("server: write", &err);
        goto out;
    }
    sv->rc = 0;
out:
    negstream_close(s);
    return NULL;
}

/* ---- the client --------------------------------------------------------- */

static int run_client(uint16_t port, const char *target, uint64_t *echoed)
{
    struct sockaddr_in sin;
    negstream_client_options co;
    struct chain c;
    unsigned char reply[8];
    size_t got = 0, k;
    int fd, rc = 1;

    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    c.len = TOTAL;
    c.data = malloc(TOTAL);
    if (c.data == NULL)
        goto out;
    for (k = 0; k < TOTAL; k++)
        ((unsigned char *)c.data)[k] = (unsigned char)(k * 7 + k / 4099);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        perror("callback_chain: client: connect");
        if (fd >= 0)
            close(fd);
        goto out;
    }
    c.s = negstream_new(fd, false, &c.err);
    if (c.s == NULL) {
        close(fd);
        fail("client: negstream_new", &c.err);
        goto out;
    }
    negstream_client_options_init(&co);
    co.target_name = target;
    if (negstream_authenticate_as_client(c.s, &co, &c.err) != 0) {
        fail("client: authenticate", &c.err);
        goto out;
    }

    /* Start the chain, then sleep until its last callback wakes us. */
    if (chain_next(&c, &c.err) != 0) {
        fail("client: begin_write", &c.err);
        goto out;
    }
    pthread_mutex_lock(&c.mu);
    while (!c.done)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    if (c.err.code != NEGSTREAM_OK) {
        fail("client: write chain", &c.err);
        goto out;
    }
    printf("client: sent %zu bytes in %u writes, each begun by the "
           "previous write's callback\n", c.off, c.writes);

    /* MS-NNS has no "end of data" message: half-close the socket so the
     * server reads EOF, then read its 8-byte answer. */
    shutdown(fd, SHUT_WR);
    while (got < sizeof(reply)) {
        ssize_t n = negstream_read(c.s, reply, sizeof(reply), (ssize_t)got,
                                   (ssize_t)(sizeof(reply) - got), &c.err);

        if (n <= 0) {
            if (n == 0)
                fprintf(stderr, "callback_chain: server closed early\n");
            else
                fail("client: read", &c.err);
            goto out;
        }
        got += (size_t)n;
    }
    *echoed = 0;
    for (k = 0; k < 8; k++)
        *echoed = *echoed << 8 | reply[k];
    rc = 0;
out:
    negstream_close(c.s);
    free((void *)c.data);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    return rc;
}

int main(int argc, char **argv)
{
    const char *target = argc > 1 ? argv[1] : getenv("NEGTEST_SPN");
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    struct server sv;
    pthread_t th;
    uint64_t echoed = 0;
    int rc = 1, crc;

    if (target == NULL)
        target = "host/localhost";
    signal(SIGPIPE, SIG_IGN);
    memset(&sv, 0, sizeof(sv));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (sv.lfd < 0 || bind(sv.lfd, (struct sockaddr *)&sin, len) != 0 ||
        listen(sv.lfd, 1) != 0 ||
        getsockname(sv.lfd, (struct sockaddr *)&sin, &len) != 0) {
        perror("callback_chain: listen");
        goto out;
    }
    if (pthread_create(&th, NULL, server_main, &sv) != 0) {
        perror("callback_chain: pthread_create");
        goto out;
    }
    crc = run_client(ntohs(sin.sin_port), target, &echoed);
    if (crc != 0)
        shutdown(sv.lfd, SHUT_RDWR);   /* Linux: wakes a pending accept */
    pthread_join(th, NULL);
    if (crc != 0 || sv.rc != 0)
        goto out;
    printf("server: counted %" PRIu64 " bytes; client sent %d\n", echoed,
           TOTAL);
    if (echoed != TOTAL) {
        fprintf(stderr, "callback_chain: MISMATCH\n");
        goto out;
    }
    printf("callback_chain: OK\n");
    rc = 0;
out:
    if (sv.lfd >= 0)
        close(sv.lfd);
    return rc;
}
