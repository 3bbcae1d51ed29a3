// Soak: everything at once, for a while, with a ledger.
//
// What runs (8 threads of the test, plus the runtime's 2 reactors in one
// variant; the whole on however few cores the machine has)
//   4 submitters  submit reads, writes, IOCTLs, internal IOCTLs, creates and
//                 flushes (one at a time and in batches), cancel their own
//                 packets, and close and reopen the file some packets use;
//   2 retrievers  pull from the manual queue (next, by file, find + retrieve
//                 found) and complete, requeue, forward or hold what they get;
//   1 completer   finishes the requests the driver holds outside a handler
//                 (unmark, then complete through the target, forward or requeue);
//   1 controller  start / stop / drain / purge / stop_and_purge on every queue
//                 (with and without callbacks, and the synchronous forms),
//                 device suspend and resume (stop callbacks acknowledge with and
//                 without requeue), and the allocation-failure mode (never, 5%,
//                 30%, always) of the device's FaultInjector.
//
// Queues of the device (each handler finishes requests through the Target)
//   par  default queue, parallel, unlimited (per-core shards on a runtime);
//        forward progress always_use_reserved (4 reserved), and an
//        allocate_request_resources callback that refuses ~2% of arrivals;
//   seq  sequential, writes; paging_io (2 reserved); FIFO per submitter checked;
//   lim  parallel, at most 4 presented, passive level, not power-managed,
//        device_control; examine (2 reserved; the examine callback fails ~30%);
//   man  manual, internal_device_control, canceled-on-queue handler, no
//        forward-progress policy.
// Variants: no runtime; a Runtime with reactors; a Runtime whose cores two of
// the submitters serve by calling poll() (the application's event loop). Each
// with two targets: the null target, and the io_uring target doing real reads,
// writes and flushes on a temporary file in $TMPDIR (else /var/tmp), O_DIRECT
// where the file system allows 512-byte I/O, at depth 4 per core so requests
// also wait in the target; in flight or waiting there they are cancelable (by
// the target), so cancels, purges and stops reach them too. The io_uring
// target needs a runtime (skipped without one) and io_uring (skipped, with the
// reason, where the kernel or a sandbox refuses it).
//
// The ledger proves, for every packet: it completed exactly once (never while
// the driver still held it), with a status legal for what happened to it:
//   success                 always, with information = its length (the whole transfer);
//   cancelled               its submitter cancelled it, or its file was closed,
//                           or - for a packet that was bound to a request - a
//                           purge / stop_and_purge of a queue it was in ran
//                           during its stay or that queue's cancel latch was set
//                           when it got there, or - for a packet never bound (it
//                           waited for a reserved request) - a drain / purge /
//                           stop_and_purge of its queue ran meanwhile (spec 3, 5, 6);
//   invalid_device_state    its queue was not accepting when it was submitted, or
//                           a drain / purge of it ran meanwhile;
//   insufficient_resources  only on the queue without a forward-progress policy;
//   unsuccessful            only a non-paging packet on the paging_io queue, or
//                           one the examine callback failed.
// And: a sequential queue runs one handler at a time and presents each
// submitter's writes in submission order (packets that went through a
// forward, or waited for a reserved request, are exempt: their arrival is not
// their submission); at the end every queue is empty and owns nothing, every
// slab slot is free, every reserved request is back (free + in use == total,
// none in use, none parked), the device counted every submission, and no usage
// error was recorded.
//
// IOQ_SOAK_SECONDS sets each variant's length (default 3.3 s, 4 s under
// sanitizers, half that for the io_uring target: about 13-16 s for the five
// that run), IOQ_SOAK_SEED the seed.
#include <ioq/ioq.hpp>
#include <ioq/runtime.hpp>
#include <ioq/target.hpp>
#include <ioq/uring_target.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace ioq {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

#if defined(IOQ_SANITIZED)
constexpr double kDefaultSeconds = 4.0;
#else
constexpr double kDefaultSeconds = 3.3;
#endif

// IOQ_SOAK_SECONDS, else the default scaled for the target kind.
double soak_seconds(double scale) {
  if (const char* e = std::getenv("IOQ_SOAK_SECONDS")) {
    const double v = std::atof(e);
    if (v > 0) return v;
  }
  return kDefaultSeconds * scale;
}

std::uint64_t soak_seed() {
  if (const char* e = std::getenv("IOQ_SOAK_SEED")) return std::strtoull(e, nullptr, 0);
  return 20240611;
}

constexpr int kSubmitters = 4;
constexpr int kRetrievers = 2;
constexpr int kSlots = 16;                  // packets in flight per submitter, at most
constexpr std::uint32_t kMaxRequests = 64;  // small: the slab runs out for real too
constexpr std::uint32_t kCores = 2;
constexpr std::uint32_t kBlock = 4096;      // buffer size and alignment, offset unit

enum QueueId : int { kPar, kSeq, kLim, kMan, kQueues };
constexpr const char* kQueueNames[kQueues] = {"par", "seq", "lim", "man"};
constexpr std::uint32_t kReserved[kQueues] = {4, 2, 2, 0};

// ---------------------------------------------------------------------------
// Targets. A variant is a factory; the handlers only ever call send().

constexpr std::uint64_t kFileBytes = std::uint64_t{kSubmitters} * kSlots * kBlock;

// The io_uring target over a temporary file: reads, writes and flushes go to
// the file through io_uring (each packet's offset is its slot's own block
// inside kFileBytes, its buffer kBlock-aligned, its length a multiple of 512);
// the other types, which no block device serves, complete as the null target
// completes them. A small depth makes requests wait in the target too, where
// they are cancelable as well.
class SoakUringTarget final : public Target {
 public:
  static std::unique_ptr<Target> make(Runtime* rt, std::string& why) {
    if (rt == nullptr) {
      why = "the io_uring target needs a runtime (its rings live on the runtime's cores)";
      return nullptr;
    }
    const char* dir = std::getenv("TMPDIR");
    std::string tmpl = std::string(dir != nullptr && *dir != '\0' ? dir : "/var/tmp") + "/ioq-soak-XXXXXX";
    const int fd = ::mkstemp(tmpl.data());
    if (fd < 0) {
      why = "cannot create a temporary file " + tmpl + ": " + std::strerror(errno);
      return nullptr;
    }
    ::close(fd);
    auto t = std::unique_ptr<SoakUringTarget>(new SoakUringTarget());
    // O_DIRECT where the file system takes 512-byte I/O that way (requests
    // then stay in flight long enough to be cancelled there), else buffered.
    std::string refused;
    for (const bool direct : {true, false}) {
      auto u = UringTarget::create(*rt, {.path = tmpl, .direct = direct, .size = kFileBytes, .depth = 4});
      if (!u) {
        refused += std::string(direct ? "O_DIRECT: " : "buffered: ") + to_string(u.error().status).data() + " (" +
                   u.error().message + "); ";
        continue;
      }
      if (direct && (*u)->info().offset_align > 512) {
        refused += "O_DIRECT: alignment " + std::to_string((*u)->info().offset_align) + "; ";
        continue;
      }
      t->uring_ = std::move(*u);
      break;
    }
    ::unlink(tmpl.c_str());  // the target holds it open
    if (!t->uring_) {
      why = "io_uring unavailable here: " + refused;
      return nullptr;
    }
    t->cores_ = rt->cores();
    return t;
  }

