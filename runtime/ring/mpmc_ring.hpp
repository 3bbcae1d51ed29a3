// ioq::detail::MpmcRing: a bounded, lock-free, multi-producer multi-consumer
// ring of pointer-sized items.
//
// What it is
//   Two parallel arrays of `capacity` cells: an item and a sequence number per
//   cell. Producers claim tickets by advancing `tail`, consumers by advancing
//   `head`; ticket t lives in cell t mod capacity.
//     * A producer may claim tickets [t, t+k) once consumers have claimed every
//       ticket below t+k-capacity (it reads `head`, through a cached copy).
//       It then stores the items and publishes each cell by storing seq = t+1.
//     * A consumer reads the cell of the head ticket t, checks seq == t+1
//       (published for this lap), copies the item out, and only then claims t
//       by a compare-exchange of `head` from t to t+1. A consumer that loses
//       the race drops its copy and retries; one that wins owns the copy it
//       already holds, so the cell is free the moment `head` moves past it and
//       consumers never write to the cells at all.
//   Each producer publishes its own cells, so no producer ever waits for
//   another producer (rings that commit the tail in ticket order stall every
//   producer behind a descheduled one, and collapse when threads outnumber
//   cores), and no consumer waits for another consumer.
//
//   Items must be trivially copyable and at most 8 bytes (pointers, indices,
//   handles): a consumer copies an item before it owns it.
//
// Operations
//   try_push / try_pop            one item; false when full / empty.
//   try_push_n / try_pop_n        up to n items with one ticket claim; return
//                                 how many moved, in order (burst semantics).
//   try_pop_exclusive / try_pop_n_exclusive
//                                 the same for a caller that serialises its
//                                 consumers: a store, no compare-exchange.
//   size_approx                   a snapshot, exact only when quiescent.
//
//   Under contention try_pop may report empty while a producer that claimed an
//   earlier ticket has not yet published it (the item appears when it does),
//   and try_push may report full against a momentarily stale head.
//
// Lifetime and threads
//   Every operation is safe from any thread, noexcept, and allocation-free.
//   Construction allocates the two arrays once. Destruction must not race with
//   any operation; items still queued are simply dropped (they are values).
//
// Memory ordering
//   * Items: a producer's release store of a cell's seq publishes the item it
//     stored before it to the consumer's acquire load of that seq.
//   * Reuse: a consumer's compare-exchange of `head` is a release, so its read
//     of the item happens before any producer that acquires the new `head` (or
//     acquires `head_cache`, which is stored with release from such a load)
//     overwrites the cell in the next lap.
//   * `tail` is only claimed, never used to publish: its compare-exchanges are
//     relaxed. Items are relaxed atomics; the seq pairs above order them.
//
// Layout
//   `tail` and the producers' cached copy of `head` share the producers' cache
//   line; `head` has a line of its own (checked below). The arrays are
//   contiguous, so a burst touches 8 sequences and 8 items per cache line.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>

#include "base/cacheline.hpp"

namespace ioq::detail {

template <typename T>
class MpmcRing {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(std::uint64_t),
                "ring items are pointer-sized values (pointers, indices, handles)");
  static_assert(std::atomic<T>::is_always_lock_free);

 public:
  using value_type = T;

  // Capacity is rounded up to a power of two (at least 2).
  explicit MpmcRing(std::size_t min_capacity)
      : idx_{},
        capacity_(std::bit_ceil(min_capacity < 2 ? std::size_t{2} : min_capacity)),
        mask_(capacity_ - 1),
        seq_(static_cast<std::atomic<std::uint64_t>*>(::operator new(
            sizeof(std::atomic<std::uint64_t>) * capacity_, std::align_val_t{kCacheLine}))),
        items_(static_cast<std::atomic<T>*>(
            ::operator new(sizeof(std::atomic<T>) * capacity_, std::align_val_t{kCacheLine}))) {
    for (std::size_t i = 0; i < capacity_; ++i) {
      new (&seq_[i]) std::atomic<std::uint64_t>(0);  // ticket i expects i+1: empty
      new (&items_[i]) std::atomic<T>(T{});
    }
  }

