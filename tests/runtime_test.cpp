// The per-core runtime: mailboxes, reactors that park and wake, and devices
// that dispatch per core (shards of a parallel queue, home cores of
// sequential and manual queues), keeping the queue guarantees.
#include <ioq/ioq.hpp>
#include <ioq/runtime.hpp>
#include <ioq/target.hpp>

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <mutex>
#include <thread>
#include <vector>

#include "queue_harness.hpp"

namespace ioq {
namespace {

using namespace std::chrono_literals;
using test::Packets;

std::unique_ptr<Runtime> make_runtime(RuntimeConfig cfg) {
  auto rt = Runtime::create(cfg);
  EXPECT_TRUE(rt.has_value()) << (rt ? "" : rt.error().message);
  return rt ? std::move(*rt) : nullptr;
}

using test::wait_until;

struct CountingTask {
  Task task;
  std::atomic<int>* runs;
  std::atomic<std::uint32_t>* core_seen;
  static void run(Task& t) noexcept {
    auto& self = reinterpret_cast<CountingTask&>(t);
    self.core_seen->store(Runtime::current_core());
    self.runs->fetch_add(1);
  }
};

TEST(Runtime, MailboxRunsEveryPostOnceInOrderPerPoster) {
  auto rt = make_runtime({.cores = 2, .reactors = false});
  constexpr int kPosters = 4, kEach = 20000;
  struct Ordered {
    Task task;
    int poster = 0;
    int seq = 0;
    std::vector<int>* last;  // last seq seen per poster (core 1's thread only)
    std::atomic<int>* violations;
    std::atomic<int>* runs;
    static void run(Task& t) noexcept {
      auto& o = reinterpret_cast<Ordered&>(t);
      if ((*o.last)[static_cast<std::size_t>(o.poster)] >= o.seq) o.violations->fetch_add(1);
      (*o.last)[static_cast<std::size_t>(o.poster)] = o.seq;
      o.runs->fetch_add(1);
    }
  };
  std::vector<int> last(kPosters, -1);
  std::atomic<int> violations{0}, runs{0};
  std::vector<std::unique_ptr<Ordered[]>> tasks;
  for (int p = 0; p < kPosters; ++p) tasks.push_back(std::make_unique<Ordered[]>(kEach));
  std::atomic<bool> posting_done{false};
  std::thread consumer([&] {
    rt->bind_thread(1);
    while (!posting_done.load() || runs.load() < kPosters * kEach) rt->poll(1);
  });
  std::vector<std::thread> posters;
  for (int p = 0; p < kPosters; ++p) {
    posters.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i) {
        Ordered& o = tasks[static_cast<std::size_t>(p)][i];
        o.task.run = Ordered::run;
        o.poster = p;
        o.seq = i;
        o.last = &last;
        o.violations = &violations;
        o.runs = &runs;
        rt->post(1, o.task);
      }
    });
  }
  for (auto& t : posters) t.join();
  posting_done = true;
  consumer.join();
  EXPECT_EQ(runs.load(), kPosters * kEach);
  EXPECT_EQ(violations.load(), 0) << "one poster's tasks run in the order posted";
  EXPECT_EQ(rt->core_counters(1).tasks, static_cast<std::uint64_t>(kPosters * kEach));
  EXPECT_EQ(rt->core_counters(0).tasks, 0u);
}

TEST(Runtime, ReactorsRunTasksOnTheirCoreAndParkWhenIdle) {
  auto rt = make_runtime({.cores = 2, .spin_us = 100});
  ASSERT_TRUE(rt->has_reactors());
  for (std::uint32_t core = 0; core < 2; ++core) {
    std::atomic<int> runs{0};
    std::atomic<std::uint32_t> seen{kNoCore};
    CountingTask t{{CountingTask::run}, &runs, &seen};
    // Let the reactor go idle and park first, so the post has to wake it.
    ASSERT_TRUE(wait_until([&] { return rt->core_counters(core).parks > 0; })) << "an idle reactor parks";
    rt->post(core, t.task);
    ASSERT_TRUE(wait_until([&] { return runs.load() == 1; })) << "a post wakes the parked reactor";
    EXPECT_EQ(seen.load(), core) << "the task ran on the core it was posted to";
  }
  EXPECT_GE(rt->core_counters(0).wakeups + rt->core_counters(1).wakeups, 1u);
  EXPECT_EQ(Runtime::current_core(), kNoCore) << "the test thread serves no core";
}

TEST(Runtime, IdleRuntimeCostsAlmostNoCpu) {
  auto rt = make_runtime({.cores = 2, .spin_us = 50});
  std::this_thread::sleep_for(50ms);  // past the spin: both reactors park
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(500ms);
  getrusage(RUSAGE_SELF, &after);
  auto us = [](const rusage& r) {
    return r.ru_utime.tv_sec * 1000000L + r.ru_utime.tv_usec + r.ru_stime.tv_sec * 1000000L + r.ru_stime.tv_usec;
  };
  const long cpu_us = us(after) - us(before);
  // Two parked reactors over 500 ms: well under 1% of a core in practice;
  // the bound leaves room for a noisy machine (5 ms = 1% of 500 ms).
  EXPECT_LT(cpu_us, 5000) << "idle CPU " << cpu_us << " us in 500 ms";
}

