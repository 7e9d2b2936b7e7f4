/*
 * shim.h - control interface of the fault-injection shim (shim.c), an
 * LD_PRELOAD library that wraps the socket calls and the allocator.
 *
 * The test programs do not link against the shim: they find these
 * functions at run time (faultshim_load), so that the same binary says
 * clearly when it was started without LD_PRELOAD=.../libfaultshim.so.
 *
 * I/O faults apply only to the file descriptors armed with
 * faultshim_io_arm, and only to the calls the library uses to move bytes:
 * send, sendmsg, sendto, write, writev (out) and recv, recvfrom, recvmsg,
 * read (in).  Everything else (the KDC's sockets, trace files) is left
 * alone.
 */
#ifndef NEGSTREAM_FAULT_SHIM_H
#define NEGSTREAM_FAULT_SHIM_H

#include <stdbool.h>
#include <stddef.h>

/* What an armed fd suffers; combine with |. */
#define FAULTSHIM_SHORT   0x1   /* every transfer moves at most 1 byte */
#define FAULTSHIM_EINTR   0x2   /* each call fails 'storm' times with
                                   EINTR before one goes through */
#define FAULTSHIM_EAGAIN  0x4   /* on an O_NONBLOCK fd, every other call
                                   fails with EAGAIN */

/* Counters of faults injected, so a test can prove it tested something. */
typedef struct faultshim_stats {
    unsigned long short_io;     /* transfers cut to 1 byte */
    unsigned long eintr;        /* EINTR returned */
    unsigned long eagain;       /* EAGAIN returned */
    unsigned long calls;        /* intercepted calls on armed fds */
} faultshim_stats;

/* Scopes of the allocation fault. */
#define FAULTSHIM_THIS_THREAD 0 /* count only the arming thread's calls */

typedef struct faultshim_api {
    /* Arms fd with 'modes' (0 disarms it); up to 8 fds at once. */
    void (*io_arm)(int fd, int modes, unsigned storm);
    void (*io_disarm_all)(void);
    void (*io_stats)(faultshim_stats *out);
    /* Makes the k-th allocation (k >= 1: malloc, calloc, realloc,
     * posix_memalign, aligned_alloc, memalign) made by the calling
     * thread from now on return NULL (ENOMEM), once.  own: count only
     * the allocations the executable itself asks for (the library is
     * linked into it; strdup, strndup and asprintf count too), not
     * those made inside GSSAPI, krb5 or libc. */
    void (*malloc_arm)(unsigned long k, bool own);
    /* Disarms; returns true if the armed allocation failed. */
    bool (*malloc_disarm)(void);
    /* Allocations counted on this thread since malloc_arm. */
    unsigned long (*malloc_count)(void);
    /* While on, pthread_create fails with EAGAIN (no worker can start). */
    void (*thread_fail)(bool on);
    /* pthread_create calls failed so far. */
    unsigned long (*thread_failures)(void);
    /* Secrets left in freed memory: from now on every block handed to
     * free (or moved by realloc) is searched for these bytes (1 to 256
     * of them, at most 4 secrets) just before the allocator gets it
     * back.  False if the secret cannot be watched. */
    bool (*secret_watch)(const void *secret, size_t n);
    /* The calling thread's frees are not searched while on is true (the
     * peer of a test reading its own user database, say). */
    void (*secret_ignore_thread)(bool on);
    /* How many freed blocks held secret i (in watch order); the return
     * addresses of the first callers of free go to where[0..max). */
    unsigned long (*secret_hits)(size_t i, void **where, size_t max);
    /* Stops watching; the shim's copies of the secrets are wiped. */
    void (*secret_clear)(void);
} faultshim_api;

/* Fills api from the preloaded shim; false (api untouched) when the shim
 * is not loaded.  Implemented in tests/fault/faultutil.c. */
bool faultshim_load(faultshim_api *api);

#endif
