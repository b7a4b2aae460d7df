// The code scorer: one place that turns a rotated query and packed code rows into scores, shared by
// FlatStore (flat.h), HnswGraph (hnsw.h) and ChamferScorer (multivector.h), as FAISS's DistanceComputer
// serves its flat and graph indexes.
//
// Score of a row with per-vector floats (a, b) for a rotated query q': a * <q', c> + b, c the centroids
// of the row's code (flat.h). The inner product is computed exactly in integers:
// * query preparation rounds q' to integers (|q| <= 63, or 127 for 8-bit codes; query-inl.h), giving `unit`
//   and `offset`;
// * each centroid is stored as an integer value: for codes of up to 7 bits the u8 table entry
//   128 + round(127 c / max|c|); for 8-bit codes W + round(W c / max|c|), W = wide_zero(dim) (up to 4095),
//   held as two u8 planes, high = value >> 7 and low = value & 127 (the 8-bit kernels add
//   128 * (q . high) + (q . low)). 256 centroids lie closer than max|c| / 127 near zero, so a u8 table merged
//   neighbours (WordNet 8-bit recall@10 0.992 with it, 0.996 with the planes, 0.997 for float scores);
// * raw = sum_j q[j] * value[code_j], and the score is a * ((raw - offset) * unit) + b, rounded exactly
//   as simd/score-inl.h (score_lanes, or the kernels' score_block, which round the same way).
// Integer sums do not depend on summation order, so every kernel set returns identical scores.
//
// Query layouts. A QueryI8 from prepare() is laid out for one packed row (pack-inl.h): for 4-bit codes
// per 64-byte chunk of the row as 64 even-dim then 64 odd-dim values (Kernels::dot_row4), otherwise
// plainly, dim values. prepare_into() writes the plain layout into a caller's zero-padded buffer, for
// the blocked kernels (FlatStore) and the decoded-row kernel (ChamferScorer).
//
// A stored row can act as the query (HNSW neighbour selection): prepare_row() decodes it through a
// second table, round(range c / max|c|), so |q| <= range holds as for rounded queries.
//
// Filters are bitsets over slots, bit i of word i / 64; allowed() and allowed_bits() are the only tests,
// Kernels::mask_bits builds one from a mask over ids.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "simd/kernels.h"
#include "simd/score-inl.h"

namespace tq {

// True when slot may be returned: no filter, or its bit is set.
inline bool allowed(const uint64_t* bitset, size_t slot) {
  return !bitset || ((bitset[slot / 64] >> (slot % 64)) & 1);
}

// Bits [first, first + width) of a filter as a mask (all ones without a filter). The range must not
// straddle a 64-bit word (first a multiple of width, width a power of two <= 64).
inline uint64_t allowed_bits(const uint64_t* bitset, size_t first, size_t width) {
  const uint64_t all = width >= 64 ? ~uint64_t(0) : (uint64_t(1) << width) - 1;
  return bitset ? (bitset[first / 64] >> (first % 64)) & all : all;
}

// A query rounded for exact int8 scoring: score of a row = a * ((raw - offset) * unit) + b.
struct QueryI8 {
  std::vector<int8_t> q;  // prepare(): the packed-row layout above
  float unit = 0;
  int32_t offset = 0;
};

// Most dims a CodeScorer takes: every integer sum of its scans then stays within int32.
constexpr size_t kMaxScoredDim = 65536;

class CodeScorer {
 public:
  // centroids: the 2^bits sorted codebook values, finite and not all zero. kernels: the table to score
  // with (captured for the scorer's lifetime).
  CodeScorer(size_t dim, int bits, const std::vector<float>& centroids, const Kernels* kernels);

  size_t dim() const { return dim_; }
  int bits() const { return bits_; }
  size_t row_bytes() const { return row_bytes_; }
  const Kernels& kernels() const { return *k_; }
  // The value table the kernels take: centroid index -> 128 + round(127 c / max|c|) (256 entries, zero past
  // 2^bits); for 8-bit codes the two planes of W + round(W c / max|c|), high (256 bytes) then low (256), then the
  // values as uint16 (512 bytes).
  const uint8_t* table() const { return table_; }
  // Value planes of a decoded row (decode_u8): 2 for 8-bit codes, else 1.
  size_t planes() const { return bits_ == 8 ? 2 : 1; }
  // The centroids padded with zeros to max(16, 2^bits) floats (kernels read whole registers).
  const float* centroids() const { return centroids_.data(); }
  // Length of a prepare()d query.
  size_t query_size() const { return bits_ == 4 ? (row_bytes_ + 63) / 64 * 128 : dim_; }

  // Rounds a rotated query (dim floats) into the packed-row layout.
  void prepare(const float* rotated, QueryI8& q) const;
  // Rounds a rotated query into out[0..dim) (plain layout; out must be zeroed past dim by the caller).
  void prepare_into(const float* rotated, int8_t* out, float* unit, int32_t* offset) const;
  // A stored packed row as a query whose scores are scaled by `scale` (unit = centroid_unit * row unit *
  // scale). idx: dim bytes of scratch.
  void prepare_row(const uint8_t* row, float scale, QueryI8& q, uint8_t* idx) const;
  // A row decoded to its u8 values, plane p of planes() at out + p * stride (j < dim). idx: dim bytes of scratch.
  void decode_u8(const uint8_t* row, uint8_t* out, size_t stride, uint8_t* idx) const;
  // The exact integer sum of a decode_u8() row (planes at stride apart, n a multiple of 64 and zero past dim)
  // against a prepare_into() query.
  int32_t raw_decoded(const uint8_t* decoded, size_t stride, const int8_t* q, size_t n) const {
    const int32_t first = k_->dot_u8i8(decoded, q, n);
    return bits_ == 8 ? 128 * first + k_->dot_u8i8(decoded + stride, q, n) : first;
  }

  // The exact integer sum of one packed row against a prepare()d query. idx: dim bytes of scratch
  // (unused at 4 and 8 bits, which have row kernels).
  int32_t raw_row(const QueryI8& q, const uint8_t* row, uint8_t* idx) const {
    if (bits_ == 4) return k_->dot_row4(row, row_bytes_, q.q.data(), table_);
    if (bits_ == 8) return k_->dot_row8(row, dim_, q.q.data(), table_);
    k_->unpack(row, dim_, bits_, idx);
    int32_t raw = 0;
    for (size_t j = 0; j < dim_; ++j) raw += int32_t(q.q[j]) * table_[idx[j]];
    return raw;
  }

  // The score of one packed row with its per-vector floats a, b.
  float score_row(const QueryI8& q, const uint8_t* row, float a, float b, uint8_t* idx) const {
    const int32_t raw = raw_row(q, row, idx);
    float out;
    score_lanes(&raw, 1, q.offset, q.unit, 0.0f, &a, &b, -std::numeric_limits<float>::infinity(), &out);
    return out;
  }

 private:
  size_t dim_, row_bytes_;
  int bits_;
  int range_;              // |q| <= range_: 63, or 127 for 8-bit codes
  int32_t zero_;           // the value of a zero centroid: 128, or wide_zero(dim) for 8-bit codes
  float centroid_unit_ = 1, row_unit_ = 1;  // max|c| / 127 (/ W at 8 bits), max|c| / range_
  uint8_t table_[1024] = {};
  int8_t row_table_[256] = {};  // centroid -> round(range_ c / max|c|): stored rows as queries
  std::vector<float> centroids_;
  const Kernels* k_;
};

}  // namespace tq
