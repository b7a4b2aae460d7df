"""MultiVectorIndex: late-interaction (ColBERT-style) retrieval over TurboQuant-compressed token vectors.

Each document is a set of token vectors. Its MUVERA FDE (fde.py) goes into a single-vector index over
TurboQuant codes (HNSWIndex or FlatIndex, inner product); its tokens are stored as TurboQuant codes.
`search` takes the best `candidates` documents by FDE, then re-ranks them by Chamfer (sum over query
tokens of the best inner product with a document token) computed in C++ straight from the token codes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import _core, _format, _kinds
from ._idmap import IdMap
from ._index import _trim_after, grow, top_k
from ._rwlock import ReadWriteLock
from ._validate import as_bits, as_choice, as_ids, as_int, as_threads, as_token_sets
from .errors import FileFormatError
from .fde import FDEEncoder
from .params import SearchParams, search_params
from .quantizer import Codes, TurboQuantMSE

__all__ = ["MultiVectorIndex"]

TOKEN_SCALE = "unbiased"  # unbiased inner products: Chamfer sums many of them
# The FDE that measures best on real token data (docs/benchmarks.md): two SimHash buckets, no projection,
# three repetitions, unit-norm document blocks. FDEEncoder's own defaults stay the paper's.
DEFAULT_FDE = {"k_sim": 1, "d_proj": None, "r_reps": 3, "normalize_blocks": True}


class MultiVectorIndex:
    """Multi-vector retrieval: FDE candidates, exact Chamfer re-ranking over b-bit token codes.

    dim: token dimension. bits: FDE code bits. fde: the FDEEncoder; default FDEEncoder(dim, **DEFAULT_FDE)
    (k_sim=1, d_proj=None, r_reps=3, normalize_blocks=True), because on WordNet MiniLM tokens it beats the
    paper's (5, 16, 20), recall@10 vs exact Chamfer 0.96 vs 0.88 at 100 candidates, with a 4x smaller FDE;
    FDEEncoder(dim) gives the paper's. index: "hnsw" or "flat" for the FDEs; index_options go to HNSWIndex
    (M, ef_construction, ef_search). token_bits: bits per token coordinate. Documents are (n_tokens, dim)
    arrays; ids are int64 as in the other indexes. Searches run at once, writes exclusively (_rwlock.py).
    """

    _MAGIC, _VERSION = b"TQMULTI1", 3  # 2: the FDE index saves its centre (version 1 loads uncentred); 3: a flat
    # FDE index of 1-2 bits holds lut layout 2 (flat.py)

    def __init__(self, dim: int, bits: int = 4, fde: FDEEncoder | None = None, index: str = "hnsw",
                 token_bits: int = 4, seed: int = 0, threads: int | None = None, simd: str | None = None,
                 **index_options: Any) -> None:
        self.fde = FDEEncoder(dim, seed=seed, **DEFAULT_FDE) if fde is None else fde
        if not isinstance(self.fde, FDEEncoder) or self.fde.dim != dim:
            raise ValueError(f"fde must be an FDEEncoder for dim {dim}, got {self.fde!r}")
        self.kind = as_choice(index, "index", _kinds.vector_kinds())
        self.threads = as_threads(threads)
        self._index = _kinds.index_class(self.kind)(self.fde.output_dim, bits, "ip", seed, threads=threads, simd=simd,
                                                    **index_options)
        self._tokens = TurboQuantMSE(dim, as_bits(token_bits), seed, scale=TOKEN_SCALE, simd=simd)
        self._scorer = _core.ChamferScorer(dim, self.token_bits, self._tokens.codebook.centroids, simd or "")
        self._codes = np.empty((0, self._tokens.row_bytes), dtype=np.uint8)  # token rows
        self._a = np.empty(0, dtype=np.float32)  # per-token score factor (norm * scale)
        self._rows = 0  # token rows in use (live and dead)
        self._starts = np.empty(0, dtype=np.int64)  # per document slot: first token row
        self._counts = np.empty(0, dtype=np.int64)  # per document slot: tokens (0 once removed)
        self._doc_ids = np.empty(0, dtype=np.int64)  # per document slot: id (-1 once removed)
        self._docs = 0  # document slots in use
        self._slot = IdMap()  # id -> document slot
        self._lock = ReadWriteLock()

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return self.fde.dim

    @property
    def bits(self) -> int:
        return self._index.bits

    @property
    def token_bits(self) -> int:
        return self._tokens.bits

    @property
    def seed(self) -> int:
        return self._index.seed

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._index

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored documents, in storage order (a copy)."""
        ids = self._doc_ids[: self._docs]
        return ids[ids >= 0].copy()

    def memory_usage(self) -> dict[str, int]:
        """Bytes held, capacity included: token codes with their floats, the FDE index, the document table."""
        with self._lock.read():
            fde = self._index.memory_usage()
            table = self._starts.nbytes + self._counts.nbytes + self._doc_ids.nbytes + self._slot.nbytes()
            return {"tokens": self._codes.nbytes + self._a.nbytes, "fde": sum(v for k, v in fde.items() if k != "ids"),
                    "ids": fde["ids"] + table}

    # ------------------------------------------------------------------ mutation

    def add(self, docs: object, ids: object = None) -> np.ndarray:
        """Add documents (a sequence of (n_tokens, dim) arrays); returns their int64 ids."""
        offsets, fdes, codes = self._prepare(docs)
        with self._lock.write():
            new_ids = self._index.add(fdes, ids)  # checks the ids before anything changes
            self._append(new_ids, codes, offsets)
        return new_ids

    def upsert(self, docs: object, ids: object) -> np.ndarray:
        """Insert or replace documents by id (ids required)."""
        offsets, fdes, codes = self._prepare(docs)
        with self._lock.write():
            new_ids = self._index.upsert(fdes, ids)
            self._drop(new_ids[self._slot.get(new_ids) >= 0])
            self._append(new_ids, codes, offsets)
        return new_ids

    def remove(self, ids: object) -> None:
        """Delete documents by id (KeyError naming an unknown id; nothing changes then)."""
        wanted = as_ids(ids)
        with self._lock.write():
            self._index.remove(wanted)
            self._drop(wanted)

    # ------------------------------------------------------------------ queries

    def search(self, queries: object, k: int, candidates: int = 100, filter: object = None,
               params: SearchParams | None = None, *, ef: int | None = None,
               threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best k documents per query by Chamfer: (scores float32 (nq, k'), ids int64 (nq, k')), -inf / -1 padded,
        where k' = min(k, len(self)): no k or candidates allocates more than the index holds.

        queries: a sequence of (n_tokens, dim) arrays. candidates: documents taken by FDE and re-ranked by
        Chamfer over the token codes (at least k; 100 is the knee of recall vs time in docs/benchmarks.md).
        params / ef: the FDE index's SearchParams (HNSW beam: at least `candidates`). filter: allowed ids,
        as in the other indexes, applied in the FDE search.
        """
        qtok, qoff = as_token_sets(queries, self.dim, "queries")
        k = as_int(k, "k")
        c = max(as_int(candidates, "candidates"), k)
        t = self.threads if threads is None else as_threads(threads)
        p = search_params(params, ef=ef)
        with self._lock.read():
            k, c = min(k, len(self)), min(c, len(self))
            if c == 0:
                return np.empty((len(qoff) - 1, 0), np.float32), np.empty((len(qoff) - 1, 0), np.int64)
            qf = self.fde.encode_tokens(qtok, qoff, document=False, threads=t)
            _, cand_ids = self._index.search(qf, c, filter=filter, params=p, threads=t)
            scores = self._chamfer(qtok, qoff, cand_ids, t)
        return top_k(scores, cand_ids, k)

    def chamfer(self, queries: object, ids: object, threads: int | None = None) -> np.ndarray:
        """Chamfer scores of each query against the given documents, from the token codes: float32 (nq, n_ids)."""
        qtok, qoff = as_token_sets(queries, self.dim, "queries")
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock.read():
            missing = wanted[self._slot.get(wanted) < 0]
            if len(missing):
                raise KeyError(f"unknown id {missing[0]}")
            t = self.threads if threads is None else as_threads(threads)
            return self._chamfer(qtok, qoff, np.tile(wanted, (len(qoff) - 1, 1)), t)

    def __repr__(self) -> str:
        return (f"MultiVectorIndex(dim={self.dim}, bits={self.bits}, token_bits={self.token_bits}, "
                f"index={self.kind!r}, n={len(self)}, fde={self.fde!r})")

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write one versioned, checksummed file atomically (temp + fsync + rename); tokens are compacted."""
        with self._lock.read():
            slots, rows = self._live_rows()
            fde_meta, fde_arrays = self.fde._state()
            index_meta, index_arrays = self._index._state()
            meta = {"dim": self.dim, "token_bits": self.token_bits, "index": self.kind, "seed": self.seed,
                    "rotation": self._tokens.rotation.algorithm, "scale": TOKEN_SCALE, "fde": fde_meta,
                    "fde_index": index_meta}
            arrays = {"doc_ids": self._doc_ids[slots], "doc_tokens": self._counts[slots],
                      "token_codes": self._codes[rows], "token_a": self._a[rows],
                      **_prefixed("fde.", fde_arrays), **_prefixed("index.", index_arrays)}
            _format.write(path, self._MAGIC, self._VERSION, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> MultiVectorIndex:
        """Read a file written by `save`; raises FileFormatError for foreign, truncated or corrupt files."""
        source = os.fspath(path)
        _, meta, arrays = _format.unpack(_format.read_file(path, mmap), cls._MAGIC, cls._VERSION, source)
        try:
            fde = FDEEncoder._from_state(meta["fde"], _section("fde.", arrays), source)
            index = cls(int(meta["dim"]), int(meta["fde_index"]["bits"]), fde, meta["index"],
                        int(meta["token_bits"]), int(meta["seed"]))
            if meta["rotation"] != index._tokens.rotation.algorithm or meta["scale"] != TOKEN_SCALE:
                raise FileFormatError(f"{source}: token codes made with rotation {meta['rotation']!r}, which this "
                                      "version does not read")
            index._index = _kinds.index_class(index.kind)._from_state(meta["fde_index"], _section("index.", arrays),
                                                                      source)
            index._restore(arrays, source)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, FileFormatError):
                raise
            raise FileFormatError(f"{source}: inconsistent multi-vector index file ({e})") from None
        # The token codes are copies: the FDE index copies its codes too (a few per document), so nothing keeps the
        # file, mostly token codes, in memory or mapped; then the heap's free pages go back with the file's buffer.
        index._index._store_reserve(len(index._index))
        del arrays
        _trim_after(index._rows)
        return index

    # ------------------------------------------------------------------ internals

    def _prepare(self, docs: object) -> tuple[np.ndarray, np.ndarray, Codes]:
        """Validate and encode documents before anything changes: token offsets, FDEs, token codes."""
        tokens, offsets = as_token_sets(docs, self.dim, "documents")
        fdes = self.fde.encode_tokens(tokens, offsets, document=True, threads=self.threads)
        return offsets, fdes, self._tokens.encode(tokens, self.threads)

    def _append(self, ids: np.ndarray, codes: Codes, offsets: np.ndarray) -> None:
        n, rows = len(ids), len(codes)
        self._codes = grow(self._codes, self._rows + rows)
        self._a = grow(self._a, self._rows + rows)
        self._codes[self._rows : self._rows + rows] = codes.packed
        self._a[self._rows : self._rows + rows] = codes.norms * codes.scales
        for name in ("_starts", "_counts", "_doc_ids"):
            setattr(self, name, grow(getattr(self, name), self._docs + n, fill=-1))
        self._starts[self._docs : self._docs + n] = self._rows + offsets[:-1]
        self._counts[self._docs : self._docs + n] = np.diff(offsets)
        self._doc_ids[self._docs : self._docs + n] = ids
        self._slot.set(ids, np.arange(self._docs, self._docs + n))
        self._rows += rows
        self._docs += n

    def _drop(self, ids: np.ndarray) -> None:
        """Forget the token rows of removed documents; compact once dead rows outnumber live ones."""
        slots = self._slot.get(ids)
        self._counts[slots], self._doc_ids[slots] = 0, -1
        self._slot.discard(ids)
        live = int(self._counts[: self._docs].sum())
        if self._rows > 2 * live + 1024:
            self._compact()

    def _compact(self) -> None:
        slots, rows = self._live_rows()
        self._codes, self._a, self._rows = self._codes[rows], self._a[rows], len(rows)
        self._set_docs(self._doc_ids[slots], self._counts[slots])

    def _live_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The live document slots, in slot order, and their token rows, document after document."""
        slots = np.flatnonzero(self._doc_ids[: self._docs] >= 0)
        return slots, _ranges(self._starts[slots], self._counts[slots])

    def _set_docs(self, ids: np.ndarray, counts: np.ndarray) -> None:
        self._counts = np.array(counts, dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)
        self._doc_ids = np.array(ids, dtype=np.int64)
        self._docs = len(ids)
        self._slot = IdMap.from_arrays(self._doc_ids, np.arange(len(self._doc_ids)))

    def _restore(self, arrays: dict[str, np.ndarray], source: str) -> None:
        ids, counts = np.asarray(arrays["doc_ids"]), np.asarray(arrays["doc_tokens"])
        codes, a = np.array(arrays["token_codes"]), np.array(arrays["token_a"])
        if (ids.ndim != 1 or counts.shape != ids.shape or (counts < 1).any() or codes.shape != (int(counts.sum()),
                self._codes.shape[1]) or a.shape != (len(codes),) or
                sorted(ids.tolist()) != sorted(self._index.ids.tolist())):
            raise FileFormatError(f"{source}: token data do not match the document index")
        self._codes, self._a, self._rows = codes, a, len(codes)
        self._set_docs(ids, counts)

    def _chamfer(self, qtok: np.ndarray, qoff: np.ndarray, cand_ids: np.ndarray, threads: int) -> np.ndarray:
        """Chamfer scores (nq, c) of each query against its candidate ids (-1: none, scored -inf)."""
        cand = self._slot.get(cand_ids.ravel()).reshape(cand_ids.shape)
        scores = np.empty(cand.shape, dtype=np.float32)
        self._scorer.score(self._codes[: self._rows], self._a[: self._rows], self._starts[: self._docs],
                           self._counts[: self._docs], self._tokens.rotation.forward(qtok, threads), qoff, cand,
                           scores, threads)
        return scores


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Row indices starts[i] .. starts[i] + counts[i] for every i, concatenated."""
    total = int(counts.sum())
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(total, dtype=np.int64) + shift


def _prefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {prefix + name: arr for name, arr in arrays.items()}


def _section(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name[len(prefix):]: arr for name, arr in arrays.items() if name.startswith(prefix)}
