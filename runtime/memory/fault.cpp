#include <ioq/fault.hpp>

#include <cmath>
#include <functional>
#include <thread>

namespace ioq {

namespace {

std::uint64_t splitmix64(std::uint64_t& x) noexcept {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

struct ThreadRng {
  const FaultInjector* owner = nullptr;
  std::uint64_t epoch = ~0ULL;
  std::uint64_t state = 0;
};

}  // namespace

void FaultInjector::set_every_nth(std::uint32_t n) noexcept {
  nth_.store(n == 0 ? 1 : n, std::memory_order_relaxed);
  nth_counter_.store(0, std::memory_order_relaxed);
  mode_.store(Mode::every_nth, std::memory_order_relaxed);
}

void FaultInjector::set_percent(double percent, std::uint64_t seed) noexcept {
  if (!(percent > 0.0)) percent = 0.0;
  if (percent > 100.0) percent = 100.0;
  // Scale to a 64-bit threshold; 100% maps to "always".
  const double scaled = std::ldexp(percent / 100.0, 64);
  const std::uint64_t thr =
      percent >= 100.0 ? ~0ULL : static_cast<std::uint64_t>(scaled >= 0x1p64 ? 0x1p64 - 1 : scaled);
  threshold_.store(thr, std::memory_order_relaxed);
  seed_.store(seed, std::memory_order_relaxed);
  epoch_.fetch_add(1, std::memory_order_relaxed);
  mode_.store(Mode::percent, std::memory_order_relaxed);
}

bool FaultInjector::should_fail() noexcept {
  decisions_.fetch_add(1, std::memory_order_relaxed);
  bool fail = false;
  switch (mode_.load(std::memory_order_relaxed)) {
    case Mode::never:
      break;
    case Mode::always:
      fail = true;
      break;
    case Mode::every_nth: {
      const std::uint64_t k = nth_counter_.fetch_add(1, std::memory_order_relaxed) + 1;
      fail = k % nth_.load(std::memory_order_relaxed) == 0;
      break;
    }
    case Mode::percent: {
      thread_local ThreadRng rng;
      const std::uint64_t epoch = epoch_.load(std::memory_order_relaxed);
      if (rng.owner != this || rng.epoch != epoch) {
        rng.owner = this;
        rng.epoch = epoch;
        rng.state = seed_.load(std::memory_order_relaxed) ^
                    (std::hash<std::thread::id>{}(std::this_thread::get_id()) * 0x2545F4914F6CDD1DULL);
      }
      const std::uint64_t thr = threshold_.load(std::memory_order_relaxed);
      fail = thr == ~0ULL || splitmix64(rng.state) < thr;
      break;
    }
  }
  if (fail) injected_.fetch_add(1, std::memory_order_relaxed);
  return fail;
}

}  // namespace ioq
