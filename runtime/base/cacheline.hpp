// ioq::detail cache-line constants and a CPU relax hint.
//
// kCacheLine is the unit of padding for every contended member in the runtime.
// GCC's std::hardware_destructive_interference_size is 64 on x86-64 but warns
// when used in headers (-Winterference-size) because its value may change with
// -mtune; ioq pins the value instead and checks it against the library's.
#pragma once

#include <cstddef>
#include <new>

namespace ioq::detail {

inline constexpr std::size_t kCacheLine = 64;

#if defined(__cpp_lib_hardware_interference_size) && defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winterference-size"
static_assert(kCacheLine >= std::hardware_destructive_interference_size,
              "kCacheLine must cover the destructive interference size");
#pragma GCC diagnostic pop
#endif

// A hint to the core that this thread is spinning (PAUSE on x86).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace ioq::detail
