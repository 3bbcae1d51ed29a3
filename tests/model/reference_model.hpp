// ioq::model — the reference model of the queue semantics: the test oracle.
//
// What it is
//   A deliberately simple, single-threaded implementation of the contract in
//   shared/spec/queue-semantics.md (sections 1-6), with the same shape of
//   interface as ioq's public API as far as a test needs it: a Device with
//   queues, routing, files, power and submission; Queues with Start, Stop,
//   Drain, Purge, StopAndPurge, ReadyNotify, Retrieve*, Find/RetrieveFound and
//   forward-progress policies; Requests (handles) with Complete, Forward,
//   Requeue, Mark/UnmarkCancelable, StopAcknowledge. Plain std::deque and
//   std::map, no locks, no atomics, no cleverness: clarity over speed. It is
//   the oracle of tests/differential_test.cpp and tests/fuzz/queue_fuzz.cpp,
//   not a product.
//
// The dispatch loop
//   Every state change ends with Queue::dispatch(), the spec's DispatchEvents
//   (section 7): it returns at once when the queue's loop is already active on
//   the (only) thread - the re-entrancy guard of C11/C12: the active loop
//   re-checks after the callback it is in returns - and otherwise loops, in
//   this priority order, over: cancel callbacks, canceled-on-queue callbacks,
//   the stop ("idle") callback (driver == 0), the drain/purge callback
//   (queued == driver == 0), and then, when Dispatch is set and the queue is
//   powered, ReadyNotify (manual) or the delivery of the head request
//   (sequential: driver == 0; parallel: driver < max_presented).
//
// Decisions the model takes from ioq's documentation (not the WDF spec)
//   * Misuse returns a usage error and is counted in verifier() instead of a
//     bug check: usage_already_completed (a completed request), usage_not_owned
//     (a queued request), usage_cancelable (complete, forward, requeue, mark or
//     stop_acknowledge(requeue) of a request marked cancelable), usage_not_-
//     cancelable (unmark of a request that is not marked), usage_slot_busy (a
//     second stop/drain/purge callback in a busy slot), usage_in_handler (a
//     synchronous stop/drain/purge from a callback of the same queue). The
//     null handle (a packet that never got a request) gives invalid_handle,
//     not counted. The checks run in ioq's order: the handle and ownership
//     first, then cancelable, then the request-specific ones.
//   * Forwarding a request marked cancelable is usage_cancelable (the spec says
//     invalid_device_request under the verifier).
//   * A packet submitted before Device::start completes invalid_device_state.
//   * wdf_busy and wdf_paused given to Request::complete reach the packet as
//     device_busy (spec section 1, "Completed").
//   * Power-down (suspend, remove) also waits for the canceled requests the
//     driver owns (they get no stop callback); pending_power_acks() tells how
//     many the last power-down left unresolved (ioq would block on them).
//   * A packet whose allocation fails on a queue without a forward-progress
//     policy completes insufficient_resources.
//   * Unordered-by-the-spec choices take ioq's order: a cancellation sweep
//     (purge, stop_and_purge, removal, file close) cancels parked forward-
//     progress packets first, then takes every matching queued request out of
//     the FIFO at once and disposes of them in FIFO order (completing the
//     never-presented ones, handing each presented one to the canceled-on-
//     queue callback through the loop), then cancels the driver's cancelable
//     requests; the stop callback batch of a power-down is collected before
//     any stop callback runs; mark_cancelable_ex while the latch is set does
//     not flag the request canceled; retrieve_found_request does not complete
//     0-byte requests (the spec's zero-length rule names Retrieve*, which the
//     spec lists apart from RetrieveFound).
//
// Decisions taken from the spec (each once a divergence of ioq, now fixed in
// ioq and replayed by DifferentialRegression in tests/differential_test.cpp)
//   * A request whose cancel callback is scheduled but has not run yet is still
//     "marked cancelable" for the driver: complete/forward/requeue/mark give
//     usage_cancelable (spec 4: "do not complete R outside it"). Once its
//     cancel callback has run (spec 1, state 5) it is an ordinary canceled,
//     driver-owned request: it can be completed, forwarded (the destination's
//     cancel path runs) or requeued (cancelled instead), and marking it again
//     runs the new callback; unmark still returns cancelled (C53).
//   * A canceled queued request handed to the canceled-on-queue callback is not
//     the driver's until that callback runs: acting on it before is
//     usage_not_owned (it is counted in driver_owned from the hand-over on).
//     (The differential driver never does this; tests/misuse_test.cpp covers it.)
//   * Cancel callbacks run before canceled-on-queue callbacks (section 7, loop
//     priority 1 and 2).
//   * Stop leaves queued requests queued, whatever happened before (C30): there
//     is no "purging" state beyond the cancel latch. A purge cancels what is
//     queued when it is called; what enters later is kept or cancelled by the
//     queue's flags alone (Accept for arrivals, the latch for requeues).
//   * A forward-progress arrival binds a free reserved request and then queues
//     it (where Accept is checked: a non-accepting queue completes it
//     invalid_device_state and the request counts as used), or parks when none
//     is free, whatever the queue's state (section 6, arrival steps 4 and 5;
//     WDF's GetReservedRequest checks no state). A reserved request returns to
//     its owning queue on its final release, after the completing queue was
//     notified: driver-1 and its dispatch pass come first, then a parked packet
//     is served (section 4 Complete, section 6 "Return of a reserved request").
//   * Reserved requests the driver owns are owned requests like any other: they
//     get stop and resume callbacks and are cancelled by purge when marked
//     cancelable, through whichever queue owns them now.
//   * A request that leaves the driver through forward or requeue ends its
//     pending stop notification and loses its resume mark (it left the
//     driver-owned list).
//
// Left out
//   Filter devices and pass-down, routing/creation errors (see the conformance
//   suites), passive execution level, per-core runtimes, submit_batch, the
//   blocking forms beyond "the condition already holds" (sync_* return
//   Status::pending when the real call would block), QueueCounters and
//   DeviceStats other than free requests.
//
// Threads
//   One thread. Nothing is synchronized.
#pragma once

