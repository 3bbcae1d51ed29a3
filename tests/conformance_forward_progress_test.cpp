// Conformance tests for spec section 8, items C63-C70: forward progress
// (section 6, WdfIoQueueAssignForwardProgressPolicy and the arrival path of
// FxPkgIo::DispatchStep2). The contract is /work/shared/spec/queue-semantics.md.
//
// How the tests work
//   * A request allocation "fails" when the device's slab is exhausted
//     (DeviceConfig::max_requests in flight) or when the device's allocation
//     hook says so; the tests use an ioq::FaultInjector as that hook (declared
//     before the device, so it outlives it) and switch it between never and
//     always. The injector's counters prove the failure path really ran.
//   * Queues run their handlers at dispatch level, so a submit, a completion
//     or a control call made by the test runs the dispatch loop on the test's
//     own thread: what it triggers has happened when the call returns. Only
//     the two C69 concurrency tests use other threads (bounded waits there).
//   * A request is identified by its packet's length (1, 2, 3, ...). The
//     handler records the id and Request::is_reserved() of every delivery and,
//     unless told to complete inline, keeps the request for the test.
//   * "Parked" is ioq's name for a WDF *pended* forward-progress IRP: a packet
//     waiting for a reserved request. It has no request yet (Packet::request
//     stays 0) and is not counted in the queue's queued count (in WDF it sits
//     on the reserved-IRP pending list, not in m_Queue).
//   * Every test ends with every packet completed exactly once, checks
//     free + in_use == total in ForwardProgressStats, and checks the verifier
//     saw no usage error.
#include "queue_harness.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ioq::test {
namespace {

using namespace std::chrono_literals;

// Long enough for a sanitizer build on a loaded machine; only reached on failure.
constexpr auto kHang = 20s;

constexpr std::uint32_t kAcc = kQueueAccepting;
constexpr std::uint32_t kDsp = kQueueDispatching;
constexpr std::uint32_t kNoReq = kQueueNoRequests;
constexpr std::uint32_t kDrvNoReq = kQueueDriverNoRequests;

// ---------------------------------------------------------------------------
// Assertions on the queue's state and its reserved requests

std::string describe(const QueueState& s) {
  std::string f;
  auto add = [&](std::uint32_t bit, const char* name) {
    if (s.flags & bit) f += f.empty() ? name : std::string("|") + name;
  };
  add(kQueueAccepting, "Accept");
  add(kQueueDispatching, "Dispatch");
  add(kQueueNoRequests, "NoRequests");
  add(kQueueDriverNoRequests, "DriverNoRequests");
  add(kQueuePnpHeld, "PnpHeld");
  if (f.empty()) f = "0";
  return "{" + f + ", queued=" + std::to_string(s.queued) + ", driver=" + std::to_string(s.driver_owned) + "}";
}

::testing::AssertionResult StateIs(const Queue& q, std::uint32_t flags, std::uint32_t queued,
                                   std::uint32_t driver) {
  const QueueState s = q.get_state();
  if (s.flags == flags && s.queued == queued && s.driver_owned == driver) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "state " << describe(s) << ", expected "
                                       << describe(QueueState{flags, queued, driver});
}

std::string describe(const ForwardProgressStats& s) {
  return "{total=" + std::to_string(s.total) + ", free=" + std::to_string(s.free) +
         ", in_use=" + std::to_string(s.in_use) + ", parked=" + std::to_string(s.parked) +
         ", reserved_used=" + std::to_string(s.reserved_used) +
         ", parked_total=" + std::to_string(s.parked_total) + "}";
}

// The reserved-request counts of q, plus the invariant free + in_use == total
// (every call site is quiescent: no reserved request is changing hands).
::testing::AssertionResult FpIs(const Queue& q, std::uint32_t total, std::uint32_t free, std::uint32_t in_use,
                                std::uint32_t parked) {
  const ForwardProgressStats s = q.forward_progress_stats();
  if (s.free + s.in_use != s.total)
    return ::testing::AssertionFailure() << "free + in_use != total: " << describe(s);
  if (s.total == total && s.free == free && s.in_use == in_use && s.parked == parked)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "forward progress " << describe(s) << ", expected {total=" << total
                                       << ", free=" << free << ", in_use=" << in_use << ", parked=" << parked
                                       << "}";
}

::testing::AssertionResult FpHistoryIs(const Queue& q, std::uint64_t reserved_used, std::uint64_t parked_total) {
  const ForwardProgressStats s = q.forward_progress_stats();
  if (s.reserved_used == reserved_used && s.parked_total == parked_total) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "forward progress " << describe(s) << ", expected reserved_used="
                                       << reserved_used << ", parked_total=" << parked_total;
}

// ---------------------------------------------------------------------------
// The driver side: reached through Queue::context()

struct Delivery {
  std::uint32_t id;
  bool reserved;
};

struct Drv {
  bool complete_inline = false;  // complete every delivery from the handler (success)
  std::chrono::microseconds busy{0};  // complete_inline: how long the handler works first
  std::mutex mu;
  std::vector<Delivery> delivered;  // in delivery order
  std::vector<Request> held;        // delivered, not yet completed by the test
  std::atomic<int> calls{0};
  std::atomic<int> reserved_calls{0};

  std::vector<std::uint32_t> ids() {
    std::lock_guard lock(mu);
    std::vector<std::uint32_t> out;
    for (const auto& d : delivered) out.push_back(d.id);
    return out;
  }
  // is_reserved() as the handler saw it for delivery `id` (fails if not delivered once).
  bool reserved_of(std::uint32_t id) {
    std::lock_guard lock(mu);
    int n = 0;
    bool r = false;
    for (const auto& d : delivered)
      if (d.id == id) {
        ++n;
        r = d.reserved;
      }
    EXPECT_EQ(n, 1) << "request " << id << " delivered " << n << " times";
    return r;
  }
};

Drv& drv(Queue& q) { return *static_cast<Drv*>(q.context()); }

void io_handler(Queue& q, Request r) {
  Drv& d = drv(q);
  const bool reserved = r.is_reserved();
  d.calls.fetch_add(1);
  if (reserved) d.reserved_calls.fetch_add(1);
  if (d.complete_inline) {
    if (d.busy.count() > 0) std::this_thread::sleep_for(d.busy);
    EXPECT_EQ(r.complete(Status::success, r.length()), Status::success);
    return;
  }
  std::lock_guard lock(d.mu);
  d.delivered.push_back({r.length(), reserved});
  d.held.push_back(r);
}

// Removes the held request with this id; a null Request (and a failure) if none.
Request take(Drv& d, std::uint32_t id) {
  std::lock_guard lock(d.mu);
  for (auto it = d.held.begin(); it != d.held.end(); ++it) {
    if (it->length() == id) {
      const Request r = *it;
      d.held.erase(it);
      return r;
    }
  }
  ADD_FAILURE() << "the driver holds no request " << id;
  return Request{};
}

void complete(Drv& d, std::uint32_t id, Status s = Status::success) {
  const Request r = take(d, id);
  if (r) {
    EXPECT_EQ(r.complete(s, id), Status::success) << "completing request " << id;
  }
}

// Completes everything held, including what those completions deliver next
// (keeps a failing test from destroying a device with packets in flight).
void complete_all(Drv& d) {
  for (;;) {
    std::vector<Request> batch;
    {
      std::lock_guard lock(d.mu);
      batch.swap(d.held);
    }
    if (batch.empty()) return;
    for (Request r : batch) (void)r.complete(Status::success, r.length());
  }
}

// Declared after the device: on a failing test, completes what the driver
// still holds before the device is destroyed.
struct CompleteHeldAtExit {
  Drv& d;
  ~CompleteHeldAtExit() { complete_all(d); }
};

// ---------------------------------------------------------------------------
// The forward-progress callbacks: reached through ForwardProgressConfig::context

struct FpRec {
  Queue* queue = nullptr;  // the queue the callbacks must be called for
  std::mutex mu;
  std::atomic<int> wrong_queue{0};

