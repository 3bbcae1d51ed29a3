// Tests of ioq-bench's reporting layer (bench/tool): the latency histogram, the
// command line, the fio-style reports and the progress line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tool/histogram.hpp"
#include "tool/options.hpp"
#include "tool/random_map.hpp"
#include "tool/progress.hpp"
#include "tool/report.hpp"
#include "tool/verify.hpp"

namespace ioq::bench {
namespace {

using H = LatencyHistogram;

// ------------------------------------------------------------------ histogram

TEST(LatencyHistogram, EmptyReportsZeros) {
  H h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
  EXPECT_EQ(h.stddev(), 0.0);
  EXPECT_EQ(h.percentile(50), 0u);
}

TEST(LatencyHistogram, ValuesBelow128AreExact) {
  for (std::uint64_t v = 0; v < 128; ++v) {
    EXPECT_EQ(H::bucket_index(v), v);
    EXPECT_EQ(H::bucket_value(v), v);
    H h;
    h.record(v);
    for (double p : {0.0, 1.0, 50.0, 99.99, 100.0}) EXPECT_EQ(h.percentile(p), v) << v << " p" << p;
  }
  H h;
  for (std::uint64_t v = 0; v < 64; ++v) h.record(v);  // 64 values: p-th percentile is exact
  EXPECT_EQ(h.percentile(50), 31u);                    // 32nd smallest: running count reaches 32
  EXPECT_EQ(h.percentile(100), 63u);
}

TEST(LatencyHistogram, RecordingNEqualValuesIsRecordingEachOnce) {
  // ioq-bench records a batch submitted and completed together in one call.
  H batched, single;
  const std::pair<std::uint64_t, std::uint64_t> runs[] = {{700, 32}, {1496, 5}, {90, 1}, {123456789, 7}, {1496, 3}};
  for (const auto& [v, n] : runs) {
    batched.record(v, n);
    for (std::uint64_t i = 0; i < n; ++i) single.record(v);
  }
  EXPECT_EQ(batched.count(), 48u);
  EXPECT_EQ(batched.count(), single.count());
  EXPECT_EQ(batched.min(), 90u);
  EXPECT_EQ(batched.max(), 123456789u);
  EXPECT_EQ(batched.mean(), single.mean());
  EXPECT_EQ(batched.stddev(), single.stddev());
  for (double p : {1.0, 50.0, 66.0, 90.0, 99.0, 100.0}) EXPECT_EQ(batched.percentile(p), single.percentile(p)) << p;
}

TEST(LatencyHistogram, BucketsTileTheWholeRange) {
  EXPECT_EQ(H::kBuckets, 3776u);
  EXPECT_EQ(H::bucket_low(0), 0u);
  for (std::size_t i = 0; i + 1 < H::kBuckets; ++i) {
    ASSERT_EQ(H::bucket_high(i) + 1, H::bucket_low(i + 1)) << i;
    ASSERT_EQ(H::bucket_index(H::bucket_low(i)), i);
    ASSERT_EQ(H::bucket_index(H::bucket_high(i)), i);
    ASSERT_GE(H::bucket_value(i), H::bucket_low(i));
    ASSERT_LE(H::bucket_value(i), H::bucket_high(i));
  }
  EXPECT_EQ(H::bucket_high(H::kBuckets - 1), ~std::uint64_t{0});
  // At least 2^40 ns (fio needs 2^34 and clamps above; nothing is clamped here).
  EXPECT_LT(H::bucket_index(std::uint64_t{1} << 40), H::kBuckets - 1);
}

TEST(LatencyHistogram, RelativeErrorBoundAbove128) {
  std::mt19937_64 rng(42);
  std::vector<std::uint64_t> values;
  for (unsigned b = 7; b < 64; ++b) {  // every power of two and its neighbours
    const std::uint64_t p = std::uint64_t{1} << b;
    values.insert(values.end(), {p - 1, p, p + 1, p + p / 2});
  }
  for (int i = 0; i < 200000; ++i) {
    const unsigned bits = 8 + static_cast<unsigned>(rng() % 56);
    values.push_back((rng() >> (64 - bits)) | 128);
  }
  for (std::uint64_t v : values) {
    const std::size_t i = H::bucket_index(v);
    ASSERT_LT(i, H::kBuckets);
    ASSERT_LE(H::bucket_low(i), v);
    ASSERT_GE(H::bucket_high(i), v);
    const long double err =
        std::fabs(static_cast<long double>(H::bucket_value(i)) - static_cast<long double>(v));
    ASSERT_LE(err / static_cast<long double>(v), 1.0L / 128) << v;  // midpoint: half of 1/64
    ASSERT_LE(static_cast<long double>(H::bucket_high(i) - H::bucket_low(i) + 1),
              static_cast<long double>(H::bucket_low(i)) / 64)
        << v;
  }
}

std::vector<std::uint64_t> log_uniform(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> exp(std::log(20.0), std::log(2e7));  // 20 ns .. 20 ms
  std::vector<std::uint64_t> v(n);
  for (auto& x : v) x = static_cast<std::uint64_t>(std::exp(exp(rng)));
  return v;
}

TEST(LatencyHistogram, PercentilesMatchSortedReference) {
  for (std::size_t n : {1u, 7u, 1000u, 100000u}) {
    std::vector<std::uint64_t> v = log_uniform(n, n);
    H h;
    for (std::uint64_t x : v) h.record(x);
    std::sort(v.begin(), v.end());
    std::vector<double> ps(kDefaultPercentiles.begin(), kDefaultPercentiles.end());
    ps.insert(ps.end(), {0.0, 0.5, 33.3, 100.0});
    for (double p : ps) {
      // fio's rule: the first bucket where the running count reaches p/100*n,
      // i.e. the bucket of the k-th smallest value, k = ceil(p/100*n) (at least 1).
      const long double target = static_cast<long double>(p) / 100.0L * static_cast<long double>(n);
      const std::size_t k = std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(target)));
      const std::uint64_t ref = v[k - 1];
      const std::uint64_t got = h.percentile(p);
      EXPECT_EQ(got, H::bucket_value(H::bucket_index(ref))) << "n=" << n << " p=" << p;
      EXPECT_LE(std::fabs(static_cast<double>(got) - static_cast<double>(ref)),
                static_cast<double>(ref) / 128.0 + 1e-9)
          << "n=" << n << " p=" << p;
    }
  }
}

