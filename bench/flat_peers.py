"""Peer flat (exhaustive-scan) indexes for the flat-index benchmark, measured one common way.

Each peer is built on the base (train + add, wall seconds on ``add_threads`` cores, after a throw-away
build on 1,024 rows; best of ``repeat`` builds for those under 1 s), warmed up with a small search,
then timed as a batch search of all queries at k (best of ``repeat``) on 1 and on all cores, and
scored by recall@k and the TurboQuant paper's Recall@1@k (from one extra k=64 search).

Peers and their settings (checked on faiss-cpu 1.15.1, turbovec 1.1.2, tqdb 0.9.1, rabitqlib 0.7.1):
  * FAISS ``Flat``; ``RR,RaBitQfs<b>`` (IndexRaBitQFastScan: qb=8 query bits, centered=False, centre =
    data mean; b>1 rescoring is built in: a candidate whose 1-bit estimate and error bound can beat the
    heap top is rescored with all bits, no knob); ``RR,EDEN<b>`` (unbiased per-vector scale);
    ``RR,SQtqmse<b>`` (no per-vector norm: its fixed codebook assumes unit-norm input, so it is
    meaningless on raw L2 data); ``PQ<m>x4fs`` at equal code bytes to b-bit TurboQuant: m = d*b/4
    sub-quantizers of 4 bits. FAISS needs d % m == 0 (``PQ191x4fs`` on d=384 is refused) and pads m
    to even for fast-scan, so b=4 gives one dimension per sub-quantizer (d=384: PQ384x4fs, 192 B)
    and b=2 two (PQ192x4fs, 96 B); TurboQuant adds a 4-byte norm on top. EDEN/SQtqmse flat search
    decodes every code for every query, hence their ``max_queries`` cap (200).
  * turbovec ``TurboQuantIndex(d, b)``, optionally ``calibrate`` (TQ+) on 1,024 random rows
    (counted in add_s); inner product only, so it is skipped on L2 data.
  * tqdb ``Database.open(tmpdir, d, bits=b, metric=...)`` with its defaults: fast_mode=True
    (MSE-only codes, no QJL), rerank=False, quantizer_type auto (dense QR rotation below d=1024);
    ``insert_batch`` with string ids, then ``flush``; search is ``query(q, n_results=k,
    include=["id"])`` (exhaustive unless ``_use_ann``/``nprobe``), whose list-of-dict answer is
    turned back into int ids inside the timed call. add_s includes its WAL/segment writes to /tmp.
    Its ip search is a LUT scan, but its l2 search decodes and inverse-rotates every stored vector
    for every query (~100x slower), so on L2 data it is timed once, on as many queries as fit in ~5 s.
  * rabitqlib has no flat index; an ``IvfIndex`` with one cluster (centroid = data mean) searched
    with nprobe=1 is an exhaustive RaBitQ scan (fast-scan 1-bit + ex-bits rescoring).

turbovec and tqdb size their rayon pools once, at first use; RAYON_NUM_THREADS is set to all cores
here so later core pinning (thread affinity) alone decides how many cores they get.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from common import ALL_CORES, Timer, load_mnist10k, load_sift5k, load_wordnet, pinned, recall_1_at, recall_at_k
from peers import _faiss_details, _sample_rows, _short_faiss_error, _turbovec

os.environ.setdefault("RAYON_NUM_THREADS", str(len(ALL_CORES)))

RECALL_1_KS = (1, 2, 4, 8, 16, 32, 64)
THREADS = tuple(sorted({1, len(ALL_CORES)}))

Search = Callable[[np.ndarray, int, int], np.ndarray]  # (queries, k, threads) -> ids (nq, k) int64


class Unsupported(Exception):
    """A peer that cannot run on this data or metric; reported as {"error": message}."""


@dataclass
class Peer:
    """A built peer index: its batch search, its per-vector storage and the settings it used."""

    search: Search
    bytes_per_vector: Callable[[], float]
    bytes_note: str
    params: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[np.ndarray, str, contextlib.ExitStack], Peer]


# ----------------------------------------------------------------------------- measurement


def measure(
    name: str,
    bits: int | None,
    build: Builder,
    base: np.ndarray,
    queries: np.ndarray,
    gt_ids: np.ndarray,
    metric: str,
    k: int = 10,
    max_queries: int | None = None,
    repeat: int = 3,
    add_threads: int = 1,
) -> dict[str, Any]:
    """Build one peer and measure build time, bytes/vector, QPS at 1 and all cores, recall@k and R@1@k."""
    start = time.perf_counter()
    nq = len(queries) if max_queries is None else min(max_queries, len(queries))
    q, gt = np.ascontiguousarray(queries[:nq], dtype=np.float32), gt_ids[:nq]
    out: dict[str, Any] = {"name": name, "bits": bits, "metric": metric, "n": len(base), "queries": nq, "k": k}
    try:
        _warm_build(build, base, metric, add_threads)
    except Unsupported as exc:
        return out | {"error": str(exc)}
    with contextlib.ExitStack() as stack:
        with pinned(add_threads):
            peer, add_s = _timed_build(build, base, metric, stack, repeat)
        out |= {"add_s": add_s, "add_threads": add_threads}
        qps, found = {}, None
        for threads in THREADS:
            with pinned(threads):
                peer.search(q[:4], k, threads)  # warm-up: thread pools, LUTs, codebooks
                seconds, found = _best_of(partial(peer.search, q, k, threads), repeat)
            qps[threads] = nq / seconds
        with pinned(THREADS[-1]):
            deep = peer.search(q, max(RECALL_1_KS), THREADS[-1])
        out |= {"bytes_per_vector": peer.bytes_per_vector(), "bytes_note": peer.bytes_note, "qps": qps}
        out |= {f"recall@{k}": recall_at_k(found, gt, k), "recall_1_at": recall_1_at(deep, gt, RECALL_1_KS)}
    return out | {"params": peer.params, "wall_s": time.perf_counter() - start}


def _warm_build(build: Builder, base: np.ndarray, metric: str, threads: int, rows: int = 1024) -> None:
    """Build once on a few rows (and drop it) so one-off set-up (pools, codebooks) stays out of add_s."""
    with contextlib.ExitStack() as stack, pinned(threads):
        build(base[:rows], metric, stack)


def _timed_build(
    build: Builder, base: np.ndarray, metric: str, stack: contextlib.ExitStack, repeat: int, cheap_s: float = 1.0
) -> tuple[Peer, float]:
    """Build up to `repeat` times while a build takes under cheap_s (first big allocations are slow)."""
    best = float("inf")
    for _ in range(repeat):
        with Timer() as timer:
            peer = build(base, metric, stack)
        best = min(best, timer.seconds)
        if timer.seconds >= cheap_s:
            break
    return peer, best


def _best_of(fn: Callable[[], np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    """Fastest wall time of `repeat` calls to fn, and the last result (for scoring)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


