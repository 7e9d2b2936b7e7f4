/*
 * tcppair.h - a connected TCP pair on 127.0.0.1, for the tests (through
 * tu_tcp_pair, or directly where testutil.c is not linked) and the
 * benchmarks.  No Check here: each caller reports a failure its own way.
 */
#ifndef NEGSTREAM_TCPPAIR_H
#define NEGSTREAM_TCPPAIR_H

/* Connects fds[0] (the client end) to fds[1] (the server end, accepted)
 * over 127.0.0.1 on a port the kernel picks: both blocking, close-on-exec
 * and with TCP_NODELAY.  Returns 0, or -1 with errno set and *what naming
 * the call that failed; nothing is left open then. */
int tcp_pair_open(int fds[2], const char **what);

#endif
