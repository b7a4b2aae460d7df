"""DistributedCollection: the `Collection` API over shards that are Ray actors, each with replicas.

Layout: `<root>/<name>/distributed.json` (the settings, _settings.py) on the machine that opens it, and
`<root>/<name>/shard-<s>/replica-<r>/` (an ordinary Collection directory) on the node running that replica.
Writes: validated here first (a bad batch changes nothing anywhere), split by the id hash (_routing.py),
sent to every replica of each shard at once and acknowledged once every live replica has logged them
(fsync). Ray retries a write on a replica that is restarting (max_task_retries), so a killed replica
blocks writes to its shard only for its restart; a replica Ray gave up on is skipped.
Reads: one replica per shard (round robin), failing over to the next when one is dead, restarting or
stale; when every replica of a shard fails, ShardUnavailableError names it (or, with allow_partial=True,
the answer lists it under "missing_shards"). Queries scatter one batched call per shard and merge (_merge.py);
with one shard, that shard's own answer is the answer (no merge).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from .._index import first_center, model_queries, normalized
from .. import relevance
from ..collection import (Collection, _as_documents, _as_include, _as_metadatas, _as_str_ids, _as_vectors,
                          _write_json, as_int, as_matrix, as_min_relevance, check_relevance_model, read_relevance,
                          store_relevance)
from ..errors import ClosedError, NotFoundError, TQSearchError
from ._merge import merge, tails
from ._routing import partition
from ._settings import SETTINGS
from ._shard import ShardReplica, StaleReplicaError

__all__ = ["DistributedCollection", "ShardUnavailableError"]

SUSPECT_S = 5.0  # a replica that just failed is tried last for this long
PAGE = 10_000  # points per call when a replica is copied (repair)
WRITE_TIMEOUT_S = 120.0  # a replica restarting longer than this (no node to run on) fails the write
INLINE_BYTES = 100 << 10  # query batches above this go to the object store once, not once per shard
REPLICA_CPUS = 0.01  # a token reservation: Ray 2.60 ignores soft node affinity for actors that reserve nothing


class ShardUnavailableError(TQSearchError, RuntimeError):
    """No replica of a shard answered (all dead, restarting or stale); the message names the shard."""

    http_status = 503


class DistributedCollection:
    """Points keyed by string id over `shards` Ray actors with `replicas` copies each; see the module doc.

    Use `tqsearch.distributed.open` to make one. `settings` are every shard's Collection settings.
    """

    def __init__(self, name: str, home: Path, settings: dict[str, Any], existed: bool) -> None:
        import ray

        self._ray = ray
        self.name, self.path = name, home
        self._stored = settings  # distributed.json
        self.dim, self.vectors = int(self.settings["dim"]), self.settings["vectors"]
        self.shards, self.replicas = int(settings["shards"]), int(settings["replicas"])
        self._relevance = read_relevance(home, self.dim)
        self._actors = [[self._start(s, r, existed) for r in range(self.replicas)] for s in range(self.shards)]
        self._next = [0] * self.shards
        self._failed_at = np.full((self.shards, self.replicas), -np.inf)
        self._open = True
        try:
            self.repair()
        except BaseException:
            self._stop()
            raise

    # ------------------------------------------------------------------ writes

    def upsert(self, ids: Sequence[str], vectors: object, metadatas: Sequence[dict] | None = None,
               documents: Sequence[str | None] | None = None) -> None:
        """Insert or replace points; returns once every live replica of each shard touched has logged them."""
        self._check_open()
        sids = _as_str_ids(ids, "ids")
        vecs = _as_vectors(vectors, self.dim, len(sids))
        metas, docs = _as_metadatas(metadatas, len(sids)), _as_documents(documents, len(sids))
        self.center_from(vecs)
        self._write("upsert", {s: ([sids[i] for i in pos], vecs[pos], [metas[i] for i in pos], [docs[i] for i in pos])
                               for s, pos in enumerate(partition(sids, self.shards)) if len(pos)})

    @property
    def settings(self) -> dict[str, Any]:
        """Every shard's Collection settings (the "shard" part of distributed.json)."""
        return self._stored["shard"]

    def fix_center(self, mean: object) -> None:
        """Collection.fix_center on every replica, kept in distributed.json: every shard codes around `mean`."""
        self._check_open()
        mean = np.asarray(mean, dtype=np.float32)
        self._write("fix_center", {s: (mean,) for s in range(self.shards)})  # each replica checks it
        self._stored = {**self._stored, "shard": {**self.settings, "center": mean.tolist()}}
        _write_json(self.path / SETTINGS, self._stored)

    def center_from(self, vectors: np.ndarray) -> None:
        """Before the first write: fix on every shard the centre one Collection would take from this first
        batch (_index.first_center), so shard scores are those of one Collection; no-op once fixed."""
        if self.settings.get("center") is None:
            rows = normalized(vectors) if self.settings["metric"] == "cosine" else vectors
            self.fix_center(first_center(rows, self.dim, self.settings["index_options"].get("center", True)))

    def delete(self, ids: Sequence[str]) -> None:
        """Remove points by id; NotFoundError naming an unknown id, and nothing is removed."""
        self._check_open()
        sids = _as_str_ids(ids, "ids")
        parts = {s: [sids[i] for i in pos] for s, pos in enumerate(partition(sids, self.shards)) if len(pos)}
        missing = [i for found in self._scatter("missing", {s: (p,) for s, p in parts.items()})[0].values()
                   for i in found]
        if missing:
            raise NotFoundError(f"unknown id {missing[0]!r} ({len(missing)} of {len(sids)} ids not in the collection)")
        self._write("delete", {s: (p,) for s, p in parts.items()})

    def compact(self) -> None:
        """Compact every replica of every shard (Collection.compact)."""
        self._check_open()
        self._write("compact", {s: () for s in range(self.shards)})

    def close(self, compact: bool = True) -> None:
        """Release every replica's directory and stop the actors (compact: first fold each log into a
        snapshot, so the next open replays nothing). Idempotent."""
        if not self._open:
            return
        self._open = False
        refs = [a.close.remote(compact) for row in self._actors for a in row]
        self._ray.wait(refs, num_returns=len(refs), timeout=60)
        self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def repair(self) -> list[tuple[int, int]]:
        """Copy a live replica into every replica that lost its data (restarted on a node without its
        directory); returns the (shard, replica) pairs copied."""
        copied = []
        for s, row in enumerate(self._actors):
            try:
                states = self._ray.get([a.state.remote() for a in row])
            except self._ray.exceptions.RayActorError as e:  # e.g. its directory is open in another process
                detail = str(e).strip().splitlines()[-1]
                raise ShardUnavailableError(f"shard {s} of {self.name!r}: a replica did not start ({detail})") from None
            stale = [r for r, st in enumerate(states) if st["stale"]]
            source = next((r for r, st in enumerate(states) if not st["stale"]), None)
            if stale and source is None:
                raise ShardUnavailableError(f"shard {s} of {self.name!r}: every replica lost its data")
            for r in stale:
                self._copy(row[source], row[r])
                copied.append((s, r))
        return copied

    # ------------------------------------------------------------------ reads

    def count(self) -> int:
        """Number of points (one replica of each shard asked)."""
        self._check_open()
        return sum(self._scatter("count", {s: () for s in range(self.shards)})[0].values())

    def __len__(self) -> int:
        return self.count()

    def get(self, ids: Sequence[str] | None = None, where: dict | None = None,
            include: Sequence[str] = ("metadatas", "documents"), limit: int | None = None,
            offset: int = 0) -> dict[str, Any]:
        """As Collection.get; without ids, points come shard by shard (internal-id order within a shard)."""
        self._check_open()
        fields = _as_include(include)
        offset = as_int(offset, "offset", low=0)
        end = None if limit is None else offset + as_int(limit, "limit", low=0)
        if ids is None:
            got = self._scatter("get", {s: (None, where, fields, end, 0) for s in range(self.shards)})[0]
            return _sliced(_concat([got[s] for s in sorted(got)], fields, self.dim), fields, offset, end)
        sids = _as_str_ids(ids, "ids")
        calls = {s: ([sids[i] for i in pos], where, fields, None, 0)
                 for s, pos in enumerate(partition(sids, self.shards)) if len(pos)}
        got = self._scatter("get", calls)[0]
        merged = _concat([got[s] for s in sorted(got)], fields, self.dim)
        row = {sid: j for j, sid in enumerate(merged["ids"])}
        order = [row[sid] for sid in sids if sid in row]
        return _sliced(_taken(merged, fields, order), fields, offset, end)

    def query(self, queries: object, k: int, where: dict | None = None,
              include: Sequence[str] = ("metadatas", "documents"), rescore: int | None = None,
              min_relevance: float | None = None, allow_partial: bool = False) -> list[dict[str, Any]]:
        """As Collection.query, over every shard: equal to one Collection holding the same points when the
        index is exhaustive ("flat"); HNSW shards each walk their own graph.

        One batched call per shard. min_relevance: as Collection.query, with this collection's
        `relevance_model` and each query's code-score tail taken over every shard. allow_partial=True answers
        from the shards that did (each result then has "missing_shards": the shards not searched); otherwise
        ShardUnavailableError names the shard.
        """
        self._check_open()
        q = as_matrix(queries, self.dim, "queries")
        k, fields, rescore = as_int(k, "k"), _as_include(include), self._rescore(rescore)
        p = None if min_relevance is None else as_min_relevance(min_relevance)
        model = self._relevance  # one model for the whole query, whatever set_relevance does meanwhile
        width, tail = k * max(rescore, 1), 0 if p is None else model.tail
        if self.shards == 1 and p is None:  # one shard's own answer is the answer: no candidates to merge
            got, missing = self._scatter("query", {0: ((q, k, where, fields, rescore),)}, allow_partial)
            results = got[0] if got else merge([], len(q), k, width, fields)
        else:
            arg = self._ray.put(q) if q.nbytes > INLINE_BYTES else q  # small ones travel inside the call
            got, missing = self._scatter("candidates", {s: (arg, max(width, tail), where, fields, rescore > 0)
                                                        for s in range(self.shards)}, allow_partial)
            parts = [got[s] for s in sorted(got)]
            results = merge(parts, len(q), k, width, fields)
            if p is not None:
                model_q = model_queries(model, q, self.settings["metric"])
                _keep_relevant(results, model, tails(parts, len(q), tail), model_q, p)
        if allow_partial:
            for result in results:
                result["missing_shards"] = missing
        return results

    def shard_handles(self) -> list[list[Any]]:
        """The Ray actor handles, [shard][replica] (for operators and tests)."""
        return [list(row) for row in self._actors]

    def __repr__(self) -> str:
        s = self.settings
        return (f"DistributedCollection({self.name!r}, shards={self.shards}, replicas={self.replicas}, "
                f"dim={self.dim}, bits={s['bits']}, metric={s['metric']!r}, index={s['index']!r})")

    @property
    def relevance_model(self) -> relevance.RelevanceModel:
        """The model min_relevance reads: the one set, or the unsupervised default."""
        return self._relevance

    def set_relevance(self, model: relevance.RelevanceModel | None) -> None:
        """As Collection.set_relevance, kept in this collection's relevance.json beside distributed.json."""
        check_relevance_model(model, self.dim)
        self._check_open()
        self._relevance = store_relevance(self.path, model)

    _rescore = Collection._rescore  # the same default (4 when vectors are kept) and checks; reads self.vectors

    # ------------------------------------------------------------------ internals

    def _start(self, shard: int, replica: int, existed: bool) -> Any:
        """The actor of one replica (an existing one of that name is reused), placed on its node when it
        can be: replica r of shard s on node (s + r) mod nodes, so a shard's replicas are on different nodes."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = sorted(n["NodeID"] for n in self._ray.nodes() if n["Alive"])
        place = NodeAffinitySchedulingStrategy(nodes[(shard + replica) % len(nodes)], soft=True)
        path = self.path / f"shard-{shard}" / f"replica-{replica}"
        actor = self._ray.remote(ShardReplica).options(
            name=f"tqsearch:{self.path}:{shard}:{replica}", namespace="tqsearch", get_if_exists=True,
            max_restarts=-1, max_task_retries=-1, max_concurrency=4, num_cpus=REPLICA_CPUS, scheduling_strategy=place)
        return actor.remote(str(path), self.settings, existed)

    def _stop(self) -> None:
        """Kill every replica's actor (no restart)."""
        self._open = False
        for row in self._actors:
            for actor in row:
                self._ray.kill(actor, no_restart=True)

    def _write(self, method: str, calls: dict[int, tuple]) -> None:
        """Call `method` on every replica of each shard in `calls` at once; wait for all. Replicas Ray gave up
        on are skipped; a shard with none left is ShardUnavailableError."""
        put = {s: tuple(self._ray.put(a) if isinstance(a, np.ndarray) else a for a in args) for s, args in calls.items()}
        refs = {(s, r): getattr(a, method).remote(*put[s]) for s in calls for r, a in enumerate(self._actors[s])}
        self._ray.wait(list(refs.values()), num_returns=len(refs), timeout=WRITE_TIMEOUT_S)
        done: dict[int, int] = {}
        for (s, r), ref in refs.items():
            try:
                self._get(ref, timeout=0)
                done[s] = done.get(s, 0) + 1
            except self._ray.exceptions.GetTimeoutError:
                raise ShardUnavailableError(f"shard {s} of {self.name!r}: replica {r} did not log the write within "
                                            f"{WRITE_TIMEOUT_S:.0f} s (not acknowledged; it may still apply)") from None
            except self._ray.exceptions.ActorDiedError:
                self._failed_at[s, r] = time.monotonic()
        lost = [s for s in calls if s not in done]
        if lost:
            raise ShardUnavailableError(f"shard {lost[0]} of {self.name!r}: no replica is alive to take the write")

    def _scatter(self, method: str, calls: dict[int, tuple],
                 allow_partial: bool = False) -> tuple[dict[int, Any], list[int]]:
        """Call `method` on one replica of each shard in `calls` (all at once), failing over replica by replica;
        the answers by shard and the shards that had none (ShardUnavailableError unless allow_partial)."""
        order = {s: self._order(s) for s in calls}
        got, missing, todo = {}, [], list(calls)
        while todo:
            refs = {s: getattr(self._actors[s][order[s][0]], method).options(max_task_retries=0).remote(*calls[s])
                    for s in todo}
            todo = []
            for s, ref in refs.items():
                try:
                    got[s] = self._get(ref)
                except (self._ray.exceptions.RayActorError, StaleReplicaError) as e:
                    self._failed_at[s, order[s].pop(0)] = time.monotonic()
                    if order[s]:
                        todo.append(s)
                    elif allow_partial:
                        missing.append(s)
                    else:
                        raise ShardUnavailableError(f"shard {s} of {self.name!r}: no replica answered "
                                                    f"({type(e).__name__})") from None
        return got, sorted(missing)

    def _order(self, shard: int) -> list[int]:
        """The replicas of a shard to try, round robin, those that failed in the last SUSPECT_S seconds last."""
        start = self._next[shard]
        self._next[shard] = (start + 1) % self.replicas
        ring = [(start + i) % self.replicas for i in range(self.replicas)]
        recent = time.monotonic() - SUSPECT_S
        return sorted(ring, key=lambda r: self._failed_at[shard, r] > recent)

    def _get(self, ref: Any, timeout: float | None = None) -> Any:
        """ray.get, re-raising the actor's own exception (a NotFoundError stays a NotFoundError)."""
        try:
            return self._ray.get(ref, timeout=timeout)
        except self._ray.exceptions.RayTaskError as e:
            cause = e.cause
            if isinstance(cause, Exception) and not isinstance(cause, self._ray.exceptions.RayError):
                raise cause from None
            raise

    def _copy(self, source: Any, target: Any) -> None:
        """Stream every point of `source` into `target`, a page at a time."""
        everything = ("metadatas", "documents", "vectors")
        total = self._get(source.count.remote())
        if self.settings.get("center") is not None:  # before the first page fixes a centre of its own
            self._get(target.fix_center.remote(np.asarray(self.settings["center"], dtype=np.float32)))
        for offset in range(0, max(total, 1), PAGE):
            page = self._get(source.get.remote(None, None, everything, PAGE, offset))
            self._get(target.restore.remote(page, offset + PAGE >= total))

    def _check_open(self) -> None:
        if not self._open:
            raise ClosedError(f"collection {self.name!r} is closed")


