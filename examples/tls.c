/*
 * tls.c - NegotiateStream inside TLS, with Extended Protection.
 *
 * What .NET does with new NegotiateStream(new SslStream(...)), in C: a
 * libnegstream stream over an OpenSSL connection (an SSL *), through a
 * custom transport (negstream_new_io(3)): the library calls SSL_read and
 * SSL_write instead of recv and send, and waits on the socket when
 * OpenSSL says SSL_ERROR_WANT_READ or SSL_ERROR_WANT_WRITE.  That
 * transport is examples/tlsio.c (tlsio_stream), a file of its own that a
 * program can take as it is.
 *
 * The Kerberos authentication inside is bound to the TLS channel (RFC
 * 5929 tls-server-end-point: the hash of the server's certificate).  Both
 * sides compute it from the connection (negstream_channel_binding_from_
 * ssl), and the server requires it (NEGSTREAM_EXTENDED_PROTECTION_
 * ALWAYS).  A man in the middle who terminates TLS with a certificate of
 * his own and passes the Kerberos messages on cannot make them match: his
 * victim's client binds to his certificate, the server to its own.
 *
 * The program runs a server thread on 127.0.0.1 (a certificate made at
 * start, in memory) and two clients:
 *  1. a client that trusts that certificate: TLS, authentication bound to
 *     the channel (the server checks negstream_is_channel_bound), 200 kB
 *     sent, the server's checksum of them read back and compared;
 *  2. a client whose bindings name another certificate (what a relayed
 *     exchange looks like to the server): both sides must refuse it.
 *
 *   usage: tls [TARGET]      (default: $NEGTEST_SPN, else host/localhost)
 * Needs Kerberos credentials for the client (a ccache: kinit) and a keytab
 * with TARGET for the server (KRB5_KTNAME); tests/kdc/with-realm provides
 * both.  Exit status 0 when both connections went as described.
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "negstream.h"
#include "tlsio.h"

#define DATA_LEN (200 * 1024)  /* four frames (64512 bytes) and a bit */

static uint64_t checksum(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;  /* FNV-1a, 64 bits */

    while (n-- > 0) {
        h ^= *p++;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int fail(const char *who, const char *what, const negstream_error *e)
{
    fprintf(stderr, "tls: %s: %s: %s [%s]\n", who, what, e->message,
            negstream_status_name(e->code));
    return 1;
}

static int tls_fail(const char *who, const char *what)
{
    fprintf(stderr, "tls: %s: %s failed:\n", who, what);
    ERR_print_errors_fp(stderr);
    return 1;
}

/* ---- a certificate for localhost, made in memory ------------------------ */

static int make_cert(X509 **cert_out, EVP_PKEY **key_out)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    X509_NAME *name;
    X509_EXTENSION *ext = NULL;
    X509V3_CTX v3;
    int ok = 0;

    if (key == NULL || cert == NULL)
        goto out;
    name = X509_get_subject_name(cert);
    ok = X509_set_version(cert, 2) == 1 &&
         ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) == 1 &&
         X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != NULL &&
         X509_gmtime_adj(X509_getm_notAfter(cert), 86400) != NULL &&
         X509_set_pubkey(cert, key) == 1 &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const unsigned char *)"localhost", -1,
                                    -1, 0) == 1 &&
         X509_set_issuer_name(cert, name) == 1;
    if (ok) {
        X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                                  "DNS:localhost");
        ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1 &&
             X509_sign(cert, key, EVP_sha256()) > 0;
    }
out:
    X509_EXTENSION_free(ext);
    if (!ok) {
        X509_free(cert);
        EVP_PKEY_free(key);
        return tls_fail("setup", "making a certificate");
    }
    *cert_out = cert;
    *key_out = key;
    return 0;
}

/* ---- the server --------------------------------------------------------- */

struct server {
    int       lfd;
    SSL_CTX  *tls;
    int       rc;           /* 0: both connections went as expected */
};

/*
 * One connection: TLS (blocking, before the socket becomes the stream's),
 * then Kerberos bound to this channel.  expect_bound: the client binds
 * to this server's certificate.  Returns 0 when what happened is what was
 * expected.
 */
