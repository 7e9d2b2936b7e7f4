#!/bin/sh
# bench/dotnet.sh - throughput of one EncryptAndSign transfer into a
# libnegstream server (nns_peer), from the real .NET Core 2.0
# NegotiateStream client (NegClient.cs, a 256 KiB BeginWrite chain) and
# from our own client (nns_peer, a 256 KiB negstream_begin_write chain),
# Kerberos through SPNEGO, loopback, in one run under one throwaway realm.
# The two kinds of run alternate so that both see the same machine; each
# figure is the median of the runs.  Information only, never a test.
#
#   bench/dotnet.sh [--size MIB] [--runs N]     (defaults: 512 MiB, 5 runs)
#   BENCH_DOTNET_MIB, BENCH_DOTNET_RUNS         the same from the environment
#
# Run by "make bench" (bench/run) when executable; by hand from a build
# directory: top_builddir=. top_srcdir=/path/to/src /path/to/bench/dotnet.sh
# It builds tests/interop/nns_peer and tests/kdc/freeport if missing, gets
# the .NET runtime with tests/interop/fetch-dotnet (cached in the build
# tree) and compiles NegClient.cs with mcs.
#
# Measured by the server, from the end of the authentication to the end of
# the stream (the client's close), over the bytes received; no hashing on
# either side (--no-hash), so the figure is the stream's, not FNV's.
#
# Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
set -u

mib=${BENCH_DOTNET_MIB:-512}
runs=${BENCH_DOTNET_RUNS:-5}
while [ $# -gt 0 ]; do
    case $1 in
    --size) mib=${2:?--size needs MiB}; shift 2 ;;
    --runs) runs=${2:?--runs needs a count}; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
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
need_dotnet

bytes=$((mib * 1048576))
spn=${NEGTEST_SPN:?}

# one KIND: one transfer; appends "MB/s" to $tmp/KIND.
one() {
    server "$1" --protection EncryptAndSign --no-hash >&2
    if [ "$1" = dotnet ]; then
        dotnet_client "$1" "$spn" EncryptAndSign --no-hash \
            --send-stream $bytes >&2
    else
        client "$1" --protection EncryptAndSign --target "$spn" --no-hash \
            --send-stream $bytes >&2
    fi
    server_wait >&2
    if [ "$CRC" -ne 0 ] || [ "$SRC" -ne 0 ] ||
       [ "$(get recv "$SOUT")" != "$bytes" ]; then
        echo "bench/dotnet.sh: $1 run failed" >&2
        echo "  client (exit $CRC): $COUT" >&2
        echo "  server: $SOUT" >&2
        exit 1
    fi
    _el=$(get elapsed "$SOUT")
    awk -v b="$bytes" -v t="$_el" 'BEGIN { printf "%.1f\n", b / 1e6 / t }' \
        >>"$tmp/$1"
    printf '  run %s %-6s %8s s  %s MB/s\n' "$i" "$1" "$_el" \
        "$(tail -n 1 "$tmp/$1")" >&2
}

median() {
    sort -n "$1" | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2];
              else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "bench/dotnet.sh: $mib MiB EncryptAndSign (Kerberos via SPNEGO) into" \
    "a libnegstream server, $runs runs each, $(nproc) CPUs" >&2
: >"$tmp/dotnet"
: >"$tmp/c"
i=1
while [ $i -le "$runs" ]; do
    one dotnet
    one c
    i=$((i + 1))
done
dn=$(median "$tmp/dotnet")
cc=$(median "$tmp/c")
ratio=$(awk -v a="$dn" -v b="$cc" 'BEGIN { printf "%.2f", a / b }')
echo
echo "EncryptAndSign, $mib MiB, median of $runs (MB/s = 10^6 bytes/s):"
printf '  %-34s %8s MB/s  (runs: %s)\n' ".NET Core 2.0 client -> C server" \
    "$dn" "$(tr '\n' ' ' <"$tmp/dotnet" | sed 's/ $//')"
printf '  %-34s %8s MB/s  (runs: %s)\n' "C client -> C server" "$cc" \
    "$(tr '\n' ' ' <"$tmp/c" | sed 's/ $//')"
printf '  %-34s %8s\n' ".NET / C ratio" "$ratio"
