// ioq/device.hpp — a device: request routing, queues, files, power, submission.
//
// What it is
//   A Device owns its queues, a preallocated request slab, a routing table from
//   request type to queue, the file objects opened on it, and its power state.
//   A submitter hands it caller-owned Packets; the device binds each to a
//   request and routes it:
//     1. a queue routed for the type (configure_request_dispatching), else
//     2. the default queue, else
//     3. completed invalid_device_request (a function device) or passed to the
//        lower device (a filter).
//   In a filter, a type the default queue has no handler for also goes down.
//
// Life cycle
//   create -> create_queue / configure_request_dispatching -> start (D0) ->
//   submit ... -> suspend (Dx) / resume (D0) -> remove. Routing and the default
//   queue are fixed at start. Destroying the device requires every submitted
//   packet to have completed (remove() first, and complete what the driver owns).
//
// Submission
//   submit() never blocks and, in steady state, never allocates. It returns
//   Status::pending when the packet's callback will run exactly once (maybe
//   before submit returns), or invalid_parameter for a malformed packet (no
//   callback). cancel() cancels a submitted packet by its request handle:
//   success (cancel requested), or invalid_handle when the request has
//   completed already (the handle is stale) or is not placed yet (a cancel
//   racing the packet's submit() on another thread; see Packet::request).
//
// Power (spec section 3, C56-C62)
//   suspend() takes power-managed queues out of D0: it waits until no handler
//   runs, calls each queue's stop handler for every request the driver owns
//   (kStopSuspend, plus kStopRequestCancelable), and returns once each is
//   completed or acknowledged. resume() calls the resume handler for requests
//   acknowledged without requeue, then lets every queue dispatch again.
//   remove() stops accepting for good, purges, calls the stop handler with
//   kStopPurge, and waits for the driver's requests as suspend does.
//   Non-power-managed queues ignore suspend and resume.
//
// Misuse
//   Usage errors (see ioq/status.hpp) are counted per status in verifier();
//   with abort_on_misuse the process aborts at the first one, with a message.
//
// Threads
//   submit, cancel, open_file, close_file and the queue and request
//   operations are safe from any thread. create_queue, configure_request_-
//   dispatching, start, suspend, resume and remove are control operations:
//   call them from one thread at a time, never from a handler.
//
// Memory ordering
//   See ioq/packet.hpp and ioq/request.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include <ioq/fault.hpp>
#include <ioq/packet.hpp>
#include <ioq/queue.hpp>
#include <ioq/request.hpp>
#include <ioq/result.hpp>
#include <ioq/status.hpp>
#include <ioq/types.hpp>

namespace ioq {

class Runtime;

struct DeviceConfig {
  std::uint32_t max_requests = 4096;         // request slab slots (in flight at once)
  std::uint32_t max_reserved_requests = 1024;  // budget for all queues' forward-progress reserves
  std::uint32_t request_context_bytes = 0;   // inline context per request
  bool filter = false;                       // a filter device (see routing)
  Device* lower = nullptr;                   // filter: where pass-down requests go
  bool control_device = false;               // non-PnP: its queues are never power-managed
  std::uint32_t passive_workers = 0;         // passive-level worker threads (0: one per core)
  bool abort_on_misuse = false;              // abort at the first usage error
  AllocHook alloc_hook{};                    // consulted before every request allocation
  // Per-core dispatch (ioq/runtime.hpp). Null: handlers run on whichever
  // thread dispatches. Set: parallel queues without a presented limit keep a
  // FIFO shard per core and deliver on the core a request arrived on;
  // sequential and manual queues run their dispatch on a home core.
  Runtime* runtime = nullptr;
  const char* name = "ioq";
};

enum class PowerState : std::uint8_t { d0, dx, removed };

// Usage errors counted per kind (Device::verifier).
struct VerifierCounts {
  std::array<std::uint64_t, kStatusCount> by_status{};
  [[nodiscard]] std::uint64_t operator[](Status s) const noexcept {
    return by_status[static_cast<std::size_t>(s)];
  }
  [[nodiscard]] std::uint64_t total() const noexcept {
    std::uint64_t t = 0;
    for (auto v : by_status) t += v;
    return t;
  }
};

struct DeviceStats {
  std::uint32_t max_requests = 0;
  std::uint32_t free_requests = 0;   // snapshot (ring + per-thread caches)
  std::uint64_t allocation_failures = 0;
  std::uint64_t injected_failures = 0;
  std::uint64_t submitted = 0;
  std::uint64_t completed = 0;
};

class Device {
 public:
  static Result<std::unique_ptr<Device>> create(const DeviceConfig& config = {});
  virtual ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Creates a queue owned by this device. Errors (spec section 2):
  //   invalid_parameter: bad dispatch type, a manual queue with a handler,
  //     max_presented set on a non-parallel queue or 0 on a parallel one;
  //   wdf_no_callback: a sequential/parallel queue without an I/O handler;
  //   invalid_device_state: a default queue after start();
  //   invalid_device_request: a second default queue.
  Result<Queue*> create_queue(const QueueConfig& config);

  // Routes `type` to `queue`. In order: invalid_parameter (type not create,
  // read, write, device_control or internal_device_control),
  // invalid_device_request (queue of another device), invalid_device_state
  // (device started), invalid_device_request (queue lacks a handler for the
  // type: manual queues and queues with on_default take any), invalid_device_-
  // request (the default queue), wdf_busy (type already routed elsewhere).
  Status configure_request_dispatching(Queue& queue, RequestType type) noexcept;

  [[nodiscard]] Queue* default_queue() const noexcept;

  // Ends initialisation: the device enters D0 and routing is frozen.
  Status start() noexcept;

  Status submit(Packet& packet) noexcept;
  // Submits packets[0..n) in order, as n submit() calls would (each gets
  // pending or is rejected the same way), but in one step where it can: on a
  // parallel queue without a presented limit whose FIFO is empty, one update
  // of the queue's state word delivers the whole batch. Returns pending when
  // every packet was accepted, else the first rejection's status (invalid_-
  // parameter for a packet without callback; the others were still submitted).
  Status submit_batch(Packet* const* packets, std::size_t n) noexcept;
  Status cancel(Packet& packet) noexcept;
  Status cancel(std::uint64_t request_handle) noexcept;

  // File objects. close_file cancels the file's queued requests in every queue
  // of the device (requests the driver owns are the driver's to finish).
  FileHandle open_file() noexcept;
  Status close_file(FileHandle file) noexcept;

  Status suspend() noexcept;
  Status resume() noexcept;
  Status remove() noexcept;
  [[nodiscard]] PowerState power_state() const noexcept;

  [[nodiscard]] VerifierCounts verifier() const noexcept;
  void set_abort_on_misuse(bool on) noexcept;
  [[nodiscard]] DeviceStats stats() const noexcept;
  // Every queue's counters (per core for per-core queues) and the device's
  // request counts, in Prometheus text exposition format.
  [[nodiscard]] std::string prometheus() const;
  [[nodiscard]] const DeviceConfig& config() const noexcept;

 protected:
  Device() = default;
};

}  // namespace ioq
