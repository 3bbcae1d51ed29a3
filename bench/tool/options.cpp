// ioq-bench's command line: a table of options, each parsed from its text by
// ioq-bench itself so that every bad value is reported the same way, naming it.
#include "tool/options.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <iostream>
#include <limits>

#ifndef IOQ_BENCH_VERSION
#define IOQ_BENCH_VERSION "0.0.0"
#endif

namespace ioq::bench {
namespace {

constexpr std::uint32_t kMaxThreads = 4096;    // --numjobs, --cores, --queues
constexpr std::uint32_t kMaxDepth = 1u << 20;  // --iodepth, --reserved

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

// A non-negative decimal number "12", "1.5", ".5" at the front of `text`;
// `rest` is what follows it. Returns false when there is no number.
bool split_number(std::string_view text, long double& value, bool& integral, std::uint64_t& whole,
                  std::string_view& rest) {
  std::size_t n = 0;
  while (n < text.size() && (std::isdigit(static_cast<unsigned char>(text[n])) || text[n] == '.'))
    ++n;
  const std::string_view num = text.substr(0, n);
  if (num.empty() || std::count(num.begin(), num.end(), '.') > 1 || num == ".") return false;
  rest = text.substr(n);
  integral = num.find('.') == std::string_view::npos;
  if (integral) {
    auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), whole);
    if (ec != std::errc{} || p != num.data() + num.size()) return false;  // out of range
    value = static_cast<long double>(whole);
    return true;
  }
  double d = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), d);
  if (ec != std::errc{} || p != num.data() + num.size()) return false;
  value = d;
  return true;
}

// value * mult as a whole number; false if it is not whole or does not fit.
bool scale(long double value, bool integral, std::uint64_t whole, std::uint64_t mult,
           std::uint64_t& out) {
  if (integral) {
    if (whole != 0 && mult > std::numeric_limits<std::uint64_t>::max() / whole) return false;
    out = whole * mult;
    return true;
  }
  const long double r = value * static_cast<long double>(mult);
  if (!(r < 18446744073709551616.0L)) return false;
  const long double rounded = std::nearbyint(r);
  if (std::fabs(r - rounded) > 1e-6L) return false;
  out = static_cast<std::uint64_t>(rounded);
  return true;
}

// --- single values; each returns an error text ("" = fine) ---

std::string uint_value(std::string_view text, std::uint64_t lo, std::uint64_t hi,
                       std::uint64_t& out) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || p != text.data() + text.size()) {
    if (text.size() > 1 && text[0] == '-') {
      return lo > 0 ? fmt::format("must be at least {}", lo) : std::string("must not be negative");
    }
    return fmt::format("'{}' is not a whole number", text);
  }
  if (v < lo) return fmt::format("must be at least {}", lo);
  if (v > hi) return fmt::format("must be at most {}", hi);
  out = v;
  return {};
}

template <class T>
std::string uint_field(std::string_view text, std::uint64_t lo, std::uint64_t hi, T& field) {
  std::uint64_t v = 0;
  std::string e = uint_value(text, lo, hi, v);
  if (e.empty()) field = static_cast<T>(v);
  return e;
}

std::string ratio_field(std::string_view text, double& field) {
  double v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || p != text.data() + text.size() || std::isnan(v))
    return fmt::format("'{}' is not a number", text);
  if (v < 0.0 || v > 1.0) return "must be between 0 and 1";
  field = v;
  return {};
}

std::string size_field(std::string_view text, std::uint64_t lo, std::uint64_t& field) {
  const std::optional<std::uint64_t> v = parse_size(text);
  if (!v)
    return fmt::format("'{}' is not a size (a whole number of bytes, suffixes k m g t p)", text);
  if (*v < lo) return fmt::format("must be at least {}", lo);
  field = *v;
  return {};
}

std::string time_field(std::string_view text, std::uint64_t& field) {
  const std::optional<std::uint64_t> v = parse_time_ns(text);
  if (!v) return fmt::format("'{}' is not a time (seconds, or suffixes us ms s m h d)", text);
  field = *v;
  return {};
}

