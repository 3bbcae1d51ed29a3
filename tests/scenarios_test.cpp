// Real-client scenarios (spec section 9): five WDF sample drivers, each set up
// as the sample sets up its queues and replayed step by step through ioq's
// public API. The drivers' callbacks are written after the samples (named in
// each section); timers, DPCs and receive paths are simulated by the test
// calling the same driver code directly at the right moment.
//
// Conventions
//   * A request carries its test id in Packet::offset (Request::offset()).
//   * Each scenario keeps its driver state in a context struct reached through
//     QueueConfig::context / Queue::context() or a callback's ctx pointer;
//     callbacks record what they see in the context's Events, in order.
//   * Calls that may block (stop_synchronously, suspend, remove) run on a
//     helper thread with a bounded wait: a hang fails the test (and leaks the
//     device, whose stuck thread is still inside it) instead of freezing.
#include "queue_harness.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
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
using V = std::vector<std::string>;

constexpr auto kHang = 10s;       // longer than any correct call takes
constexpr auto kBlocked = 200ms;  // how long a call that must block is watched

// ---------------------------------------------------------------------------
// Helpers

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

using test::wait_until;

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", v);
  return buf;
}
std::string ev(const char* what, std::uint64_t id) { return std::string(what) + ":" + std::to_string(id); }
std::string ev(const char* what, std::uint64_t id, std::uint32_t flags) {
  return ev(what, id) + ":" + hex(flags);
}

TrackedPacket& submit(Device& dev, Packets& pk, std::uint64_t id, RequestType type, std::uint32_t length = 512,
                      std::uint32_t ioctl = 0, FileHandle file = {}) {
  TrackedPacket& t = pk.make(type, length, file, ioctl);
  t.packet.offset = id;
  EXPECT_EQ(dev.submit(t.packet), Status::pending);
  return t;
}

template <typename T>
T* ctx_of(Queue& q) {
  return static_cast<T*>(q.context());
}

// ===========================================================================
// A. Echo (general/echo/kmdf/driver/AutoSync/{queue.c,device.c})
//   Sequential default queue for Read and Write; the write handler marks the
//   request cancelable and stores it as CurrentRequest; a periodic timer
//   (parented to the queue, so it shares the queue's lock) unmarks and
//   completes it unless the cancel routine has won; the cancel routine
//   completes STATUS_CANCELLED. Self-managed I/O suspend: StopSynchronously +
//   stop the timer; restart: Start + restart the timer.

namespace echo {

struct Ctx {
  Queue* queue = nullptr;
  bool driver_sync = false;                    // the DriverSync variant
  std::mutex lock;                             // DriverSync: the driver's own spinlock
  std::atomic<std::uint64_t> current{0};       // CurrentRequest
  std::atomic<bool> timer_running{false};
  Events ev;
  std::atomic<int> mark_failures{0};
};

void cancel_routine(Request r, void* p) noexcept {  // EchoEvtRequestCancel
  auto* c = static_cast<Ctx*>(p);
  c->ev.add(ev("cancel", r.offset()));
  std::unique_lock<std::mutex> l(c->lock, std::defer_lock);
  if (c->driver_sync) l.lock();
  std::uint64_t expected = r.handle();
  EXPECT_TRUE(c->current.compare_exchange_strong(expected, 0)) << "the cancelled request is CurrentRequest";
  if (l.owns_lock()) l.unlock();
  EXPECT_EQ(r.complete(Status::cancelled, 0), Status::success);
}

void on_write(Queue& q, Request r) {  // EchoEvtIoWrite
  auto* c = ctx_of<Ctx>(q);
  c->ev.add(ev("write", r.offset()));
  if (c->driver_sync) {
    std::unique_lock l(c->lock);
    const Status s = r.mark_cancelable_ex(&cancel_routine, c);
    if (s != Status::success) {
      ++c->mark_failures;
      l.unlock();
      EXPECT_EQ(r.complete(s), Status::success);
      return;
    }
    c->current = r.handle();
    return;
  }
  c->current = r.handle();  // bookkeeping first: the cancel routine may run right after marking
  EXPECT_EQ(r.mark_cancelable(&cancel_routine, c), Status::success);
}

void on_read(Queue& q, Request r) {  // only a 0-byte read is sent: the framework completes it
  ctx_of<Ctx>(q)->ev.add(ev("read", r.offset()));
  EXPECT_EQ(r.complete(Status::success), Status::success);
}

// EchoEvtTimerFunc: Unmark; unless that returns STATUS_CANCELLED, Complete.
void timer_tick(Ctx& c) {
  if (!c.timer_running) return;
  std::unique_lock<std::mutex> l(c.lock, std::defer_lock);
  if (c.driver_sync) l.lock();
  const Request r(c.current.load());
  if (!r) {
    c.ev.add("timer:idle");
    return;
  }
  const Status s = r.unmark_cancelable();
  if (s == Status::cancelled) {
    c.ev.add(ev("timer:lost", r.offset()));
    return;
  }
  EXPECT_EQ(s, Status::success);
  c.current = 0;
  if (l.owns_lock()) l.unlock();  // completion may deliver the next write on this thread
  c.ev.add(ev("timer:complete", r.offset()));
  EXPECT_EQ(r.complete(Status::success, r.length()), Status::success);
}

Status self_managed_suspend(Ctx& c) {  // EchoEvtDeviceSelfManagedIoSuspend
  const Status s = c.queue->stop_synchronously();
  c.timer_running = false;
  return s;
}
Status self_managed_restart(Ctx& c) {  // EchoEvtDeviceSelfManagedIoRestart
  const Status s = c.queue->start();
  c.timer_running = true;
  return s;
}

struct Rig {
  std::unique_ptr<Device> dev;
  Queue* q = nullptr;
};
Rig setup(Ctx& c) {
  Rig rig;
  rig.dev = make_device();
  if (!rig.dev) return rig;
  QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
  qc.on_read = &on_read;
  qc.on_write = &on_write;
  qc.context = &c;
  rig.q = make_queue(*rig.dev, qc);
  c.queue = rig.q;
  c.timer_running = true;  // EchoEvtDeviceSelfManagedIoInit starts the timer
  return rig;
}

}  // namespace echo

