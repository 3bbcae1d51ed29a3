// BM_E2E_<Impl>_<Queue>: end-to-end dispatch of 64-byte requests from a
// producer with a fixed queue depth to a handler and back, for ioq and for the
// dispatchers a user would otherwise write.
//
// Impl
//   Ioq           ioq's Device and queues, used through the public API only:
//                 Device::create, create_queue with a handler, start, submit
//                 with a caller-owned Packet and its on_complete callback. With
//                 dispatch-level handlers ioq runs the handler on the submitting
//                 thread when the queue is empty and ready, and queues it
//                 otherwise; it starts no threads of its own. With one
//                 producer and handlers that complete inline, Parallel and
//                 Sequential therefore run entirely on the producer's thread.
//   MutexCondvar  worker threads pop from a bounded FIFO (a preallocated ring
//                 array) under a std::mutex, sleeping on a
//                 std::condition_variable; a push notifies only when a worker sleeps.
//   TbbQueue      worker threads block in tbb::concurrent_bounded_queue::pop;
//                 the producer uses the blocking push.
//
// Queue
//   Parallel      requests reach the handler possibly concurrently, in any order.
//                 Peers: max(1, hardware_concurrency() - 1) workers.
//   Sequential    one request owned by the driver at a time, in arrival order
//                 (checked: a violation fails the run). Peers: exactly one worker.
//   Forward       a parallel stage whose handler forwards each request to a
//                 manual queue, from which it is retrieved and completed.
//                 Ioq: a parallel default queue whose handler calls
//                 Request::forward_to_queue(manual); in ioq's per-core model the
//                 submitting core's own loop drains the manual queue
//                 (Queue::retrieve_next_request + Request::complete) after each
//                 submit, so the request never leaves the core.
//                 IoqCrossThread (an extra row): the peers' topology instead, a
//                 retriever thread that spins briefly when the queue is empty,
//                 then sleeps until the manual queue's ReadyNotify callback
//                 wakes it. Peers: a stage pool of max(1, hardware_concurrency()
//                 - 1) workers pushing to a second FIFO of the same kind, and one
//                 retriever thread (their handlers cannot run on the producer).
//
// The work is the same everywhere: the completing side (the handler; the
// retriever in Forward) computes a checksum over the request's 64-byte payload
// and completes with it; the submitter's completion callback checks it against
// the value precomputed for that payload and hands the packet back to the
// producer. The producer (the benchmark thread) keeps at most kDepth requests
// in flight: it takes a free packet from its pool, waiting (brief spin, then a
// futex sleep, woken once by the first completion after it slept) when all
// kDepth are out. Completions from other threads return packets through a
// shared lock-free stack; a completion on the producer's own thread returns it
// to the producer's private list directly.
// The pool, packets, payloads, FIFOs, threads and the ioq device are built
// before the timed loop, and a warm-up pass runs kWarmup requests through the
// whole path (per-thread caches of the request slab, TBB's queue pages).
//
// Items processed = requests completed in the timed loop. Every benchmark counts
// completions per packet and fails (SkipWithError) on a lost or doubled
// completion, a bad checksum or status, or an order violation (Sequential), and
// shuts its threads down on every path. Counters:
//   allocs_per_item  global operator new calls (this file replaces it) made by
//                    any thread during the timed loop, per request. Allocations
//                    that bypass operator new (malloc, mimalloc, TBB's
//                    cache_aligned_allocator) are not seen.
//   threads          threads taking part, the producer included.
// Every benchmark uses real time (most have several threads; the single-thread
// Ioq rows use it too so that every items_per_second is on the same clock).
#include <benchmark/benchmark.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <tbb/concurrent_queue.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <ioq/ioq.hpp>

#include "base/cacheline.hpp"

// ---------------------------------------------------------------------------
// Global operator new/delete, counted (replacements are program-wide).

