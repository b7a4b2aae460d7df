// AVX2 kernel bodies, shared by the AVX2 table and (for the 256-bit parts) the AVX-512 table.
// Each body reproduces the scalar reference's arithmetic exactly where kernels.h requires it.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "pack-inl.h"
#include "simd/by_nq-inl.h"
#include "simd/mask-inl.h"
#include "simd/reduce-inl.h"
#include "simd/score-inl.h"

namespace tq {
namespace avx2 {
namespace {

inline void mul(float* x, const float* s, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(s + i)));
  for (; i < n; ++i) x[i] *= s[i];
}

inline void scale(float* x, float c, size_t n) {
  const __m256 vc = _mm256_set1_ps(c);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vc));
  for (; i < n; ++i) x[i] *= c;
}

inline void kac(float* a, float* b, size_t n, float c) {
  const __m256 vc = _mm256_set1_ps(c);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
    _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_add_ps(x, y), vc));
    _mm256_storeu_ps(b + i, _mm256_mul_ps(_mm256_sub_ps(x, y), vc));
  }
  for (; i < n; ++i) {
    const float x = a[i], y = b[i];
    a[i] = (x + y) * c;
    b[i] = (x - y) * c;
  }
}

// Unnormalised butterflies of the Hadamard stages.
inline void bfly(float* a, float* b, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
    _mm256_storeu_ps(a + i, _mm256_add_ps(x, y));
    _mm256_storeu_ps(b + i, _mm256_sub_ps(x, y));
  }
  for (; i < n; ++i) {
    const float x = a[i], y = b[i];
    a[i] = x + y;
    b[i] = x - y;
  }
}

// Stages h = 1, 2, 4 inside one register. Each stage swaps partners with one shuffle t, then
// lanes holding the first of a pair take v + t (= a + b) and the others t - v (= a - b): the very
// operations of the scalar butterflies, so results are bit-identical.
inline __m256 fwht8(__m256 v) {
  __m256 t = _mm256_permute_ps(v, 0xB1);
  v = _mm256_blend_ps(_mm256_add_ps(v, t), _mm256_sub_ps(t, v), 0xAA);
  t = _mm256_permute_ps(v, 0x4E);
  v = _mm256_blend_ps(_mm256_add_ps(v, t), _mm256_sub_ps(t, v), 0xCC);
  t = _mm256_permute2f128_ps(v, v, 0x01);
  return _mm256_blend_ps(_mm256_add_ps(v, t), _mm256_sub_ps(t, v), 0xF0);
}

// Stages with h >= h0 as passes over memory (the scalar order, so results are identical).
inline void fwht_wide_stages(float* x, size_t n, size_t h0) {
  for (size_t h = h0; h < n; h <<= 1)
    for (size_t i = 0; i < n; i += 2 * h) bfly(x + i, x + i + h, h);
}

// All stages of a 64-float chunk in eight registers: stages 1..4 in-register, 8..32 across registers.
inline void fwht64(float* x, const float* pre) {
  __m256 v[8];
  _Pragma("GCC unroll 8") for (int i = 0; i < 8; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    if (pre) v[i] = _mm256_mul_ps(v[i], _mm256_loadu_ps(pre + 8 * i));
    v[i] = fwht8(v[i]);
  }
  _Pragma("GCC unroll 8") for (int h = 1; h < 8; h <<= 1)
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i += 2 * h)
      _Pragma("GCC unroll 8") for (int j = i; j < i + h; ++j) {
        const __m256 a = v[j], b = v[j + h];
        v[j] = _mm256_add_ps(a, b);
        v[j + h] = _mm256_sub_ps(a, b);
      }
  _Pragma("GCC unroll 8") for (int i = 0; i < 8; ++i) _mm256_storeu_ps(x + 8 * i, v[i]);
}

inline void fwht(float* x, const float* pre, const float* post, size_t n) {
  if (n < 64) {
    if (pre) mul(x, pre, n);
    if (n >= 8)
      for (size_t i = 0; i < n; i += 8) _mm256_storeu_ps(x + i, fwht8(_mm256_loadu_ps(x + i)));
    fwht_wide_stages(x, n, n >= 8 ? 8 : 1);
  } else {
    for (size_t i = 0; i < n; i += 64) fwht64(x + i, pre ? pre + i : nullptr);
    fwht_wide_stages(x, n, 64);
  }
  if (post) mul(x, post, n);
}

// Canonical reduction (reduce-inl.h) with four 8-lane accumulators covering the 32 lanes.
inline float dot(const float* a, const float* b, size_t n) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  size_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int t = 0; t < 4; ++t)
      acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(_mm256_loadu_ps(a + j + 8 * t), _mm256_loadu_ps(b + j + 8 * t)));
  alignas(32) float lanes[kLanes];
  for (int t = 0; t < 4; ++t) _mm256_store_ps(lanes + 8 * t, acc[t]);
  for (; j < n; ++j) lanes[j % kLanes] = lanes[j % kLanes] + a[j] * b[j];
  return reduce_lanes(lanes);
}

