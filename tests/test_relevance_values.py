"""The relevance model's native per-call path (_core.relevance) gives exactly the values of its plain numpy
formula (the numpy path it replaced computed the same), and masks in place."""

import warnings

import numpy as np
import pytest

from tqsearch import relevance


def reference(model: relevance.RelevanceModel, scores: np.ndarray, tail: np.ndarray,
              queries: np.ndarray | None = None) -> np.ndarray:
    """sigmoid(w0 + w1 score + w2 tail mean + w3 top [+ a . query]) over the finite tail scores, float32,
    below 1."""
    w = model.weights
    rows = [t[np.isfinite(t)] for t in tail.astype(np.float64)]
    mean = np.array([r.mean() if len(r) else 0.0 for r in rows])
    top = np.array([r.max() if len(r) else 0.0 for r in rows])
    bias = w[0] + w[2] * mean + w[3] * top
    if queries is not None:
        bias = bias + queries.astype(np.float64) @ model.query_weights
    logit = w[1] * scores.astype(np.float64) + bias[:, None]
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


def test_matches_plain_formula_on_many_search_like_rows():
    """Bit-equal on 4,000 rows of cosine-like scores (the float32 rounding of exp's last bit never differs)."""
    rng = np.random.default_rng(5)
    tail = -np.sort(-rng.uniform(0.1, 0.9, (4000, 32)), axis=1).astype(np.float32)
    for model in (relevance.DEFAULT, relevance.RelevanceModel([-4.100508, 15.843848, -11.327107, -1.897894])):
        np.testing.assert_array_equal(model(tail[:, :20], tail), reference(model, tail[:, :20], tail))


def test_query_weights_add_the_query_offset():
    rng = np.random.default_rng(6)
    a = rng.standard_normal(24)
    model = relevance.RelevanceModel([0.5, 12.0, -10.0, 1.0], tail=16, query_weights=a)
    tail = padded_rows(rng, 7, 16, 0.3)
    q = rng.standard_normal((7, 24)).astype(np.float32)
    scores = tail[:, :10].copy()
    got = model(scores, tail, q)
    np.testing.assert_allclose(got, reference(model, scores, tail, q), rtol=1e-6, atol=1e-30)  # dot: another order
    assert not np.allclose(got, relevance.RelevanceModel(model.weights, tail=16)(scores, tail), rtol=0.01)
    with pytest.raises(ValueError, match="reads the queries"):
        model(scores, tail)
    with pytest.raises(ValueError, match="query weights"):
        model(scores, tail, q[:, :-1])
    with pytest.raises(ValueError, match="queries has 6 rows"):
        model(scores, tail, q[:-1])
    with pytest.raises(ValueError, match="tail scores has 6 rows"):
        relevance.DEFAULT(scores, tail[:-1])


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7, 1.0])
def test_filter_masks_a_prefix_in_place_of_column_slices(p):
    """filter's arrays may be column slices of wider ones (a search's best k of its candidates)."""
    rng = np.random.default_rng(3)
    wide = padded_rows(rng, 5, 12, 0.3)
    wide_ids = np.where(np.isfinite(wide), np.arange(60).reshape(5, 12), -1)
    scores, ids, tail = wide[:, :8], wide_ids[:, :8], wide[:, :10]
    rel = relevance.DEFAULT(scores, tail)
    np.testing.assert_array_equal(rel, reference(relevance.DEFAULT, scores, tail))
    ok = (rel >= p) & (ids >= 0)
    expected = np.where(ok, scores, -np.inf), np.where(ok, ids, -1), np.where(ok, rel, 0)
    untouched = wide[:, 8:].copy()
    got = relevance.DEFAULT.filter(scores, ids, tail, None, p)
    assert got[0] is scores and got[1] is ids
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(wide[:, 8:], untouched)
    assert ((got[1] >= 0).sum(1) == np.argmin(np.append(got[1] >= 0, np.zeros((5, 1), bool), 1), 1)).all()
