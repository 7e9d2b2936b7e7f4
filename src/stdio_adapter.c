/*
 * stdio_adapter.c - negstream_fopen(3) and negstream_ferror(3): a FILE *
 * over an authenticated stream, for programs that talk through stdio.
 *
 * The FILE is fully buffered with a buffer of exactly one frame's
 * plaintext (64512 bytes), so stdio calls the write hook with a full
 * buffer, with what an fflush(3) found, or (a large fwrite) with a
 * multiple of the buffer size, and negstream_write cuts that into full
 * frames: a program that writes a line at a time pays one frame per
 * buffer, not one per line.  Reads hand stdio up to one frame's
 * plaintext per call (negstream_read never returns more).
 *
 * Built on glibc's fopencookie(3) or, where there is none, the BSDs'
 * funopen(3) (configure checks for both).  Only the public API is used.
 *
 * Lifetimes: the cookie (and the stdio buffer in it) is freed by the close
 * hook, which fclose(3) calls last; the stream is never closed here.  The
 * stream must outlive the FILE, except that a negstream_close from another
 * thread may interrupt a FILE operation in progress: that operation fails
 * with DISPOSED, the cookie remembers it and never touches the stream
 * again (it may be freed by then), so fclose is still safe.
 *
 * Locks: stdio serialises the hooks of one FILE with the FILE's own lock;
 * 'reg_mu' guards the list of open cookies and every cookie's 'last' and
 * 'failed', so negstream_ferror may run in any thread, even while another
 * is blocked in a hook of the same FILE.  reg_mu is a leaf: nothing is
 * called while it is held.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "error.h"
#include "stdio_adapter.h"

#if defined(HAVE_FOPENCOOKIE)
# define USE_FOPENCOOKIE 1
#elif defined(HAVE_FUNOPEN)
# define USE_FUNOPEN 1
#endif

enum { F_READ = 1, F_WRITE = 2 };

typedef struct ns_file {
    negstream       *s;
    FILE            *f;            /* set once fopencookie returned */
    pid_t            pid;          /* the process that opened it */
    char            *buf;          /* the stdio buffer: plaintext, wiped */
    /* guarded by reg_mu */
    bool             disposed;     /* the stream said DISPOSED: hands off */
    bool             failed;
    negstream_error  last;         /* the last failure, when failed */
    bool             listed;
    struct ns_file  *prev, *next;
} ns_file;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static ns_file *reg_head;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A child forked while another thread held reg_mu would find it locked
 * for ever; its FILEs must still fail cleanly (file_usable), so fork
 * takes reg_mu in the parent and the child starts with it unlocked. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&reg_mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&reg_mu);
}

static void fork_child(void)
{
    pthread_mutex_init(&reg_mu, NULL);
}

static void register_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- the errno table ---------------------------------------------------- */

int negstream__status_errno(const negstream_error *e)
{
    switch (e->code) {
    case NEGSTREAM_OK:
        return 0;
    case NEGSTREAM_E_ARGUMENT_NULL:
    case NEGSTREAM_E_ARGUMENT_RANGE:
    case NEGSTREAM_E_ARGUMENT:
        return EINVAL;
    case NEGSTREAM_E_INVALID_OPERATION:
        return ENOTCONN;
    case NEGSTREAM_E_NOT_SUPPORTED:
        return EBUSY;
    case NEGSTREAM_E_DISPOSED:
        return EBADF;
    case NEGSTREAM_E_IO:
        /* The system call's own errno says most (ECONNRESET, EPIPE);
         * one that invites a retry would lie: the stream is faulted. */
        if (e->sys_errno != 0 && e->sys_errno != EINTR
            && e->sys_errno != EAGAIN && e->sys_errno != EWOULDBLOCK)
            return e->sys_errno;
        return EIO;
    case NEGSTREAM_E_AUTHENTICATION:
    case NEGSTREAM_E_INVALID_CREDENTIAL:
        return EACCES;
    case NEGSTREAM_E_TIMEOUT:
        return ETIMEDOUT;
    case NEGSTREAM_E_CANCELED:
        return ECANCELED;
    case NEGSTREAM_E_NOMEM:
        return ENOMEM;
    }
    /* Not a default label: -Wswitch then names any code added later. */
    return EIO;
}

/* ---- the list of open cookies ------------------------------------------- */

static void list_add(ns_file *nf)
{
    pthread_mutex_lock(&reg_mu);
    nf->prev = NULL;
    nf->next = reg_head;
    if (reg_head != NULL)
        reg_head->prev = nf;
    reg_head = nf;
    nf->listed = true;
    pthread_mutex_unlock(&reg_mu);
}

