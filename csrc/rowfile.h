// Reading rows of a file of fixed-width rows (a collection's original vectors), for re-ranking, and byte
// ranges of a file (a collection's records).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {

// Reads rows[0..n) (sorted, distinct, >= 0) of `width` bytes each into out (n * width bytes), one read per
// run of consecutive rows. Runs already in the page cache are read without blocking first; the others are
// announced to the kernel together (so their disk reads overlap instead of queueing one after another) and
// then read. Returns n on success, else the index of the first row that could not be read.
size_t read_rows(int fd, const int64_t* rows, size_t n, size_t width, uint8_t* out);

// Reads n >= 1 byte ranges (lengths[i] bytes at offsets[i]) into out as one JSON array of them:
// '[' r0 ',' r1 ... ']' (sum of lengths + n + 1 bytes). Ranges already in the page cache are read without
// blocking first; the others are announced to the kernel together, then read, as read_rows does.
// Returns n on success, else the index of the first range that could not be read.
size_t read_joined(int fd, const uint64_t* offsets, const uint32_t* lengths, size_t n, uint8_t* out);

}  // namespace tq
