/*
 * check_gss_wire.c - the [MS-NNS] handshake (src/handshake.c) on the wire:
 * a raw peer written here reads the exact bytes our client sends, relays
 * a real exchange message by message (changing the version bytes, or the
 * message that carries the server's final token), and feeds our client
 * and server garbage, EOF and silence: each fails with the right code and
 * message, says so to the peer where [MS-NNS] wants it, and sends nothing
 * more.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gss.h"
#include "gssutil.h"
#include "testutil.h"

/* ---- the raw peer ------------------------------------------------------- */

static void raw_write(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;

    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

        ck_assert_msg(w > 0, "raw send: %s", strerror(errno));
        b += w;
        n -= (size_t)w;
    }
}

/* Reads n bytes; returns how many came before EOF. */
static size_t raw_read(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    size_t got = 0;

    while (got < n) {
        ssize_t r = recv(fd, b + got, n - got, 0);

        if (r == 0)
            break;
        ck_assert_msg(r > 0, "raw recv: %s", strerror(errno));
        got += (size_t)r;
    }
    return got;
}

static void raw_send_msg(int fd, uint8_t id, const void *p, size_t n)
{
    uint8_t hdr[5] = { id, 1, 0, (uint8_t)(n >> 8), (uint8_t)n };

    raw_write(fd, hdr, 5);
    if (n > 0)
        raw_write(fd, p, n);
}

/* Reads one message; returns its payload size (payload in buf), or -1 at
 * EOF before a header. */
static int raw_recv_msg(int fd, uint8_t hdr[5], uint8_t *buf)
{
    size_t n;

    if (raw_read(fd, hdr, 5) < 5)
        return -1;
    n = (size_t)hdr[3] << 8 | hdr[4];
    ck_assert_uint_eq(raw_read(fd, buf, n), n);
    return (int)n;
}

static bool raw_at_eof(int fd)
{
    uint8_t b;

    return recv(fd, &b, 1, 0) == 0;
}

/* Our side on its thread against the raw end fds[1]. */
static void start_against_raw(gu_side *x, int fds[2], bool tcp)
{
    gu_make_pair(fds, tcp);
    x->fd = fds[0];
    gu_side_start(x);
}

