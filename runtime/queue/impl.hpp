// ioq::detail: the implementation of devices, queues and requests.
//
// Data flow
//   submit -> DeviceImpl::submit: allocate a RequestImpl from the slab, bind the
//   packet, route by type -> QueueImpl::arrive:
//     * fast path: nothing queued, nobody inserting, delivery allowed: one
//       compare-exchange of the state word takes a driver slot and a loop slot,
//       and the handler runs on the submitting thread;
//     * otherwise: a compare-exchange reserves a queued slot (checking Accept),
//       the request goes into the inbox ring, and a second update releases the
//       inserter count and enters the dispatch loop if there is work.
//   The dispatch loop (run_loop) holds a loop slot (X) and repeats: run queued
//   callbacks, fire the stop/drain/purge callbacks, deliver the next request,
//   until a compare-exchange that leaves the loop succeeds on an unchanged word.
//
// Who may touch what
//   * The state word st_: any thread, by compare-exchange / fetch ops.
//   * The inbox ring and the requeue stash: pushed by any thread (lock-free).
//   * The FIFO (front list) and pops from inbox and stash: only the holder of the
//     pop token (qs::kToken in st_), which is taken together with the count
//     reservation and never held across a callback.
//   * Control state (callback slots, ready-notify registration): under control_.
//   * The event list: under events_mu_ (cancellations only, never the fast path).
#pragma once

#include <ioq/device.hpp>
#include <ioq/queue.hpp>
#include <ioq/request.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include <ioq/runtime.hpp>

#include "base/per_thread.hpp"
#include "memory/slab.hpp"
#include "queue/state.hpp"
#include "ring/mpmc_ring.hpp"

namespace ioq::detail {

class QueueImpl;
class DeviceImpl;

// The runtime object in each slab slot.
struct RequestImpl {
  // The fields every request's round trip touches come first: with the state
  // word before them they share one cache line of the slot.
  // Relaxed: the driver reads it while it owns the request; a getter called
  // on a request it does not own reads a stale or null pointer, never a torn one.
  std::atomic<Packet*> packet{nullptr};
  std::atomic<QueueImpl*> queue{nullptr};  // current queue (stable while queued)
  std::atomic<CancelCallback> cancel_cb{nullptr};
  std::atomic<void*> cancel_ctx{nullptr};
  QueueImpl* reserved_owner = nullptr;     // the queue whose reserved pool this is from
  std::uint64_t handle_base = 0;           // the handle's slab id and index; the generation is or-ed in
  // The queue whose FIFO links it, or null. Written only by that queue's
  // token holder; relaxed loads by other queues' token holders (a request
  // moving on can be linked elsewhere while they look): equal to `this` under
  // this queue's token means it is in this FIFO and stays there.
  std::atomic<const QueueImpl*> fifo_of{nullptr};
  DeviceImpl* device = nullptr;
  Slab* slab = nullptr;
  std::uint32_t index = 0;
  std::uint32_t event_gen = 0;             // generation the queue event was pushed for (with event_kind)
  // FIFO links, touched only by the holder of the queue's pop token.
  RequestImpl* prev = nullptr;
  RequestImpl* next = nullptr;
  RequestImpl* stash_next = nullptr;       // requeue stash (Treiber stack)
  RequestImpl* event_next = nullptr;       // queue event list (under events_mu_)
  RequestImpl* target_next = nullptr;      // a target's waiting list (driver-owned only)
  bool target_marked = false;              // the target marked it cancelable while it waits
  std::uint8_t event_kind = 0;
  std::atomic<std::uint32_t> free_next{0}; // reserved free stack: next index + 1

  // The slot's state word sits just before this object in the slab.
  [[nodiscard]] std::atomic<std::uint64_t>& word() const noexcept { return Slab::word_of_object(this); }
  [[nodiscard]] std::uint64_t handle_for(std::uint64_t w) const noexcept { return handle_base | rs::gen(w); }
  // Publishes the handle in the bound packet (w: the word it was bound with),
  // from where Device::cancel(Packet&) reads it. Until then nothing but the
  // submitting thread can reach the request. release: the word and bindings
  // are visible to whoever reads the handle.
  void publish(std::uint64_t w) const noexcept {
    std::atomic_ref<std::uint64_t>(packet.load(std::memory_order_relaxed)->request)
        .store(handle_for(w), std::memory_order_release);
  }
};

// Resolves a handle to its request and current state word. Returns nullptr for
// a handle naming no slab; otherwise the request, with `word` loaded (acquire).
// The caller compares the generation.
inline RequestImpl* lookup(std::uint64_t handle, std::uint64_t& word) noexcept {
  Slab* slab = Slab::from_handle(handle);
  if (slab == nullptr || handle_index(handle) >= slab->slots()) return nullptr;
  auto* r = static_cast<RequestImpl*>(slab->object(handle_index(handle)));
  // acquire: pairs with the release stores and compare-exchanges of the word,
  // so the request's fields written before the last transition are visible.
  word = r->word().load(std::memory_order_acquire);
  return r;
}

enum EventKind : std::uint8_t { kEventCancelCallback = 1, kEventCanceledOnQueue = 2 };

class QueueImpl final : public Queue {
 public:
  QueueImpl(DeviceImpl& device, const QueueConfig& config, bool power_managed);
  ~QueueImpl();
  // Initialises the request objects of a slab for this device.
  static void init_slab_objects(Slab& slab, DeviceImpl* device, QueueImpl* reserved_owner) noexcept;