# ----------------------------------------------------------------------------- FAISS


def faiss_peer(factory: str, base: np.ndarray, metric: str, stack: contextlib.ExitStack,
               rotation_seed: int | None = None) -> Peer:
    """FAISS index_factory(factory) trained and filled with the base; threads via OpenMP. rotation_seed re-seeds
    the leading RR transform (None: FAISS's fixed default), for recall averaged over rotations."""
    import faiss

    faiss_metric = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}[metric]
    try:
        index = faiss.index_factory(base.shape[1], factory, faiss_metric)
        if rotation_seed is not None:
            faiss.downcast_VectorTransform(index.chain.at(0)).init(rotation_seed)
        index.train(base)
        index.add(base)
    except RuntimeError as exc:  # unparseable factory string, or a codec that rejects this data
        raise Unsupported(_short_faiss_error(exc)) from exc
    params = _faiss_details(index) | _faiss_extra(index)
    if "SQtqmse" in factory and metric == "l2":
        params["note"] = "no per-vector norm: the codebook assumes unit-norm input, so raw L2 data is out of scope"
    return Peer(
        search=lambda q, k, threads: index.search(q, k)[1],
        bytes_per_vector=lambda: float(index.sa_code_size()),
        bytes_note="sa_code_size(): codes + per-vector factors (= serialised growth per row); "
        "the RR rotation matrix is per index, not counted",
        params=params,
    )


def _faiss_extra(index: Any) -> dict[str, Any]:
    """Settings _faiss_details leaves out: RaBitQ fast-scan centring and rescoring, PQ fast-scan layout."""
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    extra: dict[str, Any] = {}
    if isinstance(inner, faiss.IndexRaBitQFastScan):
        extra |= {"rabitq_centered": inner.centered, "rabitq_rescore": "built-in error-bound rescoring (b>1)"}
    if isinstance(inner, faiss.IndexPQFastScan):
        extra |= {"pq_m": inner.M, "pq_nbits": inner.nbits, "bbs": inner.bbs}
    return extra


def pq_fastscan_factory(dim: int, bits: int) -> str:
    """PQ<m>x4fs whose code bytes (m/2) equal a b-bit-per-coordinate code (d*b/8): m = d*b/4."""
    m, rest = divmod(dim * bits, 4)
    if rest or dim % m:
        raise ValueError(f"no PQ<m>x4fs with d % m == 0 matches {bits} bits at d={dim}")
    return f"PQ{m}x4fs"


