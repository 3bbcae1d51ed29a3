// ioq-bench's engine (see engine.hpp).
#include "engine.hpp"

#include <ioq/ioq.hpp>
#include <ioq/runtime.hpp>
#include <ioq/target.hpp>
#include <ioq/uring_target.hpp>

#include <pthread.h>
#include <sched.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "tool/random_map.hpp"
#include "tool/progress.hpp"
#include "tool/verify.hpp"

namespace ioq::bench {
namespace {

// ---- the clock: the TSC, calibrated against steady_clock ----

std::uint64_t ticks() noexcept {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

std::uint64_t steady_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

struct TickClock {
  double ns_per_tick = 1.0;
  std::uint64_t to_ns(std::uint64_t t) const noexcept {
    return static_cast<std::uint64_t>(static_cast<double>(t) * ns_per_tick);
  }
  std::uint64_t from_ns(std::uint64_t ns) const noexcept {
    return static_cast<std::uint64_t>(static_cast<double>(ns) / ns_per_tick);
  }
  static TickClock calibrate() {
    const std::uint64_t n0 = steady_ns(), t0 = ticks();
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    const std::uint64_t n1 = steady_ns(), t1 = ticks();
    TickClock c;
    c.ns_per_tick = t1 > t0 ? static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0) : 1.0;
    return c;
  }
};

// ---- per-core state ----

struct Core;

struct Slot {
  Packet p;
  Core* owner = nullptr;
  std::uint32_t index = 0;
  std::uint64_t t0 = 0;  // submission tick
  bool timed = true;     // --lat-sample: this one's latency is recorded
  std::atomic<bool> remote_done{false};
};

struct alignas(64) Core {
  std::uint32_t index = 0;
  std::unique_ptr<Slot[]> slots;
  std::uint32_t nslots = 0;
  std::vector<std::uint32_t> free;  // free slot indices (this core's thread only)
  std::uint32_t in_flight = 0;

  LatencyHistogram read_clat, write_clat;
  // Timed completions waiting for their timestamp: one clock read serves every
  // completion of a poll step (settle()), as fio reads the clock once per
  // batch of reaped completions. Reserved for every slot of every core: no
  // allocation while running.
  struct Untimed {
    std::uint64_t t0;
    bool write;
  };
  std::vector<Untimed> untimed;
  bool need_tick = false;  // a timed request completed since the last settle()
  std::uint64_t read_ios = 0, write_ios = 0, read_bytes = 0, write_bytes = 0;
  std::uint64_t cancelled = 0, failed = 0, short_ios = 0;
  std::uint64_t last_completion_tick = 0;

  std::uint64_t measure_start = 0;  // ticks: record requests submitted from here on
  std::uint64_t last_tick = 0;      // the latest completion timestamp on this thread
  bool last_fresh = false;          // last_tick may start the next submission
  std::uint64_t rng = 0;
  std::uint64_t seq_offset = 0;
  std::uint64_t submitted_bytes = 0;
  std::uint32_t sample_countdown = 0;

  // RunPlan::each_block_once: this core's blocks [range_lo, range_lo + range_n).
  std::uint64_t range_lo = 0, range_n = 0, next_i = 0, perm_step = 1;
  // Random offsets without --norandommap: every block once per pass.
  RandomBlockMap perm;

  // --verify on reads.
  std::uint64_t verified = 0, verify_errors = 0, first_bad_offset = 0;
  BlockCheck first_bad = BlockCheck::ok;

