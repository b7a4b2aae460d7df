// AVX-512 (F/BW/VL/DQ/VNNI/VBMI) kernel table. Streaming ops use 16 lanes; reductions keep the canonical
// eight-lane order of kernels.h by folding each 16-lane product into the 8-lane accumulators
// low half first, so codes stay bit-identical to the scalar reference.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "simd/by_nq-inl.h"
#include "simd/kernels.h"
#include "simd/lut-inl.h"
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

// Stages h = 1, 2, 4, 8 inside one register, one shuffle each (see avx2::fwht8 for why it is exact).
inline __m512 fwht16(__m512 v) {
  __m512 t = _mm512_permute_ps(v, 0xB1);
  v = _mm512_mask_sub_ps(_mm512_add_ps(v, t), 0xAAAA, t, v);
  t = _mm512_permute_ps(v, 0x4E);
  v = _mm512_mask_sub_ps(_mm512_add_ps(v, t), 0xCCCC, t, v);
  t = _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1));
  v = _mm512_mask_sub_ps(_mm512_add_ps(v, t), 0xF0F0, t, v);
  t = _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2));
  return _mm512_mask_sub_ps(_mm512_add_ps(v, t), 0xFF00, t, v);
}

// Register arrays below are only indexed by constants after full unrolling, so they stay in registers.

// Stages h = 16 .. 8P of a block held in P registers (butterflies between registers).
template <int P>
inline void fwht_across(__m512* v) {
  _Pragma("GCC unroll 32") for (int h = 1; h < P; h <<= 1)
    _Pragma("GCC unroll 32") for (int i = 0; i < P; i += 2 * h)
      _Pragma("GCC unroll 32") for (int j = i; j < i + h; ++j) {
        const __m512 a = v[j], b = v[j + h];
        v[j] = _mm512_add_ps(a, b);
        v[j + h] = _mm512_sub_ps(a, b);
      }
}

// All stages of a 16*M-float chunk (M <= 16) kept in registers: one load and one store per element.
template <int M>
void fwht_chunk(float* x, const float* pre) {
  __m512 v[M];
  _Pragma("GCC unroll 32") for (int i = 0; i < M; ++i) {
    v[i] = _mm512_loadu_ps(x + 16 * i);
    if (pre) v[i] = _mm512_mul_ps(v[i], _mm512_loadu_ps(pre + 16 * i));
    v[i] = fwht16(v[i]);
  }
  fwht_across<M>(v);
  _Pragma("GCC unroll 32") for (int i = 0; i < M; ++i) _mm512_storeu_ps(x + 16 * i, v[i]);
}

// The whole rotation of a d = 16*M vector kept in M registers (P-register Hadamard block, Kac pairs
// H registers apart), the same operations in the same order as Rotation::forward/inverse.
template <int M, int P, int H>
__attribute__((always_inline)) inline void rotate_regs(__m512 (&v)[M], const RotationPlan& plan, bool inverse) {
  const __m512 c = _mm512_set1_ps(plan.kac_scale);
  auto block = [&](int step) {
    if (step % 2 == 0 || P == M) {
      _Pragma("GCC unroll 32") for (int i = 0; i < P; ++i) v[i] = fwht16(v[i]);
      fwht_across<P>(v);
    } else {
      _Pragma("GCC unroll 32") for (int i = 0; i < P; ++i) v[M - P + i] = fwht16(v[M - P + i]);
      fwht_across<P>(v + (M - P));
    }
  };
  auto kac = [&] {
    _Pragma("GCC unroll 32") for (int i = 0; i < H; ++i) {
      const __m512 a = v[i], b = v[i + H];
      v[i] = _mm512_mul_ps(_mm512_add_ps(a, b), c);
      v[i + H] = _mm512_mul_ps(_mm512_sub_ps(a, b), c);
    }
  };
  auto signs = [&](int step) {
    const float* s = plan.signs + size_t(step) * plan.dim;
    _Pragma("GCC unroll 32") for (int i = 0; i < M; ++i) v[i] = _mm512_mul_ps(v[i], _mm512_loadu_ps(s + 16 * i));
  };
  for (int i = 0; i < plan.steps; ++i) {
    const int step = inverse ? plan.steps - 1 - i : i;
    const bool with_kac = H && step % 2 == 1;
    if (!inverse) {
      signs(step);
      block(step);
      if (with_kac) kac();
    } else {
      if (with_kac) kac();
      block(step);
      signs(step);
    }
  }
}

template <int M, int P, int H>
void rotate_in_registers(const RotationPlan& plan, bool inverse, const float* x, float* y) {
  __m512 v[M];
  _Pragma("GCC unroll 32") for (int i = 0; i < M; ++i) v[i] = _mm512_loadu_ps(x + 16 * i);
  rotate_regs<M, P, H>(v, plan, inverse);
  _Pragma("GCC unroll 32") for (int i = 0; i < M; ++i) _mm512_storeu_ps(y + 16 * i, v[i]);
}

