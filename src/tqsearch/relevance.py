"""Relevance filtering: a calibrated relevance in [0, 1) per hit, so that one global threshold keeps what
is relevant whatever a query's score scale (Rossi et al., "Relevance Filtering for Embedding-based
Retrieval", CIKM 2024: a query-dependent map of raw cosines, their "Cosine Adapter").

A raw score means little alone: a short word query scores every document lower than a long one. Each
query is read against its own **tail**, the mean and the best of its `tail` best candidates as the codes
score them (the scan that finds the hits ranks them too: no statistics are stored, nothing is re-scored),
and a hit's relevance is

    relevance = sigmoid(w0 + w1 * score + w2 * tail_mean + w3 * top_score)

Without labels, `RelevanceModel.unsupervised()` uses (score - tail_mean) / width: 0.5 at the tail mean;
its width is in cosine units (ip/cosine scores of unit-norm embeddings): for other scales, fit a model.
With a filter, the tail is read among the allowed points (the scan sees no others), so a selective filter
shifts each query's scale towards what it allows.
With labels, `fit` learns the four weights by logistic regression (numpy, a few Newton steps). w1 > 0 is
required, so within a query relevance never decreases as the score grows and a threshold keeps a prefix of
the hits. docs/benchmarks.md ("Relevance filtering") has the measurements behind these choices.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["TAIL", "RelevanceModel", "as_min_relevance", "fit", "keep"]

TAIL = 32  # candidates per query read for its scale: F1 within noise of 50-100 (bench), ~+3% flat search time
WIDTH = 0.05  # unsupervised: score units (cosine) per unit of logit
FORMAT, VERSION = "tqsearch-relevance", 1
_BELOW_ONE = np.nextafter(np.float32(1), np.float32(0))  # relevance never reaches 1: min_relevance=1 keeps none
_EXP_MAX = 700.0  # -logit cap: exp stays finite, and 1 / (1 + exp(700)) rounds to 0 in float32 like any larger


class RelevanceModel:
    """A map from a hit's score and its query's tail to a relevance in [0, 1).

    weights: (bias, score, tail mean, top score) of the logit. tail: candidates per query in the tail (the
    scan ranks at least this many). kind: "unsupervised" or "fitted" (informative only).
    """

    def __init__(self, weights: object, tail: int = TAIL, kind: str = "fitted") -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (4,) or not np.isfinite(w).all():
            raise ValueError(f"weights must be 4 finite numbers (bias, score, tail mean, top score), got {weights!r}")
        if w[1] <= 0:
            raise ValueError("the score's weight must be positive (relevance must grow with the score)")
        if isinstance(tail, bool) or not isinstance(tail, (int, np.integer)) or tail < 1:
            raise ValueError(f"tail must be an int >= 1, got {tail!r}")
        self.weights, self.tail, self.kind = w, int(tail), str(kind)

    @classmethod
    def unsupervised(cls, tail: int = TAIL, width: float = WIDTH) -> RelevanceModel:
        """relevance = sigmoid((score - tail mean) / width): no labels needed."""
        if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
            raise ValueError(f"width must be a positive number, got {width!r}")
        return cls([0.0, 1 / width, -1 / width, 0.0], tail, "unsupervised")

    def __call__(self, scores: np.ndarray, tail_scores: np.ndarray) -> np.ndarray:
        """Relevance (nq, c) float32 of hits `scores` (nq, c), given each query's best scores `tail_scores`
        (nq, t), both -inf padded; padding gets 0. A few in-place vector ops: search calls this per call."""
        w0, w1, w2, w3 = self.weights.tolist()  # Python floats: cheaper scalars than numpy's, same values
        mean, top = _tail_stats(tail_scores, w3 != 0)
        bias = [w0 + w2 * m for m in mean] if top is None else [w0 + w2 * m + w3 * x for m, x in zip(mean, top)]
        z = np.asarray(scores, dtype=np.float64) * -w1  # -logit = -w1 * score - bias, exactly
        z -= bias[0] if len(bias) == 1 else np.array(bias)[:, None]
        np.minimum(z, _EXP_MAX, out=z)  # no overflow warning; relevance below 1e-300 is 0 in float32 anyway
        np.exp(z, out=z)
        z += 1.0
        r = np.divide(1.0, z, out=z).astype(np.float32)
        return np.minimum(r, _BELOW_ONE, out=r)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what `from_dict` reads; a collection keeps it in relevance.json)."""
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "tail": self.tail,
                "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RelevanceModel:
        """The model `to_dict` described; ValueError naming what is wrong or too new."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a tqsearch relevance model: {d!r}")
        if d.get("version") != VERSION:
            raise ValueError(f"relevance model version {d.get('version')!r} is not {VERSION} (made by a newer tqsearch?)")
        try:
            return cls(d["weights"], d["tail"], d.get("kind", "fitted"))
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed relevance model ({e})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RelevanceModel) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"RelevanceModel({self.weights.tolist()}, tail={self.tail}, kind={self.kind!r})"


DEFAULT = RelevanceModel.unsupervised()


def fit(scores: object, labels: object, tail: int = TAIL, l2: float = 1e-3) -> RelevanceModel:
    """Learn the query-dependent map from judged search results (logistic regression, numpy only).

    scores: (nq, c) float, each query's search scores best first (-inf padded), c >= tail so that each
    query's tail is its first `tail` scores, as at search time; labels: (nq, c) bool or 0/1, whether each
    hit is relevant (padding is ignored). l2: ridge on the standardised weights.
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
    mean, top = map(np.array, _tail_stats(s[:, :tail]))
    hit = np.isfinite(s)
    x = np.stack([s[hit], np.broadcast_to(mean[:, None], s.shape)[hit], np.broadcast_to(top[:, None], s.shape)[hit]], 1)
    target = y[hit].astype(np.float64)
    if not 0 < target.sum() < len(target):
        raise ValueError("labels need both relevant and non-relevant hits")
    center, spread = x.mean(0), x.std(0)
    spread[spread == 0] = 1.0
    w = _logistic((x - center) / spread, target, l2)
    weights = np.concatenate([[w[0] - np.sum(w[1:] * center / spread)], w[1:] / spread])
    return RelevanceModel(weights, tail, "fitted")


