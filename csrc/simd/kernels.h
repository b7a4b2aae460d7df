// The kernel table: plain function pointers over float/uint8 buffers, one table per ISA, filled by name.
//
// Contract shared by every table (the scalar one in kernels_scalar.cpp is the reference):
// * Everything that feeds codes (mul, scale, fwht, kac, rotate, dot, quantize) must give bit-identical
//   results on every ISA. Reductions therefore use one canonical order (simd/reduce-inl.h).
// * Scan scores only need to agree with the reference within float rounding (1e-5 relative).
// * Indices are "the number of boundaries strictly below the value" (ties go to the lower cell).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {

// What a kernel needs to apply an FhtKac rotation (see rotation.h) in one call.
struct RotationPlan {
  size_t dim, block, half;  // Hadamard block p, Kac pairing distance h (0: no Kac layer)
  int steps;                // Kac layer after each odd step
  const float* signs;       // steps x dim, 1/sqrt(p) folded in on each step's block
  float kac_scale;
};

// A rotation plus the codebook of one MSE codec (see codec.h), for the fused encode fast path.
struct EncodePlan {
  RotationPlan rotation;
  const float* bounds;     // 2^bits - 1 sorted boundaries
  const float* centroids;  // padded to >= 16 floats
  int bits;
  // Binary-search tables, 32 floats per level: levels[k*32 + p] = bounds[p + 2^(bits-1-k) - 1] for the
  // positions p reachable at level k (0 elsewhere), so each probe is one table lookup. bits <= 5 only.
  const float* levels;
};

