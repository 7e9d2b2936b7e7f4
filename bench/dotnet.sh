#!/bin/sh
# bench/dotnet.sh - throughput of one EncryptAndSign transfer between .NET
# NegotiateStream and libnegstream, every pairing, in one run under one
# throwaway realm (Kerberos through SPNEGO, loopback, one connection):
#
#   net-net   modern .NET client -> modern .NET server   (negpeer, both)
#   net-c     modern .NET client -> libnegstream server  (negpeer, nns_peer)
#   c-net     libnegstream client -> modern .NET server  (nns_peer, negpeer)
#   c-c       libnegstream client -> libnegstream server (nns_peer, both)
#   core2-c   .NET Core 2.0 client -> libnegstream server (NegClient.cs),
#             when mcs and the npm-fetched runtime are available
#
# Every client writes 256 KiB at a time, each write issued from the
# previous one's completion callback (.NET: BeginWrite/EndWrite; ours:
# negstream_begin_write/end_write); the server reads until the end of the
# stream and measures from the end of the authentication to the end of
# the stream; no hashing on either side (--no-hash).  The kinds alternate
# run by run so that all see the same machine; each figure is the median
# of the runs, and each ratio is the ratio of two medians of the same run.
# Information only, never a test.
#
#   bench/dotnet.sh [--size MIB] [--runs N]     (defaults: 512 MiB, 5 runs)
#   BENCH_DOTNET_MIB, BENCH_DOTNET_RUNS         the same from the environment
#
# Run by "make bench" (bench/run) when executable; by hand from a build
# directory: top_builddir=. top_srcdir=/path/to/src /path/to/bench/dotnet.sh
# It builds tests/interop/nns_peer and tests/kdc/freeport if missing, the
# modern .NET peer with tests/interop/build-negpeer (the installed SDK),
# and, for core2-c, gets the .NET Core 2.0 runtime with fetch-dotnet.
#
# Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
set -u

mib=${BENCH_DOTNET_MIB:-512}
runs=${BENCH_DOTNET_RUNS:-5}
while [ $# -gt 0 ]; do
    case $1 in
    --size) mib=${2:?--size needs MiB}; shift 2 ;;
    --runs) runs=${2:?--runs needs a count}; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "bench/dotnet.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

bench_dir=$(cd "$(dirname "$0")" && pwd)
top_srcdir=${top_srcdir:-$(cd "$bench_dir/.." && pwd)}
top_builddir=${top_builddir:-.}
top_builddir=$(cd "$top_builddir" && pwd)
export top_srcdir top_builddir

if [ -z "${NEGTEST_REALM_DIR:-}" ]; then
    for t in tests/interop/nns_peer tests/kdc/freeport; do
        if [ ! -x "$top_builddir/$t" ]; then
            ${MAKE:-make} -C "$top_builddir" "$t" >&2 || {
                echo "bench/dotnet.sh: cannot build $t" >&2
                exit 1
            }
        fi
    done
    NEGTEST_FREEPORT=${NEGTEST_FREEPORT:-$top_builddir/tests/kdc/freeport}
    export NEGTEST_FREEPORT
    exec sh "$top_srcdir/tests/kdc/with-realm" sh "$0" --size "$mib" \
        --runs "$runs"
fi

me=bench-dotnet.sh
interop_src=$top_srcdir/tests/interop
# shellcheck source=tests/interop/lib.sh
. "$interop_src/lib.sh"
need_negpeer
kinds="net-net net-c c-net c-c"
# The .NET Core 2.0 figure only where its runtime and mcs are at hand.
if (need_dotnet) >/dev/null 2>&1; then
    need_dotnet
    kinds="$kinds core2-c"
else
    echo "bench/dotnet.sh: no .NET Core 2.0 runtime or mcs: core2-c skipped" \
        >&2
fi

bytes=$((mib * 1048576))
spn=${NEGTEST_SPN:?}
NA="--level EncryptAndSign --io apm --no-hash"    # .NET side, both roles
CA="--protection EncryptAndSign --no-hash"         # our side, both roles

# Two negpeer processes for the whole run: a server and a client.
negpeer_start nsrv server >&2
nsrv_port=$nport nsrv_pid=$npid nsrv_out=$nout
exec 6>&7                       # the server's case fifo stays on fd 6
npid=''
negpeer_start ncli client >&2
ncli_pid=$npid ncli_out=$nout
npid="$nsrv_pid $ncli_pid"      # interop_cleanup stops both
nsrv_n=0 ncli_n=0

# wait_line FILE N: until FILE has N "case=" lines; prints the Nth.
wait_line() {
    _i=0
    while [ "$(grep -c '^case=' "$1")" -lt "$2" ]; do
        _i=$((_i + 1))
        if [ $_i -gt $((WAIT_LIMIT * 20)) ]; then
            echo "case=? rc=1 error=no result"
            return
        fi
        sleep 0.05
    done
    grep '^case=' "$1" | sed -n "$2p"
}

fail() {
    echo "bench/dotnet.sh: $1 run failed" >&2
    shift
    for _l in "$@"; do
        echo "  $_l" >&2
    done
    exit 1
}

