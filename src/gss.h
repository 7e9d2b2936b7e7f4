/*
 * gss.h - GSSAPI glue: mechanisms, names, credentials, the flags for each
 * protection and impersonation level, one init/accept step, the outcome
 * check, wrap/unwrap, and the peer's identity.  No I/O, no locks: the
 * stream serialises wrap/unwrap on one context with its gss_mu.
 */
#ifndef NEGSTREAM_GSS_H
#define NEGSTREAM_GSS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <gssapi/gssapi.h>
#include "negstream.h"

/* Bytes a wrap token may add to a chunk of plaintext (krb5 adds about 60,
 * NTLM 16); a frame buffer of NEGSTREAM__MAX_CHUNK + this always fits. */
#define NEGSTREAM__WRAP_OVERHEAD_MAX 1024

typedef enum {
    NEGSTREAM__MECH_NEGOTIATE = 0,   /* SPNEGO 1.3.6.1.5.5.2 */
    NEGSTREAM__MECH_KERBEROS,        /* krb5 1.2.840.113554.1.2.2 */
    NEGSTREAM__MECH_NTLM             /* NTLMSSP 1.3.6.1.4.1.311.2.2.10 */
} negstream__mech;

struct negstream__cfx;               /* wrap_cfx.h (OpenSSL builds) */

typedef struct negstream__gss {
    bool            is_server;
    negstream__mech mech;            /* requested package */
    gss_ctx_id_t    ctx;
    gss_cred_id_t   cred;            /* GSS_C_NO_CREDENTIAL: default */
    gss_name_t      target;          /* client: imported target name */
    OM_uint32       req_flags;       /* client: flags asked for */
    OM_uint32       ret_flags;       /* flags granted (valid once complete) */
    gss_OID         actual_mech;     /* owned by the library, not freed */
    bool            complete;        /* local context established */
    bool            is_ntlm;         /* the mechanism in use is NTLM */
    negstream_protection    protection;     /* required level */
    negstream_impersonation impersonation;  /* client: allowed; server: required */
    bool            require_mutual;  /* client: fail without mutual auth */
    char           *target_str;      /* client: target as given */
    char           *peer_name;       /* server: client's principal; client:
                                        the target as given (as .NET) */
    int             wrap_iov;        /* 0 not tried, 1 gss_wrap_iov works,
                                        -1 the mechanism has none (NTLM) */
    struct negstream__cfx *cfx;      /* non-NULL: a Kerberos context taken
                                        over at completion; wrap/unwrap
                                        run on OpenSSL (wrap_cfx.c), never
                                        through GSSAPI again */
    /* Extended Protection: the bindings passed to every step (client:
     * when given; server: unless the policy is NEVER), with their own
     * copy of the application data. */
    negstream_extended_protection   extended_protection;  /* server */
    bool                            use_bindings;
    struct gss_channel_bindings_struct bindings;
    /* server: the credential the client delegated, if any; released (and
     * its keys with it) by negstream__gss_free or a failed outcome */
    gss_cred_id_t   deleg_cred;
} negstream__gss;

/* Prepares a client context: mechanism from o->mechanism (NULL or
 * "negotiate" -> SPNEGO, "kerberos", "ntlm"; anything else ->
 * NEGSTREAM_E_ARGUMENT), forced to NTLM for protection NONE as .NET does;
 * credentials (user == NULL: default ccache; else
 * gss_acquire_cred_with_password with "user@DOMAIN"); Sign acquires with
 * GSS_KRB5_CRED_NO_CI_FLAGS_X so Sign stays sign-only; the target name
 * ("svc/host" or "svc@host" -> host-based service; "a/b@REALM" ->
 * principal name); the request flags per level.  Errors:
 * NEGSTREAM_E_INVALID_CREDENTIAL when no usable credentials exist,
 * NEGSTREAM_E_AUTHENTICATION for a bad name, NEGSTREAM_E_NOMEM. */
int negstream__gss_client_init(negstream__gss *g,
                               const negstream_client_options *o,
                               negstream_error *err);

