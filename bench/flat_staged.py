"""What a staged (bit-plane) flat scan could reach with today's kernels: its first pass, timed, and its recall.

A staged scan (turbovec's default above 32,768 vectors) scores every vector on the top bit plane of its code
(the sign of each rotated coordinate), keeps the K' best estimates and re-scores those exactly. Both halves
can be measured on our current code without building it:

* first pass: our 1-bit FlatIndex (same rotation seed and centre, so its codes are exactly the sign planes of
  the 2- and 4-bit codes) searched for k = K' candidates; for 4-bit codes also our 2-bit FlatIndex, the nearest
  index we have to a pass over their top two bit planes (same rotation and centre; its Lloyd-Max levels are not
  exactly those planes' conditional means). Its QPS bounds the staged scan's from above (the exact re-scoring of
  K' vectors comes on top);
* recall: those K' candidates re-scored exactly by the 2- or 4-bit index (a filtered search per query),
  recall@10 against the float ground truth beside the whole-index scan's.

One process pinned to one core, turbovec 1.1.2 (as shipped: staged above 32,768 vectors) with a one-thread
pool, k = 10, inner product, WordNet gloss queries; batch = one search of 1,000 queries, single = one call per
query (200); QPS per CPU-second, best of 2 interleaved rounds. Writes bench/results/flat_staged.json and the
"flat-staged" section of docs/benchmarks.md.

    python bench/flat_staged.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # read by turbovec's pool when it first starts

from common import load_wordnet, pinned, recall_at_k, update_markdown_section, write_json

import numpy as np

K, BATCH, SINGLES, ROUNDS = 10, 1000, 200, 2
CANDIDATES = {1: (10, 100, 200), 2: (20, 50)}  # K' per first-pass width


def qps(searches: dict[str, Callable[[np.ndarray], Any]], queries: np.ndarray) -> dict[str, dict[str, float]]:
    """Best-of-rounds batch and single QPS (per CPU-second) of each search, interleaved, on one core."""
    runs = {"batch": (lambda f: f(queries), len(queries)),
            "single": (lambda f: [f(queries[i : i + 1]) for i in range(SINGLES)], SINGLES)}
    best: dict[tuple[str, str], float] = {}
    with pinned(1):
        for f in searches.values():
            f(queries[:8])
        for _ in range(ROUNDS):
            for mode, (run, _) in runs.items():
                for name, f in searches.items():
                    start = time.process_time()
                    run(f)
                    spent = time.process_time() - start
                    best[name, mode] = min(best.get((name, mode), spent), spent)
    return {name: {mode: runs[mode][1] / best[name, mode] for mode in runs} for name in searches}


def rescored(index: Any, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Top-K ids of each query among its candidates, scored exactly on `index`'s codes."""
    return np.stack([index.search(queries[i : i + 1], K, filter=candidates[i], threads=1)[1][0]
                     for i in range(len(queries))])


def rows_for(level: str, base: np.ndarray, queries: np.ndarray, gt: np.ndarray) -> list[dict[str, Any]]:
    """One row per (bits, method): QPS and recall@10 at one kernel set."""
    import tqsearch
    import turbovec

    indexes = {}
    for bits in (1, 2, 4):
        indexes[bits] = tqsearch.FlatIndex(base.shape[1], bits, simd=level)
        indexes[bits].add(base)
    rows = []
    for bits in (2, 4):
        index = indexes[bits]
        tv = turbovec.TurboQuantIndex(base.shape[1], bits)
        tv.add(base)
        searches = {"whole-index scan": lambda q: index.search(q, K, threads=1), "turbovec": lambda q: tv.search(q, K)}
        passes = {f"{w}-bit first pass, K' = {c}": (indexes[w], c) for w in (1, 2) if w < bits for c in CANDIDATES[w]}
        searches |= {name: (lambda p, c: lambda q: p.search(q, c, threads=1))(*pc) for name, pc in passes.items()}
        speed = qps(searches, queries)
        recall = {"whole-index scan": recall_at_k(index.search(queries, K, threads=1)[1], gt, K),
                  "turbovec": recall_at_k(tv.search(queries, K)[1], gt, K)}
        for name, (first, c) in passes.items():
            recall[name] = recall_at_k(rescored(index, queries, first.search(queries, c, threads=1)[1]), gt, K)
        rows += [{"kernels": level, "bits": bits, "method": name, "recall": recall[name], **speed[name],
                  "vs_turbovec_batch": speed[name]["batch"] / speed["turbovec"]["batch"],
                  "vs_turbovec_single": speed[name]["single"] / speed["turbovec"]["single"]} for name in searches]
    return rows


