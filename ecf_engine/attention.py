"""Masked (shifted-)window attention of the eContextformer: PyTorch reference, Triton fast
path (kernels/window_attention.py, kernels/cached_attention.py) and the rule between them.

    window_attention   all slabs at once (training, uncached decoding)
    cached_attention   one decoding step against the KV cache, with the cache append

Rule (ECF_BACKEND, ops.py): triton on CUDA tensors under auto and triton; on CPU tensors the
reference, unless ECF_BACKEND=triton with TRITON_INTERPRET=1 (the interpreter, for tests);
the reference under torch, under autograd (the kernels are forward-only) and for dtypes the
kernels do not take. The window grid and masks are contextformer.WindowGrid's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ops

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_WINDOW_CHUNK = 512          # windows per reference attention call: bounds the (heads, N, N) mask memory


def rule(device: str, dtype: torch.dtype | None = None, grad: bool = False) -> ops.Choice:
    forced = ops.requested()
    if forced == "torch":
        return ops.Choice("torch", "ECF_BACKEND=torch")
    if grad:
        return ops.Choice("torch", "autograd: the Triton kernels are forward-only")
    if dtype is not None and dtype not in KERNEL_DTYPES:
        return ops.Choice("torch", f"Triton kernels take float32/float16/bfloat16, not {dtype}")
    if device == "cuda":
        return ops.Choice("triton", "CUDA tensor")
    if forced != "triton":
        return ops.Choice("torch", f"{device} tensor: PyTorch reference (Triton runs on CUDA; force with "
                                   "ECF_BACKEND=triton and TRITON_INTERPRET=1)")
    if device == "cpu" and ops.interpret():
        return ops.Choice("triton", "forced, TRITON_INTERPRET=1 (CPU interpreter)")
    return ops.Choice("torch", f"ECF_BACKEND=triton on {device} tensors needs CUDA or (CPU) TRITON_INTERPRET=1",
                      warn=True)


ops.register("window_attention", rule)
ops.register("cached_attention", rule)


def _kernel(op: str, t: torch.Tensor):
    """The Triton kernel module for this call, or None: run the reference."""
    return ops.fast_path(op, t, lambda choice: ops.triton_kernel(op, t), warn=ops.requested() == "triton")


def _qkv_views(qkv: torch.Tensor, heads: int):
    """(B, S, H, W2, 3*d) -> q, k, v views (B, S, H, W2, heads, d/heads); each head's
    channels are [q | k | v], as split_heads splits them."""
    return qkv.unflatten(-1, (heads, -1)).chunk(3, dim=-1)


def window_attention(qkv: torch.Tensor, heads: int, grid, bias: torch.Tensor, bias_spatial: torch.Tensor,
                     bias_slab: torch.Tensor) -> torch.Tensor:
    """Masked (shifted-)window attention over slabs 0..S-1: qkv (B, S, H, W2, 3*d) -> (B, S, H, W2, d).

    bias (heads, N, N): relative position bias + group-causal mask, precomputed for the
    reference; the kernel gathers the same values from bias_spatial / bias_slab itself."""
    kernel = _kernel("window_attention", qkv)
    if kernel is not None:
        return kernel.window_attention(*_qkv_views(qkv, heads), bias_spatial, bias_slab, grid)
    return window_attention_reference(qkv, heads, grid, bias)


def cached_attention(qkv: torch.Tensor, heads: int, step: int, grid, bias: torch.Tensor,
                     bias_spatial: torch.Tensor, bias_slab: torch.Tensor, cache) -> torch.Tensor:
    """Decoding step `step`: qkv (B, 1, H, W2, 3*d) of slab `step` -> (B, 1, H, W2, d), attending to
    slabs 0..step; writes the slab's keys / values into cache (a contextformer.LayerCache)."""
    kernel = _kernel("cached_attention", qkv)
    if kernel is not None:
        return kernel.cached_attention(*_qkv_views(qkv, heads), cache.k, cache.v, step, bias_spatial, bias_slab, grid)
    return cached_attention_reference(qkv, heads, step, grid, bias, cache)


