// ioq::detail::MpmcRing: a bounded, lock-free, multi-producer multi-consumer ring.
//
// What it is
//   A fixed array of cells, each holding one item and a sequence number (the
//   per-cell ticket scheme described by Dmitry Vyukov). Producers claim a ticket
//   by advancing `tail`, consumers by advancing `head`; a cell's sequence says
//   whether it is free for the producer of ticket t (seq == t) or published for
//   the consumer of ticket t (seq == t + 1). Each operation publishes its own
//   cell, so no producer ever waits for another producer to finish (rings that
//   commit the tail in ticket order stall every producer behind a descheduled
//   one), and no consumer waits for another consumer.
//
// Operations
//   try_push / try_pop            one item; false when full / empty.
//   try_push_n / try_pop_n        up to n items with a single ticket claim;
//                                 return how many moved (burst semantics).
//   size_approx                   a snapshot, exact only when quiescent.
//
//   "Full" and "empty" are linearizable for a quiescent ring; under contention
//   try_pop may report empty while a producer that claimed an earlier ticket has
//   not yet published it (the item becomes visible when that producer finishes),
//   and try_push may report full while a consumer is still releasing a cell.
//
// Lifetime and threads
//   Every operation is safe from any thread and is noexcept for
//   nothrow-move-constructible items. Construction allocates the cells once;
//   nothing allocates afterwards. Destruction must not race with any operation;
//   it destroys the items still queued.
//
// Memory ordering
//   A producer's release store of a cell's sequence publishes the item it just
//   constructed to the consumer's acquire load of that sequence; a consumer's
//   release store of the next-lap sequence hands the emptied cell back to the
//   producer's acquire load. Everything a producer wrote before try_push is
//   therefore visible to the consumer that pops the item. The tickets themselves
//   (`head`, `tail`) are only claimed, never used to publish data, so their
//   compare-exchanges are relaxed.
//
// Layout
//   The two tickets sit on their own cache lines (checked below). Consecutive
//   tickets are spread over different cache lines (`remap`), so a producer
//   filling ticket t+1 does not invalidate the line a consumer is reading for
//   ticket t; the bulk forms still move contiguous tickets.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "base/cacheline.hpp"

namespace ioq::detail {

template <typename T>
class MpmcRing {
  static_assert(std::is_nothrow_move_constructible_v<T>,
                "ring items must be nothrow-move-constructible");
  static_assert(std::is_nothrow_destructible_v<T>);

 public:
  using value_type = T;

  // Capacity is rounded up to a power of two (at least 2).
  explicit MpmcRing(std::size_t min_capacity)
      : idx_{},
        capacity_(std::bit_ceil(min_capacity < 2 ? std::size_t{2} : min_capacity)),
        mask_(capacity_ - 1),
        line_shift_(compute_line_shift(capacity_)),
        cells_(static_cast<Cell*>(::operator new(sizeof(Cell) * capacity_,
                                                 std::align_val_t{kCacheLine}))) {
    for (std::size_t i = 0; i < capacity_; ++i) {
      Cell* c = new (&cells_[i]) Cell;
      c->seq.store(ticket_of_index(i), std::memory_order_relaxed);
    }
    idx_.head.store(0, std::memory_order_relaxed);
    idx_.tail.store(0, std::memory_order_relaxed);
  }

  MpmcRing(const MpmcRing&) = delete;
  MpmcRing& operator=(const MpmcRing&) = delete;

  ~MpmcRing() {
    if constexpr (!std::is_trivially_destructible_v<T>) {
      // Destroy what is still queued, in ticket order.
      const std::uint64_t tail = idx_.tail.load(std::memory_order_relaxed);
      for (std::uint64_t t = idx_.head.load(std::memory_order_relaxed); t != tail; ++t) {
        Cell& c = cells_[remap(t)];
        if (c.seq.load(std::memory_order_relaxed) == t + 1) c.ptr()->~T();
      }
    }
    for (std::size_t i = 0; i < capacity_; ++i) cells_[i].~Cell();
    ::operator delete(cells_, std::align_val_t{kCacheLine});
  }

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

