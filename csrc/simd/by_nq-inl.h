// Compile-time query counts for the kernels that keep per-query accumulators in registers.
#pragma once
#include <cstddef>
#include <type_traits>

namespace tq {
namespace {

// Calls f with std::integral_constant<int, nq> (1..8), so kernels keep their accumulators in registers.
template <class F>
void by_nq(size_t nq, F&& f) {
  switch (nq) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

}  // namespace
}  // namespace tq
