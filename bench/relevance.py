"""Relevance-filtering benchmark: which hits to return, judged against WordNet labels (shared/data/README.md).

One process, one index: a 4-bit FlatIndex with an fp16 rerank tier over the WordNet MiniLM base (116,659 x
384, inner product); every method reads the index's own scores (codes, then the top re-scored exactly on the
tier). Gloss queries are split in two (even ids fit and choose, odd ids report); the thresholds chosen on
gloss queries are then applied untouched to the 1,000 word queries (labels: bench/wordnet_labels.py).
Methods: plain top-k; one global raw-score threshold; a threshold relative to each query's top-1 score;
tqsearch's unsupervised relevance at one global threshold; the fitted relevance (relevance.fit). Reported:
micro precision, recall and F1 of the returned sets (recall over all labelled pairs), PR-AUC of each score
over the top 100, the share of queries returning nothing, and the search time relevance adds.
Writes bench/results/relevance.json, docs/relevance.png and the "relevance" section of docs/benchmarks.md.

    python bench/relevance.py            # about 3 minutes on 2 cores
    python bench/relevance.py --quick    # 300 queries per set for timing, no plot
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from common import BENCH_MD, DATA, load_wordnet, machine_info, timeit, update_markdown_section, write_json

import numpy as np

import tqsearch
from tqsearch import relevance
from wordnet_labels import OUT as WORD_LABELS

TOP = 100  # candidates each method chooses from (the search's top 100)
TAILS = (20, 50, 100)  # unsupervised relevance with the query's scale read from this many best code scores
CAPS = (10, 100)  # at most this many hits returned


def read_labels(path: Any) -> list[set[int]]:
    return [{row for row, _ in json.loads(line)["relevant"]} for line in open(path)]


def judged(ids: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """(nq, c) bool: is each hit in its query's relevant set."""
    return np.array([[i in rel for i in row] for row, rel in zip(ids.tolist(), relevant)])


def prf(kept: np.ndarray, labels: np.ndarray, n_labelled: int) -> dict[str, float]:
    """Micro precision, recall (over all labelled pairs) and F1 of the kept hits, and the share of empty rows."""
    tp, returned = int((kept & labels).sum()), int(kept.sum())
    p, r = tp / max(returned, 1), tp / n_labelled
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12), "empty": float((~kept.any(1)).mean()),
            "per_query": returned / len(kept)}


def kept_by(score: np.ndarray, t: float, cap: int) -> np.ndarray:
    """Hits kept by threshold t among each row's first `cap` (scores -inf where there is no hit)."""
    kept = score >= t
    kept[:, cap:] = False
    return kept


def best_threshold(score: np.ndarray, labels: np.ndarray, n_labelled: int, cap: int) -> float:
    """The threshold with the best F1 on these (fitting) queries, among 400 quantiles of the scores."""
    finite = score[:, :cap][np.isfinite(score[:, :cap])]
    grid = np.unique(np.quantile(finite, np.linspace(0, 1, 401)))
    return float(max(grid, key=lambda t: prf(kept_by(score, t, cap), labels, n_labelled)["f1"]))


def pr_auc(score: np.ndarray, labels: np.ndarray, n_labelled: int) -> float:
    """Average precision of all (query, hit) pairs of the top 100 ranked by score (recall over all labels)."""
    order = np.argsort(-score.ravel(), kind="stable")
    hits = labels.ravel()[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / n_labelled)


def pr_curve(score: np.ndarray, labels: np.ndarray, n_labelled: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score.ravel(), kind="stable")
    hits = labels.ravel()[order]
    tp = np.cumsum(hits)
    return tp / n_labelled, tp / np.arange(1, len(hits) + 1)


def method_scores(index: tqsearch.FlatIndex, queries: np.ndarray, scores: np.ndarray, ids: np.ndarray,
                  models: dict[str, relevance.RelevanceModel]) -> dict[str, np.ndarray]:
    """Each method's score per hit of the top 100 (higher: keep first): the raw score, its gap to the top-1
    score, and the relevance the index itself returns (search(..., return_relevance=True)) for each model."""
    out = {"raw score": scores, "score - top-1": scores - scores[:, :1]}
    for name, model in models.items():
        index.relevance_model = model
        _, same, out[name] = index.search(queries, TOP, return_relevance=True)
        assert (same == ids).all(), "the relevance search must return the plain search's hits"
    index.relevance_model = relevance.DEFAULT
    return out