TEST(Runtime, PrometheusTextNamesEveryCore) {
  auto rt = make_runtime({.cores = 2, .reactors = false, .name = "t"});
  rt->poll(0);
  const std::string text = rt->prometheus();
  EXPECT_NE(text.find("# TYPE ioq_core_polls_total counter"), std::string::npos);
  EXPECT_NE(text.find("ioq_core_polls_total{runtime=\"t\",core=\"0\"} 1"), std::string::npos);
  EXPECT_NE(text.find("ioq_core_polls_total{runtime=\"t\",core=\"1\"} 0"), std::string::npos);
}

// ---- devices on a runtime ----

struct CoreLog {
  std::mutex m;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> delivered;  // (length, core)
};

TEST(PerCore, ParallelQueueDeliversOnTheArrivalCore) {
  auto rt = make_runtime({.cores = 2, .reactors = false});
  auto dev = test::make_device({.max_requests = 64, .runtime = rt.get()});
  static CoreLog log;
  log.delivered.clear();
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue&, Request r) {
    {
      std::lock_guard lock(log.m);
      log.delivered.emplace_back(r.length(), Runtime::current_core());
    }
    NullTarget null;
    EXPECT_EQ(null.send(r), Status::success);
  };
  Queue* q = test::make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  for (std::uint32_t core = 0; core < 2; ++core) {
    std::thread t([&, core] {
      rt->bind_thread(core);
      for (std::uint32_t i = 0; i < 10; ++i) {
        auto& p = packets.make(RequestType::read, 100 * core + i + 1);
        ASSERT_EQ(dev->submit(p.packet), Status::pending);
      }
    });
    t.join();
  }
  ASSERT_EQ(log.delivered.size(), 20u) << "delivered on the submitting thread, inline";
  for (const auto& [len, core] : log.delivered) EXPECT_EQ(core, (len - 1) / 100) << "request " << len;
  packets.expect_all_completed_once();
  EXPECT_EQ(q->get_state().driver_owned, 0u);
  EXPECT_EQ(q->counters().completed, 20u);
}

TEST(PerCore, SequentialQueueRunsOnItsHomeCoreInArrivalOrder) {
  auto rt = make_runtime({.cores = 2});
  auto dev = test::make_device({.max_requests = 256, .runtime = rt.get()});
  static CoreLog log;
  log.delivered.clear();
  QueueConfig qc{.dispatch = DispatchType::sequential, .default_queue = true};
  qc.on_default = [](Queue&, Request r) {
    {
      std::lock_guard lock(log.m);
      log.delivered.emplace_back(r.length(), Runtime::current_core());
    }
    (void)r.complete(Status::success);
  };
  Queue* q = test::make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  for (std::uint32_t i = 0; i < 200; ++i)
    ASSERT_EQ(dev->submit(packets.make(RequestType::read, i + 1).packet), Status::pending);
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(log.m);
    return log.delivered.size() == 200;
  }));
  std::set<std::uint32_t> cores;
  for (std::uint32_t i = 0; i < 200; ++i) {
    EXPECT_EQ(log.delivered[i].first, i + 1) << "global order of arrival";
    cores.insert(log.delivered[i].second);
  }
  EXPECT_EQ(cores.size(), 1u) << "every delivery on the home core";
  EXPECT_NE(*cores.begin(), kNoCore);
  ASSERT_TRUE(wait_until([&] { return q->get_state().driver_owned == 0; }));
  packets.expect_all_completed_once();
}

