/*
 * poller.h - one thread per worker pool that owns every fd on which an
 * operation is parked, and hands the operation's job back to the pool when
 * the fd is ready or the operation's deadline has passed.  Private.
 *
 * Knows fds, deadlines and jobs: never GSSAPI, frames or streams.  epoll
 * (level-triggered, EPOLLONESHOT) where configure found it, poll()
 * otherwise; a timer heap for deadlines; an eventfd (pipe fallback) to wake
 * the thread when the set changes.
 *
 * The owner (a stream) embeds one negstream__pollfd per fd it does I/O
 * on.  A pollfd has NEGSTREAM__POLL_SLOTS slots; each slot holds at most
 * one armed watch: (events, deadline, job).  Slot 0 serves the read side
 * (a read or a handshake), slot 1 the write side, so a pending read and a
 * pending write may be parked on one fd at once, even for the same events
 * (a TLS transport may need POLLOUT to read).  The fd is registered with
 * the kernel on the first arm and stays registered (with no events, while
 * nothing is armed) until negstream__poller_forget.
 *
 * A watch fires once: when any of its events (or POLLERR / POLLHUP, which
 * always count) is ready -> NEGSTREAM__FIRE_READY; when its deadline passes
 * first -> NEGSTREAM__FIRE_TIMEOUT; when the poller shuts down (its pool is
 * freed) -> NEGSTREAM__FIRE_SHUTDOWN.  Firing disarms the slot, records
 * why in the slot (negstream__pollfd_fired) and submits the job to the pool
 * (outside the poller's lock).  The job then owns the slot again and may
 * re-arm it.
 *
 * Locks: poller->mu is taken after stream->mu (the stream arms under its
 * own lock, so that a close cannot miss a parked operation) and is never
 * held together with pool->mu (jobs are submitted after unlocking).
 *     stream->mu  ->  poller->mu
 *     stream->mu  ->  pool->mu  ->  ar->mu
 */
#ifndef NEGSTREAM_POLLER_H
#define NEGSTREAM_POLLER_H

#include <stdbool.h>
#include <stdint.h>
#include "negstream.h"
#include "pool.h"

#define NEGSTREAM__POLL_SLOTS 2
#define NEGSTREAM__SLOT_READ  0
#define NEGSTREAM__SLOT_WRITE 1

/* negstream__pollfd_fired */
#define NEGSTREAM__FIRE_NONE     0   /* not fired (armed, or never armed) */
#define NEGSTREAM__FIRE_READY    1
#define NEGSTREAM__FIRE_TIMEOUT  2
#define NEGSTREAM__FIRE_SHUTDOWN 3

typedef struct negstream__poller negstream__poller;

/* One armed watch.  Poller-private except where noted. */
typedef struct negstream__watch {
    negstream__job *job;        /* submitted when the watch fires */
    int64_t         deadline;   /* CLOCK_MONOTONIC ms; -1: none */
    short           events;     /* POLLIN and/or POLLOUT */
    bool            armed;
    int             fired;      /* NEGSTREAM__FIRE_*: why it last fired */
    size_t          heap_idx;   /* position in the timer heap, if any */
} negstream__watch;

/* Embedded in the owner; zero it, then set fd with negstream__pollfd_init. */
typedef struct negstream__pollfd {
    int                 fd;
    negstream__poller  *poller;     /* the poller it is registered with */
    bool                registered; /* known to the kernel (epoll) */
    uint32_t            kmask;      /* events currently asked of the kernel */
    size_t              poll_idx;   /* its index in the poller's table */
    negstream__watch    slot[NEGSTREAM__POLL_SLOTS];
} negstream__pollfd;

void negstream__pollfd_init(negstream__pollfd *pfd, int fd);

/* The pool's poller, created (thread and all) on first use.  NULL with err
 * (NEGSTREAM_E_NOMEM: no memory, no thread, no epoll fd;
 * NEGSTREAM_E_DISPOSED: the pool is being freed). */
negstream__poller *negstream__pool_poller(negstream_pool *p,
                                          negstream_error *err);

/* Every deadline is in milliseconds of CLOCK_MONOTONIC: negstream__mono_ms
 * (util.h). */

/*
 * Parks job on pfd's slot until one of 'events' is ready or 'deadline'
 * (CLOCK_MONOTONIC ms, -1 for none) passes.  The slot must not be armed.
 * A deadline already past fires at once (TIMEOUT).  Returns 0, or -1 with
 * err and nothing armed: NEGSTREAM_E_DISPOSED if the poller is shutting
 * down, NEGSTREAM_E_IO (epoll_ctl failed, e.g. EBADF or EPERM for a
 * regular file), NEGSTREAM_E_NOMEM.
 */
int negstream__poller_arm(negstream__poller *p, negstream__pollfd *pfd,
                          int slot, short events, int64_t deadline,
                          negstream__job *job, negstream_error *err);

/* Takes the watch off if it is still armed: true if it was (its job will
 * not be submitted by the poller), false if it was not armed or has
 * already fired (its job is queued, or on its way to the queue). */
bool negstream__poller_disarm(negstream__poller *p, negstream__pollfd *pfd,
                              int slot);

/* Why the slot last fired (NEGSTREAM__FIRE_*).  Read by the job. */
int negstream__pollfd_fired(const negstream__pollfd *pfd, int slot);

/* The fd is about to be closed: unregisters it (no slot may be armed).
 * Does nothing if it was never registered. */
void negstream__poller_forget(negstream__pollfd *pfd);

/* For pool.c only. */
/* A poller for pool p, its thread and kernel objects started; called by
 * negstream__pool_poller.  NULL with err (NEGSTREAM_E_NOMEM). */
negstream__poller *negstream__poller_new(negstream_pool *p,
                                         negstream_error *err);
/* Fires every armed watch with SHUTDOWN, refuses later arms, stops and
 * joins the thread, frees the poller (its memory once the last registered
 * pollfd is forgotten, so that a stream outliving its pool can still call
 * negstream__poller_forget).  Called by negstream_pool_free before it
 * waits for the queue to drain, without pool->mu. */
void negstream__poller_free(negstream__poller *p);
/* fork(): in the child the thread is gone and the kernel's epoll set is
 * shared with the parent; drop every watch (they belong to the parent's
 * streams), never touch the old epoll fd's set, and start again lazily.
 * prepare/parent/child are called from pool.c's handlers. */
void negstream__poller_atfork_prepare(negstream__poller *p);
void negstream__poller_atfork_parent(negstream__poller *p);
void negstream__poller_atfork_child(negstream__poller *p);
/* For tests and benchmarks: the number of armed watches. */
size_t negstream__poller_armed(negstream__poller *p);
/* For tests and traces: "epoll+eventfd", "poll+pipe", ... */
const char *negstream__poller_backend(void);

#endif
