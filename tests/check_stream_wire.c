/*
 * check_stream_wire.c - what the synchronous stream does with the bytes on
 * the wire: bad lengths, truncated and garbage frames, tampered, replayed
 * and reordered frames, a changed RFC 4121 RRC, each injected on the raw
 * fd of an authenticated pair, fault the reader with IO and hand out
 * nothing of the bad frame; and what each protection level lets be seen.
 * Run under tests/kdc/with-realm (tests/stream_wire.krb).
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "negstream.h"
#include "testutil.h"

static const negstream_protection levels[] = {
    NEGSTREAM_PROTECTION_NONE, NEGSTREAM_PROTECTION_SIGN,
    NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
};

/* ---- frames injected on the wire ---------------------------------------- */

/* Raw bytes injected on the client's fd reach the server's stream. */
static void expect_read_fault(const void *raw, size_t n, bool close_after,
                              const char *why)
{
    negstream *c, *s;
    negstream_error e, e2;
    char b[64];

    tu_pair(NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    ck_assert_int_eq(send(tu_fds[0], raw, n, MSG_NOSIGNAL), (ssize_t)n);
    if (close_after)
        shutdown(tu_fds[0], SHUT_WR);
    ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e), -1);
    ck_assert_msg(e.code == NEGSTREAM_E_IO, "%s: %s", why, e.message);
    /* Faulted: the next read fails at once, naming the first failure. */
    ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e2), -1);
    ck_assert_int_eq(e2.code, NEGSTREAM_E_IO);
    ck_assert_ptr_nonnull(strstr(e2.message, e.message));
    ck_assert_int_eq(negstream_write(s, "x", 1, 0, 1, &e2), -1);
    ck_assert_int_eq(e2.code, NEGSTREAM_E_IO);
    negstream_close(c);
    negstream_close(s);
}

START_TEST(test_bad_frames)
{
    static const uint8_t len0[] = { 0, 0, 0, 0 };
    static const uint8_t len4[] = { 4, 0, 0, 0, 1, 2, 3, 4 };
    static const uint8_t len64k1[] = { 0x01, 0x00, 0x01, 0x00 };
    static const uint8_t len2g[] = { 0, 0, 0, 0x80 };
    static const uint8_t half_header[] = { 0x20, 0 };
    static const uint8_t short_body[] = { 0x20, 0, 0, 0, 1, 2, 3 };
    uint8_t garbage[4 + 40];

    expect_read_fault(len0, sizeof(len0), false, "length 0");
    expect_read_fault(len4, sizeof(len4), false, "length 4");
    expect_read_fault(len64k1, sizeof(len64k1), false, "length 65537");
    expect_read_fault(len2g, sizeof(len2g), false, "length 2^31");
    expect_read_fault(half_header, sizeof(half_header), true, "EOF header");
    expect_read_fault(short_body, sizeof(short_body), true, "EOF body");
    garbage[0] = 40;
    garbage[1] = garbage[2] = garbage[3] = 0;
    tu_fill(garbage + 4, 40, 3);
    expect_read_fault(garbage, sizeof(garbage), false, "garbage token");
}
END_TEST

/* Reads one whole data frame off the raw server fd. */
static size_t grab_frame(uint8_t *buf, size_t cap)
{
    uint32_t len;
    size_t got = 0;

    while (got < 4) {
        ssize_t r = recv(tu_fds[1], buf + got, 4 - got, 0);
        ck_assert_int_gt(r, 0);
        got += (size_t)r;
    }
    len = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16
          | (uint32_t)buf[3] << 24;
    ck_assert_uint_le(len + 4, cap);
    while (got < len + 4) {
        ssize_t r = recv(tu_fds[1], buf + got, len + 4 - got, 0);
        ck_assert_int_gt(r, 0);
        got += (size_t)r;
    }
    return got;
}

/* The next read of s fails with IO. */
static void expect_read_io(negstream *s)
{
    negstream_error e;
    char b[64];

    ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e), -1);
    ck_assert_int_eq(e.code, NEGSTREAM_E_IO);
}

/* One bit flipped, a frame replayed, frames reordered: the reader fails
 * with IO and hands out nothing of the bad frame. */
