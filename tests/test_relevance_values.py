"""The relevance model's fast per-call path gives exactly the values of its plain formula."""

import warnings

import numpy as np
import pytest

from tqsearch import relevance


def reference(model: relevance.RelevanceModel, scores: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """sigmoid(w0 + w1 score + w2 tail mean + w3 top) over the finite tail scores, float32, below 1."""
    w = model.weights
    rows = [t[np.isfinite(t)] for t in tail.astype(np.float64)]
    mean = np.array([r.mean() if len(r) else 0.0 for r in rows])
    top = np.array([r.max() if len(r) else 0.0 for r in rows])
    logit = w[1] * scores.astype(np.float64) + (w[0] + w[2] * mean + w[3] * top)[:, None]
    with np.errstate(over="ignore"):
        r = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return np.minimum(r, np.nextafter(np.float32(1), np.float32(0)))


def padded_rows(rng: np.random.Generator, nq: int, width: int, scale: float) -> np.ndarray:
    """Rows best first, float32, some ending in -inf padding (one fully padded when nq > 2)."""
    s = -np.sort(-rng.standard_normal((nq, width)) * scale, axis=1).astype(np.float32)
    for i in range(0, nq, 3):
        s[i, rng.integers(0, width) :] = -np.inf
    return s


@pytest.mark.parametrize("weights", [relevance.DEFAULT.weights, [-4.1, 15.8, -11.2, -1.9], [3.0, 900.0, -5.0, 2.0]])
@pytest.mark.parametrize("nq", [1, 2, 7])
def test_matches_plain_formula(weights, nq):
    model = relevance.RelevanceModel(weights, tail=16)
    rng = np.random.default_rng(nq)
    for scale in (0.3, 50.0):  # 50: logits far past exp's float64 range, which must not warn
        tail = padded_rows(rng, nq, 16, scale)
        scores = tail[:, :10].copy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = model(scores, tail)
        expected = reference(model, scores, tail)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7, 1.0])
def test_keep_masks_a_prefix_in_place(p):
    rng = np.random.default_rng(3)
    tail = padded_rows(rng, 5, 12, 0.3)
    scores = tail[:, :8].copy()
    ids = np.where(np.isfinite(scores), np.arange(40).reshape(5, 8), -1)
    rel = relevance.DEFAULT(scores, tail)
    ok = (rel >= p) & (ids >= 0)
    expected = np.where(ok, scores, -np.inf), np.where(ok, ids, -1), np.where(ok, rel, 0)
    got = relevance.keep(scores, ids, rel, p)
    assert got[0] is scores and got[1] is ids and got[2] is rel
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    assert ((got[1] >= 0).sum(1) == np.argmin(np.append(got[1] >= 0, np.zeros((5, 1), bool), 1), 1)).all()
