/*
 * iotransport.c - custom transports for the tests (see iotransport.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "iotransport.h"
#if HAVE_OPENSSL
#include <limits.h>
#include <openssl/err.h>
#endif

static void die(const char *what)
{
    fprintf(stderr, "iotransport: %s: %s\n", what, strerror(errno));
    abort();
}

/* ---- the hooks every transport runs through ---------------------------- */

/* Entering a read or write: counts it, notes an overlap or a call after
 * close or shutdown, and hands out an injected failure (errno > 0). */
static int hooks_enter(tio_hooks *h, bool is_read)
{
    int e;

    if (atomic_fetch_add(&h->inside, 1) != 0)
        atomic_fetch_add(&h->overlaps, 1);
    if (atomic_load(&h->closes) > 0)
        atomic_fetch_add(&h->after_close, 1);
    if (atomic_load(&h->shutdowns) > 0)
        atomic_fetch_add(&h->after_shutdown, 1);
    atomic_fetch_add(is_read ? &h->reads : &h->writes, 1);
    e = atomic_exchange(is_read ? &h->fail_read : &h->fail_write, 0);
    return e;
}

static ssize_t hooks_leave(tio_hooks *h, ssize_t r)
{
    int saved = errno;

    atomic_fetch_sub(&h->inside, 1);
    errno = saved;
    return r;
}

static ssize_t would_block(tio_hooks *h, ssize_t r, int e)
{
    atomic_fetch_add(&h->would_blocks, 1);
    errno = e;
    return hooks_leave(h, r);
}

static ssize_t failed(tio_hooks *h, int e)
{
    errno = e;
    return hooks_leave(h, -1);
}

/* Whether the calling thread holds the stream's lock: a lock held by
 * another thread is released soon (no library lock is held for long); one
 * held by this thread, never, since this thread is here. */
static void check_unlocked(tio_hooks *h)
{
    int i;

    if (h->lib_lock == NULL)
        return;
    for (i = 0; i < 2000; i++) {
        if (pthread_mutex_trylock(h->lib_lock) == 0) {
            pthread_mutex_unlock(h->lib_lock);
            return;
        }
        usleep(1000);
    }
    atomic_fetch_add(&h->under_lock, 1);
}

static void hooks_shutdown(tio_hooks *h)
{
    check_unlocked(h);
    if (atomic_fetch_add(&h->inside, 1) != 0)
        atomic_fetch_add(&h->overlaps, 1);
    if (atomic_load(&h->closes) > 0)
        atomic_fetch_add(&h->after_close, 1);
    atomic_fetch_add(&h->shutdowns, 1);
    atomic_fetch_sub(&h->inside, 1);
}

static void hooks_close(tio_hooks *h)
{
    check_unlocked(h);
    atomic_store(&h->close_tid, (long)syscall(SYS_gettid));
    if (atomic_load(&h->inside) != 0)
        atomic_fetch_add(&h->overlaps, 1);
    if (atomic_fetch_add(&h->closes, 1) > 0)
        atomic_fetch_add(&h->after_close, 1);
}

bool tio_wait_closed(void *ctx, int timeout_ms)
{
    tio_hooks *h = TIO_HOOKS(ctx);
    int i;

    for (i = 0; i < timeout_ms; i++) {
        if (atomic_load(&h->closes) > 0)
            return true;
        usleep(1000);
    }
    return atomic_load(&h->closes) > 0;
}

/* ---- over a socket ------------------------------------------------------ */

typedef struct sock_ctx {
    tio_hooks  h;               /* first */
    int        kind;
    int        fd;
    size_t     piece;
    unsigned   wb_every;
    atomic_uint rcalls, wcalls;
} sock_ctx;

enum { KIND_SOCKET = 1, KIND_PIPE, KIND_MEM, KIND_TLS };

