"""Native exact re-ranking (csrc/exact.h) and filter bitsets (scorer.h) against numpy references."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tqsearch
from tqsearch import _core
from tqsearch._index import exact_scores, normalized, top_k

METRICS = ("ip", "cosine", "l2")


def numpy_scores(q: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """The numpy arithmetic the native scores follow (normalise, then the inner product; -squared L2)."""
    if metric == "l2":
        return -np.sum(np.square(rows - q), axis=1)
    if metric == "cosine":
        return np.clip(normalized(rows) @ normalized(q[None])[0], -1, 1)
    return rows @ q


def write_rows(path: os.PathLike, rows: np.ndarray) -> int:
    path.write_bytes(rows.tobytes())
    return os.open(path, os.O_RDONLY)


@pytest.mark.parametrize("dim", [1, 3, 97, 384])
@pytest.mark.parametrize("metric", METRICS)
def test_scores_match_numpy_within_float_rounding(dim: int, metric: str) -> None:
    rng = np.random.default_rng(dim)
    q, rows = rng.standard_normal(dim).astype(np.float32), rng.standard_normal((50, dim)).astype(np.float32)
    got = exact_scores(q, rows, metric)
    want = numpy_scores(q, rows, metric)
    assert got.dtype == np.float32 and got.shape == (50,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_cosine_of_a_zero_vector_is_zero_and_scores_are_clamped() -> None:
    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    rows = np.array([[0, 0, 0], [3, 0, 0], [-2, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(exact_scores(q, rows, "cosine"), [0.0, 1.0, -1.0])


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("fmt", ["float32", "float16"])
def test_top_from_file_ranks_as_the_numpy_path(tmp_path, metric: str, fmt: str) -> None:
    rng = np.random.default_rng(7)
    n, dim, nq, c, k = 300, 37, 9, 25, 10
    stored = rng.standard_normal((n, dim)).astype(fmt)
    vectors = stored.astype(np.float32)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    cands = np.stack([rng.choice(n, c, replace=False) for _ in range(nq)]).astype(np.int64)
    cands[0, 20:] = -1  # padding
    cands[1, :] = cands[1, 0]  # one row many times
    fd = write_rows(tmp_path / "v.dat", stored)
    try:
        scores, ids = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
        _core.exact_top_file(fd, fmt, metric, q, cands, scores, ids)
    finally:
        os.close(fd)
    exact = np.stack([numpy_scores(q[i], vectors[np.maximum(cands[i], 0)], metric) for i in range(nq)])
    want_scores, want_ids = top_k(np.where(cands >= 0, exact, -np.inf).astype(np.float32), cands, k)
    np.testing.assert_array_equal(ids[2:], want_ids[2:])  # distinct random scores: the same order
    np.testing.assert_array_equal(ids[0], want_ids[0])
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-4)
    assert (ids[1] == cands[1, 0]).all()  # a repeated candidate is scored once per occurrence
    for i in range(nq):  # each score is the exact_scores of its row: one arithmetic for collections and shards
        live = ids[i] >= 0
        np.testing.assert_array_equal(scores[i][live], exact_scores(q[i], vectors[ids[i][live]], metric))


def test_top_from_file_pads_ties_to_the_smaller_row_and_reports_short_files(tmp_path) -> None:
    rows = np.array([[1, 0], [1, 0], [0, 1], [2, 0]], dtype=np.float32)
    fd = write_rows(tmp_path / "v.dat", rows)
    try:
        q = np.array([[1, 0]], dtype=np.float32)
        scores, ids = np.empty((1, 4), np.float32), np.empty((1, 4), np.int64)
        _core.exact_top_file(fd, "float32", "ip", q, np.array([[1, 2, -1, 0]], dtype=np.int64), scores, ids)
        np.testing.assert_array_equal(ids, [[0, 1, 2, -1]])
        np.testing.assert_array_equal(scores, [[1, 1, 0, -np.inf]])
        with pytest.raises(ValueError, match="could not read row 9"):
            _core.exact_top_file(fd, "float32", "ip", q, np.array([[0, 9, -1, -1]], dtype=np.int64), scores, ids)
        with pytest.raises(ValueError, match="metric must be"):
            _core.exact_top_file(fd, "float32", "dot", q, np.zeros((1, 4), dtype=np.int64), scores, ids)
    finally:
        os.close(fd)


def test_every_finite_half_converts_exactly(tmp_path) -> None:
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)]
    fd = write_rows(tmp_path / "h.dat", finite.reshape(-1, 1))
    try:  # dim 1, query 1.0: each score is the converted value itself
        n = len(finite)
        scores, ids = np.empty((n, 1), np.float32), np.empty((n, 1), np.int64)
        _core.exact_top_file(fd, "float16", "ip", np.ones((n, 1), np.float32),
                             np.arange(n, dtype=np.int64)[:, None], scores, ids)
    finally:
        os.close(fd)
    np.testing.assert_array_equal(scores[:, 0], finite.astype(np.float32))  # exact values (the sum makes -0 +0)


def test_scores_are_the_same_bits_on_every_kernel_set() -> None:
    code = ("import numpy as np, tqsearch; from tqsearch._index import exact_scores; r = np.random.default_rng(3);"
            "q, x = r.standard_normal(384).astype(np.float32), r.standard_normal((20, 384)).astype(np.float32);"
            "print(tqsearch.simd_level(), *[exact_scores(q, x, m).tobytes().hex() for m in ('ip', 'cosine', 'l2')])")
    outputs = {}
    for level in tqsearch.available_simd_levels():
        env = {**os.environ, "TQSEARCH_SIMD": level}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        name, *hexes = out.split()
        assert name == level
        outputs[level] = hexes
    assert "scalar" in outputs and all(v == outputs["scalar"] for v in outputs.values())


def test_bitset_from_mask_maps_ids_to_slots(simd) -> None:
    rng = np.random.default_rng(1)
    ids = rng.permutation(200).astype(np.int64)
    ids[::7] = -1  # free slots
    ids[3] = 500  # an id past the mask
    mask = rng.random(300) < 0.3
    words = np.zeros(5, dtype=np.uint64)
    count = _core.bitset_from_mask(ids, mask.view(np.uint8), words, simd)
    want = np.zeros(320, dtype=bool)
    want[:200] = (ids >= 0) & (ids < 300) & mask[np.clip(ids, 0, 299)]
    np.testing.assert_array_equal(np.unpackbits(words.view(np.uint8), bitorder="little").astype(bool), want)
    assert count == int(want.sum())


def test_bitset_from_mask_reads_runs_of_consecutive_ids_as_they_lie(simd) -> None:
    """Words of 64 slots holding consecutive ids read their mask bytes directly (any non-zero byte allows); runs cut
    by a free slot, a moved id, the mask's end or the last partial word are looked up id by id: every kernel set must
    agree with the definition."""
    rng = np.random.default_rng(2)
    n = 64 * 9 + 17
    ids = np.arange(1000, 1000 + n, dtype=np.int64)  # consecutive from an offset
    ids[64 * 2 + 5] = -1  # a free slot
    ids[64 * 3 + 63], ids[64 * 4] = ids[64 * 4], ids[64 * 3 + 63]  # a swap across two words
    mask = rng.choice(np.array([0, 1, 2, 127, 128, 255], dtype=np.uint8), size=1000 + 64 * 8 + 30)
    ids[64 * 5 : 64 * 6] = np.arange(len(mask) - 40, len(mask) + 24)  # a run that passes the mask's end
    words = np.zeros((n + 63) // 64, dtype=np.uint64)
    count = _core.bitset_from_mask(ids, mask, words, simd)
    inside = (ids >= 0) & (ids < len(mask))
    want = np.zeros(len(words) * 64, dtype=bool)
    want[:n] = inside & (mask[np.where(inside, ids, 0)] != 0)
    np.testing.assert_array_equal(np.unpackbits(words.view(np.uint8), bitorder="little").astype(bool), want)
    assert count == int(want.sum())

