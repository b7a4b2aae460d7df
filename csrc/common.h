// Shared checks and sizes for the tqsearch native core.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

// Cheap invariant check at the native boundary; nanobind maps std::invalid_argument to ValueError.
#define TQ_CHECK(cond, msg)                                   \
  do {                                                        \
    if (!(cond)) throw std::invalid_argument(std::string(msg)); \
  } while (0)

namespace tq {

// Bytes of one packed code row: dim indices of `bits` bits, LSB-first, padded to a whole byte.
inline size_t packed_row_bytes(size_t dim, int bits) { return (dim * size_t(bits) + 7) / 8; }

// Thrown by long loops when the interrupt callback reports a pending Python signal.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

}  // namespace tq
