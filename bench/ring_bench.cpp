// BM_Ring_<Impl>_<Scenario>: ioq's MPMC ring against the peers a user would
// otherwise pick, measured in the same process with the same scenarios.
//   Impl: Ioq, TbbBounded, Moodycamel, BoostLockfree, RteRing (ring_bench_rte.cpp,
//         built only when libdpdk-dev is installed), MutexDeque.
//   Scenario: Pair, 1P1C, 2P2C, Bulk32 (see ring_scenarios.hpp).
#include <boost/lockfree/queue.hpp>
#include <concurrentqueue/concurrentqueue.h>
#include <tbb/concurrent_queue.h>

#include <atomic>
#include <deque>
#include <mutex>

#include "ring/mpmc_ring.hpp"
#include "ring_scenarios.hpp"

namespace ioq::bench {
namespace {

// The per-thread accessor of adapters that need no per-thread state.
template <typename Adapter>
struct Forward {
  explicit Forward(Adapter& adapter) : a(adapter) {}
  bool push(void* p) { return a.push(p); }
  bool pop(void*& p) { return a.pop(p); }
  std::size_t push_n(void** items, std::size_t n) { return a.push_n(items, n); }
  std::size_t pop_n(void** out, std::size_t n) { return a.pop_n(out, n); }
  Adapter& a;
};

struct IoqRing {
  using Local = Forward<IoqRing>;
  static constexpr const char* kName = "Ioq";
  explicit IoqRing(std::size_t cap) : ring(cap) {}
  bool push(void* p) noexcept { return ring.try_push(p); }
  bool pop(void*& p) noexcept { return ring.try_pop(p); }
  std::size_t push_n(void** items, std::size_t n) noexcept { return ring.try_push_n(items, n); }
  std::size_t pop_n(void** out, std::size_t n) noexcept { return ring.try_pop_n(out, n); }
  ioq::detail::MpmcRing<void*> ring;
};

struct TbbBounded {
  using Local = Forward<TbbBounded>;
  static constexpr const char* kName = "TbbBounded";
  explicit TbbBounded(std::size_t cap) { q.set_capacity(static_cast<std::ptrdiff_t>(cap)); }
  bool push(void* p) { return q.try_push(p); }
  bool pop(void*& p) { return q.try_pop(p); }
  std::size_t push_n(void** items, std::size_t n) {
    std::size_t k = 0;
    while (k < n && q.try_push(items[k])) ++k;
    return k;
  }
  std::size_t pop_n(void** out, std::size_t n) {
    std::size_t k = 0;
    while (k < n && q.try_pop(out[k])) ++k;
    return k;
  }
  tbb::concurrent_bounded_queue<void*> q;
};

// moodycamel with per-thread producer and consumer tokens (its documented fast
// path). It is an unbounded queue; to compare like with like, a push fails when
// `capacity` items are queued, and otherwise may allocate a block only until the
// queue has grown to that capacity once (after that, blocks are reused).
struct Moodycamel {
  static constexpr const char* kName = "Moodycamel";
  using Queue = moodycamel::ConcurrentQueue<void*>;
  explicit Moodycamel(std::size_t cap) : q(cap, 8, 0), capacity(cap) {}
  struct Local {
    explicit Local(Moodycamel& owner) : m(owner), ptok(owner.q), ctok(owner.q) {}
    bool push(void* p) {
      if (m.q.try_enqueue(ptok, p)) return true;
      return m.q.size_approx() < m.capacity && m.q.enqueue(ptok, p);
    }
    bool pop(void*& p) { return m.q.try_dequeue(ctok, p); }
    std::size_t push_n(void** items, std::size_t n) {
      if (m.q.try_enqueue_bulk(ptok, items, n)) return n;
      return m.q.size_approx() + n <= m.capacity && m.q.enqueue_bulk(ptok, items, n) ? n : 0;
    }
    std::size_t pop_n(void** out, std::size_t n) { return m.q.try_dequeue_bulk(ctok, out, n); }
    Moodycamel& m;
    Queue::producer_token_t ptok;
    Queue::consumer_token_t ctok;
  };
  Queue q;
  std::size_t capacity;
};

struct BoostLockfree {
  using Local = Forward<BoostLockfree>;
  static constexpr const char* kName = "BoostLockfree";
  explicit BoostLockfree(std::size_t) {}
  bool push(void* p) { return q.bounded_push(p); }
  bool pop(void*& p) { return q.pop(p); }
  std::size_t push_n(void** items, std::size_t n) {
    std::size_t k = 0;
    while (k < n && q.bounded_push(items[k])) ++k;
    return k;
  }
  std::size_t pop_n(void** out, std::size_t n) {
    std::size_t k = 0;
    while (k < n && q.pop(out[k])) ++k;
    return k;
  }
  boost::lockfree::queue<void*, boost::lockfree::capacity<kRingCapacity>> q;
};

struct MutexDeque {
  using Local = Forward<MutexDeque>;
  static constexpr const char* kName = "MutexDeque";
  explicit MutexDeque(std::size_t cap) : capacity(cap) {}
  bool push(void* p) {
    std::lock_guard lock(m);
    if (q.size() == capacity) return false;
    q.push_back(p);
    return true;
  }
  bool pop(void*& p) {
    std::lock_guard lock(m);
    if (q.empty()) return false;
    p = q.front();
    q.pop_front();
    return true;
  }
  std::size_t push_n(void** items, std::size_t n) {
    std::lock_guard lock(m);
    std::size_t k = 0;
    for (; k < n && q.size() < capacity; ++k) q.push_back(items[k]);
    return k;
  }
  std::size_t pop_n(void** out, std::size_t n) {
    std::lock_guard lock(m);
    std::size_t k = 0;
    for (; k < n && !q.empty(); ++k) out[k] = q.front(), q.pop_front();
    return k;
  }
  std::mutex m;
  std::deque<void*> q;
  std::size_t capacity;
};

const int registered = [] {
  register_ring_benchmarks<IoqRing>();
  register_ring_benchmarks<TbbBounded>();
  register_ring_benchmarks<Moodycamel>();
  register_ring_benchmarks<BoostLockfree>();
  register_ring_benchmarks<MutexDeque>();
  return 0;
}();

}  // namespace
}  // namespace ioq::bench

BENCHMARK_MAIN();
