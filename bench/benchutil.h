/*
 * benchutil.h - shared helpers of the benchmark programs (bench/): clocks,
 * median/min/max over runs, authenticated stream pairs against the test
 * realm, resource usage, and the table / JSON report.
 */
#ifndef NEGSTREAM_BENCHUTIL_H
#define NEGSTREAM_BENCHUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "negstream.h"

#define BU_MAX_RUNS 64

/* Monotonic time in nanoseconds / seconds. */
uint64_t bu_now_ns(void);
double   bu_now(void);

/* Prints the message (printf-style) to stderr and exits with status 1. */
void bu_die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
                                                 noreturn));

/* An unsigned integer from the environment (suffix K, M, G allowed), or
 * def if unset; a malformed value is fatal. */
size_t bu_env_size(const char *name, size_t def);

/* Runs per figure: $BENCH_RUNS, default 5, at most BU_MAX_RUNS. */
int bu_runs(void);

/* Median, min and max of n values. */
typedef struct bu_stat {
    double med, min, max;
} bu_stat;
bu_stat bu_stats(const double *v, int n);

/* The value at quantile q (0..1) of n values (sorts v in place). */
double bu_quantile(double *v, size_t n, double q);

/* A connected pair on loopback: TCP on 127.0.0.1 (TCP_NODELAY) if tcp,
 * else an AF_UNIX socketpair.  fds[0] client end, fds[1] server end. */
void bu_socket_pair(int fds[2], bool tcp);

/* Authenticates the pair (server side on a thread) at 'level' (None uses
 * the NTLM user, as .NET forces NTLM for None; else alice's ticket and
 * SPNEGO -> Kerberos).  Returns 0, or -1 with the reason on stderr. */
int bu_auth_fds(int fds[2], negstream_protection level, negstream **client,
                negstream **server);

/* bu_socket_pair + bu_auth_fds, fatal on failure. */
void bu_pair(negstream_protection level, bool tcp, int fds[2],
             negstream **client, negstream **server);

/*
 * n pairs authenticated at 'level' (as bu_auth_fds: EncryptAndSign via
 * SPNEGO -> Kerberos, None via NTLM) asynchronously on both sides at once,
 * 'batch' pairs at a time (0: all at once), every stream on pool (NULL:
 * the default pool).  client[i]/server[i] get the streams, fds[i] (may be
 * NULL) the fds; a client stream is made with leave_inner_open =
 * client_keep_fd, so that it can be closed after authentication leaving a
 * plain socket.  Fatal on any failure.
 */
void bu_bulk_pairs(size_t n, size_t batch, negstream_protection level,
                   bool tcp, bool client_keep_fd, negstream_pool *pool,
                   negstream **client, negstream **server, int (*fds)[2]);

/* Raises RLIMIT_NOFILE (the hard limit too, if allowed) to at least n fds;
 * fatal if that is not possible, naming 'what'. */
void bu_need_fds(size_t n, const char *what);

/* Threads of this process (from /proc/self/status), -1 if unknown. */
int bu_process_threads(void);

const char *bu_level_name(negstream_protection level);

/* Resource usage of the process: current and peak RSS (KiB), CPU time
 * (user + system, seconds), bytes in use by malloc. */
long   bu_rss_kib(void);
long   bu_peak_rss_kib(void);
double bu_cpu_seconds(void);
size_t bu_heap_bytes(void);

/* Reads exactly n bytes from fd (or fails fatally). */
void bu_read_exact(int fd, void *buf, size_t n);
/* Writes the whole vector (or fails fatally). */
void bu_writev_all(int fd, struct iovec *iov, int iovcnt);

/* ---- the report ---- */

/* Starts the report of one program ("throughput", ...). json: print JSON
 * instead of a table at bu_report_print. */
void bu_report_begin(const char *program, int argc, char **argv);
bool bu_report_json(void);

/* A figure: median, min, max over the runs. */
void bu_report_row(const char *group, const char *name, const char *unit,
                   bu_stat st);
/* A ratio of two figures measured in the same runs; target <= 0: none. */
void bu_report_ratio(const char *name, bu_stat st, double target,
                     const char *target_text);
/* A figure with an upper bound (target_text e.g. "target <= 5 ms"); the
 * verdict compares the median with max. */
void bu_report_max(const char *group, const char *name, const char *unit,
                   bu_stat st, double max, const char *target_text);
/* Free-form note printed under the table (and in the JSON). */
void bu_report_note(const char *fmt, ...) __attribute__((format(printf, 1,
                                                                2)));
void bu_report_print(void);

#endif
