"""What a collection keeps where: vectors="float32" | "float16" | None, every field through reopen,
version-1 directories converted, records rewritten without garbage, id-hash collisions, memory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import unit_rows

from tqsearch import _points
from tqsearch.collection import open_collection

DATA = Path(__file__).parent / "data"


def _everything(c) -> dict:
    return c.get(include=["metadatas", "documents"] + (["vectors"] if c.vectors else []))


def _fill(c, n: int) -> None:
    x = unit_rows(n, c.dim, seed=n)
    ids = [f"p{i}" for i in range(n)]
    metas = [{"kind": ["a", "b", "c"][i % 3], "n": i, "w": i / 7, "flag": i % 2 == 0, "text": f"about {i}" * 3,
              "nested": {"list": [i, "x"]}} for i in range(n)]
    c.upsert(ids, x, metas, [f"document number {i}" if i % 5 else None for i in range(n)])
    c.delete(ids[::9])
    c.upsert(ids[1:40:4], unit_rows(10, c.dim, seed=1), [{"kind": "z", "n": -1}] * 10, ["replaced"] * 10)


@pytest.mark.parametrize("vectors", ["float32", "float16", None])
@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_every_field_survives_reopen(tmp_path, vectors, index):
    path = tmp_path / "c"
    with open_collection(path, dim=16, index=index, vectors=vectors) as c:
        _fill(c, 400)
        before = _everything(c)
        queries = unit_rows(5, 16, seed=3)
        hits = c.query(queries, 7, where={"kind": {"$in": ["a", "z"]}, "n": {"$lt": 300}})
    for compact in (False, True):  # from the log, then from a snapshot
        with open_collection(path) as c:
            assert c.vectors == vectors and c.settings["vectors"] == vectors
            after = _everything(c)
            assert after["ids"] == before["ids"] and after["metadatas"] == before["metadatas"]
            assert after["documents"] == before["documents"]
            if vectors:
                np.testing.assert_array_equal(after["vectors"], before["vectors"])
            assert c.query(queries, 7, where={"kind": {"$in": ["a", "z"]}, "n": {"$lt": 300}}) == hits or index == "hnsw"
            if compact:
                c.compact()
    x = unit_rows(400, 16, seed=400)
    with open_collection(path) as c:
        got = c.get(["p1", "p2"], include=["vectors"] if vectors else [])
        if vectors == "float32":
            np.testing.assert_array_equal(got["vectors"][1], x[2])
        elif vectors == "float16":
            np.testing.assert_allclose(got["vectors"][1], x[2], atol=1e-3)
            assert not np.array_equal(got["vectors"][1], x[2])
        else:
            with pytest.raises(ValueError, match="keeps no vectors"):
                c.get(["p1"], include=["vectors"])
            with pytest.raises(ValueError, match="vectors=None"):
                c.query(x[:1], 3, rescore=2)
        assert c.query(x[2:3], 1)[0]["ids"] == ["p2"]


def test_rescore_reads_only_the_stored_vectors(tmp_path):
    """Exact re-ranking on float16 originals reaches the float32 ranking (ties aside)."""
    x = unit_rows(3000, 64, seed=4)
    q = unit_rows(40, 64, seed=5)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recalls = {}
    for vectors in ("float32", "float16", None):
        with open_collection(tmp_path / str(vectors), dim=64, bits=2, index="flat", vectors=vectors) as c:
            c.upsert([str(i) for i in range(3000)], x)
            hits = c.query(q, 10, include=[], rescore=None if vectors is None else 10)
            found = [[int(i) for i in h["ids"]] for h in hits]
        recalls[vectors] = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recalls["float32"] >= 0.99 and recalls["float16"] >= recalls["float32"] - 0.01
    assert recalls[None] < recalls["float16"] - 0.2  # codes alone at 2 bits (measured 0.59)


def test_version_1_directory_is_converted(tmp_path):
    path = tmp_path / "old"
    shutil.copytree(DATA / "collection_v1", path)
    x = np.load(DATA / "collection_v1_vectors.npy")
    with open_collection(path) as c:
        assert c.settings["version"] == 2 and c.vectors == "float32" and c.count() == 28
        got = c.get(["p0", "p4", "p21"], include=["metadatas", "documents", "vectors"])
        assert got["metadatas"] == [{"i": 0, "tag": "even"}, {"i": 4, "tag": "even"}, {"i": 21, "nested": {"a": [1, 2]}}]
        assert got["documents"] == ["doc 0", "doc 4", None]
        np.testing.assert_array_equal(got["vectors"], x[[0, 4, 21]])
        assert "p3" not in c and "p25" not in c
        assert c.get(where={"tag": "odd"}, include=[])["ids"] == [f"p{i}" for i in range(1, 20, 2) if i != 3]
        assert c.query(x[7:8], 1)[0]["ids"] == ["p7"]
    with open_collection(path) as c:  # the converted directory reopens as version 2
        assert c.count() == 28 and sorted(p.name for p in path.iterdir() if p.name.startswith("points"))


def test_records_file_is_rewritten_when_garbage_dominates(tmp_path):
    path = tmp_path / "c"
    with open_collection(path, dim=8, index="flat") as c:
        x = unit_rows(100, 8, seed=1)
        for round_ in range(4):  # every point replaced three times: three quarters of the records are garbage
            c.upsert([f"p{i}" for i in range(100)], x, [{"round": round_}] * 100, [f"r{round_}"] * 100)
        assert c._points.garbage_share() > 0.7
        c.compact()
        assert c._points.garbage_share() == 0 and c._points.arena == 1
        assert sorted(p.name for p in path.glob("records.*")) == ["records.1.dat"]
        c.upsert(["new"], x[:1], [{"round": 9}])
    with open_collection(path) as c:
        assert c.get(["p5", "new"])["metadatas"] == [{"round": 3}, {"round": 9}]
        assert c.get(where={"round": 3}, include=[])["ids"] == [f"p{i}" for i in range(100)]


def test_string_ids_with_colliding_hashes(tmp_path, monkeypatch):
    """Ids are found through a 64-bit hash; equal hashes (forced here) still keep points apart."""
    monkeypatch.setattr(_points, "id_hash", lambda sid: len(sid))  # every id of one length collides
    path = tmp_path / "c"
    x = unit_rows(30, 8, seed=2)
    ids = [f"{i:02d}" for i in range(20)] + [f"long{i}" for i in range(10)]
    with open_collection(path, dim=8, index="flat") as c:
        c.upsert(ids, x, [{"i": i} for i in range(30)])
        assert c.get(ids[::3])["metadatas"] == [{"i": i} for i in range(0, 30, 3)]
        c.delete(["00", "long3"])
        assert "00" not in c and "01" in c and "long3" not in c and "long4" in c
        c.upsert(["05", "zz"], x[:2], [{"i": 50}, {"i": 51}])
        assert c.get(["05", "zz", "06"])["metadatas"] == [{"i": 50}, {"i": 51}, {"i": 6}]
        assert c.count() == 29
        c.compact()
    with open_collection(path) as c:
        assert c.count() == 29 and c.get(["05", "zz", "long9"])["metadatas"] == [{"i": 50}, {"i": 51}, {"i": 29}]
        with pytest.raises(KeyError, match="00"):
            c.delete(["00"])


def test_memory_stays_with_the_codes(tmp_path):
    """Per point in memory: the index, about 21 bytes of point arrays and 9 bytes per filterable field."""
    with open_collection(tmp_path / "c", dim=64, index="flat") as c:
        n = 20_000
        c.upsert([f"p{i}" for i in range(n)], unit_rows(n, 64, seed=3), [{"a": i % 10, "b": "x"} for i in range(n)],
                 ["some document text"] * n)
        usage = c.memory_usage()
        assert usage["points"] / n <= 2 * 21 + 12 + 1  # doubling slack, id map
        assert usage["payload"] / n <= 2 * 9 * 1.25 + 8  # two columns at capacity, one cached id array
        assert os.path.getsize(tmp_path / "c" / "vectors.dat") >= n * 64 * 4


def test_an_open_that_replays_a_log_after_its_snapshot_holds_no_file(tmp_path):
    """The snapshot's index is read, then the log's upserts change it: it copies its codes and must let the file go
    (before, a 400,000-point collection kept its 22 MB index file in memory beside the copy, counted as "file")."""
    path = tmp_path / "c"
    x = unit_rows(3_000, 32, seed=5)
    with open_collection(path, dim=32, index="flat") as c:
        c.upsert([f"p{i}" for i in range(2_000)], x[:2_000])
        c.compact()
        c.upsert([f"p{i}" for i in range(2_000, 3_000)], x[2_000:])
        expected = c.query(x[:5], 5)
    with open_collection(path) as c:
        assert c._index.memory_usage()["file"] == 0
        assert c.query(x[:5], 5) == expected


def test_pread_rows_checks_its_arguments(tmp_path):
    """The native row reader behind re-ranking: runs of rows, and clear errors, never a partial read."""
    from tqsearch import _core

    path = tmp_path / "rows.dat"
    data = np.arange(10 * 8, dtype=np.uint8).reshape(10, 8)
    path.write_bytes(data.tobytes())
    fd = os.open(path, os.O_RDONLY)
    try:
        out = np.empty((4, 8), dtype=np.uint8)
        _core.pread_rows(fd, np.array([0, 1, 2, 7], dtype=np.int64), out)
        np.testing.assert_array_equal(out, data[[0, 1, 2, 7]])
        for rows, match in (([3, 1, 2, 4], "sorted"), ([1, 1, 2, 3], "distinct"), ([7, 8, 9, 10], "could not read row 7")):
            with pytest.raises(ValueError, match=match):
                _core.pread_rows(fd, np.array(rows, dtype=np.int64), out)
        with pytest.raises(ValueError, match="one row per"):
            _core.pread_rows(fd, np.array([0, 1], dtype=np.int64), out)
    finally:
        os.close(fd)


def test_pread_rows_reads_rows_out_of_the_page_cache(tmp_path):
    """Rows the page cache no longer holds (evicted with POSIX_FADV_DONTNEED) come back intact: the path
    that announces every cold run to the kernel before reading them."""
    from tqsearch import _core

    path = tmp_path / "rows.dat"
    data = np.random.default_rng(5).integers(0, 256, size=(4096, 1536), dtype=np.uint8)
    with path.open("wb") as f:
        f.write(data.tobytes())
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        rows = np.array([3, 4, 5, 100, 2047, 2048, 4095], dtype=np.int64)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for _ in range(2):  # cold, then cached
            out = np.empty((len(rows), 1536), dtype=np.uint8)
            _core.pread_rows(fd, rows, out)
            np.testing.assert_array_equal(out, data[rows])
    finally:
        os.close(fd)


def test_pread_joined_reads_records_as_one_json_array(tmp_path):
    """The native record reader: byte ranges joined as '[r0,r1,...]', cold (evicted) or cached, and clear
    errors for a short file or a wrongly sized buffer."""
    from tqsearch import _core

    records = [b'["a",{"k":1},null]', b'["bb",{},"doc"]', b"[\"c\",{\"x\":[1,2]},\"\xc3\xa9\"]"]
    path = tmp_path / "records.dat"
    with path.open("wb") as f:  # durable, so that DONTNEED below can evict its pages
        f.write(b"garbage" + b"".join(records))
        f.flush()
        os.fsync(f.fileno())
    starts = np.cumsum([7] + [len(r) for r in records])[:-1].astype(np.uint64)
    lengths = np.array([len(r) for r in records], dtype=np.uint32)
    fd = os.open(path, os.O_RDONLY)
    try:
        order = np.array([2, 0, 1])
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for _ in range(2):  # cold, then cached
            text = bytearray(int(lengths.sum()) + len(order) + 1)
            _core.pread_joined(fd, starts[order], lengths[order], text)
            assert bytes(text) == b"[" + b",".join(records[i] for i in order) + b"]"
        with pytest.raises(ValueError, match="could not read range 1"):
            _core.pread_joined(fd, np.array([0, 10_000], dtype=np.uint64), np.array([3, 3], dtype=np.uint32),
                               bytearray(9))
        with pytest.raises(ValueError, match="out has 5 rows"):
            _core.pread_joined(fd, starts[:1], lengths[:1], bytearray(5))
    finally:
        os.close(fd)
