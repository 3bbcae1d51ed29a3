// Conformance, spec section 8, items C1..C29: creation and routing (C1-C5),
// delivery (C6-C14), retrieval (C15-C23) and ReadyNotify (C24-C29).
//
// Every test is deterministic and single-threaded except C12, which needs a
// second thread (joined before anything is checked). Handlers are captureless
// function pointers; each queue's QueueConfig::context points at a `Driver`
// that records what the handlers saw and, where a test needs it, runs a
// per-test action. Handler calls, packet completions and queue callbacks are
// logged, in order, into one event log so a test can assert the exact order.
//
// Notes on the C++ API (decided in ioq, see include/ioq):
//   * structure Size checks (STATUS_INFO_LENGTH_MISMATCH) and NULL output
//     handles (STATUS_INVALID_PARAMETER_4) cannot be expressed: the type system
//     replaces them. None of C1..C29 depends on them.
//   * a submitter sees STATUS_WDF_BUSY / STATUS_WDF_PAUSED as device_busy.
//   * find_request returns a weak tag: there is no reference to drop.
#include "queue_harness.hpp"

#include <ioq/ioq.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ioq {
// Readable gtest failure messages for the two enums compared most.
[[maybe_unused]] static void PrintTo(Status s, std::ostream* os) { *os << to_string(s); }
[[maybe_unused]] static void PrintTo(RequestType t, std::ostream* os) { *os << to_string(t); }
}  // namespace ioq

namespace ioq::test {
namespace {

using Log = std::vector<std::string>;

// Short names for the state flags.
constexpr std::uint32_t kA = kQueueAccepting;
constexpr std::uint32_t kD = kQueueDispatching;
constexpr std::uint32_t kNR = kQueueNoRequests;
constexpr std::uint32_t kDNR = kQueueDriverNoRequests;
constexpr std::uint32_t kPH = kQueuePnpHeld;

// ---------------------------------------------------------------------------
// The event log: one per test (a Rig installs it).

Events* g_log = nullptr;

void log_event(std::string e) {
  if (g_log != nullptr) g_log->add(std::move(e));
}

// A request's test id: the submitter puts it in Packet::offset.
std::string id_of(Request r) { return std::to_string(r.offset()); }

// Packet completion: log "done:<id>", then let TrackedPacket count it.
void on_complete_logged(Packet& p) noexcept {
  log_event("done:" + std::to_string(p.offset));
  TrackedPacket::on_complete(p);
}

// ---------------------------------------------------------------------------
// The driver side of a queue.

struct Driver {
  // What a handler does after logging; unset: keep the request (driver-owned).
  std::function<void(Queue&, Request)> io;

  std::mutex mu;
  std::vector<Request> owned;                 // requests kept by handlers
  std::vector<std::thread::id> threads;       // thread of each handler call
  std::atomic<int> calls{0};
  std::atomic<int> depth{0};
  std::atomic<int> max_depth{0};

  void keep(Request r) {
    std::lock_guard lock(mu);
    owned.push_back(r);
  }
  // Removes and returns the kept request with test id `id`.
  Request take(std::uint64_t id) {
    std::lock_guard lock(mu);
    for (auto it = owned.begin(); it != owned.end(); ++it) {
      if (it->offset() == id) {
        const Request r = *it;
        owned.erase(it);
        return r;
      }
    }
    ADD_FAILURE() << "the driver does not hold request " << id;
    return Request{};
  }
  std::vector<std::thread::id> thread_log() {
    std::lock_guard lock(mu);
    return threads;
  }
};

Driver& drv(Queue& q) { return *static_cast<Driver*>(q.context()); }

// Every I/O handler: count, track nesting and thread, log "<queue>.<kind>:<id>".
void handle(Queue& q, Request r, const char* kind) {
  Driver& d = drv(q);
  const int depth = d.depth.fetch_add(1) + 1;
  int m = d.max_depth.load();
  while (depth > m && !d.max_depth.compare_exchange_weak(m, depth)) {
  }
  d.calls.fetch_add(1);
  {
    std::lock_guard lock(d.mu);
    d.threads.push_back(std::this_thread::get_id());
  }
  log_event(std::string(q.name()) + "." + kind + ":" + id_of(r));
  if (d.io) {
    d.io(q, r);
  } else {
    d.keep(r);
  }
  d.depth.fetch_sub(1);
}

void h_read(Queue& q, Request r) { handle(q, r, "read"); }
void h_write(Queue& q, Request r) { handle(q, r, "write"); }
void h_ioctl(Queue& q, Request r) { handle(q, r, "ioctl"); }
void h_internal(Queue& q, Request r) { handle(q, r, "internal"); }
void h_default(Queue& q, Request r) { handle(q, r, "default"); }

// Non-I/O handlers (they do not make a queue valid on their own, C2).
void h_stop(Queue&, Request, std::uint32_t) {}
void h_resume(Queue&, Request) {}
void h_canceled_on_queue(Queue&, Request r) { (void)r.complete(Status::cancelled); }

// A Stop/Drain/Purge or ReadyNotify callback: counts, logs "<queue>.<what>",
// and runs an optional action (a ReadyNotify callback that retrieves).
struct Notify {
  explicit Notify(std::string w) : what(std::move(w)) {}
  std::string what;
  std::atomic<int> fired{0};
  std::function<void(Queue&)> fn;
};

void on_notify(Queue& q, void* ctx) {
  auto* n = static_cast<Notify*>(ctx);
  log_event(std::string(q.name()) + "." + n->what);
  n->fired.fetch_add(1);
  if (n->fn) n->fn(q);
}

// ---------------------------------------------------------------------------
// One device with its log and packets.

class Rig {
 public:
  explicit Rig(DeviceConfig cfg = {.max_requests = 64}) {
    g_log = &log;
    dev = make_device(cfg);
  }
  ~Rig() { g_log = nullptr; }
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;

  Queue* queue(const QueueConfig& c) { return make_queue(*dev, c); }

  // Submits a packet whose test id is `id` (its offset); submit must say pending.
  TrackedPacket& submit(RequestType type, std::uint64_t id, std::uint32_t length = 512,
                        FileHandle file = {}, std::uint32_t ioctl = 0) {
    TrackedPacket& p = packets.make(type, length, file, ioctl);
    p.packet.offset = id;
    p.packet.on_complete = &on_complete_logged;
    EXPECT_EQ(dev->submit(p.packet), Status::pending) << "submit of request " << id;
    return p;
  }

  // End of every test: each packet completed exactly once, no usage error.
  void finish() {
    packets.expect_all_completed_once();
    EXPECT_EQ(dev->verifier().total(), 0u) << "a usage error was recorded";
  }

