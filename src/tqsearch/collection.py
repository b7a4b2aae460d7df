"""Collection: a directory-backed, crash-safe store of string-keyed points (vector, metadata, document).

Directory layout (generation g names one consistent state; docs/format.md has the details):
    settings.json       dim, bits, metric, index kind and options, what vectors are kept; written once
    manifest.json       {"generation": g, "snapshot": bool}; rewritten atomically, the commit point
    index.<g>.tqs       the index over the codes (its own `save` format)   } the snapshot, absent at g = 0
    points.<g>.tqc      per internal id: live, id hash, record place, payload columns (_format)   } before
    wal.<g>.log         every upsert/delete acknowledged since that snapshot (_wal)                } compaction
    records.<a>.dat     append-only JSON records [id, metadata, document] (_points), read on demand
    vectors.dat         the original vectors by internal id (float32/float16), read (pread) for re-ranking
    lock                held (flock) while a process has the collection open
    relevance.json      the fitted relevance model, when one was set (`set_relevance`); absent: unsupervised
In memory: the index (codes, graph, ids), the payload columns (_filters) and the compact arrays of
_points (about 21 bytes a point): metadata, documents and original vectors stay on disk.
Opening loads the manifest's snapshot, replays its log and deletes files no generation refers to.
`compact` syncs the records and vectors files, writes generation g + 1 and switches the manifest last,
so a crash at any point leaves either the old or the new generation complete, and both hold every
acknowledged write (replaying a log rewrites the same records and vector rows).

String ids map to int64 internal ids (reused after deletes); the log records the internal ids so a
replay rebuilds the very same mapping.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from . import _format, _kinds, _validate, _wal, relevance
from ._filters import PayloadIndex
from ._index import CodeIndex, _trim_after, model_queries
from ._points import VECTOR_KINDS, VECTORS_FILE, PointStore, records_file
from ._rwlock import ReadWriteLock
from ._validate import bad_row
from .errors import (ClosedError, ConflictError, FileFormatError, InvalidArgumentError, InvalidTypeError,
                     NotFoundError, TQSearchError)

__all__ = ["Collection", "open_collection"]

SETTINGS, MANIFEST, LOCK, RELEVANCE = "settings.json", "manifest.json", "lock", "relevance.json"
FORMAT, VERSION = "tqsearch-collection", 2  # version 1 (everything in memory) is read and converted
INCLUDE = ("metadatas", "documents", "vectors")
RESCORE = 4  # query: candidates per result taken from the codes and re-ranked exactly on the stored vectors
_POINTS_MAGIC, _LEGACY_POINTS_MAGIC = b"TQCOLL02", b"TQCOLL01"
_GENERATION_FILE = re.compile(r"^(index|points|wal)\.(\d+)\.(tqs|tqc|log)$")
_RECORDS_FILE = re.compile(r"^records\.(\d+)\.dat$")
_UNSET: Any = object()


def open_collection(path: str | os.PathLike, dim: int | None = None, bits: int | None = None,
                    metric: str | None = None, index: str | None = None, *, vectors: str | None = _UNSET,
                    wal_bytes: int = 64 << 20, **index_options: Any) -> Collection:
    """Open the collection in directory `path`, creating it (dim required) when it does not exist.

    New collections default to bits=4, metric="cosine", index="hnsw", vectors="float32"; index_options
    (seed, M, ef_search, rerank, ...) go to the index. vectors: what is kept on disk for exact re-ranking
    and `get`: "float32" (as given), "float16" (half the disk) or None (nothing: queries rank by the codes).
    On reopen, any setting given must match the stored one.
    wal_bytes: compact automatically once the log grows past this many bytes.
    """
    root = Path(path)
    given = {"dim": dim, "bits": bits, "metric": metric, "index": index, "vectors": vectors,
             "index_options": index_options}
    if (root / SETTINGS).exists():
        settings = _read_settings(root)
        _check_same(settings, given, root)
    else:
        settings = _create(root, given)
    return Collection(root, settings, as_int(wal_bytes, "wal_bytes"))


class Collection:
    """Points keyed by string id, each a vector, a JSON metadata dict and an optional document.

    Every `upsert`/`delete` is on disk (write-ahead log, fsynced) before it returns. Safe to share
    between threads: queries and gets run at once, writes and compaction one at a time, excluding reads
    (_rwlock.py); one process at a time may open a directory. Use `open_collection` to make one; close
    it (or use `with`) to release the directory.
    """

    def __init__(self, root: Path, settings: dict[str, Any], wal_bytes: int) -> None:
        self.path, self.settings, self.wal_bytes = root, settings, wal_bytes
        self.dim = int(settings["dim"])
        self.vectors: str | None = settings["vectors"]
        self._lock = ReadWriteLock()
        self._lock_fd = _lock(root)
        self._log: _wal.Log | None = None
        try:
            self._load()
            self._relevance = read_relevance(root, self.dim)
        except BaseException:
            if self._log is not None:
                self._log.close()
            os.close(self._lock_fd)
            raise

    # ------------------------------------------------------------------ writes

    def upsert(self, ids: Sequence[str], vectors: object, metadatas: Sequence[dict] | None = None,
               documents: Sequence[str | None] | None = None) -> None:
        """Insert points, or replace them whole (vector, metadata and document) when the id exists."""
        with self._lock.write():
            self._check_open()
            sids = _as_str_ids(ids, "ids")
            vecs = _as_vectors(vectors, self.dim, len(sids))
            metas = _as_metadatas(metadatas, len(sids))
            docs = _as_documents(documents, len(sids))
            iids = self._assign(sids)
            header = {"op": "upsert", "ids": sids, "iids": iids, "metadatas": metas, "documents": docs}
            self._commit(_wal.encode(header, vecs.tobytes()), header, vecs)

    def delete(self, ids: Sequence[str]) -> None:
        """Remove points by id; NotFoundError (a KeyError) naming an unknown id, and nothing is removed."""
        with self._lock.write():
            self._check_open()
            sids = _as_str_ids(ids, "ids")
            self._iids_of(sids)
            header = {"op": "delete", "ids": sids}
            self._commit(_wal.encode(header), header, None)

    def compact(self) -> None:
        """Write a full snapshot as the next generation, then start an empty log (crash-safe at any point).

        The records file is rewritten without garbage once dead records outweigh live ones.
        """
        with self._lock.write():
            self._check_open()
            gen = self._generation + 1
            if self._points.garbage_share() > 0.5:
                self._points.rewrite_records(gen)
            self._points.sync()
            self._index.save(self.path / f"index.{gen}.tqs")
            _format.write(self.path / f"points.{gen}.tqc", _POINTS_MAGIC, 1, *self._points_state())
            _wal.create(self.path / f"wal.{gen}.log")
            _write_json(self.path / MANIFEST, {"version": VERSION, "generation": gen, "snapshot": True})
            self._log.close()
            self._generation, self._log = gen, _wal.Log(self.path / f"wal.{gen}.log")
            _remove_stale(self.path, gen, self._points.arena, self.vectors is not None)

    def fix_center(self, mean: object) -> None:
        """Code every point around `mean` (dim floats) instead of the first batch's mean, kept in settings.json:
        collections that must score alike (the shards of one sharded collection) share one centre. Only while
        no point was ever added (ConflictError after, unless it is the same centre)."""
        with self._lock.write():
            self._check_open()
            self._index.fix_center(mean)  # checks the mean, and that no other centre is fixed
            self.settings = {**self.settings, "center": self._index.mean.tolist()}
            _write_json(self.path / SETTINGS, self.settings)

    def set_relevance(self, model: relevance.RelevanceModel | None) -> None:
        """Use `model` (relevance.fit) for min_relevance from now on, kept in relevance.json across reopens;
        None goes back to the unsupervised default."""
        check_relevance_model(model, self.dim)
        with self._lock.write():
            self._check_open()
            self._relevance = store_relevance(self.path, model)

    @property
    def relevance_model(self) -> relevance.RelevanceModel:
        """The model min_relevance reads: the one set, or the unsupervised default."""
        return self._relevance

    def close(self, compact: bool = False) -> None:
        """Release the directory; every acknowledged write is already durable. Idempotent.

        compact=True first folds a non-empty log into a snapshot, so the next open replays nothing.
        """
        with self._lock.write():
            if self._log is not None:
                if compact and self._log.size > len(_wal.MAGIC):
                    self.compact()
                self._log.close()
                self._points.close()
                os.close(self._lock_fd)
                self._log = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def count(self) -> int:
        """Number of points."""
        return self._points.count()

    def __len__(self) -> int:
        return self._points.count()

    def __contains__(self, id_: object) -> bool:
        with self._lock.read():
            return isinstance(id_, str) and self._log is not None and self._points.lookup([id_])[0] >= 0

    def memory_usage(self) -> dict[str, int]:
        """Bytes held in memory: the index, the payload columns and the point arrays (files not counted)."""
        with self._lock.read():
            return {"index": sum(self._index.memory_usage().values()), "payload": self._payload.nbytes(),
                    "points": self._points.nbytes()}

    def get(self, ids: Sequence[str] | None = None, where: dict | None = None,
            include: Sequence[str] = ("metadatas", "documents"), limit: int | None = None,
            offset: int = 0) -> dict[str, Any]:
        """Points by id (in the order given; NotFoundError, a KeyError, for an unknown id) and/or matching `where`.

        Returns {"ids": [...], plus "metadatas"/"documents" lists and "vectors" (n, dim) float32 as included}.
        Without ids, points come in internal-id order. limit/offset page through the matches (as the
        server's /points/get): the matches offset .. offset + limit - 1, all from offset when limit is None.
        "vectors" needs a collection that keeps them (vectors="float16" returns them rounded to float16).
        """
        with self._lock.read():
            self._check_open()
            fields = _as_include(include)
            offset = as_int(offset, "offset", low=0)
            end = None if limit is None else offset + as_int(limit, "limit", low=0)
            live = self._points.live[: self._points.size]
            mask = live if where is None else self._payload.evaluate(where, live)
            if ids is None:
                iids = np.flatnonzero(mask)
            else:
                iids = np.array(self._iids_of(_as_str_ids(ids, "ids")), dtype=np.int64)
                iids = iids[mask[iids]]
            return self._rows(iids[offset:end].tolist(), fields)

    def query(self, queries: object, k: int, where: dict | None = None,
              include: Sequence[str] = ("metadatas", "documents"), rescore: int | None = None,
              min_relevance: float | None = None) -> list[dict[str, Any]]:
        """The k best points per query row, among those matching `where` (filtered inside the search).

        rescore: take k * rescore candidates from the compressed index and rank them by their exact scores
        on the stored vectors (recall beyond what the codes alone give, for a few dot products); 0 ranks by
        the codes' estimates alone. Default: 4 when the collection keeps vectors, else 0.
        Returns one dict per query: {"ids", "scores", plus the included fields}, best first; shorter than k
        only when fewer than k points match.
        min_relevance: in [0, 1]; keep only hits whose calibrated relevance (`relevance_model`) is at least
        this, and add "relevance" (one per hit) to each result (0: the top k; 1: none).
        """
        with self._lock.read():
            self._check_open()
            q = as_matrix(queries, self.dim, "queries")
            k = as_int(k, "k")
            rescore = self._rescore(rescore)
            fields = _as_include(include)
            allowed = None if where is None else self._payload.evaluate(where, self._points.live[: self._points.size])
            n_allowed = self._points.count() if allowed is None else int(np.count_nonzero(allowed))
            wanted = max(1, min(k * max(rescore, 1), n_allowed))  # never more than can match
            p = None if min_relevance is None else as_min_relevance(min_relevance)
            tail = 0 if p is None else self._relevance.tail
            scores, found, tail_scores = self._index.search_checked(q, max(wanted, tail), allowed, tail=tail)
            if rescore:
                scores, found = self._exact_top(q, found[:, :wanted], k)
            scores, found, rel = scores[:, :k], found[:, :k], None
            if p is not None:
                model_q = model_queries(self._relevance, q, self.settings["metric"])
                scores, found, rel = self._relevance.filter(scores, found, tail_scores, model_q, p)
            results = []
            for i, (row_scores, row_ids) in enumerate(zip(scores, found)):
                keep = row_ids >= 0
                result = self._rows(row_ids[keep].tolist(), fields)
                result["scores"] = row_scores[keep].tolist()
                if rel is not None:
                    result["relevance"] = rel[i][keep].tolist()
                results.append(result)
            return results

    def __repr__(self) -> str:
        s = self.settings
        return (f"Collection({str(self.path)!r}, dim={self.dim}, bits={s['bits']}, metric={s['metric']!r}, "
                f"index={s['index']!r}, vectors={self.vectors!r}, n={self.count()})")

    # ------------------------------------------------------------------ internals

    def _load(self) -> None:
        """Read the manifest's generation (finishing an interrupted creation), then replay its log."""
        self._index = _make_index(self.settings)
        self._payload = PayloadIndex()
        manifest = self._read_manifest()
        self._generation = gen = int(manifest["generation"])
        legacy = self.settings["version"] == 1
        if manifest["snapshot"] and not legacy:
            self._load_snapshot(gen)
        else:
            self._points = PointStore(self.path, self.dim, self.vectors)
            self._points.reset()
            if manifest["snapshot"]:
                self._load_legacy_snapshot(gen)
        _remove_stale(self.path, gen, self._points.arena, self.vectors is not None)
        log_path = self.path / f"wal.{gen}.log"
        replayed = self._replay(log_path)
        # what reading the snapshot and the log left in the heap is freed by now: its pages go back (an open of
        # 100,000 logged points of 128 dims grew RSS by 177 MB, where memory_usage() says 14)
        _trim_after(self._points.count() + replayed)
        self._log = _wal.Log(log_path)
        if legacy:  # convert a version-1 directory: a version-2 snapshot first, then the settings
            self.compact()
            self.settings = {**self.settings, "version": VERSION}
            _write_json(self.path / SETTINGS, self.settings)

    def _replay(self, log_path: Path) -> int:
        """Apply the log's records; returns how many points they named."""
        named = 0
        for header, blob in _wal.replay(log_path):
            self._apply(header, _record_vectors(header, blob, self.dim, log_path))
            named += len(header["ids"])
        return named

    def _read_manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST
        if not path.exists():  # creation stopped before its last step: nothing was acknowledged yet
            _wal.create(self.path / "wal.0.log")
            _write_json(path, {"version": VERSION, "generation": 0, "snapshot": False})
        manifest = _read_json(path)
        if manifest.get("version") not in (1, VERSION) or not isinstance(manifest.get("generation"), int):
            raise FileFormatError(f"{path}: unsupported or malformed manifest {manifest!r}")
        return manifest

    def _load_snapshot(self, gen: int) -> None:
        index_path, points_path = self.path / f"index.{gen}.tqs", self.path / f"points.{gen}.tqc"
        self._index = _kinds.index_class(self.settings["index"]).load(index_path, mmap=False)
        _, meta, arrays = _format.unpack(_format.read_file(points_path, True), _POINTS_MAGIC, 1, str(points_path))
        try:
            arena = int(meta["points"]["arena"])
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"{points_path}: inconsistent points file ({e})") from None
        if not (self.path / records_file(arena)).exists():
            raise FileFormatError(f"{points_path}: its records file {records_file(arena)} is missing")
        self._points = PointStore(self.path, self.dim, self.vectors, arena)
        self._points.attach(meta["points"], arrays, str(points_path))
        try:
            self._payload = PayloadIndex.from_arrays(list(meta["fields"]), arrays, self._points.size)
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"{points_path}: inconsistent payload columns ({e})") from None
        if self._points.count() != len(self._index):
            raise FileFormatError(f"{points_path}: point count does not match {index_path.name}")

    def _load_legacy_snapshot(self, gen: int) -> None:
        """Read a version-1 snapshot (everything in one points file) into the store."""
        index_path, points_path = self.path / f"index.{gen}.tqs", self.path / f"points.{gen}.tqc"
        self._index = _kinds.index_class(self.settings["index"]).load(index_path, mmap=False)
        _, meta, arrays = _format.unpack(points_path.read_bytes(), _LEGACY_POINTS_MAGIC, 1, str(points_path))
        try:
            sids, iids, metas, docs = meta["ids"], meta["iids"], meta["metadatas"], meta["documents"]
            vectors = np.asarray(arrays["vectors"]).reshape(len(sids), self.dim)
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"{points_path}: inconsistent points file ({e})") from None
        if not len(sids) == len(iids) == len(metas) == len(docs) == len(self._index):
            raise FileFormatError(f"{points_path}: point count does not match {index_path.name}")
        self._store(iids, sids, metas, docs, vectors)

    def _points_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The points file of a snapshot: the store's arrays and the payload columns."""
        meta, arrays = self._points.arrays()
        fields, columns = self._payload.arrays(self._points.size)
        return {"points": meta, "fields": fields}, {**arrays, **columns}

    def _assign(self, sids: list[str]) -> list[int]:
        """Internal ids for a batch: an existing point keeps its own; new ones reuse freed ids first."""
        found = self._points.lookup(sids)
        fresh = iter(self._points.free_iids(int((found < 0).sum())))
        return [int(i) if i >= 0 else next(fresh) for i in found]

    def _commit(self, record: bytes, header: dict[str, Any], vecs: np.ndarray | None) -> None:
        """Log the record durably, then apply it; undo the log entry if applying fails."""
        before = self._log.size
        self._log.append(record)
        try:
            self._apply(header, vecs)
        except BaseException:
            self._log.undo_to(before)
            raise
        if self._log.size > self.wal_bytes:
            self.compact()

    def _apply(self, header: dict[str, Any], vecs: np.ndarray | None) -> None:
        """Apply one logged operation to the index, the store and the payload columns (live and on replay)."""
        if header["op"] == "upsert":
            iids = header["iids"]
            self._index.upsert(vecs, np.array(iids, dtype=np.int64))
            self._store(iids, header["ids"], header["metadatas"], header["documents"], vecs)
        elif header["op"] == "delete":
            iids = self._iids_of(header["ids"])
            self._index.remove(np.array(iids, dtype=np.int64))
            self._points.remove(iids)
            for iid in iids:
                self._payload.clear(iid)
        else:
            raise FileFormatError(f"unknown log operation {header['op']!r}")

    def _store(self, iids: list[int], sids: list[str], metas: list[dict], docs: list[str | None],
               vecs: np.ndarray) -> None:
        """Put points into the store and the payload columns (the index already holds them)."""
        self._points.put(list(iids), list(sids), metas, docs, vecs)
        for iid, md in zip(iids, metas):
            self._payload.set(iid, md)

    def _iids_of(self, sids: list[str]) -> list[int]:
        iids = self._points.lookup(sids)
        if (iids < 0).any():
            missing = [s for s, i in zip(sids, iids) if i < 0]
            raise NotFoundError(f"unknown id {missing[0]!r} ({len(missing)} of {len(sids)} ids not in the collection)")
        return iids.tolist()

    def _rows(self, iids: list[int], fields: tuple[str, ...]) -> dict[str, Any]:
        """The ids and included fields of the given points (records read from disk, fresh objects)."""
        records = self._points.records(iids)
        out: dict[str, Any] = {"ids": [r[0] for r in records]}
        if "metadatas" in fields:
            out["metadatas"] = [r[1] for r in records]
        if "documents" in fields:
            out["documents"] = [r[2] for r in records]
        if "vectors" in fields:
            out["vectors"] = self._points.vectors(np.array(iids, dtype=np.int64))
        return out

    def _rescore(self, rescore: int | None) -> int:
        """The candidates per result to re-rank exactly (0 when no vectors are kept and none was asked)."""
        if rescore is None:
            return RESCORE if self.vectors is not None else 0
        rescore = as_int(rescore, "rescore", low=0)
        if rescore and self.vectors is None:
            raise InvalidArgumentError("rescore needs stored vectors; this collection was created with vectors=None")
        return rescore

    def _exact_top(self, q: np.ndarray, found: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-rank each row's candidates (internal ids, -1 padding) by exact metric scores; the best k."""
        return self._points.exact_top(q, found, k, self.settings["metric"])

    def _check_open(self) -> None:
        if self._log is None:
            raise ClosedError(f"collection {str(self.path)!r} is closed")


# ---------------------------------------------------------------------- settings and files

def _create(root: Path, given: dict[str, Any]) -> dict[str, Any]:
    """Validate new settings (by building the index once) and write settings.json into a new directory."""
    if given["dim"] is None:
        raise InvalidArgumentError(f"{root} holds no collection: pass dim to create one")
    if root.exists() and any(root.iterdir()):
        raise InvalidArgumentError(f"{root} is not empty and holds no collection ({SETTINGS} is missing)")
    settings = new_settings(given)
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / SETTINGS, settings)
    return settings


