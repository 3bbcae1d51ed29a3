// QueueConfig::on_batch and Target::send_batch: a queue that hands its
// driver whole runs of requests, and a target that takes a run at once.
#include <ioq/ioq.hpp>
#include <ioq/target.hpp>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "queue_harness.hpp"

namespace ioq {
namespace {

using test::Packets;
using test::TrackedPacket;

// What a batch handler saw: the size of each call, and each request's packet
// in the order the calls gave them.
struct Seen {
  std::vector<std::size_t> sizes;
  std::vector<Packet*> order;
  std::vector<Request> held;  // requests the handler kept (not completed)
  bool complete = true;       // complete each request in the handler
};
Seen* g_seen = nullptr;

void record(Queue&, std::span<const Request> run) {
  g_seen->sizes.push_back(run.size());
  for (const Request r : run) {
    g_seen->order.push_back(r.packet());
    if (g_seen->complete) EXPECT_EQ(r.complete(Status::success, r.length()), Status::success);
    else g_seen->held.push_back(r);
  }
}

struct BatchQueue {
  Seen seen;
  std::unique_ptr<Device> dev;
  Queue* q = nullptr;
  explicit BatchQueue(DispatchType dispatch = DispatchType::parallel, bool allow_zero_length = false) {
    g_seen = &seen;
    dev = test::make_device({.max_requests = 512});
    QueueConfig qc{.dispatch = dispatch, .allow_zero_length = allow_zero_length, .default_queue = true};
    qc.on_batch = record;
    q = test::make_queue(*dev, qc);
  }
  ~BatchQueue() { g_seen = nullptr; }
};

std::vector<Packet*> pointers(Packets& ps) {
  std::vector<Packet*> out;
  for (std::size_t i = 0; i < ps.size(); ++i) out.push_back(&ps[i].packet);
  return out;
}

// Starts the device, submits n reads in one submit_batch to a handler that
// keeps them (b.seen.held), and checks it got them all.
void submit_held_run(BatchQueue& b, Packets& ps, std::size_t n) {
  b.seen.complete = false;
  ASSERT_EQ(b.dev->start(), Status::success);
  for (std::size_t i = 0; i < n; ++i) ps.make(RequestType::read);
  const std::vector<Packet*> all = pointers(ps);
  ASSERT_EQ(b.dev->submit_batch(all.data(), all.size()), Status::pending);
  ASSERT_EQ(b.seen.held.size(), n);
}

TEST(BatchHandler, ASubmitBatchArrivesInOneCallInSubmissionOrder) {
  BatchQueue b;
  ASSERT_EQ(b.dev->start(), Status::success);
  Packets ps;
  for (int i = 0; i < 20; ++i) ps.make(RequestType::read, 512 + i);
  const std::vector<Packet*> all = pointers(ps);
  ASSERT_EQ(b.dev->submit_batch(all.data(), all.size()), Status::pending);
  EXPECT_EQ(b.seen.sizes, std::vector<std::size_t>{20});
  EXPECT_EQ(b.seen.order, all);
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(ps[i].status.load(), Status::success);
    EXPECT_EQ(ps[i].information.load(), 512 + i);
  }
  EXPECT_EQ(b.dev->stats().free_requests, 512u);
}

TEST(BatchHandler, ALongRunComesInCallsOfAtMost64InOrder) {
  BatchQueue b;
  ASSERT_EQ(b.dev->start(), Status::success);
  Packets ps;
  for (int i = 0; i < 150; ++i) ps.make(RequestType::write);
  const std::vector<Packet*> all = pointers(ps);
  ASSERT_EQ(b.dev->submit_batch(all.data(), all.size()), Status::pending);
  EXPECT_EQ(b.seen.sizes, (std::vector<std::size_t>{64, 64, 22}));
  EXPECT_EQ(b.seen.order, all);
  ps.expect_all_completed_once();
}

TEST(BatchHandler, TheHandlerOwnsEveryRequestOfItsRunAndEachIsCountedPresented) {
  BatchQueue b;
  Packets ps;
  ASSERT_NO_FATAL_FAILURE(submit_held_run(b, ps, 8));
  EXPECT_EQ(b.q->get_state().driver_owned, 8u);
  EXPECT_EQ(b.q->counters().presented, 8u);
  for (const Request r : b.seen.held) EXPECT_EQ(r.queue(), b.q);
  for (const Request r : b.seen.held) EXPECT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(b.q->get_state().driver_owned, 0u);
  ps.expect_all_completed_once();
}

TEST(BatchHandler, ZeroLengthRequestsCompleteBeforeTheCallUnlessAllowed) {
  for (const bool allow : {false, true}) {
    BatchQueue b(DispatchType::parallel, allow);
    ASSERT_EQ(b.dev->start(), Status::success);
    Packets ps;
    ps.make(RequestType::read, 512);
    ps.make(RequestType::read, 0);
    ps.make(RequestType::write, 512);
    const std::vector<Packet*> all = pointers(ps);
    ASSERT_EQ(b.dev->submit_batch(all.data(), all.size()), Status::pending);
    if (allow) {
      EXPECT_EQ(b.seen.order, all);
    } else {
      EXPECT_EQ(b.seen.order, (std::vector<Packet*>{all[0], all[2]}));
      EXPECT_EQ(ps[1].status.load(), Status::success) << "a zero-length read completes without the driver";
    }
    ps.expect_all_completed_once();
  }
}

TEST(BatchHandler, RequestsTakenFromTheQueueComeOneAtATimeInOrder) {
  BatchQueue b;
  ASSERT_EQ(b.dev->start(), Status::success);
  ASSERT_EQ(b.q->stop(), Status::success);  // Accept without Dispatch: everything waits queued
  Packets ps;
  for (int i = 0; i < 10; ++i) ps.make(RequestType::read);
  const std::vector<Packet*> all = pointers(ps);
  ASSERT_EQ(b.dev->submit_batch(all.data(), 4), Status::pending);
  for (std::size_t i = 4; i < ps.size(); ++i) ASSERT_EQ(b.dev->submit(ps[i].packet), Status::pending);
  EXPECT_EQ(b.q->get_state().queued, 10u);
  EXPECT_TRUE(b.seen.sizes.empty());
  ASSERT_EQ(b.q->start(), Status::success);
  EXPECT_EQ(b.seen.sizes, std::vector<std::size_t>(10, 1));
  EXPECT_EQ(b.seen.order, pointers(ps));
  ps.expect_all_completed_once();
}

TEST(BatchHandler, ASequentialQueueGivesOneRequestPerCall) {
  BatchQueue b(DispatchType::sequential);
  ASSERT_EQ(b.dev->start(), Status::success);
  Packets ps;
  for (int i = 0; i < 6; ++i) ps.make(RequestType::read);
  const std::vector<Packet*> all = pointers(ps);
  ASSERT_EQ(b.dev->submit_batch(all.data(), all.size()), Status::pending);
  EXPECT_EQ(b.seen.sizes, std::vector<std::size_t>(6, 1));
  EXPECT_EQ(b.seen.order, all);
  ps.expect_all_completed_once();
}

TEST(BatchHandler, EveryRequestTypeGoesThroughIt) {
  BatchQueue b;
  ASSERT_EQ(b.dev->start(), Status::success);
  Packets ps;
  for (const RequestType t : {RequestType::read, RequestType::write, RequestType::device_control,
                              RequestType::internal_device_control, RequestType::flush})
    ASSERT_EQ(b.dev->submit(ps.make(t).packet), Status::pending) << static_cast<int>(t);
  EXPECT_EQ(b.seen.order, pointers(ps));
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(ps[i].status.load(), Status::success);
}

TEST(BatchHandler, AnyTypeMayBeRoutedToABatchQueue) {
  auto dev = test::make_device();
  QueueConfig qc{.dispatch = DispatchType::parallel};
  qc.on_batch = record;
  Queue* q = test::make_queue(*dev, qc);
  for (const RequestType t : {RequestType::read, RequestType::write, RequestType::device_control})
    EXPECT_EQ(dev->configure_request_dispatching(*q, t), Status::success) << static_cast<int>(t);
}

TEST(BatchHandler, ConfigurationMistakesAreRefused) {
  auto dev = test::make_device();
  QueueConfig both{.dispatch = DispatchType::parallel};
  both.on_batch = record;
  both.on_read = [](Queue&, Request) {};
  auto r = dev->create_queue(both);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, Status::invalid_parameter);
  QueueConfig manual{.dispatch = DispatchType::manual};
  manual.on_batch = record;
  r = dev->create_queue(manual);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, Status::invalid_parameter);
}