bool rotate(const RotationPlan& plan, bool inverse, const float* x, float* y) {
  switch (plan.dim) {
    case 128: rotate_in_registers<8, 8, 0>(plan, inverse, x, y); return true;
    case 256: rotate_in_registers<16, 16, 0>(plan, inverse, x, y); return true;
    case 384: rotate_in_registers<24, 16, 12>(plan, inverse, x, y); return true;
    case 512: rotate_in_registers<32, 32, 0>(plan, inverse, x, y); return true;
    default: return false;
  }
}

void fwht(float* x, const float* pre, const float* post, size_t n) {
  if (n < 16) return avx2::fwht(x, pre, post, n);
  switch (n) {
    case 16: fwht_chunk<1>(x, pre); break;
    case 32: fwht_chunk<2>(x, pre); break;
    case 64: fwht_chunk<4>(x, pre); break;
    case 128: fwht_chunk<8>(x, pre); break;
    default:
      for (size_t i = 0; i < n; i += 256) fwht_chunk<16>(x + i, pre ? pre + i : nullptr);
      for (size_t h = 256; h < n; h <<= 1)
        for (size_t i = 0; i < n; i += 2 * h) bfly(x + i, x + i + h, h);
  }
  if (post) mul(x, post, n);
}

// Canonical reduction (reduce-inl.h) with two 16-lane accumulators covering the 32 lanes.
float dot(const float* a, const float* b, size_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    acc0 = _mm512_add_ps(acc0, _mm512_mul_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j)));
    acc1 = _mm512_add_ps(acc1, _mm512_mul_ps(_mm512_loadu_ps(a + j + 16), _mm512_loadu_ps(b + j + 16)));
  }
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, acc0);
  _mm512_store_ps(lanes + 16, acc1);
  for (; j < n; ++j) lanes[j % kLanes] = lanes[j % kLanes] + a[j] * b[j];
  return reduce_lanes(lanes);
}

// Number of boundaries below u. Up to 32 boundaries (5 bits) the sorted table lives in registers and a
// branchless binary search probes it with permutes; beyond that the probes are gathers.
struct Cells {
  __m512 lo, hi;
  const float* bounds;
  int bits;
  Cells(const float* b, int nbits) : bounds(b), bits(nbits) {
    alignas(64) float t[32];
    const int nb = (1 << nbits) - 1;
    for (int i = 0; i < 32; ++i) t[i] = i < nb ? b[i] : 0.0f;  // probes never reach the padding
    lo = _mm512_load_ps(t);
    hi = _mm512_load_ps(t + 16);
  }
  // The search with the width known at compile time (fully unrolled).
  template <int BITS>
  __m512i find(__m512 u) const {
    __m512i pos = _mm512_setzero_si512();
    _Pragma("GCC unroll 8") for (int step = 1 << (BITS - 1); step > 0; step >>= 1) {
      const __m512i probe = _mm512_add_epi32(pos, _mm512_set1_epi32(step - 1));
      const __m512 b = BITS <= 4   ? _mm512_permutexvar_ps(probe, lo)
                       : BITS == 5 ? _mm512_permutex2var_ps(lo, probe, hi)
                                   : _mm512_i32gather_ps(probe, bounds, 4);
      pos = _mm512_mask_add_epi32(pos, _mm512_cmp_ps_mask(b, u, _CMP_LT_OQ), pos, _mm512_set1_epi32(step));
    }
    return pos;
  }
  __m512i operator()(__m512 u) const {
    switch (bits) {
      case 1: return find<1>(u);
      case 2: return find<2>(u);
      case 3: return find<3>(u);
      case 4: return find<4>(u);
      case 5: return find<5>(u);
      case 6: return find<6>(u);
      case 7: return find<7>(u);
      default: return find<8>(u);
    }
  }
};

void quantize(const float* y, float inv_norm, const float* bounds, const float* centroids, int bits, size_t n,
              uint8_t* idx, float* dot_uc, float* sq_c) {
  const __m512 vin = _mm512_set1_ps(inv_norm);
  const __m512 table = _mm512_loadu_ps(centroids);
  const Cells cells(bounds, bits);
  __m512 ad[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}, as[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  size_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int t = 0; t < 2; ++t) {
      const __m512 u = _mm512_mul_ps(_mm512_loadu_ps(y + j + 16 * t), vin);
      const __m512i pos = cells(u);
      const __m512 c = bits <= 4 ? _mm512_permutexvar_ps(pos, table) : _mm512_i32gather_ps(pos, centroids, 4);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + j + 16 * t), _mm512_cvtepi32_epi8(pos));
      ad[t] = _mm512_add_ps(ad[t], _mm512_mul_ps(u, c));
      as[t] = _mm512_add_ps(as[t], _mm512_mul_ps(c, c));
    }
  alignas(64) float ld[kLanes], ls[kLanes];
  for (int t = 0; t < 2; ++t) {
    _mm512_store_ps(ld + 16 * t, ad[t]);
    _mm512_store_ps(ls + 16 * t, as[t]);
  }
  for (; j < n; ++j) {
    const float u = y[j] * inv_norm;
    const unsigned pos = avx2::cell_scalar(u, bounds, bits);
    idx[j] = uint8_t(pos);
    const float c = centroids[pos];
    ld[j % kLanes] = ld[j % kLanes] + u * c;
    ls[j % kLanes] = ls[j % kLanes] + c * c;
  }
  *dot_uc = reduce_lanes(ld);
  *sq_c = reduce_lanes(ls);
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

