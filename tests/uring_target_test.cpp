// The io_uring target against real files and loop devices: data written
// through ioq reads back bit-exact with plain pread, O_DIRECT alignment is
// enforced, errors carry their errno, and no request is lost or doubled under
// cancels, purges and stops while I/O is in flight.
#include <ioq/ioq.hpp>
#include <ioq/runtime.hpp>
#include <ioq/uring_target.hpp>

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "queue_harness.hpp"

namespace ioq {
namespace {

using namespace std::chrono_literals;
using test::Packets;
using test::TrackedPacket;

using test::wait_until;

// A temporary file, removed at the end.
struct TempFile {
  std::string path;
  explicit TempFile(std::uint64_t size = 0) {
    char tmpl[] = "/var/tmp/ioq-uring-XXXXXX";  // on disk (not tmpfs): O_DIRECT works
    const int fd = ::mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    if (size != 0) {
      EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    }
    ::close(fd);
    path = tmpl;
  }
  ~TempFile() { ::unlink(path.c_str()); }
  std::vector<unsigned char> pread_all(std::uint64_t off, std::size_t len) const {
    std::vector<unsigned char> out(len);
    const int fd = ::open(path.c_str(), O_RDONLY);
    EXPECT_EQ(::pread(fd, out.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    ::close(fd);
    return out;
  }
};

struct AlignedBuf {
  unsigned char* p;
  std::size_t n;
  explicit AlignedBuf(std::size_t bytes, std::size_t align = 4096)
      : p(static_cast<unsigned char*>(std::aligned_alloc(align, (bytes + align - 1) / align * align))), n(bytes) {
    std::memset(p, 0, n);
  }
  ~AlignedBuf() { std::free(p); }
  AlignedBuf(const AlignedBuf&) = delete;
};

void fill(unsigned char* p, std::size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>(g());
}

// A device whose default parallel queue sends every request to the target in
// the queue's context.
//
// The rig owns the packets and buffers its tests use, and destroys them last:
// a test that fails part-way (an ASSERT returns early) never frees a packet or
// a buffer while a request on it is still outstanding in the queue, the target
// or the kernel. Before it lets anything go, every accepted request that has
// not completed is cancelled and waited for; if some never complete, the rig
// leaks them (and itself) instead of freeing memory under them.
struct Rig {
  // Declared first: destroyed after the device, the target and the runtime.
  std::deque<Packets> packet_sets;
  std::deque<std::unique_ptr<AlignedBuf>> buffers;
  std::mutex accepted_mu;
  std::vector<TrackedPacket*> accepted;  // packets submit() saw accepted
  std::unique_ptr<Runtime> rt;
  std::unique_ptr<Device> dev;
  std::unique_ptr<UringTarget> target;
  Queue* q = nullptr;

  static void send(Queue& queue, Request r) {
    auto* t = static_cast<UringTarget*>(queue.context());
    EXPECT_EQ(t->send(r), Status::success);
  }

  // Returns false (after recording why) when the target cannot be made.
  bool make(UringTargetConfig cfg, RuntimeConfig rc = {.cores = 2}, DispatchType dispatch = DispatchType::parallel) {
    auto r = Runtime::create(rc);
    if (!r) {
      ADD_FAILURE() << r.error().message;
      return false;
    }
    rt = std::move(*r);
    auto t = UringTarget::create(*rt, cfg);
    if (!t) {
      ADD_FAILURE() << "UringTarget::create: " << to_string(t.error().status) << " " << t.error().message;
      return false;
    }
    target = std::move(*t);
    dev = test::make_device({.max_requests = 16384, .runtime = rt.get()});
    QueueConfig qc{.dispatch = dispatch, .default_queue = true};
    qc.on_default = &Rig::send;
    qc.context = target.get();
    q = test::make_queue(*dev, qc);
    return dev->start() == Status::success;
  }

  // A set of packets that lives as long as the rig.
  Packets& packets() { return packet_sets.emplace_back(); }
  // An I/O buffer that lives as long as the rig.
  AlignedBuf& buffer(std::size_t bytes) { return *buffers.emplace_back(std::make_unique<AlignedBuf>(bytes)); }
  // Device::submit, remembering an accepted packet (any thread).
  Status submit(TrackedPacket& t) {
    const Status s = dev->submit(t.packet);
    if (s == Status::pending) {
      std::lock_guard lock(accepted_mu);
      accepted.push_back(&t);
    }
    return s;
  }
  std::vector<TrackedPacket*> outstanding() {
    std::lock_guard lock(accepted_mu);
    std::vector<TrackedPacket*> out;
    for (TrackedPacket* t : accepted)
      if (!t->done()) out.push_back(t);
    return out;
  }

  ~Rig() {
    bool settled = true;
    if (dev) {
      if (const auto left = outstanding(); !left.empty()) {
        ADD_FAILURE() << left.size() << " accepted requests had not completed at the end of the test: "
                      << "cancelling them";
        for (TrackedPacket* t : left) (void)dev->cancel(t->packet);
        // Without reactors nobody polls here: what is left stays left.
        settled = rt && rt->has_reactors() ? wait_until([&] { return outstanding().empty(); })
                                           : outstanding().empty();
      }
      // remove() waits for the driver's requests: only once none is left.
      if (settled) (void)dev->remove();
    }
    if (!settled) {
      ADD_FAILURE() << outstanding().size()
                    << " requests never completed, even cancelled: leaking the rig rather than freeing them";
      (void)dev.release();
      (void)target.release();
      (void)rt.release();
      (void)new std::deque<Packets>(std::move(packet_sets));
      (void)new std::deque<std::unique_ptr<AlignedBuf>>(std::move(buffers));
      return;
    }
    dev.reset();
    target.reset();
    rt.reset();
  }
};

TrackedPacket& io(Packets& ps, RequestType type, std::uint64_t off, std::uint32_t len, void* buf) {
  auto& t = ps.make(type, len);
  t.packet.offset = off;
  t.packet.buffer = buf;
  return t;
}

bool all_done(Packets& ps) {
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (!ps[i].done()) return false;
  return true;
}

void run_bit_exact(bool direct) {
  constexpr std::size_t kBlocks = 256, kBs = 4096;
  TempFile f(kBlocks * kBs);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .direct = direct, .depth = 32}));
  EXPECT_EQ(rig.target->info().direct, direct);
  if (direct) {
    EXPECT_GE(rig.target->info().offset_align, 512u);
    EXPECT_EQ(rig.target->info().size, kBlocks * kBs);
  }
  AlignedBuf& data = rig.buffer(kBlocks * kBs);
  fill(data.p, data.n, 42);
  Packets& writes = rig.packets();
  for (std::size_t b = 0; b < kBlocks; ++b)
    ASSERT_EQ(rig.submit(io(writes, RequestType::write, b * kBs, kBs, data.p + b * kBs)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(writes); }));
  writes.expect_all_completed_once();
  for (std::size_t i = 0; i < writes.size(); ++i) {
    EXPECT_EQ(writes[i].status.load(), Status::success);
    EXPECT_EQ(writes[i].information.load(), kBs);
  }
  // An independent reader sees exactly what was written.
  const auto disk = f.pread_all(0, kBlocks * kBs);
  EXPECT_EQ(std::memcmp(disk.data(), data.p, data.n), 0);

