/*
 * poller.c - one thread per worker pool that owns the fds of parked
 * operations and hands their jobs back to the pool (contract: poller.h).
 * Knows fds, deadlines and jobs; never streams, frames or GSSAPI.
 *
 * Backends.  epoll where configure found sys/epoll.h and epoll_create1
 * (HAVE_EPOLL) and --disable-epoll was not given; poll() otherwise.  The
 * wake-up fd is an eventfd where there is one, else a pipe.
 * NEGSTREAM_POLLER_FORCE_POLL and NEGSTREAM_WAKE_FORCE_PIPE force the
 * fallbacks at compile time: tests/check_poller_poll is check_poller built
 * from these same sources with both, so that make check runs both
 * backends on every Linux machine.
 *
 *  - epoll: one registration per pollfd, level-triggered with
 *    EPOLLONESHOT, its mask the union of the armed slots.  A firing
 *    disables the registration in the kernel; the thread then re-enables
 *    it (EPOLL_CTL_MOD) for the slots still armed.  Disarming is lazy: the
 *    kernel keeps its mask, and if it fires for a slot no longer armed the
 *    thread drops the event (EPOLLONESHOT has disabled it again, so that
 *    costs one wake-up, never a loop).  An arm whose union equals the mask
 *    the kernel already has makes no system call.
 *  - poll(): an array parallel to the registration table, fd -1 where
 *    nothing is asked (poll() ignores negative fds, and would otherwise
 *    report POLLHUP for fds nobody waits on).  The thread polls a private
 *    copy, rebuilt under the lock whenever the array changed (O(n), as
 *    poll() itself is); an arm that adds interest wakes the thread so that
 *    it polls the new copy.  Disarming is lazy here too: the entry keeps
 *    its events until the thread sees the fd ready with nothing armed (or
 *    an arm changes them), so re-arming the same events is free.
 *
 * Locks.  poller->mu is taken after the owner's lock (stream->mu: arm,
 * disarm and forget run under it, which also serialises them for one
 * pollfd) and is never held together with pool->mu: fired jobs are
 * collected under poller->mu, chained through job->next (free while the
 * job is neither queued nor running), and given to negstream__pool_resume
 * after unlocking.  The one exception is fork: pool.c's prepare handler
 * takes g_default_mu -> g_list_mu -> every pool->mu -> every poller->mu,
 * which cannot deadlock because no other path holds poller->mu while it
 * waits for a pool lock.
 *     stream->mu -> poller->mu          (no pool lock inside)
 *     g_default_mu -> g_list_mu -> pool->mu -> poller->mu   (fork only)
 *
 * Stale events.  The kernel (or the thread's poll() copy) may report an fd
 * after it was forgotten, and its number may already belong to another
 * registration.  Events therefore name a registration by its index in the
 * table and a 32-bit generation, checked under the lock before the pollfd
 * is touched; a pollfd pointer is never taken from the kernel.
 *
 * Memory.  Arming allocates nothing but the amortised growth of the
 * registration table, the timer heap and (poll) the poll arrays, done
 * before anything changes, so a failed growth leaves nothing armed.  A
 * fired job waits for its resume in a chain through job->next, which the
 * pool leaves NULL when it takes a job (and a zeroed job has): a job must
 * not be armed while it is queued.
 *
 * Lifetime.  The poller is reference-counted: one reference for its pool,
 * one per registered pollfd.  negstream__poller_free fires, stops and
 * drops the pool's reference; a stream that outlives its pool's free can
 * still forget its fd, and the last forget frees the memory.
 *
 * fork().  Only the forking thread exists in the child: the poller thread
 * is gone, and the epoll instance is the parent's (the child's fd refers
 * to the same kernel object), so an epoll_ctl there would change the
 * parent's set.  The child drops every registration and watch (they are
 * the parent's streams'), closes the inherited epoll and wake fds without
 * touching the set, and starts a new thread, epoll instance and wake fd at
 * its next arm.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(HAVE_EPOLL) && !defined(NEGSTREAM_POLLER_FORCE_POLL)
# define USE_EPOLL 1
# include <sys/epoll.h>
#endif
#include "error.h"
#include "poller.h"
#include "trace.h"
#include "util.h"
#include "wake.h"

#define NO_IDX    SIZE_MAX      /* watch->heap_idx: not in the heap */
#define REG_NONE  UINT32_MAX    /* end of the free list */
#define WAKE_TAG  UINT64_MAX    /* epoll data of the wake-up fd */
#define REG_MIN   64            /* first size of the registration table */
#define HEAP_MIN  64
#define EPOLL_BATCH 128
/* How long a fired job that the pool refused for want of a thread waits
 * before the thread offers it again. */
#define RETRY_MS  100

typedef struct reg_entry {
    negstream__pollfd *pfd;     /* NULL: free */
    uint32_t           gen;     /* which registration, for stale events */
    uint32_t           next_free;
} reg_entry;

typedef struct timer {
    int64_t            deadline;
    negstream__pollfd *pfd;
    int                slot;
} timer;

typedef struct joblist {
    negstream__job *head, *tail;
} joblist;

