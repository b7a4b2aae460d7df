"""Metadata filters (`where`) evaluated on payload indexes into a boolean mask over internal ids.

Grammar (Mongo/Chroma-like): {"field": value} is equality; {"field": {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|
"$lte": v}}, {"field": {"$in"|"$nin": [v, ...]}}; {"$and": [f, ...]}, {"$or": [f, ...]}, {"$not": f}.
Several keys in one dict, or several operators on one field, must all hold (implicit AND); {} matches all.

Semantics, chosen to be plain set algebra over the live points:
- Only str, int, float and bool values are indexed. A field that is absent, None, a list or a dict
  matches no $eq/$in/range clause. bool is its own type (True does not equal 1); int and float
  compare numerically. Ranges take numbers only and match numeric values only.
- $ne, $nin and $not are complements: {"f": {"$ne": v}} matches every point that {"f": v} does not,
  including points without "f" (MongoDB's choice).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, InvalidTypeError

Key = tuple[str, Any]
_RANGES = {"$gt": ("right", None), "$gte": ("left", None), "$lt": (None, "left"), "$lte": (None, "right")}


def value_key(value: object) -> Key | None:
    """The indexed form of a metadata value (type tag + value), or None when it is not filterable."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


class PayloadIndex:
    """Per field: value -> set of internal ids (equality, $in); id arrays and sorted numeric arrays are
    built lazily from those sets and cached until the field or value changes."""

    def __init__(self) -> None:
        self._values: dict[str, dict[Key, set[int]]] = {}
        self._sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # field -> (values asc, ids), a cache
        self._arrays: dict[tuple[str, Key], np.ndarray] = {}  # (field, value) -> its ids as int64, a cache

    def add(self, iid: int, metadata: dict[str, Any]) -> None:
        """Index one point's metadata."""
        for field, value in metadata.items():
            key = value_key(value)
            if key is not None:
                self._values.setdefault(field, {}).setdefault(key, set()).add(iid)
                self._forget(field, key)

    def remove(self, iid: int, metadata: dict[str, Any]) -> None:
        """Forget one point's metadata (as previously added)."""
        for field, value in metadata.items():
            key = value_key(value)
            if key is None:
                continue
            by_value = self._values[field]
            by_value[key].discard(iid)
            if not by_value[key]:
                del by_value[key]
            if not by_value:
                del self._values[field]
            self._forget(field, key)

    def _forget(self, field: str, key: Key) -> None:
        """Drop the caches a change of (field, value) makes stale."""
        self._sorted.pop(field, None)
        self._arrays.pop((field, key), None)

    def evaluate(self, where: object, live: np.ndarray) -> np.ndarray:
        """The mask (as long as `live`) of live ids matching `where`; Invalid{Argument,Type}Error if malformed."""
        if not isinstance(where, dict):
            raise InvalidTypeError(f"a filter must be a dict, got {type(where).__name__}")
        mask = live.copy()
        for key, cond in where.items():
            if not isinstance(key, str):
                raise InvalidTypeError(f"filter keys must be strings, got {key!r}")
            mask &= self._clause(key, cond, live)
        return mask

    def _clause(self, key: str, cond: object, live: np.ndarray) -> np.ndarray:
        if key in ("$and", "$or"):
            if not isinstance(cond, (list, tuple)) or not cond:
                raise InvalidArgumentError(f"{key} takes a non-empty list of filters, got {cond!r}")
            parts = [self.evaluate(c, live) for c in cond]
            return np.logical_and.reduce(parts) if key == "$and" else np.logical_or.reduce(parts)
        if key == "$not":
            return live & ~self.evaluate(cond, live)
        if key.startswith("$"):
            raise InvalidArgumentError(f"unknown filter operator {key!r}")
        if not isinstance(cond, dict):
            cond = {"$eq": cond}
        if not cond:
            raise InvalidArgumentError(f"field {key!r}: empty operator dict")
        mask = live.copy()
        for op, operand in cond.items():
            mask &= self._field(key, op, operand, live)
        return mask

    def _field(self, field: str, op: object, operand: object, live: np.ndarray) -> np.ndarray:
        if op in ("$eq", "$ne"):
            hit = self._equal(field, [_scalar(operand, field, op)], len(live))
        elif op in ("$in", "$nin"):
            if not isinstance(operand, (list, tuple)):
                raise InvalidTypeError(f"field {field!r}: {op} takes a list, got {type(operand).__name__}")
            hit = self._equal(field, [_scalar(v, field, op) for v in operand], len(live))
        elif op in _RANGES:
            hit = self._range(field, op, operand, len(live))
        else:
            raise InvalidArgumentError(f"unknown filter operator {op!r} (on field {field!r})")
        return live & ~hit if op in ("$ne", "$nin") else hit & live

    def _equal(self, field: str, keys: list[Key], size: int) -> np.ndarray:
        mask = np.zeros(size, dtype=bool)
        for key in keys:
            mask[self._ids(field, key)] = True
        return mask

    def _ids(self, field: str, key: Key) -> np.ndarray:
        """The ids whose `field` equals the value `key`, as an int64 array (cached: a set of 100k ids takes
        milliseconds to convert, far longer than the search it filters)."""
        ids = self._arrays.get((field, key))
        if ids is None:
            members = self._values.get(field, {}).get(key, ())
            ids = self._arrays[(field, key)] = np.fromiter(members, dtype=np.int64, count=len(members))
        return ids

    def _range(self, field: str, op: str, operand: object, size: int) -> np.ndarray:
        if isinstance(operand, bool) or not isinstance(operand, (int, float)) or math.isnan(operand):
            raise InvalidTypeError(f"field {field!r}: {op} takes a number, got {operand!r}")
        values, ids = self._numeric(field)
        low_side, high_side = _RANGES[op]
        start = np.searchsorted(values, operand, side=low_side) if low_side else 0
        stop = np.searchsorted(values, operand, side=high_side) if high_side else len(values)
        mask = np.zeros(size, dtype=bool)
        mask[ids[start:stop]] = True
        return mask

    def _numeric(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """The field's numeric values in ascending order with their ids (rebuilt after the field changes)."""
        if field not in self._sorted:
            groups = [(key[1], ids) for key, ids in self._values.get(field, {}).items() if key[0] == "n"]
            values = np.array([v for v, ids in groups for _ in ids], dtype=np.float64)
            ids = np.array([i for _, ids in groups for i in ids], dtype=np.int64)
            order = np.argsort(values, kind="stable")
            self._sorted[field] = (values[order], ids[order])
        return self._sorted[field]


def _scalar(value: object, field: str, op: str) -> Key:
    key = value_key(value)
    if key is None:
        raise InvalidTypeError(f"field {field!r}: {op} compares with str, int, float or bool values, got {value!r}")
    return key
