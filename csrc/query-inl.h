// Rounding a rotated query for the exact int8 scans, written once; used only by CodeScorer (scorer.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace tq {
namespace {

// Rounds q to integers |q| <= range (63 for tables of u8 values, where it keeps AVX2's u8 x s8 pair sums below
// int16 saturation; 127 for the two-plane 8-bit tables, scorer.h) and writes dim j at out[pos(j)]. With tables
// holding zero + round(c / centroid_unit), the score of a code is (raw - *offset) * *unit, raw being the integer
// dot product of out with the table values.
template <class Pos>
void round_query(const float* q, size_t dim, int range, int32_t zero, float centroid_unit, int8_t* out, Pos pos,
                 float* unit, int32_t* offset) {
  float qmax = 0;
  for (size_t j = 0; j < dim; ++j) qmax = std::max(qmax, std::fabs(q[j]));
  const float s = qmax > 0 ? float(range) / qmax : 0.0f;
  // Rounds half to even as std::lrint does (default rounding mode), inline so the loop vectorises (lrint was a
  // library call per dim, 7% of a SIFT5k 4-bit batch): adding and removing 1.5 * 2^23 rounds |x| < 2^22 to an integer.
  const float magic = 12582912.0f;
  int32_t sum = 0;
  for (size_t j = 0; j < dim; ++j) sum += out[pos(j)] = int8_t(int32_t((q[j] * s + magic) - magic));
  *unit = qmax > 0 ? centroid_unit / s : 0.0f;
  *offset = zero * sum;  // the tables store centroids shifted by +zero
}

}  // namespace
}  // namespace tq
