#!/bin/sh
# tests/realm-shell.sh - scripts/realm-shell, as the README tells a new
# user to run it, without a terminal: from the build directory (found
# there, not through top_builddir), a command inside the realm that has
# alice's ticket and a service ticket, finds negcat on PATH, builds a
# program with $NEGSTREAM_CFLAGS and $NEGSTREAM_LIBS and runs it (a
# Kerberos client and server: examples/fprintf_log.c); the command's exit
# status comes back, and the realm is gone afterwards.
#
# Environment: top_srcdir, top_builddir (make check), CC (default cc).
#
# Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).

set -u
srcdir=$(cd "${top_srcdir:-.}" && pwd -P) || exit 99
builddir=$(cd "${top_builddir:-.}" && pwd -P) || exit 99
script=$srcdir/scripts/realm-shell
failures=0

fail() {
    echo "realm-shell.sh: FAIL: $*" >&2
    failures=$((failures + 1))
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/negstream-realm-shell.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT HUP INT TERM

# A sanitizer build's library needs its runtime loaded first: such a
# program is built and linked, but not run.
run_prog=1
if nm -D "$builddir/.libs/libnegstream.so" 2>/dev/null |
        grep -q ' U __\(asan\|tsan\|ubsan\)_'; then
    run_prog=0
fi

cat >"$tmp/inside.sh" <<'EOF'
set -u
tmp=$1 srcdir=$2 run_prog=$3
echo "realm=$NEGTEST_REALM_DIR"
klist -s || { echo "no ticket for alice"; exit 11; }
kvno -q "$NEGTEST_SPN" || { echo "no service ticket"; exit 12; }
command -v negcat >/dev/null || { echo "negcat not on PATH"; exit 13; }
# shellcheck disable=SC2086  # the variables are lists of words
${CC:-cc} $NEGSTREAM_CFLAGS -o "$tmp/fprintf_log" \
    "$srcdir/examples/fprintf_log.c" $NEGSTREAM_LIBS -pthread \
    -Wl,--allow-shlib-undefined || { echo "cc failed"; exit 14; }
if [ "$run_prog" = 1 ]; then
    "$tmp/fprintf_log" || { echo "fprintf_log failed"; exit 15; }
fi
exit 0
EOF

# As a user would: from the build directory, no top_builddir.
(cd "$builddir" && env -u top_builddir "$script" sh "$tmp/inside.sh" \
    "$tmp" "$srcdir" "$run_prog") >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -ne 0 ]; then
    fail "realm-shell sh inside.sh exited with $rc:"
    sed 's/^/    /' "$tmp/out" "$tmp/err" >&2
fi
if [ "$run_prog" = 1 ] && ! grep -q '^fprintf_log: OK$' "$tmp/out"; then
    fail "the program built inside the realm did not say OK"
fi
realm=$(sed -n 's/^realm=//p' "$tmp/out")
if [ -z "$realm" ]; then
    fail "the command saw no NEGTEST_REALM_DIR"
elif [ -e "$realm" ]; then
    fail "the realm $realm is still there after the command"
fi

# The command's exit status is the script's.
env -u top_builddir "$script" sh -c 'exit 7' >/dev/null 2>&1 </dev/null
rc=$?
[ "$rc" -eq 7 ] || fail "realm-shell sh -c 'exit 7' exited with $rc"

if [ "$failures" -ne 0 ]; then
    exit 1
fi
echo "realm-shell.sh: OK"
exit 0
