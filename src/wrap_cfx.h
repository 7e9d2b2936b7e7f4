/*
 * wrap_cfx.h - RFC 4121 section 4.2 wrap tokens (Kerberos "CFX") made and
 * checked with OpenSSL 3 libcrypto, for a Kerberos context taken over
 * after the handshake (gss.c decides and hands the keys over).
 *
 * Two layers:
 *  - negstream__krb_*: the RFC 3961 simplified profile as RFC 3962
 *    (aes128/aes256-cts-hmac-sha1-96) and RFC 8009
 *    (aes128-cts-hmac-sha256-128, aes256-cts-hmac-sha384-192) define it:
 *    key derivation, encryption with a confounder and a truncated HMAC,
 *    checksums.  Pure functions of their inputs (the known-answer tests
 *    call them).
 *  - negstream__cfx_*: the per-context state: keys for each direction,
 *    the 64-bit send sequence number and MIT's receive window.
 *
 * Threads: a negstream__cfx has independent send and receive halves.
 * negstream__cfx_wrap touches only the send half and
 * negstream__cfx_unwrap only the receive half, so one wrap and one unwrap
 * may run at the same time; two wraps (or two unwraps) on one context
 * must be serialised by the caller.
 *
 * Everything here is built only with OpenSSL (HAVE_OPENSSL).
 */
#ifndef NEGSTREAM_WRAP_CFX_H
#define NEGSTREAM_WRAP_CFX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Kerberos enctype numbers (RFC 3962, RFC 8009). */
#define NEGSTREAM__ETYPE_AES128_SHA1   17
#define NEGSTREAM__ETYPE_AES256_SHA1   18
#define NEGSTREAM__ETYPE_AES128_SHA256 19
#define NEGSTREAM__ETYPE_AES256_SHA384 20

/* RFC 4121 key usages. */
#define NEGSTREAM__KU_ACCEPTOR_SEAL  22
#define NEGSTREAM__KU_ACCEPTOR_SIGN  23
#define NEGSTREAM__KU_INITIATOR_SEAL 24
#define NEGSTREAM__KU_INITIATOR_SIGN 25

/* The longest key (AES-256) and the longest truncated MAC (SHA-384/192). */
#define NEGSTREAM__KRB_KEY_MAX 32
#define NEGSTREAM__KRB_MAC_MAX 24
/* Confounder and cipher block. */
#define NEGSTREAM__KRB_BLOCK 16

/* The enctype's name as krb5.conf spells it, or NULL if we do not
 * implement it. */
const char *negstream__krb_enctype_name(int enctype);

/* Its key length in bytes (16 or 32), or 0 if unsupported. */
size_t negstream__krb_key_len(int enctype);

/* Its truncated HMAC length (the RFC 3961 "h" and the checksum length):
 * 12, 16 or 24, or 0 if unsupported. */
size_t negstream__krb_mac_len(int enctype);

/* Derives a key from base[0..base_len) for a constant (for key usages
 * the 5 bytes usage, big-endian, then 0x99 for Kc, 0xAA for Ke, 0x55 for
 * Ki; "kerberos" in string-to-key): RFC 3961 DK with AES for the sha1
 * enctypes (EVP_KDF "KRB5KDF"), RFC 8009 KDF-HMAC-SHA2 (EVP_KDF "KBKDF",
 * counter mode, the constant as label) for the sha2 ones; out_len bytes.
 * 0, or -1 (unsupported enctype, bad length, OpenSSL failure). */
int negstream__krb_derive(int enctype, const uint8_t *base, size_t base_len,
                          const uint8_t *constant, size_t constant_len,
                          uint8_t *out, size_t out_len);

/* Raw AES-CBC-CTS (CS3, zero IV, the RFC 3962 mode) of buf[0..n) in
 * place with key (the enctype's length), for the known-answer tests. */
int negstream__krb_cts(int enctype, const uint8_t *key, bool encrypt,
                       uint8_t *buf, size_t n);

/* One base key bound to one key usage, ready for one direction.  Opaque
 * to callers; freed (and its keys wiped) by negstream__krb_key_free. */
typedef struct negstream__krb_key negstream__krb_key;

/* Derives Ke, Ki and Kc for 'usage' from key[0..key_len) (its length must
 * be the enctype's) and prepares AES-CBC-CTS (CS3, zero IV) to encrypt
 * (encrypt true) or decrypt.  NULL on failure, with *why set. */
negstream__krb_key *negstream__krb_key_new(int enctype, const uint8_t *key,
                                           size_t key_len, uint32_t usage,
                                           bool encrypt, const char **why);
