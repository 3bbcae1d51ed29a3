#!/usr/bin/env bash
# Installs the built ioq into a staging prefix, then builds and runs the in-tree
# consumer project against it twice: with find_package(ioq CONFIG REQUIRED) and
# with pkg-config. Usage: install_consumer.sh <build-dir> <consumer-src> <c++>
set -euo pipefail
build=$1 src=$2 cxx=$3
stage=$build/stage
rm -rf "$stage" "$build/consumer-cmake" "$build/consumer-pc"
cmake --install "$build" --prefix "$stage" >/dev/null

echo "== find_package(ioq CONFIG REQUIRED)"
cmake -S "$src" -B "$build/consumer-cmake" -DCMAKE_PREFIX_PATH="$stage" \
      -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build/consumer-cmake" >/dev/null
"$build/consumer-cmake/ioq_consumer"

echo "== pkg-config --cflags --libs ioq"
mkdir -p "$build/consumer-pc"
export PKG_CONFIG_PATH="$stage/lib/pkgconfig:$stage/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# shellcheck disable=SC2046
"$cxx" -std=c++20 -O2 "$src/main.cpp" -o "$build/consumer-pc/ioq_consumer" $(pkg-config --cflags --libs ioq)
"$build/consumer-pc/ioq_consumer"
