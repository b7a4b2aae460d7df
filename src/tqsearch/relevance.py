"""Relevance filtering: a calibrated relevance in [0, 1) per hit, so that one global threshold keeps what
is relevant whatever a query's score scale (Rossi et al., "Relevance Filtering for Embedding-based
Retrieval", CIKM 2024: a query-dependent map of raw cosines, their "Cosine Adapter").

A raw score means little alone: a short word query scores every document lower than a long one. Each
query is read against its own **tail**, the mean and the best of its `tail` best candidates as the codes
score them (the scan that finds the hits ranks them too: no statistics are stored, nothing is re-scored),
and a hit's relevance is

    relevance = sigmoid(w0 + w1 * score + w2 * tail_mean + w3 * top_score [+ a . query])

Without labels, `RelevanceModel.unsupervised()` uses (score - tail_mean) / width: 0.5 at the tail mean;
its width is in cosine units (ip/cosine scores of unit-norm embeddings): for other scales, fit a model.
With a filter, the tail is read among the allowed points (the scan sees no others), so a selective filter
shifts each query's scale towards what it allows.
With labels, `fit` learns the four weights by logistic regression (numpy, a few Newton steps); given the
queries too, it also learns a, the paper's query-dependent offset: a linear function of the query embedding,
in the span of the fitting queries' leading principal directions, its rank and ridge chosen by
cross-validation over queries. w1 > 0 is required and the query only shifts the logit, so within a query
relevance never decreases as the score grows and a threshold keeps a prefix of the hits. One native call
per search computes it all (_core.relevance). docs/benchmarks.md ("Relevance filtering") has the
measurements behind these choices.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core

__all__ = ["TAIL", "RelevanceModel", "as_min_relevance", "fit"]

TAIL = 32  # candidates per query read for its scale: F1 within noise of 50-100 (bench), ~+3% flat search time
WIDTH = 0.05  # unsupervised: score units (cosine) per unit of logit
RANKS = (16, 32, 64)  # fit with queries: principal directions of the queries tried for the offset
RIDGES = (10.0, 100.0, 1000.0)  # and ridge strengths (on standardised features) tried with each
FOLDS = 5  # cross-validation folds over the fitting queries
FORMAT, VERSION = "tqsearch-relevance", 2  # 2 added query_weights; version 1 files still load


class RelevanceModel:
    """A map from a hit's score, its query's tail and (optionally) the query itself to a relevance in [0, 1).

    weights: (bias, score, tail mean, top score) of the logit. tail: candidates per query in the tail (the
    scan ranks at least this many). kind: "unsupervised" or "fitted..." (informative only). query_weights:
    (dim,) weights a of the query embedding in the logit, or None (the query is not read).
    """

    def __init__(self, weights: object, tail: int = TAIL, kind: str = "fitted", query_weights: object = None) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (4,) or not np.isfinite(w).all():
            raise ValueError(f"weights must be 4 finite numbers (bias, score, tail mean, top score), got {weights!r}")
        if w[1] <= 0:
            raise ValueError("the score's weight must be positive (relevance must grow with the score)")
        if isinstance(tail, bool) or not isinstance(tail, (int, np.integer)) or tail < 1:
            raise ValueError(f"tail must be an int >= 1, got {tail!r}")
        if query_weights is not None:
            query_weights = np.array(query_weights, dtype=np.float64)
            if query_weights.ndim != 1 or len(query_weights) < 1 or not np.isfinite(query_weights).all():
                raise ValueError("query_weights must be a non-empty 1-D array of finite numbers (one per dimension)")
        self.weights, self.tail, self.kind, self.query_weights = w, int(tail), str(kind), query_weights
        self._args = (query_weights, *w.tolist())  # what each call passes to _core.relevance, ready-made

    @classmethod
    def unsupervised(cls, tail: int = TAIL, width: float = WIDTH) -> RelevanceModel:
        """relevance = sigmoid((score - tail mean) / width): no labels needed."""
        if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
            raise ValueError(f"width must be a positive number, got {width!r}")
        return cls([0.0, 1 / width, -1 / width, 0.0], tail, "unsupervised")

    def __call__(self, scores: np.ndarray, tail_scores: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
        """Relevance (nq, c) float32 of hits `scores` (nq, c), given each query's best scores `tail_scores`
        (nq, t), both float32 (converted) and -inf padded, and the queries (nq, dim) when the model reads
        them; padding gets 0."""
        s = np.require(scores, np.float32, ["C", "W"])  # nothing is written at min_relevance 0
        return self.filter(s, None, np.ascontiguousarray(tail_scores, np.float32), queries, 0.0)[2]

    def filter(self, scores: np.ndarray, ids: np.ndarray | None, tail_scores: np.ndarray,
               queries: np.ndarray | None, min_relevance: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(scores, ids, relevance) of a search's hits: the relevance of each, and with min_relevance > 0
        the hits below it turned into -inf / -1 / 0 in place (the arrays given are returned). scores
        (nq, c) float32 and ids (nq, c) int64 or None, rows best first; tail_scores (nq, t) float32; queries
        (nq, dim) float32, read only when the model has query_weights. Rows may be column slices of wider
        arrays. Relevance grows with the score, so what is kept is a prefix of each row. One native call."""
        if self.query_weights is not None:
            if queries is None:
                raise ValueError("this relevance model reads the queries (it has query_weights): pass them")
            queries = np.ascontiguousarray(queries, np.float32)
        rel = _core.relevance(tail_scores, queries, *self._args, min_relevance, scores, ids)
        return scores, ids, rel

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what `from_dict` reads; a collection keeps it in relevance.json)."""
        d = {"format": FORMAT, "version": VERSION, "kind": self.kind, "tail": self.tail,
             "weights": self.weights.tolist()}
        if self.query_weights is not None:
            d["query_weights"] = self.query_weights.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RelevanceModel:
        """The model `to_dict` described, by this version or an older one; ValueError naming what is wrong
        or too new."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a tqsearch relevance model: {d!r}")
        if d.get("version") not in range(1, VERSION + 1):
            raise ValueError(f"relevance model version {d.get('version')!r} is not 1..{VERSION} (made by a newer "
                             "tqsearch?)")
        try:
            return cls(d["weights"], d["tail"], d.get("kind", "fitted"), d.get("query_weights"))
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed relevance model ({e})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RelevanceModel) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        query = "" if self.query_weights is None else f", query_weights=<{len(self.query_weights)} weights>"
        return f"RelevanceModel({self.weights.tolist()}, tail={self.tail}, kind={self.kind!r}{query})"


