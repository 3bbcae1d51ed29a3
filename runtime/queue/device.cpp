// DeviceImpl: creation, routing, submission, cancellation, files, power.
#if defined(IOQ_TSAN)
// Exported by libtsan (not declared in GCC 12's <sanitizer/tsan_interface.h>).
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif
#include <tbb/global_control.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "base/backoff.hpp"
#include "queue/impl.hpp"

namespace ioq::detail {

using namespace qs;

// Passive-level handlers may block, so the arena needs as many worker threads
// as handlers that may block at once: its own concurrency (no slot reserved
// for an external thread: nobody joins it) and a process-wide allowance for
// that many oneTBB workers, which by default is the core count.
struct DeviceImpl::Arena {
  explicit Arena(int workers)
      : allowance(tbb::global_control::max_allowed_parallelism,
                  std::max<std::size_t>(tbb::global_control::active_value(
                                            tbb::global_control::max_allowed_parallelism),
                                        static_cast<std::size_t>(workers) + 1)),
        arena(workers, 0) {}
  tbb::global_control allowance;
  tbb::task_arena arena;
};

DeviceImpl::DeviceImpl(const DeviceConfig& config) : cfg_(config) {
  abort_on_misuse_.store(config.abort_on_misuse, std::memory_order_relaxed);
}

DeviceImpl::~DeviceImpl() {
  // Every packet has completed (the caller's duty), but a dispatch loop may
  // still be on its way out on another thread (a reactor, a passive worker):
  // wait until no queue has a thread in its loop.
  while (passive_tasks_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  for (const auto& q : queues_) q->wait_idle_loops();
  queues_.clear();
}

Status DeviceImpl::init() noexcept {
  auto slab = Slab::create(SlabConfig{.slots = cfg_.max_requests,
                                      .object_bytes = static_cast<std::uint32_t>(sizeof(RequestImpl)),
                                      .context_bytes = cfg_.request_context_bytes,
                                      // Threads that free more than they allocate (a
                                      // completion thread) park up to 2 batches each:
                                      // keep that a small share of a small slab.
                                      .cache_batch = std::clamp(cfg_.max_requests / 64, 1u, 32u)});
  if (!slab) return slab.error().status;
  slab_ = std::move(*slab);
  QueueImpl::init_slab_objects(*slab_, this, nullptr);
  if (cfg_.alloc_hook) slab_->set_alloc_hook(cfg_.alloc_hook);
  return Status::success;
}

Status DeviceImpl::usage(Status s, const char* what) noexcept {
  verifier_[static_cast<std::size_t>(s)].fetch_add(1, std::memory_order_relaxed);
  if (abort_on_misuse_.load(std::memory_order_relaxed)) {
    std::fprintf(stderr, "ioq: usage error (%s) on device %s: %s\n", to_string(s).data(), cfg_.name, what);
    std::abort();
  }
  return s;
}

void DeviceImpl::complete_unbound(Packet& p, Status s) noexcept {
  p.status = s;
  p.information = 0;
  p.on_complete(p);
}

void DeviceImpl::run_passive(QueueImpl* q) noexcept {
  passive_tasks_.fetch_add(1, std::memory_order_acq_rel);
#if defined(IOQ_TSAN)
  // Debian's libtbb is not instrumented, so ThreadSanitizer cannot see the
  // hand-over from enqueue() to the worker that runs the task, and reports
  // oneTBB's own construction of the task object as racing with the worker.
  // Ignore this thread's accesses inside enqueue() only; the task body and
  // everything ioq does on either side stay checked.
  __tsan_ignore_thread_begin();
#endif
  arena_->arena.enqueue([this, q] {
    q->run_loop();
    passive_tasks_.fetch_sub(1, std::memory_order_acq_rel);
  });
#if defined(IOQ_TSAN)
  __tsan_ignore_thread_end();
#endif
}

std::vector<QueueImpl*> DeviceImpl::queue_list() const {
  std::lock_guard lock(queues_mu_);
  std::vector<QueueImpl*> out;
  out.reserve(queues_.size());
  for (const auto& q : queues_) out.push_back(q.get());
  return out;
}

// ---------------------------------------------------------------------------
// Set-up

Result<Queue*> DeviceImpl::create_queue_impl(const QueueConfig& c) {
  std::lock_guard lock(control_);
  if (c.dispatch != DispatchType::sequential && c.dispatch != DispatchType::parallel &&
      c.dispatch != DispatchType::manual)
    return fail(Status::invalid_parameter, "create_queue: unknown dispatch type");
  if (c.execution != ExecutionLevel::dispatch && c.execution != ExecutionLevel::passive)
    return fail(Status::invalid_parameter, "create_queue: unknown execution level");
  const bool has_type_handler =
      c.on_read || c.on_write || c.on_device_control || c.on_internal_device_control || c.on_default;
  const bool has_io_handler = has_type_handler || c.on_batch;
  if (has_type_handler && c.on_batch)
    return fail(Status::invalid_parameter, "create_queue: on_batch replaces the per-type handlers; set one or the other");
  if (c.dispatch == DispatchType::manual && has_io_handler)
    return fail(Status::invalid_parameter, "create_queue: a manual queue takes no I/O handler");
  if (c.dispatch != DispatchType::manual && !has_io_handler)
    return fail(Status::wdf_no_callback, "create_queue: a sequential or parallel queue needs an I/O handler");
  if (c.max_presented.has_value() && c.dispatch != DispatchType::parallel)
    return fail(Status::invalid_parameter, "create_queue: max_presented applies to parallel queues only");
  if (c.max_presented.has_value() && *c.max_presented == 0)
    return fail(Status::invalid_parameter, "create_queue: max_presented 0 would never deliver");
  if (c.default_queue && started_.load(std::memory_order_acquire))
    return fail(Status::invalid_device_state, "create_queue: the default queue must exist before start()");
  if (c.default_queue && default_queue_ != nullptr)
    return fail(Status::invalid_device_request, "create_queue: the device already has a default queue");
  bool pm;
  if (cfg_.control_device) {
    pm = false;
  } else {
    switch (c.power_managed) {
      case TriState::yes: pm = true; break;
      case TriState::no: pm = false; break;
      default: pm = !cfg_.filter; break;
    }
  }
  if (c.execution == ExecutionLevel::passive && !arena_) {
    const int workers = cfg_.passive_workers != 0
                            ? static_cast<int>(cfg_.passive_workers)
                            : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
    arena_ = std::make_unique<Arena>(workers);
  }
  auto q = std::make_unique<QueueImpl>(*this, c, pm);
  if (cfg_.runtime != nullptr && c.execution == ExecutionLevel::dispatch) {
    const std::uint32_t cores = cfg_.runtime->cores();
    if (c.dispatch == DispatchType::parallel && !c.max_presented.has_value())
      q->attach_runtime(cfg_.runtime, kNoCore, cores);  // a FIFO shard per core
    else if (c.dispatch == DispatchType::parallel)
      q->attach_runtime(cfg_.runtime, kNoCore, 0);  // one shard: the presented limit is global
    else
      q->attach_runtime(cfg_.runtime, next_home_core_++ % cores, 0);
  }
  QueueImpl* raw = q.get();
  {
    std::lock_guard list_lock(queues_mu_);
    queues_.push_back(std::move(q));
  }
  if (c.default_queue) default_queue_ = raw;
  return static_cast<Queue*>(raw);
}

Status DeviceImpl::route_impl(Queue& queue, RequestType type) noexcept {
  std::lock_guard lock(control_);
  if (type != RequestType::create && type != RequestType::read && type != RequestType::write &&
      type != RequestType::device_control && type != RequestType::internal_device_control)
    return Status::invalid_parameter;
  QueueImpl& q = impl(queue);
  if (&q.dev() != this) return Status::invalid_device_request;
  if (started_.load(std::memory_order_acquire)) return Status::invalid_device_state;
  if (!q.has_handler_for(type)) return Status::invalid_device_request;
  if (&q == default_queue_) return Status::invalid_device_request;
  QueueImpl*& slot = routes_[static_cast<std::size_t>(type)];
  if (slot != nullptr && slot != &q) return Status::wdf_busy;
  slot = &q;
  return Status::success;
}

Status DeviceImpl::start_impl() noexcept {
  std::lock_guard lock(control_);
  if (started_.load(std::memory_order_acquire)) return Status::invalid_device_state;
  // release: the routing table and queues are visible to every submitter that
  // acquires started_.
  started_.store(true, std::memory_order_release);
  return Status::success;
}

// ---------------------------------------------------------------------------
// Submission

inline QueueImpl* DeviceImpl::route(Packet& p) noexcept {
  p.status = Status::pending;
  p.information = 0;
  p.sys_errno = 0;
  // request and parked are read by Device::cancel(Packet&) through atomic_ref.
  std::atomic_ref<std::uint64_t>(p.request).store(0, std::memory_order_relaxed);
  std::atomic_ref<std::uintptr_t>(p.parked).store(0, std::memory_order_relaxed);
  // acquire: pairs with the release in start_impl().
  if (!started_.load(std::memory_order_acquire)) {
    complete_unbound(p, Status::invalid_device_state);
    return nullptr;
  }
  const auto t = static_cast<std::uint32_t>(p.type);
  if (t >= kRequestTypeCount) {
    complete_unbound(p, Status::invalid_parameter);
    return nullptr;
  }
  QueueImpl* q = routes_[t] != nullptr ? routes_[t] : default_queue_;
  const bool pass_down =
      cfg_.filter && (q == nullptr || (q == default_queue_ && routes_[t] == nullptr && !q->has_handler_for(p.type)));
  if (pass_down) {
    if (cfg_.lower != nullptr) (void)cfg_.lower->submit(p);
    else complete_unbound(p, Status::invalid_device_request);
    return nullptr;
  }
  if (q == nullptr) {
    complete_unbound(p, Status::invalid_device_request);
    return nullptr;
  }
  return q;
}

inline RequestImpl* DeviceImpl::bind(const Slab::Allocation& a, Packet& p) noexcept {
  auto* r = static_cast<RequestImpl*>(a.object);
  r->packet.store(&p, std::memory_order_relaxed);
  r->queue.store(nullptr, std::memory_order_relaxed);
  r->cancel_cb.store(nullptr, std::memory_order_relaxed);
  r->fifo_of.store(nullptr, std::memory_order_relaxed);
  // Relaxed: the slot is this thread's until publish() releases the handle.
  r->word().store(rs::with_where(handle_generation(a.handle), rs::kNew), std::memory_order_relaxed);
  return r;
}

Status DeviceImpl::submit_impl(Packet& p) noexcept {
  if (p.on_complete == nullptr) {
    p.status = Status::invalid_parameter;
    return Status::invalid_parameter;
  }
  QueueImpl* q = route(p);
  if (q == nullptr) return Status::pending;
  counters_.add(kSubmitted);
  if (const Slab::Allocation a = slab_->allocate(); a.status == Status::success) {
    RequestImpl* r = bind(a, p);
    if (!q->has_fp_allocate_hook()) {
      q->arrive(r, /*published=*/false);
      return Status::pending;
    }
    // The driver sees the request before it arrives: publish it first.
    r->publish(r->word().load(std::memory_order_relaxed));
    if (q->fp_allocate_request_resources(r)) {
      q->arrive(r);
      return Status::pending;
    }
    // The driver refused resources for it: as if allocation had failed.
    r->packet.store(nullptr, std::memory_order_relaxed);
    std::atomic_ref<std::uint64_t>(p.request).store(0, std::memory_order_relaxed);
    slab_->release_owned(r->index);
  }
  q->arrive_without_request(p);
  return Status::pending;
}

Status DeviceImpl::submit_batch_impl(Packet* const* packets, std::size_t n) noexcept {
  Status result = Status::pending;
  constexpr std::size_t kMax = 64;
  RequestImpl* batch[kMax];
  std::size_t nb = 0;
  QueueImpl* bq = nullptr;
  bool bpublished = false;  // the batch's handles are published (bq's allocate hook)
  auto flush = [&] {
    if (nb != 0) bq->arrive_batch(batch, nb, bpublished);
    nb = 0;
  };
  // Slots reserved from this thread's slab cache a batch at a time (one
  // look-up of the cache for many requests); the rest are put back.
  std::uint32_t slots[kMax];
  std::uint32_t nslots = 0, next_slot = 0;
  std::uint64_t accepted = 0;
  for (std::size_t i = 0; i < n; ++i) {
    Packet& p = *packets[i];
    if (p.on_complete == nullptr) {
      p.status = Status::invalid_parameter;
      if (result == Status::pending) result = Status::invalid_parameter;
      continue;
    }
    QueueImpl* q = route(p);
    if (q == nullptr) continue;
    ++accepted;
    if (next_slot == nslots) {
      next_slot = 0;
      nslots = slab_->reserve_cached(slots, static_cast<std::uint32_t>(std::min(n - i, kMax)));
    }
    const Slab::Allocation a = next_slot < nslots ? slab_->take_reserved(slots[next_slot++]) : slab_->allocate();
    RequestImpl* r = a.status == Status::success ? bind(a, p) : nullptr;
    const bool hooked = r != nullptr && q->has_fp_allocate_hook();
    if (hooked) r->publish(r->word().load(std::memory_order_relaxed));
    if (hooked && !q->fp_allocate_request_resources(r)) {
      r->packet.store(nullptr, std::memory_order_relaxed);
      std::atomic_ref<std::uint64_t>(p.request).store(0, std::memory_order_relaxed);
      slab_->release_owned(r->index);
      r = nullptr;
    }
    if (r == nullptr) {
      flush();  // keep arrival order on the queue
      q->arrive_without_request(p);
      continue;
    }
    if (q != bq || hooked != bpublished || nb == kMax) {
      flush();
      bq = q;
      bpublished = hooked;
    }
    batch[nb++] = r;
  }
  flush();
  slab_->put_back(slots + next_slot, nslots - next_slot);
  counters_.add(kSubmitted, accepted);
  return result;
}

Status DeviceImpl::cancel_impl(std::uint64_t handle) noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = lookup(handle, w);
  if (r == nullptr || r->device != this) return Status::invalid_handle;
  const std::uint32_t hgen = handle_generation(handle);
  for (;;) {
    if (rs::gen(w) != hgen) return Status::invalid_handle;  // completed already
    if (w & rs::kCanceled) return Status::success;          // canceled already
    switch (rs::where(w)) {
      case rs::kNew:
        if (r->word().compare_exchange_weak(w, w | rs::kCanceled, std::memory_order_acq_rel,
                                            std::memory_order_acquire))
          return Status::success;  // the queue sees it when it inserts
        continue;
      case rs::kQueued:
        // seq_cst: pairs with the inserter's re-check (see QueueImpl::recheck_canceled).
        if (r->word().compare_exchange_weak(w, w | rs::kCanceled, std::memory_order_seq_cst,
                                            std::memory_order_acquire)) {
          // The request may have left the queue meanwhile (whoever took it
          // saw kCanceled), even been completed and its slot rebound with no
          // queue yet: cancel_queued tolerates a queue that no longer holds it.
          if (QueueImpl* q = r->queue.load(std::memory_order_acquire); q != nullptr) q->cancel_queued(r, hgen);
          return Status::success;
        }
        continue;
      case rs::kOwned:
        if (w & rs::kCancelable) {
          const std::uint64_t nw = (w & ~(rs::kCancelable | rs::kCancelRan)) | rs::kCanceled | rs::kCancelCb;
          if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
            r->queue.load(std::memory_order_acquire)->schedule_cancel_callback(r, rs::gen(nw));
            return Status::success;
          }
          continue;
        }
        if (r->word().compare_exchange_weak(w, w | rs::kCanceled, std::memory_order_acq_rel,
                                            std::memory_order_acquire))
          return Status::success;  // the driver sees it through is_canceled()
        continue;
      case rs::kCompleting:
        return Status::success;  // completing right now: nothing left to cancel
      default:
        return Status::invalid_handle;
    }
  }
}