  // And ioq reads it back the same.
  AlignedBuf& back = rig.buffer(kBlocks * kBs);
  Packets& reads = rig.packets();
  for (std::size_t b = 0; b < kBlocks; ++b)
    ASSERT_EQ(rig.submit(io(reads, RequestType::read, b * kBs, kBs, back.p + b * kBs)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(reads); }));
  reads.expect_all_completed_once();
  for (std::size_t i = 0; i < reads.size(); ++i) EXPECT_EQ(reads[i].status.load(), Status::success);
  EXPECT_EQ(std::memcmp(back.p, data.p, data.n), 0);
  std::uint64_t completed = 0;
  for (std::uint32_t c = 0; c < 2; ++c) completed += rig.target->counters(c).completed;
  EXPECT_EQ(completed, 2 * kBlocks);
}

TEST(UringTarget, DirectWritesReadBackBitExactWithPread) { run_bit_exact(true); }
TEST(UringTarget, BufferedWritesReadBackBitExactWithPread) { run_bit_exact(false); }

TEST(UringTarget, BufferedModeTakesAnyOffsetAndLength) {
  TempFile f(64 * 1024);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .direct = false}));
  AlignedBuf& data = rig.buffer(1000);
  fill(data.p, data.n, 7);
  Packets& ps = rig.packets();
  ASSERT_EQ(rig.submit(io(ps, RequestType::write, 123, 1000, data.p)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  EXPECT_EQ(ps[0].status.load(), Status::success);
  EXPECT_EQ(f.pread_all(123, 1000), std::vector<unsigned char>(data.p, data.p + data.n));
}

TEST(UringTarget, MisalignedDirectRequestsAreRefusedNotMadeBuffered) {
  TempFile f(64 * 1024);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .direct = true}));
  const std::uint32_t a = rig.target->info().offset_align;
  ASSERT_GE(a, 512u);
  AlignedBuf& buf = rig.buffer(3 * 4096);
  fill(buf.p, buf.n, 1);
  Packets& ps = rig.packets();
  ASSERT_EQ(rig.submit(io(ps, RequestType::write, a / 2, 4096, buf.p)), Status::pending);  // offset
  ASSERT_EQ(rig.submit(io(ps, RequestType::write, 0, a + 100, buf.p)), Status::pending);   // length
  if (rig.target->info().mem_align > 1) {
    ASSERT_EQ(rig.submit(io(ps, RequestType::write, 0, 4096, buf.p + 1)), Status::pending);  // buffer
  }
  ASSERT_EQ(rig.submit(io(ps, RequestType::read, 1, 4096, buf.p)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(ps[i].status.load(), Status::invalid_parameter) << i;
  // Nothing reached the file.
  const auto disk = f.pread_all(0, 3 * 4096);
  for (auto c : disk) ASSERT_EQ(c, 0);
}

TEST(UringTarget, ReadAtOrPastTheEndIsEndOfFileAndACrossingReadIsShort) {
  TempFile f(8192 + 100);  // not a multiple of the block: buffered mode
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .direct = false}));
  AlignedBuf& buf = rig.buffer(4096);
  Packets& ps = rig.packets();
  ASSERT_EQ(rig.submit(io(ps, RequestType::read, 8192 + 100, 4096, buf.p)), Status::pending);
  ASSERT_EQ(rig.submit(io(ps, RequestType::read, 1 << 20, 4096, buf.p)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  EXPECT_EQ(ps[0].status.load(), Status::end_of_file);
  EXPECT_EQ(ps[1].status.load(), Status::end_of_file);
  Packets& crossing = rig.packets();
  ASSERT_EQ(rig.submit(io(crossing, RequestType::read, 8192, 4096, buf.p)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(crossing); }));
  EXPECT_EQ(crossing[0].status.load(), Status::success);
  EXPECT_EQ(crossing[0].information.load(), 100u) << "the bytes up to the end";
}

TEST(UringTarget, WritingAReadOnlyFileFailsWithItsErrno) {
  TempFile f(8192);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .direct = true, .writable = false}));
  AlignedBuf& buf = rig.buffer(4096);
  Packets& ps = rig.packets();
  ASSERT_EQ(rig.submit(io(ps, RequestType::write, 0, 4096, buf.p)), Status::pending);
  ASSERT_EQ(rig.submit(io(ps, RequestType::read, 0, 4096, buf.p)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  EXPECT_EQ(ps[0].status.load(), Status::io_error);
  EXPECT_EQ(ps[0].packet.sys_errno, EBADF);
  EXPECT_EQ(ps[1].status.load(), Status::success) << "reads still work";
}

TEST(UringTarget, UnsupportedTypesAndMissingFilesGiveClearStatuses) {
  RuntimeConfig rc{.cores = 1};
  auto rt = Runtime::create(rc);
  ASSERT_TRUE(rt);
  auto missing = UringTarget::create(**rt, {.path = "/var/tmp/ioq-no-such-file"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().status, Status::not_found);
  auto zero_depth = UringTarget::create(**rt, {.path = "/dev/null", .depth = 0});
  ASSERT_FALSE(zero_depth);
  EXPECT_EQ(zero_depth.error().status, Status::invalid_parameter);

  TempFile f(8192);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path}));
  Packets& ps = rig.packets();
  auto& ctl = ps.make(RequestType::device_control, 0, {}, 0x1234);
  ASSERT_EQ(rig.submit(ctl), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  EXPECT_EQ(ctl.status.load(), Status::invalid_device_request);
}

