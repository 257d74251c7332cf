#!/bin/sh
# callgrind.sh - instructions per operation, counted by valgrind's callgrind.
#
# Usage: bench/callgrind.sh [path/to/ctxbench] [OP...]
#
# Timings on a shared machine wander by tens of percent; instruction counts
# do not, so a regression of two instructions on the get path shows here.
# Each OP (all of `ctxbench --list-ops` by default) runs in its own valgrind
# process; ctxbench counts exactly its N iterations (see bench/callgrind.c)
# and this script divides.  The ratio column compares with the op's
# baseline, as the timed table does.  Instructions are not time (an atomic
# read-modify-write or a cache miss is one instruction): use this to see
# regressions, the timed table to judge the goals.
set -eu

bin=${1:-bench/ctxbench}
[ $# -gt 0 ] && shift
if [ ! -x "$bin" ]; then
    echo "callgrind.sh: $bin is not executable (make bench/ctxbench)" >&2
    exit 2
fi
command -v valgrind >/dev/null 2>&1 || {
    echo "callgrind.sh: valgrind not found" >&2
    exit 2
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctxbench-cg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

mode=$("$bin" --callgrind-mode)
"$bin" --list-ops >"$tmp/ops"
if [ $# -gt 0 ]; then
    for op in "$@"; do
        grep -q "^$op " "$tmp/ops" || {
            echo "callgrind.sh: unknown op $op" >&2
            exit 2
        }
    done
    ops="$*"
else
    ops=$(cut -d' ' -f1 "$tmp/ops")
fi

# Prints the instructions of one run's measured loop, then its N.
count() {
    out="$tmp/cg.$1"
    if [ "$mode" = requests ]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$bin" --callgrind "$1" >"$tmp/stdout" 2>"$tmp/stderr" || {
            cat "$tmp/stderr" >&2
            exit 1
        }
        # The client-request dump labelled ctxbench-loop holds the loop.
        file=$(grep -l 'Trigger: Client Request: ctxbench-loop' "$out".* |
            head -n 1)
    else
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            --toggle-collect=cg_loop \
            "$bin" --callgrind "$1" >"$tmp/stdout" 2>"$tmp/stderr" || {
            cat "$tmp/stderr" >&2
            exit 1
        }
        file=$out
    fi
    ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file" | head -n 1)
    n=$(sed -n 's/^op=.* n=\([0-9]*\)$/\1/p' "$tmp/stdout")
    echo "$ir $n"
}

printf '%-16s %12s %10s  %-16s %s\n' "op" "Ir/op" "ratio" "baseline" \
    "what"
for op in $ops; do
    res=$(count "$op") || exit 1
    ir=${res% *} n=${res#* }
    line=$(grep "^$op " "$tmp/ops")
    base=$(echo "$line" | cut -d' ' -f2)
    what=$(echo "$line" | cut -d' ' -f3-)
    per=$(awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.1f", i / n }')
    echo "$op $per" >>"$tmp/results"
    ratio=-
    if [ "$base" != - ]; then
        bper=$(awk -v b="$base" '$1 == b { print $2 }' "$tmp/results")
        if [ -n "$bper" ]; then
            ratio=$(awk -v a="$per" -v b="$bper" \
                'BEGIN { printf "%.2fx", a / b }')
        fi
    fi
    printf '%-16s %12s %10s  %-16s %s\n' "$op" "$per" "$ratio" "$base" \
        "$what"
done
if [ "$mode" != requests ]; then
    echo "(built without <valgrind/callgrind.h>: only the calling thread" \
        "is counted, so pool figures miss the workers' share)"
fi
