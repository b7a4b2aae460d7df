// Seeded orthogonal transforms of R^d for any d.
//
// FhtKac (the default, O(d log d)): `steps` times { random signs on all d coordinates ->
// Walsh-Hadamard on a power-of-two block p = 2^floor(log2 d), the first p coordinates on even steps
// and the last p on odd ones -> after each odd step, when p < d, one Kac-walk layer rotating
// (x_i, x_{i+h}) by 45 degrees, h = floor(d/2) }. Two overlapping blocks before each Kac layer mix
// spiky inputs (one-hot, outlier coordinates) as well as a dense Haar rotation does at 3 steps; a Kac
// layer after every block does not. Each step is orthogonal, so the whole map is, with no padding. The
// 1/sqrt(p) of each Hadamard block is folded into that step's signs, so the inverse reuses them. Dense: a d x d orthogonal matrix given by the
// caller (the QR-of-Gaussian reference).
#pragma once
#include <cstdint>
#include <vector>

#include "simd/kernels.h"

namespace tq {

class Rotation {
 public:
  enum class Kind { FhtKac = 1, Dense = 2 };

  static Rotation fht_kac(size_t dim, uint64_t seed, int steps);
  // matrix: row-major d x d, orthogonal; forward is y = M x.
  static Rotation dense(size_t dim, std::vector<float> matrix);

  Kind kind() const { return kind_; }
  size_t dim() const { return dim_; }
  int steps() const { return steps_; }

  // y = R x. x and y may be the same buffer; `scratch` holds dim floats (Dense only).
  void forward(const Kernels& k, const float* x, float* y, float* scratch) const;
  // y = R^T x, the exact inverse.
  void inverse(const Kernels& k, const float* x, float* y, float* scratch) const;
  // The FhtKac parameters as kernels take them (meaningless for Dense).
  RotationPlan plan() const { return {dim_, block_, half_, steps_, signs_.data(), 0.70710678118654752440f}; }

 private:
  Rotation() = default;
  size_t block_offset(int step) const { return (step % 2 == 0) ? 0 : dim_ - block_; }
  bool kac_after(int step) const { return kac_ && step % 2 == 1; }

  Kind kind_ = Kind::FhtKac;
  size_t dim_ = 0, block_ = 1, half_ = 0;
  int steps_ = 0;
  bool kac_ = false;
  std::vector<float> signs_;  // steps x dim: +-1, times 1/sqrt(p) on that step's Hadamard block
  std::vector<float> matrix_, matrix_t_;      // Dense only
};

}  // namespace tq