DEFAULT = RelevanceModel.unsupervised()


def fit(scores: object, labels: object, tail: int = TAIL, l2: float = 1e-3,
        queries: object = None) -> RelevanceModel:
    """Learn the query-dependent map from judged search results (logistic regression, numpy only).

    scores: (nq, c) float, each query's search scores best first (-inf padded), c >= tail so that each
    query's tail is its first `tail` scores, as at search time; labels: (nq, c) bool or 0/1, whether each
    hit is relevant (padding is ignored). l2: ridge on the standardised weights. queries: (nq, dim) float,
    the query embeddings as the index reads them (normalised for cosine): with them the model also learns
    the query's offset, its rank (RANKS) and ridge (RIDGES, replacing l2) chosen by FOLDS-fold
    cross-validation over the queries (held-out log loss).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"scores must be (queries, hits), got shape {s.shape}")
    if isinstance(tail, bool) or not isinstance(tail, (int, np.integer)) or not 1 <= tail <= s.shape[1]:
        raise ValueError(f"tail must be an int from 1 to the hits per query ({s.shape[1]}): scores must hold at "
                         f"least tail hits per query, got tail={tail!r}")
    if y.shape != s.shape:
        raise ValueError(f"labels must have the shape of scores {s.shape}, got {y.shape}")
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be booleans or 0/1")
    q = None if queries is None else _as_queries(queries, len(s))
    mean, top = _tail_stats(s[:, :tail])
    hit = np.isfinite(s)
    row = np.nonzero(hit)[0]
    x = np.stack([s[hit], mean[row], top[row]], 1)
    target = y[hit].astype(np.float64)
    if not 0 < target.sum() < len(target):
        raise ValueError("labels need both relevant and non-relevant hits")
    if q is None:
        return RelevanceModel(_fit_logit(x, target, l2), tail, "fitted")
    rank, ridge = _cross_validate(x, target, row, q)
    basis = _principal(q, rank)
    w = _fit_logit(np.concatenate([x, q[row] @ basis], 1), target, ridge)
    return RelevanceModel(w[:4], tail, f"fitted with queries (rank {basis.shape[1]}, ridge {ridge:g})", basis @ w[4:])


def as_min_relevance(value: object) -> float:
    """min_relevance as a float in [0, 1] (ValueError / TypeError naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"min_relevance must be a number in [0, 1], got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise ValueError(f"min_relevance must be in [0, 1], got {value!r}")
    return float(value)


def _tail_stats(tail_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the mean and the max of the finite scores (0 for a row with none), as search reads them."""
    t = np.asarray(tail_scores, dtype=np.float64)
    finite = np.isfinite(t)
    count = finite.sum(1)
    mean = np.where(finite, t, 0.0).sum(1) / np.maximum(count, 1)
    top = np.where(count > 0, np.where(finite, t, -np.inf).max(1, initial=-np.inf), 0.0)
    return mean, top


def _as_queries(queries: object, n: int) -> np.ndarray:
    """fit's queries as a finite float64 (n, dim) array, or a ValueError naming them."""
    q = np.asarray(queries)
    if q.dtype.kind not in "fiu" or q.ndim != 2 or len(q) != n or q.shape[1] < 1:
        raise ValueError(f"queries must be a (queries, dim) number array with one row per row of scores ({n}), "
                         f"got {q.dtype} {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("queries must be finite")
    return q.astype(np.float64)


def _principal(q: np.ndarray, rank: int) -> np.ndarray:
    """(dim, r) the leading r <= rank principal directions of the queries q (n, dim), those along which
    the queries vary (fewer queries than rank + 1 span fewer)."""
    _, sv, vt = np.linalg.svd(q - q.mean(0), full_matrices=False)
    return vt[:rank][sv[:rank] > 1e-9 * sv[:1].max(initial=0)].T


def _cross_validate(x: np.ndarray, target: np.ndarray, row: np.ndarray, q: np.ndarray) -> tuple[int, float]:
    """The (rank, ridge) of RANKS x RIDGES whose query-offset model has the lowest log loss on held-out
    queries, FOLDS folds (query i in fold i % FOLDS; principal directions from each fold's training part)."""
    ranks = sorted({min(rank, q.shape[1]) for rank in RANKS})  # no more directions than dimensions
    loss = np.zeros((len(ranks), len(RIDGES)))
    for fold in range(min(FOLDS, len(q))):
        train_q = np.arange(len(q)) % FOLDS != fold
        train, test = train_q[row], ~train_q[row]
        if not 0 < target[train].sum() < train.sum():
            continue  # a fold without both kinds of label says nothing
        for i, rank in enumerate(ranks):
            feats = np.concatenate([x, q[row] @ _principal(q[train_q], rank)], 1)
            for j, ridge in enumerate(RIDGES):
                w = _fit_logit(feats[train], target[train], ridge)
                z = feats[test] @ w[1:] + w[0]
                loss[i, j] += np.sum(np.logaddexp(0, z) - target[test] * z)
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    return ranks[i], RIDGES[j]


def _fit_logit(x: np.ndarray, target: np.ndarray, l2: float) -> np.ndarray:
    """(bias, weights) of a ridge logistic regression of target on x, ridge on the standardised features."""
    center, spread = x.mean(0), x.std(0)
    spread[spread == 0] = 1.0
    w = _logistic((x - center) / spread, target, l2)
    return np.concatenate([[w[0] - np.sum(w[1:] * center / spread)], w[1:] / spread])


def _logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 25) -> np.ndarray:
    """Ridge logistic regression by Newton steps: (bias, weights) for standardised features x (n, f)."""
    z = np.concatenate([np.ones((len(x), 1)), x], 1)
    w = np.zeros(z.shape[1])
    ridge = l2 * np.eye(len(w))
    ridge[0, 0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
        step = np.linalg.solve((z * (p * (1 - p))[:, None]).T @ z + ridge, z.T @ (p - y) + ridge @ w)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w
