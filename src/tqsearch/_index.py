"""What every index over TurboQuant codes shares: ids, validation, filters, the rerank tier, persistence.

Scores are similarities, best first: the inner product for "ip", the cosine for "cosine" and the
negative squared distance for "l2". A subclass owns a native store (FlatStore or HnswGraph) holding
codes plus two floats per vector, a scale and an offset, that turn <q', c> into a score
(scale * <q', c> + offset), and decides where rows go. Concurrency: one ReadWriteLock (_rwlock.py).

Centring: the first add fixes a mean mu (that batch's mean when it has at least CENTRE_MIN_ROWS rows and
`center` is on, else zero) and every code holds x - mu. Queries are centred too and the exact rest is
kept per vector: <q, x> = <q - mu, x - mu> + <mu, x - mu> + <q, mu>, the middle term the offset, the last a
per-query constant; -||q - x||^2 = 2 <q - mu, x - mu> - ||x - mu||^2 - ||q - mu||^2. The mean is saved with
the index (version 2 files); older files load with mu = 0, which scores exactly as before. For "cosine"
rows and queries are normalised first: mu is the mean of the unit rows and the scores stay cosines. The
rerank tier and collections' stored vectors are kept uncentred: exact re-scoring does not involve mu.

Adaptive tiers (tiers.py): with `adaptive`, the first batch may also fix a tier plan, and the codes are then one
code per tier (each with its own scale; the offset stays one float). Codes, queries and decoding go through
`_codecs()`, the uniform codec or the tiers' codecs, in tier order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _core, _format, relevance
from ._idmap import IdMap
from ._rwlock import ReadWriteLock
from ._validate import as_bits, as_choice, as_ids, as_int, as_matrix, as_threads, check_finite
from .errors import ConflictError, FileFormatError
from .params import DEFAULT_PARAMS, SearchParams, search_params
from .quantizer import Codes, TurboQuantMSE, centre_of
from .tiers import TieredCodec, TierPlan, fit_plan

METRICS = ("ip", "cosine", "l2")
SCALE = "unbiased"  # unbiased inner products keep l2 ranking right when norms differ
CENTRE_MIN_ROWS = 256  # a smaller first batch gives a noisy mean: the index then stays uncentred


class CodeIndex:
    """Base of the single-vector indexes (FlatIndex, HNSWIndex): ids, search, rerank tier, files, locking.

    Reads (search, reconstruct, save, memory_usage, ids) may run at once from many threads; writes (add,
    upsert, remove) are exclusive (see _rwlock.py).
    """

    _MAGIC: bytes
    _VERSION: int
    relevance_model: relevance.RelevanceModel = relevance.DEFAULT  # what min_relevance reads (assignable)

    def __init__(self, dim: int, bits: int, metric: str, seed: int, rerank: str | int | None,
                 threads: int | None, simd: str | None, center: bool = True, adaptive: bool = False) -> None:
        self.metric = as_choice(metric, "metric", METRICS)
        for name, flag in (("center", center), ("adaptive", adaptive)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.center, self.adaptive = center, adaptive
        if rerank not in (None, "fp16", 8):
            raise ValueError(f"rerank must be None, 'fp16' or 8, got {rerank!r}")
        self.rerank = rerank
        self.threads = as_threads(threads)
        self._simd = simd
        self._codec = TurboQuantMSE(dim, as_bits(bits), seed, scale=SCALE, simd=simd)
        if adaptive and self.bits not in (1, 2, 4):
            raise ValueError(f"adaptive tiers are fitted for 1, 2 or 4 bits, got bits={self.bits}")
        self._planned = not adaptive  # whether the first batch has chosen the code (uniform or tiers)
        self._tiered: TieredCodec | None = None
        self._rerank_codec = TurboQuantMSE(dim, 8, seed, scale="lsq", simd=simd) if rerank == 8 else None
        self._ids = np.empty(0, dtype=np.int64)  # slot -> id (-1: free slot)
        self._slot_of = IdMap()  # id -> slot
        self._rerank_rows = np.empty((0, self._rerank_width()), dtype=self._rerank_dtype())  # per slot
        self._next_id = 0
        self._mapped: dict[str, np.ndarray] | None = None
        self._file_bytes = 0  # the size of the loaded file whose views _mapped holds
        self._mean: np.ndarray | None = None  # fixed by the first add (zeros: not centred)
        self._lock = ReadWriteLock()

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return self._codec.dim

    @property
    def bits(self) -> int:
        return self._codec.bits

    @property
    def seed(self) -> int:
        return self._codec.seed

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._slot_of

    @property
    def tiers(self) -> list[tuple[int, int, int]] | None:
        """The adaptive code's tiers as (first, stop, bits) over the PCA directions, or None for the uniform code."""
        return None if self._tiered is None else [tuple(t) for t in self._tiered.plan.tiers]

    @property
    def mean(self) -> np.ndarray | None:
        """The centre the codes are taken around (a copy; zeros: uncentred), or None before the first add."""
        return None if self._mean is None else self._mean.copy()

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored vectors, in storage order (a copy)."""
        with self._lock.read():
            ids = self._ids[: self._store.size]
            return ids[ids >= 0].copy()

    # ------------------------------------------------------------------ mutation

    def add(self, x: object, ids: object = None) -> np.ndarray:
        """Add (n, dim) vectors; returns their int64 ids (auto-assigned when None). Duplicate ids are rejected."""
        new_ids = self._add(x, ids)
        _trim_after(len(new_ids))  # the batch's temporaries are freed by now
        return new_ids

    def upsert(self, x: object, ids: object) -> np.ndarray:
        """Insert or replace vectors by id (ids required)."""
        new_ids = self._upsert(x, ids)
        _trim_after(len(new_ids))
        return new_ids

    def _add(self, x: object, ids: object) -> np.ndarray:
        vectors = self._vectors(x)
        self._fix_mean(vectors)
        encoded = self._encode(vectors)  # outside the lock: searches go on while a batch encodes
        with self._lock.write():
            new_ids = self._new_ids(len(vectors), ids)
            self._append(vectors, encoded, new_ids)
        return new_ids

    def _upsert(self, x: object, ids: object) -> np.ndarray:
        vectors = self._vectors(x)
        new_ids = as_ids(ids, len(vectors))
        self._fix_mean(vectors)
        encoded = self._encode(vectors)  # encode before mutating: a bad batch changes nothing
        with self._lock.write():
            self._remove_existing(new_ids[self._slot_of.get(new_ids) >= 0])
            self._append(vectors, encoded, new_ids)
        return new_ids

    def remove(self, ids: object) -> None:
        """Delete vectors by id."""
        wanted = as_ids(ids, None)
        with self._lock.write():
            missing = wanted[self._slot_of.get(wanted) < 0]
            if len(missing):
                raise KeyError(f"unknown id {missing[0]} ({len(missing)} of {len(wanted)} ids not in the index)")
            self._remove_existing(wanted)

    def reserve(self, n: int) -> None:
        """Make room for n vectors in total so adding them allocates no slack: the codes (and graph),
        the ids and the rerank tier are sized to exactly n slots now (no-op where they already hold n).
        Without it, storage grows by 1.25x as vectors arrive; `memory_usage` counts the slack either way."""
        n = as_int(n, "n", 0)
        with self._lock.write():
            self._store_reserve(n)
            self._ids = grow(self._ids, n, fill=-1, exact=True)
            self._rerank_rows = grow(self._rerank_rows, n, exact=True)

    def _held_bytes(self) -> dict[str, int]:
        """Bytes held for the adaptive tiers' PCA basis (once per index; 0 for the uniform code), ids (slot -> id
        array and the id -> slot map) and the rerank tier, at capacity."""
        basis = 0 if self._tiered is None else self._tiered.plan.basis.nbytes
        return {"basis": basis, "ids": self._ids.nbytes + self._slot_of.nbytes(), "rerank": self._rerank_rows.nbytes}

    # ------------------------------------------------------------------ queries

    def reconstruct(self, ids: object) -> np.ndarray:
        """Decoded (approximate) vectors for the given ids: (n, dim) float32."""
        wanted = as_ids(ids, None)
        with self._lock.read():
            centred = self._decode_slots(self._slots_of(wanted))
        return centred + self._centre()

    def _decode_slots(self, slots: np.ndarray) -> np.ndarray:
        """The centred vectors the codes of these slots estimate (the read lock is held)."""
        codes = self._tier_codes(slots)
        return self._codec.decode(codes[0]) if self._tiered is None else self._tiered.decode(codes)

    def _codes_from(self, codec: TurboQuantMSE, packed: np.ndarray, a: np.ndarray) -> Codes:
        """The Codes of `codec` for stored packed rows with score factors a (norm = a, less the l2 2x)."""
        norms = a / np.float32(2.0 if self.metric == "l2" else 1.0)
        return Codes("mse", codec.dim, codec.bits, codec.seed, codec.rotation.algorithm, SCALE,
                     np.ascontiguousarray(packed), norms, np.ones(len(packed), dtype=np.float32))

    def search(self, queries: object, k: int, filter: object = None, params: SearchParams | None = None, *,
               threads: int | None = None, ef: int | None = None, rescore: int | None = None,
               exhaustive: bool | None = None, rerank_factor: int | None = None, min_relevance: float | None = None,
               return_relevance: bool = False) -> tuple[np.ndarray, ...]:
        """Best k per query: (scores float32 (nq, k'), ids int64 (nq, k')), best first, -inf / -1 padded,
        where k' = min(k, len(self)): no k allocates more than the index holds.

        queries: (nq, dim) float. filter: allowed ids (1-D integer array-like) or a boolean mask indexed by
        id, applied inside the scan or walk. params: a SearchParams; the keywords ef, rescore and exhaustive
        override its fields (rerank_factor: deprecated name of rescore). rescore: with a rerank tier,
        re-score the best k * rescore code candidates exactly (default 2 at 4+ bits, 3 at 3 bits, 5 at 2
        bits, 9 at 1 bit: recall@10 >= 0.99 on WordNet MiniLM); 0 ranks by the codes alone.
        min_relevance: keep only hits whose calibrated relevance (`relevance_model`, relevance.py) is at least
        this, in [0, 1] (0: the top k; 1: none); return_relevance: also return the hits' relevance (nq, k')
        float32 (0 for padding). Either reads the query's scale from the codes' best `tail` candidates (the
        scan ranks at least that many, an HNSW walk keeps a beam of at least that many: free while
        k * rescore >= tail).
        """
        wants = min_relevance is not None or return_relevance
        if wants:  # a one-query search costs ~12 us in all: checks it does not need are skipped
            threshold = relevance.as_min_relevance(0 if min_relevance is None else min_relevance)
            model = self.relevance_model
            if not isinstance(model, relevance.RelevanceModel):
                raise TypeError(f"relevance_model must be a RelevanceModel, got {type(model).__name__}")
        p = search_params(params, ef=ef, rescore=rescore, exhaustive=exhaustive, rerank_factor=rerank_factor)
        q = as_matrix(queries, self.dim, "queries", finite=False)  # _prepare_queries reports NaN / Inf
        t = self.threads if threads is None else as_threads(threads)
        scores, found, tail_scores = self.search_checked(q, as_int(k, "k"), filter, p, t, model.tail if wants else 0)
        if not wants:
            return scores, found
        scores, found, rel = model.filter(scores, found, tail_scores, model_queries(model, q, self.metric), threshold)
        return (scores, found, rel) if return_relevance else (scores, found)

    def search_checked(self, q: np.ndarray, k: int, filter: object = None, params: SearchParams = DEFAULT_PARAMS,
                       threads: int | None = None, tail: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`search` for callers whose arguments are checked already (a collection's query): q float32 (nq, dim), k >= 1,
        threads None (the index's) or >= 0. Returns scores and ids as `search` does, and each query's best `tail` code
        scores (the scale relevance reads)."""
        threads = self.threads if threads is None else threads
        factor = self._rescore(params.rescore)
        with self._lock.read():
            rotated, constant = self._prepare_queries(q, threads)
            k = min(k, len(self))
            allowed = self._allowed(filter)
            n_allowed = len(self) if allowed is None else allowed[1]
            wanted = min(k * max(factor, 1), n_allowed)
            width = min(max(wanted, tail), n_allowed)  # the tail rides along in the same scan
            scores = np.empty((len(q), width), dtype=np.float32)  # the native search writes every cell
            slots = np.empty((len(q), width), dtype=np.int64)
            if width:
                self._native_search(rotated, width, allowed, scores, slots, threads, params)
            found = self._hits(scores, slots, constant)
            tail_scores = scores[:, :tail]
            if factor:
                scores, slots = self._rerank_top(normalized(q) if self.metric == "cosine" else q, slots[:, :wanted], k)
                found = self._hits(scores, slots)
        return _pad(scores, k, -np.inf), _pad(found, k, -1), tail_scores

    def _prepare_queries(self, q: np.ndarray, threads: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The queries as the scans read them, normalised for cosine, centred and rotated (one array per codec of
        `_codecs()`), and what each query adds to its scores: <q, mu>, or -||q - mu||^2 for l2 (_core.prepare_queries).
        ValueError naming the first row with NaN or Inf."""
        out, constant = np.empty_like(q), np.empty(len(q), dtype=np.float32)
        rotation = self._codec.rotation.native if self._tiered is None else None  # tiers rotate per tier
        check_prepared(_core.prepare_queries(q, self._centre(), self.metric, rotation, out, constant, threads))
        return ([out] if rotation is not None else self._tiered.rotate_queries(out, threads)), constant

    def _hits(self, scores: np.ndarray, slots: np.ndarray, constant: np.ndarray | None = None) -> np.ndarray:
        """The ids of store slots (-1 for -1); adds each query's constant to its scores and clamps cosines, in place."""
        found = np.empty_like(slots)
        _core.finish_hits(scores, slots, constant, self._ids, self.metric == "cosine", found)
        return found

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write one versioned, checksummed file atomically (temp + fsync + rename)."""
        with self._lock.read():
            _format.write(path, self._MAGIC, self._VERSION, *self._state())

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, simd: str | None = None) -> CodeIndex:
        """Read a file written by `save`; raises FileFormatError for foreign, truncated or corrupt files. simd: the
        kernel set to search with, as the constructor's (None: the process default)."""
        source = os.fspath(path)
        buffer = _format.read_file(path, mmap)
        _, meta, arrays = _format.unpack(buffer, cls._MAGIC, cls._VERSION, source)
        index = cls._from_state(meta, arrays, source, simd)
        index._file_bytes = len(buffer) if index._mapped is not None else 0
        # The file's buffer stays only while the index reads views of it (a FlatIndex's codes); trimmed with it are
        # the temporaries of the native state (a loaded WordNet HNSWIndex held 4.5 MB of them, 10% of its size)
        del buffer, arrays
        _trim_after(len(index))
        return index

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The file's header fields and arrays (also embedded by MultiVectorIndex)."""
        size = self._store.size
        meta = {"dim": self.dim, "bits": self.bits, "metric": self.metric, "seed": self.seed,
                "rotation": self._codec.rotation.algorithm, "scale": SCALE, "rerank": self.rerank,
                "n": size, "next_id": self._next_id, "center": self.center, "adaptive": self.adaptive,
                "planned": self._planned, **self._settings()}
        extra = {} if self._mean is None else {"mean": self._mean}
        if self._tiered is not None:
            meta["tiers"] = [list(t) for t in self._tiered.plan.tiers]
            extra["basis"] = self._tiered.plan.basis
        return meta, {**self._store_arrays(), "ids": self._ids[:size], "extra": self._rerank_rows[:size], **extra}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], source: str,
                    simd: str | None = None) -> CodeIndex:
        """The index described by `_state`'s output; FileFormatError when it is inconsistent."""
        try:
            index = cls(int(meta["dim"]), int(meta["bits"]), meta["metric"], int(meta["seed"]), meta["rerank"],
                        simd=simd, center=bool(meta.get("center", True)), adaptive=bool(meta.get("adaptive", False)),
                        **cls._settings_from(meta))
            if meta["rotation"] != index._codec.rotation.algorithm or meta["scale"] != SCALE:
                raise FileFormatError(f"{source}: made with rotation {meta['rotation']!r} / scale {meta['scale']!r}, "
                                      "which this version does not read")
            n = int(meta["n"])
            index._restore_plan(meta, arrays)
            index._restore_store(meta, arrays, n)
            index._mean = _stored_mean(arrays, index.dim, n)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, FileFormatError):
                raise
            raise FileFormatError(f"{source}: inconsistent index file ({e})") from None
        ids, rerank_rows = np.array(arrays["ids"], dtype=np.int64), np.array(arrays["extra"])
        live = ids[ids >= 0]
        if (ids.shape != (n,) or rerank_rows.shape != (n, index._rerank_width())
                or len(set(live.tolist())) != len(live)):
            raise FileFormatError(f"{source}: ids or rerank data do not match the stored vectors")
        index._ids, index._next_id = ids, int(meta["next_id"])
        index._rerank_rows = rerank_rows.astype(index._rerank_dtype())
        index._slot_of = IdMap.from_arrays(live, np.flatnonzero(ids >= 0))
        return index

    # ------------------------------------------------------------------ subclass hooks

    def _native_search(self, rotated: list[np.ndarray], k: int, allowed: tuple[np.ndarray, int] | None,
                       scores: np.ndarray, slots: np.ndarray, threads: int, params: SearchParams) -> None:
        """Fill scores/slots (nq, k) with each query's best k live slots (k <= the allowed count); rotated: the
        queries as `_rotate_queries` gives them; allowed: (bitset over slots, number of allowed live slots) or None
        for all."""
        raise NotImplementedError

    def _place(self, centred: np.ndarray, codes: list[Codes], scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Store encoded rows of `centred` (x - mu), one Codes per tier, with their score floats (score = sum over
        tiers of scale * <q', c>, plus offset); returns their slots."""
        raise NotImplementedError

    def _remove_existing(self, ids: np.ndarray) -> None:
        """Delete ids known to be present (int64, distinct; the write lock is held)."""
        raise NotImplementedError

    def _new_store(self) -> None:
        """Replace the (empty) native store by one for `_codecs()` (the constructor's, or a plan's tiers)."""
        raise NotImplementedError

    def _tier_codes(self, slots: np.ndarray) -> list[Codes]:
        """The stored codes of these slots, one Codes per codec of `_codecs()` (`_codes_from`)."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        """Kind-specific header fields written by `save` (e.g. M, ef_search)."""
        return {}

    @classmethod
    def _settings_from(cls, meta: dict[str, Any]) -> dict[str, Any]:
        """Constructor keywords read back from those header fields."""
        return {}

    def _store_reserve(self, n: int) -> None:
        """Make the native store hold room for n vectors in total."""
        raise NotImplementedError

    def _store_arrays(self) -> dict[str, np.ndarray]:
        """The native store's arrays, as written by `save`."""
        raise NotImplementedError

    def _restore_store(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n: int) -> None:
        """Load the native store from `_store_arrays` output read back from a file (n slots)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ internals

    def _vectors(self, x: object) -> np.ndarray:
        """(n, dim) float32 rows as stored (normalised for cosine); NaN/Inf is reported by their encode (a batch read
        once less: ~15% of an add), or by _fix_mean where the first batch fixes the centre or the tiers."""
        v = as_matrix(x, self.dim, "vectors", finite=False)
        if self.metric != "cosine":
            return v
        with np.errstate(invalid="ignore", over="ignore"):  # a row with NaN or Inf stays non-finite, reported later
            return normalized(v)

    def fix_center(self, mean: object) -> None:
        """Code around `mean` (dim floats; zeros: uncentred) instead of the first batch's mean, so indexes that
        must score alike (the shards of one sharded collection) share one centre. Only before the first add."""
        m = as_matrix(np.reshape(mean, (1, -1)), self.dim, "mean")[0]
        with self._lock.write():
            if self._mean is not None and not np.array_equal(self._mean, m):
                raise ConflictError("the index already codes around another centre (fixed by its first add)")
            self._mean = m.copy()

    def _fix_mean(self, vectors: np.ndarray) -> None:
        """Fix the centre on the first add (first_center) unless one is fixed already, then, for an adaptive
        index, the code: the tiers fit_plan finds on that batch, or the uniform code."""
        if self._mean is not None and self._planned:
            return
        with self._lock.write():  # the batch encodes outside the lock: settle mean and code before it does
            if self._mean is None:
                self._mean = first_center(vectors, self.dim, self.center)
            elif not self._planned:
                check_finite(vectors, "vectors")  # the plan is fitted on them
            if not self._planned and not self._store.size:
                plan = fit_plan(vectors, self._mean, self.bits, "l2" if self.metric == "l2" else "ip", self.seed,
                                self._simd, self.threads)
                if plan is not None:
                    self._use_plan(plan)
            self._planned = True

    def _use_plan(self, plan: TierPlan) -> None:
        """Code with the tiers of `plan` from now on (the store is still empty)."""
        self._tiered = TieredCodec(plan, self.seed, self._simd)
        self._new_store()

    def _restore_plan(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The saved plan state (files before adaptive tiers: planned, uniform)."""
        self._planned = bool(meta.get("planned", True))
        if "tiers" in meta:
            plan = TierPlan(np.array(arrays["basis"], dtype=np.float32),
                            tuple((int(a), int(b), int(bits)) for a, b, bits in meta["tiers"]))
            plan.check(self.dim)
            self._use_plan(plan)

    def _codecs(self) -> list[TurboQuantMSE]:
        """The codecs of the stored code, in tier order: the uniform codec alone, or the tiers' codecs."""
        return [self._codec] if self._tiered is None else self._tiered.codecs

    def _centre(self) -> np.ndarray:
        """The mean, zeros before the first add."""
        return np.zeros(self.dim, dtype=np.float32) if self._mean is None else self._mean

    def _encode(self, vectors: np.ndarray) -> tuple[list[Codes], np.ndarray, np.ndarray]:
        centred = vectors - self._centre()
        return self._codes_of(centred), self._rerank_rows_of(vectors), centred

    def _codes_of(self, centred: np.ndarray) -> list[Codes]:
        """The codes of rows x - mu, one Codes per codec of `_codecs()`."""
        if self._tiered is None:
            return [self._codec.encode(centred, self.threads)]
        return self._tiered.encode(centred, self.threads)

    def _rotate_queries(self, centred: np.ndarray, threads: int) -> list[np.ndarray]:
        """Centred queries (checked float32 rows) rotated for each codec of `_codecs()`."""
        if self._tiered is None:
            return [self._codec.rotation.forward_checked(centred, threads)]
        return self._tiered.rotate_queries(centred, threads)

    def _score_floats(self, factor: np.ndarray, sq_norms: np.ndarray,
                      centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's (scale, offset) that turn <q', c> into its score, from its codes' factor(s) ||x - mu|| s
        and its ||x - mu||^2."""
        if self.metric == "l2":  # -||q - x||^2 + ||q - mu||^2 = 2 <q - mu, x - mu> - ||x - mu||^2
            scale, offset = 2 * factor, -sq_norms
        else:  # <q, x> - <q, mu> = <q - mu, x - mu> + <mu, x - mu>
            scale, offset = factor, centred @ self._centre()
        return np.ascontiguousarray(scale, np.float32), np.ascontiguousarray(offset, np.float32)

    def _floats_of(self, codes: list[Codes], centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (scale, offset) of encoded rows: scale (n,) for the uniform code, (n, tiers) for tiers."""
        if self._tiered is None:
            return self._score_floats(codes[0].norms * codes[0].scales, np.square(codes[0].norms), centred)
        factors = np.stack([c.norms * c.scales for c in codes], axis=1)
        return self._score_floats(factors, np.einsum("ij,ij->i", centred, centred), centred)

    def _append(self, vectors: np.ndarray, encoded: tuple[list[Codes], np.ndarray, np.ndarray],
                ids: np.ndarray) -> None:
        codes, rerank_rows, centred = encoded
        slots = self._place(centred, codes, *self._floats_of(codes, centred))
        size = self._store.size
        self._ids = grow(self._ids, size, fill=-1)
        self._ids[slots] = ids
        self._rerank_rows = grow(self._rerank_rows, size)
        self._rerank_rows[slots] = rerank_rows
        self._slot_of.set(ids, slots)
        if len(ids):
            self._next_id = max(self._next_id, int(ids.max()) + 1)

    def _new_ids(self, n: int, ids: object) -> np.ndarray:
        if ids is None:
            return np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        new = as_ids(ids, n)
        taken = new[self._slot_of.get(new) >= 0]
        if len(taken):
            raise ValueError(f"id {taken[0]} is already in the index (use upsert to replace)")
        return new

    def _slots_of(self, ids: np.ndarray) -> np.ndarray:
        slots = self._slot_of.get(ids)
        if (slots < 0).any():
            raise KeyError(f"unknown id {ids[slots < 0][0]}")
        return slots

    def _allowed(self, filter: object) -> tuple[np.ndarray, int] | None:
        """The filter as a bitset over slots (bit set: the slot holds an allowed id) and its population."""
        if filter is None:
            return None
        f = np.asarray(filter)
        stored = self._ids[: self._store.size]
        if f.dtype == bool:
            if f.ndim != 1:
                raise ValueError(f"a boolean filter must be 1-D (indexed by id), got shape {f.shape}")
            words = np.zeros((len(stored) + 63) // 64 + 1, dtype=np.uint64)  # a spare word, as below
            return words, _core.bitset_from_mask(stored, np.ascontiguousarray(f).view(np.uint8), words)
        if f.dtype.kind in "iu" or f.size == 0:
            if f.ndim != 1:
                raise ValueError(f"an id filter must be 1-D, got shape {f.shape}")
            if f.size * 64 <= len(stored):  # a few ids: looked up, O(len(f) log n) (np.isin took ~250 us on 116k)
                slots = self._slot_of.get(f.astype(np.int64))
                return _bitset(np.sort(slots[slots >= 0]), len(stored))
            ok = np.isin(stored, f.astype(np.int64)) & (stored >= 0)
        else:
            raise TypeError(f"filter must be a boolean mask or an array of ids, got dtype {f.dtype}")
        words = np.packbits(ok, bitorder="little")
        return np.frombuffer(words.tobytes() + bytes(-len(words) % 8 + 8), dtype=np.uint64), int(ok.sum())

    def _rescore(self, rescore: int | None) -> int:
        """Candidates per result to re-score on the rerank tier (0: rank by the codes alone)."""
        if self.rerank is None:
            if rescore:
                raise ValueError("rescore needs an index built with rerank='fp16' or rerank=8")
            return 0
        if rescore is None:  # measured on WordNet: recall@10 >= 0.99 (4 bits: 1.000 at 2, 2 bits: 0.9997 at 5)
            return 1 + 2 ** max(0, 4 - self.bits) if self.bits < 4 else 2
        return rescore

    def _rerank_width(self) -> int:
        if self.rerank == "fp16":
            return self.dim
        if self.rerank == 8:
            return self._rerank_codec.row_bytes + 8
        return 0

    def _rerank_dtype(self) -> type:
        return np.float16 if self.rerank == "fp16" else np.uint8

    def _rerank_rows_of(self, vectors: np.ndarray) -> np.ndarray:
        """The rerank tier's rows for new vectors: fp16 copies, or 8-bit codes with their two floats."""
        if self.rerank == "fp16":
            return vectors.astype(np.float16)
        if self.rerank == 8:
            c = self._rerank_codec.encode(vectors, self.threads)
            floats = np.stack([c.norms, c.scales], axis=1).view(np.uint8)
            return np.concatenate([c.packed, floats], axis=1)
        return np.empty((len(vectors), 0), dtype=np.uint8)

    def _rerank_vectors(self, slots: np.ndarray) -> np.ndarray:
        """The rerank tier's vectors for the given slots, as float32 (fp16 copies or 8-bit decodes)."""
        rows = self._rerank_rows[slots]
        if self.rerank == "fp16":
            return rows.astype(np.float32)
        width = self._rerank_codec.row_bytes
        floats = np.ascontiguousarray(rows[:, width:]).view(np.float32)
        codes = Codes("mse", self.dim, 8, self.seed, self._rerank_codec.rotation.algorithm, "lsq",
                      np.ascontiguousarray(rows[:, :width]), np.ascontiguousarray(floats[:, 0]),
                      np.ascontiguousarray(floats[:, 1]))
        return self._rerank_codec.decode(codes)

    def _rerank_top(self, q: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_top(q, slots, self._rerank_vectors, k, l2=self.metric == "l2")


TRIM_ROWS = 1024  # batches at least this large hand the C heap's free pages back to the OS afterwards


def _trim_after(rows: int) -> None:
    """After a large batch: return the heap pages its freed temporaries held (glibc keeps them when
    long-lived arrays sit above them), so the process's RSS tracks `memory_usage`."""
    if rows >= TRIM_ROWS:
        _core.trim_heap()


BLOCK_FLOATS = 1 << 24  # exact_top gathers candidate vectors in blocks of about this many floats (64 MiB)


def exact_top(q: np.ndarray, ids: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray], k: int,
              l2: bool) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each query's candidates `ids` (nq, c; -1 padding) by exact scores of their vectors,
    `vectors_of(flat_ids)` -> (len, dim): inner product, or negative squared L2; ties go to the smaller id;
    -1 / -inf padding. Queries are taken a block at a time so the gathered vectors stay bounded."""
    rows = max(1, BLOCK_FLOATS // max(1, ids.shape[1] * q.shape[1]))
    exact = np.empty(ids.shape, dtype=np.float32)
    for i in range(0, len(q), rows):
        block = ids[i : i + rows]
        x = vectors_of(np.maximum(block, 0).ravel()).reshape(*block.shape, q.shape[1])
        qb = q[i : i + rows, None, :]
        exact[i : i + rows] = -np.sum(np.square(x - qb), axis=2) if l2 else np.einsum("qcd,qd->qc", x, qb[:, 0])
    return top_k(np.where(ids >= 0, exact, -np.inf).astype(np.float32), ids, k)


def exact_scores(q: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """Exact `metric` scores (float32) of one query (dim,) against rows (n, dim), computed as a collection
    re-ranks (csrc/exact.h: the same float32 sums), so a shard's exact scores equal a collection's bit for bit."""
    out = np.empty(len(rows), dtype=np.float32)
    _core.exact_scores(metric, np.ascontiguousarray(q, dtype=np.float32), np.ascontiguousarray(rows, dtype=np.float32),
                       out)
    return out


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each row's (score, id) pairs, best first, ties to the smaller id; -inf scores get id -1."""
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    top = np.take_along_axis(scores, order, 1)
    return top, np.where(np.isfinite(top), np.take_along_axis(ids, order, 1), -1)


def _bitset(slots: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """A filter bitset over n slots (one spare word, as every filter has) with the given slots (ascending, repeats
    allowed) set, and how many distinct slots that is."""
    words = np.zeros((n + 63) // 64 + 1, dtype=np.uint64)
    np.bitwise_or.at(words, slots >> 6, np.left_shift(np.uint64(1), (slots & 63).astype(np.uint64)))
    return words, len(slots) - int(np.count_nonzero(slots[1:] == slots[:-1]))


def check_prepared(bad: int) -> None:
    """ValueError naming the first query row with NaN or Inf, as the native query preparation reports it (-1: none)."""
    if bad >= 0:
        raise ValueError(f"queries contains NaN or Inf (first at row {bad})")


def _pad(arr: np.ndarray, k: int, fill: float) -> np.ndarray:
    """`arr` (nq, c) cut or padded with `fill` to k columns."""
    if arr.shape[1] >= k:
        return arr[:, :k]
    out = np.full((len(arr), k), fill, dtype=arr.dtype)
    out[:, : arr.shape[1]] = arr
    return out


def first_center(vectors: np.ndarray, dim: int, center: bool = True) -> np.ndarray:
    """The centre an index fixes from its first batch (rows as stored: normalised for cosine): their mean when
    centring is on and there are at least CENTRE_MIN_ROWS of them, else zeros (uncentred). ValueError naming the
    first row with NaN or Inf, if any: nothing is fixed from a bad batch."""
    if center and len(vectors) >= CENTRE_MIN_ROWS:
        return centre_of(vectors, dim)
    check_finite(vectors, "vectors")
    return np.zeros(dim, dtype=np.float32)


def _stored_mean(arrays: dict[str, np.ndarray], dim: int, n: int) -> np.ndarray | None:
    """The saved centre; files without one (version 1) hold uncentred codes: zeros, or None while empty."""
    if "mean" not in arrays:
        return np.zeros(dim, dtype=np.float32) if n else None
    mean = np.array(arrays["mean"], dtype=np.float32)
    if mean.shape != (dim,) or not np.isfinite(mean).all():
        raise ValueError(f"mean has shape {mean.shape} or is not finite")
    return mean


def model_queries(model: relevance.RelevanceModel, q: np.ndarray, metric: str) -> np.ndarray | None:
    """The queries as a relevance model reads them (normalised for cosine, as indexes score them), or None
    when it reads none."""
    if model.query_weights is None:
        return None
    return normalized(q) if metric == "cosine" else q


def normalized(x: np.ndarray) -> np.ndarray:
    """Rows divided by their norms (zero rows kept), float32: np.linalg.norm's arithmetic, without its overhead."""
    norms = np.sqrt(np.add.reduce(x * x, axis=1, keepdims=True))
    return (x / np.where(norms > 0, norms, 1)).astype(np.float32, copy=False)


def grow(arr: np.ndarray, size: int, fill: int = 0, exact: bool = False) -> np.ndarray:
    """`arr` with room for `size` rows; new rows = fill. The capacity grows by 1.25x (at least 16 rows), so
    appends stay amortised O(1) with at most 25% slack, or to exactly `size` rows when `exact`."""
    if len(arr) >= size:
        return arr
    rows = size if exact else max(size, len(arr) + len(arr) // 4, len(arr) + 16)
    out = np.full((rows, *arr.shape[1:]), fill, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out
