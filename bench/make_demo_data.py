"""Cut the bundled demo/test slices from ../shared/data (deterministic).

Dense slice (package data): the first N_BASE base rows of wordnet_minilm (the base order is random) with
their texts, the first N_QUERIES gloss queries with their texts, exact top-100 inner-product ground truth
over the slice (ties to the smaller id, as in the source), and the WordNet licence, which must travel with
the texts.

Token slice (tests/data/wordnet_tokens.npz, `--tokens`): TOKEN_QUERIES multi-vector queries of
wordnet_minilm_tokens, the documents that are each one's exact-Chamfer top TOKEN_TOP plus random others
(TOKEN_DOCS in all, in id order), tokens stored as int8 with a float32 scale per token (2 MB instead of 4).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from common import DATA

N_BASE, N_QUERIES, K = 10_000, 200, 100
OUT = Path(__file__).resolve().parents[1] / "src" / "tqsearch" / "data" / "wordnet_minilm_10k"
TOKEN_QUERIES, TOKEN_TOP, TOKEN_DOCS = 24, 6, 200
TOKEN_OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "wordnet_tokens.npz"


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


def tokens_main() -> None:
    src = DATA / "wordnet_minilm_tokens"
    docs = np.concatenate([np.load(src / f"doc_vecs_fp16.part{i}.npy") for i in (0, 1)]).astype(np.float32)
    doc_off, q_off = np.load(src / "doc_offsets.npy"), np.load(src / "query_offsets.npy")
    queries = np.load(src / "query_vecs_fp16.npy").astype(np.float32)[: q_off[TOKEN_QUERIES]]
    top = np.unique(np.load(src / "gt_ids.npy")[:TOKEN_QUERIES, :TOKEN_TOP])
    rest = np.setdiff1d(np.arange(len(doc_off) - 1), top)
    picked = np.sort(np.concatenate([top, np.random.default_rng(0).choice(rest, TOKEN_DOCS - len(top), False)]))
    doc_tokens = np.concatenate([docs[doc_off[i] : doc_off[i + 1]] for i in picked])
    counts = np.diff(doc_off)[picked]
    TOKEN_OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(TOKEN_OUT, doc_offsets=np.concatenate([[0], np.cumsum(counts)]), source_ids=picked,
             query_offsets=q_off[: TOKEN_QUERIES + 1], **_int8("doc", doc_tokens), **_int8("query", queries))
    print(f"wrote {TOKEN_OUT} ({len(picked)} documents, {TOKEN_QUERIES} queries)")


def _int8(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    scale = np.abs(x).max(axis=1) / 127
    return {f"{name}_int8": np.rint(x / scale[:, None]).astype(np.int8), f"{name}_scale": scale.astype(np.float32)}


def _copy_lines(src: Path, dst: Path, n: int) -> None:
    with open(src) as f, open(dst, "w") as g:
        for i, line in zip(range(n), f):
            assert json.loads(line)["id"] == i
            g.write(line)


if __name__ == "__main__":
    import sys

    if "--tokens" in sys.argv[1:]:
        tokens_main()
    else:
        main()
