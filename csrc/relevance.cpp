#include "relevance.h"

#include <cmath>
#include <limits>
#include <vector>

namespace tq {
namespace {

constexpr double kExpMax = 700.0;  // -logit cap: exp stays finite; 1 / (1 + exp(700)) is 0 in float32

// numpy's pairwise sum (np.add.reduce over a row): 8 partial sums in blocks of up to 128, halves above;
// summing in the same order gives the same double as numpy for any input.
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double s = -0.0;
    for (size_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  size_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

// The logit's per-query part: bias + tail_mean * mean + top * max (+ query . q), in numpy's order.
double row_bias(const float* tail, size_t n, const float* q, size_t dim, const RelevanceWeights& w,
                std::vector<double>& buf) {
  buf.resize(n);
  size_t finite = 0;
  double top = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < n; ++i) {
    const bool ok = std::isfinite(tail[i]);
    buf[i] = ok ? double(tail[i]) : 0.0;
    finite += ok;
    if (ok && buf[i] > top) top = buf[i];
  }
  const double mean = pairwise_sum(buf.data(), n) / double(finite ? finite : 1);
  double bias = w.bias + w.tail_mean * mean;
  if (w.top != 0) bias = bias + w.top * (finite ? top : 0.0);
  if (w.query) {
    double dot = 0;
    for (size_t i = 0; i < dim; ++i) dot += w.query[i] * double(q[i]);
    bias = bias + dot;
  }
  return bias;
}

}  // namespace

void relevance(const Rows<const float>& tail, const Rows<const float>& queries, const RelevanceWeights& w,
               float min_relevance, const Rows<float>& scores, const Rows<int64_t>& ids, float* rel) {
  const float below_one = std::nextafter(1.0f, 0.0f);
  std::vector<double> buf;
  for (size_t i = 0; i < scores.rows; ++i) {
    const double bias = row_bias(tail.row(i), tail.cols, w.query ? queries.row(i) : nullptr, queries.cols, w, buf);
    float* s = scores.row(i);
    int64_t* id = ids.data ? ids.row(i) : nullptr;
    float* r = rel + i * scores.cols;
    for (size_t j = 0; j < scores.cols; ++j) {
      const double z = std::fmin(double(s[j]) * -w.score - bias, kExpMax);
      r[j] = std::fmin(float(1.0 / (std::exp(z) + 1.0)), below_one);
      if (min_relevance > 0 && r[j] < min_relevance) {
        s[j] = -std::numeric_limits<float>::infinity();
        if (id) id[j] = -1;
        r[j] = 0.0f;
      }
    }
  }
}

}  // namespace tq
