"""Every SIMD kernel set must reproduce the scalar reference: codes bit for bit, scores within 1e-5."""

import numpy as np
import pytest

from tqsearch import TurboQuantMSE

DIMS = [1, 3, 7, 8, 15, 16, 17, 97, 128, 256, 384, 512]


def _data(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[0] = 0
    x[1] *= 1e-20  # tiny norms still quantize identically
    return x


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("bits", range(1, 9))
def test_codes_and_scores_match_scalar(simd, dim, bits):
    x, queries = _data(300, dim), _data(9, dim, seed=1)
    ref = TurboQuantMSE(dim, bits, seed=11, scale="unbiased", simd="scalar")
    fast = TurboQuantMSE(dim, bits, seed=11, scale="unbiased", simd=simd)
    assert fast.simd_level == simd
    a, b = ref.encode(x), fast.encode(x)
    np.testing.assert_array_equal(a.packed, b.packed)
    np.testing.assert_array_equal(a.norms, b.norms)
    np.testing.assert_array_equal(a.scales, b.scales)
    np.testing.assert_allclose(fast.decode(b), ref.decode(a), rtol=1e-5, atol=1e-6)
    s_ref, s_fast = ref.inner_products(queries, a), fast.inner_products(queries, b)
    np.testing.assert_allclose(s_fast, s_ref, rtol=1e-5, atol=1e-5 * np.abs(s_ref).max())


def test_integer_valued_rotation_is_exact_on_every_level(simd):
    # Power-of-two dims with small integers: the Hadamard butterflies are exact, so every ISA must agree
    # with the scalar path to the last bit, including the rotation itself.
    x = np.random.default_rng(0).integers(-8, 8, (64, 256)).astype(np.float32)
    ref = TurboQuantMSE(256, 4, simd="scalar").rotation.forward(x)
    from tqsearch import _core

    out = np.empty_like(x)
    _core.rotate(TurboQuantMSE(256, 4).rotation.native, x, False, out, 1, simd)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dim", [7, 97, 384])
@pytest.mark.parametrize("bits", [2, 4])
def test_angle_rounding_codes_match_scalar(simd, dim, bits):
    x = _data(200, dim)
    ref = TurboQuantMSE(dim, bits, seed=5, scale="unbiased", simd="scalar", rounding="angle")
    fast = TurboQuantMSE(dim, bits, seed=5, scale="unbiased", simd=simd, rounding="angle")
    a, b = ref.encode(x), fast.encode(x)
    np.testing.assert_array_equal(a.packed, b.packed)
    np.testing.assert_array_equal(a.scales, b.scales)


@pytest.mark.parametrize("bits, dim", [(1, 2112), (2, 1056), (4, 640), (8, 200)])
def test_blocked_scans_match_scalar_across_tiles_groups_and_widening(simd, bits, dim):
    # 2,500 rows span several cache tiles of blocks, 75 queries span two query groups and odd chunk sizes,
    # and at 1-2 bits the 132 chunks per block pass the AVX2 kernel's u16 widening point (every 128).
    from tqsearch import FlatIndex

    x, queries = _data(2500, dim, seed=2), _data(75, dim, seed=3)
    results = []
    for level in ("scalar", simd):
        index = FlatIndex(dim, bits, simd=level)
        index.add(x)
        results.append(index.search(queries, 7, threads=1))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])
