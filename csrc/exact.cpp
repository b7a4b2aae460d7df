#include "exact.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "rowfile.h"
#include "topk.h"

namespace tq {
namespace {

constexpr size_t kBlockFloats = size_t(1) << 22;  // candidate rows gathered per block of queries (16 MiB)

// IEEE half -> float, exact for every value (zeros, subnormals, infinities, NaN).
float half_to_float(uint16_t h) {
  uint32_t bits = uint32_t(h & 0x7fff) << 13;  // exponent and mantissa in place
  const uint32_t exp = bits & 0x0f800000u;
  bits += (127 - 15) << 23;  // rebias the exponent
  float out;
  if (exp == 0x0f800000u) {  // Inf or NaN: exponent all ones
    bits += (128 - 16) << 23;
    std::memcpy(&out, &bits, 4);
  } else if (exp == 0) {  // zero or subnormal: renormalise through one exact float subtraction
    bits += 1 << 23;
    std::memcpy(&out, &bits, 4);
    out -= 6.103515625e-05f;  // 2^-14
  } else {
    std::memcpy(&out, &bits, 4);
  }
  return (h & 0x8000) ? -out : out;
}

// Scores rows against one query. Cosine keeps the normalised query; tmp holds one row's work.
class RowScorer {
 public:
  RowScorer(const Kernels& k, ExactMetric metric, size_t dim) : k_(k), metric_(metric), dim_(dim), q_(dim), tmp_(dim) {}

  void set_query(const float* q) {
    if (metric_ == ExactMetric::kCosine) {
      normalise(k_, q, dim_, q_.data());
      query_ = q_.data();
    } else {
      query_ = q;
    }
  }

  float score(const float* x) {
    switch (metric_) {
      case ExactMetric::kIp:
        return k_.dot(query_, x, dim_);
      case ExactMetric::kL2:
        for (size_t j = 0; j < dim_; ++j) tmp_[j] = x[j] - query_[j];
        return -k_.dot(tmp_.data(), tmp_.data(), dim_);
      case ExactMetric::kCosine:
        normalise(k_, x, dim_, tmp_.data());
        return std::clamp(k_.dot(query_, tmp_.data(), dim_), -1.0f, 1.0f);
    }
    return 0.0f;
  }

 private:
  const Kernels& k_;
  ExactMetric metric_;
  size_t dim_;
  std::vector<float> q_, tmp_;
  const float* query_ = nullptr;
};

// The rows read for a block of queries, as float32 (rows[i] at vectors + i * dim).
struct Gathered {
  std::vector<int64_t> rows;  // sorted, distinct
  std::vector<float> vectors;
  std::vector<uint16_t> halves;
};

// Reads the distinct candidate rows of cands[0..n) into g; -1, or the first row that could not be read.
int64_t gather(int fd, RowFormat format, size_t dim, const int64_t* cands, size_t n, Gathered& g) {
  g.rows.clear();
  for (size_t i = 0; i < n; ++i)
    if (cands[i] >= 0) g.rows.push_back(cands[i]);
  std::sort(g.rows.begin(), g.rows.end());
  g.rows.erase(std::unique(g.rows.begin(), g.rows.end()), g.rows.end());
  const size_t m = g.rows.size();
  g.vectors.resize(m * dim);
  if (format == RowFormat::kFloat32) {
    uint8_t* out = reinterpret_cast<uint8_t*>(g.vectors.data());
    const size_t got = read_rows(fd, g.rows.data(), m, dim * sizeof(float), out);
    return got == m ? -1 : g.rows[got];
  }
  g.halves.resize(m * dim);
  uint8_t* out = reinterpret_cast<uint8_t*>(g.halves.data());
  const size_t got = read_rows(fd, g.rows.data(), m, dim * sizeof(uint16_t), out);
  if (got != m) return g.rows[got];
  for (size_t j = 0; j < m * dim; ++j) g.vectors[j] = half_to_float(g.halves[j]);
  return -1;
}

}  // namespace

void normalise(const Kernels& k, const float* x, size_t dim, float* out) {
  const float norm = std::sqrt(k.dot(x, x, dim));
  const float by = norm > 0 ? norm : 1.0f;
  for (size_t j = 0; j < dim; ++j) out[j] = x[j] / by;
}

void exact_scores(const Kernels& k, ExactMetric metric, const float* q, const float* rows, size_t n, size_t dim,
                  float* out) {
  RowScorer scorer(k, metric, dim);
  scorer.set_query(q);
  for (size_t i = 0; i < n; ++i) out[i] = scorer.score(rows + i * dim);
}

int64_t exact_top_file(const Kernels& k, ExactMetric metric, int fd, RowFormat format, const float* queries,
                       size_t nq, size_t dim, const int64_t* cands, size_t c, size_t top, float* scores,
                       int64_t* ids) {
  const size_t per_block = std::max<size_t>(1, kBlockFloats / std::max<size_t>(1, c * dim));
  RowScorer scorer(k, metric, dim);
  Gathered g;
  for (size_t b0 = 0; b0 < nq; b0 += per_block) {
    const size_t b1 = std::min(nq, b0 + per_block);
    const int64_t failed = gather(fd, format, dim, cands + b0 * c, (b1 - b0) * c, g);
    if (failed >= 0) return failed;
    for (size_t i = b0; i < b1; ++i) {
      scorer.set_query(queries + i * dim);
      TopK best(top);
      for (const int64_t* cand = cands + i * c; cand < cands + (i + 1) * c; ++cand) {
        if (*cand < 0) continue;
        const size_t at = size_t(std::lower_bound(g.rows.begin(), g.rows.end(), *cand) - g.rows.begin());
        const float s = scorer.score(g.vectors.data() + at * dim);
        if (std::isfinite(s)) best.push(s, *cand);
      }
      best.write(scores + i * top, ids + i * top);
    }
  }
  return -1;
}

}  // namespace tq
