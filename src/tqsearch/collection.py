"""Collection: a directory-backed, crash-safe store of string-keyed points (vector, metadata, document).

Directory layout (generation g names one consistent state):
    settings.json       dim, bits, metric, index kind and options; written once, atomically
    manifest.json       {"generation": g, "snapshot": bool}; rewritten atomically, the commit point
    index.<g>.tqs       the FlatIndex/HNSWIndex (its own `save` format)       } the snapshot, absent at
    points.<g>.tqc      ids, metadata, documents and float32 vectors (_format) }  g = 0 before compaction
    wal.<g>.log         every upsert/delete acknowledged since that snapshot (_wal)
    lock                held (flock) while a process has the collection open
Opening loads the manifest's snapshot, replays its log and deletes files of any other generation.
`compact` writes generation g + 1 in full and switches the manifest last, so a crash at any point
leaves either the old or the new generation complete, and both hold every acknowledged write.

Vectors are kept as given (float32) beside the index, which holds only codes: `get` returns them
exactly, and the index can be rebuilt from them. String ids map to int64 internal ids (reused after
deletes); the log records the internal ids so a replay rebuilds the very same mapping.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from . import _format, _kinds, _validate, _wal
from ._filters import PayloadIndex
from ._index import CodeIndex, clamp_cosine, exact_top, grow, normalized
from ._rwlock import ReadWriteLock
from ._validate import bad_row
from .errors import (ClosedError, ConflictError, FileFormatError, InvalidArgumentError, InvalidTypeError,
                     NotFoundError, TQSearchError)

__all__ = ["Collection", "open_collection"]

SETTINGS, MANIFEST, LOCK = "settings.json", "manifest.json", "lock"
FORMAT, VERSION = "tqsearch-collection", 1
INCLUDE = ("metadatas", "documents", "vectors")
RESCORE = 4  # query: candidates per result taken from the codes and re-ranked exactly on the float32 vectors
_POINTS_MAGIC = b"TQCOLL01"
_GENERATION_FILE = re.compile(r"^(index|points|wal)\.(\d+)\.(tqs|tqc|log)$")


def open_collection(path: str | os.PathLike, dim: int | None = None, bits: int | None = None,
                    metric: str | None = None, index: str | None = None, *, wal_bytes: int = 64 << 20,
                    **index_options: Any) -> Collection:
    """Open the collection in directory `path`, creating it (dim required) when it does not exist.

    New collections default to bits=4, metric="cosine", index="hnsw"; index_options (seed, M, ef_search,
    rerank, ...) go to FlatIndex/HNSWIndex. On reopen, any setting given must match the stored one.
    wal_bytes: compact automatically once the log grows past this many bytes.
    """
    root = Path(path)
    given = {"dim": dim, "bits": bits, "metric": metric, "index": index, "index_options": index_options}
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
        self._lock = ReadWriteLock()
        self._lock_fd = _lock(root)
        try:
            self._load()
        except BaseException:
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
        """Write a full snapshot as the next generation, then start an empty log (crash-safe at any point)."""
        with self._lock.write():
            self._check_open()
            gen = self._generation + 1
            self._index.save(self.path / f"index.{gen}.tqs")
            _format.write_atomic(self.path / f"points.{gen}.tqc", self._points_file())
            _wal.create(self.path / f"wal.{gen}.log")
            _write_json(self.path / MANIFEST, {"version": VERSION, "generation": gen, "snapshot": True})
            self._log.close()
            self._generation, self._log = gen, _wal.Log(self.path / f"wal.{gen}.log")
            _remove_stale(self.path, gen)

    def close(self, compact: bool = False) -> None:
        """Release the directory; every acknowledged write is already durable. Idempotent.

        compact=True first folds a non-empty log into a snapshot, so the next open replays nothing.
        """
        with self._lock.write():
            if self._log is not None:
                if compact and self._log.size > len(_wal.MAGIC):
                    self.compact()
                self._log.close()
                os.close(self._lock_fd)
                self._log = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def count(self) -> int:
        """Number of points."""
        return len(self._iid)

    def __len__(self) -> int:
        return len(self._iid)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._iid

    def get(self, ids: Sequence[str] | None = None, where: dict | None = None,
            include: Sequence[str] = ("metadatas", "documents"), limit: int | None = None,
            offset: int = 0) -> dict[str, Any]:
        """Points by id (in the order given; NotFoundError, a KeyError, for an unknown id) and/or matching `where`.

        Returns {"ids": [...], plus "metadatas"/"documents" lists and "vectors" (n, dim) float32 as included}.
        Without ids, points come in internal-id order. limit/offset page through the matches (as the
        server's /points/get): the matches offset .. offset + limit - 1, all from offset when limit is None.
        """
        with self._lock.read():
            self._check_open()
            fields = _as_include(include)
            offset = as_int(offset, "offset", low=0)
            end = None if limit is None else offset + as_int(limit, "limit", low=0)
            mask = self._live[: self._size] if where is None else self._payload.evaluate(where, self._live[: self._size])
            if ids is None:
                iids = np.flatnonzero(mask)
            else:
                iids = np.array(self._iids_of(_as_str_ids(ids, "ids")), dtype=np.int64)
                iids = iids[mask[iids]]
            return self._rows(iids[offset:end].tolist(), fields)

    def query(self, queries: object, k: int, where: dict | None = None,
              include: Sequence[str] = ("metadatas", "documents"), rescore: int = RESCORE) -> list[dict[str, Any]]:
        """The k best points per query row, among those matching `where` (filtered inside the search).

        rescore: take k * rescore candidates from the compressed index and rank them by their exact scores
        on the stored float32 vectors (recall beyond what the codes alone give, for a few dot products);
        0 ranks by the codes' estimates alone.
        Returns one dict per query: {"ids", "scores", plus the included fields}, best first; shorter than k
        only when fewer than k points match.
        """
        with self._lock.read():
            self._check_open()
            q = as_matrix(queries, self.dim, "queries")
            k = as_int(k, "k")
            rescore = as_int(rescore, "rescore", low=0)
            fields = _as_include(include)
            live = self._live[: self._size]
            allowed = None if where is None else self._payload.evaluate(where, live)
            n_allowed = len(self._iid) if allowed is None else int(allowed.sum())
            wanted = max(1, min(k * max(rescore, 1), n_allowed))  # never more than can match
            scores, found = self._index.search(q, wanted, filter=allowed)
            if rescore:
                scores, found = self._exact_top(q, found, k)
            results = []
            for row_scores, row_ids in zip(scores, found):
                keep = row_ids >= 0
                result = self._rows(row_ids[keep].tolist(), fields)
                result["scores"] = row_scores[keep].tolist()
                results.append(result)
            return results

    def __repr__(self) -> str:
        s = self.settings
        return (f"Collection({str(self.path)!r}, dim={self.dim}, bits={s['bits']}, metric={s['metric']!r}, "
                f"index={s['index']!r}, n={len(self._iid)})")

    # ------------------------------------------------------------------ internals

    def _load(self) -> None:
        """Read the manifest's generation (finishing an interrupted creation), then replay its log."""
        self._index = _make_index(self.settings)
        self._iid: dict[str, int] = {}
        self._sids: list[str | None] = []
        self._metas: list[dict[str, Any] | None] = []
        self._docs: list[str | None] = []
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._live = np.empty(0, dtype=bool)
        self._size = 0  # internal ids in use are below this
        self._free: set[int] = set()
        self._payload = PayloadIndex()
        manifest = self._read_manifest()
        self._generation = int(manifest["generation"])
        if manifest["snapshot"]:
            self._load_snapshot(self._generation)
        _remove_stale(self.path, self._generation)
        log_path = self.path / f"wal.{self._generation}.log"
        for header, blob in _wal.replay(log_path):
            self._apply(header, _record_vectors(header, blob, self.dim, log_path))
        self._log = _wal.Log(log_path)

    def _read_manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST
        if not path.exists():  # creation stopped before its last step: nothing was acknowledged yet
            _wal.create(self.path / "wal.0.log")
            _write_json(path, {"version": VERSION, "generation": 0, "snapshot": False})
        manifest = _read_json(path)
        if manifest.get("version") != VERSION or not isinstance(manifest.get("generation"), int):
            raise FileFormatError(f"{path}: unsupported or malformed manifest {manifest!r}")
        return manifest

    def _load_snapshot(self, gen: int) -> None:
        index_path, points_path = self.path / f"index.{gen}.tqs", self.path / f"points.{gen}.tqc"
        self._index = _kinds.index_class(self.settings["index"]).load(index_path, mmap=False)
        _, meta, arrays = _format.unpack(points_path.read_bytes(), _POINTS_MAGIC, 1, str(points_path))
        try:
            sids, iids, metas, docs = meta["ids"], meta["iids"], meta["metadatas"], meta["documents"]
            vectors = np.asarray(arrays["vectors"]).reshape(len(sids), self.dim)
            size = int(meta["size"])
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"{points_path}: inconsistent points file ({e})") from None
        if not len(sids) == len(iids) == len(metas) == len(docs) == len(self._index):
            raise FileFormatError(f"{points_path}: point count does not match {index_path.name}")
        self._grow(size)
        for sid, iid, vec, md, doc in zip(sids, iids, vectors, metas, docs):
            self._set_point(sid, iid, vec, md, doc)

    def _points_file(self) -> bytes:
        live = np.flatnonzero(self._live[: self._size])
        meta = {"size": self._size, "ids": [self._sids[i] for i in live], "iids": live.tolist(),
                "metadatas": [self._metas[i] for i in live], "documents": [self._docs[i] for i in live]}
        return _format.pack(_POINTS_MAGIC, 1, meta, {"vectors": self._vectors[live]})

    def _assign(self, sids: list[str]) -> list[int]:
        """Internal ids for a batch: an existing point keeps its own; new ones reuse freed ids first."""
        fresh = itertools.islice(self._free, len(sids))
        next_new = self._size
        out = []
        for sid in sids:
            iid = self._iid.get(sid)
            if iid is None:
                iid = next(fresh, None)
                if iid is None:
                    iid, next_new = next_new, next_new + 1
            out.append(iid)
        return out

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
        """Apply one logged operation to the index, then to ids and payloads (used live and on replay)."""
        if header["op"] == "upsert":
            iids = header["iids"]
            self._index.upsert(vecs, np.array(iids, dtype=np.int64))
            self._grow(max(iids, default=-1) + 1)
            for sid, iid, vec, md, doc in zip(header["ids"], iids, vecs, header["metadatas"], header["documents"]):
                self._clear_point(iid)
                self._set_point(sid, iid, vec, md, doc)
        elif header["op"] == "delete":
            iids = self._iids_of(header["ids"])
            self._index.remove(np.array(iids, dtype=np.int64))
            for iid in iids:
                self._clear_point(iid)
                self._free.add(iid)
        else:
            raise FileFormatError(f"unknown log operation {header['op']!r}")

    def _grow(self, size: int) -> None:
        """Make room for internal ids below `size`; ids skipped over become free."""
        if size <= self._size:
            return
        self._free.update(range(self._size, size))
        self._vectors, self._live = grow(self._vectors, size), grow(self._live, size)
        extra = len(self._vectors) - len(self._sids)
        self._sids += [None] * extra
        self._metas += [None] * extra
        self._docs += [None] * extra
        self._size = size

    def _set_point(self, sid: str, iid: int, vec: np.ndarray, md: dict[str, Any], doc: str | None) -> None:
        self._iid[sid] = iid
        self._free.discard(iid)
        self._sids[iid], self._metas[iid], self._docs[iid] = sid, md, doc
        self._vectors[iid], self._live[iid] = vec, True
        self._payload.add(iid, md)

    def _clear_point(self, iid: int) -> None:
        if self._live[iid]:
            self._payload.remove(iid, self._metas[iid])
            del self._iid[self._sids[iid]]
            self._sids[iid] = self._metas[iid] = self._docs[iid] = None
            self._live[iid] = False

    def _iids_of(self, sids: list[str]) -> list[int]:
        missing = [s for s in sids if s not in self._iid]
        if missing:
            raise NotFoundError(f"unknown id {missing[0]!r} ({len(missing)} of {len(sids)} ids not in the collection)")
        return [self._iid[s] for s in sids]

    def _rows(self, iids: list[int], fields: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"ids": [self._sids[i] for i in iids]}
        if "metadatas" in fields:
            out["metadatas"] = [_copy_metadata(self._metas[i]) for i in iids]
        if "documents" in fields:
            out["documents"] = [self._docs[i] for i in iids]
        if "vectors" in fields:
            out["vectors"] = self._vectors[np.array(iids, dtype=np.int64)]
        return out

    def _exact_top(self, q: np.ndarray, found: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-rank each row's candidates (internal ids, -1 padding) by exact metric scores; the best k."""
        metric = self.settings["metric"]
        if metric != "cosine":
            return exact_top(q, found, self._vectors.__getitem__, k, l2=metric == "l2")
        scores, top = exact_top(normalized(q), found, lambda iids: normalized(self._vectors[iids]), k, l2=False)
        return clamp_cosine(scores), top

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
    settings = {"format": FORMAT, "version": VERSION, "dim": as_dim(given["dim"]),
                "bits": 4 if given["bits"] is None else given["bits"],
                "metric": "cosine" if given["metric"] is None else given["metric"],
                "index": as_choice("hnsw" if given["index"] is None else given["index"], "index",
                                   _kinds.vector_kinds()),
                "index_options": given["index_options"]}
    with _callers_input():  # the index checks bits, metric and the options
        _make_index(settings)
    try:
        json.dumps(settings, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidTypeError(f"index options must be JSON values ({e})") from None
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / SETTINGS, settings)
    return settings


def _make_index(settings: dict[str, Any]) -> CodeIndex:
    return _kinds.index_class(settings["index"])(settings["dim"], settings["bits"], settings["metric"],
                                                  **settings["index_options"])


def _check_same(settings: dict[str, Any], given: dict[str, Any], root: Path) -> None:
    """InvalidArgumentError when a setting passed to open differs from the stored one."""
    for name in ("dim", "bits", "metric", "index"):
        if given[name] is not None and given[name] != settings[name]:
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
    if settings.get("format") != FORMAT or settings.get("version") != VERSION:
        raise FileFormatError(f"{path}: not a version-{VERSION} tqsearch collection")
    if settings.get("index") not in _kinds.vector_kinds() or not isinstance(settings.get("index_options"), dict):
        raise FileFormatError(f"{path}: malformed settings {settings!r}")
    return settings


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


def _remove_stale(root: Path, generation: int) -> None:
    """Delete snapshot/log files of other generations and leftover temp files (after a crash or compaction)."""
    for entry in root.iterdir():
        match = _GENERATION_FILE.match(entry.name)
        stale = (match and int(match[2]) != generation) or (entry.name.startswith(".") and entry.name.endswith(".tmp"))
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

@contextlib.contextmanager
def _callers_input() -> Iterator[None]:
    """Re-raise ValueError/TypeError from checking the caller's input as InvalidArgumentError/InvalidTypeError."""
    try:
        yield
    except TQSearchError:
        raise
    except TypeError as e:
        raise InvalidTypeError(str(e)) from e
    except ValueError as e:
        raise InvalidArgumentError(str(e)) from e


# the shared checks (_validate), raising typed errors: here the values they check are always the caller's
as_choice = _callers_input()(_validate.as_choice)
as_dim = _callers_input()(_validate.as_dim)
as_int = _callers_input()(_validate.as_int)
as_matrix = _callers_input()(_validate.as_matrix)


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


def _copy_metadata(md: dict[str, Any]) -> dict[str, Any]:
    """A copy the caller may edit without touching the stored payload (nested lists/dicts copied too)."""
    return {key: copy.deepcopy(value) if isinstance(value, (list, dict)) else value for key, value in md.items()}


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
