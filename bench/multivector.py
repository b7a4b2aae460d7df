"""Multi-vector benchmark: MultiVectorIndex (MUVERA FDEs over TurboQuant codes, Chamfer re-rank over 4-bit
token codes) against exact float32 MaxSim, mean pooling, fastembed's and the C++ reference's MUVERA, tqdb.

Data: wordnet_minilm_tokens (4,000 documents, 95,843 tokens, 500 queries, exact Chamfer top-100). Every
method answers one query at a time on one core; recall@10 is against exact Chamfer. The scaling part
repeats the exact baseline and our indexes on a 4x collection made by concatenating documents pairwise
(multivector_peers.pairwise_docs: 16,000 documents of about 48 tokens) with its own exact ground truth.
Writes bench/results/multivector.json, the "multivector" section of docs/benchmarks.md and
docs/multivector.png (full run only). `--quick` uses 1,000 documents and 100 queries.
"""

from __future__ import annotations

from common import (BENCH_MD, RESULTS, Timer, finish_plot, pinned, progress, recall_at_k, update_markdown_section,
                    write_json)

# isort: split
import argparse
import json
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from flat_peers import Unsupported
from multivector_peers import (CANDIDATES, BruteForceMaxSim, FastembedMuvera, MeanPooled, MuvfdeMuvera,
                               TqdbMultiVector, exact_chamfer_topk, load_tokens, pairwise_docs, run_queries)

import tqsearch

K, DIM = 10, 384
PAPER = {"k_sim": 5, "d_proj": 16, "r_reps": 20}
TUNED = {"k_sim": 1, "d_proj": None, "r_reps": 3, "normalize_blocks": True}
OURS = {  # name -> MultiVectorIndex settings (4-bit FDE codes, 4-bit token codes)
    "tqsearch paper FDE 10240-d, flat": {"fde": PAPER, "bits": 4, "index": "flat"},
    "tqsearch paper FDE 10240-d, HNSW": {"fde": PAPER, "bits": 4, "index": "hnsw"},
    "tqsearch tuned FDE 2304-d, flat": {"fde": TUNED, "bits": 4, "index": "flat"},
    "tqsearch tuned FDE 2304-d, HNSW": {"fde": TUNED, "bits": 4, "index": "hnsw"},
}
SCALED = ("tqsearch tuned FDE 2304-d, flat", "tqsearch tuned FDE 2304-d, HNSW")
TQDB_QUERIES, SCALE_QUERIES, SCALE_CANDIDATES = 100, 100, 100


def build_ours(name: str, docs: Sequence[np.ndarray]) -> tuple[tqsearch.MultiVectorIndex, dict[str, Any]]:
    """Build one of OURS on one core; the row holds bytes/doc, FDE encode ms/doc and build seconds."""
    spec = OURS[name]
    fde = tqsearch.FDEEncoder(DIM, **spec["fde"])
    with pinned(1):
        with Timer() as encode:
            fde.encode_documents(docs, threads=1)
        index = tqsearch.MultiVectorIndex(DIM, spec["bits"], fde, spec["index"], threads=1)
        with Timer() as build:
            index.add(docs)
    usage = index.memory_usage()
    return index, {"name": name, "family": "tqsearch", "params": {**spec, "fde_dim": fde.output_dim},
                   "bytes_per_doc": sum(usage.values()) / len(index),
                   "bytes": {k: v / len(index) for k, v in usage.items()},
                   "encode_ms_per_doc": 1e3 * encode.seconds / len(docs), "build_s": build.seconds}


def curve(search: Any, queries: Sequence[np.ndarray], gt: np.ndarray) -> list[dict[str, float]]:
    """recall@10 and ms/query at every candidate count."""
    out = []
    for n in CANDIDATES:
        ids, ms = run_queries(partial(search, candidates=n), queries)
        out.append({"candidates": n, f"recall@{K}": recall_at_k(ids, gt, K), "ms_per_query": ms})
    return out


