#!/bin/sh
# tlsf_build.sh - compile and run the TLSF unit tests standalone, with gcc and
# clang, plain and under ASan+UBSan. Used only while developing libclient/tlsf.c;
# the main build wires the tests through CMake.
# Usage: tests/tlsf_build.sh [criterion args...]   (run from anywhere)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${TMPDIR:-/tmp}/ht_tlsf_test
mkdir -p "$out"
warn="-std=c11 -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion -Werror"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
for cc in gcc clang; do
    for mode in plain san; do
        flags="$warn -O2 -g"
        [ "$mode" = san ] && flags="$warn -O1 -g $san"
        bin="$out/test_tlsf_${cc}_$mode"
        echo "== $cc $mode"
        # shellcheck disable=SC2086
        $cc $flags -I"$root/libclient" "$root/libclient/tlsf.c" "$root/tests/test_tlsf.c" \
            -lcriterion -o "$bin"
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$bin" "$@"
    done
done
