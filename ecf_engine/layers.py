"""Building blocks of the transforms: GDN / IGDN, residual units, attention module, and the
straight-through rounding of latents."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .detmath import sigmoid

GDN_BETA_MIN = 1e-6        # added to beta: the norm stays above 0 (no division by zero in GDN)
GDN_GAMMA_INIT = 0.1       # initial cross-channel weights on the diagonal (Balle et al.'s choice)


def round_ste(t: torch.Tensor) -> torch.Tensor:
    """round(t) forward, identity backward (straight-through estimator)."""
    return t + (torch.round(t) - t).detach()


class _GDNRows(torch.autograd.Function):
    """GDN / IGDN on pixel rows x (P, C), fp32, with a hand-written backward: the training
    path. It keeps x and the norm for the backward pass (autograd's composition keeps four
    tensors and runs twice the elementwise passes) and uses one GEMM each way, where the 1x1
    convolution of the reference takes PyTorch's slow path on channels_last fp32."""

    @staticmethod
    def forward(ctx, x, beta_sqrt, gamma_sqrt, inverse: bool):
        norm = torch.addmm(beta_sqrt.square() + GDN_BETA_MIN, x * x, gamma_sqrt.square().t()).sqrt_()
        ctx.save_for_backward(x, norm, beta_sqrt, gamma_sqrt)
        ctx.inverse = inverse
        return x * norm if inverse else x / norm

    @staticmethod
    def backward(ctx, g):
        x, norm, beta_sqrt, gamma_sqrt = ctx.saved_tensors
        # s_i = beta_i + sum_j gamma_ij x_j^2, n = sqrt(s); t = 2 dL/ds
        if ctx.inverse:                         # y = x n
            direct = g * norm
            t = g * x / norm
        else:                                   # y = x / n
            direct = g / norm
            t = -direct * x / (norm * norm)
        dx = direct.addcmul_(x, t @ gamma_sqrt.square())
        d_gamma_sqrt = (t.t() @ (x * x)).mul_(gamma_sqrt)
        d_beta_sqrt = t.sum(0).mul_(beta_sqrt)
        return dx, d_beta_sqrt, d_gamma_sqrt, None


class GDN(nn.Module):
    """Generalized divisive normalization (Balle et al. 2016), or its inverse.

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)   (inverse: multiply instead)
    beta and gamma are kept non-negative by a square re-parametrization. Always in fp32.
    With gradients on, forward runs _GDNRows (the training path, tested against reference());
    without, the reference, which the coder's results are defined by.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        self.gamma_sqrt = nn.Parameter(torch.eye(channels).mul(GDN_GAMMA_INIT).sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.reference(x)
        with torch.autocast(x.device.type, enabled=False):
            B, C, H, W = x.shape
            rows = x.float().permute(0, 2, 3, 1).reshape(-1, C)     # a view when x is channels_last
            y = _GDNRows.apply(rows, self.beta_sqrt, self.gamma_sqrt, self.inverse)
            return y.view(B, H, W, C).permute(0, 3, 1, 2)          # channels_last strides

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):     # fp32 even under mixed precision
            x = x.float()
            beta = self.beta_sqrt.square() + GDN_BETA_MIN
            gamma = self.gamma_sqrt.square()[:, :, None, None]
            norm = F.conv2d(x * x, gamma, beta).sqrt()
            return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 3, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride, padding=k // 2, output_padding=stride - 1)


class ResidualUnit(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with identity shortcut (Cheng et al. 2020)."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.body = nn.Sequential(
            conv(channels, half, 1), nn.ReLU(inplace=True),
            conv(half, half, 3), nn.ReLU(inplace=True),
            conv(half, channels, 1))

    def forward(self, x):
        return F.relu(x + self.body(x))


class AttentionModule(nn.Module):
    """Residual attention module without the non-local block: x + a(x) * sigmoid(b(x))."""

    def __init__(self, channels: int):
        super().__init__()
        self.trunk = nn.Sequential(*[ResidualUnit(channels) for _ in range(3)])
        self.gate = nn.Sequential(*[ResidualUnit(channels) for _ in range(3)], conv(channels, channels, 1))

    def forward(self, x):
        return x + self.trunk(x) * sigmoid(self.gate(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with LeakyReLU and an identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            conv(channels, channels), nn.LeakyReLU(inplace=True),
            conv(channels, channels), nn.LeakyReLU(inplace=True))

    def forward(self, x):
        return x + self.body(x)
