// ioq::detail::PerThreadCounters: counters written by one thread each, summed on read.
//
// A shared counter bumped with fetch_add costs a locked read-modify-write (about
// 6 ns here) and bounces its cache line between cores. Each thread instead owns a
// block (indexed by thread_index(), allocated on first use) and bumps its own
// counters with a relaxed load and store; readers sum every block. Threads with
// no thread index share one block through fetch_add.
//
// Threads: add() from any thread; snapshot() from any thread (a snapshot, not a
// consistent cut). Memory ordering: relaxed throughout; counters order nothing.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/cacheline.hpp"
#include "base/thread_index.hpp"

namespace ioq::detail {

template <std::size_t N>
class PerThreadCounters {
 public:
  PerThreadCounters() : blocks_(new std::atomic<Block*>[kMaxThreads]) {
    for (std::uint32_t i = 0; i < kMaxThreads; ++i) blocks_[i].store(nullptr, std::memory_order_relaxed);
  }
  ~PerThreadCounters() {
    for (std::uint32_t i = 0; i < kMaxThreads; ++i) delete blocks_[i].load(std::memory_order_relaxed);
  }
  PerThreadCounters(const PerThreadCounters&) = delete;
  PerThreadCounters& operator=(const PerThreadCounters&) = delete;

  void add(std::size_t which, std::uint64_t n = 1) noexcept {
    const std::uint32_t t = thread_index_if_known();
    // acquire: pairs with the release publishing a block built by an earlier
    // holder of this thread index.
    Block* b = t < kMaxThreads ? blocks_[t].load(std::memory_order_acquire) : nullptr;
    if (b == nullptr) [[unlikely]] {
      add_slow(which, n);
      return;
    }
    auto& c = b->v[which];
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  [[nodiscard]] std::array<std::uint64_t, N> snapshot() const noexcept {
    std::array<std::uint64_t, N> out{};
    for (std::size_t i = 0; i < N; ++i) out[i] = shared_.v[i].load(std::memory_order_relaxed);
    for (std::uint32_t t = 0; t < kMaxThreads; ++t) {
      // acquire: pairs with the release in add().
      const Block* b = blocks_[t].load(std::memory_order_acquire);
      if (b == nullptr) continue;
      for (std::size_t i = 0; i < N; ++i) out[i] += b->v[i].load(std::memory_order_relaxed);
    }
    return out;
  }

 private:
  // No thread index, or this thread's first count: build its block, or count
  // in the shared block.
  [[gnu::noinline]] void add_slow(std::size_t which, std::uint64_t n) noexcept {
    const std::uint32_t t = thread_index();
    Block* b = t != kNoThreadIndex ? blocks_[t].load(std::memory_order_acquire) : nullptr;
    if (b != nullptr) {  // the thread's first question came through here
      auto& c = b->v[which];
      c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
      return;
    }
    b = t != kNoThreadIndex ? new (std::nothrow) Block : nullptr;
    if (b == nullptr) {
      shared_.v[which].fetch_add(n, std::memory_order_relaxed);
      return;
    }
    // release: publishes the zeroed block to readers and later holders.
    blocks_[t].store(b, std::memory_order_release);
    auto& c = b->v[which];
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  struct alignas(kCacheLine) Block {
    std::array<std::atomic<std::uint64_t>, N> v{};
  };
  std::unique_ptr<std::atomic<Block*>[]> blocks_;
  Block shared_;
};

}  // namespace ioq::detail