std::string bool_field(std::string_view text, bool& field) {
  if (text == "1") field = true;
  else if (text == "0") field = false;
  else return fmt::format("'{}' must be 0 or 1", text);
  return {};
}

template <class E, std::size_t N>
std::string enum_field(std::string_view text, const E (&values)[N], E& field) {
  for (E v : values) {
    if (to_string(v) == text) {
      field = v;
      return {};
    }
  }
  std::string choices;
  for (E v : values) choices += fmt::format("{}{}", choices.empty() ? "" : ", ", to_string(v));
  return fmt::format("'{}' is not one of {}", text, choices);
}

constexpr RwMode kRwModes[] = {RwMode::read, RwMode::write, RwMode::randread, RwMode::randwrite,
                               RwMode::randrw};
constexpr Target kTargets[] = {Target::null, Target::uring, Target::uring_nop};
constexpr DispatchMode kDispatchModes[] = {DispatchMode::sequential, DispatchMode::parallel,
                                           DispatchMode::manual};
constexpr HandlerMode kHandlerModes[] = {HandlerMode::request, HandlerMode::batch};
constexpr Verify kVerifyModes[] = {Verify::none, Verify::crc32c};
constexpr OutputFormat kOutputFormats[] = {OutputFormat::normal, OutputFormat::json,
                                           OutputFormat::json_plus};

std::string format_ratio(double v) { return fmt::format("{}", v); }

std::string format_percentiles(const std::vector<double>& list) {
  std::string s;
  for (double p : list) s += fmt::format("{}{}", s.empty() ? "" : ":", p);
  return s;
}

// --- the table: one row per option, in --help order ---

struct Field {
  const char* names;  // CLI11 spelling; the first name is the canonical one
  const char* type;   // shown in --help; nullptr: a flag
  const char* group;
  const char* help;
  std::string (*show)(const Options&);
  std::string (*apply)(std::string_view text, Options&);
};

constexpr const char* kFio = "fio options";
constexpr const char* kIoq = "ioq options";

