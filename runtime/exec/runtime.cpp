// Runtime: per-core mailboxes (intrusive MPSC queues of Tasks), pollers, and
// optional pinned reactors that spin while busy and park on an eventfd.
#include <ioq/runtime.hpp>

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "base/cacheline.hpp"
#include "exec/runtime_impl.hpp"

namespace ioq {

namespace {

std::atomic<std::uint64_t> g_next_runtime_id{1};

std::uint64_t now_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

void bump(std::atomic<std::uint64_t>& c) noexcept {  // single writer: the core's thread
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace

// ---- the mailbox: Dmitry Vyukov's intrusive MPSC queue ----

void Runtime::Impl::Core::push(Task* t) noexcept {
  t->next.store(nullptr, std::memory_order_relaxed);
  // seq_cst (an exchange): orders the push before the poster's load of
  // `sleeping` in post(), against the reactor's store of `sleeping` and its
  // re-check of the mailbox (a Dekker pair: one of the two sees the other).
  Task* prev = head.exchange(t, std::memory_order_seq_cst);
  // release: links t for the consumer's acquire load of next in pop().
  prev->next.store(t, std::memory_order_release);
}

Task* Runtime::Impl::Core::pop() noexcept {
  Task* t = tail;
  // acquire: pairs with the release store of next in push().
  Task* next = t->next.load(std::memory_order_acquire);
  if (t == &stub) {
    if (next == nullptr) return nullptr;
    tail = next;
    t = next;
    next = next->next.load(std::memory_order_acquire);
  }
  if (next != nullptr) {
    tail = next;
    return t;
  }
  // t is the last node: unless a producer is between its exchange and its
  // link (then the task shows up on a later poll), requeue the stub behind it.
  if (t != head.load(std::memory_order_acquire)) return nullptr;
  push(&stub);
  next = t->next.load(std::memory_order_acquire);
  if (next != nullptr) {
    tail = next;
    return t;
  }
  return nullptr;
}

bool Runtime::Impl::Core::mailbox_empty() const noexcept {
  return tail == &stub && stub.next.load(std::memory_order_acquire) == nullptr &&
         head.load(std::memory_order_acquire) == &stub;
}

// ---- Runtime ----

Result<std::unique_ptr<Runtime>> Runtime::create(const RuntimeConfig& config) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  if (cpus.empty()) cpus.push_back(0);
  const std::uint32_t n = config.cores != 0 ? config.cores : static_cast<std::uint32_t>(cpus.size());
  if (n > 1024) return fail(Status::invalid_parameter, "runtime: at most 1024 cores");

  std::unique_ptr<Runtime> rt(new Runtime);
  rt->impl_ = std::make_unique<Impl>();
  Impl& im = *rt->impl_;
  im.cfg = config;
  im.id = g_next_runtime_id.fetch_add(1, std::memory_order_relaxed);
  im.cores.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    auto core = std::make_unique<Impl::Core>();
    core->index = i;
    core->cpu = cpus[i % cpus.size()];
    core->efd = eventfd(0, EFD_CLOEXEC);
    if (core->efd < 0) return fail(Status::insufficient_resources, "runtime: eventfd failed");
    im.cores.push_back(std::move(core));
  }
  if (config.reactors) {
    for (auto& core : im.cores) {
      Impl::Core* c = core.get();
      c->thread = std::thread([&im, c] { im.reactor(*c); });
    }
  }
  return rt;
}

Runtime::~Runtime() {
  if (!impl_) return;
  if (detail::t_binding.runtime == impl_->id) unbind_thread();
  impl_->stopping.store(true, std::memory_order_seq_cst);
  for (auto& core : impl_->cores) {
    core->sleeping.store(0, std::memory_order_seq_cst);
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t w = ::write(core->efd, &one, sizeof one);
  }
  for (auto& core : impl_->cores)
    if (core->thread.joinable()) core->thread.join();
  for (auto& core : impl_->cores) ::close(core->efd);
}

void Runtime::Impl::reactor(Core& core) noexcept {
  detail::t_binding.runtime = id;
  detail::t_binding.core = core.index;
  if (cfg.pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core.cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  }
  const std::uint64_t spin_ns = std::uint64_t{cfg.spin_us} * 1000;
  std::uint64_t idle_since = 0;
  while (!stopping.load(std::memory_order_acquire)) {
    if (poll(core) != 0) {
      idle_since = 0;
      continue;
    }
    const std::uint64_t now = now_ns();
    if (idle_since == 0) idle_since = now;
    if (now - idle_since < spin_ns) {
      detail::cpu_relax();
      continue;
    }
    // Park. seq_cst: see Core::push.
    core.sleeping.store(1, std::memory_order_seq_cst);
    if (!core.mailbox_empty() || stopping.load(std::memory_order_seq_cst)) {
      core.sleeping.store(0, std::memory_order_relaxed);
      continue;
    }
    bump(core.parks);
    std::uint64_t v;
    [[maybe_unused]] const ssize_t r = ::read(core.efd, &v, sizeof v);
    core.sleeping.store(0, std::memory_order_relaxed);
    idle_since = 0;
  }
  while (poll(core) != 0) {
  }
}

std::size_t Runtime::Impl::poll(Core& core) noexcept {
  bump(core.polls);
  std::size_t work = 0;
  // Posted tasks, a bounded batch per iteration so pollers get their turn.
  for (int i = 0; i < 256; ++i) {
    Task* t = core.pop();
    if (t == nullptr) break;
    bump(core.tasks);
    t->run(*t);
    ++work;
  }
  const std::uint32_t n = poller_count.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < n; ++i) {
    PollerSlot& p = pollers[i];
    // acquire: pairs with the release in add_poller (ctx stored before fn).
    const PollFn fn = p.fn.load(std::memory_order_acquire);
    if (fn != nullptr) work += fn(p.ctx.load(std::memory_order_relaxed), core.index);
  }
  return work;
}

