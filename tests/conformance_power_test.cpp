// Conformance checklist, power items C56..C62 (spec section 8, with the power
// part of section 3): Device::suspend (D0 -> Dx), Device::resume (Dx -> D0) and
// Device::remove drive every power-managed queue through EvtIoStop-style stop
// callbacks, StopAcknowledge and EvtIoResume-style resume callbacks.
//
// How the tests observe the runtime
//   * Every request carries its test id in Packet::offset, so handlers and
//     callbacks name it with Request::offset().
//   * Handlers and callbacks are captureless functions that record events
//     ("io:1", "stop:1:0x1", "resume:1", "cancel:1", ...) in the shared `g`
//     log, which every test resets first. What a stop callback does with each
//     request (acknowledge, requeue, complete, nothing) is set per id.
//   * suspend/resume/remove run on a helper thread with a bounded wait, so a
//     runtime that hangs fails the test instead of freezing the suite (the
//     device is then leaked: its stuck thread is still inside it).
#include "queue_harness.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

namespace ioq {
// Readable statuses in assertion messages.
inline void PrintTo(Status s, std::ostream* os) { *os << to_string(s); }
}  // namespace ioq

namespace ioq::test {
namespace {

using namespace std::chrono_literals;

constexpr auto kHang = 10s;       // longer than any correct control call takes
constexpr auto kBlocked = 200ms;  // how long a call that must block is watched

// ---------------------------------------------------------------------------
// A blocking control call on its own thread.

class Background {
 public:
  explicit Background(std::function<Status()> fn) {
    auto task = std::make_shared<std::packaged_task<Status()>>(std::move(fn));
    fut_ = task->get_future();
    th_ = std::thread([task] { (*task)(); });
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background() {
    if (th_.joinable()) th_.detach();  // only after a reported hang
  }
  [[nodiscard]] bool finished_within(std::chrono::milliseconds ms) {
    return fut_.wait_for(ms) == std::future_status::ready;
  }
  // The call's status once it returns within `limit`; nullopt on a hang.
  [[nodiscard]] std::optional<Status> join(std::chrono::milliseconds limit = kHang) {
    if (!finished_within(limit)) return std::nullopt;
    th_.join();
    return fut_.get();
  }

 private:
  std::future<Status> fut_;
  std::thread th_;
};

// Waits for a background call; on a hang fails the test and leaks the device.
Status finish(Background& bg, std::unique_ptr<Device>& dev, const char* what) {
  const std::optional<Status> s = bg.join();
  if (!s) {
    ADD_FAILURE() << what << " did not return within " << kHang.count() << " s";
    (void)dev.release();
    return Status::unsuccessful;
  }
  return *s;
}

// A device-level control call that must return (bounded).
Status control(std::unique_ptr<Device>& dev, Status (*op)(Device&), const char* what) {
  Device* d = dev.get();
  Background bg([d, op] { return op(*d); });
  return finish(bg, dev, what);
}
Status suspend(std::unique_ptr<Device>& dev) {
  return control(dev, [](Device& d) { return d.suspend(); }, "suspend()");
}
Status resume(std::unique_ptr<Device>& dev) {
  return control(dev, [](Device& d) { return d.resume(); }, "resume()");
}
Status remove(std::unique_ptr<Device>& dev) {
  return control(dev, [](Device& d) { return d.remove(); }, "remove()");
}

// Spins (yielding) until `pred` holds or `limit` passes.
using test::wait_until;

// ---------------------------------------------------------------------------
// The shared log and the driver's callbacks.

enum class Act : int {
  none,              // the stop callback does nothing (neither ack nor complete)
  ack_keep,          // stop_acknowledge(false)
  ack_requeue,       // unmark if cancelable, then stop_acknowledge(true)
  complete_success,  // unmark if cancelable, then complete(success)
  complete_cancelled // unmark if cancelable, then complete(cancelled)
};

constexpr std::size_t kIds = 16;

struct Log {
  Events ev;
  std::array<std::atomic<std::uint64_t>, kIds> req{};       // last handle delivered per id
  std::array<std::atomic<bool>, kIds> mark{};               // handler marks it cancelable
  std::array<std::atomic<bool>, kIds> cancel_completes{};   // cancel callback completes it
  std::array<std::atomic<Act>, kIds> on_suspend{};          // stop(kStopSuspend) action
  std::array<std::atomic<Act>, kIds> on_purge{};            // stop(kStopPurge) action
  std::array<std::atomic<Status>, kIds> act_status{};       // what the last action returned
  std::atomic<int> ready{0};                                // ReadyNotify callbacks

