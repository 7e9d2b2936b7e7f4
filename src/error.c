/*
 * error.c - filling negstream_error: status names, system and GSSAPI
 * text, and the hints that turn a GSSAPI failure into something a
 * sysadmin can act on.
 *
 * Every setter accepts err == NULL and leaves errno as it found it, so a
 * call site may record an error and still look at errno afterwards.
 * Messages never hold key material, tokens or passwords: only names of
 * calls, file descriptors, sizes and the library's own status texts; and
 * never a control character (replaced by '?': GSSAPI's texts may quote
 * names from the peer).
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <krb5.h>

#include "error.h"
#include "scrub.h"

#define MSG_SIZE sizeof(((negstream_error *)0)->message)

/* gss_display_status may hand out several lines per code; more than this
 * many is a broken mechanism looping, not information. */
#define MAX_STATUS_LINES 8

#define STR_(x) #x
#define STR(x) STR_(x)

NEGSTREAM_API const char *negstream_status_name(negstream_status code)
{
    switch (code) {
    case NEGSTREAM_OK:                  return "NEGSTREAM_OK";
    case NEGSTREAM_E_ARGUMENT_NULL:     return "NEGSTREAM_E_ARGUMENT_NULL";
    case NEGSTREAM_E_ARGUMENT_RANGE:    return "NEGSTREAM_E_ARGUMENT_RANGE";
    case NEGSTREAM_E_ARGUMENT:          return "NEGSTREAM_E_ARGUMENT";
    case NEGSTREAM_E_INVALID_OPERATION:
        return "NEGSTREAM_E_INVALID_OPERATION";
    case NEGSTREAM_E_NOT_SUPPORTED:     return "NEGSTREAM_E_NOT_SUPPORTED";
    case NEGSTREAM_E_DISPOSED:          return "NEGSTREAM_E_DISPOSED";
    case NEGSTREAM_E_IO:                return "NEGSTREAM_E_IO";
    case NEGSTREAM_E_AUTHENTICATION:    return "NEGSTREAM_E_AUTHENTICATION";
    case NEGSTREAM_E_INVALID_CREDENTIAL:
        return "NEGSTREAM_E_INVALID_CREDENTIAL";
    case NEGSTREAM_E_TIMEOUT:           return "NEGSTREAM_E_TIMEOUT";
    case NEGSTREAM_E_CANCELED:          return "NEGSTREAM_E_CANCELED";
    case NEGSTREAM_E_NOMEM:             return "NEGSTREAM_E_NOMEM";
    }
    /* Not a default label: -Wswitch then names any code added later. */
    return "NEGSTREAM_E_UNKNOWN";
}

/* Built from the header's macros so that the two cannot disagree. */
NEGSTREAM_API const char *negstream_version(void)
{
    return STR(NEGSTREAM_VERSION_MAJOR) "." STR(NEGSTREAM_VERSION_MINOR)
           "." STR(NEGSTREAM_VERSION_PATCH);
}

/* ---- small string helpers ---------------------------------------------- */

/* Appends src to the NUL-terminated dst of size cap, truncating. */
static void append(char *dst, size_t cap, const char *src)
{
    size_t len = strlen(dst);

    if (len + 1 >= cap)
        return;
    snprintf(dst + len, cap - len, "%s", src);
}

/* Appends at most n bytes of src (which need not be NUL-terminated). */
static void append_n(char *dst, size_t cap, const char *src, size_t n)
{
    size_t len = strlen(dst);
    size_t room;

    if (len + 1 >= cap)
        return;
    room = cap - len - 1;
    if (n > room)
        n = room;
    memcpy(dst + len, src, n);
    dst[len + n] = '\0';
}

/*
 * strerror_r comes in two shapes: GNU (returns a pointer, maybe to a
 * static string) and XSI (fills buf, returns int).  _GNU_SOURCE selects
 * the GNU one on glibc; musl and the BSDs only have the XSI one.
 */
static const char *sys_text(int errnum, char *buf, size_t cap)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(errnum, buf, cap);
#else
    if (strerror_r(errnum, buf, cap) != 0)
        snprintf(buf, cap, "error %d", errnum);
    return buf;
