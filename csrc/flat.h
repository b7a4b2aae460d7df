// Storage and exhaustive search for FlatIndex: codes in a scan-friendly blocked layout, O(1) moves.
//
// Layout kI8Dot (4-bit codes): blocks of 16 vectors; dims in groups of 4, padded to an even number of
// groups G2. Group g of a block is 32 bytes; byte k holds, in its low nibble, the code of vector k/4 at
// dim 4g + k%4 and, in its high nibble, that of vector 8 + k/4. A 64-byte load thus yields two groups
// whose decoded bytes feed one int8 dot-product instruction per group for all 16 vectors.
// Layout kLut (1- and 2-bit codes, FastScan-style): blocks of 32 vectors; the codes of 4/bits consecutive
// dims form one 4-bit sub-quantizer index ("nibble"). Chunk c of a block is 64 bytes covering sub-quantizers
// 4c..4c+3, in the byte order the kernel set reads (Kernels::lut_layout): in lut layout 1, byte 16L + i holds the
// nibble of sub-quantizer 4c + L for vector i (low) and vector 16 + i (high), one 128-bit lane per sub-quantizer
// (AVX2 and scalar); in layout 2, byte 4i + L holds it, so a vector's four nibbles share one 32-bit lane
// (AVX-512). Per query, each sub-quantizer gets a 16-entry table of bytes <= 127 (its partial inner products, rounded
// with one scale and a per-table offset), so one byte shuffle or permute scores 64 (vector, sub-quantizer) pairs.
// Layout kI8Dot8 (8-bit codes): blocks of 16 vectors, groups of 4 dims, 64 bytes per group: byte 4v + t is
// the code of vector v at dim 4g + t; scanned like kI8Dot through 256-entry decode tables (two value planes).
// Layout kRows (3, 5, 6, 7 bits): the packed rows of pack-inl.h, scanned by decode + float dot.
//
// Score of slot i for a rotated query q': a_i * <q', c_i> + b_i, where c_i are the centroids of its
// code and (a_i, b_i) are per-vector floats chosen by the caller (e.g. ||x|| s and 0 for inner product);
// while every b_i is +0.0 none is stored. Storage grows by at most 1.25x (or exactly, via reserve).
// In kI8Dot(8) the inner product is computed exactly in integers from q' rounded to int8 (per query) and
// the centroids rounded to 8 bits (4-bit codes) or about 13 (8-bit codes), so every kernel set returns identical
// scores; the rounding, the
// tables and the filter test come from the shared code scorer (scorer.h), the blocked layouts are this
// store's own.
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

#include "common.h"
#include "parallel.h"
#include "scorer.h"
#include "simd/kernels.h"
#include "topk.h"

namespace tq {

class FlatStore {
 public:
  // centroids: 2^bits sorted values (the codec's codebook).
  FlatStore(size_t dim, int bits, const std::vector<float>& centroids, const Kernels* kernels);

  size_t size() const { return n_; }
  float a_at(size_t slot) const { return a_ptr_[slot]; }
  size_t dim() const { return dim_; }
  size_t row_bytes() const { return row_bytes_; }
  int lut_layout() const { return k_->lut_layout; }  // the byte order of kLut blocks (1 or 2, see above)
  bool lut_codes() const { return layout_ == Layout::Lut; }  // whether the codes are kLut blocks (1 and 2 bits)
  size_t code_size() const { return code_bytes(n_); }
  // Bytes of owned storage held, growth slack included (attached views count 0: they are the caller's).
  size_t memory_bytes() const { return codes_.capacity() + sizeof(float) * (a_.capacity() + b_.capacity()); }
  // Makes room for n vectors in total (no-op when there is), so appending up to n allocates no slack.
  void reserve(size_t n);

