"""Efficient coding-group rearrangement (EGR), PyTorch reference.

A latent (B, M, H, W) is split into N_cs channel segments of p_cs channels and a
checkerboard: position (h, w) is an *anchor* when h + w is even. EGR gathers every
coding group into one contiguous slab:

    (B, M, H, W) -> (B, 2 * N_cs, H, W // 2, p_cs)

slab 2s holds the anchors of segment s, slab 2s + 1 its non-anchors (spatial-first
order). Column j of row h in an anchor slab is latent column 2j + (h % 2); in a
non-anchor slab it is 2j + 1 - (h % 2). W must be even.

egr / egr_inverse go through ops.py, which runs the C++ / CUDA extension (csrc/) or the
references below; both give identical tensors (pure data movement).
"""
from __future__ import annotations

import torch

from . import ops


def _row_is_odd(H: int, device) -> torch.Tensor:
    return (torch.arange(H, device=device) % 2 == 1).view(H, 1)


def egr(y: torch.Tensor, n_cs: int) -> torch.Tensor:
    """(B, M, H, W) -> (B, 2*n_cs, H, W//2, M//n_cs)."""
    B, M, H, W = y.shape
    if W % 2 or M % n_cs:
        raise ValueError(f"EGR needs an even width and M divisible by n_cs, got {tuple(y.shape)}, n_cs={n_cs}")
    return ops.egr(y, n_cs)


def egr_inverse(slabs: torch.Tensor, n_cs: int) -> torch.Tensor:
    """(B, 2*n_cs, H, W2, p) -> (B, n_cs*p, H, 2*W2)."""
    if slabs.shape[1] != 2 * n_cs:
        raise ValueError(f"expected {2 * n_cs} slabs, got {slabs.shape[1]}")
    return ops.egr_inverse(slabs, n_cs)


def egr_reference(y: torch.Tensor, n_cs: int) -> torch.Tensor:
    """PyTorch reference of egr."""
    B, M, H, W = y.shape
    p = M // n_cs
    y = y.reshape(B, n_cs, p, H, W // 2, 2)
    even, odd = y[..., 0], y[..., 1]
    odd_row = _row_is_odd(H, y.device)
    anchor = torch.where(odd_row, odd, even)
    non_anchor = torch.where(odd_row, even, odd)
    slabs = torch.stack([anchor, non_anchor], 2)           # (B, n_cs, 2, p, H, W/2)
    return slabs.permute(0, 1, 2, 4, 5, 3).reshape(B, 2 * n_cs, H, W // 2, p)


def egr_inverse_reference(slabs: torch.Tensor, n_cs: int) -> torch.Tensor:
    """PyTorch reference of egr_inverse."""
    B, G, H, W2, p = slabs.shape
    s = slabs.reshape(B, n_cs, 2, H, W2, p).permute(0, 1, 5, 3, 4, 2)   # (B, n_cs, p, H, W2, 2)
    anchor, non_anchor = s[..., 0], s[..., 1]
    odd_row = _row_is_odd(H, slabs.device)
    even = torch.where(odd_row, non_anchor, anchor)
    odd = torch.where(odd_row, anchor, non_anchor)
    return torch.stack([even, odd], -1).reshape(B, n_cs * p, H, 2 * W2)
