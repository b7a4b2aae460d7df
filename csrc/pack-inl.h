// THE code layout (documented here only; docs/format.md points here).
//
// A row of n indices of b bits (1 <= b <= 8) is a little-endian bit stream: index j occupies stream
// bits [j*b, j*b + b), least significant bit first, and stream bit k is bit (k % 8) of byte k / 8.
// The row is padded with zero bits to ceil(n*b/8) bytes. Eight consecutive indices therefore fill
// exactly b bytes, which is the unit both loops below work in; any n is allowed.
//
// Included by every kernel translation unit so each is compiled (and vectorised) with its own flags.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {
namespace {

inline void pack_bits(const uint8_t* idx, size_t n, int bits, uint8_t* out) {
  const size_t full = n / 8;
  for (size_t g = 0; g < full; ++g) {
    uint64_t w = 0;
    for (int i = 0; i < 8; ++i) w |= uint64_t(idx[g * 8 + i]) << (i * bits);
    for (int k = 0; k < bits; ++k) out[g * bits + k] = uint8_t(w >> (8 * k));
  }
  const size_t rest = n - full * 8;
  if (rest == 0) return;
  uint64_t w = 0;
  for (size_t i = 0; i < rest; ++i) w |= uint64_t(idx[full * 8 + i]) << (i * bits);
  const size_t tail_bytes = (rest * bits + 7) / 8;
  for (size_t k = 0; k < tail_bytes; ++k) out[full * bits + k] = uint8_t(w >> (8 * k));
}

inline void unpack_bits(const uint8_t* in, size_t n, int bits, uint8_t* idx) {
  const uint64_t mask = (uint64_t(1) << bits) - 1;
  const size_t full = n / 8;
  for (size_t g = 0; g < full; ++g) {
    uint64_t w = 0;
    for (int k = 0; k < bits; ++k) w |= uint64_t(in[g * bits + k]) << (8 * k);
    for (int i = 0; i < 8; ++i) idx[g * 8 + i] = uint8_t((w >> (i * bits)) & mask);
  }
  const size_t rest = n - full * 8;
  if (rest == 0) return;
  uint64_t w = 0;
  const size_t tail_bytes = (rest * bits + 7) / 8;
  for (size_t k = 0; k < tail_bytes; ++k) w |= uint64_t(in[full * bits + k]) << (8 * k);
  for (size_t i = 0; i < rest; ++i) idx[full * 8 + i] = uint8_t((w >> (i * bits)) & mask);
}

}  // namespace
}  // namespace tq
