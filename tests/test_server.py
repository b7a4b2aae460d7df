"""The HTTP server through a real uvicorn on 127.0.0.1: REST round trips against in-process collections,
validation (4xx and no state change), API keys, persistence and graceful shutdown."""

import json
import signal

import httpx
import numpy as np
import pytest

from tqsearch import open as open_collection
from tqsearch.datasets import load_demo_corpus
from tqsearch.demo import demo_points
from tqsearch.embed import load_embedder
from tqsearch.server.schemas import MAX_K

pytest.importorskip("fastapi")

N = 1_500
SPEC = {"name": "glosses", "dim": 384, "bits": 4, "metric": "cosine", "index": "hnsw", "options": {"seed": 3, "threads": 1}}
WHERES = [{"pos": "verb"}, {"$and": [{"pos": "noun"}, {"len": {"$lt": 60}}]}, {"len": {"$gte": 200}},
          {"$or": [{"pos": {"$in": ["adverb", "verb"]}}, {"$not": {"len": {"$gt": 40}}}]}, {"pos": "none"}]


@pytest.fixture(scope="module")
def points() -> dict:
    """The first N bundled glosses with documents and metadata (pos, lemma, synset, text length)."""
    demo = demo_points()
    return {"ids": demo["ids"][:N], "vectors": demo["vectors"][:N], "documents": demo["documents"][:N],
            "metadatas": [md | {"len": len(doc)} for md, doc in zip(demo["metadatas"][:N], demo["documents"])]}


def _upsert_body(points: dict, rows: slice) -> dict:
    return {"ids": points["ids"][rows], "vectors": points["vectors"][rows].tolist(),
            "metadatas": points["metadatas"][rows], "documents": points["documents"][rows]}


def _fill(client: httpx.Client, points: dict) -> None:
    assert client.post("/collections", json=SPEC).status_code == 201
    for start in range(0, N, 500):
        r = client.put("/collections/glosses/points", json=_upsert_body(points, slice(start, start + 500)))
        assert r.status_code == 200 and r.json() == {"upserted": 500, "count": min(start + 500, N)}


@pytest.fixture
def served(start_server, tmp_path, points):
    """A server over a fresh root holding collection "glosses", and an in-process twin built the same way."""
    server = start_server(str(tmp_path / "root"))
    client = httpx.Client(base_url=server.url, timeout=60)
    _fill(client, points)
    twin = open_collection(tmp_path / "twin", dim=384, bits=4, metric="cosine", index="hnsw", seed=3, threads=1)
    for start in range(0, N, 500):
        twin.upsert(**{key: value[start:start + 500] for key, value in points.items()})
    yield client, twin
    client.close()
    twin.close()


def test_collections_create_list_get_drop(start_server, tmp_path):
    server = start_server(str(tmp_path))
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/collections").json() == {"collections": []}
        r = client.post("/collections", json={"name": "a", "dim": 8, "index": "flat"})
        assert r.status_code == 201
        assert r.json() == {"name": "a", "dim": 8, "bits": 4, "metric": "cosine", "index": "flat",
                            "vectors": "float32", "options": {}, "count": 0}
        assert client.post("/collections", json={"name": "b", "dim": 4, "bits": 2, "metric": "l2",
                                                 "vectors": None}).status_code == 201
        assert client.get("/collections/b").json()["vectors"] is None
        assert client.post("/collections", json={"name": "a", "dim": 8}).status_code == 409
        assert [c["name"] for c in client.get("/collections").json()["collections"]] == ["a", "b"]
        assert client.get("/collections/b").json()["metric"] == "l2"
        assert client.delete("/collections/a").json() == {"dropped": "a"}
        assert client.get("/collections/a").status_code == 404
        assert client.delete("/collections/a").status_code == 404
        assert not (tmp_path / "a").exists()
        assert client.post("/collections", json={"name": "a", "dim": 3}).json()["dim"] == 3  # the name is free again


def test_points_and_queries_match_the_in_process_collection(served, points):
    client, twin = served
    rows = [5, 0, 1234]
    got = client.post("/collections/glosses/points/get",
                      json={"ids": [points["ids"][i] for i in rows], "include": ["metadatas", "documents", "vectors"]})
    assert got.status_code == 200
    got = got.json()
    assert got["ids"] == [points["ids"][i] for i in rows]
    assert got["metadatas"] == [points["metadatas"][i] for i in rows]
    assert got["documents"] == [points["documents"][i] for i in rows]
    np.testing.assert_array_equal(np.array(got["vectors"], dtype=np.float32), points["vectors"][rows])  # exact
    queries = load_demo_corpus().queries[:20]
    for where in [None, *WHERES]:
        rescore = 0 if where is None else 4  # both ways through the API
        r = client.post("/collections/glosses/query", json={"vectors": queries.tolist(), "k": 10, "where": where,
                                                            "rescore": rescore})
        assert r.status_code == 200, r.text
        expected = twin.query(queries, 10, where=where, rescore=rescore)
        for mine, theirs in zip(r.json()["results"], expected):
            assert mine["ids"] == theirs["ids"] and mine["metadatas"] == theirs["metadatas"]
            np.testing.assert_allclose(mine["scores"], theirs["scores"], rtol=1e-6)


