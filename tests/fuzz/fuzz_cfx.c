/*
 * fuzz_cfx.c - libFuzzer target: our RFC 4121 unwrap on OpenSSL
 * (wrap_cfx.c) against MIT's, token by token.  Whatever ours accepts, MIT
 * accepts with the same plaintext, and the reverse.
 *
 * Once per process, under the test realm (tests/kdc/with-realm), gss.c
 * authenticates in memory to each ENCTYPE/localhost service at Sign and
 * at EncryptAndSign, and both MIT contexts are exported.  For each input,
 * fresh copies are imported and taken over (negstream__gss_take_over), so
 * each side exists twice: ours and MIT's, at the same sequence numbers.
 *
 * The input is a script.  Byte 0 picks the context (enctype x level);
 * then each op byte (op % 4) says what the client sends the server:
 *   0 WRAP  u16 n, u8 f, u8 k, k x (u16 pos, u8 xor)
 *           both clients wrap n % 2048 bytes (sealed if f & 1); f & 2
 *           picks MIT's token instead of ours; the k changes are applied
 *           (pos % length) and the token goes to both servers
 *   1 RAW   u16 n   the next n % 512 input bytes, verbatim, to both
 *   2 REPLAY        the last token sent, again
 *   3 DROP  u8 n    both clients wrap n bytes and nothing is sent (a gap)
 * A token is decided by MIT's gss_unwrap_iov (stream mode) for "05 04"
 * and gss_unwrap otherwise, as gss.c's GSSAPI path would, on a copy.
 * Broken promises abort.
 */
#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <gssapi/gssapi.h>
#ifdef HAVE_GSSAPI_GSSAPI_EXT_H      /* MIT; Heimdal: all in gssapi.h */
# include <gssapi/gssapi_ext.h>
#endif
#include <gssapi/gssapi_krb5.h>

#include "gss.h"
#include "mitunwrap.h"
#include "wrap_cfx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define N_CTX 8
#define MAX_WRAP 2048
#define MAX_RAW 512

static const char *const etype_names[4] = {
    "aes128-cts-hmac-sha1-96", "aes256-cts-hmac-sha1-96",
    "aes128-cts-hmac-sha256-128", "aes256-cts-hmac-sha384-192"
};

typedef struct tmpl {
    gss_buffer_desc client, server;       /* exported contexts */
    OM_uint32       cflags, sflags;
    gss_OID         mech;
} tmpl;

static tmpl tmpls[N_CTX];

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_cfx: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    abort();
}

static const char *env(const char *name)
{
    const char *v = getenv(name);

    if (v == NULL || *v == '\0')
        die("not set (run under tests/kdc/with-realm)", name);
    return v;
}

/* krb5.conf with the enctype first in permitted_enctypes (see
 * tests/check_cfx_diff.c: the acceptor subkey follows it). */
static void use_enctype(int et)
{
    static char *orig;
    char path[4096], val[8300];
    FILE *f;

    if (orig == NULL)
        orig = strdup(env("KRB5_CONFIG"));
    snprintf(path, sizeof(path), "%s/fuzz-%s.conf", env("NEGTEST_REALM_DIR"),
             etype_names[et]);
    f = fopen(path, "w");
    if (f == NULL)
        die("cannot write", path);
    fprintf(f, "[libdefaults]\n    permitted_enctypes = %s%s\n",
            etype_names[et], et == 1 ? "" : " aes256-cts-hmac-sha1-96");
    if (fclose(f) != 0)
        die("cannot write", path);
    snprintf(val, sizeof(val), "%s:%s", path, orig);
    setenv("KRB5_CONFIG", val, 1);
}

static void gss_zero(negstream__gss *g)
{
    memset(g, 0, sizeof(*g));
    g->ctx = GSS_C_NO_CONTEXT;
    g->cred = GSS_C_NO_CREDENTIAL;
    g->target = GSS_C_NO_NAME;
}

static void export_ctx(negstream__gss *g, gss_buffer_desc *out)
{
    OM_uint32 minor;

    if (gss_export_sec_context(&minor, &g->ctx, out) != GSS_S_COMPLETE)
        die("gss_export_sec_context failed", NULL);
}

