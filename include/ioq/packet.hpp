// ioq/packet.hpp — the caller-owned I/O packet a submitter hands to a device.
//
// What it is
//   A Packet is the user-space counterpart of an IRP: it describes one I/O
//   (type, offset, length, buffer, control code, file, paging flag) and carries
//   the submitter's completion callback. The submitter owns the memory; ioq
//   never allocates or frees a packet. Device::submit binds it to a request
//   (from the device's preallocated slab) and routes it to a queue.
//
// Completion
//   Once Device::submit has returned Status::pending, `on_complete` runs exactly
//   once, possibly before submit returns (on the submitting thread), with
//   `status`, `information` (bytes transferred, or 0) and `sys_errno` (for
//   Status::io_error) already filled in. After the callback starts, ioq touches
//   nothing of the packet again: the callback may free or reuse it.
//   If submit returns anything else, the packet was rejected as malformed, the
//   callback never runs, and `status` holds the same value.
//
// Cancellation
//   `request` holds the handle of the bound request from the moment submit
//   has placed it: before its handler runs, before it is queued, and before
//   its completion on any path (0 until then, and for a packet completed
//   without a request); Device::cancel(packet) or Device::cancel(handle)
//   cancels it. A handle of a packet that has completed is stale and is
//   rejected.
//
// Threads
//   A packet belongs to one submitter; submit, cancel and the callback may run
//   on different threads, ordered as described in Device.
//
// Memory ordering
//   Everything the handler side wrote to the packet's buffer before completing
//   the request is visible to `on_complete` (completion publishes with release,
//   the callback runs after the matching acquire).
#pragma once

#include <cstdint>

#include <ioq/status.hpp>
#include <ioq/types.hpp>

namespace ioq {

struct Packet;

// Called exactly once per accepted packet.
using PacketCallback = void (*)(Packet& packet) noexcept;

// For the forward-progress examine policy (Queue::assign_forward_progress_policy).
enum class ExamineResult : std::uint8_t { use_reserved, fail };
using ExamineCallback = ExamineResult (*)(Queue& queue, Packet& packet, void* ctx) noexcept;

enum PacketFlags : std::uint32_t {
  kPacketPaging = 0x1,  // paging I/O (forward-progress paging policy)
};

struct Packet {
  // ---- what the submitter fills in ----
  RequestType type = RequestType::read;
  std::uint32_t flags = 0;           // PacketFlags
  std::uint64_t offset = 0;          // byte offset (read, write, discard, ...)
  std::uint32_t length = 0;          // byte length of the transfer
  std::uint32_t ioctl_code = 0;      // device_control / internal_device_control
  void* buffer = nullptr;            // data buffer (input for writes, output for reads)
  std::uint32_t output_length = 0;   // output buffer length for control requests
  FileHandle file{};                 // the file object this I/O is issued on (0: none)
  PacketCallback on_complete = nullptr;
  void* user = nullptr;              // free for the submitter

  // ---- what ioq fills in ----
  Status status = Status::pending;   // final status, valid in on_complete
  std::int32_t sys_errno = 0;        // errno for Status::io_error
  std::uint64_t information = 0;     // bytes transferred (or request-specific)
  std::uint64_t request = 0;         // handle of the bound request (for cancel)

  // ---- ioq's own, do not touch ----
  Packet* link = nullptr;            // intrusive link: parked in forward progress
  std::uintptr_t parked = 0;         // the queue it is parked on (forward progress)
};

}  // namespace ioq
