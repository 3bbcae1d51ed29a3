// The differential driver (see differential_driver.hpp).
#include "differential_driver.hpp"

#include <ioq/ioq.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "reference_model.hpp"

namespace ioq::diff {

namespace {

// ===========================================================================
// Small helpers

std::uint64_t splitmix(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
  std::uint64_t x = a ^ (b * 0xff51afd7ed558ccdULL);
  return splitmix(x);
}

// Status names; a stale handle is one class (see the header).
std::string st(Status s) {
  if (s == Status::usage_already_completed || s == Status::invalid_handle) return "stale";
  return std::string(to_string(s));
}

std::string pk(int pkt) { return pkt < 0 ? std::string("#?") : "#" + std::to_string(pkt); }

const char* type_name(RequestType t) { return to_string(t); }

// ===========================================================================
// The configuration plan (from the 32 configuration bytes)

struct FpPlan {
  bool assign = false;
  std::uint32_t total = 1;
  ForwardProgressPolicy policy = ForwardProgressPolicy::always_use_reserved;
  bool examine = false;     // examine callback given
  bool alloc_req = false;   // allocate_request_resources given
  bool alloc_rsv = false;   // allocate_reserved_resources given
  int rsv_fail_at = -1;     // that callback fails on this call (0-based), -1 never
};

struct QueuePlan {
  DispatchType type = DispatchType::sequential;
  std::optional<std::uint32_t> max_presented;
  TriState pm = TriState::use_default;
  bool allow_zero = false;
  bool is_default = false;
  std::uint8_t handlers = 0;  // bit 0 read, 1 write, 2 device_control, 3 internal, 4 default
  bool on_stop = false, on_resume = false, on_coq = false;
  std::uint8_t routes = 0;    // bit per RequestType 0..4 routed here
  FpPlan fp;
  bool power_managed = true;  // effective
};

struct Plan {
  std::uint32_t max_requests = 8;
  bool control = false;
  std::vector<QueuePlan> queues;
};

FpPlan fp_plan_from(std::uint8_t x, std::uint8_t y) {
  FpPlan f;
  f.total = 1 + x % 3;
  switch ((x >> 2) % 3) {
    case 0: f.policy = ForwardProgressPolicy::always_use_reserved; break;
    case 1: f.policy = ForwardProgressPolicy::paging_io; break;
    default: f.policy = ForwardProgressPolicy::examine; break;
  }
  f.examine = f.policy == ForwardProgressPolicy::examine ? ((x >> 4) % 8 != 0) : false;
  f.alloc_req = ((x >> 5) & 1) != 0;
  f.alloc_rsv = ((x >> 6) & 1) != 0;
  f.rsv_fail_at = f.alloc_rsv && (y % 4 == 0) ? static_cast<int>(y / 4 % 3) : -1;
  return f;
}

Plan make_plan(const std::array<std::uint8_t, kConfigBytes>& c) {
  Plan p;
  const std::size_t nq = 2 + c[0] % 4;
  static constexpr std::uint32_t kSlots[] = {3, 6, 12, 64};
  p.max_requests = kSlots[c[1] % 4];
  p.control = (c[1] >> 2) % 8 == 0;
  const bool has_default = (c[0] >> 2) % 8 != 0;
  for (std::size_t i = 0; i < nq; ++i) {
    const std::uint8_t x = c[2 + i * 5], y = c[3 + i * 5], z = c[4 + i * 5], u = c[5 + i * 5],
                       v = c[6 + i * 5];
    QueuePlan q;
    q.type = static_cast<DispatchType>(x % 3);
    if (q.type == DispatchType::parallel) {
      const int lim = (x >> 2) % 4;
      if (lim != 0) q.max_presented = static_cast<std::uint32_t>(lim);
    }
    static constexpr TriState kPm[] = {TriState::use_default, TriState::yes, TriState::no, TriState::use_default};
    q.pm = kPm[(x >> 4) % 4];
    q.allow_zero = ((x >> 6) & 1) != 0;
    q.is_default = has_default && i == 0;
    if (q.type != DispatchType::manual) {
      q.handlers = y & 0x1F;
      if (q.handlers == 0) q.handlers = 0x3;
    }
    q.on_stop = (y >> 5) % 8 != 0;
    q.on_resume = (z & 1) != 0 || (z & 2) != 0;
    q.on_coq = (z >> 2) % 4 != 0;
    q.routes = q.is_default ? 0 : static_cast<std::uint8_t>(u & 0x1F & (i % 2 == 1 ? 0x1F : 0x0A));
    q.fp = fp_plan_from(static_cast<std::uint8_t>(v >> 1), z);
    q.fp.assign = (v % 3) == 0;
    q.power_managed = !p.control && q.pm != TriState::no;
    p.queues.push_back(q);
  }
  return p;
}

std::string describe_plan(const Plan& p) {
  std::ostringstream o;
  o << "device: max_requests=" << p.max_requests << (p.control ? " control_device" : "") << "\n";
  for (std::size_t i = 0; i < p.queues.size(); ++i) {
    const QueuePlan& q = p.queues[i];
    o << "  q" << i << ": "
      << (q.type == DispatchType::sequential ? "sequential" : q.type == DispatchType::parallel ? "parallel" : "manual");
    if (q.max_presented) o << " max_presented=" << *q.max_presented;
    o << (q.power_managed ? " power-managed" : " not-power-managed");
    if (q.allow_zero) o << " allow_zero_length";
    if (q.is_default) o << " DEFAULT";
    if (q.handlers) {
      o << " handlers=";
      const char* n[] = {"read", "write", "ioctl", "internal", "default"};
      bool first = true;
      for (int b = 0; b < 5; ++b)
        if (q.handlers & (1 << b)) {
          o << (first ? "" : "|") << n[b];
          first = false;
        }
    }
    if (q.on_stop) o << " on_stop";
    if (q.on_resume) o << " on_resume";
    if (q.on_coq) o << " on_canceled_on_queue";
    if (q.routes) o << " routes=0x" << std::hex << int(q.routes) << std::dec;
    if (q.fp.assign) {
      o << " fp{total=" << q.fp.total << " policy="
        << (q.fp.policy == ForwardProgressPolicy::always_use_reserved ? "always"
            : q.fp.policy == ForwardProgressPolicy::paging_io         ? "paging"
                                                                      : "examine");
      if (q.fp.examine) o << " examine_cb";
      if (q.fp.alloc_req) o << " alloc_request_cb";
      if (q.fp.alloc_rsv) o << " alloc_reserved_cb(fail_at=" << q.fp.rsv_fail_at << ")";
      o << "}";
    }
    o << "\n";
  }
  return o.str();
}

// ===========================================================================
// What a step produces, on one side

struct Event {
  int depth = 0;
  std::string text;
};

struct QueueSnap {
  QueueState state{};
  ForwardProgressStats fp{};
  bool operator==(const QueueSnap& o) const {
    return state.flags == o.state.flags && state.queued == o.state.queued &&
           state.driver_owned == o.state.driver_owned && fp.total == o.fp.total && fp.free == o.fp.free &&
           fp.in_use == o.fp.in_use && fp.parked == o.fp.parked && fp.reserved_used == o.fp.reserved_used &&
           fp.parked_total == o.fp.parked_total;
  }
};

struct Snapshot {
  std::vector<QueueSnap> queues;
  std::array<std::uint64_t, kStatusCount> verifier{};
  std::uint32_t free_requests = 0;
  PowerState power = PowerState::d0;
  bool operator==(const Snapshot& o) const {
    return queues == o.queues && verifier == o.verifier && free_requests == o.free_requests && power == o.power;
  }
};

std::string flags_str(std::uint32_t f) {
  std::string s;
  auto add = [&](std::uint32_t bit, const char* n) {
    if (f & bit) s += s.empty() ? n : std::string("|") + n;
  };
  add(kQueueAccepting, "Acc");
  add(kQueueDispatching, "Dsp");
  add(kQueueNoRequests, "NoReq");
  add(kQueueDriverNoRequests, "DrvNoReq");
  add(kQueuePnpHeld, "PnpHeld");
  return s.empty() ? "0" : s;
}

std::string snap_str(const Snapshot& s) {
  std::ostringstream o;
  const char* pw[] = {"d0", "dx", "removed"};
  o << "power=" << pw[static_cast<int>(s.power)] << " free_requests=" << s.free_requests << " verifier{";
  bool any = false;
  for (std::size_t i = 0; i < kStatusCount; ++i)
    if (s.verifier[i]) {
      o << (any ? " " : "") << st(static_cast<Status>(i)) << "=" << s.verifier[i];
      any = true;
    }
  o << "}\n";
  for (std::size_t i = 0; i < s.queues.size(); ++i) {
    const QueueSnap& q = s.queues[i];
    o << "    q" << i << " {" << flags_str(q.state.flags) << " queued=" << q.state.queued
      << " driver=" << q.state.driver_owned << "}";
    if (q.fp.total)
      o << " fp{total=" << q.fp.total << " free=" << q.fp.free << " in_use=" << q.fp.in_use
        << " parked=" << q.fp.parked << " used=" << q.fp.reserved_used << " parked_total=" << q.fp.parked_total
        << "}";
    o << "\n";
  }
  return o.str();
}

struct StepRecord {
  std::string op;      // the operation as the driver read it
  std::string result;  // statuses and outputs
  std::vector<Event> events;
  Snapshot snap;
  bool driver_error = false;
};

// Canonical form of an event list: consecutive sibling frames whose head is a
// stop, resume or cancel callback are sorted (the order of one such batch is
// the order in which the implementation visits owned requests: unspecified).
using Frame = std::vector<Event>;

bool unordered_head(const std::string& t) {
  return t.rfind("stop ", 0) == 0 || t.rfind("resume ", 0) == 0 || t.rfind("cancel_cb ", 0) == 0;
}

std::string head_kind(const std::string& t) {
  // "stop q1 ..." -> "stop q1"; "cancel_cb #3" -> "cancel_cb"
  if (t.rfind("cancel_cb ", 0) == 0) return "cancel_cb";
  const auto sp = t.find(' ', t.find(' ') + 1);
  return t.substr(0, sp);
}

void canonicalize(std::vector<Event>& ev, std::size_t begin, std::size_t end, int depth) {
  // Split [begin, end) into frames at `depth`.
  std::vector<std::pair<std::size_t, std::size_t>> frames;
  for (std::size_t i = begin; i < end;) {
    std::size_t j = i + 1;
    while (j < end && ev[j].depth > depth) ++j;
    frames.emplace_back(i, j);
    i = j;
  }
  for (auto [b, e] : frames)
    if (e > b + 1) canonicalize(ev, b + 1, e, depth + 1);
  // Sort runs of unordered frames of the same kind.
  std::vector<Event> out;
  out.reserve(end - begin);
  for (std::size_t f = 0; f < frames.size();) {
    const std::string& h = ev[frames[f].first].text;
    std::size_t g = f + 1;
    if (unordered_head(h)) {
      const std::string k = head_kind(h);
      while (g < frames.size() && unordered_head(ev[frames[g].first].text) &&
             head_kind(ev[frames[g].first].text) == k)
        ++g;
    }
    std::vector<std::vector<Event>> group;
    for (std::size_t x = f; x < g; ++x)
      group.emplace_back(ev.begin() + static_cast<std::ptrdiff_t>(frames[x].first),
                         ev.begin() + static_cast<std::ptrdiff_t>(frames[x].second));
    if (g - f > 1)
      std::sort(group.begin(), group.end(), [](const std::vector<Event>& a, const std::vector<Event>& b) {
        std::string sa, sb;
        for (const auto& e : a) sa += e.text + "\n";
        for (const auto& e : b) sb += e.text + "\n";
        return sa < sb;
      });
    for (auto& fr : group)
      for (auto& e : fr) out.push_back(std::move(e));
    f = g;
  }
  std::move(out.begin(), out.end(), ev.begin() + static_cast<std::ptrdiff_t>(begin));
}

bool same_events(const std::vector<Event>& a, const std::vector<Event>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].depth != b[i].depth || a[i].text != b[i].text) return false;
  return true;
}

