"""Flat-index benchmark: tqsearch FlatIndex vs FAISS, turbovec, tqdb and rabitqlib, one process, same data.

Datasets: WordNet MiniLM (116,659 x 384, gloss and word queries, inner product), ann_sift5k and
ann_mnist10k (L2). Per method: recall@10, Recall@1@k (k = 1..64), QPS at 1 and 2 threads, add time,
bytes/vector. Writes bench/results/flat.json, docs/flat.png and the "flat" section of docs/benchmarks.md.

    python bench/flat.py            # full run (about 25 minutes on 2 cores)
    python bench/flat.py --quick    # WordNet 20k rows / 200 queries only
"""

from __future__ import annotations

import argparse
import contextlib
import json
from functools import partial
from typing import Any

from common import (BENCH_MD, RESULTS, load_wordnet, progress, update_markdown_section,  # sets BLAS threads first
                    write_json)

import numpy as np

import tqsearch
from flat_peers import Peer, Spec, load_dataset, measure, peer_specs

K = 10
OURS = [(1, None), (2, None), (4, None), (8, None), (2, "fp16"), (4, "fp16")]
ADAPTIVE_BITS = (1, 2, 4)  # FlatIndex(adaptive=True) rows (tiers.py)
RERANK_FACTORS = (1, 2, 3, 4, 6, 8)


def tqsearch_peer(bits: int, rerank: str | None, factor: int | None, base: np.ndarray, metric: str,
                  stack: contextlib.ExitStack, adaptive: bool = False) -> Peer:
    """Our FlatIndex as a peer of the harness (same build/search/recall measurement as everyone else)."""
    index = tqsearch.FlatIndex(base.shape[1], bits, metric=metric, rerank=rerank, adaptive=adaptive)
    index.add(base)
    usage = index.memory_usage  # "codes" excludes the adaptive basis, kept once per index ("basis")

    def search(q: np.ndarray, k: int, threads: int) -> np.ndarray:
        return index.search(q, k, rescore=factor, threads=threads)[1]

    note = "codes + per-vector floats (ids and rerank tier excluded; see params)"
    params = {"rerank": rerank, "rerank_factor": factor, "ids_bytes_per_vector": 8,
              "rerank_bytes_per_vector": usage()["rerank"] / max(len(index), 1), "tiers": index.tiers,
              "basis_bytes": usage()["basis"]}
    return Peer(search, lambda: usage()["codes"] / len(index), note, params)


def ours_specs() -> list[Spec]:
    specs = [Spec(f"tqsearch:{b}bit" + (f"+{r}" if r else ""), b, partial(tqsearch_peer, b, r, None)) for b, r in OURS]
    specs += [Spec(f"tqsearch:4bit+fp16x{f}", 4, partial(tqsearch_peer, 4, "fp16", f)) for f in RERANK_FACTORS]
    specs += [Spec(f"tqsearch:{b}bit adaptive", b, partial(tqsearch_peer, b, None, None, adaptive=True))
              for b in ADAPTIVE_BITS]
    return specs