  // Appends n rows of packed codes (pack-inl.h layout, row_bytes() each) with their per-vector a, b.
  void append(const uint8_t* packed_rows, const float* a, const float* b, size_t n);
  // Copies slot `from` over slot `to` (for swap-remove); then shrink with truncate(n - 1).
  void move(size_t from, size_t to);
  void truncate(size_t n);
  // Writes the packed rows of the given slots (inverse of append); every slot is checked first.
  void packed_rows(const int64_t* slots, size_t count, uint8_t* out) const;

  // Best k slots per query (scores best first; -inf / -1 where fewer exist). queries: nq x dim rotated.
  // allowed: optional bitset over slots (bit i of word i/64), blocks without an allowed slot are skipped.
  void search(const float* queries, size_t nq, size_t k, const uint64_t* allowed, float* scores, int64_t* slots,
              int threads, const InterruptCheck& interrupted) const;

  // Raw buffers for persistence (copies): blocks (or rows), a, b.
  std::vector<uint8_t> codes() const { return {codes_ptr_, codes_ptr_ + code_bytes(n_)}; }
  std::vector<float> a() const { return {a_ptr_, a_ptr_ + n_}; }
  std::vector<float> b() const { return b_ptr_ ? std::vector<float>(b_ptr_, b_ptr_ + n_) : std::vector<float>(n_, 0.0f); }
  // Reads n vectors from buffers laid out as codes()/a()/b() return them, without copying: the caller
  // keeps them alive and unchanged (e.g. a read-only memory map). The first mutation copies them.
  void attach(const uint8_t* codes, size_t code_size, const float* a, const float* b, size_t n);
  bool attached() const { return attached_; }
  struct Chunk;  // a chunk of queries prepared for the layout (flat.cpp)

 private:
  friend void tiered_search(const std::vector<const FlatStore*>&, const std::vector<const float*>&, size_t, size_t,
                            const uint64_t*, float*, int64_t*, int, const InterruptCheck&);
  enum class Layout { I8Dot, Rows, Lut, I8Dot8 };
  size_t code_bytes(size_t n) const { return layout_ == Layout::Rows ? n * row_bytes_ : blocks_for(n) * block_bytes_; }
  void own();      // copy attached buffers into owned storage before a mutation
  void own_into(size_t cap);  // ... of cap vectors (block-rounded, >= n_): ensure's copy of attached views
  void refresh();  // point the read pointers at owned storage
  // Owned capacity for n vectors: exactly, or growing by at most 1.25x (attached views are copied into it).
  void ensure(size_t n, bool exact);
  const float* b_from(size_t first) const;  // the offsets of slots first.. (zeros when none are stored)
  size_t unit_dims() const;
  void set_code(size_t slot, const uint8_t* idx);
  void get_code(size_t slot, uint8_t* idx) const;
  Chunk prepare(const float* queries, size_t q0, size_t nq) const;
  // The least raw sum with which a slot can still score >= threshold for a chunk query's (shift, step, base),
  // from bounds_ with a margin for the score's float rounding; INT32_MIN where there is no such bound.
  int32_t raw_floor(float threshold, int32_t shift, float step, float base) const;
  void prepare_lut(const float* rotated, uint8_t* out, float* step, float* base) const;  // kLut tables
  // Queries per chunk: as many as the kernels take, fewer when kLut tables would outgrow L1.
  size_t queries_per_chunk() const;
  // The kernel's raw sums of blocks blk.. blk + count - 1 for a chunk's queries (blocked layouts): block b's query
  // t's at raw + (b * nq + t) * width; lanes[b * nq + t]: its lanes with a sum >= floors[t] (simd/kernels.h; floors
  // null: every lane).
  void block_raw(const Chunk& c, size_t blk, size_t count, const int32_t* floors, uint32_t* raw,
                 uint32_t* lanes) const;
  // Offers blocks [b0, b1) to the chunk's top-k (tops[t] for query q0 + t), keeping its thresholds and floors current.
  void scan(Chunk& c, const float* queries, size_t b0, size_t b1, const uint64_t* allowed, TopK* tops) const;
  // scan for one query and no filter: runs of blocks' raw sums, then only the blocks that reach the threshold.
  void scan_one(Chunk& c, size_t b0, size_t b1, TopK& top) const;
  // Scores the lanes of the block at slot `first` that hits (the kernel's lanes per query) and allowed let by, pushes
  // those that reach each query's threshold and refreshes its threshold and floor. sums: the block's raw sums.
  void offer(Chunk& c, size_t first, const int32_t* sums, uint32_t* hits, uint32_t allowed, TopK* tops) const;
  size_t blocks_for(size_t n) const { return (n + block_vectors_ - 1) / block_vectors_; }
  void index_dims();  // blocked layouts: where each dim's code sits in a block (dim_byte_, dim_shift_)
  size_t slot_byte(size_t v) const;  // ... and where the v-th vector of a block does
  int slot_shift(size_t v) const;
  void scan_rows(const float* queries, size_t q0, size_t nq, size_t r0, size_t r1, const uint64_t* allowed,
                 TopK* tops) const;

