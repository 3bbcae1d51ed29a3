// Misuse that WDF would bug-check: each gives a distinct status, a count in
// Device::verifier(), no lost or doubled completion, and - with
// abort-on-misuse on - a process abort naming the error.
//
// The suite has three parts:
//   * Misuse.*: one test per family of usage error, with every operation the
//     family covers, the state left behind, and the packet's one completion;
//   * MisuseTable / MisuseDeathTable: every usage error of the spec as a row
//     (the rule it breaks, the status ioq gives). With abort-on-misuse off the
//     row's call returns that status, the verifier counts it exactly once and
//     nothing else, and every packet of the row completes exactly once with a
//     status its submitter can read. With abort-on-misuse on, the same call
//     aborts the process with a message naming the status;
//   * MisuseRejections.*: calls the spec answers with an ordinary status (its
//     own NTSTATUS, not a verifier break in ioq). They change nothing and
//     count nothing.
#include <ioq/ioq.hpp>
#include <ioq/runtime.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "queue_harness.hpp"

namespace ioq {
namespace {

using namespace std::chrono_literals;
using test::make_device;
using test::make_queue;
using test::Packets;
using test::TrackedPacket;

using test::wait_until;

// A manual default queue: requests stay queued until retrieved.
struct ManualRig {
  std::unique_ptr<Device> dev;
  Queue* q = nullptr;
  Packets packets;
  explicit ManualRig(std::uint32_t max_requests = 32) {
    dev = make_device({.max_requests = max_requests});
    q = make_queue(*dev, {.dispatch = DispatchType::manual, .default_queue = true});
    EXPECT_EQ(dev->start(), Status::success);
  }
  TrackedPacket& submit() {
    auto& p = packets.make(RequestType::read);
    EXPECT_EQ(dev->submit(p.packet), Status::pending);
    return p;
  }
  Request submit_and_retrieve() {
    submit();
    Request r;
    EXPECT_EQ(q->retrieve_next_request(r), Status::success);
    return r;
  }
};

void noop_cancel(Request, void*) noexcept {}
// A cancel routine that completes its request, as the driver must.
void complete_cancel(Request r, void*) noexcept { EXPECT_EQ(r.complete(Status::cancelled), Status::success); }

// Every packet completed once, and none is left with the placeholder status.
void expect_all_settled(const Packets& packets) {
  packets.expect_all_completed_once();
  for (std::size_t i = 0; i < packets.size(); ++i)
    EXPECT_NE(const_cast<Packets&>(packets)[i].status.load(), Status::pending) << "packet " << i;
}

// ===========================================================================
// Families of usage errors, operation by operation

TEST(Misuse, DoubleCompletionIsDetectedAndCounted) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();
  EXPECT_EQ(r.complete(Status::success, 3), Status::success);
  EXPECT_EQ(r.complete(Status::success), Status::usage_already_completed);
  EXPECT_EQ(r.complete_with_errno(5), Status::usage_already_completed);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_already_completed], 2u);
  EXPECT_EQ(rig.dev->verifier().total(), 2u);
  EXPECT_EQ(rig.packets[0].completions.load(), 1) << "the packet completed once";
  EXPECT_EQ(rig.packets[0].status.load(), Status::success) << "with the first completion's values";
  EXPECT_EQ(rig.packets[0].information.load(), 3u);
}

// Every driver-side operation on a request that has just completed (its slot
// released and not reused) names the completed request.
TEST(Misuse, EveryOperationOnACompletedRequestIsAlreadyCompleted) {
  ManualRig rig;
  Queue* other = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
  Request r = rig.submit_and_retrieve();
  ASSERT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(r.complete(Status::success), Status::usage_already_completed);
  EXPECT_EQ(r.complete_with_errno(5), Status::usage_already_completed);
  EXPECT_EQ(r.forward_to_queue(*other), Status::usage_already_completed);
  EXPECT_EQ(r.requeue(), Status::usage_already_completed);
  EXPECT_EQ(r.mark_cancelable(noop_cancel), Status::usage_already_completed);
  EXPECT_EQ(r.mark_cancelable_ex(noop_cancel), Status::usage_already_completed);
  EXPECT_EQ(r.unmark_cancelable(), Status::usage_already_completed);
  EXPECT_EQ(r.stop_acknowledge(true), Status::usage_already_completed);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_already_completed], 8u);
  EXPECT_EQ(rig.dev->verifier().total(), 8u);
  // validate() only asks "is there such a request": uncounted.
  EXPECT_EQ(r.validate(), Status::invalid_handle);
  EXPECT_EQ(rig.dev->verifier().total(), 8u);
  // Every getter reads the request, and it is gone: the zero value and a usage
  // error each (as reading a deleted request is fatal in WDF).
  EXPECT_EQ(r.queue(), nullptr);
  EXPECT_FALSE(r.is_canceled());
  EXPECT_FALSE(r.is_reserved());
  EXPECT_EQ(r.packet(), nullptr);
  EXPECT_EQ(r.type(), RequestType::read);
  EXPECT_EQ(r.offset(), 0u);
  EXPECT_EQ(r.length(), 0u);
  EXPECT_EQ(r.ioctl_code(), 0u);
  EXPECT_EQ(r.buffer(), nullptr);
  EXPECT_FALSE(r.file());
  EXPECT_EQ(r.context_area(), nullptr);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_already_completed], 19u);
  EXPECT_EQ(rig.dev->verifier().total(), 19u);
  EXPECT_EQ(other->get_state().queued, 0u);
  expect_all_settled(rig.packets);
}

// The packet's completion callback runs after the request was released: a
// completion from inside it is a second completion.
TEST(Misuse, CompletingFromThePacketsOwnCallbackIsASecondCompletion) {
  ManualRig rig;
  static std::atomic<Status> inner{Status::pending};
  inner.store(Status::pending);
  auto& p = rig.packets.make(RequestType::read);
  p.packet.on_complete = [](Packet& pk) noexcept {
    TrackedPacket::on_complete(pk);
    inner.store(Request(pk.request).complete(Status::unsuccessful));
  };
  ASSERT_EQ(rig.dev->submit(p.packet), Status::pending);
  Request r;
  ASSERT_EQ(rig.q->retrieve_next_request(r), Status::success);
  ASSERT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(inner.load(), Status::usage_already_completed);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_already_completed], 1u);
  EXPECT_EQ(p.completions.load(), 1);
  EXPECT_EQ(p.status.load(), Status::success);
}

// Two threads complete the same request at once: one wins, the other gets a
// usage error, and the packet completes once with the winner's values.
TEST(Misuse, RacingCompletionsCompleteOnce) {
  ManualRig rig(8);
  constexpr int kRounds = 500;
  std::atomic<int> wins{0}, errors{0};
  for (int i = 0; i < kRounds; ++i) {
    Request r = rig.submit_and_retrieve();
    std::atomic<bool> go{false};
    auto racer = [&](std::uint64_t info) {
      while (!go.load(std::memory_order_acquire)) {
      }
      const Status s = r.complete(Status::success, info);
      if (s == Status::success) {
        ++wins;
      } else {
        EXPECT_TRUE(s == Status::usage_already_completed || s == Status::invalid_handle) << to_string(s);
        ++errors;
      }
    };
    std::thread a(racer, 1), b(racer, 2);
    go.store(true, std::memory_order_release);
    a.join();
    b.join();
  }
  EXPECT_EQ(wins.load(), kRounds);
  EXPECT_EQ(errors.load(), kRounds);
  EXPECT_EQ(rig.dev->verifier().total(), static_cast<std::uint64_t>(kRounds));
  expect_all_settled(rig.packets);
  for (std::size_t i = 0; i < rig.packets.size(); ++i) {
    const auto info = rig.packets[i].information.load();
    EXPECT_TRUE(info == 1 || info == 2);
  }
}

