/*
 * check_frame.c - the pure modules: [MS-NNS] encoding and decoding
 * (frame.c), status names and the error setters (error.c), and the
 * NEGSTREAM_TRACE output (trace.c).  No KDC, no network.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <gssapi/gssapi.h>
#ifdef HAVE_GSSAPI_GSSAPI_EXT_H      /* MIT; Heimdal: all in gssapi.h */
# include <gssapi/gssapi_ext.h>
#endif
#include <gssapi/gssapi_krb5.h>

#if defined(__has_feature)
# if __has_feature(address_sanitizer)
#  define NEGTEST_ASAN 1
# endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(NEGTEST_ASAN)
# include <sanitizer/lsan_interface.h>
# define LSAN_DISABLE() __lsan_disable()
# define LSAN_ENABLE() __lsan_enable()
#else
# define LSAN_DISABLE() ((void)0)
# define LSAN_ENABLE() ((void)0)
#endif

#include "error.h"
#include "frame.h"
#include "options.h"
#include "trace.h"

/* ---- handshake header --------------------------------------------------- */

static const uint8_t hs_ids[] = {
    NEGSTREAM__HS_DONE, NEGSTREAM__HS_ERROR, NEGSTREAM__HS_IN_PROGRESS
};
static const uint16_t hs_sizes[] = { 0, 1, 255, 256, 65535 };

START_TEST(hs_header_round_trip)
{
    size_t i, j;

    for (i = 0; i < sizeof(hs_ids); i++) {
        for (j = 0; j < sizeof(hs_sizes) / sizeof(hs_sizes[0]); j++) {
            uint8_t buf[NEGSTREAM__HS_HEADER_SIZE];
            negstream__hs_header h;

            memset(&h, 0xAA, sizeof(h));
            negstream__hs_header_encode(buf, hs_ids[i], hs_sizes[j]);
            ck_assert_int_eq(buf[0], hs_ids[i]);
            ck_assert_int_eq(buf[1], 1);
            ck_assert_int_eq(buf[2], 0);
            ck_assert_int_eq(buf[3], hs_sizes[j] >> 8);      /* BE */
            ck_assert_int_eq(buf[4], hs_sizes[j] & 0xFF);
            ck_assert_int_eq(negstream__hs_header_decode(buf, &h),
                             NEGSTREAM__FRAME_OK);
            ck_assert_int_eq(h.id, hs_ids[i]);
            ck_assert_int_eq(h.major, 1);
            ck_assert_int_eq(h.minor, 0);
            ck_assert_uint_eq(h.size, hs_sizes[j]);
        }
    }
}
END_TEST

START_TEST(hs_header_wire_bytes)
{
    /* negstream(7), WIRE FORMAT: id, major 1, minor 0, big-endian size. */
    static const uint8_t in_progress_258[] = { 0x16, 0x01, 0x00, 0x01, 0x02 };
    static const uint8_t done_0[] = { 0x14, 0x01, 0x00, 0x00, 0x00 };
    static const uint8_t error_8[] = { 0x15, 0x01, 0x00, 0x00, 0x08 };
    static const uint8_t max[] = { 0x16, 0x01, 0x00, 0xFF, 0xFF };
    uint8_t buf[NEGSTREAM__HS_HEADER_SIZE];

    negstream__hs_header_encode(buf, NEGSTREAM__HS_IN_PROGRESS, 258);
    ck_assert_mem_eq(buf, in_progress_258, sizeof(buf));
    negstream__hs_header_encode(buf, NEGSTREAM__HS_DONE, 0);
    ck_assert_mem_eq(buf, done_0, sizeof(buf));
    negstream__hs_header_encode(buf, NEGSTREAM__HS_ERROR,
                                NEGSTREAM__HS_ERROR_SIZE);
    ck_assert_mem_eq(buf, error_8, sizeof(buf));
    negstream__hs_header_encode(buf, NEGSTREAM__HS_IN_PROGRESS,
                                NEGSTREAM__HS_MAX_PAYLOAD);
    ck_assert_mem_eq(buf, max, sizeof(buf));
}
END_TEST

START_TEST(hs_header_unknown_ids)
{
    static const uint8_t bad[] = { 0x00, 0x13, 0x17, 0xFF };
    size_t i;
    unsigned id;

    for (i = 0; i < sizeof(bad); i++) {
        uint8_t buf[] = { bad[i], 1, 0, 0x12, 0x34 };
        negstream__hs_header h;

        ck_assert_int_eq(negstream__hs_header_decode(buf, &h),
                         NEGSTREAM__FRAME_BAD_ID);
        /* h is still filled, for the error message. */
        ck_assert_int_eq(h.id, bad[i]);
        ck_assert_uint_eq(h.size, 0x1234);
    }
    /* Exactly three ids are accepted. */
    for (id = 0; id <= 0xFF; id++) {
        uint8_t buf[] = { (uint8_t)id, 1, 0, 0, 0 };
        negstream__hs_header h;
        bool known = id == 0x14 || id == 0x15 || id == 0x16;

        ck_assert_int_eq(negstream__hs_header_decode(buf, &h),
                         known ? NEGSTREAM__FRAME_OK :
                                 NEGSTREAM__FRAME_BAD_ID);
    }
}
END_TEST

START_TEST(hs_header_version_ignored)
{
    static const uint8_t versions[][2] = {
        { 0, 0 }, { 1, 1 }, { 2, 0 }, { 0xFF, 0xFF }, { 1, 0x7F }
    };
    size_t i;

    for (i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        uint8_t buf[] = { 0x16, versions[i][0], versions[i][1], 0x00, 0x2A };
        negstream__hs_header h;

        ck_assert_int_eq(negstream__hs_header_decode(buf, &h),
                         NEGSTREAM__FRAME_OK);
        ck_assert_int_eq(h.id, 0x16);
        ck_assert_int_eq(h.major, versions[i][0]);
        ck_assert_int_eq(h.minor, versions[i][1]);
        ck_assert_uint_eq(h.size, 42);
    }
}
END_TEST

/* ---- HandshakeError payload --------------------------------------------- */

/* The code little-endian, then big-endian: a 64-bit big-endian reader
 * (.NET <= 7) and a little-endian one (.NET 8+) that keep the low 32 bits
 * both get the code. */