void Runtime::Impl::wake(Core& core) noexcept {
  // seq_cst: the second half of the Dekker pair described in Core::push.
  if (core.sleeping.load(std::memory_order_seq_cst) != 0 &&
      core.sleeping.exchange(0, std::memory_order_seq_cst) != 0) {
    core.wakeups.fetch_add(1, std::memory_order_relaxed);
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t w = ::write(core.efd, &one, sizeof one);
  }
}

std::uint32_t Runtime::cores() const noexcept { return static_cast<std::uint32_t>(impl_->cores.size()); }
bool Runtime::has_reactors() const noexcept { return impl_->cfg.reactors; }

void Runtime::post(std::uint32_t core, Task& task) noexcept {
  Impl::Core& c = *impl_->cores[core % impl_->cores.size()];
  c.push(&task);
  impl_->wake(c);
}

std::size_t Runtime::poll(std::uint32_t core) noexcept { return impl_->poll(*impl_->cores[core]); }

void Runtime::bind_thread(std::uint32_t core) noexcept {
  detail::t_binding.runtime = impl_->id;
  detail::t_binding.core = core;
}

void Runtime::unbind_thread() noexcept {
  detail::t_binding.runtime = 0;
  detail::t_binding.core = kNoCore;
}

std::uint32_t Runtime::current_core() noexcept { return detail::t_binding.core; }

void Runtime::wake(std::uint32_t core) noexcept { impl_->wake(*impl_->cores[core % impl_->cores.size()]); }

std::uint32_t Runtime::add_poller(PollFn fn, void* ctx) {
  std::lock_guard lock(impl_->pollers_mu);
  for (std::uint32_t i = 0; i < impl_->pollers.size(); ++i) {
    auto& p = impl_->pollers[i];
    if (p.fn.load(std::memory_order_relaxed) == nullptr) {
      p.ctx.store(ctx, std::memory_order_relaxed);
      // release: publishes ctx to the acquire load in poll().
      p.fn.store(fn, std::memory_order_release);
      if (impl_->poller_count.load(std::memory_order_relaxed) <= i)
        impl_->poller_count.store(i + 1, std::memory_order_release);
      return i;
    }
  }
  return kNoCore;
}

void Runtime::remove_poller(std::uint32_t id) {
  std::lock_guard lock(impl_->pollers_mu);
  if (id < impl_->pollers.size()) impl_->pollers[id].fn.store(nullptr, std::memory_order_release);
}

CoreCounters Runtime::core_counters(std::uint32_t core) const noexcept {
  const Impl::Core& c = *impl_->cores[core];
  return CoreCounters{c.polls.load(std::memory_order_relaxed), c.tasks.load(std::memory_order_relaxed),
                      c.parks.load(std::memory_order_relaxed), c.wakeups.load(std::memory_order_relaxed)};
}

std::string Runtime::prometheus() const {
  std::ostringstream out;
  struct Metric {
    const char* name;
    const char* help;
    std::uint64_t CoreCounters::*field;
  };
  static constexpr Metric metrics[] = {
      {"ioq_core_polls_total", "Poll iterations of the core.", &CoreCounters::polls},
      {"ioq_core_tasks_total", "Posted tasks run on the core.", &CoreCounters::tasks},
      {"ioq_core_parks_total", "Times the core's reactor parked.", &CoreCounters::parks},
      {"ioq_core_wakeups_total", "Times a post woke the parked reactor.", &CoreCounters::wakeups},
  };
  for (const Metric& m : metrics) {
    out << "# HELP " << m.name << ' ' << m.help << "\n# TYPE " << m.name << " counter\n";
    for (std::uint32_t i = 0; i < cores(); ++i)
      out << m.name << "{runtime=\"" << impl_->cfg.name << "\",core=\"" << i << "\"} "
          << core_counters(i).*(m.field) << '\n';
  }
  return out.str();
}

}  // namespace ioq
