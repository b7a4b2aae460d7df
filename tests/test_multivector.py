"""FDEEncoder (MUVERA) and MultiVectorIndex: algebra, fill rule, fidelity to Chamfer, persistence, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tqsearch
from tqsearch import FDEEncoder, MultiVectorIndex

DATA = Path(__file__).parent / "data" / "wordnet_tokens.npz"
# MultiVectorIndex's default FDE, the best measured in docs/benchmarks.md (2 buckets, no projection).
TUNED = {"k_sim": 1, "d_proj": None, "r_reps": 3, "normalize_blocks": True}


@pytest.fixture(scope="module")
def slice_() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The bundled real slice (200 WordNet documents, 24 queries) and its exact float Chamfer scores."""
    z = np.load(DATA)

    def sets(name: str) -> list[np.ndarray]:
        x = z[f"{name}_int8"].astype(np.float32) * z[f"{name}_scale"][:, None]
        off = z[f"{name[:5] if name == 'query' else 'doc'}_offsets"]
        return [x[off[i] : off[i + 1]] for i in range(len(off) - 1)]

    docs, queries = sets("doc"), sets("query")
    return docs, queries, chamfer(queries, docs)


def chamfer(queries: list[np.ndarray], docs: list[np.ndarray]) -> np.ndarray:
    return np.array([[float((q @ d.T).max(axis=1).sum()) for d in docs] for q in queries])


