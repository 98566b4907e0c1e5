"""Exact fixed-point attention for one decoding step (fixedpoint.Block.step), in one Triton launch.

The fixed-point networks hold integers in float64 (ecf_engine/fixedpoint.py). One program
per (window, head) computes, for the T queries of slab `step` against the cached keys /
values of slabs 0..step:

    s = round(q . k * 2**-FRAC) + bias          (integers; q . k exact in float64)
    e = EXP[min(max s - s, len - 1)]             (0 on padding keys)
    o = round(sum e * v / sum e)                 (exact sums, floor division with correction)

in two passes over the key slabs (the running maximum first), so no online rescaling
enters: every value is the same integer the PyTorch ops in fixedpoint.py produce, whatever
the order of the sums. The two products per key slab are float64 tl.dot (DMMA on sm_80 and
later), exact in any summation order because every partial sum stays below 2**52. Compiled
for sm_90 (triton 3.9, ptxas -v) at the paper preset's T = 32, head dim 32: 166 registers,
no spills; the earlier broadcast multiply + sum spilled 5 KB per thread. A target without
float64 dot fails at its first launch, and fixedpoint.fixed_cached_attention then warns once and
runs the PyTorch path (the same integers). tests/test_kernels_e2e.py checks equality with
the PyTorch path under TRITON_INTERPRET=1; tests/test_kernels.py compiles it for sm_90.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _scores(q, ck_ptr, bias_ptr, valid_ptr, cache, slab, step, head, window, n_bias, cache_len, t, d, t_ok, d_ok,
            T: tl.constexpr, HEAD_DIM: tl.constexpr, FRAC: tl.constexpr):
    """Integer scores of the step's queries against key slab `slab`, and which keys count."""
    keys = slab * T + t
    k = tl.load(ck_ptr + cache + keys[:, None] * HEAD_DIM + d[None, :], mask=t_ok[:, None] & d_ok[None, :], other=0.0)
    s = tl.dot(q, tl.trans(k))
    bias = tl.load(bias_ptr + (head * n_bias + step * T + t[:, None]) * n_bias + keys[None, :],
                   mask=t_ok[:, None] & t_ok[None, :], other=0.0)
    s = tl.floor(s * (1.0 / (1 << FRAC)) + 0.5) + bias
    valid = tl.load(valid_ptr + window * cache_len + keys, mask=t_ok, other=0) != 0
    return s, t_ok[:, None] & (t_ok & valid)[None, :]


@triton.jit
def _fixed_step_fwd(q_ptr, ck_ptr, cv_ptr, bias_ptr, valid_ptr, exp_ptr, o_ptr,
                    n_windows, n_heads, cache_len, n_bias, step, exp_last,
                    T: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                    FRAC: tl.constexpr):
    pid = tl.program_id(0)                 # batch item * n_windows + window
    head = tl.program_id(1)
    window = pid % n_windows
    row = (pid * n_heads + head).to(tl.int64)
    t = tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    t_ok, d_ok = t < T, d < HEAD_DIM
    block = t_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + row * T * HEAD_DIM + t[:, None] * HEAD_DIM + d[None, :], mask=block, other=0.0)
    cache = row * cache_len * HEAD_DIM
    m = tl.full([BLOCK_T], float("-inf"), tl.float64)
    for slab in range(0, step + 1):
        s, ok = _scores(q, ck_ptr, bias_ptr, valid_ptr, cache, slab, step, head, window, n_bias, cache_len,
                        t, d, t_ok, d_ok, T, HEAD_DIM, FRAC)
        m = tl.maximum(m, tl.max(tl.where(ok, s, float("-inf")), 1))
    total = tl.zeros([BLOCK_T], tl.float64)
    acc = tl.zeros([BLOCK_T, BLOCK_D], tl.float64)
    for slab in range(0, step + 1):
        s, ok = _scores(q, ck_ptr, bias_ptr, valid_ptr, cache, slab, step, head, window, n_bias, cache_len,
                        t, d, t_ok, d_ok, T, HEAD_DIM, FRAC)
        gap = tl.where(ok, m[:, None] - s, 0.0)
        e = tl.load(exp_ptr + tl.minimum(gap, exp_last).to(tl.int64), mask=ok, other=0.0)
        v = tl.load(cv_ptr + cache + (slab * T + t)[:, None] * HEAD_DIM + d[None, :], mask=block, other=0.0)
        total += tl.sum(e, 1)
        acc += tl.dot(e, v)
    den = 2 * tl.maximum(total, 1.0)[:, None]
    num = 2 * acc + den / 2
    out = tl.floor(num / den)
    r = num - out * den                        # exact: integers below 2**53
    out = out - tl.where(r < 0, 1.0, 0.0) + tl.where(r >= den, 1.0, 0.0)
    tl.store(o_ptr + row * T * HEAD_DIM + t[:, None] * HEAD_DIM + d[None, :], out, mask=block)


def fixed_cached_attention(q: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, bias: torch.Tensor,
                           key_valid: torch.Tensor, exp_table: torch.Tensor, step: int, frac: int) -> torch.Tensor:
    """q (B, nW, heads, T, dh), caches (B, nW, heads, S*T, dh) with slabs 0..step filled, all
    float64 integers; bias (heads, N, N) float64; key_valid (nW, S*T) bool; exp_table float64.
    Returns (B, nW, heads, T, dh) float64."""
    B, nW, heads, T, dh = q.shape
    q = q.contiguous()
    if not (cache_k.is_contiguous() and cache_v.is_contiguous() and bias.is_contiguous()):
        raise ValueError("caches and bias must be contiguous")
    if not all(t.dtype == torch.float64 for t in (q, cache_k, cache_v, bias, exp_table)):
        raise ValueError("fixed-point attention takes float64 integers")
    valid = key_valid.to(torch.int8).contiguous()
    out = torch.empty_like(q)
    _fixed_step_fwd[(B * nW, heads)](
        q, cache_k, cache_v, bias, valid, exp_table, out, nW, heads, cache_k.shape[3], bias.shape[-1], step,
        float(exp_table.numel() - 1), T=T, HEAD_DIM=dh, BLOCK_T=triton.next_power_of_2(T),
        BLOCK_D=triton.next_power_of_2(dh), FRAC=frac)
    return out