inline void store_idx8(uint8_t* dst, __m256i v) {
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(w, w));
}

// Count of boundaries below u: compare-and-count for <= 4 bits, a gathered binary search above.
inline __m256i cell8(__m256 u, const float* bounds, int bits) {
  __m256i pos = _mm256_setzero_si256();
  if (bits <= 4) {
    const int nb = (1 << bits) - 1;
    for (int k = 0; k < nb; ++k)
      pos = _mm256_sub_epi32(pos, _mm256_castps_si256(_mm256_cmp_ps(_mm256_set1_ps(bounds[k]), u, _CMP_LT_OQ)));
    return pos;
  }
  for (int step = 1 << (bits - 1); step > 0; step >>= 1) {
    const __m256i probe = _mm256_add_epi32(pos, _mm256_set1_epi32(step - 1));
    const __m256 m = _mm256_cmp_ps(_mm256_i32gather_ps(bounds, probe, 4), u, _CMP_LT_OQ);
    pos = _mm256_add_epi32(pos, _mm256_and_si256(_mm256_castps_si256(m), _mm256_set1_epi32(step)));
  }
  return pos;
}

// Centroid of each cell: in-register permutes up to 16 cells, a gather above
// (the centroid buffer always holds at least 16 floats, see codec.h).
struct CentroidTable {
  __m256 lo, hi;
  const float* all;
  int bits;
  explicit CentroidTable(const float* c, int b)
      : lo(_mm256_loadu_ps(c)), hi(_mm256_loadu_ps(c + 8)), all(c), bits(b) {}
  __m256 operator()(__m256i pos) const {
    if (bits <= 3) return _mm256_permutevar8x32_ps(lo, pos);
    if (bits == 4)
      return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, pos), _mm256_permutevar8x32_ps(hi, pos),
                              _mm256_castsi256_ps(_mm256_cmpgt_epi32(pos, _mm256_set1_epi32(7))));
    return _mm256_i32gather_ps(all, pos, 4);
  }
};

inline unsigned cell_scalar(float u, const float* bounds, int bits) {
  unsigned pos = 0;
  for (unsigned step = 1u << (bits - 1); step > 0; step >>= 1)
    if (bounds[pos + step - 1] < u) pos += step;
  return pos;
}

inline void quantize(const float* y, float inv_norm, const float* bounds, const float* centroids, int bits,
                     size_t n, uint8_t* idx, float* dot_uc, float* sq_c) {
  const __m256 vin = _mm256_set1_ps(inv_norm);
  const CentroidTable table(centroids, bits);
  __m256 ad[4], as[4];
  for (int t = 0; t < 4; ++t) ad[t] = as[t] = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int t = 0; t < 4; ++t) {
      const __m256 u = _mm256_mul_ps(_mm256_loadu_ps(y + j + 8 * t), vin);
      const __m256i pos = cell8(u, bounds, bits);
      const __m256 c = table(pos);
      store_idx8(idx + j + 8 * t, pos);
      ad[t] = _mm256_add_ps(ad[t], _mm256_mul_ps(u, c));
      as[t] = _mm256_add_ps(as[t], _mm256_mul_ps(c, c));
    }
  alignas(32) float ld[kLanes], ls[kLanes];
  for (int t = 0; t < 4; ++t) {
    _mm256_store_ps(ld + 8 * t, ad[t]);
    _mm256_store_ps(ls + 8 * t, as[t]);
  }
  for (; j < n; ++j) {
    const float u = y[j] * inv_norm;
    const unsigned pos = cell_scalar(u, bounds, bits);
    idx[j] = uint8_t(pos);
    const float c = centroids[pos];
    ld[j % kLanes] = ld[j % kLanes] + u * c;
    ls[j % kLanes] = ls[j % kLanes] + c * c;
  }
  *dot_uc = reduce_lanes(ld);
  *sq_c = reduce_lanes(ls);
}

inline void lookup(const uint8_t* idx, const float* centroids, size_t n, float* out) {
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i i32 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(idx + j)));
    _mm256_storeu_ps(out + j, _mm256_i32gather_ps(centroids, i32, 4));
  }
  for (; j < n; ++j) out[j] = centroids[idx[j]];
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

