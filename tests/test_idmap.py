"""IdMap against a dict over random inserts, overwrites and removals, across merges."""

from __future__ import annotations

import numpy as np

from tqsearch import _idmap
from tqsearch._idmap import IdMap


def test_random_operations_match_a_dict(monkeypatch):
    monkeypatch.setattr(_idmap, "MERGE_FLOOR", 64)  # merge often
    rng = np.random.default_rng(0)
    ref: dict[int, int] = {}
    m = IdMap()
    for step in range(300):
        keys = np.unique(rng.integers(-(2**62), 2**62, 40) if step % 3 else rng.integers(0, 500, 40))
        if step % 4 == 3:
            m.discard(keys)
            for key in keys.tolist():
                ref.pop(key, None)
        else:
            slots = rng.integers(0, 2**40 if step == 150 else 10**6, len(keys))
            m.set(keys, slots)
            ref.update(zip(keys.tolist(), slots.tolist()))
        probe = np.concatenate([keys, rng.integers(0, 500, 20), np.array(list(ref)[:30], dtype=np.int64)])
        for part in (probe, probe[:10]):  # past SMALL_BATCH keys the dict may be searched as sorted arrays
            np.testing.assert_array_equal(m.get(part), [ref.get(k, -1) for k in part.tolist()])
        assert len(m) == len(ref)
    keys, slots = m.items()
    assert dict(zip(keys.tolist(), slots.tolist())) == ref and (np.diff(keys) > 0).all()
    again = IdMap.from_arrays(keys, slots)
    np.testing.assert_array_equal(again.get(keys), slots)
    assert 7 not in IdMap() and int(keys[0]) in again


def test_memory_is_about_twelve_bytes_a_key():
    m = IdMap.from_arrays(np.arange(0, 3_000_000, 3), np.arange(1_000_000))
    assert m.nbytes() == 12 * 1_000_000
    m.set(np.array([1, 2]), np.array([5, 6]))
    assert m.nbytes() <= 12 * 1_000_000 + 1000
