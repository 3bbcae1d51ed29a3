// ioq-bench's --verify=crc32c block format (see verify.hpp).
#include "tool/verify.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ioq::bench {
namespace {

constexpr std::uint64_t kMagic = 0x696f712d76726679ULL;  // "ioq-vrfy"

struct Header {
  std::uint64_t magic;
  std::uint64_t offset;
  std::uint64_t generation;
  std::uint32_t length;
  std::uint32_t crc;
};
static_assert(sizeof(Header) == 32);
constexpr std::size_t kCrcAt = offsetof(Header, crc);

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kTable = make_table();

std::uint32_t crc_table(const unsigned char* p, std::size_t n, std::uint32_t c) noexcept {
  for (std::size_t i = 0; i < n; ++i) c = kTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t crc_hw(const unsigned char* p, std::size_t n,
                                                      std::uint32_t c) noexcept {
  std::uint64_t c64 = c;
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = _mm_crc32_u64(c64, v);
  }
  c = static_cast<std::uint32_t>(c64);
  for (; n > 0; --n, ++p) c = _mm_crc32_u8(c, *p);
  return c;
}
const bool kHaveHw = __builtin_cpu_supports("sse4.2");
#endif

// The block's checksum with its crc field taken as zero.
std::uint32_t block_crc(const unsigned char* b, std::uint32_t bs) noexcept {
  static constexpr unsigned char kZero[4] = {0, 0, 0, 0};
  std::uint32_t c = crc32c(b, kCrcAt);
  c = crc32c(kZero, 4, c);
  return crc32c(b + kCrcAt + 4, bs - kCrcAt - 4, c);
}

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
#if defined(__x86_64__)
  c = kHaveHw ? crc_hw(p, n, c) : crc_table(p, n, c);
#else
  c = crc_table(p, n, c);
#endif
  return ~c;
}

void fill_block(void* block, std::uint32_t bs, std::uint64_t offset, std::uint64_t generation) noexcept {
  auto* b = static_cast<unsigned char*>(block);
  Header h{kMagic, offset, generation, bs, 0};
  std::memcpy(b, &h, sizeof h);
  std::uint64_t x = (offset ^ (generation * 0x9E3779B97F4A7C15ULL)) | 1;
  for (std::uint32_t i = sizeof h; i < bs; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(b + i, &x, std::min<std::uint32_t>(8, bs - i));
  }
  const std::uint32_t crc = block_crc(b, bs);
  std::memcpy(b + kCrcAt, &crc, sizeof crc);
}

BlockCheck check_block(const void* block, std::uint32_t bs, std::uint64_t offset, std::uint64_t generation) noexcept {
  const auto* b = static_cast<const unsigned char*>(block);
  Header h;
  std::memcpy(&h, b, sizeof h);
  if (h.magic != kMagic) return BlockCheck::bad_magic;
  if (h.offset != offset) return BlockCheck::bad_offset;
  if (generation != 0 && h.generation != generation) return BlockCheck::bad_generation;
  if (h.length != bs) return BlockCheck::bad_length;
  if (block_crc(b, bs) != h.crc) return BlockCheck::bad_checksum;
  return BlockCheck::ok;
}

const char* to_string(BlockCheck c) noexcept {
  switch (c) {
    case BlockCheck::ok: return "ok";
    case BlockCheck::bad_magic: return "no verify header (never written by a verifying job, or overwritten)";
    case BlockCheck::bad_offset: return "header names another offset (misplaced write)";
    case BlockCheck::bad_generation: return "header from another run (stale data)";
    case BlockCheck::bad_length: return "header names another block size";
    case BlockCheck::bad_checksum: return "checksum mismatch (corrupt or torn data)";
  }
  return "?";
}

}  // namespace ioq::bench