namespace {

std::atomic<std::uint64_t> g_allocs{0};

void* counted_alloc(std::size_t n) noexcept {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}

void* counted_alloc_aligned(std::size_t n, std::align_val_t al) noexcept {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  const std::size_t a = std::max(static_cast<std::size_t>(al), sizeof(void*));
  void* p = nullptr;
  return posix_memalign(&p, a, n == 0 ? 1 : n) == 0 ? p : nullptr;
}

}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new(std::size_t n, std::align_val_t al) {
  if (void* p = counted_alloc_aligned(n, al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t al) {
  if (void* p = counted_alloc_aligned(n, al)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_alloc_aligned(n, al);
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_alloc_aligned(n, al);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace ioq::bench {
namespace {

using Clock = std::chrono::steady_clock;
using detail::cpu_relax;

constexpr std::size_t kDepth = 64;        // requests in flight at most
constexpr std::size_t kPayload = 64;      // bytes checksummed per request
constexpr std::size_t kWarmup = 8 * kDepth;
constexpr std::uint32_t kSpin = 256;      // polls before a waiter sleeps
constexpr auto kStallLimit = std::chrono::seconds(10);  // no progress this long: fail
constexpr auto kSleepSlice = std::chrono::milliseconds(20);

enum class Kind { parallel, sequential, forward };

std::size_t parallel_workers() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 1 ? hw - 1 : 1;
}

// FNV-style mix over 64-bit words: eight dependent multiplies for 64 bytes.
std::uint64_t checksum(const void* buf, std::size_t len) noexcept {
  const auto* b = static_cast<const unsigned char*>(buf);
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i + 8 <= len; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, b + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  return h;
}

// A futex-backed event for one waiter. notify() costs a fence and a load while
// the waiter is awake, and the first notify after it armed the event takes the
// only wake-up call. Waiter: prepare(); re-check the condition; cancel() or
// wait(). Notifier: make the condition true; notify().
class Event {
 public:
  void prepare() noexcept {
    armed_.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  void cancel() noexcept { armed_.store(0, std::memory_order_relaxed); }
  void wait() noexcept {
    timespec ts{};
    ts.tv_nsec = std::chrono::duration_cast<std::chrono::nanoseconds>(kSleepSlice).count();
    (void)syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&armed_), FUTEX_WAIT_PRIVATE, 1u, &ts,
                  nullptr, 0);
    armed_.store(0, std::memory_order_relaxed);
  }
  void notify() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (armed_.load(std::memory_order_relaxed) == 0 || armed_.exchange(0, std::memory_order_seq_cst) == 0)
      return;
    (void)syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&armed_), FUTEX_WAKE_PRIVATE, 1, nullptr,
                  nullptr, 0);
  }

 private:
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  alignas(detail::kCacheLine) std::atomic<std::uint32_t> armed_{0};
};

struct Harness;

// One request: its payload, the ioq packet that carries it (Ioq only), and
// the producer's bookkeeping.
struct alignas(detail::kCacheLine) Slot {
  unsigned char payload[kPayload];
  Packet packet;
  std::uint64_t seq = 0;          // arrival number (the producer's)
  std::uint64_t expected = 0;     // checksum of payload
  std::uint64_t completions = 0;  // written by whoever completes it (it owns the slot then)
  Slot* next = nullptr;           // free lists
  Harness* harness = nullptr;
};

class Pool;
thread_local Pool* t_producer_pool = nullptr;

// Free packets: the producer takes from a private list and refills it by
// taking the whole shared stack at once; completers push onto the shared stack
// (a completion on the producer's own thread, as ioq's run-to-completion path
// makes it, goes straight to the private list).
class Pool {
 public:
  explicit Pool(std::size_t depth) : slots_(depth) {
    for (auto& s : slots_) {
      s.next = local_;
      local_ = &s;
    }
    t_producer_pool = this;
  }
  ~Pool() {
    if (t_producer_pool == this) t_producer_pool = nullptr;
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  std::vector<Slot>& slots() noexcept { return slots_; }

  // A free slot, or nullptr when none came back within kStallLimit.
  Slot* acquire() noexcept {
    if (local_ == nullptr) refill();
    if (local_ == nullptr) return nullptr;
    Slot* s = local_;
    local_ = s->next;
    return s;
  }

  void release(Slot* s) noexcept {
    if (t_producer_pool == this) {
      s->next = local_;
      local_ = s;
      return;
    }
    Slot* h = shared_.load(std::memory_order_relaxed);
    do {
      s->next = h;
    } while (!shared_.compare_exchange_weak(h, s, std::memory_order_release, std::memory_order_relaxed));
    ev_.notify();
  }

  // Waits until every slot is back; false when that did not happen within kStallLimit.
  bool drain() noexcept {
    for (;;) {
      if (count_local() == slots_.size()) return true;
      if (!wait_shared()) return false;
      take_shared();
    }
  }

 private:
  void refill() noexcept {
    take_shared();
    if (local_ == nullptr && wait_shared()) take_shared();
  }
  void take_shared() noexcept {
    Slot* got = shared_.exchange(nullptr, std::memory_order_acquire);
    while (got != nullptr) {
      Slot* n = got->next;
      got->next = local_;
      local_ = got;
      got = n;
    }
  }
  // Capped: a packet completed twice could have linked the list into a cycle.
  std::size_t count_local() const noexcept {
    std::size_t n = 0;
    for (const Slot* s = local_; s != nullptr && n <= slots_.size(); s = s->next) ++n;
    return n;
  }
  // Waits until the shared stack is non-empty; false after kStallLimit.
  bool wait_shared() noexcept {
    for (std::uint32_t i = 0; i < kSpin; ++i) {
      if (shared_.load(std::memory_order_relaxed) != nullptr) return true;
      cpu_relax();
    }
    const auto deadline = Clock::now() + kStallLimit;
    for (;;) {
      ev_.prepare();
      if (shared_.load(std::memory_order_relaxed) != nullptr || Clock::now() > deadline) {
        ev_.cancel();
        return shared_.load(std::memory_order_relaxed) != nullptr;
      }
      ev_.wait();
    }
  }

  std::vector<Slot> slots_;
  Slot* local_ = nullptr;  // the producer's
  alignas(detail::kCacheLine) std::atomic<Slot*> shared_{nullptr};
  Event ev_;
};

// Sequential delivery check: the handler must find no other request owned and
// see arrival numbers one after another.
struct SeqCheck {
  void enter(std::uint64_t seq) noexcept {
    if (busy.load(std::memory_order_relaxed) || seq != next.load(std::memory_order_relaxed))
      violations.fetch_add(1, std::memory_order_relaxed);
    busy.store(true, std::memory_order_relaxed);
    next.store(seq + 1, std::memory_order_relaxed);
  }
  void leave() noexcept { busy.store(false, std::memory_order_relaxed); }
  std::atomic<bool> busy{false};
  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> violations{0};
};

void on_done(Slot& s, bool ok, std::uint64_t info) noexcept;

struct Harness {
  Harness() : pool(kDepth) {
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto& s : pool.slots()) {
      for (auto& b : s.payload) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b = static_cast<unsigned char>(x);
      }
      s.expected = checksum(s.payload, kPayload);
      s.harness = this;
      s.packet.type = RequestType::read;
      s.packet.length = kPayload;
      s.packet.buffer = s.payload;
      s.packet.user = &s;
      s.packet.on_complete = [](Packet& p) noexcept {
        on_done(*static_cast<Slot*>(p.user), p.status == Status::success, p.information);
      };
    }
  }
  std::uint64_t completions() {
    std::uint64_t n = 0;
    for (const auto& s : pool.slots()) n += s.completions;
    return n;
  }

  Pool pool;
  SeqCheck order;
  std::uint64_t next_seq = 0;  // the producer's
  alignas(detail::kCacheLine) std::atomic<std::uint64_t> errors{0};
};

