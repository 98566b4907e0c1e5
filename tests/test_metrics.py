"""PSNR and MS-SSIM sanity: known values, symmetry, monotonicity, float32 vs float64."""
import math

import numpy as np
import torch

from ecf_engine import metrics

from conftest import smooth_image


def _noisy(a, sigma, seed=0):
    noise = np.random.default_rng(seed).normal(0, sigma, a.shape)
    return np.clip(a + noise, 0, 255).round().astype(np.uint8)


def test_psnr_known_value():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255                                   # MSE = 255^2 / 48
    assert math.isclose(metrics.psnr(a, b), 10 * math.log10(48))
    assert metrics.psnr(a, a) == math.inf


def test_ms_ssim_properties():
    a = smooth_image(192, 256)
    assert math.isclose(metrics.ms_ssim(a, a), 1.0, abs_tol=1e-6)
    b, c = _noisy(a, 4), _noisy(a, 16)
    assert 1 > metrics.ms_ssim(a, b) > metrics.ms_ssim(a, c) > 0
    assert math.isclose(metrics.ms_ssim(a, b), metrics.ms_ssim(b, a), abs_tol=1e-6)
    assert math.isnan(metrics.ms_ssim(a[:150], b[:150]))          # too small for 5 scales


def test_ms_ssim_float32_matches_float64():
    a = smooth_image(192, 256)
    b = _noisy(a, 10)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].double()
    y = torch.from_numpy(b).permute(2, 0, 1)[None].double()
    g = metrics._gauss(x.device).double()
    values = []
    for i in range(len(metrics.MS_SSIM_WEIGHTS)):
        ssim, cs = metrics._ssim_terms(x, y, g)
        values.append(ssim if i == len(metrics.MS_SSIM_WEIGHTS) - 1 else cs)
        x, y = torch.nn.functional.avg_pool2d(x, 2), torch.nn.functional.avg_pool2d(y, 2)
    w = torch.tensor(metrics.MS_SSIM_WEIGHTS, dtype=torch.float64)
    reference = torch.prod(torch.stack(values, 0).clamp_min(0) ** w[:, None, None], 0).mean().item()
    assert abs(metrics.ms_ssim(a, b) - reference) < 1e-5
