// Forward progress: reserved requests, the policies, parked packets (see
// forward_progress.hpp for the free-list protocol).
#include "queue/forward_progress.hpp"

#include <atomic>

namespace ioq::detail {

using namespace qs;
using FP = QueueImpl::ForwardProgress;

void QueueImpl::init_slab_objects(Slab& slab, DeviceImpl* device, QueueImpl* reserved_owner) noexcept {
  for (std::uint32_t i = 0; i < slab.slots(); ++i) {
    auto* r = new (slab.object(i)) RequestImpl;
    r->device = device;
    r->slab = &slab;
    r->index = i;
    r->handle_base = make_handle(slab.id(), i, 0);
    r->reserved_owner = reserved_owner;
  }
}

Status QueueImpl::assign_fp(const ForwardProgressConfig& c) noexcept {
  std::lock_guard lock(control_);
  if (fp_owned_ != nullptr) return Status::invalid_parameter;  // a policy is already set
  if (c.total_reserved == 0) return Status::invalid_parameter;
  if (c.policy != ForwardProgressPolicy::always_use_reserved && c.policy != ForwardProgressPolicy::examine &&
      c.policy != ForwardProgressPolicy::paging_io)
    return Status::invalid_parameter;
  if (c.policy == ForwardProgressPolicy::examine && c.examine == nullptr) return Status::invalid_parameter;
  // The device's budget for reserved requests sizes every queue's inbox.
  std::uint32_t used = dev_.reserved_in_use_.load(std::memory_order_relaxed);
  do {
    if (c.total_reserved > dev_.cfg_.max_reserved_requests - used) return Status::insufficient_resources;
  } while (!dev_.reserved_in_use_.compare_exchange_weak(used, used + c.total_reserved, std::memory_order_relaxed));

  auto fp = std::make_unique<ForwardProgress>();
  fp->cfg = c;
  auto slab = Slab::create(SlabConfig{.slots = c.total_reserved,
                                      .object_bytes = static_cast<std::uint32_t>(sizeof(RequestImpl)),
                                      .context_bytes = dev_.cfg_.request_context_bytes,
                                      .cache_batch = 1});
  if (!slab) {
    dev_.reserved_in_use_.fetch_sub(c.total_reserved, std::memory_order_relaxed);
    return Status::insufficient_resources;
  }
  fp->slab = std::move(*slab);
  init_slab_objects(*fp->slab, &dev_, this);
  // Each reserved request is presented to the driver's resource allocation;
  // one failure undoes everything and sets no policy.
  for (std::uint32_t i = 0; i < c.total_reserved; ++i) {
    RequestImpl* r = fp->request(i);
    const Handle h = fp->slab->claim(i);
    r->word().store(rs::with_where(handle_generation(h), rs::kNew) | rs::kPresented, std::memory_order_release);
    const Status s = c.allocate_reserved_resources != nullptr
                         ? c.allocate_reserved_resources(*this, Request(h), c.context)
                         : Status::success;
    fp->slab->retire(i);
    if (s != Status::success) {
      dev_.reserved_in_use_.fetch_sub(c.total_reserved, std::memory_order_relaxed);
      return s;
    }
  }
  // Free stack: index 0 on top.
  std::uint64_t top = 0;
  for (std::uint32_t i = c.total_reserved; i-- > 0;) {
    fp->request(i)->free_next.store(static_cast<std::uint32_t>(top), std::memory_order_relaxed);
    top = i + 1;
  }
  fp->head.store(top, std::memory_order_relaxed);
  fp_owned_ = std::move(fp);
  // release: enabled last; arrivals that acquire fp_ see a complete pool.
  fp_.store(fp_owned_.get(), std::memory_order_release);
  return Status::success;
}

Slab* QueueImpl::reserved_slab() const noexcept {
  const ForwardProgress* f = fp();
  return f != nullptr ? f->slab.get() : nullptr;
}

ForwardProgressStats QueueImpl::fp_stats() const noexcept {
  ForwardProgressStats out;
  const ForwardProgress* f = fp();
  if (f == nullptr) return out;
  out.total = f->cfg.total_reserved;
  // Walk the free stack (a snapshot; exact when nothing changes hands).
  std::uint32_t top = static_cast<std::uint32_t>(f->head.load(std::memory_order_acquire) & FP::kTopMask);
  while (top != 0 && out.free <= out.total) {
    ++out.free;
    top = f->request(top - 1)->free_next.load(std::memory_order_relaxed);
  }
  // In use: slots whose generation says allocated.
  for (std::uint32_t i = 0; i < out.total; ++i)
    out.in_use += (f->request(i)->word().load(std::memory_order_acquire) & 1u) != 0;
  {
    std::lock_guard lock(const_cast<ForwardProgress*>(f)->mu);
    out.parked = f->parked;
  }
  const auto c = f->counters.snapshot();
  out.reserved_used = c[FP::kReservedUsed];
  out.parked_total = c[FP::kParkedTotal];
  return out;
}

bool QueueImpl::fp_has_allocate_hook() const noexcept {
  const ForwardProgress* f = fp();
  return f != nullptr && f->cfg.allocate_request_resources != nullptr;
}

bool QueueImpl::fp_allocate_request_resources(RequestImpl* r) noexcept {
  ForwardProgress* f = fp();
  if (f == nullptr || f->cfg.allocate_request_resources == nullptr) return true;
  // Calling it presents the request (spec section 6, arrival step 2).
  const std::uint64_t w = r->word().fetch_or(rs::kPresented, std::memory_order_acq_rel) | rs::kPresented;
  return f->cfg.allocate_request_resources(*this, Request(r->handle_for(w)), f->cfg.context) == Status::success;
}

namespace {

// Binds free reserved request r to packet p (r has just left the free list).
// publish: the handle goes into the packet now; otherwise arrive(r, false)
// publishes it (a packet that was never parked: no canceller can be looking
// for it through the parked list).
void bind(FP& f, RequestImpl* r, Packet& p, bool publish) noexcept {
  r->packet.store(&p, std::memory_order_relaxed);
  r->queue.store(nullptr, std::memory_order_relaxed);
  r->cancel_cb.store(nullptr, std::memory_order_relaxed);
  r->fifo_of.store(nullptr, std::memory_order_relaxed);
  // Reserved requests stay presented (they were presented at assignment).
  // The new generation and the state in one release store: the bound packet
  // is visible to whoever learns the handle.
  const Handle h = f.slab->claim(r->index, rs::with_where(0, rs::kNew) | rs::kPresented);
  if (publish) std::atomic_ref<std::uint64_t>(p.request).store(h, std::memory_order_release);
  std::atomic_ref<std::uintptr_t>(p.parked).store(0, std::memory_order_release);
  f.counters.add(FP::kReservedUsed);
}

// Clears the parked bit once the parked list is empty (f.mu held).
void clear_parked_bit(FP& f) noexcept {
  std::uint64_t h = f.head.load(std::memory_order_relaxed);
  while (!f.head.compare_exchange_weak(h, FP::next_head(h, h & FP::kTopMask, false), std::memory_order_acq_rel,
                                       std::memory_order_relaxed)) {
  }
}

}  // namespace

void QueueImpl::arrive_without_request(Packet& p) noexcept {
  ForwardProgress* f = fp();
  if (f == nullptr) {
    DeviceImpl::complete_unbound(p, Status::insufficient_resources);
    return;
  }
  bool use_reserved = false;
  switch (f->cfg.policy) {
    case ForwardProgressPolicy::always_use_reserved: use_reserved = true; break;
    case ForwardProgressPolicy::paging_io: use_reserved = (p.flags & kPacketPaging) != 0; break;
    case ForwardProgressPolicy::examine:
      use_reserved = f->cfg.examine(*this, p, f->cfg.context) == ExamineResult::use_reserved;
      break;
  }
  if (!use_reserved) {
    DeviceImpl::complete_unbound(p, Status::unsuccessful);
    return;
  }
  // No Accept check here: as in WDF, a free reserved request is bound and
  // then queued, where arrive() checks Accept (and completes it
  // invalid_device_state, returning the reserved request), and with none free
  // the packet is parked whatever the queue's state; it meets the Accept check
  // when a reserved request frees up, or is cancelled by purge, drain,
  // stop_and_purge or file cleanup meanwhile (spec section 6, arrival 4 and 5).
  std::uint64_t h = f->head.load(std::memory_order_acquire);
  for (;;) {
    const auto top = static_cast<std::uint32_t>(h & FP::kTopMask);
    if (top != 0 && !(h & FP::kParkedBit)) {
      RequestImpl* r = f->request(top - 1);
      const std::uint32_t next = r->free_next.load(std::memory_order_relaxed);
      // acquire: pairs with the release of the push that put r on top, so its
      // free_next and its retired generation are visible.
      if (f->head.compare_exchange_weak(h, FP::next_head(h, next, false), std::memory_order_acquire,
                                        std::memory_order_acquire)) {
        bind(*f, r, p, /*publish=*/false);
        arrive(r, /*published=*/false);
        return;
      }
      continue;
    }
    // Every reserved request is in use: park, in FIFO order, unless a return
    // slipped in (it would have pushed onto the stack: the CAS below fails).
    std::unique_lock lock(f->mu);
    h = f->head.load(std::memory_order_acquire);
    if ((h & FP::kTopMask) != 0 && !(h & FP::kParkedBit)) continue;
    if (!(h & FP::kParkedBit) &&
        !f->head.compare_exchange_strong(h, FP::next_head(h, 0, true), std::memory_order_acq_rel,
                                         std::memory_order_acquire))
      continue;
    p.link = nullptr;
    if (f->parked_tail) f->parked_tail->link = &p; else f->parked_head = &p;
    f->parked_tail = &p;
    ++f->parked;
    f->counters.add(FP::kParkedTotal);
    std::atomic_ref<std::uintptr_t>(p.parked).store(reinterpret_cast<std::uintptr_t>(this),
                                                    std::memory_order_release);
    return;
  }
}

void QueueImpl::fp_return(RequestImpl* r) noexcept {
  ForwardProgress* f = fp();
  std::uint64_t h = f->head.load(std::memory_order_relaxed);
  for (;;) {
    if (!(h & FP::kParkedBit)) {
      r->free_next.store(static_cast<std::uint32_t>(h & FP::kTopMask), std::memory_order_relaxed);
      // release: publishes free_next and the retired generation to the popper.
      if (f->head.compare_exchange_weak(h, FP::next_head(h, r->index + 1, false), std::memory_order_release,
                                        std::memory_order_relaxed))
        return;
      continue;
    }
    // Packets are parked: the oldest gets this request.
    std::unique_lock lock(f->mu);
    h = f->head.load(std::memory_order_acquire);
    if (!(h & FP::kParkedBit)) continue;
    Packet* p = f->parked_head;
    f->parked_head = p->link;
    if (f->parked_head == nullptr) f->parked_tail = nullptr;
    p->link = nullptr;
    if (--f->parked == 0) clear_parked_bit(*f);
    // Published under the lock: a canceller that found p parked and then
    // missed it in the list reads the handle.
    bind(*f, r, *p, /*publish=*/true);
    lock.unlock();
    arrive(r);
    return;
  }
}

bool QueueImpl::fp_cancel_parked(Packet* p) noexcept {
  ForwardProgress* f = fp();
  if (f == nullptr) return false;
  {
    std::lock_guard lock(f->mu);
    Packet* prev = nullptr;
    Packet* cur = f->parked_head;
    while (cur != nullptr && cur != p) {
      prev = cur;
      cur = cur->link;
    }
    if (cur == nullptr) return false;  // served (or cancelled) meanwhile
    if (prev) prev->link = cur->link; else f->parked_head = cur->link;
    if (f->parked_tail == cur) f->parked_tail = prev;
    cur->link = nullptr;
    if (--f->parked == 0) clear_parked_bit(*f);
    std::atomic_ref<std::uintptr_t>(p->parked).store(0, std::memory_order_release);
  }
  count(kCancelled);
  DeviceImpl::complete_unbound(*p, Status::cancelled);
  return true;
}

void QueueImpl::fp_cancel_all_parked(const FileHandle* file) noexcept {
  ForwardProgress* f = fp();
  if (f == nullptr) return;
  Packet* out = nullptr;
  Packet** out_tail = &out;
  {
    std::lock_guard lock(f->mu);
    Packet* prev = nullptr;
    for (Packet* cur = f->parked_head; cur != nullptr;) {
      Packet* next = cur->link;
      if (file == nullptr || cur->file == *file) {
        if (prev) prev->link = next; else f->parked_head = next;
        if (f->parked_tail == cur) f->parked_tail = prev;
        cur->link = nullptr;
        std::atomic_ref<std::uintptr_t>(cur->parked).store(0, std::memory_order_release);
        *out_tail = cur;
        out_tail = &cur->link;
        --f->parked;
      } else {
        prev = cur;
      }
      cur = next;
    }
    if (f->parked == 0 && (f->head.load(std::memory_order_relaxed) & FP::kParkedBit)) clear_parked_bit(*f);
  }
  while (out != nullptr) {
    Packet* p = out;
    out = p->link;
    p->link = nullptr;
    count(kCancelled);
    DeviceImpl::complete_unbound(*p, Status::cancelled);
  }
}

}  // namespace ioq::detail
