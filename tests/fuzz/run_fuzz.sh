#!/usr/bin/env bash
# Builds and runs the libFuzzer target queue_fuzz (tests/fuzz/queue_fuzz.cpp)
# for a bounded time: the ctest `fuzz.queue` (label fuzz).
#
#   run_fuzz.sh <source dir> <work dir> [seconds, default 60]
#
# Configures this project again in <work dir>/build with clang++
# (IOQ_FUZZ_TARGET=ON; -fsanitize=fuzzer-no-link plus ASan and UBSan on
# everything), builds queue_fuzz, and runs it for <seconds> on a work corpus
# (<work dir>/corpus, kept between runs: new inputs land there) plus a fresh
# copy of tests/fuzz/corpus (the source tree is never written). Prints the
# build and run times, libFuzzer's coverage (cov: edges, ft: features) and its
# final statistics (executions).
#
# Environment: IOQ_FUZZ_JOBS (build parallelism, default 2), IOQ_FUZZ_ARGS
# (extra libFuzzer flags), CXX_FUZZ (the clang++ to use, default clang++).
#
# Exit status: 0 when the run finished clean; 77 (ctest: skipped) when clang++
# or its libFuzzer runtime (Debian: libclang-rt-14-dev) is missing; anything
# else on a failed build or a crash, divergence, leak or timeout found by the
# fuzzer (the input is saved in <work dir>/artifacts/, replayable with
# `queue_fuzz <file>` or as IOQ_DIFF_REPLAY=<hex> in differential_test).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 <source dir> <work dir> [seconds]" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
work=$(cd "$2" && pwd)
seconds=${3:-60}
jobs=${IOQ_FUZZ_JOBS:-2}
cxx=${CXX_FUZZ:-clang++}

if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "fuzz: $cxx not found: skipping"
  exit 77
fi
# The libFuzzer runtime comes with libclang-rt-<version>-dev, not with clang.
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
  >"$probe_dir/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.cpp" -o "$probe_dir/probe" \
     >"$probe_dir/probe.log" 2>&1; then
  echo "fuzz: $cxx cannot link a libFuzzer target (libclang-rt-*-dev missing?): skipping"
  sed 's/^/  /' "$probe_dir/probe.log" | tail -5
  exit 77
fi

build="$work/build"
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi

t0=$(date +%s)
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$src" -B "$build" "${generator[@]}" \
    -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link" \
    -DIOQ_SANITIZE=address,undefined \
    -DIOQ_FUZZ_TARGET=ON \
    -DIOQ_BUILD_BENCH=OFF \
    -DIOQ_INSTALL=OFF >"$work/configure.log" 2>&1 || {
    tail -40 "$work/configure.log"
    echo "fuzz: configure failed (log: $work/configure.log)"
    exit 1
  }
fi
if ! cmake --build "$build" --target queue_fuzz -j "$jobs" >"$work/build.log" 2>&1; then
  tail -60 "$work/build.log"
  echo "fuzz: build failed (log: $work/build.log)"
  exit 1
fi
t1=$(date +%s)
echo "fuzz: queue_fuzz built in $((t1 - t0)) s ($build/tests/queue_fuzz)"

# The seed corpus is copied so that libFuzzer's writes never reach the source
# tree; new inputs go to the first directory, the work corpus.
rm -rf "$work/seed"
mkdir -p "$work/corpus" "$work/seed" "$work/artifacts"
if compgen -G "$src/tests/fuzz/corpus/*" >/dev/null; then cp "$src"/tests/fuzz/corpus/* "$work/seed/"; fi
echo "fuzz: corpus: $(ls "$work/seed" | wc -l) seed inputs, $(ls "$work/corpus" | wc -l) from earlier runs"

# libFuzzer's default error exit code is 77, which ctest would read as
# "skipped": crashes and timeouts exit 1. Leak detection stays on (ASan's
# default): a leak is a finding too.
log="$work/fuzz.log"
set +e
"$build/tests/queue_fuzz" \
  -max_total_time="$seconds" -print_final_stats=1 \
  -max_len=4096 -timeout=60 -rss_limit_mb=4096 \
  -error_exitcode=1 -timeout_exitcode=1 \
  -artifact_prefix="$work/artifacts/" \
  ${IOQ_FUZZ_ARGS:-} \
  "$work/corpus" "$work/seed" >"$log" 2>&1
rc=$?
set -e
t2=$(date +%s)

echo "fuzz: ran $((t2 - t1)) s (build + run: $((t2 - t0)) s), exit status $rc"
# Progress lines ("#<execs> <event> cov: <edges> ft: <features> corp: ... exec/s: ...").
grep -E '^#[0-9]+' "$log" | grep -E 'INITED|DONE' || true
grep -E '^#[0-9]+' "$log" | tail -3 || true
grep -E '^stat::' "$log" || true
if [[ $rc -ne 0 ]]; then
  echo "---- fuzzer output (tail) ----"
  tail -150 "$log"
  echo "fuzz: FAILED; the input is in $work/artifacts/ (full log: $log)"
  exit "$rc"
fi
echo "fuzz: ok (full log: $log)"
