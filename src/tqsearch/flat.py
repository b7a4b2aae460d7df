"""FlatIndex: exhaustive search over TurboQuant codes with ids, deletes, filters, rerank and persistence.

Each vector costs its packed code plus two floats (one for uncentred "ip"/"cosine"); ids and the optional rerank tier are
counted separately (`memory_usage`). Shared behaviour (ids, filters, rerank, files) is in _index.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._index import CodeIndex
from .params import SearchParams
from .quantizer import Codes

__all__ = ["FlatIndex"]


class FlatIndex(CodeIndex):
    """Exhaustive (brute-force) search over b-bit TurboQuant codes, numpy in and out.

    dim: vector dimension (any). bits: 1..8 (4 bits scans with int8 dot products). metric: "ip",
    "cosine" or "l2". seed: rotation seed. rerank: None, "fp16" or 8 to keep a second, more exact copy
    that re-scores the best k * rescore candidates. threads: None = all cores. `remove` is O(1) per
    id: the last vector moves into the freed slot. `search` is CodeIndex.search (SearchParams' ef and
    exhaustive do not apply: every search is exhaustive). center: code x - mean of the first batch (see
    _index.py; on by default, False keeps the codes uncentred).
    """

    _MAGIC, _VERSION = b"TQFLAT01", 2  # 2: the centre (mean) is saved

    def __init__(self, dim: int, bits: int = 4, metric: str = "ip", seed: int = 0, rerank: str | int | None = None,
                 threads: int | None = None, simd: str | None = None, center: bool = True) -> None:
        super().__init__(dim, bits, metric, seed, rerank, threads, simd, center)
        self._store = _core.FlatStore(self.dim, self.bits, self._codec.codebook.centroids, simd or "")

    def memory_usage(self) -> dict[str, int]:
        """Bytes held, growth slack included (see `reserve`): codes with their per-vector floats, ids (the
        slot -> id array and the id -> slot map) and the rerank tier. Codes still read from a memory-mapped
        file (after `load`, before the first change) are the file's pages and count 0."""
        with self._lock.read():
            return {"codes": self._store.memory_bytes, **self._held_bytes()}

    def __repr__(self) -> str:
        return (f"FlatIndex(dim={self.dim}, bits={self.bits}, metric={self.metric!r}, n={len(self)}, "
                f"rerank={self.rerank!r})")

    # ------------------------------------------------------------------ store hooks

    def _native_search(self, rotated: np.ndarray, k: int, allowed: tuple[np.ndarray, int] | None,
                       scores: np.ndarray, slots: np.ndarray, threads: int, params: SearchParams) -> None:
        self._store.search(rotated, k, None if allowed is None else allowed[0], scores, slots, threads)

    def _place(self, centred: np.ndarray, codes: Codes, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
        start = self._store.size
        self._store.append(codes.packed, scale, offset)
        return np.arange(start, start + len(codes), dtype=np.int64)

    def _remove_existing(self, ids: np.ndarray) -> None:
        for one in ids.reshape(-1, 1):  # each freed slot takes the last row (O(1) per id); moves change slots
            slot, last = int(self._slot_of.get(one)[0]), self._store.size - 1
            if slot != last:
                self._store.move(last, slot)
                moved = int(self._ids[last])
                self._ids[slot] = moved
                self._rerank_rows[slot] = self._rerank_rows[last]
                self._slot_of.set(np.array([moved]), np.array([slot]))
            self._ids[last] = -1
            self._store.truncate(last)
        self._slot_of.discard(ids)

    def _store_reserve(self, n: int) -> None:
        self._store.reserve(n)
        self._mapped = None  # the store owns its storage now

    def _store_arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self._store.codes(), "a": self._store.a(), "b": self._store.b()}

    def _restore_store(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n: int) -> None:
        self._store.attach(arrays["codes"], arrays["a"], arrays["b"], n)
        self._mapped = arrays  # the store reads these (views of the file) until its first mutation
