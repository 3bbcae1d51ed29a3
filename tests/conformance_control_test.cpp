// Conformance tests for spec section 8, items C30-C55: Stop/Start (C30-C36),
// Drain/Purge/StopAndPurge (C37-C45), Forward/Requeue (C46-C49) and
// cancellation (C50-C55). The contract is /work/shared/spec/queue-semantics.md
// (sections 1-5); where the project's issue decided otherwise (usage errors
// instead of WDF fatal errors), the test says so.
//
// How the tests work
//   * Every queue runs its handlers at dispatch level unless a test says
//     otherwise: a submit, completion, forward or control call made by the test
//     runs the dispatch loop on the test's own thread, so what it triggers has
//     happened when the call returns and most tests are single-threaded.
//   * A request is identified by its packet's length (1, 2, 3, ...): events
//     read "io:<queue>:<id>" (handler), "coq:<queue>:<id>" (canceled-on-queue),
//     "cancel:<id>" (the request's cancel callback), "done:<id>" (the driver
//     completes it; recorded just before the call, so whatever the completion
//     triggers comes after it) and "cb:<name>" (a stop/drain/purge callback).
//   * Synchronous stop/purge calls run on a BlockingCall thread with a bounded
//     wait, so a runtime that never returns fails the test instead of hanging
//     the suite (the device is then leaked: the blocked thread still uses it).
//   * Each test ends with every packet completed exactly once, and checks the
//     verifier saw exactly the usage errors the test provoked.
#include "queue_harness.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ioq::test {
namespace {

using namespace std::chrono_literals;

// Long enough for a sanitizer build on a loaded machine; only reached on failure.
constexpr auto kHang = 10s;
// How long a call must stay blocked to count as "still waiting" (the other
// thread has already been seen to act, so this only guards an early return).
constexpr auto kStillBlocked = 50ms;

constexpr std::uint32_t kAcc = kQueueAccepting;
constexpr std::uint32_t kDsp = kQueueDispatching;
constexpr std::uint32_t kNoReq = kQueueNoRequests;
constexpr std::uint32_t kDrvNoReq = kQueueDriverNoRequests;

// ---------------------------------------------------------------------------
// State assertions

std::string describe(std::uint32_t flags, std::uint32_t queued, std::uint32_t driver) {
  std::string f;
  auto add = [&](std::uint32_t bit, const char* name) {
    if (flags & bit) f += f.empty() ? name : std::string("|") + name;
  };
  add(kQueueAccepting, "Accept");
  add(kQueueDispatching, "Dispatch");
  add(kQueueNoRequests, "NoRequests");
  add(kQueueDriverNoRequests, "DriverNoRequests");
  add(kQueuePnpHeld, "PnpHeld");
  if (f.empty()) f = "0";
  return "{" + f + ", queued=" + std::to_string(queued) + ", driver=" + std::to_string(driver) + "}";
}

::testing::AssertionResult StateEq(const QueueState& s, std::uint32_t flags, std::uint32_t queued,
                                   std::uint32_t driver) {
  if (s.flags == flags && s.queued == queued && s.driver_owned == driver)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "state " << describe(s.flags, s.queued, s.driver_owned)
                                       << ", expected " << describe(flags, queued, driver);
}

::testing::AssertionResult StateIs(const Queue& q, std::uint32_t flags, std::uint32_t queued,
                                   std::uint32_t driver) {
  return StateEq(q.get_state(), flags, queued, driver);
}

using Seq = std::vector<std::string>;

// ---------------------------------------------------------------------------
// The driver side: per-queue state reached through Queue::context()

std::string id_of(Request r) { return std::to_string(r.length()); }

struct Drv {
  Drv(Events& e, std::string n) : ev(&e), name(std::move(n)) {}
  Events* ev;
  std::string name;
  Queue* forward_to = nullptr;  // forward_handler's destination
  std::mutex mu;
  std::vector<Request> held;    // delivered to hold_handler, not yet completed by the test
  std::vector<Request> handed;  // handed over by the canceled-on-queue handler
  std::vector<Status> results;  // forward_handler / sync_handler outcomes
  std::vector<Queue*> seen_queue;  // Request::queue() as the handler saw it
};

Drv& drv(Queue& q) { return *static_cast<Drv*>(q.context()); }

// Keeps every delivered request for the test to complete.
void hold_handler(Queue& q, Request r) {
  Drv& d = drv(q);
  d.ev->add("io:" + d.name + ":" + id_of(r));
  std::lock_guard lock(d.mu);
  d.held.push_back(r);
  d.seen_queue.push_back(r.queue());
}

// Forwards every delivered request to d.forward_to (completing it with the
// failure if the forward is refused, so nothing is left behind).
void forward_handler(Queue& q, Request r) {
  Drv& d = drv(q);
  const Status s = r.forward_to_queue(*d.forward_to);
  {
    std::lock_guard lock(d.mu);
    d.results.push_back(s);
  }
  if (s != Status::success) (void)r.complete(s);
}

// EvtIoCanceledOnQueue: the driver now owns the request; the test completes it.
void coq_handler(Queue& q, Request r) {
  Drv& d = drv(q);
  d.ev->add("coq:" + d.name + ":" + id_of(r));
  std::lock_guard lock(d.mu);
  d.handed.push_back(r);
}

// Calls every synchronous control operation on its own queue (C36), then keeps
// the request.
void sync_handler(Queue& q, Request r) {
  Drv& d = drv(q);
  const Status a = q.stop_synchronously();
  const Status b = q.drain_synchronously();
  const Status c = q.purge_synchronously();
  const Status e = q.stop_and_purge_synchronously();
  d.ev->add("io:" + d.name + ":" + id_of(r));
  std::lock_guard lock(d.mu);
  d.results.insert(d.results.end(), {a, b, c, e});
  d.held.push_back(r);
}

std::size_t held_count(Drv& d) {
  std::lock_guard lock(d.mu);
  return d.held.size();
}

// Removes the request with this id from what the driver holds (delivered or
// handed over); a null Request (and a test failure) if it has none.
Request take(Drv& d, std::uint32_t id) {
  std::lock_guard lock(d.mu);
  for (auto* list : {&d.held, &d.handed}) {
    for (auto it = list->begin(); it != list->end(); ++it) {
      if (it->length() == id) {
        const Request r = *it;
        list->erase(it);
        return r;
      }
    }
  }
  ADD_FAILURE() << "queue " << d.name << " holds no request " << id;
  return Request{};
}

// The driver completes r (recording "done:<id>" first).
void complete(Events& ev, Request r, Status s = Status::success) {
  ev.add("done:" + id_of(r));
  EXPECT_EQ(r.complete(s), Status::success) << "completing request " << r.length();
}

// Completes everything the driver holds, including what those completions
// deliver next, until nothing is left.
void complete_all(Drv& d) {
  for (;;) {
    std::vector<Request> batch;
    {
      std::lock_guard lock(d.mu);
      batch.swap(d.held);
      batch.insert(batch.end(), d.handed.begin(), d.handed.end());
      d.handed.clear();
    }
    if (batch.empty()) return;
    for (Request r : batch) complete(*d.ev, r);
  }
}

// A stop/drain/purge completion callback: counts, records the queue's state
// when it fires and, optionally, whether the call that armed it had returned.
struct CbRec {
  CbRec(Events& e, std::string n) : ev(&e), name(std::move(n)) {}
  Events* ev;
  std::string name;
  std::atomic<int> fired{0};
  QueueState at_fire{};
  const std::atomic<bool>* caller_returned = nullptr;
  bool fired_after_return = false;
};

void rec_cb(Queue& q, void* ctx) {
  auto* c = static_cast<CbRec*>(ctx);
  c->at_fire = q.get_state();
  if (c->caller_returned != nullptr) c->fired_after_return = c->caller_returned->load();
  c->ev->add("cb:" + c->name);
  c->fired.fetch_add(1);
}

// A request's cancel callback (EvtRequestCancel).
struct CancelRec {
  explicit CancelRec(Events& e) : ev(&e) {}
  Events* ev;
  std::atomic<int> runs{0};
  bool complete_inline = false;  // complete the request with cancelled from the callback
};

void cancel_cb(Request r, void* ctx) noexcept {
  auto* c = static_cast<CancelRec*>(ctx);
  const std::string id = id_of(r);
  c->ev->add("cancel:" + id);
  c->runs.fetch_add(1);
  if (c->complete_inline) {
    c->ev->add("done:" + id);
    EXPECT_EQ(r.complete(Status::cancelled), Status::success);
  }
}

// ---------------------------------------------------------------------------
// Set-up helpers

QueueConfig io_queue(DispatchType t, Drv& d, IoHandler h = hold_handler, bool is_default = true) {
  QueueConfig c{.dispatch = t, .default_queue = is_default};
  c.on_default = h;
  c.context = &d;
  c.name = d.name.c_str();
  return c;
}

QueueConfig manual_queue(Drv& d, bool is_default = false) {
  QueueConfig c{.dispatch = DispatchType::manual, .default_queue = is_default};
  c.context = &d;
  c.name = d.name.c_str();
  return c;
}

// Submits packets with ids first..last (the id is the length).
void submit_range(Device& dev, Packets& pk, std::uint32_t first, std::uint32_t last,
                  RequestType type = RequestType::read) {
  for (std::uint32_t id = first; id <= last; ++id) {
    auto& p = pk.make(type, id);
    EXPECT_EQ(dev.submit(p.packet), Status::pending) << "submit " << id;
  }
}

using test::wait_until;

// Runs a call that may block on its own thread; the test checks whether (and
// with what) it returned. If it never returns the thread is detached and the
// test must leak the device it uses.
class BlockingCall {
 public:
  explicit BlockingCall(std::function<Status()> fn, Queue* observe = nullptr)
      : sh_(std::make_shared<Shared>()) {
    thread_ = std::thread([sh = sh_, fn = std::move(fn), observe] {
      const Status s = fn();
      const QueueState st = observe != nullptr ? observe->get_state() : QueueState{};
      std::lock_guard lock(sh->m);
      sh->result = s;
      sh->state_after = st;
      sh->done = true;
      sh->cv.notify_all();
    });
  }
  ~BlockingCall() {
    if (returned_within(0ms)) thread_.join();
    else thread_.detach();
  }
  BlockingCall(const BlockingCall&) = delete;
  BlockingCall& operator=(const BlockingCall&) = delete;

