"""Service benchmark: a Collection queried in-process and through `python -m tqsearch serve`, under load.

Data: WordNet MiniLM base (116,659 x 384, unit norm; `--n` keeps a prefix) as points "0".."n-1" with
the text as document and metadata derived from the real rows: pos (synset suffix n/v/a/s/r), offset
(the synset's byte offset in WordNet's data.<pos> file, an int), n_lemmas, letter (first character
of the text, lower-cased) and length (characters). Queries: the gloss queries, one vector per request,
k=10, include metadatas and documents. Two workloads:
  * unfiltered: recall@10 against the shipped exact top-100 (recomputed exactly for a prefix);
  * filtered: request i carries its own filter {"$and": [{"pos": p}, {"offset": {"$gte": lo, "$lt": hi}}]}
    with p drawn uniformly from the five parts of speech and [lo, hi) holding exactly 1% of the points
    (WordNet lays offsets out by lexicographer file, so a window is a topical slice: noun.animal,
    verb.motion, ...); recall@10 against the exact top-10 among the allowed points.
Load: a fixed number of requests split evenly over 1 and 8 concurrent clients (threads; client c sends
requests c, c + clients, ...), after a short warm-up. In-process: `Collection.query` per request.
Server: the bench starts `python -m tqsearch serve ROOT` on a free loopback port, waits for /health,
ingests through PUT .../points and sends the same requests from 8 client threads, each with one
keep-alive socket and pre-serialised request bytes (no HTTP library in the hot loop, so the client
costs little of the 2 cores it shares with the server). Errors (non-2xx, exceptions) are counted, and
every answer's metadata and documents are checked against the corpus. `GET /health` from the same
clients gives the HTTP stack's own cost per request (server CPU ms/request, read from /proc). Ingest:
batches of 500 points (metadata + documents, write-ahead log fsynced per call) from one writer,
vectors/s; the server's JSON bodies are encoded before the clock starts.
Peers (Qdrant local mode, Chroma persistent client, tqdb; see bench/service_peers.py) run the same
workload in this process after ours. Writes bench/results/service.json and prints markdown tables.

    python bench/service.py                          # full run (ours, server, peers)
    python bench/service.py --quick                  # 20,000 points, 800 requests, JSON in the temp folder
    python bench/service.py --skip-peers             # ours only;  --peers-only: peers only
    python bench/service.py --render-only            # print the tables of bench/results/service.json
"""

from __future__ import annotations

from common import (
    BENCH_MD,
    DATA,
    RESULTS,
    Timer,
    _json_default,
    finish_plot,
    load_wordnet,
    machine_info,
    progress,
    update_markdown_section,
    write_json,
)

# isort: split
import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import tqsearch

K, BATCH, FRACTION, SEED = 10, 500, 0.01, 0
CLIENTS = (1, 8)
REQUESTS = 4000
WARMUP = 40
INCLUDE = ("metadatas", "documents")
POS = ("n", "v", "a", "s", "r")
COLLECTION = "wordnet"
QUICK = {"n": 20_000, "requests": 800, "queries": 200}


# ----------------------------------------------------------------------------- data and workload


@dataclass
class Corpus:
    """Points (ids "0".."n-1", vectors, metadata, documents), gloss queries and their exact top-100."""

    ids: list[str]
    vectors: np.ndarray
    metadatas: list[dict[str, Any]]
    documents: list[str]
    queries: np.ndarray
    gt: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def point_metadata(synset: str, text: str) -> dict[str, Any]:
    """Metadata of one WordNet row: pos, offset, n_lemmas, letter, length (all from the real synset/text)."""
    offset, pos = synset.split("-")
    lemmas = text.split(": ", 1)[0]
    return {"pos": pos, "offset": int(offset), "n_lemmas": len(lemmas.split(", ")), "letter": text[0].lower(),
            "length": len(text)}


