"""HTTP server: a REST API over a directory of collections, its OpenAPI spec and a search page at `/`.

Needs the `server` extra (FastAPI, uvicorn, and fastapi-offline, which serves the API docs' scripts itself,
so /docs works offline); text in queries and upserts is embedded with all-MiniLM-L6-v2 when the `embed`
extra is installed. Start it with `tqsearch serve ROOT`.
Every collection is a subdirectory of ROOT (see `tqsearch.open`); writes are durable before the
response is sent, and shutdown (Ctrl-C, SIGTERM) folds each write-ahead log into a snapshot.

    app.py         create_app: the app, wiring the pieces below together
    routes.py      one function per route; the work runs on worker threads
    schemas.py     the request and response bodies (pydantic)
    registry.py    the collections served, behind the interface the routes use
    middleware.py  the body limit and the API key
    handlers.py    errors to status codes; anything unexpected is a logged 500
    runner.py      serve(): uvicorn, SIGTERM, the demo collection
"""

from .app import create_app
from .registry import CollectionRegistry, Registry, ServedCollection
from .runner import serve

__all__ = ["CollectionRegistry", "Registry", "ServedCollection", "create_app", "serve"]
