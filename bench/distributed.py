"""Sharded collections on Ray: ingest and query throughput with 1, 2, 4 shards on one and two Ray nodes,
p50/p99 latency of single queries, the cost of the Ray hop against a bare actor round trip measured in the
same run, and recovery after a killed shard.

Every node is a raylet on this machine (ray.cluster_utils, loopback only, no dashboard), so "two nodes"
means two schedulers sharing the same cores and disk: the figures give the overhead of the layer, not
the speed-up of more machines (docs/scaling.md models that). Data: the first N WordNet MiniLM rows
(d=384, 4-bit HNSW, cosine), queries from the WordNet gloss queries.
Writes bench/results/distributed.json and the "Measured" section of docs/scaling.md.

    python bench/distributed.py            # 20,000 points, 300 single queries per configuration
    python bench/distributed.py --quick    # 5,000 points, 100 queries (JSON in the temp folder)
"""

from __future__ import annotations

from common import RESULTS, exact_knn, load_wordnet, machine_info, recall_at_k, update_markdown_section, write_json

# isort: split
import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read at import: Ray resolves itself to 127.0.0.1

import numpy as np
import ray
from ray.cluster_utils import Cluster

import tqsearch
import tqsearch.distributed as td

SCALING_MD = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"
K, BATCH, BATCH_QUERIES = 10, 2_000, 100


@ray.remote(num_cpus=0)
class Echo:
    """The bare actor round trip: one query row in, a small answer out."""

    def echo(self, q: np.ndarray) -> list[dict[str, Any]]:
        return [{"ids": ["x"] * K, "scores": [0.0] * K}]


def latencies(fn, queries: np.ndarray) -> dict[str, float]:
    """p50/p99 in ms of fn(one query row), one call at a time."""
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q[None, :])
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def throughput(collection, base: np.ndarray, queries: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Ingest (points/s, batches of BATCH), batched query QPS and recall@10, single-query latency."""
    ids = [str(i) for i in range(len(base))]
    start = time.perf_counter()
    for s in range(0, len(base), BATCH):
        collection.upsert(ids[s : s + BATCH], base[s : s + BATCH])
    ingest = len(base) / (time.perf_counter() - start)
    collection.query(queries[:5], K, include=[])  # warm
    start = time.perf_counter()
    found = [r["ids"] for b in range(0, len(queries), BATCH_QUERIES)
             for r in collection.query(queries[b : b + BATCH_QUERIES], K, include=[])]
    qps = len(queries) / (time.perf_counter() - start)
    found_ids = np.array([[int(i) for i in row] for row in found])
    return {"ingest_points_per_s": ingest, "qps_batched": qps, "recall@10": recall_at_k(found_ids, gt, K),
            **latencies(lambda q: collection.query(q, K, include=[]), queries)}


def recovery(tmp: Path, base: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """Seconds from ray.kill of a shard to its next good answer (replicas=1), and the first query's latency
    with replicas=2 (failover to the other replica)."""
    out = {}
    for replicas in (1, 2):
        with td.open(f"recover{replicas}", tmp, dim=base.shape[1], shards=2, replicas=replicas) as dc:
            dc.upsert([str(i) for i in range(len(base))], base)
            ray.kill(dc.shard_handles()[0][0], no_restart=False)
            start = time.perf_counter()
            while True:
                try:
                    dc.query(queries[:1], K, include=[])
                    break
                except td.ShardUnavailableError:
                    time.sleep(0.05)
            out[f"replicas={replicas}_s"] = time.perf_counter() - start
    return out


def run_cluster(nodes: int, tmp: Path, base: np.ndarray, queries: np.ndarray, gt: np.ndarray,
                shard_counts: list[int], extra: bool) -> dict[str, Any]:
    """One Ray cluster of `nodes` raylets: the in-process and bare-actor baselines, then each shard count."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "node_ip_address": "127.0.0.1"})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1", logging_level="warning",
                 log_to_driver=False)
        echo = Echo.remote()
        ray.get(echo.echo.remote(queries[:1]))
        out: dict[str, Any] = {"bare_actor": latencies(lambda q: ray.get(echo.echo.remote(q)), queries)}
        if extra:
            with tqsearch.open(tmp / f"single{nodes}", dim=base.shape[1]) as c:
                out["in_process"] = throughput(c, base, queries, gt)
        for shards in shard_counts:
            with td.open(f"n{nodes}s{shards}", tmp, dim=base.shape[1], shards=shards) as dc:
                out[f"shards={shards}"] = throughput(dc, base, queries, gt)
                print(nodes, shards, out[f"shards={shards}"], flush=True)
        if extra:
            out["recovery"] = recovery(tmp, base, queries)
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"{res['n']:,} WordNet MiniLM points (d=384, 4-bit HNSW, cosine, vectors kept, exact re-ranking), "
             f"{res['queries']} queries, k={K}; {m['cpu']} ({m['cores_allowed']} cores), kernels {res['simd']}; every Ray node a "
             "raylet on this machine (same cores, same disk). Latency: one query per call; QPS: batches of "
             f"{BATCH_QUERIES}; ingest: batches of {BATCH:,}.", "",
             "| nodes | setup | ingest points/s | QPS (batched) | p50 ms | p99 ms | recall@10 |",
             "|---|---|---|---|---|---|---|"]
    for nodes, runs in res["clusters"].items():
        for setup, r in runs.items():
            if "ingest_points_per_s" in r:
                lines.append(f"| {nodes} | {setup} | {r['ingest_points_per_s']:,.0f} | {r['qps_batched']:,.0f} | "
                             f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['recall@10']:.3f} |")
            elif setup == "bare_actor":
                lines.append(f"| {nodes} | bare actor round trip | | | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | |")
    one = res["clusters"]["1"]
    hop = one["shards=1"]["p50_ms"] - one["in_process"]["p50_ms"]
    lines += ["", f"Ray hop (1 shard p50 - in-process p50): {hop:.2f} ms = {hop / one['bare_actor']['p50_ms']:.2f}x "
                  f"one bare actor round trip ({one['bare_actor']['p50_ms']:.2f} ms) in the same run.",
              f"Recovery after ray.kill of one shard (2 shards, {res['n']:,} points): replicas=1, "
              f"{one['recovery']['replicas=1_s']:.2f} s until the shard answers again; replicas=2, the first "
              f"query after the kill took {one['recovery']['replicas=2_s']:.2f} s (failover)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, nq = (5_000, 100) if args.quick else (20_000, 300)
    base, queries, _ = load_wordnet(limit=n)
    queries = queries[:nq]
    gt = exact_knn(base / np.linalg.norm(base, axis=1, keepdims=True), queries, K)
    res: dict[str, Any] = {"n": n, "queries": nq, "machine": machine_info(), "simd": tqsearch.simd_level(),
                           "clusters": {}}
    with tempfile.TemporaryDirectory(prefix="tqsearch-dist-") as tmp:
        res["clusters"]["1"] = run_cluster(1, Path(tmp), base, queries, gt, [1, 2, 4], extra=True)
        res["clusters"]["2"] = run_cluster(2, Path(tmp), base, queries, gt, [2, 4], extra=False)
    if args.quick:
        print(markdown(res))
        return
    write_json("distributed", res)
    update_markdown_section("Measured", markdown(res), SCALING_MD)
    print(markdown(res))
    print(f"wrote {RESULTS / 'distributed.json'} and {SCALING_MD}")


if __name__ == "__main__":
    main()