static void list_remove(ns_file *nf)
{
    pthread_mutex_lock(&reg_mu);
    if (nf->listed) {
        if (nf->prev != NULL)
            nf->prev->next = nf->next;
        else
            reg_head = nf->next;
        if (nf->next != NULL)
            nf->next->prev = nf->prev;
        nf->listed = false;
    }
    pthread_mutex_unlock(&reg_mu);
}

/* ---- the hooks ---------------------------------------------------------- */

/* Overwrites plaintext before its memory is freed; the compiler may not
 * drop the stores (the pointer is volatile). */
static void wipe(void *p, size_t n)
{
#if defined(HAVE_EXPLICIT_BZERO)
    explicit_bzero(p, n);
#else
    volatile unsigned char *v = p;

    while (n-- > 0)
        *v++ = 0;
#endif
}

/*
 * Records the failure e, sets errno from the table, returns -1.  After a
 * DISPOSED from the stream, every FILE of that stream keeps its hands off
 * it: the stream was closed and may be freed once this call returned.
 */
static ssize_t file_fail(ns_file *nf, const negstream_error *e)
{
    int errnum = negstream__status_errno(e);
    ns_file *o;

    pthread_mutex_lock(&reg_mu);
    nf->last = *e;
    nf->failed = true;
    if (e->code == NEGSTREAM_E_DISPOSED && !nf->disposed) {
        nf->disposed = true;
        for (o = reg_head; o != NULL; o = o->next)
            if (o->s == nf->s && !o->disposed) {
                o->disposed = true;
                o->last = *e;
                o->failed = true;
            }
    }
    pthread_mutex_unlock(&reg_mu);
    errno = errnum != 0 ? errnum : EIO;
    return -1;
}

/*
 * Whether the stream may be called for this FILE: not after it reported
 * DISPOSED (it may be freed), and not in a child process: the child's
 * copy of the stream shares the socket and the GSS sequence numbers with
 * the parent's, so one frame from the child would break both (and exit()
 * in a child flushes every FILE).  Fills e when not.
 */
static bool file_usable(ns_file *nf, negstream_error *e)
{
    bool disposed;
    pid_t me;

    pthread_mutex_lock(&reg_mu);
    disposed = nf->disposed;
    if (disposed)
        *e = nf->last;
    pthread_mutex_unlock(&reg_mu);
    if (disposed)
        return false;
    me = getpid();
    if (me != nf->pid) {
        negstream__err_set(e, NEGSTREAM_E_DISPOSED,
                           "FILE of negstream_fopen used in process %ld, "
                           "opened in process %ld: streams do not cross "
                           "fork(), nothing sent or read", (long)me,
                           (long)nf->pid);
        return false;
    }
    return true;
}

static ssize_t file_read(ns_file *nf, char *buf, size_t size)
{
    negstream_error e;
    ssize_t n;

    if (!file_usable(nf, &e))
        return file_fail(nf, &e);
    if (size > SSIZE_MAX)
        size = SSIZE_MAX;
    /* stdio never asks for 0 bytes; 0 here would read as end of file. */
    n = negstream_read(nf->s, buf, size, 0, (ssize_t)size, &e);
    if (n < 0)
        return file_fail(nf, &e);
    return n;
}

/* Writes all of buf (as frames of at most 64512 bytes) or fails. */
static ssize_t file_write(ns_file *nf, const char *buf, size_t size)
{
    negstream_error e;
    size_t done = 0;

    /* An empty write is no frame (stdio does not make one anyway). */
    if (size == 0)
        return 0;
    if (!file_usable(nf, &e))
        return file_fail(nf, &e);
    while (done < size) {
        size_t chunk = size - done;
        ssize_t n;

        if (chunk > SSIZE_MAX)
            chunk = SSIZE_MAX;
        n = negstream_write(nf->s, buf + done, chunk, 0, (ssize_t)chunk,
                            &e);
        if (n < 0)
            return file_fail(nf, &e);
        done += (size_t)n;
    }
    return (ssize_t)done;
}

/* fclose's last step: forget the FILE, wipe and free; the stream stays
 * open (that is the caller's negstream_close). */
static int file_close(ns_file *nf)
{
    list_remove(nf);
    if (nf->buf != NULL) {
        wipe(nf->buf, NEGSTREAM__FILE_BUFSIZE);
        free(nf->buf);
    }
    free(nf);
    return 0;
}

#if defined(USE_FOPENCOOKIE)

static ssize_t hook_read(void *cookie, char *buf, size_t size)
{
    return file_read(cookie, buf, size);
}

/* fopencookie wants 0, never -1, for a failed write. */
static ssize_t hook_write(void *cookie, const char *buf, size_t size)
{
    ssize_t n = file_write(cookie, buf, size);

    return n < 0 ? 0 : n;
}