def ours_search(index: tqsearch.MultiVectorIndex, q: np.ndarray, candidates: int) -> np.ndarray:
    return index.search([q], K, candidates=candidates, threads=1)[1][0]


def run(quick: bool) -> dict[str, Any]:
    data = load_tokens()
    docs, queries, gt = data["docs"], data["queries"], data["gt_ids"]
    if quick:
        docs, queries = docs[:1000], queries[:100]
        gt = exact_chamfer_topk(docs, queries)[1]
    float_bytes = 4 * DIM * sum(map(len, docs)) / len(docs)
    rows = []
    exact = BruteForceMaxSim(docs)
    ids, ms = run_queries(partial(exact.search, k=K), queries)
    rows.append({"name": "brute-force float32 MaxSim (numpy)", "family": "exact", "bytes_per_doc": exact.bytes_per_doc,
                 "exact": {f"recall@{K}": recall_at_k(ids, gt, K), "ms_per_query": ms}})
    for name in progress(OURS, desc="tqsearch"):
        index, row = build_ours(name, docs)
        rows.append(row | {"curve": curve(partial(ours_search, index), queries, gt)})
    rows += peer_rows(docs, queries, gt)
    return {"settings": {"docs": len(docs), "tokens": sum(map(len, docs)), "queries": len(queries), "k": K,
                         "float32_bytes_per_doc": float_bytes, "candidates": CANDIDATES},
            "rows": rows, "scaling": scaling(docs, queries[:SCALE_QUERIES], quick)}


def peer_rows(docs: Sequence[np.ndarray], queries: Sequence[np.ndarray], gt: np.ndarray) -> list[dict[str, Any]]:
    """Mean pooling, fastembed and muvfde (candidates + exact rerank), and tqdb on its first queries."""
    rows = []
    for name, make in (("mean-pooled single vector + exact rerank", MeanPooled),
                       ("fastembed Muvera (5,16,20) float32 + exact rerank", FastembedMuvera),
                       ("muvfde (C++ reference) AMS (5,16,20) float32 + exact rerank", MuvfdeMuvera)):
        try:
            peer = make(docs)
        except Unsupported as exc:
            rows.append({"name": name, "family": "peer", "error": str(exc)})
            continue
        rows.append({"name": name, "family": "peer", "bytes_per_doc": peer.bytes_per_doc,
                     "encode_ms_per_doc": 1e3 * peer.encode_s_per_doc,
                     "curve": curve(partial(peer.search, k=K), queries, gt)})
    try:
        store = TqdbMultiVector(docs)
    except Unsupported as exc:
        return rows + [{"name": "tqdb MultiVectorStore", "family": "peer", "error": str(exc)}]
    points = []
    for oversample in (1, 4):
        ids, ms = run_queries(partial(store.search, k=K, oversample=oversample), queries[:TQDB_QUERIES])
        points.append({"oversample": oversample, f"recall@{K}": recall_at_k(ids, gt[:TQDB_QUERIES], K),
                       "ms_per_query": ms})
    store.close()
    return rows + [{"name": "tqdb MultiVectorStore 4-bit", "family": "peer", "bytes_per_doc": store.bytes_per_doc,
                    "build_s": store.build_s, "points": points, "queries": TQDB_QUERIES}]


def scaling(docs: Sequence[np.ndarray], queries: Sequence[np.ndarray], quick: bool) -> list[dict[str, Any]]:
    """Exact MaxSim vs our indexes at 100 candidates on the collection and on its 4x pairwise version."""
    out = []
    for label, collection in (("original", docs), ("4x pairwise", pairwise_docs(docs, 4))):
        gt = exact_chamfer_topk(collection, queries)[1]
        _, exact_ms = run_queries(partial(BruteForceMaxSim(collection).search, k=K), queries)
        row = {"collection": label, "docs": len(collection), "tokens": sum(map(len, collection)),
               "exact_ms_per_query": exact_ms, "ours": []}
        for name in SCALED:
            index, built = build_ours(name, collection)
            ids, ms = run_queries(partial(ours_search, index, candidates=SCALE_CANDIDATES), queries)
            row["ours"].append({"name": name, f"recall@{K}": recall_at_k(ids, gt, K), "ms_per_query": ms,
                                "speedup": exact_ms / ms, "build_s": built["build_s"]})
        out.append(row)
    return out


