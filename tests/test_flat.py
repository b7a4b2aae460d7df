import numpy as np
import pytest
from conftest import int8_estimate

import tqsearch
from tqsearch import FileFormatError, FlatIndex, HNSWIndex, SearchParams, _core
from tqsearch.datasets import load_demo_corpus


def _data(n, dim, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) * scale).astype(np.float32)


def brute_force_scores(index: FlatIndex, queries: np.ndarray) -> np.ndarray:
    """All (query, slot) scores recomputed independently in numpy from the stored codes."""
    n = len(index)
    packed = np.empty((n, index._codec.row_bytes), dtype=np.uint8)
    index._store.packed_rows(np.arange(n, dtype=np.int64), packed)
    idx = np.empty((n, index.dim), dtype=np.uint8)
    _core.unpack(packed, index.dim, index.bits, idx)
    a, b = index._store.a(), index._store.b()
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30) if index.metric == "cosine" \
        else queries
    mu = index.mean  # codes hold x - mu, queries are centred too (_index.py)
    rq = index._codec.rotation.forward(q - mu).astype(np.float64)
    c = index._codec.codebook.centroids.astype(np.float64)
    if index.bits in (4, 8):  # the documented int8 estimator of scorer.h
        est = int8_estimate(rq, idx, c, index.bits)
    elif index.bits <= 2:  # the documented u8 lookup-table estimator of flat.h, in float32 like the C++
        est = np.stack([_lut_estimate(q, idx, index.bits, index._codec.codebook.centroids) for q in rq.astype(np.float32)])
    else:
        est = rq @ c[idx].T
    scores = a * est + b
    if index.metric == "l2":
        return scores - np.sum((queries - mu).astype(np.float64) ** 2, axis=1, keepdims=True)
    return scores + (q @ mu)[:, None]


def _lut_estimate(q: np.ndarray, idx: np.ndarray, bits: int, centroids: np.ndarray) -> np.ndarray:
    """Per vector: step * sum of table entries (0..127, so kernels may add two as bytes) + sum of table offsets (one
    table per 4/bits dims)."""
    sub = 4 // bits
    tables = -(-len(q) // sub)
    tables += -tables % 4
    qp = np.zeros(tables * sub, dtype=np.float32)
    qp[: len(q)] = q
    nib = np.arange(16)
    partial = np.zeros((tables, 16), dtype=np.float32)
    for s in range(sub):  # accumulate in the same order as the C++ (float32, no fused multiply-add)
        partial = partial + qp[s::sub][:, None] * centroids[(nib >> (bits * s)) & ((1 << bits) - 1)][None, :]
    lo = partial.min(axis=1)
    step = np.float32((partial.max(axis=1) - lo).max() / np.float32(127))
    base = np.float32(0)
    for v in lo:
        base = np.float32(base + v)
    lut = np.rint((partial - lo[:, None]) / step).astype(np.int64)
    codes = np.zeros((len(idx), tables * sub), dtype=np.int64)
    codes[:, : idx.shape[1]] = idx
    nibbles = sum(codes[:, s::sub] << (bits * s) for s in range(sub))
    sums = lut[np.arange(tables), nibbles].sum(axis=1)
    return sums.astype(np.float32) * step + base


def top_k(scores: np.ndarray, slots_to_ids: np.ndarray, k: int):
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), slots_to_ids[order]


@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_eight_bit_scores_track_the_float_estimate(cls):
    """8-bit codes score through ~13-bit values (scorer.h): on the bundled corpus the mean error against the
    float inner product with the decoded vectors is 0.05% of the top score (0.12% with the old u8 table)."""
    c = load_demo_corpus()
    index = cls(c.vectors.shape[1], 8, metric="ip")
    index.add(c.vectors)
    scores, ids = index.search(c.queries, 100)
    decoded = index.reconstruct(index.ids).astype(np.float64)
    floats = np.einsum("qd,qkd->qk", c.queries.astype(np.float64), decoded[np.searchsorted(index.ids, ids)])
    err = np.abs(scores - floats) / np.abs(floats).max(axis=1, keepdims=True)
    assert err.mean() < 0.0008 and err.max() < 0.006


