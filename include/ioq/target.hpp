// ioq/target.hpp — where a handler sends a request.
//
// What it is
//   A Target takes over a driver-owned request (WdfRequestSend) and completes
//   it later, on the core it was sent from. The request stays counted as
//   driver-owned by its queue until the target completes it, so Stop, Drain,
//   Purge and power transitions wait for sent requests as they wait for any
//   other owned request.
//     * NullTarget completes each request at once with success and
//       information = its length: the dispatch-overhead baseline.
//     * The io_uring block target (ioq/uring_target.hpp) keeps one ring per
//       core, batches submissions per poll iteration, reaps completions in the
//       same loop, and bounds its in-flight depth per core; a request sent
//       while the core is at its depth waits in the target, in order, and is
//       never failed for lack of ring space.
//
// Threads
//   send() from any thread; a per-core target serves the calling thread's
//   core (Runtime::current_core()), or core 0 for threads serving none.
//
// Memory ordering
//   As for completion (ioq/request.hpp): the packet's callback sees what the
//   target wrote before completing.
#pragma once

#include <ioq/request.hpp>
#include <ioq/status.hpp>

namespace ioq {

class Target {
 public:
  virtual ~Target() = default;
  // Takes over `request` (driver-owned, not cancelable). success: the target
  // completes it later; anything else: the request is still the caller's.
  virtual Status send(Request request) noexcept = 0;
  [[nodiscard]] virtual const char* name() const noexcept = 0;
};

class NullTarget final : public Target {
 public:
  Status send(Request request) noexcept override {
    const Status s = request.complete(Status::success, request.length());
    return s == Status::success ? Status::success : s;
  }
  [[nodiscard]] const char* name() const noexcept override { return "null"; }
};

}  // namespace ioq
