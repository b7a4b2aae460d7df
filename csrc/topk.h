// Top-k selection with a threshold heap: the scan only pays for candidates that beat the current k-th.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace tq {

// Keeps the k largest (score, id) pairs; ties prefer the smaller id so results are deterministic.
class TopK {
 public:
  explicit TopK(size_t k) : k_(k) { heap_.reserve(k); }

  // Scores strictly below this cannot enter (lowest kept score once full, else -inf).
  float threshold() const { return heap_.size() < k_ ? -std::numeric_limits<float>::infinity() : heap_.front().s; }

  void push(float s, int64_t id) {
    if (k_ == 0) return;
    if (heap_.size() < k_) {
      heap_.push_back({s, id});
      std::push_heap(heap_.begin(), heap_.end(), worse_first);
    } else if (better({s, id}, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), worse_first);
      heap_.back() = {s, id};
      std::push_heap(heap_.begin(), heap_.end(), worse_first);
    }
  }

  // Best first into scores/ids (k entries; missing ones -inf / -1).
  void write(float* scores, int64_t* ids) {
    std::sort(heap_.begin(), heap_.end(), better);
    for (size_t i = 0; i < k_; ++i) {
      scores[i] = i < heap_.size() ? heap_[i].s : -std::numeric_limits<float>::infinity();
      ids[i] = i < heap_.size() ? heap_[i].id : -1;
    }
  }

  void merge(const TopK& other) {
    for (const auto& e : other.heap_) push(e.s, e.id);
  }

 private:
  struct Entry {
    float s;
    int64_t id;
  };
  static bool better(const Entry& a, const Entry& b) { return a.s > b.s || (a.s == b.s && a.id < b.id); }
  static bool worse_first(const Entry& a, const Entry& b) { return better(a, b); }
  size_t k_;
  std::vector<Entry> heap_;
};

}  // namespace tq
