// The kLut scan's per-query tables (flat.h), written once and compiled into every kernel set: each ISA's
// translation unit vectorises it with its own flags, and as every step is one IEEE operation per entry in a fixed
// order (no FMA, no reassociation), every kernel set builds identical tables.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace tq {
namespace {

// Entry n of table m: the sum over the table's sub-dims s (from 0 up, starting at +0.0) of q_j * c[value of s in n],
// less the table's least entry (added to *offsets, table by table); *widest: the widest range. A rounded sum never
// decreases when a term grows, so the least (greatest) entry is the sum of each sub-dim's least (greatest) product in
// the same order: no pass over the entries finds them. With the widths known at compile time every table unrolls.
template <int kBits>
void lut_floats(const float* q, size_t dim, const float* centroids, size_t tables, float* partial, float* widest,
                float* offsets) {
  constexpr int kSub = 4 / kBits, kVals = 1 << kBits;
  for (size_t m = 0; m < tables; ++m) {
    float prod[kSub][kVals], lo = 0.0f, hi = 0.0f;
    for (int s = 0; s < kSub; ++s) {
      const size_t j = m * kSub + size_t(s);
      const float qj = j < dim ? q[j] : 0.0f;
      float least = qj * centroids[0], most = least;
      for (int v = 0; v < kVals; ++v) {
        prod[s][v] = qj * centroids[v];
        least = std::min(least, prod[s][v]);
        most = std::max(most, prod[s][v]);
      }
      lo = lo + least;
      hi = hi + most;
    }
    for (int n = 0; n < 16; ++n) {
      float sum = 0.0f;
      for (int s = 0; s < kSub; ++s) sum = sum + prod[s][(n >> (kBits * s)) & (kVals - 1)];
      partial[m * 16 + size_t(n)] = sum - lo;
    }
    *widest = std::max(*widest, hi - lo);
    *offsets += lo;
  }
}

// Kernels::lut_tables: float partial inner products of every sub-quantizer value, then one rounding to 0..127 with a
// shared step and a per-table offset, so integer sums map back to float with one multiply-add. Seven bits let kernels
// add two lookups as bytes; the eighth moved recall@10 by under 0.001 on WordNet, MNIST and SIFT.
inline void lut_tables(const float* q, size_t dim, const float* centroids, int bits, size_t tables, float* partial,
                       uint8_t* out, float* step, float* base) {
  constexpr float kLevels = 127.0f;
  float widest = 0, offsets = 0;
  (bits == 1 ? lut_floats<1> : lut_floats<2>)(q, dim, centroids, tables, partial, &widest, &offsets);
  *step = widest > 0 ? widest / kLevels : 1.0f;
  *base = offsets;
  // Round half to even as std::lrint does (default rounding mode), inline so the loop vectorizes: adding and
  // removing 1.5 * 2^23 rounds any 0 <= x < 2^22 to an integer in the current mode (values here are <= 127).
  const float unit = *step, magic = 12582912.0f;
  for (size_t i = 0; i < tables * 16; ++i) out[i] = uint8_t(int32_t((partial[i] / unit + magic) - magic));
}

}  // namespace
}  // namespace tq
