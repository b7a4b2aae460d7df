// HNSW graph (Malkov & Yashunin) built and searched on TurboQuant code rows; no float copy is kept.
//
// Nodes live in slots 0..size-1: a packed code row (pack-inl.h), the per-vector score floats (a, b) of
// flat.h (score = a * <q', c> + b), a level, a deleted flag and link lists: layer 0 holds up to 2M links
// in one flat array, higher layers up to M in one shared pool where each node with a level > 0 owns
// level * (M + 1) consecutive words from a per-node offset. Link lists are [count, ids...] of uint32.
// Per-node arrays are sized to a capacity that grows by at most 1.25x (exactly with reserve()); the
// slack is zero-filled, so it is resident, and memory_bytes() counts it.
//
// Scores come from the shared code scorer (scorer.h): exact integer dot products of an int8 query
// against the code's centroid table, the same arithmetic as FlatStore's int8 layouts, so search results
// are reproducible on every kernel set. Distances between stored nodes (neighbour selection) score the
// other node against one of them decoded to an int8 query (CodeScorer::prepare_row). Visit marks come
// from a pool (visited.h), so a search allocates nothing proportional to the graph.
//
// Tiers (an adaptive code, src/tqsearch/tiers.py): the code may be several codes side by side, each with its
// own width, bit width and codebook. A row is the tiers' packed rows one after another, a node holds one a
// per tier and one b, a rotated query is the tiers' rotated slices one after another, and the score is
// tiered_search's (flat.h): tier 0's a * x + b, then each later tier's a * x added in tier order. A uniform
// code is one tier.
//
// Concurrency: add() runs its insertions on several threads with per-node locks; callers must not run
// add/remove concurrently with search (the Python wrapper serialises them).
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "parallel.h"
#include "scorer.h"
#include "simd/kernels.h"
#include "visited.h"

namespace tq {

// One tier of a graph's code: its width (dims), bit width and sorted codebook (2^bits values).
struct CodeTier {
  size_t dim;
  int bits;
  std::vector<float> centroids;
};

class HnswGraph {
 public:
  // decode_div (> 0): a / decode_div is the factor f with x' ~= f * centroids[code] (2 for l2 scores, else 1).
  HnswGraph(const std::vector<CodeTier>& tiers, size_t M, size_t ef_construction, uint64_t seed, float decode_div,
            const Kernels* kernels);

  size_t size() const { return n_; }
  // Floats per rotated query (the tiers' widths summed).
  size_t dim() const { return dim_; }
  size_t tiers() const { return scorers_.size(); }
  float a_at(size_t slot, size_t tier) const { return a_[slot * tiers() + tier]; }
  // Bytes per packed row (the tiers' rows side by side).
  size_t row_bytes() const { return row_bytes_; }
  size_t max_links0() const { return 2 * M_; }
  int64_t entry() const { return max_level_ >= 0 ? int64_t(entry_) : -1; }
  int max_level() const { return max_level_; }
  // Bytes held: every array at capacity, the upper-layer pool, the lock table and the pooled visit lists.
  size_t memory_bytes() const;
  // Makes room for n nodes in total (no-op when there is), so adding up to n allocates no slack (the
  // upper-layer pool, about 1/M of layer 0, still grows by 1.25x).
  void reserve(size_t n) { grow(n, true); }

  // Inserts n rows: rotated float vectors (used to find neighbours), packed codes, a (tiers() per row) and b.
  // slots[i] is a deleted slot to reuse (keeps its level) or size() + (number of new slots before it).
  void add(const float* rotated, const uint8_t* packed, const float* a, const float* b, const int64_t* slots,
           size_t n, int threads, const InterruptCheck& interrupted);
  // Marks a slot deleted (still traversed, never returned) and re-links its neighbours around it.
  void remove(size_t slot);
  bool deleted(size_t slot) const { return deleted_[slot] != 0; }  // slot < size()

  // Best k allowed, live slots per query (rotated queries), beam width ef >= k; -inf / -1 padded.
  // allowed: optional bitset over slots; candidates: the number of live slots it allows (all live slots
  // without it). Every query gets min(k, candidates) results: a selective filter, a beam near the
  // candidate count, or a walk that comes back short are answered by a flat scan of the same codes.
  void search(const float* queries, size_t nq, size_t k, size_t ef, const uint64_t* allowed, size_t candidates,
              float* scores, int64_t* slots, int threads, const InterruptCheck& interrupted) const;

