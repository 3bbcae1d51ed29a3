#!/usr/bin/env bash
# ioq-bench --verify=crc32c end to end (ctest bench.ioq-bench.verify):
# a verifying write job writes every block of --size and reads each back good;
# one byte damaged afterwards makes a read-only verifying job exit 3 and name
# the damaged block's offset. Exit 77 (skipped) where the kernel or the file
# system refuses io_uring or O_DIRECT.
#   ioq_bench_verify.sh <ioq-bench>
set -u
bench=$1
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/ioq-verify.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
f=$dir/data

out=$("$bench" --target=uring --filename="$f" --size=8m --rw=randwrite --verify=crc32c --iodepth=16 2>&1)
rc=$?
if [ $rc -eq 1 ] && grep -q 'not_supported' <<<"$out"; then
  echo "skipped: io_uring or O_DIRECT is not offered here: $out"
  exit 77
fi
[ $rc -eq 0 ] || { echo "the verifying write job failed (exit $rc):"; echo "$out"; exit 1; }
grep -q 'verify: crc32c, 2048 blocks good' <<<"$out" || { echo "no verify result:"; echo "$out"; exit 1; }

# One byte of block 1000, past its header: the checksum must catch it.
printf 'X' | dd of="$f" bs=1 seek=$((4096 * 1000 + 123)) conv=notrunc status=none
out=$("$bench" --target=uring --filename="$f" --size=8m --rw=read --verify=crc32c 2>&1)
rc=$?
[ $rc -eq 3 ] || { echo "expected exit 3 for a damaged block, got $rc:"; echo "$out"; exit 1; }
grep -q '1 of 2048 blocks bad; the first at offset 4096000 (checksum' <<<"$out" ||
  { echo "the damaged block is not reported as expected:"; echo "$out"; exit 1; }
echo "ok: 2048 blocks written and checked; the damaged block at offset 4096000 found"
