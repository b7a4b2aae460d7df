"""FlatIndex: exhaustive search over TurboQuant codes with ids, deletes, filters, rerank and persistence.

Each vector costs its packed code plus two floats (one for uncentred "ip"/"cosine"), and one more per tier past
the first with `adaptive` (tiers.py); ids and the optional rerank tier are counted separately (`memory_usage`).
Shared behaviour (ids, filters, rerank, files) is in _index.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._index import CodeIndex, check_prepared
from .params import DEFAULT_PARAMS, SearchParams
from .quantizer import Codes

__all__ = ["FlatIndex"]


def _lut_relayout(codes: np.ndarray, layout: int) -> np.ndarray:
    """1- or 2-bit blocks rewritten from the other lut layout into `layout` (csrc/flat.h): byte 16 L + i of each
    64-byte chunk in layout 1 is byte 4 i + L in layout 2."""
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
    if codes.size % 64:
        raise ValueError(f"{codes.size} code bytes are not whole 64-byte chunks")
    shape = (-1, 4, 16) if layout == 2 else (-1, 16, 4)
    return np.ascontiguousarray(codes.reshape(shape).transpose(0, 2, 1)).reshape(-1)


class FlatIndex(CodeIndex):
    """Exhaustive (brute-force) search over b-bit TurboQuant codes, numpy in and out.

    dim: vector dimension (any). bits: 1..8 (4 bits scans with int8 dot products). metric: "ip",
    "cosine" or "l2". seed: rotation seed. rerank: None, "fp16" or 8 to keep a second, more exact copy
    that re-scores the best k * rescore candidates. threads: None = all cores, at most (a scan starts a thread per
    few MB of codes it reads: a one-query search of a small index runs on one). `remove` is O(1) per
    id: the last vector moves into the freed slot. `search` is CodeIndex.search (SearchParams' ef and
    exhaustive do not apply: every search is exhaustive). center: code x - mean of the first batch (see
    _index.py; on by default, False keeps the codes uncentred). adaptive: let the first batch (at least
    tiers.FIT_MIN_ROWS rows and 2 * dim) fit a PCA and split the same bytes into tiers of different bit widths
    where that measures better on the batch (tiers.py; bits 1, 2 or 4); `tiers` says what it chose.
    """

    _MAGIC, _VERSION = b"TQFLAT01", 4  # 2: the centre (mean) is saved; 3: adaptive tiers; 4: "lut_layout" 1 or 2

    def __init__(self, dim: int, bits: int = 4, metric: str = "ip", seed: int = 0, rerank: str | int | None = None,
                 threads: int | None = None, simd: str | None = None, center: bool = True,
                 adaptive: bool = False) -> None:
        super().__init__(dim, bits, metric, seed, rerank, threads, simd, center, adaptive)
        self._new_store()

    def memory_usage(self) -> dict[str, int]:
        """Bytes held, growth slack included (see `reserve`): codes with their per-vector floats, the adaptive
        tiers' PCA basis (once per index; 0 for the uniform code), ids (the slot -> id array and the id -> slot map)
        and the rerank tier. After `load`, until the first change, the codes are read from the file: `file` counts
        its bytes, held in memory (mmap=False) or mapped (mmap=True: page cache, resident once searched), and
        `codes` counts 0."""
        with self._lock.read():
            return {"codes": sum(s.memory_bytes for s in self._stores), **self._held_bytes(),
                    "file": self._file_bytes if self._mapped is not None else 0}

    def __repr__(self) -> str:
        return (f"FlatIndex(dim={self.dim}, bits={self.bits}, metric={self.metric!r}, n={len(self)}, "
                f"rerank={self.rerank!r}{', tiers=' + str(self.tiers) if self._tiered else ''})")

    def search_checked(self, q: np.ndarray, k: int, filter: object = None, params: SearchParams = DEFAULT_PARAMS,
                       threads: int | None = None, tail: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CodeIndex.search_checked; without a filter, rescoring, tiers or a tail, one native call does it all."""
        threads = self.threads if threads is None else threads
        if filter is not None or tail or self._tiered is not None or self.rerank is not None or params.rescore:
            return super().search_checked(q, k, filter, params, threads, tail)  # (which rejects rescore here)
        with self._lock.read():
            store = self._store
            k = min(k, store.size)  # the flat store holds exactly the live vectors
            if not k:
                return super().search_checked(q, k, filter, params, threads, tail)
            bad, scores, found = store.search_queries(q, self._centre(), self.metric, self._codec.rotation.native, k,
                                                      self._ids, threads)
        check_prepared(bad)
        return scores, found, scores[:, :0]

    # ------------------------------------------------------------------ store hooks

    def _native_search(self, rotated: list[np.ndarray], k: int, allowed: tuple[np.ndarray, int] | None,
                       scores: np.ndarray, slots: np.ndarray, threads: int, params: SearchParams) -> None:
        bits = None if allowed is None else allowed[0]
        if self._tiered is None:
            self._store.search(rotated[0], k, bits, scores, slots, threads)
        else:
            _core.tiered_search(self._stores, rotated, k, bits, scores, slots, threads)

    def _place(self, centred: np.ndarray, codes: list[Codes], scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
        start = self._store.size
        scales = scale.reshape(len(scale), -1)  # (n, tiers)
        zeros = np.zeros_like(offset)  # only tier 0 keeps the offsets
        for t, (store, part) in enumerate(zip(self._stores, codes)):
            store.append(part.packed, np.ascontiguousarray(scales[:, t]), offset if t == 0 else zeros)
        self._drop_file()
        return np.arange(start, start + len(centred), dtype=np.int64)

    def _new_store(self) -> None:
        self._stores = [_core.FlatStore(c.dim, c.bits, c.codebook.centroids, self._simd or "") for c in self._codecs()]
        self._store = self._stores[0]  # tier 0 holds the offsets

    def _tier_codes(self, slots: np.ndarray) -> list[Codes]:
        codes = []
        for store, codec in zip(self._stores, self._codecs()):
            packed = np.empty((len(slots), codec.row_bytes), dtype=np.uint8)
            store.packed_rows(slots, packed)
            codes.append(self._codes_from(codec, packed, store.a_of(slots)))
        return codes

    def _remove_existing(self, ids: np.ndarray) -> None:
        for one in ids.reshape(-1, 1):  # each freed slot takes the last row (O(1) per id); moves change slots
            slot, last = int(self._slot_of.get(one)[0]), self._store.size - 1
            if slot != last:
                for store in self._stores:
                    store.move(last, slot)
                moved = int(self._ids[last])
                self._ids[slot] = moved
                self._rerank_rows[slot] = self._rerank_rows[last]
                self._slot_of.set(np.array([moved]), np.array([slot]))
            self._ids[last] = -1
            for store in self._stores:
                store.truncate(last)
        self._slot_of.discard(ids)
        self._drop_file()

    def _store_reserve(self, n: int) -> None:
        for store in self._stores:
            store.reserve(n)
        self._drop_file()

    def _drop_file(self) -> None:
        """After a change: once every store has copied its storage off the loaded file (its first change does), the
        file's views go, and with them a read file's buffer or a mapping (kept until now, a loaded index that then
        changed held the whole file beside its copy: 22 MB of a 400,000-point collection replaying its log)."""
        if self._mapped is not None and not any(store.attached for store in self._stores):
            self._mapped = None
            _core.trim_heap()  # a read file's buffer may sit in the C heap, which keeps freed pages

    def _settings(self) -> dict[str, Any]:
        return {"lut_layout": self._store.lut_layout}

    def _store_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"codes": self._store.codes(), "a": self._store.a(), "b": self._store.b()}
        for t, store in enumerate(self._stores[1:], start=1):
            arrays[f"codes{t}"], arrays[f"a{t}"] = store.codes(), store.a()
        return arrays

    def _restore_store(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n: int) -> None:
        layout, stored = self._store.lut_layout, meta.get("lut_layout", 1)  # files before version 4 hold order 1
        if stored not in (1, 2):
            raise ValueError(f"unknown lut layout {stored!r}")
        rewritten = {f"codes{t or ''}": _lut_relayout(arrays[f"codes{t or ''}"], layout)
                     for t, store in enumerate(self._stores) if store.lut_codes and stored != layout}
        arrays = {**arrays, **rewritten}
        zeros = np.zeros(n, dtype=np.float32)
        self._store.attach(arrays["codes"], arrays["a"], arrays["b"], n)
        for t, store in enumerate(self._stores[1:], start=1):
            store.attach(arrays[f"codes{t}"], arrays[f"a{t}"], zeros, n)
        self._mapped = {**arrays, "zeros": zeros}  # the stores read these (views of the file) until a mutation
        if rewritten:  # not the file's pages: the stores own rewritten codes, and memory_usage counts them
            self._store_reserve(n)
