// Tests of ioq::detail::Slab: exhaustion, stale and forged handles, context
// areas, concurrent exactly-once ownership, and injected allocation failures.
#include "memory/slab.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

namespace ioq::detail {
namespace {

std::unique_ptr<Slab> make(std::uint32_t slots, std::uint32_t ctx = 0, std::uint32_t batch = 8) {
  auto r = Slab::create(SlabConfig{.slots = slots, .object_bytes = 48, .context_bytes = ctx,
                                   .cache_batch = batch});
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return r ? std::move(*r) : nullptr;
}

TEST(Slab, RejectsBadConfig) {
  auto r = Slab::create(SlabConfig{.slots = 0});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().status, Status::invalid_parameter);
  EXPECT_FALSE(r.error().message.empty());
  r = Slab::create(SlabConfig{.slots = 1u << 24});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().status, Status::invalid_parameter);
  r = Slab::create(SlabConfig{.slots = 4, .cache_batch = 0});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().status, Status::invalid_parameter);
}

TEST(Slab, ExhaustionReturnsStatusAndRecovers) {
  auto slab = make(100);
  std::vector<Slab::Allocation> held;
  for (int i = 0; i < 100; ++i) {
    auto a = slab->allocate();
    ASSERT_EQ(a.status, Status::success) << "allocation " << i;
    held.push_back(a);
  }
  auto none = slab->allocate();
  EXPECT_EQ(none.status, Status::insufficient_resources);
  EXPECT_EQ(none.handle, kNullHandle);
  EXPECT_EQ(none.object, nullptr);
  std::set<std::uint32_t> distinct;
  for (auto& a : held) distinct.insert(a.index);
  EXPECT_EQ(distinct.size(), 100u) << "every slot handed out once";

  EXPECT_EQ(slab->release(held.back().handle), Status::success);
  held.pop_back();
  EXPECT_EQ(slab->allocate().status, Status::success) << "a released slot is reusable";
  const SlabStats s = slab->stats();
  EXPECT_EQ(s.exhausted, 1u);
  EXPECT_EQ(s.allocations, 101u);
  EXPECT_EQ(s.releases, 1u);
  EXPECT_EQ(s.free_slots, 0u);
}

// A batch reservation (the submit path's): slots taken out of the thread's
// cache at once become allocations one by one; those not taken go back still
// free, and the counts speak of what was taken and released only.
TEST(Slab, BatchReservationCountsWhatIsTakenAndPutsTheRestBack) {
  auto slab = make(64, 0, 4);  // cache capacity 8
  std::vector<Slab::Allocation> held;
  for (int i = 0; i < 8; ++i) held.push_back(slab->allocate());
  for (auto& a : held) slab->release_owned(a.index);  // the cache holds 8
  held.clear();

  std::uint32_t slots[16];
  const std::uint32_t got = slab->reserve_cached(slots, 16);
  ASSERT_EQ(got, 8u) << "everything the cache held, no more";
  for (std::uint32_t i = 0; i < 3; ++i) {
    held.push_back(slab->take_reserved(slots[i]));
    EXPECT_EQ(slab->validate(held.back().handle), Status::success);
  }
  // A release meanwhile (a handler completing) refills the cache in part.
  slab->release_owned(held.back().index);
  held.pop_back();
  slab->put_back(slots + 3, got - 3);
  SlabStats s = slab->stats();
  EXPECT_EQ(s.allocations, 8u + 3u);
  EXPECT_EQ(s.releases, 8u + 1u);
  EXPECT_EQ(s.free_slots, 64u - 2u);

  // Every slot is handed out exactly once afterwards, the put-back ones too.
  std::set<std::uint32_t> seen;
  for (auto& a : held) seen.insert(a.index);
  for (int i = 0; i < 62; ++i) {
    const auto a = slab->allocate();
    ASSERT_EQ(a.status, Status::success) << "allocation " << i;
    EXPECT_TRUE(seen.insert(a.index).second) << "slot " << a.index << " handed out twice";
  }
  EXPECT_EQ(slab->allocate().status, Status::insufficient_resources);
  s = slab->stats();
  EXPECT_EQ(s.allocations - s.releases, 64u);

  // With the injection hook installed, nothing is reserved in bulk: every
  // allocation goes through the hook.
  slab->set_alloc_hook(AllocHook{[](void*) noexcept { return false; }, nullptr});
  for (auto& a : held) slab->release_owned(a.index);
  EXPECT_EQ(slab->reserve_cached(slots, 16), 0u);
}

