"""HNSW benchmark: tqsearch HNSWIndex vs hnswlib, FAISS HNSW, tqdb and rabitqlib graphs, one process, same data.

Data: WordNet MiniLM (116,659 x 384, gloss queries, inner product), k=10. Ours: HNSWIndex (M=16,
ef_construction=200) at 4 bits, 4 bits with adaptive tiers (the same bytes), 4 bits + rerank "fp16" and
rerank=8 (default factor 2), 5 and 6 bits. Peers and their settings: see bench/hnsw_peers.py. Per
index: build time on 1 and on all cores, bytes/vector including the graph, and a one-thread recall@10 vs
QPS curve over ef (batch of all queries, best of --repeat rounds; every index stays built and each round times
them all at every ef in turn, so a drift in machine speed slows every index alike). Also filtered search of our 4-bit
indexes (random 1%, 10%, 50% of the ids allowed, seeded; exact top-10 among the allowed rows) and the
issues' targets.
Writes bench/results/hnsw.json, docs/hnsw.png and the "hnsw" section of docs/benchmarks.md.

    python bench/hnsw.py                                          # full run
    python bench/hnsw.py --limit 20000 --queries 200 --repeat 1   # quick check (JSON: hnsw_quick.json, no docs)
    python bench/hnsw.py --render-only                            # redo docs from bench/results/hnsw.json
"""

from __future__ import annotations  # noqa: I001 (common must load before numpy)

import argparse
import contextlib
import itertools
import json
import math
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from common import (  # before numpy: common sets BLAS threads first
    BENCH_MD,
    RESULTS,
    _dist_version,
    exact_knn,
    finish_plot,
    load_wordnet,
    machine_info,
    pinned,
    progress,
    recall_at_k,
    update_markdown_section,
    write_json,
)

import numpy as np

import tqsearch
from flat_peers import THREADS, _best_of
from hnsw_peers import EFS, Graph, GraphSpec, build_graph, interleaved_curves, peer_specs

K = 10
M, EF_CONSTRUCTION = 16, 200
OURS = [(4, None, False), (4, None, True), (4, "fp16", False), (4, 8, False), (5, None, False),
        (6, None, False)]  # (bits, rerank, adaptive)
FILTER_FRACTIONS = (0.01, 0.10, 0.50)
FILTER_EFS = (64, 128)
FILTER_SEED = 0
FILTERED = ("tqsearch:4bit", "tqsearch:4bit,adaptive", "tqsearch:4bit+fp16")  # filtered search measured on these
BAND = (0.90, 0.98)  # target 1: recall range where hnswlib is compared
FULL_QUERIES = 1000


# ----------------------------------------------------------------------------- our index


def tqsearch_graph(bits: int, rerank: str | int | None, adaptive: bool, base: np.ndarray, metric: str, threads: int,
                   stack: contextlib.ExitStack) -> Graph:
    """Our HNSWIndex built on `threads` cores, searched on one."""
    index = tqsearch.HNSWIndex(base.shape[1], bits, metric=metric, rerank=rerank, M=M,
                               ef_construction=EF_CONSTRUCTION, threads=threads, adaptive=adaptive)
    index.add(base)

    def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
        """One-thread batch search with beam ef; ids only."""
        return index.search(q, k, ef=ef, threads=1)[1]

    usage = index.memory_usage()
    params = {"M": M, "ef_construction": EF_CONSTRUCTION, "rerank": rerank, "tiers": index.tiers,
              "rerank_factor": "library default (2 at 4 bits); beam >= k * factor" if rerank else None,
              "memory_usage": usage}
    note = "sum(memory_usage().values()) / n: codes + per-vector floats + graph links + int64 ids + rerank tier"
    return Graph(search, lambda: sum(usage.values()) / len(index), note, params, index)