const Field kFields[] = {
    {"--name", "TEXT", kFio, "Job name (\"jobname\" in JSON)",
     [](const Options& o) { return o.name; },
     [](std::string_view t, Options& o) -> std::string {
       if (t.empty()) return "must not be empty";
       o.name = std::string(t);
       return {};
     }},
    {"--rw", "MODE", kFio, "read|write|randread|randwrite|randrw",
     [](const Options& o) { return std::string(to_string(o.rw)); },
     [](std::string_view t, Options& o) { return enum_field(t, kRwModes, o.rw); }},
    {"--rwmixread", "PCT", kFio, "Percentage of reads for --rw=randrw (0-100)",
     [](const Options& o) { return std::to_string(o.rwmixread); },
     [](std::string_view t, Options& o) { return uint_field(t, 0, 100, o.rwmixread); }},
    {"--bs", "SIZE", kFio, "Request size in bytes (suffixes k m g: powers of 1024)",
     [](const Options& o) { return format_size(o.bs_bytes); },
     [](std::string_view t, Options& o) { return size_field(t, 1, o.bs_bytes); }},
    {"--iodepth", "N", kFio, "Requests in flight per job",
     [](const Options& o) { return std::to_string(o.iodepth); },
     [](std::string_view t, Options& o) { return uint_field(t, 1, kMaxDepth, o.iodepth); }},
    {"--iodepth_batch_submit,--iodepth_batch", "N", kFio,
     "Requests submitted at once: 1 = each as soon as ready, 0 = all of --iodepth",
     [](const Options& o) { return std::to_string(o.iodepth_batch_submit); },
     [](std::string_view t, Options& o) {
       return uint_field(t, 0, kMaxDepth, o.iodepth_batch_submit);
     }},
    {"--numjobs", "N", kFio, "Load-generating jobs (one thread each)",
     [](const Options& o) { return std::to_string(o.numjobs); },
     [](std::string_view t, Options& o) { return uint_field(t, 1, kMaxThreads, o.numjobs); }},
    {"--runtime", "TIME", kFio,
     "Run time limit (seconds; suffixes us ms s m h d); 0 = until --size is done",
     [](const Options& o) { return format_time(o.runtime_ns); },
     [](std::string_view t, Options& o) { return time_field(t, o.runtime_ns); }},
    {"--time_based", nullptr, kFio, "Run for --runtime even after --size bytes",
     [](const Options& o) { return std::string(o.time_based ? "1" : "0"); }, nullptr},
    {"--ramp_time", "TIME", kFio, "Run this long before measuring",
     [](const Options& o) { return format_time(o.ramp_time_ns); },
     [](std::string_view t, Options& o) { return time_field(t, o.ramp_time_ns); }},
    {"--size", "SIZE", kFio, "Bytes per job (and the file size for --target=uring)",
     [](const Options& o) { return format_size(o.size_bytes); },
     [](std::string_view t, Options& o) { return size_field(t, 1, o.size_bytes); }},
    {"--filename", "PATH", kFio, "File or block device (--target=uring); empty = a temporary file",
     [](const Options& o) { return o.filename; },
     [](std::string_view t, Options& o) -> std::string {
       o.filename = std::string(t);
       return {};
     }},
    {"--direct", "0|1", kFio, "O_DIRECT for --target=uring",
     [](const Options& o) { return std::string(o.direct ? "1" : "0"); },
     [](std::string_view t, Options& o) { return bool_field(t, o.direct); }},
    {"--fixedbufs", nullptr, kFio, "Registered buffers (--target=uring)",
     [](const Options& o) { return std::string(o.fixedbufs ? "1" : "0"); }, nullptr},
    {"--registerfiles", nullptr, kFio, "Registered files (--target=uring)",
     [](const Options& o) { return std::string(o.registerfiles ? "1" : "0"); }, nullptr},
    {"--norandommap", nullptr, kFio,
     "Random offsets drawn with repeats (default: every block once per pass, as fio's random map)",
     [](const Options& o) { return std::string(o.norandommap ? "1" : "0"); }, nullptr},
    {"--percentile_list", "P:P:...", kFio, "Completion-latency percentiles to report",
     [](const Options& o) { return format_percentiles(o.percentile_list); },
     [](std::string_view t, Options& o) -> std::string {
       std::optional<std::vector<double>> list = parse_percentiles(t);
       if (!list) {
         return fmt::format("'{}' is not a list of 1 to {} percentiles in (0, 100] joined by ':'",
                            t, kMaxPercentiles);
       }
       o.percentile_list = std::move(*list);
       return {};
     }},
    {"--output-format", "FORMAT", kFio, "normal|json|json+ (json+ adds the latency bins)",
     [](const Options& o) { return std::string(to_string(o.output_format)); },
     [](std::string_view t, Options& o) { return enum_field(t, kOutputFormats, o.output_format); }},
    {"--output", "PATH", kFio, "Write the report to this file; empty = standard output",
     [](const Options& o) { return o.output; },
     [](std::string_view t, Options& o) -> std::string {
       o.output = std::string(t);
       return {};
     }},

    {"--target", "TARGET", kIoq, "null|uring|uring-nop: where ioq sends the requests (uring-nop: IORING_OP_NOP, no device)",
     [](const Options& o) { return std::string(to_string(o.target)); },
     [](std::string_view t, Options& o) { return enum_field(t, kTargets, o.target); }},
    {"--dispatch", "TYPE", kIoq, "sequential|parallel|manual: the queue's dispatch type",
     [](const Options& o) { return std::string(to_string(o.dispatch)); },
     [](std::string_view t, Options& o) { return enum_field(t, kDispatchModes, o.dispatch); }},
    {"--handler", "MODE", kIoq,
     "request|batch: the queue's handler takes one request per call, or whole runs (on_batch) that it "
     "sends on with one send_batch",
     [](const Options& o) { return std::string(to_string(o.handler)); },
     [](std::string_view t, Options& o) { return enum_field(t, kHandlerModes, o.handler); }},
    {"--cores", "N", kIoq, "Runtime cores",
     [](const Options& o) { return std::to_string(o.cores); },
     [](std::string_view t, Options& o) { return uint_field(t, 1, kMaxThreads, o.cores); }},
    {"--queues", "N", kIoq, "Queues per device",
     [](const Options& o) { return std::to_string(o.queues); },
     [](std::string_view t, Options& o) { return uint_field(t, 1, kMaxThreads, o.queues); }},
    {"--forward-ratio", "R", kIoq, "Share of requests forwarded to a second queue (0-1)",
     [](const Options& o) { return format_ratio(o.forward_ratio); },
     [](std::string_view t, Options& o) { return ratio_field(t, o.forward_ratio); }},
    {"--cancel-ratio", "R", kIoq, "Share of requests cancelled by the submitter (0-1)",
     [](const Options& o) { return format_ratio(o.cancel_ratio); },
     [](std::string_view t, Options& o) { return ratio_field(t, o.cancel_ratio); }},
    {"--reserved", "N", kIoq, "Reserved requests per queue for forward progress",
     [](const Options& o) { return std::to_string(o.reserved); },
     [](std::string_view t, Options& o) { return uint_field(t, 0, kMaxDepth, o.reserved); }},
    {"--verify", "MODE", kIoq, "none|crc32c: check the data of each request",
     [](const Options& o) { return std::string(to_string(o.verify)); },
     [](std::string_view t, Options& o) { return enum_field(t, kVerifyModes, o.verify); }},
    {"--lat-sample", "N", kIoq, "Time one request in N for the latency figures (1: every request)",
     [](const Options& o) { return std::to_string(o.lat_sample); },
     [](std::string_view t, Options& o) { return uint_field(t, 1, 1u << 20, o.lat_sample); }},
    {"--prometheus", nullptr, kIoq, "Print the runtime's counters in Prometheus text after the run",
     [](const Options& o) { return std::string(o.prometheus ? "1" : "0"); }, nullptr},
};

