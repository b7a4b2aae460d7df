"""TurboQuant quantizers (arXiv 2504.19874): Algorithm 1 (`TurboQuantMSE`) and Algorithm 2 (`TurboQuantProd`).

Both quantize the direction x/||x|| after a seeded rotation and keep ||x|| as one float32, so any input
norm works. `TurboQuantMSE` can also keep a per-vector scale that removes the shrinkage of its inner-product
estimate (research brief §4 item 3): "unbiased" makes the estimate exact for q = x, "lsq" is the
least-squares fit of the direction (and the best reconstruction). With a `mean` it codes x - mean instead
(centring: the codes then spend their levels on what varies between vectors, not on the shared offset)
and adds the mean's exact contribution back: <q, x> = <q, mean> + <q, x - mean>.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _core, _format
from ._validate import as_bits, as_choice, as_dim, as_matrix, as_seed, as_threads, bad_row, check_finite
from .codebooks import lloyd_max
from .errors import FileFormatError
from .rotation import DEFAULT_ROTATION, Rotation, make_rotation

__all__ = ["Codes", "TurboQuantMSE", "TurboQuantProd", "centre_of"]

SCALES = ("none", "unbiased", "lsq")
ROUNDINGS = ("nearest", "angle")
ANGLE_STEPS = 8  # "angle" rounding tries t = 1 +- 0.025 k, k = 1..8, besides the nearest code (csrc/codec.h)
_MAGIC, _VERSION = b"TQCODES1", 2  # 2: optional mean (centred codes)
_QJL_STREAM = 2
_ARRAYS = ("packed", "norms", "scales", "qjl", "residual_norms")


@dataclass(eq=False)
class Codes:
    """Compressed vectors: packed indices plus per-vector floats (layout: csrc/pack-inl.h, docs/format.md).

    packed: (n, ceil(dim*b/8)) uint8, b = bits for "mse" and bits-1 for "prod" (the MSE stage).
    norms: (n,) float32 ||x||. scales: (n,) float32 or None (scale "none").
    qjl: (n, ceil(dim/8)) uint8 sign bits of the residual sketch and residual_norms (n,) float32 ("prod" only).
    mean: (dim,) float32 the codes were centred on (norms are then ||x - mean||), or None.
    """

    kind: str
    dim: int
    bits: int
    seed: int
    rotation: str
    scale: str
    packed: np.ndarray
    norms: np.ndarray
    scales: np.ndarray | None = None
    qjl: np.ndarray | None = None
    residual_norms: np.ndarray | None = None
    mean: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.norms)

    @property
    def nbytes(self) -> int:
        """Bytes held by all arrays (codes and every per-vector float)."""
        return sum(a.nbytes for a in self._present().values())

    @property
    def bytes_per_vector(self) -> float:
        """Stored bytes per vector, counting every per-vector float."""
        return sum(a.nbytes / max(len(a), 1) for a in self._present().values())

    def __getitem__(self, rows: object) -> Codes:
        """Codes of a subset of rows (slice, index array or boolean mask)."""
        sub = {k: np.ascontiguousarray(v[rows]) for k, v in self._present().items()}
        if sub["norms"].ndim != 1:
            raise IndexError("Codes can only be indexed by rows (a slice, integer array or boolean mask)")
        return self._with(sub)

    def to_bytes(self) -> bytes:
        """Serialise to one versioned, checksummed buffer."""
        meta = {"kind": self.kind, "dim": self.dim, "bits": self.bits, "seed": self.seed,
                "rotation": self.rotation, "scale": self.scale, "n": len(self)}
        extra = {} if self.mean is None else {"mean": self.mean}
        return _format.pack(_MAGIC, _VERSION, meta, self._present() | extra)

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview) -> Codes:
        """Parse `to_bytes` output; raises FileFormatError on foreign, truncated or corrupt input."""
        _, meta, arrays = _format.unpack(buf, _MAGIC, _VERSION, "Codes buffer")  # version 1: no mean
        try:
            codes = cls(meta["kind"], int(meta["dim"]), int(meta["bits"]), int(meta["seed"]), str(meta["rotation"]),
                        str(meta["scale"]), **{k: np.array(v) for k, v in arrays.items()})
            if codes.mean is not None and codes.mean.shape != (codes.dim,):
                raise ValueError(f"mean has shape {codes.mean.shape}")
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"Codes buffer: malformed metadata ({e})") from None
        codes._check(int(meta.get("n", -1)))
        return codes

    def _present(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}

    def _with(self, arrays: dict[str, np.ndarray]) -> Codes:
        return Codes(self.kind, self.dim, self.bits, self.seed, self.rotation, self.scale, **arrays, mean=self.mean)

    def _check(self, n: int) -> None:
        stage_bits = self.bits - 1 if self.kind == "prod" else self.bits
        want = {"packed": (n, (self.dim * stage_bits + 7) // 8), "norms": (n,)}
        if self.kind == "prod":
            want.update(qjl=(n, (self.dim + 7) // 8), residual_norms=(n,))
        if self.scale != "none":
            want["scales"] = (n,)
        if self.kind not in ("mse", "prod") or set(want) != set(self._present()) or any(
                getattr(self, k).shape != s for k, s in want.items()):
            raise FileFormatError("Codes buffer: arrays do not match the recorded kind, dim, bits and count")


class _Quantizer:
    """Shared plumbing: parameters, rotation, validation and the compatibility check for Codes."""

    kind: str
    mean: np.ndarray | None = None

    def __init__(self, dim: int, bits: int, seed: int, rotation: str | Rotation | None, threads: int | None,
                 simd: str | None) -> None:
        self.dim, self.bits, self.seed = as_dim(dim), as_bits(bits), as_seed(seed)
        self.threads, self.simd = as_threads(threads), simd or ""
        if simd and simd not in _core.available_simd_levels():
            raise ValueError(f"SIMD level {simd!r} is not available here (have {_core.available_simd_levels()})")
        if isinstance(rotation, Rotation):
            if (rotation.dim, rotation.seed) != (self.dim, self.seed):  # codes record (algorithm, seed) only
                raise ValueError(f"rotation has dim {rotation.dim} and seed {rotation.seed}, the quantizer "
                                 f"dim {self.dim} and seed {self.seed}")
            self.rotation = rotation
        else:
            self.rotation = make_rotation(rotation or DEFAULT_ROTATION, self.dim, self.seed)

    def _check_codes(self, codes: Codes) -> None:
        if not isinstance(codes, Codes):
            raise TypeError(f"expected Codes, got {type(codes).__name__}")
        mine = (self.kind, self.dim, self.bits, self.seed, self.rotation.algorithm)
        theirs = (codes.kind, codes.dim, codes.bits, codes.seed, codes.rotation)
        if mine != theirs:
            raise ValueError(f"these codes were made by a different quantizer (kind, dim, bits, seed, rotation) "
                             f"{theirs}, this one is {mine}")
        if not _same_mean(self.mean, codes.mean):
            raise ValueError("these codes were centred on a different mean than this quantizer's")

    def _threads(self, threads: int | None) -> int:
        return self.threads if threads is None else as_threads(threads)

    def _rotate(self, x: np.ndarray, threads: int) -> np.ndarray:
        out = np.empty_like(x)
        _core.rotate(self.rotation.native, x, False, out, threads, self.simd)
        return out

    def l2(self, queries: object, codes: Codes, threads: int | None = None) -> np.ndarray:
        """Estimated squared Euclidean distances ||q'||^2 + ||x'||^2 - 2<q', x'>, q' = q - mean and x' = x - mean
        (no mean: q and x): (nq, n) float32."""
        q = as_matrix(queries, self.dim, "queries")
        if self.mean is not None:
            q = q - self.mean
        ip = self._centred_ip(q, codes, threads)
        qn = np.einsum("ij,ij->i", q, q, dtype=np.float64).astype(np.float32)
        return qn[:, None] + np.square(codes.norms)[None, :] - 2.0 * ip

    def _centred_ip(self, q: np.ndarray, codes: Codes, threads: int | None) -> np.ndarray:
        """Estimated <q, x - mean> (<q, x> without a mean) for validated queries."""
        raise NotImplementedError

    def inner_products(self, queries: object, codes: Codes, threads: int | None = None) -> np.ndarray:
        """Estimated <q, x> for every query and code: (nq, n) float32."""
        q = as_matrix(queries, self.dim, "queries")
        ip = self._centred_ip(q, codes, threads)
        return ip if self.mean is None else ip + (q @ self.mean)[:, None]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, bits={self.bits}, seed={self.seed})"


class TurboQuantMSE(_Quantizer):
    """Algorithm 1: rotate, quantize each coordinate with the b-bit Lloyd-Max codebook, keep ||x||.

    dim: any >= 1. bits: 1..8. seed: rotation seed. scale: "none" (the paper), "unbiased" or "lsq" (one
    more float per vector). rotation: "fht-kac-3" (default), "dense-qr" or a Rotation. threads: None = all
    cores. simd: force "scalar"/"avx2"/"avx512" (tests); default picks the best the CPU has. mean: (dim,)
    vector to centre on (e.g. the mean of a first batch: `centre_of`), or None; costs no bytes per vector.
    rounding: "nearest" (the paper) or "angle": of the codes nearest to t * u for a grid of t around 1, keep
    the one whose direction is closest to u (same bytes, same decode; ~3x slower to encode).
    """

    kind = "mse"

    def __init__(self, dim: int, bits: int, seed: int = 0, scale: str = "none", rotation: str | Rotation | None = None,
                 threads: int | None = None, simd: str | None = None, mean: object = None,
                 rounding: str = "nearest") -> None:
        super().__init__(dim, bits, seed, rotation, threads, simd)
        self.scale = as_choice(scale, "scale", SCALES)
        self.rounding = as_choice(rounding, "rounding", ROUNDINGS)
        self.mean = None if mean is None else as_matrix(np.reshape(mean, (1, -1)), self.dim, "mean")[0].copy()
        self.codebook = lloyd_max(self.dim, self.bits)
        self._codec = _core.MSECodec(self.rotation.native, self.bits, self.codebook.centroids, self.simd,
                                     ANGLE_STEPS if self.rounding == "angle" else 0)

    @property
    def simd_level(self) -> str:
        """The kernel set this quantizer runs on."""
        return self._codec.simd_level

    @property
    def row_bytes(self) -> int:
        """Bytes of one packed code row (dim * bits / 8, rounded up)."""
        return self._codec.row_bytes

    def encode(self, x: object, threads: int | None = None) -> Codes:
        """Compress (n, dim) float vectors; zero rows encode to zero. Multi-threaded, GIL released."""
        arr = as_matrix(x, self.dim, "vectors", finite=False)
        if self.mean is not None:
            arr = arr - self.mean
        n = len(arr)
        packed = np.empty((n, self._codec.row_bytes), dtype=np.uint8)
        norms, scales = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32)
        bad = self._codec.encode(arr, getattr(_core.ScaleMode, self.scale), packed, norms, scales,
                                 self._threads(threads))
        if bad >= 0:
            raise bad_row(arr, bad, "vectors")
        return Codes("mse", self.dim, self.bits, self.seed, self.rotation.algorithm, self.scale, packed, norms,
                     None if self.scale == "none" else scales, mean=self.mean)

    def decode(self, codes: Codes, threads: int | None = None) -> np.ndarray:
        """Reconstruct (n, dim) float32 vectors ||x|| * s * R^T c (+ mean); inner_products equal q @ decode().T."""
        self._check_codes(codes)
        out = np.empty((len(codes), self.dim), dtype=np.float32)
        self._codec.decode(codes.packed, codes.norms, self._scales(codes), out, self._threads(threads))
        if self.mean is not None:
            out += self.mean
        return out

    def _centred_ip(self, q: np.ndarray, codes: Codes, threads: int | None) -> np.ndarray:
        self._check_codes(codes)
        t = self._threads(threads)
        return self.scan_rotated(self._rotate(q, t), codes.packed, codes.norms * self._scales(codes), t)

    def scan_rotated(self, rotated_queries: np.ndarray, packed: np.ndarray, factors: np.ndarray,
                     threads: int = 0) -> np.ndarray:
        """The scan primitive on already-rotated queries: factors[i] * <q', centroids[codes_i]>."""
        out = np.empty((len(rotated_queries), len(packed)), dtype=np.float32)
        _core.scan_ip(rotated_queries, packed, self.bits, self.codebook.centroids,
                      np.ascontiguousarray(factors, dtype=np.float32), out, threads, self.simd)
        return out

    def _scales(self, codes: Codes) -> np.ndarray:
        return codes.scales if codes.scales is not None else np.ones(len(codes), dtype=np.float32)


