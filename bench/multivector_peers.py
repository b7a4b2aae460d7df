"""Peer baselines for the multi-vector (late-interaction) benchmark: Chamfer / MaxSim retrieval.

score(Q, P) = sum over query tokens q of max over document tokens p of <q, p> (ColBERT MaxSim). Data:
``wordnet_minilm_tokens`` (4,000 docs, 95,843 tokens; 500 queries; 384-d fp16, unit norm, loaded as
float32; gt_ids = exact Chamfer top-100). Every peer answers one query at a time (token matrix
(n, 384) -> int64 ids, best first); the caller times it on one core (``common.pinned(1)``; importing
common first sets OPENBLAS_NUM_THREADS=1). Encode/build seconds are measured here, on one core.

Peers (checked on numpy 2.4.6, fastembed 0.9.1, muvfde 0.0.9, tqdb 0.9.1; Python 3.11):
  * ``BruteForceMaxSim``: the baseline to beat. All doc tokens in one (T, 384) float32 matrix;
    ``S = q @ D.T``, ``np.maximum.reduceat(S, offsets[:-1], axis=1).sum(0)``, top-k (float32 sums).
    Bytes/doc = float32 tokens + one int64 offset. It is also every other peer's exact reranker.
  * ``MeanPooled``: single vector per doc = mean of its tokens, L2-normalised; query = mean of its
    tokens (its norm does not change the ranking). Exact inner-product scan -> N candidates -> exact
    Chamfer rerank -> top k; N = k is the plain single-vector ranking (the rerank only reorders).
    Strong here: all-MiniLM-L6-v2 was trained with mean pooling, so this is its sentence embedding.
  * ``FastembedMuvera``: fastembed 0.9.1 ``fastembed.postprocess.Muvera(384, k_sim=5, dim_proj=16,
    r_reps=20, random_seed=42)`` (its defaults, d_FDE = 20*32*16 = 10,240). ``process_document``
    (bucket mean, fill of empty buckets by the first token of the Hamming-nearest non-empty bucket)
    and ``process_query`` (bucket sum, no fill); dense +-1 projection scaled by 1/sqrt(16), plain
    binary bucket ids, no final projection. Pure Python per repetition, float64 inside (stored as
    float32). ``pip install fastembed==0.9.1`` pulls onnxruntime, tokenizers, huggingface-hub
    (unused: no model is loaded). Brute-force float32 FDE inner products -> N candidates -> exact
    Chamfer rerank; the query FDE is encoded inside ``search`` (it is part of the query cost).
  * ``MuvfdeMuvera``: muvfde 0.0.9 (nanobind wrapper of Google's C++ reference), same pipeline,
    (r_reps, k_sim, d_proj) = (20, 5, 16), AMS_SKETCH projection (one +-1 per input coordinate, no
    scaling), Gray-code bucket index; documents AVERAGE + fill, queries DEFAULT_SUM without fill
    (the reference rejects fill for queries); seed 42 on both sides. Quirks: each setter returns a
    *copy*, so a chain ``c.set_a(..).set_b(..)`` silently drops every setter after the first (each is
    called on the config itself here); ``enable_fill_empty()`` takes no argument; there is no
    dimension setter (it is read from the input matrix, which must be float32).
  * ``TqdbMultiVector``: tqdb 0.9.1 ``tqdb.MultiVectorStore`` over ``Database.open(tmpdir, 384,
    bits=4, metric="cosine")`` (its documented recommendation for unit-norm tokens; other settings
    are Database defaults: fast_mode=True, rerank=False, seed 42). It is a Python layer: every token
    is a row of the 4-bit engine (metadata {"_mv_doc": doc id}) and a float32 copy sits in a
    ``_mv_tokens.npz`` sidecar, with a JSON doc -> token-ids map. ``search(q, top_k, oversample=4)``
    runs one exhaustive 4-bit engine search per query token for oversample*top_k token hits, takes
    the union of their docs, reloads the *whole* npz from disk, scores the candidates by exact
    MaxSim, then ``db.get`` per hit. At 4,000 docs that is ~0.45 s per query on one core: ~3/4 in
    the token searches (~15 ms each over all 95,843 codes), ~1/6 in the npz reload. Its public
    ``insert`` rewrites the npz and the JSON for every doc (quadratic: 57 s for 1,000 docs here,
    ~15 min projected for 4,000), so ``bulk=True`` (the default) writes the same state in one engine
    ``insert_batch`` (upsert, same metadata, 20-char token ids like insert's ``_mv_<16 hex>``) plus
    one write of each sidecar (through their private helpers; same search answers as ``insert``);
    ``bulk=False`` calls ``insert`` per doc. Both end with ``flush``. Bytes/doc = every file in its
    folder / n docs (4,000 docs: 46.0 kB = 38.7 kB npz (float32 + 80-byte string id per token),
    4.8 kB 4-bit codes, ~2.5 kB metadata/segments/JSON).
"""

