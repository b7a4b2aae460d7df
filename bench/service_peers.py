"""Peers for the service benchmark: the same ingest and query workload on embedded, persistent stores.

Every peer stores the same points (id = base row, the vector, the five metadata fields and the text as
document) in a fresh temporary folder, ingests them in batches of 500 from one thread, then answers
the workloads of bench/service.py from 1 and 8 threads in this process (one query vector per call,
k=10, metadata and documents returned). Settings, checked on qdrant-client 1.20.0, chromadb 1.5.9 and
tqdb 0.9.1 (Python 3.11):
  * Qdrant local mode: ``QdrantClient(path=folder)``, cosine. Local mode is qdrant-client's
    pure-Python engine, not the Qdrant server: it has no HNSW (the ``hnsw_config`` m=16 /
    ef_construct=200 and ``hnsw_ef=64`` we pass are ignored) and scores every stored vector with numpy
    per query; a filter is evaluated in Python point by point over the whole collection. Its recall is
    exact and its filtered queries are slow, so it runs at most QDRANT_REQUESTS requests per run. Its
    persistence pickles each point into SQLite and commits per point (130-1,050 points/s measured
    here, depending on the disk's load), so the
    persistent ingest is timed on the first QDRANT_PERSIST points only; the full corpus is loaded
    into the same engine in memory (``QdrantClient(":memory:")``, which answers queries exactly as
    the persistent one: local-mode queries never read SQLite). The document is a payload field.
    Local mode is not safe under concurrent queries: its cosine scoring normalises the stored vector
    matrix in place on every query (qdrant_client/local/distances.py, cosine_similarity), and with 8
    threads on 116,659 points that race corrupted the stored vectors (numpy overflow warnings, recall
    1.000 -> 0.258, and exact search stayed wrong afterwards). Its queries are therefore serialised
    with a lock here (what a caller must do), so its 8-client rows measure queueing, not parallelism.
  * Chroma: ``chromadb.PersistentClient(path=folder)`` (SQLite + Rust hnswlib segments), collection
    configuration hnsw {space: cosine, max_neighbors: 16 (= M), ef_construction: 200, ef_search: 64};
    other knobs at their defaults (batch_size 100, sync_threshold 1000, num_threads = all cores).
    ``upsert(ids, embeddings, metadatas, documents)``; ``query(query_embeddings, n_results, where,
    include=["metadatas", "documents"])``; the filter is {"$and": [{"pos": {"$eq": p}},
    {"offset": {"$gte": lo}}, {"offset": {"$lt": hi}}]}. Its filtered queries go through SQLite
    metadata (pos == "n" alone matches 70% of the points) and took ~0.26 s each at 116,659 points,
    so filtered runs send FILTERED_REQUESTS requests.
  * tqdb: ``Database.open(folder, dim, bits=4, metric="cosine")`` (defaults: fast_mode, no rerank,
    wal_flush_threshold 5000 vectors buffered before a segment is written; whether each call is
    fsynced, as ours is, was not checked); ``insert_batch(..., mode="upsert")``, then ``flush`` and
    ``create_index(max_degree=32 (= 2M, our layer-0 degree), ef_construction=200)``, timed apart as
    "index build". Queries: ``search(q, k, filter=where, _use_ann=True, ann_search_list_size=64)``
    with our own `where` (tqdb speaks the same Mongo-like dialect). A 1% filter took ~0.13 s per query
    at 116,659 points, so filtered runs send FILTERED_REQUESTS requests.
Running this file measures only the peers and replaces the "peers" part of bench/results/service.json
(``--quick``: 20,000 points, JSON in the temp folder). Options: see ``--help``.
"""

from __future__ import annotations

import common  # noqa: F401 - sets OPENBLAS_NUM_THREADS before numpy loads

# isort: split
import argparse
import contextlib
import importlib.metadata
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import Timer, progress

