"""Encoder-side online rate-distortion optimization (oRDO).

The networks stay frozen; the latents y and z of one image are optimized for the
training loss R + lambda * 255^2 * MSE, evaluated exactly as the decoder will see them:
rounded values (straight-through gradients), the context model's real likelihoods and
g_s's reconstruction. The paper runs 26 Adam iterations, lr 0.062, decaying by 0.72 per
iteration. The decoder is unchanged: only different integers get coded.
"""
from __future__ import annotations

import torch

from .model import ECFModel

ITERATIONS, LEARNING_RATE, DECAY = 26, 0.062, 0.72


def _ste_round(t: torch.Tensor) -> torch.Tensor:
    return t + (torch.round(t) - t).detach()


def rd_loss(model: ECFModel, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, H: int, W: int,
            lmbda: float) -> torch.Tensor:
    """Per-image R + lambda * 255^2 * MSE of the rounded latents; R in bits per pixel,
    MSE over the H x W image (not its padding). Returns (B,)."""
    y_q, z_q = _ste_round(y), _ste_round(z)
    psi = model.h_s(z_q)
    bits = -torch.log2(model.context_model(y_q, psi)).sum((1, 2, 3))
    bits = bits - torch.log2(model.z_prior.likelihood(z_q)).sum((1, 2, 3))
    mse = (model.g_s(y_q)[..., :H, :W] - x[..., :H, :W]).square().mean((1, 2, 3))
    return bits / (H * W) + lmbda * 255 ** 2 * mse


def optimize_latents(model: ECFModel, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, H: int, W: int,
                     iterations: int = ITERATIONS, lr: float = LEARNING_RATE, decay: float = DECAY,
                     lmbda: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the (y, z) with the lowest loss seen, per image: never worse than the
    start under the model's own rate estimate."""
    lmbda = model.cfg.lmbda if lmbda is None else lmbda
    y, z = y.detach().clone().requires_grad_(True), z.detach().clone().requires_grad_(True)
    best_y, best_z = y.detach().clone(), z.detach().clone()
    best = torch.full((y.shape[0],), float("inf"), device=y.device)
    opt = torch.optim.Adam([y, z], lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for i in range(iterations + 1):           # pass `iterations` only scores the last step
                loss = rd_loss(model, x, y, z, H, W, lmbda)
                better = loss.detach() < best
                best = torch.where(better, loss.detach(), best)
                best_y[better], best_z[better] = y.detach()[better], z.detach()[better]
                if i == iterations:
                    break
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                sched.step()
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    return best_y, best_z