  bool returned_within(std::chrono::milliseconds d) {
    std::unique_lock lock(sh_->m);
    return sh_->cv.wait_for(lock, d, [&] { return sh_->done; });
  }
  Status result() {
    std::lock_guard lock(sh_->m);
    return sh_->result;
  }
  // The observed queue's state right after the call returned.
  QueueState state_after() {
    std::lock_guard lock(sh_->m);
    return sh_->state_after;
  }

 private:
  struct Shared {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    Status result = Status::pending;
    QueueState state_after{};
  };
  std::shared_ptr<Shared> sh_;
  std::thread thread_;
};

// ===========================================================================
// Stop / Start (C30-C36)

// C30: Stop → Accept=1, Dispatch=0; new arrivals are queued, not delivered.
TEST(Conformance, C30_StopHoldsArrivals) {
  Events ev;
  Drv d(ev, "q");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::parallel, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);

  ASSERT_EQ(q->stop(), Status::success);
  EXPECT_TRUE(StateIs(*q, kAcc | kNoReq | kDrvNoReq, 0, 0));
  submit_range(*dev, pk, 1, 3);
  EXPECT_TRUE(ev.snapshot().empty()) << "a stopped queue delivered";
  EXPECT_TRUE(StateIs(*q, kAcc | kDrvNoReq, 3, 0));
  for (std::size_t i = 0; i < pk.size(); ++i) EXPECT_FALSE(pk[i].done()) << i;

