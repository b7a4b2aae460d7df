#include "scorer.h"

#include <algorithm>
#include <cmath>

#include "common.h"
#include "query-inl.h"

namespace tq {
namespace {

// Where dim j of a query goes in the packed-row layout: plain, or for 4-bit codes split per 64-byte
// chunk of the row into its even then odd dims (Kernels::dot_row4).
size_t row_pos(size_t j, int bits) { return bits == 4 ? (j / 128) * 128 + (j % 2) * 64 + (j % 128) / 2 : j; }

}  // namespace

CodeScorer::CodeScorer(size_t dim, int bits, const std::vector<float>& centroids, const Kernels* kernels)
    : dim_(dim), row_bytes_(packed_row_bytes(dim, bits)), bits_(bits), k_(kernels) {
  TQ_CHECK(dim >= 1, "dim must be >= 1");
  TQ_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8");
  TQ_CHECK(centroids.size() == (size_t(1) << bits), "need 2^bits centroids");
  float cmax = 0;
  for (float c : centroids) {
    TQ_CHECK(std::isfinite(c), "centroids must be finite");
    cmax = std::max(cmax, std::fabs(c));
  }
  TQ_CHECK(cmax > 0, "centroids must not all be zero");
  centroid_unit_ = cmax / 127.0f;
  row_unit_ = cmax / 63.0f;
  for (size_t i = 0; i < centroids.size(); ++i) {
    table_[i] = uint8_t(128 + std::lrint(127.0 * centroids[i] / cmax));
    row_table_[i] = int8_t(std::lrint(63.0 * centroids[i] / cmax));
  }
  centroids_.assign(std::max<size_t>(16, centroids.size()), 0.0f);
  std::copy(centroids.begin(), centroids.end(), centroids_.begin());
}

void CodeScorer::prepare(const float* rotated, QueryI8& q) const {
  q.q.assign(query_size(), 0);
  round_query(rotated, dim_, centroid_unit_, q.q.data(), [this](size_t j) { return row_pos(j, bits_); }, &q.unit,
              &q.offset);
}

void CodeScorer::prepare_into(const float* rotated, int8_t* out, float* unit, int32_t* offset) const {
  round_query(rotated, dim_, centroid_unit_, out, [](size_t j) { return j; }, unit, offset);
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
  q.offset = 128 * sum;
}

void CodeScorer::decode_u8(const uint8_t* row, uint8_t* out, uint8_t* idx) const {
  k_->unpack(row, dim_, bits_, idx);
  for (size_t j = 0; j < dim_; ++j) out[j] = table_[idx[j]];
}

}  // namespace tq
