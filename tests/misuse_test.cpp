// Misuse that WDF would bug-check: each gives a distinct status, a count in
// Device::verifier(), no lost or doubled completion, and - with
// abort-on-misuse on - a process abort naming the error.
#include <ioq/ioq.hpp>

#include <gtest/gtest.h>

#include <thread>

#include "queue_harness.hpp"

namespace ioq {
namespace {

using test::make_device;
using test::make_queue;
using test::Packets;

// A manual default queue: requests stay queued until retrieved.
struct ManualRig {
  std::unique_ptr<Device> dev = make_device({.max_requests = 32});
  Queue* q = make_queue(*dev, {.dispatch = DispatchType::manual, .default_queue = true});
  Packets packets;
  ManualRig() { EXPECT_EQ(dev->start(), Status::success); }
  Request submit_and_retrieve() {
    auto& p = packets.make(RequestType::read);
    EXPECT_EQ(dev->submit(p.packet), Status::pending);
    Request r;
    EXPECT_EQ(q->retrieve_next_request(r), Status::success);
    return r;
  }
};

void noop_cancel(Request, void*) noexcept {}

TEST(Misuse, DoubleCompletionIsDetectedAndCounted) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();
  EXPECT_EQ(r.complete(Status::success, 3), Status::success);
  EXPECT_EQ(r.complete(Status::success), Status::usage_already_completed);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_already_completed], 1u);
  EXPECT_EQ(rig.packets[0].completions.load(), 1) << "the packet completed once";
  EXPECT_EQ(rig.packets[0].information.load(), 3u) << "with the first completion's values";
}

TEST(Misuse, CompletingAQueuedRequestIsNotOwned) {
  ManualRig rig;
  auto& p = rig.packets.make(RequestType::read);
  ASSERT_EQ(rig.dev->submit(p.packet), Status::pending);
  Request queued(p.packet.request);
  EXPECT_EQ(queued.complete(Status::success), Status::usage_not_owned);
  EXPECT_EQ(queued.forward_to_queue(*rig.q), Status::usage_not_owned);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_not_owned], 2u);
  EXPECT_FALSE(p.done());
  EXPECT_EQ(rig.q->get_state().queued, 1u) << "still queued, untouched";
  Request r;
  ASSERT_EQ(rig.q->retrieve_next_request(r), Status::success);
  EXPECT_EQ(r, queued);
  EXPECT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(p.completions.load(), 1);
}

TEST(Misuse, StaleAndForgedHandlesAreRejected) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();
  ASSERT_EQ(r.complete(Status::success), Status::success);
  // Reuse the slot a few times so the old handle is more than one step stale.
  for (int i = 0; i < 3; ++i) ASSERT_EQ(rig.submit_and_retrieve().complete(Status::success), Status::success);
  const std::uint64_t before = rig.dev->verifier()[Status::invalid_handle];
  EXPECT_EQ(r.complete(Status::success), Status::invalid_handle);
  EXPECT_EQ(r.requeue(), Status::invalid_handle);
  EXPECT_EQ(r.mark_cancelable(noop_cancel), Status::invalid_handle);
  EXPECT_EQ(r.validate(), Status::invalid_handle);
  EXPECT_EQ(r.queue(), nullptr);
  EXPECT_EQ(rig.dev->verifier()[Status::invalid_handle], before + 3);
  // A forged handle (even generation, naming no live request) and the null one.
  EXPECT_EQ(Request(r.handle() + 1).complete(Status::success), Status::invalid_handle);
  EXPECT_EQ(Request().complete(Status::success), Status::invalid_handle);
  EXPECT_EQ(rig.dev->cancel(r.handle()), Status::invalid_handle) << "cancel of a completed packet";
  rig.packets.expect_all_completed_once();
}

TEST(Misuse, ForwardingACancelableRequestIsAUsageError) {
  ManualRig rig;
  Queue* other = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
  Request r = rig.submit_and_retrieve();
  ASSERT_EQ(r.mark_cancelable(noop_cancel), Status::success);
  EXPECT_EQ(r.forward_to_queue(*other), Status::usage_cancelable);
  EXPECT_EQ(r.complete(Status::success), Status::usage_cancelable) << "complete needs unmark first";
  EXPECT_EQ(r.mark_cancelable(noop_cancel), Status::usage_cancelable) << "marking twice";
  EXPECT_EQ(rig.dev->verifier()[Status::usage_cancelable], 3u);
  EXPECT_EQ(other->get_state().queued, 0u);
  EXPECT_EQ(r.queue(), rig.q) << "the request did not move";
  ASSERT_EQ(r.unmark_cancelable(), Status::success);
  EXPECT_EQ(r.unmark_cancelable(), Status::usage_not_cancelable);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_not_cancelable], 1u);
  ASSERT_EQ(r.complete(Status::success), Status::success);
  rig.packets.expect_all_completed_once();
}