static int serve_one(struct server *sv, bool expect_bound)
{
    unsigned char cb[NEGSTREAM_CHANNEL_BINDING_MAX];
    unsigned char *data = NULL, reply[8];
    size_t cb_len = sizeof(cb), got = 0;
    negstream_server_options so;
    negstream_error err;
    negstream *s = NULL;
    uint64_t sum;
    SSL *ssl = NULL;
    int fd, rc = 1, i;

    fd = accept(sv->lfd, NULL, NULL);
    if (fd < 0) {
        if (errno == EINVAL)        /* main shut the listener down */
            fprintf(stderr, "tls: server: stopped: a client failed\n");
        else
            perror("tls: server: accept");
        return 1;
    }
    ssl = SSL_new(sv->tls);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
        tls_fail("server", "the TLS handshake");
        SSL_free(ssl);
        close(fd);
        return 1;
    }
    /* The bindings of this channel: the hash of our own certificate. */
    if (negstream_channel_binding_from_ssl(ssl, cb, &cb_len, &err) != 0) {
        SSL_free(ssl);
        close(fd);
        return fail("server", "channel binding", &err);
    }
    s = tlsio_stream(ssl, fd, &err);
    if (s == NULL)
        return fail("server", "negstream_new_io", &err);

    negstream_server_options_init(&so);
    so.extended_protection = NEGSTREAM_EXTENDED_PROTECTION_ALWAYS;
    so.channel_binding = cb;
    so.channel_binding_len = cb_len;
    if (negstream_authenticate_as_server(s, &so, &err) != 0) {
        if (expect_bound) {
            fail("server", "authenticate", &err);
        } else {
            printf("server: refused the relayed client: %s\n", err.message);
            rc = 0;
        }
        goto out;
    }
    if (!expect_bound) {
        fprintf(stderr, "tls: server: accepted a client whose bindings "
                "name another certificate\n");
        goto out;
    }
    printf("server: %s authenticated with %s, channel bound: %s\n",
           negstream_remote_identity(s), negstream_authentication_type(s),
           negstream_is_channel_bound(s) ? "yes" : "no");
    if (!negstream_is_channel_bound(s))
        goto out;

    /* 8 bytes of length, the data, and its checksum back. */
    data = malloc(DATA_LEN);
    if (data == NULL)
        goto out;
    while (got < 8) {
        ssize_t n = negstream_read(s, reply, sizeof(reply), got, 8 - got,
                                   &err);

        if (n <= 0) {
            fail("server", "read", &err);
            goto out;
        }
        got += (size_t)n;
    }
    got = 0;
    for (i = 0; i < 8; i++)
        got = got << 8 | reply[i];
    if (got != DATA_LEN) {
        fprintf(stderr, "tls: server: %zu bytes announced\n", got);
        goto out;
    }
    got = 0;
    while (got < DATA_LEN) {
        ssize_t n = negstream_read(s, data, DATA_LEN, got, DATA_LEN - got,
                                   &err);

        if (n <= 0) {
            fail("server", n == 0 ? "read (early end)" : "read", &err);
            goto out;
        }
        got += (size_t)n;
    }
    sum = checksum(data, DATA_LEN);
    for (i = 0; i < 8; i++)
        reply[i] = (unsigned char)(sum >> (56 - 8 * i));
    if (negstream_write(s, reply, sizeof(reply), 0, sizeof(reply),
                        &err) < 0) {
        fail("server", "write", &err);
        goto out;
    }
    printf("server: received %zu bytes inside TLS\n", got);
    rc = 0;
out:
    negstream_close(s);     /* close_notify, then SSL_free and close */
    free(data);
    return rc;
}

static void *server_main(void *arg)
{
    struct server *sv = arg;

    sv->rc = serve_one(sv, true) | serve_one(sv, false);
    return NULL;
}

/* ---- the client --------------------------------------------------------- */

/*
 * A client of 127.0.0.1:port that trusts trusted (the server's
 * certificate) for "localhost" and binds its authentication to bind_cert
 * (NULL: to the certificate the connection shows, as a real client does;
 * else the authentication must be refused, and is the expected outcome).
 * Returns 0 when what happened is what was expected.
 */
