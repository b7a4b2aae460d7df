"""The concurrency contract (_rwlock.py): searches run while other threads add, remove and upsert.

A stable set of vectors is never touched by the writers; every search restricted to it must give
exactly what a search of that set alone gives, whatever the writers are doing; unrestricted searches
must find each stable query's own vector and return no id that was never stored. A FlatIndex loaded from a
mapped file is searched from the mapping until a writer's first change copies its codes and lets the file go.
"""

from __future__ import annotations

import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import run_child, run_threads, unit_rows

from tqsearch import FlatIndex, HNSWIndex, SearchParams
from tqsearch._rwlock import ReadWriteLock
from tqsearch.collection import open_collection

STABLE, CHURN, DIM = 1500, 400, 32
ROUNDS, TIME_LIMIT = 60, 60.0


def _writer(index, rng: np.random.Generator, base: int, errors: list) -> None:
    """Adds, upserts and removes its own range of churn ids, ROUNDS times."""
    try:
        ids = np.arange(base, base + CHURN)
        for r in range(ROUNDS):
            index.add(unit_rows(CHURN, DIM, seed=int(rng.integers(1 << 30))), ids=ids)
            half = ids[: CHURN // 2]
            index.upsert(unit_rows(len(half), DIM, seed=r), ids=half)
            index.remove(ids)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


FEW = np.arange(0, STABLE, 75)  # an id filter short enough to be looked up id by id (_allowed), not matched


def _searcher(index, x: np.ndarray, want: tuple[np.ndarray, np.ndarray], want_few: tuple[np.ndarray, np.ndarray],
              stop: threading.Event, seen: list, errors: list, params: SearchParams) -> None:
    """Scans the stable set and a few of its ids (must equal `want` and `want_few`) and searches everything with
    `params` (must find each query itself)."""
    try:
        stable = np.arange(STABLE)
        deadline = time.monotonic() + TIME_LIMIT
        while not stop.is_set() and time.monotonic() < deadline:
            scores, ids = index.search(x[:64], 10, filter=stable, params=SearchParams(exhaustive=True))
            np.testing.assert_allclose(scores, want[0], rtol=1e-6)
            assert np.isin(ids, stable).all()
            scores, ids = index.search(x[:64], 10, filter=FEW, params=SearchParams(exhaustive=True))
            np.testing.assert_array_equal(ids, want_few[1])
            np.testing.assert_allclose(scores, want_few[0], rtol=1e-6)
            scores, ids = index.search(x[:64], 10, params=params)
            assert ((ids == np.arange(64)[:, None]).any(axis=1)).mean() >= 0.95
            assert (np.diff(scores, axis=1) <= 0).all() and (ids >= 0).all()
            assert all(len(set(row)) == 10 for row in ids.tolist())
            assert ((ids < STABLE) | ((ids >= 10_000) & (ids < 10_000 + 4 * CHURN))).all()
            seen.append(1)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


@pytest.mark.parametrize("cls, params, adaptive, loaded",
                         [(FlatIndex, SearchParams(), False, False), (FlatIndex, SearchParams(), True, False),
                          (FlatIndex, SearchParams(), False, True),
                          (HNSWIndex, SearchParams(exhaustive=True), False, False),
                          (HNSWIndex, SearchParams(ef=32), False, False),
                          (HNSWIndex, SearchParams(ef=32), True, False)],
                         ids=["flat", "flat-adaptive", "flat-mapped", "hnsw-scan", "hnsw-walk", "hnsw-adaptive"])
def test_searches_while_others_add_remove_and_upsert(cls, params, adaptive, loaded, tmp_path):
    if adaptive:  # variance falling along the axes, so the first batch splits the code into tiers
        x = unit_rows(STABLE, DIM, seed=1) / np.arange(1, DIM + 1, dtype=np.float32)
        index = cls(DIM, bits=4, threads=1, metric="l2", adaptive=True)
    else:
        x = unit_rows(STABLE, DIM, seed=1)
        index = cls(DIM, bits=4, threads=1)
    index.add(x)
    if loaded:  # searched from the file's mapping until a writer's first change copies the codes and drops it
        index.save(tmp_path / "index.tqs")
        index = cls.load(tmp_path / "index.tqs", mmap=True)
        index.threads = 1
        assert index._store.attached
    assert not adaptive or index.tiers is not None
    want = index.search(x[:64], 10, filter=np.arange(STABLE), params=SearchParams(exhaustive=True))
    few_mask = np.isin(np.arange(STABLE), FEW)  # the other filter path gives the reference
    want_few = index.search(x[:64], 10, filter=few_mask, params=SearchParams(exhaustive=True))
    stop, errors, seen = threading.Event(), [], []
    run_threads([threading.Thread(target=_writer, args=(index, np.random.default_rng(i), 10_000 + i * CHURN, errors))
          for i in range(2)],
         [threading.Thread(target=_searcher, args=(index, x, want, want_few, stop, seen, errors, params))
          for _ in range(3)],
         stop)
    assert not errors, errors[0]
    assert len(index) == STABLE and len(seen) >= 3
    np.testing.assert_array_equal(np.sort(index.ids), np.arange(STABLE))
    assert not loaded or index.memory_usage()["file"] == 0  # the writers' first change let the mapping go


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_collection_queries_while_others_write(tmp_path, kind):
    """Collection.query takes the read side while writes and compactions go on: queries restricted to the
    untouched points keep their answer (exactly on a flat index; a graph changes around them)."""
    x = unit_rows(STABLE, DIM, seed=2)
    c = open_collection(tmp_path / "c", dim=DIM, index=kind, wal_bytes=1 << 20)  # compacts as it goes
    c.upsert([f"s{i}" for i in range(STABLE)], x, metadatas=[{"stable": True}] * STABLE)
    want = c.query(x[:32], 10, where={"stable": True})
    stop, errors = threading.Event(), []

    def write(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for r in range(25):
                ids = [f"w{seed}-{i}" for i in range(200)]
                c.upsert(ids, unit_rows(200, DIM, seed=int(rng.integers(1 << 30))), [{"stable": False}] * 200)
                c.delete(ids[: 100 + r])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def read() -> None:
        try:
            deadline = time.monotonic() + TIME_LIMIT
            while not stop.is_set() and time.monotonic() < deadline:
                got = c.query(x[:32], 10, where={"stable": True})
                same = np.mean([len(set(g["ids"]) & set(w["ids"])) / 10 for g, w in zip(got, want)])
                assert same == 1.0 if kind == "flat" else same >= 0.9, same
                hits = c.query(x[:32], 10)
                assert sum(h["ids"][0] == f"s{i}" for i, h in enumerate(hits)) >= 31
                assert c.get(ids=["s0"], include=())["ids"] == ["s0"]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    run_threads([threading.Thread(target=write, args=(i,)) for i in range(2)],
         [threading.Thread(target=read) for _ in range(2)], stop)
    assert not errors, errors[0]
    assert c.count() == STABLE + 2 * (200 - 100 - 24)
    c.close()


def test_read_write_lock_excludes_writers_and_lets_readers_share():
    lock, events = ReadWriteLock(), []
    inside = threading.Barrier(3, timeout=10)

    def reader() -> None:
        with lock.read():
            inside.wait()  # three readers inside at once: the read side is shared
            with lock.read():  # a reader may nest
                events.append("r")

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert events == ["r"] * 3
    with lock.write():
        with lock.write(), lock.read():  # the writer re-enters either side
            events.append("w")
        done = threading.Event()

        def blocked_reader() -> None:
            with lock.read():
                done.set()

        t = threading.Thread(target=blocked_reader)
        t.start()
        assert not done.wait(0.2)  # a reader waits while the write side is held
    assert done.wait(10)
    t.join()
    with lock.read(), pytest.raises(RuntimeError, match="deadlock"):
        with lock.write():
            pass


def test_a_thread_holding_nothing_cannot_release_either_side():
    lock = ReadWriteLock()
    with pytest.raises(RuntimeError, match="does not hold the read side"):
        lock.read().__exit__(None, None, None)
    with pytest.raises(RuntimeError, match="does not hold the write side"):
        lock.write().__exit__(None, None, None)
    with lock.read():  # the failed releases changed nothing
        pass
    with lock.write():
        pass


WAIT_CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from tqsearch._rwlock import ReadWriteLock

    lock, side = ReadWriteLock(), sys.argv[1]
    held, release = threading.Event(), threading.Event()

    def holder():  # holds the other side until told
        with (lock.read() if side == "write" else lock.write()):
            held.set()
            release.wait()

    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    ticks = []
    ticker = threading.Thread(target=lambda: [ticks.append(1) or time.sleep(0.01) for _ in range(20)])
    ticker.start()
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.perf_counter()
    try:
        with (lock.write() if side == "write" else lock.read()):
            outcome = "taken"
    except KeyboardInterrupt:
        outcome = "interrupted"
    waited = time.perf_counter() - t0
    ticker.join()
    # a writer that gave up no longer makes readers queue: one enters while the holder still reads
    entered = threading.Event()
    def probe():
        with lock.read():
            entered.set()

    probe_ok = True
    if side == "write":
        threading.Thread(target=probe, daemon=True).start()  # daemon: a stuck probe does not hold the exit
        probe_ok = entered.wait(5)
    release.set()
    t.join()
    if probe_ok:
        with lock.write():  # and the lock still works both ways
            with lock.read():
                pass
    print(outcome, round(waited, 2), len(ticks), probe_ok, flush=True)
    os._exit(0)  # a stuck probe thread cannot stop the interpreter's shutdown either
    """
)


@pytest.mark.parametrize("side", ["write", "read"])
def test_ctrl_c_stops_a_thread_waiting_for_the_lock_and_others_run_meanwhile(side):
    outcome, waited, ticks, probe_ok = run_child(WAIT_CHILD, side, timeout=120)
    assert outcome == "interrupted"
    assert float(waited) < 5  # stopped soon after the signal, long before the holder let go (never, unasked)
    assert int(ticks) >= 5  # a Python thread ran while this one waited: the wait holds no GIL
    assert probe_ok == "True"
