"""Fixed-point entropy parameters: the coder's integers, computed exactly on any device.

Float networks give slightly different bits on different devices, thread counts, batch
sizes and kernels (summation order, fused ops, exp / erf implementations). A difference
of 1e-6 can move a quantized GMM parameter across a rounding boundary, and then a
stream no longer decodes. So everything between the decoded integers (z_hat, y_hat)
and the coder's GMM parameters -- h_s, the eContextformer and g_e -- runs here on
integers, a post-training fixed-point copy of the float networks:

* an activation v is the integer v * 2**FRAC, clamped to +-ACT_LIMIT, held in float64
  (every integer below 2**53 is exact there; the interface tensors are int64);
* each layer's weights are rounded to 2**-w_frac, with w_frac chosen at load so that
  no accumulator can reach 2**52. Products and sums of such integers are exact in
  float64, so matmuls and convolutions run as float64 GEMMs and give the same integers
  in any summation order (threads, devices, batching, tiling, cuBLAS or MKL);
* rescaling is an exact power-of-two scaling and floor; division is floor division
  with an exact integer correction step; the variance is summed in int64 and its
  square root is an integer square root;
* GELU and exp are lookup tables over the fixed-point input, built once on the CPU;
* the final step to the coder's parameter grid compares against integer thresholds
  (entropy.quantize_fixed) instead of evaluating softplus and log.

Every step is an exact integer operation, so the result is defined by the integers
alone, and faster paths give the same integers: on CPU tensors the elementwise steps run
as fused C loops (csrc/fixedpoint.c, through fixed_loops), on CUDA a decoding step's
attention runs as one Triton kernel (kernels/fixed_attention.py); the PyTorch ops here
are the reference. Masked attention weights are exactly zero: the 7-step cached schedule, the
one-pass masked context and any batch give the same integers. Rate cost against the
float parameters: benchmarks/formats.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .attention import split_heads
from .contextformer import ContextModel, FirstGroup, LayerCache, SCABlock, WindowGrid
from .egr import egr

FRAC = 12                         # fractional bits of every activation
ONE = 1 << FRAC
ACT_LIMIT = 2048 * ONE            # activations clamp to +-2048
QK_LIMIT = 512 * ONE              # queries / keys clamp to +-512 (bounds the q.k accumulator)
INPUT_LIMIT = 1 << 15             # integer inputs (z_hat, y_hat) clamp here before the networks
ACC_LIMIT = 1 << 52               # every float64 accumulator stays below this: exact
W_FRAC_MAX = 16                   # weights get at most 16 fractional bits (float32 weights carry 24)
EXP_FRAC = 16                     # attention weights exp(-t) in units of 2**-16
EXP_REACH = 13                    # exp(-t) tables end at t = 13: exp(-13) * 2**EXP_FRAC < 0.5 rounds to 0
GAMMA_FRAC = 16                   # LayerNorm gains in units of 2**-16
SLOPE_FRAC = 16                   # LeakyReLU slopes in units of 2**-16
GELU_REACH = 8                    # GELU(x) = x above +8, 0 below -8 (within 2**-FRAC)
_WINDOW_CHUNK = 256               # windows per attention call: bounds the int64 score memory


# -- fast paths and their rules (ops.py): every path gives the same integers -------------------

def loops_rule(device: str, dtype: torch.dtype | None = None, grad: bool = False) -> ops.Choice:
    """The fused C loops (csrc/fixedpoint.c) on CPU tensors under every setting but torch."""
    if ops.requested() == "torch":
        return ops.Choice("torch", "ECF_BACKEND=torch")
    if device != "cpu":
        return ops.Choice("torch", f"{device} tensor: PyTorch ops")
    return ops.Choice("c", "compiled csrc/fixedpoint.c")


def attention_rule(device: str, dtype: torch.dtype | None = None, grad: bool = False) -> ops.Choice:
    """A decoding step's attention as one Triton launch (kernels/fixed_attention.py) on CUDA
    tensors; on CPU tensors only with ECF_BACKEND=triton and TRITON_INTERPRET=1."""
    forced = ops.requested()
    if forced == "torch":
        return ops.Choice("torch", "ECF_BACKEND=torch")
    if device == "cuda":
        return ops.Choice("triton", "CUDA tensor")
    if device == "cpu" and forced == "triton" and ops.interpret():
        return ops.Choice("triton", "forced, TRITON_INTERPRET=1 (CPU interpreter)")
    return ops.Choice("torch", f"{device} tensor: C loops / PyTorch ops")


ops.register("fixedpoint", loops_rule)
ops.register("fixed_attention", attention_rule)


def _native(choice):
    lib = ops.native()
    if isinstance(lib, str):
        return None, f"fixed-point C loops unavailable: {lib} (the PyTorch ops: slower, same integers)"
    return lib, ""


def fixed_loops(t: torch.Tensor):
    """The compiled fixed-point loops for a tensor, or None: use the PyTorch ops."""
    return ops.fast_path("fixedpoint", t, _native, warn=True)


def fixed_cached_attention(q, cache_k, cache_v, bias, key_valid, exp_table, step: int, frac: int):
    """The exact fixed-point attention of a decoding step from the Triton kernel, or None where
    the C loops / PyTorch ops should run (attention_rule; no triton; or a kernel that failed
    once in this process, warned: the other path gives the same integers)."""
    op = "fixed_attention"
    kernel = ops.fast_path(op, q, lambda choice: ops.triton_kernel(op, q), warn=False)
    if kernel is None:
        return None
    try:
        return kernel.fixed_cached_attention(q, cache_k, cache_v, bias, key_valid, exp_table, step, frac)
    except Exception as e:                  # compile or launch failure on this GPU / triton version
        why = ops.triton_failed(op, e)
        ops.warn_once(why + "; using the PyTorch ops (same integers)")
        ops.record(op, q, "torch", why)
        return None


def fixed(t: torch.Tensor | float, frac: int = FRAC) -> torch.Tensor:
    """Float -> int64 on the 2**-frac grid (load time, on the CPU)."""
    t = torch.as_tensor(t).detach().cpu().double()
    return torch.round(t * (1 << frac)).long()


def shift_round(x: torch.Tensor, k: int) -> torch.Tensor:
    """Integers x / 2**k rounded to nearest (ties up); int64, or float64 holding integers
    below 2**52 (where the scaling by 2**-k and the floor are exact)."""
    if x.is_floating_point():
        return torch.floor(x * 2.0 ** -k + 0.5) if k > 0 else x * 2.0 ** -k
    return (x + (1 << (k - 1))) >> k if k > 0 else x << -k


def div_round(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b rounded to nearest (ties up) for integers a, b > 0 held in float64 (|2a + b| <
    2**52): a float quotient, then one exact integer correction each way."""
    num, den = 2 * a + b, 2 * b
    q = torch.floor(num / den)
    r = num - q * den                               # exact: every term is an integer < 2**53
    return q - (r < 0).double() + (r >= den).double()