std::string events_str(const std::vector<Event>& ev) {
  std::string s;
  for (const auto& e : ev) s += "      " + std::string(static_cast<std::size_t>(e.depth) * 2, ' ') + e.text + "\n";
  return s;
}

// ===========================================================================
// The system under test, as the driver sees it (requests named by packet id)

enum class Which { stop, stop_and_purge, drain, purge };

struct PacketSpec {
  RequestType type = RequestType::read;
  std::uint32_t length = 0;
  int file = -1;  // index into the side's file list
  std::uint32_t flags = 0;
};

class Side;

class Target {
 public:
  virtual ~Target() = default;
  virtual void setup(const Plan& plan, Side& side) = 0;
  virtual Status submit(int pkt, const PacketSpec& spec) = 0;
  virtual Status cancel(int pkt) = 0;
  virtual Status complete(int pkt, Status s, std::uint64_t info) = 0;
  virtual Status forward(int pkt, int q) = 0;
  virtual Status requeue(int pkt) = 0;
  virtual Status mark(int pkt, bool ex) = 0;
  virtual Status unmark(int pkt) = 0;
  virtual Status stop_ack(int pkt, bool requeue) = 0;
  virtual std::string query(int pkt) = 0;
  virtual Status retrieve_next(int q, int& out) = 0;
  virtual Status retrieve_by_file(int q, int file, int& out) = 0;
  virtual Status find(int q, int after_pkt, int file, int& out) = 0;
  virtual Status retrieve_found(int q, int tag_pkt, int& out) = 0;
  virtual Status start(int q) = 0;
  virtual Status control(int q, Which w, bool with_cb, std::uint32_t tag) = 0;
  virtual Status sync(int q, Which w) = 0;
  virtual Status ready_notify(int q, bool reg) = 0;
  virtual Status suspend() = 0;
  virtual Status resume() = 0;
  virtual Status remove() = 0;
  virtual std::uint64_t open_file() = 0;  // the new file's handle value
  virtual Status close_file(int file) = 0;
  virtual void set_fault(int mode, std::uint32_t n) = 0;  // 0 never, 1 always, 2 every n-th
  virtual Status assign_fp(int q, const FpPlan& f) = 0;
  virtual Snapshot snapshot() = 0;
  virtual int pending_power_acks() { return 0; }
};

// ===========================================================================
// The driver: the same code on both sides

struct PktInfo {
  PacketSpec spec;
  int done = 0;
  Status status = Status::pending;
  int owned_q = -1;  // the queue through which the driver owns it
  bool marked = false;
  bool canceled = false;
  int cancel_cbs = 0;
};

enum class Mode { normal, power, teardown };

class Side {
 public:
  Side(Target& t, const Plan& plan) : t_(t), plan_(plan) {}

  Target& t_;
  const Plan& plan_;
  std::vector<PktInfo> pkts;
  std::vector<int> files;  // index -> handle value (for the log)
  std::vector<Event> events;
  int depth = 0;
  Mode mode = Mode::normal;
  std::uint64_t seed = 0;
  std::unordered_map<std::uint64_t, std::uint32_t> counters;
  bool in_stop_cb = false;
  // Inside suspend (1: power-managed queues go down) or remove (2: all).
  int power_scope = 0;

  // A request the driver owns through q that the running power-down would
  // wait for without a stop callback to resolve it: q has no stop handler, or
  // the request is canceled (no stop callback for it).
  bool power_waits_for(int q, const PktInfo& p) const {
    if (power_scope == 0) return false;
    const QueuePlan& qp = plan_.queues[static_cast<std::size_t>(q)];
    if (power_scope == 1 && !qp.power_managed) return false;
    return !qp.on_stop || p.canceled;
  }

  struct FrameGuard {
    Side& s;
    FrameGuard(Side& side, std::string text) : s(side) {
      s.ev(std::move(text));
      ++s.depth;
    }
    ~FrameGuard() { --s.depth; }
  };

  void ev(std::string text) { events.push_back(Event{depth, std::move(text)}); }

  // A decision in [0, 100) for this key during this operation, the same on
  // both sides (independent of the order in which requests are visited).
  std::uint32_t decide(std::int64_t key, char kind) {
    const std::uint64_t k = (static_cast<std::uint64_t>(key) << 8) ^ static_cast<std::uint8_t>(kind);
    const std::uint32_t n = counters[k]++;
    return static_cast<std::uint32_t>(mix(seed ^ mix(k, 0x1234), n) % 100);
  }

  std::vector<int> owned_list() const {
    std::vector<int> v;
    for (std::size_t i = 0; i < pkts.size(); ++i)
      if (pkts[i].owned_q >= 0) v.push_back(static_cast<int>(i));
    return v;
  }
  int owned_in(int q, bool include_canceled) const {
    int n = 0;
    for (const auto& p : pkts)
      if (p.owned_q == q && (include_canceled || !p.canceled)) ++n;
    return n;
  }
  bool queue_pm(int q) const { return plan_.queues[static_cast<std::size_t>(q)].power_managed; }
  int nq() const { return static_cast<int>(plan_.queues.size()); }

  // ---- actions (recorded) ----
  Status do_complete(int pkt, Status s, std::uint64_t info) {
    const Status r = t_.complete(pkt, s, info);
    ev("> complete " + pk(pkt) + " " + st(s) + " " + std::to_string(info) + " = " + st(r));
    return r;
  }
  Status do_forward(int pkt, int q) {
    const int was = pkts[static_cast<std::size_t>(pkt)].owned_q;
    pkts[static_cast<std::size_t>(pkt)].owned_q = -1;
    const Status r = t_.forward(pkt, q);
    if (r != Status::success && pkts[static_cast<std::size_t>(pkt)].done == 0) pkts[static_cast<std::size_t>(pkt)].owned_q = was;
    ev("> forward " + pk(pkt) + " q" + std::to_string(q) + " = " + st(r));
    return r;
  }
  Status do_requeue(int pkt) {
    const int was = pkts[static_cast<std::size_t>(pkt)].owned_q;
    pkts[static_cast<std::size_t>(pkt)].owned_q = -1;
    const Status r = t_.requeue(pkt);
    if (r != Status::success && pkts[static_cast<std::size_t>(pkt)].done == 0) pkts[static_cast<std::size_t>(pkt)].owned_q = was;
    ev("> requeue " + pk(pkt) + " = " + st(r));
    return r;
  }
  Status do_mark(int pkt, bool ex) {
    PktInfo& p = pkts[static_cast<std::size_t>(pkt)];
    const int before = p.cancel_cbs;
    const Status r = t_.mark(pkt, ex);
    if (r == Status::success && p.cancel_cbs == before && p.done == 0) p.marked = true;
    ev(std::string("> mark_cancelable") + (ex ? "_ex " : " ") + pk(pkt) + " = " + st(r));
    return r;
  }
  Status do_unmark(int pkt) {
    const Status r = t_.unmark(pkt);
    if (r == Status::success || r == Status::cancelled) pkts[static_cast<std::size_t>(pkt)].marked = false;
    ev("> unmark " + pk(pkt) + " = " + st(r));
    return r;
  }
  Status do_cancel(int pkt) {
    const Status r = t_.cancel(pkt);
    if (r == Status::success) pkts[static_cast<std::size_t>(pkt)].canceled = true;
    ev("> cancel " + pk(pkt) + " = " + st(r));
    return r;
  }
  Status do_stop_ack(int pkt, bool requeue) {
    const int was = pkts[static_cast<std::size_t>(pkt)].owned_q;
    if (requeue) pkts[static_cast<std::size_t>(pkt)].owned_q = -1;
    const Status r = t_.stop_ack(pkt, requeue);
    if (requeue && r != Status::success && pkts[static_cast<std::size_t>(pkt)].done == 0)
      pkts[static_cast<std::size_t>(pkt)].owned_q = was;
    ev(std::string("> stop_acknowledge ") + pk(pkt) + (requeue ? " requeue" : "") + " = " + st(r));
    return r;
  }
  int do_retrieve(int q) {
    int out = -1;
    const Status r = t_.retrieve_next(q, out);
    if (r == Status::success && out >= 0) pkts[static_cast<std::size_t>(out)].owned_q = q;
    ev("> retrieve q" + std::to_string(q) + " = " + st(r) + (r == Status::success ? " " + pk(out) : ""));
    return r == Status::success ? out : -2;
  }

