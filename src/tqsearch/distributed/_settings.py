"""The settings file of a sharded collection: `<root>/<name>/distributed.json`, versioned, written atomically.

It holds the shard and replica counts and the settings every shard's `Collection` is created with, so
reopening by name and root needs no arguments; arguments given on reopen must match, as for a Collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import collection as _collection
from .._validate import as_int
from ..errors import FileFormatError, InvalidArgumentError

__all__ = ["SETTINGS", "load_or_create"]

SETTINGS, FORMAT, VERSION = "distributed.json", "tqsearch-distributed", 1


def load_or_create(home: Path, given: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The settings in `home` (checked against those given), or new ones written there; and whether they existed.

    given: dim, bits, metric, index, vectors, index_options (as `open_collection` takes them), shards, replicas.
    """
    path = home / SETTINGS
    if path.exists():
        settings = _read(path)
        _collection._check_same(settings["shard"], given, home)
        for name in ("shards", "replicas"):
            if given[name] is not None and given[name] != settings[name]:
                raise InvalidArgumentError(f"{home}: {name}={given[name]!r} does not match the collection's "
                                           f"{name}={settings[name]!r} (omit it to use the stored value)")
        return settings, True
    if given["dim"] is None:
        raise InvalidArgumentError(f"{home} holds no collection: pass dim to create one")
    if given["index_options"].get("adaptive"):  # each shard's first batch would fit its own plan: scores apart
        raise InvalidArgumentError("adaptive=True is per index; the shards of a sharded collection keep the "
                                   "uniform code so their scores stay comparable")
    counts = {name: _collection._callers_input()(as_int)(1 if given[name] is None else given[name], name)
              for name in ("shards", "replicas")}
    settings = {"format": FORMAT, "version": VERSION, **counts, "shard": _collection.new_settings(given)}
    home.mkdir(parents=True, exist_ok=True)
    _collection._write_json(path, settings)
    return settings, False


def _read(path: Path) -> dict[str, Any]:
    settings = _collection._read_json(path)
    if settings.get("format") != FORMAT or settings.get("version") != VERSION:
        raise FileFormatError(f"{path}: not a version-{VERSION} sharded tqsearch collection")
    ok = all(isinstance(settings.get(n), int) and settings[n] >= 1 for n in ("shards", "replicas"))
    if not ok or not isinstance(settings.get("shard"), dict):
        raise FileFormatError(f"{path}: malformed settings {settings!r}")
    return settings