// The binary search of Cells with the plan's per-level tables held in registers (bits <= 5).
template <int BITS>
struct LevelSearch {
  __m512 lo[BITS], hi[BITS];
  explicit LevelSearch(const float* levels) {
    _Pragma("GCC unroll 8") for (int k = 0; k < BITS; ++k) {
      lo[k] = _mm512_loadu_ps(levels + 32 * k);
      hi[k] = _mm512_loadu_ps(levels + 32 * k + 16);
    }
  }
  __m512i operator()(__m512 u) const {
    __m512i pos = _mm512_setzero_si512();
    _Pragma("GCC unroll 8") for (int k = 0; k < BITS; ++k) {
      const __m512 b = BITS <= 4 ? _mm512_permutexvar_ps(pos, lo[k]) : _mm512_permutex2var_ps(lo[k], pos, hi[k]);
      pos = _mm512_mask_or_epi32(pos, _mm512_cmp_ps_mask(b, u, _CMP_LT_OQ), pos, _mm512_set1_epi32(1 << (BITS - 1 - k)));
    }
    return pos;
  }
};

// The cell search for a compile-time width: register tables up to 5 bits, gathers above.
template <int BITS, bool kTables = (BITS <= 5)>
struct Finder : LevelSearch<BITS> {
  explicit Finder(const EncodePlan& plan) : LevelSearch<BITS>(plan.levels) {}
};
template <int BITS>
struct Finder<BITS, false> {
  Cells cells;
  explicit Finder(const EncodePlan& plan) : cells(plan.bounds, BITS) {}
  __m512i operator()(__m512 u) const { return cells.template find<BITS>(u); }
};

// Packs 16 indices (one register) into 2*BITS bytes of the row layout of pack-inl.h.
template <int BITS>
inline void store_codes(uint8_t* dst, __m512i pos) {
  const __m128i b = _mm512_cvtepi32_epi8(pos);
  if constexpr (BITS == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), b);
  } else if constexpr (BITS == 4) {
    const __m128i pairs = _mm_maddubs_epi16(b, _mm_set1_epi16(16 << 8 | 1));  // b[2i] + 16 b[2i+1]
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(pairs, pairs));
  } else if constexpr (BITS == 2) {
    const __m128i pairs = _mm_maddubs_epi16(b, _mm_set1_epi16(4 << 8 | 1));
    const __m128i bytes = _mm_packus_epi16(pairs, pairs);
    const __m128i quads = _mm_maddubs_epi16(bytes, _mm_set1_epi16(16 << 8 | 1));
    const uint32_t w = uint32_t(_mm_cvtsi128_si32(_mm_packus_epi16(quads, quads)));
    std::memcpy(dst, &w, 4);
  } else if constexpr (BITS == 1) {
    const uint16_t w = _mm512_test_epi32_mask(pos, pos);
    std::memcpy(dst, &w, 2);
  } else {
    const uint64_t mask = avx2::byte_mask(BITS);
    const uint64_t lo = _pext_u64(uint64_t(_mm_cvtsi128_si64(b)), mask);
    const uint64_t hi = _pext_u64(uint64_t(_mm_extract_epi64(b, 1)), mask);
    std::memcpy(dst, &lo, BITS);
    std::memcpy(dst + BITS, &hi, BITS);
  }
}