  // Snapshot of the number of items; exact only when no operation is in flight.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const std::uint64_t t = idx_.tail.load(std::memory_order_relaxed);
    const std::uint64_t h = idx_.head.load(std::memory_order_relaxed);
    return t > h ? static_cast<std::size_t>(t - h) : 0;
  }

  // Pushes one item. Returns false (and leaves `item` untouched) when full.
  template <typename U>
  [[nodiscard]] bool try_push(U&& item) noexcept {
    std::uint64_t pos = idx_.tail.load(std::memory_order_relaxed);
    Cell* cell;
    for (;;) {
      cell = &cells_[remap(pos)];
      // acquire: pairs with the release store of seq in try_pop/try_pop_n, so the
      // previous lap's item is fully moved out before this producer reuses the cell.
      const std::uint64_t seq = cell->seq.load(std::memory_order_acquire);
      const auto dif = static_cast<std::int64_t>(seq - pos);
      if (dif == 0) {
        if (idx_.tail.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed,
                                        std::memory_order_relaxed))
          break;
      } else if (dif < 0) {
        return false;  // the cell of this ticket still holds last lap's item: full
      } else {
        pos = idx_.tail.load(std::memory_order_relaxed);
      }
    }
    new (cell->ptr()) T(std::forward<U>(item));
    // release: publishes the item to the acquire load of seq in try_pop/try_pop_n.
    cell->seq.store(pos + 1, std::memory_order_release);
    return true;
  }

  // Pops one item into `out`. Returns false when empty.
  [[nodiscard]] bool try_pop(T& out) noexcept {
    std::uint64_t pos = idx_.head.load(std::memory_order_relaxed);
    Cell* cell;
    for (;;) {
      cell = &cells_[remap(pos)];
      // acquire: pairs with the release store of seq in try_push/try_push_n, so the
      // item's construction (and all the producer wrote before it) is visible.
      const std::uint64_t seq = cell->seq.load(std::memory_order_acquire);
      const auto dif = static_cast<std::int64_t>(seq - (pos + 1));
      if (dif == 0) {
        if (idx_.head.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed,
                                        std::memory_order_relaxed))
          break;
      } else if (dif < 0) {
        return false;  // not yet published for this lap: empty
      } else {
        pos = idx_.head.load(std::memory_order_relaxed);
      }
    }
    T* p = cell->ptr();
    out = std::move(*p);
    p->~T();
    // release: hands the empty cell to the acquire load of seq in try_push/try_push_n
    // of the next lap's producer.
    cell->seq.store(pos + capacity_, std::memory_order_release);
    return true;
  }

  // Pushes up to n items from `items` (moved from) with one ticket claim.
  // Returns the number pushed; items [0, result) were consumed in order.
  [[nodiscard]] std::size_t try_push_n(T* items, std::size_t n) noexcept {
    if (n == 0) return 0;
    std::uint64_t pos = idx_.tail.load(std::memory_order_relaxed);
    std::size_t k;
    for (;;) {
      k = 0;
      // acquire (each load): pairs with the consumers' release stores of seq, as in
      // try_push. Only cells found free for their own ticket are claimed below.
      while (k < n &&
             cells_[remap(pos + k)].seq.load(std::memory_order_acquire) == pos + k)
        ++k;
      if (k == 0) {
        const std::uint64_t seq = cells_[remap(pos)].seq.load(std::memory_order_relaxed);
        if (static_cast<std::int64_t>(seq - pos) < 0) return 0;  // full
        pos = idx_.tail.load(std::memory_order_relaxed);
        continue;
      }
      if (idx_.tail.compare_exchange_weak(pos, pos + k, std::memory_order_relaxed,
                                      std::memory_order_relaxed))
        break;
    }
    for (std::size_t i = 0; i < k; ++i) {
      Cell& c = cells_[remap(pos + i)];
      new (c.ptr()) T(std::move(items[i]));
      // release: publishes this item to the consumers' acquire loads of seq.
      c.seq.store(pos + i + 1, std::memory_order_release);
    }
    return k;
  }

  // Pops up to n items into out[0..) with one ticket claim. Returns the count.
  [[nodiscard]] std::size_t try_pop_n(T* out, std::size_t n) noexcept {
    if (n == 0) return 0;
    std::uint64_t pos = idx_.head.load(std::memory_order_relaxed);
    std::size_t k;
    for (;;) {
      k = 0;
      // acquire (each load): pairs with the producers' release stores of seq.
      while (k < n &&
             cells_[remap(pos + k)].seq.load(std::memory_order_acquire) == pos + k + 1)
        ++k;
      if (k == 0) {
        const std::uint64_t seq = cells_[remap(pos)].seq.load(std::memory_order_relaxed);
        if (static_cast<std::int64_t>(seq - (pos + 1)) < 0) return 0;  // empty
        pos = idx_.head.load(std::memory_order_relaxed);
        continue;
      }
      if (idx_.head.compare_exchange_weak(pos, pos + k, std::memory_order_relaxed,
                                      std::memory_order_relaxed))
        break;
    }
    for (std::size_t i = 0; i < k; ++i) {
      Cell& c = cells_[remap(pos + i)];
      T* p = c.ptr();
      out[i] = std::move(*p);
      p->~T();
      // release: returns the cell to the next lap's producer (acquire in try_push*).
      c.seq.store(pos + i + capacity_, std::memory_order_release);
    }
    return k;
  }

 private:
  struct Cell {
    std::atomic<std::uint64_t> seq;
    alignas(T) unsigned char storage[sizeof(T)];
    T* ptr() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  };

  static constexpr std::size_t kCellsPerLine =
      sizeof(Cell) >= kCacheLine ? 1 : kCacheLine / sizeof(Cell);
  static constexpr unsigned kCellsPerLineLog2 =
      static_cast<unsigned>(std::countr_zero(kCellsPerLine));

  // Spreads consecutive tickets over consecutive cache lines: ticket t lands in
  // line (t mod lines), slot (t div lines) mod cells-per-line. A bijection on
  // [0, capacity) because both factors are powers of two. Rings smaller than
  // cells-per-line squared keep the identity mapping.
  static unsigned compute_line_shift(std::size_t capacity) noexcept {
    if (kCellsPerLine == 1 || capacity < kCellsPerLine * kCellsPerLine) return 0;
    return static_cast<unsigned>(std::countr_zero(capacity)) - kCellsPerLineLog2;
  }
  std::size_t remap(std::uint64_t ticket) const noexcept {
    const std::size_t i = static_cast<std::size_t>(ticket) & mask_;
    if (line_shift_ == 0) return i;
    const std::size_t lines_mask = (std::size_t{1} << line_shift_) - 1;
    return ((i & lines_mask) << kCellsPerLineLog2) | (i >> line_shift_);
  }
  // Initial sequence of the cell at array index i is the ticket mapped to it.
  std::uint64_t ticket_of_index(std::size_t index) const noexcept {
    if (line_shift_ == 0) return index;
    const std::size_t line = index >> kCellsPerLineLog2;
    const std::size_t slot = index & (kCellsPerLine - 1);
    return (slot << line_shift_) | line;
  }

  struct Indices {
    // Producers' ticket: on its own line so producer CASes never bounce the consumers'.
    alignas(kCacheLine) std::atomic<std::uint64_t> tail;
    // Consumers' ticket: on its own line for the same reason.
    alignas(kCacheLine) std::atomic<std::uint64_t> head;
  };
  static_assert(std::is_standard_layout_v<Indices>);
  static_assert(offsetof(Indices, head) - offsetof(Indices, tail) >= kCacheLine,
                "head and tail must not share a cache line");
  static_assert(sizeof(Indices) == 2 * kCacheLine,
                "the read-only fields after Indices must start on a fresh line");
  static_assert(sizeof(T) > sizeof(std::uint64_t) || sizeof(Cell) == 2 * sizeof(std::uint64_t),
                "a cell is a sequence number and one item, nothing more");

  Indices idx_;
  // Read-only after construction; they follow idx_ on a line of their own.
  const std::size_t capacity_;
  const std::size_t mask_;
  const unsigned line_shift_;
  Cell* const cells_;
};

}  // namespace ioq::detail
