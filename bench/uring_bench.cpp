// uring_bench: the io_uring target's own cost, measured on no-op requests.
//
//   BM_UringNop_Bare/<batch>  a bare liburing loop: prepare <batch> IORING_OP_NOP
//                             SQEs, submit them in one io_uring_enter, reap the
//                             <batch> CQEs in one batch. The ring has the flags the
//                             target uses (SINGLE_ISSUER|DEFER_TASKRUN where the
//                             kernel offers them).
//   BM_UringNop_Ioq/<batch>   the same no-ops through the whole ioq path: <batch>
//                             packets submitted in one Device::submit_batch to a
//                             parallel queue, whose handler sends each request to a
//                             UringTarget in nop mode (marked cancelable while in
//                             flight); one poll iteration submits the batch to the
//                             ring, reaps the completions and completes the packets.
//
// Items processed = no-ops completed. The ratio Ioq/Bare at batch 32 is the
// figure perf/report.py reports (same binary, same run).
#include <benchmark/benchmark.h>
#include <liburing.h>
#include <sys/resource.h>

#include <array>
#include <cstdint>
#include <memory>

#include <ioq/device.hpp>
#include <ioq/queue.hpp>
#include <ioq/runtime.hpp>
#include <ioq/uring_target.hpp>

namespace {

using namespace ioq;

constexpr unsigned kMaxBatch = 128;

// User and system CPU time of the calling thread over a benchmark's timed
// loop, reported per operation: where the two paths differ (the kernel's
// share of a no-op is the same for both).
class CpuSplit {
 public:
  CpuSplit() { getrusage(RUSAGE_THREAD, &start_); }
  void report(benchmark::State& state, std::uint64_t ops) const {
    rusage end{};
    getrusage(RUSAGE_THREAD, &end);
    const auto ns = [](const timeval& a, const timeval& b) {
      return static_cast<double>(b.tv_sec - a.tv_sec) * 1e9 + static_cast<double>(b.tv_usec - a.tv_usec) * 1e3;
    };
    const double n = ops != 0 ? static_cast<double>(ops) : 1.0;
    state.counters["user_ns_per_op"] = ns(start_.ru_utime, end.ru_utime) / n;
    state.counters["sys_ns_per_op"] = ns(start_.ru_stime, end.ru_stime) / n;
  }

 private:
  rusage start_{};
};

int init_ring(io_uring& ring, unsigned entries) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  int rc = io_uring_queue_init_params(entries, &ring, &p);
  if (rc == -EINVAL) {  // an older kernel: no such flags
    p = io_uring_params{};
    rc = io_uring_queue_init_params(entries, &ring, &p);
  }
  return rc;
}

void BM_UringNop_Bare(benchmark::State& state) {
  const auto batch = static_cast<unsigned>(state.range(0));
  io_uring ring{};
  if (const int rc = init_ring(ring, kMaxBatch); rc != 0) {
    state.SkipWithError("io_uring_queue_init failed");
    return;
  }
  std::array<io_uring_cqe*, kMaxBatch> cqes{};
  std::uint64_t done = 0;
  const CpuSplit cpu;
  for (auto _ : state) {
    for (unsigned i = 0; i < batch; ++i) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, i);
    }
    io_uring_submit_and_wait(&ring, batch);
    unsigned got = 0;
    while (got < batch) {
      const unsigned n = io_uring_peek_batch_cqe(&ring, cqes.data(), batch - got);
      if (n == 0) {
        io_uring_cqe* cqe = nullptr;
        (void)io_uring_wait_cqe(&ring, &cqe);
        continue;
      }
      for (unsigned i = 0; i < n; ++i) done += cqes[i]->res == 0 ? 1 : 0;
      io_uring_cq_advance(&ring, n);
      got += n;
    }
  }
  cpu.report(state, done);
  io_uring_queue_exit(&ring);
  if (done != static_cast<std::uint64_t>(state.iterations()) * batch) state.SkipWithError("a no-op failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(done));
}

