"""BD-rate / BD-PSNR on curves whose answer is known analytically."""
import math

import numpy as np
import pytest

from ecf_engine.bdrate import _pchip_integral, _pchip_slopes, bd_psnr, bd_rate, pchip

# the published VTM-16.2 Kodak anchor (DESIGN.md section 1)
VTM_BPP = [0.0482, 0.1125, 0.2458, 0.4905, 0.8748, 1.4308, 2.3246, 3.6326]
VTM_PSNR = [26.14, 28.49, 31.20, 34.26, 37.42, 40.42, 43.51, 46.59]
METHODS = ["pchip", "polyfit"]


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_give_zero(method):
    assert bd_rate(VTM_BPP, VTM_PSNR, VTM_BPP, VTM_PSNR, method) == pytest.approx(0, abs=1e-12)
    assert bd_psnr(VTM_BPP, VTM_PSNR, VTM_BPP, VTM_PSNR, method) == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factor", [0.8, 0.9, 1.25, 2.0])
def test_constant_rate_factor_is_the_bd_rate(method, factor):
    # the same PSNRs at factor x the rate: log-rate curves differ by exactly log(factor)
    test_bpp = [factor * r for r in VTM_BPP]
    assert bd_rate(VTM_BPP, VTM_PSNR, test_bpp, VTM_PSNR, method) == pytest.approx(100 * (factor - 1), abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_linear_curves_sampled_at_different_points(method):
    # log R = a + b * PSNR, test shifted by log(k) and sampled at other, partly overlapping PSNRs:
    # both interpolations reproduce straight lines exactly, so BD-rate = k - 1 and
    # BD-PSNR = -log(k) / b (the horizontal distance between the lines).
    a, b, k = -9.0, 0.25, 0.85
    p_anchor = np.array([26.0, 29.0, 31.5, 35.0, 38.0, 41.0])
    p_test = np.array([28.0, 30.0, 33.0, 36.5, 40.0, 44.0, 46.0])
    r_anchor = np.exp(a + b * p_anchor)
    r_test = k * np.exp(a + b * p_test)
    assert bd_rate(r_anchor, p_anchor, r_test, p_test, method) == pytest.approx(100 * (k - 1), abs=1e-9)
    assert bd_psnr(r_anchor, p_anchor, r_test, p_test, method) == pytest.approx(-math.log(k) / b, abs=1e-9)


def test_polyfit_is_exact_for_cubic_curves():
    # log R a cubic in PSNR: the VCEG-M33 fit recovers it exactly from any 4+ samples
    cubic = np.poly1d([2e-4, -0.02, 0.9, -14.0])
    p_anchor = np.linspace(27, 40, 5)
    p_test = np.linspace(30, 45, 6)
    shift = math.log(1.1)
    got = bd_rate(np.exp(cubic(p_anchor)), p_anchor, np.exp(cubic(p_test) + shift), p_test, "polyfit")
    assert got == pytest.approx(10.0, abs=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_swapping_anchor_and_test_gives_the_inverse(method):
    test_bpp = [0.041, 0.101, 0.230, 0.47, 0.80, 1.39]
    test_psnr = [26.5, 29.0, 31.8, 34.6, 37.3, 40.6]
    forward = bd_rate(VTM_BPP, VTM_PSNR, test_bpp, test_psnr, method) / 100
    backward = bd_rate(test_bpp, test_psnr, VTM_BPP, VTM_PSNR, method) / 100
    assert (1 + forward) * (1 + backward) == pytest.approx(1, abs=1e-12)
    dp = bd_psnr(VTM_BPP, VTM_PSNR, test_bpp, test_psnr, method)
    assert bd_psnr(test_bpp, test_psnr, VTM_BPP, VTM_PSNR, method) == pytest.approx(-dp, abs=1e-12)


def test_point_order_does_not_matter():
    shuffled = [3, 0, 7, 5, 1, 6, 2, 4]
    bpp = [VTM_BPP[i] * 0.9 for i in shuffled]
    psnr = [VTM_PSNR[i] for i in shuffled]
    assert bd_rate(VTM_BPP, VTM_PSNR, bpp, psnr) == pytest.approx(-10, abs=1e-9)


def test_pchip_is_monotone_and_interpolates():
    x = np.array([0.0, 1.0, 2.0, 5.0, 6.0])
    y = np.array([0.0, 0.1, 3.0, 3.1, 8.0])
    m = _pchip_slopes(x, y)
    assert np.all(m >= 0)                       # monotone data -> no negative slope anywhere
    # the integral over a knot interval of width eps around each knot -> the knot value
    eps = 1e-6
    for xi, yi in zip(x[1:-1], y[1:-1]):
        assert _pchip_integral(x, y, xi - eps, xi + eps) / (2 * eps) == pytest.approx(yi, abs=1e-5)
    # a linear function is reproduced exactly: its integral is the trapezoid
    assert _pchip_integral(x, 2 * x + 1, 0.5, 5.5) == pytest.approx((5.5 ** 2 + 5.5) - (0.5 ** 2 + 0.5))


def test_pchip_values():
    x = np.array([0.0, 1.0, 2.0, 5.0, 6.0])
    y = np.array([0.0, 0.1, 3.0, 3.1, 8.0])
    assert np.allclose(pchip(x, y, x), y)
    q = np.linspace(0, 6, 301)
    v = pchip(x, y, q)
    assert np.all(np.diff(v) >= -1e-12)                  # monotone, no overshoot
    assert v.min() >= 0 and v.max() <= 8
    # integral of the values agrees with the exact piecewise integral (Simpson's rule)
    simpson = (q[1] - q[0]) / 3 * (v[0] + v[-1] + 4 * v[1:-1:2].sum() + 2 * v[2:-1:2].sum())
    assert simpson == pytest.approx(_pchip_integral(x, y, 0, 6), rel=1e-6)
    assert np.isnan(pchip(x, y, [-1.0, 7.0])).all()
    assert np.allclose(pchip(x, 3 * x - 2, q), 3 * q - 2)


def test_fewer_than_four_points_is_an_error():
    with pytest.raises(ValueError, match="at least 4 rate points"):
        bd_rate(VTM_BPP, VTM_PSNR, [0.1, 0.2, 0.4], [28, 31, 34])
    with pytest.raises(ValueError, match="at least 4 rate points"):
        bd_psnr([0.1, 0.2, 0.4], [28, 31, 34], VTM_BPP, VTM_PSNR)


def test_no_overlap_is_an_error():
    with pytest.raises(ValueError, match="do not overlap in PSNR"):
        bd_rate(VTM_BPP[:4], VTM_PSNR[:4], [1, 2, 3, 4], [50, 51, 52, 53])
    with pytest.raises(ValueError, match="do not overlap in log-rate"):
        bd_psnr([0.01, 0.02, 0.03, 0.04], [20, 21, 22, 23], [1, 2, 3, 4], [30, 31, 32, 33])


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="positive"):
        bd_rate(VTM_BPP, VTM_PSNR, [0, 0.2, 0.4, 0.8], [28, 31, 34, 37])
    with pytest.raises(ValueError, match="finite"):
        bd_rate(VTM_BPP, VTM_PSNR, [0.1, 0.2, 0.4, 0.8], [28, 31, float("inf"), 37])
    with pytest.raises(ValueError, match="rates but"):
        bd_rate(VTM_BPP, VTM_PSNR, [0.1, 0.2, 0.4, 0.8], [28, 31, 34])
    with pytest.raises(ValueError, match="unknown BD method"):
        bd_rate(VTM_BPP, VTM_PSNR, VTM_BPP, VTM_PSNR, method="akima")
    with pytest.raises(ValueError, match="distinct"):
        bd_rate(VTM_BPP, VTM_PSNR, [0.1, 0.2, 0.4, 0.8], [28, 31, 31, 37])