@pytest.mark.parametrize("bits", [2, 4])
def test_codes_grown_past_the_huge_page_size_keep_every_vector(bits):
    """From 4 MB the codes are 2 MB aligned on huge pages (common.h): adds that grow them across that size and
    within it, removals that move slots and an exact reserve keep every code, and the scan over them equals the
    brute-force ranking of the same codes."""
    dim, queries = 768, _data(5, 768, seed=1)
    x = _data(24_000, dim, seed=2)
    index = FlatIndex(dim, bits, seed=3)
    for part in np.array_split(x, 6):  # 2-bit: 0.8 MB of codes, then past 4 MB
        index.add(part)
    index.remove(np.arange(0, 24_000, 7))
    index.reserve(30_000)
    assert index.memory_usage()["codes"] >= 5 << 20  # codes alone past 4 MB (a and b: 8 bytes a vector)
    scores, ids = index.search(queries, 10)
    want_scores, want_ids = top_k(brute_force_scores(index, queries), index.ids, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4 * np.abs(want_scores).max())
    kept = np.setdiff1d(np.arange(24_000), np.arange(0, 24_000, 7))
    np.testing.assert_array_equal(np.sort(index.ids), kept)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_search_equals_brute_force_over_the_same_codes(bits, metric):
    x, queries = _data(700, 97, scale=3.0), _data(9, 97, seed=1)
    index = FlatIndex(97, bits, metric=metric, seed=3)
    index.add(x)
    scores, ids = index.search(queries, 10)
    want_scores, want_ids = top_k(brute_force_scores(index, queries), index.ids, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4 * np.abs(want_scores).max())


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("threads", [1, 2])
def test_top_k_is_the_head_of_the_full_ranking(bits, metric, threads, split_scans):
    """The scan skips blocks whose raw sums cannot reach a query's current k-th score (a bound from the stored
    per-vector floats, FlatStore::raw_floor), and a one-query scan those whose exact scores cannot (scan_one). With
    norms spread over 100x and off-centre data, the top 10 are the head of the full ranking (k = n, where no bound
    applies) with every kernel set, filtered or not, one query per call or many, also when two threads scan halves
    of the codes, each with its own bounds, and merge."""
    n, dim = 3000, 48
    x = _off_centre(n, dim) * np.random.default_rng(5).uniform(0.1, 10.0, (n, 1)).astype(np.float32)
    q = _off_centre(20, dim, seed=1)
    allowed = np.arange(0, n, 3)
    for level in tqsearch.available_simd_levels():
        index = FlatIndex(dim, bits, metric=metric, simd=level, threads=threads)
        index.add(x)
        full_scores, full_ids = index.search(q, n)
        scores, ids = index.search(q, 10)
        np.testing.assert_array_equal(ids, full_ids[:, :10])
        np.testing.assert_array_equal(scores, full_scores[:, :10])
        alone = [index.search(q[i : i + 1], 10) for i in range(len(q))]
        np.testing.assert_array_equal(np.concatenate([i for _, i in alone]), full_ids[:, :10])
        np.testing.assert_array_equal(np.concatenate([s for s, _ in alone]), full_scores[:, :10])
        kept = np.isin(full_ids, allowed)
        scores, ids = index.search(q, 10, filter=allowed)
        np.testing.assert_array_equal(ids, full_ids[kept].reshape(len(q), -1)[:, :10])
        np.testing.assert_array_equal(scores, full_scores[kept].reshape(len(q), -1)[:, :10])


@pytest.mark.parametrize("bits", [1, 4])
@pytest.mark.parametrize("threads", [1, 2])
def test_large_k_equals_brute_force_with_ties(bits, threads, split_scans):
    # k above TopK's heap limit (topk.h) selects through its buffer; duplicated rows give equal scores, which
    # must still come back best score first, then smallest id, including when code ranges merge (threads=2)
    x = _data(1500, 48)
    x = np.concatenate([x, x[:700]])
    queries = _data(3, 48, seed=1)
    index = FlatIndex(48, bits)
    index.add(x)
    for k in (65, 500, len(x)):
        scores, ids = index.search(queries, k, threads=threads)
        want_scores, want_ids = top_k(brute_force_scores(index, queries), index.ids, k)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4 * np.abs(want_scores).max())


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("k", [100, 500])
def test_large_k_cut_inside_a_run_of_equal_scores_keeps_the_smallest_ids(bits, k):
    # 12 distinct vectors, 250 copies each in shuffled slots: every query's k-th best sits inside a run of 250 equal
    # scores, so the top-k buffer's cuts (topk.h, above 64) must split runs of ties by id at every step
    rows = _data(12, 40)[np.random.default_rng(2).permutation(np.repeat(np.arange(12), 250))]
    queries = _data(5, 40, seed=1)
    index = FlatIndex(40, bits)
    index.add(rows)
    want_scores, want_ids = top_k(brute_force_scores(index, queries), index.ids, k)
    for q in (queries, *[queries[i : i + 1] for i in range(len(queries))]):  # a batch, and one query per call
        scores, ids = index.search(q, k, threads=1)
        rows_of = slice(None) if len(q) > 1 else [int(np.flatnonzero((queries == q).all(axis=1))[0])]
        np.testing.assert_array_equal(ids, want_ids[rows_of])
        np.testing.assert_allclose(scores, want_scores[rows_of], rtol=1e-4, atol=1e-4 * np.abs(want_scores).max())


