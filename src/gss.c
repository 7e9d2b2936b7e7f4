/*
 * gss.c - GSSAPI glue: mechanisms, names, credentials, the flags for each
 * protection and impersonation level, one init/accept step, the outcome
 * check, wrap/unwrap, and the peer's identity.
 *
 * No I/O and no locks here: the handshake drives negstream__gss_step, the
 * stream serialises wrap/unwrap on one context with its gss_mu.
 *
 * What MIT krb5 1.20 and gss-ntlmssp 1.2 were seen to do (and what the
 * code below relies on):
 *  - krb5 grants CONF whenever INTEG is asked for, unless the credential
 *    carries GSS_KRB5_CRED_NO_CI_FLAGS_X: Sign sets it so that Sign stays
 *    sign-only (client 0x212e, acceptor 0x21ae instead of 0x213e/0x21be).
 *  - The krb5 acceptor reports IDENTIFY exactly when the initiator asked
 *    for it; DELEG only with a forwardable ticket.  gss-ntlmssp's acceptor
 *    never reports IDENTIFY: as .NET's Unix shim does, an NTLM client is
 *    treated as Identification on the server.
 *  - gss-ntlmssp always negotiates signing, so even a None-level NTLM
 *    context has INTEG on both sides (client 0x2a, acceptor 0x20): each
 *    side then frames its data, consistently, as .NET on Unix does.
 *  - gss-ntlmssp has no gss_wrap_iov; MIT's mechglue says GSS_S_UNAVAILABLE
 *    and we fall back to gss_wrap.  Its acceptor fails an unknown user with
 *    GSS_S_FAILURE/EACCES and a wrong password with GSS_S_FAILURE/EINVAL
 *    (its own codes: the mechglue renumbers them, see accept_status).
 *  - gss_display_name of an NTLM initiator ends with a NUL byte, stripped.
 *  - gss_acquire_cred_with_password for krb5 asks the KDC at once, so a
 *    wrong password or an unknown principal fails there; for SPNEGO it
 *    quietly leaves krb5 out and keeps NTLM, hence the krb5 probe below.
 *  - Channel bindings (application data only, every address field zero),
 *    for krb5, NTLM and SPNEGO over either: when both sides pass the same
 *    bindings the acceptor sets GSS_C_CHANNEL_BOUND_FLAG; when they
 *    differ it fails, krb5 with GSS_S_BAD_BINDINGS, gss-ntlmssp with
 *    GSS_S_DEFECTIVE_TOKEN (minor EACCES, as for a bad NTLM MIC) on the
 *    AUTHENTICATE message; a client that sends none is accepted without
 *    the flag; an acceptor that passes none accepts any client.
 *  - Delegation: krb5 grants GSS_C_DELEG_FLAG (and the acceptor gets a
 *    delegated credential) only when the client's TGT is forwardable;
 *    without one it drops the flag quietly and the context completes.
 *
 * Built with Heimdal (--with-gssapi=heimdal; configure.ac says why):
 * Kerberos and SPNEGO work the same; NTLM is refused with a clear error
 * (ntlm_usable), and wrap/unwrap use gss_wrap/gss_unwrap, not the IOV
 * calls (USE_GSS_IOV).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <gssapi/gssapi.h>
#ifdef HAVE_GSSAPI_GSSAPI_EXT_H      /* MIT; Heimdal: all in gssapi.h */
# include <gssapi/gssapi_ext.h>
#endif
#include <gssapi/gssapi_krb5.h>
#include <krb5.h>

#include "error.h"
#include "frame.h"
#include "gss.h"
#include "scrub.h"
#include "trace.h"
#if HAVE_OPENSSL
#include "wrap_cfx.h"
#endif

/* Static OIDs, so that nothing here has to be released. */
static gss_OID_desc oid_spnego = {
    6, (void *)"\x2b\x06\x01\x05\x05\x02"
};
static gss_OID_desc oid_krb5 = {
    9, (void *)"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02"
};
/* Microsoft's krb5 OID, which Windows peers may name under SPNEGO */
static gss_OID_desc oid_krb5_ms = {
    9, (void *)"\x2a\x86\x48\x82\xf7\x12\x01\x02\x02"
};
static gss_OID_desc oid_ntlm = {
    10, (void *)"\x2b\x06\x01\x04\x01\x82\x37\x02\x02\x0a"
};

/* Every post-completion policy failure starts its message with this, so
 * that negstream__gss_error_code can tell them from GSS failures and send
 * ERROR_TRUST_FAILURE (1790) as .NET does. */
#define POLICY_PREFIX "authentication policy not met: "

/* The first words of every failure caused by the channel bindings (also
 * policy failures, sent as ERROR_TRUST_FAILURE as .NET does). */
#define BINDINGS_PREFIX POLICY_PREFIX "channel bindings: "

/* NTLM's MakeSignature / gss_get_mic token is always 16 bytes. */
#define NTLM_SIG_SIZE 16

/* wrap_iov states */
#define IOV_UNKNOWN 0
#define IOV_WORKS 1
#define IOV_UNSUPPORTED (-1)

/* ---- small helpers ----------------------------------------------------- */

static bool oid_equal(gss_const_OID a, gss_const_OID b)
{
    return a != GSS_C_NO_OID && b != GSS_C_NO_OID &&
           a->length == b->length &&
           memcmp(a->elements, b->elements, a->length) == 0;
}

static gss_OID mech_oid(negstream__mech m)
{
    switch (m) {
    case NEGSTREAM__MECH_KERBEROS:
        return &oid_krb5;
    case NEGSTREAM__MECH_NTLM:
        return &oid_ntlm;
    case NEGSTREAM__MECH_NEGOTIATE:
        break;
    }
    return &oid_spnego;
}

static const char *mech_text(negstream__mech m)
{
    switch (m) {
    case NEGSTREAM__MECH_KERBEROS:
        return "Kerberos";
    case NEGSTREAM__MECH_NTLM:
        return "NTLM";
    case NEGSTREAM__MECH_NEGOTIATE:
        break;
    }
    return "Negotiate";
}

static const char *oid_text(gss_const_OID oid)
{
    if (oid_equal(oid, &oid_krb5))
        return "krb5";
    if (oid_equal(oid, &oid_ntlm))
        return "ntlm";
    if (oid_equal(oid, &oid_spnego))
        return "spnego";
    return "other";
}

static const char *level_text(negstream_protection p)
{
    switch (p) {
    case NEGSTREAM_PROTECTION_NONE:
        return "None";
    case NEGSTREAM_PROTECTION_SIGN:
        return "Sign";
    case NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN:
        return "EncryptAndSign";
    }
    return "?";
}

static const char *imp_text(negstream_impersonation i)
{
    switch (i) {
    case NEGSTREAM_IMPERSONATION_NONE:
        return "None";
    case NEGSTREAM_IMPERSONATION_ANONYMOUS:
        return "Anonymous";
    case NEGSTREAM_IMPERSONATION_IDENTIFICATION:
        return "Identification";
    case NEGSTREAM_IMPERSONATION_IMPERSONATION:
        return "Impersonation";
    case NEGSTREAM_IMPERSONATION_DELEGATION:
        return "Delegation";
    }
    return "?";
}

static bool protection_valid(negstream_protection p)
{
    return p == NEGSTREAM_PROTECTION_NONE || p == NEGSTREAM_PROTECTION_SIGN ||
           p == NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
}

static bool impersonation_valid(negstream_impersonation i)
{
    return (int)i >= (int)NEGSTREAM_IMPERSONATION_NONE &&
           (int)i <= (int)NEGSTREAM_IMPERSONATION_DELEGATION;
}

/* NTLM is gss-ntlmssp, a plugin of MIT's mechglue.  Heimdal's own NTLM
 * mechanism takes no password, grants no INTEG/CONF flags and accepts
 * only through a Heimdal KDC, so a Heimdal build refuses NTLM up front.
 * 'why' says what asked for NTLM. */
static int ntlm_usable(const char *why, negstream_error *err)
{
#if HAVE_NTLM_MECHGLUE_PLUGIN
    (void)why;
    (void)err;
    return 0;
#else
    negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                       "%s, but NTLM needs MIT krb5 with gss-ntlmssp and "
                       "this libnegstream is built with Heimdal: use "
                       "Kerberos", why);
    return -1;
#endif
}

/* "negotiate" (or NULL), "kerberos", "ntlm", in any case, as .NET's
 * package names are. */
static int parse_mech(const char *s, negstream__mech *m, negstream_error *err)
{
    if (s == NULL || strcasecmp(s, "negotiate") == 0)
        *m = NEGSTREAM__MECH_NEGOTIATE;
    else if (strcasecmp(s, "kerberos") == 0)
        *m = NEGSTREAM__MECH_KERBEROS;
    else if (strcasecmp(s, "ntlm") == 0)
        *m = NEGSTREAM__MECH_NTLM;
    else {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "unknown mechanism \"%.64s\" (use \"negotiate\", "
                           "\"kerberos\" or \"ntlm\")", s);
        return -1;
    }
    return 0;
}

/*
 * Imports a service name: "svc/host" -> host-based "svc@host" (the FIRST
 * '/' becomes '@', as .NET does); "svc@host" and bare names -> host-based
 * as given; "svc/host@REALM" (an '@' after a '/') -> a Kerberos principal
 * name, which only Kerberos can use.
 */
