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
from .errors import BitstreamError, ECFError, ImageError, UnknownModelError
from .fixedpoint import FixedPointHyper
from .image import to_rgb_array
from .model import PAD, ECFModel
from .rdo import optimize_latents

DEFAULT_MAX_PIXELS = 8192 * 8192        # decoding refuses larger images unless raised


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H', W') float in [0, 1], replicate-padded to multiples of PAD."""
    H, W = rgb.shape[:2]
    x = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy()).permute(2, 0, 1)[None].float().div(255)
    return F.pad(x, (0, -W % PAD, 0, -H % PAD), mode="replicate")


def to_images(x_hat: torch.Tensor, H: int, W: int) -> list[np.ndarray]:
    """(B, 3, H', W') -> B HxWx3 uint8 images, cropped."""
    x = x_hat[:, :, :H, :W].clamp(0, 1).mul(255).round().to("cpu", torch.uint8)
    return list(x.permute(0, 2, 3, 1).contiguous().numpy())


class Engine:
    """One loaded model with its coding tables. Create with ecf_engine.load().

    encode/decode are re-entrant: all per-image state (KV cache, coders) lives in the call.
    device: where the networks run ('cpu', 'cuda'). The entropy parameters come from the
    fixed-point copy of h_s and the context model (fixedpoint.py), so the coded integers
    do not depend on the device, thread count, batch or kernels; the decoded image is
    g_s of those integers in float, bit-exact for a given device and build.
    """

    def __init__(self, model: ECFModel, model_id: bytes, name: str = "", max_pixels: int = DEFAULT_MAX_PIXELS,
                 cached: bool = True, device: str | torch.device = "cpu"):
        # z's table: pinned in the weights file where it has one (weights.py); else computed from
        # the CPU copy of the prior, so it is the same table whatever the device
        pinned = getattr(model, "pinned_z_table", None)
        self.z_half_width, self.z_freqs = pinned or model.z_prior.cpu().frequency_table()
        self.hyper = FixedPointHyper(model.h_s).to(device)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.cfg = model.cfg
        self.model_id = model_id
        self.name = name
        self.max_pixels = max_pixels
        self.cached = cached

    def __repr__(self):
        return f"Engine({self.name!r}, model_id={self.model_id.hex()}, device={self.device}, cfg={self.cfg})"

    # -- encoding ------------------------------------------------------------------------

    def encode(self, image, rdo_iters: int = 0) -> bytes:
        """Image (PIL.Image, HxWx3 / HxW ndarray, or (3,H,W) tensor; see image.py) -> .ecf bytes.

        rdo_iters > 0 turns on encoder-side online RDO (rdo.py; the paper uses 26): slower
        encoding, smaller files at equal or better quality; decoding is unchanged."""
        return self._encode([self._rgb(image)], rdo_iters, None)[0]

    def encode_with_stats(self, image, rdo_iters: int = 0) -> tuple[bytes, dict]:
        """Like encode(), plus sizes, the model's estimated bits and timings."""
        stats = {}
        bits = self._encode([self._rgb(image)], rdo_iters, stats)[0]
        return bits, stats

    def encode_batch(self, images, rdo_iters: int = 0, batch_size: int = 8) -> list[bytes]:
        """Encode several images; images of equal size (after padding to multiples of 64)
        run through the networks together, up to batch_size at a time. Each stream is
        bit-identical to encode(image)."""
        rgbs = [self._rgb(im) for im in images]
        out: list[bytes | None] = [None] * len(rgbs)
        for idx in _batches([_padded(*rgb.shape[:2]) for rgb in rgbs], batch_size):
            for i, bits in zip(idx, self._encode([rgbs[i] for i in idx], rdo_iters, None)):
                out[i] = bits
        return out

    def encode_to(self, image, file, rdo_iters: int = 0) -> int:
        """Encode into a binary file object (at its position) or a path; returns bytes written.
        Streams are self-delimiting: several can follow each other in one file."""
        bits = self.encode(image, rdo_iters)
        if hasattr(file, "write"):
            file.write(bits)
        else:
            with open(file, "wb") as f:
                f.write(bits)
        return len(bits)

    def _rgb(self, image) -> np.ndarray:
        rgb = to_rgb_array(image)
        H, W = rgb.shape[:2]
        if H * W > self.max_pixels:
            raise ImageError(f"image of {W}x{H} pixels exceeds this engine's limit of {self.max_pixels} pixels")
        return rgb

    def _encode(self, rgbs: list[np.ndarray], rdo_iters: int, stats: dict | None) -> list[bytes]:
        """Images of one padded size -> their streams. stats (one image only) receives sizes,
        the model's estimates and timings."""
        t0 = time.perf_counter()
        x = torch.cat([to_input(rgb) for rgb in rgbs]).to(self.device)
        y, z = self._analyze(x)
        if rdo_iters > 0:       # outside the thread-invariant region: only the coded integers must match
            pairs = [optimize_latents(self.model, x[b:b + 1], y[b:b + 1], z[b:b + 1], *rgb.shape[:2],
                                      iterations=rdo_iters) for b, rgb in enumerate(rgbs)]
            y, z = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        return self._code(rgbs, y, z, stats, t0)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _analyze(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.model.g_a(x)
        return y, self.model.h_a(y)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _code(self, rgbs, y, z, stats, t0) -> list[bytes]:
        m = self.model
        z_hat = torch.round(z)
        psi = self.hyper(z_hat)

        t = time.perf_counter()
        z_bytes, z_table_bits = [], 0.0
        z_ints = z_hat.cpu().to(torch.int64)
        for b in range(len(rgbs)):
            z_enc = constriction.stream.queue.RangeEncoder()
            z_table_bits += encode_table(z_enc, z_ints[b].flatten(), self.z_half_width,
                                         self._z_rows(z_hat[0, 0].numel()))
            z_bytes.append(payload(z_enc))
        t_code = time.perf_counter() - t

        y_stats = {} if stats is not None else None     # the float-model estimate costs a pass over y
        y_bytes, y_hat = m.context_model.compress_each(y, psi, cached=self.cached, stats=y_stats,
                                                       version=bitstream.VERSION)
        streams = [bitstream.pack(self.model_id, *rgb.shape[:2], zb, yb) for rgb, zb, yb in zip(rgbs, z_bytes, y_bytes)]
        total = time.perf_counter() - t0
        if stats is None:
            return streams
        assert len(rgbs) == 1, "stats are per image"
        H, W = rgbs[0].shape[:2]
        t_code += y_stats["coding_seconds"]
        est = y_stats["estimated_bits"] - torch.log2(m.z_prior.likelihood(z_hat)).sum().item()
        y_hat = y_hat.cpu()
        real = 8 * len(streams[0])
        payload_bits = 8 * (len(y_bytes[0]) + len(z_bytes[0]))
        table_bits = y_stats["table_bits"] + z_table_bits
        stats.update({
            "bytes": len(streams[0]), "bpp": real / (H * W), "height": H, "width": W,
            "y_bytes": len(y_bytes[0]), "z_bytes": len(z_bytes[0]),
            # three sizes: the float model's -log2 P, the ideal length under the integer
            # tables the coder used, and the real payload
            "estimated_bits": est, "table_bits": table_bits,
            "payload_gap_percent": 100 * (payload_bits / est - 1),
            "coder_overhead_percent": 100 * (payload_bits / table_bits - 1),
            "file_gap_percent": 100 * (real / est - 1),
            "y_hat": y_hat, "encode_ms": 1000 * total, "coding_ms": 1000 * t_code,
            "network_ms": 1000 * (total - t_code),
        })
        return streams

    def _z_rows(self, positions: int) -> torch.Tensor:
        """The frequency row of every z symbol, in (C, h, w) order."""
        return self.z_freqs.repeat_interleave(positions, 0)

    @torch.no_grad()
    @thread_invariant_kernels()
    def reconstruct(self, image) -> np.ndarray:
        """The model's own reconstruction g_s(round(g_a(x))), without entropy coding:
        what decode(encode(image)) must return, bit for bit."""
        rgb = to_rgb_array(image)
        x = to_input(rgb).to(self.device)
        return to_images(self.model.g_s(torch.round(self.model.g_a(x))), *rgb.shape[:2])[0]

    # -- decoding ------------------------------------------------------------------------

    def decode(self, bits: bytes) -> np.ndarray:
        """.ecf bytes -> HxWx3 uint8 image."""
        return self.decode_with_stats(bits)[0]

    def decode_with_stats(self, bits: bytes) -> tuple[np.ndarray, dict]:
        stats = {}
        image = self._decode([self._unpack(bits)], stats)[0]
        return image, stats

    def decode_batch(self, streams, batch_size: int = 8) -> list[np.ndarray]:
        """Decode several streams, batching the networks over streams of equal padded size;
        each image is bit-identical to decode(stream). A bad stream raises (naming its index)
        before anything is decoded."""
        parsed = []
        for i, bits in enumerate(streams):
            try:
                parsed.append(self._unpack(bits))
            except ECFError as e:
                raise type(e)(f"stream {i}: {e}") from e
        out: list[np.ndarray | None] = [None] * len(parsed)
        for idx in _batches([(_padded(h.height, h.width), h.version) for h, _, _ in parsed], batch_size):
            for i, image in zip(idx, self._decode([parsed[i] for i in idx], None)):
                out[i] = image
        return out

    def decode_from(self, file) -> np.ndarray:
        """Read exactly one stream from a binary file object (at its position) or a path and
        decode it; the file position ends right after the stream."""
        if not hasattr(file, "read"):
            with open(file, "rb") as f:
                return self.decode_from(f)
        head = file.read(bitstream.HEADER_SIZE)
        header = bitstream.read_header(head)
        rest = header.describe()["total_bytes"] - len(head)
        return self.decode(head + file.read(rest))

    def _unpack(self, bits: bytes):
        header, z_bytes, y_bytes = bitstream.unpack(bits)
        if header.model_id != self.model_id:
            raise UnknownModelError(
                f"stream was coded with model {header.model_id.hex()}, this engine holds "
                f"{self.model_id.hex()} ({self.name or 'unnamed'}); load the matching weights "
                f"or use ecf_engine.decode(), which picks the shipped model named in the stream")
        if header.height * header.width > self.max_pixels:
            raise BitstreamError(f"stream declares {header.width}x{header.height} pixels, above this engine's "
                                 f"limit of {self.max_pixels} (raise Engine.max_pixels to decode it)")
        return header, z_bytes, y_bytes

    @torch.no_grad()
    @thread_invariant_kernels()
    def _decode(self, parsed: list, stats: dict | None) -> list[np.ndarray]:
        """Unpacked streams of one padded size and format version -> images."""
        t0 = time.perf_counter()
        m, cfg = self.model, self.cfg
        Hp, Wp = _padded(parsed[0][0].height, parsed[0][0].width)
        hz, wz = Hp // PAD, Wp // PAD

        t = time.perf_counter()
        z_hat = []
        for _, z_bytes, _ in parsed:
            z_dec = constriction.stream.queue.RangeDecoder(words(z_bytes))
            z_hat.append(decode_table(z_dec, self.z_half_width, self._z_rows(hz * wz)).view(1, cfg.N, hz, wz))
            check_exhausted(z_dec, "z")
        t_code = time.perf_counter() - t

        marks = [time.perf_counter()]              # stage ends, for the stats (synchronized on CUDA)

        def mark():
            if stats is not None:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                marks.append(time.perf_counter())

        z_hat = torch.cat(z_hat).to(self.device)
        version = parsed[0][0].version
        psi = self.hyper(z_hat) if version >= 2 else m.h_s(z_hat.float())     # format 1: float parameters
        mark()
        y_stats = {}
        y_hat = m.context_model.decompress_each([y for _, _, y in parsed], psi, cached=self.cached, stats=y_stats,
                                                version=version)
        mark()
        t_code += y_stats["coding_seconds"]
        x_hat = m.g_s(y_hat.float())
        mark()
        images = to_images(x_hat, Hp, Wp)
        images = [im[:h.height, :h.width].copy() if (h.height, h.width) != (Hp, Wp) else im
                  for im, (h, _, _) in zip(images, parsed)]
        if stats is not None:
            total = time.perf_counter() - t0
            hyper, steps, synthesis = (1000 * (b - a) for a, b in zip(marks, marks[1:]))
            context = steps - 1000 * y_stats["coding_seconds"]
            stats.update({"decode_ms": 1000 * total, "coding_ms": 1000 * t_code,
                          "network_ms": 1000 * (total - t_code), "y_hat": y_hat.cpu(),
                          # the split: entropy coding (z and y), h_s, the 7 context-model steps
                          # without their coding, g_s, and everything else (unpacking, conversions)
                          "hyper_ms": hyper, "context_ms": context, "synthesis_ms": synthesis,
                          "other_ms": 1000 * (total - t_code) - hyper - context - synthesis})
        return images


def _padded(H: int, W: int) -> tuple[int, int]:
    return H + (-H % PAD), W + (-W % PAD)


def _batches(keys: list, batch_size: int) -> list[list[int]]:
    """Indices grouped by equal key, in first-seen order, chunked to batch_size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [idx[j:j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]
