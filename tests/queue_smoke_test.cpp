// Quick end-to-end checks of the queue model's main paths.
#include <ioq/ioq.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace ioq {
namespace {

struct Done {
  std::atomic<int> n{0};
};

void on_done(Packet& p) noexcept { static_cast<Done*>(p.user)->n++; }

TEST(QueueSmoke, SequentialCompletesInline) {
  auto dev = Device::create({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
  qc.on_default = [](Queue&, Request r) { (void)r.complete(Status::success, r.length()); };
  auto q = (*dev)->create_queue(qc);
  ASSERT_TRUE(q);
  ASSERT_EQ((*dev)->start(), Status::success);
  Done done;
  std::vector<Packet> ps(10);
  for (auto& p : ps) {
    p.type = RequestType::read;
    p.length = 512;
    p.on_complete = on_done;
    p.user = &done;
    ASSERT_EQ((*dev)->submit(p), Status::pending);
  }
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

}  // namespace
}  // namespace ioq
