/*
 * shim.c - an LD_PRELOAD fault-injection library for the fault suites.
 *
 *   LD_PRELOAD=$top_builddir/tests/fault/.libs/libfaultshim.so PROGRAM
 *
 * It wraps the calls that move bytes on a socket and the allocator:
 *  - on file descriptors a test armed (faultshim_io_arm): transfers cut
 *    to one byte, EINTR storms (n failures before each call that goes
 *    through), EAGAIN on every other call of an O_NONBLOCK fd, so that
 *    the library's retry, short-count and poll paths run for real;
 *  - the allocator: the k-th allocation of the arming thread after
 *    faultshim_malloc_arm(k) returns NULL with ENOMEM, once.  Counting
 *    one thread only keeps the count deterministic while other threads
 *    (the peer of the test, pool workers) allocate freely;
 *  - free (and realloc when it moves a block): while secrets are watched
 *    (faultshim_secret_watch), every block is searched for them just
 *    before it goes back to the allocator, so that a test can tell
 *    whether a password or decrypted plaintext was left behind.
 * Everything else is passed straight to the next definition (libc, or the
 * sanitizer runtime that wraps libc), found with dlsym(RTLD_NEXT).
 *
 * dlsym itself may allocate before the real allocator is known; those few
 * requests are served from a static arena whose blocks are never freed.
 * Under AddressSanitizer the shim must come before the ASan runtime in the
 * library list (ASAN_OPTIONS=verify_asan_link_order=0, which the .krb
 * scripts set), so that its malloc is the one called and it forwards to
 * ASan's.
 */
#include "config.h"

#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "shim.h"

#define EXPORT __attribute__((visibility("default")))
#define TLS __thread __attribute__((tls_model("initial-exec")))

/* The control functions, found by the tests with dlsym (shim.h). */
EXPORT void faultshim_malloc_arm(unsigned long k, bool own);
EXPORT bool faultshim_malloc_disarm(void);
EXPORT unsigned long faultshim_malloc_count(void);
EXPORT void faultshim_io_arm(int fd, int modes, unsigned storm);
EXPORT void faultshim_io_disarm_all(void);
EXPORT void faultshim_io_stats(faultshim_stats *out);
EXPORT void faultshim_thread_fail(bool on);
EXPORT unsigned long faultshim_thread_failures(void);
EXPORT bool faultshim_secret_watch(const void *secret, size_t n);
EXPORT void faultshim_secret_ignore_thread(bool on);
EXPORT unsigned long faultshim_secret_hits(size_t i, void **where,
                                           size_t max);
EXPORT void faultshim_secret_clear(void);

/* ---- the allocator -------------------------------------------------- */

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void (*free_fn)(void *);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
typedef void *(*aligned_alloc_fn)(size_t, size_t);
typedef size_t (*usable_size_fn)(void *);

static malloc_fn real_malloc;
static calloc_fn real_calloc;
static realloc_fn real_realloc;
static free_fn real_free;
static posix_memalign_fn real_posix_memalign;
static aligned_alloc_fn real_aligned_alloc;
static aligned_alloc_fn real_memalign;
static usable_size_fn real_usable_size;

/* Bootstrap arena for allocations made while dlsym runs. */
#define ARENA_SIZE (64 * 1024)
static _Alignas(16) unsigned char arena[ARENA_SIZE];
static atomic_size_t arena_used;
static TLS int resolving;

/* Per-thread allocation fault. */
static TLS bool alloc_armed;
static TLS bool alloc_own;      /* count only the executable's calls */
static TLS bool alloc_fired;
static TLS unsigned long alloc_k;
static TLS unsigned long alloc_count;

static bool in_arena(const void *p)
{
    return (const unsigned char *)p >= arena &&
           (const unsigned char *)p < arena + ARENA_SIZE;
}