  void reset() {
    (void)ev.take();
    for (std::size_t i = 0; i < kIds; ++i) {
      req[i] = 0;
      mark[i] = false;
      cancel_completes[i] = true;
      on_suspend[i] = Act::ack_keep;
      on_purge[i] = Act::complete_cancelled;
      act_status[i].store(Status::pending);
    }
    ready = 0;
  }
};
Log g;

std::size_t id_of(Request r) { return static_cast<std::size_t>(r.offset()) % kIds; }
Request req(std::size_t id) { return Request(g.req[id].load()); }

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", v);
  return buf;
}
std::string io_ev(std::size_t id) { return "io:" + std::to_string(id); }
std::string stop_ev(std::size_t id, std::uint32_t flags) { return "stop:" + std::to_string(id) + ":" + hex(flags); }
std::string resume_ev(std::size_t id) { return "resume:" + std::to_string(id); }
std::string cancel_ev(std::size_t id) { return "cancel:" + std::to_string(id); }

void cancel_cb(Request r, void*) noexcept {
  const std::size_t id = id_of(r);
  g.ev.add(cancel_ev(id));
  if (g.cancel_completes[id]) {
    EXPECT_EQ(r.complete(Status::cancelled), Status::success);
  }
}

void io_handler(Queue&, Request r) {
  const std::size_t id = id_of(r);
  g.req[id] = r.handle();
  g.ev.add(io_ev(id));
  if (g.mark[id]) {
    EXPECT_EQ(r.mark_cancelable(&cancel_cb), Status::success);
  }
}

void stop_handler(Queue&, Request r, std::uint32_t flags) {
  const std::size_t id = id_of(r);
  g.ev.add(stop_ev(id, flags));
  const Act act = (flags & kStopPurge) ? g.on_purge[id].load() : g.on_suspend[id].load();
  Status s = Status::success;
  const bool cancelable = (flags & kStopRequestCancelable) != 0;
  switch (act) {
    case Act::none: return;
    case Act::ack_keep: s = r.stop_acknowledge(false); break;
    case Act::ack_requeue:
      if (cancelable) {
        EXPECT_EQ(r.unmark_cancelable(), Status::success);
      }
      s = r.stop_acknowledge(true);
      break;
    case Act::complete_success:
    case Act::complete_cancelled:
      if (cancelable) {
        EXPECT_EQ(r.unmark_cancelable(), Status::success);
      }
      s = r.complete(act == Act::complete_success ? Status::success : Status::cancelled);
      break;
  }
  g.act_status[id].store(s);
}

void resume_handler(Queue&, Request r) { g.ev.add(resume_ev(id_of(r))); }

void ready_cb(Queue&, void*) { g.ready++; }

// A queue config with the recording callbacks.
QueueConfig cfg(DispatchType type, bool is_default = true) {
  QueueConfig c{.dispatch = type, .default_queue = is_default};
  if (type != DispatchType::manual) c.on_default = &io_handler;
  c.on_stop = &stop_handler;
  c.on_resume = &resume_handler;
  return c;
}

TrackedPacket& submit(Device& dev, Packets& pk, std::size_t id, RequestType type = RequestType::read) {
  TrackedPacket& t = pk.make(type);
  t.packet.offset = id;
  EXPECT_EQ(dev.submit(t.packet), Status::pending);
  return t;
}

std::size_t count_prefix(const std::vector<std::string>& ev, const std::string& prefix) {
  std::size_t n = 0;
  for (const auto& e : ev) n += e.rfind(prefix, 0) == 0;
  return n;
}
std::size_t count_of(const std::vector<std::string>& ev, const std::string& e) {
  std::size_t n = 0;
  for (const auto& x : ev) n += x == e;
  return n;
}

using V = std::vector<std::string>;

// ---------------------------------------------------------------------------
// C56

// C56: Dx with owned R1 (cancelable) and R2 -> the stop callback runs once for
// each: (Suspend|Cancelable) for R1, (Suspend) for R2; and nothing new is
// delivered while the device leaves and stays out of D0 — not the queued R3
// when R2's completion frees a parallel slot, and not a new arrival R4.
TEST(Conformance, C56_SuspendStopsEachOwnedRequestWithSuspendFlags) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  QueueConfig c = cfg(DispatchType::parallel);
  c.max_presented = 2;
  Queue* q = make_queue(*dev, c);
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.mark[1] = true;
  g.on_suspend[1] = Act::ack_keep;
  g.on_suspend[2] = Act::complete_success;  // completing R2 frees a slot during power-down

