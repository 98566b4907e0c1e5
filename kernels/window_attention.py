"""Fused (shifted-)window spatio-channel attention, forward: one Triton launch for all windows and heads.

Reads q, k, v straight from the EGR slab layout (B, S, H, W2, heads, dh) that the
qkv projection produces, so the window partition, its zero padding and the merge back
are index arithmetic inside the kernel, not copies. One program computes one head of
one query slab of one window:

    scores = q . k^T / sqrt(dh) + bias_spatial[dh, dw] + bias_slab[slab_q, slab_k]
    scores = -inf on padding keys (outside the H x W2 grid, or past the T tokens of a slab)
    out    = softmax(scores) . v           keys of slabs <= slab_q only (group-causal)

The key loop runs one slab (T = K * K/2 tokens) at a time with an online softmax, so no
N x N attention matrix is ever written; the group-causal mask is the loop bound. The
window grid and token order are those of contextformer.WindowGrid / token_coords; the
PyTorch reference is attention.window_attention_reference.

fp32 uses IEEE dot products (not TF32), so it matches the reference to ~1e-6;
fp16 / bf16 inputs accumulate in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def window_tokens(pid_window, n_wcols, H, W2, top, left, T: tl.constexpr, K: tl.constexpr, BLOCK_T: tl.constexpr):
    """The BLOCK_T token slots of one slab in one window: local row, slab column, grid row and
    column, and whether the slot is a real token (inside the grid and < T)."""
    KW: tl.constexpr = K // 2
    tok = tl.arange(0, BLOCK_T)
    row = tok // KW
    col = tok % KW
    h = (pid_window // n_wcols) * K + row - top
    x = (pid_window % n_wcols) * KW + col - left
    inside = (tok < T) & (h >= 0) & (h < H) & (x >= 0) & (x < W2)
    return tok, row, col, h, x, inside


@triton.jit
def spatial_bias(spatial_ptr, head, slab_q, key_parity, tok, row, col, T: tl.constexpr, K: tl.constexpr):
    """(BLOCK_T, BLOCK_T) spatial relative position bias between the window's tokens in query slab
    slab_q and in a key slab of parity key_parity, gathered from bias_spatial (heads, 2K-1, 2K-1).
    It depends on the key slab only through its parity (anchor or not), so callers build both
    tiles once, outside the key loop."""
    # latent column of a slab column: anchors (even slabs) sit at 2c + row % 2, others at 2c + 1 - row % 2
    lat_q = 2 * col + tl.where(slab_q % 2 == 0, row % 2, 1 - row % 2)
    lat_k = 2 * col + tl.where(key_parity == 0, row % 2, 1 - row % 2)
    span: tl.constexpr = 2 * K - 1
    idx = (row[:, None] - row[None, :] + K - 1) * span + (lat_q[:, None] - lat_k[None, :] + K - 1)
    real = (tok[:, None] < T) & (tok[None, :] < T)
    return tl.load(spatial_ptr + head * span * span + idx, mask=real, other=0.0).to(tl.float32)


@triton.jit
def slab_bias(slab_ptr, head, slab_q, slab_k, n_slab_table):
    """bias_slab[head, slab_q, slab_k] from the (heads, S, S) table, as fp32."""
    return tl.load(slab_ptr + (head * n_slab_table + slab_q) * n_slab_table + slab_k).to(tl.float32)


@triton.jit
def online_softmax_step(q, k, v, key_ok, bias, m_i, l_i, acc, scale, PRECISION: tl.constexpr):
    """Fold one key block into the running max m_i, normaliser l_i and output acc (fp32)."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale + bias
    s = tl.where(key_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)       # a row with no key yet stays all-zero
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def _window_attention_fwd(q_ptr, k_ptr, v_ptr, o_ptr, spatial_ptr, slab_ptr,
                          s_b, s_s, s_h, s_x, s_n,             # strides of q, k, v (last dim contiguous)
                          o_b, o_s, o_h, o_x, o_n,             # strides of out
                          H, W2, top, left, n_wcols, n_windows, n_slab_table, scale,
                          T: tl.constexpr, K: tl.constexpr, HEAD_DIM: tl.constexpr,
                          BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)                 # batch item * n_windows + window
    head = tl.program_id(1)
    slab_q = tl.program_id(2)
    b = (pid // n_windows).to(tl.int64)
    window = pid % n_windows
    tok, row, col, h, x, inside = window_tokens(window, n_wcols, H, W2, top, left, T, K, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    mask = inside[:, None] & (d < HEAD_DIM)[None, :]
    offs = b * s_b + h[:, None] * s_h + x[:, None] * s_x + head * s_n + d[None, :]

    q = tl.load(q_ptr + offs + slab_q * s_s, mask=mask, other=0.0)
    m_i = tl.full([BLOCK_T], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_T], tl.float32)
    acc = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    bias_even = spatial_bias(spatial_ptr, head, slab_q, 0, tok, row, col, T, K)
    bias_odd = spatial_bias(spatial_ptr, head, slab_q, 1, tok, row, col, T, K)
    for slab_k in range(0, slab_q + 1):                     # group-causal: slabs <= slab_q
        k = tl.load(k_ptr + offs + slab_k * s_s, mask=mask, other=0.0)
        v = tl.load(v_ptr + offs + slab_k * s_s, mask=mask, other=0.0)
        bias = tl.where(slab_k % 2 == 0, bias_even, bias_odd) + slab_bias(slab_ptr, head, slab_q, slab_k, n_slab_table)
        m_i, l_i, acc = online_softmax_step(q, k, v, inside, bias, m_i, l_i, acc, scale, PRECISION)

    out = acc / l_i[:, None]
    o_offs = b * o_b + slab_q * o_s + h[:, None] * o_h + x[:, None] * o_x + head * o_n + d[None, :]
    tl.store(o_ptr + o_offs, out.to(o_ptr.dtype.element_ty), mask=mask)


def block_sizes(T: int, head_dim: int) -> tuple[int, int]:
    """Power-of-two tiles, at least 16 (the smallest tl.dot tile on GPUs)."""
    return max(16, triton.next_power_of_2(T)), max(16, triton.next_power_of_2(head_dim))


def dot_precision(dtype: torch.dtype) -> str:
    # TF32 would cost fp32 inputs ~1e-3 relative error; the reference computes in IEEE fp32
    return "ieee" if dtype == torch.float32 else "tf32"


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid) -> None:
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"q, k, v must share one of float32 / float16 / bfloat16, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dim() != 6 or q.shape[2:4] != (grid.H, grid.W2):
        raise ValueError(f"expected q (B, S, {grid.H}, {grid.W2}, heads, dh), got {tuple(q.shape)}")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("q, k, v need a contiguous last dimension")


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias_spatial: torch.Tensor,
                     bias_slab: torch.Tensor, grid) -> torch.Tensor:
    """Masked window attention over slabs 0..S-1.

    q, k, v: (B, S, H, W2, heads, dh), views with equal strides (e.g. slices of one qkv
    projection); bias_spatial (heads, 2K-1, 2K-1); bias_slab (heads, S_tab, S_tab), S_tab >= S;
    grid: a contextformer.WindowGrid. Returns (B, S, H, W2, heads * dh) in q's dtype.
    """
    check_inputs(q, k, v, grid)
    if not (q.stride() == k.stride() == v.stride()):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, S, H, W2, heads, dh = q.shape
    out = torch.empty(B, S, H, W2, heads, dh, dtype=q.dtype, device=q.device)
    spatial, slab = bias_spatial.contiguous(), bias_slab.contiguous()
    block_t, block_d = block_sizes(grid.T, dh)
    _window_attention_fwd[(B * grid.n_windows, heads, S)](
        q, k, v, out, spatial, slab, *q.stride()[:5], *out.stride()[:5],
        H, W2, grid.top, grid.left, grid.nw, grid.n_windows, slab.shape[-1], dh ** -0.5,
        T=grid.T, K=grid.kh, HEAD_DIM=dh, BLOCK_T=block_t, BLOCK_D=block_d, PRECISION=dot_precision(q.dtype))
    return out.view(B, S, H, W2, heads * dh)
