"""The eContextformer: spatio-channel window attention over EGR slabs.

Token layout. EGR turns y_hat into 2*N_cs slabs of shape (H, W2=W/2, p_cs), one per
coding group g (spatial-first order: seg0-anchor, seg0-non-anchor, seg1-anchor, ...).
The transformer input is slabs 0 .. G-2 (the last group is never context); the output
at slab k, position (h, j) is the context feature used to code group k+1 at (h, j).
Group 0 is coded from the hyperprior alone (skip-first-group), with a learned constant
context vector. So decoding takes G-1 = 2*N_cs-1 context-model steps.

Windows: K latent rows x K latent columns = K x K/2 slab positions, spanning all
slabs, so N = S * K * K/2 tokens per window (S input slabs). Shifted layers move the
window grid by (K/2, K/4). Instead of Swin's cyclic roll, the grid is zero-padded and
padded keys are masked, which gives the same windows without wrap-around.

Masks: a query in slab k sees keys in slabs <= k (group-causal). Every key in slab k
holds a value of group k, all known once group k is decoded, so the mask is exact.
Relative position bias: one table over spatial offsets (dh, dw) in latent units plus
one over (query slab, key slab) pairs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import attention
from .config import Config
from .egr import egr, egr_inverse

_NEG_INF = float("-inf")


class WindowGrid:
    """Window partition of an (H, W2) slab grid, optionally shifted, with padding."""

    def __init__(self, H: int, W2: int, K: int, shifted: bool, device=None):
        self.H, self.W2 = H, W2
        self.kh, self.kw = K, K // 2
        self.top, self.left = (K // 2, K // 4) if shifted else (0, 0)
        self.Hp = math.ceil((H + self.top) / self.kh) * self.kh
        self.Wp = math.ceil((W2 + self.left) / self.kw) * self.kw
        self.nh, self.nw = self.Hp // self.kh, self.Wp // self.kw
        self.n_windows = self.nh * self.nw
        self.T = self.kh * self.kw                      # tokens per slab per window
        valid = torch.zeros(self.Hp, self.Wp, dtype=torch.bool, device=device)
        valid[self.top:self.top + H, self.left:self.left + W2] = True
        valid = self._split(valid[None, None, :, :, None])[0, :, 0, :, 0]
        # (nW, T) additive attention mask: -inf on padding keys
        self.key_mask = torch.zeros(valid.shape, device=device).masked_fill(~valid, _NEG_INF)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, Hp, Wp, C) -> (B, nW, S, T, C)."""
        B, S, _, _, C = x.shape
        x = x.reshape(B, S, self.nh, self.kh, self.nw, self.kw, C)
        return x.permute(0, 2, 4, 1, 3, 5, 6).reshape(B, self.n_windows, S, self.T, C)

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, H, W2, C) -> (B, nW, S*T, C), zero padded."""
        pad = (0, 0, self.left, self.Wp - self.W2 - self.left, self.top, self.Hp - self.H - self.top)
        w = self._split(F.pad(x, pad))
        return w.flatten(2, 3)

    def merge(self, w: torch.Tensor, S: int) -> torch.Tensor:
        """(B, nW, S*T, C) -> (B, S, H, W2, C), padding dropped."""
        B, _, _, C = w.shape
        w = w.reshape(B, self.nh, self.nw, S, self.kh, self.kw, C)
        x = w.permute(0, 3, 1, 4, 2, 5, 6).reshape(B, S, self.Hp, self.Wp, C)
        return x[:, :, self.top:self.top + self.H, self.left:self.left + self.W2]


def token_coords(cfg: Config, S: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab, latent row and latent column (within a window) of each of the S*T window tokens.

    Window origins are even in latent rows (K and K/2 are even) and columns, so the
    checkerboard phase of a token depends on its local row only.
    """
    kh, kw = cfg.K, cfg.K // 2
    slab = torch.arange(S).view(S, 1, 1).expand(S, kh, kw)
    row = torch.arange(kh).view(1, kh, 1).expand(S, kh, kw)
    col = torch.arange(kw).view(1, 1, kw).expand(S, kh, kw)
    anchor = (slab % 2 == 0)
    phase = torch.where(anchor, row % 2, 1 - row % 2)
    latent_col = 2 * col + phase
    return slab.reshape(-1), row.reshape(-1), latent_col.reshape(-1)


