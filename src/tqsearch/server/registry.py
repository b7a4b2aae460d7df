"""The collections a server serves: the interface its routes use, and the registry of a directory's collections.

Routes see only `CollectionRegistry` and `ServedCollection`, so a registry of sharded or remote collections
with the same methods can be served unchanged. No web framework here: the errors are tqsearch's own.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..collection import SETTINGS, Collection, open_collection
from ..errors import ConflictError, NotFoundError

__all__ = ["NAME", "CollectionRegistry", "Registry", "ServedCollection"]

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_DROPPED = ".dropped-"


class ServedCollection(Protocol):
    """What the routes ask of a collection: `Collection`'s settings, reads and writes."""

    dim: int
    settings: dict[str, Any]

    def count(self) -> int: ...

    def upsert(self, ids: Sequence[str], vectors: object, metadatas: Sequence[dict] | None = None,
               documents: Sequence[str | None] | None = None) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def get(self, ids: Sequence[str] | None = None, where: dict | None = None,
            include: Sequence[str] = ..., limit: int | None = None, offset: int = 0) -> dict[str, Any]: ...

    def query(self, queries: object, k: int, where: dict | None = None, include: Sequence[str] = ...,
              rescore: int | None = None, min_relevance: float | None = None) -> list[dict[str, Any]]: ...


class CollectionRegistry(Protocol):
    """Named collections: NotFoundError for a name not served, ConflictError for one taken."""

    def items(self) -> list[tuple[str, ServedCollection]]:
        """(name, collection) pairs, by name."""

    def get(self, name: str) -> ServedCollection:
        """The collection called `name`."""

    def create(self, name: str, dim: int, bits: int, metric: str, index: str, vectors: str | None,
               options: dict[str, Any]) -> ServedCollection:
        """A new, empty collection called `name`."""

    def drop(self, name: str) -> None:
        """Close and delete the collection called `name`."""

    def close(self) -> None:
        """Release every collection (at shutdown)."""


class Registry:
    """The collections under one root directory, a subdirectory each (a `CollectionRegistry`); thread-safe."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._open: dict[str, Collection] = {}
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(_DROPPED):  # a drop interrupted after its rename
                shutil.rmtree(entry)
            elif (entry / SETTINGS).exists() and re.match(NAME, entry.name):
                self._open[entry.name] = open_collection(entry)

    def items(self) -> list[tuple[str, ServedCollection]]:
        """(name, collection) pairs, by name."""
        with self._lock:
            return sorted(self._open.items())

    def get(self, name: str) -> Collection:
        """The collection called `name`; NotFoundError when there is none."""
        try:
            return self._open[name]
        except KeyError:
            raise NotFoundError(f"no collection named {name!r}") from None

    def create(self, name: str, dim: int, bits: int, metric: str, index: str, vectors: str | None,
               options: dict[str, Any]) -> Collection:
        """A new collection in subdirectory `name`; ConflictError when the name is taken."""
        with self._lock:
            if name in self._open:
                raise ConflictError(f"collection {name!r} already exists")
            path = self.root / name
            if path.exists():  # a creation that crashed before writing its settings
                shutil.rmtree(path)
            self._open[name] = open_collection(path, dim, bits, metric, index, vectors=vectors, **options)
            return self._open[name]

    def drop(self, name: str) -> None:
        """Close and delete a collection: renamed first, so a crash never leaves half a collection."""
        with self._lock:
            collection = self.get(name)
            del self._open[name]
            collection.close()
            graveyard = self.root / f"{_DROPPED}{name}-{uuid.uuid4().hex}"
            os.replace(self.root / name, graveyard)
            shutil.rmtree(graveyard)

    def close(self) -> None:
        """Fold each log into a snapshot (fast restart) and release every collection."""
        with self._lock:
            for collection in self._open.values():
                collection.close(compact=True)
            self._open.clear()