class TurboQuantProd(_Quantizer):
    """Algorithm 2: a (bits-1)-bit TurboQuantMSE stage plus a 1-bit QJL sketch sign(S r) of its residual r.

    The estimate <q, x~_mse> + ||r|| sqrt(pi/2)/d <S q, sign(S r)> is unbiased; S is a seeded i.i.d.
    Gaussian d x d matrix (the constant needs Gaussian rows). For ranking, TurboQuantMSE is better at equal
    bits (its variance is lower); this class is here for fidelity to the paper.
    """

    kind = "prod"

    def __init__(self, dim: int, bits: int, seed: int = 0, rotation: str | Rotation | None = None,
                 threads: int | None = None, simd: str | None = None) -> None:
        super().__init__(dim, bits, seed, rotation, threads, simd)
        self.mse = TurboQuantMSE(self.dim, self.bits - 1, self.seed, "none", self.rotation, threads, simd) \
            if self.bits > 1 else None
        g = _core.random_gaussian(_core.derive_seed(self.seed, _QJL_STREAM), self.dim * self.dim)
        self.sketch = np.asarray(g, dtype=np.float32).reshape(self.dim, self.dim)
        self._qjl_scale = np.float32(math.sqrt(math.pi / 2) / self.dim)
        self._signs = np.array([-1.0, 1.0], dtype=np.float32)

    def encode(self, x: object, threads: int | None = None) -> Codes:
        """Compress (n, dim) vectors: MSE-stage codes, ||x||, the residual's sign sketch and ||r||."""
        arr = as_matrix(x, self.dim, "vectors")
        t = self._threads(threads)
        norms = np.sqrt(np.einsum("ij,ij->i", arr, arr, dtype=np.float64)).astype(np.float32)
        unit = self._rotate(arr, t) / np.where(norms > 0, norms, 1)[:, None]
        if self.mse is not None:
            stage = self.mse.encode(arr, t)
            residual = unit - self._stage_values(stage.packed)
            packed = stage.packed
        else:
            residual, packed = unit, np.zeros((len(arr), 0), dtype=np.uint8)
        qjl = np.packbits(residual @ self.sketch.T > 0, axis=1, bitorder="little")
        gammas = np.linalg.norm(residual, axis=1).astype(np.float32)
        return Codes("prod", self.dim, self.bits, self.seed, self.rotation.algorithm, "none", packed, norms, None,
                     np.ascontiguousarray(qjl), gammas)

    def decode(self, codes: Codes, threads: int | None = None) -> np.ndarray:
        """Reconstruct ||x|| R^T (c + ||r|| sqrt(pi/2)/d S^T sign): (n, dim) float32."""
        self._check_codes(codes)
        signs = self._signs[self._unpack(codes.qjl, 1)]
        y = (codes.residual_norms * self._qjl_scale)[:, None] * (signs @ self.sketch)
        if self.mse is not None:
            y += self._stage_values(codes.packed)
        return self.rotation.inverse(y, threads) * codes.norms[:, None]

    def _centred_ip(self, q: np.ndarray, codes: Codes, threads: int | None) -> np.ndarray:
        """Unbiased estimates of <q, x> (this quantizer takes no mean)."""
        self._check_codes(codes)
        t = self._threads(threads)
        rq = self._rotate(q, t)
        sq = np.ascontiguousarray(rq @ self.sketch.T)
        out = np.empty((len(q), len(codes)), dtype=np.float32)
        _core.scan_ip(sq, codes.qjl, 1, self._signs, codes.norms * codes.residual_norms * self._qjl_scale, out, t,
                      self.simd)
        if self.mse is not None:
            out += self.mse.scan_rotated(rq, codes.packed, codes.norms, t)
        return out

    def _unpack(self, packed: np.ndarray, bits: int) -> np.ndarray:
        idx = np.empty((len(packed), self.dim), dtype=np.uint8)
        _core.unpack(packed, self.dim, bits, idx)
        return idx

    def _stage_values(self, packed: np.ndarray) -> np.ndarray:
        return self.mse.codebook.centroids[self._unpack(packed, self.mse.bits)]


def centre_of(x: object, dim: int) -> np.ndarray:
    """The mean of (n, dim) vectors as float32 (accumulated in float64): the centre a TurboQuantMSE codes around."""
    arr = as_matrix(x, dim, "vectors", finite=False)
    if not len(arr):
        raise ValueError("cannot take the mean of zero vectors")
    mean = arr.mean(axis=0, dtype=np.float64)
    if not np.isfinite(mean).all():  # float64 sums of float32 cannot overflow: some value is NaN or Inf
        check_finite(arr, "vectors")
    return mean.astype(np.float32)


def _same_mean(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
