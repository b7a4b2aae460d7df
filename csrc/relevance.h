// Calibrated relevance of search hits (tqsearch/relevance.py): one call per search instead of a dozen
// small numpy operations, bit-equal to the numpy formula it replaces.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {

// A (rows, cols) view whose rows are `stride` elements apart (a column slice of a wider array).
template <class T>
struct Rows {
  T* data;
  size_t rows, cols, stride;
  T* row(size_t i) const { return data + i * stride; }
};

// The logit's weights: bias + score * s + tail_mean * mean + top * max (+ query . q when query is set).
struct RelevanceWeights {
  double bias, score, tail_mean, top;
  const double* query;  // dim weights, or nullptr
};

// rel (scores.rows x scores.cols) = sigmoid(logit) as float32, below 1, 0 for -inf padding, where each
// query's tail mean and max are over its finite tail scores (0 when none) and queries (rows x dim) are
// read only when w.query is set. When min_relevance > 0, hits below it become -inf / -1 / 0 in place.
void relevance(const Rows<const float>& tail, const Rows<const float>& queries, const RelevanceWeights& w,
               float min_relevance, const Rows<float>& scores, const Rows<int64_t>& ids, float* rel);

}  // namespace tq