/* Blocks carry their size in the 16 bytes before them, for realloc. */
static void *arena_alloc(size_t n)
{
    size_t need = (n + 15) / 16 * 16 + 16;
    size_t at = atomic_fetch_add(&arena_used, need);

    if (at + need > ARENA_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    memcpy(arena + at, &n, sizeof(n));
    return arena + at + 16;
}

static size_t arena_size(const void *p)
{
    size_t n;

    memcpy(&n, (const unsigned char *)p - 16, sizeof(n));
    return n;
}

static void resolve_alloc(void)
{
    resolving++;
    if (real_malloc == NULL)
        real_malloc = (malloc_fn)dlsym(RTLD_NEXT, "malloc");
    if (real_calloc == NULL)
        real_calloc = (calloc_fn)dlsym(RTLD_NEXT, "calloc");
    if (real_realloc == NULL)
        real_realloc = (realloc_fn)dlsym(RTLD_NEXT, "realloc");
    if (real_free == NULL)
        real_free = (free_fn)dlsym(RTLD_NEXT, "free");
    if (real_posix_memalign == NULL)
        real_posix_memalign =
            (posix_memalign_fn)dlsym(RTLD_NEXT, "posix_memalign");
    if (real_aligned_alloc == NULL)
        real_aligned_alloc =
            (aligned_alloc_fn)dlsym(RTLD_NEXT, "aligned_alloc");
    if (real_memalign == NULL)
        real_memalign = (aligned_alloc_fn)dlsym(RTLD_NEXT, "memalign");
    if (real_usable_size == NULL)
        real_usable_size =
            (usable_size_fn)dlsym(RTLD_NEXT, "malloc_usable_size");
    resolving--;
}

/* The executable's mapped range: the test program, with the library
 * linked in statically (libnegstream_internal.la). */
static uintptr_t exe_lo, exe_hi;

static int find_exe(struct dl_phdr_info *info, size_t size, void *data)
{
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    int i;

    (void)size;
    (void)data;
    /* The first object reported is the executable. */
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

        if (ph->p_type != PT_LOAD)
            continue;
        if (info->dlpi_addr + ph->p_vaddr < lo)
            lo = info->dlpi_addr + ph->p_vaddr;
        if (info->dlpi_addr + ph->p_vaddr + ph->p_memsz > hi)
            hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
    }
    exe_lo = lo;
    exe_hi = hi;
    return 1;
}

/* True when this allocation, requested from 'caller', is the armed
 * one. */
static bool alloc_fails(const void *caller)
{
    if (!alloc_armed)
        return false;
    if (alloc_own && ((uintptr_t)caller < exe_lo ||
                      (uintptr_t)caller >= exe_hi))
        return false;
    alloc_count++;
    if (alloc_count == alloc_k && !alloc_fired) {
        alloc_fired = true;
        errno = ENOMEM;
        return true;
    }
    return false;
}

/* ---- secrets in freed blocks -------------------------------------- */

#define MAX_SECRETS 4
#define SECRET_MAX 256
#define MAX_WHERE 8

typedef struct secret {
    unsigned char bytes[SECRET_MAX];
    size_t        len;
    atomic_ulong  hits;
    atomic_size_t nwhere;
    _Atomic(void *) where[MAX_WHERE];   /* callers of the first frees */
} secret;

static secret secrets[MAX_SECRETS];
static atomic_size_t nsecrets;      /* published after the bytes */
static TLS bool secret_ignored;     /* this thread's frees not searched */
/* Searches hold it shared; watch and clear, which write the secrets,
 * exclusively (a worker may still be freeing when a test moves on). */
static pthread_rwlock_t secrets_lock = PTHREAD_RWLOCK_INITIALIZER;
/* Bumped by every clear, so that a block searched for the secrets of one
 * test is not counted against the next one's. */
static atomic_uint secrets_gen;

/* Which watched secrets (bit i for secret i) the block p holds, and in
 * which generation (*gen).  Reads only the block's usable size, before
 * the allocator gets it back. */
static unsigned scan_block(void *p, unsigned *gen)
{
    size_t i, n, size;
    unsigned found = 0;

    if (atomic_load(&nsecrets) == 0 || secret_ignored ||
        real_usable_size == NULL)
        return 0;
    size = real_usable_size(p);
    pthread_rwlock_rdlock(&secrets_lock);
    *gen = atomic_load(&secrets_gen);
    n = atomic_load(&nsecrets);
    for (i = 0; i < n; i++)
        if (size >= secrets[i].len &&
            memmem(p, size, secrets[i].bytes, secrets[i].len) != NULL)
            found |= 1u << i;
    pthread_rwlock_unlock(&secrets_lock);
    return found;
}

