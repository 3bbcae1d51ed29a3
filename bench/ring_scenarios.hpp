// Scenario templates shared by every ring implementation under test.
//
// Each implementation is an adapter with a name and a per-thread accessor:
//   static constexpr const char* kName;
//   struct Local { explicit Local(Adapter&);  // built by each thread per run
//     bool push(void*); bool pop(void*&);
//     size_t push_n(void** items, size_t n); size_t pop_n(void** out, size_t n); };
// Local lets a queue that wants per-thread tokens (moodycamel) hold them for
// exactly one run; the others simply forward to the shared instance.
// Adapters without a native bulk form loop over the single form (their best
// available way to move a batch). Every benchmark reports items processed, so
// the JSON output carries items_per_second; one item is one push+pop pair.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/backoff.hpp"

namespace ioq::bench {

inline constexpr std::size_t kRingCapacity = 1024;
inline constexpr std::size_t kBulk = 32;

inline void* tag(std::uintptr_t i) noexcept { return reinterpret_cast<void*>(i | 1); }

// One shared instance per adapter type, built once: multi-threaded benchmark
// runs reuse it, and every run leaves it empty (pushes equal pops).
template <typename Ring>
Ring& shared_ring() {
  static Ring* ring = new Ring(kRingCapacity);
  return *ring;
}

// Pair: one thread pushes then pops one item.
template <typename Ring>
void BM_Pair(benchmark::State& state) {
  Ring shared(kRingCapacity);
  typename Ring::Local ring(shared);
  void* out = nullptr;
  std::uintptr_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring.push(tag(i++)));
    benchmark::DoNotOptimize(ring.pop(out));
  }
  benchmark::DoNotOptimize(out);
  state.SetItemsProcessed(state.iterations());
}

// Bulk32: one thread pushes a batch of 32 then pops a batch of 32.
template <typename Ring>
void BM_Bulk(benchmark::State& state) {
  Ring shared(kRingCapacity);
  typename Ring::Local ring(shared);
  void* in[kBulk];
  void* out[kBulk];
  for (std::size_t k = 0; k < kBulk; ++k) in[k] = tag(k);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring.push_n(in, kBulk));
    benchmark::DoNotOptimize(ring.pop_n(out, kBulk));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kBulk));
}

// PnC: the first `producers` threads push, the others pop, each thread moving
// `iterations` items; items processed counts pushes only (one per item moved).
template <typename Ring, int producers>
void BM_ProducersConsumers(benchmark::State& state) {
  typename Ring::Local ring(shared_ring<Ring>());
  const bool producer = state.thread_index() < producers;
  ioq::detail::Backoff backoff;
  std::uintptr_t i = static_cast<std::uintptr_t>(state.thread_index()) << 40;
  void* out = nullptr;
  if (producer) {
    for (auto _ : state) {
      while (!ring.push(tag(i))) backoff.pause();
      backoff.reset();
      ++i;
    }
    state.SetItemsProcessed(state.iterations());
  } else {
    for (auto _ : state) {
      while (!ring.pop(out)) backoff.pause();
      backoff.reset();
    }
    benchmark::DoNotOptimize(out);
  }
}

template <typename Ring>
void register_ring_benchmarks() {
  const std::string prefix = std::string("BM_Ring_") + Ring::kName + "_";
  benchmark::RegisterBenchmark((prefix + "Pair").c_str(), BM_Pair<Ring>);
  benchmark::RegisterBenchmark((prefix + "1P1C").c_str(), BM_ProducersConsumers<Ring, 1>)
      ->Threads(2)
      ->UseRealTime();
  benchmark::RegisterBenchmark((prefix + "2P2C").c_str(), BM_ProducersConsumers<Ring, 2>)
      ->Threads(4)
      ->UseRealTime();
  benchmark::RegisterBenchmark((prefix + "Bulk32").c_str(), BM_Bulk<Ring>);
}

}  // namespace ioq::bench