#endif
}

static void fill(negstream_error *err, negstream_status code, int errnum,
                 OM_uint32 major, OM_uint32 minor)
{
    err->code = code;
    err->sys_errno = errnum;
    err->gss_major = major;
    err->gss_minor = minor;
}

/* One line a terminal shows as it is: GSSAPI's texts may quote names
 * from the peer's tokens, so every message leaves here with its control
 * characters replaced by '?' (scrub.c). */
static void scrub_message(negstream_error *err)
{
    negstream__scrub(err->message, strnlen(err->message, MSG_SIZE));
}

/* ---- the setters ----------------------------------------------------- */

void negstream__err_ok(negstream_error *err)
{
    if (err == NULL)
        return;
    fill(err, NEGSTREAM_OK, 0, 0, 0);
    err->message[0] = '\0';
}

void negstream__err_set(negstream_error *err, negstream_status code,
                        const char *fmt, ...)
{
    int saved_errno = errno;
    va_list ap;

    if (err == NULL)
        return;
    fill(err, code, 0, 0, 0);
    /* vsnprintf truncates at 255 characters and always terminates. */
    va_start(ap, fmt);
    vsnprintf(err->message, MSG_SIZE, fmt, ap);
    va_end(ap);
    scrub_message(err);
    errno = saved_errno;
}

void negstream__err_sys(negstream_error *err, negstream_status code,
                        int errnum, const char *fmt, ...)
{
    int saved_errno = errno;
    char text[128];
    va_list ap;

    if (err == NULL)
        return;
    fill(err, code, errnum, 0, 0);
    va_start(ap, fmt);
    vsnprintf(err->message, MSG_SIZE, fmt, ap);
    va_end(ap);
    append(err->message, MSG_SIZE, ": ");
    append(err->message, MSG_SIZE, sys_text(errnum, text, sizeof(text)));
    scrub_message(err);
    errno = saved_errno;
}

/*
 * Appends every line gss_display_status has for one code, separated by
 * "; ".  The context starts at 0 and the loop runs while the library
 * says there is more (dotnet/corefx#34883 started it uninitialised and
 * printed garbage).  Returns false if the library could not say anything.
 */
static bool append_status(char *dst, size_t cap, OM_uint32 code, int type)
{
    OM_uint32 msg_ctx = 0;
    bool any = false;
    int lines = 0;

    do {
        OM_uint32 major, minor;
        gss_buffer_desc buf = GSS_C_EMPTY_BUFFER;

        major = gss_display_status(&minor, code, type, GSS_C_NO_OID,
                                   &msg_ctx, &buf);
        if (GSS_ERROR(major))
            break;
        if (buf.length > 0) {
            if (any)
                append(dst, cap, "; ");
            append_n(dst, cap, buf.value, buf.length);
            any = true;
        }
        gss_release_buffer(&minor, &buf);
    } while (msg_ctx != 0 && ++lines < MAX_STATUS_LINES);
    return any;
}

#define HINT_NO_SERVICE "(service principal not found in Kerberos: is the " \
                        "target name registered in the KDC?)"
#define HINT_NO_USER "(user principal not found in Kerberos: check the " \
                     "user name and realm)"

/*
 * Known causes, matched on the routine error and on the mechanism's text
 * (MIT's minor codes are com_err codes from several tables, and its
 * extended messages, e.g. "No key table entry found for host/x@R", say
 * more than the codes do).  First match wins.
 */
