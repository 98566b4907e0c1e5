"""The codec API: Engine.encode(image) -> bytes, Engine.decode(bytes) -> HxWx3 uint8."""
from __future__ import annotations

import math
import time
from pathlib import Path

import constriction
import numpy as np
import torch
import torch.nn.functional as F

from . import bitstream
from .context_entropy import check_exhausted, payload, words
from .detmath import thread_invariant_kernels
from .entropy import decode_table, encode_table
from .config import DEFAULT_QUALITY, check_quality, lambda_of_quality, quality_of_lambda
from .errors import BitstreamError, ECFError, ImageError, RateError, UnknownModelError
from .fixedpoint import FixedPointHyper
from .image import to_rgb_array
from .metrics import psnr
from .model import PAD, ECFModel
from .rdo import optimize_latents

DEFAULT_MAX_PIXELS = 8192 * 8192        # decoding refuses larger images unless raised
BPP_TOLERANCE = 0.01                    # target_bpp search stops within 1 % (the promise is 2 %)
PSNR_TOLERANCE = 0.02                   # target_psnr search stops within 0.02 dB (promise: 0.05)
SEARCH_STEPS = 24                       # bisection steps at most (the quality grid has 2**16 points)


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
        self.variable_rate = self.cfg.rates > 0
        self.default_quality = DEFAULT_QUALITY if self.variable_rate else None

    def __repr__(self):
        return f"Engine({self.name!r}, model_id={self.model_id.hex()}, device={self.device}, cfg={self.cfg})"

    # -- encoding ------------------------------------------------------------------------

    def encode(self, image, rdo_iters: int = 0, *, quality: float | None = None, lmbda: float | None = None,
               target_bpp: float | None = None, target_psnr: float | None = None,
               metadata: dict | None = None) -> bytes:
        """Image (PIL.Image, HxWx3 / HxW ndarray, (3,H,W) tensor or a path; see image.py) -> .ecf bytes.

        Rate (variable-rate models; give at most one): quality in [1, 7] (the integers are
        the paper's lambdas 0.002 .. 0.058, fractions interpolate; default DEFAULT_QUALITY),
        lmbda directly, or a target: target_bpp (real file size within 2 %) or target_psnr
        (RGB PSNR within 0.05 dB), met by bisection on the quality.
        metadata: {"icc_profile": bytes, "exif": bytes, "mode": "RGB" | "L"}, stored in the
        stream; None takes it from a PIL image or file (EXIF orientation applied), {} stores none.
        rdo_iters > 0 turns on encoder-side online RDO (rdo.py; the paper uses 26): slower
        encoding, smaller files at equal or better quality; decoding is unchanged."""
        return self._encode_one(image, rdo_iters, quality, lmbda, target_bpp, target_psnr, metadata, None)

    def encode_with_stats(self, image, rdo_iters: int = 0, **rate_and_metadata) -> tuple[bytes, dict]:
        """Like encode(), plus sizes, the model's estimated bits, the quality used and timings."""
        stats = {}
        bits = self._encode_one(image, rdo_iters, stats=stats, **_encode_options(rate_and_metadata))
        return bits, stats

    def encode_batch(self, images, rdo_iters: int = 0, batch_size: int = 8, quality: float | None = None,
                     lmbda: float | None = None) -> list[bytes]:
        """Encode several images at one rate; images of equal size (after padding to multiples
        of 64) run through the networks together, up to batch_size at a time. Each stream is
        bit-identical to encode(image) with the same settings."""
        q = self._quality(quality, lmbda)
        loaded = [self._load(im, None) for im in images]
        out: list[bytes | None] = [None] * len(loaded)
        for idx in _batches([_padded(*rgb.shape[:2]) for rgb, _ in loaded], batch_size):
            rgbs, metas = [loaded[i][0] for i in idx], [loaded[i][1] for i in idx]
            y = self._g_a(torch.cat([to_input(rgb) for rgb in rgbs]).to(self.device))
            for i, bits in zip(idx, self._encode(rgbs, metas, y, q, rdo_iters, None)):
                out[i] = bits
        return out

    def encode_to(self, image, file, rdo_iters: int = 0, **rate_and_metadata) -> int:
        """Encode into a binary file object (at its position) or a path; returns bytes written.
        Streams are self-delimiting: several can follow each other in one file."""
        bits = self.encode(image, rdo_iters, **_encode_options(rate_and_metadata))
        if hasattr(file, "write"):
            file.write(bits)
        else:
            with open(file, "wb") as f:
                f.write(bits)
        return len(bits)

    def _load(self, image, metadata: dict | None) -> tuple[np.ndarray, dict]:
        """(HxWx3 uint8, metadata) of an input; metadata from the file / PIL image if None."""
        from PIL import Image
        if metadata is None and isinstance(image, (str, Path, Image.Image)):
            from .image import load_image
            rgb, metadata = load_image(image)
        else:
            rgb = to_rgb_array(image)
        H, W = rgb.shape[:2]
        if H * W > self.max_pixels:
            raise ImageError(f"image of {W}x{H} pixels exceeds this engine's limit of {self.max_pixels} pixels")
        try:
            bitstream.pack_metadata(metadata)
        except ValueError as e:
            raise ImageError(str(e)) from None
        return rgb, dict(metadata or {})

    def _quality(self, quality, lmbda) -> float | None:
        """The coded quality for a quality or lambda setting (None: a fixed-rate model)."""
        if quality is not None and lmbda is not None:
            raise RateError("give quality or lmbda, not both")
        if not self.variable_rate:
            if quality is not None or lmbda is not None:
                raise RateError(f"{self.name or 'this model'} has a fixed rate (lambda {self.cfg.lmbda}); "
                                "quality and lambda settings need a variable-rate model")
            return None
        try:
            q = quality_of_lambda(lmbda) if lmbda is not None else check_quality(
                self.default_quality if quality is None else quality)
        except ValueError as e:
            raise RateError(str(e)) from None
        return bitstream.coded_quality(q)

    def _encode_one(self, image, rdo_iters, quality, lmbda, target_bpp, target_psnr, metadata, stats) -> bytes:
        t0 = time.perf_counter()
        given = [k for k, v in (("quality", quality), ("lmbda", lmbda), ("target_bpp", target_bpp),
                                ("target_psnr", target_psnr)) if v is not None]
        if len(given) > 1:
            raise RateError(f"give one rate setting, not {' and '.join(given)}")
        target = target_bpp if target_bpp is not None else target_psnr
        if target is not None:
            if not self.variable_rate:
                raise RateError(f"{self.name or 'this model'} has a fixed rate; a rate target needs a "
                                "variable-rate model")
            if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
                raise RateError(f"{given[0]} must be a positive number, got {target!r}")
        rgb, meta = self._load(image, metadata)
        y = self._g_a(to_input(rgb).to(self.device))

        def file_bpp(q):
            bits = self._encode([rgb], [meta], y, q, rdo_iters, None)[0]
            return bits, 8 * len(bits) / (rgb.shape[0] * rgb.shape[1])

        def model_psnr(q):      # the decoded image is this reconstruction, bit for bit (without RDO)
            return None, psnr(rgb, self._reconstruct(y, q, *rgb.shape[:2]))

        if target_bpp is not None:
            q, bits = self._search("bpp", target_bpp, file_bpp)
            if stats is None:
                return bits
        elif target_psnr is not None:
            q, _ = self._search("PSNR", target_psnr, model_psnr)
        else:
            q = self._quality(quality, lmbda)
        bits = self._encode([rgb], [meta], y, q, rdo_iters, stats)[0]
        if stats is not None:
            stats["encode_ms"] = 1000 * (time.perf_counter() - t0)      # with the search, if any
        return bits

    def _search(self, what: str, target: float, measure) -> tuple[float, object]:
        """Bisection on the quality for measure(q) -> (result, value) to reach target;
        value grows with q. Returns (q, result) of the point found."""
        tol = (lambda v: abs(v / target - 1) <= BPP_TOLERANCE) if what == "bpp" else \
              (lambda v: abs(v - target) <= PSNR_TOLERANCE)
        lo, hi = bitstream.coded_quality(1.0), bitstream.coded_quality(float(self.cfg.rates))
        lo_res, lo_v = measure(lo)
        if lo_v >= target or tol(lo_v):
            if tol(lo_v):
                return lo, lo_res
            raise RateError(f"target {target:g} {what} is below the lowest this model reaches on this image: "
                            f"{lo_v:.4g} {what} at quality 1")
        hi_res, hi_v = measure(hi)
        if hi_v <= target and not tol(hi_v):
            raise RateError(f"target {target:g} {what} is above the highest this model reaches on this image: "
                            f"{hi_v:.4g} {what} at quality {self.cfg.rates}")
        if tol(hi_v):
            return hi, hi_res
        best = min(((lo, lo_res, lo_v), (hi, hi_res, hi_v)), key=lambda r: abs(r[2] - target))
        for _ in range(SEARCH_STEPS):
            mid = bitstream.coded_quality((lo + hi) / 2)
            if mid in (lo, hi):
                break
            res, v = measure(mid)
            if abs(v - target) < abs(best[2] - target):
                best = (mid, res, v)
            if tol(v):
                break
            lo, hi = (mid, hi) if v < target else (lo, mid)
        return best[0], best[1]

    @torch.no_grad()
    @thread_invariant_kernels()
    def _g_a(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.g_a(x)

    def analyze(self, x: torch.Tensor, quality: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, z) the coder would code for x = to_input(rgb) (before rounding), at a quality
        (variable-rate models; default default_quality)."""
        return self._gained(self._g_a(x), self._quality(quality, None))

    @torch.no_grad()
    @thread_invariant_kernels()
    def _gained(self, y: torch.Tensor, q: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y scaled for quality q, its z) for the coder."""
        if q is not None:
            y = y * self.model.gains(q)[0]
        return y, self.model.h_a(y)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _reconstruct(self, y: torch.Tensor, q: float | None, H: int, W: int) -> np.ndarray:
        y_hat = torch.round(self._gained(y, q)[0])
        return to_images(self._synthesize(y_hat, q), H, W)[0]

    def _synthesize(self, y_hat: torch.Tensor, q: float | None) -> torch.Tensor:
        if q is not None:
            y_hat = y_hat * self.model.gains(q)[1]
        return self.model.g_s(y_hat)

    def _encode(self, rgbs: list[np.ndarray], metas: list[dict], y: torch.Tensor, q: float | None,
                rdo_iters: int, stats: dict | None) -> list[bytes]:
        """Images of one padded size, their g_a output and a quality -> their streams. stats
        (one image only) receives sizes, the model's estimates and timings."""
        t0 = time.perf_counter()
        y, z = self._gained(y, q)
        if rdo_iters > 0:       # outside the thread-invariant region: only the coded integers must match
            x = torch.cat([to_input(rgb) for rgb in rgbs]).to(self.device)
            extra = {} if q is None else {"lmbda": lambda_of_quality(q), "inv_gain": self.model.gains(q)[1]}
            pairs = [optimize_latents(self.model, x[b:b + 1], y[b:b + 1], z[b:b + 1], *rgb.shape[:2],
                                      iterations=rdo_iters, **extra) for b, rgb in enumerate(rgbs)]
            y, z = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        return self._code(rgbs, metas, y, z, q, stats, t0)

    @torch.no_grad()
    @thread_invariant_kernels()
    def _code(self, rgbs, metas, y, z, q, stats, t0) -> list[bytes]:
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
                                                       version=bitstream.FORMATS[bitstream.WRITTEN].y_coding)
        streams = [bitstream.pack(self.model_id, *rgb.shape[:2], zb, yb, quality=q, metadata=meta)
                   for rgb, meta, zb, yb in zip(rgbs, metas, z_bytes, y_bytes)]
        total = time.perf_counter() - t0
        if stats is None:
            return streams
        H, W = rgbs[0].shape[:2]
        t_code += y_stats["coding_seconds"]
        est = y_stats["estimated_bits"] - torch.log2(m.z_prior.likelihood(z_hat)).sum().item()
        y_hat = y_hat.cpu()
        real = 8 * len(streams[0])
        payload_bits = 8 * (len(y_bytes[0]) + len(z_bytes[0]))
        table_bits = y_stats["table_bits"] + z_table_bits
        stats.update({
            "bytes": len(streams[0]), "bpp": real / (H * W), "height": H, "width": W, "quality": q,
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
    def reconstruct(self, image, quality: float | None = None) -> np.ndarray:
        """The model's own reconstruction g_s(round(g_a(x))), without entropy coding:
        what decode(encode(image)) must return, bit for bit (without RDO)."""
        rgb = to_rgb_array(image)
        y = self._g_a(to_input(rgb).to(self.device))
        return self._reconstruct(y, self._quality(quality, None), *rgb.shape[:2])

    # -- decoding ------------------------------------------------------------------------

    def decode(self, bits: bytes) -> np.ndarray:
        """.ecf bytes -> HxWx3 uint8 image."""
        return self.decode_with_stats(bits)[0]

    def decode_with_stats(self, bits: bytes) -> tuple[np.ndarray, dict]:
        stats = {}
        image = self._decode([self._unpack(bits)], stats)[0]
        return image, stats

    def decode_image(self, bits: bytes):
        """.ecf bytes -> PIL.Image: grayscale if the source was, with its ICC profile and EXIF
        in .info as Pillow keeps them."""
        header = self._unpack(bits)[0]
        return to_pil(self.decode(bits), header.metadata)

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
        for idx in _batches([(_padded(h.height, h.width), h.version, h.quality) for h, _, _ in parsed], batch_size):
            for i, image in zip(idx, self._decode([parsed[i] for i in idx], None)):
                out[i] = image
        return out

    def decode_from(self, file) -> np.ndarray:
        """Read exactly one stream from a binary file object (at its position) or a path and
        decode it; the file position ends right after the stream."""
        if not hasattr(file, "read"):
            with open(file, "rb") as f:
                return self.decode_from(f)
        return self.decode(bitstream.read_stream(file))

    def _unpack(self, bits: bytes):
        header, z_bytes, y_bytes = bitstream.unpack(bits)
        if header.model_id != self.model_id:
            raise UnknownModelError(
                f"stream was coded with model {header.model_id.hex()}, this engine holds "
                f"{self.model_id.hex()} ({self.name or 'unnamed'}); load the matching weights "
                f"or use ecf_engine.decode(), which picks the shipped model named in the stream")
        if self.variable_rate != (header.quality is not None) or (
                header.quality is not None and not 1 <= header.quality <= self.cfg.rates):
            raise BitstreamError(f"corrupted ECF bitstream: quality {header.quality} for a "
                                 f"{'variable' if self.variable_rate else 'fixed'}-rate model")
        if header.height * header.width > self.max_pixels:
            raise BitstreamError(f"stream declares {header.width}x{header.height} pixels, above this engine's "
                                 f"limit of {self.max_pixels} (raise Engine.max_pixels to decode it)")
        return header, z_bytes, y_bytes

    @torch.no_grad()
    @thread_invariant_kernels()
    def _decode(self, parsed: list, stats: dict | None) -> list[np.ndarray]:
        """Unpacked streams of one padded size, format version and quality -> images."""
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
        header = parsed[0][0]
        psi = self.hyper(z_hat)
        mark()
        y_stats = {}
        y_hat = m.context_model.decompress_each([y for _, _, y in parsed], psi, cached=self.cached, stats=y_stats,
                                                version=header.format.y_coding)
        mark()
        t_code += y_stats["coding_seconds"]
        x_hat = self._synthesize(y_hat.float(), header.quality)
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


def to_pil(rgb: np.ndarray, metadata: dict):
    """A decoded HxWx3 image and its stream's metadata -> PIL.Image (mode L if the source
    was grayscale: the mean of the three decoded channels)."""
    from PIL import Image
    if metadata.get("mode") == "L":
        image = Image.fromarray(np.round(rgb.astype(np.float32).mean(-1)).astype(np.uint8), "L")
    else:
        image = Image.fromarray(rgb, "RGB")
    for key in ("icc_profile", "exif"):
        if key in metadata:
            image.info[key] = metadata[key]
    return image


def _encode_options(options: dict) -> dict:
    known = {"quality", "lmbda", "target_bpp", "target_psnr", "metadata"}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    return {k: options.get(k) for k in known}


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