static int import_service(const char *s, gss_name_t *out, negstream_error *err)
{
    OM_uint32 major, minor;
    gss_buffer_desc buf;
    gss_OID type = GSS_C_NT_HOSTBASED_SERVICE;
    const char *slash = strchr(s, '/');
    char *copy = strdup(s);
    int rc = -1;

    if (copy == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory importing a name");
        goto out;
    }
    if (slash != NULL && strchr(slash, '@') != NULL)
        type = (gss_OID)GSS_KRB5_NT_PRINCIPAL_NAME;
    else if (slash != NULL)
        copy[slash - s] = '@';
    buf.value = copy;
    buf.length = strlen(copy);
    major = gss_import_name(&minor, &buf, type, out);
    if (GSS_ERROR(major)) {
        negstream__err_gss(err, NEGSTREAM_E_AUTHENTICATION,
                           "gss_import_name of the service name", major,
                           minor);
        goto out;
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

/* Kerberos errors from the KDC or the ccache that mean "these credentials
 * are wrong or unusable", as opposed to "Kerberos is not available". */
static bool krb5_bad_credentials(OM_uint32 minor)
{
    switch ((krb5_error_code)minor) {
    case KRB5KDC_ERR_PREAUTH_FAILED:
    case KRB5KRB_AP_ERR_BAD_INTEGRITY:
    case KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN:
    case KRB5KDC_ERR_CLIENT_REVOKED:
    case KRB5KDC_ERR_KEY_EXP:
    case KRB5KDC_ERR_NAME_EXP:
    case KRB5KDC_ERR_CLIENT_NOTYET:
    case KRB5_PREAUTH_FAILED:
    case KRB5KRB_AP_ERR_TKT_EXPIRED:
    case KRB5_FCC_NOFILE:
    case KRB5_CC_NOTFOUND:
    case ENOENT:            /* Heimdal's FILE ccache: no such file */
        return true;
    default:
        return false;
    }
}

/* The status for a failed credential acquisition or context step. */
static negstream_status cred_status(OM_uint32 major, OM_uint32 minor)
{
    switch (GSS_ROUTINE_ERROR(major)) {
    case GSS_S_NO_CRED:
    case GSS_S_DEFECTIVE_CREDENTIAL:
    case GSS_S_CREDENTIALS_EXPIRED:
        return NEGSTREAM_E_INVALID_CREDENTIAL;
    default:
        break;
    }
    return krb5_bad_credentials(minor) ? NEGSTREAM_E_INVALID_CREDENTIAL :
           NEGSTREAM_E_AUTHENTICATION;
}

/* ---- channel bindings --------------------------------------------------- */

/*
 * Makes every later step pass len bytes of application data as channel
 * bindings, in a zeroed gss_channel_bindings_struct (no addresses,
 * GSS_C_AF_UNSPEC), as .NET's Unix PAL builds it and as gss-ntlmssp
 * requires.  The data is copied.  len 0 means no bindings.
 */
static int set_bindings(negstream__gss *g, const void *data, size_t len,
                        negstream_error *err)
{
    void *copy;

    if (len == 0)
        return 0;
    if (data == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "channel_binding is NULL but channel_binding_len "
                           "is %zu", len);
        return -1;
    }
    copy = malloc(len);
    if (copy == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory copying %zu bytes of channel "
                           "bindings", len);
        return -1;
    }
    memcpy(copy, data, len);
    memset(&g->bindings, 0, sizeof(g->bindings));
    g->bindings.initiator_addrtype = GSS_C_AF_UNSPEC;
    g->bindings.acceptor_addrtype = GSS_C_AF_UNSPEC;
    g->bindings.application_data.value = copy;
    g->bindings.application_data.length = len;
    g->use_bindings = true;
    return 0;
}

static gss_channel_bindings_t bindings_of(negstream__gss *g)
{
    return g->use_bindings ? &g->bindings : GSS_C_NO_CHANNEL_BINDINGS;
}

/*
 * Whether a failed acceptor step is the bindings' doing.  krb5 says so
 * (GSS_S_BAD_BINDINGS); gss-ntlmssp says GSS_S_DEFECTIVE_TOKEN for the
 * AUTHENTICATE message, which is never the first token, and says the same
 * for a bad MIC, that is for an altered message: with bindings in use
 * both are what a relay looks like.
 */
static bool bindings_refused(const negstream__gss *g, OM_uint32 major,
                             bool first_step)
{
    if (!g->use_bindings)
        return false;
    if (GSS_ROUTINE_ERROR(major) == GSS_S_BAD_BINDINGS)
        return true;
    return GSS_ROUTINE_ERROR(major) == GSS_S_DEFECTIVE_TOKEN && !first_step;
}

static bool channel_bound(const negstream__gss *g)
{
#ifdef GSS_C_CHANNEL_BOUND_FLAG
    return g->complete && (g->ret_flags & GSS_C_CHANNEL_BOUND_FLAG) != 0;
#else
    (void)g;
    return false;
#endif
}

/* ---- client ------------------------------------------------------------ */

/* Asks MIT not to add CONF/INTEG by itself: Sign stays sign-only.  A
 * mechanism that does not know the option (NTLM) is no reason to fail. */
static void set_no_ci_flags(gss_cred_id_t cred)
{
#if HAVE_GSS_SET_CRED_OPTION && HAVE_DECL_GSS_KRB5_CRED_NO_CI_FLAGS_X
    OM_uint32 major, minor;
    gss_buffer_desc empty = GSS_C_EMPTY_BUFFER;

    major = gss_set_cred_option(&minor, &cred, GSS_KRB5_CRED_NO_CI_FLAGS_X,
                                &empty);
    NEGSTREAM__TRACE("gss: GSS_KRB5_CRED_NO_CI_FLAGS_X %s (major 0x%x)",
                     GSS_ERROR(major) ? "not accepted" : "set",
                     (unsigned)major);
#else
    (void)cred;
#endif
}

/*
 * The initiator name: "DOMAIN\user" is split when no domain is given;
 * "user@DOMAIN" when the user has no '@' and the domain is not empty.
 * Returns a malloc'd string or NULL (err set).
 */
static char *initiator_name(const char *user, const char *domain,
                            negstream_error *err)
{
    const char *bs = strchr(user, '\\');
    char *dom = NULL, *name = NULL;
    const char *u = user;

    if (domain == NULL && bs != NULL) {
        dom = strndup(user, (size_t)(bs - user));
        if (dom == NULL)
            goto nomem;
        domain = dom;
        u = bs + 1;
    }
    if (strchr(u, '@') == NULL && domain != NULL && domain[0] != '\0') {
        if (asprintf(&name, "%s@%s", u, domain) < 0) {
            name = NULL;
            goto nomem;
        }
    } else {
        name = strdup(u);
        if (name == NULL)
            goto nomem;
    }
    free(dom);
    return name;
nomem:
    free(dom);
    negstream__err_set(err, NEGSTREAM_E_NOMEM,
                       "out of memory building the user name");
    return NULL;
}

/*
 * SPNEGO with a password quietly drops krb5 when the KDC refuses the
 * password and goes on with NTLM, which then fails at the server with an
 * obscure error.  Asking for a krb5 credential first tells a wrong
 * password or an unknown principal apart from "no Kerberos here" (e.g. an
 * NTLM domain that is no realm), which must still fall back to NTLM.
 */
static int probe_krb5_password(gss_name_t name, gss_buffer_t pw,
                               negstream_error *err)
{
    OM_uint32 major, minor, tmp;
    gss_OID_set_desc set = { 1, &oid_krb5 };
    gss_cred_id_t cred = GSS_C_NO_CREDENTIAL;

    major = gss_acquire_cred_with_password(&minor, name, pw, 0, &set,
                                           GSS_C_INITIATE, &cred, NULL,
                                           NULL);
    if (!GSS_ERROR(major)) {
        gss_release_cred(&tmp, &cred);
        return 0;
    }
    if (krb5_bad_credentials(minor)) {
        negstream__err_gss(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                           "acquiring Kerberos credentials with the "
                           "password", major, minor);
        return -1;
    }
    NEGSTREAM__TRACE("gss: no Kerberos for this user (major 0x%x, minor "
                     "%u): SPNEGO may use NTLM", (unsigned)major,
                     (unsigned)minor);
    return 0;
}

/* Initiator credentials for name (GSS_C_NO_NAME: the default principal)
 * from the ccache 'ccache', or from the default places when it is NULL. */
static OM_uint32 acquire_initiator(OM_uint32 *minor, gss_name_t name,
                                   gss_OID_set set, const char *ccache,
                                   gss_cred_id_t *cred)
{
#if HAVE_GSS_ACQUIRE_CRED_FROM
    gss_key_value_element_desc el;
    gss_key_value_set_desc store = { 1, &el };

    if (ccache != NULL) {
        el.key = "ccache";
        el.value = ccache;
        return gss_acquire_cred_from(minor, name, GSS_C_INDEFINITE, set,
                                     GSS_C_INITIATE, &store, cred, NULL,
                                     NULL);
    }
#else
    (void)ccache;       /* refused earlier: negstream__gss_client_init */
#endif
    return gss_acquire_cred(minor, name, GSS_C_INDEFINITE, set,
                            GSS_C_INITIATE, cred, NULL, NULL);
}