def test_int8_scan_tracks_the_float_estimate():
    x, queries = _data(2000, 128), _data(20, 128, seed=1)
    index = FlatIndex(128, 4)
    index.add(x)
    scores, ids = index.search(queries, 5)
    codec = tqsearch.TurboQuantMSE(128, 4, scale="unbiased", mean=index.mean)  # the index's centred codes
    est = codec.inner_products(queries, codec.encode(x))
    np.testing.assert_allclose(scores, np.take_along_axis(est, ids, 1), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("dim", [384, 200])  # 4 bits: 48 and 25 pairs of groups (the one-query kernels' tail)
def test_every_kernel_set_returns_identical_results(simd, bits, dim):
    x, queries = _data(1000, dim), _data(7, dim, seed=1)
    results = []
    for level in ("scalar", simd):
        index = FlatIndex(dim, bits, simd=level)
        index.add(x)
        results.append(index.search(queries, 10))
        # one query per call takes the one-query kernels, which must score exactly as a chunk of queries does
        alone = [index.search(queries[i : i + 1], 10) for i in range(len(queries))]
        np.testing.assert_array_equal(np.concatenate([ids for _, ids in alone]), results[-1][1])
        np.testing.assert_array_equal(np.concatenate([s for s, _ in alone]), results[-1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])


def test_recall_on_the_bundled_corpus():
    c = load_demo_corpus()
    index = FlatIndex(384, 4)
    index.add(c.vectors)
    _, ids = index.search(c.queries, 10)
    recall = np.mean([len(set(f) & set(g[:10])) / 10 for f, g in zip(ids, c.gt_ids)])
    assert recall >= 0.93
    fine = FlatIndex(384, 4, rerank="fp16")
    fine.add(c.vectors)
    _, ids = fine.search(c.queries, 10)
    assert np.mean([len(set(f) & set(g[:10])) / 10 for f, g in zip(ids, c.gt_ids)]) >= 0.99


def test_rescore_keyword_params_and_the_deprecated_name():
    """rescore (keyword or SearchParams) sets the rerank candidates; rerank_factor still works, warning."""
    c = load_demo_corpus()
    index = FlatIndex(384, 2, rerank="fp16")
    index.add(c.vectors[:3000])
    q = c.queries[:50]
    codes_only, by_keyword = index.search(q, 10, rescore=0), index.search(q, 10, rescore=6)
    np.testing.assert_array_equal(index.search(q, 10, params=SearchParams(rescore=6))[1], by_keyword[1])
    with pytest.warns(DeprecationWarning, match="rescore"):
        old = index.search(q, 10, rerank_factor=6)
    np.testing.assert_array_equal(old[1], by_keyword[1])
    exact = np.argsort(-(q @ c.vectors[:3000].T), axis=1)[:, :10]
    recall = [np.mean([len(set(f) & set(g)) / 10 for f, g in zip(ids, exact)]) for _, ids in (codes_only, by_keyword)]
    assert recall[1] > recall[0] + 0.05 and recall[1] >= 0.97, recall
    with pytest.raises(ValueError, match="rescore"):
        SearchParams(rescore=-1)
    with pytest.raises(ValueError, match="ef"):
        SearchParams(ef=0)


def test_exhaustive_graph_search_equals_the_flat_scan():
    """SearchParams(exhaustive=True) on HNSW scores every code with the flat scan's exact integer arithmetic."""
    c = load_demo_corpus()
    flat, graph = FlatIndex(384, 4), HNSWIndex(384, 4, M=8, ef_construction=40)
    flat.add(c.vectors[:4000])
    graph.add(c.vectors[:4000])
    allowed = np.arange(0, 4000, 3)
    for filter in (None, allowed):
        want = flat.search(c.queries[:40], 10, filter=filter)
        got = graph.search(c.queries[:40], 10, filter=filter, params=SearchParams(exhaustive=True, ef=10))
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)