#ifndef USE_EPOLL
/* The thread's copy of the poll array: entry 0 is the wake-up fd, entry
 * i + 1 registration i; gen[i + 1] its generation at copy time. */
typedef struct snapbuf {
    struct pollfd *fds;
    uint32_t      *gen;
    size_t         cap;
} snapbuf;
#endif

struct negstream__poller {
    pthread_mutex_t mu;
    negstream_pool *pool;       /* immutable */
    unsigned        refs;       /* the pool's + one per registered pfd */
    bool            disposed;   /* negstream__poller_free: arms refused */
    bool            running;    /* thread and kernel objects exist */
    bool            stop;       /* the thread must exit */
    bool            in_wait;    /* the thread sleeps in epoll_wait/poll */
    bool            wake_sent;  /* the wake-up fd is signalled */
    int64_t         wait_until; /* the deadline it sleeps to (INT64_MAX) */
    pthread_t       thread;
    int             epfd;       /* -1 without epoll or before start */
    negstream__wake wake;             /* wakes the thread */

    reg_entry      *reg;        /* registrations, indexed by poll_idx */
    size_t          reg_cap, reg_hwm, nreg;
    uint32_t        free_head;
    uint32_t        gen;

    timer          *heap;       /* binary min-heap of deadlines */
    size_t          nheap, heap_cap;
    size_t          narmed;

    negstream__job *retry;      /* fired, refused by the pool: retried */
    int64_t         retry_at;

#ifndef USE_EPOLL
    struct pollfd  *pollv;      /* parallel to reg; fd -1: not watched */
    size_t          pollv_cap;
    bool            dirty;      /* pollv changed since the thread's copy */
    snapbuf         snap;       /* the thread's copy (thread-owned) */
    size_t          snap_n;
    snapbuf         next_snap;  /* a larger buffer for the next copy */
#endif
};

const char *negstream__poller_backend(void)
{
#if defined(USE_EPOLL)
    return NEGSTREAM__WAKE_EVENTFD ? "epoll+eventfd" : "epoll+pipe";
#else
    return NEGSTREAM__WAKE_EVENTFD ? "poll+eventfd" : "poll+pipe";
#endif
}

void negstream__pollfd_init(negstream__pollfd *pfd, int fd)
{
    int i;

    memset(pfd, 0, sizeof(*pfd));
    pfd->fd = fd;
    pfd->poll_idx = NO_IDX;
    for (i = 0; i < NEGSTREAM__POLL_SLOTS; i++) {
        pfd->slot[i].deadline = -1;
        pfd->slot[i].heap_idx = NO_IDX;
        pfd->slot[i].fired = NEGSTREAM__FIRE_NONE;
    }
}

int negstream__pollfd_fired(const negstream__pollfd *pfd, int slot)
{
    if (pfd == NULL || slot < 0 || slot >= NEGSTREAM__POLL_SLOTS)
        return NEGSTREAM__FIRE_NONE;
    return pfd->slot[slot].fired;
}

/* ---- small helpers ------------------------------------------------------ */

static void joblist_push(joblist *l, negstream__job *job)
{
    /* A job in no list has next == NULL (the pool clears it when it
     * takes a job; an armed job is not queued).  One already in l was
     * armed on two pollfds at once, against poller.h: run it once rather
     * than make a cycle. */
    if (job->next != NULL || job == l->tail) {
        NEGSTREAM__TRACE("poller: a job fired twice in one batch (armed "
                         "on two fds?)");
        return;
    }
    job->next = NULL;
    if (l->tail != NULL)
        l->tail->next = job;
    else
        l->head = job;
    l->tail = job;
}

/* Appends a chain (linked through job->next) to l. */
static void joblist_splice(joblist *l, negstream__job *chain)
{
    negstream__job *next;

    for (; chain != NULL; chain = next) {
        next = chain->next;
        chain->next = NULL;
        joblist_push(l, chain);
    }
}

static short armed_union(const negstream__pollfd *pfd)
{
    short u = 0;
    int i;

    for (i = 0; i < NEGSTREAM__POLL_SLOTS; i++)
        if (pfd->slot[i].armed)
            u |= pfd->slot[i].events;
    return u;
}

static int ms_until(int64_t until, int64_t now)
{
    int64_t d;

    if (until == INT64_MAX)
        return -1;
    d = until - now;
    if (d <= 0)
        return 0;
    return d > INT_MAX ? INT_MAX : (int)d;
}

/* Grows *arr (of elem-sized items) to at least 'need' items, doubling
 * from 'min'.  0, or -1 with the array unchanged. */
static int grow(void **arr, size_t *cap, size_t need, size_t elem,
                size_t min)
{
    size_t n = *cap < min ? min : *cap;
    void *q;

    if (need <= *cap)
        return 0;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem)
            return -1;
        n *= 2;
    }
    q = realloc(*arr, n * elem);
    if (q == NULL)
        return -1;
    *arr = q;
    *cap = n;
    return 0;
}

/* ---- the timer heap (caller holds p->mu) -------------------------------- */

static void heap_set(negstream__poller *p, size_t i, timer t)
{
    p->heap[i] = t;
    t.pfd->slot[t.slot].heap_idx = i;
}