  Events log;
  Packets packets;
  std::unique_ptr<Device> dev;
};

std::string flag_names(std::uint32_t f) {
  std::string s;
  auto add = [&](std::uint32_t bit, const char* n) {
    if (f & bit) s += s.empty() ? n : std::string("|") + n;
  };
  add(kA, "Accept");
  add(kD, "Dispatch");
  add(kNR, "NoRequests");
  add(kDNR, "DriverNoRequests");
  add(kPH, "PnpHeld");
  return s.empty() ? "0" : s;
}

// get_state() is exactly {flags, queued, driver_owned}.
::testing::AssertionResult StateIs(const Queue& q, std::uint32_t flags, std::uint32_t queued,
                                   std::uint32_t owned) {
  const QueueState s = q.get_state();
  if (s.flags == flags && s.queued == queued && s.driver_owned == owned)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "queue " << q.name() << ": state {" << flag_names(s.flags) << ", queued " << s.queued
         << ", driver " << s.driver_owned << "}, expected {" << flag_names(flags) << ", queued " << queued
         << ", driver " << owned << "}";
}

// The packet completed exactly once with `status` and `info`.
::testing::AssertionResult CompletedWith(const TrackedPacket& p, Status status, std::uint64_t info) {
  const int n = p.completions.load();
  const Status s = p.status.load();
  const std::uint64_t i = p.information.load();
  if (n == 1 && s == status && i == info) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "packet " << p.packet.offset << ": " << n << " completion(s), status "
                                       << to_string(s) << ", information " << i << "; expected 1 completion, "
                                       << to_string(status) << ", information " << info;
}

::testing::AssertionResult NotCompleted(const TrackedPacket& p) {
  if (p.completions.load() == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "packet " << p.packet.offset << " completed (" << to_string(p.status.load())
                                       << ") but should still be pending";
}

// Retrieves the next request of a manual (or sequential) queue, expecting success.
Request retrieve(Queue& q) {
  Request r;
  EXPECT_EQ(q.retrieve_next_request(r), Status::success) << "retrieve from " << q.name();
  return r;
}

QueueConfig manual_cfg(const char* name, bool is_default = false) {
  QueueConfig c{.dispatch = DispatchType::manual, .default_queue = is_default};
  c.name = name;
  return c;
}

QueueConfig io_cfg(DispatchType t, const char* name, Driver* d, bool is_default = false) {
  QueueConfig c{.dispatch = t, .default_queue = is_default};
  c.on_read = &h_read;
  c.on_write = &h_write;
  c.on_device_control = &h_ioctl;
  c.on_internal_device_control = &h_internal;
  c.context = d;
  c.name = name;
  return c;
}

// ===========================================================================
// Creation and routing

// C1: a manual queue configured with any EvtIo handler is refused with
// invalid_parameter (UMDF 1's ERROR_BAD_CONFIGURATION has no counterpart), and
// the failed create leaves nothing behind.
TEST(Conformance, C1_ManualQueueWithIoHandlerIsInvalidParameter) {
  Rig rig;
  Driver d;
  IoHandler QueueConfig::*const slots[] = {&QueueConfig::on_read, &QueueConfig::on_write,
                                           &QueueConfig::on_device_control,
                                           &QueueConfig::on_internal_device_control, &QueueConfig::on_default};
  for (auto slot : slots) {
    for (bool is_default : {false, true}) {
      QueueConfig c = manual_cfg("M", is_default);
      c.context = &d;
      c.*slot = &h_default;
      auto q = rig.dev->create_queue(c);
      ASSERT_FALSE(q.has_value());
      EXPECT_EQ(q.error().status, Status::invalid_parameter);
    }
  }
  // The refused default queues did not register: a valid one still can.
  EXPECT_EQ(rig.dev->default_queue(), nullptr);
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(rig.dev->default_queue(), m);
  EXPECT_EQ(d.calls.load(), 0);
  rig.finish();
}

// C2: a sequential or parallel queue without an I/O handler is refused with
// wdf_no_callback, also when it has only stop/resume/canceled-on-queue handlers.
TEST(Conformance, C2_NonManualQueueWithoutIoHandlerIsWdfNoCallback) {
  Rig rig;
  Driver d;
  for (DispatchType t : {DispatchType::sequential, DispatchType::parallel}) {
    QueueConfig bare{.dispatch = t};
    bare.context = &d;
    auto q1 = rig.dev->create_queue(bare);
    ASSERT_FALSE(q1.has_value());
    EXPECT_EQ(q1.error().status, Status::wdf_no_callback);

    QueueConfig only_power{.dispatch = t, .default_queue = true};
    only_power.on_stop = &h_stop;
    only_power.on_resume = &h_resume;
    only_power.on_canceled_on_queue = &h_canceled_on_queue;
    only_power.context = &d;
    auto q2 = rig.dev->create_queue(only_power);
    ASSERT_FALSE(q2.has_value());
    EXPECT_EQ(q2.error().status, Status::wdf_no_callback);
  }
  EXPECT_EQ(rig.dev->default_queue(), nullptr);
  // With one I/O handler both are accepted.
  QueueConfig ok_seq{.dispatch = DispatchType::sequential};
  ok_seq.on_write = &h_write;
  ok_seq.context = &d;
  EXPECT_TRUE(rig.dev->create_queue(ok_seq).has_value());
  QueueConfig ok_par{.dispatch = DispatchType::parallel};
  ok_par.on_default = &h_default;
  ok_par.context = &d;
  EXPECT_TRUE(rig.dev->create_queue(ok_par).has_value());
  rig.finish();
}

// C3: a new queue of a device in D0 reports Accept|Dispatch|NoRequests|
// DriverNoRequests with counts (0, 0): for every dispatch type, created before
// or after the device starts.
TEST(Conformance, C3_NewQueueIsAcceptDispatchIdle) {
  Rig rig;
  Driver d;
  ASSERT_EQ(rig.dev->power_state(), PowerState::d0);
  Queue* seq = rig.queue(io_cfg(DispatchType::sequential, "S", &d, true));
  Queue* par = rig.queue(io_cfg(DispatchType::parallel, "P", &d));
  Queue* man = rig.queue(manual_cfg("M"));
  ASSERT_TRUE(seq && par && man);
  for (Queue* q : {seq, par, man}) EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));

  ASSERT_EQ(rig.dev->start(), Status::success);
  ASSERT_EQ(rig.dev->power_state(), PowerState::d0);
  Queue* late_par = rig.queue(io_cfg(DispatchType::parallel, "P2", &d));
  Queue* late_man = rig.queue(manual_cfg("M2"));
  ASSERT_TRUE(late_par && late_man);
  for (Queue* q : {seq, par, man, late_par, late_man}) EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  EXPECT_EQ(d.calls.load(), 0);
  rig.finish();
}

// C4: a type already routed to a non-default queue cannot be routed to another
// one (wdf_busy); routing any type to the default queue is refused with
// invalid_device_request (that check comes before the busy check). Failed
// calls change nothing: arrivals still follow the first routing.
TEST(Conformance, C4_RoutingTwiceIsBusyAndDefaultQueueIsRefused) {
  Rig rig;
  Driver d1, d2, dd;
  Queue* q1 = rig.queue(io_cfg(DispatchType::sequential, "Q1", &d1));
  Queue* q2 = rig.queue(io_cfg(DispatchType::sequential, "Q2", &d2));
  QueueConfig def{.dispatch = DispatchType::sequential, .default_queue = true};
  def.on_default = &h_default;
  def.context = &dd;
  def.name = "Def";
  Queue* dq = rig.queue(def);
  ASSERT_TRUE(q1 && q2 && dq);

  EXPECT_EQ(rig.dev->configure_request_dispatching(*q1, RequestType::read), Status::success);
  EXPECT_EQ(rig.dev->configure_request_dispatching(*q2, RequestType::read), Status::wdf_busy);
  EXPECT_EQ(rig.dev->configure_request_dispatching(*dq, RequestType::read), Status::invalid_device_request);
  EXPECT_EQ(rig.dev->configure_request_dispatching(*dq, RequestType::write), Status::invalid_device_request);

  ASSERT_EQ(rig.dev->start(), Status::success);
  TrackedPacket& r1 = rig.submit(RequestType::read, 1);
  TrackedPacket& w2 = rig.submit(RequestType::write, 2);
  EXPECT_EQ(rig.log.take(), (Log{"Q1.read:1", "Def.default:2"}));
  EXPECT_TRUE(StateIs(*q1, kA | kD | kNR, 0, 1));
  EXPECT_TRUE(StateIs(*q2, kA | kD | kNR | kDNR, 0, 0));
  EXPECT_TRUE(StateIs(*dq, kA | kD | kNR, 0, 1));
  EXPECT_EQ(d2.calls.load(), 0);

  EXPECT_EQ(d1.take(1).complete(Status::success, 10), Status::success);
  EXPECT_EQ(dd.take(2).complete(Status::success, 20), Status::success);
  EXPECT_TRUE(CompletedWith(r1, Status::success, 10));
  EXPECT_TRUE(CompletedWith(w2, Status::success, 20));
  rig.finish();
}

// C5: routing Write to a parallel queue that has only EvtIoRead is refused
// (invalid_device_request) and routes nothing; a manual queue accepts every
// routable type (as does a queue with EvtIoDefault).
TEST(Conformance, C5_RoutingNeedsHandlerButManualQueueTakesAnyType) {
  Rig rig;
  Driver dp, dx;
  QueueConfig pc{.dispatch = DispatchType::parallel};
  pc.on_read = &h_read;
  pc.context = &dp;
  pc.name = "P";
  Queue* p = rig.queue(pc);
  Queue* m = rig.queue(manual_cfg("M"));
  QueueConfig xc{.dispatch = DispatchType::sequential};
  xc.on_default = &h_default;
  xc.context = &dx;
  xc.name = "X";
  Queue* x = rig.queue(xc);
  ASSERT_TRUE(p && m && x);

  EXPECT_EQ(rig.dev->configure_request_dispatching(*p, RequestType::write), Status::invalid_device_request);
  EXPECT_EQ(rig.dev->configure_request_dispatching(*p, RequestType::device_control),
            Status::invalid_device_request);
  EXPECT_EQ(rig.dev->configure_request_dispatching(*p, RequestType::read), Status::success);
  // Write was not taken by the failed call: the manual queue gets it.
  for (RequestType t : {RequestType::create, RequestType::write, RequestType::device_control})
    EXPECT_EQ(rig.dev->configure_request_dispatching(*m, t), Status::success) << to_string(t);
  EXPECT_EQ(rig.dev->configure_request_dispatching(*x, RequestType::internal_device_control), Status::success);

  ASSERT_EQ(rig.dev->start(), Status::success);
  TrackedPacket& w1 = rig.submit(RequestType::write, 1);
  TrackedPacket& r2 = rig.submit(RequestType::read, 2);
  TrackedPacket& c3 = rig.submit(RequestType::create, 3, 0);
  TrackedPacket& i4 = rig.submit(RequestType::internal_device_control, 4);
  EXPECT_EQ(rig.log.take(), (Log{"P.read:2", "X.default:4"}));
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR, 2, 0));
  EXPECT_TRUE(StateIs(*p, kA | kD | kNR, 0, 1));

  Request rw = retrieve(*m);
  EXPECT_EQ(rw.type(), RequestType::write);
  EXPECT_EQ(rw.offset(), 1u);
  Request rc = retrieve(*m);
  EXPECT_EQ(rc.type(), RequestType::create);
  EXPECT_EQ(rw.complete(Status::success, 1), Status::success);
  EXPECT_EQ(rc.complete(Status::success, 3), Status::success);
  EXPECT_EQ(dp.take(2).complete(Status::success, 2), Status::success);
  EXPECT_EQ(dx.take(4).complete(Status::success, 4), Status::success);
  EXPECT_TRUE(CompletedWith(w1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(r2, Status::success, 2));
  EXPECT_TRUE(CompletedWith(c3, Status::success, 3));
  EXPECT_TRUE(CompletedWith(i4, Status::success, 4));
  rig.finish();
}