def test_padding_filters_and_masks():
    x = _data(100, 16)
    index = FlatIndex(16, 2)
    index.add(x)
    scores, ids = index.search(x[:2], 150)
    assert (ids[:, 100:] == -1).all() and np.isneginf(scores[:, 100:]).all() and (ids[:, :100] >= 0).all()
    allowed = np.array([3, 50, 77, 99])
    scores, ids = index.search(x[:5], 10, filter=allowed)
    assert set(ids[:, :4].ravel()) <= set(allowed) and (ids[:, 4:] == -1).all()
    mask = np.zeros(100, dtype=bool)
    mask[allowed] = True
    np.testing.assert_array_equal(index.search(x[:5], 10, filter=mask)[1], ids)
    full_scores = brute_force_scores(index, x[:5])
    keep = np.isin(index.ids, allowed)
    want_scores, want_ids = top_k(np.where(keep, full_scores, -np.inf), index.ids, 4)
    np.testing.assert_array_equal(ids[:, :4], want_ids)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_a_plain_search_matches_the_filtered_path(metric, bits):
    """A search without filter, rescoring or tiers is one native call (FlatIndex.search_checked): it must return what
    the general path does, bit for bit, here reached through a filter that allows every id."""
    x, queries = _data(700, 24, scale=3.0) + 1.0, _data(9, 24, seed=1)
    index = FlatIndex(24, bits, metric=metric)
    index.add(x, ids=np.arange(5000, 5700))
    index.remove(np.arange(5000, 5700, 7))  # slots move: ids must still map
    every = np.ones(5700, dtype=bool)
    for k in (1, 10, len(index), len(index) + 5):
        want = index.search(queries, k, filter=every)
        got = index.search(queries, k)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    assert got[0].shape == (9, len(index)) and got[0].dtype == np.float32 and got[1].dtype == np.int64
    bad = queries.copy()
    bad[4, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*row 4"):
        index.search(bad, 10)


@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_an_id_filter_selects_what_its_mask_selects(cls):
    """A filter of a few ids is looked up id by id (_allowed), a longer one matched against every stored id: either
    must select exactly what a boolean mask over the same ids does, with repeated, absent, negative and removed ids."""
    x, queries = _data(3000, 16), _data(5, 16, seed=1)
    index = cls(16, 4)
    index.add(x, ids=np.arange(10, 3010))
    index.remove([15, 16, 2000])
    live_ids = set(index.ids.tolist())
    for wanted in ([15, 20, 20, 999, 5000, -3, 2000, 2500], list(range(10, 3010, 300)), list(range(10, 3010, 2))):
        mask = np.zeros(6000, dtype=bool)
        mask[[i for i in wanted if i >= 0]] = True
        got, want = index.search(queries, 10, filter=np.array(wanted)), index.search(queries, 10, filter=mask)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
        live = set(wanted) & live_ids
        assert set(got[1][got[1] >= 0].tolist()) <= live
        assert index._allowed(np.array(wanted))[1] == len(live)  # the count a walk's fallback and k' rely on
        if cls is FlatIndex:  # exhaustive: every allowed live id up to k
            assert ((got[1] >= 0).sum(axis=1) == min(10, len(live))).all()


def test_deletes_and_upserts_keep_results_exact():
    x, queries = _data(300, 32), _data(6, 32, seed=1)
    index = FlatIndex(32, 4)
    index.add(x, ids=np.arange(1000, 1300))
    index.remove([1000, 1150, 1299, 1042])
    assert len(index) == 296 and 1150 not in index and 1151 in index
    scores, ids = index.search(queries, 20)
    assert not set(ids.ravel()) & {1000, 1150, 1299, 1042}
    want_scores, want_ids = top_k(brute_force_scores(index, queries), index.ids, 20)
    np.testing.assert_array_equal(ids, want_ids)
    index.upsert(queries[:1] * 10, ids=[1001])  # replace an existing vector
    assert index.search(queries[:1], 1)[1][0, 0] == 1001 and len(index) == 296
    index.add(x[:1], ids=[1150])  # a removed id can come back
    assert 1150 in index and len(index) == 297


def test_bad_input_leaves_the_index_unchanged():
    x = _data(50, 8)
    index = FlatIndex(8, 4)
    index.add(x)
    before = index.search(x[:3], 5)
    bad = x[:2].copy()
    bad[1, 2] = np.nan
    calls = [
        (lambda: index.add(bad), ValueError, "NaN"),
        (lambda: index.add(x[:2, :7]), ValueError, "8 columns"),
        (lambda: index.add(x[:2], ids=[0, 60]), ValueError, "already in the index"),
        (lambda: index.add(x[:2], ids=[70, 70]), ValueError, "duplicates"),
        (lambda: index.add(x[:2], ids=[1.5, 2.5]), TypeError, "integers"),
        (lambda: index.add(x[:2], ids=[-4, 5]), ValueError, ">= 0"),
        (lambda: index.upsert(bad, ids=[1, 2]), ValueError, "NaN"),
        (lambda: index.remove([3, 999]), KeyError, "999"),
        (lambda: index.search(x[:1], 0), ValueError, "k must be"),
        (lambda: index.search(x[:1, :3], 5), ValueError, "8 columns"),
        (lambda: index.search(x[:1], 5, filter=np.array([0.5])), TypeError, "filter"),
        (lambda: index.search(x[:1], 5, rescore=3), ValueError, "rerank"),
        (lambda: index.search(x[:1], 5, params=SearchParams(rescore=3)), ValueError, "rerank"),
        (lambda: index.search(x[:1], 5, params={"ef": 3}), TypeError, "SearchParams"),
        (lambda: index.reconstruct([999]), KeyError, "999"),
    ]
    for call, error, match in calls:
        with pytest.raises(error, match=match):
            call()
    assert len(index) == 50
    after = index.search(x[:3], 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])