static void authenticate(int idx)
{
    int et = idx / 2;
    negstream__gss c, s;
    negstream_client_options co;
    negstream_server_options so;
    negstream_error err;
    gss_buffer_desc ct = GSS_C_EMPTY_BUFFER, st = GSS_C_EMPTY_BUFFER;
    char target[96];
    int crc, src = 1, rounds = 0;

    use_enctype(et);
    gss_zero(&c);
    gss_zero(&s);
    snprintf(target, sizeof(target), "%s@localhost", etype_names[et]);
    negstream_client_options_init(&co);
    co.target_name = target;
    co.mechanism = "kerberos";
    co.protection = (idx & 1) ? NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN
                              : NEGSTREAM_PROTECTION_SIGN;
    negstream_server_options_init(&so);
    so.protection = co.protection;
    if (negstream__gss_client_init(&c, &co, &err) != 0 ||
        negstream__gss_server_init(&s, &so, &err) != 0)
        die("init", err.message);
    crc = negstream__gss_step(&c, NULL, 0, &ct, &err);
    while (crc >= 0 && rounds++ < 10) {
        if (ct.length > 0) {
            src = negstream__gss_step(&s, ct.value, ct.length, &st, &err);
            if (src < 0)
                die("accept", err.message);
        }
        negstream__gss_release(&ct);
        if (st.length > 0)
            crc = negstream__gss_step(&c, st.value, st.length, &ct, &err);
        negstream__gss_release(&st);
        if (crc == 0 && src == 0 && ct.length == 0)
            break;
    }
    if (crc != 0 || src != 0 || c.cfx == NULL || s.cfx == NULL)
        die("handshake", crc < 0 ? err.message : "not taken over");
    tmpls[idx].cflags = c.ret_flags;
    tmpls[idx].sflags = s.ret_flags;
    tmpls[idx].mech = c.actual_mech;
    export_ctx(&c, &tmpls[idx].client);
    export_ctx(&s, &tmpls[idx].server);
    negstream__gss_free(&c);
    negstream__gss_free(&s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int i;
    char *orig;

    (void)argc;
    (void)argv;
    orig = strdup(env("KRB5_CONFIG"));
    for (i = 0; i < N_CTX; i++)
        authenticate(i);
    setenv("KRB5_CONFIG", orig, 1);
    free(orig);
    return 0;
}

static gss_ctx_id_t import_ctx(const gss_buffer_desc *tok)
{
    OM_uint32 minor;
    gss_buffer_desc copy = *tok;
    gss_ctx_id_t ctx = GSS_C_NO_CONTEXT;

    if (gss_import_sec_context(&minor, &copy, &ctx) != GSS_S_COMPLETE)
        die("gss_import_sec_context failed", NULL);
    return ctx;
}

/* A fresh side from a template, taken over. */
static void side_open(negstream__gss *g, const tmpl *t, bool server)
{
    gss_zero(g);
    g->is_server = server;
    g->complete = true;
    g->ret_flags = server ? t->sflags : t->cflags;
    g->actual_mech = t->mech;
    g->ctx = import_ctx(server ? &t->server : &t->client);
    negstream__gss_take_over(g);
    if (g->cfx == NULL)
        die("an imported context was not taken over", NULL);
}

/* MIT's verdict (mitunwrap.c) into plain, room for len bytes. */
static ssize_t mit_unwrap(gss_ctx_id_t ctx, const uint8_t *tok, size_t len,
                          uint8_t *plain)
{
    ssize_t n = mit_unwrap_into(ctx, tok, len, plain);

    if (n < -1)
        die("MIT's unwrap: out of memory, or more plaintext than token",
            NULL);
    return n;
}

/* Both servers decide one token. */
static void deliver(negstream__gss *srv, const uint8_t *tok, size_t len)
{
    uint8_t *mp = malloc(len + 1), *buf = malloc(len + 1);
    size_t off = 0;
    bool sealed;
    const char *why = NULL;
    ssize_t m, o;

    if (mp == NULL || buf == NULL)
        die("out of memory", NULL);
    memcpy(buf, tok, len);
    m = mit_unwrap(srv->ctx, tok, len, mp);
    o = negstream__cfx_unwrap(srv->cfx, buf, len, &off, &sealed, &why);
    if ((m >= 0) != (o >= 0)) {
        fprintf(stderr, "fuzz_cfx: a %zu-byte token: MIT %s, we %s (%s)\n",
                len, m >= 0 ? "accept" : "refuse",
                o >= 0 ? "accept" : "refuse", why ? why : "-");
        abort();
    }
    if (m >= 0 && (m != o || (m > 0 && memcmp(mp, buf + off, (size_t)m))))
        die("MIT and we accept a token with different plaintext", NULL);
    free(mp);
    free(buf);
}

/* Both clients wrap n bytes; returns the chosen token (malloc'd). */
static uint8_t *wrap_both(negstream__gss *cli, size_t n, bool conf,
                          bool mit, size_t *len)
{
    OM_uint32 major, minor, tmp;
    gss_buffer_desc in, mt = GSS_C_EMPTY_BUFFER;
    uint8_t *msg = malloc(n + 1), *ot = malloc(n + 256);
    const char *why = NULL;
    int conf_state = 0;
    ssize_t on;
    size_t i;

    if (msg == NULL || ot == NULL)
        die("out of memory", NULL);
    for (i = 0; i < n; i++)
        msg[i] = (uint8_t)(i * 7 + n);
    on = negstream__cfx_wrap(cli->cfx, conf, msg, n, ot, n + 256, &why);
    in.value = msg;
    in.length = n;
    major = gss_wrap(&minor, cli->ctx, conf, GSS_C_QOP_DEFAULT, &in,
                     &conf_state, &mt);
    if (on < 0 || major != GSS_S_COMPLETE || (size_t)on != mt.length ||
        memcmp(ot, mt.value, 16) != 0)
        die("our token and MIT's differ in length or header", why);
    if (mit)
        memcpy(ot, mt.value, mt.length);
    gss_release_buffer(&tmp, &mt);
    free(msg);
    *len = (size_t)on;
    return ot;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    negstream__gss cli, srv;
    uint8_t *last = NULL;
    size_t last_len = 0;
    int ops = 0;

    if (size < 1)
        return 0;
    side_open(&cli, &tmpls[*p % N_CTX], false);
    side_open(&srv, &tmpls[*p % N_CTX], true);
    p++;
    while (p < end && ops++ < 64) {
        uint8_t op = *p++ % 4;
        size_t n, len, k;
        uint8_t *tok = NULL;

        if (op == 0 && end - p >= 4) {
            uint8_t f = p[2];

            n = (size_t)(p[0] | p[1] << 8) % MAX_WRAP;
            k = p[3];
            p += 4;
            tok = wrap_both(&cli, n, f & 1, (f & 2) != 0, &len);
            while (k-- > 0 && end - p >= 3) {
                tok[(size_t)(p[0] | p[1] << 8) % len] ^= p[2];
                p += 3;
            }
        } else if (op == 1 && end - p >= 2) {
            n = (size_t)(p[0] | p[1] << 8) % MAX_RAW;
            p += 2;
            if (n > (size_t)(end - p))
                n = (size_t)(end - p);
            tok = malloc(n + 1);
            if (tok == NULL)
                die("out of memory", NULL);
            memcpy(tok, p, n);
            len = n;
            p += n;
        } else if (op == 2 && last != NULL) {
            tok = malloc(last_len + 1);
            if (tok == NULL)
                die("out of memory", NULL);
            memcpy(tok, last, last_len);
            len = last_len;
        } else if (op == 3 && end - p >= 1) {
            free(wrap_both(&cli, *p++, true, false, &len));
            continue;
        } else {
            break;
        }
        deliver(&srv, tok, len);
        free(last);
        last = tok;
        last_len = len;
    }
    free(last);
    negstream__gss_free(&cli);
    negstream__gss_free(&srv);
    return 0;
}
