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
//   send() and send_batch() from any thread; a per-core target serves the
//   calling thread's core (Runtime::current_core()), or core 0 for threads
//   serving none.
//
// Memory ordering
//   As for completion (ioq/request.hpp): the packet's callback sees what the
//   target wrote before completing.
#pragma once

#include <cstddef>
#include <span>

#include <ioq/request.hpp>
#include <ioq/status.hpp>

namespace ioq {

class Target {
 public:
  virtual ~Target() = default;
  // Takes over `request` (driver-owned, not cancelable). success: the target
  // completes it later; anything else: the request is still the caller's.
  virtual Status send(Request request) noexcept = 0;
  // send() for each request of a run, in order, stopping at the first one
  // refused. Returns how many were taken over: requests.size(), or the index
  // of the refused request, whose status goes to *refused when it is not
  // null; that request and those after it are still the caller's. A target
  // that amortizes per-call work over a run (one ring lookup, one capacity
  // check) overrides it; this one calls send() for each.
  virtual std::size_t send_batch(std::span<const Request> requests, Status* refused) noexcept {
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (const Status s = send(requests[i]); s != Status::success) {
        if (refused != nullptr) *refused = s;
        return i;
      }
    }
    return requests.size();
  }
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