// A queued request belongs to its queue: every driver operation on it is
// usage_not_owned, and it stays queued, untouched.
TEST(Misuse, EveryOperationOnAQueuedRequestIsNotOwned) {
  ManualRig rig;
  Queue* other = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
  auto& p = rig.submit();
  Request queued(p.packet.request);
  EXPECT_EQ(queued.complete(Status::success), Status::usage_not_owned);
  EXPECT_EQ(queued.complete_with_errno(5), Status::usage_not_owned);
  EXPECT_EQ(queued.forward_to_queue(*other), Status::usage_not_owned);
  EXPECT_EQ(queued.requeue(), Status::usage_not_owned);
  EXPECT_EQ(queued.mark_cancelable(noop_cancel), Status::usage_not_owned);
  EXPECT_EQ(queued.mark_cancelable_ex(noop_cancel), Status::usage_not_owned);
  EXPECT_EQ(queued.unmark_cancelable(), Status::usage_not_owned);
  EXPECT_EQ(queued.stop_acknowledge(false), Status::usage_not_owned);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_not_owned], 8u);
  EXPECT_EQ(rig.dev->verifier().total(), 8u);
  EXPECT_FALSE(p.done());
  EXPECT_EQ(rig.q->get_state().queued, 1u) << "still queued, untouched";
  EXPECT_EQ(rig.q->get_state().driver_owned, 0u);
  EXPECT_EQ(other->get_state().queued, 0u);
  EXPECT_EQ(queued.queue(), rig.q);
  Request r;
  ASSERT_EQ(rig.q->retrieve_next_request(r), Status::success);
  EXPECT_EQ(r, queued) << "the same request, same handle";
  EXPECT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(p.completions.load(), 1);
  EXPECT_EQ(rig.dev->verifier().total(), 8u);
}

// After a successful forward the destination owns the request: the handle the
// driver kept names a request it no longer owns.
TEST(Misuse, AForwardedRequestIsNoLongerTheDriversToUse) {
  ManualRig rig;
  Queue* dst = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
  Queue* third = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
  Request r = rig.submit_and_retrieve();
  ASSERT_EQ(r.forward_to_queue(*dst), Status::success);
  EXPECT_EQ(r.complete(Status::success), Status::usage_not_owned);
  EXPECT_EQ(r.forward_to_queue(*third), Status::usage_not_owned);
  EXPECT_EQ(r.requeue(), Status::usage_not_owned);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_not_owned], 3u);
  EXPECT_EQ(dst->get_state().queued, 1u);
  EXPECT_EQ(third->get_state().queued, 0u);
  EXPECT_EQ(rig.q->get_state().driver_owned, 0u);
  Request again;
  ASSERT_EQ(dst->retrieve_next_request(again), Status::success);
  EXPECT_EQ(again.complete(Status::success), Status::success);
  expect_all_settled(rig.packets);
  EXPECT_EQ(rig.dev->verifier().total(), 3u);
}

// A reserved request handed to allocate_reserved_resources is presented but
// not owned: completing it there is usage_not_owned, and the reserve survives.
TEST(Misuse, CompletingAReservedRequestDuringItsAllocationIsNotOwned) {
  ManualRig rig;
  static Status seen;
  seen = Status::pending;
  ForwardProgressConfig fp{.total_reserved = 1, .policy = ForwardProgressPolicy::always_use_reserved};
  fp.allocate_reserved_resources = [](Queue&, Request r, void*) {
    seen = r.complete(Status::success);
    return Status::success;
  };
  ASSERT_EQ(rig.q->assign_forward_progress_policy(fp), Status::success);
  EXPECT_EQ(seen, Status::usage_not_owned);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_not_owned], 1u);
  const ForwardProgressStats st = rig.q->forward_progress_stats();
  EXPECT_EQ(st.total, 1u);
  EXPECT_EQ(st.free, 1u) << "the reserved request is still on the free list";
  EXPECT_EQ(rig.dev->verifier().total(), 1u);
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
  EXPECT_EQ(r.validate(), Status::invalid_handle);  // asks: uncounted
  EXPECT_EQ(rig.dev->verifier()[Status::invalid_handle], before + 3);
  EXPECT_EQ(r.queue(), nullptr);  // reads: counted
  EXPECT_EQ(rig.dev->verifier()[Status::invalid_handle], before + 4);
  // A forged handle (even generation, naming no live request) and the null one.
  EXPECT_EQ(Request(r.handle() + 1).complete(Status::success), Status::invalid_handle);
  EXPECT_EQ(Request(r.handle() + 1).length(), 0u);
  EXPECT_EQ(rig.dev->verifier()[Status::invalid_handle], before + 6);
  // The null handle and a handle naming no slab name no device: refused, and
  // there is no device to count them against.
  EXPECT_EQ(Request().complete(Status::success), Status::invalid_handle);
  EXPECT_EQ(Request().length(), 0u);
  EXPECT_EQ(Request(0xFF00000000000001ULL).complete(Status::success), Status::invalid_handle);
  EXPECT_EQ(Request(0xFF00000000000001ULL).queue(), nullptr);
  EXPECT_EQ(rig.dev->cancel(r.handle()), Status::invalid_handle) << "cancel of a completed packet";
  EXPECT_EQ(rig.dev->verifier()[Status::invalid_handle], before + 6);
  rig.packets.expect_all_completed_once();
}

// A handle that outlives its device names no slab any more: refused without
// touching the freed memory (the sanitizer builds check that).
TEST(Misuse, HandleOfADestroyedDeviceIsInvalid) {
  Request kept;
  {
    ManualRig rig;
    kept = rig.submit_and_retrieve();
    ASSERT_EQ(kept.complete(Status::success), Status::success);
    rig.packets.expect_all_completed_once();
  }
  EXPECT_EQ(kept.complete(Status::success), Status::invalid_handle);
  EXPECT_EQ(kept.requeue(), Status::invalid_handle);
  EXPECT_EQ(kept.unmark_cancelable(), Status::invalid_handle);
  EXPECT_EQ(kept.validate(), Status::invalid_handle);
  EXPECT_EQ(kept.queue(), nullptr);
  EXPECT_EQ(kept.packet(), nullptr);
}

TEST(Misuse, CancelableRequestMustBeUnmarkedFirst) {
  ManualRig rig;
  Queue* other = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
  Request r = rig.submit_and_retrieve();
  ASSERT_EQ(r.mark_cancelable(noop_cancel), Status::success);
  EXPECT_EQ(r.forward_to_queue(*other), Status::usage_cancelable);
  EXPECT_EQ(r.complete(Status::success), Status::usage_cancelable) << "complete needs unmark first";
  EXPECT_EQ(r.complete_with_errno(5), Status::usage_cancelable);
  EXPECT_EQ(r.requeue(), Status::usage_cancelable);
  EXPECT_EQ(r.stop_acknowledge(true), Status::invalid_device_request)
      << "outside a stop callback the context check comes first";
  EXPECT_EQ(r.mark_cancelable(noop_cancel), Status::usage_cancelable) << "marking twice";
  EXPECT_EQ(r.mark_cancelable_ex(noop_cancel), Status::usage_cancelable) << "marking twice, ex form";
  EXPECT_EQ(rig.dev->verifier()[Status::usage_cancelable], 6u);
  EXPECT_EQ(rig.dev->verifier().total(), 6u);
  EXPECT_EQ(other->get_state().queued, 0u);
  EXPECT_EQ(rig.q->get_state().driver_owned, 1u);
  EXPECT_EQ(r.queue(), rig.q) << "the request did not move";
  EXPECT_FALSE(rig.packets[0].done());
  ASSERT_EQ(r.unmark_cancelable(), Status::success);
  EXPECT_EQ(r.unmark_cancelable(), Status::usage_not_cancelable);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_not_cancelable], 1u);
  ASSERT_EQ(r.complete(Status::success), Status::success);
  expect_all_settled(rig.packets);
  EXPECT_EQ(rig.packets[0].status.load(), Status::success);
}

TEST(Misuse, UnmarkWithoutMarkIsNotCancelable) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();
  EXPECT_EQ(r.unmark_cancelable(), Status::usage_not_cancelable) << "never marked";
  ASSERT_EQ(r.mark_cancelable_ex(noop_cancel), Status::success);
  ASSERT_EQ(r.unmark_cancelable(), Status::success);
  EXPECT_EQ(r.unmark_cancelable(), Status::usage_not_cancelable) << "unmarked already";
  EXPECT_EQ(rig.dev->verifier()[Status::usage_not_cancelable], 2u);
  EXPECT_EQ(rig.dev->verifier().total(), 2u);
  ASSERT_EQ(r.complete(Status::success), Status::success);
  expect_all_settled(rig.packets);
}

// Once the cancel routine has won, unmark says cancelled (not a usage error),
// and the request may be completed from the routine: correct use, no count.
TEST(Misuse, CompletingFromTheCancelRoutineIsCorrectUse) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();
  ASSERT_EQ(r.mark_cancelable(complete_cancel), Status::success);
  ASSERT_EQ(rig.dev->cancel(rig.packets[0].packet), Status::success);  // the routine runs inline
  EXPECT_EQ(rig.packets[0].completions.load(), 1);
  EXPECT_EQ(rig.packets[0].status.load(), Status::cancelled);
  EXPECT_EQ(r.validate(), Status::invalid_handle) << "completed by its routine";
  EXPECT_EQ(rig.dev->verifier().total(), 0u);
}

