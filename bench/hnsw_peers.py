"""Peer graph (HNSW-like) indexes for the HNSW benchmark, and the one way every graph index is measured.

Each index is built twice on the base (after a throw-away build on 1,024 rows): first on all cores,
then on one core (wall seconds, both pinned with common.pinned); the one-core build is kept, warmed
up with a small search, then searched on one core with a batch of all queries at k for every beam
width ef (best of ``repeat`` per ef) and scored by recall@k. Bytes/vector include the graph.

Peers and their settings (checked on hnswlib 0.8.0, faiss-cpu 1.15.1, tqdb 0.9.1, rabitqlib 0.7.1):
  * hnswlib 0.8.0 (``pip install hnswlib==0.8.0``: no wheel, built from the sdist with gcc, whose
    setup.py compiles with -O3 -march=native unless HNSWLIB_NO_NATIVE is set): ``Index(space="ip")``,
    ``init_index(M=16, ef_construction=200, random_seed=100)``, ``add_items(num_threads=t)``;
    search ``set_ef(ef)`` then ``knn_query(q, k, num_threads=1)``. float32 vectors. Bytes/vector =
    ``save_index`` file size / n (vector, layer-0 links (2M+1)*4, label 8, upper-level links).
  * FAISS ``HNSW32`` and ``HNSW32,SQ8`` from ``index_factory(d, ..., METRIC_INNER_PRODUCT)`` with
    FAISS defaults (M=32, so 64 links on layer 0; efConstruction=40; recorded in params); threads
    via OpenMP; search passes ``SearchParametersHNSW(efSearch=ef)``. Bytes/vector =
    ``serialize_index`` size / n.
  * tqdb ``Database.open(tmpdir, d, bits=4, metric="ip")`` (defaults: fast_mode, rerank=False),
    ``insert_batch`` + ``flush`` + ``create_index(max_degree=32, ef_construction=200)`` (alpha=1.2,
    n_refinements=5: its defaults), all inside the timed build; search is ``query(q, n_results=k,
    _use_ann=True, ann_search_list_size=ef, include=["id"])``, whose list-of-dict answer is turned
    back into int ids inside the timed call. Its beam is floored internally (recall and QPS barely
    move between ef=10 and ef=32). Bytes/vector = (stats()['live_codes_bytes'] + graph.bin) / n.
    Its rayon pool is sized once (RAYON_NUM_THREADS = all cores, set by flat_peers); pinning decides.
  * rabitqlib ``HnswIndex(d, n, M=16, ef_construction=200, nbits=b, metric="ip")`` built from 16
    ``RaBitQKMeans`` centroids (the library's examples use 16; k-means counted in the build time),
    ``build(num_threads=t)``; search ``search(q, k, ef, num_threads=1)`` (1-bit estimate, refined
    with the extra bits when it may enter the top k). ``SymqgIndex(d, max_degree=32, "ip",
    quantization_bits=b)`` (b = 4 or 8) built with ``build(ef_construction=200, num_threads=t)``
    (PiPNN init), searched with ``search_batch(q, k, ef, num_threads=1)``. Bytes/vector = saved
    file size / n (SymphonyQG stores 1-bit codes of every neighbour next to each vector).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from common import Timer, pinned, recall_at_k
from flat_peers import THREADS, Peer, Unsupported, _best_of, _ids_array
from peers import _faiss_details, _short_faiss_error

EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)

GraphSearch = Callable[[np.ndarray, int, int], np.ndarray]  # (queries, k, ef) -> ids (nq, k) int64, one thread


@dataclass
class Graph(Peer):
    """A built graph index: a Peer whose search takes (queries, k, ef) on one thread."""

    handle: Any = None  # the library object, for extra measurements (filtered search)


GraphBuilder = Callable[[np.ndarray, str, int, contextlib.ExitStack], Graph]  # (base, metric, threads, stack)


@dataclass(frozen=True)
class GraphSpec:
    """One graph index configuration: display name, bits per coordinate (None: float), library, builder."""

    name: str
    bits: int | None
    family: str
    build: GraphBuilder


# ----------------------------------------------------------------------------- measurement


def build_graph(spec: GraphSpec, base: np.ndarray, metric: str,
                stack: contextlib.ExitStack) -> tuple[dict[str, Any], Graph | None]:
    """Build one index on all cores and on one; keeps the one-core build (its resources on `stack`) and returns its
    row (name, build seconds, bytes/vector; an "error" and no graph when the build failed) with the graph."""
    out: dict[str, Any] = {"name": spec.name, "bits": spec.bits, "family": spec.family, "metric": metric,
                           "n": len(base)}
    try:
        _warm_build(spec.build, base, metric)
        graph, build_s = _timed_builds(spec.build, base, metric, stack)
    except ImportError as exc:
        return out | {"error": f"not installed: {exc}"}, None
    except Exception as exc:  # noqa: BLE001 - one failing peer must not stop the benchmark
        return out | {"error": _short_error(exc)}, None
    return out | {"build_s": build_s, "bytes_per_vector": graph.bytes_per_vector(), "bytes_note": graph.bytes_note,
                  "params": graph.params}, graph


def interleaved_curves(graphs: dict[str, Graph], queries: np.ndarray, gt_ids: np.ndarray, k: int = 10,
                       efs: Sequence[int] = EFS, repeat: int = 3) -> dict[str, list[dict[str, float]] | str]:
    """recall@k and one-thread QPS of a batch search of all queries, per graph and ef, best of `repeat` rounds; each
    round times every graph at every ef in turn, so a machine whose speed drifts over minutes slows every graph
    alike and the ratios stay same-round ones (timing each graph's rounds back to back, minutes apart, skewed them).
    A graph whose search fails gets its error instead of a curve."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best: dict[tuple[str, int], float] = {}
    recall: dict[tuple[str, int], float] = {}
    failed: dict[str, str] = {}

    def timed(name: str, search: Callable[[], np.ndarray]) -> tuple[float, np.ndarray] | None:
        """One timed search, or None (and the graph marked failed) when it raises."""
        try:
            return _best_of(search, 1)
        except Exception as exc:  # noqa: BLE001 - one failing peer must not stop the benchmark
            failed[name] = _short_error(exc)
            return None

    with pinned(1):
        for name, graph in graphs.items():
            timed(name, partial(graph.search, q[:8], k, max(efs)))  # warm-up: thread pools, caches, lazy loads
        for _ in range(repeat):
            for name, graph in graphs.items():
                for ef in efs:
                    if name not in failed and (run := timed(name, partial(graph.search, q, k, ef))):
                        best[name, ef] = min(best.get((name, ef), run[0]), run[0])
                        recall[name, ef] = recall_at_k(run[1], gt_ids, k)
    return {name: failed[name] if name in failed else
            [{"ef": ef, "qps": len(q) / best[name, ef], f"recall@{k}": recall[name, ef]} for ef in efs]
            for name in graphs}


def _short_error(exc: Exception) -> str:
    """A one-line description of a failure (FAISS C++ locations stripped)."""
    text = _short_faiss_error(exc) if isinstance(exc, RuntimeError) else str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _warm_build(build: GraphBuilder, base: np.ndarray, metric: str, rows: int = 1024) -> None:
    """Build once on a few rows (and drop it) so one-off set-up (pools, imports) stays out of build_s."""
    with contextlib.ExitStack() as stack, pinned(1):
        build(base[:rows], metric, 1, stack)


def _timed_builds(build: GraphBuilder, base: np.ndarray, metric: str,
                  stack: contextlib.ExitStack) -> tuple[Graph, dict[str, float]]:
    """Build on every thread count of THREADS (most first) and keep the one-thread index; wall seconds by count."""
    seconds: dict[str, float] = {}
    graph = None
    for threads in sorted(THREADS, reverse=True):
        del graph  # free the previous build before the next one
        with contextlib.ExitStack() as scratch, pinned(threads), Timer() as timer:
            graph = build(base, metric, threads, scratch)
            if threads == 1:
                stack.enter_context(scratch.pop_all())  # keep its resources (temp folders) alive
        seconds[str(threads)] = timer.seconds
    return graph, dict(sorted(seconds.items(), key=lambda kv: int(kv[0])))


# ----------------------------------------------------------------------------- hnswlib


def hnswlib_graph(M: int, ef_construction: int, base: np.ndarray, metric: str, threads: int,
                  stack: contextlib.ExitStack) -> Graph:
    """hnswlib float32 HNSW (space 'ip' or 'l2')."""
    import hnswlib

    index = hnswlib.Index(space=metric, dim=base.shape[1])
    index.init_index(max_elements=len(base), M=M, ef_construction=ef_construction, random_seed=100)
    index.add_items(base, np.arange(len(base)), num_threads=threads)

    def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
        """Set the beam, then one-thread batch query."""
        index.set_ef(ef)
        return index.knn_query(q, k, num_threads=1)[0].astype(np.int64)

    params = {"M": M, "ef_construction": ef_construction, "random_seed": 100, "space": metric,
              "HNSWLIB_NO_NATIVE": os.environ.get("HNSWLIB_NO_NATIVE")}
    return Graph(search, partial(_saved_bytes, index.save_index, len(base)),
                 "save_index file / n: float32 vector + layer-0 links + label + upper-level links", params, index)


def _saved_bytes(save: Callable[[str], Any], n: int) -> float:
    """Size of the file written by save(path), per vector."""
    with tempfile.TemporaryDirectory(prefix="hnsw-bench-") as folder:
        path = os.path.join(folder, "index")
        save(path)
        return os.path.getsize(path) / n


# ----------------------------------------------------------------------------- FAISS


def faiss_graph(factory: str, base: np.ndarray, metric: str, threads: int, stack: contextlib.ExitStack) -> Graph:
    """FAISS index_factory HNSW index with FAISS's default efConstruction; threads via OpenMP."""
    import faiss

    faiss_metric = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}[metric]
    try:
        index = faiss.index_factory(base.shape[1], factory, faiss_metric)
        index.train(base)
        index.add(base)
    except RuntimeError as exc:
        raise Unsupported(_short_faiss_error(exc)) from exc

    def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
        """Batch search with efSearch = ef (OpenMP threads set by the caller's pinning)."""
        return index.search(q, k, params=faiss.SearchParametersHNSW(efSearch=ef))[1]

    hnsw = index.hnsw
    params = _faiss_details(index) | {"M": hnsw.nb_neighbors(1), "layer0_links": hnsw.nb_neighbors(0),
                                      "efConstruction": hnsw.efConstruction, "efSearch_default": hnsw.efSearch}
    return Graph(search, lambda: len(faiss.serialize_index(index)) / index.ntotal,
                 "serialize_index size / n: storage (float32 or SQ8 codes) + links + levels", params, index)