inline void dot_many(const float* queries, size_t nq, const float* row, size_t n, float* out) {
  size_t q = 0;
  for (; q + 4 <= nq; q += 4) {
    const float* q0 = queries + q * n;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
      const __m256 r = _mm256_loadu_ps(row + j);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + j), r, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + n + j), r, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + 2 * n + j), r, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + 3 * n + j), r, a3);
    }
    float s[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    for (; j < n; ++j)
      for (int t = 0; t < 4; ++t) s[t] += q0[t * n + j] * row[j];
    for (int t = 0; t < 4; ++t) out[q + t] = s[t];
  }
  for (; q < nq; ++q) {
    const float* qq = queries + q * n;
    __m256 a = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= n; j += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(qq + j), _mm256_loadu_ps(row + j), a);
    float s = hsum(a);
    for (; j < n; ++j) s += qq[j] * row[j];
    out[q] = s;
  }
}

// Adds query t's four bytes of group g times the decoded bytes of vectors 0-7 (d0) and 8-15 (d1), times
// `weight`, to their int32 lanes, for queries t < NQ: maddubs (no saturation: byte * |q| <= 16383, kernels.h)
// then madd.
template <int NQ>
inline void add_group(__m256i d0, __m256i d1, const int8_t* queries, size_t groups, size_t g, int16_t weight,
                      __m256i* lo, __m256i* hi) {
  const __m256i w = _mm256_set1_epi16(weight);
  for (int t = 0; t < NQ; ++t) {
    int32_t q4;
    std::memcpy(&q4, queries + t * groups * 4 + g * 4, 4);
    const __m256i q = _mm256_set1_epi32(q4);
    lo[t] = _mm256_add_epi32(lo[t], _mm256_madd_epi16(_mm256_maddubs_epi16(d0, q), w));
    hi[t] = _mm256_add_epi32(hi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(d1, q), w));
  }
}

// floor_lanes (kernels_scalar.cpp) eight lanes at a time: width 16 or 32, a block's sums already in `raw`.
inline void floor_lanes8(const int32_t* raw, size_t width, size_t nq, const int32_t* floors, uint32_t* lanes) {
  for (size_t t = 0; t < nq; ++t) {
    if (!floors) {
      lanes[t] = width >= 32 ? ~0u : (1u << width) - 1;
      continue;
    }
    const __m256i floor = _mm256_set1_epi32(floors[t]);
    uint32_t m = 0;
    for (size_t v = 0; v < width; v += 8) {
      const __m256i r = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(raw + t * width + v));
      m |= uint32_t(~_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(floor, r))) & 0xFF) << v;
    }
    lanes[t] = m;
  }
}

// Runs decode(g, add) for every group of a 16-vector block, where add(d0, d1, weight) adds decoded bytes as
// add_group does, and writes out[t*16 + v] for NQ queries. The 2 NQ sums live in registers (with NQ <= 4 beside the
// decoded bytes in the 16 ymm registers): sums kept in memory put a store-to-load round trip on every group's chain,
// which made one-query scans latency-bound.
template <int NQ, class Decode>
inline void dot_block_nq(size_t groups, const int8_t* queries, int32_t* out, Decode decode) {
  __m256i lo[NQ], hi[NQ];
  for (int t = 0; t < NQ; ++t) lo[t] = hi[t] = _mm256_setzero_si256();
  for (size_t g = 0; g < groups; ++g)
    decode(g, [&](__m256i d0, __m256i d1, int16_t w) { add_group<NQ>(d0, d1, queries, groups, g, w, lo, hi); });
  for (int t = 0; t < NQ; ++t) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + t * 16), lo[t]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + t * 16 + 8), hi[t]);
  }
}

// dot_block_nq over nq queries in runs of up to kRun (each run decodes the block again): 4 where decoding is a few
// shuffles, 8 (some sums spilled) where it costs more than the spills.
template <size_t kRun, class Decode>
inline void dot_block(size_t groups, const int8_t* queries, size_t nq, int32_t* out, Decode decode) {
  for (size_t t = 0; t < nq; t += kRun) {
    const int8_t* q = queries + t * groups * 4;
    int32_t* o = out + t * 16;
    by_nq(std::min(nq - t, kRun), [&](auto run) { dot_block_nq<decltype(run)::value>(groups, q, o, decode); });
  }
}

// How far ahead a one-query kI8Dot pass prefetches its codes, one line per two groups (Zen 5, one core: WordNet 4-bit
// one query -17%, MNIST10k -15%; the same in the kLut pass cost 1-bit WordNet ~5%, so it has none).
constexpr size_t kAheadI8 = 16384;

