#include "random.h"

#include <cmath>

namespace tq {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double SplitMix64::uniform() { return (double(next() >> 11) + 0.5) * 0x1.0p-53; }

uint64_t derive_seed(uint64_t seed, uint64_t purpose) {
  SplitMix64 g(seed ^ (purpose * 0xD1B54A32D192ED03ull));
  g.next();
  return g.next();
}

std::vector<float> random_signs(uint64_t seed, size_t n) {
  SplitMix64 g(seed);
  std::vector<float> s(n);
  for (size_t i = 0; i < n; ++i) s[i] = (g.next() >> 63) ? -1.0f : 1.0f;
  return s;
}

std::vector<float> random_gaussian(uint64_t seed, size_t n) {
  SplitMix64 g(seed);
  std::vector<float> out(n);
  const double two_pi = 6.283185307179586476925286766559;
  for (size_t i = 0; i < n; i += 2) {
    double r = std::sqrt(-2.0 * std::log(g.uniform()));
    double t = two_pi * g.uniform();
    out[i] = float(r * std::cos(t));
    if (i + 1 < n) out[i + 1] = float(r * std::sin(t));
  }
  return out;
}

}  // namespace tq