QDRANT_REQUESTS = {"unfiltered": 400, "filtered": 40}  # it scans all points (filters in Python: ~1.5 s/query)
FILTERED_REQUESTS = 200  # Chroma and tqdb: a 1% filter costs them 0.1-0.3 s per query at 116,659 points
QDRANT_PERSIST = 5_000  # points ingested persistently (one SQLite commit per point)
M, EF_CONSTRUCTION, EF = 16, 200, 64


class Peer:
    """One embedded store: `upsert` a batch, `finish` (index build, if any), `query` one vector, `close`."""

    name = "peer"
    dist = ""  # the distribution whose version is reported

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder, self.dim = folder, dim
        self.params: dict[str, Any] = {}

    def upsert(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict], documents: list[str]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Anything the store needs between ingest and queries (timed apart)."""

    def count(self) -> int:
        raise NotImplementedError

    def query(self, vector: np.ndarray, k: int, flt: Any) -> dict[str, list]:
        """{"ids": [str], "metadatas": [dict], "documents": [str]} best first; flt: service.Filter or None."""
        raise NotImplementedError

    def max_requests(self, workload: str) -> int | None:
        """A cap on requests per run for a slow peer (None: as many as ours)."""
        return None

    def ingest_override(self) -> dict[str, Any] | None:
        """Ingest figures measured by the peer itself (when the timed loop is not the persistent ingest)."""
        return None

    def close(self) -> None:
        pass


class QdrantLocal(Peer):
    """qdrant-client's local mode: persistent ingest timed on a prefix, queries on all points in memory."""

    name, dist = "qdrant-local", "qdrant-client"

    def __init__(self, folder: Path, dim: int) -> None:
        super().__init__(folder, dim)
        from qdrant_client import QdrantClient, models

        warnings.filterwarnings("ignore", message="Local mode", category=UserWarning)  # its size/ef advice
        self.models = models
        self.disk, self.memory = QdrantClient(path=str(folder)), QdrantClient(":memory:")
        for client in (self.disk, self.memory):
            client.create_collection(
                "wordnet", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                hnsw_config=models.HnswConfigDiff(m=M, ef_construct=EF_CONSTRUCTION))
        self.search_params = models.SearchParams(hnsw_ef=EF)
        self.lock = threading.Lock()  # local mode races under concurrent queries (see the module docstring)
        self.persisted, self.persist_s = 0, 0.0
        self.params = {"mode": "local", "distance": "cosine", "hnsw_config": {"m": M, "ef_construct": EF_CONSTRUCTION},
                       "hnsw_ef": EF, "note": "local mode ignores hnsw settings (exact numpy scan); persistent "
                       f"ingest timed on the first {QDRANT_PERSIST:,} points, queries on ':memory:' with all points",
                       "max_requests": QDRANT_REQUESTS, "queries": "serialised with a lock (not thread-safe)"}

    def upsert(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict], documents: list[str]) -> None:
        payloads = [dict(md, document=doc) for md, doc in zip(metadatas, documents)]
        batch = self.models.Batch(ids=[int(i) for i in ids], vectors=vectors.tolist(), payloads=payloads)
        if self.persisted < QDRANT_PERSIST:
            with Timer() as timer:
                self.disk.upsert("wordnet", points=batch)
            self.persisted, self.persist_s = self.persisted + len(ids), self.persist_s + timer.seconds
        self.memory.upsert("wordnet", points=batch)

    def count(self) -> int:
        return self.memory.count("wordnet").count

    def query(self, vector: np.ndarray, k: int, flt: Any) -> dict[str, list]:
        m = self.models
        query_filter = None if flt is None else m.Filter(must=[
            m.FieldCondition(key="pos", match=m.MatchValue(value=flt.pos)),
            m.FieldCondition(key="offset", range=m.Range(gte=flt.lo, lt=flt.hi))])
        with self.lock:
            points = self.memory.query_points("wordnet", query=vector.tolist(), limit=k, query_filter=query_filter,
                                              with_payload=True, search_params=self.search_params).points
        metas = [dict(p.payload) for p in points]
        docs = [md.pop("document") for md in metas]
        return {"ids": [str(p.id) for p in points], "metadatas": metas, "documents": docs}

    def max_requests(self, workload: str) -> int | None:
        return QDRANT_REQUESTS["filtered" if workload.startswith("filtered") else "unfiltered"]

    def ingest_override(self) -> dict[str, Any] | None:
        return {"points": self.persisted, "seconds": self.persist_s, "vectors_per_s": self.persisted / self.persist_s,
                "note": f"persistent (path=...), first {self.persisted:,} points only: one SQLite commit per point"}

    def close(self) -> None:
        self.disk.close()
        self.memory.close()


