/*
 * wait_on_handle.c - pattern 1: "wait on the handle".
 *
 * A legacy blocking client, converted.  It used to look like this:
 *
 *     for (i = 0; i < NBLOCKS; i++) {
 *         make_block(block, i);             CPU work
 *         sum = checksum(sum, block);       CPU work
 *         write_all(fd, block, BLOCK);      the CPU waits for the network
 *     }
 *
 * With libnegstream the write of block i runs on a library worker
 * (negstream_begin_write) while this thread prepares block i+1 (fills it
 * and checksums it).  Only then does it wait for block i
 * (negstream_async_wait, .NET's AsyncWaitHandle.WaitOne) and collect the
 * outcome (negstream_end_write, which also frees the async result).  Two
 * buffers, at most one write pending: that is all it takes.
 *
 * The program is self-contained: a server thread on 127.0.0.1 receives
 * the data and computes the same checksum; main() compares the two.
 *
 *   usage: wait_on_handle [TARGET]      (default: $NEGTEST_SPN, else
 *                                         host/localhost)
 * Needs Kerberos credentials for the client (a ccache: kinit) and a keytab
 * with TARGET for the server (KRB5_KTNAME); tests/kdc/with-realm provides
 * both.  Exit status 0 when the server saw exactly what was sent.
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "negstream.h"

#define NBLOCKS 32
#define BLOCK   (128 * 1024)   /* two frames and a bit: 64512 * 2 + 2048 */