@pytest.mark.parametrize("rerank", [None, "fp16", 8])
def test_save_load_round_trip(tmp_path, rerank):
    x, queries = _data(500, 40, scale=2), _data(5, 40, seed=1)
    index = FlatIndex(40, 4, metric="l2", rerank=rerank)
    index.add(x, ids=np.arange(500) * 3)
    index.remove([3, 6])
    path = tmp_path / "index.tq"
    index.save(path)
    again = tqsearch.load(path)
    assert len(again) == 498 and again.metric == "l2" and 6 not in again
    for a, b in zip(index.search(queries, 10), again.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.add(x[:1]), [1498])  # auto ids continue after the largest (1497)


def test_corrupt_or_foreign_files(tmp_path):
    index = FlatIndex(8, 4)
    index.add(_data(40, 8))
    path = tmp_path / "i.tq"
    index.save(path)
    raw = path.read_bytes()
    for bad, match in [(raw[:-5], "truncated"), (b"\x00" * 8 + raw[8:], "not a TQFLAT01"),
                       (raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:], "checksum")]:
        (tmp_path / "bad.tq").write_bytes(bad)
        with pytest.raises(FileFormatError, match=match):
            tqsearch.load(tmp_path / "bad.tq")


def test_l2_on_unnormalized_data_and_zero_vectors():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2000, 64)) * rng.uniform(0.1, 20, (2000, 1))).astype(np.float32)
    x[5] = 0
    queries = x[:50] + rng.standard_normal((50, 64)).astype(np.float32) * 0.1
    index = FlatIndex(64, 4, metric="l2")
    index.add(x)
    _, ids = index.search(queries, 1)
    exact = np.argmin(((queries[:, None] - x[None]) ** 2).sum(-1), axis=1)
    assert np.mean(ids[:, 0] == exact) >= 0.9
    cos = FlatIndex(64, 4, metric="cosine")
    cos.add(x)
    scores, _ = cos.search(np.zeros((1, 64), dtype=np.float32), 3)
    assert np.isfinite(scores).all()
    # the zero row is coded as 0 - mean: it decodes back to about zero (a 4-bit code's error of ||mean||)
    assert np.linalg.norm(cos.reconstruct([5])) < 0.2 * np.linalg.norm(cos.mean)


def test_load_maps_the_file_and_copies_only_on_write(tmp_path):
    x, queries = _data(300, 24), _data(4, 24, seed=1)
    index = FlatIndex(24, 2)
    index.add(x)
    path = tmp_path / "m.tq"
    index.save(path)
    before = path.read_bytes()
    mapped = tqsearch.load(path, mmap=True)
    assert mapped._store.attached  # searched straight from the mapping
    np.testing.assert_array_equal(mapped.search(queries, 5)[1], index.search(queries, 5)[1])
    mapped.remove([0])
    mapped.add(x[:2])
    assert not mapped._store.attached and len(mapped) == 301
    assert path.read_bytes() == before  # writes went to memory, never to the file
    mapped.save(path)  # replacing the file under a live mapping is safe (atomic rename)
    assert len(tqsearch.load(path, mmap=False)) == 301


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("change", ["add", "remove", "reserve", "remove none"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_a_loaded_index_lets_go_of_its_file_once_it_owns_a_copy(mmap, change, adaptive, tmp_path):
    # A change copies the codes off the file; the file's buffer (or mapping) must go then, not stay held beside the
    # copy (memory_usage()["file"] counted it for as long as it stayed). Removing no id changes nothing.
    x, queries = _data(300, 32) / np.arange(1, 33, dtype=np.float32), _data(4, 32, seed=1)
    index = FlatIndex(32, 4, adaptive=adaptive)
    index.add(x)
    index.save(tmp_path / "a.tqs")
    loaded = FlatIndex.load(tmp_path / "a.tqs", mmap=mmap)
    assert loaded.memory_usage()["file"] == (tmp_path / "a.tqs").stat().st_size
    {"add": lambda: loaded.add(x[:1]), "remove": lambda: loaded.remove([0]), "reserve": lambda: loaded.reserve(400),
     "remove none": lambda: loaded.remove(np.array([], dtype=np.int64))}[change]()
    kept = change == "remove none"
    assert (loaded.memory_usage()["file"] > 0) == kept and (loaded._mapped is not None) == kept
    expected = {"add": lambda: index.add(x[:1]), "remove": lambda: index.remove([0])}.get(change, lambda: None)
    expected()
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])