static int client_creds(negstream__gss *g, const negstream_client_options *o,
                        negstream_error *err)
{
    OM_uint32 major, minor, tmp;
    gss_OID_set_desc set = { 1, mech_oid(g->mech) };
    gss_name_t name = GSS_C_NO_NAME;
    gss_buffer_desc buf, pw;
    bool no_ci = g->protection == NEGSTREAM_PROTECTION_SIGN &&
                 g->mech != NEGSTREAM__MECH_NTLM;
    char *uname = NULL;
    int rc = -1;

    if (o->user == NULL) {
        if (!no_ci && o->ccache_name == NULL) {
            /* GSS_C_NO_CREDENTIAL: the default ccache, resolved by the
             * first step, which reports missing tickets itself. */
            rc = 0;
            goto out;
        }
        major = acquire_initiator(&minor, GSS_C_NO_NAME, &set,
                                  o->ccache_name, &g->cred);
        if (GSS_ERROR(major)) {
            negstream__err_gss(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                               o->ccache_name != NULL ?
                               "acquiring credentials from the ccache "
                               "ccache_name" :
                               "acquiring the default credentials", major,
                               minor);
            goto out;
        }
        set_no_ci_flags(g->cred);
        rc = 0;
        goto out;
    }

    if (o->user[0] == '\0') {
        /* .NET on Windows would try anonymous NTLM here; an empty name
         * names nobody, and the default credentials are user == NULL. */
        negstream__err_set(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                           "the user name is empty (user = NULL selects the "
                           "default credentials)");
        goto out;
    }
    uname = initiator_name(o->user, o->domain, err);
    if (uname == NULL)
        goto out;
    buf.value = uname;
    buf.length = strlen(uname);
    major = gss_import_name(&minor, &buf, GSS_C_NT_USER_NAME, &name);
    if (GSS_ERROR(major)) {
        negstream__err_gss(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                           "gss_import_name of the user name", major, minor);
        goto out;
    }
    if (o->password == NULL) {
        /* A named user without a password: that user's ticket in a
         * ccache collection (or in ccache_name), or the client keytab. */
        major = acquire_initiator(&minor, name, &set, o->ccache_name,
                                  &g->cred);
        if (GSS_ERROR(major)) {
            negstream__err_gss(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                               "acquiring credentials for the user", major,
                               minor);
            goto out;
        }
    } else {
        /* No copy of the password here: the buffer points at the
         * caller's string (or the operation's copy, which the stream
         * wipes once this returns). */
        pw.value = (void *)o->password;
        pw.length = strlen(o->password);
        if (g->mech == NEGSTREAM__MECH_NEGOTIATE &&
            probe_krb5_password(name, &pw, err) < 0)
            goto out;
        major = gss_acquire_cred_with_password(&minor, name, &pw, 0, &set,
                                               GSS_C_INITIATE, &g->cred,
                                               NULL, NULL);
        if (GSS_ERROR(major)) {
            negstream__err_gss(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                               "acquiring credentials with the password",
                               major, minor);
            goto out;
        }
    }
    if (no_ci)
        set_no_ci_flags(g->cred);
    NEGSTREAM__TRACE("gss: client credentials for the given user acquired "
                     "(%s)", mech_text(g->mech));
    rc = 0;
out:
    if (name != GSS_C_NO_NAME)
        gss_release_name(&tmp, &name);
    free(uname);
    return rc;
}

static OM_uint32 client_flags(negstream_protection p,
                              negstream_impersonation i)
{
    OM_uint32 f = 0;

    switch (p) {
    case NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN:
        f = GSS_C_CONF_FLAG | GSS_C_INTEG_FLAG | GSS_C_MUTUAL_FLAG |
            GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG;
        break;
    case NEGSTREAM_PROTECTION_SIGN:
        f = GSS_C_INTEG_FLAG | GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG |
            GSS_C_SEQUENCE_FLAG;
        break;
    case NEGSTREAM_PROTECTION_NONE:
        break;
    }
    if (i == NEGSTREAM_IMPERSONATION_IDENTIFICATION)
        f |= GSS_C_IDENTIFY_FLAG;
    else if (i == NEGSTREAM_IMPERSONATION_DELEGATION)
        f |= GSS_C_DELEG_FLAG;
    return f;
}

/*
 * Argument checks come first, in .NET's order (target, impersonation),
 * then our own (protection, mechanism).  A NULL target is
 * NEGSTREAM_E_ARGUMENT_NULL as in .NET; an empty one cannot name any
 * service, and .NET only finds out at its first GSS step: we refuse it
 * here with NEGSTREAM_E_AUTHENTICATION, before anything is sent.
 */
int negstream__gss_client_init(negstream__gss *g,
                               const negstream_client_options *o,
                               negstream_error *err)
{
    int rc = -1;

    g->is_server = false;
    g->ctx = GSS_C_NO_CONTEXT;
    g->complete = false;
    if (o == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "client options are NULL");
        goto out;
    }
    if (o->target_name == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "target_name is NULL");
        goto out;
    }
    if (o->impersonation != NEGSTREAM_IMPERSONATION_IDENTIFICATION &&
        o->impersonation != NEGSTREAM_IMPERSONATION_IMPERSONATION &&
        o->impersonation != NEGSTREAM_IMPERSONATION_DELEGATION) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "impersonation level %d is not allowed for a "
                           "client (use Identification, Impersonation or "
                           "Delegation)", (int)o->impersonation);
        goto out;
    }
    if (!protection_valid(o->protection)) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "protection level %d is not valid",
                           (int)o->protection);
        goto out;
    }
    if (parse_mech(o->mechanism, &g->mech, err) < 0)
        goto out;
    if (o->ccache_name != NULL && o->password != NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "ccache_name and password are both set (a "
                           "password acquires new credentials; a ccache "
                           "holds existing ones)");
        goto out;
    }
#if !HAVE_GSS_ACQUIRE_CRED_FROM
    if (o->ccache_name != NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOT_SUPPORTED,
                           "ccache_name needs gss_acquire_cred_from, which "
                           "this GSSAPI library lacks");
        goto out;
    }
#endif
    if (o->target_name[0] == '\0') {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "target_name is empty: give the service "
                           "principal, e.g. \"host/server.example.com\"");
        goto out;
    }
    /* .NET (and MS-NNS 3.1.4.1) use the NTLM package for a None client. */
    if (o->protection == NEGSTREAM_PROTECTION_NONE)
        g->mech = NEGSTREAM__MECH_NTLM;
    if (g->mech == NEGSTREAM__MECH_NTLM &&
        ntlm_usable(o->protection == NEGSTREAM_PROTECTION_NONE ?
                    "protection None authenticates with NTLM" :
                    "the client asks for NTLM", err) < 0)
        goto out;
#if !HAVE_NTLM_MECHGLUE_PLUGIN
    /* Heimdal's SPNEGO takes no password (GSS_S_NO_CRED), nor a krb5
     * credential acquired with one; without NTLM it could only choose
     * Kerberos anyway, so a Negotiate client with a password speaks
     * Kerberos directly, which every Negotiate acceptor takes. */
    if (g->mech == NEGSTREAM__MECH_NEGOTIATE && o->user != NULL &&
        o->password != NULL)
        g->mech = NEGSTREAM__MECH_KERBEROS;
#endif
    g->protection = o->protection;
    g->impersonation = o->impersonation;
    g->require_mutual = o->require_mutual_auth;
    g->req_flags = client_flags(o->protection, o->impersonation);
    if (set_bindings(g, o->channel_binding, o->channel_binding_len,
                     err) < 0)
        goto out;
    g->target_str = strdup(o->target_name);
    if (g->target_str == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory copying the target name");
        goto out;
    }
    if (import_service(o->target_name, &g->target, err) < 0)
        goto out;
    if (client_creds(g, o, err) < 0)
        goto out;
    NEGSTREAM__TRACE("gss: client ready: %s, %s, %s, requesting flags 0x%x"
                     ", %zu bytes of channel bindings", mech_text(g->mech),
                     level_text(g->protection),
                     o->user != NULL ? "explicit credentials" :
                     "default credentials", (unsigned)g->req_flags,
                     o->channel_binding_len);
    negstream__err_ok(err);
    rc = 0;
out:
    if (rc < 0 && o != NULL)
        negstream__gss_free(g);
    return rc;
}

/* ---- server ------------------------------------------------------------ */

static bool set_has(gss_OID_set set, gss_const_OID oid)
{
    size_t i;

    if (set == GSS_C_NO_OID_SET)
        return false;
    for (i = 0; i < set->count; i++)
        if (oid_equal(&set->elements[i], oid))
            return true;
    return false;
}

static const char *ep_text(negstream_extended_protection p)
{
    switch (p) {
    case NEGSTREAM_EXTENDED_PROTECTION_NEVER:
        return "Never";
    case NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED:
        return "WhenSupported";
    case NEGSTREAM_EXTENDED_PROTECTION_ALWAYS:
        return "Always";
    }
    return "?";
}

/*
 * The server's Extended Protection: NEVER passes no bindings (any client
 * is accepted, as by .NET on Unix); WHEN_SUPPORTED and ALWAYS pass the
 * expected ones, so that GSSAPI refuses different ones, and ALWAYS also
 * refuses, after completion, a client that sent none.  ALWAYS needs a
 * library that says whether the bindings were verified: without
 * GSS_C_CHANNEL_BOUND_FLAG it is NEGSTREAM_E_NOT_SUPPORTED, as .NET's
 * PlatformNotSupportedException on a system without Extended Protection.
 */
static int server_bindings(negstream__gss *g,
                           const negstream_server_options *o,
                           negstream_error *err)
{
    switch (o->extended_protection) {
    case NEGSTREAM_EXTENDED_PROTECTION_NEVER:
        g->extended_protection = o->extended_protection;
        return 0;
    case NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED:
    case NEGSTREAM_EXTENDED_PROTECTION_ALWAYS:
        break;
    default:
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "extended_protection %d is not a "
                           "negstream_extended_protection",
                           (int)o->extended_protection);
        return -1;
    }
#ifndef GSS_C_CHANNEL_BOUND_FLAG
    if (o->extended_protection == NEGSTREAM_EXTENDED_PROTECTION_ALWAYS) {
        negstream__err_set(err, NEGSTREAM_E_NOT_SUPPORTED,
                           "Extended Protection Always: this GSSAPI library "
                           "cannot tell whether a client's channel bindings "
                           "were verified (no GSS_C_CHANNEL_BOUND_FLAG)");
        return -1;
    }