/* A stream has no position: fseek and ftell fail as on a socket. */
static int hook_seek(void *cookie, off64_t *offset, int whence)
{
    (void)cookie;
    (void)offset;
    (void)whence;
    errno = ESPIPE;
    return -1;
}

static int hook_close(void *cookie)
{
    return file_close(cookie);
}

static FILE *open_cookie(ns_file *nf, int flags)
{
    cookie_io_functions_t io;

    memset(&io, 0, sizeof(io));
    io.read = (flags & F_READ) ? hook_read : NULL;
    io.write = (flags & F_WRITE) ? hook_write : NULL;
    io.seek = hook_seek;
    io.close = hook_close;
    return fopencookie(nf, flags == (F_READ | F_WRITE) ? "r+"
                       : flags == F_READ ? "r" : "w", io);
}

#elif defined(USE_FUNOPEN)

static int hook_read(void *cookie, char *buf, int size)
{
    return (int)file_read(cookie, buf, size > 0 ? (size_t)size : 0);
}

static int hook_write(void *cookie, const char *buf, int size)
{
    return (int)file_write(cookie, buf, size > 0 ? (size_t)size : 0);
}

static int hook_close(void *cookie)
{
    return file_close(cookie);
}

/* No seek function: the BSDs' fseek then fails with ESPIPE by itself
 * (and their seek types differ: fpos_t on FreeBSD and macOS, off_t in
 * libbsd). */
static FILE *open_cookie(ns_file *nf, int flags)
{
    return funopen(nf, (flags & F_READ) ? hook_read : NULL,
                   (flags & F_WRITE) ? hook_write : NULL, NULL, hook_close);
}

#endif

/* ---- the API ------------------------------------------------------------ */

/* "r", "w", "r+"; a 'b' after the first letter is accepted and means
 * nothing (as in fopen on POSIX).  Returns the F_ flags, or 0. */
static int parse_mode(const char *mode)
{
    int flags, plus = 0;
    const char *p;

    if (mode[0] == 'r')
        flags = F_READ;
    else if (mode[0] == 'w')
        flags = F_WRITE;
    else
        return 0;
    for (p = mode + 1; *p != '\0'; p++) {
        if (*p == '+' && plus == 0 && flags == F_READ)
            plus = 1;
        else if (*p != 'b')
            return 0;
    }
    return plus ? F_READ | F_WRITE : flags;
}

NEGSTREAM_API FILE *negstream_fopen(negstream *s, const char *mode)
{
    ns_file *nf = NULL;
    FILE *f = NULL;
    int flags = 0;

    if (s == NULL || mode == NULL || (flags = parse_mode(mode)) == 0) {
        errno = EINVAL;
        goto out;
    }
#if !defined(USE_FOPENCOOKIE) && !defined(USE_FUNOPEN)
    (void)flags;
    errno = ENOSYS;             /* neither fopencookie nor funopen */
    goto out;
#else
    pthread_once(&atfork_once, register_atfork);
    nf = calloc(1, sizeof(*nf));
    if (nf == NULL || (nf->buf = malloc(NEGSTREAM__FILE_BUFSIZE)) == NULL) {
        errno = ENOMEM;
        goto out;
    }
    nf->s = s;
    nf->pid = getpid();
    f = open_cookie(nf, flags);
    if (f == NULL)
        goto out;               /* errno from fopencookie / funopen */
    nf->f = f;
    /* Before any I/O: our buffer, of exactly one frame.  glibc ignores the
     * size when it allocates the buffer itself, hence our own. */
    if (setvbuf(f, nf->buf, _IOFBF, NEGSTREAM__FILE_BUFSIZE) != 0) {
        fclose(f);              /* the close hook frees nf */
        nf = NULL;
        f = NULL;
        errno = EINVAL;
        goto out;
    }
    list_add(nf);
    nf = NULL;                  /* owned by the FILE now */
#endif
out:
    if (nf != NULL) {
        free(nf->buf);
        free(nf);
    }
    return f;
}

NEGSTREAM_API int negstream_ferror(FILE *f, negstream_error *err)
{
    ns_file *nf;
    int rc = -1;

    if (f == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "negstream_ferror: the FILE is NULL");
        return -1;
    }
    pthread_mutex_lock(&reg_mu);
    for (nf = reg_head; nf != NULL; nf = nf->next)
        if (nf->f == f)
            break;
    if (nf == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "negstream_ferror: not an open FILE of "
                           "negstream_fopen (closed, or from fopen?)");
    } else if (nf->failed) {
        if (err != NULL)
            *err = nf->last;
        rc = 1;
    } else {
        negstream__err_ok(err);
        rc = 0;
    }
    pthread_mutex_unlock(&reg_mu);
    return rc;
}
