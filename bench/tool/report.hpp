// tool/report.hpp — ioq-bench's results and the two report formats.
//
// What it is
//   The engine fills one JobResult per job (per-worker histograms merged, CPU
//   usage over the measured phase) and hands it to render_normal / render_json,
//   or to write_report, which picks the format and the destination from the
//   job's Options (--output-format, --output).
//   * render_normal: a compact block in fio's normal layout (IOPS, bandwidth,
//     clat min/max/avg/stdev, the percentile list, CPU, ioq's own figures, and
//     fio's "Run status group" lines).
//   * render_json: fio's --output-format=json document with fio's key names
//     and units (nanoseconds for latency, KiB/s for "bw", ms for "runtime"),
//     in fio's key order, so fio tooling reads it; json+ adds the clat "bins".
//     What ioq-bench does not measure is present with fio's "nothing measured"
//     value: "slat_ns" and "trim" are zeros, "bw_*"/"iops_*" sample statistics
//     are zeros with 0 samples (fio samples bandwidth periodically; ioq-bench
//     reports only the whole-run figures). "lat_ns" carries the same numbers as
//     "clat_ns" (no percentiles, as fio's default): ioq-bench's latency runs
//     from Device::submit to the completion callback, so slat is 0 and
//     lat = clat. "latency_ns"/"_us"/"_ms" are fio's distribution tables,
//     computed from the histogram (each bucket classified by its midpoint).
//     ioq's own figures are in the job's "ioq" object.
//   The derived numbers follow fio's arithmetic: runtime in whole ms,
//   iops = 1000 * total_ios / runtime, bw_bytes = 1000 * io_bytes / runtime,
//   bw = bw_bytes / 1024, usr_cpu = 100 * usr time / runtime. The JobResult
//   member functions compute them; both formats print those same values.
//
// Threads
//   None: values and pure functions, called by the control thread after the run.
//
// Memory ordering
//   None needed.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tool/histogram.hpp"
#include "tool/options.hpp"

namespace ioq::bench {

// Process CPU time and scheduling counters (getrusage(RUSAGE_SELF): all threads).
// Take one at the start of the measured phase and one at its end; the
// difference goes into JobResult::cpu.
struct CpuUsage {
  std::uint64_t usr_ns = 0;        // user CPU time
  std::uint64_t sys_ns = 0;        // system CPU time
  std::uint64_t ctx_switches = 0;  // voluntary + involuntary (fio "ctx")
  std::uint64_t minor_faults = 0;  // fio "minf"
  std::uint64_t major_faults = 0;  // fio "majf"

  [[nodiscard]] static CpuUsage now() noexcept;
  // Field-wise difference, clamped at 0.
  friend CpuUsage operator-(const CpuUsage& end, const CpuUsage& start) noexcept;
};

// One direction (read or write) of a job.
struct DirectionResult {
  std::uint64_t ios = 0;        // completed requests (fio "total_ios")
  std::uint64_t bytes = 0;      // bytes moved (fio "io_bytes")
  std::uint64_t short_ios = 0;  // completed with fewer bytes than asked (fio "short_ios")
  LatencyHistogram clat;        // Device::submit -> completion callback, ns (fio "clat_ns")
};

struct JobResult {
  std::string name;  // fio "jobname"; empty: options.name
  Options options;   // what ran ("job options", the report header)
  DirectionResult read;
  DirectionResult write;
  std::uint64_t runtime_ns = 0;     // the measured phase (ramp excluded)
  std::uint64_t start_unix_ms = 0;  // fio "job_start": wall clock at the start; 0 = unknown
  int error = 0;                    // fio "error": first errno-style error, 0 = none
  CpuUsage cpu;                     // over the measured phase

  // ioq's own figures ("ioq" object in JSON, "ioq" lines in normal output).
  std::uint64_t forwarded = 0;      // requests forwarded to another queue
  std::uint64_t cancelled = 0;      // requests completed with Status::cancelled
  std::uint64_t failed = 0;         // requests completed with any other failure status
  std::uint64_t verify_errors = 0;  // --verify mismatches
  std::uint64_t allocations = 0;    // heap allocations in the measured phase (0: not counted)
  std::vector<std::pair<std::string, double>> extra;  // more named figures, printed as given

  // --- derived, with fio's arithmetic ---
  [[nodiscard]] const std::string& job_name() const noexcept {
    return name.empty() ? options.name : name;
  }
  [[nodiscard]] std::uint64_t total_ios() const noexcept { return read.ios + write.ios; }
  // runtime_ns rounded to ms; at least 1 when runtime_ns > 0.
  [[nodiscard]] std::uint64_t runtime_ms() const noexcept;
  // A direction's "runtime": runtime_ms() if it completed any request, else 0 (fio).
  [[nodiscard]] std::uint64_t runtime_ms(const DirectionResult& d) const noexcept;
  [[nodiscard]] double iops(const DirectionResult& d) const noexcept;             // 0 if no runtime
  [[nodiscard]] std::uint64_t bw_bytes(const DirectionResult& d) const noexcept;  // bytes/s
  [[nodiscard]] double usr_cpu_pct() const noexcept;  // may exceed 100 with several threads
  [[nodiscard]] double sys_cpu_pct() const noexcept;
  [[nodiscard]] double cpu_ns_per_io() const noexcept;       // (usr + sys) / total_ios
  [[nodiscard]] double allocations_per_io() const noexcept;  // allocations / total_ios
};

// fio's normal output for one job, ending in a newline.
[[nodiscard]] std::string render_normal(const JobResult& r);

// One element of fio's "jobs" array. `bins`: add json+ "bins" to clat_ns.
[[nodiscard]] nlohmann::ordered_json render_job_json(const JobResult& r, bool bins = false);

// fio's whole JSON document: "fio version", "timestamp", "timestamp_ms",
// "time", "jobs": [render_job_json(r)]. Bins when options.output_format is json+.
// (ordered_json keeps fio's key order; it converts to nlohmann::json.)
[[nodiscard]] nlohmann::ordered_json render_json(
    const JobResult& r,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

// The report in r.options.output_format, ending in a newline.
[[nodiscard]] std::string render(const JobResult& r);

// Writes render(r) to r.options.output (truncated) or to standard output.
// Returns 0, or 1 after a line on `err` naming the file when it cannot be written.
[[nodiscard]] int write_report(const JobResult& r, std::ostream& err);

}  // namespace ioq::bench
