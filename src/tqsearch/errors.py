"""Exceptions raised by tqsearch, each knowing the HTTP status the server answers it with.

    Exception
     └── TQSearchError                            500  the base; the server logs it, answers a generic line
          ├── InvalidArgumentError  ValueError    400  a value the caller passed is out of range or malformed
          ├── InvalidTypeError      TypeError     400  an argument the caller passed has the wrong type
          ├── NotFoundError         KeyError      404  no collection or point has that name or id
          ├── ConflictError         RuntimeError  409  the name is taken, or the directory is open elsewhere
          ├── ClosedError           ValueError    409  the collection was closed before the call
          └── FileFormatError       ValueError    500  a file is foreign, truncated, corrupt or too new

Each also derives from the builtin named, the one raised before these existed, so `except KeyError`
or `except ValueError` keeps working. The index classes raise builtins; the collection re-raises those its
caller's input caused as the typed errors above, so anything else reaching the server is a bug (a 500).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["ClosedError", "ConflictError", "FileFormatError", "InvalidArgumentError", "InvalidTypeError",
           "NotFoundError", "TQSearchError"]


class TQSearchError(Exception):
    """Base of tqsearch's own errors; `http_status` is the server's answer to it."""

    http_status: ClassVar[int] = 500


class InvalidArgumentError(TQSearchError, ValueError):
    """An argument's value is out of range, malformed or inconsistent with the others."""

    http_status = 400


class InvalidTypeError(TQSearchError, TypeError):
    """An argument has the wrong type (a str where a list of ids belongs, a non-float array, ...)."""

    http_status = 400


class NotFoundError(TQSearchError, KeyError):
    """No collection or point has the name or id asked for."""

    http_status = 404

    def __str__(self) -> str:
        return Exception.__str__(self)  # the message as given: KeyError's str() would quote it


class ConflictError(TQSearchError, RuntimeError):
    """The request clashes with what exists: a collection of that name, or a directory open elsewhere."""

    http_status = 409


class ClosedError(TQSearchError, ValueError):
    """The collection was closed (by its owner, a drop or shutdown) before the call."""

    http_status = 409


class FileFormatError(TQSearchError, ValueError):
    """A stored file or buffer cannot be read: wrong magic, newer version, truncated or corrupt."""
