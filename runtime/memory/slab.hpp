// ioq::detail::Slab: the preallocated request slab.
//
// What it is
//   A fixed number of equal slots carved from one mimalloc arena at creation.
//   Each slot holds a state word, a runtime object area (the request) and an
//   inline context area whose size the creator chooses. Free slots are named by
//   their index and live either in a shared free ring (an MpmcRing of indices)
//   or in a per-thread cache refilled from and drained to that ring in batches,
//   so the common allocation touches no shared cache line.
//
// Handles
//   A slot is named outside the slab by a 64-bit handle:
//       bits 63..56  slab id (1..255; 0 never names a slab, so handle 0 is null)
//       bits 55..32  slot index
//       bits 31..0   generation
//   The low 32 bits of a slot's state word hold its generation, which is odd
//   while the slot is allocated and even while it is free; allocate and release
//   each advance it by one. A handle whose generation is not the slot's current
//   one is stale (the slot was released, maybe reused) and is rejected with
//   Status::invalid_handle; so is a handle naming another slab or an index past
//   the end. Nothing is dereferenced on the strength of an unchecked handle.
//   The high 32 bits of the state word are free for the owner of the slot (the
//   queue layer keeps the request state there, so a single compare-exchange
//   checks the generation and changes the state); allocate and release clear them.
//
// Operations
//   allocate()          a slot, or insufficient_resources (exhausted, or the
//                       allocation hook injected a failure). Never blocks.
//   release(h)          checked: invalid_handle for stale, forged or double release.
//   release_owned(i)    unchecked, for a caller that already proved ownership
//                       with a compare-exchange on the state word.
//   validate / resolve  check a handle; resolve also returns the object pointer.
//
// Threads
//   Every operation is safe from any thread. A thread without a thread index
//   (more than kMaxThreads alive) uses the shared ring directly. Free slots in
//   one thread's cache are not visible to another thread's allocation: the
//   slab may report exhaustion while up to (2 x cache_batch) slots per thread
//   sit in caches. flush_thread_cache() hands the calling thread's back.
//
// Memory ordering
//   A release followed by an allocate of the same slot on another thread is
//   ordered by the free ring (release store of the cell / acquire load), so the
//   new owner sees the slot exactly as the old owner left it. The state word's
//   generation is stored with release at allocate and advanced by an acq_rel
//   compare-exchange at release; validate() loads it with acquire.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include <ioq/fault.hpp>
#include <ioq/result.hpp>
#include <ioq/status.hpp>

#include "base/cacheline.hpp"
#include "base/thread_index.hpp"
#include "ring/mpmc_ring.hpp"

namespace ioq::detail {

using Handle = std::uint64_t;
inline constexpr Handle kNullHandle = 0;

inline constexpr std::uint32_t handle_slab_id(Handle h) noexcept {
  return static_cast<std::uint32_t>(h >> 56);
}
inline constexpr std::uint32_t handle_index(Handle h) noexcept {
  return static_cast<std::uint32_t>(h >> 32) & 0xFFFFFFu;
}
inline constexpr std::uint32_t handle_generation(Handle h) noexcept {
  return static_cast<std::uint32_t>(h);
}
inline constexpr Handle make_handle(std::uint32_t slab_id, std::uint32_t index,
                                    std::uint32_t generation) noexcept {
  return (static_cast<Handle>(slab_id) << 56) | (static_cast<Handle>(index & 0xFFFFFFu) << 32) |
         generation;
}

struct SlabConfig {
  std::uint32_t slots = 1024;        // number of slots, 1 .. 2^24-1
  std::uint32_t object_bytes = 0;    // runtime object area per slot (aligned to 16)
  std::uint32_t context_bytes = 0;   // caller's inline context area per slot
  std::uint32_t cache_batch = 32;    // per-thread refill/drain batch, 1 .. 1024
};

struct SlabStats {
  std::uint64_t allocations = 0;     // successful allocate() calls
  std::uint64_t releases = 0;        // successful release()/release_owned() calls
  std::uint64_t exhausted = 0;       // allocate() failures for want of a free slot
  std::uint64_t injected = 0;        // allocate() failures injected by the hook
  std::uint64_t rejected = 0;        // stale or forged handles refused
  std::uint32_t free_slots = 0;      // snapshot: ring + every thread cache
  std::uint32_t slots = 0;           // total
};

class Slab {
 public:
  struct Allocation {
    Status status = Status::insufficient_resources;
    Handle handle = kNullHandle;
    std::uint32_t index = 0;
    void* object = nullptr;
  };

  // Creates a slab; fails with invalid_parameter for a bad config,
  // insufficient_resources when the arena cannot be allocated or 255 slabs exist.
  static Result<std::unique_ptr<Slab>> create(const SlabConfig& config);

