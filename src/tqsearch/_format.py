"""The tqsearch container format: one header plus aligned, checksummed array sections.

Layout (little-endian; docs/format.md describes it for readers outside Python):
    magic      8 bytes, names the kind of object (e.g. b"TQCODES1")
    version    uint32, format version of that kind
    hlen       uint32, length of the JSON header
    hcrc       uint32, CRC-32 of the JSON header
    header     JSON: {"meta": {...}, "sections": [{"name", "dtype", "shape", "offset", "nbytes", "crc"}]}
    sections   each array's raw bytes at its offset, 64-byte aligned (so mmap gives aligned arrays)
Every length is checked against the buffer size before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import FileFormatError

_PREFIX = struct.Struct("<8sIII")
_ALIGN = 64
_CHUNK = 16 << 20  # bytes checksummed or written per step
_DTYPES = ("uint8", "int32", "uint32", "int64", "uint64", "float16", "float32")


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _layout(magic: bytes, version: int, meta: dict,
            arrays: dict[str, np.ndarray]) -> tuple[bytes, list[tuple[int, np.ndarray]], int]:
    """The prefix + header bytes, each array with its file offset, and the total length."""
    sections, contiguous = [], []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in _DTYPES:
            raise TypeError(f"section {name!r}: unsupported dtype {arr.dtype}")
        sections.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape), "nbytes": arr.nbytes,
                         "crc": _crc(arr)})
        contiguous.append(arr)
    # Offsets depend on the header length, which depends on the offsets: settle with a fixed width.
    for s in sections:
        s["offset"] = 10**15
    header_len = len(json.dumps({"meta": meta, "sections": sections}).encode())
    offset = end = _align(_PREFIX.size + header_len)
    for s in sections:
        s["offset"] = offset
        end = offset + s["nbytes"]
        offset = _align(end)
    header = json.dumps({"meta": meta, "sections": sections}).encode().ljust(header_len)
    head = _PREFIX.pack(magic, version, len(header), zlib.crc32(header)) + header
    return head, [(s["offset"], arr) for s, arr in zip(sections, contiguous)], end  # no padding after the last


def _crc(arr: np.ndarray) -> int:
    """CRC-32 of an array's bytes, a chunk at a time (no copy of large or memory-mapped arrays)."""
    flat, crc = arr.reshape(-1).view(np.uint8), 0
    for i in range(0, len(flat), _CHUNK):
        crc = zlib.crc32(flat[i : i + _CHUNK], crc)
    return crc


def pack(magic: bytes, version: int, meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise `meta` and named arrays into one container, in memory."""
    head, placed, end = _layout(magic, version, meta, arrays)
    out = bytearray(end)
    out[: len(head)] = head
    for offset, arr in placed:
        out[offset : offset + arr.nbytes] = arr.reshape(-1).view(np.uint8).data
    return bytes(out)


def write(path: str | os.PathLike, magic: bytes, version: int, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write a container to `path` atomically, streaming each array (never the whole file in memory)."""

    def fill(f: BinaryIO) -> None:
        head, placed, _ = _layout(magic, version, meta, arrays)
        f.write(head)
        for offset, arr in placed:
            f.write(bytes(offset - f.tell()))
            flat = arr.reshape(-1).view(np.uint8)
            for i in range(0, len(flat), _CHUNK):
                f.write(flat[i : i + _CHUNK])

    write_atomic(path, fill)


def unpack(buf: bytes | memoryview | mmap.mmap, magic: bytes, max_version: int, source: str = "buffer",
           verify: bool = True) -> tuple[int, dict, dict[str, np.ndarray]]:
    """Parse a container; arrays are read-only views into `buf`. Raises FileFormatError naming the field."""
    size = len(buf)
    if size < _PREFIX.size:
        raise FileFormatError(f"{source}: truncated ({size} bytes, shorter than the header)")
    got_magic, version, hlen, hcrc = _PREFIX.unpack_from(buf, 0)
    if got_magic != magic:
        raise FileFormatError(f"{source}: not a {magic.decode(errors='replace')} file (magic {got_magic!r})")
    if not 1 <= version <= max_version:
        raise FileFormatError(f"{source}: format version {version} is not supported (this build reads <= {max_version})")
    if _PREFIX.size + hlen > size:
        raise FileFormatError(f"{source}: truncated header (needs {hlen} bytes)")
    raw_header = bytes(buf[_PREFIX.size : _PREFIX.size + hlen])
    if zlib.crc32(raw_header) != hcrc:
        raise FileFormatError(f"{source}: header checksum mismatch (corrupt file)")
    try:
        header = json.loads(raw_header)
        meta, sections = header["meta"], header["sections"]
    except (ValueError, KeyError, TypeError) as e:
        raise FileFormatError(f"{source}: malformed header ({e})") from None
    arrays = {s["name"]: _section(buf, s, size, source, verify) for s in sections}
    return version, meta, arrays


def _section(buf, s: dict, size: int, source: str, verify: bool) -> np.ndarray:
    try:
        name, dtype, shape, offset, nbytes = s["name"], s["dtype"], tuple(s["shape"]), s["offset"], s["nbytes"]
    except (KeyError, TypeError):
        raise FileFormatError(f"{source}: malformed section entry {s!r}") from None
    if dtype not in _DTYPES or any((not isinstance(n, int)) or n < 0 for n in shape):
        raise FileFormatError(f"{source}: section {name!r} has a bad dtype or shape")
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != nbytes:
        raise FileFormatError(f"{source}: section {name!r} length does not match its shape")
    if not (isinstance(offset, int) and 0 <= offset and offset + nbytes <= size):
        raise FileFormatError(f"{source}: truncated (section {name!r} runs past the end)")
    view = memoryview(buf)[offset : offset + nbytes]
    if verify and zlib.crc32(view) != s.get("crc"):
        raise FileFormatError(f"{source}: section {name!r} checksum mismatch (corrupt file)")
    arr = np.frombuffer(view, dtype=dtype).reshape(shape)
    arr.flags.writeable = False
    return arr


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, or a function writing to the open file) to `path` so readers see the old file or
    the new one, never a mix (temp + fsync + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def hash64(text: str) -> int:
    """The unsigned 64-bit BLAKE2b hash of a string's UTF-8 bytes, as files store string ids and values."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames, creations and deletions inside directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: str | os.PathLike, use_mmap: bool) -> memoryview | mmap.mmap:
    """The file's bytes, memory-mapped read-only when `use_mmap` (and the file is not empty), else read into a
    64-byte aligned buffer, so its sections' arrays are as aligned as the file's offsets (a `bytes` object's data is
    16-byte aligned: a one-query scan of WordNet 2-bit codes read that way ran ~10% slower than from a mapping)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if use_mmap and size > 0:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        raw = np.empty(size + _ALIGN, dtype=np.uint8)
        start = -raw.ctypes.data % _ALIGN
        buf = memoryview(raw[start : start + size])
        done = 0
        while done < size and (got := f.readinto(buf[done:])):
            done += got
        return buf[:done]  # a file that shrank while read stays short: unpack reports it truncated