// ===========================================================================
// Delivery

// C6: with EvtIoRead and EvtIoDefault, a Read goes to EvtIoRead and an IOCTL
// (and a Write) to EvtIoDefault; each handler call happens exactly once.
TEST(Conformance, C6_SpecificHandlerWinsOverDefault) {
  Rig rig;
  Driver d;
  d.io = [](Queue&, Request r) { EXPECT_EQ(r.complete(Status::success, r.length()), Status::success); };
  QueueConfig c{.dispatch = DispatchType::parallel, .default_queue = true};
  c.on_read = &h_read;
  c.on_default = &h_default;
  c.context = &d;
  c.name = "Q";
  Queue* q = rig.queue(c);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& r1 = rig.submit(RequestType::read, 1, 100);
  TrackedPacket& i2 = rig.submit(RequestType::device_control, 2, 200, {}, 0x222000);
  TrackedPacket& w3 = rig.submit(RequestType::write, 3, 300);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:1", "done:1", "Q.default:2", "done:2", "Q.default:3", "done:3"}));
  EXPECT_EQ(d.calls.load(), 3);
  EXPECT_TRUE(CompletedWith(r1, Status::success, 100));
  EXPECT_TRUE(CompletedWith(i2, Status::success, 200));
  EXPECT_TRUE(CompletedWith(w3, Status::success, 300));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  rig.finish();
}

// C7: function driver, default queue with only EvtIoRead, a Write arrives ->
// completed invalid_device_request (information 0) and no callback runs.
TEST(Conformance, C7_UnhandledTypeOnDefaultQueueIsInvalidDeviceRequest) {
  Rig rig;  // not a filter
  Driver d;
  QueueConfig c{.dispatch = DispatchType::sequential, .default_queue = true};
  c.on_read = &h_read;
  c.context = &d;
  c.name = "Q";
  Queue* q = rig.queue(c);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& w1 = rig.submit(RequestType::write, 1);
  EXPECT_TRUE(CompletedWith(w1, Status::invalid_device_request, 0));
  EXPECT_EQ(rig.log.take(), (Log{"done:1"}));
  EXPECT_EQ(d.calls.load(), 0);
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));

  // The handler it does have still works.
  TrackedPacket& r2 = rig.submit(RequestType::read, 2);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:2"}));
  EXPECT_EQ(d.take(2).complete(Status::success, 5), Status::success);
  EXPECT_TRUE(CompletedWith(r2, Status::success, 5));
  rig.finish();
}

// C7 (section 2 detail): in a function driver the unhandled request is queued
// like any other and completed invalid_device_request when it would be
// delivered, i.e. in FIFO order behind the request the driver owns.
TEST(Conformance, C7_UnhandledTypeIsCompletedAtDeliveryNotOnArrival) {
  Rig rig;
  Driver d;
  QueueConfig c{.dispatch = DispatchType::sequential, .default_queue = true};
  c.on_read = &h_read;
  c.context = &d;
  c.name = "Q";
  Queue* q = rig.queue(c);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& r1 = rig.submit(RequestType::read, 1);
  TrackedPacket& w2 = rig.submit(RequestType::write, 2);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:1"}));
  EXPECT_TRUE(NotCompleted(w2));
  EXPECT_TRUE(StateIs(*q, kA | kD, 1, 1));

  EXPECT_EQ(d.take(1).complete(Status::success, 1), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:1", "done:2"}));
  EXPECT_TRUE(CompletedWith(r1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(w2, Status::invalid_device_request, 0));
  EXPECT_EQ(d.calls.load(), 1);
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  rig.finish();
}

// C8: AllowZeroLength=FALSE, a 0-byte Read (or Write) is completed success with
// information 0 and no handler call. The rule is for Read and Write only: a
// 0-byte IOCTL is delivered.
TEST(Conformance, C8_ZeroLengthReadCompletedWithoutHandlerWhenNotAllowed) {
  Rig rig;
  Driver d;
  // If a 0-byte request reached the handler it would complete with 99.
  d.io = [](Queue&, Request r) { EXPECT_EQ(r.complete(Status::success, 99), Status::success); };
  Queue* q = rig.queue(io_cfg(DispatchType::parallel, "Q", &d, true));
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& r1 = rig.submit(RequestType::read, 1, 0);
  TrackedPacket& w2 = rig.submit(RequestType::write, 2, 0);
  EXPECT_TRUE(CompletedWith(r1, Status::success, 0));
  EXPECT_TRUE(CompletedWith(w2, Status::success, 0));
  EXPECT_EQ(rig.log.take(), (Log{"done:1", "done:2"}));
  EXPECT_EQ(d.calls.load(), 0);

  TrackedPacket& i3 = rig.submit(RequestType::device_control, 3, 0);
  EXPECT_EQ(rig.log.take(), (Log{"Q.ioctl:3", "done:3"}));
  EXPECT_TRUE(CompletedWith(i3, Status::success, 99));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  rig.finish();
}

// C8: AllowZeroLength=TRUE, a 0-byte Read is delivered to EvtIoRead.
TEST(Conformance, C8_ZeroLengthReadDeliveredWhenAllowed) {
  Rig rig;
  Driver d;
  QueueConfig c = io_cfg(DispatchType::parallel, "Q", &d, true);
  c.allow_zero_length = true;
  Queue* q = rig.queue(c);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& r1 = rig.submit(RequestType::read, 1, 0);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:1"}));
  EXPECT_TRUE(NotCompleted(r1));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR, 0, 1));
  Request r = d.take(1);
  EXPECT_EQ(r.length(), 0u);
  EXPECT_EQ(r.type(), RequestType::read);
  EXPECT_EQ(r.complete(Status::success, 0), Status::success);
  EXPECT_TRUE(CompletedWith(r1, Status::success, 0));
  EXPECT_EQ(d.calls.load(), 1);
  rig.finish();
}

