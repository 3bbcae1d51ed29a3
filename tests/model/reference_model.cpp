// The reference model (see reference_model.hpp for what it decides and why).
// Spec references are to shared/spec/queue-semantics.md.
#include "reference_model.hpp"

#include <algorithm>
#include <cassert>

namespace ioq::model {

namespace {

bool is_zero_length_rw(const Packet& p) {
  return p.length == 0 && (p.type == RequestType::read || p.type == RequestType::write);
}

std::uint32_t limit_for(const QueueConfig& c) {
  switch (c.dispatch) {
    case DispatchType::sequential: return 1;
    case DispatchType::parallel: return c.max_presented.value_or(0xFFFFFFFFu);
    case DispatchType::manual: return 0xFFFFFFFFu;
  }
  return 1;
}

}  // namespace

// ===========================================================================
// Queue

Queue::Queue(Device& dev, QueueConfig cfg, bool power_managed, std::size_t index)
    : dev_(dev), cfg_(std::move(cfg)), pm_(power_managed), index_(index), limit_(limit_for(cfg_)) {
  // A new queue starts Accept+Dispatch (section 2), held if the device is not in D0.
  pnp_held_ = pm_ && dev.power_state() != PowerState::d0;
}

// Section 7, DispatchEvents; see the banner for the priority order.
void Queue::dispatch() {
  if (in_loop_ > 0) return;  // the active loop re-checks after its callback returns
  ++in_loop_;
  for (;;) {
    if (!barrier_ && !cancel_events_.empty()) {
      Req* r = cancel_events_.front();
      cancel_events_.pop_front();
      r->cancel = Req::Cancel::ran;
      auto cb = r->cancel_cb;
      if (cb) cb(Request(&dev_, r->handle));
      continue;
    }
    if (!barrier_ && !coq_events_.empty()) {
      Req* r = coq_events_.front();
      coq_events_.pop_front();
      r->where = Req::Where::owned;  // the driver owns it from the callback on
      cfg_.on_canceled_on_queue(*this, Request(&dev_, r->handle));
      continue;
    }
    if (idle_armed_ && driver_ == 0) {
      idle_armed_ = false;
      latch_ = false;  // section 3: the latch clears when an Idle/Purge callback fires
      QueueCallback cb = std::move(idle_cb_);
      idle_cb_ = nullptr;
      if (cb) cb(*this);
      continue;
    }
    if (purge_armed_ && driver_ == 0 && fifo_.empty()) {
      purge_armed_ = false;
      latch_ = false;
      QueueCallback cb = std::move(purge_cb_);
      purge_cb_ = nullptr;
      if (cb) cb(*this);
      continue;
    }
    if (!dispatch_ || pnp_held_ || barrier_) break;
    if (manual()) {
      if (ready_flag_ && ready_cb_) {
        ready_flag_ = false;  // once per transition from empty
        QueueCallback cb = ready_cb_;
        cb(*this);
        continue;
      }
      break;
    }
    if (fifo_.empty() || driver_ >= limit_) break;
    Req* r = fifo_.front();
    fifo_.pop_front();
    deliver(r);
  }
  --in_loop_;
}

void Queue::deliver(Req* r) {
  r->where = Req::Where::owned;
  r->presented = true;
  r->owned_seq = ++dev_.owned_seq_;
  ++driver_;
  const Packet& p = *r->packet;
  // Section 2, AllowZeroLengthRequests: completed at the moment it would be delivered.
  if (!cfg_.allow_zero_length && is_zero_length_rw(p)) {
    dev_.complete_owned(r, Status::success, 0);
    return;
  }
  const IoHandler* h = nullptr;
  switch (p.type) {
    case RequestType::read: h = &cfg_.on_read; break;
    case RequestType::write: h = &cfg_.on_write; break;
    case RequestType::device_control: h = &cfg_.on_device_control; break;
    case RequestType::internal_device_control: h = &cfg_.on_internal_device_control; break;
    default: break;
  }
  if (h == nullptr || !*h) h = &cfg_.on_default;
  if (!*h) {  // C7: no matching handler and no default
    dev_.complete_owned(r, Status::invalid_device_request, 0);
    return;
  }
  IoHandler handler = *h;
  handler(*this, Request(&dev_, r->handle));
}

void Queue::insert_tail(Req* r) {
  const bool was_empty = fifo_.empty();
  r->queue = this;
  r->where = Req::Where::queued;
  fifo_.push_back(r);
  if (manual() && was_empty) ready_flag_ = true;
}

void Queue::insert_head(Req* r) {
  const bool was_empty = fifo_.empty();
  r->queue = this;
  r->where = Req::Where::queued;
  fifo_.push_front(r);
  if (manual() && was_empty) ready_flag_ = true;
}

void Queue::arrive(Req* r) {
  if (!accept_) {  // section 7, QueueRequest: not accepting
    dev_.finish_packet(r, Status::invalid_device_state, 0);
    dev_.release(r);
    return;
  }
  insert_tail(r);
  dispatch();
}

std::vector<Req*> Queue::owned_requests() const {
  std::vector<Req*> out;
  for (const auto& [h, r] : dev_.live_) {
    (void)h;
    if (r->queue == this && (r->where == Req::Where::owned || r->where == Req::Where::coq_pending))
      out.push_back(r);
  }
  std::sort(out.begin(), out.end(), [](const Req* a, const Req* b) { return a->owned_seq < b->owned_seq; });
  return out;
}

void Queue::sweep(const std::function<bool(const Req&)>& match) {
  // Section 5.1 for every matching queued request: presented + canceled-on-
  // queue handler -> the driver owns it (counted now) and the callback runs
  // from the loop; otherwise completed cancelled.
  std::vector<Req*> taken;
  for (auto it = fifo_.begin(); it != fifo_.end();) {
    if (match(**it)) {
      taken.push_back(*it);
      it = fifo_.erase(it);
    } else {
      ++it;
    }
  }
  const bool coq = static_cast<bool>(cfg_.on_canceled_on_queue);
  for (Req* r : taken) {
    r->canceled = true;
    if (r->presented && coq) {
      r->where = Req::Where::coq_pending;
      r->owned_seq = ++dev_.owned_seq_;
      ++driver_;
    }
  }
  for (Req* r : taken) {
    if (r->where == Req::Where::coq_pending) {
      coq_events_.push_back(r);
      dispatch();
    } else {
      dev_.finish_packet(r, Status::cancelled, 0);
      dev_.release(r);
    }
  }
  if (!taken.empty()) dispatch();
}

void Queue::cancel_cancelable_owned() {
  // Section 5.3: each driver-owned cancelable request gets its cancel callback once.
  for (Req* r : owned_requests()) {
    if (r->where != Req::Where::owned || r->cancel != Req::Cancel::marked) continue;
    r->cancel = Req::Cancel::pending;
    r->canceled = true;
    cancel_events_.push_back(r);
    dispatch();
  }
}

void Queue::cancel_parked(const FileHandle* file) {
  if (!fp_) return;
  std::vector<Packet*> out;
  for (auto it = fp_->parked.begin(); it != fp_->parked.end();) {
    if (file == nullptr || (*it)->file == *file) {
      out.push_back(*it);
      dev_.parked_.erase(*it);
      it = fp_->parked.erase(it);
    } else {
      ++it;
    }
  }
  for (Packet* p : out) Device::complete_unbound(*p, Status::cancelled);  // C70
}

void Queue::cancel_owned_as_queued(Req* r) {
  r->canceled = true;
  if (r->presented && cfg_.on_canceled_on_queue) {
    r->where = Req::Where::coq_pending;  // still counted as the driver's
    coq_events_.push_back(r);
    dispatch();
  } else {
    dev_.complete_owned(r, Status::cancelled, 0);
  }
}

Status Queue::start() {
  accept_ = !shutdown_;
  dispatch_ = true;
  latch_ = false;
  if (manual() && !fifo_.empty()) ready_flag_ = true;  // ReadyNotify re-armed
  dispatch();
  return Status::success;
}

Status Queue::stop(QueueCallback cb) {
  if (cb && idle_armed_) return dev_.usage(Status::usage_slot_busy);
  if (cb) {
    idle_cb_ = std::move(cb);
    idle_armed_ = true;
  }
  accept_ = !shutdown_;
  dispatch_ = false;
  dispatch();
  return Status::success;
}

Status Queue::stop_and_purge(QueueCallback cb) {
  if (cb && idle_armed_) return dev_.usage(Status::usage_slot_busy);
  if (cb) {
    idle_cb_ = std::move(cb);
    idle_armed_ = true;
  }
  accept_ = !shutdown_;
  dispatch_ = false;
  latch_ = true;
  cancel_parked(nullptr);
  sweep([](const Req&) { return true; });  // those queued now; later arrivals stay (C43)
  cancel_cancelable_owned();
  dispatch();
  return Status::success;
}

Status Queue::drain(QueueCallback cb) {
  if (cb && purge_armed_) return dev_.usage(Status::usage_slot_busy);
  if (cb) {
    purge_cb_ = std::move(cb);
    purge_armed_ = true;
  }
  accept_ = false;
  cancel_parked(nullptr);  // the drain path shares the purge's cancellation of pended FP packets
  dispatch();
  return Status::success;
}

Status Queue::purge(QueueCallback cb) {
  if (cb && purge_armed_) return dev_.usage(Status::usage_slot_busy);
  if (cb) {
    purge_cb_ = std::move(cb);
    purge_armed_ = true;
  }
  accept_ = false;
  latch_ = true;
  cancel_parked(nullptr);
  sweep([](const Req&) { return true; });
  cancel_cancelable_owned();
  dispatch();
  return Status::success;
}

Status Queue::sync(int which) {
  if (in_loop_ > 0) return dev_.usage(Status::usage_in_handler);
  auto done = std::make_shared<bool>(false);
  QueueCallback cb = [done](Queue&) { *done = true; };
  Status s = Status::success;
  switch (which) {
    case 0: s = stop(cb); break;
    case 1: s = stop_and_purge(cb); break;
    case 2: s = drain(cb); break;
    default: s = purge(cb); break;
  }
  if (s != Status::success) return s;
  return *done ? Status::success : Status::pending;
}

Status Queue::stop_synchronously() { return sync(0); }
Status Queue::stop_and_purge_synchronously() { return sync(1); }
Status Queue::drain_synchronously() { return sync(2); }
Status Queue::purge_synchronously() { return sync(3); }

QueueState Queue::get_state() const {
  QueueState s;
  if (accept_) s.flags |= kQueueAccepting;
  if (dispatch_) s.flags |= kQueueDispatching;
  if (fifo_.empty()) s.flags |= kQueueNoRequests;
  if (driver_ == 0) s.flags |= kQueueDriverNoRequests;
  if (pnp_held_) s.flags |= kQueuePnpHeld;
  s.queued = static_cast<std::uint32_t>(fifo_.size());
  s.driver_owned = driver_;
  return s;
}

Status Queue::ready_notify(QueueCallback cb) {
  if (!manual()) return Status::invalid_device_request;
  if (!cb) {
    if (!ready_cb_ || dispatch_) return Status::invalid_device_request;  // C24: unregister only while stopped
    ready_cb_ = nullptr;
    return Status::success;
  }
  if (ready_cb_) return Status::invalid_device_request;
  ready_cb_ = std::move(cb);
  if (!fifo_.empty()) ready_flag_ = true;  // C26
  dispatch();
  return Status::success;
}

Status Queue::retrieve_next_request(Request& out) {
  out = Request{};
  if (cfg_.dispatch == DispatchType::parallel) return Status::invalid_device_state;
  for (;;) {
    if (!dispatch_ || pnp_held_) return Status::wdf_paused;
    if (fifo_.empty()) return Status::no_more_entries;
    Req* r = fifo_.front();
    fifo_.pop_front();
    r->where = Req::Where::owned;
    r->presented = true;
    r->owned_seq = ++dev_.owned_seq_;
    ++driver_;
    if (!cfg_.allow_zero_length && is_zero_length_rw(*r->packet)) {
      dev_.complete_owned(r, Status::success, 0);
      continue;
    }
    out = Request(&dev_, r->handle);
    return Status::success;
  }
}

Status Queue::retrieve_next_request_by_file_object(FileHandle file, Request& out) {
  out = Request{};
  if (cfg_.dispatch == DispatchType::parallel) return Status::invalid_device_state;
  for (;;) {
    if (!dispatch_ || pnp_held_) return Status::wdf_paused;
    auto it = std::find_if(fifo_.begin(), fifo_.end(), [&](const Req* r) { return r->packet->file == file; });
    if (it == fifo_.end()) return Status::no_more_entries;
    Req* r = *it;
    fifo_.erase(it);
    r->where = Req::Where::owned;
    r->presented = true;
    r->owned_seq = ++dev_.owned_seq_;
    ++driver_;
    if (!cfg_.allow_zero_length && is_zero_length_rw(*r->packet)) {
      dev_.complete_owned(r, Status::success, 0);
      continue;
    }
    out = Request(&dev_, r->handle);
    return Status::success;
  }
}

Status Queue::find_request(Request after, FileHandle file, Request& out) {
  out = Request{};
  if (!manual()) return Status::invalid_device_request;
  auto it = fifo_.begin();
  if (after) {
    Req* a = dev_.live(after.handle());
    if (a == nullptr || a->where != Req::Where::queued || a->queue != this) return Status::not_found;
    it = std::find(fifo_.begin(), fifo_.end(), a);
    if (it == fifo_.end()) return Status::not_found;
    ++it;
  }
  for (; it != fifo_.end(); ++it) {
    Req* r = *it;
    if (r->canceled) continue;
    if (!file || r->packet->file == file) {
      out = Request(&dev_, r->handle);
      return Status::success;
    }
  }
  return Status::no_more_entries;
}

Status Queue::retrieve_found_request(Request tag, Request& out) {
  out = Request{};
  if (!manual()) return Status::invalid_device_request;
  if (!dispatch_ || pnp_held_) return Status::wdf_paused;
  Req* r = dev_.live(tag.handle());
  if (r == nullptr || r->where != Req::Where::queued || r->canceled || r->queue != this) return Status::not_found;
  fifo_.erase(std::find(fifo_.begin(), fifo_.end(), r));
  r->where = Req::Where::owned;
  r->presented = true;
  r->owned_seq = ++dev_.owned_seq_;
  ++driver_;
  out = Request(&dev_, r->handle);
  return Status::success;
}

Status Queue::assign_forward_progress_policy(const ForwardProgressConfig& c) {
  if (fp_) return Status::invalid_parameter;  // C63
  if (c.total_reserved == 0) return Status::invalid_parameter;
  if (c.policy == ForwardProgressPolicy::examine && !c.examine) return Status::invalid_parameter;
  if (c.total_reserved > dev_.cfg_.max_reserved_requests - dev_.reserved_in_use_)
    return Status::insufficient_resources;
  dev_.reserved_in_use_ += c.total_reserved;
  auto f = std::make_unique<ForwardProgress>();
  f->cfg = c;
  for (std::uint32_t i = 0; i < c.total_reserved; ++i) {
    auto r = std::make_unique<Req>();
    r->reserved_owner = this;
    r->presented = true;  // reserved requests are marked presented (section 6)
    // Each is offered to the driver's resource allocation (C64: one failure undoes all).
    if (c.allocate_reserved_resources) {
      const Status s = c.allocate_reserved_resources(*this, Request(&dev_, dev_.next_handle_++));
      if (s != Status::success) {
        dev_.reserved_in_use_ -= c.total_reserved;
        return s;
      }
    }
    f->free_list.push_back(r.get());
    f->reserved.push_back(std::move(r));
  }
  fp_ = std::move(f);  // the policy is enabled last
  return Status::success;
}

ForwardProgressStats Queue::forward_progress_stats() const {
  ForwardProgressStats s;
  if (!fp_) return s;
  s.total = fp_->cfg.total_reserved;
  s.free = static_cast<std::uint32_t>(fp_->free_list.size());
  s.in_use = s.total - s.free;
  s.parked = static_cast<std::uint32_t>(fp_->parked.size());
  s.reserved_used = fp_->reserved_used;
  s.parked_total = fp_->parked_total;
  return s;
}

// Power (section 3). Stop callbacks go to every owned request that is not
// canceled; canceled ones are awaited too (ioq's decision).
void Queue::power_down(std::uint32_t flags) {
  barrier_ = true;
  struct Notice {
    Req* r;
    std::uint64_t handle;
    bool cancelable;
  };
  std::vector<Notice> notices;
  for (Req* r : owned_requests()) {
    if (!r->stop_notified) ++power_pending_;
    r->stop_notified = true;
    r->acked = false;
    if (!r->canceled) notices.push_back(Notice{r, r->handle, r->cancel == Req::Cancel::marked});
  }
  if (cfg_.on_stop) {
    for (const Notice& n : notices)
      cfg_.on_stop(*this, Request(&dev_, n.handle),
                   flags | (n.cancelable ? static_cast<std::uint32_t>(kStopRequestCancelable) : 0u));
  }
  pnp_held_ = true;
  barrier_ = false;
  dispatch();
}

void Queue::power_up_notify() {
  barrier_ = true;
  std::vector<std::uint64_t> resumed;
  for (Req* r : owned_requests()) {
    if (r->where == Req::Where::owned && r->acked && !r->canceled) {
      r->acked = false;
      resumed.push_back(r->handle);
    }
  }
  if (cfg_.on_resume)
    for (std::uint64_t h : resumed) cfg_.on_resume(*this, Request(&dev_, h));
}

void Queue::power_up_release() {
  pnp_held_ = false;
  barrier_ = false;
  if (manual() && !fifo_.empty()) ready_flag_ = true;
  dispatch();
}

void Queue::shutdown() {
  // Removal step 1 and 2: no Accept for good, the latch, and a purge.
  shutdown_ = true;
  accept_ = false;
  latch_ = true;
  cancel_parked(nullptr);
  sweep([](const Req&) { return true; });
  cancel_cancelable_owned();
  dispatch();
}

// ===========================================================================
// Device

Device::Device(const DeviceConfig& cfg) : cfg_(cfg) {}
Device::~Device() = default;

Queue* Device::create_queue(const QueueConfig& c, Status* error) {
  auto fail = [&](Status s) -> Queue* {
    if (error) *error = s;
    return nullptr;
  };
  const bool has_io = c.on_read || c.on_write || c.on_device_control || c.on_internal_device_control || c.on_default;
  if (c.dispatch == DispatchType::manual && has_io) return fail(Status::invalid_parameter);
  if (c.dispatch != DispatchType::manual && !has_io) return fail(Status::wdf_no_callback);
  if (c.max_presented.has_value() && c.dispatch != DispatchType::parallel) return fail(Status::invalid_parameter);
  if (c.max_presented.has_value() && *c.max_presented == 0) return fail(Status::invalid_parameter);
  if (c.default_queue && started_) return fail(Status::invalid_device_state);
  if (c.default_queue && default_ != nullptr) return fail(Status::invalid_device_request);
  bool pm = true;
  if (cfg_.control_device) pm = false;
  else if (c.power_managed == TriState::no) pm = false;
  queues_.push_back(std::make_unique<Queue>(*this, c, pm, queues_.size()));
  Queue* q = queues_.back().get();
  if (c.default_queue) default_ = q;
  if (error) *error = Status::success;
  return q;
}

Status Device::configure_request_dispatching(Queue& q, RequestType type) {
  if (type != RequestType::create && type != RequestType::read && type != RequestType::write &&
      type != RequestType::device_control && type != RequestType::internal_device_control)
    return Status::invalid_parameter;
  if (&q.dev_ != this) return Status::invalid_device_request;
  if (started_) return Status::invalid_device_state;
  const QueueConfig& c = q.cfg_;
  bool handler = c.dispatch == DispatchType::manual || static_cast<bool>(c.on_default);
  switch (type) {
    case RequestType::read: handler = handler || c.on_read; break;
    case RequestType::write: handler = handler || c.on_write; break;
    case RequestType::device_control: handler = handler || c.on_device_control; break;
    case RequestType::internal_device_control: handler = handler || c.on_internal_device_control; break;
    default: break;
  }
  if (!handler) return Status::invalid_device_request;
  if (&q == default_) return Status::invalid_device_request;
  Queue*& slot = routes_[static_cast<std::size_t>(type)];
  if (slot != nullptr && slot != &q) return Status::wdf_busy;
  slot = &q;
  return Status::success;
}

Status Device::start() {
  if (started_) return Status::invalid_device_state;
  started_ = true;
  return Status::success;
}

Queue* Device::route(RequestType t) const {
  const auto i = static_cast<std::size_t>(t);
  return routes_[i] != nullptr ? routes_[i] : default_;
}

bool Device::should_fail_allocation() {
  switch (fault_) {
    case FaultMode::never: return false;
    case FaultMode::always: return true;
    case FaultMode::every_nth: return (++fault_counter_ % fault_n_) == 0;
  }
  return false;
}

void Device::set_fault(FaultMode mode, std::uint32_t n) {
  fault_ = mode;
  fault_n_ = n == 0 ? 1 : n;
  fault_counter_ = 0;
}

Req* Device::live(std::uint64_t h) const {
  auto it = live_.find(h);
  return it == live_.end() ? nullptr : it->second;
}

Status Device::check_owned(std::uint64_t h, Req*& out) {
  out = nullptr;
  if (h == 0) return Status::invalid_handle;  // the null request: names nothing, not counted
  Req* r = live(h);
  if (r == nullptr) return usage(Status::usage_already_completed);
  if (r->where != Req::Where::owned) return usage(Status::usage_not_owned);
  out = r;
  return Status::success;
}

void Device::bind(Req* r, Packet& p) {
  r->handle = next_handle_++;
  r->packet = &p;
  r->queue = nullptr;
  r->where = Req::Where::free;
  r->presented = r->reserved_owner != nullptr;
  r->canceled = false;
  r->cancel = Req::Cancel::none;
  r->cancel_cb = nullptr;
  r->stop_notified = false;
  r->acked = false;
  p.request = r->handle;
  live_[r->handle] = r;
}

Req* Device::new_normal(Packet& p) {
  auto owned = std::make_unique<Req>();
  Req* r = owned.get();
  normal_[r] = std::move(owned);
  bind(r, p);
  ++live_normal_;
  return r;
}

void Device::finish_packet(Req* r, Status status, std::uint64_t info) {
  Packet* p = r->packet;
  // What a submitter sees for the framework's busy/paused codes (section 1).
  if (status == Status::wdf_paused || status == Status::wdf_busy) status = Status::device_busy;
  live_.erase(r->handle);
  if (r->reserved_owner == nullptr) --live_normal_;
  r->handle = 0;
  r->packet = nullptr;
  r->queue = nullptr;
  r->where = Req::Where::free;
  r->cancel = Req::Cancel::none;
  r->cancel_cb = nullptr;
  r->canceled = false;
  r->stop_notified = false;
  r->acked = false;
  p->status = status;
  p->information = info;
  p->sys_errno = 0;
  p->on_complete(*p);
}

void Device::release(Req* r) {
  if (r->reserved_owner != nullptr) {
    fp_return(*r->reserved_owner, r);
    return;
  }
  normal_.erase(r);
}

void Device::complete_unbound(Packet& p, Status s) {
  p.status = s;
  p.information = 0;
  p.sys_errno = 0;
  p.on_complete(p);
}

// Section 4, Complete: the originator is completed, then driver-1, then a
// dispatch pass; a reserved request goes back to its owner on its final release.
void Device::complete_owned(Req* r, Status status, std::uint64_t info) {
  Queue* q = r->queue;
  if (r->stop_notified) --q->power_pending_;
  finish_packet(r, status, info);
  --q->driver_;
  q->dispatch();
  release(r);
}

Status Device::submit(Packet& p) {
  if (p.on_complete == nullptr) {
    p.status = Status::invalid_parameter;
    return Status::invalid_parameter;
  }
  p.status = Status::pending;
  p.information = 0;
  p.sys_errno = 0;
  p.request = 0;
  if (!started_) {
    complete_unbound(p, Status::invalid_device_state);
    return Status::pending;
  }
  if (static_cast<std::uint32_t>(p.type) >= kRequestTypeCount) {
    complete_unbound(p, Status::invalid_parameter);
    return Status::pending;
  }
  Queue* q = route(p.type);
  if (q == nullptr) {
    complete_unbound(p, Status::invalid_device_request);
    return Status::pending;
  }
  // Section 6 arrival: 1. create a normal request (the injector is asked first).
  bool failed = should_fail_allocation() || live_normal_ >= cfg_.max_requests;
  if (!failed) {
    Req* r = new_normal(p);
    // 2. EvtIoAllocateRequestResources presents it; a refusal frees it.
    if (q->fp_ && q->fp_->cfg.allocate_request_resources) {
      r->presented = true;
      if (q->fp_->cfg.allocate_request_resources(*q, Request(this, r->handle)) != Status::success) {
        live_.erase(r->handle);
        --live_normal_;
        p.request = 0;
        normal_.erase(r);
        failed = true;
      }
    }
    if (!failed) {
      q->arrive(r);
      return Status::pending;
    }
  }
  arrive_without_request(*q, p);
  return Status::pending;
}

void Device::arrive_without_request(Queue& q, Packet& p) {
  auto* f = q.fp_.get();
  if (f == nullptr) {
    complete_unbound(p, Status::insufficient_resources);
    return;
  }
  // 3. The policy decides.
  bool use = false;
  switch (f->cfg.policy) {
    case ForwardProgressPolicy::always_use_reserved: use = true; break;
    case ForwardProgressPolicy::paging_io: use = (p.flags & kPacketPaging) != 0; break;
    case ForwardProgressPolicy::examine: use = f->cfg.examine(q, p) == ExamineResult::use_reserved; break;
  }
  if (!use) {
    complete_unbound(p, Status::unsuccessful);
    return;
  }
  // 4. A free reserved request is bound and queued; 5. otherwise the packet is pended.
  if (!f->free_list.empty()) {
    Req* r = f->free_list.front();
    f->free_list.pop_front();
    bind(r, p);
    ++f->reserved_used;
    q.arrive(r);
    return;
  }
  f->parked.push_back(&p);
  parked_[&p] = &q;
  ++f->parked_total;
}

void Device::fp_return(Queue& owner, Req* r) {
  auto* f = owner.fp_.get();
  if (!f->parked.empty()) {  // the oldest pended packet gets it
    Packet* p = f->parked.front();
    f->parked.pop_front();
    parked_.erase(p);
    bind(r, *p);
    ++f->reserved_used;
    owner.arrive(r);
    return;
  }
  f->free_list.push_back(r);
}

Status Device::cancel(Packet& p) {
  if (auto it = parked_.find(&p); it != parked_.end()) {  // a pended FP packet (section 6, step 5)
    Queue* q = it->second;
    parked_.erase(it);
    auto& pk = q->fp_->parked;
    pk.erase(std::find(pk.begin(), pk.end(), &p));
    complete_unbound(p, Status::cancelled);
    return Status::success;
  }
  Req* r = live(p.request);
  if (r == nullptr) return Status::invalid_handle;  // completed already
  if (r->canceled) return Status::success;
  r->canceled = true;
  Queue* q = r->queue;
  switch (r->where) {
    case Req::Where::queued:  // section 5.1 (C50, C51)
      q->fifo_.erase(std::find(q->fifo_.begin(), q->fifo_.end(), r));
      if (r->presented && q->cfg_.on_canceled_on_queue) {
        r->where = Req::Where::coq_pending;
        r->owned_seq = ++owned_seq_;
        ++q->driver_;
        q->coq_events_.push_back(r);
        q->dispatch();
      } else {
        finish_packet(r, Status::cancelled, 0);
        q->dispatch();
        release(r);
      }
      break;
    case Req::Where::owned:  // 5.3 / 5.4
      if (r->cancel == Req::Cancel::marked) {
        r->cancel = Req::Cancel::pending;
        q->cancel_events_.push_back(r);
        q->dispatch();
      }
      break;
    default: break;
  }
  return Status::success;
}

FileHandle Device::open_file() {
  const std::uint64_t id = next_file_++;
  files_.insert(id);
  return FileHandle{id};
}

Status Device::close_file(FileHandle f) {
  if (files_.erase(f.value) == 0) return Status::invalid_handle;
  for (const auto& q : queues_) {  // section 5.6 (C55): every queue, queued requests only
    q->cancel_parked(&f);
    q->sweep([&](const Req& r) { return r.packet->file == f; });
  }
  return Status::success;
}

Status Device::suspend() {
  if (power_ != PowerState::d0) return Status::invalid_device_state;
  for (const auto& q : queues_)
    if (q->pm_) q->power_down(kStopSuspend);
  power_ = PowerState::dx;
  return Status::success;
}

Status Device::resume() {
  if (power_ != PowerState::dx) return Status::invalid_device_state;
  for (const auto& q : queues_)
    if (q->pm_) q->power_up_notify();
  power_ = PowerState::d0;
  for (const auto& q : queues_)  // dispatch resumes once every queue is back
    if (q->pm_) q->power_up_release();
  return Status::success;
}

Status Device::remove() {
  if (power_ == PowerState::removed) return Status::invalid_device_state;
  for (const auto& q : queues_) q->shutdown();
  for (const auto& q : queues_) q->power_down(kStopPurge);  // non-power-managed queues too (C61)
  power_ = PowerState::removed;
  return Status::success;
}

std::int32_t Device::pending_power_acks() const {
  std::int32_t n = 0;
  for (const auto& q : queues_) n += q->power_pending_;
  return n;
}

// ===========================================================================
// Request

Status Request::complete(Status status, std::uint64_t information) const {
  Req* r = nullptr;
  if (Status s = dev_->check_owned(h_, r); s != Status::success) return s;
  if (r->cancel == Req::Cancel::marked || r->cancel == Req::Cancel::pending)
    return dev_->usage(Status::usage_cancelable);
  dev_->complete_owned(r, status, information);
  return Status::success;
}

Status Request::forward_to_queue(Queue& dest) const {
  Req* r = nullptr;
  if (Status s = dev_->check_owned(h_, r); s != Status::success) return s;
  if (r->cancel == Req::Cancel::marked || r->cancel == Req::Cancel::pending)
    return dev_->usage(Status::usage_cancelable);
  Queue* src = r->queue;
  if (&dest == src || &dest.dev_ != dev_) return Status::invalid_device_request;  // C46
  if (!dest.accept_) return Status::wdf_busy;  // C42: nothing changes
  // Leaving the driver's hands through its queue ends a pending stop
  // notification (as a completion would) and the resume mark.
  if (r->stop_notified) --src->power_pending_;
  r->stop_notified = false;
  r->acked = false;
  if (r->canceled) {
    // Already canceled: the destination's cancel path runs (section 4, 5.1).
    // ReadyNotify "may be spurious" (section 3): like ioq, a canceled forward
    // into an empty manual queue arms it as an insert would.
    const bool arm = dest.manual() && dest.fifo_.empty();
    if (arm) dest.ready_flag_ = true;
    r->queue = &dest;
    if (dest.cfg_.on_canceled_on_queue) {
      r->where = Req::Where::coq_pending;
      r->owned_seq = ++dev_->owned_seq_;
      ++dest.driver_;
      if (arm) dest.dispatch();  // (ioq's order: the notification, then the hand-over)
      dest.coq_events_.push_back(r);
      dest.dispatch();
      --src->driver_;
      src->dispatch();
    } else {
      dev_->finish_packet(r, Status::cancelled, 0);
      dest.dispatch();
      --src->driver_;
      src->dispatch();
      dev_->release(r);
    }
    return Status::success;
  }
  // The destination accepts it (and may deliver it) before the source lets go.
  dest.insert_tail(r);
  dest.dispatch();
  --src->driver_;
  src->dispatch();
  return Status::success;
}

Status Request::requeue() const {
  Req* r = nullptr;
  if (Status s = dev_->check_owned(h_, r); s != Status::success) return s;
  if (r->cancel == Req::Cancel::marked || r->cancel == Req::Cancel::pending)
    return dev_->usage(Status::usage_cancelable);
  Queue* q = r->queue;
  if (!q->manual()) return Status::invalid_device_request;  // C49
  if (q->latch_ || r->canceled) {  // C44: cancelled instead, still success
    q->cancel_owned_as_queued(r);
    return Status::success;
  }
  if (r->stop_notified) --q->power_pending_;
  r->stop_notified = false;
  r->acked = false;
  --q->driver_;
  q->insert_head(r);
  q->dispatch();
  return Status::success;
}

Status Request::mark_cancelable(std::function<void(Request)> cb) const {
  Req* r = nullptr;
  if (Status s = dev_->check_owned(h_, r); s != Status::success) return s;
  if (r->cancel == Req::Cancel::marked || r->cancel == Req::Cancel::pending)
    return dev_->usage(Status::usage_cancelable);
  if (!cb) return Status::invalid_parameter;
  Queue* q = r->queue;
  if (r->canceled || q->latch_) {  // C45: the callback runs through the loop
    r->canceled = true;
    r->cancel = Req::Cancel::pending;
    r->cancel_cb = std::move(cb);
    q->cancel_events_.push_back(r);
    q->dispatch();
    return Status::success;
  }
  r->cancel = Req::Cancel::marked;
  r->cancel_cb = std::move(cb);
  return Status::success;
}

Status Request::mark_cancelable_ex(std::function<void(Request)> cb) const {
  Req* r = nullptr;
  if (Status s = dev_->check_owned(h_, r); s != Status::success) return s;
  if (r->cancel == Req::Cancel::marked || r->cancel == Req::Cancel::pending)
    return dev_->usage(Status::usage_cancelable);
  if (!cb) return Status::invalid_parameter;
  if (r->canceled || r->queue->latch_) return Status::cancelled;  // C45: the caller completes it
  r->cancel = Req::Cancel::marked;
  r->cancel_cb = std::move(cb);
  return Status::success;
}

Status Request::unmark_cancelable() const {
  Req* r = nullptr;
  if (Status s = dev_->check_owned(h_, r); s != Status::success) return s;
  if (r->cancel == Req::Cancel::pending || r->cancel == Req::Cancel::ran) return Status::cancelled;  // C53
  if (r->cancel == Req::Cancel::none) return dev_->usage(Status::usage_not_cancelable);
  r->cancel = Req::Cancel::none;
  r->cancel_cb = nullptr;
  return Status::success;
}

Status Request::stop_acknowledge(bool requeue) const {
  Req* r = nullptr;
  if (Status s = dev_->check_owned(h_, r); s != Status::success) return s;
  if (!r->stop_notified) return Status::invalid_device_request;  // not in a stop callback
  Queue* q = r->queue;
  if (!requeue) {  // C57: stays owned, gets the resume callback
    r->stop_notified = false;
    r->acked = true;
    --q->power_pending_;
    return Status::success;
  }
  if (r->cancel == Req::Cancel::marked || r->cancel == Req::Cancel::pending)
    return dev_->usage(Status::usage_cancelable);
  r->stop_notified = false;
  --q->power_pending_;
  if (q->latch_ || r->canceled) {  // removal: the requeue becomes a cancellation
    q->cancel_owned_as_queued(r);
    return Status::success;
  }
  --q->driver_;  // C58: back to the head, redelivered after D0
  q->insert_head(r);
  q->dispatch();
  return Status::success;
}

const Req* Request::live_or_report() const {
  if (dev_ == nullptr || h_ == 0) return nullptr;  // the null request: names nothing, not counted
  const Req* r = dev_->live(h_);
  if (r == nullptr) (void)dev_->usage(Status::usage_already_completed);
  return r;
}

bool Request::is_canceled() const {
  const Req* r = live_or_report();
  return r != nullptr && r->canceled;
}

bool Request::is_reserved() const {
  const Req* r = live_or_report();
  return r != nullptr && r->reserved_owner != nullptr;
}

Queue* Request::queue() const {
  const Req* r = live_or_report();
  return r != nullptr ? r->queue : nullptr;
}

Packet* Request::packet() const {
  const Req* r = live_or_report();
  return r != nullptr ? r->packet : nullptr;
}

Status Request::validate() const {
  return dev_ != nullptr && dev_->live(h_) != nullptr ? Status::success : Status::invalid_handle;
}

}  // namespace ioq::model
