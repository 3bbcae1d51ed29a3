// ioq/fault.hpp — allocation fault injection.
//
// What it is
//   Every allocation point of ioq's data path (the request slab first of all)
//   consults an optional `AllocHook` before allocating. When the hook says
//   "fail", the allocation fails exactly as if memory had run out, and the
//   caller's failure path runs: forward progress, `insufficient_resources`, a
//   parked packet. `FaultInjector` is a ready-made hook with four modes (never,
//   always, every n-th decision, a random percentage) and counters of what it
//   decided, so tests can prove their failure paths ran.
//
// Threads
//   `should_fail` is safe from any thread and lock-free. Changing the mode while
//   other threads consult the injector is allowed; each decision sees either the
//   old or the new mode.
//
// Memory ordering
//   Decisions and counters are relaxed: the injector orders nothing.
#pragma once

#include <atomic>
#include <cstdint>

namespace ioq {

// A C-style hook: returns true when the allocation it guards must fail.
struct AllocHook {
  bool (*should_fail)(void* ctx) noexcept = nullptr;
  void* ctx = nullptr;
  [[nodiscard]] explicit operator bool() const noexcept { return should_fail != nullptr; }
};

class FaultInjector {
 public:
  enum class Mode : std::uint32_t { never, always, every_nth, percent };

  FaultInjector() = default;
  FaultInjector(const FaultInjector&) = delete;
  FaultInjector& operator=(const FaultInjector&) = delete;

  void set_never() noexcept { mode_.store(Mode::never, std::memory_order_relaxed); }
  void set_always() noexcept { mode_.store(Mode::always, std::memory_order_relaxed); }
  // Fails decisions n, 2n, 3n, ... counted from now (n >= 1).
  void set_every_nth(std::uint32_t n) noexcept;
  // Fails each decision with probability percent/100, from a per-thread
  // generator seeded by `seed` and the thread, so a run is repeatable per thread.
  void set_percent(double percent, std::uint64_t seed = 1) noexcept;

  [[nodiscard]] bool should_fail() noexcept;

  [[nodiscard]] std::uint64_t decisions() const noexcept {
    return decisions_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t injected() const noexcept {
    return injected_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] Mode mode() const noexcept { return mode_.load(std::memory_order_relaxed); }

  // The hook to install on a slab, a device or a queue.
  [[nodiscard]] AllocHook hook() noexcept { return AllocHook{&trampoline, this}; }

 private:
  static bool trampoline(void* self) noexcept {
    return static_cast<FaultInjector*>(self)->should_fail();
  }

  std::atomic<Mode> mode_{Mode::never};
  std::atomic<std::uint32_t> nth_{1};
  std::atomic<std::uint64_t> nth_counter_{0};
  std::atomic<std::uint64_t> threshold_{0};  // percent mode: fail when rand < threshold
  std::atomic<std::uint64_t> seed_{1};
  std::atomic<std::uint64_t> epoch_{0};      // bumps per-thread generator reseeding
  std::atomic<std::uint64_t> decisions_{0};
  std::atomic<std::uint64_t> injected_{0};
};

}  // namespace ioq
