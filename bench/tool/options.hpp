// tool/options.hpp — ioq-bench's command line, in fio's language.
//
// What it is
//   `Options` holds one run's settings with their defaults; parse_options()
//   fills it from argv with CLI11. Where fio has an option with the same
//   meaning, the name, syntax and units are fio's (--rw, --bs=4k, --iodepth,
//   --runtime=3s, --percentile_list=50:99:99.9, --output-format=json, ...);
//   ioq's own settings (--target, --dispatch, --cores, --queues, ...) use
//   dashes. Sizes take fio's suffixes (k, m, g, t, p, optionally with i and/or
//   b: all powers of 1024, fio's default kb_base); times take fio's (us, ms,
//   s, m, h, d; a bare number is seconds).
//
//   Choices that depart from fio, on purpose:
//     * --direct defaults to 1 (fio: 0): the uring target measures the device,
//       not the page cache. The null target ignores it.
//     * --ioengine is refused with a message pointing to --target: ioq-bench
//       always drives ioq, and fio's engine names would mean something else.
//     * --fixedbufs, --registerfiles and --filename need --target=uring (fio
//       accepts io_uring options only with that engine, too).
//     * a bad combination is an error rather than a silent clamp
//       (fio clamps --iodepth_batch_submit to --iodepth; here it is exit 2).
//   --iodepth_batch_submit (alias --iodepth_batch) keeps fio's meaning: 1
//   submits each request as soon as it is prepared, N submits in batches of N,
//   0 means "the whole --iodepth" (see Options::batch_submit()). Its default
//   is 0, not fio's 1: ioq submits a batch in one step, and batching at every
//   boundary is how ioq is meant to be driven. Comparisons with fio set it
//   explicitly on both sides.
//   --lat-sample=N times one request in N (default 1: every request); the
//   others still count in IOPS and bandwidth. A timestamp costs ~12 ns here.
//   Without --time_based a job ends after --size bytes or --runtime,
//   whichever comes first (fio's meaning; --runtime=0: no time limit).
//
// Threads
//   parse_options: the main thread, before the run. Options is a value.
//
// Memory ordering
//   None needed.
#pragma once

#include <array>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ioq::bench {

enum class RwMode : std::uint8_t { read, write, randread, randwrite, randrw };
// uring_nop: the io_uring target with IORING_OP_NOP for every request (ioq's
// whole path and the ring, without the device).
enum class Target : std::uint8_t { null, uring, uring_nop };
enum class DispatchMode : std::uint8_t { sequential, parallel, manual };  // ioq::DispatchType
// request: one IoHandler call per request; batch: QueueConfig::on_batch, and
// the run goes to the target with Target::send_batch.
enum class HandlerMode : std::uint8_t { request, batch };
enum class Verify : std::uint8_t { none, crc32c };
enum class OutputFormat : std::uint8_t { normal, json, json_plus };  // json+ adds clat "bins"

// fio's default --percentile_list (constexpr: no static-initialisation order).
inline constexpr std::array<double, 17> kDefaultPercentiles = {
    1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};
// fio's FIO_IO_U_LIST_MAX_LEN.
inline constexpr std::size_t kMaxPercentiles = 20;

struct Options {
  // --- fio's options (same name, same meaning) ---
  std::string name = "ioq";                  // --name: job name ("jobname" in JSON)
  RwMode rw = RwMode::read;                  // --rw
  std::uint32_t rwmixread = 50;              // --rwmixread: % reads for randrw (0..100)
  std::uint64_t bs_bytes = 4096;             // --bs: request size
  std::uint32_t iodepth = 32;                // --iodepth: requests in flight per job
  std::uint32_t iodepth_batch_submit = 0;    // --iodepth_batch_submit: 0 = iodepth (fio's default: 1)
  std::uint32_t numjobs = 1;                 // --numjobs: load-generating jobs (threads)
  std::uint64_t runtime_ns = 3'000'000'000;  // --runtime: 0 = no time limit (unless time_based)
  bool time_based = false;                   // --time_based: run for runtime even after size
  std::uint64_t ramp_time_ns = 0;            // --ramp_time: run before measuring
  std::uint64_t size_bytes = 64ull << 20;    // --size: bytes per job (and file size)
  std::string filename;                      // --filename: empty = temporary file (uring)
  bool direct = true;                        // --direct: O_DIRECT (uring target)
  bool fixedbufs = false;                    // --fixedbufs: registered buffers (uring)
  bool registerfiles = false;                // --registerfiles: registered files (uring)
  bool norandommap = false;                  // --norandommap: random blocks may repeat within a pass
  std::vector<double> percentile_list{kDefaultPercentiles.begin(),  // --percentile_list, sorted
                                      kDefaultPercentiles.end()};
  OutputFormat output_format = OutputFormat::normal;  // --output-format
  std::string output;                                 // --output: empty = stdout

