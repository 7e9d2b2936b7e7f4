/*
 * producer_chain.c - a callback chain fed by a producer thread.
 *
 * callback_chain.c chains writes over a buffer that is complete before
 * the chain starts.  Real data often comes from another thread, at its
 * own pace: then the chain runs dry whenever the writes catch up with the
 * producer, and must start again when the next data comes, without
 * losing or reordering anything, and end cleanly when the producer is
 * done.  The rules that make that work, all under one mutex:
 *
 *   - 'running' is true while a write is pending or about to be begun;
 *     only whoever turns it from false to true may begin a write (the
 *     producer, restarting a dry chain), or the callback of the pending
 *     write (continuing the chain);
 *   - the callback takes the next chunk off the queue, or, finding it
 *     empty, sets running = false, in the same critical section: a chunk
 *     queued a moment later then sees running == false and restarts the
 *     chain itself, so no chunk is ever left behind;
 *   - one write pending at a time and a FIFO queue keep the order;
 *   - the callback begins the next write before it ends its own result
 *     (negstream(7): the unended result keeps the stream valid), and the
 *     chain is over when the producer has closed the queue, no write is
 *     running and every result begun has been ended.
 *
 * The producer sends records in bursts; before some bursts it waits until
 * the chain has run dry, so the restart path runs every time, and it
 * sleeps a little between others.  A collector thread on 127.0.0.1
 * checks that the records arrive complete and in order.
 *
 *   usage: producer_chain [TARGET]    (default: $NEGTEST_SPN, else
 *                                       host/localhost)
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <arpa/inet.h>
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

#define NBURSTS 400
#define MAX_PER_CHUNK 40               /* records per chunk: 1..40 */

/* One chunk of records: the buffer of one write, queued until begun. */
struct chunk {
    struct chunk *next;
    struct feed *feed;
    size_t len;
    char data[];
};

/* The queue between the producer and the chain. */
struct feed {
    negstream *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* running, done and failed changed */
    struct chunk *head, *tail; /* queued, not begun yet */
    bool running;              /* a write is pending or being begun */
    bool closed;               /* the producer will queue nothing more */
    bool failed;
    negstream_error err;       /* the first failure */
    unsigned long begun, ended, restarts;
};

static void on_written(negstream_async *ar);

static int fail(const char *what, const negstream_error *err)
{
    fprintf(stderr, "producer_chain: %s: %s [%s]\n", what, err->message,
            negstream_status_name(err->code));
    return 1;
}

/* Records the first failure; caller holds f->mu. */
static void feed_failed_locked(struct feed *f, const negstream_error *err)
{
    if (!f->failed) {
        f->failed = true;
        f->err = *err;
    }
    pthread_cond_broadcast(&f->cv);
}

/* Begins the write of c, whose turn it is (the caller set running).
 * Counted before begin_write: the callback may run before it returns. */
static void begin_chunk(struct feed *f, struct chunk *c)
{
    negstream_error err;

    pthread_mutex_lock(&f->mu);
    f->begun++;
    pthread_mutex_unlock(&f->mu);
    if (negstream_begin_write(f->s, c->data, c->len, 0, (ssize_t)c->len,
                              on_written, c, &err) != NULL)
        return;
    /* No callback comes for a refused begin: the chain stops here. */
    pthread_mutex_lock(&f->mu);
    f->begun--;
    f->running = false;
    feed_failed_locked(f, &err);
    pthread_mutex_unlock(&f->mu);
    free(c);
}

/* The producer's side: queue c, and restart the chain if it ran dry.
 * Returns -1 once the chain has failed (c is freed). */
static int feed_push(struct feed *f, struct chunk *c)
{
    bool restart = false;

    c->feed = f;
    c->next = NULL;
    pthread_mutex_lock(&f->mu);
    if (f->failed) {
        pthread_mutex_unlock(&f->mu);
        free(c);
        return -1;
    }
    if (f->running) {
        if (f->tail != NULL)
            f->tail->next = c;
        else
            f->head = c;
        f->tail = c;
    } else {
        f->running = true;      /* ours to begin */
        f->restarts++;
        restart = true;
    }
    pthread_mutex_unlock(&f->mu);
    if (restart)
        begin_chunk(f, c);
    return 0;
}

