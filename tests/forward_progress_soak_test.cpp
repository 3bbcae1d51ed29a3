// Forward-progress soak: 4 threads submit packets while the allocator fails
// always, or at random 1%, 10% and 50% of the time, with the
// always-use-reserved policy and 1, 4 and 64 reserved requests. Half the
// requests are completed inline by the handler, half are forwarded to a
// manual queue and completed by another thread (so reserved requests return
// to their owning queue from a queue that is not theirs).
//
// Checks: every packet completes exactly once and successfully; packets a
// submitter saw parked are served in the order it submitted them; at the end
// free + in_use == total, nothing is parked, and every request slot is free.
// A second test: under the paging-I/O policy, non-paging packets that fail
// allocation complete unsuccessful and paging ones succeed.
//
// IOQ_SOAK_PACKETS sets the packets per run (default 10^6; 10^5 under sanitizers).
#include <ioq/ioq.hpp>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

namespace ioq {
namespace {

#if defined(IOQ_SANITIZED)
constexpr int kDefaultPackets = 100'000;
#else
constexpr int kDefaultPackets = 1'000'000;
#endif

int packets_per_run() {
  if (const char* e = std::getenv("IOQ_SOAK_PACKETS")) return std::max(4, std::atoi(e));
  return kDefaultPackets;
}

constexpr int kSubmitters = 4;
constexpr int kSlots = 32;

struct Slot {
  Packet p;
  // Odd while the submitter rewrites the slot for a new packet; readers on
  // other threads ignore what they read across a change (a seqlock).
  std::atomic<std::uint64_t> version{0};
  int submitter = 0;
  std::atomic<std::uint64_t> seq{0};       // the submitter's sequence number
  std::atomic<bool> observed_parked{false}; // no request yet when submit returned
  std::atomic<int> completions{0};
  std::atomic<bool> in_flight{false};
};

struct Soak {
  std::atomic<std::uint64_t> completions{0};
  std::atomic<std::uint64_t> bad_status{0};
  std::atomic<std::uint64_t> doubles{0};
  std::atomic<std::uint64_t> fifo_violations{0};
  std::atomic<std::uint64_t> served_reserved{0};
  std::vector<std::unique_ptr<std::array<Slot, kSlots>>> slots;
  Queue* manual = nullptr;
  bool paging_policy = false;
};
Soak* g = nullptr;

void on_complete(Packet& p) noexcept {
  auto* s = static_cast<Slot*>(p.user);
  if (s->completions.fetch_add(1) != 0) g->doubles.fetch_add(1);
  const bool paging = (p.flags & kPacketPaging) != 0;
  const bool ok = p.status == Status::success ||
                  (g->paging_policy && !paging && p.status == Status::unsuccessful);
  if (!ok) g->bad_status.fetch_add(1);
  g->completions.fetch_add(1);
  s->in_flight.store(false, std::memory_order_release);
}

// FIFO among parked packets: when a packet its submitter saw parked is
// delivered (so it was served), every packet that submitter saw parked
// earlier must have been served too (it has a request, or completed).
void note_delivery(Request r) {
  auto* s = static_cast<Slot*>(r.packet()->user);
  if (r.is_reserved()) g->served_reserved.fetch_add(1);
  if (!s->observed_parked.load(std::memory_order_acquire)) return;
  const std::uint64_t mine = s->seq.load(std::memory_order_acquire);
  for (Slot& other : *g->slots[static_cast<std::size_t>(s->submitter)]) {
    if (&other == s) continue;
    const std::uint64_t v1 = other.version.load(std::memory_order_acquire);
    if (v1 & 1) continue;  // being rewritten: a newer packet
    const bool parked_earlier = other.observed_parked.load(std::memory_order_acquire) &&
                                other.seq.load(std::memory_order_acquire) < mine;
    const bool still_parked =
        other.in_flight.load(std::memory_order_acquire) &&
        std::atomic_ref<std::uint64_t>(other.p.request).load(std::memory_order_acquire) == 0 &&
        std::atomic_ref<std::uintptr_t>(other.p.parked).load(std::memory_order_acquire) != 0;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (other.version.load(std::memory_order_relaxed) != v1) continue;  // changed under us
    if (parked_earlier && still_parked) g->fifo_violations.fetch_add(1);
  }
}

void handler(Queue&, Request r) {
  note_delivery(r);
  thread_local std::mt19937 rng{std::random_device{}()};
  if (rng() & 1) {
    (void)r.complete(Status::success, r.length());
  } else if (r.forward_to_queue(*g->manual) != Status::success) {
    (void)r.complete(Status::success);
  }
}

struct SoakRun {
  FaultInjector::Mode mode;
  double percent;
  std::uint32_t reserved;
};

void soak(const SoakRun& run, bool paging_policy) {
  Soak state;
  g = &state;
  state.paging_policy = paging_policy;
  FaultInjector fi;
  auto created = Device::create({.max_requests = 256, .alloc_hook = fi.hook()});
  ASSERT_TRUE(created);
  Device& dev = **created;
  auto manual = dev.create_queue({.dispatch = DispatchType::manual});
  ASSERT_TRUE(manual);
  state.manual = *manual;
  QueueConfig qc{.dispatch = DispatchType::parallel, .max_presented = 16, .default_queue = true};
  qc.on_default = handler;
  auto q = dev.create_queue(qc);
  ASSERT_TRUE(q);
  ASSERT_EQ((*q)->assign_forward_progress_policy(
                {.total_reserved = run.reserved,
                 .policy = paging_policy ? ForwardProgressPolicy::paging_io
                                         : ForwardProgressPolicy::always_use_reserved}),
            Status::success);
  ASSERT_EQ(dev.start(), Status::success);
  if (run.mode == FaultInjector::Mode::always) fi.set_always();
  else fi.set_percent(run.percent, 12345);

  const int total = packets_per_run();
  const int per_thread = total / kSubmitters;
  std::atomic<bool> stop{false};
  for (int t = 0; t < kSubmitters; ++t) state.slots.push_back(std::make_unique<std::array<Slot, kSlots>>());

  std::thread completer([&] {
    Request r;
    while (!stop.load()) {
      if ((*manual)->retrieve_next_request(r) == Status::success) {
        (void)r.complete(Status::success, r.length());
      } else {
        std::this_thread::yield();
      }
    }
  });
  std::vector<std::thread> submitters;
  for (int t = 0; t < kSubmitters; ++t) {
    submitters.emplace_back([&, t] {
      auto& mine = *state.slots[static_cast<std::size_t>(t)];
      std::mt19937 rng(static_cast<unsigned>(t) + 7);
      std::uint64_t seq = 0;
      for (int i = 0; i < per_thread;) {
        Slot& s = mine[static_cast<std::size_t>(i) % kSlots];
        if (s.in_flight.load(std::memory_order_acquire)) {
          std::this_thread::yield();
          continue;
        }
        s.version.fetch_add(1, std::memory_order_acq_rel);  // odd: rewriting
        s.completions.store(0);
        std::atomic_ref<std::uint64_t>(s.p.request).store(0, std::memory_order_relaxed);
        std::atomic_ref<std::uintptr_t>(s.p.parked).store(0, std::memory_order_relaxed);
        s.p.link = nullptr;
        s.p.status = Status::pending;
        s.p.type = RequestType::read;
        s.p.length = 512;
        s.p.flags = (paging_policy && (rng() & 1)) ? static_cast<std::uint32_t>(kPacketPaging) : 0u;
        s.p.on_complete = on_complete;
        s.p.user = &s;
        s.submitter = t;
        s.seq.store(++seq, std::memory_order_release);
        s.observed_parked.store(false);
        s.in_flight.store(true, std::memory_order_release);
        s.version.fetch_add(1, std::memory_order_release);  // even: stable
        ASSERT_EQ(dev.submit(s.p), Status::pending);
        // No request handle and not completed: it is parked (or was, until a
        // moment ago); record it so its delivery order can be checked.
        if (std::atomic_ref<std::uint64_t>(s.p.request).load(std::memory_order_acquire) == 0 &&
            s.in_flight.load(std::memory_order_acquire) &&
            std::atomic_ref<std::uintptr_t>(s.p.parked).load(std::memory_order_acquire) != 0)
          s.observed_parked.store(true, std::memory_order_release);
        ++i;
      }
    });
  }
  for (auto& th : submitters) th.join();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (state.completions.load() < static_cast<std::uint64_t>(per_thread) * kSubmitters &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  completer.join();

  const std::uint64_t expected = static_cast<std::uint64_t>(per_thread) * kSubmitters;
  EXPECT_EQ(state.completions.load(), expected) << "every packet completed";
  EXPECT_EQ(state.doubles.load(), 0u) << "none twice";
  EXPECT_EQ(state.bad_status.load(), 0u);
  EXPECT_EQ(state.fifo_violations.load(), 0u) << "parked packets are served oldest first";
  const ForwardProgressStats st = (*q)->forward_progress_stats();
  EXPECT_EQ(st.free + st.in_use, st.total);
  EXPECT_EQ(st.free, st.total) << "every reserved request came back";
  EXPECT_EQ(st.parked, 0u);
  EXPECT_EQ(dev.stats().free_requests, 256u) << "every normal request came back";
  EXPECT_EQ(dev.verifier().total(), 0u);
  if (run.mode == FaultInjector::Mode::always && !paging_policy) {
    EXPECT_EQ(state.served_reserved.load(), expected) << "with allocation always failing, all were reserved";
  }
  EXPECT_GT(st.reserved_used, 0u);
  std::printf("forward progress %s %.0f%% reserved=%u: %llu packets, %llu reserved, %llu parked\n",
              run.mode == FaultInjector::Mode::always ? "always" : "percent", run.percent, run.reserved,
              static_cast<unsigned long long>(expected), static_cast<unsigned long long>(st.reserved_used),
              static_cast<unsigned long long>(st.parked_total));
  g = nullptr;
}

class ForwardProgressSoak : public ::testing::TestWithParam<std::tuple<int, std::uint32_t>> {};

TEST_P(ForwardProgressSoak, AlwaysUseReservedEveryPacketSucceeds) {
  const auto [failure, reserved] = GetParam();
  const SoakRun run = failure == 100 ? SoakRun{FaultInjector::Mode::always, 100, reserved}
                                 : SoakRun{FaultInjector::Mode::percent, static_cast<double>(failure), reserved};
  soak(run, /*paging_policy=*/false);
}

INSTANTIATE_TEST_SUITE_P(FailurePercentAndReserved, ForwardProgressSoak,
                         ::testing::Combine(::testing::Values(100, 1, 10, 50), ::testing::Values(1u, 4u, 64u)),
                         [](const auto& param_info) {
                           const int f = std::get<0>(param_info.param);
                           return (f == 100 ? std::string("Always") : "Percent" + std::to_string(f)) +
                                  "_Reserved" + std::to_string(std::get<1>(param_info.param));
                         });

TEST(ForwardProgressSoakPaging, NonPagingFailsPagingSucceeds) {
  soak(SoakRun{FaultInjector::Mode::always, 100, 4}, /*paging_policy=*/true);
}

}  // namespace
}  // namespace ioq