def ours_specs() -> list[GraphSpec]:
    """Our configurations: 4-bit, 4-bit adaptive, 4-bit + rerank (fp16, 8-bit), 5-bit, 6-bit."""
    def label(bits: int, rerank: str | int | None, adaptive: bool) -> str:
        """tqsearch:4bit, tqsearch:4bit,adaptive, tqsearch:4bit+fp16, tqsearch:4bit+rerank8, ..."""
        suffix = "" if rerank is None else "+fp16" if rerank == "fp16" else f"+rerank{rerank}"
        return f"tqsearch:{bits}bit{suffix}{',adaptive' if adaptive else ''}"

    return [GraphSpec(label(b, r, a), b, "tqsearch", partial(tqsearch_graph, b, r, a)) for b, r, a in OURS]


# ----------------------------------------------------------------------------- filtered search


def filtered(graph: Graph, name: str, base: np.ndarray, queries: np.ndarray, repeat: int,
             k: int = K) -> list[dict[str, Any]]:
    """Recall@k (vs exact top-k among allowed rows) and one-thread QPS with a random allowed-id filter."""
    rng, index, out = np.random.default_rng(FILTER_SEED), graph.handle, []
    for fraction in progress(FILTER_FRACTIONS, desc="filtered", leave=False):
        allowed = np.sort(rng.choice(len(base), max(k, round(fraction * len(base))), replace=False))
        gt = allowed[exact_knn(base[allowed], queries, k)]
        for ef in FILTER_EFS:
            def search(ef: int = ef, allowed: np.ndarray = allowed) -> np.ndarray:
                """One-thread filtered batch search; ids only."""
                return index.search(queries, k, filter=allowed, ef=ef, threads=1)[1]

            with pinned(1):
                search()  # warm-up
                seconds, found = _best_of(search, repeat)
            out.append({"index": name, "fraction": fraction, "allowed": len(allowed), "ef": ef, "qps": len(queries) / seconds,
                        f"recall@{k}": recall_at_k(found, gt, k)})
    return out


# ----------------------------------------------------------------------------- run


def dataset(limit: int | None, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WordNet gloss data: base (first `limit` rows), the first `queries` queries and their exact top-100."""
    base, xq, gt = load_wordnet("gloss", limit=limit)
    return base, np.ascontiguousarray(xq[:queries]), gt[:queries]


def run(limit: int | None, queries: int, repeat: int, skip_peers: bool,
        select: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure every selected index; returns {"settings", "rows", "filtered"} (targets added by the caller)."""
    base, xq, gt = dataset(limit, queries)
    specs = ours_specs() + ([] if skip_peers else peer_specs())
    specs = [s for s in specs if not select or any(part in s.name for part in select)]
    rows, graphs, bar = [], {}, progress(specs, desc="hnsw builds")
    with contextlib.ExitStack() as stack:  # every one-core build stays alive (~3 GB) for the interleaved rounds
        for spec in bar:
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(spec.name)
            row, graph = build_graph(spec, base, "ip", stack)
            rows.append(row | {"queries": len(xq), "k": K})
            if graph is not None:
                graphs[spec.name] = graph
        curves = interleaved_curves(graphs, xq, gt, K, EFS, repeat)
        for row in rows:  # a failed build has no entry; a failed search an error instead of its curve
            curve = curves.get(row["name"])
            if isinstance(curve, str):
                row["error"] = curve
            elif curve is not None:
                row["curve"] = curve
        found = [filtered(graphs[name], name, base, xq, repeat) for name in FILTERED if name in graphs]
    settings = {"dataset": "wordnet_minilm gloss", "cpu": machine_info()["cpu"], "simd": tqsearch.simd_level(),
                "n": len(base), "dim": base.shape[1], "queries": len(xq), "k": K,
                "metric": "ip", "efs": list(EFS), "repeat": repeat, "build_threads": list(THREADS),
                "search_threads": 1, "filter": {"fractions": list(FILTER_FRACTIONS), "efs": list(FILTER_EFS),
                                                "seed": FILTER_SEED, "kind": "int64 id array"},
                "versions": {d: _dist_version(d) for d in ("hnswlib", "faiss-cpu", "tqdb", "rabitqlib", "tqsearch")}}
    return {"settings": settings, "rows": rows, "filtered": [r for part in found for r in part]}


# ----------------------------------------------------------------------------- curves and targets


def frontier(curve: list[dict[str, Any]], k: int = K) -> list[tuple[float, float]]:
    """Pareto points (recall, qps) of a curve, recall ascending (so QPS descending)."""
    points = sorted(((p[f"recall@{k}"], p["qps"]) for p in curve), key=lambda t: (-t[0], -t[1]))
    kept, best = [], -math.inf
    for recall, qps in points:
        if qps > best:
            kept.append((recall, qps))
            best = qps
    return kept[::-1]


def qps_at(curve: list[dict[str, Any]], recall: float, k: int = K) -> float | None:
    """QPS at `recall` along the curve's Pareto frontier (log-linear between points); None if not reached."""
    pts = frontier(curve, k)
    if not pts or recall > pts[-1][0] + 1e-9:
        return None
    if recall <= pts[0][0]:
        return pts[0][1]
    for (r0, q0), (r1, q1) in itertools.pairwise(pts):
        if r0 <= recall <= r1:
            t = (recall - r0) / (r1 - r0)
            return math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0)))
    return pts[-1][1]