  DeviceImpl& dev() const noexcept { return dev_; }
  // The queue the driver knows: the parent of a per-core shard, else itself.
  QueueImpl& facade() noexcept { return parent_ != nullptr ? *parent_ : *this; }
  const QueueImpl& facade() const noexcept { return parent_ != nullptr ? *parent_ : *this; }
  bool sharded() const noexcept { return !shards_.empty(); }
  std::uint32_t home_core() const noexcept { return home_core_; }
  // Per-core set-up (DeviceConfig::runtime): where this queue dispatches, and
  // for an unlimited parallel queue, its shards (one per core).
  void attach_runtime(Runtime* rt, std::uint32_t home_core, std::uint32_t shards);
  const std::vector<std::unique_ptr<QueueImpl>>& shards() const noexcept { return shards_; }
  const QueueConfig& config() const noexcept { return cfg_; }
  bool is_power_managed() const noexcept { return power_managed_; }
  bool is_manual() const noexcept { return cfg_.dispatch == DispatchType::manual; }

  // ---- data path ----
  // A new request (state kNew) routed here by submit. `published`: its handle
  // is in its packet already; if not, arrive() publishes it, after making it
  // owned and presented with a plain store when it takes the fast path.
  void arrive(RequestImpl* r, bool published = true) noexcept;
  std::uint64_t take_presented(RequestImpl* r) noexcept;
  std::uint64_t take_presented_unpublished(RequestImpl* r) noexcept;
  // n new requests, in order (submit_batch); `published` as for arrive().
  void arrive_batch(RequestImpl* const* rs, std::size_t n, bool published) noexcept;
  // Inserts a request the driver owns through another queue (forward) or a
  // forwarded-in one; wdf_busy when not accepting (nothing changed). Sets
  // *completed when r was already canceled and its packet completed here: a
  // reserved r is then the caller's to return_reserved() after it released
  // the source queue's count.
  Status accept_forward(RequestImpl* r, std::uint64_t w, bool* completed, bool* notified) noexcept;
  // Called after the request left the driver's hands through this queue
  // (completion, forward out, requeue, handed to canceled-on-queue... ) with
  // the change to apply to st_ (e.g. -D1).
  void release_driver(std::uint64_t delta_sub) noexcept;
  // release_driver() for a request with a pending stop notification, then
  // power_ack_done(): the count drops first (a batch's deferred releases too).
  void release_driver_notified(std::uint64_t delta_sub) noexcept;
  // Requeue/stop-ack: owned request back to the head.
  void requeue_head(RequestImpl* r) noexcept;
  // The driver's request r was canceled while marked cancelable (or marked
  // while canceled/latched): run its cancel callback from the loop.
  // gen: r's generation when its kCancelCb was set.
  void schedule_cancel_callback(RequestImpl* r, std::uint32_t gen) noexcept;
  // A queued request r had its canceled flag set: remove and cancel it.
  void cancel_queued(RequestImpl* r, std::uint32_t gen) noexcept;
  // Close of a file: cancel its queued requests.
  void cleanup_file(FileHandle f) noexcept;

  bool latch_set() const noexcept { return (st_.load(std::memory_order_acquire) & qs::kLatch) != 0; }
  bool latch_set_seq_cst() const noexcept { return (st_.load(std::memory_order_seq_cst) & qs::kLatch) != 0; }
  std::uint64_t state_word() const noexcept { return st_.load(std::memory_order_acquire); }