void negstream__krb_key_free(negstream__krb_key *k);
int negstream__krb_key_enctype(const negstream__krb_key *k);

/* RFC 3961 encryption in place: buf[0..n) holds confounder | plaintext
 * (n >= 16); it becomes the ciphertext, and the truncated HMAC
 * (negstream__krb_mac_len bytes) is written to mac.  0 or -1. */
int negstream__krb_encrypt(negstream__krb_key *k, uint8_t *buf, size_t n,
                           uint8_t *mac);

/* The reverse, in place.  Returns 0 when mac verifies (compared in
 * constant time); -1 otherwise, and then buf holds no plaintext: RFC 8009
 * checks the MAC before decrypting, and for RFC 3962 (whose MAC covers
 * the plaintext) a failure wipes what was decrypted. */
int negstream__krb_decrypt(negstream__krb_key *k, uint8_t *buf, size_t n,
                           const uint8_t *mac);

/* The checksum (HMAC with Kc, truncated) of the concatenation
 * a[0..alen) | b[0..blen), written to out.  0 or -1. */
int negstream__krb_checksum(negstream__krb_key *k, const uint8_t *a,
                            size_t alen, const uint8_t *b, size_t blen,
                            uint8_t *out);

/* ---- RFC 4121 wrap tokens on one context ------------------------------ */

typedef struct negstream__cfx negstream__cfx;

/* What gss.c reads from the lucid context (all of it copied: the caller
 * may wipe and free its copy afterwards). */
typedef struct negstream__cfx_keys {
    bool            initiator;
    int             ctx_enctype;     /* the context key (session key or
                                        initiator subkey) */
    const uint8_t  *ctx_key;
    size_t          ctx_key_len;
    bool            have_acceptor_subkey;
    int             acc_enctype;
    const uint8_t  *acc_key;
    size_t          acc_key_len;
    uint64_t        send_seq;        /* next sequence number to send */
    uint64_t        recv_seq;        /* first sequence number expected */
    bool            do_replay;       /* GSS_C_REPLAY_FLAG granted */
    bool            do_sequence;     /* GSS_C_SEQUENCE_FLAG granted */
} negstream__cfx_keys;

/* NULL with *why (a short reason for the trace) when an enctype is not
 * one of the four above, a key has the wrong length, or OpenSSL fails. */
negstream__cfx *negstream__cfx_new(const negstream__cfx_keys *keys,
                                   const char **why);

/* Wipes every key and derived key (OPENSSL_cleanse) and frees. */
void negstream__cfx_free(negstream__cfx *c);

/* The enctype tokens are sent with (the acceptor subkey's if any). */
int negstream__cfx_enctype(const negstream__cfx *c);
bool negstream__cfx_acceptor_subkey(const negstream__cfx *c);

/* Token size for len bytes of plaintext: 16 + 16 + len + 16 + h sealed,
 * 16 + len + h integrity-only. */
size_t negstream__cfx_wrap_size(const negstream__cfx *c, bool conf,
                                size_t len);

/* Makes the next wrap token (EC 0 and RRC 0, as MIT does) for in[0..len)
 * into out (cap bytes; in may lie inside out, the plaintext is moved
 * first).  Returns the token length, or -1 with *why (no room, OpenSSL
 * failure); the sequence number moves only on success. */
ssize_t negstream__cfx_wrap(negstream__cfx *c, bool conf, const void *in,
                            size_t len, uint8_t *out, size_t cap,
                            const char **why);

/* Checks and opens the wrap token buf[0..len) in place, as MIT krb5 1.20
 * gss_unwrap_iov (stream mode) does for a context with these flags: any
 * RRC is rotated away, every length, EC and flag is checked, the MAC is
 * compared in constant time, then the sequence number goes through MIT's
 * replay/sequence window.  On success returns the plaintext length with
 * the plaintext at buf + *plain_off and *sealed set.  On failure returns
 * -1 with *why, and buf holds no plaintext. */
ssize_t negstream__cfx_unwrap(negstream__cfx *c, uint8_t *buf, size_t len,
                              size_t *plain_off, bool *sealed,
                              const char **why);

/* The receive window, saved and put back by tests that try one token in
 * several forms (tests/check_cfx_diff.c, tests/fuzz/fuzz_cfx.c). */
typedef struct negstream__cfx_window {
    uint64_t next, recvmap;
} negstream__cfx_window;
void negstream__cfx_window_get(const negstream__cfx *c,
                               negstream__cfx_window *w);
void negstream__cfx_window_set(negstream__cfx *c,
                               const negstream__cfx_window *w);

#endif
