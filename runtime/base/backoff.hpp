// ioq::detail::Backoff: spin briefly, then yield the CPU.
//
// Used wherever a thread must wait for another thread's short critical step
// (a consumer finishing a pop, a benchmark producer facing a full ring). On a
// machine with fewer cores than runnable threads, pure spinning can wait for a
// whole scheduler quantum on a descheduled peer; yielding after a few dozen
// pauses bounds that cost.
#pragma once

#include <sched.h>

#include <cstdint>

#include "base/cacheline.hpp"

namespace ioq::detail {

class Backoff {
 public:
  void pause() noexcept {
    if (spins_ < kSpinLimit) {
      for (std::uint32_t i = 0; i < (1u << spins_); ++i) cpu_relax();
      ++spins_;
    } else {
      sched_yield();
    }
  }
  void reset() noexcept { spins_ = 0; }

 private:
  static constexpr std::uint32_t kSpinLimit = 6;  // up to 63 pauses before yielding
  std::uint32_t spins_ = 0;
};

}  // namespace ioq::detail
