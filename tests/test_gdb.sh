#!/bin/sh
# test_gdb.sh - `info ctxvars` (gdb/ctxvars-gdb.py) on a crashed pool job,
# live and in the core file gdb writes of it.  tests/gdb_prog binds
# request_id="req-4242" on the main thread and user="alice" in a pool job
# that aborts.  Exit 77 (skip) without a gdb that has Python, and under
# sanitizers: gdb cannot write a usable core file of a process with ASan's
# terabytes of shadow mappings, and the extension only reads memory, which
# the sanitizers have nothing to check in.
set -u
: "${srcdir:=.}"
GDB=${GDB:-gdb}
test -n "$GDB" || GDB=gdb

if test "${CTX_SANITIZED:-0}" = 1; then
    echo "SKIP: sanitizer build"; exit 77
fi
if ! command -v "$GDB" >/dev/null 2>&1; then
    echo "SKIP: no gdb"; exit 77
fi
if ! "$GDB" -nx --batch -ex 'python import gdb' >/dev/null 2>&1; then
    echo "SKIP: $GDB has no Python"; exit 77
fi

script=$srcdir/gdb/ctxvars-gdb.py
prog=tests/gdb_prog
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_gdb.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
fails=0
checks=0

ok() { checks=$((checks + 1)); echo "ok: $*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }
# expect FILE REGEX WHAT: FILE has a line matching the extended REGEX.
expect() {
    if grep -Eq -- "$2" "$1"; then ok "$3"; else fail "$3"; fi
}
reject() {
    if grep -Eq -- "$2" "$1"; then fail "$3"; else ok "$3"; fi
}
# block FILE NAME: what gdb printed between `echo @@NAME` and the next @@.
block() {
    sed -n "/^@@$2\$/,/^@@/p" "$1" | sed '1d;$d'
}

# Auto-load as installed: an auto-load tree like $(datadir)/gdb/auto-load,
# with the script under the real name of the build tree's library.
name=$(sed -n "s/^library_names='\([^ ']*\).*/\1/p" lib/libctxvars.la)
libdir=$(cd lib/.libs && pwd -P)
test -n "$name" && test -f "$libdir/$name" || { echo "no library"; exit 99; }
mkdir -p "$tmp/auto-load$libdir" || exit 99
cp "$script" "$tmp/auto-load$libdir/$name-gdb.py" || exit 99
autoload="-iex 'set auto-load scripts-directory $tmp/auto-load'"
autoload="$autoload -iex 'set auto-load safe-path $tmp/auto-load'"

run_gdb() { # OUT ARGS...: gdb in batch mode, without ~/.gdbinit, offline
    out=$1; shift
    eval "\"$GDB\" -nx --batch -iex 'set debuginfod enabled off' $*" \
        >"$out" 2>&1 </dev/null
}

# A value line as the extension prints it: name = 0x... "string", with
# the symbol gdb knows for the address, if any, between them.
bound() { echo "^ +$1 = 0x[0-9a-f]+( <[^>]*>)? \"$2\"\$"; }

# --- 1. live: run until the job aborts -------------------------------------
run_gdb "$tmp/live.out" "$autoload" -ex run \
    -ex "'echo @@crash\\n'" -ex "'info ctxvars'" \
    -ex "'echo @@all\\n'" -ex "'thread apply all info ctxvars'" \
    -ex "'echo @@\\n'" -ex "'generate-core-file $tmp/core'" "$prog"
cat "$tmp/live.out"
if ! grep -q 'received signal SIGABRT' "$tmp/live.out" &&
   grep -q 'ptrace: Operation not permitted' "$tmp/live.out"; then
    echo "SKIP: this system does not let gdb trace programs"; exit 77
fi
expect "$tmp/live.out" 'received signal SIGABRT' "the program aborted under gdb"
block "$tmp/live.out" crash >"$tmp/live.crash"
expect "$tmp/live.crash" "$(bound request_id req-4242)" \
    "live: request_id on the crashing thread"
expect "$tmp/live.crash" "$(bound user alice)" \
    "live: user on the crashing thread"
expect "$tmp/live.crash" '^#0  context 0x[0-9a-f]+ \(entered, 2 bindings\)$' \
    "live: the job's context is innermost"
expect "$tmp/live.crash" '^#1  context 0x[0-9a-f]+ \(base, 0 bindings\)$' \
    "live: the worker's base context is outermost"
# Every thread: the main thread has request_id and no user.
block "$tmp/live.out" all >"$tmp/live.all"
n=$(grep -Ec "$(bound request_id req-4242)" "$tmp/live.all")
u=$(grep -Ec "$(bound user alice)" "$tmp/live.all")
if test "$n" = 2 && test "$u" = 1; then
    ok "live: thread apply all shows each thread's own bindings"
else
    fail "live: thread apply all: request_id $n times (want 2), user $u (want 1)"
fi
test -s "$tmp/core" && ok "gdb wrote a core file" || fail "no core file"

# --- 2. the core file: the same, without a process ---------------------------
run_gdb "$tmp/core.out" "$autoload" \
    -ex "'echo @@crash\\n'" -ex "'info ctxvars'" \
    -ex "'echo @@all\\n'" -ex "'thread apply all info ctxvars'" \
    -ex "'echo @@\\n'" "$prog" "$tmp/core"
cat "$tmp/core.out"
block "$tmp/core.out" crash >"$tmp/core.crash"
# Thread numbers differ between a process and its core; nothing else may.
sed 's/^ctxvars: thread [0-9]* /ctxvars: thread N /' "$tmp/live.crash" >"$tmp/a"
sed 's/^ctxvars: thread [0-9]* /ctxvars: thread N /' "$tmp/core.crash" >"$tmp/b"
if test -s "$tmp/a" && cmp -s "$tmp/a" "$tmp/b"; then
    ok "core: the crashing thread shows what it showed live"
else
    fail "core: differs from live"; diff "$tmp/a" "$tmp/b"
fi
block "$tmp/core.out" all >"$tmp/core.all"
n=$(grep -Ec "$(bound request_id req-4242)" "$tmp/core.all")
u=$(grep -Ec "$(bound user alice)" "$tmp/core.all")
if test "$n" = 2 && test "$u" = 1; then
    ok "core: thread apply all shows each thread's own bindings"
else
    fail "core: thread apply all: request_id $n times (want 2), user $u (want 1)"
fi

# --- 3. the core file without libthread_db (a core from another machine):
# TLS is found through the library's thread registry instead.
run_gdb "$tmp/nodb.out" "-iex 'set libthread-db-search-path $tmp/none'" \
    -x "$script" -ex "'echo @@crash\\n'" -ex "'info ctxvars'" \
    -ex "'echo @@\\n'" "$prog" "$tmp/core"
cat "$tmp/nodb.out"
block "$tmp/nodb.out" crash | grep -v '^note: ' \
    | sed 's/^ctxvars: thread [0-9]* /ctxvars: thread N /' >"$tmp/c"
if test -s "$tmp/c" && cmp -s "$tmp/a" "$tmp/c"; then
    ok "core without libthread_db: the same bindings"
else
    fail "core without libthread_db differs"; diff "$tmp/a" "$tmp/c"
fi

# --- 4. a big trie with a collision node, the library linked statically ----
run_gdb "$tmp/many.out" -x "$script" -ex "'run many'" \
    -ex "'echo @@crash\\n'" -ex "'info ctxvars'" -ex "'echo @@\\n'" \
    tests/gdb_prog_collide
block "$tmp/many.out" crash >"$tmp/many.crash"
sed -n '1,12p' "$tmp/many.crash"
expect "$tmp/many.crash" '^#0  context 0x[0-9a-f]+ \(entered, 102 bindings\)$' \
    "static: 102 bindings in the job's context"
n=$(grep -Ec '^ +v[0-9]{3} = 0x[0-9a-f]+$' "$tmp/many.crash")
test "$n" = 100 && ok "static: all 100 vNNN bindings, through subnodes and the collision node" \
    || fail "static: $n of 100 vNNN bindings"
expect "$tmp/many.crash" '^ +v000 = 0x1$' "static: a colliding variable's value"
expect "$tmp/many.crash" '^ +v099 = 0x64$' "static: a non-string value has no string"
expect "$tmp/many.crash" "$(bound user alice)" "static: user"
reject "$tmp/many.crash" 'warning' "static: no warnings"

# --- 5. without debug info the command says what is missing ----------------
mkdir "$tmp/nodebug" || exit 99
objcopy --strip-debug "$libdir/$name" "$tmp/nodebug/$name" 2>/dev/null ||
    strip --strip-debug -o "$tmp/nodebug/$name" "$libdir/$name" || exit 99
soname=$(sed -n "s/^dlname='\(.*\)'/\1/p" lib/libctxvars.la)
test "$soname" = "$name" || ln -s "$name" "$tmp/nodebug/$soname"
run_gdb "$tmp/nodebug.out" -x "$script" \
    -ex "'set environment LD_LIBRARY_PATH $tmp/nodebug'" -ex run \
    -ex "'info ctxvars'" "$prog"
cat "$tmp/nodebug.out"
expect "$tmp/nodebug.out" "nodebug/$soname is loaded but has no usable debug info" \
    "no debug info: says which library lacks it"
expect "$tmp/nodebug.out" 'Build ctxvars with -g' "no debug info: says what to do"

# --- 6. a fiber resumed in the job (once the library has fibers) ------------
if "$prog" 'fibers?'; then
    run_gdb "$tmp/fiber.out" "$autoload" -ex "'run fiber'" \
        -ex "'echo @@crash\\n'" -ex "'info ctxvars'" -ex "'echo @@\\n'" "$prog"
    block "$tmp/fiber.out" crash >"$tmp/fiber.crash"
    cat "$tmp/fiber.crash"
    expect "$tmp/fiber.crash" \
        "^#0  context 0x[0-9a-f]+ \\(entered in fiber 0x[0-9a-f]+, 3 bindings\\)\$" \
        "fiber: a context entered in the fiber says so"
    expect "$tmp/fiber.crash" "$(bound step 'entered in the fiber')" \
        "fiber: the innermost binding"
    expect "$tmp/fiber.crash" \
        "^#1  context 0x[0-9a-f]+ \\(fiber 0x[0-9a-f]+'s own context: the fiber's contexts begin here, 3 bindings\\)\$" \
        "fiber: the fiber's own context is labelled"
    expect "$tmp/fiber.crash" "$(bound step 'in the fiber')" "fiber: its binding"
    expect "$tmp/fiber.crash" '^#2  context 0x[0-9a-f]+ \(entered, 2 bindings\)$' \
        "fiber: below it, the job's context"
    expect "$tmp/fiber.crash" '^#3  context 0x[0-9a-f]+ \(base' "fiber: and the base"
else
    echo "(no fibers in this library: fiber checks skipped)"
fi

echo "$checks checks, $fails failed"
test "$fails" = 0
