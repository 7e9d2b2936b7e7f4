#!/bin/sh
# tests/tlsbind.sh - the tls-server-end-point helpers against an
# independent computation.  Makes certificates of several signature
# algorithms with the openssl command, computes each one's expected
# channel binding with `openssl x509 -fingerprint` and the hash RFC 5929
# 4.1 prescribes for that algorithm (written out below, not taken from the
# library), and runs tests/check_tlsbind on them (NEGTEST_CERT_DIR, with a
# "manifest" of NAME HASH EXPECTED-HEX SECLEVEL lines).
#
# Needs the openssl program (Debian openssl, scripts/install-deps) in a
# build with OpenSSL; a build --without-openssl runs check_tlsbind alone,
# which then checks that the helpers say NOT_SUPPORTED.
# NEGTEST_PEER_WRAPPER (make check-valgrind): a command prefix, such as
# valgrind's, for check_tlsbind, run through libtool.
#
# Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
set -u

builddir=${top_builddir:-.}
prog=$builddir/tests/check_tlsbind

run_prog() {
    if [ -n "${NEGTEST_PEER_WRAPPER:-}" ]; then
        # shellcheck disable=SC2086  # the wrapper is words
        "$builddir/libtool" --mode=execute $NEGTEST_PEER_WRAPPER "$prog"
    else
        "$prog"
    fi
}

if ! grep -q '^#define HAVE_OPENSSL 1' "$builddir/config.h" 2>/dev/null; then
    run_prog
    exit
fi
openssl=${OPENSSL_PROG:-openssl}
command -v "$openssl" >/dev/null 2>&1 || {
    echo "tlsbind.sh: the openssl program is missing (Debian package" \
         "openssl, scripts/install-deps)" >&2
    exit 99
}

mkdir -p "$builddir/tests/tmp" || exit 99
dir=$(mktemp -d "$builddir/tests/tmp/tlsbind.XXXXXX") || exit 99
trap 'rm -rf "$dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

prefix_hex=$(printf 'tls-server-end-point:' | od -An -tx1 | tr -d ' \n')

# mkcert NAME HASH SECLEVEL REQ-OPTIONS...: a self-signed certificate
# (NAME.pem, NAME.der, NAME.key) and its manifest line.  HASH is what RFC
# 5929 4.1 says: the signature's hash, sha256 for md5 and sha1, "none"
# when the algorithm has no single hash function.
mkcert() {
    name=$1 hash=$2 seclevel=$3
    shift 3
    if ! "$openssl" req -x509 -nodes -days 2 -subj "/CN=$name" \
            -keyout "$dir/$name.key" -out "$dir/$name.pem" "$@" \
            >"$dir/err" 2>&1; then
        echo "tlsbind.sh: openssl req $* failed:" >&2
        cat "$dir/err" >&2
        exit 99
    fi
    "$openssl" x509 -in "$dir/$name.pem" -outform DER \
        -out "$dir/$name.der" || exit 99
    if [ "$hash" = none ]; then
        expected=NOTSUP
    else
        fp=$("$openssl" x509 -in "$dir/$name.pem" -noout -fingerprint \
            "-$hash") || exit 99
        expected=$prefix_hex$(printf '%s\n' "${fp#*=}" | tr -d ':' |
            tr 'A-F' 'a-f')
    fi
    echo "tlsbind.sh: $name: $hash $expected"
    printf '%s %s %s %s\n' "$name" "$hash" "$expected" "$seclevel" \
        >>"$dir/manifest"
}

: >"$dir/manifest"
mkcert rsa-sha256 sha256 1 -newkey rsa:2048 -sha256
mkcert rsa-sha384 sha384 1 -newkey rsa:2048 -sha384
mkcert rsa-sha224 sha224 1 -newkey rsa:2048 -sha224
mkcert ecdsa-sha512 sha512 1 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -sha512
mkcert rsapss-sha384 sha384 1 -newkey rsa:2048 -sha384 \
    -sigopt rsa_padding_mode:pss
mkcert rsa-sha1 sha256 0 -newkey rsa:2048 -sha1
mkcert rsa-md5 sha256 0 -newkey rsa:2048 -md5
mkcert ed25519 none 1 -newkey ed25519

NEGTEST_CERT_DIR=$dir
export NEGTEST_CERT_DIR
run_prog
