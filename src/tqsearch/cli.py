"""Command line: `tqsearch info` (build and CPU facts) and `tqsearch demo` (search the bundled corpus)."""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np

from . import _core, __version__


def info() -> str:
    """Version, detected CPU features and the kernel set in use."""
    lines = [
        f"tqsearch {__version__} (python {platform.python_version()}, numpy {np.__version__})",
        f"cpu features:   {' '.join(_core.cpu_features()) or '(none detected)'}",
        f"kernel sets:    {' '.join(_core.available_simd_levels())}",
        f"kernels in use: {_core.default_simd_level()} (override with TQSEARCH_SIMD=scalar|avx2|avx512)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tqsearch` console script."""
    parser = argparse.ArgumentParser(prog="tqsearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print version, CPU features and the kernel set in use")
    demo = sub.add_parser("demo", help="search the bundled WordNet corpus (4-bit index) and report quality")
    demo.add_argument("queries", nargs="*", help="text queries (need the embed extra; else bundled ones)")
    demo.add_argument("--bits", type=int, default=4)
    demo.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
        return 0
    from .demo import run_demo

    run_demo(args.bits, args.queries, args.threads, out=sys.stdout)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
