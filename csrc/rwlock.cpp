#include "rwlock.h"

#include <stdexcept>
#include <vector>

namespace tq {
namespace {

// This thread's reads: of which lock, how deep, and whether the outermost one took the shared side (false: it nests
// in this thread's write).
struct Read {
  const ReadWriteLock* lock;
  size_t depth;
  bool shared;
};
thread_local std::vector<Read> reads;

Read* read_of(const ReadWriteLock* lock) {
  for (Read& r : reads)
    if (r.lock == lock) return &r;
  return nullptr;
}

}  // namespace

bool ReadWriteLock::try_read() { return wait_read(std::chrono::milliseconds(0)); }

bool ReadWriteLock::wait_read(std::chrono::milliseconds wait) {
  if (Read* r = read_of(this)) {  // nested: never waits
    ++r->depth;
    return true;
  }
  std::unique_lock<std::mutex> hold(mutex_);
  const bool mine = writer_ == std::this_thread::get_id();
  if (!mine && !changed_.wait_for(hold, wait, [&] { return free_for_reader(); })) return false;
  readers_ += !mine;
  reads.push_back({this, 1, !mine});
  return true;
}

void ReadWriteLock::release_read() {
  Read* r = read_of(this);
  if (!r) throw std::runtime_error("this thread does not hold the read side");
  if (--r->depth) return;
  const bool shared = r->shared;
  reads.erase(reads.begin() + (r - reads.data()));
  if (!shared) return;
  std::lock_guard<std::mutex> hold(mutex_);
  if (--readers_ == 0 && waiting_) changed_.notify_all();
}

bool ReadWriteLock::try_write() {
  std::lock_guard<std::mutex> hold(mutex_);
  const std::thread::id me = std::this_thread::get_id();
  if (writer_ == me) {
    ++depth_;
    return true;
  }
  if (read_of(this)) throw std::runtime_error("a thread holding the read side cannot take the write side (deadlock)");
  if (free_for_writer()) {
    writer_ = me;
    depth_ = 1;
    return true;
  }
  ++waiting_;
  return false;
}

bool ReadWriteLock::wait_write(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> hold(mutex_);
  if (!changed_.wait_for(hold, wait, [&] { return free_for_writer(); })) return false;
  --waiting_;
  writer_ = std::this_thread::get_id();
  depth_ = 1;
  return true;
}

void ReadWriteLock::cancel_write() {
  std::lock_guard<std::mutex> hold(mutex_);
  if (--waiting_ == 0) changed_.notify_all();  // the readers queued behind it may go
}

void ReadWriteLock::release_write() {
  std::lock_guard<std::mutex> hold(mutex_);
  if (writer_ != std::this_thread::get_id()) throw std::runtime_error("this thread does not hold the write side");
  if (--depth_) return;
  writer_ = std::thread::id();
  changed_.notify_all();
}

}  // namespace tq