class ChromaPersistent(Peer):
    """chromadb.PersistentClient with an HNSW collection configured like ours."""

    name, dist = "chroma", "chromadb"

    def __init__(self, folder: Path, dim: int) -> None:
        super().__init__(folder, dim)
        import chromadb
        from chromadb.config import Settings

        self.client = chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))
        hnsw = {"space": "cosine", "max_neighbors": M, "ef_construction": EF_CONSTRUCTION, "ef_search": EF}
        self.collection = self.client.create_collection("wordnet", configuration={"hnsw": hnsw},
                                                        embedding_function=None)
        self.params = {"hnsw": hnsw, "other": "library defaults (batch_size 100, sync_threshold 1000)",
                       "max_requests": {"filtered": FILTERED_REQUESTS}}

    def upsert(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict], documents: list[str]) -> None:
        self.collection.upsert(ids=ids, embeddings=vectors, metadatas=metadatas, documents=documents)

    def count(self) -> int:
        return self.collection.count()

    def query(self, vector: np.ndarray, k: int, flt: Any) -> dict[str, list]:
        where = None if flt is None else {"$and": [{"pos": {"$eq": flt.pos}}, {"offset": {"$gte": flt.lo}},
                                                   {"offset": {"$lt": flt.hi}}]}
        r = self.collection.query(query_embeddings=vector[None], n_results=k, where=where,
                                  include=["metadatas", "documents"])
        return {"ids": r["ids"][0], "metadatas": [dict(md) for md in r["metadatas"][0]], "documents": r["documents"][0]}

    def max_requests(self, workload: str) -> int | None:
        return FILTERED_REQUESTS if workload.startswith("filtered") else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.clear_system_cache()


class Tqdb(Peer):
    """tqdb Database (4-bit TurboQuant engine) with its HNSW index built after ingest."""

    name, dist = "tqdb", "tqdb"

    def __init__(self, folder: Path, dim: int) -> None:
        super().__init__(folder, dim)
        import tqdb

        self.db = tqdb.Database.open(str(folder), dim, bits=4, metric="cosine")
        self.params = {"bits": 4, "metric": "cosine", "max_degree": 2 * M, "ef_construction": EF_CONSTRUCTION,
                       "ann_search_list_size": EF, "other": "defaults: fast_mode, rerank off, wal_flush_threshold 5000",
                       "max_requests": {"filtered": FILTERED_REQUESTS}}

    def upsert(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict], documents: list[str]) -> None:
        self.db.insert_batch(ids, vectors, metadatas, documents, mode="upsert")

    def finish(self) -> None:
        self.db.flush()
        self.db.create_index(max_degree=2 * M, ef_construction=EF_CONSTRUCTION)

    def count(self) -> int:
        return self.db.count()

    def query(self, vector: np.ndarray, k: int, flt: Any) -> dict[str, list]:
        hits = self.db.search(vector, k, filter=None if flt is None else flt.where(), _use_ann=True,
                              ann_search_list_size=EF, include=["id", "metadata", "document"])
        return {"ids": [h["id"] for h in hits], "metadatas": [dict(h["metadata"]) for h in hits],
                "documents": [h["document"] for h in hits]}

    def max_requests(self, workload: str) -> int | None:
        return FILTERED_REQUESTS if workload.startswith("filtered") else None

    def close(self) -> None:
        self.db.close()


