// ioq::Runtime::Impl: the runtime's private state (see ioq/runtime.hpp).
#pragma once

#include <ioq/runtime.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/cacheline.hpp"

namespace ioq {

namespace detail {
// The runtime a thread serves, by id, never by address: a runtime destroyed
// and another created at the same address must not inherit old bindings.
struct ThreadBinding {
  std::uint64_t runtime = 0;
  std::uint32_t core = kNoCore;
};
inline thread_local ThreadBinding t_binding;
}  // namespace detail

struct Runtime::Impl {
  struct alignas(detail::kCacheLine) Core {
    // Producers' end of the mailbox: every post exchanges it.
    alignas(detail::kCacheLine) std::atomic<Task*> head{&stub};
    // Consumer's end, touched only by the thread serving the core.
    alignas(detail::kCacheLine) Task* tail = &stub;
    Task stub;
    std::atomic<int> sleeping{0};  // the reactor is (about to be) parked
    int efd = -1;                  // parks on it; posts and pollers write it
    std::uint32_t index = 0;
    int cpu = 0;
    std::thread thread;
    // Written by the serving thread only (wakeups: by posters), read by anyone.
    std::atomic<std::uint64_t> polls{0}, tasks{0}, parks{0}, wakeups{0};

    void push(Task* t) noexcept;
    Task* pop() noexcept;
    bool mailbox_empty() const noexcept;
  };
  struct PollerSlot {
    std::atomic<PollFn> fn{nullptr};
    std::atomic<void*> ctx{nullptr};
  };

  std::size_t poll(Core& core) noexcept;
  void reactor(Core& core) noexcept;
  void wake(Core& core) noexcept;
  // The core the calling thread serves for this runtime, or kNoCore.
  std::uint32_t core_of_calling_thread() const noexcept {
    return detail::t_binding.runtime == id ? detail::t_binding.core : kNoCore;
  }

  RuntimeConfig cfg;
  std::uint64_t id = 0;  // unique per process (thread bindings name it)
  std::vector<std::unique_ptr<Core>> cores;
  std::array<PollerSlot, 16> pollers{};
  std::atomic<std::uint32_t> poller_count{0};  // slots [0, count) may be in use
  std::mutex pollers_mu;
  std::atomic<bool> stopping{false};
};

// For ioq's own code: the Impl behind a Runtime.
struct RuntimeAccess {
  static Runtime::Impl& of(Runtime& rt) noexcept { return *rt.impl_; }
};

}  // namespace ioq
