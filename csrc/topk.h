// Top-k selection with a threshold: the scan only pays for candidates that reach the current k-th.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace tq {

// Keeps the k largest (score, id) pairs; ties prefer the smaller id so results are deterministic.
// Up to kHeapMax they sit in a binary heap, whose threshold is exact after every push. Above it they are
// appended to a buffer that is cut back to the best k (select_best) once it holds 2k, so a push costs O(1)
// amortised instead of the heap's O(log k) (a 1-bit WordNet scan at k = 1,000 ran 1.6x faster, at k = 100
// 1.1x); the threshold is then the k-th best of the last cut. Either way the result is the same top k in
// any push order.
class TopK {
 public:
  explicit TopK(size_t k) : k_(k), heap_(k <= kHeapMax) {
    if (heap_) entries_.reserve(k);
  }

  // Scores strictly below this cannot enter (-inf until k are held, or until the first cut).
  float threshold() const {
    if (!heap_) return cut_;
    return entries_.size() < k_ ? -std::numeric_limits<float>::infinity() : entries_.front().s;
  }

  void push(float s, int64_t id) {
    if (k_ == 0) return;
    if (!heap_) {
      if (s < cut_) return;
      entries_.push_back({s, id});
      if (entries_.size() >= 2 * k_) cut();
    } else if (entries_.size() < k_) {
      entries_.push_back({s, id});
      std::push_heap(entries_.begin(), entries_.end(), better);
    } else if (better({s, id}, entries_.front())) {
      replace_worst({s, id});
    }
  }

  // Best first into scores/ids (k entries; missing ones -inf / -1).
  void write(float* scores, int64_t* ids) {
    if (entries_.size() > k_) cut();
    std::sort(entries_.begin(), entries_.end(), better);
    for (size_t i = 0; i < k_; ++i) {
      scores[i] = i < entries_.size() ? entries_[i].s : -std::numeric_limits<float>::infinity();
      ids[i] = i < entries_.size() ? entries_[i].id : -1;
    }
  }

  void merge(const TopK& other) {
    for (const auto& e : other.entries_) push(e.s, e.id);
  }

 private:
  struct Entry {
    float s;
    int64_t id;
  };
  static constexpr size_t kHeapMax = 64;
  // The heap keeps its worst entry on top (better as the "less" order). A function object, not a function: passed
  // by pointer, the comparison was an out-of-line call in every heap step (8% of a SIFT5k 2-bit batch).
  struct Better {
    bool operator()(const Entry& a, const Entry& b) const { return a.s > b.s || (a.s == b.s && a.id < b.id); }
  };
  static constexpr Better better{};
  // Heap mode: the worst entry (the top) replaced by e, sifted down: one pass where pop_heap + push_heap take two.
  void replace_worst(Entry e) {
    const size_t n = entries_.size();
    size_t i = 0;
    for (size_t c = 1; c < n; c = 2 * i + 1) {
      if (c + 1 < n && better(entries_[c], entries_[c + 1])) ++c;  // the worse child
      if (!better(e, entries_[c])) break;
      entries_[i] = entries_[c];
      i = c;
    }
    entries_[i] = e;
  }
  // Buffer mode: keeps the best k; the k-th becomes the threshold.
  void cut() {
    select_best();
    entries_.resize(k_);
    cut_ = entries_[k_ - 1].s;
  }
  // Puts the k best entries first, the k-th best at k - 1: a quickselect whose partition writes each entry to the
  // front or the back of a scratch buffer with no data-dependent branch (nth_element's branches mispredict on about
  // every other entry).
  void select_best() {
    const size_t n = entries_.size(), target = k_ - 1;
    scratch_.resize(n);
    Entry *v = entries_.data(), *w = scratch_.data();
    size_t lo = 0, hi = n;  // the k-th best lies in [lo, hi)
    while (hi - lo > 32) {
      const Entry pivot = median3(v[lo], v[(lo + hi) / 2], v[hi - 1]);
      size_t front = lo, back = hi - 1;
      for (size_t i = lo; i < hi; ++i) {
        const Entry e = v[i];
        const bool ahead = (e.s > pivot.s) | ((e.s == pivot.s) & (e.id < pivot.id));
        w[front] = e;
        w[back] = e;
        front += ahead;
        back -= !ahead;
      }
      std::copy(w + lo, w + hi, v + lo);  // [lo, front) beat the pivot, [front, hi) do not (the pivot among them)
      if (front > target) hi = front;
      else if (front == lo) break;  // nothing beats the pivot: nth_element below
      else lo = front;
    }
    std::nth_element(v + lo, v + target, v + hi, better);
  }
  static Entry median3(const Entry& a, const Entry& b, const Entry& c) {
    if (better(a, b)) return better(b, c) ? b : (better(a, c) ? c : a);
    return better(a, c) ? a : (better(b, c) ? c : b);
  }
  size_t k_;
  bool heap_;
  float cut_ = -std::numeric_limits<float>::infinity();
  std::vector<Entry> entries_;
  std::vector<Entry> scratch_;  // select_best's
};

}  // namespace tq
