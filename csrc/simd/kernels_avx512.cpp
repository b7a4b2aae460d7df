// AVX-512 (F/BW/VL/DQ) kernel table. Streaming ops use 16 lanes; reductions keep the canonical
// eight-lane order of kernels.h by folding each 16-lane product into the 8-lane accumulators
// low half first, so codes stay bit-identical to the scalar reference.
#include "simd/kernels.h"
#include "simd/kernels_avx2-inl.h"

namespace tq {
namespace avx512 {
namespace {

void mul(float* x, const float* s, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(s + i)));
  avx2::mul(x + i, s + i, n - i);
}

void scale(float* x, float c, size_t n) {
  const __m512 vc = _mm512_set1_ps(c);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vc));
  avx2::scale(x + i, c, n - i);
}

void bfly(float* a, float* b, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(a + i), y = _mm512_loadu_ps(b + i);
    _mm512_storeu_ps(a + i, _mm512_add_ps(x, y));
    _mm512_storeu_ps(b + i, _mm512_sub_ps(x, y));
  }
  avx2::bfly(a + i, b + i, n - i);
}

void kac(float* a, float* b, size_t n, float c) {
  const __m512 vc = _mm512_set1_ps(c);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(a + i), y = _mm512_loadu_ps(b + i);
    _mm512_storeu_ps(a + i, _mm512_mul_ps(_mm512_add_ps(x, y), vc));
    _mm512_storeu_ps(b + i, _mm512_mul_ps(_mm512_sub_ps(x, y), vc));
  }
  avx2::kac(a + i, b + i, n - i, c);
}

__m512 neg_mask(int pattern) {
  alignas(64) int m[16];
  for (int i = 0; i < 16; ++i) m[i] = ((pattern >> i) & 1) ? int(0x80000000) : 0;
  return _mm512_castsi512_ps(_mm512_load_si512(m));
}

// Stages h = 1, 2, 4, 8 inside one register (same butterflies as the scalar reference).
__m512 fwht16(__m512 v, __m512 s1, __m512 s2, __m512 s4, __m512 s8) {
  v = _mm512_add_ps(_mm512_shuffle_ps(v, v, _MM_SHUFFLE(2, 2, 0, 0)),
                    _mm512_xor_ps(_mm512_shuffle_ps(v, v, _MM_SHUFFLE(3, 3, 1, 1)), s1));
  v = _mm512_add_ps(_mm512_shuffle_ps(v, v, _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm512_xor_ps(_mm512_shuffle_ps(v, v, _MM_SHUFFLE(3, 2, 3, 2)), s2));
  v = _mm512_add_ps(_mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 2, 0, 0)),
                    _mm512_xor_ps(_mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(3, 3, 1, 1)), s4));
  v = _mm512_add_ps(_mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm512_xor_ps(_mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(3, 2, 3, 2)), s8));
  return v;
}

void fwht(float* x, size_t n) {
  if (n < 16) return avx2::fwht(x, n);
  const __m512 s1 = neg_mask(0xAAAA), s2 = neg_mask(0xCCCC), s4 = neg_mask(0xF0F0), s8 = neg_mask(0xFF00);
  for (size_t i = 0; i < n; i += 16) _mm512_storeu_ps(x + i, fwht16(_mm512_loadu_ps(x + i), s1, s2, s4, s8));
  for (size_t h = 16; h < n; h <<= 1)
    for (size_t i = 0; i < n; i += 2 * h) bfly(x + i, x + i + h, h);
}

// Adds the 16 products to the 8 canonical lanes: elements j..j+7 first, then j+8..j+15.
inline __m256 fold16(__m256 acc, __m512 p) {
  acc = _mm256_add_ps(acc, _mm512_castps512_ps256(p));
  return _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p), 1)));
}

float dot(const float* a, const float* b, size_t n) {
  __m256 acc = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= n; j += 16) acc = fold16(acc, _mm512_mul_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j)));
  for (; j + 8 <= n; j += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  for (size_t t = 0; j + t < n; ++t) lanes[t] = lanes[t] + a[j + t] * b[j + t];
  return reduce8(lanes);
}

