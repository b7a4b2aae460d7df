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

// A block's reach: bit t set when some of query t's `width` raw sums (at raw + t * width) is >= floors[t], the least
// sum with which a slot can still enter query t's top-k (the scan's bound); every bit when floors is null.
inline uint32_t reach_lanes(const int32_t* raw, size_t width, size_t nq, const int32_t* floors) {
  if (!floors) return (1u << nq) - 1;
  uint32_t reach = 0;
  for (size_t t = 0; t < nq; ++t) {
    int32_t best = INT32_MIN;
    for (size_t v = 0; v < width; ++v) best = raw[t * width + v] > best ? raw[t * width + v] : best;
    if (best >= floors[t]) reach |= 1u << t;
  }
  return reach;
}

}  // namespace
}  // namespace tq