  Status send(Request request) noexcept override {
    switch (request.type()) {
      case RequestType::read:
      case RequestType::write:
      case RequestType::flush:
        return uring_->send(request);
      default:
        return null_.send(request);
    }
  }
  [[nodiscard]] const char* name() const noexcept override { return "uring"; }

  UringCounters totals() const {
    UringCounters sum;
    for (std::uint32_t c = 0; c < cores_; ++c) {
      const UringCounters k = uring_->counters(c);
      sum.submitted += k.submitted;
      sum.completed += k.completed;
      sum.waited += k.waited;
      sum.cancels += k.cancels;
      sum.short_ios += k.short_ios;
      sum.retries += k.retries;
    }
    return sum;
  }
  std::uint32_t in_flight() const {
    std::uint32_t n = 0;
    for (std::uint32_t c = 0; c < cores_; ++c) n += uring_->in_flight(c);
    return n;
  }
  bool direct() const { return uring_->info().direct; }

 private:
  SoakUringTarget() = default;
  std::unique_ptr<UringTarget> uring_;
  NullTarget null_;
  std::uint32_t cores_ = 0;
};

struct TargetKind {
  const char* name;
  double scale;  // of the default length (IOQ_SOAK_SECONDS overrides)
  // Returns nullptr, with the reason in `why` (the test is skipped), when the
  // target cannot run in this variant (runtime == nullptr: it has none).
  std::function<std::unique_ptr<Target>(Runtime* runtime, std::string& why)> make;
};

const std::vector<TargetKind>& target_kinds() {
  static const std::vector<TargetKind> kinds = {
      {"null", 1.0, [](Runtime*, std::string&) -> std::unique_ptr<Target> { return std::make_unique<NullTarget>(); }},
      // Shorter by default: CI runs it twice (reactors, application poll).
      {"uring", 0.5, &SoakUringTarget::make},
  };
  return kinds;
}

enum class Exec { none, reactors, app_poll };
constexpr const char* exec_name(Exec e) {
  switch (e) {
    case Exec::none: return "NoRuntime";
    case Exec::reactors: return "Reactors";
    case Exec::app_poll: return "AppPoll";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Ledger state

struct alignas(kBlock) Block {
  std::byte bytes[kBlock];
};

// One submitter slot: a packet, the facts the ledger needs about its current
// life, and the driver-side record of who holds its request.
struct Tracked {
  Packet p;
  std::unique_ptr<Block> buffer = std::make_unique<Block>();
  int submitter = 0;
  int routed = kPar;
  bool used = false;  // submitter only
  std::atomic<std::uint64_t> seq{0};
  std::atomic<int> completions{0};
  std::atomic<bool> in_flight{false};
  // Facts (written before the event they license, read at completion).
  std::atomic<bool> cancel_requested{false};
  std::atomic<bool> file_closed{false};
  std::atomic<bool> examine_failed{false};
  std::atomic<bool> forwarded{false};
  std::atomic<bool> accepting_at_submit{true};
  std::atomic<std::uint64_t> reject_epoch{0};
  std::atomic<std::uint64_t> parked_epoch{0};
  std::atomic<std::uint32_t> visited{0};     // bit per queue it was routed or forwarded to
  std::atomic<std::uint32_t> latch_seen{0};  // bit per queue whose latch was set at the visit
  std::array<std::atomic<std::uint64_t>, kQueues> cancel_epoch{};
  // The driver's hold on the request outside a handler. Transitions under m;
  // m is never held across a call into ioq (a callback may run inside it).
  std::mutex m;
  std::atomic<std::uint64_t> held{0};  // the held request's handle, or 0
  bool busy = false;                   // its holder is acting on it outside m
  bool cancelable = false;             // marked cancelable by its holder
};

// What the controller announces about a queue before acting on it.
struct QueueLedger {
  std::atomic<std::uint64_t> cancel_epoch{0};  // purge, stop_and_purge began
  std::atomic<std::uint64_t> reject_epoch{0};  // drain, purge began
  std::atomic<std::uint64_t> parked_epoch{0};  // drain, purge, stop_and_purge began
  std::atomic<bool> latch{false};              // the cancel latch may be set
  std::atomic<bool> accepting{true};           // surely accepting (false: maybe not)
  std::atomic<bool> idle_cb{false};            // our callback occupies the idle slot
  std::atomic<bool> purge_cb{false};           // ... the drain/purge slot
};

struct Counters {
  std::atomic<std::uint64_t> submitted{0}, completed{0}, batches{0}, cancels{0}, file_closes{0};
  std::atomic<std::uint64_t> presented{0}, sent{0}, forwards{0}, forward_busy{0}, requeues{0}, holds{0};
  std::atomic<std::uint64_t> retrieved{0}, completer_done{0}, cancel_cbs{0}, canceled_on_queue{0};
  std::atomic<std::uint64_t> stop_cbs{0}, acks_requeue{0}, acks_keep{0}, stale_stops{0}, resumes{0};
  std::atomic<std::uint64_t> control_ops{0}, sync_ops{0}, state_cbs{0}, suspends{0}, fault_changes{0};
  std::atomic<std::uint64_t> fifo_checked{0}, reserved_presented{0};
  std::array<std::atomic<std::uint64_t>, kStatusCount> by_status{};
};

struct Soak {
  Device* dev = nullptr;
  Runtime* rt = nullptr;
  Target* target = nullptr;
  FaultInjector* fi = nullptr;
  std::uint64_t seed = 0;
  std::array<Queue*, kQueues> q{};
  std::array<QueueLedger, kQueues> ledger;
  std::vector<std::unique_ptr<std::array<Tracked, kSlots>>> slots;
  std::array<std::atomic<std::uint64_t>, kSubmitters> last_write_seq{};
  std::array<std::atomic<std::uint64_t>, kSubmitters> current_file{};
  // Requests the sequential queue has given the driver and the driver has
  // not let go of (completed, forwarded, handed back): never more than one.
  std::atomic<int> seq_owned{0};
  std::mutex pending_mu;
  std::deque<std::pair<Tracked*, std::uint64_t>> pending;  // held requests for the completer
  Counters c;
  std::atomic<std::uint64_t> violations{0};
  std::mutex diag_mu;
  std::vector<std::string> diag;  // the first violations, reported by the test thread
};
Soak* g = nullptr;

void violation(const std::string& what) {
  g->violations.fetch_add(1);
  std::lock_guard lock(g->diag_mu);
  if (g->diag.size() < 30) g->diag.push_back(what);
}

std::mt19937_64& rng() {
  static std::atomic<std::uint64_t> next_stream{1};
  thread_local std::mt19937_64 r{(g != nullptr ? g->seed : 1) * 0x9E3779B97F4A7C15ULL + next_stream.fetch_add(1)};
  return r;
}
int roll(int n = 100) { return static_cast<int>(rng()() % static_cast<std::uint64_t>(n)); }

Tracked* tracked(Request r) {
  Packet* p = r.packet();
  return p != nullptr ? static_cast<Tracked*>(p->user) : nullptr;
}

std::uint64_t request_of(const Tracked& t) {
  return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(t.p.request)).load(std::memory_order_acquire);
}

std::string describe(const Tracked& t, Status s) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "status %s, type %s, routed %s, visited 0x%x, latch 0x%x, submitter %d seq %llu, request %llx, "
                "cancel_req %d file_closed %d forwarded %d examine_failed %d paging %d",
                to_string(s).data(), to_string(t.p.type), kQueueNames[t.routed], t.visited.load(), t.latch_seen.load(),
                t.submitter, static_cast<unsigned long long>(t.seq.load()),
                static_cast<unsigned long long>(request_of(t)), t.cancel_requested.load(), t.file_closed.load(),
                t.forwarded.load(), t.examine_failed.load(), (t.p.flags & kPacketPaging) != 0);
  return buf;
}