  // EvtIoAllocateResourcesForReservedRequest
  std::atomic<int> reserved_calls{0};
  int fail_reserved_on = 0;  // the call number (1-based) that fails; 0: none
  Status fail_status = Status::not_supported;
  std::vector<bool> reserved_flag;  // is_reserved() of each request it was given
  std::vector<bool> reserved_valid; // validate() == success for each
  std::set<std::uint64_t> reserved_handles;

  // EvtIoAllocateRequestResources
  std::atomic<int> request_calls{0};
  bool refuse_requests = false;
  std::vector<std::uint32_t> request_ids;
  std::vector<bool> request_flag;  // is_reserved() of each request it was given

  // EvtIoWdmIrpForForwardProgress
  std::atomic<int> examine_calls{0};
  std::set<std::uint32_t> examine_fail_ids;  // ids the callback answers fail for
  std::vector<std::uint32_t> examined;       // ids, in call order
  std::vector<std::uint64_t> examined_request;  // Packet::request at the call
};

FpRec& rec(void* ctx) { return *static_cast<FpRec*>(ctx); }

Status allocate_reserved(Queue& q, Request r, void* ctx) {
  FpRec& f = rec(ctx);
  if (&q != f.queue) f.wrong_queue.fetch_add(1);
  const int n = f.reserved_calls.fetch_add(1) + 1;
  {
    std::lock_guard lock(f.mu);
    f.reserved_flag.push_back(r.is_reserved());
    f.reserved_valid.push_back(r.validate() == Status::success);
    f.reserved_handles.insert(r.handle());
  }
  return n == f.fail_reserved_on ? f.fail_status : Status::success;
}

Status allocate_request(Queue& q, Request r, void* ctx) {
  FpRec& f = rec(ctx);
  if (&q != f.queue) f.wrong_queue.fetch_add(1);
  f.request_calls.fetch_add(1);
  std::lock_guard lock(f.mu);
  f.request_ids.push_back(r.length());
  f.request_flag.push_back(r.is_reserved());
  return f.refuse_requests ? Status::insufficient_resources : Status::success;
}

ExamineResult examine(Queue& q, Packet& p, void* ctx) noexcept {
  FpRec& f = rec(ctx);
  if (&q != f.queue) f.wrong_queue.fetch_add(1);
  f.examine_calls.fetch_add(1);
  std::lock_guard lock(f.mu);
  f.examined.push_back(p.length);
  f.examined_request.push_back(p.request);
  return f.examine_fail_ids.count(p.length) != 0 ? ExamineResult::fail : ExamineResult::use_reserved;
}

// ---------------------------------------------------------------------------
// Set-up helpers

// A default queue taking every type into io_handler.
QueueConfig io_queue(Drv& d, DispatchType t = DispatchType::sequential) {
  QueueConfig c{.dispatch = t, .default_queue = true};
  c.on_default = io_handler;
  c.context = &d;
  c.name = "fp";
  return c;
}

ForwardProgressConfig fp_config(FpRec& f, std::uint32_t total,
                                ForwardProgressPolicy policy = ForwardProgressPolicy::always_use_reserved) {
  ForwardProgressConfig c;
  c.total_reserved = total;
  c.policy = policy;
  c.allocate_reserved_resources = allocate_reserved;
  c.context = &f;
  return c;
}

TrackedPacket& submit(Device& dev, Packets& pk, std::uint32_t id, FileHandle file = {}, std::uint32_t flags = 0) {
  auto& p = pk.make(RequestType::read, id, file);
  p.packet.flags = flags;
  EXPECT_EQ(dev.submit(p.packet), Status::pending) << "submit " << id;
  return p;
}

// A packet that is parked: not completed, no request handle yet.
::testing::AssertionResult IsParked(const TrackedPacket& p) {
  if (p.completions.load() != 0)
    return ::testing::AssertionFailure() << "packet " << p.packet.length << " completed ("
                                         << to_string(p.status.load()) << ")";
  if (p.packet.request != 0)
    return ::testing::AssertionFailure() << "packet " << p.packet.length << " has a request handle";
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult CompletedWith(const TrackedPacket& p, Status s) {
  const int n = p.completions.load();
  if (n == 1 && p.status.load() == s) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "packet " << p.packet.length << ": " << n << " completions, status "
                                       << to_string(p.status.load()) << ", expected 1 with " << to_string(s);
}

using test::wait_until;

// ===========================================================================
// C63: AssignForwardProgressPolicy parameter checks

// C63: Total=0, UseExamine without a callback, or a second call →
// STATUS_INVALID_PARAMETER. A rejected call allocates nothing (no reserved
// callback) and sets no policy; a rejected second call leaves the first
// policy in force.
//
// The item's "bad Size → STATUS_INFO_LENGTH_MISMATCH" does not apply: the C++
// API takes a typed ForwardProgressConfig (no Size field), so the type system
// replaces that check (spec, "How the WDF world maps onto ioq": Size checks
// apply only where ioq exposes a C ABI, and it exposes none for this call).
TEST(Conformance, C63_AssignForwardProgressPolicyRejectsInvalidParameters) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(dev->start(), Status::success);

  // Total == 0, under each policy.
  for (auto policy : {ForwardProgressPolicy::always_use_reserved, ForwardProgressPolicy::paging_io,
                      ForwardProgressPolicy::examine}) {
    ForwardProgressConfig c = fp_config(f, 0, policy);
    c.examine = examine;
    EXPECT_EQ(q->assign_forward_progress_policy(c), Status::invalid_parameter)
        << "total_reserved == 0, policy " << static_cast<int>(policy);
  }
  // UseExamine without an examine callback.
  {
    ForwardProgressConfig c = fp_config(f, 2, ForwardProgressPolicy::examine);
    c.examine = nullptr;
    EXPECT_EQ(q->assign_forward_progress_policy(c), Status::invalid_parameter) << "examine without a callback";
  }
  EXPECT_EQ(f.reserved_calls.load(), 0) << "a rejected assignment allocated reserved requests";
  EXPECT_TRUE(FpIs(*q, 0, 0, 0, 0)) << "a rejected assignment left a policy behind";

  // A good call then succeeds (the rejections set nothing).
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 2)), Status::success);
  EXPECT_EQ(f.reserved_calls.load(), 2);
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0));

  // A second call → invalid_parameter, whatever its parameters, and nothing is
  // allocated for it.
  {
    ForwardProgressConfig c = fp_config(f, 5, ForwardProgressPolicy::paging_io);
    EXPECT_EQ(q->assign_forward_progress_policy(c), Status::invalid_parameter) << "second call";
    EXPECT_EQ(q->assign_forward_progress_policy(fp_config(f, 2)), Status::invalid_parameter)
        << "second call, same parameters";
  }
  EXPECT_EQ(f.reserved_calls.load(), 2) << "a rejected second call allocated reserved requests";
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0)) << "a rejected second call changed the reserve";

  // The first policy (always use reserved, not paging I/O) is still the one in
  // force: a non-paging packet whose allocation fails gets a reserved request.
  fi.set_always();
  auto& p1 = submit(*dev, pk, 1);
  EXPECT_GE(fi.injected(), 1u) << "the allocation failure path did not run";
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1}));
  EXPECT_TRUE(d.reserved_of(1));
  EXPECT_TRUE(FpIs(*q, 2, 1, 1, 0));
  complete(d, 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success));
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0));
  EXPECT_EQ(f.wrong_queue.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C63: the missing-callback check is about the examine policy only: with the
// callback, examine is accepted; the other policies need none.
TEST(Conformance, C63_ExamineCallbackRequiredOnlyForExaminePolicy) {
  Drv d1, d2, d3;
  FpRec f;
  auto dev = make_device({.max_requests = 8});
  ASSERT_TRUE(dev);
  QueueConfig c1 = io_queue(d1), c2 = io_queue(d2), c3 = io_queue(d3);
  c2.default_queue = c3.default_queue = false;
  Queue* q1 = make_queue(*dev, c1);
  Queue* q2 = make_queue(*dev, c2);
  Queue* q3 = make_queue(*dev, c3);
  ASSERT_TRUE(q1 && q2 && q3);

  ForwardProgressConfig ex = fp_config(f, 1, ForwardProgressPolicy::examine);
  ex.allocate_reserved_resources = nullptr;
  ex.examine = examine;
  EXPECT_EQ(q1->assign_forward_progress_policy(ex), Status::success);
  ForwardProgressConfig pg = fp_config(f, 1, ForwardProgressPolicy::paging_io);
  pg.allocate_reserved_resources = nullptr;
  EXPECT_EQ(q2->assign_forward_progress_policy(pg), Status::success);
  ForwardProgressConfig al = fp_config(f, 1, ForwardProgressPolicy::always_use_reserved);
  al.allocate_reserved_resources = nullptr;
  EXPECT_EQ(q3->assign_forward_progress_policy(al), Status::success);
  for (Queue* q : {q1, q2, q3}) EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0)) << q;
  // And a second call on each of them is refused.
  EXPECT_EQ(q1->assign_forward_progress_policy(ex), Status::invalid_parameter);
  EXPECT_EQ(q2->assign_forward_progress_policy(pg), Status::invalid_parameter);
  EXPECT_EQ(q3->assign_forward_progress_policy(al), Status::invalid_parameter);
  EXPECT_EQ(f.examine_calls.load(), 0);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// C64: the reserved-resources callback fails on its 3rd call