# ----------------------------------------------------------------------------- turbovec


def turbovec_peer(bits: int, calibrate: bool, base: np.ndarray, metric: str, stack: contextlib.ExitStack) -> Peer:
    """turbovec TurboQuantIndex at `bits`, TQ+-calibrated on 1,024 random rows if asked; IP only."""
    if metric != "ip":
        raise Unsupported("turbovec scores by inner product only; not run on L2 data")
    tv = _turbovec()
    sample = _sample_rows(base, 1024) if calibrate else None

    def make() -> Any:
        """An empty index with the calibration (if any) already fitted."""
        index = tv.TurboQuantIndex(base.shape[1], bits)
        if sample is not None:
            index.calibrate(sample)
        return index

    index = make()
    index.add(base)
    return Peer(
        search=lambda q, k, threads: index.search(q, k)[1],
        bytes_per_vector=lambda: (len(index.to_bytes()) - len(make().to_bytes())) / len(base),
        bytes_note="to_bytes() growth per row: codes + one float32 (length-renormalisation) per vector",
        params={"calibrated": calibrate, "calibration_rows": 0 if sample is None else len(sample)},
    )


# ----------------------------------------------------------------------------- tqdb


def tqdb_peer(bits: int, base: np.ndarray, metric: str, stack: contextlib.ExitStack) -> Peer:
    """tqdb Database (brute-force search, library defaults) in a temporary folder."""
    import tqdb

    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="tqdb-"))
    db = tqdb.Database.open(folder, base.shape[1], bits=bits, metric=metric)
    stack.callback(db.close)  # runs before the folder is removed (ExitStack unwinds in reverse)
    db.insert_batch([str(i) for i in range(len(base))], base)
    db.flush()
    stats = db.stats()

    def search(q: np.ndarray, k: int, threads: int) -> np.ndarray:
        """Exhaustive batch query, answer turned into an int id array (-1 where fewer than k came back)."""
        rows = db.query(q, n_results=k, include=["id"])
        return _ids_array([[int(hit["id"]) for hit in row] for row in rows], k)

    return Peer(
        search=search,
        bytes_per_vector=lambda: stats["live_codes_bytes"] / len(base),
        bytes_note="stats()['live_codes_bytes'] per row: in-memory codes + per-vector floats; "
        "string ids and the on-disk WAL/segments not counted (see params.disk_bytes_per_vector)",
        params={"disk_bytes_per_vector": stats["total_disk_bytes"] / len(base)} | _tqdb_manifest(folder),
    )


def _tqdb_manifest(folder: str) -> dict[str, Any]:
    """The settings tqdb actually chose (fast_mode, rerank, quantizer type), from its manifest.json."""
    import json

    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    keys = ("fast_mode", "rerank_enabled", "quantizer_type", "seed")
    return {key: manifest.get(key) for key in keys}


