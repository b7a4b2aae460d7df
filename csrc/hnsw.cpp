#include "hnsw.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>

#include "common.h"
#include "query-inl.h"
#include "random.h"
#include "simd/score-inl.h"
#include "topk.h"

namespace tq {
namespace {

constexpr int kMaxLevel = 15;
constexpr uint64_t kLevelStream = 0x484e5357;  // "HNSW": the level draws' random stream

// Items per parallel_for chunk: each chunk allocates a Scratch (visit marks over all nodes), so chunks
// are large, yet small enough to balance threads and to poll Ctrl-C often.
size_t chunk_for(size_t n, int threads) {
  return std::clamp<size_t>(n / (4 * size_t(resolve_threads(threads, n, 1))), 8, 512);
}

}  // namespace

// Per-thread working memory: visit marks (epoch-tagged, so clearing is O(1)), an index row, two queries.
struct HnswGraph::Scratch {
  explicit Scratch(const HnswGraph& g) : mark(g.size(), 0), idx(g.dim()) {}
  void next_visit() {
    if (++epoch == 0) {
      std::fill(mark.begin(), mark.end(), 0);
      epoch = 1;
    }
  }
  bool visit(uint32_t slot) {
    if (mark[slot] == epoch) return false;
    mark[slot] = epoch;
    return true;
  }
  std::vector<uint32_t> mark;
  uint32_t epoch = 0;
  std::vector<uint8_t> idx;
  std::vector<uint32_t> nbrs;
  QueryI8 query, base;
  std::vector<QueryI8> kept;  // select(): the kept candidates as queries
};

HnswGraph::HnswGraph(size_t dim, int bits, const std::vector<float>& centroids, size_t M, size_t ef_construction,
                     uint64_t seed, float decode_div, const Kernels* kernels)
    : dim_(dim), row_bytes_(packed_row_bytes(dim, bits)), M_(M), ef_construction_(ef_construction), bits_(bits),
      decode_div_(decode_div), seed_(seed), locks_(1 << 12), k_(kernels) {
  TQ_CHECK(dim >= 1, "dim must be >= 1");
  TQ_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8");
  TQ_CHECK(centroids.size() == (size_t(1) << bits), "need 2^bits centroids");
  TQ_CHECK(M >= 2 && M <= 256, "M must be in 2..256");
  TQ_CHECK(ef_construction >= 1, "ef_construction must be >= 1");
  float cmax = 0;
  for (float c : centroids) cmax = std::max(cmax, std::fabs(c));
  TQ_CHECK(cmax > 0, "centroids must not all be zero");
  centroid_unit_ = cmax / 127.0f;
  query_unit_ = cmax / 63.0f;
  for (size_t i = 0; i < centroids.size(); ++i) {
    table_[i] = uint8_t(128 + std::lrint(127.0 * centroids[i] / cmax));
    node_table_[i] = int8_t(std::lrint(63.0 * centroids[i] / cmax));
  }
}

uint32_t* HnswGraph::links(size_t slot, int level) {
  return level == 0 ? level0_.data() + slot * (2 * M_ + 1) : upper_[slot].data() + size_t(level - 1) * (M_ + 1);
}

const uint32_t* HnswGraph::links(size_t slot, int level) const {
  return const_cast<HnswGraph*>(this)->links(slot, level);
}

size_t HnswGraph::memory_bytes() const {
  size_t upper_words = 0;
  for (size_t i = 0; i < n_; ++i) upper_words += upper_[i].size();
  return n_ * (row_bytes_ + 2 * sizeof(float) + 2 + (2 * M_ + 1) * 4) + upper_words * 4;
}

// ------------------------------------------------------------------ scoring

// Where dim j of an int8 query goes in the kernel layout: plain, or for 4-bit codes split per 64-byte
// chunk of the row into its even then odd dims (Kernels::dot_row4).
static size_t layout_pos(size_t j, int bits) { return bits == 4 ? (j / 128) * 128 + (j % 2) * 64 + (j % 128) / 2 : j; }

static size_t layout_size(size_t dim, int bits, size_t row_bytes) {
  return bits == 4 ? (row_bytes + 63) / 64 * 128 : dim;
}

void HnswGraph::prepare(const float* rotated, QueryI8& q) const {
  q.q.assign(layout_size(dim_, bits_, row_bytes_), 0);
  round_query(rotated, dim_, centroid_unit_, q.q.data(), [this](size_t j) { return layout_pos(j, bits_); }, &q.unit,
              &q.offset);
}

void HnswGraph::prepare_node(size_t slot, QueryI8& q, Scratch& s) const {
  const uint8_t* row = codes_.data() + slot * row_bytes_;
  q.q.assign(layout_size(dim_, bits_, row_bytes_), 0);
  int32_t sum = 0;
  if (bits_ == 4) {  // byte i holds dims 2i, 2i + 1: they land at 128c + r and 128c + 64 + r
    for (size_t i = 0; i < row_bytes_; ++i) {
      int8_t* out = q.q.data() + (i / 64) * 128 + i % 64;
      out[0] = node_table_[row[i] & 15];
      out[64] = (2 * i + 1 < dim_) ? node_table_[row[i] >> 4] : 0;
      sum += out[0] + out[64];
    }
  } else {
    k_->unpack(row, dim_, bits_, s.idx.data());
    for (size_t j = 0; j < dim_; ++j) sum += q.q[j] = node_table_[s.idx[j]];
  }
  q.unit = centroid_unit_ * query_unit_ * (a_[slot] / decode_div_);
  q.offset = 128 * sum;
}

float HnswGraph::score(const QueryI8& q, size_t slot, Scratch& s) const {
  const uint8_t* row = codes_.data() + slot * row_bytes_;
  int32_t raw = 0;
  if (bits_ == 4) {
    raw = k_->dot_row4(row, row_bytes_, q.q.data(), table_);
  } else {
    k_->unpack(row, dim_, bits_, s.idx.data());
    for (size_t j = 0; j < dim_; ++j) raw += int32_t(q.q[j]) * table_[s.idx[j]];
  }
  float out;
  score_lanes(&raw, 1, float(q.offset), q.unit, 0.0f, &a_[slot], &b_[slot],
              -std::numeric_limits<float>::infinity(), &out);
  return out;
}

// ------------------------------------------------------------------ traversal

template <bool Locked>
uint32_t HnswGraph::greedy(const QueryI8& q, uint32_t cur, int level, Scratch& s) const {
  float best = score(q, cur, s);
  for (bool moved = true; moved;) {
    moved = false;
    {
      std::unique_lock<std::mutex> guard;
      if (Locked) guard = std::unique_lock<std::mutex>(lock(cur));
      const uint32_t* l = links(cur, level);
      s.nbrs.assign(l + 1, l + 1 + l[0]);
    }
    for (uint32_t w : s.nbrs) {
      const float sw = score(q, w, s);
      if (sw > best) {
        best = sw;
        cur = w;
        moved = true;
      }
    }
  }
  return cur;
}

template <bool Locked>
std::vector<HnswGraph::Scored> HnswGraph::search_layer(const QueryI8& q, uint32_t entry, size_t ef, int level,
                                                       const uint64_t* allowed, int64_t self, Scratch& s) const {
  auto eligible = [&](uint32_t w) {
    return int64_t(w) != self && !deleted_[w] && (!allowed || ((allowed[w / 64] >> (w % 64)) & 1));
  };
  std::priority_queue<Scored> cands;                                      // best first
  std::priority_queue<Scored, std::vector<Scored>, std::greater<>> top;  // worst first, <= ef eligible
  s.next_visit();
  s.visit(entry);
  const float se = score(q, entry, s);
  cands.push({se, entry});
  if (eligible(entry)) top.push({se, entry});
  while (!cands.empty()) {
    const auto [sc, c] = cands.top();
    if (top.size() >= ef && sc < top.top().first) break;
    cands.pop();
    {
      std::unique_lock<std::mutex> guard;
      if (Locked) guard = std::unique_lock<std::mutex>(lock(c));
      const uint32_t* l = links(c, level);
      s.nbrs.assign(l + 1, l + 1 + l[0]);
    }
    for (uint32_t w : s.nbrs) __builtin_prefetch(&s.mark[w]);
    for (size_t i = 0; i < s.nbrs.size(); ++i) {
      const uint32_t w = s.nbrs[i];
      if (i + 1 < s.nbrs.size()) prefetch_row(s.nbrs[i + 1]);
      if (!s.visit(w)) continue;
      const float sw = score(q, w, s);
      if (top.size() < ef || sw > top.top().first) {
        __builtin_prefetch(links(w, level));  // likely expanded soon: its list is the walk's next miss
        cands.push({sw, w});
        if (eligible(w)) {
          top.push({sw, w});
          if (top.size() > ef) top.pop();
        }
      }
    }
  }
  std::vector<Scored> out(top.size());
  for (size_t i = out.size(); i-- > 0; top.pop()) out[i] = top.top();
  return out;  // best first
}

// Paper Algorithm 4 (the neighbour-selection heuristic): in order of closeness to the base node, keep a
// candidate only if it is closer to the base than to every one already kept, so links spread in diverse
// directions. cands hold score(base -> e) best first; adding the query side's b (-||q||^2 for l2, else 0)
// makes scores from different query nodes comparable, so only the kept nodes are decoded as queries.
std::vector<uint32_t> HnswGraph::select(const std::vector<Scored>& cands, size_t m, uint32_t base,
                                        Scratch& s) const {
  std::vector<uint32_t> kept;
  s.kept.resize(std::max(s.kept.size(), m));
  for (const auto& [to_base, e] : cands) {
    if (kept.size() >= m) break;
    bool good = true;
    for (size_t i = 0; i < kept.size() && good; ++i)
      good = score(s.kept[i], e, s) + b_[kept[i]] <= to_base + b_[base];
    if (!good) continue;
    prepare_node(e, s.kept[kept.size()], s);
    kept.push_back(e);
  }
  return kept;
}

// ------------------------------------------------------------------ mutation

void HnswGraph::grow(size_t n) {
  codes_.resize(n * row_bytes_, 0);
  a_.resize(n, 0.0f);
  b_.resize(n, 0.0f);
  levels_.resize(n, 0);
  deleted_.resize(n, 0);
  level0_.resize(n * (2 * M_ + 1), 0);
  upper_.resize(n);
}

void HnswGraph::add(const float* rotated, const uint8_t* packed, const float* a, const float* b,
                    const int64_t* slots, size_t n, int threads, const InterruptCheck& interrupted) {
  size_t fresh = 0;
  std::vector<int64_t> reused;
  for (size_t i = 0; i < n; ++i) {
    const int64_t slot = slots[i];
    if (slot >= 0 && size_t(slot) < n_) {
      TQ_CHECK(deleted_[slot], "a reused slot must be deleted");
      TQ_CHECK(max_level_ < 0 || uint32_t(slot) != entry_, "the entry point's slot cannot be reused");
      reused.push_back(slot);
    } else {
      TQ_CHECK(slot >= 0 && size_t(slot) == n_ + fresh, "new slots must follow the last one in order");
      ++fresh;
    }
  }
  std::sort(reused.begin(), reused.end());
  TQ_CHECK(std::adjacent_find(reused.begin(), reused.end()) == reused.end(), "a slot is reused twice");
  const double level_mult = 1.0 / std::log(double(M_));
  grow(n_ + fresh);
  for (size_t i = 0; i < n; ++i) {
    const size_t slot = size_t(slots[i]);
    std::copy(packed + i * row_bytes_, packed + (i + 1) * row_bytes_, codes_.begin() + slot * row_bytes_);
    a_[slot] = a[i];
    b_[slot] = b[i];
    deleted_[slot] = 0;
    if (slot >= n_) {  // a new slot draws its level; a reused one keeps its own (as hnswlib does)
      SplitMix64 rng(derive_seed(seed_, kLevelStream ^ (uint64_t(slot) << 8)));
      levels_[slot] = uint8_t(std::min<double>(kMaxLevel, std::floor(-std::log(rng.uniform()) * level_mult)));
      upper_[slot].assign(levels_[slot] * (M_ + 1), 0);
    }
    for (int level = 0; level <= levels_[slot]; ++level) links(slot, level)[0] = 0;
  }
  n_ += fresh;
  size_t start = 0;
  if (max_level_ < 0 && n > 0) {  // an empty graph: the first row becomes the entry point
    entry_ = uint32_t(slots[0]);
    max_level_ = levels_[entry_];
    start = 1;
  }
  try {
    parallel_for(n - start, chunk_for(n - start, threads), threads, interrupted, [&](size_t b0, size_t b1) {
      Scratch s(*this);
      for (size_t i = start + b0; i < start + b1; ++i) insert(uint32_t(slots[i]), rotated + i * dim_, s);
    });
  } catch (...) {  // an interrupted batch is dropped whole: its rows stay as deleted nodes
    for (size_t i = 0; i < n; ++i) deleted_[size_t(slots[i])] = 1;
    throw;
  }
}

void HnswGraph::insert(uint32_t v, const float* rotated, Scratch& s) {
  prepare(rotated, s.query);
  const int level = levels_[v];
  uint32_t cur;
  int top;
  {
    std::lock_guard<std::mutex> g(global_);
    cur = entry_;
    top = max_level_;
  }
  for (int lev = top; lev > level; --lev) cur = greedy<true>(s.query, cur, lev, s);
  for (int lev = std::min(level, top); lev >= 0; --lev) {
    const auto found = search_layer<true>(s.query, cur, ef_construction_, lev, nullptr, v, s);
    if (found.empty()) continue;
    cur = found.front().second;
    const auto chosen = select(found, M_, v, s);
    {
      std::lock_guard<std::mutex> g(lock(v));
      uint32_t* l = links(v, lev);
      l[0] = uint32_t(chosen.size());
      std::copy(chosen.begin(), chosen.end(), l + 1);
    }
    for (uint32_t u : chosen) connect(u, v, lev, s);
  }
  if (level > top) {
    std::lock_guard<std::mutex> g(global_);
    if (level > max_level_) {
      max_level_ = level;
      entry_ = v;
    }
  }
}

// Adds the link u -> v; a full list is re-selected by the heuristic from its links plus v.
void HnswGraph::connect(uint32_t u, uint32_t v, int level, Scratch& s) {
  std::lock_guard<std::mutex> g(lock(u));
  uint32_t* l = links(u, level);
  if (std::find(l + 1, l + 1 + l[0], v) != l + 1 + l[0]) return;
  if (l[0] < max_links(level)) {
    l[1 + l[0]++] = v;
    return;
  }
  std::vector<uint32_t> cands(l + 1, l + 1 + l[0]);
  cands.push_back(v);
  relink(u, level, std::move(cands), s);
}

// Replaces u's links at `level` by the heuristic's choice among `cands` (caller holds u's lock if needed).
void HnswGraph::relink(uint32_t u, int level, std::vector<uint32_t> cands, Scratch& s) {
  prepare_node(u, s.base, s);
  std::vector<Scored> scored;
  for (uint32_t w : cands) scored.push_back({score(s.base, w, s), w});
  std::sort(scored.begin(), scored.end(), std::greater<>());
  const auto chosen = select(scored, max_links(level), u, s);
  uint32_t* l = links(u, level);
  l[0] = uint32_t(chosen.size());
  std::copy(chosen.begin(), chosen.end(), l + 1);
}

void HnswGraph::remove(size_t slot) {
  TQ_CHECK(slot < n_, "slot out of range");
  TQ_CHECK(!deleted_[slot], "slot is already deleted");
  deleted_[slot] = 1;
  Scratch s(*this);
  for (int level = 0; level <= levels_[slot]; ++level) {
    const uint32_t* gone = links(slot, level);
    const std::vector<uint32_t> around(gone + 1, gone + 1 + gone[0]);
    for (uint32_t u : around) {
      if (deleted_[u]) continue;
      const uint32_t* l = links(u, level);
      if (std::find(l + 1, l + 1 + l[0], uint32_t(slot)) == l + 1 + l[0]) continue;
      std::vector<uint32_t> cands;
      for (uint32_t w : std::vector<uint32_t>(l + 1, l + 1 + l[0]))
        if (w != slot) cands.push_back(w);
      for (uint32_t w : around)
        if (w != u && !deleted_[w] && std::find(cands.begin(), cands.end(), w) == cands.end()) cands.push_back(w);
      relink(u, level, std::move(cands), s);
    }
  }
}

// ------------------------------------------------------------------ search

std::vector<HnswGraph::Scored> HnswGraph::flat(const QueryI8& q, size_t k, const uint64_t* allowed,
                                               Scratch& s) const {
  TopK top(k);
  const auto consider = [&](size_t slot) {
    if (deleted_[slot]) return;
    const float sc = score(q, slot, s);
    if (sc >= top.threshold()) top.push(sc, int64_t(slot));
  };
  if (allowed) {
    for (size_t w = 0; w < (n_ + 63) / 64; ++w)
      for (uint64_t bits = allowed[w]; bits; bits &= bits - 1) {
        const size_t slot = w * 64 + size_t(__builtin_ctzll(bits));
        if (slot < n_) consider(slot);
      }
  } else {
    for (size_t slot = 0; slot < n_; ++slot) consider(slot);
  }
  std::vector<float> scores(k);
  std::vector<int64_t> slots(k);
  top.write(scores.data(), slots.data());
  std::vector<Scored> out;
  for (size_t i = 0; i < k && slots[i] >= 0; ++i) out.push_back({scores[i], uint32_t(slots[i])});
  return out;
}

void HnswGraph::search(const float* queries, size_t nq, size_t k, size_t ef, const uint64_t* allowed,
                       size_t candidates, float* scores, int64_t* slots, int threads,
                       const InterruptCheck& interrupted) const {
  ef = std::max(ef, k);
  const size_t want = std::min(k, candidates);
  // Scan flat when it is cheaper than the walk: a selective filter (the walk visits about 2M * ef /
  // selectivity nodes, the scan `candidates`), or a beam covering a large share of the candidates.
  const bool scan = (allowed && double(candidates) * double(candidates) <= double(2 * M_ * ef) * double(n_)) ||
                    2 * ef >= candidates;
  parallel_for(nq, chunk_for(nq, threads), threads, interrupted, [&](size_t b0, size_t b1) {
    Scratch s(*this);
    for (size_t i = b0; i < b1; ++i) {
      std::vector<Scored> found;
      if (max_level_ >= 0) {
        prepare(queries + i * dim_, s.query);
        if (!scan) {
          uint32_t cur = entry_;
          for (int lev = max_level_; lev > 0; --lev) cur = greedy<false>(s.query, cur, lev, s);
          found = search_layer<false>(s.query, cur, ef, 0, allowed, -1, s);
        }
        if (found.size() < want) found = flat(s.query, k, allowed, s);  // the walk came back short
      }
      for (size_t j = 0; j < k; ++j) {
        scores[i * k + j] = j < found.size() ? found[j].first : -std::numeric_limits<float>::infinity();
        slots[i * k + j] = j < found.size() ? int64_t(found[j].second) : -1;
      }
    }
  });
}

// ------------------------------------------------------------------ persistence

std::vector<uint32_t> HnswGraph::upper() const {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < n_; ++i) out.insert(out.end(), upper_[i].begin(), upper_[i].end());
  return out;
}