static void heap_up(negstream__poller *p, size_t i)
{
    timer t = p->heap[i];
    size_t parent;

    while (i > 0) {
        parent = (i - 1) / 2;
        if (p->heap[parent].deadline <= t.deadline)
            break;
        heap_set(p, i, p->heap[parent]);
        i = parent;
    }
    heap_set(p, i, t);
}

static void heap_down(negstream__poller *p, size_t i)
{
    timer t = p->heap[i];
    size_t c;

    for (;;) {
        c = 2 * i + 1;
        if (c >= p->nheap)
            break;
        if (c + 1 < p->nheap
            && p->heap[c + 1].deadline < p->heap[c].deadline)
            c++;
        if (t.deadline <= p->heap[c].deadline)
            break;
        heap_set(p, i, p->heap[c]);
        i = c;
    }
    heap_set(p, i, t);
}

/* Room for one more timer: done before anything is armed, so that an
 * arm that cannot get memory changes nothing. */
static int heap_reserve(negstream__poller *p, negstream_error *err)
{
    if (grow((void **)&p->heap, &p->heap_cap, p->nheap + 1, sizeof(timer),
             HEAP_MIN) < 0) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, ENOMEM,
                           "cannot grow the poller's timer heap to %zu "
                           "deadlines", p->nheap + 1);
        return -1;
    }
    return 0;
}

static void heap_push(negstream__poller *p, negstream__pollfd *pfd, int slot)
{
    timer t = { pfd->slot[slot].deadline, pfd, slot };

    p->heap[p->nheap++] = t;
    heap_up(p, p->nheap - 1);
}

static void heap_remove(negstream__poller *p, size_t i)
{
    timer gone = p->heap[i];
    size_t last = --p->nheap;

    gone.pfd->slot[gone.slot].heap_idx = NO_IDX;
    if (i == last)
        return;
    heap_set(p, i, p->heap[last]);
    if (i > 0 && p->heap[i].deadline < p->heap[(i - 1) / 2].deadline)
        heap_up(p, i);
    else
        heap_down(p, i);
}

/* ---- waking the thread (caller holds p->mu) ----------------------------- */

static void wake_write(negstream__poller *p)
{
    negstream__wake_signal(&p->wake);
}

/* One write per sleep: later callers see wake_sent.  The thread clears it
 * when it drains the fd, under the lock, so no wake-up is lost; a thread
 * that is not asleep recomputes everything before it sleeps again. */
static void wake_locked(negstream__poller *p)
{
    if (!p->in_wait || p->wake_sent)
        return;
    p->wake_sent = true;
    wake_write(p);
}

static void wake_drain(negstream__poller *p)
{
    negstream__wake_drain(&p->wake);
    p->wake_sent = false;
}

/* ---- the kernel side of a registration (caller holds p->mu) ------------- */

static void watch_error(negstream_error *err, int fd, int errnum,
                        const char *what)
{
    negstream__err_sys(err, NEGSTREAM_E_IO, errnum,
                       "cannot watch fd %d for readiness (%s)%s", fd, what,
                       errnum == EPERM ? "; a regular file or directory "
                       "is always ready and cannot be watched" : "");
}

#ifdef USE_EPOLL
static uint32_t to_epoll(short ev)
{
    return ((ev & POLLIN) ? EPOLLIN : 0) | ((ev & POLLOUT) ? EPOLLOUT : 0);
}

static short from_epoll(uint32_t ev)
{
    return (short)(((ev & EPOLLIN) ? POLLIN : 0)
                   | ((ev & EPOLLOUT) ? POLLOUT : 0)
                   | ((ev & EPOLLERR) ? POLLERR : 0)
                   | ((ev & EPOLLHUP) ? POLLHUP : 0));
}


/* Makes the kernel watch exactly 'u' (re-enabling a one-shot
 * registration that fired). */
static int kernel_set(negstream__poller *p, negstream__pollfd *pfd, short u,
                      negstream_error *err)
{
    struct epoll_event ev;

    if (pfd->kmask == (uint32_t)u)
        return 0;
    memset(&ev, 0, sizeof(ev));
    ev.events = to_epoll(u) | EPOLLONESHOT;
    ev.data.u64 = ((uint64_t)p->reg[pfd->poll_idx].gen << 32)
                  | pfd->poll_idx;
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, pfd->fd, &ev) < 0) {
        watch_error(err, pfd->fd, errno, "epoll_ctl MOD");
        return -1;
    }
    pfd->kmask = (uint32_t)u;
    return 0;
}
#else

/* Brings the poll array entry of pfd up to date with its armed slots.
 * Returns true if the entry now asks for events it did not before. */
static bool pollv_update(negstream__poller *p, negstream__pollfd *pfd)
{
    struct pollfd *e = &p->pollv[pfd->poll_idx];
    short u = armed_union(pfd);
    short before = e->fd < 0 ? 0 : e->events;

    e->fd = u != 0 ? pfd->fd : -1;
    e->events = u;
    e->revents = 0;
    pfd->kmask = (uint32_t)u;
    if (u != before)
        p->dirty = true;
    return (u & ~before) != 0;
}