// C64: N=4, EvtIoAllocateResourcesForReservedRequest fails on its 3rd call →
// that status is returned, no policy is applied, and the callback ran exactly
// 3 times. Everything is undone: the device's reserve budget (exactly N here)
// is given back, so a later assignment with a good callback succeeds.
TEST(Conformance, C64_ReservedResourcesFailureOnThirdCallUndoesAssignment) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .max_reserved_requests = 4, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(dev->start(), Status::success);

  f.fail_reserved_on = 3;
  f.fail_status = Status::not_supported;  // not a status the runtime makes up itself
  EXPECT_EQ(q->assign_forward_progress_policy(fp_config(f, 4)), Status::not_supported);
  EXPECT_EQ(f.reserved_calls.load(), 3) << "the callback must stop at the first failure";
  {
    std::lock_guard lock(f.mu);
    EXPECT_EQ(f.reserved_handles.size(), 3u) << "each call gets its own reserved request";
    for (bool b : f.reserved_flag) EXPECT_TRUE(b) << "a request given to the reserved callback is not reserved";
    for (bool b : f.reserved_valid) EXPECT_TRUE(b) << "a request given to the reserved callback is not valid";
  }
  EXPECT_TRUE(FpIs(*q, 0, 0, 0, 0)) << "a failed assignment left a reserve behind";

  // No policy applies: a packet whose allocation fails is not given a reserved
  // request (it fails with insufficient_resources, as a queue without a policy).
  fi.set_always();
  auto& p1 = submit(*dev, pk, 1);
  EXPECT_GE(fi.injected(), 1u);
  EXPECT_TRUE(CompletedWith(p1, Status::insufficient_resources));
  EXPECT_EQ(d.calls.load(), 0) << "a packet was delivered although no policy is set";
  EXPECT_TRUE(FpIs(*q, 0, 0, 0, 0));

  // A later assignment with good parameters succeeds: 4 more calls, a full
  // reserve, and the policy works.
  f.fail_reserved_on = 0;
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 4)), Status::success)
      << "the failed assignment was not undone (policy or reserve budget kept)";
  EXPECT_EQ(f.reserved_calls.load(), 3 + 4);
  EXPECT_TRUE(FpIs(*q, 4, 4, 0, 0));
  auto& p2 = submit(*dev, pk, 2);
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{2}));
  EXPECT_TRUE(d.reserved_of(2));
  EXPECT_TRUE(FpIs(*q, 4, 3, 1, 0));
  complete(d, 2);
  EXPECT_TRUE(CompletedWith(p2, Status::success));
  EXPECT_TRUE(FpIs(*q, 4, 4, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 1, 0));
  EXPECT_EQ(f.wrong_queue.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C64: the same with a failure on the first call and the memory status: the
// status is passed through, the callback ran once, nothing is set.
TEST(Conformance, C64_ReservedResourcesFailureOnFirstCallReturnsItsStatus) {
  Drv d;
  FpRec f;
  auto dev = make_device({.max_requests = 8, .max_reserved_requests = 2});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  f.fail_reserved_on = 1;
  f.fail_status = Status::insufficient_resources;
  EXPECT_EQ(q->assign_forward_progress_policy(fp_config(f, 2)), Status::insufficient_resources);
  EXPECT_EQ(f.reserved_calls.load(), 1);
  EXPECT_TRUE(FpIs(*q, 0, 0, 0, 0));
  f.fail_reserved_on = 0;
  EXPECT_EQ(q->assign_forward_progress_policy(fp_config(f, 2)), Status::success);
  EXPECT_EQ(f.reserved_calls.load(), 1 + 2);
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0));
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// C65: AlwaysUseReservedRequest

