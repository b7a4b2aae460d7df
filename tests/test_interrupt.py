"""Long native calls release the GIL and stop early on Ctrl-C (KeyboardInterrupt)."""

import textwrap

import pytest
from conftest import run_child

CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import numpy as np
    import tqsearch

    x = np.random.default_rng(0).standard_normal((20000, 1024)).astype(np.float32)
    if sys.argv[1] == "encode":
        q = tqsearch.TurboQuantMSE(1024, 4, rotation="dense-qr", threads=1)  # O(d^2) per row: a slow encode
        work = lambda: q.encode(x)
    else:
        index = tqsearch.FlatIndex(1024, 3, threads=1)  # 3-bit codes take the slow row scan
        index.add(x)
        work = lambda: index.search(x[:1000], 10)
    t = time.perf_counter()
    work()
    full = time.perf_counter() - t

    ticks = []
    ticker = threading.Thread(target=lambda: [ticks.append(1) or time.sleep(0.01) for _ in range(20)])
    # early, and not in proportion to `full` alone: under load the timed run may be far slower than the next
    threading.Timer(min(full / 10, 0.05), lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t = time.perf_counter()
    ticker.start()
    try:
        work()
        outcome = "completed"
    except KeyboardInterrupt:
        outcome = "interrupted"
    stopped = time.perf_counter() - t
    ticker.join()
    print(outcome, full, stopped, len(ticks))
    """
)


@pytest.mark.parametrize("call", ["encode", "search"])
def test_ctrl_c_stops_a_long_call_and_other_threads_run_meanwhile(call):
    outcome, full, stopped, ticks = run_child(CHILD, call)
    assert outcome == "interrupted"
    # It stopped at the next chunk boundary, long before the work would have finished.
    assert float(stopped) < 0.6 * float(full), (full, stopped)
    # A Python thread kept running while the encode held no GIL.
    assert int(ticks) >= 5