/* Counts a freed block that held the secrets in 'found' (searched in
 * generation gen). */
static void record_hits(unsigned found, unsigned gen, const void *caller)
{
    size_t i;

    if (found == 0)
        return;
    pthread_rwlock_rdlock(&secrets_lock);
    for (i = 0; gen == atomic_load(&secrets_gen) && i < MAX_SECRETS; i++) {
        if (found & (1u << i)) {
            size_t w = atomic_fetch_add(&secrets[i].nwhere, 1);

            if (w < MAX_WHERE)
                atomic_store(&secrets[i].where[w], (void *)caller);
            atomic_fetch_add(&secrets[i].hits, 1);
        }
    }
    pthread_rwlock_unlock(&secrets_lock);
}

/* Watches one more secret (at most 4, each 1 to 256 bytes); false if it
 * cannot. */
EXPORT bool faultshim_secret_watch(const void *bytes, size_t n)
{
    bool ok = false;
    size_t i;

    if (real_free == NULL || real_usable_size == NULL)
        resolve_alloc();
    pthread_rwlock_wrlock(&secrets_lock);
    i = atomic_load(&nsecrets);
    if (n > 0 && n <= SECRET_MAX && i < MAX_SECRETS &&
        real_usable_size != NULL) {
        memcpy(secrets[i].bytes, bytes, n);
        secrets[i].len = n;
        atomic_store(&secrets[i].hits, 0);
        atomic_store(&secrets[i].nwhere, 0);
        atomic_store(&nsecrets, i + 1);
        ok = true;
    }
    pthread_rwlock_unlock(&secrets_lock);
    return ok;
}

/* The calling thread's frees are searched (false) or not (true). */
EXPORT void faultshim_secret_ignore_thread(bool on)
{
    secret_ignored = on;
}

/* Freed blocks that held secret i so far; the callers of free for the
 * first of them go to where[0..max). */
EXPORT unsigned long faultshim_secret_hits(size_t i, void **where,
                                           size_t max)
{
    size_t k, nw;

    if (i >= atomic_load(&nsecrets))
        return 0;
    nw = atomic_load(&secrets[i].nwhere);
    for (k = 0; k < max && k < nw && k < MAX_WHERE; k++)
        where[k] = atomic_load(&secrets[i].where[k]);
    for (; k < max; k++)
        where[k] = NULL;
    return atomic_load(&secrets[i].hits);
}

/* Stops watching and forgets the secrets (their copies are wiped). */
EXPORT void faultshim_secret_clear(void)
{
    size_t i, k, n;
    volatile unsigned char *v;

    pthread_rwlock_wrlock(&secrets_lock);
    atomic_fetch_add(&secrets_gen, 1);
    n = atomic_exchange(&nsecrets, 0);
    for (i = 0; i < n; i++) {
        v = secrets[i].bytes;
        for (k = 0; k < SECRET_MAX; k++)
            v[k] = 0;
        secrets[i].len = 0;
    }
    pthread_rwlock_unlock(&secrets_lock);
}

/*
 * The same for a program that knows nothing of the shim (negcat, in
 * tests/negcat.krb): the value of FAULTSHIM_SECRET is watched from the
 * start, and at exit the process appends "EXE hits N" to the file
 * FAULTSHIM_REPORT, and one "freed-from ..." line per caller of the first
 * frees that held it.
 */
__attribute__((constructor)) static void secret_from_env(void)
{
    const char *v = getenv("FAULTSHIM_SECRET");

    if (v != NULL && v[0] != '\0' && getenv("FAULTSHIM_REPORT") != NULL)
        faultshim_secret_watch(v, strlen(v));
}

