// ioq/runtime.hpp — per-core execution: reactors, mailboxes, polling.
//
// What it is
//   A Runtime owns one execution context per core. Each core has a mailbox
//   (an intrusive multi-producer queue of Tasks, one exchange per post, no
//   allocation) and a list of pollers (targets such as the io_uring backend
//   register one per runtime). A poll iteration of a core runs its posted
//   tasks, then every poller.
//   * With reactors (the default), each core is served by a thread pinned to
//     one CPU; it polls while work flows, spins briefly when idle, then parks
//     on an eventfd. Posting to a parked core wakes it; an idle runtime costs
//     no CPU.
//   * Without reactors, the application serves each core from its own event
//     loop: bind_thread(core) once on that thread, then call poll(core).
//   A Device created with DeviceConfig::runtime dispatches per core: a
//   parallel queue without a presented limit keeps one FIFO shard per core
//   and delivers on the core the request arrived on; sequential and manual
//   queues have a home core that runs their dispatch; completions and events
//   from other cores reach it through its mailbox.
//
// Threads
//   post, wake and current_core: any thread. poll(core): the thread serving
//   `core` (its reactor, or the thread bound to it), one at a time.
//   add_poller / remove_poller: control path, before or between runs.
//
// Memory ordering
//   post() is a release and the task's run on its core an acquire: the task
//   sees everything the poster wrote before posting.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include <ioq/result.hpp>
#include <ioq/status.hpp>

namespace ioq {

inline constexpr std::uint32_t kNoCore = ~0u;

// A unit of work posted to a core. Caller-owned and intrusive: a Task may be
// posted again only after its `run` has started.
struct Task {
  void (*run)(Task& self) noexcept = nullptr;
  std::atomic<Task*> next{nullptr};  // ioq's own
};

// Called on each poll iteration of each core; returns the work it did (0: none).
using PollFn = std::size_t (*)(void* ctx, std::uint32_t core) noexcept;

struct RuntimeConfig {
  std::uint32_t cores = 0;       // 0: one per CPU this process may run on
  bool reactors = true;          // false: the application calls poll(core)
  bool pin = true;               // reactors: pin core k to the k-th allowed CPU
  std::uint32_t spin_us = 50;    // reactors: spin this long without work, then park
  const char* name = "ioq";
};

// Counters of one core (snapshots).
struct CoreCounters {
  std::uint64_t polls = 0;       // poll iterations
  std::uint64_t tasks = 0;       // posted tasks run
  std::uint64_t parks = 0;       // times the reactor went to sleep
  std::uint64_t wakeups = 0;     // times a post woke it
};

class Runtime {
 public:
  static Result<std::unique_ptr<Runtime>> create(const RuntimeConfig& config = {});
  // Stops and joins the reactors; tasks still posted then are run first.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  [[nodiscard]] std::uint32_t cores() const noexcept;
  [[nodiscard]] bool has_reactors() const noexcept;

  // Queues `task` on `core`; it runs there once. Never blocks or allocates.
  void post(std::uint32_t core, Task& task) noexcept;
  // One poll iteration of `core` on the calling thread. Returns work done.
  std::size_t poll(std::uint32_t core) noexcept;
  // Makes the calling thread the one serving `core` (no-reactor mode). The
  // binding ends with unbind_thread, another bind_thread, or the runtime's
  // destruction on this thread; a binding to a destroyed runtime never
  // counts for another one.
  void bind_thread(std::uint32_t core) noexcept;
  static void unbind_thread() noexcept;
  // The core the calling thread was last bound to or serves as a reactor
  // (of whichever runtime), or kNoCore.
  [[nodiscard]] static std::uint32_t current_core() noexcept;
  // Wakes a parked reactor (a poller with new work calls it).
  void wake(std::uint32_t core) noexcept;

  // Returns an id for remove_poller.
  std::uint32_t add_poller(PollFn fn, void* ctx);
  void remove_poller(std::uint32_t id);

  [[nodiscard]] CoreCounters core_counters(std::uint32_t core) const noexcept;
  // The runtime's per-core counters in Prometheus text exposition format.
  [[nodiscard]] std::string prometheus() const;

  struct Impl;  // ioq's own

 private:
  Runtime() = default;
  std::unique_ptr<Impl> impl_;
  friend struct RuntimeAccess;
};

}  // namespace ioq
