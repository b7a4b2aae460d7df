"""The bundled real corpus: 10,000 WordNet glosses embedded with all-MiniLM-L6-v2 (384-d, unit norm).

A slice of ../shared/data/wordnet_minilm cut by bench/make_demo_data.py: base vectors (stored float16),
200 gloss queries, their exact top-100 inner-product neighbours, and the texts under the WordNet licence
(data/wordnet_minilm_10k/WORDNET_LICENSE.txt).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["Corpus", "load_demo_corpus"]


@dataclass(frozen=True)
class Corpus:
    """Vectors, queries, exact ground truth and texts of a corpus on disk."""

    path: Path

    @cached_property
    def vectors(self) -> np.ndarray:
        """(n, 384) float32 base vectors."""
        return np.load(self.path / "base_fp16.npy").astype(np.float32)

    @cached_property
    def queries(self) -> np.ndarray:
        """(nq, 384) float32 query vectors."""
        return np.load(self.path / "queries.npy")

    @cached_property
    def gt_ids(self) -> np.ndarray:
        """(nq, 100) exact top-100 base ids by inner product, best first."""
        return np.load(self.path / "gt_ids.npy").astype(np.int64)

    @cached_property
    def texts(self) -> list[str]:
        """Text of each base vector."""
        return _texts(self.path / "base.jsonl")

    @cached_property
    def query_texts(self) -> list[str]:
        """Text of each query."""
        return _texts(self.path / "queries.jsonl")

    @cached_property
    def synsets(self) -> list[str]:
        """WordNet synset of each base vector, "offset-pos" (pos: n, v, a, s or r)."""
        return _texts(self.path / "base.jsonl", "synset")


def _texts(path: Path, field: str = "text") -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)[field] for line in f]


def load_demo_corpus() -> Corpus:
    """The corpus shipped inside the package (no network)."""
    return Corpus(Path(str(resources.files("tqsearch") / "data" / "wordnet_minilm_10k")))
