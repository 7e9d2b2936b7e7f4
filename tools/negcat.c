/*
 * negcat.c - netcat with Negotiate (Kerberos / NTLM / SPNEGO)
 * authentication and MS-NNS protection, built on libnegstream.
 *
 *   negcat -l [-p PORT] [-b ADDR] [--service NAME] [--once] [--exec CMD]
 *   negcat HOST PORT [--target SPN] [-r]
 *
 * The server accepts clients one after another, authenticates each,
 * prints who it is on stderr and copies the decrypted stream to stdout (or
 * to a command's stdin, with the command's stdout sent back).  The client
 * authenticates, sends its stdin and copies what comes back to stdout.
 * See negcat(1).
 *
 * Threads: the sending direction runs on the main thread with two
 * buffers (negstream_begin_write on one block while the next one is read
 * from the input); the receiving direction runs on a second thread with
 * negstream_read.  MS-NNS has no half-close message, so the end of the
 * sent data is a shutdown(SHUT_WR) of the socket once the last write has
 * completed: the peer then reads a clean EOF between two frames.
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "negstream.h"

#define DEFAULT_PORT    "4444"
#define DEFAULT_BIND    "127.0.0.1"
/* One read of the input: four whole frames, so no short frame is made
 * at every block boundary. */
#define BLOCK_SIZE      (4 * NEGSTREAM_MAX_FRAME_PLAINTEXT)
#define RECV_SIZE       (256 * 1024)   /* > one frame: nothing left over */
#define PASSWORD_MAX    1024
#define POLL_SLICE_MS   250            /* idle-timeout and progress tick */
#define REDRAW_S        0.1            /* progress bar refresh, tty */
#define LOG_LINE_S      1.0            /* progress line interval, no tty */

/* Exit statuses, documented in negcat(1). */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 1,
    EXIT_NET = 2,       /* connection or network failure */
    EXIT_AUTH = 3,      /* authentication failure */
    EXIT_IO = 4         /* I/O failure after authentication */
};

struct opts {
    bool listen, once, read_back, verbose, require_mutual;
    int progress;                       /* -1 auto, 0 off, 1 on */
    const char *host, *port, *bind_addr, *service, *target, *exec_cmd;
    const char *mech;
    negstream_protection protection;
    const char *user, *domain, *password_file;
    int timeout_ms;                     /* -1: none */
    uint64_t size;                      /* 0: unknown */
};

/* The password lives here only (read with read(2), never through a stdio
 * buffer), and is wiped as soon as the authentication is over. */
static char password[PASSWORD_MAX];
static bool verbose_on;

/* Serialises everything written to stderr, so that a message from the
 * receiving thread never lands in the middle of the progress bar. */
static pthread_mutex_t err_mu = PTHREAD_MUTEX_INITIALIZER;
static bool bar_shown;             /* a bar is on the tty line; err_mu */

/* ---- messages ---------------------------------------------------------- */

/* Caller holds err_mu: end the bar's line before a message is printed. */
static void clear_bar_locked(void)
{
    if (bar_shown) {
        fputc('\n', stderr);
        bar_shown = false;
    }
}

