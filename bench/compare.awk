# bench/compare.awk - summarises runs of one benchmark program under
# several variants (bench/run's BENCH_BASELINE and BENCH_THREADS modes).
#
# Input: the --json outputs of the program, one file per variant and
# round, named <anything>/<variant index>.<round>.json; variables:
#   labels  the variants' labels, separated by "|", in index order
#   title   the heading
# Output: per figure, each variant's median [min .. max] over the rounds,
# and for every variant after the first its ratio to the first, computed
# per round (the two were run one after the other) and summarised the
# same way.  Figures that are 0 in every run (variants not run) are left
# out.  POSIX awk.

function fmt(v) {
    if (v >= 1000 || v == int(v))
        return sprintf("%.0f", v)
    if (v >= 100)
        return sprintf("%.1f", v)
    return sprintf("%.3g", v)
}

# Median, min, max of a[1..n] as "med [min .. max]".
function stat(a, n,    i, j, t, med) {
    for (i = 2; i <= n; i++) {
        t = a[i]
        for (j = i - 1; j >= 1 && a[j] > t; j--)
            a[j + 1] = a[j]
        a[j + 1] = t
    }
    if (n % 2)
        med = a[(n + 1) / 2]
    else
        med = (a[n / 2] + a[n / 2 + 1]) / 2
    return sprintf("%9s  [%s .. %s]", fmt(med), fmt(a[1]), fmt(a[n]))
}

function field(line, name,    re, s) {
    re = "\"" name "\":"
    s = substr(line, index(line, re) + length(re))
    if (substr(s, 1, 1) == "\"") {
        s = substr(s, 2)
        return substr(s, 1, index(s, "\"") - 1)
    }
    match(s, /^[-+0-9.eE]+/)
    return substr(s, 1, RLENGTH)
}

BEGIN {
    nv = split(labels, label, "|")
    nkeys = 0
}

FNR == 1 {
    f = FILENAME
    sub(/^.*\//, "", f)
    split(f, part, ".")
    v = part[1] + 1
    r = part[2] + 0
    if (r > nr)
        nr = r
}

/"group":/ {
    key = field($0, "group") " | " field($0, "name") " (" field($0, "unit") ")"
    if (!(key in seen)) {
        seen[key] = 1
        order[++nkeys] = key
    }
    val[key, v, r] = field($0, "median") + 0
    has[key, v, r] = 1
}

END {
    printf "== %s (%d rounds; median [min .. max]; ratios to %s, per " \
           "round) ==\n", title, nr, label[1]
    for (k = 1; k <= nkeys; k++) {
        key = order[k]
        nonzero = 0
        for (v = 1; v <= nv; v++)
            for (r = 1; r <= nr; r++)
                if (val[key, v, r] != 0)
                    nonzero = 1
        if (!nonzero)
            continue
        printf "  %s\n", key
        for (v = 1; v <= nv; v++) {
            n = 0
            m = 0
            for (r = 1; r <= nr; r++) {
                if (!has[key, v, r])
                    continue
                a[++n] = val[key, v, r]
                if (v > 1 && has[key, 1, r] && val[key, 1, r] != 0)
                    q[++m] = val[key, v, r] / val[key, 1, r]
            }
            if (n == 0)
                continue
            line = sprintf("    %-12s %s", label[v], stat(a, n))
            if (v > 1 && m > 0)
                line = line sprintf("   x %s", stat(q, m))
            print line
        }
    }
}
