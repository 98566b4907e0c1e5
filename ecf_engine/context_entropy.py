"""ContextEntropyModel: the eContextformer as a reusable entropy-model component.

Codes any latent y (B, M, H, W) with M divisible by N_cs and W even, given hyper
features psi (B, 2M, H, W) from the host codec's hyperprior:

    likelihoods = cem(y_tilde, psi)              training (CompressAI-style)
    data, y_hat = cem.compress(y, psi)           y_hat = round(y), coded in 2*N_cs-1 steps
    y_hat = cem.decompress(data, psi)            the same steps, same parameters

compress() puts the whole batch into one stream (order: group, then batch item);
compress_each() / decompress_each() give one stream per batch item with the networks
still running batched.

`version` picks the y coding format (bitstream.FORMATS[v].y_coding):
    4 (default)  as 3, with ~23 bytes less per Kodak image around the substreams (rans.py)
    3            fixed-point entropy parameters (fixedpoint.py) and integer tables with a
                 rANS coder over parallel substreams (rans.py, csrc/rans.c)
The coded integers depend neither on the device, thread count, batch or kernels nor on the
CPU's math library. psi is rounded onto the fixed-point grid first, so a host codec still
has to give both sides bit-identical psi (or pass int64 psi from its own fixed-point
hyperprior, as the Engine does).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import rans, schedule
from .contextformer import ContextModel
from .detmath import thread_invariant_kernels
from .egr import egr
from .entropy import gmm_likelihood, quantize
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


VERSIONS = rans.FORMATS
LATEST = VERSIONS[-1]


class _RansGroups:
    """Formats 3 and 4: each item's groups split into bands of latent rows, band s of item i
    in substream i*S + s of its stream; the bands of a group decode in parallel."""

    def __init__(self, version: int, n_streams: int, items_per_stream: int, H: int, per_row: int,
                 datas: list[bytes] | None = None):
        self.S = rans.substream_count(H)
        self.offsets = rans.band_offsets(H, per_row, self.S)
        n = self.S * items_per_stream
        self.coders = ([rans.SubstreamDecoder(d, n, version) for d in datas] if datas is not None
                       else [rans.SubstreamEncoder(n, version) for _ in range(n_streams)])

    def encode(self, stream: int, item: int, raw: torch.Tensor, values: torch.Tensor) -> float:
        q, bits = quantize(raw), 0.0
        for s, (a, b) in enumerate(zip(self.offsets[:-1], self.offsets[1:])):
            bits += self.coders[stream].add(item * self.S + s, tuple(t[a:b] for t in q), values[a:b])
        return bits

    def decode(self, stream: int, item: int, raw: torch.Tensor) -> torch.Tensor:
        return self.coders[stream].decode_group(quantize(raw), self.offsets, first=item * self.S)

    def payloads(self) -> list[bytes]:
        return [e.finish() for e in self.coders]

    def finish(self) -> None:
        for d in self.coders:
            d.check_finished()


def _groups(version: int, n_streams: int, items_per_stream: int, H: int, per_row: int, datas=None):
    if version not in VERSIONS:
        raise ValueError(f"coding format {version} unknown; formats: {VERSIONS}")
    return _RansGroups(version, n_streams, items_per_stream, H, per_row, datas)


class ContextEntropyModel(ContextModel):
    """eContextformer + g_e + GMM, with entropy coding through the 7-step schedule."""

    def forward(self, y: torch.Tensor, psi: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Training: P(y) for (noisy or rounded) y (B, M, H, W), psi (B, 2M, H, W) -> (B, M, H, W).
        `context`: the latents the parameters are predicted from (default y), e.g. the
        rounded latents while y is the noisy one (mixed quantization)."""
        raw = self.raw_params(y if context is None else context, psi)
        with torch.autocast(y.device.type, enabled=False):     # likelihoods in fp32 under mixed precision
            return gmm_likelihood(y.float(), raw.float())

    def compress(self, y: torch.Tensor, psi: torch.Tensor, cached: bool = True,
                 stats: dict | None = None, version: int = LATEST, overlap: bool | None = None
                 ) -> tuple[bytes, torch.Tensor]:
        """Code round(y) of the whole batch into one stream; returns (payload, y_hat).
        `stats`, if given, receives 'coding_seconds' (entropy coder + tables),
        'estimated_bits' (the float model's -log2 P) and 'table_bits' (ideal code length
        under the integer tables the coder used). overlap: code group g on a worker
        thread while the network computes group g+1 (default: when psi is not on the CPU,
        i.e. when network and coder do not share the cores); the stream is the same."""
        streams, y_hat = self._compress(y, psi, False, cached, stats, version, overlap)
        return streams[0], y_hat

    def compress_each(self, y: torch.Tensor, psi: torch.Tensor, cached: bool = True,
                      stats: dict | None = None, version: int = LATEST, overlap: bool | None = None
                      ) -> tuple[list[bytes], torch.Tensor]:
        """Like compress(), but one stream per batch item: the networks run batched, and
        stream b equals what compress() gives for item b alone."""
        return self._compress(y, psi, True, cached, stats, version, overlap)

    def decompress(self, data: bytes, psi: torch.Tensor, cached: bool = True,
                   stats: dict | None = None, version: int = LATEST) -> torch.Tensor:
        """Decode y_hat (B, M, H, W) from one stream; H, W and B come from psi (B, 2M, H, W)."""
        return self._decompress([data], False, psi, cached, stats, version)

    def decompress_each(self, streams: list[bytes], psi: torch.Tensor, cached: bool = True,
                        stats: dict | None = None, version: int = LATEST) -> torch.Tensor:
        """Inverse of compress_each(): stream b holds batch item b of psi."""
        if len(streams) != psi.shape[0]:
            raise ValueError(f"{len(streams)} streams for a batch of {psi.shape[0]}")
        return self._decompress(streams, True, psi, cached, stats, version)

    def fixed_point(self) -> FixedPointContext:
        """The fixed-point copy that exact coding uses; rebuilt when the weights change
        (trained in place, loaded or moved)."""
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if getattr(self, "_fixed_key", None) != key:
            self._fixed = FixedPointContext(self).to(self.first_group_context.device)
            self._fixed_key = key
        return self._fixed

    def _network(self, psi: torch.Tensor):
        """The fixed-point parameter network and psi on its grid."""
        return self.fixed_point(), (to_fixed(psi) if psi.is_floating_point() else psi)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _compress(self, y, psi, each, cached, stats, version, overlap=None):
        net, psi_net = self._network(psi)
        slabs = egr(torch.round(y.clamp(-Y_LIMIT, Y_LIMIT)), self.cfg.N_cs)
        B, _, H, W2, p = slabs.shape
        groups = _groups(version, B if each else 1, 1 if each else B, H, W2 * p)
        raws, coding, table_bits = [], 0.0, 0.0

        def encode_group(raw, values):
            nonlocal coding, table_bits
            t = time.perf_counter()
            for b in range(B):
                table_bits += groups.encode(b if each else 0, 0 if each else b, raw[b].reshape(-1, 3, self.cfg.k_m),
                                            values[b].flatten().to(torch.int64))
            coding += time.perf_counter() - t

        worker = ThreadPoolExecutor(1) if (psi.device.type != "cpu" if overlap is None else overlap) else None
        pending = []

        def code_group(g, raw):
            raw, values = raw.cpu(), slabs[:, g].cpu()          # tables are built on the CPU
            if worker is None:
                encode_group(raw, values)
            else:                           # groups stay in order: one worker
                pending.append(worker.submit(encode_group, raw, values))
            if stats is not None:
                raws.append(raw)            # kept only for the estimate below
            return slabs[:, g]

        try:
            y_hat = schedule.run(net, psi_net, code_group, cached=cached)
        finally:
            if worker is not None:
                worker.shutdown(wait=True)
        for job in pending:
            job.result()                    # re-raises a coding error
        t = time.perf_counter()
        streams = groups.payloads()
        if stats is not None:
            stats["coding_seconds"] = coding + time.perf_counter() - t
            stats["table_bits"] = table_bits
            raws = torch.stack(raws, 1)
            raws = raws.double() / ONE
            stats["estimated_bits"] = -torch.log2(gmm_likelihood(slabs.cpu().to(raws.dtype), raws)).sum().item()
        return streams, y_hat.to(psi.dtype)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _decompress(self, streams, each, psi, cached, stats, version):
        net, psi_net = self._network(psi)
        B, _, H, W = psi.shape
        groups = _groups(version, len(streams), 1 if each else B, H, W // 2 * self.cfg.p_cs, datas=streams)
        coding = 0.0

        def code_group(g, raw):
            nonlocal coding
            t = time.perf_counter()
            shape, raw = raw.shape[:4], raw.cpu()                # tables are built on the CPU
            values = [groups.decode(b if each else 0, 0 if each else b, raw[b].reshape(-1, 3, self.cfg.k_m))
                      for b in range(B)]
            coding += time.perf_counter() - t
            return torch.stack(values).view(shape).to(psi_net.device, psi_net.dtype)

        y_hat = schedule.run(net, psi_net, code_group, cached=cached)
        groups.finish()
        if stats is not None:
            stats["coding_seconds"] = coding
        return y_hat.to(psi.dtype)
