"""The API's routes, one function each. The event loop only moves bytes: a worker thread parses the body
(pydantic-core), does the collection work (the native search releases the GIL) and encodes the answer;
small vector queries are the exception (INLINE_BYTES).

Each request finds the app's registry, worker pool and embedder in `request.state` (see app.py).
"""

# No `from __future__ import annotations`: FastAPI reads the annotations of the routes at run time.
import asyncio
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from .. import __version__
from ..errors import InvalidArgumentError
from .registry import CollectionRegistry, ServedCollection
from .schemas import (CollectionInfo, CollectionList, CollectionSpec, Deleted, Dropped, GetRequest, PointIds, Points,
                      PointsOut, QueryRequest, QueryResponse, Upserted, openapi_body, parse)

__all__ = ["INLINE_BYTES", "api", "pages"]

# A query body this small (a few vectors) is parsed and searched on the event loop: handing sub-millisecond
# work to a thread and back costs more than the work (context switches, GIL hand-offs).
INLINE_BYTES = 64 << 10
Embed = Callable[[list[str]], np.ndarray]

pages = APIRouter()  # open to everyone: the search page and the health check
api = APIRouter()  # the collections: behind the API key when the server has one


@pages.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> str:
    """The search page."""
    return resources.files("tqsearch").joinpath("web/index.html").read_text(encoding="utf-8")


@pages.get("/health")
async def health() -> dict[str, str]:
    """Liveness, and the version serving."""
    return {"status": "ok", "version": __version__}


@api.get("/collections", response_model=CollectionList)
async def list_collections(request: Request) -> Response:
    """Every collection with its settings and size."""
    return await _run(request, _list, _registry(request))


@api.post("/collections", status_code=201, response_model=CollectionInfo, openapi_extra=openapi_body(CollectionSpec))
async def create_collection(request: Request) -> Response:
    """Make an empty collection; 409 when the name is taken."""
    response = await _run(request, _create, _registry(request), await request.body())
    response.status_code = 201
    return response


@api.get("/collections/{name}", response_model=CollectionInfo)
async def get_collection(name: str, request: Request) -> Response:
    """One collection's settings and size."""
    return await _run(request, _info, name, _registry(request).get(name))


@api.delete("/collections/{name}", response_model=Dropped)
async def drop_collection(name: str, request: Request) -> Response:
    """Close and delete a collection."""
    return await _run(request, _drop, _registry(request), name)


@api.put("/collections/{name}/points", response_model=Upserted, openapi_extra=openapi_body(Points))
async def upsert(name: str, request: Request) -> Response:
    """Insert or replace points, embedding their documents when no vectors are given."""
    c = _registry(request).get(name)
    return await _run(request, _upsert, c, request.state.embed, await request.body())


@api.post("/collections/{name}/points/delete", response_model=Deleted, openapi_extra=openapi_body(PointIds))
async def delete(name: str, request: Request) -> Response:
    """Remove points by id; 404 naming an unknown id, and nothing is removed."""
    c = _registry(request).get(name)
    return await _run(request, _delete, c, await request.body())


@api.post("/collections/{name}/points/get", response_model=PointsOut, openapi_extra=openapi_body(GetRequest))
async def get(name: str, request: Request) -> Response:
    """Points by id and/or filter, a page at a time."""
    c = _registry(request).get(name)
    return await _run(request, _get, c, await request.body())


@api.post("/collections/{name}/query", response_model=QueryResponse, openapi_extra=openapi_body(QueryRequest))
async def query(name: str, request: Request) -> Response:
    """The k nearest points to each query vector or text, among those matching `where`."""
    c, embed, raw = _registry(request).get(name), request.state.embed, await request.body()
    if len(raw) > INLINE_BYTES:
        return await _run(request, lambda: _search(c, embed, _query_body(raw)))
    body = _query_body(raw)
    if body.texts is not None:  # embedding takes milliseconds: not on the event loop
        return await _run(request, _search, c, embed, body)
    return Response(_encoded(_search, c, embed, body), media_type="application/json")


