# tests/interop/lib.sh - shell helpers shared by tests/interop/*.krb and
# bench/dotnet.sh (sourced, POSIX sh).  The caller sets $me (its name)
# before sourcing.
#
# Peers (each one connection, each printing one "key=value ... error=..."
# result line, see nns_peer.c and NegClient.cs):
#   server NAME ARGS...    start "nns_peer server ARGS" in the background;
#                          sets $port (and $spid); its output: $tmp/NAME.srv
#   server_wait            wait for it (killed after $WAIT_LIMIT s: a hang
#                          is a failure, never a stuck "make check");
#                          sets $SOUT (result line) and $SRC (exit status)
#   client NAME ARGS...    run "nns_peer client ARGS"; sets $COUT, $CRC
#   dotnet_client NAME ARGS...   run NegClient.dll ARGS; sets $COUT, $CRC
#   acceptor NAME ARGS...  start nns_acceptor.py ARGS; sets $port
#   acceptor_wait          sets $AOUT, $ARC
# Checks, collected per case and reported by verdict:
#   expect WHAT ACTUAL WANTED, expect_match WHAT ACTUAL GLOB, verdict CASE
#   get KEY LINE           the value of KEY in a result line ("error": the
#                          rest of the line)
# Only PIDs started here are ever signalled.
# NEGTEST_PEER_WRAPPER, if set, is a command prefix for nns_peer run
# through libtool (e.g. "valgrind -q --error-exitcode=1"): a memcheck run
# of our side of every interop session.
#
# Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).

: "${me:?set me before sourcing lib.sh}"
WAIT_LIMIT=${NEGTEST_INTEROP_WAIT:-180}   # seconds before a peer is killed
PY=${PYTHON3_SYSTEM:-/usr/bin/python3}    # Debian's python3-gssapi
top_builddir=${top_builddir:-.}
interop_src=${interop_src:-$(cd "$(dirname "$0")" && pwd)}
case $interop_src in
*/bench) interop_src=$(cd "$interop_src/../tests/interop" && pwd) ;;
esac
peer=$top_builddir/tests/interop/nns_peer
run_peer() {
    if [ -n "${NEGTEST_PEER_WRAPPER:-}" ]; then
        # shellcheck disable=SC2086  # a command line, split on purpose
        "$top_builddir/libtool" --mode=execute $NEGTEST_PEER_WRAPPER \
            "$peer" "$@"
    else
        "$peer" "$@"
    fi
}
bdir=$top_builddir/tests/interop
spid='' apid=''
npass=0 nfail=0 fails=''

log() { printf '%s: %s\n' "$me" "$*" >&2; }

# A missing tool is a hard error (99) unless NEGTEST_ALLOW_SKIP=1 (77),
# as for tests/kdc/with-realm: CI must never skip these silently.
missing() {
    log "cannot run: $*"
    if [ "${NEGTEST_ALLOW_SKIP:-0}" = 1 ]; then exit 77; fi
    exit 99
}

# shellcheck disable=SC2317  # called from the trap
interop_cleanup() {
    for _p in $spid $apid; do
        kill -TERM "$_p" 2>/dev/null
        wait "$_p" 2>/dev/null
    done
    spid='' apid=''
}
trap interop_cleanup EXIT
trap 'interop_cleanup; exit 130' INT
trap 'interop_cleanup; exit 143' TERM
trap 'interop_cleanup; exit 129' HUP

if [ -z "${NEGTEST_REALM_DIR:-}" ] || [ ! -d "$NEGTEST_REALM_DIR" ]; then
    log "not run under tests/kdc/with-realm"
    exit 99
fi
[ -x "$peer" ] || { log "$peer not built"; exit 99; }
tmp=$NEGTEST_REALM_DIR/$me
mkdir -p "$tmp" || exit 99
mkdir -p "$bdir" && bdir=$(cd "$bdir" && pwd)

# ---- the .NET client -------------------------------------------------------

# need_dotnet: the runtime (fetch-dotnet, cached in the build tree) and
# NegClient.dll, built once under a lock so parallel tests share them.
need_dotnet() {
    mcs=${MCS:-$(command -v mcs)}
    [ -n "$mcs" ] || missing "mcs not found (Debian: mono-mcs)"
    command -v flock >/dev/null 2>&1 || missing "flock not found"
    dll=$bdir/NegClient.dll
    rtconf=$interop_src/NegClient.runtimeconfig.json
    dotnet=$(sh "$interop_src/fetch-dotnet") ||
        missing "fetch-dotnet could not provide the .NET Core 2.0 runtime"
    # mcs writes next to the target, then renames: never a half dll
    if ! (
        flock 9
        if [ ! -f "$dll" ] ||
           [ -n "$(find "$interop_src/NegClient.cs" -newer "$dll")" ]; then
            "$mcs" -r:System.dll "$interop_src/NegClient.cs" \
                -out:"$dll.tmp$$" >"$tmp/mcs.log" 2>&1 &&
                mv -f "$dll.tmp$$" "$dll"
        fi
    ) 9>"$bdir/.NegClient.lock"; then
        cat "$tmp/mcs.log" >&2
        rm -f "$dll.tmp$$"
        log "mcs failed"
        exit 99
    fi
    export DOTNET_MULTILEVEL_LOOKUP=0
}

dotnet_client() {
    _n=$1
    shift
    printf '+ dotnet NegClient.dll 127.0.0.1 %s %s\n' "$port" "$*"
    COUT=$(timeout -k 5 "$WAIT_LIMIT" "$dotnet" exec --runtimeconfig \
               "$rtconf" "$dll" 127.0.0.1 "$port" "$@" \
               2>"$tmp/$_n.cli.err")
    CRC=$?
    printf '  client (rc=%s): %s\n' "$CRC" "$COUT"
    show "$tmp/$_n.cli.err"
}

