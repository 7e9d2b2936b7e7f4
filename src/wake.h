/*
 * wake.h - a file descriptor one thread can make readable to wake another
 * blocked in poll(): an eventfd, or a pipe where there is none.  It stays
 * readable once signalled (nobody reads it).  Private; knows only the OS.
 */
#ifndef NEGSTREAM_WAKE_H
#define NEGSTREAM_WAKE_H

typedef struct negstream__wake {
    int r, w;           /* -1 until made; equal for an eventfd */
} negstream__wake;

#define NEGSTREAM__WAKE_INIT { -1, -1 }

/* 1 if an eventfd is used, 0 for a pipe (NEGSTREAM_WAKE_FORCE_PIPE makes
 * a pipe where there is an eventfd, to test the fallback). */
#if defined(HAVE_EVENTFD) && !defined(NEGSTREAM_WAKE_FORCE_PIPE)
# define NEGSTREAM__WAKE_EVENTFD 1
#else
# define NEGSTREAM__WAKE_EVENTFD 0
#endif

/* Makes the pair (close-on-exec, non-blocking).  0, or -1 with errno. */
int  negstream__wake_open(negstream__wake *w);
/* Makes w->r readable.  Safe from any thread, any number of times. */
void negstream__wake_signal(const negstream__wake *w);
/* Empties w->r (for a reader that waits on it again). */
void negstream__wake_drain(const negstream__wake *w);
/* Closes the pair (if made). */
void negstream__wake_close(negstream__wake *w);

#endif
