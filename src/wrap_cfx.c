/*
 * wrap_cfx.c - RFC 4121 wrap tokens on OpenSSL 3 libcrypto for a Kerberos
 * context taken over after the handshake.  See wrap_cfx.h.
 *
 * Why: Debian's libk5crypto uses MIT's built-in AES and SHA without
 * AES-NI or SHA-NI, which caps gss_wrap/gss_unwrap far below what this
 * CPU does with OpenSSL (issue 14).  The tokens are byte for byte those
 * MIT makes (EC 0, RRC 0, AcceptorSubkey when the context has one), and
 * the checks on receipt are MIT krb5 1.20's (k5unsealiov.c, stream mode,
 * which is what gss.c's GSSAPI path calls for "05 04" tokens), so that a
 * token is accepted here exactly when MIT would accept it.  The
 * differential suite (tests/check_cfx_diff.c) and the fuzz target
 * (tests/fuzz/fuzz_cfx.c) hold us to that.
 *
 * Crypto (RFC 3961 simplified profile):
 *   aes*-sha1 (RFC 3962): Ke/Ki/Kc = DK(base, usage | AA/55/99) with
 *     KRB5KDF; E = AES-CBC-CTS(Ke, confounder | plaintext), zero IV;
 *     H = HMAC-SHA1(Ki, confounder | plaintext)[0..12).
 *   aes*-sha2 (RFC 8009): Ke/Ki/Kc = KDF-HMAC-SHA2(base, usage | AA/55/99)
 *     with KBKDF (counter mode, empty context); the same CTS encryption;
 *     H = HMAC(Ki, zero IV | ciphertext)[0..16 or 24).
 *   checksum: HMAC(Kc, data)[0..h).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "wrap_cfx.h"

/* RFC 4121 token layout */
#define TOK_WRAP_HI 0x05
#define TOK_WRAP_LO 0x04
#define FLAG_SENT_BY_ACCEPTOR 0x01
#define FLAG_SEALED 0x02
#define FLAG_ACCEPTOR_SUBKEY 0x04
#define HDR 16

/* GSS supplementary verdicts of MIT's g_seqstate_check, as ours. */
enum seq_verdict {
    SEQ_OK = 0,
    SEQ_DUPLICATE,
    SEQ_OLD,
    SEQ_UNSEQ,
    SEQ_GAP
};

struct negstream__krb_key {
    int              enctype;
    size_t           mac_len;
    bool             sha2;          /* RFC 8009 */
    EVP_CIPHER_CTX  *ke;            /* AES-CBC-CTS, CS3 */
    EVP_MAC_CTX     *ki;            /* HMAC with Ki */
    EVP_MAC_CTX     *kc;            /* HMAC with Kc */
};

/* MIT's receive window (util_seqstate.c), 64-bit sequence numbers. */
typedef struct seqstate {
    bool     do_replay;
    bool     do_sequence;
    uint64_t base;
    uint64_t next;
    uint64_t recvmap;
} seqstate;

struct negstream__cfx {
    bool                 initiator;
    bool                 have_acceptor_subkey;
    /* send half */
    negstream__krb_key  *send;
    uint8_t              send_flags;
    uint64_t             send_seq;
    /* receive half */
    negstream__krb_key  *recv_ctx;   /* context key, made on first use */
    negstream__krb_key  *recv_acc;   /* acceptor subkey, if any */
    int                  ctx_enctype;
    uint8_t              ctx_key[NEGSTREAM__KRB_KEY_MAX];
    size_t               ctx_key_len;
    int                  len_enctype; /* the one MIT sizes tokens with */
    uint32_t             recv_usage;
    seqstate             seq;
};

static const uint8_t zero_iv[NEGSTREAM__KRB_BLOCK];

/* ---- enctypes ----------------------------------------------------------- */

const char *negstream__krb_enctype_name(int enctype)
{
    switch (enctype) {
    case NEGSTREAM__ETYPE_AES128_SHA1:
        return "aes128-cts-hmac-sha1-96";
    case NEGSTREAM__ETYPE_AES256_SHA1:
        return "aes256-cts-hmac-sha1-96";
    case NEGSTREAM__ETYPE_AES128_SHA256:
        return "aes128-cts-hmac-sha256-128";
    case NEGSTREAM__ETYPE_AES256_SHA384:
        return "aes256-cts-hmac-sha384-192";
    }
    return NULL;
}