bool* flag_of(std::string_view name, Options& o) {
  if (name == "--time_based") return &o.time_based;
  if (name == "--fixedbufs") return &o.fixedbufs;
  if (name == "--registerfiles") return &o.registerfiles;
  if (name == "--norandommap") return &o.norandommap;
  if (name == "--prometheus") return &o.prometheus;
  return nullptr;
}

std::string_view canonical(const Field& f) {
  std::string_view n = f.names;
  return n.substr(0, n.find(','));
}

// Checks across options; "" when the combination is fine.
std::string check_combination(const Options& o) {
  if (o.iodepth_batch_submit > o.iodepth) {
    return fmt::format("--iodepth_batch_submit: must not exceed --iodepth ({})", o.iodepth);
  }
  if (o.bs_bytes > o.size_bytes) {
    return fmt::format("--bs: must not exceed --size ({} bytes)", o.size_bytes);
  }
  if (o.time_based && o.runtime_ns == 0) return "--runtime: must be positive with --time_based";
  if (o.verify != Verify::none) {
    if (o.target != Target::uring) return "--verify: needs --target=uring (only a file keeps data)";
    if (o.bs_bytes < 64) return "--bs: must be at least 64 with --verify (each block carries a header)";
  }
  if (o.target == Target::null) {
    if (o.fixedbufs) return "--fixedbufs: needs --target=uring";
    if (o.registerfiles) return "--registerfiles: needs --target=uring";
  }
  if (o.handler == HandlerMode::batch && o.dispatch == DispatchMode::manual)
    return "--handler=batch: needs --dispatch=sequential or parallel (a manual queue has no handler)";
  if (o.target != Target::uring && !o.filename.empty())
    return "--filename: needs --target=uring (the null target has no file)";
  return {};
}

}  // namespace