// C9: on a stopped queue a 0-byte Write is not completed on arrival: it stays
// queued until Start, then it is completed success/0 without a handler call.
TEST(Conformance, C9_ZeroLengthWriteOnStoppedQueueWaitsForStart) {
  Rig rig;
  Driver d;
  Queue* q = rig.queue(io_cfg(DispatchType::sequential, "Q", &d, true));
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  ASSERT_EQ(q->stop(), Status::success);

  TrackedPacket& w1 = rig.submit(RequestType::write, 1, 0);
  EXPECT_TRUE(NotCompleted(w1));
  EXPECT_TRUE(rig.log.take().empty());
  EXPECT_TRUE(StateIs(*q, kA | kDNR, 1, 0));

  ASSERT_EQ(q->start(), Status::success);
  EXPECT_TRUE(CompletedWith(w1, Status::success, 0));
  EXPECT_EQ(rig.log.take(), (Log{"done:1"}));
  EXPECT_EQ(d.calls.load(), 0);
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  rig.finish();
}

// C9 (section 2 detail): the 0-byte request keeps its FIFO position: after
// Start it is completed only when it reaches the head, behind an owned request.
TEST(Conformance, C9_ZeroLengthWriteKeepsFifoPosition) {
  Rig rig;
  Driver d;
  Queue* q = rig.queue(io_cfg(DispatchType::sequential, "Q", &d, true));
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  ASSERT_EQ(q->stop(), Status::success);

  TrackedPacket& w1 = rig.submit(RequestType::write, 1);
  TrackedPacket& z2 = rig.submit(RequestType::write, 2, 0);
  TrackedPacket& w3 = rig.submit(RequestType::write, 3);
  EXPECT_TRUE(StateIs(*q, kA | kDNR, 3, 0));

  ASSERT_EQ(q->start(), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"Q.write:1"}));
  EXPECT_TRUE(NotCompleted(z2));
  EXPECT_TRUE(StateIs(*q, kA | kD, 2, 1));

  EXPECT_EQ(d.take(1).complete(Status::success, 1), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:1", "done:2", "Q.write:3"}));
  EXPECT_TRUE(CompletedWith(z2, Status::success, 0));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR, 0, 1));
  EXPECT_EQ(d.take(3).complete(Status::success, 3), Status::success);
  EXPECT_TRUE(CompletedWith(w1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(w3, Status::success, 3));
  EXPECT_EQ(d.calls.load(), 2);
  rig.finish();
}

// C10: a sequential queue owning R1 queues R2 (and R3); R2 is delivered only
// after R1 completes, R3 only after R2: FIFO, one at a time.
TEST(Conformance, C10_SequentialQueuesUntilOwnedCompletes) {
  Rig rig;
  Driver d;
  Queue* q = rig.queue(io_cfg(DispatchType::sequential, "Q", &d, true));
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:1"}));
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  TrackedPacket& p3 = rig.submit(RequestType::read, 3);
  EXPECT_TRUE(rig.log.take().empty());
  EXPECT_TRUE(StateIs(*q, kA | kD, 2, 1));

  EXPECT_EQ(d.take(1).complete(Status::success, 1), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:1", "Q.read:2"}));
  EXPECT_TRUE(StateIs(*q, kA | kD, 1, 1));

  EXPECT_EQ(d.take(2).complete(Status::success, 2), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:2", "Q.read:3"}));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR, 0, 1));

  EXPECT_EQ(d.take(3).complete(Status::success, 3), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:3"}));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  EXPECT_EQ(d.calls.load(), 3);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  EXPECT_TRUE(CompletedWith(p3, Status::success, 3));
  rig.finish();
}

// Handler action for C11: log, complete inline, log again.
void complete_inline_logged(Queue&, Request r) {
  const std::string id = id_of(r);
  log_event("complete:" + id);
  EXPECT_EQ(r.complete(Status::success, r.length()), Status::success);
  log_event("return:" + id);
}

// C11: a sequential handler completes R1 inline while R2 is queued: R2's
// handler does not run nested inside R1's (depth never exceeds 1); it runs
// after R1's handler returns, on the same thread. (Both queued, then Start.)
TEST(Conformance, C11_InlineCompletionDoesNotNestNextHandler) {
  Rig rig;
  Driver d;
  d.io = &complete_inline_logged;
  Queue* q = rig.queue(io_cfg(DispatchType::sequential, "Q", &d, true));
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  ASSERT_EQ(q->stop(), Status::success);
  TrackedPacket& p1 = rig.submit(RequestType::read, 1, 10);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2, 20);
  EXPECT_TRUE(StateIs(*q, kA | kDNR, 2, 0));

  ASSERT_EQ(q->start(), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:1", "complete:1", "done:1", "return:1", "Q.read:2", "complete:2",
                                 "done:2", "return:2"}));
  EXPECT_EQ(d.max_depth.load(), 1);
  EXPECT_EQ(d.calls.load(), 2);
  EXPECT_EQ(d.thread_log(), (std::vector<std::thread::id>{std::this_thread::get_id(), std::this_thread::get_id()}));
  EXPECT_TRUE(CompletedWith(p1, Status::success, 10));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 20));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  rig.finish();
}

// C11 with R2 arriving while R1's handler runs: the handler submits R2 (it is
// queued, the slot is taken), then completes R1 inline. R2 is delivered after
// the handler returns, not nested, on the same thread, before the submit of R1
// returns.
TEST(Conformance, C11_ArrivalDuringHandlerThenInlineCompletionDoesNotNest) {
  Rig rig;
  Driver d;
  static Rig* s_rig = nullptr;
  s_rig = &rig;
  d.io = [](Queue& q, Request r) {
    if (r.offset() == 1) {
      s_rig->submit(RequestType::read, 2, 20);
      EXPECT_TRUE(StateIs(q, kA | kD, 1, 1)) << "R2 must be queued behind R1";
    }
    complete_inline_logged(q, r);
  };
  Queue* q = rig.queue(io_cfg(DispatchType::sequential, "Q", &d, true));
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1, 10);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:1", "complete:1", "done:1", "return:1", "Q.read:2", "complete:2",
                                 "done:2", "return:2"}));
  EXPECT_EQ(d.max_depth.load(), 1);
  EXPECT_EQ(d.calls.load(), 2);
  EXPECT_EQ(d.thread_log(), (std::vector<std::thread::id>{std::this_thread::get_id(), std::this_thread::get_id()}));
  EXPECT_TRUE(CompletedWith(p1, Status::success, 10));
  ASSERT_EQ(rig.packets.size(), 2u);
  EXPECT_TRUE(CompletedWith(rig.packets[1], Status::success, 20));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  s_rig = nullptr;
  rig.finish();
}

// C12: sequential, R1 owned, R2 queued, no dispatch running; another thread
// completes R1 -> R2's handler runs on that thread, before complete() returns.
TEST(Conformance, C12_CompletionOnAnotherThreadDeliversNextOnThatThread) {
  Rig rig;
  Driver d;
  static std::atomic<bool> s_complete_returned{false};
  static std::atomic<bool> s_seen_returned_in_r2{true};
  s_complete_returned = false;
  s_seen_returned_in_r2 = true;
  d.io = [](Queue& q, Request r) {
    if (r.offset() == 2) s_seen_returned_in_r2 = s_complete_returned.load();
    drv(q).keep(r);
  };
  Queue* q = rig.queue(io_cfg(DispatchType::sequential, "Q", &d, true));
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:1"}));
  EXPECT_TRUE(StateIs(*q, kA | kD, 1, 1));

  const Request r1 = d.take(1);
  Status st = Status::pending;
  std::thread::id completer;
  std::thread t([&] {
    completer = std::this_thread::get_id();
    st = r1.complete(Status::success, 1);
    s_complete_returned = true;
  });
  t.join();
  EXPECT_EQ(st, Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:1", "Q.read:2"}));
  EXPECT_FALSE(s_seen_returned_in_r2.load()) << "R2's handler ran after complete() returned";
  const auto threads = d.thread_log();
  ASSERT_EQ(threads.size(), 2u);
  EXPECT_EQ(threads[0], std::this_thread::get_id());
  EXPECT_EQ(threads[1], completer) << "R2 was not delivered on the completing thread";
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR, 0, 1));

  EXPECT_EQ(d.take(2).complete(Status::success, 2), Status::success);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  EXPECT_EQ(d.calls.load(), 2);
  rig.finish();
}