struct Kernels {
  const char* name;
  // x[i] *= s[i]
  void (*mul)(float* x, const float* s, size_t n);
  // x[i] *= c
  void (*scale)(float* x, float c, size_t n);
  // x <- post * H (pre * x) for n = 2^k floats, H the unnormalised Walsh-Hadamard transform in
  // Sylvester order (norm grows by sqrt(n)); pre and post are elementwise factors and may be null.
  void (*fwht)(float* x, const float* pre, const float* post, size_t n);
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
  // Optional whole-rotation fast path y = R x (inverse: R^T x; x may equal y). Returns false for shapes it does not
  // handle, and the caller composes mul/fwht/kac instead. Null when the ISA has none.
  bool (*rotate)(const RotationPlan& plan, bool inverse, const float* x, float* y);
  // Optional fused Alg. 1 for one row: stats = {||x||, <u, c>, ||c||^2} and the packed code row, equal
  // to dot -> rotate -> quantize -> pack. Returns false for shapes it does not handle. Null when absent.
  bool (*encode)(const EncodePlan& plan, const float* x, uint8_t* code, float* stats);
  // One 16-vector block of the kI8Dot layout (flat.h) against nq <= 8 queries of 4*groups int8 values
  // (|q| <= 63): out[t*16 + v] = sum_j q_t[j] * table[code(v, j)]. Exact integer arithmetic. lanes[t]: the lanes
  // whose sum for query t is >= floors[t] (floor_lanes in kernels_scalar.cpp; floors null: every lane).
  void (*dot_i8_block)(const uint8_t* block, size_t groups, const int8_t* queries, size_t nq, const uint8_t* table,
                       const int32_t* floors, int32_t* out, uint32_t* lanes);
  // `nblocks` consecutive 32-vector blocks of the kLut layout (flat.h), `chunks` chunks of 64 bytes each, against
  // nq <= 8 queries' tables of bytes <= 127 (64 bytes per chunk, query t at luts + t * stride):
  // out[(b*nq + t)*32 + v] = sum over sub-quantizers m of lut_t[m][nibble(b, v, m)]. Exact. lanes[b*nq + t]: the
  // lanes of block b whose sum for query t is >= floors[t], as in dot_i8_block.
  void (*lut_block)(const uint8_t* blocks, size_t nblocks, size_t chunks, const uint8_t* luts, size_t stride,
                    size_t nq, const int32_t* floors, uint32_t* out, uint32_t* lanes);
  // One query's kLut tables (simd/lut-inl.h, the same in every kernel set): `tables` sub-quantizers of 4 / bits dims of
  // q (dim floats, zeros past dim) against `centroids` (2^bits), 16 bytes <= 127 each into out, with the step and base
  // that map an integer sum s back to float (s * step + base); partial: scratch of tables * 16 floats.
  void (*lut_tables)(const float* q, size_t dim, const float* centroids, int bits, size_t tables, float* partial,
                     uint8_t* out, float* step, float* base);
  // Queries lut_block scores best in one pass over the codes (a kLut scan's query chunk), 1..8.
  size_t lut_queries;
  // The byte order of kLut chunks this table's lut_block reads (flat.h): 1 (sub-quantizer-major, for per-lane byte
  // shuffles) or 2 (vector-major, for 64-entry byte permutes). A store keeps its codes in its kernels' order.
  int lut_layout;
  // One 16-vector block of the kI8Dot8 layout (flat.h, 8-bit codes, 64 bytes per 4-dim group) against
  // nq <= 8 queries as in dot_i8_block but |q| <= 127, each code's value from the two-plane table of scorer.h
  // (128 * planes[c] + planes[256 + c]; bytes 512-1023 hold the same values as uint16). Exact.
  void (*dot_u8_block)(const uint8_t* block, size_t groups, const int8_t* queries, size_t nq, const uint8_t* table,
                       const int32_t* floors, int32_t* out, uint32_t* lanes);
  // One block's raw sums for nq <= 8 queries (query t's at raw + t * width, width 16 or 32), one call per
  // block: for v < n <= width, scores[t*32 + v] = a[v] * (float(raw - shift[t]) * step[t] + base[t]) + b_t[v]
  // (simd/score-inl.h, no FMA), b_t = b + t * b_stride (0: one b for all), and masks[t] = the lanes with
  // scores >= thresholds[t]. raw: int32, or uint32 bits below 2^24.
  void (*score_block)(const int32_t* raw, size_t width, size_t nq, size_t n, const int32_t* shift, const float* step,
                      const float* base, const float* a, const float* b, size_t b_stride, const float* thresholds,
                      float* scores, uint32_t* masks);
  // One query's raw sums of consecutive blocks of `width` (16 or 32) lanes, block i's at raw + i * width, for the
  // n >= 1 slots they hold (the last block may be partial), with a and b indexed from the first slot (b null: zero
  // offsets): the index of the first block with a lane whose score (score_block's formula) is >= threshold, its
  // `width` scores in scores and those lanes in *mask; the number of blocks (and *mask 0) when none has one.
  size_t (*first_hit)(const int32_t* raw, size_t width, size_t n, int32_t shift, float step, float base, const float* a,
                      const float* b, float threshold, float* scores, uint32_t* mask);
  // One packed 4-bit row (pack-inl.h: byte i holds dims 2i, 2i+1) against a query laid out per 64-byte
  // chunk c of the row as 64 even-dim then 64 odd-dim int8 values (|q| <= 63, zero padded):
  // sum over bytes i of q[128c + r] * table[lo(i)] + q[128c + 64 + r] * table[hi(i)], r = i % 64. Exact.
  int32_t (*dot_row4)(const uint8_t* row, size_t row_bytes, const int8_t* query, const uint8_t* table);
  // One 8-bit row of n codes against a plain int8 query (|q| <= 127): sum over j < n of q[j] * value(row[j]), values
  // from the two-plane table as in dot_u8_block. Exact.
  int32_t (*dot_row8)(const uint8_t* row, size_t n, const int8_t* query, const uint8_t* planes);
  // sum over j < n of a[j] * b[j] for n a multiple of 64 and a[j] * |b[j]| <= 16383 (decoded tokens against an int8
  // query: u8 values and |q| <= 63, or value planes below 128 and |q| <= 127). Exact.
  int32_t (*dot_u8i8)(const uint8_t* a, const int8_t* b, size_t n);
  // A filter over n slots from a boolean mask over m ids: bit i of words[i / 64] set when slot i holds an id (ids[i]
  // >= 0) below m whose mask byte is non-zero; returns the bits set. Exact (simd/mask-inl.h).
  size_t (*mask_bits)(const int64_t* ids, size_t n, const uint8_t* mask, size_t m, uint64_t* words);
};

// True when a table sets its name and every kernel but the optional rotate and encode. Each ISA TU
// defines its table constexpr with designated initializers (.mul = mul_scalar, ...), which the compiler
// checks against the member names and order, and static_asserts complete() on it.
constexpr bool complete(const Kernels& k) {
  return k.name && k.mul && k.scale && k.fwht && k.kac && k.dot && k.quantize && k.lookup && k.pack && k.unpack &&
         k.dot_many && k.dot_i8_block && k.lut_block && k.lut_tables && k.lut_queries && k.lut_layout &&
         k.dot_u8_block && k.score_block && k.first_hit && k.dot_row4 && k.dot_row8 && k.dot_u8i8 && k.mask_bits;
}

extern const Kernels kKernelsScalar;
#ifdef TQ_BUILD_AVX2
extern const Kernels kKernelsAVX2;
#endif
#ifdef TQ_BUILD_AVX512
extern const Kernels kKernelsAVX512;
#endif

}  // namespace tq
