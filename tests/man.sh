#!/bin/sh
# tests/man.sh - the manual is complete and clean.
#
#  1. Every symbol libnegstream.so exports (nm -D --defined-only) has a
#     page that man(1) finds through MANPATH=$top_srcdir/man, and that
#     page renders without a warning.
#  2. Every page under man/ (man1, man3, man7) renders with
#     "LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l"
#     run from the top of the source tree, as the README tells a reader
#     to ("man -l man/man3/negstream_end_write.3"), with nothing at all on
#     standard error, and is not empty; the pages of man3 and man7 also
#     fit in those 80 columns.  So no page is a ".so" link: man -l
#     resolves those from the current directory.
#  3. Every page in man3 has the sections NAME, SYNOPSIS, DESCRIPTION,
#     RETURN VALUE, ERRORS, THREAD SAFETY, EXAMPLE and SEE ALSO, and every
#     function it names in NAME is declared in include/negstream.h.  A
#     companion page (a roff comment 'COMPANION-OF: man3/MAIN.3': one
#     function that MAIN.3 documents in full) needs NAME, SYNOPSIS,
#     DESCRIPTION, RETURN VALUE and SEE ALSO; MAIN.3 must be a full page
#     that names the function in its NAME, and the companion's SEE ALSO
#     names MAIN first.
#  4. The example programs of the pages (the lines between the roff
#     comments 'EXAMPLE-BEGIN' and 'EXAMPLE-END') compile with -Wall
#     -Wextra -Werror against include/negstream.h, and link against the
#     built library when they have a main().
#  5. The prototypes in each page's SYNOPSIS compile after
#     #include <negstream.h> (so they are the header's), and every
#     function the page names has one.
#  6. Every page is listed in man/Makefile.inc (installed, distributed).
#  7. Installed by "make install-man DESTDIR=..." into a scratch
#     directory, every exported symbol's page is found and renders
#     without a warning with "man -M" on the installed tree.
#
# Environment: top_srcdir, top_builddir (exported by make check; default
# "."), CC (default cc), NM (default nm), MAKE (default make).  Exit 0 or 1: missing tools are
# a failure, not a skip (scripts/install-deps installs man-db and groff).
#
# Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).

set -u
LC_ALL=C
export LC_ALL

srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
mandir=$(cd "$srcdir/man" 2>/dev/null && pwd) || {
    echo "man.sh: FAIL: $srcdir/man not found (set top_srcdir)" >&2
    exit 1
}
lib=$builddir/.libs/libnegstream.so
header=$srcdir/include/negstream.h
cc_prog=${CC:-cc}
nm_prog=${NM:-nm}
failures=0

fail() {
    echo "man.sh: FAIL: $*" >&2
    failures=$((failures + 1))
}

for tool in man groff "$nm_prog" "$cc_prog"; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "man.sh: FAIL: '$tool' not found (scripts/install-deps)" >&2
        exit 1
    }
done
[ -f "$lib" ] || {
    echo "man.sh: FAIL: $lib not found (build libnegstream.la)" >&2
    exit 1
}

# No options from the caller's environment; no seccomp sandbox (some
# container runtimes refuse to install one, and man-db then fails).
unset MANOPT MANSECT
MAN_DISABLE_SECCOMP=1
export MAN_DISABLE_SECCOMP