#include <ioq/device.hpp>
#include <ioq/packet.hpp>
#include <ioq/queue.hpp>
#include <ioq/status.hpp>
#include <ioq/types.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ioq::model {

class Device;
class Queue;
struct Req;

// A request handle: the device and a binding number (0 = the null request).
// Each binding of a packet to a request gets a new number, never reused.
class Request {
 public:
  Request() = default;
  Request(Device* d, std::uint64_t h) : dev_(d), h_(h) {}
  [[nodiscard]] std::uint64_t handle() const { return h_; }
  explicit operator bool() const { return h_ != 0; }
  friend bool operator==(const Request& a, const Request& b) { return a.h_ == b.h_; }

  Status complete(Status status, std::uint64_t information = 0) const;
  Status requeue() const;
  Status forward_to_queue(Queue& destination) const;
  Status mark_cancelable(std::function<void(Request)> cb) const;
  Status mark_cancelable_ex(std::function<void(Request)> cb) const;
  Status unmark_cancelable() const;
  Status stop_acknowledge(bool requeue) const;
  [[nodiscard]] bool is_canceled() const;
  [[nodiscard]] bool is_reserved() const;
  // These four on a handle that names no live request: the zero value and a
  // usage error (usage_already_completed); validate() only asks.
  [[nodiscard]] Queue* queue() const;
  [[nodiscard]] Packet* packet() const;
  [[nodiscard]] Status validate() const;

 private:
  // The live request, or nullptr (a usage error unless the handle is null).
  [[nodiscard]] const Req* live_or_report() const;
  Device* dev_ = nullptr;
  std::uint64_t h_ = 0;
};

using IoHandler = std::function<void(Queue&, Request)>;
using StopHandler = std::function<void(Queue&, Request, std::uint32_t)>;
using QueueCallback = std::function<void(Queue&)>;

struct QueueConfig {
  DispatchType dispatch = DispatchType::sequential;
  std::optional<std::uint32_t> max_presented{};
  TriState power_managed = TriState::use_default;
  bool allow_zero_length = false;
  bool default_queue = false;
  IoHandler on_read, on_write, on_device_control, on_internal_device_control, on_default;
  StopHandler on_stop;
  IoHandler on_resume;
  IoHandler on_canceled_on_queue;
  std::string name;
};

