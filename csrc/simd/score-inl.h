// The score formula of the int8 scans (scorer.h, flat.h), written once: every kernel set's score_block must
// round like this.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {
namespace {

// scores[v] = a[v] * (float(raw[v] - shift) * step + base) + b[v] for v < n; bit v set when
// scores[v] >= threshold. The subtraction is exact in int32 (scorer.h bounds both terms).
inline uint32_t score_lanes(const int32_t* raw, size_t n, int32_t shift, float step, float base, const float* a,
                            const float* b, float threshold, float* scores) {
  uint32_t mask = 0;
  for (size_t v = 0; v < n; ++v) {
    const float x = float(raw[v] - shift) * step + base;
    scores[v] = a[v] * x + b[v];
    if (scores[v] >= threshold) mask |= 1u << v;
  }
  return mask;
}

}  // namespace
}  // namespace tq