  TrackedPacket& r1 = submit(*dev, pk, 1);
  TrackedPacket& r2 = submit(*dev, pk, 2);
  TrackedPacket& r3 = submit(*dev, pk, 3);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1), io_ev(2)}));
  EXPECT_EQ(q->get_state().queued, 1u);
  EXPECT_EQ(q->get_state().driver_owned, 2u);

  ASSERT_EQ(suspend(dev), Status::success);
  EXPECT_EQ(dev->power_state(), PowerState::dx);
  const V ev = g.ev.take();
  EXPECT_EQ(ev.size(), 2u) << testing::PrintToString(ev);
  EXPECT_EQ(count_of(ev, stop_ev(1, kStopSuspend | kStopRequestCancelable)), 1u);
  EXPECT_EQ(count_of(ev, stop_ev(2, kStopSuspend)), 1u);
  EXPECT_EQ(count_prefix(ev, "io:"), 0u) << "R3 delivered during power-down";
  EXPECT_EQ(g.act_status[1].load(), Status::success);
  EXPECT_EQ(g.act_status[2].load(), Status::success);
  EXPECT_EQ(r2.completions.load(), 1);
  EXPECT_EQ(r2.status.load(), Status::success);

  QueueState st = q->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching | kQueuePnpHeld);
  EXPECT_EQ(st.queued, 1u);
  EXPECT_EQ(st.driver_owned, 1u);

  // A new arrival in Dx is queued, not delivered.
  TrackedPacket& r4 = submit(*dev, pk, 4);
  EXPECT_TRUE(g.ev.take().empty());
  st = q->get_state();
  EXPECT_EQ(st.queued, 2u);
  EXPECT_EQ(st.driver_owned, 1u);
  EXPECT_FALSE(r3.done());
  EXPECT_FALSE(r4.done());

  // Back in D0: R1 (acknowledged, kept) is resumed; R3 takes the free slot.
  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{resume_ev(1), io_ev(3)}));
  EXPECT_EQ(q->get_state().driver_owned, 2u);
  EXPECT_EQ(q->get_state().queued, 1u);

  EXPECT_EQ(req(3).complete(Status::success), Status::success);
  EXPECT_EQ(g.ev.take(), (V{io_ev(4)}));
  EXPECT_EQ(req(4).complete(Status::success), Status::success);
  EXPECT_EQ(req(1).unmark_cancelable(), Status::success);
  EXPECT_EQ(req(1).complete(Status::success), Status::success);
  for (TrackedPacket* t : {&r1, &r3, &r4}) EXPECT_EQ(t->status.load(), Status::success);
  pk.expect_all_completed_once();
  EXPECT_EQ(q->get_state().flags, kQueueAccepting | kQueueDispatching | kQueueNoRequests | kQueueDriverNoRequests);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ---------------------------------------------------------------------------
// C57

// C57: StopAcknowledge(FALSE) -> the request stays owned through Dx; on D0 the
// resume callback runs for it (once), and it is still the driver's: on a
// sequential queue the next request waits until it completes.
TEST(Conformance, C57_StopAcknowledgeKeepResumesStillOwnedAfterD0) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::sequential));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.on_suspend[1] = Act::ack_keep;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  TrackedPacket& r2 = submit(*dev, pk, 2);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1)}));
  const Request owned = req(1);

  ASSERT_EQ(suspend(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{stop_ev(1, kStopSuspend)}));
  EXPECT_EQ(g.act_status[1].load(), Status::success);
  QueueState st = q->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching | kQueuePnpHeld);
  EXPECT_EQ(st.driver_owned, 1u);
  EXPECT_EQ(st.queued, 1u);

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{resume_ev(1)})) << "R2 must wait: R1 is still owned";
  st = q->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching);
  EXPECT_EQ(st.driver_owned, 1u);
  EXPECT_EQ(st.queued, 1u);
  EXPECT_FALSE(r1.done());
  EXPECT_EQ(owned.validate(), Status::success);
  EXPECT_EQ(owned.queue(), q);

  EXPECT_EQ(owned.complete(Status::success, 5), Status::success);
  EXPECT_EQ(g.ev.take(), (V{io_ev(2)}));
  EXPECT_EQ(req(2).complete(Status::success), Status::success);
  EXPECT_EQ(r1.status.load(), Status::success);
  EXPECT_EQ(r1.information.load(), 5u);
  EXPECT_EQ(r2.status.load(), Status::success);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// Section 3, removal step 4 (with C57): a request acknowledged with
