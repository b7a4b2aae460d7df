"""The one concurrency contract of tqsearch's indexes and collections: many readers or one writer.

Every index (FlatIndex, HNSWIndex, MultiVectorIndex) and every Collection holds one ReadWriteLock:
- reads (`search`, `query`, `get`, `reconstruct`, `chamfer`, `save`, `memory_usage`, `ids`, `count`) take
  the shared side, so any number run at once, each multi-threaded inside its native call;
- writes (`add`, `upsert`, `remove`/`delete`, `compact`, `close`) take the exclusive side: a write waits
  for the reads in flight, and reads that arrive while a write waits queue behind it (no starvation).
Native code may therefore reallocate storage during a write: no search can be reading it. The thread
holding the write side may re-enter either side (a write that saves, a close that compacts); a thread
holding the read side may take it again. See docs/architecture.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """A writer-preferring reader/writer lock; the writer thread may re-enter, readers may nest."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # taken directly on the read path: `with` on the Condition costs more
        self._cond = threading.Condition(self._mutex)
        self._readers = 0  # threads holding the shared side (outermost acquisitions)
        self._writer: int | None = None  # ident of the thread holding the exclusive side
        self._depth = 0  # the writer's nested acquisitions
        self._waiting = 0  # writers waiting: new readers queue behind them
        self._local = threading.local()  # this thread's read depth

    def read(self) -> _Reading:
        """Hold the shared side for the duration of a `with` block."""
        return _Reading(self)

    def _acquire_read(self) -> bool:
        """Take the shared side; returns whether this thread already held a side (then nothing is taken)."""
        depth = getattr(self._local, "depth", 0)
        nested = depth > 0 or self._writer == threading.get_ident()
        if not nested:
            with self._mutex:
                while self._writer is not None or self._waiting:
                    self._cond.wait()
                self._readers += 1
        self._local.depth = depth + 1
        return nested

    def _release_read(self, nested: bool) -> None:
        self._local.depth -= 1
        if not nested:
            with self._mutex:
                self._readers -= 1
                if not self._readers and self._waiting:  # only writers wait while no writer holds the lock
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the exclusive side for the duration of a `with` block."""
        me = threading.get_ident()
        if getattr(self._local, "depth", 0) and self._writer != me:
            raise RuntimeError("a thread holding the read side cannot take the write side (deadlock)")
        with self._mutex:
            if self._writer != me:
                self._waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
                self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._mutex:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


class _Reading:
    """The `with` block of ReadWriteLock.read (a plain class: searches take it on every call, and a generator-based
    context manager cost ~1 us of a ~15 us small search)."""

    __slots__ = ("_lock", "_nested")

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._nested = self._lock._acquire_read()

    def __exit__(self, *exc: object) -> None:
        self._lock._release_read(self._nested)
