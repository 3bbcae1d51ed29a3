// idle_cpu: CPU time an idle ioq runtime costs. Starts a runtime with one
// reactor per core (default 2), lets them go idle, and prints the process's
// CPU time over the next interval as a share of one core.
//   idle_cpu [cores] [seconds]
#include <ioq/runtime.hpp>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

int main(int argc, char** argv) {
  const unsigned cores = argc > 1 ? static_cast<unsigned>(std::atoi(argv[1])) : 2;
  const double seconds = argc > 2 ? std::atof(argv[2]) : 2.0;
  auto rt = ioq::Runtime::create({.cores = cores});
  if (!rt) return 1;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past the spin window
  auto cpu_us = [] {
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_sec * 1e6 + r.ru_stime.tv_usec;
  };
  const double before = cpu_us();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double used = cpu_us() - before;
  std::printf("{\"cores\": %u, \"seconds\": %.1f, \"cpu_us\": %.0f, \"share_of_one_core\": %.5f}\n", cores, seconds,
              used, used / (seconds * 1e6));
  return 0;
}
