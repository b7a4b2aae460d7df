// The reader/writer lock behind every index and collection (src/tqsearch/_rwlock.py states the contract): many readers
// or one writer, writer-preferring; the writer's thread may re-enter either side and a reader may nest.
//
// Native because searches take it on every call: the Python lock (a mutex, a condition and a thread-local depth) cost
// ~0.85 us of a ~7 us one-query search. Every call here is non-blocking, or blocks for at most a given time, so the
// bindings can drop the GIL while they wait and poll for Ctrl-C between waits.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>

namespace tq {

class ReadWriteLock {
 public:
  // Takes the shared side for this thread, or nests in a side it holds; false when a writer holds or waits.
  bool try_read();
  // try_read, waiting up to `wait` for the writers to finish.
  bool wait_read(std::chrono::milliseconds wait);
  // Leaves this thread's innermost read; throws std::runtime_error when it holds none.
  void release_read();

  // Takes the exclusive side (or re-enters it); false while readers or another writer hold the lock, and the caller
  // then counts as a waiting writer (new readers queue behind it) until wait_write takes it or cancel_write gives up.
  // Throws std::runtime_error when this thread holds only the read side (waiting would deadlock).
  bool try_write();
  bool wait_write(std::chrono::milliseconds wait);
  void cancel_write();
  // Leaves this thread's innermost write; throws std::runtime_error when it does not hold the write side.
  void release_write();

 private:
  bool free_for_writer() const { return writer_ == std::thread::id() && readers_ == 0; }
  bool free_for_reader() const { return writer_ == std::thread::id() && waiting_ == 0; }

  std::mutex mutex_;
  std::condition_variable changed_;
  size_t readers_ = 0;  // threads holding the shared side (outermost reads)
  size_t waiting_ = 0;  // writers waiting
  size_t depth_ = 0;    // the writer's nested writes
  std::thread::id writer_;
};

}  // namespace tq