// C13: a sequential handler forwards R1 successfully: the slot is free, and R2
// is delivered after the handler returns (not nested in it).
TEST(Conformance, C13_ForwardFromSequentialHandlerFreesSlotAfterReturn) {
  Rig rig;
  Driver d;
  static Queue* s_target = nullptr;
  d.io = [](Queue& q, Request r) {
    if (r.offset() == 1) {
      log_event(std::string("forward:1:") + std::string(to_string(r.forward_to_queue(*s_target))));
      log_event("return:1");
    } else {
      drv(q).keep(r);
    }
  };
  Queue* s = rig.queue(io_cfg(DispatchType::sequential, "S", &d, true));
  Queue* m = rig.queue(manual_cfg("M"));
  ASSERT_TRUE(s && m);
  s_target = m;
  ASSERT_EQ(rig.dev->start(), Status::success);
  ASSERT_EQ(s->stop(), Status::success);
  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);

  ASSERT_EQ(s->start(), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"S.read:1", "forward:1:success", "return:1", "S.read:2"}));
  EXPECT_EQ(d.max_depth.load(), 1);
  EXPECT_EQ(d.calls.load(), 2);
  EXPECT_TRUE(StateIs(*s, kA | kD | kNR, 0, 1));
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR, 1, 0));
  EXPECT_TRUE(NotCompleted(p1));

  Request r1 = retrieve(*m);
  EXPECT_EQ(r1.offset(), 1u);
  EXPECT_EQ(r1.queue(), m);
  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);
  EXPECT_EQ(d.take(2).complete(Status::success, 2), Status::success);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  s_target = nullptr;
  rig.finish();
}

// C14: a parallel queue with limit 2 and 3 arrivals delivers 2 and queues 1;
// one completion delivers the third.
TEST(Conformance, C14_ParallelLimitHoldsThirdUntilCompletion) {
  Rig rig;
  Driver d;
  QueueConfig c = io_cfg(DispatchType::parallel, "P", &d, true);
  c.max_presented = 2;
  Queue* q = rig.queue(c);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  TrackedPacket& p3 = rig.submit(RequestType::read, 3);
  EXPECT_EQ(rig.log.take(), (Log{"P.read:1", "P.read:2"}));
  EXPECT_EQ(d.calls.load(), 2);
  EXPECT_TRUE(StateIs(*q, kA | kD, 1, 2));
  EXPECT_TRUE(NotCompleted(p3));

  EXPECT_EQ(d.take(2).complete(Status::success, 2), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:2", "P.read:3"}));
  EXPECT_EQ(d.calls.load(), 3);
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR, 0, 2));

  EXPECT_EQ(d.take(1).complete(Status::success, 1), Status::success);
  EXPECT_EQ(d.take(3).complete(Status::success, 3), Status::success);
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR | kDNR, 0, 0));
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  EXPECT_TRUE(CompletedWith(p3, Status::success, 3));
  rig.finish();
}

// C14 (section 2, the creation side of the limit; ioq decision): the limit is
// for parallel queues only and must not be 0 (invalid_parameter); unset means
// unlimited.
TEST(Conformance, C14_PresentedLimitIsParallelOnlyAndNonZero) {
  Rig rig;
  Driver d;
  QueueConfig zero = io_cfg(DispatchType::parallel, "P0", &d);
  zero.max_presented = 0;
  auto q0 = rig.dev->create_queue(zero);
  ASSERT_FALSE(q0.has_value());
  EXPECT_EQ(q0.error().status, Status::invalid_parameter);

  QueueConfig seq = io_cfg(DispatchType::sequential, "S", &d);
  seq.max_presented = 1;
  auto qs = rig.dev->create_queue(seq);
  ASSERT_FALSE(qs.has_value());
  EXPECT_EQ(qs.error().status, Status::invalid_parameter);

  QueueConfig man = manual_cfg("M");
  man.max_presented = 1;
  auto qm = rig.dev->create_queue(man);
  ASSERT_FALSE(qm.has_value());
  EXPECT_EQ(qm.error().status, Status::invalid_parameter);

  // Unset: unlimited. Ten arrivals, ten deliveries, nothing queued.
  Queue* p = rig.queue(io_cfg(DispatchType::parallel, "P", &d, true));
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  for (std::uint64_t i = 1; i <= 10; ++i) rig.submit(RequestType::read, i);
  EXPECT_EQ(d.calls.load(), 10);
  EXPECT_TRUE(StateIs(*p, kA | kD | kNR, 0, 10));
  for (std::uint64_t i = 1; i <= 10; ++i) EXPECT_EQ(d.take(i).complete(Status::success), Status::success);
  rig.finish();
}

// ===========================================================================
// Retrieval

// C15: Retrieve on an empty manual queue returns no_more_entries and a null
// output (UMDF 1's ERROR_NO_MORE_ITEMS has no counterpart); counts unchanged.
TEST(Conformance, C15_RetrieveOnEmptyManualQueueReturnsNoMoreEntries) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  Request out{0x1234};  // a non-null value the call must overwrite
  EXPECT_EQ(m->retrieve_next_request(out), Status::no_more_entries);
  EXPECT_FALSE(out);
  Request out2{0x1234};
  EXPECT_EQ(m->retrieve_next_request_by_file_object(rig.dev->open_file(), out2), Status::no_more_entries);
  EXPECT_FALSE(out2);
  EXPECT_TRUE(StateIs(*m, kA | kD | kNR | kDNR, 0, 0));

  // Not empty any more, then empty again after the retrieve.
  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  Request r1 = retrieve(*m);
  EXPECT_EQ(r1.offset(), 1u);
  Request out3{0x1234};
  EXPECT_EQ(m->retrieve_next_request(out3), Status::no_more_entries);
  EXPECT_FALSE(out3);
  EXPECT_TRUE(StateIs(*m, kA | kD | kNR, 0, 1));
  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  rig.finish();
}

// C16: Retrieve on a parallel queue returns invalid_device_state (null
// output), whether or not it holds requests; nothing changes.
TEST(Conformance, C16_RetrieveOnParallelQueueIsInvalidDeviceState) {
  Rig rig;
  Driver d;
  QueueConfig c = io_cfg(DispatchType::parallel, "P", &d, true);
  c.max_presented = 1;
  Queue* p = rig.queue(c);
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);

  Request out{0x1234};
  EXPECT_EQ(p->retrieve_next_request(out), Status::invalid_device_state);
  EXPECT_FALSE(out);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  EXPECT_TRUE(StateIs(*p, kA | kD, 1, 1));
  Request out2{0x1234};
  EXPECT_EQ(p->retrieve_next_request(out2), Status::invalid_device_state);
  EXPECT_FALSE(out2);
  Request out3{0x1234};
  EXPECT_EQ(p->retrieve_next_request_by_file_object(FileHandle{}, out3), Status::invalid_device_state);
  EXPECT_FALSE(out3);
  EXPECT_TRUE(StateIs(*p, kA | kD, 1, 1));
  EXPECT_TRUE(NotCompleted(p2));

  // The parallel check comes first: a stopped parallel queue says the same.
  ASSERT_EQ(p->stop(), Status::success);
  Request out4{0x1234};
  EXPECT_EQ(p->retrieve_next_request(out4), Status::invalid_device_state);
  EXPECT_FALSE(out4);
  EXPECT_TRUE(StateIs(*p, kA, 1, 1));
  ASSERT_EQ(p->start(), Status::success);
  EXPECT_TRUE(NotCompleted(p2));

  EXPECT_EQ(d.take(1).complete(Status::success, 1), Status::success);
  EXPECT_EQ(d.take(2).complete(Status::success, 2), Status::success);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  EXPECT_EQ(rig.log.take(), (Log{"P.read:1", "done:1", "P.read:2", "done:2"}));
  rig.finish();
}

