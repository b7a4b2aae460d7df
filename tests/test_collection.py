"""Collection: filters against a brute-force evaluator, filtered recall, persistence, compaction, crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import unit_rows

from tqsearch import collection as coll
from tqsearch.collection import open_collection

MISSING = object()


# ---------------------------------------------------------------------- brute-force filter reference

def _value(md: dict, field: str) -> object:
    v = md.get(field, MISSING)
    return v if isinstance(v, (str, int, float, bool)) else MISSING


def _kind(v: object) -> str:
    return "b" if isinstance(v, bool) else "s" if isinstance(v, str) else "n"


def _eq(v: object, x: object) -> bool:
    return v is not MISSING and _kind(v) == _kind(x) and v == x


def _matches(md: dict, where: dict) -> bool:
    """The documented semantics, evaluated one point at a time."""
    return all(_clause(md, key, cond) for key, cond in where.items())


def _clause(md: dict, key: str, cond: object) -> bool:
    if key == "$and":
        return all(_matches(md, c) for c in cond)
    if key == "$or":
        return any(_matches(md, c) for c in cond)
    if key == "$not":
        return not _matches(md, cond)
    ops = cond if isinstance(cond, dict) else {"$eq": cond}
    v = _value(md, key)
    number = v is not MISSING and _kind(v) == "n"
    tests = {"$eq": lambda x: _eq(v, x), "$ne": lambda x: not _eq(v, x),
             "$in": lambda x: any(_eq(v, y) for y in x), "$nin": lambda x: not any(_eq(v, y) for y in x),
             "$gt": lambda x: number and v > x, "$gte": lambda x: number and v >= x,
             "$lt": lambda x: number and v < x, "$lte": lambda x: number and v <= x}
    return all(tests[op](x) for op, x in ops.items())


def _random_payload(rng: np.random.Generator) -> dict:
    md: dict = {}
    if rng.random() < 0.9:
        md["a"] = int(rng.integers(0, 10))
    if rng.random() < 0.8:
        md["b"] = float(np.round(rng.uniform(-5, 5), 1))
    if rng.random() < 0.8:
        md["c"] = str(rng.choice(["x", "y", "z"]))
    md["d"] = [True, False, 1, 0, None, "1"][int(rng.integers(0, 6))]  # bool vs int vs None vs str
    if rng.random() < 0.2:
        md["e"] = [1, 2]  # not filterable: never equal, only in complements
    return md


def _random_operand(rng: np.random.Generator, field: str) -> object:
    pools = {"a": list(range(-1, 11)) + [2.0, 3.5], "b": [-5.0, -1.2, 0, 0.5, 3, 4.9, 5.0],
             "c": ["x", "y", "w"], "d": [True, False, 1, 0, "1"], "e": [1, 2], "f": [1, "x"]}
    pool = pools[field]
    return pool[int(rng.integers(0, len(pool)))]


def _random_where(rng: np.random.Generator, depth: int = 0) -> dict:
    roll = rng.random()
    if depth < 2 and roll < 0.3:
        op = ["$and", "$or"][int(rng.integers(0, 2))]
        return {op: [_random_where(rng, depth + 1) for _ in range(int(rng.integers(1, 4)))]}
    if depth < 2 and roll < 0.4:
        return {"$not": _random_where(rng, depth + 1)}
    field = str(rng.choice(["a", "b", "c", "d", "e", "f"]))
    op = str(rng.choice(["=", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte"]))
    if op == "=":
        return {field: _random_operand(rng, field)}
    if op in ("$in", "$nin"):
        return {field: {op: [_random_operand(rng, field) for _ in range(int(rng.integers(0, 4)))]}}
    if op.startswith(("$gt", "$lt")):
        def bound() -> float | int:
            return float(rng.uniform(-6, 11)) if rng.random() < 0.5 else int(rng.integers(-1, 11))
        ops = {op: bound()}
        if rng.random() < 0.5:  # more operators on the field: its bounds are taken as one interval
            ops[str(rng.choice(["$gt", "$gte", "$lt", "$lte", "$ne"]))] = bound()
        return {field: ops}
    return {field: {op: _random_operand(rng, field)}}


def test_filters_match_brute_force(tmp_path):
    rng = np.random.default_rng(7)
    n = 400
    payloads = [_random_payload(rng) for _ in range(n)]
    ids = [f"p{i}" for i in range(n)]
    with open_collection(tmp_path / "c", dim=8, index="flat") as c:
        c.upsert(ids, unit_rows(n, 8, 1), payloads)
        c.delete(ids[::17])  # deleted points must never match, complements included
        c.upsert(ids[1::29], unit_rows(len(ids[1::29]), 8, 2), [_random_payload(rng) for _ in ids[1::29]])
        live = c.get(include=["metadatas"])
        nonempty = 0
        for _ in range(600):
            where = _random_where(rng)
            want = {i for i, md in zip(live["ids"], live["metadatas"]) if _matches(md, where)}
            got = c.get(where=where, include=())["ids"]
            assert len(got) == len(set(got))
            assert set(got) == want, where
            nonempty += 0 < len(want) < len(live["ids"])
        assert nonempty > 200  # the predicates are informative, not all-or-nothing


@pytest.mark.parametrize("where, name", [({"$regex": "a"}, "$regex"), ({"a": {"$like": 1}}, "$like"),
                                          ({"$and": [{"a": 1}, {"b": {"$foo": 2}}]}, "$foo")])
def test_unknown_operator_rejected(tmp_path, where, name):
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        c.upsert(["x"], np.ones((1, 4)), [{"a": 1}])
        with pytest.raises(ValueError, match=f"\\{name}"):
            c.get(where=where)
        with pytest.raises(ValueError, match=f"\\{name}"):
            c.query(np.ones((1, 4)), 1, where=where)


@pytest.mark.parametrize("where", [{"a": {"$gt": "x"}}, {"a": {"$in": 3}}, {"a": [1, 2]}, {"$or": []}, ["a"]])
def test_malformed_filter_rejected(tmp_path, where):
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        c.upsert(["x"], np.ones((1, 4)), [{"a": 1}])
        with pytest.raises((TypeError, ValueError)):
            c.get(where=where)


# ---------------------------------------------------------------------- filtered search

@pytest.mark.parametrize("index", ["hnsw", "flat"])
def test_selective_filter_returns_k_with_high_recall(tmp_path, index):
    from tqsearch.datasets import load_demo_corpus

    vectors = np.asarray(load_demo_corpus().vectors[:5000], dtype=np.float32)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(3)
    buckets = rng.integers(0, 100, len(vectors))
    ids = [f"v{i}" for i in range(len(vectors))]
    with open_collection(tmp_path / "c", dim=vectors.shape[1], index=index) as c:
        c.upsert(ids, vectors, [{"bucket": int(b), "half": int(b) % 2} for b in buckets])
        queries = unit_rows(40, vectors.shape[1], 5) * 0.3 + vectors[rng.integers(0, len(vectors), 40)]
        for where, allowed in [({"bucket": 7}, buckets == 7), ({"half": 1}, buckets % 2 == 1)]:
            exact = np.where(allowed[None, :], queries @ vectors.T, -np.inf)
            truth = np.argsort(-exact, axis=1)[:, :10]
            results = c.query(queries, 10, where=where, rescore=0)  # the codes alone
            hits = 0
            for row, result in zip(truth, results):
                assert len(result["ids"]) == 10
                assert all(allowed[int(i[1:])] for i in result["ids"])
                assert result["scores"] == sorted(result["scores"], reverse=True)
                hits += len({f"v{i}" for i in row} & set(result["ids"]))
            assert hits / truth.size >= 0.95, (where, hits / truth.size)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_rescore_ranks_by_exact_scores_of_the_stored_vectors(tmp_path, metric):
    from tqsearch.datasets import load_demo_corpus

    corpus = load_demo_corpus()
    vectors = corpus.vectors[:3000] * np.linspace(0.5, 2, 3000, dtype=np.float32)[:, None]  # unequal norms
    queries = corpus.queries[:30]
    if metric == "ip":
        exact = queries @ vectors.T
    elif metric == "cosine":
        exact = (queries @ vectors.T) / np.linalg.norm(queries, axis=1)[:, None] / np.linalg.norm(vectors, axis=1)
    else:
        exact = -((queries[:, None, :] - vectors[None]) ** 2).sum(-1)
    truth = np.argsort(-exact, axis=1)[:, :10]
    with open_collection(tmp_path / "c", dim=384, metric=metric, index="flat") as c:
        c.upsert([f"v{i}" for i in range(len(vectors))], vectors)
        recall = {}
        for rescore in (0, 4):
            results = c.query(queries, 10, rescore=rescore)
            rows = [[int(i[1:]) for i in r["ids"]] for r in results]
            recall[rescore] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)])
            if rescore:  # the scores are the exact ones, best first
                for r, row, q in zip(results, rows, range(len(queries))):
                    np.testing.assert_allclose(r["scores"], exact[q, row], rtol=1e-4, atol=1e-4)
                    assert r["scores"] == sorted(r["scores"], reverse=True)
        assert recall[4] >= 0.99 and recall[4] > recall[0], recall


def test_filter_with_fewer_matches_than_k(tmp_path):
    with open_collection(tmp_path / "c", dim=8) as c:
        c.upsert([f"p{i}" for i in range(300)], unit_rows(300, 8, 0), [{"a": i % 100} for i in range(300)])
        result = c.query(unit_rows(2, 8, 1), 10, where={"a": 5})
        assert [sorted(r["ids"]) for r in result] == [["p105", "p205", "p5"]] * 2
        assert c.query(unit_rows(1, 8, 1), 10, where={"a": 500}) == [{"ids": [], "metadatas": [], "documents": [],
                                                                      "scores": []}]


# ---------------------------------------------------------------------- behaviour and validation

def _snapshot(c) -> dict:
    state = c.get(include=["metadatas", "documents", "vectors"])
    order = np.argsort(state["ids"])
    return {"ids": [state["ids"][i] for i in order], "metadatas": [state["metadatas"][i] for i in order],
            "documents": [state["documents"][i] for i in order], "vectors": state["vectors"][order]}


def _assert_same(a: dict, b: dict) -> None:
    assert a["ids"] == b["ids"] and a["metadatas"] == b["metadatas"] and a["documents"] == b["documents"]
    np.testing.assert_array_equal(a["vectors"], b["vectors"])


def test_upsert_replaces_and_delete_frees(tmp_path):
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        c.upsert(["a", "b", "c"], np.eye(4)[:3], [{"k": 1}, {"k": 2}, {"k": 3}], ["A", "B", None])
        c.upsert(["b"], np.eye(4)[3:], [{"k": 9}])  # replaces vector, metadata and document
        got = c.get(["b", "a"], include=["metadatas", "documents", "vectors"])
        assert got["ids"] == ["b", "a"] and got["metadatas"] == [{"k": 9}, {"k": 1}]
        assert got["documents"] == [None, "A"]
        np.testing.assert_array_equal(got["vectors"], np.eye(4, dtype=np.float32)[[3, 0]])
        assert c.get(where={"k": 2}, include=())["ids"] == []
        c.delete(["a", "c"])
        assert c.count() == len(c) == 1 and "a" not in c and "b" in c
        c.upsert(["d", "e"], np.eye(4)[:2], [{"k": 4}, {"k": 5}])
        assert c.query(np.eye(4)[:1], 3)[0]["ids"][0] == "d"
        assert sorted(c.get(where={"k": {"$gte": 4}}, include=())["ids"]) == ["b", "d", "e"]
        assert c.get(["d"], where={"k": 5}, include=())["ids"] == []


def test_get_pages_with_limit_and_offset(tmp_path):
    """Collection.get takes the server's limit/offset: a page is the same slice of the full answer."""
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        c.upsert([f"p{i}" for i in range(30)], np.random.default_rng(0).standard_normal((30, 4)),
                 [{"odd": i % 2} for i in range(30)], [f"doc {i}" for i in range(30)])
        for ids, where in ((None, None), (None, {"odd": 1}), ([f"p{i}" for i in range(29, 0, -3)], None)):
            whole = c.get(ids, where, include=["metadatas", "documents", "vectors"])
            for limit, offset in ((5, 0), (5, 7), (None, 4), (0, 3), (100, 2), (3, 1000)):
                page = c.get(ids, where, include=["metadatas", "documents", "vectors"], limit=limit, offset=offset)
                end = None if limit is None else offset + limit
                assert page["ids"] == whole["ids"][offset:end]
                assert page["metadatas"] == whole["metadatas"][offset:end]
                assert page["documents"] == whole["documents"][offset:end]
                np.testing.assert_array_equal(page["vectors"], whole["vectors"][offset:end])
        with pytest.raises(ValueError, match="limit"):
            c.get(limit=-1)
        with pytest.raises(ValueError, match="offset"):
            c.get(offset=-2)
        with pytest.raises(TypeError, match="limit"):
            c.get(limit=2.5)


