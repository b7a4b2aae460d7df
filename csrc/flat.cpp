#include "flat.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>

#include "common.h"
#include "simd/score-inl.h"
#include "topk.h"

namespace tq {
namespace {

constexpr size_t kQueryChunk = 8;  // queries sharing one pass over the codes (the kernels' limit)
constexpr size_t kLutBlocks = 4;   // kLut blocks per kernel call (the AVX-512 kernel shares each table load by two)

}  // namespace

FlatStore::FlatStore(size_t dim, int bits, const std::vector<float>& centroids, const Kernels* kernels)
    : dim_(dim), row_bytes_(packed_row_bytes(dim, bits)), bits_(bits),
      layout_(bits == 4 ? Layout::I8Dot : bits == 8 ? Layout::I8Dot8 : bits <= 2 ? Layout::Lut : Layout::Rows),
      scorer_(dim, bits, centroids, kernels), k_(kernels) {
  if (layout_ == Layout::I8Dot || layout_ == Layout::I8Dot8) {
    const size_t groups = (dim + 3) / 4;
    groups2_ = layout_ == Layout::I8Dot ? groups + (groups & 1) : groups;  // kI8Dot loads two groups at once
    block_bytes_ = groups2_ * (layout_ == Layout::I8Dot ? 32 : 64);
  } else if (layout_ == Layout::Lut) {
    sub_dims_ = size_t(4 / bits);
    const size_t nibbles = (dim + sub_dims_ - 1) / sub_dims_;
    chunks_ = (nibbles + 3) / 4;
    block_vectors_ = 32;
    block_bytes_ = chunks_ * 64;
  }
  if (layout_ != Layout::Rows) index_dims();
  refresh();
}

void FlatStore::refresh() {
  codes_ptr_ = codes_.data();
  a_ptr_ = a_.data();
  b_ptr_ = b_.empty() ? nullptr : b_.data();
}

namespace {

constexpr float kZeroOffsets[32] = {};  // b of a block when no offsets are stored

bool all_zero(const float* b, size_t n) {  // every value is +0.0 (bitwise: -0.0 must be kept)
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(b);
  return std::all_of(bits, bits + n, [](uint32_t w) { return w == 0; });
}

}  // namespace

const float* FlatStore::b_from(size_t first) const { return b_ptr_ ? b_ptr_ + first : kZeroOffsets; }

void FlatStore::ensure(size_t n, bool exact) {
  if (!attached_ && n <= cap_) return;
  const size_t from = attached_ ? n_ : cap_;  // attached views grow from their size, copied once into the new room
  size_t cap = exact ? std::max(n, n_) : std::max({n, from + from / 4, from + 16});
  if (layout_ != Layout::Rows) cap = blocks_for(cap) * block_vectors_;  // codes are allocated by blocks
  if (attached_) return own_into(cap);
  resize_exact(codes_, code_bytes(cap));
  resize_exact(a_, cap);
  if (!b_.empty()) resize_exact(b_, cap);
  cap_ = cap;
  refresh();
}

void FlatStore::reserve(size_t n) {
  // Bytes per vector are below 2 * block_bytes_ + row_bytes_ + 8, so this bounds every size computed.
  TQ_CHECK(n <= (size_t(1) << 48) / (2 * block_bytes_ + row_bytes_ + 8),
           "cannot reserve room for " + std::to_string(n) + " vectors");
  ensure(n, true);
}

void FlatStore::own() {
  if (attached_) ensure(n_, true);
}

void FlatStore::own_into(size_t cap) {
  const size_t n = n_;
  codes_.reserve(code_bytes(cap));
  codes_.assign(codes_ptr_, codes_ptr_ + code_bytes(n));
  codes_.resize(code_bytes(cap), 0);
  a_.reserve(cap);
  a_.assign(a_ptr_, a_ptr_ + n);
  a_.resize(cap, 0.0f);
  if (b_ptr_ && !all_zero(b_ptr_, n)) {
    b_.reserve(cap);
    b_.assign(b_ptr_, b_ptr_ + n);
    b_.resize(cap, 0.0f);
  }
  cap_ = cap;
  attached_ = false;
  refresh();
}

void FlatStore::attach(const uint8_t* codes, size_t code_size, const float* a, const float* b, size_t n) {
  TQ_CHECK(code_size == code_bytes(n), "stored index arrays have inconsistent sizes");
  AlignedVector<uint8_t>().swap(codes_);  // release the owned storage: the views replace it
  std::vector<float>().swap(a_);
  std::vector<float>().swap(b_);
  cap_ = 0;
  codes_ptr_ = codes;
  a_ptr_ = a;
  b_ptr_ = b;
  n_ = n;
  attached_ = true;
  bounds_ = {};
  bounds_.add(a, b, n);
}

void FlatStore::Bounds::add(const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    a_lo = std::min(a_lo, a[i]);
    a_hi = std::max(a_hi, a[i]);
    b_hi = std::max(b_hi, b ? b[i] : 0.0f);
  }
  per_a_hi = a_lo >= 0 && a_hi > 0 ? 1.0f / a_hi : 0.0f;
}