// ---------------------------------------------------------------------------
// Files

FileHandle DeviceImpl::open_file_impl() noexcept {
  const std::uint64_t id = next_file_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(files_mu_);
  open_files_.insert(id);
  return FileHandle{id};
}

Status DeviceImpl::close_file_impl(FileHandle file) noexcept {
  {
    std::lock_guard lock(files_mu_);
    if (open_files_.erase(file.value) == 0) return Status::invalid_handle;
  }
  for (QueueImpl* q : queue_list()) q->cleanup_file(file);
  return Status::success;
}

// ---------------------------------------------------------------------------
// Power

Status DeviceImpl::suspend_impl() noexcept {
  flush_completion_batch();  // this thread's deferred releases: the waits below count them
  std::lock_guard lock(control_);
  if (power_.load(std::memory_order_acquire) != PowerState::d0) return Status::invalid_device_state;
  std::vector<QueueImpl*> pm;
  for (const auto& q : queues_)
    if (q->is_power_managed()) pm.push_back(q.get());
  for (QueueImpl* q : pm) q->power_down(kStopSuspend);
  for (QueueImpl* q : pm) q->wait_power_acks();
  for (QueueImpl* q : pm) q->wait_owned_settled();
  power_.store(PowerState::dx, std::memory_order_release);
  return Status::success;
}