struct Injector {
  std::atomic<int> eagain_left{0};
  std::uint64_t eio_offset = ~0ull;
  static int fn(void* ctx, RequestType, std::uint64_t off) noexcept {
    auto* self = static_cast<Injector*>(ctx);
    if (off == self->eio_offset) return EIO;
    if (self->eagain_left.load() > 0) {
      self->eagain_left.fetch_sub(1);
      return EAGAIN;
    }
    return 0;
  }
};

TEST(UringTarget, InjectedErrnoCompletesIoErrorAndEagainIsRetried) {
  TempFile f(64 * 1024);
  Injector inj;
  inj.eio_offset = 8192;
  inj.eagain_left = 3;
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .depth = 1, .inject = &Injector::fn, .inject_ctx = &inj},
                       {.cores = 1}));
  AlignedBuf& buf = rig.buffer(3 * 4096);
  fill(buf.p, buf.n, 9);
  Packets& ps = rig.packets();
  ASSERT_EQ(rig.submit(io(ps, RequestType::write, 0, 4096, buf.p)), Status::pending);
  ASSERT_EQ(rig.submit(io(ps, RequestType::write, 8192, 4096, buf.p + 4096)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  EXPECT_EQ(ps[0].status.load(), Status::success) << "EAGAIN three times, then done";
  EXPECT_EQ(ps[1].status.load(), Status::io_error);
  EXPECT_EQ(ps[1].packet.sys_errno, EIO);
  EXPECT_GE(rig.target->counters(0).retries, 3u);
  EXPECT_EQ(f.pread_all(0, 4096), std::vector<unsigned char>(buf.p, buf.p + 4096));
}

TEST(UringTarget, FlushDiscardAndWriteZeroes) {
  constexpr std::size_t kSize = 64 * 4096;
  TempFile f(kSize);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path}));
  AlignedBuf& data = rig.buffer(kSize);
  fill(data.p, data.n, 3);
  Packets& w = rig.packets();
  ASSERT_EQ(rig.submit(io(w, RequestType::write, 0, kSize, data.p)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(w); }));
  ASSERT_EQ(w[0].status.load(), Status::success);
  Packets& ops = rig.packets();
  ASSERT_EQ(rig.submit(io(ops, RequestType::discard, 4 * 4096, 4 * 4096, nullptr)), Status::pending);
  ASSERT_EQ(rig.submit(io(ops, RequestType::write_zeroes, 16 * 4096, 2 * 4096, nullptr)), Status::pending);
  ASSERT_EQ(rig.submit(io(ops, RequestType::flush, 0, 0, nullptr)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ops); }));
  for (std::size_t i = 0; i < ops.size(); ++i) EXPECT_EQ(ops[i].status.load(), Status::success) << i;
  const auto disk = f.pread_all(0, kSize);
  for (std::size_t i = 0; i < kSize; ++i) {
    const bool zero = (i >= 4 * 4096 && i < 8 * 4096) || (i >= 16 * 4096 && i < 18 * 4096);
    ASSERT_EQ(disk[i], zero ? 0 : data.p[i]) << "byte " << i;
  }
  struct stat st {};
  ASSERT_EQ(::stat(f.path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), kSize) << "discard and zeroes keep the size";
}

TEST(UringTarget, AFullRingPushesBackInOrderAndNeverFails) {
  constexpr std::size_t kReqs = 2000, kBs = 4096;
  TempFile f(64 * kBs);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .depth = 4}, {.cores = 1}));
  AlignedBuf& buf = rig.buffer(64 * kBs);
  Packets& ps = rig.packets();
  for (std::size_t i = 0; i < kReqs; ++i)
    ASSERT_EQ(rig.submit(io(ps, RequestType::read, (i % 64) * kBs, kBs, buf.p + (i % 64) * kBs)),
              Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < kReqs; ++i) ASSERT_EQ(ps[i].status.load(), Status::success) << i;
  const UringCounters c = rig.target->counters(0);
  EXPECT_GT(c.waited, 0u) << "depth 4 with 2000 requests: some waited in the target";
  EXPECT_EQ(c.completed, kReqs);
  EXPECT_EQ(rig.target->in_flight(0), 0u);
}

TEST(UringTarget, RegisteredFileAndFixedBuffers) {
  constexpr std::uint32_t kBufs = 16, kBs = 4096;
  TempFile f(kBufs * kBs);
  Rig rig;
  // One core, served by a thread of the test (no reactor): the buffers of
  // core 0 are the ones its sends can use as fixed buffers. Not the test's
  // main thread: a thread stays bound to the runtime after it is gone, and
  // a later runtime at the same address would take it for its core 0.
  ASSERT_TRUE(rig.make({.path = f.path, .depth = 16, .fixed_buffers = kBufs, .buffer_bytes = kBs, .register_file = true},
                       {.cores = 1, .reactors = false}));
  const UringTargetInfo& info = rig.target->info();
  EXPECT_TRUE(info.registered_file) << info.fallback;
  EXPECT_TRUE(info.fixed_buffers || !info.fallback.empty()) << "fixed buffers, or a stated fallback";
  Packets& ps = rig.packets();
  for (std::uint32_t i = 0; i < kBufs; ++i) ASSERT_NE(rig.target->buffer(0, i), nullptr);
  std::thread server([&] {
    rig.rt->bind_thread(0);
    for (std::uint32_t i = 0; i < kBufs; ++i) {
      auto* b = static_cast<unsigned char*>(rig.target->buffer(0, i));
      fill(b, kBs, 100 + i);
      EXPECT_EQ(rig.submit(io(ps, RequestType::write, i * kBs, kBs, b)), Status::pending);
    }
    // The rig cannot settle this one (nobody polls after this thread): a
    // request that is late is cancelled here, and polled until it is done.
    auto serve_until = [&](std::chrono::steady_clock::time_point deadline) {
      while (!rig.outstanding().empty() && std::chrono::steady_clock::now() < deadline) {
        rig.rt->poll(0);
        rig.target->wait(0, 1000);
      }
      return rig.outstanding().empty();
    };
    if (!serve_until(std::chrono::steady_clock::now() + 20s)) {
      ADD_FAILURE() << "writes still outstanding after 20 s: cancelling them";
      for (TrackedPacket* t : rig.outstanding()) (void)rig.dev->cancel(t->packet);
      (void)serve_until(std::chrono::steady_clock::now() + 20s);
    }
  });
  server.join();
  ASSERT_TRUE(all_done(ps));
  for (std::uint32_t i = 0; i < kBufs; ++i) {
    EXPECT_EQ(ps[i].status.load(), Status::success);
    auto* b = static_cast<unsigned char*>(rig.target->buffer(0, i));
    EXPECT_EQ(f.pread_all(i * kBs, kBs), std::vector<unsigned char>(b, b + kBs)) << "buffer " << i;
  }
  EXPECT_EQ(rig.target->buffer(0, kBufs), nullptr);
  EXPECT_EQ(rig.target->buffer(1, 0), nullptr);
  EXPECT_GT(rig.target->counters(0).submit_calls, 0u);
}

