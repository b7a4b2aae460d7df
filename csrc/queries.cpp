#include "queries.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common.h"

namespace tq {
namespace {

constexpr size_t kRowsPerTask = 64;  // queries a thread prepares at a time

bool finite_row(const float* x, size_t dim) {
  for (size_t j = 0; j < dim; ++j)
    if (!std::isfinite(x[j])) return false;
  return true;
}

// Row q normalised (cosine, as exact.h normalises) and centred into out; returns its score constant.
float centre_row(const Kernels& k, ExactMetric metric, const float* q, size_t dim, const float* mean, float* out) {
  if (metric == ExactMetric::kCosine) {
    normalise(k, q, dim, out);
    q = out;
  }
  double ip = 0, sq = 0;
  for (size_t j = 0; j < dim; ++j) {
    const float x = q[j];
    out[j] = x - mean[j];
    ip += double(x) * mean[j];
    sq += double(out[j]) * out[j];
  }
  return float(metric == ExactMetric::kL2 ? -sq : ip);
}

}  // namespace

int64_t prepare_queries(const Kernels& k, ExactMetric metric, const float* q, size_t nq, size_t dim, const float* mean,
                        const Rotation* rotation, float* out, float* constant, int threads,
                        const InterruptCheck& interrupted) {
  for (size_t i = 0; i < nq; ++i)
    if (!finite_row(q + i * dim, dim)) return int64_t(i);
  parallel_for(nq, kRowsPerTask, threads, interrupted, [&](size_t b, size_t e) {
    std::vector<float> scratch(dim);
    for (size_t i = b; i < e; ++i) {
      constant[i] = centre_row(k, metric, q + i * dim, dim, mean, out + i * dim);
      if (rotation) rotation->forward(k, out + i * dim, out + i * dim, scratch.data());
    }
  });
  return -1;
}

void finish_hits(float* scores, const int64_t* slots, size_t nq, size_t width, const float* constant,
                 const int64_t* ids, size_t n_ids, bool clamp, int64_t* found) {
  const size_t cells = nq * width;
  for (size_t c = 0; c < cells; ++c)
    TQ_CHECK(slots[c] >= -1 && slots[c] < int64_t(n_ids),
             "slot " + std::to_string(slots[c]) + " is out of range for " + std::to_string(n_ids) + " ids");
  for (size_t i = 0; i < nq; ++i) {
    const float add = constant ? constant[i] : 0.0f;
    for (size_t c = i * width; c < (i + 1) * width; ++c) {
      float s = constant ? scores[c] + add : scores[c];
      if (clamp && std::isfinite(s)) s = std::min(1.0f, std::max(-1.0f, s));
      scores[c] = s;
      found[c] = slots[c] < 0 ? -1 : ids[slots[c]];
    }
  }
}

}  // namespace tq
