"""Bjøntegaard delta rate and delta PSNR between two rate–distortion curves (numpy only).

BD-rate: the average difference in log-rate between a test curve and an anchor curve over
the PSNR range both cover, as a percentage of the anchor's rate (negative = the test codec
needs fewer bits for the same quality). BD-PSNR: the average PSNR difference over the
log-rate range both cover, in dB.

Two ways of turning the measured points into curves:

* ``"pchip"`` (default, what the JVET common test conditions use): a piecewise cubic
  Hermite interpolant with monotone (Fritsch–Carlson) slopes through the points, so the
  curve passes through every point and never overshoots between them.
* ``"polyfit"``: the original VCEG-M33 method, one least-squares cubic polynomial per curve.

Both integrate the curves exactly (they are cubics piece by piece). Rates can be in any
unit (bits, bpp, kbit/s) as long as anchor and test use the same one.
"""
from __future__ import annotations

import numpy as np

METHODS = ("pchip", "polyfit")
MIN_POINTS = 4


def _curve(rate, psnr, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(log-rate, PSNR) as float64 arrays sorted by PSNR, after checking them."""
    rate = np.asarray(rate, dtype=np.float64).ravel()
    psnr = np.asarray(psnr, dtype=np.float64).ravel()
    if rate.shape != psnr.shape:
        raise ValueError(f"{name}: {rate.size} rates but {psnr.size} PSNR values")
    if rate.size < MIN_POINTS:
        raise ValueError(f"{name}: BD metrics need at least {MIN_POINTS} rate points, got {rate.size}")
    if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(psnr))):
        raise ValueError(f"{name}: rates and PSNR values must be finite")
    if np.any(rate <= 0):
        raise ValueError(f"{name}: rates must be positive (they are compared on a log scale)")
    order = np.argsort(psnr, kind="stable")
    return np.log(rate[order]), psnr[order]


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slopes at the knots of the monotone piecewise cubic Hermite interpolant (Fritsch–Carlson,
    with the weighted harmonic mean of Fritsch–Butland inside and a shape-preserving
    three-point formula at the ends). x must be strictly increasing."""
    h = np.diff(x)
    delta = np.diff(y) / h
    m = np.zeros_like(y)
    # interior knots: 0 where the data turn (or are flat), else a weighted harmonic mean of the
    # neighbouring secants, which keeps the interpolant monotone wherever the data are
    for k in range(1, len(x) - 1):
        d0, d1 = delta[k - 1], delta[k]
        if d0 * d1 > 0:
            w0, w1 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            m[k] = (w0 + w1) / (w0 / d0 + w1 / d1)
    m[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    m[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return m


def _end_slope(h0: float, h1: float, d0: float, d1: float) -> float:
    """One-sided three-point slope at an end knot, clipped so the end piece stays monotone."""
    m = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if np.sign(m) != np.sign(d0):
        return 0.0
    if np.sign(d0) != np.sign(d1) and abs(m) > abs(3 * d0):
        return 3 * d0
    return m


def pchip(x, y, xq):
    """Values at xq of the monotone PCHIP interpolant through (x, y); x strictly increasing,
    xq inside [x[0], x[-1]] (NaN outside: no extrapolation)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xq = np.asarray(xq, dtype=np.float64)
    if x.size < 2 or np.any(np.diff(x) <= 0):
        raise ValueError("PCHIP needs at least 2 points with strictly increasing x")
    m = _pchip_slopes(x, y) if x.size > 2 else np.full(2, (y[1] - y[0]) / (x[1] - x[0]))
    k = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, x.size - 2)
    h = x[k + 1] - x[k]
    t = (xq - x[k]) / h
    # cubic Hermite basis on the piece [x[k], x[k+1]]
    out = ((2 * t ** 3 - 3 * t ** 2 + 1) * y[k] + (t ** 3 - 2 * t ** 2 + t) * h * m[k]
           + (-2 * t ** 3 + 3 * t ** 2) * y[k + 1] + (t ** 3 - t ** 2) * h * m[k + 1])
    return np.where((xq >= x[0]) & (xq <= x[-1]), out, np.nan)


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Integral from lo to hi (inside [x[0], x[-1]]) of the PCHIP interpolant through (x, y)."""
    if np.any(np.diff(x) <= 0):
        raise ValueError("PCHIP needs distinct values on the integration axis (two points share one)")
    m = _pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if a >= b:
            continue
        # the piece as a cubic in s = x - x[k]: y[k] + m[k] s + c2 s^2 + c3 s^3
        h = x[k + 1] - x[k]
        delta = (y[k + 1] - y[k]) / h
        c2 = (3 * delta - 2 * m[k] - m[k + 1]) / h
        c3 = (m[k] + m[k + 1] - 2 * delta) / h ** 2
        antiderivative = np.poly1d([c3 / 4, c2 / 3, m[k] / 2, y[k], 0.0])
        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return float(total)


def _polyfit_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Integral from lo to hi of the least-squares cubic through (x, y) (VCEG-M33)."""
    antiderivative = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))


def _mean_gap(x_a, y_a, x_t, y_t, method: str, axis: str) -> float:
    """Mean of (test curve - anchor curve) over the x range both cover."""
    if method not in METHODS:
        raise ValueError(f"unknown BD method {method!r}; use one of {', '.join(METHODS)}")
    lo, hi = max(x_a.min(), x_t.min()), min(x_a.max(), x_t.max())
    if lo >= hi:
        raise ValueError(f"the curves do not overlap in {axis}: anchor covers {x_a.min():.4g}..{x_a.max():.4g}, "
                         f"test covers {x_t.min():.4g}..{x_t.max():.4g}")
    integral = _pchip_integral if method == "pchip" else _polyfit_integral
    return (integral(x_t, y_t, lo, hi) - integral(x_a, y_a, lo, hi)) / (hi - lo)


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test, method: str = "pchip") -> float:
    """BD-rate of the test curve against the anchor, in percent (negative = test saves bits).

    Log-rate is interpolated as a function of PSNR and averaged over the PSNR range both
    curves cover. Raises ValueError for fewer than 4 points per curve, non-positive or
    non-finite values, or PSNR ranges that do not overlap."""
    log_ra, pa = _curve(rate_anchor, psnr_anchor, "anchor")
    log_rt, pt = _curve(rate_test, psnr_test, "test")
    gap = _mean_gap(pa, log_ra, pt, log_rt, method, "PSNR")
    return 100.0 * float(np.expm1(gap))


def bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test, method: str = "pchip") -> float:
    """BD-PSNR of the test curve against the anchor, in dB (positive = test is better).

    PSNR is interpolated as a function of log-rate and averaged over the log-rate range both
    curves cover; same errors as bd_rate."""
    log_ra, pa = _curve(rate_anchor, psnr_anchor, "anchor")
    log_rt, pt = _curve(rate_test, psnr_test, "test")
    a, t = np.argsort(log_ra, kind="stable"), np.argsort(log_rt, kind="stable")
    return _mean_gap(log_ra[a], pa[a], log_rt[t], pt[t], method, "log-rate")