# ----------------------------------------------------------------------------- tqdb


def tqdb_graph(bits: int, max_degree: int, ef_construction: int, base: np.ndarray, metric: str, threads: int,
               stack: contextlib.ExitStack) -> Graph:
    """tqdb Database with its HNSW index (create_index) in a temporary folder; library defaults otherwise."""
    import tqdb

    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="tqdb-hnsw-"))
    db = tqdb.Database.open(folder, base.shape[1], bits=bits, metric=metric)
    stack.callback(db.close)  # runs before the folder is removed
    db.insert_batch([str(i) for i in range(len(base))], base)
    db.flush()
    db.create_index(max_degree=max_degree, ef_construction=ef_construction)
    stats = db.stats()

    def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
        """ANN batch query, answer turned into an int id array (-1 where fewer than k came back)."""
        rows = db.query(q, n_results=k, _use_ann=True, ann_search_list_size=ef, include=["id"])
        return _ids_array([[int(hit["id"]) for hit in row] for row in rows], k)

    graph_bytes = os.path.getsize(os.path.join(folder, "graph.bin"))
    params = {"max_degree": max_degree, "ef_construction": ef_construction, "alpha": "default (1.2)",
              "n_refinements": "default (5)", "disk_bytes_per_vector": stats["total_disk_bytes"] / len(base),
              "graph_bin_bytes_per_vector": graph_bytes / len(base)}
    return Graph(search, lambda: (stats["live_codes_bytes"] + graph_bytes) / len(base),
                 "(stats()['live_codes_bytes'] + graph.bin) / n: codes + per-vector floats + graph; "
                 "string ids not counted", params, db)


