/*
 * check_cfx.c - wrap_cfx.c without a KDC: known-answer tests for the
 * Kerberos crypto (RFC 3962 appendix B, RFC 8009 appendix A; the RFC 3961
 * DK vectors for AES from MIT krb5's t_derive.c), then RFC 4121 tokens
 * between an initiator and an acceptor made from the same keys: round
 * trips, every one-bit change, RRC rotations, replays, gaps, reflection,
 * and that a failed unwrap leaves no plaintext behind.  The differential
 * suite against MIT is tests/check_cfx_diff.c (under the test realm).
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "wrap_cfx.h"

/* ---- helpers ------------------------------------------------------------ */

/* Parses hex (spaces ignored) into out; returns the byte count. */
static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;

    for (; *s; s++) {
        int v;

        if (*s == ' ')
            continue;
        if (*s >= '0' && *s <= '9')
            v = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            v = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            v = *s - 'A' + 10;
        else
            ck_abort_msg("bad hex digit '%c'", *s);
        if (hi < 0) {
            hi = v;
        } else {
            ck_assert_uint_lt(n, cap);
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    ck_assert_int_lt(hi, 0);
    return n;
}

static void ck_bytes(const uint8_t *got, const char *want_hex,
                     const char *what)
{
    uint8_t want[256];
    size_t n = unhex(want_hex, want, sizeof(want)), i;

    for (i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "%s: byte %zu is %02x, want %02x",
                      what, i, got[i], want[i]);
}

static const int etypes[] = {
    NEGSTREAM__ETYPE_AES128_SHA1, NEGSTREAM__ETYPE_AES256_SHA1,
    NEGSTREAM__ETYPE_AES128_SHA256, NEGSTREAM__ETYPE_AES256_SHA384
};
#define N_ETYPES 4

/* ---- RFC 3962 appendix B: AES-CBC-CTS, key "chicken teriyaki" ---------- */

static const char cts_plain[] =
    "I would like the General Gau's Chicken, please, and wonton soup.";
static const struct {
    size_t len;
    const char *out;
} cts_vec[] = {
    { 17, "c6353568f2bf8cb4d8a580362da7ff7f97" },
    { 31, "fc00783e0efdb2c1d445d4c8eff7ed2297687268d6ecccc0c07b25e25ecfe5" },
    { 32, "39312523a78662d5be7fcbcc98ebf5a8"
          "97687268d6ecccc0c07b25e25ecfe584" },
    { 47, "97687268d6ecccc0c07b25e25ecfe584b3fffd940c16a18c1b5549d2f838029e"
          "39312523a78662d5be7fcbcc98ebf5" },
    { 48, "97687268d6ecccc0c07b25e25ecfe5849dad8bbb96c4cdc03bc103e1a194bbd8"
          "39312523a78662d5be7fcbcc98ebf5a8" },
    { 64, "97687268d6ecccc0c07b25e25ecfe58439312523a78662d5be7fcbcc98ebf5a8"
          "4807efe836ee89a526730dbc2f7bc8409dad8bbb96c4cdc03bc103e1a194bbd8" },
};

START_TEST(cts_rfc3962)
{
    const uint8_t *key = (const uint8_t *)"chicken teriyaki";
    uint8_t buf[64];
    size_t len = cts_vec[_i].len;

    memcpy(buf, cts_plain, len);
    ck_assert_int_eq(negstream__krb_cts(NEGSTREAM__ETYPE_AES128_SHA1, key,
                                        true, buf, len), 0);
    ck_bytes(buf, cts_vec[_i].out, "CTS encryption");
    ck_assert_int_eq(negstream__krb_cts(NEGSTREAM__ETYPE_AES128_SHA1, key,
                                        false, buf, len), 0);
    ck_assert_mem_eq(buf, cts_plain, len);
}
END_TEST

/* ---- string-to-key: PBKDF2, then DK/KDF with "kerberos" ----------------- */

static const struct {
    int etype;
    int iter;
    const char *key;
} s2k_3962[] = {
    /* RFC 3962 appendix B: "password", salt "ATHENA.MIT.EDUraeburn" */
    { 17, 1, "42263c6e89f4fc28b8df68ee09799f15" },
    { 18, 1,
      "fe697b52bc0d3ce14432ba036a92e65b"
      "bb52280990a2fa27883998d72af30161" },
    { 17, 2, "c651bf29e2300ac27fa469d693bdda13" },
    { 18, 2,
      "a2e16d16b36069c135d5e9d2e25f8961"
      "02685618b95914b467c67622225824ff" },
    { 17, 1200, "4c01cd46d632d01e6dbe230a01ed642a" },
    { 18, 1200,
      "55a6ac740ad17b4846941051e1e8b0a7"
      "548d93b0ab30a8bc3ff16280382b8c2a" },
};

START_TEST(string_to_key_rfc3962)
{
    static const char salt[] = "ATHENA.MIT.EDUraeburn";
    uint8_t tkey[32], key[32];
    int e = s2k_3962[_i].etype;
    size_t len = negstream__krb_key_len(e);

    ck_assert_int_eq(PKCS5_PBKDF2_HMAC("password", 8,
                                       (const uint8_t *)salt, 21,
                                       s2k_3962[_i].iter, EVP_sha1(),
                                       (int)len, tkey), 1);
    ck_assert_int_eq(negstream__krb_derive(e, tkey, len,
                                           (const uint8_t *)"kerberos", 8,
                                           key, len), 0);
    ck_bytes(key, s2k_3962[_i].key, "string-to-key");
}
END_TEST

START_TEST(string_to_key_rfc8009)
{
    /* RFC 8009 appendix A: "password", 32768 iterations, saltp = the
     * enctype name | 00 | 16 random bytes | "ATHENA.MIT.EDUraeburn" */
    static const char *names[2] = {
        "aes128-cts-hmac-sha256-128", "aes256-cts-hmac-sha384-192"
    };
    static const char *want[2] = {
        "089bca48b105ea6ea77ca5d2f39dc5e7",
        "45bd806dbf6a833a9cffc1c94589a222367a79bc21c413718906e9f578a78467"
    };
    int e = _i == 0 ? NEGSTREAM__ETYPE_AES128_SHA256
                    : NEGSTREAM__ETYPE_AES256_SHA384;
    size_t len = negstream__krb_key_len(e), nl = strlen(names[_i]);
    uint8_t saltp[80], tkey[32], key[32];

    memcpy(saltp, names[_i], nl + 1);
    unhex("10df9dd783e5bc8acea1730e74355f61", saltp + nl + 1, 16);
    memcpy(saltp + nl + 17, "ATHENA.MIT.EDUraeburn", 21);
    ck_assert_int_eq(PKCS5_PBKDF2_HMAC("password", 8, saltp,
                                       (int)(nl + 38), 32768,
                                       _i == 0 ? EVP_sha256() : EVP_sha384(),
                                       (int)len, tkey), 1);
    ck_assert_int_eq(negstream__krb_derive(e, tkey, len,
                                           (const uint8_t *)"kerberos", 8,
                                           key, len), 0);
    ck_bytes(key, want[_i], "string-to-key");
}
END_TEST

/* ---- key derivation for usage 2: Kc (99), Ke (AA), Ki (55) -------------- */

static const struct {
    int etype;
    const char *base;
    uint8_t kind;
    const char *out;
} derive_vec[] = {
    /* RFC 8009 appendix A */
    { 19, "3705d96080c17728a0e800eab6e0d23c", 0x99,
      "b31a018a48f54776f403e9a396325dc3" },
    { 19, "3705d96080c17728a0e800eab6e0d23c", 0xAA,
      "9b197dd1e8c5609d6e67c3e37c62c72e" },
    { 19, "3705d96080c17728a0e800eab6e0d23c", 0x55,
      "9fda0e56ab2d85e1569a688696c26a6c" },
    { 20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52",
      0x99, "ef5718be86cc84963d8bbb5031e9f5c4ba41f28faf69e73d" },
    { 20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52",
      0xAA,
      "56ab22bee63d82d7bc5227f6773f8ea7"
      "a5eb1c825160c38312980c442e5c7e49" },
    { 20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52",
      0x55, "69b16514e3cd8e56b82010d5c73012b622c4d00ffc23ed1f" },
    /* RFC 3961 DK with AES (MIT krb5 t_derive.c), base = RFC 3962's
     * first string-to-key result */
    { 17, "42263c6e89f4fc28b8df68ee09799f15", 0x99,
      "34280a382bc92769b2da2f9ef066854b" },
    { 17, "42263c6e89f4fc28b8df68ee09799f15", 0xAA,
      "5b14fc4e250e14ddf9dccf1af6674f53" },
    { 17, "42263c6e89f4fc28b8df68ee09799f15", 0x55,
      "4ed31063621684f09ae8d89991af3e8f" },
    { 18, "fe697b52bc0d3ce14432ba036a92e65bbb52280990a2fa27883998d72af30161",
      0x99,
      "bfab388bdcb238e9f9c98d6a878304f0"
      "4d30c82556375ac507a7a852790f4674" },
    { 18, "fe697b52bc0d3ce14432ba036a92e65bbb52280990a2fa27883998d72af30161",
      0xAA,
      "c7cfd9cd75fe793a586a542d87e0d139"
      "6f1134a104bb1a9190b8c90ada3ddf37" },
    { 18, "fe697b52bc0d3ce14432ba036a92e65bbb52280990a2fa27883998d72af30161",
      0x55,
      "97151b4c76945063e2eb0529dc067d97"
      "d7bba90776d8126d91f34f3101aea8ba" },
};

START_TEST(derive_usage_keys)
{
    uint8_t base[32], out[32], c[5] = { 0, 0, 0, 2, 0 };
    size_t blen = unhex(derive_vec[_i].base, base, sizeof(base));
    size_t olen = (strlen(derive_vec[_i].out)) / 2;

    c[4] = derive_vec[_i].kind;
    ck_assert_int_eq(negstream__krb_derive(derive_vec[_i].etype, base, blen,
                                           c, 5, out, olen), 0);
    ck_bytes(out, derive_vec[_i].out, "derived key");
}
END_TEST

START_TEST(derive_rejects_bad_input)
{
    uint8_t base[32] = { 0 }, out[32], c[5] = { 0, 0, 0, 2, 0x99 };

    ck_assert_int_eq(negstream__krb_derive(23, base, 16, c, 5, out, 16), -1);
    ck_assert_int_eq(negstream__krb_derive(17, base, 32, c, 5, out, 16), -1);
    ck_assert_int_eq(negstream__krb_derive(17, base, 16, c, 0, out, 16), -1);
    ck_assert_int_eq(negstream__krb_derive(17, base, 16, c, 5, out, 33), -1);
}
END_TEST

/* ---- RFC 8009 appendix A: encryption (usage 2) -------------------------- */

static const struct {
    int etype;
    const char *key;
    const char *plain;
    const char *cipher;
} enc_vec[] = {
    { 19, "3705d96080c17728a0e800eab6e0d23c", "",
      "ef85fb890bb8472f4dab20394dca781dad877eda39d50c870c0d5a0a8e48c718" },
    { 19, "3705d96080c17728a0e800eab6e0d23c", "000102030405",
      "84d7f30754ed987bab0bf3506beb09cfb55402cef7e6877ce99e247e52d16ed4"
      "421dfdf8976c" },
    { 19, "3705d96080c17728a0e800eab6e0d23c",
      "000102030405060708090a0b0c0d0e0f",
      "3517d640f50ddc8ad3628722b3569d2ae07493fa8263254080ea65c1008e8fc2"
      "95fb4852e7d83e1e7c48c37eebe6b0d3" },
    { 19, "3705d96080c17728a0e800eab6e0d23c",
      "000102030405060708090a0b0c0d0e0f1011121314",
      "720f73b18d9859cd6ccb4346115cd336c70f58edc0c4437c5573544c31c813bc"
      "e1e6d072c186b39a413c2f92ca9b8334a287ffcbfc" },
    { 20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52",
      "",
      "41f53fa5bfe7026d91faf9be959195a058707273a96a40f0a01960621ac61274"
      "8b9bbfbe7eb4ce3c" },
    { 20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52",
      "000102030405",
      "4ed7b37c2bcac8f74f23c1cf07e62bc7b75fb3f637b9f559c7f664f69eab7b60"
      "92237526ea0d1f61cb20d69d10f2" },
    { 20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52",
      "000102030405060708090a0b0c0d0e0f",
      "bc47ffec7998eb91e8115cf8d19dac4bbbe2e163e87dd37f49beca92027764f6"
      "8cf51f14d798c2273f35df574d1f932e40c4ff255b36a266" },
    { 20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52",
      "000102030405060708090a0b0c0d0e0f1011121314",
      "40013e2df58e8751957d2878bcd2d6fe101ccfd556cb1eae79db3c3ee86429f2"
      "b2a602ac86fef6ecb647d6295fae077a1feb517508d2c16b4192e01f62" },
};

/* Decrypts the vector (checks the plaintext), encrypts its confounder and
 * plaintext again (checks every byte), and checks that a one-bit change
 * anywhere fails and leaves no plaintext. */
START_TEST(encrypt_rfc8009)
{
    uint8_t key[32], plain[32], ct[128], buf[128];
    size_t klen = unhex(enc_vec[_i].key, key, sizeof(key));
    size_t plen = unhex(enc_vec[_i].plain, plain, sizeof(plain));
    size_t clen = unhex(enc_vec[_i].cipher, ct, sizeof(ct)), h, n, bit;
    negstream__krb_key *dk, *ek;
    const char *why = NULL;

    dk = negstream__krb_key_new(enc_vec[_i].etype, key, klen, 2, false, &why);
    ek = negstream__krb_key_new(enc_vec[_i].etype, key, klen, 2, true, &why);
    ck_assert_ptr_nonnull(dk);
    ck_assert_ptr_nonnull(ek);
    h = negstream__krb_mac_len(enc_vec[_i].etype);
    n = clen - h;
    ck_assert_uint_eq(n, 16 + plen);
    memcpy(buf, ct, clen);
    ck_assert_int_eq(negstream__krb_decrypt(dk, buf, n, buf + n), 0);
    ck_assert_mem_eq(buf + 16, plain, plen);
    ck_assert_int_eq(negstream__krb_encrypt(ek, buf, n, buf + n), 0);
    ck_assert_mem_eq(buf, ct, clen);
    for (bit = 0; bit < clen * 8; bit++) {
        memcpy(buf, ct, clen);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_int_eq(negstream__krb_decrypt(dk, buf, n, buf + n), -1);
        if (plen > 0)
            ck_assert_msg(memcmp(buf + 16, plain, plen) != 0,
                          "plaintext left after a failed decryption");
    }
    negstream__krb_key_free(dk);
    negstream__krb_key_free(ek);
}
END_TEST

START_TEST(checksum_rfc8009)
{
    static const struct {
        int etype;
        const char *key, *sum;
    } v[2] = {
        { 19, "3705d96080c17728a0e800eab6e0d23c",
          "d78367186643d67b411cba9139fc1dee" },
        { 20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b71824"
              "60c52", "45ee791567eefca37f4ac1e0222de80d43c3bfa06699672a" },
    };
    uint8_t key[32], data[21], sum[24];
    size_t klen = unhex(v[_i].key, key, sizeof(key)), i;
    negstream__krb_key *k;
    const char *why = NULL;

    for (i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)i;
    k = negstream__krb_key_new(v[_i].etype, key, klen, 2, true, &why);
    ck_assert_ptr_nonnull(k);
    /* in one piece and split in two: the same checksum */
    ck_assert_int_eq(negstream__krb_checksum(k, data, 21, NULL, 0, sum), 0);
    ck_bytes(sum, v[_i].sum, "checksum");
    memset(sum, 0, sizeof(sum));
    ck_assert_int_eq(negstream__krb_checksum(k, data, 5, data + 5, 16, sum),
                     0);
    ck_bytes(sum, v[_i].sum, "checksum in two pieces");
    negstream__krb_key_free(k);
}
END_TEST

START_TEST(key_new_rejects)
{
    uint8_t key[32] = { 1 };
    const char *why = NULL;

    ck_assert_ptr_null(negstream__krb_key_new(23, key, 16, 2, true, &why));
    ck_assert_ptr_nonnull(why);
    why = NULL;
    ck_assert_ptr_null(negstream__krb_key_new(18, key, 16, 2, true, &why));
    ck_assert_ptr_nonnull(why);
}
END_TEST

/* ---- RFC 4121 tokens between two halves of one context ------------------ */

typedef struct pair {
    negstream__cfx *ini, *acc;
} pair;

/* An initiator and an acceptor as MIT would set them up: the same context
 * key, an acceptor subkey (or none), sequence numbers crossed. */
static void pair_make(pair *p, int etype, bool subkey, uint64_t iseq,
                      uint64_t aseq, bool replay, bool sequence)
{
    uint8_t ck[32], ak[32];
    negstream__cfx_keys k;
    const char *why = NULL;
    size_t i, len = negstream__krb_key_len(etype);

    for (i = 0; i < sizeof(ck); i++) {
        ck[i] = (uint8_t)(i * 7 + etype);
        ak[i] = (uint8_t)(i * 13 + 1);
    }
    memset(&k, 0, sizeof(k));
    k.ctx_enctype = etype;
    k.ctx_key = ck;
    k.ctx_key_len = len;
    k.have_acceptor_subkey = subkey;
    k.acc_enctype = etype;
    k.acc_key = ak;
    k.acc_key_len = len;
    k.do_replay = replay;
    k.do_sequence = sequence;
    k.initiator = true;
    k.send_seq = iseq;
    k.recv_seq = aseq;
    p->ini = negstream__cfx_new(&k, &why);
    ck_assert_msg(p->ini != NULL, "initiator: %s", why);
    k.initiator = false;
    k.send_seq = aseq;
    k.recv_seq = iseq;
    p->acc = negstream__cfx_new(&k, &why);
    ck_assert_msg(p->acc != NULL, "acceptor: %s", why);
}

static void pair_free(pair *p)
{
    negstream__cfx_free(p->ini);
    negstream__cfx_free(p->acc);
}

static uint8_t *pattern(size_t len, unsigned seed)
{
    uint8_t *b = malloc(len + 1);
    size_t i;

    ck_assert_ptr_nonnull(b);
    for (i = 0; i < len; i++)
        b[i] = (uint8_t)(i * 31 + seed + (i >> 8));
    return b;
}

/* Wraps msg on 'from', unwraps on 'to' and checks the plaintext. */
static void round_trip(negstream__cfx *from, negstream__cfx *to, bool conf,
                       const uint8_t *msg, size_t len)
{
    size_t cap = len + 128, off = 0;
    uint8_t *tok = malloc(cap);
    const char *why = NULL;
    ssize_t n, m;
    bool sealed = !conf;

    ck_assert_ptr_nonnull(tok);
    n = negstream__cfx_wrap(from, conf, msg, len, tok, cap, &why);
    ck_assert_msg(n > 0, "wrap %zu: %s", len, why);
    ck_assert_uint_eq((size_t)n, negstream__cfx_wrap_size(from, conf, len));
    m = negstream__cfx_unwrap(to, tok, (size_t)n, &off, &sealed, &why);
    ck_assert_msg(m == (ssize_t)len, "unwrap %zu: %s", len, why ? why : "");
    ck_assert(sealed == conf);
    if (len > 0)
        ck_assert_mem_eq(tok + off, msg, len);
    free(tok);
}

static const size_t rt_sizes[] = {
    0, 1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 1000, 4095,
    4096, 4097, 64511, 64512, 64513, 65535, 65536, 200000
};

START_TEST(round_trips)
{
    int e = etypes[_i / 4];
    bool subkey = (_i & 1) != 0, conf = (_i & 2) != 0;
    size_t s;
    pair p;

    pair_make(&p, e, subkey, 1000, 77, true, true);
    for (s = 0; s < sizeof(rt_sizes) / sizeof(rt_sizes[0]); s++) {
        uint8_t *msg = pattern(rt_sizes[s], (unsigned)s);

        round_trip(p.ini, p.acc, conf, msg, rt_sizes[s]);
        round_trip(p.acc, p.ini, conf, msg, rt_sizes[s]);
        free(msg);
    }
    pair_free(&p);
}
END_TEST

/* Token layout as MIT writes it. */
START_TEST(token_layout)
{
    uint8_t tok[256], msg[10] = "0123456789";
    const char *why = NULL;
    ssize_t n;
    pair p;

    pair_make(&p, NEGSTREAM__ETYPE_AES256_SHA1, true, 0x0102030405060708ULL,
              0, true, true);
    n = negstream__cfx_wrap(p.ini, true, msg, 10, tok, sizeof(tok), &why);
    ck_assert_int_eq(n, 16 + 16 + 10 + 16 + 12);
    ck_bytes(tok, "0504 06 ff 0000 0000 0102030405060708", "sealed header");
    n = negstream__cfx_wrap(p.acc, false, msg, 10, tok, sizeof(tok), &why);
    ck_assert_int_eq(n, 16 + 10 + 12);
    ck_bytes(tok, "0504 05 ff 000c 0000 0000000000000000", "signed header");
    ck_assert_mem_eq(tok + 16, msg, 10);
    pair_free(&p);
    pair_make(&p, NEGSTREAM__ETYPE_AES128_SHA256, false, 5, 0, true, true);
    n = negstream__cfx_wrap(p.ini, false, msg, 10, tok, sizeof(tok), &why);
    ck_assert_int_eq(n, 16 + 10 + 16);
    ck_bytes(tok, "0504 00 ff 0010 0000 0000000000000005", "no subkey");
    ck_assert_int_eq(negstream__cfx_wrap(p.ini, true, msg, 10, tok, 57, &why),
                     -1);
    ck_assert_str_eq(why, "no room for the token");
    pair_free(&p);
}
END_TEST

/* Rotates the body right by r and records it in RRC, as Windows does. */
static void rotate_right(uint8_t *tok, size_t len, unsigned r)
{
    size_t body = len - 16, k = r % body;
    uint8_t *t = malloc(body);

    ck_assert_ptr_nonnull(t);
    memcpy(t, tok + 16 + body - k, k);
    memcpy(t + k, tok + 16, body - k);
    memcpy(tok + 16, t, body);
    tok[6] = (uint8_t)(r >> 8);
    tok[7] = (uint8_t)r;
    free(t);
}

START_TEST(rrc_rotations_accepted)
{
    static const unsigned rrcs[] = { 28, 12, 16, 1, 100, 65535 };
    uint8_t msg[40], tok[256];
    size_t r, off;
    const char *why = NULL;
    bool sealed, conf = _i == 1;
    ssize_t n;
    pair p;

    memset(msg, 'm', sizeof(msg));
    pair_make(&p, NEGSTREAM__ETYPE_AES256_SHA1, true, 0, 0, true, true);
    for (r = 0; r < sizeof(rrcs) / sizeof(rrcs[0]); r++) {
        n = negstream__cfx_wrap(p.ini, conf, msg, sizeof(msg), tok,
                                sizeof(tok), &why);
        ck_assert_int_gt(n, 0);
        rotate_right(tok, (size_t)n, rrcs[r]);
        ck_assert_msg(negstream__cfx_unwrap(p.acc, tok, (size_t)n, &off,
                                            &sealed, &why) == 40,
                      "RRC %u: %s", rrcs[r], why);
        ck_assert_mem_eq(tok + off, msg, 40);
    }
    pair_free(&p);
}
END_TEST

/* Every one-bit change of a token is refused, except one of RRC that
 * rotates by a multiple of the rotated length (no rotation at all), and
 * a refused token leaves the receiver's window as it was. */
START_TEST(every_bit_flip)
{
    int e = etypes[_i / 2];
    bool conf = (_i & 1) != 0;
    static const size_t sizes[] = { 0, 1, 16, 17, 33 };
    size_t s, bit, off;
    uint8_t tok[256], bad[256];
    const char *why = NULL;
    bool sealed;
    pair p;

    pair_make(&p, e, true, 9, 0, true, true);
    for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        uint8_t *msg = pattern(sizes[s], 3);
        ssize_t n = negstream__cfx_wrap(p.ini, conf, msg, sizes[s], tok,
                                        sizeof(tok), &why);

        ck_assert_int_gt(n, 0);
        for (bit = 0; bit < (size_t)n * 8; bit++) {
            size_t byte = bit / 8, body = (size_t)n - 16;
            ssize_t m;
            unsigned rrc;

            memcpy(bad, tok, (size_t)n);
            bad[byte] ^= (uint8_t)(1u << (bit % 8));
            rrc = ((unsigned)bad[6] << 8) | bad[7];
            m = negstream__cfx_unwrap(p.acc, bad, (size_t)n, &off, &sealed,
                                      &why);
            if ((byte == 6 || byte == 7) && rrc % body == 0) {
                /* accepted, and then the original is a replay */
                ck_assert_int_eq(m, (ssize_t)sizes[s]);
                memcpy(bad, tok, (size_t)n);
                ck_assert_int_eq(negstream__cfx_unwrap(p.acc, bad, (size_t)n,
                                                       &off, &sealed, &why),
                                 -1);
                ck_assert_str_eq(why, "a replayed token (duplicate sequence "
                                 "number)");
                goto next_size;
            }
            ck_assert_msg(m == -1, "size %zu bit %zu accepted", sizes[s],
                          bit);
            if (conf && sizes[s] >= 4)
                ck_assert_msg(memmem(bad, (size_t)n, msg, sizes[s]) == NULL,
                              "plaintext left after a refused token");
        }
        memcpy(bad, tok, (size_t)n);
        ck_assert_int_eq(negstream__cfx_unwrap(p.acc, bad, (size_t)n, &off,
                                               &sealed, &why),
                         (ssize_t)sizes[s]);
next_size:
        free(msg);
    }
    pair_free(&p);
}
END_TEST

