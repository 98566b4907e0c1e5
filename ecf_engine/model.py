"""The full codec network: g_a, g_s, hyperprior and the eContextformer entropy model."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import QUALITY_LAMBDAS, Config
from .context_entropy import ContextEntropyModel
from .entropy import FactorizedPrior
from .layers import round_ste
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
        if cfg.rates:
            # Continuous rate control with asymmetric gains (Cui et al., CVPR 2021): y is scaled
            # per channel by gain(q) before quantization and by inv_gain(q) before g_s. One
            # vector pair per QUALITY_LAMBDAS point, stored as logs (always positive), linear
            # in log space between points. The context model and h_a see the scaled y.
            self.log_gain = nn.Parameter(torch.zeros(cfg.rates, cfg.M))
            self.log_inv_gain = nn.Parameter(torch.zeros(cfg.rates, cfg.M))

    def init_gains(self, ref_lmbda: float) -> None:
        """Start the gains from a fixed-rate model trained at ref_lmbda: gain sqrt(lambda / ref),
        the quantizer step that keeps the rate-distortion slope at high rate."""
        with torch.no_grad():
            log_g = torch.tensor([0.5 * math.log(l / ref_lmbda) for l in QUALITY_LAMBDAS])[:, None]
            self.log_gain.copy_(log_g.expand_as(self.log_gain))
            self.log_inv_gain.copy_(-log_g.expand_as(self.log_inv_gain))

    def gains(self, quality) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, inv_gain), each (B, M, 1, 1), for quality a float or a (B,) tensor in [1, rates]."""
        q = torch.as_tensor(quality, dtype=self.log_gain.dtype, device=self.log_gain.device).reshape(-1)
        i = q.floor().clamp(1, self.cfg.rates - 1).long()
        t = (q - i)[:, None]
        pick = lambda table: ((1 - t) * table[i - 1] + t * table[i]).exp()[:, :, None, None]  # noqa: E731
        return pick(self.log_gain), pick(self.log_inv_gain)

    def forward(self, x: torch.Tensor, noise: bool = True, ste: bool = False, quality=None) -> dict:
        """x (B, 3, H, W) in [0, 1], H and W multiples of 64.

        Returns x_hat and the likelihoods of y and z under additive uniform noise
        (universal quantization), or with rounding when noise=False (validation).
        y itself is quantized (round(y)), not y - mu.

        ste=True (with noise) is mixed quantization: the likelihoods are still taken at
        the noisy latents, but g_s, h_s and the context model see the rounded latents, as
        they do when coding, with the rounding's gradient passed straight through.

        quality (variable-rate models only): float or (B,) tensor in [1, cfg.rates].
        """
        y = self.g_a(x)
        inv_gain = None
        if self.cfg.rates:
            if quality is None:
                raise ValueError("a variable-rate model needs a quality")
            gain, inv_gain = self.gains(quality)
            y = y * gain
        z = self.h_a(y)
        z_tilde, y_tilde = (_add_noise(z), _add_noise(y)) if noise else (torch.round(z), torch.round(y))
        z_in, y_in = (round_ste(z), round_ste(y)) if noise and ste else (z_tilde, y_tilde)
        psi = self.h_s(z_in)
        return {
            "x_hat": self.g_s(y_in if inv_gain is None else y_in * inv_gain),
            "likelihoods": {"y": self.context_model(y_tilde, psi, context=y_in),
                            "z": _fp32(self.z_prior.likelihood, z_tilde)},
        }


def _fp32(fn, t: torch.Tensor) -> torch.Tensor:
    with torch.autocast(t.device.type, enabled=False):
        return fn(t.float())


def _add_noise(t: torch.Tensor) -> torch.Tensor:
    return t + torch.empty_like(t).uniform_(-0.5, 0.5)


def rate_distortion_loss(out: dict, x: torch.Tensor, lmbda, weight: torch.Tensor | None = None) -> dict:
    """Paper loss R + lambda * 255^2 * MSE, R in bits per pixel, in fp32; lmbda a float or a
    (B,) tensor (one lambda per image, variable-rate training). Returns batch means; `weight`
    (B,) weighs the images' losses in the mean (bpp and mse stay plain means)."""
    B = x.shape[0]
    bits = sum(-torch.log2(l.float()).reshape(B, -1).sum(1) for l in out["likelihoods"].values())
    bpp = bits / (x.shape[2] * x.shape[3])
    mse = ((out["x_hat"].float() - x.float()) ** 2).reshape(B, -1).mean(1)
    loss = bpp + torch.as_tensor(lmbda, dtype=torch.float32, device=x.device) * 255 ** 2 * mse
    if weight is not None:
        loss = loss * weight
    return {"loss": loss.mean(), "bpp": bpp.mean(), "mse": mse.mean()}
