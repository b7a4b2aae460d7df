// Reference kernels: plain loops, the definition every SIMD table must reproduce.
#include <cmath>
#include <cstring>

#include "pack-inl.h"
#include "simd/reduce-inl.h"
#include "simd/score-inl.h"
#include "simd/kernels.h"
#include "simd/lut-inl.h"
#include "simd/mask-inl.h"

namespace tq {
namespace {

void mul_scalar(float* x, const float* s, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] *= s[i];
}

void scale_scalar(float* x, float c, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] *= c;
}

// Rotation step: Walsh-Hadamard butterflies, stride h doubling (Sylvester order).
void fwht_scalar(float* x, const float* pre, const float* post, size_t n) {
  if (pre) mul_scalar(x, pre, n);
  for (size_t h = 1; h < n; h <<= 1)
    for (size_t i = 0; i < n; i += 2 * h)
      for (size_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  if (post) mul_scalar(x, post, n);
}

// Rotation step: one Kac-walk layer pairing coordinate i with i + d/2.
void kac_scalar(float* a, float* b, size_t n, float c) {
  for (size_t i = 0; i < n; ++i) {
    const float x = a[i], y = b[i];
    a[i] = (x + y) * c;
    b[i] = (x - y) * c;
  }
}

float dot_scalar(const float* a, const float* b, size_t n) {
  float lanes[kLanes] = {};
  for (size_t j = 0; j < n; ++j) {
    const float p = a[j] * b[j];
    lanes[j % kLanes] = lanes[j % kLanes] + p;
  }
  return reduce_lanes(lanes);
}

// Alg. 1, Quant: nearest Lloyd-Max centroid by a branchless binary search over the boundaries.
void quantize_scalar(const float* y, float inv_norm, const float* bounds, const float* centroids, int bits,
                     size_t n, uint8_t* idx, float* dot_uc, float* sq_c) {
  float ld[kLanes] = {}, ls[kLanes] = {};
  for (size_t j = 0; j < n; ++j) {
    const float u = y[j] * inv_norm;
    unsigned pos = 0;
    for (unsigned step = 1u << (bits - 1); step > 0; step >>= 1)
      if (bounds[pos + step - 1] < u) pos += step;
    idx[j] = uint8_t(pos);
    const float c = centroids[pos];
    const float pd = u * c, ps = c * c;
    ld[j % kLanes] = ld[j % kLanes] + pd;
    ls[j % kLanes] = ls[j % kLanes] + ps;
  }
  *dot_uc = reduce_lanes(ld);
  *sq_c = reduce_lanes(ls);
}

void lookup_scalar(const uint8_t* idx, const float* centroids, size_t n, float* out) {
  for (size_t j = 0; j < n; ++j) out[j] = centroids[idx[j]];
}

void pack_scalar(const uint8_t* idx, size_t n, int bits, uint8_t* out) { pack_bits(idx, n, bits, out); }
void unpack_scalar(const uint8_t* in, size_t n, int bits, uint8_t* idx) { unpack_bits(in, n, bits, idx); }

void dot_many_scalar(const float* queries, size_t nq, const float* row, size_t n, float* out) {
  for (size_t q = 0; q < nq; ++q) {
    double s = 0;
    for (size_t j = 0; j < n; ++j) s += double(queries[q * n + j]) * double(row[j]);
    out[q] = float(s);
  }
}

// The value of 8-bit code c in a two-plane table (scorer.h): 128 * high[c] + low[c].
int32_t wide_value(const uint8_t* planes, uint8_t c) { return 128 * int32_t(planes[c]) + planes[256 + c]; }

// kI8Dot / kI8Dot8 reference: out[t*16 + v] = sum_j q_t[j] * value(code(v, j)), the value of a code at
// (vector v, group g, dim j) read by `value_at`.
template <class ValueAt>
void dot_block_scalar(size_t groups, const int8_t* queries, size_t nq, int32_t* out, ValueAt value_at) {
  for (size_t t = 0; t < nq; ++t)
    for (size_t v = 0; v < 16; ++v) {
      int32_t s = 0;
      for (size_t g = 0; g < groups; ++g)
        for (size_t j = 0; j < 4; ++j) s += int32_t(queries[t * groups * 4 + g * 4 + j]) * value_at(v, g, j);
      out[t * 16 + v] = s;
    }
}

// The lanes of a block that may still enter each query's top-k: lanes[t] has bit v set when raw[t * width + v] >=
// floors[t], the least sum that can reach the query's k-th score (the scan's bound); every lane when floors is null.
// The reference for every kernel set's lanes.
void floor_lanes(const int32_t* raw, size_t width, size_t nq, const int32_t* floors, uint32_t* lanes) {
  for (size_t t = 0; t < nq; ++t) {
    uint32_t m = 0;
    for (size_t v = 0; v < width; ++v) m |= uint32_t(!floors || raw[t * width + v] >= floors[t]) << v;
    lanes[t] = m;
  }
}

// kI8Dot: nibbles, vector v < 8 low and v >= 8 high, four bytes per vector and group.
void dot_i8_block_scalar(const uint8_t* block, size_t groups, const int8_t* queries, size_t nq, const uint8_t* table,
                         const int32_t* floors, int32_t* out, uint32_t* lanes) {
  dot_block_scalar(groups, queries, nq, out, [&](size_t v, size_t g, size_t j) {
    const uint8_t byte = block[g * 32 + (v % 8) * 4 + j];
    return int32_t(table[v < 8 ? byte & 15 : byte >> 4]);
  });
  floor_lanes(out, 16, nq, floors, lanes);
}

// kI8Dot8: one byte per code, 64 bytes per group, values from the two-plane table.
void dot_u8_block_scalar(const uint8_t* block, size_t groups, const int8_t* queries, size_t nq, const uint8_t* planes,
                         const int32_t* floors, int32_t* out, uint32_t* lanes) {
  dot_block_scalar(groups, queries, nq, out,
                   [&](size_t v, size_t g, size_t j) { return wide_value(planes, block[g * 64 + v * 4 + j]); });
  floor_lanes(out, 16, nq, floors, lanes);
}

// kLut reference, lut layout 1 (flat.h): chunk c, lane L (sub-quantizer 4c + L), byte i holds vector i (low
// nibble) and i + 16.
void lut_block_scalar(const uint8_t* blocks, size_t nblocks, size_t chunks, const uint8_t* luts, size_t stride,
                      size_t nq, const int32_t* floors, uint32_t* out, uint32_t* lanes) {
  for (size_t b = 0; b < nblocks; ++b) {
    for (size_t t = 0; t < nq; ++t)
      for (size_t v = 0; v < 32; ++v) {
        const uint8_t *block = blocks + b * chunks * 64, *lut = luts + t * stride;
        uint32_t s = 0;
        for (size_t c = 0; c < chunks; ++c)
          for (size_t lane = 0; lane < 4; ++lane) {
            const uint8_t byte = block[c * 64 + lane * 16 + v % 16];
            s += lut[c * 64 + lane * 16 + (v < 16 ? byte & 15 : byte >> 4)];
          }
        out[(b * nq + t) * 32 + v] = s;
      }
    floor_lanes(reinterpret_cast<const int32_t*>(out) + b * nq * 32, 32, nq, floors, lanes + b * nq);
  }
}

void score_block_scalar(const int32_t* raw, size_t width, size_t nq, size_t n, const int32_t* shift, const float* step,
                        const float* base, const float* a, const float* b, size_t b_stride, const float* thresholds,
                        float* scores, uint32_t* masks) {
  for (size_t t = 0; t < nq; ++t)
    masks[t] = score_lanes(raw + t * width, n, shift[t], step[t], base[t], a, b + t * b_stride, thresholds[t],
                           scores + t * 32);
}

size_t first_hit_scalar(const int32_t* raw, size_t width, size_t n, int32_t shift, float step, float base,
                        const float* a, const float* b, float threshold, float* scores, uint32_t* mask) {
  return first_hit_with(raw, width, n, a, b, scores, mask,
                        [&](const int32_t* r, size_t m, const float* av, const float* bv, float* s) {
                          return score_lanes(r, m, shift, step, base, av, bv, threshold, s);
                        });
}

int32_t dot_row4_scalar(const uint8_t* row, size_t row_bytes, const int8_t* query, const uint8_t* table) {
  int32_t s = 0;
  for (size_t i = 0; i < row_bytes; ++i) {
    const int8_t* q = query + (i / 64) * 128 + i % 64;
    s += int32_t(q[0]) * table[row[i] & 15] + int32_t(q[64]) * table[row[i] >> 4];
  }
  return s;
}

int32_t dot_row8_scalar(const uint8_t* row, size_t n, const int8_t* query, const uint8_t* planes) {
  int32_t s = 0;
  for (size_t j = 0; j < n; ++j) s += int32_t(query[j]) * wide_value(planes, row[j]);
  return s;
}

int32_t dot_u8i8_scalar(const uint8_t* a, const int8_t* b, size_t n) {
  int32_t s = 0;
  for (size_t j = 0; j < n; ++j) s += int32_t(a[j]) * b[j];
  return s;
}

// Eight bytes' non-zero flags as bits 0..7 (no carry crosses a byte: 0x7f + 0x7f < 0x100).
uint64_t nonzero_bytes(const uint8_t* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  constexpr uint64_t low7 = 0x7F7F7F7F7F7F7F7FULL, high = 0x8080808080808080ULL;
  const uint64_t flags = (((x & low7) + low7) | x) & high;  // bit 8k + 7: byte k is non-zero
  return ((flags >> 7) * 0x0102040810204080ULL) >> 56;     // gathered into bits 0..7
}

size_t mask_bits_scalar(const int64_t* ids, size_t n, const uint8_t* mask, size_t m, uint64_t* words) {
  return mask_bits_with(ids, n, mask, m, words, [](const int64_t* run, const uint8_t* bytes, uint64_t* word) {
    int64_t off = 0;  // one pass without branches
    for (size_t i = 0; i < 64; ++i) off |= run[i] ^ (run[0] + int64_t(i));
    if (off) return false;
    for (size_t i = 0; i < 64; i += 8) *word |= nonzero_bytes(bytes + i) << i;
    return true;
  });
}

}  // namespace

constexpr Kernels kKernelsScalar = {
    .name = "scalar",
    .mul = mul_scalar,
    .scale = scale_scalar,
    .fwht = fwht_scalar,
    .kac = kac_scalar,
    .dot = dot_scalar,
    .quantize = quantize_scalar,
    .lookup = lookup_scalar,
    .pack = pack_scalar,
    .unpack = unpack_scalar,
    .dot_many = dot_many_scalar,
    .rotate = nullptr,
    .encode = nullptr,
    .dot_i8_block = dot_i8_block_scalar,
    .lut_block = lut_block_scalar,
    .lut_tables = lut_tables,
    .lut_queries = 8,
    .lut_layout = 1,
    .dot_u8_block = dot_u8_block_scalar,
    .score_block = score_block_scalar,
    .first_hit = first_hit_scalar,
    .dot_row4 = dot_row4_scalar,
    .dot_row8 = dot_row8_scalar,
    .dot_u8i8 = dot_u8i8_scalar,
    .mask_bits = mask_bits_scalar,
};
static_assert(complete(kKernelsScalar), "the scalar kernel table is incomplete");

}  // namespace tq