class SCABlock(nn.Module):
    """One Swin-style layer: (shifted) window spatio-channel attention + MLP, pre-norm."""

    def __init__(self, cfg: Config, shifted: bool, n_slabs: int):
        super().__init__()
        self.cfg, self.shifted = cfg, shifted
        d, h = cfg.d_e, cfg.heads
        self.S = n_slabs
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d))
        self.bias_spatial = nn.Parameter(torch.zeros(h, 2 * cfg.K - 1, 2 * cfg.K - 1))
        self.bias_slab = nn.Parameter(torch.zeros(h, self.S, self.S))
        slab, row, col = token_coords(cfg, self.S)
        self.register_buffer("idx_dh", (row[:, None] - row[None, :] + cfg.K - 1), persistent=False)
        self.register_buffer("idx_dw", (col[:, None] - col[None, :] + cfg.K - 1), persistent=False)
        self.register_buffer("slab", slab, persistent=False)
        causal = torch.zeros(slab.numel(), slab.numel())
        causal.masked_fill_(slab[None, :] > slab[:, None], _NEG_INF)
        self.register_buffer("causal", causal, persistent=False)

    def bias(self) -> torch.Tensor:
        """(heads, S*T, S*T) relative position bias plus the group-causal mask."""
        b = self.bias_spatial[:, self.idx_dh, self.idx_dw]
        b = b + self.bias_slab[:, self.slab[:, None], self.slab[None, :]]
        return b + self.causal

    def grid(self, H: int, W2: int) -> WindowGrid:
        return WindowGrid(H, W2, self.cfg.K, self.shifted, device=self.bias_slab.device)

    def forward(self, x: torch.Tensor, grid: WindowGrid, bias: torch.Tensor) -> torch.Tensor:
        """All slabs at once (training, uncached decoding). x: (B, S', H, W2, d), S' <= S."""
        qkv = self.qkv(self.norm1(x))
        o = attention.window_attention(qkv, self.cfg.heads, grid, bias, self.bias_spatial, self.bias_slab)
        x = x + self.proj(o)                        # o has the padding dropped already
        return x + self.mlp(self.norm2(x))

    def step(self, x: torch.Tensor, k_slab: int, grid: WindowGrid, bias: torch.Tensor, cache: "LayerCache"):
        """One slab with the KV cache. x: (B, 1, H, W2, d) holding slab k_slab."""
        qkv = self.qkv(self.norm1(x))
        o = attention.cached_attention(qkv, self.cfg.heads, k_slab, grid, bias, self.bias_spatial, self.bias_slab, cache)
        x = x + self.proj(o)
        return x + self.mlp(self.norm2(x))