Status DeviceImpl::resume_impl() noexcept {
  std::lock_guard lock(control_);
  if (power_.load(std::memory_order_acquire) != PowerState::dx) return Status::invalid_device_state;
  std::vector<QueueImpl*> pm;
  for (const auto& q : queues_)
    if (q->is_power_managed()) pm.push_back(q.get());
  for (QueueImpl* q : pm) q->power_up_notify();
  power_.store(PowerState::d0, std::memory_order_release);
  // Dispatch resumes once every queue has been brought back.
  for (QueueImpl* q : pm) q->power_up_release();
  return Status::success;
}

Status DeviceImpl::remove_impl() noexcept {
  flush_completion_batch();  // this thread's deferred releases: the waits below count them
  std::lock_guard lock(control_);
  if (power_.load(std::memory_order_acquire) == PowerState::removed) return Status::invalid_device_state;
  std::vector<QueueImpl*> all;
  for (const auto& q : queues_) all.push_back(q.get());
  for (QueueImpl* q : all) q->shutdown();
  for (QueueImpl* q : all) q->power_down(kStopPurge);
  for (QueueImpl* q : all) q->wait_power_acks();
  for (QueueImpl* q : all) q->wait_owned_settled();
  power_.store(PowerState::removed, std::memory_order_release);
  return Status::success;
}

}  // namespace ioq::detail
