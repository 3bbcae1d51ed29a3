// ioq-bench: random block offsets that visit every block once per pass.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ioq::bench {

// fio's default random map for n blocks: a uniformly random block, or, when
// that one was used already in this pass, the next unused one after it
// (wrapping); the map starts over once every block was used. Uniform draws
// keep the clustering of truly random offsets (a scrambled full-period
// generator spreads them too evenly, and a virtual disk's cache then serves
// fewer of them).
class RandomBlockMap {
 public:
  void init(std::uint64_t n, std::uint64_t seed) {
    n_ = std::max<std::uint64_t>(1, n);
    rng_ = seed | 1;
    used_ = 0;
    map_.assign((n_ + 63) / 64, 0);
  }

  std::uint64_t next() noexcept {
    if (used_ == n_) {
      std::fill(map_.begin(), map_.end(), 0);
      used_ = 0;
    }
    std::uint64_t b = draw();
    if (map_[b / 64] & (std::uint64_t{1} << (b % 64))) b = next_free(b);
    map_[b / 64] |= std::uint64_t{1} << (b % 64);
    ++used_;
    return b;
  }

 private:
  // xorshift64, reduced to [0, n) by a 64x64 multiply's high half.
  std::uint64_t draw() noexcept {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    __extension__ using u128 = unsigned __int128;
    return static_cast<std::uint64_t>((static_cast<u128>(rng_) * n_) >> 64);
  }
  // The first unused block after b, wrapping (one exists: used_ < n_).
  std::uint64_t next_free(std::uint64_t b) const noexcept {
    const std::size_t words = map_.size();
    std::size_t w = b / 64;
    // Bits at and below b in its word count as used for the first look.
    std::uint64_t free = ~map_[w] & (b % 64 == 63 ? 0 : ~std::uint64_t{0} << (b % 64 + 1));
    for (std::size_t k = 0; k <= words; ++k) {
      if (free != 0) {
        const std::uint64_t f = w * 64 + static_cast<std::uint64_t>(__builtin_ctzll(free));
        if (f < n_) return f;
      }
      w = w + 1 == words ? 0 : w + 1;
      free = ~map_[w];
    }
    return b;  // not reached while used_ < n_
  }

  std::uint64_t n_ = 1, rng_ = 1, used_ = 0;
  std::vector<std::uint64_t> map_;
};

}  // namespace ioq::bench