class LayerCache:
    """Preallocated keys / values of one layer: (B, nW, heads, S*T, d/heads). Left
    uninitialized: step k writes slab k's entries before anything reads them."""

    def __init__(self, B: int, grid: WindowGrid, cfg: Config, dtype, device):
        shape = (B, grid.n_windows, cfg.heads, (cfg.groups - 1) * grid.T, cfg.d_e // cfg.heads)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)


class FirstGroup:
    """Group 0's parameters, shared by ContextModel and its fixed-point copy
    (fixedpoint.FixedPointContext): both have first_group_context and params()."""

    def first_group_params(self, psi_slabs: torch.Tensor) -> torch.Tensor:
        """Group 0 from the hyperprior alone (the learned constant context): psi_slabs
        (B, 2, H, W2, 2M) -> (B, H, W2, p_cs, 3, k_m)."""
        ctx = self.first_group_context.expand(*psi_slabs.shape[:1], *psi_slabs.shape[2:4], -1)
        return self.params(ctx, psi_slabs[:, 0])


class ContextModel(FirstGroup, nn.Module):
    """eContextformer + entropy-parameter net g_e -> GMM parameters per latent element.
    The coding methods live in the subclass context_entropy.ContextEntropyModel."""

    def __init__(self, cfg: Config, n_slabs: int | None = None):
        """n_slabs: transformer input slabs, G-1 (skip-first-group). The benchmarks' ablation
        without skip-first-group uses G (a zero start slab in front of groups 0..G-2)."""
        super().__init__()
        self.cfg = cfg
        d, p = cfg.d_e, cfg.p_cs
        self.n_slabs = n_slabs or cfg.groups - 1
        self.embed = nn.Linear(p, d)
        self.slab_embed = nn.Parameter(torch.zeros(self.n_slabs, d))
        nn.init.trunc_normal_(self.slab_embed, std=0.02)
        self.blocks = nn.ModuleList(SCABlock(cfg, (i % 2 == 1), self.n_slabs) for i in range(cfg.L))
        self.norm = nn.LayerNorm(d)
        self.first_group_context = nn.Parameter(torch.zeros(d))
        c_in, c_out = d + 2 * cfg.M, 3 * cfg.k_m * p
        hidden = max(c_out, (c_in + c_out) // 2)
        self.entropy_params = nn.Sequential(
            nn.Linear(c_in, c_in), nn.GELU(),
            nn.Linear(c_in, hidden), nn.GELU(),
            nn.Linear(hidden, c_out))

    # -- helpers shared by training and decoding -------------------------------------

    def hyper_slabs(self, psi: torch.Tensor) -> torch.Tensor:
        """psi (B, 2M, H, W) -> (B, 2, H, W2, 2M): hyper features at anchor / non-anchor positions."""
        return egr(psi, 1)

    def params(self, ctx: torch.Tensor, psi_slab: torch.Tensor) -> torch.Tensor:
        """ctx (..., d_e), psi_slab (..., 2M) -> raw GMM parameters (..., p_cs, 3, k_m):
        [:, :, 0] weight logits, [:, :, 1] means, [:, :, 2] scale pre-activations."""
        out = self.entropy_params(torch.cat([ctx, psi_slab], -1))
        return out.unflatten(-1, (self.cfg.p_cs, 3, self.cfg.k_m))

    def biases(self) -> list[torch.Tensor]:
        return [blk.bias() for blk in self.blocks]

    def new_cache(self, grid: WindowGrid, psi: torch.Tensor) -> LayerCache:
        return LayerCache(psi.shape[0], grid, self.cfg, psi.dtype, psi.device)

    def grids(self, H: int, W2: int) -> list[WindowGrid]:
        return [blk.grid(H, W2) for blk in self.blocks]

    def embed_slabs(self, slabs: torch.Tensor, first: int) -> torch.Tensor:
        """slabs (B, S, H, W2, p) holding groups first .. first+S-1 -> tokens (B, S, H, W2, d)."""
        S = slabs.shape[1]
        return self.embed(slabs) + self.slab_embed[first:first + S, None, None, :]

    # -- training / uncached --------------------------------------------------------

    def context(self, slabs: torch.Tensor, grids=None, biases=None) -> torch.Tensor:
        """Full masked pass. slabs (B, S, H, W2, p) of groups 0..S-1 -> context (B, S, H, W2, d)
        where output slab k is the context for group k+1."""
        _, _, H, W2, _ = slabs.shape
        grids = grids or self.grids(H, W2)
        biases = biases or self.biases()
        x = self.embed_slabs(slabs, 0)
        for blk, grid, bias in zip(self.blocks, grids, biases):
            x = blk(x, grid, bias)
        return self.norm(x)

    def context_step(self, slab: torch.Tensor, k: int, grids, biases, caches) -> torch.Tensor:
        """Decoding step with the KV cache: slab (B, 1, H, W2, p) holding group k ->
        context for group k+1, (B, H, W2, d)."""
        x = self.embed_slabs(slab, k)
        for blk, grid, bias, cache in zip(self.blocks, grids, biases, caches):
            x = blk.step(x, k, grid, bias, cache)
        return self.norm(x)[:, 0]

    def raw_params(self, y_hat: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """One masked pass (training): y_hat (B, M, H, W), psi (B, 2M, H, W) -> raw GMM
        parameters (B, M, H, W, 3, k_m), equal to what the coding schedule derives."""
        cfg = self.cfg
        slabs = egr(y_hat, cfg.N_cs)                              # (B, G, H, W2, p)
        ctx = self.context(slabs[:, :-1])                         # contexts for groups 1..G-1
        psi_slabs = self.hyper_slabs(psi)
        G = cfg.groups
        psi_g = psi_slabs[:, [g % 2 for g in range(1, G)]]        # hyper features of groups 1..G-1
        raw = torch.cat([self.first_group_params(psi_slabs)[:, None], self.params(ctx, psi_g)], 1)
        B, _, H, W2, p, three, k = raw.shape                      # (B, G, H, W2, p, 3, k_m)
        y = egr_inverse(raw.flatten(4), cfg.N_cs)                 # (B, N_cs*p*3*k, H, W)
        y = y.view(B, cfg.N_cs, p, three, k, H, 2 * W2).permute(0, 1, 2, 5, 6, 3, 4)
        return y.reshape(B, cfg.M, H, 2 * W2, three, k)
