"""Model configuration: one frozen dataclass, named presets.

The config is stored inside every weights file (as JSON), so a checkpoint always
knows its own architecture.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

# The paper's MSE lambdas. A variable-rate model (Config.rates) has one gain vector per
# point; quality q in [1, 7] picks point q, and fractions interpolate in log space.
QUALITY_LAMBDAS = (0.002, 0.004, 0.007, 0.014, 0.026, 0.034, 0.058)
MIN_QUALITY, MAX_QUALITY = 1.0, float(len(QUALITY_LAMBDAS))
DEFAULT_QUALITY = 4.0                   # lambda 0.014, the middle of the paper's range


def check_quality(q) -> float:
    """q as a float in [MIN_QUALITY, MAX_QUALITY], else ValueError."""
    try:
        q = float(q)
    except (TypeError, ValueError):
        raise ValueError(f"quality must be a number in [{MIN_QUALITY:g}, {MAX_QUALITY:g}], got {q!r}") from None
    if not MIN_QUALITY <= q <= MAX_QUALITY:         # also false for NaN
        raise ValueError(f"quality must be in [{MIN_QUALITY:g}, {MAX_QUALITY:g}], got {q}")
    return q


def lambda_of_quality(q: float) -> float:
    """The lambda that quality q stands for: log-linear between the integer points."""
    q = check_quality(q)
    i = min(int(q), len(QUALITY_LAMBDAS) - 1)
    t = q - i
    lo, hi = QUALITY_LAMBDAS[i - 1], QUALITY_LAMBDAS[min(i, len(QUALITY_LAMBDAS) - 1)]
    return math.exp((1 - t) * math.log(lo) + t * math.log(hi))


def quality_of_lambda(lmbda: float) -> float:
    """Inverse of lambda_of_quality; ValueError outside the paper's lambda range."""
    lo, hi = QUALITY_LAMBDAS[0], QUALITY_LAMBDAS[-1]
    if not (isinstance(lmbda, (int, float)) and lo <= lmbda <= hi):
        raise ValueError(f"lambda must be in [{lo}, {hi}], got {lmbda!r}")
    logs = [math.log(v) for v in QUALITY_LAMBDAS]
    i = next(i for i in range(1, len(logs)) if math.log(lmbda) <= logs[i])
    return i + (math.log(lmbda) - logs[i - 1]) / (logs[i] - logs[i - 1])


@dataclass(frozen=True)
class Config:
    N: int = 192             # channels of g_a / g_s / hyperprior
    M: int = 192             # latent channels of y
    N_cs: int = 4            # channel segments; 2 * N_cs coding groups
    K: int = 8               # spatial window span (K x K latent positions)
    L: int = 8               # transformer layers, alternating W-SCA / SW-SCA
    d_e: int = 384           # embedding width
    heads: int = 12
    mlp_ratio: int = 4       # MLP width = mlp_ratio * d_e
    k_m: int = 3             # GMM components per latent element
    lmbda: float = 0.0130    # rate-distortion trade-off the weights were trained for (0 = untrained)
    rates: int = 0           # variable rate: one gain vector per QUALITY_LAMBDAS point (0 = fixed rate)

    def __post_init__(self):
        if self.M % self.N_cs:
            raise ValueError(f"M={self.M} must be divisible by N_cs={self.N_cs}")
        if self.d_e % self.heads:
            raise ValueError(f"d_e={self.d_e} must be divisible by heads={self.heads}")
        if self.K % 4 or self.K < 4:
            # window is K rows x K/2 columns after EGR and is shifted by K/2 x K/4
            raise ValueError(f"K={self.K} must be a positive multiple of 4")
        if self.L < 1:
            raise ValueError("L must be >= 1")
        if self.rates not in (0, len(QUALITY_LAMBDAS)):
            raise ValueError(f"rates must be 0 (fixed rate) or {len(QUALITY_LAMBDAS)}, got {self.rates}")

    @property
    def variable_rate(self) -> bool:
        return self.rates > 0

    @property
    def p_cs(self) -> int:
        """Channels per segment."""
        return self.M // self.N_cs

    @property
    def groups(self) -> int:
        """Coding groups: checkered (anchor / non-anchor) x channel segments."""
        return 2 * self.N_cs

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        if not self.rates:          # fixed-rate configs keep the JSON (and so the model ids) they always had
            del fields["rates"]
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        fields = {f.name for f in dataclasses.fields(cls)}
        data = json.loads(text)
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_name(cls, name: str) -> "Config":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, Config] = {
    # Exactly the paper's setting (DESIGN.md section 1).
    "paper": Config(),
    # The paper's three highest rates: M=312 channels, 6 heads (p_cs=78, d_e=8*p_cs).
    "paper-hr": Config(M=312, d_e=624, heads=6),
    # Trainable on a 2-core CPU: the default shipped model.
    "small": Config(N=96, M=96, N_cs=4, K=8, L=4, d_e=96, heads=4, mlp_ratio=2),
    # The small model with continuous rate control (gain vectors, model.py): one file for all rates.
    "small-vr": Config(N=96, M=96, N_cs=4, K=8, L=4, d_e=96, heads=4, mlp_ratio=2, lmbda=0.0, rates=7),
    # Seconds-fast, for tests.
    "tiny": Config(N=16, M=16, N_cs=2, K=4, L=2, d_e=16, heads=2, mlp_ratio=2),
    "tiny-vr": Config(N=16, M=16, N_cs=2, K=4, L=2, d_e=16, heads=2, mlp_ratio=2, lmbda=0.0, rates=7),
}
