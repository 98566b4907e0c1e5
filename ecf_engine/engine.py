"""The codec API: Engine.encode(image) -> bytes, Engine.decode(bytes) -> HxWx3 uint8."""
from __future__ import annotations

import time

import constriction
import numpy as np
import torch
import torch.nn.functional as F

from . import bitstream
from .context_entropy import check_exhausted, payload, words
from .detmath import thread_invariant_kernels
from .entropy import decode_table, encode_table
from .errors import BitstreamError, ImageError, UnknownModelError
from .image import to_rgb_array
from .model import PAD, ECFModel

DEFAULT_MAX_PIXELS = 8192 * 8192        # decoding refuses larger images unless raised


def _to_input(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H', W') float in [0, 1], replicate-padded to multiples of PAD."""
    H, W = rgb.shape[:2]
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255)
    return F.pad(x, (0, -W % PAD, 0, -H % PAD), mode="replicate")


def _to_image(x_hat: torch.Tensor, H: int, W: int) -> np.ndarray:
    """(1, 3, H', W') -> HxWx3 uint8, cropped."""
    x = x_hat[0, :, :H, :W].clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


class Engine:
    """One loaded model with its coding tables. Create with ecf_engine.load().

    encode/decode are re-entrant: all per-image state (KV cache, coders) lives in the call.
    """

    def __init__(self, model: ECFModel, model_id: bytes, name: str = "", max_pixels: int = DEFAULT_MAX_PIXELS,
                 cached: bool = True):
        self.model = model.eval()
        self.cfg = model.cfg
        self.model_id = model_id
        self.name = name
        self.max_pixels = max_pixels
        self.cached = cached
        self.z_half_width, self.z_freqs = model.z_prior.frequency_table()

    def __repr__(self):
        return f"Engine({self.name!r}, model_id={self.model_id.hex()}, cfg={self.cfg})"

    # -- encoding ------------------------------------------------------------------------

    def encode(self, image) -> bytes:
        """Image (PIL.Image, HxWx3 / HxW ndarray, or (3,H,W) tensor; see image.py) -> .ecf bytes."""
        return self._encode(image, with_stats=False)[0]

    def encode_with_stats(self, image) -> tuple[bytes, dict]:
        """Like encode(), plus sizes, the model's estimated bits and timings."""
        return self._encode(image, with_stats=True)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _encode(self, image, with_stats: bool) -> tuple[bytes, dict]:
        t0 = time.perf_counter()
        rgb = to_rgb_array(image)
        H, W = rgb.shape[:2]
        if H * W > self.max_pixels:
            raise ImageError(f"image of {W}x{H} pixels exceeds this engine's limit of {self.max_pixels} pixels")
        m = self.model
        y = m.g_a(_to_input(rgb))
        z_hat = torch.round(m.h_a(y))
        psi = m.h_s(z_hat)

        t = time.perf_counter()
        z_enc = constriction.stream.queue.RangeEncoder()
        z_table_bits = encode_table(z_enc, z_hat.flatten().to(torch.int64), self.z_half_width, self._z_rows(z_hat[0, 0].numel()))
        t_code = time.perf_counter() - t

        y_stats = {} if with_stats else None       # the float-model estimate costs a pass over y
        y_bytes, y_hat = m.context_model.compress(y, psi, cached=self.cached, stats=y_stats)
        z_bytes = payload(z_enc)
        bits = bitstream.pack(self.model_id, H, W, z_bytes, y_bytes)
        total = time.perf_counter() - t0
        if not with_stats:
            return bits, {}
        t_code += y_stats["coding_seconds"]

        est_y = y_stats["estimated_bits"]
        est_z = -torch.log2(m.z_prior.likelihood(z_hat)).sum().item()
        real = 8 * len(bits)
        payload_bits = 8 * (len(y_bytes) + len(z_bytes))
        table_bits = y_stats["table_bits"] + z_table_bits
        stats = {
            "bytes": len(bits), "bpp": real / (H * W), "height": H, "width": W,
            "y_bytes": len(y_bytes), "z_bytes": len(z_bytes),
            # three sizes: the float model's -log2 P, the ideal length under the integer
            # tables the coder used, and the real payload
            "estimated_bits": est_y + est_z, "table_bits": table_bits,
            "payload_gap_percent": 100 * (payload_bits / (est_y + est_z) - 1),
            "coder_overhead_percent": 100 * (payload_bits / table_bits - 1),
            "file_gap_percent": 100 * (real / (est_y + est_z) - 1),
            "y_hat": y_hat, "encode_ms": 1000 * total, "coding_ms": 1000 * t_code,
            "network_ms": 1000 * (total - t_code),
        }
        return bits, stats

    def _z_rows(self, positions: int) -> torch.Tensor:
        """The frequency row of every z symbol, in (C, h, w) order."""
        return self.z_freqs.repeat_interleave(positions, 0)

    @torch.no_grad()
    @thread_invariant_kernels()
    def reconstruct(self, image) -> np.ndarray:
        """The model's own reconstruction g_s(round(g_a(x))), without entropy coding:
        what decode(encode(image)) must return, bit for bit."""
        rgb = to_rgb_array(image)
        return _to_image(self.model.g_s(torch.round(self.model.g_a(_to_input(rgb)))), *rgb.shape[:2])

    # -- decoding ------------------------------------------------------------------------

    def decode(self, bits: bytes) -> np.ndarray:
        """.ecf bytes -> HxWx3 uint8 image."""
        return self.decode_with_stats(bits)[0]

    @torch.no_grad()
    @thread_invariant_kernels()
    def decode_with_stats(self, bits: bytes) -> tuple[np.ndarray, dict]:
        t0 = time.perf_counter()
        header, z_bytes, y_bytes = bitstream.unpack(bits)
        if header.model_id != self.model_id:
            raise UnknownModelError(
                f"stream was coded with model {header.model_id.hex()}, this engine holds "
                f"{self.model_id.hex()} ({self.name or 'unnamed'}); load the matching weights "
                f"or use ecf_engine.decode(), which picks the shipped model named in the stream")
        H, W = header.height, header.width
        if H * W > self.max_pixels:
            raise BitstreamError(f"stream declares {W}x{H} pixels, above this engine's limit of "
                                 f"{self.max_pixels} (raise Engine.max_pixels to decode it)")
        Hp, Wp = H + (-H % PAD), W + (-W % PAD)
        m, cfg = self.model, self.cfg
        t_code = 0.0

        t = time.perf_counter()
        z_dec = constriction.stream.queue.RangeDecoder(words(z_bytes))
        hz, wz = Hp // PAD, Wp // PAD
        z_hat = decode_table(z_dec, self.z_half_width, self._z_rows(hz * wz)).view(1, cfg.N, hz, wz).float()
        check_exhausted(z_dec, "z")
        t_code += time.perf_counter() - t

        psi = m.h_s(z_hat)
        y_stats = {}
        y_hat = m.context_model.decompress(y_bytes, psi, cached=self.cached, stats=y_stats)
        t_code += y_stats["coding_seconds"]
        image = _to_image(m.g_s(y_hat), H, W)
        total = time.perf_counter() - t0
        return image, {"decode_ms": 1000 * total, "coding_ms": 1000 * t_code,
                       "network_ms": 1000 * (total - t_code), "y_hat": y_hat}