static void vsay(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));
static void vsay(const char *fmt, va_list ap)
{
    pthread_mutex_lock(&err_mu);
    clear_bar_locked();
    fputs("negcat: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&err_mu);
}

/* One line "negcat: ..." on stderr. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
}

/* Like say(), only with --verbose: negcat's own steps. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;

    if (!verbose_on)
        return;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
}

/* "negcat: <what>: <message> [NEGSTREAM_E_...]", 'what' from fmt. */
static void report(const negstream_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void report(const negstream_error *err, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    say("%s: %s [%s]", what, err->message[0] ? err->message : "failed",
        negstream_status_name(err->code));
}

/* The exit status for a library failure.  Before the stream is
 * authenticated, an authentication verdict is 3 and anything else (EOF,
 * reset, timeout) a connection failure; afterwards every failure is 4. */
static int exit_for(const negstream_error *err, bool authenticated)
{
    if (authenticated)
        return EXIT_IO;
    if (err->code == NEGSTREAM_E_AUTHENTICATION ||
        err->code == NEGSTREAM_E_INVALID_CREDENTIAL)
        return EXIT_AUTH;
    return EXIT_NET;
}

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;   /* volatile: not optimised away */

    while (n-- > 0)
        *v++ = 0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- progress ---------------------------------------------------------- */

struct progress {
    bool on;                /* draw the bar and the summary line */
    bool tty;               /* redraw in place (else one line each time) */
    const char *verb;       /* "sent" or "received" */
    uint64_t total;         /* 0: unknown */
    uint64_t done;
    double start, last_draw;
};

static void fmt_bytes(char *buf, size_t len, double v)
{
    static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB" };
    int i = -1;

    if (v < 1024) {
        snprintf(buf, len, "%.0f B", v);
        return;
    }
    while (v >= 1024 && i < 3) {
        v /= 1024;
        i++;
    }
    snprintf(buf, len, "%.1f %s", v, unit[i]);
}

static void fmt_eta(char *buf, size_t len, double s)
{
    unsigned long t = s > 0 && s < 360000 ? (unsigned long)(s + 0.5) : 0;

    if (t >= 3600)
        snprintf(buf, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%lu:%02lu", t / 60, t % 60);
}

/* mode: -1 auto (on if stderr is a terminal), 0 off, 1 on. */
static void progress_init(struct progress *pg, const char *verb, int mode,
                          uint64_t total)
{
    bool tty = isatty(STDERR_FILENO);

    pg->on = mode > 0 || (mode < 0 && tty);
    pg->tty = tty;
    pg->verb = verb;
    pg->total = total;
    pg->done = 0;
    pg->start = pg->last_draw = now_s();
}

/* Draws "12.0 MiB / 64.0 MiB  18% [===>    ] 95.2 MiB/s ETA 0:01" (size
 * known) or "sent 12.0 MiB  95.2 MiB/s".  On a terminal the line is
 * redrawn in place; elsewhere (--progress into a file or a pipe) a new
 * line is written every LOG_LINE_S, so that a log stays readable. */
static void progress_draw(struct progress *pg, bool force)
{
    char done[32], total[32], rate[32], eta[32], bar[24], line[256];
    double t = now_s(), el = t - pg->start;
    double r = el > 0 ? (double)pg->done / el : 0;

    if (!pg->on ||
        (!force && t - pg->last_draw < (pg->tty ? REDRAW_S : LOG_LINE_S)))
        return;
    pg->last_draw = t;
    fmt_bytes(done, sizeof(done), (double)pg->done);
    fmt_bytes(rate, sizeof(rate), r);
    if (pg->total > 0) {
        double f = (double)pg->done / (double)pg->total;
        int i, w = (int)(f * 20);

        if (f > 1)
            f = 1;
        for (i = 0; i < 20; i++)
            bar[i] = i < w ? '=' : (i == w ? '>' : ' ');
        bar[20] = '\0';
        fmt_bytes(total, sizeof(total), (double)pg->total);
        fmt_eta(eta, sizeof(eta),
                r > 0 ? (double)(pg->total - (pg->done < pg->total ?
                                 pg->done : pg->total)) / r : 0);
        snprintf(line, sizeof(line), "%s / %s %3d%% [%s] %s/s ETA %s",
                 done, total, (int)(f * 100), bar, rate, eta);
    } else {
        snprintf(line, sizeof(line), "%s %s  %s/s", pg->verb, done, rate);
    }
    pthread_mutex_lock(&err_mu);
    if (pg->tty) {
        fprintf(stderr, "\r%-78.78s", line);
        bar_shown = true;
    } else {
        fprintf(stderr, "negcat: %s\n", line);
    }
    fflush(stderr);
    pthread_mutex_unlock(&err_mu);
}

static void progress_add(struct progress *pg, size_t n)
{
    pg->done += n;
    progress_draw(pg, false);
}

/* The last state of the bar, then the summary line. */
static void progress_finish(struct progress *pg)
{
    char h[32], rate[32];
    double el = now_s() - pg->start;

    if (!pg->on)
        return;
    progress_draw(pg, true);
    fmt_bytes(h, sizeof(h), (double)pg->done);
    fmt_bytes(rate, sizeof(rate), el > 0 ? (double)pg->done / el : 0);
    say("%s %" PRIu64 " bytes (%s) in %.2f s (%s/s)", pg->verb, pg->done,
        h, el, rate);
}

/* ---- plain fd helpers -------------------------------------------------- */

/* Writes all of buf to fd.  Returns 0, or -1 with errno (EPIPE when the
 * reader has gone: the caller treats that as the end of the output).
 * Waits in poll() if fd is non-blocking (a tty may be). */
static int write_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd p = { .fd = fd, .events = POLLOUT };

                if (poll(&p, 1, -1) < 0 && errno != EINTR)
                    return -1;
                continue;
            }
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A write whose failure changes nothing for us: a wake-up byte, the
 * newline after a password prompt. */
static void write_quietly(int fd, const char *s)
{
    ssize_t n;

    do
        n = write(fd, s, strlen(s));
    while (n < 0 && errno == EINTR);
}

static long long now_ms(void)
{
    return (long long)(now_s() * 1000);
}

/* Reads what is there (1..len bytes, 0 at EOF) from in_fd, unless the
 * wake pipe becomes readable first: then returns -2 (the other direction
 * failed and we must stop).  Returns -3 when neither direction has moved
 * for timeout_ms (-1: no limit): the receiving thread judges that too,
 * but it is gone once the peer has ended its side.  -1 with errno on a
 * read error. */
static ssize_t read_input(int in_fd, int wake_fd, void *buf, size_t len,
                          int timeout_ms, atomic_llong *last_io_ms)
{
    struct pollfd p[2];

    for (;;) {
        ssize_t n;
        int r;

        p[0].fd = in_fd;
        p[0].events = POLLIN;
        p[1].fd = wake_fd;
        p[1].events = POLLIN;
        p[0].revents = p[1].revents = 0;
        r = poll(p, 2, timeout_ms < 0 ? -1 : POLL_SLICE_MS);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            if (now_ms() - atomic_load(last_io_ms) >= timeout_ms)
                return -3;
            continue;
        }
        if (p[1].revents != 0)
            return -2;
        n = read(in_fd, buf, len);
        if (n >= 0)
            return n;
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
    }
}

/* ---- the receiving direction: stream -> fd ----------------------------- */

struct pump {
    negstream *s;
    int sock;                  /* the socket, polled before each read */
    int out_fd;                /* -1: count and discard */
    bool close_out;            /* close out_fd at the end (a child's stdin) */
    const char *out_name;      /* "standard output", "the command" */
    int timeout_ms;            /* idle timeout, -1 none */
    atomic_llong *last_io_ms;  /* last activity in either direction */
    int wake_fd;               /* written to when this direction fails */
    atomic_bool stopping;      /* the other side failed: no more reports */
    struct progress *pg;       /* NULL: none */
    bool out_closed;           /* out_fd went away (EPIPE) */
    uint64_t bytes;
    uint64_t discarded;        /* read with no output asked for */
    int rc;
};

static void pump_init(struct pump *pp, int out_fd, const char *out_name,
                      int timeout_ms, struct progress *pg)
{
    memset(pp, 0, sizeof(*pp));
    pp->sock = -1;
    pp->out_fd = out_fd;
    pp->out_name = out_name;
    pp->timeout_ms = timeout_ms;
    pp->wake_fd = -1;
    atomic_init(&pp->stopping, false);
    pp->pg = pg;
    pp->rc = EXIT_IO;
}

/* Waits until the socket has data.  The library's read timeout only
 * bounds a frame once it has begun; a quiet receiving direction is
 * normal while we are still sending, so idleness is judged here on both
 * directions together (as nc -w does).  Returns 0, or -1 with err. */
static int wait_readable(const struct pump *pp, negstream_error *err)
{
    for (;;) {
        struct pollfd p = { .fd = pp->sock, .events = POLLIN };
        int r = poll(&p, 1, pp->timeout_ms < 0 ? -1 : POLL_SLICE_MS);
        long long idle;

        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR) {
            err->code = NEGSTREAM_E_IO;
            err->sys_errno = errno;
            snprintf(err->message, sizeof(err->message),
                     "poll on the socket failed: %s", strerror(errno));
            return -1;
        }
        idle = now_ms() - atomic_load(pp->last_io_ms);
        if (pp->timeout_ms >= 0 && idle >= pp->timeout_ms) {
            err->code = NEGSTREAM_E_TIMEOUT;
            err->sys_errno = 0;
            snprintf(err->message, sizeof(err->message),
                     "no data in either direction for %d s (--timeout)",
                     pp->timeout_ms / 1000);
            return -1;
        }
    }
}

