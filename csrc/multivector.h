// Multi-vector (late-interaction) retrieval: MUVERA fixed-dimensional encodings (Jayaram et al., NeurIPS
// 2024, arXiv 2405.19504) and Chamfer / MaxSim scoring of queries against documents stored as TurboQuant
// token codes.
#pragma once
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "scorer.h"
#include "simd/kernels.h"

namespace tq {

// The block layout of an FDE: reps x buckets blocks of `width` floats.
struct FdeShape {
  size_t reps, buckets, width;
  size_t dim() const { return reps * buckets * width; }
};

// Aggregates projected tokens into one FDE per set (set i = tokens offsets[i]..offsets[i+1]).
// proj: tokens x proj_cols floats, rep r's block input at column r * width, or at column 0 for every rep
// when proj_cols == width (identity projection). buckets: tokens x reps SimHash sign patterns.
// average: divide each bucket's sum by its count (documents); fill: an empty bucket takes the token whose
// pattern differs from the bucket's in the fewest bits, the first such token on ties; normalize: scale
// every non-zero block to unit norm. out: sets x shape.dim().
void fde_aggregate(const float* proj, size_t proj_cols, const uint32_t* buckets, const int64_t* offsets, size_t sets,
                   const FdeShape& shape, bool average, bool fill, bool normalize, float* out, int threads,
                   const InterruptCheck& interrupted);

// out[i, slot[j]] += sign[j] * in[i, j]: a Count-Sketch projection of n rows from in_dim to out_dim.
void count_sketch(const float* in, size_t n, size_t in_dim, const uint32_t* slot, const float* sign, size_t out_dim,
                  float* out);

// Document token codes, as laid out by the Python index: row t of `codes` (row_bytes each) is one token,
// scored as a[t] * <q', centroids[code]>; document d owns rows starts[d] .. starts[d] + counts[d].
struct TokenRows {
  const uint8_t* codes;
  const float* a;
  size_t rows;
  const int64_t* starts;
  const int64_t* counts;
  size_t docs;
};

// Chamfer (sum over query tokens of the best token score) over TurboQuant token codes. Each rotated query
// token is rounded to int8 and every candidate token decoded to its u8 value plane(s) once (both by the
// shared code scorer, scorer.h), so scores are exact integer dot products and identical on every kernel set.
class ChamferScorer {
 public:
  ChamferScorer(size_t dim, int bits, const std::vector<float>& centroids, const Kernels* kernels);
  size_t dim() const { return scorer_.dim(); }
  size_t row_bytes() const { return scorer_.row_bytes(); }

  // scores[q * c + j] = Chamfer(query q, document cand[q * c + j]), -inf where cand < 0.
  // queries: rotated query tokens, query q = rows qoff[q] .. qoff[q + 1].
  void score(const TokenRows& docs, const float* queries, const int64_t* qoff, size_t nq, const int64_t* cand,
             size_t c, float* scores, int threads, const InterruptCheck& interrupted) const;

 private:
  CodeScorer scorer_;
  size_t padded_;  // dim rounded up to 64 (Kernels::dot_u8i8)
};

}  // namespace tq
