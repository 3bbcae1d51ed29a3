// ioq-bench: ioq's load tool (see engine.hpp and tool/options.hpp).
//   ioq-bench                       the default job: the null target, 3 s
//   ioq-bench --help                every option, with its default
//   ioq-bench --target=null --dispatch=parallel --cores=1 --iodepth=32 --time_based --runtime=5
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "engine.hpp"
#include "tool/options.hpp"
#include "tool/report.hpp"

// Heap allocations in the whole process, for "allocations per request".
namespace {
std::atomic<std::uint64_t> g_allocations{0};
}

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t align = std::max<std::size_t>(static_cast<std::size_t>(a), sizeof(void*));
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

std::uint64_t ioq::bench::allocation_count() noexcept { return g_allocations.load(std::memory_order_relaxed); }

int main(int argc, char** argv) {
  using namespace ioq::bench;
  // With no arguments: a short time-based job on the null target.
  std::vector<const char*> args(argv, argv + argc);
  if (argc == 1) {
    for (const char* a : {"--target=null", "--time_based", "--runtime=3"}) args.push_back(a);
  }
  Options options;
  if (const int rc = parse_options(static_cast<int>(args.size()), args.data(), options, std::cout, std::cerr);
      rc >= 0)
    return rc;
  EngineResult result = run_engine(options);
  if (!result.error.empty()) {
    std::cerr << result.error << '\n';
    return 1;
  }
  const int rc = write_report(result.job, std::cerr);
  if (options.prometheus) std::cout << result.prometheus;
  return rc;
}
