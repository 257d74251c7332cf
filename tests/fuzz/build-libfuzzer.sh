#!/bin/sh
# build-libfuzzer.sh - builds the API fuzzer with libFuzzer, ASan and UBSan.
#
# Run it from a configured build directory (it needs that config.h; a
# --enable-debug build also makes the library check its object magics):
#
#   cd BUILDDIR && sh SRCDIR/tests/fuzz/build-libfuzzer.sh [OUTPUT]
#   ./fuzz_api -max_total_time=600 -max_len=512 corpus/
#
# FUZZ_CC is the compiler (clang: libFuzzer ships with it); CFLAGS adds
# flags, e.g. CFLAGS=-DCTX_DEBUG when config.h lacks it.
set -eu

srcdir=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-fuzz_api}
cc=${FUZZ_CC:-clang}

if [ ! -f config.h ]; then
    echo "build-libfuzzer.sh: no config.h here; run it from a configured" \
         "build directory" >&2
    exit 1
fi

# The whole library is compiled in (not linked from libtool's archive) so
# that the sanitizers and coverage instrument it too.
# shellcheck disable=SC2086
exec "$cc" -std=gnu11 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -D_GNU_SOURCE -pthread -I. -I"$srcdir/include" -I"$srcdir/lib" \
    ${CFLAGS:-} \
    "$srcdir"/tests/fuzz/fuzz_api.c "$srcdir"/tests/fuzz/fuzz_ctx.c \
    "$srcdir"/tests/fuzz/fuzz_fiber.c "$srcdir"/tests/fuzz/fuzz_watch.c \
    "$srcdir"/lib/*.c -o "$out"
