// tool/histogram.hpp — ioq-bench's latency histogram (fio's bucket layout, mergeable).
//
// What it is
//   LatencyHistogram counts nanosecond values in log-linear buckets laid out as
//   fio's (stat.h, FIO_IO_U_PLAT_BITS = 6):
//     * values 0..127 have a bucket each, so they are exact (fio keeps every
//       value whose highest set bit is at most bit 6 exact, i.e. below 2^7);
//     * each power-of-two range [2^m, 2^(m+1)), m >= 7, is cut into 64 equal
//       buckets of 2^(m-6), so a bucket spans at most 1/64 of its lower edge
//       and its midpoint is within 1/128 (0.79%) of every value in it.
//   fio stops at 2^34 ns and clamps above; this layout runs to 2^64 - 1
//   (3776 buckets, 29.5 KiB), so no value is ever clamped.
//   Beside the buckets it keeps the exact count, min, max, sum and sum of
//   squares (128-bit integers; exact while the sum of squares stays below
//   2^128, e.g. 2^48 values of up to 2^40 ns), so min/max/mean/stddev are
//   exact like fio's clat_stat (fio uses Welford in doubles); only percentiles
//   come from the buckets.
//
//   record() is O(1): one bit scan, a shift and an add, no loop, no allocation
//   (the array is a member). merge() adds another histogram bucket by bucket,
//   so merging per-thread histograms equals recording every value in one.
//   percentile(p) follows fio's calc_clat_percentiles: the first bucket at
//   which the running count reaches p/100 * count, reported as that bucket's
//   midpoint (plat_idx_to_val): the same number fio prints for the same samples.
//
// Threads
//   None inside, and no synchronisation: one instance per thread (the engine
//   keeps one per worker and direction), merged once the workers are joined.
//
// Memory ordering
//   None needed: plain values, no atomics.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace ioq::bench {

namespace detail {
__extension__ typedef unsigned __int128 u128;  // GCC/Clang; exact sums of squares
}  // namespace detail

class LatencyHistogram {
 public:
  static constexpr unsigned kBits = 6;                               // fio's FIO_IO_U_PLAT_BITS
  static constexpr std::size_t kPerGroup = std::size_t{1} << kBits;  // 64 buckets per group
  static constexpr std::size_t kExact = 2 * kPerGroup;               // 0..127 are exact
  // Highest value: bit 63 set -> shift 57 -> index 57 * 64 + 127.
  static constexpr std::size_t kBuckets = (63 - kBits) * kPerGroup + kExact;  // 3776

  // Index of the bucket that holds `ns`. Branch-free: for ns < 128 the shift
  // is 0 and the index is ns itself.
  [[nodiscard]] static constexpr std::size_t bucket_index(std::uint64_t ns) noexcept {
    const unsigned msb = static_cast<unsigned>(std::bit_width(ns | 1)) - 1;  // 0..63
    const unsigned shift = msb > kBits ? msb - kBits : 0;                    // fio's error bits
    return (std::size_t{shift} << kBits) + static_cast<std::size_t>(ns >> shift);
  }
  // Smallest and largest value bucket `i` holds (both inclusive). i < kBuckets.
  [[nodiscard]] static constexpr std::uint64_t bucket_low(std::size_t i) noexcept {
    if (i < kExact) return i;
    const unsigned shift = static_cast<unsigned>(i >> kBits) - 1;
    return (std::uint64_t{1} << (shift + kBits)) + (std::uint64_t{i & (kPerGroup - 1)} << shift);
  }
  [[nodiscard]] static constexpr std::uint64_t bucket_high(std::size_t i) noexcept {
    if (i < kExact) return i;
    const unsigned shift = static_cast<unsigned>(i >> kBits) - 1;
    return bucket_low(i) + ((std::uint64_t{1} << shift) - 1);
  }
  // The value a bucket reports (fio's plat_idx_to_val): the value itself below
  // 128, else the bucket's midpoint low + width / 2.
  [[nodiscard]] static constexpr std::uint64_t bucket_value(std::size_t i) noexcept {
    if (i < kExact) return i;
    const unsigned shift = static_cast<unsigned>(i >> kBits) - 1;
    return bucket_low(i) + (std::uint64_t{1} << (shift - 1));
  }

  // Counts one value. O(1), never allocates.
  void record(std::uint64_t ns) noexcept { record(ns, 1); }
  // Counts `n` values equal to ns (a batch submitted and completed together).
  void record(std::uint64_t ns, std::uint64_t n) noexcept {
    buckets_[bucket_index(ns)] += n;
    count_ += n;
    sum_ += static_cast<detail::u128>(ns) * n;
    sum_sq_ += static_cast<detail::u128>(ns) * ns * n;
    min_ = std::min(min_, ns);
    max_ = std::max(max_, ns);
  }

  // Adds every value `other` counted. O(kBuckets).
  void merge(const LatencyHistogram& other) noexcept;

  // Forgets every value. O(kBuckets).
  void reset() noexcept;

  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  // Exact smallest / largest value recorded; 0 when empty.
  [[nodiscard]] std::uint64_t min() const noexcept { return count_ ? min_ : 0; }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }
  // Exact arithmetic mean; 0 when empty.
  [[nodiscard]] double mean() const noexcept;
  // Sample standard deviation (divides by n - 1, as fio's calc_lat); 0 when n < 2.
  [[nodiscard]] double stddev() const noexcept;
  // The value of the bucket at which the running count first reaches
  // p / 100 * count() (and is non-zero), as fio computes clat percentiles.
  // p is clamped to [0, 100]; p = 0 gives the lowest non-empty bucket. 0 when
  // empty. The result is within 1/128 of the exact order statistic.
  [[nodiscard]] std::uint64_t percentile(double p) const noexcept;

  // Count of bucket i (i < kBuckets), for fio's json+ "bins".
  [[nodiscard]] std::uint64_t bucket_count(std::size_t i) const noexcept { return buckets_[i]; }

 private:
  std::array<std::uint64_t, kBuckets> buckets_{};
  std::uint64_t count_ = 0;
  std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t max_ = 0;
  detail::u128 sum_ = 0;
  detail::u128 sum_sq_ = 0;
};

static_assert(LatencyHistogram::bucket_index(~std::uint64_t{0}) == LatencyHistogram::kBuckets - 1);
static_assert(LatencyHistogram::bucket_index(127) == 127 &&
              LatencyHistogram::bucket_index(128) == 128);
static_assert(LatencyHistogram::bucket_high(LatencyHistogram::kBuckets - 1) == ~std::uint64_t{0});

}  // namespace ioq::bench
