"""Parallel bulk build: every replica of every shard reads the file itself and upserts its own partition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..ingest import BATCH, _progress, read_batches

__all__ = ["build"]


def build(collection: Any, path: str | Path, batch: int = BATCH, progress: bool = True) -> int:
    """Upsert every row of a .npy, .jsonl or .parquet file (see tqsearch.ingest) into a DistributedCollection,
    all shards at once; returns the rows read. The file must be readable at the same path on every node
    (one machine, or shared storage). The bar (tqdm, when installed) follows the slowest shard.
    """
    import ray

    path = Path(path).absolute()
    batches, total = read_batches(path, batch)
    first = next(batches, None)  # check the width before any shard writes
    if first is not None and len(first["vectors"][0]) != collection.dim:
        raise InvalidArgumentError(f"{path}: rows have {len(first['vectors'][0])} values, the collection's dim "
                                   f"is {collection.dim}")
    if first is not None:
        collection.center_from(np.asarray(first["vectors"], dtype=np.float32))
    streams = {actor.ingest.options(num_returns="streaming").remote(str(path), s, collection.shards, batch): (s, r)
               for s, row in enumerate(collection.shard_handles()) for r, actor in enumerate(row)}
    read = dict.fromkeys(streams.values(), 0)
    bar = _progress(total, progress)
    try:
        while streams:
            ready, _ = ray.wait(list(streams), num_returns=1)
            for stream in ready:
                try:
                    read[streams[stream]] += collection._get(next(stream))
                except StopIteration:
                    del streams[stream]
            if bar is not None:
                bar.update(min(read.values()) - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return min(read.values())
