"""TQSearchVectorStore: LangChain's standard vector store suite, plus value tests on the bundled real corpus."""

from __future__ import annotations

import asyncio
import gc
import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.indexing import InMemoryRecordManager, index
from langchain_tests.integration_tests import VectorStoreIntegrationTests

import tqsearch
from tqsearch.datasets import load_demo_corpus
from tqsearch.integrations.langchain import TQSearchVectorStore

N_DOCS = 2000


class TestStandardSuite(VectorStoreIntegrationTests):
    """LangChain's sync and async suite on an HNSW collection (4-bit) in a given directory."""

    @pytest.fixture
    def vectorstore(self, tmp_path) -> Iterator[TQSearchVectorStore]:
        store = TQSearchVectorStore(self.get_embeddings(), tmp_path / "store")
        yield store
        store.close()


class TestStandardSuiteFlatTempdir(TestStandardSuite):
    """The same suite on a flat collection in the store's own temporary directory."""

    @pytest.fixture
    def vectorstore(self) -> Iterator[TQSearchVectorStore]:
        with TQSearchVectorStore(self.get_embeddings(), index="flat") as store:
            yield store


# ---------------------------------------------------------------------- real data

class CorpusEmbeddings(Embeddings):
    """Looks texts up in the bundled corpus (base texts and query texts): real MiniLM vectors, offline."""

    def __init__(self) -> None:
        corpus = load_demo_corpus()
        self.vectors = dict(zip(corpus.texts, corpus.vectors)) | dict(zip(corpus.query_texts, corpus.queries))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[t].tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vectors[text].tolist()


@pytest.fixture(scope="module")
def corpus():
    return load_demo_corpus()


@pytest.fixture(scope="module")
def embeddings() -> CorpusEmbeddings:
    return CorpusEmbeddings()


def _metadata(i: int, text: str, rng: np.random.Generator) -> dict:
    """Mixed-type metadata; "tag" exists on a third of the points only (absent fields matter to $ne/$not)."""
    md = {"kind": str(rng.choice(["noun", "verb", "adj", "adv"])), "length": len(text),
          "score": round(float(rng.random()), 3), "quoted": '"' in text, "head": text.split(":")[0]}
    if i % 3 == 0:
        md["tag"] = f"t{i % 5}"
    return md


@pytest.fixture(scope="module")
def docs(corpus) -> list[Document]:
    rng = np.random.default_rng(7)
    return [Document(id=f"d{i}", page_content=text, metadata=_metadata(i, text, rng))
            for i, text in enumerate(corpus.texts[:N_DOCS])]


@pytest.fixture(scope="module")
def hnsw_store(tmp_path_factory, embeddings, docs) -> Iterator[TQSearchVectorStore]:
    """The default store (HNSW, 4-bit codes) holding the corpus slice."""
    store = TQSearchVectorStore(embeddings, tmp_path_factory.mktemp("hnsw"))
    store.add_documents(docs)
    yield store
    store.close()


FILTERS: list[tuple[dict, Callable[[dict], bool]]] = [
    ({"kind": "verb"}, lambda m: m["kind"] == "verb"),
    ({"quoted": True}, lambda m: m["quoted"] is True),
    ({"length": {"$gte": 40, "$lt": 80}}, lambda m: 40 <= m["length"] < 80),
    ({"score": {"$gt": 0.25, "$lte": 0.5}}, lambda m: 0.25 < m["score"] <= 0.5),
    ({"kind": {"$in": ["noun", "adj"]}}, lambda m: m["kind"] in ("noun", "adj")),
    ({"tag": {"$nin": ["t0", "t1"]}}, lambda m: m.get("tag") not in ("t0", "t1")),
    ({"tag": {"$ne": "t3"}}, lambda m: m.get("tag") != "t3"),
    ({"$and": [{"kind": "noun"}, {"quoted": True}]}, lambda m: m["kind"] == "noun" and m["quoted"]),
    ({"$or": [{"length": {"$lt": 30}}, {"score": {"$gt": 0.9}}]}, lambda m: m["length"] < 30 or m["score"] > 0.9),
    ({"$not": {"kind": "verb"}}, lambda m: m["kind"] != "verb"),
    ({"kind": "adv", "tag": "t2"}, lambda m: m["kind"] == "adv" and m.get("tag") == "t2"),
    ({"head": "no such headword"}, lambda m: False),
]


