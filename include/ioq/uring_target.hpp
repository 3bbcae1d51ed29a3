// ioq/uring_target.hpp — the io_uring block target.
//
// What it is
//   A Target that reads and writes a regular file or a block device through
//   io_uring: one ring per core of a Runtime, created on that core's thread
//   and used by it alone (IORING_SETUP_SINGLE_ISSUER, and DEFER_TASKRUN where
//   the kernel offers them: probed at run time, never assumed). Requests sent
//   on a core are prepared on its ring and submitted once per poll iteration
//   of the core; completions are reaped in batches by the same poll.
//
// Operations (Request::type)
//   read, write                 the request's buffer, offset, length;
//   flush                       fdatasync;
//   discard                     punched hole (a regular file) or discard (a
//                               block device): fallocate(PUNCH_HOLE|KEEP_SIZE);
//   write_zeroes                fallocate(ZERO_RANGE);
//   anything else               completes invalid_device_request.
//   With UringTargetConfig::nop every request becomes IORING_OP_NOP: the whole
//   ioq path without the device, to measure ioq's own cost. nop_delay_us > 0
//   makes each one a kernel timer of that length instead (IORING_OP_TIMEOUT):
//   a device with a fixed service time, whose requests stay in flight long
//   enough to be cancelled.
//
// O_DIRECT and alignment
//   direct (the default) opens with O_DIRECT. The alignment comes from the
//   file or device: statx(STATX_DIOALIGN) for a file, BLKSSZGET/BLKPBSZGET for
//   a device. A misaligned offset, length or buffer completes
//   invalid_parameter; it is never quietly turned into buffered I/O. Block
//   devices are opened O_EXCL.
//
// Depth, short transfers, errors
//   At most `depth` requests are in flight per core; more wait in the target,
//   in order, and never fail for want of ring space. Short reads and writes
//   are continued from where they stopped; EAGAIN and EINTR are retried; a
//   read that starts at or past the end completes end_of_file; any other
//   error completes io_error with the errno (Packet::sys_errno).
//
// Cancellation
//   A request in the target is marked cancelable. Cancelling it (the
//   submitter, a purge) cancels the I/O with IORING_OP_ASYNC_CANCEL; the
//   request completes once, when the kernel reports the original operation:
//   cancelled, or its real result if it finished first. Stop, drain and power
//   transitions wait for in-flight requests like any driver-owned request.
//
// Registered resources
//   register_file registers the fd with each ring (IOSQE_FIXED_FILE).
//   fixed_buffers > 0 allocates and registers that many buffers per core;
//   a request whose buffer lies inside its core's pool uses READ_FIXED /
//   WRITE_FIXED. If the kernel refuses registration (the memlock limit), the
//   target falls back to plain buffers and says so in info().fallback.
//
// Threads
//   send() from any thread: a thread serving a core uses that core's ring; a
//   thread serving none hands the request to core 0 through its mailbox. The
//   runtime must be polled (reactors, or the application's poll()). With
//   reactors, only core k's reactor thread is taken to serve core k: any other
//   thread (one bound with bind_thread, maybe to a runtime since destroyed)
//   hands its requests to core 0, and its poll() or wait() of a core leaves
//   the ring alone. Without reactors, the thread bound to a core is trusted
//   and must be the only one to serve it.
//   The destructor takes the target out of the runtime's pollers; with
//   reactors it then waits for every reactor to pass a poll iteration, and
//   without, no thread may be inside poll() while it runs.
//
// Memory ordering
//   The kernel's ring protocol orders the buffer contents; completion then
//   publishes to the packet's callback as for any request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <ioq/request.hpp>
#include <ioq/result.hpp>
#include <ioq/runtime.hpp>
#include <ioq/status.hpp>
#include <ioq/target.hpp>

namespace ioq {

// Test hook: an errno to fail the request with instead of issuing it, or 0.
using UringInjectFn = int (*)(void* ctx, RequestType type, std::uint64_t offset) noexcept;

struct UringTargetConfig {
  std::string path;                 // regular file or block device
  bool direct = true;               // O_DIRECT (aligned I/O only)
  bool writable = true;             // O_RDWR, else O_RDONLY
  bool create = false;              // create a missing regular file
  std::uint64_t size = 0;           // regular file: extend to at least this size
  std::uint32_t depth = 128;        // requests in flight per core
  std::uint32_t fixed_buffers = 0;  // registered buffers per core (0: none)
  std::uint32_t buffer_bytes = 4096;
  bool register_file = false;       // IOSQE_FIXED_FILE
  bool nop = false;                 // every request becomes IORING_OP_NOP
  std::uint32_t nop_delay_us = 0;   // nop: complete after this long (a timer)
  bool single_issuer = true;        // SINGLE_ISSUER|DEFER_TASKRUN where offered
  UringInjectFn inject = nullptr;   // errno injection (tests)
  void* inject_ctx = nullptr;
};

struct UringTargetInfo {
  bool block_device = false;
  std::uint64_t size = 0;              // bytes
  std::uint32_t offset_align = 1;      // O_DIRECT offset/length alignment
  std::uint32_t mem_align = 1;         // O_DIRECT buffer alignment
  std::uint32_t logical_block = 0;     // block devices: BLKSSZGET
  std::uint32_t physical_block = 0;    // block devices: BLKPBSZGET
  bool direct = false;
  bool single_issuer = false;          // the rings use SINGLE_ISSUER
  bool defer_taskrun = false;          // ... and DEFER_TASKRUN
  bool registered_file = false;
  bool fixed_buffers = false;
  std::string fallback;                // why a requested feature is off, if one is
};

struct UringCounters {
  std::uint64_t submitted = 0;   // SQEs submitted
  std::uint64_t completed = 0;   // requests completed
  std::uint64_t submit_calls = 0;
  std::uint64_t retries = 0;     // EAGAIN/EINTR resubmissions
  std::uint64_t short_ios = 0;   // continued short transfers
  std::uint64_t waited = 0;      // requests that waited for a free slot
  std::uint64_t cancels = 0;     // async cancels issued
};

class UringTarget final : public Target {
 public:
  static Result<std::unique_ptr<UringTarget>> create(Runtime& runtime, const UringTargetConfig& config);
  // The rings must be idle (every sent request completed).
  ~UringTarget() override;

  Status send(Request request) noexcept override;
  std::size_t send_batch(std::span<const Request> requests, Status* refused) noexcept override;
  [[nodiscard]] const char* name() const noexcept override { return "uring"; }

  [[nodiscard]] const UringTargetInfo& info() const noexcept;
  // Registered buffer `index` of `core` (fixed_buffers > 0), else nullptr.
  [[nodiscard]] void* buffer(std::uint32_t core, std::uint32_t index) const noexcept;
  // For an application loop with nothing else to do: blocks the calling
  // thread (serving `core`) until the ring has a completion or timeout_us
  // passes (0: no time limit); the next poll reaps it. Returns at once when
  // nothing is in flight.
  void wait(std::uint32_t core, std::uint32_t timeout_us) noexcept;
  [[nodiscard]] std::uint32_t in_flight(std::uint32_t core) const noexcept;
  [[nodiscard]] UringCounters counters(std::uint32_t core) const noexcept;

  struct Impl;  // ioq's own

 private:
  UringTarget() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ioq
