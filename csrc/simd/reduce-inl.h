// The canonical reduction order that every kernel set reproduces exactly (see kernels.h):
// element j is added, after its product is rounded, to lane j % kLanes, and the lanes are folded
// pairwise, l[i] += l[i + w] for w = 16, 8, 4, 2, 1. Thirty-two lanes keep the dependency chains
// short (d/32 adds) while 8- and 16-wide registers map onto the lanes without reordering.
#pragma once
#include <cstddef>

namespace tq {
namespace {

constexpr size_t kLanes = 32;

inline float reduce_lanes(float* l) {
  for (size_t w = kLanes / 2; w >= 1; w /= 2)
    for (size_t i = 0; i < w; ++i) l[i] = l[i] + l[i + w];
  return l[0];
}

}  // namespace
}  // namespace tq
