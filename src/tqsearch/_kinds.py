"""The one registry of index kinds: name -> (module, class); the class carries its file magic.

Adding a kind of index means one new module plus one line in KINDS. Collections, MultiVectorIndex,
`tqsearch.load` and the server look kinds up here instead of naming classes.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ._validate import as_choice
from .errors import FileFormatError

KINDS: dict[str, tuple[str, str]] = {
    "flat": ("tqsearch.flat", "FlatIndex"),
    "hnsw": ("tqsearch.hnsw", "HNSWIndex"),
    "multivector": ("tqsearch.multivector", "MultiVectorIndex"),
}
MAGIC_BYTES = 8


def index_class(name: str) -> type:
    """The class registered as kind `name` (ValueError naming the known kinds otherwise)."""
    module, cls = KINDS[as_choice(name, "index", tuple(KINDS))]
    return getattr(importlib.import_module(module), cls)


def vector_kinds() -> tuple[str, ...]:
    """The kinds that index single vectors (what a collection or an FDE index can be built on)."""
    from ._index import CodeIndex

    return tuple(name for name in KINDS if issubclass(index_class(name), CodeIndex))


def load(path: str | Path, mmap: bool = True) -> Any:
    """Load an index written by `save`: the file's magic says which kind."""
    with Path(path).open("rb") as f:
        magic = f.read(MAGIC_BYTES)
    classes = [index_class(name) for name in KINDS]
    for cls in classes:
        if cls._MAGIC == magic:
            return cls.load(path, mmap=mmap)
    known = " / ".join(cls._MAGIC.decode() for cls in classes)
    raise FileFormatError(f"{path}: not a {known} file (it starts with {magic!r})")