/* Prepares an acceptor: credentials for o->service_name (NULL: any key in
 * the keytab, any mechanism). */
int negstream__gss_server_init(negstream__gss *g,
                               const negstream_server_options *o,
                               negstream_error *err);

/* One gss_init_sec_context / gss_accept_sec_context step.  in/in_len may
 * be NULL/0.  *out receives the output token (length 0 if none); release
 * it with negstream__gss_release.  Returns 1 (continue needed), 0 (context
 * complete: ret_flags, actual_mech, is_ntlm, peer_name are set) or -1 with
 * err (NEGSTREAM_E_AUTHENTICATION, or NEGSTREAM_E_INVALID_CREDENTIAL for
 * bad or expired credentials). */
int negstream__gss_step(negstream__gss *g, const void *in, size_t in_len,
                        gss_buffer_desc *out, negstream_error *err);

void negstream__gss_release(gss_buffer_desc *buf);

/* Decides, for a complete context, whether its frames are sealed and
 * opened on OpenSSL (sets g->cfx; see gss.c) and traces which path it
 * takes.  negstream__gss_step calls it at completion; tests call it on an
 * imported context (g->ctx, is_server, ret_flags, actual_mech set) before
 * any token has been wrapped or unwrapped on it. */
void negstream__gss_take_over(negstream__gss *g);

/* After completion: channel bindings missing under Extended Protection
 * ALWAYS (server), impersonation below the required one (server),
 * achieved protection below the required one (both roles), or mutual auth
 * missing when required (client) -> -1 with NEGSTREAM_E_AUTHENTICATION,
 * and a delegated credential is released at once. */
int negstream__gss_check_outcome(negstream__gss *g, negstream_error *err);

/* The code a side puts in its HandshakeError message for a failure. */
uint32_t negstream__gss_error_code(const negstream_error *failure);

/* Server: stores the delegated credential in the ccache ccache_name
 * (gss_store_cred_into, replacing its contents).  No delegated credential
 * -> NEGSTREAM_E_INVALID_OPERATION; a failed store -> NEGSTREAM_E_IO;
 * no gss_store_cred_into -> NEGSTREAM_E_NOT_SUPPORTED. */
int negstream__gss_store_delegated(negstream__gss *g, const char *ccache_name,
                                   negstream_error *err);

/* Properties of a complete context, as .NET computes them. */
bool negstream__gss_is_encrypted(const negstream__gss *g);
bool negstream__gss_is_signed(const negstream__gss *g);
bool negstream__gss_is_mutual(const negstream__gss *g);
bool negstream__gss_is_framed(const negstream__gss *g);  /* INTEG or CONF */
negstream_impersonation negstream__gss_impersonation(const negstream__gss *g);
const char *negstream__gss_auth_type(const negstream__gss *g);
bool negstream__gss_is_channel_bound(const negstream__gss *g);

/* Wraps len (<= NEGSTREAM__MAX_CHUNK) bytes of plaintext into out (room
 * for cap bytes), with confidentiality iff it was granted.  Returns the
 * token length, or -1 with err (NEGSTREAM_E_IO, "could not encrypt").
 * A Kerberos CFX context taken over at completion (g->cfx) is wrapped on
 * OpenSSL: same tokens, same contract; its send and receive halves are
 * independent there, which the stream may use to stop serialising a
 * wrap against an unwrap. */
ssize_t negstream__gss_wrap(negstream__gss *g, const void *in, size_t len,
                            void *out, size_t cap, negstream_error *err);

/* Unwraps the token in buf[0..len) in place: on success returns the
 * plaintext length and sets *plain_off so that the plaintext is at
 * buf + *plain_off.  Tampered, replayed or out-of-order tokens -> -1 with
 * err (NEGSTREAM_E_IO). */
ssize_t negstream__gss_unwrap(negstream__gss *g, uint8_t *buf, size_t len,
                              size_t *plain_off, negstream_error *err);

/* Releases everything (context, credentials, names, strings; the
 * OpenSSL keys are wiped). */
void negstream__gss_free(negstream__gss *g);

#endif
