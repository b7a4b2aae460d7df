"""memory_usage() accounts for what the index really holds: OS-level RSS growth while adding vectors with
user-supplied int64 ids matches it within 10%, growth slack included, with and without reserve();
MultiVectorIndex per token (200,000 tokens in documents of 20); an adaptive FlatIndex and HNSWIndex, tiers
and basis included.

Each case runs in a fresh subprocess, so memory held by other tests (or by the allocator on their
behalf) does not blur the measurement; RSS is read from /proc/self/statm after gc.collect() and _core.trim_heap(), and the
baseline is taken after a throwaway index of the same kind has been built, so one-off costs (lazy
imports, thread pools, codebook tables) are not charged to the index under test. FlatIndex uses d=384,
4 bits (the target configuration), 200,000 vectors; HNSWIndex uses d=64, M=8, ef_construction=40 so
300,000 insertions stay within tens of seconds on two cores (the per-node accounting is the same at any
d and M). About 3 MB of RSS growth is fixed (allocator and interpreter bookkeeping), hence 300,000 small
HNSW nodes (~145 B each) rather than 200,000, where those 3 MB alone come near 10%.

Loads: a second process loads what a first built and saved (100,000 vectors; FlatIndex and HNSWIndex memory-mapped
and read, MultiVectorIndex read), and its RSS growth is read without a trim, as a user sees it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

RSS = textwrap.dedent("""
    import gc, json, os, sys
    import numpy as np
    import tqsearch

    def rss(trim=True):  # resident bytes once garbage (and the C heap's free pages) are given back
        gc.collect()
        if trim:
            tqsearch._core.trim_heap()
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
""")

SCRIPT = RSS + textwrap.dedent("""
    kind, n, batch, reserve, load = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]

    def make():
        if kind in ("flat", "flat-adaptive"):
            return tqsearch.FlatIndex(384, 4, adaptive=kind == "flat-adaptive"), 384
        if kind == "multivector":  # n counts tokens: documents of 20 tokens, FDEs in a flat index
            return tqsearch.MultiVectorIndex(64, 4, index="flat"), 64
        return tqsearch.HNSWIndex(64, 4, M=8, ef_construction=40, adaptive=kind == "hnsw-adaptive"), 64

    def fill(index, dim, count, rng):
        for start in range(0, count, batch):
            m = min(batch, count - start)
            ids = np.arange(start, start + m, dtype=np.int64) * 7 + 3
            if kind == "multivector":
                docs = list(rng.standard_normal((m // 20, 20, dim), dtype=np.float32))
                index.add(docs, ids=ids[: len(docs)])
                index.search([rng.standard_normal((5, dim), dtype=np.float32)], 5)
            else:
                rows = rng.standard_normal((m, dim), dtype=np.float32)
                if kind.endswith("adaptive"):  # variance falling over the axes: the first batch splits into tiers
                    rows /= np.arange(1, dim + 1, dtype=np.float32) ** (0.5 if kind == "flat-adaptive" else 1.0)
                index.add(rows, ids=ids)
                index.search(rng.standard_normal((2, dim), dtype=np.float32), 5)

    rng = np.random.default_rng(0)
    warm, dim = make()  # one-off costs first: imports, thread pools, tables, allocator arenas
    # An adaptive index's warm-up takes a first batch as large as the real one's: the plan fit and OpenBLAS keep
    # one-off workspaces (~45 MB in all, measured) sized by the first large batch, which are not the index's.
    fill(warm, dim, 2 * batch if kind == "multivector" else batch if kind.endswith("adaptive") else 2000, rng)
    del warm
    path = os.path.join(sys.argv[6], "index.tqs") if load else ""
    if load and not os.path.exists(path):  # built and saved by a first process, loaded by a second
        index, dim = make()
        fill(index, dim, n, rng)
        index.save(path)
        sys.exit()
    if load:  # what a loaded index holds, as the user sees it: no trim after the load (load's own job)
        def reopen():  # "...+add": one vector added after the load, which makes the index copy its codes
            index = type(make()[0]).load(path, mmap=load.startswith("mmap"))
            index.search(queries, 5)  # a mapped file's pages are resident once searched
            if load.endswith("+add"):
                index.add(rng.standard_normal((1, dim), dtype=np.float32), ids=[7 * n + 3])
            return index
        queries = [rng.standard_normal((5, dim), dtype=np.float32)] if kind == "multivector" else \
            rng.standard_normal((5, dim), dtype=np.float32)
        reopen()  # one-off costs of a load, a search and an add first
        base = rss()
        index = reopen()
        grown = rss(trim=False) - base
    else:
        base = rss()
        index, dim = make()
        if reserve:
            index.reserve(n)
        fill(index, dim, n, rng)
        grown = rss() - base
    usage = index.memory_usage()
    print(json.dumps({"rss": grown, "usage": usage, "tiers": getattr(index, "tiers", None)}))
""")


def run_script(script: str, *args: str) -> dict | None:
    """Runs a measuring script in a fresh interpreter; the JSON it printed last (None from a building step)."""
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True,
                         timeout=600)
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def measure(kind: str, n: int, batch: int, reserve: bool, load: str = "",
            tmp: str = "") -> tuple[int, dict[str, int], list | None]:
    for _ in range(2 if load else 1):  # a load: the first process builds and saves
        result = run_script(SCRIPT, kind, str(n), str(batch), str(int(reserve)), load, tmp)
    return result["rss"], result["usage"], result["tiers"]


@pytest.mark.parametrize("kind,n,batch,reserve", [("flat", 200_000, 50_000, False), ("flat", 200_000, 50_000, True),
                                                  ("hnsw", 300_000, 50_000, False), ("hnsw", 300_000, 50_000, True),
                                                  ("multivector", 200_000, 20_000, False),
                                                  ("flat-adaptive", 200_000, 50_000, False),
                                                  ("hnsw-adaptive", 200_000, 50_000, False)])
def test_rss_growth_matches_memory_usage(kind: str, n: int, batch: int, reserve: bool) -> None:
    rss, usage, tiers = measure(kind, n, batch, reserve)
    assert (tiers is not None) == kind.endswith("adaptive")  # the adaptive cases hold tiers and their basis
    total = sum(usage.values())
    assert abs(rss - total) <= 0.10 * total, (
        f"{kind} n={n} reserve={reserve}: RSS grew {rss / n:.1f} B/vector, memory_usage() says "
        f"{total / n:.1f} B/vector {({k: round(v / n, 1) for k, v in usage.items()})}")


@pytest.mark.parametrize("kind,n,load", [("flat", 100_000, "mmap"), ("flat", 100_000, "read"),
                                         ("flat", 100_000, "mmap+add"), ("flat", 100_000, "read+add"),
                                         ("hnsw", 100_000, "mmap"), ("hnsw", 100_000, "read"),
                                         ("multivector", 100_000, "read")])
def test_rss_growth_of_a_load_matches_memory_usage(kind: str, n: int, load: str, tmp_path) -> None:
    # A load's native state leaves temporaries in the C heap and, read without mmap, the whole file in a buffer:
    # load hands them back, and a FlatIndex counts the file its codes are still read from (memory_usage()["file"]).
    # Once a change has copied the codes, the file goes: before, a loaded FlatIndex that then changed held the whole
    # file beside its copy (counted as "file", so only the assertion on it failed: 20 MB here).
    rss, usage, _ = measure(kind, n, 50_000, False, load, str(tmp_path))
    assert (usage.get("file", 0) == 0) == (kind != "flat" or load.endswith("+add"))
    total = sum(usage.values())
    assert abs(rss - total) <= 0.10 * total, (
        f"{kind} n={n} loaded ({load}): RSS grew {rss / n:.1f} B/vector, memory_usage() says "
        f"{total / n:.1f} B/vector {({k: round(v / n, 1) for k, v in usage.items()})}")


COLLECTION_SCRIPT = RSS + textwrap.dedent("""
    from tqsearch.collection import open_collection

    path, stage, n = sys.argv[1], sys.argv[2], 100_000
    if stage != "open":  # upserts of 20,000 points, kept in the log or compacted into a snapshot
        rng = np.random.default_rng(0)
        with open_collection(path, dim=128, bits=4, index="flat") as c:
            for s in range(0, n, 20_000):
                c.upsert([f"id{i}" for i in range(s, s + 20_000)], rng.standard_normal((20_000, 128), dtype=np.float32),
                         [{"pos": i % 2} for i in range(s, s + 20_000)])
            if stage == "compacted":
                c.compact()
        sys.exit()
    q = np.zeros((1, 128), dtype=np.float32)
    with open_collection(path) as c:  # one-off costs of an open and a query first
        c.query(q, 10)
    del c
    base = rss()
    c = open_collection(path)
    c.query(q, 10)
    print(json.dumps({"rss": rss(trim=False) - base, "usage": c.memory_usage()}))
""")


@pytest.mark.parametrize("stage,slack", [("compacted", 0.10), ("logged", 0.60)])
def test_rss_growth_of_a_collection_open_matches_memory_usage(stage: str, slack: float, tmp_path) -> None:
    # Reading the snapshot and replaying the log leave their temporaries in the heap; open hands them back (before:
    # 100,000 logged points of 128 dims grew RSS by 177 MB against 14 MB counted). A replayed log still leaves 2-6 MB
    # more than counted (15.8-19.7 MB against 13.6 over 12 runs), an open gap its wider bound records, not a target
    # met: CPython's small-object arenas (1 MB each) grow by 2-3 while a record's ~20,000 ids and metadata dicts are
    # decoded, and the ~200 objects that outlive the replay keep them (sys._debugmallocstats; the open adds no live
    # Python objects besides); 0.5-1.5 MB more sits in partly used C-heap pages. (glibc's mallinfo2 showed ~2 MB more
    # in use, but that is the 2 MB alignment slack of the codes' mapping: address space, never touched.)
    path = str(tmp_path / "c")
    run_script(COLLECTION_SCRIPT, path, stage)
    result = run_script(COLLECTION_SCRIPT, path, "open")
    total = sum(result["usage"].values())
    assert abs(result["rss"] - total) <= slack * total, (
        f"{stage}: RSS grew {result['rss'] / 1e6:.1f} MB, memory_usage() says {total / 1e6:.1f} MB {result['usage']}")


FIRST_CHANGE_SCRIPT = RSS + textwrap.dedent("""
    path, load = sys.argv[1], sys.argv[2]
    if load == "build":
        rng = np.random.default_rng(0)
        index = tqsearch.FlatIndex(128, 4)
        index.add(rng.standard_normal((400_000, 128), dtype=np.float32))
        index.save(path)
        sys.exit()
    one = np.ones((1, 128), dtype=np.float32)
    index = tqsearch.FlatIndex.load(path, mmap=load == "mmap")
    index.search(one, 10)  # a mapped file's pages are resident once searched
    before = rss()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS (VmHWM) starts again from here
    index.add(one)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"peak": peak - before, "codes": index.memory_usage()["codes"]}))
""")


@pytest.mark.parametrize("load", ["mmap", "read"])
def test_the_first_change_after_a_load_copies_the_codes_once(load: str, tmp_path) -> None:
    # The first add copies the codes off the file straight into their grown room. It used to copy them at their size,
    # then again into the room: both copies at once peaked 56.1 MB above what the loaded index held, 1.56x the codes'
    # final room (400,000 x 128, 4 bits, 36 MB of codes); now 35.9 MB, 1.0x.
    path = str(tmp_path / "index.tqs")
    run_script(FIRST_CHANGE_SCRIPT, path, "build")
    result = run_script(FIRST_CHANGE_SCRIPT, path, load)
    assert result["peak"] <= 1.2 * result["codes"], (
        f"loaded ({load}), the first add peaked at {result['peak'] / 1e6:.1f} MB above the loaded index, for "
        f"{result['codes'] / 1e6:.1f} MB of codes")