std::string_view tool_name() noexcept { return "ioq-bench"; }
std::string_view tool_version() noexcept { return IOQ_BENCH_VERSION; }

std::string_view to_string(RwMode v) noexcept {
  switch (v) {
    case RwMode::read: return "read";
    case RwMode::write: return "write";
    case RwMode::randread: return "randread";
    case RwMode::randwrite: return "randwrite";
    case RwMode::randrw: return "randrw";
  }
  return "?";
}
std::string_view to_string(Target v) noexcept {
  switch (v) {
    case Target::null: return "null";
    case Target::uring: return "uring";
    case Target::uring_nop: return "uring-nop";
  }
  return "?";
}
std::string_view to_string(DispatchMode v) noexcept {
  switch (v) {
    case DispatchMode::sequential: return "sequential";
    case DispatchMode::parallel: return "parallel";
    case DispatchMode::manual: return "manual";
  }
  return "?";
}
std::string_view to_string(HandlerMode v) noexcept {
  switch (v) {
    case HandlerMode::request: return "request";
    case HandlerMode::batch: return "batch";
  }
  return "?";
}
std::string_view to_string(Verify v) noexcept {
  switch (v) {
    case Verify::none: return "none";
    case Verify::crc32c: return "crc32c";
  }
  return "?";
}
std::string_view to_string(OutputFormat v) noexcept {
  switch (v) {
    case OutputFormat::normal: return "normal";
    case OutputFormat::json: return "json";
    case OutputFormat::json_plus: return "json+";
  }
  return "?";
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  long double value = 0;
  bool integral = false;
  std::uint64_t whole = 0;
  std::string_view rest;
  if (!split_number(text, value, integral, whole, rest)) return std::nullopt;
  std::string suffix = lower(rest);
  if (!suffix.empty() && suffix.back() == 'b') suffix.pop_back();  // "4kb", "4KiB", "512b"
  if (!suffix.empty() && suffix.back() == 'i') suffix.pop_back();  // "4ki", "4KiB"
  unsigned power = 0;
  if (suffix.size() > 1) return std::nullopt;
  if (suffix.size() == 1) {
    const std::string_view units = "kmgtp";
    const std::size_t at = units.find(suffix[0]);
    if (at == std::string_view::npos) return std::nullopt;
    power = static_cast<unsigned>(at) + 1;
  } else if (rest.size() > 1 || (rest.size() == 1 && lower(rest) != "b")) {
    return std::nullopt;  // "4i", "4ib"
  }
  std::uint64_t out = 0;
  if (!scale(value, integral, whole, std::uint64_t{1} << (10 * power), out)) return std::nullopt;
  return out;
}

std::optional<std::uint64_t> parse_time_ns(std::string_view text) {
  long double value = 0;
  bool integral = false;
  std::uint64_t whole = 0;
  std::string_view rest;
  if (!split_number(text, value, integral, whole, rest)) return std::nullopt;
  const std::string unit = lower(rest);
  std::uint64_t mult = 0;
  if (unit.empty() || unit == "s" || unit == "sec") mult = 1'000'000'000;
  else if (unit == "ms" || unit == "msec") mult = 1'000'000;
  else if (unit == "us" || unit == "usec") mult = 1'000;
  else if (unit == "m" || unit == "min") mult = 60'000'000'000;
  else if (unit == "h") mult = 3'600'000'000'000;
  else if (unit == "d") mult = 86'400'000'000'000;
  else return std::nullopt;
  std::uint64_t out = 0;
  if (!scale(value, integral, whole, mult, out)) return std::nullopt;
  return out;
}

std::optional<std::vector<double>> parse_percentiles(std::string_view text) {
  std::vector<double> list;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(':', start), text.size());
    const std::string_view item = text.substr(start, end - start);
    double p = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), p);
    if (item.empty() || ec != std::errc{} || ptr != item.data() + item.size() || !(p > 0.0) ||
        p > 100.0) {
      return std::nullopt;
    }
    list.push_back(p);
    start = end + 1;
  }
  if (list.empty() || list.size() > kMaxPercentiles) return std::nullopt;
  std::sort(list.begin(), list.end());  // fio sorts the list too
  return list;
}