def isqrt(v: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(v)) for int64 v >= 0: a float estimate, then integer corrections."""
    s = torch.sqrt(v.double()).floor().long()
    s = s - (s * s > v).long()
    return s + ((s + 1) * (s + 1) <= v).long()


def exact(fn, *ints: torch.Tensor) -> torch.Tensor:
    """Run a linear op on float64 integer tensors (exact: all sums stay below 2**52).
    cuDNN is off so that no FFT / Winograd convolution algorithm can be chosen."""
    with torch.backends.cudnn.flags(enabled=False):
        return fn(*ints)


def _weight_frac(w: torch.Tensor, b: torch.Tensor | None, in_limit: int, in_frac: int, dims) -> int:
    """Largest weight precision (<= W_FRAC_MAX) for which no accumulator can reach ACC_LIMIT."""
    w = w.detach().cpu().double()
    l1 = w.abs().sum(dims)                        # per output channel
    n = w.numel() // l1.numel()
    b_max = 0.0 if b is None else b.detach().abs().max().item()
    for frac in range(W_FRAC_MAX, -1, -1):
        bound = (l1.max().item() * (1 << frac) + n) * in_limit + b_max * 2.0 ** (frac + in_frac) + 1
        if bound < ACC_LIMIT:
            return frac
    raise ValueError("weights too large for the fixed-point range")


class Affine:
    """nn.Linear / Conv2d / ConvTranspose2d on fixed-point activations.

    in_frac / in_limit describe the input (integers: 0 / INPUT_LIMIT); the output has FRAC
    fractional bits and is clamped to ACT_LIMIT. row_scale multiplies output channels
    (used to fold the attention scale 1/sqrt(d_h) into the query rows)."""

    def __init__(self, layer: nn.Module, in_frac: int = FRAC, in_limit: int = ACT_LIMIT,
                 row_scale: torch.Tensor | None = None):
        w, b = layer.weight.detach().cpu().double(), layer.bias
        b = None if b is None else b.detach().cpu().double()
        out_dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
        if row_scale is not None:
            shape = [1] * w.dim()
            shape[out_dim] = -1
            w = w * row_scale.view(shape)
            b = None if b is None else b * row_scale
        dims = [d for d in range(w.dim()) if d != out_dim]
        w_frac = _weight_frac(w, b, in_limit, in_frac, dims)
        self.w = fixed(w, w_frac).double()
        self.b = None if b is None else fixed(b, w_frac + in_frac).double()
        self.shift = w_frac + in_frac - FRAC
        if isinstance(layer, nn.Linear):
            self.w = self.w.t().contiguous()
            self.op = lambda x, w: torch.matmul(x, w)
        elif isinstance(layer, nn.ConvTranspose2d):
            geometry = layer.stride, layer.padding, layer.output_padding
            self.op = lambda x, w: F.conv_transpose2d(x, w, None, *geometry)
        elif isinstance(layer, nn.Conv2d):
            geometry = layer.stride, layer.padding
            self.op = lambda x, w: F.conv2d(x, w, None, *geometry)
        else:
            raise TypeError(f"no fixed-point version of {type(layer).__name__}")
        self.conv = not isinstance(layer, nn.Linear)

    def to(self, device) -> "Affine":
        self.w = self.w.to(device)
        self.b = None if self.b is None else self.b.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        acc = exact(self.op, x, self.w).contiguous()
        loops = fixed_loops(acc)
        if loops is not None:                   # the same three steps in one pass
            channels = acc.shape[1] if self.conv else acc.shape[-1]
            inner = acc[0, 0].numel() if self.conv else 1
            loops.fp_requant(ops.address(acc), acc.numel() // (channels * inner), channels, inner, ops.address(self.b),
                             2.0 ** -self.shift, int(self.shift > 0), float(ACT_LIMIT), torch.get_num_threads())
            return acc
        if self.b is not None:
            acc = acc + (self.b.view(-1, 1, 1) if self.conv else self.b)
        return shift_round(acc, self.shift).clamp(-ACT_LIMIT, ACT_LIMIT)


class LayerNorm:
    """nn.LayerNorm in integers: exact mean and variance, integer square root and division."""

    def __init__(self, norm: nn.LayerNorm):
        self.gamma, self.beta = fixed(norm.weight, GAMMA_FRAC).double(), fixed(norm.bias).double()
        self.eps = max(1, int(round(norm.eps * ONE * ONE)))

    def to(self, device) -> "LayerNorm":
        self.gamma, self.beta = self.gamma.to(device), self.beta.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        loops = fixed_loops(x)
        if loops is not None:
            x = x.contiguous()
            y = torch.empty_like(x)
            loops.fp_layernorm(ops.address(x), ops.address(y), x.numel() // n, n, ops.address(self.gamma),
                               ops.address(self.beta), self.eps, ONE, GAMMA_FRAC, float(ACT_LIMIT),
                               torch.get_num_threads())
            return y
        d = x - div_round(x.sum(-1, keepdim=True), torch.tensor(float(n), dtype=x.dtype, device=x.device))
        di = d.long()                                                   # |d| < 2**25: d*d sums need int64
        var = torch.div(2 * (di * di).sum(-1, keepdim=True) + n, 2 * n, rounding_mode="floor") + self.eps
        y = div_round(d * ONE, isqrt(var).double())                     # var has 2*FRAC fractional bits
        return (shift_round(y * self.gamma, GAMMA_FRAC) + self.beta).clamp(-ACT_LIMIT, ACT_LIMIT)


class Tables:
    """GELU and exp(-t) lookup tables over every fixed-point input, built once on the CPU in
    float64 and rounded (tests check that no entry lies near a rounding tie, so any
    accurate math library builds the same tables)."""

    def __init__(self):
        x = torch.arange(-GELU_REACH * ONE, GELU_REACH * ONE + 1, dtype=torch.float64) / ONE
        self.gelu_float = F.gelu(x) * ONE
        t = torch.arange(0, EXP_REACH * ONE, dtype=torch.float64) / ONE
        self.exp_float = torch.exp(-t) * (1 << EXP_FRAC)
        self.gelu, self.exp = torch.round(self.gelu_float), torch.round(self.exp_float)

    def to(self, device) -> "Tables":
        self.gelu, self.exp = self.gelu.to(device), self.exp.to(device)
        return self

    @staticmethod
    def _lookup(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return table.index_select(0, idx.long().flatten()).view(idx.shape)

    def gelu_(self, x: torch.Tensor) -> torch.Tensor:
        """GELU of a contiguous temporary, overwriting it where the C loops run."""
        loops = fixed_loops(x)
        if loops is not None and x.is_contiguous():
            loops.fp_gelu(ops.address(x), x.numel(), ops.address(self.gelu), float(GELU_REACH * ONE), torch.get_num_threads())
            return x
        y = self._lookup(self.gelu, (x + GELU_REACH * ONE).clamp(0, 2 * GELU_REACH * ONE))
        return torch.where(x >= GELU_REACH * ONE, x, torch.where(x <= -GELU_REACH * ONE, 0.0, y))

    def softmax_weights(self, qk: torch.Tensor, bias: torch.Tensor, causal: torch.Tensor, key_valid: torch.Tensor):
        """qk (B, nW, h, Nq, Nk): raw products q.k (2*FRAC fractional bits); bias (h, Nq, Nk);
        causal (Nq, Nk), key_valid (nW, Nk): which keys a query may see (every query sees
        some). Returns the integer weights exp(s - max s), 0 on unseen keys (units
        2**-EXP_FRAC; qk may be overwritten), and their sums over the last dim."""
        loops = fixed_loops(qk)
        if loops is not None and qk.is_contiguous():
            B, nW, h, Nq, Nk = qk.shape
            # keep every argument referenced until the call returns
            bias, key_valid, causal = bias.contiguous(), key_valid.to(torch.uint8), causal.to(torch.uint8)
            key_valid, causal = key_valid.contiguous(), causal.contiguous()
            sums = qk.new_empty(qk.shape[:-1] + (1,))
            loops.fp_softmax_weights(ops.address(qk), ops.address(bias), ops.address(key_valid), ops.address(causal), ops.address(sums), B, nW, h, Nq, Nk,
                                     2.0 ** -FRAC, ops.address(self.exp), self.exp.numel(), torch.get_num_threads())
            return qk, sums
        allowed = causal & key_valid[:, None, None, :]
        scores = (shift_round(qk, FRAC) + bias).masked_fill(~allowed, -2.0 ** 40)
        t = (scores.amax(-1, keepdim=True) - scores).clamp_max(self.exp.numel() - 1)
        e = self._lookup(self.exp, t)
        return e, e.sum(-1, keepdim=True).clamp_min(1)


def _normalize(o: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """div_round(o, sums) row by row; o (..., N, dh) contiguous (overwritten by the C loops)."""
    loops = fixed_loops(o)
    if loops is None:
        return div_round(o, sums)
    sums = sums.contiguous()
    loops.fp_normalize(ops.address(o), ops.address(sums), sums.numel(), o.shape[-1], torch.get_num_threads())
    return o


def attend(q, k, v, bias, causal, key_valid, tables: Tables) -> torch.Tensor:
    """q (B, nW, h, Nq, dh), k / v (B, nW, h, Nk, dh), bias (h, Nq, Nk), causal (Nq, Nk) and
    key_valid (nW, Nk) bool -> (B, nW, Nq, h*dh). Integers with FRAC bits in float64."""
    outs = []
    for s in range(0, q.shape[1], _WINDOW_CHUNK):
        sl = slice(s, s + _WINDOW_CHUNK)
        qk = exact(torch.matmul, q[:, sl], k[:, sl].transpose(-1, -2)).contiguous()
        e, sums = tables.softmax_weights(qk, bias, causal, key_valid[sl])
        outs.append(_normalize(exact(torch.matmul, e, v[:, sl]).contiguous(), sums))
    o = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    B, nW, h, N, dh = o.shape
    return o.transpose(2, 3).reshape(B, nW, N, h * dh)


class Block:
    """Fixed-point SCABlock: same windows and masks, integer attention."""

    def __init__(self, blk: SCABlock, tables: Tables):
        cfg = blk.cfg
        self.cfg, self.shifted, self.heads, self.tables = cfg, blk.shifted, cfg.heads, tables
        dh = cfg.d_e // cfg.heads
        # accumulator bounds: q.k < QK_LIMIT**2 * dh, sum(e * v) < 2**16 * ACT_LIMIT * N (and twice
        # that in div_round) must stay below ACC_LIMIT
        if QK_LIMIT ** 2 * dh >= ACC_LIMIT or 2 * (1 << EXP_FRAC) * ACT_LIMIT * blk.slab.numel() >= ACC_LIMIT:
            raise ValueError(f"window of {blk.slab.numel()} tokens / head width {dh} exceeds the fixed-point range")
        row_scale = torch.ones(cfg.heads, 3, dh, dtype=torch.float64)
        row_scale[:, 0] = dh ** -0.5                 # each head's channels are [q | k | v]
        self.norm1, self.norm2 = LayerNorm(blk.norm1), LayerNorm(blk.norm2)
        self.qkv = Affine(blk.qkv, row_scale=row_scale.flatten())
        self.proj = Affine(blk.proj)
        self.fc1, self.fc2 = Affine(blk.mlp[0]), Affine(blk.mlp[2])
        with torch.no_grad():
            bias = blk.bias_spatial[:, blk.idx_dh, blk.idx_dw].double() \
                + blk.bias_slab[:, blk.slab[:, None], blk.slab[None, :]].double()
        self.bias = fixed(bias).double()                                   # (heads, N, N)
        self.causal = (blk.slab[None, :] <= blk.slab[:, None]).cpu()       # query sees key
        self.n_slabs = blk.S

    def to(self, device) -> "Block":
        for part in (self.norm1, self.norm2, self.qkv, self.proj, self.fc1, self.fc2):
            part.to(device)
        self.bias, self.causal = self.bias.to(device), self.causal.to(device)
        return self

    def _qkv(self, x, grid):
        q, k, v = split_heads(grid.partition(self.qkv(self.norm1(x))), self.heads).chunk(3, dim=-1)
        return q.clamp(-QK_LIMIT, QK_LIMIT), k.clamp(-QK_LIMIT, QK_LIMIT), v

    def _finish(self, x, o):
        x = (x + self.proj(o)).clamp(-ACT_LIMIT, ACT_LIMIT)
        return (x + self.fc2(self.tables.gelu_(self.fc1(self.norm2(x))))).clamp(-ACT_LIMIT, ACT_LIMIT)

    def forward(self, x: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
        """All slabs: x (B, S, H, W2, d) int64."""
        S = x.shape[1]
        n = S * grid.T
        q, k, v = self._qkv(x, grid)
        key_valid = (grid.key_mask == 0).repeat(1, S)
        o = attend(q, k, v, self.bias[:, :n, :n], self.causal[:n, :n], key_valid, self.tables)
        return self._finish(x, grid.merge(o, S))

    def step(self, x: torch.Tensor, k_slab: int, grid: WindowGrid, cache) -> torch.Tensor:
        """Slab k_slab with the KV cache (a contextformer.LayerCache in float64)."""
        T = grid.T
        lo, hi = k_slab * T, (k_slab + 1) * T
        q, k, v = self._qkv(x, grid)
        cache.k[..., lo:hi, :] = k
        cache.v[..., lo:hi, :] = v
        fused = fixed_cached_attention(q, cache.k, cache.v, self.bias, (grid.key_mask == 0).repeat(1, self.n_slabs),
                                           self.tables.exp, k_slab, FRAC)
        if fused is not None:
            B, nW, h, N, dh = fused.shape
            o = fused.transpose(2, 3).reshape(B, nW, N, h * dh)
        else:
            key_valid = (grid.key_mask == 0).repeat(1, k_slab + 1)
            o = attend(q, cache.k[..., :hi, :], cache.v[..., :hi, :], self.bias[:, lo:hi, :hi],
                       self.causal[lo:hi, :hi], key_valid, self.tables)
        return self._finish(x, grid.merge(o, 1))


class FixedPointContext(FirstGroup):
    """Fixed-point copy of a ContextModel with the interface schedule.run uses. psi, the
    slabs and the raw GMM parameters are int64 with FRAC fractional bits (slabs: 0)."""

    def __init__(self, cm: ContextModel):
        self.cfg, self.n_slabs = cm.cfg, cm.n_slabs
        self.tables = Tables()
        self.embed = Affine(cm.embed, in_frac=0, in_limit=INPUT_LIMIT)
        self.slab_embed = fixed(cm.slab_embed).double()
        self.blocks = [Block(b, self.tables) for b in cm.blocks]
        self.norm = LayerNorm(cm.norm)
        self.first_group_context = fixed(cm.first_group_context).double()
        g = cm.entropy_params
        self.g_e = [Affine(g[0]), Affine(g[2]), Affine(g[4])]
        self.device = torch.device("cpu")

    def to(self, device) -> "FixedPointContext":
        self.device = torch.device(device)
        for part in (self.tables, self.embed, self.norm, *self.blocks, *self.g_e):
            part.to(device)
        self.slab_embed = self.slab_embed.to(device)
        self.first_group_context = self.first_group_context.to(device)
        return self

    def hyper_slabs(self, psi: torch.Tensor) -> torch.Tensor:
        return egr(psi, 1).double()

    def new_cache(self, grid: WindowGrid, psi: torch.Tensor) -> LayerCache:
        return LayerCache(psi.shape[0], grid, self.cfg, torch.float64, psi.device)

    def grids(self, H: int, W2: int) -> list[WindowGrid]:
        return [WindowGrid(H, W2, self.cfg.K, b.shifted, device=self.device) for b in self.blocks]

    def biases(self) -> list[None]:
        return [None] * len(self.blocks)          # each Block holds its own

    def params(self, ctx: torch.Tensor, psi_slab: torch.Tensor) -> torch.Tensor:
        x = torch.cat([ctx, psi_slab], -1)
        x = self.tables.gelu_(self.g_e[0](x))
        x = self.tables.gelu_(self.g_e[1](x))
        return self.g_e[2](x).long().unflatten(-1, (self.cfg.p_cs, 3, self.cfg.k_m))

    def embed_slabs(self, slabs: torch.Tensor, first: int) -> torch.Tensor:
        x = self.embed(slabs.clamp(-INPUT_LIMIT, INPUT_LIMIT).double())
        return x + self.slab_embed[first:first + slabs.shape[1], None, None, :]

    def context(self, slabs: torch.Tensor, grids=None, biases=None) -> torch.Tensor:
        x = self.embed_slabs(slabs, 0)
        for blk, grid in zip(self.blocks, grids or self.grids(*slabs.shape[2:4])):
            x = blk.forward(x, grid)
        return self.norm(x)

    def context_step(self, slab: torch.Tensor, k: int, grids, biases, caches) -> torch.Tensor:
        x = self.embed_slabs(slab, k)
        for blk, grid, cache in zip(self.blocks, grids, caches):
            x = blk.step(x, k, grid, cache)
        return self.norm(x)[:, 0]


class FixedPointHyper:
    """Fixed-point h_s: integer z_hat (B, N, h, w) -> psi (B, 2M, 4h, 4w) int64, FRAC bits."""

    def __init__(self, h_s: nn.Sequential):
        self.layers = []
        in_frac, in_limit = 0, INPUT_LIMIT
        for m in h_s:
            if isinstance(m, nn.LeakyReLU):
                self.layers.append(_LeakyReLU(m.negative_slope))
            else:
                self.layers.append(Affine(m, in_frac, in_limit))
                in_frac, in_limit = FRAC, ACT_LIMIT

    def to(self, device) -> "FixedPointHyper":
        for layer in self.layers:
            layer.to(device)
        return self

    def __call__(self, z_hat: torch.Tensor) -> torch.Tensor:
        x = torch.round(z_hat.double()).clamp(-INPUT_LIMIT, INPUT_LIMIT)
        for layer in self.layers:
            x = layer(x)
        return x.long()


class _LeakyReLU:
    def __init__(self, slope: float):
        self.slope = int(fixed(slope, SLOPE_FRAC))

    def to(self, device):
        return self

    def __call__(self, x):
        return torch.where(x < 0, shift_round(x * self.slope, SLOPE_FRAC), x)    # |x * slope| < 2**40


def to_fixed(x: torch.Tensor) -> torch.Tensor:
    """Float features (e.g. a host codec's psi) -> int64 with FRAC bits. Only as portable
    as the floats themselves: both sides must pass bit-identical tensors."""
    return torch.round(x.double() * ONE).long().clamp(-ACT_LIMIT, ACT_LIMIT)


def tie_distance(values: torch.Tensor) -> float:
    """Smallest distance of the float values from a rounding tie (x.5): a table whose
    entries are all far from ties rounds the same under any accurate math library."""
    return (values - values.floor() - 0.5).abs().min().item()

