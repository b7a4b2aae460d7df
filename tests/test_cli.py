import io
import os
import subprocess
import sys

import numpy as np
import pytest

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


@pytest.mark.parametrize("command", [["info"], ["demo"], ["serve", "--demo", "--port", "0"]], ids=lambda c: c[0])
def test_bad_simd_level_is_one_line_and_exit_2(command):
    run = subprocess.run([sys.executable, "-m", "tqsearch", *command], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TQSEARCH_SIMD": "bogus"})
    assert run.returncode == 2 and run.stdout == ""
    assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith("tqsearch: TQSEARCH_SIMD: ") and "'bogus'" in run.stderr
    assert f"available on this CPU: {' '.join(tqsearch.available_simd_levels())}" in run.stderr


def test_bundled_corpus_is_consistent():
    c = load_demo_corpus()
    assert c.vectors.shape == (10_000, 384) and c.queries.shape == (200, 384)
    assert len(c.texts) == 10_000 and len(c.query_texts) == 200
    np.testing.assert_allclose(np.linalg.norm(c.vectors, axis=1), 1, atol=1e-3)
    exact = np.argsort(-(c.queries[:20] @ c.vectors.T), axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, c.gt_ids[:20, :10])]) > 0.99


def test_demo_searches_the_bundled_corpus():
    out = io.StringIO()
    report = run_demo(4, [], threads=1, out=out)
    assert report["bytes_per_vector"] == 200  # 384 * 4 / 8 code bytes + two floats (scale, exact <mean, x - mean>)
    assert report["recall_at_10"] >= 0.93
    assert report["adaptive"]["tiers"] is not None and report["adaptive"]["recall_at_10"] >= 0.96  # 0.967 measured
    text = out.getvalue()
    assert "bundled queries" in text and "recall@10" in text
    c = load_demo_corpus()
    assert c.texts[int(np.argmax(c.vectors @ c.queries[1]))][:60] in text  # the exact best hit is shown