  // ---- callbacks from the target ----
  void on_io(int q, int pkt) {
    FrameGuard f(*this, "io q" + std::to_string(q) + " " + pk(pkt) +
                            (pkt >= 0 ? std::string(" ") + type_name(pkts[static_cast<std::size_t>(pkt)].spec.type) : ""));
    if (pkt < 0) return;
    PktInfo& p = pkts[static_cast<std::size_t>(pkt)];
    p.owned_q = q;
    // Delivered while suspend/remove runs (a parked packet served, a queue
    // not yet shut down): complete what the power-down would wait for.
    if (power_waits_for(q, p)) {
      (void)do_complete(pkt, Status::success, p.spec.length);
      return;
    }
    if (mode == Mode::teardown) return;
    const std::uint32_t d = decide(pkt, 'H');
    if (mode == Mode::power) {
      if (d < 50) (void)do_complete(pkt, Status::success, p.spec.length);
      return;
    }
    if (d < 45) return;  // hold
    if (d < 63) {
      (void)do_complete(pkt, Status::success, p.spec.length);
    } else if (d < 68) {
      static constexpr Status kErr[] = {Status::unsuccessful, Status::wdf_busy, Status::cancelled,
                                        Status::wdf_paused, Status::invalid_device_request};
      (void)do_complete(pkt, kErr[d % 5], d);
    } else if (d < 78) {
      const int dest = static_cast<int>((d * 7 + static_cast<std::uint32_t>(pkt)) % static_cast<std::uint32_t>(nq()));
      const Status r = do_forward(pkt, dest);
      if (r != Status::success && !is_usage_error(r) && pkts[static_cast<std::size_t>(pkt)].owned_q >= 0)
        (void)do_complete(pkt, r, 0);
    } else if (d < 85) {
      const Status r = do_mark(pkt, (d & 1) != 0);
      if (r == Status::cancelled) (void)do_complete(pkt, Status::cancelled, 0);
    } else if (d < 89) {
      (void)do_cancel(pkt);  // the OS cancels it while the handler runs: only flagged
    } else if (d < 92) {
      const int other = static_cast<int>(mix(seed, static_cast<std::uint64_t>(pkt)) % pkts.size());
      (void)do_cancel(other);
    } else if (d < 94) {
      // Marked, then canceled while this queue's loop is busy (the cancel
      // callback waits for the loop), then completed before that callback ran.
      if (do_mark(pkt, false) == Status::success) {
        (void)do_cancel(pkt);
        (void)do_complete(pkt, Status::success, 1);
      }
    } else if (d < 96) {
      const Status r = t_.sync(q, static_cast<Which>(d % 4));
      ev("> sync-from-handler q" + std::to_string(q) + " = " + st(r));
    } else if (d < 98) {
      (void)do_requeue(pkt);
    } else {
      (void)do_stop_ack(pkt, false);
    }
  }

  void on_coq(int q, int pkt) {
    FrameGuard f(*this, "coq q" + std::to_string(q) + " " + pk(pkt));
    if (pkt < 0) return;
    PktInfo& p = pkts[static_cast<std::size_t>(pkt)];
    p.owned_q = q;
    p.canceled = true;
    const std::uint32_t d = decide(pkt, 'Q');
    if (mode != Mode::normal || d < 70) (void)do_complete(pkt, Status::cancelled, 0);
  }

  void on_cancel(int pkt) {
    FrameGuard f(*this, "cancel_cb " + pk(pkt));
    if (pkt < 0) return;
    PktInfo& p = pkts[static_cast<std::size_t>(pkt)];
    p.canceled = true;
    p.marked = false;
    ++p.cancel_cbs;
    const std::uint32_t d = decide(pkt, 'C');
    if (mode != Mode::normal || d < 75) (void)do_complete(pkt, Status::cancelled, 0);
  }

  void on_stop(int q, int pkt, std::uint32_t flags) {
    FrameGuard f(*this, "stop q" + std::to_string(q) + " " + pk(pkt) + " flags=0x" + [&] {
      char b[16];
      std::snprintf(b, sizeof b, "%x", flags);
      return std::string(b);
    }());
    if (pkt < 0) return;
    bool cancelable = (flags & kStopRequestCancelable) != 0;
    if (mode == Mode::teardown) {
      (void)do_stop_ack(pkt, false);
      return;
    }
    const std::uint32_t d = decide(pkt, 'S');
    if (cancelable && (d & 1)) {
      const Status r = do_unmark(pkt);
      if (r == Status::success) cancelable = false;
    }
    const bool single = owned_in(q, false) == 1;
    Status r = Status::unsuccessful;
    if (single && d % 5 == 0 && !cancelable) {
      r = do_complete(pkt, Status::success, 2);
    } else if (single && d % 5 == 1 && !cancelable) {
      r = do_stop_ack(pkt, true);
    }
    if (r != Status::success) (void)do_stop_ack(pkt, false);
  }

  void on_resume(int q, int pkt) {
    FrameGuard f(*this, "resume q" + std::to_string(q) + " " + pk(pkt));
    if (pkt < 0 || mode != Mode::normal) return;
    if (decide(pkt, 'R') % 3 == 0 && !pkts[static_cast<std::size_t>(pkt)].marked) (void)do_mark(pkt, false);
  }

  void on_queue_cb(int q, int kind, std::uint32_t tag) {
    static const char* kName[] = {"stop_cb", "stop_and_purge_cb", "drain_cb", "purge_cb"};
    ev(std::string(kName[kind]) + " q" + std::to_string(q) + " t" + std::to_string(tag));
  }

  void on_ready(int q) {
    FrameGuard f(*this, "ready q" + std::to_string(q));
    if (mode != Mode::normal) return;
    const std::uint32_t d = decide(-1 - q, 'N');
    const int n = d < 40 ? 0 : d < 70 ? 1 : 8;
    for (int i = 0; i < n; ++i) {
      const int got = do_retrieve(q);
      if (got < 0) break;
      if (decide(got, 'n') < 50) (void)do_complete(got, Status::success, 3);
    }
  }

  void on_done(int pkt, Status s, std::uint64_t info) {
    ev("done " + pk(pkt) + " " + st(s) + " " + std::to_string(info));
    if (pkt < 0) return;
    PktInfo& p = pkts[static_cast<std::size_t>(pkt)];
    ++p.done;
    p.status = s;
    p.owned_q = -1;
    p.marked = false;
  }

  bool on_examine(int q, int pkt) {
    const bool use = decide(pkt, 'E') % 3 != 0;
    ev("examine q" + std::to_string(q) + " " + pk(pkt) + (use ? " use_reserved" : " fail"));
    return use;
  }
  Status on_alloc_request(int q, int pkt) {
    const Status s = decide(pkt, 'A') % 4 == 0 ? Status::insufficient_resources : Status::success;
    ev("alloc_request q" + std::to_string(q) + " " + pk(pkt) + " -> " + st(s));
    return s;
  }
  Status on_alloc_reserved(int q, int i, int fail_at) {
    const Status s = i == fail_at ? Status::insufficient_resources : Status::success;
    ev("alloc_reserved q" + std::to_string(q) + " " + std::to_string(i) + " -> " + st(s));
    return s;
  }

  // ---- operations ----
  int pick_any(std::uint8_t a, std::uint8_t b) const {
    if (pkts.empty()) return -1;
    if (a % 4 != 0) {
      std::vector<int> live;
      for (std::size_t i = 0; i < pkts.size(); ++i)
        if (pkts[i].done == 0) live.push_back(static_cast<int>(i));
      if (!live.empty()) return live[(static_cast<std::size_t>(a) * 256 + b) % live.size()];
    }
    return static_cast<int>((static_cast<std::size_t>(b) * 256 + a) % pkts.size());
  }
  int pick_owned(std::uint8_t a, std::uint8_t b) const {
    const auto v = owned_list();
    if (!v.empty() && a % 10 != 0) return v[(static_cast<std::size_t>(b) * 7 + a) % v.size()];
    return pick_any(a, b);
  }

