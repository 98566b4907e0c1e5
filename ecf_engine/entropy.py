"""Probability models, the quantization of the GMM parameters, the coding window and escape
code shared by both coders, and the glue to constriction's range coder for z (y is coded by
rans.py).

Determinism rule: the coder only ever sees integers. The networks' GMM parameters become
integers in one step (`quantize_fixed`, or `quantize_gmm` for float parameters); z's
frequency table is fixed per model (FactorizedPrior.frequency_table, pinned in the weights).

Symbols are coded in a window of 2R+1 values around an integer centre c: index 0 means
"<= c-R" and index 2R means ">= c+R" (`window_index`); for those two edge symbols the
distance beyond the edge (`overflow`) follows as an Elias-gamma style escape code
(`escape_fields` / `read_escape`), so every integer value up to the escape limit can be
coded and nothing is clipped. rans.py and csrc/rans.c code y with the same rules.
"""
from __future__ import annotations

import functools
import math

import constriction
import numpy as np
import torch
from torch import nn

from .detmath import sigmoid, softplus
from .errors import BitstreamError
from .fixedpoint import FRAC, shift_round

FREQ_BITS = 20                 # z's integer frequencies are in units of 2**-20
LIKELIHOOD_FLOOR = 1e-9        # training likelihoods: keeps -log2 P finite (30 bits at most)
MEAN_STEPS = 32                # means are quantized to 1/32
LOG_SCALE_STEPS = 32           # scales to exp(k/32)
LOGIT_STEPS = 8                # mixture logits to 1/8
SCALE_MIN, SCALE_MAX = 0.11, 256.0     # sigma's range: below 0.11 a bin holds all the mass anyway
LOGIT_LIMIT = 1 << 12          # quantized logits clamp here (+-512): far past where mixture weights round to 0
MEAN_LIMIT = 1 << 24           # quantized means clamp here (2**19): rans.c's integer products stay far below 2**63

ESCAPE_LENGTH_BITS = 6         # the escape's first field: the bit length n of overflow + 1, 0 .. 63
ESCAPE_CHUNK_BITS = 16         # then its n low bits, in uniform fields of at most 16 bits
MAX_ESCAPE_BITS = 40           # n above this is refused (overflow + 1 < 2**41): a corrupt length cannot run away

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


# -- training likelihoods --------------------------------------------------------------

def gmm_from_raw(raw: torch.Tensor):
    """Raw parameters (..., 3, k_m) -> weights, means, scales, each (..., k_m)."""
    logits, means, s = raw.unbind(-2)
    return torch.softmax(logits, -1), means, SCALE_MIN + softplus(s)


