// ioq/request.hpp — a request, as the driver side sees it.
//
// What it is
//   `ioq::Request` is a small value: the 64-bit, generation-checked handle of a
//   slot in the device's request slab, bound to one submitter packet. Copying it
//   copies the handle. Every operation first checks the handle: a stale one (the
//   request completed and the slot may have been reused) or a forged one gives
//   Status::invalid_handle and touches nothing.
//
// Ownership (spec section 1)
//   A request is either queued (owned by a queue) or owned by the driver
//   (delivered to a handler, returned by a retrieve, handed over by the
//   canceled-on-queue callback). Only the driver's requests may be completed,
//   forwarded, requeued, marked cancelable or acknowledged; acting on a queued,
//   completed or foreign request is a usage error: a distinct status, a count in
//   Device::verifier(), an abort when abort-on-misuse is on, and never a lost or
//   doubled completion.
//
// Operations and their statuses
//   complete(s, info)      success; usage_not_owned (queued), usage_cancelable
//                          (marked cancelable: unmark first, or complete from its
//                          cancel callback), usage_already_completed / invalid_handle.
//                          Completion runs the packet's callback, then releases
//                          the driver's count and may dispatch the next request on
//                          this thread when no dispatch is active (C11, C12).
//   requeue()              manual queues only (else invalid_device_request); puts
//                          the request back at the head. With the queue's cancel
//                          latch set or the request canceled, cancels it instead
//                          and still returns success.
//   forward_to_queue(q)    invalid_device_request: same queue, another device's
//                          queue; usage_cancelable: marked cancelable; wdf_busy:
//                          q does not accept (nothing changes). On success q owns
//                          it (tail of q), and q may deliver it before this returns.
//   mark_cancelable(cb)    the cancel callback runs once if the request is
//                          canceled; if it already is (or the queue's latch is
//                          set) cb runs through the dispatch loop, maybe before
//                          this returns. mark_cancelable_ex returns cancelled
//                          instead of running cb.
//   unmark_cancelable()    success: cb will never run; cancelled: cb has won (it
//                          runs or ran, and completes the request).
//   is_canceled()          the OS or the framework canceled it.
//   stop_acknowledge(rq)   from a stop callback: true puts it back at the head of
//                          its queue (delivered again after resume); false keeps it
//                          owned (the resume callback runs for it).
//
// Threads
//   Any operation from any thread. The driver must not complete one request
//   from two threads at once (that is a double completion: one wins, the other
//   gets usage_already_completed or invalid_handle).
//
// Memory ordering
//   Completion is a release: the packet's callback (on any thread) sees every
//   write made before complete(). Delivery is an acquire: a handler sees every
//   write the submitter made to the packet before submit().
#pragma once

#include <cstdint>

#include <ioq/status.hpp>
#include <ioq/types.hpp>

namespace ioq {

struct Packet;
class Request;

// EvtRequestCancel: the driver completes the request from it (or later).
using CancelCallback = void (*)(Request request, void* ctx) noexcept;

class Request {
 public:
  constexpr Request() noexcept = default;
  constexpr explicit Request(std::uint64_t handle) noexcept : handle_(handle) {}

  [[nodiscard]] constexpr std::uint64_t handle() const noexcept { return handle_; }
  [[nodiscard]] constexpr explicit operator bool() const noexcept { return handle_ != 0; }
  friend constexpr bool operator==(Request, Request) noexcept = default;

  Status complete(Status status, std::uint64_t information = 0) const noexcept;
  // Completes with Status::io_error carrying `err` (a positive errno).
  Status complete_with_errno(int err, std::uint64_t information = 0) const noexcept;
  Status requeue() const noexcept;
  Status forward_to_queue(Queue& destination) const noexcept;
  Status mark_cancelable(CancelCallback cb, void* ctx = nullptr) const noexcept;
  Status mark_cancelable_ex(CancelCallback cb, void* ctx = nullptr) const noexcept;
  Status unmark_cancelable() const noexcept;
  [[nodiscard]] bool is_canceled() const noexcept;
  Status stop_acknowledge(bool requeue) const noexcept;
  [[nodiscard]] bool is_reserved() const noexcept;

  // success while the handle names a live request, else invalid_handle. The
  // one query that may be asked of a stale handle: it counts nothing.
  [[nodiscard]] Status validate() const noexcept;

  // The queue that currently owns or holds the request (WdfRequestGetIoQueue);
  // nullptr for a stale handle.
  //
  // This and every getter below, is_canceled() and is_reserved(): a stale or
  // forged handle naming the device's slab returns the zero/null value and is
  // a usage error (usage_already_completed right after the request completed,
  // invalid_handle once its slot is reused or for a forged handle), counted in
  // Device::verifier() and fatal with abort-on-misuse.
  [[nodiscard]] Queue* queue() const noexcept;

  // Parameters (WdfRequestGetParameters).
  [[nodiscard]] RequestType type() const noexcept;
  [[nodiscard]] std::uint64_t offset() const noexcept;
  [[nodiscard]] std::uint32_t length() const noexcept;
  [[nodiscard]] std::uint32_t ioctl_code() const noexcept;
  [[nodiscard]] void* buffer() const noexcept;
  [[nodiscard]] FileHandle file() const noexcept;
  [[nodiscard]] Packet* packet() const noexcept;

  // The request's inline context area (DeviceConfig::request_context_bytes),
  // or nullptr. It is not cleared between uses.
  [[nodiscard]] void* context_area() const noexcept;
  template <typename T>
  [[nodiscard]] T* context() const noexcept {
    return static_cast<T*>(context_area());
  }

 private:
  std::uint64_t handle_ = 0;
};

}  // namespace ioq
