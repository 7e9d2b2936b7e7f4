/*
 * nns_peer - one libnegstream peer, server or client, for the interop
 * tests (the .krb scripts in tests/interop) and bench/dotnet.sh.  It uses
 * the public API only, the way an application would, and follows
 * NegClient.cs's data conventions so that any two of NegClient.cs,
 * nns_acceptor.py and this program can be compared:
 *  - data bytes are offset % 251, restarting at 0 for every write;
 *  - everything sent and everything received is hashed with FNV-1a 64
 *    (printed as 16 hex digits);
 *  - one result line of key=value pairs on stdout at the end, "error=" last
 *    (the rest of the line); exit 0 on success, 1 on any failure, 2 on a
 *    usage error.
 *
 *   nns_peer server [OPTIONS]             listens on 127.0.0.1, prints
 *                                         "port=N" first, serves one client
 *   nns_peer client HOST PORT [OPTIONS]
 *
 * Options (both sides unless noted):
 *   --protection None|Sign|EncryptAndSign   required level (default
 *                                           EncryptAndSign)
 *   --mech negotiate|kerberos|ntlm          mechanism (default negotiate)
 *   --service NAME        server: acceptor principal (default: any in keytab)
 *   --target NAME         client: target name (default host/localhost)
 *   --user U --domain D --password P        client: explicit credentials
 *   --timeout SECONDS     accept and socket I/O timeout (default 60), so a
 *                         failed peer shows as an error, never as a hang
 *   --impersonation L     client: allowed level; server: required level
 *                         (Identification, Impersonation, Delegation)
 *   --send-small          one negstream_begin_write of a short text
 *   --send-big N          one negstream_begin_write of N bytes
 *   --writes LIST         then one negstream_begin_write per size, in
 *                         order: "0,1,64512" or "512x5" (five of 512)
 *   --send-stream N       N bytes as a chain of negstream_begin_write calls,
 *                         each issued from the previous one's callback
 *   --chunk N             write size of --send-stream (default 262144)
 *   --recv N              read exactly N bytes, then stop reading (default:
 *                         the server reads to EOF, the client reads nothing)
 *   --recv-eof            read until the end of the stream (the client too)
 *   --echo                server: write every message back as it arrives
 *   --no-hash             skip the hashes (bench/dotnet.sh)
 *   --delay-ms N          sleep N ms after authenticating, before the data
 *   --drop-after-bytes N  test mode: cut the connection once N bytes of
 *                         ours (handshake included) have gone out
 *   --drop-data-after N   test mode: the same, counting from the end of
 *                         the authentication (N bytes of data phase)
 *                         Both put a relay thread between the stream and
 *                         the socket (a socketpair), which writes only the
 *                         bytes before the cut and then shuts the socket
 *                         down: the peer sees its end in mid-message.
 *
 * TLS and Extended Protection (a build with OpenSSL; else these options
 * are a usage error):
 *   --tls CERT KEY        server: TLS first (PEM files), the stream inside
 *                         it (examples/tlsio.c); prints tls=VERSION
 *   --tls-ca CA           client: TLS first, the server's certificate
 *                         checked against CA (PEM) for the name localhost
 *   --binding WHAT        the channel bindings, "tls-server-end-point:" +
 *                         hash (RFC 5929): ssl (of this TLS connection's
 *                         server certificate), cert:FILE (of the PEM
 *                         certificate FILE: another channel's), or none
 *                         (the default); client: what it binds to; server:
 *                         what it expects.  Printed as cb=HEX.
 *   --ep-policy P         server: Never (default), WhenSupported, Always;
 *                         the server prints bound=True|False
 *                         (negstream_is_channel_bound)
 *   --store-delegated CC  server: store the client's delegated credential
 *                         in the ccache CC ("FILE:/path") after
 *                         authenticating; prints delegated=stored
 *   --ccache CC           client: Kerberos credentials from the ccache CC
 *
 * The writes run on the library's worker pool (begin_write/end_write, the
 * callback issuing the next write) while the main thread reads, so both
 * directions flow at once.  "elapsed" is measured from the end of the
 * authentication to the end of the data phase (information, never
 * asserted).
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "negstream.h"
#if HAVE_OPENSSL
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tlsio.h"
#endif

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
#define READ_BUF (128 * 1024)

static const char small_msg[] = "hello from libnegstream nns_peer\n";

typedef struct options {
    bool server;
    const char *host;
    int port;
    negstream_protection protection;
    const char *mech, *service, *target, *user, *domain, *password;
    int timeout_s;
    bool send_small, echo, hash;
    long long send_big, send_stream, recv;
    size_t chunk;
    negstream_impersonation impersonation;
    bool impersonation_set, recv_eof;
    long long *writes;          /* --writes: sizes, in order */
    size_t nwrites;
    long long delay_ms, drop_after, drop_data_after;
    const char *tls_cert, *tls_key, *tls_ca;    /* --tls, --tls-ca */
    const char *binding;                        /* --binding */
    negstream_extended_protection ep;           /* --ep-policy */
    const char *store_delegated, *ccache;
} options;

