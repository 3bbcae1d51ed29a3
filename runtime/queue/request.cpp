// ioq::Request: the driver-side operations on a request, by handle.
#include <ioq/request.hpp>

#include "queue/impl.hpp"

namespace ioq {

using detail::DeviceImpl;
using detail::handle_generation;
using detail::QueueImpl;
using detail::RequestImpl;
namespace rs = detail::rs;
namespace qs = detail::qs;

namespace {

// Classifies a handle for an operation that needs a driver-owned request.
// Returns success, or the usage error (counted) that applies.
// r is not null (check_owned has looked).
[[gnu::noinline]] Status check_owned_slow(RequestImpl* r, std::uint64_t w, std::uint64_t handle,
                                          const char* op) noexcept {
  DeviceImpl& d = *r->device;
  const std::uint32_t hgen = handle_generation(handle);
  if ((hgen & 1u) == 0) return d.usage(Status::invalid_handle, op);
  if (rs::gen(w) != hgen) {
    // One step past the handle's generation: released and not reused yet.
    return d.usage(rs::gen(w) == hgen + 1 ? Status::usage_already_completed : Status::invalid_handle, op);
  }
  switch (rs::where(w)) {
    case rs::kOwned:
      // Not the driver's until its canceled-on-queue callback has it.
      if (w & rs::kHandOver) [[unlikely]] return d.usage(Status::usage_not_owned, op);
      return Status::success;
    case rs::kCompleting: return d.usage(Status::usage_already_completed, op);
    default: return d.usage(Status::usage_not_owned, op);
  }
}

// The common case inline: the handle's generation is current and the request
// is the driver's (owned implies allocated, so the generation is odd).
[[gnu::always_inline]] inline Status check_owned(RequestImpl* r, std::uint64_t w, std::uint64_t handle,
                                                 const char* op) noexcept {
  if (r == nullptr) return Status::invalid_handle;  // names no slab: nothing to count against
  if (rs::gen(w) == handle_generation(handle) && rs::where(w) == rs::kOwned && !(w & rs::kHandOver)) [[likely]]
    return Status::success;
  return check_owned_slow(r, w, handle, op);
}

struct Live {
  RequestImpl* r = nullptr;
  std::uint64_t w = 0;
};

// The request behind a handle whose generation matches, else {nullptr}. A
// handle that names a device's slab but no live request (completed, reused
// since, or forged) is a usage error there, counted under `op` (as reading a
// deleted request is fatal in WDF); validate() passes op = nullptr: asking is
// its job, so it counts nothing. A handle naming no slab has no device to
// count against.
Live live(std::uint64_t handle, const char* op) noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = detail::lookup(handle, w);
  if (r == nullptr) return {};
  const std::uint32_t hgen = handle_generation(handle);
  if (rs::gen(w) != hgen || (hgen & 1u) == 0 || rs::where(w) == rs::kFree) [[unlikely]] {
    if (op != nullptr)
      (void)r->device->usage(rs::gen(w) == hgen + 1 && (hgen & 1u) != 0 ? Status::usage_already_completed
                                                                          : Status::invalid_handle,
                             op);
    return {};
  }
  return {r, w};
}

Status do_complete(std::uint64_t handle, Status status, std::uint64_t info, std::int32_t err) noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = detail::lookup(handle, w);
  for (;;) {
    if (Status s = check_owned(r, w, handle, "complete"); s != Status::success) return s;
    // A request with a cancel callback is completable only once that callback
    // has been called (spec 4: "except inside its own cancel callback"), not
    // while it is still scheduled.
    if (rs::cancel_pending(w)) [[unlikely]]
      return r->device->usage(Status::usage_cancelable,
                              "complete: the request is marked cancelable; unmark it first");
    if (r->word().compare_exchange_weak(w, rs::with_where(w, rs::kCompleting), std::memory_order_acq_rel,
                                        std::memory_order_acquire))
      break;
  }
  r->queue.load(std::memory_order_acquire)->finish_owned(r, w, status, info, err);
  return Status::success;
}

}  // namespace

Status Request::complete(Status status, std::uint64_t information) const noexcept {
  return do_complete(handle_, status, information, 0);
}

Status Request::complete_with_errno(int err, std::uint64_t information) const noexcept {
  return do_complete(handle_, Status::io_error, information, err);
}

Status Request::forward_to_queue(Queue& destination) const noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = detail::lookup(handle_, w);
  if (Status s = check_owned(r, w, handle_, "forward_to_queue"); s != Status::success) return s;
  if (rs::cancel_pending(w))
    return r->device->usage(Status::usage_cancelable,
                            "forward_to_queue: a cancelable request cannot be forwarded");
  QueueImpl* source = r->queue.load(std::memory_order_acquire);
  QueueImpl& dest = detail::impl(destination);
  if (&dest == &source->facade() || &dest.dev() != r->device) return Status::invalid_device_request;
  bool completed = false, notified = false;
  const Status s = dest.accept_forward(r, w, &completed, &notified);
  if (s != Status::success) {
    return is_usage_error(s) ? r->device->usage(s, "forward_to_queue: the request changed hands") : s;
  }
  source->count(QueueImpl::kForwarded);
  if (notified) source->release_driver_notified(qs::kD1);  // the count drops before the acknowledgement
  else source->release_driver(qs::kD1);
  if (completed) DeviceImpl::return_reserved(r);  // after the source let go
  return Status::success;
}

