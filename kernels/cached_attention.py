"""Cached window attention for one decoding step, with the KV-cache append, in one Triton launch.

At step t only slab t is new. One program per (window, head):

    cache[t] <- k, v of slab t in this window       (zeros at padding, as the reference stores)
    out      = softmax(q_t . [cache[0..t-1], k_t]^T / sqrt(dh) + bias + masks) . [cache[0..t-1], v_t]

so a step reads the cached keys / values of earlier slabs once and computes only the new
slab's T queries (O(N) per step instead of O(N^2)). The cache layout is LayerCache's:
(B, n_windows, heads, S * T, dh), token s * T + i = slab s, window token i. The PyTorch
reference is attention.cached_attention_reference (SCABlock.step).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .window_attention import (block_sizes, check_inputs, dot_precision, online_softmax_step, slab_bias,
                               spatial_bias, window_tokens)


@triton.jit
def _cached_attention_fwd(q_ptr, k_ptr, v_ptr, o_ptr, ck_ptr, cv_ptr, spatial_ptr, slab_ptr,
                          s_b, s_h, s_x, s_n,                  # strides of the new q, k, v (B, 1, H, W2, heads, dh)
                          o_b, o_h, o_x, o_n,                  # strides of out
                          H, W2, top, left, n_wcols, n_windows, n_heads, cache_len, step, n_slab_table, scale,
                          T: tl.constexpr, K: tl.constexpr, HEAD_DIM: tl.constexpr,
                          BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)                 # batch item * n_windows + window
    head = tl.program_id(1)
    window = pid % n_windows
    b = (pid // n_windows).to(tl.int64)
    tok, row, col, h, x, inside = window_tokens(window, n_wcols, H, W2, top, left, T, K, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    d_ok = (d < HEAD_DIM)[None, :]
    mask = inside[:, None] & d_ok
    offs = b * s_b + h[:, None] * s_h + x[:, None] * s_x + head * s_n + d[None, :]
    q = tl.load(q_ptr + offs, mask=mask, other=0.0)
    k_new = tl.load(k_ptr + offs, mask=mask, other=0.0)
    v_new = tl.load(v_ptr + offs, mask=mask, other=0.0)

    # the append: all T slots of slab `step`, padding slots as zeros
    cache = (pid * n_heads + head).to(tl.int64) * cache_len * HEAD_DIM
    slot_ok = (tok < T)[:, None] & d_ok
    slots = cache + tok[:, None] * HEAD_DIM + d[None, :]
    tl.store(ck_ptr + slots + step * T * HEAD_DIM, k_new.to(ck_ptr.dtype.element_ty), mask=slot_ok)
    tl.store(cv_ptr + slots + step * T * HEAD_DIM, v_new.to(cv_ptr.dtype.element_ty), mask=slot_ok)

    m_i = tl.full([BLOCK_T], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_T], tl.float32)
    acc = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    bias_even = spatial_bias(spatial_ptr, head, step, 0, tok, row, col, T, K)
    bias_odd = spatial_bias(spatial_ptr, head, step, 1, tok, row, col, T, K)
    for slab_k in range(0, step):                            # earlier slabs from the cache
        k = tl.load(ck_ptr + slots + slab_k * T * HEAD_DIM, mask=slot_ok, other=0.0)
        v = tl.load(cv_ptr + slots + slab_k * T * HEAD_DIM, mask=slot_ok, other=0.0)
        bias = tl.where(slab_k % 2 == 0, bias_even, bias_odd) + slab_bias(slab_ptr, head, step, slab_k, n_slab_table)
        m_i, l_i, acc = online_softmax_step(q, k, v, inside, bias, m_i, l_i, acc, scale, PRECISION)
    bias = tl.where(step % 2 == 0, bias_even, bias_odd) + slab_bias(slab_ptr, head, step, step, n_slab_table)
    m_i, l_i, acc = online_softmax_step(q, k_new, v_new, inside, bias, m_i, l_i, acc, scale, PRECISION)

    out = acc / l_i[:, None]
    o_offs = b * o_b + h[:, None] * o_h + x[:, None] * o_x + head * o_n + d[None, :]
    tl.store(o_ptr + o_offs, out.to(o_ptr.dtype.element_ty), mask=mask)


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_k: torch.Tensor,
                     cache_v: torch.Tensor, step: int, bias_spatial: torch.Tensor, bias_slab: torch.Tensor,
                     grid) -> torch.Tensor:
    """Attention of slab `step` against slabs 0..step, appending its keys / values to the cache.

    q, k, v: (B, 1, H, W2, heads, dh) of slab `step` (views with equal strides);
    cache_k, cache_v: (B, n_windows, heads, S * T, dh) contiguous, slabs < step filled,
    slab `step` written here; bias tables as in window_attention. Returns (B, 1, H, W2, heads * dh).
    """
    check_inputs(q, k, v, grid)
    if not (q.stride() == k.stride() == v.stride()):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, S, H, W2, heads, dh = q.shape
    expected = (B, grid.n_windows, heads, cache_k.shape[3], dh)
    if S != 1 or tuple(cache_k.shape) != expected or cache_v.shape != cache_k.shape:
        raise ValueError(f"expected one slab and caches {expected}, got q {tuple(q.shape)}, "
                         f"caches {tuple(cache_k.shape)} / {tuple(cache_v.shape)}")
    if not (cache_k.is_contiguous() and cache_v.is_contiguous()) or not 0 <= step < cache_k.shape[3] // grid.T:
        raise ValueError(f"caches must be contiguous and hold slab {step}")
    out = torch.empty(B, 1, H, W2, heads, dh, dtype=q.dtype, device=q.device)
    spatial, slab = bias_spatial.contiguous(), bias_slab.contiguous()
    block_t, block_d = block_sizes(grid.T, dh)
    qs, os_ = q.stride(), out.stride()
    _cached_attention_fwd[(B * grid.n_windows, heads)](
        q, k, v, out, cache_k, cache_v, spatial, slab, qs[0], qs[2], qs[3], qs[4], os_[0], os_[2], os_[3], os_[4],
        H, W2, grid.top, grid.left, grid.nw, grid.n_windows, heads, cache_k.shape[3], step, slab.shape[-1],
        dh ** -0.5, T=grid.T, K=grid.kh, HEAD_DIM=dh, BLOCK_T=block_t, BLOCK_D=block_d,
        PRECISION=dot_precision(q.dtype))
    return out.view(B, 1, H, W2, heads * dh)
