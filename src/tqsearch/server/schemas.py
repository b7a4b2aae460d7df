"""The API's request and response bodies (pydantic), and parsing a raw body into one."""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at run time.
from typing import Any, Literal, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import _kinds
from .._index import METRICS
from .._points import VECTOR_KINDS
from ..collection import INCLUDE, RESCORE
from .registry import NAME

__all__ = ["MAX_BATCH", "MAX_K", "CollectionInfo", "CollectionList", "CollectionSpec", "Deleted", "Dropped",
           "GetRequest", "PointIds", "Points", "PointsOut", "QueryRequest", "QueryResponse", "QueryResult", "Upserted",
           "openapi_body", "parse"]

MAX_BATCH = 10_000  # points per upsert/delete/get by id, and query rows per request
MAX_K = 10_000
Include = Literal[INCLUDE]
IndexKind = Literal[_kinds.vector_kinds()]  # the registry's kinds, not a list of our own
_M = TypeVar("_M", bound=BaseModel)


# ---------------------------------------------------------------------- request bodies

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionSpec(_Body):
    """A new collection: `options` go to the index (M, ef_construction, ef_search, seed, rerank, ...)."""

    name: str = Field(pattern=NAME, description="1-63 characters: letters, digits, '_', '.', '-'")
    dim: int = Field(ge=1, le=65_536)
    bits: int = Field(4, ge=1, le=8)
    metric: Literal[METRICS] = "cosine"
    index: IndexKind = "hnsw"
    vectors: Literal[VECTOR_KINDS] | None = Field(
        "float32", description="originals kept on disk for exact re-ranking and get; null: none")
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
    rescore: int | None = Field(None, ge=0, le=100, description=f"candidates per hit re-ranked exactly; 0: codes "
                                f"only; null: {RESCORE} when the collection keeps vectors, else 0")
    min_relevance: float | None = Field(None, ge=0, le=1, description="keep only hits whose calibrated relevance is "
                                        "at least this (0: the top k, 1: none) and return each hit's relevance")


# ---------------------------------------------------------------------- response bodies

class CollectionInfo(BaseModel):
    name: str
    dim: int
    bits: int
    metric: str
    index: str
    vectors: str | None
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
    relevance: list[float] | None = Field(None, description="each hit's calibrated relevance (with min_relevance)")


class QueryResponse(BaseModel):
    results: list[QueryResult]


# ---------------------------------------------------------------------- parsing

def parse(model: type[_M], raw: bytes) -> _M:
    """The request body as `model`, parsed and checked in one pass by pydantic-core; 422 as FastAPI's."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that parses its own body (see `parse`): the model's schema, inline."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
