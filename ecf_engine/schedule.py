"""The coding schedule: group 0 from the hyperprior, then 2*N_cs-1 context-model steps.

Encoder and decoder run this same loop; only the callback differs (the encoder codes
the known values of a group, the decoder decodes them), so both derive every group's
entropy parameters from identical computations in identical order.

    step 0:   params(group 0) = g_e(learned context, psi)                  (skip-first-group)
    step t:   context(group t) = eContextformer(slab t-1 | KV cache of slabs < t-1)
              params(group t)  = g_e(context, psi at group t's positions)  t = 1 .. 2*N_cs-1
"""
from __future__ import annotations

from typing import Callable

import torch

from .contextformer import ContextModel
from .egr import egr, egr_inverse

# code_group(g, raw) -> y_hat of group g, (B, H, W2, p_cs); raw: (B, H, W2, p_cs, 3, k_m)
CodeGroup = Callable[[int, torch.Tensor], torch.Tensor]


@torch.no_grad()
def run(ctx_model: ContextModel, psi: torch.Tensor, code_group: CodeGroup, cached: bool = True) -> torch.Tensor:
    """Code all 2*N_cs groups in order; returns y_hat (B, M, H, W).

    ctx_model: a ContextModel (float parameters) or its fixedpoint.FixedPointContext copy
    (int64 psi and parameters), which has the same interface.
    cached=True: each step embeds only the new slab and attends against the KV cache.
    cached=False: each step recomputes the transformer over all slabs so far (reference).
    """
    cfg = ctx_model.cfg
    psi_slabs = ctx_model.hyper_slabs(psi)                     # (B, 2, H, W2, 2M)
    B, _, H, W2, _ = psi_slabs.shape
    grids, biases = ctx_model.grids(H, W2), ctx_model.biases()
    caches = [ctx_model.new_cache(grid, psi) for grid in grids] if cached else None
    slabs = psi.new_zeros(B, cfg.groups, H, W2, cfg.p_cs)
    raw = ctx_model.first_group_params(psi_slabs)
    for g in range(cfg.groups):
        slabs[:, g] = code_group(g, raw)
        if g == cfg.groups - 1:
            break
        if cached:
            ctx = ctx_model.context_step(slabs[:, g:g + 1], g, grids, biases, caches)
        else:
            ctx = ctx_model.context(slabs[:, :g + 1], grids, biases)[:, g]
        raw = ctx_model.params(ctx, psi_slabs[:, (g + 1) % 2])
    return egr_inverse(slabs, cfg.N_cs)


@torch.no_grad()
def teacher_forced(ctx_model: ContextModel, psi: torch.Tensor, y_hat: torch.Tensor) -> list[torch.Tensor]:
    """Every group's raw entropy parameters, (B, H, W2, p_cs, 3, k_m) each, when the groups'
    values are already known (y_hat): the encoder's schedule without the coding. For
    comparing backends (tests/test_kernels_e2e.py, benchmarks/kernel_mismatch.py)."""
    slabs, raws = egr(y_hat, ctx_model.cfg.N_cs), []

    def code_group(g, raw):
        raws.append(raw)
        return slabs[:, g]

    run(ctx_model, psi, code_group, cached=True)
    return raws
