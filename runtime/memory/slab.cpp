#include "memory/slab.hpp"

#include <mimalloc.h>

#include <algorithm>
#include <mutex>
#include <new>
#include <string>

#include "base/backoff.hpp"

namespace ioq::detail {

namespace {

constexpr std::uint32_t kMaxSlabs = 256;  // id 0 is reserved for "no slab"
auto& g_slabs = g_slab_table;
std::mutex g_slabs_mutex;

constexpr std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

// A cache's counters have one writer (the thread holding its index).
void bump(std::atomic<std::uint64_t>& c, std::uint64_t n) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace

Result<std::unique_ptr<Slab>> Slab::create(const SlabConfig& config) {
  if (config.slots == 0 || config.slots > 0xFFFFFFu)
    return fail(Status::invalid_parameter, "slab: slots must be in 1 .. 16777215");
  if (config.cache_batch == 0 || config.cache_batch > 1024)
    return fail(Status::invalid_parameter, "slab: cache_batch must be in 1 .. 1024");
  if (config.object_bytes > (1u << 20) || config.context_bytes > (1u << 20))
    return fail(Status::invalid_parameter, "slab: object and context areas are limited to 1 MiB");

  const std::size_t context_offset = kObjectOffset + round_up(config.object_bytes, 16);
  const std::size_t stride = round_up(context_offset + config.context_bytes, kCacheLine);
  const std::size_t bytes = stride * config.slots;

  std::uint32_t id = 0;
  {
    std::lock_guard lock(g_slabs_mutex);
    for (std::uint32_t i = 1; i < kMaxSlabs; ++i) {
      if (g_slabs[i].load(std::memory_order_relaxed) == nullptr) {
        id = i;
        break;
      }
    }
    if (id == 0) return fail(Status::insufficient_resources, "slab: 255 slabs already exist");
    // Reserve the id with a placeholder until construction finishes.
    g_slabs[id].store(reinterpret_cast<Slab*>(std::uintptr_t{1}), std::memory_order_relaxed);
  }
  auto* base = static_cast<std::byte*>(mi_zalloc_aligned(bytes, kCacheLine));
  if (base == nullptr) {
    std::lock_guard lock(g_slabs_mutex);
    g_slabs[id].store(nullptr, std::memory_order_relaxed);
    return fail(Status::insufficient_resources,
                "slab: cannot allocate " + std::to_string(bytes) + " bytes for the arena");
  }
  std::unique_ptr<Slab> slab(new Slab(config, id, base, stride, context_offset));
  // release: pairs with the acquire in from_handle(), which then sees a built slab.
  g_slabs[id].store(slab.get(), std::memory_order_release);
  return slab;
}

Slab::Slab(const SlabConfig& config, std::uint32_t id, std::byte* base, std::size_t stride,
           std::size_t context_offset)
    : slots_(config.slots),
      id_(id),
      batch_(config.cache_batch),
      context_bytes_(config.context_bytes),
      base_(base),
      stride_(stride),
      context_offset_(context_offset),
      free_(config.slots),
      caches_(new std::atomic<Cache*>[kMaxThreads]) {
  for (std::uint32_t t = 0; t < kMaxThreads; ++t) caches_[t].store(nullptr, std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < slots_; ++i) {
    new (base_ + i * stride_) std::atomic<std::uint64_t>(0);
    const bool pushed = free_.try_push(i);
    (void)pushed;  // the ring holds at least `slots` items and nobody else runs yet
  }
}

Slab::~Slab() {
  {
    std::lock_guard lock(g_slabs_mutex);
    g_slabs[id_].store(nullptr, std::memory_order_relaxed);
  }
  for (std::uint32_t t = 0; t < kMaxThreads; ++t) {
    Cache* c = caches_[t].load(std::memory_order_acquire);
    if (c == nullptr) continue;
    mi_free(c->items);
    c->~Cache();
    mi_free(c);
  }
  mi_free(base_);
}

void Slab::set_alloc_hook(AllocHook hook) noexcept {
  if (!hook) {
    hook_fn_.store(nullptr, std::memory_order_release);
    return;
  }
  hook_ctx_.store(hook.ctx, std::memory_order_relaxed);
  // release: pairs with the acquire in allocate(), which then sees hook_ctx_.
  hook_fn_.store(hook.should_fail, std::memory_order_release);
}

Slab::Cache* Slab::cache_for_this_thread() noexcept {
  const std::uint32_t t = thread_index();
  if (t == kNoThreadIndex) return nullptr;
  // acquire: pairs with the release below (a cache created by an earlier holder
  // of this thread index).
  Cache* c = caches_[t].load(std::memory_order_acquire);
  if (c != nullptr) return c;
  void* mem = mi_malloc_aligned(sizeof(Cache), kCacheLine);
  auto* items = static_cast<std::uint32_t*>(mi_malloc(sizeof(std::uint32_t) * 2 * batch_));
  if (mem == nullptr || items == nullptr) {
    mi_free(mem);
    mi_free(items);
    return nullptr;  // fall back to the shared ring
  }
  c = new (mem) Cache;
  c->capacity = 2 * batch_;
  c->items = items;
  // release: publishes the built cache to stats() and to later holders of t.
  caches_[t].store(c, std::memory_order_release);
  return c;
}

bool Slab::refill(Cache& c) noexcept {
  // A pop can miss an index whose producer has claimed a ticket but not yet
  // published it; retry a little while the ring says it is not empty, so that
  // exhaustion is reported only when the ring is really (momentarily) empty.
  Backoff backoff;
  for (int attempt = 0; attempt < 64; ++attempt) {
    const std::size_t got = free_.try_pop_n(c.items, batch_);
    if (got != 0) {
      c.count.store(static_cast<std::uint32_t>(got), std::memory_order_relaxed);
      bump(c.moved_in, got);
      return true;
    }
    if (free_.size_approx() == 0) return false;
    backoff.pause();
  }
  return false;
}

void Slab::push_free(const std::uint32_t* items, std::size_t n) noexcept {
  // The ring's capacity covers every slot, so a short push only means a consumer
  // is still releasing a cell; retry until everything is in.
  std::uint32_t tmp[1024];
  std::copy(items, items + n, tmp);
  std::size_t done = 0;
  Backoff backoff;
  while (done < n) {
    const std::size_t k = free_.try_push_n(tmp + done, n - done);
    done += k;
    if (k == 0) backoff.pause();
  }
}


Slab::Allocation Slab::allocate_slow() noexcept {
  // acquire: pairs with the release in set_alloc_hook().
  if (auto fn = hook_fn_.load(std::memory_order_acquire); fn != nullptr) {
    if (fn(hook_ctx_.load(std::memory_order_relaxed))) {
      if (Cache* c = cache_for_this_thread())  // single writer: no locked add
        c->injected.store(c->injected.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      else
        shared_injected_.fetch_add(1, std::memory_order_relaxed);
      return Allocation{};
    }
  }
  Cache* c = cache_for_this_thread();
  if (c == nullptr) {
    std::uint32_t index;
    if (!free_.try_pop(index)) {
      shared_exhausted_.fetch_add(1, std::memory_order_relaxed);
      return Allocation{};
    }
    shared_allocs_.fetch_add(1, std::memory_order_relaxed);
    return take(index);
  }
  std::uint32_t n = c->count.load(std::memory_order_relaxed);
  if (n == 0) {
    if (!refill(*c)) {
      c->exhausted.store(c->exhausted.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return Allocation{};
    }
    n = c->count.load(std::memory_order_relaxed);
  }
  const std::uint32_t index = c->items[n - 1];
  c->count.store(n - 1, std::memory_order_relaxed);
  c->allocs.store(c->allocs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  return take(index);
}


void Slab::put_back(const std::uint32_t* indices, std::uint32_t n) noexcept {
  if (n == 0) return;
  // The slots never left the free state: back into this thread's cache (they
  // came from it), as far as it has room, the rest into the shared ring; the
  // allocations counted for them are taken back.
  Cache* c = existing_cache();
  if (c == nullptr) {  // cannot happen: reserve_cached found a cache
    push_free(indices, n);
    return;
  }
  std::uint32_t count = c->count.load(std::memory_order_relaxed);
  std::uint32_t i = n;
  while (i != 0 && count != c->capacity) c->items[count++] = indices[--i];
  c->count.store(count, std::memory_order_relaxed);
  if (i != 0) {
    push_free(indices, i);
    bump(c->moved_out, i);
  }
  c->allocs.store(c->allocs.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
}

void Slab::recycle_slow(std::uint32_t index) noexcept {
  Cache* c = cache_for_this_thread();
  if (c == nullptr) {
    push_free(&index, 1);
    shared_releases_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::uint32_t n = c->count.load(std::memory_order_relaxed);
  if (n == c->capacity) {
    push_free(c->items + (n - batch_), batch_);
    n -= batch_;
    bump(c->moved_out, batch_);
  }
  c->items[n] = index;
  c->count.store(n + 1, std::memory_order_relaxed);
}

Status Slab::release(Handle h) noexcept {
  if (handle_slab_id(h) != id_ || handle_index(h) >= slots_ || (handle_generation(h) & 1u) == 0) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return Status::invalid_handle;
  }
  const std::uint32_t index = handle_index(h);
  auto& w = word(index);
  std::uint64_t cur = w.load(std::memory_order_relaxed);
  for (;;) {
    if (static_cast<std::uint32_t>(cur) != handle_generation(h)) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return Status::invalid_handle;  // stale, or a second release
    }
    // acq_rel: exactly one releaser wins the generation; release publishes it.
    if (w.compare_exchange_weak(cur, static_cast<std::uint32_t>(cur) + 1,
                                std::memory_order_acq_rel, std::memory_order_relaxed))
      break;
  }
  recycle(index);
  return Status::success;
}

Handle Slab::claim(std::uint32_t index, std::uint64_t state) noexcept {
  auto& w = word(index);
  const std::uint32_t gen = static_cast<std::uint32_t>(w.load(std::memory_order_relaxed)) + 1;
  // release: as in take().
  w.store((state & ~std::uint64_t{0xFFFFFFFF}) | gen, std::memory_order_release);
  return make_handle(id_, index, gen);
}

void Slab::retire(std::uint32_t index) noexcept {
  auto& w = word(index);
  // release: the freed generation is visible to validate()'s acquire.
  w.store(static_cast<std::uint32_t>(w.load(std::memory_order_relaxed)) + 1, std::memory_order_release);
}

Status Slab::validate(Handle h) const noexcept {
  if (handle_slab_id(h) != id_ || handle_index(h) >= slots_ || (handle_generation(h) & 1u) == 0) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return Status::invalid_handle;
  }
  // acquire: pairs with the release store of the generation in take().
  const auto gen = static_cast<std::uint32_t>(word(handle_index(h)).load(std::memory_order_acquire));
  if (gen != handle_generation(h)) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return Status::invalid_handle;
  }
  return Status::success;
}

tl::expected<void*, Status> Slab::resolve(Handle h) const noexcept {
  if (Status s = validate(h); s != Status::success) return tl::unexpected(s);
  return object(handle_index(h));
}

void Slab::flush_thread_cache() noexcept {
  Cache* c = cache_for_this_thread();
  if (c == nullptr) return;
  const std::uint32_t n = c->count.load(std::memory_order_relaxed);
  for (std::uint32_t done = 0; done < n;) {
    const std::uint32_t k = std::min(n - done, batch_);
    push_free(c->items + done, k);
    done += k;
  }
  c->count.store(0, std::memory_order_relaxed);
  bump(c->moved_out, n);
}

SlabStats Slab::stats() const noexcept {
  SlabStats s;
  s.slots = slots_;
  s.allocations = shared_allocs_.load(std::memory_order_relaxed);
  s.releases = shared_releases_.load(std::memory_order_relaxed);
  s.exhausted = shared_exhausted_.load(std::memory_order_relaxed);
  s.injected = shared_injected_.load(std::memory_order_relaxed);
  s.rejected = rejected_.load(std::memory_order_relaxed);
  std::uint64_t free_slots = free_.size_approx();
  for (std::uint32_t t = 0; t < kMaxThreads; ++t) {
    // acquire: pairs with the release publishing the cache.
    const Cache* c = caches_[t].load(std::memory_order_acquire);
    if (c == nullptr) continue;
    // count first: it moves with every allocation and release, and the sum
    // below is exact whenever this thread's cache is at rest.
    const std::uint64_t count = c->count.load(std::memory_order_relaxed);
    const std::uint64_t allocs = c->allocs.load(std::memory_order_relaxed);
    s.allocations += allocs;
    s.releases += count + allocs + c->moved_out.load(std::memory_order_relaxed) -
                  c->moved_in.load(std::memory_order_relaxed);
    s.exhausted += c->exhausted.load(std::memory_order_relaxed);
    s.injected += c->injected.load(std::memory_order_relaxed);
    free_slots += count;
  }
  s.free_slots = static_cast<std::uint32_t>(std::min<std::uint64_t>(free_slots, slots_));
  return s;
}

}  // namespace ioq::detail
