// ioq-bench's engine: the per-core load generator that drives ioq.
//
// What it is
//   One thread per core (--cores), pinned, serving that core of an ioq
//   Runtime without reactors: it is the core's event loop. Each keeps
//   --iodepth x --numjobs packets in flight against one or more devices
//   (--queues), whose queues dispatch per core (--dispatch) and whose handlers
//   send requests to a target (--target): the null target completes at once,
//   the io_uring target reads and writes a file or block device. A completion
//   callback records the request's latency in the core's histogram; the
//   histograms and counters of all cores are merged into one fio-style
//   JobResult at the end.
//
//   Timing: one TSC read per poll step, not per request. A batch submitted
//   together shares its start; the completions of a step (inline ones during
//   the submit call, reaped ones during poll) share one timestamp taken when
//   the step ends, as fio reads the clock once per batch of reaped
//   completions. That timestamp doubles as the start of the next submission
//   on the same thread (reap-then-submit, as fio's loop does). Latencies
//   include the rest of the step and the gap before the next: they err on the
//   high side, never the low. (Reading the TSC per completion cost a quarter
//   of the null target's time per request.)
//
// Threads
//   run() from the main thread; it starts and joins the core threads and
//   draws the progress line.
#pragma once

#include <cstdint>
#include <string>

#include "tool/options.hpp"
#include "tool/report.hpp"

namespace ioq::bench {

// How a run walks the file, beyond Options.
struct RunPlan {
  // Each core takes its share of the --size blocks and submits each exactly
  // once (sequentially, or in a fixed random permutation for random --rw):
  // a verifying job's write pass and read-back pass.
  bool each_block_once = false;
  // --verify: the generation written into each block (and expected on
  // read-back; 0 on a read pass accepts any generation).
  std::uint64_t generation = 0;
};

struct EngineResult {
  JobResult job;
  std::uint64_t verified = 0;          // blocks read back and checked
  std::uint64_t verify_errors = 0;     // blocks that failed the check
  std::uint64_t first_bad_offset = 0;  // the first failure's offset (in completion order)
  std::string first_bad_reason;
  std::string target_note;             // the io_uring target's set-up (fallbacks)
  std::string prometheus;  // with --prometheus: the runtime's and devices' counters
  std::string error;       // set when the run could not start (exit code 1)
  bool target_unavailable = false;  // ... because io_uring or O_DIRECT is not offered here
};

EngineResult run_engine(const Options& options, const RunPlan& plan = {});

// Heap allocations counted by ioq-bench's replacement operator new (all threads).
std::uint64_t allocation_count() noexcept;

}  // namespace ioq::bench
