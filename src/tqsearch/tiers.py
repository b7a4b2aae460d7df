"""Adaptive tiers: a PCA of the first batch, then more bits on the directions that carry the variance.

TurboQuant spends the same bits on every coordinate of a random rotation: near-optimal for a direction with no
preferred axes, but real embeddings put most of their variance in a few directions. Transform coding (a PCA,
then a bit budget split by variance) lowers the inner-product error at the same bytes per vector. A plan keeps
the PCA basis of a first batch and a few tiers, each a slice of its directions (by falling variance) coded at
one bit width by a TurboQuant code of its own (rotation, norm and unbiased scale); the directions after the
last tier are dropped. A tier costs one float per vector besides its code.

The plan is chosen on the first batch itself: a distortion model (each tier's error ~ (its variance)^2 D(b) / its
width, plus the dropped variance squared) ranks the splits that fit the uniform code's bytes, and the best few,
with the uniform code, are measured by recall@10 of a slice of the batch against the rest. Tiers win only by a
margin; otherwise the index keeps the uniform code. Widths stay multiples of 8 and bit widths in {1, 2, 4, 8},
the layouts the flat scan has kernels for (csrc/flat.h).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .quantizer import Codes, TurboQuantMSE

__all__ = ["TierPlan", "TieredCodec", "fit_plan", "FIT_MIN_ROWS"]

FIT_MIN_ROWS = 1024  # a first batch below this (or below 2 * dim rows) keeps the uniform code
FIT_MAX_ROWS = 8192  # rows of the first batch (evenly spaced) the plan is fitted and measured on
TIER_BITS = (1, 2, 4, 8)
STEP = 8  # tier widths are multiples of this
CANDIDATES = 4  # splits measured besides the uniform code
MARGIN = 0.005  # recall@10 a split must gain over the uniform code on the fit rows
PROBE_QUERIES = 512  # fit rows used as queries when measuring
SCALE = "unbiased"
# Mean squared error of the unit-Gaussian Lloyd-Max quantizer at these bits (Max 1960): the model's D(b).
_MSE = {1: 0.3634, 2: 0.1175, 4: 0.009497, 8: 0.0000411}


@dataclass(frozen=True)
class TierPlan:
    """A PCA basis (dim, dim) float32 (column j: the direction with the j-th largest variance) and the tiers as
    (start, stop, bits) over its columns, consecutive from 0; columns from the last stop on are dropped."""

    basis: np.ndarray
    tiers: tuple[tuple[int, int, int], ...]

    def check(self, dim: int) -> None:
        """ValueError unless the plan fits vectors of `dim` (a file's plan is checked on load)."""
        if self.basis.shape != (dim, dim) or not np.isfinite(self.basis).all():
            raise ValueError(f"tier basis has shape {self.basis.shape} or is not finite")
        start = 0
        for a, b, bits in self.tiers:
            if a != start or not a < b <= dim or bits not in TIER_BITS:
                raise ValueError(f"tiers {list(self.tiers)} are not consecutive slices of {dim} columns")
            start = b
        if not self.tiers:
            raise ValueError("a tier plan needs at least one tier")


class TieredCodec:
    """Codes of centred vectors under a TierPlan: one TurboQuantMSE (unbiased scale) per tier, on its slice of
    the PCA coordinates. Tier t's estimate of <q, x> is its factor times <its rotated query slice, its code>."""

    def __init__(self, plan: TierPlan, seed: int, simd: str | None = None) -> None:
        self.plan = plan
        self.codecs = [TurboQuantMSE(stop - start, bits, seed, scale=SCALE, simd=simd)
                       for start, stop, bits in plan.tiers]
        # Each tier's columns of the basis: x @ slice gives its coordinates contiguous, dropped ones never computed.
        self._slices = [np.ascontiguousarray(plan.basis[:, a:b]) for a, b, _ in plan.tiers]

    def encode(self, centred: np.ndarray, threads: int) -> list[Codes]:
        """Codes of (n, dim) centred rows, one Codes per tier."""
        return [c.encode(centred @ p, threads) for c, p in zip(self.codecs, self._slices)]

    def rotate_queries(self, centred: np.ndarray, threads: int) -> list[np.ndarray]:
        """Each tier's rotated slice of (nq, dim) centred queries (checked float32 rows)."""
        return [c.rotation.forward_checked(centred @ p, threads) for c, p in zip(self.codecs, self._slices)]

    def decode(self, codes: list[Codes], threads: int | None = None) -> np.ndarray:
        """The centred rows the codes estimate (dropped directions: 0): <q, decode(x)> is the tiers' estimate."""
        dim = self.plan.basis.shape[0]
        z = np.zeros((len(codes[0]), dim), dtype=np.float32)
        for c, part, (a, b, _) in zip(self.codecs, codes, self.plan.tiers):
            z[:, a:b] = c.decode(part, threads)
        return z @ self.plan.basis.T


def fit_plan(rows: np.ndarray, mean: np.ndarray, bits: int, metric: str, seed: int, simd: str | None = None,
             threads: int = 0) -> TierPlan | None:
    """The tier plan for an index of `bits` per coordinate whose first batch is `rows` (as stored, not centred),
    or None where the uniform code measures as well (or the batch is too small to fit a basis on)."""
    dim = rows.shape[1]
    if len(rows) < max(FIT_MIN_ROWS, 2 * dim):
        return None
    picked = np.linspace(0, len(rows) - 1, min(len(rows), FIT_MAX_ROWS)).astype(np.int64)  # a batch may be sorted
    sample = (rows[picked] - mean).astype(np.float32)
    cov = sample.T.astype(np.float64) @ sample / len(sample)
    variances, vectors = np.linalg.eigh(cov)
    order = np.argsort(variances)[::-1]
    basis = np.ascontiguousarray(vectors[:, order], dtype=np.float32)
    splits = candidate_tiers(np.maximum(variances[order], 0.0), bits)
    if not splits:
        return None
    probe = _Probe(sample, mean, metric)
    flat = TurboQuantMSE(dim, bits, seed, scale=SCALE, simd=simd)
    best, plan = probe.recall(lambda x: flat.decode(flat.encode(x, threads), threads)) + MARGIN, None
    for tiers in splits:
        candidate = TierPlan(basis, tiers)
        codec = TieredCodec(candidate, seed, simd)
        recall = probe.recall(lambda x: codec.decode(codec.encode(x, threads), threads))
        if recall > best:
            best, plan = recall, candidate
    return plan


def candidate_tiers(variances: np.ndarray, bits: int) -> list[tuple[tuple[int, int, int], ...]]:
    """Two-tier splits (a high then a low bit width over the leading directions) whose codes plus one more float
    fit the uniform code's bytes, the CANDIDATES best by the distortion model that beat the uniform code's."""
    dim = len(variances)
    budget = (dim * bits + 7) // 8 - 4  # the uniform code's bytes, less the second tier's float
    total = np.concatenate([[0.0], np.cumsum(variances)])
    squares = np.concatenate([[0.0], np.cumsum(variances ** 2)])
    uniform = total[-1] ** 2 * _MSE.get(bits, np.inf) / dim
    scored = []
    for high in TIER_BITS:
        for low in (b for b in TIER_BITS if b < high):
            for d1 in range(STEP, dim, STEP):
                left = budget - (d1 * high + 7) // 8
                d2 = min(dim - d1, left * 8 // low // STEP * STEP)
                if d2 <= 0:
                    continue
                end = d1 + d2
                error = (total[d1] ** 2 * _MSE[high] / d1 + (total[end] - total[d1]) ** 2 * _MSE[low] / d2
                         + squares[-1] - squares[end])
                if error < uniform:
                    scored.append((error, ((0, d1, high), (d1, end, low))))
    return [tiers for _, tiers in sorted(scored)[:CANDIDATES]]


class _Probe:
    """Recall@10 of estimated scores on a first batch: every k-th row as a query against the rest, exact top-10
    by the index's metric on the centred rows (the mean's exact terms kept, as the index keeps them)."""

    K = 10

    def __init__(self, sample: np.ndarray, mean: np.ndarray, metric: str) -> None:
        asked = np.zeros(len(sample), dtype=bool)
        asked[:: max(8, len(sample) // PROBE_QUERIES)] = True  # queries spread over the batch, the rest the base
        self.queries, self.base = sample[asked], np.ascontiguousarray(sample[~asked])
        self.metric = metric
        self.offset = (-np.einsum("ij,ij->i", self.base, self.base) if metric == "l2"
                       else self.base @ mean).astype(np.float32)
        self.truth = self._top(self._scores(self.base))

    def _scores(self, estimate: np.ndarray) -> np.ndarray:
        ip = self.queries @ estimate.T
        return (2 * ip if self.metric == "l2" else ip) + self.offset[None, :]

    def _top(self, scores: np.ndarray) -> np.ndarray:
        return np.argpartition(-scores, self.K, axis=1)[:, : self.K]

    def recall(self, estimate_of: Callable[[np.ndarray], np.ndarray]) -> float:
        """recall@10 when the base rows are scored by `estimate_of(base)` (the rows the codes estimate)."""
        found = self._top(self._scores(estimate_of(self.base)))
        hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, self.truth))
        return hits / (self.K * len(found))
