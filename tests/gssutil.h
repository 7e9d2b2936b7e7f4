/*
 * gssutil.h - shared helpers of the check_gss_* suites: one side of a
 * handshake (our GSSAPI glue, src/gss.c, and the [MS-NNS] handshake,
 * src/handshake.c) run on its own thread over a socketpair or 127.0.0.1
 * TCP, what both sides must have agreed on, and wrap/unwrap round trips
 * and attacks on the tokens of an established pair.  Run under
 * tests/kdc/with-realm.
 */
#ifndef NEGSTREAM_GSSUTIL_H
#define NEGSTREAM_GSSUTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gss.h"
#include "transport.h"

/* One side of a handshake, run on its own thread. */
typedef struct gu_side {
    bool                     server;
    negstream_client_options co;
    negstream_server_options so;
    negstream__gss           g;
    negstream__transport     t;
    int                      fd;
    int                      timeout_ms;  /* -1: none */
    int                      init_rc, rc; /* -2 until set */
    negstream_error          err;
    pthread_t                thread;
} gu_side;

/* A client of $NEGTEST_SPN at protection p with the default credentials
 * (alice's ticket) and mechanism; the same with NTLM and the realm's NTLM
 * user, domain and password; a server at protection p with the default
 * keytab. */
void gu_client_default(gu_side *c, negstream_protection p);
void gu_client_ntlm(gu_side *c, negstream_protection p);
void gu_server_default(gu_side *s, negstream_protection p);

/* gu_client_default with mechanism mech, and gu_server_default. */
void gu_krb_sides(gu_side *c, gu_side *s, const char *mech,
                  negstream_protection p);

/* Start the side's thread on s->fd (init, then handshake; a side whose
 * init fails shuts its socket down), join it, and release everything. */
void gu_side_start(gu_side *s);
void gu_side_join(gu_side *s);
void gu_side_done(gu_side *s);

/* A connected pair: 127.0.0.1 TCP, or a socketpair. */
void gu_make_pair(int fds[2], bool tcp);

/* Runs client c against server s; both threads joined on return. */
void gu_run_pair(gu_side *c, gu_side *s, bool tcp);

/* Both sides authenticated, complete, and released their credentials. */
void gu_expect_ok(const gu_side *c, const gu_side *s);

/* x failed with code, and its message holds needle (unless NULL). */
void gu_expect_code(const gu_side *x, negstream_status code,
                    const char *needle);

/* Deterministic bytes for (seed, position). */
void gu_fill(uint8_t *p, size_t n, unsigned seed);

/* Wraps n bytes on a, unwraps them on b, compares.  Returns the token
 * length. */
size_t gu_roundtrip(negstream__gss *a, negstream__gss *b, size_t n,
                    unsigned seed);

/* Round trips of 0, 1, 1000 and 64512 bytes both ways (an empty message
 * under NTLM: a clean error instead). */
void gu_roundtrips(gu_side *c, gu_side *s);

/* A token of n (at most 256) bytes from a, malloc'd, its length in
 * *len. */
uint8_t *gu_wrap_one(negstream__gss *a, size_t n, unsigned seed,
                     size_t *len);

/* Unwrapping (a copy of) tok on b gives n bytes; fails with IO. */
void gu_unwrap_ok(negstream__gss *b, const uint8_t *tok, size_t len,
                  size_t n);
void gu_unwrap_fails(negstream__gss *b, const uint8_t *tok, size_t len);

/* A tampered token (client to server) and a replayed one (server to
 * client) are refused; one attack per direction.  gu_reorder: the second
 * of two tokens first is refused (on a fresh pair). */
void gu_attacks(gu_side *c, gu_side *s);
void gu_reorder(gu_side *c, gu_side *s);

/* No Kerberos credentials by default in this (forked) test: no ccache
 * and no client keytab. */
void gu_no_ccache(void);

#endif