@pytest.mark.parametrize(("where", "predicate"), FILTERS, ids=[str(w) for w, _ in FILTERS])
def test_filter_matches_brute_force(hnsw_store, docs, corpus, where, predicate) -> None:
    expected = {d.id for d in docs if predicate(d.metadata)}
    query = corpus.queries[0]
    everything = hnsw_store.similarity_search_by_vector(query, k=N_DOCS, filter=where)
    assert {d.id for d in everything} == expected
    top = hnsw_store.similarity_search_by_vector(query, k=10, filter=where)
    assert len(top) == min(10, len(expected)) and {d.id for d in top} <= expected
    assert len(hnsw_store.max_marginal_relevance_search_by_vector(query, k=3, filter=where)) == min(3, len(expected))


def test_scores_match_exact_cosine(tmp_path, embeddings, docs, corpus) -> None:
    store = TQSearchVectorStore(embeddings, tmp_path / "s", bits=8, index="flat")
    store.add_documents(docs)
    base = np.array([embeddings.vectors[d.page_content] for d in docs])
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    tol, k, hits = 0.01, 10, 0
    for text, q in zip(corpus.query_texts[:40], corpus.queries[:40]):
        exact = base @ (q / np.linalg.norm(q))
        found = store.similarity_search_with_score(text, k=k)
        rows = [int(doc.id[1:]) for doc, _ in found]
        scores = np.array([s for _, s in found])
        assert len(found) == k and np.all(np.diff(scores) <= 0)
        np.testing.assert_allclose(scores, exact[rows], atol=tol)
        assert np.all(np.diff(exact[rows]) <= 2 * tol)  # exact order, up to near-ties
        assert exact[rows].min() >= np.sort(exact)[-k] - 2 * tol  # nothing far below the true k-th best
        hits += len(set(rows) & set(np.argsort(-exact)[:k].tolist()))
        assert all(doc == docs[row] for (doc, _), row in zip(found, rows))
    assert hits / (40 * k) >= 0.95
    store.close()


def test_default_store_recall(hnsw_store, embeddings, docs, corpus) -> None:
    base = np.array([embeddings.vectors[d.page_content] for d in docs])
    hits = 0
    for text, q in zip(corpus.query_texts[:40], corpus.queries[:40]):
        truth = set(np.argsort(-(base @ q))[:10].tolist())
        hits += len(truth & {int(doc.id[1:]) for doc in hnsw_store.similarity_search(text, k=10)})
    assert hits / 400 >= 0.85


def test_relevance_scores_in_unit_interval(tmp_path, embeddings, docs) -> None:
    for metric in ("cosine", "ip", "l2"):
        store = TQSearchVectorStore(embeddings, tmp_path / metric, metric=metric, bits=8)
        store.add_documents(docs[:300])
        found = store.similarity_search_with_relevance_scores(docs[5].page_content, k=300)
        relevance = [r for _, r in found]
        assert found[0][0].id == "d5" and relevance[0] == pytest.approx(1.0, abs=0.01)
        assert all(0.0 <= r <= 1.0 for r in relevance) and relevance == sorted(relevance, reverse=True)
        store.close()


def test_mmr_picks_diverse_documents(tmp_path, embeddings, docs, corpus) -> None:
    store = TQSearchVectorStore(embeddings, tmp_path / "s", bits=8)
    store.add_documents(docs[:200])
    query = corpus.query_texts[0]
    nearest = store.similarity_search(query, k=1)[0]
    store.add_texts([nearest.page_content] * 3, ids=["copy1", "copy2", "copy3"])
    twins = {nearest.id, "copy1", "copy2", "copy3"}
    assert {d.id for d in store.similarity_search(query, k=4)} == twins
    diverse = store.max_marginal_relevance_search(query, k=4, fetch_k=20, lambda_mult=0.5)
    assert len(diverse) == 4 and diverse[0].id in twins and len({d.id for d in diverse} & twins) == 1
    assert store.max_marginal_relevance_search(query, k=4, fetch_k=20, lambda_mult=1.0)[0].id in twins
    store.close()


