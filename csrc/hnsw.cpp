#include "hnsw.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>

#include "common.h"
#include "random.h"
#include "topk.h"

namespace tq {
namespace {

constexpr int kMaxLevel = 15;
constexpr uint64_t kLevelStream = 0x484e5357;  // "HNSW": the level draws' random stream

// Items per parallel_for chunk: each chunk sets up a Scratch (a pooled visit list, small buffers), so
// chunks are large, yet small enough to balance threads and to poll Ctrl-C often.
size_t chunk_for(size_t n, int threads) {
  return std::clamp<size_t>(n / (4 * size_t(resolve_threads(threads, n, 1))), 8, 512);
}

}  // namespace

// Per-thread working memory: a visit list on loan from the graph's pool, an index row, two queries.
struct HnswGraph::Scratch {
  explicit Scratch(const HnswGraph& g) : visited(g.visited_.acquire(g.size(), g.cap_)), idx(g.dim()) {}
  VisitedPool::Lease visited;
  std::vector<uint8_t> idx;
  std::vector<uint32_t> nbrs;
  Query query, base;
  std::vector<Query> kept;  // select(): the kept candidates as queries
};

HnswGraph::HnswGraph(const std::vector<CodeTier>& tiers, size_t M, size_t ef_construction, uint64_t seed,
                     float decode_div, const Kernels* kernels)
    : M_(M), ef_construction_(ef_construction), decode_div_(decode_div), seed_(seed), locks_(1 << 12) {
  TQ_CHECK(!tiers.empty(), "a graph's code needs at least one tier");
  for (const CodeTier& t : tiers) {
    scorers_.emplace_back(t.dim, t.bits, t.centroids, kernels);
    query_at_.push_back(dim_);
    row_at_.push_back(row_bytes_);
    dim_ += t.dim;
    row_bytes_ += scorers_.back().row_bytes();
  }
  TQ_CHECK(M >= 2 && M <= 256, "M must be in 2..256");
  TQ_CHECK(ef_construction >= 1, "ef_construction must be >= 1");
  TQ_CHECK(std::isfinite(decode_div) && decode_div > 0, "decode_div must be a positive number");
}

uint32_t* HnswGraph::links(size_t slot, int level) {
  return level == 0 ? level0_.data() + slot * (2 * M_ + 1)
                    : upper_.data() + upper_at_[slot] + size_t(level - 1) * (M_ + 1);
}

const uint32_t* HnswGraph::links(size_t slot, int level) const {
  return const_cast<HnswGraph*>(this)->links(slot, level);
}

size_t HnswGraph::memory_bytes() const {
  return codes_.capacity() + levels_.capacity() + deleted_.capacity() +
         sizeof(float) * (a_.capacity() + b_.capacity()) +
         sizeof(uint32_t) * (level0_.capacity() + upper_at_.capacity() + upper_.capacity()) +
         locks_.size() * sizeof(std::mutex) + visited_.memory_bytes();
}

// ------------------------------------------------------------------ scoring

void HnswGraph::prepare(const float* rotated, Query& q) const {
  q.resize(tiers());
  for (size_t t = 0; t < tiers(); ++t) scorers_[t].prepare(rotated + query_at_[t], q[t]);
}

void HnswGraph::prepare_node(size_t slot, Query& q, Scratch& s) const {
  q.resize(tiers());
  for (size_t t = 0; t < tiers(); ++t)
    scorers_[t].prepare_row(row(slot) + row_at_[t], a_at(slot, t) / decode_div_, q[t], s.idx.data());
}

// tiered_search's sum (flat.h): each later tier's term takes the running score as its offset, so it is a * x
// rounded and then added, as there.
float HnswGraph::score(const Query& q, size_t slot, Scratch& s) const {
  const float* a = a_.data() + slot * tiers();
  float out = scorers_[0].score_row(q[0], row(slot), a[0], b_[slot], s.idx.data());
  for (size_t t = 1; t < tiers(); ++t)
    out = scorers_[t].score_row(q[t], row(slot) + row_at_[t], a[t], out, s.idx.data());
  return out;
}

// ------------------------------------------------------------------ traversal

template <bool Locked>
uint32_t HnswGraph::greedy(const Query& q, uint32_t cur, int level, Scratch& s) const {
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
std::vector<HnswGraph::Scored> HnswGraph::search_layer(const Query& q, uint32_t entry, size_t ef, int level,
                                                       const uint64_t* allowed, int64_t self, Scratch& s) const {
  auto eligible = [&](uint32_t w) { return int64_t(w) != self && !deleted_[w] && tq::allowed(allowed, w); };
  std::priority_queue<Scored> cands;                                      // best first
  std::priority_queue<Scored, std::vector<Scored>, std::greater<>> top;  // worst first, <= ef eligible
  s.visited->begin(n_);
  s.visited->visit(entry);
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
    for (uint32_t w : s.nbrs) s.visited->prefetch(w);
    for (size_t i = 0; i < s.nbrs.size(); ++i) {
      const uint32_t w = s.nbrs[i];
      if (i + 1 < s.nbrs.size()) prefetch_row(s.nbrs[i + 1]);
      if (!s.visited->visit(w)) continue;
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

void HnswGraph::grow(size_t n, bool exact) {
  if (n <= cap_) return;
  TQ_CHECK(n <= size_t(std::numeric_limits<uint32_t>::max()), "an HNSW graph holds at most 2^32 - 1 nodes");
  const size_t cap = exact ? n : std::min<size_t>(std::numeric_limits<uint32_t>::max(),
                                                   std::max({n, cap_ + cap_ / 4, cap_ + 16}));
  resize_exact(codes_, cap * row_bytes_);
  resize_exact(a_, cap * tiers());
  resize_exact(b_, cap);
  resize_exact(levels_, cap);
  resize_exact(deleted_, cap);
  resize_exact(level0_, cap * (2 * M_ + 1));
  resize_exact(upper_at_, cap);
  cap_ = cap;
}

uint32_t HnswGraph::place_upper(size_t words) {
  const size_t end = upper_used_ + words;
  TQ_CHECK(end <= size_t(std::numeric_limits<uint32_t>::max()), "too many upper-layer links for one graph");
  if (end > upper_.size()) {
    const size_t grown = upper_.size() + upper_.size() / 4;
    resize_exact(upper_, std::min<size_t>(std::numeric_limits<uint32_t>::max(),
                                          std::max({end, grown, upper_.size() + 16 * (M_ + 1)})));
  }
  const uint32_t at = uint32_t(upper_used_);
  std::fill_n(upper_.begin() + at, words, 0u);
  upper_used_ = end;
  return at;
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
  grow(n_ + fresh, false);
  for (size_t i = 0; i < n; ++i) {
    const size_t slot = size_t(slots[i]);
    std::copy(packed + i * row_bytes_, packed + (i + 1) * row_bytes_, codes_.begin() + slot * row_bytes_);
    std::copy_n(a + i * tiers(), tiers(), a_.begin() + slot * tiers());
    b_[slot] = b[i];
    deleted_[slot] = 0;
    // A new slot draws its level; a reused one keeps its own (as hnswlib does) and its old links until its insert
    // writes new ones: nodes that still link to it reach it before then, and empty lists would strand their walks
    // there (an insert would link its row to it alone; 0-4 of 750 rows re-added into freed slots were unreachable).
    if (slot >= n_) {
      SplitMix64 rng(derive_seed(seed_, kLevelStream ^ (uint64_t(slot) << 8)));
      levels_[slot] = uint8_t(std::min<double>(kMaxLevel, std::floor(-std::log(rng.uniform()) * level_mult)));
      upper_at_[slot] = levels_[slot] ? place_upper(levels_[slot] * (M_ + 1)) : 0;
      for (int level = 0; level <= levels_[slot]; ++level) links(slot, level)[0] = 0;
    }
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
  // v's links on every level are set before any node links to v: a walk of another insert that reached v on an upper
  // level and went down from it would else find v's lower lists empty, link its node to v alone, and lose that link
  // when v's list was written (an unreachable node: 5 of 1,500 random 32-d rows on two threads, 0 on one).
  std::vector<std::vector<uint32_t>> chosen(size_t(std::min(level, top) + 1));
  for (int lev = std::min(level, top); lev >= 0; --lev) {
    const auto found = search_layer<true>(s.query, cur, ef_construction_, lev, nullptr, v, s);
    if (found.empty()) continue;
    cur = found.front().second;
    chosen[size_t(lev)] = select(found, M_, v, s);
    std::lock_guard<std::mutex> g(lock(v));
    uint32_t* l = links(v, lev);
    l[0] = uint32_t(chosen[size_t(lev)].size());
    std::copy(chosen[size_t(lev)].begin(), chosen[size_t(lev)].end(), l + 1);
  }
  for (int lev = std::min(level, top); lev >= 0; --lev)
    for (uint32_t u : chosen[size_t(lev)]) connect(u, v, lev, s);
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

// Every allowed live slot scored (a filter costs one word test per 64 slots).
std::vector<HnswGraph::Scored> HnswGraph::flat(const Query& q, size_t k, const uint64_t* allowed,
                                               Scratch& s) const {
  TopK top(k);
  for (size_t r0 = 0; r0 < n_; r0 += 64) {
    uint64_t keep = allowed_bits(allowed, r0, 64);
    if (n_ - r0 < 64) keep &= (uint64_t(1) << (n_ - r0)) - 1;
    for (; keep; keep &= keep - 1) {
      const size_t r = r0 + size_t(__builtin_ctzll(keep));
      if (deleted_[r]) continue;
      const float sc = score(q, r, s);
      if (sc >= top.threshold()) top.push(sc, int64_t(r));
    }
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
  // A beam wider than the graph behaves as one of the graph's size (and keeps the products below finite).
  ef = std::max(k, std::min(ef, n_));
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
  for (size_t i = 0; i < n_; ++i) {
    const auto first = upper_.begin() + upper_at_[i];
    out.insert(out.end(), first, first + size_t(levels_[i]) * (M_ + 1));
  }
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
  TQ_CHECK(upper_size <= size_t(std::numeric_limits<uint32_t>::max()), "too many upper-layer links for one graph");
  AlignedVector<uint8_t>().swap(codes_);  // exact sizes from here
  AlignedVector<uint32_t>().swap(level0_);
  for (auto* v : {&levels_, &deleted_}) std::vector<uint8_t>().swap(*v);
  for (auto* v : {&a_, &b_}) std::vector<float>().swap(*v);
  for (auto* v : {&upper_at_, &upper_}) std::vector<uint32_t>().swap(*v);
  n_ = cap_ = upper_used_ = 0;
  grow(n, true);
  n_ = n;
  std::copy_n(codes, n * row_bytes_, codes_.begin());
  std::copy_n(a, n * tiers(), a_.begin());
  std::copy_n(b, n, b_.begin());
  std::copy_n(levels, n, levels_.begin());
  std::copy_n(deleted, n, deleted_.begin());
  std::copy_n(level0, n * (2 * M_ + 1), level0_.begin());
  resize_exact(upper_, upper_size);
  std::copy_n(upper, upper_size, upper_.begin());
  upper_used_ = upper_size;
  for (size_t i = 0, off = 0; i < n; ++i) {
    upper_at_[i] = uint32_t(off);
    off += size_t(levels[i]) * (M_ + 1);
  }
  entry_ = n ? uint32_t(entry) : 0;
  max_level_ = n ? max_level : -1;
  visited_.clear();  // pooled lists may be sized for a larger graph
}

}  // namespace tq