// C65: AlwaysUse, request allocation fails (the allocation hook) → the handler
// sees IsReserved=TRUE; with allocation succeeding it sees a normal request.
TEST(Conformance, C65_AlwaysUseReservedHandlerSeesIsReserved) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(dev->start(), Status::success);
  // Safe on a running queue.
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 2)), Status::success);

  // Allocation succeeds: a normal request.
  auto& p1 = submit(*dev, pk, 1);
  EXPECT_FALSE(d.reserved_of(1));
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0));
  complete(d, 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success));

  // Allocation fails: a reserved request, delivered like any other.
  fi.set_always();
  const auto injected_before = fi.injected();
  auto& p2 = submit(*dev, pk, 2);
  EXPECT_EQ(fi.injected(), injected_before + 1) << "the allocation was not failed";
  EXPECT_NE(p2.packet.request, 0u) << "the packet is not bound to a request";
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2}));
  EXPECT_TRUE(d.reserved_of(2)) << "the handler did not see a reserved request";
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 1));
  EXPECT_TRUE(FpIs(*q, 2, 1, 1, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 1, 0));
  complete(d, 2);
  EXPECT_TRUE(CompletedWith(p2, Status::success));
  EXPECT_EQ(p2.information.load(), 2u);
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0));
  EXPECT_EQ(d.calls.load(), 2);
  EXPECT_EQ(f.reserved_calls.load(), 2);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C65: the other cause of an allocation failure: the device's slab is
// exhausted (max_requests in flight). The arrival gets a reserved request.
TEST(Conformance, C65_SlabExhaustionUsesReservedRequest) {
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 1});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  QueueConfig qc = io_queue(d, DispatchType::parallel);
  Queue* q = make_queue(*dev, qc);
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 1)), Status::success);
  ASSERT_EQ(dev->start(), Status::success);

  auto& p1 = submit(*dev, pk, 1);  // takes the only slab slot
  auto& p2 = submit(*dev, pk, 2);  // slab exhausted
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2}));
  EXPECT_FALSE(d.reserved_of(1));
  EXPECT_TRUE(d.reserved_of(2)) << "the handler did not see a reserved request";
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 2));
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 0));
  complete(d, 2);
  complete(d, 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success));
  EXPECT_TRUE(CompletedWith(p2, Status::success));
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 1, 0));
  EXPECT_GE(dev->stats().allocation_failures, 1u);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// C66: PagingIO

// C66: PagingIO, allocation fails, non-paging packet → completed
// STATUS_UNSUCCESSFUL, no handler call, no reserved request used. A paging
// packet gets a reserved request; with allocation succeeding a non-paging
// packet is served normally (the policy only decides on failure).
TEST(Conformance, C66_PagingIoFailsNonPagingPacket) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 1, ForwardProgressPolicy::paging_io)), Status::success);
  ASSERT_EQ(dev->start(), Status::success);

  auto& p1 = submit(*dev, pk, 1);  // allocation succeeds
  EXPECT_FALSE(d.reserved_of(1));
  complete(d, 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success));

  fi.set_always();
  auto& p2 = submit(*dev, pk, 2);  // not paging I/O
  EXPECT_GE(fi.injected(), 1u);
  EXPECT_TRUE(CompletedWith(p2, Status::unsuccessful));
  EXPECT_EQ(p2.information.load(), 0u);
  EXPECT_EQ(d.calls.load(), 1) << "the non-paging packet reached the handler";
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 0, 0));
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));

  auto& p3 = submit(*dev, pk, 3, {}, kPacketPaging);  // paging I/O
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 3}));
  EXPECT_TRUE(d.reserved_of(3));
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 0));
  // While the only reserved request is in use, a non-paging packet still fails
  // at once (it is not parked).
  auto& p4 = submit(*dev, pk, 4);
  EXPECT_TRUE(CompletedWith(p4, Status::unsuccessful));
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 0));
  complete(d, 3);
  EXPECT_TRUE(CompletedWith(p3, Status::success));
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 1, 0));
  EXPECT_EQ(d.calls.load(), 2);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C66 (with section 6, arrival step 2): the policy also applies when
