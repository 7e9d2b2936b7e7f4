/*
 * util.h - small helpers every internal file may use: the monotonic clock
 * of every deadline, deadline arithmetic, ARRAY_SIZE, wiping secrets.
 * Private.
 */
#ifndef NEGSTREAM_UTIL_H
#define NEGSTREAM_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define NEGSTREAM__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Milliseconds of CLOCK_MONOTONIC: setting the clock neither ends a
 * deadline early nor stretches it. */
static inline int64_t negstream__mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline timeout_ms from now; -1 (none) for a negative timeout. */
static inline int64_t negstream__deadline_in(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : negstream__mono_ms() + timeout_ms;
}

/* Milliseconds left until deadline for poll(): -1 for none, 0 if past. */
static inline int negstream__ms_left(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - negstream__mono_ms();
    if (left <= 0)
        return 0;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

#endif
