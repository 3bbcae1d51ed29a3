// libFuzzer target: the differential test's episodes, decoded from the
// fuzzer's bytes (tests/model/differential_driver.hpp: 32 configuration bytes,
// then 8 bytes per operation), run on ioq and on the reference model in
// lockstep. A divergence, or a driver error (the model says a call would
// block), prints the report (shrunk episode, replay string for
// IOQ_DIFF_REPLAY, both sides' view of the step) and aborts, which libFuzzer
// records as a crash with the input saved. ASan and UBSan watch ioq meanwhile.
//
// Built only with IOQ_FUZZ_TARGET=ON and clang (tests/fuzz/run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "model/differential_driver.hpp"

namespace {
// Longer inputs are cut: beyond this an episode costs time and finds nothing
// a shorter one would not (the fuzzer's -max_len keeps new inputs far below).
constexpr std::size_t kMaxOps = 2048;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ioq::diff;
  const std::size_t cap = kConfigBytes + kMaxOps * kOpBytes;
  const Episode e = decode(data, size < cap ? size : cap);
  const RunResult r = run_episode(e);
  if (!r.divergence && !r.driver_error) return 0;
  const Episode m = shrink(e, 2000);
  const RunResult rm = run_episode(m);
  const bool shrunk = rm.divergence.has_value() || rm.driver_error;
  const std::string header = std::string("queue_fuzz: ") + (r.driver_error ? "driver error" : "divergence") +
                             " (episode of " + std::to_string(e.ops.size()) + " operations, shrunk to " +
                             std::to_string(shrunk ? m.ops.size() : e.ops.size()) + ")";
  const std::string text = shrunk ? report(header, m, rm) : report(header, e, r);
  std::fprintf(stderr, "\n%s\n", text.c_str());
  std::fflush(stderr);
  std::abort();
}