__attribute__((destructor)) static void secret_report(void)
{
    const char *path = getenv("FAULTSHIM_REPORT");
    void *where[MAX_WHERE];
    char line[512], exe[256];
    unsigned long hits;
    ssize_t len;
    size_t k;
    int fd, n;

    if (path == NULL || atomic_load(&nsecrets) == 0)
        return;
    hits = faultshim_secret_hits(0, where, MAX_WHERE);
    len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[len > 0 ? len : 0] = '\0';
    /* Appended: every process that inherits the environment (a libtool
     * wrapper's helpers, say) reports, one after the other. */
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    n = snprintf(line, sizeof(line), "%s hits %lu\n", exe, hits);
    if (n > 0 && write(fd, line, (size_t)n) < 0)
        goto out;
    for (k = 0; k < MAX_WHERE && where[k] != NULL; k++) {
        Dl_info info;

        if (dladdr(where[k], &info) != 0 && info.dli_fname != NULL)
            n = snprintf(line, sizeof(line), "freed-from %s+0x%lx (%s)\n",
                         info.dli_sname != NULL ? info.dli_sname : "?",
                         (unsigned long)((char *)where[k] -
                                         (char *)(info.dli_sname != NULL ?
                                                  info.dli_saddr :
                                                  info.dli_fbase)),
                         info.dli_fname);
        else
            n = snprintf(line, sizeof(line), "freed-from %p\n", where[k]);
        if (n > 0 && write(fd, line, (size_t)n) < 0)
            break;
    }
out:
    close(fd);
}

EXPORT void *malloc(size_t n)
{
    if (resolving)
        return arena_alloc(n);
    if (alloc_fails(__builtin_return_address(0)))
        return NULL;
    if (real_malloc == NULL)
        resolve_alloc();
    return real_malloc != NULL ? real_malloc(n) : arena_alloc(n);
}

EXPORT void *calloc(size_t m, size_t n)
{
    if (resolving) {
        if (n != 0 && m > SIZE_MAX / n) {
            errno = ENOMEM;
            return NULL;
        }
        return arena_alloc(m * n);   /* the arena is never reused: zero */
    }
    if (alloc_fails(__builtin_return_address(0)))
        return NULL;
    if (real_calloc == NULL)
        resolve_alloc();
    if (real_calloc == NULL)
        return arena_alloc(n != 0 && m > SIZE_MAX / n ? SIZE_MAX : m * n);
    return real_calloc(m, n);
}

EXPORT void *realloc(void *p, size_t n)
{
    unsigned found, gen = 0;
    void *q;

    if (p != NULL && in_arena(p)) {
        size_t old = arena_size(p);

        q = malloc(n);
        if (q != NULL)
            memcpy(q, p, old < n ? old : n);
        return q;
    }
    if (resolving)
        return arena_alloc(n);
    if (alloc_fails(__builtin_return_address(0)))
        return NULL;
    if (real_realloc == NULL)
        resolve_alloc();
    found = p != NULL ? scan_block(p, &gen) : 0;
    q = real_realloc(p, n);
    /* The old block went back to the allocator only if the data moved
     * (or n was 0, which frees it). */
    if (found != 0 && ((q != NULL && q != p) || n == 0))
        record_hits(found, gen, __builtin_return_address(0));
    return q;
}

EXPORT void free(void *p)
{
    unsigned found, gen = 0;

    if (p == NULL || in_arena(p))
        return;
    if (real_free == NULL)
        resolve_alloc();
    found = scan_block(p, &gen);
    record_hits(found, gen, __builtin_return_address(0));
    real_free(p);
}

EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
    if (alloc_fails(__builtin_return_address(0)))
        return ENOMEM;
    if (real_posix_memalign == NULL)
        resolve_alloc();
    return real_posix_memalign(out, align, n);
}

EXPORT void *aligned_alloc(size_t align, size_t n)
{
    if (alloc_fails(__builtin_return_address(0)))
        return NULL;
    if (real_aligned_alloc == NULL)
        resolve_alloc();
    return real_aligned_alloc(align, n);
}

EXPORT void *memalign(size_t align, size_t n)
{
    if (alloc_fails(__builtin_return_address(0)))
        return NULL;
    if (real_memalign == NULL)
        resolve_alloc();
    return real_memalign(align, n);
}

EXPORT void faultshim_malloc_arm(unsigned long k, bool own)
{
    if (exe_hi == 0)
        dl_iterate_phdr(find_exe, NULL);
    alloc_own = own;
    alloc_k = k;
    alloc_count = 0;
    alloc_fired = false;
    alloc_armed = true;
}

/* The string allocators the library calls.  Their own malloc inside
 * libc is counted in the "every allocation" mode; in the "own" mode it
 * comes from libc and is not, so they are counted here, by caller. */