  size_t dim_, groups2_ = 0, row_bytes_, block_bytes_ = 0, block_vectors_ = 16, n_ = 0;
  size_t sub_dims_ = 0, chunks_ = 0;  // kLut: dims per nibble, 64-byte chunks per block
  int bits_;
  Layout layout_;
  CodeScorer scorer_;           // tables, query rounding and the padded centroids
  std::vector<uint32_t> dim_byte_;  // blocked layouts, per dim: byte offset in a block (for its first vector)
  std::vector<uint8_t> dim_shift_;  // ... and bit offset
  // Owned storage, sized to the capacity cap_ (in vectors; slack zero-filled, so it is resident and counted)
  // while n_ vectors are in use. b_ stays empty while every offset is +0.0 (the ip and cosine metrics).
  AlignedVector<uint8_t> codes_;
  std::vector<float> a_, b_;
  size_t cap_ = 0;
  // Bounds over every a and b stored so far (kept through removals, where they still hold), for raw_floor.
  struct Bounds {
    float a_lo = std::numeric_limits<float>::infinity(), a_hi = -std::numeric_limits<float>::infinity();
    float b_hi = -std::numeric_limits<float>::infinity();
    float per_a_hi = 0;  // 1 / a_hi while 0 <= a <= a_hi bounds every a with a_hi > 0, else 0 (no floor)
    void add(const float* a, const float* b, size_t n);  // b null: offsets of zero
  } bounds_;
  const uint8_t* codes_ptr_ = nullptr;  // owned storage or an attached view: scans read through these
  const float *a_ptr_ = nullptr, *b_ptr_ = nullptr;  // b_ptr_ null: every offset is 0
  bool attached_ = false;
  const Kernels* k_;
};

// Sets the work (code bytes per query chunk, see blocked_search in flat.cpp) for which a scan starts one more thread,
// for every later search; returns the previous value. Tests lower it to run the multi-range merge on small indexes.
size_t set_thread_bytes(size_t bytes);

// Exhaustive search over the sum of several stores' scores (the tiers of an adaptive FlatIndex): the score of
// slot i is the sum over tiers t of a_t[i] * <q_t, c_t,i> plus tier 0's b[i] (the other tiers' offsets are not
// read), each tier's term rounded as its own scan's (score-inl.h) and added in tier order, so every kernel set
// returns identical scores. Every tier holds the same slots in a blocked layout (1, 2, 4 or 8 bits); queries[t]:
// nq x dim rows of tier t's rotated queries. Results as FlatStore::search.
void tiered_search(const std::vector<const FlatStore*>& tiers, const std::vector<const float*>& queries, size_t nq,
                   size_t k, const uint64_t* allowed, float* scores, int64_t* slots, int threads,
                   const InterruptCheck& interrupted);

}  // namespace tq
