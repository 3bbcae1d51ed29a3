// ioq/result.hpp — the result type of set-up calls.
//
// What it is
//   Set-up calls (create a device, a queue, a slab, a target) return
//   `ioq::Result<T>`: either the value or an `ioq::Error` carrying a Status and
//   a human-readable message saying which argument or condition failed. The data
//   path never uses it: data-path calls return a bare `ioq::Status`.
//
// Threads
//   Plain values.
//
// Memory ordering
//   None.
#pragma once

#include <string>
#include <utility>

#include <tl/expected.hpp>

#include <ioq/status.hpp>

namespace ioq {

struct Error {
  Status status = Status::unsuccessful;
  std::string message;
};

template <typename T>
using Result = tl::expected<T, Error>;

// Builds the error side of a Result: `return ioq::fail(Status::invalid_parameter, "...")`.
[[nodiscard]] inline tl::unexpected<Error> fail(Status s, std::string message) {
  return tl::unexpected<Error>(Error{s, std::move(message)});
}

}  // namespace ioq
