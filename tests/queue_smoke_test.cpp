// Quick end-to-end checks of the queue model's main paths.
#include <ioq/ioq.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <tuple>
#include <vector>

namespace ioq {
namespace {

struct Done {
  std::atomic<int> n{0};
};

void on_done(Packet& p) noexcept { static_cast<Done*>(p.user)->n++; }

// n 512-byte reads whose callback counts into done.
std::vector<Packet> reads(std::size_t n, Done& done) {
  std::vector<Packet> ps(n);
  for (auto& p : ps) {
    p.type = RequestType::read;
    p.length = 512;
    p.on_complete = on_done;
    p.user = &done;
  }
  return ps;
}

TEST(QueueSmoke, SequentialCompletesInline) {
  auto dev = Device::create({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
  qc.on_default = [](Queue&, Request r) { (void)r.complete(Status::success, r.length()); };
  auto q = (*dev)->create_queue(qc);
  ASSERT_TRUE(q);
  ASSERT_EQ((*dev)->start(), Status::success);
  Done done;
  std::vector<Packet> ps = reads(10, done);
  for (auto& p : ps) ASSERT_EQ((*dev)->submit(p), Status::pending);
  EXPECT_EQ(done.n.load(), 10);
  for (auto& p : ps) {
    EXPECT_EQ(p.status, Status::success);
    EXPECT_EQ(p.information, 512u);
  }
  auto st = (*q)->get_state();
  EXPECT_EQ(st.queued, 0u);
  EXPECT_EQ(st.driver_owned, 0u);
  EXPECT_EQ((*dev)->stats().free_requests, 64u);
}

// Counters are live (issue 5): a handler that completes its request, and the
// packet's own callback, read the completion counted already, whether the
// loop was handed one request or a batch. A handler also finds itself counted
// as presented (a batch is counted whole, before its first handler).
class CountersSeeCompletion : public ::testing::TestWithParam<DispatchType> {};

struct CountSeen {
  Device* dev = nullptr;
  std::vector<std::uint64_t> in_handler_queue, in_handler_device, in_callback, presented_in_handler;
};
CountSeen* g_seen = nullptr;

TEST_P(CountersSeeCompletion, FromTheHandlerAndFromThePacketCallback) {
  auto dev = Device::create({.max_requests = 64});
  ASSERT_TRUE(dev);
  CountSeen seen;
  seen.dev = dev->get();
  g_seen = &seen;
  QueueConfig qc{.dispatch = GetParam(), .default_queue = true};
  qc.on_default = [](Queue& q, Request r) {
    g_seen->presented_in_handler.push_back(q.counters().presented);
    (void)r.complete(Status::success);
    g_seen->in_handler_queue.push_back(q.counters().completed);
    g_seen->in_handler_device.push_back(g_seen->dev->stats().completed);
  };
  auto q = (*dev)->create_queue(qc);
  ASSERT_TRUE(q);
  ASSERT_EQ((*dev)->start(), Status::success);
  std::vector<Packet> ps(8);
  std::vector<Packet*> ptrs;
  for (auto& p : ps) {
    p.type = RequestType::read;
    p.length = 512;
    p.on_complete = [](Packet&) noexcept { g_seen->in_callback.push_back(g_seen->dev->stats().completed); };
    ptrs.push_back(&p);
  }
  ASSERT_EQ((*dev)->submit_batch(ptrs.data(), 4), Status::pending);  // one loop, four handlers
  for (std::size_t i = 4; i < ps.size(); ++i) ASSERT_EQ((*dev)->submit(ps[i]), Status::pending);
  const std::vector<std::uint64_t> want{1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(seen.in_callback, want);
  EXPECT_EQ(seen.in_handler_queue, want);
  EXPECT_EQ(seen.in_handler_device, want);
  EXPECT_EQ((*q)->counters().completed, 8u);
  EXPECT_EQ((*q)->counters().presented, 8u);
  EXPECT_EQ((*dev)->stats().completed, 8u);
  ASSERT_EQ(seen.presented_in_handler.size(), 8u);
  for (std::size_t i = 0; i < 8; ++i) {
    // Handler i sees itself counted, and nothing beyond what was submitted.
    EXPECT_GE(seen.presented_in_handler[i], i + 1) << "handler " << i;
    EXPECT_LE(seen.presented_in_handler[i], std::max<std::size_t>(i + 1, 4)) << "handler " << i;
  }
  g_seen = nullptr;
}

INSTANTIATE_TEST_SUITE_P(QueueSmoke, CountersSeeCompletion,
                         ::testing::Values(DispatchType::sequential, DispatchType::parallel),
                         [](const auto& param_info) {
                           return std::string(param_info.param == DispatchType::sequential ? "Sequential"
                                                                                           : "Parallel");
                         });

TEST(QueueSmoke, ManualRetrieveAndForward) {
  auto dev = Device::create({.max_requests = 64});
  ASSERT_TRUE(dev);
  auto manual = (*dev)->create_queue({.dispatch = DispatchType::manual});
  ASSERT_TRUE(manual);
  static Queue* target = nullptr;
  target = *manual;
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue&, Request r) { EXPECT_EQ(r.forward_to_queue(*target), Status::success); };
  auto par = (*dev)->create_queue(qc);
  ASSERT_TRUE(par);
  ASSERT_EQ((*dev)->start(), Status::success);
  Done done;
  std::vector<Packet> ps(5);
  for (std::size_t i = 0; i < ps.size(); ++i) {
    ps[i].type = RequestType::write;
    ps[i].length = static_cast<std::uint32_t>(i + 1);
    ps[i].on_complete = on_done;
    ps[i].user = &done;
    ASSERT_EQ((*dev)->submit(ps[i]), Status::pending);
  }
  EXPECT_EQ(done.n.load(), 0);
  EXPECT_EQ((*manual)->get_state().queued, 5u);
  EXPECT_EQ((*par)->get_state().driver_owned, 0u);
  for (std::uint32_t i = 0; i < 5; ++i) {
    Request r;
    ASSERT_EQ((*manual)->retrieve_next_request(r), Status::success);
    EXPECT_EQ(r.length(), i + 1) << "FIFO order";
    EXPECT_EQ(r.queue(), *manual);
    EXPECT_EQ(r.complete(Status::success, 7), Status::success);
  }
  Request none;
  EXPECT_EQ((*manual)->retrieve_next_request(none), Status::no_more_entries);
  EXPECT_EQ(done.n.load(), 5);
}

TEST(QueueSmoke, ConcurrentSubmittersParallel) {
  auto dev = Device::create({.max_requests = 1024});
  ASSERT_TRUE(dev);
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue&, Request r) { (void)r.complete(Status::success); };
  auto q = (*dev)->create_queue(qc);
  ASSERT_TRUE(q);
  ASSERT_EQ((*dev)->start(), Status::success);
  Done done;
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      std::vector<Packet> ps(8);
      for (int i = 0; i < kEach; ++i) {
        Packet& p = ps[i % 8];
        p = Packet{};
        p.type = RequestType::read;
        p.length = 1;
        p.on_complete = on_done;
        p.user = &done;
        ASSERT_EQ((*dev)->submit(p), Status::pending);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(done.n.load(), kThreads * kEach);
  EXPECT_EQ((*q)->get_state().driver_owned, 0u);
}

// A packet names its request (Packet::request) before anyone else can see the
// request: before its handler runs (submit's fast path publishes the handle
// only after making the request driver-owned, and every other path before it
// queues the request), so Device::cancel(packet) from the handler, or on a
// request waiting in a queue, reaches it. Covers submit and submit_batch on
// parallel and sequential queues (fast paths) and a manual queue (queued).
class PacketNamesItsRequest : public ::testing::TestWithParam<std::tuple<DispatchType, bool>> {};

Device* g_dev = nullptr;

void cancel_own_packet_then_complete(Queue&, Request r) {
  Packet* p = r.packet();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->request, r.handle()) << "the handler runs before its packet names the request";
  EXPECT_FALSE(r.is_canceled());
  EXPECT_EQ(g_dev->cancel(*p), Status::success);
  EXPECT_TRUE(r.is_canceled());
  (void)r.complete(Status::cancelled);
}

TEST_P(PacketNamesItsRequest, BeforeItsHandlerRunsOrItIsQueued) {
  const auto [dispatch, batch] = GetParam();
  auto dev = Device::create({.max_requests = 64});
  ASSERT_TRUE(dev);
  g_dev = dev->get();
  QueueConfig qc{.dispatch = dispatch, .default_queue = true};
  if (dispatch != DispatchType::manual) qc.on_default = cancel_own_packet_then_complete;
  auto q = (*dev)->create_queue(qc);
  ASSERT_TRUE(q);
  ASSERT_EQ((*dev)->start(), Status::success);
  Done done;
  constexpr int kN = 16;
  std::vector<Packet> ps = reads(kN, done);
  std::vector<Packet*> ptrs;
  for (auto& p : ps) ptrs.push_back(&p);
  if (batch) {
    ASSERT_EQ((*dev)->submit_batch(ptrs.data(), ptrs.size()), Status::pending);
  } else {
    for (auto& p : ps) ASSERT_EQ((*dev)->submit(p), Status::pending);
  }
  if (dispatch == DispatchType::manual) {
    // Queued: every packet names its request already; canceling through the
    // packet completes it cancelled.
    EXPECT_EQ(done.n.load(), 0);
    for (auto& p : ps) EXPECT_EQ((*dev)->cancel(p), Status::success);
  }
  EXPECT_EQ(done.n.load(), kN);
  for (auto& p : ps) EXPECT_EQ(p.status, Status::cancelled);
  EXPECT_EQ((*q)->get_state().driver_owned, 0u);
  EXPECT_EQ((*dev)->stats().free_requests, 64u);
  g_dev = nullptr;
}

// The same for a reserved request (forward progress, every normal allocation
// failing): the free reserved request is bound without publishing, and
// arrive() publishes it as for a normal one.
TEST(QueueSmoke, PacketNamesItsReservedRequestBeforeItsHandlerRuns) {
  FaultInjector fail_all;
  fail_all.set_always();
  auto dev = Device::create({.max_requests = 64, .alloc_hook = fail_all.hook()});
  ASSERT_TRUE(dev);
  g_dev = dev->get();
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue& q, Request r) {
    EXPECT_TRUE(r.is_reserved());
    cancel_own_packet_then_complete(q, r);
  };
  auto q = (*dev)->create_queue(qc);
  ASSERT_TRUE(q);
  ASSERT_EQ((*q)->assign_forward_progress_policy({.total_reserved = 2}), Status::success);
  ASSERT_EQ((*dev)->start(), Status::success);
  Done done;
  std::vector<Packet> ps = reads(8, done);
  for (auto& p : ps) ASSERT_EQ((*dev)->submit(p), Status::pending);
  EXPECT_EQ(done.n.load(), 8);
  for (auto& p : ps) EXPECT_EQ(p.status, Status::cancelled);
  EXPECT_GE(fail_all.injected(), 8u) << "the normal allocations did not fail: no reserved request was used";
  g_dev = nullptr;
}

INSTANTIATE_TEST_SUITE_P(QueueSmoke, PacketNamesItsRequest,
                         ::testing::Combine(::testing::Values(DispatchType::parallel, DispatchType::sequential,
                                                              DispatchType::manual),
                                            ::testing::Bool()));

}  // namespace
}  // namespace ioq