// nullptr when status `s` is legal for the life `t` had (see the banner).
const char* illegal(const Tracked& t, Status s) {
  const QueueLedger& routed = g->ledger[static_cast<std::size_t>(t.routed)];
  switch (s) {
    case Status::success:
      // Every success comes from a target: the whole transfer (the length;
      // a flush moves nothing).
      return t.p.information == t.p.length ? nullptr : "success without the whole transfer";
    case Status::cancelled: {
      if (t.cancel_requested.load() || t.file_closed.load()) return nullptr;
      if (request_of(t) == 0) {  // never bound: it waited for a reserved request
        // A drain / purge / stop_and_purge began during its life, or was in
        // progress (not yet followed by start) when it was submitted.
        if (routed.parked_epoch.load() != t.parked_epoch.load() || !t.accepting_at_submit.load() ||
            (t.latch_seen.load() & (1u << t.routed)))
          return nullptr;
        return "cancelled while waiting for a reserved request, with no cancel, drain or purge";
      }
      const std::uint32_t visited = t.visited.load();
      for (int q = 0; q < kQueues; ++q) {
        const std::uint32_t bit = 1u << q;
        if (!(visited & bit)) continue;
        if (t.latch_seen.load() & bit) return nullptr;
        if (g->ledger[static_cast<std::size_t>(q)].cancel_epoch.load() !=
            t.cancel_epoch[static_cast<std::size_t>(q)].load())
          return nullptr;
      }
      return "cancelled with no cancel, file close, purge or latch";
    }
    case Status::invalid_device_state:
      return !t.accepting_at_submit.load() || routed.reject_epoch.load() != t.reject_epoch.load()
                 ? nullptr
                 : "rejected while its queue accepted";
    case Status::insufficient_resources:
      return t.routed == kMan ? nullptr : "no resources on a queue with a forward-progress policy";
    case Status::unsuccessful:
      if (t.routed == kSeq && !(t.p.flags & kPacketPaging)) return nullptr;
      if (t.routed == kLim && t.examine_failed.load()) return nullptr;
      return "unsuccessful without a policy that fails it";
    default:
      return "a status the spec never gives this packet";
  }
}

void on_complete(Packet& p) noexcept {
  auto* t = static_cast<Tracked*>(p.user);
  if (t->completions.fetch_add(1) != 0) violation("completed twice: " + describe(*t, p.status));
  if (t->held.load() != 0) violation("completed while the driver held it: " + describe(*t, p.status));
  if (const char* why = illegal(*t, p.status)) violation(std::string(why) + ": " + describe(*t, p.status));
  g->c.by_status[static_cast<std::size_t>(p.status)].fetch_add(1);
  g->c.completed.fetch_add(1);
  t->in_flight.store(false, std::memory_order_release);
}

// The ledger notes that t's request is about to enter queue `q`.
void visit(Tracked* t, int q) {
  const std::uint32_t bit = 1u << q;
  const QueueLedger& l = g->ledger[static_cast<std::size_t>(q)];
  // Epoch first, latch second (the controller sets the latch, then bumps).
  if (!(t->visited.load() & bit)) t->cancel_epoch[static_cast<std::size_t>(q)].store(l.cancel_epoch.load());
  if (l.latch.load()) t->latch_seen.fetch_or(bit);
  t->visited.fetch_or(bit);
}

// ---------------------------------------------------------------------------
// The driver

// The driver is about to let go of r (complete, forward, hand back): the
// sequential queue's count of driver-owned requests drops (checked on delivery).
void letting_go(Request r) {
  if (r.queue() == g->q[kSeq]) g->seq_owned.fetch_sub(1);
}

void send_to_target(Request r) {
  g->c.sent.fetch_add(1);
  const Status s = g->target->send(r);
  if (s != Status::success) {
    violation(std::string("target refused a request: ") + to_string(s).data());
    (void)r.complete(Status::success, r.length());
  }
}

void finish(Request r) {
  letting_go(r);
  send_to_target(r);
}

// Forwards r (owned, not cancelable); when `dest` does not accept, finishes it.
void forward_or_finish(Tracked* t, Request r, int dest) {
  t->forwarded.store(true);
  visit(t, dest);
  letting_go(r);
  const Status s = r.forward_to_queue(*g->q[static_cast<std::size_t>(dest)]);
  if (s == Status::success) {
    g->c.forwards.fetch_add(1);
    return;
  }
  if (s != Status::wdf_busy) violation(std::string("forward failed: ") + to_string(s).data());
  g->c.forward_busy.fetch_add(1);
  send_to_target(r);  // still ours (and not re-counted: nothing can be delivered meanwhile)
}

void cancel_held(Request r, void* ctx) noexcept;

// The driver keeps r past the handler (or the retrieve); the completer
// finishes it later. Cancelable: its cancel callback may finish it instead.
//
// Protocol (as a real driver must, e.g. the Echo sample's lock): the holder
// (completer, stop callback) unmarks under t->m, and the cancel callback takes
// t->m before completing, so an unmark never races a completed request.
// mark_cancelable is called outside t->m (its callback may run inline), with
// `busy` telling the stop callback to keep off meanwhile.
void hold(Tracked* t, Request r, bool cancelable) {
  const std::uint64_t h = r.handle();
  {
    std::lock_guard lock(t->m);
    t->held.store(h);
    t->busy = true;
    t->cancelable = false;
  }
  Status s = Status::success;
  if (cancelable) {
    s = r.mark_cancelable(cancel_held, t);
    if (s != Status::success) violation(std::string("mark_cancelable: ") + to_string(s).data());
  }
  {
    std::lock_guard lock(t->m);
    if (t->held.load() == h) {
      t->busy = false;
      t->cancelable = cancelable && s == Status::success;
    }
  }
  g->c.holds.fetch_add(1);
  std::lock_guard lock(g->pending_mu);
  g->pending.emplace_back(t, h);
}