# ---- our peer --------------------------------------------------------------

show() {
    [ -s "$1" ] || return 0
    sed 's/^/  | /' "$1"
}

# wait_port FILE PID: until FILE has "port=N"; sets $port.
wait_port() {
    _i=0
    until grep -q '^port=' "$1" 2>/dev/null; do
        _i=$((_i + 1))
        if [ $_i -gt 600 ] || ! kill -0 "$2" 2>/dev/null; then
            show "$1" >&2
            log "peer did not start listening"
            exit 99
        fi
        sleep 0.05
    done
    port=$(sed -n 's/^port=//p' "$1")
}

# reap PID: wait, killing it after WAIT_LIMIT seconds; sets $_rc.
reap() {
    _i=0
    while kill -0 "$1" 2>/dev/null && [ $_i -lt $((WAIT_LIMIT * 10)) ]; do
        _i=$((_i + 1))
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        log "pid $1 still running after ${WAIT_LIMIT}s: killing it"
        kill -TERM "$1" 2>/dev/null
    fi
    wait "$1"
    _rc=$?
}

server() {
    _sn=$1
    shift
    sfile=$tmp/$_sn.srv
    # a stale file of an earlier session with this name would give
    # wait_port the old port before the new server truncates it
    rm -f "$sfile"
    printf '+ nns_peer server %s\n' "$*"
    run_peer server "$@" >"$sfile" 2>"$tmp/$_sn.srv.err" &
    spid=$!
    wait_port "$sfile" "$spid"
}

server_wait() {
    reap "$spid"
    spid=''
    SRC=$_rc
    SOUT=$(tail -n 1 "$sfile")
    printf '  server (rc=%s): %s\n' "$SRC" "$SOUT"
    show "$tmp/$_sn.srv.err"
}

# timeout(1) needs a program, not a shell function
run_peer_timeout() {
    if [ -n "${NEGTEST_PEER_WRAPPER:-}" ]; then
        # shellcheck disable=SC2086
        timeout -k 5 "$WAIT_LIMIT" "$top_builddir/libtool" --mode=execute \
            $NEGTEST_PEER_WRAPPER "$peer" "$@"
    else
        timeout -k 5 "$WAIT_LIMIT" "$peer" "$@"
    fi
}

client() {
    _n=$1
    shift
    printf '+ nns_peer client 127.0.0.1 %s %s\n' "$port" "$*"
    COUT=$(run_peer_timeout client 127.0.0.1 "$port" "$@" \
               2>"$tmp/$_n.cli.err")
    CRC=$?
    printf '  client (rc=%s): %s\n' "$CRC" "$COUT"
    show "$tmp/$_n.cli.err"
}

# ---- the Python acceptor ---------------------------------------------------

need_python() {
    "$PY" -c 'import gssapi' 2>/dev/null ||
        missing "$PY cannot import gssapi (Debian: python3-gssapi)"
}

acceptor() {
    _an=$1
    shift
    afile=$tmp/$_an.acc
    rm -f "$afile"
    printf '+ nns_acceptor.py %s\n' "$*"
    "$PY" "$interop_src/nns_acceptor.py" --timeout "$WAIT_LIMIT" "$@" \
        >"$afile" 2>&1 &
    apid=$!
    wait_port "$afile" "$apid"
}

acceptor_wait() {
    reap "$apid"
    apid=''
    ARC=$_rc
    AOUT=$(tail -n 1 "$afile")
    printf '  acceptor (rc=%s): %s\n' "$ARC" "$AOUT"
}

# ---- checks ----------------------------------------------------------------

get() {
    if [ "$1" = error ]; then
        case $2 in *" error="*|error=*)
            printf '%s\n' "$2" | sed 's/^\(.* \)\{0,1\}error=//' ;; esac
        return
    fi
    printf '%s\n' "$2" | sed 's/ error=.*//' | tr ' ' '\n' |
        sed -n "s/^$1=//p" | head -n 1
}

expect() {
    [ "$2" = "$3" ] || fails="$fails
    $1: got '$2', want '$3'"
}

expect_match() {
    # shellcheck disable=SC2254
    case $2 in $3) ;; *) fails="$fails
    $1: got '$2', want '$3'" ;; esac
}

expect_no_match() {
    # shellcheck disable=SC2254
    case $2 in $3) fails="$fails
    $1: got '$2', which matches '$3'" ;; esac
}

verdict() {
    if [ -z "$fails" ]; then
        echo "PASS $1"
        npass=$((npass + 1))
    else
        printf 'FAIL %s:%s\n' "$1" "$fails"
        nfail=$((nfail + 1))
    fi
    fails=''
}

# needs_ntlm CASE: true when NTLM can run.  NTLM needs MIT krb5 with
# gss-ntlmssp; with a Heimdal build (NEGTEST_GSSAPI=heimdal, from make
# check) it prints "SKIP CASE: why", counts a skip and is false.
nskip=0
needs_ntlm() {
    [ "${NEGTEST_GSSAPI:-mit}" != heimdal ] && return 0
    echo "SKIP $1: NTLM needs MIT krb5 with gss-ntlmssp; this build uses" \
        "Heimdal"
    nskip=$((nskip + 1))
    return 1
}

finish() {
    echo "$me: $npass passed, $nfail failed, $nskip skipped"
    [ "$nfail" -eq 0 ]
}