// Alg. 1 for one row entirely in registers: canonical norm of x, rotation, quantisation. Reproduces
// MSECodec's generic path (dot -> Rotation::forward -> quantize) operation for operation.
template <int M, int P, int H, int BITS>
void encode_in_registers(const EncodePlan& plan, const float* x, uint8_t* code, float* stats) {
  static_assert(M % 2 == 0, "32-lane canonical order needs an even register count");
  __m512 v[M];
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  _Pragma("GCC unroll 32") for (int i = 0; i < M; ++i) {
    v[i] = _mm512_loadu_ps(x + 16 * i);
    acc[i & 1] = _mm512_add_ps(acc[i & 1], _mm512_mul_ps(v[i], v[i]));
  }
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, acc[0]);
  _mm512_store_ps(lanes + 16, acc[1]);
  const float norm = std::sqrt(reduce_lanes(lanes));
  rotate_regs<M, P, H>(v, plan.rotation, false);
  const __m512 vin = _mm512_set1_ps(norm > 0.0f ? 1.0f / norm : 0.0f);
  const __m512 table = _mm512_loadu_ps(plan.centroids);
  const Finder<BITS> find(plan);
  __m512 ad[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}, as[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  _Pragma("GCC unroll 32") for (int i = 0; i < M; ++i) {
    const __m512 u = _mm512_mul_ps(v[i], vin);
    const __m512i pos = find(u);
    const __m512 c = BITS <= 4 ? _mm512_permutexvar_ps(pos, table) : _mm512_i32gather_ps(pos, plan.centroids, 4);
    store_codes<BITS>(code + 2 * BITS * i, pos);
    ad[i & 1] = _mm512_add_ps(ad[i & 1], _mm512_mul_ps(u, c));
    as[i & 1] = _mm512_add_ps(as[i & 1], _mm512_mul_ps(c, c));
  }
  stats[0] = norm;
  _mm512_store_ps(lanes, ad[0]);
  _mm512_store_ps(lanes + 16, ad[1]);
  stats[1] = reduce_lanes(lanes);
  _mm512_store_ps(lanes, as[0]);
  _mm512_store_ps(lanes + 16, as[1]);
  stats[2] = reduce_lanes(lanes);
}

template <int M, int P, int H>
bool encode_dim(const EncodePlan& plan, const float* x, uint8_t* code, float* stats) {
  switch (plan.bits) {
    case 1: encode_in_registers<M, P, H, 1>(plan, x, code, stats); return true;
    case 2: encode_in_registers<M, P, H, 2>(plan, x, code, stats); return true;
    case 3: encode_in_registers<M, P, H, 3>(plan, x, code, stats); return true;
    case 4: encode_in_registers<M, P, H, 4>(plan, x, code, stats); return true;
    case 5: encode_in_registers<M, P, H, 5>(plan, x, code, stats); return true;
    case 6: encode_in_registers<M, P, H, 6>(plan, x, code, stats); return true;
    case 7: encode_in_registers<M, P, H, 7>(plan, x, code, stats); return true;
    default: encode_in_registers<M, P, H, 8>(plan, x, code, stats); return true;
  }
}

bool encode(const EncodePlan& plan, const float* x, uint8_t* code, float* stats) {
  switch (plan.rotation.dim) {
    case 128: return encode_dim<8, 8, 0>(plan, x, code, stats);
    case 256: return encode_dim<16, 16, 0>(plan, x, code, stats);
    case 384: return encode_dim<24, 16, 12>(plan, x, code, stats);
    case 512: return encode_dim<32, 32, 0>(plan, x, code, stats);
    default: return false;
  }
}

// The lanes of sum that reach floor (floor_lanes, kernels_scalar.cpp); floor null: every lane.
inline uint32_t floor_mask(__m512i sum, const int32_t* floor) {
  return floor ? _mm512_cmpge_epi32_mask(sum, _mm512_set1_epi32(*floor)) : 0xFFFFu;
}

// How far ahead a one-query pass prefetches its codes (a batch re-reads a tile from L2 and needs none). Measured on
// WordNet (Zen 4, one core): 4-bit blocks gain ~25% at 16-32 KB, 1-2 bit passes ~15% at 8 KB (less either side); on
// Zen 5, 16 KB against 32 KB: WordNet 4-bit one query -9%, MNIST10k -14%, 8-bit and 1-2 bit passes unchanged.
constexpr size_t kAheadI8 = 16384, kAheadLut = 8192;

// Stores a 16-vector block's sums for NQ queries (query t's at out + 16 t) and their lanes over floors.
template <int NQ>
void store_sums(const __m512i* sums, const int32_t* floors, int32_t* out, uint32_t* lanes) {
  for (int t = 0; t < NQ; ++t) {
    _mm512_storeu_si512(out + t * 16, sums[t]);
    lanes[t] = floor_mask(sums[t], floors ? floors + t : nullptr);
  }
}

// acc += u8 x s8 dot products, in place. GCC's _mm512_dpbusd_epi32 copies every accumulator of an array
// through a scratch register (and spills some), and a broadcast memory operand made it store every
// accumulator to the stack on each iteration; this form keeps the accumulators in registers.
inline __m512i dpbusd(__m512i acc, __m512i u8, __m512i s8) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
}