// C17: a stopped manual queue with 2 queued: Retrieve (every form) returns
// wdf_paused with a null output, and both requests stay queued.
TEST(Conformance, C17_RetrieveOnStoppedManualQueueIsPaused) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  const FileHandle f = rig.dev->open_file();
  TrackedPacket& p1 = rig.submit(RequestType::read, 1, 512, f);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2, 512, f);
  ASSERT_EQ(m->stop(), Status::success);
  EXPECT_TRUE(StateIs(*m, kA | kDNR, 2, 0));

  Request out{0x1234};
  EXPECT_EQ(m->retrieve_next_request(out), Status::wdf_paused);
  EXPECT_FALSE(out);
  Request out2{0x1234};
  EXPECT_EQ(m->retrieve_next_request_by_file_object(f, out2), Status::wdf_paused);
  EXPECT_FALSE(out2);
  Request tag;
  ASSERT_EQ(m->find_request(Request{}, FileHandle{}, tag), Status::success);
  Request out3{0x1234};
  EXPECT_EQ(m->retrieve_found_request(tag, out3), Status::wdf_paused);
  EXPECT_FALSE(out3);
  EXPECT_TRUE(StateIs(*m, kA | kDNR, 2, 0));
  EXPECT_TRUE(NotCompleted(p1));
  EXPECT_TRUE(NotCompleted(p2));

  ASSERT_EQ(m->start(), Status::success);
  Request r1 = retrieve(*m);
  Request r2 = retrieve(*m);
  EXPECT_EQ(r1.offset(), 1u);
  EXPECT_EQ(r2.offset(), 2u);
  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);
  EXPECT_EQ(r2.complete(Status::success, 2), Status::success);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));

  // Paused is checked before emptiness: stopped and empty is wdf_paused too.
  ASSERT_EQ(m->stop(), Status::success);
  Request out4{0x1234};
  EXPECT_EQ(m->retrieve_next_request(out4), Status::wdf_paused);
  EXPECT_FALSE(out4);
  EXPECT_TRUE(StateIs(*m, kA | kNR | kDNR, 0, 0));
  rig.finish();
}

// C18: a power-managed manual queue with the device in Dx: Retrieve returns
// wdf_paused and get_state has PnpHeld (the request stays queued). A
// non-power-managed manual queue of the same device is not held. Back in D0
// the request can be retrieved.
TEST(Conformance, C18_RetrieveInDxIsPausedAndPnpHeld) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  QueueConfig nc = manual_cfg("N");
  nc.power_managed = TriState::no;
  Queue* n = rig.queue(nc);
  Queue* e = rig.queue(manual_cfg("E"));  // power-managed, stays empty
  ASSERT_TRUE(m && n && e);
  ASSERT_EQ(rig.dev->configure_request_dispatching(*n, RequestType::write), Status::success);
  ASSERT_EQ(rig.dev->start(), Status::success);
  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::write, 2);

  ASSERT_EQ(rig.dev->suspend(), Status::success);
  ASSERT_EQ(rig.dev->power_state(), PowerState::dx);
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR | kPH, 1, 0));
  Request out{0x1234};
  EXPECT_EQ(m->retrieve_next_request(out), Status::wdf_paused);
  EXPECT_FALSE(out);
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR | kPH, 1, 0));
  EXPECT_TRUE(NotCompleted(p1));
  // An empty power-managed manual queue in Dx is paused as well.
  EXPECT_TRUE(StateIs(*e, kA | kD | kNR | kDNR | kPH, 0, 0));
  Request out_e{0x1234};
  EXPECT_EQ(e->retrieve_next_request(out_e), Status::wdf_paused);
  EXPECT_FALSE(out_e);

  EXPECT_TRUE(StateIs(*n, kA | kD | kDNR, 1, 0));
  Request rn = retrieve(*n);
  EXPECT_EQ(rn.offset(), 2u);
  EXPECT_EQ(rn.complete(Status::success, 2), Status::success);

  ASSERT_EQ(rig.dev->resume(), Status::success);
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR, 1, 0));
  Request r1 = retrieve(*m);
  EXPECT_EQ(r1.offset(), 1u);
  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  rig.finish();
}

// C19: a drained manual queue with 2 queued still hands both out through
// Retrieve; the drain callback fires once, after both are completed.
TEST(Conformance, C19_DrainedManualQueueStillRetrievesAndCallbackFiresAfterCompletion) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);

  Notify drained{"drained"};
  ASSERT_EQ(m->drain(&on_notify, &drained), Status::success);
  EXPECT_EQ(drained.fired.load(), 0);
  EXPECT_TRUE(StateIs(*m, kD | kDNR, 2, 0));

  Request r1 = retrieve(*m);
  Request r2 = retrieve(*m);
  EXPECT_EQ(r1.offset(), 1u);
  EXPECT_EQ(r2.offset(), 2u);
  Request none{0x1234};
  EXPECT_EQ(m->retrieve_next_request(none), Status::no_more_entries);
  EXPECT_FALSE(none);
  EXPECT_EQ(drained.fired.load(), 0);
  EXPECT_TRUE(StateIs(*m, kD | kNR, 0, 2));

  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);
  EXPECT_EQ(drained.fired.load(), 0);
  EXPECT_EQ(r2.complete(Status::success, 2), Status::success);
  EXPECT_EQ(drained.fired.load(), 1);
  EXPECT_EQ(rig.log.take(), (Log{"done:1", "done:2", "M.drained"}));
  EXPECT_TRUE(StateIs(*m, kD | kNR | kDNR, 0, 0));  // DRAINED
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  rig.finish();
}

// C20: queue [A(F1), B(F2), C(F1)], RetrieveByFileObject(F2) returns B; A and
// C stay queued in their order.
TEST(Conformance, C20_RetrieveByFileObjectTakesMatchAndKeepsOrder) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  const FileHandle f1 = rig.dev->open_file();
  const FileHandle f2 = rig.dev->open_file();
  ASSERT_NE(f1, f2);
  TrackedPacket& a = rig.submit(RequestType::read, 1, 512, f1);
  TrackedPacket& b = rig.submit(RequestType::read, 2, 512, f2);
  TrackedPacket& c = rig.submit(RequestType::read, 3, 512, f1);

  Request rb;
  ASSERT_EQ(m->retrieve_next_request_by_file_object(f2, rb), Status::success);
  EXPECT_EQ(rb.offset(), 2u);
  EXPECT_EQ(rb.file(), f2);
  EXPECT_TRUE(StateIs(*m, kA | kD, 2, 1));
  Request none{0x1234};
  EXPECT_EQ(m->retrieve_next_request_by_file_object(f2, none), Status::no_more_entries);
  EXPECT_FALSE(none);

  Request ra = retrieve(*m);
  Request rc = retrieve(*m);
  EXPECT_EQ(ra.offset(), 1u);
  EXPECT_EQ(rc.offset(), 3u);
  EXPECT_TRUE(StateIs(*m, kA | kD | kNR, 0, 3));
  EXPECT_EQ(ra.complete(Status::success, 1), Status::success);
  EXPECT_EQ(rb.complete(Status::success, 2), Status::success);
  EXPECT_EQ(rc.complete(Status::success, 3), Status::success);
  EXPECT_TRUE(CompletedWith(a, Status::success, 1));
  EXPECT_TRUE(CompletedWith(b, Status::success, 2));
  EXPECT_TRUE(CompletedWith(c, Status::success, 3));
  rig.finish();
}

