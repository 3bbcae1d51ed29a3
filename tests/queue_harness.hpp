// Test scaffolding shared by the queue-model suites: packets that record their
// completion, and a small recorder of callback events in order.
#pragma once

#include <ioq/ioq.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ioq::test {

// A packet that remembers how (and how often) it completed.
struct TrackedPacket {
  Packet packet;
  std::atomic<int> completions{0};
  std::atomic<Status> status{Status::pending};
  std::atomic<std::uint64_t> information{0};

  static void on_complete(Packet& p) noexcept {
    auto* self = static_cast<TrackedPacket*>(p.user);
    self->status.store(p.status);
    self->information.store(p.information);
    self->completions.fetch_add(1);
  }
  bool done() const { return completions.load() > 0; }
};

// A pool of tracked packets with stable addresses.
class Packets {
 public:
  TrackedPacket& make(RequestType type, std::uint32_t length = 512, FileHandle file = {},
                      std::uint32_t ioctl = 0) {
    auto& t = *pool_.emplace_back(std::make_unique<TrackedPacket>());
    t.packet.type = type;
    t.packet.length = length;
    t.packet.file = file;
    t.packet.ioctl_code = ioctl;
    t.packet.on_complete = &TrackedPacket::on_complete;
    t.packet.user = &t;
    return t;
  }
  // Every packet completed exactly once.
  void expect_all_completed_once() const {
    for (const auto& p : pool_) EXPECT_EQ(p->completions.load(), 1);
  }
  std::size_t size() const { return pool_.size(); }
  TrackedPacket& operator[](std::size_t i) { return *pool_[i]; }

 private:
  std::deque<std::unique_ptr<TrackedPacket>> pool_;
};

// Requests a handler holds cancelable, each finished later by whichever
// comes first: a completer thread (finish_one: unmark, complete success) or
// its cancel callback (complete cancelled). `report` is called with a
// description of anything unexpected.
class HeldRequests {
 public:
  using Report = void (*)(const char* what);
  explicit HeldRequests(Report report) : report_(report) {}

  // From a handler that owns r: marks it cancelable and queues it for the
  // completer. Returns mark_cancelable's status.
  Status hold(Request r) {
    Held* h;
    {
      std::lock_guard lock(mu_);
      h = all_.emplace_back(std::make_unique<Held>()).get();
      h->owner = this;
      h->r = r;
    }
    std::lock_guard hl(h->m);
    const Status s = r.mark_cancelable(&HeldRequests::cancelled, h);
    if (s == Status::success) {
      std::lock_guard lock(mu_);
      pending_.push_back(h);
    }
    return s;
  }

  // Finishes the oldest held request; false when none was waiting.
  bool finish_one() {
    Held* h = nullptr;
    {
      std::lock_guard lock(mu_);
      if (pending_.empty()) return false;
      h = pending_.front();
      pending_.pop_front();
    }
    std::lock_guard hl(h->m);
    if (h->finished) return true;
    const Status u = h->r.unmark_cancelable();
    if (u == Status::success) {
      h->finished = true;
      if (h->r.complete(Status::success) != Status::success) report_("held request would not complete");
    } else if (u != Status::cancelled) {
      report_("unmark_cancelable gave an unexpected status");
    }
    return true;
  }

  // The completer thread's loop, until `stop`.
  void run_completer(const std::atomic<bool>& stop) {
    while (!stop.load())
      if (!finish_one()) std::this_thread::yield();
  }

  void clear() {
    std::lock_guard lock(mu_);
    pending_.clear();
    all_.clear();
  }

 private:
  struct Held {
    HeldRequests* owner = nullptr;
    Request r;
    std::mutex m;
    bool finished = false;
  };
  static void cancelled(Request r, void* ctx) noexcept {
    auto* h = static_cast<Held*>(ctx);
    std::lock_guard lock(h->m);
    h->finished = true;
    if (r.complete(Status::cancelled) != Status::success) h->owner->report_("cancel callback could not complete");
  }

  Report report_;
  std::mutex mu_;
  std::deque<std::unique_ptr<Held>> all_;  // owns every entry until clear()
  std::deque<Held*> pending_;
};

// Records named events in order, from any thread.
class Events {
 public:
  void add(std::string e) {
    std::lock_guard lock(mu_);
    events_.push_back(std::move(e));
  }
  std::vector<std::string> take() {
    std::lock_guard lock(mu_);
    return std::exchange(events_, {});
  }
  std::vector<std::string> snapshot() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::size_t count(const std::string& e) const {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& x : events_) n += (x == e);
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> events_;
};

inline std::unique_ptr<Device> make_device(DeviceConfig cfg = {}) {
  auto d = Device::create(cfg);
  EXPECT_TRUE(d.has_value()) << (d ? "" : d.error().message);
  return d ? std::move(*d) : nullptr;
}

inline Queue* make_queue(Device& d, const QueueConfig& cfg) {
  auto q = d.create_queue(cfg);
  EXPECT_TRUE(q.has_value()) << (q ? "" : q.error().message);
  return q ? *q : nullptr;
}

// Polls `pred` until it holds (true) or `limit` passes (false): for tests
// that wait on other threads (reactors, workers, the kernel) with a bound, so
// a lost completion fails the test instead of hanging it.
template <typename Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

}  // namespace ioq::test