def test_fuzzed_calls_raise_clean_errors_and_never_corrupt_the_index():
    rng = np.random.default_rng(123)
    index = FlatIndex(6, 2, metric="l2")
    index.add(_data(40, 6))
    probe = _data(3, 6, seed=9)
    reference = index.search(probe, 7)

    def junk():
        kind = rng.integers(8)
        shape = tuple(int(s) for s in rng.integers(0, 8, size=rng.integers(0, 4)))
        if kind == 0:
            return rng.standard_normal(shape)
        if kind == 1:
            return rng.integers(-5, 50, size=shape)
        if kind == 2:
            return np.full(shape, np.nan)
        if kind == 3:
            return rng.standard_normal(shape) > 0
        if kind == 4:
            return "text"
        if kind == 5:
            return None
        if kind == 6:
            return [[1.0] * int(rng.integers(0, 8))]
        return np.full(shape, 1e39)

    calls = [lambda a, b: index.add(a, ids=b), lambda a, b: index.upsert(a, b), lambda a, b: index.remove(a),
             lambda a, b: index.search(a, 3, filter=b), lambda a, b: index.reconstruct(a)]
    for _ in range(600):
        call = calls[rng.integers(len(calls))]
        before = (len(index), index.ids.copy())
        try:
            call(junk(), junk())
        except (TypeError, ValueError, KeyError):
            assert (len(index), index.ids.tolist()) == (before[0], before[1].tolist())  # failed calls change nothing
    # whatever succeeded, the index still answers consistently with a brute force over its codes
    scores, ids = index.search(probe, 7)
    want_scores, want_ids = top_k(brute_force_scores(index, probe), index.ids, 7)
    np.testing.assert_array_equal(ids, want_ids[:, :7])
    assert reference[0].shape == scores.shape


def test_search_on_an_empty_index_pads():
    scores, ids = FlatIndex(8, bits=4).search(_data(2, 8), 3)
    assert (ids == -1).all() and np.isneginf(scores).all()


def _off_centre(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) + 3.0 * np.random.default_rng(99).standard_normal(dim)).astype(np.float32)


def _exact(q, x, metric):
    if metric == "l2":
        return np.argsort(((q[:, None] - x[None]) ** 2).sum(-1), axis=1)[:, :10]
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.argsort(-(q @ x.T), axis=1)[:, :10]


@pytest.mark.parametrize("index_cls", [FlatIndex, HNSWIndex])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_centring_raises_recall_and_keeps_true_scores_off_centre(index_cls, metric):
    x, q = _off_centre(3000, 64), _off_centre(40, 64, seed=1)
    exact = _exact(q, x, metric)
    recall, err = {}, {}
    for center in (False, True):
        index = index_cls(64, 2, metric=metric, center=center)
        index.add(x)
        scores, ids = index.search(q, 10)
        recall[center] = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(ids, exact)])
        xs = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
        qs = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
        true = -((qs[:, None] - xs[ids]) ** 2).sum(-1) if metric == "l2" else np.einsum("qd,qkd->qk", qs, xs[ids])
        err[center] = np.mean(np.abs(scores - true))  # returned scores estimate the true ones, constants included
    xs = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    np.testing.assert_allclose(index.mean, xs.mean(0), atol=1e-5)  # cosine: the mean of the unit vectors
    assert recall[True] >= recall[False] + 0.1
    assert err[True] < 0.6 * err[False]


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_queries_are_prepared_as_their_scores_need_them(metric):
    """_core.prepare_queries (every index's query path): the query normalised for cosine as exact re-ranking does (a
    zero row stays zero), centred and rotated, and the constant its scores miss, <q, mu> or -||q - mu||^2, rounded
    once from an exact sum; the first row holding NaN or Inf is named."""
    from tqsearch import _core
    from tqsearch._index import exact_scores
    from tqsearch.rotation import FhtKacRotation

    rng = np.random.default_rng(3)
    q = (rng.standard_normal((7, 48)) * 3 + 1).astype(np.float32)
    q[2] = 0
    mean = rng.standard_normal(48).astype(np.float32)
    rotation = FhtKacRotation(48, seed=5)
    out, constant = np.empty_like(q), np.empty(7, dtype=np.float32)
    assert _core.prepare_queries(q, mean, metric, rotation.native, out, constant, 2) == -1
    if metric == "cosine":  # as exact.h normalises: divided by the root of the canonical-order square sum
        norms = np.sqrt(np.array([exact_scores(row, row[None], "ip")[0] for row in q]))[:, None]
        q = q / np.where(norms > 0, norms, np.float32(1))
    centred = q - mean
    np.testing.assert_allclose(out, rotation.forward(centred), rtol=0, atol=1e-5)
    exact = -np.square(centred.astype(np.float64)).sum(1) if metric == "l2" else q.astype(np.float64) @ mean
    np.testing.assert_array_max_ulp(constant, exact.astype(np.float32), maxulp=1)
    assert constant[2] == (np.float32(-np.square(mean.astype(np.float64)).sum()) if metric == "l2" else 0)
    for row, value in ((4, np.inf), (0, np.nan)):
        bad = q.copy()
        bad[row, 9] = value
        bad[5, 1] = np.nan
        assert _core.prepare_queries(bad, mean, metric, None, out, constant, 1) == row