static const struct {
    const char *needle;     /* in the minor text, case-insensitive */
    const char *hint;
} text_hints[] = {
    { "No key table entry found",
      "(is the service principal in the keytab? see KRB5_KTNAME)" },
    { "Key table entry not found",
      "(is the service principal in the keytab? see KRB5_KTNAME)" },
    { "Key table file",
      "(no such keytab, or not readable: see KRB5_KTNAME)" },
    { "Server not found in Kerberos database", HINT_NO_SERVICE },
    { "Client not found in Kerberos database", HINT_NO_USER },
    { "Preauthentication failed", "(wrong password?)" },
    { "Password incorrect", "(wrong password?)" },
    { "Decrypt integrity check failed",
      "(wrong password, or a keytab key that no longer matches the "
      "KDC?)" },
    { "Clock skew too great",
      "(are the clocks of client, server and KDC in sync?)" },
    { "Cannot find KDC", "(is the realm's KDC listed in KRB5_CONFIG?)" },
    { "Cannot contact any KDC", "(is the KDC running and reachable?)" },
    { "No credentials cache found",
      "(no Kerberos ticket: run kinit or set KRB5CCNAME)" },
    { "No Kerberos credentials available",
      "(no Kerberos ticket: run kinit or set KRB5CCNAME)" },
    { "get-principal lstat(",            /* Heimdal: no ccache file */
      "(no Kerberos ticket: run kinit or set KRB5CCNAME)" },
    { "Ticket expired", "(Kerberos ticket expired: run kinit again)" },
};

/*
 * The same causes by krb5 error code, for when the text says little:
 * Heimdal shows the KDC's e-text ("LOOKING_UP_SERVER", "PREAUTH_FAILED")
 * or nothing.  MIT and Heimdal share the krb5 com_err table, so the codes
 * agree; gss-ntlmssp's minor codes are from another table.
 */
static const struct {
    krb5_error_code code;
    const char *hint;
} code_hints[] = {
    { KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN, HINT_NO_SERVICE },
    { KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN, HINT_NO_USER },
    { KRB5KDC_ERR_PREAUTH_FAILED, "(wrong password?)" },
    { KRB5KRB_AP_ERR_BAD_INTEGRITY,
      "(wrong password, or a keytab key that no longer matches the "
      "KDC?)" },
    { KRB5KRB_AP_ERR_SKEW,
      "(are the clocks of client, server and KDC in sync?)" },
    { KRB5_REALM_UNKNOWN, "(is the realm's KDC listed in KRB5_CONFIG?)" },
    { KRB5_KDC_UNREACH, "(is the KDC running and reachable?)" },
    { KRB5_FCC_NOFILE, "(no Kerberos ticket: run kinit or set KRB5CCNAME)" },
    { KRB5_CC_NOTFOUND,
      "(no valid Kerberos ticket, missing or expired: run kinit)" },
    { KRB5KRB_AP_ERR_TKT_EXPIRED,
      "(Kerberos ticket expired: run kinit again)" },
    { KRB5_KT_NOTFOUND,
      "(is the service principal in the keytab? see KRB5_KTNAME)" },
};

static const char *find_hint(OM_uint32 major, OM_uint32 minor,
                             const char *minor_text)
{
    size_t i;

    for (i = 0; i < sizeof(text_hints) / sizeof(text_hints[0]); i++)
        if (strcasestr(minor_text, text_hints[i].needle) != NULL)
            return text_hints[i].hint;
    for (i = 0; minor != 0 && i < sizeof(code_hints) / sizeof(code_hints[0]);
         i++)
        if ((krb5_error_code)minor == code_hints[i].code)
            return code_hints[i].hint;
    switch (GSS_ROUTINE_ERROR(major)) {
    case GSS_S_BAD_MECH:
#if HAVE_NTLM_MECHGLUE_PLUGIN
        return "(is gss-ntlmssp installed?)";
#else
        /* Heimdal's SPNEGO when krb5, its one mechanism here, failed,
         * or a peer that spoke NTLM */
        return "(a Heimdal build speaks Kerberos only: is there a ticket, "
               "is the target name in the KDC, did the peer use NTLM?)";
#endif
    case GSS_S_NO_CRED:
        return "(no usable credentials: run kinit, or check the keytab "
               "and KRB5_KTNAME)";
    case GSS_S_BAD_NAME:
    case GSS_S_BAD_NAMETYPE:
        return "(use \"service/host\", \"service@host\" or "
               "\"name@REALM\")";
    case GSS_S_CREDENTIALS_EXPIRED:
        return "(credentials expired: run kinit again)";
    default:
        return NULL;
    }
}

