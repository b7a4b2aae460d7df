"""Durability benchmark: SIGKILL a writer at random moments, reopen, and check every acknowledged write.

A child process opens a Collection (flat, then hnsw; 4 bits, cosine, library defaults, a small
wal_bytes so compactions are frequent) and runs a fixed schedule of operations on real WordNet
MiniLM rows, printing the number of each operation once the call has returned (= acknowledged):
  * op i with i % 4 != 3 upserts 25 new points "i-0".."i-24" (vector, metadata = the row's pos, offset,
    n_lemmas, letter, length plus {"op": i, "j": j}, document = the row's text) and replaces the last 5
    points of op i - 4 with other rows (new vector, metadata and document);
  * op i with i % 4 == 3 deletes points 0-3 of each of the three upserts before it.
The parent kills the child with SIGKILL at a seeded random time: after a random run time (60%), a
random moment inside a compaction (30%; the child announces each compaction), or while it is still
opening and replaying its log (10%). It then reopens the collection and compares the whole state
with the model of the schedule: every acknowledged upsert present with bit-equal vector, equal
metadata and document; acknowledged deletes gone; the one unacknowledged operation applied wholly or
not at all (never half); nothing else present; len(index) == count(); the payload index agrees
(a `where` on pos and on op); and a filtered query for a few stored points finds each of them. The
next child resumes after the last applied operation. Writes bench/results/crash.json.

    python bench/crash.py                 # 40 kills per index (80 in all), 20,000 distinct rows
    python bench/crash.py --quick         # 4 kills per index, 5,000 rows (JSON in the temp folder)
    python bench/crash.py --kills 50 --index hnsw
"""

from __future__ import annotations

from common import Timer, _json_default, machine_info, progress, update_markdown_section, write_json

# isort: split
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import tqsearch

BATCH, REPLACE, DELETE = 25, 5, 4  # new points per upsert; points of op i-4 replaced; points deleted per upsert
WAL_BYTES = 4 << 20  # compact once the log passes 4 MiB (~80 upserts of 30 vectors)
KILLS, ROWS = 40, 20_000
MODES = {"random": 0.6, "compaction": 0.3, "recovery": 0.1}
RUN_S = (0.05, 1.5)  # child lifetime after "ready" in the random mode
SEED = 2024
QUERY_CHECKS = 5


# ----------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Op:
    """One logged operation: an upsert (ids -> rows) or a delete (ids)."""

    index: int
    upsert: dict[str, int] = field(default_factory=dict)  # id -> data row
    delete: tuple[str, ...] = ()


