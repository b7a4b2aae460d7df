// A fork-safe parallel loop: threads live only for the duration of one call (no global pool).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <system_error>
#include <thread>
#include <vector>

#include "common.h"

namespace tq {

// Polled by the calling thread between chunks; returns true when the call should stop (Ctrl-C).
using InterruptCheck = std::function<bool()>;

// The machine's core count, read once: glibc's hardware_concurrency() reads /sys on every call (~5 us,
// more than a one-query search's own work).
inline int all_cores() {
  static const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  return cores;
}

inline int resolve_threads(int threads, size_t n, size_t chunk) {
  const int t = threads > 0 ? threads : all_cores();
  const size_t chunks = (n + chunk - 1) / std::max<size_t>(chunk, 1);
  return int(std::max<size_t>(1, std::min<size_t>(size_t(t), chunks)));
}

// Runs fn(begin, end) over [0, n) in chunks of `chunk` on up to `threads` threads (<= 0: all cores).
// The calling thread works too and polls `interrupted`; worker exceptions are rethrown here.
template <class F>
void parallel_for(size_t n, size_t chunk, int threads, const InterruptCheck& interrupted, F&& fn) {
  if (n == 0) return;
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false}, halted{false};
  std::exception_ptr error;
  std::atomic_flag error_set = ATOMIC_FLAG_INIT;
  auto work = [&](bool is_caller) {
    try {
      while (!stop.load(std::memory_order_relaxed)) {
        const size_t b = next.fetch_add(chunk);
        if (b >= n) break;
        fn(b, std::min(n, b + chunk));
        if (is_caller && interrupted && interrupted()) {
          halted = true;
          stop = true;
        }
      }
    } catch (...) {
      if (!error_set.test_and_set()) error = std::current_exception();
      stop = true;
    }
  };
  const int t = resolve_threads(threads, n, chunk);
  std::vector<std::thread> pool;
  try {
    for (int i = 1; i < t; ++i) pool.emplace_back(work, false);
  } catch (const std::system_error&) {  // the OS refused a thread: run on those already started
  }
  work(true);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  if (halted) throw Interrupted();
}

}  // namespace tq
