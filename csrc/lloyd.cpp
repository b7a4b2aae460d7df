#include "lloyd.h"

#include <algorithm>
#include <cmath>

namespace tq {

std::vector<double> lloyd(const double* edges, const double* mass, const double* cum_p, const double* cum_m, size_t n,
                          std::vector<double> t, int max_iter, double tol) {
  const size_t levels = t.size();
  if (levels < 2) return t;
  std::vector<double> p_at(levels - 1), m_at(levels - 1), next(levels), sym(levels);
  std::vector<size_t> cell(levels - 1);
  for (size_t j = 0; j + 1 < levels; ++j) {
    const size_t above = size_t(std::upper_bound(edges, edges + n + 1, (t[j] + t[j + 1]) / 2) - edges);
    cell[j] = above ? above - 1 : 0;
  }
  for (int it = 0; it < max_iter; ++it) {
    for (size_t j = 0; j + 1 < levels; ++j) {
      const double b = (t[j] + t[j + 1]) / 2;
      // numpy: clip(searchsorted(edges, b, "right") - 1, 0, n - 1), the last edge <= b
      size_t i = cell[j];
      while (i + 1 <= n && edges[i + 1] <= b) ++i;
      while (i > 0 && edges[i] > b) --i;
      cell[j] = i;
      const size_t c = std::min(i, n - 1);
      const double frac = std::min(std::max((b - edges[c]) / (edges[c + 1] - edges[c]), 0.0), 1.0);
      const double part = frac * mass[c];
      p_at[j] = cum_p[c] + part;
      m_at[j] = cum_m[c] + part * (edges[c] + b) / 2;
    }
    for (size_t k = 0; k < levels; ++k) {
      const double lo_p = k ? p_at[k - 1] : 0.0, lo_m = k ? m_at[k - 1] : 0.0;
      const double hi_p = k + 1 < levels ? p_at[k] : cum_p[n], hi_m = k + 1 < levels ? m_at[k] : cum_m[n];
      const double p = hi_p - lo_p, m = hi_m - lo_m;
      next[k] = p > 0 ? m / std::max(p, 1e-300) : t[k];
    }
    double moved = 0;
    for (size_t k = 0; k < levels; ++k) {
      sym[k] = (next[k] - next[levels - 1 - k]) / 2;
      moved = std::max(moved, std::abs(sym[k] - t[k]));
    }
    if (moved < tol) return sym;
    t.swap(sym);
  }
  return t;
}

}  // namespace tq