#endif
    if (o->channel_binding_len == 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "Extended Protection %s needs the channel "
                           "bindings to expect (channel_binding_len is 0)",
                           ep_text(o->extended_protection));
        return -1;
    }
    g->extended_protection = o->extended_protection;
    return set_bindings(g, o->channel_binding, o->channel_binding_len, err);
}

/*
 * Credentials for every mechanism (so that SPNEGO and raw NTLMSSP or krb5
 * tokens are all accepted, as .NET's acceptor does).  MIT succeeds as
 * soon as one mechanism has credentials, and gss-ntlmssp always has some;
 * so when Kerberos is evidently wanted (a service name is given, or the
 * mechanism is "kerberos") and krb5 is missing from the set, krb5 is asked
 * alone to report why (usually: no keytab entry).
 */
int negstream__gss_server_init(negstream__gss *g,
                               const negstream_server_options *o,
                               negstream_error *err)
{
    OM_uint32 major, minor, tmp;
    gss_name_t name = GSS_C_NO_NAME;
    gss_OID_set actual = GSS_C_NO_OID_SET;
    gss_OID need = GSS_C_NO_OID;
    int rc = -1;

    g->is_server = true;
    g->ctx = GSS_C_NO_CONTEXT;
    g->complete = false;
    if (o == NULL) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_NULL,
                           "server options are NULL");
        goto out;
    }
    if (!impersonation_valid(o->impersonation)) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "impersonation level %d is not valid",
                           (int)o->impersonation);
        goto out;
    }
    if (!protection_valid(o->protection)) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT_RANGE,
                           "protection level %d is not valid",
                           (int)o->protection);
        goto out;
    }
    if (parse_mech(o->mechanism, &g->mech, err) < 0)
        goto out;
    if (g->mech == NEGSTREAM__MECH_NTLM &&
        ntlm_usable("the server requires NTLM", err) < 0)
        goto out;
    if (server_bindings(g, o, err) < 0)
        goto out;
    g->protection = o->protection;
    g->impersonation = o->impersonation;
    if (o->service_name != NULL && o->service_name[0] != '\0' &&
        import_service(o->service_name, &name, err) < 0)
        goto out;
    if (g->mech == NEGSTREAM__MECH_NTLM)
        need = &oid_ntlm;
    else if (name != GSS_C_NO_NAME || g->mech == NEGSTREAM__MECH_KERBEROS)
        need = &oid_krb5;

    major = gss_acquire_cred(&minor, name, GSS_C_INDEFINITE,
                             GSS_C_NO_OID_SET, GSS_C_ACCEPT, &g->cred,
                             &actual, NULL);
    if (GSS_ERROR(major)) {
        negstream__err_gss(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                           "acquiring the acceptor credentials", major,
                           minor);
        goto out;
    }
    if (need != GSS_C_NO_OID && !set_has(actual, need)) {
        gss_OID_set_desc one = { 1, need };
        gss_cred_id_t probe = GSS_C_NO_CREDENTIAL;

        major = gss_acquire_cred(&minor, name, GSS_C_INDEFINITE, &one,
                                 GSS_C_ACCEPT, &probe, NULL, NULL);
        if (!GSS_ERROR(major)) {
            /* Raced with a keytab update: fine, use the full set. */
            gss_release_cred(&tmp, &probe);
        } else {
            negstream__err_gss(err, NEGSTREAM_E_INVALID_CREDENTIAL,
                               need == &oid_krb5 ?
                               "acquiring the Kerberos acceptor credentials"
                               : "acquiring the NTLM acceptor credentials",
                               major, minor);
            goto out;
        }
    }
    NEGSTREAM__TRACE("gss: server ready for %s (%s), requiring %s and %s, "
                     "Extended Protection %s",
                     o->service_name != NULL ? o->service_name :
                     "any service in the keytab", mech_text(g->mech),
                     level_text(g->protection), imp_text(g->impersonation),
                     ep_text(g->extended_protection));
    negstream__err_ok(err);
    rc = 0;
out:
    if (actual != GSS_C_NO_OID_SET)
        gss_release_oid_set(&tmp, &actual);
    if (name != GSS_C_NO_NAME)
        gss_release_name(&tmp, &name);
    if (rc < 0 && o != NULL)
        negstream__gss_free(g);
    return rc;
}

/* ---- one step ---------------------------------------------------------- */

/* The client principal as text, without the NUL gss-ntlmssp appends,
 * control characters replaced by '?'. */
static int server_peer_name(negstream__gss *g, negstream_error *err)
{
    OM_uint32 major, minor, tmp;
    gss_name_t src = GSS_C_NO_NAME;
    gss_buffer_desc text = GSS_C_EMPTY_BUFFER;
    size_t len, scrubbed;
    int rc = -1;

    major = gss_inquire_context(&minor, g->ctx, &src, NULL, NULL, NULL, NULL,
                                NULL, NULL);
    if (GSS_ERROR(major)) {
        negstream__err_gss(err, NEGSTREAM_E_AUTHENTICATION,
                           "gss_inquire_context", major, minor);
        goto out;
    }
    major = gss_display_name(&minor, src, &text, NULL);
    if (GSS_ERROR(major)) {
        negstream__err_gss(err, NEGSTREAM_E_AUTHENTICATION,
                           "gss_display_name of the client", major, minor);
        goto out;
    }
    len = text.length;
    while (len > 0 && ((const char *)text.value)[len - 1] == '\0')
        len--;
    g->peer_name = malloc(len + 1);
    if (g->peer_name == NULL) {
        negstream__err_set(err, NEGSTREAM_E_NOMEM,
                           "out of memory copying the client name");
        goto out;
    }
    memcpy(g->peer_name, text.value, len);
    g->peer_name[len] = '\0';
    /* The name comes from the peer's token: a control character (a NUL
     * inside it too, which would cut it short) becomes '?'. */
    scrubbed = negstream__scrub(g->peer_name, len);
    if (scrubbed > 0)
        NEGSTREAM__TRACE("gss: the client's name has %zu control "
                         "character(s), shown as '?': %s", scrubbed,
                         g->peer_name);
    rc = 0;
out:
    gss_release_buffer(&tmp, &text);
    if (src != GSS_C_NO_NAME)
        gss_release_name(&tmp, &src);
    return rc;
}

/*
 * Reads one DER TLV at *p (before end): its tag, and its contents at
 * *c, *n bytes.  Advances *p past it.  False when it does not fit.
 */
static bool der_tlv(const uint8_t **p, const uint8_t *end, uint8_t *tag,
                    const uint8_t **c, size_t *n)
{
    const uint8_t *q = *p;
    size_t len = 0;
    int k;

    if (end - q < 2)
        return false;
    *tag = *q++;
    if (*q < 0x80) {
        len = *q++;
    } else {
        k = *q++ & 0x7f;
        if (k == 0 || k > 4 || end - q < k)
            return false;
        while (k-- > 0)
            len = len << 8 | *q++;
    }
    if ((size_t)(end - q) < len)
        return false;
    *c = q;
    *n = len;
    *p = q + len;
    return true;
}

/*
 * The mechanism token a SPNEGO token carries (RFC 4178): the mechToken of
 * a NegTokenInit (inside the GSS framing, 0x60) or the responseToken of a
 * NegTokenResp (0xa1); both are field [2], an OCTET STRING.
 */
static bool spnego_inner(const uint8_t *tok, size_t len,
                         const uint8_t **inner, size_t *inner_len)
{
    const uint8_t *p = tok, *end, *c;
    uint8_t tag;
    size_t n;

    if (tok == NULL || len == 0)
        return false;   /* an empty token: tok may be NULL, no arithmetic */
    end = tok + len;
    if (tok[0] == 0x60) {
        if (!der_tlv(&p, end, &tag, &c, &n))
            return false;
        p = c;
        end = c + n;
        if (!der_tlv(&p, end, &tag, &c, &n) || tag != 0x06 ||
            n != oid_spnego.length ||
            memcmp(c, oid_spnego.elements, n) != 0)
            return false;
        if (!der_tlv(&p, end, &tag, &c, &n) || tag != 0xa0)
            return false;
    } else if (!der_tlv(&p, end, &tag, &c, &n) || tag != 0xa1) {
        return false;
    }
    p = c;
    end = c + n;
    if (!der_tlv(&p, end, &tag, &c, &n) || tag != 0x30)
        return false;
    p = c;
    end = c + n;
    while (p < end) {
        if (!der_tlv(&p, end, &tag, &c, &n))
            return false;
        if (tag == 0xa2) {
            const uint8_t *q = c;

            return der_tlv(&q, c + n, &tag, inner, inner_len) &&
                   tag == 0x04;
        }
    }
    return false;
}

/* The type of the NTLM message (1 NEGOTIATE, 2 CHALLENGE, 3 AUTHENTICATE)
 * that tok is or that its SPNEGO wrapping carries; 0 if none. */
static unsigned ntlm_message_type(const void *tok, size_t len)
{
    const uint8_t *t = tok;

    if ((len < 12 || memcmp(t, "NTLMSSP", 8) != 0) &&
        !spnego_inner(tok, len, &t, &len))
        return 0;
    if (len < 12 || memcmp(t, "NTLMSSP", 8) != 0)
        return 0;
    return (unsigned)t[8] | (unsigned)t[9] << 8 | (unsigned)t[10] << 16 |
           (unsigned)t[11] << 24;
}