def evaluate(index: tqsearch.FlatIndex, gloss: np.ndarray, words: np.ndarray, gloss_rel: list[set[int]],
             word_rel: list[set[int]]) -> dict[str, Any]:
    fit_q, test_q = np.arange(0, len(gloss), 2), np.arange(1, len(gloss), 2)
    g_scores, g_ids = index.search(gloss, TOP)
    w_scores, w_ids = index.search(words, TOP)
    g_labels, w_labels = judged(g_ids, gloss_rel), judged(w_ids, word_rel)
    n_fit = sum(len(gloss_rel[i]) for i in fit_q)
    n_test = sum(len(gloss_rel[i]) for i in test_q)
    n_word = sum(map(len, word_rel))
    fitted = relevance.fit(g_scores[fit_q], g_labels[fit_q])
    models = {f"unsupervised, tail {t}": relevance.RelevanceModel.unsupervised(t) for t in TAILS}
    models["fitted relevance"] = fitted
    g_method = method_scores(index, gloss, g_scores, g_ids, models)
    w_method = method_scores(index, words, w_scores, w_ids, models)
    rows = []
    for cap in CAPS:
        if cap <= 10:
            for k in (5, 10):
                rows.append({"method": f"plain top-{k}", "cap": k, "threshold": None,
                             "gloss": prf(kept_by(g_scores[test_q], -np.inf, k), g_labels[test_q], n_test),
                             "word": prf(kept_by(w_scores, -np.inf, k), w_labels, n_word)})
        for name in g_method:
            t = best_threshold(g_method[name][fit_q], g_labels[fit_q], n_fit, cap)
            word_best = best_threshold(w_method[name], w_labels, n_word, cap)
            rows.append({"method": name, "cap": cap, "threshold": t,
                         "gloss": prf(kept_by(g_method[name][test_q], t, cap), g_labels[test_q], n_test),
                         "word": prf(kept_by(w_method[name], t, cap), w_labels, n_word),
                         "word_oracle_f1": prf(kept_by(w_method[name], word_best, cap), w_labels, n_word)["f1"]})
    auc = {name: {"gloss": pr_auc(g_method[name][test_q], g_labels[test_q], n_test),
                  "word": pr_auc(w_method[name], w_labels, n_word)} for name in g_method}
    curves = {name: pr_curve(g_method[name][test_q], g_labels[test_q], n_test) for name in g_method}
    return {"rows": rows, "pr_auc": auc, "fitted": fitted.to_dict(), "curves": curves, "models": models}


def timing(index: tqsearch.FlatIndex, queries: np.ndarray, thresholds: dict[str, float],
           models: dict[str, relevance.RelevanceModel], repeat: int) -> dict[str, Any]:
    """Milliseconds per query of plain search(k=10) and of search(k=10, min_relevance) with each model,
    interleaved in one run (1 thread), best of `repeat`; and each one's time over plain search's."""
    def call(name: str) -> Callable[[], Any]:
        if name == "plain k=10":
            return lambda: index.search(queries, 10, threads=1)
        def relevant() -> Any:
            index.relevance_model = models[name]
            return index.search(queries, 10, threads=1, min_relevance=thresholds[name])
        return relevant
    names = ["plain k=10", *models]
    best = {name: float("inf") for name in names}
    for _ in range(repeat):  # interleaved: drifting load hits every variant alike
        for name in names:
            best[name] = min(best[name], timeit(call(name), 1))
    index.relevance_model = relevance.DEFAULT
    ms = {name: 1e3 * s / len(queries) for name, s in best.items()}
    return {"ms_per_query": ms, "added": {name: ms[name] / ms["plain k=10"] - 1 for name in models}}


def plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common import finish_plot

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, (rec, prec) in curves.items():
        step = max(1, len(rec) // 2000)
        ax.plot(rec[step::step], prec[step::step], label=name, lw=1.2)
    ax.set_xlabel("recall (of all labelled pairs)")
    ax.set_ylabel("precision")
    ax.set_title("WordNet gloss queries (held-out half), top-100 hits", fontsize=9)
    ax.set_xlim(0, 0.72)
    ax.set_ylim(0, 0.8)
    finish_plot(fig, ax, path, "upper right")


def markdown(result: dict[str, Any], machine: dict[str, Any]) -> str:
    rows, auc, t = result["rows"], result["pr_auc"], result["timing"]
    raw = {r["cap"]: r["gloss"]["f1"] for r in rows if r["method"] == "raw score"}
    lines = [
        "## Relevance filtering (bench/relevance.py)",
        "",
        f"Which hits to return. {machine['cpu']}, kernels `{tqsearch.simd_level()}`, 1 thread for the timings. "
        "Index: 4-bit FlatIndex + fp16 rerank tier over WordNet MiniLM (116,659 x 384, inner product); every "
        "score is the index's own (codes, top candidates re-scored on the tier). Labels: the WordNet links of "
        "`relevance.jsonl` (gloss queries) and the same rules for the word queries (`bench/wordnet_labels.py`, "
        "from Debian wordnet-base; it rebuilds the gloss labels exactly). Thresholds are chosen for F1 on the "
        "even gloss queries and reported on the odd ones; the word columns reuse them untouched "
        "(\"word best\": the word queries' own best threshold, for reference). Precision/recall are micro, "
        "recall over all labelled pairs (the top 100 holds 70% of them). \"vs raw\": F1 over the best global "
        "raw threshold at the same cap.",
        "",
        "| method | cap | threshold | gloss P | gloss R | gloss F1 | vs raw | empty | hits/query | word F1 | word best |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, w = r["gloss"], r["word"]
        thr = "" if r["threshold"] is None else f"{r['threshold']:.3f}"
        ratio = f"{g['f1'] / raw[r['cap']] - 1:+.1%}" if r["cap"] in raw else ""
        best = f"{r['word_oracle_f1']:.3f}" if "word_oracle_f1" in r else ""
        lines.append(f"| {r['method']} | {r['cap']} | {thr} | {g['precision']:.3f} | {g['recall']:.3f} | "
                     f"{g['f1']:.3f} | {ratio} | {g['empty']:.1%} | {g['per_query']:.1f} | {w['f1']:.3f} | {best} |")
    lines += ["", "PR-AUC of each score over the top-100 hits (average precision, recall over all labels):", "",
              "| score | gloss (held-out) | word |", "|---|---|---|"]
    lines += [f"| {name} | {v['gloss']:.3f} | {v['word']:.3f} |" for name, v in auc.items()]
    lines += ["", "Time per query of search(k=10) (1 thread, same run, interleaved, best of the repeats), plain and "
              "with min_relevance at each model's threshold:", "", "| search | ms/query | added |", "|---|---|---|"]
    lines += [f"| {name} | {ms:.3f} | {t['added'].get(name, 0):+.1%} |" for name, ms in t["ms_per_query"].items()]
    lines += ["", "![PR curves](relevance.png)"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    base, gloss, _ = load_wordnet("gloss")
    _, words, _ = load_wordnet("word")
    gloss_rel = read_labels(DATA / "wordnet_minilm" / "relevance.jsonl")
    word_rel = read_labels(WORD_LABELS)
    index = tqsearch.FlatIndex(base.shape[1], 4, metric="ip", rerank="fp16")
    index.add(base)
    result = evaluate(index, gloss, words, gloss_rel, word_rel)
    models = result.pop("models")
    thresholds = {r["method"]: r["threshold"] for r in result["rows"] if r["cap"] == 10 and r["method"] in models}
    n = 300 if args.quick else 1000
    result["timing"] = timing(index, np.vstack([gloss, words])[:: 2000 // n], thresholds, models, 3 if args.quick else 5)
    curves = result.pop("curves")
    if not args.quick:
        plot(curves, BENCH_MD.parent / "relevance.png")
    machine = machine_info()
    write_json("relevance" + ("_quick" if args.quick else ""), result)
    text = markdown(result, machine)
    print(text)
    if not args.quick:
        update_markdown_section("relevance", text)


if __name__ == "__main__":
    main()
