// BM_ForwardProgress_<Scenario>: the reserved-request path against the normal
// one, single thread, round trips through a parallel queue whose handler
// completes inline.
//   Normal_RoundTrip:   every request comes from the device's slab.
//   Reserved_RoundTrip: the allocation hook fails every allocation; every
//                       request is a reserved one (always_use_reserved, 64).
//   Reserved_Parked:    one reserved request, 8 packets submitted per round
//                       into a manual queue: 7 park, each completion serves the
//                       oldest parked packet.
// Items processed = requests completed.
#include <benchmark/benchmark.h>

#include <ioq/ioq.hpp>

#include <cstdlib>
#include <memory>

namespace {

using namespace ioq;

void count_done(Packet& p) noexcept { ++*static_cast<std::uint64_t*>(p.user); }

// The allocation hook: a plain flag, so the benchmark measures ioq's two
// paths and not the bookkeeping of ioq::FaultInjector.
bool fail_flag(void* ctx) noexcept { return *static_cast<const bool*>(ctx); }

struct Rig {
  bool fail = false;
  std::unique_ptr<Device> dev;
  Queue* q = nullptr;
  Rig(DispatchType type, std::uint32_t reserved) {
    auto d = Device::create({.max_requests = 1024, .alloc_hook = AllocHook{fail_flag, &fail}});
    if (!d) std::abort();
    dev = std::move(*d);
    QueueConfig qc{.dispatch = type, .default_queue = true};
    if (type != DispatchType::manual)
      qc.on_default = [](Queue&, Request r) { (void)r.complete(Status::success, r.length()); };
    auto qq = dev->create_queue(qc);
    if (!qq) std::abort();
    q = *qq;
    if (q->assign_forward_progress_policy({.total_reserved = reserved}) != Status::success) std::abort();
    if (dev->start() != Status::success) std::abort();
  }
};

void round_trips(benchmark::State& state, bool fail_allocations) {
  Rig rig(DispatchType::parallel, 64);
  rig.fail = fail_allocations;
  std::uint64_t done = 0;
  Packet p;
  p.type = RequestType::read;
  p.length = 4096;
  p.on_complete = count_done;
  p.user = &done;
  for (auto _ : state) benchmark::DoNotOptimize(rig.dev->submit(p));
  if (done != static_cast<std::uint64_t>(state.iterations())) state.SkipWithError("lost completions");
  const ForwardProgressStats st = rig.q->forward_progress_stats();
  if (fail_allocations && st.reserved_used != done) state.SkipWithError("not every request was reserved");
  if (st.free + st.in_use != st.total) state.SkipWithError("free + in_use != total");
  state.SetItemsProcessed(state.iterations());
}

void BM_ForwardProgress_Normal_RoundTrip(benchmark::State& state) { round_trips(state, false); }
void BM_ForwardProgress_Reserved_RoundTrip(benchmark::State& state) { round_trips(state, true); }

void BM_ForwardProgress_Reserved_Parked(benchmark::State& state) {
  Rig rig(DispatchType::manual, 1);
  rig.fail = true;
  std::uint64_t done = 0;
  Packet ps[8];
  for (auto& p : ps) {
    p.type = RequestType::read;
    p.length = 4096;
    p.on_complete = count_done;
    p.user = &done;
  }
  Request r;
  for (auto _ : state) {
    for (auto& p : ps) (void)rig.dev->submit(p);  // one gets the reserved request, 7 park
    for (int i = 0; i < 8; ++i) {
      (void)rig.q->retrieve_next_request(r);
      (void)r.complete(Status::success);          // serves the oldest parked packet
    }
  }
  if (done != 8 * static_cast<std::uint64_t>(state.iterations())) state.SkipWithError("lost completions");
  state.SetItemsProcessed(8 * state.iterations());
}

BENCHMARK(BM_ForwardProgress_Normal_RoundTrip);
BENCHMARK(BM_ForwardProgress_Reserved_RoundTrip);
BENCHMARK(BM_ForwardProgress_Reserved_Parked);

}  // namespace

BENCHMARK_MAIN();
