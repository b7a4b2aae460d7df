"""What a failed request answers: tqsearch's typed errors their own status, malformed bodies a 422 in one line,
and anything else a logged 500 that tells the client nothing of the server's insides."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import TQSearchError

__all__ = ["INTERNAL", "InternalErrors", "tqsearch_error", "validation_error"]

INTERNAL = "internal server error (logged on the server)"
log = logging.getLogger("tqsearch.server")


async def tqsearch_error(request: Request, exc: Exception) -> JSONResponse:
    """The error's own status (errors.py) with its message; a 5xx is logged and answered as an internal error."""
    assert isinstance(exc, TQSearchError)
    if exc.http_status >= 500:
        _log(request.scope, exc)
        return JSONResponse({"detail": INTERNAL}, status_code=exc.http_status)
    return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable line per problem, e.g. "body.k: Input should be greater than or equal to 1"."""
    assert isinstance(exc, RequestValidationError)
    problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else ""),
                         "errors": json.loads(json.dumps(exc.errors()[:20], default=str))}, status_code=422)


class InternalErrors:
    """ASGI middleware: any exception no handler took is a bug; log it once and answer a generic 500.

    (Starlette's own catch-all would re-raise it after answering, for the server to log a second time.)
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if scope["type"] != "http" or started:  # too late for a response: let the server drop the connection
                raise
            _log(scope, exc)
            await JSONResponse({"detail": INTERNAL}, status_code=500)(scope, receive, send)


def _log(scope: dict, exc: Exception) -> None:
    log.error("%s %s failed", scope.get("method"), scope.get("path"), exc_info=exc)