def top_ids(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def overlap(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def random_sets(rng: np.random.Generator, n: int, dim: int, most: int = 5) -> list[np.ndarray]:
    return [rng.standard_normal((int(rng.integers(1, most + 1)), dim)).astype(np.float32) for _ in range(n)]


# ---------------------------------------------------------------------------------------- FDE algebra


def blocks_of(enc: FDEEncoder, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every repetition's projected token and bucket for one token x (from the encoder's own matrices)."""
    proj = x if enc._projection is None else x @ enc._projection
    proj = np.tile(proj, enc.r_reps) if enc._projection is None else proj
    signs = (x @ enc._hyperplanes > 0).reshape(enc.r_reps, enc.k_sim)
    return proj.reshape(enc.r_reps, enc.width), signs @ (1 << np.arange(enc.k_sim))


@pytest.mark.parametrize("d_proj", [8, None])
def test_single_token_fde_is_the_projected_token(d_proj):
    enc = FDEEncoder(16, k_sim=3, d_proj=d_proj, r_reps=4, seed=3)
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    proj, bucket = blocks_of(enc, x[0])
    doc = enc.encode_documents([x]).reshape(enc.r_reps, 8, enc.width)
    query = enc.encode_queries([x]).reshape(enc.r_reps, 8, enc.width)
    np.testing.assert_allclose(doc, np.broadcast_to(proj[:, None, :], doc.shape), rtol=1e-6)  # filled everywhere
    expected = np.zeros_like(query)
    expected[np.arange(enc.r_reps), bucket] = proj
    np.testing.assert_allclose(query, expected, rtol=1e-6)


def reference_fde(enc: FDEEncoder, tokens: np.ndarray, document: bool) -> np.ndarray:
    """The paper's definition, one bucket at a time, in plain Python loops."""
    out = []
    for r in range(enc.r_reps):
        rows = [blocks_of(enc, t) for t in tokens]
        proj = [p[r] for p, _ in rows]
        bucket = [int(b[r]) for _, b in rows]
        for b in range(1 << enc.k_sim):
            members = [p for p, bb in zip(proj, bucket) if bb == b]
            if members:
                block = np.sum(members, axis=0) / (len(members) if document else 1)
            elif document and enc.fill_empty:
                distance = [bin(bb ^ b).count("1") for bb in bucket]
                block = proj[distance.index(min(distance))]  # the first nearest token
            else:
                block = np.zeros(enc.width, dtype=np.float32)
            if document and enc.normalize_blocks and np.linalg.norm(block) > 0:
                block = block / np.linalg.norm(block)
            out.append(block)
    fde = np.concatenate(out)
    if enc.final_dim:
        slot, sign = enc._sketch
        fde = np.array([np.sum(sign[slot == j] * fde[slot == j]) for j in range(enc.final_dim)])
    return fde


@pytest.mark.parametrize("options", [
    {"k_sim": 3, "d_proj": 4, "r_reps": 3},
    {"k_sim": 2, "d_proj": None, "r_reps": 2},
    {"k_sim": 4, "d_proj": 6, "r_reps": 2, "final_dim": 40},
    {"k_sim": 3, "d_proj": 5, "r_reps": 2, "normalize_blocks": True},
    {"k_sim": 3, "d_proj": 4, "r_reps": 2, "fill_empty": False},
    {"k_sim": 0, "d_proj": None, "r_reps": 1},
])
def test_fde_matches_slow_reference(options):
    rng = np.random.default_rng(7)
    enc = FDEEncoder(8, seed=11, **options)
    sets = random_sets(rng, 25, 8)
    for document, encode in ((True, enc.encode_documents), (False, enc.encode_queries)):
        got = encode(sets)
        want = np.stack([reference_fde(enc, s, document) for s in sets])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fill_uses_the_hamming_nearest_token():
    enc = FDEEncoder(6, k_sim=4, d_proj=None, r_reps=1, seed=5)
    rng = np.random.default_rng(1)
    for tokens in random_sets(rng, 20, 6, most=3):
        fde = enc.encode_documents([tokens]).reshape(16, 6)
        _, buckets = zip(*(blocks_of(enc, t) for t in tokens))
        for b in range(16):
            distance = [bin(int(bb[0]) ^ b).count("1") for bb in buckets]
            if b in [int(bb[0]) for bb in buckets]:
                assert min(distance) == 0  # a token's own bucket is at distance 0
            else:
                np.testing.assert_allclose(fde[b], tokens[int(np.argmin(distance))], rtol=1e-6)


def test_fde_inner_product_tracks_chamfer(slice_):
    docs, queries, exact = slice_
    enc = FDEEncoder(384, **TUNED)
    est = enc.encode_queries(queries) @ enc.encode_documents(docs).T
    pearson = [np.corrcoef(e, x)[0, 1] for e, x in zip(est, exact)]
    assert np.mean(pearson) >= 0.9
    paper = FDEEncoder(384)  # the paper's (5, 16, 20): noisier on these short documents, still clearly related
    est = paper.encode_queries(queries) @ paper.encode_documents(docs).T
    assert np.mean([np.corrcoef(e, x)[0, 1] for e, x in zip(est, exact)]) >= 0.75


def test_fde_is_unbiased_for_one_token_pairs():
    """<F_q(x), F_d(y)> averages to <x, y> over seeds (a +-1/sqrt(d_proj) projection keeps inner products)."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 32)).astype(np.float32)
    encoders = [FDEEncoder(32, k_sim=2, d_proj=8, r_reps=1, seed=s) for s in range(400)]
    est = [(e.encode_queries([x[None]]) @ e.encode_documents([y[None]]).T).item() for e in encoders]
    assert abs(np.mean(est) - float(x @ y)) < 4 * np.std(est) / np.sqrt(len(est))


# ---------------------------------------------------------------------------------------- the index


def test_chamfer_over_codes_ranks_like_float(slice_):
    docs, queries, exact = slice_
    index = MultiVectorIndex(384, index="flat", token_bits=4)
    index.add(docs)
    got = index.chamfer(queries, np.arange(len(docs)))
    assert overlap(top_ids(got, 10), top_ids(exact, 10)) >= 0.95
    assert np.abs(got - exact).max() < 0.05 * np.abs(exact).max()


@pytest.mark.parametrize("bits", [3, 8])
def test_chamfer_matches_decoded_tokens(slice_, bits):
    """The C++ scorer equals Chamfer over the decoded codes, up to the int8 rounding of the query (8-bit tokens
    through the two value planes of scorer.h)."""
    docs, queries, _ = slice_
    index = MultiVectorIndex(384, index="flat", token_bits=bits)
    index.add(docs[:20])
    codec = index._tokens
    decoded = [codec.decode(codec.encode(d)) for d in docs[:20]]
    np.testing.assert_allclose(index.chamfer(queries, np.arange(20)), chamfer(queries, decoded), rtol=0.01, atol=0.02)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_search_recall_against_exact_chamfer(slice_, kind):
    docs, queries, exact = slice_
    index = MultiVectorIndex(384, fde=FDEEncoder(384, **TUNED), index=kind, threads=1)  # one thread: one graph
    index.add(docs)
    scores, ids = index.search(queries, 10, candidates=50)
    assert overlap(ids, top_ids(exact, 10)) >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 0)
    np.testing.assert_allclose(scores, np.take_along_axis(index.chamfer(queries, np.arange(len(docs))), ids, 1))


def test_default_fde_beats_the_papers_on_real_tokens(slice_):
    """MultiVectorIndex(384) as it comes reaches more recall@10 vs exact Chamfer than with the paper's FDE."""
    docs, queries, exact = slice_
    recall = {}
    for name, fde in (("default", None), ("paper", FDEEncoder(384))):
        index = MultiVectorIndex(384, fde=fde, threads=1)  # one thread: one graph
        index.add(docs)
        recall[name] = overlap(index.search(queries, 10, candidates=20)[1], top_ids(exact, 10))
    assert recall["default"] >= 0.94  # measured 0.954 (seeds 0-2: 0.950-0.958)
    assert recall["paper"] <= recall["default"] - 0.05  # measured 0.867 (0.863-0.917)


@pytest.mark.parametrize("bits", [4, 8])
def test_every_kernel_set_scores_identically(slice_, simd, bits):
    docs, queries, _ = slice_
    ref = MultiVectorIndex(384, index="flat", simd="scalar", token_bits=bits)
    other = MultiVectorIndex(384, index="flat", simd=simd, token_bits=bits)
    for index in (ref, other):
        index.add(docs[:30])
    np.testing.assert_array_equal(ref.chamfer(queries, np.arange(30)), other.chamfer(queries, np.arange(30)))


def test_ids_remove_upsert_filter_and_padding(slice_):
    docs, queries, _ = slice_
    index = MultiVectorIndex(384, fde=FDEEncoder(384, **TUNED), index="hnsw")
    ids = index.add(docs[:40], ids=np.arange(100, 140))
    assert len(index) == 40 and 105 in index and 5 not in index
    index.remove([100, 101, 102])
    _, found = index.search(queries, 40)
    assert not set(found.ravel().tolist()) & {100, 101, 102}
    assert (found[:, 37:] == -1).all() and (found[:, :37] >= 0).all()
    index.upsert([docs[50]], ids=[103])  # replaces document 103 by another document's tokens
    np.testing.assert_allclose(index.chamfer([docs[50]], [103]), index.chamfer([docs[50]], [103]))
    assert index.chamfer([docs[50]], [103])[0, 0] > index.chamfer([docs[50]], [104])[0, 0]
    _, found = index.search(queries, 5, filter=np.arange(120, 130))
    assert set(found.ravel().tolist()) <= set(range(120, 130))
    with pytest.raises(KeyError, match="unknown id 7"):
        index.remove([7])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(docs[:1], ids=[110])
    assert len(index) == 37 and set(index.ids.tolist()) == set(ids.tolist()) - {100, 101, 102}


def test_remove_many_compacts_tokens(slice_):
    docs, queries, _ = slice_
    index = MultiVectorIndex(384, index="flat")
    index.add(docs)
    before = index.chamfer(queries, np.arange(150, 200))
    index.remove(np.arange(150))
    assert index._rows == sum(len(d) for d in docs[150:])  # dead rows reclaimed
    np.testing.assert_array_equal(index.chamfer(queries, np.arange(150, 200)), before)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_save_load_round_trip(tmp_path, slice_, kind):
    docs, queries, _ = slice_
    index = MultiVectorIndex(384, bits=3, fde=FDEEncoder(384, k_sim=2, d_proj=32, r_reps=5, final_dim=200),
                             index=kind, token_bits=2, seed=9)
    index.add(docs[:60])
    index.remove([3, 4])
    path = tmp_path / "mv.tq"
    index.save(path)
    loaded = tqsearch.load(path)
    assert isinstance(loaded, MultiVectorIndex) and repr(loaded) == repr(index)
    for a, b in zip(index.search(queries, 10), loaded.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    loaded.add(docs[60:62])  # still a working index
    assert len(loaded) == 60


def test_file_with_the_paper_fde_reloads_identically(tmp_path, slice_):
    """A file saved with the old default FDE (the paper's) keeps it: the FDE settings and matrices are in the file."""
    docs, queries, _ = slice_
    index = MultiVectorIndex(384, fde=FDEEncoder(384, k_sim=5, d_proj=16, r_reps=20), threads=1)
    index.add(docs[:60])
    index.save(tmp_path / "paper.tq")
    loaded = tqsearch.load(tmp_path / "paper.tq")
    assert (loaded.fde.k_sim, loaded.fde.d_proj, loaded.fde.r_reps, loaded.fde.output_dim) == (5, 16, 20, 10240)
    assert not loaded.fde.normalize_blocks and repr(loaded) == repr(index)
    np.testing.assert_array_equal(loaded.fde._projection, index.fde._projection)
    for a, b in zip(index.search(queries, 10, candidates=30), loaded.search(queries, 10, candidates=30)):
        np.testing.assert_array_equal(a, b)


def test_corrupt_and_foreign_files(tmp_path, slice_):
    docs, _, _ = slice_
    index = MultiVectorIndex(384, index="flat")
    index.add(docs[:5])
    path = tmp_path / "mv.tq"
    index.save(path)
    raw = bytearray(path.read_bytes())
    raw[raw.find(index._codes[0].tobytes()) + 7] ^= 0xFF  # inside the token codes
    (tmp_path / "bad.tq").write_bytes(bytes(raw))
    with pytest.raises(tqsearch.FileFormatError, match="checksum"):
        MultiVectorIndex.load(tmp_path / "bad.tq")
    flat = tqsearch.FlatIndex(8)
    flat.save(tmp_path / "flat.tq")
    with pytest.raises(tqsearch.FileFormatError, match="not a TQMULTI1 file"):
        MultiVectorIndex.load(tmp_path / "flat.tq")


# Searches with k and candidates far beyond the index under an address-space limit of what the process holds
# plus 1.5 GB: a result sized by the raw k (10**12) would fail with MemoryError.
BOUNDED_SEARCH = """
import json, resource
import numpy as np
from tqsearch import MultiVectorIndex
rng = np.random.default_rng(0)
docs = [rng.standard_normal((int(rng.integers(1, 6)), 8)).astype(np.float32) for _ in range(30)]
queries = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(4)]
indexes = {kind: MultiVectorIndex(8, index=kind, threads=1) for kind in ("flat", "hnsw")}
for index in indexes.values():
    index.add(docs)
    index.remove([0, 1])
held = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (held + (1536 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
out = {}
for kind, index in indexes.items():
    scores, ids = index.search(queries, 10**12, threads=1)
    _, top5 = index.search(queries, 5, candidates=10**12, threads=1)
    few_scores, few = index.search(queries, 10**12, filter=[2, 3, 4], threads=1)
    out[kind] = {"ids": ids.tolist(), "finite": bool(np.isfinite(scores).all()), "top5": top5.tolist(),
                 "few": few.tolist(), "few_inf": np.isneginf(few_scores).sum(axis=1).tolist()}
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_huge_k_and_candidates_are_capped_at_the_stored_documents():
    run = subprocess.run([sys.executable, "-c", BOUNDED_SEARCH], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for kind, got in json.loads(run.stdout).items():
        ids = np.array(got["ids"])
        assert ids.shape == (4, 28) and got["finite"], kind  # (nq, len(index)): every live document, scored
        assert all(sorted(row) == list(range(2, 30)) for row in ids.tolist()), kind  # each live id once
        np.testing.assert_array_equal(got["top5"], ids[:, :5])  # candidates capped: all 28 re-ranked
        few = np.array(got["few"])
        assert few.shape == (4, 28) and got["few_inf"] == [25] * 4, kind
        assert all(sorted(row[:3]) == [2, 3, 4] for row in few.tolist()) and (few[:, 3:] == -1).all(), kind


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_k_is_capped_at_the_stored_documents(kind):
    """An empty index answers (nq, 0); a k above the stored count gives every document once."""
    rng = np.random.default_rng(3)
    queries = random_sets(rng, 3, 8)
    index = MultiVectorIndex(8, index=kind)
    scores, ids = index.search(queries, 10)
    assert scores.shape == ids.shape == (3, 0) and (scores.dtype, ids.dtype) == (np.float32, np.int64)
    index.add(random_sets(rng, 2, 8), ids=[7, 9])
    assert [sorted(row) for row in index.search(queries, 10)[1].tolist()] == [[7, 9]] * 3
    index.remove([7, 9])
    assert index.search(queries, 10, candidates=10**12)[1].shape == (3, 0)


def test_fde_index_never_sees_the_raw_k(monkeypatch):
    """search caps k and candidates itself: the FDE index's k and HNSW beam are sized by the stored documents."""
    rng = np.random.default_rng(4)
    index = MultiVectorIndex(8, index="hnsw", ef_search=16)
    index.add(random_sets(rng, 40, 8))
    calls, search = [], index._index.search
    monkeypatch.setattr(index._index, "search",
                        lambda q, k, **kw: calls.append((k, kw["params"].ef)) or search(q, k, **kw))
    index.search(random_sets(rng, 2, 8), 10**12, candidates=10**12)
    index.search(random_sets(rng, 2, 8), 5, candidates=30, ef=50)
    assert calls == [(40, None), (30, 50)]  # ef None: the graph's beam is max(ef_search, k) = k


def test_bad_input_is_rejected_before_anything_changes():
    index = MultiVectorIndex(8, fde=FDEEncoder(8, k_sim=2, d_proj=4, r_reps=2), index="flat")
    rng = np.random.default_rng(0)
    index.add(random_sets(rng, 3, 8))
    nan = np.ones((2, 8), dtype=np.float32)
    nan[1, 3] = np.nan
    cases = [
        ([np.ones((2, 8)), np.ones((2, 7))], ValueError, r"documents\[1\] must have 8 columns"),
        ([np.ones((2, 8)), np.ones((0, 8))], ValueError, r"documents\[1\] has no tokens"),
        ([np.ones((2, 8)), nan], ValueError, r"documents\[1\] contains NaN or Inf \(token 1\)"),
        (np.ones((2, 8)), TypeError, "wrap a single item in a list"),
        ([np.ones((2, 8), dtype=np.int64)], TypeError, "must be a float array"),
        (5, TypeError, "must be a sequence"),
    ]
    for docs, error, message in cases:
        with pytest.raises(error, match=message):
            index.add(docs)
    assert len(index) == 3 and index._rows == sum(index._counts[: index._docs])
    with pytest.raises(ValueError, match=r"queries\[0\] has no tokens"):
        index.search([np.ones((0, 8))], 1)
    with pytest.raises(ValueError, match="fde must be an FDEEncoder for dim 8"):
        MultiVectorIndex(8, fde=FDEEncoder(16))
    with pytest.raises(ValueError, match="d_proj must be in 1..8"):
        FDEEncoder(8, d_proj=9)
    with pytest.raises(ValueError, match="too large"):
        FDEEncoder(384, k_sim=20, d_proj=64)
    with pytest.raises(ValueError, match="index must be one of"):
        MultiVectorIndex(8, index="ivf")
