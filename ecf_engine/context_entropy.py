"""ContextEntropyModel: the eContextformer as a reusable entropy-model component.

Codes any latent y (B, M, H, W) with M divisible by N_cs and W even, given hyper
features psi (B, 2M, H, W) from the host codec's hyperprior:

    likelihoods = cem(y_tilde, psi)              training (CompressAI-style)
    data, y_hat = cem.compress(y, psi)           y_hat = round(y), coded in 2*N_cs-1 steps
    y_hat = cem.decompress(data, psi)            the same steps, same parameters

The whole batch goes into one range-coded stream (element order: group, batch, row,
column, channel).
"""
from __future__ import annotations

import time

import constriction
import numpy as np
import torch

from . import schedule
from .contextformer import ContextModel
from .detmath import thread_invariant_kernels
from .egr import egr
from .entropy import decode_gmm, encode_gmm, gmm_likelihood
from .errors import BitstreamError

Y_LIMIT = float(1 << 24)        # latents are clipped here before rounding (escape codes reach 2**40)


def words(data: bytes) -> np.ndarray:
    """Payload bytes -> the range coder's 32-bit words (little-endian on the wire)."""
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


def payload(encoder) -> bytes:
    return encoder.get_compressed().astype("<u4").tobytes()


def check_exhausted(decoder, name: str) -> None:
    if not decoder.maybe_exhausted():
        raise BitstreamError(f"{name} payload has data left after decoding: corrupted stream or wrong model")


class ContextEntropyModel(ContextModel):
    """eContextformer + g_e + GMM, with range coding through the 7-step schedule."""

    def forward(self, y: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """Training: P(y) for (noisy or rounded) y (B, M, H, W), psi (B, 2M, H, W) -> (B, M, H, W)."""
        return gmm_likelihood(y, self.raw_params(y, psi))

    @torch.no_grad()
    @thread_invariant_kernels()
    def compress(self, y: torch.Tensor, psi: torch.Tensor, cached: bool = True,
                 stats: dict | None = None) -> tuple[bytes, torch.Tensor]:
        """Code round(y); returns (payload, y_hat). `stats`, if given, receives
        'coding_seconds' (range coder + tables), 'estimated_bits' (the float model's -log2 P)
        and 'table_bits' (ideal code length under the integer tables the coder used)."""
        slabs = egr(torch.round(y.clamp(-Y_LIMIT, Y_LIMIT)), self.cfg.N_cs)
        encoder = constriction.stream.queue.RangeEncoder()
        raws, coding, table_bits = [], 0.0, 0.0

        def code_group(g, raw):
            nonlocal coding, table_bits
            t = time.perf_counter()
            table_bits += encode_gmm(encoder, slabs[:, g].flatten().to(torch.int64), raw.reshape(-1, 3, self.cfg.k_m))
            coding += time.perf_counter() - t
            if stats is not None:
                raws.append(raw)            # kept only for the estimate below
            return slabs[:, g]

        y_hat = schedule.run(self, psi, code_group, cached=cached)
        if stats is not None:
            stats["coding_seconds"] = coding
            stats["table_bits"] = table_bits
            stats["estimated_bits"] = -torch.log2(gmm_likelihood(slabs, torch.stack(raws, 1))).sum().item()
        return payload(encoder), y_hat

    @torch.no_grad()
    @thread_invariant_kernels()
    def decompress(self, data: bytes, psi: torch.Tensor, cached: bool = True,
                   stats: dict | None = None) -> torch.Tensor:
        """Decode y_hat (B, M, H, W); H, W and B come from psi (B, 2M, H, W)."""
        decoder = constriction.stream.queue.RangeDecoder(words(data))
        coding = 0.0

        def code_group(g, raw):
            nonlocal coding
            t = time.perf_counter()
            values = decode_gmm(decoder, raw.reshape(-1, 3, self.cfg.k_m))
            coding += time.perf_counter() - t
            return values.view(raw.shape[:4]).to(psi.dtype)

        y_hat = schedule.run(self, psi, code_group, cached=cached)
        check_exhausted(decoder, "y")
        if stats is not None:
            stats["coding_seconds"] = coding
        return y_hat