  // Persistence: the arrays below describe the whole graph (a: tiers() per node; upper: each node's layers
  // 1..level, in slot order, M + 1 words per layer). restore() copies them in after checking their shapes and contents.
  std::vector<uint8_t> codes() const { return {codes_.begin(), codes_.begin() + n_ * row_bytes_}; }
  std::vector<float> a() const { return {a_.begin(), a_.begin() + n_ * tiers()}; }
  std::vector<float> b() const { return {b_.begin(), b_.begin() + n_}; }
  std::vector<uint8_t> levels() const { return {levels_.begin(), levels_.begin() + n_}; }
  std::vector<uint8_t> deleted_flags() const { return {deleted_.begin(), deleted_.begin() + n_}; }
  std::vector<uint32_t> level0() const { return {level0_.begin(), level0_.begin() + n_ * (2 * M_ + 1)}; }
  std::vector<uint32_t> upper() const;
  void restore(const uint8_t* codes, const float* a, const float* b, const uint8_t* levels, const uint8_t* deleted,
               const uint32_t* level0, const uint32_t* upper, size_t upper_size, size_t n, int64_t entry,
               int max_level);
  // Writes the packed rows of the given slots.
  void packed_rows(const int64_t* slots, size_t count, uint8_t* out) const;

 private:
  using Scored = std::pair<float, uint32_t>;
  using Query = std::vector<QueryI8>;  // one prepared query per tier
  struct Scratch;
  size_t max_links(int level) const { return level == 0 ? 2 * M_ : M_; }
  uint32_t* links(size_t slot, int level);
  const uint32_t* links(size_t slot, int level) const;
  const uint8_t* row(size_t slot) const { return codes_.data() + slot * row_bytes_; }
  void prepare(const float* rotated, Query& q) const;
  void prepare_node(size_t slot, Query& q, Scratch& s) const;
  float score(const Query& q, size_t slot, Scratch& s) const;
  void prefetch_row(size_t slot) const {
    for (size_t i = 0; i < row_bytes_; i += 64) __builtin_prefetch(row(slot) + i);
  }
  template <bool Locked>
  uint32_t greedy(const Query& q, uint32_t cur, int level, Scratch& s) const;
  template <bool Locked>
  std::vector<Scored> search_layer(const Query& q, uint32_t entry, size_t ef, int level, const uint64_t* allowed,
                                   int64_t self, Scratch& s) const;
  std::vector<uint32_t> select(const std::vector<Scored>& cands, size_t m, uint32_t base, Scratch& s) const;
  void insert(uint32_t slot, const float* rotated, Scratch& s);
  void connect(uint32_t u, uint32_t v, int level, Scratch& s);
  void relink(uint32_t u, int level, std::vector<uint32_t> cands, Scratch& s);
  std::vector<Scored> flat(const Query& q, size_t k, const uint64_t* allowed, Scratch& s) const;
  std::mutex& lock(size_t slot) const { return locks_[slot % locks_.size()]; }
  void grow(size_t n, bool exact);  // capacity for n nodes: exactly, or growing by at most 1.25x
  uint32_t place_upper(size_t words);  // words zeroed words from the upper pool; returns their offset

  std::vector<CodeScorer> scorers_;
  std::vector<size_t> query_at_, row_at_;  // per tier: where its slice of a query and of a row starts
  size_t dim_ = 0, row_bytes_ = 0, M_, ef_construction_, n_ = 0, cap_ = 0;
  float decode_div_;
  uint64_t seed_;
  // Codes and layer-0 links, which a walk reads at random: on huge pages when large (common.h), fewer TLB misses.
  AlignedVector<uint8_t> codes_;
  AlignedVector<uint32_t> level0_;
  std::vector<uint8_t> levels_, deleted_;
  std::vector<float> a_, b_;
  std::vector<uint32_t> upper_at_;  // per node: offset of its upper-layer lists in upper_
  std::vector<uint32_t> upper_;     // pool of upper-layer lists; words [0, upper_used_) are in use
  size_t upper_used_ = 0;
  uint32_t entry_ = 0;
  int max_level_ = -1;
  std::mutex global_;
  mutable std::vector<std::mutex> locks_;
  mutable VisitedPool visited_;
};

}  // namespace tq