/* FNV-1a, 64 bits: a checksum cheap to write, costly enough to overlap. */
static uint64_t checksum(uint64_t h, const unsigned char *p, size_t n)
{
    while (n-- > 0) {
        h ^= *p++;
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define CHECKSUM_INIT 0xcbf29ce484222325ULL

/* Block i's contents: xorshift64 seeded with i, reproducible anywhere. */
static void make_block(unsigned char *p, unsigned i)
{
    uint64_t x = 0x9e3779b97f4a7c15ULL * (i + 1);
    size_t k;

    for (k = 0; k < BLOCK; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[k] = (unsigned char)x;
    }
}

static int fail(const char *what, const negstream_error *err)
{
    fprintf(stderr, "wait_on_handle: %s: %s [%s]\n", what, err->message,
            negstream_status_name(err->code));
    return 1;
}

/* ---- the server thread: receive everything, checksum it --------------- */

struct server {
    int lfd;
    uint64_t bytes, sum;
    int rc;
};

static void *server_main(void *arg)
{
    struct server *sv = arg;
    unsigned char *buf = malloc(BLOCK);
    negstream_error err;
    negstream *s = NULL;
    int fd;

    sv->rc = 1;
    sv->sum = CHECKSUM_INIT;
    fd = accept(sv->lfd, NULL, NULL);
    if (fd < 0 || buf == NULL) {
        perror("wait_on_handle: server: accept");
        goto out;
    }
    s = negstream_new(fd, false, &err);   /* the stream owns fd now */
    if (s == NULL) {
        close(fd);
        fail("server: negstream_new", &err);
        goto out;
    }
    /* NULL options: the defaults (any key in the keytab, EncryptAndSign). */
    if (negstream_authenticate_as_server(s, NULL, &err) != 0) {
        fail("server: authenticate", &err);
        goto out;
    }
    printf("server: %s authenticated with %s\n", negstream_remote_identity(s),
           negstream_authentication_type(s));
    for (;;) {
        ssize_t n = negstream_read(s, buf, BLOCK, 0, BLOCK, &err);

        if (n < 0) {
            fail("server: read", &err);
            goto out;
        }
        if (n == 0)                 /* the client closed: clean EOF */
            break;
        sv->sum = checksum(sv->sum, buf, (size_t)n);
        sv->bytes += (uint64_t)n;
    }
    sv->rc = 0;
out:
    negstream_close(s);             /* NULL is fine */
    free(buf);
    return NULL;
}

/* ---- the client: the converted loop ------------------------------------ */

static int run_client(uint16_t port, const char *target, uint64_t *sum_out)
{
    struct sockaddr_in sin;
    negstream_client_options co;
    negstream_error err;
    negstream *s = NULL;
    negstream_async *pending = NULL;
    unsigned char *buf[2] = { NULL, NULL };
    uint64_t sum = CHECKSUM_INIT;
    unsigned i, early = 0;
    int fd, rc = 1;

    buf[0] = malloc(BLOCK);
    buf[1] = malloc(BLOCK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (buf[0] == NULL || buf[1] == NULL || fd < 0 ||
        connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        perror("wait_on_handle: client: connect");
        if (fd >= 0)
            close(fd);
        goto out;
    }
    s = negstream_new(fd, false, &err);
    if (s == NULL) {
        close(fd);
        fail("client: negstream_new", &err);
        goto out;
    }
    negstream_client_options_init(&co);     /* EncryptAndSign, Negotiate */
    co.target_name = target;
    if (negstream_authenticate_as_client(s, &co, &err) != 0) {
        fail("client: authenticate", &err);
        goto out;
    }
    printf("client: authenticated to %s, encrypted=%s\n",
           negstream_remote_identity(s),
           negstream_is_encrypted(s) ? "yes" : "no");

    make_block(buf[0], 0);
    sum = checksum(sum, buf[0], BLOCK);
    for (i = 0; i < NBLOCKS; i++) {
        unsigned char *cur = buf[i % 2], *next = buf[(i + 1) % 2];

        /* Start block i; the library borrows 'cur' until the write is
         * complete, so we must not touch it before end_write. */
        pending = negstream_begin_write(s, cur, BLOCK, 0, BLOCK, NULL, NULL,
                                        &err);
        if (pending == NULL) {
            fail("client: begin_write", &err);
            goto out;
        }
        /* The other work: prepare block i+1 in the other buffer. */
        if (i + 1 < NBLOCKS) {
            make_block(next, i + 1);
            sum = checksum(sum, next, BLOCK);
        }
        /* Was the network faster than our CPU work? (just to show it) */
        if (negstream_async_is_completed(pending))
            early++;
        /* Wait on the handle, then end: end_write reports the outcome and
         * frees 'pending' (exactly once, even on failure). */
        negstream_async_wait(pending, -1);
        if (negstream_end_write(s, pending, &err) != 0) {
            pending = NULL;
            fail("client: end_write", &err);
            goto out;
        }
        pending = NULL;
    }
    printf("client: sent %d blocks of %d bytes; %u writes had finished "
           "before the next block was ready\n", NBLOCKS, BLOCK, early);
    *sum_out = sum;
    rc = 0;
out:
    /* close(): the server reads a clean EOF after the last frame. */
    negstream_close(s);
    free(buf[1]);
    free(buf[0]);
    return rc;
}

int main(int argc, char **argv)
{
    const char *target = argc > 1 ? argv[1] : getenv("NEGTEST_SPN");
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    struct server sv;
    pthread_t th;
    uint64_t sum = 0;
    int rc = 1, crc;

    if (target == NULL)
        target = "host/localhost";
    /* A closed peer shows as an error code, not as a signal. */
    signal(SIGPIPE, SIG_IGN);
    memset(&sv, 0, sizeof(sv));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);   /* port 0: any free */
    sv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (sv.lfd < 0 || bind(sv.lfd, (struct sockaddr *)&sin, len) != 0 ||
        listen(sv.lfd, 1) != 0 ||
        getsockname(sv.lfd, (struct sockaddr *)&sin, &len) != 0) {
        perror("wait_on_handle: listen");
        goto out;
    }
    if (pthread_create(&th, NULL, server_main, &sv) != 0) {
        perror("wait_on_handle: pthread_create");
        goto out;
    }
    crc = run_client(ntohs(sin.sin_port), target, &sum);
    if (crc != 0)
        shutdown(sv.lfd, SHUT_RDWR);   /* Linux: wakes a pending accept */
    pthread_join(th, NULL);
    if (crc != 0 || sv.rc != 0)
        goto out;
    printf("server: received %" PRIu64 " bytes, checksum %016" PRIx64 "\n",
           sv.bytes, sv.sum);
    printf("client: checksum of what was sent        %016" PRIx64 "\n", sum);
    if (sv.bytes != (uint64_t)NBLOCKS * BLOCK || sv.sum != sum) {
        fprintf(stderr, "wait_on_handle: MISMATCH\n");
        goto out;
    }
    printf("wait_on_handle: OK\n");
    rc = 0;
out:
    if (sv.lfd >= 0)
        close(sv.lfd);
    return rc;
}