// requeue=FALSE at suspend gets the stop callback a second time at removal, now
// with Purge; it never gets a resume. Removal also cancels what is queued.
TEST(Conformance, C57_AcknowledgedRequestGetsPurgeStopOnRemoval) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::sequential));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.on_suspend[1] = Act::ack_keep;
  g.on_purge[1] = Act::complete_cancelled;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  TrackedPacket& r2 = submit(*dev, pk, 2);  // queued behind R1, never presented
  ASSERT_EQ(suspend(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1), stop_ev(1, kStopSuspend)}));

  ASSERT_EQ(remove(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{stop_ev(1, kStopPurge)}));
  EXPECT_EQ(g.act_status[1].load(), Status::success);
  EXPECT_EQ(r1.status.load(), Status::cancelled);
  EXPECT_EQ(r2.status.load(), Status::cancelled);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->power_state(), PowerState::removed);
  const QueueState st = q->get_state();
  EXPECT_EQ(st.flags & kQueueAccepting, 0u);
  EXPECT_EQ(st.queued, 0u);
  EXPECT_EQ(st.driver_owned, 0u);

  // Removed for good: new I/O is refused.
  TrackedPacket& late = submit(*dev, pk, 3);
  EXPECT_EQ(late.completions.load(), 1);
  EXPECT_EQ(late.status.load(), Status::invalid_device_state);
  EXPECT_TRUE(g.ev.take().empty());
}

// ---------------------------------------------------------------------------
// C58

// C58: StopAcknowledge(TRUE) -> R goes back to the head of its queue (ahead of
// the queued R2), the driver no longer owns it, and after D0 it is delivered
// again through its handler, first; no resume callback runs for it.
TEST(Conformance, C58_StopAcknowledgeRequeueRedeliversAfterD0) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::sequential));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.on_suspend[1] = Act::ack_requeue;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  TrackedPacket& r2 = submit(*dev, pk, 2);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1)}));

  ASSERT_EQ(suspend(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{stop_ev(1, kStopSuspend)}));
  EXPECT_EQ(g.act_status[1].load(), Status::success);
  QueueState st = q->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching | kQueueDriverNoRequests | kQueuePnpHeld);
  EXPECT_EQ(st.queued, 2u);
  EXPECT_EQ(st.driver_owned, 0u);
  EXPECT_FALSE(r1.done());
  EXPECT_EQ(q->counters().requeued, 1u);

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1)})) << "R1 redelivered from the head, no resume callback";
  st = q->get_state();
  EXPECT_EQ(st.driver_owned, 1u);
  EXPECT_EQ(st.queued, 1u);

  EXPECT_EQ(req(1).complete(Status::success), Status::success);
  EXPECT_EQ(g.ev.take(), (V{io_ev(2)}));
  EXPECT_EQ(req(2).complete(Status::success), Status::success);
  EXPECT_TRUE(g.ev.take().empty());
  EXPECT_EQ(q->counters().presented, 3u);
  EXPECT_EQ(r1.status.load(), Status::success);
  EXPECT_EQ(r2.status.load(), Status::success);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// Section 3, removal step 4 (with C58): at removal the cancel latch is set, so
// an acknowledgement with requeue cancels the request instead (it was
// presented, but the queue has no canceled-on-queue callback: completed
// cancelled); removal then finishes and nothing is redelivered.
TEST(Conformance, C58_RequeueAcknowledgeDuringRemovalCancels) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::sequential));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.on_purge[1] = Act::ack_requeue;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1)}));
  ASSERT_EQ(remove(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{stop_ev(1, kStopPurge)}));
  EXPECT_EQ(g.act_status[1].load(), Status::success);
  EXPECT_EQ(r1.completions.load(), 1);
  EXPECT_EQ(r1.status.load(), Status::cancelled);
  const QueueState st = q->get_state();
  EXPECT_EQ(st.queued, 0u);
  EXPECT_EQ(st.driver_owned, 0u);
  pk.expect_all_completed_once();
}

// ---------------------------------------------------------------------------
// C59

