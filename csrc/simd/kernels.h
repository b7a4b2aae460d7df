// The kernel table: plain function pointers over float/uint8 buffers, one table per ISA.
//
// Contract shared by every table (the scalar one in kernels_scalar.cpp is the reference):
// * Everything that feeds codes (mul, scale, fwht, butterfly, dot, quantize) must give bit-identical
//   results on every ISA. Reductions therefore use one canonical order: eight lane accumulators
//   (element j goes to lane j % 8, products rounded before the add) folded as
//   ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).
// * Scan scores only need to agree with the reference within float rounding (1e-5 relative).
// * Indices are "the number of boundaries strictly below the value" (ties go to the lower cell).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {

struct Kernels {
  const char* name;
  // x[i] *= s[i]
  void (*mul)(float* x, const float* s, size_t n);
  // x[i] *= c
  void (*scale)(float* x, float c, size_t n);
  // Unnormalised Walsh-Hadamard transform of n = 2^k floats in place (norm grows by sqrt(n)).
  void (*fwht)(float* x, size_t n);
  // (a[i], b[i]) <- ((a[i] + b[i]) * c, (a[i] - b[i]) * c) for i < n: one Kac-walk layer (c = 1/sqrt 2).
  void (*kac)(float* a, float* b, size_t n, float c);
  // Canonical-order inner product (see above).
  float (*dot)(const float* a, const float* b, size_t n);
  // Alg. 1 quantisation of one rotated row: u = y * inv_norm; idx[j] = #{k : bounds[k] < u[j]}
  // over 2^bits - 1 sorted bounds; also returns <u, c[idx]> and ||c[idx]||^2 in canonical order.
  void (*quantize)(const float* y, float inv_norm, const float* bounds, const float* centroids,
                   int bits, size_t n, uint8_t* idx, float* dot_uc, float* sq_c);
  // out[j] = centroids[idx[j]]
  void (*lookup)(const uint8_t* idx, const float* centroids, size_t n, float* out);
  // Packs n indices of `bits` bits LSB-first into ceil(n*bits/8) bytes (layout: csrc/pack-inl.h).
  void (*pack)(const uint8_t* idx, size_t n, int bits, uint8_t* out);
  void (*unpack)(const uint8_t* in, size_t n, int bits, uint8_t* idx);
  // out[q] = <queries[q], row> for nq rows of `queries` (row stride n), any order of summation.
  void (*dot_many)(const float* queries, size_t nq, const float* row, size_t n, float* out);
};

extern const Kernels kKernelsScalar;
#ifdef TQ_BUILD_AVX2
extern const Kernels kKernelsAVX2;
#endif
#ifdef TQ_BUILD_AVX512
extern const Kernels kKernelsAVX512;
#endif

}  // namespace tq
