"""Make turbovec 1.1.2 run its AVX2 kernels on an AVX-512 machine, as it would on an AVX2-only CPU (Zen 3).

turbovec picks its kernels (and its code layout) from Rust's CPU-feature cache (std_detect), filled once per
process. ``hide_avx512()`` fills that cache before turbovec does, with the bits this CPU reports minus every
AVX-512 feature and GFNI (Zen 3 has neither), so turbovec's own dispatch takes its AVX2 paths
(``search_multi_query_avx2``, checked with perf). Call it before the first turbovec index is built, in a
process that builds no other turbovec index. The cache's address comes from the extension's symbol table;
its bit layout is rustc 1.99's feature order, checked against /proc/cpuinfo before anything is written.
"""

from __future__ import annotations

import ctypes
import struct
import subprocess
import sys
from pathlib import Path

CACHE_SYMBOL = b"std_detect6detect5cache5CACHE"
# std_detect's bit per feature (rustc 1.99, turbovec 1.1.2's build) -> the /proc/cpuinfo flag that says it.
HIDDEN = {19: "avx512f", 20: "avx512cd", 21: "avx512er", 22: "avx512pf", 23: "avx512bw", 24: "avx512dq",
          25: "avx512vl", 26: "avx512ifma", 27: "avx512vbmi", 28: "avx512_vpopcntdq", 29: "avx512_vbmi2",
          30: "gfni", 33: "avx512_vnni", 34: "avx512_bitalg", 35: "avx512_bf16", 36: "avx512_vp2intersect",
          37: "avx512_fp16"}
KEPT = {14: "avx", 15: "avx2"}
READ_CACHE = """
import numpy as np, turbovec, sys
sys.path.insert(0, {here!r})
from turbovec_avx2 import cache_cell
tv = turbovec.TurboQuantIndex(64, 2)
tv.add(np.ones((40, 64), np.float32))
tv.search(np.ones((1, 64), np.float32), 1)
print(cache_cell().value)
"""


def symbol_offset(path: str, needle: bytes) -> int:
    """st_value of the first .symtab symbol of an ELF64 little-endian file whose name contains `needle`."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise RuntimeError(f"{path} is not a 64-bit little-endian ELF file")
    shoff, shentsize, shnum = struct.unpack_from("<Q", data, 0x28)[0], *struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        strtab = sections[link][4]
        for at in range(offset, offset + size, entsize):
            name_at, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, at)
            name = data[strtab + name_at : data.index(b"\0", strtab + name_at)]
            if needle in name:
                return value
    raise RuntimeError(f"no symbol containing {needle!r} in {path} (stripped, or another turbovec build)")


def cache_cell() -> ctypes.c_uint64:
    """The first word of turbovec's std_detect feature cache in this process (0 until something queries it)."""
    import turbovec

    path = turbovec._turbovec.__file__
    maps = Path("/proc/self/maps").read_text().splitlines()
    base = min(int(line.split("-")[0], 16) for line in maps if line.endswith(path))
    return ctypes.c_uint64.from_address(base + symbol_offset(path, CACHE_SYMBOL))


def detected_word() -> int:
    """The cache word turbovec fills on this CPU, read in a child process (filling it here would fix it)."""
    code = READ_CACHE.format(here=str(Path(__file__).resolve().parent))
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def check_layout(word: int, flags: set[str]) -> None:
    """Raise unless each bit named in HIDDEN/KEPT is set exactly when /proc/cpuinfo lists its feature, and the top
    bit (std_detect's "filled" mark) is set."""
    wrong = {bit: flag for bit, flag in (HIDDEN | KEPT).items() if bool(word >> bit & 1) != (flag in flags)}
    if wrong or not word >> 63:
        raise RuntimeError(f"turbovec's feature cache {word:#x} does not have the expected layout (bits {wrong})")


def hide_avx512() -> None:
    """Fill turbovec's feature cache with this CPU's features less AVX-512 and GFNI, before turbovec reads it."""
    cell = cache_cell()
    if cell.value:
        raise RuntimeError("turbovec already read its CPU features in this process")
    info = Path("/proc/cpuinfo").read_text().splitlines()
    flags = set(next(line for line in info if line.startswith("flags")).split(":")[1].split())
    word = detected_word()
    check_layout(word, flags)
    cell.value = word & ~sum(1 << bit for bit in HIDDEN)