def keep(scores: np.ndarray, ids: np.ndarray, relevance: np.ndarray,
         min_relevance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hits whose relevance >= min_relevance, the others turned into -inf / -1 / 0 padding, in place
    (the arrays given are returned). Rows are best first and relevance grows with the score, so what is
    kept is a prefix of each row; padding (-inf score, relevance 0) stays padding."""
    if min_relevance > 0:  # at 0 only padding would drop, and it is padded already
        drop = relevance < min_relevance  # padding (-1 id, -inf score) has relevance 0: it drops too
        np.putmask(scores, drop, -math.inf)  # Python scalars: numpy's cost more here
        np.putmask(ids, drop, -1)
        np.putmask(relevance, drop, 0.0)
    return scores, ids, relevance


def as_min_relevance(value: object) -> float:
    """min_relevance as a float in [0, 1] (ValueError / TypeError naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"min_relevance must be a number in [0, 1], got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise ValueError(f"min_relevance must be in [0, 1], got {value!r}")
    return float(value)


def _tail_stats(tail_scores: np.ndarray, want_top: bool = True) -> tuple[list[float], list[float] | None]:
    """Per row: the mean and the max (None unless want_top) of the finite scores (0 for a row with none), as
    lists: Python arithmetic on a few rows costs less than numpy calls (search calls this per call)."""
    t = np.asarray(tail_scores, dtype=np.float64)
    total, n = np.add.reduce(t, 1).tolist(), t.shape[1]
    if n and all(map(math.isfinite, total)):  # a -inf (padding) makes its row's sum -inf
        return [x / n for x in total], np.maximum.reduce(t, 1).tolist() if want_top else None
    finite = np.isfinite(t)
    count = finite.sum(1)
    mean = np.where(finite, t, 0.0).sum(1) / np.maximum(count, 1)
    top = np.where(count > 0, np.where(finite, t, -np.inf).max(1, initial=-np.inf), 0.0)
    return mean.tolist(), top.tolist() if want_top else None


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