// C59 (stop callback registered): a request that is neither acknowledged nor
// completed keeps Dx from finishing; completing it from another thread lets
// suspend return.
TEST(Conformance, C59_SuspendWaitsUntilUnacknowledgedRequestCompletes) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::sequential));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.on_suspend[1] = Act::none;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1)}));

  Device* d = dev.get();
  Background bg([d] { return d->suspend(); });
  ASSERT_TRUE(wait_until([] { return g.ev.count(stop_ev(1, kStopSuspend)) == 1; }))
      << "the stop callback never ran";
  EXPECT_FALSE(bg.finished_within(kBlocked)) << "suspend returned with R1 neither acknowledged nor completed";
  EXPECT_FALSE(r1.done());

  EXPECT_EQ(req(1).complete(Status::success), Status::success);
  ASSERT_EQ(finish(bg, dev, "suspend()"), Status::success);
  EXPECT_EQ(dev->power_state(), PowerState::dx);
  EXPECT_EQ(g.ev.take(), (V{stop_ev(1, kStopSuspend)}));
  const QueueState st = q->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching | kQueueNoRequests | kQueueDriverNoRequests | kQueuePnpHeld);
  EXPECT_EQ(r1.status.load(), Status::success);

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_TRUE(g.ev.take().empty());
  pk.expect_all_completed_once();
}

// C59 (no stop callback registered): Dx simply waits until the owned request
// completes.
TEST(Conformance, C59_WithoutStopCallbackSuspendWaitsForCompletion) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  QueueConfig c = cfg(DispatchType::sequential);
  c.on_stop = nullptr;
  Queue* q = make_queue(*dev, c);
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1)}));

  Device* d = dev.get();
  Background bg([d] { return d->suspend(); });
  EXPECT_FALSE(bg.finished_within(kBlocked)) << "suspend returned while R1 is owned and not completed";
  EXPECT_FALSE(r1.done());

  EXPECT_EQ(req(1).complete(Status::success), Status::success);
  ASSERT_EQ(finish(bg, dev, "suspend()"), Status::success);
  EXPECT_EQ(dev->power_state(), PowerState::dx);
  EXPECT_EQ(q->get_state().driver_owned, 0u);
  EXPECT_TRUE(g.ev.take().empty()) << "no stop/resume callbacks are registered";
  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(r1.status.load(), Status::success);
  pk.expect_all_completed_once();
}

// ---------------------------------------------------------------------------
// C60

// C60: an owned request that was already canceled (not cancelable: only
// flagged) gets no stop callback; the other owned request does.
TEST(Conformance, C60_CanceledOwnedRequestGetsNoStop) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::parallel));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.on_suspend[2] = Act::ack_keep;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  TrackedPacket& r2 = submit(*dev, pk, 2);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1), io_ev(2)}));
  EXPECT_EQ(dev->cancel(r1.packet), Status::success);
  EXPECT_TRUE(req(1).is_canceled());
  EXPECT_FALSE(r1.done()) << "an owned request is never completed by the framework";

  // Whether Dx also waits for the canceled R1 is not what C60 checks: complete
  // it once R2's stop callback has run, then let suspend finish.
  Device* d = dev.get();
  Background bg([d] { return d->suspend(); });
  ASSERT_TRUE(wait_until([] { return g.ev.count(stop_ev(2, kStopSuspend)) == 1; }))
      << "the stop callback never ran for R2";
  EXPECT_EQ(req(1).complete(Status::cancelled), Status::success);
  ASSERT_EQ(finish(bg, dev, "suspend()"), Status::success);

  const V ev = g.ev.take();
  EXPECT_EQ(ev, (V{stop_ev(2, kStopSuspend)})) << "no stop callback for the canceled R1";
  EXPECT_EQ(count_prefix(ev, "stop:1:"), 0u);
  EXPECT_EQ(q->get_state().driver_owned, 1u);

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{resume_ev(2)}));
  EXPECT_EQ(req(2).complete(Status::success), Status::success);
  EXPECT_EQ(r1.status.load(), Status::cancelled);
  EXPECT_EQ(r2.status.load(), Status::success);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C60 (cancelable variant): an owned cancelable request whose cancel callback