# ---------------------------------------------------------------------- lifecycle

def test_persistence_round_trip(tmp_path, embeddings, docs) -> None:
    path = tmp_path / "s"
    with TQSearchVectorStore(embeddings, path, bits=8) as store:
        store.add_documents(docs[:100])
        store.delete(["d3"])
    with TQSearchVectorStore(embeddings, path) as reopened:
        assert reopened.collection.count() == 99 and reopened.collection.settings["bits"] == 8
        assert reopened.get_by_ids([d.id for d in docs[:100]]) == docs[:3] + docs[4:100]
        assert reopened.similarity_search(docs[50].page_content, k=1) == [docs[50]]
    with pytest.raises(ValueError, match="bits"):
        TQSearchVectorStore(embeddings, path, bits=4)


def test_path_is_locked_while_open(tmp_path, embeddings, docs) -> None:
    with TQSearchVectorStore(embeddings, tmp_path / "s") as store:
        store.add_documents(docs[:3])
        with pytest.raises(RuntimeError, match="already open"):
            TQSearchVectorStore(embeddings, tmp_path / "s")


def test_from_texts(tmp_path, embeddings, docs) -> None:
    texts, metadatas = [d.page_content for d in docs[:20]], [d.metadata for d in docs[:20]]
    store = TQSearchVectorStore.from_texts(texts, embeddings, metadatas, ids=[d.id for d in docs[:20]],
                                           path=tmp_path / "s", bits=8, index="flat")
    assert store.collection.settings["index"] == "flat" and store.collection.count() == 20
    assert store.get_by_ids(["d7", "d2"]) == [docs[7], docs[2]]
    store.close()


def test_temporary_directory_removed_on_close_and_collection(embeddings, docs) -> None:
    store = TQSearchVectorStore(embeddings)
    store.add_documents(docs[:2])
    path = store.collection.path
    store.close()
    assert not path.exists()
    store.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        store.get_by_ids(["d0"])
    with pytest.raises(ValueError, match="closed"):
        store.add_documents(docs[:1])
    store = TQSearchVectorStore(embeddings)
    store.add_documents(docs[:2])
    path = store.collection.path
    del store
    gc.collect()
    assert not path.exists()


def test_given_collection_is_used_and_left_open(tmp_path, embeddings, docs) -> None:
    collection = tqsearch.open(tmp_path / "c", dim=384, bits=8)
    with TQSearchVectorStore(embeddings, collection=collection) as store:
        store.add_documents(docs[:5])
    assert collection.count() == 5 and "d4" in collection
    collection.close()
    with pytest.raises(ValueError, match="not both"):
        TQSearchVectorStore(embeddings, tmp_path / "c", collection=collection)


def test_langchain_indexing_api(tmp_path, embeddings, docs) -> None:
    """langchain_core.indexing.index passes batch_size and relies on delete/upsert by id."""
    records = InMemoryRecordManager("tq")
    records.create_schema()
    sourced = [Document(page_content=d.page_content, metadata={"source": f"s{i % 4}"}) for i, d in enumerate(docs[:40])]
    with TQSearchVectorStore(embeddings, tmp_path / "s") as store:
        options = {"cleanup": "full", "source_id_key": "source", "key_encoder": "sha256"}
        first = index(sourced, records, store, batch_size=7, **options)
        again = index(sourced[:10], records, store, **options)
        assert first["num_added"] == 40 and again["num_deleted"] == 30 and store.collection.count() == 10


# ---------------------------------------------------------------------- contract details

def test_empty_store_and_small_store(embeddings, docs, corpus) -> None:
    with TQSearchVectorStore(embeddings) as store:
        assert store.similarity_search_with_score(docs[0].page_content) == []
        assert store.max_marginal_relevance_search(docs[0].page_content) == []
        assert store.get_by_ids(["d0"]) == [] and store.delete(["d0"]) is True and store.delete() is True
        assert store.add_texts([]) == [] and store.collection is None
        store.add_documents(docs[:3])
        assert len(store.similarity_search_by_vector(corpus.queries[0], k=50)) == 3
        assert len(store.max_marginal_relevance_search(docs[0].page_content, k=10)) == 3


