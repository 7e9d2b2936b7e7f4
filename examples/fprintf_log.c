/*
 * fprintf_log.c - a log shipper's fprintf loop, made authenticated and
 * encrypted by changing three lines.
 *
 * The shipper connects to a collector and fprintf's its log lines into a
 * FILE.  Over a plain socket that FILE came from fdopen(3).  With
 * libnegstream it comes from negstream_fopen(3), on a stream that first
 * authenticated with Kerberos; the loop and everything else stay as they
 * were.  The whole change, in run_client() below:
 *
 *         int fd = connect_loopback(port);
 *     -   FILE *out = fdopen(fd, "w");
 *     +   negstream *s = authenticated_client(fd, target);
 *     +   FILE *out = negstream_fopen(s, "w");
 *         ...
 *     out:
 *     +   negstream_close(s);
 *         return rc;
 *
 * plus authenticated_client(), which every libnegstream client has in
 * some form.  The FILE is fully buffered with one frame's worth (64512
 * bytes), so the lines go out one frame per full buffer, not one frame
 * (about 60 bytes of overhead and a gss_wrap) per line as one
 * negstream_write per line would: bench/stdio measures both against plain
 * send(2) (bench/RESULTS.md).
 *
 * Self-contained: a collector thread on 127.0.0.1 reads the lines with
 * fgets on its own negstream_fopen(s, "r") and checks every one.
 *
 *   usage: fprintf_log [TARGET]    (default: $NEGTEST_SPN, else
 *                                    host/localhost)
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <arpa/inet.h>
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

#define NLINES 20000

/* The log line of record i (what the loop fprintf's). */
#define LINE_FORMAT "2026-12-06T10:%02ld:%02ld web01 app[%d]: GET /item/%ld " \
                    "200 served in %ld ms\n"
#define LINE_ARGS(i) (i) / 60 % 60, (i) % 60, 4242, (i), (i) * 7 % 500

static int fail(const char *what, const negstream_error *err)
{
    fprintf(stderr, "fprintf_log: %s: %s [%s]\n", what, err->message,
            negstream_status_name(err->code));
    return 1;
}

/* ---- the collector (server) thread -------------------------------------- */

struct collector {
    int lfd;
    long lines;
    int rc;
};

static void *collector_main(void *arg)
{
    struct collector *co = arg;
    char line[256], want[256];
    negstream_error err;
    negstream *s = NULL;
    FILE *in = NULL;
    int fd;

    co->rc = 1;
    fd = accept(co->lfd, NULL, NULL);
    if (fd < 0) {
        perror("fprintf_log: collector: accept");
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
    printf("collector: %s, %s, %s\n", negstream_remote_identity(s),
           negstream_authentication_type(s),
           negstream_is_encrypted(s) ? "encrypted" : "NOT encrypted");
    in = negstream_fopen(s, "r");
    if (in == NULL) {
        perror("fprintf_log: collector: negstream_fopen");
        goto out;
    }
    while (fgets(line, sizeof(line), in) != NULL) {
        long i = co->lines;

        snprintf(want, sizeof(want), LINE_FORMAT, LINE_ARGS(i));
        if (strcmp(line, want) != 0) {
            fprintf(stderr, "fprintf_log: line %ld is \"%s\"\n", i, line);
            goto out;
        }
        co->lines++;
    }
    if (ferror(in)) {               /* else the shipper closed: the end */
        if (negstream_ferror(in, &err) == 1)
            fail("collector: reading", &err);
        goto out;
    }
    co->rc = 0;
out:
    if (in != NULL)
        fclose(in);
    negstream_close(s);
    return NULL;
}

/* ---- the shipper (client) ----------------------------------------------- */

static int connect_loopback(uint16_t port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        perror("fprintf_log: connect");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/*
 * A stream on fd, authenticated with the user's Kerberos ticket to
 * target: Kerberos only (no silent fallback to NTLM) and the server must
 * prove who it is; 30 s for any wait on the socket.  NULL on failure (fd
 * is closed then; an fd of -1 fails too).
 */
static negstream *authenticated_client(int fd, const char *target)
{
    negstream_client_options o;
    negstream_error err;
    negstream *s;

    s = negstream_new(fd, false, &err);
    if (s == NULL) {
        close(fd);
        fail("negstream_new", &err);
        return NULL;
    }
    negstream_client_options_init(&o);
    o.target_name = target;
    o.mechanism = "kerberos";
    o.require_mutual_auth = true;
    if (negstream_set_timeouts(s, 30000, 30000, &err) != 0 ||
        negstream_authenticate_as_client(s, &o, &err) != 0) {
        fail("authenticate", &err);
        negstream_close(s);
        return NULL;
    }
    return s;
}

static int run_client(uint16_t port, const char *target)
{
    int fd = connect_loopback(port);
    negstream *s = authenticated_client(fd, target);
    FILE *out = negstream_fopen(s, "w");
    long i;
    int rc = 1;

    if (out == NULL) {
        perror("fprintf_log: opening the log stream");
        goto out;
    }
    for (i = 0; i < NLINES; i++)
        fprintf(out, LINE_FORMAT, LINE_ARGS(i));
    if (fclose(out) != 0) {
        perror("fprintf_log: sending the log");
        goto out;
    }
    printf("shipper: %d lines sent\n", NLINES);
    rc = 0;
out:
    negstream_close(s);
    return rc;
}

int main(int argc, char **argv)
{
    const char *target = argc > 1 ? argv[1] : getenv("NEGTEST_SPN");
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    struct collector co;
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
        perror("fprintf_log: listen");
        goto out;
    }
    if (pthread_create(&th, NULL, collector_main, &co) != 0) {
        perror("fprintf_log: pthread_create");
        goto out;
    }
    crc = run_client(ntohs(sin.sin_port), target);
    if (crc != 0)
        shutdown(co.lfd, SHUT_RDWR);   /* Linux: wakes a pending accept */
    pthread_join(th, NULL);
    if (crc != 0 || co.rc != 0)
        goto out;
    printf("collector: %ld lines, each as sent\n", co.lines);
    if (co.lines != NLINES) {
        fprintf(stderr, "fprintf_log: MISMATCH: %ld lines of %d\n",
                co.lines, NLINES);
        goto out;
    }
    printf("fprintf_log: OK\n");
    rc = 0;
out:
    if (co.lfd >= 0)
        close(co.lfd);
    return rc;
}
