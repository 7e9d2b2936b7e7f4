/*
 * tlsutil.h - OpenSSL helpers of the tests: a self-signed certificate
 * made in memory or loaded from PEM files, and a client and a server SSL
 * object that have completed a TLS handshake with each other over a BIO
 * pair (no sockets, one thread).  Only in a build with OpenSSL.
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

/* Hex of n bytes into a static buffer of the calling thread. */
const char *tt_hex(const unsigned char *p, size_t n);

#endif
