// ioq::detail queue and request state words.
//
// The queue state word (QueueImpl::st_) packs, in one atomic 64-bit word, every
// fact the dispatch decision depends on, so that one compare-exchange both
// checks a condition and acts on it, and a dispatcher that decides "nothing to
// do" leaves the loop with a compare-exchange that fails if anything changed:
// no wake-up is ever lost.
//
//   bits  0..16  Q   queued: requests held by the queue, plus arrivals that
//                    passed the accept check and are still being inserted
//   bits 17..33  D   driver-owned count (delivered, retrieved, or handed over
//                    by the canceled-on-queue callback; not yet completed,
//                    forwarded or requeued)
//   bits 34..43  I   inserters in flight: accepted, not yet in the inbox
//   bits 44..53  X   threads inside the dispatch loop (WDF's m_Dispatching)
//   bit  54      O   the pop token: its holder alone removes requests from the
//                    queue's FIFO (never held across a callback)
//   bits 55..63  flags (below)
//
// Q - I is the number of requests a popper is sure to find.
//
// The request state word is the slab slot's word: generation in the low 32
// bits (so every compare-exchange also checks the handle), state above.
#pragma once

#include <cstdint>

namespace ioq::detail::qs {

inline constexpr unsigned kQShift = 0, kDShift = 17, kIShift = 34, kXShift = 44;
inline constexpr std::uint64_t kCountMask = (1ULL << 17) - 1;  // Q and D
inline constexpr std::uint64_t kThreadMask = (1ULL << 10) - 1; // I and X
inline constexpr std::uint64_t kQ1 = 1ULL << kQShift;
inline constexpr std::uint64_t kD1 = 1ULL << kDShift;
inline constexpr std::uint64_t kI1 = 1ULL << kIShift;
inline constexpr std::uint64_t kX1 = 1ULL << kXShift;
inline constexpr std::uint64_t kToken = 1ULL << 54;
inline constexpr std::uint64_t kAccept = 1ULL << 55;      // WDF Accept
inline constexpr std::uint64_t kDispatch = 1ULL << 56;    // WDF Dispatch
inline constexpr std::uint64_t kPnpHeld = 1ULL << 57;     // power-managed and not in D0
inline constexpr std::uint64_t kLatch = 1ULL << 58;       // cancel dispatched requests
inline constexpr std::uint64_t kEvents = 1ULL << 59;      // callbacks queued for the loop
inline constexpr std::uint64_t kIdleArmed = 1ULL << 60;   // stop callback waiting
inline constexpr std::uint64_t kPurgeArmed = 1ULL << 61;  // drain/purge callback waiting
inline constexpr std::uint64_t kReady = 1ULL << 62;       // manual: transition from empty
inline constexpr std::uint64_t kBarrier = 1ULL << 63;     // power notifications: no dispatch, no events

// The largest request count a device may have (Q and D must not overflow).
inline constexpr std::uint32_t kMaxRequests = static_cast<std::uint32_t>(kCountMask);

constexpr std::uint32_t Q(std::uint64_t s) { return static_cast<std::uint32_t>((s >> kQShift) & kCountMask); }
constexpr std::uint32_t D(std::uint64_t s) { return static_cast<std::uint32_t>((s >> kDShift) & kCountMask); }
constexpr std::uint32_t I(std::uint64_t s) { return static_cast<std::uint32_t>((s >> kIShift) & kThreadMask); }
constexpr std::uint32_t X(std::uint64_t s) { return static_cast<std::uint32_t>((s >> kXShift) & kThreadMask); }
// Requests a popper is certain to find in the FIFO.
constexpr std::uint32_t poppable(std::uint64_t s) { return Q(s) > I(s) ? Q(s) - I(s) : 0; }
// Delivery is allowed at all (not the per-type limit).
constexpr bool can_dispatch(std::uint64_t s) {
  return (s & (kDispatch | kPnpHeld | kBarrier)) == kDispatch;
}

static_assert(kXShift + 10 == 54, "the counts end where the token begins");

}  // namespace ioq::detail::qs

namespace ioq::detail::rs {

// Where the request is (bits 32..35 of the slot word).
enum Where : std::uint32_t {
  kFree = 0,      // not allocated (the slab clears the state on release)
  kNew = 1,       // bound to a packet, being routed by submit
  kQueued = 2,    // held by a queue (inbox, FIFO or requeue stash)
  kOwned = 3,     // owned by the driver
  kCompleting = 4 // complete() won; the packet's callback is running
};
inline constexpr unsigned kWhereShift = 32;
inline constexpr std::uint64_t kWhereMask = 0xFULL << kWhereShift;
inline constexpr std::uint64_t kCanceled = 1ULL << 36;     // the OS or the framework canceled it
inline constexpr std::uint64_t kCancelable = 1ULL << 37;   // marked cancelable, callback stored
inline constexpr std::uint64_t kCancelCb = 1ULL << 38;     // cancel callback scheduled (driver completes it)
inline constexpr std::uint64_t kPresented = 1ULL << 39;    // delivered at least once
inline constexpr std::uint64_t kStopNotified = 1ULL << 40; // stop callback delivered, awaiting ack or completion
inline constexpr std::uint64_t kAcked = 1ULL << 41;        // acknowledged without requeue (gets resume)
// The scheduled cancel callback has been called (set by the loop just before
// the call). From then on the request is an ordinary canceled request the
// driver owns (spec section 1, state 5): it may be completed, forwarded,
// requeued or marked again. Before, kCancelCb without kCancelRan, it is still
// marked cancelable for the driver (spec 4: "do not complete R outside it").
inline constexpr std::uint64_t kCancelRan = 1ULL << 42;
// Handed over to the canceled-on-queue callback, which has not been called yet
// (spec section 1, state 4: canceled, driver not yet told). Set with kOwned
// and kCanceled when a queue's cancel path hands the request over, cleared by
// the loop just before the call. The request already counts as driver-owned
// (D, power-down waits for it), but the driver's operations treat it as not
// owned (usage_not_owned): until the callback has it, no handle the driver
// holds is entitled to it, and nothing but the loop moves it on, so the
// callback is called with the generation the hand-over captured.
inline constexpr std::uint64_t kHandOver = 1ULL << 43;
inline constexpr std::uint64_t kGenMask = 0xFFFFFFFFULL;

constexpr Where where(std::uint64_t w) { return static_cast<Where>((w & kWhereMask) >> kWhereShift); }
constexpr std::uint64_t with_where(std::uint64_t w, Where x) {
  return (w & ~kWhereMask) | (static_cast<std::uint64_t>(x) << kWhereShift);
}
constexpr std::uint32_t gen(std::uint64_t w) { return static_cast<std::uint32_t>(w & kGenMask); }
// Marked cancelable as far as the driver's operations are concerned: marked,
// or its cancel callback is scheduled and has not been called yet. One test
// for the common case (neither bit set).
constexpr bool cancel_pending(std::uint64_t w) {
  return (w & (kCancelable | kCancelCb)) != 0 && ((w & kCancelable) != 0 || (w & kCancelRan) == 0);
}

}  // namespace ioq::detail::rs
