// UringTarget: one io_uring per core of a Runtime (see ioq/uring_target.hpp).
//
// Data flow on core k (everything below runs on the thread serving k, except
// the cancel callback and foreign sends, which only post):
//
//   send(rq) ──► validate ──► free op slot? ── yes ─► mark cancelable ─► prep SQE
//                                    └─ no ──► waiting FIFO (RequestImpl::target_next)
//   poll(k)  ──► submit SQEs + run deferred task work (one io_uring_enter)
//            ──► reap CQEs in batches ──► short? continue │ EAGAIN? resubmit
//                                     └─► unmark cancelable ─► complete ─► slot
//                                         freed ─► oldest waiting request starts
//
// A ring is created by create() (disabled when SINGLE_ISSUER is on, so that
// the files and buffers can be registered from the creating thread) and
// enabled by the first poll or send on its core: the kernel then binds it to
// that thread, the only one that ever submits to it.
#include <ioq/uring_target.hpp>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include <ioq/packet.hpp>

#include "base/cacheline.hpp"
#include "exec/runtime_impl.hpp"
#include "queue/impl.hpp"

namespace ioq {

using detail::RequestImpl;
using detail::lookup;

namespace {

constexpr std::uint64_t kCancelTag = 1;  // low bit of a cancel SQE's user_data
constexpr std::uint32_t kMaxRetries = 1u << 16;

enum class OpKind : std::uint8_t { read, write, flush, discard, zeroes, nop, blk_discard };

std::uint32_t round_pow2(std::uint32_t v) noexcept {
  std::uint32_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
  // Single writer (the core's thread): a relaxed load+store, read by anyone.
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace

struct UringTarget::Impl {
  struct Ring;

  // One request in flight on a core's ring. What every op touches fills its
  // first cache line; the cancel and delay parts follow.
  struct alignas(detail::kCacheLine) Op {
    Ring* ring = nullptr;
    Request rq;
    char* buf = nullptr;
    std::uint64_t off = 0;
    std::uint32_t len = 0;
    std::uint32_t done = 0;       // bytes transferred so far (short transfers)
    std::uint32_t retries = 0;
    std::int32_t result = 0;      // the final CQE result, once known
    std::uint32_t index = 0;
    OpKind kind = OpKind::nop;
    bool fixed = false;
    bool cancel_ran = false;      // our cancel callback's task has run
    bool cancel_sent = false;     // an ASYNC_CANCEL is on its way
    bool cqe_final = false;       // the final result is known; waits for cancel_ran
    struct CancelTask : Task {
      Op* op = nullptr;
    } cancel_task;                // posted by the cancel callback
    __kernel_timespec delay{};    // nop_delay_us: the timer's length
  };

  struct alignas(detail::kCacheLine) Ring {
    Impl* owner = nullptr;
    std::uint32_t core = 0;
    // With reactors: the reactor thread of `core`, the only thread that may
    // touch this ring (set by create, read-only after). Without: unset, and
    // the thread the application bound to the core is trusted.
    std::thread::id server{};
    io_uring ring{};
    bool created = false;
    bool enabled = false;
    bool needs_enable = false;
    std::unique_ptr<Op[]> ops;
    std::unique_ptr<std::uint32_t[]> free;  // free op indices (a stack of free_n)
    // Written by the core's thread only; an atomic because in_flight() (any
    // thread) reads it: the ops in flight are the depth less the free ones.
    std::atomic<std::uint32_t> free_n{0};
    std::uint32_t depth = 0;
    std::uint32_t in_flight() const noexcept { return depth - free_n.load(std::memory_order_relaxed); }
    [[gnu::always_inline]] std::uint32_t take_slot() noexcept {
      const std::uint32_t n = free_n.load(std::memory_order_relaxed) - 1;
      free_n.store(n, std::memory_order_relaxed);
      return free[n];
    }
    [[gnu::always_inline]] void put_slot(std::uint32_t index) noexcept {
      const std::uint32_t n = free_n.load(std::memory_order_relaxed);
      free[n] = index;
      free_n.store(n + 1, std::memory_order_relaxed);
    }
    RequestImpl* wait_head = nullptr;
    RequestImpl* wait_tail = nullptr;
    bool pumping = false;  // pump() is on the stack
    // Waiting requests whose cancel callback ran (from any thread): handles,
    // taken by a task on the ring's core.
    std::mutex cancel_mu;
    std::vector<std::uint64_t> cancelled;
    std::atomic<bool> cancel_posted{false};
    struct WaitCancelTask : Task {
      Ring* ring = nullptr;
    } wait_cancel_task;
    char* pool = nullptr;
    std::size_t pool_bytes = 0;
    bool fixed = false;
    std::atomic<std::uint64_t> submitted{0}, completed{0}, submit_calls{0}, retries{0}, short_ios{0},
        waited{0}, cancels{0};
  };

  Runtime* rt = nullptr;
  Runtime::Impl* rti = nullptr;
  UringTargetConfig cfg;
  bool plain_nop = false;  // nop mode with no delay: NOPs and nothing else
  UringTargetInfo info;
  int fd = -1;
  std::vector<std::unique_ptr<Ring>> rings;
  // send()'s view: the runtime's id (thread bindings name it), and the rings
  // by core as plain pointers.
  std::uint64_t runtime_id = 0;
  std::vector<Ring*> ring_of_core;
  std::uint32_t poller_id = ~0u;
  unsigned setup_flags = 0;

  // Requests sent from threads that serve no core: handed to core 0 through
  // a task posted to its mailbox (the mailbox's wake-up cannot be lost; a
  // flag checked by the poller could be, against a reactor about to park).
  std::mutex foreign_mu;
  RequestImpl* foreign_head = nullptr;
  RequestImpl* foreign_tail = nullptr;
  std::atomic<bool> foreign_posted{false};
  struct ForeignTask : Task {
    Impl* im = nullptr;
  } foreign_task;

  ~Impl();
  Status open_file();
  Status create_ring(Ring& r);
  void enable(Ring& r) noexcept;
  // ri, w: the request and its word as lookup() loaded them (the handle is live).
  void start(Ring& r, Request rq, RequestImpl* ri, std::uint64_t w) noexcept;
  // start()'s second half, once the request is known valid as an op of `kind`.
  void launch(Ring& r, Request rq, RequestImpl* ri, std::uint64_t w, const Packet& p, OpKind kind) noexcept;
  void pump(Ring& r) noexcept;
  void enqueue(Ring& r, RequestImpl* ri) noexcept;
  // send() and send_batch(): n requests in order, on the caller's ring, or
  // handed to core 0 from a thread with none (own_ring() null).
  std::size_t send_run(const Request* rqs, std::size_t n, Status* refused) noexcept;
  Ring* own_ring() noexcept;
  void send_foreign(RequestImpl* ri) noexcept;
  // The calling thread may touch r (it is the core's server, or no server is known).
  static bool serves(const Ring& r) noexcept {
    return r.server == std::thread::id{} || r.server == std::this_thread::get_id();
  }
  static void wait_cancel_cb(Request rq, void* ctx) noexcept;
  static void wait_cancel_run(Task& t) noexcept;
  // Prepares op's next SQE (the whole request, or what a short transfer left).
  void prep(Op& op) noexcept;
  void issue(Op& op) noexcept;
  io_uring_sqe* sqe(Ring& r) noexcept;
  // One completion (its user data and result, the CQE already consumed): the
  // common case inline; the rest:
  void on_cqe(Ring& r, std::uint64_t ud, std::int32_t res) noexcept;
  void on_cqe_slow(Ring& r, Op& op, std::int32_t res) noexcept;
  // claimed: the request was unmarked and claimed for completion already.
  void finish(Op& op, const detail::Claimed* claimed = nullptr) noexcept;
  void release(Op& op) noexcept;
  std::size_t poll(Ring& r) noexcept;
  static std::size_t poll_fn(void* ctx, std::uint32_t core) noexcept;
  static void cancel_cb(Request rq, void* ctx) noexcept;
  static void cancel_task(Task& t) noexcept;
  static void foreign_run(Task& t) noexcept;
  std::size_t take_foreign(Ring& r) noexcept;
};

namespace {

void append(RequestImpl*& head, RequestImpl*& tail, RequestImpl* r) noexcept {
  r->target_next = nullptr;
  if (tail != nullptr) tail->target_next = r;
  else head = r;
  tail = r;
}

RequestImpl* take(RequestImpl*& head, RequestImpl*& tail) noexcept {
  RequestImpl* r = head;
  if (r != nullptr) {
    head = r->target_next;
    if (head == nullptr) tail = nullptr;
    r->target_next = nullptr;
  }
  return r;
}

Request request_of(RequestImpl* r) noexcept { return Request(r->handle_for(r->word().load(std::memory_order_acquire))); }

}  // namespace

// ---- set-up -------------------------------------------------------------

Status UringTarget::Impl::open_file() {
  struct stat st {};
  const bool exists = ::stat(cfg.path.c_str(), &st) == 0;
  if (!exists && !cfg.create) return Status::not_found;
  info.block_device = exists && S_ISBLK(st.st_mode);
  if (exists && !S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) return Status::invalid_parameter;

  int flags = O_CLOEXEC | (cfg.writable ? O_RDWR : O_RDONLY);
  if (cfg.create && !info.block_device) flags |= O_CREAT;
  if (info.block_device) flags |= O_EXCL;  // nobody else may use the device meanwhile
  if (cfg.direct) flags |= O_DIRECT;
  fd = ::open(cfg.path.c_str(), flags, 0644);
  if (fd < 0) {
    const int e = errno;
    if (e == EINVAL && cfg.direct) return Status::not_supported;  // no O_DIRECT here
    if (e == ENOENT) return Status::not_found;
    if (e == EBUSY) return Status::device_busy;
    if (e == EACCES || e == EPERM || e == EROFS) return Status::invalid_device_request;
    return Status::io_error;
  }
  info.direct = cfg.direct;

  if (info.block_device) {
    std::uint64_t bytes = 0;
    int lbs = 0;
    unsigned int pbs = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0 || ::ioctl(fd, BLKSSZGET, &lbs) != 0 ||
        ::ioctl(fd, BLKPBSZGET, &pbs) != 0)
      return Status::io_error;
    info.size = bytes;
    info.logical_block = static_cast<std::uint32_t>(lbs);
    info.physical_block = pbs;
  } else {
    if (cfg.size != 0) {
      struct stat now {};
      if (::fstat(fd, &now) != 0) return Status::io_error;
      if (static_cast<std::uint64_t>(now.st_size) < cfg.size &&
          ::ftruncate(fd, static_cast<off_t>(cfg.size)) != 0)
        return Status::io_error;
    }
    struct stat now {};
    if (::fstat(fd, &now) != 0) return Status::io_error;
    info.size = static_cast<std::uint64_t>(now.st_size);
  }

  if (cfg.direct) {
    // The file system's (or device's) own answer first.
    struct statx sx {};
    if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) != 0 &&
        sx.stx_dio_offset_align != 0) {
      info.offset_align = sx.stx_dio_offset_align;
      info.mem_align = sx.stx_dio_mem_align != 0 ? sx.stx_dio_mem_align : sx.stx_dio_offset_align;
    } else if (info.block_device) {
      info.offset_align = info.logical_block;
      info.mem_align = info.logical_block;
    } else {
      // Unknown: the file system block size is always safe.
      struct stat now {};
      const auto blk = ::fstat(fd, &now) == 0 && now.st_blksize > 0 ? static_cast<std::uint32_t>(now.st_blksize) : 4096u;
      info.offset_align = blk;
      info.mem_align = blk;
    }
  }
  return Status::success;
}

