"""MUVERA fixed-dimensional encodings (Jayaram et al., NeurIPS 2024, arXiv 2405.19504).

An FDE maps a set of token vectors to one vector whose inner product with another set's FDE approximates
Chamfer similarity (sum over query tokens of the best inner product with a document token), so any
single-vector index can retrieve multi-vector candidates. Per repetition: SimHash each token with k_sim
Gaussian hyperplanes into 2^k_sim buckets; a query block is the SUM of its tokens in the bucket, a
document block their AVERAGE, and an empty document bucket takes the document token whose sign pattern
is nearest in Hamming distance; each block is projected to d_proj dims by a random +-1/sqrt(d_proj)
matrix; repetitions are concatenated and optionally Count-Sketched down to final_dim.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._validate import as_dim, as_int, as_seed, as_threads, as_token_sets
from .errors import FileFormatError

__all__ = ["FDEEncoder"]

MAX_FDE_DIM = 1 << 24  # 64 MiB of float32 per encoded set: beyond this the encoding is a mistake
CHUNK_FLOATS = 1 << 24  # sets are encoded in chunks of about this many output floats (64 MiB)


class FDEEncoder:
    """MUVERA encoder: `encode_queries` / `encode_documents` turn lists of (n_tokens, dim) arrays into FDEs.

    k_sim: SimHash hyperplanes per repetition (2^k_sim buckets; 0 = one bucket, plain sum/mean pooling).
    d_proj: dims per block after the +-1 projection; None keeps the dim inputs (identity, as the paper
    does when d_proj = dim). r_reps: repetitions. final_dim: optional Count-Sketch to this many dims
    (the reference implementation's sparse +-1 projection). fill_empty: fill empty document buckets
    (the paper's rule). normalize_blocks: scale every document block to unit norm after projection; not
    in the paper, it turns a bucket's mean into a direction, closer to the max it stands for with
    unit-norm tokens (on WordNet MiniLM tokens it lifts recall at 100 candidates, see docs/benchmarks.md).
    Output dim = r_reps * 2^k_sim * d_proj (or final_dim). Score with the raw inner product.
    """

    def __init__(self, dim: int, k_sim: int = 5, d_proj: int | None = 16, r_reps: int = 20,
                 final_dim: int | None = None, seed: int = 0, fill_empty: bool = True,
                 normalize_blocks: bool = False) -> None:
        self.dim = as_dim(dim)
        self.k_sim = as_int(k_sim, "k_sim", 0, 20)
        self.d_proj = None if d_proj is None else as_int(d_proj, "d_proj", 1, self.dim)
        self.r_reps = as_int(r_reps, "r_reps", 1)
        self.fde_dim = self.r_reps * (1 << self.k_sim) * self.width
        if self.fde_dim > MAX_FDE_DIM:
            raise ValueError(f"r_reps * 2^k_sim * d_proj = {self.fde_dim} dims is too large (max {MAX_FDE_DIM})")
        self.final_dim = None if final_dim is None else as_int(final_dim, "final_dim", 1, self.fde_dim)
        self.seed = as_seed(seed)
        self.fill_empty, self.normalize_blocks = bool(fill_empty), bool(normalize_blocks)
        rng = np.random.default_rng(self.seed)
        self._hyperplanes = rng.standard_normal((self.dim, self.r_reps * self.k_sim), dtype=np.float32)
        self._projection = None
        if self.d_proj is not None:
            signs = rng.integers(0, 2, (self.dim, self.r_reps * self.d_proj), dtype=np.int8) * 2 - 1
            self._projection = signs.astype(np.float32) / np.float32(np.sqrt(self.d_proj))
        self._sketch = None
        if self.final_dim is not None:
            self._sketch = (rng.integers(0, self.final_dim, self.fde_dim, dtype=np.uint32),
                            (rng.integers(0, 2, self.fde_dim) * 2 - 1).astype(np.float32))

    @property
    def width(self) -> int:
        """Floats per block (d_proj, or dim for the identity projection)."""
        return self.dim if self.d_proj is None else self.d_proj

    @property
    def output_dim(self) -> int:
        """Length of an encoded vector."""
        return self.final_dim or self.fde_dim

    def encode_queries(self, queries: object, threads: int | None = None) -> np.ndarray:
        """One FDE per query (bucket sums, no fill): float32 (n, output_dim)."""
        tokens, offsets = as_token_sets(queries, self.dim, "queries")
        return self.encode_tokens(tokens, offsets, document=False, threads=threads)

    def encode_documents(self, documents: object, threads: int | None = None) -> np.ndarray:
        """One FDE per document (bucket means, empty buckets filled): float32 (n, output_dim)."""
        tokens, offsets = as_token_sets(documents, self.dim, "documents")
        return self.encode_tokens(tokens, offsets, document=True, threads=threads)

    def encode_tokens(self, tokens: np.ndarray, offsets: np.ndarray, document: bool,
                      threads: int | None = None) -> np.ndarray:
        """Encode validated sets: float32 tokens (T, dim) with set i = rows offsets[i]:offsets[i+1]."""
        n, t = len(offsets) - 1, as_threads(threads)
        out = np.empty((n, self.output_dim), dtype=np.float32)
        step = max(1, CHUNK_FLOATS // self.fde_dim)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            x = tokens[offsets[lo] : offsets[hi]]
            fde = out[lo:hi] if self._sketch is None else np.empty((hi - lo, self.fde_dim), dtype=np.float32)
            proj = x if self._projection is None else x @ self._projection
            _core.fde_aggregate(proj, self._buckets(x), offsets[lo : hi + 1] - offsets[lo], 1 << self.k_sim,
                                self.width, document, document and self.fill_empty,
                                document and self.normalize_blocks, fde, t)
            if self._sketch is not None:
                _core.count_sketch(fde, *self._sketch, out[lo:hi])
        return out

    def _buckets(self, x: np.ndarray) -> np.ndarray:
        """SimHash bucket of every token in every repetition: bit i = <g_i, x> > 0. uint32 (T, r_reps)."""
        if self.k_sim == 0:
            return np.zeros((len(x), self.r_reps), dtype=np.uint32)
        bits = (x @ self._hyperplanes > 0).reshape(len(x), self.r_reps, self.k_sim)
        return np.ascontiguousarray(bits @ (1 << np.arange(self.k_sim, dtype=np.uint32)), dtype=np.uint32)

    def __repr__(self) -> str:
        return (f"FDEEncoder(dim={self.dim}, k_sim={self.k_sim}, d_proj={self.d_proj}, r_reps={self.r_reps}, "
                f"final_dim={self.final_dim}, seed={self.seed}, fill_empty={self.fill_empty}, "
                f"normalize_blocks={self.normalize_blocks})")

    # ------------------------------------------------------------------ persistence (inside an index file)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Settings plus the random matrices, so a file decodes the same under any numpy version."""
        meta = {"dim": self.dim, "k_sim": self.k_sim, "d_proj": self.d_proj, "r_reps": self.r_reps,
                "final_dim": self.final_dim, "seed": self.seed, "fill_empty": self.fill_empty,
                "normalize_blocks": self.normalize_blocks}
        arrays = {"hyperplanes": self._hyperplanes}
        if self._projection is not None:
            arrays["projection"] = self._projection
        if self._sketch is not None:
            arrays["sketch_slot"], arrays["sketch_sign"] = self._sketch
        return meta, arrays

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], source: str) -> FDEEncoder:
        """The encoder saved by `_state`; FileFormatError when the stored matrices do not fit the settings."""
        enc = cls(**meta)
        expected = enc._state()[1]
        if set(arrays) != set(expected) or any(arrays[k].shape != v.shape or arrays[k].dtype != v.dtype
                                               for k, v in expected.items()):
            raise FileFormatError(f"{source}: the FDE encoder's matrices do not match its settings")
        if enc._sketch is not None and int(arrays["sketch_slot"].max(initial=0)) >= enc.output_dim:
            raise FileFormatError(f"{source}: FDE sketch slots out of range")
        enc._hyperplanes = np.array(arrays["hyperplanes"])
        if enc._projection is not None:
            enc._projection = np.array(arrays["projection"])
        if enc._sketch is not None:
            enc._sketch = (np.array(arrays["sketch_slot"]), np.array(arrays["sketch_sign"]))
        return enc