  // Completes what would make a power-down wait for ever: canceled requests
  // the driver owns (no stop callback for them) and, for `all_queues` or the
  // power-managed ones, requests of queues without a stop handler.
  void settle_for_power(bool all_queues) {
    // Each round completes at least one packet, or ends: a completion may
    // deliver the next request of a queue without a stop handler.
    for (std::size_t round = 0; round <= pkts.size(); ++round) {
      bool any = false;
      for (int pkt : owned_list()) {
        PktInfo& p = pkts[static_cast<std::size_t>(pkt)];
        if (p.owned_q < 0) continue;
        const QueuePlan& qp = plan_.queues[static_cast<std::size_t>(p.owned_q)];
        const bool affected = all_queues || qp.power_managed;
        if (!(p.canceled || (affected && !qp.on_stop))) continue;
        if (p.marked) (void)do_unmark(pkt);
        (void)do_complete(pkt, Status::success, 4);
        any = true;
      }
      if (!any) return;
    }
  }

  void complete_all_owned() {
    for (std::size_t round = 0; round <= pkts.size(); ++round) {
      const auto v = owned_list();
      if (v.empty()) return;
      for (int pkt : v) {
        if (pkts[static_cast<std::size_t>(pkt)].owned_q < 0) continue;
        if (pkts[static_cast<std::size_t>(pkt)].marked) (void)do_unmark(pkt);
        (void)do_complete(pkt, Status::success, 5);
      }
    }
  }

  StepRecord apply(const Op& op, std::size_t index);
};

// Operation kinds. The first kOpKinds are what random episodes and fuzzer
// bytes produce; the teardown kinds follow.
enum OpKind : std::uint8_t {
  kSubmit, kCancel, kComplete, kForward, kRequeue, kRetrieveNext, kRetrieveByFile, kFindRetrieve,
  kMark, kUnmark, kStart, kStop, kDrain, kPurge, kStopAndPurge, kSync, kReadyNotify, kSuspend,
  kResume, kRemove, kOpenFile, kCloseFile, kFault, kAssignFp, kQuery, kStopAck,
  kOpKinds,
  // teardown
  kTdBegin = 100, kTdRemove, kTdCompleteAll, kTdPurgeAll, kTdCheck,
};

const char* kOpNames[] = {"submit", "cancel", "complete", "forward", "requeue", "retrieve_next",
                          "retrieve_by_file", "find_retrieve", "mark_cancelable", "unmark_cancelable",
                          "start", "stop", "drain", "purge", "stop_and_purge", "sync", "ready_notify",
                          "suspend", "resume", "remove", "open_file", "close_file", "fault", "assign_fp",
                          "query", "stop_acknowledge"};

StepRecord Side::apply(const Op& op, std::size_t index) {
  StepRecord rec;
  events.clear();
  counters.clear();
  depth = 0;
  seed = mix(op.aux, op.kind);
  (void)index;
  std::ostringstream o, res;
  const int q = nq() > 0 ? op.a % nq() : 0;
  const std::string qs = "q" + std::to_string(q);
  switch (op.kind) {
    case kSubmit: {
      PacketSpec s;
      static constexpr RequestType kTypes[] = {RequestType::read,  RequestType::write,
                                               RequestType::device_control, RequestType::internal_device_control,
                                               RequestType::read,  RequestType::write,
                                               RequestType::create, RequestType::flush};
      s.type = kTypes[op.a % 8];
      s.length = (op.a >> 3) % 8 == 0 ? 0 : 16u * (1u + op.c % 32);
      s.file = (op.b % 4 == 0 || files.empty()) ? -1 : static_cast<int>((op.b >> 2) % files.size());
      s.flags = ((op.b >> 6) & 1) ? static_cast<std::uint32_t>(kPacketPaging) : 0u;
      const int pkt = static_cast<int>(pkts.size());
      pkts.push_back(PktInfo{s});
      o << "submit " << pk(pkt) << " " << type_name(s.type) << " len=" << s.length
        << (s.file >= 0 ? " file=f" + std::to_string(files[static_cast<std::size_t>(s.file)]) : "")
        << (s.flags ? " paging" : "");
      res << st(t_.submit(pkt, s));
      break;
    }
    case kCancel: {
      const int pkt = pick_any(op.b, op.c);
      o << "cancel " << pk(pkt);
      if (pkt < 0) break;
      const Status r = t_.cancel(pkt);
      if (r == Status::success) pkts[static_cast<std::size_t>(pkt)].canceled = true;
      res << st(r);
      break;
    }
    case kComplete: {
      const int pkt = pick_owned(op.b, op.a);
      static constexpr Status kSt[] = {Status::success, Status::success, Status::success, Status::success,
                                       Status::success, Status::cancelled, Status::unsuccessful, Status::wdf_busy};
      const Status s = kSt[op.c % 8];
      const std::uint64_t info = op.c * 7u;
      o << "complete " << pk(pkt) << " " << st(s) << " " << info;
      if (pkt < 0) break;
      res << st(t_.complete(pkt, s, info));
      break;
    }
    case kForward: {
      const int pkt = pick_owned(op.b, op.c);
      const int dest = op.a % nq();
      o << "forward " << pk(pkt) << " q" << dest;
      if (pkt < 0) break;
      const int was = pkts[static_cast<std::size_t>(pkt)].owned_q;
      pkts[static_cast<std::size_t>(pkt)].owned_q = -1;
      const Status r = t_.forward(pkt, dest);
      if (r != Status::success && pkts[static_cast<std::size_t>(pkt)].done == 0) pkts[static_cast<std::size_t>(pkt)].owned_q = was;
      res << st(r);
      break;
    }
    case kRequeue: {
      const int pkt = pick_owned(op.b, op.c);
      o << "requeue " << pk(pkt);
      if (pkt < 0) break;
      const int was = pkts[static_cast<std::size_t>(pkt)].owned_q;
      pkts[static_cast<std::size_t>(pkt)].owned_q = -1;
      const Status r = t_.requeue(pkt);
      if (r != Status::success && pkts[static_cast<std::size_t>(pkt)].done == 0) pkts[static_cast<std::size_t>(pkt)].owned_q = was;
      res << st(r);
      break;
    }
    case kRetrieveNext: {
      o << "retrieve_next " << qs;
      int out = -1;
      const Status r = t_.retrieve_next(q, out);
      res << st(r);
      if (r == Status::success) {
        res << " " << pk(out);
        if (out >= 0) {
          pkts[static_cast<std::size_t>(out)].owned_q = q;
          if (op.b % 3 == 0) (void)do_complete(out, Status::success, 6);
        }
      }
      break;
    }
    case kRetrieveByFile: {
      const int fi = files.empty() || op.b % 4 == 0 ? -1 : static_cast<int>(op.b % files.size());
      o << "retrieve_by_file " << qs << " " << (fi < 0 ? std::string("nofile") : "f" + std::to_string(files[static_cast<std::size_t>(fi)]));
      int out = -1;
      const Status r = t_.retrieve_by_file(q, fi, out);
      res << st(r);
      if (r == Status::success) {
        res << " " << pk(out);
        if (out >= 0) pkts[static_cast<std::size_t>(out)].owned_q = q;
      }
      break;
    }
    case kFindRetrieve: {
      const int after = op.b % 3 == 0 ? pick_any(op.b, op.c) : -1;
      const int fi = files.empty() || op.c % 3 != 0 ? -1 : static_cast<int>(op.c % files.size());
      o << "find " << qs << " after=" << (after < 0 ? std::string("none") : pk(after)) << " "
        << (fi < 0 ? std::string("anyfile") : "f" + std::to_string(files[static_cast<std::size_t>(fi)]));
      int found = -1;
      const Status r = t_.find(q, after, fi, found);
      res << st(r);
      if (r == Status::success) res << " " << pk(found);
      int tag = -1;
      if (r == Status::success && (op.c & 1)) tag = found;
      else if (op.b % 5 == 1) tag = pick_any(op.c, op.b);
      if (tag >= 0) {
        int out = -1;
        const Status r2 = t_.retrieve_found(q, tag, out);
        res << "; retrieve_found " << pk(tag) << " = " << st(r2);
        if (r2 == Status::success) {
          res << " " << pk(out);
          if (out >= 0) pkts[static_cast<std::size_t>(out)].owned_q = q;
        }
      }
      break;
    }
    case kMark: {
      const int pkt = pick_owned(op.b, op.c);
      const bool ex = (op.a & 1) != 0;
      o << (ex ? "mark_cancelable_ex " : "mark_cancelable ") << pk(pkt);
      if (pkt < 0) break;
      PktInfo& p = pkts[static_cast<std::size_t>(pkt)];
      const int before = p.cancel_cbs;
      const Status r = t_.mark(pkt, ex);
      if (r == Status::success && p.cancel_cbs == before && p.done == 0) p.marked = true;
      res << st(r);
      if (r == Status::cancelled) (void)do_complete(pkt, Status::cancelled, 0);
      break;
    }
    case kUnmark: {
      const int pkt = pick_owned(op.b, op.c);
      o << "unmark_cancelable " << pk(pkt);
      if (pkt < 0) break;
      const Status r = t_.unmark(pkt);
      if (r == Status::success || r == Status::cancelled) pkts[static_cast<std::size_t>(pkt)].marked = false;
      res << st(r);
      break;
    }
    case kStart:
      o << "start " << qs;
      res << st(t_.start(q));
      break;
    case kStop:
    case kDrain:
    case kPurge:
    case kStopAndPurge: {
      const Which w = op.kind == kStop ? Which::stop : op.kind == kDrain ? Which::drain
                      : op.kind == kPurge ? Which::purge : Which::stop_and_purge;
      const bool cb = (op.b & 1) != 0;
      o << kOpNames[op.kind] << " " << qs << (cb ? " cb=t" + std::to_string(index) : "");
      res << st(t_.control(q, w, cb, static_cast<std::uint32_t>(index)));
      break;
    }
    case kSync: {
      const Which w = static_cast<Which>(op.b % 4);
      static const char* kSyncName[] = {"stop_synchronously", "stop_and_purge_synchronously",
                                        "drain_synchronously", "purge_synchronously"};
      o << kSyncName[static_cast<int>(w)] << " " << qs;
      // Only when the condition already holds (the call would wait otherwise).
      const Snapshot s = t_.snapshot();
      const QueueState& qs2 = s.queues[static_cast<std::size_t>(q)].state;
      const bool ok = w == Which::stop ? qs2.driver_owned == 0 : (qs2.driver_owned == 0 && qs2.queued == 0);
      if (!ok) {
        res << "skipped (would wait)";
        break;
      }
      const Status r = t_.sync(q, w);
      if (r == Status::pending) rec.driver_error = true;
      res << st(r);
      break;
    }
    case kReadyNotify: {
      const bool reg = (op.b % 3) != 0;
      o << "ready_notify " << qs << (reg ? " register" : " unregister");
      res << st(t_.ready_notify(q, reg));
      break;
    }
    case kSuspend: {
      o << "suspend";
      mode = Mode::power;
      settle_for_power(false);
      power_scope = 1;
      res << st(t_.suspend());
      power_scope = 0;
      mode = Mode::normal;
      if (t_.pending_power_acks() > 0) rec.driver_error = true;
      break;
    }
    case kResume:
      o << "resume";
      res << st(t_.resume());
      break;
    case kRemove:
    case kTdRemove: {
      o << (op.kind == kRemove ? "remove" : "teardown: remove");
      const Mode m = mode;
      if (m == Mode::normal) mode = Mode::power;
      settle_for_power(true);
      power_scope = 2;
      res << st(t_.remove());
      power_scope = 0;
      mode = m;
      if (t_.pending_power_acks() > 0) rec.driver_error = true;
      break;
    }
    case kOpenFile: {
      o << "open_file";
      const std::uint64_t f = t_.open_file();
      files.push_back(static_cast<int>(f));
      res << "f" << f;
      break;
    }
    case kCloseFile: {
      if (files.empty()) {
        o << "close_file (none)";
        break;
      }
      const int fi = static_cast<int>(op.b % files.size());
      o << "close_file f" << files[static_cast<std::size_t>(fi)];
      res << st(t_.close_file(fi));
      break;
    }
    case kFault: {
      const int m = op.b % 10 < 5 ? 0 : op.b % 10 < 7 ? 1 : 2;
      const std::uint32_t n = 2 + op.c % 4;
      o << "fault " << (m == 0 ? "never" : m == 1 ? "always" : "every " + std::to_string(n));
      t_.set_fault(m, n);
      break;
    }
    case kAssignFp: {
      FpPlan f = fp_plan_from(op.b, op.c);
      o << "assign_fp " << qs << " total=" << f.total << " policy=" << static_cast<int>(f.policy)
        << (f.examine ? " examine_cb" : "") << (f.alloc_req ? " alloc_request_cb" : "")
        << (f.alloc_rsv ? " alloc_reserved_cb(fail_at=" + std::to_string(f.rsv_fail_at) + ")" : "");
      res << st(t_.assign_fp(q, f));
      break;
    }
    case kQuery: {
      const int pkt = pick_any(op.b, op.c);
      o << "query " << pk(pkt);
      if (pkt >= 0) res << t_.query(pkt);
      break;
    }
    case kStopAck: {
      const int pkt = pick_owned(op.b, op.c);
      o << "stop_acknowledge " << pk(pkt) << ((op.a & 1) ? " requeue" : "");
      if (pkt < 0) break;
      res << st(t_.stop_ack(pkt, (op.a & 1) != 0));
      break;
    }
    case kTdBegin:
      o << "teardown: fault never, hold everything";
      mode = Mode::teardown;
      t_.set_fault(0, 1);
      break;
    case kTdCompleteAll:
      o << "teardown: complete every request the driver owns";
      complete_all_owned();
      break;
    case kTdPurgeAll:
      o << "teardown: purge every queue";
      for (int i = 0; i < nq(); ++i) res << "q" << i << "=" << st(t_.control(i, Which::purge, false, 0)) << " ";
      break;
    case kTdCheck: {
      o << "final check: every packet completed exactly once";
      int bad = 0;
      for (std::size_t i = 0; i < pkts.size(); ++i) {
        if (pkts[i].done != 1) {
          res << " " << pk(static_cast<int>(i)) << " completed " << pkts[i].done << "x;";
          ++bad;
        }
      }
      if (bad == 0) res << "ok (" << pkts.size() << " packets)";
      break;
    }
    default:
      o << "nop";
      break;
  }
  rec.op = o.str();
  rec.result = res.str();
  rec.events = std::move(events);
  events.clear();
  canonicalize(rec.events, 0, rec.events.size(), 0);
  rec.snap = t_.snapshot();
  return rec;
}

