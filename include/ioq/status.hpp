// ioq/status.hpp — the one status type of ioq.
//
// What it is
//   `ioq::Status` is a scoped enum. The names follow the NTSTATUS values that
//   the WDF I/O-queue model uses (success, cancelled, invalid_device_state, ...)
//   so a reader who knows that model recognises them. Two families are ioq's own:
//     * usage errors (the `usage_*` values and `invalid_handle`): misuse that a
//       kernel framework would bug-check. ioq returns them, counts them in the
//       verifier counters, and never completes or loses a request because of them;
//     * io_error: a backend I/O failure; the request carries the errno beside it.
//
// Threads
//   Plain values; to_string returns a static string and is safe from any thread.
//
// Memory ordering
//   None: a Status is a value.
#pragma once

#include <cstdint>
#include <string_view>

namespace ioq {

enum class [[nodiscard]] Status : std::int32_t {
  success = 0,
  pending,                  // accepted; the completion callback will run exactly once

  // Outcomes of the queue model (names after NTSTATUS).
  cancelled,                // STATUS_CANCELLED
  invalid_device_state,     // STATUS_INVALID_DEVICE_STATE
  invalid_device_request,   // STATUS_INVALID_DEVICE_REQUEST
  wdf_busy,                 // STATUS_WDF_BUSY (a forward the target did not accept)
  wdf_paused,               // STATUS_WDF_PAUSED (retrieve on a stopped or powered-off queue)
  device_busy,              // STATUS_DEVICE_BUSY (what a submitter sees for busy/paused)
  no_more_entries,          // STATUS_NO_MORE_ENTRIES
  not_found,                // STATUS_NOT_FOUND
  invalid_parameter,        // STATUS_INVALID_PARAMETER
  invalid_parameter_4,      // STATUS_INVALID_PARAMETER_4 (missing output handle)
  insufficient_resources,   // STATUS_INSUFFICIENT_RESOURCES
  unsuccessful,             // STATUS_UNSUCCESSFUL
  wdf_no_callback,          // STATUS_WDF_NO_CALLBACK
  delete_pending,           // STATUS_DELETE_PENDING
  info_length_mismatch,     // STATUS_INFO_LENGTH_MISMATCH (C ABI size checks only)
  not_supported,            // STATUS_NOT_SUPPORTED
  end_of_file,              // STATUS_END_OF_FILE (a read at or past the end)

  // Usage errors: what WDF would bug-check. Always detected, always counted.
  invalid_handle,              // stale or forged handle: never dereferenced
  usage_already_completed,     // completing (or acting on) a completed request
  usage_not_owned,             // the caller does not own the request
  usage_cancelable,            // the request is marked cancelable (unmark first)
  usage_not_cancelable,        // unmark on a request that is not marked cancelable
  usage_slot_busy,             // a second Stop/Drain/Purge callback in a busy slot
  usage_in_handler,            // a synchronous wait from a handler of the same queue

  io_error,                 // backend failure; the request carries the errno
};

// Number of enumerators, for tables indexed by Status.
inline constexpr std::size_t kStatusCount = static_cast<std::size_t>(Status::io_error) + 1;

// True for success (pending counts as not-yet-failed, not as success).
[[nodiscard]] constexpr bool ok(Status s) noexcept { return s == Status::success; }

// True for the usage-error family (see the banner).
[[nodiscard]] constexpr bool is_usage_error(Status s) noexcept {
  return s >= Status::invalid_handle && s <= Status::usage_in_handler;
}

// The enumerator's name, e.g. "invalid_device_state".
[[nodiscard]] std::string_view to_string(Status s) noexcept;

}  // namespace ioq
