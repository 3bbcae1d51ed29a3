// Differential testing of ioq against the reference model (tests/model/).
//
// What runs
//   * Differential/Seed.Run/<n>: fixed seeds 1..8. Each seed draws random
//     episodes (a random device and 2-5 queues, then 50-1500 random
//     operations, then the teardown) until it has run IOQ_DIFF_FIXED_OPS
//     operations (default 125000: 10^6 per CI run over the 8 seeds; 12500
//     under sanitizers, where each operation costs ~10x). Every step is
//     compared (statuses, callbacks, counts: see tests/model/differential_-
//     driver.hpp).
//   * DifferentialEnv.SeedFromEnvironment: IOQ_DIFF_SEED=<n> [IOQ_DIFF_OPS=<ops>,
//     default 10^6] for longer runs; skipped without IOQ_DIFF_SEED.
//   * DifferentialEnv.Replay: IOQ_DIFF_REPLAY=<hex> replays one episode (the
//     string every failure prints; the same bytes are a fuzzer input).
//   * DifferentialRegression.Replays: the minimal episodes of divergences
//     found and resolved so far, replayed on every run.
//   * DifferentialEnv.WriteCorpus: IOQ_DIFF_WRITE_CORPUS=<dir> writes the
//     fuzzer's seed corpus (tests/fuzz/corpus: random episodes of 20-300
//     operations and the regression episodes, as bytes); skipped without it.
//
// A failure prints the seed, the episode's place in the run, the replay
// string and the minimal operation log (delta-debugged: operations removed
// while it still diverges) with both sides' view of the diverging step.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "model/differential_driver.hpp"

namespace {

using ioq::diff::Episode;
using ioq::diff::RunResult;

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 0);
}

#if defined(IOQ_SANITIZED)
constexpr std::uint64_t kFixedOps = 12'500;
#else
constexpr std::uint64_t kFixedOps = 125'000;
#endif