std::string format_size(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"", "k", "m", "g", "t", "p"};
  unsigned u = 0;
  while (u + 1 < std::size(kUnits) && bytes != 0 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return fmt::format("{}{}", bytes, kUnits[u]);
}

std::string format_time(std::uint64_t ns) {
  if (ns == 0) return "0";
  if (ns % 1'000'000'000 == 0) return fmt::format("{}s", ns / 1'000'000'000);
  if (ns % 1'000'000 == 0) return fmt::format("{}ms", ns / 1'000'000);
  if (ns % 1'000 == 0) return fmt::format("{}us", ns / 1'000);
  return fmt::format("{}us", static_cast<double>(ns) / 1e3);  // sub-microsecond: fractional us
}

std::vector<std::pair<std::string, std::string>> option_values(const Options& o) {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(std::size(kFields));
  for (const Field& f : kFields) out.emplace_back(std::string(canonical(f).substr(2)), f.show(o));
  return out;
}

int parse_options(int argc, const char* const* argv, Options& out, std::ostream& msg,
                  std::ostream& err) {
  const Options defaults;
  Options o;
  CLI::App app{"ioq-bench: drives ioq with fio's workloads and reports in fio's formats.",
               std::string(tool_name())};
  app.set_version_flag("--version", fmt::format("{} {}", tool_name(), tool_version()));
  app.get_formatter()->column_width(40);

  std::vector<std::string> texts(std::size(kFields));
  std::string ioengine;
  for (std::size_t i = 0; i < std::size(kFields); ++i) {
    const Field& f = kFields[i];
    if (f.type == nullptr) {
      app.add_flag(f.names, *flag_of(canonical(f), o), f.help)->group(f.group);
      continue;
    }
    texts[i] = f.show(defaults);
    app.add_option(f.names, texts[i], f.help)
        ->type_name(f.type)
        ->capture_default_str()
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)  // fio: the last one wins
        ->group(f.group);
  }
  app.add_option("--ioengine", ioengine)->group("");  // hidden; refused below

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    msg << app.help();
    return 0;
  } catch (const CLI::CallForVersion& e) {
    msg << e.what() << '\n';
    return 0;
  } catch (const CLI::ExtrasError&) {
    const std::vector<std::string> extra = app.remaining();
    const std::string first = extra.empty() ? std::string("?") : extra.front();
    if (first.rfind("-", 0) == 0) {
      err << tool_name() << ": " << first.substr(0, first.find('='))
          << ": unknown option (see --help)\n";
    } else {
      err << tool_name() << ": " << first << ": unexpected argument (job files are not read)\n";
    }
    return 2;
  } catch (const CLI::ParseError& e) {
    err << tool_name() << ": " << e.what() << '\n';
    return 2;
  }

  if (app.count("--ioengine") != 0) {
    err << tool_name() << ": --ioengine: not an ioq-bench option; ioq-bench always drives ioq,"
        << " choose its back end with --target=null|uring\n";
    return 2;
  }
  for (std::size_t i = 0; i < std::size(kFields); ++i) {
    const Field& f = kFields[i];
    if (f.apply == nullptr) continue;
    const std::string e = f.apply(texts[i], o);
    if (!e.empty()) {
      err << tool_name() << ": " << canonical(f) << ": " << e << '\n';
      return 2;
    }
  }
  if (const std::string e = check_combination(o); !e.empty()) {
    err << tool_name() << ": " << e << '\n';
    return 2;
  }
  out = std::move(o);
  return -1;
}

int parse_options(int argc, char** argv, Options& out, std::ostream& err) {
  return parse_options(argc, argv, out, std::cout, err);
}

}  // namespace ioq::bench