// A thread that claims a reactor's core without being its reactor - as the
// test's main thread did after bind_thread on a runtime since destroyed, when
// the next runtime reused its address - must not touch that core's ring: the
// reactor polls it meanwhile, and with SINGLE_ISSUER a ring enabled by the
// wrong thread never completes anything for the reactor again.
TEST(UringTarget, AThreadThatOnlyClaimsAReactorsCoreLeavesItsRingAlone) {
  constexpr std::size_t kBs = 4096, kReqs = 64;
  TempFile f(kReqs * kBs);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .depth = 8}, {.cores = 1}));
  AlignedBuf& buf = rig.buffer(kReqs * kBs);
  Packets& ps = rig.packets();
  std::thread impostor([&] {
    rig.rt->bind_thread(0);  // core 0 has a reactor: this binding is stale
    for (std::size_t i = 0; i < kReqs; ++i)
      EXPECT_EQ(rig.submit(io(ps, RequestType::read, i * kBs, kBs, buf.p + i * kBs)), Status::pending);
    // It never polls: everything must complete through the reactor.
    EXPECT_TRUE(wait_until([&] { return all_done(ps); }));
  });
  impostor.join();
  ASSERT_TRUE(all_done(ps));
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(ps[i].status.load(), Status::success) << i;
  EXPECT_EQ(rig.target->counters(0).completed, kReqs);
}