/* Copies the decrypted stream to pp->out_fd until a clean EOF.  A closed
 * output (EPIPE) ends the copy but not the reading: the rest is read and
 * discarded so that the peer, still sending, is never blocked. */
static void *pump_from_stream(void *arg)
{
    struct pump *pp = arg;
    unsigned char *buf = malloc(RECV_SIZE);
    negstream_error err;
    bool maybe_buffered = false;

    pp->rc = EXIT_IO;
    if (buf == NULL) {
        say("receiving: out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n;

        /* The library keeps the rest of a frame larger than our count;
         * only a read that filled our buffer can leave some behind, and
         * then poll() would not see it. */
        if (pp->timeout_ms >= 0 && !maybe_buffered &&
            wait_readable(pp, &err) != 0) {
            report(&err, "receiving");
            goto out;
        }
        n = negstream_read(pp->s, buf, RECV_SIZE, 0, RECV_SIZE, &err);
        if (n < 0) {
            /* After a failed send the socket was shut down to wake us;
             * the sender has said what went wrong. */
            if (!atomic_load(&pp->stopping))
                report(&err, "receiving");
            goto out;
        }
        if (n == 0)
            break;
        maybe_buffered = n == RECV_SIZE;
        atomic_store(pp->last_io_ms, now_ms());
        pp->bytes += (uint64_t)n;
        if (pp->pg != NULL)
            progress_add(pp->pg, (size_t)n);
        if (pp->out_fd < 0) {
            if (!pp->out_closed)
                pp->discarded += (uint64_t)n;
            continue;
        }
        if (write_all(pp->out_fd, buf, (size_t)n) != 0) {
            if (errno != EPIPE) {
                say("writing to %s: %s", pp->out_name, strerror(errno));
                goto out;
            }
            note("%s was closed; discarding the rest of the stream",
                 pp->out_name);
            if (pp->close_out)
                close(pp->out_fd);
            pp->out_fd = -1;
            pp->out_closed = true;
            pp->close_out = false;
        }
    }
    note("end of the received stream after %" PRIu64 " bytes", pp->bytes);
    pp->rc = EXIT_OK;
out:
    if (pp->close_out && pp->out_fd >= 0) {
        close(pp->out_fd);   /* the command sees EOF on its stdin */
        pp->out_fd = -1;
    }
    if (pp->rc != EXIT_OK && pp->wake_fd >= 0)
        write_quietly(pp->wake_fd, "x");    /* stop the sending side */
    free(buf);
    return NULL;
}

/* ---- the sending direction: fd -> stream ------------------------------- */

/* Waits for one pending write, redrawing the progress bar meanwhile, and
 * ends it (which frees ar).  Returns 0 or -1 (reported). */
static int finish_write(negstream *s, negstream_async *ar, size_t len,
                        struct progress *pg, atomic_llong *last_io_ms)
{
    negstream_error err;

    while (!negstream_async_wait(ar, POLL_SLICE_MS))
        progress_draw(pg, false);
    if (negstream_end_write(s, ar, &err) != 0) {
        report(&err, "sending");
        return -1;
    }
    atomic_store(last_io_ms, now_ms());
    progress_add(pg, len);
    return 0;
}

/* Sends in_fd to the stream until EOF with two buffers: while block i is
 * written on a worker, block i+1 is read.  Only one write is pending at a
 * time (MS-NNS frames must go out in order).  Returns an exit status. */
static int pump_to_stream(negstream *s, int in_fd, const char *in_name,
                          int wake_fd, int timeout_ms, struct progress *pg,
                          atomic_llong *last_io_ms)
{
    unsigned char *buf[2];
    negstream_async *pending = NULL;
    size_t pending_len = 0;
    negstream_error err;
    int cur = 0, rc = EXIT_IO;

    buf[0] = malloc(BLOCK_SIZE);
    buf[1] = malloc(BLOCK_SIZE);
    if (buf[0] == NULL || buf[1] == NULL) {
        say("sending: out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = read_input(in_fd, wake_fd, buf[cur], BLOCK_SIZE,
                               timeout_ms, last_io_ms);
        int saved = errno;

        if (pending != NULL) {
            negstream_async *ar = pending;

            pending = NULL;        /* ended below, success or not */
            if (finish_write(s, ar, pending_len, pg, last_io_ms) != 0)
                goto out;
        }
        if (n == -2) {
            note("receiving failed; stopped sending");
            goto out;
        }
        if (n == -3) {
            say("sending: no data in either direction for %d s "
                "(--timeout) [%s]", timeout_ms / 1000,
                negstream_status_name(NEGSTREAM_E_TIMEOUT));
            goto out;
        }
        if (n < 0) {
            say("reading %s: %s", in_name, strerror(saved));
            goto out;
        }
        if (n == 0)
            break;
        pending = negstream_begin_write(s, buf[cur], BLOCK_SIZE, 0, n,
                                        NULL, NULL, &err);
        if (pending == NULL) {
            report(&err, "sending");
            goto out;
        }
        pending_len = (size_t)n;
        cur ^= 1;
    }
    note("end of %s; all data sent", in_name);
    rc = EXIT_OK;
out:
    /* The buffers must outlive the pending write: end it first. */
    if (pending != NULL)
        (void)negstream_end_write(s, pending, NULL);
    free(buf[1]);
    free(buf[0]);
    return rc;
}

/* ---- both directions at once ------------------------------------------- */

/* Runs out of in_fd -> stream on this thread and stream -> rx->out_fd on
 * a second one; half-closes the socket when in_fd is exhausted and waits
 * for the peer's EOF.  Returns an exit status. */
static int copy_both_ways(negstream *s, int sock, int in_fd,
                          const char *in_name, struct pump *rx,
                          struct progress *tx_pg)
{
    pthread_t th;
    int wake[2] = { -1, -1 };
    atomic_llong last_io_ms;
    int rc = EXIT_IO, e, tx_rc;

    atomic_init(&last_io_ms, now_ms());
    if (pipe2(wake, O_CLOEXEC) != 0) {
        say("pipe: %s", strerror(errno));
        goto out;
    }
    rx->s = s;
    rx->sock = sock;
    rx->wake_fd = wake[1];
    rx->last_io_ms = &last_io_ms;
    e = pthread_create(&th, NULL, pump_from_stream, rx);
    if (e != 0) {
        say("pthread_create: %s", strerror(e));
        goto out;
    }
    tx_rc = pump_to_stream(s, in_fd, in_name, wake[0], rx->timeout_ms,
                           tx_pg, &last_io_ms);
    if (tx_rc == EXIT_OK) {
        /* No half-close in MS-NNS: the peer reads EOF between frames. */
        note("half-closing the connection (shutdown SHUT_WR)");
        if (shutdown(sock, SHUT_WR) != 0 && errno != ENOTCONN)
            say("shutdown: %s", strerror(errno));
    } else {
        atomic_store(&rx->stopping, true);
        shutdown(sock, SHUT_RDWR);   /* wake the receiving thread */
    }
    pthread_join(th, NULL);
    progress_finish(tx_pg);
    rc = tx_rc != EXIT_OK ? tx_rc : rx->rc;
out:
    if (wake[1] >= 0)
        close(wake[1]);
    if (wake[0] >= 0)
        close(wake[0]);
    return rc;
}

/* ---- connections ------------------------------------------------------- */

static void describe_addr(const struct sockaddr *sa, socklen_t len,
                          char *buf, size_t n)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];

    if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(buf, n, "?");
    else if (sa->sa_family == AF_INET6)
        snprintf(buf, n, "[%s]:%s", host, serv);
    else
        snprintf(buf, n, "%s:%s", host, serv);
}

