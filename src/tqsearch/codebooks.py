"""Lloyd-Max scalar codebooks for the coordinates of a random unit vector (TurboQuant Lemma 1).

After a random rotation each coordinate of a unit vector in R^d follows the density
f(x) ∝ (1 - x^2)^((d-3)/2) on [-1, 1] (a scaled Beta((d-1)/2, (d-1)/2), variance 1/d), which tends to
N(0, 1/d). The optimal b-bit scalar quantizer for that law (eq. 4) is found here by Lloyd-Max iteration on
a fine quadrature of the density, computed on first use and cached. Centroids are rounded to float32 and
the boundaries are float32 midpoints of those, so encodes are byte-identical on every platform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import _core
from ._validate import as_bits, as_dim

__all__ = ["Codebook", "GAUSSIAN_ABOVE", "lloyd_max"]

GAUSSIAN_ABOVE = 4096  # beyond this dimension the exact law and its Gaussian limit agree to < 1e-4
_GRID = 1 << 18
_TAIL = 12.0  # standard deviations covered by the quadrature
_TOL = 1e-11
_MAX_ITER = 20000


@dataclass(frozen=True)
class Codebook:
    """A b-bit Lloyd-Max quantizer on the unit-sphere scale (multiply unit-variance values by 1/sqrt(dim))."""

    dim: int
    bits: int
    law: str  # "beta" (exact for this dim) or "gaussian"
    centroids: np.ndarray  # (2^bits,) float32, ascending, symmetric
    boundaries: np.ndarray  # (2^bits - 1,) float32 midpoints
    mse: float  # expected ||u - Q(u)||^2 for a uniformly random unit vector u

    @property
    def unit_centroids(self) -> np.ndarray:
        """Centroids in units of the coordinate standard deviation (the paper's tables)."""
        return self.centroids.astype(np.float64) * math.sqrt(self.dim)


def lloyd_max(dim: int, bits: int, law: str | None = None) -> Codebook:
    """The cached b-bit codebook for dimension `dim`; law "beta" (default up to GAUSSIAN_ABOVE) or "gaussian"."""
    dim, bits = as_dim(dim), as_bits(bits)
    if law is None:
        law = "beta" if dim <= GAUSSIAN_ABOVE else "gaussian"
    if law not in ("beta", "gaussian"):
        raise ValueError(f"law must be 'beta' or 'gaussian', got {law!r}")
    return _solve(dim, bits, law)


@lru_cache(maxsize=None)
def _solve(dim: int, bits: int, law: str) -> Codebook:
    levels = 1 << bits
    if dim == 1 and law == "beta":  # the unit "vector" is +-1: put centroids on both points
        centroids = np.linspace(-1.0, 1.0, levels)
        return _finish(dim, bits, law, centroids, mse=0.0)
    law_cells = _quadrature(dim, law)
    t = _lloyd(law_cells, levels)
    p, _ = _cell_moments(law_cells, _midpoints(t))
    mse = float(law_cells.second - np.sum(p * t * t))
    return _finish(dim, bits, law, t / math.sqrt(dim), mse)


def _finish(dim: int, bits: int, law: str, centroids: np.ndarray, mse: float) -> Codebook:
    c = np.asarray(centroids, dtype=np.float32)
    c = ((c - c[::-1]) / np.float32(2)).astype(np.float32)  # exact symmetry after rounding
    b = ((c[:-1].astype(np.float64) + c[1:]) / 2).astype(np.float32)
    c.flags.writeable = b.flags.writeable = False
    return Codebook(dim, bits, law, c, b, mse)


@dataclass(frozen=True)
class _Law:
    """The coordinate law discretised in unit-variance units t, with running sums for O(log n) cell moments."""

    edges: np.ndarray
    mass: np.ndarray
    first: np.ndarray
    second: float
    cum_p: np.ndarray
    cum_m: np.ndarray


def _quadrature(dim: int, law: str) -> _Law:
    """Discretise the law of one coordinate on a fine grid (midpoint rule)."""
    if law == "gaussian":
        edges = np.linspace(-_TAIL, _TAIL, _GRID + 1)
        mid = (edges[:-1] + edges[1:]) / 2
        w = np.exp(-0.5 * mid * mid)
    else:
        # t = sqrt(d) sin(theta): the density in theta is cos^(d-2), smooth even for d = 2.
        theta_max = math.asin(min(1.0, _TAIL / math.sqrt(dim)))
        theta = np.linspace(-theta_max, theta_max, _GRID + 1)
        edges = math.sqrt(dim) * np.sin(theta)
        mid_theta = (theta[:-1] + theta[1:]) / 2
        mid = math.sqrt(dim) * np.sin(mid_theta)
        w = np.exp((dim - 2) * np.log(np.cos(mid_theta)))
    w = w / w.sum()
    first = w * mid
    return _Law(edges, w, first, float(np.sum(first * mid)), np.concatenate([[0.0], np.cumsum(w)]),
                np.concatenate([[0.0], np.cumsum(first)]))


def _midpoints(t: np.ndarray) -> np.ndarray:
    return (t[:-1] + t[1:]) / 2


def _cell_moments(law: _Law, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probability and first moment of each cell between consecutive bounds (density uniform per grid cell)."""
    e = law.edges
    i = np.clip(np.searchsorted(e, bounds, side="right") - 1, 0, len(law.mass) - 1)
    part = np.clip((bounds - e[i]) / (e[i + 1] - e[i]), 0.0, 1.0) * law.mass[i]
    p_at = law.cum_p[i] + part
    m_at = law.cum_m[i] + part * (e[i] + bounds) / 2
    p = np.diff(np.concatenate([[0.0], p_at, [law.cum_p[-1]]]))
    m = np.diff(np.concatenate([[0.0], m_at, [law.cum_m[-1]]]))
    return p, m


def _lloyd(law: _Law, levels: int) -> np.ndarray:
    """Lloyd-Max fixed point (boundaries = midpoints, centroids = conditional means), symmetric."""
    # Start from the high-resolution optimum: centroids at quantiles of density^(1/3) (Panter-Dite).
    width = np.diff(law.edges)
    cdf = np.concatenate([[0.0], np.cumsum(np.cbrt(law.mass / width) * width)])
    t = np.interp((np.arange(levels) + 0.5) / levels * cdf[-1], cdf, law.edges)
    # Each step: boundaries = midpoints, centroids = the cells' conditional means (_cell_moments; a cell without
    # mass keeps its centroid), symmetrised; natively, in the same double arithmetic (csrc/lloyd.h).
    return _core.lloyd(law.edges, law.mass, law.cum_p, law.cum_m, t, _MAX_ITER, _TOL)
