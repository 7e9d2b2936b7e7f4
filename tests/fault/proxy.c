/*
 * proxy.c - the misbehaving loopback proxy of the fault suites (proxy.h).
 *
 * Layout: the client's stream talks to socket 'a' of the proxy, the
 * server's stream to socket 'b'.  Each direction has an input buffer
 * (bytes read from its source, not yet looked at), an output buffer (bytes
 * due to the destination) and the rules that turn one into the other.
 * Before fp_frames_start bytes pass unchanged; after it, whole data frames
 * are collected (the real length prefix delimits them) and the frame
 * rules applied.  A cut is carried out once every byte before it has left
 * the proxy (for a reset: once the kernel has them acknowledged too, so
 * that the reset cannot overtake them).
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proxy.h"
#include "testutil.h"

#define MAX_RULES 4
#define OUT_HIGH_WATER (1u << 20)   /* stop reading the source above it */
#define CAPTURE_MAX (64u << 20)

typedef struct buf {
    uint8_t *p;
    size_t   len, cap;
} buf;

typedef struct rule {
    int      op;
    unsigned frame;
    uint32_t a, b;
} rule;

typedef struct dir {
    int      src, dst;          /* proxy's sockets */
    int      endpoint;          /* the stream's fd that dst feeds */
    buf      in, out, capture;
    size_t   out_pos;           /* bytes of out already sent */
    uint64_t read_total;        /* bytes read from src */
    uint64_t moved;             /* bytes put into out */
    uint64_t delivered;         /* bytes sent to dst */
    bool     src_eof, fin_sent;
    bool     one_byte;
    bool     frames;            /* data frames flow */
    unsigned frame_no;
    rule     rules[MAX_RULES];
    int      nrules;
    uint8_t *held;              /* FP_SWAP: the frame held back */
    size_t   held_len;
    uint64_t cut_at;            /* UINT64_MAX: no cut */
    int      cut_how;
} dir;

struct fp_proxy {
    pthread_mutex_t mu;
    pthread_t       thread;
    int             wake[2];
    bool            stop;
    bool            dead;       /* the connection was cut */
    int             a, b;
    dir             d[2];
};

/* ---- buffers -------------------------------------------------------- */

