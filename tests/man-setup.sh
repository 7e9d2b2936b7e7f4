#!/bin/sh
# tests/man-setup.sh - the "KERBEROS SETUP IN FIVE MINUTES" section of
# negstream(7) works exactly as written.
#
# Takes the shell commands of that section from man/man7/negstream.7 (every
# line between a '.\" SETUP-BEGIN' and the next '.\" SETUP-END' comment,
# roff escapes undone), and runs them with sh in a fresh directory under
# $NEGTEST_TMPDIR (default $top_builddir/tests/tmp), with DIR, PORT and
# NCPORT set to that directory and two free loopback ports, the built
# negcat first in PATH, HOME pointing into the directory, and no Kerberos
# variable of the caller.  So a throwaway realm is made, its KDC started,
# alice gets a ticket, and negcat sends a line from a client to a server.
# Then it checks:
#  - standard output holds every line the page says it prints (between
#    SETUP-OUTPUT-BEGIN and SETUP-OUTPUT-END): the server names
#    alice@LAB.TEST, Kerberos, encrypt and mutual authentication, and the
#    line arrived;
#  - the page's last command stopped the KDC;
#  - then, in that realm, the example program of negstream_begin_write(3)
#    (blocking, wait-on-handle and callback writes) sends its data to a
#    negcat server, which receives all of it.
# A KDC that could not bind its port (a race for the free port) gets a new
# pair of ports, up to 3 attempts.
#
# Only processes started here are ever signalled, by PID: the commands'
# shell, the KDC named by the pid file the page has it write, and any
# process whose working directory is in our directory (the page's commands
# cd there).  A run that has not finished after WAIT_LIMIT seconds is a
# failure (a hang guard, not a timed assertion).
#
# Environment: top_srcdir, top_builddir (from make check; default "."),
# NEGTEST_FREEPORT, NEGTEST_TMPDIR, NEGTEST_KEEP=1 (keep the directory),
# NEGTEST_ALLOW_SKIP=1 (exit 77 instead of 99 without the KDC programs).
#
# Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).

set -u
me=man-setup.sh
WAIT_LIMIT=300
ATTEMPTS=3

srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
page=$srcdir/man/man7/negstream.7
freeport=${NEGTEST_FREEPORT:-$builddir/tests/kdc/freeport}

log() {
    printf '%s: %s\n' "$me" "$*" >&2
}

die() {
    _rc=$1
    shift
    log "ERROR: $*"
    exit "$_rc"
}

[ -f "$page" ] || die 99 "$page not found (set top_srcdir)"
[ -x "$freeport" ] ||
    die 99 "$freeport not built (make tests/kdc/freeport)"
tools=$(cd "$builddir/tools" 2>/dev/null && pwd) ||
    die 99 "$builddir/tools not found (set top_builddir)"
[ -x "$tools/negcat" ] || die 99 "$tools/negcat not built"

# The page's commands add /usr/sbin and /sbin themselves; look there too.
for t in krb5kdc kdb5_util kadmin.local kinit klist; do
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$t" >/dev/null 2>&1
    then
        if [ "${NEGTEST_ALLOW_SKIP:-0}" = 1 ]; then
            log "SKIP: $t not found (scripts/install-deps)"
            exit 77
        fi
        die 99 "$t not found: install krb5-kdc, krb5-admin-server and" \
            "krb5-user (scripts/install-deps)"
    fi
done

base=${NEGTEST_TMPDIR:-$builddir/tests/tmp}
mkdir -p "$base" || die 99 "cannot create $base"
work=$(mktemp -d "$base/man-setup.XXXXXX") || die 99 "mktemp in $base"
work=$(cd "$work" && pwd -P) || die 99 "cannot enter $work"

