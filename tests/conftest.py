"""Shared fixtures: seeded random data (never time-seeded)."""

from __future__ import annotations

import numpy as np
import pytest

import tqsearch


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    """n random unit vectors in R^dim (uniform on the sphere)."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=tqsearch.available_simd_levels())
def simd(request) -> str:
    """Every kernel set this CPU can run."""
    return request.param