// Echo replay, steps 1-5 (AutoSync).
TEST(Scenario, Echo_ReplayAutoSync) {
  echo::Ctx c;
  echo::Rig rig = echo::setup(c);
  ASSERT_TRUE(rig.dev && rig.q);
  auto& dev = rig.dev;
  Queue& q = *rig.q;
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  // 1. W1, W2 -> W2 waits (queued) until the timer completes W1; then it is delivered.
  TrackedPacket& w1 = submit(*dev, pk, 1, RequestType::write, 100);
  TrackedPacket& w2 = submit(*dev, pk, 2, RequestType::write, 200);
  EXPECT_EQ(c.ev.take(), (V{"write:1"}));
  EXPECT_EQ(q.get_state().driver_owned, 1u);
  EXPECT_EQ(q.get_state().queued, 1u);
  EXPECT_FALSE(w2.done());
  echo::timer_tick(c);
  EXPECT_EQ(c.ev.take(), (V{"timer:complete:1", "write:2"}));
  EXPECT_EQ(w1.completions.load(), 1);
  EXPECT_EQ(w1.status.load(), Status::success);
  EXPECT_EQ(w1.information.load(), 100u);
  EXPECT_EQ(q.get_state().driver_owned, 1u);
  EXPECT_EQ(q.get_state().queued, 0u);

  // 2. Cancel a queued write (W3, behind the owned W2) -> STATUS_CANCELLED, no callback.
  TrackedPacket& w3 = submit(*dev, pk, 3, RequestType::write);
  EXPECT_EQ(q.get_state().queued, 1u);
  EXPECT_EQ(dev->cancel(w3.packet), Status::success);
  EXPECT_EQ(w3.completions.load(), 1);
  EXPECT_EQ(w3.status.load(), Status::cancelled);
  EXPECT_TRUE(c.ev.take().empty()) << "neither the cancel routine nor a handler runs";
  EXPECT_EQ(q.get_state().queued, 0u);
  EXPECT_EQ(q.get_state().driver_owned, 1u);

  // 3. Cancel the owned request (W2) -> the cancel routine runs once; the timer skips it.
  EXPECT_EQ(dev->cancel(w2.packet), Status::success);
  EXPECT_EQ(c.ev.take(), (V{"cancel:2"}));
  EXPECT_EQ(w2.completions.load(), 1);
  EXPECT_EQ(w2.status.load(), Status::cancelled);
  echo::timer_tick(c);
  EXPECT_EQ(c.ev.take(), (V{"timer:idle"}));
  EXPECT_EQ(w2.completions.load(), 1);
  EXPECT_EQ(q.get_state().driver_owned, 0u);

  // 4. Suspend with a request owned -> StopSynchronously blocks until the timer completes it.
  TrackedPacket& w4 = submit(*dev, pk, 4, RequestType::write, 400);
  EXPECT_EQ(c.ev.take(), (V{"write:4"}));
  Device* d = dev.get();
  Background bg([&c, d] {
    const Status s = echo::self_managed_suspend(c);
    const Status p = d->suspend();  // then the framework powers the queues down
    return s != Status::success ? s : p;
  });
  ASSERT_TRUE(wait_until([&] { return (q.get_state().flags & kQueueDispatching) == 0; }))
      << "StopSynchronously never stopped the queue";
  EXPECT_FALSE(bg.finished_within(kBlocked)) << "StopSynchronously returned with W4 still owned";
  EXPECT_FALSE(w4.done());
  echo::timer_tick(c);  // the timer still runs until StopSynchronously returns
  ASSERT_EQ(finish(bg, dev, "StopSynchronously + suspend"), Status::success);
  EXPECT_EQ(c.ev.take(), (V{"timer:complete:4"}));
  EXPECT_EQ(w4.status.load(), Status::success);
  EXPECT_EQ(w4.information.load(), 400u);
  EXPECT_FALSE(c.timer_running.load());
  EXPECT_EQ(dev->power_state(), PowerState::dx);

  // (Restart) A write arriving while stopped in Dx waits for resume + Start.
  TrackedPacket& w5 = submit(*dev, pk, 5, RequestType::write, 500);
  EXPECT_TRUE(c.ev.take().empty());
  EXPECT_EQ(q.get_state().flags, kQueueAccepting | kQueueDriverNoRequests | kQueuePnpHeld);
  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_TRUE(c.ev.take().empty()) << "the queue is still stopped";
  EXPECT_EQ(echo::self_managed_restart(c), Status::success);
  EXPECT_EQ(c.ev.take(), (V{"write:5"}));
  echo::timer_tick(c);
  EXPECT_EQ(c.ev.take(), (V{"timer:complete:5"}));
  EXPECT_EQ(w5.status.load(), Status::success);

  // 5. 0-byte read -> completed SUCCESS (information 0) by the framework; no read handler.
  TrackedPacket& r0 = submit(*dev, pk, 6, RequestType::read, 0);
  EXPECT_EQ(r0.completions.load(), 1);
  EXPECT_EQ(r0.status.load(), Status::success);
  EXPECT_EQ(r0.information.load(), 0u);
  EXPECT_TRUE(c.ev.take().empty());

  pk.expect_all_completed_once();
  EXPECT_EQ(q.get_state().flags, kQueueAccepting | kQueueDispatching | kQueueNoRequests | kQueueDriverNoRequests);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// Echo, DriverSync variant: MarkCancelableEx under the driver's own lock; the
// timer/cancel race is resolved by UnmarkCancelable's STATUS_CANCELLED.
TEST(Scenario, Echo_DriverSyncVariantUsesMarkCancelableEx) {
  echo::Ctx c;
  c.driver_sync = true;
  echo::Rig rig = echo::setup(c);
  ASSERT_TRUE(rig.dev && rig.q);
  auto& dev = rig.dev;
  Queue& q = *rig.q;
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  // Step 1 with MarkCancelableEx.
  TrackedPacket& w1 = submit(*dev, pk, 1, RequestType::write, 10);
  TrackedPacket& w2 = submit(*dev, pk, 2, RequestType::write, 20);
  EXPECT_EQ(c.ev.take(), (V{"write:1"}));
  echo::timer_tick(c);
  EXPECT_EQ(c.ev.take(), (V{"timer:complete:1", "write:2"}));
  EXPECT_EQ(w1.status.load(), Status::success);
  EXPECT_EQ(w1.information.load(), 10u);

  // Step 3: cancel the owned W2 -> the cancel routine runs once; the timer skips it.
  EXPECT_EQ(dev->cancel(w2.packet), Status::success);
  EXPECT_EQ(c.ev.take(), (V{"cancel:2"}));
  echo::timer_tick(c);
  EXPECT_EQ(c.ev.take(), (V{"timer:idle"}));
  EXPECT_EQ(w2.status.load(), Status::cancelled);

  EXPECT_EQ(c.mark_failures.load(), 0);
  EXPECT_EQ(q.get_state().driver_owned, 0u);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// B. PCIDRV (general/pcidrv/kmdf/HW/{nic_init,nic_req,nic_send,nic_recv}.c)
//   Parallel Write and IOCTL queues (ConfigureRequestDispatching); manual
//   PendingWrite and PendingIoctl queues; a manual PendingRead queue routed for
//   Read; no default queue. IOCTLs during link detection are forwarded to
//   PendingIoctl (on failure completed with the error). The DPC finds a parked
//   IOCTL by code (FindRequest loop, RetrieveFoundRequest, rescan on
//   NOT_FOUND); the receive path retrieves until NO_MORE_ENTRIES.

namespace pcidrv {

constexpr std::uint32_t kIoctlA = 0x100, kIoctlB = 0x200, kIoctlC = 0x300, kIoctlD = 0x400;

struct Ctx {
  Queue* pending_ioctl = nullptr;
  Queue* pending_write = nullptr;
  Queue* pending_read = nullptr;
  std::atomic<bool> link_detection{false};
  std::atomic<bool> send_resources{true};
  std::vector<Status> forwards;  // ForwardToIoQueue results, in order
  Events ev;
};

void on_ioctl(Queue& q, Request r) {  // NICEvtIoDeviceControl -> NICHandleQueryOidRequest
  auto* c = ctx_of<Ctx>(q);
  c->ev.add("ioctl:" + hex(r.ioctl_code()));
  if (c->link_detection) {
    const Status s = r.forward_to_queue(*c->pending_ioctl);
    c->forwards.push_back(s);
    if (s != Status::success) {
      EXPECT_EQ(r.complete(s), Status::success);
    }
    return;
  }
  EXPECT_EQ(r.complete(Status::success), Status::success);
}

void on_write(Queue& q, Request r) {  // PciDrvEvtIoWrite -> NICWritePacket
  auto* c = ctx_of<Ctx>(q);
  c->ev.add(ev("write", r.offset()));
  if (!c->send_resources) {
    const Status s = r.forward_to_queue(*c->pending_write);
    c->forwards.push_back(s);
    if (s != Status::success) {
      EXPECT_EQ(r.complete(s), Status::success);
    }
    return;
  }
  EXPECT_EQ(r.complete(Status::success, r.length()), Status::success);
}

// The DPC's search: FindRequest by IOCTL code, RetrieveFoundRequest, rescan
// from the start on NOT_FOUND. `visited` collects the codes looked at;
// `last_tag` receives the last tag passed over (for the stale-tag check).
Status find_by_code(Queue& q, std::uint32_t code, Request& out, std::vector<std::uint32_t>* visited,
                    Request* first_tag = nullptr) {
  Request prev{};
  for (int guard = 0; guard < 100; ++guard) {
    Request tag;
    Status s = q.find_request(prev, FileHandle{}, tag);
    if (s == Status::not_found) {  // the previous tag left the queue: rescan
      prev = Request{};
      continue;
    }
    if (s != Status::success) return s;  // no_more_entries
    if (visited) visited->push_back(tag.ioctl_code());
    if (first_tag && !*first_tag) *first_tag = tag;
    if (tag.ioctl_code() == code) {
      s = q.retrieve_found_request(tag, out);
      if (s == Status::not_found) {
        prev = Request{};
        continue;
      }
      return s;
    }
    prev = tag;  // (WDF: dereference the previous tag here; ioq tags are weak)
  }
  return Status::unsuccessful;
}

}  // namespace pcidrv

// PCIDRV replay: forward 3 IOCTLs, retrieve the middle one by code, cancel the
// first -> STATUS_CANCELLED; check the counts. Around it: the receive path
// (retrieve until NO_MORE_ENTRIES), the send path's PendingWrite, a stale tag
// (NOT_FOUND, rescan) and a failed forward completed with its error.
TEST(Scenario, PcidrvReplay) {
  pcidrv::Ctx c;
  auto dev = make_device();
  ASSERT_TRUE(dev);
  QueueConfig wc{.dispatch = DispatchType::parallel};
  wc.on_write = &pcidrv::on_write;
  wc.context = &c;
  QueueConfig ic{.dispatch = DispatchType::parallel};
  ic.on_device_control = &pcidrv::on_ioctl;
  ic.context = &c;
  Queue* write_q = make_queue(*dev, wc);
  Queue* ioctl_q = make_queue(*dev, ic);
  c.pending_write = make_queue(*dev, {.dispatch = DispatchType::manual});
  c.pending_ioctl = make_queue(*dev, {.dispatch = DispatchType::manual});
  c.pending_read = make_queue(*dev, {.dispatch = DispatchType::manual});
  ASSERT_TRUE(write_q && ioctl_q && c.pending_write && c.pending_ioctl && c.pending_read);
  ASSERT_EQ(dev->configure_request_dispatching(*write_q, RequestType::write), Status::success);
  ASSERT_EQ(dev->configure_request_dispatching(*ioctl_q, RequestType::device_control), Status::success);
  ASSERT_EQ(dev->configure_request_dispatching(*c.pending_read, RequestType::read), Status::success);
  EXPECT_EQ(dev->default_queue(), nullptr);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  // Receive path: reads park in PendingRead; NICServiceReadIrps retrieves until NO_MORE_ENTRIES.
  TrackedPacket& r1 = submit(*dev, pk, 1, RequestType::read, 64);
  TrackedPacket& r2 = submit(*dev, pk, 2, RequestType::read, 64);
  EXPECT_EQ(c.pending_read->get_state().queued, 2u);
  std::vector<std::uint64_t> received;
  Status rs;
  for (;;) {
    Request r;
    rs = c.pending_read->retrieve_next_request(r);
    if (rs != Status::success) break;
    received.push_back(r.offset());
    EXPECT_EQ(r.complete(Status::success, 60), Status::success);
  }
  EXPECT_EQ(rs, Status::no_more_entries);
  EXPECT_EQ(received, (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(r1.status.load(), Status::success);
  EXPECT_EQ(r2.information.load(), 60u);

  // Send path without resources: the write is parked in PendingWrite, the send-complete DPC finishes it.
  c.send_resources = false;
  TrackedPacket& w1 = submit(*dev, pk, 3, RequestType::write, 128);
  EXPECT_EQ(c.forwards, (std::vector<Status>{Status::success}));
  EXPECT_EQ(c.pending_write->get_state().queued, 1u);
  EXPECT_EQ(write_q->get_state().driver_owned, 0u);
  {
    Request r;
    ASSERT_EQ(c.pending_write->retrieve_next_request(r), Status::success);
    EXPECT_EQ(r.complete(Status::success, r.length()), Status::success);
  }
  EXPECT_EQ(w1.status.load(), Status::success);
  EXPECT_EQ(w1.information.load(), 128u);
  c.forwards.clear();
  (void)c.ev.take();

  // Replay: link detection in progress; 3 IOCTLs are forwarded to PendingIoctl.
  c.link_detection = true;
  TrackedPacket& ia = submit(*dev, pk, 10, RequestType::device_control, 16, pcidrv::kIoctlA);
  TrackedPacket& ib = submit(*dev, pk, 11, RequestType::device_control, 16, pcidrv::kIoctlB);
  TrackedPacket& ic3 = submit(*dev, pk, 12, RequestType::device_control, 16, pcidrv::kIoctlC);
  EXPECT_EQ(c.ev.take(), (V{"ioctl:0x100", "ioctl:0x200", "ioctl:0x300"}));
  EXPECT_EQ(c.forwards, (std::vector<Status>(3, Status::success)));
  EXPECT_EQ(ioctl_q->get_state().driver_owned, 0u);
  EXPECT_EQ(ioctl_q->get_state().queued, 0u);
  EXPECT_EQ(ioctl_q->counters().forwarded, 3u);
  EXPECT_EQ(c.pending_ioctl->get_state().queued, 3u);
  EXPECT_EQ(c.pending_ioctl->get_state().driver_owned, 0u);

  // The DPC retrieves the middle one by its code.
  Request found, first_tag;
  std::vector<std::uint32_t> visited;
  ASSERT_EQ(pcidrv::find_by_code(*c.pending_ioctl, pcidrv::kIoctlB, found, &visited, &first_tag), Status::success);
  EXPECT_EQ(visited, (std::vector<std::uint32_t>{pcidrv::kIoctlA, pcidrv::kIoctlB}));
  EXPECT_EQ(found.ioctl_code(), pcidrv::kIoctlB);
  EXPECT_EQ(found.queue(), c.pending_ioctl);
  QueueState st = c.pending_ioctl->get_state();
  EXPECT_EQ(st.queued, 2u);
  EXPECT_EQ(st.driver_owned, 1u);

  // Cancel the first -> STATUS_CANCELLED (PendingIoctl has no canceled-on-queue callback).
  EXPECT_EQ(dev->cancel(ia.packet), Status::success);
  EXPECT_EQ(ia.completions.load(), 1);
  EXPECT_EQ(ia.status.load(), Status::cancelled);
  st = c.pending_ioctl->get_state();
  EXPECT_EQ(st.queued, 1u);
  EXPECT_EQ(st.driver_owned, 1u);
  EXPECT_FALSE(ib.done());
  EXPECT_FALSE(ic3.done());

  // The tag of the cancelled request is stale: NOT_FOUND, and the DPC rescans from the start.
  Request next;
  EXPECT_EQ(c.pending_ioctl->find_request(first_tag, FileHandle{}, next), Status::not_found);
  EXPECT_EQ(c.pending_ioctl->retrieve_found_request(first_tag, next), Status::not_found);
  EXPECT_EQ(c.pending_ioctl->find_request(Request{}, FileHandle{}, next), Status::success);
  EXPECT_EQ(next.ioctl_code(), pcidrv::kIoctlC);
  EXPECT_EQ(c.pending_ioctl->get_state().queued, 1u) << "FindRequest never changes the counts";

  EXPECT_EQ(found.complete(Status::success, 8), Status::success);
  EXPECT_EQ(ib.status.load(), Status::success);
  EXPECT_EQ(ib.information.load(), 8u);

  // Link detection done: the DPC completes what is left.
  c.link_detection = false;
  {
    Request r;
    ASSERT_EQ(c.pending_ioctl->retrieve_next_request(r), Status::success);
    EXPECT_EQ(r.ioctl_code(), pcidrv::kIoctlC);
    EXPECT_EQ(r.complete(Status::success), Status::success);
    EXPECT_EQ(c.pending_ioctl->retrieve_next_request(r), Status::no_more_entries);
  }
  EXPECT_EQ(ic3.status.load(), Status::success);
  st = c.pending_ioctl->get_state();
  EXPECT_EQ(st.flags, kQueueAccepting | kQueueDispatching | kQueueNoRequests | kQueueDriverNoRequests);

  // A forward that fails (PendingIoctl purged, not accepting) -> completed with the error;
  // the submitter sees STATUS_WDF_BUSY as device_busy.
  ASSERT_EQ(c.pending_ioctl->purge_synchronously(), Status::success);
  c.link_detection = true;
  c.forwards.clear();
  TrackedPacket& id4 = submit(*dev, pk, 13, RequestType::device_control, 16, pcidrv::kIoctlD);
  EXPECT_EQ(c.forwards, (std::vector<Status>{Status::wdf_busy}));
  EXPECT_EQ(id4.completions.load(), 1);
  EXPECT_EQ(id4.status.load(), Status::device_busy);
  EXPECT_EQ(ioctl_q->get_state().driver_owned, 0u);

  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// C. NDISPROT (network/ndis/ndisprot_kmdf/60/{ndisbind,recv,ntdisp}.c)
//   A manual ReadQueue per binding with ReadyNotify; the parallel default
//   queue's EvtIoRead forwards there. The ReadyNotify callback and the receive
//   path both run ndisprotServiceReads: while data is pending, Retrieve, copy,
//   complete, until NO_MORE_ENTRIES. Close: PurgeSynchronously; open: Start.

namespace ndisprot {

struct Ctx {
  Queue* read_queue = nullptr;
  std::mutex mu;
  std::deque<std::uint32_t> received;  // pending receive packets (their sizes)
  std::atomic<int> notified{0};
  std::vector<Status> forwards;
  std::vector<Status> retrieves;
  Events ev;
};

void on_read(Queue& q, Request r) {  // NdisprotEvtIoRead
  auto* c = ctx_of<Ctx>(q);
  const Status s = r.forward_to_queue(*c->read_queue);
  c->forwards.push_back(s);
  if (s != Status::success) {
    EXPECT_EQ(r.complete(s), Status::success);
  }
}

void service_reads(Ctx& c) {  // ndisprotServiceReads
  for (;;) {
    std::uint32_t bytes;
    {
      std::lock_guard l(c.mu);
      if (c.received.empty()) return;
      bytes = c.received.front();
    }
    Request r;
    const Status s = c.read_queue->retrieve_next_request(r);
    c.retrieves.push_back(s);
    if (s != Status::success) return;  // NO_MORE_ENTRIES: the data waits for a read
    {
      std::lock_guard l(c.mu);
      c.received.pop_front();
    }
    c.ev.add(ev("deliver", r.offset()));
    EXPECT_EQ(r.complete(Status::success, bytes), Status::success);
  }
}

void read_queue_ready(Queue& q, void* p) {  // NdisProtEvtNotifyReadQueue
  (void)q;
  auto* c = static_cast<Ctx*>(p);
  ++c->notified;
  service_reads(*c);
}

void receive(Ctx& c, std::uint32_t bytes) {  // the NDIS receive path
  {
    std::lock_guard l(c.mu);
    c.received.push_back(bytes);
  }
  service_reads(c);
}

}  // namespace ndisprot

// NDISPROT replay, steps 1-4.
TEST(Scenario, NdisprotReplay) {
  ndisprot::Ctx c;
  auto dev = make_device();
  ASSERT_TRUE(dev);
  QueueConfig dc{.dispatch = DispatchType::parallel, .default_queue = true};
  dc.on_read = &ndisprot::on_read;
  dc.context = &c;
  Queue* dq = make_queue(*dev, dc);
  c.read_queue = make_queue(*dev, {.dispatch = DispatchType::manual, .context = &c});
  ASSERT_TRUE(dq && c.read_queue);
  ASSERT_EQ(c.read_queue->ready_notify(&ndisprot::read_queue_ready, &c), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  // 1. Read -> the ReadyNotify callback fires once; with no data the read stays queued.
  TrackedPacket& r1 = submit(*dev, pk, 1, RequestType::read, 1500);
  EXPECT_EQ(c.forwards, (std::vector<Status>{Status::success}));
  EXPECT_EQ(c.notified.load(), 1);
  EXPECT_FALSE(r1.done());
  EXPECT_EQ(c.read_queue->get_state().queued, 1u);
  EXPECT_EQ(dq->get_state().driver_owned, 0u);
  EXPECT_TRUE(c.retrieves.empty());

  // 2. Data arrives -> the read completes with it.
  ndisprot::receive(c, 64);
  EXPECT_EQ(c.ev.take(), (V{"deliver:1"}));
  EXPECT_EQ(r1.completions.load(), 1);
  EXPECT_EQ(r1.status.load(), Status::success);
  EXPECT_EQ(r1.information.load(), 64u);
  EXPECT_EQ(c.read_queue->get_state().queued, 0u);
  EXPECT_EQ(c.notified.load(), 1);

  // 3. Close with a read pending: PurgeSynchronously -> STATUS_CANCELLED; the next
  //    forward gets STATUS_WDF_BUSY (and the read is completed with it).
  TrackedPacket& r2 = submit(*dev, pk, 2, RequestType::read, 1500);
  EXPECT_EQ(c.read_queue->get_state().queued, 1u);
  ASSERT_EQ(c.read_queue->purge_synchronously(), Status::success);
  EXPECT_EQ(r2.completions.load(), 1);
  EXPECT_EQ(r2.status.load(), Status::cancelled);
  QueueState st = c.read_queue->get_state();
  EXPECT_EQ(st.flags, kQueueDispatching | kQueueNoRequests | kQueueDriverNoRequests);
  c.forwards.clear();
  TrackedPacket& r3 = submit(*dev, pk, 3, RequestType::read, 1500);
  EXPECT_EQ(c.forwards, (std::vector<Status>{Status::wdf_busy}));
  EXPECT_EQ(r3.completions.load(), 1);
  EXPECT_EQ(r3.status.load(), Status::device_busy);
  EXPECT_EQ(dq->get_state().driver_owned, 0u);

  // 4. Next open: Start -> forwarding works again, and reads are served.
  ASSERT_EQ(c.read_queue->start(), Status::success);
  EXPECT_EQ(c.read_queue->get_state().flags,
            kQueueAccepting | kQueueDispatching | kQueueNoRequests | kQueueDriverNoRequests);
  c.forwards.clear();
  const int notified_before = c.notified.load();
  TrackedPacket& r4 = submit(*dev, pk, 4, RequestType::read, 1500);
  EXPECT_EQ(c.forwards, (std::vector<Status>{Status::success}));
  EXPECT_EQ(c.notified.load(), notified_before + 1);
  EXPECT_FALSE(r4.done());
  ndisprot::receive(c, 100);
  EXPECT_EQ(r4.status.load(), Status::success);
  EXPECT_EQ(r4.information.load(), 100u);
  // Data with no read waiting: Retrieve says NO_MORE_ENTRIES and the data waits.
  c.retrieves.clear();
  ndisprot::receive(c, 32);
  EXPECT_EQ(c.retrieves, (std::vector<Status>{Status::no_more_entries}));
  TrackedPacket& r5 = submit(*dev, pk, 5, RequestType::read, 1500);
  EXPECT_EQ(r5.status.load(), Status::success) << "served from the ReadyNotify callback";
  EXPECT_EQ(r5.information.load(), 32u);
  EXPECT_EQ(c.ev.take(), (V{"deliver:4", "deliver:5"}));

  pk.expect_all_completed_once();
  EXPECT_EQ(c.read_queue->get_state().queued, 0u);
  EXPECT_EQ(c.read_queue->get_state().driver_owned, 0u);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// D. Serial (serial/serial/{pnp.c,utils.c})
//   Four manual queues (read, write, mask, purge) plus a parallel default
//   queue, all with EvtIoStop, EvtIoResume and EvtIoCanceledOnQueue. The
//   default queue starts a read (marked cancelable) or, while another read is
//   active, forwards it to the read queue. EvtIoStop: if Cancelable, unmark and
//   remember; then StopAcknowledge(FALSE). EvtIoResume: re-mark cancelable.

namespace serial {

struct ReqCtx {
  bool mark_on_resume;
};

struct Ctx {
  Queue* read_queue = nullptr;
  std::atomic<std::uint64_t> current_read{0};
  Events ev;
  // What EvtIoCanceledOnQueue saw: the packet's completion count and the queue's counts.
  std::atomic<int> coq_packet_completions{-1};
  std::atomic<std::uint32_t> coq_queued{~0u}, coq_owned{~0u};
  std::vector<Status> forwards;
  std::atomic<Status> unmark_in_stop{Status::pending}, ack_in_stop{Status::pending}, mark_in_resume{Status::pending};
};

void cancel_routine(Request r, void* p) noexcept {  // SerialCancelCurrentRead
  auto* c = static_cast<Ctx*>(p);
  c->ev.add(ev("cancel", r.offset()));
  std::uint64_t expected = r.handle();
  (void)c->current_read.compare_exchange_strong(expected, 0);
  EXPECT_EQ(r.complete(Status::cancelled), Status::success);
}

void on_read(Queue& q, Request r) {  // SerialEvtIoRead -> SerialStartOrQueue
  auto* c = ctx_of<Ctx>(q);
  c->ev.add(ev("read", r.offset()));
  if (c->current_read.load() != 0) {
    const Status s = r.forward_to_queue(*c->read_queue);
    c->forwards.push_back(s);
    if (s != Status::success) {
      EXPECT_EQ(r.complete(s), Status::success);
    }
    return;
  }
  r.context<ReqCtx>()->mark_on_resume = false;
  c->current_read = r.handle();
  EXPECT_EQ(r.mark_cancelable(&cancel_routine, c), Status::success);
}

void on_stop(Queue& q, Request r, std::uint32_t flags) {  // SerialEvtIoStop
  auto* c = ctx_of<Ctx>(q);
  c->ev.add(ev(q.name(), r.offset(), flags));
  if (flags & kStopRequestCancelable) {
    const Status s = r.unmark_cancelable();
    c->unmark_in_stop.store(s);
    if (s == Status::cancelled) return;  // the cancel routine completes it
    r.context<ReqCtx>()->mark_on_resume = true;
  }
  c->ack_in_stop.store(r.stop_acknowledge(false));
}

void on_resume(Queue& q, Request r) {  // SerialEvtIoResume
  auto* c = ctx_of<Ctx>(q);
  c->ev.add(ev("resume", r.offset()));
  if (r.context<ReqCtx>()->mark_on_resume) {
    r.context<ReqCtx>()->mark_on_resume = false;
    c->mark_in_resume.store(r.mark_cancelable(&cancel_routine, c));
  }
}

void on_canceled_on_queue(Queue& q, Request r) {  // SerialEvtCanceledOnQueue
  auto* c = ctx_of<Ctx>(q);
  c->ev.add(ev("canceled_on_queue", r.offset()));
  c->coq_packet_completions = static_cast<TrackedPacket*>(r.packet()->user)->completions.load();
  const QueueState st = q.get_state();
  c->coq_queued = st.queued;
  c->coq_owned = st.driver_owned;
  EXPECT_EQ(r.complete(Status::cancelled), Status::success);
}

QueueConfig config(DispatchType type, Ctx& c, const char* name) {
  QueueConfig qc{.dispatch = type};
  qc.on_stop = &on_stop;
  qc.on_resume = &on_resume;
  qc.on_canceled_on_queue = &on_canceled_on_queue;
  qc.context = &c;
  qc.name = name;
  return qc;
}

}  // namespace serial

// Serial replay, steps 1-2.
TEST(Scenario, SerialReplay) {
  serial::Ctx c;
  auto dev = make_device({.request_context_bytes = sizeof(serial::ReqCtx)});
  ASSERT_TRUE(dev);
  QueueConfig dc = serial::config(DispatchType::parallel, c, "default");
  dc.default_queue = true;
  dc.on_read = &serial::on_read;
  Queue* dq = make_queue(*dev, dc);
  c.read_queue = make_queue(*dev, serial::config(DispatchType::manual, c, "read"));
  Queue* write_q = make_queue(*dev, serial::config(DispatchType::manual, c, "write"));
  Queue* mask_q = make_queue(*dev, serial::config(DispatchType::manual, c, "mask"));
  Queue* purge_q = make_queue(*dev, serial::config(DispatchType::manual, c, "purge"));
  ASSERT_TRUE(dq && c.read_queue && write_q && mask_q && purge_q);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  TrackedPacket& r1 = submit(*dev, pk, 1, RequestType::read);  // becomes the current read
  TrackedPacket& r2 = submit(*dev, pk, 2, RequestType::read);  // another read is active: forwarded
  EXPECT_EQ(c.ev.take(), (V{"read:1", "read:2"}));
  EXPECT_EQ(c.forwards, (std::vector<Status>{Status::success}));
  EXPECT_EQ(c.read_queue->get_state().queued, 1u);
  EXPECT_EQ(dq->get_state().driver_owned, 1u);

  // 1. The forwarded read is canceled -> EvtIoCanceledOnQueue runs, with the request
  //    handed to the driver (not auto-completed); the driver completes it.
  EXPECT_EQ(dev->cancel(r2.packet), Status::success);
  EXPECT_EQ(c.ev.take(), (V{"canceled_on_queue:2"}));
  EXPECT_EQ(c.coq_packet_completions.load(), 0) << "the framework must not complete it";
  EXPECT_EQ(c.coq_queued.load(), 0u);
  EXPECT_EQ(c.coq_owned.load(), 1u);
  EXPECT_EQ(r2.completions.load(), 1);
  EXPECT_EQ(r2.status.load(), Status::cancelled);
  EXPECT_EQ(c.read_queue->get_state().driver_owned, 0u);

  // 2. Dx with the owned cancelable read -> Stop(Suspend|Cancelable) -> unmark + ack
  //    -> D0 -> Resume (re-marked cancelable); the read is still owned.
  ASSERT_EQ(suspend(dev), Status::success);
  EXPECT_EQ(c.ev.take(), (V{ev("default", 1, kStopSuspend | kStopRequestCancelable)}));
  EXPECT_EQ(c.unmark_in_stop.load(), Status::success);
  EXPECT_EQ(c.ack_in_stop.load(), Status::success);
  EXPECT_EQ(dq->get_state().driver_owned, 1u);
  EXPECT_NE(dq->get_state().flags & kQueuePnpHeld, 0u);
  EXPECT_FALSE(r1.done());

  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_EQ(c.ev.take(), (V{"resume:1"}));
  EXPECT_EQ(c.mark_in_resume.load(), Status::success);
  const Request cur(c.current_read.load());
  EXPECT_EQ(cur.validate(), Status::success);
  EXPECT_EQ(cur.queue(), dq);
  EXPECT_EQ(dq->get_state().driver_owned, 1u);
  EXPECT_EQ(dq->get_state().flags & kQueuePnpHeld, 0u);
  EXPECT_FALSE(r1.done());

  // Cancelable again: an OS cancel now reaches the cancel routine.
  EXPECT_EQ(dev->cancel(r1.packet), Status::success);
  EXPECT_EQ(c.ev.take(), (V{"cancel:1"}));
  EXPECT_EQ(r1.status.load(), Status::cancelled);
  EXPECT_EQ(dq->get_state().driver_owned, 0u);

  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// E. OSR FX2 (usb/kmdf_fx2/driver/{Device.c,bulkrwr.c,ioctl.c})
//   Sequential Read and Write queues with EvtIoStop (Suspend ->
//   StopAcknowledge(FALSE); Purge -> WdfRequestCancelSentRequest, after which
//   the USB target completes the request cancelled); a parallel default queue
//   for IOCTLs (no EvtIoStop) parks GET_INTERRUPT_MESSAGE in a manual,
//   PowerManaged=WdfFalse InterruptMsgQueue, which the interrupt path
//   retrieves from.

namespace fx2 {

constexpr std::uint32_t kGetInterruptMessage = 0x22200c;
constexpr std::uint32_t kGetBarGraph = 0x222004;

struct Ctx {
  Queue* int_msg_queue = nullptr;
  std::atomic<std::uint64_t> at_target{0};  // the read sent to the USB pipe
  std::vector<Status> forwards;
  std::atomic<Status> ack{Status::pending};
  Events ev;
};

void on_read(Queue& q, Request r) {  // OsrFxEvtIoRead: format and send to the bulk pipe
  auto* c = ctx_of<Ctx>(q);
  c->ev.add(ev("read", r.offset()));
  c->at_target = r.handle();
}

void on_write(Queue& q, Request r) {  // OsrFxEvtIoWrite (completes at once here)
  ctx_of<Ctx>(q)->ev.add(ev("write", r.offset()));
  EXPECT_EQ(r.complete(Status::success, r.length()), Status::success);
}

void on_stop(Queue& q, Request r, std::uint32_t flags) {  // OsrFxEvtIoStop
  auto* c = ctx_of<Ctx>(q);
  c->ev.add(ev("stop", r.offset(), flags));
  if (flags & kStopSuspend) {
    c->ack.store(r.stop_acknowledge(false));
  } else if (flags & kStopPurge) {
    // WdfRequestCancelSentRequest: the USB stack completes the request, and the
    // completion routine completes it with the I/O status.
    std::uint64_t expected = r.handle();
    EXPECT_TRUE(c->at_target.compare_exchange_strong(expected, 0));
    EXPECT_EQ(r.complete(Status::cancelled), Status::success);
  }
}

void on_ioctl(Queue& q, Request r) {  // OsrFxEvtIoDeviceControl
  auto* c = ctx_of<Ctx>(q);
  c->ev.add("ioctl:" + hex(r.ioctl_code()));
  if (r.ioctl_code() == kGetInterruptMessage) {
    const Status s = r.forward_to_queue(*c->int_msg_queue);
    c->forwards.push_back(s);
    if (s != Status::success) {
      EXPECT_EQ(r.complete(s), Status::success);
    }
    return;
  }
  EXPECT_EQ(r.complete(Status::success, 1), Status::success);
}

// OsrFxEvtUsbInterruptPipeReadComplete -> OsrUsbIoctlGetInterruptMessage.
Status interrupt(Ctx& c) {
  Request r;
  const Status s = c.int_msg_queue->retrieve_next_request(r);
  if (s == Status::success) {
    c.ev.add(ev("interrupt", r.offset()));
    EXPECT_EQ(r.complete(Status::success, 1), Status::success);
  }
  return s;
}

}  // namespace fx2

// OSR FX2 replay, steps 1-3.
TEST(Scenario, OsrFx2Replay) {
  fx2::Ctx c;
  auto dev = make_device();
  ASSERT_TRUE(dev);
  QueueConfig dc{.dispatch = DispatchType::parallel, .default_queue = true};
  dc.on_device_control = &fx2::on_ioctl;
  dc.context = &c;
  QueueConfig rc{.dispatch = DispatchType::sequential};
  rc.on_read = &fx2::on_read;
  rc.on_stop = &fx2::on_stop;
  rc.context = &c;
  QueueConfig wc{.dispatch = DispatchType::sequential};
  wc.on_write = &fx2::on_write;
  wc.on_stop = &fx2::on_stop;
  wc.context = &c;
  Queue* dq = make_queue(*dev, dc);
  Queue* read_q = make_queue(*dev, rc);
  Queue* write_q = make_queue(*dev, wc);
  c.int_msg_queue = make_queue(*dev, {.dispatch = DispatchType::manual, .power_managed = TriState::no});
  ASSERT_TRUE(dq && read_q && write_q && c.int_msg_queue);
  EXPECT_TRUE(dq->power_managed());
  EXPECT_TRUE(read_q->power_managed());
  EXPECT_FALSE(c.int_msg_queue->power_managed());
  ASSERT_EQ(dev->configure_request_dispatching(*read_q, RequestType::read), Status::success);
  ASSERT_EQ(dev->configure_request_dispatching(*write_q, RequestType::write), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  Packets pk;

  // An app waits for a switch change: the IOCTL is parked; a bar-graph IOCTL completes at once.
  TrackedPacket& i1 = submit(*dev, pk, 1, RequestType::device_control, 1, fx2::kGetInterruptMessage);
  TrackedPacket& i2 = submit(*dev, pk, 2, RequestType::device_control, 1, fx2::kGetBarGraph);
  EXPECT_EQ(c.forwards, (std::vector<Status>{Status::success}));
  EXPECT_EQ(c.int_msg_queue->get_state().queued, 1u);
  EXPECT_EQ(dq->get_state().driver_owned, 0u);
  EXPECT_EQ(i2.status.load(), Status::success);
  // A read goes to the bulk pipe and stays pending at the target.
  TrackedPacket& r1 = submit(*dev, pk, 3, RequestType::read, 512);
  EXPECT_EQ(c.ev.take(), (V{"ioctl:" + hex(fx2::kGetInterruptMessage), "ioctl:" + hex(fx2::kGetBarGraph), "read:3"}));
  EXPECT_EQ(read_q->get_state().driver_owned, 1u);

  // 1. Dx with the read pending at the target -> EvtIoStop(Suspend) + ack; still owned.
  ASSERT_EQ(suspend(dev), Status::success);
  // 3. ...and the parked IOCTL gets no EvtIoStop: the only stop is the read's.
  EXPECT_EQ(c.ev.take(), (V{ev("stop", 3, kStopSuspend)}));
  EXPECT_EQ(c.ack.load(), Status::success);
  EXPECT_EQ(read_q->get_state().driver_owned, 1u);
  EXPECT_EQ(read_q->get_state().flags, kQueueAccepting | kQueueDispatching | kQueueNoRequests | kQueuePnpHeld);
  EXPECT_FALSE(r1.done());
  EXPECT_NE(c.at_target.load(), 0u);
  // The parking queue is not held in Dx and still holds the IOCTL.
  EXPECT_EQ(c.int_msg_queue->get_state().flags, kQueueAccepting | kQueueDispatching | kQueueDriverNoRequests);
  EXPECT_EQ(c.int_msg_queue->get_state().queued, 1u);
  EXPECT_FALSE(i1.done());

  // Back to D0 (FX2 has no EvtIoResume): the read is still at the target; an
  // interrupt completes the parked IOCTL.
  ASSERT_EQ(resume(dev), Status::success);
  EXPECT_TRUE(c.ev.take().empty());
  EXPECT_EQ(read_q->get_state().driver_owned, 1u);
  EXPECT_EQ(fx2::interrupt(c), Status::success);
  EXPECT_EQ(c.ev.take(), (V{"interrupt:1"}));
  EXPECT_EQ(i1.status.load(), Status::success);
  EXPECT_EQ(fx2::interrupt(c), Status::no_more_entries);

  // Another IOCTL is parked and another read waits behind the pending one.
  TrackedPacket& i3 = submit(*dev, pk, 4, RequestType::device_control, 1, fx2::kGetInterruptMessage);
  TrackedPacket& r2 = submit(*dev, pk, 5, RequestType::read, 512);
  EXPECT_EQ(c.ev.take(), (V{"ioctl:" + hex(fx2::kGetInterruptMessage)}));
  EXPECT_EQ(read_q->get_state().queued, 1u);

  // 2. Remove -> EvtIoStop(Purge) for the pending read; CancelSentRequest completes it
  //    cancelled. Removal purges the rest: the queued read and the parked IOCTL.
  ASSERT_EQ(remove(dev), Status::success);
  EXPECT_EQ(c.ev.take(), (V{ev("stop", 3, kStopPurge)}));
  EXPECT_EQ(r1.status.load(), Status::cancelled);
  EXPECT_EQ(r2.status.load(), Status::cancelled);
  EXPECT_EQ(i3.status.load(), Status::cancelled);
  EXPECT_EQ(c.at_target.load(), 0u);
  EXPECT_EQ(dev->power_state(), PowerState::removed);
  for (Queue* q : {dq, read_q, write_q, c.int_msg_queue}) {
    const QueueState st = q->get_state();
    EXPECT_EQ(st.flags & kQueueAccepting, 0u);
    EXPECT_EQ(st.queued, 0u);
    EXPECT_EQ(st.driver_owned, 0u);
  }
  TrackedPacket& late = submit(*dev, pk, 6, RequestType::read, 512);
  EXPECT_EQ(late.status.load(), Status::invalid_device_state);

  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

}  // namespace
}  // namespace ioq::test