static void snap_free(snapbuf *b)
{
    free(b->fds);
    b->fds = NULL;
    b->gen = NULL;
    b->cap = 0;
}

/* Makes sure the thread will find a copy buffer of 'need' entries: the
 * thread owns the buffer it polls, so a larger one is prepared here and
 * swapped in by the thread at its next copy. */
static int snap_reserve(negstream__poller *p, size_t need)
{
    size_t have = p->next_snap.fds != NULL ? p->next_snap.cap
                                            : p->snap.cap;
    size_t cap = have < REG_MIN ? REG_MIN : have;
    snapbuf b;

    if (need <= have)
        return 0;
    while (cap < need)
        cap *= 2;
    if (cap > SIZE_MAX / (sizeof(struct pollfd) + sizeof(uint32_t)))
        return -1;
    b.fds = malloc(cap * (sizeof(struct pollfd) + sizeof(uint32_t)));
    if (b.fds == NULL)
        return -1;
    b.gen = (uint32_t *)(void *)(b.fds + cap);
    b.cap = cap;
    snap_free(&p->next_snap);
    p->next_snap = b;
    return 0;
}
#endif

/* Room for one more registration in every array that follows the table. */
static int reg_reserve(negstream__poller *p, negstream_error *err)
{
    size_t need = p->reg_hwm + 1;

    if (p->free_head != REG_NONE)
        return 0;
    if (need > REG_NONE)
        goto nomem;
    if (grow((void **)&p->reg, &p->reg_cap, need, sizeof(reg_entry),
             REG_MIN) < 0)
        goto nomem;
#ifndef USE_EPOLL
    if (grow((void **)&p->pollv, &p->pollv_cap, need, sizeof(struct pollfd),
             REG_MIN) < 0
        || snap_reserve(p, 1 + p->pollv_cap) < 0)
        goto nomem;
#endif
    return 0;
nomem:
    negstream__err_sys(err, NEGSTREAM_E_NOMEM, ENOMEM,
                       "cannot grow the poller's table to %zu fds", need);
    return -1;
}

/* Registers pfd (first arm) with the events of its first watch. */
static int reg_add(negstream__poller *p, negstream__pollfd *pfd, short events,
                   negstream_error *err)
{
    uint32_t idx;
    reg_entry *r;

    if (reg_reserve(p, err) < 0)
        return -1;
    idx = p->free_head != REG_NONE ? p->free_head : (uint32_t)p->reg_hwm;
    r = &p->reg[idx];
#ifdef USE_EPOLL
    {
        struct epoll_event ev;

        memset(&ev, 0, sizeof(ev));
        ev.events = to_epoll(events) | EPOLLONESHOT;
        ev.data.u64 = ((uint64_t)(p->gen + 1) << 32) | idx;
        if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, pfd->fd, &ev) < 0) {
            watch_error(err, pfd->fd, errno, "epoll_ctl ADD");
            return -1;
        }
        pfd->kmask = (uint32_t)events;
    }
#else
    {
        /* poll() would report a regular file ready at once and a bad fd
         * as POLLNVAL; refuse both here, as epoll_ctl does. */
        struct stat st;

        if (fstat(pfd->fd, &st) < 0) {
            watch_error(err, pfd->fd, errno, "fstat");
            return -1;
        }
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
            watch_error(err, pfd->fd, EPERM, "poll");
            return -1;
        }
        p->pollv[idx].fd = -1;
        p->pollv[idx].events = 0;
        p->pollv[idx].revents = 0;
    }
#endif
    if (idx == p->free_head)
        p->free_head = r->next_free;
    else
        p->reg_hwm++;
    r->pfd = pfd;
    r->gen = ++p->gen;
    r->next_free = REG_NONE;
    p->nreg++;
    p->refs++;
    pfd->poll_idx = idx;
    pfd->poller = p;
    pfd->registered = true;
    (void)events;
    return 0;
}

static void reg_release(negstream__poller *p, negstream__pollfd *pfd)
{
    reg_entry *r = &p->reg[pfd->poll_idx];

#ifndef USE_EPOLL
    p->pollv[pfd->poll_idx].fd = -1;
    p->pollv[pfd->poll_idx].events = 0;
    p->dirty = true;
#endif
    r->pfd = NULL;
    r->next_free = p->free_head;
    p->free_head = (uint32_t)pfd->poll_idx;
    p->nreg--;
    p->refs--;
    pfd->registered = false;
    pfd->poller = NULL;
    pfd->poll_idx = NO_IDX;
    pfd->kmask = 0;
}

/* ---- firing (caller holds p->mu) --------------------------------------- */

static void fire(negstream__poller *p, negstream__pollfd *pfd, int slot,
                 int why, joblist *out)
{
    negstream__watch *w = &pfd->slot[slot];

    w->armed = false;
    w->fired = why;
    if (w->heap_idx != NO_IDX)
        heap_remove(p, w->heap_idx);
    p->narmed--;
    joblist_push(out, w->job);
}

