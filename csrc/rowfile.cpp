#include "rowfile.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <vector>

namespace tq {
namespace {

struct Run {
  size_t lo, hi;  // rows[lo..hi) are consecutive row numbers
};

// Reads `want` bytes at `offset`; false on an error or end of file.
bool read_fully(int fd, uint8_t* dst, size_t want, off_t offset) {
  for (size_t got = 0; got < want;) {
    const ssize_t k = ::pread(fd, dst + got, want - got, offset + off_t(got));
    if (k <= 0) return false;
    got += size_t(k);
  }
  return true;
}

// True when all `want` bytes were in the page cache and are now read (never waits for the disk).
bool read_cached(int fd, uint8_t* dst, size_t want, off_t offset) {
#ifdef RWF_NOWAIT
  iovec io{dst, want};
  return ::preadv2(fd, &io, 1, offset, RWF_NOWAIT) == ssize_t(want);
#else
  return false;
#endif
}

}  // namespace

size_t read_rows(int fd, const int64_t* rows, size_t n, size_t width, uint8_t* out) {
  std::vector<Run> cold;
  for (size_t lo = 0, hi; lo < n; lo = hi) {
    for (hi = lo + 1; hi < n && rows[hi] == rows[hi - 1] + 1; ++hi) {
    }
    if (!read_cached(fd, out + lo * width, (hi - lo) * width, off_t(rows[lo]) * off_t(width)))
      cold.push_back({lo, hi});
  }
  if (cold.size() > 1)
    for (const Run& run : cold)
      ::posix_fadvise(fd, off_t(rows[run.lo]) * off_t(width), off_t((run.hi - run.lo) * width), POSIX_FADV_WILLNEED);
  for (const Run& run : cold)
    if (!read_fully(fd, out + run.lo * width, (run.hi - run.lo) * width, off_t(rows[run.lo]) * off_t(width)))
      return run.lo;
  return n;
}

size_t read_joined(int fd, const uint64_t* offsets, const uint32_t* lengths, size_t n, uint8_t* out) {
  std::vector<size_t> pos(n), cold;
  size_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    out[at++] = i ? ',' : '[';
    pos[i] = at;
    if (!read_cached(fd, out + at, lengths[i], off_t(offsets[i]))) cold.push_back(i);
    at += lengths[i];
  }
  out[at] = ']';
  if (cold.size() > 1)
    for (size_t i : cold) ::posix_fadvise(fd, off_t(offsets[i]), off_t(lengths[i]), POSIX_FADV_WILLNEED);
  for (size_t i : cold)
    if (!read_fully(fd, out + pos[i], lengths[i], off_t(offsets[i]))) return i;
  return n;
}

}  // namespace tq