  // ---- forward progress (runtime/queue/forward_progress.cpp) ----
  struct ForwardProgress;
  ForwardProgress* fp() const noexcept { return fp_.load(std::memory_order_acquire); }
  // The slab of this queue's reserved requests; nullptr without a policy.
  Slab* reserved_slab() const noexcept;
  Status assign_fp(const ForwardProgressConfig& config) noexcept;
  ForwardProgressStats fp_stats() const noexcept;
  // A packet routed here got no normal request: apply the policy. Completes,
  // parks or delivers the packet.
  void arrive_without_request(Packet& p) noexcept;
  // Allocation succeeded: run allocate_request_resources if registered.
  // Returns false when it refused the request (the caller frees it).
  bool fp_allocate_request_resources(RequestImpl* r) noexcept;
  // Whether this queue has the allocate-resources callback (the driver sees a
  // new request before it arrives, so its handle is published first).
  bool has_fp_allocate_hook() const noexcept { return fp() != nullptr && fp_has_allocate_hook(); }
  bool fp_has_allocate_hook() const noexcept;  // fp() set: does it have the hook
  // A reserved request of this queue finished its packet: serve the oldest
  // parked packet with it, or put it back on the free list.
  void fp_return(RequestImpl* r) noexcept;
  // Cancels a parked packet; false when it is not parked here (any more).
  bool fp_cancel_parked(Packet* p) noexcept;
  // Cancels every parked packet (or those of `file` when set).
  void fp_cancel_all_parked(const FileHandle* file) noexcept;

  // ---- power (device control path) ----
  void power_down(std::uint32_t flags) noexcept;   // kStopSuspend or kStopPurge
  void power_up_notify() noexcept;                 // resume callbacks
  void power_up_release() noexcept;                // dispatch again
  void shutdown() noexcept;                        // removal: no Accept, purge
  // Waits until every stop notification of the device is released.
  void wait_power_acks() noexcept;
  // Waits until the driver count holds only requests still owned through this
  // queue (a completion or forward under way has released its count).
  void wait_owned_settled() noexcept;
  // Waits until no thread is in (or posted to run) this queue's loops.
  void wait_idle_loops() noexcept;
  void power_ack_done() noexcept;                  // one notified request finished

  // ---- Queue API ----
  Status start_impl() noexcept;
  Status stop_impl(QueueCallback cb, void* ctx, bool purge) noexcept;
  Status drain_impl(QueueCallback cb, void* ctx, bool purge) noexcept;
  enum class SyncOp { stop, stop_and_purge, drain, purge };
  Status sync_impl(SyncOp op) noexcept;
  QueueState get_state_impl() const noexcept;
  Status ready_notify_impl(QueueCallback cb, void* ctx) noexcept;
  Status retrieve_impl(FileHandle file, bool by_file, Request& out) noexcept;
  Status find_impl(Request after, FileHandle file, Request& out) noexcept;
  Status retrieve_found_impl(Request tag, Request& out) noexcept;
  QueueCounters counters_impl() const noexcept;

  enum Counter : std::size_t {
    kArrived, kPresented, kCompleted, kCancelled, kForwarded, kRequeued, kRejected, kCounterCount
  };
  void count(Counter c, std::uint64_t n = 1) noexcept { counters_.add(c, n); }
  // Completions whose counts were deferred with their driver-count release
  // (see finish_claimed): kCompleted here and kCompletedPackets on the device.
  inline void count_completed(std::uint64_t n) noexcept;

 private:
  struct Slot {
    QueueCallback fn = nullptr;
    void* ctx = nullptr;
  };

  // True when a thread entering the loop (x_self = 0) or already in it
  // (x_self = 1) has something to do in state `s`.
  bool work_for(std::uint64_t s, std::uint32_t x_self) const noexcept;
  // Whether this thread may take a loop slot in word ns (update(), only when
  // ns has work: kept out of line, off update()'s common path).
  [[gnu::noinline]] bool may_enter(std::uint64_t ns, bool parallel_entry) const noexcept;
  // Applies a change to st_ and, when the new state has work for a thread
  // outside the loop and either no thread is in the loop or `parallel_entry`,
  // also takes a loop slot. Returns whether it did; the caller then calls
  // enter_loop(). `ready_if_empty` sets kReady on a manual queue when Q was 0.
  bool update(std::uint64_t add, std::uint64_t sub, std::uint64_t or_bits,
              std::uint64_t clear_bits, bool parallel_entry, bool ready_if_empty = false) noexcept;
  // update(0, sub, 0, clear_bits, ...) where the new word has work for no
  // thread (quiet): one compare-exchange, inlined into release_driver() and
  // the token holder's insert. False: the word has, or may have, work, or it
  // changed under us; the caller goes through update().
  bool update_quiet(std::uint64_t sub, std::uint64_t clear_bits) noexcept;
  // A sufficient condition for work_for(ns, 0) being false, cheap to test.
  bool quiet(std::uint64_t ns) const noexcept;
  void kick() noexcept {
    if (update(0, 0, 0, 0, false)) enter_loop();
  }
  void enter_loop() noexcept;  // with a loop slot held: run here, or on the arena
  // r owned, D counted, kPresented counted by the caller (once per batch).
  void present(RequestImpl* r, std::uint64_t w) noexcept;
  // present() for n requests to an on_batch queue: one call per run (the
  // word of a lone first request as run_loop_with was given it).
  [[gnu::noinline]] void present_batch(RequestImpl* const* rs, std::size_t n, std::uint64_t first_word) noexcept;
  // present() for a type with no IoHandler: the batch handler, given r alone,
  // or invalid_device_request.
  [[gnu::noinline]] void present_without_type_handler(RequestImpl* r, std::uint64_t w) noexcept;
  void run_events() noexcept;
  // Queues a callback for r's incarnation `gen` (which only the loop moves on).
  void push_event(RequestImpl* r, EventKind kind, std::uint32_t gen) noexcept;
  bool complete_zero_length(RequestImpl* r, std::uint64_t w) noexcept;

