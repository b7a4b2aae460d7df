// Visit marks for graph walks, reused across searches (hnswlib's VisitedListPool).
//
// A VisitedList holds one 16-bit mark per slot and the current epoch: a slot is visited in this walk
// when its mark equals the epoch, so starting a walk is one increment instead of clearing n marks. The
// marks are cleared only when the epoch wraps (every 65,535 walks). A VisitedPool lends lists to
// concurrent walkers under a mutex and keeps them for the next call, so a search allocates nothing
// proportional to the graph; a list grows (new marks 0, never a live epoch) when the graph has grown, by
// at most 1.25x at a time and never past the graph's capacity, so its slack stays bounded and counted.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace tq {

class VisitedList {
 public:
  // Starts a walk over slots [0, n): every slot unvisited. room (>= n, or 0): the graph's capacity, the
  // most a growing list takes.
  void begin(size_t n, size_t room = 0) {
    if (marks_.size() < n) {
      const size_t want = std::max(n, std::min(std::max(room, n), marks_.size() + marks_.size() / 4));
      marks_.reserve(want);  // exactly: resize alone may double the capacity
      marks_.resize(want, 0);
    }
    if (++epoch_ == 0) {
      std::fill(marks_.begin(), marks_.end(), uint16_t(0));
      epoch_ = 1;
    }
  }
  // Marks slot visited; false when it already was in this walk.
  bool visit(uint32_t slot) {
    if (marks_[slot] == epoch_) return false;
    marks_[slot] = epoch_;
    return true;
  }
  void prefetch(uint32_t slot) const { __builtin_prefetch(marks_.data() + slot); }
  size_t capacity() const { return marks_.size(); }
  size_t memory_bytes() const { return sizeof(*this) + marks_.capacity() * sizeof(uint16_t); }

 private:
  std::vector<uint16_t> marks_;
  uint16_t epoch_ = 0;
};

class VisitedPool {
 public:
  // A list on loan; returned to the pool when the lease ends.
  class Lease {
   public:
    Lease(VisitedPool* pool, std::unique_ptr<VisitedList> list) : pool_(pool), list_(std::move(list)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (list_) pool_->release(std::move(list_));
    }
    VisitedList* operator->() const { return list_.get(); }
    VisitedList& operator*() const { return *list_; }

   private:
    VisitedPool* pool_;
    std::unique_ptr<VisitedList> list_;
  };

  // A list for walks over up to n slots (grown here if needed, so the first begin() does not allocate).
  Lease acquire(size_t n, size_t room = 0) {
    std::unique_ptr<VisitedList> list;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      if (!free_.empty()) {
        list = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!list) list = std::make_unique<VisitedList>();
    list->begin(n, room);  // grows outside the lock; the epoch it spends is harmless
    return Lease(this, std::move(list));
  }

  // Bytes held by the pooled lists (lists on loan are not counted).
  size_t memory_bytes() {
    std::lock_guard<std::mutex> guard(mutex_);
    size_t bytes = free_.capacity() * sizeof(free_[0]);
    for (const auto& list : free_) bytes += list->memory_bytes();
    return bytes;
  }

  // Drops the pooled lists (lists on loan come back as usual).
  void clear() {
    std::lock_guard<std::mutex> guard(mutex_);
    free_.clear();
  }

 private:
  void release(std::unique_ptr<VisitedList> list) {
    std::lock_guard<std::mutex> guard(mutex_);
    free_.push_back(std::move(list));
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<VisitedList>> free_;
};

}  // namespace tq