def test_mean_is_fixed_by_the_first_batch_survives_save_load_and_is_reused(tmp_path):
    x, q = _off_centre(1200, 32), _off_centre(10, 32, seed=1)
    index = FlatIndex(32, 4, metric="l2")
    index.add(x[:600])
    np.testing.assert_allclose(index.mean, x[:600].mean(0), atol=1e-5)
    index.save(tmp_path / "a.tq")
    back = FlatIndex.load(tmp_path / "a.tq")
    np.testing.assert_array_equal(back.mean, index.mean)
    for i in (index, back):  # add after load codes around the same mean: identical to never saving
        i.add(x[600:])
    np.testing.assert_array_equal(back.mean, x[:600].mean(0, dtype=np.float64).astype(np.float32))
    for got, want in zip(back.search(q, 10), index.search(q, 10)):
        np.testing.assert_array_equal(got, want)


def test_small_first_batch_or_center_false_leaves_the_index_uncentred():
    from tqsearch._index import CENTRE_MIN_ROWS

    x = _off_centre(CENTRE_MIN_ROWS + 10, 16)
    small = FlatIndex(16, 4)
    small.add(x[: CENTRE_MIN_ROWS - 1])
    small.add(x[CENTRE_MIN_ROWS - 1 :])
    off = FlatIndex(16, 4, center=False)
    off.add(x)
    assert FlatIndex(16, 4).mean is None
    assert not small.mean.any() and not off.mean.any()
    with pytest.raises(TypeError, match="center"):
        FlatIndex(16, 4, center="yes")


# The expected scores of old files were made when numpy summed each query's constant (<q, mu>, -||q - mu||^2) in
# float32; it is now rounded once from a double sum (csrc/queries.h), which moves a score by up to 8 ulp where l2's
# terms cancel (a score of -35 from a constant near -1000). Ids and decoded vectors stay exact.
OLD_SCORE_ULPS = 8


@pytest.mark.parametrize("name, queries", [("flat_v3_2bit", "q"), ("flat_v3_1bit", "q"), ("flat_v3_adaptive", "qy")])
@pytest.mark.parametrize("simd", tqsearch.available_simd_levels())
@pytest.mark.parametrize("mmap", [True, False])
def test_version_3_files_of_1_and_2_bits_load_in_every_lut_layout(name, queries, simd, mmap, tmp_path):
    """Files made by the version-3 code (1- and 2-bit blocks in lut layout 1; a 2-bit tier in the adaptive one) decode
    exactly as they did there and search alike with every kernel set, whichever layout it reads, and save again (the
    expected search results are the scalar scan's since its tables went from 8 to 7 bits; scores to the query
    constant's rounding, see OLD_SCORE_ULPS)."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    want = np.load(data / "index_v3_expected.npz")
    index = FlatIndex.load(data / f"{name}.tqs", mmap=mmap, simd=simd)
    index.save(tmp_path / "again.tqs")
    for loaded in (index, FlatIndex.load(tmp_path / "again.tqs", simd=simd)):
        scores, ids = loaded.search(want[queries], 10)
        np.testing.assert_array_equal(ids, want[f"{name}_ids"])
        np.testing.assert_array_max_ulp(scores, want[f"{name}_scores"], maxulp=OLD_SCORE_ULPS)
        np.testing.assert_array_equal(loaded.reconstruct(loaded.ids[:7]), want[f"{name}_recon"])
    assert (index.tiers is not None) == (name == "flat_v3_adaptive")


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("saved_with", tqsearch.available_simd_levels())
def test_files_move_between_kernel_sets_of_either_lut_layout(bits, saved_with, tmp_path):
    """A file saved by one kernel set (lut layout 1 on scalar/avx2, 2 on avx512) loads on every other one, mapped or
    read, and returns the same scores; edits after loading keep working."""
    x, q = _off_centre(700, 40), _off_centre(9, 40)
    index = FlatIndex(40, bits, metric="l2", simd=saved_with)
    index.add(x)
    index.remove([5, 11])
    index.save(tmp_path / "a.tqs")
    want = index.search(q, 10)
    for level in tqsearch.available_simd_levels():
        for mmap in (True, False):
            loaded = FlatIndex.load(tmp_path / "a.tqs", mmap=mmap, simd=level)
            for got, expected in zip(loaded.search(q, 10), want):
                np.testing.assert_array_equal(got, expected)
            far = x[:3] + np.array([[50.0], [-50.0], [100.0]], dtype=np.float32)  # new nearest neighbours
            loaded.add(far)
            assert loaded.search(far, 1)[1][:, 0].tolist() == [700, 701, 702]


def test_a_file_rewritten_into_the_other_lut_layout_counts_its_codes(tmp_path):
    """A memory-mapped load reads the file's pages (0 bytes held), unless its 1-2 bit codes had to be rewritten
    for the loading kernel set: then they are the index's memory and memory_usage says so."""
    levels = tqsearch.available_simd_levels()
    index = FlatIndex(40, 2, simd=levels[0])
    index.add(_off_centre(300, 40))
    index.save(tmp_path / "a.tqs")
    layouts = {level: FlatIndex(8, 2, simd=level)._store.lut_layout for level in levels}
    for level in levels:
        codes = FlatIndex.load(tmp_path / "a.tqs", simd=level).memory_usage()["codes"]
        assert codes == 0 if layouts[level] == layouts[levels[0]] else codes >= 300 * 10  # 10 code bytes a vector


