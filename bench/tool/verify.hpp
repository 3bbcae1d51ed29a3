// tool/verify.hpp — ioq-bench's --verify=crc32c block format.
//
// What it is
//   Every block a verifying job writes starts with a header: a magic number,
//   the block's own offset, the job's write generation and the block length,
//   then a checksum (CRC32C, Castagnoli) of the whole block taken with the
//   checksum field zero. The rest of the block is a pattern derived from the
//   offset and generation, so a block written to the wrong place, a stale
//   block from an earlier run, a torn write or a flipped bit all fail the
//   check, each with its own reason.
//
// Threads
//   Pure functions; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ioq::bench {

// CRC32C of `n` bytes, continuing from `crc` (0 to start). Uses the SSE4.2
// instruction where the CPU has it, a table otherwise.
[[nodiscard]] std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0) noexcept;

// Fills `block` (`bs` bytes, bs >= 64) for `offset` and `generation`.
void fill_block(void* block, std::uint32_t bs, std::uint64_t offset, std::uint64_t generation) noexcept;

enum class BlockCheck : std::uint8_t { ok, bad_magic, bad_offset, bad_generation, bad_length, bad_checksum };

// Checks a block read from `offset`. `generation` 0 accepts any generation
// (a read-only verifying job does not know which run wrote the file).
[[nodiscard]] BlockCheck check_block(const void* block, std::uint32_t bs, std::uint64_t offset,
                                     std::uint64_t generation) noexcept;

[[nodiscard]] const char* to_string(BlockCheck c) noexcept;

}  // namespace ioq::bench