// kI8Dot block: per 4-dim group one 32-byte load, nibbles decoded by vpshufb.
inline void dot_i8_block(const uint8_t* block, size_t groups, const int8_t* queries, size_t nq, const uint8_t* table,
                         const int32_t* floors, int32_t* out, uint32_t* lanes) {
  const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
  const __m256i low = _mm256_set1_epi8(15);
  dot_block<4>(groups, queries, nq, out, [&](size_t g, auto add) {
    if (nq == 1 && g % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(block + g * 32 + kAheadI8), _MM_HINT_T0);
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + g * 32));
    add(_mm256_shuffle_epi8(tbl, _mm256_and_si256(x, low)),
        _mm256_shuffle_epi8(tbl, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)), int16_t(1));
  });
  floor_lanes8(out, 16, nq, floors, lanes);
}

// The value of 8-bit code c from the uint16 copy in a two-plane table (bytes 512 on, scorer.h): one load.
inline int32_t wide_value16(const uint8_t* planes, uint8_t c) {
  uint16_t v;
  std::memcpy(&v, planes + 512 + 2 * size_t(c), 2);
  return v;
}

// 32 uint16 values (<= 16383) at p split into their value planes (scorer.h): high = v >> 7, low = v & 127, as bytes
// in the order of p.
inline void split_values(const uint16_t* p, __m256i* high, __m256i* low) {
  const __m256i a = _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i b = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 16));
  const __m256i m = _mm256_set1_epi16(127);
  // packus interleaves the 128-bit lanes of a and b; the permute puts a's 16 bytes before b's
  *high = _mm256_permute4x64_epi64(_mm256_packus_epi16(_mm256_srli_epi16(a, 7), _mm256_srli_epi16(b, 7)), 0xD8);
  *low = _mm256_permute4x64_epi64(_mm256_packus_epi16(_mm256_and_si256(a, m), _mm256_and_si256(b, m)), 0xD8);
}

// kI8Dot8 block: AVX2 has no 256-entry byte lookup, so each group's values are scalar loads from the table's
// uint16 copy, split into the two planes in registers; the high plane adds with weight 128.
inline void dot_u8_block(const uint8_t* block, size_t groups, const int8_t* queries, size_t nq, const uint8_t* planes,
                         const int32_t* floors, int32_t* out, uint32_t* lanes) {
  alignas(32) uint16_t values[64];
  dot_block<8>(groups, queries, nq, out, [&](size_t g, auto add) {
    for (int i = 0; i < 64; ++i) values[i] = uint16_t(wide_value16(planes, block[g * 64 + i]));
    __m256i h0, l0, h1, l1;
    split_values(values, &h0, &l0);
    split_values(values + 32, &h1, &l1);
    add(h0, h1, int16_t(128));
    add(l0, l1, int16_t(1));
  });
  floor_lanes8(out, 16, nq, floors, lanes);
}

// One 8-bit row: a loop over the table's uint16 copy.
inline int32_t dot_row8(const uint8_t* row, size_t n, const int8_t* query, const uint8_t* planes) {
  int32_t s = 0;
  for (size_t j = 0; j < n; ++j) s += int32_t(query[j]) * wide_value16(planes, row[j]);
  return s;
}

// Adds u16 sums (as TQ_LUT_ADD leaves them) to out[0..32) as u32 in vector order. Per nibble the even and
// odd vectors' words are widened, the two 128-bit lanes (same vectors, two sub-quantizers) added, and
// even/odd interleaved back into vectors 0..15 (low nibbles) or 16..31 (high).
inline void lut_widen(__m256i all_lo, __m256i odd_lo, __m256i all_hi, __m256i odd_hi, uint32_t* out) {
  const auto widen = [](__m256i words) {  // u16 x 16 -> u32 x 8: lane k of both halves added
    return _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(words)),
                            _mm256_cvtepu16_epi32(_mm256_extracti128_si256(words, 1)));
  };
  const __m256i pairs[2][2] = {{_mm256_sub_epi16(all_lo, _mm256_slli_epi16(odd_lo, 8)), odd_lo},
                               {_mm256_sub_epi16(all_hi, _mm256_slli_epi16(odd_hi, 8)), odd_hi}};
  for (int h = 0; h < 2; ++h) {
    const __m256i even = widen(pairs[h][0]), odd = widen(pairs[h][1]);  // vectors 2k and 2k + 1
    const __m256i a = _mm256_unpacklo_epi32(even, odd), b = _mm256_unpackhi_epi32(even, odd);  // 0-3|8-11, 4-7|12-15
    __m256i* o = reinterpret_cast<__m256i*>(out + 16 * h);
    _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), _mm256_permute2x128_si256(a, b, 0x20)));
    _mm256_storeu_si256(o + 1, _mm256_add_epi32(_mm256_loadu_si256(o + 1), _mm256_permute2x128_si256(a, b, 0x31)));
  }
}

