// ioq/types.hpp — small value types shared by the queue-model headers.
//
// What it is
//   Request types, dispatch and execution settings, the flags of a queue's
//   state and of an EvtIoStop-style notification, and the file handle. Every
//   name maps to a WDF one (see the README's name table).
//
// Threads
//   Plain values.
//
// Memory ordering
//   None.
#pragma once

#include <cstdint>

namespace ioq {

class Queue;
class Device;
class Request;

// The type of an I/O request. The first five can be routed to a queue with
// Device::configure_request_dispatching (WdfRequestTypeCreate ... Internal).
enum class RequestType : std::uint8_t {
  create = 0,
  read = 1,
  write = 2,
  device_control = 3,
  internal_device_control = 4,
  flush = 5,        // for targets (the io_uring backend); routed to the default queue
  discard = 6,
  write_zeroes = 7,
};
inline constexpr std::uint32_t kRequestTypeCount = 8;

enum class DispatchType : std::uint8_t {
  sequential,  // one request owned by the driver at a time, in arrival order
  parallel,    // up to QueueConfig::max_presented owned at a time
  manual,      // no handlers: the driver retrieves requests itself
};

// Where a queue's callbacks run.
enum class ExecutionLevel : std::uint8_t {
  dispatch,  // inline on the thread that dispatches; handlers must not block
  passive,   // on the device's oneTBB task arena; handlers may block
};

// WDF_TRI_STATE for QueueConfig::power_managed.
enum class TriState : std::uint8_t { use_default, yes, no };

// A file object (an open handle on the device), from Device::open_file.
// Value 0 means "no file".
struct FileHandle {
  std::uint64_t value = 0;
  friend constexpr bool operator==(FileHandle, FileHandle) = default;
  [[nodiscard]] constexpr explicit operator bool() const noexcept { return value != 0; }
};

// Flags of Queue::get_state (WDF_IO_QUEUE_STATE bits).
enum QueueStateFlags : std::uint32_t {
  kQueueAccepting = 0x01,        // new requests are accepted
  kQueueDispatching = 0x02,      // queued requests are delivered
  kQueueNoRequests = 0x04,       // nothing is queued
  kQueueDriverNoRequests = 0x08, // the driver owns nothing from this queue
  kQueuePnpHeld = 0x10,          // power-managed and the device is not in D0
};

// Flags passed to the stop callback (WDF_REQUEST_STOP_ACTION_FLAGS).
enum StopFlags : std::uint32_t {
  kStopSuspend = 0x1,               // the device is leaving D0
  kStopPurge = 0x2,                 // the device is being removed
  kStopRequestCancelable = 0x10000000,  // the request is marked cancelable
};

[[nodiscard]] const char* to_string(RequestType t) noexcept;

}  // namespace ioq