  // Pop token.
  void take_token() noexcept;
  void release_token() noexcept;
  RequestImpl* pop_locked() noexcept;          // stash, FIFO, inbox; nullptr if blocked/empty
  void drain_inbox_locked() noexcept;          // everything pushed so far into the FIFO
  void unlink_locked(RequestImpl* r) noexcept;
  void append_locked(RequestImpl* r) noexcept;
  void push_front_locked(RequestImpl* r) noexcept;  // back where pop_locked() took it
  void splice_stash_locked() noexcept;
  // Claims a popped request: QUEUED -> OWNED|PRESENTED, returns the new word;
  // or, when it is canceled (or `purging`, purge_mode_ as the popper read it
  // once), disposes of it and returns 0.
  std::uint64_t claim_popped(RequestImpl* r, bool purging) noexcept;
  // Removes every queued request (token held) and returns them as a list
  // through event_next; counts are updated.
  RequestImpl* take_all_queued_locked(bool only_canceled) noexcept;
  void dispose_list(RequestImpl* list) noexcept;
  void cancel_cancelable_owned() noexcept;
  // What an inserter holds between its Accept check (Q+1) and the end of its
  // insert: an inserter count (I+1), or the pop token when it was free.
  enum class Hold : bool { inserter, token };
  // One attempt to reserve a queued slot in state s (Accept already checked
  // on s): true with `hold` set, or false with s reloaded (retry).
  bool try_reserve(std::uint64_t& s, Hold& hold) noexcept;
  // A token hold becomes an inserter hold (before anything that may run a
  // callback while the request is not inserted yet).
  void to_inserter(Hold& hold) noexcept;
  // Puts r (counted in Q, held as `hold`, state QUEUED) into the queue: with
  // the token, into the FIFO (or behind the inbox's requests) and releases
  // the token; else into the inbox, and drops the inserter count.
  void insert_counted(RequestImpl* r, std::uint32_t gen, Hold hold) noexcept;
  // After a push: if r was canceled meanwhile, make sure someone removes it.
  void recheck_canceled(RequestImpl* r, std::uint32_t gen) noexcept;
  void wait_no_dispatcher() noexcept;
  // Owned request r leaves with Status::cancelled (no canceled-on-queue).
  void complete_owned(RequestImpl* r, std::uint64_t w, Status status) noexcept;

public:
  // r is owned by the driver through this queue and now canceled for the
  // queue's reasons (requeue with the latch set, stop-ack during removal):
  // canceled-on-queue when presented and registered, else completion.
  void cancel_owned_as_queued(RequestImpl* r, std::uint64_t w) noexcept;
  // r was owned through this queue and the caller moved it to kCompleting
  // (w is the word before): complete its packet and release the driver slot.
  void finish_owned(RequestImpl* r, std::uint64_t w, Status status, std::uint64_t info,
                    std::int32_t err) noexcept;
  // finish_owned for a target's claimed completion (complete_claimed): inside
  // a CompletionBatch holding this queue, counted with the batch's releases.
  inline void finish_claimed(RequestImpl* r, std::uint64_t w, Status status, std::uint64_t info,
                             std::int32_t err) noexcept;
  // finish_claimed's other cases: a batch's first completion (the batch takes
  // this queue), or no batch for this queue (finish_owned).
  void finish_claimed_slow(RequestImpl* r, std::uint64_t w, Status status, std::uint64_t info,
                           std::int32_t err) noexcept;
  inline void finish_in_batch(RequestImpl* r, Status status, std::uint64_t info, std::int32_t err) noexcept;
  void run_loop(RequestImpl* first = nullptr, std::uint64_t first_word = 0) noexcept {
    run_loop_with(first != nullptr ? &first : nullptr, first != nullptr ? 1 : 0, first_word);
  }
  // Runs the dispatch loop, delivering firsts[0..n) first (already owned,
  // counted, words set to owned|presented; first_word for n == 1, else read).
  void run_loop_with(RequestImpl* const* firsts, std::size_t n, std::uint64_t first_word) noexcept;
  bool has_handler_for(RequestType t) const noexcept;