// The submitter's completion: check, count, give the packet back.
void on_done(Slot& s, bool ok, std::uint64_t info) noexcept {
  if (!ok || info != s.expected) s.harness->errors.fetch_add(1, std::memory_order_relaxed);
  ++s.completions;
  s.harness->pool.release(&s);  // s may be reused from here on
}

// The handler work shared by every peer (Ioq's handlers below do the same
// through the Request).
void peer_handle(Slot& s, SeqCheck* order) noexcept {
  if (order != nullptr) order->enter(s.seq);
  const std::uint64_t sum = checksum(s.payload, kPayload);
  if (order != nullptr) order->leave();
  on_done(s, true, sum);
}

// ---------------------------------------------------------------------------
// Peer FIFOs. close(consumers) makes every consumer's pop return nullptr once
// the FIFO is empty.

class MutexFifo {
 public:
  static constexpr const char* kName = "MutexCondvar";
  void push(Slot* s) {
    bool wake;
    {
      std::lock_guard lock(m_);
      if (tail_ - head_ == kCap) std::abort();  // cannot happen: at most kDepth in flight
      buf_[tail_++ % kCap] = s;
      wake = sleepers_ > 0;
    }
    if (wake) cv_.notify_one();
  }
  Slot* pop() {
    std::unique_lock lock(m_);
    while (head_ == tail_) {
      if (closed_) return nullptr;
      ++sleepers_;
      cv_.wait(lock);
      --sleepers_;
    }
    return buf_[head_++ % kCap];
  }
  void close(std::size_t) {
    {
      std::lock_guard lock(m_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  static constexpr std::size_t kCap = 2 * kDepth;
  std::mutex m_;
  std::condition_variable cv_;
  std::array<Slot*, kCap> buf_{};
  std::uint64_t head_ = 0;
  std::uint64_t tail_ = 0;
  int sleepers_ = 0;
  bool closed_ = false;
};

class TbbFifo {
 public:
  static constexpr const char* kName = "TbbQueue";
  TbbFifo() { q_.set_capacity(static_cast<std::ptrdiff_t>(2 * kDepth)); }
  void push(Slot* s) { q_.push(s); }
  Slot* pop() {
    Slot* s = nullptr;
    q_.pop(s);
    return s;
  }
  void close(std::size_t consumers) {
    for (std::size_t i = 0; i < consumers; ++i) q_.push(nullptr);
  }

 private:
  tbb::concurrent_bounded_queue<Slot*> q_;
};

// A dispatcher built on one of the FIFOs: a worker pool running the handler
// (Parallel, Sequential) or forwarding to a second FIFO drained by a
// retriever thread (Forward).
template <typename Fifo>
class PeerDispatcher {
 public:
  static constexpr const char* kName = Fifo::kName;

  PeerDispatcher(Harness& h, Kind kind) : kind_(kind) {
    const std::size_t workers = kind == Kind::sequential ? 1 : parallel_workers();
    SeqCheck* order = kind == Kind::sequential ? &h.order : nullptr;
    stage_.reserve(workers);
    for (std::size_t i = 0; i < workers; ++i) {
      stage_.emplace_back([this, order] {
        while (Slot* s = in_.pop()) {
          if (kind_ == Kind::forward)
            out_.push(s);
          else
            peer_handle(*s, order);
        }
      });
    }
    if (kind == Kind::forward) {
      retriever_ = std::thread([this] {
        while (Slot* s = out_.pop()) peer_handle(*s, nullptr);
      });
    }
  }
  ~PeerDispatcher() { shutdown(true); }
  PeerDispatcher(const PeerDispatcher&) = delete;
  PeerDispatcher& operator=(const PeerDispatcher&) = delete;

  bool ok() const noexcept { return true; }
  std::size_t threads() const noexcept { return stage_.size() + (kind_ == Kind::forward ? 1 : 0); }
  void submit(Slot& s) { in_.push(&s); }

  // Joins every thread; whatever is still queued is handled first.
  void shutdown(bool) {
    if (stopped_) return;
    stopped_ = true;
    in_.close(stage_.size());
    for (auto& t : stage_) t.join();
    if (retriever_.joinable()) {
      out_.close(1);
      retriever_.join();
    }
  }

 private:
  Kind kind_;
  Fifo in_;
  Fifo out_;
  std::vector<std::thread> stage_;
  std::thread retriever_;
  bool stopped_ = false;
};

using MutexCondvarDispatcher = PeerDispatcher<MutexFifo>;
using TbbQueueDispatcher = PeerDispatcher<TbbFifo>;

// ---------------------------------------------------------------------------
// ioq, through its public API.

// kCrossThread (Forward only): a retriever thread drains the manual queue, as
// the peers' retrievers do. Otherwise ioq's per-core model: the manual queue
// is drained by the submitting core's own loop, right after each submit.
template <bool kCrossThread>
class IoqDispatcherT {
 public:
  static constexpr const char* kName = kCrossThread ? "IoqCrossThread" : "Ioq";

  IoqDispatcherT(Harness& h, Kind kind) {
    auto dev = Device::create({.max_requests = 1024, .name = "e2e"});
    if (!dev) return;
    dev_ = std::move(*dev);
    if (kind == Kind::forward) {
      auto m = dev_->create_queue({.dispatch = DispatchType::manual, .name = "e2e.manual"});
      if (!m) return;
      manual_ = *m;
    }
    QueueConfig qc{.dispatch = kind == Kind::sequential ? DispatchType::sequential : DispatchType::parallel,
                   .default_queue = true};
    qc.name = "e2e.default";
    switch (kind) {
      case Kind::parallel:
        qc.on_default = on_parallel;
        break;
      case Kind::sequential:
        qc.on_default = on_sequential;
        qc.context = &h.order;
        break;
      case Kind::forward:
        qc.on_default = on_forward;
        qc.context = manual_;
        break;
    }
    if (!dev_->create_queue(qc) || dev_->start() != Status::success) return;
    if (manual_ != nullptr && kCrossThread) {
      if (manual_->ready_notify(on_ready, this) != Status::success) return;
      retriever_ = std::thread([this] { retrieve_loop(); });
    }
    ok_ = true;
  }
  ~IoqDispatcherT() { shutdown(true); }
  IoqDispatcherT(const IoqDispatcherT&) = delete;
  IoqDispatcherT& operator=(const IoqDispatcherT&) = delete;

  bool ok() const noexcept { return ok_; }
  std::size_t threads() const noexcept { return retriever_.joinable() ? 1 : 0; }

  void submit(Slot& s) noexcept {
    s.packet.offset = s.seq;
    if (dev_->submit(s.packet) != Status::pending) on_done(s, false, 0);  // rejected: no callback
    if (manual_ != nullptr && !kCrossThread) {
      Request r;
      while (manual_->retrieve_next_request(r) == Status::success) on_parallel(*manual_, r);
    }
  }

  // Stops the retriever. If packets are still out (`all_back` false: the run
  // has failed), the device is leaked rather than destroyed under them: it
  // starts no threads here, and waiting for what it lost (remove() waits for
  // driver-owned requests) could hang.
  void shutdown(bool all_back) {
    if (stopped_) return;
    stopped_ = true;
    if (retriever_.joinable()) {
      stop_.store(true, std::memory_order_release);
      ev_.notify();
      retriever_.join();
    }
    if (!all_back) (void)dev_.release();
  }

 private:
  static void on_parallel(Queue&, Request r) {
    const std::uint64_t sum = checksum(r.buffer(), r.length());
    (void)r.complete(Status::success, sum);
  }
  static void on_sequential(Queue& q, Request r) {
    auto* order = static_cast<SeqCheck*>(q.context());
    order->enter(r.offset());
    const std::uint64_t sum = checksum(r.buffer(), r.length());
    order->leave();
    (void)r.complete(Status::success, sum);
  }
  static void on_forward(Queue& q, Request r) {
    if (r.forward_to_queue(*static_cast<Queue*>(q.context())) != Status::success)
      (void)r.complete(Status::unsuccessful, 0);
  }
  static void on_ready(Queue&, void* ctx) { static_cast<IoqDispatcherT*>(ctx)->ev_.notify(); }

  void retrieve_loop() noexcept {
    Request r;
    std::uint32_t idle = 0;
    for (;;) {
      if (manual_->retrieve_next_request(r) == Status::success) {
        idle = 0;
        on_parallel(*manual_, r);
        continue;
      }
      if (stop_.load(std::memory_order_acquire)) return;
      if (idle < kSpin) {
        ++idle;
        cpu_relax();
        continue;
      }
      ev_.prepare();
      if (manual_->retrieve_next_request(r) == Status::success) {
        ev_.cancel();
        idle = 0;
        on_parallel(*manual_, r);
        continue;
      }
      if (stop_.load(std::memory_order_acquire)) {
        ev_.cancel();
        return;
      }
      ev_.wait();
    }
  }

  std::unique_ptr<Device> dev_;
  Queue* manual_ = nullptr;
  std::thread retriever_;
  std::atomic<bool> stop_{false};
  Event ev_;
  bool ok_ = false;
  bool stopped_ = false;
};

// ---------------------------------------------------------------------------

// Submits one request; false when no packet came back within kStallLimit.
template <typename Impl>
bool submit_one(Harness& h, Impl& impl) {
  Slot* s = h.pool.acquire();
  if (s == nullptr) return false;
  s->seq = h.next_seq++;
  impl.submit(*s);
  return true;
}

template <typename Impl, Kind kKind>
void BM_E2E(benchmark::State& state) {
  Harness h;
  Impl impl(h, kKind);
  if (!impl.ok()) {
    state.SkipWithError("set-up failed");
    return;
  }
  for (std::size_t i = 0; i < kWarmup; ++i) {
    if (!submit_one(h, impl)) break;
  }
  if (!h.pool.drain() || h.completions() != h.next_seq) {
    impl.shutdown(false);
    state.SkipWithError("warm-up: lost completions");
    return;
  }
  const std::uint64_t base = h.next_seq;

  bool stalled = false;
  const std::uint64_t allocs_before = g_allocs.load(std::memory_order_relaxed);
  for (auto _ : state) {
    if (!submit_one(h, impl)) {
      stalled = true;
      break;
    }
  }
  const std::uint64_t allocs = g_allocs.load(std::memory_order_relaxed) - allocs_before;
  const std::size_t threads = 1 + impl.threads();  // before shutdown joins them

  const bool all_back = !stalled && h.pool.drain();
  impl.shutdown(all_back);
  const std::uint64_t submitted = h.next_seq - base;
  const std::uint64_t completed = h.completions() - base;
  if (!all_back || completed != submitted) {
    state.SkipWithError("lost completions");
  } else if (h.errors.load() != 0) {
    state.SkipWithError("bad status or checksum");
  } else if (h.order.violations.load() != 0) {
    state.SkipWithError("sequential order violated");
  } else {
    state.SetItemsProcessed(static_cast<std::int64_t>(completed));
    state.counters["allocs_per_item"] =
        completed == 0 ? 0.0 : static_cast<double>(allocs) / static_cast<double>(completed);
    state.counters["threads"] = static_cast<double>(threads);
  }
}

template <typename Impl, Kind kKind>
void add(const char* queue) {
  const std::string name = std::string("BM_E2E_") + Impl::kName + "_" + queue;
  benchmark::RegisterBenchmark(name.c_str(), BM_E2E<Impl, kKind>)->UseRealTime();
}

template <Kind kKind>
void add_all(const char* queue) {
  add<IoqDispatcherT<false>, kKind>(queue);
  add<MutexCondvarDispatcher, kKind>(queue);
  add<TbbQueueDispatcher, kKind>(queue);
}

const int registered = [] {
  add_all<Kind::parallel>("Parallel");
  add_all<Kind::sequential>("Sequential");
  add_all<Kind::forward>("Forward");
  // ioq with the peers' topology (a retriever thread), for comparison.
  add<IoqDispatcherT<true>, Kind::forward>("Forward");
  return 0;
}();

}  // namespace
}  // namespace ioq::bench

BENCHMARK_MAIN();
