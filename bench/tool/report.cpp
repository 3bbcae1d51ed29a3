// ioq-bench's reports: fio's normal text layout and fio's JSON keys.
#include "tool/report.hpp"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iostream>

namespace ioq::bench {
namespace {

using Json = nlohmann::ordered_json;

std::uint64_t timeval_ns(const timeval& tv) {
  return static_cast<std::uint64_t>(tv.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(tv.tv_usec) * 1'000u;
}

std::uint64_t minus(std::uint64_t a, std::uint64_t b) { return a > b ? a - b : 0; }

// fio's num2str, simplified: at most 4 integer digits, then the next unit.
std::string human(double v, double base, const char* const* units, std::size_t nunits) {
  std::size_t u = 0;
  while (v >= 9999.5 && u + 1 < nunits) {
    v /= base;
    ++u;
  }
  if (u == 0 || v >= 99.95) return fmt::format("{:.0f}{}", v, units[u]);
  if (v >= 9.995) return fmt::format("{:.1f}{}", v, units[u]);
  return fmt::format("{:.2f}{}", v, units[u]);
}
constexpr const char* kDecimal[] = {"", "k", "M", "G", "T", "P"};
constexpr const char* kBinaryBytes[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
constexpr const char* kDecimalBytes[] = {"B", "kB", "MB", "GB", "TB", "PB"};

std::string count_str(double v) { return human(v, 1000, kDecimal, std::size(kDecimal)); }
std::string bytes_iec(double v) { return human(v, 1024, kBinaryBytes, std::size(kBinaryBytes)); }
std::string bytes_si(double v) { return human(v, 1000, kDecimalBytes, std::size(kDecimalBytes)); }

// Decimals needed to print every percentile exactly (2..6), as fio's
// percentile_precision does for lists such as 99.995.
int percentile_precision(const std::vector<double>& list) {
  int prec = 2;
  for (double p : list) {
    while (prec < 6) {
      const double scaled = p * std::pow(10.0, prec);
      if (std::fabs(scaled - std::round(scaled)) < 1e-6) break;
      ++prec;
    }
  }
  return prec;
}

void append_percentiles(std::string& out, const LatencyHistogram& h,
                        const std::vector<double>& list) {
  if (list.empty() || h.count() == 0) return;
  std::vector<std::uint64_t> vals;
  vals.reserve(list.size());
  for (double p : list) vals.push_back(h.percentile(p));
  const auto [lo, hi] = std::minmax_element(vals.begin(), vals.end());
  // fio's scaling: usec or msec only when the whole range allows it.
  unsigned steps = 0;
  const char* unit = "nsec";
  if (*lo > 2'000'000 && *hi > 99'999'999) {
    steps = 2;
    unit = "msec";
  } else if (*lo > 2'000 && *hi > 99'999) {
    steps = 1;
    unit = "usec";
  }
  std::uint64_t shown_max = 0;
  for (std::uint64_t& v : vals) {
    for (unsigned s = 0; s < steps; ++s) v = (v + 999) / 1000;  // fio rounds up
    shown_max = std::max(shown_max, v);
  }
  const int prec = percentile_precision(list);
  const int width = std::max(5, static_cast<int>(fmt::formatted_size("{}", shown_max)));
  const int per_line = std::max(1, (80 - 7) / (prec + 10 + width));
  out += fmt::format("    clat percentiles ({}):\n", unit);
  for (std::size_t j = 0; j < vals.size(); ++j) {
    if (j % static_cast<std::size_t>(per_line) == 0) out += "     |";
    const bool last = j + 1 == vals.size();
    const bool eol =
        last || (j % static_cast<std::size_t>(per_line)) == static_cast<std::size_t>(per_line) - 1;
    out += fmt::format(" {:{}.{}f}th=[{:{}}]{}", list[j], prec + 3, prec, vals[j], width,
                       last ? "\n" : (eol ? ",\n" : ","));
  }
}

void append_clat(std::string& out, const LatencyHistogram& h) {
  std::uint64_t mn = h.min();
  std::uint64_t mx = h.max();
  double mean = h.mean();
  double dev = h.stddev();
  const char* unit = "nsec";
  // fio's display_lat: scale only when min, max and stdev all allow it.
  if (mn > 2'000'000 && mx > 99'999'999 && dev > 1'000'000.0) {
    unit = "msec";
    mn /= 1'000'000;
    mx /= 1'000'000;
    mean /= 1e6;
    dev /= 1e6;
  } else if (mn > 2'000 && mx > 99'999 && dev > 1'000.0) {
    unit = "usec";
    mn /= 1'000;
    mx /= 1'000;
    mean /= 1e3;
    dev /= 1e3;
  }
  out += fmt::format("    clat ({}): min={}, max={}, avg={:.2f}, stdev={:.2f}\n", unit, mn, mx,
                     mean, dev);
}

Json lat_json(const LatencyHistogram* h, const std::vector<double>* percentiles, bool bins) {
  Json o;
  o["min"] = h ? h->min() : 0;
  o["max"] = h ? h->max() : 0;
  o["mean"] = h ? h->mean() : 0.0;
  o["stddev"] = h ? h->stddev() : 0.0;
  o["N"] = h ? h->count() : 0;
  if (h && percentiles && h->count() != 0) {
    Json pct = Json::object();
    for (double p : *percentiles) pct[fmt::format("{:f}", p)] = h->percentile(p);  // fio: "%f"
    o["percentile"] = std::move(pct);
    if (bins) {
      Json b = Json::object();
      for (std::size_t i = 0; i < LatencyHistogram::kBuckets; ++i) {
        if (const std::uint64_t c = h->bucket_count(i); c != 0)
          b[std::to_string(LatencyHistogram::bucket_value(i))] = c;
      }
      o["bins"] = std::move(b);
    }
  }
  return o;
}

// One fio direction object; d == nullptr: the all-zero block (trim).
Json dir_json(const JobResult& r, const DirectionResult* d, bool bins) {
  Json o;
  const std::uint64_t bytes = d ? d->bytes : 0;
  const std::uint64_t bw_bytes = d ? r.bw_bytes(*d) : 0;
  o["io_bytes"] = bytes;
  o["io_kbytes"] = bytes >> 10;
  o["bw_bytes"] = bw_bytes;
  o["bw"] = bw_bytes / 1024;  // KiB/s
  o["iops"] = d ? r.iops(*d) : 0.0;
  o["runtime"] = d ? r.runtime_ms(*d) : 0;
  o["total_ios"] = d ? d->ios : 0;
  o["short_ios"] = d ? d->short_ios : 0;
  o["drop_ios"] = 0;
  o["slat_ns"] = lat_json(nullptr, nullptr, false);
  o["clat_ns"] = lat_json(d ? &d->clat : nullptr, &r.options.percentile_list, bins);
  o["lat_ns"] = lat_json(d ? &d->clat : nullptr, nullptr, false);
  // Periodic bandwidth/IOPS samples: not taken (fio's values for no samples).
  o["bw_min"] = 0;
  o["bw_max"] = 0;
  o["bw_agg"] = 0.0;
  o["bw_mean"] = 0.0;
  o["bw_dev"] = 0.0;
  o["bw_samples"] = 0;
  o["iops_min"] = 0;
  o["iops_max"] = 0;
  o["iops_mean"] = 0.0;
  o["iops_stddev"] = 0.0;
  o["iops_samples"] = 0;
  return o;
}

// fio's latency_ns / latency_us / latency_ms tables, percentages of all requests.
void latency_tables(const JobResult& r, Json& job) {
  static constexpr std::uint64_t kEdges[] = {2, 4, 10, 20, 50, 100, 250, 500, 750, 1000, 2000};
  static constexpr const char* kLabels[] = {"2",   "4",   "10",  "20",   "50",   "100",
                                            "250", "500", "750", "1000", "2000", ">=2000"};
  std::uint64_t n[10] = {}, u[10] = {}, m[12] = {};
  auto slot = [](std::uint64_t v, std::size_t edges) {
    std::size_t i = 0;
    while (i < edges && v >= kEdges[i]) ++i;
    return i;
  };
  for (const DirectionResult* d : {&r.read, &r.write}) {
    for (std::size_t i = 0; i < LatencyHistogram::kBuckets; ++i) {
      const std::uint64_t c = d->clat.bucket_count(i);
      if (c == 0) continue;
      const std::uint64_t v = LatencyHistogram::bucket_value(i);
      if (v < 1'000) n[slot(v, 10)] += c;
      else if (v < 1'000'000) u[slot(v / 1'000, 10)] += c;
      else m[slot(v / 1'000'000, 11)] += c;
    }
  }
  const double total = static_cast<double>(r.total_ios());
  auto pct = [total](std::uint64_t c) {
    if (c == 0 || total == 0) return 0.0;
    return std::max(100.0 * static_cast<double>(c) / total, 0.01);  // fio: at least 0.01 if any
  };
  Json jn, ju, jm;
  for (std::size_t i = 0; i < 10; ++i) jn[kLabels[i]] = pct(n[i]);
  for (std::size_t i = 0; i < 10; ++i) ju[kLabels[i]] = pct(u[i]);
  for (std::size_t i = 0; i < 12; ++i) jm[kLabels[i]] = pct(m[i]);
  job["latency_ns"] = std::move(jn);
  job["latency_us"] = std::move(ju);
  job["latency_ms"] = std::move(jm);
}

}  // namespace

CpuUsage CpuUsage::now() noexcept {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return {};
  CpuUsage c;
  c.usr_ns = timeval_ns(ru.ru_utime);
  c.sys_ns = timeval_ns(ru.ru_stime);
  c.ctx_switches = static_cast<std::uint64_t>(ru.ru_nvcsw + ru.ru_nivcsw);
  c.minor_faults = static_cast<std::uint64_t>(ru.ru_minflt);
  c.major_faults = static_cast<std::uint64_t>(ru.ru_majflt);
  return c;
}

CpuUsage operator-(const CpuUsage& end, const CpuUsage& start) noexcept {
  return {minus(end.usr_ns, start.usr_ns), minus(end.sys_ns, start.sys_ns),
          minus(end.ctx_switches, start.ctx_switches), minus(end.minor_faults, start.minor_faults),
          minus(end.major_faults, start.major_faults)};
}

std::uint64_t JobResult::runtime_ms() const noexcept {
  if (runtime_ns == 0) return 0;
  return std::max<std::uint64_t>(1, (runtime_ns + 500'000) / 1'000'000);
}
std::uint64_t JobResult::runtime_ms(const DirectionResult& d) const noexcept {
  return d.ios != 0 ? runtime_ms() : 0;
}
double JobResult::iops(const DirectionResult& d) const noexcept {
  const std::uint64_t ms = runtime_ms(d);
  return ms ? 1000.0 * static_cast<double>(d.ios) / static_cast<double>(ms) : 0.0;
}
std::uint64_t JobResult::bw_bytes(const DirectionResult& d) const noexcept {
  const std::uint64_t ms = runtime_ms(d);
  return ms ? static_cast<std::uint64_t>(static_cast<detail::u128>(d.bytes) * 1000 / ms) : 0;
}
double JobResult::usr_cpu_pct() const noexcept {
  return runtime_ns ? 100.0 * static_cast<double>(cpu.usr_ns) / static_cast<double>(runtime_ns)
                    : 0.0;
}
double JobResult::sys_cpu_pct() const noexcept {
  return runtime_ns ? 100.0 * static_cast<double>(cpu.sys_ns) / static_cast<double>(runtime_ns)
                    : 0.0;
}
double JobResult::cpu_ns_per_io() const noexcept {
  const std::uint64_t n = total_ios();
  return n ? static_cast<double>(cpu.usr_ns + cpu.sys_ns) / static_cast<double>(n) : 0.0;
}
double JobResult::allocations_per_io() const noexcept {
  const std::uint64_t n = total_ios();
  return n ? static_cast<double>(allocations) / static_cast<double>(n) : 0.0;
}

std::string render_normal(const JobResult& r) {
  const Options& o = r.options;
  std::string out = fmt::format(
      "{}: (groupid=0, jobs={}): err={:2}: rw={}, bs={}B, iodepth={}, target={}, dispatch={}, "
      "cores={}, queues={}\n",
      r.job_name(), o.numjobs, r.error, to_string(o.rw), o.bs_bytes, o.iodepth, to_string(o.target),
      to_string(o.dispatch), o.cores, o.queues);
  const std::pair<const char*, const DirectionResult*> dirs[] = {{"read", &r.read},
                                                                 {"write", &r.write}};
  for (const auto& [label, d] : dirs) {
    if (d->ios == 0) continue;
    const double bw = static_cast<double>(r.bw_bytes(*d));
    out += fmt::format("  {}: IOPS={}, BW={}/s ({}/s)({}/{}msec)\n", label, count_str(r.iops(*d)),
                       bytes_iec(bw), bytes_si(bw), bytes_iec(static_cast<double>(d->bytes)),
                       r.runtime_ms(*d));
    append_clat(out, d->clat);
    append_percentiles(out, d->clat, o.percentile_list);
  }
  out += fmt::format("  cpu          : usr={:.2f}%, sys={:.2f}%, ctx={}, majf={}, minf={}\n",
                     r.usr_cpu_pct(), r.sys_cpu_pct(), r.cpu.ctx_switches, r.cpu.major_faults,
                     r.cpu.minor_faults);
  out += fmt::format(
      "  ioq          : cpu={:.1f}ns/req, allocs={:.3f}/req, forwarded={}, cancelled={}, "
      "failed={}, verify_errors={}\n",
      r.cpu_ns_per_io(), r.allocations_per_io(), r.forwarded, r.cancelled, r.failed,
      r.verify_errors);
  if (!r.extra.empty()) {
    std::string line;
    for (const auto& [k, v] : r.extra)
      line += fmt::format("{}{}={}", line.empty() ? "" : ", ", k, v);
    out += fmt::format("  ioq          : {}\n", line);
  }
  out += "\nRun status group 0 (all jobs):\n";
  const std::pair<const char*, const DirectionResult*> group[] = {{"   READ", &r.read},
                                                                  {"  WRITE", &r.write}};
  for (const auto& [label, d] : group) {
    if (d->ios == 0) continue;
    const double bw = static_cast<double>(r.bw_bytes(*d));
    const double io = static_cast<double>(d->bytes);
    out +=
        fmt::format("{}: bw={}/s ({}/s), io={} ({}), run={}-{}msec\n", label, bytes_iec(bw),
                    bytes_si(bw), bytes_iec(io), bytes_si(io), r.runtime_ms(*d), r.runtime_ms(*d));
  }
  return out;
}

Json render_job_json(const JobResult& r, bool bins) {
  Json job;
  job["jobname"] = r.job_name();
  job["groupid"] = 0;
  job["job_start"] = r.start_unix_ms;
  job["error"] = r.error;
  job["eta"] = 0;
  job["elapsed"] = (r.runtime_ns + r.options.ramp_time_ns + 500'000'000) / 1'000'000'000;
  Json opts = Json::object();
  for (auto& [k, v] : option_values(r.options)) opts[k] = v;
  job["job options"] = std::move(opts);
  job["read"] = dir_json(r, &r.read, bins);
  job["write"] = dir_json(r, &r.write, bins);
  job["trim"] = dir_json(r, nullptr, false);
  job["sync"] = Json{{"total_ios", 0}, {"lat_ns", lat_json(nullptr, nullptr, false)}};
  job["job_runtime"] = r.runtime_ms();
  job["usr_cpu"] = r.usr_cpu_pct();
  job["sys_cpu"] = r.sys_cpu_pct();
  job["ctx"] = r.cpu.ctx_switches;
  job["majf"] = r.cpu.major_faults;
  job["minf"] = r.cpu.minor_faults;
  latency_tables(r, job);

  Json ioq;
  ioq["version"] = std::string(tool_version());
  ioq["requests"] = r.total_ios();
  ioq["forwarded"] = r.forwarded;
  ioq["cancelled"] = r.cancelled;
  ioq["failed"] = r.failed;
  ioq["verify_errors"] = r.verify_errors;
  ioq["cpu_ns"] = r.cpu.usr_ns + r.cpu.sys_ns;
  ioq["cpu_ns_per_io"] = r.cpu_ns_per_io();
  ioq["allocations"] = r.allocations;
  ioq["allocations_per_io"] = r.allocations_per_io();
  ioq["runtime_ns"] = r.runtime_ns;
  Json extra = Json::object();
  for (const auto& [k, v] : r.extra) extra[k] = v;
  ioq["extra"] = std::move(extra);
  job["ioq"] = std::move(ioq);
  return job;
}

Json render_json(const JobResult& r, std::chrono::system_clock::time_point now) {
  using namespace std::chrono;
  const auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = system_clock::to_time_t(now);
  std::tm tm{};
  char when[64] = "";
  if (localtime_r(&secs, &tm) != nullptr)
    std::strftime(when, sizeof when, "%a %b %e %H:%M:%S %Y", &tm);
  Json doc;
  doc["fio version"] = fmt::format("{}-{}", tool_name(), tool_version());
  doc["timestamp"] = static_cast<std::int64_t>(secs);
  doc["timestamp_ms"] = static_cast<std::int64_t>(ms);
  doc["time"] = when;  // ctime() layout, as fio
  doc["jobs"] =
      Json::array({render_job_json(r, r.options.output_format == OutputFormat::json_plus)});
  return doc;
}

std::string render(const JobResult& r) {
  if (r.options.output_format == OutputFormat::normal) return render_normal(r);
  return render_json(r).dump(2) + "\n";
}

int write_report(const JobResult& r, std::ostream& err) {
  const std::string text = render(r);
  if (r.options.output.empty()) {
    std::cout << text << std::flush;
    if (!std::cout) {
      err << tool_name() << ": --output: cannot write the report to standard output\n";
      return 1;
    }
    return 0;
  }
  std::ofstream f(r.options.output, std::ios::out | std::ios::trunc);
  f << text;
  f.close();
  if (!f) {
    err << tool_name() << ": --output: cannot write " << r.options.output << '\n';
    return 1;
  }
  return 0;
}

}  // namespace ioq::bench
