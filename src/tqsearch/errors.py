"""Exceptions raised by tqsearch.

    ValueError
     └── FileFormatError   a file or byte string is foreign, truncated, corrupt or from a newer version
"""

from __future__ import annotations

__all__ = ["FileFormatError"]


class FileFormatError(ValueError):
    """A stored file or buffer cannot be read: wrong magic, newer version, truncated or corrupt."""