static void buf_add(buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;

        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        ck_assert_msg(b->p != NULL, "proxy: out of memory");
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* Drops the first n bytes. */
static void buf_consume(buf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static void buf_free(buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- moving bytes from in to out ------------------------------------ */

static void emit(dir *d, const uint8_t *p, size_t n)
{
    /* Nothing goes out past a cut. */
    if (d->cut_at != UINT64_MAX && d->moved + n > d->cut_at)
        n = d->cut_at > d->moved ? (size_t)(d->cut_at - d->moved) : 0;
    buf_add(&d->out, p, n);
    d->moved += n;
}

static const rule *find_rule(const dir *d, unsigned frame)
{
    int i;

    for (i = 0; i < d->nrules; i++)
        if (d->rules[i].frame == frame)
            return &d->rules[i];
    return NULL;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* One whole frame f[0..n) (prefix included) through the rules. */
static void frame_out(dir *d, uint8_t *f, size_t n)
{
    const rule *r = find_rule(d, d->frame_no++);

    if (d->held != NULL) {
        /* FP_SWAP held the previous frame back: this one goes first. */
        emit(d, f, n);
        emit(d, d->held, d->held_len);
        free(d->held);
        d->held = NULL;
        return;
    }
    if (r == NULL) {
        emit(d, f, n);
        return;
    }
    switch (r->op) {
    case FP_FLIP: {
        size_t at = 4 + (size_t)r->a;

        if (at >= n)
            at = n - 1;
        f[at] ^= (uint8_t)r->b;
        emit(d, f, n);
        break;
    }
    case FP_DROP:
        break;
    case FP_REPLAY:
        emit(d, f, n);
        emit(d, f, n);
        break;
    case FP_SWAP:
        d->held = malloc(n);
        ck_assert_ptr_nonnull(d->held);
        memcpy(d->held, f, n);
        d->held_len = n;
        break;
    case FP_SETLEN:
        put_le32(f, r->a);
        emit(d, f, n);
        break;
    case FP_CUT:
        d->cut_at = d->moved + (r->a < n ? r->a : n);
        d->cut_how = (int)r->b;
        emit(d, f, n);
        break;
    default:
        ck_abort_msg("proxy: unknown frame rule %d", r->op);
    }
}

static void process(dir *d)
{
    if (!d->frames) {
        emit(d, d->in.p, d->in.len);
        d->in.len = 0;
        return;
    }
    for (;;) {
        uint32_t len;

        if (d->in.len < 4)
            break;
        len = (uint32_t)d->in.p[0] | (uint32_t)d->in.p[1] << 8 |
              (uint32_t)d->in.p[2] << 16 | (uint32_t)d->in.p[3] << 24;
        if (len > (1u << 20)) {
            /* Not a frame of ours: pass the rest through untouched. */
            d->frames = false;
            emit(d, d->in.p, d->in.len);
            d->in.len = 0;
            return;
        }
        if (d->in.len < 4 + (size_t)len)
            break;
        frame_out(d, d->in.p, 4 + (size_t)len);
        buf_consume(&d->in, 4 + (size_t)len);
    }
    if (d->src_eof && d->in.len > 0) {
        /* A partial frame before EOF goes on as it is. */
        emit(d, d->in.p, d->in.len);
        d->in.len = 0;
    }
}

/* ---- the event loop ------------------------------------------------- */

static int pending_in(int fd)
{
    int n = 0;

    if (ioctl(fd, FIONREAD, &n) < 0)
        return 0;
    return n;
}

static int pending_out(int fd)
{
    int n = 0;

    if (ioctl(fd, SIOCOUTQ, &n) < 0)
        return 0;
    return n;
}

static void nap_us(long us)
{
    struct timespec ts = { 0, us * 1000 };

    nanosleep(&ts, NULL);
}

/* Cuts the connection.  Caller holds p->mu. */
static void cut(fp_proxy *p, int how)
{
    if (how == FP_RST) {
        struct linger lg = { 1, 0 };
        int i;

        /* Let what was sent reach the peers first: a reset drops the
         * unacknowledged data of the socket it is sent from. */
        for (i = 0; i < 2000 && (pending_out(p->a) > 0 ||
                                 pending_out(p->b) > 0); i++)
            nap_us(1000);
        setsockopt(p->a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        setsockopt(p->b, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(p->a);
    close(p->b);
    p->a = p->b = -1;
    p->dead = true;
}

/* Sends what it may of d->out.  Caller holds p->mu. */
static void flush(fp_proxy *p, dir *d)
{
    while (d->out_pos < d->out.len) {
        size_t n = d->out.len - d->out_pos;
        ssize_t w;

        if (d->one_byte) {
            if (pending_in(d->endpoint) > 0 || pending_out(d->dst) > 0)
                break;
            n = 1;
        }
        w = send(d->dst, d->out.p + d->out_pos, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            /* The destination is gone: drop what it would have got. */
            d->out_pos = d->out.len;
            break;
        }
        d->out_pos += (size_t)w;
        d->delivered += (uint64_t)w;
        if (d->one_byte)
            break;
    }
    if (d->out_pos == d->out.len) {
        d->out.len = 0;
        d->out_pos = 0;
    }
    if (d->cut_at != UINT64_MAX && d->delivered >= d->cut_at) {
        cut(p, d->cut_how);
        return;
    }
    if (d->out.len == 0 && d->src_eof && !d->fin_sent) {
        shutdown(d->dst, SHUT_WR);
        d->fin_sent = true;
    }
}

static void read_src(fp_proxy *p, dir *d)
{
    uint8_t tmp[65536];
    ssize_t n;

    (void)p;
    n = recv(d->src, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        n = 0;                      /* a reset: treat as the end */
    }
    if (n == 0) {
        d->src_eof = true;
    } else {
        if (d->capture.len + (size_t)n <= CAPTURE_MAX)
            buf_add(&d->capture, tmp, (size_t)n);
        buf_add(&d->in, tmp, (size_t)n);
        d->read_total += (uint64_t)n;
    }
    process(d);
}

static void *proxy_main(void *arg)
{
    fp_proxy *p = arg;

    for (;;) {
        struct pollfd pfd[5];
        int n = 0, i, timeout = -1;
        int at[2][2] = { { -1, -1 }, { -1, -1 } };

        pthread_mutex_lock(&p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        pfd[n].fd = p->wake[0];
        pfd[n++].events = POLLIN;
        for (i = 0; i < 2 && !p->dead; i++) {
            dir *d = &p->d[i];

            if (!d->src_eof && d->out.len < OUT_HIGH_WATER) {
                at[i][0] = n;
                pfd[n].fd = d->src;
                pfd[n++].events = POLLIN;
            }
            if (d->out.len > d->out_pos) {
                if (d->one_byte) {
                    timeout = 0;    /* we nap below instead */
                } else {
                    at[i][1] = n;
                    pfd[n].fd = d->dst;
                    pfd[n++].events = POLLOUT;
                }
            }
        }
        pthread_mutex_unlock(&p->mu);

        if (timeout == 0)
            nap_us(50);
        if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
            ck_abort_msg("proxy: poll: %s", strerror(errno));
        if (pfd[0].revents & POLLIN) {
            char c[64];

            while (read(p->wake[0], c, sizeof(c)) > 0)
                ;
        }

        pthread_mutex_lock(&p->mu);
        for (i = 0; i < 2 && !p->dead; i++) {
            dir *d = &p->d[i];

            if (at[i][0] >= 0 && pfd[at[i][0]].revents)
                read_src(p, d);
            if (!p->dead)
                flush(p, d);
        }
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

/* ---- the interface -------------------------------------------------- */

static void wake(fp_proxy *p)
{
    ssize_t w = write(p->wake[1], "x", 1);

    (void)w;
}

fp_proxy *fp_start(int *cfd, int *sfd)
{
    fp_proxy *p = calloc(1, sizeof(*p));
    int c[2], s[2], i;

    ck_assert_ptr_nonnull(p);
    tu_tcp_pair(c);                 /* c[0]: client's end, c[1]: proxy's */
    tu_tcp_pair(s);                 /* s[0]: proxy's end, s[1]: server's */
    p->a = c[1];
    p->b = s[0];
    ck_assert_int_eq(pipe2(p->wake, O_CLOEXEC | O_NONBLOCK), 0);
    ck_assert_int_eq(fcntl(p->a, F_SETFL, O_NONBLOCK), 0);
    ck_assert_int_eq(fcntl(p->b, F_SETFL, O_NONBLOCK), 0);
    pthread_mutex_init(&p->mu, NULL);
    for (i = 0; i < 2; i++) {
        p->d[i].cut_at = UINT64_MAX;
    }
    p->d[FP_C2S].src = p->a;
    p->d[FP_C2S].dst = p->b;
    p->d[FP_C2S].endpoint = s[1];
    p->d[FP_S2C].src = p->b;
    p->d[FP_S2C].dst = p->a;
    p->d[FP_S2C].endpoint = c[0];
    *cfd = c[0];
    *sfd = s[1];
    ck_assert_int_eq(pthread_create(&p->thread, NULL, proxy_main, p), 0);
    return p;
}

void fp_cut_at(fp_proxy *p, int dir_, uint64_t byte, int how)
{
    pthread_mutex_lock(&p->mu);
    p->d[dir_].cut_at = byte;
    p->d[dir_].cut_how = how;
    pthread_mutex_unlock(&p->mu);
    wake(p);
}

void fp_one_byte(fp_proxy *p, int dir_, bool on)
{
    pthread_mutex_lock(&p->mu);
    p->d[dir_].one_byte = on;
    pthread_mutex_unlock(&p->mu);
    wake(p);
}

void fp_frames_start(fp_proxy *p, int dir_)
{
    pthread_mutex_lock(&p->mu);
    ck_assert_msg(p->d[dir_].in.len == 0,
                  "proxy: %zu bytes of handshake still unrelayed",
                  p->d[dir_].in.len);
    p->d[dir_].frames = true;
    p->d[dir_].frame_no = 0;
    pthread_mutex_unlock(&p->mu);
}

void fp_frame_rule(fp_proxy *p, int dir_, int op, unsigned frame,
                   uint32_t a, uint32_t b)
{
    dir *d = &p->d[dir_];

    pthread_mutex_lock(&p->mu);
    ck_assert_int_lt(d->nrules, MAX_RULES);
    d->rules[d->nrules].op = op;
    d->rules[d->nrules].frame = frame;
    d->rules[d->nrules].a = a;
    d->rules[d->nrules].b = b;
    d->nrules++;
    pthread_mutex_unlock(&p->mu);
}

uint64_t fp_count(fp_proxy *p, int dir_)
{
    uint64_t n;

    pthread_mutex_lock(&p->mu);
    n = p->d[dir_].read_total;
    pthread_mutex_unlock(&p->mu);
    return n;
}

uint8_t *fp_capture(fp_proxy *p, int dir_, size_t *len)
{
    uint8_t *copy;

    pthread_mutex_lock(&p->mu);
    *len = p->d[dir_].capture.len;
    copy = malloc(*len > 0 ? *len : 1);
    ck_assert_ptr_nonnull(copy);
    if (*len > 0)
        memcpy(copy, p->d[dir_].capture.p, *len);
    pthread_mutex_unlock(&p->mu);
    return copy;
}

void fp_stop(fp_proxy *p)
{
    int i;

    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    pthread_join(p->thread, NULL);
    if (!p->dead) {
        close(p->a);
        close(p->b);
    }
    for (i = 0; i < 2; i++) {
        buf_free(&p->d[i].in);
        buf_free(&p->d[i].out);
        buf_free(&p->d[i].capture);
        free(p->d[i].held);
    }
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