  ~Slab();
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  // allocate() and release_owned() are inline: their common case (the calling
  // thread's cache has a slot, or room for one) is a few loads and stores; the
  // rest (no cache yet, refill, spill, injection hook) is out of line.
  [[nodiscard]] Allocation allocate() noexcept;
  [[nodiscard]] Status release(Handle h) noexcept;
  void release_owned(std::uint32_t index) noexcept;
  // release_owned for a caller that holds the slot's object (and its index):
  // the state word is found beside the object, not through the geometry.
  void release_owned_object(const void* object, std::uint32_t index) noexcept;

  // allocate() for a batch: reserve_cached() takes up to `want` free slots
  // out of the calling thread's cache at once (counted as allocated) into
  // `out`; each then becomes an allocation with take_reserved(), and those not
  // taken go back with put_back(). Returns 0 when the cache is empty or
  // missing, or the injection hook is installed: allocate() one by one then.
  [[nodiscard]] std::uint32_t reserve_cached(std::uint32_t* out, std::uint32_t want) noexcept;
  [[nodiscard]] Allocation take_reserved(std::uint32_t index) noexcept { return take(index); }
  void put_back(const std::uint32_t* indices, std::uint32_t n) noexcept;

  // For a caller that manages free slots itself (a reserved pool): mark slot
  // `index` allocated (generation to odd) or free (to even) without touching
  // the slab's own free ring or caches. claim() stores the new generation
  // with `state` (the word's upper 32 bits, the owner's) in one release store.
  Handle claim(std::uint32_t index, std::uint64_t state = 0) noexcept;
  void retire(std::uint32_t index) noexcept;

  [[nodiscard]] Status validate(Handle h) const noexcept;
  [[nodiscard]] tl::expected<void*, Status> resolve(Handle h) const noexcept;

  // Installs (or, with an empty hook, removes) the fault-injection hook.
  void set_alloc_hook(AllocHook hook) noexcept;

  // Returns the calling thread's cached free slots to the shared ring.
  void flush_thread_cache() noexcept;

  [[nodiscard]] SlabStats stats() const noexcept;

  // Slot geometry. Index must be < slots().
  [[nodiscard]] std::uint32_t slots() const noexcept { return slots_; }
  [[nodiscard]] std::uint32_t id() const noexcept { return id_; }
  [[nodiscard]] std::size_t stride() const noexcept { return stride_; }
  [[nodiscard]] void* object(std::uint32_t index) const noexcept {
    return base_ + index * stride_ + kObjectOffset;
  }
  [[nodiscard]] void* context(std::uint32_t index) const noexcept {
    return base_ + index * stride_ + context_offset_;
  }
  [[nodiscard]] std::uint32_t context_bytes() const noexcept { return context_bytes_; }
  [[nodiscard]] std::atomic<std::uint64_t>& word(std::uint32_t index) const noexcept {
    return *reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + index * stride_);
  }
  [[nodiscard]] std::uint32_t index_of(const void* object) const noexcept {
    return static_cast<std::uint32_t>(
        (static_cast<const std::byte*>(object) - kObjectOffset - base_) / stride_);
  }
  [[nodiscard]] Handle handle_of(std::uint32_t index) const noexcept {
    return make_handle(id_, index,
                       static_cast<std::uint32_t>(word(index).load(std::memory_order_acquire)));
  }

  // The slab a handle names, or nullptr (null handle, unknown id).
  [[nodiscard]] static Slab* from_handle(Handle h) noexcept;

  // The state word of the slot whose object area starts at `object`.
  static constexpr std::size_t kObjectOffset = 16;  // after the state word, 16-aligned
  [[nodiscard]] static std::atomic<std::uint64_t>& word_of_object(const void* object) noexcept {
    return *reinterpret_cast<std::atomic<std::uint64_t>*>(
        const_cast<std::byte*>(static_cast<const std::byte*>(object) - kObjectOffset));
  }

 private:
  // One thread's cache of free slot indices. Only the owning thread (the holder
  // of its thread index) touches `items`; `count` and the counters are atomics so
  // stats() may read them from any thread.
  // Releases into a cache are not counted one by one: every slot that
  // entered it came from a release or from the ring (moved_in), and every one
  // that left went to an allocation or to the ring (moved_out), so
  // releases = count + allocs + moved_out - moved_in.
  struct Cache {
    std::atomic<std::uint32_t> count{0};
    std::atomic<std::uint64_t> allocs{0};
    std::atomic<std::uint64_t> moved_in{0};   // slow paths only
    std::atomic<std::uint64_t> moved_out{0};  // slow paths only
    std::atomic<std::uint64_t> exhausted{0};
    std::atomic<std::uint64_t> injected{0};
    std::uint32_t capacity = 0;
    std::uint32_t* items = nullptr;
  };

  Slab(const SlabConfig& config, std::uint32_t id, std::byte* base, std::size_t stride,
       std::size_t context_offset);

