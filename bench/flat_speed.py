"""Flat scan speed vs turbovec on one core: QPS at batch 1,000 and one query at a time, per kernel set.

Same process, same data, same k (10): tqsearch FlatIndex with the avx2 and avx512 kernel sets (and
scalar with --scalar) beside turbovec 1.1.2 with a one-thread rayon pool (RAYON_NUM_THREADS=1, set
before turbovec loads) and the process pinned to one core. Each row also records CPU seconds / wall
seconds of the timed searches, which stays <= 1 when one thread does the work. Inner product on every
dataset (turbovec scores by inner product only; MNIST and SIFT are scanned as raw vectors, which costs
the same as L2). Writes bench/results/flat_speed.json and the "flat-speed" section of docs/benchmarks.md.

    python bench/flat_speed.py                 # wordnet, mnist10k, sift5k; bits 1, 2, 4
    python bench/flat_speed.py --quick         # wordnet only, fewer queries
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before turbovec creates its pool (see peers._turbovec)

from typing import Any, Callable

from common import (Timer, load_mnist10k, load_sift5k, load_wordnet, pinned, update_markdown_section,
                    write_json)

import numpy as np

import tqsearch
from peers import _turbovec

K = 10
BITS = (1, 2, 4)
BATCH = 1000


def datasets(quick: bool) -> dict[str, np.ndarray]:
    """Base then queries (<= BATCH rows) of each dataset, float32."""
    out = {"wordnet": load_wordnet("gloss")[:2]}
    if not quick:
        out |= {"mnist10k": load_mnist10k()[:2], "sift5k": load_sift5k()[:2]}
    return {name: (np.ascontiguousarray(b, np.float32), np.ascontiguousarray(q[:BATCH], np.float32))
            for name, (b, q) in out.items()}


def batch_qps(search: Callable[[np.ndarray], Any], queries: np.ndarray, repeat: int) -> tuple[float, float]:
    """(QPS of one search over all queries, best of `repeat`; CPU/wall of that best run)."""
    search(queries[:8])
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        with Timer() as t:
            search(queries)
        best = min(best, (t.seconds, t.cpu_seconds / t.seconds))
    return len(queries) / best[0], best[1]


def single_qps(search: Callable[[np.ndarray], Any], queries: np.ndarray, repeat: int) -> tuple[float, float]:
    """(QPS of one search call per query, best of `repeat`; CPU/wall of that best run)."""
    return batch_qps(lambda q: [search(q[i : i + 1]) for i in range(len(q))], queries, repeat)


def searchers(base: np.ndarray, bits: int, levels: list[str]) -> dict[str, Callable[[np.ndarray], Any]]:
    """name -> search(queries) for our kernel sets and (2 and 4 bits) turbovec, all built on `base`."""
    out: dict[str, Callable[[np.ndarray], Any]] = {}
    for level in levels:
        index = tqsearch.FlatIndex(base.shape[1], bits, metric="ip", simd=level)
        index.add(base)
        out[level] = lambda q, index=index: index.search(q, K, threads=1)
    if bits in (2, 4):
        tv = _turbovec().TurboQuantIndex(base.shape[1], bits)
        tv.add(base)
        out["turbovec"] = lambda q, tv=tv: tv.search(q, K)
    return out


def run(quick: bool, levels: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name, (base, queries) in datasets(quick).items():
        singles = queries[: 50 if quick else 200]
        for bits in BITS:
            found = searchers(base, bits, levels)
            with pinned(1):
                for method, search in found.items():
                    for mode, (qps, cpu) in (("batch", batch_qps(search, queries, 3)),
                                             ("single", single_qps(search, singles, 3))):
                        rows.append({"dataset": name, "n": len(base), "dim": base.shape[1], "bits": bits,
                                     "mode": mode, "method": method, "qps": qps, "cpu_per_wall": cpu,
                                     "queries": len(queries) if mode == "batch" else len(singles)})
                        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    cpu = ", ".join(tqsearch.cpu_features()) if hasattr(tqsearch, "cpu_features") else ""
    lines = ["### Scan speed vs turbovec, one core (bench/flat_speed.py)\n",
             "k = 10, inner product, one process pinned to one core, turbovec 1.1.2 with a one-thread pool "
             "(CPU/wall of its timed runs <= 1.0x, in the JSON); batch = one search of 1,000 queries (SIFT: 100), "
             "single = one search call per query. Ratio = our QPS / turbovec QPS in the same run. "
             f"Kernel set forced per index (`simd=`); CPU: {cpu}.\n",
             "| dataset | bits | mode | kernels | QPS ours | QPS turbovec | ratio |", "|---|---|---|---|---|---|---|"]
    peer = {(r["dataset"], r["bits"], r["mode"]): r["qps"] for r in rows if r["method"] == "turbovec"}
    for r in rows:
        if r["method"] == "turbovec":
            continue
        theirs = peer.get((r["dataset"], r["bits"], r["mode"]))
        ratio = f"{r['qps'] / theirs:.2f}x" if theirs else "–"
        lines.append(f"| {r['dataset']} ({r['n']:,} x {r['dim']}) | {r['bits']} | {r['mode']} | {r['method']} | "
                     f"{r['qps']:,.0f} | {f'{theirs:,.0f}' if theirs else '–'} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scalar", action="store_true", help="also time the scalar reference kernels")
    args = parser.parse_args()
    levels = [lv for lv in tqsearch.available_simd_levels() if lv != "scalar" or args.scalar]
    rows = run(args.quick, levels)
    print(f"wrote {write_json('flat_speed_quick' if args.quick else 'flat_speed', {'rows': rows})}")
    text = markdown(rows)
    if not args.quick:
        update_markdown_section("flat-speed", text)
    print(text)


if __name__ == "__main__":
    main()