static uint32_t low32_be(const uint8_t *p)
{
    return (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
           (uint32_t)p[6] << 8 | (uint32_t)p[7];
}

static uint32_t low32_le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

START_TEST(hs_error_encode_both_orders)
{
    static const uint8_t trust[] = {
        0xFE, 0x06, 0x00, 0x00, 0x00, 0x00, 0x06, 0xFE
    };
    static const uint8_t denied[] = {
        0x0C, 0x03, 0x09, 0x80, 0x80, 0x09, 0x03, 0x0C
    };
    uint8_t buf[NEGSTREAM__HS_ERROR_SIZE];
    uint32_t code = 0;

    negstream__hs_error_encode(buf, NEGSTREAM__ERR_TRUST_FAILURE);
    ck_assert_mem_eq(buf, trust, sizeof(buf));
    negstream__hs_error_encode(buf, NEGSTREAM__ERR_LOGON_DENIED);
    ck_assert_mem_eq(buf, denied, sizeof(buf));
    ck_assert_int_eq(negstream__hs_error_decode(buf, sizeof(buf), &code),
                     NEGSTREAM__FRAME_OK);
    ck_assert_uint_eq(code, 0x8009030Cu);
    negstream__hs_error_encode(buf, NEGSTREAM__ERR_INTERNAL);
    ck_assert_int_eq(negstream__hs_error_decode(buf, sizeof(buf), &code),
                     NEGSTREAM__FRAME_OK);
    ck_assert_uint_eq(code, 0x80090304u);
    ck_assert_uint_eq(low32_be(buf), 0x80090304u);
    ck_assert_uint_eq(low32_le(buf), 0x80090304u);
    negstream__hs_error_encode(buf, NEGSTREAM__ERR_TRUST_FAILURE);
    ck_assert_uint_eq(low32_be(buf), 1790);
    ck_assert_uint_eq(low32_le(buf), 1790);
}
END_TEST

START_TEST(hs_error_decode_both_orders)
{
    static const uint8_t be_1790[] = { 0, 0, 0, 0, 0, 0, 0x06, 0xFE };
    static const uint8_t le_1790[] = { 0xFE, 0x06, 0, 0, 0, 0, 0, 0 };
    static const uint8_t le_hresult[] = {
        0x0C, 0x03, 0x09, 0x80, 0xFF, 0xFF, 0xFF, 0xFF
    };
    static const uint8_t be_hresult[] = {
        0, 0, 0, 0, 0x80, 0x09, 0x03, 0x0C
    };
    uint32_t code;

    code = 0;
    ck_assert_int_eq(negstream__hs_error_decode(be_1790, 8, &code),
                     NEGSTREAM__FRAME_OK);
    ck_assert_uint_eq(code, 1790);
    code = 0;
    ck_assert_int_eq(negstream__hs_error_decode(le_1790, 8, &code),
                     NEGSTREAM__FRAME_OK);
    ck_assert_uint_eq(code, 1790);
    code = 0;
    ck_assert_int_eq(negstream__hs_error_decode(le_hresult, 8, &code),
                     NEGSTREAM__FRAME_OK);
    ck_assert_uint_eq(code, 0x8009030Cu);
    code = 0;
    ck_assert_int_eq(negstream__hs_error_decode(be_hresult, 8, &code),
                     NEGSTREAM__FRAME_OK);
    ck_assert_uint_eq(code, 0x8009030Cu);
}
END_TEST

START_TEST(hs_error_decode_extra_bytes)
{
    /* A longer payload: the first 8 bytes are the code. */
    static const uint8_t p[] = { 0, 0, 0, 0, 0, 0, 0x06, 0xFE, 0x11, 0x22 };
    uint32_t code = 0;

    ck_assert_int_eq(negstream__hs_error_decode(p, sizeof(p), &code),
                     NEGSTREAM__FRAME_OK);
    ck_assert_uint_eq(code, 1790);
}
END_TEST

START_TEST(hs_error_decode_short)
{
    static const uint8_t p[8] = { 0, 0, 0, 0, 0, 0, 0x06, 0xFE };
    size_t n;
    uint32_t code;

    for (n = 0; n < 8; n++) {
        code = 0xDEADBEEF;
        ck_assert_int_eq(negstream__hs_error_decode(p, n, &code),
                         NEGSTREAM__FRAME_SHORT);
    }
    ck_assert_int_eq(negstream__hs_error_decode(NULL, 0, &code),
                     NEGSTREAM__FRAME_SHORT);
}
END_TEST

/* ---- data-frame length prefix ------------------------------------------ */

static negstream__frame_rc decode_len(uint32_t v, uint32_t *out)
{
    uint8_t b[4];

    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
    return negstream__data_len_decode(b, out);
}

START_TEST(data_len_limits)
{
    static const uint32_t bad[] = {
        0, 1, 4, 65537, 100000, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu
    };
    static const uint32_t good[] = { 5, 6, 4096, 64512, 65535, 65536 };
    uint32_t len;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        len = 12345;
        ck_assert_int_eq(decode_len(bad[i], &len),
                         NEGSTREAM__FRAME_BAD_SIZE);
        ck_assert_uint_eq(len, bad[i]);     /* still set, for the message */
    }
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        len = 0;
        ck_assert_int_eq(decode_len(good[i], &len), NEGSTREAM__FRAME_OK);
        ck_assert_uint_eq(len, good[i]);
    }
}
END_TEST

START_TEST(data_len_little_endian)
{
    uint8_t b[4];
    uint32_t len = 0;

    negstream__data_len_encode(b, 0x00010000u);             /* 65536 */
    ck_assert_int_eq(b[0], 0x00);
    ck_assert_int_eq(b[1], 0x00);
    ck_assert_int_eq(b[2], 0x01);
    ck_assert_int_eq(b[3], 0x00);
    negstream__data_len_encode(b, 0x0000FC05u);             /* 64517 */
    ck_assert_int_eq(b[0], 0x05);
    ck_assert_int_eq(b[1], 0xFC);
    ck_assert_int_eq(b[2], 0x00);
    ck_assert_int_eq(b[3], 0x00);
    negstream__data_len_encode(b, 0x12345678u);
    ck_assert_int_eq(b[0], 0x78);
    ck_assert_int_eq(b[1], 0x56);
    ck_assert_int_eq(b[2], 0x34);
    ck_assert_int_eq(b[3], 0x12);
    /* Decode reads the same order: 05 01 00 00 is 261, not BE. */
    b[0] = 0x05, b[1] = 0x01, b[2] = 0x00, b[3] = 0x00;
    ck_assert_int_eq(negstream__data_len_decode(b, &len),
                     NEGSTREAM__FRAME_OK);
    ck_assert_uint_eq(len, 261);
    /* 00 00 01 05 would be 261 big-endian; little-endian it is huge. */
    b[0] = 0x00, b[1] = 0x00, b[2] = 0x01, b[3] = 0x05;
    ck_assert_int_eq(negstream__data_len_decode(b, &len),
                     NEGSTREAM__FRAME_BAD_SIZE);
    ck_assert_uint_eq(len, 0x05010000u);
}
END_TEST

