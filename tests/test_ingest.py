"""Bulk ingest: .npy / .jsonl / .parquet files and iterators of batches, through the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import unit_rows

from tqsearch.cli import main
from tqsearch.collection import open_collection
from tqsearch.ingest import ingest, read_batches


def _points(n: int, dim: int = 12) -> tuple[list[str], np.ndarray, list[dict], list[str]]:
    return ([f"doc-{i}" for i in range(n)], unit_rows(n, dim, seed=n), [{"n": i, "even": i % 2 == 0} for i in range(n)],
            [f"text {i}" for i in range(n)])


def _check(path, ids, x, metas, docs) -> None:
    with open_collection(path) as c:
        assert c.count() == len(ids)
        got = c.get(ids[::37], include=["metadatas", "documents", "vectors"])
        assert got["ids"] == ids[::37]
        np.testing.assert_array_equal(got["vectors"], x[::37])
        if metas is not None:
            assert got["metadatas"] == metas[::37] and got["documents"] == docs[::37]
        assert c.query(x[5:6], 1)[0]["ids"] == [ids[5]]


def test_jsonl_in_batches_through_the_cli(tmp_path, capsys):
    ids, x, metas, docs = _points(1000)
    source = tmp_path / "points.jsonl"
    source.write_text("".join(json.dumps({"id": i, "vector": v.tolist(), "metadata": m, "document": d}) + "\n"
                              for i, v, m, d in zip(ids, x, metas, docs)))
    assert main(["ingest", str(tmp_path / "c"), "--from", str(source), "--batch", "128", "--index", "flat"]) == 0
    assert "ingested 1,000 points" in capsys.readouterr().out
    _check(tmp_path / "c", ids, x, metas, docs)
    assert len(list(read_batches(source, 300)[0])) == 4  # 300 + 300 + 300 + 100


def test_parquet_columns_become_metadata(tmp_path):
    ids, x, metas, docs = _points(700)
    table = pa.table({"id": ids, "vector": [v.tolist() for v in x], "document": docs,
                      "n": [m["n"] for m in metas], "even": [m["even"] for m in metas]})
    pq.write_table(table, tmp_path / "points.parquet", row_group_size=100)
    batches, total = read_batches(tmp_path / "points.parquet", 250)
    with open_collection(tmp_path / "c", dim=12) as c:
        assert ingest(c, batches, total, progress=False) == 700
    _check(tmp_path / "c", ids, x, metas, docs)


def test_npy_is_read_a_batch_at_a_time_in_a_subprocess(tmp_path):
    x = unit_rows(2500, 12, seed=1)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([sys.executable, "-m", "tqsearch", "ingest", str(tmp_path / "c"), "--from",
                          str(tmp_path / "x.npy"), "--batch", "1000", "--vectors", "float16"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    with open_collection(tmp_path / "c") as c:
        assert c.count() == 2500 and c.vectors == "float16"
        np.testing.assert_allclose(c.get(["2499"], include=["vectors"])["vectors"][0], x[2499], atol=1e-3)


def test_ingest_from_an_iterator_appends_to_an_existing_collection(tmp_path):
    ids, x, metas, docs = _points(600)
    with open_collection(tmp_path / "c", dim=12, index="flat") as c:
        c.upsert(ids[:100], x[:100], metas[:100], docs[:100])
        batches = ({"ids": ids[s:s + 100], "vectors": x[s:s + 100], "metadatas": metas[s:s + 100],
                    "documents": docs[s:s + 100]} for s in range(100, 600, 100))
        assert ingest(c, batches, progress=False) == 500
    _check(tmp_path / "c", ids, x, metas, docs)


@pytest.mark.parametrize("name, content, message", [
    ("points.csv", "a,b\n", "cannot ingest '.csv'"),
    ("points.jsonl", '{"id": "a", "vector": [1, 2]}\nnot json\n', "points.jsonl:2: not JSON"),
    ("points.jsonl", '{"vector": [1, 2]}\n', "expected an object with 'id' and 'vector'"),
    ("missing.npy", None, "no such file"),
])
def test_bad_sources_are_one_line_errors(tmp_path, capsys, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    assert main(["ingest", str(tmp_path / "c"), "--from", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_wrong_dimension_for_an_existing_collection(tmp_path, capsys):
    with open_collection(tmp_path / "c", dim=8) as c:
        c.upsert(["a"], np.ones((1, 8)))
    np.save(tmp_path / "x.npy", np.ones((3, 5), dtype=np.float32))
    assert main(["ingest", str(tmp_path / "c"), "--from", str(tmp_path / "x.npy")]) == 2
    assert "dim=5 does not match" in capsys.readouterr().err
    with open_collection(tmp_path / "c") as c:
        assert c.count() == 1