__m512i cell16(__m512 u, const float* bounds, int bits) {
  __m512i pos = _mm512_setzero_si512();
  if (bits <= 4) {
    const __m512i one = _mm512_set1_epi32(1);
    const int nb = (1 << bits) - 1;
    for (int k = 0; k < nb; ++k)
      pos = _mm512_mask_add_epi32(pos, _mm512_cmp_ps_mask(_mm512_set1_ps(bounds[k]), u, _CMP_LT_OQ), pos, one);
    return pos;
  }
  for (int step = 1 << (bits - 1); step > 0; step >>= 1) {
    const __m512i probe = _mm512_add_epi32(pos, _mm512_set1_epi32(step - 1));
    const __mmask16 m = _mm512_cmp_ps_mask(_mm512_i32gather_ps(probe, bounds, 4), u, _CMP_LT_OQ);
    pos = _mm512_mask_add_epi32(pos, m, pos, _mm512_set1_epi32(step));
  }
  return pos;
}

void quantize(const float* y, float inv_norm, const float* bounds, const float* centroids, int bits, size_t n,
              uint8_t* idx, float* dot_uc, float* sq_c) {
  const __m512 vin = _mm512_set1_ps(inv_norm);
  const __m512 table = _mm512_loadu_ps(centroids);
  __m256 ad = _mm256_setzero_ps(), as = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 u = _mm512_mul_ps(_mm512_loadu_ps(y + j), vin);
    const __m512i pos = cell16(u, bounds, bits);
    const __m512 c = bits <= 4 ? _mm512_permutexvar_ps(pos, table) : _mm512_i32gather_ps(pos, centroids, 4);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + j), _mm512_cvtepi32_epi8(pos));
    ad = fold16(ad, _mm512_mul_ps(u, c));
    as = fold16(as, _mm512_mul_ps(c, c));
  }
  // The remaining < 16 elements continue in the same lanes through the AVX2 body.
  alignas(32) float ld[8], ls[8];
  _mm256_store_ps(ld, ad);
  _mm256_store_ps(ls, as);
  const avx2::CentroidTable t8(centroids, bits);
  const __m256 vin8 = _mm256_set1_ps(inv_norm);
  if (j + 8 <= n) {
    const __m256 u = _mm256_mul_ps(_mm256_loadu_ps(y + j), vin8);
    const __m256i pos = avx2::cell8(u, bounds, bits);
    const __m256 c = t8(pos);
    avx2::store_idx8(idx + j, pos);
    _mm256_store_ps(ld, _mm256_add_ps(_mm256_load_ps(ld), _mm256_mul_ps(u, c)));
    _mm256_store_ps(ls, _mm256_add_ps(_mm256_load_ps(ls), _mm256_mul_ps(c, c)));
    j += 8;
  }
  for (size_t t = 0; j + t < n; ++t) {
    const float u = y[j + t] * inv_norm;
    unsigned pos = 0;
    for (unsigned step = 1u << (bits - 1); step > 0; step >>= 1)
      if (bounds[pos + step - 1] < u) pos += step;
    idx[j + t] = uint8_t(pos);
    const float c = centroids[pos];
    ld[t] = ld[t] + u * c;
    ls[t] = ls[t] + c * c;
  }
  *dot_uc = reduce8(ld);
  *sq_c = reduce8(ls);
}

void lookup(const uint8_t* idx, const float* centroids, size_t n, float* out) {
  size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512i i32 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(idx + j)));
    _mm512_storeu_ps(out + j, _mm512_i32gather_ps(i32, centroids, 4));
  }
  avx2::lookup(idx + j, centroids, n - j, out + j);
}

void dot_many(const float* queries, size_t nq, const float* row, size_t n, float* out) {
  if (n < 64) return avx2::dot_many(queries, nq, row, n, out);
  size_t q = 0;
  for (; q + 4 <= nq; q += 4) {
    const float* q0 = queries + q * n;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
      const __m512 r = _mm512_loadu_ps(row + j);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q0 + j), r, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q0 + n + j), r, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(q0 + 2 * n + j), r, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(q0 + 3 * n + j), r, a3);
    }
    float s[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                  _mm512_reduce_add_ps(a3)};
    for (; j < n; ++j)
      for (int t = 0; t < 4; ++t) s[t] += q0[t * n + j] * row[j];
    for (int t = 0; t < 4; ++t) out[q + t] = s[t];
  }
  if (q < nq) avx2::dot_many(queries + q * n, nq - q, row, n, out + q);
}

}  // namespace
}  // namespace avx512

const Kernels kKernelsAVX512 = {"avx512",        avx512::mul,    avx512::scale,    avx512::fwht,
                                avx512::kac,     avx512::dot,  avx512::quantize, avx512::lookup,
                                avx2::pack,       avx2::unpack,  avx512::dot_many};

}  // namespace tq