TEST(Slab, StaleHandlesAreRejected) {
  auto slab = make(4, 0, 1);
  auto a = slab->allocate();
  ASSERT_EQ(a.status, Status::success);
  EXPECT_EQ(slab->validate(a.handle), Status::success);
  ASSERT_TRUE(slab->resolve(a.handle).has_value());
  EXPECT_EQ(*slab->resolve(a.handle), a.object);

  EXPECT_EQ(slab->release(a.handle), Status::success);
  EXPECT_EQ(slab->validate(a.handle), Status::invalid_handle) << "released handle is stale";
  EXPECT_EQ(slab->release(a.handle), Status::invalid_handle) << "double release detected";
  EXPECT_FALSE(slab->resolve(a.handle).has_value());

  // Reuse the same slot: the old handle must stay stale.
  std::vector<Slab::Allocation> again;
  for (int i = 0; i < 4; ++i) again.push_back(slab->allocate());
  bool reused = false;
  for (auto& b : again) {
    ASSERT_EQ(b.status, Status::success);
    if (b.index == a.index) {
      reused = true;
      EXPECT_NE(b.handle, a.handle);
    }
  }
  EXPECT_TRUE(reused);
  EXPECT_EQ(slab->validate(a.handle), Status::invalid_handle);
  EXPECT_EQ(slab->release(a.handle), Status::invalid_handle);
  EXPECT_GE(slab->stats().rejected, 4u);
}

TEST(Slab, ForgedHandlesAreRejected) {
  auto slab = make(16);
  auto other = make(16);
  auto a = slab->allocate();
  auto b = other->allocate();
  ASSERT_EQ(a.status, Status::success);
  ASSERT_EQ(b.status, Status::success);
  EXPECT_EQ(slab->validate(kNullHandle), Status::invalid_handle);
  EXPECT_EQ(slab->validate(b.handle), Status::invalid_handle) << "another slab's handle";
  EXPECT_EQ(slab->release(b.handle), Status::invalid_handle);
  EXPECT_EQ(slab->validate(make_handle(slab->id(), 9999, 1)), Status::invalid_handle)
      << "index past the end";
  EXPECT_EQ(slab->validate(a.handle + 2), Status::invalid_handle) << "future generation";
  EXPECT_EQ(slab->validate(a.handle ^ 1), Status::invalid_handle) << "even (free) generation";
  EXPECT_EQ(slab->validate(~0ULL), Status::invalid_handle);
  EXPECT_EQ(Slab::from_handle(a.handle), slab.get());
  EXPECT_EQ(Slab::from_handle(b.handle), other.get());
  EXPECT_EQ(Slab::from_handle(kNullHandle), nullptr);
  EXPECT_EQ(slab->validate(a.handle), Status::success) << "forgeries left the real one alone";
}

TEST(Slab, ContextAreasAreDistinctAndSized) {
  constexpr std::uint32_t kCtx = 200;
  auto slab = make(64, kCtx);
  ASSERT_EQ(slab->context_bytes(), kCtx);
  std::vector<Slab::Allocation> held;
  for (int i = 0; i < 64; ++i) held.push_back(slab->allocate());
  for (auto& a : held) {
    ASSERT_EQ(a.status, Status::success);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.object) % 16, 0u);
    std::memset(slab->context(a.index), static_cast<int>(a.index & 0xFF), kCtx);
    std::memset(a.object, 0xEE, 48);
  }
  for (auto& a : held) {
    const auto* p = static_cast<const unsigned char*>(slab->context(a.index));
    for (std::uint32_t i = 0; i < kCtx; ++i) ASSERT_EQ(p[i], a.index & 0xFF) << "slot " << a.index;
    EXPECT_EQ(slab->index_of(a.object), a.index);
    EXPECT_EQ(slab->validate(a.handle), Status::success) << "writes stayed inside their areas";
  }
}