  // Start delivers what was held, in order.
  ASSERT_EQ(q->start(), Status::success);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "io:q:2", "io:q:3"}));
  complete_all(d);
  pk.expect_all_completed_once();
  for (std::size_t i = 0; i < pk.size(); ++i) EXPECT_EQ(pk[i].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C30: Stop on a drained queue sets Accept again (Accept=1, Dispatch=0), and
// arrivals are then queued, not delivered.
TEST(Conformance, C30_StopOnDrainedQueueAcceptsAndHolds) {
  Events ev;
  Drv d(ev, "q");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::sequential, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);

  ASSERT_EQ(q->drain(), Status::success);
  ASSERT_TRUE(StateIs(*q, kDsp | kNoReq | kDrvNoReq, 0, 0)) << "drained";
  ASSERT_EQ(q->stop(), Status::success);
  EXPECT_TRUE(StateIs(*q, kAcc | kNoReq | kDrvNoReq, 0, 0));
  submit_range(*dev, pk, 1, 2);
  EXPECT_TRUE(ev.snapshot().empty()) << "a stopped queue delivered";
  EXPECT_TRUE(StateIs(*q, kAcc | kDrvNoReq, 2, 0));
  EXPECT_FALSE(pk[0].done());
  EXPECT_FALSE(pk[1].done());

  ASSERT_EQ(q->start(), Status::success);
  complete_all(d);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "done:1", "io:q:2", "done:2"}));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
  EXPECT_EQ(pk[1].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C31: Stop(cb) with 2 owned and 5 queued → cb fires once, when both owned
// requests have completed, with the 5 still queued (queued count ignored).
TEST(Conformance, C31_StopCallbackWaitsForOwnedOnly) {
  Events ev;
  Drv d(ev, "q");
  CbRec cb(ev, "stop");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig qc = io_queue(DispatchType::parallel, d);
  qc.max_presented = 2;
  Queue* q = make_queue(*dev, qc);
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);

  submit_range(*dev, pk, 1, 7);
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 5, 2));

  ASSERT_EQ(q->stop(rec_cb, &cb), Status::success);
  EXPECT_EQ(cb.fired.load(), 0) << "fired with 2 owned";
  EXPECT_TRUE(StateIs(*q, kAcc, 5, 2));

  complete(ev, take(d, 1));
  EXPECT_EQ(cb.fired.load(), 0) << "fired with 1 owned";
  EXPECT_TRUE(StateIs(*q, kAcc, 5, 1)) << "a stopped queue delivered a queued request";

  complete(ev, take(d, 2));
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_TRUE(StateEq(cb.at_fire, kAcc | kDrvNoReq, 5, 0)) << "state when the callback fired";
  EXPECT_TRUE(StateIs(*q, kAcc | kDrvNoReq, 5, 0));
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "io:q:2", "done:1", "done:2", "cb:stop"}));
  for (std::size_t i = 2; i < 7; ++i) EXPECT_FALSE(pk[i].done()) << "queued request " << i + 1;

  ASSERT_EQ(q->start(), Status::success);
  complete_all(d);
  EXPECT_EQ(cb.fired.load(), 1) << "the callback fired again";
  pk.expect_all_completed_once();
  for (std::size_t i = 0; i < pk.size(); ++i) EXPECT_EQ(pk[i].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C32: Stop(cb) with nothing owned, no handler running, caller outside any
// handler → cb fires before Stop returns (also with requests queued).
TEST(Conformance, C32_StopCallbackFiresBeforeReturnWhenIdle) {
  Events ev;
  Drv d(ev, "q");
  CbRec first(ev, "stop1"), second(ev, "stop2");
  std::atomic<bool> returned{false};
  first.caller_returned = &returned;
  second.caller_returned = &returned;
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::sequential, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);

  // Empty queue.
  EXPECT_EQ(q->stop(rec_cb, &first), Status::success);
  returned = true;
  EXPECT_EQ(first.fired.load(), 1);
  EXPECT_FALSE(first.fired_after_return) << "fired only after stop returned";
  EXPECT_TRUE(StateEq(first.at_fire, kAcc | kNoReq | kDrvNoReq, 0, 0));

  // Stopped queue holding 2 queued requests, none owned.
  submit_range(*dev, pk, 1, 2);
  ASSERT_TRUE(StateIs(*q, kAcc | kDrvNoReq, 2, 0));
  returned = false;
  EXPECT_EQ(q->stop(rec_cb, &second), Status::success);
  returned = true;
  EXPECT_EQ(second.fired.load(), 1);
  EXPECT_FALSE(second.fired_after_return) << "fired only after stop returned";
  EXPECT_TRUE(StateEq(second.at_fire, kAcc | kDrvNoReq, 2, 0));
  EXPECT_EQ(first.fired.load(), 1);

  ASSERT_EQ(q->start(), Status::success);
  complete_all(d);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C33: Start on a purged queue → Accept=Dispatch=1; arrivals are delivered
// (and handled normally: the purge's cancel latch is cleared).
TEST(Conformance, C33_StartOnPurgedQueueDeliversAgain) {
  Events ev;
  Drv d(ev, "q");
  CancelRec cr(ev);
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::sequential, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);

  ASSERT_EQ(q->stop(), Status::success);
  submit_range(*dev, pk, 1, 1);  // queued, never presented
  ASSERT_EQ(q->purge(), Status::success);
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_TRUE(StateIs(*q, kNoReq | kDrvNoReq, 0, 0)) << "purged";
  submit_range(*dev, pk, 2, 2);
  EXPECT_EQ(pk[1].status.load(), Status::invalid_device_state) << "a purged queue accepted";

  ASSERT_EQ(q->start(), Status::success);
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  submit_range(*dev, pk, 3, 3);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:3"}));
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 1));
  const Request r = take(d, 3);
  EXPECT_EQ(r.mark_cancelable(cancel_cb, &cr), Status::success);
  EXPECT_EQ(cr.runs.load(), 0) << "the latch survived start";
  EXPECT_EQ(r.unmark_cancelable(), Status::success);
  complete(ev, r);
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[2].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C34: StopSynchronously from a non-handler thread → returns only after all
// owned requests have completed (queued requests do not hold it up).
TEST(Conformance, C34_StopSynchronouslyWaitsForOwned) {
  Events ev;
  Drv d(ev, "q");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig qc = io_queue(DispatchType::parallel, d);
  qc.max_presented = 2;
  Queue* q = make_queue(*dev, qc);
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 3);  // 1 and 2 owned, 3 queued
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 1, 2));

  BlockingCall call([q] { return q->stop_synchronously(); }, q);
  // The stop has acted once Dispatch is clear.
  ASSERT_TRUE(wait_until([&] { return (q->get_state().flags & kDsp) == 0; })) << "stop never acted";
  EXPECT_FALSE(call.returned_within(kStillBlocked)) << "returned with 2 owned";
  complete(ev, take(d, 1));
  EXPECT_FALSE(call.returned_within(kStillBlocked)) << "returned with 1 owned";
  complete(ev, take(d, 2));
  if (!call.returned_within(kHang)) {
    ADD_FAILURE() << "stop_synchronously did not return after the owned requests completed";
    (void)dev.release();  // the blocked thread still uses it
    return;
  }
  EXPECT_EQ(call.result(), Status::success);
  EXPECT_TRUE(StateEq(call.state_after(), kAcc | kDrvNoReq, 1, 0)) << "state when it returned";
  EXPECT_FALSE(pk[2].done()) << "the queued request was touched";

  ASSERT_EQ(q->start(), Status::success);
  complete_all(d);
  pk.expect_all_completed_once();
  for (std::size_t i = 0; i < pk.size(); ++i) EXPECT_EQ(pk[i].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C35: Stop(cb2) while cb1 is pending is a usage error in ioq (WDF: fatal):
// usage_slot_busy, counted once in the verifier, nothing changes, cb2 never
// runs. Stop(nullptr) uses no slot and is allowed.
TEST(Conformance, C35_SecondStopCallbackIsUsageError) {
  Events ev;
  Drv d(ev, "q");
  CbRec cb1(ev, "stop1"), cb2(ev, "stop2");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::sequential, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 2);  // 1 owned, 2 queued

  ASSERT_EQ(q->stop(rec_cb, &cb1), Status::success);
  ASSERT_EQ(cb1.fired.load(), 0);
  const VerifierCounts before = dev->verifier();
  EXPECT_EQ(q->stop(rec_cb, &cb2), Status::usage_slot_busy);
  const VerifierCounts after = dev->verifier();
  EXPECT_EQ(after[Status::usage_slot_busy], before[Status::usage_slot_busy] + 1);
  EXPECT_EQ(after.total(), before.total() + 1);
  EXPECT_TRUE(StateIs(*q, kAcc, 1, 1));

  EXPECT_EQ(q->stop(), Status::success) << "Stop(nullptr) uses no slot";
  EXPECT_EQ(dev->verifier().total(), after.total());
  EXPECT_TRUE(StateIs(*q, kAcc, 1, 1));

  complete(ev, take(d, 1));
  EXPECT_EQ(cb1.fired.load(), 1);
  EXPECT_EQ(cb2.fired.load(), 0) << "the rejected callback ran";
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "done:1", "cb:stop1"}));

  ASSERT_EQ(q->start(), Status::success);
  complete_all(d);
  EXPECT_EQ(cb2.fired.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 1u);
}

