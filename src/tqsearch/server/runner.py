"""`tqsearch serve`: uvicorn over the app until Ctrl-C or SIGTERM, optionally with the bundled demo collection."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from .. import __version__
from ..collection import SETTINGS, open_collection
from ..demo import demo_points
from .app import create_app
from .registry import CollectionRegistry, Registry

__all__ = ["DEMO", "add_demo_collection", "serve"]

DEMO = "wordnet"


def serve(root: str | os.PathLike | None, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          demo: bool = False, out: TextIO = sys.stdout, ray: str | None = None, shards: int = 1,
          replicas: int = 1) -> None:
    """Serve `root` (with demo=True: plus the bundled corpus as collection "wordnet") until Ctrl-C or SIGTERM.

    ray: serve sharded collections (tqsearch.distributed) on the Ray cluster at this address ("auto": the
    running one); new collections get `shards` and `replicas` unless their options say otherwise.
    """
    import uvicorn

    registry = Registry if ray is None else _ray_registry(ray, shards, replicas)  # before our SIGTERM handler
    with contextlib.ExitStack() as stack:
        stack.enter_context(_sigterm_as_interrupt())
        if root is None:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="tqsearch-demo-"))
        if demo:
            add_demo_collection(Path(root), out)
        app = create_app(root, api_key, registry=registry)
        print(f"tqsearch {__version__}: serving {root} at http://{host}:{port}/ (search page), "
              f"API docs at /docs{', API key required' if api_key else ''}; Ctrl-C stops", file=out, flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)


def _ray_registry(address: str, shards: int, replicas: int) -> Callable[[str | os.PathLike], CollectionRegistry]:
    """A factory of the registry of sharded collections on the Ray cluster at `address`, joined now: ray.init
    installs its own SIGTERM handler, which the one serve() installs next must replace."""
    from ..distributed import connect
    from ..distributed._registry import DistributedRegistry

    connect(address)
    return lambda root: DistributedRegistry(root, address, shards, replicas)


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