typedef char *(*strdup_fn)(const char *);
typedef char *(*strndup_fn)(const char *, size_t);
typedef int (*vasprintf_fn)(char **, const char *, va_list);

EXPORT char *strdup(const char *str)
{
    static strdup_fn real_strdup;

    if (alloc_own && alloc_fails(__builtin_return_address(0)))
        return NULL;
    if (real_strdup == NULL)
        real_strdup = (strdup_fn)dlsym(RTLD_NEXT, "strdup");
    return real_strdup(str);
}

EXPORT char *strndup(const char *str, size_t n)
{
    static strndup_fn real_strndup;

    if (alloc_own && alloc_fails(__builtin_return_address(0)))
        return NULL;
    if (real_strndup == NULL)
        real_strndup = (strndup_fn)dlsym(RTLD_NEXT, "strndup");
    return real_strndup(str, n);
}

static int do_vasprintf(const void *caller, char **out, const char *fmt,
                        va_list ap) __attribute__((format(printf, 3, 0)));

static int do_vasprintf(const void *caller, char **out, const char *fmt,
                        va_list ap)
{
    static vasprintf_fn real_vasprintf;

    if (alloc_own && alloc_fails(caller)) {
        *out = NULL;
        return -1;
    }
    if (real_vasprintf == NULL)
        real_vasprintf = (vasprintf_fn)dlsym(RTLD_NEXT, "vasprintf");
    return real_vasprintf(out, fmt, ap);
}

EXPORT int vasprintf(char **out, const char *fmt, va_list ap)
{
    return do_vasprintf(__builtin_return_address(0), out, fmt, ap);
}

EXPORT int asprintf(char **out, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = do_vasprintf(__builtin_return_address(0), out, fmt, ap);
    va_end(ap);
    return rc;
}

EXPORT bool faultshim_malloc_disarm(void)
{
    alloc_armed = false;
    return alloc_fired;
}

EXPORT unsigned long faultshim_malloc_count(void)
{
    return alloc_count;
}

/* ---- I/O on armed fds ----------------------------------------------- */

#define MAX_ARMED 8

/* An armed socket is known by its inode, not by its number: the library
 * works on its own duplicate of the fd the test arms. */
typedef struct armed_fd {
    atomic_int   fd;            /* -1: free slot */
    atomic_ulong dev, ino;      /* what fstat says of it */
    atomic_int   modes;
    atomic_uint  storm;
    atomic_ulong calls;         /* per-fd call counter (EINTR, EAGAIN) */
} armed_fd;

static armed_fd armed[MAX_ARMED] = {
    { -1, 0, 0, 0, 0, 0 }, { -1, 0, 0, 0, 0, 0 }, { -1, 0, 0, 0, 0, 0 },
    { -1, 0, 0, 0, 0, 0 }, { -1, 0, 0, 0, 0, 0 }, { -1, 0, 0, 0, 0, 0 },
    { -1, 0, 0, 0, 0, 0 }, { -1, 0, 0, 0, 0, 0 },
};
static atomic_int n_armed;      /* fast path: nothing armed, no fstat */
static atomic_ulong st_short, st_eintr, st_eagain, st_calls;
static pthread_mutex_t arm_mu = PTHREAD_MUTEX_INITIALIZER;

EXPORT void faultshim_io_arm(int fd, int modes, unsigned storm)
{
    int i, free_slot = -1;

    pthread_mutex_lock(&arm_mu);
    for (i = 0; i < MAX_ARMED; i++) {
        if (atomic_load(&armed[i].fd) == fd) {
            free_slot = i;
            break;
        }
        if (free_slot < 0 && atomic_load(&armed[i].fd) < 0)
            free_slot = i;
    }
    if (free_slot >= 0) {
        armed_fd *a = &armed[free_slot];

        atomic_store(&a->fd, -1);
        atomic_store(&a->modes, modes);
        atomic_store(&a->storm, storm);
        atomic_store(&a->calls, 0);
        if (modes != 0) {
            struct stat st;

            if (fstat(fd, &st) == 0) {
                atomic_store(&a->dev, (unsigned long)st.st_dev);
                atomic_store(&a->ino, (unsigned long)st.st_ino);
                atomic_store(&a->fd, fd);
            }
        }
    }
    for (i = 0, free_slot = 0; i < MAX_ARMED; i++)
        free_slot += atomic_load(&armed[i].fd) >= 0;
    atomic_store(&n_armed, free_slot);
    pthread_mutex_unlock(&arm_mu);
}

