"""IdMap: int64 key -> slot for millions of keys in about 12 bytes each (a Python dict takes ~100).

A sorted base (keys ascending, int64; slots int32 while they fit) answers batches with one binary search
each; recent changes sit in a small dict (a slot, or -1 for a removed key) that is merged into the base
once it outgrows a sixteenth of it, so each change costs amortised O(log n) and the dict stays small.
"""

from __future__ import annotations

import numpy as np

MERGE_FLOOR = 4096  # changes kept in the dict before a merge is considered
SMALL_BATCH = 64  # lookups up to this many keys read the dict key by key


class IdMap:
    """A map from int64 keys to non-negative int64 slots, numpy in and out; -1 means absent."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.int64)
        self._slots = np.empty(0, dtype=np.int32)
        self._delta: dict[int, int] = {}  # key -> slot (-1: removed from the base)
        self._delta_arrays: tuple[np.ndarray, np.ndarray] | None = None  # _sorted_delta's copy (None: stale)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (int, np.integer)) and self.get(np.array([key], dtype=np.int64))[0] >= 0

    def nbytes(self) -> int:
        """Bytes held: the base arrays, an estimate for the dict (about 100 bytes an entry) and its sorted copy."""
        cached = 0 if self._delta_arrays is None else sum(a.nbytes for a in self._delta_arrays)
        return self._keys.nbytes + self._slots.nbytes + 100 * len(self._delta) + cached

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The slot of each key (int64), -1 where absent."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(keys.shape, -1, dtype=np.int64)
        if len(self._keys) and keys.size:
            at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            hit = self._keys[at] == keys
            out[hit] = self._slots[at[hit]]
        # Key by key while that is cheaper than (re)sorting the dict: a few keys, or fewer keys than the dict holds
        # when its sorted copy is stale.
        stale = self._delta_arrays is None
        if self._delta and (keys.size <= SMALL_BATCH or (stale and keys.size < len(self._delta))):
            delta = self._delta
            for i, key in enumerate(keys.tolist()):
                slot = delta.get(key)
                if slot is not None:
                    out[i] = slot
        elif self._delta:  # one binary search per key in the dict's sorted copy, not a Python step per key
            dkeys, dslots = self._sorted_delta()
            at = np.minimum(np.searchsorted(dkeys, keys), len(dkeys) - 1)
            hit = dkeys[at] == keys
            out[hit] = dslots[at[hit]]
        return out

    def _sorted_delta(self) -> tuple[np.ndarray, np.ndarray]:
        """The dict as (keys ascending, their slots), kept until the dict changes."""
        if self._delta_arrays is None:
            keys = np.fromiter(self._delta.keys(), dtype=np.int64, count=len(self._delta))
            slots = np.fromiter(self._delta.values(), dtype=np.int64, count=len(self._delta))
            order = np.argsort(keys)
            self._delta_arrays = keys[order], slots[order]
        return self._delta_arrays

    def set(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Insert or overwrite: keys[i] -> slots[i] (keys distinct, slots >= 0)."""
        keys = np.asarray(keys, dtype=np.int64)
        slots = np.asarray(slots, dtype=np.int64)
        self._count += int((self.get(keys) < 0).sum())
        if len(keys) > max(MERGE_FLOOR, len(self._keys) // 16):  # a batch the dict would only hold until the merge
            self._merge(keys, slots)
            return
        self._delta.update(zip(keys.tolist(), slots.tolist()))
        self._delta_arrays = None
        self._maybe_merge()

    def discard(self, keys: np.ndarray) -> None:
        """Remove the keys that are present (distinct keys)."""
        keys = np.asarray(keys, dtype=np.int64)
        present = keys[self.get(keys) >= 0]
        self._count -= len(present)
        self._delta.update(dict.fromkeys(present.tolist(), -1))
        self._delta_arrays = None
        self._maybe_merge()

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (key, slot) pair, keys ascending: (int64 keys, int64 slots)."""
        self._merge()
        return self._keys.copy(), self._slots.astype(np.int64)

    @classmethod
    def from_arrays(cls, keys: np.ndarray, slots: np.ndarray) -> IdMap:
        """A map holding keys[i] -> slots[i] (keys distinct)."""
        out = cls()
        out._set_base(np.asarray(keys, dtype=np.int64), np.asarray(slots, dtype=np.int64))
        return out

    def _maybe_merge(self) -> None:
        if len(self._delta) > max(MERGE_FLOOR, len(self._keys) // 16):
            self._merge()

    def _merge(self, keys: np.ndarray | None = None, slots: np.ndarray | None = None) -> None:
        """Fold the dict, then keys -> slots (distinct keys, slots >= 0), into the base: O(n log n), once per n/16
        changes."""
        if not self._delta and keys is None:
            return
        dkeys = np.fromiter(self._delta.keys(), dtype=np.int64, count=len(self._delta))
        dslots = np.fromiter(self._delta.values(), dtype=np.int64, count=len(self._delta))
        if keys is not None:  # they overwrite the dict's entries for the same keys
            older = ~np.isin(dkeys, keys)
            dkeys, dslots = np.concatenate([dkeys[older], keys]), np.concatenate([dslots[older], slots])
        kept = ~np.isin(self._keys, dkeys)
        live = dslots >= 0
        self._set_base(np.concatenate([self._keys[kept], dkeys[live]]),
                       np.concatenate([self._slots[kept].astype(np.int64), dslots[live]]))

    def _set_base(self, keys: np.ndarray, slots: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        narrow = not len(slots) or int(slots.max()) < 2**31
        self._slots = slots[order].astype(np.int32 if narrow else np.int64)
        self._delta = {}
        self._delta_arrays = None
        self._count = len(keys)