START_TEST(test_tampered_replayed_reordered)
{
    uint8_t f1[256], f2[256], bad[256];
    size_t n1, n2;
    negstream *c, *s;
    negstream_error e;
    char b[64];
    int mode = _i % 3;   /* 0 tamper, 1 replay, 2 reorder */

    tu_pair(_i < 3 ? NEGSTREAM_PROTECTION_SIGN
                   : NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    tu_write_all(c, "first secret", 12);
    n1 = grab_frame(f1, sizeof(f1));
    tu_write_all(c, "second secret", 13);
    n2 = grab_frame(f2, sizeof(f2));
    if (mode == 0) {
        memcpy(bad, f1, n1);
        bad[n1 - 3] ^= 0x10;
        ck_assert_int_eq(send(tu_fds[0], bad, n1, 0), (ssize_t)n1);
        expect_read_io(s);
    } else if (mode == 1) {
        ck_assert_int_eq(send(tu_fds[0], f1, n1, 0), (ssize_t)n1);
        ck_assert_int_eq(send(tu_fds[0], f1, n1, 0), (ssize_t)n1);
        ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e),
                         12);
        ck_assert_mem_eq(b, "first secret", 12);
        expect_read_io(s);
    } else {
        ck_assert_int_eq(send(tu_fds[0], f2, n2, 0), (ssize_t)n2);
        ck_assert_int_eq(send(tu_fds[0], f1, n1, 0), (ssize_t)n1);
        expect_read_io(s);
    }
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/*
 * RFC 4121 keeps a wrap token's RRC field (the rotation of what follows
 * its 16-byte header) out of the checksum.  Rotating by RRC + the rotated
 * length is rotating by RRC: the token still carries the message sent,
 * and it is delivered (negstream(7), FAILURE SEMANTICS; a fuzz run found
 * it).  Any other change of RRC garbles the token, and the reader fails.
 */
START_TEST(test_rrc_changed)
{
    uint8_t f[256];
    negstream *c, *s;
    negstream_error e;
    size_t n, body;
    unsigned rrc;
    char b[64];
    bool same = _i < 2;

    tu_pair(_i % 2 == 0 ? NEGSTREAM_PROTECTION_SIGN
                        : NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN, &c, &s);
    tu_write_all(c, "first secret", 12);
    n = grab_frame(f, sizeof(f));
    /* A CFX (RFC 4121) wrap token: 05 04, flags, FF, EC, RRC, sequence. */
    ck_assert_uint_gt(n, 4 + 16);
    ck_assert_uint_eq(f[4], 0x05);
    ck_assert_uint_eq(f[5], 0x04);
    body = n - 4 - 16;
    rrc = (unsigned)f[10] << 8 | f[11];
    rrc = (rrc + (same ? body : 1)) & 0xffff;
    f[10] = (uint8_t)(rrc >> 8);
    f[11] = (uint8_t)rrc;
    ck_assert_int_eq(send(tu_fds[0], f, n, 0), (ssize_t)n);
    if (same) {
        ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e),
                         12);
        ck_assert_mem_eq(b, "first secret", 12);
        /* And the stream goes on. */
        tu_write_all(c, "second", 6);
        n = grab_frame(f, sizeof(f));
        ck_assert_int_eq(send(tu_fds[0], f, n, 0), (ssize_t)n);
        ck_assert_int_eq(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e),
                         6);
        ck_assert_mem_eq(b, "second", 6);
    } else {
        expect_read_io(s);
    }
    negstream_close(c);
    negstream_close(s);
}
END_TEST

/* With EncryptAndSign the plaintext never appears on the wire; with Sign
 * it does (signed, not sealed), and None passes it through raw. */
START_TEST(test_wire_confidentiality)
{
    static const char secret[] = "attack at dawn, bring the cake";
    uint8_t wire[512];
    negstream *c, *s;
    ssize_t n;

    TU_NEEDS_NTLM(levels[_i] == NEGSTREAM_PROTECTION_NONE);
    tu_pair(levels[_i], &c, &s);
    tu_write_all(c, secret, sizeof(secret) - 1);
    if (levels[_i] == NEGSTREAM_PROTECTION_NONE) {
        n = recv(tu_fds[1], wire, sizeof(secret) - 1, MSG_WAITALL);
    } else {
        n = (ssize_t)grab_frame(wire, sizeof(wire));
    }
    ck_assert_int_gt(n, 0);
    if (levels[_i] == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN)
        ck_assert_ptr_null(memmem(wire, (size_t)n, secret,
                                  sizeof(secret) - 1));
    else
        ck_assert_ptr_nonnull(memmem(wire, (size_t)n, secret,
                                     sizeof(secret) - 1));
    negstream_close(c);
    negstream_close(s);
}
END_TEST

static Suite *wire_suite(void)
{
    Suite *s = suite_create("stream_wire");
    int nlevels = (int)(sizeof(levels) / sizeof(levels[0]));
    TCase *t;

    t = tcase_create("frames");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_bad_frames);
    tcase_add_loop_test(t, test_tampered_replayed_reordered, 0, 6);
    tcase_add_loop_test(t, test_rrc_changed, 0, 4);
    suite_add_tcase(s, t);

    t = tcase_create("confidentiality");
    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, test_wire_confidentiality, 0, nlevels);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(wire_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