// ===========================================================================
// ioq

class IoqTarget final : public Target {
 public:
  ~IoqTarget() override {
    // Packets must outlive the device; the device is destroyed first.
    dev_.reset();
  }

  void setup(const Plan& plan, Side& side) override {
    side_ = &side;
    plan_ = &plan;
    DeviceConfig dc;
    dc.max_requests = plan.max_requests;
    dc.max_reserved_requests = 8;
    dc.control_device = plan.control;
    dc.alloc_hook = inj_.hook();
    dc.name = "diff";
    auto d = Device::create(dc);
    if (!d) {
      side.ev(std::string("device create failed: ") + d.error().message);
      return;
    }
    dev_ = std::move(*d);
    for (std::size_t i = 0; i < plan.queues.size(); ++i) {
      const QueuePlan& qp = plan.queues[i];
      qctx_.push_back(QCtx{this, static_cast<int>(i)});
      QueueConfig c;
      c.dispatch = qp.type;
      c.max_presented = qp.max_presented;
      c.power_managed = qp.pm;
      c.allow_zero_length = qp.allow_zero;
      c.default_queue = qp.is_default;
      if (qp.handlers & 1) c.on_read = &io;
      if (qp.handlers & 2) c.on_write = &io;
      if (qp.handlers & 4) c.on_device_control = &io;
      if (qp.handlers & 8) c.on_internal_device_control = &io;
      if (qp.handlers & 16) c.on_default = &io;
      if (qp.on_stop) c.on_stop = &stop_h;
      if (qp.on_resume) c.on_resume = &resume_h;
      if (qp.on_coq) c.on_canceled_on_queue = &coq_h;
      c.context = &qctx_.back();
      auto q = dev_->create_queue(c);
      side.ev("create q" + std::to_string(i) + " = " + (q ? std::string("success") : st(q.error().status)));
      qs_.push_back(q ? *q : nullptr);
    }
    for (std::size_t i = 0; i < plan.queues.size(); ++i)
      for (int t = 0; t < 5; ++t)
        if ((plan.queues[i].routes >> t) & 1)
          side.ev("route " + std::string(to_string(static_cast<RequestType>(t))) + " q" + std::to_string(i) +
                  " = " + st(dev_->configure_request_dispatching(*qs_[i], static_cast<RequestType>(t))));
    for (std::size_t i = 0; i < plan.queues.size(); ++i)
      if (plan.queues[i].fp.assign)
        side.ev("assign_fp q" + std::to_string(i) + " = " + st(assign_fp(static_cast<int>(i), plan.queues[i].fp)));
    side.ev("start = " + st(dev_->start()));
    for (int f = 0; f < 2; ++f) side.files.push_back(static_cast<int>(open_file()));
  }

