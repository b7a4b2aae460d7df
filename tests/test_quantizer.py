import math

import numpy as np
import pytest
from conftest import unit_rows

from tqsearch import Codes, FileFormatError, TurboQuantMSE, TurboQuantProd
from tqsearch.quantizer import centre_of

PAPER_MSE = {1: 0.3634, 2: 0.1175, 3: 0.0345, 4: 0.0095}


@pytest.fixture(scope="module")
def sphere384():
    return unit_rows(20_000, 384, seed=1)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_mse_matches_the_paper(sphere384, bits):
    q = TurboQuantMSE(384, bits, seed=0, scale="none")
    err = np.sum((sphere384 - q.decode(q.encode(sphere384))) ** 2, axis=1).mean()
    assert err == pytest.approx(PAPER_MSE[bits], rel=0.02)


@pytest.mark.parametrize("bits", range(1, 9))
def test_mse_within_theorem_bounds(sphere384, bits):
    x = sphere384[:4000]
    q = TurboQuantMSE(384, bits, seed=2)
    err = np.sum((x - q.decode(q.encode(x))) ** 2, axis=1).mean()
    assert 4.0**-bits < err < math.sqrt(3) * math.pi / 2 * 4.0**-bits


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_prod_estimate_is_unbiased(bits):
    # Unbiased over the quantizer's randomness (rotation and sketch): pairs that share one sketch are
    # correlated, so the standard error comes from the spread of independent per-seed means.
    base, queries = unit_rows(50, 64, seed=3), unit_rows(20, 64, seed=4)
    true = queries @ base.T
    seeds = range(100, 200)
    per_seed = [np.mean(TurboQuantProd(64, bits, seed=s).inner_products(queries, TurboQuantProd(64, bits, seed=s)
                                                                        .encode(base)) - true) for s in seeds]
    assert len(seeds) * true.size >= 100_000
    per_seed = np.asarray(per_seed, dtype=np.float64)
    assert abs(per_seed.mean()) < 3 * per_seed.std(ddof=1) / math.sqrt(len(per_seed))


