"""Which shard holds a point: a stable hash of its string id (the hash the collection files store), mod shards."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._format import hash64

__all__ = ["partition", "shard_of"]


def shard_of(ids: Sequence[str], shards: int) -> np.ndarray:
    """The shard of each id, (n,) int64: BLAKE2b-64 of the id's UTF-8 bytes mod `shards`, the same on every
    machine and Python version (unlike `hash()`), so a reopened collection finds its points again."""
    return np.array([hash64(i) % shards for i in ids], dtype=np.int64)


def partition(ids: Sequence[str], shards: int) -> list[np.ndarray]:
    """For each shard, the positions in `ids` of the points it holds (in the order given)."""
    owner = shard_of(ids, shards)
    return [np.flatnonzero(owner == s) for s in range(shards)]
