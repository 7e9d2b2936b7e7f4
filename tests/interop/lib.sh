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
# The modern .NET peer (negpeer, tests/interop/negpeer; one process serves
# many cases, each a line of options written to its standard input):
#   need_negpeer           build it (once per build tree) or skip/fail
#   negpeer_start NAME [--managed-ntlm] server|client
#                          start it; a server sets $port (and $nport)
#   negpeer_send ARGS...   give it the next case
#   negpeer_result         wait for that case's result line: $NOUT
#   negpeer_stop           end it (EOF on its input) and reap it
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
spid='' apid='' npid=''
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
    for _p in $spid $apid $npid; do
        kill -TERM "$_p" 2>/dev/null
        wait "$_p" 2>/dev/null
    done
    spid='' apid='' npid=''
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

# ---- the modern .NET peer (negpeer) ---------------------------------------

# need_negpeer: the .NET SDK and negpeer.dll (tests/interop/build-negpeer:
# built once per build tree, under a lock).  Without dotnet the tests skip
# (77) with one line saying why, except on CI (CI=true), where the modern
# .NET peer is required and its absence is a hard error (99).
need_negpeer() {
    DOTNET=${DOTNET:-dotnet}
    if ! command -v "$DOTNET" >/dev/null 2>&1; then
        if [ "${CI:-}" = true ]; then
            log "dotnet not found: CI requires the modern .NET interop" \
                "tests (install the .NET SDK 8 or later)"
            exit 99
        fi
        echo "$me: SKIP: dotnet not found on PATH; install the .NET SDK" \
            "(8 or later) to run the modern .NET interop tests"
        exit 77
    fi
    command -v flock >/dev/null 2>&1 || missing "flock not found"
    command -v mkfifo >/dev/null 2>&1 || missing "mkfifo not found"
    negdll=$(sh "$interop_src/build-negpeer" "$interop_src" "$bdir")
    _rc=$?
    case $_rc in
    0) ;;
    3)
        if [ "${CI:-}" = true ]; then
            log "no usable .NET SDK: CI requires the modern .NET tests"
            exit 99
        fi
        echo "$me: SKIP: no usable .NET SDK (see above)"
        exit 77 ;;
    *) log "build-negpeer failed"; exit 99 ;;
    esac
    # the runtime's own files stay in the build tree as well
    DOTNET_CLI_TELEMETRY_OPTOUT=1
    DOTNET_NOLOGO=1
    DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
    DOTNET_CLI_HOME=$bdir/negpeer-home
    # no diagnostics IPC socket left in /tmp by a peer that was killed
    DOTNET_EnableDiagnostics=0
    export DOTNET_CLI_TELEMETRY_OPTOUT DOTNET_NOLOGO \
        DOTNET_SKIP_FIRST_TIME_EXPERIENCE DOTNET_CLI_HOME \
        DOTNET_EnableDiagnostics
    # a write to a peer that died must fail, not kill the script
    trap '' PIPE
}

NEGPEER_LIMIT=${NEGTEST_NEGPEER_LIMIT:-1200}   # one negpeer process, s

# negpeer_start NAME [GLOBAL...] ROLE: its cases come from a fifo on fd 7.
negpeer_start() {
    _nn=$1
    shift
    nfifo=$tmp/$_nn.fifo
    nout=$tmp/$_nn.net
    nerr=$tmp/$_nn.net.err
    rm -f "$nfifo" "$nout"
    mkfifo "$nfifo" || exit 99
    printf '+ negpeer %s\n' "$*"
    timeout -k 5 "$NEGPEER_LIMIT" "$DOTNET" "$negdll" "$@" <"$nfifo" \
        >"$nout" 2>"$nerr" &
    npid=$!
    exec 7>"$nfifo"
    ncount=0
    # shellcheck disable=SC2034  # nport is for the callers
    case " $* " in
    *" server "*) wait_port "$nout" "$npid"; nport=$port ;;
    esac
}

negpeer_send() {
    printf '+ negpeer case: %s\n' "$*"
    printf '%s\n' "$*" >&7 || log "negpeer (pid $npid) is not reading"
}

# negpeer_result: the next "case=" line, within WAIT_LIMIT seconds.
negpeer_result() {
    ncount=$((ncount + 1))
    _i=0
    while [ "$(grep -c '^case=' "$nout")" -lt "$ncount" ]; do
        _i=$((_i + 1))
        if ! kill -0 "$npid" 2>/dev/null ||
           [ $_i -gt $((WAIT_LIMIT * 20)) ]; then
            NOUT="case=? rc=1 error=negpeer gave no result (exited or"
            NOUT="$NOUT timed out)"
            printf '  .NET: %s\n' "$NOUT"
            show "$nerr"
            return
        fi
        sleep 0.05
    done
    NOUT=$(grep '^case=' "$nout" | sed -n "${ncount}p")
    printf '  .NET: %s\n' "$NOUT"
}

negpeer_stop() {
    exec 7>&-
    reap "$npid"
    npid=''
    show "$nerr"
    [ "$_rc" -eq 0 ] || log "negpeer exited with status $_rc"
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

# (Parameter expansion only: the scripts call it thousands of times, and
# a pipeline of four processes per call costs seconds on a busy machine.)
get() {
    if [ "$1" = error ]; then
        case $2 in
        error=*) printf '%s\n' "${2#error=}" ;;
        *" error="*) printf '%s\n' "${2#*" error="}" ;;
        esac
        return
    fi
    _gl=" ${2%%" error="*}"
    case $_gl in
    *" $1="*)
        _gv=${_gl#*" $1="}
        printf '%s\n' "${_gv%% *}" ;;
    esac
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

# expect_ge WHAT ACTUAL MIN: an integer at least MIN.
expect_ge() {
    case $2 in
    ''|*[!0-9]*) fails="$fails
    $1: got '$2', want a number >= $3" ;;
    *) [ "$2" -ge "$3" ] || fails="$fails
    $1: got '$2', want >= $3" ;;
    esac
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