  // --- ioq's own ---
  Target target = Target::null;                    // --target
  DispatchMode dispatch = DispatchMode::parallel;  // --dispatch: the queue's dispatch type
  HandlerMode handler = HandlerMode::request;      // --handler: per request, or runs (on_batch)
  std::uint32_t cores = 1;                         // --cores: runtime cores
  std::uint32_t queues = 1;                        // --queues: queues per device
  double forward_ratio = 0.0;                      // --forward-ratio: share of requests forwarded
  double cancel_ratio = 0.0;                       // --cancel-ratio: share of requests cancelled
  std::uint32_t reserved = 0;                      // --reserved: reserved requests per queue
  Verify verify = Verify::none;                    // --verify
  bool prometheus = false;                         // --prometheus: print counters after the run
  std::uint32_t lat_sample = 1;                    // --lat-sample: time 1 request in N (1: every one)

  // --iodepth_batch_submit resolved: 0 means iodepth.
  [[nodiscard]] std::uint32_t batch_submit() const noexcept {
    return iodepth_batch_submit == 0 ? iodepth : iodepth_batch_submit;
  }
  [[nodiscard]] bool reads() const noexcept {
    return rw == RwMode::read || rw == RwMode::randread || (rw == RwMode::randrw && rwmixread > 0);
  }
  [[nodiscard]] bool writes() const noexcept {
    return rw == RwMode::write || rw == RwMode::randwrite ||
           (rw == RwMode::randrw && rwmixread < 100);
  }
  [[nodiscard]] bool random() const noexcept {
    return rw == RwMode::randread || rw == RwMode::randwrite || rw == RwMode::randrw;
  }

  friend bool operator==(const Options&, const Options&) = default;
};

// Parses argv into `out`. Returns
//   -1: parsed, run the job (`out` assigned);
//    0: --help or --version was printed on `msg` (`out` untouched);
//    2: a bad option, value or combination; one line on `err`, naming the
//       option: "ioq-bench: --iodepth: must be at least 1" (`out` untouched).
// The 4-argument form prints --help/--version on std::cout.
[[nodiscard]] int parse_options(int argc, const char* const* argv, Options& out, std::ostream& msg,
                                std::ostream& err);
[[nodiscard]] int parse_options(int argc, char** argv, Options& out, std::ostream& err);

// "ioq-bench" and the project version, e.g. "0.1.0".
[[nodiscard]] std::string_view tool_name() noexcept;
[[nodiscard]] std::string_view tool_version() noexcept;

// Every option of `o` as (fio-style name, value text that parse_options
// accepts), in --help order: fio's "job options" and the normal report header.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> option_values(const Options& o);

// Value parsers used by parse_options (exposed for tests and the engine).
// std::nullopt on anything malformed or out of range.
[[nodiscard]] std::optional<std::uint64_t> parse_size(std::string_view text);     // "4k" -> 4096
[[nodiscard]] std::optional<std::uint64_t> parse_time_ns(std::string_view text);  // "3" -> 3e9
[[nodiscard]] std::optional<std::vector<double>> parse_percentiles(std::string_view text);

// Names as the command line spells them ("randread", "null", "json+", ...).
[[nodiscard]] std::string_view to_string(RwMode v) noexcept;
[[nodiscard]] std::string_view to_string(Target v) noexcept;
[[nodiscard]] std::string_view to_string(DispatchMode v) noexcept;
[[nodiscard]] std::string_view to_string(HandlerMode v) noexcept;
[[nodiscard]] std::string_view to_string(Verify v) noexcept;
[[nodiscard]] std::string_view to_string(OutputFormat v) noexcept;

// Text forms that parse back to the same value: 4096 -> "4k", 3e9 ns -> "3s".
[[nodiscard]] std::string format_size(std::uint64_t bytes);
[[nodiscard]] std::string format_time(std::uint64_t ns);

}  // namespace ioq::bench