/* The kernel reported revents (poll bits) for pfd. */
static void fd_ready(negstream__poller *p, negstream__pollfd *pfd,
                     short revents, joblist *out)
{
    bool fault = (revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
    negstream__watch *w;
    int i;

#ifdef USE_EPOLL
    pfd->kmask = 0;             /* EPOLLONESHOT has disabled it */
#endif
    for (i = 0; i < NEGSTREAM__POLL_SLOTS; i++) {
        w = &pfd->slot[i];
        if (w->armed && (fault || (revents & w->events) != 0))
            fire(p, pfd, i, NEGSTREAM__FIRE_READY, out);
    }
#ifdef USE_EPOLL
    if (armed_union(pfd) != 0
        && kernel_set(p, pfd, armed_union(pfd), NULL) < 0) {
        /* Cannot re-enable (ENOMEM in the kernel): fire what is left, so
         * that its job's own I/O meets and reports the problem rather
         * than wait for ever. */
        NEGSTREAM__TRACE("poller %p: cannot re-arm fd %d: %s; firing its "
                         "other watch", (void *)p, pfd->fd,
                         strerror(errno));
        for (i = 0; i < NEGSTREAM__POLL_SLOTS; i++)
            if (pfd->slot[i].armed)
                fire(p, pfd, i, NEGSTREAM__FIRE_READY, out);
    }
#else
    pollv_update(p, pfd);
#endif
}

static void expire(negstream__poller *p, int64_t now, joblist *out)
{
    negstream__pollfd *pfd;

    while (p->nheap > 0 && p->heap[0].deadline <= now) {
        pfd = p->heap[0].pfd;
        fire(p, pfd, p->heap[0].slot, NEGSTREAM__FIRE_TIMEOUT, out);
#ifndef USE_EPOLL
        pollv_update(p, pfd);
#endif
        /* epoll: the kernel mask stays until it fires (lazy). */
    }
}

/* Hands fired jobs to the pool; without p->mu.  Returns the ones the pool
 * refused (no worker could be started), for a later retry. */
static negstream__job *resume_all(negstream__poller *p, negstream__job *job)
{
    joblist refused = { NULL, NULL };
    negstream__job *next;
    negstream_error e;

    for (; job != NULL; job = next) {
        next = job->next;
        job->next = NULL;
        if (negstream__pool_resume(p->pool, job, &e) < 0) {
            NEGSTREAM__TRACE("poller %p: the pool refused a fired job "
                             "(%s); retrying", (void *)p, e.message);
            joblist_push(&refused, job);
        }
    }
    return refused.head;
}

static void retry_later(negstream__poller *p, negstream__job *refused)
{
    negstream__job *last;

    if (refused == NULL)
        return;
    for (last = refused; last->next != NULL; last = last->next)
        ;
    last->next = p->retry;
    p->retry = refused;
    p->retry_at = negstream__mono_ms() + RETRY_MS;
}

/* ---- the thread --------------------------------------------------------- */

static void name_thread(void)
{
#ifdef HAVE_PTHREAD_SETNAME_NP
# if defined(__APPLE__)
    pthread_setname_np("negstream-poll");
# elif defined(__NetBSD__)
    pthread_setname_np(pthread_self(), "%s", "negstream-poll");
# else
    pthread_setname_np(pthread_self(), "negstream-poll");
# endif
#endif
}

#ifdef USE_EPOLL
static void dispatch(negstream__poller *p, const struct epoll_event *ev,
                     int n, joblist *out)
{
    uint32_t idx, gen;
    reg_entry *r;
    int i;

    for (i = 0; i < n; i++) {
        if (ev[i].data.u64 == WAKE_TAG) {
            wake_drain(p);
            continue;
        }
        idx = (uint32_t)(ev[i].data.u64 & 0xffffffffu);
        gen = (uint32_t)(ev[i].data.u64 >> 32);
        if (idx >= p->reg_hwm)
            continue;
        r = &p->reg[idx];
        if (r->pfd == NULL || r->gen != gen)
            continue;               /* forgotten since: stale */
        fd_ready(p, r->pfd, from_epoll(ev[i].events), out);
    }
}
#else
/* Copies the poll array for the thread (which owns p->snap). */
static void snapshot(negstream__poller *p)
{
    size_t i;

    if (p->next_snap.fds != NULL) {
        snap_free(&p->snap);
        p->snap = p->next_snap;
        memset(&p->next_snap, 0, sizeof(p->next_snap));
    }
    p->snap.fds[0].fd = p->wake.r;
    p->snap.fds[0].events = POLLIN;
    p->snap.fds[0].revents = 0;
    p->snap.gen[0] = 0;
    for (i = 0; i < p->reg_hwm; i++) {
        p->snap.fds[i + 1] = p->pollv[i];
        p->snap.fds[i + 1].revents = 0;
        p->snap.gen[i + 1] = p->reg[i].gen;
    }
    p->snap_n = p->reg_hwm + 1;
    p->dirty = false;
}

static void dispatch(negstream__poller *p, joblist *out)
{
    reg_entry *r;
    size_t i;

    if (p->snap.fds[0].revents != 0)
        wake_drain(p);
    for (i = 1; i < p->snap_n; i++) {
        if (p->snap.fds[i].revents == 0)
            continue;
        r = &p->reg[i - 1];
        if (r->pfd == NULL || r->gen != p->snap.gen[i])
            continue;               /* forgotten since: stale */
        fd_ready(p, r->pfd, p->snap.fds[i].revents, out);
    }
}
#endif

static void *poller_main(void *arg)
{
    negstream__poller *p = arg;
    negstream__job *refused;
    joblist fired;
    int64_t now, until;
    int n, timeout, saved;
#ifdef USE_EPOLL
    struct epoll_event ev[EPOLL_BATCH];
#endif

    name_thread();
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        fired.head = fired.tail = NULL;
        now = negstream__mono_ms();
        expire(p, now, &fired);
        if (p->retry != NULL && now >= p->retry_at) {
            joblist_splice(&fired, p->retry);
            p->retry = NULL;
        }
        if (fired.head != NULL) {
            pthread_mutex_unlock(&p->mu);
            refused = resume_all(p, fired.head);
            pthread_mutex_lock(&p->mu);
            retry_later(p, refused);
            continue;
        }
        until = p->nheap > 0 ? p->heap[0].deadline : INT64_MAX;
        if (p->retry != NULL && p->retry_at < until)
            until = p->retry_at;
#ifndef USE_EPOLL
        if (p->dirty || p->next_snap.fds != NULL)
            snapshot(p);
#endif
        p->in_wait = true;
        p->wait_until = until;
        timeout = ms_until(until, now);
        pthread_mutex_unlock(&p->mu);
#ifdef USE_EPOLL
        n = epoll_wait(p->epfd, ev, EPOLL_BATCH, timeout);
#else
        n = poll(p->snap.fds, (nfds_t)p->snap_n, timeout);
#endif
        saved = errno;
        pthread_mutex_lock(&p->mu);
        p->in_wait = false;
        p->wait_until = INT64_MAX;
        if (n < 0) {
            if (saved != EINTR)
                NEGSTREAM__TRACE("poller %p: %s: %s", (void *)p,
#ifdef USE_EPOLL
                                 "epoll_wait",
#else
                                 "poll",
#endif
                                 strerror(saved));
            continue;
        }
        fired.head = fired.tail = NULL;
#ifdef USE_EPOLL
        dispatch(p, ev, n, &fired);
#else
        dispatch(p, &fired);
#endif
        if (fired.head != NULL) {
            pthread_mutex_unlock(&p->mu);
            refused = resume_all(p, fired.head);
            pthread_mutex_lock(&p->mu);
            retry_later(p, refused);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- starting and stopping (caller holds p->mu) ------------------------- */

static void close_kernel(negstream__poller *p)
{
    if (p->epfd >= 0)
        close(p->epfd);
    negstream__wake_close(&p->wake);
    p->epfd = -1;
}

static int open_wake(negstream__poller *p)
{
    return negstream__wake_open(&p->wake);
}

/*
 * Creates the kernel objects and the thread.  The thread starts with every
 * asynchronous signal blocked, as the workers do (pool.c), so that the
 * application's handlers never run on it.
 */
static int start_locked(negstream__poller *p, negstream_error *err)
{
    static const int sync_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL,
                                        SIGTRAP, SIGSYS };
    sigset_t all, old;
    size_t i;
    int rc;

#ifdef USE_EPOLL
    struct epoll_event ev;

    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, errno,
                           "cannot create the poller's epoll instance "
                           "(check ulimit -n)");
        goto fail;
    }
#endif
    if (open_wake(p) < 0) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, errno,
                           "cannot create the poller's wake-up fd "
                           "(check ulimit -n)");
        goto fail;
    }