START_TEST(data_len_round_trip)
{
    uint32_t v;

    for (v = 5; v <= 65536; v += 97) {
        uint8_t b[4];
        uint32_t len = 0;

        negstream__data_len_encode(b, v);
        ck_assert_int_eq(negstream__data_len_decode(b, &len),
                         NEGSTREAM__FRAME_OK);
        ck_assert_uint_eq(len, v);
    }
}
END_TEST

START_TEST(frame_count_values)
{
    ck_assert_uint_eq(negstream__frame_count(0), 0);
    ck_assert_uint_eq(negstream__frame_count(1), 1);
    ck_assert_uint_eq(negstream__frame_count(64511), 1);
    ck_assert_uint_eq(negstream__frame_count(64512), 1);
    ck_assert_uint_eq(negstream__frame_count(64513), 2);
    ck_assert_uint_eq(negstream__frame_count(2 * 64512), 2);
    /* 10 MiB = 162 full chunks (10450944) + 34816 bytes. */
    ck_assert_uint_eq(negstream__frame_count(10u * 1024 * 1024), 163);
    ck_assert_uint_eq(negstream__frame_count(SIZE_MAX),
                      SIZE_MAX / 64512 + 1);
    ck_assert_int_eq(NEGSTREAM__MAX_CHUNK, NEGSTREAM_MAX_FRAME_PLAINTEXT);
}
END_TEST

/* ---- status names and version ------------------------------------------- */

START_TEST(status_names)
{
    static const struct {
        negstream_status code;
        const char *name;
    } names[] = {
        { NEGSTREAM_OK, "NEGSTREAM_OK" },
        { NEGSTREAM_E_ARGUMENT_NULL, "NEGSTREAM_E_ARGUMENT_NULL" },
        { NEGSTREAM_E_ARGUMENT_RANGE, "NEGSTREAM_E_ARGUMENT_RANGE" },
        { NEGSTREAM_E_ARGUMENT, "NEGSTREAM_E_ARGUMENT" },
        { NEGSTREAM_E_INVALID_OPERATION, "NEGSTREAM_E_INVALID_OPERATION" },
        { NEGSTREAM_E_NOT_SUPPORTED, "NEGSTREAM_E_NOT_SUPPORTED" },
        { NEGSTREAM_E_DISPOSED, "NEGSTREAM_E_DISPOSED" },
        { NEGSTREAM_E_IO, "NEGSTREAM_E_IO" },
        { NEGSTREAM_E_AUTHENTICATION, "NEGSTREAM_E_AUTHENTICATION" },
        { NEGSTREAM_E_INVALID_CREDENTIAL,
          "NEGSTREAM_E_INVALID_CREDENTIAL" },
        { NEGSTREAM_E_TIMEOUT, "NEGSTREAM_E_TIMEOUT" },
        { NEGSTREAM_E_CANCELED, "NEGSTREAM_E_CANCELED" },
        { NEGSTREAM_E_NOMEM, "NEGSTREAM_E_NOMEM" },
    };
    size_t i;

    /* Every code of the enum, in order, is listed above. */
    ck_assert_uint_eq(sizeof(names) / sizeof(names[0]),
                      (size_t)NEGSTREAM_E_NOMEM + 1);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ck_assert_int_eq(names[i].code, (int)i);
        ck_assert_str_eq(negstream_status_name(names[i].code),
                         names[i].name);
    }
    ck_assert_str_eq(negstream_status_name((negstream_status)-1),
                     "NEGSTREAM_E_UNKNOWN");
    ck_assert_str_eq(negstream_status_name(
                         (negstream_status)(NEGSTREAM_E_NOMEM + 1)),
                     "NEGSTREAM_E_UNKNOWN");
    ck_assert_str_eq(negstream_status_name((negstream_status)1000),
                     "NEGSTREAM_E_UNKNOWN");
}
END_TEST

START_TEST(version_string)
{
    char want[32];

    snprintf(want, sizeof(want), "%d.%d.%d", NEGSTREAM_VERSION_MAJOR,
             NEGSTREAM_VERSION_MINOR, NEGSTREAM_VERSION_PATCH);
    ck_assert_str_eq(negstream_version(), want);
    ck_assert_str_eq(negstream_version(), PACKAGE_VERSION);
}
END_TEST

/* ---- the error setters -------------------------------------------------- */

static void dirty(negstream_error *e)
{
    memset(e, 0x5A, sizeof(*e));
    e->message[sizeof(e->message) - 1] = '\0';
}

START_TEST(err_null_ok)
{
    /* Every setter accepts NULL and leaves errno alone. */
    errno = ERANGE;
    negstream__err_ok(NULL);
    negstream__err_set(NULL, NEGSTREAM_E_IO, "x %d", 1);
    negstream__err_sys(NULL, NEGSTREAM_E_IO, EPIPE, "y");
    negstream__err_gss(NULL, NEGSTREAM_E_AUTHENTICATION, "gss_wrap",
                       GSS_S_FAILURE, 0);
    negstream__err_copy(NULL, NULL);
    negstream__err_prefix(NULL, "p");
    ck_assert_int_eq(errno, ERANGE);
}
END_TEST

START_TEST(err_ok_and_set)
{
    negstream_error e;

    dirty(&e);
    negstream__err_ok(&e);
    ck_assert_int_eq(e.code, NEGSTREAM_OK);
    ck_assert_int_eq(e.sys_errno, 0);
    ck_assert_uint_eq(e.gss_major, 0);
    ck_assert_uint_eq(e.gss_minor, 0);
    ck_assert_str_eq(e.message, "");

    dirty(&e);
    errno = EACCES;
    negstream__err_set(&e, NEGSTREAM_E_ARGUMENT_RANGE,
                       "offset %d is past the end of a %zu-byte buffer",
                       12, (size_t)10);
    ck_assert_int_eq(errno, EACCES);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT_RANGE);
    ck_assert_int_eq(e.sys_errno, 0);
    ck_assert_uint_eq(e.gss_major, 0);
    ck_assert_uint_eq(e.gss_minor, 0);
    ck_assert_str_eq(e.message,
                     "offset 12 is past the end of a 10-byte buffer");
}
END_TEST

