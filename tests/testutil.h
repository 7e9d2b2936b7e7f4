/*
 * testutil.h - shared helpers of the stream test suites: connected pairs
 * on 127.0.0.1, authenticated stream pairs against the test realm,
 * deterministic data, FNV-1a hashes and reader threads.
 */
#ifndef NEGSTREAM_TESTUTIL_H
#define NEGSTREAM_TESTUTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "negstream.h"

/* A connected TCP pair on 127.0.0.1 (tcp_pair_open, tcppair.h): fds[0]
 * the client end, fds[1] the server end.  Aborts the test on failure. */
void tu_tcp_pair(int fds[2]);

/* The raw fds of the last pair made by tu_auth_pair: [0] client end,
 * [1] server end, for tests that read or inject bytes on the wire. */
extern __thread int tu_fds[2];

/* An environment variable set by tests/kdc/with-realm (aborts if unset). */
const char *tu_env(const char *name);

/* How a test pair authenticates. */
typedef struct tu_auth {
    negstream_protection client_level, server_level;
    const char *client_mech;        /* NULL: negotiate */
    const char *target;             /* NULL: $NEGTEST_SPN */
    bool ntlm_creds;                /* client uses the NTLM user/password */
    bool password_creds;            /* client uses alice's password */
} tu_auth;

/* Defaults: EncryptAndSign both sides, SPNEGO, default credentials. */
void tu_auth_init(tu_auth *a, negstream_protection level);

/* The client options a describes (target, mechanism, credentials; the
 * strings point into the environment or into a). */
void tu_client_options(const tu_auth *a, negstream_client_options *co);

/* Authenticates streams made on cfd (client) and sfd (server, on a
 * thread) with the given options.  Returns true when both sides
 * succeeded; errors, streams and failure handling as tu_auth_pair. */
bool tu_auth_fds(int cfd, int sfd, bool leave_open,
                 const negstream_client_options *co,
                 const negstream_server_options *so, negstream **client,
                 negstream **server, negstream_error *cerr,
                 negstream_error *serr);

/* Authenticates a fresh TCP pair (server on a thread).  Returns true when
 * both sides succeeded; the errors of each side are stored in cerr/serr
 * (may be NULL).  On failure the streams are still returned (so tests can
 * inspect them) unless NULL. */
bool tu_auth_pair(const tu_auth *a, negstream **client, negstream **server,
                  negstream_error *cerr, negstream_error *serr);

/* Shorthand: an authenticated pair at 'level' (NONE uses NTLM), aborting
 * the test if authentication fails. */
void tu_pair(negstream_protection level, negstream **client,
             negstream **server);

/* NTLM (mechanism "ntlm", protection None, SPNEGO falling back to NTLM)
 * needs MIT krb5 with gss-ntlmssp: a Heimdal build refuses it.  A test
 * that needs NTLM when 'cond' holds starts with TU_NEEDS_NTLM(cond);
 * under Heimdal that prints a SKIP line saying why and ends the test
 * (Check has no skip status: it counts as passed). */
#define TU_NEEDS_NTLM(cond) \
    do { \
        if (tu_skip_without_ntlm(__func__, _i, (cond))) \
            return; \
    } while (0)
bool tu_skip_without_ntlm(const char *test, int iteration, bool cond);

/* The same for another reason ('why', one line) under Heimdal. */
bool tu_skip_under_heimdal(const char *test, int iteration, bool cond,
                           const char *why);

/* Deterministic bytes for (seed, position). */
void tu_fill(uint8_t *buf, size_t n, uint32_t seed);

#define TU_FNV_INIT 0xcbf29ce484222325ULL
uint64_t tu_fnv(uint64_t h, const void *p, size_t n);

/* A thread that reads a stream until EOF (or 'limit' bytes if limit > 0),
 * hashing what it gets, with reads of at most 'chunk' bytes. */
typedef struct tu_reader {
    pthread_t       thread;
    negstream      *s;
    size_t          chunk, limit;
    size_t          got;
    uint64_t        hash;
    negstream_error err;
    int             rc;            /* 0, or -1 when a read failed */
} tu_reader;

void tu_reader_start(tu_reader *r, negstream *s, size_t chunk, size_t limit);
void tu_reader_join(tu_reader *r);

/* A chain of negstream_begin_read calls, each issued from the previous
 * one's callback on a worker, hashing what it gets, until 'want' bytes
 * have arrived ('over' 1) or a read failed or met the end ('over' -1, the
 * error in 'e').  tu_chain_wait waits up to 'ms' milliseconds, then
 * asserts that the chain completed and that it got exactly data[0..want). */
typedef struct tu_chain {
    negstream      *s;
    uint8_t         buf[8192];
    size_t          chunk;          /* each read's size, <= sizeof buf */
    size_t          want, got;
    uint64_t        hash;
    atomic_int      over;
    negstream_error e;
} tu_chain;

void tu_chain_start(tu_chain *x, negstream *s, size_t chunk, size_t want);
void tu_chain_wait(tu_chain *x, const uint8_t *data, int ms);

/* A thread blocked in a 0-byte negstream_read on s: start it, ask whether
 * it has returned, join it (returns what the read returned). */
typedef struct tu_zero_read {
    pthread_t  thread;
    negstream *s;
    int        done;               /* set atomically when the read returned */
    ssize_t    n;
} tu_zero_read;

void tu_zero_read_start(tu_zero_read *z, negstream *s);
bool tu_zero_read_done(tu_zero_read *z);
ssize_t tu_zero_read_join(tu_zero_read *z);

/* Writes n deterministic bytes (seed) from one stream, then a one-byte
 * sentinel, and checks by hash that a reader thread on the other got
 * exactly those n + 1 bytes (a 0-byte write adds nothing in between). */
void tu_transfer(negstream *from, negstream *to, size_t n, uint32_t seed);

/* Reads exactly n bytes (looping), aborting the test on failure/EOF. */
void tu_read_all(negstream *s, void *buf, size_t n);

/* Writes all of buf, aborting on failure. */
void tu_write_all(negstream *s, const void *buf, size_t n);

/* True once thread tid (a gettid() value of this process) sleeps in one
 * of the system calls a blocked read or write makes, as /proc tells: a
 * test may then close the stream under it. */
bool tu_blocked_in_io(long tid);

#endif