// C35 (the other slot): Drain(cb2) while a drain callback is pending →
// usage_slot_busy, counted; the idle slot (Stop) and the purge slot (Drain,
// Purge) are separate, so a Stop callback does not make Drain(cb) busy.
TEST(Conformance, C35_PurgeSlotBusyAndSlotsAreSeparate) {
  Events ev;
  Drv d(ev, "q");
  CbRec stop_cb(ev, "stop"), drain1(ev, "drain1"), drain2(ev, "drain2");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::sequential, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 1);  // owned

  ASSERT_EQ(q->stop(rec_cb, &stop_cb), Status::success);
  EXPECT_EQ(q->drain(rec_cb, &drain1), Status::success) << "the idle slot blocked the purge slot";
  EXPECT_EQ(q->drain(rec_cb, &drain2), Status::usage_slot_busy);
  EXPECT_EQ(q->purge(rec_cb, &drain2), Status::usage_slot_busy);
  EXPECT_EQ(dev->verifier()[Status::usage_slot_busy], 2u);
  EXPECT_EQ(q->drain(), Status::success) << "Drain(nullptr) uses no slot";
  EXPECT_TRUE(StateIs(*q, kNoReq, 0, 1));

  complete(ev, take(d, 1));
  EXPECT_EQ(stop_cb.fired.load(), 1);
  EXPECT_EQ(drain1.fired.load(), 1);
  EXPECT_EQ(drain2.fired.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 2u);
}

// C36: a synchronous stop (and drain/purge/stop-and-purge) from a handler of
// the same queue would deadlock in WDF; ioq returns usage_in_handler, counts
// it, and the rejected call changes nothing.
TEST(Conformance, C36_SyncFromOwnHandlerIsUsageError) {
  Events ev;
  Drv d(ev, "q");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::sequential, d, sync_handler));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);

  auto& p = pk.make(RequestType::read, 1);
  Device* devp = dev.get();
  BlockingCall call([devp, &p] { return devp->submit(p.packet); });
  if (!call.returned_within(kHang)) {
    ADD_FAILURE() << "a synchronous call from the queue's own handler deadlocked";
    (void)dev.release();
    return;
  }
  EXPECT_EQ(call.result(), Status::pending);
  {
    std::lock_guard lock(d.mu);
    EXPECT_EQ(d.results, (std::vector<Status>(4, Status::usage_in_handler)))
        << "stop/drain/purge/stop_and_purge _synchronously";
  }
  EXPECT_EQ(dev->verifier()[Status::usage_in_handler], 4u);
  EXPECT_EQ(dev->verifier().total(), 4u);
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 1)) << "a rejected call stopped the queue";

  complete(ev, take(d, 1));
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
}

// C36 on a passive-level queue: the handler runs on a worker thread, and the
// same-queue check must hold there too.
TEST(Conformance, C36_SyncFromOwnPassiveHandlerIsUsageError) {
  Events ev;
  Drv d(ev, "q");
  Packets pk;
  auto dev = make_device({.max_requests = 64, .passive_workers = 2});
  ASSERT_TRUE(dev);
  QueueConfig qc = io_queue(DispatchType::sequential, d, sync_handler);
  qc.execution = ExecutionLevel::passive;
  Queue* q = make_queue(*dev, qc);
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);

  submit_range(*dev, pk, 1, 1);
  if (!wait_until([&] { return held_count(d) == 1; })) {
    ADD_FAILURE() << "the passive handler never finished (deadlocked in a synchronous call?)";
    (void)dev.release();
    return;
  }
  {
    std::lock_guard lock(d.mu);
    EXPECT_EQ(d.results, (std::vector<Status>(4, Status::usage_in_handler)));
  }
  EXPECT_EQ(dev->verifier()[Status::usage_in_handler], 4u);
  EXPECT_EQ(dev->verifier().total(), 4u);
  EXPECT_EQ(q->get_state().flags & (kAcc | kDsp), kAcc | kDsp) << "a rejected call stopped the queue";

  complete(ev, take(d, 1));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
}

// ===========================================================================
// Drain / Purge / StopAndPurge (C37-C45)

