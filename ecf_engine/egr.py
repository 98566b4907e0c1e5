"""Efficient coding-group rearrangement (EGR): PyTorch reference, C++ / CUDA fast path, rule.

A latent (B, M, H, W) is split into N_cs channel segments of p_cs channels and a
checkerboard: position (h, w) is an *anchor* when h + w is even. EGR gathers every
coding group into one contiguous slab:

    (B, M, H, W) -> (B, 2 * N_cs, H, W // 2, p_cs)

slab 2s holds the anchors of segment s, slab 2s + 1 its non-anchors (spatial-first
order). Column j of row h in an anchor slab is latent column 2j + (h % 2); in a
non-anchor slab it is 2j + 1 - (h % 2). W must be even.

The PyTorch reference is below; the C++ / CUDA extension (csrc/egr.cpp, egr_cuda.cu) gives
identical tensors (pure data movement) and runs only when forced (rule below): it saves
< 1 ms of a Kodak decode, not worth a JIT build (~40 s C++, ~1 min nvcc) in the first encode.
"""
from __future__ import annotations

import torch

from . import ops


def rule(device: str, dtype: torch.dtype | None = None, grad: bool = False) -> ops.Choice:
    forced = ops.requested()
    if forced == "torch":
        return ops.Choice("torch", "ECF_BACKEND=torch")
    if grad:
        return ops.Choice("torch", "autograd: the extension has no backward")
    if forced not in ("cpp", "cuda"):
        return ops.Choice("torch", "PyTorch reference by default: the extension saves < 1 ms per Kodak image "
                                   "and costs a JIT build on first use (force with ECF_BACKEND=cpp / cuda)")
    if device not in ("cpu", "cuda"):
        return ops.Choice("torch", f"no extension for {device} tensors", warn=True)
    return ops.Choice("cuda" if device == "cuda" else "cpp", "forced")


ops.register("egr", rule)
ops.register("egr_inverse", rule)


def _extension(op: str, t: torch.Tensor):
    """The extension module for this call, or None: run the reference."""
    def load(choice):
        module = ops._extension_module(t.is_cuda)
        return module, "" if module is not None else ops._extension[t.device.type]
    return ops.fast_path(op, t, load, warn=True)          # chosen only when forced


def _row_is_odd(H: int, device) -> torch.Tensor:
    return (torch.arange(H, device=device) % 2 == 1).view(H, 1)


def egr(y: torch.Tensor, n_cs: int) -> torch.Tensor:
    """(B, M, H, W) -> (B, 2*n_cs, H, W//2, M//n_cs)."""
    B, M, H, W = y.shape
    if W % 2 or M % n_cs:
        raise ValueError(f"EGR needs an even width and M divisible by n_cs, got {tuple(y.shape)}, n_cs={n_cs}")
    ext = _extension("egr", y)
    return egr_reference(y, n_cs) if ext is None else ext.egr(y, n_cs)


def egr_inverse(slabs: torch.Tensor, n_cs: int) -> torch.Tensor:
    """(B, 2*n_cs, H, W2, p) -> (B, n_cs*p, H, 2*W2)."""
    if slabs.shape[1] != 2 * n_cs:
        raise ValueError(f"expected {2 * n_cs} slabs, got {slabs.shape[1]}")
    ext = _extension("egr_inverse", slabs)
    return egr_inverse_reference(slabs, n_cs) if ext is None else ext.egr_inverse(slabs, n_cs)


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