// A target that counts the requests it takes and completes them at once.
class CountingTarget final : public Target {
 public:
  Status send(Request request) noexcept override {
    ++taken;
    return request.complete(Status::success, request.length());
  }
  [[nodiscard]] const char* name() const noexcept override { return "counting"; }
  int taken = 0;
};

TEST(BatchHandler, DefaultSendBatchTakesARunAndStopsAtTheFirstRefusedRequest) {
  BatchQueue b;
  Packets ps;
  ASSERT_NO_FATAL_FAILURE(submit_held_run(b, ps, 6));
  CountingTarget t;
  std::vector<Request> run(b.seen.held.begin(), b.seen.held.end());
  // The third is a request already completed: refused, the rest not tried.
  ASSERT_EQ(run[2].complete(Status::unsuccessful), Status::success);
  Status refused = Status::success;
  EXPECT_EQ(t.send_batch(run, &refused), 2u);
  EXPECT_EQ(refused, Status::usage_already_completed);
  EXPECT_EQ(t.taken, 3) << "two taken, then the refused one tried";
  EXPECT_EQ(ps[3].completions.load(), 0) << "after the refused request nothing was tried";
  EXPECT_EQ(t.send_batch(std::span<const Request>(run).subspan(3), nullptr), 3u);
  ps.expect_all_completed_once();
  EXPECT_EQ(ps[2].status.load(), Status::unsuccessful);
}

