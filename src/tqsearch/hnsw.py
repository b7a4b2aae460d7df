"""HNSWIndex: an HNSW graph built and searched on TurboQuant codes (no float copy unless a rerank tier).

The graph lives in C++ (csrc/hnsw.h). Deletes mark a node (still traversed, never returned), re-link
its neighbours around it, and free its slot for a later add. A filter passing few rows is scanned flat.
Shared behaviour (ids, filters, rerank, files) is in _index.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._index import CodeIndex
from ._validate import as_int, as_seed
from .params import SearchParams
from .quantizer import Codes

__all__ = ["HNSWIndex"]

DEFAULT_EF = 64


class HNSWIndex(CodeIndex):
    """Approximate nearest-neighbour search on an HNSW graph over b-bit TurboQuant codes.

    dim, bits, metric, seed, rerank, threads, center, adaptive: as FlatIndex (adaptive: the graph is built and
    searched on the tiers' summed scores). M: links per node (2M on layer 0).
    ef_construction: beam width while linking. ef_search: default beam width of `search` (>= k is used).
    `search` is CodeIndex.search: SearchParams.ef sets the beam, exhaustive=True scans every allowed code.
    A filter is applied during the walk, or by a flat scan of the allowed rows when few pass; every query
    gets min(k, allowed points) results (a walk that comes back short is finished by the scan).
    """

    _MAGIC, _VERSION = b"TQHNSW01", 3  # 2: the centre (mean) is saved; 3: adaptive tiers

    def __init__(self, dim: int, bits: int = 4, metric: str = "ip", seed: int = 0, rerank: str | int | None = None,
                 M: int = 16, ef_construction: int = 200, ef_search: int = DEFAULT_EF, threads: int | None = None,
                 simd: str | None = None, center: bool = True, adaptive: bool = False) -> None:
        super().__init__(dim, bits, metric, seed, rerank, threads, simd, center, adaptive)
        self.M, self.ef_construction = as_int(M, "M", 2, 256), as_int(ef_construction, "ef_construction")
        self.ef_search = as_int(ef_search, "ef_search")
        self._new_store()

    def memory_usage(self) -> dict[str, int]:
        """Bytes held, growth slack included (see `reserve`): codes with their floats, the graph links and
        its working memory (lock table, pooled visit lists), the adaptive tiers' PCA basis, ids (the slot -> id
        array and the id -> slot map) and the rerank tier."""
        with self._lock.read():
            return {"codes_and_graph": self._store.memory_bytes, **self._held_bytes()}

    def __repr__(self) -> str:
        return (f"HNSWIndex(dim={self.dim}, bits={self.bits}, metric={self.metric!r}, n={len(self)}, M={self.M}, "
                f"ef_construction={self.ef_construction}, rerank={self.rerank!r}"
                f"{', tiers=' + str(self.tiers) if self._tiered else ''})")

    # ------------------------------------------------------------------ store hooks

    def _native_search(self, rotated: list[np.ndarray], k: int, allowed: tuple[np.ndarray, int] | None,
                       scores: np.ndarray, slots: np.ndarray, threads: int, params: SearchParams) -> None:
        bits, count = allowed if allowed is not None else (None, len(self))
        ef = count if params.exhaustive else self.ef_search if params.ef is None else params.ef
        self._store.search(_side_by_side(rotated), k, max(ef, k), bits, count, scores, slots, threads)

    def _place(self, centred: np.ndarray, codes: list[Codes], scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Link the rows into the graph at freed slots first. Linking searches with the rotated rows, rotated
        here a second time: the fused encode kernel never materialises them, and rotating is < 0.5% of an add."""
        n, size, entry = len(centred), self._store.size, self._store.entry
        free = np.flatnonzero(self._ids[:size] < 0)
        free = free[free != entry][:n]
        slots = np.concatenate([free, np.arange(size, size + n - len(free))]).astype(np.int64)
        rotated = _side_by_side(self._rotate_queries(centred, self.threads))
        packed = _side_by_side([c.packed for c in codes])
        self._store.add(rotated, packed, scale.reshape(-1), offset, slots, self.threads)
        return slots

    def _remove_existing(self, ids: np.ndarray) -> None:
        for slot in self._slot_of.get(ids).tolist():
            self._store.remove(slot)
            self._ids[slot] = -1
        self._slot_of.discard(ids)

    def _new_store(self) -> None:
        codecs = self._codecs()
        self._store = _core.HnswGraph([c.dim for c in codecs], [c.bits for c in codecs],
                                      [c.codebook.centroids for c in codecs], self.M, self.ef_construction,
                                      as_seed(self.seed), 2.0 if self.metric == "l2" else 1.0, self._simd or "")

    def _tier_codes(self, slots: np.ndarray) -> list[Codes]:
        packed = np.empty((len(slots), self._store.row_bytes), dtype=np.uint8)
        self._store.packed_rows(slots, packed)
        codes, at = [], 0
        for t, codec in enumerate(self._codecs()):
            codes.append(self._codes_from(codec, packed[:, at : at + codec.row_bytes], self._store.a_of(slots, t)))
            at += codec.row_bytes
        return codes

    def _settings(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "entry": self._store.entry, "max_level": self._store.max_level}

    @classmethod
    def _settings_from(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return {"M": int(meta["M"]), "ef_construction": int(meta["ef_construction"]),
                "ef_search": int(meta["ef_search"])}

    def _store_reserve(self, n: int) -> None:
        self._store.reserve(n)

    def _store_arrays(self) -> dict[str, np.ndarray]:
        return dict(self._store.arrays())

    def _restore_store(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n: int) -> None:
        self._store.restore(*(np.asarray(arrays[name]) for name in
                              ("codes", "a", "b", "levels", "deleted", "level0", "upper")),
                            n, int(meta["entry"]), int(meta["max_level"]))


def _side_by_side(parts: list[np.ndarray]) -> np.ndarray:
    """Per-tier row blocks as one C-contiguous array, each row the tiers' rows one after another."""
    return np.ascontiguousarray(parts[0]) if len(parts) == 1 else np.concatenate(parts, axis=1)
