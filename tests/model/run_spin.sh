#!/usr/bin/env bash
# run_spin.sh: model-checks tests/model/queue.pml (the queue state word and the
# dispatch / completion / cancellation protocol) with spin; ctest spin.queue,
# label `spin`.
#
#   run_spin.sh [CONFIG ...]     the configurations below (default: all)
#
# Each configuration is a set of the model's -D switches (threads, requests,
# dispatch type, which control operations). For each: spin -a generates the
# verifier, the C compiler builds pan (-O0: it compiles in seconds), pan
# searches the state space within a memory bound. The script fails on any error
# (assertion violated, invalid end state, a non-progress cycle in the progress
# configuration) and on a search that did not complete (memory bound, depth
# bound, time limit). Most configurations store states exactly (COLLAPSE); the
# largest uses bitstate hashing (a few hash collisions may leave a state out;
# the hash factor is printed). Up to IOQ_SPIN_JOBS verifiers run at once.
#
# Environment:
#   IOQ_SPIN_JOBS=n     verifiers run at once (default: 2, at most the CPU count)
#   IOQ_SPIN_AS_IS=1    model the code as it was: without the FIX_ switches of
#                       the fixed defects below (those configurations then fail)
#   IOQ_SPIN_KEEP=1     keep the work directory (trails: spin -t -p there)
#   CC                  the C compiler (default: gcc, else cc)
#
# Exit status: 0 all configurations passed, 1 a check failed, 77 spin or a C
# compiler is missing (ctest: skipped).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=$here/queue.pml

if ! command -v spin >/dev/null 2>&1; then
  echo "run_spin.sh: spin not found (Debian package spin): skipped"
  exit 77
fi
cc=${CC:-}
if [ -z "$cc" ]; then
  if command -v gcc >/dev/null 2>&1; then cc=gcc
  elif command -v cc >/dev/null 2>&1; then cc=cc
  fi
fi
if [ -z "$cc" ] || ! command -v "$cc" >/dev/null 2>&1; then
  echo "run_spin.sh: no C compiler for the verifier: skipped"
  exit 77
fi

# Defects the model found in runtime/queue, now fixed there. The model
# follows the code as it was unless its FIX_ switch is given (see queue.pml),
# so the switches are on: they describe the code as it is now. With
# IOQ_SPIN_AS_IS=1 the model checks the old code and each defect shows again.
#   FIX_FAST_PATH_CAS  arrive()'s fast path stored the request word (relaxed
#                      load, plain store): a Device::cancel between the two
#                      (the handle is published by bind) lost kCanceled. Now
#                      QueueImpl::take_presented, a compare-exchange.
#   FIX_BLOCKED_AT     run_loop_with() recorded blocked_at after the undo: when
#                      the unpublished head's producer published and updated
#                      st_ during the pop (it did not enter: D was at the
#                      limit), the loop left with requests queued and nobody
#                      dispatching (sequential and max_presented queues). Now
#                      blocked_at is the word before the reservation.
#   FIX_MARK_RECHECK   mark_cancelable read the latch, then set kCancelable;
#                      stop_and_purge/purge set the latch, then scan for
#                      cancelable requests: between the two, a request was left
#                      cancelable with the latch set and its cancel callback
#                      never ran. Now mark looks at the latch again after a
#                      fence that pairs with one before the scan.
#   FIX_PURGE_POP      run_loop_with() popped while purge_mode_ was set with
#                      D at the limit, and claim_popped() read the mode again:
#                      a start between the two reads delivered the request, a
#                      second driver-owned one on a sequential queue. Now the
#                      mode is read once under the token, and a request taken
#                      for a purge that has ended goes back to the FIFO head.
fixes="-DFIX_FAST_PATH_CAS -DFIX_BLOCKED_AT -DFIX_MARK_RECHECK -DFIX_PURGE_POP"
fix_defs=$fixes
if [ "${IOQ_SPIN_AS_IS:-0}" = 1 ]; then fix_defs=""; fi
# PUBLISH_LATE: submit() publishes a new request's handle only once arrive()
# has decided: its fast path makes the word owned and presented with a plain
# store first (no compare-exchange: nothing can reach the request yet), every
# other path publishes before it reserves. Always on: it is how the code works.
fix_defs="$fix_defs -DPUBLISH_LATE"

# name | model switches | search: exact (safety, states stored exactly),
# bitstate (safety, bitstate hashing), progress (non-progress cycles under weak
# fairness, states stored exactly)
configs=(
  "seq|-DNREQ=3 -DNSUB=2 -DNCANCEL=0 -DNOPS=0 -DLIMIT=1|exact"
  "par2|-DNREQ=3 -DNSUB=2 -DNCANCEL=0 -DNOPS=0 -DLIMIT=2|exact"
  "unlimited|-DNREQ=3 -DNSUB=2 -DNCANCEL=0 -DNOPS=0 -DLIMIT=15 -DDEFER|exact"
  "cancel|-DNREQ=2 -DNSUB=2 -DNCANCEL=1 -DNOPS=0 -DLIMIT=1|exact"
  "cancel-unlimited|-DNREQ=2 -DNSUB=2 -DNCANCEL=1 -DNOPS=0 -DLIMIT=15 -DDEFER|exact"
  "control|-DNREQ=2 -DNSUB=1 -DNCANCEL=0 -DNOPS=2 -DLIMIT=1|exact"
  "control-unlimited|-DNREQ=2 -DNSUB=1 -DNCANCEL=0 -DNOPS=2 -DLIMIT=15 -DDEFER|exact"
  "cancel-stop-drain|-DNREQ=2 -DNSUB=1 -DNCANCEL=1 -DNOPS=1 -DOPS=11 -DLIMIT=1|exact"
  "cancel-stop-and-purge|-DNREQ=2 -DNSUB=1 -DNCANCEL=1 -DNOPS=1 -DOPS=4 -DLIMIT=1|bitstate"
  "cancel-purge|-DNREQ=2 -DNSUB=1 -DNCANCEL=1 -DNOPS=1 -DOPS=16 -DLIMIT=1 -DNO_CANCELABLE|exact"
  "seq-progress|-DNREQ=3 -DNSUB=2 -DNCANCEL=0 -DNOPS=0 -DLIMIT=1|progress"
)