def test_filtered_get_and_paging(served, points):
    client, twin = served
    for where in WHERES:
        r = client.post("/collections/glosses/points/get", json={"where": where, "include": []}).json()
        assert r["ids"] == twin.get(where=where, include=())["ids"]
    everything = twin.get(include=())["ids"]
    page = client.post("/collections/glosses/points/get", json={"include": [], "limit": 7, "offset": 100}).json()
    assert page["ids"] == everything[100:107]


def test_query_with_k_at_the_limit_returns_every_point_once(served, points):
    """k = MAX_K on a smaller HNSW collection: every point exactly once; a larger k is a 422 naming k."""
    client, _ = served
    r = client.post("/collections/glosses/query", json={"vectors": points["vectors"][:2].tolist(), "k": MAX_K,
                                                        "include": []})
    assert r.status_code == 200
    for result in r.json()["results"]:
        assert sorted(result["ids"]) == sorted(points["ids"])
    r = client.post("/collections/glosses/query", json={"vectors": points["vectors"][:1].tolist(), "k": 10**12})
    assert r.status_code == 422 and "body.k" in r.text


def test_delete_and_upsert_change_what_queries_see(served, points):
    client, _ = served
    gone = points["ids"][:10]
    assert client.post("/collections/glosses/points/delete", json={"ids": gone}).json() == {"deleted": 10,
                                                                                             "count": N - 10}
    r = client.post("/collections/glosses/query", json={"vectors": points["vectors"][:10].tolist(), "k": 5}).json()
    assert not set(gone) & {i for result in r["results"] for i in result["ids"]}
    moved = {"ids": [points["ids"][20]], "vectors": [points["vectors"][900].tolist()], "metadatas": [{"pos": "x"}]}
    assert client.put("/collections/glosses/points", json=moved).json() == {"upserted": 1, "count": N - 10}
    r = client.post("/collections/glosses/query", json={"vectors": [points["vectors"][900].tolist()], "k": 2,
                                                        "where": {"pos": "x"}}).json()["results"][0]
    assert r["ids"] == [points["ids"][20]] and r["documents"] == [None] and r["scores"][0] > 0.99


def _state(client: httpx.Client) -> dict:
    return client.post("/collections/glosses/points/get", json={"include": ["metadatas", "documents", "vectors"]}).json()


BAD_REQUESTS = [
    ("put", "/collections/glosses/points", {"ids": ["x"], "vectors": [[0.5] * 383]}, 400, "384"),
    ("put", "/collections/glosses/points", {"ids": ["x", "y"], "vectors": [[0.5] * 384, [0.5] * 383]}, 400, "vectors[1]"),
    ("put", "/collections/glosses/points", {"ids": ["x"], "vectors": [[float("nan")] * 384]}, 400, "NaN"),
    ("put", "/collections/glosses/points", {"ids": ["x", "x"], "vectors": [[0.1] * 384] * 2}, 400, "duplicates"),
    ("put", "/collections/glosses/points", {"ids": ["x"], "vectors": [[0.1] * 384], "metadatas": [{}, {}]}, 400,
     "metadatas"),
    ("put", "/collections/glosses/points", {"ids": ["x"], "vectors": [["a"] * 384]}, 422, "vectors"),
    ("put", "/collections/glosses/points", {"ids": [], "vectors": []}, 422, "ids"),
    ("put", "/collections/glosses/points", {"ids": ["x"], "vector": [[0.1] * 384]}, 422, "vector"),
    ("put", "/collections/glosses/points", {"ids": ["x"]}, 400, "vectors"),
    ("put", "/collections/nothing/points", {"ids": ["x"], "vectors": [[0.1] * 384]}, 404, "nothing"),
    ("post", "/collections/glosses/points/delete", {"ids": ["00000000-q"]}, 404, "00000000-q"),
    ("post", "/collections/glosses/query", {"vectors": [[0.1] * 384], "k": 0}, 422, "body.k"),
    ("post", "/collections/glosses/query", {"vectors": [[0.1] * 384], "k": 100_000}, 422, "body.k"),
    ("post", "/collections/glosses/query", {"vectors": [[0.1] * 384], "where": {"pos": {"$regex": "n"}}}, 400, "$regex"),
    ("post", "/collections/glosses/query", {"k": 3}, 400, "vectors or texts"),
    ("post", "/collections/glosses/query", {"vectors": [[0.1] * 384], "rescore": -1}, 422, "body.rescore"),
    ("post", "/collections/glosses/points/get", {"include": ["embeddings"]}, 422, "include"),
    ("post", "/collections", {"name": "../escape", "dim": 4}, 422, "name"),
    ("post", "/collections", {"name": "ok", "dim": 4, "options": {"M": -1}}, 400, "M"),
    ("post", "/collections", {"name": "ok", "dim": 4, "bits": 9}, 422, "bits"),
]