int32_t FlatStore::raw_floor(float threshold, int32_t shift, float step, float base) const {
  // A slot scores a * x + b with x = (raw - shift) * step + base. Once threshold > b_hi, reaching it needs
  // a * x >= threshold - b > 0, so x > 0 and (as 0 <= a <= a_hi) x >= (threshold - b_hi) / a_hi. The margins
  // (1e-4 relative, far above the float rounding here and in the score, plus 2 raw steps) keep every slot the
  // score formula would let in. Called after every block that changed a top-k, so it multiplies where it can.
  const float t = threshold, b_hi = bounds_.b_hi;
  if (!(t > b_hi) || !(bounds_.per_a_hi > 0) || !(step > 0) || !(t < std::numeric_limits<float>::infinity()))
    return INT32_MIN;
  const float gap = (t - b_hi) - 1e-4f * (std::abs(t) + 2 * std::abs(b_hi)), per_step = 1.0f / step;
  if (!(gap > 0)) return INT32_MIN;
  float r = (gap * bounds_.per_a_hi - base) * per_step;
  r -= 1e-4f * (std::abs(r) + std::abs(base * per_step)) + 2;
  if (!(r > -2e9f)) return INT32_MIN;  // below every int32 sum: no floor
  if (r > 2e9f) return INT32_MAX;
  return int32_t(std::clamp<int64_t>(int64_t(std::floor(r)) + shift, INT32_MIN, INT32_MAX));
}

// The byte and bit offset of (slot, dim j) in the blocked layouts of flat.h are dim_byte_[j] + slot_byte(v) and
// dim_shift_[j] + slot_shift(v) for the slot's position v in its block: tables over j, filled once.
void FlatStore::index_dims() {
  dim_byte_.resize(dim_);
  dim_shift_.resize(dim_);
  for (size_t j = 0; j < dim_; ++j) {
    if (layout_ == Layout::Lut) {
      const size_t m = j / sub_dims_;  // the sub-quantizer (nibble) holding dim j
      dim_byte_[j] = uint32_t((m / 4) * 64 + (k_->lut_layout == 2 ? m % 4 : (m % 4) * 16));
      dim_shift_[j] = uint8_t(bits_ * int(j % sub_dims_));
    } else {  // kI8Dot: 32 bytes per group, kI8Dot8: 64
      dim_byte_[j] = uint32_t((j / 4) * (layout_ == Layout::I8Dot ? 32 : 64) + j % 4);
      dim_shift_[j] = 0;
    }
  }
}

size_t FlatStore::slot_byte(size_t v) const {
  if (layout_ == Layout::Lut) return k_->lut_layout == 2 ? (v % 16) * 4 : v % 16;
  return layout_ == Layout::I8Dot ? (v % 8) * 4 : v * 4;
}

int FlatStore::slot_shift(size_t v) const {
  if (layout_ == Layout::Lut) return v < 16 ? 0 : 4;
  return layout_ == Layout::I8Dot && v >= 8 ? 4 : 0;
}

// Dims [0, units() * unit_dims()) of a vector in units of whole bytes (kLut: a nibble of sub_dims_ dims) or 32-bit
// words (kI8Dot, kI8Dot8: four consecutive dims in four consecutive bytes); later dims one by one.
size_t FlatStore::unit_dims() const { return layout_ == Layout::Lut ? sub_dims_ : 4; }

