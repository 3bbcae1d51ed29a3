// Tests of ioq::detail::MpmcRing: order, edges, wrap-around, item lifetime and
// exactly-once delivery under concurrency.
#include "ring/mpmc_ring.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "base/backoff.hpp"

namespace ioq::detail {
namespace {

TEST(MpmcRing, CapacityRoundsUpToPowerOfTwo) {
  EXPECT_EQ(MpmcRing<int>(0).capacity(), 2u);
  EXPECT_EQ(MpmcRing<int>(1).capacity(), 2u);
  EXPECT_EQ(MpmcRing<int>(5).capacity(), 8u);
  EXPECT_EQ(MpmcRing<int>(1024).capacity(), 1024u);
  EXPECT_EQ(MpmcRing<int>(1025).capacity(), 2048u);
}

TEST(MpmcRing, FifoOrderSingleThread) {
  for (std::size_t cap : {2u, 16u, 64u, 4096u}) {
    MpmcRing<std::uint64_t> ring(cap);
    for (std::uint64_t i = 0; i < cap; ++i) ASSERT_TRUE(ring.try_push(i));
    for (std::uint64_t i = 0; i < cap; ++i) {
      std::uint64_t v = ~0ULL;
      ASSERT_TRUE(ring.try_pop(v));
      EXPECT_EQ(v, i) << "capacity " << cap;
    }
  }
}

TEST(MpmcRing, FullAndEmptyEdges) {
  MpmcRing<void*> ring(64);
  void* out = nullptr;
  EXPECT_FALSE(ring.try_pop(out)) << "a new ring is empty";
  EXPECT_EQ(ring.try_pop_n(&out, 1), 0u);
  for (std::uintptr_t i = 1; i <= 64; ++i) ASSERT_TRUE(ring.try_push(reinterpret_cast<void*>(i)));
  EXPECT_EQ(ring.size_approx(), 64u);
  EXPECT_FALSE(ring.try_push(reinterpret_cast<void*>(999))) << "65th push must fail";
  void* extra[4] = {};
  EXPECT_EQ(ring.try_push_n(extra, 4), 0u) << "bulk push into a full ring moves nothing";
  ASSERT_TRUE(ring.try_pop(out));
  EXPECT_EQ(out, reinterpret_cast<void*>(1));
  EXPECT_TRUE(ring.try_push(reinterpret_cast<void*>(65))) << "one pop frees exactly one cell";
  EXPECT_FALSE(ring.try_push(reinterpret_cast<void*>(66)));
  for (std::uintptr_t i = 2; i <= 65; ++i) {
    ASSERT_TRUE(ring.try_pop(out));
    EXPECT_EQ(out, reinterpret_cast<void*>(i));
  }
  EXPECT_FALSE(ring.try_pop(out)) << "drained ring is empty again";
  EXPECT_EQ(ring.size_approx(), 0u);
}

TEST(MpmcRing, BulkFormsWrapTheArrayEnd) {
  // Bursts that straddle the end of the array move in ticket order.
  MpmcRing<std::uint64_t> ring(8);
  std::uint64_t in[8], out[8];
  for (std::uint64_t base = 0; base < 800; base += 5) {
    for (std::uint64_t i = 0; i < 5; ++i) in[i] = base + i;
    ASSERT_EQ(ring.try_push_n(in, 5), 5u);
    ASSERT_EQ(ring.try_pop_n(out, 8), 5u);
    for (std::uint64_t i = 0; i < 5; ++i) ASSERT_EQ(out[i], base + i);
  }
}

TEST(MpmcRing, BulkFormsMoveWhatFitsInOrder) {
  MpmcRing<std::uint64_t> ring(16);
  std::uint64_t in[40];
  for (std::uint64_t i = 0; i < 40; ++i) in[i] = i;
  EXPECT_EQ(ring.try_push_n(in, 10), 10u);
  EXPECT_EQ(ring.try_push_n(in + 10, 30), 6u) << "burst push stops at capacity";
  std::uint64_t out[40] = {};
  EXPECT_EQ(ring.try_pop_n(out, 3), 3u);
  EXPECT_EQ(ring.try_pop_n(out + 3, 40), 13u) << "burst pop takes what is there";
  for (std::uint64_t i = 0; i < 16; ++i) EXPECT_EQ(out[i], i);
  EXPECT_EQ(ring.try_pop_n(out, 8), 0u);
  EXPECT_EQ(ring.try_push_n(in, 0), 0u);
  EXPECT_EQ(ring.try_pop_n(out, 0), 0u);
}

TEST(MpmcRing, WrapAroundThousandsOfTimes) {
  // Capacities on both sides of the cache-line remapping threshold.
  for (std::size_t cap : {8u, 64u}) {
    MpmcRing<std::uint64_t> ring(cap);
    std::mt19937_64 rng(42);
    std::uint64_t next_in = 0, next_out = 0;
    const std::uint64_t laps = 5000;
    while (next_out < laps * cap) {
      // Alternate single and bulk forms with random batch sizes.
      const std::size_t room = cap - static_cast<std::size_t>(next_in - next_out);
      const std::size_t k = room == 0 ? 0 : 1 + rng() % room;
      if (rng() & 1) {
        for (std::size_t i = 0; i < k; ++i) ASSERT_TRUE(ring.try_push(next_in++));
      } else {
        std::uint64_t buf[64];
        for (std::size_t i = 0; i < k; ++i) buf[i] = next_in + i;
        ASSERT_EQ(ring.try_push_n(buf, k), k);
        next_in += k;
      }
      const std::size_t have = static_cast<std::size_t>(next_in - next_out);
      const std::size_t m = 1 + rng() % have;
      if (rng() & 1) {
        for (std::size_t i = 0; i < m; ++i) {
          std::uint64_t v;
          ASSERT_TRUE(ring.try_pop(v));
          ASSERT_EQ(v, next_out++);
        }
      } else {
        std::uint64_t buf[64];
        ASSERT_EQ(ring.try_pop_n(buf, m), m);
        for (std::size_t i = 0; i < m; ++i) ASSERT_EQ(buf[i], next_out++);
      }
    }
    EXPECT_GE(next_out / cap, laps) << "ring of " << cap << " wrapped " << next_out / cap << " times";
  }
}

// An instance-counting payload: the ring carries owning pointers to Counted
// objects. The consumer that pops a pointer destroys its object, so a lost item
// shows up as a leak (live > 0 after draining) and a duplicated item as a
// double destroy (destroyed > constructed, caught by the per-object flag).
struct Counted {
  static inline std::atomic<long> live{0};
  static inline std::atomic<long> double_destroys{0};
  explicit Counted(std::uintptr_t v) : value(v) { live++; }
  ~Counted() {
    if (destroyed.exchange(true)) double_destroys++;
    live--;
  }
  std::uintptr_t value;
  std::atomic<bool> destroyed{false};
};

TEST(MpmcRing, InstanceCountingPayloadNoLeakNoDoubleDestroy) {
  Counted::live = 0;
  Counted::double_destroys = 0;
  MpmcRing<Counted*> ring(32);
  std::uintptr_t next_out = 0;
  auto pop_and_destroy = [&](std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      Counted* c = nullptr;
      ASSERT_TRUE(ring.try_pop(c));
      ASSERT_EQ(c->value, next_out++);
      delete c;
    }
  };
  for (std::uintptr_t i = 0; i < 20; ++i) ASSERT_TRUE(ring.try_push(new Counted(i)));
  EXPECT_EQ(Counted::live.load(), 20);
  pop_and_destroy(8);
  EXPECT_EQ(Counted::live.load(), 12);
  Counted* batch[8];
  for (std::uintptr_t i = 0; i < 8; ++i) batch[i] = new Counted(20 + i);
  ASSERT_EQ(ring.try_push_n(batch, 8), 8u);
  Counted* got[4];
  ASSERT_EQ(ring.try_pop_n(got, 4), 4u);
  for (Counted* c : got) {
    EXPECT_EQ(c->value, next_out++);
    delete c;
  }
  // Wrap the ring many times with owned items in flight.
  std::uintptr_t next_in = 28;
  for (int lap = 0; lap < 1000; ++lap) {
    for (int i = 0; i < 16; ++i) ASSERT_TRUE(ring.try_push(new Counted(next_in++)));
    pop_and_destroy(16);
  }
  EXPECT_EQ(Counted::live.load(), 16) << "exactly the queued items are alive";
  pop_and_destroy(16);
  Counted* none = nullptr;
  EXPECT_FALSE(ring.try_pop(none));
  EXPECT_EQ(Counted::live.load(), 0) << "an item was lost (leak)";
  EXPECT_EQ(Counted::double_destroys.load(), 0) << "an item was delivered twice";
}

// P producers and C consumers move `total` tagged items; every item must be
// consumed exactly once and each consumer must see each producer's items in
// the order that producer pushed them.
// exclusive: the consumers take turns under a mutex (as ioq's queues pop
// under their token) and use the single-consumer pop forms.
void exactly_once(unsigned producers, unsigned consumers, std::uint64_t total, bool bulk, bool exclusive = false) {
  std::mutex consumer_token;
  MpmcRing<std::uint64_t> ring(1024);
  const std::uint64_t per_producer = (total + producers - 1) / producers;
  std::vector<std::vector<std::atomic<std::uint8_t>>> seen(producers);
  for (auto& s : seen) s = std::vector<std::atomic<std::uint8_t>>(per_producer);
  std::atomic<std::uint64_t> consumed{0};
  std::atomic<std::uint64_t> order_violations{0};
  std::atomic<std::uint64_t> duplicates{0};
  const std::uint64_t expected = per_producer * producers;

  std::vector<std::thread> threads;
  for (unsigned p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      Backoff backoff;
      std::uint64_t seq = 0;
      std::uint64_t buf[16];
      while (seq < per_producer) {
        if (bulk) {
          const std::size_t k =
              static_cast<std::size_t>(std::min<std::uint64_t>(1 + seq % 16, per_producer - seq));
          for (std::size_t i = 0; i < k; ++i) buf[i] = (std::uint64_t{p} << 40) | (seq + i);
          const std::size_t pushed = ring.try_push_n(buf, k);
          seq += pushed;
          if (pushed == 0) backoff.pause(); else backoff.reset();
        } else if (ring.try_push((std::uint64_t{p} << 40) | seq)) {
          ++seq;
          backoff.reset();
        } else {
          backoff.pause();
        }
      }
    });
  }
  for (unsigned c = 0; c < consumers; ++c) {
    threads.emplace_back([&] {
      std::vector<std::int64_t> last(producers, -1);
      Backoff backoff;
      std::uint64_t buf[16];
      auto take = [&](std::uint64_t item) {
        const unsigned p = static_cast<unsigned>(item >> 40);
        const auto seq = static_cast<std::int64_t>(item & ((1ULL << 40) - 1));
        if (seq <= last[p]) order_violations.fetch_add(1, std::memory_order_relaxed);
        last[p] = seq;
        if (seen[p][static_cast<std::size_t>(seq)].fetch_add(1, std::memory_order_relaxed) != 0)
          duplicates.fetch_add(1, std::memory_order_relaxed);
      };
      while (consumed.load(std::memory_order_relaxed) < expected) {
        std::size_t got = 0;
        if (exclusive) {
          std::lock_guard lock(consumer_token);
          if (bulk) {
            got = ring.try_pop_n_exclusive(buf, 1 + (last[0] & 15));
            for (std::size_t i = 0; i < got; ++i) take(buf[i]);
          } else if (std::uint64_t item; ring.try_pop_exclusive(item)) {
            take(item);
            got = 1;
          }
        } else if (bulk) {
          got = ring.try_pop_n(buf, 1 + (last[0] & 15));
          for (std::size_t i = 0; i < got; ++i) take(buf[i]);
        } else if (std::uint64_t item; ring.try_pop(item)) {
          take(item);
          got = 1;
        }
        if (got != 0) {
          consumed.fetch_add(got, std::memory_order_relaxed);
          backoff.reset();
        } else {
          backoff.pause();
        }
      }
    });
  }
  for (auto& t : threads) t.join();

  EXPECT_EQ(consumed.load(), expected);
  EXPECT_EQ(duplicates.load(), 0u);
  EXPECT_EQ(order_violations.load(), 0u);
  std::uint64_t missing = 0;
  for (auto& s : seen)
    for (auto& v : s) missing += v.load() == 0;
  EXPECT_EQ(missing, 0u);
  std::uint64_t leftover;
  EXPECT_FALSE(ring.try_pop(leftover));
  EXPECT_EQ(ring.size_approx(), 0u);
}

