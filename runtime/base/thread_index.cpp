#include "base/thread_index.hpp"

#include <atomic>
#include <bit>

namespace ioq::detail {

namespace {

constexpr std::uint32_t kWords = kMaxThreads / 64;
std::atomic<std::uint64_t> g_used[kWords];

std::uint32_t acquire_index() noexcept {
  for (std::uint32_t w = 0; w < kWords; ++w) {
    std::uint64_t bits = g_used[w].load(std::memory_order_relaxed);
    while (bits != ~0ULL) {
      const int bit = std::countr_one(bits);
      // acquire: pairs with the release in release_index(), so whatever the
      // previous holder of this number left in per-thread arrays is visible.
      if (g_used[w].compare_exchange_weak(bits, bits | (1ULL << bit), std::memory_order_acquire,
                                          std::memory_order_relaxed))
        return w * 64 + static_cast<std::uint32_t>(bit);
    }
  }
  return kNoThreadIndex;
}

void release_index(std::uint32_t index) noexcept {
  // release: pairs with the acquire in acquire_index() of the next holder.
  g_used[index / 64].fetch_and(~(1ULL << (index % 64)), std::memory_order_release);
}

struct Holder {
  std::uint32_t index = acquire_index();
  ~Holder() {
    // Later calls on this thread (other thread_local destructors) use the
    // shared path: the number may be someone else's from now on.
    t_thread_index_cache = kNoThreadIndex;
    if (index != kNoThreadIndex) release_index(index);
  }
};

}  // namespace

std::uint32_t thread_index_slow() noexcept {
  thread_local Holder holder;
  t_thread_index_cache = holder.index;
  return holder.index;
}

std::uint32_t thread_index_in_use() noexcept {
  std::uint32_t n = 0;
  for (auto& w : g_used) n += static_cast<std::uint32_t>(std::popcount(w.load(std::memory_order_relaxed)));
  return n;
}

}  // namespace ioq::detail
