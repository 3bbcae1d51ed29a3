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
//   Timing: one TSC read per request. A completion's timestamp doubles as the
//   start of the next submission made right after it on the same thread
//   (reap-then-submit, as fio's loop does), so latencies include the gap
//   between the two: they err on the high side, never the low.
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

struct EngineResult {
  JobResult job;
  std::string prometheus;  // with --prometheus: the runtime's and devices' counters
  std::string error;       // set when the run could not start (exit code 1)
};

EngineResult run_engine(const Options& options);

// Heap allocations counted by ioq-bench's replacement operator new (all threads).
std::uint64_t allocation_count() noexcept;

}  // namespace ioq::bench