void cancel_held(Request r, void* ctx) noexcept {
  auto* t = static_cast<Tracked*>(ctx);
  {
    std::lock_guard lock(t->m);
    if (t->held.load() != r.handle()) violation("cancel callback for a request the driver did not hold");
    t->held.store(0);
    t->busy = false;
    t->cancelable = false;
  }
  g->c.cancel_cbs.fetch_add(1);
  letting_go(r);
  if (const Status s = r.complete(Status::cancelled); s != Status::success)
    violation(std::string("cancel callback could not complete: ") + to_string(s).data());
}

void note_presented(Request r) {
  g->c.presented.fetch_add(1);
  if (r.is_reserved()) g->c.reserved_presented.fetch_add(1);
}

void par_handler(Queue&, Request r) {
  Tracked* t = tracked(r);
  if (t == nullptr) return violation("par: a handler got a dead request");
  note_presented(r);
  const int x = roll();
  if (x < 45) finish(r);
  else if (x < 57) forward_or_finish(t, r, kMan);
  else if (x < 66) forward_or_finish(t, r, kSeq);
  else hold(t, r, /*cancelable=*/true);
}

void seq_handler(Queue&, Request r) {
  if (g->seq_owned.fetch_add(1) != 0) violation("the sequential queue delivered while the driver owned one");
  Tracked* t = tracked(r);
  if (t == nullptr) return violation("seq: a handler got a dead request");
  note_presented(r);
  if (t->p.type == RequestType::write && !t->forwarded.load() && !r.is_reserved()) {
    // Arrival order is submission order for these (a request put back at the
    // head by a stop acknowledgement comes again: equal is allowed).
    auto& last = g->last_write_seq[static_cast<std::size_t>(t->submitter)];
    const std::uint64_t seq = t->seq.load();
    if (seq < last.load()) {
      violation("sequential queue out of order: submitter " + std::to_string(t->submitter) + " seq " +
                std::to_string(seq) + " after " + std::to_string(last.load()));
    }
    last.store(std::max(seq, last.load()));
    g->c.fifo_checked.fetch_add(1);
  }
  const int x = roll();
  if (x < 55) finish(r);
  else if (x < 68) forward_or_finish(t, r, kMan);
  else if (x < 75) forward_or_finish(t, r, kPar);
  else hold(t, r, /*cancelable=*/roll() < 70);
}

void lim_handler(Queue&, Request r) {
  Tracked* t = tracked(r);
  if (t == nullptr) return violation("lim: a handler got a dead request");
  note_presented(r);
  const int x = roll();
  if (x < 60) finish(r);
  else if (x < 75) forward_or_finish(t, r, kPar);
  else hold(t, r, /*cancelable=*/true);
}

void man_canceled_on_queue(Queue&, Request r) {
  g->c.canceled_on_queue.fetch_add(1);
  Tracked* t = tracked(r);
  if (t != nullptr && t->held.load() != 0) violation("canceled-on-queue for a request the driver held");
  if (const Status s = r.complete(Status::cancelled); s != Status::success)
    violation(std::string("canceled-on-queue completion: ") + to_string(s).data());
}

// EvtIoStop: requests the driver holds (and is not acting on) are
// acknowledged, with requeue or without; the rest are left to their holder,
// whose completion also satisfies the power-down.
//
// The request may be completed by another thread while this runs (the
// completer, a cancel callback, the target): until t->m shows that the driver
// holds it, r is not ours to look at, not even r.packet() (its packet may be
// completing, and then reused by its submitter). So the slot is found by the
// handle the driver recorded, never through the request.
Tracked* held_slot(std::uint64_t h) {
  for (auto& arr : g->slots)
    for (Tracked& t : *arr)
      if (t.held.load() == h) return &t;
  return nullptr;
}

void on_stop(Queue& queue, Request r, std::uint32_t flags) {
  g->c.stop_cbs.fetch_add(1);
  if (!(flags & kStopSuspend)) violation("a stop callback without suspend (nothing removes the device)");
  const std::uint64_t h = r.handle();
  Tracked* t = held_slot(h);
  if (t == nullptr) return;  // not held outside a handler (or no longer): its owner finishes it
  const bool requeue = roll() < 40;
  {
    std::lock_guard lock(t->m);
    if (t->held.load() != h || t->busy) return;
    // The notice may be stale: between the runtime's last check and this
    // call, other threads of the driver may have let the request go and
    // taken it back under the same handle (the completer forwards or requeues
    // it to the manual queue, a retriever retrieves and holds it). Held
    // through another queue now, it is that queue's power-down's to notify.
    if (r.queue() != &queue) {
      g->c.stale_stops.fetch_add(1);
      return;
    }
    if (t->cancelable) {
      const Status u = r.unmark_cancelable();
      if (u != Status::success) {
        if (u != Status::cancelled) violation(std::string("stop: unmark_cancelable: ") + to_string(u).data());
        return;  // its cancel callback finishes it
      }
      t->cancelable = false;
    }
    if (!requeue) {
      // Stays ours (and the completer's to finish); no callback runs inside.
      // invalid_device_request: not (or no longer) stop-notified - a stale
      // notice through the same queue (taken back from the manual queue, or
      // through another shard): nothing to acknowledge.
      const Status s = r.stop_acknowledge(false);
      if (s == Status::invalid_device_request) g->c.stale_stops.fetch_add(1);
      else if (s != Status::success) violation(std::string("stop_acknowledge(false): ") + to_string(s).data());
      else g->c.acks_keep.fetch_add(1);
      return;
    }
    t->held.store(0);  // back to the queue (or cancelled, with the latch set)
  }
  // Outside t->m: the request may be delivered again at once, to a handler
  // that holds it again.
  letting_go(r);
  const Status s = r.stop_acknowledge(true);
  if (s == Status::invalid_device_request) {
    // A stale notice (see above): still ours, finished instead.
    g->c.stale_stops.fetch_add(1);
    send_to_target(r);
    return;
  }
  if (s != Status::success) violation(std::string("stop_acknowledge(true): ") + to_string(s).data());
  g->c.acks_requeue.fetch_add(1);
}

void on_resume(Queue&, Request) { g->c.resumes.fetch_add(1); }

Status allocate_request_resources(Queue&, Request, void*) noexcept {
  return roll() < 2 ? Status::insufficient_resources : Status::success;
}

ExamineResult examine(Queue&, Packet& p, void*) noexcept {
  if (roll() < 30) {
    static_cast<Tracked*>(p.user)->examine_failed.store(true);
    return ExamineResult::fail;
  }
  return ExamineResult::use_reserved;
}

// ---------------------------------------------------------------------------
// Threads

void cancel_packet(Tracked& t) {
  t.cancel_requested.store(true);
  const Status s = g->dev->cancel(t.p);
  if (s != Status::success && s != Status::invalid_handle)
    violation(std::string("cancel: ") + to_string(s).data());
  g->c.cancels.fetch_add(1);
}