// EvtIoAllocateRequestResources refuses a normal request: a non-paging packet
// fails STATUS_UNSUCCESSFUL, a paging one gets a reserved request.
TEST(Conformance, C66_PagingIoAppliesWhenRequestResourcesRefused) {
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  f.refuse_requests = true;
  ForwardProgressConfig c = fp_config(f, 1, ForwardProgressPolicy::paging_io);
  c.allocate_request_resources = allocate_request;
  ASSERT_EQ(q->assign_forward_progress_policy(c), Status::success);
  ASSERT_EQ(dev->start(), Status::success);

  auto& p1 = submit(*dev, pk, 1);
  EXPECT_EQ(f.request_calls.load(), 1);
  EXPECT_TRUE(CompletedWith(p1, Status::unsuccessful));
  EXPECT_EQ(d.calls.load(), 0);

  auto& p2 = submit(*dev, pk, 2, {}, kPacketPaging);
  EXPECT_EQ(f.request_calls.load(), 2);
  EXPECT_TRUE(d.reserved_of(2));
  complete(d, 2);
  EXPECT_TRUE(CompletedWith(p2, Status::success));
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 1, 0));
  EXPECT_EQ(f.wrong_queue.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// C67: UseExamine

// C67: UseExamine returns Fail → completed STATUS_UNSUCCESSFUL; the callback
// ran once, for that packet, with the queue and context of the policy.
TEST(Conformance, C67_ExamineFailCompletesUnsuccessful) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  ForwardProgressConfig c = fp_config(f, 1, ForwardProgressPolicy::examine);
  c.examine = examine;
  ASSERT_EQ(q->assign_forward_progress_policy(c), Status::success);
  ASSERT_EQ(dev->start(), Status::success);

  // Allocation succeeds: the callback is not consulted.
  auto& p1 = submit(*dev, pk, 1);
  EXPECT_EQ(f.examine_calls.load(), 0) << "examine ran although allocation succeeded";
  complete(d, 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success));

  fi.set_always();
  f.examine_fail_ids = {2};
  auto& p2 = submit(*dev, pk, 2);
  EXPECT_EQ(f.examine_calls.load(), 1);
  EXPECT_EQ(f.examined, (std::vector<std::uint32_t>{2}));
  EXPECT_TRUE(CompletedWith(p2, Status::unsuccessful));
  EXPECT_EQ(p2.information.load(), 0u);
  EXPECT_EQ(d.calls.load(), 1) << "a packet examine failed reached the handler";
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0)) << "examine said fail, yet a reserved request was used";
  EXPECT_TRUE(FpHistoryIs(*q, 0, 0));
  EXPECT_EQ(f.wrong_queue.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C67: UseExamine returns UseReserved → a reserved request is used (the
// handler sees IsReserved=TRUE); Fail and UseReserved decided per packet.
TEST(Conformance, C67_ExamineUseReservedUsesReservedRequest) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d, DispatchType::parallel));
  ASSERT_TRUE(q);
  f.queue = q;
  ForwardProgressConfig c = fp_config(f, 2, ForwardProgressPolicy::examine);
  c.examine = examine;
  ASSERT_EQ(q->assign_forward_progress_policy(c), Status::success);
  ASSERT_EQ(dev->start(), Status::success);

  fi.set_always();
  f.examine_fail_ids = {2};
  auto& p1 = submit(*dev, pk, 1);  // use reserved
  auto& p2 = submit(*dev, pk, 2);  // fail
  auto& p3 = submit(*dev, pk, 3);  // use reserved
  EXPECT_EQ(f.examine_calls.load(), 3);
  EXPECT_EQ(f.examined, (std::vector<std::uint32_t>{1, 2, 3}));
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 3}));
  EXPECT_TRUE(d.reserved_of(1));
  EXPECT_TRUE(d.reserved_of(3));
  EXPECT_TRUE(CompletedWith(p2, Status::unsuccessful));
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 2));
  EXPECT_TRUE(FpIs(*q, 2, 0, 2, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 2, 0));
  complete(d, 3);
  complete(d, 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success));
  EXPECT_TRUE(CompletedWith(p3, Status::success));
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0));
  EXPECT_EQ(f.wrong_queue.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// C68: EvtIoAllocateRequestResources fails

// C68: EvtIoAllocateRequestResources fails under AlwaysUse → a reserved
// request is delivered. The callback ran once, for the normal request (not
// reserved); the refused normal request went back to the slab.
TEST(Conformance, C68_AllocateRequestResourcesFailureDeliversReservedRequest) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  ForwardProgressConfig c = fp_config(f, 1);
  c.allocate_request_resources = allocate_request;
  ASSERT_EQ(q->assign_forward_progress_policy(c), Status::success);
  ASSERT_EQ(dev->start(), Status::success);

  // The callback accepts: the normal request is delivered.
  auto& p1 = submit(*dev, pk, 1);
  EXPECT_EQ(f.request_calls.load(), 1);
  EXPECT_FALSE(d.reserved_of(1));
  complete(d, 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success));

  // The callback refuses: a reserved request is delivered instead.
  f.refuse_requests = true;
  auto& p2 = submit(*dev, pk, 2);
  EXPECT_EQ(f.request_calls.load(), 2) << "EvtIoAllocateRequestResources must run once per normal request";
  {
    std::lock_guard lock(f.mu);
    EXPECT_EQ(f.request_ids, (std::vector<std::uint32_t>{1, 2}));
    EXPECT_EQ(f.request_flag, (std::vector<bool>{false, false})) << "it must be given the normal request";
  }
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2}));
  EXPECT_TRUE(d.reserved_of(2)) << "the refused arrival was not given a reserved request";
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 0));
  EXPECT_EQ(dev->stats().free_requests, 8u) << "the refused normal request was not freed";
  complete(d, 2);
  EXPECT_TRUE(CompletedWith(p2, Status::success));
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 1, 0));

  // Allocation itself fails: the callback is not called (there is no normal
  // request), and a reserved request is used.
  fi.set_always();
  auto& p3 = submit(*dev, pk, 3);
  EXPECT_EQ(f.request_calls.load(), 2) << "EvtIoAllocateRequestResources ran for a reserved request";
  EXPECT_TRUE(d.reserved_of(3));
  complete(d, 3);
  EXPECT_TRUE(CompletedWith(p3, Status::success));
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 2, 0));
  EXPECT_EQ(f.wrong_queue.load(), 0);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// ===========================================================================
// C69: pended (parked) packets