/*
 * The status for a failed acceptor step.  Besides the GSS credential
 * errors: gss-ntlmssp fails an unknown user (EACCES) and a wrong password
 * (EINVAL) with GSS_S_FAILURE when it checks the client's AUTHENTICATE
 * message.  Its minor code cannot be compared with errno values: MIT's
 * mechglue hands out minor codes per process, in the order (mechanism,
 * code) pairs first appear, so after another mechanism has used 22 the
 * NTLM EINVAL comes out as 100005 or so.  So the mechanism is told by the
 * token (an NTLM AUTHENTICATE message, raw or inside SPNEGO), the routine
 * error by the major status, and the reason by the mechanism's own text
 * for the minor code, which the mechglue still finds.
 */
static negstream_status accept_status(const void *in, size_t in_len,
                                      OM_uint32 major, OM_uint32 minor)
{
    if (GSS_ROUTINE_ERROR(major) == GSS_S_FAILURE &&
        ntlm_message_type(in, in_len) == 3 &&
        (negstream__gss_minor_is_errno(minor, &oid_ntlm, EINVAL) ||
         negstream__gss_minor_is_errno(minor, &oid_ntlm, EACCES)))
        return NEGSTREAM_E_INVALID_CREDENTIAL;
    return cred_status(major, minor);
}

/* ---- the OpenSSL path (issue 14) --------------------------------------- */

#if HAVE_OPENSSL
/* GSS_KRB5_EXPORT_LUCID_CONTEXT_OID 1.2.840.113554.1.2.2.5.6 followed by
 * the version, 1 (what gss_krb5_export_lucid_sec_context asks for, without
 * deleting the context as that function does). */
static gss_OID_desc oid_lucid_v1 = {
    12, (void *)"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x05\x06\x01"
};

/* Reads the keys of a complete krb5 CFX context and builds the OpenSSL
 * state; NULL with *why when the context does not qualify.  The lucid
 * copy of the keys is wiped by gss_krb5_free_lucid_sec_context (MIT zaps
 * key data before freeing it). */
static negstream__cfx *cfx_from_context(const negstream__gss *g,
                                        const char **why)
{
    OM_uint32 major, minor, tmp;
    gss_buffer_set_t set = GSS_C_NO_BUFFER_SET;
    gss_krb5_lucid_context_v1_t *lc = NULL;
    negstream__cfx_keys k;
    negstream__cfx *c = NULL;

    major = gss_inquire_sec_context_by_oid(&minor, g->ctx, &oid_lucid_v1,
                                           &set);
    if (major != GSS_S_COMPLETE || set == GSS_C_NO_BUFFER_SET ||
        set->count != 1 || set->elements[0].length != sizeof(void *)) {
        *why = "the krb5 mechanism gave no lucid context";
        goto out;
    }
    memcpy(&lc, set->elements[0].value, sizeof(lc));
    if (lc == NULL || lc->version != 1) {
        *why = "lucid context of an unknown version";
        goto out;
    }
    if (lc->protocol != 1) {
        *why = "an RFC 1964 (pre-CFX) context";
        goto out;
    }
    memset(&k, 0, sizeof(k));
    k.initiator = lc->initiate != 0;
    k.ctx_enctype = (int)lc->cfx_kd.ctx_key.type;
    k.ctx_key = lc->cfx_kd.ctx_key.data;
    k.ctx_key_len = lc->cfx_kd.ctx_key.length;
    k.have_acceptor_subkey = lc->cfx_kd.have_acceptor_subkey != 0;
    k.acc_enctype = (int)lc->cfx_kd.acceptor_subkey.type;
    k.acc_key = lc->cfx_kd.acceptor_subkey.data;
    k.acc_key_len = lc->cfx_kd.acceptor_subkey.length;
    k.send_seq = lc->send_seq;
    k.recv_seq = lc->recv_seq;
    /* MIT's receive window is set from the context's flags, which are
     * the flags granted (accept_sec_context/init_sec_context). */
    k.do_replay = (g->ret_flags & GSS_C_REPLAY_FLAG) != 0;
    k.do_sequence = (g->ret_flags & GSS_C_SEQUENCE_FLAG) != 0;
    if (k.initiator == g->is_server) {
        *why = "the lucid context names the other role";
        goto out;
    }
    c = negstream__cfx_new(&k, why);
out:
    if (lc != NULL)
        gss_krb5_free_lucid_sec_context(&tmp, lc);
    if (set != GSS_C_NO_BUFFER_SET)
        gss_release_buffer_set(&tmp, &set);
    return c;
}
#endif

/*
 * Once the context is complete: should its frames be sealed and opened
 * on OpenSSL (wrap_cfx.c) rather than by gss_wrap/gss_unwrap?  Yes for a
 * krb5 context (directly or under SPNEGO) with RFC 4121 keys of an
 * enctype we implement, unless NEGSTREAM_WRAP=gssapi.  MS-NNS sends no
 * wrap token during the handshake, so the lucid recv_seq is still the
 * first number expected; from here on this context's tokens never go
 * through gss_wrap/gss_unwrap again (mixing would repeat sequence
 * numbers).  Anything that does not qualify keeps the GSSAPI path, which
 * is the same protection: nothing is weakened by falling back.
 */
void negstream__gss_take_over(negstream__gss *g)
{
    const char *why = "not a Kerberos context";
    const char *env = getenv("NEGSTREAM_WRAP");

    if (env != NULL && strcmp(env, "gssapi") == 0) {
        why = "NEGSTREAM_WRAP=gssapi";
        goto gssapi;
    }
    if (g->is_ntlm || !(oid_equal(g->actual_mech, &oid_krb5) ||
                        oid_equal(g->actual_mech, &oid_krb5_ms)))
        goto gssapi;
    if (!(g->ret_flags & (GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG))) {
        why = "no per-message protection";
        goto gssapi;
    }
#if HAVE_OPENSSL
    g->cfx = cfx_from_context(g, &why);
    if (g->cfx != NULL) {
        NEGSTREAM__TRACE("gss: wrap path: openssl (RFC 4121 on OpenSSL "
                         "libcrypto, %s%s)",
                         negstream__krb_enctype_name(
                             negstream__cfx_enctype(g->cfx)),
                         negstream__cfx_acceptor_subkey(g->cfx) ?
                         ", acceptor subkey" : "");
        return;
    }
#else
    why = "built without OpenSSL";
#endif
gssapi:
    NEGSTREAM__TRACE("gss: wrap path: gssapi (%s)", why);
}

#ifdef NEGSTREAM_HEIMDAL
/*
 * Heimdal's krb5 initiator (repl_mutual in lib/gssapi/krb5/
 * init_sec_context.c, 7.8 and master) hands krb5_rd_rep an uninitialised
 * buffer when the server's reply is neither a framed AP-REP (token id
 * 02 00) nor a framed KRB-ERROR (03 00) under the krb5 OID, and crashes.
 * True when 'in' has that framing, i.e. when Heimdal can be given it.
 */
static bool heimdal_krb5_reply_framed(const void *in, size_t in_len)
{
    const uint8_t *p = in, *end, *c;
    uint8_t tag;
    size_t n;

    if (in == NULL || in_len == 0)
        return false;
    end = p + in_len;
    if (!der_tlv(&p, end, &tag, &c, &n) || tag != 0x60 || p != end)
        return false;
    p = c;
    end = c + n;
    if (!der_tlv(&p, end, &tag, &c, &n) || tag != 0x06 ||
        n != oid_krb5.length || memcmp(c, oid_krb5.elements, n) != 0)
        return false;
    return end - p >= 2 && (p[0] == 0x02 || p[0] == 0x03) && p[1] == 0x00;
}

/* The same for a server's reply on 'g' that Heimdal would hand its krb5
 * initiator: a krb5 reply, or the responseToken of a SPNEGO NegTokenResp
 * (0xa1) that is not NTLM's.  True when Heimdal can be given 'in'. */
static bool heimdal_reply_safe(const negstream__gss *g, const void *in,
                               size_t in_len)
{
    const uint8_t *inner;
    size_t inner_len;

    if (g->is_server || g->ctx == GSS_C_NO_CONTEXT)
        return true;
    if (g->mech == NEGSTREAM__MECH_KERBEROS)
        return heimdal_krb5_reply_framed(in, in_len);
    if (g->mech != NEGSTREAM__MECH_NEGOTIATE || in == NULL || in_len == 0 ||
        ((const uint8_t *)in)[0] != 0xa1 ||
        !spnego_inner(in, in_len, &inner, &inner_len))
        return true;    /* no responseToken: Heimdal's SPNEGO decides */
    if (inner_len >= 8 && memcmp(inner, "NTLMSSP", 8) == 0)
        return true;
    return heimdal_krb5_reply_framed(inner, inner_len);
}
#endif

int negstream__gss_step(negstream__gss *g, const void *in, size_t in_len,
                        gss_buffer_desc *out, negstream_error *err)
{
    OM_uint32 major, minor, tmp, flags = 0;
    gss_buffer_desc inb;
    gss_OID actual = GSS_C_NO_OID;
    bool first_step = g->ctx == GSS_C_NO_CONTEXT;

    out->length = 0;
    out->value = NULL;
    if (g->complete) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "internal error: the security context is "
                           "already complete");
        return -1;
    }
    inb.value = (void *)in;
    inb.length = in_len;
#ifdef NEGSTREAM_HEIMDAL
    if (!heimdal_reply_safe(g, in, in_len)) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "processing the server's token: %s not a "
                           "Kerberos reply (a GSS-framed AP-REP or "
                           "KRB-ERROR, %zu bytes)",
                           g->mech == NEGSTREAM__MECH_KERBEROS ? "it is" :
                           "its responseToken is", in_len);
        return -1;
    }