# ----------------------------------------------------------------------------- rabitqlib


def rabitqlib_hnsw(nbits: int, M: int, ef_construction: int, base: np.ndarray, metric: str, threads: int,
                   stack: contextlib.ExitStack, clusters: int = 16) -> Graph:
    """rabitqlib HnswIndex (RaBitQ codes, graph linked on raw vectors) over RaBitQKMeans centroids."""
    import rabitqlib

    kmeans = rabitqlib.RaBitQKMeans(base.shape[1], clusters, num_threads=threads, seed=0,
                                    final_assignment=rabitqlib.FinalAssignmentMode.Exact)
    kmeans.train(base)
    index = rabitqlib.HnswIndex(base.shape[1], len(base), M, ef_construction, nbits, metric)
    index.build(base, kmeans.centroids, kmeans.assignments, num_threads=threads)

    def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
        """One-thread batch search with beam ef; ids as int64."""
        return index.search(q, k, ef, num_threads=1)[0].astype(np.int64)

    params = {"M": M, "ef_construction": ef_construction, "nbits": nbits, "clusters": clusters,
              "fast_quantization": False}
    return Graph(search, partial(_saved_bytes, index.save, len(base)),
                 "saved file / n: links + cluster id + label + 1-bit and extra-bit codes with factors", params, index)


