"""Probability models, quantization of the GMM parameters, and the glue to constriction's
range coder (z in every format; y in formats 1 and 2 -- formats 3 and 4 code y in rans.py).

Determinism rule: the coder only ever sees integer frequency tables. They come from
the network's float parameters through one quantization step (`quantize_gmm`) and
float64 arithmetic on the quantized values, done by the same code on encode and
decode.

Symbols are coded in a window of 2R+1 values around an integer centre c: index 0 means
"<= c-R" and index 2R means ">= c+R"; for those two edge symbols the distance beyond
the edge is then coded with an Elias-gamma style escape code (`encode_escapes`), so
every integer value can be coded and nothing is clipped.
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

FREQ_BITS = 20                 # integer frequencies are in units of 2**-20
LIKELIHOOD_FLOOR = 1e-9
GMM_BUCKETS = (2, 4, 8, 16, 32, 64, 128)   # half-widths R of the coding windows
MEAN_STEPS = 32                # means are quantized to 1/32
LOG_SCALE_STEPS = 32           # scales to exp(k/32)
LOGIT_STEPS = 8                # mixture logits to 1/8
SCALE_MIN, SCALE_MAX = 0.11, 256.0

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
    return (torch.round(w_logits * LOGIT_STEPS).clamp(-(1 << 12), 1 << 12).to(torch.int32),
            torch.round(means * MEAN_STEPS).clamp(-(1 << 24), 1 << 24).to(torch.int32),
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
    return (shift_round(logits, frac - int(math.log2(LOGIT_STEPS))).clamp(-(1 << 12), 1 << 12).to(torch.int32),
            shift_round(means, frac - int(math.log2(MEAN_STEPS))).clamp(-(1 << 24), 1 << 24).to(torch.int32),
            (torch.searchsorted(thresholds, s.contiguous(), right=True) + LOG_SCALE_RANGE[0]).to(torch.int32))


def quantize(raw: torch.Tensor):
    """Float raw parameters (quantize_gmm) or fixed-point ones (int64, quantize_fixed)."""
    if raw.is_floating_point():
        return quantize_gmm(raw)
    return quantize_fixed(raw.cpu(), FRAC)


def _gmm_windows(q):
    """Integer GMM parameters -> float64 (w, mu, sigma), centres c and window half-widths R, each (n,)."""
    q_logits, q_means, q_log_scales = q
    w = torch.softmax(q_logits.double() / LOGIT_STEPS, -1)
    mu = q_means.double() / MEAN_STEPS
    sigma = torch.exp(q_log_scales.double() / LOG_SCALE_STEPS)
    c = torch.round((w * mu).sum(-1)).to(torch.int64)
    reach = ((mu - c[:, None]).abs() + 8 * sigma).amax(-1)
    buckets = torch.tensor(GMM_BUCKETS, dtype=torch.float64)
    R = buckets[torch.searchsorted(buckets, reach).clamp_max(len(GMM_BUCKETS) - 1)].to(torch.int64)
    return w, mu, sigma, c, R


def _gmm_frequencies(w, mu, sigma, c, R: int) -> torch.Tensor:
    """Frequencies over the window c-R .. c+R for each element: (n, 2R+1) int64."""
    edges = c[:, None].double() + torch.arange(-R, R, dtype=torch.float64) + 0.5         # (n, 2R)
    cdf = (w[:, None, :] * torch.special.ndtr((edges[..., None] - mu[:, None, :]) / sigma[:, None, :])).sum(-1)
    n = cdf.shape[0]
    cdf = torch.cat([cdf.new_zeros(n, 1), cdf, cdf.new_ones(n, 1)], 1)
    return to_frequencies(cdf.diff(dim=1))


# -- coding ------------------------------------------------------------------------------

def encode_symbols(enc, values: torch.Tensor, c: torch.Tensor, R: int, freqs: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Code int64 values (n,) in windows c-R .. c+R with frequencies (n, 2R+1).

    Returns the overflow beyond the window edge (n,), meaningful where a value sits on an
    edge, and the ideal code length in bits under these integer tables."""
    idx = (values - c + R).clamp(0, 2 * R)
    if values.numel() == 0:
        return torch.zeros_like(values), 0.0
    enc.encode(idx.to(torch.int32).numpy(), _CATEGORICAL, freqs.to(torch.float64).numpy())
    ideal = -(torch.log2(freqs.gather(1, idx[:, None])[:, 0].double()) - torch.log2(freqs.sum(1).double())).sum()
    return torch.where(values < c, c - R - values, values - c - R), ideal.item()


def _decode(dec, model, *params) -> np.ndarray:
    """dec.decode, with constriction's complaints about invalid data turned into BitstreamError."""
    try:
        return dec.decode(model, *params)
    except (AssertionError, ValueError, RuntimeError) as e:
        raise BitstreamError(f"corrupted payload: the range decoder rejected it ({e})") from e