def test_mse_estimate_is_biased_by_the_codebook_shrink_and_unbiased_scale_fixes_it():
    base, queries = unit_rows(1000, 128, seed=3), unit_rows(100, 128, seed=4)
    true = (queries @ base.T).ravel()
    slopes = {}
    for scale in ("none", "unbiased"):
        q = TurboQuantMSE(128, 2, seed=5, scale=scale)
        est = q.inner_products(queries, q.encode(base)).ravel()
        slopes[scale] = float(np.dot(est, true) / np.dot(true, true))
    assert slopes["none"] == pytest.approx(1 - 0.117, abs=0.02)  # E<q, x~> = (1 - D_b) <q, x>
    assert slopes["unbiased"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("scale", ["none", "unbiased", "lsq"])
@pytest.mark.parametrize("cls", [TurboQuantMSE, TurboQuantProd])
def test_estimates_equal_decoded_inner_products_and_l2(scale, cls):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 97)).astype(np.float32) * rng.uniform(0.1, 10, (300, 1)).astype(np.float32)
    queries = rng.standard_normal((7, 97)).astype(np.float32)
    q = cls(97, 3, seed=1, scale=scale) if cls is TurboQuantMSE else cls(97, 3, seed=1)
    codes = q.encode(base)
    dec = q.decode(codes)
    ip = q.inner_products(queries, codes)
    np.testing.assert_allclose(ip, queries @ dec.T, rtol=1e-4, atol=1e-3)
    l2 = q.l2(queries, codes)
    want = (queries**2).sum(1)[:, None] + (base**2).sum(1)[None, :] - 2 * ip
    np.testing.assert_allclose(l2, want, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(codes.norms, np.linalg.norm(base, axis=1), rtol=1e-5)


def test_scale_modes_do_what_they_promise():
    x = unit_rows(2000, 384, seed=9)
    err = {}
    for scale in ("none", "unbiased", "lsq"):
        q = TurboQuantMSE(384, 2, scale=scale)
        codes = q.encode(x)
        err[scale] = np.sum((x - q.decode(codes)) ** 2, axis=1).mean()
        if scale == "unbiased":  # the estimate of <x, x> is exact
            np.testing.assert_allclose(np.diag(q.inner_products(x[:50], codes[:50])), 1.0, rtol=1e-4)
    assert err["lsq"] < err["none"] < err["unbiased"]


def test_zero_vectors_round_trip_without_nan():
    x = np.zeros((3, 20), dtype=np.float32)
    x[1, 4] = 2.5
    for q in (TurboQuantMSE(20, 4, scale="unbiased"), TurboQuantMSE(20, 1, scale="lsq"), TurboQuantProd(20, 3)):
        codes = q.encode(x)
        dec = q.decode(codes)
        assert np.isfinite(dec).all() and np.isfinite(q.inner_products(x, codes)).all()
        np.testing.assert_array_equal(dec[[0, 2]], 0)


def test_prod_with_one_bit_is_pure_qjl():
    q = TurboQuantProd(64, 1)
    codes = q.encode(unit_rows(10, 64, 0))
    assert codes.packed.shape == (10, 0) and codes.qjl.shape == (10, 8)


@pytest.mark.parametrize("dim,bits", [(384, 4), (97, 3), (5, 1), (33, 8)])
def test_code_size_is_exact(dim, bits):
    codes = TurboQuantMSE(dim, bits, scale="lsq").encode(unit_rows(4, dim, 0))
    assert codes.packed.shape == (4, math.ceil(dim * bits / 8))
    assert codes.bytes_per_vector == math.ceil(dim * bits / 8) + 8


@pytest.mark.parametrize("cls", [TurboQuantMSE, TurboQuantProd])
def test_codes_round_trip_through_bytes(cls):
    q = cls(50, 3, seed=4)
    x = unit_rows(40, 50, 2)
    codes = q.encode(x)
    again = Codes.from_bytes(codes.to_bytes())
    np.testing.assert_array_equal(q.decode(again), q.decode(codes))
    for name in ("packed", "norms", "scales", "qjl", "residual_norms"):
        a, b = getattr(codes, name), getattr(again, name)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_codes_slicing_and_foreign_codes():
    q = TurboQuantMSE(16, 2, seed=1, scale="lsq")
    x = unit_rows(10, 16, 0)
    codes = q.encode(x)
    np.testing.assert_array_equal(q.decode(codes[2:5]), q.decode(codes)[2:5])
    np.testing.assert_array_equal(q.decode(codes[np.array([7, 1])]), q.decode(codes)[[7, 1]])
    with pytest.raises(ValueError, match="different quantizer"):
        TurboQuantMSE(16, 2, seed=2).decode(codes)
    with pytest.raises(ValueError, match="different quantizer"):
        TurboQuantMSE(16, 3, seed=1).inner_products(x, codes)


def test_corrupt_codes_bytes_are_rejected():
    codes = TurboQuantMSE(16, 2).encode(unit_rows(10, 16, 0))
    raw = bytearray(codes.to_bytes())
    with pytest.raises(FileFormatError, match="truncated"):
        Codes.from_bytes(bytes(raw[: len(raw) - 1]))
    at = bytes(raw).index(codes.packed.tobytes())
    raw[at + 3] ^= 0x01
    with pytest.raises(FileFormatError, match="checksum"):
        Codes.from_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="not a TQCODES1"):
        Codes.from_bytes(b"GGUF" + bytes(raw[4:]))