# one KIND: one transfer; appends "MB/s" to $tmp/KIND.  (The option
# lists are split on purpose; "A && B || fail": fail exits.)
# shellcheck disable=SC2015,SC2086
one() {
    case $1 in
    net-net)
        printf '%s\n' "--name $1 $NA --recv eof" >&6
        nsrv_n=$((nsrv_n + 1))
        printf '%s\n' "$nsrv_port --name $1 $NA --stream $bytes" >&7
        ncli_n=$((ncli_n + 1))
        _c=$(wait_line "$ncli_out" $ncli_n)
        _s=$(wait_line "$nsrv_out" $nsrv_n)
        [ "$(get rc "$_c")" = 0 ] && [ "$(get rc "$_s")" = 0 ] &&
            [ "$(get recv "$_s")" = "$bytes" ] || fail "$1" "$_c" "$_s"
        _el=$(get data_s "$_s") ;;
    net-c)
        server "$1" $CA >&2
        printf '%s\n' "$port --name $1 $NA --stream $bytes" >&7
        ncli_n=$((ncli_n + 1))
        _c=$(wait_line "$ncli_out" $ncli_n)
        server_wait >&2
        [ "$(get rc "$_c")" = 0 ] && [ "$SRC" -eq 0 ] &&
            [ "$(get recv "$SOUT")" = "$bytes" ] || fail "$1" "$_c" "$SOUT"
        _el=$(get elapsed "$SOUT") ;;
    c-net)
        printf '%s\n' "--name $1 $NA --recv eof" >&6
        nsrv_n=$((nsrv_n + 1))
        port=$nsrv_port
        client "$1" $CA --target "$spn" --send-stream $bytes >&2
        _s=$(wait_line "$nsrv_out" $nsrv_n)
        [ "$CRC" -eq 0 ] && [ "$(get rc "$_s")" = 0 ] &&
            [ "$(get recv "$_s")" = "$bytes" ] || fail "$1" "$COUT" "$_s"
        _el=$(get data_s "$_s") ;;
    c-c)
        server "$1" $CA >&2
        client "$1" $CA --target "$spn" --send-stream $bytes >&2
        server_wait >&2
        [ "$CRC" -eq 0 ] && [ "$SRC" -eq 0 ] &&
            [ "$(get recv "$SOUT")" = "$bytes" ] || fail "$1" "$COUT" "$SOUT"
        _el=$(get elapsed "$SOUT") ;;
    core2-c)
        server "$1" $CA >&2
        dotnet_client "$1" "$spn" EncryptAndSign --no-hash \
            --send-stream $bytes >&2
        server_wait >&2
        [ "$CRC" -eq 0 ] && [ "$SRC" -eq 0 ] &&
            [ "$(get recv "$SOUT")" = "$bytes" ] || fail "$1" "$COUT" "$SOUT"
        _el=$(get elapsed "$SOUT") ;;
    esac
    awk -v b="$bytes" -v t="$_el" 'BEGIN { printf "%.1f\n", b / 1e6 / t }' \
        >>"$tmp/$1"
    printf '  run %s %-8s %8s s  %s MB/s\n' "$i" "$1" "$_el" \
        "$(tail -n 1 "$tmp/$1")" >&2
}

median() {
    sort -n "$1" | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2];
              else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "bench/dotnet.sh: $mib MiB EncryptAndSign (Kerberos via SPNEGO)," \
    "$runs runs of each, $(nproc) CPUs, .NET $(dotnet "$negdll" info |
    sed 's/ .*//; s/dotnet=//')" >&2
for k in $kinds; do
    : >"$tmp/$k"
done
i=1
while [ $i -le "$runs" ]; do
    for k in $kinds; do
        one "$k"
    done
    i=$((i + 1))
done
exec 6>&-
npid=$nsrv_pid
negpeer_stop >/dev/null
npid=$ncli_pid
negpeer_stop >/dev/null

label() {
    case $1 in
    net-net) echo ".NET client -> .NET server" ;;
    net-c) echo ".NET client -> libnegstream server" ;;
    c-net) echo "libnegstream client -> .NET server" ;;
    c-c) echo "libnegstream -> libnegstream" ;;
    core2-c) echo ".NET Core 2.0 client -> libnegstream" ;;
    esac
}

echo
echo "EncryptAndSign, $mib MiB, median of $runs (MB/s = 10^6 bytes/s):"
for k in $kinds; do
    printf '  %-38s %8s MB/s  (runs: %s)\n' "$(label "$k")" \
        "$(median "$tmp/$k")" "$(tr '\n' ' ' <"$tmp/$k" | sed 's/ $//')"
done
ratio() {
    awk -v a="$(median "$tmp/$1")" -v b="$(median "$tmp/$2")" \
        'BEGIN { printf "%.2f", a / b }'
}
echo "Ratios (medians of this run):"
printf '  %-38s %8s\n' "libnegstream->libnegstream / .NET->.NET" \
    "$(ratio c-c net-net)"
printf '  %-38s %8s\n' ".NET->libnegstream / .NET->.NET" \
    "$(ratio net-c net-net)"
printf '  %-38s %8s\n' "libnegstream->.NET / .NET->.NET" \
    "$(ratio c-net net-net)"