def load_corpus(n: int | None = None, queries: int | None = None) -> Corpus:
    """The first n base rows (all by default) with metadata and texts, and the first `queries` gloss queries."""
    base, xq, gt = load_wordnet("gloss", limit=n)
    n = len(base)
    metadatas, documents = [], []
    with open(DATA / "wordnet_minilm" / "base.jsonl", encoding="utf-8") as f:
        for line, _ in zip(f, range(n)):
            row = json.loads(line)
            metadatas.append(point_metadata(row["synset"], row["text"]))
            documents.append(row["text"])
    nq = len(xq) if queries is None else queries
    return Corpus([str(i) for i in range(n)], base, metadatas, documents, np.ascontiguousarray(xq[:nq]), gt[:nq])


@dataclass(frozen=True)
class Filter:
    """pos == p AND lo <= offset < hi; each target writes it in its own dialect (see service_peers)."""

    pos: str
    lo: int
    hi: int

    def where(self) -> dict[str, Any]:
        """tqsearch's `where` (Mongo/Chroma-like grammar)."""
        return {"$and": [{"pos": self.pos}, {"offset": {"$gte": self.lo, "$lt": self.hi}}]}

    def mask(self, pos: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Which points pass, from the metadata columns (independent of any engine)."""
        return (pos == self.pos) & (offset >= self.lo) & (offset < self.hi)


def make_filters(corpus: Corpus, count: int, fraction: float = FRACTION, seed: int = SEED) -> list[Filter]:
    """`count` filters, each passing exactly round(fraction * n) points: a uniform pos, then a random
    window of consecutive offsets of that pos (offsets are distinct within a pos)."""
    rng = np.random.default_rng(seed)
    pos, offset = _columns(corpus)
    want = max(K, round(fraction * len(corpus)))
    by_pos = {p: np.sort(offset[pos == p]) for p in POS}
    usable = [p for p in POS if len(by_pos[p]) > want]
    out = []
    for _ in range(count):
        p = usable[int(rng.integers(len(usable)))]
        values = by_pos[p]
        start = int(rng.integers(0, len(values) - want))
        out.append(Filter(p, int(values[start]), int(values[start + want])))
    return out


def _columns(corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
    pos = np.array([m["pos"] for m in corpus.metadatas])
    offset = np.array([m["offset"] for m in corpus.metadatas], dtype=np.int64)
    return pos, offset


@dataclass
class Workload:
    """One request per slot i: query row `query[i]`, optional filter, and the exact top-k ids it should return."""

    name: str
    query: np.ndarray  # (requests,) query rows
    filters: list[Filter] | None  # one per request, or None (unfiltered)
    gt: np.ndarray  # (requests, k) exact ids
    selectivity: list[float]  # fraction of points passing, per request (1.0 unfiltered)

    def __len__(self) -> int:
        return len(self.query)


def make_workloads(corpus: Corpus, requests: int) -> list[Workload]:
    """The unfiltered and the 1%-filtered workload: request i uses query i mod nq (filter i mod nq)."""
    nq = len(corpus.queries)
    rows = np.arange(requests) % nq
    unfiltered = Workload("unfiltered", rows, None, corpus.gt[rows, :K], [1.0] * requests)
    filters = make_filters(corpus, nq)
    pos, offset = _columns(corpus)
    gt, selectivity = np.empty((nq, K), dtype=np.int64), []
    for i, f in enumerate(progress(filters, desc="filtered ground truth", leave=False)):
        allowed = np.flatnonzero(f.mask(pos, offset))
        scores = corpus.vectors[allowed] @ corpus.queries[i]
        order = np.lexsort((allowed, -scores))[:K]  # best first, ties to the smaller id
        gt[i] = allowed[order]
        selectivity.append(len(allowed) / len(corpus))
    filtered = Workload(f"filtered {FRACTION:.0%}", rows, [filters[r] for r in rows], gt[rows],
                        [selectivity[r] for r in rows])
    return [unfiltered, filtered]


# ----------------------------------------------------------------------------- load generator


class RequestError(Exception):
    """A non-2xx HTTP answer (status and body kept for the report)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


def drive(make_call: Callable[[int], Callable[[int], Any]], requests: int, clients: int,
          cpu_pids: Sequence[int] = ()) -> dict[str, Any]:
    """Send `requests` (rounded down to a multiple of `clients`) from `clients` threads; client c sends
    requests c, c + clients, ... through `make_call(c)`, a callable built (and connected) before the clock
    starts. Returns wall seconds, per-request latencies, answers (None where the call raised), errors and
    CPU seconds of this process and of `cpu_pids` (the server) over the run."""
    per = requests // clients
    total = per * clients
    answers: list[Any] = [None] * total
    latency = np.zeros(total)
    errors: list[str] = []
    calls = [make_call(c) for c in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        call = calls[c]
        barrier.wait()
        for i in range(c, total, clients):
            start = time.perf_counter()
            try:
                answers[i] = call(i)
            except Exception as e:  # noqa: BLE001 - every failure is counted, not raised
                errors.append(repr(e))
            latency[i] = time.perf_counter() - start

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    cpu_before = [_cpu_seconds(p) for p in cpu_pids]
    with Timer() as timer:
        barrier.wait()
        for t in threads:
            t.join()
    cpu_other = sum(_cpu_seconds(p) - b for p, b in zip(cpu_pids, cpu_before))
    reconnects = sum(getattr(call, "reconnects", lambda: 0)() for call in calls)
    for call in calls:
        with contextlib.suppress(Exception):
            getattr(call, "close", lambda: None)()
    return {"wall_s": timer.seconds, "latency": latency, "answers": answers, "errors": errors,
            "client_cpu_s": timer.cpu_seconds, "server_cpu_s": cpu_other if cpu_pids else None,
            "reconnects": reconnects}


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise(run: dict[str, Any], workload: Workload, ids_of: Callable[[Any], list[int]],
              corpus: Corpus, check_payload: Callable[[Any], int] | None = None) -> dict[str, Any]:
    """QPS, latency percentiles, errors, recall@k and payload mismatches of one driven run."""
    n = len(run["answers"])
    found = np.full((n, K), -1, dtype=np.int64)
    bad_payload = 0
    for i, answer in enumerate(run["answers"]):
        if answer is None:
            continue
        try:
            ids = ids_of(answer)[:K]
            found[i, : len(ids)] = ids
            bad_payload += check_payload(answer) if check_payload else 0
        except Exception as e:  # noqa: BLE001 - a malformed answer is an error
            run["errors"].append(f"unreadable answer: {e!r}")
    ms = 1e3 * run["latency"]
    out = {"requests": n, "qps": n / run["wall_s"], "p50_ms": float(np.percentile(ms, 50)),
           "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "errors": len(run["errors"]),
           f"recall@{K}": _recall(found, workload.gt[:n]), "payload_mismatches": bad_payload,
           "client_cpu_ms_per_request": 1e3 * run["client_cpu_s"] / n, "reconnects": run["reconnects"]}
    if run["server_cpu_s"] is not None:
        out["server_cpu_ms_per_request"] = 1e3 * run["server_cpu_s"] / n
    if run["errors"]:
        out["first_errors"] = sorted(set(run["errors"]))[:5]
    return out


def _recall(found: np.ndarray, gt: np.ndarray) -> float:
    """Mean |found ∩ gt| / k per request (a -1 pad never matches)."""
    hits = (found[:, :, None] == gt[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / gt.shape[1])


def payload_checker(corpus: Corpus) -> Callable[[dict[str, Any]], int]:
    """Count returned points whose metadata or document differs from the corpus row of their id."""
    def check(result: dict[str, Any]) -> int:
        bad = 0
        for sid, md, doc in zip(result["ids"], result["metadatas"], result["documents"]):
            row = int(sid)
            bad += md != corpus.metadatas[row] or doc != corpus.documents[row]
        return bad + abs(len(result["metadatas"]) - len(result["ids"]))
    return check


# ----------------------------------------------------------------------------- in-process


def batches(n: int, size: int = BATCH) -> Iterator[slice]:
    """Consecutive row slices of at most `size` rows."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def ingest_local(collection: tqsearch.Collection, corpus: Corpus) -> dict[str, Any]:
    """Upsert the corpus in batches of BATCH (each call fsyncs the log); vectors/s."""
    with Timer() as timer:
        for s in progress(list(batches(len(corpus))), desc="ingest in-process", leave=False):
            collection.upsert(corpus.ids[s], corpus.vectors[s], corpus.metadatas[s], corpus.documents[s])
    if collection.count() != len(corpus):
        raise RuntimeError(f"in-process ingest: count {collection.count()} != {len(corpus)}")
    return {"points": len(corpus), "batch": BATCH, "seconds": timer.seconds,
            "vectors_per_s": len(corpus) / timer.seconds}


def local_caller(collection: tqsearch.Collection, corpus: Corpus, workload: Workload) -> Callable[[int], Callable]:
    """Per-client callables running Collection.query for request i (one query row, k=K)."""
    rows = [corpus.queries[r : r + 1] for r in range(len(corpus.queries))]
    wheres = [f.where() for f in workload.filters] if workload.filters else None

    def make(_client: int) -> Callable[[int], dict[str, Any]]:
        def call(i: int) -> dict[str, Any]:
            where = wheres[i] if wheres else None
            return collection.query(rows[workload.query[i]], K, where=where, include=INCLUDE)[0]
        return call
    return make


# ----------------------------------------------------------------------------- server


class HTTPClient:
    """One keep-alive HTTP/1.1 connection speaking pre-built request bytes (Content-Length or chunked answers).

    If the server answers "Connection: close", the next request opens a new connection (counted in
    `reconnects`), as an HTTP library would."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.reconnects = host, port, 0
        self.sock: socket.socket | None = None
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw: bytes) -> bytes:
        """Send one request; the body of its 2xx answer, else RequestError."""
        if self.sock is None:
            self._connect()
            self.reconnects += 1
        self.sock.sendall(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunked()
        else:
            raise RequestError(status, b"answer without length (connection-close framing not supported)")
        if headers.get("connection", "").lower() == "close":
            self.close()
        if not 200 <= status < 300:
            raise RequestError(status, body)
        return body

    def _fill(self) -> None:
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _chunked(self) -> bytes:
        parts = []
        while True:
            while (end := self.buf.find(b"\r\n")) < 0:
                self._fill()
            size = int(self.buf[:end].split(b";")[0], 16)
            self.buf = self.buf[end + 2 :]
            parts.append(self._take(size))
            self._take(2)
            if size == 0:
                return b"".join(parts)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def dumps(value: Any) -> bytes:
    """JSON bytes (orjson when installed: numpy arrays natively, float32 written shortest-exact)."""
    try:
        import orjson
    except ImportError:
        return json.dumps(value, default=_json_default, separators=(",", ":")).encode()
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def loads(data: bytes) -> Any:
    try:
        import orjson
    except ImportError:
        return json.loads(data)
    return orjson.loads(data)


def raw_request(method: str, path: str, body: bytes | None, host: str, port: int, api_key: str | None) -> bytes:
    """The bytes of one HTTP/1.1 request (keep-alive) with a JSON body."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if api_key:
        head += [f"Authorization: Bearer {api_key}", f"X-API-Key: {api_key}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


class Server:
    """`python -m tqsearch serve ROOT` on a free loopback port, as a subprocess (stopped by `stop`)."""

    def __init__(self, root: Path, api_key: str | None = None, start_timeout: float = 120.0,
                 command: Sequence[str] | None = None) -> None:
        self.host, self.port, self.api_key = "127.0.0.1", _free_port(), api_key
        self.log_path = root.parent / "server.log"
        cmd = [*(command or [sys.executable, "-m", "tqsearch", "serve"]), str(root), "--host", self.host,
               "--port", str(self.port)]
        if api_key:
            cmd += ["--api-key", api_key]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        with Timer() as timer:
            self._wait_healthy(start_timeout)
        self.start_s = timer.seconds

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, RequestError, ValueError):
                if loads(self.call("GET", "/health")).get("status") == "ok":
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def raw(self, method: str, path: str, body: Any = None) -> bytes:
        """Request bytes for this server (body: a JSON value, pre-encoded bytes or None)."""
        data = body if isinstance(body, bytes) or body is None else dumps(body)
        return raw_request(method, path, data, self.host, self.port, self.api_key)

    def call(self, method: str, path: str, body: Any = None) -> bytes:
        """One request on a fresh connection (setup calls, not timed)."""
        client = HTTPClient(self.host, self.port)
        try:
            return client.request(self.raw(method, path, body))
        finally:
            client.close()

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGINT (uvicorn's graceful shutdown), then SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ingest_server(server: Server, corpus: Corpus) -> dict[str, Any]:
    """Create the collection, then PUT the corpus in batches of BATCH from one keep-alive client; vectors/s.

    The request bodies are encoded before the clock starts (encoding is the client's cost, not the server's)."""
    info = {"name": COLLECTION, "dim": corpus.vectors.shape[1], "bits": 4, "metric": "cosine", "index": "hnsw",
            "options": {}}
    server.call("POST", "/collections", info)
    path = f"/collections/{COLLECTION}/points"
    bodies = [server.raw("PUT", path, {"ids": corpus.ids[s], "vectors": corpus.vectors[s],
                                       "metadatas": corpus.metadatas[s], "documents": corpus.documents[s]})
              for s in progress(list(batches(len(corpus))), desc="encode ingest bodies", leave=False)]
    client = HTTPClient(server.host, server.port)
    cpu_before = _cpu_seconds(server.pid)
    try:
        with Timer() as timer:
            for body in progress(bodies, desc="ingest via server", leave=False):
                answer = loads(client.request(body))
    finally:
        client.close()
    server_cpu = _cpu_seconds(server.pid) - cpu_before
    if answer.get("count") != len(corpus):
        raise RuntimeError(f"server ingest: count {answer.get('count')} != {len(corpus)}")
    return {"points": len(corpus), "batch": BATCH, "seconds": timer.seconds,
            "vectors_per_s": len(corpus) / timer.seconds,
            "request_mb": sum(map(len, bodies)) / len(bodies) / 2**20, "server_cpu_s": server_cpu,
            "reconnects": client.reconnects}


def server_caller(server: Server, corpus: Corpus, workload: Workload) -> Callable[[int], Callable]:
    """Per-client callables: one keep-alive socket each, request bytes encoded once up front."""
    path = f"/collections/{COLLECTION}/query"
    bodies = []
    for i in range(len(workload)):
        body: dict[str, Any] = {"vectors": corpus.queries[workload.query[i] : workload.query[i] + 1], "k": K,
                                "include": list(INCLUDE)}
        if workload.filters:
            body["where"] = workload.filters[i].where()
        bodies.append(server.raw("POST", path, body))

    def make(_client: int) -> Callable[[int], bytes]:
        client = HTTPClient(server.host, server.port)

        def call(i: int) -> bytes:
            return client.request(bodies[i])
        call.close = client.close  # type: ignore[attr-defined]
        call.reconnects = lambda: client.reconnects  # type: ignore[attr-defined]
        return call
    return make


def health_rows(server: Server, requests: int) -> list[dict[str, Any]]:
    """GET /health from 1 and 8 clients: the HTTP stack's own cost per request (the floor under a query)."""
    raw = server.raw("GET", "/health")

    def make(_client: int) -> Callable[[int], bytes]:
        client = HTTPClient(server.host, server.port)

        def call(i: int) -> bytes:
            return client.request(raw)
        call.close = client.close  # type: ignore[attr-defined]
        return call

    rows = []
    for clients in CLIENTS:
        run = drive(make, requests, clients, [server.pid])
        ms = 1e3 * run["latency"]
        n = len(ms)
        rows.append({"target": "server", "workload": "GET /health", "clients": clients, "requests": n,
                     "qps": n / run["wall_s"], "p50_ms": float(np.percentile(ms, 50)),
                     "p99_ms": float(np.percentile(ms, 99)), "errors": len(run["errors"]),
                     "server_cpu_ms_per_request": 1e3 * run["server_cpu_s"] / n,
                     "client_cpu_ms_per_request": 1e3 * run["client_cpu_s"] / n})
        print(f"  server       GET /health  {clients} clients: {rows[-1]['qps']:8.1f} QPS, server CPU "
              f"{rows[-1]['server_cpu_ms_per_request']:.2f} ms/request")
    return rows


def server_result(body: bytes) -> dict[str, Any]:
    """The first (only) result of a /query answer."""
    return loads(body)["results"][0]


# ----------------------------------------------------------------------------- runs


def measure_queries(label: str, make_caller: Callable[[Workload], Callable], workloads: Sequence[Workload],
                    corpus: Corpus, requests: int, unwrap: Callable[[Any], dict[str, Any]] = lambda r: r,
                    cpu_pids: Sequence[int] = (), clients_list: Sequence[int] = CLIENTS,
                    payload: bool = True) -> list[dict[str, Any]]:
    """Every workload at every client count: one warm-up, then the timed run; one row each."""
    rows, check = [], payload_checker(corpus)
    for workload in workloads:
        make = make_caller(workload)
        warm = drive(make, min(WARMUP, len(workload)), 1)
        if warm["errors"]:
            print(f"{label} {workload.name} warm-up errors: {warm['errors'][:3]}")
        for clients in clients_list:
            run = drive(make, min(requests, len(workload)), clients, cpu_pids)
            row = summarise(run, workload, lambda a: [int(s) for s in unwrap(a)["ids"]], corpus,
                            (lambda a: check(unwrap(a))) if payload else None)
            row.update({"target": label, "workload": workload.name, "clients": clients,
                        "selectivity": float(np.mean(workload.selectivity[: row["requests"]]))})
            rows.append(row)
            print(f"  {label:<12} {workload.name:<12} {clients} clients: {row['qps']:8.1f} QPS, p50 "
                  f"{row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, recall {row[f'recall@{K}']:.3f}, "
                  f"errors {row['errors']}")
    return rows


def run_ours(corpus: Corpus, workloads: Sequence[Workload], requests: int, api_key: str | None,
             skip_server: bool) -> dict[str, Any]:
    """In-process then server: ingest and query rows for tqsearch."""
    out: dict[str, Any] = {"ingest": [], "rows": []}
    with tempfile.TemporaryDirectory(prefix="tq-service-") as tmp:
        with tqsearch.open(Path(tmp) / "local", dim=corpus.vectors.shape[1], bits=4, metric="cosine",
                           index="hnsw") as c:
            out["collection"] = {"settings": c.settings, "wal_bytes": c.wal_bytes}
            out["ingest"].append({"target": "in-process", **ingest_local(c, corpus)})
            print(f"  in-process ingest: {out['ingest'][-1]['vectors_per_s']:,.0f} vectors/s")
            out["rows"] += measure_queries("in-process", lambda w: local_caller(c, corpus, w), workloads, corpus,
                                           requests)
        if skip_server:
            return out
        root = Path(tmp) / "root"
        root.mkdir()
        server = Server(root, api_key)
        try:
            out["server"] = {"start_s": server.start_s, "command": "python -m tqsearch serve ROOT --host 127.0.0.1"}
            out["ingest"].append({"target": "server", **ingest_server(server, corpus)})
            print(f"  server ingest: {out['ingest'][-1]['vectors_per_s']:,.0f} vectors/s")
            out["rows"] += measure_queries("server", lambda w: server_caller(server, corpus, w), workloads, corpus,
                                           requests, unwrap=server_result, cpu_pids=[server.pid])
            out["health"] = health_rows(server, requests)
            out["server"]["info"] = loads(server.call("GET", f"/collections/{COLLECTION}"))
        except BaseException:
            print(f"server log tail:\n{server.log_tail()}")
            raise
        finally:
            server.stop()
    return out


def ratios(rows: Sequence[dict[str, Any]], goal: float = 0.70) -> list[dict[str, Any]]:
    """server / in-process QPS per workload and client count (the target: >= goal at 8 clients)."""
    by = {(r["target"], r["workload"], r["clients"]): r for r in rows}
    out = []
    for (target, workload, clients), row in by.items():
        local = by.get(("in-process", workload, clients))
        if target == "server" and local:
            ratio = row["qps"] / local["qps"]
            out.append({"workload": workload, "clients": clients, "ratio": ratio,
                        "met": ratio >= goal if clients == max(CLIENTS) else None})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load data, build workloads, then measure ours and/or the peers."""
    n, requests, queries = args.n, args.requests, args.queries
    if args.quick:
        n, requests, queries = n or QUICK["n"], min(requests, QUICK["requests"]), min(queries, QUICK["queries"])
    with Timer() as timer:
        corpus = load_corpus(n, queries)
        workloads = make_workloads(corpus, requests)
    print(f"{len(corpus):,} points, {len(corpus.queries)} queries, {requests} requests per run "
          f"(data + ground truth {timer.seconds:.1f} s)")
    sel = workloads[1].selectivity
    payload: dict[str, Any] = {
        "settings": {"dataset": "wordnet_minilm gloss", "n": len(corpus), "dim": corpus.vectors.shape[1],
                     "queries": len(corpus.queries), "requests": requests, "clients": list(CLIENTS), "k": K,
                     "include": list(INCLUDE), "batch": BATCH, "warmup": WARMUP, "quick": args.quick,
                     "filter": {"kind": "pos == p AND lo <= offset < hi", "target_fraction": FRACTION,
                                "selectivity_mean": float(np.mean(sel)), "selectivity_min": float(np.min(sel)),
                                "selectivity_max": float(np.max(sel)), "seed": SEED,
                                "example": workloads[1].filters[0].where()},
                     "metadata_fields": sorted(corpus.metadatas[0])}}
    if not args.peers_only:
        payload.update(run_ours(corpus, workloads, requests, args.api_key, args.skip_server))
        payload["ratios"] = ratios(payload["rows"])
    if not args.skip_peers:
        from service_peers import run_peers

        payload["peers"] = run_peers(corpus, workloads, requests, args.select, quick=args.quick)
    return payload


# ----------------------------------------------------------------------------- reporting


def markdown(payload: dict[str, Any]) -> str:
    """Tables: ingest, queries (ours and peers), server/in-process ratios."""
    s = payload["settings"]
    f = s["filter"]
    intro = (f"WordNet MiniLM {s['n']:,} x {s['dim']} with metadata ({', '.join(s['metadata_fields'])}) and the text "
             f"as document; {s['requests']:,} requests per run (one query vector each, k={s['k']}, include "
             f"{' + '.join(s['include'])}) split over 1 and 8 concurrent clients. Filtered: `{f['kind']}`, one filter "
             f"per request, selectivity {f['selectivity_mean']:.2%} (min {f['selectivity_min']:.2%}, max "
             f"{f['selectivity_max']:.2%}); recall@{s['k']} against the exact top-{s['k']} among allowed points. "
             "Errors = exceptions + non-2xx answers; bad payloads = returned metadata/documents that differ from the "
             "corpus. Bench CPU = this process (load generator; for in-process and peers also the search itself); "
             "server CPU = the server process.\n")
    lines = ["## Service (bench/service.py)\n", intro]
    peers = payload.get("peers") or {}
    ingest = payload.get("ingest", []) + [dict(r, target=r["name"]) for r in peers.get("ingest", [])]
    if ingest:
        lines += ["| ingest | points | batch | seconds | vectors/s | notes |",
                  "|---|---|---|---|---|---|"]
        for r in ingest:
            note = r.get("note") or (f"{r['request_mb']:.1f} MB JSON per request" if "request_mb" in r else "")
            lines.append(f"| {r['target']} | {r['points']:,} | {r['batch']} | {r['seconds']:.1f} | "
                         f"{r['vectors_per_s']:,.0f} | {note} |")
        lines.append("")
    rows = payload.get("rows", []) + peers.get("rows", [])
    if rows:
        head = ("target", "workload", "clients", "requests", "QPS", "p50 ms", "p99 ms", f"recall@{K}", "errors",
                "bad payloads", "server CPU ms/req", "bench CPU ms/req")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += [_query_row(r) for r in rows] + [""]
    if payload.get("health"):
        lines += ["HTTP floor (`GET /health`, no collection work): " + ", ".join(
            f"{r['clients']} clients {r['qps']:,.0f} QPS, server CPU {r['server_cpu_ms_per_request']:.2f} ms/request"
            for r in payload["health"]) + ".", ""]
    if payload.get("ratios"):
        lines += ["| workload | clients | server / in-process QPS | target >= 0.70 at 8 clients |",
                  "|---|---|---|---|"]
        for r in payload["ratios"]:
            met = "" if r["met"] is None else ("met" if r["met"] else "not met")
            lines.append(f"| {r['workload']} | {r['clients']} | {r['ratio']:.2f} | {met} |")
        lines.append("")
    failed = peers.get("failed", [])
    if failed:
        lines += ["Peers not measured: " + "; ".join(f"{p['name']}: {p['error']}" for p in failed), ""]
    return "\n".join(lines)


def _qps(qps: float) -> str:
    """QPS with a decimal below 100 (slow peers), whole numbers above."""
    return f"{qps:.1f}" if qps < 100 else f"{qps:,.0f}"


def _query_row(r: dict[str, Any]) -> str:
    """One markdown row of a query run."""
    errors = f"{r['errors']}" + (f" ({r['reconnects']} reconnects)" if r.get("reconnects") else "")
    server_cpu = f"{r['server_cpu_ms_per_request']:.2f}" if "server_cpu_ms_per_request" in r else ""
    cells = [r["target"], r["workload"], r["clients"], f"{r['requests']:,}", _qps(r["qps"]), f"{r['p50_ms']:.2f}",
             f"{r['p99_ms']:.2f}", f"{r[f'recall@{K}']:.3f}", errors, r["payload_mismatches"], server_cpu,
             f"{r['client_cpu_ms_per_request']:.2f}"]
    return "| " + " | ".join(map(str, cells)) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 points, 800 requests, 200 queries; JSON to temp")
    parser.add_argument("--n", type=int, default=None, help="use the first n base rows (default: all 116,659)")
    parser.add_argument("--requests", type=int, default=REQUESTS, help="requests per run (split over the clients)")
    parser.add_argument("--queries", type=int, default=1000, help="distinct gloss queries (requests cycle over them)")
    parser.add_argument("--api-key", default=None, help="start the server with --api-key and send it")
    parser.add_argument("--skip-server", action="store_true", help="in-process only (no HTTP)")
    parser.add_argument("--skip-peers", action="store_true", help="tqsearch only")
    parser.add_argument("--peers-only", action="store_true", help="peers only (merged into an existing service.json)")
    parser.add_argument("--select", nargs="*", default=None, help="peer names to run (substrings): qdrant chroma tqdb")
    parser.add_argument("--render-only", action="store_true", help="print the tables of bench/results/service.json")
    args = parser.parse_args()
    if args.render_only:
        payload = json.loads((RESULTS / "service.json").read_text())["results"]
    else:
        payload = run(args)
        print(f"wrote {save(payload, args)}")
    text = markdown(payload)
    if args.quick or args.n:
        print(f"prefix run: docs untouched; plot at {plot(payload, Path(tempfile.gettempdir()) / 'service_quick.png')}")
    else:
        update_markdown_section("service", text)
        print(f"wrote {BENCH_MD} and {plot(payload, BENCH_MD.parent / 'service.png')}")
    print(text)


def plot(payload: dict[str, Any], path: Path) -> Path:
    """QPS (x, log) vs recall@10 per target, unfiltered (circles) and 1% filtered (squares); 8 clients filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload.get("rows", []) + (payload.get("peers") or {}).get("rows", [])
    fig, ax = plt.subplots(figsize=(9.5, 6))
    colors: dict[str, Any] = {}
    for r in rows:
        color = colors.setdefault(r["target"], f"C{len(colors)}")
        marker = "o" if r["workload"] == "unfiltered" else "s"
        ax.plot(r["qps"], r[f"recall@{K}"], marker, ms=8, color=color, mfc=color if r["clients"] == 8 else "none",
                label=f"{r['target']}, {r['workload']}, {r['clients']} client{'s' if r['clients'] > 1 else ''}")
    s = payload["settings"]
    ax.set(xscale="log", xlabel="queries per second (log)", ylabel=f"recall@{K}",
           title=f"Service load test, WordNet MiniLM {s['n']:,} points with metadata (k={K})")
    return finish_plot(fig, ax, path, "best")


def save(payload: dict[str, Any], args: argparse.Namespace) -> Path:
    """bench/results/service.json for full runs (a peers-only run replaces just its "peers" part);
    quick runs and prefix runs go to the temp folder."""
    if args.quick or args.n:
        path = Path(tempfile.gettempdir()) / "service_quick.json"
        path.write_text(json.dumps({"machine": machine_info(), "results": payload}, indent=2, default=_json_default))
        return path
    if args.peers_only and (RESULTS / "service.json").exists():
        merged = json.loads((RESULTS / "service.json").read_text())["results"]
        merged["peers"] = payload.get("peers")
        payload = merged
    return write_json("service", payload)


if __name__ == "__main__":
    main()