void FlatStore::set_code(size_t slot, const uint8_t* idx) {
  if (layout_ == Layout::Rows) return k_->pack(idx, dim_, bits_, codes_.data() + slot * row_bytes_);
  const size_t v = slot % block_vectors_, per = unit_dims(), whole = dim_ / per * per;
  uint8_t* base = codes_.data() + (slot / block_vectors_) * block_bytes_ + slot_byte(v);
  const unsigned mask = (1u << bits_) - 1;
  const int shift = slot_shift(v);
  if (layout_ == Layout::Lut) {
    for (size_t j = 0; j < whole; j += per) {
      unsigned nibble = 0;
      for (size_t d = 0; d < per; ++d) nibble |= unsigned(idx[j + d]) << (bits_ * int(d));
      uint8_t& byte = base[dim_byte_[j]];
      byte = uint8_t((byte & ~(15u << shift)) | (nibble << shift));
    }
  } else {
    const uint32_t keep = layout_ == Layout::I8Dot ? ~(0x0F0F0F0Fu << shift) : 0u;  // the other nibbles
    for (size_t j = 0; j < whole; j += 4) {
      uint32_t word, codes;
      std::memcpy(&codes, idx + j, 4);
      std::memcpy(&word, base + dim_byte_[j], 4);
      word = (word & keep) | (codes << shift);
      std::memcpy(base + dim_byte_[j], &word, 4);
    }
  }
  for (size_t j = whole; j < dim_; ++j) {
    uint8_t& byte = base[dim_byte_[j]];
    const int at = dim_shift_[j] + shift;
    byte = uint8_t((byte & ~(mask << at)) | (unsigned(idx[j]) << at));
  }
}

void FlatStore::get_code(size_t slot, uint8_t* idx) const {
  if (layout_ == Layout::Rows) return k_->unpack(codes_ptr_ + slot * row_bytes_, dim_, bits_, idx);
  const size_t v = slot % block_vectors_, per = unit_dims(), whole = dim_ / per * per;
  const uint8_t* base = codes_ptr_ + (slot / block_vectors_) * block_bytes_ + slot_byte(v);
  const unsigned mask = (1u << bits_) - 1;
  const int shift = slot_shift(v);
  if (layout_ == Layout::Lut) {
    for (size_t j = 0; j < whole; j += per) {
      const unsigned nibble = (base[dim_byte_[j]] >> shift) & 15u;
      for (size_t d = 0; d < per; ++d) idx[j + d] = uint8_t((nibble >> (bits_ * int(d))) & mask);
    }
  } else {
    const uint32_t take = layout_ == Layout::I8Dot ? 0x0F0F0F0Fu : ~0u;
    for (size_t j = 0; j < whole; j += 4) {
      uint32_t word;
      std::memcpy(&word, base + dim_byte_[j], 4);
      word = (word >> shift) & take;
      std::memcpy(idx + j, &word, 4);
    }
  }
  for (size_t j = whole; j < dim_; ++j) idx[j] = uint8_t((base[dim_byte_[j]] >> (dim_shift_[j] + shift)) & mask);
}

void FlatStore::append(const uint8_t* packed_rows, const float* a, const float* b, size_t n) {
  const size_t total = n_ + n;
  ensure(total, false);
  if (b_.empty() && !all_zero(b, n)) {  // the first nonzero offset: store them all from now on
    resize_exact(b_, cap_);
    refresh();
  }
  std::copy_n(a, n, a_.begin() + n_);
  if (!b_.empty()) std::copy_n(b, n, b_.begin() + n_);
  bounds_.add(a, b, n);
  std::vector<uint8_t> idx(dim_);
  for (size_t i = 0; i < n; ++i) {
    k_->unpack(packed_rows + i * row_bytes_, dim_, bits_, idx.data());
    set_code(n_ + i, idx.data());
  }
  n_ = total;
}

void FlatStore::move(size_t from, size_t to) {
  TQ_CHECK(from < n_ && to < n_, "slot out of range");
  own();
  std::vector<uint8_t> idx(dim_);
  get_code(from, idx.data());
  set_code(to, idx.data());
  a_[to] = a_[from];
  if (!b_.empty()) b_[to] = b_[from];
}