#ifdef USE_EPOLL
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;        /* level-triggered, never one-shot */
    ev.data.u64 = WAKE_TAG;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake.r, &ev) < 0) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, errno,
                           "cannot watch the poller's wake-up fd");
        goto fail;
    }
#else
    if (snap_reserve(p, 1 + p->pollv_cap) < 0) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, ENOMEM,
                           "cannot allocate the poller's poll array");
        goto fail;
    }
    p->dirty = true;
#endif
    /* Set before the thread exists: it takes them over at once. */
    p->stop = false;
    p->in_wait = false;
    p->wake_sent = false;
    p->wait_until = INT64_MAX;
    sigfillset(&all);
    for (i = 0; i < sizeof(sync_signals) / sizeof(sync_signals[0]); i++)
        sigdelset(&all, sync_signals[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&p->thread, NULL, poller_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, rc,
                           "cannot start the poller thread; check the "
                           "thread and memory limits (ulimit -u, -v)");
        goto fail;
    }
    p->running = true;
    return 0;
fail:
    close_kernel(p);
    return -1;
}

static void poller_destroy(negstream__poller *p)
{
    close_kernel(p);
    free(p->reg);
    free(p->heap);
#ifndef USE_EPOLL
    free(p->pollv);
    snap_free(&p->snap);
    snap_free(&p->next_snap);
#endif
    pthread_mutex_destroy(&p->mu);
    free(p);
}

