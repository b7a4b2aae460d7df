import io

import numpy as np

import tqsearch
from tqsearch.cli import main
from tqsearch.datasets import load_demo_corpus
from tqsearch.demo import run_demo


def test_info_names_version_features_and_kernels(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert tqsearch.__version__ in out
    assert f"kernels in use: {tqsearch.simd_level()}" in out
    for level in tqsearch.available_simd_levels():
        assert level in out


def test_bundled_corpus_is_consistent():
    c = load_demo_corpus()
    assert c.vectors.shape == (10_000, 384) and c.queries.shape == (200, 384)
    assert len(c.texts) == 10_000 and len(c.query_texts) == 200
    np.testing.assert_allclose(np.linalg.norm(c.vectors, axis=1), 1, atol=1e-3)
    exact = np.argsort(-(c.queries[:20] @ c.vectors.T), axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, c.gt_ids[:20, :10])]) > 0.99


def test_demo_reports_real_compression_quality():
    out = io.StringIO()
    rows = {r["bits"]: r for r in run_demo([2, 4], threads=1, out=out)}
    assert rows[4]["bytes_per_vector"] == 200 and rows[2]["bytes_per_vector"] == 104
    assert rows[4]["recall_at_10"] >= 0.93 and rows[2]["recall_at_10"] >= 0.8
    assert rows[4]["mse"] < 0.011 and rows[2]["mse"] < 0.13
    assert "crack" in out.getvalue()  # hits are printed with their texts