TEST(Misuse, SecondCallbackInABusySlotIsAUsageError) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();  // owned: the stop callback stays pending
  int fired = 0;
  auto cb = [](Queue&, void* ctx) { ++*static_cast<int*>(ctx); };
  ASSERT_EQ(rig.q->stop(cb, &fired), Status::success);
  EXPECT_EQ(rig.q->stop(cb, &fired), Status::usage_slot_busy);
  EXPECT_EQ(rig.q->stop(nullptr, nullptr), Status::success) << "a null callback uses no slot";
  ASSERT_EQ(rig.q->drain(cb, &fired), Status::success);
  EXPECT_EQ(rig.q->purge(cb, &fired), Status::usage_slot_busy) << "drain and purge share a slot";
  EXPECT_EQ(rig.dev->verifier()[Status::usage_slot_busy], 2u);
  EXPECT_EQ(fired, 0);
  ASSERT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(fired, 2) << "the stop and the drain callbacks, once each";
}

TEST(Misuse, SynchronousWaitFromOwnHandlerIsAUsageError) {
  auto dev = make_device({.max_requests = 8});
  static Status seen[4];
  QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
  qc.on_default = [](Queue& q, Request r) {
    seen[0] = q.stop_synchronously();
    seen[1] = q.drain_synchronously();
    seen[2] = q.purge_synchronously();
    seen[3] = q.stop_and_purge_synchronously();
    (void)r.complete(Status::success);
  };
  Queue* q = make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  for (Status s : seen) EXPECT_EQ(s, Status::usage_in_handler);
  EXPECT_EQ(dev->verifier()[Status::usage_in_handler], 4u);
  EXPECT_EQ(q->get_state().flags & (kQueueAccepting | kQueueDispatching),
            static_cast<std::uint32_t>(kQueueAccepting | kQueueDispatching))
      << "the refused calls changed nothing";
  packets.expect_all_completed_once();
}

TEST(Misuse, StopAcknowledgeOutsideAStopCallbackIsRefused) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();
  EXPECT_EQ(r.stop_acknowledge(false), Status::invalid_device_request);
  EXPECT_EQ(r.stop_acknowledge(true), Status::invalid_device_request);
  EXPECT_EQ(r.complete(Status::success), Status::success);
}

TEST(Misuse, NoVerifierCountsOnCorrectUse) {
  ManualRig rig;
  for (int i = 0; i < 10; ++i) {
    Request r = rig.submit_and_retrieve();
    ASSERT_EQ(r.mark_cancelable(noop_cancel), Status::success);
    ASSERT_EQ(r.unmark_cancelable(), Status::success);
    ASSERT_EQ(r.complete(Status::success), Status::success);
  }
  EXPECT_EQ(rig.dev->verifier().total(), 0u);
}

TEST(MisuseDeathTest, AbortOnMisuseAbortsWithTheError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ManualRig rig;
        rig.dev->set_abort_on_misuse(true);
        Request r = rig.submit_and_retrieve();
        (void)r.complete(Status::success);
        (void)r.complete(Status::success);
      },
      "usage error \\(usage_already_completed\\)");
  EXPECT_DEATH(
      {
        auto dev = make_device({.max_requests = 8, .abort_on_misuse = true});
        Queue* q = make_queue(*dev, {.dispatch = DispatchType::manual, .default_queue = true});
        int n = 0;
        auto cb = [](Queue&, void* ctx) { ++*static_cast<int*>(ctx); };
        Packets packets;
        (void)dev->start();
        (void)dev->submit(packets.make(RequestType::read).packet);
        Request r;
        (void)q->retrieve_next_request(r);
        (void)q->stop(cb, &n);
        (void)q->stop(cb, &n);
      },
      "usage error \\(usage_slot_busy\\)");
}

}  // namespace
}  // namespace ioq