std::uint64_t next(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Runs `ops` operations from `seed`; on the first failing episode, shrinks it
// and fails the test with the report.
void run_seed(std::uint64_t seed, std::uint64_t ops) {
  std::uint64_t rng = seed * 0x2545F4914F6CDD1DULL + 1;
  std::uint64_t done = 0, episodes = 0, steps = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (done < ops) {
    const std::size_t len = 50 + static_cast<std::size_t>(next(rng) % 1451);
    const Episode e = ioq::diff::random_episode(rng, len);
    const RunResult r = ioq::diff::run_episode(e);
    steps += r.steps;
    if (r.divergence || r.driver_error) {
      const Episode m = ioq::diff::shrink(e);
      const RunResult rm = ioq::diff::run_episode(m);
      const std::string header = "IOQ_DIFF_SEED=" + std::to_string(seed) + " (IOQ_DIFF_OPS=" +
                                 std::to_string(done + len) + " reaches it): episode " + std::to_string(episodes) +
                                 ", operations " + std::to_string(done) + ".." + std::to_string(done + len) +
                                 " of the run; shrunk from " + std::to_string(e.ops.size()) + " to " +
                                 std::to_string(m.ops.size()) + " operations";
      ADD_FAILURE() << ioq::diff::report(header, m, rm.divergence || rm.driver_error ? rm : r);
      return;
    }
    done += len;
    ++episodes;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("seed %llu: %llu operations in %llu episodes (%llu compared steps), %.2f s, %.0f operations/s\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(episodes), static_cast<unsigned long long>(steps), s,
              static_cast<double>(done) / s);
}

class Seed : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(Seed, Run) { run_seed(GetParam(), env_u64("IOQ_DIFF_FIXED_OPS", kFixedOps)); }

INSTANTIATE_TEST_SUITE_P(Differential, Seed, ::testing::Values(1, 2, 3, 4, 5, 6, 7, 8));

TEST(DifferentialEnv, SeedFromEnvironment) {
  if (std::getenv("IOQ_DIFF_SEED") == nullptr) GTEST_SKIP() << "set IOQ_DIFF_SEED (and IOQ_DIFF_OPS) to run";
  run_seed(env_u64("IOQ_DIFF_SEED", 1), env_u64("IOQ_DIFF_OPS", 1'000'000));
}

// Minimal episodes of divergences found and resolved (IOQ_DIFF_REPLAY strings).
const std::pair<const char*, const char*> kRegressions[] = {
    // A handler marks its request cancelable, it is canceled (the cancel
    // callback waits for the handler's loop), the handler completes it: ioq
    // completed it and later called the cancel callback on a stale handle;
    // now usage_cancelable until the callback has been called.
    {"complete_before_cancel_cb",
     "862a49b0bc3cf95bbc796f55f3f182efa36bf07b9566fd6cc78a3dc60f93ee5a00fa9e9efb3b3aec00a4e7e0f5dd1819"},
    // purge(cb), stop, submit: ioq's purge left the queue cancelling what
    // arrived after the stop; a stopped queue keeps it (C30).
    {"stop_after_purge_keeps_arrivals",
     "d3bc77be246eccc9b0b54f8f3183898bbf15c43c9b464fc73ea29ad9f1f43f310d2ee336a89452310bb5aa2e41f4d868005431d3"
     "3d7effc9"},
    // drain, then a packet whose allocation fails on a queue with a
    // forward-progress policy: a reserved request is bound and meets the
    // Accept check in the queue (spec 6, arrival 4), counted as used; ioq
    // rejected the packet before binding.
    {"reserved_binds_then_meets_accept",
     "2626dfe83eae5b89fbf5eb7201c3a75ed2dc82fe71e25be96edf84424223dfe20c956092f228f6c2000435948013407c"},
    // mark_cancelable_ex, cancel (the cancel callback runs and keeps the
    // request), requeue on a parallel queue: an ordinary canceled request now,
    // so invalid_device_request; ioq still called it cancelable.
    {"requeue_after_cancel_cb_ran",
     "a10b22f2d1ea5c4c261bb78535e82f7e9f12f90963fc4358ceee94b79eee9ff600808ddb09624b0800d4a43a339d9f2c0895b3a7"
     "210eb1aa01d847ef5d43fe77044784b36275098a"},
    // A retrieved reserved request at removal: it gets its stop callback like
    // any owned request; ioq's scan of owned requests skipped reserved ones.
    {"reserved_request_gets_stop_callback",
     "60f09b53f1fbfc68b5a05dc8708ddc5d5deb6e6eae59077261cf295ad17b19d100f9f5e7b08e4ea400bd96a4fa4420d100692fe7"
     "d2c9118600acee1bd3c25c8d05e25e5065ba9c10"},
    // Completing a forwarded reserved request with a packet parked for it: the
    // completing queue is notified (its drain callback fires) before the
    // final release serves the parked packet; ioq served it first.
    {"reserved_returns_after_queue_notified",
     "f284a13837228da8dd4dd430e294c846ba1c1f8a88bac8056ebabfac7896f17d000c34ee1919b98c161d2435156e8b1600a5979d"
     "95c97d3200aba37375636f4203b36a29c08e63550c1391bee523b01e"},
    // A chain of 9 deliveries on a queue without a stop handler before remove
    // (the driver settles power-downs until nothing is left to complete).
    {"settle_long_chain",
     "d2f355195af358dd46e5b01c78b5637bd73bf6f11a301f46f044e7a1a0f6bc67005dd3a661c96156005f9cd3c200e120007f209b"
     "a64dc24500965476489291a400f5dd3d17f60b46002f4f9d11c55a6b00bd3b9c063d72c600e9b5339e15e61800317754147e53ac"},
    // A parked forward-progress packet served during remove, delivered to a
    // queue without a stop handler (the driver completes it inline).
    {"parked_served_during_remove",
     "228d2fa70f00f31abbd9cc189d8e42997ecf1947c7d27d0f06047349f86d273c00350930aad0db7100c6d99c60ab28530078c1a4"
     "6d6c8d4f007803bda875ed6d006ad69c6bf13b2200aa5fcea71f984203c11b2659dff21003f9005088914f4b00658956f0b0e156"
     "035daea49787040e0080e6efe76b8e0c"},
};

TEST(DifferentialRegression, Replays) {
  for (const auto& [name, hex] : kRegressions) {
    const auto bytes = ioq::diff::from_hex(hex);
    ASSERT_TRUE(bytes.has_value()) << name;
    const Episode e = ioq::diff::decode(bytes->data(), bytes->size());
    const RunResult r = ioq::diff::run_episode(e);
    if (r.divergence || r.driver_error) ADD_FAILURE() << ioq::diff::report(std::string("regression ") + name, e, r);
  }
}

TEST(DifferentialEnv, WriteCorpus) {
  const char* dir = std::getenv("IOQ_DIFF_WRITE_CORPUS");
  if (dir == nullptr) GTEST_SKIP() << "set IOQ_DIFF_WRITE_CORPUS=<dir> to write the fuzzer's seed corpus";
  const std::uint64_t files = env_u64("IOQ_DIFF_CORPUS_FILES", 40);
  auto write = [&](const std::string& name, const std::vector<std::uint8_t>& bytes) {
    std::ofstream out(std::string(dir) + "/" + name, std::ios::binary);
    ASSERT_TRUE(out.good()) << dir << "/" << name;
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  };
  std::uint64_t rng = env_u64("IOQ_DIFF_CORPUS_SEED", 7) * 0x2545F4914F6CDD1DULL + 1;
  for (std::uint64_t i = 0; i < files; ++i) {
    const std::size_t len = 20 + static_cast<std::size_t>(next(rng) % 281);
    const Episode e = ioq::diff::random_episode(rng, len);
    const RunResult r = ioq::diff::run_episode(e);
    EXPECT_FALSE(r.divergence || r.driver_error) << "corpus episode " << i << " diverges";
    char name[32];
    std::snprintf(name, sizeof name, "episode-%02llu", static_cast<unsigned long long>(i));
    write(name, ioq::diff::encode(e));
  }
  for (const auto& [name, hex] : kRegressions) write(std::string("regression-") + name, *ioq::diff::from_hex(hex));
}

TEST(DifferentialEnv, Replay) {
  const char* hex = std::getenv("IOQ_DIFF_REPLAY");
  if (hex == nullptr) GTEST_SKIP() << "set IOQ_DIFF_REPLAY to replay an episode";
  const auto bytes = ioq::diff::from_hex(hex);
  ASSERT_TRUE(bytes.has_value()) << "IOQ_DIFF_REPLAY is not a hex string";
  const Episode e = ioq::diff::decode(bytes->data(), bytes->size());
  const RunResult r = ioq::diff::run_episode(e);
  std::printf("%s", ioq::diff::describe(e).c_str());
  if (r.divergence || r.driver_error) ADD_FAILURE() << ioq::diff::report("replay", e, r);
}

}  // namespace