START_TEST(err_set_truncates)
{
    char longer[1000];
    negstream_error e;

    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    dirty(&e);
    negstream__err_set(&e, NEGSTREAM_E_IO, "%s", longer);
    ck_assert_uint_eq(strlen(e.message), 255);
    ck_assert_int_eq(e.message[255], '\0');
    ck_assert_int_eq(e.message[254], 'x');

    /* The same through err_sys and err_prefix. */
    negstream__err_sys(&e, NEGSTREAM_E_IO, EPIPE, "%s", longer);
    ck_assert_uint_eq(strlen(e.message), 255);
    ck_assert_int_eq(e.sys_errno, EPIPE);
    negstream__err_set(&e, NEGSTREAM_E_IO, "%.250s", longer);
    negstream__err_prefix(&e, "write failed");
    ck_assert_uint_eq(strlen(e.message), 255);
    ck_assert(strncmp(e.message, "write failed: xxx", 17) == 0);
}
END_TEST

START_TEST(err_sys_strerror)
{
    negstream_error e;
    char want[256];

    dirty(&e);
    errno = 0;
    negstream__err_sys(&e, NEGSTREAM_E_IO, ECONNRESET,
                       "write to fd %d: peer closed the connection", 7);
    ck_assert_int_eq(errno, 0);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(e.sys_errno, ECONNRESET);
    ck_assert_uint_eq(e.gss_major, 0);
    ck_assert_uint_eq(e.gss_minor, 0);
    snprintf(want, sizeof(want),
             "write to fd 7: peer closed the connection: %s",
             strerror(ECONNRESET));
    ck_assert_str_eq(e.message, want);
}
END_TEST

START_TEST(err_gss_display_text)
{
    negstream_error e;
    gss_buffer_desc text = GSS_C_EMPTY_BUFFER;
    OM_uint32 minor, ctx = 0;
    char want[256];

    /* What the GSSAPI library itself says about GSS_S_BAD_NAME. */
    ck_assert(!GSS_ERROR(gss_display_status(&minor, GSS_S_BAD_NAME,
                                            GSS_C_GSS_CODE, GSS_C_NO_OID,
                                            &ctx, &text)));
    ck_assert_uint_gt(text.length, 0);
    snprintf(want, sizeof(want), "%.*s", (int)text.length,
             (const char *)text.value);
    gss_release_buffer(&minor, &text);

    dirty(&e);
    errno = EINTR;
    negstream__err_gss(&e, NEGSTREAM_E_ARGUMENT, "importing the target name",
                       GSS_S_BAD_NAME, 0);
    ck_assert_int_eq(errno, EINTR);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_int_eq(e.sys_errno, 0);
    ck_assert_uint_eq(e.gss_major, GSS_S_BAD_NAME);
    ck_assert_uint_eq(e.gss_minor, 0);
    ck_assert_msg(strncmp(e.message, "importing the target name: ", 27)
                  == 0, "message: %s", e.message);
    ck_assert_msg(strstr(e.message, want) != NULL,
                  "'%s' lacks '%s'", e.message, want);
    ck_assert_uint_lt(strlen(e.message), sizeof(e.message));
}
END_TEST

/* A file under $TMPDIR with the given contents; path gets its name. */
static void tmp_write(char *path, size_t cap, const char *tag,
                      const void *data, size_t n)
{
    const char *dir = getenv("TMPDIR");
    int fd;

    snprintf(path, cap, "%s/negstream-%s-XXXXXX",
             dir != NULL && dir[0] != '\0' ? dir : "/tmp", tag);
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
}

/* The hint for GSS_S_BAD_MECH (error.c). */
#if HAVE_NTLM_MECHGLUE_PLUGIN
# define BAD_MECH_HINT "(is gss-ntlmssp installed?)"
#else
# define BAD_MECH_HINT "(a Heimdal build speaks Kerberos only: is " \
                       "there a ticket, is the target name in the KDC, " \
                       "did the peer use NTLM?)"
#endif

/* The mechanism's own text for a minor code it has just returned. */
static void minor_text(OM_uint32 code, char *out, size_t cap)
{
    gss_buffer_desc text = GSS_C_EMPTY_BUFFER;
    OM_uint32 minor, ctx = 0;

    ck_assert(!GSS_ERROR(gss_display_status(&minor, code, GSS_C_MECH_CODE,
                                            GSS_C_NO_OID, &ctx, &text)));
    snprintf(out, cap, "%.*s", (int)text.length, (const char *)text.value);
    gss_release_buffer(&minor, &text);
}

/* gss_acquire_cred of an acceptor credential for host/localhost with the
 * krb5 mechanism only (other mechanisms might accept any name). */
static OM_uint32 acquire_acceptor(OM_uint32 *minor)
{
    gss_OID_set_desc krb5_only = { 1, (gss_OID)gss_mech_krb5 };
    gss_buffer_desc nb = { 28, (void *)"host/localhost@NEGTEST.LOCAL" };
    gss_cred_id_t cred = GSS_C_NO_CREDENTIAL;
    gss_name_t name = GSS_C_NO_NAME;
    OM_uint32 major, junk;

    ck_assert(!GSS_ERROR(gss_import_name(minor, &nb,
                                         GSS_KRB5_NT_PRINCIPAL_NAME,
                                         &name)));
    /* MIT krb5 1.20 leaks a copy of the acceptor's principal when this
     * acquisition fails (inside the library, after it returned the
     * error); keep LeakSanitizer from blaming the test for it. */
    LSAN_DISABLE();
    major = gss_acquire_cred(minor, name, GSS_C_INDEFINITE, &krb5_only,
                             GSS_C_ACCEPT, &cred, NULL, NULL);
    LSAN_ENABLE();
    gss_release_cred(&junk, &cred);
    gss_release_name(&junk, &name);
    return major;
}

/* Real GSSAPI failures, produced without a KDC, and their hints.  The
 * environment points krb5 at our own files, never /etc/krb5.conf. */