struct IoqNop {
  std::unique_ptr<Runtime> rt;
  std::unique_ptr<UringTarget> target;
  std::unique_ptr<Device> dev;
  std::array<Packet, kMaxBatch> packets{};
  std::array<Packet*, kMaxBatch> ptrs{};
  std::uint64_t completed = 0, failed = 0;

  static void handler(Queue& q, Request r) {
    auto* t = static_cast<UringTarget*>(q.context());
    if (t->send(r) != Status::success) (void)r.complete(Status::unsuccessful);
  }
  // The same, given each run of requests at once (QueueConfig::on_batch).
  static void batch_handler(Queue& q, std::span<const Request> rqs) {
    auto* t = static_cast<UringTarget*>(q.context());
    while (!rqs.empty()) {
      const std::size_t taken = t->send_batch(rqs, nullptr);
      if (taken == rqs.size()) break;
      (void)rqs[taken].complete(Status::unsuccessful);
      rqs = rqs.subspan(taken + 1);
    }
  }
  static void on_complete(Packet& p) noexcept {
    auto* self = static_cast<IoqNop*>(p.user);
    ++(p.status == Status::success ? self->completed : self->failed);
  }

  const char* init(bool batch_handler) {
    auto r = Runtime::create({.cores = 1, .reactors = false, .pin = false, .name = "uring_bench"});
    if (!r) return "Runtime::create failed";
    rt = std::move(*r);
    rt->bind_thread(0);
    auto t = UringTarget::create(*rt, {.path = {}, .depth = kMaxBatch, .nop = true});
    if (!t) return "UringTarget::create failed (io_uring unavailable?)";
    target = std::move(*t);
    auto d = Device::create({.max_requests = 1024, .runtime = rt.get(), .name = "uring_bench"});
    if (!d) return "Device::create failed";
    dev = std::move(*d);
    QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true, .context = target.get()};
    if (batch_handler) qc.on_batch = IoqNop::batch_handler;
    else qc.on_default = handler;
    if (!dev->create_queue(qc) || dev->start() != Status::success) return "queue set-up failed";
    for (unsigned i = 0; i < kMaxBatch; ++i) {
      packets[i].type = RequestType::read;
      packets[i].length = 4096;  // a zero-length read would complete without reaching the handler
      packets[i].on_complete = on_complete;
      packets[i].user = this;
      ptrs[i] = &packets[i];
    }
    return nullptr;
  }
};

void run_ioq(benchmark::State& state, bool batch_handler) {
  const auto batch = static_cast<unsigned>(state.range(0));
  IoqNop n;
  if (const char* err = n.init(batch_handler)) {
    state.SkipWithError(err);
    return;
  }
  const CpuSplit cpu;
  for (auto _ : state) {
    const std::uint64_t want = n.completed + n.failed + batch;
    (void)n.dev->submit_batch(n.ptrs.data(), batch);
    while (n.completed + n.failed < want) n.rt->poll(0);
  }
  cpu.report(state, n.completed);
  if (n.failed != 0) state.SkipWithError("a no-op failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(n.completed));
  // The target's own account: every no-op went through the ring.
  const UringCounters c = n.target->counters(0);
  state.counters["sqes_per_op"] = n.completed ? static_cast<double>(c.submitted) / static_cast<double>(n.completed) : 0;
  state.counters["enter_per_op"] =
      n.completed ? static_cast<double>(c.submit_calls) / static_cast<double>(n.completed) : 0;
}

void BM_UringNop_Ioq(benchmark::State& state) { run_ioq(state, false); }
void BM_UringNop_IoqBatch(benchmark::State& state) { run_ioq(state, true); }

BENCHMARK(BM_UringNop_Bare)->Arg(1)->Arg(32);
BENCHMARK(BM_UringNop_Ioq)->Arg(1)->Arg(32);
BENCHMARK(BM_UringNop_IoqBatch)->Arg(1)->Arg(32);

}  // namespace

BENCHMARK_MAIN();
