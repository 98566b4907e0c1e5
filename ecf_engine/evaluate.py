"""Evaluate an engine on a folder of images: real file sizes, PSNR, MS-SSIM, timings.

Conventions (CompressAI's): bpp = 8 * len(bitstream) / (H * W) from the real bytes,
header and CRC included; PSNR is on RGB 8-bit, computed per image and then averaged.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .metrics import ms_ssim, psnr
from .train import image_files


def machine() -> str:
    """E.g. 'Linux x86_64 (AMD EPYC, AVX2, 2 cores), 2 torch threads, torch 2.13.0+cpu'. The CPU
    model and vector width matter: the machines our numbers come from have not all been alike."""
    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {cpu} ({cpu_model()}, {os.cpu_count()} cores), "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")


def cpu_model() -> str:
    """CPU model name and widest x86 vector extension, from /proc/cpuinfo ('unknown CPU' elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    fields = {}                                 # "key : value" lines; the first CPU's values
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name, flags = fields.get("model name", "unknown CPU"), fields.get("flags", "").split()
    simd = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), None)
    return f"{name}, {simd}" if simd else name


def evaluate(engine, folder, limit: int | None = None, progress: bool = True, rdo_iters: int = 0,
             encode_options: dict | None = None, on_skip=None) -> dict:
    """folder: a folder of images or a list of image files. rdo_iters > 0: encode with online
    RDO (the warm-up encode does not use it); encode_options: rate keywords for
    engine.encode (quality=, lmbda=, target_bpp=, target_psnr=).

    An image that cannot be read or coded (ECFError, OSError) is skipped: it is listed in
    result["skipped"] and, if given, on_skip(path, error) is called; the means are over the
    others. The images are read with load_image (EXIF orientation applied)."""
    from .errors import ECFError
    from .image import load_image
    files = (image_files(folder) if isinstance(folder, (str, Path)) else [Path(f) for f in folder])[:limit]
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    options = dict(encode_options or {})
    if engine.variable_rate and not options:         # recorded: the rate the numbers are at
        options["quality"] = engine.default_quality
    rows, skipped, warmup_ms = [], [], None
    for path in tqdm(files, desc="eval", disable=not progress, dynamic_ncols=True):
        try:
            rgb = load_image(path)[0]
            if warmup_ms is None:          # first calls pay allocator / kernel setup: reported apart
                t = time.perf_counter()
                engine.decode(engine.encode(rgb, **options))
                warmup_ms = 1000 * (time.perf_counter() - t)
            bits, enc = engine.encode_with_stats(rgb, rdo_iters=rdo_iters, **options)
            out, dec = engine.decode_with_stats(bits)
        except (ECFError, OSError) as e:
            skipped.append({"image": str(path), "error": str(e)})
            if on_skip is not None:
                on_skip(path, e)
            continue
        rows.append({
            "image": path.name, "height": rgb.shape[0], "width": rgb.shape[1], "bytes": len(bits),
            "bpp": enc["bpp"], "psnr": psnr(rgb, out), "ms_ssim": ms_ssim(rgb, out),
            "estimated_bits": enc["estimated_bits"], "payload_gap_percent": enc["payload_gap_percent"],
            "coder_overhead_percent": enc["coder_overhead_percent"],
            "encode_ms": enc["encode_ms"], "decode_ms": dec["decode_ms"],
            "decode_coding_ms": dec["coding_ms"], "decode_network_ms": dec["network_ms"],
            "latent_bit_exact": bool(torch.equal(enc["y_hat"], dec["y_hat"])),
        })
    if not rows:
        raise ECFError(f"none of the {len(files)} images could be evaluated")
    keys = ["bpp", "psnr", "ms_ssim", "payload_gap_percent", "coder_overhead_percent", "encode_ms", "decode_ms",
            "decode_coding_ms", "decode_network_ms"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    mean["all_bit_exact"] = all(r["latent_bit_exact"] for r in rows)
    return {"model": engine.name, "model_id": engine.model_id.hex(), "config": json.loads(engine.cfg.to_json()),
            "folder": str(folder) if isinstance(folder, (str, Path)) else str(Path(files[0]).parent),
            "images": len(rows), "skipped": skipped, "rdo_iters": rdo_iters, "encode_options": options,
            "machine": machine(), "warmup_ms": warmup_ms,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "mean": mean, "per_image": rows}


def format_table(result: dict) -> str:
    lines = [f"{'image':<16}{'bpp':>8}{'PSNR':>8}{'MS-SSIM':>9}{'enc ms':>9}{'dec ms':>9}"]
    for r in result["per_image"]:
        ms = "nan" if math.isnan(r["ms_ssim"]) else f"{r['ms_ssim']:.4f}"
        lines.append(f"{r['image']:<16}{r['bpp']:>8.4f}{r['psnr']:>8.2f}{ms:>9}{r['encode_ms']:>9.0f}{r['decode_ms']:>9.0f}")
    m = result["mean"]
    lines.append(f"{'mean':<16}{m['bpp']:>8.4f}{m['psnr']:>8.2f}{m['ms_ssim']:>9.4f}{m['encode_ms']:>9.0f}{m['decode_ms']:>9.0f}")
    lines.append(f"real payload vs the float model's estimate: {m['payload_gap_percent']:+.2f} %, "
                 f"vs the integer tables coded with: {m['coder_overhead_percent']:+.3f} %; "
                 f"latents bit-exact on decode: {m['all_bit_exact']}; machine: {result['machine']}")
    return "\n".join(lines)
