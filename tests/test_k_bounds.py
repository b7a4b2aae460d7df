"""Bounded k on every search entry point, and min(k, allowed points) results from graphs.

A k larger than the index holds must cost memory in proportion to what is stored, never to k: the
checks run in a child process whose address space is capped a little above what it already uses.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import unit_rows

from tqsearch import FlatIndex, HNSWIndex
from tqsearch.collection import open_collection

HUGE_K = 10**12

BOUNDED = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import tqsearch
    from tqsearch.collection import open_collection

    n, dim, K = 1000, 32, 10**12
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    allowed = np.arange(0, n, 7)
    indexes = [tqsearch.FlatIndex(dim), tqsearch.FlatIndex(dim, rerank="fp16"), tqsearch.HNSWIndex(dim, M=8)]
    for index in indexes:
        index.add(x)
    c = open_collection(sys.argv[1], dim=dim, index="hnsw", M=8)
    c.upsert([str(i) for i in range(n)], x)
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    limit = used + (768 << 20)  # far below what K scores would take (8 TB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    for index in indexes:
        scores, ids = index.search(x[:3], K)
        assert scores.shape == ids.shape == (3, n), (index, ids.shape)
        assert all(sorted(row) == list(range(n)) for row in ids.tolist()), index
        scores, ids = index.search(x[:3], K, filter=allowed)
        assert ids.shape == (3, n)
        assert all(sorted(row[: len(allowed)]) == allowed.tolist() for row in ids.tolist()), index
        assert (ids[:, len(allowed):] == -1).all() and np.isneginf(scores[:, len(allowed):]).all()
    for rescore in (0, 4, 10**6):
        hits = c.query(x[:2], K, rescore=rescore)
        assert [sorted(map(int, h["ids"])) for h in hits] == [list(range(n))] * 2, rescore
        hits = c.query(x[:2], K, where={"$not": {"missing": 1}}, rescore=rescore)
        assert len(hits[0]["ids"]) == n
    c.close()
    print("bounded")
""")


def test_huge_k_is_capped_at_what_is_stored(tmp_path):
    """k = 10**12 on Flat (with and without rerank), HNSW and Collection under a bounded address space."""
    run = subprocess.run([sys.executable, "-c", BOUNDED, str(tmp_path / "c")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "bounded", run.stderr[-3000:]


@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_empty_index_gives_zero_columns(cls):
    scores, ids = cls(8).search(np.ones((2, 8), np.float32), 5)
    assert scores.shape == ids.shape == (2, 0)


@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_k_above_the_stored_count_gives_every_point_once(cls):
    x = unit_rows(50, 16, seed=1)
    index = cls(16, bits=4, metric="l2")
    index.add(x)
    index.remove([3, 4])
    scores, ids = index.search(x[:4], 1000)
    assert ids.shape == (4, 48)
    assert all(sorted(row) == sorted(set(range(50)) - {3, 4}) for row in ids.tolist())
    assert (np.diff(scores, axis=1) <= 0).all()


# ---------------------------------------------------------------------- graphs return every allowed point

@pytest.fixture(scope="module", params=[2000, 10_000])
def graph(request):
    n = request.param
    x = unit_rows(n, 384, seed=n)
    index = HNSWIndex(384, bits=4, metric="cosine")
    index.add(x)
    return index, x


@pytest.mark.parametrize("share", [1.0, 0.9, 0.5, 0.25])
@pytest.mark.parametrize("filtered", [False, True])
def test_graph_search_returns_min_k_allowed(graph, share, filtered):
    """k = n, n - 1 and smaller shares: every live (allowed) id exactly once, or the best k of them."""
    index, x = graph
    n = len(index)
    live = index.ids
    allowed = live[live % 3 != 0] if filtered else live
    for k in {int(share * n), int(share * n) - 1}:
        scores, ids = index.search(x[:3], k) if not filtered else index.search(x[:3], k, filter=allowed)
        want = min(k, len(allowed))
        assert ids.shape == (3, k)
        for row in ids:
            kept = row[row >= 0]
            assert len(kept) == want and len(set(kept.tolist())) == want, (k, len(kept))
            assert np.isin(kept, allowed).all()
            assert (row[want:] == -1).all()


def test_graph_with_deletes_returns_every_live_id(graph):
    index, x = graph
    n = len(index)
    gone = np.arange(0, n, 11)
    index.remove(gone)
    try:
        for k in (n, n - len(gone), n - len(gone) - 1):
            _, ids = index.search(x[:2], k)
            want = min(k, n - len(gone))
            for row in ids:
                kept = row[row >= 0]
                assert len(set(kept.tolist())) == len(kept) == want
                assert not np.isin(kept, gone).any()
    finally:
        index.upsert(x[gone], gone)


def test_collection_returns_k_whenever_k_points_match(tmp_path):
    """Collection.query on an HNSW collection: k = n and k = n - 1, with and without a filter."""
    n = 3000
    x = unit_rows(n, 64, seed=5)
    c = open_collection(tmp_path / "c", dim=64, index="hnsw", M=8)
    c.upsert([f"p{i}" for i in range(n)], x, metadatas=[{"even": i % 2 == 0} for i in range(n)])
    for where, matching in ((None, n), ({"even": True}, n // 2)):
        for k in (matching, matching - 1):
            for rescore in (0, 4):
                hits = c.query(x[:2], k, where=where, rescore=rescore)
                for h in hits:
                    assert len(h["ids"]) == len(set(h["ids"])) == min(k, matching), (where, k, rescore)
    c.close()


# ---------------------------------------------------------------------- cosine scores stay cosines

@pytest.mark.parametrize("rerank", [None, "fp16"])
@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_cosine_scores_stay_in_range(cls, rerank):
    x = unit_rows(500, 48, seed=9) * 7
    index = cls(48, bits=2, metric="cosine", rerank=rerank)
    index.add(x)
    scores, ids = index.search(x[:50], 5)
    assert (scores <= 1.0).all() and (scores >= -1.0).all()
    assert (ids[:, 0] == np.arange(50)).mean() > 0.9


def test_collection_cosine_scores_stay_in_range(tmp_path):
    x = unit_rows(200, 48, seed=3) * 3
    c = open_collection(tmp_path / "c", dim=48, index="flat")
    c.upsert([str(i) for i in range(200)], x)
    for rescore in (0, 4):
        hits = c.query(x[:20], 3, rescore=rescore)
        assert all(-1.0 <= s <= 1.0 for h in hits for s in h["scores"])
    c.close()