void FlatStore::truncate(size_t n) {
  TQ_CHECK(n <= n_, "cannot grow by truncate");
  own();
  const std::vector<uint8_t> zeros(dim_, 0);
  for (size_t s = n; s < n_ && s < blocks_for(n) * block_vectors_; ++s) set_code(s, zeros.data());
  // The capacity is kept; freed whole blocks (or rows) are zeroed, as new storage would be.
  std::fill(codes_.begin() + code_bytes(n), codes_.begin() + code_bytes(n_), uint8_t(0));
  std::fill(a_.begin() + n, a_.begin() + n_, 0.0f);
  if (!b_.empty()) std::fill(b_.begin() + n, b_.begin() + n_, 0.0f);
  n_ = n;
}

void FlatStore::packed_rows(const int64_t* slots, size_t count, uint8_t* out) const {
  for (size_t i = 0; i < count; ++i) TQ_CHECK(slots[i] >= 0 && size_t(slots[i]) < n_, "slot out of range");
  std::vector<uint8_t> idx(dim_);
  for (size_t i = 0; i < count; ++i) {
    get_code(size_t(slots[i]), idx.data());
    k_->pack(idx.data(), dim_, bits_, out + i * row_bytes_);
  }
}

// One chunk of <= kQueryChunk queries prepared for the store's layout. Raw kernel sums map to scores as
// a * ((raw - shift) * step + base) + b (simd/score-inl.h), with per-query shift, step and base.
struct FlatStore::Chunk {
  size_t q0 = 0, nq = 0;
  AlignedVector<int8_t> q7;    // kI8Dot(8): queries rounded to int8 (scorer.h), groups2_ * 4 values each
  AlignedVector<uint8_t> lut;  // kLut: tables of bytes <= 127, chunks_ * 64 bytes per query
  // Per query (fixed arrays: a chunk holds at most kQueryChunk queries, and a one-query search pays no allocation
  // for them).
  std::array<int32_t, kQueryChunk> shift{};
  std::array<float, kQueryChunk> step{}, base{};
  // Per query, as the scan goes: its top-k's threshold and the raw floor it gives (raw_floor), both refreshed
  // after each block that pushed to it (the only time the threshold moves).
  std::array<float, kQueryChunk> threshold{};
  std::array<int32_t, kQueryChunk> floor{};
};

FlatStore::Chunk FlatStore::prepare(const float* queries, size_t q0, size_t nq) const {
  Chunk c;
  c.q0 = q0;
  c.nq = nq;
  TQ_CHECK(nq <= kQueryChunk, "a query chunk holds at most " + std::to_string(kQueryChunk) + " queries");
  c.step.fill(1.0f);
  c.threshold.fill(-std::numeric_limits<float>::infinity());
  c.floor.fill(INT32_MIN);
  if (layout_ == Layout::I8Dot || layout_ == Layout::I8Dot8) {
    const size_t width = groups2_ * 4;
    c.q7.assign(nq * width, 0);
    for (size_t t = 0; t < nq; ++t) {
      // the offset is removed exactly, before any rounding (score-inl.h)
      scorer_.prepare_into(queries + (q0 + t) * dim_, c.q7.data() + t * width, &c.step[t], &c.shift[t]);
    }
  } else if (layout_ == Layout::Lut) {
    c.lut.resize(nq * chunks_ * 64);
    for (size_t t = 0; t < nq; ++t)
      prepare_lut(queries + (q0 + t) * dim_, c.lut.data() + t * chunks_ * 64, &c.step[t], &c.base[t]);
  }
  return c;
}

void FlatStore::prepare_lut(const float* q, uint8_t* out, float* step, float* base) const {
  const size_t tables = chunks_ * 4;
  thread_local std::vector<float> partial;  // scratch, every entry written: kept per thread, not allocated per query
  if (partial.size() < tables * 16) partial.resize(tables * 16);
  k_->lut_tables(q, dim_, scorer_.centroids(), bits_, tables, partial.data(), out, step, base);
}

void FlatStore::block_raw(const Chunk& c, size_t blk, size_t count, const int32_t* floors, uint32_t* raw,
                          uint32_t* lanes) const {
  const uint8_t* block = codes_ptr_ + blk * block_bytes_;
  if (layout_ == Layout::Lut) return k_->lut_block(block, count, chunks_, c.lut.data(), chunks_ * 64, c.nq, floors, raw,
                                                   lanes);
  const auto dot = layout_ == Layout::I8Dot ? k_->dot_i8_block : k_->dot_u8_block;  // one block per call
  for (size_t b = 0; b < count; ++b)
    dot(block + b * block_bytes_, groups2_, c.q7.data(), c.nq, scorer_.table(), floors,
        reinterpret_cast<int32_t*>(raw) + b * c.nq * block_vectors_, lanes + b * c.nq);
}