START_TEST(err_gss_minor_and_hints)
{
    static const uint8_t empty_keytab[] = { 0x05, 0x02 };
    static const char conf[] =
        "[libdefaults]\n"
        " default_realm = NEGTEST.LOCAL\n"
        " dns_lookup_kdc = false\n"
        " dns_lookup_realm = false\n"
        " rdns = false\n"
        " dns_canonicalize_hostname = false\n"
        "[realms]\n"
        " NEGTEST.LOCAL = {\n"
        "  kdc = 127.0.0.1:1\n"       /* nothing listens there */
        " }\n";
    char kt[512], cfg[512], env[600], want[256];
    negstream_error e;
    OM_uint32 major, minor;

    tmp_write(cfg, sizeof(cfg), "krb5conf", conf, sizeof(conf) - 1);
    tmp_write(kt, sizeof(kt), "keytab", empty_keytab, sizeof(empty_keytab));
    setenv("KRB5_CONFIG", cfg, 1);
    setenv("KRB5CCNAME", "MEMORY:negstream-check-frame", 1);

    /* A keytab without the service principal. */
    snprintf(env, sizeof(env), "FILE:%s", kt);
    setenv("KRB5_KTNAME", env, 1);
    major = acquire_acceptor(&minor);
    ck_assert_uint_eq(GSS_ROUTINE_ERROR(major), GSS_S_NO_CRED);
#ifdef NEGSTREAM_HEIMDAL
    /* Heimdal's mechglue drops the krb5 minor code here: the NO_CRED
     * hint is what points at the keytab. */
    ck_assert_uint_eq(minor, 0);
    want[0] = '\0';
#else
    ck_assert_uint_ne(minor, 0);
    minor_text(minor, want, sizeof(want));
#endif
    negstream__err_gss(&e, NEGSTREAM_E_INVALID_CREDENTIAL,
                       "acquiring the server's credentials", major, minor);
    ck_assert_int_eq(e.code, NEGSTREAM_E_INVALID_CREDENTIAL);
    ck_assert_uint_eq(e.gss_major, major);
    ck_assert_uint_eq(e.gss_minor, minor);
    ck_assert_msg(strncmp(e.message, "acquiring the server's credentials: ",
                          36) == 0, "%s", e.message);
    ck_assert_msg(strstr(e.message, want) != NULL, "'%s' lacks '%s'",
                  e.message, want);
#ifdef NEGSTREAM_HEIMDAL
    ck_assert_msg(strstr(e.message, "KRB5_KTNAME)") != NULL, "%s",
                  e.message);
#else
    ck_assert_msg(strstr(e.message, "(is the service principal in the "
                         "keytab? see KRB5_KTNAME)") != NULL,
                  "%s", e.message);
#endif

    /* No keytab at all. */
    setenv("KRB5_KTNAME", "FILE:/nonexistent/negstream.keytab", 1);
    major = acquire_acceptor(&minor);
    ck_assert_uint_eq(GSS_ROUTINE_ERROR(major), GSS_S_NO_CRED);
#ifdef NEGSTREAM_HEIMDAL
    ck_assert_uint_eq(minor, 0);            /* as above */
    want[0] = '\0';
#else
    minor_text(minor, want, sizeof(want));
#endif
    negstream__err_gss(&e, NEGSTREAM_E_INVALID_CREDENTIAL,
                       "gss_acquire_cred", major, minor);
    ck_assert_msg(strstr(e.message, want) != NULL, "'%s' lacks '%s'",
                  e.message, want);
    ck_assert_msg(strstr(e.message, "KRB5_KTNAME)") != NULL, "%s",
                  e.message);

#ifdef HAVE_GSS_ACQUIRE_CRED_WITH_PASSWORD
    {
        /* A password login when the realm's KDC is unreachable. */
        gss_OID_set_desc krb5_only = { 1, (gss_OID)gss_mech_krb5 };
        gss_buffer_desc user = { 5, (void *)"alice" };
        gss_buffer_desc pw = { 6, (void *)"secret" };
        gss_cred_id_t cred = GSS_C_NO_CREDENTIAL;
        gss_name_t name = GSS_C_NO_NAME;
        OM_uint32 junk;

        ck_assert(!GSS_ERROR(gss_import_name(&minor, &user,
                                             GSS_C_NT_USER_NAME, &name)));
        major = gss_acquire_cred_with_password(&minor, name, &pw,
                                               GSS_C_INDEFINITE, &krb5_only,
                                               GSS_C_INITIATE, &cred, NULL,
                                               NULL);
        gss_release_cred(&junk, &cred);
        gss_release_name(&junk, &name);
        ck_assert(GSS_ERROR(major));
        minor_text(minor, want, sizeof(want));
        negstream__err_gss(&e, NEGSTREAM_E_INVALID_CREDENTIAL,
                           "acquiring credentials with a password", major,
                           minor);
        ck_assert_msg(strstr(e.message, want) != NULL, "'%s' lacks '%s'",
                      e.message, want);
        ck_assert_msg(strstr(e.message, "(is the KDC running and "
                             "reachable?)") != NULL, "%s", e.message);
        ck_assert_ptr_null(strstr(e.message, "secret"));
    }
#endif
    unsetenv("KRB5_KTNAME");
    unsetenv("KRB5_CONFIG");
    unsetenv("KRB5CCNAME");
    unlink(kt);
    unlink(cfg);

    /* An unsupported mechanism: NTLM without gss-ntlmssp (MIT), krb5
     * failing under SPNEGO (Heimdal). */
    negstream__err_gss(&e, NEGSTREAM_E_AUTHENTICATION, "gss_acquire_cred",
                       GSS_S_BAD_MECH, 0);
    ck_assert_msg(strstr(e.message, BAD_MECH_HINT) != NULL, "%s",
                  e.message);

    /* No hint where the cause is not known. */
    {
        gss_buffer_desc text = GSS_C_EMPTY_BUFFER;
        OM_uint32 ctx = 0;
        char exact[256];

        ck_assert(!GSS_ERROR(gss_display_status(&minor, GSS_S_BAD_SIG,
                                                GSS_C_GSS_CODE,
                                                GSS_C_NO_OID, &ctx,
                                                &text)));
        snprintf(exact, sizeof(exact), "gss_unwrap: %.*s",
                 (int)text.length, (const char *)text.value);
        gss_release_buffer(&minor, &text);
        negstream__err_gss(&e, NEGSTREAM_E_IO, "gss_unwrap", GSS_S_BAD_SIG,
                           0);
        ck_assert_str_eq(e.message, exact);
    }
}
END_TEST

START_TEST(err_gss_hint_survives_truncation)
{
    char what[400];
    negstream_error e;

    memset(what, 'w', sizeof(what) - 1);
    what[sizeof(what) - 1] = '\0';
    negstream__err_gss(&e, NEGSTREAM_E_AUTHENTICATION, what, GSS_S_BAD_MECH,
                       0);
    ck_assert_uint_le(strlen(e.message), 255);
    ck_assert_msg(strstr(e.message, BAD_MECH_HINT) != NULL, "%s",
                  e.message);
}
END_TEST