// C21: on a sequential queue the driver retrieves a second request while
// owning the first: automatic delivery stays blocked until both complete.
TEST(Conformance, C21_RetrievedRequestBlocksSequentialDelivery) {
  Rig rig;
  Driver d;
  Queue* q = rig.queue(io_cfg(DispatchType::sequential, "Q", &d, true));
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  TrackedPacket& p3 = rig.submit(RequestType::read, 3);
  EXPECT_EQ(rig.log.take(), (Log{"Q.read:1"}));

  Request r2 = retrieve(*q);
  EXPECT_EQ(r2.offset(), 2u);
  EXPECT_TRUE(StateIs(*q, kA | kD, 1, 2));

  EXPECT_EQ(d.take(1).complete(Status::success, 1), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:1"}));
  EXPECT_TRUE(StateIs(*q, kA | kD, 1, 1));
  EXPECT_TRUE(NotCompleted(p3));

  EXPECT_EQ(r2.complete(Status::success, 2), Status::success);
  EXPECT_EQ(rig.log.take(), (Log{"done:2", "Q.read:3"}));
  EXPECT_TRUE(StateIs(*q, kA | kD | kNR, 0, 1));
  EXPECT_EQ(d.take(3).complete(Status::success, 3), Status::success);
  EXPECT_EQ(d.calls.load(), 2);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  EXPECT_TRUE(CompletedWith(p3, Status::success, 3));
  rig.finish();
}

// C22: FindRequest on a sequential or parallel queue is invalid_device_request
// (null output); nothing changes.
TEST(Conformance, C22_FindRequestOnNonManualQueueIsInvalidDeviceRequest) {
  Rig rig;
  Driver ds, dp;
  Queue* s = rig.queue(io_cfg(DispatchType::sequential, "S", &ds, true));
  Queue* p = rig.queue(io_cfg(DispatchType::parallel, "P", &dp));
  ASSERT_TRUE(s && p);
  ASSERT_EQ(rig.dev->configure_request_dispatching(*p, RequestType::write), Status::success);
  ASSERT_EQ(rig.dev->start(), Status::success);
  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);  // queued behind 1
  EXPECT_TRUE(StateIs(*s, kA | kD, 1, 1));

  Request out{0x1234};
  EXPECT_EQ(s->find_request(Request{}, FileHandle{}, out), Status::invalid_device_request);
  EXPECT_FALSE(out);
  Request out2{0x1234};
  EXPECT_EQ(p->find_request(Request{}, FileHandle{}, out2), Status::invalid_device_request);
  EXPECT_FALSE(out2);
  EXPECT_TRUE(StateIs(*s, kA | kD, 1, 1));
  EXPECT_TRUE(StateIs(*p, kA | kD | kNR | kDNR, 0, 0));

  EXPECT_EQ(ds.take(1).complete(Status::success, 1), Status::success);
  EXPECT_EQ(ds.take(2).complete(Status::success, 2), Status::success);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  rig.finish();
}

// C22: on a manual queue FindRequest walks the matches in order and, past the
// last one, returns no_more_entries; the counts never change (found requests
// stay queued and are not owned).
TEST(Conformance, C22_FindRequestIteratesToNoMoreEntriesWithoutChangingCounts) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  const FileHandle f1 = rig.dev->open_file();
  const FileHandle f2 = rig.dev->open_file();
  const FileHandle f3 = rig.dev->open_file();
  TrackedPacket& a = rig.submit(RequestType::read, 1, 512, f1);
  TrackedPacket& b = rig.submit(RequestType::read, 2, 512, f2);
  TrackedPacket& c = rig.submit(RequestType::read, 3, 512, f1);
  auto unchanged = [&] { return StateIs(*m, kA | kD | kDNR, 3, 0); };
  EXPECT_TRUE(unchanged());

  // Matches of F1: A, C, then the end.
  Request t1, t2, t3{0x1234};
  ASSERT_EQ(m->find_request(Request{}, f1, t1), Status::success);
  EXPECT_EQ(t1.offset(), 1u);
  EXPECT_TRUE(unchanged());
  ASSERT_EQ(m->find_request(t1, f1, t2), Status::success);
  EXPECT_EQ(t2.offset(), 3u);
  EXPECT_TRUE(unchanged());
  EXPECT_EQ(m->find_request(t2, f1, t3), Status::no_more_entries);
  EXPECT_FALSE(t3);
  EXPECT_TRUE(unchanged());

  // Any file: A, B, C, then the end.
  std::vector<std::uint64_t> seen;
  Request cur;
  for (int i = 0; i < 10; ++i) {
    Request next;
    const Status st = m->find_request(cur, FileHandle{}, next);
    EXPECT_TRUE(unchanged());
    if (st == Status::no_more_entries) {
      EXPECT_FALSE(next);
      break;
    }
    ASSERT_EQ(st, Status::success);
    seen.push_back(next.offset());
    cur = next;
  }
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1, 2, 3}));

  // No match at all.
  Request t4{0x1234};
  EXPECT_EQ(m->find_request(Request{}, f3, t4), Status::no_more_entries);
  EXPECT_FALSE(t4);
  EXPECT_TRUE(unchanged());
  for (TrackedPacket* p : {&a, &b, &c}) EXPECT_TRUE(NotCompleted(*p));

  // A found tag can be taken; the others stay in order.
  Request tb;
  ASSERT_EQ(m->find_request(t1, f2, tb), Status::success);
  EXPECT_EQ(tb.offset(), 2u);
  Request rb;
  ASSERT_EQ(m->retrieve_found_request(tb, rb), Status::success);
  EXPECT_EQ(rb.offset(), 2u);
  EXPECT_TRUE(StateIs(*m, kA | kD, 2, 1));
  Request ra = retrieve(*m);
  Request rc = retrieve(*m);
  EXPECT_EQ(ra.offset(), 1u);
  EXPECT_EQ(rc.offset(), 3u);
  for (Request r : {ra, rb, rc}) EXPECT_EQ(r.complete(Status::success, r.offset()), Status::success);
  EXPECT_TRUE(CompletedWith(a, Status::success, 1));
  EXPECT_TRUE(CompletedWith(b, Status::success, 2));
  EXPECT_TRUE(CompletedWith(c, Status::success, 3));
  rig.finish();
}

// C23: a found tag whose request is then canceled: FindRequest(T) and
// RetrieveFoundRequest(T) return not_found (null output); the canceled
// request completed cancelled exactly once and the rest is untouched.
TEST(Conformance, C23_FoundTagCanceledIsNotFound) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  TrackedPacket& a = rig.submit(RequestType::read, 1);
  TrackedPacket& b = rig.submit(RequestType::read, 2);

  Request tag;
  ASSERT_EQ(m->find_request(Request{}, FileHandle{}, tag), Status::success);
  ASSERT_EQ(tag.offset(), 1u);
  ASSERT_EQ(rig.dev->cancel(a.packet), Status::success);
  EXPECT_TRUE(CompletedWith(a, Status::cancelled, 0));
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR, 1, 0));

  Request out{0x1234};
  EXPECT_EQ(m->find_request(tag, FileHandle{}, out), Status::not_found);
  EXPECT_FALSE(out);
  Request out2{0x1234};
  EXPECT_EQ(m->retrieve_found_request(tag, out2), Status::not_found);
  EXPECT_FALSE(out2);
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR, 1, 0));

  // Rescan from the start finds B.
  Request tb;
  ASSERT_EQ(m->find_request(Request{}, FileHandle{}, tb), Status::success);
  EXPECT_EQ(tb.offset(), 2u);
  Request rb;
  ASSERT_EQ(m->retrieve_found_request(tb, rb), Status::success);
  EXPECT_EQ(rb.complete(Status::success, 2), Status::success);
  EXPECT_TRUE(CompletedWith(b, Status::success, 2));
  EXPECT_EQ(rig.log.take(), (Log{"done:1", "done:2"}));
  rig.finish();
}

// ===========================================================================
// ReadyNotify