void FlatStore::scan(Chunk& c, const float* queries, size_t b0, size_t b1, const uint64_t* allowed,
                     TopK* tops) const {
  const size_t bv = block_vectors_;
  if (layout_ == Layout::Rows) return scan_rows(queries, c.q0, c.nq, b0 * bv, std::min(n_, b1 * bv), allowed, tops);
  if (c.nq == 1 && !allowed) return scan_one(c, b0, b1, tops[0]);
  const size_t group = layout_ == Layout::Lut ? kLutBlocks : 1;  // blocks per kernel call
  alignas(64) uint32_t raw[kLutBlocks * kQueryChunk * 32];
  uint32_t lanes[kLutBlocks * kQueryChunk];
  uint64_t bits[kLutBlocks];
  // The floats of the few lanes scored are scattered loads: fetch the range's lines ahead (a tile is ~2,000 slots).
  for (size_t i = b0 * bv; i < std::min(n_, b1 * bv); i += 16) {
    __builtin_prefetch(a_ptr_ + i);
    if (b_ptr_) __builtin_prefetch(b_ptr_ + i);
  }
  for (size_t g0 = b0; g0 < b1; g0 += group) {
    const size_t count = std::min(group, b1 - g0);
    bool any = false;
    for (size_t i = 0; i < count; ++i) {
      const size_t first = (g0 + i) * bv;  // lanes past the last slot are never offered
      any |= (bits[i] = allowed_bits(allowed, first, std::min(bv, n_ - first))) != 0;
    }
    if (!any) continue;
    block_raw(c, g0, count, c.floor.data(), raw, lanes);  // the lanes that may enter each top-k (most: none)
    uint32_t hit = 0;  // most groups have none: no offer calls (WordNet 2-bit, avx512: +1% batch, +3% one query)
    for (size_t i = 0; i < count * c.nq; ++i) hit |= lanes[i];
    if (!hit) continue;
    for (size_t i = 0; i < count; ++i)
      offer(c, (g0 + i) * bv, reinterpret_cast<const int32_t*>(raw) + i * c.nq * bv, lanes + i * c.nq,
            uint32_t(bits[i]), tops);
  }
}

// Testing each block's sums as the kernel makes them (raw floor, then offer) puts a branch on every block's result in
// a one-query pass, and an offer on most blocks where the floor is loose (norms spread wide: SIFT, MNIST). Kernels
// writing a run of blocks with no test, then one pass of exact scores over the run, measured (one core, interleaved):
// avx512 SIFT5k 2-bit 9.2-10.0 -> 7.8-8.0 us, 4-bit 13.6-13.9 -> 10.5-10.7, WordNet 2-bit 150-155 -> 139-141, WordNet
// 4-bit the same; avx2 faster everywhere (SIFT5k 2-bit 11.7-12.0 -> 10.0-10.4).
void FlatStore::scan_one(Chunk& c, size_t b0, size_t b1, TopK& top) const {
  constexpr size_t kRun = 64;  // blocks per run: their sums (<= 8 KB) stay in L1
  alignas(64) int32_t sums[kRun * 32];
  alignas(64) float scores[32];
  uint32_t lanes[kRun];
  const size_t bv = block_vectors_;
  for (size_t r0 = b0; r0 < b1; r0 += kRun) {
    const size_t count = std::min(kRun, b1 - r0), first = r0 * bv, n = std::min(count * bv, n_ - first);
    block_raw(c, r0, count, nullptr, reinterpret_cast<uint32_t*>(sums), lanes);
    for (size_t i = 0; i < count; ++i) {  // i: the next block to test
      const size_t at = i * bv;
      uint32_t hit = 0;
      i += k_->first_hit(sums + at, bv, n - at, c.shift[0], c.step[0], c.base[0], a_ptr_ + first + at,
                         b_ptr_ ? b_ptr_ + first + at : nullptr, c.threshold[0], scores, &hit);
      for (; hit; hit &= hit - 1) {  // none once i == count
        const int v = __builtin_ctz(hit);
        top.push(scores[v], int64_t(first + i * bv + size_t(v)));
      }
      c.threshold[0] = top.threshold();
    }
  }
}

