"""Hostile containers: every truncation and every flipped byte is caught or harmless."""

import struct
import zlib

import numpy as np
import pytest

from tqsearch import FileFormatError, _format

MAGIC = b"TQTEST01"


def _blob():
    arrays = {"a": np.arange(10, dtype=np.float32), "b": np.arange(6, dtype=np.uint8).reshape(2, 3)}
    return _format.pack(MAGIC, 2, {"k": 1}, arrays), arrays


def _same(arrays, parsed):
    return all(np.array_equal(arrays[k], parsed[k]) for k in arrays) and set(arrays) == set(parsed)


def test_round_trip_and_alignment():
    raw, arrays = _blob()
    version, meta, parsed = _format.unpack(raw, MAGIC, 2)
    assert version == 2 and meta == {"k": 1} and _same(arrays, parsed)
    assert not parsed["a"].flags.writeable


def test_every_truncation_raises():
    raw, _ = _blob()
    end_of_data = max(raw.rfind(np.arange(6, dtype=np.uint8).tobytes()) + 6, 0)
    for n in range(end_of_data):
        with pytest.raises(FileFormatError):
            _format.unpack(raw[:n], MAGIC, 2)


def test_every_flipped_byte_raises_or_is_padding():
    raw, arrays = _blob()
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x5A
        try:
            _, _, parsed = _format.unpack(bytes(bad), MAGIC, 2)
        except FileFormatError:
            continue
        assert _same(arrays, parsed), f"byte {i} changed the data silently"


def test_foreign_and_future_files():
    raw, _ = _blob()
    with pytest.raises(FileFormatError, match="not a TQTEST01"):
        _format.unpack(b"\x89PNG\r\n\x1a\n" + raw[8:], MAGIC, 2)
    with pytest.raises(FileFormatError, match="version 2 is not supported"):
        _format.unpack(raw, MAGIC, 1)
    with pytest.raises(FileFormatError, match="truncated"):
        _format.unpack(b"", MAGIC, 2)


def test_huge_lengths_are_checked_before_allocation():
    raw, _ = _blob()
    magic, version, hlen, _ = struct.unpack_from("<8sIII", raw)
    header = raw[20 : 20 + hlen].replace(b'"nbytes": 40', b'"nbytes": 40000000000')
    forged = struct.pack("<8sIII", magic, version, len(header), zlib.crc32(header)) + header + raw[20 + hlen :]
    with pytest.raises(FileFormatError, match="length does not match|runs past"):
        _format.unpack(forged, MAGIC, 2)


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "x.bin"
    _format.write_atomic(path, b"old")
    _format.write_atomic(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temp files left behind


@pytest.mark.parametrize("use_mmap", [True, False])
def test_a_read_file_gives_arrays_aligned_as_their_offsets(tmp_path, use_mmap):
    """Sections sit at 64-byte file offsets; read or mapped, their arrays start on 64-byte boundaries (the scans
    load 64 bytes at a time: a 16-byte aligned read ran a one-query scan ~10% slower), and equal what was packed."""
    raw, arrays = _blob()
    path = tmp_path / "x.bin"
    _format.write_atomic(path, raw)
    reads = [_format.unpack(_format.read_file(path, use_mmap), MAGIC, 2)[2] for _ in range(8)]  # 8 live buffers:
    assert all(_same(arrays, parsed) for parsed in reads)  # a misaligned one cannot land on 64 bytes every time
    assert all(a.ctypes.data % 64 == 0 for parsed in reads for a in parsed.values())


def test_a_file_that_reads_shorter_than_its_stat_is_parsed_from_the_bytes_read(tmp_path, monkeypatch):
    """The unmapped read stops at end of file (no zero tail past it, no endless loop), and a cut inside a section
    is still caught by unpack."""
    raw, arrays = _blob()
    path = tmp_path / "x.bin"
    _format.write_atomic(path, raw)
    real_fstat = _format.os.fstat
    monkeypatch.setattr(_format.os, "fstat", lambda fd: type("S", (), {"st_size": real_fstat(fd).st_size + 100})())
    buf = _format.read_file(path, False)
    assert bytes(buf) == raw and _same(arrays, _format.unpack(buf, MAGIC, 2)[2])
    _format.write_atomic(path, raw[:-3])
    with pytest.raises(FileFormatError, match="truncated"):
        _format.unpack(_format.read_file(path, False), MAGIC, 2)