def test_an_unknown_lut_layout_is_a_format_error(tmp_path):
    index = FlatIndex(16, 2)
    index.add(_off_centre(40, 16))
    meta, arrays = index._state()
    with pytest.raises(FileFormatError, match="lut layout"):
        FlatIndex._from_state({**meta, "lut_layout": 3}, arrays, "test")


@pytest.mark.parametrize("name", ["flat_v1_l2", "hnsw_v1_ip"])
def test_version_1_index_files_load_and_search_identically(name):
    from pathlib import Path

    data = Path(__file__).parent / "data"
    want = np.load(data / "index_v1_expected.npz")  # made by the version-1 code, before centring
    index = tqsearch.load(data / f"{name}.tqs")
    scores, ids = index.search(want["queries"], 10)
    np.testing.assert_array_equal(ids, want[f"{name}_ids"])
    np.testing.assert_array_max_ulp(scores, want[f"{name}_scores"], maxulp=OLD_SCORE_ULPS)
    assert not index.mean.any()  # uncentred codes: a zero centre
    index.add(want["vectors"][:5] + 1.0)  # and it takes more vectors the old way
    assert len(index) == 305 and not index.mean.any()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "flat adaptive"])
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_a_batch_with_nan_or_inf_changes_nothing(kind, metric):
    """NaN/Inf (or float64 beyond float32) anywhere in a batch raises naming its first row, whether the first batch
    (which would fix the centre and the tiers) or a later one (reported by the encode), by add or upsert, and the
    index is as before: empty with no centre, or with the same vectors and results."""
    cls = tqsearch.HNSWIndex if kind == "hnsw" else FlatIndex
    index = cls(32, 4, metric=metric, adaptive=kind.endswith("adaptive"))
    x, q = _off_centre(2100, 32), _off_centre(5, 32, seed=1)
    for value, row in ((np.nan, 1500), (np.inf, 7), (-np.inf, 2099), (1e300, 0)):
        bad = x.astype(np.float64)
        bad[row, 3] = value
        with pytest.raises(ValueError, match=f"NaN or Inf \\(first at row {row}\\)"):
            index.add(bad)
        assert len(index) == 0 and index.mean is None
    index.add(x[:2000])
    want = index.search(q, 10)
    for value, row in ((np.nan, 60), (np.inf, 0), (1e300, 99)):
        bad = x[2000:].astype(np.float64)
        bad[row, 5] = value
        with pytest.raises(ValueError, match=f"NaN or Inf \\(first at row {row}\\)"):
            index.add(bad)
        with pytest.raises(ValueError, match=f"NaN or Inf \\(first at row {row}\\)"):
            index.upsert(bad, ids=np.arange(100))  # ids of stored vectors: none may be replaced
        assert len(index) == 2000
        for got, expected in zip(index.search(q, 10), want):
            np.testing.assert_array_equal(got, expected)
    for value, row in ((np.nan, 3), (np.inf, 0), (1e300, 4)):  # queries: named by search, the index untouched
        bad = q.astype(np.float64)
        bad[row, 7] = value
        with pytest.raises(ValueError, match=f"queries contains NaN or Inf \\(first at row {row}\\)"):
            index.search(bad, 10)
