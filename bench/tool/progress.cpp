// ioq-bench's status line: formatted on the stack, one write(2) per line.
#include "tool/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace ioq::bench {
namespace {

constexpr const char kErase[] = "\x1b[K";  // erase to the end of the line

// Appends `len` bytes; keeps room for the terminating NUL.
struct Cursor {
  char* buf;
  std::size_t cap;
  std::size_t len = 0;

  template <class... Args>
  void put(fmt::format_string<Args...> f, Args&&... args) noexcept {
    if (len + 1 >= cap) return;
    const auto r = fmt::format_to_n(buf + len, cap - 1 - len, f, std::forward<Args>(args)...);
    len += std::min<std::size_t>(r.size, cap - 1 - len);
  }
};

void put_minutes(Cursor& c, const char* label, std::uint64_t ns) noexcept {
  const std::uint64_t s = ns / 1'000'000'000;
  c.put("[{} {:02}m:{:02}s]", label, s / 60, s % 60);
}

void write_all(int fd, const char* p, std::size_t n) noexcept {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // a status line is best effort
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

Progress::Progress(const ProgressConfig& config) noexcept
    : config_(config), enabled_(config.force || ::isatty(config.fd) == 1) {
  if (config_.interval_ns == 0) config_.interval_ns = 1;
  if (config_.direction == nullptr) config_.direction = "r";
}

std::size_t Progress::format_line(char* buf, std::size_t cap, std::uint64_t elapsed_ns,
                                  std::uint64_t planned_ns, double iops, std::uint64_t in_flight,
                                  const char* direction) noexcept {
  if (cap == 0) return 0;
  Cursor c{buf, cap};
  c.put("ioq-bench: ");
  if (planned_ns != 0) {
    const double pct =
        std::min(100.0, 100.0 * static_cast<double>(elapsed_ns) / static_cast<double>(planned_ns));
    c.put("[{:5.1f}%]", pct);
  }
  // IOPS with fio's k/M steps (4 digits at most).
  static constexpr const char* kUnits[] = {"", "k", "M", "G"};
  std::size_t u = 0;
  while (iops >= 9999.5 && u + 1 < std::size(kUnits)) {
    iops /= 1000;
    ++u;
  }
  c.put("[{}={:.0f}{} IOPS]", direction, iops, kUnits[u]);
  c.put("[in flight {}]", in_flight);
  put_minutes(c, "elapsed", elapsed_ns);
  if (planned_ns != 0) put_minutes(c, "eta", planned_ns > elapsed_ns ? planned_ns - elapsed_ns : 0);
  buf[c.len] = '\0';
  return c.len;
}

void Progress::draw(std::uint64_t now_ns, std::uint64_t completed_total,
                    std::uint64_t in_flight) noexcept {
  if (!started_) {
    started_ = true;
    start_ns_ = last_ns_ = now_ns;
    last_completed_ = completed_total;
    next_ns_ = now_ns + config_.interval_ns;
    return;
  }
  const std::uint64_t dt = now_ns - last_ns_;
  const std::uint64_t done =
      completed_total >= last_completed_ ? completed_total - last_completed_ : 0;
  const double iops = dt ? static_cast<double>(done) * 1e9 / static_cast<double>(dt) : 0.0;
  char line[256];
  line[0] = '\r';
  std::size_t n =
      1 + format_line(line + 1, sizeof line - 1 - (sizeof kErase - 1), now_ns - start_ns_,
                      config_.planned_ns, iops, in_flight, config_.direction);
  for (char ch : kErase) {
    if (ch != '\0') line[n++] = ch;
  }
  write_all(config_.fd, line, n);
  drawn_ = true;
  last_ns_ = now_ns;
  last_completed_ = completed_total;
  // Stay on the interval grid, skipping intervals the caller slept through.
  next_ns_ += config_.interval_ns * ((now_ns - next_ns_) / config_.interval_ns + 1);
}

void Progress::finish() noexcept {
  if (!drawn_) return;
  static constexpr const char kClear[] = "\r\x1b[K";
  write_all(config_.fd, kClear, sizeof kClear - 1);
  drawn_ = false;
}

}  // namespace ioq::bench