TEST(LatencyHistogram, MergeEqualsRecordingAllInOne) {
  const std::vector<std::uint64_t> v = log_uniform(50000, 7);
  H all;
  H parts[4];
  for (std::size_t i = 0; i < v.size(); ++i) {
    all.record(v[i]);
    parts[i % 4].record(v[i]);
  }
  H merged;
  for (const H& p : parts) merged.merge(p);
  merged.merge(H{});  // merging an empty histogram changes nothing
  EXPECT_EQ(merged.count(), all.count());
  EXPECT_EQ(merged.min(), all.min());
  EXPECT_EQ(merged.max(), all.max());
  EXPECT_EQ(merged.mean(), all.mean());  // exact integer sums: bit-identical
  EXPECT_EQ(merged.stddev(), all.stddev());
  for (std::size_t i = 0; i < H::kBuckets; ++i)
    ASSERT_EQ(merged.bucket_count(i), all.bucket_count(i));
  for (double p : kDefaultPercentiles) EXPECT_EQ(merged.percentile(p), all.percentile(p));
}

TEST(LatencyHistogram, MinMaxMeanStddevAreExact) {
  const std::vector<std::uint64_t> v = log_uniform(10000, 3);
  H h;
  for (std::uint64_t x : v) h.record(x);
  double sum = 0;
  for (std::uint64_t x : v) sum += static_cast<double>(x);
  const double mean = sum / static_cast<double>(v.size());
  double m2 = 0;
  for (std::uint64_t x : v) m2 += (static_cast<double>(x) - mean) * (static_cast<double>(x) - mean);
  const double sd = std::sqrt(m2 / static_cast<double>(v.size() - 1));
  EXPECT_EQ(h.min(), *std::min_element(v.begin(), v.end()));
  EXPECT_EQ(h.max(), *std::max_element(v.begin(), v.end()));
  EXPECT_NEAR(h.mean(), mean, mean * 1e-12);
  EXPECT_NEAR(h.stddev(), sd, sd * 1e-9);

  H one;
  one.record(500);
  EXPECT_EQ(one.stddev(), 0.0);  // n - 1 = 0: fio reports 0
  EXPECT_EQ(one.mean(), 500.0);

  // A large mean with a small spread keeps its precision: 1e12 + 0..999.
  H big;
  for (std::uint64_t i = 0; i < 1000; ++i) big.record(1'000'000'000'000ull + i);
  EXPECT_DOUBLE_EQ(big.mean(), 1'000'000'000'499.5);
  EXPECT_NEAR(big.stddev(), std::sqrt(1000.0 * 1001.0 / 12.0), 1e-6);  // sample sd of 0..999
}

TEST(LatencyHistogram, HugeValuesAreNotClamped) {
  H h;
  const std::uint64_t huge = ~std::uint64_t{0} - 12345;
  h.record(huge);
  h.record(std::uint64_t{1} << 50);
  EXPECT_EQ(h.max(), huge);
  const double got = static_cast<double>(h.percentile(100));
  EXPECT_NEAR(got, static_cast<double>(huge), static_cast<double>(huge) / 128);
  EXPECT_NEAR(static_cast<double>(h.percentile(50)), std::ldexp(1.0, 50),
              std::ldexp(1.0, 50) / 128);
}

TEST(LatencyHistogram, ResetForgetsEverything) {
  H h;
  for (std::uint64_t v : {5u, 500u, 50000u}) h.record(v);
  h.reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  for (std::size_t i = 0; i < H::kBuckets; ++i) ASSERT_EQ(h.bucket_count(i), 0u);
  h.record(7);
  EXPECT_EQ(h.min(), 7u);
  EXPECT_EQ(h.percentile(50), 7u);
}

// -------------------------------------------------------------------- options

struct Parsed {
  int rc;
  Options opts;
  std::string msg;
  std::string err;
};

Parsed parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ioq-bench");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  Parsed p;
  p.opts.name = "untouched";
  std::ostringstream msg, err;
  p.rc = parse_options(static_cast<int>(args.size()), argv.data(), p.opts, msg, err);
  p.msg = msg.str();
  p.err = err.str();
  return p;
}

