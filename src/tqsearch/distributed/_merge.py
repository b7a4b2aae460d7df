"""Merging the shards' candidates into the answer one Collection holding every point would give.

A Collection takes its best `width` = k * rescore candidates by the codes' scores, then keeps the k best of
those by exact scores. Codes are data-independent (seeded rotation, analytic codebooks), so a point's code
score is the same on every shard; the global best `width` by code score are therefore among the union of
each shard's best `width`, and re-ranking that same set exactly gives the same k. Ties go to the smaller id.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["merge", "tails"]


def merge(per_shard: list[list[dict[str, Any]]], nq: int, k: int, width: int,
          fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The global answer to each of `nq` queries from the candidates of the shards that answered.

    per_shard[s][q]: {"ids", "code" (floats), optionally "exact", plus the fields} (ShardReplica.candidates);
    `width`: the code candidates a single collection would take (k when ranking by the codes alone).
    """
    return [_merge_one([shard[q] for shard in per_shard], k, width, fields) for q in range(nq)]


def _merge_one(parts: list[dict[str, Any]], k: int, width: int, fields: tuple[str, ...]) -> dict[str, Any]:
    ids = np.array([i for p in parts for i in p["ids"]], dtype=str)
    code = np.array([v for p in parts for v in p["code"]], dtype=np.float32)
    ranking = np.array([v for p in parts for v in p["exact"]], dtype=np.float32) if parts and "exact" in parts[0] else code
    keep = _best(code, ids, width)
    top = keep[_best(ranking[keep], ids[keep], k)]
    out: dict[str, Any] = {"ids": ids[top].tolist()}
    for field in fields:
        if field == "vectors":
            out[field] = np.concatenate([np.asarray(p[field], np.float32).reshape(len(p["ids"]), -1)
                                         for p in parts] or [np.empty((0, 0), np.float32)])[top]
        else:
            values = [v for p in parts for v in p[field]]
            out[field] = [values[i] for i in top]
    out["scores"] = ranking[top].tolist()
    return out


def _best(scores: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n best (score desc, id asc)."""
    return np.lexsort((ids, -scores))[:n]


def tails(per_shard: list[list[dict[str, Any]]], nq: int, tail: int) -> np.ndarray:
    """Each query's `tail` best code scores over every shard's candidates, (nq, t) float32, best first: the
    scale a single collection's relevance reads (its best `tail` code scores), when every shard sent at least
    `tail` candidates; t = min(tail, the fewest candidates a query has)."""
    rows = [np.sort(np.array([v for shard in per_shard for v in shard[q]["code"]], dtype=np.float32))[::-1]
            for q in range(nq)]
    t = min([tail, *(len(r) for r in rows)])
    return np.array([r[:t] for r in rows], dtype=np.float32).reshape(nq, t)