negstream__poller *negstream__poller_new(negstream_pool *pool,
                                         negstream_error *err)
{
    negstream__poller *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        negstream__err_sys(err, NEGSTREAM_E_NOMEM, ENOMEM,
                           "cannot allocate a poller");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    p->pool = pool;
    p->refs = 1;
    p->epfd = -1;
    p->wake.r = p->wake.w = -1;
    p->free_head = REG_NONE;
    p->wait_until = INT64_MAX;
    pthread_mutex_lock(&p->mu);
    if (start_locked(p, err) < 0) {
        pthread_mutex_unlock(&p->mu);
        poller_destroy(p);
        return NULL;
    }
    pthread_mutex_unlock(&p->mu);
    NEGSTREAM__TRACE("poller %p: %s", (void *)p, negstream__poller_backend());
    negstream__err_ok(err);
    return p;
}

/* ---- the API ------------------------------------------------------------ */

int negstream__poller_arm(negstream__poller *p, negstream__pollfd *pfd,
                          int slot, short events, int64_t deadline,
                          negstream__job *job, negstream_error *err)
{
    negstream__watch *w;
    bool past = false;
    int rc = -1, other;

    if (p == NULL || pfd == NULL || job == NULL || job->run == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           p == NULL ? "poller" : pfd == NULL ? "pollfd"
                           : job == NULL ? "job" : "job->run");
        return -1;
    }
    if (slot < 0 || slot >= NEGSTREAM__POLL_SLOTS || events == 0
        || (events & ~(POLLIN | POLLOUT)) != 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "poller: slot %d, events %#x (slot 0 to %d, "
                           "events POLLIN and/or POLLOUT)", slot,
                           (unsigned)events, NEGSTREAM__POLL_SLOTS - 1);
        return -1;
    }
    w = &pfd->slot[slot];
    other = 1 - slot;
    pthread_mutex_lock(&p->mu);
    if (p->disposed) {
        negstream__err_set(err, NEGSTREAM_E_DISPOSED,
                           "the worker pool is being freed");
        goto out;
    }
    if (w->armed) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "poller: slot %d of fd %d is already armed",
                           slot, pfd->fd);
        goto out;
    }
    /* A job is chained through job->next once fired: it can wait on one
     * slot at a time. */
    if (pfd->slot[other].armed && pfd->slot[other].job == job) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "poller: the job already waits on fd %d",
                           pfd->fd);
        goto out;
    }
    if (pfd->registered && pfd->poller != p) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "poller: fd %d is registered with another "
                           "pool's poller (forget it first)", pfd->fd);
        goto out;
    }
    if (deadline >= 0 && deadline <= negstream__mono_ms()) {
        /* Already past: fires at once, the fd is not even looked at. */
        w->job = job;
        w->fired = NEGSTREAM__FIRE_TIMEOUT;
        past = true;
        rc = 0;
        goto out;
    }
    if (!p->running && start_locked(p, err) < 0)
        goto out;
    if (deadline >= 0 && heap_reserve(p, err) < 0)
        goto out;
    if (!pfd->registered) {
        if (reg_add(p, pfd, events, err) < 0)
            goto out;
    }
#ifdef USE_EPOLL
    else if (kernel_set(p, pfd, (short)(armed_union(pfd) | events),
                        err) < 0) {
        goto out;
    }
#endif
    w->job = job;
    w->events = events;
    w->deadline = deadline;
    w->fired = NEGSTREAM__FIRE_NONE;
    w->armed = true;
    p->narmed++;
    if (deadline >= 0) {
        heap_push(p, pfd, slot);
        if (deadline < p->wait_until)
            wake_locked(p);         /* it sleeps past the new deadline */
    }
#ifndef USE_EPOLL
    if (pollv_update(p, pfd))
        wake_locked(p);             /* its copy lacks these events */
#endif
    rc = 0;
out:
    pthread_mutex_unlock(&p->mu);
    if (past) {
        /* Owner-serialised: nobody else looks at the slot until the job
         * runs, so it can be reset if the pool refuses the job. */
        if (negstream__pool_resume(p->pool, job, err) < 0) {
            w->fired = NEGSTREAM__FIRE_NONE;
            return -1;
        }
    }
    if (rc == 0)
        negstream__err_ok(err);
    return rc;
}

bool negstream__poller_disarm(negstream__poller *p, negstream__pollfd *pfd,
                              int slot)
{
    negstream__watch *w;
    bool was;

    if (p == NULL || pfd == NULL || slot < 0
        || slot >= NEGSTREAM__POLL_SLOTS)
        return false;
    w = &pfd->slot[slot];
    if (pfd->poller != p)       /* armed implies registered with p */
        return false;
    pthread_mutex_lock(&p->mu);
    was = w->armed;
    if (was) {
        w->armed = false;
        if (w->heap_idx != NO_IDX)
            heap_remove(p, w->heap_idx);
        p->narmed--;
        /* Lazy with both backends: the kernel mask (epoll) or the poll
         * entry keeps its events; if the fd is reported ready with
         * nothing armed, the thread drops the report and stops asking. */
    }
    pthread_mutex_unlock(&p->mu);
    return was;
}