size_t negstream__krb_key_len(int enctype)
{
    switch (enctype) {
    case NEGSTREAM__ETYPE_AES128_SHA1:
    case NEGSTREAM__ETYPE_AES128_SHA256:
        return 16;
    case NEGSTREAM__ETYPE_AES256_SHA1:
    case NEGSTREAM__ETYPE_AES256_SHA384:
        return 32;
    }
    return 0;
}

size_t negstream__krb_mac_len(int enctype)
{
    switch (enctype) {
    case NEGSTREAM__ETYPE_AES128_SHA1:
    case NEGSTREAM__ETYPE_AES256_SHA1:
        return 12;
    case NEGSTREAM__ETYPE_AES128_SHA256:
        return 16;
    case NEGSTREAM__ETYPE_AES256_SHA384:
        return 24;
    }
    return 0;
}

static bool is_sha2(int enctype)
{
    return enctype == NEGSTREAM__ETYPE_AES128_SHA256 ||
           enctype == NEGSTREAM__ETYPE_AES256_SHA384;
}

static const char *digest_name(int enctype)
{
    switch (enctype) {
    case NEGSTREAM__ETYPE_AES128_SHA256:
        return "SHA256";
    case NEGSTREAM__ETYPE_AES256_SHA384:
        return "SHA384";
    }
    return "SHA1";
}

static const char *cbc_name(int enctype)
{
    return negstream__krb_key_len(enctype) == 32 ? "AES-256-CBC"
                                                 : "AES-128-CBC";
}

static const char *cts_name(int enctype)
{
    return negstream__krb_key_len(enctype) == 32 ? "AES-256-CBC-CTS"
                                                 : "AES-128-CBC-CTS";
}

/* ---- key derivation ----------------------------------------------------- */

int negstream__krb_derive(int enctype, const uint8_t *base, size_t base_len,
                          const uint8_t *constant, size_t constant_len,
                          uint8_t *out, size_t out_len)
{
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *kctx = NULL;
    OSSL_PARAM params[7], *p = params;
    int rc = -1;

    if (negstream__krb_key_len(enctype) == 0 ||
        base_len != negstream__krb_key_len(enctype) || out_len == 0 ||
        out_len > NEGSTREAM__KRB_KEY_MAX || constant_len == 0)
        goto out;
    if (is_sha2(enctype)) {
        /* RFC 8009 KDF-HMAC-SHA2(key, label, k): SP 800-108 counter
         * mode, K1 = HMAC(key, 00000001 | label | 00 | k), which is
         * OpenSSL's KBKDF with the label as "salt" and no context. */
        kdf = EVP_KDF_fetch(NULL, "KBKDF", NULL);
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE,
                                                (char *)"counter", 0);
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC,
                                                (char *)"HMAC", 0);
        *p++ = OSSL_PARAM_construct_utf8_string(
            OSSL_KDF_PARAM_DIGEST, (char *)digest_name(enctype), 0);
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                 (void *)base, base_len);
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                 (void *)constant,
                                                 constant_len);
    } else {
        /* RFC 3961 DK(key, constant) = random-to-key(DR(key, constant)),
         * the identity for AES. */
        kdf = EVP_KDF_fetch(NULL, "KRB5KDF", NULL);
        *p++ = OSSL_PARAM_construct_utf8_string(
            OSSL_KDF_PARAM_CIPHER, (char *)cbc_name(enctype), 0);
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                 (void *)base, base_len);
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_CONSTANT,
                                                 (void *)constant,
                                                 constant_len);
    }
    *p = OSSL_PARAM_construct_end();
    if (kdf == NULL)
        goto out;
    kctx = EVP_KDF_CTX_new(kdf);
    if (kctx == NULL || EVP_KDF_derive(kctx, out, out_len, params) != 1)
        goto out;
    rc = 0;
out:
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    if (rc != 0 && out != NULL && out_len > 0)
        OPENSSL_cleanse(out, out_len);
    return rc;
}

/* ---- one key, one usage ------------------------------------------------- */

/* AES-CBC-CTS, ciphertext stealing as RFC 3962 uses it (CS3: the last two
 * blocks swapped, always), zero IV, for one direction. */