Status Request::requeue() const noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = detail::lookup(handle_, w);
  for (;;) {
    if (Status s = check_owned(r, w, handle_, "requeue"); s != Status::success) return s;
    if (rs::cancel_pending(w))
      return r->device->usage(Status::usage_cancelable, "requeue: the request is marked cancelable");
    QueueImpl* q = r->queue.load(std::memory_order_acquire);
    if (!q->is_manual()) return Status::invalid_device_request;
    if (q->latch_set() || (w & rs::kCanceled)) {
      // Canceled instead (spec 5.1); the call still succeeds.
      q->count(QueueImpl::kRequeued);
      q->cancel_owned_as_queued(r, w);
      return Status::success;
    }
    // A request with a pending stop notification leaves the driver's hands
    // here: its queue's power-down stops waiting for it (as for a completion
    // or an acknowledgement), and it keeps no power marks while queued.
    if (r->word().compare_exchange_weak(w, rs::with_where(w & ~(rs::kStopNotified | rs::kAcked), rs::kQueued),
                                        std::memory_order_acq_rel, std::memory_order_acquire)) {
      q->requeue_head(r);
      if (w & rs::kStopNotified) q->power_ack_done();  // after the driver count dropped
      return Status::success;
    }
  }
}

Status Request::stop_acknowledge(bool requeue) const noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = detail::lookup(handle_, w);
  for (;;) {
    if (Status s = check_owned(r, w, handle_, "stop_acknowledge"); s != Status::success) return s;
    if (!(w & rs::kStopNotified)) return Status::invalid_device_request;  // not in a stop callback
    QueueImpl* q = r->queue.load(std::memory_order_acquire);
    if (!requeue) {
      if (r->word().compare_exchange_weak(w, (w & ~rs::kStopNotified) | rs::kAcked, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
        q->power_ack_done();
        return Status::success;
      }
      continue;
    }
    if (rs::cancel_pending(w))
      return r->device->usage(Status::usage_cancelable,
                              "stop_acknowledge(requeue): the request is marked cancelable");
    if (q->latch_set() || (w & rs::kCanceled)) {
      // Removal (latch set): the requeue becomes a cancellation.
      const std::uint64_t nw = w & ~rs::kStopNotified;
      if (!r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      q->count(QueueImpl::kRequeued);
      q->cancel_owned_as_queued(r, nw);
      q->power_ack_done();
      return Status::success;
    }
    if (r->word().compare_exchange_weak(w, rs::with_where(w & ~rs::kStopNotified, rs::kQueued),
                                        std::memory_order_acq_rel, std::memory_order_acquire)) {
      q->requeue_head(r);
      q->power_ack_done();
      return Status::success;
    }
  }
}

void detail::mark_latched(RequestImpl* r, QueueImpl* q, std::uint64_t w) noexcept {
  const std::uint32_t gen = rs::gen(w);
  while (rs::gen(w) == gen && rs::where(w) == rs::kOwned && (w & rs::kCancelable)) {
    const std::uint64_t nw = (w & ~(rs::kCancelable | rs::kCancelRan)) | rs::kCanceled | rs::kCancelCb;
    if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
      q->schedule_cancel_callback(r, gen);
      break;
    }
  }
}

Status detail::mark_cancelable_slow(RequestImpl* r, std::uint64_t w, std::uint64_t handle, CancelCallback cb,
                                    void* ctx, bool ex) noexcept {
  if (Status s = check_owned(r, w, handle, "mark_cancelable"); s != Status::success) return s;
  if (rs::cancel_pending(w))
    return r->device->usage(Status::usage_cancelable, "mark_cancelable: already marked cancelable");
  if (cb == nullptr)
    return Status::invalid_parameter;
  // The request is ours: store the callback before publishing kCancelable.
  r->cancel_ctx.store(ctx, std::memory_order_relaxed);
  r->cancel_cb.store(cb, std::memory_order_release);
  QueueImpl* q = r->queue.load(std::memory_order_acquire);
  for (;;) {
    if ((w & rs::kCanceled) || q->latch_set()) {
      if (ex) return Status::cancelled;
      // A request whose earlier cancel callback has been called gets this one
      // scheduled afresh (kCancelRan cleared until the loop calls it).
      if (r->word().compare_exchange_weak(w, (w | rs::kCanceled | rs::kCancelCb) & ~rs::kCancelRan,
                                          std::memory_order_acq_rel, std::memory_order_acquire)) {
        q->schedule_cancel_callback(r, rs::gen(w));
        return Status::success;
      }
      continue;
    }
    // release: publishes cancel_cb/cancel_ctx to a canceller that sees kCancelable.
    // seq_cst: purge and stop_and_purge set the latch, then scan for
    // cancelable requests; a mark between their two steps is seen by neither
    // unless it looks at the latch again. This compare-exchange and the latch
    // load below are seq_cst, and the scan starts with a seq_cst fence: one
    // of the two sides sees the other. (On x86 both are the plain
    // instructions: lock cmpxchg and mov.)
    if (r->word().compare_exchange_weak(w, w | rs::kCancelable, std::memory_order_seq_cst,
                                        std::memory_order_acquire)) {
      if (q->latch_set_seq_cst()) detail::mark_latched(r, q, w | rs::kCancelable);
      return Status::success;
    }
    if (Status s = check_owned(r, w, handle, "mark_cancelable"); s != Status::success) return s;
  }
}

