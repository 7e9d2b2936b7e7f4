/*
 * tlsutil.c - OpenSSL helpers of the tests (see tlsutil.h).
 */
#include "config.h"

#if HAVE_OPENSSL

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "testutil.h"
#include "tlsutil.h"

static const char *ssl_error_text(void)
{
    static __thread char buf[256];
    unsigned long e = ERR_get_error();

    if (e == 0)
        return "no OpenSSL error queued";
    ERR_error_string_n(e, buf, sizeof(buf));
    return buf;
}

void tt_make_cert(const char *cn, X509 **cert, EVP_PKEY **key)
{
    static long serial = 1;
    X509_NAME *name;
    X509 *x;
    EVP_PKEY *k;

    k = EVP_EC_gen("P-256");
    ck_assert_msg(k != NULL, "EVP_EC_gen: %s", ssl_error_text());
    x = X509_new();
    ck_assert_ptr_nonnull(x);
    ck_assert(X509_set_version(x, X509_VERSION_3));
    ck_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++));
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x), -60));
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    ck_assert(X509_set_pubkey(x, k));
    name = X509_get_subject_name(x);
    ck_assert(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                         (const unsigned char *)cn, -1, -1,
                                         0));
    ck_assert(X509_set_issuer_name(x, name));
    ck_assert_msg(X509_sign(x, k, EVP_sha256()) > 0, "X509_sign: %s",
                  ssl_error_text());
    *cert = x;
    *key = k;
}

void tt_load_pem(const char *cert_path, const char *key_path, X509 **cert,
                 EVP_PKEY **key)
{
    FILE *f;

    f = fopen(cert_path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", cert_path);
    *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert_msg(*cert != NULL, "%s: %s", cert_path, ssl_error_text());
    f = fopen(key_path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", key_path);
    *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert_msg(*key != NULL, "%s: %s", key_path, ssl_error_text());
}

static SSL *new_ssl(bool server, X509 *cert, EVP_PKEY *key, int seclevel)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() :
                               TLS_client_method());
    SSL *ssl;

    ck_assert_msg(ctx != NULL, "SSL_CTX_new: %s", ssl_error_text());
    SSL_CTX_set_security_level(ctx, seclevel);
    if (server) {
        ck_assert_msg(SSL_CTX_use_certificate(ctx, cert) == 1,
                      "SSL_CTX_use_certificate: %s", ssl_error_text());
        ck_assert_msg(SSL_CTX_use_PrivateKey(ctx, key) == 1,
                      "SSL_CTX_use_PrivateKey: %s", ssl_error_text());
    }
    /* The tests look at the certificate, they do not trust it. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    ssl = SSL_new(ctx);
    ck_assert_ptr_nonnull(ssl);
    SSL_CTX_free(ctx);          /* the SSL holds its own reference */
    return ssl;
}

void tt_pair_new(X509 *cert, EVP_PKEY *key, int seclevel, SSL **client,
                 SSL **server)
{
    BIO *cb = NULL, *sb = NULL;

    *client = new_ssl(false, NULL, NULL, seclevel);
    *server = new_ssl(true, cert, key, seclevel);
    ck_assert(BIO_new_bio_pair(&cb, 0, &sb, 0) == 1);
    SSL_set_bio(*client, cb, cb);
    SSL_set_bio(*server, sb, sb);
    SSL_set_connect_state(*client);
    SSL_set_accept_state(*server);
}

/* One step of one side's TLS handshake, unless it has finished (*rc 1):
 * it may finish or want to read, nothing else. */
static void handshake_step(SSL *ssl, int *rc, const char *who)
{
    if (*rc == 1)
        return;
    *rc = SSL_do_handshake(ssl);
    ck_assert_msg(*rc == 1 || SSL_get_error(ssl, *rc) == SSL_ERROR_WANT_READ,
                  "%s handshake: %s", who, ssl_error_text());
}

/* Each side runs until it needs the other; a few rounds finish TLS 1.3. */
void tt_pair(X509 *cert, EVP_PKEY *key, int seclevel, SSL **client,
             SSL **server)
{
    int round, c = 0, s = 0;

    tt_pair_new(cert, key, seclevel, client, server);
    for (round = 0; round < 20 && (c != 1 || s != 1); round++) {
        handshake_step(*client, &c, "client");
        handshake_step(*server, &s, "server");
    }
    ck_assert_msg(c == 1 && s == 1, "TLS handshake did not finish");
}

void tt_pair_free(SSL *client, SSL *server)
{
    SSL_free(client);
    SSL_free(server);
}