static int run_client(uint16_t port, const char *target, SSL_CTX *tls,
                      X509 *bind_cert)
{
    unsigned char cb[NEGSTREAM_CHANNEL_BINDING_MAX], hdr[8], *data = NULL;
    size_t cb_len = sizeof(cb), i;
    negstream_client_options co;
    struct sockaddr_in sin;
    negstream_error err;
    negstream *s = NULL;
    uint64_t sum, theirs = 0;
    SSL *ssl = NULL;
    int fd, rc = 1;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        perror("tls: client: connect");
        if (fd >= 0)
            close(fd);
        return 1;
    }
    ssl = SSL_new(tls);
    if (ssl == NULL || SSL_set1_host(ssl, "localhost") != 1 ||
        SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1) {
        tls_fail("client", "the TLS handshake (certificate checked)");
        SSL_free(ssl);
        close(fd);
        return 1;
    }
    if (bind_cert == NULL) {
        rc = negstream_channel_binding_from_ssl(ssl, cb, &cb_len, &err);
    } else {
        unsigned char *der = NULL;
        int der_len = i2d_X509(bind_cert, &der);

        rc = der_len <= 0 ? -1 :
             negstream_channel_binding_from_cert(der, (size_t)der_len, cb,
                                                 &cb_len, &err);
        if (der_len <= 0)
            snprintf(err.message, sizeof(err.message), "i2d_X509 failed");
        OPENSSL_free(der);
    }
    if (rc != 0) {
        SSL_free(ssl);
        close(fd);
        return fail("client", "channel binding", &err);
    }
    rc = 1;
    s = tlsio_stream(ssl, fd, &err);
    if (s == NULL)
        return fail("client", "negstream_new_io", &err);

    negstream_client_options_init(&co);
    co.target_name = target;
    co.mechanism = "kerberos";
    co.require_mutual_auth = true;
    co.channel_binding = cb;
    co.channel_binding_len = cb_len;
    if (negstream_authenticate_as_client(s, &co, &err) != 0) {
        if (bind_cert != NULL) {
            printf("client (relayed): refused, as it must be: %s\n",
                   err.message);
            rc = 0;
        } else {
            fail("client", "authenticate", &err);
        }
        goto out;
    }
    if (bind_cert != NULL) {
        fprintf(stderr, "tls: client: authenticated with bindings of "
                "another certificate\n");
        goto out;
    }
    printf("client: authenticated to %s inside TLS, encrypted: %s\n",
           negstream_remote_identity(s),
           negstream_is_encrypted(s) ? "yes" : "no");

    data = malloc(DATA_LEN);
    if (data == NULL)
        goto out;
    for (i = 0; i < DATA_LEN; i++)
        data[i] = (unsigned char)(i * 7 + i / 251);
    for (i = 0; i < 8; i++)
        hdr[i] = (unsigned char)((uint64_t)DATA_LEN >> (56 - 8 * i));
    if (negstream_write(s, hdr, 8, 0, 8, &err) < 0 ||
        negstream_write(s, data, DATA_LEN, 0, DATA_LEN, &err) < 0) {
        fail("client", "write", &err);
        goto out;
    }
    for (i = 0; i < 8;) {
        ssize_t n = negstream_read(s, hdr, 8, i, 8 - i, &err);

        if (n <= 0) {
            fail("client", n == 0 ? "read (early end)" : "read", &err);
            goto out;
        }
        i += (size_t)n;
    }
    for (i = 0; i < 8; i++)
        theirs = theirs << 8 | hdr[i];
    sum = checksum(data, DATA_LEN);
    printf("client: sent %d bytes, checksum %016llx, the server's "
           "%016llx\n", DATA_LEN, (unsigned long long)sum,
           (unsigned long long)theirs);
    rc = sum == theirs ? 0 : 1;
out:
    negstream_close(s);
    free(data);
    return rc;
}

int main(int argc, char **argv)
{
    const char *target = argc > 1 ? argv[1] : getenv("NEGTEST_SPN");
    X509 *cert = NULL, *other = NULL;
    EVP_PKEY *key = NULL, *other_key = NULL;
    SSL_CTX *ctls = NULL;
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    struct server sv;
    pthread_t th;
    int rc = 1, crc;

    if (target == NULL)
        target = "host/localhost";
    /* A closed peer shows as an error code, not as a signal (the library
     * guards its own calls; this covers the TLS handshakes here). */
    signal(SIGPIPE, SIG_IGN);
    memset(&sv, 0, sizeof(sv));
    sv.lfd = -1;
    if (make_cert(&cert, &key) != 0 || make_cert(&other, &other_key) != 0)
        goto out;

    /* The server's TLS: our certificate.  The client's: trust it (and
     * nothing else) for the name localhost. */
    sv.tls = SSL_CTX_new(TLS_server_method());
    ctls = SSL_CTX_new(TLS_client_method());
    if (sv.tls == NULL || ctls == NULL ||
        SSL_CTX_use_certificate(sv.tls, cert) != 1 ||
        SSL_CTX_use_PrivateKey(sv.tls, key) != 1 ||
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctls), cert) != 1) {
        tls_fail("setup", "the TLS contexts");
        goto out;
    }
    SSL_CTX_set_verify(ctls, SSL_VERIFY_PEER, NULL);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);   /* port 0: any free */
    sv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (sv.lfd < 0 || bind(sv.lfd, (struct sockaddr *)&sin, len) != 0 ||
        listen(sv.lfd, 2) != 0 ||
        getsockname(sv.lfd, (struct sockaddr *)&sin, &len) != 0) {
        perror("tls: listen");
        goto out;
    }
    if (pthread_create(&th, NULL, server_main, &sv) != 0) {
        perror("tls: pthread_create");
        goto out;
    }
    crc = run_client(ntohs(sin.sin_port), target, ctls, NULL);
    if (crc == 0)
        crc = run_client(ntohs(sin.sin_port), target, ctls, other);
    if (crc != 0)
        shutdown(sv.lfd, SHUT_RDWR);   /* Linux: wakes a pending accept */
    pthread_join(th, NULL);
    if (crc != 0 || sv.rc != 0)
        goto out;
    printf("tls: OK\n");
    rc = 0;
out:
    if (sv.lfd >= 0)
        close(sv.lfd);
    SSL_CTX_free(sv.tls);
    SSL_CTX_free(ctls);
    X509_free(cert);
    X509_free(other);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other_key);
    return rc;
}
