// LatencyHistogram: merge, moments and fio-style percentiles.
#include "tool/histogram.hpp"

#include <cmath>

namespace ioq::bench {
namespace {

using detail::u128;

// 256-bit unsigned integer, little-endian 64-bit limbs: just enough to form
// n * sum_sq - sum^2 exactly.
struct U256 {
  std::uint64_t w[4] = {};
};

U256 mul(u128 a, u128 b) {
  const std::uint64_t x[2] = {static_cast<std::uint64_t>(a), static_cast<std::uint64_t>(a >> 64)};
  const std::uint64_t y[2] = {static_cast<std::uint64_t>(b), static_cast<std::uint64_t>(b >> 64)};
  U256 r;
  for (int i = 0; i < 2; ++i) {
    std::uint64_t carry = 0;
    for (int j = 0; j < 2; ++j) {
      const u128 t = static_cast<u128>(x[i]) * y[j] + r.w[i + j] + carry;
      r.w[i + j] = static_cast<std::uint64_t>(t);
      carry = static_cast<std::uint64_t>(t >> 64);
    }
    r.w[i + 2] = carry;
  }
  return r;
}

// a - b, for a >= b.
U256 sub(const U256& a, const U256& b) {
  U256 r;
  std::uint64_t borrow = 0;
  for (int i = 0; i < 4; ++i) {
    const std::uint64_t d = a.w[i] - b.w[i];
    const std::uint64_t out = d - borrow;
    borrow = (a.w[i] < b.w[i] || d < borrow) ? 1 : 0;
    r.w[i] = out;
  }
  return r;
}

long double to_long_double(const U256& v) {
  long double r = 0;
  for (int i = 3; i >= 0; --i) r = r * 18446744073709551616.0L + static_cast<long double>(v.w[i]);
  return r;
}

}  // namespace

void LatencyHistogram::merge(const LatencyHistogram& other) noexcept {
  for (std::size_t i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  sum_sq_ += other.sum_sq_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::reset() noexcept { *this = LatencyHistogram{}; }

double LatencyHistogram::mean() const noexcept {
  if (count_ == 0) return 0.0;
  return static_cast<double>(static_cast<long double>(sum_) / static_cast<long double>(count_));
}

double LatencyHistogram::stddev() const noexcept {
  if (count_ < 2) return 0.0;
  // var = (n * sum_sq - sum^2) / (n * (n - 1)). The numerator is formed
  // exactly in 256 bits (it is >= 0 by Cauchy-Schwarz), so there is no
  // cancellation however large the mean is next to the spread; only the final
  // division rounds.
  const U256 numerator = sub(mul(count_, sum_sq_), mul(sum_, sum_));
  const long double n = static_cast<long double>(count_);
  return static_cast<double>(std::sqrt(to_long_double(numerator) / (n * (n - 1))));
}

std::uint64_t LatencyHistogram::percentile(double p) const noexcept {
  if (count_ == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  // fio: sum >= (long double)p / 100.0 * nr, over the buckets in order.
  const long double target =
      static_cast<long double>(p) / 100.0L * static_cast<long double>(count_);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    running += buckets_[i];
    if (running != 0 && static_cast<long double>(running) >= target) return bucket_value(i);
  }
  return bucket_value(bucket_index(max_));  // not reached: running ends at count_ >= target
}

}  // namespace ioq::bench