def gmm_likelihood(y: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """P(y) for integer-centred bins: y (...), raw (..., 3, k_m) -> (...)."""
    w, mu, sigma = gmm_from_raw(raw)
    v = (y[..., None] - mu).abs()     # evaluate in the lower tail, where the CDF is precise
    p = torch.special.ndtr((0.5 - v) / sigma) - torch.special.ndtr((-0.5 - v) / sigma)
    return (w * p).sum(-1).clamp_min(LIKELIHOOD_FLOOR)


class FactorizedPrior(nn.Module):
    """Non-parametric per-channel density for z (Balle et al. 2018, appendix 6.1).

    The CDF is a monotone per-channel network c(x); P(z) = c(z + 1/2) - c(z - 1/2).
    """

    def __init__(self, channels: int, filters=(3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x (C, 1, n) -> logit of the CDF, (C, 1, n)."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(softplus(m.to(x.dtype)), x) + b.to(x.dtype)
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i].to(x.dtype)) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, h, w) -> P(z) (B, C, h, w)."""
        B, C, h, w = z.shape
        x = z.transpose(0, 1).reshape(C, 1, -1)
        lower, upper = self.logits_cdf(x - 0.5), self.logits_cdf(x + 0.5)
        sign = -torch.sign(lower + upper).detach()    # stay in the tail where sigmoid is precise
        p = (sigmoid(sign * upper) - sigmoid(sign * lower)).abs()
        return p.reshape(C, B, h, w).transpose(0, 1).clamp_min(LIKELIHOOD_FLOOR)

    @torch.no_grad()
    def frequency_table(self, tail: float = 1e-6, max_half_width: int = 128) -> tuple[int, torch.Tensor]:
        """Integer coding table for z_hat = round(z): returns (R, freqs (C, 2R+1) int64)
        for symbols -R .. R, the two edge bins carrying the tails."""
        C = self.matrices[0].shape[0]
        grid = torch.arange(-max_half_width, max_half_width + 1, dtype=torch.float64)
        cdf = sigmoid(self.logits_cdf((grid - 0.5).expand(C, 1, -1)))[:, 0]   # P(z < v - 1/2)
        outside = cdf + (1 - cdf.flip(-1))            # mass beyond [-r, r] for r = max_half_width ... 0
        R = max_half_width
        for r in range(1, max_half_width + 1):
            if (outside[:, max_half_width - r]).max() < tail:
                R = r
                break
        inner = cdf[:, max_half_width - R + 1:max_half_width + R + 1]   # P(z < v - 1/2), v = -R+1 .. R
        cdf_edges = torch.cat([torch.zeros(C, 1, dtype=inner.dtype), inner, torch.ones(C, 1, dtype=inner.dtype)], 1)
        return R, to_frequencies(cdf_edges.diff(dim=1))


# -- integer parameters ----------------------------------------------------------------

def to_frequencies(pmf: torch.Tensor) -> torch.Tensor:
    """Probabilities (..., A) float64 -> integer frequencies >= 1 in units of 2**-FREQ_BITS."""
    return torch.floor(pmf.clamp_min(0) * (1 << FREQ_BITS)).to(torch.int64).clamp_min(1)


def quantize_gmm(raw: torch.Tensor):
    """Raw float parameters (n, 3, k_m) -> integer parameters (logits, means, log-scales), each (n, k_m).

    This is the one place where floats become the integers the coder depends on.
    """
    w_logits, means, s = raw.float().unbind(-2)
    sigma = (SCALE_MIN + softplus(s)).clamp(SCALE_MIN, SCALE_MAX)
    return (torch.round(w_logits * LOGIT_STEPS).clamp(-LOGIT_LIMIT, LOGIT_LIMIT).to(torch.int32),
            torch.round(means * MEAN_STEPS).clamp(-MEAN_LIMIT, MEAN_LIMIT).to(torch.int32),
            torch.round(torch.log(sigma) * LOG_SCALE_STEPS).to(torch.int32))


LOG_SCALE_RANGE = (round(LOG_SCALE_STEPS * math.log(SCALE_MIN)), round(LOG_SCALE_STEPS * math.log(SCALE_MAX)))


@functools.lru_cache(maxsize=4)
def log_scale_thresholds(frac: int) -> torch.Tensor:
    """For fixed-point scale pre-activations s (2**-frac units): the smallest s at which
    quantize_gmm's log-scale index reaches k + 1, for k = LOG_SCALE_RANGE[0] .. [1] - 1."""
    out = []
    for k in range(*LOG_SCALE_RANGE):
        sigma = math.exp((k + 0.5) / LOG_SCALE_STEPS)          # round() moves up at k + 1/2
        out.append(math.ceil(math.log(math.expm1(sigma - SCALE_MIN)) * (1 << frac)))
    return torch.tensor(out, dtype=torch.int64)


def quantize_fixed(raw: torch.Tensor, frac: int):
    """Fixed-point raw parameters (n, 3, k_m), int64 with `frac` fractional bits (fixedpoint.py)
    -> the integer parameters quantize_gmm gives for raw / 2**frac (ties aside), computed
    with integer operations only, so they are the same on every device."""
    logits, means, s = raw.unbind(-2)
    thresholds = log_scale_thresholds(frac).to(s.device)
    return (shift_round(logits, frac - int(math.log2(LOGIT_STEPS))).clamp(-LOGIT_LIMIT, LOGIT_LIMIT).to(torch.int32),
            shift_round(means, frac - int(math.log2(MEAN_STEPS))).clamp(-MEAN_LIMIT, MEAN_LIMIT).to(torch.int32),
            (torch.searchsorted(thresholds, s.contiguous(), right=True) + LOG_SCALE_RANGE[0]).to(torch.int32))


