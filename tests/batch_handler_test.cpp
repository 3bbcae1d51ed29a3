// QueueConfig::on_batch and Target::send_batch: a queue that hands its
// driver whole runs of requests, and a target that takes a run at once.
#include <ioq/ioq.hpp>
#include <ioq/target.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
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
  b.seen.complete = false;
  ASSERT_EQ(b.dev->start(), Status::success);
  Packets ps;
  for (int i = 0; i < 8; ++i) ps.make(RequestType::read);
  const std::vector<Packet*> all = pointers(ps);
  ASSERT_EQ(b.dev->submit_batch(all.data(), all.size()), Status::pending);
  ASSERT_EQ(b.seen.held.size(), 8u);
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
  b.seen.complete = false;
  ASSERT_EQ(b.dev->start(), Status::success);
  Packets ps;
  for (int i = 0; i < 6; ++i) ps.make(RequestType::read);
  const std::vector<Packet*> all = pointers(ps);
  ASSERT_EQ(b.dev->submit_batch(all.data(), all.size()), Status::pending);
  ASSERT_EQ(b.seen.held.size(), 6u);
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

}  // namespace
}  // namespace ioq
