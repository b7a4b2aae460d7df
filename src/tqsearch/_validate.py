"""Boundary checks shared by every public entry point: they convert once and name the bad argument."""

from __future__ import annotations

import numpy as np

_FLOAT32 = np.dtype(np.float32)


def as_matrix(x: object, dim: int, name: str = "vectors", finite: bool = True) -> np.ndarray:
    """Return `x` as a C-contiguous float32 (n, dim) array; raise TypeError/ValueError naming `name`.

    finite=False skips the NaN/Inf scan for callers whose native pass reports bad rows itself
    (see `bad_row`), so large batches are read once.
    """
    arr = x if type(x) is np.ndarray else np.asarray(x)
    # the common case, a C-contiguous float32 matrix of the right width, is checked in one line and used as is
    if not (arr.dtype is _FLOAT32 and arr.ndim == 2 and arr.shape[1] == dim and arr.flags.c_contiguous):
        arr = _float32_matrix(arr, dim, name)
    if finite:
        check_finite(arr, name)
    return arr


def _float32_matrix(arr: np.ndarray, dim: int, name: str) -> np.ndarray:
    """as_matrix's checks and cast for any other array."""
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array (float16/32/64), got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the index dimension), got {arr.shape[1]}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are reported by the caller
        return np.ascontiguousarray(arr, dtype=np.float32)


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ValueError naming the first row of `arr` holding NaN or Inf (also after a float32 cast)."""
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or Inf (first at row {bad})")


def bad_row(arr: np.ndarray, row: int, name: str) -> ValueError:
    """The error for a row the native encoder could not take (its squared norm is not finite)."""
    if not np.isfinite(arr[row]).all():
        return ValueError(f"{name} contains NaN or Inf (first at row {row})")
    return ValueError(f"{name} row {row} is too large: its squared norm overflows float32")


def as_int(value: object, name: str, low: int = 1, high: int | None = None) -> int:
    """Validate an integer argument in low..high (no upper bound when high is None)."""
    if type(value) is int and value >= low and (high is None or value <= high):  # the common case, in one line
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if int(value) < low or (high is not None and int(value) > high):
        raise ValueError(f"{name} must be in {low}..{high}, got {value}" if high is not None
                         else f"{name} must be >= {low}, got {value}")
    return int(value)


def as_bits(bits: object, allowed: range = range(1, 9)) -> int:
    """Validate a bit width."""
    return as_int(bits, "bits", allowed.start, allowed.stop - 1)


def as_dim(dim: object) -> int:
    """Validate a vector dimension."""
    return as_int(dim, "dim")


def as_seed(seed: object) -> int:
    """Validate a seed (any integer in 0..2^64-1)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in 0..2^64-1, got {seed}")
    return int(seed)


def as_threads(threads: object) -> int:
    """Validate a thread count; None or 0 means all cores (0 for the native side)."""
    if threads is None:
        return 0
    if type(threads) is int and threads >= 0:  # the common case, in one line
        return threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an integer or None, got {type(threads).__name__}")
    if int(threads) < 0:
        raise ValueError(f"threads must be >= 1, or None/0 for all cores, got {threads}")
    return int(threads)


def as_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Validate a string option against its allowed values."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def as_token_sets(sets: object, dim: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A sequence of (n_i, dim) token arrays as one float32 (sum n_i, dim) matrix plus int64 offsets (len + 1).

    Every set needs at least one token; NaN/Inf and ragged widths are reported with the set's position.
    """
    if isinstance(sets, np.ndarray) and sets.ndim == 2:
        raise TypeError(f"{name} must be a sequence of (n_tokens, {dim}) arrays, one per item, got one 2-D array "
                        "(wrap a single item in a list)")
    try:
        items = list(sets)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of (n_tokens, {dim}) arrays, got {type(sets).__name__}") from None
    mats = []
    for i, item in enumerate(items):
        m = as_matrix(item, dim, f"{name}[{i}]", finite=False)
        if len(m) == 0:
            raise ValueError(f"{name}[{i}] has no tokens (every item needs at least one)")
        mats.append(m)
    offsets = np.zeros(len(mats) + 1, dtype=np.int64)
    np.cumsum([len(m) for m in mats], out=offsets[1:])
    tokens = np.concatenate(mats) if mats else np.empty((0, dim), dtype=np.float32)
    if tokens.size and not np.isfinite(tokens).all():
        row = int(np.flatnonzero(~np.isfinite(tokens).all(axis=1))[0])
        item = int(np.searchsorted(offsets, row, side="right") - 1)
        raise ValueError(f"{name}[{item}] contains NaN or Inf (token {row - offsets[item]})")
    return tokens, offsets


def as_ids(ids: object, n: int | None = None) -> np.ndarray:
    """Distinct non-negative int64 ids, 1-D (one per vector when n is given); TypeError/ValueError otherwise."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        raise ValueError(f"ids must be 1-D with one id per vector ({n}), got shape {arr.shape}")
    arr = arr.astype(np.int64)
    if len(arr) and arr.min() < 0:
        raise ValueError(f"ids must be >= 0, got {int(arr.min())}")
    if len(np.unique(arr)) != len(arr):
        raise ValueError("ids contain duplicates")
    return arr
