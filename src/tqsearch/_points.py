"""PointStore: a collection's points beside its index, with only compact arrays in memory.

In memory, per internal id (iid): a live flag, the 64-bit hash of the string id (looked up through an
IdMap), and where its record lies in the records file (offset, length): 21 bytes. On disk:
    records.<a>.dat   append-only JSON records [id, metadata, document], read with pread on demand (a
                      query's records in one native call, as one JSON array)
    vectors.dat       the original vectors by iid (float32 or float16 rows, or no file), read with pread (one
                      call per run of consecutive rows) and written with pwrite. Not memory-mapped: a map's
                      page faults pull in 64 KB around every row a query re-ranks (~0.9 ms a query on a
                      cold 1M-row file, and the pages stay in the process's RSS); pread costs ~1.5 us a row
Neither file is fsynced per write: the collection's write-ahead log is, and replaying it rewrites the
same rows and appends the same records. `arrays()` hands the in-memory arrays to a snapshot, taken after
`sync()` has made both files durable; `attach()` reads them back and cuts off what the log will replay.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from ._format import hash64
from ._idmap import IdMap
from ._index import grow
from .errors import FileFormatError, InvalidArgumentError

VECTOR_KINDS = ("float32", "float16")
VECTORS_FILE = "vectors.dat"


def records_file(arena: int) -> str:
    """The name of records file number `arena` (a new one is written when garbage outweighs records)."""
    return f"records.{arena}.dat"


def id_hash(sid: str) -> int:
    """The stable 64-bit hash (as int64) of a string id; equal hashes are told apart by reading the record."""
    h = hash64(sid)
    return h - (1 << 64) if h >= 1 << 63 else h  # the same bits as an int64


class PointStore:
    """Records and original vectors of a collection's points, addressed by internal id."""

    def __init__(self, root: Path, dim: int, vectors: str | None, arena: int = 0) -> None:
        self.root, self.dim, self.kind = root, dim, vectors
        self.arena = arena
        self.size = 0  # iids in use are below this
        self.live = np.zeros(0, dtype=bool)
        self._hash = np.zeros(0, dtype=np.int64)
        self._offset = np.zeros(0, dtype=np.uint64)
        self._length = np.zeros(0, dtype=np.uint32)
        self._by_hash = IdMap()  # id hash -> iid
        self._collided: dict[str, int] = {}  # ids whose hash another live id already holds (vanishingly rare)
        self._records = os.open(root / records_file(arena), os.O_RDWR | os.O_CREAT, 0o644)
        self._end = os.fstat(self._records).st_size
        self._garbage = 0  # bytes of records no live point refers to
        self._vectors_fd = None if vectors is None else os.open(root / VECTORS_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        self._capacity = 0  # rows vectors.dat holds room for
        self._row_bytes = 0 if vectors is None else dim * np.dtype(vectors).itemsize

    # ------------------------------------------------------------------ ids

    def count(self) -> int:
        return len(self._by_hash) + len(self._collided)

    def lookup(self, sids: list[str]) -> np.ndarray:
        """The iid of each string id, -1 where absent."""
        iids = self._by_hash.get(np.array([id_hash(s) for s in sids], dtype=np.int64))
        for i in np.flatnonzero(iids >= 0).tolist():
            if self.sid(int(iids[i])) != sids[i]:  # another id with the same hash
                iids[i] = -1
        for i, sid in enumerate(sids):
            if sid in self._collided:
                iids[i] = self._collided[sid]
        return iids

    def free_iids(self, n: int) -> list[int]:
        """n internal ids for new points: dead ones below `size` first, then fresh ones."""
        dead = np.flatnonzero(~self.live[: self.size])[:n].tolist()
        return dead + list(range(self.size, self.size + n - len(dead)))

    # ------------------------------------------------------------------ writes

    def put(self, iids: list[int], sids: list[str], metadatas: list[dict], documents: list[str | None],
            vectors: np.ndarray) -> None:
        """Store points (replacing whatever each iid held): records appended, vectors written in place."""
        self.remove([i for i in iids if i < self.size and self.live[i]])
        self._room(max(iids, default=-1) + 1)
        blobs = [json.dumps([s, m, d], separators=(",", ":")).encode() for s, m, d in zip(sids, metadatas, documents)]
        _write_all(self._records, b"".join(blobs), self._end)
        lengths = np.array([len(b) for b in blobs], dtype=np.uint64)
        at = np.array(iids, dtype=np.int64)
        self._offset[at] = self._end + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.uint64)
        self._length[at] = lengths
        self._end += int(lengths.sum())
        hashes = np.array([id_hash(s) for s in sids], dtype=np.int64)
        self._hash[at], self.live[at] = hashes, True
        self._index_ids(at, hashes, sids)
        if self.kind is not None:
            self._write_vectors(at, vectors)

    def remove(self, iids: list[int]) -> None:
        """Forget points (their records become garbage; their vector rows are left to be overwritten)."""
        if not iids:
            return
        at = np.array(iids, dtype=np.int64)
        self._garbage += int(self._length[at].sum())
        inverse = {iid: sid for sid, iid in self._collided.items()}
        plain = [i for i in iids if i not in inverse]
        for i in iids:
            self._collided.pop(inverse.get(i, ""), None)
        self._by_hash.discard(self._hash[plain])
        self.live[at] = False

    def sync(self) -> None:
        """Make the records and vectors written so far durable (before a snapshot refers to them)."""
        os.fsync(self._records)
        if self._vectors_fd is not None:
            os.fsync(self._vectors_fd)

    # ------------------------------------------------------------------ reads

    def sid(self, iid: int) -> str:
        return self.records([iid])[0][0]

    def records(self, iids: list[int]) -> list[list[Any]]:
        """[id, metadata, document] of each iid (live ones), read from the records file."""
        if not iids:
            return []
        lengths = self._length[iids]
        text = bytearray(int(lengths.sum()) + len(iids) + 1)
        # one native call reads them as one JSON array (records on disk are read at once, not one by one)
        _core.pread_joined(self._records, self._offset[iids], lengths, text)
        return json.loads(text)  # one parse for the batch

    def vectors(self, iids: np.ndarray) -> np.ndarray:
        """The stored vectors of the given iids as float32 (n, dim); InvalidArgumentError when none are kept."""
        self._check_kept()
        rows = np.asarray(iids, dtype=np.int64)
        wanted, where = np.unique(rows.ravel(), return_inverse=True)
        got = np.empty((len(wanted), self._row_bytes), dtype=np.uint8)
        _core.pread_rows(self._vectors_fd, wanted, got)  # one pread per run of consecutive rows, GIL released
        return got.view(self.kind)[where].astype(np.float32).reshape(*rows.shape, self.dim)

    def exact_top(self, q: np.ndarray, cands: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """The best k of each query's candidate iids (nq, c; -1 padding) by exact `metric` scores on the stored
        vectors: (scores float32, iids int64), (nq, min(k, c)), best first, ties to the smaller iid, -inf / -1
        padded. One native call (csrc/exact.h): the rows are read once each, the GIL released."""
        self._check_kept()
        k = min(k, cands.shape[1])
        scores, top = np.empty((len(q), k), dtype=np.float32), np.empty((len(q), k), dtype=np.int64)
        _core.exact_top_file(self._vectors_fd, self.kind, metric, q, np.ascontiguousarray(cands, dtype=np.int64),
                             scores, top)
        return scores, top

    def nbytes(self) -> int:
        """Bytes held in memory (arrays at capacity and the id map); the files are not counted."""
        arrays = self.live.nbytes + self._hash.nbytes + self._offset.nbytes + self._length.nbytes
        return arrays + self._by_hash.nbytes() + 200 * len(self._collided)

    # ------------------------------------------------------------------ snapshots

    def arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What a snapshot keeps of the store: header fields and arrays (iids below `size`)."""
        n = self.size
        meta = {"size": n, "arena": self.arena, "records_bytes": self._end, "garbage": self._garbage,
                "collided": self._collided}
        return meta, {"live": self.live[:n].view(np.uint8), "id_hash": self._hash[:n],
                      "record_offset": self._offset[:n], "record_length": self._length[:n]}

    def attach(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], source: str) -> None:
        """Load a snapshot's arrays; the records file is cut back to what the snapshot knew."""
        try:
            n, self._end, self._garbage = int(meta["size"]), int(meta["records_bytes"]), int(meta["garbage"])
            collided = {str(k): int(v) for k, v in dict(meta["collided"]).items()}
            columns = [np.asarray(arrays[name]) for name in ("live", "id_hash", "record_offset", "record_length")]
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"{source}: inconsistent points file ({e})") from None
        if any(c.shape != (n,) for c in columns) or os.fstat(self._records).st_size < self._end:
            raise FileFormatError(f"{source}: points arrays or records file do not match the snapshot")
        self._room(n)
        self.live[:n], self._hash[:n], self._offset[:n], self._length[:n] = columns[0].astype(bool), *columns[1:]
        live = np.flatnonzero(self.live[:n])
        plain = live[~np.isin(live, list(collided.values()))]
        self._by_hash = IdMap.from_arrays(self._hash[plain], plain)
        self._collided = collided
        os.ftruncate(self._records, self._end)

    def reset(self) -> None:
        """Start empty (no snapshot yet): the log replays every record from the beginning."""
        os.ftruncate(self._records, 0)
        self._end = 0

    def garbage_share(self) -> float:
        """The share of the records file that no live point refers to."""
        return self._garbage / max(1, self._end)

    def rewrite_records(self, arena: int) -> None:
        """Copy the live records into a new records file `arena` (garbage dropped) and switch to it."""
        fd = os.open(self.root / records_file(arena), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        live = np.flatnonzero(self.live[: self.size])
        end = 0
        for start in range(0, len(live), 65536):
            chunk = live[start : start + 65536]
            blob = b"".join(os.pread(self._records, int(self._length[i]), int(self._offset[i])) for i in chunk)
            _write_all(fd, blob, end)
            self._offset[chunk] = end + np.concatenate([[0], np.cumsum(self._length[chunk])[:-1]]).astype(np.uint64)
            end += len(blob)
        os.fsync(fd)
        os.close(self._records)
        self._records, self._end, self._garbage, self.arena = fd, end, 0, arena

    def close(self) -> None:
        os.close(self._records)
        if self._vectors_fd is not None:
            os.close(self._vectors_fd)

    # ------------------------------------------------------------------ internals

    def _check_kept(self) -> None:
        if self.kind is None:
            raise InvalidArgumentError("this collection keeps no vectors (created with vectors=None): "
                                       "include 'vectors' and rescore need vectors='float32' or 'float16'")

    def _room(self, size: int) -> None:
        """Make room for iids below `size` (arrays grow by doubling, the vectors file by a quarter)."""
        if size <= self.size:
            return
        self.live, self._hash = grow(self.live, size), grow(self._hash, size)
        self._offset, self._length = grow(self._offset, size), grow(self._length, size)
        self.size = size
        if self.kind is not None and size > self._capacity:
            have = os.fstat(self._vectors_fd).st_size // self._row_bytes
            self._capacity = max(size, have, self._capacity + self._capacity // 4)
            os.ftruncate(self._vectors_fd, self._capacity * self._row_bytes)

    def _index_ids(self, iids: np.ndarray, hashes: np.ndarray, sids: list[str]) -> None:
        """Map each new id's hash to its iid; an id whose hash another live id holds goes to `_collided`."""
        holders = self._by_hash.get(hashes)
        first = np.zeros(len(hashes), dtype=bool)
        first[np.unique(hashes, return_index=True)[1]] = True
        clash = ((holders >= 0) & (holders != iids)) | ~first  # held by another id, or earlier in this batch
        for i in np.flatnonzero(clash).tolist():
            self._collided[sids[i]] = int(iids[i])
        self._by_hash.set(hashes[~clash], iids[~clash])

    def _write_vectors(self, iids: np.ndarray, vectors: np.ndarray) -> None:
        """pwrite the rows, one call per run of consecutive iids (a fresh batch is one run)."""
        order = np.argsort(iids, kind="stable")
        rows = np.ascontiguousarray(np.asarray(vectors)[order], dtype=self.kind)
        at = iids[order]
        breaks = np.flatnonzero(np.diff(at) != 1) + 1
        for lo, hi in zip(np.concatenate([[0], breaks]).tolist(), np.concatenate([breaks, [len(at)]]).tolist()):
            _write_all(self._vectors_fd, rows[lo:hi].tobytes(), int(at[lo]) * self._row_bytes)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite all of `data` at `offset`."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