void prepare(Tracked& t, std::uint64_t seq, FileHandle file, int slot) {
  if (t.used && t.completions.load() != 1)
    violation("a packet completed " + std::to_string(t.completions.load()) + " times");
  t.used = true;
  t.completions.store(0);
  const int x = roll();
  RequestType type;
  int routed;
  if (x < 33) type = RequestType::read, routed = kPar;
  else if (x < 58) type = RequestType::write, routed = kSeq;
  else if (x < 73) type = RequestType::device_control, routed = kLim;
  else if (x < 90) type = RequestType::internal_device_control, routed = kMan;
  else if (x < 95) type = RequestType::create, routed = kPar;  // unrouted: the default queue
  else type = RequestType::flush, routed = kPar;
  Packet& p = t.p;
  p.type = type;
  p.flags = roll() < 50 ? static_cast<std::uint32_t>(kPacketPaging) : 0u;
  p.offset = (static_cast<std::uint64_t>(t.submitter) * kSlots + static_cast<std::uint64_t>(slot)) * kBlock;
  p.length = type == RequestType::flush ? 0 : 512u * static_cast<std::uint32_t>(1 + roll(8));
  p.ioctl_code = type == RequestType::device_control ? 0x222004u : 0;
  p.buffer = t.buffer.get();
  p.output_length = 0;
  p.file = roll() < 30 ? file : FileHandle{};
  p.on_complete = on_complete;
  p.user = &t;
  t.routed = routed;
  t.seq.store(seq);
  t.cancel_requested.store(false);
  t.file_closed.store(false);
  t.examine_failed.store(false);
  t.forwarded.store(false);
  t.visited.store(0);
  t.latch_seen.store(0);
  QueueLedger& l = g->ledger[static_cast<std::size_t>(routed)];
  // Epochs before flags (the controller clears `accepting` before bumping).
  t.reject_epoch.store(l.reject_epoch.load());
  t.parked_epoch.store(l.parked_epoch.load());
  visit(&t, routed);
  t.accepting_at_submit.store(l.accepting.load());
  t.in_flight.store(true, std::memory_order_release);
}

void submitter_main(int id, Clock::time_point deadline, bool serve_core, std::atomic<int>& submitting,
                    const std::atomic<bool>& stop_polling) {
  Runtime* rt = serve_core ? g->rt : nullptr;
  if (rt != nullptr) rt->bind_thread(static_cast<std::uint32_t>(id));
  auto& mine = *g->slots[static_cast<std::size_t>(id)];
  FileHandle file = g->dev->open_file();
  g->current_file[static_cast<std::size_t>(id)].store(file.value);
  std::uint64_t seq = 0;
  int next = 0;
  while (Clock::now() < deadline) {
    if (rt != nullptr) (void)rt->poll(static_cast<std::uint32_t>(id));
    if (roll(1000) < 3) {  // close the file (its queued requests are cancelled) and open another
      for (Tracked& t : mine)
        if (t.in_flight.load(std::memory_order_acquire) && t.p.file == file) t.file_closed.store(true);
      if (const Status s = g->dev->close_file(file); s != Status::success)
        violation(std::string("close_file: ") + to_string(s).data());
      file = g->dev->open_file();
      g->current_file[static_cast<std::size_t>(id)].store(file.value);
      g->c.file_closes.fetch_add(1);
    }
    const int want = roll() < 10 ? 2 + roll(3) : 1;
    Packet* batch[4];
    Tracked* batch_t[4];
    int n = 0;
    for (int tries = 0; tries < kSlots && n < want; ++tries) {
      const int slot = next++ % kSlots;
      Tracked& t = mine[static_cast<std::size_t>(slot)];
      if (t.in_flight.load(std::memory_order_acquire)) {
        if (roll() < 2) cancel_packet(t);
        continue;
      }
      prepare(t, ++seq, file, slot);
      batch_t[n] = &t;
      batch[n++] = &t.p;
    }
    if (n == 0) {
      if (rt == nullptr) std::this_thread::yield();
      continue;
    }
    g->c.submitted.fetch_add(static_cast<std::uint64_t>(n));
    Status s;
    if (n == 1) {
      s = g->dev->submit(*batch[0]);
    } else {
      s = g->dev->submit_batch(batch, static_cast<std::size_t>(n));
      g->c.batches.fetch_add(1);
    }
    if (s != Status::pending) violation(std::string("submit refused a well-formed packet: ") + to_string(s).data());
    if (roll() < 3) {
      Tracked& t = *batch_t[roll(n)];
      if (t.in_flight.load(std::memory_order_acquire)) cancel_packet(t);
    }
  }
  submitting.fetch_sub(1);
  // The application's loop keeps serving its core until the device is gone.
  while (rt != nullptr && !stop_polling.load()) {
    if (rt->poll(static_cast<std::uint32_t>(id)) == 0) std::this_thread::sleep_for(20us);
  }
}

void retriever_main(const std::atomic<bool>& stop) {
  Queue& man = *g->q[kMan];
  int idle = 0;
  while (!stop.load()) {
    Request r;
    Status s;
    const int x = roll();
    if (x < 70) {
      s = man.retrieve_next_request(r);
    } else if (x < 85) {
      const FileHandle f{g->current_file[static_cast<std::size_t>(roll(kSubmitters))].load()};
      s = man.retrieve_next_request_by_file_object(f, r);
    } else {
      Request tag;
      s = man.find_request(Request{}, FileHandle{}, tag);
      if (s == Status::success) s = man.retrieve_found_request(tag, r);
    }
    if (s != Status::success) {
      if (s != Status::no_more_entries && s != Status::wdf_paused && s != Status::not_found)
        violation(std::string("retrieve: ") + to_string(s).data());
      if (++idle > 16) std::this_thread::sleep_for(20us);
      else std::this_thread::yield();
      continue;
    }
    idle = 0;
    g->c.retrieved.fetch_add(1);
    note_presented(r);
    Tracked* t = tracked(r);
    if (t == nullptr) {
      violation("retrieved a dead request");
      continue;
    }
    const int y = roll();
    if (y < 40) {
      finish(r);
    } else if (y < 55) {
      visit(t, kMan);
      if (const Status q = r.requeue(); q != Status::success)
        violation(std::string("requeue: ") + to_string(q).data());
      g->c.requeues.fetch_add(1);
    } else if (y < 70) {
      forward_or_finish(t, r, roll() < 50 ? kPar : kLim);
    } else {
      hold(t, r, /*cancelable=*/roll() < 80);
    }
  }
}