// The cancel routine is scheduled (the request was canceled inside a handler
// of its queue, so the routine runs after the handler returns) but has not
// run yet: the routine owns the completion, and a completion by the driver is
// usage_cancelable. The routine then completes the request, once.
TEST(Misuse, CompletingWhileTheCancelRoutineIsScheduledIsCancelable) {
  auto dev = make_device({.max_requests = 8});
  static Device* device;
  static Status in_handler[3];
  static std::atomic<int> routine_runs;
  device = dev.get();
  routine_runs = 0;
  for (Status& s : in_handler) s = Status::pending;
  QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
  qc.on_default = [](Queue&, Request r) {
    in_handler[0] = r.mark_cancelable([](Request rq, void*) noexcept {
      ++routine_runs;
      EXPECT_EQ(rq.complete(Status::cancelled), Status::success);
    });
    in_handler[1] = device->cancel(r.handle());
    in_handler[2] = r.complete(Status::success);
  };
  make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  EXPECT_EQ(in_handler[0], Status::success);
  EXPECT_EQ(in_handler[1], Status::success);
  EXPECT_EQ(in_handler[2], Status::usage_cancelable);
  EXPECT_EQ(dev->verifier()[Status::usage_cancelable], 1u);
  EXPECT_EQ(routine_runs.load(), 1);
  expect_all_settled(packets);
  EXPECT_EQ(packets[0].status.load(), Status::cancelled) << "the routine's completion";
  EXPECT_EQ(dev->verifier().total(), 1u);
}

// A canceled forwarded-in request is handed to the canceled-on-queue handler
// (spec 5.1): until that handler has it, the handle the driver kept from
// before the forward names a request the driver does not own (spec 1, state
// 4). Between the hand-over (the request counts as driver-owned and the
// handler is queued on the loop) and the handler's call, complete() on the
// kept handle is refused, so the one slot is not reused by a new request and
// the handler gets the request that was handed over, with its own handle.
TEST(Misuse, CompletingACanceledOnQueueRequestBeforeItsHandlerIsNotOwned) {
  static Device* device;
  static Request kept;
  static Status in_ready[3];
  static Request handed;
  static Status handler_complete;
  static Packets* pk;
  auto dev = make_device({.max_requests = 1});  // one slot: any new request reuses it
  device = dev.get();
  kept = handed = Request();
  handler_complete = Status::pending;
  for (Status& st : in_ready) st = Status::pending;
  Queue* m = make_queue(*dev, {.dispatch = DispatchType::manual, .default_queue = true});
  QueueConfig nc{.dispatch = DispatchType::manual};
  nc.on_canceled_on_queue = [](Queue&, Request r) {
    handed = r;
    handler_complete = r.complete(Status::cancelled);
  };
  Queue* n = make_queue(*dev, nc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  pk = &packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  ASSERT_EQ(m->retrieve_next_request(kept), Status::success);
  // n's ready notification runs in n's dispatch: the cancel below hands the
  // request over through n's loop, after this callback returns.
  ASSERT_EQ(n->ready_notify([](Queue&, void*) {
    in_ready[0] = device->cancel(kept.handle());
    in_ready[1] = kept.complete(Status::success);  // not the driver's any more
    in_ready[2] = device->submit(pk->make(RequestType::read).packet);
  }),
            Status::success);
  ASSERT_EQ(kept.forward_to_queue(*n), Status::success);
  EXPECT_EQ(in_ready[0], Status::success);
  EXPECT_EQ(in_ready[1], Status::usage_not_owned);
  EXPECT_EQ(in_ready[2], Status::pending);
  EXPECT_EQ(handed, kept) << "the handler gets the request the driver forwarded";
  EXPECT_EQ(handler_complete, Status::success);
  EXPECT_EQ(packets[0].completions.load(), 1);
  EXPECT_EQ(packets[0].status.load(), Status::cancelled) << "completed by its canceled-on-queue handler";
  EXPECT_EQ(dev->verifier()[Status::usage_not_owned], 1u);
  // While the ready callback ran, the one slot was still the handed-over
  // request's: the packet submitted there got no request.
  EXPECT_EQ(packets[1].status.load(), Status::insufficient_resources);
  // Once its handler completed it, the slot serves the next request.
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  Request r;
  ASSERT_EQ(m->retrieve_next_request(r), Status::success);
  EXPECT_NE(r, kept) << "a new incarnation of the slot";
  ASSERT_EQ(r.complete(Status::success), Status::success);
  expect_all_settled(packets);
  EXPECT_EQ(packets[2].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 1u);
}

TEST(Misuse, SecondCallbackInABusySlotIsAUsageError) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();  // owned: the stop callback stays pending
  int fired = 0;
  auto cb = [](Queue&, void* ctx) { ++*static_cast<int*>(ctx); };
  ASSERT_EQ(rig.q->stop(cb, &fired), Status::success);
  EXPECT_EQ(rig.q->stop(cb, &fired), Status::usage_slot_busy);
  EXPECT_EQ(rig.q->stop_and_purge(cb, &fired), Status::usage_slot_busy) << "stop and stop_and_purge share a slot";
  EXPECT_EQ(rig.q->stop_synchronously(), Status::usage_slot_busy) << "the synchronous form needs the slot too";
  EXPECT_EQ(rig.q->stop_and_purge_synchronously(), Status::usage_slot_busy);
  EXPECT_EQ(rig.q->stop(nullptr, nullptr), Status::success) << "a null callback uses no slot";
  ASSERT_EQ(rig.q->drain(cb, &fired), Status::success);
  EXPECT_EQ(rig.q->purge(cb, &fired), Status::usage_slot_busy) << "drain and purge share a slot";
  EXPECT_EQ(rig.q->drain(cb, &fired), Status::usage_slot_busy);
  EXPECT_EQ(rig.q->drain_synchronously(), Status::usage_slot_busy);
  EXPECT_EQ(rig.q->purge_synchronously(), Status::usage_slot_busy);
  EXPECT_EQ(rig.dev->verifier()[Status::usage_slot_busy], 8u);
  EXPECT_EQ(rig.dev->verifier().total(), 8u);
  EXPECT_EQ(fired, 0);
  ASSERT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(fired, 2) << "the stop and the drain callbacks, once each";
  // Both slots are free again.
  ASSERT_EQ(rig.q->start(), Status::success);
  EXPECT_EQ(rig.q->stop(cb, &fired), Status::success);
  EXPECT_EQ(rig.q->drain(cb, &fired), Status::success);
  EXPECT_EQ(fired, 4);
  EXPECT_EQ(rig.dev->verifier().total(), 8u);
  expect_all_settled(rig.packets);
}

// A refused stop_and_purge or purge acts on nothing: the queued requests stay.
TEST(Misuse, ARefusedCallbackChangesNothing) {
  ManualRig rig;
  Request owned = rig.submit_and_retrieve();
  rig.submit();
  rig.submit();
  int fired = 0;
  auto cb = [](Queue&, void* ctx) { ++*static_cast<int*>(ctx); };
  ASSERT_EQ(rig.q->drain(cb, &fired), Status::success);
  const QueueState before = rig.q->get_state();
  EXPECT_EQ(rig.q->purge(cb, &fired), Status::usage_slot_busy);
  const QueueState after = rig.q->get_state();
  EXPECT_EQ(after.flags, before.flags);
  EXPECT_EQ(after.queued, 2u) << "nothing was purged";
  EXPECT_EQ(rig.q->counters().cancelled, 0u);
  ASSERT_EQ(rig.q->stop(cb, &fired), Status::success);
  EXPECT_EQ(rig.q->stop_and_purge(cb, &fired), Status::usage_slot_busy);
  EXPECT_EQ(rig.q->get_state().queued, 2u) << "nothing was stop-and-purged";
  EXPECT_EQ(rig.dev->verifier()[Status::usage_slot_busy], 2u);
  // Finish: drained queues still deliver; complete everything.
  ASSERT_EQ(rig.q->start(), Status::success);
  ASSERT_EQ(owned.complete(Status::success), Status::success);
  Request r;
  while (rig.q->retrieve_next_request(r) == Status::success) ASSERT_EQ(r.complete(Status::success), Status::success);
  expect_all_settled(rig.packets);
  EXPECT_EQ(rig.dev->verifier().total(), 2u);
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
  EXPECT_EQ(dev->verifier().total(), 4u);
  EXPECT_EQ(q->get_state().flags & (kQueueAccepting | kQueueDispatching),
            static_cast<std::uint32_t>(kQueueAccepting | kQueueDispatching))
      << "the refused calls changed nothing";
  packets.expect_all_completed_once();
}