# -- PyTorch reference ---------------------------------------------------------------------

def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, nW, N, d) -> (B, nW, heads, N, d/heads)."""
    B, nW, N, _ = t.shape
    return t.view(B, nW, N, heads, -1).transpose(2, 3)


def _attend(q, k, v, bias, key_mask):
    """q (B, nW, h, Nq, dh), k/v (B, nW, h, Nk, dh), bias (h, Nq, Nk), key_mask (nW, Nk) -> (B, nW, Nq, d)."""
    if q.requires_grad and torch.is_grad_enabled():
        return _attend_explicit(q, k, v, bias, key_mask)
    return _attend_sdpa(q, k, v, bias, key_mask)


def _attend_sdpa(q, k, v, bias, key_mask):
    """_attend through scaled_dot_product_attention, in chunks of windows: the coder's path."""
    outs = []
    for s in range(0, q.shape[1], _WINDOW_CHUNK):
        e = s + _WINDOW_CHUNK
        mask = bias + key_mask[s:e, None, None, :]
        outs.append(F.scaled_dot_product_attention(q[:, s:e], k[:, s:e], v[:, s:e], attn_mask=mask))
    return _merge_heads(torch.cat(outs, 1) if len(outs) > 1 else outs[0])


def _merge_heads(o: torch.Tensor) -> torch.Tensor:
    """(B, nW, h, N, dh) -> (B, nW, N, h * dh)."""
    B, nW, h, N, dh = o.shape
    return o.transpose(2, 3).reshape(B, nW, N, h * dh)


def _attend_explicit(q, k, v, bias, key_mask):
    """softmax(q k^T / sqrt(dh) + mask) v written out: the training path. With a float mask
    that needs gradients, scaled_dot_product_attention takes a generic path that also scans
    the mask for fully masked rows; every row here has keys (each window holds real
    positions and a slab sees itself), and -inf is clamped to the float minimum regardless.
    Scores and softmax in float32 (the mask's dtype), products in the autocast dtype."""
    mask = (bias + key_mask[:, None, None, :]).clamp_min(torch.finfo(torch.float32).min)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2) + mask
    return _merge_heads(scores.softmax(-1) @ v)


def window_attention_reference(qkv: torch.Tensor, heads: int, grid, bias: torch.Tensor) -> torch.Tensor:
    """qkv (B, S, H, W2, 3d) of slabs 0..S-1 -> attention output (B, S, H, W2, d), padding dropped.
    bias (heads, N, N): SCABlock.bias(), sliced here to the S slabs present."""
    S = qkv.shape[1]
    n = S * grid.T
    q, k, v = split_heads(grid.partition(qkv), heads).chunk(3, dim=-1)
    o = _attend(q, k, v, bias[:, :n, :n], grid.key_mask.repeat(1, S))
    return grid.merge(o, S)


def cached_attention_reference(qkv: torch.Tensor, heads: int, k_slab: int, grid, bias: torch.Tensor,
                               cache) -> torch.Tensor:
    """qkv (B, 1, H, W2, 3d) of slab k_slab -> (B, 1, H, W2, d) attending to slabs 0..k_slab;
    stores the slab's keys / values in the cache first."""
    T = grid.T
    q, k, v = split_heads(grid.partition(qkv), heads).chunk(3, dim=-1)
    lo, hi = k_slab * T, (k_slab + 1) * T
    cache.k[..., lo:hi, :] = k
    cache.v[..., lo:hi, :] = v
    o = _attend(q, cache.k[..., :hi, :], cache.v[..., :hi, :], bias[:, lo:hi, :hi],
                grid.key_mask.repeat(1, k_slab + 1))
    return grid.merge(o, 1)