EXPORT void faultshim_io_disarm_all(void)
{
    int i;

    pthread_mutex_lock(&arm_mu);
    for (i = 0; i < MAX_ARMED; i++)
        atomic_store(&armed[i].fd, -1);
    atomic_store(&n_armed, 0);
    pthread_mutex_unlock(&arm_mu);
}

EXPORT void faultshim_io_stats(faultshim_stats *out)
{
    out->short_io = atomic_load(&st_short);
    out->eintr = atomic_load(&st_eintr);
    out->eagain = atomic_load(&st_eagain);
    out->calls = atomic_load(&st_calls);
}

/* The armed entry for the socket fd refers to, through any of its
 * descriptors (the library's duplicate, the test's original). */
static armed_fd *find_armed(int fd)
{
    struct stat st;
    int i;

    if (fd < 0 || atomic_load(&n_armed) == 0 || fstat(fd, &st) != 0)
        return NULL;
    for (i = 0; i < MAX_ARMED; i++)
        if (atomic_load(&armed[i].fd) >= 0
            && atomic_load(&armed[i].ino) == (unsigned long)st.st_ino
            && atomic_load(&armed[i].dev) == (unsigned long)st.st_dev)
            return &armed[i];
    return NULL;
}

/*
 * Decides the fate of one call on fd.  Returns -1 with errno set when the
 * call is to fail without reaching the kernel; else 0, with *one set when
 * the transfer is to be cut to one byte.
 */
static int intercept(int fd, int flags, bool *one)
{
    armed_fd *a = find_armed(fd);
    unsigned long c;
    int modes;

    *one = false;
    if (a == NULL)
        return 0;
    modes = atomic_load(&a->modes);
    c = atomic_fetch_add(&a->calls, 1);
    atomic_fetch_add(&st_calls, 1);
    if (modes & FAULTSHIM_EINTR) {
        unsigned storm = atomic_load(&a->storm);

        if (storm > 0 && c % (storm + 1) != storm) {
            atomic_fetch_add(&st_eintr, 1);
            errno = EINTR;
            return -1;
        }
    }
    if ((modes & FAULTSHIM_EAGAIN) && c % 2 == 0) {
        int fl = fcntl(fd, F_GETFL);

        /* A call that may not block: an O_NONBLOCK fd, or MSG_DONTWAIT
         * (how the library makes one call on a blocking socket not
         * block). */
        if ((fl >= 0 && (fl & O_NONBLOCK)) || (flags & MSG_DONTWAIT)) {
            atomic_fetch_add(&st_eagain, 1);
            errno = EAGAIN;
            return -1;
        }
    }
    if (modes & FAULTSHIM_SHORT)
        *one = true;
    return 0;
}