// kI8Dot block with VNNI: a 64-byte load holds two groups; nibbles are split, regrouped so each register
// holds one group for all 16 vectors (4 bytes per vector = one int32 lane), decoded by vpshufb and summed
// by vpdpbusd against the query's 4 bytes broadcast to every lane. Each query keeps one sum per group of a load,
// so a single query does not wait on one chain of vpdpbusd (one-query scans ran ~20% faster than with one sum).
template <int NQ>
void dot_i8_block_nq(const uint8_t* block, size_t groups, const int8_t* queries, const uint8_t* table,
                     const int32_t* floors, int32_t* out, uint32_t* lanes) {
  const __m512i tbl = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
  const __m512i low = _mm512_set1_epi8(15);
  __m512i acc[NQ][2];
  for (int t = 0; t < NQ; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
  const int32_t* q32 = reinterpret_cast<const int32_t*>(queries);
  for (size_t g = 0; g < groups; g += 2) {
    if (NQ == 1) _mm_prefetch(reinterpret_cast<const char*>(block + g * 32 + kAheadI8), _MM_HINT_T0);
    const __m512i x = _mm512_loadu_si512(block + g * 32);
    const __m512i lo = _mm512_and_si512(x, low), hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), low);
    const __m512i a = _mm512_shuffle_epi8(tbl, _mm512_shuffle_i64x2(lo, hi, 0x44));
    const __m512i b = _mm512_shuffle_epi8(tbl, _mm512_shuffle_i64x2(lo, hi, 0xEE));
    for (int t = 0; t < NQ; ++t) {
      const int32_t* qt = q32 + size_t(t) * groups;
      acc[t][0] = dpbusd(acc[t][0], a, _mm512_set1_epi32(qt[g]));
      acc[t][1] = dpbusd(acc[t][1], b, _mm512_set1_epi32(qt[g + 1]));
    }
  }
  __m512i sums[NQ];
  for (int t = 0; t < NQ; ++t) sums[t] = _mm512_add_epi32(acc[t][0], acc[t][1]);
  store_sums<NQ>(sums, floors, out, lanes);
}

// kI8Dot block for one query, without regrouping the nibbles: vpermb reads 6 index bits, so with the 16-entry table in
// every 128-bit lane it decodes a byte's low nibble as is and its high nibble after one 16-bit shift (no masks). The
// low nibbles of a load are vectors 0-7 of two groups (bytes 0-31: group g, 32-63: g + 1), the high ones vectors
// 8-15; a query register holding group g's 4 bytes in lanes 0-7 and g + 1's in lanes 8-15 matches both, and the two
// halves of each sum add at the end: 6 vector ops per 64 bytes instead of 9 (two sums per half hide vpdpbusd's
// latency), ~10% more one-query QPS on WordNet (Zen 4). A chunk of queries keeps the regrouping, shared by all.
void dot_i8_block_one(const uint8_t* block, size_t groups, const int8_t* query, const uint8_t* table,
                      const int32_t* floor, int32_t* out, uint32_t* lanes) {
  const __m512i tbl = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
  const __m512i pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512i lo0 = _mm512_setzero_si512(), lo1 = lo0, hi0 = lo0, hi1 = lo0;
  const int64_t* q64 = reinterpret_cast<const int64_t*>(query);
  auto step = [&](size_t g, __m512i& lo, __m512i& hi) {  // groups g, g + 1
    _mm_prefetch(reinterpret_cast<const char*>(block + g * 32 + kAheadI8), _MM_HINT_T0);
    const __m512i x = _mm512_loadu_si512(block + g * 32);
    const __m512i q = _mm512_permutexvar_epi32(pair, _mm512_set1_epi64(q64[g / 2]));
    lo = dpbusd(lo, _mm512_permutexvar_epi8(x, tbl), q);
    hi = dpbusd(hi, _mm512_permutexvar_epi8(_mm512_srli_epi16(x, 4), tbl), q);
  };
  size_t g = 0;
  for (; g + 4 <= groups; g += 4) {
    step(g, lo0, hi0);
    step(g + 2, lo1, hi1);
  }
  if (g < groups) step(g, lo0, hi0);
  const __m512i l = _mm512_add_epi32(lo0, lo1), h = _mm512_add_epi32(hi0, hi1);
  const __m256i l8 = _mm256_add_epi32(_mm512_castsi512_si256(l), _mm512_extracti64x4_epi64(l, 1));
  const __m256i h8 = _mm256_add_epi32(_mm512_castsi512_si256(h), _mm512_extracti64x4_epi64(h, 1));
  const __m512i sums = _mm512_inserti64x4(_mm512_castsi256_si512(l8), h8, 1);
  store_sums<1>(&sums, floor, out, lanes);
}

void dot_i8_block(const uint8_t* block, size_t groups, const int8_t* queries, size_t nq, const uint8_t* table,
                  const int32_t* floors, int32_t* out, uint32_t* lanes) {
  if (nq == 1) return dot_i8_block_one(block, groups, queries, table, floors, out, lanes);
  by_nq(nq, [&](auto q) { dot_i8_block_nq<decltype(q)::value>(block, groups, queries, table, floors, out, lanes); });
}