// The nibbles of chunks [c0, c1) of a block, split once for all the queries of a pass: per chunk the low and high
// nibbles of its first 32 bytes, then of the rest (the same vectors, other sub-quantizers).
inline void lut_nibbles(const uint8_t* block, size_t c0, size_t c1, __m256i* nib) {
  const __m256i low = _mm256_set1_epi8(15);
  for (size_t c = c0; c < c1; ++c)
    for (size_t h = 0; h < 2; ++h) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + c * 64 + h * 32));
      nib[4 * (c - c0) + 2 * h] = _mm256_and_si256(x, low);
      nib[4 * (c - c0) + 2 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    }
}

// One query's table lookups of a chunk, as asm text: the chunk's nibble vectors N0-N3 (as lut_nibbles orders them)
// look up the tables at T0 (for N0, N1) and T1; the two halves' lookups (<= 127 each) add as bytes; then the `all`
// sums add whole words (even byte + 256 * odd byte, mod 2^16) and the `odd` sums the odd bytes, so the even sums are
// all - (odd << 8) (FAISS fast-scan). Temporaries: ymm12-15.
#define TQ_LUT_ADD(T0, T1, AL, OL, AH, OH, N0, N1, N2, N3) \
  "vmovdqu " T0 ", %%ymm12\n\t"                            \
  "vpshufb " N0 ", %%ymm12, %%ymm13\n\t"                   \
  "vpshufb " N1 ", %%ymm12, %%ymm14\n\t"                   \
  "vmovdqu " T1 ", %%ymm12\n\t"                            \
  "vpshufb " N2 ", %%ymm12, %%ymm15\n\t"                   \
  "vpaddb %%ymm15, %%ymm13, %%ymm13\n\t"                   \
  "vpshufb " N3 ", %%ymm12, %%ymm15\n\t"                   \
  "vpaddb %%ymm15, %%ymm14, %%ymm14\n\t"                   \
  "vpaddw %%ymm13, " AL ", " AL "\n\t"                     \
  "vpsrlw $8, %%ymm13, %%ymm13\n\t"                        \
  "vpaddw %%ymm13, " OL ", " OL "\n\t"                     \
  "vpaddw %%ymm14, " AH ", " AH "\n\t"                     \
  "vpsrlw $8, %%ymm14, %%ymm14\n\t"                        \
  "vpaddw %%ymm14, " OH ", " OH "\n\t"
// Query t's tables at %[tab] + t * %[stride] (t < 3) and sums s[4t..4t+4), then the four nibble operands.
#define TQ_LUT_Q(T, A, B, C, D, ...) TQ_LUT_ADD("(%[tab]" T ")", "32(%[tab]" T ")", A, B, C, D, __VA_ARGS__)
#define TQ_LUT_Q0(...) TQ_LUT_Q("", "%[s0]", "%[s1]", "%[s2]", "%[s3]", __VA_ARGS__)
#define TQ_LUT_Q1(...) TQ_LUT_Q(",%[stride]", "%[s4]", "%[s5]", "%[s6]", "%[s7]", __VA_ARGS__)
#define TQ_LUT_Q2(...) TQ_LUT_Q(",%[stride],2", "%[s8]", "%[s9]", "%[s10]", "%[s11]", __VA_ARGS__)
#define TQ_IN_REGS "%%ymm8", "%%ymm9", "%%ymm10", "%%ymm11"
#define TQ_IN_MEMORY "(%[nib])", "32(%[nib])", "64(%[nib])", "96(%[nib])"
// The nibbles of the chunk at %[x0] (32 bytes) and %[x1] (the rest) into ymm8-11, the mask read from %[low].
#define TQ_NIBBLES                     \
  "vmovdqu %[x0], %%ymm8\n\t"          \
  "vpsrlw $4, %%ymm8, %%ymm9\n\t"      \
  "vpand %[low], %%ymm8, %%ymm8\n\t"   \
  "vpand %[low], %%ymm9, %%ymm9\n\t"   \
  "vmovdqu %[x1], %%ymm10\n\t"         \
  "vpsrlw $4, %%ymm10, %%ymm11\n\t"    \
  "vpand %[low], %%ymm10, %%ymm10\n\t" \
  "vpand %[low], %%ymm11, %%ymm11\n\t"
#define TQ_SUMS4(a, b, c, d) [s##a] "+x"(s[a]), [s##b] "+x"(s[b]), [s##c] "+x"(s[c]), [s##d] "+x"(s[d])
#define TQ_TABLES [tab] "r"(table), [stride] "r"(stride)
#define TQ_TEMPS "xmm12", "xmm13", "xmm14", "xmm15"
#define TQ_TEMPS_AND_NIBBLES "xmm8", "xmm9", "xmm10", "xmm11", TQ_TEMPS

using LutChunk = __m256i[2];
using LutSplit = __m256i[4];
// The nibble mask lut_chunk reads from memory (no register is left for it).
alignas(32) constexpr uint8_t kLutLow[32] = {15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
                                             15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15};

