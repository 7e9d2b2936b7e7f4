#!/bin/sh
# tests/symbols.sh - the installed shared library exports the public API and
# nothing else.
#
#  1. Every symbol libnegstream.so defines in its dynamic table as code or
#     data (nm types T D B R, and G S V W i for the same in other sections
#     or weak/indirect form) matches ^negstream_[a-z]: no negstream__
#     internal, no helper, no symbol of a statically linked dependency.
#  2. Every function declared NEGSTREAM_API in include/negstream.h is
#     exported.
#
# Environment: top_builddir (the library is $top_builddir/.libs/
# libnegstream.so) and top_srcdir, both exported by `make check`; each
# falls back to ".".  NM overrides the nm program, NEGSTREAM_SO the
# library checked.  Exit 0 or 1: a missing
# library or nm is a failure, not a skip.

set -u
LC_ALL=C
export LC_ALL

builddir=${top_builddir:-.}
srcdir=${top_srcdir:-.}
lib=${NEGSTREAM_SO:-$builddir/.libs/libnegstream.so}
header=$srcdir/include/negstream.h
nm_prog=${NM:-nm}

fail() {
    echo "symbols.sh: FAIL: $*" >&2
    exit 1
}

command -v "$nm_prog" >/dev/null 2>&1 ||
    fail "'$nm_prog' not found (install binutils or set NM)"
[ -f "$lib" ] || fail "$lib not found (build libnegstream.la first)"
[ -f "$header" ] || fail "$header not found (set top_srcdir)"

tmp=${TMPDIR:-/tmp}/negstream-symbols.$$
trap 'rm -f "$tmp".*' EXIT HUP INT TERM

# "ADDRESS TYPE NAME" (undefined symbols have no address and are left out
# by --defined-only).  Versioned names ("name@@VER") are cut at the "@".
"$nm_prog" -D --defined-only "$lib" >"$tmp.nm" 2>"$tmp.err" ||
    fail "$nm_prog -D --defined-only $lib: $(cat "$tmp.err")"
awk 'NF >= 3 && $2 ~ /^[TDBRGSVWi]$/ { sub(/@.*/, "", $3); print $3 }' \
    "$tmp.nm" | sort -u >"$tmp.exported"

# Public functions: the identifier before the first "(" of each
# declaration that starts with NEGSTREAM_API, with preprocessor lines and
# comments removed and declarations joined onto one line each.
grep -v '^[[:space:]]*#' "$header" |
    awk '{ text = text $0 " " }
         END {
             while ((i = index(text, "/*")) > 0) {
                 rest = substr(text, i + 2)
                 j = index(rest, "*/")
                 if (j == 0) { text = substr(text, 1, i - 1); break }
                 text = substr(text, 1, i - 1) " " substr(rest, j + 2)
             }
             print text
         }' | tr ';{}' '\n\n\n' |
    sed -n -e '/NEGSTREAM_API[[:space:]]/!d' \
           -e 's/^.*NEGSTREAM_API[[:space:]]//' \
           -e 's/(.*$//' \
           -e 's/[[:space:]]*$//' \
           -e 's/^.*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\)$/\1/p' |
    sort -u >"$tmp.declared"

n_exported=$(wc -l <"$tmp.exported" | tr -d ' ')
n_declared=$(wc -l <"$tmp.declared" | tr -d ' ')
echo "symbols.sh: $lib: $n_exported exported code/data symbols"
echo "symbols.sh: $header: $n_declared NEGSTREAM_API functions"
[ "$n_declared" -gt 0 ] ||
    fail "found no NEGSTREAM_API declaration in $header"

status=0
stray=$(grep -v '^negstream_[a-z]' "$tmp.exported")
if [ -n "$stray" ]; then
    echo "symbols.sh: exported but not public API (want ^negstream_[a-z]):" >&2
    echo "$stray" | sed 's/^/    /' >&2
    status=1
fi
missing=$(comm -23 "$tmp.declared" "$tmp.exported")
if [ -n "$missing" ]; then
    echo "symbols.sh: declared NEGSTREAM_API in negstream.h," \
         "not exported:" >&2
    echo "$missing" | sed 's/^/    /' >&2
    status=1
fi
undeclared=$(comm -13 "$tmp.declared" "$tmp.exported" |
             grep '^negstream_[a-z]')
if [ -n "$undeclared" ]; then
    # Not a failure: a negstream_ symbol may be data.  Say so, though.
    echo "symbols.sh: note: exported, not declared NEGSTREAM_API:" \
         $undeclared
fi
if [ "$status" -eq 0 ]; then
    echo "symbols.sh: OK: only ^negstream_[a-z] exported, every declared" \
         "function present"
fi
exit $status