/* The channel bindings of --binding (cb_len 0: none). */
static unsigned char cb[NEGSTREAM_CHANNEL_BINDING_MAX];
static size_t cb_len;

/* The result line: keys in the order they are first set. */
#define MAX_KEYS 32
static char res_key[MAX_KEYS][24];
static char res_val[MAX_KEYS][320];
static int res_n;
static char res_error[512];

static void put(const char *key, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(const char *key, const char *fmt, ...)
{
    va_list ap;
    int i;
    char *p;

    for (i = 0; i < res_n && strcmp(res_key[i], key) != 0; i++)
        ;
    if (i == res_n) {
        if (res_n == MAX_KEYS)
            return;
        snprintf(res_key[i], sizeof(res_key[i]), "%s", key);
        res_n++;
    }
    va_start(ap, fmt);
    vsnprintf(res_val[i], sizeof(res_val[i]), fmt, ap);
    va_end(ap);
    /* values are single words: the shell scripts split on spaces */
    for (p = res_val[i]; *p != '\0'; p++)
        if (*p == ' ' || *p == '\n' || *p == '\t')
            *p = '_';
}

/* The first failure wins: later ones are usually its consequences. */
static void put_error(const char *what, const negstream_error *e)
{
    char *p;

    if (res_error[0] != '\0')
        return;
    put("code", "%s", negstream_status_name(e->code));
    snprintf(res_error, sizeof(res_error), "%s: %s", what, e->message);
    for (p = res_error; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

static void print_result(void)
{
    int i;

    for (i = 0; i < res_n; i++)
        printf("%s%s=%s", i ? " " : "", res_key[i], res_val[i]);
    if (res_error[0] != '\0')
        printf("%serror=%s", res_n ? " " : "", res_error);
    printf("\n");
    fflush(stdout);
}

static uint64_t fnv_add(uint64_t h, const unsigned char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

static unsigned char *pattern(size_t n)
{
    unsigned char *b = malloc(n ? n : 1);
    size_t i;

    if (b == NULL) {
        fprintf(stderr, "nns_peer: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    for (i = 0; i < n; i++)
        b[i] = (unsigned char)(i % 251);
    return b;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the writer: a chain of begin_write calls ------------------------- */

typedef struct writer {
    negstream *s;
    bool hash;
    /* the plan, in order: small message, big write, stream of chunks */
    const unsigned char *small;
    size_t small_len;
    unsigned char *big;
    size_t big_len;
    const long long *writes;    /* --writes, from 'wbuf' */
    size_t nwrites, wi;
    unsigned char *wbuf;
    unsigned char *chunk;
    size_t chunk_len;
    long long stream_left;
    int step;          /* 0 small, 1 big, 2 writes, 3 stream, 4 finished */
    const unsigned char *cur;   /* the write in flight */
    size_t cur_len;
    /* results, read by main() once 'done' is set */
    uint64_t h;
    long long sent;
    negstream_error err;
    bool failed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} writer;

static void writer_finish(writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void on_written(negstream_async *ar);

/* Picks the next write of the plan and begins it; finishes at the end. */
static void writer_next(writer *w)
{
    negstream_async *ar;

    w->cur = NULL;
    while (w->cur == NULL && w->step < 4) {
        if (w->step == 0 && w->small != NULL) {
            w->cur = w->small;
            w->cur_len = w->small_len;
            w->step = 1;
        } else if (w->step <= 1 && w->big != NULL) {
            w->cur = w->big;
            w->cur_len = w->big_len;
            w->step = 2;
        } else if (w->step <= 2 && w->wi < w->nwrites) {
            w->cur = w->wbuf;
            w->cur_len = (size_t)w->writes[w->wi++];
            w->step = 2;
        } else if (w->step <= 3 && w->stream_left > 0) {
            w->cur = w->chunk;
            w->cur_len = w->stream_left < (long long)w->chunk_len
                ? (size_t)w->stream_left : w->chunk_len;
            w->stream_left -= (long long)w->cur_len;
            w->step = 3;
        } else {
            w->step = 4;
        }
    }
    if (w->cur == NULL) {
        writer_finish(w);
        return;
    }
    ar = negstream_begin_write(w->s, w->cur, w->cur_len, 0,
                               (ssize_t)w->cur_len, on_written, w, &w->err);
    if (ar == NULL) {
        w->failed = true;
        writer_finish(w);
    }
}

/* The AsyncCallback: end this write, account for it, begin the next. */
static void on_written(negstream_async *ar)
{
    writer *w = negstream_async_state(ar);

    if (negstream_end_write(w->s, ar, &w->err) < 0) {
        w->failed = true;
        writer_finish(w);
        return;
    }
    if (w->hash)
        w->h = fnv_add(w->h, w->cur, w->cur_len);
    w->sent += (long long)w->cur_len;
    writer_next(w);
}

/* ---- command line ------------------------------------------------------- */

static void usage(const char *msg)
{
    if (msg != NULL)
        fprintf(stderr, "nns_peer: %s\n", msg);
    fprintf(stderr,
            "usage: nns_peer server [OPTIONS]\n"
            "       nns_peer client HOST PORT [OPTIONS]\n"
            "(options: see the comment at the top of nns_peer.c)\n");
    exit(2);
}

static long long count_arg(int argc, char **argv, int *i)
{
    char *end;
    long long n;

    if (*i + 1 >= argc)
        usage("an option needs a value");
    errno = 0;
    n = strtoll(argv[++*i], &end, 10);
    if (errno != 0 || *end != '\0' || end == argv[*i] || n < 0)
        usage("bad number");
    return n;
}

/* "0,1,64512" or "512x5,1": the sizes of --writes. */
static void writes_arg(options *o, const char *list)
{
    const char *p = list;
    char *end;
    long long n, times, k;

    while (*p != '\0') {
        errno = 0;
        n = strtoll(p, &end, 10);
        if (errno != 0 || end == p || n < 0 || n > (1LL << 30))
            usage("--writes: sizes of 0 to 2^30, comma-separated");
        times = 1;
        if (*end == 'x') {
            p = end + 1;
            times = strtoll(p, &end, 10);
            if (end == p || times < 1 || times > 100000)
                usage("--writes: SIZExCOUNT, COUNT 1 to 100000");
        }
        if (*end != ',' && *end != '\0')
            usage("--writes: sizes of 0 to 2^30, comma-separated");
        for (k = 0; k < times; k++) {
            long long *nw = realloc(o->writes,
                                    (o->nwrites + 1) * sizeof(*nw));

            if (nw == NULL) {
                fprintf(stderr, "nns_peer: out of memory\n");
                exit(1);
            }
            o->writes = nw;
            o->writes[o->nwrites++] = n;
        }
        p = *end == ',' ? end + 1 : end;
    }
}

static const char *str_arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        usage("an option needs a value");
    return argv[++*i];
}

static void parse(int argc, char **argv, options *o)
{
    int i = 2;
    const char *p;

    memset(o, 0, sizeof(*o));
    o->protection = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    o->target = "host/localhost";
    o->timeout_s = 60;
    o->hash = true;
    o->send_big = o->send_stream = o->recv = -1;
    o->drop_after = o->drop_data_after = -1;
    o->chunk = 256 * 1024;
    if (argc < 2)
        usage(NULL);
    if (strcmp(argv[1], "server") == 0) {
        o->server = true;
    } else if (strcmp(argv[1], "client") == 0) {
        if (argc < 4)
            usage("client needs HOST PORT");
        o->host = argv[2];
        o->port = atoi(argv[3]);
        if (o->port <= 0 || o->port > 65535)
            usage("bad port");
        i = 4;
    } else {
        usage("first argument: server or client");
    }
    for (; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--protection") == 0) {
            p = str_arg(argc, argv, &i);
            if (strcmp(p, "None") == 0)
                o->protection = NEGSTREAM_PROTECTION_NONE;
            else if (strcmp(p, "Sign") == 0)
                o->protection = NEGSTREAM_PROTECTION_SIGN;
            else if (strcmp(p, "EncryptAndSign") == 0)
                o->protection = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
            else
                usage("--protection: None, Sign or EncryptAndSign");
        } else if (strcmp(a, "--mech") == 0) {
            o->mech = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--service") == 0) {
            o->service = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--target") == 0) {
            o->target = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--user") == 0) {
            o->user = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--domain") == 0) {
            o->domain = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--password") == 0) {
            o->password = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--timeout") == 0) {
            o->timeout_s = (int)count_arg(argc, argv, &i);
        } else if (strcmp(a, "--impersonation") == 0) {
            p = str_arg(argc, argv, &i);
            o->impersonation_set = true;
            if (strcmp(p, "Identification") == 0)
                o->impersonation = NEGSTREAM_IMPERSONATION_IDENTIFICATION;
            else if (strcmp(p, "Impersonation") == 0)
                o->impersonation = NEGSTREAM_IMPERSONATION_IMPERSONATION;
            else if (strcmp(p, "Delegation") == 0)
                o->impersonation = NEGSTREAM_IMPERSONATION_DELEGATION;
            else
                usage("--impersonation: Identification, Impersonation or "
                      "Delegation");
        } else if (strcmp(a, "--writes") == 0) {
            writes_arg(o, str_arg(argc, argv, &i));
        } else if (strcmp(a, "--delay-ms") == 0) {
            o->delay_ms = count_arg(argc, argv, &i);
        } else if (strcmp(a, "--drop-after-bytes") == 0) {
            o->drop_after = count_arg(argc, argv, &i);
        } else if (strcmp(a, "--drop-data-after") == 0) {
            o->drop_data_after = count_arg(argc, argv, &i);
        } else if (strcmp(a, "--send-small") == 0) {
            o->send_small = true;
        } else if (strcmp(a, "--send-big") == 0) {
            o->send_big = count_arg(argc, argv, &i);
        } else if (strcmp(a, "--send-stream") == 0) {
            o->send_stream = count_arg(argc, argv, &i);
        } else if (strcmp(a, "--chunk") == 0) {
            o->chunk = (size_t)count_arg(argc, argv, &i);
        } else if (strcmp(a, "--recv") == 0) {
            o->recv = count_arg(argc, argv, &i);
        } else if (strcmp(a, "--recv-eof") == 0) {
            o->recv_eof = true;
        } else if (strcmp(a, "--echo") == 0) {
            o->echo = true;
        } else if (strcmp(a, "--no-hash") == 0) {
            o->hash = false;
        } else if (strcmp(a, "--tls") == 0) {
            o->tls_cert = str_arg(argc, argv, &i);
            o->tls_key = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--tls-ca") == 0) {
            o->tls_ca = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--binding") == 0) {
            o->binding = str_arg(argc, argv, &i);
            if (strcmp(o->binding, "none") != 0 &&
                strcmp(o->binding, "ssl") != 0 &&
                strncmp(o->binding, "cert:", 5) != 0)
                usage("--binding: ssl, cert:FILE or none");
        } else if (strcmp(a, "--ep-policy") == 0) {
            p = str_arg(argc, argv, &i);
            if (strcmp(p, "Never") == 0)
                o->ep = NEGSTREAM_EXTENDED_PROTECTION_NEVER;
            else if (strcmp(p, "WhenSupported") == 0)
                o->ep = NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED;
            else if (strcmp(p, "Always") == 0)
                o->ep = NEGSTREAM_EXTENDED_PROTECTION_ALWAYS;
            else
                usage("--ep-policy: Never, WhenSupported or Always");
        } else if (strcmp(a, "--store-delegated") == 0) {
            o->store_delegated = str_arg(argc, argv, &i);
        } else if (strcmp(a, "--ccache") == 0) {
            o->ccache = str_arg(argc, argv, &i);
        } else {
            fprintf(stderr, "nns_peer: unknown option %s\n", a);
            usage(NULL);
        }
    }
    if (o->chunk == 0)
        usage("--chunk must be > 0");
    if (o->echo && !o->server)
        usage("--echo is a server option");
    /* one write may be pending at a time: the echo writes and the
     * writer chain would collide */
    if (o->echo && (o->send_small || o->send_big >= 0 ||
                    o->send_stream >= 0 || o->nwrites > 0))
        usage("--echo excludes the --send options and --writes");
    if (o->drop_after >= 0 && o->drop_data_after >= 0)
        usage("--drop-after-bytes and --drop-data-after exclude each other");
    if (o->tls_cert != NULL && !o->server)
        usage("--tls CERT KEY is a server option (the client: --tls-ca)");
    if (o->tls_ca != NULL && o->server)
        usage("--tls-ca is a client option (the server: --tls CERT KEY)");
    if ((o->tls_cert != NULL || o->tls_ca != NULL) &&
        (o->drop_after >= 0 || o->drop_data_after >= 0))
        usage("--tls and --tls-ca exclude the --drop options");
    if (o->binding != NULL && strcmp(o->binding, "ssl") == 0 &&
        o->tls_cert == NULL && o->tls_ca == NULL)
        usage("--binding ssl needs --tls or --tls-ca");
    if ((o->ep != NEGSTREAM_EXTENDED_PROTECTION_NEVER ||
         o->store_delegated != NULL) && !o->server)
        usage("--ep-policy and --store-delegated are server options");
    if (o->ccache != NULL && o->server)
        usage("--ccache is a client option");
#if !HAVE_OPENSSL
    if (o->tls_cert != NULL || o->tls_ca != NULL ||
        (o->binding != NULL && strcmp(o->binding, "none") != 0))
        usage("--tls, --tls-ca and --binding need a build with OpenSSL");
#endif
}

/* ---- sockets ------------------------------------------------------------ */

/* Listens on 127.0.0.1, prints the port, waits for one client. */
static int accept_one(const options *o)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    struct pollfd p;
    int ls, fd = -1, one = 1, r;

    ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0) {
        perror("nns_peer: socket");
        return -1;
    }
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(ls, 1) < 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &len) < 0) {
        perror("nns_peer: bind/listen");
        goto out;
    }
    printf("port=%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    p.fd = ls;
    p.events = POLLIN;
    do {
        r = poll(&p, 1, o->timeout_s * 1000);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) {
        fprintf(stderr, "nns_peer: no client within %d s\n", o->timeout_s);
        goto out;
    }
    fd = accept(ls, NULL, NULL);
    if (fd < 0)
        perror("nns_peer: accept");
out:
    close(ls);
    return fd;
}

static int connect_to(const options *o)
{
    struct sockaddr_in sa;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1) {
        fprintf(stderr, "nns_peer: %s is not an IPv4 address\n", o->host);
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("nns_peer: socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("nns_peer: connect");
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- test mode: a relay that cuts the connection ----------------------- */

/* The stream gets one end of a socketpair; 'up' copies what it writes to
 * the socket, 'down' the other way.  Once 'limit' bytes of the stream's
 * output have been read ('taken'), the rest of that read is dropped and
 * the socket shut down, so the peer sees the connection end inside a
 * message.  'up' reads only with the lock held (after poll), so that
 * taken + the bytes still queued in the socketpair is, under the lock, all
 * the stream has written: relay_arm counts from there. */
typedef struct relay {
    int net, lib, stream_fd;
    pthread_t up, down;
    bool up_started, down_started;
    pthread_mutex_t mu;
    long long taken, limit;     /* limit < 0: none */
    bool cut;
} relay;

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void *relay_up(void *arg)
{
    relay *r = arg;
    unsigned char buf[16384];
    struct pollfd p;

    p.fd = r->lib;
    p.events = POLLIN;
    for (;;) {
        ssize_t n;
        size_t keep;
        bool cut = false;

        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        pthread_mutex_lock(&r->mu);
        n = recv(r->lib, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        keep = n > 0 ? (size_t)n : 0;
        if (n > 0 && r->limit >= 0 && r->taken + n >= r->limit) {
            keep = (size_t)(r->limit - r->taken);
            cut = r->cut = true;
        }
        if (n > 0)
            r->taken += n;
        pthread_mutex_unlock(&r->mu);
        if (n <= 0) {
            shutdown(r->net, SHUT_WR);      /* the stream was closed */
            break;
        }
        if (write_all(r->net, buf, keep) < 0 || cut) {
            shutdown(r->net, SHUT_RDWR);
            shutdown(r->lib, SHUT_RDWR);
            break;
        }
    }
    return NULL;
}

static void *relay_down(void *arg)
{
    relay *r = arg;
    unsigned char buf[16384];

    for (;;) {
        ssize_t n = recv(r->net, buf, sizeof(buf), 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || write_all(r->lib, buf, (size_t)n) < 0)
            break;
    }
    shutdown(r->lib, SHUT_WR);
    return NULL;
}

/* Starts the relay on the connected socket 'fd'; returns the fd to give
 * the stream, or -1.  limit: bytes of output before the cut, or -1. */
static int relay_start(relay *r, int fd, long long limit)
{
    int sv[2];

    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    r->net = fd;
    r->lib = r->stream_fd = -1;
    r->limit = limit;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("nns_peer: socketpair");
        return -1;
    }
    r->stream_fd = sv[0];
    r->lib = sv[1];
    r->up_started = pthread_create(&r->up, NULL, relay_up, r) == 0;
    r->down_started = pthread_create(&r->down, NULL, relay_down, r) == 0;
    if (!r->up_started || !r->down_started) {
        /* wake the one that started: relay_stop joins it */
        fprintf(stderr, "nns_peer: cannot start the relay threads\n");
        shutdown(r->lib, SHUT_RDWR);
        shutdown(r->net, SHUT_RDWR);
        return -1;
    }
    return sv[0];
}

/* From now on, cut after n more bytes of the stream's output. */
static void relay_arm(relay *r, long long n)
{
    int queued = 0;

    pthread_mutex_lock(&r->mu);
    if (ioctl(r->lib, FIONREAD, &queued) < 0)
        queued = 0;
    r->limit = r->taken + queued + n;
    if (queued == 0 && n == 0) {        /* cut now: nothing more goes */
        r->cut = true;
        shutdown(r->net, SHUT_RDWR);
        shutdown(r->lib, SHUT_RDWR);
    }
    pthread_mutex_unlock(&r->mu);
}

/* After the stream is closed: the relay ends, the sockets are closed. */
static void relay_stop(relay *r)
{
    if (r->up_started)
        pthread_join(r->up, NULL);
    shutdown(r->net, SHUT_RDWR);
    if (r->down_started)
        pthread_join(r->down, NULL);
    if (r->lib >= 0)
        close(r->lib);
    close(r->net);
    pthread_mutex_destroy(&r->mu);
}

/* ---- TLS and channel bindings (--tls, --tls-ca, --binding) ------------- */

#if HAVE_OPENSSL
/* The first OpenSSL error queued, as the result's error. */
static void put_tls_error(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];

    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    else
        snprintf(buf, sizeof(buf), "no OpenSSL error queued");
    ERR_clear_error();
    if (res_error[0] == '\0')
        snprintf(res_error, sizeof(res_error), "%s: %s", what, buf);
}

/* The DER form of the PEM certificate at path; NULL on failure (error
 * set).  OPENSSL_free it. */
static unsigned char *cert_der(const char *path, int *len)
{
    unsigned char *der = NULL;
    FILE *f = fopen(path, "r");
    X509 *x;

    if (f == NULL) {
        snprintf(res_error, sizeof(res_error), "--binding cert:%s: %s", path,
                 strerror(errno));
        return NULL;
    }
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    *len = x != NULL ? i2d_X509(x, &der) : -1;
    X509_free(x);
    if (*len <= 0) {
        put_tls_error("--binding: reading the PEM certificate");
        return NULL;
    }
    return der;
}

/* --binding: the bindings into cb and cb_len, printed as cb=HEX; ssl is
 * the TLS connection (handshake done) or NULL. */
static int make_binding(const options *o, const SSL *ssl)
{
    char hex[2 * sizeof(cb) + 1];
    negstream_error e;
    size_t n = sizeof(cb), i;
    int r;

    if (o->binding == NULL || strcmp(o->binding, "none") == 0)
        return 0;
    if (strcmp(o->binding, "ssl") == 0) {
        r = negstream_channel_binding_from_ssl(ssl, cb, &n, &e);
    } else {
        int len;
        unsigned char *der = cert_der(o->binding + 5, &len);

        if (der == NULL)
            return -1;
        r = negstream_channel_binding_from_cert(der, (size_t)len, cb, &n,
                                                &e);
        OPENSSL_free(der);
    }
    if (r != 0) {
        put_error("computing the channel bindings failed", &e);
        return -1;
    }
    cb_len = n;
    for (i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", cb[i]);
    put("cb", "%s", n > 0 ? hex : "-");
    return 0;
}

/*
 * TLS on the connected socket fd (the handshake blocking, bounded by
 * --timeout), the bindings of --binding, then a stream over the TLS
 * connection (examples/tlsio.c), which owns it and fd from there.  NULL
 * on failure, fd closed.
 */
static negstream *tls_stream(const options *o, int fd)
{
    SSL_CTX *ctx;
    SSL *ssl = NULL;
    struct timeval tv;
    negstream_error e;
    negstream *s = NULL;

    tv.tv_sec = o->timeout_s;
    tv.tv_usec = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    ctx = SSL_CTX_new(o->server ? TLS_server_method()
                                : TLS_client_method());
    if (ctx == NULL) {
        put_tls_error("SSL_CTX_new");
        goto out;
    }
    if (o->server &&
        (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, o->tls_key,
                                     SSL_FILETYPE_PEM) != 1)) {
        put_tls_error("loading the TLS certificate and key");
        goto out;
    }
    if (!o->server) {
        if (SSL_CTX_load_verify_locations(ctx, o->tls_ca, NULL) != 1) {
            put_tls_error("loading the TLS CA file");
            goto out;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 ||
        (!o->server && SSL_set1_host(ssl, "localhost") != 1)) {
        put_tls_error("SSL_new");
        goto out;
    }
    if ((o->server ? SSL_accept(ssl) : SSL_connect(ssl)) != 1) {
        put_tls_error("the TLS handshake");
        goto out;
    }
    put("tls", "%s", SSL_get_version(ssl));
    if (make_binding(o, ssl) < 0)
        goto out;
    s = tlsio_stream(ssl, fd, &e);
    ssl = NULL;                         /* the stream's, or released */
    fd = -1;
    if (s == NULL)
        put_error("negstream_new_io failed", &e);
out:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ctx);                  /* the SSL holds a reference */
    return s;
}
#endif

/* ---- the session -------------------------------------------------------- */

static const char *imp_name(negstream_impersonation i)
{
    switch (i) {
    case NEGSTREAM_IMPERSONATION_NONE: return "None";
    case NEGSTREAM_IMPERSONATION_ANONYMOUS: return "Anonymous";
    case NEGSTREAM_IMPERSONATION_IDENTIFICATION: return "Identification";
    case NEGSTREAM_IMPERSONATION_IMPERSONATION: return "Impersonation";
    case NEGSTREAM_IMPERSONATION_DELEGATION: return "Delegation";
    }
    return "?";
}

static int authenticate(negstream *s, const options *o)
{
    negstream_error e;
    int r;

    if (o->server) {
        negstream_server_options so;

        negstream_server_options_init(&so);
        so.protection = o->protection;
        so.service_name = o->service;
        so.mechanism = o->mech;
        if (o->impersonation_set)
            so.impersonation = o->impersonation;
        so.extended_protection = o->ep;
        so.channel_binding = cb_len > 0 ? cb : NULL;
        so.channel_binding_len = cb_len;
        r = negstream_authenticate_as_server(s, &so, &e);
    } else {
        negstream_client_options co;

        negstream_client_options_init(&co);
        co.protection = o->protection;
        co.target_name = o->target;
        co.mechanism = o->mech;
        co.user = o->user;
        co.domain = o->domain;
        co.password = o->password;
        if (o->impersonation_set)
            co.impersonation = o->impersonation;
        co.channel_binding = cb_len > 0 ? cb : NULL;
        co.channel_binding_len = cb_len;
        co.ccache_name = o->ccache;
        r = negstream_authenticate_as_client(s, &co, &e);
    }
    put("authenticated", "%s", negstream_is_authenticated(s) ? "True"
                                                             : "False");
    if (r < 0) {
        put_error("authentication failed", &e);
        return -1;
    }
    put("encrypted", "%s", negstream_is_encrypted(s) ? "True" : "False");
    put("signed", "%s", negstream_is_signed(s) ? "True" : "False");
    put("mutual", "%s",
        negstream_is_mutually_authenticated(s) ? "True" : "False");
    put("impersonation", "%s", imp_name(negstream_impersonation_level(s)));
    put("remote", "%s", negstream_remote_identity(s));
    put("remote_type", "%s", negstream_authentication_type(s));
    if (o->server)
        put("bound", "%s", negstream_is_channel_bound(s) ? "True" : "False");
    if (o->store_delegated != NULL) {
        if (negstream_store_delegated_credentials(s, o->store_delegated,
                                                  &e) < 0) {
            put_error("storing the delegated credentials failed", &e);
            return -1;
        }
        put("delegated", "stored");
    }
    return 0;
}

/* Reads until EOF or 'limit' bytes (limit < 0: to EOF); with 'echo', every
 * message goes straight back (begin_write + end_write, on this thread). */
static int read_all(negstream *s, const options *o, long long limit,
                    long long *got, uint64_t *h)
{
    unsigned char *buf = malloc(READ_BUF);
    negstream_error e;
    ssize_t n;
    int rc = -1;

    if (buf == NULL) {
        fprintf(stderr, "nns_peer: out of memory\n");
        return -1;
    }
    while (limit < 0 || *got < limit) {
        size_t want = READ_BUF;

        if (limit >= 0 && (long long)want > limit - *got)
            want = (size_t)(limit - *got);
        n = negstream_read(s, buf, READ_BUF, 0, (ssize_t)want, &e);
        if (n < 0) {
            put_error("read failed", &e);
            goto out;
        }
        if (n == 0)
            break;
        if (o->hash)
            *h = fnv_add(*h, buf, (size_t)n);
        *got += n;
        if (o->echo) {
            negstream_async *ar = negstream_begin_write(s, buf, READ_BUF, 0,
                                                        n, NULL, NULL, &e);

            if (ar == NULL || negstream_end_write(s, ar, &e) < 0) {
                put_error("echo write failed", &e);
                goto out;
            }
        }
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

static int session(negstream *s, const options *o)
{
    writer w;
    long long got = 0;
    uint64_t rh = FNV_OFFSET;
    double t0, t;
    int rc = 0;
    bool writing;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.s = s;
    w.hash = o->hash;
    w.h = FNV_OFFSET;
    if (o->send_small) {
        w.small = (const unsigned char *)small_msg;
        w.small_len = sizeof(small_msg) - 1;
    }
    if (o->send_big >= 0) {
        w.big = pattern((size_t)o->send_big);
        w.big_len = (size_t)o->send_big;
    }
    if (o->nwrites > 0) {
        long long max = 0;
        size_t k;

        for (k = 0; k < o->nwrites; k++)
            if (o->writes[k] > max)
                max = o->writes[k];
        w.writes = o->writes;
        w.nwrites = o->nwrites;
        w.wbuf = pattern((size_t)max);
    }
    if (o->send_stream > 0) {
        w.stream_left = o->send_stream;
        w.chunk_len = o->send_stream < (long long)o->chunk
            ? (size_t)o->send_stream : o->chunk;
        w.chunk = pattern(w.chunk_len);
    }
    writing = w.small != NULL || w.big != NULL || w.nwrites > 0 ||
              w.chunk != NULL;

    t0 = now();
    if (writing)
        writer_next(&w);
    /* The server reads to EOF unless told otherwise; the client reads only
     * what it was told to expect (it closes when done, which is the
     * server's EOF). */
    if (o->server || o->recv >= 0 || o->recv_eof)
        rc = read_all(s, o, o->recv, &got, &rh);
    if (writing) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        if (w.failed) {
            put_error("write failed", &w.err);
            rc = -1;
        }
    }
    t = now() - t0;

    put("sent", "%lld", w.sent);
    if (o->hash)
        put("hash", "%016" PRIx64, w.h);
    put("recv", "%lld", got);
    if (o->hash)
        put("recv_hash", "%016" PRIx64, rh);
    put("elapsed", "%.3f", t);
    if (t > 0) {
        put("MBps", "%.1f", (double)(got > w.sent ? got : w.sent)
                                / 1e6 / t);
    }
    if (rc == 0 && o->recv >= 0 && got != o->recv) {
        snprintf(res_error, sizeof(res_error),
                 "EOF after %lld of %lld bytes", got, o->recv);
        rc = -1;
    }
    free(w.big);
    free(w.wbuf);
    free(w.chunk);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

int main(int argc, char **argv)
{
    options o;
    negstream *s = NULL;
    negstream_error e;
    relay rl;
    bool relaying = false;
    int fd, rc = 1;

    parse(argc, argv, &o);
    fd = o.server ? accept_one(&o) : connect_to(&o);
    if (fd < 0) {
        put("authenticated", "False");
        snprintf(res_error, sizeof(res_error), "no connection");
        goto out;
    }
#if HAVE_OPENSSL
    if (o.tls_cert != NULL || o.tls_ca != NULL) {
        s = tls_stream(&o, fd);
        if (s == NULL)
            goto out;
    } else if (make_binding(&o, NULL) < 0) {
        close(fd);
        goto out;
    }
#endif
    if (s == NULL && (o.drop_after >= 0 || o.drop_data_after >= 0)) {
        relaying = true;
        fd = relay_start(&rl, fd, o.drop_after);
        if (fd < 0) {
            if (rl.stream_fd >= 0)
                close(rl.stream_fd);
            snprintf(res_error, sizeof(res_error), "relay failed");
            goto out;
        }
    }
    if (s == NULL) {
        s = negstream_new(fd, false, &e);
        if (s == NULL) {
            close(fd);
            put_error("negstream_new failed", &e);
            goto out;
        }
    }
    if (o.timeout_s > 0 &&
        negstream_set_timeouts(s, o.timeout_s * 1000, o.timeout_s * 1000,
                               &e) < 0) {
        put_error("negstream_set_timeouts failed", &e);
        goto out;
    }
    if (authenticate(s, &o) < 0)
        goto out;
    if (relaying && o.drop_data_after >= 0)
        relay_arm(&rl, o.drop_data_after);
    if (o.delay_ms > 0) {
        struct timespec ts;

        ts.tv_sec = (time_t)(o.delay_ms / 1000);
        ts.tv_nsec = (long)(o.delay_ms % 1000) * 1000000L;
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    if (session(s, &o) < 0)
        goto out;
    rc = 0;
out:
    if (s != NULL)
        negstream_close(s);
    else if (relaying && fd >= 0)
        close(fd);
    if (relaying) {
        relay_stop(&rl);            /* joins the threads: rl.cut is final */
        put("cut", "%s", rl.cut ? "True" : "False");
    }
    free(o.writes);
    if (rc != 0 && res_error[0] == '\0')
        snprintf(res_error, sizeof(res_error), "failed");
    print_result();
    return rc;
}