def rabitqlib_symqg(bits: int, max_degree: int, ef_construction: int, base: np.ndarray, metric: str, threads: int,
                    stack: contextlib.ExitStack) -> Graph:
    """rabitqlib SymqgIndex (SymphonyQG: FastScan neighbour codes) with quantized vectors."""
    import rabitqlib

    if len(base) <= max_degree:
        raise Unsupported(f"SymphonyQG needs more than max_degree={max_degree} points")
    index = rabitqlib.SymqgIndex(base.shape[1], max_degree, metric, bits)
    index.build(base, ef_construction, num_threads=threads)

    def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
        """One-thread batch search with beam max(ef, k); ids as int64."""
        return index.search_batch(q, k, max(ef, k), num_threads=1)[0].astype(np.int64)

    params = {"max_degree": max_degree, "ef_construction": ef_construction, "quantization_bits": bits,
              "init": "pipnn"}
    return Graph(search, partial(_saved_bytes, index.save, len(base)),
                 "saved file / n: vector code + 1-bit codes of its neighbours + neighbour ids", params, index)


# ----------------------------------------------------------------------------- the list


def peer_specs() -> list[GraphSpec]:
    """Every peer configuration of the HNSW benchmark."""
    return [
        GraphSpec("hnswlib:M16", None, "hnswlib", partial(hnswlib_graph, 16, 200)),
        GraphSpec("faiss:HNSW32", None, "faiss", partial(faiss_graph, "HNSW32")),
        GraphSpec("faiss:HNSW32,SQ8", 8, "faiss", partial(faiss_graph, "HNSW32,SQ8")),
        GraphSpec("tqdb:4bit,hnsw", 4, "tqdb", partial(tqdb_graph, 4, 32, 200)),
        GraphSpec("rabitqlib:hnsw,4bit", 4, "rabitqlib", partial(rabitqlib_hnsw, 4, 16, 200)),
        GraphSpec("rabitqlib:hnsw,8bit", 8, "rabitqlib", partial(rabitqlib_hnsw, 8, 16, 200)),
        GraphSpec("rabitqlib:symqg,4bit", 4, "rabitqlib", partial(rabitqlib_symqg, 4, 32, 200)),
        GraphSpec("rabitqlib:symqg,8bit", 8, "rabitqlib", partial(rabitqlib_symqg, 8, 32, 200)),
    ]
