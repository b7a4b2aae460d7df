"""Bad input raises a clear error naming the problem; empty and strided input work."""

import numpy as np
import pytest

from tqsearch import FhtKacRotation, TurboQuantMSE, TurboQuantProd

QUANTIZERS = [lambda: TurboQuantMSE(8, 2), lambda: TurboQuantProd(8, 2)]


@pytest.mark.parametrize("make", QUANTIZERS)
def test_bad_vectors_rejected_on_every_entry_point(make):
    q = make()
    codes = q.encode(np.ones((2, 8), dtype=np.float32))
    good = np.ones((2, 8), dtype=np.float32)
    calls = [q.encode, lambda a: q.inner_products(a, codes), lambda a: q.l2(a, codes)]
    for call in calls:
        call(good)
        with pytest.raises(ValueError, match="8 columns"):
            call(np.ones((2, 7), dtype=np.float32))
        with pytest.raises(ValueError, match="2-D"):
            call(np.ones(8, dtype=np.float32))
        with pytest.raises(ValueError, match="2-D"):
            call(np.ones((1, 2, 8), dtype=np.float32))
        with pytest.raises(TypeError, match="float"):
            call(np.ones((2, 8), dtype=np.int64))
        with pytest.raises(TypeError, match="float"):
            call([["a"] * 8])
        bad = good.copy()
        bad[1, 3] = np.nan
        with pytest.raises(ValueError, match="NaN or Inf.*row 1"):
            call(bad)
        bad[1, 3] = np.inf
        with pytest.raises(ValueError, match="NaN or Inf"):
            call(bad)
        with pytest.raises(ValueError, match="NaN or Inf"):  # finite in float64, inf in float32
            call(np.full((2, 8), 1e300))


def test_bad_parameters():
    with pytest.raises(ValueError, match="bits"):
        TurboQuantMSE(8, 0)
    with pytest.raises(ValueError, match="bits"):
        TurboQuantMSE(8, 9)
    with pytest.raises(TypeError, match="bits"):
        TurboQuantMSE(8, 2.5)
    with pytest.raises(ValueError, match="dim"):
        TurboQuantMSE(0, 2)
    with pytest.raises(ValueError, match="scale"):
        TurboQuantMSE(8, 2, scale="cosine")
    with pytest.raises(ValueError, match="seed"):
        TurboQuantMSE(8, 2, seed=-1)
    with pytest.raises(ValueError, match="SIMD"):
        TurboQuantMSE(8, 2, simd="neon-x")
    with pytest.raises(ValueError, match="threads"):
        TurboQuantMSE(8, 2).encode(np.ones((1, 8)), threads=-2)
    with pytest.raises(ValueError, match="rotation has dim"):
        TurboQuantMSE(8, 2, rotation=FhtKacRotation(9))
    with pytest.raises(ValueError, match="seed"):
        TurboQuantMSE(8, 2, seed=1, rotation=FhtKacRotation(8, seed=2))


@pytest.mark.parametrize("make", QUANTIZERS)
def test_empty_batches(make):
    q = make()
    codes = q.encode(np.empty((0, 8), dtype=np.float32))
    assert len(codes) == 0
    assert q.decode(codes).shape == (0, 8)
    assert q.inner_products(np.ones((3, 8)), codes).shape == (3, 0)
    assert q.inner_products(np.empty((0, 8)), q.encode(np.ones((2, 8)))).shape == (0, 2)


def test_strided_and_other_float_dtypes_give_the_same_codes():
    x = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    q = TurboQuantMSE(8, 3)
    ref = q.encode(np.ascontiguousarray(x[:, ::2]))
    np.testing.assert_array_equal(q.encode(x[:, ::2]).packed, ref.packed)
    np.testing.assert_array_equal(q.encode(x[:, ::2].astype(np.float64)).packed, ref.packed)
    half = x[:, ::2].astype(np.float16)
    np.testing.assert_array_equal(q.encode(half).packed, q.encode(half.astype(np.float32)).packed)


def test_integer_and_matrix_arguments_of_every_form_check_alike():
    # a C-contiguous float32 matrix and a plain int take a short path (_validate.py): every other form must still be
    # converted, or rejected, as before
    from tqsearch import FlatIndex

    x = np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32)
    index = FlatIndex(8, 4)
    index.add(x)
    want = index.search(x[:3], 5)
    strided = np.stack([x[:3], -x[:3]], axis=2)[:, :, 0]
    for q in (x[:3].astype(">f4"), np.asfortranarray(x[:3]), x[:3].astype(np.float64), strided, x[:3].tolist()):
        got = index.search(q, np.int64(5), threads=np.int32(1))
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    with pytest.raises(TypeError, match="k must be an integer"):
        index.search(x[:3], True)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(x[:3], 0)
    with pytest.raises(TypeError, match="threads must be an integer"):
        index.search(x[:3], 5, threads=True)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        index.search(x[:3], 5, threads=-1)
    with pytest.raises(ValueError, match="8 columns"):
        index.search(x[:3, :7].copy(), 5)