def markdown(rows: list[dict[str, Any]], n: int, dim: int) -> str:
    import tqsearch

    lines = ["### Staged scan: what its first pass reaches today (bench/flat_staged.py)\n",
             f"WordNet ({n:,} x {dim}), gloss queries, k = 10, one core, QPS per CPU-second (batch = 1,000 queries "
             "in one call, single = one call per query), best of 2 interleaved rounds in one process beside "
             "turbovec 1.1.2 as shipped (staged above 32,768 vectors). `1-bit first pass, K'` is our 1-bit scan of the "
             "sign planes (the same rotation and centre) returning K' candidates, `2-bit first pass` our 2-bit scan "
             "(the nearest we have to a pass over a 4-bit code's top two planes): the upper bound of a staged "
             "scan's QPS with today's kernels; its recall is after exact re-scoring of those K' on the 2/4-bit "
             f"codes. CPU: {', '.join(tqsearch.cpu_features())}.\n",
             "| kernels | bits | method | recall@10 | batch QPS | vs turbovec | single QPS | vs turbovec |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['kernels']} | {r['bits']} | {r['method']} | {r['recall']:.4f} | {r['batch']:,.0f} | "
              f"{r['vs_turbovec_batch']:.2f}x | {r['single']:,.0f} | {r['vs_turbovec_single']:.2f}x |" for r in rows]
    lines += ["", "How to read it: the 1-bit scan itself (K' = 10) runs at 1.6-1.9x turbovec's batch QPS with our "
              "AVX-512 kernels, but a staged scan needs about 100 candidates to keep recall@10 within 0.001 of the "
              "whole-index scan (K' = 10 loses 0.12), and collecting 100 costs about 40% of the pass (a 100th "
              "score lets far more lanes past the kernels' floors than a 10th): with K' = 100 the first pass alone "
              "is at about 0.9-1.15x turbovec (batch) on AVX-512, below issue 18's targets (2 bits >= 1.3x, 4 bits "
              ">= 1.6x) before any re-scoring. The avx2 rows run beside turbovec's VNNI "
              "kernels on this machine (flat-speed's avx2 column runs turbovec's AVX2 kernels). A 2-bit "
              "first pass for 4-bit codes needs fewer candidates (K' = 50 matches the whole scan's recall) but costs "
              "more than the 1-bit pass with 100 (0.73x vs 0.94x turbovec, batch, AVX-512), so the sign plane is "
              "the better first pass, as turbovec has it. A staged scan that leads needs a first pass cheaper than "
              "a whole 1-bit scan, not only a bit-plane layout."]
    return "\n".join(lines)


def main() -> None:
    import tqsearch

    base, queries, gt = load_wordnet("gloss")[:3]
    base = np.ascontiguousarray(base, np.float32)
    queries, gt = np.ascontiguousarray(queries[:BATCH], np.float32), gt[:BATCH]
    rows = [row for level in tqsearch.available_simd_levels() if level != "scalar"
            for row in rows_for(level, base, queries, gt)]
    print(f"wrote {write_json('flat_staged', {'rows': rows})}")
    text = markdown(rows, *base.shape)
    update_markdown_section("flat-staged", text)
    print(text)


if __name__ == "__main__":
    main()
