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

from ._format import hash64
from ._index import grow
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
    """Compact columns over internal ids: per field a type tag (uint8) and a value (uint64: a number's
    float64 bits, a bool, or a string's 64-bit BLAKE2b hash), 9 bytes per id and field. Equality id
    arrays and sorted numeric arrays are built from the columns on first use and cached until that field
    (or value) changes.

    Strings compare by hash (a false match needs a 64-bit collision, ~1e-19 per pair of values); numbers
    compare as float64 (integers beyond 2**53 round).
    """

    def __init__(self) -> None:
        self._fields: dict[str, int] = {}  # name -> column
        self._tags: list[np.ndarray] = []  # per column: uint8 tag per id (0: absent or not filterable)
        self._vals: list[np.ndarray] = []  # per column: uint64 value per id
        self._sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # field -> (values asc, ids), a cache
        self._arrays: dict[tuple[str, int, int], np.ndarray] = {}  # (field, tag, value) -> ids, a cache

    def nbytes(self) -> int:
        """Bytes held: the columns at capacity and the caches."""
        columns = sum(t.nbytes + v.nbytes for t, v in zip(self._tags, self._vals))
        caches = sum(v.nbytes + i.nbytes for v, i in self._sorted.values()) + sum(a.nbytes for a in self._arrays.values())
        return columns + caches

    def set(self, iid: int, metadata: dict[str, Any]) -> None:
        """Index one point's metadata, replacing what the id held."""
        self.clear(iid)
        for field, value in metadata.items():
            key = value_key(value)
            if key is not None:
                col = self._column(field, iid + 1)
                tag, val = _encode(key)
                self._tags[col][iid], self._vals[col][iid] = tag, val
                self._forget(field, tag, val)

    def clear(self, iid: int) -> None:
        """Forget one point's metadata."""
        for field, col in self._fields.items():
            tags = self._tags[col]
            if iid < len(tags) and tags[iid]:
                self._forget(field, int(tags[iid]), int(self._vals[col][iid]))
                tags[iid] = 0

    def arrays(self, size: int) -> tuple[list[str], dict[str, np.ndarray]]:
        """The columns for ids below `size`, as (field names, sections) for a snapshot file."""
        sections = {}
        for name, col in self._fields.items():
            sections[f"field.{col}.tag"] = grow(self._tags[col], size, exact=True)[:size]
            sections[f"field.{col}.value"] = grow(self._vals[col], size, exact=True)[:size]
        return list(self._fields), sections

    @classmethod
    def from_arrays(cls, names: list[str], sections: dict[str, np.ndarray], size: int) -> PayloadIndex:
        """The index `arrays` described, its columns copied into writable memory; ValueError if inconsistent."""
        index = cls()
        for col, name in enumerate(names):
            tags, vals = np.asarray(sections[f"field.{col}.tag"]), np.asarray(sections[f"field.{col}.value"])
            if tags.shape != (size,) or vals.shape != (size,) or tags.dtype != np.uint8 or vals.dtype != np.uint64:
                raise ValueError(f"payload column {name!r} does not cover {size} ids")
            index._fields[str(name)] = col
            index._tags.append(tags.copy())
            index._vals.append(vals.copy())
        return index

    def _column(self, field: str, size: int) -> int:
        """The column of `field` (created empty), with room for ids below `size` (grown as `grow` does)."""
        col = self._fields.get(field)
        if col is None:
            col = self._fields[field] = len(self._tags)
            self._tags.append(np.zeros(0, dtype=np.uint8))
            self._vals.append(np.zeros(0, dtype=np.uint64))
        self._tags[col], self._vals[col] = grow(self._tags[col], size), grow(self._vals[col], size)
        return col

    def _forget(self, field: str, tag: int, val: int) -> None:
        """Drop the caches a change of (field, value) makes stale."""
        self._sorted.pop(field, None)
        self._arrays.pop((field, tag, val), None)

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
        ranges = {op: operand for op, operand in cond.items() if op in _RANGES}
        for op, operand in cond.items():
            if op not in _RANGES:
                mask &= self._field(key, op, operand, live)
        if ranges:  # one interval of the sorted values: {"$gte": a, "$lt": b} marks only the ids between
            mask &= self._range(key, ranges, len(live))
        return mask

    def _field(self, field: str, op: object, operand: object, live: np.ndarray) -> np.ndarray:
        if op in ("$eq", "$ne"):
            hit = self._equal(field, [_scalar(operand, field, op)], len(live))
        elif op in ("$in", "$nin"):
            if not isinstance(operand, (list, tuple)):
                raise InvalidTypeError(f"field {field!r}: {op} takes a list, got {type(operand).__name__}")
            hit = self._equal(field, [_scalar(v, field, op) for v in operand], len(live))
        else:
            raise InvalidArgumentError(f"unknown filter operator {op!r} (on field {field!r})")
        return live & ~hit if op in ("$ne", "$nin") else hit & live

    def _equal(self, field: str, keys: list[Key], size: int) -> np.ndarray:
        mask = np.zeros(size, dtype=bool)
        for key in keys:
            mask[self._ids(field, key)] = True
        return mask

    def _ids(self, field: str, key: Key) -> np.ndarray:
        """The ids whose `field` equals the value `key`, as an int64 array (cached until the value changes)."""
        tag, val = _encode(key)
        ids = self._arrays.get((field, tag, val))
        if ids is None:
            col = self._fields.get(field)
            ids = np.empty(0, dtype=np.int64) if col is None else np.flatnonzero(
                (self._tags[col] == tag) & (self._vals[col] == np.uint64(val)))
            self._arrays[(field, tag, val)] = ids
        return ids

    def _range(self, field: str, bounds: dict[str, object], size: int) -> np.ndarray:
        """The mask of ids whose numeric `field` satisfies every bound ({"$gte": 0.5, "$lt": 0.51}, ...)."""
        values, ids = self._numeric(field)
        start, stop = 0, len(values)
        for op, operand in bounds.items():
            if isinstance(operand, bool) or not isinstance(operand, (int, float)) or math.isnan(operand):
                raise InvalidTypeError(f"field {field!r}: {op} takes a number, got {operand!r}")
            low_side, high_side = _RANGES[op]
            if low_side:
                start = max(start, int(np.searchsorted(values, operand, side=low_side)))
            else:
                stop = min(stop, int(np.searchsorted(values, operand, side=high_side)))
        mask = np.zeros(size, dtype=bool)
        mask[ids[start:max(start, stop)]] = True
        return mask

    def _numeric(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """The field's numeric values in ascending order with their ids (rebuilt after the field changes)."""
        if field not in self._sorted:
            col = self._fields.get(field)
            ids = np.empty(0, dtype=np.int64) if col is None else np.flatnonzero(self._tags[col] == _NUMBER)
            values = np.empty(0) if col is None else self._vals[col][ids].view(np.float64)
            order = np.argsort(values, kind="stable")
            self._sorted[field] = (values[order], ids[order])
        return self._sorted[field]


_NUMBER, _STRING, _BOOL = 1, 2, 3


def _encode(key: Key) -> tuple[int, int]:
    """A key's column form: (tag, 64-bit value as a Python int)."""
    kind, value = key
    if kind == "n":
        return _NUMBER, int((np.float64(value) + 0.0).view(np.uint64))  # + 0.0: -0.0 equals 0.0
    if kind == "b":
        return _BOOL, int(value)
    return _STRING, hash64(value)


def _scalar(value: object, field: str, op: str) -> Key:
    key = value_key(value)
    if key is None:
        raise InvalidTypeError(f"field {field!r}: {op} compares with str, int, float or bool values, got {value!r}")
    return key
