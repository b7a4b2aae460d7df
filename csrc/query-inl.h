// Rounding a rotated query for the exact int8 scans, written once; used only by CodeScorer (scorer.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace tq {
namespace {

// Rounds q to 7-bit integers (|q| <= 63 keeps the AVX2 pair sums below int16 saturation) and writes dim j
// at out[pos(j)]. With code tables holding 128 + round(c / centroid_unit), the score of a code is
// (raw - *offset) * *unit, raw being the integer dot product of out with the table entries.
template <class Pos>
void round_query(const float* q, size_t dim, float centroid_unit, int8_t* out, Pos pos, float* unit,
                 int32_t* offset) {
  float qmax = 0;
  for (size_t j = 0; j < dim; ++j) qmax = std::max(qmax, std::fabs(q[j]));
  const float s = qmax > 0 ? 63.0f / qmax : 0.0f;
  int32_t sum = 0;
  for (size_t j = 0; j < dim; ++j) sum += out[pos(j)] = int8_t(std::lrint(q[j] * s));
  *unit = qmax > 0 ? centroid_unit / s : 0.0f;
  *offset = 128 * sum;  // the tables store centroids shifted by +128
}

}  // namespace
}  // namespace tq