tmp=$(mktemp -d "${TMPDIR:-/tmp}/negstream-man.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT HUP INT TERM

# render ARGS...: man with the settings of the brief; stdout to
# $tmp/out, stderr to $tmp/err.
render() {
    LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 MANPAGER=cat PAGER=cat \
        man --warnings -E UTF-8 "$@" >"$tmp/out" 2>"$tmp/err"
}

# ---- 1. every exported symbol has a page ---------------------------------

"$nm_prog" -D --defined-only "$lib" >"$tmp/nm" 2>"$tmp/nm.err" || {
    echo "man.sh: FAIL: $nm_prog -D $lib: $(cat "$tmp/nm.err")" >&2
    exit 1
}
awk 'NF >= 3 && $2 ~ /^[TDBRGSVWi]$/ { sub(/@.*/, "", $3); print $3 }' \
    "$tmp/nm" | grep '^negstream_' | sort -u >"$tmp/symbols"
nsym=$(wc -l <"$tmp/symbols" | tr -d ' ')
[ "$nsym" -gt 0 ] || fail "no negstream_ symbol exported by $lib"

while read -r sym; do
    # MANPATH alone: man(1) must find the page like an installed one.
    if ! path=$(MANPATH=$mandir man -w "$sym" 2>/dev/null) ||
       [ -z "$path" ]; then
        fail "$sym: no page (man -w $sym with MANPATH=$mandir)"
        continue
    fi
    case $path in
    "$mandir"/man3/*) ;;
    *) fail "$sym: man -w found $path, not a page under $mandir/man3" ;;
    esac
    if ! MANPATH=$mandir render "$sym"; then
        fail "$sym: man $sym failed: $(cat "$tmp/err")"
    elif [ -s "$tmp/err" ]; then
        fail "$sym: man $sym warns:"
        sed 's/^/    /' "$tmp/err" >&2
    elif ! grep -q "$sym" "$tmp/out"; then
        fail "$sym: the page man shows for it does not mention it"
    fi
done <"$tmp/symbols"

# ---- 2. every page renders without warnings -------------------------------

npages=0
for page in "$mandir"/man1/*.1 "$mandir"/man3/*.3 "$mandir"/man7/*.7; do
    [ -f "$page" ] || continue
    npages=$((npages + 1))
    rel=${page#"$mandir"/}
    # From the top of the source tree, as a reader of the README would.
    if ! (cd "$mandir/.." && render -l "man/$rel"); then
        fail "man/$rel: man -l from the source root failed:" \
            "$(cat "$tmp/err")"
        continue
    fi
    if [ -s "$tmp/err" ]; then
        fail "$rel: warnings:"
        sed 's/^/    /' "$tmp/err" >&2
    fi
    [ "$(wc -l <"$tmp/out")" -gt 5 ] || fail "$rel: renders (almost) empty"
    # Our pages fit the 80 columns they are rendered for (no-fill
    # examples would otherwise run over the edge without a warning).
    case $rel in
    man3/*|man7/*)
        width=$(LC_ALL=C.UTF-8 wc -L <"$tmp/out" | tr -d ' ')
        [ "$width" -le 80 ] ||
            fail "$rel: a rendered line is $width columns wide (max 80)"
        ;;
    esac
done
[ -f "$mandir/man7/negstream.7" ] || fail "man7/negstream.7 is missing"
[ -f "$mandir/man1/negcat.1" ] || fail "man1/negcat.1 is missing"

# Every page is installed and distributed: listed in man/Makefile.inc.
for page in "$mandir"/man1/*.1 "$mandir"/man3/*.3 "$mandir"/man7/*.7; do
    [ -f "$page" ] || continue
    rel=${page#"$mandir"/}
    grep -q "man/$rel\( \|\$\)" "$mandir/Makefile.inc" ||
        fail "$rel is not listed in man/Makefile.inc (not installed)"
done

# ---- 3. the sections of the function pages --------------------------------

# Declared functions: an identifier right before "(" (comments only name
# real functions, so they do no harm).
grep -o 'negstream_[a-z_]*(' "$header" | tr -d '(' | sort -u \
    >"$tmp/declared"

for page in "$mandir"/man3/*.3; do
    [ -f "$page" ] || continue
    rel=${page#"$mandir"/}
    if grep -q '^\.so ' "$page"; then
        fail "$rel: a .so link page does not render with man -l from" \
            "the source root; write a companion page (COMPANION-OF)"
        continue
    fi
    main=$(sed -n 's/^\.\\" COMPANION-OF: //p' "$page")
    if [ -n "$main" ]; then
        sections="NAME SYNOPSIS DESCRIPTION RETURN_VALUE SEE_ALSO"
        if [ ! -f "$mandir/$main" ]; then
            fail "$rel: COMPANION-OF $main: no such page"
        elif grep -q '^\.\\" COMPANION-OF:' "$mandir/$main"; then
            fail "$rel: COMPANION-OF $main, itself a companion page"
        else
            mainbase=$(basename "$main" .3)
            sed -n '/^\.SH NAME/,/\\-/p' "$page" | sed 's/\\-.*//' |
                grep -o 'negstream_[a-z_]*' | while read -r fn; do
                    sed -n '/^\.SH NAME/,/\\-/p' "$mandir/$main" |
                        sed 's/\\-.*//' | grep -qw "$fn" ||
                        echo "$fn" >>"$tmp/orphans"
                done
            if [ -s "$tmp/orphans" ]; then
                fail "$rel: $main does not name $(cat "$tmp/orphans")" \
                    "in its NAME"
                rm -f "$tmp/orphans"
            fi
            sed -n '/^\.SH "\{0,1\}SEE ALSO/,$p' "$page" | sed -n 2p |
                grep -q "^\.BR $mainbase (3)" ||
                fail "$rel: SEE ALSO does not start with $mainbase(3)"
        fi
    else
        sections="NAME SYNOPSIS DESCRIPTION RETURN_VALUE ERRORS"
        sections="$sections THREAD_SAFETY EXAMPLE SEE_ALSO"
    fi
    for sec in $sections; do
        sec=$(printf '%s' "$sec" | tr _ ' ')
        grep -q "^\.SH \"\{0,1\}$sec\"\{0,1\}\$" "$page" ||
            fail "$rel: no .SH $sec"
    done
    # The functions in NAME: declared in the header, and each reaches
    # this page (directly or through a link page).
    sed -n '/^\.SH NAME/,/\\-/p' "$page" | sed 's/\\-.*//' |
        grep -o 'negstream_[a-z_]*' >"$tmp/names"
    [ -s "$tmp/names" ] || fail "$rel: NAME lists no function"
    while read -r fn; do
        grep -qx "$fn" "$tmp/declared" ||
            fail "$rel: $fn is not declared in negstream.h"
        [ -f "$mandir/man3/$fn.3" ] ||
            fail "$rel: $fn has no man3/$fn.3 (page or .so link)"
    done <"$tmp/names"
    grep -q '^\.B #include <negstream\.h>$' "$page" ||
        fail "$rel: SYNOPSIS lacks #include <negstream.h>"
done

# ---- 4. the examples compile ----------------------------------------------

# roff escapes used in the examples: \- \e \(aq \(dq \&
unroff() {
    sed -e 's/\\-/-/g' -e "s/\\\\(aq/'/g" -e 's/\\(dq/"/g' \
        -e 's/\\&//g' -e 's/\\e/\\/g'
}

nex=0
for page in "$mandir"/man3/*.3 "$mandir"/man7/*.7; do
    grep -q '^\.\\" EXAMPLE-BEGIN' "$page" 2>/dev/null || continue
    base=$(basename "$page")
    sed -n '/^\.\\" EXAMPLE-BEGIN/,/^\.\\" EXAMPLE-END/p' "$page" |
        sed '1d;$d' | unroff >"$tmp/$base.c"
    nex=$((nex + 1))
    if grep -q '^\.' "$tmp/$base.c"; then
        fail "$base: example has roff requests inside"
    fi
    flags="-std=gnu99 -Wall -Wextra -Werror -pthread -I$srcdir/include"
    # shellcheck disable=SC2086  # flags are words
    if ! "$cc_prog" $flags -c -o "$tmp/$base.o" "$tmp/$base.c" \
            2>"$tmp/cc.err"; then
        fail "$base: the example does not compile:"
        sed 's/^/    /' "$tmp/cc.err" >&2
        continue
    fi
    if grep -q '^int main(' "$tmp/$base.c"; then
        # shellcheck disable=SC2086
        # Not run, only linked: a sanitizer build's library may leave
        # its runtime's symbols to the executable.
        "$cc_prog" -pthread -o "$tmp/$base.bin" "$tmp/$base.o" \
            -L"$builddir/.libs" -lnegstream -Wl,--allow-shlib-undefined \
            2>"$tmp/cc.err" || {
            fail "$base: the example does not link:"
            sed 's/^/    /' "$tmp/cc.err" >&2
        }
    fi
done
[ "$nex" -gt 0 ] || fail "no example found between EXAMPLE-BEGIN/END"

# ---- 5. the SYNOPSIS prototypes are the header's -------------------------

# Every declaration in a page's rendered SYNOPSIS is compiled after
# #include <negstream.h>: a prototype that differs from the header's is a
# "conflicting types" error.  Every function of NAME must be declared there.
nproto=0
for page in "$mandir"/man3/*.3; do
    grep -q '^\.so ' "$page" && continue
    base=$(basename "$page")
    (cd "$mandir" && LC_ALL=C MANWIDTH=200 MANROFFSEQ='' man -l \
        "man3/$base" 2>/dev/null) |
        sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | sed '1d;$d' |
        grep -v '^ *#' | tr '\n' ' ' | tr ';' '\n' |
        sed 's/^ *//; s/  */ /g' | grep '(' |
        grep -v '^typedef struct\|^}\|/\*' >"$tmp/$base.protos"
    {
        echo '#include <negstream.h>'
        sed 's/$/;/' "$tmp/$base.protos"
    } >"$tmp/$base.syn.c"
    if ! "$cc_prog" -std=gnu11 -Wall -Wextra -Werror -I"$srcdir/include" \
            -c -o "$tmp/$base.syn.o" "$tmp/$base.syn.c" 2>"$tmp/cc.err"
    then
        fail "$base: SYNOPSIS differs from negstream.h:"
        sed 's/^/    /' "$tmp/cc.err" >&2
    fi
    sed -n '/^\.SH NAME/,/\\-/p' "$page" | sed 's/\\-.*//' |
        grep -o 'negstream_[a-z_]*' | while read -r fn; do
            grep -q "[ *]$fn(" "$tmp/$base.protos" ||
                echo "$fn" >>"$tmp/missing"
        done
    nproto=$((nproto + $(wc -l <"$tmp/$base.protos")))
done
if [ -s "$tmp/missing" ]; then
    fail "functions without a prototype in their page's SYNOPSIS:" \
        "$(tr '\n' ' ' <"$tmp/missing")"
fi

# ---- 7. the installed manual ----------------------------------------------

# make install-man puts the pages where "make install" would, under a
# scratch DESTDIR; man -M on that tree must find and render every page.
inst=$tmp/inst
if ! ${MAKE:-make} -s -C "$builddir" install-man DESTDIR="$inst" \
        >"$tmp/install.out" 2>&1; then
    fail "make install-man DESTDIR=$inst failed:"
    sed 's/^/    /' "$tmp/install.out" >&2
else
    imandir=$(find "$inst" -type d -name man3 | head -n 1)
    imandir=${imandir%/man3}
    if [ -z "$imandir" ]; then
        fail "make install-man installed no man3 directory under $inst"
    else
        ninst=0
        while read -r sym; do
            if ! render -M "$imandir" "$sym"; then
                fail "installed $sym: man -M failed: $(cat "$tmp/err")"
            elif [ -s "$tmp/err" ]; then
                fail "installed $sym: man -M warns:"
                sed 's/^/    /' "$tmp/err" >&2
            elif ! grep -q "$sym" "$tmp/out"; then
                fail "installed $sym: the page does not mention it"
            else
                ninst=$((ninst + 1))
            fi
        done <"$tmp/symbols"
        for page in "$mandir"/man1/*.1 "$mandir"/man3/*.3 \
                    "$mandir"/man7/*.7; do
            rel=${page#"$mandir"/}
            [ -f "$imandir/$rel" ] ||
                fail "$rel is not installed (not in $imandir)"
        done
    fi
fi

if [ "$failures" -ne 0 ]; then
    echo "man.sh: $failures failure(s)" >&2
    exit 1
fi
echo "man.sh: $nsym symbols have pages, $npages pages render without" \
    "warnings from the source root, $nex examples compile, $nproto" \
    "SYNOPSIS prototypes match, ${ninst:-0} installed pages render"
exit 0