def max_recall(curve: list[dict[str, Any]], k: int = K) -> float:
    """Best recall@k on a curve."""
    return max(p[f"recall@{k}"] for p in curve)


def _target(name: str, goal: str, measured: str, met: bool | None, **details: Any) -> dict[str, Any]:
    """One target record for JSON and markdown."""
    return {"target": name, "goal": goal, "measured": measured, "met": met, "details": details}


def target_speed(by: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(1) 4-bit >= 1.3x hnswlib's QPS at every recall in [0.90, 0.98] hnswlib reaches, <= 25% of its bytes."""
    name, goal = "4-bit vs hnswlib, recall 0.90-0.98", ">= 1.3x QPS at each recall, <= 25% bytes/vector"
    ours, hn = by.get("tqsearch:4bit"), by.get("hnswlib:M16")
    if not ours or not hn:
        return _target(name, goal, "missing tqsearch:4bit or hnswlib:M16", None)
    measured = [p[f"recall@{K}"] for p in hn["curve"]]
    lo, hi = max(BAND[0], min(measured)), min(BAND[1], max(measured))
    grid = {round(x, 2) for x in np.arange(BAND[0], BAND[1] + 1e-9, 0.01) if lo - 1e-9 <= x <= hi + 1e-9}
    levels = sorted(grid | {round(r, 4) for r in measured if BAND[0] <= r <= BAND[1]})
    points = [_speed_point(ours["curve"], hn["curve"], r) for r in levels]
    byte_ratio = ours["bytes_per_vector"] / hn["bytes_per_vector"]
    ratios = [p["ratio"] for p in points if p["ratio"] is not None]
    reached = len(ratios) == len(points)
    met = bool(points) and reached and min(ratios) >= 1.3 and byte_ratio <= 0.25
    low = f"min {min(ratios):.2f}x" if ratios else "no ratio"
    text = (f"{low} over {len(points)} recall levels" + ("" if reached else f" ({len(points) - len(ratios)} not "
            "reached)") + f"; bytes {byte_ratio:.1%}")
    return _target(name, goal, text if points else "hnswlib has no recall in [0.90, 0.98]", met if points else None,
                   points=points, bytes_ratio=byte_ratio)


def _speed_point(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], recall: float) -> dict[str, Any]:
    """Both QPS at one recall level and their ratio (None where ours does not reach it)."""
    q_ours, q_theirs = qps_at(ours, recall), qps_at(theirs, recall)
    ratio = q_ours / q_theirs if q_ours is not None and q_theirs else None
    return {"recall": recall, "qps": q_ours, "hnswlib_qps": q_theirs, "ratio": ratio, "reached": q_ours is not None}


