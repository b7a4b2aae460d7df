// The score formula of the int8 scans (scorer.h, flat.h), written once: every kernel set's score_block must
// round like this; and the 8-bit row sum that the scalar and AVX2 tables share.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tq {
namespace {

// The value of 8-bit code c in a two-plane table (scorer.h): 128 * high[c] + low[c].
inline int32_t wide_value(const uint8_t* planes, uint8_t c) { return 128 * int32_t(planes[c]) + planes[256 + c]; }

// The same value from the table's uint16 copy (bytes 512 on, scorer.h): one load instead of two.
inline int32_t wide_value16(const uint8_t* planes, uint8_t c) {
  uint16_t v;
  std::memcpy(&v, planes + 512 + 2 * size_t(c), 2);
  return v;
}

// Kernels::dot_row8 as a loop: the reference.
inline int32_t dot_row8_loop(const uint8_t* row, size_t n, const int8_t* query, const uint8_t* planes) {
  int32_t s = 0;
  for (size_t j = 0; j < n; ++j) s += int32_t(query[j]) * wide_value(planes, row[j]);
  return s;
}

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