// Adds one chunk's lookups for NQ queries (tables `stride` bytes apart) to their sums, four per query, in one asm
// statement. With the nibbles split here (NQ <= 2: `chunk` holds the codes), two queries' 8 sums, the nibbles (ymm8-11)
// and 4 temporaries (ymm12-15) fill the 16 ymm registers, the nibble mask read from memory; with them split by
// lut_nibbles (`chunk` holds them), three queries' 12 sums fit. As intrinsics GCC spilled sums to the stack, a
// store-to-load round trip on each chunk's chain. Temporaries are named registers, as naming them as operands would
// pass asm's limit of 30.
template <int NQ, bool kSplit>
inline void lut_chunk(__m256i (&s)[12], const void* chunk, const uint8_t* table, size_t stride) {
  const auto& low = *reinterpret_cast<const __m256i*>(kLutLow);
  const auto& codes = *static_cast<const LutChunk*>(chunk);
  const auto& nib = *static_cast<const LutSplit*>(chunk);
  if constexpr (!kSplit && NQ == 1)
    asm(TQ_NIBBLES TQ_LUT_Q0(TQ_IN_REGS)
        : TQ_SUMS4(0, 1, 2, 3)
        : [x0] "m"(codes[0]), [x1] "m"(codes[1]), [low] "m"(low), TQ_TABLES
        : TQ_TEMPS_AND_NIBBLES);
  else if constexpr (!kSplit && NQ == 2)
    asm(TQ_NIBBLES TQ_LUT_Q0(TQ_IN_REGS) TQ_LUT_Q1(TQ_IN_REGS)
        : TQ_SUMS4(0, 1, 2, 3), TQ_SUMS4(4, 5, 6, 7)
        : [x0] "m"(codes[0]), [x1] "m"(codes[1]), [low] "m"(low), TQ_TABLES
        : TQ_TEMPS_AND_NIBBLES);
  else if constexpr (NQ == 1)
    asm(TQ_LUT_Q0(TQ_IN_MEMORY) : TQ_SUMS4(0, 1, 2, 3) : [nib] "r"(nib), "m"(nib), TQ_TABLES : TQ_TEMPS);
  else if constexpr (NQ == 2)
    asm(TQ_LUT_Q0(TQ_IN_MEMORY) TQ_LUT_Q1(TQ_IN_MEMORY)
        : TQ_SUMS4(0, 1, 2, 3), TQ_SUMS4(4, 5, 6, 7)
        : [nib] "r"(nib), "m"(nib), TQ_TABLES
        : TQ_TEMPS);
  else
    asm(TQ_LUT_Q0(TQ_IN_MEMORY) TQ_LUT_Q1(TQ_IN_MEMORY) TQ_LUT_Q2(TQ_IN_MEMORY)
        : TQ_SUMS4(0, 1, 2, 3), TQ_SUMS4(4, 5, 6, 7), TQ_SUMS4(8, 9, 10, 11)
        : [nib] "r"(nib), "m"(nib), TQ_TABLES
        : TQ_TEMPS);
}
#undef TQ_LUT_ADD
#undef TQ_LUT_Q
#undef TQ_LUT_Q0
#undef TQ_LUT_Q1
#undef TQ_LUT_Q2
#undef TQ_IN_REGS
#undef TQ_IN_MEMORY
#undef TQ_NIBBLES
#undef TQ_SUMS4
#undef TQ_TABLES
#undef TQ_TEMPS
#undef TQ_TEMPS_AND_NIBBLES

// Adds the lookups of chunks [0, n) (n <= 128, so the u16 sums of adds <= 254 cannot wrap) for NQ queries to their
// u32 sums at out + 32 t. `chunks` holds the codes (64 bytes a chunk), or with kSplit their nibbles (128 bytes).
template <int NQ, bool kSplit>
inline void lut_run(const uint8_t* chunks, size_t n, const uint8_t* luts, size_t stride, uint32_t* out) {
  constexpr size_t kBytes = kSplit ? sizeof(LutSplit) : sizeof(LutChunk);
  __m256i s[12];  // per query: all_lo, odd_lo, all_hi, odd_hi
  for (auto& v : s) v = _mm256_setzero_si256();
  for (size_t c = 0; c < n; ++c) lut_chunk<NQ, kSplit>(s, chunks + c * kBytes, luts + c * 64, stride);
  for (int t = 0; t < NQ; ++t) lut_widen(s[4 * t], s[4 * t + 1], s[4 * t + 2], s[4 * t + 3], out + 32 * t);
}