# ---------------------------------------------------------------------- the work, on a worker thread

def _list(registry: CollectionRegistry) -> dict[str, list[dict[str, Any]]]:
    return {"collections": [_info(name, c) for name, c in registry.items()]}


def _create(registry: CollectionRegistry, raw: bytes) -> dict[str, Any]:
    spec = parse(CollectionSpec, raw)
    created = registry.create(spec.name, spec.dim, spec.bits, spec.metric, spec.index, spec.vectors, spec.options)
    return _info(spec.name, created)


def _drop(registry: CollectionRegistry, name: str) -> dict[str, str]:
    registry.drop(name)
    return {"dropped": name}


def _upsert(c: ServedCollection, embed: Embed, raw: bytes) -> dict[str, int]:
    body = parse(Points, raw)
    c.upsert(body.ids, _vectors(body, embed), body.metadatas, body.documents)
    return {"upserted": len(body.ids), "count": c.count()}


def _delete(c: ServedCollection, raw: bytes) -> dict[str, int]:
    body = parse(PointIds, raw)
    c.delete(body.ids)
    return {"deleted": len(body.ids), "count": c.count()}


def _get(c: ServedCollection, raw: bytes) -> dict[str, Any]:
    body = parse(GetRequest, raw)
    return _jsonable(c.get(body.ids, body.where, body.include, body.limit, body.offset))


def _search(c: ServedCollection, embed: Embed, body: QueryRequest) -> dict[str, list[dict[str, Any]]]:
    vectors = _matrix(body.vectors) if body.texts is None else embed(body.texts)
    results = c.query(vectors, body.k, body.where, body.include, body.rescore, body.min_relevance)
    return {"results": [_jsonable(r) for r in results]}


# ---------------------------------------------------------------------- helpers

def _registry(request: Request) -> CollectionRegistry:
    return request.state.registry


async def _run(request: Request, fn: Callable[..., Any], *args: Any) -> Response:
    """fn(*args) on a worker thread, its result encoded there too and sent as JSON."""
    body = await asyncio.get_running_loop().run_in_executor(request.state.pool, _encoded, fn, *args)
    return Response(body, media_type="application/json")


def _encoded(fn: Callable[..., Any], *args: Any) -> bytes:
    """fn(*args) as compact JSON bytes."""
    return json.dumps(fn(*args), separators=(",", ":")).encode()


def _query_body(raw: bytes) -> QueryRequest:
    body = parse(QueryRequest, raw)
    if (body.vectors is None) == (body.texts is None):
        raise InvalidArgumentError("give either vectors or texts")
    return body


def _info(name: str, c: ServedCollection) -> dict[str, Any]:
    s = c.settings
    return {"name": name, "dim": c.dim, "bits": s["bits"], "metric": s["metric"], "index": s["index"],
            "vectors": s["vectors"], "options": s["index_options"], "count": c.count()}


def _vectors(body: Points, embed: Embed) -> np.ndarray:
    """The points' vectors: as given, or embedded from their documents."""
    if body.vectors is not None:
        return _matrix(body.vectors)
    if body.documents is None or len(body.documents) != len(body.ids) or None in body.documents:
        raise InvalidArgumentError("give vectors, or a document for every id to embed")
    return embed(body.documents)


def _matrix(rows: list[list[float]]) -> np.ndarray:
    """JSON rows as float32; ragged rows are an InvalidArgumentError naming the first odd row."""
    width = len(rows[0]) if rows else 0
    bad = next((i for i, r in enumerate(rows) if len(r) != width), None)
    if bad is not None:
        raise InvalidArgumentError(f"vectors[{bad}] has {len(rows[bad])} values, vectors[0] has {width}")
    return np.array(rows, dtype=np.float32).reshape(len(rows), width)


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    if "vectors" in result:
        result["vectors"] = np.asarray(result["vectors"]).tolist()
    return result