def test_filters_see_every_change_after_being_evaluated(tmp_path):
    """Equality and range filters cache id arrays; upserts and deletes must invalidate them."""
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        c.upsert([f"p{i}" for i in range(30)], unit_rows(30, 4, 0), [{"g": i % 3, "x": i} for i in range(30)])
        wheres = [{"g": 1}, {"g": {"$in": [0, 2]}}, {"g": {"$ne": 1}}, {"x": {"$gte": 20}}]
        before = [set(c.get(where=w, include=())["ids"]) for w in wheres]
        c.upsert(["p1", "p30"], unit_rows(2, 4, 1), [{"g": 0, "x": 5}, {"g": 1, "x": 40}])  # p1 moves; p30 is new
        c.delete(["p4", "p21"])
        after = [set(c.get(where=w, include=())["ids"]) for w in wheres]
        assert after[0] == before[0] - {"p1", "p4"} | {"p30"}
        assert after[1] == before[1] - {"p21"} | {"p1"}
        assert after[2] == after[1]
        assert after[3] == before[3] - {"p21"} | {"p30"}


def test_returned_metadata_is_the_callers_copy(tmp_path):
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        c.upsert(["a"], np.eye(4)[:1], [{"tags": ["x"], "nested": {"n": 1}, "k": 1}])
        for got in (c.get(["a"])["metadatas"][0], c.query(np.eye(4)[:1], 1)[0]["metadatas"][0]):
            got["tags"].append("y")
            got["nested"]["n"] = 2
            got["k"] = 3
        assert c.get(["a"])["metadatas"] == [{"tags": ["x"], "nested": {"n": 1}, "k": 1}]


