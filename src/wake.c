/*
 * wake.c - the wake-up fd (see wake.h): an eventfd, else a pipe.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include "wake.h"

#if NEGSTREAM__WAKE_EVENTFD
# include <sys/eventfd.h>
#endif

int negstream__wake_open(negstream__wake *w)
{
#if NEGSTREAM__WAKE_EVENTFD
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    if (fd < 0)
        return -1;
    w->r = w->w = fd;
    return 0;
#else
    int p[2];

# ifdef HAVE_PIPE2
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
# else
    int i;

    if (pipe(p) < 0)
        return -1;
    for (i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
    }
# endif
    w->r = p[0];
    w->w = p[1];
    return 0;
#endif
}

void negstream__wake_signal(const negstream__wake *w)
{
    ssize_t n;

    if (w->w < 0)
        return;
#if NEGSTREAM__WAKE_EVENTFD
    {
        uint64_t one = 1;

        do
            n = write(w->w, &one, sizeof(one));
        while (n < 0 && errno == EINTR);
    }
#else
    {
        char one = 1;

        do
            n = write(w->w, &one, 1);
        while (n < 0 && errno == EINTR);
    }
#endif
    /* EAGAIN: already readable, which is all we want. */
    (void)n;
}

void negstream__wake_drain(const negstream__wake *w)
{
    char buf[64];
    ssize_t n;

    if (w->r < 0)
        return;
    /* An eventfd gives its 8-byte count at once; a pipe may hold more
     * bytes than one read takes.  Non-blocking: stops when empty. */
    do
        n = read(w->r, buf, sizeof(buf));
    while (n > 0 || (n < 0 && errno == EINTR));
}

void negstream__wake_close(negstream__wake *w)
{
    if (w->r >= 0)
        close(w->r);
    if (w->w >= 0 && w->w != w->r)
        close(w->w);
    w->r = w->w = -1;
}
