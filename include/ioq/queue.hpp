// ioq/queue.hpp — an I/O queue: configuration, state machine, operations.
//
// What it is
//   A queue holds the requests routed to it in FIFO order and delivers them to
//   the driver's handlers (sequential: one owned at a time; parallel: up to
//   max_presented owned at a time) or lets the driver pull them (manual). It
//   tracks two counts: queued (held by the queue) and driver-owned (delivered
//   and not yet completed, forwarded or requeued). Queues are created by and
//   belong to a Device; a Queue& stays valid as long as the device lives.
//
// State (get_state flags) and what happens to requests (spec section 3)
//
//   | flags            | new I/O                        | forward / requeue in | queued requests       |
//   |------------------|--------------------------------|----------------------|-----------------------|
//   | Accept+Dispatch  | delivered, or queued           | accepted             | delivered             |
//   | Accept only      | queued                         | accepted             | held                  |
//   | Dispatch only    | completed invalid_device_state | wdf_busy             | delivered             |
//   | neither          | completed invalid_device_state | wdf_busy             | held                  |
//   | PnpHeld          | queued if Accept               | queued if Accept     | held; retrieve: wdf_paused |
//
// Operations
//
//   | operation       | flags after                        | queued requests        | driver-owned           | callback fires / sync form returns when |
//   |-----------------|------------------------------------|------------------------|------------------------|------------------------------------------|
//   | start           | Accept (unless removed) + Dispatch; clears latch | delivered; ReadyNotify re-armed | untouched | — (may run handlers on the caller)       |
//   | stop            | Accept, no Dispatch                | kept                   | untouched, no stop cb  | driver==0, no other handler running      |
//   | stop_and_purge  | Accept, no Dispatch; sets latch    | those queued now cancelled | cancelable: cancel cb | as stop                              |
//   | purge           | no Accept, Dispatch kept; latch    | all cancelled          | cancelable: cancel cb  | queued==0, driver==0, no other handler   |
//   | drain           | no Accept, Dispatch kept           | still delivered        | untouched              | as purge                                 |
//
//   A cancelled queued request that was presented before (forwarded in,
//   requeued) goes to the canceled-on-queue handler when the queue has one (the
//   driver then owns it); otherwise it completes with Status::cancelled.
//   The stop/drain/purge callbacks use two slots: "idle" (stop, stop_and_purge)
//   and "purge" (drain, purge). Passing a callback while its slot is busy is a
//   usage error (usage_slot_busy); a null callback uses no slot. A callback may
//   run before the call returns. The *_synchronously forms wait for the
//   condition and return usage_in_handler when called from a handler of the
//   same queue (they would never return).
//
// Batches
//   A queue configured with on_batch instead of the per-type handlers is given
//   its requests in runs: those that arrive together (a Device::submit_batch
//   delivered at once) come in calls of up to 64, in submission order; a
//   request the dispatch loop takes from the queue comes alone. Each request
//   of a run is presented and driver-owned exactly as if an IoHandler had
//   received it; the call only saves the per-request call, so that a handler
//   that sends to a target can hand it the whole run (Target::send_batch).
//   Zero-length reads and writes are completed before the call unless
//   allow_zero_length.
//
// Re-entrancy
//   A completion inside a handler never runs the next handler nested; the
//   dispatch that called the handler delivers it after the handler returns. A
//   completion on a thread outside any dispatch of this queue may deliver the
//   next request on that thread before returning.
//
// Threads
//   Every operation is safe from any thread. Arrivals, delivery, completion,
//   forward and requeue are lock-free in steady state; control operations
//   (start, stop, drain, purge, ready_notify) serialize on a per-queue mutex
//   and never hold it across a callback.
//
// Memory ordering
//   A handler sees everything the submitter wrote before submit (the arrival
//   publishes with release, delivery acquires). A stop/drain/purge callback
//   sees every completion that made its condition true.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include <ioq/packet.hpp>
#include <ioq/request.hpp>
#include <ioq/status.hpp>
#include <ioq/types.hpp>