// C37: Drain(cb) with 2 queued → new I/O completed invalid_device_state; the
// 2 are still delivered; cb fires after they complete.
TEST(Conformance, C37_DrainRejectsNewDeliversQueued) {
  Events ev;
  Drv d(ev, "q");
  CbRec cb(ev, "drain");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::sequential, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 3);  // 1 owned; 2 and 3 queued
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 2, 1));

  ASSERT_EQ(q->drain(rec_cb, &cb), Status::success);
  EXPECT_TRUE(StateIs(*q, kDsp, 2, 1));
  submit_range(*dev, pk, 4, 4);
  EXPECT_EQ(pk[3].completions.load(), 1);
  EXPECT_EQ(pk[3].status.load(), Status::invalid_device_state);
  EXPECT_TRUE(StateIs(*q, kDsp, 2, 1)) << "the rejected arrival was counted";

  complete(ev, take(d, 1));
  EXPECT_EQ(cb.fired.load(), 0);
  complete(ev, take(d, 2));
  EXPECT_EQ(cb.fired.load(), 0);
  complete(ev, take(d, 3));
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_TRUE(StateEq(cb.at_fire, kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_EQ(ev.snapshot(),
            (Seq{"io:q:1", "done:1", "io:q:2", "done:2", "io:q:3", "done:3", "cb:drain"}));
  pk.expect_all_completed_once();
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(pk[i].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C38: Purge with queued requests that were never presented → each is
// completed cancelled (information 0), no callback of any kind runs for them.
TEST(Conformance, C38_PurgeCancelsNeverPresented) {
  Events ev;
  Drv d(ev, "q");
  CbRec cb(ev, "purge");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig qc = io_queue(DispatchType::sequential, d);
  qc.on_canceled_on_queue = coq_handler;
  Queue* q = make_queue(*dev, qc);
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 4);  // 1 owned; 2, 3, 4 queued
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 3, 1));

  ASSERT_EQ(q->purge(rec_cb, &cb), Status::success);
  for (std::size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(pk[i].completions.load(), 1) << "request " << i + 1;
    EXPECT_EQ(pk[i].status.load(), Status::cancelled) << "request " << i + 1;
    EXPECT_EQ(pk[i].information.load(), 0u) << "request " << i + 1;
  }
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1"})) << "a callback ran for a never-presented request";
  EXPECT_TRUE(StateIs(*q, kDsp | kNoReq, 0, 1));
  EXPECT_EQ(cb.fired.load(), 0) << "fired with 1 owned";
  EXPECT_FALSE(pk[0].done());

  complete(ev, take(d, 1));
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "done:1", "cb:purge"}));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C39: Purge with a forwarded-in (presented) request queued and
// EvtIoCanceledOnQueue registered → the callback runs (the driver owns the
// request); the purge callback waits until the driver completes it.
TEST(Conformance, C39_PurgeHandsPresentedToCanceledOnQueue) {
  Events ev;
  Drv src(ev, "s"), dst(ev, "d");
  CbRec cb(ev, "purge");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig dc = manual_queue(dst);
  dc.on_canceled_on_queue = coq_handler;
  Queue* d = make_queue(*dev, dc);
  Queue* s = make_queue(*dev, io_queue(DispatchType::parallel, src, forward_handler));
  ASSERT_TRUE(d && s);
  src.forward_to = d;
  ASSERT_EQ(dev->start(), Status::success);

  submit_range(*dev, pk, 1, 1);
  ASSERT_EQ(src.results, (std::vector<Status>{Status::success}));
  ASSERT_TRUE(StateIs(*d, kAcc | kDsp | kDrvNoReq, 1, 0));
  ASSERT_TRUE(StateIs(*s, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));

  ASSERT_EQ(d->purge(rec_cb, &cb), Status::success);
  EXPECT_EQ(ev.snapshot(), (Seq{"coq:d:1"}));
  EXPECT_FALSE(pk[0].done()) << "the framework completed a request it handed to the driver";
  EXPECT_TRUE(StateIs(*d, kDsp | kNoReq, 0, 1));
  EXPECT_EQ(cb.fired.load(), 0) << "the purge did not wait for the handed-over request";

  complete(ev, take(dst, 1), Status::cancelled);
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_TRUE(StateEq(cb.at_fire, kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_EQ(ev.snapshot(), (Seq{"coq:d:1", "done:1", "cb:purge"}));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C40: Purge with owned R1 cancelable and R2 not → R1's cancel callback runs
// once, R2 is untouched; the purge callback fires after both complete.
TEST(Conformance, C40_PurgeCancelsOnlyCancelableOwned) {
  Events ev;
  Drv d(ev, "q");
  CbRec cb(ev, "purge");
  CancelRec cr(ev);
  cr.complete_inline = true;
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::parallel, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 2);
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 2));
  const Request r1 = take(d, 1);
  const Request r2 = take(d, 2);
  ASSERT_EQ(r1.mark_cancelable(cancel_cb, &cr), Status::success);

  ASSERT_EQ(q->purge(rec_cb, &cb), Status::success);
  EXPECT_EQ(cr.runs.load(), 1);
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_FALSE(pk[1].done()) << "R2 was completed by the framework";
  EXPECT_FALSE(r2.is_canceled()) << "R2 (not cancelable) was touched";
  EXPECT_TRUE(StateIs(*q, kDsp | kNoReq, 0, 1));
  EXPECT_EQ(cb.fired.load(), 0) << "fired with R2 owned";

  complete(ev, r2);
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_EQ(cr.runs.load(), 1);
  EXPECT_EQ(ev.snapshot(),
            (Seq{"io:q:1", "io:q:2", "cancel:1", "done:1", "done:2", "cb:purge"}));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[1].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C41: when PurgeSynchronously returns, queued == driver == 0 and Accept == 0.
TEST(Conformance, C41_PurgeSynchronouslyLeavesQueueEmpty) {
  Events ev;
  Drv d(ev, "q");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig qc = io_queue(DispatchType::parallel, d);
  qc.max_presented = 1;
  Queue* q = make_queue(*dev, qc);
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 3);  // 1 owned; 2 and 3 queued
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 2, 1));

  BlockingCall call([q] { return q->purge_synchronously(); }, q);
  ASSERT_TRUE(wait_until([&] { return pk[1].done() && pk[2].done(); }))
      << "the purge did not cancel the queued requests";
  EXPECT_FALSE(call.returned_within(kStillBlocked)) << "returned with a request owned";
  complete(ev, take(d, 1));
  if (!call.returned_within(kHang)) {
    ADD_FAILURE() << "purge_synchronously did not return after the owned request completed";
    (void)dev.release();
    return;
  }
  EXPECT_EQ(call.result(), Status::success);
  EXPECT_TRUE(StateEq(call.state_after(), kDsp | kNoReq | kDrvNoReq, 0, 0)) << "when it returned";
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
  EXPECT_EQ(pk[1].status.load(), Status::cancelled);
  EXPECT_EQ(pk[2].status.load(), Status::cancelled);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "done:1"}));
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C42: Forward into a purged or a drained queue → wdf_busy; the caller still
// owns the request and no count changes.
TEST(Conformance, C42_ForwardIntoPurgedOrDrainedIsBusy) {
  Events ev;
  Drv src(ev, "s"), purged(ev, "p"), drained(ev, "r");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* s = make_queue(*dev, io_queue(DispatchType::parallel, src));
  Queue* p = make_queue(*dev, manual_queue(purged));
  Queue* r = make_queue(*dev, manual_queue(drained));
  ASSERT_TRUE(s && p && r);
  ASSERT_EQ(dev->start(), Status::success);
  ASSERT_EQ(p->purge(), Status::success);
  ASSERT_EQ(r->drain(), Status::success);
  submit_range(*dev, pk, 1, 1);
  const Request req = take(src, 1);
  ASSERT_TRUE(StateIs(*s, kAcc | kDsp | kNoReq, 0, 1));

  EXPECT_EQ(req.forward_to_queue(*p), Status::wdf_busy);
  EXPECT_TRUE(StateIs(*s, kAcc | kDsp | kNoReq, 0, 1));
  EXPECT_TRUE(StateIs(*p, kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_EQ(req.queue(), s);

  EXPECT_EQ(req.forward_to_queue(*r), Status::wdf_busy);
  EXPECT_TRUE(StateIs(*s, kAcc | kDsp | kNoReq, 0, 1));
  EXPECT_TRUE(StateIs(*r, kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_EQ(req.queue(), s);
  EXPECT_FALSE(pk[0].done());
  EXPECT_EQ(dev->verifier().total(), 0u) << "wdf_busy is not a usage error";

  // Still the caller's: once the target accepts again, the forward works.
  ASSERT_EQ(p->start(), Status::success);
  EXPECT_EQ(req.forward_to_queue(*p), Status::success);
  EXPECT_TRUE(StateIs(*s, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  Request again;
  ASSERT_EQ(p->retrieve_next_request(again), Status::success);
  EXPECT_EQ(again, req);
  complete(ev, again);
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
}

// C43: StopAndPurge with 2 queued, then a 3rd arrives → the 2 are canceled,
// the 3rd stays queued; Accept=1, Dispatch=0. (The owned request is not
// cancelable and is untouched; the callback behaves as Stop's.)
TEST(Conformance, C43_StopAndPurgeCancelsOnlyThoseQueuedAtCall) {
  Events ev;
  Drv d(ev, "q");
  CbRec cb(ev, "stop");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::sequential, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 3);  // 1 owned; 2 and 3 queued
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 2, 1));

  ASSERT_EQ(q->stop_and_purge(rec_cb, &cb), Status::success);
  EXPECT_EQ(pk[1].status.load(), Status::cancelled);
  EXPECT_EQ(pk[2].status.load(), Status::cancelled);
  EXPECT_EQ(pk[1].completions.load(), 1);
  EXPECT_EQ(pk[2].completions.load(), 1);
  EXPECT_TRUE(StateIs(*q, kAcc | kNoReq, 0, 1));

  submit_range(*dev, pk, 4, 4);
  EXPECT_FALSE(pk[3].done()) << "the later arrival was canceled or rejected";
  EXPECT_TRUE(StateIs(*q, kAcc, 1, 1));
  EXPECT_FALSE(pk[0].done());
  EXPECT_EQ(cb.fired.load(), 0);

  complete(ev, take(d, 1));
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_TRUE(StateEq(cb.at_fire, kAcc | kDrvNoReq, 1, 0));
  EXPECT_FALSE(pk[3].done());

  ASSERT_EQ(q->start(), Status::success);
  complete_all(d);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "done:1", "cb:stop", "io:q:4", "done:4"}));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
  EXPECT_EQ(pk[3].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C44: with StopAndPurge in effect (no Start since), Requeue returns success
// but the request is canceled: completed cancelled when the queue has no
// EvtIoCanceledOnQueue.
TEST(Conformance, C44_RequeueAfterStopAndPurgeCancels) {
  Events ev;
  Drv d(ev, "m");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* m = make_queue(*dev, manual_queue(d, true));
  ASSERT_TRUE(m);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 1);
  Request r;
  ASSERT_EQ(m->retrieve_next_request(r), Status::success);

  ASSERT_EQ(m->stop_and_purge(), Status::success);
  EXPECT_EQ(r.requeue(), Status::success);
  EXPECT_EQ(pk[0].completions.load(), 1);
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_TRUE(StateIs(*m, kAcc | kNoReq | kDrvNoReq, 0, 0)) << "the request went back to the queue";
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C44 with EvtIoCanceledOnQueue registered: the requeued request was presented,
// so the cancellation hands it to that callback (spec 5.1) and the driver
// keeps owning it until it completes it.
TEST(Conformance, C44_RequeueAfterStopAndPurgeGoesToCanceledOnQueue) {
  Events ev;
  Drv d(ev, "m");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig mc = manual_queue(d, true);
  mc.on_canceled_on_queue = coq_handler;
  Queue* m = make_queue(*dev, mc);
  ASSERT_TRUE(m);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 2);
  Request r;
  ASSERT_EQ(m->retrieve_next_request(r), Status::success);
  ASSERT_EQ(r.length(), 1u);

  ASSERT_EQ(m->stop_and_purge(), Status::success);
  EXPECT_EQ(pk[1].status.load(), Status::cancelled) << "never presented: completed";
  EXPECT_EQ(r.requeue(), Status::success);
  EXPECT_EQ(ev.snapshot(), (Seq{"coq:m:1"}));
  EXPECT_FALSE(pk[0].done());
  EXPECT_TRUE(StateIs(*m, kAcc | kNoReq, 0, 1));
  complete(ev, take(d, 1), Status::cancelled);
  EXPECT_TRUE(StateIs(*m, kAcc | kNoReq | kDrvNoReq, 0, 0));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C45: in the same window (StopAndPurge, no Start): MarkCancelableEx returns
// cancelled without calling the callback (the caller completes the request);
// MarkCancelable makes the cancel callback run.
TEST(Conformance, C45_MarkCancelableAfterStopAndPurge) {
  Events ev;
  Drv d(ev, "m");
  CancelRec ex_cr(ev), cr(ev);
  cr.complete_inline = true;
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* m = make_queue(*dev, manual_queue(d, true));
  ASSERT_TRUE(m);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 2);
  Request r1, r2;
  ASSERT_EQ(m->retrieve_next_request(r1), Status::success);
  ASSERT_EQ(m->retrieve_next_request(r2), Status::success);
  ASSERT_EQ(m->stop_and_purge(), Status::success);
  ASSERT_TRUE(StateIs(*m, kAcc | kNoReq, 0, 2));

  EXPECT_EQ(r1.mark_cancelable_ex(cancel_cb, &ex_cr), Status::cancelled);
  EXPECT_EQ(ex_cr.runs.load(), 0);
  EXPECT_FALSE(pk[0].done());
  complete(ev, r1, Status::cancelled);  // the caller completes it: it is not marked cancelable

  EXPECT_EQ(r2.mark_cancelable(cancel_cb, &cr), Status::success);
  EXPECT_EQ(cr.runs.load(), 1);
  EXPECT_EQ(ex_cr.runs.load(), 0);
  EXPECT_EQ(ev.snapshot(), (Seq{"done:1", "cancel:2", "done:2"}));
  EXPECT_TRUE(StateIs(*m, kAcc | kNoReq | kDrvNoReq, 0, 0));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_EQ(pk[1].status.load(), Status::cancelled);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// Forward / Requeue (C46-C49)

// C46: Forward to the request's own queue or to another device's queue →
// invalid_device_request. Forwarding a request marked cancelable: the spec
// says invalid_device_request, but the project's issue makes it a usage error
// in ioq (usage_cancelable, counted in the verifier), which overrides the spec.
// Nothing changes on any failure.
TEST(Conformance, C46_ForwardRejections) {
  Events ev;
  Drv src(ev, "m"), dst(ev, "n"), other(ev, "o");
  CancelRec cr(ev);
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  auto dev2 = make_device({.max_requests = 16, .name = "other"});
  ASSERT_TRUE(dev && dev2);
  Queue* m = make_queue(*dev, manual_queue(src, true));
  Queue* n = make_queue(*dev, manual_queue(dst));
  Queue* o = make_queue(*dev2, manual_queue(other));
  ASSERT_TRUE(m && n && o);
  ASSERT_EQ(dev->start(), Status::success);
  ASSERT_EQ(dev2->start(), Status::success);
  submit_range(*dev, pk, 1, 1);
  Request r;
  ASSERT_EQ(m->retrieve_next_request(r), Status::success);
  const auto unchanged = [&] {
    EXPECT_TRUE(StateIs(*m, kAcc | kDsp | kNoReq, 0, 1));
    EXPECT_TRUE(StateIs(*n, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
    EXPECT_TRUE(StateIs(*o, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
    EXPECT_EQ(r.queue(), m);
    EXPECT_FALSE(pk[0].done());
  };

  EXPECT_EQ(r.forward_to_queue(*m), Status::invalid_device_request) << "own queue";
  unchanged();
  EXPECT_EQ(r.forward_to_queue(*o), Status::invalid_device_request) << "another device's queue";
  unchanged();

  ASSERT_EQ(r.mark_cancelable(cancel_cb, &cr), Status::success);
  const std::uint64_t before = dev->verifier()[Status::usage_cancelable];
  EXPECT_EQ(r.forward_to_queue(*n), Status::usage_cancelable) << "cancelable (issue overrides the spec)";
  EXPECT_EQ(dev->verifier()[Status::usage_cancelable], before + 1);
  EXPECT_EQ(dev->verifier().total(), 1u);
  unchanged();
  EXPECT_EQ(cr.runs.load(), 0);

  // Once unmarked, the same forward to the same target succeeds.
  ASSERT_EQ(r.unmark_cancelable(), Status::success);
  EXPECT_EQ(r.forward_to_queue(*n), Status::success);
  EXPECT_TRUE(StateIs(*m, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  Request again;
  ASSERT_EQ(n->retrieve_next_request(again), Status::success);
  complete(ev, again);
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 1u);
  EXPECT_EQ(dev2->verifier().total(), 0u);
}

// C47: a successful forward to an empty started parallel queue D → D's handler
// gets R; the source's driver count drops by 1; R's queue is D.
TEST(Conformance, C47_ForwardToParallelDelivers) {
  Events ev;
  Drv src(ev, "m"), dst(ev, "d");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* m = make_queue(*dev, manual_queue(src, true));
  Queue* d = make_queue(*dev, io_queue(DispatchType::parallel, dst, hold_handler, false));
  ASSERT_TRUE(m && d);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 1);
  Request r;
  ASSERT_EQ(m->retrieve_next_request(r), Status::success);
  ASSERT_TRUE(StateIs(*m, kAcc | kDsp | kNoReq, 0, 1));

  EXPECT_EQ(r.forward_to_queue(*d), Status::success);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:d:1"}));
  EXPECT_TRUE(StateIs(*m, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_TRUE(StateIs(*d, kAcc | kDsp | kNoReq, 0, 1));
  EXPECT_EQ(r.queue(), d);
  {
    std::lock_guard lock(dst.mu);
    EXPECT_EQ(dst.seen_queue, (std::vector<Queue*>{d})) << "queue() in D's handler";
  }
  const Request delivered = take(dst, 1);
  EXPECT_EQ(delivered, r);
  complete(ev, delivered);
  EXPECT_TRUE(StateIs(*d, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C48: forwarding R into a manual queue D that holds [X] → D holds [X, R]
// (the tail).
TEST(Conformance, C48_ForwardAppendsAtTail) {
  Events ev;
  Drv src(ev, "m"), dst(ev, "d");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* m = make_queue(*dev, manual_queue(src, true));
  Queue* d = make_queue(*dev, manual_queue(dst));
  ASSERT_TRUE(m && d);
  ASSERT_EQ(dev->configure_request_dispatching(*d, RequestType::write), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 1, RequestType::write);  // X, routed to D
  submit_range(*dev, pk, 2, 2, RequestType::read);   // R, to the default queue
  ASSERT_TRUE(StateIs(*d, kAcc | kDsp | kDrvNoReq, 1, 0));
  Request r;
  ASSERT_EQ(m->retrieve_next_request(r), Status::success);
  ASSERT_EQ(r.length(), 2u);

  EXPECT_EQ(r.forward_to_queue(*d), Status::success);
  EXPECT_TRUE(StateIs(*d, kAcc | kDsp | kDrvNoReq, 2, 0));
  EXPECT_TRUE(StateIs(*m, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  Request first, second, none;
  ASSERT_EQ(d->retrieve_next_request(first), Status::success);
  ASSERT_EQ(d->retrieve_next_request(second), Status::success);
  EXPECT_EQ(d->retrieve_next_request(none), Status::no_more_entries);
  EXPECT_EQ(first.length(), 1u) << "X first";
  EXPECT_EQ(second.length(), 2u) << "R after X";
  EXPECT_EQ(second, r);
  complete(ev, first);
  complete(ev, second);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C49: Requeue from a sequential or parallel queue → invalid_device_request
// (nothing changes); on a manual queue R goes to the head and the next
// Retrieve returns R.
TEST(Conformance, C49_RequeueOnlyOnManualToHead) {
  Events ev;
  Drv seq(ev, "s"), par(ev, "p"), man(ev, "m");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* s = make_queue(*dev, io_queue(DispatchType::sequential, seq, hold_handler, false));
  Queue* p = make_queue(*dev, io_queue(DispatchType::parallel, par, hold_handler, false));
  Queue* m = make_queue(*dev, manual_queue(man, true));
  ASSERT_TRUE(s && p && m);
  ASSERT_EQ(dev->configure_request_dispatching(*s, RequestType::write), Status::success);
  ASSERT_EQ(dev->configure_request_dispatching(*p, RequestType::device_control), Status::success);
  ASSERT_EQ(dev->start(), Status::success);

  submit_range(*dev, pk, 1, 1, RequestType::write);
  submit_range(*dev, pk, 2, 2, RequestType::device_control);
  const Request rs = take(seq, 1);
  const Request rp = take(par, 2);
  EXPECT_EQ(rs.requeue(), Status::invalid_device_request) << "sequential";
  EXPECT_TRUE(StateIs(*s, kAcc | kDsp | kNoReq, 0, 1));
  EXPECT_EQ(rp.requeue(), Status::invalid_device_request) << "parallel";
  EXPECT_TRUE(StateIs(*p, kAcc | kDsp | kNoReq, 0, 1));
  EXPECT_EQ(ev.snapshot(), (Seq{"io:s:1", "io:p:2"})) << "a refused requeue redelivered";
  complete(ev, rs);
  complete(ev, rp);

  submit_range(*dev, pk, 3, 5, RequestType::read);
  Request a;
  ASSERT_EQ(m->retrieve_next_request(a), Status::success);
  ASSERT_EQ(a.length(), 3u);
  ASSERT_TRUE(StateIs(*m, kAcc | kDsp, 2, 1));
  EXPECT_EQ(a.requeue(), Status::success);
  EXPECT_TRUE(StateIs(*m, kAcc | kDsp | kDrvNoReq, 3, 0));
  EXPECT_FALSE(pk[2].done());
  for (std::uint32_t want : {3u, 4u, 5u}) {
    Request r;
    ASSERT_EQ(m->retrieve_next_request(r), Status::success);
    EXPECT_EQ(r.length(), want);
    if (want == 3) {
      EXPECT_EQ(r, a) << "the requeued request is the head";
    }
    complete(ev, r);
  }
  pk.expect_all_completed_once();
  for (std::size_t i = 0; i < pk.size(); ++i) EXPECT_EQ(pk[i].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// Cancellation (C50-C55)

// C50: the OS cancels a queued, never-presented request → completed cancelled
// (information 0), queued - 1, no callback; the queue moves on without it.
TEST(Conformance, C50_CancelQueuedNeverPresented) {
  Events ev;
  Drv d(ev, "q");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig qc = io_queue(DispatchType::sequential, d);
  qc.on_canceled_on_queue = coq_handler;
  Queue* q = make_queue(*dev, qc);
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 3);  // 1 owned; 2 and 3 queued
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 2, 1));

  EXPECT_EQ(dev->cancel(pk[1].packet), Status::success);
  EXPECT_EQ(pk[1].completions.load(), 1);
  EXPECT_EQ(pk[1].status.load(), Status::cancelled);
  EXPECT_EQ(pk[1].information.load(), 0u);
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp, 1, 1));
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1"})) << "a callback ran for a never-presented request";

  complete(ev, take(d, 1));
  complete_all(d);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "done:1", "io:q:3", "done:3"}));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
  EXPECT_EQ(pk[2].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C51: a forwarded-in request is canceled while queued, EvtIoCanceledOnQueue
// registered → the callback runs; driver + 1 until the driver completes it.
TEST(Conformance, C51_CancelForwardedInGoesToCanceledOnQueue) {
  Events ev;
  Drv src(ev, "s"), dst(ev, "d");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig dc = manual_queue(dst);
  dc.on_canceled_on_queue = coq_handler;
  Queue* d = make_queue(*dev, dc);
  Queue* s = make_queue(*dev, io_queue(DispatchType::parallel, src, forward_handler));
  ASSERT_TRUE(d && s);
  src.forward_to = d;
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 1);
  ASSERT_EQ(src.results, (std::vector<Status>{Status::success}));
  ASSERT_TRUE(StateIs(*d, kAcc | kDsp | kDrvNoReq, 1, 0));

  EXPECT_EQ(dev->cancel(pk[0].packet), Status::success);
  EXPECT_EQ(ev.snapshot(), (Seq{"coq:d:1"}));
  EXPECT_FALSE(pk[0].done()) << "completed by the framework instead of handed over";
  EXPECT_TRUE(StateIs(*d, kAcc | kDsp | kNoReq, 0, 1));
  const Request r = take(dst, 1);
  EXPECT_TRUE(r.is_canceled());
  complete(ev, r, Status::cancelled);
  EXPECT_TRUE(StateIs(*d, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C52: a sequential queue owns R1 and holds a presented R2 (forwarded in);
// R2 is canceled → EvtIoCanceledOnQueue(R2) runs at once (not after R1); R3
// is delivered only after both R1 and R2 have completed.
TEST(Conformance, C52_CanceledOnQueueOccupiesSequentialSlot) {
  Events ev;
  Drv src(ev, "s"), seq(ev, "q");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  QueueConfig qc = io_queue(DispatchType::sequential, seq, hold_handler, false);
  qc.on_canceled_on_queue = coq_handler;
  Queue* q = make_queue(*dev, qc);
  Queue* s = make_queue(*dev, io_queue(DispatchType::parallel, src, forward_handler));
  ASSERT_TRUE(q && s);
  src.forward_to = q;
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 3);  // all forwarded into q: 1 owned, 2 and 3 queued
  ASSERT_EQ(src.results, (std::vector<Status>(3, Status::success)));
  ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 2, 1));
  ASSERT_EQ(ev.snapshot(), (Seq{"io:q:1"}));

  EXPECT_EQ(dev->cancel(pk[1].packet), Status::success);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "coq:q:2"}));
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp, 1, 2));
  EXPECT_FALSE(pk[1].done());

  complete(ev, take(seq, 1));
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "coq:q:2", "done:1"})) << "R3 delivered while R2 owned";
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp, 1, 1));
  complete(ev, take(seq, 2), Status::cancelled);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "coq:q:2", "done:1", "done:2", "io:q:3"}));
  complete_all(seq);
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::success);
  EXPECT_EQ(pk[1].status.load(), Status::cancelled);
  EXPECT_EQ(pk[2].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C53: a cancelable owned request is canceled → EvtRequestCancel runs once
// (a second cancel does not run it again); a later Unmark returns cancelled.
TEST(Conformance, C53_CancelCancelableRunsCallbackOnce) {
  Events ev;
  Drv d(ev, "q");
  CancelRec cr(ev);
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::parallel, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 1);
  const Request r = take(d, 1);
  ASSERT_EQ(r.mark_cancelable(cancel_cb, &cr), Status::success);

  EXPECT_EQ(dev->cancel(pk[0].packet), Status::success);
  EXPECT_EQ(cr.runs.load(), 1);
  EXPECT_EQ(dev->cancel(pk[0].packet), Status::success);
  EXPECT_EQ(cr.runs.load(), 1) << "the cancel callback ran twice";
  EXPECT_EQ(r.unmark_cancelable(), Status::cancelled);
  EXPECT_TRUE(r.is_canceled());
  EXPECT_FALSE(pk[0].done());
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 1));
  // The callback kept the request; the driver completes it now (it is no
  // longer marked cancelable).
  complete(ev, r, Status::cancelled);
  EXPECT_EQ(cr.runs.load(), 1);
  EXPECT_EQ(ev.snapshot(), (Seq{"io:q:1", "cancel:1", "done:1"}));
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C54: Unmark succeeded, then the OS cancels → no callback; IsCanceled is true.
TEST(Conformance, C54_CancelAfterUnmarkOnlyFlags) {
  Events ev;
  Drv d(ev, "q");
  CancelRec cr(ev);
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, io_queue(DispatchType::parallel, d));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  submit_range(*dev, pk, 1, 1);
  const Request r = take(d, 1);
  ASSERT_EQ(r.mark_cancelable(cancel_cb, &cr), Status::success);
  ASSERT_EQ(r.unmark_cancelable(), Status::success);
  EXPECT_FALSE(r.is_canceled());

  EXPECT_EQ(dev->cancel(pk[0].packet), Status::success);
  EXPECT_EQ(cr.runs.load(), 0) << "the callback ran after a successful unmark";
  EXPECT_TRUE(r.is_canceled());
  EXPECT_FALSE(pk[0].done()) << "the framework completed a driver-owned request";
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 1));
  complete(ev, r, Status::cancelled);
  EXPECT_EQ(cr.runs.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(pk[0].status.load(), Status::cancelled);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C55: cleanup (close) of F1 → F1's queued requests are canceled in every
// queue of the device; F1 requests the driver owns are untouched; other
// files' requests stay queued in order.
TEST(Conformance, C55_CloseFileCancelsQueuedInEveryQueue) {
  Events ev;
  Drv d1(ev, "a"), d2(ev, "b");
  Packets pk;
  auto dev = make_device({.max_requests = 64});
  ASSERT_TRUE(dev);
  Queue* qa = make_queue(*dev, manual_queue(d1, true));
  Queue* qb = make_queue(*dev, manual_queue(d2));
  ASSERT_TRUE(qa && qb);
  ASSERT_EQ(dev->configure_request_dispatching(*qb, RequestType::write), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  const FileHandle f1 = dev->open_file(), f2 = dev->open_file();
  ASSERT_TRUE(f1 && f2);
  ASSERT_NE(f1, f2);

  auto submit = [&](RequestType t, std::uint32_t id, FileHandle f) {
    auto& p = pk.make(t, id, f);
    EXPECT_EQ(dev->submit(p.packet), Status::pending);
  };
  submit(RequestType::read, 1, f1);  // retrieved: owned by the driver
  Request owned;
  ASSERT_EQ(qa->retrieve_next_request(owned), Status::success);
  submit(RequestType::read, 2, f1);
  submit(RequestType::read, 3, f2);
  submit(RequestType::read, 4, f1);
  submit(RequestType::write, 5, f1);
  submit(RequestType::write, 6, f2);
  ASSERT_TRUE(StateIs(*qa, kAcc | kDsp, 3, 1));
  ASSERT_TRUE(StateIs(*qb, kAcc | kDsp | kDrvNoReq, 2, 0));

  EXPECT_EQ(dev->close_file(f1), Status::success);
  for (std::size_t i : {1u, 3u, 4u}) {  // ids 2, 4, 5
    EXPECT_EQ(pk[i].completions.load(), 1) << "request " << i + 1;
    EXPECT_EQ(pk[i].status.load(), Status::cancelled) << "request " << i + 1;
  }
  for (std::size_t i : {0u, 2u, 5u}) EXPECT_FALSE(pk[i].done()) << "request " << i + 1;
  EXPECT_TRUE(StateIs(*qa, kAcc | kDsp, 1, 1));
  EXPECT_TRUE(StateIs(*qb, kAcc | kDsp | kDrvNoReq, 1, 0));
  EXPECT_FALSE(owned.is_canceled()) << "cleanup touched a driver-owned request";
  EXPECT_EQ(owned.queue(), qa);

  Request ra, rb, none;
  ASSERT_EQ(qa->retrieve_next_request(ra), Status::success);
  EXPECT_EQ(ra.length(), 3u);
  EXPECT_EQ(qa->retrieve_next_request(none), Status::no_more_entries);
  ASSERT_EQ(qb->retrieve_next_request(rb), Status::success);
  EXPECT_EQ(rb.length(), 6u);
  complete(ev, owned);
  complete(ev, ra);
  complete(ev, rb);
  pk.expect_all_completed_once();
  for (std::size_t i : {0u, 2u, 5u}) EXPECT_EQ(pk[i].status.load(), Status::success);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

}  // namespace
}  // namespace ioq::test
