// The score formula of the int8 scans (scorer.h, flat.h), written once: every kernel set's score_block must
// round like this.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace tq {
namespace {

// scores[v] = a[v] * (float(raw[v] - shift) * step + base) + b[v] for v < n (b null: + 0.0f, as a zero offset
// adds); bit v set when scores[v] >= threshold. The subtraction is exact in int32 (scorer.h bounds both terms).
inline uint32_t score_lanes(const int32_t* raw, size_t n, int32_t shift, float step, float base, const float* a,
                            const float* b, float threshold, float* scores) {
  uint32_t mask = 0;
  for (size_t v = 0; v < n; ++v) {
    const float x = float(raw[v] - shift) * step + base;
    scores[v] = a[v] * x + (b ? b[v] : 0.0f);
    if (scores[v] >= threshold) mask |= 1u << v;
  }
  return mask;
}

// Kernels::first_hit over a kernel set's block(raw, m, a, b, scores) -> mask for the m <= width lanes of one block
// (b null: zero offsets): the block loop, written once.
template <class Block>
size_t first_hit_with(const int32_t* raw, size_t width, size_t n, const float* a, const float* b, float* scores,
                      uint32_t* mask, Block&& block) {
  const size_t blocks = (n + width - 1) / width;
  for (size_t i = 0; i < blocks; ++i) {
    const size_t first = i * width;
    *mask = block(raw + first, std::min(width, n - first), a + first, b ? b + first : nullptr, scores);
    if (*mask) return i;
  }
  return blocks;
}

}  // namespace
}  // namespace tq