namespace ioq {

using IoHandler = void (*)(Queue& queue, Request request);
// A run of requests presented together (see Batches above): the driver owns
// each of them on entry. The span is valid during the call only.
using BatchHandler = void (*)(Queue& queue, std::span<const Request> requests);
using StopHandler = void (*)(Queue& queue, Request request, std::uint32_t stop_flags);
using ResumeHandler = void (*)(Queue& queue, Request request);
using CanceledOnQueueHandler = void (*)(Queue& queue, Request request);
// Stop/drain/purge completion, and ReadyNotify.
using QueueCallback = void (*)(Queue& queue, void* ctx);

struct QueueConfig {
  DispatchType dispatch = DispatchType::sequential;
  // Parallel only: the most requests the driver may own at once. Unset means
  // unlimited; 0 is rejected; setting it on a sequential or manual queue is
  // rejected (invalid_parameter).
  std::optional<std::uint32_t> max_presented{};
  ExecutionLevel execution = ExecutionLevel::dispatch;
  TriState power_managed = TriState::use_default;  // default: yes, except filters
  bool allow_zero_length = false;  // deliver 0-byte reads/writes instead of completing them
  bool default_queue = false;      // receives every type without a queue of its own

  // Handlers (non-manual queues need at least one I/O handler; manual queues none).
  IoHandler on_read = nullptr;
  IoHandler on_write = nullptr;
  IoHandler on_device_control = nullptr;
  IoHandler on_internal_device_control = nullptr;
  IoHandler on_default = nullptr;  // every type without a specific handler
  // Every type, in runs (see Batches above), instead of the five above: set
  // this or those (both: invalid_parameter). Sequential and parallel queues.
  BatchHandler on_batch = nullptr;
  StopHandler on_stop = nullptr;
  ResumeHandler on_resume = nullptr;
  CanceledOnQueueHandler on_canceled_on_queue = nullptr;

  void* context = nullptr;   // returned by Queue::context()
  const char* name = "";     // for counters and diagnostics
};

// Forward progress (spec section 6): what a queue does when a request cannot
// be allocated (the device's slab is exhausted, the allocation hook failed it,
// or allocate_request_resources refused it).
enum class ForwardProgressPolicy : std::uint8_t {
  always_use_reserved,  // use a reserved request
  examine,              // ask ForwardProgressConfig::examine per packet
  paging_io,            // use a reserved request for kPacketPaging packets only
};

// Allocates the driver's resources for a request; anything but success fails it.
using RequestResourcesCallback = Status (*)(Queue& queue, Request request, void* ctx);

struct ForwardProgressConfig {
  std::uint32_t total_reserved = 0;  // reserved requests preallocated now (> 0)
  ForwardProgressPolicy policy = ForwardProgressPolicy::always_use_reserved;
  ExamineCallback examine = nullptr;  // required for ForwardProgressPolicy::examine
  // Called once per reserved request at assignment; one failure undoes all.
  RequestResourcesCallback allocate_reserved_resources = nullptr;
  // Called on arrival for each normally allocated request; a failure makes the
  // arrival go through the policy as if allocation had failed.
  RequestResourcesCallback allocate_request_resources = nullptr;
  void* context = nullptr;  // passed to the three callbacks
};

// Counts of a queue's reserved requests. free + in_use == total whenever no
// reserved request is changing hands (exact when quiescent, else a snapshot).
struct ForwardProgressStats {
  std::uint32_t total = 0;
  std::uint32_t free = 0;           // on the free list
  std::uint32_t in_use = 0;         // bound to a packet
  std::uint32_t parked = 0;         // packets waiting for a reserved request
  std::uint64_t reserved_used = 0;  // packets served by a reserved request, ever
  std::uint64_t parked_total = 0;   // packets that had to wait, ever
};

struct QueueState {
  std::uint32_t flags = 0;          // QueueStateFlags
  std::uint32_t queued = 0;         // snapshot
  std::uint32_t driver_owned = 0;   // snapshot
};

// Live counters, summed over threads on read (each a snapshot).
struct QueueCounters {
  std::uint64_t arrived = 0;      // new requests routed here and accepted
  std::uint64_t presented = 0;    // delivered to a handler or retrieved
  std::uint64_t completed = 0;    // completed while owned through this queue
  std::uint64_t cancelled = 0;    // completed Status::cancelled by the queue
  std::uint64_t forwarded = 0;    // forwarded out of this queue
  std::uint64_t requeued = 0;     // requeued (or acknowledged with requeue)
  std::uint64_t rejected = 0;     // arrivals refused (invalid_device_state)
};

class Queue {
 public:
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  Status start() noexcept;
  Status stop(QueueCallback cb = nullptr, void* ctx = nullptr) noexcept;
  Status stop_synchronously() noexcept;
  Status stop_and_purge(QueueCallback cb = nullptr, void* ctx = nullptr) noexcept;
  Status stop_and_purge_synchronously() noexcept;
  Status drain(QueueCallback cb = nullptr, void* ctx = nullptr) noexcept;
  Status drain_synchronously() noexcept;
  Status purge(QueueCallback cb = nullptr, void* ctx = nullptr) noexcept;
  Status purge_synchronously() noexcept;

