#include "multivector.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common.h"

namespace tq {
namespace {

void fde_one(const float* proj, size_t proj_cols, const uint32_t* buckets, size_t begin, size_t end,
             const FdeShape& shape, bool average, bool fill, bool normalize, float* out, std::vector<uint32_t>& count) {
  const size_t R = shape.reps, B = shape.buckets, W = shape.width;
  const bool shared = proj_cols == W;
  std::fill(out, out + shape.dim(), 0.0f);
  for (size_t r = 0; r < R; ++r) {
    float* rep = out + r * B * W;
    const size_t col = shared ? 0 : r * W;
    std::fill(count.begin(), count.end(), 0u);
    for (size_t t = begin; t < end; ++t) {
      const uint32_t b = buckets[t * R + r];
      const float* x = proj + t * proj_cols + col;
      float* block = rep + size_t(b) * W;
      for (size_t j = 0; j < W; ++j) block[j] += x[j];
      ++count[b];
    }
    for (size_t b = 0; b < B; ++b) {
      float* block = rep + b * W;
      if (count[b] > 1 && average) {
        const float inv = 1.0f / float(count[b]);
        for (size_t j = 0; j < W; ++j) block[j] *= inv;
      } else if (count[b] == 0 && fill) {
        size_t best = begin;
        int best_bits = std::numeric_limits<int>::max();
        for (size_t t = begin; t < end; ++t) {
          const int d = __builtin_popcount(buckets[t * R + r] ^ uint32_t(b));
          if (d < best_bits) best_bits = d, best = t;
        }
        std::copy_n(proj + best * proj_cols + col, W, block);
      }
      if (normalize) {
        double sq = 0;
        for (size_t j = 0; j < W; ++j) sq += double(block[j]) * block[j];
        if (sq > 0) {
          const float inv = float(1.0 / std::sqrt(sq));
          for (size_t j = 0; j < W; ++j) block[j] *= inv;
        }
      }
    }
  }
}

}  // namespace

void fde_aggregate(const float* proj, size_t proj_cols, const uint32_t* buckets, const int64_t* offsets, size_t sets,
                   const FdeShape& shape, bool average, bool fill, bool normalize, float* out, int threads,
                   const InterruptCheck& interrupted) {
  TQ_CHECK(proj_cols == shape.width || proj_cols == shape.reps * shape.width, "projection has the wrong width");
  for (size_t i = 0; i < sets; ++i)
    TQ_CHECK(offsets[i] >= 0 && offsets[i] <= offsets[i + 1] && (!fill || offsets[i] < offsets[i + 1]),
             "token offsets must be non-decreasing (and sets non-empty when filling)");
  for (size_t t = 0; t < size_t(sets ? offsets[sets] : 0) * shape.reps; ++t)
    TQ_CHECK(buckets[t] < shape.buckets, "bucket index out of range");
  parallel_for(sets, 16, threads, interrupted, [&](size_t lo, size_t hi) {
    std::vector<uint32_t> count(shape.buckets);
    for (size_t i = lo; i < hi; ++i)
      fde_one(proj, proj_cols, buckets, size_t(offsets[i]), size_t(offsets[i + 1]), shape, average, fill, normalize,
              out + i * shape.dim(), count);
  });
}

void count_sketch(const float* in, size_t n, size_t in_dim, const uint32_t* slot, const float* sign, size_t out_dim,
                  float* out) {
  for (size_t j = 0; j < in_dim; ++j) TQ_CHECK(slot[j] < out_dim, "sketch slot out of range");
  for (size_t i = 0; i < n; ++i) {
    const float* x = in + i * in_dim;
    float* y = out + i * out_dim;
    std::fill(y, y + out_dim, 0.0f);
    for (size_t j = 0; j < in_dim; ++j) y[slot[j]] += sign[j] * x[j];
  }
}

ChamferScorer::ChamferScorer(size_t dim, int bits, const std::vector<float>& centroids, const Kernels* kernels)
    : scorer_(dim, bits, centroids, kernels), padded_((dim + 63) / 64 * 64) {}

void ChamferScorer::score(const TokenRows& docs, const float* queries, const int64_t* qoff, size_t nq,
                          const int64_t* cand, size_t c, float* scores, int threads,
                          const InterruptCheck& interrupted) const {
  for (size_t i = 0; i < nq * c; ++i) {  // only the candidates' ranges: a search must not pay for the collection
    const int64_t d = cand[i];
    TQ_CHECK(d < int64_t(docs.docs), "candidate document out of range");
    TQ_CHECK(d < 0 || (docs.starts[d] >= 0 && docs.counts[d] >= 0 &&
                       size_t(docs.starts[d] + docs.counts[d]) <= docs.rows),
             "document token range out of bounds");
  }
  for (size_t q = 0; q < nq; ++q) TQ_CHECK(qoff[q] >= 0 && qoff[q] <= qoff[q + 1], "query offsets must be sorted");
  const size_t tokens = nq ? size_t(qoff[nq]) : 0;
  // Every query token rounded once: int8 values (zero padded), unit and offset.
  std::vector<int8_t> q8(tokens * padded_, 0);
  std::vector<float> unit(tokens);
  std::vector<int32_t> offset(tokens);
  const size_t dim = scorer_.dim(), row_bytes = scorer_.row_bytes();
  for (size_t t = 0; t < tokens; ++t)
    scorer_.prepare_into(queries + t * dim, q8.data() + t * padded_, &unit[t], &offset[t]);
  parallel_for(nq * c, 8, threads, interrupted, [&](size_t lo, size_t hi) {
    std::vector<uint8_t> idx(dim), row(scorer_.planes() * padded_, 0);
    std::vector<float> best;
    for (size_t p = lo; p < hi; ++p) {
      const int64_t d = cand[p];
      if (d < 0 || docs.counts[d] == 0) {
        scores[p] = -std::numeric_limits<float>::infinity();
        continue;
      }
      const size_t q = p / c, q0 = size_t(qoff[q]), nt = size_t(qoff[q + 1]) - q0;
      best.assign(nt, -std::numeric_limits<float>::infinity());
      for (int64_t t = docs.starts[d]; t < docs.starts[d] + docs.counts[d]; ++t) {
        scorer_.decode_u8(docs.codes + size_t(t) * row_bytes, row.data(), padded_, idx.data());
        const float a = docs.a[t];
        for (size_t i = 0; i < nt; ++i) {
          const int32_t raw = scorer_.raw_decoded(row.data(), padded_, q8.data() + (q0 + i) * padded_, padded_);
          best[i] = std::max(best[i], a * (float(raw - offset[q0 + i]) * unit[q0 + i]));
        }
      }
      double sum = 0;
      for (float v : best) sum += v;
      scores[p] = float(sum);
    }
  });
}

}  // namespace tq