 private:
  DeviceImpl& dev_;
  const QueueConfig cfg_;
  const bool power_managed_;
  const std::uint32_t limit_;  // most owned requests before delivery stops
  // Unlimited parallel queues: the driver count never gates delivery, so a
  // completion inside one of this queue's handlers may leave its release to
  // the dispatch loop's next state update (one locked operation fewer).
  const bool defer_release_;
  // The handler present() calls, by request type (on_default where the type's
  // own is unset; null: none).
  IoHandler handlers_[kRequestTypeCount] = {};

  alignas(kCacheLine) std::atomic<std::uint64_t> st_;
  alignas(kCacheLine) MpmcRing<RequestImpl*> inbox_;
  std::atomic<RequestImpl*> stash_{nullptr};
  // Token-protected FIFO of requests drained from the inbox.
  RequestImpl* fifo_head_ = nullptr;
  RequestImpl* fifo_tail_ = nullptr;

  std::mutex control_;
  Slot idle_slot_;   // written under control_ while kIdleArmed is clear
  Slot purge_slot_;  // written under control_ while kPurgeArmed is clear
  std::atomic<QueueCallback> ready_cb_{nullptr};
  std::atomic<void*> ready_ctx_{nullptr};
  // Set by purge and removal while inserters that passed the Accept check
  // before it was cleared may still land (I > 0 at the sweep): the loop then
  // cancels whatever it pops. Cleared at once when none is in flight, else by
  // Start or by a Stop that accepts again: never a lasting "purging" state
  // (a stopped queue keeps what arrives, spec C30).
  std::atomic<bool> purge_mode_{false};
  std::atomic<bool> cancel_scan_{false};
  std::atomic<bool> shutdown_{false};

  std::mutex events_mu_;
  RequestImpl* events_head_ = nullptr;
  RequestImpl* events_tail_ = nullptr;

  PerThreadCounters<kCounterCount> counters_;
  std::atomic<ForwardProgress*> fp_{nullptr};
  std::unique_ptr<ForwardProgress> fp_owned_;

  // Per-core dispatch.
  Runtime* rt_ = nullptr;
  std::uint32_t home_core_ = kNoCore;  // dispatch runs there (kNoCore: anywhere)
  struct LoopTask {
    Task task;
    QueueImpl* q;
  } loop_task_{};                       // posts this queue's loop to its home core
  QueueImpl* parent_ = nullptr;         // set on a shard
  std::vector<std::unique_ptr<QueueImpl>> shards_;  // set on the parent of shards
  // Stop/drain/purge callbacks of a sharded queue fire when every shard's has.
  struct FanOut {
    std::atomic<std::uint32_t> remaining{0};
    QueueCallback fn = nullptr;
    void* ctx = nullptr;
    QueueImpl* parent = nullptr;
  };
  FanOut fan_idle_, fan_purge_;
  bool on_home_core() const noexcept;
  QueueImpl& shard_for_caller() noexcept;
  static void fan_out_fired(Queue& shard, void* ctx);

  friend class DeviceImpl;
};

class DeviceImpl final : public Device {
 public:
  explicit DeviceImpl(const DeviceConfig& config);
  ~DeviceImpl() override;

  Status init() noexcept;  // after construction: slab, arena

  const DeviceConfig& cfg() const noexcept { return cfg_; }
  Slab& slab() noexcept { return *slab_; }

  // Records a usage error; aborts with `what` when abort-on-misuse is on.
  Status usage(Status s, const char* what) noexcept;
  // Completes r (owned or not) toward its packet: fills status, frees the
  // slot, runs the callback. The caller handles the queue counts.
  // A reserved request goes back to its owning queue at the end, unless
  // `return_reserved` is false: then the caller hands it back with
  // return_reserved() once it has released the request's queue counts, so
  // that, as in WDF, the completing queue is notified (driver-1 and its
  // dispatch pass) before the final release serves a parked packet.
  // With `count` false the caller counts the completion (kCompletedPackets)
  // itself, later: see QueueImpl::finish_claimed.
  inline void finish_packet(RequestImpl* r, Status status, std::uint64_t info, std::int32_t err,
                            bool return_reserved = true, bool count = true) noexcept;
  // After finish_packet(..., false): a reserved r goes back to its owner.
  static void return_reserved(RequestImpl* r) noexcept;
  // Completes a packet that never got a request.
  static void complete_unbound(Packet& p, Status s) noexcept;
  // Runs fn on the passive-level worker arena.
  void run_passive(QueueImpl* q) noexcept;