PEERS: list[type[Peer]] = [QdrantLocal, ChromaPersistent, Tqdb]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def peer_caller(peer: Peer, corpus: Any, workload: Any, k: int) -> Callable[[int], Callable]:
    """Per-client callables (the peer object is shared, as a server would share it) for request i."""
    def make(_client: int) -> Callable[[int], dict[str, list]]:
        def call(i: int) -> dict[str, list]:
            return peer.query(corpus.queries[workload.query[i]], k, workload.filters[i] if workload.filters else None)
        return call
    return make


def measure_peer(kind: type[Peer], corpus: Any, workloads: Sequence[Any], requests: int) -> dict[str, Any]:
    """Ingest (timed), finish (timed), then every workload at 1 and 8 clients."""
    import service

    with tempfile.TemporaryDirectory(prefix=f"svc-{kind.name}-") as tmp:
        peer = kind(Path(tmp) / "db", corpus.vectors.shape[1])
        try:
            with Timer() as timer:
                for s in progress(list(service.batches(len(corpus))), desc=f"ingest {kind.name}", leave=False):
                    peer.upsert(corpus.ids[s], corpus.vectors[s], corpus.metadatas[s], corpus.documents[s])
            with Timer() as build:
                peer.finish()
            count = peer.count()
            if count != len(corpus):
                raise RuntimeError(f"count {count} after ingesting {len(corpus)} points")
            total = timer.seconds + build.seconds
            ingest = {"name": kind.name, "points": len(corpus), "batch": service.BATCH, "seconds": total,
                      "upsert_s": timer.seconds, "index_build_s": build.seconds,
                      "vectors_per_s": len(corpus) / total}
            if build.seconds > 0.5:
                ingest["note"] = f"upserts {timer.seconds:.1f} s + index build {build.seconds:.1f} s"
            ingest.update(peer.ingest_override() or {})
            print(f"  {kind.name} ingest: {ingest['vectors_per_s']:,.0f} vectors/s")
            rows = []
            for workload in workloads:
                n = min(requests, peer.max_requests(workload.name) or requests)
                rows += service.measure_queries(kind.name, lambda w: peer_caller(peer, corpus, w, service.K),
                                                [workload], corpus, n)
        finally:
            peer.close()
    return {"ingest": ingest, "rows": rows, "params": peer.params, "version": _version(kind.dist)}


def run_peers(corpus: Any, workloads: Sequence[Any], requests: int, select: Sequence[str] | None = None,
              quick: bool = False) -> dict[str, Any]:
    """Every selected peer; a peer that cannot be imported or fails is recorded under "failed"."""
    out: dict[str, Any] = {"ingest": [], "rows": [], "params": {}, "versions": {}, "failed": []}
    for kind in PEERS:
        if select and not any(part in kind.name for part in select):
            continue
        print(f"{kind.name}:")
        try:
            start = time.perf_counter()
            got = measure_peer(kind, corpus, workloads, requests)
        except ImportError as e:
            out["failed"].append({"name": kind.name, "error": f"not installed ({e})"})
            print(f"  {kind.name}: not installed ({e})")
            continue
        except Exception as e:  # noqa: BLE001 - a failing peer is reported, the others still run
            traceback.print_exc()
            out["failed"].append({"name": kind.name, "error": repr(e)})
            continue
        out["ingest"].append(got["ingest"])
        out["rows"] += got["rows"]
        out["params"][kind.name] = got["params"]
        out["versions"][kind.name] = got["version"]
        print(f"  {kind.name} done in {time.perf_counter() - start:.0f} s")
    return out


def main() -> None:
    """Peers only: `python bench/service_peers.py [--quick] [--select chroma ...]` (same workload as service.py)."""
    import service

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--requests", type=int, default=service.REQUESTS)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--select", nargs="*", default=None)
    args = parser.parse_args()
    args.peers_only, args.skip_peers, args.skip_server, args.api_key = True, False, True, None
    payload = service.run(args)
    print(f"wrote {service.save(payload, args)}")
    print(service.markdown(payload))


if __name__ == "__main__":
    main()