from __future__ import annotations

# common first: it sets OPENBLAS_NUM_THREADS=1 before numpy loads
from common import DATA, Timer, _top_k_desc, pinned, recall_at_k

# isort: split
import argparse
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from flat_peers import Unsupported, _ids_array

CANDIDATES = (10, 20, 50, 100, 200)


# ----------------------------------------------------------------------------- data


def load_tokens(data_dir: Path | None = None) -> dict[str, Any]:
    """docs / queries: lists of float32 (n_i, 384) token matrices; gt_ids int64 (500, 100), gt_scores f32."""
    folder = Path(data_dir) if data_dir is not None else DATA / "wordnet_minilm_tokens"
    doc_vecs = np.concatenate([np.load(folder / f"doc_vecs_fp16.part{i}.npy") for i in (0, 1)]).astype(np.float32)
    query_vecs = np.load(folder / "query_vecs_fp16.npy").astype(np.float32)
    return {"docs": np.split(doc_vecs, np.load(folder / "doc_offsets.npy")[1:-1]),
            "queries": np.split(query_vecs, np.load(folder / "query_offsets.npy")[1:-1]),
            "gt_ids": np.load(folder / "gt_ids.npy").astype(np.int64),
            "gt_scores": np.load(folder / "gt_scores.npy").astype(np.float32)}


def pairwise_docs(docs: Sequence[np.ndarray], copies: int = 4, seed: int = 0) -> list[np.ndarray]:
    """A copies-times larger collection of real token sets: doc m*n + i = doc i's tokens + doc perm_m[i]'s.

    perm_m is a seeded random derangement (no doc paired with itself). Every original doc appears in
    2*copies pairs, so its best-matching queries face many near-ties (a pair scores at least as high
    as either half); a few pairs repeat across copies (same token set: exact ties, broken by id).
    """
    n, rng = len(docs), np.random.default_rng(seed)
    out = []
    for _ in range(copies):
        perm = rng.permutation(n)
        for i in np.flatnonzero(perm == np.arange(n)):  # swapping a fixed point away never makes a new one
            j = (i + 1) % n
            perm[i], perm[j] = perm[j], perm[i]
        out += [np.concatenate([docs[i], docs[p]]) for i, p in enumerate(perm)]
    return out


def _offsets(sets: Sequence[np.ndarray]) -> np.ndarray:
    """Row offsets (len(sets) + 1,) int64 of the token sets joined in order; empty sets are refused."""
    lengths = np.array([len(s) for s in sets], dtype=np.int64)
    if (lengths == 0).any():
        raise ValueError("every token set needs at least one token")
    return np.concatenate([[0], np.cumsum(lengths)])


