#!/bin/sh
# run-dotnet-vs-python.sh: a real .NET NegotiateStream client (NegClient.cs
# on .NET Core 2.0) against the independent Python acceptor
# (nns_acceptor.py), under a throwaway MIT realm.  Checks that they agree on
# data and hashes, and that the wire looks the way negstream(7) says
# (WIRE FORMAT).
#
#   tests/interop/run-dotnet-vs-python.sh            (re-runs itself under
#                                                     tests/kdc/with-realm)
#   NEGTEST_WITH_REALM=/path/to/with-realm ...        another realm wrapper
#
# Build products (NegClient.dll) go to $top_builddir/tests/interop
# (top_builddir defaults to the current directory); the runtime comes from
# fetch-dotnet.  Prints PASS/FAIL per case and "N passed, N failed"; exits
# non-zero on any mismatch.
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
if [ -z "${NEGTEST_SPN:-}" ]; then
    wr=${NEGTEST_WITH_REALM:-$srcdir/../kdc/with-realm}
    [ -f "$wr" ] || { echo "run-dotnet-vs-python: no realm wrapper $wr" >&2
                      exit 99; }
    exec sh "$wr" sh "$0" "$@"
fi

PY=/usr/bin/python3        # Debian's python3-gssapi lives here
top_builddir=${top_builddir:-.}
export top_builddir
bdir=$top_builddir/tests/interop
mkdir -p "$bdir" && bdir=$(cd "$bdir" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/negtest-interop.XXXXXX")
apid=
cleanup() {
    [ -n "$apid" ] && kill "$apid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

die() { echo "run-dotnet-vs-python: $*" >&2; exit 99; }

# ---- tools --------------------------------------------------------------
command -v mcs >/dev/null 2>&1 || die "mcs not found (Debian: mono-mcs)"
"$PY" -c 'import gssapi' 2>/dev/null ||
    die "$PY cannot import gssapi (Debian: python3-gssapi)"
dotnet=$(sh "$srcdir/fetch-dotnet") || die "fetch-dotnet failed"
dll=$bdir/NegClient.dll
if [ ! -f "$dll" ] || [ -n "$(find "$srcdir/NegClient.cs" -newer "$dll")" ]
then
    echo "+ mcs -r:System.dll NegClient.cs -out:$dll"
    mcs -r:System.dll "$srcdir/NegClient.cs" -out:"$dll" ||
        die "mcs failed"
fi
export DOTNET_MULTILEVEL_LOOKUP=0
# exec --runtimeconfig: the config stays in srcdir (nothing to copy/clean).
rtconf=$srcdir/NegClient.runtimeconfig.json

# ---- helpers ------------------------------------------------------------
npass=0
nfail=0
AOUT='' COUT='' ARC='' CRC=''

# get KEY LINE: the value of KEY= in a result line ("error" is the rest).
get() {
    if [ "$1" = error ]; then
        case $2 in *" error="*|error=*)
            printf '%s\n' "$2" | sed 's/^\(.* \)\{0,1\}error=//' ;; esac
        return
    fi
    printf '%s\n' "$2" | sed 's/ error=.*//' | tr ' ' '\n' |
        sed -n "s/^$1=//p" | head -n 1
}

# session NAME "ACCEPTOR ARGS" CLIENT ARGS...: one connection.
# Leaves the result lines in $AOUT/$COUT and exit codes in $ARC/$CRC.
session() {
    name=$1 aargs=$2
    shift 2
    log=$work/$name.acceptor
    # shellcheck disable=SC2086
    "$PY" "$srcdir/nns_acceptor.py" $aargs >"$log" 2>&1 &
    apid=$!
    i=0
    until grep -q '^port=' "$log" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 200 ] || ! kill -0 "$apid" 2>/dev/null; then
            cat "$log" >&2
            die "acceptor did not start"
        fi
        sleep 0.05
    done
    port=$(sed -n 's/^port=//p' "$log")
    printf '+ dotnet NegClient.dll 127.0.0.1 %s %s\n' "$port" "$*"
    COUT=$(timeout 300 "$dotnet" exec --runtimeconfig "$rtconf" "$dll" \
               127.0.0.1 "$port" "$@" 2>"$work/$name.client.err")
    CRC=$?
    # The acceptor hashes after EOF (64 MiB take a few seconds in Python).
    i=0
    while kill -0 "$apid" 2>/dev/null && [ $i -lt 1200 ]; do
        i=$((i + 1))
        sleep 0.1
    done
    kill "$apid" 2>/dev/null
    wait "$apid"
    ARC=$?
    apid=
    AOUT=$(tail -n +2 "$log")
    printf '  client  (rc=%s): %s\n' "$CRC" "$COUT"
    [ -s "$work/$name.client.err" ] && sed 's/^/  client stderr: /' \
        "$work/$name.client.err"
    printf '  acceptor(rc=%s): %s\n' "$ARC" "$AOUT"
}