bool negstream__gss_minor_is_errno(OM_uint32 minor, gss_const_OID mech,
                                   int errnum)
{
    int saved_errno = errno;
    char text[MSG_SIZE] = "", sys[128];
    OM_uint32 msg_ctx = 0, major, tmp;
    gss_buffer_desc buf = GSS_C_EMPTY_BUFFER;
    bool same = false;

    if (minor == 0)
        goto out;
    major = gss_display_status(&tmp, minor, GSS_C_MECH_CODE,
                               (gss_OID)mech, &msg_ctx, &buf);
    if (GSS_ERROR(major))
        goto out;
    append_n(text, sizeof(text), buf.value, buf.length);
    gss_release_buffer(&tmp, &buf);
    /* one line only: a second one would be something else */
    same = msg_ctx == 0 &&
           strcmp(text, sys_text(errnum, sys, sizeof(sys))) == 0;
out:
    errno = saved_errno;
    return same;
}

static void err_gss(negstream_error *err, negstream_status code,
                    const char *what, OM_uint32 major, OM_uint32 minor,
                    bool hints)
{
    int saved_errno = errno;
    char major_text[MSG_SIZE] = "";
    char minor_text[MSG_SIZE] = "";
    const char *hint;
    size_t room;

    if (err == NULL)
        return;
    fill(err, code, 0, major, minor);
    if (!append_status(major_text, sizeof(major_text), major,
                       GSS_C_GSS_CODE))
        snprintf(major_text, sizeof(major_text), "GSS major status 0x%08x",
                 (unsigned)major);
    if (minor != 0 && !append_status(minor_text, sizeof(minor_text), minor,
                                     GSS_C_MECH_CODE))
        snprintf(minor_text, sizeof(minor_text), "minor status %u",
                 (unsigned)minor);
    /* The mechglue maps a mechanism's minor 0 to a code of its own, which
     * then reads "Success" after a failure (krb5's GSS_S_BAD_BINDINGS). */
    if (strcmp(minor_text, "Success") == 0)
        minor_text[0] = '\0';
    hint = hints ? find_hint(major, minor, minor_text) : NULL;

    /* Keep the hint whole: the texts before it give way if needed. */
    room = MSG_SIZE;
    if (hint != NULL && strlen(hint) + 2 < room)
        room -= strlen(hint) + 1;
    err->message[0] = '\0';
    append(err->message, room, what != NULL ? what : "GSSAPI");
    append(err->message, room, ": ");
    append(err->message, room, major_text);
    if (minor_text[0] != '\0') {
        append(err->message, room, ": ");
        append(err->message, room, minor_text);
    }
    if (hint != NULL) {
        append(err->message, MSG_SIZE, " ");
        append(err->message, MSG_SIZE, hint);
    }
    scrub_message(err);
    errno = saved_errno;
}

void negstream__err_gss(negstream_error *err, negstream_status code,
                        const char *what, OM_uint32 major, OM_uint32 minor)
{
    err_gss(err, code, what, major, minor, true);
}

void negstream__err_gss_nohint(negstream_error *err, negstream_status code,
                               const char *what, OM_uint32 major,
                               OM_uint32 minor)
{
    err_gss(err, code, what, major, minor, false);
}

void negstream__err_copy(negstream_error *dst, const negstream_error *src)
{
    if (dst == NULL || dst == src)
        return;
    if (src == NULL) {
        negstream__err_ok(dst);
        return;
    }
    *dst = *src;
    dst->message[MSG_SIZE - 1] = '\0';
}

void negstream__err_prefix(negstream_error *err, const char *prefix)
{
    char old[MSG_SIZE];

    if (err == NULL || prefix == NULL)
        return;
    memcpy(old, err->message, MSG_SIZE);
    old[MSG_SIZE - 1] = '\0';
    err->message[0] = '\0';
    append(err->message, MSG_SIZE, prefix);
    if (old[0] != '\0') {
        append(err->message, MSG_SIZE, ": ");
        append(err->message, MSG_SIZE, old);
    }
    scrub_message(err);
}