struct ForwardProgressConfig {
  std::uint32_t total_reserved = 0;
  ForwardProgressPolicy policy = ForwardProgressPolicy::always_use_reserved;
  std::function<ExamineResult(Queue&, Packet&)> examine;
  std::function<Status(Queue&, Request)> allocate_reserved_resources;
  std::function<Status(Queue&, Request)> allocate_request_resources;
};

struct DeviceConfig {
  std::uint32_t max_requests = 4096;
  std::uint32_t max_reserved_requests = 1024;
  bool control_device = false;  // non-PnP: no queue is power-managed
};

// The model's allocation fault injection: the documented modes of
// ioq::FaultInjector that are deterministic across instances.
enum class FaultMode { never, always, every_nth };

// One request of the model (spec section 1, "States of a request").
struct Req {
  enum class Where { free, queued, owned, coq_pending };
  // none: not cancelable; marked: state 3; pending: state 4 (cancel callback
  // scheduled, not run); ran: state 5 (callback ran, driver still owns it).
  enum class Cancel { none, marked, pending, ran };

  std::uint64_t handle = 0;  // 0 while unbound
  Packet* packet = nullptr;
  Queue* queue = nullptr;           // current queue (queued in it or owned through it)
  Queue* reserved_owner = nullptr;  // set for reserved requests
  Where where = Where::free;
  bool presented = false;
  bool canceled = false;
  Cancel cancel = Cancel::none;
  std::function<void(Request)> cancel_cb;
  bool stop_notified = false;  // given a stop callback (or awaited): not yet acknowledged or completed
  bool acked = false;          // acknowledged without requeue: gets the resume callback
  std::uint64_t owned_seq = 0; // when it became driver-owned (iteration order)
};

class Queue {
 public:
  Queue(Device& dev, QueueConfig cfg, bool power_managed, std::size_t index);
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  Status start();
  Status stop(QueueCallback cb = nullptr);
  Status stop_and_purge(QueueCallback cb = nullptr);
  Status drain(QueueCallback cb = nullptr);
  Status purge(QueueCallback cb = nullptr);
  // The synchronous forms: success once the condition holds, usage_in_handler
  // from a callback of this queue, Status::pending when the real call would
  // have to wait for another thread (the model cannot; the async part ran).
  Status stop_synchronously();
  Status stop_and_purge_synchronously();
  Status drain_synchronously();
  Status purge_synchronously();

  [[nodiscard]] QueueState get_state() const;
  Status ready_notify(QueueCallback cb);
  Status retrieve_next_request(Request& out);
  Status retrieve_next_request_by_file_object(FileHandle file, Request& out);
  Status find_request(Request after, FileHandle file, Request& out);
  Status retrieve_found_request(Request tag, Request& out);
  Status assign_forward_progress_policy(const ForwardProgressConfig& config);
  [[nodiscard]] ForwardProgressStats forward_progress_stats() const;

  [[nodiscard]] Device& device() const { return dev_; }
  [[nodiscard]] std::size_t index() const { return index_; }
  [[nodiscard]] DispatchType dispatch_type() const { return cfg_.dispatch; }
  [[nodiscard]] bool power_managed() const { return pm_; }
  [[nodiscard]] const QueueConfig& config() const { return cfg_; }

 private:
  friend class Device;
  friend class Request;

  struct ForwardProgress {
    ForwardProgressConfig cfg;
    std::vector<std::unique_ptr<Req>> reserved;
    std::deque<Req*> free_list;
    std::deque<Packet*> parked;
    std::uint64_t reserved_used = 0;
    std::uint64_t parked_total = 0;
  };

  bool manual() const { return cfg_.dispatch == DispatchType::manual; }
  void dispatch();  // DispatchEvents
  void deliver(Req* r);
  void insert_tail(Req* r);
  void insert_head(Req* r);
  void arrive(Req* r);  // a new request (normal or reserved)
  // Cancellation sweep of the queued requests matching `match` (file close,
  // purge, stop_and_purge, removal).
  void sweep(const std::function<bool(const Req&)>& match);
  void cancel_cancelable_owned();
  void cancel_parked(const FileHandle* file);
  // A driver-owned request canceled for the queue's reasons (requeue or
  // stop_acknowledge(requeue) with the latch set or the request canceled).
  void cancel_owned_as_queued(Req* r);
  void power_down(std::uint32_t flags);
  void power_up_notify();
  void power_up_release();
  void shutdown();
  std::vector<Req*> owned_requests() const;  // owned or handed over, in owned_seq order
  Status sync(int which);