// lut_run over runs of up to 128 chunks. One or two queries split the nibbles in registers as they go; three or more
// split each run once into a buffer (on L1) and share it three at a time (Zen 5, WordNet 2-bit batch +11%, 1-bit
// +18%; for one query the buffer cost 20%). Reads lut layout 1 (flat.h), whose 128-bit lanes are one sub-quantizer
// each, as vpshufb's per-lane tables need.
inline void lut_block(const uint8_t* blocks, size_t nblocks, size_t chunks, const uint8_t* luts, size_t stride,
                      size_t nq, const int32_t* floors, uint32_t* out, uint32_t* lanes) {
  constexpr size_t kRun = 128;
  alignas(32) LutSplit nib[kRun];
  const uint8_t* split = reinterpret_cast<const uint8_t*>(nib);
  for (size_t b = 0; b < nblocks; ++b) {
    const uint8_t* block = blocks + b * chunks * 64;
    uint32_t* o = out + b * nq * 32;
    std::fill(o, o + nq * 32, 0u);
    for (size_t c0 = 0; c0 < chunks; c0 += kRun) {
      const size_t n = std::min(chunks, c0 + kRun) - c0;
      const uint8_t* l = luts + c0 * 64;
      if (nq == 1) lut_run<1, false>(block + c0 * 64, n, l, stride, o);
      if (nq == 2) lut_run<2, false>(block + c0 * 64, n, l, stride, o);
      if (nq < 3) continue;
      lut_nibbles(block, c0, c0 + n, &nib[0][0]);
      size_t t = 0;
      for (; t + 3 <= nq; t += 3) lut_run<3, true>(split, n, l + t * stride, stride, o + t * 32);
      if (nq - t == 1) lut_run<1, true>(split, n, l + t * stride, stride, o + t * 32);
      if (nq - t == 2) lut_run<2, true>(split, n, l + t * stride, stride, o + t * 32);
    }
    floor_lanes8(reinterpret_cast<const int32_t*>(o), 32, nq, floors, lanes + b * nq);
  }
}

// score_block, 8 lanes at a time (a partial tail through the scalar formula, which rounds the same).
inline void score_block(const int32_t* raw, size_t width, size_t nq, size_t n, const int32_t* shift, const float* step,
                        const float* base, const float* a, const float* b_all, size_t b_stride, const float* thresholds,
                        float* scores, uint32_t* masks) {
  for (size_t t = 0; t < nq; ++t) {
    const int32_t* r = raw + t * width;
    const float* b = b_all + t * b_stride;
    float* s = scores + t * 32;
    const __m256i vshift = _mm256_set1_epi32(shift[t]);
    const __m256 vstep = _mm256_set1_ps(step[t]), vbase = _mm256_set1_ps(base[t]);
    const __m256 vthr = _mm256_set1_ps(thresholds[t]);
    uint32_t mask = 0;
    size_t v = 0;
    for (; v + 8 <= n; v += 8) {
      const __m256i d = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + v)), vshift);
      const __m256 x = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), vstep), vbase);
      const __m256 sc = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(a + v), x), _mm256_loadu_ps(b + v));
      _mm256_storeu_ps(s + v, sc);
      mask |= uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(sc, vthr, _CMP_GE_OQ))) << v;
    }
    if (v < n) mask |= score_lanes(r + v, n - v, shift[t], step[t], base[t], a + v, b + v, thresholds[t], s + v) << v;
    masks[t] = mask;
  }
}

// first_hit, 8 lanes at a time (a partial tail through the scalar formula, which rounds the same).
inline size_t first_hit(const int32_t* raw, size_t width, size_t n, int32_t shift, float step, float base,
                        const float* a, const float* b, float threshold, float* scores, uint32_t* mask) {
  const __m256i vshift = _mm256_set1_epi32(shift);
  const __m256 vstep = _mm256_set1_ps(step), vbase = _mm256_set1_ps(base), vthr = _mm256_set1_ps(threshold);
  return first_hit_with(raw, width, n, a, b, scores, mask,
                        [&](const int32_t* r, size_t m, const float* av, const float* bv, float* s) {
                          uint32_t lanes = 0;
                          size_t v = 0;
                          for (; v + 8 <= m; v += 8) {
                            const __m256i d =
                                _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + v)), vshift);
                            const __m256 x = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), vstep), vbase);
                            const __m256 off = bv ? _mm256_loadu_ps(bv + v) : _mm256_setzero_ps();
                            const __m256 sc = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(av + v), x), off);
                            _mm256_storeu_ps(s + v, sc);
                            lanes |= uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(sc, vthr, _CMP_GE_OQ))) << v;
                          }
                          if (v < m)
                            lanes |= score_lanes(r + v, m - v, shift, step, base, av + v, bv ? bv + v : nullptr,
                                                 threshold, s + v) << v;
                          return lanes;
                        });
}