void FlatStore::offer(Chunk& c, size_t first, const int32_t* sums, uint32_t* hits, uint32_t allowed,
                      TopK* tops) const {
  const size_t bv = block_vectors_;
  size_t busy = 0;  // queries with a lane at or above their floor
  for (size_t t = 0; t < c.nq; ++t) busy += (hits[t] &= allowed) != 0;
  if (!busy) return;
  float scores[kQueryChunk * 32];
  const float *a = a_ptr_ + first, *b = b_from(first);
  // A loose floor (per-vector floats spread wide) lets most queries by: score the block at once (simd/score-inl.h
  // formula, as every lane below); a tight one, the few lanes one by one.
  if (2 * busy > c.nq) {
    k_->score_block(sums, bv, c.nq, std::min(bv, n_ - first), c.shift.data(), c.step.data(), c.base.data(), a, b, 0,
                    c.threshold.data(), scores, hits);
  } else {
    for (size_t t = 0; t < c.nq; ++t)
      for (uint32_t left = hits[t]; left; left &= left - 1) {
        const int v = __builtin_ctz(left);
        if (!score_lanes(sums + t * bv + size_t(v), 1, c.shift[t], c.step[t], c.base[t], a + v, b + v, c.threshold[t],
                         scores + t * 32 + size_t(v)))
          hits[t] &= ~(1u << v);
      }
  }
  for (size_t t = 0; t < c.nq; ++t) {
    uint32_t in = hits[t] & allowed;
    if (!in) continue;
    for (; in; in &= in - 1) {
      const int v = __builtin_ctz(in);
      tops[t].push(scores[t * 32 + size_t(v)], int64_t(first + size_t(v)));
    }
    c.threshold[t] = tops[t].threshold();
    c.floor[t] = raw_floor(c.threshold[t], c.shift[t], c.step[t], c.base[t]);
  }
}

void FlatStore::scan_rows(const float* queries, size_t q0, size_t nq, size_t r0, size_t r1, const uint64_t* allowed,
                          TopK* tops) const {
  std::vector<uint8_t> idx(dim_);
  std::vector<float> row(dim_), est(nq);
  for (size_t r = r0; r < r1; ++r) {
    if (!tq::allowed(allowed, r)) continue;
    k_->unpack(codes_ptr_ + r * row_bytes_, dim_, bits_, idx.data());
    k_->lookup(idx.data(), scorer_.centroids(), dim_, row.data());
    k_->dot_many(queries + q0 * dim_, nq, row.data(), dim_, est.data());
    for (size_t t = 0; t < nq; ++t) {
      const float s = a_ptr_[r] * est[t] + (b_ptr_ ? b_ptr_[r] : 0.0f);
      if (s >= tops[t].threshold()) tops[t].push(s, int64_t(r));
    }
  }
}