static ssize_t sock_read(void *ctx, void *buf, size_t len)
{
    sock_ctx *c = ctx;
    int e = hooks_enter(&c->h, true);
    ssize_t r;

    if (e > 0)
        return failed(&c->h, e);
    if (c->wb_every > 0 &&
        atomic_fetch_add(&c->rcalls, 1) % c->wb_every == 0)
        return would_block(&c->h, -1, EAGAIN);
    if (c->piece > 0 && len > c->piece)
        len = c->piece;
    r = recv(c->fd, buf, len, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        atomic_fetch_add(&c->h.would_blocks, 1);
    return hooks_leave(&c->h, r);
}

static ssize_t sock_write(void *ctx, const void *buf, size_t len)
{
    sock_ctx *c = ctx;
    int e = hooks_enter(&c->h, false);
    ssize_t r;

    if (e > 0)
        return failed(&c->h, e);
    if (c->wb_every > 0 &&
        atomic_fetch_add(&c->wcalls, 1) % c->wb_every == 0)
        return would_block(&c->h, -1, EWOULDBLOCK);
    r = send(c->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        atomic_fetch_add(&c->h.would_blocks, 1);
    return hooks_leave(&c->h, r);
}

static void sock_shutdown(void *ctx)
{
    sock_ctx *c = ctx;

    hooks_shutdown(&c->h);
    shutdown(c->fd, SHUT_RDWR);
}

static void sock_close(void *ctx)
{
    sock_ctx *c = ctx;

    hooks_close(&c->h);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->h.free_on_close)
        free(c);
}

void *tio_socket_new(int fd, size_t piece, unsigned wb_every,
                     negstream_io *io)
{
    sock_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        die("calloc");
    c->kind = KIND_SOCKET;
    c->fd = fd;
    c->piece = piece;
    c->wb_every = wb_every;
    negstream_io_init(io);
    io->read_fd = fd;
    io->read = sock_read;
    io->write = sock_write;
    io->shutdown = sock_shutdown;
    io->close = sock_close;
    return c;
}

/* ---- over two pipes ----------------------------------------------------- */

typedef struct pipe_ctx {
    tio_hooks h;                /* first */
    int       kind;
    int       rfd, wfd;
} pipe_ctx;

static ssize_t pipe_read(void *ctx, void *buf, size_t len)
{
    pipe_ctx *c = ctx;
    int e = hooks_enter(&c->h, true);

    if (e > 0)
        return failed(&c->h, e);
    return hooks_leave(&c->h, read(c->rfd, buf, len));
}

static ssize_t pipe_write(void *ctx, const void *buf, size_t len)
{
    pipe_ctx *c = ctx;
    int e = hooks_enter(&c->h, false);

    if (e > 0)
        return failed(&c->h, e);
    return hooks_leave(&c->h, write(c->wfd, buf, len));
}

/* The end of what this end sends: the peer reads 0. */
static void pipe_shutdown(void *ctx)
{
    pipe_ctx *c = ctx;

    hooks_shutdown(&c->h);
    if (c->wfd >= 0)
        close(c->wfd);
    c->wfd = -1;
}

static void pipe_close(void *ctx)
{
    pipe_ctx *c = ctx;

    hooks_close(&c->h);
    if (c->rfd >= 0)
        close(c->rfd);
    if (c->wfd >= 0)
        close(c->wfd);
    c->rfd = c->wfd = -1;
    if (c->h.free_on_close)
        free(c);
}

static pipe_ctx *pipe_end(int rfd, int wfd, negstream_io *io)
{
    pipe_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        die("calloc");
    c->kind = KIND_PIPE;
    c->rfd = rfd;
    c->wfd = wfd;
    negstream_io_init(io);
    io->flags = NEGSTREAM_IO_CONCURRENT;
    io->read_fd = rfd;
    io->write_fd = wfd;
    io->read = pipe_read;
    io->write = pipe_write;
    io->shutdown = pipe_shutdown;
    io->close = pipe_close;
    return c;
}

void tio_pipe_pair(negstream_io *ioa, void **a, negstream_io *iob,
                   void **b)
{
    int ab[2], ba[2];

    if (pipe2(ab, O_NONBLOCK | O_CLOEXEC) != 0 ||
        pipe2(ba, O_NONBLOCK | O_CLOEXEC) != 0)
        die("pipe2");
    *a = pipe_end(ba[0], ab[1], ioa);
    *b = pipe_end(ab[0], ba[1], iob);
}

/* ---- in memory ---------------------------------------------------------- */

/* One direction: bytes queued by one end for the other, and a pipe used
 * as a signal: one byte in it while bytes (or the end) wait. */
typedef struct mem_link {
    pthread_mutex_t mu;
    uint8_t        *buf;
    size_t          len, pos, cap;
    bool            eof;
    bool            signalled;
    int             sig[2];
    atomic_int      refs;
} mem_link;

typedef struct mem_ctx {
    tio_hooks   h;              /* first */
    int         kind;
    mem_link   *in, *out;
    size_t      piece;
    atomic_uint rturn, wturn;
    const void *wb_buf;         /* the write that said "would block" */
    size_t      wb_len;
} mem_ctx;

/* Caller holds l->mu: the signal says whether bytes or the end wait. */
static void link_signal(mem_link *l)
{
    bool want = l->pos < l->len || l->eof;
    char b = 0;

    if (want && !l->signalled) {
        if (write(l->sig[1], &b, 1) != 1)
            die("write to a signal pipe");
    } else if (!want && l->signalled) {
        if (read(l->sig[0], &b, 1) != 1)
            die("read from a signal pipe");
    }
    l->signalled = want;
}

static mem_link *link_new(void)
{
    mem_link *l = calloc(1, sizeof(*l));

    if (l == NULL)
        die("calloc");
    if (pipe2(l->sig, O_NONBLOCK | O_CLOEXEC) != 0)
        die("pipe2");
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->refs, 2);
    return l;
}