#endif
    if (!g->is_server) {
        major = gss_init_sec_context(&minor, g->cred, &g->ctx, g->target,
                                     mech_oid(g->mech), g->req_flags, 0,
                                     bindings_of(g),
                                     in_len > 0 ? &inb : GSS_C_NO_BUFFER,
                                     &actual, out, &flags, NULL);
    } else {
        major = gss_accept_sec_context(&minor, &g->ctx, g->cred, &inb,
                                       bindings_of(g), NULL, &actual, out,
                                       &flags, NULL, &g->deleg_cred);
    }
    if (GSS_ERROR(major)) {
        /* A krb5 acceptor may hand out a KRB-ERROR token; MS-NNS sends
         * an error message instead, so it is dropped. */
        gss_release_buffer(&tmp, out);
        if (g->is_server && bindings_refused(g, major, first_step))
            negstream__err_gss(err, NEGSTREAM_E_AUTHENTICATION,
                               GSS_ROUTINE_ERROR(major) == GSS_S_BAD_BINDINGS
                               ? BINDINGS_PREFIX "the client's do not match "
                               "the server's (a relayed authentication?)"
                               : BINDINGS_PREFIX "the client's do not match "
                               "the server's, or its NTLM message was "
                               "altered (a relayed authentication?)",
                               major, minor);
        else if (g->is_server)
            negstream__err_gss(err, accept_status(in, in_len, major,
                                                  minor),
                               "accepting the client's token", major, minor);
        else
            negstream__err_gss(err, cred_status(major, minor),
                               in_len > 0 ?
                               "processing the server's token" :
                               "creating the first token", major, minor);
        NEGSTREAM__TRACE("gss: %s step failed (major 0x%x, minor %u)",
                         g->is_server ? "accept" : "init", (unsigned)major,
                         (unsigned)minor);
        return -1;
    }
    if (out->length > NEGSTREAM__HS_MAX_PAYLOAD) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           "the GSSAPI token of %zu bytes does not fit in "
                           "a handshake message (at most %u bytes)",
                           out->length, (unsigned)NEGSTREAM__HS_MAX_PAYLOAD);
        gss_release_buffer(&tmp, out);
        return -1;
    }
    NEGSTREAM__TRACE("gss: %s step: %s, %zu bytes in, %zu bytes out",
                     g->is_server ? "accept" : "init",
                     (major & GSS_S_CONTINUE_NEEDED) ? "continue needed" :
                     "complete", in_len, out->length);
    if (major & GSS_S_CONTINUE_NEEDED)
        return 1;

    g->complete = true;
    g->ret_flags = flags;
    g->actual_mech = actual;
    g->is_ntlm = oid_equal(actual, &oid_ntlm);
    /* The context holds its own keys from here on.  A credential
     * acquired with a password may keep that password (MIT keeps it to
     * get tickets later): release it now, not when the stream goes. */
    if (g->cred != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&tmp, &g->cred);
    g->cred = GSS_C_NO_CREDENTIAL;
    if (g->is_server) {
        if (server_peer_name(g, err) < 0)
            goto fail;
    } else {
        g->peer_name = strdup(g->target_str);
        if (g->peer_name == NULL) {
            negstream__err_set(err, NEGSTREAM_E_NOMEM,
                               "out of memory copying the target name");
            goto fail;
        }
    }
    NEGSTREAM__TRACE("gss: context complete: mech %s, flags 0x%x "
                     "(%s%s%s%s%s%s%s)", oid_text(actual), (unsigned)flags,
                     (flags & GSS_C_CONF_FLAG) ? "conf " : "",
                     (flags & GSS_C_INTEG_FLAG) ? "integ " : "",
                     (flags & GSS_C_MUTUAL_FLAG) ? "mutual " : "",
                     (flags & GSS_C_IDENTIFY_FLAG) ? "identify " : "",
                     (flags & GSS_C_DELEG_FLAG) ? "deleg " : "",
                     channel_bound(g) ? "channel-bound " : "",
                     (flags & (GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG)) ?
                     "replay/sequence" : "");
    negstream__gss_take_over(g);
    return 0;
fail:
    gss_release_buffer(&tmp, out);
    return -1;
}

void negstream__gss_release(gss_buffer_desc *buf)
{
    OM_uint32 minor;

    if (buf != NULL && buf->value != NULL)
        gss_release_buffer(&minor, buf);
    if (buf != NULL) {
        buf->value = NULL;
        buf->length = 0;
    }
}

/* ---- outcome ----------------------------------------------------------- */

static negstream_protection achieved_level(const negstream__gss *g)
{
    if (g->ret_flags & GSS_C_CONF_FLAG)
        return NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    if (g->ret_flags & GSS_C_INTEG_FLAG)
        return NEGSTREAM_PROTECTION_SIGN;
    return NEGSTREAM_PROTECTION_NONE;
}

/*
 * The outcome check (negstream(7), CONCEPTS), in .NET's order: Extended
 * Protection first (where .NET checks the service name, and where SSPI
 * refuses missing bindings), server impersonation, the protection level
 * (both roles), then our own additions: the server's explicit mechanism
 * and the client's require_mutual_auth.
 *
 * Impersonation with MIT: the krb5 acceptor reports IDENTIFY only when the
 * client asked for it, and no flag means "Impersonation", which is above
 * Identification; so the default requirement (Identification) is met by
 * every client, MIT or .NET.  Only a server requiring Delegation needs a
 * client that asked for, and got, a delegated ticket.
 *
 * Extended Protection Always needs GSS_C_CHANNEL_BOUND_FLAG: GSSAPI
 * refuses bindings that differ but accepts a client that sent none, and
 * the authentication of a client that binds nothing can be relayed.
 */
static int check_policy(const negstream__gss *g, negstream_protection got,
                        negstream_error *err)
{
    if (g->is_server &&
        g->extended_protection == NEGSTREAM_EXTENDED_PROTECTION_ALWAYS &&
        !channel_bound(g)) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           BINDINGS_PREFIX "the client sent none, and "
                           "Extended Protection is Always (the client must "
                           "bind to this TLS channel)");
        return -1;
    }
    if (g->is_server) {
        negstream_impersonation imp = negstream__gss_impersonation(g);

        if ((int)imp < (int)g->impersonation) {
            negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                               POLICY_PREFIX "the client allows "
                               "impersonation level %s, the server requires "
                               "%s", imp_text(imp),
                               imp_text(g->impersonation));
            return -1;
        }
    }
    if (g->protection != NEGSTREAM_PROTECTION_NONE &&
        (int)got < (int)g->protection) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           POLICY_PREFIX "the remote side did not grant the "
                           "required protection level (required %s, got %s)",
                           level_text(g->protection), level_text(got));
        return -1;
    }
    if (g->is_server && g->mech != NEGSTREAM__MECH_NEGOTIATE &&
        !oid_equal(g->actual_mech, mech_oid(g->mech))) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           POLICY_PREFIX "the client used %s, the server "
                           "requires %s", oid_text(g->actual_mech),
                           mech_text(g->mech));
        return -1;
    }
    if (!g->is_server && g->require_mutual && !negstream__gss_is_mutual(g)) {
        negstream__err_set(err, NEGSTREAM_E_AUTHENTICATION,
                           POLICY_PREFIX "mutual authentication was "
                           "required but not granted%s",
                           g->is_ntlm ? " (NTLM cannot provide it)" : "");
        return -1;
    }
    return 0;
}

int negstream__gss_check_outcome(negstream__gss *g, negstream_error *err)
{
    negstream_protection got = achieved_level(g);
    OM_uint32 minor;

    if (check_policy(g, got, err) < 0) {
        /* A delegated credential must not outlive the refusal. */
        if (g->deleg_cred != GSS_C_NO_CREDENTIAL)
            gss_release_cred(&minor, &g->deleg_cred);
        return -1;
    }
    NEGSTREAM__TRACE("gss: outcome accepted: %s, %s", level_text(got),
                     imp_text(negstream__gss_impersonation(g)));
    return 0;
}

uint32_t negstream__gss_error_code(const negstream_error *failure)
{
    if (failure == NULL)
        return NEGSTREAM__ERR_INTERNAL;
    if (failure->code == NEGSTREAM_E_INVALID_CREDENTIAL)
        return NEGSTREAM__ERR_LOGON_DENIED;
    if (failure->code == NEGSTREAM_E_AUTHENTICATION &&
        strncmp(failure->message, POLICY_PREFIX,
                sizeof(POLICY_PREFIX) - 1) == 0)
        return NEGSTREAM__ERR_TRUST_FAILURE;
    return NEGSTREAM__ERR_INTERNAL;
}

/* ---- properties -------------------------------------------------------- */

bool negstream__gss_is_encrypted(const negstream__gss *g)
{
    return g->complete && (g->ret_flags & GSS_C_CONF_FLAG) != 0;
}

bool negstream__gss_is_signed(const negstream__gss *g)
{
    return g->complete &&
           (g->ret_flags & (GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG)) != 0;
}

bool negstream__gss_is_mutual(const negstream__gss *g)
{
    return g->complete && (g->ret_flags & GSS_C_MUTUAL_FLAG) != 0 &&
           !g->is_ntlm;
}

bool negstream__gss_is_framed(const negstream__gss *g)
{
    return negstream__gss_is_signed(g);
}

/* As .NET computes it; on the server an NTLM client counts as
 * Identification, because gss-ntlmssp never reports IDENTIFY and .NET's
 * Unix shim adds it (so a server requiring Identification accepts NTLM
 * and one requiring Impersonation does not, as with .NET). */
negstream_impersonation negstream__gss_impersonation(const negstream__gss *g)
{
    if (!g->complete)
        return NEGSTREAM_IMPERSONATION_NONE;
    if ((g->ret_flags & GSS_C_DELEG_FLAG) && !g->is_ntlm)
        return NEGSTREAM_IMPERSONATION_DELEGATION;
    if ((g->ret_flags & GSS_C_IDENTIFY_FLAG) || (g->is_server && g->is_ntlm))
        return NEGSTREAM_IMPERSONATION_IDENTIFICATION;
    return NEGSTREAM_IMPERSONATION_IMPERSONATION;
}