// Many threads at once: submitters hand the queue runs of 8 with
// submit_batch and cancel some of their own packets; the batch handler
// completes some requests at once and holds the rest cancelable for a
// completer thread; a controller stops the queue synchronously and starts it
// again, so that runs also arrive while it is stopped (and come back one at a
// time). Every packet completes exactly once, cancelled only if its
// submitter cancelled it.
namespace storm {

struct Slot {
  Packet p;
  std::atomic<int> completions{0};
  std::atomic<bool> in_flight{false};
  std::atomic<bool> cancel_requested{false};
};

constexpr auto kPatience = std::chrono::seconds(10);
std::atomic<int> g_violations{0};
std::atomic<bool> g_abandon{false};  // something is stuck: everyone stops waiting
std::atomic<std::uint64_t> g_runs{0}, g_run_requests{0}, g_max_run{0};

void violation(const char* what) {
  g_violations.fetch_add(1);
  ADD_FAILURE() << what;
}
test::HeldRequests g_held(violation);

void on_complete(Packet& p) noexcept {
  auto* s = static_cast<Slot*>(p.user);
  if (s->completions.fetch_add(1) != 0) violation("a packet completed twice");
  if (p.status == Status::cancelled && !s->cancel_requested.load()) violation("cancelled without a cancel");
  if (p.status != Status::success && p.status != Status::cancelled) violation("an illegal completion status");
  s->in_flight.store(false, std::memory_order_release);
}

void batch_handler(Queue&, std::span<const Request> run) {
  g_runs.fetch_add(1);
  g_run_requests.fetch_add(run.size());
  std::uint64_t m = g_max_run.load();
  while (run.size() > m && !g_max_run.compare_exchange_weak(m, run.size())) {
  }
  thread_local std::mt19937 rng{std::random_device{}()};
  for (const Request r : run) {
    if (rng() % 2 == 0) {
      if (r.complete(Status::success, r.length()) != Status::success) violation("complete failed");
      continue;
    }
    const Status s = g_held.hold(r);
    if (s == Status::cancelled) {
      // Canceled before the mark: the driver completes it.
      if (r.complete(Status::cancelled) != Status::success) violation("complete after a refused mark failed");
    } else if (s != Status::success) {
      violation("mark_cancelable failed");
    }
  }
}

}  // namespace storm