def test_ids_and_deletes(embeddings, docs) -> None:
    with TQSearchVectorStore(embeddings) as store:
        unnamed = Document(page_content=docs[1].page_content, metadata={"n": 1})
        ids = store.add_documents([docs[0], unnamed])
        assert ids[0] == "d0" and len(ids[1]) == 36 and unnamed.id is None
        assert store.get_by_ids(["nope", ids[1], "d0", ids[1]]) == [unnamed.model_copy(update={"id": ids[1]}), docs[0]]
        assert store.add_texts([d.page_content for d in docs[2:4]], ids=["x", None])[0] == "x"
        assert store.delete(["x", "missing", "x"]) is True and store.collection.count() == 3
        assert store.delete() is True and store.collection.count() == 0


@pytest.mark.asyncio
async def test_concurrent_async_adds_share_one_collection(embeddings, docs) -> None:
    with TQSearchVectorStore(embeddings) as store:
        await asyncio.gather(*(store.aadd_documents(docs[i:i + 10]) for i in range(0, 80, 10)))
        assert store.collection.count() == 80
        assert await store.asimilarity_search(docs[3].page_content, k=1) == [docs[3]]
        assert await store.amax_marginal_relevance_search(docs[3].page_content, k=2) != []


def test_returned_metadata_is_a_copy(embeddings) -> None:
    with TQSearchVectorStore(embeddings) as store:
        text = next(iter(embeddings.vectors))
        store.add_texts([text], [{"tags": ["a"]}], ids=["p"])
        store.get_by_ids(["p"])[0].metadata["tags"].append("b")
        store.similarity_search(text, k=1)[0].metadata["tags"].append("c")
        assert store.get_by_ids(["p"])[0].metadata == {"tags": ["a"]}


def test_bad_input_raises_and_leaves_store_unchanged(embeddings, docs) -> None:
    with TQSearchVectorStore(embeddings) as store:
        store.add_documents(docs[:4])
        texts = [d.page_content for d in docs[10:13]]
        bad_calls = [
            (ValueError, "metadatas", lambda: store.add_texts(texts, [{}, {}])),
            (ValueError, "ids", lambda: store.add_texts(texts, ids=["a", "b"])),
            (TypeError, "one entry per text", lambda: store.add_texts(texts[:1], {"kind": "noun"})),
            (ValueError, "duplicates", lambda: store.add_texts(texts, ids=["a", "b", "a"])),
            (TypeError, "JSON", lambda: store.add_texts(texts, [{}, {"x": object()}, {}])),
            (TypeError, "unexpected", lambda: store.add_texts(texts, upsert=True)),
            (TypeError, "unexpected", lambda: store.similarity_search(texts[0], filters={"kind": "x"})),
            (TypeError, "unexpected", lambda: store.delete(["d0"], where={})),
            (TypeError, "list of strings", lambda: store.delete("d0")),
            (ValueError, "k must be", lambda: store.similarity_search(texts[0], k=0)),
            (ValueError, r"\$bogus", lambda: store.similarity_search(texts[0], filter={"kind": {"$bogus": 1}})),
        ]
        for error, match, call in bad_calls:
            with pytest.raises(error, match=match):
                call()
        assert store.get_by_ids([d.id for d in docs[:20]]) == docs[:4] and store.collection.count() == 4


def test_embedding_dimension_mismatch_is_rejected(tmp_path) -> None:
    with TQSearchVectorStore(DeterministicFakeEmbedding(size=8), tmp_path / "s") as store:
        store.add_texts(["a"])
    with TQSearchVectorStore(DeterministicFakeEmbedding(size=6), tmp_path / "s") as store:
        with pytest.raises(ValueError, match="8"):
            store.add_texts(["b"])
        assert store.collection.count() == 1


def test_import_tqsearch_does_not_import_langchain() -> None:
    code = "import sys, tqsearch; print(sorted(m for m in sys.modules if m.startswith('langchain')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_langchain_core_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_core.documents", None)
    monkeypatch.delitem(sys.modules, "tqsearch.integrations.langchain")
    with pytest.raises(ImportError, match=r'pip install "tqsearch\[langchain\]"'):
        importlib.import_module("tqsearch.integrations.langchain")
