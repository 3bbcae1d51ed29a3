// BM_Dispatch_<Queue>_<Scenario>: single-thread round trips through the queue
// model: submit, delivery (handler or retrieve), completion, packet callback.
//   Sequential_RoundTrip, Parallel_RoundTrip: the handler completes inline.
//   Manual_RoundTrip: submit, retrieve_next_request, complete.
//   Forward_RoundTrip: a parallel queue's handler forwards to a manual queue,
//                      then retrieve and complete.
//   Manual_Batch32: 32 submits queue up, then 32 retrieve+complete.
// Items processed = requests completed.
#include <benchmark/benchmark.h>

#include <ioq/ioq.hpp>

#include <cstdlib>
#include <memory>

namespace {

using namespace ioq;

std::unique_ptr<Device> make_device() {
  auto d = Device::create({.max_requests = 1024});
  if (!d) std::abort();
  return std::move(*d);
}

void count_done(Packet& p) noexcept { ++*static_cast<std::uint64_t*>(p.user); }

void complete_inline(Queue&, Request r) { (void)r.complete(Status::success, r.length()); }

template <DispatchType kDispatch>
void BM_AutoRoundTrip(benchmark::State& state) {
  auto dev = make_device();
  QueueConfig qc{.dispatch = kDispatch, .default_queue = true};
  qc.on_default = complete_inline;
  if (!dev->create_queue(qc) || dev->start() != Status::success) std::abort();
  std::uint64_t done = 0;
  Packet p;
  p.type = RequestType::read;
  p.length = 4096;
  p.on_complete = count_done;
  p.user = &done;
  for (auto _ : state) benchmark::DoNotOptimize(dev->submit(p));
  if (done != static_cast<std::uint64_t>(state.iterations())) state.SkipWithError("lost completions");
  state.SetItemsProcessed(state.iterations());
}

void BM_Dispatch_Manual_RoundTrip(benchmark::State& state) {
  auto dev = make_device();
  auto q = dev->create_queue({.dispatch = DispatchType::manual, .default_queue = true});
  if (!q || dev->start() != Status::success) std::abort();
  std::uint64_t done = 0;
  Packet p;
  p.type = RequestType::read;
  p.length = 4096;
  p.on_complete = count_done;
  p.user = &done;
  Request r;
  for (auto _ : state) {
    (void)dev->submit(p);
    (void)(*q)->retrieve_next_request(r);
    (void)r.complete(Status::success, 4096);
  }
  if (done != static_cast<std::uint64_t>(state.iterations())) state.SkipWithError("lost completions");
  state.SetItemsProcessed(state.iterations());
}

Queue* g_forward_target = nullptr;

void BM_Dispatch_Forward_RoundTrip(benchmark::State& state) {
  auto dev = make_device();
  auto manual = dev->create_queue({.dispatch = DispatchType::manual});
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue&, Request r) { (void)r.forward_to_queue(*g_forward_target); };
  auto par = dev->create_queue(qc);
  if (!manual || !par || dev->start() != Status::success) std::abort();
  g_forward_target = *manual;
  std::uint64_t done = 0;
  Packet p;
  p.type = RequestType::read;
  p.length = 4096;
  p.on_complete = count_done;
  p.user = &done;
  Request r;
  for (auto _ : state) {
    (void)dev->submit(p);
    (void)(*manual)->retrieve_next_request(r);
    (void)r.complete(Status::success, 4096);
  }
  if (done != static_cast<std::uint64_t>(state.iterations())) state.SkipWithError("lost completions");
  state.SetItemsProcessed(state.iterations());
}

void BM_Dispatch_Manual_Batch32(benchmark::State& state) {
  auto dev = make_device();
  auto q = dev->create_queue({.dispatch = DispatchType::manual, .default_queue = true});
  if (!q || dev->start() != Status::success) std::abort();
  std::uint64_t done = 0;
  Packet ps[32];
  for (auto& p : ps) {
    p.type = RequestType::read;
    p.length = 4096;
    p.on_complete = count_done;
    p.user = &done;
  }
  Request r;
  for (auto _ : state) {
    for (auto& p : ps) (void)dev->submit(p);
    for (int i = 0; i < 32; ++i) {
      (void)(*q)->retrieve_next_request(r);
      (void)r.complete(Status::success, 4096);
    }
  }
  if (done != 32 * static_cast<std::uint64_t>(state.iterations())) state.SkipWithError("lost completions");
  state.SetItemsProcessed(32 * state.iterations());
}

BENCHMARK_TEMPLATE(BM_AutoRoundTrip, DispatchType::sequential)->Name("BM_Dispatch_Sequential_RoundTrip");
BENCHMARK_TEMPLATE(BM_AutoRoundTrip, DispatchType::parallel)->Name("BM_Dispatch_Parallel_RoundTrip");
BENCHMARK(BM_Dispatch_Manual_RoundTrip);
BENCHMARK(BM_Dispatch_Forward_RoundTrip);
BENCHMARK(BM_Dispatch_Manual_Batch32);

}  // namespace

BENCHMARK_MAIN();
