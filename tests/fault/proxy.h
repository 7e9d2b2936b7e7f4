/*
 * proxy.h - a loopback TCP proxy that sits between a client stream and a
 * server stream and misbehaves on request: closes or resets the
 * connection after byte N, delivers one byte at a time, and, once told
 * that data frames flow, flips bits in, drops, replays, swaps, truncates
 * or relabels (length prefix) a chosen frame.  It also records every byte
 * it relays, for tests that look at the wire.
 *
 * One thread relays both directions with non-blocking sockets and poll,
 * so a peer that does not read never blocks the other direction.  Start
 * and stop it inside a test (Check forks each test; threads must not be
 * started in an unchecked fixture).
 */
#ifndef NEGSTREAM_FAULT_PROXY_H
#define NEGSTREAM_FAULT_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fp_proxy fp_proxy;

/* Directions. */
#define FP_C2S 0                /* client -> server */
#define FP_S2C 1                /* server -> client */

/* How a connection is cut. */
#define FP_FIN 1                /* close(): the peers see EOF */
#define FP_RST 2                /* SO_LINGER 0 + close(): a reset */

/* Frame faults, applied to data frame number 'frame' (0 = the first
 * frame after fp_frames_start) of a direction. */
#define FP_FLIP   1             /* token byte a ^= b (a past the end: the
                                   last byte) */
#define FP_DROP   2             /* the frame never arrives */
#define FP_REPLAY 3             /* the frame arrives twice */
#define FP_SWAP   4             /* the frame arrives after the next one */
#define FP_SETLEN 5             /* length prefix replaced by a */
#define FP_CUT    6             /* a bytes of the frame (prefix included)
                                   arrive, then the connection is cut as
                                   b says (FP_FIN or FP_RST) */

/* Starts the proxy: *cfd is a connected socket for the client's stream,
 * *sfd one for the server's.  Aborts the test on failure. */
fp_proxy *fp_start(int *cfd, int *sfd);

/* Cuts the connection (both sides) once 'byte' bytes of direction dir
 * have been delivered. */
void fp_cut_at(fp_proxy *p, int dir, uint64_t byte, int how);

/* One byte at a time: each byte of dir is sent only once the receiving
 * stream has read the previous one, so every recv it makes returns 1. */
void fp_one_byte(fp_proxy *p, int dir, bool on);

/* From now on, dir carries [MS-NNS] data frames (call it once both sides
 * are authenticated and before any data is written); they are numbered
 * from 0. */
void fp_frames_start(fp_proxy *p, int dir);

/* Adds a frame fault (FP_FLIP ... FP_CUT) for frame 'frame' of dir. */
void fp_frame_rule(fp_proxy *p, int dir, int op, unsigned frame,
                   uint32_t a, uint32_t b);

/* Bytes of dir read from its source so far. */
uint64_t fp_count(fp_proxy *p, int dir);

/* A malloc'ed copy of every byte read from dir's source (before any
 * fault); *len gets its size.  Free it with free(). */
uint8_t *fp_capture(fp_proxy *p, int dir, size_t *len);

/* Stops the thread and closes the proxy's sockets (not the streams'). */
void fp_stop(fp_proxy *p);

#endif