  Status submit(int pkt, const PacketSpec& s) override {
    packets_.emplace_back();
    recs_.push_back(PktRec{this, pkt});
    Packet& p = packets_.back();
    p.type = s.type;
    p.length = s.length;
    p.flags = s.flags;
    p.file = s.file >= 0 ? files_[static_cast<std::size_t>(s.file)] : FileHandle{};
    p.on_complete = &done_h;
    p.user = &recs_.back();
    return dev_->submit(p);
  }
  Request req(int pkt) { return Request(packets_[static_cast<std::size_t>(pkt)].request); }
  Status cancel(int pkt) override { return dev_->cancel(packets_[static_cast<std::size_t>(pkt)]); }
  Status complete(int pkt, Status s, std::uint64_t info) override { return req(pkt).complete(s, info); }
  Status forward(int pkt, int q) override { return req(pkt).forward_to_queue(*qs_[static_cast<std::size_t>(q)]); }
  Status requeue(int pkt) override { return req(pkt).requeue(); }
  Status mark(int pkt, bool ex) override {
    return ex ? req(pkt).mark_cancelable_ex(&cancel_h, this) : req(pkt).mark_cancelable(&cancel_h, this);
  }
  Status unmark(int pkt) override { return req(pkt).unmark_cancelable(); }
  Status stop_ack(int pkt, bool rq) override { return req(pkt).stop_acknowledge(rq); }
  std::string query(int pkt) override {
    const Request r = req(pkt);
    return std::string("canceled=") + (r.is_canceled() ? "1" : "0") + " reserved=" + (r.is_reserved() ? "1" : "0") +
           " queue=" + std::to_string(index_of(r.queue())) + " valid=" + (r.validate() == Status::success ? "1" : "0");
  }
  Status retrieve_next(int q, int& out) override {
    Request r;
    const Status s = qs_[static_cast<std::size_t>(q)]->retrieve_next_request(r);
    out = s == Status::success ? pkt_of(r) : -1;
    return s;
  }
  Status retrieve_by_file(int q, int file, int& out) override {
    Request r;
    const FileHandle f = file >= 0 ? files_[static_cast<std::size_t>(file)] : FileHandle{};
    const Status s = qs_[static_cast<std::size_t>(q)]->retrieve_next_request_by_file_object(f, r);
    out = s == Status::success ? pkt_of(r) : -1;
    return s;
  }
  Status find(int q, int after, int file, int& out) override {
    Request r;
    const FileHandle f = file >= 0 ? files_[static_cast<std::size_t>(file)] : FileHandle{};
    const Status s = qs_[static_cast<std::size_t>(q)]->find_request(after >= 0 ? req(after) : Request{}, f, r);
    out = s == Status::success ? pkt_of(r) : -1;
    return s;
  }
  Status retrieve_found(int q, int tag, int& out) override {
    Request r;
    const Status s = qs_[static_cast<std::size_t>(q)]->retrieve_found_request(req(tag), r);
    out = s == Status::success ? pkt_of(r) : -1;
    return s;
  }
  Status start(int q) override { return qs_[static_cast<std::size_t>(q)]->start(); }
  Status control(int q, Which w, bool with_cb, std::uint32_t tag) override {
    Queue& qq = *qs_[static_cast<std::size_t>(q)];
    void* ctx = nullptr;
    QueueCallback cb = nullptr;
    if (with_cb) {
      cbctx_.push_back(CbCtx{this, q, static_cast<int>(w), tag});
      ctx = &cbctx_.back();
      cb = &queue_cb_h;
    }
    switch (w) {
      case Which::stop: return qq.stop(cb, ctx);
      case Which::stop_and_purge: return qq.stop_and_purge(cb, ctx);
      case Which::drain: return qq.drain(cb, ctx);
      case Which::purge: return qq.purge(cb, ctx);
    }
    return Status::unsuccessful;
  }
  Status sync(int q, Which w) override {
    Queue& qq = *qs_[static_cast<std::size_t>(q)];
    switch (w) {
      case Which::stop: return qq.stop_synchronously();
      case Which::stop_and_purge: return qq.stop_and_purge_synchronously();
      case Which::drain: return qq.drain_synchronously();
      case Which::purge: return qq.purge_synchronously();
    }
    return Status::unsuccessful;
  }
  Status ready_notify(int q, bool reg) override {
    return qs_[static_cast<std::size_t>(q)]->ready_notify(reg ? &ready_h : nullptr, &qctx_[static_cast<std::size_t>(q)]);
  }
  Status suspend() override { return dev_->suspend(); }
  Status resume() override { return dev_->resume(); }
  Status remove() override { return dev_->remove(); }
  std::uint64_t open_file() override {
    files_.push_back(dev_->open_file());
    return files_.back().value;
  }
  Status close_file(int f) override { return dev_->close_file(files_[static_cast<std::size_t>(f)]); }
  void set_fault(int mode, std::uint32_t n) override {
    if (mode == 0) inj_.set_never();
    else if (mode == 1) inj_.set_always();
    else inj_.set_every_nth(n);
  }
  Status assign_fp(int q, const FpPlan& f) override {
    fpctx_.push_back(FpCtx{this, q, f.rsv_fail_at, 0});
    ForwardProgressConfig c;
    c.total_reserved = f.total;
    c.policy = f.policy;
    if (f.examine) c.examine = &examine_h;
    if (f.alloc_req) c.allocate_request_resources = &alloc_req_h;
    if (f.alloc_rsv) c.allocate_reserved_resources = &alloc_rsv_h;
    c.context = &fpctx_.back();
    return qs_[static_cast<std::size_t>(q)]->assign_forward_progress_policy(c);
  }
  Snapshot snapshot() override {
    Snapshot s;
    for (Queue* q : qs_) s.queues.push_back(QueueSnap{q->get_state(), q->forward_progress_stats()});
    const VerifierCounts v = dev_->verifier();
    s.verifier = v.by_status;
    s.verifier[static_cast<std::size_t>(Status::usage_already_completed)] +=
        s.verifier[static_cast<std::size_t>(Status::invalid_handle)];
    s.verifier[static_cast<std::size_t>(Status::invalid_handle)] = 0;
    s.free_requests = dev_->stats().free_requests;
    s.power = dev_->power_state();
    return s;
  }

 private:
  struct QCtx {
    IoqTarget* t;
    int qi;
  };
  struct CbCtx {
    IoqTarget* t;
    int qi;
    int kind;
    std::uint32_t tag;
  };
  struct PktRec {
    IoqTarget* t;
    int id;
  };
  struct FpCtx {
    IoqTarget* t;
    int qi;
    int fail_at;
    int calls;
  };

  static int pkt_of(Request r) {
    Packet* p = r.packet();
    return p != nullptr ? static_cast<PktRec*>(p->user)->id : -1;
  }
  int index_of(const Queue* q) const {
    for (std::size_t i = 0; i < qs_.size(); ++i)
      if (qs_[i] == q) return static_cast<int>(i);
    return -1;
  }
  static QCtx& ctx(Queue& q) { return *static_cast<QCtx*>(q.context()); }
  static void io(Queue& q, Request r) { ctx(q).t->side_->on_io(ctx(q).qi, pkt_of(r)); }
  static void stop_h(Queue& q, Request r, std::uint32_t flags) { ctx(q).t->side_->on_stop(ctx(q).qi, pkt_of(r), flags); }
  static void resume_h(Queue& q, Request r) { ctx(q).t->side_->on_resume(ctx(q).qi, pkt_of(r)); }
  static void coq_h(Queue& q, Request r) { ctx(q).t->side_->on_coq(ctx(q).qi, pkt_of(r)); }
  static void cancel_h(Request r, void* c) noexcept { static_cast<IoqTarget*>(c)->side_->on_cancel(pkt_of(r)); }
  static void queue_cb_h(Queue&, void* c) {
    auto* x = static_cast<CbCtx*>(c);
    x->t->side_->on_queue_cb(x->qi, x->kind, x->tag);
  }
  static void ready_h(Queue&, void* c) {
    auto* x = static_cast<QCtx*>(c);
    x->t->side_->on_ready(x->qi);
  }
  static void done_h(Packet& p) noexcept {
    auto* rec = static_cast<PktRec*>(p.user);
    rec->t->side_->on_done(rec->id, p.status, p.information);
  }
  static ExamineResult examine_h(Queue&, Packet& p, void* c) noexcept {
    auto* x = static_cast<FpCtx*>(c);
    return x->t->side_->on_examine(x->qi, static_cast<PktRec*>(p.user)->id) ? ExamineResult::use_reserved
                                                                             : ExamineResult::fail;
  }
  static Status alloc_req_h(Queue&, Request r, void* c) {
    auto* x = static_cast<FpCtx*>(c);
    return x->t->side_->on_alloc_request(x->qi, pkt_of(r));
  }
  static Status alloc_rsv_h(Queue&, Request, void* c) {
    auto* x = static_cast<FpCtx*>(c);
    return x->t->side_->on_alloc_reserved(x->qi, x->calls++, x->fail_at);
  }

  FaultInjector inj_;
  std::deque<Packet> packets_;
  std::deque<PktRec> recs_;
  std::deque<QCtx> qctx_;
  std::deque<CbCtx> cbctx_;
  std::deque<FpCtx> fpctx_;
  std::vector<FileHandle> files_;
  Side* side_ = nullptr;
  const Plan* plan_ = nullptr;
  std::vector<Queue*> qs_;
  std::unique_ptr<Device> dev_;  // last: destroyed first
};

// ===========================================================================
// The model

class ModelTarget final : public Target {
 public:
  void setup(const Plan& plan, Side& side) override {
    side_ = &side;
    model::DeviceConfig dc;
    dc.max_requests = plan.max_requests;
    dc.max_reserved_requests = 8;
    dc.control_device = plan.control;
    dev_ = std::make_unique<model::Device>(dc);
    for (std::size_t i = 0; i < plan.queues.size(); ++i) {
      const QueuePlan& qp = plan.queues[i];
      const int qi = static_cast<int>(i);
      Side* s = &side;
      model::QueueConfig c;
      c.dispatch = qp.type;
      c.max_presented = qp.max_presented;
      c.power_managed = qp.pm;
      c.allow_zero_length = qp.allow_zero;
      c.default_queue = qp.is_default;
      auto io = [this, s, qi](model::Queue&, model::Request r) { s->on_io(qi, pkt_of(r)); };
      if (qp.handlers & 1) c.on_read = io;
      if (qp.handlers & 2) c.on_write = io;
      if (qp.handlers & 4) c.on_device_control = io;
      if (qp.handlers & 8) c.on_internal_device_control = io;
      if (qp.handlers & 16) c.on_default = io;
      if (qp.on_stop)
        c.on_stop = [this, s, qi](model::Queue&, model::Request r, std::uint32_t f) { s->on_stop(qi, pkt_of(r), f); };
      if (qp.on_resume) c.on_resume = [this, s, qi](model::Queue&, model::Request r) { s->on_resume(qi, pkt_of(r)); };
      if (qp.on_coq)
        c.on_canceled_on_queue = [this, s, qi](model::Queue&, model::Request r) { s->on_coq(qi, pkt_of(r)); };
      Status err = Status::success;
      model::Queue* q = dev_->create_queue(c, &err);
      side.ev("create q" + std::to_string(i) + " = " + st(err));
      qs_.push_back(q);
    }
    for (std::size_t i = 0; i < plan.queues.size(); ++i)
      for (int t = 0; t < 5; ++t)
        if ((plan.queues[i].routes >> t) & 1)
          side.ev("route " + std::string(to_string(static_cast<RequestType>(t))) + " q" + std::to_string(i) +
                  " = " + st(dev_->configure_request_dispatching(*qs_[i], static_cast<RequestType>(t))));
    for (std::size_t i = 0; i < plan.queues.size(); ++i)
      if (plan.queues[i].fp.assign)
        side.ev("assign_fp q" + std::to_string(i) + " = " + st(assign_fp(static_cast<int>(i), plan.queues[i].fp)));
    side.ev("start = " + st(dev_->start()));
    for (int f = 0; f < 2; ++f) side.files.push_back(static_cast<int>(open_file()));
  }