def op(i: int, rows: int) -> Op:
    """Operation i of the schedule (a pure function of i, so parent and child agree on it)."""
    if i % 4 == 3:
        return Op(i, delete=tuple(f"{i - d}-{j}" for d in (3, 2, 1) for j in range(DELETE)))
    u = i - i // 4  # how many upserts came before this one
    ids = {f"{i}-{j}": (u * BATCH + j) % rows for j in range(BATCH)}
    if i >= 4:
        ids.update({f"{i - 4}-{j}": (u * BATCH + j + rows // 2) % rows for j in range(BATCH - REPLACE, BATCH)})
    return Op(i, upsert=ids)


def point_values(sid: str, row: int, i: int, metas: Sequence[dict], docs: Sequence[str]) -> tuple[dict, str]:
    """Metadata and document a point gets when op i writes data row `row` under id `sid`."""
    return dict(metas[row], op=i, j=int(sid.split("-")[1])), docs[row]


def apply(model: dict[str, tuple[int, int]], o: Op) -> dict[str, tuple[int, int]]:
    """A new model (id -> (row, op that wrote it)) after operation o."""
    out = dict(model)
    for sid in o.delete:
        del out[sid]
    for sid, row in o.upsert.items():
        out[sid] = (row, o.index)
    return out


# ----------------------------------------------------------------------------- the child


def child(path: str, index: str, start: int, work: str) -> None:
    """Open (announce "ready"), then run ops start, start+1, ... printing each acknowledged op number."""
    vectors = np.load(Path(work) / "vectors.npy", mmap_mode="r")
    payload = json.loads((Path(work) / "payload.json").read_text())
    metas, docs = payload["metadatas"], payload["documents"]
    c = tqsearch.open(path, dim=vectors.shape[1], bits=4, metric="cosine", index=index, wal_bytes=WAL_BYTES)
    compact = c.compact

    def announced_compact() -> None:
        print("compact", flush=True)
        compact()
        print("compacted", flush=True)

    c.compact = announced_compact  # the Collection calls self.compact() when the log is full
    print("ready", flush=True)
    for i in range(start, 10**9):
        o = op(i, len(vectors))
        if o.delete:
            c.delete(list(o.delete))
        else:
            sids = list(o.upsert)
            values = [point_values(s, o.upsert[s], i, metas, docs) for s in sids]
            c.upsert(sids, np.asarray(vectors[[o.upsert[s] for s in sids]]), [m for m, _ in values],
                     [d for _, d in values])
        print(i, flush=True)


# ----------------------------------------------------------------------------- the parent


class Reader(threading.Thread):
    """Collects a child's stdout lines with arrival times; events for "ready" and "compact"."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream, self.lines = stream, []
        self.ready, self.compacting = threading.Event(), threading.Event()

    def run(self) -> None:
        for line in self.stream:
            line = line.strip()
            self.lines.append((time.monotonic(), line))
            if line == "ready":
                self.ready.set()
            elif line == "compact":
                self.compacting.set()

    def acked(self) -> int | None:
        """The last acknowledged op number, or None if none was."""
        numbers = [int(line) for _, line in self.lines if line.lstrip("-").isdigit()]
        return numbers[-1] if numbers else None

    def in_compaction(self) -> bool:
        """Whether the last announced compaction had not finished when the stream ended."""
        marks = [line for _, line in self.lines if line in ("compact", "compacted")]
        return bool(marks) and marks[-1] == "compact"

    def compaction_seconds(self) -> list[float]:
        out, start = [], None
        for t, line in self.lines:
            if line == "compact":
                start = t
            elif line == "compacted" and start is not None:
                out.append(t - start)
        return out


def compare(got: dict[str, Any], model: dict[str, tuple[int, int]], vectors: np.ndarray, metas: Sequence[dict],
            docs: Sequence[str]) -> dict[str, Any]:
    """Differences between a collection's points and a model: missing, extra and wrong ids."""
    position = {sid: p for p, sid in enumerate(got["ids"])}
    missing = [s for s in model if s not in position]
    extra = [s for s in position if s not in model]
    common = [s for s in model if s in position]
    wrong = []
    if common:
        at = np.array([position[s] for s in common])
        rows = np.array([model[s][0] for s in common])
        same_vec = (got["vectors"][at] == vectors[rows]).all(axis=1)
        for s, p, ok in zip(common, at, same_vec):
            meta, doc = point_values(s, model[s][0], model[s][1], metas, docs)
            if not ok or got["metadatas"][p] != meta or got["documents"][p] != doc:
                wrong.append(s)
    return {"missing": missing, "extra": extra, "wrong": wrong}


def _clean(diff: dict[str, list]) -> bool:
    return not any(diff.values())


@dataclass
class Episode:
    """The kill/check loop on one collection directory."""

    index: str
    path: Path
    work: Path
    vectors: np.ndarray
    metas: list[dict]
    docs: list[str]
    rng: np.random.Generator
    model: dict[str, tuple[int, int]] = field(default_factory=dict)
    next_op: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    compaction_s: list[float] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    failed: bool = False

    def round(self) -> dict[str, Any]:
        """Start a child, kill it, check the reopened state; one record."""
        mode = str(self.rng.choice(list(MODES), p=list(MODES.values())))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(self.path), self.index,
               str(self.next_op), str(self.work)]
        spawned = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        reader = Reader(proc.stdout)
        reader.start()
        try:
            if mode == "recovery":  # while importing, opening or replaying
                time.sleep(float(self.rng.uniform(0, np.median(self.startup_s) if self.startup_s else 1.0)))
            else:
                if not reader.ready.wait(300):
                    raise RuntimeError(f"child not ready after 300 s: {reader.lines[-5:]}")
                self.startup_s.append(time.monotonic() - spawned)
                if mode == "random":
                    time.sleep(float(self.rng.uniform(*RUN_S)))
                else:
                    typical = float(np.median(self.compaction_s)) if self.compaction_s else 0.05
                    if not reader.compacting.wait(120):
                        raise RuntimeError("no compaction within 120 s")
                    time.sleep(float(self.rng.uniform(0, typical)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            reader.join()
        lived = time.monotonic() - spawned
        self.compaction_s += reader.compaction_seconds()
        last = reader.acked()
        acked_ops = 0 if last is None else last - self.next_op + 1
        record = {"index": self.index, "mode": mode, "lived_s": lived, "first_op": self.next_op, "acked_ops": acked_ops,
                  "in_compaction": reader.in_compaction(), "ready": reader.ready.is_set()}
        for i in range(self.next_op, self.next_op + acked_ops):
            self.model = apply(self.model, op(i, len(self.vectors)))
        self.next_op += acked_ops
        record.update(self.check())
        self.rounds.append(record)
        return record

    def check(self) -> dict[str, Any]:
        """Reopen and compare with the model after the acknowledged ops, and after the next one too."""
        pending = op(self.next_op, len(self.vectors))
        after = apply(self.model, pending)
        with Timer() as opening:
            c = tqsearch.open(self.path)
        try:
            got = c.get(include=["metadatas", "documents", "vectors"])
            index_ok = len(c._index) == c.count() == len(got["ids"])
            before_diff = compare(got, self.model, self.vectors, self.metas, self.docs)
            after_diff = compare(got, after, self.vectors, self.metas, self.docs)
            out: dict[str, Any] = {"reopen_s": opening.seconds, "points": c.count(), "index_count_ok": index_ok}
            if _clean(after_diff) and not _clean(before_diff):
                out["unacked_op"] = "applied"
                self.model, self.next_op = after, self.next_op + 1
            elif _clean(before_diff):
                out["unacked_op"] = "absent"
            else:
                out.update(self.failure(before_diff, after_diff, pending))
            out.update(self.payload_checks(c))
        finally:
            c.close()
        if not (index_ok and out["payload_ok"] and out["query_misses"] == 0) or "lost_writes" in out:
            self.failed = True
        return out

    def failure(self, before: dict[str, list], after: dict[str, list], pending: Op) -> dict[str, Any]:
        """Classify a state that matches neither model: lost acknowledged writes and/or a half-applied op."""
        touched = set(pending.upsert) | set(pending.delete)
        lost = [s for s in before["missing"] + before["wrong"] if s not in touched]
        extra = [s for s in before["extra"] if s not in touched]
        as_before = [s for s in touched if s not in before["missing"] + before["wrong"] + before["extra"]]
        as_after = [s for s in touched if s not in after["missing"] + after["wrong"] + after["extra"]]
        half = bool(touched) and len(as_before) < len(touched) and len(as_after) < len(touched)
        self.failed = True
        return {"unacked_op": "half-applied" if half else "?", "lost_writes": len(lost), "unexpected": len(extra),
                "half_applied": int(half), "examples": (lost + extra)[:5]}

    def payload_checks(self, c: tqsearch.Collection) -> dict[str, Any]:
        """`where` counts agree with the model; a filtered query finds a few stored points by their vector."""
        nouns = sum(self.metas[row]["pos"] == "n" for row, _ in self.model.values())
        later = c.get(where={"op": {"$gte": self.next_op}}, include=())["ids"]
        payload_ok = len(c.get(where={"pos": "n"}, include=())["ids"]) == nouns and not later
        misses = 0
        sids = list(self.model)
        for p in self.rng.choice(len(sids), min(QUERY_CHECKS, len(sids)), replace=False) if sids else []:
            sid = sids[p]
            row, i = self.model[sid]
            where = {"op": i, "j": int(sid.split("-")[1])}  # at most 2 points: "i-j" and a replaced "(i-4)-j"
            misses += sid not in c.query(self.vectors[row][None], 2, where=where, include=())[0]["ids"]
        return {"payload_ok": payload_ok, "query_misses": misses}


def prepare(work: Path, rows: int) -> tuple[np.ndarray, list[dict], list[str]]:
    """The first `rows` WordNet rows as float32 vectors + metadata + texts, saved for the children."""
    from service import load_corpus

    corpus = load_corpus(rows, queries=0)
    np.save(work / "vectors.npy", corpus.vectors)
    (work / "payload.json").write_text(json.dumps({"metadatas": corpus.metadatas, "documents": corpus.documents}))
    return corpus.vectors, corpus.metadatas, corpus.documents


def run(kills: int, rows: int, indexes: Sequence[str], seed: int) -> dict[str, Any]:
    """`kills` rounds per index kind; per-round records and totals."""
    with Timer() as wall, tempfile.TemporaryDirectory(prefix="tq-crash-") as tmp:
        work = Path(tmp)
        vectors, metas, docs = prepare(work, rows)
        episodes = []
        for n, index in enumerate(indexes):
            ep = Episode(index, work / index, work, vectors, metas, docs, np.random.default_rng((seed, n)))
            bar = progress(range(kills), desc=f"kills ({index})")
            for _ in bar:
                record = ep.round()
                if hasattr(bar, "set_postfix_str"):
                    bar.set_postfix_str(f"op {ep.next_op}, {record['points']:,} points")
                if ep.failed:
                    print(f"FAILED on {index}: {record}")
                    break
            episodes.append(ep)
    return summarise(episodes, wall.seconds, kills, rows, seed)


def summarise(episodes: Sequence[Episode], wall_s: float, kills: int, rows: int, seed: int) -> dict[str, Any]:
    """Totals per index and overall."""
    per = []
    for ep in episodes:
        r = ep.rounds
        per.append({
            "index": ep.index, "kills": len(r), "kills_in_compaction": sum(x["in_compaction"] for x in r),
            "kills_before_ready": sum(not x["ready"] for x in r),
            "modes": {m: sum(x["mode"] == m for x in r) for m in MODES},
            "acked_ops": sum(x["acked_ops"] for x in r), "ops_done": ep.next_op,
            "upserts_applied": sum(1 for i in range(ep.next_op) if i % 4 != 3),
            "deletes_applied": sum(1 for i in range(ep.next_op) if i % 4 == 3),
            "points_written": sum(len(op(i, len(ep.vectors)).upsert) for i in range(ep.next_op)),
            "unacked_applied": sum(x.get("unacked_op") == "applied" for x in r),
            "lost_writes": sum(x.get("lost_writes", 0) for x in r),
            "half_applied": sum(x.get("half_applied", 0) for x in r),
            "unexpected_points": sum(x.get("unexpected", 0) for x in r),
            "index_count_mismatches": sum(not x["index_count_ok"] for x in r),
            "payload_mismatches": sum(not x["payload_ok"] for x in r),
            "query_misses": sum(x["query_misses"] for x in r),
            "final_points": r[-1]["points"] if r else 0,
            "compactions_seen": len(ep.compaction_s),
            "compaction_s_median": float(np.median(ep.compaction_s)) if ep.compaction_s else None,
            "reopen_s_median": float(np.median([x["reopen_s"] for x in r])) if r else None,
            "reopen_s_max": max((x["reopen_s"] for x in r), default=None),
            "failed": ep.failed})
    keys = ("kills", "kills_in_compaction", "kills_before_ready", "acked_ops", "upserts_applied", "deletes_applied",
            "points_written", "unacked_applied", "lost_writes", "half_applied", "unexpected_points",
            "index_count_mismatches", "payload_mismatches", "query_misses")
    total = {k: sum(p[k] for p in per) for k in keys}
    total["failed"] = any(p["failed"] for p in per)
    settings = {"dataset": "wordnet_minilm (first rows)", "rows": rows, "kills_per_index": kills, "seed": seed,
                "batch": BATCH, "replaced_per_upsert": REPLACE, "deleted_per_upsert": DELETE, "wal_bytes": WAL_BYTES,
                "modes": MODES, "run_s": list(RUN_S), "collection": {"bits": 4, "metric": "cosine",
                                                                      "options": "library defaults"}}
    return {"settings": settings, "per_index": per, "total": total, "wall_s": wall_s,
            "rounds": [x for ep in episodes for x in ep.rounds]}


COLUMNS = ("index", "kills (random / compaction / recovery)", "in compaction", "before ready", "acked ops",
           "points written", "unacked op applied", "lost writes", "half-applied", "unexpected", "index/count mismatch",
           "payload/query mismatch", "final points", "reopen s (median / max)")


def _table_row(p: dict[str, Any], name: str) -> str:
    """One markdown row of per-index (or total) counts."""
    modes = " / ".join(str(p["modes"][m]) for m in MODES) if "modes" in p else ""
    reopen = f"{p['reopen_s_median']:.2f} / {p['reopen_s_max']:.2f}" if p.get("reopen_s_median") is not None else ""
    cells = [name, f"{p['kills']} ({modes})" if modes else str(p["kills"]), p["kills_in_compaction"],
             p["kills_before_ready"], f"{p['acked_ops']:,}", f"{p['points_written']:,}", p["unacked_applied"],
             p["lost_writes"], p["half_applied"], p["unexpected_points"], p["index_count_mismatches"],
             f"{p['payload_mismatches']} / {p['query_misses']}",
             f"{p['final_points']:,}" if "final_points" in p else "", reopen]
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown(payload: dict[str, Any]) -> str:
    """The crash-safety table (one row per index kind, then the total)."""
    s = payload["settings"]
    intro = (f"SIGKILL at random moments while a child ingests real WordNet vectors (upserts of {s['batch']} new "
             f"points that also replace {s['replaced_per_upsert']} earlier ones, with metadata and documents; every "
             f"4th op deletes earlier points; wal_bytes {s['wal_bytes']:,} so compactions are frequent). After each "
             f"kill the collection is reopened and compared in full with the schedule's model. Wall time "
             f"{payload['wall_s']:.0f} s.\n")
    lines = ["## Crash safety (bench/crash.py)\n", intro, "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += [_table_row(p, p["index"]) for p in payload["per_index"]]
    lines.append(_table_row(payload["total"], "**total**"))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 kills per index, 5,000 rows; JSON in the temp folder")
    parser.add_argument("--kills", type=int, default=None, help=f"kills per index (default {KILLS})")
    parser.add_argument("--rows", type=int, default=None, help=f"distinct data rows cycled through (default {ROWS:,})")
    parser.add_argument("--index", nargs="*", default=["flat", "hnsw"], choices=["flat", "hnsw"])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--render-only", action="store_true", help="print the table of bench/results/crash.json")
    parser.add_argument("--child", nargs=4, metavar=("PATH", "INDEX", "START", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, index, start, work = args.child
        child(path, index, int(start), work)
        return
    if args.render_only:
        from common import RESULTS

        payload = json.loads((RESULTS / "crash.json").read_text())["results"]
        print(f"wrote {update_markdown_section('crash', markdown(payload))}")
        return
    kills = args.kills or (4 if args.quick else KILLS)
    rows = args.rows or (5_000 if args.quick else ROWS)
    payload = run(kills, rows, args.index, args.seed)
    if args.quick or args.kills or args.rows or args.index != ["flat", "hnsw"]:
        path = Path(tempfile.gettempdir()) / "crash_quick.json"
        path.write_text(json.dumps({"machine": machine_info(), "results": payload}, indent=2, default=_json_default))
    else:
        path = write_json("crash", payload)
        update_markdown_section("crash", markdown(payload))
    print(f"wrote {path}")
    print(markdown(payload))
    if payload["total"]["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
