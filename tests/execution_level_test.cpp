// Execution levels: dispatch-level handlers run inline on the dispatching
// thread; passive-level handlers run on the device's oneTBB worker arena and
// may block without holding up the submitter.
#include <ioq/ioq.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "queue_harness.hpp"

namespace ioq {
namespace {

using test::make_device;
using test::make_queue;
using test::Packets;

TEST(ExecutionLevel, DispatchLevelRunsInlineOnTheSubmitter) {
  auto dev = make_device({.max_requests = 16});
  static std::thread::id handler_thread;
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue&, Request r) {
    handler_thread = std::this_thread::get_id();
    (void)r.complete(Status::success);
  };
  make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  auto& p = packets.make(RequestType::read);
  ASSERT_EQ(dev->submit(p.packet), Status::pending);
  EXPECT_TRUE(p.done()) << "completed before submit returned";
  EXPECT_EQ(handler_thread, std::this_thread::get_id());
}

struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  int blocked = 0;
  std::set<std::thread::id> threads;
};

TEST(ExecutionLevel, PassiveLevelRunsOnWorkersAndMayBlock) {
  auto dev = make_device({.max_requests = 16, .passive_workers = 4});
  static Gate gate;
  gate.open = false;
  gate.blocked = 0;
  gate.threads.clear();
  QueueConfig qc{.dispatch = DispatchType::parallel,
                 .max_presented = 4,
                 .execution = ExecutionLevel::passive,
                 .default_queue = true};
  qc.on_default = [](Queue&, Request r) {
    {
      std::unique_lock lock(gate.m);
      gate.threads.insert(std::this_thread::get_id());
      ++gate.blocked;
      gate.cv.notify_all();
      gate.cv.wait(lock, [] { return gate.open; });  // a blocking handler
    }
    (void)r.complete(Status::success);
  };
  Queue* q = make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  // Whatever happens below, release the blocked handlers before the device
  // goes away (it waits for its passive tasks).
  struct Release {
    ~Release() {
      {
        std::lock_guard lock(gate.m);
        gate.open = true;
      }
      gate.cv.notify_all();
    }
  } release_on_exit;
  Packets packets;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  {
    // The submitter returned although every handler blocks: they run elsewhere.
    std::unique_lock lock(gate.m);
    ASSERT_TRUE(gate.cv.wait_for(lock, std::chrono::seconds(30), [] { return gate.blocked == 3; }))
        << "three passive handlers should block at once on workers";
    EXPECT_EQ(gate.threads.count(std::this_thread::get_id()), 0u) << "never on the submitting thread";
    EXPECT_GE(gate.threads.size(), 2u) << "in parallel on several workers";
  }
  EXPECT_EQ(q->get_state().driver_owned, 3u);
  {
    std::lock_guard lock(gate.m);
    gate.open = true;
  }
  gate.cv.notify_all();
  ASSERT_EQ(q->drain_synchronously(), Status::success);
  packets.expect_all_completed_once();
  for (std::size_t i = 0; i < packets.size(); ++i) EXPECT_EQ(packets[i].status.load(), Status::success);
}

}  // namespace
}  // namespace ioq
