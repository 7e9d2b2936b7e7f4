/*
 * trace.c - NEGSTREAM_TRACE: unset, empty or "0" is off; "1" logs to
 * stderr; any other value is a file path, opened once for append (a
 * symbolic link there is refused).
 *
 * The environment is read once (pthread_once), at the first trace call.
 * Each line is formatted in a local buffer and written with a single
 * write(), so lines from several threads (and, with O_APPEND, several
 * processes) never interleave.  Callers trace handshake steps, sizes,
 * flags and errors; never key material, tokens or plaintext.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
# include <sys/syscall.h>
#endif

#include "scrub.h"
#include "trace.h"

/* Longer lines are cut; a trace line is a summary, not a dump. */
#define LINE_MAX_LEN 1024

static pthread_once_t trace_once = PTHREAD_ONCE_INIT;
static int trace_fd = -1;          /* -1: tracing is off */

static unsigned long thread_id(void)
{
#if defined(__linux__) && defined(SYS_gettid)
    /* The kernel's id matches what ps, top and gdb show. */
    return (unsigned long)syscall(SYS_gettid);
#else
    return (unsigned long)(uintptr_t)pthread_self();
#endif
}

static void write_line(int fd, const char *line, size_t len)
{
    ssize_t n;

    /* One write: atomic for a pipe up to PIPE_BUF and for an O_APPEND
     * file.  A short write to a full tty is not worth a retry. */
    do {
        n = write(fd, line, len);
    } while (n < 0 && errno == EINTR);
}

/* Formats "negstream[pid.tid]: <text>\n" into buf (cap bytes) with
 * embedded newlines turned into spaces and other control characters into
 * '?', so one call is one line. */
static size_t format_line(char *buf, size_t cap, const char *fmt,
                          va_list ap) NEGSTREAM__PRINTF(3, 0);

static size_t format_line(char *buf, size_t cap, const char *fmt,
                          va_list ap)
{
    size_t max = cap - 2;           /* room for the '\n' and the NUL */
    size_t len, head, i;
    int n;

    n = snprintf(buf, max + 1, "negstream[%ld.%lu]: ", (long)getpid(),
                 thread_id());
    len = n < 0 ? 0 : (size_t)n < max ? (size_t)n : max;
    head = len;
    n = vsnprintf(buf + len, max + 1 - len, fmt, ap);
    if (n > 0)
        len += (size_t)n < max - len ? (size_t)n : max - len;
    /* Our own line breaks and tabs become spaces; any other control
     * character (from a name in the peer's token, say) becomes '?', so
     * that a line cannot be split, forged or drive a terminal. */
    for (i = head; i < len; i++)
        if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')
            buf[i] = ' ';
    negstream__scrub(buf + head, len - head);
    buf[len++] = '\n';
    buf[len] = '\0';
    return len;
}

static void trace_warn(const char *fmt, ...) NEGSTREAM__PRINTF(1, 2);

static void trace_warn(const char *fmt, ...)
{
    char line[LINE_MAX_LEN];
    va_list ap;
    size_t len;

    va_start(ap, fmt);
    len = format_line(line, sizeof(line), fmt, ap);
    va_end(ap);
    write_line(STDERR_FILENO, line, len);
}

static void trace_init(void)
{
    const char *v;
    int fd;

    /* secure_getenv: a set-uid program must not append to a file named
     * by whoever runs it. */
#ifdef __GLIBC__
    v = secure_getenv("NEGSTREAM_TRACE");
#else
    v = getenv("NEGSTREAM_TRACE");
#endif
    if (v == NULL || v[0] == '\0' || strcmp(v, "0") == 0)
        return;
    if (strcmp(v, "1") == 0) {
        trace_fd = STDERR_FILENO;
        return;
    }
    /* O_CLOEXEC: a child of the application must not inherit our log.
     * O_NOFOLLOW: a symbolic link planted at the path (in a shared /tmp,
     * say) must not make us append to the file it points to; such a
     * path is refused, said once on stderr, and tracing is off.  Only
     * the last component is checked, as open(2) does. */
    fd = open(v, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
              0600);
    if (fd < 0) {
        int e = errno;
        struct stat st;

        if (lstat(v, &st) == 0 && S_ISLNK(st.st_mode)) {
            trace_warn("NEGSTREAM_TRACE file %s is a symbolic link: "
                       "refused, tracing is off (name the file itself, "
                       "or 1 for stderr)", v);
            return;
        }
        trace_warn("cannot open NEGSTREAM_TRACE file %s: %s; tracing to "
                   "stderr", v, strerror(e));
        fd = STDERR_FILENO;
    }
    trace_fd = fd;
}

bool negstream__trace_enabled(void)
{
    int saved_errno = errno;

    pthread_once(&trace_once, trace_init);
    errno = saved_errno;
    return trace_fd >= 0;
}

void negstream__trace(const char *fmt, ...)
{
    int saved_errno = errno;
    char line[LINE_MAX_LEN];
    va_list ap;
    size_t len;

    if (!negstream__trace_enabled())
        return;
    va_start(ap, fmt);
    len = format_line(line, sizeof(line), fmt, ap);
    va_end(ap);
    write_line(trace_fd, line, len);
    errno = saved_errno;
}