const char *negstream__gss_auth_type(const negstream__gss *g)
{
    if (!g->complete)
        return mech_text(g->mech);
    if (g->is_ntlm)
        return "NTLM";
    if (oid_equal(g->actual_mech, &oid_krb5))
        return "Kerberos";
    return "Negotiate";
}

bool negstream__gss_is_channel_bound(const negstream__gss *g)
{
    return g->is_server && channel_bound(g);
}

/* ---- delegation -------------------------------------------------------- */

/*
 * gss_store_cred_into the ccache: every mechanism's element of the
 * delegated credential (krb5's, also when SPNEGO carried it), overwriting
 * (the ccache is initialised for the delegating principal), and not made
 * the default (no ccache collection is switched).
 */
int negstream__gss_store_delegated(negstream__gss *g, const char *ccache_name,
                                   negstream_error *err)
{
#if HAVE_GSS_STORE_CRED_INTO
    OM_uint32 major, minor;
    gss_key_value_element_desc el;
    gss_key_value_set_desc store = { 1, &el };

    if (g->deleg_cred == GSS_C_NO_CREDENTIAL) {
        negstream__err_set(err, NEGSTREAM_E_INVALID_OPERATION,
                           "the client delegated no credentials (it must "
                           "ask for impersonation level Delegation, with a "
                           "forwardable Kerberos ticket; NTLM never "
                           "delegates)");
        return -1;
    }
    el.key = "ccache";
    el.value = ccache_name;
    major = gss_store_cred_into(&minor, g->deleg_cred, GSS_C_INITIATE,
                                GSS_C_NO_OID, 1, 0, &store, NULL, NULL);
    if (GSS_ERROR(major)) {
        /* The credential expired, or the ccache could not be written
         * (no such directory, no permission, an unknown ccache type). */
        negstream__err_gss_nohint(err, GSS_ROUTINE_ERROR(major) ==
                                  GSS_S_CREDENTIALS_EXPIRED ?
                                  NEGSTREAM_E_INVALID_CREDENTIAL :
                                  NEGSTREAM_E_IO,
                                  "storing the delegated credentials in the "
                                  "ccache", major, minor);
        return -1;
    }
    NEGSTREAM__TRACE("gss: delegated credentials stored in %s", ccache_name);
    negstream__err_ok(err);
    return 0;
#else
    (void)g;
    (void)ccache_name;
    negstream__err_set(err, NEGSTREAM_E_NOT_SUPPORTED,
                       "storing delegated credentials needs "
                       "gss_store_cred_into, which this GSSAPI library "
                       "lacks");
    return -1;
#endif
}

/* ---- per-message protection -------------------------------------------- */

static bool conf_granted(const negstream__gss *g)
{
    return (g->ret_flags & GSS_C_CONF_FLAG) != 0;
}

/* .NET's layout for NTLM without confidentiality (negstream(7),
 * INTEROPERABILITY): the 16-byte signature from gss_get_mic, then the
 * plaintext. */
static ssize_t wrap_mic(negstream__gss *g, const void *in, size_t len,
                        uint8_t *out, size_t cap, negstream_error *err)
{
    OM_uint32 major, minor, tmp;
    gss_buffer_desc msg, mic = GSS_C_EMPTY_BUFFER;
    ssize_t rc = -1;

    msg.value = (void *)in;
    msg.length = len;
    major = gss_get_mic(&minor, g->ctx, GSS_C_QOP_DEFAULT, &msg, &mic);
    if (major != GSS_S_COMPLETE) {
        negstream__err_gss(err, NEGSTREAM_E_IO,
                           "write failed: could not sign the data", major,
                           minor);
        goto out;
    }
    if (mic.length != NTLM_SIG_SIZE || cap < NTLM_SIG_SIZE + len) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "write failed: could not sign the data: "
                           "signature of %zu bytes (expected %d) or no room "
                           "(%zu bytes for %zu)", mic.length, NTLM_SIG_SIZE,
                           cap, len);
        goto out;
    }
    memcpy(out, mic.value, NTLM_SIG_SIZE);
    memmove(out + NTLM_SIG_SIZE, in, len);
    rc = (ssize_t)(NTLM_SIG_SIZE + len);
out:
    gss_release_buffer(&tmp, &mic);
    return rc;
}

#if HAVE_GSS_WRAP_IOV && HAVE_GSS_WRAP_IOV_LENGTH && USE_GSS_IOV
/*
 * Wraps straight into the caller's buffer: HEADER | DATA | PADDING |
 * TRAILER laid end to end is the same token gss_wrap would produce (for
 * RFC 4121 with a separate trailer MIT writes RRC 0).  Returns -2 when the
 * mechanism has no IOV support (the caller falls back and remembers).
 */
static ssize_t wrap_iov(negstream__gss *g, const void *in, size_t len,
                        uint8_t *out, size_t cap, negstream_error *err)
{
    OM_uint32 major, minor;
    gss_iov_buffer_desc iov[4];
    int conf = conf_granted(g), conf_state = 0;
    size_t total;

    memset(iov, 0, sizeof(iov));
    iov[0].type = GSS_IOV_BUFFER_TYPE_HEADER;
    iov[1].type = GSS_IOV_BUFFER_TYPE_DATA;
    iov[1].buffer.length = len;
    iov[2].type = GSS_IOV_BUFFER_TYPE_PADDING;
    iov[3].type = GSS_IOV_BUFFER_TYPE_TRAILER;
    major = gss_wrap_iov_length(&minor, g->ctx, conf, GSS_C_QOP_DEFAULT,
                                &conf_state, iov, 4);
    if (GSS_ROUTINE_ERROR(major) == GSS_S_UNAVAILABLE ||
        GSS_ROUTINE_ERROR(major) == GSS_S_BAD_MECH)
        return -2;
    if (major != GSS_S_COMPLETE) {
        negstream__err_gss(err, NEGSTREAM_E_IO,
                           "write failed: could not encrypt/sign the data",
                           major, minor);
        return -1;
    }
    total = iov[0].buffer.length + len + iov[2].buffer.length +
            iov[3].buffer.length;
    if (total > cap) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "write failed: a wrap token of %zu bytes does "
                           "not fit in %zu bytes", total, cap);
        return -1;
    }
    iov[0].buffer.value = out;
    iov[1].buffer.value = out + iov[0].buffer.length;
    iov[2].buffer.value = (uint8_t *)iov[1].buffer.value + len;
    iov[3].buffer.value = (uint8_t *)iov[2].buffer.value +
                          iov[2].buffer.length;
    memmove(iov[1].buffer.value, in, len);
    major = gss_wrap_iov(&minor, g->ctx, conf, GSS_C_QOP_DEFAULT,
                         &conf_state, iov, 4);
    if (major != GSS_S_COMPLETE) {
        negstream__err_gss(err, NEGSTREAM_E_IO,
                           "write failed: could not encrypt/sign the data",
                           major, minor);
        return -1;
    }
    if (conf && !conf_state) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "write failed: could not encrypt the data (the "
                           "mechanism did not encrypt)");
        return -1;
    }
    return (ssize_t)total;
}
#endif

static ssize_t wrap_plain(negstream__gss *g, const void *in, size_t len,
                          uint8_t *out, size_t cap, negstream_error *err)
{
    OM_uint32 major, minor, tmp;
    gss_buffer_desc msg, tok = GSS_C_EMPTY_BUFFER;
    int conf = conf_granted(g), conf_state = 0;
    ssize_t rc = -1;

    msg.value = (void *)in;
    msg.length = len;
    major = gss_wrap(&minor, g->ctx, conf, GSS_C_QOP_DEFAULT, &msg,
                     &conf_state, &tok);
    if (major != GSS_S_COMPLETE) {
        negstream__err_gss(err, NEGSTREAM_E_IO,
                           "write failed: could not encrypt/sign the data",
                           major, minor);
        goto out;
    }
    if (conf && !conf_state) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "write failed: could not encrypt the data (the "
                           "mechanism did not encrypt)");
        goto out;
    }
    if (tok.length > cap) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "write failed: a wrap token of %zu bytes does "
                           "not fit in %zu bytes", tok.length, cap);
        goto out;
    }
    memcpy(out, tok.value, tok.length);
    rc = (ssize_t)tok.length;
out:
    /* Without confidentiality the token carries the plaintext. */
    negstream__wipe(tok.value, tok.length);
    gss_release_buffer(&tmp, &tok);
    return rc;
}

ssize_t negstream__gss_wrap(negstream__gss *g, const void *in, size_t len,
                            void *out, size_t cap, negstream_error *err)
{
    ssize_t n;

    if (!g->complete || g->ctx == GSS_C_NO_CONTEXT) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "write failed: no established security context");
        return -1;
    }
    if (g->is_ntlm && len == 0) {
        /* gss-ntlmssp refuses empty messages (and the stream never sends
         * one: a 0-byte write sends nothing). */
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "write failed: NTLM cannot sign or encrypt an "
                           "empty message");
        return -1;
    }
#if HAVE_OPENSSL
    if (g->cfx != NULL) {
        const char *why = "";
        size_t need = negstream__cfx_wrap_size(g->cfx, conf_granted(g), len);

        if (need > cap) {
            negstream__err_set(err, NEGSTREAM_E_IO,
                               "write failed: a wrap token of %zu bytes does "
                               "not fit in %zu bytes", need, cap);
            return -1;
        }
        n = negstream__cfx_wrap(g->cfx, conf_granted(g), in, len, out, cap,
                                &why);
        if (n < 0)
            negstream__err_set(err, NEGSTREAM_E_IO,
                               "write failed: could not encrypt/sign the "
                               "data: %s", why);
        return n;
    }