void tt_tcp_pair(X509 *cert, EVP_PKEY *key, SSL **client, SSL **server,
                 int fds[2])
{
    int round, c = 0, s = 0;

    tu_tcp_pair(fds);
    ck_assert_int_eq(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    ck_assert_int_eq(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
    *client = new_ssl(false, NULL, NULL, 1);
    *server = new_ssl(true, cert, key, 1);
    ck_assert(SSL_set_fd(*client, fds[0]) == 1);
    ck_assert(SSL_set_fd(*server, fds[1]) == 1);
    SSL_set_connect_state(*client);
    SSL_set_accept_state(*server);
    /* Each side goes as far as it can; poll when neither can. */
    for (round = 0; round < 2000 && (c != 1 || s != 1); round++) {
        struct pollfd pfd[2];

        handshake_step(*client, &c, "client");
        handshake_step(*server, &s, "server");
        pfd[0].fd = fds[0];
        pfd[1].fd = fds[1];
        pfd[0].events = pfd[1].events = POLLIN;
        if (c != 1 || s != 1)
            poll(pfd, 2, 10);
    }
    ck_assert_msg(c == 1 && s == 1, "TLS handshake over TCP did not finish");
}

/* ---- the relay ---------------------------------------------------------- */

struct tt_relay {
    pthread_t thread;
    SSL      *a, *b;        /* a: faces the client; b: faces the server */
    int       afd, bfd;
    int       stop[2];      /* the test writes a byte to stop the thread */
    bool      done[2];      /* a->b, b->a ended */
};

/* Writes n bytes to 'to', waiting for its socket; false on failure. */
static bool relay_write(SSL *to, int fd, const unsigned char *p, int n)
{
    while (n > 0) {
        int w = SSL_write(to, p, n);
        struct pollfd pfd;

        if (w > 0) {
            p += w;
            n -= w;
            continue;
        }
        pfd.fd = fd;
        switch (SSL_get_error(to, w)) {
        case SSL_ERROR_WANT_WRITE:
            pfd.events = POLLOUT;
            break;
        case SSL_ERROR_WANT_READ:
            pfd.events = POLLIN;
            break;
        default:
            return false;
        }
        poll(&pfd, 1, 100);
    }
    return true;
}

/* Moves what 'from' has to 'to'; false once 'from' has ended. */
static bool relay_pump(SSL *from, SSL *to, int to_fd)
{
    unsigned char buf[16384];

    for (;;) {
        int n = SSL_read(from, buf, sizeof(buf));

        if (n > 0) {
            if (!relay_write(to, to_fd, buf, n))
                return false;
            continue;
        }
        if (SSL_get_error(from, n) == SSL_ERROR_WANT_READ)
            return true;
        /* The end (or an error): pass the end on. */
        SSL_shutdown(to);
        shutdown(to_fd, SHUT_WR);
        return false;
    }
}

static void *relay_main(void *arg)
{
    tt_relay *r = arg;

    while (!r->done[0] || !r->done[1]) {
        struct pollfd pfd[3];

        pfd[0].fd = r->afd;
        pfd[1].fd = r->bfd;
        pfd[2].fd = r->stop[0];
        pfd[0].events = pfd[1].events = pfd[2].events = POLLIN;
        if (r->done[0])
            pfd[0].fd = -1;
        if (r->done[1])
            pfd[1].fd = -1;
        if (poll(pfd, 3, 1000) < 0 && errno != EINTR)
            break;
        if (pfd[2].revents != 0)
            break;
        if (!r->done[0] && !relay_pump(r->a, r->b, r->bfd))
            r->done[0] = true;
        if (!r->done[1] && !relay_pump(r->b, r->a, r->afd))
            r->done[1] = true;
    }
    return NULL;
}

tt_relay *tt_relay_start(X509 *relay_cert, EVP_PKEY *relay_key,
                         X509 *srv_cert, EVP_PKEY *srv_key, SSL **client,
                         int *cfd, SSL **server, int *sfd)
{
    tt_relay *r = calloc(1, sizeof(*r));
    int fa[2], fb[2];

    ck_assert_ptr_nonnull(r);
    tt_tcp_pair(relay_cert, relay_key, client, &r->a, fa);
    tt_tcp_pair(srv_cert, srv_key, &r->b, server, fb);
    *cfd = fa[0];
    r->afd = fa[1];
    r->bfd = fb[0];
    *sfd = fb[1];
    ck_assert_int_eq(pipe(r->stop), 0);
    ck_assert_int_eq(pthread_create(&r->thread, NULL, relay_main, r), 0);
    return r;
}

void tt_relay_stop(tt_relay *r)
{
    char b = 0;

    ck_assert_int_eq(write(r->stop[1], &b, 1), 1);
    pthread_join(r->thread, NULL);
    SSL_free(r->a);
    SSL_free(r->b);
    close(r->afd);
    close(r->bfd);
    close(r->stop[0]);
    close(r->stop[1]);
    free(r);
}

const char *tt_hex(const unsigned char *p, size_t n)
{
    static __thread char buf[2 * 256 + 1];
    size_t i;

    if (n > 256)
        n = 256;
    for (i = 0; i < n; i++)
        snprintf(buf + 2 * i, 3, "%02x", p[i]);
    buf[2 * n] = '\0';
    return buf;
}

#endif /* HAVE_OPENSSL */
