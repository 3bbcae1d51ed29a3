// BM_Ring_RteRing_*: DPDK's rte_ring in its default multi-producer,
// multi-consumer mode, initialised in plain memory (no EAL needed). Built with
// DPDK's own compile flags, in its own translation unit, so its inline
// functions inline exactly as in a DPDK application.
#include <rte_ring.h>

#include <cstdlib>

#include "ring_scenarios.hpp"

namespace ioq::bench {
namespace {

struct RteRing {
  static constexpr const char* kName = "RteRing";
  struct Local {
    explicit Local(RteRing& a) : r(a.r) {}
    bool push(void* p) { return rte_ring_enqueue(r, p) == 0; }
    bool pop(void*& p) { return rte_ring_dequeue(r, &p) == 0; }
    std::size_t push_n(void** items, std::size_t n) {
      return rte_ring_enqueue_burst(r, items, static_cast<unsigned>(n), nullptr);
    }
    std::size_t pop_n(void** out, std::size_t n) {
      return rte_ring_dequeue_burst(r, out, static_cast<unsigned>(n), nullptr);
    }
    rte_ring* r;
  };
  explicit RteRing(std::size_t cap) {
    // With RING_F_EXACT_SZ the ring uses the next power of two above cap internally.
    const auto bytes = static_cast<std::size_t>(rte_ring_get_memsize(static_cast<unsigned>(2 * cap)));
    r = static_cast<rte_ring*>(std::aligned_alloc(128, (bytes + 127) / 128 * 128));
    // RING_F_EXACT_SZ: hold exactly `cap` items, like the other rings.
    if (r == nullptr || rte_ring_init(r, "ioq-bench", static_cast<unsigned>(cap), RING_F_EXACT_SZ) != 0)
      std::abort();
  }
  ~RteRing() { std::free(r); }
  RteRing(const RteRing&) = delete;
  RteRing& operator=(const RteRing&) = delete;
  rte_ring* r = nullptr;
};

const int registered = [] {
  register_ring_benchmarks<RteRing>();
  return 0;
}();

}  // namespace
}  // namespace ioq::bench