/* The AsyncCallback: runs once per write, on a worker thread. */
static void on_written(negstream_async *ar)
{
    struct chunk *c = negstream_async_state(ar), *next = NULL;
    struct feed *f = c->feed;
    negstream_error err;
    int rc;

    pthread_mutex_lock(&f->mu);
    if (!f->failed && f->head != NULL) {
        next = f->head;                 /* the chain goes on */
        f->head = next->next;
        if (f->head == NULL)
            f->tail = NULL;
    } else {
        f->running = false;             /* dry: the producer restarts it */
    }
    pthread_mutex_unlock(&f->mu);
    rc = negstream_end_write(f->s, ar, &err);   /* frees ar */
    free(c);
    if (next != NULL)
        begin_chunk(f, next);           /* .NET's order: end, then begin */
    pthread_mutex_lock(&f->mu);
    if (rc != 0)
        feed_failed_locked(f, &err);
    f->ended++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* The chain is over: nothing more will come, nothing runs, all ended. */
static bool feed_over_locked(const struct feed *f)
{
    return (f->closed || f->failed) && !f->running && f->ended == f->begun;
}

/* ---- the producer ------------------------------------------------------- */

/* Record k: its number, then some text of a length that varies. */
static size_t make_record(char *buf, size_t cap, unsigned long k)
{
    int n = snprintf(buf, cap, "record %lu %.*s\n", k, (int)(k * 31 % 200),
                     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");

    return (size_t)n;
}

struct producer {
    struct feed *feed;
    unsigned long records;     /* produced */
    int rc;
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    struct feed *f = p->feed;
    unsigned burst;

    p->rc = 1;
    for (burst = 0; burst < NBURSTS; burst++) {
        unsigned chunks = 1 + burst % 5, i;

        if (burst % 4 == 0) {
            /* Let the chain run dry first: the restart path runs. */
            pthread_mutex_lock(&f->mu);
            while (f->running && !f->failed)
                pthread_cond_wait(&f->cv, &f->mu);
            pthread_mutex_unlock(&f->mu);
        } else if (burst % 4 == 2) {
            usleep(200);
        }
        for (i = 0; i < chunks; i++) {
            unsigned n = 1 + (burst * 7 + i) % MAX_PER_CHUNK, r;
            struct chunk *c = malloc(sizeof(*c) + (size_t)n * 300);

            if (c == NULL) {
                fprintf(stderr, "producer_chain: out of memory\n");
                goto out;
            }
            c->len = 0;
            for (r = 0; r < n; r++)
                c->len += make_record(c->data + c->len, 300, p->records++);
            if (feed_push(f, c) != 0)
                goto out;       /* the chain failed; main reports it */
        }
    }
    p->rc = 0;
out:
    pthread_mutex_lock(&f->mu);
    f->closed = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* ---- the collector thread: records in order, then their count back ------ */

struct collector {
    int lfd;
    unsigned long records;
    int rc;
};

static void *collector_main(void *arg)
{
    struct collector *co = arg;
    char line[512], want[512];
    unsigned char reply[8];
    negstream_error err;
    negstream *s = NULL;
    FILE *in = NULL;
    int fd, i;

    co->rc = 1;
    fd = accept(co->lfd, NULL, NULL);
    if (fd < 0) {
        perror("producer_chain: collector: accept");
        goto out;
    }
    s = negstream_new(fd, false, &err);
    if (s == NULL) {
        close(fd);
        fail("collector: negstream_new", &err);
        goto out;
    }
    if (negstream_authenticate_as_server(s, NULL, &err) != 0) {
        fail("collector: authenticate", &err);
        goto out;
    }
    in = negstream_fopen(s, "r");
    if (in == NULL) {
        perror("producer_chain: collector: negstream_fopen");
        goto out;
    }
    while (fgets(line, sizeof(line), in) != NULL) {
        make_record(want, sizeof(want), co->records);
        if (strcmp(line, want) != 0) {
            fprintf(stderr, "producer_chain: record %lu lost or out of "
                    "order: got \"%s\"\n", co->records, line);
            goto out;
        }
        co->records++;
    }
    if (ferror(in)) {
        if (negstream_ferror(in, &err) == 1)
            fail("collector: read", &err);
        goto out;
    }
    fclose(in);
    in = NULL;
    for (i = 0; i < 8; i++)                       /* big-endian */
        reply[i] = (unsigned char)(co->records >> (56 - 8 * i));
    if (negstream_write(s, reply, sizeof(reply), 0, sizeof(reply),
                        &err) < 0) {
        fail("collector: write", &err);
        goto out;
    }
    co->rc = 0;
out:
    if (in != NULL)
        fclose(in);
    negstream_close(s);
    return NULL;
}

/* ---- the client --------------------------------------------------------- */

static int run_client(uint16_t port, const char *target,
                      unsigned long *produced, unsigned long *echoed)
{
    struct sockaddr_in sin;
    negstream_client_options co;
    negstream_error err;
    struct producer p;
    struct feed f;
    pthread_t th;
    unsigned char reply[8];
    size_t got = 0, k;
    int fd, rc = 1;

    memset(&f, 0, sizeof(f));
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        perror("producer_chain: client: connect");
        if (fd >= 0)
            close(fd);
        goto out;
    }
    f.s = negstream_new(fd, false, &err);
    if (f.s == NULL) {
        close(fd);
        fail("client: negstream_new", &err);
        goto out;
    }
    negstream_client_options_init(&co);
    co.target_name = target;
    if (negstream_authenticate_as_client(f.s, &co, &err) != 0) {
        fail("client: authenticate", &err);
        goto out;
    }

    memset(&p, 0, sizeof(p));
    p.feed = &f;
    if (pthread_create(&th, NULL, producer_main, &p) != 0) {
        perror("producer_chain: pthread_create");
        goto out;
    }
    pthread_mutex_lock(&f.mu);
    while (!feed_over_locked(&f))
        pthread_cond_wait(&f.cv, &f.mu);
    pthread_mutex_unlock(&f.mu);
    pthread_join(th, NULL);
    if (f.failed) {
        fail("client: write chain", &f.err);
        goto out;
    }
    if (p.rc != 0)
        goto out;
    printf("client: %lu records in %lu writes; the chain ran dry and was "
           "restarted by the producer %lu times\n", p.records, f.ended,
           f.restarts);
    if (f.restarts < NBURSTS / 4) {
        fprintf(stderr, "producer_chain: the restart path ran only %lu "
                "times\n", f.restarts);
        goto out;
    }
    *produced = p.records;

    /* The end of the data: half-close, then read the collector's count. */
    shutdown(fd, SHUT_WR);
    while (got < sizeof(reply)) {
        ssize_t n = negstream_read(f.s, reply, sizeof(reply), (ssize_t)got,
                                   (ssize_t)(sizeof(reply) - got), &err);

        if (n <= 0) {
            if (n == 0)
                fprintf(stderr, "producer_chain: collector closed early\n");
            else
                fail("client: read", &err);
            goto out;
        }
        got += (size_t)n;
    }
    *echoed = 0;
    for (k = 0; k < 8; k++)
        *echoed = *echoed << 8 | reply[k];
    rc = 0;
out:
    negstream_close(f.s);
    while (f.head != NULL) {            /* left queued by a failure */
        struct chunk *c = f.head;

        f.head = c->next;
        free(c);
    }
    pthread_cond_destroy(&f.cv);
    pthread_mutex_destroy(&f.mu);
    return rc;
}

int main(int argc, char **argv)
{
    const char *target = argc > 1 ? argv[1] : getenv("NEGTEST_SPN");
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    struct collector co;
    unsigned long produced = 0, echoed = 0;
    pthread_t th;
    int rc = 1, crc;

    if (target == NULL)
        target = "host/localhost";
    signal(SIGPIPE, SIG_IGN);
    memset(&co, 0, sizeof(co));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    co.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (co.lfd < 0 || bind(co.lfd, (struct sockaddr *)&sin, len) != 0 ||
        listen(co.lfd, 1) != 0 ||
        getsockname(co.lfd, (struct sockaddr *)&sin, &len) != 0) {
        perror("producer_chain: listen");
        goto out;
    }
    if (pthread_create(&th, NULL, collector_main, &co) != 0) {
        perror("producer_chain: pthread_create");
        goto out;
    }
    crc = run_client(ntohs(sin.sin_port), target, &produced, &echoed);
    if (crc != 0)
        shutdown(co.lfd, SHUT_RDWR);   /* Linux: wakes a pending accept */
    pthread_join(th, NULL);
    if (crc != 0 || co.rc != 0)
        goto out;
    printf("collector: %lu records, complete and in order\n", echoed);
    if (echoed != produced) {
        fprintf(stderr, "producer_chain: MISMATCH: %lu of %lu\n", echoed,
                produced);
        goto out;
    }
    printf("producer_chain: OK\n");
    rc = 0;
out:
    if (co.lfd >= 0)
        close(co.lfd);
    return rc;
}