namespace {

// The search driver of FlatStore and tiered_search. Tasks are groups of up to kChunksPerGroup query chunks (of
// `per` queries, made by prepare(q0, nq)) over a range of blocks. A task walks its blocks in tiles of `tile`
// blocks (about kTileBytes, which stay in L2) and runs every chunk over a tile before the next, so the codes come
// from memory once per group instead of once per chunk; each chunk's tables stay in L1 for a whole tile.
// scan(chunk, b0, b1, tops) offers blocks [b0, b1) to the chunk's top-k. One thread is started per thread_bytes of
// work, counted as code bytes per query chunk (about 50 per ns in the blocked layouts, kRowsCost times fewer in kRows,
// which decodes to floats): starting and joining threads cost more than a one-query scan of up to 30,000 vectors
// gained from a second core (measured 0.56-1.0x at 2 bits, 0.65-0.9x at 4; 1.1-1.4x at 116,659 vectors, 4 bits).
constexpr size_t kChunksPerGroup = 8, kTileBytes = size_t(192) << 10, kRowsCost = 32;
std::atomic<size_t> thread_bytes{size_t(8) << 20};

template <class Prepare, class Scan>
void blocked_search(size_t nq, size_t k, size_t blocks, size_t block_cost, size_t per, size_t tile, float* scores,
                    int64_t* slots, int threads, const InterruptCheck& interrupted, Prepare&& prepare, Scan&& scan) {
  const size_t chunks = (nq + per - 1) / per;
  const size_t groups = (chunks + kChunksPerGroup - 1) / kChunksPerGroup;
  // Few queries: split the codes too, so every thread has work; each task keeps its own top-k.
  const int t = resolve_threads(threads, chunks * std::max<size_t>(blocks, 1) * block_cost, thread_bytes.load());
  const size_t ranges = std::max<size_t>(1, std::min(blocks, (size_t(t) + groups - 1) / groups));
  std::vector<std::vector<TopK>> tops(groups * ranges);  // per task: one TopK per query of its group
  parallel_for(groups * ranges, 1, t, interrupted, [&](size_t b, size_t e) {
    for (size_t task = b; task < e; ++task) {
      const size_t g = task / ranges, r = task % ranges;
      const size_t c0 = g * kChunksPerGroup, c1 = std::min(chunks, c0 + kChunksPerGroup);
      std::vector<decltype(prepare(size_t(0), size_t(0)))> prepared;
      for (size_t c = c0; c < c1; ++c) prepared.push_back(prepare(c * per, std::min(per, nq - c * per)));
      tops[task].assign(std::min(nq, c1 * per) - c0 * per, TopK(k));
      const size_t b0 = blocks * r / ranges, b1 = blocks * (r + 1) / ranges;
      for (size_t t0 = b0; t0 < b1; t0 += tile)
        for (auto& c : prepared)
          scan(c, t0, std::min(b1, t0 + tile), tops[task].data() + (c.q0 - c0 * per));
    }
  });
  for (size_t q = 0; q < nq; ++q) {
    const size_t g = q / (per * kChunksPerGroup), in = q % (per * kChunksPerGroup);
    TopK best(k);
    for (size_t r = 0; r < ranges; ++r) best.merge(tops[g * ranges + r][in]);
    best.write(scores + q * k, slots + q * k);
  }
}

}  // namespace

size_t set_thread_bytes(size_t bytes) { return thread_bytes.exchange(std::max<size_t>(bytes, 1)); }

size_t FlatStore::queries_per_chunk() const {
  // The kLut tables of a chunk stay within kLutBytes (about L1) at large dimensions (measured at 784 dims,
  // 2 bits: 5 queries of 6 KB beat 8 by ~8% on AVX-512).
  constexpr size_t kLutBytes = size_t(32) << 10;
  return layout_ == Layout::Lut ? std::clamp<size_t>(kLutBytes / (chunks_ * 64), 1, k_->lut_queries) : kQueryChunk;
}

void FlatStore::search(const float* queries, size_t nq, size_t k, const uint64_t* allowed, float* scores,
                       int64_t* slots, int threads, const InterruptCheck& interrupted) const {
  const size_t blocks = blocks_for(n_);
  const bool rows = layout_ == Layout::Rows;
  const size_t tile = rows ? blocks : std::max<size_t>(1, kTileBytes / block_bytes_);
  const size_t cost = rows ? kRowsCost * block_vectors_ * row_bytes_ : block_bytes_;  // per block, as thread_bytes
  blocked_search(
      nq, k, blocks, cost, queries_per_chunk(), tile, scores, slots, threads, interrupted,
      [&](size_t q0, size_t n) { return prepare(queries, q0, n); },
      [&](Chunk& c, size_t b0, size_t b1, TopK* tops) { scan(c, queries, b0, b1, allowed, tops); });
}

