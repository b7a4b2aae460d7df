"""What guards the API before a route runs: the request body limit (ASGI middleware) and the API key."""

# No `from __future__ import annotations`: FastAPI reads the checker's annotations at run time.
import json
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["MAX_BODY", "BodyLimit", "key_checker"]

MAX_BODY = 64 << 20  # bytes per request: 64 MiB holds ~40k 384-d vectors as JSON


class BodyLimit:
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
    """Raised from the counted `receive` to abandon a request whose body passed the limit."""


def key_checker(api_key: str) -> Callable[..., None]:
    """A dependency accepting `Authorization: Bearer KEY` or `X-API-Key: KEY`; 401 otherwise."""
    bearer = HTTPBearer(auto_error=False, description="the server's API key as a bearer token")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")

    def check(token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
              key: Annotated[str | None, Security(header)]) -> None:
        given = key if key is not None else (token.credentials if token is not None else None)
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')",
                                headers={"WWW-Authenticate": "Bearer"})

    return check