// kLut blocks with VBMI, lut layout 2 (flat.h): byte 4i + L of a chunk holds sub-quantizer 4c + L of vectors i (low
// nibble) and 16 + i (high), so one ternary-logic op makes each nibble a 64-entry table index (nibble + 16 L: the
// chunk's four tables side by side) and vpermb looks all 64 up. With two blocks, two chunks' lookups (entries
// <= 127) add as bytes and vpdpbusd against ones adds each vector's eight into its int32 lane: one vpdpbusd per two
// lookups (~17% faster than one each on Zen 4; a single block is bound by its table loads, and pairs cost it ~7%).
// NB blocks share every table load and NQ queries every split of the codes (6 x 2 measured best). Block b's sums
// for query t go to out + b * out_stride + t * 32, its lanes over floors[t] to lanes[b * nq + t].
template <int NQ, int NB>
void lut_pass(const uint8_t* blocks, size_t chunks, const uint8_t* luts, size_t stride, size_t out_stride,
              const int32_t* floors, size_t nq, uint32_t* out, uint32_t* lanes) {
  const __m512i tables = _mm512_set1_epi32(0x30201000), low = _mm512_set1_epi8(15), ones = _mm512_set1_epi8(1);
  __m512i acc[NQ][2 * NB];
  for (int t = 0; t < NQ; ++t)
    for (int j = 0; j < 2 * NB; ++j) acc[t][j] = _mm512_setzero_si512();
  const size_t block_bytes = chunks * 64;
  const auto indices = [&](size_t c, __m512i* idx) {  // both nibbles of chunk c of every block
    for (int b = 0; b < NB; ++b) {
      const uint8_t* codes = blocks + b * block_bytes + c * 64;
      if (NQ == 1) _mm_prefetch(reinterpret_cast<const char*>(codes + kAheadLut), _MM_HINT_T0);
      const __m512i x = _mm512_loadu_si512(codes);
      idx[2 * b] = _mm512_ternarylogic_epi64(x, low, tables, 0xEA);  // (x & low) | tables
      idx[2 * b + 1] = _mm512_ternarylogic_epi64(_mm512_srli_epi16(x, 4), low, tables, 0xEA);
    }
  };
  size_t c = 0;
  for (; NB > 1 && c + 2 <= chunks; c += 2) {  // one block alone waits on its two table loads: no pairs
    __m512i idx0[2 * NB], idx1[2 * NB];
    indices(c, idx0);
    indices(c + 1, idx1);
    for (int t = 0; t < NQ; ++t) {
      const __m512i lut0 = _mm512_loadu_si512(luts + t * stride + c * 64);
      const __m512i lut1 = _mm512_loadu_si512(luts + t * stride + c * 64 + 64);
      for (int j = 0; j < 2 * NB; ++j)
        acc[t][j] = dpbusd(acc[t][j], _mm512_add_epi8(_mm512_permutexvar_epi8(idx0[j], lut0),
                                                      _mm512_permutexvar_epi8(idx1[j], lut1)), ones);
    }
  }
  for (; c < chunks; ++c) {  // chunks one by one (an odd last one, or a single block's)
    __m512i idx[2 * NB];
    indices(c, idx);
    for (int t = 0; t < NQ; ++t) {
      const __m512i lut = _mm512_loadu_si512(luts + t * stride + c * 64);
      for (int j = 0; j < 2 * NB; ++j) acc[t][j] = dpbusd(acc[t][j], _mm512_permutexvar_epi8(idx[j], lut), ones);
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int t = 0; t < NQ; ++t) {
      _mm512_storeu_si512(out + b * out_stride + t * 32, acc[t][2 * b]);
      _mm512_storeu_si512(out + b * out_stride + t * 32 + 16, acc[t][2 * b + 1]);
      const int32_t* floor = floors ? floors + t : nullptr;
      lanes[b * nq + t] = floor_mask(acc[t][2 * b], floor) | floor_mask(acc[t][2 * b + 1], floor) << 16;
    }
}

constexpr size_t kLutQueries = 6;

void lut_block(const uint8_t* blocks, size_t nblocks, size_t chunks, const uint8_t* luts, size_t stride, size_t nq,
               const int32_t* floors, uint32_t* out, uint32_t* lanes) {
  for (size_t b = 0; b < nblocks; b += 2)
    for (size_t t = 0; t < nq; t += kLutQueries) {
      const uint8_t *codes = blocks + b * chunks * 64, *tables = luts + t * stride;
      const int32_t* fl = floors ? floors + t : nullptr;
      uint32_t* o = out + (b * nq + t) * 32;
      by_nq(std::min(kLutQueries, nq - t), [&](auto q) {
        constexpr int kNQ = std::min<int>(decltype(q)::value, kLutQueries);
        if (nblocks - b >= 2)
          lut_pass<kNQ, 2>(codes, chunks, tables, stride, nq * 32, fl, nq, o, lanes + b * nq + t);
        else
          lut_pass<kNQ, 1>(codes, chunks, tables, stride, nq * 32, fl, nq, o, lanes + b * nq + t);
      });
    }
}

// A 256-entry u8 decode table held in four registers: decode() is two 128-entry vpermi2b lookups, picked per
// byte by the code's top bit.
struct Table256 {
  explicit Table256(const uint8_t* table)
      : t0(_mm512_loadu_si512(table)), t1(_mm512_loadu_si512(table + 64)), t2(_mm512_loadu_si512(table + 128)),
        t3(_mm512_loadu_si512(table + 192)) {}
  __m512i decode(__m512i codes) const {
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(codes), _mm512_permutex2var_epi8(t0, codes, t1),
                                  _mm512_permutex2var_epi8(t2, codes, t3));
  }
  __m512i t0, t1, t2, t3;
};