// Submitters, cancellers and a controller that stops, purges and restarts the
// queue, all while I/O is in flight: every packet completes exactly once with
// success or cancelled, and nothing is left in the target.
TEST(UringTarget, CancelAndStopStormLosesNothing) {
  constexpr std::size_t kBs = 4096, kBlocks = 256;
  constexpr int kThreads = 4, kEach = 3000;
  TempFile f(kBlocks * kBs);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .direct = true, .depth = 16}));
  AlignedBuf& buf = rig.buffer(kBlocks * kBs);
  std::vector<Packets*> per;
  for (int t = 0; t < kThreads; ++t) per.push_back(&rig.packets());
  std::atomic<bool> stop{false};
  std::atomic<int> submitted{0}, refused{0};
  std::thread controller([&] {
    for (int round = 0; !stop.load(); ++round) {
      (void)rig.q->stop_synchronously();
      (void)rig.q->start();
      if (round % 4 == 3) {
        (void)rig.q->purge_synchronously();
        (void)rig.q->start();
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937 g(static_cast<unsigned>(t));
      Packets& ps = *per[static_cast<std::size_t>(t)];
      for (int i = 0; i < kEach; ++i) {
        const std::size_t b = g() % kBlocks;
        auto& p = io(ps, (g() & 1) != 0 ? RequestType::read : RequestType::write, b * kBs, kBs, buf.p + b * kBs);
        const Status s = rig.submit(p);
        if (s == Status::pending) {
          submitted.fetch_add(1);
          if (g() % 3 == 0) (void)rig.dev->cancel(p.packet);
        } else {
          refused.fetch_add(1);
          p.completions.store(1);  // never accepted: its callback never runs
          p.status.store(s);
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  stop = true;
  controller.join();
  (void)rig.q->start();
  auto dump = [&] {
    std::string out;
    const auto st = rig.q->get_state();
    out += "queue flags=" + std::to_string(st.flags) + " queued=" + std::to_string(st.queued) +
           " driver_owned=" + std::to_string(st.driver_owned);
    for (std::uint32_t c = 0; c < 2; ++c) {
      const auto k = rig.target->counters(c);
      out += "; core " + std::to_string(c) + ": in_flight=" + std::to_string(rig.target->in_flight(c)) +
             " submitted=" + std::to_string(k.submitted) + " completed=" + std::to_string(k.completed) +
             " waited=" + std::to_string(k.waited) + " cancels=" + std::to_string(k.cancels);
    }
    return out;
  };
  for (Packets* ps : per) ASSERT_TRUE(wait_until([&] { return all_done(*ps); })) << dump();
  std::size_t ok = 0, cancelled = 0;
  for (Packets* pp : per) {
    Packets& ps = *pp;
    ps.expect_all_completed_once();
    for (std::size_t i = 0; i < ps.size(); ++i) {
      const Status s = ps[i].status.load();
      if (s == Status::success) ++ok;
      else if (s == Status::cancelled) ++cancelled;
      else EXPECT_TRUE(s == Status::device_busy || s == Status::invalid_device_state) << to_string(s);
    }
  }
  EXPECT_GT(ok, 0u);
  EXPECT_GT(cancelled, 0u);
  EXPECT_TRUE(wait_until([&] { return rig.target->in_flight(0) == 0 && rig.target->in_flight(1) == 0; }));
  EXPECT_EQ(rig.q->get_state().driver_owned, 0u);
  std::uint64_t completed = 0, cancels = 0;
  for (std::uint32_t c = 0; c < 2; ++c) {
    completed += rig.target->counters(c).completed;
    cancels += rig.target->counters(c).cancels;
  }
  EXPECT_LE(completed, static_cast<std::uint64_t>(submitted.load()));
  std::printf("storm: %d submitted, %zu success, %zu cancelled, %d refused, %llu through the ring, %llu async cancels\n",
              submitted.load(), ok, cancelled, refused.load(), static_cast<unsigned long long>(completed),
              static_cast<unsigned long long>(cancels));
}

TEST(UringTarget, InFlightRequestsAreCancelledWithAsyncCancelExactlyOnce) {
  // Each request is a 30 s kernel timer: only a cancel ends it in time.
  Rig rig;
  ASSERT_TRUE(rig.make({.path = {}, .depth = 8, .nop = true, .nop_delay_us = 30'000'000}));
  Packets& ps = rig.packets();
  for (int i = 0; i < 20; ++i) ASSERT_EQ(rig.submit(ps.make(RequestType::read, 512)), Status::pending);
  // 8 in flight on core 0 (sends from this thread go there), 12 waiting.
  ASSERT_TRUE(wait_until([&] { return rig.target->in_flight(0) == 8; }));
  // Cancel the odd ones first: the even ones must stay in flight.
  for (std::size_t i = 1; i < ps.size(); i += 2) EXPECT_EQ(rig.dev->cancel(ps[i].packet), Status::success);
  ASSERT_TRUE(wait_until([&] {
    for (std::size_t i = 1; i < ps.size(); i += 2)
      if (!ps[i].done()) return false;
    return true;
  }));
  for (std::size_t i = 0; i < ps.size(); i += 2) EXPECT_FALSE(ps[i].done()) << i;
  for (std::size_t i = 0; i < ps.size(); i += 2) EXPECT_EQ(rig.dev->cancel(ps[i].packet), Status::success);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(ps[i].status.load(), Status::cancelled) << i;
  EXPECT_GE(rig.target->counters(0).cancels, 8u) << "in-flight requests went through ASYNC_CANCEL";
  EXPECT_TRUE(wait_until([&] { return rig.target->in_flight(0) == 0; }));
}

TEST(UringTarget, SuspendWaitsForInFlightIoAndRemoveFinishesTheRest) {
  constexpr std::size_t kBs = 4096;
  TempFile f(256 * kBs);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path, .depth = 8}));
  AlignedBuf& buf = rig.buffer(256 * kBs);
  Packets& ps = rig.packets();
  for (std::size_t i = 0; i < 256; ++i)
    ASSERT_EQ(rig.submit(io(ps, RequestType::read, i * kBs, kBs, buf.p + i * kBs)), Status::pending);
  ASSERT_EQ(rig.dev->suspend(), Status::success);
  // Suspend returns once the driver owns nothing: in-flight I/O has finished.
  EXPECT_EQ(rig.q->get_state().driver_owned, 0u);
  EXPECT_EQ(rig.target->in_flight(0) + rig.target->in_flight(1), 0u);
  ASSERT_EQ(rig.dev->resume(), Status::success);
  ASSERT_EQ(rig.dev->remove(), Status::success);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const Status s = ps[i].status.load();
    EXPECT_TRUE(s == Status::success || s == Status::cancelled) << to_string(s);
  }
}

TEST(UringTarget, SuspendDuringCompletionsReturnsWithNothingDriverOwned) {
  // Completions land while suspend runs: some are between the target's claim
  // and the release of the driver count when power-down looks at the queue.
  // Suspend still returns only once the driver owns nothing.
  Rig rig;
  ASSERT_TRUE(rig.make({.path = {}, .depth = 16, .nop = true}));
  std::vector<Packets*> rounds;
  for (int round = 0; round < 300; ++round) {
    Packets& ps = *rounds.emplace_back(&rig.packets());
    for (int i = 0; i < 48; ++i) ASSERT_EQ(rig.submit(ps.make(RequestType::read, 512)), Status::pending);
    ASSERT_EQ(rig.dev->suspend(), Status::success);
    ASSERT_EQ(rig.q->get_state().driver_owned, 0u) << "round " << round;
    ASSERT_EQ(rig.target->in_flight(0) + rig.target->in_flight(1), 0u) << "round " << round;
    ASSERT_EQ(rig.dev->resume(), Status::success);
  }
  for (Packets* ps : rounds) {
    ASSERT_TRUE(wait_until([&] { return all_done(*ps); }));
    ps->expect_all_completed_once();
    for (std::size_t i = 0; i < ps->size(); ++i) EXPECT_EQ((*ps)[i].status.load(), Status::success);
  }
}

TEST(UringTarget, TheStopCallbackFiresOnceTheLastCompletionsDriverCountDrops) {
  // A reactor reaps a batch of completions and releases their driver counts
  // together at the end of the batch: that release must still bring the
  // queue's stop callback (which waits for no driver-owned requests), and
  // other threads must then see nothing driver-owned.
  Rig rig;
  ASSERT_TRUE(rig.make({.path = {}, .depth = 64, .nop = true}));
  for (int round = 0; round < 100; ++round) {
    Packets& ps = rig.packets();
    for (int i = 0; i < 200; ++i) ASSERT_EQ(rig.submit(ps.make(RequestType::read, 512)), Status::pending);
    std::atomic<int> fired{0};
    ASSERT_EQ(rig.q->stop([](Queue&, void* ctx) { static_cast<std::atomic<int>*>(ctx)->fetch_add(1); }, &fired),
              Status::success);
    ASSERT_TRUE(wait_until([&] { return fired.load() != 0; }, 5s)) << "round " << round;
    // Stopped with nothing driver-owned: each request has completed or is
    // still queued (a stop keeps what it has not delivered).
    const QueueState st = rig.q->get_state();
    EXPECT_EQ(st.driver_owned, 0u) << "round " << round;
    std::size_t done = 0;
    for (std::size_t i = 0; i < ps.size(); ++i) done += ps[i].done() ? 1 : 0;
    EXPECT_EQ(done + st.queued, ps.size()) << "round " << round;
    ASSERT_EQ(rig.q->start(), Status::success);
    ASSERT_TRUE(wait_until([&] { return all_done(ps); }, 5s)) << "round " << round;
    ps.expect_all_completed_once();
    EXPECT_EQ(fired.load(), 1) << "round " << round;
  }
}

// The reactor counts a reaped batch's completions once, with the batch's
// driver-count release (finish_claimed); counters read meanwhile on that
// thread still see each completion, from its packet's own callback on.
// One core polled by the test's own thread (no reactor), a UringTarget on
// it, and a device whose default parallel queue sends every request there.
struct PolledRig {
  std::unique_ptr<Runtime> rt;
  std::unique_ptr<UringTarget> target;
  std::unique_ptr<Device> dev;
  Queue* q = nullptr;

  // batch: the queue's handler is `batch` (QueueConfig::on_batch) instead of
  // one that sends each request.
  ::testing::AssertionResult make(const UringTargetConfig& cfg, BatchHandler batch = nullptr) {
    auto r = Runtime::create({.cores = 1, .reactors = false, .pin = false});
    if (!r) return ::testing::AssertionFailure() << "Runtime::create";
    rt = std::move(*r);
    rt->bind_thread(0);
    auto t = UringTarget::create(*rt, cfg);
    if (!t) return ::testing::AssertionFailure() << "UringTarget::create: " << to_string(t.error().status);
    target = std::move(*t);
    dev = test::make_device({.max_requests = 64, .runtime = rt.get()});
    QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true, .context = target.get()};
    if (batch != nullptr) {
      qc.on_batch = batch;
    } else {
      qc.on_default = [](Queue& queue, Request rq) {
        EXPECT_EQ(static_cast<UringTarget*>(queue.context())->send(rq), Status::success);
      };
    }
    auto created = dev->create_queue(qc);
    if (!created) return ::testing::AssertionFailure() << "create_queue";
    q = *created;
    if (dev->start() != Status::success) return ::testing::AssertionFailure() << "start";
    return ::testing::AssertionSuccess();
  }
};