TEST(PerCore, ShardedQueueStopPurgeAndStateSpanAllShards) {
  auto rt = make_runtime({.cores = 2, .reactors = false});
  auto dev = test::make_device({.max_requests = 64, .runtime = rt.get()});
  static std::vector<Request> held;
  held.clear();
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = [](Queue&, Request r) { held.push_back(r); };  // keep them owned
  Queue* q = test::make_queue(*dev, qc);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  for (std::uint32_t core = 0; core < 2; ++core) {
    std::thread t([&, core] {
      rt->bind_thread(core);
      for (int i = 0; i < 3; ++i) ASSERT_EQ(dev->submit(packets.make(RequestType::read).packet), Status::pending);
    });
    t.join();
  }
  ASSERT_EQ(held.size(), 6u);
  EXPECT_EQ(q->get_state().driver_owned, 6u) << "the driver counts of both shards";
  int stopped = 0;
  ASSERT_EQ(q->stop([](Queue& qq, void* ctx) { ++*static_cast<int*>(ctx); (void)qq; }, &stopped),
            Status::success);
  EXPECT_EQ(q->stop([](Queue&, void*) {}, nullptr), Status::usage_slot_busy) << "one stop callback at a time";
  // Arrivals while stopped are held on their shard.
  for (std::uint32_t core = 0; core < 2; ++core) {
    std::thread t([&, core] {
      rt->bind_thread(core);
      ASSERT_EQ(dev->submit(packets.make(RequestType::write).packet), Status::pending);
    });
    t.join();
  }
  QueueState st = q->get_state();
  EXPECT_EQ(st.queued, 2u);
  EXPECT_EQ(st.flags & (kQueueAccepting | kQueueDispatching), static_cast<std::uint32_t>(kQueueAccepting));
  // Without reactors the application serves the cores: a completion from an
  // unbound thread posts the shard's dispatch to the shard's core.
  auto pump = [&] {
    for (std::uint32_t core = 0; core < 2; ++core) {
      rt->bind_thread(core);
      while (rt->poll(core) != 0) {
      }
    }
  };
  for (std::size_t i = 0; i + 1 < held.size(); ++i) ASSERT_EQ(held[i].complete(Status::success), Status::success);
  pump();
  EXPECT_EQ(stopped, 0) << "one shard still owns a request";
  ASSERT_EQ(held.back().complete(Status::success), Status::success);
  pump();
  EXPECT_EQ(stopped, 1) << "fires once, when every shard is idle";
  // Purge cancels what both shards hold (this thread serves the cores, so the
  // asynchronous form, then serving them, completes it).
  int purged = 0;
  ASSERT_EQ(q->purge([](Queue&, void* ctx) { ++*static_cast<int*>(ctx); }, &purged), Status::success);
  pump();
  EXPECT_EQ(purged, 1);
  st = q->get_state();
  EXPECT_EQ(st.queued, 0u);
  EXPECT_EQ(st.flags & kQueueAccepting, 0u);
  packets.expect_all_completed_once();
  for (std::size_t i = 6; i < packets.size(); ++i) EXPECT_EQ(packets[i].status.load(), Status::cancelled);
}

TEST(PerCore, ReactorsExactlyOnceUnderConcurrency) {
  auto rt = make_runtime({.cores = 2});
  auto dev = test::make_device({.max_requests = 512, .runtime = rt.get()});
  static Queue* manual = nullptr;
  manual = test::make_queue(*dev, {.dispatch = DispatchType::manual});
  QueueConfig pc{.dispatch = DispatchType::parallel, .default_queue = true};
  pc.on_default = [](Queue&, Request r) {
    if (r.length() % 3 == 0) {
      if (r.forward_to_queue(*manual) == Status::success) return;
    }
    NullTarget null;
    (void)null.send(r);
  };
  test::make_queue(*dev, pc);
  QueueConfig sc{.dispatch = DispatchType::sequential};
  sc.on_write = [](Queue&, Request r) { (void)r.complete(Status::success); };
  Queue* seq = test::make_queue(*dev, sc);
  ASSERT_EQ(dev->configure_request_dispatching(*seq, RequestType::write), Status::success);
  ASSERT_EQ(dev->start(), Status::success);

  constexpr int kThreads = 4, kEach = 5000;
  std::atomic<int> completions{0}, doubles{0};
  struct Slot {
    Packet p;
    std::atomic<int> done{0};
  };
  std::vector<std::unique_ptr<Slot>> slots;
  for (int i = 0; i < kThreads * kEach; ++i) slots.push_back(std::make_unique<Slot>());
  static std::atomic<int>* s_completions;
  static std::atomic<int>* s_doubles;
  s_completions = &completions;
  s_doubles = &doubles;
  std::atomic<bool> stop{false};
  std::thread retriever([&] {
    Request r;
    while (!stop.load()) {
      if (manual->retrieve_next_request(r) == Status::success) (void)r.complete(Status::success);
      else std::this_thread::yield();
    }
  });
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        // At most 32 of this thread's packets in flight (the slab holds 512).
        if (i >= 32) {
          Slot& old = *slots[static_cast<std::size_t>(t * kEach + i - 32)];
          while (old.done.load() == 0) std::this_thread::yield();
        }
        Slot& s = *slots[static_cast<std::size_t>(t * kEach + i)];
        s.p.type = (i & 1) ? RequestType::write : RequestType::read;
        s.p.length = static_cast<std::uint32_t>(i + 1);
        s.p.user = &s;
        s.p.on_complete = [](Packet& p) noexcept {
          if (static_cast<Slot*>(p.user)->done.fetch_add(1) != 0) s_doubles->fetch_add(1);
          s_completions->fetch_add(1);
        };
        ASSERT_EQ(dev->submit(s.p), Status::pending);
        if (i % 97 == 0) (void)dev->cancel(s.p);
      }
    });
  }
  for (auto& t : submitters) t.join();
  const bool all = wait_until([&] { return completions.load() == kThreads * kEach; }, 60s);
  stop = true;
  retriever.join();
  EXPECT_TRUE(all) << completions.load() << " of " << kThreads * kEach;
  EXPECT_EQ(doubles.load(), 0);
  for (auto& s : slots) {
    EXPECT_EQ(s->done.load(), 1);
    EXPECT_TRUE(s->p.status == Status::success || s->p.status == Status::cancelled) << to_string(s->p.status);
  }
  EXPECT_EQ(dev->stats().free_requests, 512u);
  EXPECT_EQ(dev->verifier().total(), 0u);
}

}  // namespace
}  // namespace ioq