static void link_unref(mem_link *l)
{
    if (atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    close(l->sig[0]);
    close(l->sig[1]);
    pthread_mutex_destroy(&l->mu);
    free(l->buf);
    free(l);
}

/* Turns of a read: would block (EAGAIN), data, "must write first", data,
 * would block (WANT_READ), data. */
static ssize_t mem_read(void *ctx, void *buf, size_t len)
{
    mem_ctx *c = ctx;
    mem_link *l = c->in;
    int e = hooks_enter(&c->h, true);
    unsigned turn;
    ssize_t r;

    if (e > 0)
        return failed(&c->h, e);
    r = atomic_exchange(&c->h.bad_read, 0);
    if (r != 0)
        return hooks_leave(&c->h, r);
    turn = atomic_fetch_add(&c->rturn, 1) % 6;
    if (turn == 0)
        return would_block(&c->h, -1, EAGAIN);
    if (turn == 2) {
        atomic_fetch_add(&c->h.want_write_reads, 1);
        return would_block(&c->h, NEGSTREAM_IO_WANT_WRITE, 0);
    }
    if (turn == 4)
        return would_block(&c->h, NEGSTREAM_IO_WANT_READ, 0);
    pthread_mutex_lock(&l->mu);
    if (l->pos == l->len) {
        r = l->eof ? 0 : -1;
        pthread_mutex_unlock(&l->mu);
        if (r < 0)
            return would_block(&c->h, -1, EAGAIN);
        return hooks_leave(&c->h, 0);
    }
    if (len > c->piece)
        len = c->piece;
    if (len > l->len - l->pos)
        len = l->len - l->pos;
    memcpy(buf, l->buf + l->pos, len);
    l->pos += len;
    if (l->pos == l->len)
        l->pos = l->len = 0;
    link_signal(l);
    pthread_mutex_unlock(&l->mu);
    return hooks_leave(&c->h, (ssize_t)len);
}

/* Turns of a write: would block (WANT_WRITE), data, would block
 * (EWOULDBLOCK), data.  The call after "would block" must repeat it. */
static ssize_t mem_write(void *ctx, const void *buf, size_t len)
{
    mem_ctx *c = ctx;
    mem_link *l = c->out;
    int e = hooks_enter(&c->h, false);
    unsigned turn;

    if (e > 0)
        return failed(&c->h, e);
    if (c->wb_buf != NULL && (c->wb_buf != buf || c->wb_len != len)) {
        fprintf(stderr, "iotransport: a write after 'would block' came "
                "with %p/%zu instead of %p/%zu\n", buf, len, c->wb_buf,
                c->wb_len);
        abort();
    }
    c->wb_buf = NULL;
    e = atomic_exchange(&c->h.bad_write, 0);
    if (e != 0)
        return hooks_leave(&c->h, e == TIO_BAD_ZERO ? 0
                                  : e == TIO_BAD_MORE ? (ssize_t)len + 1
                                  : e);
    turn = atomic_fetch_add(&c->wturn, 1) % 4;
    if (turn == 0 || turn == 2) {
        c->wb_buf = buf;
        c->wb_len = len;
        return would_block(&c->h, turn == 0 ? NEGSTREAM_IO_WANT_WRITE : -1,
                           EWOULDBLOCK);
    }
    pthread_mutex_lock(&l->mu);
    if (l->eof) {
        pthread_mutex_unlock(&l->mu);
        return failed(&c->h, EPIPE);
    }
    if (len > c->piece)
        len = c->piece;
    if (l->len + len > l->cap) {
        size_t ncap = l->cap * 2 + len + 4096;
        uint8_t *nb = realloc(l->buf, ncap);

        if (nb == NULL)
            die("realloc");
        l->buf = nb;
        l->cap = ncap;
    }
    memcpy(l->buf + l->len, buf, len);
    l->len += len;
    link_signal(l);
    pthread_mutex_unlock(&l->mu);
    return hooks_leave(&c->h, (ssize_t)len);
}

static void mem_shutdown(void *ctx)
{
    mem_ctx *c = ctx;

    hooks_shutdown(&c->h);
    pthread_mutex_lock(&c->out->mu);
    c->out->eof = true;
    link_signal(c->out);
    pthread_mutex_unlock(&c->out->mu);
}

static void mem_close(void *ctx)
{
    mem_ctx *c = ctx;

    hooks_close(&c->h);
    /* What this end sends ends too (an end that never shut down). */
    pthread_mutex_lock(&c->out->mu);
    c->out->eof = true;
    link_signal(c->out);
    pthread_mutex_unlock(&c->out->mu);
    if (c->h.free_on_close)
        tio_free(c);
}

static mem_ctx *mem_end(size_t piece, mem_link *in, mem_link *out,
                        negstream_io *io)
{
    mem_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        die("calloc");
    c->kind = KIND_MEM;
    c->in = in;
    c->out = out;
    c->piece = piece > 0 ? piece : 1;
    negstream_io_init(io);
    io->read_fd = in->sig[0];
    io->write_fd = out->sig[1];
    io->read = mem_read;
    io->write = mem_write;
    io->shutdown = mem_shutdown;
    io->close = mem_close;
    return c;
}

void tio_mem_pair(size_t piece, negstream_io *ioa, void **a,
                  negstream_io *iob, void **b)
{
    mem_link *ab = link_new(), *ba = link_new();

    *a = mem_end(piece, ba, ab, ioa);
    *b = mem_end(piece, ab, ba, iob);
}

/* ---- over TLS ----------------------------------------------------------- */

#if HAVE_OPENSSL
typedef struct tls_ctx {
    tio_hooks h;                /* first */
    int       kind;
    SSL      *ssl;
    int       fd;
} tls_ctx;

/* After SSL_read or SSL_write returned n <= 0. */
static ssize_t tls_failed(tls_ctx *c, int n)
{
    int e = errno;

    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return would_block(&c->h, NEGSTREAM_IO_WANT_READ, 0);
    case SSL_ERROR_WANT_WRITE:
        return would_block(&c->h, NEGSTREAM_IO_WANT_WRITE, 0);
    case SSL_ERROR_ZERO_RETURN:             /* close_notify */
        return hooks_leave(&c->h, 0);
    case SSL_ERROR_SYSCALL:
        return failed(&c->h, e != 0 ? e : ECONNRESET);
    default:
        return failed(&c->h, EPROTO);
    }
}