/* connect() bounded by timeout_ms (-1: none).  Returns 0 or errno. */
static int connect_timeout(int fd, const struct sockaddr *sa, socklen_t len,
                           int timeout_ms)
{
    int flags = fcntl(fd, F_GETFL), e = 0;
    socklen_t elen = sizeof(e);
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int r;

    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return errno;
    if (connect(fd, sa, len) == 0)
        goto done;
    if (errno != EINPROGRESS && errno != EINTR)
        return errno;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno;
    if (r == 0)
        return ETIMEDOUT;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) != 0)
        return errno;
    if (e != 0)
        return e;
done:
    /* The library and our poll loops expect a blocking socket. */
    if (fcntl(fd, F_SETFL, flags) != 0)
        return errno;
    return 0;
}

/* Connects to host:port, trying each address.  Returns the fd or -1
 * (reported). */
static int dial(const struct opts *o)
{
    struct addrinfo hints, *res = NULL, *ai;
    char where[NI_MAXHOST + NI_MAXSERV + 4];
    int fd = -1, e = 0, g;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    g = getaddrinfo(o->host, o->port, &hints, &res);
    if (g != 0) {
        say("%s port %s: %s", o->host, o->port, gai_strerror(g));
        goto out;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        describe_addr(ai->ai_addr, ai->ai_addrlen, where, sizeof(where));
        note("connecting to %s", where);
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        e = connect_timeout(fd, ai->ai_addr, ai->ai_addrlen, o->timeout_ms);
        if (e == 0) {
            note("connected to %s", where);
            goto out;
        }
        close(fd);
        fd = -1;
    }
    say("connecting to %s port %s: %s", o->host, o->port, strerror(e));
out:
    if (res != NULL)
        freeaddrinfo(res);
    return fd;
}

/* A listening socket on bind_addr:port.  Returns the fd or -1 (reported).
 */