void completer_main(const std::atomic<bool>& stop) {
  int idle = 0;
  while (!stop.load()) {
    std::pair<Tracked*, std::uint64_t> e{nullptr, 0};
    {
      std::lock_guard lock(g->pending_mu);
      if (!g->pending.empty()) {
        e = g->pending.front();
        g->pending.pop_front();
      }
    }
    if (e.first == nullptr) {
      if (++idle > 16) std::this_thread::sleep_for(20us);
      else std::this_thread::yield();
      continue;
    }
    idle = 0;
    Tracked* t = e.first;
    const Request r(e.second);
    {
      std::lock_guard lock(t->m);
      if (t->held.load() != e.second) continue;  // finished or handed back meanwhile
      if (t->busy) {  // its holder is still marking it: look again later
        std::lock_guard plock(g->pending_mu);
        g->pending.push_back(e);
        continue;
      }
      if (t->cancelable) {
        const Status u = r.unmark_cancelable();
        if (u != Status::success) {
          if (u != Status::cancelled) violation(std::string("unmark_cancelable: ") + to_string(u).data());
          continue;  // its cancel callback finishes it
        }
      }
      t->held.store(0);
      t->cancelable = false;
    }
    g->c.completer_done.fetch_add(1);
    if (roll() < 80) {
      finish(r);
    } else if (r.queue() == g->q[kMan]) {
      visit(t, kMan);
      if (const Status q = r.requeue(); q != Status::success)
        violation(std::string("completer requeue: ") + to_string(q).data());
      g->c.requeues.fetch_add(1);
    } else {
      forward_or_finish(t, r, kMan);
    }
  }
}

void state_callback(Queue&, void* ctx) {
  static_cast<std::atomic<bool>*>(ctx)->store(false);
  g->c.state_cbs.fetch_add(1);
}

void expect_ok(Status s, const char* op) {
  if (s != Status::success) violation(std::string(op) + ": " + to_string(s).data());
}

// One queue operation (the controller's, or one inside a suspend window).
void queue_op(int qi, bool allow_sync) {
  Queue& q = *g->q[static_cast<std::size_t>(qi)];
  QueueLedger& l = g->ledger[static_cast<std::size_t>(qi)];
  const bool with_cb = roll() < 60;
  // Our callback takes a slot only when our previous one there has fired, so
  // the runtime never sees a busy slot (the verifier must stay at zero).
  auto idle_cb = [&]() -> std::pair<QueueCallback, void*> {
    if (!with_cb || l.idle_cb.exchange(true)) return {nullptr, nullptr};
    return {state_callback, &l.idle_cb};
  };
  auto purge_cb = [&]() -> std::pair<QueueCallback, void*> {
    if (!with_cb || l.purge_cb.exchange(true)) return {nullptr, nullptr};
    return {state_callback, &l.purge_cb};
  };
  auto announce_drain = [&] {
    l.accepting.store(false);
    l.reject_epoch.fetch_add(1);
    l.parked_epoch.fetch_add(1);
  };
  auto announce_purge = [&] {
    l.latch.store(true);
    l.cancel_epoch.fetch_add(1);
    l.parked_epoch.fetch_add(1);
  };
  g->c.control_ops.fetch_add(1);
  const int x = roll(allow_sync ? 100 : 88);
  if (x < 25) {
    auto [cb, ctx] = idle_cb();
    expect_ok(q.stop(cb, ctx), "stop");
  } else if (x < 45) {
    announce_drain();
    auto [cb, ctx] = purge_cb();
    expect_ok(q.drain(cb, ctx), "drain");
  } else if (x < 65) {
    announce_drain();
    announce_purge();
    auto [cb, ctx] = purge_cb();
    expect_ok(q.purge(cb, ctx), "purge");
  } else if (x < 88) {
    announce_purge();
    auto [cb, ctx] = idle_cb();
    expect_ok(q.stop_and_purge(cb, ctx), "stop_and_purge");
  } else {
    // The synchronous forms use the same slots: only when ours are free.
    const int which = roll(4);
    std::atomic<bool>& slot = which < 2 ? l.idle_cb : l.purge_cb;
    if (slot.exchange(true)) return;
    g->c.sync_ops.fetch_add(1);
    switch (which) {
      case 0:
        expect_ok(q.stop_synchronously(), "stop_synchronously");
        break;
      case 1:
        announce_purge();
        expect_ok(q.stop_and_purge_synchronously(), "stop_and_purge_synchronously");
        break;
      case 2:
        announce_drain();
        expect_ok(q.drain_synchronously(), "drain_synchronously");
        break;
      default: {
        announce_drain();
        announce_purge();
        expect_ok(q.purge_synchronously(), "purge_synchronously");
        const QueueState st = q.get_state();
        if ((st.flags & kQueueAccepting) || st.queued != 0 || st.driver_owned != 0)
          violation(std::string("after purge_synchronously ") + kQueueNames[qi] + " accepts or holds requests");
      }
    }
    slot.store(false);
  }
}

void start_all() {
  for (int i = 0; i < kQueues; ++i) {
    expect_ok(g->q[static_cast<std::size_t>(i)]->start(), "start");
    // After start: the latch is clear and the queue accepts.
    g->ledger[static_cast<std::size_t>(i)].latch.store(false);
    g->ledger[static_cast<std::size_t>(i)].accepting.store(true);
  }
}

void controller_main(Clock::time_point deadline) {
  while (Clock::now() < deadline) {
    const int x = roll();
    if (x < 55) {
      // Sync forms only in D0 (in Dx a drain never empties a held queue).
      queue_op(roll(kQueues), g->dev->power_state() == PowerState::d0);
    } else if (x < 72) {
      expect_ok(g->dev->suspend(), "suspend");
      g->c.suspends.fetch_add(1);
      if (roll() < 50) queue_op(roll(kQueues), /*allow_sync=*/false);
      std::this_thread::sleep_for(std::chrono::microseconds(100 + roll(900)));
      expect_ok(g->dev->resume(), "resume");
    } else if (x < 85) {
      g->c.fault_changes.fetch_add(1);
      const int m = roll(4);
      if (m == 0) g->fi->set_never();
      else if (m == 1) g->fi->set_percent(5, rng()());
      else if (m == 2) g->fi->set_percent(30, rng()());
      else g->fi->set_always();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50 + roll(roll() < 10 ? 3000 : 400)));
    start_all();
  }
  g->fi->set_never();
  start_all();
}

std::string diagnostics() {
  std::string out;
  char buf[256];
  for (int i = 0; i < kQueues; ++i) {
    const QueueState st = g->q[static_cast<std::size_t>(i)]->get_state();
    const ForwardProgressStats fp = g->q[static_cast<std::size_t>(i)]->forward_progress_stats();
    std::snprintf(buf, sizeof buf, "  %s: flags 0x%x queued %u owned %u; reserved free %u in_use %u parked %u\n",
                  kQueueNames[i], st.flags, st.queued, st.driver_owned, fp.free, fp.in_use, fp.parked);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "  power %d, free slots %u of %u, pending holds %zu\n",
                static_cast<int>(g->dev->power_state()), g->dev->stats().free_requests, kMaxRequests,
                [] {
                  std::lock_guard lock(g->pending_mu);
                  return g->pending.size();
                }());
  out += buf;
  for (auto& arr : g->slots)
    for (Tracked& t : *arr)
      if (t.in_flight.load()) {
        std::snprintf(buf, sizeof buf, "  in flight: held %llx parked %d valid %d queue %d ",
                      static_cast<unsigned long long>(t.held.load()),
                      std::atomic_ref<std::uintptr_t>(t.p.parked).load() != 0,
                      Request(request_of(t)).validate() == Status::success,
                      [&] {
                        const Queue* q = Request(request_of(t)).queue();
                        for (int i = 0; i < kQueues; ++i)
                          if (g->q[static_cast<std::size_t>(i)] == q) return i;
                        return -1;
                      }());
        out += buf + describe(t, Status::pending) + "\n";
      }
  return out;
}

