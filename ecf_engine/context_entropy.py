"""ContextEntropyModel: the eContextformer as a reusable entropy-model component.

Codes any latent y (B, M, H, W) with M divisible by N_cs and W even, given hyper
features psi (B, 2M, H, W) from the host codec's hyperprior:

    likelihoods = cem(y_tilde, psi)              training (CompressAI-style)
    data, y_hat = cem.compress(y, psi)           y_hat = round(y), coded in 2*N_cs-1 steps
    y_hat = cem.decompress(data, psi)            the same steps, same parameters

compress() puts the whole batch into one range-coded stream (order: group, then batch
item); compress_each() / decompress_each() give one stream per batch item with the
networks still running batched.

Coding derives the entropy parameters with the fixed-point copy of the networks
(fixedpoint.py, exact=True, the default): the coded integers then do not depend on the
device, thread count, batch or kernels. psi is rounded onto the fixed-point grid first,
so a host codec still has to give both sides bit-identical psi (or pass int64 psi from
its own fixed-point hyperprior, as the Engine does). exact=False codes with the float
networks (format-1 .ecf streams).
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
from .fixedpoint import ONE, FixedPointContext, to_fixed
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

    def compress(self, y: torch.Tensor, psi: torch.Tensor, cached: bool = True,
                 stats: dict | None = None, exact: bool = True) -> tuple[bytes, torch.Tensor]:
        """Code round(y) of the whole batch into one stream; returns (payload, y_hat).
        `stats`, if given, receives 'coding_seconds' (range coder + tables),
        'estimated_bits' (the float model's -log2 P) and 'table_bits' (ideal code length
        under the integer tables the coder used)."""
        streams, y_hat = self._compress(y, psi, False, cached, stats, exact)
        return streams[0], y_hat

    def compress_each(self, y: torch.Tensor, psi: torch.Tensor, cached: bool = True,
                      stats: dict | None = None, exact: bool = True) -> tuple[list[bytes], torch.Tensor]:
        """Like compress(), but one stream per batch item: the networks run batched, and
        stream b equals what compress() gives for item b alone."""
        return self._compress(y, psi, True, cached, stats, exact)

    def decompress(self, data: bytes, psi: torch.Tensor, cached: bool = True,
                   stats: dict | None = None, exact: bool = True) -> torch.Tensor:
        """Decode y_hat (B, M, H, W) from one stream; H, W and B come from psi (B, 2M, H, W)."""
        return self._decompress([data], psi, cached, stats, exact)

    def decompress_each(self, streams: list[bytes], psi: torch.Tensor, cached: bool = True,
                        stats: dict | None = None, exact: bool = True) -> torch.Tensor:
        """Inverse of compress_each(): stream b holds batch item b of psi."""
        if len(streams) != psi.shape[0]:
            raise ValueError(f"{len(streams)} streams for a batch of {psi.shape[0]}")
        return self._decompress(streams, psi, cached, stats, exact)

    def fixed_point(self) -> FixedPointContext:
        """The fixed-point copy that exact coding uses; rebuilt when the weights change
        (trained in place, loaded or moved)."""
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if getattr(self, "_fixed_key", None) != key:
            self._fixed = FixedPointContext(self).to(self.first_group_context.device)
            self._fixed_key = key
        return self._fixed

    def _network(self, psi: torch.Tensor, exact: bool):
        """The parameter network and psi in its number format."""
        if not exact:
            return self, psi
        return self.fixed_point(), (to_fixed(psi) if psi.is_floating_point() else psi)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _compress(self, y, psi, each, cached, stats, exact):
        net, psi_net = self._network(psi, exact)
        slabs = egr(torch.round(y.clamp(-Y_LIMIT, Y_LIMIT)), self.cfg.N_cs)
        encoders = [constriction.stream.queue.RangeEncoder() for _ in range(y.shape[0] if each else 1)]
        raws, coding, table_bits = [], 0.0, 0.0

        def code_group(g, raw):
            nonlocal coding, table_bits
            t = time.perf_counter()
            raw, values = raw.cpu(), slabs[:, g].cpu()          # tables are built on the CPU, in float64
            for b in range(slabs.shape[0]):
                table_bits += encode_gmm(encoders[b if each else 0], values[b].flatten().to(torch.int64),
                                         raw[b].reshape(-1, 3, self.cfg.k_m))
            coding += time.perf_counter() - t
            if stats is not None:
                raws.append(raw)            # kept only for the estimate below
            return slabs[:, g]

        y_hat = schedule.run(net, psi_net, code_group, cached=cached)
        if stats is not None:
            stats["coding_seconds"] = coding
            stats["table_bits"] = table_bits
            raws = torch.stack(raws, 1)
            raws = raws if raws.is_floating_point() else raws.double() / ONE
            stats["estimated_bits"] = -torch.log2(gmm_likelihood(slabs.cpu().to(raws.dtype), raws)).sum().item()
        return [payload(e) for e in encoders], y_hat.to(psi.dtype)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _decompress(self, streams, psi, cached, stats, exact):
        net, psi_net = self._network(psi, exact)
        decoders = [constriction.stream.queue.RangeDecoder(words(data)) for data in streams]
        each = len(decoders) > 1
        coding = 0.0

        def code_group(g, raw):
            nonlocal coding
            t = time.perf_counter()
            shape, raw = raw.shape[:4], raw.cpu()                # tables are built on the CPU, in float64
            values = [decode_gmm(decoders[b if each else 0], raw[b].reshape(-1, 3, self.cfg.k_m))
                      for b in range(raw.shape[0])]
            coding += time.perf_counter() - t
            return torch.stack(values).view(shape).to(psi_net.device, psi_net.dtype)

        y_hat = schedule.run(net, psi_net, code_group, cached=cached)
        for i, d in enumerate(decoders):
            check_exhausted(d, "y" if len(decoders) == 1 else f"y (stream {i})")
        if stats is not None:
            stats["coding_seconds"] = coding
        return y_hat.to(psi.dtype)