struct BatchCountSeen {
  Device* dev = nullptr;
  Queue* q = nullptr;
  std::vector<std::uint64_t> device, queue;
};

TEST(UringTarget, ABatchsCompletionsAreCountedAsEachCompletes) {
  PolledRig rig;
  ASSERT_TRUE(rig.make({.path = {}, .depth = 64, .nop = true}));
  Runtime* rt = rig.rt.get();
  Device* dev = rig.dev.get();
  Queue* const* q = &rig.q;
  BatchCountSeen seen;
  seen.dev = dev;
  seen.q = *q;
  constexpr std::size_t kN = 16;
  std::array<Packet, kN> ps{};
  std::array<Packet*, kN> ptrs{};
  for (std::size_t i = 0; i < kN; ++i) {
    ps[i].type = RequestType::read;
    ps[i].length = 512;
    ps[i].user = &seen;
    ps[i].on_complete = [](Packet& p) noexcept {
      auto* s = static_cast<BatchCountSeen*>(p.user);
      s->device.push_back(s->dev->stats().completed);
      s->queue.push_back(s->q->counters().completed);
    };
    ptrs[i] = &ps[i];
  }
  ASSERT_EQ(dev->submit_batch(ptrs.data(), kN), Status::pending);
  EXPECT_EQ((*q)->counters().completed, 0u) << "all in flight";
  for (int i = 0; i < 100000 && seen.device.size() < kN; ++i) rt->poll(0);
  ASSERT_EQ(seen.device.size(), kN);
  std::vector<std::uint64_t> want(kN);
  for (std::size_t i = 0; i < kN; ++i) want[i] = i + 1;
  EXPECT_EQ(seen.device, want);
  EXPECT_EQ(seen.queue, want);
  EXPECT_EQ(dev->stats().completed, kN);
  EXPECT_EQ((*q)->counters().completed, kN);
  EXPECT_EQ((*q)->get_state().driver_owned, 0u);
  for (const Packet& p : ps) EXPECT_EQ(p.status, Status::success);
}

// send_batch takes a run on the caller's ring in order, waiting in the target
// beyond its depth, and stops at a refused request: the handler below slips
// a null handle in after each run's first request.
struct RunSeen {
  std::vector<std::size_t> taken_first, taken_rest;
  std::vector<Status> refused;
};
RunSeen* g_run_seen = nullptr;

TEST(UringTarget, SendBatchTakesARunInOrderAndStopsAtARefusedRequest) {
  RunSeen seen;
  g_run_seen = &seen;
  PolledRig rig;
  ASSERT_TRUE(rig.make({.path = {}, .depth = 4, .nop = true}, [](Queue& queue, std::span<const Request> run) {
    auto* target = static_cast<UringTarget*>(queue.context());
    std::vector<Request> v(run.begin(), run.end());
    v.insert(v.begin() + 1, Request{});
    Status refused = Status::success;
    g_run_seen->taken_first.push_back(target->send_batch(v, &refused));
    g_run_seen->refused.push_back(refused);
    g_run_seen->taken_rest.push_back(target->send_batch(std::span<const Request>(v).subspan(2), nullptr));
  }));
  constexpr std::size_t kN = 32;
  std::array<Packet, kN> ps{};
  std::array<Packet*, kN> ptrs{};
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < kN; ++i) {
    ps[i].type = RequestType::read;
    ps[i].length = 512;
    ps[i].offset = i;
    ps[i].user = &order;
    ps[i].on_complete = [](Packet& p) noexcept { static_cast<std::vector<std::size_t>*>(p.user)->push_back(p.offset); };
    ptrs[i] = &ps[i];
  }
  ASSERT_EQ(rig.dev->submit_batch(ptrs.data(), kN), Status::pending);
  EXPECT_EQ(seen.taken_first, std::vector<std::size_t>{1});
  EXPECT_EQ(seen.refused, std::vector<Status>{Status::invalid_handle});
  EXPECT_EQ(seen.taken_rest, std::vector<std::size_t>{kN - 1});
  EXPECT_EQ(rig.target->in_flight(0), 4u) << "depth 4: the rest wait in the target";
  for (int i = 0; i < 100000 && order.size() < kN; ++i) rig.rt->poll(0);
  ASSERT_EQ(order.size(), kN);
  for (std::size_t i = 0; i < kN; ++i) EXPECT_EQ(order[i], i) << "completed in the order sent";
  for (const Packet& p : ps) EXPECT_EQ(p.status, Status::success);
  const UringCounters c = rig.target->counters(0);
  EXPECT_EQ(c.completed, kN);
  EXPECT_EQ(c.waited, kN - 4);
  EXPECT_EQ(rig.dev->stats().completed, kN);
  g_run_seen = nullptr;
}

