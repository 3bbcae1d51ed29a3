// QueueImpl: the queue state machine (see impl.hpp for the data flow and
// state.hpp for the state word).
#include <condition_variable>
#include <thread>

#include "base/backoff.hpp"
#include "exec/runtime_impl.hpp"
#include "queue/forward_progress.hpp"
#include "queue/impl.hpp"

namespace ioq::detail {

using namespace qs;

namespace {

// The queues whose dispatch loop the calling thread is in, innermost last.
struct LoopStack {
  static constexpr int kDepth = 32;
  const QueueImpl* q[kDepth] = {};
  int depth = 0;
};
// constinit: no initialization guard on each access.
constinit thread_local LoopStack t_loops;

}  // namespace

bool thread_in_loop_of(const QueueImpl* q) noexcept {
  const int depth = t_loops.depth;
  if (depth == 0) return false;  // the common case: a submitter outside any loop
  // A shard's loop counts as its parent's too (the driver knows the parent).
  for (int i = 0; i < depth; ++i)
    if (t_loops.q[i] == q || &t_loops.q[i]->facade() == q) return true;
  return false;
}

LoopScope::LoopScope(const QueueImpl* q) noexcept : pushed_(t_loops.depth < LoopStack::kDepth) {
  if (pushed_) t_loops.q[t_loops.depth++] = q;
}

LoopScope::~LoopScope() {
  if (pushed_) --t_loops.depth;
}

// ---------------------------------------------------------------------------
// Construction

namespace {
std::uint32_t limit_for(const QueueConfig& c) {
  switch (c.dispatch) {
    case DispatchType::sequential: return 1;
    case DispatchType::parallel:
      return std::min<std::uint32_t>(c.max_presented.value_or(kMaxRequests), kMaxRequests);
    case DispatchType::manual: return kMaxRequests;
  }
  return 1;
}
}  // namespace

QueueImpl::QueueImpl(DeviceImpl& device, const QueueConfig& config, bool power_managed)
    : Queue(config.context),
      dev_(device),
      cfg_(config),
      power_managed_(power_managed),
      limit_(limit_for(config)),
      defer_release_(config.dispatch == DispatchType::parallel && !config.max_presented.has_value()),
      st_(kAccept | kDispatch |
          (power_managed && device.power_.load(std::memory_order_relaxed) != PowerState::d0 ? kPnpHeld : 0)),
      inbox_(device.slab_->slots() + device.cfg_.max_reserved_requests) {
  for (IoHandler& h : handlers_) h = cfg_.on_default;
  auto set = [&](RequestType t, IoHandler h) {
    if (h != nullptr) handlers_[static_cast<std::size_t>(t)] = h;
  };
  set(RequestType::read, cfg_.on_read);
  set(RequestType::write, cfg_.on_write);
  set(RequestType::device_control, cfg_.on_device_control);
  set(RequestType::internal_device_control, cfg_.on_internal_device_control);
}

QueueImpl::~QueueImpl() = default;

// ---------------------------------------------------------------------------
// Per-core dispatch

void QueueImpl::attach_runtime(Runtime* rt, std::uint32_t home_core, std::uint32_t shards) {
  rt_ = rt;
  home_core_ = home_core;
  loop_task_.q = this;
  loop_task_.task.run = [](Task& t) noexcept { reinterpret_cast<LoopTask&>(t).q->run_loop(); };
  for (std::uint32_t k = 0; k < shards; ++k) {
    auto shard = std::make_unique<QueueImpl>(dev_, cfg_, power_managed_);
    shard->parent_ = this;
    shard->attach_runtime(rt, k, 0);
    shards_.push_back(std::move(shard));
  }
}

bool QueueImpl::on_home_core() const noexcept {
  return home_core_ == kNoCore || RuntimeAccess::of(*rt_).core_of_calling_thread() == home_core_;
}

QueueImpl& QueueImpl::shard_for_caller() noexcept {
  std::uint32_t core = RuntimeAccess::of(*rt_).core_of_calling_thread();
  // A thread serving no core spreads its arrivals by its thread index; they
  // are dispatched on that shard's core.
  if (core == kNoCore) core = thread_index();
  return *shards_[core % shards_.size()];
}

void QueueImpl::fan_out_fired(Queue&, void* ctx) {
  auto* f = static_cast<FanOut*>(ctx);
  // Read before counting down: a new registration may reuse the slot as soon
  // as the count reaches zero.
  const QueueCallback fn = f->fn;
  void* user = f->ctx;
  if (f->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1 && fn != nullptr) fn(*f->parent, user);
}

bool QueueImpl::has_handler_for(RequestType t) const noexcept {
  if (is_manual() || cfg_.on_batch != nullptr) return true;
  const auto i = static_cast<std::size_t>(t);
  return (i < kRequestTypeCount ? handlers_[i] : cfg_.on_default) != nullptr;  // what present() calls
}

// ---------------------------------------------------------------------------
// The state word

[[gnu::always_inline]] inline bool QueueImpl::work_for(std::uint64_t s, std::uint32_t x_self) const noexcept {
  if ((s & kEvents) && !(s & kBarrier)) return true;
  if ((s & kIdleArmed) && D(s) == 0 && X(s) == x_self) return true;
  if ((s & kPurgeArmed) && D(s) == 0 && Q(s) == 0 && I(s) == 0 && X(s) == x_self) return true;
  if (poppable(s) > 0 && purge_mode_.load(std::memory_order_acquire)) return true;
  if (!can_dispatch(s)) return false;
  if (is_manual()) return (s & kReady) && ready_cb_.load(std::memory_order_acquire) != nullptr;
  return poppable(s) > 0 && D(s) < limit_;
}

[[gnu::always_inline]] inline bool QueueImpl::quiet(std::uint64_t ns) const noexcept {
  // No callback or event waits (whatever the counts), and: nothing to pop
  // (then only a manual queue's ready callback could be due), or a manual
  // queue that is not purging and has no ready callback due.
  if (ns & (kEvents | kIdleArmed | kPurgeArmed)) return false;
  const bool ready_due = is_manual() && (ns & kReady) && ready_cb_.load(std::memory_order_acquire) != nullptr;
  if (poppable(ns) == 0) return !ready_due;
  return is_manual() && !ready_due && !purge_mode_.load(std::memory_order_acquire);
}

[[gnu::always_inline]] inline bool QueueImpl::update_quiet(std::uint64_t sub, std::uint64_t clear_bits) noexcept {
  std::uint64_t s = st_.load(std::memory_order_relaxed);
  const std::uint64_t ns = (s - sub) & ~clear_bits;
  if (!quiet(ns)) return false;
  // acq_rel: as in update().
  return st_.compare_exchange_strong(s, ns, std::memory_order_acq_rel, std::memory_order_relaxed);
}

bool QueueImpl::may_enter(std::uint64_t ns, bool parallel_entry) const noexcept {
  // Not from inside the loop, and with a thread already in it only when
  // `parallel_entry` and, for a queue with a home core, on that core (it has
  // one loop task).
  if (thread_in_loop_of(this)) return false;
  return X(ns) == 0 || (parallel_entry && on_home_core());
}

bool QueueImpl::update(std::uint64_t add, std::uint64_t sub, std::uint64_t or_bits,
                       std::uint64_t clear_bits, bool parallel_entry, bool ready_if_empty) noexcept {
  std::uint64_t s = st_.load(std::memory_order_relaxed);
  for (;;) {
    std::uint64_t ns = ((s + add - sub) | or_bits) & ~clear_bits;
    if (ready_if_empty && is_manual() && Q(s) == 0) ns |= kReady;
    // Whether this thread takes a loop slot is worked out only when there is
    // work to enter for (most updates find none).
    const bool enter = X(ns) < kThreadMask && (X(ns) == 0 || parallel_entry) && work_for(ns, 0) &&
                       may_enter(ns, parallel_entry);
    // acq_rel: every change of the state word both publishes what the caller
    // did before it (a push, a completion) and observes what others published;
    // the dispatch loop's exit compare-exchange pairs with all of them.
    if (st_.compare_exchange_weak(s, enter ? ns + kX1 : ns, std::memory_order_acq_rel, std::memory_order_relaxed))
      return enter;
  }
}

void QueueImpl::release_driver(std::uint64_t delta_sub) noexcept {
  if (t_defer.q == this) {  // inside one of our handlers (or our batch): applied later
    t_defer.sub += delta_sub;
    return;
  }
  if (t_defer.batch && t_defer.q == nullptr && defer_release_) {  // the batch takes this queue
    t_defer.q = this;
    t_defer.sub = delta_sub;
    return;
  }
  if (update_quiet(delta_sub, 0)) return;
  if (update(0, delta_sub, 0, 0, false)) enter_loop();
}

void QueueImpl::release_driver_notified(std::uint64_t delta_sub) noexcept {
  // A power-down waits for this request: its count must have dropped before
  // the acknowledgement, so a batch's deferred releases are applied first.
  if (t_defer.batch && t_defer.q == this) flush_completion_batch();
  release_driver(delta_sub);
  power_ack_done();
}

CompletionBatch::CompletionBatch() noexcept : owns_(!t_defer.batch && t_defer.q == nullptr) {
  if (owns_) t_defer.batch = true;
}

CompletionBatch::~CompletionBatch() {
  if (!owns_) return;
  flush_completion_batch();
  t_defer.batch = false;
}

void flush_completion_batch() noexcept {
  if (!t_defer.batch || t_defer.q == nullptr) return;
  QueueImpl* q = t_defer.q;
  const std::uint64_t sub = t_defer.sub;
  const std::uint64_t done = t_defer.done;
  // Applied now: the batch must not take the release back. It may take a
  // queue again afterwards.
  t_defer = DeferredRelease{};
  q->count_completed(done);
  q->release_driver(sub);
  t_defer.batch = true;
}

void QueueImpl::enter_loop() noexcept {
  if (cfg_.execution == ExecutionLevel::passive)
    dev_.run_passive(this);
  else if (!on_home_core())
    rt_->post(home_core_, loop_task_.task);  // the loop runs on the home core
  else
    run_loop();
}

// ---------------------------------------------------------------------------
// The pop token and the FIFO (token holder only)

void QueueImpl::take_token() noexcept {
  Backoff backoff;
  std::uint64_t s = st_.load(std::memory_order_relaxed);
  for (;;) {
    if (s & kToken) {
      backoff.pause();
      s = st_.load(std::memory_order_relaxed);
      continue;
    }
    // acquire: pairs with the release in release_token(): the FIFO as the
    // previous holder left it is visible.
    if (st_.compare_exchange_weak(s, s | kToken, std::memory_order_acquire, std::memory_order_relaxed))
      return;
  }
}

void QueueImpl::release_token() noexcept {
  // release: publishes this holder's FIFO changes to the next holder.
  st_.fetch_and(~kToken, std::memory_order_release);
}

void QueueImpl::append_locked(RequestImpl* r) noexcept {
  r->next = nullptr;
  r->prev = fifo_tail_;
  if (fifo_tail_) fifo_tail_->next = r; else fifo_head_ = r;
  fifo_tail_ = r;
  r->fifo_of.store(this, std::memory_order_relaxed);
}

void QueueImpl::push_front_locked(RequestImpl* r) noexcept {
  r->prev = nullptr;
  r->next = fifo_head_;
  if (fifo_head_) fifo_head_->prev = r; else fifo_tail_ = r;
  fifo_head_ = r;
  r->fifo_of.store(this, std::memory_order_relaxed);
}

void QueueImpl::unlink_locked(RequestImpl* r) noexcept {
  if (r->prev) r->prev->next = r->next; else fifo_head_ = r->next;
  if (r->next) r->next->prev = r->prev; else fifo_tail_ = r->prev;
  r->prev = r->next = nullptr;
  r->fifo_of.store(nullptr, std::memory_order_relaxed);
}

void QueueImpl::splice_stash_locked() noexcept {
  if (stash_.load(std::memory_order_relaxed) == nullptr) return;
  // acquire: pairs with the release in requeue_head()'s push.
  RequestImpl* list = stash_.exchange(nullptr, std::memory_order_acquire);
  // The stash is newest first, which is the order requeues put them at the head.
  RequestImpl* last = nullptr;
  RequestImpl* first = list;
  for (RequestImpl* r = list; r; r = r->stash_next) {
    r->prev = last;
    if (last) last->next = r;
    r->fifo_of.store(this, std::memory_order_relaxed);
    last = r;
  }
  if (!first) return;
  last->next = fifo_head_;
  if (fifo_head_) fifo_head_->prev = last; else fifo_tail_ = last;
  fifo_head_ = first;
}

void QueueImpl::drain_inbox_locked() noexcept {
  splice_stash_locked();
  // Everything whose push started before now: wait for claimed tickets to be
  // published (a producer between claiming and publishing takes nanoseconds).
  const std::uint64_t target = inbox_.claimed_tickets();
  Backoff backoff;
  RequestImpl* buf[64];
  while (inbox_.consumed_tickets() < target) {
    const std::size_t n = inbox_.try_pop_n_exclusive(buf, 64);  // token holder: the only consumer
    for (std::size_t i = 0; i < n; ++i) append_locked(buf[i]);
    if (n == 0) backoff.pause(); else backoff.reset();
  }
}

RequestImpl* QueueImpl::pop_locked() noexcept {
  splice_stash_locked();
  if (RequestImpl* r = fifo_head_) {
    unlink_locked(r);
    return r;
  }
  RequestImpl* r = nullptr;
  return inbox_.try_pop_exclusive(r) ? r : nullptr;  // token holder: the only consumer
}

// ---------------------------------------------------------------------------
// Arrival, insertion

// Makes a request that arrived on the fast path driver-owned and presented.
// A compare-exchange, not a plain store: bind() has published the handle, so
// Device::cancel may set kCanceled at any moment, and the handler must then see
// the request canceled (the model in tests/model/queue.pml found the store
// losing it).
std::uint64_t QueueImpl::take_presented(RequestImpl* r) noexcept {
  std::uint64_t w = r->word().load(std::memory_order_relaxed);
  while (!r->word().compare_exchange_weak(w, rs::with_where(w, rs::kOwned) | rs::kPresented,
                                          std::memory_order_acq_rel, std::memory_order_relaxed)) {
  }
  return rs::with_where(w, rs::kOwned) | rs::kPresented;
}

// take_presented() for a request whose handle is not published yet: nobody
// else can reach it, so a plain store makes it owned and presented, and only
// then is the handle published (the model's PUBLISH_LATE).
std::uint64_t QueueImpl::take_presented_unpublished(RequestImpl* r) noexcept {
  const std::uint64_t w = rs::with_where(r->word().load(std::memory_order_relaxed), rs::kOwned) | rs::kPresented;
  r->word().store(w, std::memory_order_relaxed);
  r->publish(w);
  return w;
}

void QueueImpl::arrive(RequestImpl* r, bool published) noexcept {
  if (sharded()) {
    shard_for_caller().arrive(r, published);
    return;
  }
  const bool in_loop = thread_in_loop_of(this);
  const bool fast_ok =
      !in_loop && !is_manual() && cfg_.execution == ExecutionLevel::dispatch && on_home_core();
  std::uint64_t s = st_.load(std::memory_order_acquire);
  Hold hold = Hold::inserter;
  for (;;) {
    if (!published) {  // every path but the fast one publishes first
      const bool fast = fast_ok && (s & kAccept) && can_dispatch(s) && !(s & (kEvents | kIdleArmed | kPurgeArmed)) &&
                        Q(s) == 0 && I(s) == 0 && D(s) < limit_ && X(s) < kThreadMask;
      if (fast && st_.compare_exchange_weak(s, s + kD1 + kX1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        count(kArrived);
        r->queue.store(this, std::memory_order_relaxed);
        run_loop(r, take_presented_unpublished(r));
        return;
      }
      if (fast) continue;  // the word changed: look again
      r->publish(r->word().load(std::memory_order_relaxed));
      published = true;
    }
    if (!(s & kAccept)) {
      count(kRejected);
      dev_.finish_packet(r, Status::invalid_device_state, 0, 0);
      return;
    }
    // Fast path: nothing queued or being queued, delivery allowed, room for one
    // more owned request: take a driver slot and a loop slot in one step.
    if (fast_ok && can_dispatch(s) && !(s & (kEvents | kIdleArmed | kPurgeArmed)) && Q(s) == 0 &&
        I(s) == 0 && D(s) < limit_ && X(s) < kThreadMask) {
      if (st_.compare_exchange_weak(s, s + kD1 + kX1, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
        count(kArrived);
        r->queue.store(this, std::memory_order_relaxed);
        run_loop(r, take_presented(r));
        return;
      }
      continue;
    }
    if (try_reserve(s, hold)) break;
  }
  count(kArrived);
  r->queue.store(this, std::memory_order_release);
  std::uint64_t w = r->word().load(std::memory_order_acquire);
  for (;;) {
    if (w & rs::kCanceled) {
      // Already canceled and it must be queued: the insert fails, cancelled.
      to_inserter(hold);  // the packet's callback runs below: never under the token
      if (r->word().compare_exchange_weak(w, rs::with_where(w, rs::kCompleting),
                                          std::memory_order_acq_rel, std::memory_order_acquire)) {
        count(kCancelled);
        dev_.finish_packet(r, Status::cancelled, 0, 0, /*return_reserved=*/false);
        if (update(0, kQ1 + kI1, 0, 0, false)) enter_loop();
        DeviceImpl::return_reserved(r);
        return;
      }
      continue;
    }
    if (r->word().compare_exchange_weak(w, rs::with_where(w, rs::kQueued), std::memory_order_acq_rel,
                                        std::memory_order_acquire))
      break;
  }
  insert_counted(r, rs::gen(w), hold);
}

void QueueImpl::arrive_batch(RequestImpl* const* rs, std::size_t n, bool published) noexcept {
  if (sharded()) {
    shard_for_caller().arrive_batch(rs, n, published);
    return;
  }
  // One step for the whole batch: only where delivery needs no per-request
  // decision (an unlimited parallel queue, nothing queued, ready).
  if (n > 1 && defer_release_ && cfg_.execution == ExecutionLevel::dispatch && on_home_core() &&
      !thread_in_loop_of(this)) {
    std::uint64_t s = st_.load(std::memory_order_acquire);
    while ((s & kAccept) && can_dispatch(s) && !(s & (kEvents | kIdleArmed | kPurgeArmed)) && Q(s) == 0 &&
           I(s) == 0 && D(s) + n <= limit_ && X(s) < kThreadMask) {
      // acq_rel: as in arrive()'s fast path, for n requests at once.
      if (st_.compare_exchange_weak(s, s + n * kD1 + kX1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        counters_.add(kArrived, n);
        for (std::size_t i = 0; i < n; ++i) {
          RequestImpl* r = rs[i];
          r->queue.store(this, std::memory_order_relaxed);
          if (published) take_presented(r);
          else take_presented_unpublished(r);
        }
        run_loop_with(rs, n, 0);
        return;
      }
    }
  }
  for (std::size_t i = 0; i < n; ++i) arrive(rs[i], published);
}

bool QueueImpl::try_reserve(std::uint64_t& s, Hold& hold) noexcept {
  // A queued slot, holding the pop token when it is free (insert_counted then
  // links the request into the FIFO itself), else counting an inserter in
  // flight (it pushes into the inbox).
  const bool token = !(s & kToken);
  if (!token && I(s) >= kThreadMask - 1) {  // more inserters than the field holds: wait a moment
    std::this_thread::yield();
    s = st_.load(std::memory_order_acquire);
    return false;
  }
  std::uint64_t ns = s + kQ1 + (token ? kToken : kI1);
  if (is_manual() && Q(s) == 0) ns |= kReady;
  // acq_rel: the accept check (the caller's, on s) and the reservation are one
  // step, ordered against stop/drain/purge's compare-exchanges on the same word.
  if (!st_.compare_exchange_weak(s, ns, std::memory_order_acq_rel, std::memory_order_acquire)) return false;
  hold = token ? Hold::token : Hold::inserter;
  return true;
}

void QueueImpl::to_inserter(Hold& hold) noexcept {
  if (hold != Hold::token) return;
  // The token becomes an inserter count: Q - I drops back by the request not
  // yet inserted, so no work appears and nobody needs to enter the loop. As
  // in arrive(), wait while the inserter field is full (inserters in flight
  // finish without the token).
  std::uint64_t s = st_.load(std::memory_order_relaxed);
  for (;;) {
    if (I(s) >= kThreadMask - 1) {
      std::this_thread::yield();
      s = st_.load(std::memory_order_relaxed);
      continue;
    }
    if (st_.compare_exchange_weak(s, s + kI1 - kToken, std::memory_order_acq_rel, std::memory_order_relaxed))
      break;
  }
  hold = Hold::inserter;
}

void QueueImpl::insert_counted(RequestImpl* r, std::uint32_t gen, Hold hold) noexcept {
  if (hold == Hold::token) {
    // Only token holders pop the inbox, so it stays empty of older requests
    // once seen empty here: r goes straight to the FIFO's tail (no push), and
    // anything pushed meanwhile is newer. Otherwise r goes behind the inbox's
    // requests. Either way it is in place before the token is released, and a
    // canceller (who takes the token to look for it) finds it: no recheck.
    if (inbox_.claimed_tickets() == inbox_.consumed_tickets()) {
      append_locked(r);
    } else {
      Backoff backoff;
      while (!inbox_.try_push(r)) backoff.pause();
    }
    if (update_quiet(0, kToken)) return;
    if (update(0, 0, 0, kToken, /*parallel_entry=*/true)) enter_loop();
    return;
  }
  // The inbox holds every request of the device at once, so a push can only
  // fail against a momentarily stale head; retry.
  Backoff backoff;
  while (!inbox_.try_push(r)) backoff.pause();
  const bool enter = update(0, kI1, 0, 0, /*parallel_entry=*/true);
  recheck_canceled(r, gen);
  if (enter) enter_loop();
}

void QueueImpl::recheck_canceled(RequestImpl* r, std::uint32_t gen) noexcept {
  // A canceller that set kCanceled before our push may have drained the inbox
  // without finding r; our update of st_ above is ordered after its token
  // compare-exchange, so its kCanceled is visible here (see cancel_queued).
  const std::uint64_t w = r->word().load(std::memory_order_acquire);
  if (rs::gen(w) == gen && rs::where(w) == rs::kQueued && (w & rs::kCanceled) &&
      r->queue.load(std::memory_order_acquire) == this) {
    cancel_scan_.store(true, std::memory_order_release);
    if (update(0, 0, kEvents, 0, false)) enter_loop();
  }
}

Status QueueImpl::accept_forward(RequestImpl* r, std::uint64_t w, bool* completed, bool* notified) noexcept {
  if (sharded()) return shard_for_caller().accept_forward(r, w, completed, notified);
  std::uint64_t s = st_.load(std::memory_order_acquire);
  Hold hold = Hold::inserter;
  for (;;) {
    if (!(s & kAccept)) return Status::wdf_busy;
    if (try_reserve(s, hold)) break;
  }
  QueueImpl* source = r->queue.load(std::memory_order_relaxed);
  r->queue.store(this, std::memory_order_release);
  // A request the source queue's power-down notified (stop callback, no
  // acknowledgement yet) leaves the source here: the source stops waiting for
  // it, as for a completion (WDF: leaving the driver-owned list leaves the
  // power-notified list too), and it carries no notification or resume mark
  // into this queue. *notified tells the caller, which releases the power-down
  // wait only after the source's driver count has dropped: a suspend that
  // returns sees the request no longer driver-owned.
  constexpr std::uint64_t kPowerBits = rs::kStopNotified | rs::kAcked;
  for (;;) {
    if (rs::where(w) != rs::kOwned || (w & rs::kHandOver) || rs::cancel_pending(w)) {
      // The driver changed the request under us (a usage error it will see).
      to_inserter(hold);
      r->queue.store(source, std::memory_order_release);
      if (update(0, kQ1 + kI1, 0, 0, false)) enter_loop();
      return rs::cancel_pending(w) ? Status::usage_cancelable : Status::usage_not_owned;
    }
    if (w & rs::kCanceled) {
      // Already canceled: this queue's cancel path runs at once (spec 5.1).
      to_inserter(hold);  // never hold the token across the paths below
      if (cfg_.on_canceled_on_queue != nullptr) {
        // Handed over through this queue: not the driver's until the callback
        // has it. Clear the source's power marks before this queue's loop can
        // see (and complete) it.
        if (!r->word().compare_exchange_weak(w, (w & ~kPowerBits) | rs::kHandOver, std::memory_order_acq_rel,
                                             std::memory_order_acquire))
          continue;
        *notified = (w & rs::kStopNotified) != 0;
        if (update(kD1, kQ1 + kI1, 0, 0, false)) enter_loop();
        push_event(r, kEventCanceledOnQueue, rs::gen(w));
      } else {
        if (!r->word().compare_exchange_strong(w, rs::with_where(w & ~kPowerBits, rs::kCompleting),
                                               std::memory_order_acq_rel, std::memory_order_acquire))
          continue;
        *notified = (w & rs::kStopNotified) != 0;
        count(kCancelled);
        dev_.finish_packet(r, Status::cancelled, 0, 0, /*return_reserved=*/false);
        *completed = true;
        if (update(0, kQ1 + kI1, 0, 0, false)) enter_loop();
      }
      return Status::success;
    }
    if (r->word().compare_exchange_weak(w, rs::with_where(w & ~kPowerBits, rs::kQueued), std::memory_order_acq_rel,
                                        std::memory_order_acquire))
      break;
  }
  *notified = (w & rs::kStopNotified) != 0;
  insert_counted(r, rs::gen(w), hold);
  return Status::success;
}

void QueueImpl::requeue_head(RequestImpl* r) noexcept {
  // r is already QUEUED (the caller's compare-exchange); push it on the stash.
  const std::uint32_t gen = rs::gen(r->word().load(std::memory_order_relaxed));
  RequestImpl* head = stash_.load(std::memory_order_relaxed);
  do {
    r->stash_next = head;
    // release: publishes r's links to the token holder's acquire exchange.
  } while (!stash_.compare_exchange_weak(head, r, std::memory_order_release, std::memory_order_relaxed));
  count(kRequeued);
  const bool enter = update(kQ1, kD1, 0, 0, false, /*ready_if_empty=*/true);
  // A purge or stop_and_purge that set the latch after the caller looked at it
  // and swept the queue before this push did not see r: r is canceled, as the
  // latch says. (If the sweep's token preceded our update of st_, this load
  // sees the latch; otherwise the sweep saw the push and took r.)
  if (st_.load(std::memory_order_relaxed) & kLatch) {
    std::uint64_t w = r->word().load(std::memory_order_acquire);
    while (rs::gen(w) == gen && rs::where(w) == rs::kQueued && !(w & rs::kCanceled) &&
           !r->word().compare_exchange_weak(w, w | rs::kCanceled, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
    }
  }
  recheck_canceled(r, gen);
  if (enter) enter_loop();
}

// ---------------------------------------------------------------------------
// The dispatch loop

void QueueImpl::run_loop_with(RequestImpl* const* firsts, std::size_t n, std::uint64_t first_word) noexcept {
  LoopScope scope(this);
  // Releases deferred by handlers this loop called (defer_release_): every
  // decision below is taken on v = s - pending, the word as it is once they
  // land, and the next compare-exchange that succeeds applies them.
  std::uint64_t pending = 0;
  auto deliver = [&](RequestImpl* r, std::uint64_t w) {
    count(kPresented);
    if (!defer_release_) {
      present(r, w);
      return;
    }
    const DeferredRelease saved = t_defer;
    t_defer = DeferredRelease{this, 0};
    present(r, w);
    pending += t_defer.sub;
    t_defer = saved;
  };
  auto first_word_of = [&](std::size_t i) {
    return n == 1 && first_word != 0 ? first_word : firsts[i]->word().load(std::memory_order_relaxed);
  };
  // The batch is presented whole: it is counted once, before its first handler.
  if (n != 0) count(kPresented, n);
  if (defer_release_) {
    // deliver() for each, with the deferral set up once for the whole batch.
    const DeferredRelease saved = t_defer;
    t_defer = DeferredRelease{this, 0};
    if (cfg_.on_batch != nullptr) present_batch(firsts, n, first_word);
    else for (std::size_t i = 0; i < n; ++i) present(firsts[i], first_word_of(i));
    pending = t_defer.sub;
    t_defer = saved;
  } else if (cfg_.on_batch != nullptr) {
    present_batch(firsts, n, first_word);
  } else {
    for (std::size_t i = 0; i < n; ++i) present(firsts[i], first_word_of(i));
  }
  Backoff backoff;
  std::uint64_t blocked_at = 0;  // state in which a pop found the inbox head unpublished
  std::uint64_t s = st_.load(std::memory_order_acquire);
  for (;;) {
    const std::uint64_t v = s - pending;
    const bool events = (v & kEvents) && !(v & kBarrier);
    const bool idle = (v & kIdleArmed) && D(v) == 0 && X(v) == 1;
    const bool purged = (v & kPurgeArmed) && D(v) == 0 && Q(v) == 0 && I(v) == 0 && X(v) == 1;
    if ((events || idle || purged) && pending != 0) {
      // Rare paths work on the real word: apply the deferred releases first.
      s = st_.fetch_sub(pending, std::memory_order_acq_rel) - pending;
      pending = 0;
      continue;
    }
    if (events) {
      run_events();
      s = st_.load(std::memory_order_acquire);
      continue;
    }
    if (idle) {
      const Slot slot = idle_slot_;  // stable while kIdleArmed is set
      if (st_.compare_exchange_weak(s, s & ~(kIdleArmed | kLatch), std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
        if (slot.fn) slot.fn(*this, slot.ctx);
        s = st_.load(std::memory_order_acquire);
      }
      continue;
    }
    if (purged) {
      const Slot slot = purge_slot_;  // stable while kPurgeArmed is set
      if (st_.compare_exchange_weak(s, s & ~(kPurgeArmed | kLatch), std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
        if (slot.fn) slot.fn(*this, slot.ctx);
        s = st_.load(std::memory_order_acquire);
      }
      continue;
    }
    // A pop either delivers (the queue dispatches and has room) or, while
    // purge_mode_ holds, takes a late arrival only to cancel it, whatever the
    // room: then D may pass the limit for a moment.
    const bool deliverable = can_dispatch(v) && !is_manual() && D(v) < limit_;
    if (poppable(v) > 0 && s != blocked_at && (deliverable || purge_mode_.load(std::memory_order_acquire))) {
      if (v & kToken) {
        backoff.pause();
        s = st_.load(std::memory_order_acquire);
        continue;
      }
      // acq_rel: reserve one queued request as driver-owned and take the pop
      // token (and apply the deferred releases).
      if (!st_.compare_exchange_weak(s, v - kQ1 + kD1 + kToken, std::memory_order_acq_rel,
                                     std::memory_order_acquire))
        continue;
      pending = 0;
      RequestImpl* r = pop_locked();
      if (r == nullptr) {
        // The inbox head is a ticket whose producer has not published yet; its
        // producer's own update will bring us (or another thread) back.
        s = st_.fetch_sub(kD1 + kToken - kQ1, std::memory_order_acq_rel) - (kD1 + kToken - kQ1);
        // The word before the reservation: if the head's producer published
        // and updated the word meanwhile (it could not enter, D was taken),
        // s differs and the loop tries again instead of leaving.
        blocked_at = v;
        continue;
      }
      backoff.reset();
      // Read once, under the token: claim_popped() decides by this value.
      const bool purging = purge_mode_.load(std::memory_order_acquire);
      if (!deliverable && !purging && !(r->word().load(std::memory_order_acquire) & rs::kCanceled)) {
        // Taken for a purge that has ended since (start or stop cleared the
        // mode): delivering it would pass the limit (a second request on a
        // sequential queue). It stays queued, at the head, and the
        // reservation is undone; a release of D brings the loop back.
        push_front_locked(r);
        s = st_.fetch_sub(kD1 + kToken - kQ1, std::memory_order_acq_rel) - (kD1 + kToken - kQ1);
        continue;
      }
      release_token();
      if (const std::uint64_t w = claim_popped(r, purging); w != 0) deliver(r, w);
      s = st_.load(std::memory_order_acquire);
      continue;
    }
    if (is_manual() && can_dispatch(v) && (v & kReady)) {
      const QueueCallback cb = ready_cb_.load(std::memory_order_acquire);
      void* ctx = ready_ctx_.load(std::memory_order_acquire);
      if (cb != nullptr) {
        if (st_.compare_exchange_weak(s, v & ~kReady, std::memory_order_acq_rel, std::memory_order_acquire)) {
          pending = 0;
          cb(*this, ctx);
          s = st_.load(std::memory_order_acquire);
        }
        continue;
      }
    }
    // Nothing for this thread: leave, unless the word changed since we looked.
    if (st_.compare_exchange_weak(s, v - kX1, std::memory_order_acq_rel, std::memory_order_acquire))
      return;
  }
}

std::uint64_t QueueImpl::claim_popped(RequestImpl* r, bool purging) noexcept {
  std::uint64_t w = r->word().load(std::memory_order_acquire);
  for (;;) {
    if ((w & rs::kCanceled) || purging) {
      // Canceled while queued, or the queue purges: spec 5.1. The reservation
      // made it driver-owned already.
      const std::uint64_t cw = w | rs::kCanceled;
      if ((w & rs::kPresented) && cfg_.on_canceled_on_queue != nullptr) {
        if (!r->word().compare_exchange_weak(w, rs::with_where(cw, rs::kOwned) | rs::kHandOver,
                                             std::memory_order_acq_rel, std::memory_order_acquire))
          continue;
        push_event(r, kEventCanceledOnQueue, rs::gen(w));
      } else {
        if (!r->word().compare_exchange_weak(w, rs::with_where(cw, rs::kCompleting),
                                             std::memory_order_acq_rel, std::memory_order_acquire))
          continue;
        count(kCancelled);
        dev_.finish_packet(r, Status::cancelled, 0, 0, /*return_reserved=*/false);
        release_driver(kD1);
        DeviceImpl::return_reserved(r);
      }
      return 0;
    }
    const std::uint64_t nw = rs::with_where(w, rs::kOwned) | rs::kPresented;
    if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire))
      return nw;
  }
}

bool QueueImpl::complete_zero_length(RequestImpl* r, std::uint64_t w) noexcept {
  const Packet* p = r->packet.load(std::memory_order_relaxed);
  if (cfg_.allow_zero_length || p->length != 0 ||
      (p->type != RequestType::read && p->type != RequestType::write))
    return false;
  complete_owned(r, w, Status::success);
  return true;
}

[[gnu::always_inline]] inline void QueueImpl::present(RequestImpl* r, std::uint64_t w) noexcept {
  if (complete_zero_length(r, w)) return;
  // Submission refused types out of range (a driver may have rewritten its
  // packet's since: that one goes to on_default).
  const auto type = static_cast<std::size_t>(r->packet.load(std::memory_order_relaxed)->type);
  const IoHandler h = type < kRequestTypeCount ? handlers_[type] : cfg_.on_default;
  if (h == nullptr) [[unlikely]] {
    present_without_type_handler(r, w);
    return;
  }
  h(facade(), Request(r->handle_for(w)));
}

// Out of line, so that the per-type dispatch above keeps its shape.
void QueueImpl::present_without_type_handler(RequestImpl* r, std::uint64_t w) noexcept {
  if (cfg_.on_batch != nullptr) {
    const Request one(r->handle_for(w));
    cfg_.on_batch(facade(), std::span<const Request>(&one, 1));
  } else {
    complete_owned(r, w, Status::invalid_device_request);
  }
}

void QueueImpl::present_batch(RequestImpl* const* rs, std::size_t n, std::uint64_t first_word) noexcept {
  // Runs of up to kRun, their handles in raw stack storage constructed as
  // filled (no zeroing of a whole run per call).
  constexpr std::size_t kRun = 64;
  alignas(Request) std::byte storage[kRun * sizeof(Request)];
  auto* run = reinterpret_cast<Request*>(storage);
  std::size_t k = 0;
  for (std::size_t i = 0; i < n; ++i) {
    RequestImpl* r = rs[i];
    const std::uint64_t w = n == 1 && first_word != 0 ? first_word : r->word().load(std::memory_order_relaxed);
    if (complete_zero_length(r, w)) continue;
    new (&run[k++]) Request(r->handle_for(w));
    if (k == kRun) {
      cfg_.on_batch(facade(), std::span<const Request>(run, k));
      k = 0;
    }
  }
  if (k != 0) cfg_.on_batch(facade(), std::span<const Request>(run, k));
}

void QueueImpl::complete_owned(RequestImpl* r, std::uint64_t w, Status status) noexcept {
  while (!r->word().compare_exchange_weak(w, rs::with_where(w, rs::kCompleting), std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
  }
  finish_owned(r, w, status, 0, 0);
}

void QueueImpl::finish_owned(RequestImpl* r, std::uint64_t w, Status status, std::uint64_t info,
                             std::int32_t err) noexcept {
  const bool notified = (w & rs::kStopNotified) != 0;
  count(kCompleted);
  if (status == Status::cancelled) count(kCancelled);
  dev_.finish_packet(r, status, info, err, /*return_reserved=*/false);
  // The driver count first, then the power-down wait: a suspend that returns
  // finds the request no longer driver-owned. (A release deferred to this
  // queue's loop cannot meet a waiting power-down: power-down holds dispatch
  // and waits until no handler of this queue runs.)
  if (notified) release_driver_notified(kD1);
  else if (t_defer.q == this) t_defer.sub += kD1;  // release_driver's first case, inline
  else release_driver(kD1);
  DeviceImpl::return_reserved(r);
}

void QueueImpl::finish_claimed_slow(RequestImpl* r, std::uint64_t w, Status status, std::uint64_t info,
                                    std::int32_t err) noexcept {
  // A batch that holds no queue yet takes this one, as release_driver would
  // on the first release.
  if (t_defer.batch && t_defer.q == nullptr && defer_release_ && (w & rs::kStopNotified) == 0) {
    t_defer.q = this;
    finish_in_batch(r, status, info, err);
    return;
  }
  finish_owned(r, w, status, info, err);
}

std::uint64_t deferred_completions(const QueueImpl* q, const DeviceImpl* dev) noexcept {
  const QueueImpl* d = t_defer.q;
  if (d == nullptr) return 0;
  if (q != nullptr) return d == q ? t_defer.done : 0;
  return &d->dev() == dev ? t_defer.done : 0;
}

void QueueImpl::cancel_owned_as_queued(RequestImpl* r, std::uint64_t w) noexcept {
  if ((w & rs::kPresented) && cfg_.on_canceled_on_queue != nullptr) {
    // Handed over: the driver's handle is not its own until the callback.
    r->word().fetch_or(rs::kCanceled | rs::kHandOver, std::memory_order_acq_rel);
    push_event(r, kEventCanceledOnQueue, rs::gen(w));
  } else {
    complete_owned(r, w | rs::kCanceled, Status::cancelled);
  }
}

// ---------------------------------------------------------------------------
// Events: cancel callbacks and canceled-on-queue callbacks, run from the loop

void QueueImpl::push_event(RequestImpl* r, EventKind kind, std::uint32_t gen) noexcept {
  {
    std::lock_guard lock(events_mu_);
    r->event_kind = kind;
    r->event_gen = gen;
    r->event_next = nullptr;
    if (events_tail_) events_tail_->event_next = r; else events_head_ = r;
    events_tail_ = r;
  }
  if (update(0, 0, kEvents, 0, false)) enter_loop();
}

void QueueImpl::schedule_cancel_callback(RequestImpl* r, std::uint32_t gen) noexcept {
  push_event(r, kEventCancelCallback, gen);
}

void QueueImpl::run_events() noexcept {
  // Clear the flag first: an event pushed after this is either taken below or
  // sets the flag again (see push_event / recheck_canceled).
  st_.fetch_and(~kEvents, std::memory_order_acq_rel);
  if (cancel_scan_.exchange(false, std::memory_order_acq_rel)) {
    take_token();
    drain_inbox_locked();
    RequestImpl* list = take_all_queued_locked(/*only_canceled=*/true);
    release_token();
    dispose_list(list);
  }
  RequestImpl* list;
  {
    std::lock_guard lock(events_mu_);
    list = events_head_;
    events_head_ = events_tail_ = nullptr;
  }
  while (list != nullptr) {
    RequestImpl* r = list;
    list = r->event_next;
    const std::uint32_t gen = r->event_gen;
    if (r->event_kind == kEventCancelCallback) {
      const CancelCallback cb = r->cancel_cb.load(std::memory_order_acquire);
      void* ctx = r->cancel_ctx.load(std::memory_order_acquire);
      // From here on the driver may complete (forward, requeue, mark) it.
      // Until now its operations treated it as still marked cancelable, so it
      // is still owned, with the generation it had when it was scheduled; the
      // checks below only guard that invariant (never call on a stale handle).
      std::uint64_t w = r->word().load(std::memory_order_acquire);
      bool call = false;
      while (rs::gen(w) == gen && rs::where(w) == rs::kOwned &&
             (w & (rs::kCancelCb | rs::kCancelRan)) == rs::kCancelCb) {
        if (r->word().compare_exchange_weak(w, w | rs::kCancelRan, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
          w |= rs::kCancelRan;
          call = true;
          break;
        }
      }
      if (call && cb != nullptr) cb(Request(r->handle_for(w)), ctx);
    } else {
      // The hand-over completes here: from now on the driver owns it (spec
      // section 1, state 5) and may complete it. Until now its operations
      // treated it as not owned, and nothing else moves a request on from
      // kHandOver, so it is still the incarnation that was pushed; the checks
      // only guard that invariant (never call with another request's handle).
      std::uint64_t w = r->word().load(std::memory_order_acquire);
      bool call = false;
      while (rs::gen(w) == gen && rs::where(w) == rs::kOwned && (w & rs::kHandOver)) {
        if (r->word().compare_exchange_weak(w, w & ~rs::kHandOver, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
          w &= ~rs::kHandOver;
          call = true;
          break;
        }
      }
      if (call) cfg_.on_canceled_on_queue(facade(), Request(r->handle_for(w)));
    }
  }
}

// ---------------------------------------------------------------------------
// Cancellation of queued requests

RequestImpl* QueueImpl::take_all_queued_locked(bool only_canceled) noexcept {
  // Token held, inbox drained. Each removed request becomes either driver-owned
  // (canceled-on-queue) or completing; counts move in one update.
  RequestImpl* out = nullptr;
  RequestImpl** tail = &out;
  std::uint32_t removed = 0, owned = 0;
  for (RequestImpl* r = fifo_head_; r != nullptr;) {
    RequestImpl* next = r->next;
    std::uint64_t w = r->word().load(std::memory_order_acquire);
    if (!only_canceled || (w & rs::kCanceled)) {
      unlink_locked(r);
      for (;;) {
        const std::uint64_t cw = w | rs::kCanceled;
        const bool to_driver = (w & rs::kPresented) && cfg_.on_canceled_on_queue != nullptr;
        const std::uint64_t nw = to_driver ? rs::with_where(cw, rs::kOwned) | rs::kHandOver
                                           : rs::with_where(cw, rs::kCompleting);
        if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
          owned += to_driver;
          r->event_kind = to_driver ? kEventCanceledOnQueue : 0;
          r->event_gen = rs::gen(w);
          break;
        }
      }
      ++removed;
      r->event_next = nullptr;
      *tail = r;
      tail = &r->event_next;
    }
    r = next;
  }
  if (removed != 0) {
    // No loop entry here: the token is held; the caller kicks afterwards.
    std::uint64_t s = st_.load(std::memory_order_relaxed);
    while (!st_.compare_exchange_weak(s, s - removed * kQ1 + owned * kD1, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
    }
  }
  return out;
}

void QueueImpl::dispose_list(RequestImpl* list) noexcept {
  bool any = list != nullptr;
  while (list != nullptr) {
    RequestImpl* r = list;
    list = r->event_next;
    if (r->event_kind == kEventCanceledOnQueue) {
      push_event(r, kEventCanceledOnQueue, r->event_gen);
    } else {
      count(kCancelled);
      dev_.finish_packet(r, Status::cancelled, 0, 0);
    }
  }
  if (any) kick();
}

void QueueImpl::cancel_queued(RequestImpl* r, std::uint32_t gen) noexcept {
  take_token();
  drain_inbox_locked();
  std::uint64_t w = r->word().load(std::memory_order_acquire);
  const bool found = rs::gen(w) == gen && rs::where(w) == rs::kQueued &&
                     r->fifo_of.load(std::memory_order_relaxed) == this;
  bool to_driver = false;
  if (found) {
    unlink_locked(r);
    for (;;) {
      to_driver = (w & rs::kPresented) && cfg_.on_canceled_on_queue != nullptr;
      const std::uint64_t nw = to_driver ? rs::with_where(w | rs::kCanceled, rs::kOwned) | rs::kHandOver
                                         : rs::with_where(w | rs::kCanceled, rs::kCompleting);
      if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    std::uint64_t s = st_.load(std::memory_order_relaxed);
    while (!st_.compare_exchange_weak(s, s - kQ1 + (to_driver ? kD1 : 0), std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
    }
  }
  release_token();
  if (!found) {
    // Still on its way into the queue (its producer is between reserving and
    // pushing): its producer re-checks kCanceled after the push. Or it left
    // the queue meanwhile, and whoever took it saw kCanceled.
    w = r->word().load(std::memory_order_acquire);
    if (rs::gen(w) == gen && rs::where(w) == rs::kQueued) {
      cancel_scan_.store(true, std::memory_order_release);
      if (update(0, 0, kEvents, 0, false)) enter_loop();
    }
    return;
  }
  if (to_driver) {
    push_event(r, kEventCanceledOnQueue, gen);
  } else {
    count(kCancelled);
    dev_.finish_packet(r, Status::cancelled, 0, 0, /*return_reserved=*/false);
    kick();
    DeviceImpl::return_reserved(r);
  }
}

void QueueImpl::cleanup_file(FileHandle f) noexcept {
  for (auto& shard : shards_) shard->cleanup_file(f);
  take_token();
  drain_inbox_locked();
  RequestImpl* out = nullptr;
  RequestImpl** tail = &out;
  std::uint32_t removed = 0, owned = 0;
  for (RequestImpl* r = fifo_head_; r != nullptr;) {
    RequestImpl* next = r->next;
    if (r->packet.load(std::memory_order_relaxed)->file == f) {
      unlink_locked(r);
      std::uint64_t w = r->word().load(std::memory_order_acquire);
      bool to_driver;
      for (;;) {
        to_driver = (w & rs::kPresented) && cfg_.on_canceled_on_queue != nullptr;
        const std::uint64_t nw = to_driver ? rs::with_where(w | rs::kCanceled, rs::kOwned) | rs::kHandOver
                                           : rs::with_where(w | rs::kCanceled, rs::kCompleting);
        if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) break;
      }
      r->event_kind = to_driver ? kEventCanceledOnQueue : 0;
      r->event_gen = rs::gen(w);
      owned += to_driver;
      ++removed;
      r->event_next = nullptr;
      *tail = r;
      tail = &r->event_next;
    }
    r = next;
  }
  if (removed != 0) {
    std::uint64_t s = st_.load(std::memory_order_relaxed);
    while (!st_.compare_exchange_weak(s, s - removed * kQ1 + owned * kD1, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
    }
  }
  release_token();
  fp_cancel_all_parked(&f);
  dispose_list(out);
}

void QueueImpl::cancel_cancelable_owned() noexcept {
  // Pairs with the fence in mark_cancelable: the latch, set before this call,
  // is visible to a mark whose kCancelable this scan does not see.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  dev_.for_each_owned(this, [this](RequestImpl* r, std::uint64_t w) {
    while ((w & rs::kCancelable) && rs::where(w) == rs::kOwned) {
      const std::uint64_t nw = (w & ~(rs::kCancelable | rs::kCancelRan)) | rs::kCanceled | rs::kCancelCb;
      if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
        schedule_cancel_callback(r, rs::gen(nw));
        break;
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Control operations

Status QueueImpl::start_impl() noexcept {
  if (sharded()) {
    for (auto& shard : shards_) (void)shard->start_impl();
    return Status::success;
  }
  {
    std::lock_guard lock(control_);
    purge_mode_.store(false, std::memory_order_release);
    const std::uint64_t accept = shutdown_.load(std::memory_order_acquire) ? 0 : kAccept;
    std::uint64_t s = st_.load(std::memory_order_relaxed);
    for (;;) {
      std::uint64_t ns = (s | kDispatch | accept) & ~kLatch;
      if (is_manual() && Q(s) > 0) ns |= kReady;
      if (st_.compare_exchange_weak(s, ns, std::memory_order_acq_rel, std::memory_order_relaxed)) break;
    }
  }
  kick();
  return Status::success;
}

Status QueueImpl::stop_impl(QueueCallback cb, void* ctx, bool purge) noexcept {
  if (sharded()) {
    {
      std::lock_guard lock(control_);
      if (cb != nullptr && fan_idle_.remaining.load(std::memory_order_acquire) != 0)
        return dev_.usage(Status::usage_slot_busy, "stop: the stop callback slot is busy");
      if (cb != nullptr) {
        fan_idle_.fn = cb;
        fan_idle_.ctx = ctx;
        fan_idle_.parent = this;
        fan_idle_.remaining.store(static_cast<std::uint32_t>(shards_.size()), std::memory_order_release);
      }
    }
    for (auto& shard : shards_)
      (void)shard->stop_impl(cb != nullptr ? fan_out_fired : nullptr, cb != nullptr ? &fan_idle_ : nullptr, purge);
    if (purge) fp_cancel_all_parked(nullptr);
    return Status::success;
  }
  RequestImpl* canceled = nullptr;
  {
    std::lock_guard lock(control_);
    std::uint64_t s = st_.load(std::memory_order_acquire);
    if (cb != nullptr && (s & kIdleArmed))
      return dev_.usage(Status::usage_slot_busy, "stop: the stop callback slot is busy");
    if (cb != nullptr) idle_slot_ = Slot{cb, ctx};
    const std::uint64_t accept = shutdown_.load(std::memory_order_acquire) ? 0 : kAccept;
    for (;;) {
      std::uint64_t ns = (s | accept) & ~kDispatch;
      if (cb != nullptr) ns |= kIdleArmed;
      if (purge) ns |= kLatch;
      // release: publishes idle_slot_ to the loop's acquire load that sees kIdleArmed.
      if (st_.compare_exchange_weak(s, ns, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    // Accepting again: what arrives from now on is kept (C30), including a
    // late inserter of an earlier purge (its submit overlaps this call).
    if (accept != 0) purge_mode_.store(false, std::memory_order_release);
    if (purge) {
      // Cancel what is queued now; later arrivals stay queued.
      take_token();
      drain_inbox_locked();
      canceled = take_all_queued_locked(false);
      release_token();
    }
  }
  if (purge) {
    fp_cancel_all_parked(nullptr);
    dispose_list(canceled);
    cancel_cancelable_owned();
  }
  kick();
  return Status::success;
}

Status QueueImpl::drain_impl(QueueCallback cb, void* ctx, bool purge) noexcept {
  if (sharded()) {
    {
      std::lock_guard lock(control_);
      if (cb != nullptr && fan_purge_.remaining.load(std::memory_order_acquire) != 0)
        return dev_.usage(Status::usage_slot_busy,
                          purge ? "purge: the drain/purge callback slot is busy"
                                : "drain: the drain/purge callback slot is busy");
      if (cb != nullptr) {
        fan_purge_.fn = cb;
        fan_purge_.ctx = ctx;
        fan_purge_.parent = this;
        fan_purge_.remaining.store(static_cast<std::uint32_t>(shards_.size()), std::memory_order_release);
      }
    }
    for (auto& shard : shards_)
      (void)shard->drain_impl(cb != nullptr ? fan_out_fired : nullptr, cb != nullptr ? &fan_purge_ : nullptr,
                              purge);
    fp_cancel_all_parked(nullptr);
    return Status::success;
  }
  RequestImpl* canceled = nullptr;
  {
    std::lock_guard lock(control_);
    std::uint64_t s = st_.load(std::memory_order_acquire);
    if (cb != nullptr && (s & kPurgeArmed))
      return dev_.usage(Status::usage_slot_busy,
                        purge ? "purge: the drain/purge callback slot is busy"
                              : "drain: the drain/purge callback slot is busy");
    if (cb != nullptr) purge_slot_ = Slot{cb, ctx};
    if (purge) purge_mode_.store(true, std::memory_order_release);
    for (;;) {
      std::uint64_t ns = s & ~kAccept;
      if (cb != nullptr) ns |= kPurgeArmed;
      if (purge) ns |= kLatch;
      if (st_.compare_exchange_weak(s, ns, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    if (purge) {
      take_token();
      // Inserters counted in I passed the Accept check before it was cleared
      // and may push after this sweep: purge_mode_ stays set for them. With
      // none in flight (read before the drain, so every push that finished is
      // drained) nothing else can land, and the purge leaves no mode behind.
      const bool in_flight = I(st_.load(std::memory_order_acquire)) != 0;
      drain_inbox_locked();
      canceled = take_all_queued_locked(false);
      if (!in_flight) purge_mode_.store(false, std::memory_order_release);
      release_token();
    }
  }
  // Drain and purge share the code path that cancels parked packets.
  fp_cancel_all_parked(nullptr);
  if (purge) {
    dispose_list(canceled);
    cancel_cancelable_owned();
  }
  kick();
  return Status::success;
}

Status QueueImpl::sync_impl(SyncOp op) noexcept {
  flush_completion_batch();  // this thread's own deferred releases must not hold up the wait
  if (thread_in_loop_of(this))
    return dev_.usage(Status::usage_in_handler,
                      "a synchronous stop/drain/purge from a handler of the same queue never returns");
  struct Waiter {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
  } waiter;
  const QueueCallback signal = [](Queue&, void* ctx) {
    auto* wt = static_cast<Waiter*>(ctx);
    // Notify under the mutex: the waiter cannot return (and destroy `waiter`)
    // before this thread has unlocked.
    std::lock_guard lock(wt->m);
    wt->done = true;
    wt->cv.notify_all();
  };
  Status s = Status::success;
  switch (op) {
    case SyncOp::stop: s = stop_impl(signal, &waiter, false); break;
    case SyncOp::stop_and_purge: s = stop_impl(signal, &waiter, true); break;
    case SyncOp::drain: s = drain_impl(signal, &waiter, false); break;
    case SyncOp::purge: s = drain_impl(signal, &waiter, true); break;
  }
  if (s != Status::success) return s;
  std::unique_lock lock(waiter.m);
  waiter.cv.wait(lock, [&] { return waiter.done; });
  return Status::success;
}

QueueState QueueImpl::get_state_impl() const noexcept {
  if (sharded()) {
    // Flags from the first shard (every control operation sets them on all),
    // counts summed: a snapshot.
    QueueState out = shards_[0]->get_state_impl();
    out.queued = out.driver_owned = 0;
    for (const auto& shard : shards_) {
      const QueueState st = shard->get_state_impl();
      out.queued += st.queued;
      out.driver_owned += st.driver_owned;
    }
    out.flags &= ~(kQueueNoRequests | kQueueDriverNoRequests);
    if (out.queued == 0) out.flags |= kQueueNoRequests;
    if (out.driver_owned == 0) out.flags |= kQueueDriverNoRequests;
    return out;
  }
  std::uint64_t s = st_.load(std::memory_order_acquire);
  // The calling thread's own deferred releases (a handler that completed its
  // request and asks) have happened for it.
  if (t_defer.q == this) s -= t_defer.sub;
  QueueState out;
  if (s & kAccept) out.flags |= kQueueAccepting;
  if (s & kDispatch) out.flags |= kQueueDispatching;
  if (Q(s) == 0) out.flags |= kQueueNoRequests;
  if (D(s) == 0) out.flags |= kQueueDriverNoRequests;
  if (s & kPnpHeld) out.flags |= kQueuePnpHeld;
  out.queued = Q(s);
  out.driver_owned = D(s);
  return out;
}

Status QueueImpl::ready_notify_impl(QueueCallback cb, void* ctx) noexcept {
  {
    std::lock_guard lock(control_);
    if (!is_manual()) return Status::invalid_device_request;
    const QueueCallback cur = ready_cb_.load(std::memory_order_acquire);
    if (cb == nullptr) {
      if (cur == nullptr || (st_.load(std::memory_order_acquire) & kDispatch))
        return Status::invalid_device_request;
      ready_cb_.store(nullptr, std::memory_order_release);
      ready_ctx_.store(nullptr, std::memory_order_release);
      return Status::success;
    }
    if (cur != nullptr) return Status::invalid_device_request;
    ready_ctx_.store(ctx, std::memory_order_release);
    ready_cb_.store(cb, std::memory_order_release);
    // Registration with requests queued arms the notification.
    std::uint64_t s = st_.load(std::memory_order_relaxed);
    while (Q(s) > 0 && !(s & kReady) &&
           !st_.compare_exchange_weak(s, s | kReady, std::memory_order_acq_rel, std::memory_order_relaxed)) {
    }
  }
  kick();
  return Status::success;
}

Status QueueImpl::retrieve_impl(FileHandle file, bool by_file, Request& out) noexcept {
  out = Request{};
  if (cfg_.dispatch == DispatchType::parallel) return Status::invalid_device_state;
  Backoff backoff;
  for (;;) {
    std::uint64_t s = st_.load(std::memory_order_acquire);
    if (!(s & kDispatch) || (s & kPnpHeld)) return Status::wdf_paused;
    RequestImpl* r = nullptr;
    if (!by_file) {
      if (Q(s) == 0) return Status::no_more_entries;
      if (poppable(s) == 0 || (s & kToken)) {  // an insert in flight, or another popper
        backoff.pause();
        continue;
      }
      if (!st_.compare_exchange_weak(s, s - kQ1 + kD1 + kToken, std::memory_order_acq_rel,
                                     std::memory_order_acquire))
        continue;
      r = pop_locked();
      if (r == nullptr) {  // inbox head not yet published: undo, wait, retry
        st_.fetch_sub(kD1 + kToken - kQ1, std::memory_order_acq_rel);
        backoff.pause();
        continue;
      }
      release_token();
    } else {
      take_token();
      drain_inbox_locked();
      for (RequestImpl* c = fifo_head_; c != nullptr; c = c->next) {
        if (c->packet.load(std::memory_order_relaxed)->file == file) {
          r = c;
          break;
        }
      }
      if (r == nullptr) {
        release_token();
        return Status::no_more_entries;
      }
      unlink_locked(r);
      s = st_.load(std::memory_order_relaxed);
      while (!st_.compare_exchange_weak(s, s - kQ1 + kD1, std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
      }
      release_token();
    }
    const std::uint64_t w = claim_popped(r, purge_mode_.load(std::memory_order_acquire));
    if (w == 0) continue;  // it was canceled: move on
    count(kPresented);
    if (complete_zero_length(r, w)) continue;  // completed success, move on
    out = Request(r->handle_for(w));
    return Status::success;
  }
}

Status QueueImpl::find_impl(Request after, FileHandle file, Request& out) noexcept {
  out = Request{};
  if (!is_manual()) return Status::invalid_device_request;
  take_token();
  drain_inbox_locked();
  RequestImpl* start = fifo_head_;
  if (after) {
    std::uint64_t w = 0;
    RequestImpl* a = lookup(after.handle(), w);
    if (a == nullptr || rs::gen(w) != handle_generation(after.handle()) || rs::where(w) != rs::kQueued ||
        a->fifo_of.load(std::memory_order_relaxed) != this) {
      release_token();
      return Status::not_found;
    }
    start = a->next;
  }
  for (RequestImpl* r = start; r != nullptr; r = r->next) {
    const std::uint64_t w = r->word().load(std::memory_order_acquire);
    if (w & rs::kCanceled) continue;
    if (!file || r->packet.load(std::memory_order_relaxed)->file == file) {
      out = Request(r->handle_for(w));
      release_token();
      return Status::success;
    }
  }
  release_token();
  return Status::no_more_entries;
}

Status QueueImpl::retrieve_found_impl(Request tag, Request& out) noexcept {
  out = Request{};
  if (!is_manual()) return Status::invalid_device_request;
  const std::uint64_t s = st_.load(std::memory_order_acquire);
  if (!(s & kDispatch) || (s & kPnpHeld)) return Status::wdf_paused;
  take_token();
  drain_inbox_locked();
  std::uint64_t w = 0;
  RequestImpl* r = lookup(tag.handle(), w);
  if (r == nullptr || rs::gen(w) != handle_generation(tag.handle()) || rs::where(w) != rs::kQueued ||
      (w & rs::kCanceled) || r->fifo_of.load(std::memory_order_relaxed) != this) {
    release_token();
    return Status::not_found;
  }
  unlink_locked(r);
  std::uint64_t cur = st_.load(std::memory_order_relaxed);
  while (!st_.compare_exchange_weak(cur, cur - kQ1 + kD1, std::memory_order_acq_rel,
                                    std::memory_order_relaxed)) {
  }
  release_token();
  const std::uint64_t nw = claim_popped(r, purge_mode_.load(std::memory_order_acquire));
  if (nw == 0) return Status::not_found;
  count(kPresented);
  out = Request(r->handle_for(nw));
  return Status::success;
}

QueueCounters QueueImpl::counters_impl() const noexcept {
  auto c = counters_.snapshot();
  for (const auto& shard : shards_) {
    const auto sc = shard->counters_.snapshot();
    for (std::size_t i = 0; i < c.size(); ++i) c[i] += sc[i];
  }
  std::uint64_t deferred = detail::deferred_completions(this, nullptr);
  for (const auto& shard : shards_) deferred += detail::deferred_completions(shard.get(), nullptr);
  QueueCounters out;
  out.arrived = c[kArrived];
  out.presented = c[kPresented];
  out.completed = c[kCompleted] + deferred;
  out.cancelled = c[kCancelled];
  out.forwarded = c[kForwarded];
  out.requeued = c[kRequeued];
  out.rejected = c[kRejected];
  return out;
}

// ---------------------------------------------------------------------------
// Power

void QueueImpl::wait_no_dispatcher() noexcept {
  Backoff backoff;
  int rounds = 0;
  while (X(st_.load(std::memory_order_acquire)) != 0) {
    if (++rounds < 64) backoff.pause();
    else std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void QueueImpl::power_down(std::uint32_t flags) noexcept {
  if (sharded()) {
    for (auto& shard : shards_) shard->power_down(flags);
    return;
  }
  // 1. No new delivery and no callbacks; wait until no handler runs.
  st_.fetch_or(kBarrier, std::memory_order_acq_rel);
  wait_no_dispatcher();
  // 2. The stop callback for every owned request that is not canceled.
  struct Notice {
    std::uint64_t handle;
  };
  std::vector<Notice> notices;
  // Power-off also waits for canceled requests the driver owns (it completes
  // them through its cancel routine); they get no stop callback.
  //
  // Other queues still dispatch meanwhile, and the driver may forward a
  // request out of this queue at any moment, retrieve it from the other queue
  // or have it delivered there, complete it and so on. A mark set on a
  // request owned through another queue by then is released through that
  // queue (its completion, forward, requeue or acknowledgement), not this one;
  // and left there it would make power-off wait for a request that no stop
  // callback tells the driver about. So: mark only this incarnation while it
  // is owned through this queue, and count every mark on the device
  // (DeviceImpl::power_pending_), whichever queue releases it. (With a count
  // per queue, such a mark left this queue's count at 1 for good: suspend()
  // hung, every power-managed queue PnpHeld and the device still in D0.)
  dev_.for_each_owned(this, [&](RequestImpl* r, std::uint64_t w) {
    const std::uint32_t gen = rs::gen(w);
    for (;;) {
      // A failed compare-exchange reloads a word that may be another queue's
      // by now (forwarded and taken there, or completed and the slot reused).
      if (rs::gen(w) != gen || rs::where(w) != rs::kOwned || r->queue.load(std::memory_order_acquire) != this)
        return;
      const bool again = (w & rs::kStopNotified) != 0;
      const std::uint64_t nw = (w | rs::kStopNotified) & ~rs::kAcked;
      if (!r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      if (!again) {
        dev_.power_pending_.fetch_add(1, std::memory_order_acq_rel);
        // The word can also come back unchanged (same generation, same bits)
        // from a round trip between the owner check and the compare-exchange:
        // forwarded, then retrieved or delivered through the other queue. Or
        // a forward is under way (it stores the destination before it moves
        // the word). Not ours to notify either way: take the mark back,
        // unless the request was released meanwhile (that release counted).
        if (r->queue.load(std::memory_order_acquire) != this) {
          std::uint64_t x = nw;
          while (rs::gen(x) == gen && rs::where(x) == rs::kOwned && (x & rs::kStopNotified)) {
            if (r->word().compare_exchange_weak(x, (x & ~rs::kStopNotified) | (w & rs::kAcked),
                                                std::memory_order_acq_rel, std::memory_order_acquire)) {
              power_ack_done();
              break;
            }
          }
          return;
        }
      }
      if (!(w & rs::kCanceled)) notices.push_back(Notice{r->handle_for(nw)});
      return;
    }
  });
  if (cfg_.on_stop != nullptr) {
    for (const Notice& n : notices) {
      // Only for a request still notified and owned through this queue: one
      // the driver completed, requeued or forwarded since the notice was taken
      // (from another thread) no longer gets the callback, as in WDF, where
      // leaving the driver-owned list also leaves the power-notify list.
      std::uint64_t w = 0;
      RequestImpl* r = lookup(n.handle, w);
      if (r == nullptr || rs::gen(w) != handle_generation(n.handle) || rs::where(w) != rs::kOwned ||
          !(w & rs::kStopNotified) || r->queue.load(std::memory_order_acquire) != this)
        continue;
      cfg_.on_stop(facade(), Request(n.handle),
                   flags | ((w & rs::kCancelable) ? static_cast<std::uint32_t>(kStopRequestCancelable) : 0u));
    }
  }
  // 3. Hold dispatch (power is going off) but let callbacks run again, so
  //    requests can be completed through their cancel routines.
  if (update(0, 0, kPnpHeld, kBarrier, false)) enter_loop();
}

void QueueImpl::wait_idle_loops() noexcept {
  for (auto& shard : shards_) shard->wait_idle_loops();
  wait_no_dispatcher();
}

void QueueImpl::power_ack_done() noexcept {
  std::atomic<std::int32_t>& pending = dev_.power_pending_;
  if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) pending.notify_all();
}

void QueueImpl::wait_power_acks() noexcept {
  // The device's count (every queue's power-down has run before the waits:
  // no mark is added while this waits).
  std::atomic<std::int32_t>& pending = dev_.power_pending_;
  for (;;) {
    const std::int32_t v = pending.load(std::memory_order_acquire);
    if (v <= 0) return;
    pending.wait(v, std::memory_order_acquire);
  }
}

void QueueImpl::wait_owned_settled() noexcept {
  if (sharded()) {
    for (auto& shard : shards_) shard->wait_owned_settled();
    return;
  }
  // Power-down marks requests in the OWNED state. One the driver was already
  // completing (claimed from its cancelable state, or between its completion
  // compare-exchange and the release of its count) or forwarding away got no
  // mark, and the acknowledgement wait does not cover it; its count drops
  // moments later. Dispatch is held, so no new request becomes owned here: wait
  // until the count is no more than the requests still owned (acknowledged,
  // or handed over and on their way to the driver).
  int rounds = 0;
  Backoff backoff;
  for (;;) {
    std::uint32_t owned = 0;
    dev_.for_each_owned(this, [&](RequestImpl*, std::uint64_t) { ++owned; });
    if (D(st_.load(std::memory_order_acquire)) <= owned) return;
    if (++rounds < 64) backoff.pause();
    else std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void QueueImpl::power_up_notify() noexcept {
  if (sharded()) {
    for (auto& shard : shards_) shard->power_up_notify();
    return;
  }
  st_.fetch_or(kBarrier, std::memory_order_acq_rel);
  wait_no_dispatcher();
  std::vector<std::uint64_t> resumed;
  dev_.for_each_owned(this, [&](RequestImpl* r, std::uint64_t w) {
    while ((w & rs::kAcked) && !(w & rs::kCanceled) && rs::where(w) == rs::kOwned) {
      const std::uint64_t nw = w & ~rs::kAcked;
      if (r->word().compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
        resumed.push_back(r->handle_for(nw));
        break;
      }
    }
  });
  if (cfg_.on_resume != nullptr)
    for (std::uint64_t h : resumed) cfg_.on_resume(facade(), Request(h));
}

void QueueImpl::power_up_release() noexcept {
  if (sharded()) {
    for (auto& shard : shards_) shard->power_up_release();
    return;
  }
  // One step: power back on and, for a manual queue with requests waiting,
  // re-arm ReadyNotify (so it fires once for this transition, not twice).
  std::uint64_t s = st_.load(std::memory_order_relaxed);
  bool enter;
  for (;;) {
    std::uint64_t ns = s & ~(kPnpHeld | kBarrier);
    if (is_manual() && Q(s) > 0) ns |= kReady;
    enter = !thread_in_loop_of(this) && X(ns) == 0 && work_for(ns, 0);
    if (enter) ns += kX1;
    if (st_.compare_exchange_weak(s, ns, std::memory_order_acq_rel, std::memory_order_relaxed)) break;
  }
  if (enter) enter_loop();
}

void QueueImpl::shutdown() noexcept {
  for (auto& shard : shards_) shard->shutdown();
  RequestImpl* canceled = nullptr;
  {
    std::lock_guard lock(control_);
    shutdown_.store(true, std::memory_order_release);
    purge_mode_.store(true, std::memory_order_release);
    st_.fetch_and(~kAccept, std::memory_order_acq_rel);
    st_.fetch_or(kLatch, std::memory_order_acq_rel);
    take_token();
    const bool in_flight = I(st_.load(std::memory_order_acquire)) != 0;  // as in drain_impl
    drain_inbox_locked();
    canceled = take_all_queued_locked(false);
    if (!in_flight) purge_mode_.store(false, std::memory_order_release);
    release_token();
  }
  fp_cancel_all_parked(nullptr);
  dispose_list(canceled);
  cancel_cancelable_owned();
}

}  // namespace ioq::detail