// Every callback the queue's dispatch runs is "a handler of the same queue":
// the ready notification, a cancel routine, the canceled-on-queue handler,
// the stop/drain/purge completion callback, and passive-level handlers.
TEST(Misuse, SynchronousWaitFromAnyCallbackOfTheQueueIsAUsageError) {
  static Status seen;
  // Ready notification.
  {
    ManualRig rig;
    seen = Status::pending;
    ASSERT_EQ(rig.q->ready_notify([](Queue& q, void*) { seen = q.drain_synchronously(); }), Status::success);
    rig.submit();
    EXPECT_EQ(seen, Status::usage_in_handler) << "ready notification";
    Request r;
    ASSERT_EQ(rig.q->retrieve_next_request(r), Status::success);
    ASSERT_EQ(r.complete(Status::success), Status::success);
    EXPECT_EQ(rig.dev->verifier()[Status::usage_in_handler], 1u);
    expect_all_settled(rig.packets);
  }
  // Cancel routine.
  {
    ManualRig rig;
    seen = Status::pending;
    Request r = rig.submit_and_retrieve();
    ASSERT_EQ(r.mark_cancelable([](Request rq, void*) noexcept {
      seen = rq.queue()->purge_synchronously();
      EXPECT_EQ(rq.complete(Status::cancelled), Status::success);
    }),
              Status::success);
    ASSERT_EQ(rig.dev->cancel(r.handle()), Status::success);
    EXPECT_EQ(seen, Status::usage_in_handler) << "cancel routine";
    EXPECT_EQ(rig.dev->verifier()[Status::usage_in_handler], 1u);
    expect_all_settled(rig.packets);
    EXPECT_EQ(rig.packets[0].status.load(), Status::cancelled);
  }
  // Canceled-on-queue handler.
  {
    ManualRig rig;
    seen = Status::pending;
    QueueConfig nc{.dispatch = DispatchType::manual};
    nc.on_canceled_on_queue = [](Queue& q, Request rq) {
      seen = q.stop_and_purge_synchronously();
      EXPECT_EQ(rq.complete(Status::cancelled), Status::success);
    };
    Queue* n = make_queue(*rig.dev, nc);
    Request r = rig.submit_and_retrieve();
    ASSERT_EQ(r.forward_to_queue(*n), Status::success);
    ASSERT_EQ(rig.dev->cancel(r.handle()), Status::success);
    EXPECT_EQ(seen, Status::usage_in_handler) << "canceled-on-queue handler";
    EXPECT_EQ(rig.dev->verifier()[Status::usage_in_handler], 1u);
    expect_all_settled(rig.packets);
  }
  // Stop completion callback (fires inside stop: nothing is owned).
  {
    ManualRig rig;
    seen = Status::pending;
    ASSERT_EQ(rig.q->stop([](Queue& q, void*) { seen = q.stop_synchronously(); }), Status::success);
    EXPECT_EQ(seen, Status::usage_in_handler) << "stop completion callback";
    EXPECT_EQ(rig.dev->verifier()[Status::usage_in_handler], 1u);
  }
  // Passive-level handler, on a worker.
  {
    auto dev = make_device({.max_requests = 8, .passive_workers = 1});
    seen = Status::pending;
    QueueConfig qc{.dispatch = DispatchType::sequential, .execution = ExecutionLevel::passive, .default_queue = true};
    qc.on_default = [](Queue& q, Request r) {
      seen = q.stop_synchronously();
      (void)r.complete(Status::success);
    };
    make_queue(*dev, qc);
    ASSERT_EQ(dev->start(), Status::success);
    Packets packets;
    ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
    ASSERT_TRUE(wait_until([&] { return packets[0].done(); }));
    EXPECT_EQ(seen, Status::usage_in_handler) << "passive handler";
    EXPECT_EQ(dev->verifier()[Status::usage_in_handler], 1u);
    expect_all_settled(packets);
  }
}

// A synchronous wait on another queue from a handler is allowed (it is the
// caller's to make sure it ends): no count.
TEST(Misuse, SynchronousWaitOnAnotherQueueFromAHandlerIsCorrectUse) {
  auto dev = make_device({.max_requests = 8});
  static Queue* other;
  static Status seen[2];
  QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
  qc.on_default = [](Queue&, Request r) {
    seen[0] = other->stop_synchronously();
    seen[1] = other->start();
    (void)r.complete(Status::success);
  };
  make_queue(*dev, qc);
  other = make_queue(*dev, {.dispatch = DispatchType::manual});
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  EXPECT_EQ(seen[0], Status::success);
  EXPECT_EQ(seen[1], Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
  expect_all_settled(packets);
}

// Per-core queues (a device on a Runtime): a sharded queue's callbacks share
// one slot across its shards, and a handler on a shard is a handler of the
// queue the driver knows.
TEST(Misuse, PerCoreQueueReportsTheSameUsageErrors) {
  auto rt = Runtime::create({.cores = 2, .reactors = false});
  ASSERT_TRUE(rt.has_value());
  auto dev = make_device({.max_requests = 16, .runtime = rt->get()});
  static std::vector<Request> held;
  static Status seen;
  held.clear();
  seen = Status::pending;
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue& q, Request r) {
    if (r.length() == 1) seen = q.drain_synchronously();
    held.push_back(r);
  };
  Queue* q = make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  std::thread t([&] {
    (*rt)->bind_thread(0);
    ASSERT_EQ(dev->submit(packets.make(RequestType::read, 1).packet), Status::pending);
    ASSERT_EQ(dev->submit(packets.make(RequestType::read, 2).packet), Status::pending);
  });
  t.join();
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(seen, Status::usage_in_handler);
  int fired = 0;
  auto cb = [](Queue&, void* ctx) { ++*static_cast<int*>(ctx); };
  ASSERT_EQ(q->stop(cb, &fired), Status::success);
  EXPECT_EQ(q->stop(cb, &fired), Status::usage_slot_busy);
  EXPECT_EQ(dev->verifier()[Status::usage_in_handler], 1u);
  EXPECT_EQ(dev->verifier()[Status::usage_slot_busy], 1u);
  EXPECT_EQ(dev->verifier().total(), 2u);
  // Without reactors the application serves the cores: complete and serve
  // them from a thread of its own (binding stays with that thread).
  std::thread server([&] {
    for (Request r : held) EXPECT_EQ(r.complete(Status::success), Status::success);
    for (std::uint32_t core = 0; core < 2; ++core) {
      (*rt)->bind_thread(core);
      while ((*rt)->poll(core) != 0) {
      }
    }
  });
  server.join();
  EXPECT_EQ(fired, 1) << "once, when every shard is idle";
  expect_all_settled(packets);
}

// Power: stop_acknowledge(true) hands the request back to its queue, which
// needs it unmarked first; acknowledging twice is outside the callback's
// context (the first acknowledgement ended it).
TEST(Misuse, StopAcknowledgeOfACancelableRequestIsCancelable) {
  auto dev = make_device({.max_requests = 8});
  static Request held;
  static Status seen[4];
  held = Request();
  for (Status& s : seen) s = Status::pending;
  QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
  qc.on_default = [](Queue&, Request r) { held = r; };
  qc.on_stop = [](Queue&, Request r, std::uint32_t flags) {
    EXPECT_NE(flags & kStopRequestCancelable, 0u);
    seen[0] = r.stop_acknowledge(true);   // still marked cancelable
    seen[1] = r.unmark_cancelable();
    seen[2] = r.stop_acknowledge(false);  // keeps it; no resume handler
    seen[3] = r.stop_acknowledge(false);  // the acknowledgement is given
  };
  Queue* q = make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  ASSERT_TRUE(held);
  ASSERT_EQ(held.mark_cancelable(noop_cancel), Status::success);
  ASSERT_EQ(dev->suspend(), Status::success);
  EXPECT_EQ(seen[0], Status::usage_cancelable);
  EXPECT_EQ(seen[1], Status::success);
  EXPECT_EQ(seen[2], Status::success);
  EXPECT_EQ(seen[3], Status::invalid_device_request);
  EXPECT_EQ(dev->verifier()[Status::usage_cancelable], 1u);
  EXPECT_EQ(dev->verifier().total(), 1u);
  EXPECT_EQ(q->get_state().driver_owned, 1u) << "still the driver's";
  ASSERT_EQ(dev->resume(), Status::success);
  ASSERT_EQ(held.complete(Status::success), Status::success);
  expect_all_settled(packets);
}

