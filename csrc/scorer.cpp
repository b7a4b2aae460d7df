#include "scorer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common.h"
#include "query-inl.h"

namespace tq {
namespace {

// Where dim j of a query goes in the packed-row layout: plain, or for 4-bit codes split per 64-byte
// chunk of the row into its even then odd dims (Kernels::dot_row4).
size_t row_pos(size_t j, int bits) { return bits == 4 ? (j / 128) * 128 + (j % 2) * 64 + (j % 128) / 2 : j; }

// W of the 8-bit value tables (scorer.h): as fine as 4095 steps per max|c| (finer measured no better), capped
// so that every sum of |q| <= 127 times values <= 2 W over dim codes fits int32.
int32_t wide_zero(size_t dim) { return int32_t(std::min<size_t>(4095, (size_t(1) << 31) / (2 * 127 * dim + 1))); }

}  // namespace

CodeScorer::CodeScorer(size_t dim, int bits, const std::vector<float>& centroids, const Kernels* kernels)
    : dim_(dim), row_bytes_(packed_row_bytes(dim, bits)), bits_(bits), k_(kernels) {
  TQ_CHECK(dim >= 1 && dim <= kMaxScoredDim, "dim must be in 1.." + std::to_string(kMaxScoredDim));
  TQ_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8");
  TQ_CHECK(centroids.size() == (size_t(1) << bits), "need 2^bits centroids");
  float cmax = 0;
  for (float c : centroids) {
    TQ_CHECK(std::isfinite(c), "centroids must be finite");
    cmax = std::max(cmax, std::fabs(c));
  }
  TQ_CHECK(cmax > 0, "centroids must not all be zero");
  range_ = bits == 8 ? 127 : 63;
  zero_ = bits == 8 ? wide_zero(dim) : 128;
  const int32_t steps = bits == 8 ? zero_ : 127;
  centroid_unit_ = cmax / float(steps);
  row_unit_ = cmax / float(range_);
  for (size_t i = 0; i < centroids.size(); ++i) {
    const int32_t value = zero_ + int32_t(std::lrint(double(steps) * centroids[i] / cmax));
    if (bits == 8) {
      table_[i] = uint8_t(value >> 7);
      table_[256 + i] = uint8_t(value & 127);
      const uint16_t v16 = uint16_t(value);
      std::memcpy(table_ + 512 + 2 * i, &v16, 2);
    } else {
      table_[i] = uint8_t(value);
    }
    row_table_[i] = int8_t(std::lrint(double(range_) * centroids[i] / cmax));
  }
  centroids_.assign(std::max<size_t>(16, centroids.size()), 0.0f);
  std::copy(centroids.begin(), centroids.end(), centroids_.begin());
}

void CodeScorer::prepare(const float* rotated, QueryI8& q) const {
  q.q.assign(query_size(), 0);
  round_query(rotated, dim_, range_, zero_, centroid_unit_, q.q.data(),
              [this](size_t j) { return row_pos(j, bits_); }, &q.unit, &q.offset);
}

void CodeScorer::prepare_into(const float* rotated, int8_t* out, float* unit, int32_t* offset) const {
  round_query(rotated, dim_, range_, zero_, centroid_unit_, out, [](size_t j) { return j; }, unit, offset);
}

void CodeScorer::prepare_row(const uint8_t* row, float scale, QueryI8& q, uint8_t* idx) const {
  q.q.assign(query_size(), 0);
  int32_t sum = 0;
  if (bits_ == 4) {  // byte i holds dims 2i, 2i + 1: they land at 128c + r and 128c + 64 + r
    for (size_t i = 0; i < row_bytes_; ++i) {
      int8_t* out = q.q.data() + (i / 64) * 128 + i % 64;
      out[0] = row_table_[row[i] & 15];
      out[64] = (2 * i + 1 < dim_) ? row_table_[row[i] >> 4] : 0;
      sum += out[0] + out[64];
    }
  } else {
    k_->unpack(row, dim_, bits_, idx);
    for (size_t j = 0; j < dim_; ++j) sum += q.q[j] = row_table_[idx[j]];
  }
  q.unit = centroid_unit_ * row_unit_ * scale;
  q.offset = zero_ * sum;
}

void CodeScorer::decode_u8(const uint8_t* row, uint8_t* out, size_t stride, uint8_t* idx) const {
  k_->unpack(row, dim_, bits_, idx);
  for (size_t p = 0; p < planes(); ++p)
    for (size_t j = 0; j < dim_; ++j) out[p * stride + j] = table_[p * 256 + idx[j]];
}

}  // namespace tq