def decode_symbols(dec, c: torch.Tensor, R: int, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of encode_symbols: values (n,) int64 and a mask of the edge symbols, which need an escape."""
    if c.numel() == 0:
        return c.clone(), torch.zeros_like(c, dtype=torch.bool)
    idx = torch.from_numpy(_decode(dec, _CATEGORICAL, freqs.to(torch.float64).numpy()).astype(np.int64))
    return c + idx - R, (idx == 0) | (idx == 2 * R)


_ESCAPE_LENGTH_SYMBOLS = 64         # bit lengths 0..63 of (overflow + 1)
_ESCAPE_LENGTH = constriction.stream.model.Uniform(_ESCAPE_LENGTH_SYMBOLS)
ESCAPE_CHUNK_BITS = 16          # escape bits are coded in uniform chunks of at most this
MAX_ESCAPE_BITS = 40


def encode_escapes(enc, overflows: list[int]) -> float:
    """Elias-gamma style: the bit length of (o + 1), then its bits below the leading one.
    Returns the code length in bits."""
    bits = 0.0
    for o in overflows:
        v = o + 1
        n = v.bit_length() - 1
        bits += math.log2(_ESCAPE_LENGTH_SYMBOLS) + n
        enc.encode(np.array([n], dtype=np.int32), _ESCAPE_LENGTH)
        while n > 0:
            take = min(n, ESCAPE_CHUNK_BITS)
            n -= take
            enc.encode(np.array([(v >> n) & ((1 << take) - 1)], dtype=np.int32),
                       constriction.stream.model.Uniform(1 << take))
    return bits


def decode_escapes(dec, count: int) -> list[int]:
    out = []
    for _ in range(count):
        n = int(_decode(dec, _ESCAPE_LENGTH, 1)[0])
        if n > MAX_ESCAPE_BITS:
            raise BitstreamError(f"corrupted payload: escape code of {n} bits exceeds the limit of {MAX_ESCAPE_BITS}")
        v = 1
        while n > 0:
            take = min(n, ESCAPE_CHUNK_BITS)
            n -= take
            v = (v << take) | int(_decode(dec, constriction.stream.model.Uniform(1 << take), 1)[0])
        out.append(v - 1)
    return out


def apply_escapes(dec, values: torch.Tensor, c: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    """Decode the escapes of the edge symbols (in element order) and move those values outward."""
    pos = edge.nonzero()[:, 0]
    if pos.numel():
        over = torch.tensor(decode_escapes(dec, pos.numel()), dtype=torch.int64)
        values = values.clone()
        values[pos] += torch.where(values[pos] < c[pos], -over, over)
    return values


def encode_table(enc, values: torch.Tensor, R: int, freqs: torch.Tensor) -> float:
    """Code int64 values (n,) centred at 0 with per-element frequency rows (n, 2R+1);
    returns the ideal code length in bits under these tables."""
    c = torch.zeros_like(values)
    over, bits = encode_symbols(enc, values, c, R, freqs)
    return bits + encode_escapes(enc, over[(values <= -R) | (values >= R)].tolist())


def decode_table(dec, R: int, freqs: torch.Tensor) -> torch.Tensor:
    c = torch.zeros(freqs.shape[0], dtype=torch.int64)
    values, edge = decode_symbols(dec, c, R, freqs)
    return apply_escapes(dec, values, c, edge)


def encode_gmm(enc, values: torch.Tensor, raw: torch.Tensor) -> float:
    """Code integer values (n,) with GMM raw parameters (n, 3, k_m), float or fixed-point
    (int64, see quantize), windows grouped by
    size; returns the ideal code length in bits under the integer tables used."""
    w, mu, sigma, c, R = _gmm_windows(quantize(raw))
    over = torch.zeros_like(values)
    bits = 0.0
    for r in GMM_BUCKETS:
        sel = (R == r).nonzero()[:, 0]
        if sel.numel():
            over[sel], b = encode_symbols(enc, values[sel], c[sel], r, _gmm_frequencies(w[sel], mu[sel], sigma[sel], c[sel], r))
            bits += b
    return bits + encode_escapes(enc, over[(values <= c - R) | (values >= c + R)].tolist())


def decode_gmm(dec, raw: torch.Tensor) -> torch.Tensor:
    """Decode n integer values given GMM raw parameters (n, 3, k_m)."""
    w, mu, sigma, c, R = _gmm_windows(quantize(raw))
    values = torch.zeros_like(c)
    edge = torch.zeros_like(c, dtype=torch.bool)
    for r in GMM_BUCKETS:
        sel = (R == r).nonzero()[:, 0]
        if sel.numel():
            values[sel], edge[sel] = decode_symbols(dec, c[sel], r, _gmm_frequencies(w[sel], mu[sel], sigma[sel], c[sel], r))
    return apply_escapes(dec, values, c, edge)
