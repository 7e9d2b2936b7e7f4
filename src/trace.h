/*
 * trace.h - NEGSTREAM_TRACE: "1" logs to stderr, any other non-empty value
 * is a file path appended to.  Handshake steps, frame sizes, flags and
 * errors; never key material, tokens or plaintext.
 */
#ifndef NEGSTREAM_TRACE_H
#define NEGSTREAM_TRACE_H

#include <stdbool.h>
#include "error.h"

/* True if tracing is on (reads the environment once). */
bool negstream__trace_enabled(void);

/* One line "negstream[pid.tid]: <text>\n", written atomically. */
void negstream__trace(const char *fmt, ...) NEGSTREAM__PRINTF(1, 2);

#define NEGSTREAM__TRACE(...) \
    do { if (negstream__trace_enabled()) negstream__trace(__VA_ARGS__); } \
    while (0)

#endif
