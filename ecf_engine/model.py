"""The full codec network: g_a, g_s, hyperprior and the eContextformer entropy model."""
from __future__ import annotations

import torch
from torch import nn

from .config import Config
from .context_entropy import ContextEntropyModel
from .entropy import FactorizedPrior
from .transforms import analysis, hyper_analysis, hyper_synthesis, synthesis

PAD = 64          # g_a downsamples by 16, h_a by 4 more


class ECFModel(nn.Module):
    """CompressAI-style contract: forward() for training; the engine does the coding."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.g_a = analysis(cfg)
        self.g_s = synthesis(cfg)
        self.h_a = hyper_analysis(cfg)
        self.h_s = hyper_synthesis(cfg)
        self.z_prior = FactorizedPrior(cfg.N)
        self.context_model = ContextEntropyModel(cfg)

    def forward(self, x: torch.Tensor, noise: bool = True, ste: bool = False) -> dict:
        """x (B, 3, H, W) in [0, 1], H and W multiples of 64.

        Returns x_hat and the likelihoods of y and z under additive uniform noise
        (universal quantization), or with rounding when noise=False (validation).
        y itself is quantized (round(y)), not y - mu.

        ste=True (with noise) is mixed quantization: the likelihoods are still taken at
        the noisy latents, but g_s, h_s and the context model see the rounded latents, as
        they do when coding, with the rounding's gradient passed straight through.
        """
        y = self.g_a(x)
        z = self.h_a(y)
        z_tilde, y_tilde = (_add_noise(z), _add_noise(y)) if noise else (torch.round(z), torch.round(y))
        z_in, y_in = (_round_ste(z), _round_ste(y)) if noise and ste else (z_tilde, y_tilde)
        psi = self.h_s(z_in)
        return {
            "x_hat": self.g_s(y_in),
            "likelihoods": {"y": self.context_model(y_tilde, psi, context=y_in),
                            "z": self.z_prior.likelihood(z_tilde)},
        }


def _add_noise(t: torch.Tensor) -> torch.Tensor:
    return t + torch.empty_like(t).uniform_(-0.5, 0.5)


def _round_ste(t: torch.Tensor) -> torch.Tensor:
    """round(t) forward, identity backward (straight-through estimator)."""
    return t + (torch.round(t) - t).detach()


def rate_distortion_loss(out: dict, x: torch.Tensor, lmbda: float) -> dict:
    """Paper loss R + lambda * 255^2 * MSE, R in bits per pixel."""
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(-torch.log2(l).sum() for l in out["likelihoods"].values()) / num_pixels
    mse = torch.mean((out["x_hat"] - x) ** 2)
    return {"loss": bpp + lmbda * 255 ** 2 * mse, "bpp": bpp, "mse": mse}