// kI8Dot8 block: each 64-byte group decoded through two Table256, the value planes (scorer.h), each summed
// by vpdpbusd; the high sums are weighted by 128 at the end.
template <int NQ>
void dot_u8_block_nq(const uint8_t* block, size_t groups, const int8_t* queries, const uint8_t* planes,
                     const int32_t* floors, int32_t* out, uint32_t* lanes) {
  const Table256 high(planes), low(planes + 256);
  const int32_t* q32 = reinterpret_cast<const int32_t*>(queries);
  __m512i acc[NQ][2];
  for (int t = 0; t < NQ; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
  for (size_t g = 0; g < groups; ++g) {
    if (NQ == 1) _mm_prefetch(reinterpret_cast<const char*>(block + g * 64 + kAheadI8), _MM_HINT_T0);
    const __m512i x = _mm512_loadu_si512(block + g * 64);
    const __m512i h = high.decode(x), l = low.decode(x);
    for (int t = 0; t < NQ; ++t) {
      const __m512i q = _mm512_set1_epi32(q32[size_t(t) * groups + g]);
      acc[t][0] = dpbusd(acc[t][0], h, q);
      acc[t][1] = dpbusd(acc[t][1], l, q);
    }
  }
  __m512i sums[NQ];
  for (int t = 0; t < NQ; ++t) sums[t] = _mm512_add_epi32(_mm512_slli_epi32(acc[t][0], 7), acc[t][1]);
  store_sums<NQ>(sums, floors, out, lanes);
}

void dot_u8_block(const uint8_t* block, size_t groups, const int8_t* queries, size_t nq, const uint8_t* table,
                  const int32_t* floors, int32_t* out, uint32_t* lanes) {
  by_nq(nq, [&](auto q) { dot_u8_block_nq<decltype(q)::value>(block, groups, queries, table, floors, out, lanes); });
}

void score_block(const int32_t* raw, size_t width, size_t nq, size_t n, const int32_t* shift, const float* step,
                 const float* base, const float* a, const float* b, size_t b_stride, const float* thresholds,
                 float* scores, uint32_t* masks) {
  __m512 va[2], vb[2];
  __mmask16 live[2];
  for (int h = 0; h < 2; ++h) {
    const size_t left = n > size_t(16 * h) ? n - 16 * h : 0;
    live[h] = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    va[h] = _mm512_maskz_loadu_ps(live[h], a + 16 * h);
    vb[h] = _mm512_maskz_loadu_ps(live[h], b + 16 * h);
  }
  for (size_t t = 0; t < nq; ++t) {
    uint32_t mask = 0;
    for (int h = 0; h < 2 && live[h]; ++h) {
      const __m512i r = _mm512_maskz_loadu_epi32(live[h], raw + t * width + 16 * h);
      const __m512 x = _mm512_add_ps(
          _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(r, _mm512_set1_epi32(shift[t]))), _mm512_set1_ps(step[t])),
          _mm512_set1_ps(base[t]));
      const __m512 off = b_stride ? _mm512_maskz_loadu_ps(live[h], b + t * b_stride + 16 * h) : vb[h];
      const __m512 s = _mm512_add_ps(_mm512_mul_ps(va[h], x), off);
      _mm512_mask_storeu_ps(scores + t * 32 + 16 * h, live[h], s);
      mask |= uint32_t(_mm512_mask_cmp_ps_mask(live[h], s, _mm512_set1_ps(thresholds[t]), _CMP_GE_OQ)) << (16 * h);
    }
    masks[t] = mask;
  }
}

// first_hit, 16 lanes at a time (masked loads for a partial block).
size_t first_hit(const int32_t* raw, size_t width, size_t n, int32_t shift, float step, float base, const float* a,
                 const float* b, float threshold, float* scores, uint32_t* mask) {
  const __m512i vshift = _mm512_set1_epi32(shift);
  const __m512 vstep = _mm512_set1_ps(step), vbase = _mm512_set1_ps(base), vthr = _mm512_set1_ps(threshold);
  return first_hit_with(raw, width, n, a, b, scores, mask,
                        [&](const int32_t* r, size_t m, const float* av, const float* bv, float* s) {
                          uint32_t lanes = 0;
                          for (size_t v = 0; v < m; v += 16) {
                            const __mmask16 live = m - v >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (m - v)) - 1);
                            const __m512i d = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(live, r + v), vshift);
                            const __m512 x = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), vstep), vbase);
                            const __m512 off = bv ? _mm512_maskz_loadu_ps(live, bv + v) : _mm512_setzero_ps();
                            const __m512 sc = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, av + v), x), off);
                            _mm512_mask_storeu_ps(s + v, live, sc);
                            lanes |= uint32_t(_mm512_mask_cmp_ps_mask(live, sc, vthr, _CMP_GE_OQ)) << v;
                          }
                          return lanes;
                        });
}