static int listen_on(const struct opts *o)
{
    struct addrinfo hints, *res = NULL, *ai;
    char where[NI_MAXHOST + NI_MAXSERV + 4];
    int fd = -1, e = 0, g, one = 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    g = getaddrinfo(o->bind_addr, o->port, &hints, &res);
    if (g != 0) {
        say("%s port %s: %s", o->bind_addr, o->port, gai_strerror(g));
        goto out;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        /* A restarted server must not wait for TIME_WAIT to pass. */
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 16) == 0) {
            describe_addr(ai->ai_addr, ai->ai_addrlen, where, sizeof(where));
            note("listening on %s", where);
            goto out;
        }
        e = errno;
        close(fd);
        fd = -1;
    }
    say("listening on %s port %s: %s", o->bind_addr, o->port, strerror(e));
out:
    if (res != NULL)
        freeaddrinfo(res);
    return fd;
}

static const char *protection_name(const negstream *s)
{
    if (negstream_is_encrypted(s))
        return "encrypt";
    if (negstream_is_signed(s))
        return "sign";
    return "none";
}

static void announce(const negstream *s)
{
    const char *id = negstream_remote_identity(s);
    const char *mech = negstream_authentication_type(s);

    say("authenticated %s via %s (%s, mutual=%s)", id ? id : "(unknown)",
        mech ? mech : "(unknown)", protection_name(s),
        negstream_is_mutually_authenticated(s) ? "yes" : "no");
}

/* A new stream over fd with the --timeout applied.  On failure fd is
 * closed and NULL returned (reported). */
static negstream *open_stream(const struct opts *o, int fd)
{
    negstream_error err;
    negstream *s = negstream_new(fd, false, &err);

    if (s == NULL) {
        report(&err, "creating the stream");
        close(fd);
        return NULL;
    }
    /* --timeout bounds the whole authentication too (the library's
     * default for it is 60 s). */
    if (o->timeout_ms >= 0 &&
        (negstream_set_timeouts(s, o->timeout_ms, o->timeout_ms, &err) != 0
         || negstream_set_auth_timeout(s, o->timeout_ms, &err) != 0)) {
        report(&err, "setting the timeouts");
        negstream_close(s);
        return NULL;
    }
    return s;
}

/* ---- the client -------------------------------------------------------- */

static uint64_t input_size(const struct opts *o)
{
    struct stat st;
    off_t pos;

    if (o->size > 0)
        return o->size;
    if (fstat(STDIN_FILENO, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    pos = lseek(STDIN_FILENO, 0, SEEK_CUR);
    if (pos < 0 || pos > st.st_size)
        pos = 0;
    return (uint64_t)(st.st_size - pos);
}

static int run_client(const struct opts *o)
{
    negstream_client_options co;
    negstream_error err;
    negstream *s = NULL;
    struct progress pg;
    struct pump rx;
    int fd, rc = EXIT_NET;

    fd = dial(o);
    if (fd < 0)
        goto out;
    s = open_stream(o, fd);
    if (s == NULL)
        goto out;
    negstream_client_options_init(&co);
    co.target_name = o->target;
    co.protection = o->protection;
    co.mechanism = o->mech;
    co.require_mutual_auth = o->require_mutual;
    if (o->user != NULL) {
        co.user = o->user;
        co.domain = o->domain;
        co.password = password;
    }
    note("authenticating to %s (%s)", o->target, o->mech);
    rc = negstream_authenticate_as_client(s, &co, &err);
    /* Used up: the credentials were acquired (or not) with it. */
    wipe(password, sizeof(password));
    co.password = NULL;
    if (rc != 0) {
        report(&err, "authenticating to %s", o->target);
        rc = exit_for(&err, false);
        goto out;
    }
    if (verbose_on)
        announce(s);

    pump_init(&rx, o->read_back ? STDOUT_FILENO : -1, "standard output",
              o->timeout_ms, NULL);
    progress_init(&pg, "sent", o->progress, input_size(o));
    rc = copy_both_ways(s, fd, STDIN_FILENO, "standard input", &rx, &pg);
    if (rx.discarded > 0)
        say("discarded %" PRIu64 " bytes sent by the server "
            "(use -r to print them)", rx.discarded);
out:
    if (s != NULL)
        negstream_close(s);
    return rc;
}

/* ---- the server -------------------------------------------------------- */

/* Starts "/bin/sh -c cmd" with pipes for stdin and stdout.  Returns the
 * PID or -1 (reported). */
static pid_t spawn_command(const char *cmd, int *to_child, int *from_child)
{
    int in[2] = { -1, -1 }, out[2] = { -1, -1 };
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t def, none;
    char *argv[4];
    pid_t pid = -1;
    int e;

    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        say("pipe: %s", strerror(errno));
        goto fail;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawnattr_init(&at);
    /* We ignore SIGPIPE; the command must get the default back, since
     * an ignored disposition survives exec. */
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF |
                                  POSIX_SPAWN_SETSIGMASK);
    argv[0] = (char *)"sh";
    argv[1] = (char *)"-c";
    argv[2] = (char *)cmd;
    argv[3] = NULL;
    e = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) {
        say("running /bin/sh -c '%s': %s", cmd, strerror(e));
        pid = -1;
        goto fail;
    }
    note("started '%s' (pid %ld)", cmd, (long)pid);
    close(in[0]);
    close(out[1]);
    *to_child = in[1];
    *from_child = out[0];
    return pid;
fail:
    if (in[0] >= 0) {
        close(in[0]);
        close(in[1]);
    }
    if (out[0] >= 0) {
        close(out[0]);
        close(out[1]);
    }
    return -1;
}

/* --exec: the stream feeds the command, the command's output goes back. */
static int serve_exec(const struct opts *o, negstream *s, int fd,
                      struct progress *pg)
{
    struct pump rx;
    int to_child = -1, from_child = -1, status, rc = EXIT_IO;
    struct progress tx_pg;
    pid_t pid, w;

