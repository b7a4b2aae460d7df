// What every index's search does to its queries before the scan and to the hits after it (CodeIndex.search_checked
// in _index.py), in two native calls: a one-query search of a small index spent ~8 us of its ~18 in numpy.
#pragma once
#include <cstddef>
#include <cstdint>

#include "exact.h"
#include "parallel.h"
#include "rotation.h"
#include "simd/kernels.h"

namespace tq {

// For each of nq query rows (dim floats): normalises it (kCosine, exact.h's normalise), subtracts mean,
// writes into constant[i] what the native score misses, <q, mean> (kIp, kCosine) or -||q - mean||^2 (kL2), and into
// out the centred row, rotated by `rotation` unless it is null. The sums are taken in double. Returns the first
// row holding NaN or Inf, or -1; out and constant are then unspecified.
int64_t prepare_queries(const Kernels& k, ExactMetric metric, const float* q, size_t nq, size_t dim, const float* mean,
                        const Rotation* rotation, float* out, float* constant, int threads,
                        const InterruptCheck& interrupted);

// Hits (nq x width scores and store slots, -1 for none) as a search returns them: each row's scores plus
// constant[i] (constant null: nothing added), clamped to [-1, 1] when `clamp` (cosines; -inf padding kept), and
// found = ids[slot], -1 for slot -1. Every slot must be -1 or below n_ids (checked first: nothing is written else).
void finish_hits(float* scores, const int64_t* slots, size_t nq, size_t width, const float* constant,
                 const int64_t* ids, size_t n_ids, bool clamp, int64_t* found);

}  // namespace tq
