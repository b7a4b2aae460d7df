// Seeded, platform-independent random numbers: every random choice tqsearch makes comes from here,
// so a (seed, algorithm id) pair reproduces the same rotation on every machine and thread count.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tq {

// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified by integer arithmetic.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  double uniform();  // in (0, 1), 53-bit resolution, never 0
 private:
  uint64_t state_;
};

// Derives an independent stream for a named purpose from a user seed.
uint64_t derive_seed(uint64_t seed, uint64_t purpose);

// n values in {-1, +1}.
std::vector<float> random_signs(uint64_t seed, size_t n);

// n standard normal values (Box-Muller in double, rounded to float32).
std::vector<float> random_gaussian(uint64_t seed, size_t n);

}  // namespace tq
