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

/* Makes the pair (close-on-exec, non-blocking).  0, or -1 with errno. */
int  negstream__wake_open(negstream__wake *w);
/* Makes w->r readable.  Safe from any thread, any number of times. */
void negstream__wake_signal(const negstream__wake *w);
/* Closes the pair (if made). */
void negstream__wake_close(negstream__wake *w);

#endif