@pytest.mark.parametrize("method, path, body, status, names", BAD_REQUESTS, ids=[f"{r[3]}-{r[4]}" for r in BAD_REQUESTS])
def test_bad_requests_get_4xx_naming_the_problem_and_change_nothing(served, method, path, body, status, names):
    client, _ = served
    before = _state(client)
    content = json.dumps(body).encode()  # json, not httpx's encoder: NaN must reach the server as a JSON NaN
    r = client.request(method.upper(), path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert names in r.json()["detail"]
    assert _state(client) == before
    assert [c["name"] for c in client.get("/collections").json()["collections"]] == ["glosses"]


def test_malformed_and_oversized_bodies(served):
    client, _ = served
    before = _state(client)
    r = client.post("/collections/glosses/query", content=b'{"vectors": [[1, 2', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    huge = b'{"ids": ["a"], "vectors": [[' + b"0.1," * (17 << 20) + b"0.1]]}"  # 68 MB > the 64 MiB limit
    r = client.put("/collections/glosses/points", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert _state(client) == before


def test_api_key(start_server, tmp_path):
    server = start_server(str(tmp_path), "--api-key", "s3cret")
    keyed = start_server(str(tmp_path / "env"), env={"TQSEARCH_API_KEY": "from-env"})
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
        assert set(client.get("/openapi.json").json()["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = client.post("/collections", json={"name": "a", "dim": 4}, headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert client.get("/collections", headers={"X-API-Key": "s3cret"}).json() == {"collections": []}  # none made
        assert client.post("/collections", json={"name": "a", "dim": 4}, headers={"X-API-Key": "s3cret"}).status_code == 201
        assert client.get("/collections/a", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.get(f"{keyed.url}/collections").status_code == 401
    assert httpx.get(f"{keyed.url}/collections", headers={"X-API-Key": "from-env"}).status_code == 200


def test_openapi_spec_lists_the_api(served):
    client, _ = served
    spec = client.get("/openapi.json").json()
    assert {"/collections", "/collections/{name}", "/collections/{name}/points", "/collections/{name}/points/delete",
            "/collections/{name}/points/get", "/collections/{name}/query", "/health"} <= set(spec["paths"])
    route = spec["paths"]["/collections/{name}/query"]["post"]
    assert set(route["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {
        "vectors", "texts", "k", "where", "include", "rescore", "min_relevance"}
    assert route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/QueryResponse")
    assert "securitySchemes" not in spec["components"]  # no key, no scheme


def test_graceful_shutdown_compacts_and_restart_serves_the_same(start_server, tmp_path, points):
    root = tmp_path / "root"
    server = start_server(str(root))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        _fill(client, points)
        client.post("/collections/glosses/points/delete", json={"ids": points["ids"][:3]})
        query = {"vectors": points["vectors"][100:105].tolist(), "k": 10, "where": {"pos": "noun"}}
        before = client.post("/collections/glosses/query", json=query).json()
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert (root / "glosses" / "index.1.tqs").exists() and (root / "glosses" / "wal.1.log").stat().st_size == 8
    restarted = start_server(str(root))
    with httpx.Client(base_url=restarted.url) as client:
        assert client.get("/collections/glosses").json()["count"] == N - 3
        assert client.post("/collections/glosses/query", json=query).json() == before


def test_text_queries_embed_with_minilm(served, points):
    client, twin = served
    embed = load_embedder()
    r = client.post("/collections/glosses/query", json={"texts": ["a large body of water"], "k": 5})
    if embed is None:
        assert r.status_code == 400 and "embed extra" in r.json()["detail"]
        return
    assert r.json()["results"][0]["ids"] == twin.query(embed(["a large body of water"]), 5)[0]["ids"]
    doc = {"ids": ["new"], "documents": ["a small boat with oars"], "metadatas": [{"pos": "made-up"}]}
    assert client.put("/collections/glosses/points", json=doc).status_code == 200
    got = client.post("/collections/glosses/points/get", json={"ids": ["new"], "include": ["vectors"]}).json()
    np.testing.assert_allclose(got["vectors"][0], embed(["a small boat with oars"])[0], atol=1e-6)
