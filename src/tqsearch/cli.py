"""Command line: `tqsearch info` (build and CPU facts), `tqsearch demo` (search the bundled corpus),
`tqsearch serve` (the HTTP server) and `tqsearch ingest` (bulk loading from files)."""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
from pathlib import Path

import numpy as np

from . import __version__, _core

API_KEY_ENV = "TQSEARCH_API_KEY"
SIMD_ENV = "TQSEARCH_SIMD"


def info() -> str:
    """Version, detected CPU features and the kernel set in use."""
    lines = [
        f"tqsearch {__version__} (python {platform.python_version()}, numpy {np.__version__})",
        f"cpu features:   {' '.join(_core.cpu_features()) or '(none detected)'}",
        f"kernel sets:    {' '.join(_core.available_simd_levels())}",
        f"kernels in use: {_core.default_simd_level()} (override with TQSEARCH_SIMD=scalar|avx2|avx512)",
    ]
    return "\n".join(lines)


def simd_problem() -> str | None:
    """Why $TQSEARCH_SIMD cannot be honoured (an unknown level, or one this CPU lacks), in one line; else None.

    Checked before any command runs, so a bad value is one line on stderr rather than a traceback from the
    first kernel call.
    """
    try:
        _core.default_simd_level()
    except ValueError as e:
        available = " ".join(_core.available_simd_levels())
        return f"{SIMD_ENV}: {e}; available on this CPU: {available} (unset: the best of them)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tqsearch` console script."""
    parser = argparse.ArgumentParser(prog="tqsearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print version, CPU features and the kernel set in use")
    demo = sub.add_parser("demo", help="search the bundled WordNet corpus (4-bit index) and report quality")
    demo.add_argument("queries", nargs="*", help="text queries (need the MiniLM weights, installed by README command 1; else bundled ones)")
    demo.add_argument("--bits", type=int, default=4)
    demo.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    serve = sub.add_parser("serve", help="serve a directory of collections over HTTP, with a search page "
                                         "(needs the server extra)")
    serve.add_argument("path", nargs="?", help="directory holding the collections (created when missing)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                       help=f"require this key on the API (default: ${API_KEY_ENV}, else none)")
    serve.add_argument("--ray", metavar="auto|ADDRESS", default=None,
                       help="serve sharded collections on this Ray cluster (needs the ray extra; see docs/scaling.md)")
    serve.add_argument("--shards", type=int, default=1, help="with --ray: shards of new collections (1)")
    serve.add_argument("--replicas", type=int, default=1, help="with --ray: replicas of each shard (1)")
    serve.add_argument("--demo", action="store_true",
                       help="add the bundled corpus as collection 'wordnet' (in a temporary directory without PATH)")
    ingest = sub.add_parser("ingest", help="upsert the points of a .npy, .jsonl or .parquet file into a collection "
                                           "(created when missing), a batch at a time")
    ingest.add_argument("path", help="the collection's directory")
    ingest.add_argument("--from", dest="source", required=True, help="FILE.npy | FILE.jsonl | FILE.parquet")
    ingest.add_argument("--batch", type=int, default=10_000, help="points per write (default 10000)")
    ingest.add_argument("--bits", type=int, default=None, help="new collections: bits per coordinate (4)")
    ingest.add_argument("--metric", default=None, help="new collections: ip | cosine (default) | l2")
    ingest.add_argument("--index", default=None, help="new collections: hnsw (default) | flat")
    ingest.add_argument("--vectors", default="float32", help="new collections: float32 | float16 | none")
    args = parser.parse_args(argv)
    problem = simd_problem()
    if problem is not None:
        print(f"tqsearch: {problem}", file=sys.stderr)
        return 2
    if args.command == "info":
        print(info())
        return 0
    if args.command == "serve":
        return _serve(parser, args)
    if args.command == "ingest":
        return _ingest(args)
    from .demo import run_demo

    run_demo(args.bits, args.queries, args.threads, out=sys.stdout)
    return 0


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.path is None and not args.demo:
        parser.error("serve needs a PATH (or --demo)")
    try:
        from .server import serve
    except ImportError as e:
        print(f"tqsearch serve needs the server extra: pip install 'tqsearch[server]' ({e})", file=sys.stderr)
        return 1
    try:
        serve(args.path, args.host, args.port, args.api_key, args.demo, ray=args.ray, shards=args.shards,
              replicas=args.replicas)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before uvicorn took over the signals (building the demo)
        return 130
    return 0


def _ingest(args: argparse.Namespace) -> int:
    """tqsearch ingest: stream a file into a collection; one-line errors for bad files or settings."""
    from .collection import SETTINGS, open_collection
    from .errors import TQSearchError
    from .ingest import ingest, read_batches

    try:
        batches, total = read_batches(args.source, args.batch)
        first = next(batches, None)
        if first is None:
            print(f"tqsearch ingest: {args.source} holds no points", file=sys.stderr)
            return 2
        exists = (Path(args.path) / SETTINGS).exists()
        settings = {} if exists else {"bits": args.bits, "metric": args.metric, "index": args.index,
                                      "vectors": None if args.vectors.lower() == "none" else args.vectors}
        with open_collection(args.path, dim=len(first["vectors"][0]), **settings) as c:
            written = ingest(c, itertools.chain([first], batches), total)
            c.compact()
            print(f"ingested {written:,} points into {args.path} ({c.count():,} in the collection)")
    except (TQSearchError, ValueError, TypeError, OSError) as e:
        print(f"tqsearch ingest: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