    pid = spawn_command(o->exec_cmd, &to_child, &from_child);
    if (pid < 0)
        goto out;
    pump_init(&rx, to_child, "the command", o->timeout_ms, pg);
    rx.close_out = true;                  /* the thread closes it */
    progress_init(&tx_pg, "sent", 0, 0);
    rc = copy_both_ways(s, fd, from_child, "the command's output", &rx,
                        &tx_pg);
    do
        w = waitpid(pid, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        say("waitpid: %s", strerror(errno));
        rc = EXIT_IO;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        say("'%s' exited with status %d", o->exec_cmd, WEXITSTATUS(status));
        rc = rc != EXIT_OK ? rc : EXIT_IO;
    } else if (WIFSIGNALED(status)) {
        say("'%s' was killed by signal %d", o->exec_cmd, WTERMSIG(status));
        rc = rc != EXIT_OK ? rc : EXIT_IO;
    }
out:
    if (from_child >= 0)
        close(from_child);
    return rc;
}

/* Authenticates one client and serves it.  Takes fd.  Returns an exit
 * status. */
static int serve_client(const struct opts *o, int fd, const char *peer)
{
    negstream_server_options so;
    negstream_error err;
    negstream *s;
    struct progress pg;
    int rc = EXIT_NET;

    s = open_stream(o, fd);
    if (s == NULL)
        goto out;
    negstream_server_options_init(&so);
    so.service_name = o->service;
    so.protection = o->protection;
    so.mechanism = o->mech;
    note("authenticating %s", peer);
    if (negstream_authenticate_as_server(s, &so, &err) != 0) {
        report(&err, "authenticating %s", peer);
        rc = exit_for(&err, false);
        goto out;
    }
    announce(s);
    progress_init(&pg, "received", o->progress, o->size);
    if (o->exec_cmd != NULL) {
        rc = serve_exec(o, s, fd, &pg);
    } else {
        struct pump rx;
        atomic_llong last_io_ms;

        atomic_init(&last_io_ms, now_ms());
        pump_init(&rx, STDOUT_FILENO, "standard output", o->timeout_ms,
                  &pg);
        rx.s = s;
        rx.sock = fd;
        rx.last_io_ms = &last_io_ms;
        pump_from_stream(&rx);
        rc = rx.rc;
    }
    progress_finish(&pg);
    note("closing the connection from %s", peer);
out:
    if (s != NULL)
        negstream_close(s);
    return rc;
}

static int run_server(const struct opts *o)
{
    int lfd, rc = EXIT_NET;

    lfd = listen_on(o);
    if (lfd < 0)
        goto out;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char peer[NI_MAXHOST + NI_MAXSERV + 4];
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            say("accept: %s", strerror(errno));
            rc = EXIT_NET;
            break;
        }
        describe_addr((struct sockaddr *)&ss, len, peer, sizeof(peer));
        note("connection from %s", peer);
        rc = serve_client(o, fd, peer);
        if (o->once)
            break;
    }
    close(lfd);
out:
    return rc;
}

/* ---- options ----------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs(
"usage: negcat -l [-p PORT] [-b ADDR] [--service NAME] [--once]\n"
"              [--exec CMD] [options]\n"
"       negcat HOST PORT [--target SPN] [-r] [options]\n"
"\n"
"Server (-l): accept clients one after another on ADDR (default "
DEFAULT_BIND ")\n"
"and PORT (default " DEFAULT_PORT "), authenticate each, and copy the "
"decrypted\nstream to stdout, or with --exec to CMD's stdin (CMD's stdout "
"goes back).\n"
"Client: authenticate to SPN (default host/HOST), send stdin; with -r "
"print\nwhat the server sends back.\n"
"\n"
"  -l, --listen             listen (server mode)\n"
"  -p, --port PORT          port to listen on (default " DEFAULT_PORT ")\n"
"  -b, --bind ADDR          address to listen on (default " DEFAULT_BIND
")\n"
"      --service NAME       acceptor principal (default: any in keytab)\n"
"      --once               serve one client, exit with its status\n"
"  -e, --exec CMD           run /bin/sh -c CMD for each client\n"
"  -t, --target SPN         service principal of the server\n"
"  -r, --read-back          print what the server sends to stdout\n"
"      --protection LEVEL   none, sign or encrypt (default encrypt)\n"
"      --mech MECH          negotiate (default), kerberos or ntlm\n"
"      --user USER          authenticate as USER with a password\n"
"      --domain DOMAIN      USER's domain (NTLM)\n"
"      --password-file FILE read USER's password from FILE's first line\n"
"                           (without it, negcat asks on the terminal)\n"
"      --timeout SECS       connect timeout and I/O idle timeout\n"
"      --progress           progress on stderr (default: if a terminal)\n"
"      --no-progress        no progress\n"
"      --size N[KMG]        size of the data, for percentage and ETA\n"
"      --require-mutual     fail unless mutual authentication is granted\n"
"  -v, --verbose            trace negcat's and the library's steps\n"
"  -h, --help               this help\n"
"      --version            print the version\n"
"\n"
"Exit status: 0 success, 1 usage, 2 connection, 3 authentication,\n"
"4 I/O after authentication.  See negcat(1).\n", f);
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    fputs("Try 'negcat --help' for more information.\n", stderr);
    return EXIT_USAGE;
}

static bool parse_port(const char *s)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && s[0] != '-' &&
           v >= 1 && v <= 65535;
}

static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    errno = 0;
    if (s[0] == '-')
        return false;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return false;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: return false;
    }
    if (*end != '\0' || v == 0 || v > (UINT64_MAX >> shift))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

/* Reads the first line of path into password[].  With open(2) and
 * read(2) straight into password[]: a stdio stream would leave a copy in
 * its buffer, freed unwiped by fclose.  Bytes read past the first line
 * are wiped.  Returns 0 or an exit status (reported). */