def _concat(parts: list[dict[str, Any]], fields: tuple[str, ...], dim: int) -> dict[str, Any]:
    """Shard answers of `get` end to end."""
    out: dict[str, Any] = {"ids": [i for p in parts for i in p["ids"]]}
    for field in fields:
        if field == "vectors":
            out[field] = np.concatenate([np.asarray(p[field], np.float32).reshape(-1, dim) for p in parts] or
                                        [np.empty((0, dim), np.float32)])
        else:
            out[field] = [v for p in parts for v in p[field]]
    return out


def _taken(result: dict[str, Any], fields: tuple[str, ...], rows: list[int]) -> dict[str, Any]:
    """The given rows of a `get` answer, in that order."""
    out: dict[str, Any] = {"ids": [result["ids"][i] for i in rows]}
    for field in fields:
        out[field] = result[field][rows] if field == "vectors" else [result[field][i] for i in rows]
    return out


def _sliced(result: dict[str, Any], fields: tuple[str, ...], start: int, end: int | None) -> dict[str, Any]:
    return _taken(result, fields, list(range(len(result["ids"])))[start:end])


def _keep_relevant(results: list[dict[str, Any]], model: relevance.RelevanceModel, tail: np.ndarray,
                   queries: np.ndarray | None, p: float) -> None:
    """Cut each merged result to its hits with `model`'s relevance >= p and add their "relevance", in place."""
    scores = np.full((len(results), max([1, *(len(r["ids"]) for r in results)])), -np.inf, dtype=np.float32)
    for i, r in enumerate(results):
        scores[i, : len(r["scores"])] = r["scores"]
    scores, _, rel = model.filter(scores, None, tail, queries, p)
    for i, r in enumerate(results):
        n = int(np.isfinite(scores[i]).sum())  # what is kept is a prefix of each row
        for field, value in r.items():
            r[field] = value[:n]
        r["relevance"] = rel[i, :n].tolist()
