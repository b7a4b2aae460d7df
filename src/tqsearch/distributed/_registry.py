"""The server's registry of sharded collections (`tqsearch serve --ray`): the routes' CollectionRegistry,
each collection a DistributedCollection under the root directory."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ..errors import ConflictError
from ..server.registry import Registry
from . import NAME, connect
from . import open as open_distributed
from ._settings import SETTINGS
from .collection import DistributedCollection

__all__ = ["DistributedRegistry"]


class DistributedRegistry(Registry):
    """The sharded collections under `root` (one subdirectory each), on the Ray cluster at `address`.

    New collections get `shards` and `replicas` unless their options name them. Listing, lookup, drop
    (which deletes the directory on this machine: one-node or shared roots) and close are Registry's.
    """

    def __init__(self, root: str | os.PathLike, address: str | None = None, shards: int = 1, replicas: int = 1) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards, self.replicas = shards, replicas
        connect(address)
        self._lock = threading.Lock()
        self._open: dict[str, Any] = {
            entry.name: open_distributed(entry.name, self.root)
            for entry in sorted(self.root.iterdir()) if (entry / SETTINGS).exists() and NAME.match(entry.name)}

    def create(self, name: str, dim: int, bits: int, metric: str, index: str, vectors: str | None,
               options: dict[str, Any]) -> DistributedCollection:
        """A new sharded collection; options "shards" and "replicas" override the registry's defaults."""
        with self._lock:
            if name in self._open:
                raise ConflictError(f"collection {name!r} already exists")
            options = dict(options)
            shards, replicas = options.pop("shards", self.shards), options.pop("replicas", self.replicas)
            self._open[name] = open_distributed(name, self.root, dim, shards, replicas, bits, metric, index,
                                                vectors=vectors, **options)
            return self._open[name]