// C69: N=1 in use, 2 more packets with allocation failing → both pended (no
// request, not completed, not queued); each completion reuses the reserved
// request for the oldest pended packet; at the end free + in_use == N.
TEST(Conformance, C69_ParkedPacketsServedOldestFirst) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 1)), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  fi.set_always();

  auto& p1 = submit(*dev, pk, 1);
  EXPECT_TRUE(d.reserved_of(1));
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 0));

  auto& p2 = submit(*dev, pk, 2);
  auto& p3 = submit(*dev, pk, 3);
  EXPECT_TRUE(IsParked(p2));
  EXPECT_TRUE(IsParked(p3));
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1}));
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 2));
  EXPECT_TRUE(FpHistoryIs(*q, 1, 2));
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 1)) << "pended packets are not queued requests";

  complete(d, 1);
  EXPECT_TRUE(CompletedWith(p1, Status::success));
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2})) << "the oldest pended packet must be served first";
  EXPECT_TRUE(d.reserved_of(2));
  EXPECT_NE(p2.packet.request, 0u);
  EXPECT_TRUE(IsParked(p3));
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 1));

  complete(d, 2);
  EXPECT_TRUE(CompletedWith(p2, Status::success));
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2, 3}));
  EXPECT_TRUE(d.reserved_of(3));
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 0));

  complete(d, 3);
  EXPECT_TRUE(CompletedWith(p3, Status::success));
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 3, 2));
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_EQ(d.calls.load(), 3);
  EXPECT_EQ(d.reserved_calls.load(), 3);
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C69 with N=2 on a parallel queue: whichever reserved request comes back
// first goes to the oldest pended packet; FIFO across 4 pended packets.
TEST(Conformance, C69_EachReturnServesOldestParkedPacket) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d, DispatchType::parallel));
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 2)), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  fi.set_always();

  for (std::uint32_t id = 1; id <= 6; ++id) submit(*dev, pk, id);
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2}));
  for (std::size_t i = 2; i < 6; ++i) EXPECT_TRUE(IsParked(pk[i]));
  EXPECT_TRUE(FpIs(*q, 2, 0, 2, 4));
  EXPECT_TRUE(StateIs(*q, kAcc | kDsp | kNoReq, 0, 2));

  complete(d, 2);  // the younger one first
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2, 3}));
  EXPECT_TRUE(FpIs(*q, 2, 0, 2, 3));
  complete(d, 1);
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2, 3, 4}));
  EXPECT_TRUE(FpIs(*q, 2, 0, 2, 2));
  complete(d, 4);
  complete(d, 3);
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(FpIs(*q, 2, 0, 2, 0));
  complete(d, 5);
  EXPECT_TRUE(FpIs(*q, 2, 1, 1, 0));
  complete(d, 6);
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 6, 4));
  for (std::uint32_t id = 1; id <= 6; ++id) EXPECT_TRUE(d.reserved_of(id)) << id;
  for (std::size_t i = 0; i < 6; ++i) EXPECT_TRUE(CompletedWith(pk[i], Status::success));
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// Section 6, arrival step 5 (with C69): a pended packet stays cancelable; a
// cancel completes it STATUS_CANCELLED at once, it never gets a request, and
// the others keep their order.
TEST(Conformance, C69_CancelledParkedPacketCompletesCancelled) {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  auto dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  Queue* q = make_queue(*dev, io_queue(d));
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 1)), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  fi.set_always();

  for (std::uint32_t id = 1; id <= 4; ++id) submit(*dev, pk, id);
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 3));

  EXPECT_EQ(dev->cancel(pk[2].packet), Status::success);  // the middle one (3)
  EXPECT_TRUE(CompletedWith(pk[2], Status::cancelled));
  EXPECT_EQ(pk[2].information.load(), 0u);
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 2));
  EXPECT_EQ(dev->cancel(pk[3].packet), Status::success);  // the youngest (4)
  EXPECT_TRUE(CompletedWith(pk[3], Status::cancelled));
  EXPECT_TRUE(IsParked(pk[1]));
  EXPECT_TRUE(FpIs(*q, 1, 0, 1, 1));
  EXPECT_EQ(q->counters().cancelled, 2u);

  complete(d, 1);
  complete(d, 2);
  EXPECT_EQ(d.ids(), (std::vector<std::uint32_t>{1, 2})) << "a cancelled packet was delivered";
  EXPECT_TRUE(CompletedWith(pk[0], Status::success));
  EXPECT_TRUE(CompletedWith(pk[1], Status::success));
  EXPECT_TRUE(FpIs(*q, 1, 1, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*q, 2, 3));
  pk.expect_all_completed_once();
  EXPECT_EQ(dev->verifier().total(), 0u);
}

// C69 under concurrency: several submitters, allocation always failing, N=2,
// a handler that completes inline. Every packet is served by a reserved
// request exactly once, in whatever order; at the end free + in_use == N and
// nothing is left pended.
void concurrent_arrivals(ExecutionLevel level) {
  constexpr std::uint32_t kThreads = 4;
  constexpr std::uint32_t kPerThread = 200;
  FaultInjector fi;
  Drv d;
  d.complete_inline = true;
  d.busy = 20us;  // keeps reserved requests in use long enough for arrivals to pend
  FpRec f;
  std::vector<Packets> pks(kThreads);
  auto dev = make_device({.max_requests = 8, .passive_workers = 2, .alloc_hook = fi.hook()});
  ASSERT_TRUE(dev);
  CompleteHeldAtExit held_guard{d};
  QueueConfig qc = io_queue(d, DispatchType::parallel);
  qc.execution = level;
  Queue* q = make_queue(*dev, qc);
  ASSERT_TRUE(q);
  f.queue = q;
  ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 2)), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  fi.set_always();

  for (auto& pk : pks)
    for (std::uint32_t i = 0; i < kPerThread; ++i) pk.make(RequestType::read, i + 1);
  std::vector<std::thread> threads;
  for (std::uint32_t t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (std::uint32_t i = 0; i < kPerThread; ++i) EXPECT_EQ(dev->submit(pks[t][i].packet), Status::pending);
    });
  for (auto& th : threads) th.join();

  auto all_done = [&] {
    for (auto& pk : pks)
      for (std::uint32_t i = 0; i < kPerThread; ++i)
        if (!pk[i].done()) return false;
    return true;
  };
  const bool done = wait_until(all_done);
  ASSERT_TRUE(done) << "packets left unserved: " << describe(q->forward_progress_stats());
  ASSERT_TRUE(wait_until([&] { return q->get_state().driver_owned == 0; }));
  for (auto& pk : pks) {
    pk.expect_all_completed_once();
    for (std::uint32_t i = 0; i < kPerThread; ++i) EXPECT_EQ(pk[i].status.load(), Status::success);
  }
  EXPECT_EQ(d.calls.load(), static_cast<int>(kThreads * kPerThread));
  EXPECT_EQ(d.reserved_calls.load(), static_cast<int>(kThreads * kPerThread));
  EXPECT_TRUE(FpIs(*q, 2, 2, 0, 0));
  const ForwardProgressStats s = q->forward_progress_stats();
  EXPECT_EQ(s.reserved_used, kThreads * kPerThread);
  EXPECT_LE(s.parked_total, kThreads * kPerThread);
  ::testing::Test::RecordProperty("parked_total", std::to_string(s.parked_total));
  EXPECT_EQ(dev->verifier().total(), 0u);
}

TEST(Conformance, C69_ConcurrentArrivalsAllServedDispatchLevel) { concurrent_arrivals(ExecutionLevel::dispatch); }
TEST(Conformance, C69_ConcurrentArrivalsAllServedPassiveLevel) { concurrent_arrivals(ExecutionLevel::passive); }

// ===========================================================================
// C70: Purge, Drain, StopAndPurge and cleanup cancel pended packets

struct CbRec {
  std::atomic<int> fired{0};
  QueueState at_fire{};
};
void rec_cb(Queue& q, void* ctx) {
  auto* c = static_cast<CbRec*>(ctx);
  c->at_fire = q.get_state();
  c->fired.fetch_add(1);
}