/* The exact first bytes of a client: 16 01 00 then the BE length. */
START_TEST(client_first_message_bytes)
{
    static const char *mechs[] = { NULL, "kerberos", "ntlm" };
    size_t i;

    for (i = 0; i < 3; i++) {
        gu_side c;
        int fds[2], n;
        uint8_t hdr[5], *buf = malloc(65536);

        ck_assert(buf != NULL);
        if (tu_skip_without_ntlm(__func__, (int)i, i == 2)) {
            free(buf);
            continue;
        }
        if (mechs[i] != NULL && strcmp(mechs[i], "ntlm") == 0)
            gu_client_ntlm(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
        else
            gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
        c.co.mechanism = mechs[i];
        start_against_raw(&c, fds, i == 1);
        n = raw_recv_msg(fds[1], hdr, buf);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(hdr[0], 0x16);
        ck_assert_int_eq(hdr[1], 0x01);
        ck_assert_int_eq(hdr[2], 0x00);
        ck_assert_int_eq((hdr[3] << 8) | hdr[4], n);
        if (i == 0)         /* GSS InitialContextToken with the SPNEGO OID */
            ck_assert(buf[0] == 0x60 &&
                      memmem(buf, 20, "\x06\x06\x2b\x06\x01\x05\x05\x02",
                             8) != NULL);
        else if (i == 1)    /* ... with the krb5 OID */
            ck_assert(buf[0] == 0x60 &&
                      memmem(buf, 20, "\x06\x09\x2a\x86\x48\x86\xf7\x12",
                             8) != NULL);
        else                /* raw NTLMSSP NEGOTIATE */
            ck_assert(memcmp(buf, "NTLMSSP\0\x01\0\0\0", 12) == 0);
        /* now go away: the client reports EOF during authentication */
        shutdown(fds[1], SHUT_RDWR);
        gu_side_join(&c);
        gu_expect_code(&c, NEGSTREAM_E_AUTHENTICATION,
                       "connection closed during authentication");
        gu_side_done(&c);
        close(fds[1]);
        free(buf);
    }
}
END_TEST

/* What a server does with garbage from a client. */
typedef enum {
    G_EOF, G_PARTIAL_HEADER, G_UNKNOWN_ID, G_TRUNCATED, G_BAD_TOKEN,
    G_EMPTY_TOKEN, G_ERROR_SHORT, G_ERROR_LOGON, G_ERROR_1790_LE,
    G_ERROR_OTHER
} garbage;

static void server_gets(garbage what, negstream_status code,
                        const char *needle, bool expect_error_msg)
{
    gu_side s;
    int fds[2];
    uint8_t junk[100], hdr[5], buf[64];

    memset(junk, 0x41, sizeof(junk));
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    start_against_raw(&s, fds, what % 2 == 0);
    switch (what) {
    case G_EOF:
        break;
    case G_PARTIAL_HEADER:
        raw_write(fds[1], "\x16\x01", 2);
        break;
    case G_UNKNOWN_ID:
        raw_send_msg(fds[1], 0x17, junk, 10);
        break;
    case G_TRUNCATED:
        raw_write(fds[1], "\x16\x01\x00\x00\x64", 5);
        raw_write(fds[1], junk, 10);
        break;
    case G_BAD_TOKEN:
        raw_send_msg(fds[1], 0x16, junk, sizeof(junk));
        break;
    case G_EMPTY_TOKEN:
        raw_send_msg(fds[1], 0x16, NULL, 0);
        break;
    case G_ERROR_SHORT:
        raw_send_msg(fds[1], 0x15, "\x00\x01", 2);
        break;
    case G_ERROR_LOGON:
        raw_send_msg(fds[1], 0x15, "\0\0\0\0\x80\x09\x03\x0c", 8);
        break;
    case G_ERROR_1790_LE:
        raw_send_msg(fds[1], 0x15, "\xfe\x06\0\0\0\0\0\0", 8);
        break;
    case G_ERROR_OTHER:
        raw_send_msg(fds[1], 0x15, "\0\0\0\0\x80\x00\x40\x05", 8);
        break;
    }
    if (what == G_EMPTY_TOKEN) {
        /* MIT's SPNEGO acceptor answers an empty token with its own
         * NegTokenInit2 (the mechanisms it offers), in progress */
        uint8_t *tok = malloc(65536);

        ck_assert(tok != NULL);
        ck_assert_int_gt(raw_recv_msg(fds[1], hdr, tok), 0);
        ck_assert_int_eq(hdr[0], 0x16);
        ck_assert(tok[0] == 0x60 &&
                  memmem(tok, 20, "\x06\x06\x2b\x06\x01\x05\x05\x02",
                         8) != NULL);
        free(tok);
        shutdown(fds[1], SHUT_WR);
    } else if (!expect_error_msg)
        shutdown(fds[1], SHUT_WR);
    else {
        /* the server tells us before failing: 15 01 00 00 08 + code */
        ck_assert_int_eq(raw_recv_msg(fds[1], hdr, buf), 8);
        ck_assert_int_eq(hdr[0], 0x15);
        /* 0x80090304, little-endian then big-endian */
        ck_assert(memcmp(buf, "\x04\x03\x09\x80\x80\x09\x03\x04", 8) == 0);
    }
    gu_side_join(&s);
    gu_expect_code(&s, code, needle);
    /* and sends nothing (more) */
    shutdown(s.fd, SHUT_WR);
    ck_assert(raw_at_eof(fds[1]));
    gu_side_done(&s);
    close(fds[1]);
}

START_TEST(server_garbage)
{
    server_gets(G_EOF, NEGSTREAM_E_AUTHENTICATION,
                "connection closed during authentication", false);
    server_gets(G_PARTIAL_HEADER, NEGSTREAM_E_IO, "header (2 of 5", false);
    server_gets(G_UNKNOWN_ID, NEGSTREAM_E_AUTHENTICATION,
                "unknown handshake message id 0x17", false);
    server_gets(G_TRUNCATED, NEGSTREAM_E_IO, "(10 of 100", false);
    server_gets(G_BAD_TOKEN, NEGSTREAM_E_AUTHENTICATION, "accepting", true);
    server_gets(G_EMPTY_TOKEN, NEGSTREAM_E_AUTHENTICATION,
                "connection closed during authentication", false);
    server_gets(G_ERROR_SHORT, NEGSTREAM_E_AUTHENTICATION, "2 bytes", false);
    server_gets(G_ERROR_LOGON, NEGSTREAM_E_INVALID_CREDENTIAL,
                "rejected the credentials", false);
    server_gets(G_ERROR_1790_LE, NEGSTREAM_E_AUTHENTICATION,
                "expectations were not met", false);
    server_gets(G_ERROR_OTHER, NEGSTREAM_E_AUTHENTICATION, "0x80004005",
                false);
}
END_TEST

/* What a client does with garbage from a server, after its first
 * message. */
static void client_gets(garbage what, negstream_status code,
                        const char *needle, bool expect_error_msg)
{
    gu_side c;
    int fds[2], n;
    uint8_t junk[100], hdr[5], *buf = malloc(65536);

    ck_assert(buf != NULL);
    memset(junk, 0x41, sizeof(junk));
    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    c.co.mechanism = "kerberos";
    start_against_raw(&c, fds, what % 2 == 1);
    n = raw_recv_msg(fds[1], hdr, buf);
    ck_assert_int_gt(n, 0);
    switch (what) {
    case G_EOF:
        break;
    case G_PARTIAL_HEADER:
        raw_write(fds[1], "\x14", 1);
        break;
    case G_UNKNOWN_ID:
        raw_send_msg(fds[1], 0x00, junk, 3);
        break;
    case G_TRUNCATED:
        raw_write(fds[1], "\x14\x01\x00\x01\x00", 5);
        raw_write(fds[1], junk, 99);
        break;
    case G_BAD_TOKEN:
        raw_send_msg(fds[1], 0x14, junk, sizeof(junk));
        break;
    case G_EMPTY_TOKEN:
        /* an empty done before the context is complete: fed to GSS as a
         * token, which cannot complete krb5's mutual authentication */
        raw_send_msg(fds[1], 0x14, NULL, 0);
        break;
    case G_ERROR_SHORT:
        raw_send_msg(fds[1], 0x15, "\x00", 1);
        break;
    case G_ERROR_LOGON:
        raw_send_msg(fds[1], 0x15, "\0\0\0\0\x80\x09\x03\x0c", 8);
        break;
    case G_ERROR_1790_LE:
        raw_send_msg(fds[1], 0x15, "\xfe\x06\0\0\0\0\0\0", 8);
        break;
    case G_ERROR_OTHER:
        raw_send_msg(fds[1], 0x15, "\0\0\0\0\0\0\0\x14", 8);
        break;
    }
    if (!expect_error_msg)
        shutdown(fds[1], SHUT_WR);
    else {
        ck_assert_int_eq(raw_recv_msg(fds[1], hdr, buf), 8);
        ck_assert_int_eq(hdr[0], 0x15);
        /* 0x80090304, little-endian then big-endian */
        ck_assert(memcmp(buf, "\x04\x03\x09\x80\x80\x09\x03\x04", 8) == 0);
    }
    gu_side_join(&c);
    gu_expect_code(&c, code, needle);
    shutdown(c.fd, SHUT_WR);
    ck_assert(raw_at_eof(fds[1]));
    gu_side_done(&c);
    close(fds[1]);
    free(buf);
}

START_TEST(client_garbage)
{
    client_gets(G_EOF, NEGSTREAM_E_AUTHENTICATION,
                "connection closed during authentication", false);
    client_gets(G_PARTIAL_HEADER, NEGSTREAM_E_IO, "header (1 of 5", false);
    client_gets(G_UNKNOWN_ID, NEGSTREAM_E_AUTHENTICATION,
                "unknown handshake message id 0x00", false);
    client_gets(G_TRUNCATED, NEGSTREAM_E_IO, "(99 of 256", false);
    client_gets(G_BAD_TOKEN, NEGSTREAM_E_AUTHENTICATION,
                "processing the server's token", true);
    client_gets(G_EMPTY_TOKEN, NEGSTREAM_E_AUTHENTICATION, NULL, true);
    client_gets(G_ERROR_SHORT, NEGSTREAM_E_AUTHENTICATION, "1 bytes", false);
    client_gets(G_ERROR_LOGON, NEGSTREAM_E_INVALID_CREDENTIAL,
                "rejected the credentials", false);
    client_gets(G_ERROR_1790_LE, NEGSTREAM_E_AUTHENTICATION,
                "expectations were not met", false);
    client_gets(G_ERROR_OTHER, NEGSTREAM_E_AUTHENTICATION, "0x00000014",
                false);
}
END_TEST

/*
 * A relay between a real client and a real server that changes one
 * message: the server's final token (sent in done) is passed on in an
 * in-progress message, followed by an empty done.  The client completes
 * ON that token, so it is not an in-progress after completion; it then
 * waits for the done.  The .NET Core 2.0 client accepts this too.
 */
START_TEST(client_final_token_in_progress_then_done)
{
    gu_side c, s;
    int cf[2], sf[2], n;
    uint8_t hdr[5], *buf = malloc(65536);

    ck_assert(buf != NULL);
    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    start_against_raw(&c, cf, false);
    start_against_raw(&s, sf, false);
    /* client -> server: the first token */
    n = raw_recv_msg(cf[1], hdr, buf);
    ck_assert_int_gt(n, 0);
    raw_send_msg(sf[1], hdr[0], buf, (size_t)n);
    /* server -> client: done with the final token (Kerberos: one trip) */
    n = raw_recv_msg(sf[1], hdr, buf);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(hdr[0], 0x14);
    gu_side_join(&s);
    ck_assert_msg(s.rc == 0, "%s", s.err.message);
    raw_send_msg(cf[1], 0x16, buf, (size_t)n);
    raw_send_msg(cf[1], 0x14, NULL, 0);
    gu_side_join(&c);
    ck_assert_msg(c.rc == 0, "%s", c.err.message);
    gu_roundtrips(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
    close(cf[1]);
    close(sf[1]);
    free(buf);
}
END_TEST

/* ... and an in-progress AFTER the client completed is a protocol error;
 * nothing is sent back. */
START_TEST(client_in_progress_after_complete)
{
    gu_side c, s;
    int cf[2], sf[2], n;
    uint8_t hdr[5], *buf = malloc(65536);

    ck_assert(buf != NULL);
    gu_client_default(&c, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    start_against_raw(&c, cf, true);
    start_against_raw(&s, sf, false);
    n = raw_recv_msg(cf[1], hdr, buf);
    raw_send_msg(sf[1], hdr[0], buf, (size_t)n);
    n = raw_recv_msg(sf[1], hdr, buf);
    gu_side_join(&s);
    raw_send_msg(cf[1], 0x16, buf, (size_t)n);
    raw_send_msg(cf[1], 0x16, "x", 1);
    gu_side_join(&c);
    gu_expect_code(&c, NEGSTREAM_E_AUTHENTICATION,
                   "in-progress message after");
    shutdown(c.fd, SHUT_WR);
    ck_assert(raw_at_eof(cf[1]));
    gu_side_done(&c);
    gu_side_done(&s);
    close(cf[1]);
    close(sf[1]);
    free(buf);
}
END_TEST

/* The version bytes are ignored on receive (MS-NNS, .NET). */
START_TEST(version_bytes_ignored)
{
    gu_side c, s;
    int cf[2], sf[2], n;
    uint8_t hdr[5], *buf = malloc(65536);

    ck_assert(buf != NULL);
    gu_client_default(&c, NEGSTREAM_PROTECTION_SIGN);
    gu_server_default(&s, NEGSTREAM_PROTECTION_SIGN);
    start_against_raw(&c, cf, false);
    start_against_raw(&s, sf, true);
    n = raw_recv_msg(cf[1], hdr, buf);
    hdr[1] = 7;
    hdr[2] = 9;
    raw_write(sf[1], hdr, 5);
    raw_write(sf[1], buf, (size_t)n);
    n = raw_recv_msg(sf[1], hdr, buf);
    hdr[1] = 2;
    hdr[2] = 5;
    raw_write(cf[1], hdr, 5);
    raw_write(cf[1], buf, (size_t)n);
    gu_side_join(&c);
    gu_side_join(&s);
    gu_expect_ok(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
    close(cf[1]);
    close(sf[1]);
    free(buf);
}
END_TEST

/* The full NTLM exchange, relayed: C in-progress(NEGOTIATE),
 * S in-progress(CHALLENGE), C done(AUTHENTICATE), S done(empty), as
 * negstream(7) (INTEROPERABILITY) traces raw NTLMSSP. */
START_TEST(ntlm_message_sequence)
{
    gu_side c, s;
    int cf[2], sf[2], n;
    uint8_t hdr[5], *buf = malloc(65536);
    static const uint8_t ids[4] = { 0x16, 0x16, 0x14, 0x14 };
    int i;

    if (tu_skip_without_ntlm(__func__, _i, true)) {
        free(buf);
        return;
    }
    ck_assert(buf != NULL);
    gu_client_ntlm(&c, NEGSTREAM_PROTECTION_NONE);
    gu_server_default(&s, NEGSTREAM_PROTECTION_NONE);
    start_against_raw(&c, cf, false);
    start_against_raw(&s, sf, false);
    for (i = 0; i < 4; i++) {
        int from = i % 2 == 0 ? cf[1] : sf[1];
        int to = i % 2 == 0 ? sf[1] : cf[1];

        n = raw_recv_msg(from, hdr, buf);
        ck_assert_int_eq(hdr[0], ids[i]);
        if (i == 3)
            ck_assert_int_eq(n, 0);
        else
            ck_assert_int_gt(n, 0);
        raw_send_msg(to, hdr[0], buf, (size_t)n);
    }
    gu_side_join(&c);
    gu_side_join(&s);
    gu_expect_ok(&c, &s);
    gu_side_done(&c);
    gu_side_done(&s);
    close(cf[1]);
    close(sf[1]);
    free(buf);
}
END_TEST

/* A silent peer and a timeout: the handshake gives up. */
START_TEST(handshake_timeout)
{
    gu_side s;
    int fds[2];

    gu_server_default(&s, NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN);
    s.timeout_ms = 200;
    start_against_raw(&s, fds, false);
    gu_side_join(&s);
    ck_assert_int_eq(s.rc, -1);
    ck_assert_int_eq(s.err.code, NEGSTREAM_E_TIMEOUT);
    gu_side_done(&s);
    close(fds[1]);
}
END_TEST

static Suite *wire_suite(void)
{
    Suite *su = suite_create("gss_wire");
    TCase *tc;

    tc = tcase_create("sequence");
    tcase_add_test(tc, client_first_message_bytes);
    tcase_add_test(tc, client_final_token_in_progress_then_done);
    tcase_add_test(tc, version_bytes_ignored);
    tcase_add_test(tc, ntlm_message_sequence);
    suite_add_tcase(su, tc);

    tc = tcase_create("garbage");
    tcase_add_test(tc, server_garbage);
    tcase_add_test(tc, client_garbage);
    tcase_add_test(tc, client_in_progress_after_complete);
    tcase_add_test(tc, handshake_timeout);
    suite_add_tcase(su, tc);
    return su;
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
