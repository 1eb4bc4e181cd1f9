#!/usr/bin/env bash
# Installs a build tree into a scratch prefix and builds tests/consumer
# against it twice: with find_package(heaptrace CONFIG) and with pkg-config.
# usage: tests/install_consumer.sh BUILD_DIR
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
scratch=$(mktemp -d /tmp/ht-install-XXXXXX)
trap 'rm -rf "$scratch"' EXIT

cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
for f in bin/heaptraced bin/heapctl include/heaptrace/heaptrace.h lib/pkgconfig/heaptrace.pc \
         lib/cmake/heaptrace/heaptraceConfig.cmake; do
  [ -e "$scratch/prefix/$f" ] || { echo "install_consumer: $f was not installed" >&2; exit 1; }
done

# CMake package
cmake -S "$src/tests/consumer" -B "$scratch/cmake" -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/cmake" >/dev/null
out=$(HEAPTRACE_DISABLE=1 LD_LIBRARY_PATH="$scratch/prefix/lib" "$scratch/cmake/consumer")
[ "$out" = "installed invalid argument" ] || { echo "install_consumer: cmake consumer printed '$out'" >&2; exit 1; }
out=$(HEAPTRACE_DISABLE=1 "$scratch/cmake/consumer_static")
[ "$out" = "installed invalid argument" ] || { echo "install_consumer: static consumer printed '$out'" >&2; exit 1; }

# pkg-config
export PKG_CONFIG_PATH="$scratch/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror "$src/tests/consumer/consumer.c" -o "$scratch/pc_consumer" \
   $(pkg-config --cflags --libs heaptrace)
out=$(HEAPTRACE_DISABLE=1 LD_LIBRARY_PATH="$scratch/prefix/lib" "$scratch/pc_consumer")
[ "$out" = "installed invalid argument" ] || { echo "install_consumer: pkg-config consumer printed '$out'" >&2; exit 1; }
echo "install_consumer: cmake package, static library and pkg-config consumers built and ran"
