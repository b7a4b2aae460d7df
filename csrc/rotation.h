// Seeded orthogonal transforms of R^d for any d.
//
// FhtKac (the default, O(d log d)): `rounds` times { random signs on all d coordinates ->
// Walsh-Hadamard on a power-of-two block p = 2^floor(log2 d), the first p coordinates on even rounds
// and the last p on odd ones -> when p < d, one Kac-walk layer rotating (x_i, x_{i+h}) by 45 degrees,
// h = floor(d/2) }. Each step is orthogonal, so the whole map is, with no padding. Normalisation
// constant of the Hadamard block is folded into that round's signs, so the inverse reuses them. Dense: a d x d orthogonal matrix given by the
// caller (the QR-of-Gaussian reference).
#pragma once
#include <cstdint>
#include <vector>

#include "simd/kernels.h"

namespace tq {

class Rotation {
 public:
  enum class Kind { FhtKac = 1, Dense = 2 };

  static Rotation fht_kac(size_t dim, uint64_t seed, int rounds);
  // matrix: row-major d x d, orthogonal; forward is y = M x.
  static Rotation dense(size_t dim, std::vector<float> matrix);

  Kind kind() const { return kind_; }
  size_t dim() const { return dim_; }
  int rounds() const { return rounds_; }

  // y = R x. x and y may be the same buffer; `scratch` holds dim floats (Dense only).
  void forward(const Kernels& k, const float* x, float* y, float* scratch) const;
  // y = R^T x, the exact inverse.
  void inverse(const Kernels& k, const float* x, float* y, float* scratch) const;

 private:
  Rotation() = default;
  size_t block_offset(int round) const { return (round % 2 == 0) ? 0 : dim_ - block_; }

  Kind kind_ = Kind::FhtKac;
  size_t dim_ = 0, block_ = 1, half_ = 0;
  int rounds_ = 0;
  bool kac_ = false;
  std::vector<float> signs_;  // rounds x dim: +-1, times 1/sqrt(p) on that round's Hadamard block
  std::vector<float> matrix_, matrix_t_;      // Dense only
};

}  // namespace tq
