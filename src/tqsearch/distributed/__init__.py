"""Sharded, replicated collections on Ray: the `Collection` API over a cluster (needs the `ray` extra).

    open(name, root=PATH, dim=..., shards=N, replicas=R, ...) -> DistributedCollection
    build(collection, FILE)   every shard ingests its partition of a .npy/.jsonl/.parquet file at once

    collection.py  DistributedCollection: routing writes, scatter-gather reads, failover, repair
    _shard.py      ShardReplica, the Ray actor owning one replica's Collection directory
    _merge.py      merging the shards' candidates into a single collection's answer
    _routing.py    id -> shard (a stable hash)
    _settings.py   <root>/<name>/distributed.json
    _build.py      parallel bulk build from files, each shard ingesting its partition
    _registry.py   DistributedRegistry, the server's registry for `tqsearch serve --ray`

What replicas give (docs/scaling.md): a write returns once every live replica of its shard has fsynced it
to its log, so it survives the death of any replica process, and of any node as long as one replica of
the shard was elsewhere. With replicas=1, a shard's data is on one node's disk: a killed actor comes back
(Ray restarts it and the log replays), but a lost disk is lost data unless `root` is shared storage.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from ..collection import _UNSET
from ..errors import InvalidArgumentError
from ._build import build
from ._settings import load_or_create
from .collection import DistributedCollection, ShardUnavailableError

__all__ = ["DistributedCollection", "ShardUnavailableError", "build", "connect", "open"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # as the server's collection names


def open(name: str, root: str | os.PathLike, dim: int | None = None, shards: int | None = None,  # noqa: A001
         replicas: int | None = None, bits: int | None = None, metric: str | None = None, index: str | None = None,
         *, vectors: str | None = _UNSET, address: str | None = None, **index_options: Any) -> DistributedCollection:
    """Open sharded collection `name` under `root`, creating it (dim required) when it does not exist.

    New collections default to shards=1, replicas=1 and a Collection's defaults (bits=4, cosine, hnsw,
    float32 vectors); on reopen, any setting given must match the stored one (InvalidArgumentError, as a
    Collection says it). Connects to Ray as `connect(address)` does.
    """
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidArgumentError(f"collection name must match {NAME.pattern}, got {name!r}")
    given = {"dim": dim, "bits": bits, "metric": metric, "index": index, "vectors": vectors,
             "index_options": index_options, "shards": shards, "replicas": replicas}
    home = Path(root).absolute() / name
    settings, existed = load_or_create(home, given)
    connect(address)
    return DistributedCollection(name, home, settings, existed)


def connect(address: str | None = None) -> None:
    """Join Ray unless this process already has: `address` ("auto", "HOST:PORT"; default $RAY_ADDRESS), else
    a new local Ray whose processes listen on loopback only, without the dashboard.

    Loopback only needs RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 when Ray is first imported (Ray reads it then and
    otherwise binds its GCS to the machine's network address): it is set here when Ray is not imported yet.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if not address and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"tqsearch.distributed needs Ray: pip install 'tqsearch[ray]' ({e})") from None
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="warning")
    else:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level="warning")