  // Implementations of the public API.
  Result<Queue*> create_queue_impl(const QueueConfig& config);
  Status route_impl(Queue& queue, RequestType type) noexcept;
  Status start_impl() noexcept;
  Status submit_impl(Packet& packet) noexcept;
  Status submit_batch_impl(Packet* const* packets, std::size_t n) noexcept;
  // Routing of a packet: the queue, or nullptr when the packet was completed
  // or passed down instead (pending is then already set as submit returns).
  QueueImpl* route(Packet& p) noexcept;
  // Binds an allocated slot to p (state kNew), without publishing the handle
  // (RequestImpl::publish).
  RequestImpl* bind(const Slab::Allocation& a, Packet& p) noexcept;
  Status cancel_impl(std::uint64_t handle) noexcept;
  FileHandle open_file_impl() noexcept;
  Status close_file_impl(FileHandle file) noexcept;
  Status suspend_impl() noexcept;
  Status resume_impl() noexcept;
  Status remove_impl() noexcept;

  // Calls fn(r, word) for every request the driver owns through q: the
  // device's slab and every queue's reserved requests (a reserved request may
  // be owned through any queue of the device once forwarded). Control path.
  template <typename Fn>
  void for_each_owned(QueueImpl* q, Fn&& fn) noexcept;

  // A snapshot of the queues. Takes queues_mu_ only, never control_: the
  // data-path callers (close_file, prometheus) may run on a thread that
  // serves a runtime core or completes requests, which suspend / resume /
  // remove wait for while holding control_.
  std::vector<QueueImpl*> queue_list() const;

  DeviceConfig cfg_;
  std::unique_ptr<Slab> slab_;
  std::vector<std::unique_ptr<QueueImpl>> queues_;  // written under control_ and queues_mu_
  mutable std::mutex queues_mu_;
  mutable std::mutex control_;
  QueueImpl* routes_[kRequestTypeCount] = {};
  QueueImpl* default_queue_ = nullptr;
  std::atomic<bool> started_{false};
  std::atomic<PowerState> power_{PowerState::d0};
  std::atomic<std::uint64_t> next_file_{1};
  std::mutex files_mu_;
  std::set<std::uint64_t> open_files_;
  std::array<std::atomic<std::uint64_t>, kStatusCount> verifier_{};
  std::atomic<bool> abort_on_misuse_{false};
  enum DevCounter : std::size_t { kSubmitted, kCompletedPackets, kDevCounterCount };
  PerThreadCounters<kDevCounterCount> counters_;
  struct Arena;
  std::unique_ptr<Arena> arena_;
  std::atomic<std::int64_t> passive_tasks_{0};
  // Stop notifications (rs::kStopNotified) not yet released by an
  // acknowledgement, completion, forward or requeue. One count for the whole
  // device, not one per queue: the queue whose power-down set the mark and the
  // queue through which the driver releases the request may differ (see
  // QueueImpl::power_down), and suspend / remove wait for all of them anyway.
  std::atomic<std::int32_t> power_pending_{0};
  std::atomic<std::uint32_t> reserved_in_use_{0};  // reserved requests assigned to queues
  std::uint32_t next_home_core_ = 0;                // round-robin home cores (under control_)
};

template <typename Fn>
void DeviceImpl::for_each_owned(QueueImpl* q, Fn&& fn) noexcept {
  auto scan = [&](Slab& slab) {
    for (std::uint32_t i = 0; i < slab.slots(); ++i) {
      auto* r = static_cast<RequestImpl*>(slab.object(i));
      const std::uint64_t w = r->word().load(std::memory_order_acquire);
      if (rs::where(w) != rs::kOwned) continue;
      if (r->queue.load(std::memory_order_acquire) != q) continue;
      fn(r, w);
    }
  };
  scan(*slab_);
  if (reserved_in_use_.load(std::memory_order_acquire) == 0) return;
  for (QueueImpl* o : queue_list())
    if (Slab* s = o->reserved_slab(); s != nullptr) scan(*s);
}

// Thread-local record of the queues whose dispatch loop this thread is in.
bool thread_in_loop_of(const QueueImpl* q) noexcept;
class LoopScope {
 public:
  explicit LoopScope(const QueueImpl* q) noexcept;
  ~LoopScope();
  LoopScope(const LoopScope&) = delete;
  LoopScope& operator=(const LoopScope&) = delete;

