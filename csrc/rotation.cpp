#include "rotation.h"

#include <cmath>
#include <cstring>

#include "common.h"
#include "random.h"

namespace tq {

Rotation Rotation::fht_kac(size_t dim, uint64_t seed, int steps) {
  TQ_CHECK(dim >= 1, "rotation dim must be >= 1");
  TQ_CHECK(steps >= 1 && steps <= 16, "rotation steps must be in 1..16");
  Rotation r;
  r.kind_ = Kind::FhtKac;
  r.dim_ = dim;
  r.steps_ = steps;
  while (r.block_ * 2 <= dim) r.block_ *= 2;
  r.kac_ = r.block_ < dim;
  r.half_ = r.kac_ ? dim / 2 : 0;
  // The unnormalised Hadamard multiplies its block by sqrt(p): pre-scale the block by 1/sqrt(p).
  const float c = float(1.0 / std::sqrt(double(r.block_)));
  r.signs_.resize(size_t(steps) * dim);
  for (int k = 0; k < steps; ++k) {
    const std::vector<float> s = random_signs(derive_seed(seed, 100 + uint64_t(k)), dim);
    const size_t lo = r.block_offset(k), hi = lo + r.block_;
    for (size_t i = 0; i < dim; ++i) r.signs_[k * dim + i] = (i >= lo && i < hi) ? s[i] * c : s[i];
  }
  return r;
}

Rotation Rotation::dense(size_t dim, std::vector<float> matrix) {
  TQ_CHECK(dim >= 1 && matrix.size() == dim * dim, "dense rotation needs a dim x dim matrix");
  Rotation r;
  r.kind_ = Kind::Dense;
  r.dim_ = dim;
  r.matrix_t_.resize(dim * dim);
  for (size_t i = 0; i < dim; ++i)
    for (size_t j = 0; j < dim; ++j) r.matrix_t_[j * dim + i] = matrix[i * dim + j];
  r.matrix_ = std::move(matrix);
  return r;
}

void Rotation::forward(const Kernels& k, const float* x, float* y, float* scratch) const {
  if (kind_ == Kind::Dense) {
    std::memcpy(scratch, x, dim_ * sizeof(float));
    for (size_t i = 0; i < dim_; ++i) y[i] = k.dot(matrix_.data() + i * dim_, scratch, dim_);
    return;
  }
  if (k.rotate && k.rotate(plan(), false, x, y)) return;
  if (y != x) std::memcpy(y, x, dim_ * sizeof(float));
  for (int r = 0; r < steps_; ++r) {
    const float* s = signs_.data() + size_t(r) * dim_;
    const size_t lo = block_offset(r), hi = lo + block_;
    k.mul(y, s, lo);
    k.mul(y + hi, s + hi, dim_ - hi);
    k.fwht(y + lo, s + lo, nullptr, block_);
    if (kac_after(r)) k.kac(y, y + half_, half_, plan().kac_scale);
  }
}

void Rotation::inverse(const Kernels& k, const float* x, float* y, float* scratch) const {
  if (kind_ == Kind::Dense) {
    std::memcpy(scratch, x, dim_ * sizeof(float));
    for (size_t i = 0; i < dim_; ++i) y[i] = k.dot(matrix_t_.data() + i * dim_, scratch, dim_);
    return;
  }
  if (k.rotate && k.rotate(plan(), true, x, y)) return;
  if (y != x) std::memcpy(y, x, dim_ * sizeof(float));
  for (int r = steps_ - 1; r >= 0; --r) {
    const float* s = signs_.data() + size_t(r) * dim_;
    const size_t lo = block_offset(r), hi = lo + block_;
    if (kac_after(r)) k.kac(y, y + half_, half_, plan().kac_scale);
    k.fwht(y + lo, nullptr, s + lo, block_);
    k.mul(y, s, lo);
    k.mul(y + hi, s + hi, dim_ - hi);
  }
}

}  // namespace tq
