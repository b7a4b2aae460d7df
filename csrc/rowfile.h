// Reading rows of a file of fixed-width rows (a collection's original vectors), for re-ranking.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {

// Reads rows[0..n) (sorted, distinct, >= 0) of `width` bytes each into out (n * width bytes), one read per
// run of consecutive rows. Runs already in the page cache are read without blocking first; the others are
// announced to the kernel together (so their disk reads overlap instead of queueing one after another) and
// then read. Returns n on success, else the index of the first row that could not be read.
size_t read_rows(int fd, const int64_t* rows, size_t n, size_t width, uint8_t* out);

}  // namespace tq