TEST(Misuse, NoVerifierCountsOnCorrectUse) {
  ManualRig rig;
  Queue* other = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
  for (int i = 0; i < 10; ++i) {
    Request r = rig.submit_and_retrieve();
    ASSERT_EQ(r.mark_cancelable(noop_cancel), Status::success);
    ASSERT_EQ(r.unmark_cancelable(), Status::success);
    ASSERT_EQ(r.requeue(), Status::success);
    ASSERT_EQ(rig.q->retrieve_next_request(r), Status::success);
    ASSERT_EQ(r.forward_to_queue(*other), Status::success);
    ASSERT_EQ(other->retrieve_next_request(r), Status::success);
    ASSERT_EQ(r.complete(Status::success), Status::success);
  }
  int fired = 0;
  auto cb = [](Queue&, void* ctx) { ++*static_cast<int*>(ctx); };
  ASSERT_EQ(rig.q->stop(cb, &fired), Status::success);
  ASSERT_EQ(rig.q->stop(cb, &fired), Status::success) << "the slot is free once the callback fired";
  ASSERT_EQ(rig.q->start(), Status::success);
  ASSERT_EQ(rig.q->drain_synchronously(), Status::success);
  ASSERT_EQ(rig.q->start(), Status::success);
  EXPECT_EQ(fired, 2);
  EXPECT_EQ(rig.dev->verifier().total(), 0u);
  expect_all_settled(rig.packets);
}

// ===========================================================================
// Every usage error of the spec, as a table: the row's misuse runs with
// abort-on-misuse set as given, just before the misusing call.

struct Rig {
  std::unique_ptr<Device> dev;
  Packets packets;
};

// Arms abort-on-misuse (or not) right before the misuse, so that set-up never
// aborts. Rows whose misuse runs inside a callback arm and disarm around it
// there. What follows the misuse is correct use: the table test checks that
// nothing but the row's call counts.
void arm(Rig& rig, bool abort_on_misuse) { rig.dev->set_abort_on_misuse(abort_on_misuse); }

struct MisuseRow {
  const char* name;   // test-name suffix
  const char* rule;   // the rule of the spec the call breaks
  Status expected;    // what ioq returns and counts
  const char* op;     // how the abort message names the refused operation
  Status (*run)(Rig& rig, bool abort_on_misuse);
};

// A manual default queue on rig.dev, started; returns it.
Queue* manual_device(Rig& rig, std::uint32_t max_requests = 8) {
  rig.dev = make_device({.max_requests = max_requests});
  Queue* q = make_queue(*rig.dev, {.dispatch = DispatchType::manual, .default_queue = true});
  EXPECT_EQ(rig.dev->start(), Status::success);
  return q;
}

Request submit_retrieve(Rig& rig, Queue* q) {
  EXPECT_EQ(rig.dev->submit(rig.packets.make(RequestType::read).packet), Status::pending);
  Request r;
  EXPECT_EQ(q->retrieve_next_request(r), Status::success);
  return r;
}

void cb_count(Queue&, void* ctx) { ++*static_cast<int*>(ctx); }

// A request of a fresh manual device, retrieved and completed: a stale handle
// one step past its generation.
Request completed_request(Rig& rig) {
  Request r = submit_retrieve(rig, manual_device(rig));
  EXPECT_EQ(r.complete(Status::success), Status::success);
  return r;
}

// A one-slot device whose first request completed and whose second now holds
// the slot: returns the first (stale, its slot reused); `cur` is the second.
Request reused_slot(Rig& rig, Request& cur) {
  Queue* q = manual_device(rig, 1);
  Request old = submit_retrieve(rig, q);
  EXPECT_EQ(old.complete(Status::success), Status::success);
  cur = submit_retrieve(rig, q);
  EXPECT_EQ(cur.packet(), &rig.packets[1].packet);
  return old;
}