selected=("$@")
wanted() {
  [ ${#selected[@]} -eq 0 ] && return 0
  local n
  for n in "${selected[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}

jobs_max=${IOQ_SPIN_JOBS:-2}
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
[ "$jobs_max" -gt "$ncpu" ] 2>/dev/null && jobs_max=$ncpu
[ "$jobs_max" -ge 1 ] 2>/dev/null || jobs_max=1

work=$(mktemp -d "${TMPDIR:-/tmp}/ioq-spin.XXXXXX") || exit 1
if [ "${IOQ_SPIN_KEEP:-0}" = 1 ]; then
  echo "run_spin.sh: work directory $work"
else
  trap 'rm -rf "$work"' EXIT
fi

limit_s=300        # per verifier run
memlim_mb=1024     # pan's -DMEMLIM (exact search)
progress_memlim_mb=2048  # the progress search stores more per state (about 1.1 GB for seq-progress)

# Generates, compiles and runs one configuration in $work/NAME; the verdict
# goes to $work/NAME/verdict (first word PASS or FAIL).
check() {
  local name=$1 defs=$2 mode=$3 dir=$work/$1
  mkdir -p "$dir"
  cd "$dir" || return
  {
    echo "== $name: spin -a $defs $fix_defs"
    # A copy: pan writes its trail next to the model's name.
    cp "$model" queue.pml || { echo "FAIL copying the model" >verdict; return; }
    if ! spin -a $defs $fix_defs queue.pml >spin.out 2>&1; then
      cat spin.out
      echo "FAIL spin -a" >verdict
      return
    fi
    local cflags=(-O0 -w -DSAFETY -DMEMLIM=$memlim_mb) pflags=(-m20000)
    case $mode in
      bitstate) cflags=(-O0 -w -DSAFETY -DBITSTATE); pflags=(-m20000 -w28) ;;
      progress) cflags=(-O0 -w -DNP -DCOLLAPSE -DMEMLIM=$progress_memlim_mb); pflags=(-m20000 -l -f) ;;
      *) cflags+=(-DCOLLAPSE) ;;
    esac
    if ! "$cc" "${cflags[@]}" -o pan pan.c >cc.out 2>&1; then
      cat cc.out
      echo "FAIL compiling pan" >verdict
      return
    fi
    local start=$SECONDS rc
    if command -v timeout >/dev/null 2>&1; then
      timeout "$limit_s" ./pan "${pflags[@]}" >pan.out 2>&1
    else
      ./pan "${pflags[@]}" >pan.out 2>&1
    fi
    rc=$?
    local took=$((SECONDS - start))
    local errors states depth hf
    errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' pan.out | head -n1)
    states=$(sed -n 's/^ *\([0-9][0-9]*\) states, stored.*/\1/p' pan.out | head -n1)
    depth=$(sed -n 's/.*depth reached \([0-9][0-9]*\).*/\1/p' pan.out | head -n1)
    hf=$(sed -n 's/.*hash factor: \([0-9.e+]*\).*/\1/p' pan.out | head -n1)
    local why=""
    if [ "$rc" -eq 124 ]; then why="time limit (${limit_s} s)"
    elif [ -z "$errors" ]; then why="pan exited $rc without a result"
    elif [ "$errors" != 0 ]; then why="$errors error(s)"
    elif grep -q -e 'Search not completed' -e 'reached -DMEMLIM' -e 'max search depth too small' \
                 -e 'out of memory' pan.out; then why="search not completed"
    fi
    if [ -n "$why" ]; then
      grep -E 'assertion violated|invalid end state|non-progress cycle|pan:|error|Search not|MEMLIM|depth' pan.out | head -n 20
      [ -f queue.pml.trail ] && echo "   (trail: IOQ_SPIN_KEEP=1, then: cd $dir && spin -t -p -g $defs $fix_defs queue.pml)"
      echo "FAIL $name: $why" >verdict
    else
      echo "PASS $name: ${states:-?} states, depth ${depth:-?}, ${took} s, $mode${hf:+ (hash factor $hf)}" >verdict
    fi
  } >log 2>&1
}

names=()
for c in "${configs[@]}"; do
  IFS='|' read -r name defs mode <<<"$c"
  wanted "$name" || continue
  names+=("$name")
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n 2>/dev/null || sleep 0.2; done
  ( check "$name" "$defs" "$mode" ) &
done
wait

if [ ${#names[@]} -eq 0 ]; then
  echo "run_spin.sh: no configuration named ${selected[*]}"
  exit 1
fi

[ -n "$fix_defs" ] && echo "spin.queue: the model includes the fixes runtime/queue has: $fix_defs"
failed=0
for name in "${names[@]}"; do
  verdict=$(cat "$work/$name/verdict" 2>/dev/null || echo "FAIL $name: no verdict")
  case $verdict in
    PASS*) echo "$verdict" ;;
    *) failed=1; cat "$work/$name/log" 2>/dev/null; echo "$verdict" ;;
  esac
done
exit $failed
