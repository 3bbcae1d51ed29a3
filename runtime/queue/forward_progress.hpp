// ioq::detail::QueueImpl::ForwardProgress: a queue's reserved requests.
//
// What it is
//   A queue with a forward-progress policy owns a small slab of reserved
//   requests (spec section 6). When the device cannot allocate a normal
//   request for a packet routed here, the policy may bind the packet to a
//   reserved request instead; when none is free, the packet is parked in FIFO
//   order, without allocating (through Packet::link), until one is returned.
//
// The free list and the parked list
//   Free reserved requests form a Treiber stack whose 64-bit head packs
//       bit 63       kParkedBit: packets are parked (the stack is then empty)
//       bits 62..32  a tag, bumped by every change (against ABA)
//       bits 31..0   top: index + 1 of the first free request, 0 when empty
//   Taking and returning a request are each one compare-exchange of the head
//   on the fast path. Because "parked" lives in the same word as "empty", a
//   return always sees a park that happened before it, and a park always sees
//   a return that happened before it: a parked packet is served by whichever
//   thread returns the next reserved request, on any core (no wake-up that may
//   never come). Parking and serving take `mu` (the slow path: every reserved
//   request is in use).
//
// Threads
//   take/return from any thread; the parked list under `mu`.
//
// Memory ordering
//   Pushing a request (release) publishes its free_next link to the popper's
//   acquire of the head; the generation stored by Slab::claim (release) is
//   what validates the handle handed to the driver.
#pragma once

#include <mutex>

#include "queue/impl.hpp"

namespace ioq::detail {

struct QueueImpl::ForwardProgress {
  static constexpr std::uint64_t kParkedBit = 1ULL << 63;
  static constexpr std::uint64_t kTagUnit = 1ULL << 32;
  static constexpr std::uint64_t kTopMask = 0xFFFFFFFFULL;

  ForwardProgressConfig cfg;
  std::unique_ptr<Slab> slab;

  alignas(kCacheLine) std::atomic<std::uint64_t> head{0};

  alignas(kCacheLine) std::mutex mu;  // the parked list
  Packet* parked_head = nullptr;
  Packet* parked_tail = nullptr;
  std::uint32_t parked = 0;

  enum Counter : std::size_t { kReservedUsed, kParkedTotal, kCounterCount };
  PerThreadCounters<kCounterCount> counters;

  static std::uint64_t next_head(std::uint64_t h, std::uint64_t top, bool parked_bit) noexcept {
    return (((h & ~kParkedBit & ~kTopMask) + kTagUnit) & ~kParkedBit) | (parked_bit ? kParkedBit : 0) | top;
  }
  RequestImpl* request(std::uint32_t index) const noexcept {
    return static_cast<RequestImpl*>(slab->object(index));
  }
};

}  // namespace ioq::detail