// C24: ReadyNotify is invalid_device_request on a non-manual queue, for a
// second registration, and for unregistering (null) while the queue is started
// or when nothing is registered. The failed calls change nothing: the first
// registration stays in force; unregistering after Stop works.
TEST(Conformance, C24_ReadyNotifyMisuseIsInvalidDeviceRequest) {
  Rig rig;
  Driver d;
  Queue* s = rig.queue(io_cfg(DispatchType::sequential, "S", &d));
  Queue* p = rig.queue(io_cfg(DispatchType::parallel, "P", &d));
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_TRUE(s && p && m);
  ASSERT_EQ(rig.dev->start(), Status::success);
  Notify n1{"ready1"}, n2{"ready2"};

  EXPECT_EQ(s->ready_notify(&on_notify, &n1), Status::invalid_device_request);
  EXPECT_EQ(p->ready_notify(&on_notify, &n1), Status::invalid_device_request);
  EXPECT_EQ(m->ready_notify(nullptr), Status::invalid_device_request);  // nothing registered
  EXPECT_EQ(m->ready_notify(&on_notify, &n1), Status::success);
  EXPECT_EQ(m->ready_notify(&on_notify, &n2), Status::invalid_device_request);
  EXPECT_EQ(m->ready_notify(nullptr), Status::invalid_device_request);  // still started

  // The first registration is the one in force.
  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  EXPECT_EQ(n1.fired.load(), 1);
  EXPECT_EQ(n2.fired.load(), 0);
  Request r1 = retrieve(*m);
  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);

  // Stopped: unregistering works once.
  ASSERT_EQ(m->stop(), Status::success);
  EXPECT_EQ(m->ready_notify(nullptr), Status::success);
  EXPECT_EQ(m->ready_notify(nullptr), Status::invalid_device_request);
  ASSERT_EQ(m->start(), Status::success);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  EXPECT_EQ(n1.fired.load(), 1);
  Request r2 = retrieve(*m);
  EXPECT_EQ(r2.complete(Status::success, 2), Status::success);
  EXPECT_EQ(d.calls.load(), 0);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  rig.finish();
}

// C25: an empty started manual queue, 3 arrivals, no retrieval: the callback
// fires once.
TEST(Conformance, C25_ReadyNotifyFiresOncePerTransitionFromEmpty) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  Notify n{"ready"};
  ASSERT_EQ(m->ready_notify(&on_notify, &n), Status::success);
  EXPECT_EQ(n.fired.load(), 0);

  rig.submit(RequestType::read, 1);
  rig.submit(RequestType::read, 2);
  rig.submit(RequestType::read, 3);
  EXPECT_EQ(n.fired.load(), 1);
  EXPECT_EQ(rig.log.take(), (Log{"M.ready"}));
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR, 3, 0));

  for (std::uint64_t i = 1; i <= 3; ++i) {
    Request r = retrieve(*m);
    EXPECT_EQ(r.offset(), i);
    EXPECT_EQ(r.complete(Status::success, i), Status::success);
  }
  EXPECT_EQ(n.fired.load(), 1);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_TRUE(CompletedWith(rig.packets[i], Status::success, i + 1));
  rig.finish();
}

// C26: registering while a request is queued makes the callback fire (here,
// with no other thread, before the registration call returns); the callback
// can retrieve and complete the request.
TEST(Conformance, C26_RegistrationWithQueuedRequestFires) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR, 1, 0));

  Notify n{"ready"};
  n.fn = [](Queue& q) {
    // Drivers loop until no_more_entries.
    for (;;) {
      Request r;
      const Status st = q.retrieve_next_request(r);
      if (st == Status::no_more_entries) break;
      ASSERT_EQ(st, Status::success);
      EXPECT_EQ(r.complete(Status::success, 5), Status::success);
    }
  };
  ASSERT_EQ(m->ready_notify(&on_notify, &n), Status::success);
  EXPECT_EQ(n.fired.load(), 1);
  EXPECT_EQ(rig.log.take(), (Log{"M.ready", "done:1"}));
  EXPECT_TRUE(CompletedWith(p1, Status::success, 5));
  EXPECT_TRUE(StateIs(*m, kA | kD | kNR | kDNR, 0, 0));
  rig.finish();
}

// C27: a stopped manual queue: arrivals do not fire the callback; Start fires
// it once.
TEST(Conformance, C27_ReadyNotifyWaitsForStartThenFiresOnce) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  Notify n{"ready"};
  ASSERT_EQ(m->ready_notify(&on_notify, &n), Status::success);
  ASSERT_EQ(m->stop(), Status::success);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  EXPECT_EQ(n.fired.load(), 0);
  EXPECT_TRUE(StateIs(*m, kA | kDNR, 2, 0));

  ASSERT_EQ(m->start(), Status::success);
  EXPECT_EQ(n.fired.load(), 1);
  EXPECT_EQ(rig.log.take(), (Log{"M.ready"}));

  Request r1 = retrieve(*m);
  Request r2 = retrieve(*m);
  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);
  EXPECT_EQ(r2.complete(Status::success, 2), Status::success);
  EXPECT_EQ(n.fired.load(), 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  rig.finish();
}

// C27 (section 3, Start re-arms ReadyNotify when the queue is non-empty): the
// notification for the first arrival was already delivered and the request is
// still queued; Stop, another arrival (no callback, the queue was not empty),
// then Start fires the callback once more.
TEST(Conformance, C27_StartRearmsReadyNotifyForNonEmptyQueue) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  Notify n{"ready"};
  ASSERT_EQ(m->ready_notify(&on_notify, &n), Status::success);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  EXPECT_EQ(n.fired.load(), 1);
  ASSERT_EQ(m->stop(), Status::success);
  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  EXPECT_EQ(n.fired.load(), 1);
  EXPECT_TRUE(StateIs(*m, kA | kDNR, 2, 0));

  ASSERT_EQ(m->start(), Status::success);
  EXPECT_EQ(n.fired.load(), 2);
  EXPECT_EQ(rig.log.take(), (Log{"M.ready", "M.ready"}));

  Request r1 = retrieve(*m);
  Request r2 = retrieve(*m);
  EXPECT_EQ(r1.offset(), 1u);
  EXPECT_EQ(r2.offset(), 2u);
  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);
  EXPECT_EQ(r2.complete(Status::success, 2), Status::success);
  EXPECT_EQ(n.fired.load(), 2);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  rig.finish();
}

// C28: the driver still owns an older request; the queue goes empty ->
// non-empty: the callback fires again.
TEST(Conformance, C28_ReadyNotifyFiresWhileDriverOwnsOlderRequest) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  Notify n{"ready"};
  ASSERT_EQ(m->ready_notify(&on_notify, &n), Status::success);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  EXPECT_EQ(n.fired.load(), 1);
  Request r1 = retrieve(*m);
  EXPECT_TRUE(StateIs(*m, kA | kD | kNR, 0, 1));

  TrackedPacket& p2 = rig.submit(RequestType::read, 2);
  EXPECT_EQ(n.fired.load(), 2);
  EXPECT_EQ(rig.log.take(), (Log{"M.ready", "M.ready"}));
  EXPECT_TRUE(StateIs(*m, kA | kD, 1, 1));

  Request r2 = retrieve(*m);
  EXPECT_EQ(r2.offset(), 2u);
  EXPECT_EQ(r1.complete(Status::success, 1), Status::success);
  EXPECT_EQ(r2.complete(Status::success, 2), Status::success);
  EXPECT_EQ(n.fired.load(), 2);
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  EXPECT_TRUE(CompletedWith(p2, Status::success, 2));
  rig.finish();
}

// C29: a requeue into an empty manual queue fires the callback; the request is
// queued again (driver-1, queued+1) and the next Retrieve returns it.
TEST(Conformance, C29_RequeueIntoEmptyManualQueueFires) {
  Rig rig;
  Queue* m = rig.queue(manual_cfg("M", true));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(rig.dev->start(), Status::success);
  Notify n{"ready"};
  ASSERT_EQ(m->ready_notify(&on_notify, &n), Status::success);

  TrackedPacket& p1 = rig.submit(RequestType::read, 1);
  EXPECT_EQ(n.fired.load(), 1);
  Request r1 = retrieve(*m);
  EXPECT_TRUE(StateIs(*m, kA | kD | kNR, 0, 1));

  EXPECT_EQ(r1.requeue(), Status::success);
  EXPECT_EQ(n.fired.load(), 2);
  EXPECT_TRUE(StateIs(*m, kA | kD | kDNR, 1, 0));
  EXPECT_TRUE(NotCompleted(p1));

  Request again = retrieve(*m);
  EXPECT_EQ(again, r1);
  EXPECT_EQ(again.complete(Status::success, 1), Status::success);
  EXPECT_EQ(n.fired.load(), 2);
  EXPECT_EQ(rig.log.take(), (Log{"M.ready", "M.ready", "done:1"}));
  EXPECT_TRUE(CompletedWith(p1, Status::success, 1));
  rig.finish();
}

}  // namespace
}  // namespace ioq::test