// ---------------------------------------------------------------------------
// The test

class SoakTest : public ::testing::TestWithParam<std::tuple<Exec, std::size_t>> {};

TEST_P(SoakTest, ExactlyOnceLegalStatusesFifoNoLeaks) {
  const auto [exec, target_index] = GetParam();
  const TargetKind& kind = target_kinds()[target_index];
  const double seconds = soak_seconds(kind.scale);

  Soak state;
  g = &state;
  state.seed = soak_seed();

  std::unique_ptr<Runtime> rt;
  if (exec != Exec::none) {
    auto created = Runtime::create({.cores = kCores, .reactors = exec == Exec::reactors, .name = "soak"});
    ASSERT_TRUE(created.has_value()) << created.error().message;
    rt = std::move(*created);
  }
  std::string why_not;
  std::unique_ptr<Target> target = kind.make(rt.get(), why_not);
  if (target == nullptr) {
    g = nullptr;
    GTEST_SKIP() << kind.name << " target: " << why_not;
  }
  auto* uring = dynamic_cast<SoakUringTarget*>(target.get());
  FaultInjector fi;
  auto created = Device::create({.max_requests = kMaxRequests,
                                 .passive_workers = 2,
                                 .alloc_hook = fi.hook(),
                                 .runtime = rt.get(),
                                 .name = "soak"});
  ASSERT_TRUE(created.has_value()) << created.error().message;
  std::unique_ptr<Device> dev = std::move(*created);
  state.dev = dev.get();
  state.rt = rt.get();
  state.target = target.get();
  state.fi = &fi;

  QueueConfig par{.dispatch = DispatchType::parallel, .default_queue = true};
  par.on_default = par_handler;
  par.on_stop = on_stop;
  par.on_resume = on_resume;
  par.name = "par";
  QueueConfig seq{.dispatch = DispatchType::sequential};
  seq.on_default = seq_handler;  // writes, and whatever is forwarded in
  seq.on_stop = on_stop;
  seq.on_resume = on_resume;
  seq.name = "seq";
  QueueConfig lim{.dispatch = DispatchType::parallel, .max_presented = 4, .execution = ExecutionLevel::passive,
                  .power_managed = TriState::no};
  lim.on_default = lim_handler;
  lim.on_stop = on_stop;
  lim.name = "lim";
  QueueConfig man{.dispatch = DispatchType::manual};
  man.on_stop = on_stop;
  man.on_resume = on_resume;
  man.on_canceled_on_queue = man_canceled_on_queue;
  man.name = "man";
  const QueueConfig* configs[kQueues] = {&par, &seq, &lim, &man};
  for (int i = 0; i < kQueues; ++i) {
    auto q = dev->create_queue(*configs[i]);
    ASSERT_TRUE(q.has_value()) << q.error().message;
    state.q[static_cast<std::size_t>(i)] = *q;
  }
  ASSERT_EQ(dev->configure_request_dispatching(*state.q[kSeq], RequestType::write), Status::success);
  ASSERT_EQ(dev->configure_request_dispatching(*state.q[kLim], RequestType::device_control), Status::success);
  ASSERT_EQ(dev->configure_request_dispatching(*state.q[kMan], RequestType::internal_device_control),
            Status::success);
  ASSERT_EQ(state.q[kPar]->assign_forward_progress_policy({.total_reserved = kReserved[kPar],
                                                           .policy = ForwardProgressPolicy::always_use_reserved,
                                                           .allocate_request_resources = allocate_request_resources}),
            Status::success);
  ASSERT_EQ(state.q[kSeq]->assign_forward_progress_policy(
                {.total_reserved = kReserved[kSeq], .policy = ForwardProgressPolicy::paging_io}),
            Status::success);
  ASSERT_EQ(state.q[kLim]->assign_forward_progress_policy(
                {.total_reserved = kReserved[kLim], .policy = ForwardProgressPolicy::examine, .examine = examine}),
            Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  for (int s = 0; s < kSubmitters; ++s) {
    state.slots.push_back(std::make_unique<std::array<Tracked, kSlots>>());
    for (Tracked& t : *state.slots.back()) t.submitter = s;
  }

  // Run.
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::atomic<int> submitting{kSubmitters};
  std::atomic<bool> stop_helpers{false}, stop_polling{false};
  std::vector<std::thread> submitters, helpers;
  for (int s = 0; s < kSubmitters; ++s) {
    const bool serve = exec == Exec::app_poll && static_cast<std::uint32_t>(s) < kCores;
    submitters.emplace_back(submitter_main, s, deadline, serve, std::ref(submitting), std::cref(stop_polling));
  }
  for (int r = 0; r < kRetrievers; ++r) helpers.emplace_back(retriever_main, std::cref(stop_helpers));
  helpers.emplace_back(completer_main, std::cref(stop_helpers));
  std::thread controller(controller_main, deadline);
  const int threads = kSubmitters + kRetrievers + 2 + (exec == Exec::reactors ? static_cast<int>(kCores) : 0);

  // A hang is a failure with a picture, not a CI timeout.
  auto watchdog = [&](Clock::time_point limit, auto done) {
    while (!done()) {
      if (Clock::now() > limit) {
        std::fprintf(stderr, "soak: stuck; state:\n%s", diagnostics().c_str());
        for (const auto& d : state.diag) std::fprintf(stderr, "  violation: %s\n", d.c_str());
        std::fflush(stderr);
        std::_Exit(3);
      }
      std::this_thread::sleep_for(1ms);
    }
  };
  watchdog(deadline + 60s, [&] { return submitting.load() == 0; });
  std::atomic<bool> controller_done{false};
  std::thread joiner([&] {
    controller.join();
    controller_done = true;
  });
  watchdog(deadline + 60s, [&] { return controller_done.load(); });
  joiner.join();
  // Quiesce: everything in flight completes (the helpers keep working).
  const auto quiesce_limit = Clock::now() + 60s;
  watchdog(quiesce_limit, [&] {
    for (auto& arr : state.slots)
      for (Tracked& t : *arr)
        if (t.in_flight.load(std::memory_order_acquire)) return false;
    return true;
  });
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  stop_helpers = true;
  for (auto& th : helpers) th.join();

  // The ledger.
  for (const auto& d : state.diag) ADD_FAILURE() << "ledger: " << d;
  EXPECT_EQ(state.violations.load(), 0u);
  EXPECT_EQ(state.c.completed.load(), state.c.submitted.load()) << "every submission completed exactly once";
  for (auto& arr : state.slots) {
    for (Tracked& t : *arr) {
      if (t.used) {
        EXPECT_EQ(t.completions.load(), 1);
      }
    }
  }
  for (int i = 0; i < kQueues; ++i) {
    const QueueState st = state.q[static_cast<std::size_t>(i)]->get_state();
    EXPECT_EQ(st.queued, 0u) << kQueueNames[i];
    EXPECT_EQ(st.driver_owned, 0u) << kQueueNames[i];
    const ForwardProgressStats fp = state.q[static_cast<std::size_t>(i)]->forward_progress_stats();
    EXPECT_EQ(fp.total, kReserved[i]) << kQueueNames[i];
    EXPECT_EQ(fp.free + fp.in_use, fp.total) << kQueueNames[i];
    EXPECT_EQ(fp.free, fp.total) << kQueueNames[i] << ": every reserved request came back";
    EXPECT_EQ(fp.parked, 0u) << kQueueNames[i];
  }
  const DeviceStats ds = dev->stats();
  EXPECT_EQ(ds.free_requests, kMaxRequests) << "every request slot came back";
  EXPECT_EQ(ds.submitted, state.c.submitted.load()) << "the device counted every submission";
  const VerifierCounts v = dev->verifier();
  EXPECT_EQ(v.total(), 0u) << "no usage error in correct use";
  EXPECT_EQ(dev->power_state(), PowerState::d0);
  // Coverage: the interesting paths ran.
  EXPECT_GT(state.c.submitted.load(), 0u);
  EXPECT_GT(state.c.forwards.load(), 0u);
  EXPECT_GT(state.c.holds.load(), 0u);
  EXPECT_GT(state.c.retrieved.load(), 0u);
  EXPECT_GT(state.c.suspends.load(), 0u);
  EXPECT_GT(state.c.fifo_checked.load(), 0u);
  EXPECT_GT(fi.injected(), 0u);

  auto by = [&](Status s) {
    return static_cast<unsigned long long>(state.c.by_status[static_cast<std::size_t>(s)].load());
  };
  const Counters& c = state.c;
  const unsigned long long ops = c.submitted + c.cancels + c.file_closes + c.forwards + c.forward_busy +
                                 c.requeues + c.holds + c.retrieved + c.acks_requeue + c.acks_keep +
                                 c.control_ops + c.suspends + c.fault_changes;
  std::printf(
      "soak[%s/%s seed %llu]: %llu operations in %.1f s on %d threads (%u cores)\n"
      "  submitted %llu (%llu batches): success %llu, cancelled %llu, rejected %llu, no resources %llu, "
      "unsuccessful %llu\n"
      "  presented %llu (%llu reserved), sent %llu, forwards %llu (+%llu busy), requeues %llu, holds %llu, "
      "retrieved %llu, cancel callbacks %llu, canceled-on-queue %llu\n"
      "  control %llu (%llu sync, %llu callbacks), suspends %llu, stop callbacks %llu (ack+requeue %llu, ack %llu, "
      "stale %llu), resumes %llu\n"
      "  cancels %llu, file closes %llu, fault changes %llu, injected %llu, fifo checks %llu\n",
      kind.name, exec_name(exec), static_cast<unsigned long long>(state.seed), ops, elapsed, threads, kCores,
      static_cast<unsigned long long>(c.submitted.load()), static_cast<unsigned long long>(c.batches.load()),
      by(Status::success), by(Status::cancelled), by(Status::invalid_device_state), by(Status::insufficient_resources),
      by(Status::unsuccessful), static_cast<unsigned long long>(c.presented.load()),
      static_cast<unsigned long long>(c.reserved_presented.load()), static_cast<unsigned long long>(c.sent.load()),
      static_cast<unsigned long long>(c.forwards.load()), static_cast<unsigned long long>(c.forward_busy.load()),
      static_cast<unsigned long long>(c.requeues.load()), static_cast<unsigned long long>(c.holds.load()),
      static_cast<unsigned long long>(c.retrieved.load()), static_cast<unsigned long long>(c.cancel_cbs.load()),
      static_cast<unsigned long long>(c.canceled_on_queue.load()),
      static_cast<unsigned long long>(c.control_ops.load()), static_cast<unsigned long long>(c.sync_ops.load()),
      static_cast<unsigned long long>(c.state_cbs.load()), static_cast<unsigned long long>(c.suspends.load()),
      static_cast<unsigned long long>(c.stop_cbs.load()), static_cast<unsigned long long>(c.acks_requeue.load()),
      static_cast<unsigned long long>(c.acks_keep.load()), static_cast<unsigned long long>(c.stale_stops.load()),
      static_cast<unsigned long long>(c.resumes.load()),
      static_cast<unsigned long long>(c.cancels.load()), static_cast<unsigned long long>(c.file_closes.load()),
      static_cast<unsigned long long>(c.fault_changes.load()), static_cast<unsigned long long>(fi.injected()),
      static_cast<unsigned long long>(c.fifo_checked.load()));

  if (uring != nullptr) {
    const UringCounters u = uring->totals();
    std::printf("  uring (%s): %llu requests through the ring, %llu SQEs, %llu waited for a slot, %llu async "
                "cancels, %llu short, %llu retried\n",
                uring->direct() ? "O_DIRECT" : "buffered", static_cast<unsigned long long>(u.completed),
                static_cast<unsigned long long>(u.submitted), static_cast<unsigned long long>(u.waited),
                static_cast<unsigned long long>(u.cancels), static_cast<unsigned long long>(u.short_ios),
                static_cast<unsigned long long>(u.retries));
    EXPECT_GT(u.completed, 0u) << "requests went through the ring";
    EXPECT_EQ(uring->in_flight(), 0u) << "nothing left in the rings";
  }

  // Tear down: the device first (its loops may still be posted to the cores
  // the submitters serve), then the cores' servers, then the target (no
  // thread may be inside poll() meanwhile; with reactors the target waits for
  // them itself), then the runtime.
  dev.reset();
  stop_polling = true;
  for (auto& th : submitters) th.join();
  target.reset();
  rt.reset();
  g = nullptr;
}

// Every execution mode with every target, except the io_uring target without
// a runtime (it has one ring per runtime core, so it needs one).
std::vector<std::tuple<Exec, std::size_t>> soak_variants() {
  std::vector<std::tuple<Exec, std::size_t>> v;
  for (Exec e : {Exec::none, Exec::reactors, Exec::app_poll})
    for (std::size_t t = 0; t < target_kinds().size(); ++t)
      if (e != Exec::none || std::string_view(target_kinds()[t].name) != "uring") v.emplace_back(e, t);
  return v;
}

INSTANTIATE_TEST_SUITE_P(
    Variants, SoakTest, ::testing::ValuesIn(soak_variants()),
    [](const auto& param_info) {
      return std::string(exec_name(std::get<0>(param_info.param))) + "_" +
             target_kinds()[std::get<1>(param_info.param)].name;
    });

}  // namespace
}  // namespace ioq