// has run (the driver completes it later) gets no stop callback either.
TEST(Conformance, C60_CanceledCancelableRequestGetsNoStop) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::parallel));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.mark[1] = true;
  g.cancel_completes[1] = false;  // the driver finishes R1 later
  g.on_suspend[2] = Act::ack_keep;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  TrackedPacket& r2 = submit(*dev, pk, 2);
  EXPECT_EQ(dev->cancel(r1.packet), Status::success);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1), io_ev(2), cancel_ev(1)}));
  EXPECT_TRUE(req(1).is_canceled());

  Device* d = dev.get();
  Background bg([d] { return d->suspend(); });
  ASSERT_TRUE(wait_until([] { return g.ev.count(stop_ev(2, kStopSuspend)) == 1; }))
      << "the stop callback never ran for R2";
  EXPECT_EQ(req(1).complete(Status::cancelled), Status::success);
  ASSERT_EQ(finish(bg, dev, "suspend()"), Status::success);
  const V ev = g.ev.take();
  EXPECT_EQ(ev, (V{stop_ev(2, kStopSuspend)}));
  EXPECT_EQ(count_prefix(ev, "stop:1:"), 0u);

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{resume_ev(2)}));
  EXPECT_EQ(req(2).complete(Status::success), Status::success);
  EXPECT_EQ(r1.status.load(), Status::cancelled);
  EXPECT_EQ(r2.status.load(), Status::success);
  EXPECT_EQ(q->get_state().driver_owned, 0u);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ---------------------------------------------------------------------------
// C61

// C61: a non-power-managed queue (PowerManaged=no) gets no stop callback on Dx,
// is never PnpHeld, suspend does not wait for its owned request, and it keeps
// delivering in Dx; on removal its owned request gets stop(Purge). A
// power-managed queue on the same device is the contrast.
TEST(Conformance, C61_NonPowerManagedQueueIgnoresSuspendAndGetsPurgeOnRemove) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  QueueConfig npc = cfg(DispatchType::parallel);
  npc.power_managed = TriState::no;
  Queue* np = make_queue(*dev, npc);  // default queue: reads
  QueueConfig pmc = cfg(DispatchType::sequential, false);
  Queue* pm = make_queue(*dev, pmc);  // writes
  ASSERT_TRUE(np && pm);
  EXPECT_FALSE(np->power_managed());
  EXPECT_TRUE(pm->power_managed());
  ASSERT_EQ(dev->configure_request_dispatching(*pm, RequestType::write), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.on_suspend[1] = Act::ack_keep;  // would keep suspend from waiting, were it called
  g.on_suspend[2] = Act::ack_keep;
  g.on_purge[1] = Act::complete_cancelled;

  TrackedPacket& r1 = submit(*dev, pk, 1, RequestType::read);   // owned through np
  TrackedPacket& w2 = submit(*dev, pk, 2, RequestType::write);  // owned through pm
  EXPECT_EQ(g.ev.take(), (V{io_ev(1), io_ev(2)}));

  ASSERT_EQ(suspend(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{stop_ev(2, kStopSuspend)})) << "only the power-managed queue is stopped";
  EXPECT_EQ(np->get_state().flags & kQueuePnpHeld, 0u);
  EXPECT_EQ(np->get_state().flags, kQueueAccepting | kQueueDispatching | kQueueNoRequests);
  EXPECT_EQ(np->get_state().driver_owned, 1u);
  EXPECT_NE(pm->get_state().flags & kQueuePnpHeld, 0u);

  // Dispatch continues on the non-power-managed queue in Dx.
  TrackedPacket& r3 = submit(*dev, pk, 3, RequestType::read);
  EXPECT_EQ(g.ev.take(), (V{io_ev(3)}));
  EXPECT_EQ(req(3).complete(Status::success), Status::success);
  EXPECT_EQ(r3.status.load(), Status::success);

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{resume_ev(2)})) << "no resume for the non-power-managed queue";
  EXPECT_EQ(req(2).complete(Status::success), Status::success);

  ASSERT_EQ(remove(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{stop_ev(1, kStopPurge)}));
  EXPECT_EQ(g.act_status[1].load(), Status::success);
  EXPECT_EQ(r1.status.load(), Status::cancelled);
  EXPECT_EQ(w2.status.load(), Status::success);
  EXPECT_EQ(np->get_state().flags & kQueueAccepting, 0u);
  EXPECT_EQ(np->get_state().driver_owned, 0u);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C61 (control device): queues of a control (non-PnP) device are never