def _off_centre(n, dim, seed=0):
    """Vectors sharing a large common offset (like SIFT/MNIST pixels or embeddings with a mean direction)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) + 4.0 * rng.standard_normal(dim)).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 4])
def test_centred_codes_reconstruct_and_rank_better_off_centre(bits):
    x, q = _off_centre(3000, 64), _off_centre(50, 64, seed=0)[:, ::-1].copy()
    mu = centre_of(x[:1000], 64)  # a mean frozen after a first batch
    plain, centred = (TurboQuantMSE(64, bits, scale="unbiased", mean=m) for m in (None, mu))
    err = {name: float(np.mean(np.sum((c.decode(c.encode(x)) - x) ** 2, axis=1)))
           for name, c in (("plain", plain), ("centred", centred))}
    assert err["centred"] < 0.2 * err["plain"]  # the codes no longer spend their levels on the offset
    exact = np.argsort(((q[:, None] - x[None]) ** 2).sum(-1), axis=1)[:, :10]
    recall = {}
    for name, c in (("plain", plain), ("centred", centred)):
        found = np.argsort(c.l2(q, c.encode(x)), axis=1)[:, :10]
        recall[name] = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall["centred"] >= recall["plain"] + (0.15 if bits == 2 else 0.05)


def test_centred_estimates_equal_decoded_inner_products_and_l2():
    x, q = _off_centre(200, 48), _off_centre(5, 48, seed=1)
    c = TurboQuantMSE(48, 3, scale="lsq", mean=centre_of(x, 48))
    codes = c.encode(x)
    dec = c.decode(codes)
    np.testing.assert_allclose(c.inner_products(q, codes), q @ dec.T, rtol=1e-4, atol=1e-3)
    qc, xc, dc = q - c.mean, x - c.mean, dec - c.mean  # l2 keeps the exact ||x - mean||, estimates the cross term
    want = (qc**2).sum(1)[:, None] + (xc**2).sum(1)[None, :] - 2 * qc @ dc.T
    np.testing.assert_allclose(c.l2(q, codes), want, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(codes.norms, np.linalg.norm(xc, axis=1), rtol=1e-5)


def test_centred_codes_round_trip_and_refuse_another_mean():
    x = _off_centre(100, 40)
    c = TurboQuantMSE(40, 4, mean=centre_of(x, 40))
    codes = c.encode(x)
    back = Codes.from_bytes(codes.to_bytes())
    np.testing.assert_array_equal(back.mean, codes.mean)
    np.testing.assert_array_equal(c.decode(back[:10]), c.decode(codes)[:10])  # slicing keeps the mean
    assert codes.bytes_per_vector == TurboQuantMSE(40, 4).encode(x).bytes_per_vector  # the mean costs no bytes
    with pytest.raises(ValueError, match="different mean"):
        TurboQuantMSE(40, 4).decode(codes)
    with pytest.raises(ValueError, match="different mean"):
        TurboQuantMSE(40, 4, mean=codes.mean + 1).inner_products(x[:2], codes)


def test_version_1_codes_buffers_still_load():
    from tqsearch import _format

    codes = TurboQuantMSE(40, 2).encode(_off_centre(20, 40))
    meta = {"kind": "mse", "dim": 40, "bits": 2, "seed": 0, "rotation": codes.rotation, "scale": "none", "n": 20}
    old = _format.pack(b"TQCODES1", 1, meta, {"packed": codes.packed, "norms": codes.norms})  # as version 1 wrote
    back = Codes.from_bytes(old)
    assert back.mean is None
    np.testing.assert_array_equal(TurboQuantMSE(40, 2).decode(back), TurboQuantMSE(40, 2).decode(codes))


@pytest.mark.parametrize("bits", [2, 4])
def test_angle_rounding_never_loses_cosine_and_gains_on_average(bits):
    x = _off_centre(500, 128)
    cos = {}
    for rounding in ("nearest", "angle"):
        c = TurboQuantMSE(128, bits, scale="unbiased", rounding=rounding)
        codes = c.encode(x)
        dec = c.decode(codes)
        cos[rounding] = np.sum(dec * x, 1) / np.linalg.norm(dec, axis=1) / np.linalg.norm(x, axis=1)
        np.testing.assert_allclose(c.inner_products(x[:3], codes), x[:3] @ dec.T, rtol=1e-4, atol=1e-2)
    assert np.all(cos["angle"] >= cos["nearest"] - 1e-6)  # t = 1 is in the grid: never a worse direction
    # 1 - cos falls ~7% at 4 bits (d = 128), ~0.6% at 2 bits
    assert np.mean(1 - cos["angle"]) < (0.95 if bits == 4 else 0.997) * np.mean(1 - cos["nearest"])
    with pytest.raises(ValueError, match="rounding"):
        TurboQuantMSE(128, bits, rounding="best")