  Status submit(int pkt, const PacketSpec& s) override {
    packets_.emplace_back();
    recs_.push_back(PktRec{this, pkt});
    Packet& p = packets_.back();
    p.type = s.type;
    p.length = s.length;
    p.flags = s.flags;
    p.file = s.file >= 0 ? files_[static_cast<std::size_t>(s.file)] : FileHandle{};
    p.on_complete = &done_h;
    p.user = &recs_.back();
    return dev_->submit(p);
  }
  model::Request req(int pkt) { return model::Request(dev_.get(), packets_[static_cast<std::size_t>(pkt)].request); }
  Status cancel(int pkt) override { return dev_->cancel(packets_[static_cast<std::size_t>(pkt)]); }
  Status complete(int pkt, Status s, std::uint64_t info) override { return req(pkt).complete(s, info); }
  Status forward(int pkt, int q) override { return req(pkt).forward_to_queue(*qs_[static_cast<std::size_t>(q)]); }
  Status requeue(int pkt) override { return req(pkt).requeue(); }
  Status mark(int pkt, bool ex) override {
    Side* s = side_;
    auto cb = [this, s](model::Request r) { s->on_cancel(pkt_of(r)); };
    return ex ? req(pkt).mark_cancelable_ex(cb) : req(pkt).mark_cancelable(cb);
  }
  Status unmark(int pkt) override { return req(pkt).unmark_cancelable(); }
  Status stop_ack(int pkt, bool rq) override { return req(pkt).stop_acknowledge(rq); }
  std::string query(int pkt) override {
    const model::Request r = req(pkt);
    const model::Queue* q = r.queue();
    return std::string("canceled=") + (r.is_canceled() ? "1" : "0") + " reserved=" + (r.is_reserved() ? "1" : "0") +
           " queue=" + std::to_string(q ? static_cast<int>(q->index()) : -1) +
           " valid=" + (r.validate() == Status::success ? "1" : "0");
  }
  Status retrieve_next(int q, int& out) override {
    model::Request r;
    const Status s = qs_[static_cast<std::size_t>(q)]->retrieve_next_request(r);
    out = s == Status::success ? pkt_of(r) : -1;
    return s;
  }
  Status retrieve_by_file(int q, int file, int& out) override {
    model::Request r;
    const FileHandle f = file >= 0 ? files_[static_cast<std::size_t>(file)] : FileHandle{};
    const Status s = qs_[static_cast<std::size_t>(q)]->retrieve_next_request_by_file_object(f, r);
    out = s == Status::success ? pkt_of(r) : -1;
    return s;
  }
  Status find(int q, int after, int file, int& out) override {
    model::Request r;
    const FileHandle f = file >= 0 ? files_[static_cast<std::size_t>(file)] : FileHandle{};
    const Status s = qs_[static_cast<std::size_t>(q)]->find_request(after >= 0 ? req(after) : model::Request{}, f, r);
    out = s == Status::success ? pkt_of(r) : -1;
    return s;
  }
  Status retrieve_found(int q, int tag, int& out) override {
    model::Request r;
    const Status s = qs_[static_cast<std::size_t>(q)]->retrieve_found_request(req(tag), r);
    out = s == Status::success ? pkt_of(r) : -1;
    return s;
  }
  Status start(int q) override { return qs_[static_cast<std::size_t>(q)]->start(); }
  Status control(int q, Which w, bool with_cb, std::uint32_t tag) override {
    model::Queue& qq = *qs_[static_cast<std::size_t>(q)];
    model::QueueCallback cb;
    if (with_cb) {
      Side* s = side_;
      const int kind = static_cast<int>(w);
      cb = [s, q, kind, tag](model::Queue&) { s->on_queue_cb(q, kind, tag); };
    }
    switch (w) {
      case Which::stop: return qq.stop(cb);
      case Which::stop_and_purge: return qq.stop_and_purge(cb);
      case Which::drain: return qq.drain(cb);
      case Which::purge: return qq.purge(cb);
    }
    return Status::unsuccessful;
  }
  Status sync(int q, Which w) override {
    model::Queue& qq = *qs_[static_cast<std::size_t>(q)];
    switch (w) {
      case Which::stop: return qq.stop_synchronously();
      case Which::stop_and_purge: return qq.stop_and_purge_synchronously();
      case Which::drain: return qq.drain_synchronously();
      case Which::purge: return qq.purge_synchronously();
    }
    return Status::unsuccessful;
  }
  Status ready_notify(int q, bool reg) override {
    Side* s = side_;
    if (!reg) return qs_[static_cast<std::size_t>(q)]->ready_notify(nullptr);
    return qs_[static_cast<std::size_t>(q)]->ready_notify([s, q](model::Queue&) { s->on_ready(q); });
  }
  Status suspend() override { return dev_->suspend(); }
  Status resume() override { return dev_->resume(); }
  Status remove() override { return dev_->remove(); }
  std::uint64_t open_file() override {
    files_.push_back(dev_->open_file());
    return files_.back().value;
  }
  Status close_file(int f) override { return dev_->close_file(files_[static_cast<std::size_t>(f)]); }
  void set_fault(int mode, std::uint32_t n) override {
    dev_->set_fault(mode == 0 ? model::FaultMode::never : mode == 1 ? model::FaultMode::always : model::FaultMode::every_nth, n);
  }
  Status assign_fp(int q, const FpPlan& f) override {
    Side* s = side_;
    model::ForwardProgressConfig c;
    c.total_reserved = f.total;
    c.policy = f.policy;
    if (f.examine) c.examine = [this, s, q](model::Queue&, Packet& p) {
      return s->on_examine(q, id_of(p)) ? ExamineResult::use_reserved : ExamineResult::fail;
    };
    if (f.alloc_req) c.allocate_request_resources = [this, s, q](model::Queue&, model::Request r) {
      return s->on_alloc_request(q, pkt_of(r));
    };
    if (f.alloc_rsv) {
      auto calls = std::make_shared<int>(0);
      const int fail_at = f.rsv_fail_at;
      c.allocate_reserved_resources = [s, q, calls, fail_at](model::Queue&, model::Request) {
        return s->on_alloc_reserved(q, (*calls)++, fail_at);
      };
    }
    return qs_[static_cast<std::size_t>(q)]->assign_forward_progress_policy(c);
  }
  Snapshot snapshot() override {
    Snapshot s;
    for (model::Queue* q : qs_) s.queues.push_back(QueueSnap{q->get_state(), q->forward_progress_stats()});
    s.verifier = dev_->verifier().by_status;
    s.verifier[static_cast<std::size_t>(Status::usage_already_completed)] +=
        s.verifier[static_cast<std::size_t>(Status::invalid_handle)];
    s.verifier[static_cast<std::size_t>(Status::invalid_handle)] = 0;
    s.free_requests = dev_->free_requests();
    s.power = dev_->power_state();
    return s;
  }
  int pending_power_acks() override { return dev_->pending_power_acks(); }

 private:
  struct PktRec {
    ModelTarget* t;
    int id;
  };
  static int id_of(const Packet& p) { return static_cast<const PktRec*>(p.user)->id; }
  int pkt_of(model::Request r) const {
    const Packet* p = r.packet();
    return p != nullptr ? id_of(*p) : -1;
  }
  static void done_h(Packet& p) noexcept {
    auto* rec = static_cast<PktRec*>(p.user);
    rec->t->side_->on_done(rec->id, p.status, p.information);
  }

  std::deque<Packet> packets_;
  std::deque<PktRec> recs_;
  std::vector<FileHandle> files_;
  Side* side_ = nullptr;
  std::vector<model::Queue*> qs_;
  std::unique_ptr<model::Device> dev_;
};

// ===========================================================================
// Lockstep

struct Lockstep {
  explicit Lockstep(const Episode& e) : plan(make_plan(e.config)), ms(mt, plan), is(it, plan) {}
  Plan plan;
  ModelTarget mt;
  IoqTarget it;
  Side ms;
  Side is;
};

std::string step_report(std::size_t index, const StepRecord& m, const StepRecord& i) {
  std::ostringstream o;
  o << "step " << index << ": " << m.op << "\n";
  if (m.op != i.op) o << "  (ioq read the operation as: " << i.op << ")\n";
  o << "  model: " << m.result << "\n" << events_str(m.events) << "    " << snap_str(m.snap);
  o << "  ioq:   " << i.result << "\n" << events_str(i.events) << "    " << snap_str(i.snap);
  // The first differing event, to point at.
  const std::size_t n = std::min(m.events.size(), i.events.size());
  std::size_t k = 0;
  while (k < n && m.events[k].depth == i.events[k].depth && m.events[k].text == i.events[k].text) ++k;
  if (m.result != i.result) o << "  => the operation's results differ\n";
  if (k < m.events.size() || k < i.events.size())
    o << "  => events differ from event " << k << ": model '" << (k < m.events.size() ? m.events[k].text : "<none>")
      << "' vs ioq '" << (k < i.events.size() ? i.events[k].text : "<none>") << "'\n";
  if (!(m.snap == i.snap)) o << "  => the state snapshots differ\n";
  return o.str();
}

bool same(const StepRecord& a, const StepRecord& b) {
  return a.op == b.op && a.result == b.result && same_events(a.events, b.events) && a.snap == b.snap;
}