def test_bad_input_rejected_without_state_change(tmp_path):
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        c.upsert(["a", "b"], np.eye(4)[:2], [{"k": 1}, {"k": 2}], ["A", "B"])
        before, log_size = _snapshot(c), c._log.size
        nan = np.eye(4)[:2].copy()
        nan[1, 2] = np.nan
        bad_calls = [
            (ValueError, lambda: c.upsert(["x", "y"], nan)),
            (ValueError, lambda: c.upsert(["x", "y"], np.full((2, 4), 1e30))),  # squared norm overflows
            (ValueError, lambda: c.upsert(["x"], np.ones((1, 5)))),
            (TypeError, lambda: c.upsert(["x"], np.ones((1, 4), dtype=np.int64))),
            (ValueError, lambda: c.upsert(["x", "y"], np.ones((1, 4)))),
            (TypeError, lambda: c.upsert([1], np.ones((1, 4)))),
            (TypeError, lambda: c.upsert("x", np.ones((1, 4)))),
            (ValueError, lambda: c.upsert(["x", "x"], np.ones((2, 4)))),
            (TypeError, lambda: c.upsert(["x"], np.ones((1, 4)), [{"k": object()}])),
            (TypeError, lambda: c.upsert(["x"], np.ones((1, 4)), [{1: "int key"}])),
            (TypeError, lambda: c.upsert(["x"], np.ones((1, 4)), [{"k": float("nan")}])),
            (ValueError, lambda: c.upsert(["x"], np.ones((1, 4)), [{}, {}])),
            (TypeError, lambda: c.upsert(["x"], np.ones((1, 4)), None, [3])),
            (KeyError, lambda: c.delete(["a", "nope"])),
            (ValueError, lambda: c.delete(["a", "a"])),
            (KeyError, lambda: c.get(["nope"])),
            (ValueError, lambda: c.get(include=["embeddings"])),
            (ValueError, lambda: c.query(np.ones((1, 3)), 1)),
            (ValueError, lambda: c.query(np.ones((1, 4)), 0)),
        ]
        for error, call in bad_calls:
            with pytest.raises(error):
                call()
        with pytest.raises(KeyError, match="'nope'"):
            c.delete(["nope"])
        _assert_same(_snapshot(c), before)
        assert c._log.size == log_size and len(c._index) == c.count() == 2
    with open_collection(tmp_path / "c") as c:
        _assert_same(_snapshot(c), before)