// Random offsets (the default, fio's random map): each pass of n draws
// visits every block exactly once, pass after pass, for any n; and while the
// map is still sparse (the first half of a pass) the order is scattered, not
// a walk. (Late in a pass a draw often lands in a long used run and takes the
// free block after it, as fio's map does.)
TEST(RandomBlockMap, EachPassVisitsEveryBlockOnce) {
  for (const std::uint64_t n : {1ull, 2ull, 3ull, 1000ull, 4096ull, 262144ull, 1000003ull}) {
    RandomBlockMap perm;
    perm.init(n, 0x1234567ull * n);
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<bool> seen(n, false);
      std::uint64_t ascending = 0, prev = 0;
      for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint64_t b = perm.next();
        ASSERT_LT(b, n);
        ASSERT_FALSE(seen[b]) << "block " << b << " twice in one pass of " << n;
        seen[b] = true;
        if (i > 0 && i < n / 2 && b == prev + 1) ++ascending;
        prev = b;
      }
      if (n >= 1000) {
        EXPECT_LT(ascending, n / 100) << "consecutive draws mostly walk the blocks in order";
      }
    }
  }
}

TEST(Options, DefaultsAreFiosAndTheBriefs) {
  const Parsed p = parse({});
  ASSERT_EQ(p.rc, -1) << p.err;
  EXPECT_EQ(p.opts, Options{});
  const Options& o = p.opts;
  EXPECT_EQ(o.rw, RwMode::read);
  EXPECT_EQ(o.bs_bytes, 4096u);
  EXPECT_EQ(o.iodepth, 32u);
  EXPECT_EQ(o.iodepth_batch_submit, 0u) << "ioq-bench batches to the whole iodepth by default";
  EXPECT_EQ(o.batch_submit(), 32u);
  EXPECT_EQ(o.lat_sample, 1u) << "every request timed by default";
  EXPECT_EQ(o.numjobs, 1u);
  EXPECT_EQ(o.runtime_ns, 3'000'000'000u);
  EXPECT_FALSE(o.time_based);
  EXPECT_EQ(o.ramp_time_ns, 0u);
  EXPECT_EQ(o.size_bytes, 64u << 20);
  EXPECT_TRUE(o.filename.empty());
  EXPECT_TRUE(o.direct);
  EXPECT_EQ(o.percentile_list,
            std::vector<double>(kDefaultPercentiles.begin(), kDefaultPercentiles.end()));
  EXPECT_EQ(o.output_format, OutputFormat::normal);
  EXPECT_EQ(o.name, "ioq");
  EXPECT_EQ(o.target, Target::null);
  EXPECT_EQ(o.dispatch, DispatchMode::parallel);
  EXPECT_EQ(o.cores, 1u);
  EXPECT_EQ(o.queues, 1u);
  EXPECT_EQ(o.forward_ratio, 0.0);
  EXPECT_EQ(o.cancel_ratio, 0.0);
  EXPECT_EQ(o.reserved, 0u);
  EXPECT_EQ(o.verify, Verify::none);
  EXPECT_FALSE(o.prometheus);
  EXPECT_TRUE(p.err.empty());
}

TEST(Options, HelpShowsDefaultsAndVersionPrints) {
  const Parsed h = parse({"--help"});
  EXPECT_EQ(h.rc, 0);
  EXPECT_EQ(h.opts.name, "untouched");
  for (const char* s : {"--bs SIZE=4k", "--iodepth N=32", "--rw MODE=read", "--runtime TIME=3s",
                        "--size SIZE=64m", "--target TARGET=null", "--dispatch TYPE=parallel",
                        "--percentile_list P:P:...=1:5:10:20:30:40:50:60:70:80:90:95:99:99.5",
                        "--output-format FORMAT=normal", "--direct 0|1=1", "--time_based",
                        "--prometheus", "fio options", "ioq options"}) {
    EXPECT_NE(h.msg.find(s), std::string::npos) << s << "\n" << h.msg;
  }
  EXPECT_EQ(h.msg.find("--ioengine"), std::string::npos);  // hidden
  const Parsed v = parse({"--version"});
  EXPECT_EQ(v.rc, 0);
  EXPECT_EQ(v.msg.rfind("ioq-bench ", 0), 0u) << v.msg;
  EXPECT_NE(v.msg.find(std::string(tool_version())), std::string::npos);
}

TEST(Options, SizesTakeFioSuffixes) {
  const std::pair<const char*, std::uint64_t> cases[] = {
      {"512", 512},      {"512b", 512},      {"4k", 4096},       {"4K", 4096},
      {"4kb", 4096},     {"4KiB", 4096},     {"4ki", 4096},      {"1.5k", 1536},
      {"1m", 1u << 20},  {"64M", 64u << 20}, {"2g", 2ull << 30}, {"1t", 1ull << 40},
      {"1p", 1ull << 50}};
  for (const auto& [text, want] : cases) {
    EXPECT_EQ(parse_size(text), want) << text;
    const Parsed p = parse({std::string("--size=") + text, "--bs=1"});
    ASSERT_EQ(p.rc, -1) << text << ": " << p.err;
    EXPECT_EQ(p.opts.size_bytes, want) << text;
  }
  for (const char* bad : {"", "k", "4x", "4kk", "4ib", "4i", "1.3", "-4k", "4 k", "99999999999p"}) {
    EXPECT_FALSE(parse_size(bad).has_value()) << bad;
  }
  EXPECT_EQ(parse({"--bs", "8k"}).opts.bs_bytes, 8192u);
  EXPECT_EQ(parse({"--bs=4k", "--bs=16k"}).opts.bs_bytes, 16384u);  // the last one wins, as fio
}

TEST(Options, TimesTakeFioSuffixes) {
  const std::pair<const char*, std::uint64_t> cases[] = {
      {"3", 3'000'000'000},       {"3s", 3'000'000'000},
      {"1.5s", 1'500'000'000},    {"500ms", 500'000'000},
      {"500msec", 500'000'000},   {"250us", 250'000},
      {"2m", 120'000'000'000},    {"1h", 3'600'000'000'000},
      {"1d", 86'400'000'000'000}, {"0", 0}};
  for (const auto& [text, want] : cases) {
    EXPECT_EQ(parse_time_ns(text), want) << text;
    const Parsed p = parse({std::string("--runtime=") + text, std::string("--ramp_time=") + text});
    ASSERT_EQ(p.rc, -1) << text << ": " << p.err;
    EXPECT_EQ(p.opts.runtime_ns, want);
    EXPECT_EQ(p.opts.ramp_time_ns, want);
  }
  for (const char* bad : {"", "s", "3x", "3ns", "-1", "1.2.3"}) {
    EXPECT_FALSE(parse_time_ns(bad).has_value()) << bad;
  }
}

TEST(Options, EveryEnumValueParses) {
  for (RwMode v :
       {RwMode::read, RwMode::write, RwMode::randread, RwMode::randwrite, RwMode::randrw})
    EXPECT_EQ(parse({"--rw=" + std::string(to_string(v))}).opts.rw, v);
  for (Target v : {Target::null, Target::uring, Target::uring_nop})
    EXPECT_EQ(parse({"--target=" + std::string(to_string(v))}).opts.target, v);
  for (DispatchMode v : {DispatchMode::sequential, DispatchMode::parallel, DispatchMode::manual})
    EXPECT_EQ(parse({"--dispatch=" + std::string(to_string(v))}).opts.dispatch, v);
  for (Verify v : {Verify::none, Verify::crc32c})
    EXPECT_EQ(parse({"--target=uring", "--verify=" + std::string(to_string(v))}).opts.verify, v);
  for (OutputFormat v : {OutputFormat::normal, OutputFormat::json, OutputFormat::json_plus})
    EXPECT_EQ(parse({"--output-format=" + std::string(to_string(v))}).opts.output_format, v);
}

TEST(Options, OtherValuesAndFlags) {
  const Parsed p =
      parse({"--iodepth=128", "--iodepth_batch=0", "--numjobs=4", "--time_based", "--direct=0",
             "--percentile_list=99.9:50:99", "--output=/tmp/r.json", "--name=job1", "--cores=2",
             "--queues=3", "--forward-ratio=0.25", "--cancel-ratio=1", "--reserved=16",
             "--prometheus", "--rwmixread=70", "--target=uring", "--fixedbufs", "--registerfiles=1",
             "--filename=/dev/nullb0", "--norandommap", "--handler=batch"});
  ASSERT_EQ(p.rc, -1) << p.err;
  const Options& o = p.opts;
  EXPECT_EQ(o.iodepth, 128u);
  EXPECT_EQ(o.iodepth_batch_submit, 0u);
  EXPECT_EQ(o.batch_submit(), 128u);  // 0 means the whole iodepth
  EXPECT_EQ(o.numjobs, 4u);
  EXPECT_TRUE(o.time_based);
  EXPECT_FALSE(o.direct);
  EXPECT_EQ(o.percentile_list, (std::vector<double>{50, 99, 99.9}));  // sorted, as fio
  EXPECT_EQ(o.output, "/tmp/r.json");
  EXPECT_EQ(o.name, "job1");
  EXPECT_EQ(o.cores, 2u);
  EXPECT_EQ(o.queues, 3u);
  EXPECT_EQ(o.forward_ratio, 0.25);
  EXPECT_EQ(o.cancel_ratio, 1.0);
  EXPECT_EQ(o.reserved, 16u);
  EXPECT_TRUE(o.prometheus);
  EXPECT_EQ(o.rwmixread, 70u);
  EXPECT_TRUE(o.fixedbufs);
  EXPECT_TRUE(o.registerfiles);
  EXPECT_EQ(o.filename, "/dev/nullb0");
  EXPECT_TRUE(o.norandommap);
  EXPECT_EQ(o.handler, HandlerMode::batch);
  EXPECT_FALSE(parse({"--time_based=0"}).opts.time_based);
}

TEST(Options, BadValuesExitTwoAndNameTheOption) {
  std::string many = "--percentile_list=1";  // 21 entries, fio allows 20
  for (int i = 2; i <= 21; ++i) many.append(":").append(std::to_string(i));
  const std::pair<std::vector<std::string>, const char*> cases[] = {
      {{"--iodepth=0"}, "--iodepth: must be at least 1"},
      {{"--iodepth=abc"}, "--iodepth"},
      {{"--iodepth=-1"}, "--iodepth: must be at least 1"},
      {{"--iodepth=99999999999999999999"}, "--iodepth"},
      {{"--iodepth"}, "--iodepth"},
      {{"--numjobs=0"}, "--numjobs"},
      {{"--bs=0"}, "--bs"},
      {{"--bs=4x"}, "--bs"},
      {{"--size=lots"}, "--size"},
      {{"--runtime=abc"}, "--runtime"},
      {{"--ramp_time=1q"}, "--ramp_time"},
      {{"--direct=2"}, "--direct"},
      {{"--rwmixread=101"}, "--rwmixread"},
      {{"--rw=readwrite"},
       "--rw: 'readwrite' is not one of read, write, randread, randwrite, randrw"},
      {{"--target=spdk"}, "--target"},
      {{"--dispatch=fifo"}, "--dispatch"},
      {{"--verify=md5"}, "--verify"},
      {{"--verify=crc32c"}, "--verify"},
      {{"--target=uring", "--verify=crc32c", "--bs=32"}, "--bs"},
      {{"--output-format=terse"}, "--output-format"},
      {{"--cores=0"}, "--cores"},
      {{"--queues=0"}, "--queues"},
      {{"--reserved=-1"}, "--reserved"},
      {{"--forward-ratio=1.5"}, "--forward-ratio: must be between 0 and 1"},
      {{"--cancel-ratio=-0.1"}, "--cancel-ratio"},
      {{"--cancel-ratio=nan"}, "--cancel-ratio"},
      {{"--percentile_list=50:abc"}, "--percentile_list"},
      {{"--percentile_list=0"}, "--percentile_list"},
      {{"--percentile_list=101"}, "--percentile_list"},
      {{"--percentile_list=50::99"}, "--percentile_list"},
      {{many}, "--percentile_list"},
      {{"--name="}, "--name"},
      {{"--time_based=maybe"}, "--time_based"},
      {{"--foo=1"}, "--foo: unknown option"},
      {{"jobfile.fio"}, "jobfile.fio"},
      {{"--ioengine=io_uring"}, "--ioengine: not an ioq-bench option"},
      // combinations
      {{"--iodepth=4", "--iodepth_batch_submit=8"},
       "--iodepth_batch_submit: must not exceed --iodepth"},
      {{"--bs=1m", "--size=4k"}, "--bs: must not exceed --size"},
      {{"--time_based", "--runtime=0"}, "--runtime: must be positive with --time_based"},
      {{"--fixedbufs"}, "--fixedbufs: needs --target=uring"},
      {{"--registerfiles"}, "--registerfiles: needs --target=uring"},
      {{"--filename=/tmp/f"}, "--filename: needs --target=uring"},
  };
  for (const auto& [args, want] : cases) {
    const Parsed p = parse(args);
    EXPECT_EQ(p.rc, 2) << args[0];
    EXPECT_EQ(p.opts.name, "untouched") << args[0];
    EXPECT_EQ(p.err.rfind("ioq-bench: ", 0), 0u) << p.err;
    EXPECT_NE(p.err.find(want), std::string::npos) << "got: " << p.err << "want: " << want;
    EXPECT_EQ(std::count(p.err.begin(), p.err.end(), '\n'), 1) << p.err;
  }
}

TEST(Options, OptionValuesParseBackToTheSameOptions) {
  Options o;
  o.name = "mixed";
  o.rw = RwMode::randrw;
  o.rwmixread = 30;
  o.bs_bytes = 12288;
  o.iodepth = 64;
  o.iodepth_batch_submit = 16;
  o.numjobs = 2;
  o.runtime_ns = 1'500'000'000;
  o.time_based = true;
  o.ramp_time_ns = 250'000;
  o.size_bytes = 3ull << 30;
  o.filename = "/tmp/ioq-bench.dat";
  o.direct = false;
  o.fixedbufs = true;
  o.registerfiles = true;
  o.percentile_list = {50, 99.995};
  o.output_format = OutputFormat::json_plus;
  o.output = "out.json";
  o.target = Target::uring;
  o.dispatch = DispatchMode::manual;
  o.cores = 4;
  o.queues = 2;
  o.forward_ratio = 0.125;
  o.cancel_ratio = 0.01;
  o.reserved = 8;
  o.verify = Verify::crc32c;
  o.prometheus = true;
  std::vector<std::string> args;
  for (const auto& [k, v] : option_values(o)) args.push_back("--" + k + "=" + v);
  const Parsed p = parse(args);
  ASSERT_EQ(p.rc, -1) << p.err;
  EXPECT_EQ(p.opts, o);
  EXPECT_EQ(format_size(12288), "12k");
  EXPECT_EQ(format_time(1'500'000'000), "1500ms");
}

// --------------------------------------------------------------------- report

JobResult sample_result(std::size_t n) {
  JobResult r;
  r.options.rw = RwMode::randread;
  r.read.ios = n;
  r.read.bytes = n * r.options.bs_bytes;
  for (std::uint64_t x : log_uniform(n, 11)) r.read.clat.record(x);
  r.runtime_ns = 2'000'400'000;  // 2000.4 ms -> "runtime": 2000
  r.start_unix_ms = 1'700'000'000'000;
  r.cpu.usr_ns = 1'000'200'000;
  r.cpu.sys_ns = 500'100'000;
  r.cpu.ctx_switches = 12;
  r.cpu.minor_faults = 345;
  r.forwarded = 10;
  r.cancelled = 3;
  r.allocations = n / 10;
  r.extra = {{"ring_full_spins", 42.0}};
  return r;
}

bool has_keys(const nlohmann::ordered_json& o, std::initializer_list<const char*> keys) {
  bool ok = true;
  for (const char* k : keys) {
    if (!o.contains(k)) {
      ADD_FAILURE() << "missing key \"" << k << "\" in " << o.dump().substr(0, 200);
      ok = false;
    }
  }
  return ok;
}

TEST(Report, JsonHasFiosKeysAndConsistentNumbers) {
  const std::size_t n = 100000;
  const JobResult r = sample_result(n);
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'123));
  const nlohmann::ordered_json doc = render_json(r, now);
  ASSERT_TRUE(has_keys(doc, {"fio version", "timestamp", "timestamp_ms", "time", "jobs"}));
  EXPECT_EQ(doc.begin().key(), "fio version");  // fio's key order
  EXPECT_EQ(doc["timestamp"], 1'700'000'123);
  EXPECT_EQ(doc["timestamp_ms"], 1'700'000'123'000);
  ASSERT_EQ(doc["jobs"].size(), 1u);
  const auto& job = doc["jobs"][0];
  ASSERT_TRUE(has_keys(job, {"jobname", "groupid", "job_start", "error", "job options", "read",
                             "write", "trim", "sync", "job_runtime", "usr_cpu", "sys_cpu", "ctx",
                             "majf", "minf", "latency_ns", "latency_us", "latency_ms", "ioq"}));
  EXPECT_EQ(job["jobname"], "ioq");
  EXPECT_EQ(job["groupid"], 0);
  EXPECT_EQ(job["error"], 0);
  EXPECT_EQ(job["job options"]["rw"], "randread");
  EXPECT_EQ(job["job options"]["bs"], "4k");
  EXPECT_EQ(job["job options"]["iodepth"], "32");

  for (const char* dir : {"read", "write", "trim"}) {
    ASSERT_TRUE(
        has_keys(job[dir],
                 {"io_bytes",  "io_kbytes", "bw_bytes",  "bw",          "iops",        "runtime",
                  "total_ios", "short_ios", "drop_ios",  "slat_ns",     "clat_ns",     "lat_ns",
                  "bw_min",    "bw_max",    "bw_agg",    "bw_mean",     "bw_dev",      "bw_samples",
                  "iops_min",  "iops_max",  "iops_mean", "iops_stddev", "iops_samples"}));
    for (const char* lat : {"slat_ns", "clat_ns", "lat_ns"})
      ASSERT_TRUE(has_keys(job[dir][lat], {"min", "max", "mean", "stddev", "N"}));
  }
  const auto& rd = job["read"];
  const std::uint64_t runtime = rd["runtime"];
  EXPECT_EQ(runtime, 2000u);
  EXPECT_EQ(rd["total_ios"], n);
  EXPECT_EQ(rd["io_bytes"], n * 4096);
  EXPECT_EQ(rd["io_kbytes"], n * 4);
  EXPECT_DOUBLE_EQ(rd["iops"].get<double>(), 1000.0 * static_cast<double>(n) / 2000.0);
  EXPECT_EQ(rd["bw_bytes"], 1000 * n * 4096 / 2000);
  EXPECT_EQ(rd["bw"], rd["bw_bytes"].get<std::uint64_t>() / 1024);
  EXPECT_EQ(job["job_runtime"], 2000);

  const auto& clat = rd["clat_ns"];
  EXPECT_EQ(clat["N"], n);
  EXPECT_EQ(clat["min"], r.read.clat.min());
  EXPECT_EQ(clat["max"], r.read.clat.max());
  EXPECT_DOUBLE_EQ(clat["mean"].get<double>(), r.read.clat.mean());
  EXPECT_DOUBLE_EQ(clat["stddev"].get<double>(), r.read.clat.stddev());
  ASSERT_TRUE(clat.contains("percentile"));
  EXPECT_EQ(clat["percentile"].size(), kDefaultPercentiles.size());
  for (const char* key : {"1.000000", "50.000000", "99.500000", "99.990000"})
    ASSERT_TRUE(clat["percentile"].contains(key)) << key;
  for (double p : kDefaultPercentiles) {
    char key[32];
    std::snprintf(key, sizeof key, "%f", p);  // fio's spelling
    EXPECT_EQ(clat["percentile"][key], r.read.clat.percentile(p)) << key;
  }
  EXPECT_FALSE(clat.contains("bins"));  // json, not json+
  EXPECT_EQ(rd["lat_ns"]["N"], n);
  EXPECT_FALSE(rd["lat_ns"].contains("percentile"));
  EXPECT_EQ(rd["slat_ns"]["N"], 0);

  const auto& wr = job["write"];  // a read job: zeros, no percentiles
  EXPECT_EQ(wr["total_ios"], 0);
  EXPECT_EQ(wr["runtime"], 0);
  EXPECT_EQ(wr["iops"], 0.0);
  EXPECT_FALSE(wr["clat_ns"].contains("percentile"));
  EXPECT_EQ(job["trim"]["io_bytes"], 0);
  EXPECT_EQ(job["sync"]["total_ios"], 0);

  EXPECT_NEAR(job["usr_cpu"].get<double>(), 100.0 * 1'000'200'000 / 2'000'400'000, 1e-9);
  EXPECT_NEAR(job["sys_cpu"].get<double>(), 100.0 * 500'100'000 / 2'000'400'000, 1e-9);
  EXPECT_EQ(job["ctx"], 12);
  EXPECT_EQ(job["minf"], 345);

  double total_pct = 0;
  for (const char* t : {"latency_ns", "latency_us", "latency_ms"})
    for (const auto& [k, v] : job[t].items()) total_pct += v.get<double>();
  EXPECT_NEAR(total_pct, 100.0, 0.2);
  EXPECT_EQ(job["latency_ms"].size(), 12u);
  EXPECT_TRUE(job["latency_ms"].contains(">=2000"));

  const auto& ioq = job["ioq"];
  EXPECT_EQ(ioq["requests"], n);
  EXPECT_EQ(ioq["forwarded"], 10);
  EXPECT_EQ(ioq["cancelled"], 3);
  EXPECT_NEAR(ioq["cpu_ns_per_io"].get<double>(), 1'500'300'000.0 / n, 1e-9);
  EXPECT_NEAR(ioq["allocations_per_io"].get<double>(), 0.1, 1e-12);
  EXPECT_EQ(ioq["extra"]["ring_full_spins"], 42.0);

  // The document is valid JSON and converts to nlohmann::json.
  const nlohmann::json plain = render_json(r, now);
  EXPECT_EQ(plain["jobs"][0]["read"]["total_ios"], n);
  EXPECT_EQ(nlohmann::json::parse(doc.dump()), plain);
}

TEST(Report, JsonPlusAddsBinsThatSumToN) {
  JobResult r = sample_result(5000);
  r.options.output_format = OutputFormat::json_plus;
  const auto doc = nlohmann::json::parse(render(r));
  const auto& bins = doc["jobs"][0]["read"]["clat_ns"]["bins"];
  std::uint64_t sum = 0;
  for (const auto& [k, v] : bins.items()) {
    const std::uint64_t value = std::stoull(k);
    EXPECT_EQ(H::bucket_value(H::bucket_index(value)), value);
    sum += v.get<std::uint64_t>();
  }
  EXPECT_EQ(sum, 5000u);
}

TEST(Report, NormalOutputLooksLikeFio) {
  const JobResult r = sample_result(100000);
  const std::string s = render_normal(r);
  for (const char* want :
       {"ioq: (groupid=0, jobs=1): err= 0: rw=randread, bs=4096B, iodepth=32",
        "  read: IOPS=50.0k, BW=195MiB/s (205MB/s)(391MiB/2000msec)\n", "    clat (",
        "clat percentiles (", " 1.00th=[", "99.99th=[",
        "  cpu          : usr=50.00%, sys=25.00%, ctx=12, majf=0, minf=345\n",
        "  ioq          : cpu=15003.0ns/req, allocs=0.100/req, forwarded=10",
        "  ioq          : ring_full_spins=42\n", "Run status group 0 (all jobs):",
        "   READ: bw=195MiB/s (205MB/s), io=391MiB (410MB), run=2000-2000msec"}) {
    EXPECT_NE(s.find(want), std::string::npos) << "want: " << want << "\n" << s;
  }
  EXPECT_EQ(s.find("write:"), std::string::npos);
  // fio's 80-column percentile layout: a few entries a line, every percentile once.
  std::istringstream lines(s);
  std::string line;
  std::size_t entries = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("     |", 0) != 0) continue;
    const auto here = static_cast<std::size_t>(std::count(line.begin(), line.end(), '['));
    EXPECT_LE(here, 4u) << line;
    EXPECT_LE(line.size(), 80u) << line;
    entries += here;
  }
  EXPECT_EQ(entries, kDefaultPercentiles.size());
}

TEST(Report, WriteReportToFileAndFailure) {
  JobResult r = sample_result(1000);
  r.options.output_format = OutputFormat::json;
  char path[] = "/tmp/ioq_bench_tool_test_XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  r.options.output = path;
  std::ostringstream err;
  ASSERT_EQ(write_report(r, err), 0) << err.str();
  std::ifstream in(path);
  const nlohmann::json doc = nlohmann::json::parse(in);
  EXPECT_EQ(doc["jobs"][0]["read"]["total_ios"], 1000);
  ::unlink(path);

  r.options.output = "/nonexistent-dir/ioq/report.json";
  std::ostringstream err2;
  EXPECT_EQ(write_report(r, err2), 1);
  EXPECT_NE(err2.str().find("ioq-bench: --output: cannot write /nonexistent-dir/ioq/report.json"),
            std::string::npos)
      << err2.str();
}

TEST(Report, CpuUsageAdvancesWithWork) {
  const CpuUsage start = CpuUsage::now();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  volatile std::uint64_t sink = 0;
  CpuUsage d;
  do {
    for (int i = 0; i < 1'000'000; ++i) sink = sink + static_cast<std::uint64_t>(i);
    d = CpuUsage::now() - start;
  } while (d.usr_ns + d.sys_ns == 0 && std::chrono::steady_clock::now() < deadline);
  EXPECT_GT(d.usr_ns + d.sys_ns, 0u);
  const CpuUsage zero = start - CpuUsage::now();  // clamped, never wraps
  EXPECT_EQ(zero.usr_ns, 0u);
}

// ------------------------------------------------------------------- progress

struct Pipe {
  int rd = -1, wr = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK) == 0) {
      rd = fds[0];
      wr = fds[1];
    }
  }
  ~Pipe() {
    ::close(rd);
    ::close(wr);
  }
  std::string drain() const {
    std::string s;
    char buf[512];
    ssize_t n;
    while ((n = ::read(rd, buf, sizeof buf)) > 0) s.append(buf, static_cast<std::size_t>(n));
    return s;
  }
};

TEST(Progress, SilentWhenNotATerminal) {
  Pipe p;
  ASSERT_GE(p.rd, 0);
  Progress prog(ProgressConfig{.fd = p.wr});
  EXPECT_FALSE(prog.enabled());
  for (std::uint64_t t = 0; t < 5; ++t) {
    EXPECT_FALSE(prog.due(t * 1'000'000'000));
    prog.tick(t * 1'000'000'000, t * 1000, 32);
  }
  prog.finish();
  EXPECT_EQ(p.drain(), "");
}

TEST(Progress, DrawsOncePerIntervalAndErasesAtTheEnd) {
  Pipe p;
  ASSERT_GE(p.rd, 0);
  const std::uint64_t s = 1'000'000'000;
  Progress prog(ProgressConfig{.fd = p.wr, .planned_ns = 4 * s, .force = true});
  ASSERT_TRUE(prog.enabled());
  EXPECT_TRUE(prog.due(100));  // the first call records the start
  prog.tick(100, 0, 0);
  EXPECT_EQ(p.drain(), "");
  EXPECT_FALSE(prog.due(100 + s / 2));
  prog.tick(100 + s / 2, 500, 32);
  EXPECT_EQ(p.drain(), "");
  EXPECT_TRUE(prog.due(100 + s));
  prog.tick(100 + s, 1000, 32);
  const std::string line = p.drain();
  EXPECT_EQ(line,
            "\rioq-bench: [ 25.0%][r=1000 IOPS][in flight 32][elapsed 00m:01s][eta 00m:03s]"
            "\x1b[K");
  // A late tick draws once and realigns to the interval grid.
  prog.tick(100 + 3 * s + s / 2, 3'501'000, 7);
  EXPECT_NE(p.drain().find("[r=1400k IOPS][in flight 7][elapsed 00m:03s][eta 00m:00s]"),
            std::string::npos);
  EXPECT_FALSE(prog.due(100 + 3 * s + s * 3 / 4));
  EXPECT_TRUE(prog.due(100 + 4 * s));
  prog.finish();
  EXPECT_EQ(p.drain(), "\r\x1b[K");
  prog.finish();  // nothing drawn since: nothing written
  EXPECT_EQ(p.drain(), "");
}

TEST(Progress, FormatLineWithoutPlanAndTruncation) {
  char buf[128];
  const std::size_t n =
      Progress::format_line(buf, sizeof buf, 65 * 1'000'000'000ull, 0, 1234567.0, 64, "rw");
  EXPECT_EQ(std::string(buf, n), "ioq-bench: [rw=1235k IOPS][in flight 64][elapsed 01m:05s]");
  char tiny[12];
  const std::size_t m = Progress::format_line(tiny, sizeof tiny, 0, 0, 1.0, 1, "r");
  EXPECT_EQ(m, sizeof tiny - 1);
  EXPECT_EQ(std::string(tiny), "ioq-bench: ");
}

}  // namespace
}  // namespace ioq::bench

// ---- --verify=crc32c: the checksum and the block header ----

TEST(Verify, Crc32cMatchesTheCastagnoliCheckValue) {
  // The standard check value of CRC-32C (iSCSI, RFC 3720): "123456789".
  EXPECT_EQ(ioq::bench::crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(ioq::bench::crc32c("", 0), 0u);
  // Incremental use gives the same value as one call.
  const std::uint32_t part = ioq::bench::crc32c("12345", 5);
  EXPECT_EQ(ioq::bench::crc32c("6789", 4, part), 0xE3069283u);
}

TEST(Verify, AFilledBlockChecksAndEachKindOfDamageIsNamed) {
  using ioq::bench::BlockCheck;
  std::vector<unsigned char> b(4096);
  ioq::bench::fill_block(b.data(), 4096, 8192, 7);
  EXPECT_EQ(ioq::bench::check_block(b.data(), 4096, 8192, 7), BlockCheck::ok);
  EXPECT_EQ(ioq::bench::check_block(b.data(), 4096, 8192, 0), BlockCheck::ok);  // 0: any generation
  EXPECT_EQ(ioq::bench::check_block(b.data(), 4096, 4096, 7), BlockCheck::bad_offset);
  EXPECT_EQ(ioq::bench::check_block(b.data(), 4096, 8192, 9), BlockCheck::bad_generation);
  EXPECT_EQ(ioq::bench::check_block(b.data(), 2048, 8192, 7), BlockCheck::bad_length);
  auto flipped = b;
  flipped[3000] ^= 0x10;  // one bit in the payload
  EXPECT_EQ(ioq::bench::check_block(flipped.data(), 4096, 8192, 7), BlockCheck::bad_checksum);
  std::vector<unsigned char> zero(4096, 0);  // never written
  EXPECT_EQ(ioq::bench::check_block(zero.data(), 4096, 8192, 7), BlockCheck::bad_magic);
  // Different offsets and generations give different payloads.
  std::vector<unsigned char> c(4096);
  ioq::bench::fill_block(c.data(), 4096, 12288, 7);
  EXPECT_NE(std::vector<unsigned char>(b.begin() + 64, b.end()), std::vector<unsigned char>(c.begin() + 64, c.end()));
}