// The watchdog: a hang of ioq (a blocking call that the model says would not
// block) is reported instead of hanging the test.
std::atomic<std::uint64_t> g_progress{0};
std::mutex g_current_mu;
const Episode* g_current_episode = nullptr;  // under g_current_mu
std::size_t g_current_step = 0;

void start_watchdog() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::thread([] {
      std::uint64_t last = ~0ULL;
      int still = 0;
      for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        const std::uint64_t now = g_progress.load(std::memory_order_relaxed);
        if (now == last && now != 0) {
          if (++still >= 60) {
            std::lock_guard lock(g_current_mu);
            std::fprintf(stderr,
                         "\nioq differential: no progress for 60 s - ioq blocks where the model does not.\n"
                         "step %zu of IOQ_DIFF_REPLAY=%s\n",
                         g_current_step, g_current_episode ? to_hex(encode(*g_current_episode)).c_str() : "?");
            std::fflush(stderr);
            std::abort();
          }
        } else {
          still = 0;
        }
        last = now;
      }
    }).detach();
  });
}

std::vector<Op> teardown_ops() {
  return {Op{kTdBegin}, Op{kTdRemove}, Op{kTdCompleteAll}, Op{kTdPurgeAll}, Op{kTdCompleteAll}, Op{kTdCheck}};
}

}  // namespace

// ===========================================================================
// Public entry points

Episode decode(const std::uint8_t* data, std::size_t size) {
  Episode e;
  for (std::size_t i = 0; i < kConfigBytes && i < size; ++i) e.config[i] = data[i];
  for (std::size_t off = kConfigBytes; off + kOpBytes <= size; off += kOpBytes) {
    Op op;
    op.kind = static_cast<std::uint8_t>(data[off] % kOpKinds);
    op.a = data[off + 1];
    op.b = data[off + 2];
    op.c = data[off + 3];
    op.aux = static_cast<std::uint32_t>(data[off + 4]) | (static_cast<std::uint32_t>(data[off + 5]) << 8) |
             (static_cast<std::uint32_t>(data[off + 6]) << 16) | (static_cast<std::uint32_t>(data[off + 7]) << 24);
    e.ops.push_back(op);
  }
  return e;
}

std::vector<std::uint8_t> encode(const Episode& e) {
  std::vector<std::uint8_t> out(e.config.begin(), e.config.end());
  for (const Op& op : e.ops) {
    out.push_back(op.kind);
    out.push_back(op.a);
    out.push_back(op.b);
    out.push_back(op.c);
    for (int k = 0; k < 4; ++k) out.push_back(static_cast<std::uint8_t>(op.aux >> (8 * k)));
  }
  return out;
}

std::string to_hex(const std::vector<std::uint8_t>& bytes) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (std::uint8_t b : bytes) {
    s += d[b >> 4];
    s += d[b & 15];
  }
  return s;
}

std::optional<std::vector<std::uint8_t>> from_hex(std::string_view hex) {
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (hex.size() % 2) return std::nullopt;
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int h = val(hex[i]), l = val(hex[i + 1]);
    if (h < 0 || l < 0) return std::nullopt;
    out.push_back(static_cast<std::uint8_t>(h * 16 + l));
  }
  return out;
}

Episode random_episode(std::uint64_t& rng, std::size_t ops) {
  Episode e;
  for (auto& b : e.config) b = static_cast<std::uint8_t>(splitmix(rng));
  // Weights per operation kind (per mille).
  static constexpr std::uint16_t kWeight[kOpKinds] = {
      /*submit*/ 210, /*cancel*/ 60, /*complete*/ 140, /*forward*/ 55, /*requeue*/ 35, /*retrieve_next*/ 80,
      /*by_file*/ 25, /*find*/ 35, /*mark*/ 50, /*unmark*/ 30, /*start*/ 55, /*stop*/ 30, /*drain*/ 15,
      /*purge*/ 15, /*stop_and_purge*/ 15, /*sync*/ 10, /*ready*/ 20, /*suspend*/ 14, /*resume*/ 18,
      /*remove*/ 1, /*open*/ 8, /*close*/ 8, /*fault*/ 25, /*assign_fp*/ 6, /*query*/ 20, /*stop_ack*/ 5};
  std::uint32_t total = 0;
  for (auto w : kWeight) total += w;
  for (std::size_t i = 0; i < ops; ++i) {
    const std::uint64_t r = splitmix(rng);
    std::uint32_t pick = static_cast<std::uint32_t>(r % total);
    std::uint8_t kind = 0;
    while (pick >= kWeight[kind]) pick -= kWeight[kind++];
    Op op;
    op.kind = kind;
    op.a = static_cast<std::uint8_t>(r >> 16);
    op.b = static_cast<std::uint8_t>(r >> 24);
    op.c = static_cast<std::uint8_t>(r >> 32);
    op.aux = static_cast<std::uint32_t>(splitmix(rng));
    e.ops.push_back(op);
  }
  return e;
}

RunResult run_episode(const Episode& e) {
  start_watchdog();
  struct Clear {
    ~Clear() {
      std::lock_guard lock(g_current_mu);
      g_current_episode = nullptr;
    }
  } clear_on_return;
  RunResult out;
  auto ls = std::make_unique<Lockstep>(e);
  // Setup: both sides build the same device and compare what happened.
  {
    ls->ms.events.clear();
    ls->is.events.clear();
    ls->mt.setup(ls->plan, ls->ms);
    ls->it.setup(ls->plan, ls->is);
    StepRecord m, i;
    m.op = i.op = "setup";
    m.events = std::move(ls->ms.events);
    i.events = std::move(ls->is.events);
    m.snap = ls->mt.snapshot();
    i.snap = ls->it.snapshot();
    ++out.steps;
    if (!same(m, i)) {
      out.divergence = Divergence{e.ops.size(), step_report(0, m, i)};
      return out;
    }
  }
  std::vector<Op> all = e.ops;
  const std::size_t nops = all.size();
  for (const Op& op : teardown_ops()) all.push_back(op);
  for (std::size_t k = 0; k < all.size(); ++k) {
    const StepRecord m = ls->ms.apply(all[k], k);
    if (m.driver_error) {
      out.driver_error = true;
      out.driver_error_text = "step " + std::to_string(k) + ": " + m.op + " = " + m.result +
                              ": the model says this call would block (a driver bug)\n" + events_str(m.events);
      return out;
    }
    {
      std::lock_guard lock(g_current_mu);
      g_current_episode = &e;
      g_current_step = k;
    }
    g_progress.fetch_add(1, std::memory_order_relaxed);
    const StepRecord i = ls->is.apply(all[k], k);
    ++out.steps;
    if (!same(m, i)) {
      out.divergence = Divergence{k, step_report(k, m, i)};
      return out;
    }
    if (all[k].kind == kTdCheck && m.result.rfind("ok", 0) != 0) {
      out.divergence = Divergence{k, "final check failed on both sides: " + m.result + "\n" + step_report(k, m, i)};
      return out;
    }
    (void)nops;
  }
  return out;
}

Episode shrink(const Episode& e, std::size_t max_runs) {
  Episode best = e;
  std::size_t runs = 0;
  auto fails = [&](const Episode& c) {
    ++runs;
    const RunResult r = run_episode(c);
    return r.divergence.has_value() || r.driver_error;
  };
  // Cut after the diverging step first.
  {
    const RunResult r = run_episode(best);
    ++runs;
    if (r.divergence && r.divergence->step < best.ops.size()) best.ops.resize(r.divergence->step + 1);
  }
  std::size_t chunk = std::max<std::size_t>(1, best.ops.size() / 2);
  while (runs < max_runs) {
    bool removed = false;
    for (std::size_t start = 0; start < best.ops.size() && runs < max_runs;) {
      Episode c = best;
      const std::size_t end = std::min(best.ops.size(), start + chunk);
      c.ops.erase(c.ops.begin() + static_cast<std::ptrdiff_t>(start), c.ops.begin() + static_cast<std::ptrdiff_t>(end));
      if (fails(c)) {
        best = std::move(c);
        removed = true;
      } else {
        start += chunk;
      }
    }
    if (chunk == 1 && !removed) break;
    if (!removed) chunk = std::max<std::size_t>(1, chunk / 2);
  }
  return best;
}

std::string describe(const Episode& e) {
  std::ostringstream o;
  const Plan plan = make_plan(e.config);
  o << describe_plan(plan);
  Lockstep ls(e);
  ls.ms.events.clear();
  ls.mt.setup(ls.plan, ls.ms);
  std::vector<Op> all = e.ops;
  for (const Op& op : teardown_ops()) all.push_back(op);
  for (std::size_t k = 0; k < all.size(); ++k) {
    const StepRecord m = ls.ms.apply(all[k], k);
    o << "  [" << k << "] " << m.op << (m.result.empty() ? "" : " = " + m.result) << "\n" << events_str(m.events);
    if (m.driver_error) break;
  }
  return o.str();
}

std::string report(const std::string& header, const Episode& minimal, const RunResult& r) {
  std::ostringstream o;
  o << header << "\n";
  o << "replay (also a fuzzer input, as bytes): IOQ_DIFF_REPLAY=" << to_hex(encode(minimal)) << "\n";
  o << "minimal operation log (" << minimal.ops.size() << " operations; the model's results and events):\n";
  o << describe(minimal);
  if (r.driver_error) o << "DRIVER ERROR: " << r.driver_error_text << "\n";
  if (r.divergence) o << "DIVERGENCE at " << r.divergence->what;
  return o.str();
}

}  // namespace ioq::diff