def dataset(name: str, quick: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The harness's datasets plus WordNet word queries (short queries, a different distribution)."""
    if name == "wordnet-word":
        base, queries, gt = load_wordnet("word")
        return base, queries, gt, "ip"
    return load_dataset(name, quick)


def run(quick: bool) -> list[dict[str, Any]]:
    names = ["wordnet"] if quick else ["wordnet", "wordnet-word", "sift5k", "mnist10k"]
    rows = []
    for name in names:
        base, queries, gt, metric = dataset(name, quick)
        specs = ours_specs() + (peer_specs(*base.shape, metric) if name != "wordnet-word" else [])
        for spec in progress(specs, desc=name):
            repeat = 3 if spec.repeat is None else spec.repeat
            rows.append({"dataset": name} | measure(spec.name, spec.bits, spec.build, base, queries, gt, metric, K,
                                                    spec.max_queries, repeat))
    return rows


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets on WordNet gloss queries, one thread, no rerank, as same-run ratios."""
    by = {r["name"]: r for r in rows if r["dataset"] == "wordnet" and "error" not in r}
    out = []
    for bits, peer, recall_goal, speed_goal in ((4, "turbovec:4bit", 0.965, 1.6), (2, "turbovec:2bit", 0.88, 1.3)):
        for mine in (f"tqsearch:{bits}bit", f"tqsearch:{bits}bit adaptive"):
            ours, theirs = by.get(mine), by.get(peer)
            if ours and theirs:
                out.append({"target": f"{mine.split(':')[1]} vs {peer}", "recall": ours[f"recall@{K}"],
                            "recall_goal": recall_goal, "peer_recall": theirs[f"recall@{K}"],
                            "qps_ratio": ours["qps"][1] / theirs["qps"][1], "qps_goal": speed_goal})
    ours, rabitq = by.get("tqsearch:1bit"), by.get("faiss:RR,RaBitQfs1")
    if ours and rabitq:
        out.append({"target": "1-bit vs faiss:RR,RaBitQfs1", "recall": ours[f"recall@{K}"],
                    "recall_goal": rabitq[f"recall@{K}"], "peer_recall": rabitq[f"recall@{K}"],
                    "qps_ratio": ours["qps"][1] / rabitq["qps"][1], "qps_goal": 1.0})
    return out


def markdown(rows: list[dict[str, Any]], goals: list[dict[str, Any]]) -> str:
    lines = ["## Flat index (bench/flat.py)\n",
             "One process, same data and queries for every method; QPS = batch search of all queries (best of 3), "
             "pinned to 1 or 2 cores; bytes/vector = codes plus every per-vector float (ids excluded: 8 bytes "
             "for every method that keeps them). `+fp16xF` = fp16 rerank tier re-scoring the best k*F.\n",
             "![flat](flat.png)\n"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        lines += [f"### {name}\n", "| method | bits | bytes/vec | add s | QPS 1t | QPS 2t | recall@10 | "
                  "R@1@1 | R@1@4 | R@1@16 | R@1@64 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["dataset"] != name:
                continue
            if "error" in r:
                lines.append(f"| {r['name']} | {r['bits']} | – | – | – | – | {r['error'][:60]} | | | | |")
                continue
            r1 = r["recall_1_at"]
            q = f" ({r['queries']} q)" if r["queries"] < 1000 and name.startswith("wordnet") else ""
            lines.append(f"| {r['name']} | {r['bits'] or '–'} | {r['bytes_per_vector']:.0f} | {r['add_s']:.2f} | "
                         f"{r['qps'][1]:,.0f} | {r['qps'][max(r['qps'])]:,.0f} | {r[f'recall@{K}']:.3f}{q} | "
                         f"{r1[1]:.3f} | {r1[4]:.3f} | {r1[16]:.3f} | {r1[64]:.3f} |")
        lines.append("")
    lines += ["### Targets (WordNet gloss queries, one thread, no rerank)\n",
              "| target | recall@10 | goal | peer recall@10 | QPS ratio | goal |", "|---|---|---|---|---|---|"]
    for g in goals:
        ok_r = "met" if g["recall"] >= g["recall_goal"] else "NOT met"
        ok_q = "met" if g["qps_ratio"] >= g["qps_goal"] else "NOT met"
        lines.append(f"| {g['target']} | {g['recall']:.3f} | >= {g['recall_goal']:.3f} {ok_r} | {g['peer_recall']:.3f} "
                     f"| {g['qps_ratio']:.2f}x | >= {g['qps_goal']}x {ok_q} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]]) -> None:
    """docs/flat.png: recall@10 vs single-thread QPS on WordNet gloss queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    ok = [r for r in rows if r["dataset"] == "wordnet" and "error" not in r and r["queries"] >= 1000]
    curve = sorted((r["qps"][1], r[f"recall@{K}"]) for r in ok if "fp16x" in r["name"])
    if curve:
        ax.plot(*zip(*curve), "-o", color="C0", label="tqsearch 4-bit + fp16 rerank (factor 1..8)")
    for r in ok:
        if "fp16x" in r["name"]:
            continue
        mine = r["name"].startswith("tqsearch")
        ax.scatter(r["qps"][1], r[f"recall@{K}"], marker="o" if mine else "s", color="C0" if mine else "C7", s=40)
        ax.annotate(r["name"].split(":", 1)[1] if mine else r["name"], (r["qps"][1], r[f"recall@{K}"]), fontsize=7,
                    xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", xlabel="queries / s, 1 thread (log)", ylabel=f"recall@{K}",
           title="WordNet MiniLM 116,659 x 384, gloss queries: recall vs speed (tqsearch blue, peers grey)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(BENCH_MD.parent / "flat.png", dpi=110)


def saved_rows() -> list[dict[str, Any]]:
    """The rows of the last full run (bench/results/flat.json), with integer keys again (JSON made them strings)."""
    rows = json.loads((RESULTS / "flat.json").read_text())["results"]["rows"]
    for r in rows:
        for key in ("qps", "recall_1_at"):
            if key in r:
                r[key] = {int(t): v for t, v in r[key].items()}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", action="store_true", help="rebuild the docs section from bench/results/flat.json")
    args = parser.parse_args()
    rows = saved_rows() if args.report else run(args.quick)
    goals = targets(rows)
    if not args.report:
        print(f"wrote {write_json('flat_quick' if args.quick else 'flat', {'rows': rows, 'targets': goals})}")
    text = markdown(rows, goals)
    if not args.quick:
        update_markdown_section("flat", text)
        plot(rows)
    print(text)


if __name__ == "__main__":
    main()