START_TEST(err_copy_and_prefix)
{
    negstream_error a, b;

    negstream__err_sys(&a, NEGSTREAM_E_IO, EPIPE, "write to fd %d", 3);
    dirty(&b);
    negstream__err_copy(&b, &a);
    ck_assert_int_eq(b.code, NEGSTREAM_E_IO);
    ck_assert_int_eq(b.sys_errno, EPIPE);
    ck_assert_str_eq(b.message, a.message);
    negstream__err_copy(&b, &b);            /* self-copy is harmless */
    ck_assert_str_eq(b.message, a.message);
    negstream__err_copy(&b, NULL);          /* nothing to copy: OK */
    ck_assert_int_eq(b.code, NEGSTREAM_OK);

    negstream__err_set(&a, NEGSTREAM_E_TIMEOUT, "read on fd 4 timed out");
    negstream__err_prefix(&a, "read failed");
    ck_assert_str_eq(a.message, "read failed: read on fd 4 timed out");
    ck_assert_int_eq(a.code, NEGSTREAM_E_TIMEOUT);
    negstream__err_set(&a, NEGSTREAM_E_IO, "%s", "");
    negstream__err_prefix(&a, "write failed");
    ck_assert_str_eq(a.message, "write failed");
}
END_TEST

/* Control characters from the peer (a name quoted by a GSSAPI status
 * text, say) never reach a message: every byte below 0x20 and 0x7f
 * becomes '?', UTF-8 stays as it is. */
START_TEST(err_control_chars_scrubbed)
{
    negstream_error e;

    negstream__err_set(&e, NEGSTREAM_E_AUTHENTICATION, "peer %s said no",
                       "al\x01ice\x1b[2J\xc3\xa9\x7f\r\nFAKE: ok\t!");
    ck_assert_str_eq(e.message,
                     "peer al?ice?[2J\xc3\xa9???FAKE: ok?! said no");
    negstream__err_sys(&e, NEGSTREAM_E_IO, ENOENT, "file \x1b]0;x\x07");
    ck_assert_ptr_nonnull(strstr(e.message, "file ?]0;x?: "));
    negstream__err_set(&e, NEGSTREAM_E_IO, "%s", "inner");
    negstream__err_prefix(&e, "from \x05 peer");
    ck_assert_str_eq(e.message, "from ? peer: inner");
}
END_TEST

/* ---- option structures (options.c) -------------------------------------- */

/*
 * The sizes options.c records: one per version, growing, the last one
 * covering every field of this header's structure (at most the tail
 * padding is left), and 'struct_version' right after the first
 * version's fields, where it stays for ever.
 */
START_TEST(options_sizes)
{
    unsigned v;

    ck_assert_uint_eq(negstream__client_options_size(0), 0);
    ck_assert_uint_eq(negstream__server_options_size(0), 0);
    for (v = 1; v < NEGSTREAM_CLIENT_OPTIONS_VERSION; v++)
        ck_assert_uint_lt(negstream__client_options_size(v),
                          negstream__client_options_size(v + 1));
    for (v = 1; v < NEGSTREAM_SERVER_OPTIONS_VERSION; v++)
        ck_assert_uint_lt(negstream__server_options_size(v),
                          negstream__server_options_size(v + 1));
    ck_assert_uint_lt(sizeof(negstream_client_options) -
        negstream__client_options_size(NEGSTREAM_CLIENT_OPTIONS_VERSION),
        8);
    ck_assert_uint_lt(sizeof(negstream_server_options) -
        negstream__server_options_size(NEGSTREAM_SERVER_OPTIONS_VERSION),
        8);
    ck_assert_uint_eq(negstream__client_options_size(
                          NEGSTREAM_CLIENT_OPTIONS_VERSION + 1), 0);
    ck_assert_uint_eq(negstream__client_options_size(1),
                      offsetof(negstream_client_options, struct_version) +
                      sizeof(uint32_t));
    ck_assert_uint_eq(negstream__server_options_size(1),
                      offsetof(negstream_server_options, struct_version) +
                      sizeof(uint32_t));
    ck_assert_uint_le(offsetof(negstream_client_options, struct_version) -
                      offsetof(negstream_client_options,
                               require_mutual_auth), 4);
    ck_assert_uint_eq(offsetof(negstream_server_options, struct_version),
                      offsetof(negstream_server_options, mechanism) +
                      sizeof(const char *));
    /* the transport table: stamped first, the last size covering all */
    ck_assert_uint_eq(negstream__io_size(0), 0);
    for (v = 1; v < NEGSTREAM_IO_VERSION; v++)
        ck_assert_uint_lt(negstream__io_size(v), negstream__io_size(v + 1));
    ck_assert_uint_lt(sizeof(negstream_io) -
                      negstream__io_size(NEGSTREAM_IO_VERSION), 8);
    ck_assert_uint_eq(negstream__io_size(NEGSTREAM_IO_VERSION + 1), 0);
    ck_assert_uint_eq(offsetof(negstream_io, struct_version), 0);
}
END_TEST

/* _init writes the bytes of the version it is given and no more: the
 * caller's structure may be that small. */
