/*
 * faultutil.h - helpers of the fault suites: authenticating a pair of
 * streams over given sockets (the proxy's), finding the LD_PRELOAD shim,
 * and looking for secrets in bytes.
 */
#ifndef NEGSTREAM_FAULTUTIL_H
#define NEGSTREAM_FAULTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include "negstream.h"
#include "testutil.h"

/* Authenticates a client stream on cfd (in this thread) against a server
 * stream on sfd (in a thread), both new, as tu_auth describes.  Returns
 * true when both sides succeeded.  The streams are returned either way;
 * their errors go to cerr/serr.  When the client fails, cfd is shut down
 * so that the server cannot wait for it forever. */
bool fu_auth_fds(const tu_auth *a, int cfd, int sfd, negstream **client,
                 negstream **server, negstream_error *cerr,
                 negstream_error *serr);

/* The same with the server's mechanism given (NULL: negotiate). */
bool fu_auth_fds_mech(const tu_auth *a, const char *server_mech, int cfd,
                      int sfd, negstream **client, negstream **server,
                      negstream_error *cerr, negstream_error *serr);

/* A status a clean failure of an I/O operation may carry. */
bool fu_clean_io_failure(const negstream_error *e);

/* A status a clean failure of an authentication may carry. */
bool fu_clean_auth_failure(const negstream_error *e);

/* True if needle (len n >= 1) occurs in hay. */
bool fu_contains(const void *hay, size_t hay_len, const void *needle,
                 size_t n);

/* Counts SIGPIPEs from now on (a handler, not the default action). */
void fu_count_sigpipe(void);
int fu_sigpipes(void);

#endif