def exact_chamfer_topk(docs: Sequence[np.ndarray], queries: Sequence[np.ndarray], k: int = 100,
                       block_tokens: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact Chamfer top-k (scores f32 (nq, k), ids int64 (nq, k)), best first, ties to the smaller id.

    float32 inner products and maxima, float64 sums over query tokens. Docs are scanned in blocks of
    about block_tokens tokens (whole docs), so the peak scratch is ~4 * all-query-tokens * block bytes.
    """
    q = np.ascontiguousarray(np.concatenate(queries), dtype=np.float32)
    q_off, d_off = _offsets(queries), _offsets(docs)
    scores = np.empty((len(queries), len(docs)), dtype=np.float64)
    start = 0
    while start < len(docs):
        stop = max(start + 1, int(np.searchsorted(d_off, d_off[start] + block_tokens, "right")) - 1)
        block = np.concatenate(docs[start:stop]).astype(np.float32, copy=False)
        maxima = np.maximum.reduceat(q @ block.T, d_off[start:stop] - d_off[start], axis=1)
        scores[:, start:stop] = np.add.reduceat(maxima, q_off[:-1], axis=0, dtype=np.float64)
        start = stop
    ids = _top_k_desc(scores, k)
    return np.take_along_axis(scores, ids, axis=1).astype(np.float32), ids


# ----------------------------------------------------------------------------- exact and two-stage peers


class BruteForceMaxSim:
    """Exact float32 MaxSim over one joined token matrix; also the exact reranker of the other peers."""

    bytes_note = "float32 tokens + an int64 offset per doc"

    def __init__(self, docs: Sequence[np.ndarray]) -> None:
        self.offsets = _offsets(docs)
        self.tokens = np.ascontiguousarray(np.concatenate(docs), dtype=np.float32)
        self.bytes_per_doc = (self.tokens.nbytes + 8 * len(docs)) / len(docs)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        """Top-k doc ids (int64, best first, ties to the smaller id) by exact Chamfer."""
        scores = np.maximum.reduceat(q @ self.tokens.T, self.offsets[:-1], axis=1).sum(0)
        return _top_k_desc(scores[None], k)[0]

    def rerank(self, q: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
        """The k best of the candidate doc ids by exact Chamfer (ties to the smaller id)."""
        lengths = self.offsets[candidates + 1] - self.offsets[candidates]
        local = np.cumsum(lengths) - lengths  # where each candidate starts in the gathered rows
        rows = np.arange(lengths.sum()) + np.repeat(self.offsets[candidates] - local, lengths)
        scores = np.maximum.reduceat(q @ self.tokens[rows].T, local, axis=1).sum(0)
        return candidates[np.lexsort((candidates, -scores))[:k]]


class _CandidatesThenRerank:
    """One float32 vector per doc; inner-product scan for N candidates, then exact Chamfer rerank."""

    bytes_note = "float32 doc vector + BruteForceMaxSim's float32 tokens and offset (for the rerank)"

    def __init__(self, docs: Sequence[np.ndarray], dim: int, encode_doc: Callable[[np.ndarray], np.ndarray],
                 encode_query: Callable[[np.ndarray], np.ndarray]) -> None:
        self.exact, self._encode_query = BruteForceMaxSim(docs), encode_query
        self.vectors = np.empty((len(docs), dim), dtype=np.float32)
        with pinned(1), Timer() as timer:
            for i, doc in enumerate(docs):
                self.vectors[i] = encode_doc(doc)
        self.encode_s_per_doc = timer.seconds / len(docs)
        self.bytes_per_doc = 4 * dim + self.exact.bytes_per_doc

    def search(self, q: np.ndarray, k: int, candidates: int) -> np.ndarray:
        """Encode the query, take the max(candidates, k) best doc vectors, rerank them exactly to k."""
        scores = self.vectors @ np.asarray(self._encode_query(q), dtype=np.float32)
        return self.exact.rerank(q, _top_k_desc(scores[None], max(candidates, k))[0], k)


def _unit_mean(tokens: np.ndarray) -> np.ndarray:
    """L2-normalised mean of a token set."""
    mean = tokens.mean(axis=0)
    return mean / np.linalg.norm(mean)


class MeanPooled(_CandidatesThenRerank):
    """Single-vector baseline: unit mean-pooled doc tokens, mean-pooled query."""

    def __init__(self, docs: Sequence[np.ndarray]) -> None:
        super().__init__(docs, docs[0].shape[1], _unit_mean, lambda q: q.mean(axis=0))


class FastembedMuvera(_CandidatesThenRerank):
    """fastembed 0.9.1 MUVERA FDEs (paper-style dense projection) with brute-force FDE search."""

    def __init__(self, docs: Sequence[np.ndarray], k_sim: int = 5, dim_proj: int = 16, r_reps: int = 20,
                 seed: int = 42) -> None:
        try:
            from fastembed.postprocess import Muvera
        except ImportError as exc:
            raise Unsupported(f"fastembed is not installed (pip install fastembed==0.9.1): {exc}") from exc
        muvera = Muvera(docs[0].shape[1], k_sim=k_sim, dim_proj=dim_proj, r_reps=r_reps, random_seed=seed)
        self.params = {"k_sim": k_sim, "dim_proj": dim_proj, "r_reps": r_reps, "random_seed": seed,
                       "d_fde": muvera.embedding_size}
        super().__init__(docs, muvera.embedding_size, muvera.process_document, muvera.process_query)


class MuvfdeMuvera(_CandidatesThenRerank):
    """muvfde 0.0.9 (C++ reference) MUVERA FDEs, AMS sketch, with brute-force FDE search."""

    def __init__(self, docs: Sequence[np.ndarray], k_sim: int = 5, dim_proj: int = 16, r_reps: int = 20,
                 seed: int = 42) -> None:
        try:
            import muvfde
        except ImportError as exc:
            raise Unsupported(f"muvfde is not installed (pip install muvfde==0.0.9): {exc}") from exc
        doc_config, query_config = (_muvfde_config(muvfde, k_sim, dim_proj, r_reps, seed, kind)
                                    for kind in (muvfde.encoding_type.AVERAGE, muvfde.encoding_type.DEFAULT_SUM))
        self.params = {"k_sim": k_sim, "dim_proj": dim_proj, "r_reps": r_reps, "seed": seed,
                       "projection": "AMS_SKETCH", "d_fde": r_reps * 2**k_sim * dim_proj}
        super().__init__(docs, self.params["d_fde"],
                         lambda d: muvfde.generate_fixed_dimensional_encoding(d, doc_config),
                         lambda q: muvfde.generate_fixed_dimensional_encoding(q, query_config))


def _muvfde_config(muvfde: Any, k_sim: int, dim_proj: int, r_reps: int, seed: int, kind: Any) -> Any:
    """A muvfde config, one setter call per statement (setters return copies: chains lose settings)."""
    config = muvfde.fixed_dimensional_encoding_config()
    config.set_num_repetitions(r_reps)
    config.set_num_simhash_projections(k_sim)
    config.set_seed(seed)
    config.set_encoding_type(kind)
    config.set_projection_type(muvfde.projection_type.AMS_SKETCH)
    config.set_projection_dimension(dim_proj)
    if kind == muvfde.encoding_type.AVERAGE:
        config.enable_fill_empty()
    return config


# ----------------------------------------------------------------------------- tqdb


class TqdbMultiVector:
    """tqdb 0.9.1 MultiVectorStore (4-bit token codes + float32 sidecar) in a temporary folder."""

    bytes_note = "every file in the store's folder / n docs (4-bit codes, metadata, float32 npz, JSON map)"

    def __init__(self, docs: Sequence[np.ndarray], bits: int = 4, bulk: bool = True) -> None:
        try:
            import tqdb
        except ImportError as exc:
            raise Unsupported(f"tqdb is not installed: {exc}") from exc
        self._folder = tempfile.TemporaryDirectory(prefix="tqdb-mv-")
        path = self._folder.name
        with pinned(1), Timer() as timer:
            self.db = tqdb.Database.open(path, docs[0].shape[1], bits=bits, metric="cosine")
            self.store = tqdb.MultiVectorStore(self.db, directory=path)
            if bulk:
                _bulk_insert(self.db, self.store, docs)
            else:
                self.store.insert_many([(str(i), doc, None, None) for i, doc in enumerate(docs)])
            self.db.flush()
        self.build_s = timer.seconds
        self.files = {name: os.path.getsize(os.path.join(path, name)) for name in sorted(os.listdir(path))}
        self.bytes_per_doc = sum(self.files.values()) / len(docs)
        self.params = {"bits": bits, "metric": "cosine", "bulk": bulk, "oversample_default": 4,
                       "live_codes_bytes": self.db.stats()["live_codes_bytes"]}

    def search(self, q: np.ndarray, k: int, oversample: int = 4) -> np.ndarray:
        """MultiVectorStore.search (token-level 4-bit candidates, exact MaxSim), ids as int64 (-1 padded)."""
        hits = self.store.search(q, top_k=k, oversample=oversample)
        return _ids_array([[int(hit["doc_id"]) for hit in hits]], k)[0]

    def close(self) -> None:
        """Close the database and delete its folder."""
        self.db.close()
        self._folder.cleanup()


def _bulk_insert(db: Any, store: Any, docs: Sequence[np.ndarray]) -> None:
    """What MultiVectorStore.insert does per doc, for all docs at once (one engine call, one sidecar write)."""
    offsets = _offsets(docs)
    tokens = np.ascontiguousarray(np.concatenate(docs), dtype=np.float32)
    token_ids = [f"_mv_{j:016x}" for j in range(len(tokens))]
    doc_of_token = np.repeat(np.arange(len(docs)), np.diff(offsets))
    db.insert_batch(token_ids, tokens, [{"_mv_doc": str(i)} for i in doc_of_token], None, "upsert")
    store._raw.add(token_ids, tokens)
    store._index._mapping = {str(i): token_ids[offsets[i]:offsets[i + 1]] for i in range(len(docs))}
    store._index._save()


# ----------------------------------------------------------------------------- self-check


def run_queries(search: Callable[[np.ndarray], np.ndarray], queries: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """All queries one at a time on one core: ids (nq, k) and ms/query (after a one-query warm-up)."""
    with pinned(1):
        search(queries[0])
        with Timer() as timer:
            ids = np.stack([search(q) for q in queries])
    return ids, 1e3 * timer.seconds / len(queries)


def main() -> None:
    """Run every peer on the real set (or its first 1,000 docs / 100 queries) and print recall@10 and costs."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 docs / 100 queries, ground truth recomputed")
    args = parser.parse_args()
    data, k = load_tokens(), 10
    docs, queries, gt = data["docs"], data["queries"], data["gt_ids"]
    if args.quick:
        docs, queries = docs[:1000], queries[:100]
        gt = exact_chamfer_topk(docs, queries)[1]
    else:
        with Timer() as timer:
            check = exact_chamfer_topk(docs, queries)[1]
        print(f"exact_chamfer_topk vs shipped gt: recall@10 {recall_at_k(check, gt, 10):.4f}, "
              f"recall@100 {recall_at_k(check, gt, 100):.4f} ({timer.seconds:.1f} s)")
    print(f"{len(docs)} docs, {sum(map(len, docs))} tokens, {len(queries)} queries, k={k}")

    exact = BruteForceMaxSim(docs)
    ids, ms = run_queries(partial(exact.search, k=k), queries)
    print(f"brute-force MaxSim      recall@10 {recall_at_k(ids, gt, k):.4f}  {ms:7.2f} ms/q  "
          f"{exact.bytes_per_doc:9.0f} B/doc")
    for name, make in (("mean-pooled", MeanPooled), ("fastembed Muvera", FastembedMuvera),
                       ("muvfde Muvera", MuvfdeMuvera)):
        try:
            peer = make(docs)
        except Unsupported as exc:
            print(f"{name}: unsupported ({exc})")
            continue
        print(f"{name}: {peer.bytes_per_doc:.0f} B/doc, encode {1e3 * peer.encode_s_per_doc:.3f} ms/doc")
        for n in CANDIDATES:
            ids, ms = run_queries(partial(peer.search, k=k, candidates=n), queries)
            print(f"  candidates {n:4d}       recall@10 {recall_at_k(ids, gt, k):.4f}  {ms:7.2f} ms/q")
    try:
        store = TqdbMultiVector(docs)
    except Unsupported as exc:
        print(f"tqdb: unsupported ({exc})")
        return
    print(f"tqdb MultiVectorStore: {store.bytes_per_doc:.0f} B/doc, build {store.build_s:.1f} s (bulk), "
          f"codes {store.params['live_codes_bytes'] / len(docs):.0f} B/doc")
    for oversample in (1, 4):
        ids, ms = run_queries(partial(store.search, k=k, oversample=oversample), queries)
        print(f"  oversample {oversample:2d}        recall@10 {recall_at_k(ids, gt, k):.4f}  {ms:7.2f} ms/q")
    store.close()


if __name__ == "__main__":
    main()