  MpmcRing(const MpmcRing&) = delete;
  MpmcRing& operator=(const MpmcRing&) = delete;

  ~MpmcRing() {
    ::operator delete(seq_, std::align_val_t{kCacheLine});
    ::operator delete(items_, std::align_val_t{kCacheLine});
  }

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

  // Snapshot of the number of claimed-but-unconsumed tickets; exact only when
  // no operation is in flight.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const std::uint64_t h = idx_.head.load(std::memory_order_relaxed);
    const std::uint64_t t = idx_.tail.load(std::memory_order_relaxed);
    return t > h ? static_cast<std::size_t>(t - h) : 0;
  }

  // Tickets claimed so far by producers / consumers (snapshots). A consumer
  // that must see every item pushed before some moment pops until
  // consumed_tickets() reaches claimed_tickets() read at that moment.
  [[nodiscard]] std::uint64_t claimed_tickets() const noexcept {
    return idx_.tail.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::uint64_t consumed_tickets() const noexcept {
    return idx_.head.load(std::memory_order_acquire);
  }

  // Pushes one item. Returns false when full.
  [[nodiscard]] bool try_push(T item) noexcept {
    std::uint64_t pos = idx_.tail.load(std::memory_order_relaxed);
    for (;;) {
      if (!has_room(pos, 1)) return false;
      if (idx_.tail.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed,
                                          std::memory_order_relaxed))
        break;
    }
    const std::size_t i = pos & mask_;
    items_[i].store(item, std::memory_order_relaxed);
    // release: publishes the item to the consumer's acquire load of seq in try_pop*.
    seq_[i].store(pos + 1, std::memory_order_release);
    return true;
  }

  // Pops one item into `out`. Returns false when empty.
  [[nodiscard]] bool try_pop(T& out) noexcept {
    std::uint64_t pos = idx_.head.load(std::memory_order_relaxed);
    for (;;) {
      const std::size_t i = pos & mask_;
      // acquire: pairs with the producer's release store of seq in try_push*.
      const std::uint64_t seq = seq_[i].load(std::memory_order_acquire);
      const auto dif = static_cast<std::int64_t>(seq - (pos + 1));
      if (dif < 0) return false;  // not yet published for this lap: empty
      if (dif > 0) {              // the cell is a lap ahead: `pos` is stale
        pos = idx_.head.load(std::memory_order_relaxed);
        continue;
      }
      const T item = items_[i].load(std::memory_order_relaxed);
      // release: orders the read of the item before the claim, for the next
      // lap's producer that acquires `head` (see has_room).
      if (idx_.head.compare_exchange_weak(pos, pos + 1, std::memory_order_release,
                                          std::memory_order_relaxed)) {
        out = item;
        return true;
      }
    }
  }

  // Pushes up to n items from `items` with one ticket claim. Returns how many
  // were pushed: items [0, result), in order.
  [[nodiscard]] std::size_t try_push_n(const T* items, std::size_t n) noexcept {
    if (n == 0) return 0;
    std::uint64_t pos = idx_.tail.load(std::memory_order_relaxed);
    std::size_t k;
    for (;;) {
      k = room(pos, n);
      if (k == 0) return 0;
      if (idx_.tail.compare_exchange_weak(pos, pos + k, std::memory_order_relaxed,
                                          std::memory_order_relaxed))
        break;
    }
    const std::size_t first = pos & mask_;
    const std::size_t n1 = std::min(k, capacity_ - first);  // up to the array's end
    publish(seq_ + first, items_ + first, items, n1, pos + 1);
    publish(seq_, items_, items + n1, k - n1, pos + n1 + 1);
    return k;
  }

  // Pops up to n items into out[0..) with one ticket claim. Returns the count.
  [[nodiscard]] std::size_t try_pop_n(T* out, std::size_t n) noexcept {
    if (n == 0) return 0;
    std::uint64_t pos = idx_.head.load(std::memory_order_relaxed);
    for (;;) {
      const std::size_t first = pos & mask_;
      const std::size_t n1 = std::min(n, capacity_ - first);  // up to the array's end
      std::size_t k = take_published(seq_ + first, items_ + first, out, n1, pos + 1);
      if (k == n1 && k < n)
        k += take_published(seq_, items_, out + k, std::min(n - k, first), pos + k + 1);
      if (k == 0) {
        const std::uint64_t seq = seq_[first].load(std::memory_order_relaxed);
        if (static_cast<std::int64_t>(seq - (pos + 1)) < 0) return 0;  // empty
        pos = idx_.head.load(std::memory_order_relaxed);                // stale
        continue;
      }
      // release: as in try_pop, the reads above happen before the claim.
      if (idx_.head.compare_exchange_weak(pos, pos + k, std::memory_order_release,
                                          std::memory_order_relaxed))
        return k;
    }
  }

  // Single-consumer forms of try_pop and try_pop_n, for a caller that never
  // lets two pops (of any form) run at once: ioq's queues pop only while they
  // hold their pop token, whose release/acquire hand-over orders one holder's
  // store of head before the next holder's load. head cannot be stale, so a
  // cell either is published for this lap or is not yet; the claim is a
  // release store instead of a compare-exchange. Producers stay many.
  [[nodiscard]] bool try_pop_exclusive(T& out) noexcept {
    const std::uint64_t pos = idx_.head.load(std::memory_order_relaxed);
    const std::size_t i = pos & mask_;
    // acquire: pairs with the producer's release store of seq.
    if (seq_[i].load(std::memory_order_acquire) != pos + 1) return false;  // empty
    out = items_[i].load(std::memory_order_relaxed);
    // release: the read above happens before a producer that acquires head
    // reuses the cell (see room()).
    idx_.head.store(pos + 1, std::memory_order_release);
    return true;
  }
  [[nodiscard]] std::size_t try_pop_n_exclusive(T* out, std::size_t n) noexcept {
    if (n == 0) return 0;
    const std::uint64_t pos = idx_.head.load(std::memory_order_relaxed);
    const std::size_t first = pos & mask_;
    const std::size_t n1 = std::min(n, capacity_ - first);  // up to the array's end
    std::size_t k = take_published(seq_ + first, items_ + first, out, n1, pos + 1);
    if (k == n1 && k < n) k += take_published(seq_, items_, out + k, std::min(n - k, first), pos + k + 1);
    if (k != 0) idx_.head.store(pos + k, std::memory_order_release);  // release: as in try_pop_exclusive
    return k;
  }

 private:
  // Number of tickets from `pos` (at most n) whose cells consumers have
  // released, i.e. below head + capacity.
  std::size_t room(std::uint64_t pos, std::size_t n) noexcept {
    // acquire: pairs with the release store below, extending the chain from the
    // consumers' release compare-exchange of head.
    std::uint64_t head = idx_.head_cache.load(std::memory_order_acquire);
    std::uint64_t free = head + capacity_ - pos;
    if (static_cast<std::int64_t>(free) < static_cast<std::int64_t>(n)) {
      // acquire: pairs with the consumers' release compare-exchange of head, so
      // their reads of the cells being reused happened before our stores.
      head = idx_.head.load(std::memory_order_acquire);
      // release: lets other producers rely on this value through head_cache.
      idx_.head_cache.store(head, std::memory_order_release);
      free = head + capacity_ - pos;
      if (static_cast<std::int64_t>(free) <= 0) return 0;
    }
    return std::min<std::size_t>(n, static_cast<std::size_t>(free));
  }
  bool has_room(std::uint64_t pos, std::size_t n) noexcept { return room(pos, n) == n; }

  // Copies out the items of the cells from s[0] (at most n) published as
  // expect, expect+1, ...; returns how many. Four cells at a time without a
  // branch per cell, then one by one.
  static std::size_t take_published(const std::atomic<std::uint64_t>* s, const std::atomic<T>* src,
                                    T* dst, std::size_t n, std::uint64_t expect) noexcept {
    std::size_t k = 0;
    // acquire (every seq load): pairs with the producers' release stores in
    // publish() and try_push, so each item read after its seq is the published one.
    for (; k + 4 <= n; k += 4) {
      const std::uint64_t d = (s[k].load(std::memory_order_acquire) ^ (expect + k)) |
                              (s[k + 1].load(std::memory_order_acquire) ^ (expect + k + 1)) |
                              (s[k + 2].load(std::memory_order_acquire) ^ (expect + k + 2)) |
                              (s[k + 3].load(std::memory_order_acquire) ^ (expect + k + 3));
      if (d != 0) break;
      dst[k] = src[k].load(std::memory_order_relaxed);
      dst[k + 1] = src[k + 1].load(std::memory_order_relaxed);
      dst[k + 2] = src[k + 2].load(std::memory_order_relaxed);
      dst[k + 3] = src[k + 3].load(std::memory_order_relaxed);
    }
    for (; k < n && s[k].load(std::memory_order_acquire) == expect + k; ++k)
      dst[k] = src[k].load(std::memory_order_relaxed);
    return k;
  }
  // Stores n items into cells from s[0] and publishes them as first, first+1, ...
  static void publish(std::atomic<std::uint64_t>* s, std::atomic<T>* dst, const T* src,
                      std::size_t n, std::uint64_t first) noexcept {
    // release (every seq store): publishes the item stored just before it to the
    // consumers' acquire loads in take_published() and try_pop.
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
      dst[i].store(src[i], std::memory_order_relaxed);
      dst[i + 1].store(src[i + 1], std::memory_order_relaxed);
      dst[i + 2].store(src[i + 2], std::memory_order_relaxed);
      dst[i + 3].store(src[i + 3], std::memory_order_relaxed);
      s[i].store(first + i, std::memory_order_release);
      s[i + 1].store(first + i + 1, std::memory_order_release);
      s[i + 2].store(first + i + 2, std::memory_order_release);
      s[i + 3].store(first + i + 3, std::memory_order_release);
    }
    for (; i < n; ++i) {
      dst[i].store(src[i], std::memory_order_relaxed);
      s[i].store(first + i, std::memory_order_release);
    }
  }

  struct Indices {
    // Producers' line: the tail ticket and the producers' cached copy of head.
    alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};
    std::atomic<std::uint64_t> head_cache{0};
    // Consumers' line: written by every pop, read by producers only when their
    // cached copy says the ring might be full.
    alignas(kCacheLine) std::atomic<std::uint64_t> head{0};
  };
  static_assert(std::is_standard_layout_v<Indices>);
  static_assert(offsetof(Indices, head) - offsetof(Indices, tail) >= kCacheLine,
                "head and tail must not share a cache line");
  static_assert(sizeof(Indices) == 2 * kCacheLine,
                "the read-only fields after Indices must start on a fresh line");
  static_assert(sizeof(std::atomic<std::uint64_t>) == 8 &&
                    std::atomic<std::uint64_t>::is_always_lock_free,
                "sequences are plain lock-free 64-bit words");

  Indices idx_;
  // Read-only after construction; they follow idx_ on a line of their own.
  const std::size_t capacity_;
  const std::size_t mask_;
  std::atomic<std::uint64_t>* const seq_;  // seq_[i] == t+1: ticket t published in cell i
  std::atomic<T>* const items_;
};

}  // namespace ioq::detail
