"""Cut the bundled demo/test slice from ../shared/data/wordnet_minilm (deterministic).

The slice is the first N_BASE base rows (the base order is random) with their texts, the first N_QUERIES
gloss queries with their texts, exact top-100 inner-product ground truth over the slice (ties to the
smaller id, as in the source), and the WordNet licence, which must travel with the texts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from common import DATA

N_BASE, N_QUERIES, K = 10_000, 200, 100
OUT = Path(__file__).resolve().parents[1] / "src" / "tqsearch" / "data" / "wordnet_minilm_10k"


def main() -> None:
    src = DATA / "wordnet_minilm"
    OUT.mkdir(parents=True, exist_ok=True)
    base = np.load(src / "base_fp16.part0.npy")[:N_BASE]
    queries = np.load(src / "queries.npy")[:N_QUERIES].astype(np.float32)
    scores = queries.astype(np.float64) @ base.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(N_BASE), scores.shape), -scores), axis=1)[:, :K]
    np.save(OUT / "base_fp16.npy", base)
    np.save(OUT / "queries.npy", queries)
    np.save(OUT / "gt_ids.npy", order.astype(np.int32))
    np.save(OUT / "gt_scores.npy", np.take_along_axis(scores, order, axis=1).astype(np.float32))
    _copy_lines(src / "base.jsonl", OUT / "base.jsonl", N_BASE)
    _copy_lines(src / "queries.jsonl", OUT / "queries.jsonl", N_QUERIES)
    shutil.copy(src / "WORDNET_LICENSE.txt", OUT / "WORDNET_LICENSE.txt")
    print(f"wrote {OUT}")


def _copy_lines(src: Path, dst: Path, n: int) -> None:
    with open(src) as f, open(dst, "w") as g:
        for i, line in zip(range(n), f):
            assert json.loads(line)["id"] == i
            g.write(line)


if __name__ == "__main__":
    main()
