"""Write-ahead log: framed, checksummed records appended and fsynced before a write is acknowledged.

File layout (little-endian):
    magic     8 bytes b"TQWAL001"
    records   each: length uint32 | CRC-32 uint32 of the payload | payload
    payload   header length uint32 | JSON header | raw bytes (e.g. float32 vectors)
A crash can leave only the last record torn. Replay stops at the first record whose frame is cut short
or whose checksum fails, and truncates the file there, so the log ends on a whole record again.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import _format
from .errors import FileFormatError

MAGIC = b"TQWAL001"
_FRAME = struct.Struct("<II")
_HLEN = struct.Struct("<I")


def encode(header: dict[str, Any], blob: bytes = b"") -> bytes:
    """One framed record holding a JSON header and raw bytes."""
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    payload = _HLEN.pack(len(head)) + head + blob
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def create(path: Path) -> None:
    """Write a new, empty log and make it (and its directory entry) durable."""
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.flush()
        os.fsync(f.fileno())
    _format.fsync_dir(path.parent)


def replay(path: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The log's whole records as (header, blob); a torn or corrupt tail is cut off the file first."""
    data = path.read_bytes()
    if data[: len(MAGIC)] != MAGIC:
        raise FileFormatError(f"{path}: not a tqsearch write-ahead log (magic {data[:len(MAGIC)]!r})")
    records, end = _scan(data)
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    for payload in records:
        (hlen,) = _HLEN.unpack_from(payload, 0)
        try:
            header = json.loads(payload[_HLEN.size : _HLEN.size + hlen])
        except ValueError as e:
            raise FileFormatError(f"{path}: record header is not JSON despite a valid checksum ({e})") from None
        yield header, payload[_HLEN.size + hlen :]


def _scan(data: bytes) -> tuple[list[bytes], int]:
    """Payloads of the leading whole, valid records and the offset where they end."""
    records, pos = [], len(MAGIC)
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        start, stop = pos + _FRAME.size, pos + _FRAME.size + length
        if length < _HLEN.size or stop > len(data) or zlib.crc32(data[start:stop]) != crc:
            break
        (hlen,) = _HLEN.unpack_from(data, start)
        if _HLEN.size + hlen > length:
            break
        records.append(data[start:stop])
        pos = stop
    return records, pos


class Log:
    """An open log to append to; `append` returns only once the record is on stable storage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.size = os.fstat(self._fd).st_size

    def append(self, record: bytes) -> None:
        """Append and fsync one record; on failure the file is cut back so it ends on a whole record."""
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except BaseException:
            self.undo_to(self.size)
            raise
        self.size += len(record)

    def undo_to(self, size: int) -> None:
        """Cut the log back to `size` bytes (drops records that were written but not applied)."""
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size

    def close(self) -> None:
        """Close the file (every appended record is already durable)."""
        os.close(self._fd)