void tiered_search(const std::vector<const FlatStore*>& tiers, const std::vector<const float*>& queries, size_t nq,
                   size_t k, const uint64_t* allowed, float* scores, int64_t* slots, int threads,
                   const InterruptCheck& interrupted) {
  TQ_CHECK(!tiers.empty() && queries.size() == tiers.size(), "one query array per tier is needed");
  constexpr size_t kSpan = 32;  // vectors scored together: one kLut block, two of the 16-vector layouts
  const size_t n = tiers[0]->size();
  size_t per = kQueryChunk, span_bytes = 0;
  for (const FlatStore* s : tiers) {
    TQ_CHECK(s->size() == n && s->layout_ != FlatStore::Layout::Rows,
             "tiers must hold the same slots in blocked layouts (1, 2, 4 or 8 bits)");
    per = std::min(per, s->queries_per_chunk());
    span_bytes += s->block_bytes_ * (kSpan / s->block_vectors_);
  }
  const size_t spans = (n + kSpan - 1) / kSpan, tile = std::max<size_t>(1, kTileBytes / span_bytes);
  struct TieredChunk {  // a chunk of queries prepared for every tier
    size_t q0 = 0, nq = 0;
    std::vector<FlatStore::Chunk> tiers;
    std::vector<float> thresholds;  // each query's top-k threshold, refreshed after a span pushed to it
  };
  auto prepare = [&](size_t q0, size_t m) {
    TieredChunk c{q0, m, {}, std::vector<float>(m, -std::numeric_limits<float>::infinity())};
    for (size_t t = 0; t < tiers.size(); ++t) c.tiers.push_back(tiers[t]->prepare(queries[t], q0, m));
    return c;
  };
  auto scan = [&](TieredChunk& c, size_t s0, size_t s1, TopK* tops) {
    // The tiers before the last score all queries at once (tier 0 with its offsets, later ones with none, added in
    // tier order: a * x + 0 is a * x rounded, so the sum rounds as if each offset were the running sum); the last
    // takes each query's running sum as its offsets and tests the query's threshold.
    alignas(64) uint32_t raw[kQueryChunk * 32], lanes[kQueryChunk];
    alignas(64) float sums[kQueryChunk * kSpan], term[kQueryChunk * kSpan];
    float lowest[kQueryChunk];
    uint32_t masks[kQueryChunk];
    float* thresholds = c.thresholds.data();
    std::fill_n(lowest, kQueryChunk, -std::numeric_limits<float>::infinity());
    const size_t last = tiers.size() - 1;
    for (size_t span = s0; span < s1; ++span) {
      const uint64_t bits = allowed_bits(allowed, span * kSpan, kSpan);
      if (!bits) continue;
      const size_t first = span * kSpan, width = std::min(kSpan, n - first);
      uint32_t found[kQueryChunk] = {};
      for (size_t t = 0; t <= last; ++t) {
        const FlatStore& s = *tiers[t];
        const FlatStore::Chunk& ch = c.tiers[t];
        const size_t bv = s.block_vectors_;
        for (size_t lane = 0; lane < width; lane += bv) {
          s.block_raw(ch, (first + lane) / bv, 1, nullptr, raw, lanes);
          const size_t m = std::min(bv, width - lane);
          const float* a = s.a_ptr_ + first + lane;
          const int32_t* r = reinterpret_cast<const int32_t*>(raw);
          if (t < last) {
            s.k_->score_block(r, bv, c.nq, m, ch.shift.data(), ch.step.data(), ch.base.data(), a,
                              t == 0 ? s.b_from(first + lane) : kZeroOffsets, 0, lowest, (t == 0 ? sums : term) + lane,
                              masks);
            continue;
          }
          const bool alone = t == 0;  // one tier: its own offsets; else each query's running sum
          s.k_->score_block(r, bv, c.nq, m, ch.shift.data(), ch.step.data(), ch.base.data(), a,
                            alone ? s.b_from(first + lane) : sums + lane, alone ? 0 : kSpan, thresholds, term + lane,
                            masks);
          for (size_t q = 0; q < c.nq; ++q) found[q] |= masks[q] << lane;
        }
        if (t > 0 && t < last)
          for (size_t q = 0; q < c.nq; ++q)
            for (size_t v = 0; v < width; ++v) sums[q * kSpan + v] += term[q * kSpan + v];
      }
      for (size_t q = 0; q < c.nq; ++q) {
        uint32_t hits = found[q] & uint32_t(bits);
        if (!hits) continue;
        for (; hits; hits &= hits - 1) {
          const int v = __builtin_ctz(hits);
          tops[q].push(term[q * kSpan + v], int64_t(first + size_t(v)));
        }
        thresholds[q] = tops[q].threshold();
      }
    }
  };
  blocked_search(nq, k, spans, span_bytes, per, tile, scores, slots, threads, interrupted, prepare, scan);
}

}  // namespace tq
