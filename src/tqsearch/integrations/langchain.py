"""LangChain vector store on a tqsearch Collection: `TQSearchVectorStore`.

Install with `pip install "tqsearch[langchain]"`. Each text is stored as one point: its embedding, the text
as the document and the metadata, under a string id. `filter` arguments are Collection `where` dicts
(grammar in tqsearch._filters); scores are the Collection's similarities, higher is closer.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('tqsearch.integrations.langchain needs langchain-core: pip install "tqsearch[langchain]"') from e

from .._validate import as_int
from ..collection import SETTINGS, Collection, open_collection

__all__ = ["TQSearchVectorStore"]

_QUERY_FIELDS = ("metadatas", "documents")


class TQSearchVectorStore(VectorStore):
    """A LangChain VectorStore on a tqsearch Collection (compressed vectors, metadata filters, durable writes).

    embedding: embeds texts and queries. path: the collection's directory, opened now if it holds one, else
    created by the first add (the dimension comes from the first embedded batch); None: a private temporary
    directory, deleted by `close` or when the store is garbage-collected. collection: an open Collection to use
    instead of a path (the caller closes it). bits, metric, index, index_options: as `tqsearch.open`; a new
    collection defaults to bits=4, metric="cosine", index="hnsw", a reopened one checks those given.
    Adding an existing id replaces that point whole. Thread-safe; the async methods run the sync ones in an
    executor (LangChain's defaults).
    """

    def __init__(self, embedding: Embeddings, path: str | os.PathLike | None = None, *,
                 collection: Collection | None = None, bits: int | None = None, metric: str | None = None,
                 index: str | None = None, **index_options: Any) -> None:
        settings = {"bits": bits, "metric": metric, "index": index}
        self._options = {name: v for name, v in settings.items() if v is not None} | index_options
        if collection is not None and (path is not None or self._options):
            raise ValueError("give either an open collection or a path and settings, not both")
        self.embedding = embedding
        self._lock = threading.Lock()
        tmpdir = tempfile.mkdtemp(prefix="tqsearch-langchain-") if path is None and collection is None else None
        self._handle = _Handle(collection, owned=collection is None, tmpdir=tmpdir)
        self._finalizer = weakref.finalize(self, self._handle.release)
        self._path = collection.path if collection is not None else Path(tmpdir or path)
        if collection is None and (self._path / SETTINGS).exists():
            self._handle.collection = open_collection(self._path, **self._options)

    @property
    def embeddings(self) -> Embeddings:
        """The embedding model given to the constructor."""
        return self.embedding

    @property
    def collection(self) -> Collection | None:
        """The backing Collection, or None until the first add creates it."""
        return self._open()

    # ------------------------------------------------------------------ writes

    def add_texts(self, texts: Iterable[str], metadatas: Sequence[dict[str, Any] | None] | None = None, *,
                  ids: Sequence[str | None] | None = None, batch_size: int | None = None,
                  **kwargs: Any) -> list[str]:
        """Embed and upsert texts (an existing id is replaced whole); returns their ids, uuid4 where none given.

        batch_size: embed and write this many texts at a time (None: all at once); a failure leaves the
        batches before it written. Bad arguments raise before anything is embedded or written.
        """
        _no_extra(kwargs, "add_texts")
        texts = list(texts)
        metadatas = [{} if md is None else md for md in _one_each(metadatas, len(texts), "metadatas")]
        ids = [str(uuid.uuid4()) if i is None else i for i in _one_each(ids, len(texts), "ids")]
        step = max(len(texts), 1) if batch_size is None else as_int(batch_size, "batch_size")
        for start in range(0, len(texts), step):
            batch = slice(start, start + step)
            self._upsert(texts[batch], metadatas[batch], ids[batch])
        return ids

    def delete(self, ids: Sequence[str] | None = None, **kwargs: Any) -> bool:
        """Remove points by id (ids not in the store are ignored), or every point when ids is None."""
        _no_extra(kwargs, "delete")
        collection = self._open()
        if collection is None:
            return True
        targets = collection.get(include=())["ids"] if ids is None else _known(collection, ids)
        if targets:
            collection.delete(targets)
        return True

    def close(self) -> None:
        """Close the collection this store opened and delete its temporary directory, if any. Idempotent."""
        with self._lock:
            self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents for those ids that exist, in the order given (unknown and repeated ids are skipped)."""
        collection = self._open()
        return [] if collection is None else _documents(collection.get(ids=_known(collection, ids)))

    def similarity_search(self, query: str, k: int = 4, filter: dict | None = None,
                          **kwargs: Any) -> list[Document]:
        """The k documents most similar to `query` among those matching `filter`, best first."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """As similarity_search, each with its similarity score (cosine, inner product or -squared L2)."""
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, filter, **kwargs)

    def similarity_search_by_vector(self, embedding: Sequence[float], k: int = 4,
                                    filter: dict | None = None, **kwargs: Any) -> list[Document]:
        """The k documents most similar to an embedding among those matching `filter`, best first."""
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    def similarity_search_with_score_by_vector(self, embedding: Sequence[float], k: int = 4,
                                               filter: dict | None = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """As similarity_search_by_vector, each with its similarity score."""
        _no_extra(kwargs, "similarity search")
        hits = self._query(embedding, k, filter, _QUERY_FIELDS)
        return list(zip(_documents(hits), hits["scores"]))

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: dict | None = None, **kwargs: Any) -> list[Document]:
        """k documents picked by maximal marginal relevance among the fetch_k most similar to `query`."""
        embedding = self.embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(embedding, k, fetch_k, lambda_mult, filter, **kwargs)

    def max_marginal_relevance_search_by_vector(self, embedding: Sequence[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: dict | None = None,
                                                **kwargs: Any) -> list[Document]:
        """k of the fetch_k nearest documents, each chosen to be similar to the query yet unlike those before.

        lambda_mult: 1 ranks by similarity alone, 0 by diversity alone (LangChain's cosine-based MMR).
        """
        _no_extra(kwargs, "max_marginal_relevance_search")
        k = as_int(k, "k")
        hits = self._query(embedding, fetch_k, filter, (*_QUERY_FIELDS, "vectors"))
        if not hits["ids"]:
            return []
        query = np.asarray(embedding, dtype=np.float32)
        chosen = maximal_marginal_relevance(query, hits["vectors"], lambda_mult=lambda_mult, k=k)
        docs = _documents(hits)
        return [docs[i] for i in chosen]

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> Self:
        """A new store holding `texts`; kwargs go to the constructor (path, collection, bits, metric, ...)."""
        store = cls(embedding, **kwargs)
        try:
            store.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            store.close()
            raise
        return store

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Score -> relevance in [0, 1]: cosine/ip similarity clipped; l2 as 1 - distance / sqrt(2)."""
        collection = self._open()
        metric = collection.settings["metric"] if collection is not None else self._options.get("metric")
        return _l2_relevance if metric == "l2" else _similarity_relevance

    # ------------------------------------------------------------------ internals

    def _open(self) -> Collection | None:
        """The collection (None while nothing was added); ValueError once the store is closed."""
        if not self._finalizer.alive:
            raise ValueError(f"TQSearchVectorStore on {str(self._path)!r} is closed")
        return self._handle.collection

    def _create(self, dim: int) -> Collection:
        """The collection, created with dimension `dim` if this is the first add."""
        with self._lock:
            collection = self._open()
            if collection is None:
                collection = self._handle.collection = open_collection(self._path, dim, **self._options)
            return collection

    def _upsert(self, texts: list[str], metadatas: list[dict[str, Any]], ids: list[str]) -> None:
        """Embed one batch and write it."""
        vectors = np.asarray(self.embedding.embed_documents(texts), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"embed_documents returned shape {vectors.shape} for {len(texts)} texts")
        self._create(vectors.shape[1]).upsert(ids, vectors, metadatas, texts)

    def _query(self, embedding: Sequence[float], k: int, where: dict | None,
               fields: tuple[str, ...]) -> dict[str, Any]:
        """Collection.query for one vector (an empty result while nothing was added)."""
        k = as_int(k, "k")
        collection = self._open()
        if collection is None:
            return {"ids": [], "scores": [], "metadatas": [], "documents": []}
        return collection.query(np.asarray([embedding], dtype=np.float32), k, where=where, include=fields)[0]


class _Handle:
    """What a store holds: its collection, whether the store opened it, and a temporary directory it owns."""

    def __init__(self, collection: Collection | None, owned: bool, tmpdir: str | None) -> None:
        self.collection, self.owned, self.tmpdir = collection, owned, tmpdir

    def release(self) -> None:
        """Close the collection if the store opened it, then delete the temporary directory (the finalizer)."""
        if self.owned and self.collection is not None:
            self.collection.close()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _documents(rows: dict[str, Any]) -> list[Document]:
    """Documents (id set) from Collection rows, whose metadata are already the caller's own copies."""
    return [Document(id=id_, page_content=text or "", metadata=md)
            for id_, md, text in zip(rows["ids"], rows["metadatas"], rows["documents"])]


def _known(collection: Collection, ids: Sequence[str]) -> list[str]:
    """The distinct ids that are in the collection, in the order given."""
    if isinstance(ids, str) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    return [i for i in dict.fromkeys(ids) if i in collection]


def _one_each(values: Sequence[Any] | None, n: int, name: str) -> list[Any]:
    """`values` as a list of n (all None when not given); ValueError when the length differs from the texts'."""
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list with one entry per text, got {type(values).__name__}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"got {len(values)} {name} for {n} texts (one each, or None)")
    return values


def _no_extra(kwargs: dict[str, Any], method: str) -> None:
    """TypeError for keyword arguments this store does not take, rather than silently ignoring a typo."""
    if kwargs:
        raise TypeError(f"{method} got unexpected keyword arguments: {', '.join(sorted(kwargs))}")


def _similarity_relevance(score: float) -> float:
    """A cosine or inner-product score clipped to [0, 1] (1: same direction; 0: orthogonal or opposite)."""
    return min(1.0, max(0.0, score))


def _l2_relevance(score: float) -> float:
    """A negative squared L2 score as LangChain's 1 - distance / sqrt(2) (for unit vectors), clipped to [0, 1]."""
    return min(1.0, max(0.0, 1.0 - math.sqrt(max(-score, 0.0) / 2)))