def target_rerank(by: dict[str, dict[str, Any]], goal_recall: float = 0.995) -> dict[str, Any]:
    """(2) with rerank: recall@10 >= 0.995 at >= hnswlib's QPS there (or at hnswlib's best recall)."""
    name, goal = "4-bit + rerank vs hnswlib", f"recall@10 >= {goal_recall} at >= hnswlib's QPS"
    hn = by.get("hnswlib:M16")
    variants = [r for n, r in by.items() if n.startswith("tqsearch:4bit+")]
    if not hn or not variants:
        return _target(name, goal, "missing hnswlib:M16 or a rerank variant", None)
    ref = min(goal_recall, max_recall(hn["curve"]))
    ref_qps = qps_at(hn["curve"], ref)
    checks = []
    for row in variants:
        q = qps_at(row["curve"], goal_recall)
        checks.append({"name": row["name"], "qps": q, "max_recall": max_recall(row["curve"]),
                       "ratio": q / ref_qps if q is not None else None, "met": q is not None and q >= ref_qps})
    best = max(checks, key=lambda c: (c["met"], c["ratio"] or 0, c["max_recall"]))
    text = (f"{best['name']}: " + (f"{best['qps']:,.0f} QPS = {best['ratio']:.2f}x" if best["qps"] else
            f"max recall {best['max_recall']:.4f}") + f" (hnswlib {ref_qps:,.0f} QPS at recall {ref:.4f})")
    return _target(name, goal, text, any(c["met"] for c in checks), hnswlib_recall=ref, hnswlib_qps=ref_qps,
                   variants=checks)