# A sanitizer build (configure --enable-sanitizers) would have LeakSanitizer
# report, at negcat's exit, leaks inside gss-ntlmssp, the OpenSSL it loads
# and MIT krb5, not ours: tests/lsan.supp lists them.  make check names it
# in LSAN_OPTIONS; a run by hand gets it here, as with-realm gives it to
# what it runs (this test makes its realm without with-realm).
case ${LSAN_OPTIONS:-} in
*suppressions=*) ;;
*)
    supp=$(cd "$srcdir/tests" && pwd -P)/lsan.supp ||
        die 99 "$srcdir/tests not found (set top_srcdir)"
    LSAN_OPTIONS="suppressions=$supp:print_suppressions=0\
${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    export LSAN_OPTIONS ;;
esac

# ---- clean-up: only what we started ---------------------------------------

runner=
dir=

# state PID: the process state letter (R, S, Z, ...), nothing if gone.
state() {
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1
}

alive() {
    _s=$(state "$1")
    [ -n "$_s" ] && [ "$_s" != Z ] && [ "$_s" != X ]
}

# ours PID: its working directory is inside $work (the page's commands
# run in $DIR and the processes they start inherit it).
ours() {
    _cwd=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 1
    case $_cwd in
    "$work"|"$work"/*) return 0 ;;
    esac
    return 1
}

stop_ours() {
    if [ -n "$runner" ] && alive "$runner"; then
        kill -TERM "$runner" 2>/dev/null
    fi
    for _p in /proc/[0-9]*; do
        _p=${_p#/proc/}
        [ "$_p" != $$ ] || continue
        if ours "$_p" && alive "$_p"; then
            log "stopping pid $_p ($(cat "/proc/$_p/comm" 2>/dev/null))"
            kill -TERM "$_p" 2>/dev/null
            kill -CONT "$_p" 2>/dev/null
        fi
    done
}

# shellcheck disable=SC2317  # called from the traps
cleanup() {
    stop_ours
    if [ "${NEGTEST_KEEP:-0}" = 1 ]; then
        log "kept $work (NEGTEST_KEEP=1)"
    else
        rm -rf "$work"
    fi
}
trap 'cleanup' EXIT
trap 'cleanup; trap - EXIT; exit 130' INT
trap 'cleanup; trap - EXIT; exit 143' TERM
trap 'cleanup; trap - EXIT; exit 129' HUP

show() {
    [ -s "$1" ] || return 0
    printf -- '---- %s ----\n' "$1" >&2
    sed 's/^/  | /' "$1" >&2
}

# ---- the commands and the output the page promises ------------------------

# roff escapes the page uses in its commands: \- \e \(aq \(dq \&
unroff() {
    sed -e 's/\\-/-/g' -e "s/\\\\(aq/'/g" -e 's/\\(dq/"/g' \
        -e 's/\\&//g' -e 's/\\e/\\/g'
}

sed -n '/^\.\\" SETUP-BEGIN$/,/^\.\\" SETUP-END$/p' "$page" |
    grep -v '^\.\\" SETUP-' | unroff >"$work/setup.sh"
sed -n '/^\.\\" SETUP-OUTPUT-BEGIN$/,/^\.\\" SETUP-OUTPUT-END$/p' "$page" |
    grep -v '^\.\\" SETUP-' | unroff >"$work/expected"

[ -s "$work/setup.sh" ] || die 1 "no SETUP-BEGIN/SETUP-END block in $page"
[ -s "$work/expected" ] || die 1 "no SETUP-OUTPUT block in $page"
if grep -n '^\.' "$work/setup.sh" >&2; then
    die 1 "roff requests inside the setup commands (above)"
fi
for word in kdb5_util kadmin.local krb5kdc kinit 'negcat -l' kill; do
    grep -q -- "$word" "$work/setup.sh" ||
        die 1 "the setup commands of $page no longer run '$word'"
done
sh -n "$work/setup.sh" || die 1 "the setup commands are not valid sh"

# ---- run them -------------------------------------------------------------

# run_once N: runs the commands in $work/realmN; sets $status and $dir.
run_once() {
    dir=$work/realm$1
    _port=$("$freeport") || die 99 "$freeport failed"
    _ncport=$("$freeport") || die 99 "$freeport failed"
    while [ "$_ncport" = "$_port" ]; do
        _ncport=$("$freeport") || die 99 "$freeport failed"
    done
    log "attempt $1: DIR=$dir PORT=$_port NCPORT=$_ncport"
    mkdir "$work/home$1" || die 99 "cannot write in $work"
    (
        unset KRB5_CONFIG KRB5_KDC_PROFILE KRB5CCNAME KRB5_KTNAME \
            KRB5_CLIENT_KTNAME KRB5RCACHEDIR KRB5_TRACE NTLM_USER_FILE \
            NEGSTREAM_TRACE PASSWORD MASTER REALM
        cd "$work" || exit 99
        HOME=$work/home$1 DIR=$dir PORT=$_port NCPORT=$_ncport \
            PATH="$tools:$PATH" exec sh "$work/setup.sh" \
            >"$dir.out" 2>"$dir.err" </dev/null
    ) &
    runner=$!
    _i=0
    while alive "$runner"; do
        _i=$((_i + 1))
        if [ "$_i" -gt $((WAIT_LIMIT * 10)) ]; then
            log "FAIL: the commands still run after ${WAIT_LIMIT}s"
            stop_ours
            break
        fi
        sleep 0.1
    done
    wait "$runner"
    status=$?
    runner=
}

attempt=1
while :; do
    run_once "$attempt"
    if grep -q -i -E 'address already in use|cannot bind' \
        "$dir/kdc.log" "$dir.err" 2>/dev/null &&
       [ "$attempt" -lt "$ATTEMPTS" ]; then
        log "the KDC could not bind its port; again with new ports"
        stop_ours
        attempt=$((attempt + 1))
        continue
    fi
    break
done

# ---- check ------------------------------------------------------------------

failures=0
fail() {
    log "FAIL: $*"
    failures=$((failures + 1))
}

while IFS= read -r line; do
    grep -q -x -F -- "$line" "$dir.out" ||
        fail "the output lacks the line the page shows: $line"
done <"$work/expected"

# The page's last command stops the KDC it started.
if [ -s "$dir/kdc.pid" ]; then
    kdc=$(cat "$dir/kdc.pid")
    case $kdc in
    ''|*[!0-9]*) fail "kdc.pid holds '$kdc', not a PID" ;;
    *)
        _i=0
        while alive "$kdc" && [ "$_i" -lt 50 ]; do
            sleep 0.1
            _i=$((_i + 1))
        done
        if alive "$kdc" && ours "$kdc"; then
            fail "the KDC (pid $kdc) still runs after the page's kill"
        fi
        ;;
    esac
else
    fail "no $dir/kdc.pid: the KDC did not start"
fi

# ---- the example of negstream_begin_write(3) in this realm ---------------

# Its three ways of writing (blocking, waiting on the handle, callbacks)
# send "hello\n" and twice 1 MiB of '*' to a negcat server.  The KDC is
# gone by now: the client uses the service ticket negcat left in the cache.
# Against a gcc sanitizer build of the library it is built with the same
# sanitizers; a library needing a runtime it does not name (clang) is
# skipped here (tests/man.sh still compiles the example).
run_example() {
    _ex=$work/begin_write
    _lib=$builddir/.libs/libnegstream.so
    sed -n '/^\.\\" EXAMPLE-BEGIN$/,/^\.\\" EXAMPLE-END$/p' \
        "$srcdir/man/man3/negstream_begin_write.3" |
        grep -v '^\.\\" EXAMPLE-' | unroff >"$_ex.c"
    # A sanitized library (gcc) needs the program built the same way.
    _san=
    _deps=$(ldd "$_lib" 2>/dev/null)
    case $_deps in *libasan*) _san="$_san -fsanitize=address" ;; esac
    case $_deps in *libubsan*) _san="$_san -fsanitize=undefined" ;; esac
    case $_deps in *libtsan*) _san="$_san -fsanitize=thread" ;; esac
    if [ -z "$_san" ] && "${NM:-nm}" -D --undefined-only "$_lib" \
            2>/dev/null | grep -q '__[atu][a-z]*san_'; then
        log "the library needs a sanitizer runtime it does not name:" \
            "the example is not run here"
        return 0
    fi
    _libdir=$(cd "$builddir/.libs" && pwd)
    # shellcheck disable=SC2086  # $_san is a list of flags
    if ! ${CC:-cc} -std=gnu99 -pthread $_san -I"$srcdir/include" \
            -o "$_ex" "$_ex.c" -L"$_libdir" -lnegstream \
            -Wl,-rpath,"$_libdir" 2>"$_ex.cc"; then
        show "$_ex.cc"
        fail "the example of negstream_begin_write(3) does not build"
        return 0
    fi
    _port=$("$freeport") || die 99 "$freeport failed"
    (
        cd "$dir" || exit 99
        KRB5_CONFIG=$dir/krb5.conf KRB5CCNAME=FILE:$dir/ccache \
            KRB5_KTNAME=FILE:$dir/krb5.keytab KRB5RCACHEDIR=$dir \
            exec "$tools/negcat" -l --once -p "$_port" \
            >"$_ex.recv" 2>"$_ex.srv" </dev/null
    ) &
    _srv=$!
    _i=0
    _hex=$(printf '%04X' "$_port")
    until awk -v a="0100007F:$_hex" '$2 == a && $4 == "0A" { f = 1 }
              END { exit !f }' /proc/net/tcp; do
        _i=$((_i + 1))
        if ! alive "$_srv" || [ "$_i" -gt $((WAIT_LIMIT * 10)) ]; then
            show "$_ex.srv"
            fail "negcat -l for the example did not listen"
            return 0
        fi
        sleep 0.1
    done
    (
        cd "$dir" || exit 99
        KRB5_CONFIG=$dir/krb5.conf KRB5CCNAME=FILE:$dir/ccache \
            KRB5RCACHEDIR=$dir \
            exec "$_ex" 127.0.0.1 "$_port" host/localhost \
            >"$_ex.out" 2>"$_ex.err" </dev/null
    ) &
    _cli=$!
    _i=0
    while alive "$_cli" || alive "$_srv"; do
        _i=$((_i + 1))
        if [ "$_i" -gt $((WAIT_LIMIT * 10)) ]; then
            fail "the example or its server still runs after ${WAIT_LIMIT}s"
            stop_ours
            break
        fi
        sleep 0.1
    done
    wait "$_cli"
    _crc=$?
    wait "$_srv"
    _src=$?
    _size=$(wc -c <"$_ex.recv" | tr -d ' ')
    _stars=$(tail -c +7 "$_ex.recv" | tr -d '*' | wc -c | tr -d ' ')
    if [ "$_crc" -ne 0 ] || [ "$_src" -ne 0 ] ||
       [ "$(head -c 6 "$_ex.recv")" != hello ] ||
       [ "$_size" -ne $((6 + 2 * 1048576)) ] || [ "$_stars" -ne 0 ]; then
        fail "the example of negstream_begin_write(3): client exit" \
            "$_crc, server exit $_src, $_size bytes received"
        show "$_ex.out"
        show "$_ex.err"
        show "$_ex.srv"
    else
        log "ok: the example of negstream_begin_write(3) sent" \
            "$_size bytes in its three ways"
    fi
}
[ "$failures" -eq 0 ] && run_example

if [ "$failures" -ne 0 ]; then
    log "the commands exited with status $status"
    show "$work/setup.sh"
    show "$dir.out"
    show "$dir.err"
    show "$dir/server.log"
    show "$dir/kdc.log"
    exit 1
fi
log "ok: the five-minute setup of negstream(7) works as written" \
    "($(wc -l <"$work/setup.sh" | tr -d ' ') lines of commands)"
exit 0