// One 4-bit row: each 64-byte chunk's nibbles decode through vpshufb and meet the query's even / odd
// dims in two vpdpbusd; the tail chunk is a masked load (zero bytes meet zero query padding).
int32_t dot_row4(const uint8_t* row, size_t row_bytes, const int8_t* query, const uint8_t* table) {
  const __m512i tbl = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
  const __m512i low = _mm512_set1_epi8(15);
  __m512i acc_lo = _mm512_setzero_si512(), acc_hi = acc_lo;  // two chains: a row is only a few loads long
  for (size_t i = 0; i < row_bytes; i += 64) {
    const size_t left = row_bytes - i;
    const __mmask64 live = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
    const __m512i x = _mm512_maskz_loadu_epi8(live, row + i);
    const int8_t* q = query + i * 2;
    acc_lo = _mm512_dpbusd_epi32(acc_lo, _mm512_shuffle_epi8(tbl, _mm512_and_si512(x, low)), _mm512_loadu_si512(q));
    acc_hi = _mm512_dpbusd_epi32(acc_hi, _mm512_shuffle_epi8(tbl, _mm512_and_si512(_mm512_srli_epi16(x, 4), low)),
                                 _mm512_loadu_si512(q + 64));
  }
  return _mm512_reduce_add_epi32(_mm512_add_epi32(acc_lo, acc_hi));
}

// One 8-bit row: 64 codes at a time decode through the two Table256 value planes, each met by the query in one
// vpdpbusd; the tail is a masked load of codes and query (dead lanes meet a zero query byte).
int32_t dot_row8(const uint8_t* row, size_t n, const int8_t* query, const uint8_t* planes) {
  const Table256 high(planes), low(planes + 256);
  __m512i acc_high = _mm512_setzero_si512(), acc_low = _mm512_setzero_si512();
  for (size_t j = 0; j < n; j += 64) {
    const __mmask64 live = n - j >= 64 ? ~__mmask64(0) : (__mmask64(1) << (n - j)) - 1;
    const __m512i x = _mm512_maskz_loadu_epi8(live, row + j), q = _mm512_maskz_loadu_epi8(live, query + j);
    acc_high = _mm512_dpbusd_epi32(acc_high, high.decode(x), q);
    acc_low = _mm512_dpbusd_epi32(acc_low, low.decode(x), q);
  }
  return _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(acc_high, 7), acc_low));
}

// mask_bits: eight ids per compare against run[0] + i, 64 mask bytes per vptestmb.
size_t mask_bits(const int64_t* ids, size_t n, const uint8_t* mask, size_t m, uint64_t* words) {
  return mask_bits_with(ids, n, mask, m, words, [](const int64_t* run, const uint8_t* bytes, uint64_t* word) {
    const __m512i first = _mm512_add_epi64(_mm512_set1_epi64(run[0]), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    __mmask8 differ = 0;
    for (size_t i = 0; i < 64; i += 8)
      differ |= _mm512_cmpneq_epi64_mask(_mm512_loadu_si512(run + i),
                                         _mm512_add_epi64(first, _mm512_set1_epi64(int64_t(i))));
    if (differ) return false;
    const __m512i b = _mm512_loadu_si512(bytes);
    *word = _mm512_test_epi8_mask(b, b);
    return true;
  });
}

int32_t dot_u8i8(const uint8_t* a, const int8_t* b, size_t n) {
  __m512i acc = _mm512_setzero_si512();
  for (size_t j = 0; j < n; j += 64)
    acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j));
  return _mm512_reduce_add_epi32(acc);
}

}  // namespace
}  // namespace avx512

constexpr Kernels kKernelsAVX512 = {
    .name = "avx512",
    .mul = avx512::mul,
    .scale = avx512::scale,
    .fwht = avx512::fwht,
    .kac = avx512::kac,
    .dot = avx512::dot,
    .quantize = avx512::quantize,
    .lookup = avx512::lookup,
    .pack = avx2::pack,  // no AVX-512 versions: the AVX2 ones
    .unpack = avx2::unpack,
    .dot_many = avx512::dot_many,
    .rotate = avx512::rotate,
    .encode = avx512::encode,
    .dot_i8_block = avx512::dot_i8_block,
    .lut_block = avx512::lut_block,
    .lut_tables = lut_tables,
    .lut_queries = avx512::kLutQueries,
    .lut_layout = 2,
    .dot_u8_block = avx512::dot_u8_block,
    .score_block = avx512::score_block,
    .first_hit = avx512::first_hit,
    .dot_row4 = avx512::dot_row4,
    .dot_row8 = avx512::dot_row8,
    .dot_u8i8 = avx512::dot_u8i8,
    .mask_bits = avx512::mask_bits,
};
static_assert(complete(kKernelsAVX512), "the AVX-512 kernel table is incomplete");

}  // namespace tq