const MisuseRow kRows[] = {
    {"ForgedHandle", "handles: a forged handle (its generation names no request)",
     Status::invalid_handle, "complete",
     [](Rig& rig, bool abort) {
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       arm(rig, abort);
       const Status s = Request(r.handle() + 1).complete(Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"StaleHandle", "handles: a stale handle (its slot was reused since)",
     Status::invalid_handle, "complete",
     [](Rig& rig, bool abort) {
       Request cur;
       const Request old = reused_slot(rig, cur);
       arm(rig, abort);
       const Status s = old.complete(Status::success);
       EXPECT_EQ(cur.complete(Status::success), Status::success);
       return s;
     }},
    {"GetterAfterCompletion", "handles: reading a request after it completed",
     Status::usage_already_completed, "length",
     [](Rig& rig, bool abort) {
       const Request r = completed_request(rig);
       arm(rig, abort);
       return r.length() == 0 ? Status::usage_already_completed : Status::success;
     }},
    {"GetterOnAReusedSlot", "handles: reading through a stale handle (its slot was reused since)",
     Status::invalid_handle, "queue",
     [](Rig& rig, bool abort) {
       Request cur;
       const Request old = reused_slot(rig, cur);
       arm(rig, abort);
       const Status s = old.queue() == nullptr ? Status::invalid_handle : Status::success;
       EXPECT_EQ(cur.complete(Status::success), Status::success);
       return s;
     }},
    {"DoubleCompletion", "I1: a second completion",
     Status::usage_already_completed, "complete",
     [](Rig& rig, bool abort) {
       const Request r = completed_request(rig);
       arm(rig, abort);
       return r.complete(Status::success);
     }},
    {"CompleteFromPacketCallback", "I1: completing again from the originator's completion",
     Status::usage_already_completed, "complete",
     [](Rig& rig, bool abort) {
       static Status inner;
       static Device* device;
       static bool abort_flag;
       inner = Status::pending;
       device = nullptr;
       Queue* q = manual_device(rig);
       device = rig.dev.get();
       abort_flag = abort;
       auto& p = rig.packets.make(RequestType::read);
       p.packet.on_complete = [](Packet& pk) noexcept {
         TrackedPacket::on_complete(pk);
         device->set_abort_on_misuse(abort_flag);
         inner = Request(pk.request).complete(Status::unsuccessful);
       };
       EXPECT_EQ(rig.dev->submit(p.packet), Status::pending);
       Request r;
       EXPECT_EQ(q->retrieve_next_request(r), Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return inner;
     }},
    {"CompleteQueued", "4/Complete: the request must be owned (it is queued)",
     Status::usage_not_owned, "complete",
     [](Rig& rig, bool abort) {
       Queue* q = manual_device(rig);
       auto& p = rig.packets.make(RequestType::read);
       EXPECT_EQ(rig.dev->submit(p.packet), Status::pending);
       arm(rig, abort);
       const Status s = Request(p.packet.request).complete(Status::success);
       Request r;
       EXPECT_EQ(q->retrieve_next_request(r), Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"ForwardQueued", "4/ForwardToIoQueue (vf): R is not owned",
     Status::usage_not_owned, "forward_to_queue",
     [](Rig& rig, bool abort) {
       rig.dev = make_device({.max_requests = 8});
       Queue* q = make_queue(*rig.dev, {.dispatch = DispatchType::manual, .default_queue = true});
       Queue* n = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
       EXPECT_EQ(rig.dev->start(), Status::success);
       auto& p = rig.packets.make(RequestType::read);
       EXPECT_EQ(rig.dev->submit(p.packet), Status::pending);
       arm(rig, abort);
       const Status s = Request(p.packet.request).forward_to_queue(*n);
       Request r;
       EXPECT_EQ(q->retrieve_next_request(r), Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"RequeueAfterForward", "4/Requeue (vf): R is not owned (forwarded away)",
     Status::usage_not_owned, "requeue",
     [](Rig& rig, bool abort) {
       rig.dev = make_device({.max_requests = 8});
       Queue* q = make_queue(*rig.dev, {.dispatch = DispatchType::manual, .default_queue = true});
       Queue* n = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
       EXPECT_EQ(rig.dev->start(), Status::success);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(r.forward_to_queue(*n), Status::success);
       arm(rig, abort);
       const Status s = r.requeue();
       Request again;
       EXPECT_EQ(n->retrieve_next_request(again), Status::success);
       EXPECT_EQ(again.complete(Status::success), Status::success);
       return s;
     }},
    {"MarkQueued", "4/MarkCancelable (vf): R must be owned",
     Status::usage_not_owned, "mark_cancelable",
     [](Rig& rig, bool abort) {
       Queue* q = manual_device(rig);
       auto& p = rig.packets.make(RequestType::read);
       EXPECT_EQ(rig.dev->submit(p.packet), Status::pending);
       arm(rig, abort);
       const Status s = Request(p.packet.request).mark_cancelable(noop_cancel);
       Request r;
       EXPECT_EQ(q->retrieve_next_request(r), Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"CompleteReservedDuringAllocation",
     "6: a reserved request passed to the allocation callback is not the driver's to complete",
     Status::usage_not_owned, "complete",
     [](Rig& rig, bool abort) {
       static Status seen;
       static Device* device;
       static bool abort_flag;
       seen = Status::pending;
       Queue* q = manual_device(rig);
       device = rig.dev.get();
       abort_flag = abort;
       ForwardProgressConfig fp{.total_reserved = 1};
       fp.allocate_reserved_resources = [](Queue&, Request r, void*) {
         device->set_abort_on_misuse(abort_flag);
         seen = r.complete(Status::success);
         device->set_abort_on_misuse(false);
         return Status::success;
       };
       EXPECT_EQ(q->assign_forward_progress_policy(fp), Status::success);
       return seen;
     }},
    {"CompleteCancelable", "4/Complete: R must not be cancelable (outside its cancel routine)",
     Status::usage_cancelable, "complete",
     [](Rig& rig, bool abort) {
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(r.mark_cancelable(noop_cancel), Status::success);
       arm(rig, abort);
       const Status s = r.complete(Status::success);
       EXPECT_EQ(r.unmark_cancelable(), Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"ForwardCancelable", "4/ForwardToIoQueue (vf): R is cancelable (C46; a usage error in ioq)",
     Status::usage_cancelable, "forward_to_queue",
     [](Rig& rig, bool abort) {
       rig.dev = make_device({.max_requests = 8});
       Queue* q = make_queue(*rig.dev, {.dispatch = DispatchType::manual, .default_queue = true});
       Queue* n = make_queue(*rig.dev, {.dispatch = DispatchType::manual});
       EXPECT_EQ(rig.dev->start(), Status::success);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(r.mark_cancelable(noop_cancel), Status::success);
       arm(rig, abort);
       const Status s = r.forward_to_queue(*n);
       EXPECT_EQ(n->get_state().queued, 0u);
       EXPECT_EQ(r.unmark_cancelable(), Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"RequeueCancelable", "4/Requeue (vf): R must not be cancelable",
     Status::usage_cancelable, "requeue",
     [](Rig& rig, bool abort) {
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(r.mark_cancelable(noop_cancel), Status::success);
       arm(rig, abort);
       const Status s = r.requeue();
       EXPECT_EQ(q->get_state().queued, 0u);
       EXPECT_EQ(r.unmark_cancelable(), Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"MarkTwice", "4/MarkCancelable (vf): R must not be cancelable already",
     Status::usage_cancelable, "mark_cancelable",
     [](Rig& rig, bool abort) {
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(r.mark_cancelable(noop_cancel), Status::success);
       arm(rig, abort);
       const Status s = r.mark_cancelable_ex(noop_cancel);
       EXPECT_EQ(r.unmark_cancelable(), Status::success);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"StopAcknowledgeRequeueCancelable", "4/StopAcknowledge(TRUE) (vf): R must not be cancelable",
     Status::usage_cancelable, "stop_acknowledge",
     [](Rig& rig, bool abort) {
       static Request held;
       static Status seen;
       static Device* device;
       static bool abort_flag;
       held = Request();
       seen = Status::pending;
       rig.dev = make_device({.max_requests = 8});
       device = rig.dev.get();
       abort_flag = abort;
       QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
       qc.on_default = [](Queue&, Request r) { held = r; };
       qc.on_stop = [](Queue&, Request r, std::uint32_t) {
         device->set_abort_on_misuse(abort_flag);
         seen = r.stop_acknowledge(true);
         device->set_abort_on_misuse(false);
         EXPECT_EQ(r.unmark_cancelable(), Status::success);
         EXPECT_EQ(r.stop_acknowledge(true), Status::success);
       };
       Queue* q = make_queue(*rig.dev, qc);
       EXPECT_EQ(rig.dev->start(), Status::success);
       EXPECT_EQ(rig.dev->submit(rig.packets.make(RequestType::read).packet), Status::pending);
       EXPECT_EQ(held.mark_cancelable(noop_cancel), Status::success);
       EXPECT_EQ(rig.dev->suspend(), Status::success);
       EXPECT_EQ(q->get_state().queued, 1u) << "acknowledged with requeue: back at the head";
       const Request first = held;
       held = Request();
       EXPECT_EQ(rig.dev->resume(), Status::success);  // redelivered to the handler
       EXPECT_TRUE(wait_until([&] { return q->get_state().driver_owned == 1; }));
       EXPECT_EQ(held, first);
       EXPECT_EQ(held.complete(Status::success), Status::success);
       return seen;
     }},
    {"UnmarkNotCancelable", "4/UnmarkCancelable (vf): R is not cancelable ([code!=doc]: a usage error)",
     Status::usage_not_cancelable, "unmark_cancelable",
     [](Rig& rig, bool abort) {
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       arm(rig, abort);
       const Status s = r.unmark_cancelable();
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return s;
     }},
    {"StopWhileStopPending", "3/slots (C35): a second Stop callback while the idle slot is busy",
     Status::usage_slot_busy, "stop",
     [](Rig& rig, bool abort) {
       static int fired;
       fired = 0;
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(q->stop(cb_count, &fired), Status::success);
       arm(rig, abort);
       const Status s = q->stop(cb_count, &fired);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       EXPECT_EQ(fired, 1);
       return s;
     }},
    {"StopAndPurgeWhileStopPending", "3/slots: StopAndPurge shares the idle slot",
     Status::usage_slot_busy, "stop",
     [](Rig& rig, bool abort) {
       static int fired;
       fired = 0;
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(q->stop(cb_count, &fired), Status::success);
       arm(rig, abort);
       const Status s = q->stop_and_purge(cb_count, &fired);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       EXPECT_EQ(fired, 1);
       return s;
     }},
    {"PurgeWhileDrainPending", "3/slots: Purge shares the slot of a pending Drain",
     Status::usage_slot_busy, "purge",
     [](Rig& rig, bool abort) {
       static int fired;
       fired = 0;
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(q->drain(cb_count, &fired), Status::success);
       arm(rig, abort);
       const Status s = q->purge(cb_count, &fired);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       EXPECT_EQ(fired, 1);
       return s;
     }},
    {"SyncPurgeWhilePurgePending", "3/slots: a synchronous form needs the slot too",
     Status::usage_slot_busy, "purge",
     [](Rig& rig, bool abort) {
       static int fired;
       fired = 0;
       Queue* q = manual_device(rig);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(q->purge(cb_count, &fired), Status::success);
       arm(rig, abort);
       const Status s = q->purge_synchronously();
       EXPECT_EQ(r.complete(Status::success), Status::success);
       EXPECT_EQ(fired, 1);
       return s;
     }},
    {"SyncStopInOwnHandler", "3/sync (C36): StopSynchronously inside a handler of the same queue",
     Status::usage_in_handler, "a synchronous",
     [](Rig& rig, bool abort) {
       static Status seen;
       static Device* device;
       static bool abort_flag;
       seen = Status::pending;
       rig.dev = make_device({.max_requests = 8});
       device = rig.dev.get();
       abort_flag = abort;
       QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
       qc.on_default = [](Queue& q, Request r) {
         device->set_abort_on_misuse(abort_flag);
         seen = q.stop_synchronously();
         device->set_abort_on_misuse(false);
         EXPECT_EQ(r.complete(Status::success), Status::success);
       };
       make_queue(*rig.dev, qc);
       EXPECT_EQ(rig.dev->start(), Status::success);
       EXPECT_EQ(rig.dev->submit(rig.packets.make(RequestType::read).packet), Status::pending);
       return seen;
     }},
    {"SyncDrainInReadyNotify", "3/sync: DrainSynchronously from the queue's ready notification",
     Status::usage_in_handler, "a synchronous",
     [](Rig& rig, bool abort) {
       static Status seen;
       static Device* device;
       static bool abort_flag;
       seen = Status::pending;
       Queue* q = manual_device(rig);
       device = rig.dev.get();
       abort_flag = abort;
       EXPECT_EQ(q->ready_notify([](Queue& qq, void*) {
         device->set_abort_on_misuse(abort_flag);
         seen = qq.drain_synchronously();
         device->set_abort_on_misuse(false);
       }),
                 Status::success);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(r.complete(Status::success), Status::success);
       return seen;
     }},
    {"SyncPurgeInCancelRoutine", "3/sync: PurgeSynchronously from a cancel routine of the queue",
     Status::usage_in_handler, "a synchronous",
     [](Rig& rig, bool abort) {
       static Status seen;
       static Device* device;
       static bool abort_flag;
       seen = Status::pending;
       Queue* q = manual_device(rig);
       device = rig.dev.get();
       abort_flag = abort;
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(r.mark_cancelable([](Request rq, void*) noexcept {
         device->set_abort_on_misuse(abort_flag);
         seen = rq.queue()->purge_synchronously();
         device->set_abort_on_misuse(false);
         EXPECT_EQ(rq.complete(Status::cancelled), Status::success);
       }),
                 Status::success);
       EXPECT_EQ(rig.dev->cancel(r.handle()), Status::success);
       return seen;
     }},
    {"CompleteWhileCancelRoutineScheduled", "4/Complete: the cancel routine owns the completion once it is scheduled",
     Status::usage_cancelable, "complete",
     [](Rig& rig, bool abort) {
       static Status seen;
       static Device* device;
       static bool abort_flag;
       seen = Status::pending;
       rig.dev = make_device({.max_requests = 8});
       device = rig.dev.get();
       abort_flag = abort;
       QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
       qc.on_default = [](Queue&, Request r) {
         EXPECT_EQ(r.mark_cancelable(complete_cancel), Status::success);
         EXPECT_EQ(device->cancel(r.handle()), Status::success);  // the routine runs after this handler
         device->set_abort_on_misuse(abort_flag);
         seen = r.complete(Status::success);
         device->set_abort_on_misuse(false);
       };
       make_queue(*rig.dev, qc);
       EXPECT_EQ(rig.dev->start(), Status::success);
       EXPECT_EQ(rig.dev->submit(rig.packets.make(RequestType::read).packet), Status::pending);
       EXPECT_EQ(rig.packets[0].status.load(), Status::cancelled);
       return seen;
     }},
    {"SyncStopAndPurgeInCanceledOnQueue",
     "3/sync: StopAndPurgeSynchronously from the queue's canceled-on-queue handler",
     Status::usage_in_handler, "a synchronous",
     [](Rig& rig, bool abort) {
       static Status seen;
       static Device* device;
       static bool abort_flag;
       seen = Status::pending;
       rig.dev = make_device({.max_requests = 8});
       device = rig.dev.get();
       abort_flag = abort;
       Queue* q = make_queue(*rig.dev, {.dispatch = DispatchType::manual, .default_queue = true});
       QueueConfig nc{.dispatch = DispatchType::manual};
       nc.on_canceled_on_queue = [](Queue& qq, Request rq) {
         device->set_abort_on_misuse(abort_flag);
         seen = qq.stop_and_purge_synchronously();
         device->set_abort_on_misuse(false);
         EXPECT_EQ(rq.complete(Status::cancelled), Status::success);
       };
       Queue* n = make_queue(*rig.dev, nc);
       EXPECT_EQ(rig.dev->start(), Status::success);
       Request r = submit_retrieve(rig, q);
       EXPECT_EQ(r.forward_to_queue(*n), Status::success);
       EXPECT_EQ(rig.dev->cancel(r.handle()), Status::success);
       return seen;
     }},
    {"SyncStopInStopCallback", "3/sync: StopSynchronously from the queue's own stop callback",
     Status::usage_in_handler, "a synchronous",
     [](Rig& rig, bool abort) {
       static Status seen;
       static Device* device;
       static bool abort_flag;
       seen = Status::pending;
       Queue* q = manual_device(rig);
       device = rig.dev.get();
       abort_flag = abort;
       EXPECT_EQ(q->stop([](Queue& qq, void*) {  // nothing owned: fires inside stop()
         device->set_abort_on_misuse(abort_flag);
         seen = qq.stop_synchronously();
         device->set_abort_on_misuse(false);
       }),
                 Status::success);
       return seen;
     }},
};

class MisuseTable : public ::testing::TestWithParam<MisuseRow> {};

TEST_P(MisuseTable, ReturnsItsStatusCountsOnceAndLosesNothing) {
  const MisuseRow& row = GetParam();
  SCOPED_TRACE(row.rule);
  Rig rig;
  const Status got = row.run(rig, false);
  ASSERT_TRUE(rig.dev);
  EXPECT_TRUE(is_usage_error(row.expected));
  EXPECT_EQ(got, row.expected) << to_string(got);
  EXPECT_EQ(rig.dev->verifier()[row.expected], 1u) << "counted once";
  EXPECT_EQ(rig.dev->verifier().total(), 1u) << "and nothing else: set-up and clean-up are correct use";
  expect_all_settled(rig.packets);
}

class MisuseDeathTable : public ::testing::TestWithParam<MisuseRow> {};

TEST_P(MisuseDeathTable, AbortsNamingTheError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const MisuseRow& row = GetParam();
  const std::string pattern =
      "ioq: usage error \\(" + std::string(to_string(row.expected)) + "\\) on device ioq: " + row.op;
  EXPECT_DEATH(
      {
        Rig rig;
        (void)row.run(rig, true);
      },
      pattern);
}

std::string row_name(const ::testing::TestParamInfo<MisuseRow>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Spec, MisuseTable, ::testing::ValuesIn(kRows), row_name);
INSTANTIATE_TEST_SUITE_P(Spec, MisuseDeathTable, ::testing::ValuesIn(kRows), row_name);

// The device-level setting works the same as the runtime switch.
TEST(MisuseDeathTest, AbortOnMisuseFromTheDeviceConfig) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto dev = make_device({.max_requests = 8, .abort_on_misuse = true});
        Queue* q = make_queue(*dev, {.dispatch = DispatchType::manual, .default_queue = true});
        Packets packets;
        (void)dev->start();
        (void)dev->submit(packets.make(RequestType::read).packet);
        Request r;
        (void)q->retrieve_next_request(r);
        (void)r.unmark_cancelable();
      },
      "ioq: usage error \\(usage_not_cancelable\\) on device ioq: unmark_cancelable");
}

// With abort-on-misuse on, correct use (and the ordinary rejections below)
// never aborts.
TEST(Misuse, AbortOnMisuseLeavesCorrectUseAlone) {
  auto dev = make_device({.max_requests = 8, .abort_on_misuse = true});
  Queue* q = make_queue(*dev, {.dispatch = DispatchType::manual, .default_queue = true});
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  Request r;
  ASSERT_EQ(q->retrieve_next_request(r), Status::success);
  EXPECT_EQ(r.forward_to_queue(*q), Status::invalid_device_request);
  EXPECT_EQ(r.stop_acknowledge(false), Status::invalid_device_request);
  ASSERT_EQ(r.mark_cancelable(noop_cancel), Status::success);
  ASSERT_EQ(r.unmark_cancelable(), Status::success);
  ASSERT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(dev->cancel(r.handle()), Status::invalid_handle);
  EXPECT_EQ(dev->verifier().total(), 0u);
  expect_all_settled(packets);
}

// ===========================================================================
// Ordinary rejections: the spec gives these calls its own NTSTATUS, and ioq
// returns it without counting a usage error. Nothing changes.

// Forward to the request's own queue or to another device's queue (C46). The
// spec marks these (vf); ioq always checks them and answers with the spec's
// status, invalid_device_request, as for any refused forward.
TEST(MisuseRejections, ForwardToOwnQueueOrAnotherDevice) {
  auto dev = make_device({.max_requests = 8});
  auto dev2 = make_device({.max_requests = 8, .name = "other"});
  Queue* q = make_queue(*dev, {.dispatch = DispatchType::manual, .default_queue = true});
  Queue* o = make_queue(*dev2, {.dispatch = DispatchType::manual, .default_queue = true});
  ASSERT_EQ(dev->start(), Status::success);
  ASSERT_EQ(dev2->start(), Status::success);
  Packets packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  Request r;
  ASSERT_EQ(q->retrieve_next_request(r), Status::success);
  EXPECT_EQ(r.forward_to_queue(*q), Status::invalid_device_request);
  EXPECT_EQ(r.forward_to_queue(*o), Status::invalid_device_request);
  EXPECT_EQ(r.queue(), q);
  EXPECT_EQ(q->get_state().driver_owned, 1u);
  EXPECT_EQ(o->get_state().queued, 0u);
  EXPECT_EQ(dev->verifier().total(), 0u);
  EXPECT_EQ(dev2->verifier().total(), 0u);
  ASSERT_EQ(r.complete(Status::success), Status::success);
  expect_all_settled(packets);
}

// Requeue from a sequential or parallel queue (C49: always checked), and a
// null cancel routine.
TEST(MisuseRejections, RequeueOnANonManualQueueAndMarkWithoutRoutine) {
  auto dev = make_device({.max_requests = 8});
  static Status seen[3];
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue&, Request r) {
    seen[0] = r.requeue();
    seen[1] = r.mark_cancelable(nullptr);
    seen[2] = r.complete(Status::success);
  };
  Queue* q = make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  EXPECT_EQ(seen[0], Status::invalid_device_request);
  EXPECT_EQ(seen[1], Status::invalid_parameter);
  EXPECT_EQ(seen[2], Status::success);
  EXPECT_EQ(q->counters().requeued, 0u);
  EXPECT_EQ(dev->verifier().total(), 0u);
  expect_all_settled(packets);
}

// StopAcknowledge outside a stop callback: the spec marks the context rule
// (vf); ioq refuses with invalid_device_request and changes nothing.
TEST(MisuseRejections, StopAcknowledgeOutsideAStopCallback) {
  ManualRig rig;
  Request r = rig.submit_and_retrieve();
  EXPECT_EQ(r.stop_acknowledge(false), Status::invalid_device_request);
  EXPECT_EQ(r.stop_acknowledge(true), Status::invalid_device_request);
  EXPECT_EQ(rig.q->get_state().driver_owned, 1u);
  EXPECT_EQ(rig.q->get_state().queued, 0u);
  EXPECT_EQ(rig.dev->verifier().total(), 0u);
  EXPECT_EQ(r.complete(Status::success), Status::success);
  expect_all_settled(rig.packets);
}

// Retrieve/Find on queues that do not allow them (C16, C22; RetrieveFound is
// (vf) in the spec) and ReadyNotify misuse (C24).
TEST(MisuseRejections, RetrieveFindAndReadyNotifyOnTheWrongQueue) {
  auto dev = make_device({.max_requests = 8});
  QueueConfig pc{.dispatch = DispatchType::parallel, .default_queue = true};
  pc.on_default = [](Queue&, Request r) { (void)r.complete(Status::success); };
  Queue* par = make_queue(*dev, pc);
  QueueConfig sc{.dispatch = DispatchType::sequential};
  sc.on_read = [](Queue&, Request r) { (void)r.complete(Status::success); };
  Queue* seq = make_queue(*dev, sc);
  Queue* man = make_queue(*dev, {.dispatch = DispatchType::manual});
  ASSERT_EQ(dev->start(), Status::success);
  Request out(1234);
  EXPECT_EQ(par->retrieve_next_request(out), Status::invalid_device_state);
  EXPECT_FALSE(out) << "null on failure";
  EXPECT_EQ(par->retrieve_next_request_by_file_object(FileHandle{1}, out), Status::invalid_device_state);
  EXPECT_EQ(seq->find_request(Request(), FileHandle{}, out), Status::invalid_device_request);
  EXPECT_EQ(par->find_request(Request(), FileHandle{}, out), Status::invalid_device_request);
  EXPECT_EQ(seq->retrieve_found_request(Request(), out), Status::invalid_device_request);
  EXPECT_EQ(par->retrieve_found_request(Request(), out), Status::invalid_device_request);
  EXPECT_EQ(man->retrieve_found_request(Request(7), out), Status::not_found) << "a tag naming nothing";
  EXPECT_EQ(man->find_request(Request(7), FileHandle{}, out), Status::not_found);
  auto cb = [](Queue&, void*) {};
  EXPECT_EQ(par->ready_notify(cb), Status::invalid_device_request) << "not manual";
  ASSERT_EQ(man->ready_notify(cb), Status::success);
  EXPECT_EQ(man->ready_notify(cb), Status::invalid_device_request) << "registered already";
  EXPECT_EQ(man->ready_notify(nullptr), Status::invalid_device_request) << "unregister while dispatching";
  ASSERT_EQ(man->stop(), Status::success);
  EXPECT_EQ(man->ready_notify(nullptr), Status::success);
  EXPECT_EQ(man->ready_notify(nullptr), Status::invalid_device_request) << "nothing registered";
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// AssignForwardProgressPolicy misuse (C63) is invalid_parameter; the policy
// already set stays in force.
TEST(MisuseRejections, ForwardProgressPolicyMisuse) {
  ManualRig rig;
  EXPECT_EQ(rig.q->assign_forward_progress_policy({.total_reserved = 0}), Status::invalid_parameter);
  EXPECT_EQ(rig.q->assign_forward_progress_policy({.total_reserved = 1, .policy = ForwardProgressPolicy::examine}),
            Status::invalid_parameter)
      << "examine without a callback";
  ASSERT_EQ(rig.q->assign_forward_progress_policy({.total_reserved = 2}), Status::success);
  EXPECT_EQ(rig.q->assign_forward_progress_policy({.total_reserved = 2}), Status::invalid_parameter)
      << "a second policy";
  EXPECT_EQ(rig.q->forward_progress_stats().total, 2u);
  EXPECT_EQ(rig.dev->verifier().total(), 0u);
}

// After remove(): arrivals complete invalid_device_state (each once), forwards
// into a removed queue are wdf_busy, and retrieval is paused. A request the
// driver still owns stays the driver's to complete. Nothing counts.
TEST(MisuseRejections, UseAfterRemoval) {
  auto dev = make_device({.max_requests = 8});
  static Request held;
  held = Request();
  QueueConfig qc{.dispatch = DispatchType::manual, .power_managed = TriState::no, .default_queue = true};
  Queue* q = make_queue(*dev, qc);
  Queue* n = make_queue(*dev, {.dispatch = DispatchType::manual, .power_managed = TriState::no});
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
  ASSERT_EQ(q->retrieve_next_request(held), Status::success);
  std::thread remover([&] { EXPECT_EQ(dev->remove(), Status::success); });
  // remove() waits for the owned request (no stop handler): forward it while
  // the queues are shut, then complete it.
  ASSERT_TRUE(wait_until([&] { return !(n->get_state().flags & kQueueAccepting); }));
  EXPECT_EQ(held.forward_to_queue(*n), Status::wdf_busy);
  EXPECT_EQ(held.queue(), q);
  ASSERT_EQ(held.complete(Status::success), Status::success);
  remover.join();
  EXPECT_EQ(dev->power_state(), PowerState::removed);
  EXPECT_EQ(dev->remove(), Status::invalid_device_state);
  auto& late = packets.make(RequestType::read);
  ASSERT_EQ(dev->submit(late.packet), Status::pending);
  EXPECT_EQ(late.completions.load(), 1);
  EXPECT_EQ(late.status.load(), Status::invalid_device_state);
  EXPECT_EQ(q->start(), Status::success);
  EXPECT_EQ(q->get_state().flags & kQueueAccepting, 0u) << "removal is final";
  Request r;
  EXPECT_NE(q->retrieve_next_request(r), Status::success);
  EXPECT_EQ(held.complete(Status::success), Status::invalid_handle)
      << "still a usage error (the late arrival reused the slot: the handle is stale)";
  EXPECT_EQ(dev->verifier().total(), 1u);
  expect_all_settled(packets);
}

// File handles and packet cancellation: closing a file twice or cancelling a
// completed packet is a race the submitter may lose, not a usage error.
TEST(MisuseRejections, FileAndCancelRaces) {
  ManualRig rig;
  const FileHandle f = rig.dev->open_file();
  ASSERT_EQ(rig.dev->close_file(f), Status::success);
  EXPECT_EQ(rig.dev->close_file(f), Status::invalid_handle);
  EXPECT_EQ(rig.dev->close_file(FileHandle{}), Status::invalid_handle);
  auto& p = rig.submit();
  ASSERT_EQ(rig.dev->cancel(p.packet), Status::success);
  EXPECT_EQ(p.status.load(), Status::cancelled);
  EXPECT_EQ(rig.dev->cancel(p.packet), Status::invalid_handle);
  EXPECT_EQ(rig.dev->verifier().total(), 0u);
  expect_all_settled(rig.packets);
}

}  // namespace
}  // namespace ioq
