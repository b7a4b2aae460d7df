"""Shared benchmark helpers: data loaders, exact k-NN, recall, core pinning, timing, reporting.

Numpy is the only hard dependency; faiss, turbovec and tqdm are touched only if present.
The data folder is ``<repo>/../shared/data`` unless the ``TQSEARCH_DATA`` env var points elsewhere.
"""

from __future__ import annotations

import os

# Idle OpenBLAS workers spin on whatever core a timed section is pinned to; keep numpy's BLAS on one
# thread (set before numpy loads) so 1-core timings measure only the code under test.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib
import datetime
import gzip
import importlib.metadata
import json
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("TQSEARCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
RESULTS = Path(__file__).resolve().parent / "results"
BENCH_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
ALL_CORES: frozenset[int] = frozenset(os.sched_getaffinity(0))

Dataset = tuple[np.ndarray, np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------- data


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip", block: int = 256) -> np.ndarray:
    """Exact top-k ids (int64, best first, equal scores by smaller id) by brute force in float32 blocks."""
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', not {metric!r}")
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(base))
    half_norms = 0.5 * np.einsum("ij,ij->i", base, base) if metric == "l2" else None
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        scores = queries[start : start + block] @ base.T
        if half_norms is not None:
            scores -= half_norms  # -||q - x||^2 / 2 up to a per-query constant
        out[start : start + block] = _top_k_desc(scores, k)
    return out


def _top_k_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise ids of the k largest scores, sorted by score descending then id ascending."""
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def load_wordnet(queries: str = "gloss", limit: int | None = None) -> Dataset:
    """WordNet MiniLM embeddings: (base f32 (n,384), queries f32 (1000,384), gt_ids int64 (1000,100)), IP metric."""
    if queries not in ("gloss", "word"):
        raise ValueError(f"queries must be 'gloss' or 'word', not {queries!r}")
    folder = DATA / "wordnet_minilm"
    parts = [np.load(folder / f"base_fp16.part{i}.npy", mmap_mode="r") for i in (0, 1)]
    if limit is not None:
        parts = _truncate_parts(parts, limit)
    base = np.concatenate(parts).astype(np.float32)
    prefix = "word_" if queries == "word" else ""
    xq = np.load(folder / f"{prefix}queries.npy").astype(np.float32)
    gt = np.load(folder / f"{prefix}gt_ids.npy").astype(np.int64)
    if limit is not None:
        gt = exact_knn(base, xq, gt.shape[1], "ip")
    return base, xq, gt


def _truncate_parts(parts: list[np.ndarray], limit: int) -> list[np.ndarray]:
    """Keep only the first `limit` rows across consecutive array parts (so unused parts are never read)."""
    kept, left = [], limit
    for part in parts:
        kept.append(part[: max(left, 0)])
        left -= len(part)
    return kept


def load_sift5k() -> Dataset:
    """NGT's 5k SIFT base + TEXMEX siftsmall queries: (base f32 (5000,128), queries f32 (100,128), gt int64), L2."""
    folder = DATA / "ann_sift5k"
    table = np.loadtxt(folder / "sift-dataset-5k.tsv", delimiter="\t", dtype=np.float32)
    base = np.ascontiguousarray(table[:, :128])  # column 129 is an id, not a coordinate
    return base, _read_fvecs(folder / "siftsmall_query.fvecs"), np.load(folder / "gt_ids.npy").astype(np.int64)


def _read_fvecs(path: Path) -> np.ndarray:
    """Read a TEXMEX .fvecs file (each row: int32 dim, then dim float32 values)."""
    raw = np.fromfile(path, dtype=np.int32)
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].copy().view(np.float32)


def load_mnist10k() -> Dataset:
    """MNIST test set split 9000/1000: (base f32 (9000,784), queries f32 (1000,784), gt int64 (1000,100)), L2."""
    folder = DATA / "ann_mnist10k"
    images = _read_idx_gz(folder / "t10k-images-idx3-ubyte.gz").reshape(10000, -1).astype(np.float32)
    return images[:9000], images[9000:], np.load(folder / "gt_ids.npy").astype(np.int64)


