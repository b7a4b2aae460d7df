"""Adaptive tiers (tiers.py, FlatIndex / HNSWIndex(adaptive=True)): recall at equal bytes, exact kernels, files,
edits."""

from __future__ import annotations

import numpy as np
import pytest

import tqsearch
from tqsearch import FlatIndex, HNSWIndex
from tqsearch.datasets import load_demo_corpus
from tqsearch.distributed._settings import load_or_create
from tqsearch.errors import FileFormatError, InvalidArgumentError
from tqsearch.tiers import TierPlan, candidate_tiers, fit_plan


@pytest.fixture(scope="module")
def corpus():
    return load_demo_corpus()


def _recall(ids: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(g[:10])) / 10 for f, g in zip(ids, gt)]))


def _bytes_per_vector(index: FlatIndex) -> int:
    """Code bytes plus per-vector floats (scale per tier, one offset), the fixed PCA basis excluded."""
    if index.tiers is None:
        return index._codec.row_bytes + 8
    return sum(((b - a) * bits + 7) // 8 for a, b, bits in index.tiers) + 4 * (len(index.tiers) + 1)


@pytest.mark.parametrize("bits, gain", [(2, 0.03), (4, 0.008)])
def test_adaptive_raises_recall_at_equal_bytes_on_the_bundled_corpus(corpus, bits, gain):
    recall, size = {}, {}
    for adaptive in (False, True):
        index = FlatIndex(384, bits, adaptive=adaptive)
        index.add(corpus.vectors)
        recall[adaptive] = _recall(index.search(corpus.queries, 10)[1], corpus.gt_ids)
        size[adaptive] = _bytes_per_vector(index)
    assert index.tiers is not None and index.tiers[0][2] > bits  # more bits on the leading directions
    assert size[True] <= size[False]
    assert recall[True] >= recall[False] + gain, recall  # measured: 2 bits 0.856 -> 0.907, 4 bits 0.955 -> 0.967


@pytest.mark.parametrize("bits", [2, 4])  # tiers of 4 + 2 bits, and of 8 + 4 bits (three block layouts)
def test_tiered_scan_is_exact_on_every_kernel_set(corpus, simd, bits, split_scans):
    results = []
    for level, threads in (("scalar", 1), (simd, 2)):  # two threads: two ranges of the codes, merged
        index = FlatIndex(384, bits, adaptive=True, simd=level)
        index.add(corpus.vectors[:3000])
        assert index.tiers is not None and index.tiers[0][2] == 2 * bits
        results.append(index.search(corpus.queries[:50], 10, filter=np.arange(0, 3000, 3), threads=threads))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_scores_estimate_the_decoded_vectors(corpus, metric):
    """A returned score is the metric against the vector `reconstruct` gives (int8 query rounding aside) and
    near the true score."""
    x, q = corpus.vectors[:3000] * 3.0, corpus.queries[:20] * 3.0
    index = FlatIndex(384, 4, metric=metric, adaptive=True)
    index.add(x)
    assert index.tiers is not None
    scores, ids = index.search(q, 10)
    unique, where = np.unique(ids, return_inverse=True)
    decoded = index.reconstruct(unique)[where.reshape(ids.shape)]
    xs, qs = (x, q) if metric != "cosine" else (x / np.linalg.norm(x, axis=1, keepdims=True),
                                                 q / np.linalg.norm(q, axis=1, keepdims=True))
    if metric == "l2":  # the index keeps ||x - mu||^2 exactly, so compare against it, not ||decoded||^2
        est = 2 * np.einsum("qd,qkd->qk", qs - index.mean, decoded - index.mean) - np.sum(
            np.square(xs[ids] - index.mean), axis=2) - np.sum(np.square(qs - index.mean), axis=1)[:, None]
        true = -np.sum(np.square(xs[ids] - qs[:, None]), axis=2)
    else:
        est = np.einsum("qd,qkd->qk", qs, decoded)
        true = np.einsum("qd,qkd->qk", qs, xs[ids])
    scale = np.abs(true).max()
    np.testing.assert_allclose(scores, est, atol=0.01 * scale)
    assert np.abs(scores - true).mean() < 0.05 * scale


def test_files_edits_and_filters_keep_the_tiers(corpus, tmp_path):
    x = corpus.vectors[:4000]
    index = FlatIndex(384, 2, adaptive=True, threads=1)
    index.add(x)
    want = index.search(corpus.queries[:30], 10)
    index.save(tmp_path / "a.tqs")
    loaded = FlatIndex.load(tmp_path / "a.tqs")
    assert loaded.tiers == index.tiers and loaded.adaptive
    got = loaded.search(corpus.queries[:30], 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(loaded.reconstruct([5, 7]), index.reconstruct([5, 7]))
    # Removing moves the last rows of every tier into the freed slots: the rest score as before.
    loaded.remove(np.arange(0, 4000, 2))
    kept = np.arange(1, 4000, 2)
    scores, ids = loaded.search(corpus.queries[:30], 10)
    ref = index.search(corpus.queries[:30], 10, filter=kept)
    np.testing.assert_array_equal(ids, ref[1])
    np.testing.assert_array_equal(scores, ref[0])
    # Upsert replaces a vector in every tier; a later add does not refit the plan.
    loaded.upsert(x[:1], ids=[3])
    assert loaded.search(x[:1], 1)[1][0, 0] in (0, 3)
    loaded.add(x[:2000] + 0.01, ids=np.arange(10_000, 12_000))
    assert loaded.tiers == index.tiers
    filt = np.arange(10_000, 10_050)
    assert np.isin(loaded.search(corpus.queries[:5], 10, filter=filt)[1], filt).all()


def test_uniform_code_where_tiers_do_not_pay(corpus):
    rng = np.random.default_rng(0)
    iso = rng.standard_normal((3000, 64)).astype(np.float32)  # no direction carries more variance
    index = FlatIndex(64, 2, adaptive=True)
    index.add(iso)
    assert index.tiers is None
    small = FlatIndex(384, 2, adaptive=True)
    small.add(corpus.vectors[:500])  # too few rows to fit a basis on: uniform, and later batches keep it
    small.add(corpus.vectors[500:])
    assert small.tiers is None


def test_plan_candidates_fit_the_uniform_bytes():
    variances = 1.0 / np.arange(1, 385)
    for bits in (1, 2, 4):
        for tiers in candidate_tiers(variances, bits):
            assert tiers[0][0] == 0 and tiers[0][1] == tiers[1][0] and tiers[1][1] <= 384
            code = sum(((b - a) * t + 7) // 8 for a, b, t in tiers)
            assert code + 4 <= (384 * bits + 7) // 8  # one float more than the uniform code's two


def test_bad_settings_and_corrupt_plans_are_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="1, 2 or 4 bits"):
        FlatIndex(384, 3, adaptive=True)
    with pytest.raises(TypeError, match="adaptive"):
        FlatIndex(384, 2, adaptive=1)
    plan = fit_plan(corpus.vectors, corpus.vectors.mean(0), 2, "ip", 0)
    with pytest.raises(ValueError, match="consecutive"):
        TierPlan(plan.basis, ((0, 64, 4), (72, 128, 2))).check(384)
    with pytest.raises(ValueError, match="basis"):
        TierPlan(plan.basis[:10], plan.tiers).check(384)
    index = FlatIndex(384, 2, adaptive=True)
    index.add(corpus.vectors[:3000])
    meta, arrays = index._state()
    meta["tiers"] = [[0, 64, 4], [64, 500, 2]]
    with pytest.raises(FileFormatError, match="inconsistent"):
        FlatIndex._from_state(meta, arrays, "test")


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_collection_keeps_its_tiers_across_reopen_and_compaction(corpus, tmp_path, kind):
    ids = [str(i) for i in range(len(corpus.vectors))]
    c = tqsearch.open(tmp_path / "c", dim=384, bits=2, index=kind, vectors=None, adaptive=True)
    c.upsert(ids, corpus.vectors)  # one first batch: the plan is fitted on it
    tiers, want = c._index.tiers, c.query(corpus.queries[:40], 10)
    assert tiers is not None
    recall = np.mean([len({int(i) for i in h["ids"]} & set(g[:10])) / 10 for h, g in zip(want, corpus.gt_ids)])
    assert recall >= 0.88  # codes only (no stored vectors); all queries: flat 0.907, hnsw 0.902, uniform 0.856
    c.close()
    c = tqsearch.open(tmp_path / "c")  # replays the log: a graph built again on 2 threads may link differently
    got = c.query(corpus.queries[:40], 10)
    same = np.mean([len(set(g["ids"]) & set(w["ids"])) / 10 for g, w in zip(got, want)])
    assert c._index.tiers == tiers and (same == 1.0 if kind == "flat" else same >= 0.97), same
    c.upsert(["extra"], corpus.vectors[:1])
    c.compact()
    c.close()
    c = tqsearch.open(tmp_path / "c")
    assert c._index.tiers == tiers and set(c.query(corpus.vectors[:1], 2)[0]["ids"]) == {"0", "extra"}
    c.close()


def test_sharded_collections_refuse_adaptive(tmp_path):
    given = {"dim": 8, "bits": 2, "metric": None, "index": "flat", "vectors": None, "shards": 2, "replicas": 1,
             "index_options": {"adaptive": True}}
    with pytest.raises(InvalidArgumentError, match="adaptive"):
        load_or_create(tmp_path, given)
    assert not (tmp_path / "distributed.json").exists()


@pytest.mark.parametrize("tiers", [((0, 384, 4),), ((0, 64, 8), (64, 192, 4), (192, 320, 2))], ids=["one", "three"])
def test_plans_of_other_tier_counts_from_a_file_score_like_their_decoded_vectors(corpus, tmp_path, tiers):
    """fit_plan makes two tiers, but a file may hold any consecutive tiers: one tier over every direction (a
    rotated uniform code, whose scores must still carry the offsets <mu, x - mu>), or three."""
    x, q = corpus.vectors[:2000], corpus.queries[:10]
    index = FlatIndex(384, 4, adaptive=True)
    index.add(x)
    meta, arrays = index._state()
    index = FlatIndex(384, 4, adaptive=True)
    index._mean, index._planned = np.asarray(arrays["mean"]), True
    index._use_plan(TierPlan(np.asarray(arrays["basis"]), tiers))
    index.add(x)
    index.save(tmp_path / "one.tqs")
    loaded = FlatIndex.load(tmp_path / "one.tqs")
    assert loaded.tiers == list(tiers)
    scores, ids = loaded.search(q, 10)
    unique, where = np.unique(ids, return_inverse=True)
    est = np.einsum("qd,qkd->qk", q, loaded.reconstruct(unique)[where.reshape(ids.shape)])
    np.testing.assert_allclose(scores, est, atol=0.01)
    assert np.mean([len(set(f) & set(np.argsort(-(x @ v))[:10])) / 10 for f, v in zip(ids, q)]) >= 0.9


# ------------------------------------------------------------------ HNSWIndex


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_an_adaptive_graph_scores_exactly_as_the_adaptive_flat_scan(corpus, metric):
    """Same first batch, same plan and codes: a search over every node returns the flat scan's scores and ids bit
    for bit, the walk finds what it finds, and both decode the same vectors."""
    x, q = corpus.vectors[:3000] * 3.0, corpus.queries[:40] * 3.0
    graph = HNSWIndex(384, 4, metric=metric, adaptive=True, threads=1)
    flat = FlatIndex(384, 4, metric=metric, adaptive=True)
    graph.add(x)
    flat.add(x)
    assert graph.tiers is not None and graph.tiers == flat.tiers
    want = flat.search(q, 10)
    got = graph.search(q, 10, exhaustive=True)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    walked = graph.search(q, 10, ef=128)[1]
    assert np.mean([len(set(w) & set(f)) / 10 for w, f in zip(walked, want[1])]) >= 0.97
    np.testing.assert_array_equal(graph.reconstruct([3, 700]), flat.reconstruct([3, 700]))
    assert graph.memory_usage()["basis"] == flat.memory_usage()["basis"] == 384 * 384 * 4


def test_an_adaptive_graph_raises_recall_at_equal_bytes_on_the_bundled_corpus(corpus):
    recall, rows = {}, {}
    for adaptive in (False, True):
        index = HNSWIndex(384, 4, adaptive=adaptive)
        index.add(corpus.vectors)
        recall[adaptive] = _recall(index.search(corpus.queries, 10, ef=256)[1], corpus.gt_ids)
        rows[adaptive] = index._store.row_bytes + 4 * (1 + len(index.tiers or [None]))
    assert index.tiers is not None and rows[True] <= rows[False]
    assert recall[True] >= recall[False] + 0.008, recall  # measured: 0.954 -> 0.966


@pytest.mark.parametrize("bits", [2, 4])
def test_an_adaptive_graph_is_the_same_on_every_kernel_set(corpus, simd, bits):
    results = []
    for level in ("scalar", simd):
        index = HNSWIndex(384, bits, adaptive=True, simd=level, threads=1)
        index.add(corpus.vectors[:3000])
        assert index.tiers is not None
        results.append(index.search(corpus.queries[:50], 10, ef=64, filter=np.arange(0, 3000, 3)))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])


