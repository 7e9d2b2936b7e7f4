/*
 * tlsutil.h - OpenSSL helpers of the tests: a self-signed certificate
 * made in memory or loaded from PEM files, a client and a server SSL
 * object that have completed a TLS handshake with each other over a BIO
 * pair (no sockets, one thread) or over TCP on 127.0.0.1, and a relay (a
 * man in the middle with a certificate of its own).  Only in a build
 * with OpenSSL.
 */
#ifndef NEGSTREAM_TLSUTIL_H
#define NEGSTREAM_TLSUTIL_H

#include <openssl/ssl.h>
#include <openssl/x509.h>

/* A self-signed certificate for CN=cn, an EC P-256 key, signed with
 * SHA-256.  Aborts the test on failure. */
void tt_make_cert(const char *cn, X509 **cert, EVP_PKEY **key);

/* The certificate and key in two PEM files.  Aborts on failure. */
void tt_load_pem(const char *cert_path, const char *key_path, X509 **cert,
                 EVP_PKEY **key);

/* A client and a server that have completed a TLS handshake, the server
 * presenting cert; seclevel is both sides' OpenSSL security level (0 lets
 * a SHA-1 or MD5 signed certificate in).  Aborts on failure. */
void tt_pair(X509 *cert, EVP_PKEY *key, int seclevel, SSL **client,
             SSL **server);

/* A client and server that have not shaken hands yet. */
void tt_pair_new(X509 *cert, EVP_PKEY *key, int seclevel, SSL **client,
                 SSL **server);

void tt_pair_free(SSL *client, SSL *server);

/* A client and a server TLS connection over a new TCP pair on 127.0.0.1
 * (sockets made non-blocking, fds[0] the client's, fds[1] the server's),
 * the server presenting cert, the handshake done in this thread.  Aborts
 * on failure. */
void tt_tcp_pair(X509 *cert, EVP_PKEY *key, SSL **client, SSL **server,
                 int fds[2]);

/*
 * A man in the middle: *client (on cfd) talks TLS to the relay, which
 * presents relay_cert; the relay talks TLS to *server (on sfd), which
 * presents srv_cert; a thread passes every byte through unchanged, both
 * ways, until one side ends its stream or tt_relay_stop.
 */
typedef struct tt_relay tt_relay;
tt_relay *tt_relay_start(X509 *relay_cert, EVP_PKEY *relay_key,
                         X509 *srv_cert, EVP_PKEY *srv_key, SSL **client,
                         int *cfd, SSL **server, int *sfd);
/* Stops the thread and frees the relay's two connections. */
void tt_relay_stop(tt_relay *r);

/* Hex of n bytes into a static buffer of the calling thread. */
const char *tt_hex(const unsigned char *p, size_t n);

#endif