START_TEST(options_init_writes_only_its_version)
{
    unsigned char buf[sizeof(negstream_client_options) + 32];
    unsigned char sbuf[sizeof(negstream_server_options) + 32];
    size_t n = negstream__client_options_size(1), i;
    size_t sn = negstream__server_options_size(1);
    negstream_client_options co;
    negstream_error e;

    memset(buf, 0xa5, sizeof(buf));
    negstream_client_options_init_version((negstream_client_options *)buf,
                                          1);
    for (i = n; i < sizeof(buf); i++)
        ck_assert_msg(buf[i] == 0xa5, "byte %zu of %zu written", i,
                      sizeof(buf));
    memset(buf, 0xa5, sizeof(buf));
    negstream_client_options_init_version((negstream_client_options *)buf,
            NEGSTREAM_CLIENT_OPTIONS_VERSION + 7);
    for (i = negstream__client_options_size(
             NEGSTREAM_CLIENT_OPTIONS_VERSION); i < sizeof(buf); i++)
        ck_assert_int_eq(buf[i], 0xa5);
    memset(sbuf, 0xa5, sizeof(sbuf));
    negstream_server_options_init_version((negstream_server_options *)sbuf,
                                          1);
    for (i = sn; i < sizeof(sbuf); i++)
        ck_assert_int_eq(sbuf[i], 0xa5);

    /* the defaults, and an import of what _init stamped */
    negstream_client_options_init(&co);
    ck_assert_int_eq(co.protection, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    ck_assert_int_eq(co.impersonation,
                     NEGSTREAM_IMPERSONATION_IDENTIFICATION);
    ck_assert_str_eq(co.mechanism, "negotiate");
    ck_assert_ptr_null(co.target_name);
    ck_assert(!co.require_mutual_auth);
    co.target_name = "host/x";
    {
        negstream_client_options got;

        ck_assert_int_eq(negstream__client_options_import(&got, &co, &e),
                         0);
        ck_assert_str_eq(got.target_name, "host/x");
        ck_assert_int_eq(got.struct_version, co.struct_version);
    }
    /* version 0 is "not initialized"; a NULL structure is ignored */
    negstream_client_options_init_version(&co, 0);
    ck_assert_int_eq(negstream__client_options_import(
                         (negstream_client_options *)buf, &co, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    negstream_client_options_init(NULL);
    negstream_server_options_init(NULL);
}
END_TEST

/* The transport table (negstream_io) the same way: _init writes its
 * version's bytes only, with the defaults; an import takes the fields of
 * the stamped version and refuses an unstamped or newer table. */
START_TEST(io_init_and_import)
{
    unsigned char buf[sizeof(negstream_io) + 32];
    negstream_io io, got;
    negstream_error e;
    size_t i;

    memset(buf, 0xa5, sizeof(buf));
    negstream_io_init_version((negstream_io *)buf, NEGSTREAM_IO_VERSION + 3);
    for (i = negstream__io_size(NEGSTREAM_IO_VERSION); i < sizeof(buf); i++)
        ck_assert_int_eq(buf[i], 0xa5);

    negstream_io_init(&io);
    ck_assert_uint_eq(io.flags, 0);
    ck_assert_int_eq(io.read_fd, -1);
    ck_assert_int_eq(io.write_fd, -1);
    ck_assert(io.read == NULL && io.write == NULL);
    ck_assert(io.shutdown == NULL && io.close == NULL);
    io.read_fd = 7;
    io.flags = NEGSTREAM_IO_CONCURRENT;
    ck_assert_int_eq(negstream__io_import(&got, &io, &e), 0);
    ck_assert_int_eq(got.read_fd, 7);
    ck_assert_uint_eq(got.flags, NEGSTREAM_IO_CONCURRENT);
    ck_assert_int_eq(got.write_fd, -1);

    /* unstamped (zeros), and from a newer header */
    memset(&io, 0, sizeof(io));
    ck_assert_int_eq(negstream__io_import(&got, &io, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_msg(strstr(e.message, "negstream_io_init()") != NULL, "%s",
                  e.message);
    negstream_io_init_version(&io, NEGSTREAM_IO_VERSION + 1);
    ck_assert_int_eq(negstream__io_import(&got, &io, &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_ARGUMENT);
    ck_assert_msg(strstr(e.message, "newer negstream.h") != NULL, "%s",
                  e.message);
    negstream_io_init(NULL);
}
END_TEST

/* ---- NEGSTREAM_TRACE ---------------------------------------------------- */

/*
 * trace.c reads the environment once per process, so each case runs in a
 * child of its own (also under CK_FORK=no).  The child traces from two
 * threads; the parent checks the file line by line.
 */
#define TRACE_LINES 200

/* A fresh empty file under $TMPDIR (distcheck's srcdir is read-only). */
static int tmp_file(char *path, size_t cap)
{
    const char *dir = getenv("TMPDIR");

    snprintf(path, cap, "%s/negstream-trace-XXXXXX",
             dir != NULL && dir[0] != '\0' ? dir : "/tmp");
    return mkstemp(path);
}

static void *trace_thread(void *arg)
{
    int i;

    for (i = 0; i < TRACE_LINES; i++)
        negstream__trace("thread %s line %d with\na newline", (char *)arg,
                         i);
    return NULL;
}

static int run_traced_child(const char *value)
{
    pid_t pid = fork();
    int status;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        pthread_t th;

        if (value != NULL)
            setenv("NEGSTREAM_TRACE", value, 1);
        else
            unsetenv("NEGSTREAM_TRACE");
        if (pthread_create(&th, NULL, trace_thread, "A") != 0)
            _exit(3);
        trace_thread("B");
        pthread_join(th, NULL);
        _exit(negstream__trace_enabled() ? 0 : 2);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

START_TEST(trace_to_file)
{
    char path[512];
    char line[2048];
    int fd = tmp_file(path, sizeof(path)), a = 0, b = 0;
    FILE *f;
    pid_t child;

    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(run_traced_child(path), 0);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    child = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        long pid;
        unsigned long tid;
        char who;
        int n, used = 0;

        ck_assert_msg(sscanf(line, "negstream[%ld.%lu]: thread %c line %d "
                             "with a newline\n%n", &pid, &tid, &who, &n,
                             &used) == 4 && used == (int)strlen(line),
                      "bad line: %s", line);
        if (child == 0)
            child = (pid_t)pid;
        ck_assert_int_eq(pid, child);
        if (who == 'A')
            ck_assert_int_eq(n, a++);
        else
            ck_assert_int_eq(n, b++);
    }
    fclose(f);
    ck_assert_int_eq(a, TRACE_LINES);
    ck_assert_int_eq(b, TRACE_LINES);
    ck_assert_int_ne(child, getpid());
    unlink(path);
}
END_TEST

START_TEST(trace_off)
{
    /* Unset, empty and "0" are all off. */
    ck_assert_int_eq(run_traced_child(NULL), 2);
    ck_assert_int_eq(run_traced_child(""), 2);
    ck_assert_int_eq(run_traced_child("0"), 2);
}
END_TEST

START_TEST(trace_bad_path_falls_back_to_stderr)
{
    char path[512];
    int fd = tmp_file(path, sizeof(path)), saved = dup(STDERR_FILENO);
    char line[2048];
    int lines = 0, warnings = 0;
    FILE *f;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(saved, 0);
    /* The child inherits this file as its stderr. */
    ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);
    fd = run_traced_child("/nonexistent-dir/negstream/trace.log");
    dup2(saved, STDERR_FILENO);
    close(saved);
    ck_assert_int_eq(fd, 0);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        ck_assert(strncmp(line, "negstream[", 10) == 0);
        if (strstr(line, "cannot open NEGSTREAM_TRACE file "
                         "/nonexistent-dir/negstream/trace.log") != NULL)
            warnings++;
        else
            lines++;
    }
    fclose(f);
    ck_assert_int_eq(warnings, 1);
    ck_assert_int_eq(lines, 2 * TRACE_LINES);
    unlink(path);
}
END_TEST

/*
 * A symbolic link at the NEGSTREAM_TRACE path (planted in a shared
 * directory by someone else, say) is refused: the file it points to is
 * not written, one line on stderr says why, and tracing is off.
 */
START_TEST(trace_symlink_refused)
{
    char target[512], link_path[600], line[2048];
    int fd = tmp_file(target, sizeof(target)), saved, warnings = 0;
    int others = 0, status;
    struct stat st;
    FILE *f;

    ck_assert_int_ge(fd, 0);
    close(fd);
    snprintf(link_path, sizeof(link_path), "%s.lnk", target);
    ck_assert_int_eq(symlink(target, link_path), 0);
    fd = tmp_file(line, sizeof(line));     /* the child's stderr */
    ck_assert_int_ge(fd, 0);
    saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);
    status = run_traced_child(link_path);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ck_assert_int_eq(status, 2);           /* tracing is off */
    ck_assert_int_eq(stat(target, &st), 0);
    ck_assert_int_eq(st.st_size, 0);       /* the target was not written */
    ck_assert_int_eq(lstat(link_path, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
    f = fopen(line, "r");
    ck_assert_ptr_nonnull(f);
    unlink(line);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, "is a symbolic link: refused") != NULL &&
            strncmp(line, "negstream[", 10) == 0)
            warnings++;
        else
            others++;
    }
    fclose(f);
    ck_assert_int_eq(warnings, 1);
    ck_assert_int_eq(others, 0);
    unlink(link_path);
    unlink(target);
}
END_TEST

/* The file is created with mode 0600 (whatever the umask allows), an
 * existing one is appended to, and the descriptor is close-on-exec. */
START_TEST(trace_file_mode_append_cloexec)
{
    char path[512], line[2048];
    int fd = tmp_file(path, sizeof(path)), status;
    struct stat st;
    pid_t pid;
    FILE *f;

    ck_assert_int_ge(fd, 0);
    close(fd);
    unlink(path);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char link_to[600];
        struct dirent *d;
        int cloexec = -1;
        DIR *dir;

        umask(0);
        setenv("NEGSTREAM_TRACE", path, 1);
        negstream__trace("first");
        dir = opendir("/proc/self/fd");
        while (dir != NULL && (d = readdir(dir)) != NULL) {
            ssize_t n;

            n = readlinkat(dirfd(dir), d->d_name, link_to,
                           sizeof(link_to) - 1);
            if (n <= 0)
                continue;
            link_to[n] = '\0';
            if (strcmp(link_to, path) == 0)
                cloexec = (fcntl(atoi(d->d_name), F_GETFD) & FD_CLOEXEC) ?
                          1 : 0;
        }
        if (dir != NULL)
            closedir(dir);
        _exit(cloexec == 1 ? 0 : 3);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the trace file's descriptor is not close-on-exec");
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);

    /* a second process appends */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("NEGSTREAM_TRACE", path, 1);
        negstream__trace("second");
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    ck_assert_ptr_nonnull(strstr(line, "]: first\n"));
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    ck_assert_ptr_nonnull(strstr(line, "]: second\n"));
    fclose(f);
    unlink(path);
}
END_TEST

/* Control characters in traced text (a client's name, a GSSAPI text)
 * become '?'; line breaks and tabs become spaces; UTF-8 is kept. */
START_TEST(trace_control_chars_scrubbed)
{
    char path[512], line[2048];
    int fd = tmp_file(path, sizeof(path)), status;
    pid_t pid;
    FILE *f;

    ck_assert_int_ge(fd, 0);
    close(fd);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("NEGSTREAM_TRACE", path, 1);
        negstream__trace("authenticated %s",
                         "al\x01ice\x1b[31m\xc3\xa9\x7f\x08\tx\ny");
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    ck_assert_msg(strstr(line, "]: authenticated al?ice?[31m\xc3\xa9?? x y\n")
                  != NULL, "line: %s", line);
    ck_assert_ptr_null(fgets(line, sizeof(line), f));
    fclose(f);
    unlink(path);
}
END_TEST

START_TEST(trace_long_line_cut)
{
    char path[512];
    char big[5000], line[8192];
    int fd = tmp_file(path, sizeof(path));
    pid_t pid;
    int status;
    FILE *f;

    ck_assert_int_ge(fd, 0);
    close(fd);
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("NEGSTREAM_TRACE", path, 1);
        negstream__trace("%s", big);
        negstream__trace("after");
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    ck_assert_uint_le(strlen(line), 1023);
    ck_assert_int_eq(line[strlen(line) - 1], '\n');
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    ck_assert_ptr_nonnull(strstr(line, "]: after\n"));
    ck_assert_ptr_null(fgets(line, sizeof(line), f));
    fclose(f);
    unlink(path);
}
END_TEST

static Suite *frame_suite(void)
{
    Suite *s = suite_create("frame");
    TCase *tc;

    tc = tcase_create("handshake");
    tcase_add_test(tc, hs_header_round_trip);
    tcase_add_test(tc, hs_header_wire_bytes);
    tcase_add_test(tc, hs_header_unknown_ids);
    tcase_add_test(tc, hs_header_version_ignored);
    tcase_add_test(tc, hs_error_encode_both_orders);
    tcase_add_test(tc, hs_error_decode_both_orders);
    tcase_add_test(tc, hs_error_decode_extra_bytes);
    tcase_add_test(tc, hs_error_decode_short);
    suite_add_tcase(s, tc);

    tc = tcase_create("data");
    tcase_add_test(tc, data_len_limits);
    tcase_add_test(tc, data_len_little_endian);
    tcase_add_test(tc, data_len_round_trip);
    tcase_add_test(tc, frame_count_values);
    suite_add_tcase(s, tc);

    tc = tcase_create("error");
    tcase_add_test(tc, status_names);
    tcase_add_test(tc, version_string);
    tcase_add_test(tc, err_null_ok);
    tcase_add_test(tc, err_ok_and_set);
    tcase_add_test(tc, err_set_truncates);
    tcase_add_test(tc, err_sys_strerror);
    tcase_add_test(tc, err_gss_display_text);
    tcase_add_test(tc, err_gss_minor_and_hints);
    tcase_add_test(tc, err_gss_hint_survives_truncation);
    tcase_add_test(tc, err_copy_and_prefix);
    tcase_add_test(tc, err_control_chars_scrubbed);
    suite_add_tcase(s, tc);

    tc = tcase_create("options");
    tcase_add_test(tc, options_sizes);
    tcase_add_test(tc, options_init_writes_only_its_version);
    tcase_add_test(tc, io_init_and_import);
    suite_add_tcase(s, tc);

    tc = tcase_create("trace");
    tcase_add_test(tc, trace_to_file);
    tcase_add_test(tc, trace_off);
    tcase_add_test(tc, trace_bad_path_falls_back_to_stderr);
    tcase_add_test(tc, trace_long_line_cut);
    tcase_add_test(tc, trace_symlink_refused);
    tcase_add_test(tc, trace_file_mode_append_cloexec);
    tcase_add_test(tc, trace_control_chars_scrubbed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(frame_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