/* MIT's verdicts for a context with replay and sequence detection (what
 * every MS-NNS context asks for): replay, gap, reordering all refused. */
START_TEST(sequence_window)
{
    uint8_t toks[4][128], cp[128];
    ssize_t n[4];
    size_t off, i;
    const char *why = NULL;
    bool sealed;
    pair p;

    pair_make(&p, NEGSTREAM__ETYPE_AES128_SHA1, true, UINT64_MAX - 1, 0,
              true, true);
    for (i = 0; i < 4; i++) {
        n[i] = negstream__cfx_wrap(p.ini, true, "abcd", 4, toks[i], 128,
                                   &why);
        ck_assert_int_gt(n[i], 0);
    }
    /* the 64-bit number wraps from UINT64_MAX to 0 */
    ck_assert_int_eq(toks[2][8], 0);
    memcpy(cp, toks[0], (size_t)n[0]);
    ck_assert_int_eq(negstream__cfx_unwrap(p.acc, cp, (size_t)n[0], &off,
                                           &sealed, &why), 4);
    memcpy(cp, toks[0], (size_t)n[0]);
    ck_assert_int_eq(negstream__cfx_unwrap(p.acc, cp, (size_t)n[0], &off,
                                           &sealed, &why), -1);
    ck_assert_str_eq(why, "a replayed token (duplicate sequence number)");
    memcpy(cp, toks[2], (size_t)n[2]);                  /* skips toks[1] */
    ck_assert_int_eq(negstream__cfx_unwrap(p.acc, cp, (size_t)n[2], &off,
                                           &sealed, &why), -1);
    ck_assert_str_eq(why, "a gap in the sequence (a token is missing)");
    memcpy(cp, toks[1], (size_t)n[1]);                  /* late */
    ck_assert_int_eq(negstream__cfx_unwrap(p.acc, cp, (size_t)n[1], &off,
                                           &sealed, &why), -1);
    ck_assert_str_eq(why, "a token out of sequence (earlier than one "
                     "received)");
    /* and no plaintext left behind by a refused sealed token */
    ck_assert_ptr_null(memmem(cp, (size_t)n[1], "abcd", 4));
    pair_free(&p);

    /* without replay/sequence flags MIT accepts them all */
    pair_make(&p, NEGSTREAM__ETYPE_AES128_SHA1, true, 0, 0, false, false);
    for (i = 0; i < 3; i++) {
        n[i] = negstream__cfx_wrap(p.ini, true, "abcd", 4, toks[i], 128,
                                   &why);
        ck_assert_int_gt(n[i], 0);
    }
    for (i = 0; i < 4; i++) {
        size_t t = (size_t)(i == 3 ? 0 : 2 - i);

        memcpy(cp, toks[t], (size_t)n[t]);
        ck_assert_int_eq(negstream__cfx_unwrap(p.acc, cp, (size_t)n[t], &off,
                                               &sealed, &why), 4);
    }
    pair_free(&p);
}
END_TEST