# expect NAME DESCRIPTION ACTUAL WANTED: one check.
fails=
expect() {
    if [ "$3" != "$4" ]; then
        fails="$fails
    $2: got '$3', want '$4'"
    fi
}
expect_match() {   # NAME DESCRIPTION ACTUAL GLOB
    # shellcheck disable=SC2254
    case $3 in $4) ;; *) fails="$fails
    $2: got '$3', want '$4'" ;; esac
}
verdict() {
    if [ -z "$fails" ]; then
        echo "PASS $1"
        npass=$((npass + 1))
    else
        printf 'FAIL %s:%s\n' "$1" "$fails"
        nfail=$((nfail + 1))
    fi
    fails=
}

# frame overhead of a wrap token, from a frame holding N plaintext bytes.
SMALL=32    # NegClient's --send-small message length

spn=${NEGTEST_SPN:-host/localhost}
nuser=${NEGTEST_NTLM_USER:?} npass_=${NEGTEST_NTLM_PASSWORD:?}
ndom=${NEGTEST_NTLM_DOMAIN:?}

# ---- 1. Kerberos via SPNEGO, EncryptAndSign, small + 64513 + 64 MiB -------
big=64513
stream=67108864
session krb "--protection-required EncryptAndSign" "$spn" EncryptAndSign \
    --send-small --send-big $big --send-stream $stream