def new_settings(given: dict[str, Any]) -> dict[str, Any]:
    """The settings of a new collection from those given (defaults filled in), validated by building the
    index once; also what a sharded collection gives each of its shards (tqsearch.distributed)."""
    vectors = "float32" if given["vectors"] is _UNSET else given["vectors"]
    if vectors is not None:
        vectors = as_choice(vectors, "vectors", VECTOR_KINDS)
    settings = {"format": FORMAT, "version": VERSION, "dim": as_dim(given["dim"]),
                "bits": 4 if given["bits"] is None else given["bits"],
                "metric": "cosine" if given["metric"] is None else given["metric"],
                "index": as_choice("hnsw" if given["index"] is None else given["index"], "index",
                                   _kinds.vector_kinds()),
                "vectors": vectors, "index_options": given["index_options"]}
    with _callers_input():  # the index checks bits, metric and the options
        _make_index(settings)
    try:
        json.dumps(settings, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidTypeError(f"index options must be JSON values ({e})") from None
    return settings


def _make_index(settings: dict[str, Any]) -> CodeIndex:
    index = _kinds.index_class(settings["index"])(settings["dim"], settings["bits"], settings["metric"],
                                                   **settings["index_options"])
    if settings.get("center") is not None:  # fixed by fix_center (a shard of a sharded collection)
        index.fix_center(np.asarray(settings["center"], dtype=np.float32))
    return index


def _check_same(settings: dict[str, Any], given: dict[str, Any], root: Path) -> None:
    """InvalidArgumentError when a setting passed to open differs from the stored one."""
    for name in ("dim", "bits", "metric", "index", "vectors"):
        if given[name] not in (None, _UNSET) and given[name] != settings[name]:
            raise InvalidArgumentError(f"{root}: {name}={given[name]!r} does not match the collection's {name}="
                                       f"{settings[name]!r} (omit it to use the stored value)")
    stored = settings["index_options"]
    for name, value in given["index_options"].items():
        if stored.get(name) != value:
            raise InvalidArgumentError(f"{root}: {name}={value!r} does not match the collection's "
                                       f"{name}={stored.get(name)!r}")


def _read_settings(root: Path) -> dict[str, Any]:
    path = root / SETTINGS
    settings = _read_json(path)
    if settings.get("format") != FORMAT or settings.get("version") not in (1, VERSION):
        raise FileFormatError(f"{path}: not a version-{VERSION} tqsearch collection")
    if settings["version"] == 1:  # kept every vector as float32
        settings["vectors"] = "float32"
    if (settings.get("index") not in _kinds.vector_kinds() or not isinstance(settings.get("index_options"), dict)
            or settings.get("vectors") not in (None, *VECTOR_KINDS) or not _is_center(settings)):
        raise FileFormatError(f"{path}: malformed settings {settings!r}")
    return settings


def _is_center(settings: dict[str, Any]) -> bool:
    """Whether the settings' centre (fix_center), if any, is dim finite numbers."""
    center = settings.get("center")
    if center is None:
        return True
    ok = isinstance(center, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in center)
    return ok and len(center) == settings.get("dim") and bool(np.isfinite(center).all())


def check_relevance_model(model: object, dim: int) -> None:
    """What set_relevance accepts: a RelevanceModel reading queries of `dim` (if it reads them), or None."""
    if model is not None and not isinstance(model, relevance.RelevanceModel):
        raise InvalidTypeError(f"model must be a RelevanceModel or None, got {type(model).__name__}")
    if model is not None and (why := _model_dim_error(model, dim)):
        raise InvalidArgumentError(why)


def store_relevance(root: Path, model: relevance.RelevanceModel | None) -> relevance.RelevanceModel:
    """Keep `model` in root/relevance.json (written atomically; None removes it); returns the model in use."""
    path = root / RELEVANCE
    if model is None:
        path.unlink(missing_ok=True)
        _format.fsync_dir(root)
    else:
        _write_json(path, model.to_dict())
    return model or relevance.DEFAULT


def read_relevance(root: Path, dim: int) -> relevance.RelevanceModel:
    """The relevance model kept in root/relevance.json (for queries of `dim`), or the unsupervised default when
    there is none."""
    path = root / RELEVANCE
    if not path.exists():
        return relevance.DEFAULT
    stored = _read_json(path)
    try:
        model = relevance.RelevanceModel.from_dict(stored)
    except ValueError as e:
        raise FileFormatError(f"{path}: {e}") from None
    if why := _model_dim_error(model, dim):
        raise FileFormatError(f"{path}: {why}")
    return model


def _model_dim_error(model: relevance.RelevanceModel, dim: int) -> str | None:
    """Why `model` cannot read this collection's queries of `dim` (its query weights are of another), or None."""
    if model.query_weights is None or len(model.query_weights) == dim:
        return None
    return f"the relevance model reads queries of dim {len(model.query_weights)}, the collection's are {dim}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except ValueError as e:
        raise FileFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{path}: expected a JSON object")
    return value


def _write_json(path: Path, value: dict[str, Any]) -> None:
    _format.write_atomic(path, json.dumps(value, indent=1).encode())


def _remove_stale(root: Path, generation: int, arena: int, vectors: bool) -> None:
    """Delete files no live state refers to: other generations' snapshots and logs, other records files,
    a vectors file the collection does not keep, and leftover temp files (after a crash or compaction)."""
    for entry in root.iterdir():
        snapshot, records = _GENERATION_FILE.match(entry.name), _RECORDS_FILE.match(entry.name)
        stale = ((snapshot and int(snapshot[2]) != generation) or (records and int(records[1]) != arena)
                 or (entry.name == VECTORS_FILE and not vectors)
                 or (entry.name.startswith(".") and entry.name.endswith(".tmp")))
        if stale:
            entry.unlink()
    _format.fsync_dir(root)


def _lock(root: Path) -> int:
    """Hold an exclusive lock on the directory for this process's lifetime of the collection (POSIX flock)."""
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConflictError(f"collection {str(root)!r} is already open (in this or another process)") from None
    return fd


# ---------------------------------------------------------------------- validation

class _CallersInput(contextlib.ContextDecorator):
    """Re-raise ValueError/TypeError from checking the caller's input as InvalidArgumentError/InvalidTypeError.

    A class rather than a generator: as a decorator it wraps every query's checks, and re-entering a
    generator-based context manager costs a few microseconds each time."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, tb: object) -> bool:
        if kind is None or issubclass(kind, TQSearchError):
            return False
        if issubclass(kind, TypeError):
            raise InvalidTypeError(str(error)) from error
        if issubclass(kind, ValueError):
            raise InvalidArgumentError(str(error)) from error
        return False


def _callers_input() -> _CallersInput:
    """A context (or decorator) turning the builtin errors of input checks into typed ones (_CallersInput)."""
    return _CallersInput()


# the shared checks (_validate), raising typed errors: here the values they check are always the caller's
as_choice = _callers_input()(_validate.as_choice)
as_dim = _callers_input()(_validate.as_dim)
as_int = _callers_input()(_validate.as_int)
as_matrix = _callers_input()(_validate.as_matrix)
as_min_relevance = _callers_input()(relevance.as_min_relevance)


def _as_str_ids(ids: object, name: str) -> list[str]:
    """A list of distinct string ids."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InvalidTypeError(f"{name} must be a list of strings, got {type(ids).__name__}")
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise InvalidTypeError(f"{name} must be strings, got {bad[0]!r}")
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError(f"{name} contain duplicates")
    return list(ids)


def _as_vectors(vectors: object, dim: int, n: int) -> np.ndarray:
    """(n, dim) finite float32 vectors whose squared norms fit in float32 (what the encoder accepts)."""
    vecs = as_matrix(vectors, dim, "vectors")
    if len(vecs) != n:
        raise InvalidArgumentError(f"vectors has {len(vecs)} rows for {n} ids")
    with np.errstate(over="ignore"):
        norms = np.einsum("ij,ij->i", vecs, vecs)
    if not np.isfinite(norms).all():
        raise InvalidArgumentError(str(bad_row(vecs, int(np.flatnonzero(~np.isfinite(norms))[0]), "vectors")))
    return vecs


def _as_metadatas(metadatas: object, n: int) -> list[dict[str, Any]]:
    """One JSON-serialisable dict with str keys per point ({} when None); copied, so later edits don't leak."""
    if metadatas is None:
        return [{} for _ in range(n)]
    if not isinstance(metadatas, Sequence) or len(metadatas) != n:
        raise InvalidArgumentError(f"metadatas must be a list of {n} dicts (one per id)")
    out = []
    for i, md in enumerate(metadatas):
        if not isinstance(md, dict) or not all(isinstance(key, str) for key in md):
            raise InvalidTypeError(f"metadatas[{i}] must be a dict with string keys, got {md!r}")
        try:
            out.append(json.loads(json.dumps(md, allow_nan=False)))
        except (TypeError, ValueError) as e:
            raise InvalidTypeError(f"metadatas[{i}] is not JSON-serialisable ({e})") from None
    return out


def _as_documents(documents: object, n: int) -> list[str | None]:
    """One str (or None) per point."""
    if documents is None:
        return [None] * n
    if isinstance(documents, str) or not isinstance(documents, Sequence) or len(documents) != n:
        raise InvalidArgumentError(f"documents must be a list of {n} strings or None (one per id)")
    bad = [d for d in documents if d is not None and not isinstance(d, str)]
    if bad:
        raise InvalidTypeError(f"documents must be strings or None, got {bad[0]!r}")
    return list(documents)


def _as_include(include: Sequence[str]) -> tuple[str, ...]:
    fields = (include,) if isinstance(include, str) else tuple(include)
    for field in fields:
        as_choice(field, "include", INCLUDE)
    return fields


def _record_vectors(header: dict[str, Any], blob: bytes, dim: int, source: Path) -> np.ndarray | None:
    """The float32 vectors a logged upsert carries (None for a delete)."""
    if header.get("op") != "upsert":
        return None
    n = len(header["ids"])
    if len(blob) != n * dim * 4:
        raise FileFormatError(f"{source}: upsert record has {len(blob)} vector bytes for {n} ids")
    return np.frombuffer(blob, dtype="<f4").reshape(n, dim).copy()