# ----------------------------------------------------------------------------- report


def targets(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's three targets, checked on the tuned HNSW configuration (the default index kind)."""
    s, rows = payload["settings"], {r["name"]: r for r in payload["rows"]}
    best = rows[SCALED[1]]
    at100 = next(p for p in best["curve"] if p["candidates"] == 100)
    exact_ms = rows["brute-force float32 MaxSim (numpy)"]["exact"]["ms_per_query"]
    scale = [next(o for o in r["ours"] if o["name"] == best["name"]) for r in payload["scaling"]]
    ratio = s["float32_bytes_per_doc"] / best["bytes_per_doc"]
    return [
        {"target": "recall@10 vs exact Chamfer, <= 100 candidates", "goal": ">= 0.95",
         "measured": f"{at100[f'recall@{K}']:.4f} at 100 ({best['name']})", "met": at100[f"recall@{K}"] >= 0.95},
        {"target": "speed vs brute-force float32 MaxSim (one thread)", "goal": ">= 10x, growing with the collection",
         "measured": f"{exact_ms / at100['ms_per_query']:.1f}x at {s['docs']:,} docs; "
                     + " -> ".join(f"{o['speedup']:.1f}x" for o in scale) + " (original -> 4x, 100 queries)",
         "met": exact_ms / at100["ms_per_query"] >= 10 and scale[-1]["speedup"] > scale[0]["speedup"]},
        {"target": "memory per document", "goal": "<= 1/6 of float32 tokens",
         "measured": f"{best['bytes_per_doc']:,.0f} B vs {s['float32_bytes_per_doc']:,.0f} B (1/{ratio:.2f})",
         "met": ratio >= 6},
    ]


def markdown(payload: dict[str, Any]) -> str:
    s = payload["settings"]
    out = ["## Multi-vector (MUVERA FDE + Chamfer over TurboQuant token codes)\n",
           f"`bench/multivector.py`: WordNet MiniLM token vectors, {s['docs']:,} documents ({s['tokens']:,} tokens, "
           f"float32 = {s['float32_bytes_per_doc']:,.0f} B/doc), {s['queries']} queries, recall@{K} against exact "
           "Chamfer, one query at a time on one core. Ours store tokens as 4-bit codes and re-rank by Chamfer "
           "computed from them; peers re-rank with float32 tokens. *Paper FDE* = (k_sim 5, d_proj 16, r_reps 20); "
           "*tuned FDE* = (k_sim 1, no projection, r_reps 3, `normalize_blocks=True`). FDE and token codes are "
           "4-bit.\n",
           "![recall vs latency](multivector.png)\n",
           "| method | bytes/doc | FDE encode ms/doc | " + " | ".join(f"{c} cand." for c in s["candidates"]) + " |",
           "|---|---|---|" + "---|" * len(s["candidates"])]
    for r in payload["rows"]:
        if "error" in r:
            out.append(f"| {r['name']} | unsupported: {r['error']} |")
        elif "curve" in r:
            cells = [f"{p[f'recall@{K}']:.4f} / {p['ms_per_query']:.2f} ms" for p in r["curve"]]
            out.append(f"| {r['name']} | {r['bytes_per_doc']:,.0f} | {r['encode_ms_per_doc']:.3f} | "
                       + " | ".join(cells) + " |")
        elif "exact" in r:
            e = r["exact"]
            out.append(f"| {r['name']} | {r['bytes_per_doc']:,.0f} | - | exact: {e[f'recall@{K}']:.4f} / "
                       f"{e['ms_per_query']:.2f} ms |")
        else:
            cells = [f"oversample {p['oversample']}: {p[f'recall@{K}']:.4f} / {p['ms_per_query']:.1f} ms"
                     for p in r["points"]]
            out.append(f"| {r['name']} ({r['queries']} queries) | {r['bytes_per_doc']:,.0f} | - | "
                       + " | ".join(cells) + " |")
    out += ["\nCells: recall@10 / ms per query. Build (one core): " + ", ".join(
        f"{r['name']} {r['build_s']:.1f} s" for r in payload["rows"] if r.get("family") == "tqsearch") + ".\n",
            "### Scaling (100 queries, 100 candidates)\n",
            "| collection | docs | tokens | exact MaxSim ms/query | " + " | ".join(
                o["name"] for o in payload["scaling"][0]["ours"]) + " |",
            "|---|---|---|---|" + "---|" * len(payload["scaling"][0]["ours"])]
    for r in payload["scaling"]:
        cells = [f"{o[f'recall@{K}']:.4f} / {o['ms_per_query']:.2f} ms ({o['speedup']:.1f}x)" for o in r["ours"]]
        out.append(f"| {r['collection']} | {r['docs']:,} | {r['tokens']:,} | {r['exact_ms_per_query']:.1f} | "
                   + " | ".join(cells) + " |")
    out += ["\n### Targets\n", "| target | goal | measured | status |", "|---|---|---|---|"]
    out += [f"| {t['target']} | {t['goal']} | {t['measured']} | {'met' if t['met'] else 'NOT met'} |"
            for t in payload["targets"]]
    return "\n".join(out) + "\n"


def plot(payload: dict[str, Any], path: Path) -> Path:
    """Recall@10 (x) vs ms/query (y, log) over candidate counts; ours solid, peers dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 6))
    for r in payload["rows"]:
        mine = r.get("family") == "tqsearch"
        label = f"{r['name']} ({r.get('bytes_per_doc', 0):,.0f} B/doc)"
        if "curve" in r:
            pts = [(p[f"recall@{K}"], p["ms_per_query"]) for p in r["curve"]]
            ax.plot(*zip(*pts), "-o" if mine else "--s", ms=4, lw=1.8 if mine else 1.2, label=label)
        elif "exact" in r:
            ax.plot(r["exact"][f"recall@{K}"], r["exact"]["ms_per_query"], "k*", ms=12, label=label)
        elif "points" in r:
            ax.plot(*zip(*[(p[f"recall@{K}"], p["ms_per_query"]) for p in r["points"]]), ":^", label=label)
    s = payload["settings"]
    ax.set(yscale="log", xlabel=f"recall@{K} vs exact Chamfer", ylabel="ms per query, 1 thread (log)",
           title=f"Multi-vector retrieval, WordNet MiniLM tokens ({s['docs']:,} docs); points = 10..200 candidates")
    return finish_plot(fig, ax, path, "upper left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 documents and 100 queries (docs untouched)")
    parser.add_argument("--render-only", action="store_true", help="redo docs from bench/results/multivector.json")
    args = parser.parse_args()
    if args.render_only:
        payload = json.loads((RESULTS / "multivector.json").read_text())["results"]
    else:
        payload = run(args.quick)
        payload["targets"] = targets(payload)
        print(f"wrote {write_json('multivector_quick' if args.quick else 'multivector', payload)}")
    text = markdown(payload)
    if args.quick:
        print(f"quick run: docs untouched; plot at {plot(payload, Path(tempfile.gettempdir()) / 'mv_quick.png')}")
    else:
        update_markdown_section("multivector", text)
        print(f"wrote {BENCH_MD} and {plot(payload, BENCH_MD.parent / 'multivector.png')}")
    print(text)


if __name__ == "__main__":
    main()
