"""Peer codecs (FAISS 1.15.1, turbovec 1.1.2) measured the same way as tqsearch.

FAISS 1.15.1 (``pip install faiss-cpu==1.15.1``), index_factory on d=384:
  * ``SQtqmse<b>`` (TurboQuant-MSE Lloyd-Max codes) parses only for b in {1, 2, 3, 4, 8}; 5, 6, 7
    raise "could not parse index string". Code = b*d/8 bytes and no norm, so the fixed codebook
    assumes unit-norm input (raw SIFT: recall@10 0.27). ``SQtq<b>`` (QT_<b>bit_tq, 8 more bytes,
    likely TurboQuant-prod) parses for b in 2..5. ``EDEN<b>`` and ``RaBitQ<b>`` parse for b in 1..8,
    ``RaBitQfs<b>`` is RaBitQ fast-scan; ``SQtqprod<b>`` and ``TQ<b>`` do not exist.
  * ``RR,`` adds a seeded orthogonal RandomRotationMatrix; sa_encode/sa_decode on the
    IndexPreTransform rotate and rotate back, so the MSE is in the input space.
  * index_factory defaults to METRIC_L2: pass the metric (inner product for unit-norm data).
  * EDEN defaults to the UNBIASED scale, which stretches decoded vectors (norm ~1.25 at 1 bit), so
    its plain MSE is worse than its direction error: compare ``mse_rescaled`` too.
  * IndexRaBitQ.sa_decode ignores the extra bits: RaBitQ1..8 decode to the same 1-bit vector, so
    their MSE says nothing about b > 1 (search does use all bits). RaBitQ defaults to qb=4.
  * Flat SQtqmse/EDEN searches decode every code for every query (15-45 ms per query on
    116k x 384, one core), hence ``max_queries``.

turbovec 1.1.2 (``pip install turbovec==1.1.2``): ``TurboQuantIndex(dim, bit_width)`` with bit_width
in {2, 3, 4} and dim a multiple of 8; ``add(x, chunk_size=None)``; ``search(q, k) -> (scores f32,
ids int64)`` by inner product only (normalise L2 data first); optional ``calibrate(sample)`` (TQ+);
no decode, so no MSE. Code = b*d/8 + 4 bytes (a float norm), measured from ``to_bytes``. Its rayon
pool size is fixed at first use (RAYON_NUM_THREADS, else the affinity then), so this module creates
the pool on all cores once and then restricts cores by thread affinity. The default 4096-row add
chunking is faster here than ``chunk_size=0``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from common import ALL_CORES, Timer, load_wordnet, pinned, recall_at_k


def faiss_codec(
    factory: str,
    base: np.ndarray,
    queries: np.ndarray | None = None,
    gt_ids: np.ndarray | None = None,
    k: int = 10,
    threads: int = 1,
    metric: str = "ip",
    max_queries: int | None = 200,
    mse_rows: int = 5000,
    repeat: int = 3,
) -> dict[str, Any]:
    """Build a FAISS index_factory codec on `threads` cores; report speed, MSE, code size and recall."""
    import faiss

    faiss_metric = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}[metric]
    out: dict[str, Any] = {"codec": f"faiss:{factory}", "threads": threads, "n": len(base), "metric": metric}
    with pinned(threads):
        try:
            index, timing = _best_build(lambda: faiss.index_factory(base.shape[1], factory, faiss_metric), base, repeat)
        except RuntimeError as exc:  # unparseable factory string, or a codec that rejects this data
            return out | {"error": _short_faiss_error(exc)}
        out |= timing | {"bytes_per_vector": index.sa_code_size()} | _faiss_details(index)
        if mse_rows:
            out |= _faiss_mse(index, _sample_rows(base, mse_rows), sign_only="RaBitQ" in out["index"])
        if queries is not None and gt_ids is not None:
            out |= _search(lambda q: index.search(q, k)[1], queries, gt_ids, k, max_queries)
    return out


def _short_faiss_error(exc: Exception) -> str:
    """Strip the C++ signature and source location from a FAISS exception message."""
    match = re.search(r"\.\w+:\d+: (.*)", str(exc))
    return match.group(1) if match else str(exc)


def _best_build(make: Callable[[], Any], base: np.ndarray, repeat: int) -> tuple[Any, dict[str, float]]:
    """Train+add a fresh index `repeat` times; return the last index and the fastest timing."""
    best: dict[str, float] = {"train_add_s": float("inf")}
    for _ in range(repeat):
        with Timer() as total:
            index = make()
            with Timer() as train:
                index.train(base)
            index.add(base)
        if total.seconds < best["train_add_s"]:
            best = {
                "train_add_s": total.seconds,
                "train_s": train.seconds,
                "add_s": total.seconds - train.seconds,
                "cpu_per_wall": total.cpu_seconds / total.seconds,
            }
    return index, best | {"vectors_per_s": len(base) / best["train_add_s"]}


def _faiss_details(index: Any) -> dict[str, Any]:
    """Name the quantizer inside an (optionally pre-transformed) FAISS index and its key settings."""
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    details: dict[str, Any] = {"index": type(inner).__name__}
    if isinstance(inner, faiss.IndexScalarQuantizer):
        names = {getattr(faiss.ScalarQuantizer, n): n for n in dir(faiss.ScalarQuantizer) if n.startswith("QT_")}
        details["qtype"] = names.get(inner.sq.qtype, inner.sq.qtype)
    if isinstance(inner, faiss.IndexEDEN):
        details["eden_scale"] = "unbiased" if inner.scale_type == faiss.EDENScaleType_UNBIASED else "biased"
    if "RaBitQ" in details["index"]:
        details |= {"rabitq_bits": inner.rabitq.nb_bits, "rabitq_qb": inner.qb}
    return details


def _sample_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """A fixed random sample of rows (seed 0), in their original order."""
    if len(x) <= rows:
        return x
    return x[np.sort(np.random.default_rng(0).choice(len(x), rows, replace=False))]


def _faiss_mse(index: Any, sample: np.ndarray, sign_only: bool) -> dict[str, Any]:
    """Reconstruction errors via sa_encode/sa_decode, or the reason they cannot be had."""
    try:
        decoded = index.sa_decode(index.sa_encode(sample))
    except RuntimeError as exc:
        return {"mse": None, "mse_note": f"no reconstruction: {_short_faiss_error(exc)}"}
    errors = reconstruction_errors(sample, decoded)
    if sign_only:
        errors["mse_note"] = "RaBitQ sa_decode uses only the sign bit; the mse is that of a 1-bit code"
    return errors


def reconstruction_errors(x: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """Mean ||x - x'||^2, and the same after the best per-vector rescale of x' (fair to unbiased scalings)."""
    x, decoded = x.astype(np.float64), decoded.astype(np.float64)
    sq_norms, dots = (x * x).sum(1), (x * decoded).sum(1)
    dec_norms = np.maximum((decoded * decoded).sum(1), 1e-30)
    return {
        "mse": float(((x - decoded) ** 2).sum(1).mean()),
        "mse_rescaled": float((sq_norms - dots**2 / dec_norms).mean()),
    }


def _search(
    search_ids: Callable[[np.ndarray], np.ndarray],
    queries: np.ndarray,
    gt_ids: np.ndarray,
    k: int,
    max_queries: int | None,
) -> dict[str, float]:
    """Time one batch search of the first max_queries queries and score recall@k against gt_ids."""
    nq = len(queries) if max_queries is None else min(max_queries, len(queries))
    q = np.ascontiguousarray(queries[:nq], dtype=np.float32)
    with Timer() as timer:
        ids = search_ids(q)
    return {
        "queries": nq,
        "search_s": timer.seconds,
        "queries_per_s": nq / timer.seconds,
        f"recall@{k}": recall_at_k(ids, gt_ids[:nq], k),
    }


def turbovec_add(
    base: np.ndarray,
    bits: int,
    threads: int = 1,
    queries: np.ndarray | None = None,
    gt_ids: np.ndarray | None = None,
    k: int = 10,
    max_queries: int | None = None,
    calibrate: bool = False,
    repeat: int = 3,
) -> dict[str, Any]:
    """Add the base to a turbovec TurboQuantIndex on `threads` cores; report speed, code size and recall."""
    tv = _turbovec()
    base = np.ascontiguousarray(base, dtype=np.float32)
    out: dict[str, Any] = {"codec": f"turbovec:{bits}bit", "threads": threads, "n": len(base), "metric": "ip"}
    sample = _sample_rows(base, 1024) if calibrate else None
    with pinned(threads):
        timers = []
        for _ in range(repeat):
            index = tv.TurboQuantIndex(base.shape[1], bits)
            if sample is not None:
                index.calibrate(sample)
            with Timer() as timer:
                index.add(base)
            timers.append(timer)
        best = min(timers, key=lambda t: t.seconds)
        out |= {"add_s": best.seconds, "cpu_per_wall": best.cpu_seconds / best.seconds, "calibrated": calibrate}
        out |= {"vectors_per_s": len(base) / best.seconds}
        out |= {"bytes_per_vector": _turbovec_code_bytes(tv, base, bits), "mse": None, "mse_note": "no decode API"}
        if queries is not None and gt_ids is not None:
            index.prepare()
            out |= _search(lambda q: index.search(q, k)[1], queries, gt_ids, k, max_queries)
    return out


@functools.cache
def _turbovec() -> Any:
    """Import turbovec, creating its fixed-size rayon pool on all cores so affinity alone sets the cores used."""
    import turbovec

    with pinned(len(ALL_CORES)):
        turbovec.TurboQuantIndex(8, 2).add(np.ones((4, 8), dtype=np.float32))
    return turbovec


def _turbovec_code_bytes(tv: Any, base: np.ndarray, bits: int, rows: int = 1024) -> float:
    """Bytes per stored vector, as the growth of the serialised index per added row."""
    sizes = []
    for n in (rows, 2 * rows):
        index = tv.TurboQuantIndex(base.shape[1], bits)
        index.add(np.ascontiguousarray(base[:n]))
        sizes.append(len(index.to_bytes()))
    return (sizes[1] - sizes[0]) / rows


def _smoke() -> None:
    """Measure every peer codec on WordNet (116,659 x 384, gloss queries) at 1 and 2 cores."""
    base, queries, gt = load_wordnet()
    for threads in sorted({1, len(ALL_CORES)}):
        for bits in (1, 2, 3, 4):
            for factory in (f"RR,SQtqmse{bits}", f"RR,EDEN{bits}", f"RR,RaBitQ{bits}"):
                print(faiss_codec(factory, base, queries, gt, threads=threads), flush=True)
        for bits in (2, 4):
            print(turbovec_add(base, bits, threads, queries, gt), flush=True)


if __name__ == "__main__":
    _smoke()
