#!/bin/sh
# run.sh - the differential test: random programs (gen.py) run on CPython's
# contextvars (ref.py) and on ctxvars (interp), outputs compared line by
# line.  On the first difference it prints that program and both outputs.
#
# Run from the build directory (as `make check` does), or set
# CTX_DIFF_INTERP.  Environment:
#   CTX_DIFF_PROGRAMS  programs to run (2000)
#   CTX_DIFF_SEED      generator seed (1); reruns are reproducible
#   CTX_DIFF_INTERP    the interpreter (tests/diff/interp)
#   PYTHON             the CPython to compare with (python3), 3.8 or later
# Exits 0 on agreement, 1 on a difference, 77 (skip) without Python, 99 on
# a harness failure.
set -u

here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
        >/dev/null 2>&1; then
    echo "diff: SKIP: needs $py >= 3.8 (CPython is the reference)"
    exit 77
fi
interp=${CTX_DIFF_INTERP:-tests/diff/interp}
if [ ! -x "$interp" ]; then
    echo "diff: $interp is not built" >&2
    exit 99
fi
n=${CTX_DIFF_PROGRAMS:-2000}
seed=${CTX_DIFF_SEED:-1}
limit=
if command -v timeout >/dev/null 2>&1; then
    limit="timeout 300" # a deadlock must fail the test, not hang it
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctxdiff.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

"$py" "$here/gen.py" "$n" "$seed" >"$tmp/progs" || exit 99
# The two sides are independent: run them side by side (CPython's thread
# hand-overs, which every pause and fiber resume is, are the slow part).
$limit "$py" "$here/ref.py" <"$tmp/progs" >"$tmp/ref" &
refpid=$!
$limit "$interp" <"$tmp/progs" >"$tmp/c"
rc=$?
[ $rc -eq 0 ] || echo "diff: $interp exited with status $rc" >&2
if ! wait $refpid; then
    echo "diff: ref.py failed (seed $seed)" >&2
    exit 99
fi

"$py" - "$tmp" "$seed" "$rc" <<'EOF'
import sys

tmp, seed, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])


def split(path):
    """{program header: [lines]} in file order."""
    progs, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.rstrip('\n')
            if line.startswith('program '):
                cur = progs.setdefault(line, [])
            elif cur is not None:
                cur.append(line)
    return progs


src, ref, got = split(tmp + '/progs'), split(tmp + '/ref'), split(tmp + '/c')
lines = resumes = 0
for head, want in ref.items():
    have = got.get(head)
    if have == want:
        lines += len(want)
        resumes += sum(1 for w in want if w.startswith('resume '))
        continue
    print('diff: FAIL: %s differs (seed %s)' % (head, seed))
    print('--- the program')
    print('\n'.join(src.get(head, [])))
    print('--- CPython (ref.py) | ctxvars (interp), first difference at >')
    have = have if have is not None else ['<no output>']
    first = next(i for i in range(max(len(want), len(have)) + 1)
                 if i >= len(want) or i >= len(have) or want[i] != have[i])
    for i in range(min(max(len(want), len(have)), first + 6)):
        a = want[i] if i < len(want) else ''
        b = have[i] if i < len(have) else ''
        print('%s %-40s | %s' % ('>' if i == first else ' ', a, b))
    sys.exit(1)
if rc != 0 or len(got) != len(ref):
    print('diff: FAIL: interp output incomplete (status %d)' % rc)
    sys.exit(1)
print('diff: %d programs, %d lines compared, %d of them fiber resumes '
      '(seed %s)' % (len(ref), lines, resumes, seed))
EOF