  [[nodiscard]] QueueState get_state() const noexcept;

  // Manual queues: cb runs when the queue goes from empty to non-empty while
  // dispatching and powered (it may be spurious). cb == nullptr unregisters
  // (allowed only while stopped).
  Status ready_notify(QueueCallback cb, void* ctx = nullptr) noexcept;

  // Pull requests (manual queues; sequential queues too). On failure `out` is
  // a null Request. success, no_more_entries, wdf_paused (stopped or powered
  // off), invalid_device_state (parallel queue).
  Status retrieve_next_request(Request& out) noexcept;
  Status retrieve_next_request_by_file_object(FileHandle file, Request& out) noexcept;
  // Manual queues: the next queued request after `after` (or the first when
  // `after` is null) whose file matches `file` (any file when null). The found
  // request stays queued; `out` is a weak tag: read its parameters, then pass
  // it to retrieve_found_request. not_found when `after` is no longer queued,
  // no_more_entries at the end, invalid_device_request on other queues.
  Status find_request(Request after, FileHandle file, Request& out) noexcept;
  Status retrieve_found_request(Request tag, Request& out) noexcept;

  // Reserves total_reserved requests for this queue and sets the policy.
  // invalid_parameter: a policy is already set, total_reserved == 0, or the
  // examine policy without an examine callback. If allocate_reserved_resources
  // fails (or memory runs out), everything is undone, no policy is set, and
  // that status is returned. Safe on a running queue: the policy takes effect
  // last. Packets waiting for a reserved request stay cancelable
  // (Device::cancel(packet)) and are cancelled by purge, drain,
  // stop_and_purge and the close of their file.
  Status assign_forward_progress_policy(const ForwardProgressConfig& config) noexcept;
  [[nodiscard]] ForwardProgressStats forward_progress_stats() const noexcept;

  [[nodiscard]] Device& device() const noexcept;
  // QueueConfig::context (inline: handlers read it on every request).
  [[nodiscard]] void* context() const noexcept { return context_; }
  [[nodiscard]] const char* name() const noexcept;
  [[nodiscard]] DispatchType dispatch_type() const noexcept;
  [[nodiscard]] bool power_managed() const noexcept;
  [[nodiscard]] QueueCounters counters() const noexcept;

 protected:
  explicit Queue(void* context) noexcept : context_(context) {}
  ~Queue() = default;

 private:
  void* const context_;
};

}  // namespace ioq