#endif
    if (g->is_ntlm && !conf_granted(g))
        return wrap_mic(g, in, len, out, cap, err);
#if HAVE_GSS_WRAP_IOV && HAVE_GSS_WRAP_IOV_LENGTH && USE_GSS_IOV
    if (g->wrap_iov != IOV_UNSUPPORTED) {
        n = wrap_iov(g, in, len, out, cap, err);
        if (n != -2) {
            g->wrap_iov = IOV_WORKS;
            return n;
        }
        NEGSTREAM__TRACE("gss: no gss_wrap_iov for this mechanism, using "
                         "gss_wrap");
        g->wrap_iov = IOV_UNSUPPORTED;
    }
#endif
    n = wrap_plain(g, in, len, out, cap, err);
    return n;
}

/* Any status but a plain GSS_S_COMPLETE fails an unwrap: a duplicate, old,
 * unsequenced or gap token is a replay or a reordering, and such data
 * must never reach the reader. */
static ssize_t unwrap_failed(OM_uint32 major, OM_uint32 minor,
                             negstream_error *err)
{
    negstream__err_gss(err, NEGSTREAM_E_IO,
                       "read failed: could not decrypt/verify the frame",
                       major, minor);
    NEGSTREAM__TRACE("gss: unwrap failed (major 0x%x, minor %u)",
                     (unsigned)major, (unsigned)minor);
    return -1;
}

static ssize_t unwrap_mic(negstream__gss *g, uint8_t *buf, size_t len,
                          size_t *plain_off, negstream_error *err)
{
    OM_uint32 major, minor;
    gss_buffer_desc msg, mic;

    if (len <= NTLM_SIG_SIZE) {
        /* gss-ntlmssp cannot verify the signature of an empty message */
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "read failed: could not decrypt/verify the frame: "
                           "%zu bytes, no NTLM message after the signature",
                           len);
        return -1;
    }
    mic.value = buf;
    mic.length = NTLM_SIG_SIZE;
    msg.value = buf + NTLM_SIG_SIZE;
    msg.length = len - NTLM_SIG_SIZE;
    major = gss_verify_mic(&minor, g->ctx, &msg, &mic, NULL);
    if (major != GSS_S_COMPLETE)
        return unwrap_failed(major, minor, err);
    *plain_off = NTLM_SIG_SIZE;
    return (ssize_t)(len - NTLM_SIG_SIZE);
}

#if HAVE_GSS_UNWRAP_IOV && USE_GSS_IOV
/* In place: the mechanism points DATA into the token.  -2: no IOV. */
static ssize_t unwrap_iov(negstream__gss *g, uint8_t *buf, size_t len,
                          size_t *plain_off, negstream_error *err)
{
    OM_uint32 major, minor, tmp;
    gss_iov_buffer_desc iov[2];
    int conf_state = 0;
    gss_qop_t qop = 0;
    size_t n;

    memset(iov, 0, sizeof(iov));
    iov[0].type = GSS_IOV_BUFFER_TYPE_STREAM;
    iov[0].buffer.value = buf;
    iov[0].buffer.length = len;
    iov[1].type = GSS_IOV_BUFFER_TYPE_DATA;
    major = gss_unwrap_iov(&minor, g->ctx, &conf_state, &qop, iov, 2);
    if (GSS_ROUTINE_ERROR(major) == GSS_S_UNAVAILABLE ||
        GSS_ROUTINE_ERROR(major) == GSS_S_BAD_MECH)
        return -2;
    if (major != GSS_S_COMPLETE) {
        gss_release_iov_buffer(&tmp, iov, 2);
        return unwrap_failed(major, minor, err);
    }
    n = iov[1].buffer.length;
    if (iov[1].type & GSS_IOV_BUFFER_FLAG_ALLOCATED) {
        /* Not in place after all: the plaintext is never longer than its
         * token, so it fits at the front of buf. */
        memmove(buf, iov[1].buffer.value, n);
        negstream__wipe(iov[1].buffer.value, n);
        gss_release_iov_buffer(&tmp, iov, 2);
        *plain_off = 0;
    } else if (n == 0) {
        *plain_off = 0;
    } else {
        *plain_off = (size_t)((uint8_t *)iov[1].buffer.value - buf);
    }
    return (ssize_t)n;
}
#endif

static ssize_t unwrap_plain(negstream__gss *g, uint8_t *buf, size_t len,
                            size_t *plain_off, negstream_error *err)
{
    OM_uint32 major, minor, tmp;
    gss_buffer_desc tok, msg = GSS_C_EMPTY_BUFFER;
    int conf_state = 0;
    gss_qop_t qop = 0;
    ssize_t rc = -1;

    tok.value = buf;
    tok.length = len;
    major = gss_unwrap(&minor, g->ctx, &tok, &msg, &conf_state, &qop);
    if (major != GSS_S_COMPLETE) {
        rc = unwrap_failed(major, minor, err);
        goto out;
    }
    if (msg.length > len) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "read failed: could not decrypt/verify the frame: "
                           "%zu bytes of plaintext from a %zu-byte token",
                           msg.length, len);
        goto out;
    }
    if (msg.length > 0)
        memcpy(buf, msg.value, msg.length);
    *plain_off = 0;
    rc = (ssize_t)msg.length;
out:
    negstream__wipe(msg.value, msg.length);    /* decrypted plaintext */
    gss_release_buffer(&tmp, &msg);
    return rc;
}

/* conf_state is not checked, as .NET does not: the peer chose, and the
 * frame's integrity was verified either way. */
ssize_t negstream__gss_unwrap(negstream__gss *g, uint8_t *buf, size_t len,
                              size_t *plain_off, negstream_error *err)
{
    ssize_t n;

    *plain_off = 0;
    if (!g->complete || g->ctx == GSS_C_NO_CONTEXT) {
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "read failed: no established security context");
        return -1;
    }
#if HAVE_OPENSSL
    if (g->cfx != NULL) {
        const char *why = "";
        bool sealed = false;

        n = negstream__cfx_unwrap(g->cfx, buf, len, plain_off, &sealed,
                                  &why);
        if (n < 0) {
            negstream__err_set(err, NEGSTREAM_E_IO,
                               "read failed: could not decrypt/verify the "
                               "frame: %s", why);
            NEGSTREAM__TRACE("gss: unwrap failed (openssl): %s", why);
        }
        return n;
    }
#endif
    if (g->is_ntlm && !conf_granted(g))
        return unwrap_mic(g, buf, len, plain_off, err);
    if (g->is_ntlm && len <= NTLM_SIG_SIZE) {
        /* gss-ntlmssp refuses an empty message, and older versions do
         * not check that the token holds a whole signature. */
        negstream__err_set(err, NEGSTREAM_E_IO,
                           "read failed: could not decrypt/verify the frame: "
                           "%zu bytes, no NTLM message after the signature",
                           len);
        return -1;
    }
#if HAVE_GSS_UNWRAP_IOV && USE_GSS_IOV
    /* MIT krb5 1.20's gss_unwrap_iov in stream mode dereferences NULL
     * when a Kerberos token is not a wrap token (a peer sending
     * "01 01 ...", the RFC 1964 MIC id, crashes the reader; found by
     * tests/fuzz/fuzz_reader).  Only CFX wrap tokens (05 04) go to it;
     * gss_unwrap refuses the others cleanly. */
    if (g->wrap_iov != IOV_UNSUPPORTED &&
        (g->is_ntlm || (len >= 2 && buf[0] == 0x05 && buf[1] == 0x04))) {
        n = unwrap_iov(g, buf, len, plain_off, err);
        if (n != -2) {
            g->wrap_iov = IOV_WORKS;
            return n;
        }
        NEGSTREAM__TRACE("gss: no gss_unwrap_iov for this mechanism, using "
                         "gss_unwrap");
        g->wrap_iov = IOV_UNSUPPORTED;
    }
#endif
    n = unwrap_plain(g, buf, len, plain_off, err);
    return n;
}

/* ---- teardown ---------------------------------------------------------- */

void negstream__gss_free(negstream__gss *g)
{
    OM_uint32 minor;

    if (g == NULL)
        return;
#if HAVE_OPENSSL
    negstream__cfx_free(g->cfx);         /* wipes keys and derived keys */
#endif
    g->cfx = NULL;
    if (g->ctx != GSS_C_NO_CONTEXT)
        gss_delete_sec_context(&minor, &g->ctx, GSS_C_NO_BUFFER);
    if (g->cred != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&minor, &g->cred);
    if (g->target != GSS_C_NO_NAME)
        gss_release_name(&minor, &g->target);
    /* MIT destroys the delegated credential's memory ccache, which wipes
     * the forwarded TGT's session key (krb5_free_keyblock_contents). */
    if (g->deleg_cred != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&minor, &g->deleg_cred);
    free(g->bindings.application_data.value);
    memset(&g->bindings, 0, sizeof(g->bindings));
    g->use_bindings = false;
    g->deleg_cred = GSS_C_NO_CREDENTIAL;
    g->ctx = GSS_C_NO_CONTEXT;
    g->cred = GSS_C_NO_CREDENTIAL;
    g->target = GSS_C_NO_NAME;
    free(g->target_str);
    free(g->peer_name);
    g->target_str = NULL;
    g->peer_name = NULL;
    g->complete = false;
    g->ret_flags = 0;
    g->actual_mech = GSS_C_NO_OID;
    g->is_ntlm = false;
    g->wrap_iov = IOV_UNKNOWN;
}
