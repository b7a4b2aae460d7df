"""One replica of one shard: a Ray actor owning an ordinary `Collection` in a directory on its node's disk.

Plain class here (Ray is imported lazily); collection.py wraps it with `ray.remote`. Every method is
idempotent where Ray may retry it after a restart: upsert replaces, delete skips ids already gone.
A replica restarted by Ray runs `__init__` again and reopens its directory (the write-ahead log replays).
If that directory is gone (the actor came back on a node that never held it), the replica starts empty,
marked `stale`, and refuses reads until `DistributedCollection.repair` copies a live replica into it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..collection import SETTINGS, open_collection
from ..ingest import read_batches
from ._routing import shard_of
from .._index import exact_scores
from ..errors import TQSearchError

__all__ = ["ShardReplica", "StaleReplicaError"]


class StaleReplicaError(TQSearchError, RuntimeError):
    """This replica lost its data (its node's disk) and waits for a copy from another replica."""

    http_status = 503


class ShardReplica:
    """The Collection of one (shard, replica) at `path`, created from `settings` when missing."""

    def __init__(self, path: str, settings: dict[str, Any], existed: bool) -> None:
        self.path = Path(path)
        import ray

        with warnings.catch_warnings():  # Ray 2.60's own property reads a deprecated one
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.stale = (existed or restarted) and not (self.path / SETTINGS).exists()
        s = settings
        self.collection = open_collection(self.path, s["dim"], s["bits"], s["metric"], s["index"],
                                          vectors=s["vectors"], **s["index_options"])
        self.metric = s["metric"]

    def node(self) -> str:
        """The Ray node this replica runs on (placement checks)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def state(self) -> dict[str, Any]:
        """Whether this replica needs a copy, and its point count."""
        return {"stale": self.stale, "count": self.collection.count(), "node": self.node()}

    # ------------------------------------------------------------------ writes (every replica)

    def upsert(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict], documents: list) -> int:
        """Upsert (logged and fsynced before this returns); the shard's count after."""
        self.collection.upsert(ids, vectors, metadatas, documents)
        return self.collection.count()

    def fix_center(self, mean: np.ndarray) -> None:
        """Collection.fix_center: the centre every shard codes around (idempotent)."""
        self.collection.fix_center(mean)

    def delete(self, ids: list[str]) -> int:
        """Delete those of `ids` still present (a retried delete is a no-op); the shard's count after."""
        present = [i for i in ids if i in self.collection]
        if present:
            self.collection.delete(present)
        return self.collection.count()

    def compact(self) -> None:
        self.collection.compact()

    def close(self, compact: bool) -> None:
        self.collection.close(compact=compact)

    def ingest(self, path: str, shard: int, shards: int, batch: int) -> Iterator[int]:
        """Read the file at `path` (ingest.read_batches) and upsert the rows whose ids route to `shard`;
        yields the rows read after each batch (a streaming generator: the caller's progress)."""
        batches, _ = read_batches(path, batch)
        for b in batches:
            mine = np.flatnonzero(shard_of(b["ids"], shards) == shard)
            if len(mine):
                metas, docs = b.get("metadatas"), b.get("documents")
                self.collection.upsert([b["ids"][i] for i in mine], np.asarray(b["vectors"])[mine],
                                       None if metas is None else [metas[i] for i in mine],
                                       None if docs is None else [docs[i] for i in mine])
            yield len(b["ids"])

    def restore(self, page: dict[str, Any], last: bool) -> None:
        """Part of a copy from a live replica (repair): upsert the page; the last one makes this replica current."""
        if page["ids"]:
            self.collection.upsert(page["ids"], page["vectors"], page["metadatas"], page["documents"])
        if last:
            self.collection.compact()
            self.stale = False

    # ------------------------------------------------------------------ reads (one replica)

    def missing(self, ids: list[str]) -> list[str]:
        """Those of `ids` this shard does not hold."""
        self._check_current()
        return [i for i in ids if i not in self.collection]

    def count(self) -> int:
        self._check_current()
        return self.collection.count()

    def get(self, ids: list[str] | None, where: dict | None, include: tuple[str, ...], limit: int | None,
            offset: int) -> dict[str, Any]:
        self._check_current()
        return self.collection.get(ids, where, include, limit, offset)

    def query(self, request: tuple[np.ndarray, int, dict | None, tuple[str, ...], int]) -> list[dict[str, Any]]:
        """Collection.query(queries, k, where, include, rescore) on this shard alone: the whole answer when the
        collection has one shard. One argument, not five: Ray serializes each on its own (~0.08 ms a call)."""
        queries, k, where, include, rescore = request
        self._check_current()
        return self.collection.query(queries, k, where, include, rescore=rescore)

    def candidates(self, queries: np.ndarray, width: int, where: dict | None, include: tuple[str, ...],
                   exact: bool) -> list[dict[str, Any]]:
        """Per query, this shard's best `width` points by the codes' scores ("code"), with their exact scores
        ("exact", when `exact`) and the included fields: what the coordinator merges (_merge.py)."""
        self._check_current()
        fields = tuple(f for f in include if f != "vectors") + ("vectors",) if exact else include
        found = self.collection.query(queries, width, where, fields, rescore=0)
        for q, result in zip(queries, found):  # lists, not small arrays: Ray pickles them faster
            result["code"] = result.pop("scores")
            if exact:
                vectors = result["vectors"] if "vectors" in include else result.pop("vectors")
                result["exact"] = self._exact(q, np.asarray(vectors, dtype=np.float32)).tolist()
        return found

    def _exact(self, q: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Exact scores of one query against rows, computed as `Collection` re-ranks (same float32 sums)."""
        if not len(vectors):
            return np.empty(0, dtype=np.float32)
        return exact_scores(q, vectors, self.metric)

    def _check_current(self) -> None:
        if self.stale:
            raise StaleReplicaError(f"replica at {str(self.path)!r} lost its data and awaits a copy (repair)")
