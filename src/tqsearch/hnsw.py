"""HNSWIndex: an HNSW graph built and searched on TurboQuant codes (no float copy unless a rerank tier).

The graph lives in C++ (csrc/hnsw.h). Deletes mark a node (still traversed, never returned), re-link
its neighbours around it, and free its slot for a later add. A filter passing few rows is scanned flat.
Shared behaviour (ids, filters, rerank, files) is in _index.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _core
from ._index import CodeIndex
from ._validate import as_int, as_seed
from .quantizer import Codes

__all__ = ["HNSWIndex"]

DEFAULT_EF = 64


class HNSWIndex(CodeIndex):
    """Approximate nearest-neighbour search on an HNSW graph over b-bit TurboQuant codes.

    dim, bits, metric, seed, rerank, threads: as FlatIndex. M: links per node (2M on layer 0).
    ef_construction: beam width while linking. ef_search: default beam width of `search` (>= k is used).
    Safe to call from several Python threads: calls are serialised; each runs multi-threaded inside.
    """

    _MAGIC, _VERSION = b"TQHNSW01", 1

    def __init__(self, dim: int, bits: int = 4, metric: str = "ip", seed: int = 0, rerank: str | int | None = None,
                 M: int = 16, ef_construction: int = 200, ef_search: int = DEFAULT_EF, threads: int | None = None,
                 simd: str | None = None) -> None:
        super().__init__(dim, bits, metric, seed, rerank, threads, simd)
        self.M, self.ef_construction = as_int(M, "M", 2, 256), as_int(ef_construction, "ef_construction")
        self.ef_search = as_int(ef_search, "ef_search")
        self._store = _core.HnswGraph(self.dim, self.bits, self._codec.codebook.centroids, self.M,
                                      self.ef_construction, as_seed(seed), 2.0 if self.metric == "l2" else 1.0,
                                      simd or "")
        self._lock = threading.RLock()

    def memory_usage(self) -> dict[str, int]:
        """Bytes held: codes with their floats and the graph links, ids and the rerank tier."""
        size = self._store.size
        return {"codes_and_graph": self._store.memory_bytes, "ids": 8 * size, "rerank": self._extra[:size].nbytes}

    def add(self, x: object, ids: object = None) -> np.ndarray:
        """Add (n, dim) vectors, linked into the graph on `threads` cores; returns their int64 ids."""
        with self._lock:
            return super().add(x, ids)

    def upsert(self, x: object, ids: object) -> np.ndarray:
        """Insert or replace vectors by id (ids required)."""
        with self._lock:
            return super().upsert(x, ids)

    def remove(self, ids: object) -> None:
        """Delete vectors by id: never returned again, neighbours re-linked, slots reused by later adds."""
        with self._lock:
            super().remove(ids)

    def search(self, queries: object, k: int, filter: object = None, rerank_factor: int | None = None,
               threads: int | None = None, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best k per query: (scores float32 (nq, k'), ids int64 (nq, k')), best first, -inf / -1 padded,
        where k' = min(k, len(self)): no k allocates more than the index holds.

        ef: beam width (default ef_search; at least k * rerank_factor is used). filter, rerank_factor: as
        FlatIndex; a filter is applied during the walk, or by a flat scan of the allowed rows when few pass.
        Every query gets min(k, allowed points) results: when the walk comes back short, or the beam would
        cover most allowed points, the same codes are scanned flat instead.
        """
        ef = self.ef_search if ef is None else as_int(ef, "ef")
        with self._lock:
            return self._search(queries, k, filter, rerank_factor, threads, ef=ef)

    def __repr__(self) -> str:
        return (f"HNSWIndex(dim={self.dim}, bits={self.bits}, metric={self.metric!r}, n={len(self)}, M={self.M}, "
                f"ef_construction={self.ef_construction}, rerank={self.rerank!r})")

    # ------------------------------------------------------------------ store hooks

    def _native_search(self, rotated: np.ndarray, k: int, allowed: tuple[np.ndarray, int] | None,
                       scores: np.ndarray, slots: np.ndarray, threads: int, **options: Any) -> None:
        bits, count = allowed if allowed is not None else (None, len(self))
        self._store.search(rotated, k, max(options["ef"], k), bits, count, scores, slots, threads)

    def _place(self, vectors: np.ndarray, codes: Codes, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        size, entry = self._store.size, self._store.entry
        free = np.flatnonzero(self._ids[:size] < 0)
        free = free[free != entry][: len(codes)]
        slots = np.concatenate([free, np.arange(size, size + len(codes) - len(free))]).astype(np.int64)
        rotated = self._codec.rotation.forward(vectors, self.threads)
        self._store.add(rotated, codes.packed, a, b, slots, self.threads)
        return slots

    def _remove_existing(self, ids: Iterable[int]) -> None:
        for i in ids:
            slot = self._slots.pop(i)
            self._store.remove(slot)
            self._ids[slot] = -1

    def _settings(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "entry": self._store.entry, "max_level": self._store.max_level}

    @classmethod
    def _settings_from(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return {"M": int(meta["M"]), "ef_construction": int(meta["ef_construction"]),
                "ef_search": int(meta["ef_search"])}

    def _store_arrays(self) -> dict[str, np.ndarray]:
        return dict(self._store.arrays())

    def _restore_store(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n: int) -> None:
        self._store.restore(*(np.asarray(arrays[name]) for name in
                              ("codes", "a", "b", "levels", "deleted", "level0", "upper")),
                            n, int(meta["entry"]), int(meta["max_level"]))