// A run sent at once stays cancelable: each in-flight request of it, and each
// one waiting in the target, completes cancelled exactly once.
TEST(UringTarget, RequestsSentAsARunAreCancelledExactlyOnce) {
  PolledRig rig;
  ASSERT_TRUE(rig.make({.path = {}, .depth = 8, .nop = true, .nop_delay_us = 30'000'000},
                       [](Queue& queue, std::span<const Request> run) {
                         EXPECT_EQ(static_cast<UringTarget*>(queue.context())->send_batch(run, nullptr), run.size());
                       }));
  Packets ps;
  std::vector<Packet*> ptrs;
  for (int i = 0; i < 20; ++i) ptrs.push_back(&ps.make(RequestType::read, 512).packet);
  ASSERT_EQ(rig.dev->submit_batch(ptrs.data(), ptrs.size()), Status::pending);
  EXPECT_EQ(rig.target->in_flight(0), 8u);
  for (Packet* p : ptrs) EXPECT_EQ(rig.dev->cancel(*p), Status::success);
  for (int i = 0; i < 100000 && !all_done(ps); ++i) rig.rt->poll(0);
  ASSERT_TRUE(all_done(ps));
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(ps[i].status.load(), Status::cancelled) << i;
  EXPECT_EQ(rig.target->in_flight(0), 0u);
  EXPECT_EQ(rig.q->get_state().driver_owned, 0u);
}

// A packet callback that submits a follow-up and polls the core until it
// completes (a submit-and-wait inside a completion, with no reactor) reaps
// only CQEs after its own: every packet of the outer batch and every
// follow-up completes exactly once, with its own result. (The follow-ups read
// past the end of the file: a CQE of the outer batch handled again for an op
// a follow-up took over would complete it with the outer read's success.)
struct NestedWait {
  Device* dev = nullptr;
  Runtime* rt = nullptr;
  std::uint64_t eof = 0;
  std::array<char, 512> buf{};
  std::array<Packet, 8> follow{};
  std::array<int, 16> outer_calls{};
  std::array<int, 8> follow_calls{};
  std::size_t next = 0;
};

TEST(UringTarget, ACallbackThatPollsAgainReapsOnlyLaterCompletions) {
  TempFile file(64 * 1024);
  PolledRig rig;
  ASSERT_TRUE(rig.make({.path = file.path, .direct = false, .depth = 64}));
  Runtime* rt = rig.rt.get();
  UringTarget* target = rig.target.get();
  Device* dev = rig.dev.get();
  Queue* const* q = &rig.q;
  static NestedWait* g = nullptr;
  NestedWait nw;
  nw.dev = dev;
  nw.rt = rt;
  nw.eof = 64 * 1024;
  g = &nw;
  std::array<std::array<char, 512>, 16> bufs{};
  std::array<Packet, 16> ps{};
  std::array<Packet*, 16> ptrs{};
  for (std::size_t i = 0; i < ps.size(); ++i) {
    ps[i].type = RequestType::read;
    ps[i].length = 512;
    ps[i].offset = i * 512;
    ps[i].buffer = bufs[i].data();
    ps[i].user = reinterpret_cast<void*>(i);
    // Every other outer completion submits a follow-up and waits for it.
    ps[i].on_complete = [](Packet& p) noexcept {
      const auto at = reinterpret_cast<std::size_t>(p.user);
      ++g->outer_calls[at];
      if (at % 2 != 0 || g->next >= g->follow.size()) return;
      const std::size_t f = g->next++;
      Packet& fp = g->follow[f];
      fp.type = RequestType::read;
      fp.length = 512;
      fp.offset = g->eof;
      fp.buffer = g->buf.data();
      fp.user = reinterpret_cast<void*>(f);
      fp.on_complete = [](Packet& p2) noexcept { ++g->follow_calls[reinterpret_cast<std::size_t>(p2.user)]; };
      EXPECT_EQ(g->dev->submit(fp), Status::pending);
      for (int k = 0; k < 100000 && g->follow_calls[f] == 0; ++k) g->rt->poll(0);
      EXPECT_EQ(g->follow_calls[f], 1) << "follow-up " << f << " completed inside its waiter";
    };
    ptrs[i] = &ps[i];
  }
  ASSERT_EQ(dev->submit_batch(ptrs.data(), ps.size()), Status::pending);
  for (int k = 0; k < 100000; ++k) {
    bool all = true;
    for (int c : nw.outer_calls) all = all && c != 0;
    if (all) break;
    rt->poll(0);
  }
  for (std::size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(nw.outer_calls[i], 1) << "outer packet " << i;
    EXPECT_EQ(ps[i].status, Status::success);
    EXPECT_EQ(ps[i].information, 512u);
  }
  EXPECT_EQ(nw.next, nw.follow.size());
  for (std::size_t f = 0; f < nw.follow.size(); ++f) {
    EXPECT_EQ(nw.follow_calls[f], 1) << "follow-up " << f;
    EXPECT_EQ(nw.follow[f].status, Status::end_of_file) << "follow-up " << f << " completed with its own CQE";
  }
  EXPECT_EQ(dev->stats().completed, ps.size() + nw.follow.size());
  EXPECT_EQ((*q)->get_state().driver_owned, 0u);
  // A CQE handled twice would claim whatever request its op carries by then
  // (a stale handle, or a follow-up not yet done): nothing of the kind.
  EXPECT_EQ(dev->verifier().total(), 0u);
  EXPECT_EQ(target->counters(0).completed, ps.size() + nw.follow.size());
  EXPECT_EQ(target->in_flight(0), 0u) << "every op slot freed exactly once";
  g = nullptr;
}

TEST(UringTarget, NopModeRunsTheWholePathWithoutTheDevice) {
  Rig rig;
  ASSERT_TRUE(rig.make({.path = {}, .nop = true}));
  Packets& ps = rig.packets();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(rig.submit(ps.make(RequestType::read, 512)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(ps); }));
  ps.expect_all_completed_once();
  for (std::size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(ps[i].status.load(), Status::success);
    EXPECT_EQ(ps[i].information.load(), 512u);
  }
}

