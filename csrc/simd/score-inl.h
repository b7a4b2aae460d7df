// The score formula of the int8 scans (scorer.h, flat.h), written once: every kernel set's score_block must
// round like this; and the 8-bit row sum that the scalar and AVX2 tables share.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {
namespace {

// Kernels::dot_row8 as a loop: the reference, and AVX2's (which has no 256-entry byte lookup).
inline int32_t dot_row8_loop(const uint8_t* row, size_t n, const int8_t* query, const uint8_t* table) {
  int32_t s = 0;
  for (size_t j = 0; j < n; ++j) s += int32_t(query[j]) * table[row[j]];
  return s;
}

// scores[v] = a[v] * ((float(raw[v]) - shift) * step + base) + b[v] for v < n; bit v set when
// scores[v] >= threshold. raw and shift are integers below 2^24, so the subtraction is exact.
inline uint32_t score_lanes(const int32_t* raw, size_t n, float shift, float step, float base, const float* a,
                            const float* b, float threshold, float* scores) {
  uint32_t mask = 0;
  for (size_t v = 0; v < n; ++v) {
    const float x = (float(raw[v]) - shift) * step + base;
    scores[v] = a[v] * x + b[v];
    if (scores[v] >= threshold) mask |= 1u << v;
  }
  return mask;
}

}  // namespace
}  // namespace tq
