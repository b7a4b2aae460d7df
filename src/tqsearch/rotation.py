"""Seeded random orthogonal transforms for any dimension.

`FhtKacRotation` is the default: `steps` x {random signs -> Walsh-Hadamard on a power-of-two block,
alternately the first and the last 2^floor(log2 d) coordinates}, with a Kac-walk layer pairing i with
i + d/2 after every second step. It is O(d log d), exactly orthogonal for every d (no padding, the code
does not grow) and bit-reproducible: the signs come from SplitMix64 on the seed and every SIMD path rounds
like the scalar one. With 3 steps, one-hot and outlier-dominated inputs quantize as well as under a dense
Haar rotation (tests/test_rotation.py checks it).
`DenseRotation` is the paper's reference: the Q factor of a seeded Gaussian matrix (O(d^2) per vector).
Files record `algorithm` and `seed`, which rebuild the same transform.
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._validate import as_dim, as_matrix, as_seed, as_threads

__all__ = ["DEFAULT_ROTATION", "DenseRotation", "FhtKacRotation", "Rotation", "make_rotation"]

DEFAULT_ROTATION = "fht-kac-3"
_GAUSSIAN_STREAM = 1


class Rotation:
    """Common interface: forward/inverse on (n, dim) float arrays, plus the identity for files."""

    algorithm: str
    dim: int
    seed: int
    native: _core.Rotation

    def forward(self, x: object, threads: int | None = None) -> np.ndarray:
        """Return R x for each row of x: (n, dim) -> (n, dim) float32."""
        return self._apply(x, inverse=False, threads=threads)

    def inverse(self, x: object, threads: int | None = None) -> np.ndarray:
        """Return R^T x for each row (the exact inverse of `forward`)."""
        return self._apply(x, inverse=True, threads=threads)

    def matrix(self) -> np.ndarray:
        """The (dim, dim) float32 matrix R, so that forward(x) == x @ R.T."""
        return self.forward(np.eye(self.dim, dtype=np.float32)).T.copy()

    def forward_checked(self, x: np.ndarray, threads: int) -> np.ndarray:
        """`forward` of an array checked already (finite, float32, C-contiguous (n, dim)), threads >= 0: an
        index's query path, which must not scan the queries twice."""
        return self._rotate(x, False, threads)

    def _apply(self, x: object, inverse: bool, threads: int | None) -> np.ndarray:
        return self._rotate(as_matrix(x, self.dim, "x"), inverse, as_threads(threads))

    def _rotate(self, x: np.ndarray, inverse: bool, threads: int) -> np.ndarray:
        out = np.empty_like(x)
        _core.rotate(self.native, x, inverse, out, threads)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, seed={self.seed})"


class FhtKacRotation(Rotation):
    """Fast seeded rotation: random signs + Walsh-Hadamard blocks + Kac-walk mixing, O(d log d)."""

    def __init__(self, dim: int, seed: int = 0, steps: int = 3) -> None:
        self.dim, self.seed, self.steps = as_dim(dim), as_seed(seed), int(steps)
        self.algorithm = f"fht-kac-{self.steps}"
        self.native = _core.Rotation.fht_kac(self.dim, self.seed, self.steps)


class DenseRotation(Rotation):
    """Reference rotation: Q of the QR decomposition of a seeded Gaussian matrix (sign-fixed, Haar)."""

    algorithm = "dense-qr"

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.dim, self.seed = as_dim(dim), as_seed(seed)
        g = _core.random_gaussian(_core.derive_seed(self.seed, _GAUSSIAN_STREAM), self.dim * self.dim)
        q, r = np.linalg.qr(np.asarray(g, dtype=np.float64).reshape(self.dim, self.dim))
        q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # makes Q unique, hence Haar-distributed
        self.native = _core.Rotation.dense(np.ascontiguousarray(q, dtype=np.float32))


def make_rotation(algorithm: str, dim: int, seed: int) -> Rotation:
    """Rebuild a rotation from its recorded algorithm id and seed ("fht-kac-<steps>" or "dense-qr")."""
    if algorithm == "dense-qr":
        return DenseRotation(dim, seed)
    prefix = "fht-kac-"
    if algorithm.startswith(prefix) and algorithm[len(prefix):].isdigit():
        return FhtKacRotation(dim, seed, int(algorithm[len(prefix):]))
    raise ValueError(f"unknown rotation algorithm {algorithm!r} (expected 'fht-kac-<steps>' or 'dense-qr')")
