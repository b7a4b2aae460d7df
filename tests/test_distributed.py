"""Sharded collections on a real local Ray cluster (three raylets on this machine, loopback only, no dashboard).

One machine shares one disk: a replica restarted on another "node" finds its directory again, which a
real cluster with local disks would not. These tests therefore prove restarts, log replay, failover and
routing, not survival of a lost disk (docs/scaling.md says what replicas=1 guarantees).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import threading
import time

import numpy as np
import pytest
from conftest import run_threads

import tqsearch
from tqsearch import relevance
from tqsearch.errors import InvalidArgumentError, NotFoundError

# Read by Ray when it is imported: with it, Ray resolves its own address to 127.0.0.1 (and a cluster of
# several raylets on one machine is allowed)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")  # Ray ships it (ray/thirdparty_files), importable once Ray is
cluster_utils = pytest.importorskip("ray.cluster_utils")
td = pytest.importorskip("tqsearch.distributed")

DIM = 32
LOOPBACK = {"node_ip_address": "127.0.0.1"}


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes on 127.0.0.1, and this process connected to them; all stopped after."""
    c = cluster_utils.Cluster(initialize_head=True,
                              head_node_args={"num_cpus": 1, "include_dashboard": False, **LOOPBACK})
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, **LOOPBACK)
        ray.init(address=c.address, _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def points(n: int, seed: int, start: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"ids": [f"p{i}" for i in range(start, start + n)],
            "vectors": rng.standard_normal((n, DIM)).astype(np.float32),
            "metadatas": [{"g": i % 10, "tag": f"t{i % 3}"} for i in range(start, start + n)],
            "documents": [f"doc {i}" for i in range(start, start + n)]}


def same_points(c, expected: dict) -> None:
    """Every point of `expected` is in `c` with its vector, metadata and document."""
    got = c.get(expected["ids"], include=["metadatas", "documents", "vectors"])
    assert got["ids"] == expected["ids"]
    assert got["metadatas"] == expected["metadatas"] and got["documents"] == expected["documents"]
    np.testing.assert_array_equal(got["vectors"], expected["vectors"])


def killed(handle, timeout: float = 60.0) -> None:
    """Kill a replica for good and return once calls to it fail: ray.kill returns before the actor is gone, and a
    query sent meanwhile may still be answered by it."""
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(handle.count.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            continue
        time.sleep(0.05)
    raise AssertionError(f"a killed replica still answers after {timeout:.0f} s")


def test_every_ray_port_is_on_loopback(cluster):
    ours = [psutil.Process(), *psutil.Process().children(recursive=True)]
    pids = {p.pid for p in ours}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert len(listening) >= 3  # the GCS and each raylet at least
    outside = [(c.pid, c.laddr) for c in listening if not loopback(c.laddr.ip)]
    assert outside == []


def loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also written as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.mark.parametrize("shards", [3, 1])  # one shard answers alone, with no merge
def test_answers_equal_one_collection(cluster, tmp_path, shards):
    data = points(20_000, seed=1)
    queries = np.random.default_rng(2).standard_normal((40, DIM)).astype(np.float32)
    single = tqsearch.open(tmp_path / "single", dim=DIM, index="flat")
    with td.open("eq", tmp_path, dim=DIM, shards=shards, index="flat") as dc:
        for start in range(0, 20_000, 5_000):
            batch = {key: value[start : start + 5_000] for key, value in data.items()}
            single.upsert(**batch)
            dc.upsert(**batch)
        assert dc.count() == single.count() == 20_000
        for where in (None, {"g": 3}, {"tag": {"$in": ["t1", "t2"]}}):
            for k, rescore in ((10, None), (25, 0), (5, 8)):
                got = dc.query(queries, k, where=where, rescore=rescore, include=["metadatas", "documents"])
                want = single.query(queries, k, where=where, rescore=rescore, include=["metadatas", "documents"])
                assert [r["ids"] for r in got] == [r["ids"] for r in want]
                assert [r["metadatas"] for r in got] == [r["metadatas"] for r in want]
                for g, w in zip(got, want):
                    np.testing.assert_allclose(g["scores"], w["scores"], rtol=0, atol=1e-6)
        assert dc.count() == sum(len(ray.get(h[0].get.remote(None, None, (), None, 0))["ids"])
                                 for h in dc.shard_handles())
        page = dc.get(where={"g": 4}, include=[], limit=7, offset=5)
        everything = dc.get(where={"g": 4}, include=[])
        assert page["ids"] == everything["ids"][5:12] and len(everything["ids"]) == 2_000
        doomed = data["ids"][:100]
        dc.delete(doomed)
        single.delete(doomed)
        got, want = dc.query(queries, 10), single.query(queries, 10)
        assert [r["ids"] for r in got] == [r["ids"] for r in want]
    single.close()


@pytest.mark.parametrize("shards", [3, 1])
def test_min_relevance_equals_one_collections(cluster, tmp_path, shards):
    """min_relevance over shards keeps the hits one Collection keeps, with the same relevance: the default
    model and a fitted one that reads the query (kept in relevance.json across a reopen)."""
    data = points(4_000, seed=7)
    queries = data["vectors"][:12] + 0.3 * np.random.default_rng(8).standard_normal((12, DIM)).astype(np.float32)
    fitted = relevance.RelevanceModel([-3.0, 20.0, -20.0, 0.0], tail=20,
                                      query_weights=np.random.default_rng(9).standard_normal(DIM))
    single = tqsearch.open(tmp_path / "single", dim=DIM, index="flat", metric="cosine")
    single.upsert(**data)
    with td.open("rel", tmp_path, dim=DIM, shards=shards, index="flat", metric="cosine") as dc:
        dc.upsert(**data)
        for model in (None, fitted):
            single.set_relevance(model)
            dc.set_relevance(model)
            for where, p in ((None, 0.0), (None, 0.5), ({"g": 3}, 0.5), (None, 1.0)):
                got = dc.query(queries, 10, where=where, min_relevance=p, include=["documents"])
                want = single.query(queries, 10, where=where, min_relevance=p, include=["documents"])
                assert [r["ids"] for r in got] == [r["ids"] for r in want]
                assert [r["documents"] for r in got] == [r["documents"] for r in want]
                for g, w in zip(got, want):
                    np.testing.assert_allclose(g["scores"], w["scores"], rtol=0, atol=1e-6)
                    np.testing.assert_allclose(g["relevance"], w["relevance"], rtol=0, atol=1e-6)
                assert p < 1 or all(r["ids"] == [] for r in got)
            kept = sum(len(r["ids"]) for r in dc.query(queries, 10, min_relevance=0.5, include=[]))
            assert 0 < kept < 10 * len(queries)  # the threshold cuts some hits and keeps others
    with td.open("rel", tmp_path) as dc:
        assert dc.relevance_model == fitted
    single.close()


def test_queries_apply_one_model_while_set_relevance_changes_it(cluster, tmp_path):
    """Driver threads query with min_relevance while another swaps the relevance model: every answer is what
    one of the two models gives (the models keep different tails, so a mix would match neither)."""
    data = points(2_000, seed=11)
    queries = data["vectors"][:8]
    models = [None, relevance.RelevanceModel([-3.0, 20.0, -20.0, 0.0], tail=8)]
    errors: list[BaseException] = []
    with td.open("swap", tmp_path, dim=DIM, shards=2, index="flat") as dc:
        dc.upsert(**data)
        want = []
        for model in models:
            dc.set_relevance(model)
            want.append([(r["ids"], r["relevance"]) for r in dc.query(queries, 10, min_relevance=0.3, include=[])])
        assert want[0] != want[1]
        stop = threading.Event()

        def swap() -> None:
            try:
                for r in range(40):
                    dc.set_relevance(models[r % 2])
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        def read() -> None:
            try:
                for _ in range(100):
                    if stop.is_set():
                        return
                    got = [(r["ids"], r["relevance"]) for r in dc.query(queries, 10, min_relevance=0.3, include=[])]
                    assert got in want
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        run_threads([threading.Thread(target=swap)], [threading.Thread(target=read) for _ in range(2)], stop)
        assert not errors, errors[0]


def test_hnsw_shards_reach_the_recall_of_one_collection(cluster, tmp_path):
    data = points(4_000, seed=3)
    queries = np.random.default_rng(4).standard_normal((50, DIM)).astype(np.float32)
    x = data["vectors"] / np.linalg.norm(data["vectors"], axis=1, keepdims=True)
    truth = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    with td.open("hnsw", tmp_path, dim=DIM, shards=2) as dc:
        dc.upsert(**data)
        got = dc.query(queries, 10, include=[])
    recall = np.mean([len({f"p{i}" for i in t} & set(r["ids"])) / 10 for t, r in zip(truth, got)])
    assert recall >= 0.95


def test_reopen_reads_settings_back_and_checks_them(cluster, tmp_path):
    data = points(300, seed=5)
    with td.open("re", tmp_path, dim=DIM, shards=2, replicas=2, bits=3, metric="ip", index="flat") as dc:
        dc.upsert(**data)
    with td.open("re", tmp_path) as dc:
        assert (dc.shards, dc.replicas, dc.dim) == (2, 2, DIM)
        assert (dc.settings["bits"], dc.settings["metric"], dc.settings["index"]) == (3, "ip", "flat")
        same_points(dc, data)
    with pytest.raises(InvalidArgumentError, match="shards=3 does not match the collection's shards=2"):
        td.open("re", tmp_path, shards=3)
    with pytest.raises(InvalidArgumentError, match="dim=8 does not match the collection's dim=32"):
        td.open("re", tmp_path, dim=8)
    single = tqsearch.open(tmp_path / "one", dim=DIM)
    single.close()
    with pytest.raises(InvalidArgumentError, match="dim=8 does not match the collection's dim=32"):
        tqsearch.open(tmp_path / "one", dim=8)  # the same words as a Collection's


def test_bad_input_gets_a_collections_errors(cluster, tmp_path):
    with pytest.raises(InvalidArgumentError, match="holds no collection: pass dim to create one"):
        td.open("nothing", tmp_path)
    with pytest.raises(InvalidArgumentError, match="holds no collection: pass dim to create one"):
        tqsearch.open(tmp_path / "nothing-single")
    with pytest.raises(InvalidArgumentError, match="collection name"):
        td.open("../up", tmp_path, dim=DIM)
    with pytest.raises(InvalidArgumentError, match="shards must be >= 1"):
        td.open("zero", tmp_path, dim=DIM, shards=0)
    with td.open("bad", tmp_path, dim=DIM, shards=2, index="flat") as dc:
        data = points(50, seed=6)
        dc.upsert(**data)
        with pytest.raises(InvalidArgumentError, match="queries must have 32 columns|dim"):
            dc.query(np.zeros((1, 5), np.float32), 3)
        with pytest.raises(InvalidArgumentError):  # one bad row: nothing of the batch is written anywhere
            dc.upsert(["a", "b"], np.array([[1.0] * DIM, [np.nan] * DIM], np.float32))
        with pytest.raises(NotFoundError, match="unknown id 'nope'"):
            dc.delete(["p1", "nope"])
        with pytest.raises(NotFoundError):
            dc.get(["nope"])
        assert dc.count() == 50 and "p1" in dc.get(["p1"])["ids"]
    with pytest.raises(tqsearch.ClosedError):
        dc.count()
    with tqsearch.open(tmp_path / "bad" / "shard-1" / "replica-0"):  # a replica's directory held elsewhere
        with pytest.raises(td.ShardUnavailableError, match="shard 1 of 'bad': a replica did not start.*already open"):
            td.open("bad", tmp_path)
    with td.open("bad", tmp_path) as dc:  # the failed open stopped its actors; nothing was lost
        assert dc.count() == 50


def test_writes_survive_killed_shards(cluster, tmp_path):
    acknowledged = points(0, seed=0)
    with td.open("kill", tmp_path, dim=DIM, shards=2, index="flat") as dc:
        for step in range(6):
            batch = points(500, seed=10 + step, start=step * 500)
            if step in (1, 3):  # kill a shard between writes: the next write waits for its restart
                ray.kill(dc.shard_handles()[step % 2][0], no_restart=False)
            killer = threading.Timer(0.02, ray.kill, (dc.shard_handles()[0][0],), {"no_restart": False})
            if step == 4:  # and once while the write is in flight: Ray retries it on the restarted actor
                killer.start()
            dc.upsert(**batch)
            if step == 4:
                killer.join()
            for key in acknowledged:
                acknowledged[key] = (np.concatenate([acknowledged[key], batch[key]]) if key == "vectors"
                                     else acknowledged[key] + batch[key])
        assert dc.count() == 3_000
    with td.open("kill", tmp_path) as dc:  # new actors, each replaying its directory
        assert dc.count() == 3_000
        same_points(dc, acknowledged)


def test_a_replica_that_lost_its_disk_is_rebuilt_from_another(cluster, tmp_path):
    data = points(1_500, seed=60)
    with td.open("lost", tmp_path, dim=DIM, shards=2, replicas=2, index="flat") as dc:
        dc.upsert(**data)
    shutil.rmtree(tmp_path / "lost" / "shard-1" / "replica-0")  # what a node's lost disk looks like
    with td.open("lost", tmp_path) as dc:  # the replica starts empty, stale; open() repairs it
        assert dc.repair() == []  # nothing left to copy
        for row in dc.shard_handles():
            counts = ray.get([h.count.remote() for h in row])
            assert counts[0] == counts[1] > 0
        same_points(dc, data)
        only = dc.shard_handles()[1][0]  # the rebuilt replica alone answers its shard's points
        ids = [i for i, s in zip(data["ids"], td._routing.shard_of(data["ids"], 2)) if s == 1]
        assert ray.get(only.get.remote(ids, None, (), None, 0))["ids"] == ids


def test_writes_survive_a_removed_node_and_replicas_answer(cluster, tmp_path):
    data = points(2_000, seed=20)
    queries = np.random.default_rng(21).standard_normal((5, DIM)).astype(np.float32)
    with td.open("node", tmp_path, dim=DIM, shards=2, replicas=2, index="flat") as dc:
        handles = dc.shard_handles()
        for row in handles:  # replicas of one shard on different nodes
            assert len(set(ray.get([h.node.remote() for h in row]))) == 2
        dc.upsert(**{key: value[:1_000] for key, value in data.items()})
        before = dc.query(queries, 10)
        ray.kill(handles[0][0], no_restart=False)
        ray.kill(handles[1][1], no_restart=False)
        assert dc.query(queries, 10) == before  # the other replica of each shard answers
        nodes = {h: n for h, n in zip([h for row in handles for h in row],
                                      ray.get([h.node.remote() for row in handles for h in row]))}
        doomed = next(n for n in cluster.worker_nodes if n.node_id in nodes.values())
        cluster.remove_node(doomed)  # its replicas come back on the other nodes (one disk here: same directories)
        dc.upsert(**{key: value[1_000:] for key, value in data.items()})
        assert dc.count() == 2_000
        same_points(dc, data)
        for row in dc.shard_handles():  # every replica, each asked on its own, holds its shard whole
            counts = ray.get([h.count.remote() for h in row])
            assert counts[0] == counts[1] > 0


def test_no_silent_partial_answers(cluster, tmp_path):
    with td.open("partial", tmp_path, dim=DIM, shards=2, index="flat") as dc:
        data = points(400, seed=30)
        dc.upsert(**data)
        full = dc.query(data["vectors"][:3], 5, include=[], rescore=0)  # ranked by codes: shard 0's best

        killed(dc.shard_handles()[1][0])  # gone for good: no replica left for shard 1
        with pytest.raises(td.ShardUnavailableError, match="shard 1 of 'partial'"):
            dc.query(data["vectors"][:3], 5)
        partial = dc.query(data["vectors"][:3], 5, include=[], rescore=0, allow_partial=True)
        owner = td._routing.shard_of(data["ids"], 2)
        for got, want in zip(partial, full):
            assert got["missing_shards"] == [1]
            assert all(owner[int(i[1:])] == 0 for i in got["ids"])
            kept = [i for i in want["ids"] if owner[int(i[1:])] == 0]
            assert got["ids"][: len(kept)] == kept


def test_build_from_files_ingests_each_partition(cluster, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data = points(3_000, seed=40)
    np.save(tmp_path / "rows.npy", data["vectors"])
    table = pa.table({"id": data["ids"], "vector": list(data["vectors"]), "document": data["documents"],
                      "g": [m["g"] for m in data["metadatas"]]})
    pq.write_table(table, tmp_path / "rows.parquet")
    with td.open("npy", tmp_path, dim=DIM, shards=2, replicas=2, index="flat") as dc:
        assert td.build(dc, tmp_path / "rows.npy", batch=700, progress=False) == 3_000
        got = dc.get([str(i) for i in (0, 1_234, 2_999)], include=["vectors"])
        np.testing.assert_array_equal(got["vectors"], data["vectors"][[0, 1_234, 2_999]])
        for row in dc.shard_handles():
            assert ray.get(row[0].count.remote()) == ray.get(row[1].count.remote()) > 0
        assert dc.count() == 3_000
    with td.open("pq", tmp_path, dim=DIM, shards=3, index="flat") as dc:
        assert td.build(dc, tmp_path / "rows.parquet", batch=1_000, progress=False) == 3_000
        same_points(dc, {**data, "metadatas": [{"g": m["g"]} for m in data["metadatas"]]})
        with pytest.raises(InvalidArgumentError, match="rows have 32 values, the collection's dim is 8"):
            with td.open("narrow", tmp_path, dim=8) as narrow:
                td.build(narrow, tmp_path / "rows.npy")


def test_serve_ray_answers_through_the_rest_api(cluster, tmp_path, start_server):
    httpx = pytest.importorskip("httpx")
    data = points(600, seed=50)
    server = start_server(str(tmp_path / "served"), "--ray", cluster.address, "--shards", "2")
    client = httpx.Client(base_url=server.url, timeout=60)
    spec = {"name": "web", "dim": DIM, "index": "flat", "options": {"replicas": 2}}
    assert client.post("/collections", json=spec).status_code == 201
    body = {"ids": data["ids"], "vectors": data["vectors"].tolist(), "metadatas": data["metadatas"]}
    assert client.put("/collections/web/points", json=body).json() == {"upserted": 600, "count": 600}
    queries = data["vectors"][:4] + 0.1
    got = client.post("/collections/web/query", json={"vectors": queries.tolist(), "k": 5, "where": {"g": 2},
                                                      "include": []}).json()["results"]
    relevant = client.post("/collections/web/query", json={"vectors": queries.tolist(), "k": 5,
                                                           "min_relevance": 0.5, "include": []}).json()["results"]
    assert client.get("/collections/web").json()["count"] == 600
    assert client.post("/collections/web/points/get", json={"ids": ["nope"]}).status_code == 404
    assert client.post("/collections", json={"name": "gone", "dim": 4}).status_code == 201
    assert client.delete("/collections/gone").json() == {"dropped": "gone"}
    assert [c["name"] for c in client.get("/collections").json()["collections"]] == ["web"]
    assert not (tmp_path / "served" / "gone").exists()
    client.close()
    assert server.stop() == 0
    single = tqsearch.open(tmp_path / "single", dim=DIM, index="flat")
    single.upsert(data["ids"], data["vectors"], data["metadatas"])
    want = single.query(queries, 5, where={"g": 2}, include=[])
    assert [r["ids"] for r in got] == [r["ids"] for r in want]
    want = single.query(queries, 5, min_relevance=0.5, include=[])
    assert [r["ids"] for r in relevant] == [r["ids"] for r in want] and any(r["ids"] for r in want)
    np.testing.assert_allclose(sum((r["relevance"] for r in relevant), []), sum((r["relevance"] for r in want), []),
                               atol=1e-6)
    single.close()
    with td.open("web", tmp_path / "served") as dc:  # what the server acknowledged is on disk
        assert (dc.shards, dc.replicas, dc.count()) == (2, 2, 600)


def test_driver_threads_query_while_others_write(cluster, tmp_path):
    """Several driver threads share one DistributedCollection: queries restricted to untouched points keep
    their exact answer (flat shards) while two threads upsert and delete other points on every shard."""
    stable = points(3_000, seed=5)
    stable["metadatas"] = [{"stable": True}] * 3_000
    queries = stable["vectors"][:16]
    errors: list[BaseException] = []
    answered: list[int] = []  # reader rounds finished while the writers ran
    with td.open("rw", tmp_path, dim=DIM, shards=3, index="flat") as dc:
        dc.upsert(**stable)
        want = dc.query(queries, 10, where={"stable": True}, include=[])
        stop = threading.Event()

        def write(seed: int) -> None:
            try:
                for r in range(8):
                    churn = points(150, seed=1_000 + 100 * seed + r, start=10_000 * (seed + 1) + 150 * r)
                    churn["metadatas"] = [{"stable": False}] * 150
                    dc.upsert(**churn)
                    dc.delete(churn["ids"][:100])
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        def read() -> None:
            try:
                for _ in range(200):
                    if stop.is_set():
                        return
                    got = dc.query(queries, 10, where={"stable": True}, include=[])
                    assert [g["ids"] for g in got] == [w["ids"] for w in want]
                    assert [h["ids"][0] for h in dc.query(queries, 1, include=[])] == stable["ids"][:16]
                    answered.append(1)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        run_threads([threading.Thread(target=write, args=(i,)) for i in range(2)],
                    [threading.Thread(target=read) for _ in range(2)], stop)
        assert not errors, errors[0]
        assert len(answered) >= 4
        assert dc.count() == 3_000 + 2 * 8 * 50
        same_points(dc, {key: value[:50] for key, value in stable.items()})
