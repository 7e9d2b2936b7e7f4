/*
 * tlsbind.c - channel binding data from TLS, with OpenSSL 3: the
 * tls-server-end-point binding of RFC 5929, "tls-server-end-point:"
 * followed by a hash of the server's certificate, which a client passes
 * as its channel_binding and a server expects.  These are the bytes .NET
 * puts after the 32-byte SEC_CHANNEL_BINDINGS header for
 * ChannelBindingKind.Endpoint.
 *
 * Knows OpenSSL and nothing else of the library: no streams, no GSSAPI.
 * Built without OpenSSL (configure --without-openssl) the functions still
 * exist, check their arguments, and fail with NEGSTREAM_E_NOT_SUPPORTED,
 * so the library's ABI does not depend on how it was built.
 */
#include "config.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "negstream.h"

#if HAVE_OPENSSL
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#endif

#define ENDPOINT_PREFIX "tls-server-end-point:"
#define ENDPOINT_PREFIX_LEN (sizeof(ENDPOINT_PREFIX) - 1)

static int check_out(const void *out, const size_t *out_len,
                     negstream_error *err)
{
    if (out == NULL || out_len == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "%s is NULL",
                           out == NULL ? "out" : "out_len");
        return -1;
    }
    return 0;
}

#if HAVE_OPENSSL

/*
 * RFC 5929 4.1: the hash function of the certificate's signature
 * algorithm, except that MD5 and SHA-1 become SHA-256.  An algorithm with
 * no single hash function (Ed25519, Ed448) has no tls-server-end-point
 * binding "at this time", says the RFC; we refuse it rather than guess
 * what the peer would compute.  RSA-PSS names its hash in its parameters,
 * which X509_get_signature_info reads.
 */
static const EVP_MD *endpoint_md(X509 *cert, negstream_error *err)
{
    int mdnid = NID_undef, pknid = NID_undef;
    uint32_t flags = 0;
    const EVP_MD *md;

    if (!X509_get_signature_info(cert, &mdnid, &pknid, NULL, &flags) ||
        !(flags & X509_SIG_INFO_VALID)) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "cannot tell the certificate's signature "
                           "algorithm (malformed or unknown to OpenSSL)");
        return NULL;
    }
    if (mdnid == NID_md5 || mdnid == NID_sha1)
        return EVP_sha256();
    if (mdnid == NID_undef) {
        negstream__err_set(err, NEGSTREAM_E_NOT_SUPPORTED,
                           "the certificate's signature algorithm (%s) uses "
                           "no single hash function: RFC 5929 defines no "
                           "tls-server-end-point binding for it",
                           OBJ_nid2sn(pknid));
        return NULL;
    }
    md = EVP_get_digestbynid(mdnid);
    if (md == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOT_SUPPORTED,
                           "the certificate's signature hash %s is not "
                           "available in this OpenSSL", OBJ_nid2sn(mdnid));
        return NULL;
    }
    return md;
}

/* "tls-server-end-point:" + hash of the DER certificate, into out. */
static int endpoint_of(X509 *cert, unsigned char *out, size_t *out_len,
                       negstream_error *err)
{
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned int hash_len = 0;
    const EVP_MD *md = endpoint_md(cert, err);
    size_t need;

    if (md == NULL)
        return -1;
    if (!X509_digest(cert, md, hash, &hash_len)) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "could not hash the certificate with %s",
                           EVP_MD_get0_name(md));
        return -1;
    }
    need = ENDPOINT_PREFIX_LEN + hash_len;
    if (*out_len < need) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "out has %zu bytes, the channel binding needs %zu "
                           "(NEGSTREAM_CHANNEL_BINDING_MAX is enough)",
                           *out_len, need);
        *out_len = need;
        return -1;
    }
    memcpy(out, ENDPOINT_PREFIX, ENDPOINT_PREFIX_LEN);
    memcpy(out + ENDPOINT_PREFIX_LEN, hash, hash_len);
    *out_len = need;
    negstream__err_ok(err);
    return 0;
}

int negstream_channel_binding_from_cert(const unsigned char *der,
                                        size_t der_len, unsigned char *out,
                                        size_t *out_len,
                                        negstream_error *err)
{
    const unsigned char *p = der;
    X509 *cert = NULL;
    int rc = -1;

    if (der == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "der is NULL");
        goto out;
    }
    if (check_out(out, out_len, err) < 0)
        goto out;
    if (der_len == 0 || der_len > LONG_MAX) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "der_len %zu is not the length of a certificate",
                           der_len);
        goto out;
    }
    cert = d2i_X509(NULL, &p, (long)der_len);
    if (cert == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "the %zu bytes are not a DER X.509 certificate",
                           der_len);
        goto out;
    }
    if ((size_t)(p - der) != der_len) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "%zu bytes follow the DER certificate (give it "
                           "alone, not a chain)", der_len - (size_t)(p - der));
        goto out;
    }
    rc = endpoint_of(cert, out, out_len, err);
out:
    X509_free(cert);
    return rc;
}

/*
 * tls-server-end-point always hashes the SERVER's certificate: the peer's
 * on a client, the one it presented on a server.  Both exist only once the
 * handshake is done (a resumed session keeps the peer's certificate).
 */
int negstream_channel_binding_from_ssl(const struct ssl_st *ssl,
                                       unsigned char *out, size_t *out_len,
                                       negstream_error *err)
{
    X509 *cert;         /* not ours: owned by the SSL object */

    if (ssl == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "ssl is NULL");
        return -1;
    }
    if (check_out(out, out_len, err) < 0)
        return -1;
    if (!SSL_is_init_finished(ssl)) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "the TLS handshake has not completed: the "
                           "server certificate is not known yet");
        return -1;
    }
    cert = SSL_is_server(ssl) ? SSL_get_certificate(ssl) :
           SSL_get0_peer_certificate(ssl);
    if (cert == NULL) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "this TLS connection has no server certificate "
                           "(a PSK or anonymous cipher suite?): there is "
                           "no tls-server-end-point binding");
        return -1;
    }
    return endpoint_of(cert, out, out_len, err);
}

#else /* !HAVE_OPENSSL */

static int no_openssl(negstream_error *err)
{
    negstream__err_set(err, NEGSTREAM_E_NOT_SUPPORTED,
                       "libnegstream was built without OpenSSL (configure "
                       "--without-openssl): no channel-binding helpers");
    return -1;
}

int negstream_channel_binding_from_cert(const unsigned char *der,
                                        size_t der_len, unsigned char *out,
                                        size_t *out_len,
                                        negstream_error *err)
{
    (void)der_len;
    if (der == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "der is NULL");
        return -1;
    }
    if (check_out(out, out_len, err) < 0)
        return -1;
    return no_openssl(err);
}

int negstream_channel_binding_from_ssl(const struct ssl_st *ssl,
                                       unsigned char *out, size_t *out_len,
                                       negstream_error *err)
{
    if (ssl == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL, "ssl is NULL");
        return -1;
    }
    if (check_out(out, out_len, err) < 0)
        return -1;
    return no_openssl(err);
}

#endif /* HAVE_OPENSSL */