TEST(UringTarget, ACompletionWakesAParkedReactor) {
  TempFile f(4096 * 4);
  Rig rig;
  ASSERT_TRUE(rig.make({.path = f.path}, {.cores = 1, .spin_us = 1}));
  AlignedBuf& buf = rig.buffer(4096);
  for (int round = 0; round < 50; ++round) {
    Packets& ps = rig.packets();
    ASSERT_EQ(rig.submit(io(ps, RequestType::flush, 0, 0, nullptr)), Status::pending);
    ASSERT_EQ(rig.submit(io(ps, RequestType::read, 0, 4096, buf.p)), Status::pending);
    ASSERT_TRUE(wait_until([&] { return all_done(ps); }, 5s)) << "round " << round;
  }
  EXPECT_GT(rig.rt->core_counters(0).parks, 0u) << "the reactor parked between rounds";
}

// ---- loop devices --------------------------------------------------------

struct Loop {
  std::string dev;
  int fd = -1;
  std::string why_not;
  Loop(const std::string& backing, std::uint32_t sector) {
    if (::geteuid() != 0) {
      why_not = "needs root for /dev/loop-control";
      return;
    }
    const int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) {
      why_not = std::string("/dev/loop-control: ") + std::strerror(errno);
      return;
    }
    const int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
    ::close(ctl);
    if (n < 0) {
      why_not = std::string("LOOP_CTL_GET_FREE: ") + std::strerror(errno);
      return;
    }
    dev = "/dev/loop" + std::to_string(n);
    fd = ::open(dev.c_str(), O_RDWR | O_CLOEXEC);
    const int bfd = ::open(backing.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0 || bfd < 0) {
      why_not = dev + ": " + std::strerror(errno);
      if (bfd >= 0) ::close(bfd);
      return;
    }
    loop_config lc{};
    lc.fd = static_cast<__u32>(bfd);
    lc.block_size = sector;
    const int rc = ::ioctl(fd, LOOP_CONFIGURE, &lc);
    const int e = errno;
    ::close(bfd);
    if (rc != 0) {
      why_not = std::string("LOOP_CONFIGURE: ") + std::strerror(e);
      ::close(fd);
      fd = -1;
    }
  }
  ~Loop() {
    if (fd >= 0) {
      ::ioctl(fd, LOOP_CLR_FD, 0);
      ::close(fd);
    }
  }
};

class UringLoopDevice : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(UringLoopDevice, AlignmentFromTheDeviceDataBitExactEndOfDevice) {
  const std::uint32_t sector = GetParam();
  constexpr std::size_t kSize = 4 << 20;
  TempFile backing(kSize);
  Loop loop(backing.path, sector);
  if (loop.fd < 0) GTEST_SKIP() << "no loop device: " << loop.why_not;
  Rig rig;
  ASSERT_TRUE(rig.make({.path = loop.dev, .direct = true, .depth = 32}));
  const UringTargetInfo& info = rig.target->info();
  EXPECT_TRUE(info.block_device);
  EXPECT_EQ(info.logical_block, sector);
  EXPECT_EQ(info.offset_align, sector);
  EXPECT_EQ(info.size, kSize);
  // O_EXCL: a second exclusive open fails while the target holds it.
  EXPECT_LT(::open(loop.dev.c_str(), O_RDWR | O_EXCL), 0);

  constexpr std::size_t kSpan = 256 * 1024;
  AlignedBuf& data = rig.buffer(kSpan);
  fill(data.p, data.n, sector);
  Packets& w = rig.packets();
  for (std::size_t off = 0; off < kSpan; off += sector)
    ASSERT_EQ(rig.submit(io(w, RequestType::write, off, sector, data.p + off)), Status::pending);
  // One sector's misalignment on a 4096 device, a half sector on a 512 one.
  auto& bad = io(w, RequestType::write, sector / 2, sector, data.p);
  ASSERT_EQ(rig.submit(bad), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(w); }));
  for (std::size_t i = 0; i + 1 < w.size(); ++i) ASSERT_EQ(w[i].status.load(), Status::success) << i;
  EXPECT_EQ(bad.status.load(), Status::invalid_parameter);
  Packets& fl = rig.packets();
  ASSERT_EQ(rig.submit(io(fl, RequestType::flush, 0, 0, nullptr)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(fl); }));
  EXPECT_EQ(fl[0].status.load(), Status::success);
  // The device through an independent reader (the backing file, after the flush).
  std::vector<unsigned char> disk(kSpan);
  const int rfd = ::open(loop.dev.c_str(), O_RDONLY);
  ASSERT_GE(rfd, 0);
  ASSERT_EQ(::pread(rfd, disk.data(), kSpan, 0), static_cast<ssize_t>(kSpan));
  ::close(rfd);
  EXPECT_EQ(std::memcmp(disk.data(), data.p, kSpan), 0);

  // Reading at the end of the device: end_of_file.
  AlignedBuf& back = rig.buffer(sector);
  Packets& eof = rig.packets();
  ASSERT_EQ(rig.submit(io(eof, RequestType::read, kSize, sector, back.p)), Status::pending);
  // Discard of the first 64 KiB: it reads back as zeros.
  ASSERT_EQ(rig.submit(io(eof, RequestType::discard, 0, 65536, nullptr)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(eof); }));
  EXPECT_EQ(eof[0].status.load(), Status::end_of_file);
  EXPECT_EQ(eof[1].status.load(), Status::success);
  AlignedBuf& z = rig.buffer(65536);
  fill(z.p, z.n, 5);
  Packets& rz = rig.packets();
  ASSERT_EQ(rig.submit(io(rz, RequestType::read, 0, 65536, z.p)), Status::pending);
  ASSERT_TRUE(wait_until([&] { return all_done(rz); }));
  EXPECT_EQ(rz[0].status.load(), Status::success);
  for (std::size_t i = 0; i < 65536; ++i) ASSERT_EQ(z.p[i], 0) << "discarded byte " << i;
}

INSTANTIATE_TEST_SUITE_P(Sectors, UringLoopDevice, ::testing::Values(512u, 4096u),
                         [](const auto& p) { return "sector" + std::to_string(p.param); });

}  // namespace
}  // namespace ioq
