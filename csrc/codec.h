// TurboQuant MSE codec (Alg. 1 of arXiv 2504.19874) over packed codes, plus the scan primitive.
//
// Per vector x the codec stores: the packed indices of the rotated direction R x / ||x|| (layout in
// pack-inl.h), the norm ||x|| and a scale s (1 for "none"; 1/<u, c> "unbiased"; <u, c>/||c||^2 "lsq",
// where u is the rotated unit vector and c its centroids). Decoding gives ||x|| * s * R^T c and the
// inner-product estimate is <q, decode(x)> = ||x|| * s * <R q, c>, so the two always agree.
// Rounding: "nearest" puts each coordinate on its nearest centroid; "angle" (extended RaBitQ's idea on the
// Lloyd-Max grid) rounds t * u to the nearest centroids for each t of a small grid around 1 and keeps the
// code whose direction c / ||c|| has the largest cosine with u (t = 1 is in the grid: never worse).
#pragma once
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "rotation.h"
#include "simd/kernels.h"

namespace tq {

enum class ScaleMode { None = 0, Unbiased = 1, Lsq = 2 };

class MSECodec {
 public:
  // centroids: 2^bits sorted values on the unit-sphere scale; boundaries are float32 midpoints.
  // angle_steps: 0 for nearest rounding, else the number of grid points each side of t = 1 (angle rounding).
  MSECodec(Rotation rotation, int bits, const std::vector<float>& centroids, const Kernels* kernels,
           int angle_steps = 0);

  size_t dim() const { return rotation_.dim(); }
  int bits() const { return bits_; }
  int angle_steps() const { return int(grid_.size() / 2); }
  size_t row_bytes() const { return row_bytes_; }
  const Kernels& kernels() const { return *k_; }
  const Rotation& rotation() const { return rotation_; }
  // Centroids padded with zeros to max(16, 2^bits) floats (kernels read whole registers).
  const float* centroids() const { return centroids_.data(); }

  // x: n x dim. codes: n x row_bytes, norms and scales: n. Returns the first row whose squared norm is
  // not finite (a NaN or Inf in the row, or values too large for float32), or -1; such rows are skipped.
  int64_t encode(const float* x, size_t n, ScaleMode mode, uint8_t* codes, float* norms, float* scales, int threads,
                 const InterruptCheck& interrupted) const;
  // out: n x dim, out[i] = norms[i] * scales[i] * R^T c_i (scales may be null: 1).
  void decode(const uint8_t* codes, const float* norms, const float* scales, size_t n, float* out, int threads,
              const InterruptCheck& interrupted) const;

 private:
  Rotation rotation_;
  int bits_;
  size_t row_bytes_;
  std::vector<float> centroids_, bounds_, levels_;
  std::vector<float> grid_;  // angle rounding: the scales t != 1 tried besides the nearest code (empty: nearest)
  const Kernels* k_;
  // Angle rounding of one rotated row y (inverse norm inv): best code into idx, its <u, c> and ||c||^2.
  void round_by_angle(const float* y, float inv, uint8_t* idx, uint8_t* trial, float* dot_uc, float* sq_c) const;
};

// out: n x dim rows R x_i (inverse: R^T x_i); x and out may be the same buffer.
void rotate_rows(const Rotation& rotation, const Kernels& k, const float* x, size_t n, bool inverse, float* out,
                 int threads, const InterruptCheck& interrupted);

// The scan primitive: out[q * ld + i] = factors[i] * <queries[q], centroids[codes_i]> for nq rotated
// queries and n packed rows of dim indices of `bits` bits (factors may be null: 1).
void scan_ip(const Kernels& k, const float* queries, size_t nq, const uint8_t* codes, size_t n, size_t dim, int bits,
             const float* centroids, const float* factors, float* out, size_t ld, int threads,
             const InterruptCheck& interrupted);

}  // namespace tq