void negstream__poller_forget(negstream__pollfd *pfd)
{
    negstream__poller *p;
    bool last;
    int i;

    if (pfd == NULL || !pfd->registered)
        return;
    p = pfd->poller;
    pthread_mutex_lock(&p->mu);
    for (i = 0; i < NEGSTREAM__POLL_SLOTS; i++) {
        if (pfd->slot[i].armed) {
            /* A caller bug (poller.h: no slot may be armed); never leave
             * a pointer to the pollfd in the heap. */
            NEGSTREAM__TRACE("poller %p: fd %d forgotten with slot %d "
                             "armed; its job will not run", (void *)p,
                             pfd->fd, i);
            pfd->slot[i].armed = false;
            if (pfd->slot[i].heap_idx != NO_IDX)
                heap_remove(p, pfd->slot[i].heap_idx);
            p->narmed--;
        }
    }
#ifdef USE_EPOLL
    /* After negstream__poller_free the instance is closed, and with it
     * every registration. */
    if (p->epfd >= 0
        && epoll_ctl(p->epfd, EPOLL_CTL_DEL, pfd->fd, NULL) < 0)
        NEGSTREAM__TRACE("poller %p: epoll_ctl DEL fd %d: %s", (void *)p,
                         pfd->fd, strerror(errno));
#endif
    reg_release(p, pfd);
    last = p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (last)
        poller_destroy(p);
}

void negstream__poller_free(negstream__poller *p)
{
    joblist fired = { NULL, NULL };
    negstream__job *job, *next;
    negstream_pool *pool;
    negstream_error e;
    bool joined, last;
    size_t i;
    int s;

    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->disposed) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->disposed = true;
    joined = p->running;
    if (p->running) {
        p->stop = true;
        wake_write(p);
    }
    pthread_mutex_unlock(&p->mu);
    /* The thread resumes what it has fired before it looks at stop. */
    if (joined)
        pthread_join(p->thread, NULL);

    pthread_mutex_lock(&p->mu);
    p->running = false;
    for (i = 0; i < p->reg_hwm; i++) {
        if (p->reg[i].pfd == NULL)
            continue;
        for (s = 0; s < NEGSTREAM__POLL_SLOTS; s++)
            if (p->reg[i].pfd->slot[s].armed)
                fire(p, p->reg[i].pfd, s, NEGSTREAM__FIRE_SHUTDOWN, &fired);
    }
    /* Jobs the pool refused earlier get their last chance now, behind the
     * SHUTDOWN ones (the pool accepts resumes while it drains). */
    joblist_splice(&fired, p->retry);
    p->retry = NULL;
    /* Closing the epoll instance ends every registration with it; the
     * pollfds stay 'registered' so that forget keeps the count. */
    close_kernel(p);
    pool = p->pool;
    last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);

    for (job = fired.head; job != NULL; job = next) {
        next = job->next;
        job->next = NULL;
        if (negstream__pool_resume(pool, job, &e) < 0)
            NEGSTREAM__TRACE("poller %p: a job fired at shutdown was "
                             "refused by its pool: %s", (void *)p,
                             e.message);
    }
    if (last)
        poller_destroy(p);
}

size_t negstream__poller_armed(negstream__poller *p)
{
    size_t n;

    if (p == NULL)
        return 0;
    pthread_mutex_lock(&p->mu);
    n = p->narmed;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* ---- fork (see the top of the file) ------------------------------------- */

void negstream__poller_atfork_prepare(negstream__poller *p)
{
    if (p != NULL)
        pthread_mutex_lock(&p->mu);
}

void negstream__poller_atfork_parent(negstream__poller *p)
{
    if (p != NULL)
        pthread_mutex_unlock(&p->mu);
}

void negstream__poller_atfork_child(negstream__poller *p)
{
    negstream__pollfd *pfd;
    size_t i;
    int s;

    if (p == NULL)
        return;
    /* The watches and registrations are the parent's streams': forget
     * them here without a system call. */
    for (i = 0; i < p->reg_hwm; i++) {
        pfd = p->reg[i].pfd;
        if (pfd == NULL)
            continue;
        for (s = 0; s < NEGSTREAM__POLL_SLOTS; s++) {
            pfd->slot[s].armed = false;
            pfd->slot[s].heap_idx = NO_IDX;
        }
        pfd->registered = false;
        pfd->poller = NULL;
        pfd->poll_idx = NO_IDX;
        pfd->kmask = 0;
        p->reg[i].pfd = NULL;
        p->refs--;
    }
    p->reg_hwm = 0;
    p->nreg = 0;
    p->free_head = REG_NONE;
    p->nheap = 0;
    p->narmed = 0;
    p->retry = NULL;
    /* The thread is gone; its fds are the parent's epoll set and wake-up
     * fd: close them, never epoll_ctl them.  The next arm starts anew. */
    close_kernel(p);
    p->running = false;
    p->stop = false;
    p->in_wait = false;
    p->wake_sent = false;
    p->wait_until = INT64_MAX;
#ifndef USE_EPOLL
    p->dirty = true;
#endif
    pthread_mutex_unlock(&p->mu);
}