expect krb "client rc" "$CRC" 0
expect krb "acceptor rc" "$ARC" 0
expect krb "authenticated" "$(get authenticated "$COUT")" True
expect krb "IsEncrypted" "$(get encrypted "$COUT")" True
expect krb "IsSigned" "$(get signed "$COUT")" True
expect krb "IsMutuallyAuthenticated" "$(get mutual "$COUT")" True
expect krb "remote type" "$(get remote_type "$COUT")" Kerberos
expect krb "bytes sent/received" "$(get sent "$COUT")" "$(get bytes "$AOUT")"
expect krb "bytes" "$(get bytes "$AOUT")" $((SMALL + big + stream))
expect krb "hash" "$(get hash "$COUT")" "$(get hash "$AOUT")"
expect krb "acceptor mech" "$(get mech "$AOUT")" 1.2.840.113554.1.2.2
expect krb "acceptor level" "$(get level "$AOUT")" EncryptAndSign
# Client first, in-progress, version 1.0, BE size; SPNEGO token.
hdr=$(get first_hdr "$AOUT")
expect_match krb "first header" "$hdr" "160100????"
tok=$(get first_tok "$AOUT")
expect_match krb "first token is SPNEGO" "$tok" "60*06062b0601050502*"
expect_match krb "handshake" "$(get handshake "$AOUT")" "C16:*,S14:*"
# 64513 bytes = one full chunk of 64512 + 1.
lens=$(get frame_lens "$AOUT")
l0=${lens%%,*} rest=${lens#*,}
l1=${rest%%,*} l2=${rest#*,}
ovh=$((l0 - SMALL))
expect krb "full frame length" "$l1" $((64512 + ovh))
expect krb "1-byte frame length" "$l2" $((1 + ovh))
expect krb "max frame" "$(get max_frame "$AOUT")" $((64512 + ovh))
verdict "kerberos-encrypt-small+64513+64MiB (frame overhead $ovh)"

# ---- 2. echo, Kerberos --------------------------------------------------
session echo "--echo" "$spn" EncryptAndSign \
    --send-small --send-big $big --send-stream 1048576 --echo --sync-auth
expect echo "client rc" "$CRC" 0
expect echo "acceptor rc" "$ARC" 0
expect echo "echo_ok" "$(get echo_ok "$COUT")" True
expect echo "hash" "$(get hash "$COUT")" "$(get hash "$AOUT")"
verdict "kerberos-echo (sync AuthenticateAsClient)"

# ---- 3. acceptor -> .NET ------------------------------------------------
session recv "--send 200000 --expect-bytes $SMALL" "$spn" EncryptAndSign \
    --send-small --recv 200000
expect recv "client rc" "$CRC" 0
expect recv "acceptor rc" "$ARC" 0
expect recv "recv" "$(get recv "$COUT")" 200000
expect recv "recv hash" "$(get recv_hash "$COUT")" "$(get sent_hash "$AOUT")"
verdict "kerberos-acceptor-sends-200000"

# ---- 4. a 0-byte write (.NET Core 2.0 sends one empty wrap frame) -------
session zero "" "$spn" EncryptAndSign --zero-write --send-small
expect zero "client rc" "$CRC" 0
expect zero "acceptor rc" "$ARC" 0
expect zero "frames" "$(get frames "$AOUT")" 2
expect zero "empty frames skipped" "$(get empty_frames "$AOUT")" 1
expect zero "bytes" "$(get bytes "$AOUT")" $SMALL
verdict "kerberos-zero-byte-write"

# ---- 5. Sign: the .NET Core 2.0 client refuses it itself ----------------
session sign "" "$spn" Sign --send-small
expect sign "client rc" "$CRC" 1
expect_match sign "client error" "$(get error "$COUT")" \
    "PlatformNotSupportedException:*"
expect sign "acceptor saw no data" "$(get bytes "$AOUT")" 0
verdict "kerberos-sign-refused-by-dotnet"

# ---- 6. None: NTLM, explicit credentials, raw data ----------------------
session ntlm "--echo" "$spn" None --user "$nuser" --password "$npass_" \
    --domain "$ndom" --send-small --send-big $big --echo
expect ntlm "client rc" "$CRC" 0
expect ntlm "acceptor rc" "$ARC" 0
expect ntlm "remote type" "$(get remote_type "$COUT")" NTLM
expect ntlm "IsEncrypted" "$(get encrypted "$COUT")" False
expect ntlm "IsSigned" "$(get signed "$COUT")" False
expect ntlm "echo_ok" "$(get echo_ok "$COUT")" True
expect ntlm "acceptor mech" "$(get mech "$AOUT")" 1.3.6.1.4.1.311.2.2.10
expect ntlm "raw data" "$(get framed "$AOUT")" False
expect ntlm "hash" "$(get hash "$COUT")" "$(get hash "$AOUT")"
expect_match ntlm "peer" "$(get peer "$AOUT")" "*$nuser"
# raw NTLMSSP (not SPNEGO): NEGOTIATE, CHALLENGE, AUTHENTICATE in a done
# message, then the server's empty done.
expect_match ntlm "first token is NTLMSSP" "$(get first_tok "$AOUT")" \
    "4e544c4d5353500001000000*"
expect_match ntlm "handshake" "$(get handshake "$AOUT")" \
    "C16:*,S16:*,C14:*,S14:0"
verdict "ntlm-none-raw-echo"

# ---- 7. acceptor requires more than None: error 1790 to .NET ------------
session low "--protection-required EncryptAndSign" "$spn" None \
    --user "$nuser" --password "$npass_" --domain "$ndom" --send-small
expect low "client rc" "$CRC" 1
expect low "acceptor rc" "$ARC" 1
expect_match low "handshake ends in error" "$(get handshake "$AOUT")" \
    "*,S15:8"
expect_match low "client error" "$(get error "$COUT")" \
    "AuthenticationException:*NativeErrorCode=0x000006FE*"
verdict "acceptor-requires-encrypt-1790"

# ---- 8. error message from .NET (NTLM creds + EncryptAndSign fail) ------
session cerr "" "$spn" EncryptAndSign --user "$nuser" \
    --password "$npass_" --domain "$ndom" --send-small
expect cerr "client rc" "$CRC" 1
expect cerr "acceptor rc" "$ARC" 1
expect cerr "handshake" "$(get handshake "$AOUT")" "C15:8"
# 8-byte big-endian E_FAIL (0x80004005), what .NET Core 2.0 sends.
expect_match cerr "error payload" "$(get error "$AOUT")" \
    "*0000000080004005*"
verdict "dotnet-sends-error-big-endian"

# ---- 9. error codes received by .NET ------------------------------------
session e20 "--fail-with 20" "$spn" EncryptAndSign
expect_match e20 "code 20" "$(get error "$COUT")" \
    "InvalidCredentialException:*"
session e8009 "--fail-with 2148074252" "$spn" EncryptAndSign
expect_match e20 "code 0x8009030C" "$(get error "$COUT")" \
    "AuthenticationException:*NativeErrorCode=0x8009030C*"
session ele "--fail-with 1790 --error-le" "$spn" EncryptAndSign
expect_match e20 "1790 little-endian" "$(get error "$COUT")" \
    "AuthenticationException:*NativeErrorCode=0x00000000*"
verdict "dotnet-error-code-mapping"

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