void HnswGraph::packed_rows(const int64_t* slots, size_t count, uint8_t* out) const {
  for (size_t i = 0; i < count; ++i) {
    TQ_CHECK(slots[i] >= 0 && size_t(slots[i]) < n_, "slot out of range");
    std::copy_n(codes_.data() + size_t(slots[i]) * row_bytes_, row_bytes_, out + i * row_bytes_);
  }
}

void HnswGraph::restore(const uint8_t* codes, const float* a, const float* b, const uint8_t* levels,
                        const uint8_t* deleted, const uint32_t* level0, const uint32_t* upper, size_t upper_size,
                        size_t n, int64_t entry, int max_level) {
  size_t words = 0;
  for (size_t i = 0; i < n; ++i) {
    TQ_CHECK(levels[i] <= kMaxLevel && deleted[i] <= 1, "corrupt node table");
    words += size_t(levels[i]) * (M_ + 1);
  }
  TQ_CHECK(words == upper_size, "upper layer links do not match the node levels");
  TQ_CHECK(n == 0 ? entry == -1 && max_level == -1
                  : entry >= 0 && size_t(entry) < n && max_level == levels[entry],
           "corrupt entry point");
  // Every link names an existing node that reaches the link's layer (so traversal never leaves the arrays).
  auto valid = [&](const uint32_t* l, size_t cap, int level) {
    if (l[0] > cap) return false;
    for (size_t j = 1; j <= l[0]; ++j)
      if (l[j] >= n || levels[l[j]] < level) return false;
    return true;
  };
  for (size_t i = 0, off = 0; i < n; ++i) {
    TQ_CHECK(valid(level0 + i * (2 * M_ + 1), 2 * M_, 0), "corrupt layer-0 links");
    for (int level = 1; level <= levels[i]; ++level, off += M_ + 1)
      TQ_CHECK(valid(upper + off, M_, level), "corrupt upper-layer links");
  }
  n_ = 0;
  grow(n);
  n_ = n;
  std::copy_n(codes, n * row_bytes_, codes_.begin());
  std::copy_n(a, n, a_.begin());
  std::copy_n(b, n, b_.begin());
  std::copy_n(levels, n, levels_.begin());
  std::copy_n(deleted, n, deleted_.begin());
  std::copy_n(level0, n * (2 * M_ + 1), level0_.begin());
  for (size_t i = 0, off = 0; i < n; ++i) {
    upper_[i].assign(upper + off, upper + off + levels[i] * (M_ + 1));
    off += upper_[i].size();
  }
  entry_ = n ? uint32_t(entry) : 0;
  max_level_ = n ? max_level : -1;
}

}  // namespace tq