/* Cuts a vector to its first byte; returns the new count (0 or 1). */
static int iov_one(const struct iovec *iov, int cnt, struct iovec *out)
{
    int i;

    for (i = 0; i < cnt; i++) {
        if (iov[i].iov_len > 0) {
            out->iov_base = iov[i].iov_base;
            out->iov_len = 1;
            return 1;
        }
    }
    return 0;
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    int i;

    for (i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

#define NEXT(type, name) \
    static type real_##name; \
    if (real_##name == NULL) \
        real_##name = (type)dlsym(RTLD_NEXT, #name)

typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int,
                             const struct sockaddr *, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, struct sockaddr *,
                               socklen_t *);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);
typedef ssize_t (*read_fn)(int, void *, size_t);

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    bool one;
    NEXT(send_fn, send);

    if (intercept(fd, flags, &one) < 0)
        return -1;
    if (one && n > 1) {
        atomic_fetch_add(&st_short, 1);
        n = 1;
    }
    return real_send(fd, buf, n, flags);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                      const struct sockaddr *to, socklen_t tolen)
{
    bool one;
    NEXT(sendto_fn, sendto);

    if (intercept(fd, flags, &one) < 0)
        return -1;
    if (one && n > 1) {
        atomic_fetch_add(&st_short, 1);
        n = 1;
    }
    return real_sendto(fd, buf, n, flags, to, tolen);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct msghdr m;
    struct iovec v;
    bool one;
    NEXT(sendmsg_fn, sendmsg);

    if (intercept(fd, flags, &one) < 0)
        return -1;
    if (one && iov_total(msg->msg_iov, (int)msg->msg_iovlen) > 1) {
        atomic_fetch_add(&st_short, 1);
        m = *msg;
        m.msg_iovlen = (size_t)iov_one(msg->msg_iov, (int)msg->msg_iovlen,
                                       &v);
        m.msg_iov = &v;
        return real_sendmsg(fd, &m, flags);
    }
    return real_sendmsg(fd, msg, flags);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    bool one;
    NEXT(write_fn, write);

    if (intercept(fd, 0, &one) < 0)
        return -1;
    if (one && n > 1) {
        atomic_fetch_add(&st_short, 1);
        n = 1;
    }
    return real_write(fd, buf, n);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    struct iovec v;
    bool one;
    NEXT(writev_fn, writev);

    if (intercept(fd, 0, &one) < 0)
        return -1;
    if (one && iov_total(iov, cnt) > 1) {
        atomic_fetch_add(&st_short, 1);
        return real_writev(fd, &v, iov_one(iov, cnt, &v));
    }
    return real_writev(fd, iov, cnt);
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    bool one;
    NEXT(recv_fn, recv);

    if (intercept(fd, flags, &one) < 0)
        return -1;
    if (one && n > 1) {
        atomic_fetch_add(&st_short, 1);
        n = 1;
    }
    return real_recv(fd, buf, n, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags,
                        struct sockaddr *from, socklen_t *fromlen)
{
    bool one;
    NEXT(recvfrom_fn, recvfrom);

    if (intercept(fd, flags, &one) < 0)
        return -1;
    if (one && n > 1) {
        atomic_fetch_add(&st_short, 1);
        n = 1;
    }
    return real_recvfrom(fd, buf, n, flags, from, fromlen);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    struct msghdr m;
    struct iovec v;
    ssize_t r;
    bool one;
    NEXT(recvmsg_fn, recvmsg);

    if (intercept(fd, flags, &one) < 0)
        return -1;
    if (one && iov_total(msg->msg_iov, (int)msg->msg_iovlen) > 1) {
        atomic_fetch_add(&st_short, 1);
        m = *msg;
        m.msg_iovlen = (size_t)iov_one(msg->msg_iov, (int)msg->msg_iovlen,
                                       &v);
        m.msg_iov = &v;
        r = real_recvmsg(fd, &m, flags);
        msg->msg_flags = m.msg_flags;
        msg->msg_controllen = m.msg_controllen;
        msg->msg_namelen = m.msg_namelen;
        return r;
    }
    return real_recvmsg(fd, msg, flags);
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    bool one;
    NEXT(read_fn, read);

    if (intercept(fd, 0, &one) < 0)
        return -1;
    if (one && n > 1) {
        atomic_fetch_add(&st_short, 1);
        n = 1;
    }
    return real_read(fd, buf, n);
}

/* The _FORTIFY_SOURCE entry points, in case the library is built with
 * it: they end in the wrappers above. */
EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen,
                          int flags);
EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen,
                          int flags)
{
    (void)buflen;
    return recv(fd, buf, n, flags);
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    (void)buflen;
    return read(fd, buf, n);
}

/* ---- thread creation ----------------------------------------------- */

static atomic_bool    thread_fail_on;
static atomic_ulong   thread_failures;

/* While on, every pthread_create fails with EAGAIN (as when the thread
 * limit is reached), so that a pool cannot start a worker. */
EXPORT void faultshim_thread_fail(bool on)
{
    atomic_store(&thread_fail_on, on);
}

EXPORT unsigned long faultshim_thread_failures(void)
{
    return atomic_load(&thread_failures);
}

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *,
                                 void *(*)(void *), void *);

EXPORT int pthread_create(pthread_t *t, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg)
{
    NEXT(pthread_create_fn, pthread_create);

    if (atomic_load(&thread_fail_on)) {
        atomic_fetch_add(&thread_failures, 1);
        return EAGAIN;
    }
    return real_pthread_create(t, attr, fn, arg);
}