TEST(BatchHandler, RunsSubmittedCancelledAndStoppedFromManyThreadsCompleteExactlyOnce) {
  using namespace storm;
#if defined(IOQ_SANITIZED)
  constexpr int kBatches = 2000;
#else
  constexpr int kBatches = 20000;
#endif
  constexpr int kSubmitters = 3, kRun = 8, kSlots = 4 * kRun;
  auto dev = test::make_device({.max_requests = 1024});
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_batch = batch_handler;
  Queue* q = test::make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);

  std::atomic<int> submitters_left{kSubmitters};
  std::atomic<bool> stop_helpers{false};
  std::vector<std::unique_ptr<std::array<Slot, kSlots>>> slots;
  for (int t = 0; t < kSubmitters; ++t) slots.push_back(std::make_unique<std::array<Slot, kSlots>>());
  std::vector<std::thread> threads;
  for (int t = 0; t < kSubmitters; ++t) {
    threads.emplace_back([&, t] {
      auto& mine = *slots[t];
      std::mt19937 rng(static_cast<unsigned>(t) + 1);
      for (int b = 0; b < kBatches; ++b) {
        // The next kRun slots, once all of them are free again.
        Slot* run = &mine[static_cast<std::size_t>((b * kRun) % kSlots)];
        const auto deadline = std::chrono::steady_clock::now() + kPatience;
        for (int i = 0; i < kRun && !g_abandon.load(); ++i) {
          while (run[i].in_flight.load(std::memory_order_acquire)) {
            if (std::chrono::steady_clock::now() > deadline) {
              violation("a packet stayed in flight for 10 s");
              g_abandon = true;
              break;
            }
            if (rng() % 8 == 0) {
              run[i].cancel_requested = true;
              (void)dev->cancel(run[i].p);
            }
            std::this_thread::yield();
          }
        }
        if (g_abandon.load()) break;
        std::array<Packet*, kRun> ptrs{};
        for (int i = 0; i < kRun; ++i) {
          Slot& s = run[i];
          if (b >= kSlots / kRun && s.completions.exchange(0) != 1) violation("a slot's packet did not complete once");
          s.p = Packet{};
          s.p.type = i % 2 == 0 ? RequestType::read : RequestType::write;
          s.p.length = 512;
          s.p.on_complete = on_complete;
          s.p.user = &s;
          s.cancel_requested = false;
          s.in_flight.store(true, std::memory_order_release);
          ptrs[static_cast<std::size_t>(i)] = &s.p;
        }
        if (dev->submit_batch(ptrs.data(), ptrs.size()) != Status::pending) violation("submit_batch refused");
        if (rng() % 4 == 0) {
          Slot& s = run[rng() % kRun];
          s.cancel_requested = true;
          (void)dev->cancel(s.p);
        }
      }
      submitters_left.fetch_sub(1);
    });
  }
  // Completer: finishes held requests unless their cancel callback won.
  threads.emplace_back([&] { g_held.run_completer(stop_helpers); });
  // Controller: stop (waiting for the driver's requests) and start again.
  threads.emplace_back([&] {
    // stop() with a callback and a bounded wait (stop_synchronously's
    // condition), so that a lost request fails the test instead of hanging it.
    while (submitters_left.load() > 0 && !g_abandon.load()) {
      auto stopped = std::make_unique<std::atomic<bool>>(false);
      if (q->stop([](Queue&, void* c) { static_cast<std::atomic<bool>*>(c)->store(true); }, stopped.get()) !=
          Status::success)
        violation("stop failed");
      const auto deadline = std::chrono::steady_clock::now() + kPatience;
      while (!stopped->load()) {
        if (std::chrono::steady_clock::now() > deadline) {
          violation("a stop did not finish in 10 s");
          g_abandon = true;
          (void)stopped.release();  // its callback may still fire: the flag stays
          return;
        }
        std::this_thread::yield();
      }
      if (q->start() != Status::success) violation("start failed");
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  for (int t = 0; t < kSubmitters; ++t) threads[static_cast<std::size_t>(t)].join();
  threads[kSubmitters + 1].join();  // the controller, which leaves the queue started
  const bool settled = test::wait_until([&] {
    for (auto& m : slots)
      for (Slot& s : *m)
        if (s.in_flight.load(std::memory_order_acquire)) return false;
    return true;
  });
  stop_helpers = true;
  threads[kSubmitters].join();
  if (g_abandon.load() || !settled) {
    // Requests are stuck in the device: leak it rather than wait in its
    // destructor (the slots and the stop flag stay with it).
    ADD_FAILURE() << "some packets never completed";
    (void)dev.release();
    (void)new std::vector<std::unique_ptr<std::array<Slot, kSlots>>>(std::move(slots));
    return;
  }
  for (auto& m : slots)
    for (Slot& s : *m) EXPECT_EQ(s.completions.load(), 1);
  EXPECT_EQ(g_violations.load(), 0);
  EXPECT_LE(g_run_requests.load(), std::uint64_t{kSubmitters} * kBatches * kRun)
      << "no request reached the handler twice (one cancelled while queued never reaches it)";
  EXPECT_GT(g_max_run.load(), 1u) << "some runs came whole";
  const QueueState st = q->get_state();
  EXPECT_EQ(st.queued, 0u);
  EXPECT_EQ(st.driver_owned, 0u);
  EXPECT_EQ(dev->stats().free_requests, 1024u);
  EXPECT_EQ(dev->verifier().total(), 0u) << "no usage error";
  g_held.clear();
}

}  // namespace
}  // namespace ioq
