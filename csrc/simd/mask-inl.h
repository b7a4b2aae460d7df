// Boolean masks over ids to bitsets over slots (Kernels::mask_bits), written once: each kernel set supplies only how it
// tests 64 slots for consecutive ids and reads their mask bytes as they lie.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace tq {
namespace {

// Bit i set when run[i] (i < count <= 64) is an id below m whose mask byte is non-zero; -1 (a free slot) wraps past m.
inline uint64_t mask_word_by_id(const int64_t* run, size_t count, const uint8_t* mask, size_t m) {
  uint64_t word = 0;
  for (size_t i = 0; i < count; ++i) {
    const uint64_t id = uint64_t(run[i]);
    word |= uint64_t(id < m && mask[id] != 0) << i;
  }
  return word;
}

// Kernels::mask_bits over a kernel set's consecutive(run, bytes, &word): whether the 64 ids of run are run[0],
// run[0] + 1, ... and then word, bit i set for a non-zero bytes[i]. Words of other ids look each one up.
template <class Consecutive>
size_t mask_bits_with(const int64_t* ids, size_t n, const uint8_t* mask, size_t m, uint64_t* words,
                      Consecutive&& consecutive) {
  size_t count = 0;
  for (size_t w = 0; w < (n + 63) / 64; ++w) {
    const int64_t* run = ids + w * 64;
    const size_t end = std::min<size_t>(64, n - w * 64);
    const bool fits = end == 64 && run[0] >= 0 && uint64_t(run[0]) + 64 <= m && run[63] == run[0] + 63;
    uint64_t word = 0;
    if (!(fits && consecutive(run, mask + run[0], &word))) word = mask_word_by_id(run, end, mask, m);
    words[w] = word;
    count += size_t(__builtin_popcountll(word));
  }
  return count;
}

}  // namespace
}  // namespace tq