// Common set-up: sequential queue, N=2, allocation failing. Packet 1 gets a
// reserved request and is driver-owned, packet 2 gets the other one and is
// queued behind it, packets 3.. are pended.
struct ParkedSetup {
  FaultInjector fi;
  Drv d;
  FpRec f;
  Packets pk;
  std::unique_ptr<Device> dev;
  Queue* q = nullptr;

  // Completes what the driver still holds (a failing test) before the device goes.
  ~ParkedSetup() { complete_all(d); }

  void build(std::uint32_t parked, const std::vector<FileHandle>& files = {}) {
    dev = make_device({.max_requests = 8, .alloc_hook = fi.hook()});
    ASSERT_TRUE(dev);
    q = make_queue(*dev, io_queue(d));
    ASSERT_TRUE(q);
    f.queue = q;
    ASSERT_EQ(q->assign_forward_progress_policy(fp_config(f, 2)), Status::success);
    ASSERT_EQ(dev->start(), Status::success);
    fi.set_always();
    const std::uint32_t n = 2 + parked;
    for (std::uint32_t id = 1; id <= n; ++id) {
      FileHandle file = id - 1 < files.size() ? files[id - 1] : FileHandle{};
      submit(*dev, pk, id, file);
    }
    ASSERT_EQ(d.ids(), (std::vector<std::uint32_t>{1}));
    ASSERT_TRUE(d.reserved_of(1));
    ASSERT_TRUE(StateIs(*q, kAcc | kDsp, 1, 1));
    ASSERT_TRUE(FpIs(*q, 2, 0, 2, parked));
    for (std::uint32_t i = 2; i < n; ++i) ASSERT_TRUE(IsParked(pk[i]));
  }
};