static ssize_t tls_read(void *ctx, void *buf, size_t len)
{
    tls_ctx *c = ctx;
    int e = hooks_enter(&c->h, true), n;

    if (e > 0)
        return failed(&c->h, e);
    ERR_clear_error();
    errno = 0;
    n = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return hooks_leave(&c->h, n);
    return tls_failed(c, n);
}

static ssize_t tls_write(void *ctx, const void *buf, size_t len)
{
    tls_ctx *c = ctx;
    int e = hooks_enter(&c->h, false), n;

    if (e > 0)
        return failed(&c->h, e);
    ERR_clear_error();
    errno = 0;
    n = SSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return hooks_leave(&c->h, n);
    return tls_failed(c, n);
}

static void tls_shutdown(void *ctx)
{
    tls_ctx *c = ctx;

    hooks_shutdown(&c->h);
    ERR_clear_error();
    /* Sends close_notify if the socket takes it; never waits for the
     * peer's. */
    SSL_shutdown(c->ssl);
    shutdown(c->fd, SHUT_WR);
}

static void tls_close(void *ctx)
{
    tls_ctx *c = ctx;

    hooks_close(&c->h);
    SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->h.free_on_close)
        free(c);
}

void *tio_tls_new(SSL *ssl, int fd, negstream_io *io)
{
    tls_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        die("calloc");
    c->kind = KIND_TLS;
    c->ssl = ssl;
    c->fd = fd;
    negstream_io_init(io);
    io->read_fd = fd;
    io->read = tls_read;
    io->write = tls_write;
    io->shutdown = tls_shutdown;
    io->close = tls_close;
    return c;
}
#endif

/* ---- freeing ------------------------------------------------------------ */

void tio_free(void *ctx)
{
    int kind;

    if (ctx == NULL)
        return;
    kind = ((sock_ctx *)ctx)->kind;     /* at the same place in each */
    if (kind == KIND_SOCKET) {
        sock_ctx *c = ctx;

        if (c->fd >= 0)
            close(c->fd);
    } else if (kind == KIND_PIPE) {
        pipe_ctx *c = ctx;

        if (c->rfd >= 0)
            close(c->rfd);
        if (c->wfd >= 0)
            close(c->wfd);
    } else if (kind == KIND_MEM) {
        mem_ctx *c = ctx;

        link_unref(c->in);
        link_unref(c->out);
    }
#if HAVE_OPENSSL
    else if (kind == KIND_TLS) {
        tls_ctx *c = ctx;

        SSL_free(c->ssl);
        if (c->fd >= 0)
            close(c->fd);
    }
#endif
    free(ctx);
}