// power-managed, even when asked to be: no stop on Dx, delivery continues; at
// removal the owned request gets stop(Purge).
TEST(Conformance, C61_ControlDeviceQueuesAreNeverPowerManaged) {
  g.reset();
  auto dev = make_device({.control_device = true});
  ASSERT_TRUE(dev);
  QueueConfig c = cfg(DispatchType::parallel);
  c.power_managed = TriState::yes;
  Queue* q = make_queue(*dev, c);
  ASSERT_TRUE(q);
  EXPECT_FALSE(q->power_managed());
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  g.on_suspend[1] = Act::ack_keep;
  g.on_purge[1] = Act::complete_cancelled;

  TrackedPacket& r1 = submit(*dev, pk, 1);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1)}));
  ASSERT_EQ(suspend(dev), Status::success);
  EXPECT_TRUE(g.ev.take().empty());
  EXPECT_EQ(q->get_state().flags, kQueueAccepting | kQueueDispatching | kQueueNoRequests);

  TrackedPacket& r2 = submit(*dev, pk, 2);
  EXPECT_EQ(g.ev.take(), (V{io_ev(2)}));
  EXPECT_EQ(req(2).complete(Status::success), Status::success);

  ASSERT_EQ(remove(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{stop_ev(1, kStopPurge)}));
  EXPECT_EQ(r1.status.load(), Status::cancelled);
  EXPECT_EQ(r2.status.load(), Status::success);
  pk.expect_all_completed_once();
}

// C61 / section 2 PowerManaged: use_default means power-managed, except on a
// filter; an explicit setting wins.
TEST(Conformance, C61_PowerManagedDefaultFollowsDeviceKind) {
  auto fdo = make_device();
  ASSERT_TRUE(fdo);
  Queue* a = make_queue(*fdo, {.dispatch = DispatchType::manual});
  Queue* b = make_queue(*fdo, {.dispatch = DispatchType::manual, .power_managed = TriState::no});
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(a->power_managed());
  EXPECT_FALSE(b->power_managed());

  auto filter = make_device({.filter = true});
  ASSERT_TRUE(filter);
  Queue* c = make_queue(*filter, {.dispatch = DispatchType::manual});
  Queue* e = make_queue(*filter, {.dispatch = DispatchType::manual, .power_managed = TriState::yes});
  ASSERT_TRUE(c && e);
  EXPECT_FALSE(c->power_managed());
  EXPECT_TRUE(e->power_managed());

  // The filter's default (non-power-managed) queue is never PnpHeld.
  ASSERT_EQ(filter->start(), Status::success);
  ASSERT_EQ(suspend(filter), Status::success);
  EXPECT_EQ(c->get_state().flags & kQueuePnpHeld, 0u);
  EXPECT_NE(e->get_state().flags & kQueuePnpHeld, 0u);
  ASSERT_EQ(resume(filter), Status::success);
}

// ---------------------------------------------------------------------------
// C62

// C62: a power-managed queue in Dx queues arriving I/O (Accept stays set,
// PnpHeld is reported) and delivers it only after D0, in order.
TEST(Conformance, C62_ArrivalInDxIsQueuedAndDeliveredAfterD0) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::sequential));
  ASSERT_TRUE(q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  ASSERT_EQ(suspend(dev), Status::success);
  EXPECT_TRUE(g.ev.take().empty());
  QueueState st = q->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching | kQueueNoRequests | kQueueDriverNoRequests | kQueuePnpHeld);

  TrackedPacket& r1 = submit(*dev, pk, 1);
  TrackedPacket& r2 = submit(*dev, pk, 2);
  EXPECT_TRUE(g.ev.take().empty()) << "nothing is delivered in Dx";
  st = q->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching | kQueueDriverNoRequests | kQueuePnpHeld);
  EXPECT_EQ(st.queued, 2u);
  EXPECT_EQ(st.driver_owned, 0u);
  EXPECT_FALSE(r1.done());
  EXPECT_FALSE(r2.done());

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(g.ev.take(), (V{io_ev(1)}));
  st = q->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching);
  EXPECT_EQ(st.queued, 1u);
  EXPECT_EQ(st.driver_owned, 1u);
  EXPECT_EQ(req(1).complete(Status::success), Status::success);
  EXPECT_EQ(g.ev.take(), (V{io_ev(2)}));
  EXPECT_EQ(req(2).complete(Status::success), Status::success);
  EXPECT_EQ(r1.status.load(), Status::success);
  EXPECT_EQ(r2.status.load(), Status::success);
  pk.expect_all_completed_once();
}

