# bench/perfcat.awk - where the CPU time of the library's threads goes, by
# category, from a profile with call chains, e.g. of bench/reqresp:
#
#   BENCH_RR_ONLY=lib BENCH_RR_SHAPES=1x8000 BENCH_RUNS=1 \
#     tests/kdc/with-realm perf record -F 1000 --call-graph dwarf,16384 \
#       -o /tmp/rr.perf build/bench/reqresp
#   perf script -i /tmp/rr.perf | awk -f bench/perfcat.awk
#
# Counts the samples of threads named negstream-* (the pool's workers
# "negstream-wN", the poller "negstream-poll") and of bench/reqresp's
# epoll server thread "rr-epoll", each in its own table; samples inside an
# authentication (the benchmark's set-up) are left out.  A category is the
# first rule below that the sample's call chain matches.  Multiply a
# share by the CPU time per exchange the benchmark printed to get
# microseconds per exchange.  POSIX awk.

function has(re) { return stack ~ re }

function classify() {
    if (has("negstream__gss_wrap|negstream__gss_unwrap"))
        return "GSS wrap/unwrap (the crypto)"
    if (has("auth_step|hs_run|sec_context|acquire_cred|krb5_"))
        return "SETUP"
    if (comm == "rr-epoll") {
        if (has("sendmsg|__send|sendto"))
            return "send (kernel TCP loopback)"
        if (has("__libc_recv|recvfrom"))
            return "recv (kernel)"
        if (has("epoll_wait|epoll_ctl"))
            return "epoll_wait / epoll_ctl"
        return "other"
    }
    if (comm ~ /poll$/) {
        if (has("negstream__pool_resume|enqueue"))
            return "poller thread: resume jobs (pool->mu, wake a worker)"
        if (has("epoll_wait|do_epoll_wait|__poll|do_sys_poll"))
            return "poller thread: epoll_wait (incl. its wake-ups)"
        return "poller thread: other"
    }
    if (has("negstream__poller_arm|negstream__poller_disarm"))
        return "park: poller arm (epoll_ctl, poller->mu)"
    if (has("idle_wait")) {
        if (leaf ~ /worker_main|idle_wait|cpu_relax|now_mono|clock_gettime|vdso/)
            return "idle worker: spin (POOL_SPIN_NS)"
        if (has("lll_lock"))
            return "idle worker: pool->mu contention"
        return "idle worker: sleep / wake (condvar, futex)"
    }
    if (has("malloc|calloc|_int_free|cfree|free@"))
        return "allocation (result + op per begin_*)"
    if (has("negstream__pool_submit|negstream__pool_resume|enqueue|grow_locked"))
        return "submit (pool->mu, wake a worker)"
    if (has("sendmsg|fd_send|__send"))
        return "send (kernel TCP loopback)"
    if (has("__libc_recv|fd_recv"))
        return "recv (kernel)"
    if (has("lll_lock"))
        return "lock contention elsewhere (stream->mu in op_job, pool->mu)"
    if (has("negstream__async_complete|negstream__async_settle|negstream__async_callback"))
        return "complete / callback bookkeeping"
    if (has("op_job|op_step|op_finish"))
        return "op engine, other"
    if (has("worker_main"))
        return "worker loop, other"
    return "other"
}

function flush(    c, g) {
    if (!insample)
        return
    insample = 0
    if (comm ~ /^negstream-/)
        g = "library threads"
    else if (comm == "rr-epoll")
        g = "epoll server thread"
    else
        return
    c = classify()
    if (c == "SETUP") {
        setup[g]++
        return
    }
    total[g]++
    cnt[g, c]++
    cats[c] = 1
}

/^[^ \t]/ { flush(); insample = 1; comm = $1; stack = ""; leaf = ""; next }
/^[ \t]+[0-9a-f]+ / {
    f = $2
    sub(/\+0x.*/, "", f)
    if (leaf == "")
        leaf = f
    stack = stack " " f
    next
}
/^$/ { flush() }

END {
    flush()
    for (g in total) {
        printf "== %s: %d samples (%d in authentication, left out) ==\n", \
            g, total[g], setup[g]
        cmd = "sort -rn"
        for (c in cats)
            if ((g, c) in cnt)
                printf "%6.1f%%  %6d  %s\n", 100 * cnt[g, c] / total[g], \
                    cnt[g, c], c | cmd
        close(cmd)
    }
}