static int read_password_file(const char *path)
{
    size_t n = 0, len = 0;
    ssize_t r;
    int fd, rc = EXIT_USAGE;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        say("--password-file %s: %s", path, strerror(errno));
        goto out;
    }
    /* Until a line end, EOF, or the buffer is full. */
    while (n < sizeof(password) - 1 &&
           memchr(password, '\n', n) == NULL &&
           memchr(password, '\r', n) == NULL) {
        r = read(fd, password + n, sizeof(password) - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            say("--password-file %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    for (len = 0; len < n; len++)
        if (password[len] == '\n' || password[len] == '\r')
            break;
    if (len == n && n == sizeof(password) - 1) {
        say("--password-file %s: the first line is longer than %d bytes",
            path, PASSWORD_MAX - 1);
        goto out;
    }
    if (n == 0) {
        say("--password-file %s: the file is empty", path);
        goto out;
    }
    if (len == 0) {
        say("--password-file %s: the first line is empty", path);
        goto out;
    }
    rc = 0;
out:
    /* The rest of the file (or all of it, on failure) is not kept. */
    wipe(password + (rc == 0 ? len : 0),
         sizeof(password) - (rc == 0 ? len : 0));
    if (fd >= 0)
        close(fd);
    return rc;
}

static volatile sig_atomic_t prompt_sig;

static void on_prompt_signal(int sig)
{
    prompt_sig = sig;
}

/* Asks for the password on /dev/tty with echo off.  A signal (^C) while
 * asking restores the terminal before it takes effect.  Returns 0 or an
 * exit status (reported). */
static int prompt_password(const char *user)
{
    struct termios old, quiet;
    struct sigaction sa, old_int, old_term, old_quit;
    bool restore = false;
    size_t n = 0;
    int fd, rc = EXIT_USAGE, sig;
    char c;

    fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        say("--user %s needs a password: no terminal to ask on (%s); "
            "use --password-file FILE", user, strerror(errno));
        return EXIT_USAGE;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_prompt_signal;   /* no SA_RESTART: read() returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGQUIT, &sa, &old_quit);
    if (tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        quiet.c_lflag |= ICANON;
        restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    dprintf(fd, "Password for %s: ", user);
    for (;;) {
        ssize_t r = read(fd, &c, 1);

        if (r < 0 && errno == EINTR && prompt_sig == 0)
            continue;
        if (r <= 0 || c == '\n')
            break;
        if (n + 1 >= sizeof(password)) {
            n = sizeof(password);   /* too long: reported below */
            continue;
        }
        password[n++] = c;
    }
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &old);
    write_quietly(fd, "\n");
    sig = prompt_sig;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    if (sig != 0) {
        wipe(password, sizeof(password));
        close(fd);
        raise(sig);                 /* now with the old disposition */
        return EXIT_USAGE;
    }
    if (n >= sizeof(password)) {
        say("the password is longer than %d bytes", PASSWORD_MAX - 1);
        goto out;
    }
    password[n] = '\0';
    if (n == 0) {
        say("no password given");
        goto out;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

enum {
    OPT_SERVICE = 256, OPT_ONCE, OPT_PROTECTION, OPT_MECH, OPT_USER,
    OPT_DOMAIN, OPT_PASSWORD_FILE, OPT_PASSWORD, OPT_TIMEOUT, OPT_PROGRESS,
    OPT_NO_PROGRESS, OPT_SIZE, OPT_REQUIRE_MUTUAL, OPT_VERSION
};

static const struct option long_opts[] = {
    { "listen", no_argument, NULL, 'l' },
    { "port", required_argument, NULL, 'p' },
    { "bind", required_argument, NULL, 'b' },
    { "service", required_argument, NULL, OPT_SERVICE },
    { "once", no_argument, NULL, OPT_ONCE },
    { "exec", required_argument, NULL, 'e' },
    { "target", required_argument, NULL, 't' },
    { "read-back", no_argument, NULL, 'r' },
    { "protection", required_argument, NULL, OPT_PROTECTION },
    { "mech", required_argument, NULL, OPT_MECH },
    { "user", required_argument, NULL, OPT_USER },
    { "domain", required_argument, NULL, OPT_DOMAIN },
    { "password-file", required_argument, NULL, OPT_PASSWORD_FILE },
    { "password", optional_argument, NULL, OPT_PASSWORD },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "progress", no_argument, NULL, OPT_PROGRESS },
    { "no-progress", no_argument, NULL, OPT_NO_PROGRESS },
    { "size", required_argument, NULL, OPT_SIZE },
    { "require-mutual", no_argument, NULL, OPT_REQUIRE_MUTUAL },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, OPT_VERSION },
    { NULL, 0, NULL, 0 }
};

/* Fills o from argv.  Returns -1 to go on, or an exit status (help,
 * version and usage errors are handled here). */