def test_settings_are_stored_and_checked(tmp_path):
    path = tmp_path / "c"
    with pytest.raises(ValueError, match="dim"):
        open_collection(path)
    with pytest.raises(ValueError, match="bits"):
        open_collection(path, dim=8, bits=12)
    assert not path.exists()  # a rejected setting creates nothing
    with open_collection(path, dim=8, bits=3, metric="ip", index="hnsw", M=8, seed=5) as c:
        c.upsert(["a"], np.ones((1, 8)))
    for wrong in ({"dim": 9}, {"bits": 4}, {"metric": "l2"}, {"index": "flat"}, {"M": 16}):
        with pytest.raises(ValueError, match=next(iter(wrong))):
            open_collection(path, **wrong)
    with open_collection(path, dim=8, bits=3, M=8) as c:
        assert (c.settings["bits"], c.settings["metric"], c.settings["index_options"]) == (3, "ip", {"M": 8, "seed": 5})
        assert (c._index.bits, c._index.M, c._index.seed) == (3, 8, 5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        open_collection(tmp_path / "other", dim=8)


def test_second_open_is_refused(tmp_path):
    with open_collection(tmp_path / "c", dim=4) as c:
        with pytest.raises(RuntimeError, match="already open"):
            open_collection(tmp_path / "c")
        c.close()
        with pytest.raises(ValueError, match="closed"):
            c.upsert(["a"], np.ones((1, 4)))
    open_collection(tmp_path / "c").close()


# ---------------------------------------------------------------------- persistence

def _fill(c, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = unit_rows(n, c.dim, seed)
    ids = [f"id-{i}" for i in range(n)]
    c.upsert(ids, vectors, [{"g": int(rng.integers(0, 5)), "x": float(rng.random())} for _ in ids],
             [f"text {i}" for i in range(n)])
    c.delete(ids[::7])
    c.upsert(ids[1:20:3], unit_rows(len(ids[1:20:3]), c.dim, seed + 1), [{"g": 9}] * len(ids[1:20:3]))
    return unit_rows(16, c.dim, seed + 2)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_reopen_round_trip(tmp_path, index):
    path = tmp_path / "c"
    with open_collection(path, dim=24, index=index, bits=4, metric="cosine") as c:
        queries = _fill(c, 600, 11)
        state, results = _snapshot(c), c.query(queries, 10, where={"g": {"$in": [1, 9]}})
        settings = c.settings
    with open_collection(path) as c:  # replayed from the log alone
        assert c.settings == settings and c.count() == len(state["ids"])
        _assert_same(_snapshot(c), state)
        replayed = c.query(queries, 10, where={"g": {"$in": [1, 9]}})
        if index == "flat":  # the same operations rebuild the same store; HNSW levels are drawn afresh
            assert replayed == results
        c.compact()
        compacted = c.query(queries, 10, where={"g": {"$in": [1, 9]}})
    with open_collection(path) as c:  # loaded from the snapshot
        _assert_same(_snapshot(c), state)
        assert c.query(queries, 10, where={"g": {"$in": [1, 9]}}) == compacted
        assert sorted(os.listdir(path)) == ["index.1.tqs", "lock", "manifest.json", "points.1.tqc",
                                            "records.0.dat", "settings.json", "vectors.dat", "wal.1.log"]


def test_compaction_round_trip_and_automatic(tmp_path):
    path = tmp_path / "c"
    with open_collection(path, dim=16, index="hnsw", wal_bytes=8_000) as c:
        queries = _fill(c, 200, 3)
        for b in range(12):  # each batch is ~3 KB of log: compacts every few batches
            c.upsert([f"b{b}-{j}" for j in range(30)], unit_rows(30, 16, 100 + b), [{"b": b}] * 30)
            if b % 4 == 3:
                c.delete([f"b{b - 1}-{j}" for j in range(10)])
        assert c._generation >= 4 and c._log.size <= 8_000
        c.upsert(["tail"], np.ones((1, 16)), [{"b": -1}], ["in the log only"])
        state = _snapshot(c)
    with open_collection(path) as c:
        _assert_same(_snapshot(c), state)
        assert c.get(["tail"])["documents"] == ["in the log only"] and len(c._index) == c.count()
        for result in c.query(queries, 5, where={"b": {"$gte": 5}}):
            assert len(result["ids"]) == 5 and all(md["b"] >= 5 for md in result["metadatas"])


@pytest.mark.parametrize("fail_at", ["_write_json", "_remove_stale"])
def test_crash_during_compaction_keeps_every_write(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "c"
    c = open_collection(path, dim=8, index="flat")
    _fill(c, 100, 5)
    c.compact()
    c.upsert(["late"], np.ones((1, 8)), [{"g": 1}])
    state = _snapshot(c)

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(coll, fail_at, crash)  # before (manifest) or after (cleanup) the commit point
    with pytest.raises(OSError, match="simulated"):
        c.compact()
    monkeypatch.undo()
    c._log.close()  # the process "dies": drop the handles without any further write
    os.close(c._lock_fd)
    with open_collection(path) as c:
        _assert_same(_snapshot(c), state)
        assert c._generation == (1 if fail_at == "_write_json" else 2)
        names = sorted(os.listdir(path))
        assert [n for n in names if n[0] in "ipw"] == [f"{kind}.{c._generation}.{ext}" for kind, ext in
                                                      (("index", "tqs"), ("points", "tqc"), ("wal", "log"))]


def test_torn_wal_tail_is_truncated(tmp_path):
    path = tmp_path / "c"
    with open_collection(path, dim=8, index="flat") as c:
        for b in range(5):
            c.upsert([f"b{b}-{j}" for j in range(10)], unit_rows(10, 8, b), [{"b": b}] * 10)
        log = c._log.path
        whole = c._log.size
    for cut in (whole - 1, whole - 300, whole - 600):
        with open(log, "r+b") as f:
            f.truncate(cut)
        with open_collection(path) as c:
            assert c.count() == 40 and c.get(where={"b": 4}, include=())["ids"] == []
            assert len(c._index) == 40 and log.stat().st_size < cut and c._log.size == log.stat().st_size
            c.upsert([f"b4-{j}" for j in range(10)], unit_rows(10, 8, 4), [{"b": 4}] * 10)  # appends after it
            whole = c._log.size
        with open_collection(path) as c:
            assert c.count() == 50
            np.testing.assert_array_equal(c.get(["b4-3"], include=["vectors"])["vectors"], unit_rows(10, 8, 4)[3:4])
    with open(log, "r+b") as f:  # a flipped byte inside the last record: its checksum fails
        f.seek(whole - 5)
        byte = f.read(1)
        f.seek(whole - 5)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open_collection(path) as c:
        assert c.count() == 40


# ---------------------------------------------------------------------- crash safety

_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from tqsearch.collection import open_collection

    path, index, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = {"M": 8, "ef_construction": 40} if index == "hnsw" else {}
    c = open_collection(path, dim=16, index=index, wal_bytes=20_000, **options)
    print("ready", flush=True)
    for b in range(start, start + 10_000):
        vectors = np.random.default_rng(b).standard_normal((25, 16)).astype(np.float32)
        c.upsert([f"{b}-{j}" for j in range(25)], vectors, [{"batch": b, "j": j} for j in range(25)],
                 [f"doc {b} {j}" for j in range(25)])
        old = [f"{b - 2}-{j}" for j in range(5) if f"{b - 2}-{j}" in c]
        if old:
            c.delete(old)
        print(b, flush=True)
""")


def _check_after_crash(c, acked: int) -> None:
    """Batches <= acked are whole (minus acknowledged deletes); batch acked + 1 is all or nothing."""
    assert len(c._index) == c.count()
    for b in range(acked + 2):
        vectors = np.random.default_rng(b).standard_normal((25, 16)).astype(np.float32)
        present = [j for j in range(25) if f"{b}-{j}" in c]
        if b == acked + 1:
            assert present in ([], list(range(25)))
        elif b + 2 <= acked:
            assert present == list(range(5, 25))
        elif b + 2 == acked + 1:
            assert present in (list(range(25)), list(range(5, 25)))  # that batch's delete: whole or not at all
        else:
            assert present == list(range(25))
        if present:
            got = c.get([f"{b}-{j}" for j in present], include=["metadatas", "documents", "vectors"])
            np.testing.assert_array_equal(got["vectors"], vectors[present])
            assert got["metadatas"] == [{"batch": b, "j": j} for j in present]
            assert got["documents"] == [f"doc {b} {j}" for j in present]
    assert c.get(where={"batch": {"$gt": acked + 1}}, include=())["ids"] == []


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_sigkill_at_random_times_loses_no_acknowledged_write(tmp_path, index):
    path, rng, acked = tmp_path / "c", np.random.default_rng(2024), -1
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, str(script), str(path), index, str(acked + 1)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.05, 0.6)))
        finally:
            child.send_signal(signal.SIGKILL)
            out, _ = child.communicate()
        lines = out.split()
        acked = int(lines[-1]) if lines else acked
        with open_collection(path) as c:
            _check_after_crash(c, acked)
    assert acked >= 10  # the children did real work between kills


@pytest.mark.parametrize("compact", [False, True])
def test_the_index_centre_survives_reopen_by_replay_or_snapshot(tmp_path, compact):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((400, 16)) + 3.0).astype(np.float32)
    ids = [f"p{i}" for i in range(len(x))]
    with open_collection(tmp_path / "c", dim=16, metric="l2", index="flat") as c:
        c.upsert(ids[:300], x[:300])  # the first batch fixes the centre
        c.upsert(ids[300:], x[300:])
        mean = c._index.mean
        want = c.query(x[:5] + 0.1, 5, include=(), rescore=0)
        if compact:
            c.compact()
    np.testing.assert_allclose(mean, x[:300].mean(0), atol=1e-5)
    with open_collection(tmp_path / "c") as c:  # the log replays batch by batch, or the snapshot holds it
        np.testing.assert_array_equal(c._index.mean, mean)
        assert c.query(x[:5] + 0.1, 5, include=(), rescore=0) == want


def test_fix_center_is_kept_and_used_instead_of_the_first_batch(tmp_path):
    """Shards of one sharded collection share a centre: fix_center sets it before any point, it survives
    reopen (settings.json) and the codes are those of an index fixed to the same centre."""
    from tqsearch import ConflictError, FlatIndex

    x = unit_rows(600, 32, seed=4)
    center = unit_rows(1, 32, seed=5)[0] * 0.3
    with open_collection(tmp_path / "c", dim=32, index="flat", metric="ip") as c:
        c.fix_center(center)
        c.fix_center(center)  # the same centre again: fine
        with pytest.raises(ValueError, match="mean"):
            c.fix_center(np.zeros(31, dtype=np.float32))
        c.upsert([f"p{i}" for i in range(600)], x)
    with open_collection(tmp_path / "c") as c:
        np.testing.assert_array_equal(np.float32(c.settings["center"]), center.astype(np.float32))
        with pytest.raises(ConflictError, match="centre"):
            c.fix_center(np.zeros(32, dtype=np.float32))
        got = c.query(x[:5], 5, rescore=0)
    ref = FlatIndex(32, 4, "ip")
    ref.fix_center(center)
    ref.add(x)
    scores, ids = ref.search(x[:5], 5)
    assert [r["ids"] for r in got] == [[f"p{i}" for i in row] for row in ids]
    np.testing.assert_allclose([r["scores"] for r in got], scores, rtol=1e-6)


@pytest.mark.parametrize("center", [[0.5] * 31, ["x"] * 32, [float("nan")] * 32, "zeros"])
def test_a_malformed_stored_center_is_a_file_format_error(tmp_path, center):
    import json

    from tqsearch import FileFormatError

    with open_collection(tmp_path / "c", dim=32, index="flat") as c:
        c.fix_center(np.zeros(32, dtype=np.float32))
    path = tmp_path / "c" / "settings.json"
    settings = json.loads(path.read_text())
    path.write_text(json.dumps({**settings, "center": center}))
    with pytest.raises(FileFormatError, match="malformed settings"):
        open_collection(tmp_path / "c")
