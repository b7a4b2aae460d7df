"""The README demo: compress the bundled real corpus and show what it costs and what it keeps."""

from __future__ import annotations

import time
from typing import TextIO

import numpy as np

from .datasets import load_demo_corpus
from .quantizer import TurboQuantMSE

_K = 10


def run_demo(bits_list: list[int], threads: int | None, out: TextIO) -> list[dict]:
    """Encode the corpus at each bit width; print distortion, size, speed and search quality."""
    corpus = load_demo_corpus()
    x, queries, gt = corpus.vectors, corpus.queries, corpus.gt_ids
    exact = queries @ x.T
    print(f"corpus: {len(x):,} WordNet glosses, all-MiniLM-L6-v2, dim {x.shape[1]} "
          f"(float32: {x.shape[1] * 4} bytes/vector); {len(queries)} gloss queries", file=out)
    print(f"{'bits':>4} {'bytes/vec':>9} {'ratio':>6} {'MSE':>8} {'IP RMSE':>8} {'recall@10':>9} "
          f"{'encode vec/s':>12}", file=out)
    rows = []
    for bits in bits_list:
        q = TurboQuantMSE(x.shape[1], bits, scale="lsq", threads=threads)
        q.encode(x[:256])  # warm up (codebook is computed once and cached)
        t0 = time.perf_counter()
        codes = q.encode(x)
        rate = len(x) / (time.perf_counter() - t0)
        est = q.inner_products(queries, codes)
        found = np.argsort(-est, axis=1)[:, :_K]
        row = {
            "bits": bits,
            "bytes_per_vector": codes.bytes_per_vector,
            "mse": float(np.mean(np.sum((x - q.decode(codes)) ** 2, axis=1))),
            "ip_rmse": float(np.sqrt(np.mean((est - exact) ** 2))),
            "recall_at_10": float(np.mean([len(set(f) & set(g[:_K])) / _K for f, g in zip(found, gt)])),
            "encode_per_s": rate,
        }
        rows.append(row)
        print(f"{bits:>4} {row['bytes_per_vector']:>9.0f} {x.shape[1] * 4 / row['bytes_per_vector']:>5.1f}x "
              f"{row['mse']:>8.4f} {row['ip_rmse']:>8.4f} {row['recall_at_10']:>9.3f} {rate:>12,.0f}", file=out)
    _show_hits(corpus, TurboQuantMSE(x.shape[1], 4, scale="lsq", threads=threads), out)
    return rows


def _show_hits(corpus, q: TurboQuantMSE, out: TextIO) -> None:
    codes = q.encode(corpus.vectors)
    scores = q.inner_products(corpus.queries[:2], codes)
    for i, row in enumerate(scores):
        print(f"\nquery: {corpus.query_texts[i][:90]}", file=out)
        for j in np.argsort(-row)[:3]:
            print(f"  {row[j]:.3f}  {corpus.texts[j][:90]}", file=out)