def quantize(raw: torch.Tensor):
    """Float raw parameters (quantize_gmm) or fixed-point ones (int64, quantize_fixed)."""
    if raw.is_floating_point():
        return quantize_gmm(raw)
    return quantize_fixed(raw.cpu(), FRAC)


# -- the coding window and the escape code (z here, y in rans.py and csrc/rans.c) ------------

def window_index(values: torch.Tensor, c: torch.Tensor, R) -> torch.Tensor:
    """Symbol of each value in its window c-R .. c+R: 0 .. 2R, the edges standing for everything beyond."""
    return torch.minimum((values - c + R).clamp_min(0), torch.as_tensor(2 * R))


def overflow(values: torch.Tensor, c: torch.Tensor, R) -> torch.Tensor:
    """Distance beyond the window edge, for values on an edge symbol (>= 0 there)."""
    return torch.where(values < c, c - R - values, values - c - R)


def escape_fields(over: int) -> list[tuple[int, int]]:
    """The escape code of an overflow >= 0 as (value, bits) fields, each coded uniformly:
    the bit length n of over + 1, then its n bits below the leading one, in chunks."""
    v = over + 1
    n = v.bit_length() - 1
    if n > MAX_ESCAPE_BITS:
        raise ValueError(f"a value {over} beyond its coding window is more than the escape code carries "
                         f"(2**{MAX_ESCAPE_BITS + 1} - 2)")
    fields = [(n, ESCAPE_LENGTH_BITS)]
    while n > 0:
        take = min(n, ESCAPE_CHUNK_BITS)
        n -= take
        fields.append(((v >> n) & ((1 << take) - 1), take))
    return fields


def read_escape(read) -> int:
    """Inverse of escape_fields: read(bits) returns the next field."""
    n = read(ESCAPE_LENGTH_BITS)
    if n > MAX_ESCAPE_BITS:
        raise BitstreamError(f"corrupted payload: escape code of {n} bits exceeds the limit of {MAX_ESCAPE_BITS}")
    v = 1
    while n > 0:
        take = min(n, ESCAPE_CHUNK_BITS)
        n -= take
        v = (v << take) | read(take)
    return v - 1


# -- z: constriction's range coder with a fixed table per channel ---------------------------

def _decode(dec, model, *params) -> np.ndarray:
    """dec.decode, with constriction's complaints about invalid data turned into BitstreamError."""
    try:
        return dec.decode(model, *params)
    except (AssertionError, ValueError, RuntimeError) as e:
        raise BitstreamError(f"corrupted payload: the range decoder rejected it ({e})") from e


def _uniform(bits: int):
    return constriction.stream.model.Uniform(1 << bits)


def encode_table(enc, values: torch.Tensor, R: int, freqs: torch.Tensor) -> float:
    """Code int64 values (n,) centred at 0 with per-element frequency rows (n, 2R+1), then the
    escapes of the edge symbols in element order; returns the ideal code length in bits
    under these tables."""
    if values.numel() == 0:
        return 0.0
    c = torch.zeros_like(values)
    idx = window_index(values, c, R)
    enc.encode(idx.to(torch.int32).numpy(), _CATEGORICAL, freqs.to(torch.float64).numpy())
    bits = -(torch.log2(freqs.gather(1, idx[:, None])[:, 0].double()) - torch.log2(freqs.sum(1).double())).sum().item()
    edge = (idx == 0) | (idx == 2 * R)
    for over in overflow(values, c, R)[edge].tolist():
        for value, width in escape_fields(over):
            enc.encode(np.array([value], dtype=np.int32), _uniform(width))
            bits += width
    return bits


def decode_table(dec, R: int, freqs: torch.Tensor) -> torch.Tensor:
    """Inverse of encode_table: n = freqs.shape[0] values."""
    if freqs.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    idx = torch.from_numpy(_decode(dec, _CATEGORICAL, freqs.to(torch.float64).numpy()).astype(np.int64))
    values = idx - R
    edge = ((idx == 0) | (idx == 2 * R)).nonzero()[:, 0]
    if edge.numel():
        over = torch.tensor([read_escape(lambda width: int(_decode(dec, _uniform(width), 1)[0]))
                             for _ in range(edge.numel())], dtype=torch.int64)
        values[edge] += torch.where(values[edge] < 0, -over, over)
    return values
