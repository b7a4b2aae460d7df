// Exact re-ranking: candidates scored on their original float vectors (a collection's vectors file).
//
// Scores are similarities, best first, computed from float32 values with the kernels' canonical-order
// inner product (Kernels::dot, simd/reduce-inl.h), so every kernel set returns the same bits:
// * kIp: <q, x>;  kL2: -<x - q, x - q> (the differences rounded first);
// * kCosine: <q / |q|, x / |x|> clamped to [-1, 1], each vector divided elementwise by its norm
//   (sqrt of its canonical-order square sum; a zero vector stays zero).
// This is numpy's arithmetic (normalise, then take the inner product) with the sums in the canonical
// order instead of numpy's, so scores may differ from a numpy evaluation in the last bits.
#pragma once
#include <cstddef>
#include <cstdint>

#include "simd/kernels.h"

namespace tq {

enum class ExactMetric { kIp, kCosine, kL2 };

// Stored row formats: float32, or IEEE half (converted exactly to float32 before scoring).
enum class RowFormat { kFloat32, kFloat16 };

// x divided elementwise by its norm (the canonical-order square sum's root) into out, as numpy normalises; a zero
// vector is copied unchanged. x and out may be the same buffer.
void normalise(const Kernels& k, const float* x, size_t dim, float* out);

// out[i] = the score of query q against rows[i] (n rows of dim floats).
void exact_scores(const Kernels& k, ExactMetric metric, const float* q, const float* rows, size_t n, size_t dim,
                  float* out);

// For each of nq queries (dim floats each), the best k of its c candidates cands[i * c ..] (row numbers of
// the file `fd` of fixed-width rows; -1: none) into scores/ids (nq * k), best first, ties to the smaller
// row number, -inf / -1 padded. Candidates whose score is not finite are dropped. The rows of a block of
// queries are read once each (read_rows: one pread per run of consecutive rows). Returns -1, or the first
// row number that could not be read (the file is shorter).
int64_t exact_top_file(const Kernels& k, ExactMetric metric, int fd, RowFormat format, const float* queries,
                       size_t nq, size_t dim, const int64_t* cands, size_t c, size_t top, float* scores,
                       int64_t* ids);

}  // namespace tq