  std::atomic<std::uint64_t> completed_total{0};  // for the progress line
  std::atomic<std::uint32_t> in_flight_shared{0};
  std::atomic<std::uint32_t> remote_pending{0};   // completions by other cores' threads
};

thread_local Core* t_core = nullptr;
double g_ns_per_tick = 1.0;  // set once before the core threads start
// --verify (set once before the core threads start).
bool g_verify = false;
std::uint64_t g_generation = 0;

std::uint64_t next_rand(std::uint64_t& x) noexcept {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// A random value in [0, n): the high half of a 64x64 product (Lemire's
// reduction), a multiply where `% n` is a division of 20-40 cycles per request.
__extension__ using u128 = unsigned __int128;  // GCC and Clang; -Wpedantic knows no 128-bit type
std::uint64_t next_below(std::uint64_t& x, std::uint64_t n) noexcept {
  return static_cast<std::uint64_t>((static_cast<u128>(next_rand(x)) * n) >> 64);
}

bool chance(std::uint64_t& rng, double p) noexcept {
  if (p <= 0.0) return false;
  if (p >= 1.0) return true;
  return static_cast<double>(next_rand(rng) >> 11) * 0x1p-53 < p;
}

// ---- devices and handlers ----

struct DeviceCtx {
  ioq::Target* target = nullptr;
  Queue* forward_to = nullptr;  // --forward-ratio > 0: a manual queue
  double forward_ratio = 0;
};

void handler(Queue& q, Request r) {
  auto* ctx = static_cast<DeviceCtx*>(q.context());
  thread_local std::uint64_t rng = 0x9E3779B97F4A7C15ull ^ reinterpret_cast<std::uintptr_t>(&rng);
  if (ctx->forward_to != nullptr && chance(rng, ctx->forward_ratio) &&
      r.forward_to_queue(*ctx->forward_to) == Status::success)
    return;
  if (const Status s = ctx->target->send(r); s != Status::success) (void)r.complete(s);
}

// --handler=batch: a run goes to the target at once; a request it refuses
// completes with the refusal, and the rest go on.
void batch_handler(Queue& q, std::span<const Request> run) {
  auto* ctx = static_cast<DeviceCtx*>(q.context());
  if (ctx->forward_to != nullptr) {
    for (const Request r : run) handler(q, r);  // each decides on its own whether it moves on
    return;
  }
  while (!run.empty()) {
    Status refused = Status::success;
    const std::size_t taken = ctx->target->send_batch(run, &refused);
    if (taken == run.size()) return;
    (void)run[taken].complete(refused);
    run = run.subspan(taken + 1);
  }
}

void on_complete(Packet& p) noexcept {
  auto* slot = static_cast<Slot*>(p.user);
  Core* me = t_core;
  if (me == nullptr) me = slot->owner;  // never in ioq-bench: every completion runs on a core thread
  // Every completion runs on a core thread of ioq-bench: the request's own
  // core (inline, or through its queue's shard) or a sequential queue's home
  // core. Record on the thread's core; merge sums them all.
  if (slot->t0 >= me->measure_start) {
    const bool write = p.type == RequestType::write;
    if (p.status == Status::success) {
      if (slot->timed) me->untimed.push_back(Core::Untimed{slot->t0, write});
      if (write) {
        ++me->write_ios;
        me->write_bytes += p.information;
      } else {
        ++me->read_ios;
        me->read_bytes += p.information;
      }
      if (p.information < p.length) ++me->short_ios;
      if (g_verify && !write) {
        ++me->verified;
        const BlockCheck v = check_block(p.buffer, p.length, p.offset, g_generation);
        if (v != BlockCheck::ok && me->verify_errors++ == 0) {
          me->first_bad_offset = p.offset;
          me->first_bad = v;
        }
      }
    } else if (p.status == Status::cancelled) {
      ++me->cancelled;
    } else {
      ++me->failed;
    }
  }
  me->completed_total.store(me->completed_total.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (slot->timed) me->need_tick = true;
  Core* owner = slot->owner;
  if (owner == me) {
    owner->free.push_back(slot->index);
    --owner->in_flight;
  } else {
    // release: the owner's scan (acquire) sees the packet finished.
    slot->remote_done.store(true, std::memory_order_release);
    owner->remote_pending.fetch_add(1, std::memory_order_release);
  }
}

// Timestamps the completions since the last call (one clock read) and records
// their latencies; the tick may also start the next submission.
void settle(Core& c) noexcept {
  if (!c.need_tick) return;
  c.need_tick = false;
  const std::uint64_t t1 = ticks();
  c.last_tick = t1;
  c.last_fresh = true;
  if (c.untimed.empty()) return;
  // A batch submitted together shares t0: one record per run of equal values.
  const std::size_t n = c.untimed.size();
  for (std::size_t i = 0; i < n;) {
    const Core::Untimed u = c.untimed[i];
    std::size_t j = i + 1;
    while (j < n && c.untimed[j].t0 == u.t0 && c.untimed[j].write == u.write) ++j;
    const auto lat = static_cast<std::uint64_t>(static_cast<double>(t1 - u.t0) * g_ns_per_tick);
    (u.write ? c.write_clat : c.read_clat).record(lat, j - i);
    i = j;
  }
  c.untimed.clear();
  c.last_completion_tick = t1;
}

void reap_remote(Core& c) noexcept {
  std::uint32_t n = c.remote_pending.exchange(0, std::memory_order_acquire);
  for (std::uint32_t i = 0; i < c.nslots && n != 0; ++i) {
    Slot& s = c.slots[i];
    if (s.remote_done.load(std::memory_order_acquire)) {
      s.remote_done.store(false, std::memory_order_relaxed);
      c.free.push_back(i);
      --c.in_flight;
      --n;
    }
  }
  if (n != 0) c.remote_pending.fetch_add(n, std::memory_order_relaxed);  // not visible yet
}

void pin_to(std::uint32_t k) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  if (cpus.empty()) return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpus[k % cpus.size()], &one);
  pthread_setaffinity_np(pthread_self(), sizeof one, &one);
}

std::string fmt_note(const UringTargetInfo& i) {
  std::string s = i.single_issuer ? (i.defer_taskrun ? "single issuer, deferred task running" : "single issuer")
                                  : "shared issuer";
  s += i.direct ? ", O_DIRECT" : ", buffered";
  if (i.direct) s += " (alignment " + std::to_string(i.offset_align) + "/" + std::to_string(i.mem_align) + ")";
  s += i.registered_file ? ", registered file" : "";
  s += i.fixed_buffers ? ", fixed buffers" : "";
  if (!i.fallback.empty()) s += "; fallback: " + i.fallback;
  return s;
}

std::uint64_t gcd(std::uint64_t a, std::uint64_t b) {
  while (b != 0) {
    const std::uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

}  // namespace

EngineResult run_engine(const Options& o, const RunPlan& plan) {
  EngineResult out;
  const TickClock clock = TickClock::calibrate();
  g_ns_per_tick = clock.ns_per_tick;
  const std::uint32_t cores = std::max(1u, o.cores);
  const std::uint32_t per_core = o.iodepth * std::max(1u, o.numjobs);
  const std::uint32_t ndev = std::max(1u, o.queues);

  auto rt_r = Runtime::create({.cores = cores, .reactors = false, .pin = false, .name = "ioq-bench"});
  if (!rt_r) {
    out.error = "ioq-bench: " + rt_r.error().message;
    return out;
  }
  std::unique_ptr<Runtime> rt = std::move(*rt_r);

  NullTarget null_target;
  ioq::Target* target = &null_target;
  std::unique_ptr<UringTarget> uring;
  const std::uint64_t bs_mem = (o.bs_bytes + 4095) / 4096 * 4096;
  if (o.target != Target::null) {
    UringTargetConfig uc;
    uc.nop = o.target == Target::uring_nop;
    if (!uc.nop) uc.path = o.filename;
    uc.direct = o.direct;
    uc.writable = o.writes();
    uc.depth = per_core;
    uc.fixed_buffers = o.fixedbufs ? per_core : 0;
    uc.buffer_bytes = static_cast<std::uint32_t>(bs_mem);
    uc.register_file = o.registerfiles;
    auto u = UringTarget::create(*rt, uc);
    if (!u) {
      out.error = "ioq-bench: --target=" + std::string(to_string(o.target)) + ": " + u.error().message + " (" +
                  std::string(ioq::to_string(u.error().status)) + ")";
      out.target_unavailable = u.error().status == Status::not_supported;
      return out;
    }
    uring = std::move(*u);
    target = uring.get();
    const UringTargetInfo& info = uring->info();
    out.target_note = fmt_note(info);
    if (!uc.nop && info.size < o.size_bytes) {
      out.error = "ioq-bench: --size: the file or device holds only " + std::to_string(info.size) + " bytes";
      return out;
    }
    if (!uc.nop && o.direct && (o.bs_bytes % info.offset_align) != 0) {
      out.error = "ioq-bench: --bs: O_DIRECT here needs a multiple of " + std::to_string(info.offset_align) + " bytes";
      return out;
    }
  }
  g_verify = o.verify != Verify::none;
  g_generation = plan.generation;
  std::vector<std::unique_ptr<Device>> devices;
  std::vector<std::unique_ptr<DeviceCtx>> ctxs;
  std::vector<Queue*> main_queues, forward_queues;
  const DispatchType dispatch = o.dispatch == DispatchMode::sequential ? DispatchType::sequential
                                : o.dispatch == DispatchMode::manual  ? DispatchType::manual
                                                                      : DispatchType::parallel;
  for (std::uint32_t d = 0; d < ndev; ++d) {
    // Room for the per-thread request caches too (see Slab: they move in batches of up to 32).
    auto dev_r = Device::create(
        {.max_requests = std::max(4096u, 2 * cores * per_core), .runtime = rt.get(), .name = "ioq-bench"});
    if (!dev_r) {
      out.error = "ioq-bench: " + dev_r.error().message;
      return out;
    }
    Device& dev = **dev_r;
    auto ctx = std::make_unique<DeviceCtx>();
    ctx->target = target;
    ctx->forward_ratio = o.forward_ratio;
    if (o.forward_ratio > 0) {
      auto fq = dev.create_queue({.dispatch = DispatchType::manual, .name = "forward"});
      if (!fq) {
        out.error = "ioq-bench: " + fq.error().message;
        return out;
      }
      ctx->forward_to = *fq;
      forward_queues.push_back(*fq);
    }
    QueueConfig qc{.dispatch = dispatch, .default_queue = true, .context = ctx.get(), .name = "main"};
    if (dispatch != DispatchType::manual) {
      if (o.handler == HandlerMode::batch) qc.on_batch = batch_handler;
      else qc.on_default = handler;
    }
    auto q = dev.create_queue(qc);
    if (!q) {
      out.error = "ioq-bench: " + q.error().message;
      return out;
    }
    if (o.reserved > 0 &&
        (*q)->assign_forward_progress_policy({.total_reserved = o.reserved}) != Status::success) {
      out.error = "ioq-bench: --reserved: cannot assign the forward-progress policy";
      return out;
    }
    if (dev.start() != Status::success) {
      out.error = "ioq-bench: cannot start the device";
      return out;
    }
    main_queues.push_back(*q);
    devices.push_back(std::move(*dev_r));
    ctxs.push_back(std::move(ctx));
  }

  // Per-core packet slots.
  std::vector<std::unique_ptr<char, decltype(&std::free)>> buffers;
  std::vector<std::unique_ptr<Core>> core_state;
  for (std::uint32_t k = 0; k < cores; ++k) {
    auto c = std::make_unique<Core>();
    c->index = k;
    c->nslots = per_core;
    c->slots = std::make_unique<Slot[]>(per_core);
    c->free.reserve(per_core);
    c->rng = 0x2545F4914F6CDD1Dull * (k + 1);
    c->perm.init(std::max<std::uint64_t>(1, o.size_bytes / std::max<std::uint64_t>(1, o.bs_bytes)),
                 next_rand(c->rng));
    for (std::uint32_t i = 0; i < per_core; ++i) {
      Slot& s = c->slots[i];
      s.owner = c.get();
      s.index = i;
      s.p.on_complete = on_complete;
      s.p.user = &s;
      s.p.length = static_cast<std::uint32_t>(o.bs_bytes);
      if (uring) {
        // A registered buffer where the target has them, else our own
        // page-aligned one (O_DIRECT's alignment is at most a page).
        s.p.buffer = uring->buffer(k, i);
        if (s.p.buffer == nullptr) {
          buffers.emplace_back(static_cast<char*>(std::aligned_alloc(4096, bs_mem)), &std::free);
          s.p.buffer = buffers.back().get();
          std::memset(s.p.buffer, 0, bs_mem);
        }
      }
      c->free.push_back(per_core - 1 - i);
    }
    if (plan.each_block_once) {
      const std::uint64_t nblocks = std::max<std::uint64_t>(1, o.size_bytes / o.bs_bytes);
      c->range_lo = nblocks * k / cores;
      c->range_n = nblocks * (k + 1) / cores - c->range_lo;
      // A step coprime to the range walks every block once in a scattered order.
      std::uint64_t step = 1;
      if (o.random() && c->range_n > 2) {
        step = (c->range_n * 5 / 8) | 1;
        while (gcd(step, c->range_n) != 1) step += 2;
      }
      c->perm_step = step;
    }
    core_state.push_back(std::move(c));
  }

  // A core's thread may complete any core's requests (a sequential queue's
  // home core, shards): room for all of them.
  std::size_t all_slots = 0;
  for (const auto& c : core_state) all_slots += c->nslots;
  for (auto& c : core_state) c->untimed.reserve(all_slots);

  const std::uint64_t begin = ticks();
  const std::uint64_t measure_start = begin + clock.from_ns(o.ramp_time_ns);
  const bool limited_by_time = o.time_based || o.runtime_ns != 0;
  const std::uint64_t end = limited_by_time ? measure_start + clock.from_ns(o.runtime_ns) : ~0ull;
  const std::uint64_t budget = o.time_based ? ~0ull : o.size_bytes * std::max(1u, o.numjobs);
  const std::uint32_t batch = std::max(1u, o.batch_submit());
  const bool writes = o.writes(), reads = o.reads(), random = o.random();
  const std::uint64_t blocks = std::max<std::uint64_t>(1, o.size_bytes / std::max<std::uint64_t>(1, o.bs_bytes));
  std::atomic<std::uint32_t> running{cores};

  auto core_main = [&](std::uint32_t k) {
    Core& c = *core_state[k];
    pin_to(k);
    rt->bind_thread(k);
    t_core = &c;
    c.measure_start = measure_start;
    std::vector<std::vector<Packet*>> batch_packets(ndev, std::vector<Packet*>(batch));
    std::vector<std::uint32_t> batch_count(ndev, 0);
    for (;;) {
      if (c.remote_pending.load(std::memory_order_relaxed) != 0) reap_remote(c);
      // Prepare up to `batch` packets per device, then submit each device's
      // group in one call (one timestamp for the batch: submitted together).
      std::uint32_t n = 0;
      if (!c.free.empty()) {
        const std::uint64_t now = c.last_fresh ? c.last_tick : ticks();
        c.last_fresh = false;
        if (now >= end || c.submitted_bytes >= budget) break;
        if (plan.each_block_once && c.next_i >= c.range_n) break;
        for (; n < batch && !c.free.empty() && c.submitted_bytes < budget; ++n) {
          if (plan.each_block_once && c.next_i >= c.range_n) break;
          const std::uint32_t idx = c.free.back();
          c.free.pop_back();
          Slot& s = c.slots[idx];
          const bool write = writes && (!reads || next_below(c.rng, 100) >= o.rwmixread);
          s.p.type = write ? RequestType::write : RequestType::read;
          std::uint64_t block;
          if (plan.each_block_once) block = c.range_lo + (c.next_i++ * c.perm_step) % c.range_n;
          else if (random) block = o.norandommap ? next_below(c.rng, blocks) : c.perm.next();
          else {  // 0, 1, .. blocks-1, 0, ..: a wrap, not a division per request
            block = c.seq_offset;
            if (++c.seq_offset == blocks) c.seq_offset = 0;
          }
          s.p.offset = block * o.bs_bytes;
          if (g_verify && write) fill_block(s.p.buffer, s.p.length, s.p.offset, g_generation);
          s.t0 = now;
          if (c.sample_countdown == 0) {
            s.timed = true;
            c.sample_countdown = o.lat_sample - 1;
          } else {
            s.timed = false;
            --c.sample_countdown;
          }
          ++c.in_flight;
          c.submitted_bytes += o.bs_bytes;
          const std::uint32_t d = ndev == 1 ? 0 : idx % ndev;
          batch_packets[d][batch_count[d]++] = &s.p;
        }
        for (std::uint32_t d = 0; d < ndev; ++d) {
          if (batch_count[d] == 0) continue;
          Device& dev = *devices[d];
          if (batch_count[d] == 1) (void)dev.submit(*batch_packets[d][0]);
          else (void)dev.submit_batch(batch_packets[d].data(), batch_count[d]);
          if (o.cancel_ratio > 0)
            for (std::uint32_t i = 0; i < batch_count[d]; ++i)
              if (chance(c.rng, o.cancel_ratio)) (void)dev.cancel(*batch_packets[d][i]);
          batch_count[d] = 0;
        }
        settle(c);  // what completed inline
      }
      // The driver's side of manual queues: retrieve and send.
      Request r;
      for (Queue* q : forward_queues)
        while (q->retrieve_next_request(r) == Status::success) (void)target->send(r);
      if (dispatch == DispatchType::manual)
        for (Queue* q : main_queues)
          while (q->retrieve_next_request(r) == Status::success) (void)target->send(r);
      settle(c);
      // Every slot in flight: submit what the handlers prepared and sleep in
      // the kernel until the device completes one (one io_uring_enter for
      // both, as fio's loop does), rather than spin on the ring; the poll
      // then reaps it. wait() returns at once when this core's ring has
      // nothing in flight (the requests are elsewhere: another core's queue).
      // One core: only this ring can complete our requests, so the wait needs
      // no time limit. More cores: a limit, for completions another core
      // hands back through our mailbox.
      if (c.free.empty() && uring) uring->wait(k, cores == 1 ? 0 : 1000);
      rt->poll(k);
      settle(c);
      c.in_flight_shared.store(c.in_flight, std::memory_order_relaxed);
    }
    // Drain what is still in flight (not measured: submitted before the end,
    // completing after it counts only if it completes before the end).
    const std::uint64_t drain_deadline = ticks() + clock.from_ns(10'000'000'000ull);
    while (c.in_flight != 0 && ticks() < drain_deadline) {
      if (c.remote_pending.load(std::memory_order_relaxed) != 0) reap_remote(c);
      Request r;
      for (Queue* q : forward_queues)
        while (q->retrieve_next_request(r) == Status::success) (void)target->send(r);
      if (dispatch == DispatchType::manual)
        for (Queue* q : main_queues)
          while (q->retrieve_next_request(r) == Status::success) (void)target->send(r);
      settle(c);
      if (uring) uring->wait(k, 1000);
      rt->poll(k);
      settle(c);
    }
    running.fetch_sub(1, std::memory_order_release);
    // Keep serving this core until every core is done: a sequential queue's
    // home core may still owe other cores their completions.
    while (running.load(std::memory_order_acquire) != 0) {
      if (rt->poll(k) == 0) std::this_thread::yield();
      settle(c);
    }
    settle(c);
    t_core = nullptr;
  };

  CpuUsage cpu_start{};
  std::uint64_t allocs_start = 0;
  std::vector<std::thread> threads;
  for (std::uint32_t k = 0; k < cores; ++k) threads.emplace_back(core_main, k);

  // Main thread: the measurement's start, the progress line.
  Progress progress(ProgressConfig{.fd = o.output.empty() ? 1 : 2,
                                   .planned_ns = o.ramp_time_ns + o.runtime_ns,
                                   .direction = reads && writes ? "rw" : writes ? "w" : "r"});
  bool started = false;
  const auto start_unix_ms = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  while (running.load(std::memory_order_acquire) != 0) {
    if (!started && ticks() >= measure_start) {
      cpu_start = CpuUsage::now();
      allocs_start = allocation_count();
      started = true;
    }
    const std::uint64_t now_ns = steady_ns();
    if (progress.due(now_ns)) {
      std::uint64_t done = 0, depth = 0;
      for (auto& c : core_state) {
        done += c->completed_total.load(std::memory_order_relaxed);
        depth += c->in_flight_shared.load(std::memory_order_relaxed);
      }
      progress.tick(now_ns, done, depth);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(started ? 20 : 1));
  }
  if (!started) {
    cpu_start = CpuUsage::now();
    allocs_start = allocation_count();
  }
  const CpuUsage cpu_end = CpuUsage::now();
  const std::uint64_t allocs_end = allocation_count();
  for (auto& t : threads) t.join();
  progress.finish();

  // Merge the cores.
  JobResult& job = out.job;
  job.options = o;
  job.start_unix_ms = start_unix_ms;
  std::uint64_t last = measure_start;
  for (auto& c : core_state) {
    job.read.ios += c->read_ios;
    job.write.ios += c->write_ios;
    job.read.bytes += c->read_bytes;
    job.write.bytes += c->write_bytes;
    job.read.short_ios += c->short_ios;
    job.cancelled += c->cancelled;
    job.failed += c->failed;
    job.read.clat.merge(c->read_clat);
    out.verified += c->verified;
    if (c->verify_errors != 0 && out.verify_errors == 0) {
      out.first_bad_offset = c->first_bad_offset;
      out.first_bad_reason = to_string(c->first_bad);
    }
    out.verify_errors += c->verify_errors;
    job.write.clat.merge(c->write_clat);
    last = std::max(last, c->last_completion_tick);
  }
  // The measured phase ends at the time limit, or (size-limited runs) at the
  // last timed completion.
  const std::uint64_t measured_end = limited_by_time ? std::min(end, std::max(last, measure_start)) : last;
  job.runtime_ns = clock.to_ns(measured_end > measure_start ? measured_end - measure_start : 0);
  job.cpu = cpu_end - cpu_start;
  job.allocations = allocs_end - allocs_start;
  for (Queue* q : main_queues) job.forwarded += q->counters().forwarded;
  job.extra.emplace_back("cores", cores);
  job.extra.emplace_back("devices", ndev);
  job.extra.emplace_back("tsc_ns_per_tick", clock.ns_per_tick);
  if (o.prometheus) {
    out.prometheus = rt->prometheus();
    for (auto& d : devices) out.prometheus += d->prometheus();
  }
  return out;
}

}  // namespace ioq::bench
