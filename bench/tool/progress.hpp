// tool/progress.hpp — ioq-bench's once-a-second status line (fio's ETA line).
//
// What it is
//   Progress rewrites one line on a terminal while the job runs:
//     ioq-bench: [ 40.0%][r=1235k IOPS][in flight 32][elapsed 00m:02s][eta 00m:03s]
//   (percent and eta only when the planned duration is known; "w=" for a
//   write-only job, "rw=" when it mixes). It is off unless its file descriptor
//   is a terminal (isatty), so a pipe or a file never sees it.
//   The engine's control thread calls tick(now_ns, completed_total, in_flight)
//   as often as it likes: a call that is not due costs one comparison, and
//   due(now_ns) lets the caller skip summing its per-core counters in between.
//   A due tick formats into a stack buffer and issues one write(2): nothing is
//   allocated after construction. finish() erases the line before the report.
//
// Threads
//   One control thread calls everything; Progress is not synchronised. The
//   counters it is given are the caller's snapshots (e.g. relaxed loads of
//   per-core counters, summed), so it never touches the workers' data.
//
// Memory ordering
//   None needed here (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ioq::bench {

struct ProgressConfig {
  int fd = 1;                                 // where the line goes (standard output)
  std::uint64_t interval_ns = 1'000'000'000;  // at most one line per interval
  std::uint64_t planned_ns = 0;               // ramp + runtime, for percent and eta; 0 = unknown
  const char* direction = "r";                // "r", "w" or "rw": the IOPS label
  bool force = false;                         // draw even when fd is not a terminal (tests)
};

class Progress {
 public:
  explicit Progress(const ProgressConfig& config = {}) noexcept;
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // False when fd is not a terminal (and not forced): every call is a no-op.
  [[nodiscard]] bool enabled() const noexcept { return enabled_; }

  // Whether tick(now_ns, ...) would draw. False when disabled.
  [[nodiscard]] bool due(std::uint64_t now_ns) const noexcept {
    return enabled_ && (!started_ || now_ns >= next_ns_);
  }

  // The first call only records the start (now_ns, completed_total); later
  // due calls draw the line, with IOPS over the time since the previous line.
  // now_ns: any monotonic clock, the same for every call.
  void tick(std::uint64_t now_ns, std::uint64_t completed_total, std::uint64_t in_flight) noexcept {
    if (due(now_ns)) draw(now_ns, completed_total, in_flight);
  }

  // Erases the line if one was drawn, so the report starts on a clean line.
  void finish() noexcept;

  // The line tick() would draw (without the leading "\r" and the erase
  // sequence), into buf; returns its length (at most cap - 1, NUL-terminated).
  [[nodiscard]] static std::size_t format_line(char* buf, std::size_t cap, std::uint64_t elapsed_ns,
                                               std::uint64_t planned_ns, double iops,
                                               std::uint64_t in_flight,
                                               const char* direction) noexcept;

 private:
  void draw(std::uint64_t now_ns, std::uint64_t completed_total, std::uint64_t in_flight) noexcept;

  ProgressConfig config_;
  bool enabled_ = false;
  bool started_ = false;
  bool drawn_ = false;
  std::uint64_t start_ns_ = 0;
  std::uint64_t next_ns_ = 0;
  std::uint64_t last_ns_ = 0;
  std::uint64_t last_completed_ = 0;
};

}  // namespace ioq::bench