def test_an_adaptive_graph_keeps_its_tiers_through_files_and_edits(corpus, tmp_path):
    x, q = corpus.vectors[:4000], corpus.queries[:30]
    index = HNSWIndex(384, 2, adaptive=True, threads=1)
    index.add(x)
    want = index.search(q, 10, ef=64)
    index.save(tmp_path / "g.tqs")
    loaded = tqsearch.load(tmp_path / "g.tqs")
    assert isinstance(loaded, HNSWIndex) and loaded.tiers == index.tiers and loaded.adaptive
    got = loaded.search(q, 10, ef=64)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(loaded.reconstruct([5, 7]), index.reconstruct([5, 7]))
    loaded.remove(np.arange(0, 4000, 2))
    exact = loaded.search(q, 10, exhaustive=True)
    ref = index.search(q, 10, exhaustive=True, filter=np.arange(1, 4000, 2))
    np.testing.assert_array_equal(exact[1], ref[1])
    np.testing.assert_array_equal(exact[0], ref[0])
    loaded.upsert(x[:1], ids=[3])  # into a freed slot, with every tier's code
    assert loaded.search(x[:1], 1, ef=64)[1][0, 0] == 3
    np.testing.assert_allclose(loaded.reconstruct([3]), index.reconstruct([0]), atol=1e-6)  # x[0]'s code again
    meta, arrays = loaded._state()
    arrays["a"] = arrays["a"][: loaded._store.size]  # one a per node, not one per node and tier
    with pytest.raises(FileFormatError, match="inconsistent"):
        HNSWIndex._from_state(meta, arrays, "test")