static EVP_CIPHER_CTX *cts_new(int enctype, const uint8_t *key, bool encrypt)
{
    EVP_CIPHER *cipher;
    EVP_CIPHER_CTX *ctx = NULL;
    OSSL_PARAM params[2];

    cipher = EVP_CIPHER_fetch(NULL, cts_name(enctype), NULL);
    if (cipher == NULL)
        return NULL;
    ctx = EVP_CIPHER_CTX_new();
    params[0] = OSSL_PARAM_construct_utf8_string(
        OSSL_CIPHER_PARAM_CTS_MODE, (char *)"CS3", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx != NULL &&
        EVP_CipherInit_ex2(ctx, cipher, key, zero_iv, encrypt ? 1 : 0,
                           params) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        ctx = NULL;
    }
    EVP_CIPHER_free(cipher);
    return ctx;
}

static EVP_MAC_CTX *hmac_new(int enctype, const uint8_t *key, size_t len)
{
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL)
        return NULL;
    ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (ctx == NULL)
        return NULL;
    params[0] = OSSL_PARAM_construct_utf8_string(
        OSSL_MAC_PARAM_DIGEST, (char *)digest_name(enctype), 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(ctx, key, len, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void negstream__krb_key_free(negstream__krb_key *k)
{
    if (k == NULL)
        return;
    /* The OpenSSL contexts wipe their key schedules and HMAC pads when
     * freed (EVP_CIPHER_CTX_free cleanses the cipher data,
     * EVP_MAC_CTX_free the HMAC state). */
    EVP_CIPHER_CTX_free(k->ke);
    EVP_MAC_CTX_free(k->ki);
    EVP_MAC_CTX_free(k->kc);
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

int negstream__krb_key_enctype(const negstream__krb_key *k)
{
    return k->enctype;
}

negstream__krb_key *negstream__krb_key_new(int enctype, const uint8_t *key,
                                           size_t key_len, uint32_t usage,
                                           bool encrypt, const char **why)
{
    negstream__krb_key *k = NULL, *rk = NULL;
    uint8_t c[5], ke[NEGSTREAM__KRB_KEY_MAX], ki[NEGSTREAM__KRB_KEY_MAX],
            kc[NEGSTREAM__KRB_KEY_MAX];
    size_t elen = negstream__krb_key_len(enctype), ilen;

    if (elen == 0) {
        *why = "unsupported enctype";
        goto out;
    }
    if (key_len != elen) {
        *why = "key length does not match the enctype";
        goto out;
    }
    /* RFC 8009: Ki and Kc are 128 bits for sha256, 192 for sha384; RFC
     * 3962: all three are as long as the base key. */
    ilen = enctype == NEGSTREAM__ETYPE_AES256_SHA384 ? 24
           : enctype == NEGSTREAM__ETYPE_AES128_SHA256 ? 16 : elen;
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        *why = "out of memory";
        goto out;
    }
    k->enctype = enctype;
    k->mac_len = negstream__krb_mac_len(enctype);
    k->sha2 = is_sha2(enctype);
    c[0] = (uint8_t)(usage >> 24);
    c[1] = (uint8_t)(usage >> 16);
    c[2] = (uint8_t)(usage >> 8);
    c[3] = (uint8_t)usage;
    c[4] = 0xAA;
    if (negstream__krb_derive(enctype, key, key_len, c, 5, ke, elen) != 0)
        goto crypto;
    c[4] = 0x55;
    if (negstream__krb_derive(enctype, key, key_len, c, 5, ki, ilen) != 0)
        goto crypto;
    c[4] = 0x99;
    if (negstream__krb_derive(enctype, key, key_len, c, 5, kc, ilen) != 0)
        goto crypto;
    k->ke = cts_new(enctype, ke, encrypt);
    if (k->ke == NULL)
        goto crypto;
    k->ki = hmac_new(enctype, ki, ilen);
    k->kc = hmac_new(enctype, kc, ilen);
    if (k->ki == NULL || k->kc == NULL)
        goto crypto;
    rk = k;
    k = NULL;
    goto out;
crypto:
    *why = "OpenSSL 3 lacks AES-CBC-CTS, KRB5KDF, KBKDF or HMAC";
out:
    OPENSSL_cleanse(ke, sizeof(ke));
    OPENSSL_cleanse(ki, sizeof(ki));
    OPENSSL_cleanse(kc, sizeof(kc));
    negstream__krb_key_free(k);
    return rk;
}

/* HMAC over up to two pieces (the MAC context keeps its key across
 * messages: init with a NULL key restarts it), truncated to k->mac_len. */
static int hmac2(negstream__krb_key *k, EVP_MAC_CTX *m, const uint8_t *a,
                 size_t alen, const uint8_t *b, size_t blen, uint8_t *out)
{
    uint8_t full[EVP_MAX_MD_SIZE];
    size_t flen = 0;
    int rc = -1;

    if (EVP_MAC_init(m, NULL, 0, NULL) != 1)
        goto out;
    if (alen > 0 && EVP_MAC_update(m, a, alen) != 1)
        goto out;
    if (blen > 0 && EVP_MAC_update(m, b, blen) != 1)
        goto out;
    if (EVP_MAC_final(m, full, &flen, sizeof(full)) != 1 ||
        flen < k->mac_len)
        goto out;
    memcpy(out, full, k->mac_len);
    rc = 0;
out:
    OPENSSL_cleanse(full, sizeof(full));
    return rc;
}

/* AES-CBC-CTS over buf[0..n) in place, zero IV, in one update (OpenSSL's
 * CTS mode takes the whole message at once). */
static int cts(negstream__krb_key *k, uint8_t *buf, size_t n)
{
    int outl = 0;

    if (n < NEGSTREAM__KRB_BLOCK || n > INT32_MAX)
        return -1;
    if (EVP_CipherInit_ex2(k->ke, NULL, NULL, zero_iv, -1, NULL) != 1)
        return -1;
    if (EVP_CipherUpdate(k->ke, buf, &outl, buf, (int)n) != 1 ||
        (size_t)outl != n)
        return -1;
    return 0;
}

int negstream__krb_cts(int enctype, const uint8_t *key, bool encrypt,
                       uint8_t *buf, size_t n)
{
    negstream__krb_key k;
    int rc = -1;

    memset(&k, 0, sizeof(k));
    if (negstream__krb_key_len(enctype) == 0)
        return -1;
    k.ke = cts_new(enctype, key, encrypt);
    if (k.ke != NULL)
        rc = cts(&k, buf, n);
    EVP_CIPHER_CTX_free(k.ke);
    return rc;
}

int negstream__krb_encrypt(negstream__krb_key *k, uint8_t *buf, size_t n,
                           uint8_t *mac)
{
    if (k->sha2) {
        if (cts(k, buf, n) != 0)
            return -1;
        return hmac2(k, k->ki, zero_iv, sizeof(zero_iv), buf, n, mac);
    }
    if (hmac2(k, k->ki, buf, n, NULL, 0, mac) != 0)
        return -1;
    return cts(k, buf, n);
}

int negstream__krb_decrypt(negstream__krb_key *k, uint8_t *buf, size_t n,
                           const uint8_t *mac)
{
    uint8_t want[NEGSTREAM__KRB_MAC_MAX];
    int rc = -1;

    if (n < NEGSTREAM__KRB_BLOCK)
        return -1;
    if (k->sha2) {
        /* Encrypt-then-MAC: nothing is decrypted before the MAC holds. */
        if (hmac2(k, k->ki, zero_iv, sizeof(zero_iv), buf, n, want) != 0 ||
            CRYPTO_memcmp(want, mac, k->mac_len) != 0)
            goto out;
        rc = cts(k, buf, n);
        if (rc != 0)
            OPENSSL_cleanse(buf, n);
        goto out;
    }
    /* RFC 3962 MACs the plaintext: decrypt, check, and wipe on failure. */
    if (cts(k, buf, n) != 0 ||
        hmac2(k, k->ki, buf, n, NULL, 0, want) != 0 ||
        CRYPTO_memcmp(want, mac, k->mac_len) != 0) {
        OPENSSL_cleanse(buf, n);
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(want, sizeof(want));
    return rc;
}

int negstream__krb_checksum(negstream__krb_key *k, const uint8_t *a,
                            size_t alen, const uint8_t *b, size_t blen,
                            uint8_t *out)
{
    return hmac2(k, k->kc, a, alen, b, blen, out);
}

/* ---- MIT's sequence window ---------------------------------------------- */

/* util_seqstate.c's g_seqstate_check for 64-bit sequence numbers: the
 * same verdicts and the same state changes, except that a jump of 64 or
 * more clears the bitmap instead of shifting by >= 64 bits (undefined in
 * C; x86 would shift by the count mod 64).  That jump is a gap, a failed
 * read here, so the difference never reaches a verdict the stream acts
 * on. */
static enum seq_verdict seq_check(seqstate *s, uint64_t seqnum)
{
    uint64_t rel, offset, bit;

    if (!s->do_replay && !s->do_sequence)
        return SEQ_OK;
    rel = seqnum - s->base;
    if (rel >= s->next) {
        offset = rel - s->next;
        s->recvmap = offset + 1 >= 64 ? 1 : (s->recvmap << (offset + 1)) | 1;
        s->next = rel + 1;
        return (offset > 0 && s->do_sequence) ? SEQ_GAP : SEQ_OK;
    }
    offset = s->next - rel;
    if (offset > 64)
        return s->do_sequence ? SEQ_UNSEQ : SEQ_OLD;
    bit = (uint64_t)1 << (offset - 1);
    if (s->do_replay && (s->recvmap & bit))
        return SEQ_DUPLICATE;
    s->recvmap |= bit;
    return s->do_sequence ? SEQ_UNSEQ : SEQ_OK;
}

static const char *seq_text(enum seq_verdict v)
{
    switch (v) {
    case SEQ_OK:
        break;
    case SEQ_DUPLICATE:
        return "a replayed token (duplicate sequence number)";
    case SEQ_OLD:
        return "a token too old for the replay window";
    case SEQ_UNSEQ:
        return "a token out of sequence (earlier than one received)";
    case SEQ_GAP:
        return "a gap in the sequence (a token is missing)";
    }
    return "ok";
}

/* ---- the context -------------------------------------------------------- */

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static unsigned get16(const uint8_t *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

static void put64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

void negstream__cfx_free(negstream__cfx *c)
{
    if (c == NULL)
        return;
    negstream__krb_key_free(c->send);
    negstream__krb_key_free(c->recv_ctx);
    negstream__krb_key_free(c->recv_acc);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

negstream__cfx *negstream__cfx_new(const negstream__cfx_keys *keys,
                                   const char **why)
{
    negstream__cfx *c = NULL, *rc = NULL;
    uint32_t send_usage;

    if (negstream__krb_key_len(keys->ctx_enctype) == 0 ||
        (keys->have_acceptor_subkey &&
         negstream__krb_key_len(keys->acc_enctype) == 0)) {
        *why = "enctype not implemented here";
        goto out;
    }
    if (keys->ctx_key_len != negstream__krb_key_len(keys->ctx_enctype) ||
        (keys->have_acceptor_subkey &&
         keys->acc_key_len != negstream__krb_key_len(keys->acc_enctype))) {
        *why = "key length does not match its enctype";
        goto out;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        *why = "out of memory";
        goto out;
    }
    c->initiator = keys->initiator;
    c->have_acceptor_subkey = keys->have_acceptor_subkey;
    send_usage = c->initiator ? NEGSTREAM__KU_INITIATOR_SEAL
                              : NEGSTREAM__KU_ACCEPTOR_SEAL;
    c->recv_usage = c->initiator ? NEGSTREAM__KU_ACCEPTOR_SEAL
                                 : NEGSTREAM__KU_INITIATOR_SEAL;
    /* MIT sends with the acceptor subkey whenever the context has one
     * (k5sealv3.c), and says so in the flags. */
    c->send_flags = (uint8_t)((c->initiator ? 0 : FLAG_SENT_BY_ACCEPTOR) |
                              (c->have_acceptor_subkey ? FLAG_ACCEPTOR_SUBKEY
                                                       : 0));
    if (c->have_acceptor_subkey) {
        c->send = negstream__krb_key_new(keys->acc_enctype, keys->acc_key,
                                         keys->acc_key_len, send_usage, true,
                                         why);
        c->recv_acc = negstream__krb_key_new(keys->acc_enctype,
                                             keys->acc_key, keys->acc_key_len,
                                             c->recv_usage, false, why);
        if (c->send == NULL || c->recv_acc == NULL)
            goto out;
        c->len_enctype = keys->acc_enctype;
    } else {
        c->send = negstream__krb_key_new(keys->ctx_enctype, keys->ctx_key,
                                         keys->ctx_key_len, send_usage, true,
                                         why);
        if (c->send == NULL)
            goto out;
        c->len_enctype = keys->ctx_enctype;
    }
    /* The context key is needed on receipt only for a token without the
     * AcceptorSubkey flag (a peer that had not yet seen the acceptor's
     * subkey, or a context without one): kept to derive on first use. */
    c->ctx_enctype = keys->ctx_enctype;
    memcpy(c->ctx_key, keys->ctx_key, keys->ctx_key_len);
    c->ctx_key_len = keys->ctx_key_len;
    c->send_seq = keys->send_seq;
    c->seq.do_replay = keys->do_replay;
    c->seq.do_sequence = keys->do_sequence;
    c->seq.base = keys->recv_seq;
    rc = c;
    c = NULL;
out:
    negstream__cfx_free(c);
    return rc;
}

int negstream__cfx_enctype(const negstream__cfx *c)
{
    return c->send->enctype;
}

bool negstream__cfx_acceptor_subkey(const negstream__cfx *c)
{
    return c->have_acceptor_subkey;
}

size_t negstream__cfx_wrap_size(const negstream__cfx *c, bool conf,
                                size_t len)
{
    return HDR + (conf ? 2 * NEGSTREAM__KRB_BLOCK : 0) + len +
           c->send->mac_len;
}

static void put_header(const negstream__cfx *c, uint8_t *h, uint8_t flags,
                       unsigned ec)
{
    h[0] = TOK_WRAP_HI;
    h[1] = TOK_WRAP_LO;
    h[2] = flags;
    h[3] = 0xff;
    put16(h + 4, ec);
    put16(h + 6, 0);                       /* RRC */
    put64(h + 8, c->send_seq);
}

ssize_t negstream__cfx_wrap(negstream__cfx *c, bool conf, const void *in,
                            size_t len, uint8_t *out, size_t cap,
                            const char **why)
{
    negstream__krb_key *k = c->send;
    size_t need;

    if (len > SIZE_MAX - 128) {
        *why = "message too long";
        return -1;
    }
    need = negstream__cfx_wrap_size(c, conf, len);
    if (need > cap) {
        *why = "no room for the token";
        return -1;
    }
    if (conf) {
        /* header | E(confounder | data | header) | H */
        uint8_t *body = out + HDR;

        memmove(body + NEGSTREAM__KRB_BLOCK, in, len);
        put_header(c, out, c->send_flags | FLAG_SEALED, 0);
        memcpy(body + NEGSTREAM__KRB_BLOCK + len, out, HDR);
        if (RAND_bytes(body, NEGSTREAM__KRB_BLOCK) != 1 ||
            negstream__krb_encrypt(k, body, 2 * NEGSTREAM__KRB_BLOCK + len,
                                   body + 2 * NEGSTREAM__KRB_BLOCK +
                                   len) != 0) {
            OPENSSL_cleanse(out, need);
            *why = "OpenSSL could not encrypt";
            return -1;
        }
    } else {
        /* header | data | checksum(data | header with EC = RRC = 0) */
        memmove(out + HDR, in, len);
        put_header(c, out, c->send_flags, 0);
        if (negstream__krb_checksum(k, out + HDR, len, out, HDR,
                                    out + HDR + len) != 0) {
            *why = "OpenSSL could not sign";
            return -1;
        }
        put16(out + 4, (unsigned)k->mac_len);
    }
    c->send_seq++;
    return (ssize_t)need;
}

/* gss_krb5int_rotate_left, without the allocation for small counts. */
static int rotate_left(uint8_t *p, size_t n, size_t rc)
{
    uint8_t stackbuf[64], *t = stackbuf;

    if (n == 0)
        return 0;
    rc %= n;
    if (rc == 0)
        return 0;
    if (rc > sizeof(stackbuf)) {
        t = malloc(rc);
        if (t == NULL)
            return -1;
    }
    memcpy(t, p, rc);
    memmove(p, p + rc, n - rc);
    memcpy(p + n - rc, t, rc);
    OPENSSL_cleanse(t, rc);
    if (t != stackbuf)
        free(t);
    return 0;
}

static negstream__krb_key *recv_key(negstream__cfx *c, uint8_t flags,
                                    const char **why)
{
    if (c->have_acceptor_subkey && (flags & FLAG_ACCEPTOR_SUBKEY))
        return c->recv_acc;
    if (c->recv_ctx == NULL)
        c->recv_ctx = negstream__krb_key_new(c->ctx_enctype, c->ctx_key,
                                             c->ctx_key_len, c->recv_usage,
                                             false, why);
    return c->recv_ctx;
}

ssize_t negstream__cfx_unwrap(negstream__cfx *c, uint8_t *buf, size_t len,
                              size_t *plain_off, bool *sealed,
                              const char **why)
{
    negstream__krb_key *k;
    uint8_t want[NEGSTREAM__KRB_MAC_MAX];
    size_t ec, hdr, trl, mac_len, body;
    enum seq_verdict v;
    bool conf;

    *plain_off = 0;
    *sealed = false;
    if (len < HDR) {
        *why = "token shorter than the 16-byte RFC 4121 header";
        return -1;
    }
    if (buf[0] != TOK_WRAP_HI || buf[1] != TOK_WRAP_LO) {
        *why = "not an RFC 4121 wrap token";
        return -1;
    }
    /* As MIT's stream mode: EC counts only for a sealed token here, RRC
     * is rotated away first and then reads as 0. */
    conf = (buf[2] & FLAG_SEALED) != 0;
    ec = conf ? get16(buf + 4) : 0;
    if (rotate_left(buf + HDR, len - HDR, get16(buf + 6)) != 0) {
        *why = "out of memory";
        return -1;
    }
    put16(buf + 6, 0);
    mac_len = negstream__krb_mac_len(c->len_enctype);
    hdr = HDR + (conf ? NEGSTREAM__KRB_BLOCK : 0);
    trl = ec + (conf ? HDR : 0) + mac_len;
    if (len < hdr + trl) {
        *why = "token too short for its EC and trailer";
        return -1;
    }
    if ((buf[2] & FLAG_SENT_BY_ACCEPTOR) !=
        (c->initiator ? FLAG_SENT_BY_ACCEPTOR : 0)) {
        *why = "token sent in the wrong direction (SentByAcceptor)";
        return -1;
    }
    k = recv_key(c, buf[2], why);
    if (k == NULL)
        return -1;
    if (buf[3] != 0xff) {
        *why = "bad filler byte";
        return -1;
    }
    if (k->mac_len != mac_len) {
        /* MIT sizes the token with one key and checks it with another */
        *why = "token sized for another enctype";
        return -1;
    }
    body = len - hdr - trl;
    if (conf) {
        const uint8_t *alt;
        size_t n = len - HDR - mac_len;

        if (negstream__krb_decrypt(k, buf + HDR, n, buf + len - mac_len)
            != 0) {
            *why = "bad MAC (tampered, or not for this context)";
            return -1;
        }
        alt = buf + HDR + n - HDR;
        if (alt[0] != TOK_WRAP_HI || alt[1] != TOK_WRAP_LO ||
            alt[2] != buf[2] || alt[3] != buf[3] ||
            CRYPTO_memcmp(alt + 8, buf + 8, 8) != 0) {
            OPENSSL_cleanse(buf + HDR, n);
            *why = "encrypted header copy differs from the header";
            return -1;
        }
        /* RFC 4121 4.2.4: the encrypted copy is of the header as sent,
         * RRC excepted (it is outside the checksum by design).  The EC
         * outside must be the EC inside, or a raised EC would turn the
         * tail of the message into "filler": MIT refuses such a token
         * too (tests/check_cfx_diff.c compares every EC bit). */
        if (alt[4] != buf[4] || alt[5] != buf[5]) {
            OPENSSL_cleanse(buf + HDR, n);
            *why = "EC differs from the encrypted header copy (a "
                   "truncated message)";
            return -1;
        }
    } else {
        if (get16(buf + 4) != mac_len) {
            *why = "EC of an integrity-only token is not the checksum "
                   "length";
            return -1;
        }
        put16(buf + 4, 0);
        if (negstream__krb_checksum(k, buf + HDR, body, buf, HDR, want)
            != 0 ||
            CRYPTO_memcmp(want, buf + HDR + body, mac_len) != 0) {
            OPENSSL_cleanse(want, sizeof(want));
            *why = "bad checksum (tampered, or not for this context)";
            return -1;
        }
        OPENSSL_cleanse(want, sizeof(want));
    }
    v = seq_check(&c->seq, get64(buf + 8));
    if (v != SEQ_OK) {
        if (conf)
            OPENSSL_cleanse(buf + HDR, len - HDR - mac_len);
        *why = seq_text(v);
        return -1;
    }
    *plain_off = hdr;
    *sealed = conf;
    return (ssize_t)body;
}

void negstream__cfx_window_get(const negstream__cfx *c,
                               negstream__cfx_window *w)
{
    w->next = c->seq.next;
    w->recvmap = c->seq.recvmap;
}

void negstream__cfx_window_set(negstream__cfx *c,
                               const negstream__cfx_window *w)
{
    c->seq.next = w->next;
    c->seq.recvmap = w->recvmap;
}
