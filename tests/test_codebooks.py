import math

import numpy as np
import pytest

from tqsearch import lloyd_max

# Unit-variance Lloyd-Max centroids for N(0, 1) (research brief §1.2, positive half).
GAUSSIAN = {
    1: [0.7979],
    2: [0.4528, 1.5104],
    3: [0.2451, 0.7560, 1.3439, 2.1519],
    4: [0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326],
}
GAUSSIAN_MSE = {1: 0.36338, 2: 0.11748, 3: 0.03455, 4: 0.00950}


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_limit_matches_published_tables(bits):
    cb = lloyd_max(10**6, bits)
    assert cb.law == "gaussian"
    np.testing.assert_allclose(cb.unit_centroids[2 ** (bits - 1):], GAUSSIAN[bits], atol=2e-4)
    assert cb.mse == pytest.approx(GAUSSIAN_MSE[bits], rel=1e-3)


@pytest.mark.parametrize("bits", range(1, 9))
def test_codebook_is_symmetric_sorted_with_midpoint_boundaries(bits):
    cb = lloyd_max(384, bits)
    c = cb.centroids
    assert c.dtype == np.float32 and len(c) == 2**bits
    assert np.all(np.diff(c) > 0)
    np.testing.assert_array_equal(c, -c[::-1])
    np.testing.assert_array_equal(cb.boundaries, ((c[:-1].astype(np.float64) + c[1:]) / 2).astype(np.float32))
    # Panter-Dite / Shannon sandwich of Theorem 1 and 3.
    assert 4.0**-bits < cb.mse < math.sqrt(3) * math.pi / 2 * 4.0**-bits


def test_beta_law_differs_from_gaussian_at_low_dim_and_converges():
    low, gauss = lloyd_max(8, 2), lloyd_max(10**6, 2)
    assert abs(low.unit_centroids[-1] - gauss.unit_centroids[-1]) > 0.05  # support is bounded by sqrt(d)
    high = lloyd_max(4096, 2)
    np.testing.assert_allclose(high.unit_centroids, gauss.unit_centroids, atol=2e-3)


def test_small_dimensions_are_valid():
    # d=2: the coordinate law is the arcsine law; its 1-bit optimum is +-2/pi on the sphere scale.
    assert lloyd_max(2, 1).centroids[-1] == pytest.approx(2 / math.pi, rel=1e-4)
    np.testing.assert_array_equal(lloyd_max(1, 1).centroids, [-1, 1])


def test_cached_and_validated():
    assert lloyd_max(128, 3) is lloyd_max(128, 3)
    with pytest.raises(ValueError, match="bits"):
        lloyd_max(128, 9)
    with pytest.raises(ValueError, match="law"):
        lloyd_max(128, 2, law="uniform")


def _numpy_lloyd(law, t: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """The Lloyd-Max iteration as numpy states it (the form csrc/lloyd.cpp follows step for step)."""
    from tqsearch.codebooks import _cell_moments, _midpoints

    for _ in range(max_iter):
        p, m = _cell_moments(law, _midpoints(t))
        new = np.where(p > 0, m / np.maximum(p, 1e-300), t)
        new = (new - new[::-1]) / 2
        if np.max(np.abs(new - t)) < tol:
            return new
        t = new
    return t


@pytest.mark.parametrize("dim, bits, law", [(3, 2, "beta"), (64, 8, "beta"), (248, 4, "beta"), (40, 1, "beta"),
                                            (384, 3, "gaussian"), (16, 6, "beta")])
def test_native_iteration_is_bit_identical_to_numpy(dim, bits, law):
    # from a random symmetric start; (64, 8) runs all 20,000 steps without meeting the tolerance: every step must
    # round alike, so codebooks (and the codes of saved files) are those the numpy iteration gave
    from tqsearch import _core
    from tqsearch.codebooks import _MAX_ITER, _TOL, _quadrature

    cells = _quadrature(dim, law)
    start = np.sort(np.random.default_rng(dim).normal(size=1 << bits))
    start = (start - start[::-1]) / 2
    want = _numpy_lloyd(cells, start, _MAX_ITER, _TOL)
    got = _core.lloyd(cells.edges, cells.mass, cells.cum_p, cells.cum_m, start, _MAX_ITER, _TOL)
    np.testing.assert_array_equal(got, want)