namespace {
Status mark(std::uint64_t handle, CancelCallback cb, void* ctx, bool ex) noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = detail::lookup(handle, w);
  return detail::mark_cancelable_at(r, w, handle, cb, ctx, ex);
}
}  // namespace

Status Request::mark_cancelable(CancelCallback cb, void* ctx) const noexcept {
  return mark(handle_, cb, ctx, false);
}

Status Request::mark_cancelable_ex(CancelCallback cb, void* ctx) const noexcept {
  return mark(handle_, cb, ctx, true);
}

Status Request::unmark_cancelable() const noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = detail::lookup(handle_, w);
  for (;;) {
    if (Status s = check_owned(r, w, handle_, "unmark_cancelable"); s != Status::success) return s;
    if (w & rs::kCancelCb) return Status::cancelled;  // the cancel callback has won
    if (!(w & rs::kCancelable))
      return r->device->usage(Status::usage_not_cancelable, "unmark_cancelable: not marked cancelable");
    if (r->word().compare_exchange_weak(w, w & ~rs::kCancelable, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
      return Status::success;
  }
}

detail::Claimed detail::claim_cancelable_slow(Request request) noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = detail::lookup(request.handle(), w);
  for (;;) {
    if (check_owned(r, w, request.handle(), "unmark_cancelable") != Status::success) return {};
    if ((w & rs::kCancelCb) || !(w & rs::kCancelable)) return {};
    const std::uint64_t nw = rs::with_where(w & ~rs::kCancelable, rs::kCompleting);
    if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire))
      return Claimed{r, w & ~rs::kCancelable};
  }
}

bool Request::is_canceled() const noexcept {
  const Live l = live(handle_, "is_canceled");
  return l.r != nullptr && (l.w & rs::kCanceled) != 0;
}

bool Request::is_reserved() const noexcept {
  const Live l = live(handle_, "is_reserved");
  return l.r != nullptr && l.r->reserved_owner != nullptr;
}

Status Request::validate() const noexcept {
  return live(handle_, nullptr).r != nullptr ? Status::success : Status::invalid_handle;
}

Queue* Request::queue() const noexcept {
  const Live l = live(handle_, "queue");
  if (l.r == nullptr) return nullptr;
  QueueImpl* q = l.r->queue.load(std::memory_order_acquire);
  return q != nullptr ? &q->facade() : nullptr;
}

namespace {
const Packet* packet_of(std::uint64_t handle, const char* op) noexcept {
  const Live l = live(handle, op);
  return l.r ? l.r->packet.load(std::memory_order_relaxed) : nullptr;
}
}  // namespace

RequestType Request::type() const noexcept {
  const Packet* p = packet_of(handle_, "type");
  return p ? p->type : RequestType::read;
}
std::uint64_t Request::offset() const noexcept {
  const Packet* p = packet_of(handle_, "offset");
  return p ? p->offset : 0;
}
std::uint32_t Request::length() const noexcept {
  const Packet* p = packet_of(handle_, "length");
  return p ? p->length : 0;
}
std::uint32_t Request::ioctl_code() const noexcept {
  const Packet* p = packet_of(handle_, "ioctl_code");
  return p ? p->ioctl_code : 0;
}
void* Request::buffer() const noexcept {
  const Packet* p = packet_of(handle_, "buffer");
  return p ? p->buffer : nullptr;
}
FileHandle Request::file() const noexcept {
  const Packet* p = packet_of(handle_, "file");
  return p ? p->file : FileHandle{};
}
Packet* Request::packet() const noexcept {
  const Live l = live(handle_, "packet");
  return l.r ? l.r->packet.load(std::memory_order_relaxed) : nullptr;
}
void* Request::context_area() const noexcept {
  const Live l = live(handle_, "context_area");
  if (l.r == nullptr || l.r->slab->context_bytes() == 0) return nullptr;
  return l.r->slab->context(l.r->index);
}

}  // namespace ioq