static int parse_args(int argc, char **argv, struct opts *o,
                      char *target_buf, size_t target_len)
{
    bool client_only = false, server_only = false;
    const char *client_opt = NULL, *server_opt = NULL;
    int c;

    memset(o, 0, sizeof(*o));
    o->progress = -1;
    o->timeout_ms = -1;
    o->bind_addr = DEFAULT_BIND;
    o->port = DEFAULT_PORT;
    o->mech = "negotiate";
    o->protection = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    opterr = 0;                        /* our own messages, below */
    while ((c = getopt_long(argc, argv, ":lp:b:e:t:rvh", long_opts,
                            NULL)) != -1) {
        switch (c) {
        case 'l': o->listen = true; break;
        case 'p':
            if (!parse_port(optarg))
                return usage_error("-p %s: not a port (1-65535)", optarg);
            o->port = optarg;
            server_only = true;
            server_opt = "-p";
            break;
        case 'b': o->bind_addr = optarg;
            server_only = true;
            server_opt = "-b";
            break;
        case OPT_SERVICE: o->service = optarg;
            server_only = true;
            server_opt = "--service";
            break;
        case OPT_ONCE: o->once = true;
            server_only = true;
            server_opt = "--once";
            break;
        case 'e': o->exec_cmd = optarg;
            server_only = true;
            server_opt = "--exec";
            break;
        case 't': o->target = optarg;
            client_only = true;
            client_opt = "--target";
            break;
        case 'r': o->read_back = true;
            client_only = true;
            client_opt = "-r";
            break;
        case OPT_PROTECTION:
            if (strcmp(optarg, "none") == 0)
                o->protection = NEGSTREAM_PROTECTION_NONE;
            else if (strcmp(optarg, "sign") == 0)
                o->protection = NEGSTREAM_PROTECTION_SIGN;
            else if (strcmp(optarg, "encrypt") == 0)
                o->protection = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
            else
                return usage_error("--protection %s: use none, sign or "
                                   "encrypt", optarg);
            break;
        case OPT_MECH:
            if (strcmp(optarg, "negotiate") != 0 &&
                strcmp(optarg, "kerberos") != 0 &&
                strcmp(optarg, "ntlm") != 0)
                return usage_error("--mech %s: use negotiate, kerberos or "
                                   "ntlm", optarg);
            o->mech = optarg;
            break;
        case OPT_USER: o->user = optarg;
            client_only = true;
            client_opt = "--user";
            break;
        case OPT_DOMAIN: o->domain = optarg;
            client_only = true;
            client_opt = "--domain";
            break;
        case OPT_PASSWORD_FILE: o->password_file = optarg;
            client_only = true;
            client_opt = "--password-file";
            break;
        case OPT_PASSWORD:
            return usage_error("--password is refused: a password on the "
                "command line can be read by every user (ps, "
                "/proc/PID/cmdline) and stays in the shell history; use "
                "--password-file FILE or let negcat ask on the terminal");
        case OPT_TIMEOUT: {
            char *end;
            long v;

            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || v < 1 ||
                v > INT_MAX / 1000)
                return usage_error("--timeout %s: not a number of seconds "
                                   "(1-%d)", optarg, INT_MAX / 1000);
            o->timeout_ms = (int)v * 1000;
            break;
        }
        case OPT_PROGRESS: o->progress = 1; break;
        case OPT_NO_PROGRESS: o->progress = 0; break;
        case OPT_SIZE:
            if (!parse_size(optarg, &o->size))
                return usage_error("--size %s: not a size (N, NK, NM or "
                                   "NG)", optarg);
            break;
        case OPT_REQUIRE_MUTUAL: o->require_mutual = true;
            client_only = true;
            client_opt = "--require-mutual";
            break;
        case 'v': o->verbose = true; break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case OPT_VERSION:
            printf("negcat %d.%d.%d (libnegstream %s)\n",
                   NEGSTREAM_VERSION_MAJOR, NEGSTREAM_VERSION_MINOR,
                   NEGSTREAM_VERSION_PATCH, negstream_version());
            return EXIT_OK;
        case ':':
            return usage_error("%s needs an argument", argv[optind - 1]);
        default:
            if (optopt != 0 && optopt < 256)
                return usage_error("unknown option -%c", optopt);
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (o->listen) {
        if (client_only)
            return usage_error("%s is a client option (not with -l)",
                               client_opt);
        if (optind != argc)
            return usage_error("unexpected argument '%s' with -l (the "
                               "port goes with -p)", argv[optind]);
    } else {
        if (server_only)
            return usage_error("%s needs -l (it is a server option)",
                               server_opt);
        if (argc - optind != 2)
            return usage_error("a client needs HOST and PORT");
        o->host = argv[optind];
        o->port = argv[optind + 1];
        if (!parse_port(o->port))
            return usage_error("%s: not a port (1-65535)", o->port);
        if (o->target == NULL) {
            snprintf(target_buf, target_len, "host/%s", o->host);
            o->target = target_buf;
        }
        if ((o->domain != NULL || o->password_file != NULL) &&
            o->user == NULL)
            return usage_error("--domain and --password-file need --user");
    }
    return -1;
}

/* True if NEGSTREAM_TRACE already turns the library's trace on. */
static bool trace_set(void)
{
    const char *v = getenv("NEGSTREAM_TRACE");

    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

int main(int argc, char **argv)
{
    char target_buf[NI_MAXHOST + 8];
    struct opts o;
    int rc;

    rc = parse_args(argc, argv, &o, target_buf, sizeof(target_buf));
    if (rc >= 0)
        goto out;
    verbose_on = o.verbose;
    /* Before any other library call: the library reads it once.  A
     * trace file the user already named is kept. */
    if (o.verbose && !trace_set() &&
        setenv("NEGSTREAM_TRACE", "1", 1) != 0) {
        say("setenv: %s", strerror(errno));
        rc = EXIT_USAGE;
        goto out;
    }
    /* A closed stdout or pipe is the end of the output, not a death. */
    signal(SIGPIPE, SIG_IGN);
    if (o.user != NULL) {
        rc = o.password_file != NULL ? read_password_file(o.password_file)
                                     : prompt_password(o.user);
        if (rc != 0)
            goto out;
    }
    rc = o.listen ? run_server(&o) : run_client(&o);
out:
    wipe(password, sizeof(password));
    return rc;
}