Status UringTarget::Impl::create_ring(Ring& r) {
  const std::uint32_t entries = round_pow2(std::max<std::uint32_t>(cfg.depth * 2, 8));
  // Probe, most capable first: the kernel says EINVAL to flags it lacks.
  struct Attempt {
    unsigned flags;
    bool single, deferred;
  };
  const Attempt attempts[] = {
      {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED,
       true, true},
      {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED,
       true, false},
      {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, false, false},
      {0, false, false},
  };
  int rc = -EINVAL;
  for (const Attempt& a : attempts) {
    if (!cfg.single_issuer && a.single) continue;
    if (setup_flags != 0 && a.flags != setup_flags) continue;  // every core alike
    io_uring_params p{};
    p.flags = a.flags;
    p.cq_entries = entries * 2;
    p.flags |= IORING_SETUP_CQSIZE;
    rc = io_uring_queue_init_params(entries, &r.ring, &p);
    if (rc == 0) {
      setup_flags = a.flags;
      info.single_issuer = a.single;
      info.defer_taskrun = a.deferred;
      r.needs_enable = (a.flags & IORING_SETUP_R_DISABLED) != 0;
      break;
    }
    if (rc != -EINVAL) break;
  }
  if (rc != 0) return rc == -ENOMEM ? Status::insufficient_resources : Status::not_supported;
  r.created = true;

  if (cfg.register_file) {
    const int rf = io_uring_register_files(&r.ring, &fd, 1);
    if (rf != 0) {
      info.registered_file = false;
      if (info.fallback.empty())
        info.fallback = std::string("register_files refused (") + std::strerror(-rf) + "): plain file descriptor";
    }
  }
  if (cfg.fixed_buffers > 0) {
    r.pool_bytes = std::size_t{cfg.fixed_buffers} * cfg.buffer_bytes;
    void* m = ::mmap(nullptr, r.pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return Status::insufficient_resources;
    r.pool = static_cast<char*>(m);
    const iovec iov{r.pool, r.pool_bytes};
    const int rb = io_uring_register_buffers(&r.ring, &iov, 1);
    r.fixed = rb == 0;
    if (rb != 0 && info.fallback.find("register_buffers") == std::string::npos) {
      if (!info.fallback.empty()) info.fallback += "; ";
      info.fallback += std::string("register_buffers refused (") + std::strerror(-rb) + "): plain buffers";
    }
  }
  // With reactors, a completion wakes a parked core: the ring signals the
  // very eventfd the reactor sleeps on.
  if (rt->has_reactors()) {
    const int rfd = io_uring_register_eventfd(&r.ring, rti->cores[r.core]->efd);
    if (rfd != 0) return Status::not_supported;
  }

  r.ops = std::make_unique<Op[]>(cfg.depth);
  r.free = std::make_unique<std::uint32_t[]>(cfg.depth);
  r.depth = cfg.depth;
  for (std::uint32_t i = cfg.depth; i-- > 0;) {
    Op& op = r.ops[i];
    op.ring = &r;
    op.index = i;
    op.cancel_task.run = &Impl::cancel_task;
    op.cancel_task.op = &op;
    r.put_slot(i);
  }
  return Status::success;
}

UringTarget::Impl::~Impl() {
  if (poller_id != ~0u) rt->remove_poller(poller_id);
  for (auto& r : rings) {
    if (r->created) io_uring_queue_exit(&r->ring);
    if (r->pool != nullptr) ::munmap(r->pool, r->pool_bytes);
  }
  if (fd >= 0) ::close(fd);
}

void UringTarget::Impl::enable(Ring& r) noexcept {
  r.enabled = true;
  // liburing 2.3 declares io_uring_enable_rings but does not export it.
  if (r.needs_enable) (void)::syscall(__NR_io_uring_register, r.ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  // The ring fd registered with this thread saves a file lookup per enter.
  (void)io_uring_register_ring_fd(&r.ring);
}

Result<std::unique_ptr<UringTarget>> UringTarget::create(Runtime& runtime, const UringTargetConfig& config) {
  auto fail = [](Status s, const char* what) { return Result<std::unique_ptr<UringTarget>>(tl::unexpected(Error{s, what})); };
  if (config.depth == 0 || config.depth > 32768) return fail(Status::invalid_parameter, "uring: depth must be 1..32768");
  if (config.fixed_buffers > 0 && (config.buffer_bytes == 0 || config.buffer_bytes % 4096 != 0))
    return fail(Status::invalid_parameter, "uring: buffer_bytes must be a positive multiple of 4096");
  if (!config.nop && config.path.empty()) return fail(Status::invalid_parameter, "uring: no path");

  std::unique_ptr<UringTarget> t(new UringTarget());
  t->impl_ = std::make_unique<Impl>();
  Impl& im = *t->impl_;
  im.rt = &runtime;
  im.rti = &RuntimeAccess::of(runtime);
  im.cfg = config;
  im.plain_nop = config.nop && config.nop_delay_us == 0;
  im.foreign_task.im = &im;
  im.foreign_task.run = &Impl::foreign_run;
  im.info.registered_file = config.register_file;
  if (!config.path.empty()) {
    const Status s = im.open_file();
    if (s != Status::success) return fail(s, "uring: cannot open the file or device");
  }
  if (im.fd < 0) im.cfg.register_file = false;  // nop without a file
  im.info.registered_file = im.cfg.register_file;
  for (std::uint32_t c = 0; c < runtime.cores(); ++c) {
    im.rings.push_back(std::make_unique<Impl::Ring>());
    Impl::Ring& r = *im.rings.back();
    r.owner = &im;
    r.core = c;
    r.wait_cancel_task.ring = &r;
    r.wait_cancel_task.run = &Impl::wait_cancel_run;
    if (runtime.has_reactors()) r.server = im.rti->cores[c]->thread.get_id();
    const Status s = im.create_ring(r);
    if (s != Status::success) return fail(s, "uring: io_uring set-up failed");
    im.ring_of_core.push_back(&r);
  }
  im.runtime_id = im.rti->id;
  im.info.registered_file = im.info.registered_file && im.info.fallback.find("register_files") == std::string::npos;
  bool all_fixed = config.fixed_buffers > 0;
  for (auto& r : im.rings) all_fixed = all_fixed && r->fixed;
  im.info.fixed_buffers = all_fixed;
  im.poller_id = runtime.add_poller(&Impl::poll_fn, &im);
  return t;
}

UringTarget::~UringTarget() {
  if (!impl_) return;
  // A reactor may be inside our poller: take it out, then let every reactor
  // pass one poll iteration before the rings go.
  Impl& im = *impl_;
  if (im.poller_id != ~0u && im.rt->has_reactors()) {
    im.rt->remove_poller(im.poller_id);
    im.poller_id = ~0u;
    struct Fence : Task {
      std::atomic<int> done{0};
    };
    auto fences = std::make_unique<Fence[]>(im.rt->cores());
    for (std::uint32_t c = 0; c < im.rt->cores(); ++c) {
      fences[c].run = [](Task& t) noexcept {
        auto& f = static_cast<Fence&>(t);
        f.done.store(1, std::memory_order_release);
        f.done.notify_one();
      };
      im.rt->post(c, fences[c]);
    }
    for (std::uint32_t c = 0; c < im.rt->cores(); ++c) fences[c].done.wait(0, std::memory_order_acquire);
  }
}

// ---- the request path ---------------------------------------------------

namespace {
// io_uring_get_sqe, inline: the rings ioq creates never use SQPOLL (the kernel
// reads the tail only inside io_uring_enter, on this thread) nor 128-byte
// SQEs (create_ring's flags), so the free-space check is a plain read of the
// kernel's head.
[[gnu::always_inline]] inline io_uring_sqe* next_sqe(io_uring& ring) noexcept {
  io_uring_sq& sq = ring.sq;
  const unsigned head = IO_URING_READ_ONCE(*sq.khead);
  if (sq.sqe_tail - head >= sq.ring_entries) return nullptr;
  io_uring_sqe* s = &sq.sqes[sq.sqe_tail & sq.ring_mask];
  ++sq.sqe_tail;
  return s;
}
}  // namespace

[[gnu::always_inline]] inline io_uring_sqe* UringTarget::Impl::sqe(Ring& r) noexcept {
  io_uring_sqe* s = next_sqe(r.ring);
  if (s == nullptr) {
    // The SQ holds twice the depth; only a burst of cancels and resubmits can
    // fill it. Push what is there and take the freed entry.
    bump(r.submit_calls);
    const int n = io_uring_submit(&r.ring);
    if (n > 0) bump(r.submitted, static_cast<std::uint64_t>(n));
    s = io_uring_get_sqe(&r.ring);
  }
  return s;
}

[[gnu::always_inline]] inline void UringTarget::Impl::prep(Op& op) noexcept {
  Ring& r = *op.ring;
  if (op.kind == OpKind::nop && plain_nop) {
    // A plain no-op (nop mode): no file, no data, no injection.
    io_uring_sqe* s = sqe(r);
    io_uring_prep_nop(s);
    io_uring_sqe_set_data64(s, reinterpret_cast<std::uint64_t>(&op));
    return;
  }
  if (cfg.inject != nullptr && op.kind != OpKind::nop) {
    const RequestType type = op.kind == OpKind::read ? RequestType::read : RequestType::write;
    const int e = cfg.inject(cfg.inject_ctx, type, op.off + op.done);
    if (e != 0) {
      // Delivered as the kernel would: through a NOP whose result we override.
      io_uring_sqe* s = sqe(r);
      io_uring_prep_nop(s);
      io_uring_sqe_set_data64(s, reinterpret_cast<std::uint64_t>(&op));
      op.result = -e;
      op.retries |= 0x80000000u;  // marks the injected result
      return;
    }
  }
  io_uring_sqe* s = sqe(r);
  const int file = info.registered_file ? 0 : fd;
  const std::uint64_t off = op.off + op.done;
  char* buf = op.buf + op.done;
  const std::uint32_t len = op.len - op.done;
  switch (op.kind) {
    case OpKind::read:
      if (op.fixed) io_uring_prep_read_fixed(s, file, buf, len, off, 0);
      else io_uring_prep_read(s, file, buf, len, off);
      break;
    case OpKind::write:
      if (op.fixed) io_uring_prep_write_fixed(s, file, buf, len, off, 0);
      else io_uring_prep_write(s, file, buf, len, off);
      break;
    case OpKind::flush: io_uring_prep_fsync(s, file, IORING_FSYNC_DATASYNC); break;
    case OpKind::discard:
      io_uring_prep_fallocate(s, file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
      break;
    case OpKind::zeroes:
      io_uring_prep_fallocate(s, file, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
      break;
    case OpKind::nop:
      if (cfg.nop_delay_us != 0) {
        op.delay.tv_sec = cfg.nop_delay_us / 1000000;
        op.delay.tv_nsec = static_cast<long long>(cfg.nop_delay_us % 1000000) * 1000;
        io_uring_prep_timeout(s, &op.delay, 0, 0);  // completes -ETIME when it expires
      } else {
        io_uring_prep_nop(s);
      }
      break;
    case OpKind::blk_discard: io_uring_prep_nop(s); break;
  }
  if (info.registered_file && op.kind != OpKind::nop && op.kind != OpKind::blk_discard)
    s->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(s, reinterpret_cast<std::uint64_t>(&op));
}

[[gnu::always_inline]] inline void UringTarget::Impl::start(Ring& r, Request rq, RequestImpl* ri, std::uint64_t w) noexcept {
  // Driver-owned: the packet stays bound until it completes.
  const Packet* p = ri->packet.load(std::memory_order_relaxed);
  if (p == nullptr) return;
  // nop mode: every request is a no-op (launch() inlined for that kind alone).
  if (cfg.nop) {
    launch(r, rq, ri, w, *p, OpKind::nop);
    return;
  }
  OpKind kind;
  {
    switch (p->type) {
      case RequestType::read: kind = OpKind::read; break;
      case RequestType::write: kind = OpKind::write; break;
      case RequestType::flush: kind = OpKind::flush; break;
      case RequestType::discard: kind = info.block_device ? OpKind::blk_discard : OpKind::discard; break;
      case RequestType::write_zeroes: kind = OpKind::zeroes; break;
      default: (void)rq.complete(Status::invalid_device_request); return;
    }
    if (kind == OpKind::read || kind == OpKind::write) {
      if (p->length == 0) {
        (void)rq.complete(Status::success, 0);
        return;
      }
      if (p->buffer == nullptr) {
        (void)rq.complete(Status::invalid_parameter);
        return;
      }
    }
    if (info.direct && kind != OpKind::flush) {
      // O_DIRECT alignment: a misaligned request is refused, never turned
      // into buffered I/O behind the caller's back.
      const bool data = kind == OpKind::read || kind == OpKind::write;
      if (p->offset % info.offset_align != 0 || p->length % info.offset_align != 0 ||
          (data && reinterpret_cast<std::uintptr_t>(p->buffer) % info.mem_align != 0)) {
        (void)rq.complete(Status::invalid_parameter);
        return;
      }
    }
  }
  launch(r, rq, ri, w, *p, kind);
}

[[gnu::always_inline]] inline void UringTarget::Impl::launch(Ring& r, Request rq, RequestImpl* ri, std::uint64_t w,
                                                             const Packet& p, OpKind kind) noexcept {
  // Callers start only with a free slot (send, pump).
  const std::uint32_t idx = r.take_slot();
  Op& op = r.ops[idx];
  op.rq = rq;
  op.kind = kind;
  op.buf = static_cast<char*>(p.buffer);
  op.off = p.offset;
  op.len = p.length;
  op.done = 0;
  op.retries = 0;
  op.result = 0;
  op.cancel_ran = op.cancel_sent = op.cqe_final = false;
  op.fixed = r.fixed && op.buf >= r.pool && op.buf + op.len <= r.pool + r.pool_bytes;

  if (kind == OpKind::blk_discard) {
    // io_uring has no discard for block devices on every kernel ioq supports:
    // BLKDISCARD runs here, and its result travels through a NOP like any
    // other completion.
    std::uint64_t range[2] = {op.off, op.len};
    op.result = ::ioctl(fd, BLKDISCARD, &range) == 0 ? 0 : -errno;
    op.retries |= 0x80000000u;
  }
  if (detail::mark_cancelable_at(ri, w, rq.handle(), &Impl::cancel_cb, &op, /*ex=*/true) == Status::cancelled) {
    // Canceled before it reached the device: nothing was issued.
    op.result = -ECANCELED;
    op.cqe_final = true;
    op.cancel_ran = true;
    op.retries = 0;
    finish(op);
    return;
  }
  if (kind == OpKind::blk_discard || (kind == OpKind::nop && plain_nop)) {
    // No file, no data: a NOP carries the result (a BLKDISCARD's, or none).
    io_uring_sqe* s = sqe(r);
    io_uring_prep_nop(s);
    io_uring_sqe_set_data64(s, reinterpret_cast<std::uint64_t>(&op));
    return;
  }
  prep(op);
}

// prep() out of line, for the rarer paths (a retry, a short transfer's rest).
void UringTarget::Impl::issue(Op& op) noexcept { prep(op); }

// The caller's ring, or nullptr for a thread that serves no core of this
// runtime. A thread that claims a core but is not its reactor (a binding left
// over from bind_thread on a runtime since destroyed, whose Impl's address the
// new one reuses) is a foreign thread: touching the ring from it would race
// the reactor, and with SINGLE_ISSUER enabling it there would take the ring
// away from the reactor for good.
[[gnu::always_inline]] inline UringTarget::Impl::Ring* UringTarget::Impl::own_ring() noexcept {
  // The calling thread's core, kNoCore (>= any ring count) when it serves none.
  const std::uint32_t core = detail::t_binding.runtime == runtime_id ? detail::t_binding.core : kNoCore;
  if (core >= ring_of_core.size() || !serves(*ring_of_core[core])) return nullptr;
  Ring* r = ring_of_core[core];
  if (!r->enabled) enable(*r);
  return r;
}

void UringTarget::Impl::send_foreign(RequestImpl* ri) noexcept {
  {
    std::lock_guard lock(foreign_mu);
    append(foreign_head, foreign_tail, ri);
  }
  // One task in the mailbox at a time; it clears the flag before it takes
  // the list, so a request appended after the take posts it again.
  if (!foreign_posted.exchange(true, std::memory_order_acq_rel)) rt->post(0, foreign_task);
}

[[gnu::always_inline]] inline std::size_t UringTarget::Impl::send_run(const Request* rqs, std::size_t n,
                                                                     Status* refused) noexcept {
  Ring* const r = own_ring();
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t w = 0;
    RequestImpl* ri = lookup(rqs[i].handle(), w);
    if (ri == nullptr || !detail::handle_is_live(rqs[i].handle(), w)) [[unlikely]] {
      if (refused != nullptr) *refused = Status::invalid_handle;
      return i;
    }
    if (r == nullptr) [[unlikely]] {
      send_foreign(ri);
    } else if (r->free_n.load(std::memory_order_relaxed) == 0 || r->wait_head != nullptr || r->pumping) {
      // Full (or others are waiting already): the request waits its turn, in
      // order; it never fails for lack of a slot.
      bump(r->waited);
      enqueue(*r, ri);
      pump(*r);
    } else {
      start(*r, rqs[i], ri, w);
    }
  }
  return n;
}

Status UringTarget::send(Request request) noexcept {
  Status refused = Status::success;
  (void)impl_->send_run(&request, 1, &refused);
  return refused;
}

std::size_t UringTarget::send_batch(std::span<const Request> requests, Status* refused) noexcept {
  return impl_->send_run(requests.data(), requests.size(), refused);
}

// ---- completion ---------------------------------------------------------

[[gnu::always_inline]] inline void UringTarget::Impl::release(Op& op) noexcept {
  Ring& r = *op.ring;
  op.rq = Request{};
  r.put_slot(op.index);
}

void UringTarget::Impl::finish(Op& op, const detail::Claimed* claimed) noexcept {
  // The final result is known and nobody else holds the op.
  Ring& r = *op.ring;
  const Request rq = op.rq;
  const std::int32_t res = op.result;
  const std::uint32_t done = op.done;
  const OpKind kind = op.kind;
  const std::uint32_t len = op.len;
  release(op);
  bump(r.completed);
  Status status = Status::success;
  std::uint64_t information = 0;
  std::int32_t err = 0;
  if (res == -ECANCELED) {
    status = Status::cancelled;
    information = done;
  } else if (res < 0) {
    status = Status::io_error;
    information = done;
    err = -res;
  } else if (kind == OpKind::read) {
    if (done == 0 && res == 0) status = Status::end_of_file;
    else information = done;
  } else if (kind == OpKind::write) {
    information = done;
  } else if (kind == OpKind::nop) {
    information = len;
  }
  if (claimed != nullptr) detail::complete_claimed(*claimed, status, information, err);
  else if (err != 0) (void)rq.complete_with_errno(err, information);
  else (void)rq.complete(status, information);
  // A slot is free: the oldest waiting request takes it (unless a handler
  // that ran inside the completion above has taken it already).
  if (r.wait_head != nullptr) pump(r);
}

void UringTarget::Impl::pump(Ring& r) noexcept {
  // Iterative and not re-entered: a waiting request that start() finishes at
  // once (canceled before it reached the device) comes back here through
  // finish(), and the loop below, not a deeper call, starts the next one.
  if (r.pumping) return;
  r.pumping = true;
  while (r.free_n.load(std::memory_order_relaxed) != 0 && r.wait_head != nullptr) {
    RequestImpl* ri = take(r.wait_head, r.wait_tail);
    const Request rq = request_of(ri);
    if (ri->target_marked) {
      ri->target_marked = false;
      // Its cancel callback has won: the wait-cancel task completes it.
      if (rq.unmark_cancelable() == Status::cancelled) continue;
    }
    start(r, rq, ri, ri->word().load(std::memory_order_acquire));
  }
  r.pumping = false;
}

void UringTarget::Impl::enqueue(Ring& r, RequestImpl* ri) noexcept {
  // A waiting request stays cancelable: a cancel completes it at once
  // instead of when a slot frees.
  const Request rq = request_of(ri);
  const Status s = rq.mark_cancelable_ex(&Impl::wait_cancel_cb, &r);
  if (s == Status::cancelled) {
    bump(r.completed);
    (void)rq.complete(Status::cancelled);
    return;
  }
  ri->target_marked = s == Status::success;
  append(r.wait_head, r.wait_tail, ri);
}

void UringTarget::Impl::wait_cancel_cb(Request rq, void* ctx) noexcept {
  Ring& r = *static_cast<Ring*>(ctx);
  {
    std::lock_guard lock(r.cancel_mu);
    r.cancelled.push_back(rq.handle());
  }
  if (!r.cancel_posted.exchange(true, std::memory_order_acq_rel)) r.owner->rt->post(r.core, r.wait_cancel_task);
}

void UringTarget::Impl::wait_cancel_run(Task& t) noexcept {
  Ring& r = *static_cast<Ring::WaitCancelTask&>(t).ring;
  r.cancel_posted.store(false, std::memory_order_release);
  std::vector<std::uint64_t> handles;
  {
    std::lock_guard lock(r.cancel_mu);
    handles.swap(r.cancelled);
  }
  for (const std::uint64_t h : handles) {
    const Request rq(h);
    std::uint64_t w = 0;
    RequestImpl* ri = lookup(h, w);
    if (ri == nullptr) continue;
    // Still waiting: unlink it (a singly linked list: cancels are rare).
    RequestImpl* prev = nullptr;
    for (RequestImpl* x = r.wait_head; x != nullptr; prev = x, x = x->target_next) {
      if (x != ri) continue;
      if (prev != nullptr) prev->target_next = x->target_next;
      else r.wait_head = x->target_next;
      if (r.wait_tail == x) r.wait_tail = prev;
      x->target_next = nullptr;
      break;
    }
    ri->target_marked = false;
    bump(r.completed);
    (void)rq.complete(Status::cancelled);
  }
}

[[gnu::always_inline]] inline void UringTarget::Impl::on_cqe(Ring& r, std::uint64_t ud, std::int32_t res) noexcept {
  if ((ud & kCancelTag) != 0) return;  // an ASYNC_CANCEL's own result
  Op& op = *reinterpret_cast<Op*>(ud);
  // The common case: a first try (no retry, no injected result) that did all
  // it was asked and met no cancel. Its request is claimed and completed here.
  if (res >= 0 && op.retries == 0 && !op.cancel_ran) [[likely]] {
    std::uint64_t information;
    bool whole = true;
    if (op.kind == OpKind::read || op.kind == OpKind::write) {
      whole = static_cast<std::uint32_t>(res) == op.len - op.done && res != 0;
      information = op.len;
    } else {
      information = op.kind == OpKind::nop ? op.len : 0;
    }
    if (whole) {
      if (const detail::Claimed claimed = detail::claim_cancelable(op.rq)) [[likely]] {
        release(op);
        bump(r.completed);
        detail::complete_claimed(claimed, Status::success, information, 0);
        if (r.wait_head != nullptr) pump(r);
        return;
      }
      // Our cancel callback has won: its task (on this thread, later)
      // completes the request with the result kept here.
      if (op.kind == OpKind::read || op.kind == OpKind::write) op.done = op.len;
      op.result = 0;
      op.cqe_final = true;
      return;
    }
  }
  on_cqe_slow(r, op, res);
}

void UringTarget::Impl::on_cqe_slow(Ring& r, Op& op, std::int32_t res) noexcept {
  if ((op.retries & 0x80000000u) != 0) {  // injected, or a BLKDISCARD result
    res = op.result;
    op.retries &= ~0x80000000u;
  }
  if (op.kind == OpKind::nop && res == -ETIME) res = 0;  // a delayed nop's timer expired
  const bool data = op.kind == OpKind::read || op.kind == OpKind::write;
  if ((res == -EAGAIN || res == -EINTR) && !op.cancel_ran && op.retries < kMaxRetries) {
    ++op.retries;
    bump(r.retries);
    issue(op);
    return;
  }
  if (data && res > 0) {
    op.done += static_cast<std::uint32_t>(res);
    if (op.done < op.len) {
      if (!op.cancel_ran) {
        bump(r.short_ios);
        issue(op);  // continue from where it stopped (0 next time: the end)
        return;
      }
      res = -ECANCELED;  // cut short by a cancel
    } else {
      res = 0;
    }
  } else if (data && res == 0 && op.kind == OpKind::write) {
    res = -EIO;  // a write that moves nothing would never finish
  }
  if (op.cancel_ran && (res == -EAGAIN || res == -EINTR)) res = -ECANCELED;
  op.result = res;
  op.cqe_final = true;
  if (op.cancel_ran) {
    finish(op);
    return;
  }
  // Unmark and complete in one step (claim_cancelable), unless the cancel
  // callback has won the request.
  if (const detail::Claimed claimed = detail::claim_cancelable(op.rq)) {
    finish(op, &claimed);
    return;
  }
  // Our cancel callback has won: its task completes the request when it runs.
}

void UringTarget::Impl::cancel_cb(Request, void* ctx) noexcept {
  Op& op = *static_cast<Op*>(ctx);
  Ring& r = *op.ring;
  r.owner->rt->post(r.core, op.cancel_task);
}

void UringTarget::Impl::cancel_task(Task& t) noexcept {
  Op& op = *static_cast<Op::CancelTask&>(t).op;
  Ring& r = *op.ring;
  Impl& im = *r.owner;
  op.cancel_ran = true;
  if (op.cqe_final) {
    im.finish(op);
    return;
  }
  if (!op.cancel_sent) {
    op.cancel_sent = true;
    bump(r.cancels);
    io_uring_sqe* s = im.sqe(r);
    io_uring_prep_cancel64(s, reinterpret_cast<std::uint64_t>(&op), 0);
    io_uring_sqe_set_data64(s, reinterpret_cast<std::uint64_t>(&op) | kCancelTag);
  }
}

void UringTarget::Impl::foreign_run(Task& t) noexcept {
  Impl& im = *static_cast<ForeignTask&>(t).im;
  (void)im.take_foreign(*im.rings[0]);
}

std::size_t UringTarget::Impl::take_foreign(Ring& r) noexcept {
  foreign_posted.store(false, std::memory_order_release);
  if (!r.enabled) enable(r);
  RequestImpl* head;
  {
    std::lock_guard lock(foreign_mu);
    head = foreign_head;
    foreign_head = foreign_tail = nullptr;
  }
  std::size_t n = 0;
  while (head != nullptr) {
    RequestImpl* next = head->target_next;
    enqueue(r, head);
    head = next;
    ++n;
  }
  pump(r);
  return n;
}

std::size_t UringTarget::Impl::poll(Ring& r) noexcept {
  if (!r.enabled) return 0;
  std::size_t work = 0;
  const unsigned pending = io_uring_sq_ready(&r.ring);
  // Completions the kernel holds as deferred task work are posted only when
  // this thread enters the ring. The TASKRUN flag says so, but not always:
  // a kernel that runs a bounded batch of task work per enter keeps the rest
  // without raising the flag again (nor the eventfd). So while requests are
  // in flight and no completion is visible, enter anyway: an idle reactor
  // then parks only after an enter that left no deferred work behind, and
  // the next completion signals the eventfd.
  const bool taskrun = (IO_URING_READ_ONCE(*r.ring.sq.kflags) & IORING_SQ_TASKRUN) != 0 ||
                       (r.in_flight() != 0 && io_uring_cq_ready(&r.ring) == 0);
  if (pending != 0 || taskrun) {
    bump(r.submit_calls);
    const int n = pending != 0 ? io_uring_submit_and_get_events(&r.ring) : io_uring_get_events(&r.ring);
    if (n > 0 && pending != 0) {
      bump(r.submitted, static_cast<std::uint64_t>(n));
      work += static_cast<std::size_t>(n);
    }
  }
  // The completions below release their queues' driver counts together.
  const detail::CompletionBatch batch;
  io_uring_cq& cq = r.ring.cq;
  // What the kernel has posted, read in place (ioq's rings have 16-byte
  // CQEs). Each CQE is consumed (the head moved past it) before its
  // completion runs: a packet callback that polls this core again (a
  // submit-and-wait inside a callback) reaps only what follows, never a CQE
  // handled here. The head is read again after each: such a poll moves it.
  if (*cq.khead == io_uring_smp_load_acquire(cq.ktail)) {
    // None visible: liburing's peek flushes a CQ that overflowed.
    io_uring_cqe* c = nullptr;
    if (io_uring_peek_cqe(&r.ring, &c) != 0) return work;
  }
  for (;;) {
    const unsigned head = *cq.khead;  // written only by this thread (and its nested polls)
    if (head == io_uring_smp_load_acquire(cq.ktail)) break;
    const io_uring_cqe& c = cq.cqes[head & cq.ring_mask];
    const std::uint64_t ud = c.user_data;
    const std::int32_t res = c.res;
    io_uring_smp_store_release(cq.khead, head + 1);
    on_cqe(r, ud, res);
    ++work;
  }
  return work;
}

std::size_t UringTarget::Impl::poll_fn(void* ctx, std::uint32_t core) noexcept {
  auto& im = *static_cast<Impl*>(ctx);
  if (core >= im.rings.size() || !serves(*im.rings[core])) return 0;
  return im.poll(*im.rings[core]);
}

// ---- queries ------------------------------------------------------------

const UringTargetInfo& UringTarget::info() const noexcept { return impl_->info; }

void* UringTarget::buffer(std::uint32_t core, std::uint32_t index) const noexcept {
  if (core >= impl_->rings.size() || index >= impl_->cfg.fixed_buffers) return nullptr;
  return impl_->rings[core]->pool + std::size_t{index} * impl_->cfg.buffer_bytes;
}

void UringTarget::wait(std::uint32_t core, std::uint32_t timeout_us) noexcept {
  if (core >= impl_->rings.size()) return;
  Impl::Ring& r = *impl_->rings[core];
  if (!Impl::serves(r) || !r.enabled || r.in_flight() == 0) return;
  __kernel_timespec ts{};
  ts.tv_sec = timeout_us / 1000000;
  ts.tv_nsec = static_cast<long long>(timeout_us % 1000000) * 1000;
  io_uring_cqe* cqe = nullptr;
  bump(r.submit_calls);
  const unsigned pending = io_uring_sq_ready(&r.ring);
  // No timeout: no timer to arm (in a virtual machine, arming one costs an
  // exit to the hypervisor on every wait).
  const int n = timeout_us == 0 ? io_uring_submit_and_wait(&r.ring, 1)
                                : io_uring_submit_and_wait_timeout(&r.ring, &cqe, 1, &ts, nullptr);
  if (n > 0 && pending != 0) bump(r.submitted, static_cast<std::uint64_t>(n));
}

std::uint32_t UringTarget::in_flight(std::uint32_t core) const noexcept {
  return core < impl_->rings.size() ? impl_->rings[core]->in_flight() : 0;
}

UringCounters UringTarget::counters(std::uint32_t core) const noexcept {
  UringCounters c;
  if (core >= impl_->rings.size()) return c;
  const Impl::Ring& r = *impl_->rings[core];
  auto ld = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  c.submitted = ld(r.submitted);
  c.completed = ld(r.completed);
  c.submit_calls = ld(r.submit_calls);
  c.retries = ld(r.retries);
  c.short_ios = ld(r.short_ios);
  c.waited = ld(r.waited);
  c.cancels = ld(r.cancels);
  return c;
}

}  // namespace ioq
