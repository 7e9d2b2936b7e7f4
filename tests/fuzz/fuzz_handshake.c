/*
 * fuzz_handshake.c - libFuzzer target: the handshake loops
 * (handshake.c: reading and checking each [MS-NNS] handshake message,
 * error messages, done/in-progress logic, EOF) with GSSAPI behind them,
 * fed by a fake peer.
 *
 * Byte 0 of the input says which side of ours runs (bit 0: the client,
 * or the server) and at which level (bit 1: Sign or EncryptAndSign); the
 * rest is everything the fake peer sends, before it shuts its side down.
 * Our side uses Kerberos (the client's service ticket comes from the
 * realm's ccache, the server's key from its keytab), so it must run
 * under tests/kdc/with-realm.
 *
 * Promises checked (a broken one aborts): the authentication fails --
 * nobody without the keys can complete a Kerberos handshake with mutual
 * authentication -- with AUTHENTICATION, INVALID_CREDENTIAL or IO and a
 * message; the stream is then not authenticated and a data call repeats
 * the failure; nothing hangs (the peer's bytes are all there, then EOF).
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "negstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "fuzz_handshake: %s:%d: broken promise: %s\n",\
                    __FILE__, __LINE__, #cond);                           \
            abort();                                                      \
        }                                                                 \
    } while (0)

static const char *spn;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    spn = getenv("NEGTEST_SPN");
    if (spn == NULL) {
        fprintf(stderr, "fuzz_handshake: NEGTEST_SPN is not set; run it "
                "under tests/kdc/with-realm\n");
        exit(2);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool server;
    negstream_protection level;
    negstream_error e, e2;
    negstream *s;
    size_t off;
    int fds[2], rc, sz = 1 << 20;
    char b[4];

    if (size < 1)
        return 0;
    server = (data[0] & 1) != 0;
    level = (data[0] & 2) ? NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
                          : NEGSTREAM_PROTECTION_SIGN;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    /* Room for all the peer says, and for what our side says back (it is
     * never read), so that neither side waits. */
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    for (off = 1; off < size;) {
        ssize_t w = send(fds[0], data + off, size - off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;              /* the rest is cut, as by a closed peer */
        off += (size_t)w;
    }
    shutdown(fds[0], SHUT_WR);

    s = negstream_new(fds[1], false, &e);
    CHECK(s != NULL);
    if (server) {
        negstream_server_options so;

        negstream_server_options_init(&so);
        so.protection = level;
        so.mechanism = "kerberos";
        rc = negstream_authenticate_as_server(s, &so, &e);
    } else {
        negstream_client_options co;

        negstream_client_options_init(&co);
        co.target_name = spn;
        co.protection = level;
        co.mechanism = "kerberos";
        rc = negstream_authenticate_as_client(s, &co, &e);
    }
    CHECK(rc == -1);
    CHECK(e.code == NEGSTREAM_E_AUTHENTICATION ||
          e.code == NEGSTREAM_E_INVALID_CREDENTIAL ||
          e.code == NEGSTREAM_E_IO);
    CHECK(e.message[0] != '\0');
    CHECK(!negstream_is_authenticated(s));
    CHECK(negstream_write(s, "x", 1, 0, 1, &e2) == -1);
    CHECK(e2.code == e.code);
    CHECK(negstream_read(s, b, sizeof(b), 0, sizeof(b), &e2) == -1);
    CHECK(e2.code == e.code);
    negstream_close(s);
    close(fds[0]);
    return 0;
}