  // The calling thread's cache if it has one already (the inline paths' test).
  Cache* existing_cache() const noexcept {
    // A thread that has not asked for its number yet finds no cache here: the
    // slow paths ask (cache_for_this_thread).
    const std::uint32_t t = thread_index_if_known();
    // acquire: pairs with the release publishing a cache in cache_for_this_thread().
    return t < kMaxThreads ? caches_[t].load(std::memory_order_acquire) : nullptr;
  }
  Allocation allocate_slow() noexcept;
  void recycle_slow(std::uint32_t index) noexcept;
  Cache* cache_for_this_thread() noexcept;
  bool refill(Cache& c) noexcept;
  void push_free(const std::uint32_t* items, std::size_t n) noexcept;
  void recycle(std::uint32_t index) noexcept;
  Allocation take(std::uint32_t index) noexcept;

  const std::uint32_t slots_;
  const std::uint32_t id_;
  const std::uint32_t batch_;
  const std::uint32_t context_bytes_;
  std::byte* const base_;
  const std::size_t stride_;
  const std::size_t context_offset_;

  std::atomic<bool (*)(void*) noexcept> hook_fn_{nullptr};
  std::atomic<void*> hook_ctx_{nullptr};

  MpmcRing<std::uint32_t> free_;
  std::unique_ptr<std::atomic<Cache*>[]> caches_;

  // Counters for threads without a cache (rare); padded away from the hot fields.
  alignas(kCacheLine) std::atomic<std::uint64_t> shared_allocs_{0};
  std::atomic<std::uint64_t> shared_releases_{0};
  std::atomic<std::uint64_t> shared_exhausted_{0};
  std::atomic<std::uint64_t> shared_injected_{0};
  mutable std::atomic<std::uint64_t> rejected_{0};
};

inline Slab::Allocation Slab::take(std::uint32_t index) noexcept {
  // The slot's address once: the store below could alias the geometry fields
  // for all the compiler knows.
  std::byte* const slot = base_ + index * stride_;
  auto& w = *reinterpret_cast<std::atomic<std::uint64_t>*>(slot);
  const std::uint32_t id = id_;
  const std::uint32_t gen = static_cast<std::uint32_t>(w.load(std::memory_order_relaxed)) + 1;
  // release: the new generation (odd: allocated) is visible to validate()'s acquire
  // on any thread that learns the handle through a later release/acquire pair.
  w.store(gen, std::memory_order_release);
  return Allocation{Status::success, make_handle(id, index, gen), index, slot + kObjectOffset};
}

inline Slab::Allocation Slab::allocate() noexcept {
  // acquire (hook): pairs with the release in set_alloc_hook(); the slow path
  // reads it again.
  if (hook_fn_.load(std::memory_order_acquire) == nullptr) [[likely]] {
    if (Cache* c = existing_cache(); c != nullptr) [[likely]] {
      const std::uint32_t n = c->count.load(std::memory_order_relaxed);
      if (n != 0) [[likely]] {
        const std::uint32_t index = c->items[n - 1];
        c->count.store(n - 1, std::memory_order_relaxed);
        // Single writer: a plain add, no locked instruction.
        c->allocs.store(c->allocs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        return take(index);
      }
    }
  }
  return allocate_slow();
}

inline std::uint32_t Slab::reserve_cached(std::uint32_t* out, std::uint32_t want) noexcept {
  // acquire (hook): as in allocate().
  if (hook_fn_.load(std::memory_order_acquire) != nullptr) return 0;
  Cache* c = existing_cache();
  if (c == nullptr) return 0;
  const std::uint32_t n = c->count.load(std::memory_order_relaxed);
  const std::uint32_t m = n < want ? n : want;
  // Newest first, as allocate() would hand them out.
  for (std::uint32_t i = 0; i < m; ++i) out[i] = c->items[n - 1 - i];
  c->count.store(n - m, std::memory_order_relaxed);
  c->allocs.store(c->allocs.load(std::memory_order_relaxed) + m, std::memory_order_relaxed);
  return m;
}

inline void Slab::recycle(std::uint32_t index) noexcept {
  if (Cache* c = existing_cache(); c != nullptr) [[likely]] {
    const std::uint32_t n = c->count.load(std::memory_order_relaxed);
    if (n != c->capacity) [[likely]] {
      c->items[n] = index;
      c->count.store(n + 1, std::memory_order_relaxed);
      return;
    }
  }
  recycle_slow(index);
}

inline void Slab::release_owned(std::uint32_t index) noexcept { release_owned_object(object(index), index); }

inline void Slab::release_owned_object(const void* object, std::uint32_t index) noexcept {
  auto& w = word_of_object(object);
  const std::uint64_t cur = w.load(std::memory_order_relaxed);
  // release: the freed generation is published before the index reaches the free
  // ring (whose own release/acquire orders the next owner's reuse).
  w.store(static_cast<std::uint32_t>(cur) + 1, std::memory_order_release);
  recycle(index);
}

// Every live slab by id; 0 and ids being built hold nullptr or 1.
inline std::atomic<Slab*> g_slab_table[256];

inline Slab* Slab::from_handle(Handle h) noexcept {
  // acquire: pairs with the release store in Slab::create().
  Slab* s = g_slab_table[handle_slab_id(h)].load(std::memory_order_acquire);
  return reinterpret_cast<std::uintptr_t>(s) <= 1 ? nullptr : s;
}

}  // namespace ioq::detail