  Device& dev_;
  const QueueConfig cfg_;
  const bool pm_;
  const std::size_t index_;
  const std::uint32_t limit_;

  bool accept_ = true, dispatch_ = true, pnp_held_ = false, latch_ = false, shutdown_ = false;
  bool barrier_ = false;  // power notifications in progress: no delivery, no cancel/COQ callbacks
  std::deque<Req*> fifo_;
  std::uint32_t driver_ = 0;
  int in_loop_ = 0;
  bool idle_armed_ = false, purge_armed_ = false;
  QueueCallback idle_cb_, purge_cb_;
  QueueCallback ready_cb_;
  bool ready_flag_ = false;  // m_TransitionFromEmpty
  std::deque<Req*> cancel_events_, coq_events_;
  std::int32_t power_pending_ = 0;
  std::unique_ptr<ForwardProgress> fp_;
};

class Device {
 public:
  explicit Device(const DeviceConfig& cfg);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // invalid_parameter / wdf_no_callback / invalid_device_state / invalid_device_request
  // as ioq's create_queue; nullptr and the status in `error` on failure.
  Queue* create_queue(const QueueConfig& cfg, Status* error = nullptr);
  Status configure_request_dispatching(Queue& q, RequestType type);
  Status start();

  Status submit(Packet& p);
  Status cancel(Packet& p);
  FileHandle open_file();
  Status close_file(FileHandle f);
  Status suspend();
  Status resume();
  Status remove();
  [[nodiscard]] PowerState power_state() const { return power_; }

  [[nodiscard]] VerifierCounts verifier() const { return verifier_; }
  [[nodiscard]] std::uint32_t free_requests() const { return cfg_.max_requests - live_normal_; }
  [[nodiscard]] std::int32_t pending_power_acks() const;
  void set_fault(FaultMode mode, std::uint32_t n = 1);
  [[nodiscard]] const std::vector<std::unique_ptr<Queue>>& queues() const { return queues_; }

 private:
  friend class Queue;
  friend class Request;

  Status usage(Status s) {
    ++verifier_.by_status[static_cast<std::size_t>(s)];
    return s;
  }
  bool should_fail_allocation();
  Req* live(std::uint64_t h) const;
  // The request behind a handle, or the status (counted where ioq counts it).
  Status check_owned(std::uint64_t h, Req*& out);
  Req* new_normal(Packet& p);
  void bind(Req* r, Packet& p);
  // Completes r's packet (the request is unbound first, as ioq frees the slot
  // before the packet's callback). The caller updates the queue counts.
  void finish_packet(Req* r, Status status, std::uint64_t info);
  // After finish_packet: a reserved request goes back to its owner, a normal one is freed.
  void release(Req* r);
  static void complete_unbound(Packet& p, Status s);
  void complete_owned(Req* r, Status status, std::uint64_t info);
  void arrive_without_request(Queue& q, Packet& p);
  void fp_return(Queue& owner, Req* r);
  Queue* route(RequestType t) const;

  DeviceConfig cfg_;
  std::vector<std::unique_ptr<Queue>> queues_;
  Queue* routes_[kRequestTypeCount] = {};
  Queue* default_ = nullptr;
  bool started_ = false;
  PowerState power_ = PowerState::d0;
  std::set<std::uint64_t> files_;
  std::uint64_t next_file_ = 1;
  VerifierCounts verifier_{};
  FaultMode fault_ = FaultMode::never;
  std::uint32_t fault_n_ = 1;
  std::uint64_t fault_counter_ = 0;
  std::map<std::uint64_t, Req*> live_;
  std::map<Req*, std::unique_ptr<Req>> normal_;  // normal requests, owned here
  std::map<Packet*, Queue*> parked_;             // packets waiting for a reserved request
  std::uint64_t next_handle_ = 1;
  std::uint32_t live_normal_ = 0;
  std::uint64_t owned_seq_ = 0;
  std::uint32_t reserved_in_use_ = 0;
};

}  // namespace ioq::model