def target_build(by: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(3) one-core build of the 4-bit index <= FAISS HNSW32's."""
    name, goal = "build on 1 core vs faiss:HNSW32", "<= faiss:HNSW32 build s (efConstruction 40)"
    ours, peer = by.get("tqsearch:4bit"), by.get("faiss:HNSW32")
    if not ours or not peer:
        return _target(name, goal, "missing tqsearch:4bit or faiss:HNSW32", None)
    a, b = ours["build_s"]["1"], peer["build_s"]["1"]
    return _target(name, goal, f"{a:.1f} s vs {b:.1f} s ({a / b:.2f}x)", a <= b, ours_s=a, faiss_s=b)


def target_codes_only(by: dict[str, dict[str, Any]], goal: float = 0.97) -> dict[str, Any]:
    """(5) a 4-bit index without a rerank tier reaches recall@10 >= goal at some ef."""
    name = "4-bit, codes only (no rerank tier)"
    rows = [r for n, r in by.items() if n.startswith("tqsearch:4bit") and "+" not in n]
    if not rows:
        return _target(name, f"recall@10 >= {goal}", "missing tqsearch:4bit", None)
    best = {r["name"]: max(r["curve"], key=lambda p: p[f"recall@{K}"]) for r in rows}
    text = "; ".join(f"{n}: {p[f'recall@{K}']:.4f} at ef={p['ef']} ({p['qps']:,.0f} QPS, "
                     f"{by[n]['bytes_per_vector']:,.0f} B/vec)" for n, p in best.items())
    return _target(name, f"recall@10 >= {goal} at some ef", text,
                   any(p[f"recall@{K}"] >= goal for p in best.values()), best=best)


def target_filtered(rows: list[dict[str, Any]], goal: float = 0.95) -> dict[str, Any]:
    """(4) filtered recall@10 >= 0.95 at 1%, 10% and 50% allowed (best of the measured efs), per index."""
    name = "filtered recall@10 (1%, 10%, 50% allowed)"
    if not rows:
        return _target(name, f">= {goal}", "not measured", None)
    best = {ix: {f: max(r[f"recall@{K}"] for r in rows if r["index"] == ix and r["fraction"] == f)
                 for f in dict.fromkeys(r["fraction"] for r in rows)} for ix in dict.fromkeys(r["index"] for r in rows)}
    text = "; ".join(f"{ix}: " + ", ".join(f"{f:.0%}: {v:.3f}" for f, v in by.items()) for ix, by in best.items())
    met = {ix: all(v >= goal for v in by.values()) for ix, by in best.items()}
    return _target(name, f">= {goal} at each", text + f" (best of ef {'/'.join(map(str, FILTER_EFS))})",
                   any(met.values()), best_recall=best, met_by=[ix for ix, ok in met.items() if ok])


def targets(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the issues' targets on one run's rows."""
    by = {r["name"]: r for r in payload["rows"] if "error" not in r}
    return [target_speed(by), target_rerank(by), target_build(by), target_filtered(payload["filtered"]),
            target_codes_only(by)]


# ----------------------------------------------------------------------------- reporting


def markdown(payload: dict[str, Any]) -> str:
    """The "hnsw" section of docs/benchmarks.md."""
    s = payload["settings"]
    lines = ["## HNSW index (bench/hnsw.py)\n",
             (f"WordNet MiniLM {s['n']:,} x {s['dim']}, {s['queries']} gloss queries, inner product, k={s['k']}. "
             f"Each index is built on {_cores(s['build_threads'])} (build s), and the 1-core build is "
             "searched on 1 core: a batch of all queries per ef, best of "
             f"{s['repeat']} rounds that each time every index at every ef in turn (machine drift slows all alike). "
             "bytes/vec = everything held per vector, graph included (ours: codes, floats, links, "
             "ids, rerank tier). Ours: M=16, ef_construction=200; `,adaptive`: adaptive=True (the first batch's PCA "
             "splits the same bytes into tiers, tiers.py); `+fp16`/`+rerank8` re-score k*2 candidates. "
             "Peer settings: bench/hnsw_peers.py (FAISS keeps its defaults, efConstruction=40). "
             f"CPU: {s.get('cpu', '?')}, kernel set {s.get('simd', '?')}.\n"),
             "![hnsw](hnsw.png)\n"]
    lines += _summary_table(payload["rows"], s["build_threads"]) + [""] + _curve_table(payload["rows"]) + [""]
    lines += _filtered_table(payload["filtered"]) + [""] + _targets_table(payload["targets"])
    return "\n".join(lines)


def _cores(threads: Sequence[int]) -> str:
    """'2 cores and on 1' / '1 core' for the build-thread counts of a run."""
    more = [t for t in threads if t > 1]
    return f"{max(more)} cores and on 1" if more else "1 core"


def _summary_table(rows: list[dict[str, Any]], threads: Sequence[int]) -> list[str]:
    """One row per index: size, build times, recall/QPS at ef=64, best recall, QPS at recall 0.95."""
    builds = [str(t) for t in threads]
    out = ["| method | bits | bytes/vec | " + " | ".join(f"build s {t}t" for t in builds) + " | recall@10 ef=64 "
           "| QPS ef=64 | best recall@10 | QPS at recall 0.95 |", "|---|---|---|" + "---|" * (len(builds) + 4)]
    for r in rows:
        if "error" in r:
            dashes = "– | " * len(builds)
            out.append(f"| {r['name']} | {r['bits'] or '–'} | – | {dashes}{r['error'][:70]} | | | |")
            continue
        at64 = next((p for p in r["curve"] if p["ef"] == 64), r["curve"][-1])
        q95 = qps_at(r["curve"], 0.95)
        out.append(f"| {r['name']} | {r['bits'] or 'f32'} | {r['bytes_per_vector']:,.0f} | "
                   + " | ".join(f"{r['build_s'][t]:.1f}" if t in r["build_s"] else "–" for t in builds)
                   + f" | {at64[f'recall@{K}']:.3f} | {at64['qps']:,.0f} | {max_recall(r['curve']):.4f} | "
                   + ("not reached" if q95 is None else f"{q95:,.0f}") + " |")
    return out


def _curve_table(rows: list[dict[str, Any]]) -> list[str]:
    """Recall@10 / QPS for every ef (one thread)."""
    efs = [p["ef"] for p in next((r["curve"] for r in rows if "curve" in r), [])]
    out = ["### Recall@10 / QPS (1 thread) by ef\n", "| method | " + " | ".join(f"ef={e}" for e in efs) + " |",
           "|---|" + "---|" * len(efs)]
    for r in rows:
        if "curve" in r:
            cells = [f"{p[f'recall@{K}']:.3f} / {p['qps']:,.0f}" for p in r["curve"]]
            out.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return out


def _filtered_table(rows: list[dict[str, Any]]) -> list[str]:
    """Filtered search of the 4-bit index."""
    out = [f"### Filtered search (random allowed ids, seed {FILTER_SEED})\n",
           ("Recall@10 against the exact top-10 among the allowed rows; QPS on 1 thread, filter passed as an id "
            "array.\n"),
           "| index | allowed | rows | ef | recall@10 | QPS |", "|---|---|---|---|---|---|"]
    out += [f"| {r['index']} | {r['fraction']:.0%} | {r['allowed']:,} | {r['ef']} | {r[f'recall@{K}']:.3f} | {r['qps']:,.0f} |"
            for r in rows]
    return out


def _targets_table(goals: list[dict[str, Any]]) -> list[str]:
    """The issue's targets with the measured values."""
    out = ["### Targets\n", "| target | goal | measured | status |", "|---|---|---|---|"]
    status = {True: "met", False: "NOT met", None: "n/a"}
    out += [f"| {g['target']} | {g['goal']} | {g['measured']} | {status[g['met']]} |" for g in goals]
    return out


def plot(payload: dict[str, Any], path: Path) -> Path:
    """Recall@10 (x) vs one-thread QPS (y, log), one curve per index; ours solid, peers dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6.5))
    ok = [r for r in payload["rows"] if "curve" in r]
    palette = plt.get_cmap("tab20").colors
    colors = [palette[i] for i in (*range(0, 20, 2), *range(1, 20, 2))]
    for i, r in enumerate(ok):
        pts = [(p[f"recall@{K}"], p["qps"]) for p in r["curve"]]  # in ef order
        mine = r["family"] == "tqsearch"
        ax.plot(*zip(*pts), "-o" if mine else "--s", ms=3.5, lw=1.8 if mine else 1.2, color=colors[i % 20],
                label=f"{r['name']} ({r['bytes_per_vector']:,.0f} B/vec)")
    ax.axvspan(*BAND, color="0.9", zorder=0, label="target band 0.90-0.98")
    low = min((p[f"recall@{K}"] for r in ok for p in r["curve"]), default=0.5)
    s = payload["settings"]
    ax.set(yscale="log", xlim=(max(low - 0.02, 0.5), 1.001), xlabel=f"recall@{K}", ylabel="queries / s, 1 thread (log)",
           title=f"HNSW on WordNet MiniLM {s['n']:,} x {s['dim']}, gloss queries (ours solid, peers dashed)")
    return finish_plot(fig, ax, path, "lower left")


# ----------------------------------------------------------------------------- main


def main() -> None:
    """Run (or re-render), write JSON, plot and markdown (docs only for a full run), print the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="use only the first N base rows (exact top-10 recomputed)")
    parser.add_argument("--queries", type=int, default=FULL_QUERIES, help="use the first N queries (max 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed searches per ef (best kept)")
    parser.add_argument("--skip-peers", action="store_true", help="only our indexes")
    parser.add_argument("--select", nargs="*", help="only indexes whose name contains one of these")
    parser.add_argument("--render-only", action="store_true", help="redo docs from bench/results/hnsw.json")
    args = parser.parse_args()
    if args.render_only:
        payload = json.loads((RESULTS / "hnsw.json").read_text())["results"]
        full = True
    else:
        payload = run(args.limit, args.queries, args.repeat, args.skip_peers, args.select)
        payload["targets"] = targets(payload)
        full = args.limit is None and args.queries >= FULL_QUERIES and not args.skip_peers and not args.select
        print(f"wrote {write_json('hnsw' if full else 'hnsw_quick', payload)}")
    text = markdown(payload)
    if full:
        update_markdown_section("hnsw", text)
        print(f"wrote {BENCH_MD} and {plot(payload, BENCH_MD.parent / 'hnsw.png')}")
    else:
        print(f"partial run: docs untouched; plot at {plot(payload, Path(tempfile.gettempdir()) / 'hnsw_quick.png')}")
    print(text)


if __name__ == "__main__":
    main()