// C62 (manual queue, with section 3's "ReadyNotify is re-armed" on power-up):
// an arrival in Dx is queued without a ReadyNotify callback, Retrieve returns
// wdf_paused; after D0 the callback fires once and Retrieve returns it.
TEST(Conformance, C62_ManualQueueArrivalInDxNotifiesAfterD0) {
  g.reset();
  auto dev = make_device();
  ASSERT_TRUE(dev);
  Queue* q = make_queue(*dev, cfg(DispatchType::manual));
  ASSERT_TRUE(q);
  ASSERT_EQ(q->ready_notify(&ready_cb), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  ASSERT_EQ(suspend(dev), Status::success);
  TrackedPacket& r1 = submit(*dev, pk, 1);
  EXPECT_EQ(g.ready.load(), 0);
  Request r;
  EXPECT_EQ(q->retrieve_next_request(r), Status::wdf_paused);
  EXPECT_FALSE(r);
  EXPECT_EQ(q->get_state().queued, 1u);
  EXPECT_NE(q->get_state().flags & kQueuePnpHeld, 0u);

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(g.ready.load(), 1);
  ASSERT_EQ(q->retrieve_next_request(r), Status::success);
  EXPECT_EQ(r.offset(), 1u);
  EXPECT_EQ(r.complete(Status::success), Status::success);
  EXPECT_EQ(q->retrieve_next_request(r), Status::no_more_entries);
  EXPECT_EQ(g.ready.load(), 1);
  EXPECT_EQ(r1.status.load(), Status::success);
  pk.expect_all_completed_once();
}

// ---------------------------------------------------------------------------
// Power-down racing requests that change queues (regression)

// Suspend must count each stop notification against what its release
// credits. Power-down marks every request it finds owned through the queue;
// a request the driver forwards to another queue and retrieves from there
// (same handle, same state word) between the scan reading its owner and
// marking it used to be counted against the first queue, while its forward,
// completion or acknowledgement credited the second. The first queue's count
// then never returned to zero: suspend() hung with every power-managed queue
// paused (PnpHeld) and the device still reported in D0 (the soak's rare hang).
// Here two threads bounce requests between two manual power-managed queues
// (no stop callback: suspend waits until each notified request leaves the
// driver) while the device suspends and resumes over and over.
TEST(PowerRace, SuspendWhileRequestsBounceBetweenQueuesAlwaysReturns) {
  g.reset();
  auto dev = make_device({.max_requests = 256});
  ASSERT_TRUE(dev);
  QueueConfig ca{.dispatch = DispatchType::manual, .default_queue = true};
  QueueConfig cb{.dispatch = DispatchType::manual};
  Queue* a = make_queue(*dev, ca);
  Queue* b = make_queue(*dev, cb);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;
  constexpr std::size_t kRequests = 96;
  for (std::size_t i = 0; i < kRequests; ++i) submit(*dev, pk, i % kIds);

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> moves{0};
  auto bounce = [&](int seed) {
    std::uint32_t x = 0x9e3779b9u * static_cast<std::uint32_t>(seed + 1);
    while (!stop.load(std::memory_order_relaxed)) {
      bool any = false;
      for (Queue* from : {a, b}) {
        Request r;
        if (from->retrieve_next_request(r) != Status::success) continue;
        any = true;
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        if (x % 4 == 0) {  // a mark/unmark changes the word under the scan
          EXPECT_EQ(r.mark_cancelable(&cancel_cb), Status::success);
          EXPECT_EQ(r.unmark_cancelable(), Status::success);
        }
        EXPECT_EQ(r.forward_to_queue(from == a ? *b : *a), Status::success);
        moves.fetch_add(1, std::memory_order_relaxed);
      }
      if (!any) std::this_thread::yield();
    }
  };
  std::thread t1(bounce, 1), t2(bounce, 2);

  const auto end = std::chrono::steady_clock::now() + 1500ms;
  int cycles = 0;
  bool hung = false;
  while (!hung && (cycles < 20 || std::chrono::steady_clock::now() < end)) {
    if (suspend(dev) != Status::success) hung = true;
    else if (resume(dev) != Status::success) hung = true;
    else ++cycles;
  }
  stop = true;
  t1.join();
  t2.join();
  ASSERT_FALSE(hung) << "suspend or resume hung after " << cycles << " cycles (" << moves.load() << " moves)";
  EXPECT_GT(moves.load(), 0u);

  // Everything is back in the two queues, none paused: finish them.
  std::size_t finished = 0;
  for (Queue* q : {a, b}) {
    EXPECT_EQ(q->get_state().flags & kQueuePnpHeld, 0u);
    EXPECT_EQ(q->get_state().driver_owned, 0u);
    Request r;
    while (q->retrieve_next_request(r) == Status::success) {
      EXPECT_EQ(r.complete(Status::success), Status::success);
      ++finished;
    }
  }
  EXPECT_EQ(finished, kRequests);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

}  // namespace
}  // namespace ioq::test