class RingExactlyOnce : public ::testing::TestWithParam<std::tuple<unsigned, unsigned>> {};

TEST_P(RingExactlyOnce, MillionTaggedItems) {
  const auto [p, c] = GetParam();
  exactly_once(p, c, 1'000'000, /*bulk=*/false);
}

TEST_P(RingExactlyOnce, MillionTaggedItemsBulk) {
  const auto [p, c] = GetParam();
  exactly_once(p, c, 1'000'000, /*bulk=*/true);
}

TEST_P(RingExactlyOnce, MillionTaggedItemsExclusiveConsumers) {
  const auto [p, c] = GetParam();
  exactly_once(p, c, 1'000'000, /*bulk=*/false, /*exclusive=*/true);
}

TEST_P(RingExactlyOnce, MillionTaggedItemsBulkExclusiveConsumers) {
  const auto [p, c] = GetParam();
  exactly_once(p, c, 1'000'000, /*bulk=*/true, /*exclusive=*/true);
}

INSTANTIATE_TEST_SUITE_P(PxC, RingExactlyOnce,
                         ::testing::Combine(::testing::Values(1u, 2u, 4u, 8u),
                                            ::testing::Values(1u, 2u, 4u, 8u)),
                         [](const auto& param_info) {
                           return std::to_string(std::get<0>(param_info.param)) + "P" +
                                  std::to_string(std::get<1>(param_info.param)) + "C";
                         });

}  // namespace
}  // namespace ioq::detail