TEST(Slab, ConcurrentAllocFreeExactlyOnce) {
  constexpr std::uint32_t kSlots = 1024;
  constexpr int kThreads = 8;
  constexpr int kRounds = 20000;
  auto slab = make(kSlots, 16, 16);
  // owner[i] is 0 while slot i is free; a second owner at once is a bug.
  std::vector<std::atomic<int>> owner(kSlots);
  std::atomic<long> double_owned{0}, allocs{0}, releases{0}, failures{0};

  std::vector<std::thread> threads;
  for (int t = 1; t <= kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<Slab::Allocation> mine;
      unsigned x = static_cast<unsigned>(t) * 2654435761u;
      for (int r = 0; r < kRounds; ++r) {
        x = x * 1664525u + 1013904223u;
        if (mine.size() < 64 && (x >> 16) % 3 != 0) {
          auto a = slab->allocate();
          if (a.status != Status::success) {
            failures++;
            continue;
          }
          int expected = 0;
          if (!owner[a.index].compare_exchange_strong(expected, t)) double_owned++;
          std::memcpy(slab->context(a.index), &t, sizeof t);
          mine.push_back(a);
          allocs++;
        } else if (!mine.empty()) {
          auto a = mine.back();
          mine.pop_back();
          int seen;
          std::memcpy(&seen, slab->context(a.index), sizeof seen);
          if (seen != t) double_owned++;
          owner[a.index].store(0);
          if (slab->release(a.handle) == Status::success) releases++;
        }
      }
      for (auto& a : mine) {
        owner[a.index].store(0);
        if (slab->release(a.handle) == Status::success) releases++;
      }
      slab->flush_thread_cache();
    });
  }
  for (auto& t : threads) t.join();

  EXPECT_EQ(double_owned.load(), 0);
  EXPECT_EQ(allocs.load(), releases.load());
  const SlabStats s = slab->stats();
  EXPECT_EQ(s.allocations, static_cast<std::uint64_t>(allocs.load()));
  EXPECT_EQ(s.releases, static_cast<std::uint64_t>(releases.load()));
  EXPECT_EQ(s.free_slots, kSlots) << "every slot came back";
  EXPECT_EQ(s.rejected, 0u);
  // 8 threads x 64 held < 1024 slots, but caches can hide slots from other threads.
  EXPECT_EQ(s.exhausted, static_cast<std::uint64_t>(failures.load()));
}

TEST(Slab, InjectedFailuresSurfaceAsFailures) {
  auto slab = make(64);
  FaultInjector fi;
  slab->set_alloc_hook(fi.hook());

  fi.set_always();
  for (int i = 0; i < 10; ++i) {
    auto a = slab->allocate();
    EXPECT_EQ(a.status, Status::insufficient_resources);
    EXPECT_EQ(a.object, nullptr);
  }
  EXPECT_EQ(fi.injected(), 10u);
  EXPECT_EQ(slab->stats().injected, 10u);
  EXPECT_EQ(slab->stats().free_slots, 64u) << "an injected failure takes no slot";

  fi.set_every_nth(3);
  std::vector<Status> got;
  for (int i = 0; i < 9; ++i) {
    auto a = slab->allocate();
    got.push_back(a.status);
    if (a.status == Status::success) {
      EXPECT_EQ(slab->release(a.handle), Status::success);
    }
  }
  for (int i = 0; i < 9; ++i)
    EXPECT_EQ(got[i], (i % 3 == 2) ? Status::insufficient_resources : Status::success) << i;

  fi.set_percent(50, 7);
  int failed = 0;
  for (int i = 0; i < 4000; ++i) {
    auto a = slab->allocate();
    if (a.status != Status::success) {
      failed++;
    } else {
      EXPECT_EQ(slab->release(a.handle), Status::success);
    }
  }
  EXPECT_GT(failed, 1600);
  EXPECT_LT(failed, 2400);

  fi.set_never();
  EXPECT_EQ(slab->allocate().status, Status::success);
  EXPECT_EQ(slab->stats().injected, fi.injected()) << "slab and injector agree on every failure";
  const std::uint64_t decisions = fi.decisions();
  slab->set_alloc_hook(AllocHook{});
  fi.set_always();
  EXPECT_EQ(slab->allocate().status, Status::success) << "an uninstalled hook is not consulted";
  EXPECT_EQ(fi.decisions(), decisions);
}

}  // namespace
}  // namespace ioq::detail