// C70: Purge with pended packets → each completed STATUS_CANCELLED, never
// delivered; the queued reserved request is cancelled too (and its return
// does not revive a pended packet); the owned one is untouched; the purge
// callback fires once, after the driver completes it.
TEST(Conformance, C70_PurgeCancelsParkedPackets) {
  ParkedSetup s;
  ASSERT_NO_FATAL_FAILURE(s.build(3));
  CbRec cb;

  ASSERT_EQ(s.q->purge(rec_cb, &cb), Status::success);
  for (std::size_t i = 1; i < 5; ++i) EXPECT_TRUE(CompletedWith(s.pk[i], Status::cancelled)) << i + 1;
  EXPECT_FALSE(s.pk[0].done()) << "purge completed a driver-owned request";
  EXPECT_TRUE(FpIs(*s.q, 2, 1, 1, 0));
  EXPECT_TRUE(StateIs(*s.q, kDsp | kNoReq, 0, 1));
  EXPECT_EQ(cb.fired.load(), 0) << "purge callback fired while the driver owns a request";
  EXPECT_EQ(s.q->counters().cancelled, 4u);

  complete(s.d, 1);
  EXPECT_TRUE(CompletedWith(s.pk[0], Status::success));
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_TRUE(StateIs(*s.q, kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_EQ(s.d.ids(), (std::vector<std::uint32_t>{1})) << "a cancelled packet was delivered";
  EXPECT_TRUE(FpIs(*s.q, 2, 2, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*s.q, 2, 3));
  s.pk.expect_all_completed_once();
  EXPECT_EQ(s.dev->verifier().total(), 0u);
}

// C70: Drain (which shares Purge's code path) with pended packets → they are
// completed STATUS_CANCELLED; unlike them, the queued (reserved) request is
// still delivered; the drain callback fires after both owned requests complete.
TEST(Conformance, C70_DrainCancelsParkedPackets) {
  ParkedSetup s;
  ASSERT_NO_FATAL_FAILURE(s.build(2));
  CbRec cb;

  ASSERT_EQ(s.q->drain(rec_cb, &cb), Status::success);
  EXPECT_TRUE(CompletedWith(s.pk[2], Status::cancelled));
  EXPECT_TRUE(CompletedWith(s.pk[3], Status::cancelled));
  EXPECT_FALSE(s.pk[0].done());
  EXPECT_FALSE(s.pk[1].done()) << "drain cancelled a queued request";
  EXPECT_TRUE(FpIs(*s.q, 2, 0, 2, 0));
  EXPECT_TRUE(StateIs(*s.q, kDsp, 1, 1));

  complete(s.d, 1);
  EXPECT_EQ(s.d.ids(), (std::vector<std::uint32_t>{1, 2})) << "a drained queue still delivers";
  EXPECT_TRUE(s.d.reserved_of(2));
  EXPECT_EQ(cb.fired.load(), 0);
  EXPECT_TRUE(FpIs(*s.q, 2, 1, 1, 0));
  complete(s.d, 2);
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_TRUE(StateIs(*s.q, kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_TRUE(CompletedWith(s.pk[0], Status::success));
  EXPECT_TRUE(CompletedWith(s.pk[1], Status::success));
  EXPECT_TRUE(FpIs(*s.q, 2, 2, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*s.q, 2, 2));
  EXPECT_EQ(s.q->counters().cancelled, 2u);
  s.pk.expect_all_completed_once();
  EXPECT_EQ(s.dev->verifier().total(), 0u);
}

// C70: StopAndPurge with pended packets → those pended at call time are
// completed STATUS_CANCELLED (with the queued request); a packet that arrives
// after the call is kept (pended, then bound and queued) and delivered after
// Start. The stop callback fires once, when the owned request completes.
TEST(Conformance, C70_StopAndPurgeCancelsParkedPackets) {
  ParkedSetup s;
  ASSERT_NO_FATAL_FAILURE(s.build(2));
  CbRec cb;

  ASSERT_EQ(s.q->stop_and_purge(rec_cb, &cb), Status::success);
  EXPECT_TRUE(CompletedWith(s.pk[1], Status::cancelled)) << "queued request";
  EXPECT_TRUE(CompletedWith(s.pk[2], Status::cancelled));
  EXPECT_TRUE(CompletedWith(s.pk[3], Status::cancelled));
  EXPECT_FALSE(s.pk[0].done());
  EXPECT_TRUE(StateIs(*s.q, kAcc | kNoReq, 0, 1));
  EXPECT_TRUE(FpIs(*s.q, 2, 1, 1, 0));
  EXPECT_EQ(cb.fired.load(), 0);

  // Later arrivals are kept: 5 takes the free reserved request (queued, the
  // queue is stopped), 6 is pended.
  auto& p5 = submit(*s.dev, s.pk, 5);
  auto& p6 = submit(*s.dev, s.pk, 6);
  EXPECT_FALSE(p5.done());
  EXPECT_TRUE(IsParked(p6));
  EXPECT_TRUE(StateIs(*s.q, kAcc, 1, 1));
  EXPECT_TRUE(FpIs(*s.q, 2, 0, 2, 1));

  complete(s.d, 1);
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_FALSE(p6.done()) << "a packet pended after StopAndPurge was cancelled";
  EXPECT_NE(p6.packet.request, 0u) << "the returned reserved request did not go to the pended packet";
  EXPECT_TRUE(StateIs(*s.q, kAcc | kDrvNoReq, 2, 0));
  EXPECT_TRUE(FpIs(*s.q, 2, 0, 2, 0));
  EXPECT_EQ(s.d.ids(), (std::vector<std::uint32_t>{1})) << "a stopped queue delivered";

  ASSERT_EQ(s.q->start(), Status::success);
  complete(s.d, 5);
  complete(s.d, 6);
  EXPECT_EQ(s.d.ids(), (std::vector<std::uint32_t>{1, 5, 6}));
  EXPECT_TRUE(s.d.reserved_of(5));
  EXPECT_TRUE(s.d.reserved_of(6));
  EXPECT_TRUE(CompletedWith(s.pk[0], Status::success));
  EXPECT_TRUE(CompletedWith(p5, Status::success));
  EXPECT_TRUE(CompletedWith(p6, Status::success));
  EXPECT_EQ(cb.fired.load(), 1);
  EXPECT_TRUE(FpIs(*s.q, 2, 2, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*s.q, 4, 3));
  s.pk.expect_all_completed_once();
  EXPECT_EQ(s.dev->verifier().total(), 0u);
}

// C70: cleanup (close of file F1) with pended packets → the pended packets of
// F1 are completed STATUS_CANCELLED, with F1's queued request; F2's pended
// packet stays and is served (by the reserved request the cancelled queued one
// gave back), F1's owned request is untouched. Accept and Dispatch unchanged.
TEST(Conformance, C70_FileCloseCancelsParkedPackets) {
  // Built by hand rather than with build(): the files must be opened on the
  // device before the packets are submitted.
  ParkedSetup s;
  s.dev = make_device({.max_requests = 8, .alloc_hook = s.fi.hook()});
  ASSERT_TRUE(s.dev);
  s.q = make_queue(*s.dev, io_queue(s.d));
  ASSERT_TRUE(s.q);
  s.f.queue = s.q;
  ASSERT_EQ(s.q->assign_forward_progress_policy(fp_config(s.f, 2)), Status::success);
  ASSERT_EQ(s.dev->start(), Status::success);
  const FileHandle f1 = s.dev->open_file();
  const FileHandle f2 = s.dev->open_file();
  ASSERT_TRUE(f1);
  ASSERT_TRUE(f2);
  ASSERT_NE(f1, f2);
  s.fi.set_always();
  // 1(F1) owned, 2(F1) queued, pended: 3(F1), 4(F2), 5(F1).
  const FileHandle files[] = {f1, f1, f1, f2, f1};
  for (std::uint32_t id = 1; id <= 5; ++id) submit(*s.dev, s.pk, id, files[id - 1]);
  ASSERT_TRUE(StateIs(*s.q, kAcc | kDsp, 1, 1));
  ASSERT_TRUE(FpIs(*s.q, 2, 0, 2, 3));

  ASSERT_EQ(s.dev->close_file(f1), Status::success);
  EXPECT_TRUE(CompletedWith(s.pk[1], Status::cancelled)) << "F1's queued request";
  EXPECT_TRUE(CompletedWith(s.pk[2], Status::cancelled));
  EXPECT_TRUE(CompletedWith(s.pk[4], Status::cancelled));
  EXPECT_FALSE(s.pk[0].done()) << "cleanup completed a driver-owned request";
  EXPECT_FALSE(s.pk[3].done()) << "cleanup of F1 cancelled F2's pended packet";
  EXPECT_NE(s.pk[3].packet.request, 0u) << "F2's packet did not get the returned reserved request";
  EXPECT_TRUE(StateIs(*s.q, kAcc | kDsp, 1, 1));
  EXPECT_TRUE(FpIs(*s.q, 2, 0, 2, 0));
  EXPECT_EQ(s.q->counters().cancelled, 3u);

  complete(s.d, 1);
  EXPECT_EQ(s.d.ids(), (std::vector<std::uint32_t>{1, 4}));
  EXPECT_TRUE(s.d.reserved_of(4));
  complete(s.d, 4);
  EXPECT_TRUE(CompletedWith(s.pk[0], Status::success));
  EXPECT_TRUE(CompletedWith(s.pk[3], Status::success));
  EXPECT_TRUE(StateIs(*s.q, kAcc | kDsp | kNoReq | kDrvNoReq, 0, 0));
  EXPECT_TRUE(FpIs(*s.q, 2, 2, 0, 0));
  EXPECT_TRUE(FpHistoryIs(*s.q, 3, 3));
  s.pk.expect_all_completed_once();
  EXPECT_EQ(s.dev->verifier().total(), 0u);
}

// C70, the other side: a plain Stop is not in the list. Pended packets stay
// pended through Stop, are bound when a reserved request returns, and are
// delivered after Start.
TEST(Conformance, C70_StopKeepsParkedPackets) {
  ParkedSetup s;
  ASSERT_NO_FATAL_FAILURE(s.build(2));

  ASSERT_EQ(s.q->stop(), Status::success);
  EXPECT_TRUE(IsParked(s.pk[2]));
  EXPECT_TRUE(IsParked(s.pk[3]));
  EXPECT_FALSE(s.pk[1].done());
  EXPECT_TRUE(FpIs(*s.q, 2, 0, 2, 2));

  complete(s.d, 1);
  EXPECT_TRUE(StateIs(*s.q, kAcc | kDrvNoReq, 2, 0));
  EXPECT_NE(s.pk[2].packet.request, 0u);
  EXPECT_TRUE(IsParked(s.pk[3]));
  EXPECT_TRUE(FpIs(*s.q, 2, 0, 2, 1));

  ASSERT_EQ(s.q->start(), Status::success);
  for (std::uint32_t id = 2; id <= 4; ++id) complete(s.d, id);
  EXPECT_EQ(s.d.ids(), (std::vector<std::uint32_t>{1, 2, 3, 4}));
  for (std::size_t i = 0; i < 4; ++i) EXPECT_TRUE(CompletedWith(s.pk[i], Status::success)) << i + 1;
  EXPECT_TRUE(FpIs(*s.q, 2, 2, 0, 0));
  s.pk.expect_all_completed_once();
  EXPECT_EQ(s.dev->verifier().total(), 0u);
}

}  // namespace
}  // namespace ioq::test