START_TEST(reflection_and_garbage_refused)
{
    uint8_t tok[128];
    size_t off;
    const char *why = NULL;
    bool sealed;
    ssize_t n;
    pair p;

    pair_make(&p, NEGSTREAM__ETYPE_AES256_SHA384, true, 0, 0, true, true);
    n = negstream__cfx_wrap(p.ini, true, "abcd", 4, tok, sizeof(tok), &why);
    ck_assert_int_gt(n, 0);
    /* the initiator's own token back at the initiator */
    ck_assert_int_eq(negstream__cfx_unwrap(p.ini, tok, (size_t)n, &off,
                                           &sealed, &why), -1);
    ck_assert_str_eq(why, "token sent in the wrong direction "
                     "(SentByAcceptor)");
    ck_assert_int_eq(negstream__cfx_unwrap(p.acc, tok, 15, &off, &sealed,
                                           &why), -1);
    memcpy(tok, "\x04\x04", 2);
    ck_assert_int_eq(negstream__cfx_unwrap(p.acc, tok, (size_t)n, &off,
                                           &sealed, &why), -1);
    ck_assert_str_eq(why, "not an RFC 4121 wrap token");
    /* a huge EC on a short token */
    memcpy(tok, "\x05\x04\x02\xff\xff\xff\x00\x00", 8);
    ck_assert_int_eq(negstream__cfx_unwrap(p.acc, tok, (size_t)n, &off,
                                           &sealed, &why), -1);
    ck_assert_str_eq(why, "token too short for its EC and trailer");
    pair_free(&p);
}
END_TEST

static Suite *cfx_suite(void)
{
    Suite *s = suite_create("cfx");
    TCase *tc = tcase_create("kat");

    tcase_add_loop_test(tc, cts_rfc3962, 0, 6);
    tcase_add_loop_test(tc, string_to_key_rfc3962, 0, 6);
    tcase_add_loop_test(tc, string_to_key_rfc8009, 0, 2);
    tcase_add_loop_test(tc, derive_usage_keys, 0, 12);
    tcase_add_test(tc, derive_rejects_bad_input);
    tcase_add_loop_test(tc, encrypt_rfc8009, 0, 8);
    tcase_add_loop_test(tc, checksum_rfc8009, 0, 2);
    tcase_add_test(tc, key_new_rejects);
    suite_add_tcase(s, tc);
    tc = tcase_create("tokens");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, round_trips, 0, 4 * N_ETYPES);
    tcase_add_test(tc, token_layout);
    tcase_add_loop_test(tc, rrc_rotations_accepted, 0, 2);
    tcase_add_loop_test(tc, every_bit_flip, 0, 2 * N_ETYPES);
    tcase_add_test(tc, sequence_window);
    tcase_add_test(tc, reflection_and_garbage_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cfx_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