def _read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzipped uint8 IDX file (MNIST format: magic, big-endian dims, then data)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# ----------------------------------------------------------------------------- metrics


def recall_at_k(found_ids: np.ndarray, gt_ids: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:, :k] ∩ gt[:, :k]| / k (the usual ANN recall@k)."""
    found, gt = np.asarray(found_ids)[:, :k], np.asarray(gt_ids)[:, :k]
    hits = (found[:, :, None] == gt[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def recall_1_at(found_ids: np.ndarray, gt_ids: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """TurboQuant paper's Recall@1@k: fraction of queries whose exact top-1 is within found[:, :k]."""
    found, top1 = np.asarray(found_ids), np.asarray(gt_ids)[:, :1]
    return {k: float((found[:, :k] == top1).any(axis=1).mean()) for k in ks}


# ----------------------------------------------------------------------------- cores and timing


def pin_cores(n: int) -> frozenset[int]:
    """Restrict every thread of this process to the first n allowed cores; return the previous core set."""
    if not 1 <= n <= len(ALL_CORES):
        raise ValueError(f"n must be in 1..{len(ALL_CORES)}, not {n}")
    previous = frozenset(os.sched_getaffinity(0))
    restore_cores(sorted(ALL_CORES)[:n])
    return previous


def restore_cores(cores: Iterable[int]) -> None:
    """Set the core set of all threads (existing pools included) and matching library thread counts."""
    cores = set(cores)
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cores)
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(len(cores))


@contextlib.contextmanager
def pinned(n: int) -> Iterator[None]:
    """Run a block on n cores, then restore the previous core set."""
    previous = pin_cores(n)
    try:
        yield
    finally:
        restore_cores(previous)


def timeit(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall time in seconds of `repeat` calls to fn (min is the least noisy estimator)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class Timer:
    """Timer for a with-block: `.seconds` (wall) and `.cpu_seconds` (process CPU, to see if threads got cores)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def __enter__(self) -> Timer:
        self._start, self._cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self.cpu_seconds = time.process_time() - self._cpu_start


def progress(iterable: Iterable, **kw: Any) -> Iterable:
    """Wrap with tqdm when it is installed, otherwise pass the iterable through unchanged."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, **kw)


# ----------------------------------------------------------------------------- reporting


def finish_plot(fig: Any, ax: Any, path: Path, legend_loc: str) -> Path:
    """The common tail of every benchmark plot: grid, small legend, tight layout, 110 dpi PNG, close."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def machine_info() -> dict[str, Any]:
    """Describe the machine and library versions so stored results can be compared fairly."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "cores_allowed": len(ALL_CORES),
        "memory_gib": _memory_gib(),
        "load_avg_1m": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": _dist_version("faiss-cpu"),
        "turbovec": _dist_version("turbovec"),
        "tqsearch": _dist_version("tqsearch"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo with its family and model numbers (which tell AMD's Zen generations apart:
    family 25 model 1 is Zen 3, family 26 Zen 5), for the figures' captions; platform.processor() where unreadable."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    numbers = f", family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info else ""
    return info.get("model name", platform.processor()) + numbers


def _memory_gib() -> float | None:
    """Total memory from /proc/meminfo in GiB, or None where it cannot be read."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def _dist_version(name: str) -> str | None:
    """Installed version of a distribution without importing it, or None if absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(name: str, payload: Any) -> Path:
    """Write bench/results/<name>.json as {"machine": ..., "results": payload}; return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"machine": machine_info(), "results": payload}
    path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return path


def update_markdown_section(section: str, markdown: str, path: Path | None = None) -> Path:
    """Replace the text between the BEGIN/END markers of `section` in docs/benchmarks.md, adding them if missing."""
    path = path or BENCH_MD
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