// u8 x s8 pair sums (vpmaddubsw) stay below int16 saturation because |q| <= 63.
inline int32_t dot_row4(const uint8_t* row, size_t row_bytes, const int8_t* query, const uint8_t* table) {
  const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
  const __m256i low = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  __m256i acc = _mm256_setzero_si256();
  alignas(32) uint8_t tail[32];
  for (size_t i = 0; i < row_bytes; i += 32) {
    const uint8_t* src = row + i;
    if (row_bytes - i < 32) {  // zero bytes decode to table[0] but meet zero query padding
      std::memset(tail, 0, 32);
      std::memcpy(tail, src, row_bytes - i);
      src = tail;
    }
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    const int8_t* q = query + (i / 64) * 128 + i % 64;
    const __m256i lo = _mm256_shuffle_epi8(tbl, _mm256_and_si256(x, low));
    const __m256i hi = _mm256_shuffle_epi8(tbl, _mm256_and_si256(_mm256_srli_epi16(x, 4), low));
    // Each pair sum fits int16 (2 * 255 * 63); two added need not, so each is widened to int32 first.
    const __m256i even = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
    const __m256i odd = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64)));
    acc = _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(even, ones), _mm256_madd_epi16(odd, ones)));
  }
  __m128i r = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0x4E));
  r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xB1));
  return _mm_cvtsi128_si32(r);
}

// u8 x s8 pair sums (vpmaddubsw) stay below int16 saturation because a * |b| <= 16383; n % 64 == 0.
inline int32_t dot_u8i8(const uint8_t* a, const int8_t* b, size_t n) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc = _mm256_setzero_si256();
  for (size_t j = 0; j < n; j += 32) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j)),
                                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
  }
  __m128i r = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0x4E));
  r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xB1));
  return _mm_cvtsi128_si32(r);
}

// mask_bits: four ids per compare against run[0] + i, 32 mask bytes per movemask.
inline size_t mask_bits(const int64_t* ids, size_t n, const uint8_t* mask, size_t m, uint64_t* words) {
  return mask_bits_with(ids, n, mask, m, words, [](const int64_t* run, const uint8_t* bytes, uint64_t* word) {
    const __m256i first = _mm256_add_epi64(_mm256_set1_epi64x(run[0]), _mm256_set_epi64x(3, 2, 1, 0));
    __m256i same = _mm256_set1_epi64x(-1);
    for (size_t i = 0; i < 64; i += 4) {
      const __m256i want = _mm256_add_epi64(first, _mm256_set1_epi64x(int64_t(i)));
      same = _mm256_and_si256(same, _mm256_cmpeq_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(run + i)),
                                                        want));
    }
    if (_mm256_movemask_epi8(same) != -1) return false;
    const __m256i zero = _mm256_setzero_si256();
    for (size_t i = 0; i < 64; i += 32) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes + i));
      *word |= uint64_t(~uint32_t(_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, zero)))) << i;
    }
    return true;
  });
}

// BMI2: eight one-byte indices <-> 8*bits packed bits in one pext/pdep (the layout of pack-inl.h).
inline uint64_t byte_mask(int bits) { return 0x0101010101010101ull * ((1u << bits) - 1); }

inline void pack(const uint8_t* idx, size_t n, int bits, uint8_t* out) {
  const uint64_t mask = byte_mask(bits);
  const size_t groups = n / 8, total = (n * size_t(bits) + 7) / 8;
  for (size_t g = 0; g < groups; ++g) {
    uint64_t w;
    std::memcpy(&w, idx + 8 * g, 8);
    const uint64_t p = _pext_u64(w, mask);
    if (g * bits + 8 <= total)
      std::memcpy(out + g * bits, &p, 8);  // the spill is overwritten by the next group
    else
      std::memcpy(out + g * bits, &p, size_t(bits));
  }
  if (n % 8) pack_bits(idx + groups * 8, n % 8, bits, out + groups * bits);
}

inline void unpack(const uint8_t* in, size_t n, int bits, uint8_t* idx) {
  const uint64_t mask = byte_mask(bits);
  const size_t groups = n / 8, total = (n * size_t(bits) + 7) / 8;
  for (size_t g = 0; g < groups; ++g) {
    uint64_t w = 0;
    if (g * bits + 8 <= total)
      std::memcpy(&w, in + g * bits, 8);
    else
      std::memcpy(&w, in + g * bits, size_t(bits));
    const uint64_t p = _pdep_u64(w, mask);
    std::memcpy(idx + 8 * g, &p, 8);
  }
  if (n % 8) unpack_bits(in + groups * bits, n % 8, bits, idx + groups * 8);
}

}  // namespace
}  // namespace avx2
}  // namespace tq