def _ids_array(rows: list[list[int]], k: int) -> np.ndarray:
    """Pad ragged id lists with -1 into an (n, k) int64 array."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


# ----------------------------------------------------------------------------- rabitqlib


def rabitqlib_peer(bits: int, base: np.ndarray, metric: str, stack: contextlib.ExitStack) -> Peer:
    """rabitqlib IvfIndex with a single cluster (centroid = mean), i.e. an exhaustive RaBitQ scan."""
    index = _rabitqlib_ivf1(base, bits, metric)
    return Peer(
        search=lambda q, k, threads: index.search(q, k, 1, num_threads=threads)[0].astype(np.int64),
        bytes_per_vector=partial(_rabitqlib_bytes, index, base, bits, metric),
        bytes_note="saved-file growth per row: sign bits + ex-bit codes + per-vector float factors + a 4-byte id",
        params={"num_clusters": 1, "nprobe": 1, "high_accuracy": "default", "fast_quantization": False},
    )


def _rabitqlib_ivf1(base: np.ndarray, bits: int, metric: str) -> Any:
    """Build a one-cluster rabitqlib IvfIndex on the cores this thread may use."""
    import rabitqlib

    index = rabitqlib.IvfIndex(base.shape[1], len(base), 1, bits, metric)
    assignment = np.zeros(len(base), dtype=np.uint32)
    index.build(base, base.mean(axis=0, keepdims=True), assignment, num_threads=len(os.sched_getaffinity(0)))
    return index


def _rabitqlib_bytes(index: Any, base: np.ndarray, bits: int, metric: str, small: int = 1024) -> float:
    """Bytes per row as the growth of the saved index from `small` rows to the full base."""
    with tempfile.TemporaryDirectory(prefix="rabitqlib-") as folder:
        sizes = []
        for which, built in (("full", index), ("small", _rabitqlib_ivf1(base[:small], bits, metric))):
            built.save(f"{folder}/{which}")
            sizes.append(os.path.getsize(f"{folder}/{which}"))
    return (sizes[0] - sizes[1]) / (len(base) - small)


# ----------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Spec:
    """One peer configuration; slow scans get a query cap and may get fewer timing repeats."""

    name: str
    bits: int | None
    build: Builder
    max_queries: int | None = None
    repeat: int | None = None  # None: the caller's default


def peer_specs(n: int, dim: int, metric: str) -> list[Spec]:
    """Every peer configuration for n x dim data under `metric` ("ip" or "l2")."""
    specs = [Spec("faiss:Flat", None, partial(faiss_peer, "Flat"))]
    specs += [Spec(f"faiss:RR,RaBitQfs{b}", b, partial(faiss_peer, f"RR,RaBitQfs{b}")) for b in (1, 2, 4)]
    for family in ("EDEN", "SQtqmse"):  # decode every code per query: 15-45 ms/query at 116k x 384
        specs += [Spec(f"faiss:RR,{family}{b}", b, partial(faiss_peer, f"RR,{family}{b}"), 200) for b in (2, 4)]
    for b in (2, 4):
        factory = pq_fastscan_factory(dim, b)
        specs.append(Spec(f"faiss:{factory}", b, partial(faiss_peer, factory)))
    for b in (2, 4):
        specs.append(Spec(f"turbovec:{b}bit", b, partial(turbovec_peer, b, False)))
        specs.append(Spec(f"turbovec:{b}bit+calibrate", b, partial(turbovec_peer, b, True)))
    slow = {"max_queries": _tqdb_l2_queries(n, dim), "repeat": 1} if metric == "l2" else {}
    specs += [Spec(f"tqdb:{b}bit", b, partial(tqdb_peer, b), **slow) for b in (2, 4)]
    specs += [Spec(f"rabitqlib:ivf1,{b}bit", b, partial(rabitqlib_peer, b)) for b in (1, 2, 4)]
    return specs


def _tqdb_l2_queries(n: int, dim: int, seconds: float = 5.0) -> int:
    """How many queries tqdb's slow L2 scan gets through in `seconds` on one core (at least 10)."""
    # it decodes and inverse-rotates (dense d x d) every stored vector per query: ~1.7e9 n*d^2 per core-second
    return max(10, int(seconds * 1.7e9 / (n * dim * dim)))


def load_dataset(dataset: str, quick: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(base, queries, gt_ids, metric) for wordnet (gloss queries), sift5k or mnist10k; quick shrinks wordnet."""
    if dataset == "wordnet":
        base, queries, gt = load_wordnet("gloss", limit=20_000 if quick else None)
        return (base, queries[:200], gt[:200], "ip") if quick else (base, queries, gt, "ip")
    loaders = {"sift5k": load_sift5k, "mnist10k": load_mnist10k}
    if dataset not in loaders:
        raise ValueError(f"dataset must be wordnet, sift5k or mnist10k, not {dataset!r}")
    return (*loaders[dataset](), "l2")


def peers_for(
    dataset: str, quick: bool = False, k: int = 10, select: Sequence[str] | None = None, repeat: int = 3
) -> list[dict[str, Any]]:
    """Measure every peer (or those whose name contains one of `select`) on one dataset."""
    base, queries, gt, metric = load_dataset(dataset, quick)
    results = []
    for spec in peer_specs(*base.shape, metric):
        if select is None or any(s in spec.name for s in select):
            runs = repeat if spec.repeat is None else spec.repeat
            result = measure(spec.name, spec.bits, spec.build, base, queries, gt, metric, k, spec.max_queries, runs)
            results.append({"dataset": dataset} | result)
    return results


def _main() -> None:
    """Print one JSON line per peer result: `python flat_peers.py [--quick] [--select S ...] DATASET ...`."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=("wordnet", "sift5k", "mnist10k"))
    parser.add_argument("--quick", action="store_true", help="wordnet: 20k base rows, 200 queries")
    parser.add_argument("--select", nargs="*", help="only peers whose name contains one of these")
    args = parser.parse_args()
    for dataset in args.datasets:
        for result in peers_for(dataset, args.quick, select=args.select):
            print(json.dumps(result, default=float), flush=True)


if __name__ == "__main__":
    _main()