 private:
  bool pushed_;
};

// Driver-count releases deferred by completions inside a handler of `q`,
// applied by the dispatch loop that called the handler (see defer_release_);
// or, with `batch` (a CompletionBatch lives on this thread, outside any
// handler), by the batch's end, for the first unlimited parallel queue a
// completion of the batch released on. In a batch, `done` completions of q
// (finish_claimed) are counted when the releases are taken, before they land:
// a thread that sees the driver count drop sees them counted.
struct DeferredRelease {
  QueueImpl* q = nullptr;
  std::uint64_t sub = 0;
  std::uint32_t done = 0;  // at most one per request: a slab holds < 2^32
  bool batch = false;
};
// constinit: no initialization guard on each access.
inline constinit thread_local DeferredRelease t_defer;

// A batch of completions made by this thread (a target's poll reaping its
// completion queue): their driver-count releases on one unlimited parallel
// queue (the first one released on) are applied together when the batch
// ends, one update of the queue's state word instead of one per request.
// Nothing gates delivery on such a queue's count; a completion with a
// pending stop notification, a synchronous stop/drain/purge, suspend and
// remove apply the batch's releases at once. Nested batches join the outer
// one; inside a handler (whose loop defers releases itself) a batch does
// nothing.
class CompletionBatch {
 public:
  CompletionBatch() noexcept;
  ~CompletionBatch();
  CompletionBatch(const CompletionBatch&) = delete;
  CompletionBatch& operator=(const CompletionBatch&) = delete;

