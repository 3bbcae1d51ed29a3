// ioq::detail::thread_index: a small dense number for the calling thread.
//
// Per-thread structures of the runtime (slab caches, counters) are arrays
// indexed by this number instead of thread_local objects, so they outlive the
// threads that used them and belong to the structure that owns the array.
// A number is taken on a thread's first call and given back when the thread
// exits; the next thread to take it inherits whatever the arrays hold at that
// index (a slab cache full of free slots, say), which is correct because the
// hand-over is ordered by the registry's release/acquire.
//
// Threads: any. kMaxThreads threads can hold a number at once; further threads
// get kNoThreadIndex and must use the shared (slower) path of each structure.
//
// Memory ordering: releasing a number (release) happens-before the next
// acquisition of the same number (acquire), so per-index state left by the old
// thread is visible to the new one.
#pragma once

#include <cstdint>

namespace ioq::detail {

inline constexpr std::uint32_t kMaxThreads = 512;
inline constexpr std::uint32_t kNoThreadIndex = ~0u;

// Takes a number for the calling thread (first call on each thread).
std::uint32_t thread_index_slow() noexcept;

// The calling thread's number in [0, kMaxThreads), or kNoThreadIndex.
inline thread_local std::uint32_t t_thread_index_cache = kNoThreadIndex - 1;  // not yet asked
inline std::uint32_t thread_index() noexcept {
  const std::uint32_t v = t_thread_index_cache;
  return v != kNoThreadIndex - 1 ? v : thread_index_slow();
}

// The calling thread's number if it has asked before: in [0, kMaxThreads),
// or some value >= kMaxThreads (not yet asked, or none to have). For hot
// paths whose bounds check sends both of those to a slow path that calls
// thread_index().
inline std::uint32_t thread_index_if_known() noexcept { return t_thread_index_cache; }

// How many numbers are held right now (a snapshot).
std::uint32_t thread_index_in_use() noexcept;

}  // namespace ioq::detail
