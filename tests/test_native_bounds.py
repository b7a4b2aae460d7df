"""Every entry point of tqsearch._core, called directly (bypassing the Python facade), rejects bad shapes,
dtypes, sizes and indices with ValueError or TypeError, and never crashes or writes out of bounds.

The tests run in-process on purpose: a native crash fails the whole run loudly. Before the bindings
checked every argument, several of these cases crashed (FlatStore.search with narrow queries, both
packed_rows with a narrow output, HnswGraph.deleted with a large slot: SIGSEGV or SIGABRT) or silently
misbehaved (FlatStore.append with a wrong row width read past the rows or misread them; a float64 or
strided output buffer was copied, so the results were lost; a float index array was truncated).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tqsearch import _core

DIM, BITS, N = 40, 4, 50
ROW = (DIM * BITS + 7) // 8


def cent(bits: int = BITS) -> np.ndarray:
    return np.linspace(-1, 1, 1 << bits).astype(np.float32)


def rows(n: int, width: int = ROW, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, width), dtype=np.uint8)


def f32(*shape: int) -> np.ndarray:
    return np.ones(shape, dtype=np.float32)


def flat_store(bits: int = BITS) -> _core.FlatStore:
    s = _core.FlatStore(DIM, bits, cent(bits))
    s.append(rows(N, (DIM * bits + 7) // 8), f32(N), np.zeros(N, np.float32))
    return s


def graph() -> _core.HnswGraph:
    g = _core.HnswGraph([DIM], [BITS], [cent()], 8, 20, 1, 1.0)
    x = np.random.default_rng(1).standard_normal((N, DIM)).astype(np.float32)
    g.add(x, rows(N), f32(N), np.zeros(N, np.float32), np.arange(N, dtype=np.int64), 1)
    return g


def flat_search(s, queries=None, k=5, allowed=None, scores=None, slots=None, threads=1):
    queries = f32(3, DIM) if queries is None else queries
    nq = len(queries)
    scores = np.empty((nq, k), np.float32) if scores is None else scores
    slots = np.empty((nq, k), np.int64) if slots is None else slots
    s.search(queries, k, allowed, scores, slots, threads)
    return scores, slots


def flat_search_queries(s, queries=None, mean=None, metric="ip", rotation=None, k=5, ids=None, threads=1):
    queries = f32(3, DIM) if queries is None else queries
    mean = np.zeros(DIM, np.float32) if mean is None else mean
    rotation = _core.Rotation.fht_kac(DIM, 0, 3) if rotation is None else rotation
    ids = np.arange(N, dtype=np.int64) if ids is None else ids
    return s.search_queries(queries, mean, metric, rotation, k, ids, threads)


def graph_search(g, queries=None, k=5, ef=10, allowed=None, candidates=N, scores=None, slots=None, threads=1):
    queries = f32(3, DIM) if queries is None else queries
    nq = len(queries)
    scores = np.empty((nq, k), np.float32) if scores is None else scores
    slots = np.empty((nq, k), np.int64) if slots is None else slots
    g.search(queries, k, ef, allowed, candidates, scores, slots, threads)
    return scores, slots


def read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def words(n_slots: int) -> np.ndarray:
    return np.full((n_slots + 63) // 64, ~np.uint64(0), dtype=np.uint64)


# ------------------------------------------------------------------ FlatStore

FLAT_VALUE_ERRORS = {
    "ctor dim 0": lambda: _core.FlatStore(0, 4, cent()),
    "ctor bits 9": lambda: _core.FlatStore(DIM, 9, cent(4)),
    "ctor centroid count": lambda: _core.FlatStore(DIM, 4, cent(3)),
    "ctor zero centroids": lambda: _core.FlatStore(DIM, 4, np.zeros(16, np.float32)),
    "ctor nan centroid": lambda: _core.FlatStore(DIM, 1, np.array([np.nan, 1], np.float32)),
    "ctor unknown simd": lambda: _core.FlatStore(DIM, 4, cent(), "sse9"),
    "append narrow rows": lambda s: s.append(rows(4, ROW - 1), f32(4), f32(4)),
    "append wide rows": lambda s: s.append(rows(4, ROW + 12), f32(4), f32(4)),
    "append a rows": lambda s: s.append(rows(4), f32(3), f32(4)),
    "append b rows": lambda s: s.append(rows(4), f32(4), f32(5)),
    "search narrow queries": lambda s: flat_search(s, queries=f32(3, 8)),
    "search wide queries": lambda s: flat_search(s, queries=f32(3, DIM + 1)),
    "search k > size": lambda s: flat_search(s, k=N + 1),
    "search scores rows": lambda s: flat_search(s, scores=np.empty((2, 5), np.float32)),
    "search scores cols": lambda s: flat_search(s, scores=np.empty((3, 4), np.float32)),
    "search slots shape": lambda s: flat_search(s, slots=np.empty((3, 6), np.int64)),
    "search short bitset": lambda s: flat_search(s, allowed=np.zeros(0, np.uint64)),
    "search threads -1": lambda s: flat_search(s, threads=-1),
    "search threads huge": lambda s: flat_search(s, threads=10**6),
    "search_queries narrow queries": lambda s: flat_search_queries(s, queries=f32(3, DIM - 1)),
    "search_queries mean length": lambda s: flat_search_queries(s, mean=f32(DIM + 1)),
    "search_queries rotation dim": lambda s: flat_search_queries(s, rotation=_core.Rotation.fht_kac(DIM + 8, 0, 3)),
    "search_queries unknown metric": lambda s: flat_search_queries(s, metric="dot"),
    "search_queries k > size": lambda s: flat_search_queries(s, k=N + 1),
    "search_queries short ids": lambda s: flat_search_queries(s, ids=np.arange(N - 1, dtype=np.int64)),
    "search_queries threads -1": lambda s: flat_search_queries(s, threads=-1),
    "packed_rows narrow out": lambda s: s.packed_rows(np.arange(N, dtype=np.int64), np.empty((N, 1), np.uint8)),
    "packed_rows out rows": lambda s: s.packed_rows(np.arange(3, dtype=np.int64), np.empty((4, ROW), np.uint8)),
    "packed_rows slot -1": lambda s: s.packed_rows(np.array([0, -1]), np.empty((2, ROW), np.uint8)),
    "packed_rows slot == size": lambda s: s.packed_rows(np.array([N]), np.empty((1, ROW), np.uint8)),
    "a_of slot == size": lambda s: s.a_of(np.array([N])),
    "a_of slot -5": lambda s: s.a_of(np.array([-5])),
    "move from size": lambda s: s.move(N, 0),
    "move to size": lambda s: s.move(0, N),
    "truncate grows": lambda s: s.truncate(N + 1),
    "attach code size": lambda s: s.attach(np.zeros(7, np.uint8), f32(1), f32(1), 1),
    "attach a length": lambda s: s.attach(s.codes(), f32(N - 1), f32(N), N),
}


@pytest.mark.parametrize("case", FLAT_VALUE_ERRORS)
def test_flat_store_rejects_bad_arguments(case):
    call = FLAT_VALUE_ERRORS[case]
    if case.startswith("ctor"):
        with pytest.raises(ValueError):
            call()
        return
    s = flat_store()
    before = (s.size, s.codes().tobytes(), s.a().tobytes())
    with pytest.raises(ValueError):
        call(s)
    assert (s.size, s.codes().tobytes(), s.a().tobytes()) == before  # validate, then mutate


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_flat_store_search_accepts_the_exact_bounds(bits):
    s = flat_store(bits)
    scores, slots = flat_search(s, k=N, allowed=words(N))  # k == size, bitset exactly long enough
    assert (slots >= 0).all() and (np.diff(scores, axis=1) <= 0).all()
    empty = flat_search(s, queries=np.empty((0, DIM), np.float32), k=0)
    assert empty[0].shape == (0, 0)
    bad, got_scores, got_ids = flat_search_queries(s, k=N, ids=np.arange(100, 100 + N, dtype=np.int64))
    assert bad == -1 and got_scores.shape == (3, N) and (np.sort(got_ids, axis=1) == np.arange(100, 100 + N)).all()
    assert flat_search_queries(s, queries=np.empty((0, DIM), np.float32))[1].shape == (0, 5)
    nan = f32(3, DIM)
    nan[2, 1] = np.nan
    assert flat_search_queries(s, queries=nan)[0] == 2
    out = np.empty((0, (DIM * bits + 7) // 8), np.uint8)
    s.packed_rows(np.empty(0, np.int64), out)


# ------------------------------------------------------------------ HnswGraph

GRAPH_VALUE_ERRORS = {
    "ctor M 1": lambda: _core.HnswGraph([DIM], [4], [cent()], 1, 20, 1, 1.0),
    "ctor M 257": lambda: _core.HnswGraph([DIM], [4], [cent()], 257, 20, 1, 1.0),
    "ctor ef_construction 0": lambda: _core.HnswGraph([DIM], [4], [cent()], 8, 0, 1, 1.0),
    "ctor decode_div 0": lambda: _core.HnswGraph([DIM], [4], [cent()], 8, 20, 1, 0.0),
    "ctor decode_div nan": lambda: _core.HnswGraph([DIM], [4], [cent()], 8, 20, 1, math.nan),
    "ctor bits 0": lambda: _core.HnswGraph([DIM], [0], [cent(0)], 8, 20, 1, 1.0),
    "ctor zero centroids": lambda: _core.HnswGraph([DIM], [4], [np.zeros(16, np.float32)], 8, 20, 1, 1.0),
    "ctor no tiers": lambda: _core.HnswGraph([], [], [], 8, 20, 1, 1.0),
    "ctor tier lists differ": lambda: _core.HnswGraph([DIM, DIM], [4], [cent()], 8, 20, 1, 1.0),
    "ctor second tier bits 9": lambda: _core.HnswGraph([DIM, DIM], [4, 9], [cent(), cent()], 8, 20, 1, 1.0),
    "add narrow packed": lambda g: g.add(f32(2, DIM), rows(2, ROW - 1), f32(2), f32(2), np.array([N, N + 1]), 1),
    "add narrow rotated": lambda g: g.add(f32(2, DIM - 1), rows(2), f32(2), f32(2), np.array([N, N + 1]), 1),
    "add rotated rows": lambda g: g.add(f32(3, DIM), rows(2), f32(2), f32(2), np.array([N, N + 1]), 1),
    "add a rows": lambda g: g.add(f32(2, DIM), rows(2), f32(1), f32(2), np.array([N, N + 1]), 1),
    "add slots rows": lambda g: g.add(f32(2, DIM), rows(2), f32(2), f32(2), np.array([N]), 1),
    "add slot gap": lambda g: g.add(f32(1, DIM), rows(1), f32(1), f32(1), np.array([N + 5]), 1),
    "add live slot reused": lambda g: g.add(f32(1, DIM), rows(1), f32(1), f32(1), np.array([3]), 1),
    "add negative slot": lambda g: g.add(f32(1, DIM), rows(1), f32(1), f32(1), np.array([-1]), 1),
    "add threads -1": lambda g: g.add(f32(1, DIM), rows(1), f32(1), f32(1), np.array([N]), -1),
    "search narrow queries": lambda g: graph_search(g, queries=f32(2, DIM - 3)),
    "search k > size": lambda g: graph_search(g, k=N + 1, ef=N + 1),
    "search scores shape": lambda g: graph_search(g, scores=np.empty((3, 4), np.float32)),
    "search slots shape": lambda g: graph_search(g, slots=np.empty((2, 5), np.int64)),
    "search short bitset": lambda g: graph_search(g, allowed=np.zeros(0, np.uint64)),
    "search candidates > size": lambda g: graph_search(g, candidates=N + 1),
    "search threads huge": lambda g: graph_search(g, threads=5000),
    "packed_rows narrow out": lambda g: g.packed_rows(np.arange(N, dtype=np.int64), np.empty((N, 2), np.uint8)),
    "packed_rows slot == size": lambda g: g.packed_rows(np.array([N]), np.empty((1, ROW), np.uint8)),
    "a_of slot == size": lambda g: g.a_of(np.array([0, N])),
    "a_of tier 1 of 1": lambda g: g.a_of(np.array([0]), 1),
    "deleted slot huge": lambda g: g.deleted(10**9),
    "remove slot == size": lambda g: g.remove(N),
    "restore sizes": lambda g: g.restore(rows(1, ROW)[0], f32(2), f32(2), np.zeros(2, np.uint8), np.zeros(2, np.uint8),
                                         np.zeros(2 * 17, np.uint32), np.zeros(0, np.uint32), 2, 0, 0),
    "restore link past the end": lambda g: g.restore(
        rows(2).ravel(), f32(2), f32(2), np.zeros(2, np.uint8), np.zeros(2, np.uint8),
        np.array([1, 7] + [0] * 15 + [0] * 17, np.uint32), np.zeros(0, np.uint32), 2, 0, 0),
    "restore entry out of range": lambda g: g.restore(
        rows(2).ravel(), f32(2), f32(2), np.zeros(2, np.uint8), np.zeros(2, np.uint8),
        np.zeros(2 * 17, np.uint32), np.zeros(0, np.uint32), 2, 2, 0),
}


@pytest.mark.parametrize("case", GRAPH_VALUE_ERRORS)
def test_hnsw_graph_rejects_bad_arguments(case):
    call = GRAPH_VALUE_ERRORS[case]
    if case.startswith("ctor"):
        with pytest.raises(ValueError):
            call()
        return
    g = graph()
    before = {k: v.tobytes() for k, v in g.arrays().items()}
    with pytest.raises(ValueError):
        call(g)
    assert g.size == N and {k: v.tobytes() for k, v in g.arrays().items()} == before


def test_hnsw_graph_search_accepts_the_exact_bounds():
    g = graph()
    for ef in (N, 10**12):  # a beam wider than the graph is the graph
        scores, slots = graph_search(g, k=N, ef=ef, allowed=words(N))
        assert sorted(slots[0].tolist()) == list(range(N))
    assert graph_search(g, queries=np.empty((0, DIM), np.float32), k=0)[0].shape == (0, 0)
    assert not g.deleted(N - 1)


# ------------------------------------------------------------------ ChamferScorer, FDE helpers

def chamfer_call(codes=None, a=None, starts=None, counts=None, queries=None, qoff=None, cand=None, scores=None,
                 threads=1, dim=DIM):
    s = _core.ChamferScorer(dim, BITS, cent())
    codes = rows(10) if codes is None else codes
    a = f32(len(codes)) if a is None else a
    starts = np.array([0, 4], np.int64) if starts is None else starts
    counts = np.array([4, 6], np.int64) if counts is None else counts
    queries = f32(5, DIM) if queries is None else queries
    qoff = np.array([0, 2, 5], np.int64) if qoff is None else qoff
    cand = np.array([[0, 1], [1, -1]], np.int64) if cand is None else cand
    scores = np.empty(cand.shape, np.float32) if scores is None else scores
    s.score(codes, a, starts, counts, queries, qoff, cand, scores, threads)
    return scores


CHAMFER_VALUE_ERRORS = {
    "ctor bits 0": lambda: _core.ChamferScorer(DIM, 0, cent(0)),
    "ctor dim 0": lambda: _core.ChamferScorer(0, 4, cent()),
    "ctor centroid count": lambda: _core.ChamferScorer(DIM, 4, cent(5)),
    "narrow codes": lambda: chamfer_call(codes=rows(10, ROW - 1)),
    "a rows": lambda: chamfer_call(a=f32(9)),
    "counts rows": lambda: chamfer_call(counts=np.array([4], np.int64)),
    "narrow queries": lambda: chamfer_call(queries=f32(5, DIM - 1)),
    "qoff length": lambda: chamfer_call(qoff=np.array([0, 5], np.int64)),
    "qoff end": lambda: chamfer_call(qoff=np.array([0, 2, 4], np.int64)),
    "qoff unsorted": lambda: chamfer_call(qoff=np.array([0, 6, 5], np.int64)),
    "scores shape": lambda: chamfer_call(scores=np.empty((2, 3), np.float32)),
    "candidate out of range": lambda: chamfer_call(cand=np.array([[0, 2], [1, -1]], np.int64)),
    "document range past the rows": lambda: chamfer_call(counts=np.array([4, 7], np.int64)),
    "negative document start": lambda: chamfer_call(starts=np.array([-1, 4], np.int64)),
    "threads -1": lambda: chamfer_call(threads=-1),
}


@pytest.mark.parametrize("case", CHAMFER_VALUE_ERRORS)
def test_chamfer_scorer_rejects_bad_arguments(case):
    with pytest.raises(ValueError):
        CHAMFER_VALUE_ERRORS[case]()


def test_chamfer_scorer_accepts_good_arguments():
    scores = chamfer_call()
    assert np.isfinite(scores[0]).all() and scores[1, 1] == -np.inf


def fde_call(proj=None, buckets=None, offsets=None, buckets_per_rep=4, width=3, out=None, threads=1, fill=True):
    proj = f32(5, 3) if proj is None else proj
    buckets = np.zeros((len(proj), 2), np.uint32) if buckets is None else buckets
    offsets = np.array([0, 2, 5], np.int64) if offsets is None else offsets
    dim = buckets.shape[1] * buckets_per_rep * width
    out = np.empty((len(offsets) - 1, dim), np.float32) if out is None else out
    _core.fde_aggregate(proj, buckets, offsets, buckets_per_rep, width, True, fill, False, out, threads)
    return out


FDE_VALUE_ERRORS = {
    "empty offsets": lambda: fde_call(offsets=np.zeros(0, np.int64), out=np.empty((0, 24), np.float32)),
    "offsets start": lambda: fde_call(offsets=np.array([1, 2, 5], np.int64)),
    "offsets end": lambda: fde_call(offsets=np.array([0, 2, 4], np.int64)),
    "offsets decreasing": lambda: fde_call(offsets=np.array([0, 3, 2, 5], np.int64)),
    "empty set while filling": lambda: fde_call(offsets=np.array([0, 0, 5], np.int64)),
    "bucket rows": lambda: fde_call(buckets=np.zeros((4, 2), np.uint32)),
    "bucket index": lambda: fde_call(buckets=np.full((5, 2), 4, np.uint32)),
    "buckets_per_rep 0": lambda: fde_call(buckets_per_rep=0),
    "buckets_per_rep 2^63": lambda: fde_call(buckets_per_rep=2**63, out=np.empty((2, 0), np.float32)),
    "width 0": lambda: fde_call(width=0),
    "projection width": lambda: fde_call(proj=f32(5, 4)),
    "out shape": lambda: fde_call(out=np.empty((2, 23), np.float32)),
    "threads -2": lambda: fde_call(threads=-2),
    "sketch slot length": lambda: _core.count_sketch(f32(2, 4), np.zeros(3, np.uint32), f32(4), f32(2, 3)),
    "sketch sign length": lambda: _core.count_sketch(f32(2, 4), np.zeros(4, np.uint32), f32(5), f32(2, 3)),
    "sketch out rows": lambda: _core.count_sketch(f32(2, 4), np.zeros(4, np.uint32), f32(4), f32(3, 3)),
    "sketch slot value": lambda: _core.count_sketch(f32(2, 4), np.full(4, 3, np.uint32), f32(4), f32(2, 3)),
}


@pytest.mark.parametrize("case", FDE_VALUE_ERRORS)
def test_fde_helpers_reject_bad_arguments(case):
    with pytest.raises(ValueError):
        FDE_VALUE_ERRORS[case]()


def test_fde_helpers_accept_good_arguments():
    assert fde_call().shape == (2, 24)
    out = np.empty((2, 3), np.float32)
    _core.count_sketch(f32(2, 4), np.array([0, 1, 2, 2], np.uint32), f32(4), out)
    np.testing.assert_array_equal(out, [[1, 1, 2], [1, 1, 2]])


# ------------------------------------------------------------------ codec, rotation, scan, unpack

def codec(bits: int = BITS) -> _core.MSECodec:
    return _core.MSECodec(_core.Rotation.fht_kac(DIM, 0, 3), bits, cent(bits))


def encode(x=None, codes=None, norms=None, scales=None, threads=1):
    c = codec()
    x = f32(4, DIM) if x is None else x
    codes = np.empty((len(x), ROW), np.uint8) if codes is None else codes
    norms = np.empty(len(x), np.float32) if norms is None else norms
    scales = np.empty(len(x), np.float32) if scales is None else scales
    return c.encode(x, _core.ScaleMode.none, codes, norms, scales, threads)


def decode(codes=None, norms=None, scales=None, out=None, threads=1):
    codes = rows(4) if codes is None else codes
    norms = f32(len(codes)) if norms is None else norms
    scales = f32(len(codes)) if scales is None else scales
    out = np.empty((len(codes), DIM), np.float32) if out is None else out
    codec().decode(codes, norms, scales, out, threads)


def rotate(x=None, out=None, threads=1, simd=""):
    x = f32(3, DIM) if x is None else x
    out = np.empty((len(x), DIM), np.float32) if out is None else out
    _core.rotate(_core.Rotation.fht_kac(DIM, 0, 3), x, False, out, threads, simd)


def scan(queries=None, codes=None, bits=BITS, centroids=None, factors=None, out=None):
    queries = f32(2, DIM) if queries is None else queries
    codes = rows(6) if codes is None else codes
    centroids = cent(bits) if centroids is None else centroids
    factors = f32(len(codes)) if factors is None else factors
    out = np.empty((len(queries), len(codes)), np.float32) if out is None else out
    _core.scan_ip(queries, codes, bits, centroids, factors, out, 1)


def unpack(codes=None, dim=DIM, bits=BITS, out=None):
    codes = rows(3) if codes is None else codes
    out = np.empty((len(codes), dim), np.uint8) if out is None else out
    _core.unpack(codes, dim, bits, out)


def prepare(q=None, mean=None, metric="l2", rotation=True, out=None, constant=None, threads=1):
    q = f32(3, DIM) if q is None else q
    mean = f32(DIM) if mean is None else mean
    rot = _core.Rotation.fht_kac(DIM, 0, 3) if rotation is True else rotation
    out = np.empty((len(q), DIM), np.float32) if out is None else out
    constant = np.empty(len(q), np.float32) if constant is None else constant
    return _core.prepare_queries(q, mean, metric, rot, out, constant, threads)


def finish(scores=None, slots=None, constant=None, ids=None, found=None):
    scores = f32(2, 5) if scores is None else scores
    slots = np.tile(np.array([0, 1, 2, -1, 4]), (2, 1)) if slots is None else slots
    ids = np.arange(5, dtype=np.int64) if ids is None else ids
    found = np.empty(scores.shape, np.int64) if found is None else found
    _core.finish_hits(scores, slots, constant, ids, False, found)


CODEC_VALUE_ERRORS = {
    "codec bits 9": lambda: _core.MSECodec(_core.Rotation.fht_kac(DIM, 0, 3), 9, cent(4)),
    "codec centroid count": lambda: _core.MSECodec(_core.Rotation.fht_kac(DIM, 0, 3), 4, cent(3)),
    "codec unsorted centroids": lambda: _core.MSECodec(_core.Rotation.fht_kac(DIM, 0, 3), 1,
                                                       np.array([1, -1], np.float32)),
    "encode narrow x": lambda: encode(x=f32(4, DIM - 1)),
    "encode codes shape": lambda: encode(codes=np.empty((4, ROW - 1), np.uint8)),
    "encode norms rows": lambda: encode(norms=np.empty(3, np.float32)),
    "encode scales rows": lambda: encode(scales=np.empty(5, np.float32)),
    "encode threads -1": lambda: encode(threads=-1),
    "decode narrow codes": lambda: decode(codes=rows(4, ROW + 1)),
    "decode norms rows": lambda: decode(norms=f32(3)),
    "decode scales rows": lambda: decode(scales=f32(5)),
    "decode out shape": lambda: decode(out=np.empty((4, DIM + 1), np.float32)),
    "rotate narrow x": lambda: rotate(x=f32(3, DIM - 1)),
    "rotate out shape": lambda: rotate(out=np.empty((2, DIM), np.float32)),
    "rotate threads huge": lambda: rotate(threads=10**6),
    "rotate unknown simd": lambda: rotate(simd="neon9"),
    "rotation dim 0": lambda: _core.Rotation.fht_kac(0, 0, 3),
    "rotation steps 0": lambda: _core.Rotation.fht_kac(DIM, 0, 0),
    "rotation steps 17": lambda: _core.Rotation.fht_kac(DIM, 0, 17),
    "dense rotation not square": lambda: _core.Rotation.dense(f32(3, 4)),
    "dense rotation empty": lambda: _core.Rotation.dense(np.empty((0, 0), np.float32)),
    "scan bits 0": lambda: scan(bits=0, centroids=cent(1)),
    "scan centroid count": lambda: scan(centroids=cent(3)),
    "scan codes width": lambda: scan(codes=rows(6, ROW - 1)),
    "scan factors rows": lambda: scan(factors=f32(5)),
    "scan out shape": lambda: scan(out=np.empty((2, 5), np.float32)),
    "prepare mean length": lambda: prepare(mean=f32(DIM - 1)),
    "prepare rotation dim": lambda: prepare(q=f32(3, DIM + 1), mean=f32(DIM + 1)),
    "prepare out shape": lambda: prepare(out=np.empty((2, DIM), np.float32)),
    "prepare constant rows": lambda: prepare(constant=np.empty(4, np.float32)),
    "prepare unknown metric": lambda: prepare(metric="dot"),
    "prepare threads -1": lambda: prepare(threads=-1),
    "finish slots shape": lambda: finish(slots=np.zeros((2, 4), np.int64)),
    "finish found shape": lambda: finish(found=np.empty((2, 4), np.int64)),
    "finish constant rows": lambda: finish(constant=f32(3)),
    "finish slot beyond ids": lambda: finish(slots=np.tile(np.array([0, 1, 2, 3, 5]), (2, 1))),
    "finish slot below -1": lambda: finish(slots=np.tile(np.array([0, 1, 2, 3, -2]), (2, 1))),
    "unpack bits 9": lambda: unpack(bits=9),
    "unpack codes width": lambda: unpack(codes=rows(3, ROW - 1)),
    "unpack out shape": lambda: unpack(out=np.empty((3, DIM - 1), np.uint8)),
}


@pytest.mark.parametrize("case", CODEC_VALUE_ERRORS)
def test_codec_rotation_scan_and_unpack_reject_bad_arguments(case):
    with pytest.raises(ValueError):
        CODEC_VALUE_ERRORS[case]()


def test_codec_rotation_scan_and_unpack_accept_good_arguments():
    assert encode() == -1
    assert prepare() == -1 and prepare(rotation=None, metric="cosine") == -1
    finish()
    decode()
    rotate()
    scan()
    unpack()


# ------------------------------------------------------------------ dtypes, ranks, layouts: TypeError

TYPE_ERRORS = {
    "float64 queries": lambda s, g: flat_search(s, queries=np.ones((3, DIM))),
    "float64 scores buffer": lambda s, g: flat_search(s, scores=np.empty((3, 5))),
    "int32 slots buffer": lambda s, g: flat_search(s, slots=np.empty((3, 5), np.int32)),
    "fortran-order scores buffer": lambda s, g: flat_search(s, scores=np.empty((3, 5), np.float32, order="F")),
    "strided queries": lambda s, g: flat_search(s, queries=f32(3, 2 * DIM)[:, ::2]),
    "read-only scores buffer": lambda s, g: flat_search(s, scores=read_only(np.empty((3, 5), np.float32))),
    "1-D queries": lambda s, g: s.search(f32(DIM), 5, None, np.empty((1, 5), np.float32),
                                         np.empty((1, 5), np.int64), 1),
    "int32 bitset": lambda s, g: flat_search(s, allowed=np.full(1, -1, np.int32)),
    "list of queries": lambda s, g: s.search([[1.0] * DIM], 5, None, np.empty((1, 5), np.float32),
                                             np.empty((1, 5), np.int64), 1),
    "negative k": lambda s, g: flat_search(s, k=-1, scores=np.empty((3, 0), np.float32),
                                           slots=np.empty((3, 0), np.int64)),
    "uint16 packed rows": lambda s, g: s.append(rows(2).astype(np.uint16), f32(2), f32(2)),
    "float64 a": lambda s, g: s.append(rows(2), np.ones(2), f32(2)),
    "float slots": lambda s, g: s.a_of(np.array([1.7])),
    "int32 slots": lambda s, g: s.packed_rows(np.array([1], np.int32), np.empty((1, ROW), np.uint8)),
    "float64 graph out": lambda s, g: graph_search(g, scores=np.empty((3, 5))),
    "strided graph packed": lambda s, g: g.add(f32(2, DIM), rows(2, 2 * ROW)[:, ::2], f32(2), f32(2),
                                               np.array([N, N + 1]), 1),
    "int32 graph slots": lambda s, g: g.add(f32(1, DIM), rows(1), f32(1), f32(1), np.array([N], np.int32), 1),
    "float64 restore links": lambda s, g: g.restore(
        *[v.astype(np.float64) if k == "level0" else v for k, v in g.arrays().items()], N, g.entry, g.max_level),
    "int32 chamfer candidates": lambda s, g: chamfer_call(cand=np.array([[0, 1]], np.int32),
                                                          qoff=np.array([0, 5], np.int64)),
    "float64 fde out": lambda s, g: fde_call(out=np.empty((2, 24))),
    "int64 buckets": lambda s, g: fde_call(buckets=np.zeros((5, 2), np.int64)),
    "float64 sketch input": lambda s, g: _core.count_sketch(np.ones((2, 4)), np.zeros(4, np.uint32), f32(4),
                                                            f32(2, 3)),
    "float64 encode norms": lambda s, g: encode(norms=np.empty(4)),
    "strided rotate out": lambda s, g: rotate(out=np.empty((3, 2 * DIM), np.float32)[:, ::2]),
    "float64 unpack codes": lambda s, g: unpack(codes=rows(3).astype(np.float64)),
    "float64 centroids": lambda s, g: _core.FlatStore(DIM, 4, cent().astype(np.float64)),
}


@pytest.mark.parametrize("case", TYPE_ERRORS)
def test_wrong_dtype_rank_or_layout_is_a_type_error_never_a_silent_copy(case):
    s, g = flat_store(), graph()
    with pytest.raises(TypeError):
        TYPE_ERRORS[case](s, g)
    assert s.size == N and g.size == N


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_flat_store_reserve_is_bounded_and_keeps_results(bits):
    # reserve() takes a count >= 0 (smaller than the size: a no-op), rejects absurd counts without
    # allocating, and neither it nor appends into the reserved room change what the store holds.
    s, ref = flat_store(bits), flat_store(bits)
    with pytest.raises(TypeError):
        s.reserve(-1)
    with pytest.raises(ValueError):
        s.reserve(2**62)
    s.reserve(0)
    s.reserve(N + 100)
    held = s.memory_bytes
    assert held >= s.code_size + 4 * (N + 100)
    width = (DIM * bits + 7) // 8
    for store in (s, ref):
        store.append(rows(100, width, seed=2), f32(100), np.zeros(100, np.float32))
    assert s.memory_bytes == held and s.size == ref.size == N + 100
    assert np.array_equal(s.codes(), ref.codes()) and np.array_equal(s.a(), ref.a())
    assert np.array_equal(flat_search(s)[0], flat_search(ref)[0])


def test_hnsw_graph_reserve_is_bounded_and_keeps_results():
    g, ref = graph(), graph()
    with pytest.raises(TypeError):
        g.reserve(-1)
    with pytest.raises(ValueError):
        g.reserve(2**62)
    g.reserve(0)
    g.reserve(N + 50)
    assert g.memory_bytes > ref.memory_bytes
    x = np.random.default_rng(3).standard_normal((50, DIM)).astype(np.float32)
    for graph_ in (g, ref):
        graph_.add(x, rows(50, seed=3), f32(50), np.zeros(50, np.float32), np.arange(N, N + 50, dtype=np.int64), 1)
    assert all(np.array_equal(v, ref.arrays()[k]) for k, v in g.arrays().items())
    assert np.array_equal(graph_search(g, candidates=N + 50)[1], graph_search(ref, candidates=N + 50)[1])


def test_a_tiered_graph_takes_one_a_per_row_and_tier():
    g = _core.HnswGraph([DIM, 8], [BITS, 8], [cent(), cent(8)], 8, 20, 1, 1.0)
    width = ROW + 8
    x = f32(N, DIM + 8)
    with pytest.raises(ValueError, match="a \\(one per row and tier\\)"):
        g.add(x, rows(N, width), f32(N), f32(N), np.arange(N, dtype=np.int64), 1)
    a = np.arange(2 * N, dtype=np.float32).reshape(N, 2)  # row i: tier 0's a, then tier 1's
    g.add(x, rows(N, width), a.ravel(), f32(N), np.arange(N, dtype=np.int64), 1)
    np.testing.assert_array_equal(g.a_of(np.arange(N), 1), a[:, 1])
    np.testing.assert_array_equal(g.arrays()["a"], a.ravel())
    with pytest.raises(ValueError, match="inconsistent sizes"):
        g.restore(*(g.arrays()[k] if k != "a" else a[:, 0].copy() for k in
                    ("codes", "a", "b", "levels", "deleted", "level0", "upper")), N, g.entry, g.max_level)
    assert g.size == N


def test_scorers_refuse_dims_whose_integer_sums_could_overflow():
    # 8-bit value tables and queries of |q| <= 127 (scorer.h) keep every int32 sum exact up to 65,536 dims
    with pytest.raises(ValueError, match="dim must be in 1..65536"):
        _core.HnswGraph([65537], [8], [cent(8)], 8, 20, 1, 1.0)
    _core.HnswGraph([65536], [8], [cent(8)], 8, 20, 1, 1.0)