 private:
  bool owns_;
};
// Applies this thread's batched releases now (the batch goes on).
void flush_completion_batch() noexcept;
// The calling thread's completions on queue q (or, with q null, on any queue
// of dev) whose counts a CompletionBatch still holds: counters read from
// inside the batch (a packet's callback) include them.
[[nodiscard]] std::uint64_t deferred_completions(const QueueImpl* q, const DeviceImpl* dev) noexcept;

inline void DeviceImpl::finish_packet(RequestImpl* r, Status status, std::uint64_t info, std::int32_t err,
                                      bool return_reserved, bool count) noexcept {
  Packet* p = r->packet.load(std::memory_order_relaxed);
  r->packet.store(nullptr, std::memory_order_relaxed);
  // What a submitter sees for the framework's busy/paused codes.
  if (status == Status::wdf_paused || status == Status::wdf_busy) status = Status::device_busy;
  p->status = status;
  p->information = info;
  p->sys_errno = err;
  if (count) counters_.add(kCompletedPackets);
  if (QueueImpl* owner = r->reserved_owner; owner != nullptr) {
    // A reserved request: its handle goes stale now, the packet completes,
    // then the request goes back to its owning queue (spec section 6), here
    // or by the caller (see return_reserved).
    r->slab->retire(r->index);
    p->on_complete(*p);
    if (return_reserved) owner->fp_return(r);
    return;
  }
  // The slot is free before the callback runs: a callback that submits again
  // can reuse it at once. Nothing of r is touched after this.
  slab_->release_owned_object(r, handle_index(r->handle_base));  // r->index, from the hot cache line
  p->on_complete(*p);
}

inline void QueueImpl::count_completed(std::uint64_t n) noexcept {
  if (n == 0) return;
  counters_.add(kCompleted, n);
  dev_.counters_.add(DeviceImpl::kCompletedPackets, n);
}

inline void DeviceImpl::return_reserved(RequestImpl* r) noexcept {
  // reserved_owner is fixed for the slot's lifetime, so reading it after the
  // packet completed is safe even for a normal slot that was reused meanwhile.
  if (QueueImpl* owner = r->reserved_owner; owner != nullptr) [[unlikely]]
    owner->fp_return(r);
}

inline void QueueImpl::finish_claimed(RequestImpl* r, std::uint64_t w, Status status, std::uint64_t info,
                                      std::int32_t err) noexcept {
  if (!(t_defer.batch && t_defer.q == this) || (w & rs::kStopNotified) != 0) [[unlikely]] {
    finish_claimed_slow(r, w, status, info, err);
    return;
  }
  finish_in_batch(r, status, info, err);
}

inline void QueueImpl::finish_in_batch(RequestImpl* r, Status status, std::uint64_t info, std::int32_t err) noexcept {
  // In a completion batch that holds this queue's releases: the completion is
  // counted with them, once for the batch. Counted before the packet's
  // callback runs, as finish_owned counts (readers on this thread add
  // t_defer.done); a callback that flushes the batch (a synchronous stop, say)
  // counts it with the flush.
  // The release is taken before the callback too: a callback that flushes
  // the batch applies it with the others.
  if (status == Status::cancelled) count(kCancelled);
  ++t_defer.done;
  t_defer.sub += qs::kD1;
  dev_.finish_packet(r, status, info, err, /*return_reserved=*/false, /*count=*/false);
  DeviceImpl::return_reserved(r);
}

// For targets inside ioq, which mark each request cancelable while it is in
// flight: unmark_cancelable then complete in one step. claim_cancelable takes
// a request marked cancelable whose cancel callback has not been scheduled
// and makes it completing (r null: the callback has won, or the handle is not
// the caller's: nothing changed); complete_claimed then completes it.
struct Claimed {
  RequestImpl* r = nullptr;
  std::uint64_t w = 0;
  explicit operator bool() const noexcept { return r != nullptr; }
};
// The checked path of claim_cancelable (below): every case, misuse reported.
[[nodiscard]] Claimed claim_cancelable_slow(Request request) noexcept;

inline void complete_claimed(const Claimed& c, Status status, std::uint64_t information, std::int32_t err) noexcept {
  c.r->queue.load(std::memory_order_acquire)->finish_claimed(c.r, c.w, status, information, err);
}

// The common case inline: the handle is current, the request owned and
// marked, no cancel callback scheduled. Anything else (including a lost
// compare-exchange) goes through claim_cancelable_slow.
[[nodiscard]] inline Claimed claim_cancelable(Request request) noexcept {
  std::uint64_t w = 0;
  RequestImpl* r = lookup(request.handle(), w);
  if (r != nullptr && rs::gen(w) == handle_generation(request.handle()) && rs::where(w) == rs::kOwned &&
      (w & (rs::kCancelable | rs::kCancelCb | rs::kHandOver)) == rs::kCancelable) [[likely]] {
    const std::uint64_t nw = rs::with_where(w & ~rs::kCancelable, rs::kCompleting);
    // acq_rel: as in claim_cancelable_slow.
    if (r->word().compare_exchange_strong(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) [[likely]]
      return Claimed{r, w & ~rs::kCancelable};
  }
  return claim_cancelable_slow(request);
}

// The checked path of mark_cancelable_at (below): every case, misuse reported.
[[nodiscard]] Status mark_cancelable_slow(RequestImpl* r, std::uint64_t w, std::uint64_t handle, CancelCallback cb,
                                          void* ctx, bool ex) noexcept;

// The marking compare-exchange succeeded (w: the word it stored) but the
// queue's latch was set: purge or stop_and_purge may have scanned already, so
// the mark cancels it itself (schedules the callback).
void mark_latched(RequestImpl* r, QueueImpl* q, std::uint64_t w) noexcept;

// Request::mark_cancelable(_ex) on a request already looked up (lookup():
// r, possibly null, and its word w as loaded then); a target that resolved
// the handle once for several steps calls it directly. The common case inline:
// a current handle to a driver-owned request, not canceled, not marked, no
// latch (where `ex` makes no difference). Anything else, and a lost
// compare-exchange, goes through mark_cancelable_slow.
[[nodiscard, gnu::always_inline]] inline Status mark_cancelable_at(RequestImpl* r, std::uint64_t w, std::uint64_t handle,
                                               CancelCallback cb, void* ctx, bool ex) noexcept {
  if (r != nullptr && rs::gen(w) == handle_generation(handle) && rs::where(w) == rs::kOwned &&
      (w & (rs::kHandOver | rs::kCanceled | rs::kCancelable | rs::kCancelCb)) == 0 && cb != nullptr) [[likely]] {
    QueueImpl* q = r->queue.load(std::memory_order_acquire);
    if (!q->latch_set()) [[likely]] {
      r->cancel_ctx.store(ctx, std::memory_order_relaxed);
      r->cancel_cb.store(cb, std::memory_order_release);
      // seq_cst, and the latch load after it: see mark_cancelable_slow.
      if (r->word().compare_exchange_strong(w, w | rs::kCancelable, std::memory_order_seq_cst,
                                            std::memory_order_acquire)) [[likely]] {
        if (q->latch_set_seq_cst()) [[unlikely]]
          mark_latched(r, q, w | rs::kCancelable);
        return Status::success;
      }
    }
  }
  return mark_cancelable_slow(r, w, handle, cb, ctx, ex);
}

// What Request::validate() checks, on a word lookup() loaded: the handle names
// the request's current, allocated incarnation.
[[nodiscard]] inline bool handle_is_live(std::uint64_t handle, std::uint64_t w) noexcept {
  const std::uint32_t hgen = handle_generation(handle);
  return rs::gen(w) == hgen && (hgen & 1u) != 0 && rs::where(w) != rs::kFree;
}

inline QueueImpl& impl(Queue& q) noexcept { return static_cast<QueueImpl&>(q); }
inline const QueueImpl& impl(const Queue& q) noexcept { return static_cast<const QueueImpl&>(q); }
inline DeviceImpl& impl(Device& d) noexcept { return static_cast<DeviceImpl&>(d); }
inline const DeviceImpl& impl(const Device& d) noexcept { return static_cast<const DeviceImpl&>(d); }

}  // namespace ioq::detail
