/*
 * error.h - filling negstream_error: status names, system and GSSAPI text.
 *
 * One setter family fills code, errno, GSS major/minor and the one-line
 * message, so that no call site formats an error on its own.  Every setter
 * accepts err == NULL.
 */
#ifndef NEGSTREAM_ERROR_H
#define NEGSTREAM_ERROR_H

#include <stdbool.h>
#include <stdint.h>
#include <gssapi/gssapi.h>
#include "negstream.h"

#define NEGSTREAM__PRINTF(f, a) __attribute__((format(printf, f, a)))

/* err->code = NEGSTREAM_OK, everything else cleared. */
void negstream__err_ok(negstream_error *err);

/* code + formatted message; errno and GSS fields cleared. */
void negstream__err_set(negstream_error *err, negstream_status code,
                        const char *fmt, ...) NEGSTREAM__PRINTF(3, 4);

/* code + formatted message + ": strerror(errnum)"; sys_errno = errnum. */
void negstream__err_sys(negstream_error *err, negstream_status code,
                        int errnum, const char *fmt, ...)
                        NEGSTREAM__PRINTF(4, 5);

/* A GSSAPI failure: 'what' names the call or the step ("gss_wrap",
 * "accepting the client's token").  The message is
 * "<what>: <major text>: <minor text>" from gss_display_status, plus a hint
 * where the cause is known (missing keytab entry, no credentials, ...). */
void negstream__err_gss(negstream_error *err, negstream_status code,
                        const char *what, OM_uint32 major, OM_uint32 minor);

/* The same without the hints, for a call whose failures they would
 * misread (storing into a ccache is no lack of tickets). */
void negstream__err_gss_nohint(negstream_error *err, negstream_status code,
                               const char *what, OM_uint32 major,
                               OM_uint32 minor);

/* True when the text the mechanism gives for a minor status is
 * strerror(errnum): how a mechanism that reports errno values (gss-ntlmssp)
 * is understood, since MIT's mechglue renumbers minor codes per process.
 * mech is passed to gss_display_status (MIT finds the mechanism itself). */
bool negstream__gss_minor_is_errno(OM_uint32 minor, gss_const_OID mech,
                                   int errnum);

/* Copies src into dst (dst may be NULL). */
void negstream__err_copy(negstream_error *dst, const negstream_error *src);

/* Prefixes the message of err with "prefix: " (truncating at 255 chars). */
void negstream__err_prefix(negstream_error *err, const char *prefix);

#endif
