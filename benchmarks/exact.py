"""Bit-exactness end to end: through the real CLI on another thread count, and across devices.

    python -m benchmarks exact [--folder KODAK] [--model default] [--quality Q] [--limit N]
    python -m benchmarks exact --cross-device [--folder KODAK] [--model default] [--limit N]

roundtrip (default): every image goes through `ecf encode` (OMP_NUM_THREADS=2) and
`ecf decode` (OMP_NUM_THREADS=1) as separate processes, and the decoded PNG must equal the
model's own reconstruction of round(g_a(x)) bit for bit. -> roundtrip-<model>.json
--cross-device (needs a CUDA GPU): the CPU and the GPU encoder must write the same stream
(the coded integers come from fixed-point arithmetic); each decoder must decode the other's
stream to the latents the encoder coded; the decoded images are compared too (g_s runs in
float on each device, so a few pixels may differ by rounding: reported, not required
equal). -> cross-device.json
Exits 1 if any image fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .harness import KODAK, RESULTS, rgb_image, write_result

ENCODE_THREADS, DECODE_THREADS = 2, 1


def cli(*args: str, threads: int) -> float:
    """Run `ecf ARGS` in a fresh process with `threads` OpenMP threads; seconds taken."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ecf_engine.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise SystemExit(f"ecf {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - t


def roundtrip(engine, files: list[Path], model: str, quality: float | None) -> dict:
    from PIL import Image
    import ecf_engine
    rate = [] if quality is None else ["--quality", f"{quality:g}"]
    # a shipped model is found from the stream's header, as a user decodes; others are named
    decode_model = [] if engine.model_id in ecf_engine.shipped_models() else ["--model", model]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in tqdm(files, desc="roundtrip", dynamic_ncols=True):
            ecf, png = Path(tmp) / f"{path.stem}.ecf", Path(tmp) / f"{path.stem}.png"
            t_enc = cli("encode", str(path), "-o", str(ecf), "--model", model, *rate, threads=ENCODE_THREADS)
            t_dec = cli("decode", str(ecf), "-o", str(png), *decode_model, threads=DECODE_THREADS)
            rgb = rgb_image(path)
            with Image.open(png) as im:
                decoded = np.asarray(im.convert("RGB"))
            rows.append({"image": path.name, "bytes": ecf.stat().st_size,
                         "bit_exact": bool(np.array_equal(decoded, engine.reconstruct(rgb, quality=quality))),
                         "cli_encode_s": t_enc, "cli_decode_s": t_dec})
    return {"model": model, "model_id": engine.model_id.hex(), "quality": quality, "folder": str(files[0].parent),
            "images": len(rows), "all_bit_exact": all(r["bit_exact"] for r in rows),
            "threads": {"encode": ENCODE_THREADS, "decode": DECODE_THREADS},
            "note": "CLI times include process start-up and model loading", "per_image": rows}


def cross_device(model: str, files: list[Path], quality: float | None) -> dict:
    import ecf_engine
    cpu, gpu = ecf_engine.load(model, device="cpu"), ecf_engine.load(model, device="cuda")
    rate = {} if quality is None else {"quality": quality}
    rows = []
    for path in tqdm(files, desc="cross-device", dynamic_ncols=True):
        rgb = rgb_image(path)
        on_cpu, cpu_stats = cpu.encode_with_stats(rgb, **rate)
        on_gpu, gpu_stats = gpu.encode_with_stats(rgb, **rate)
        row = {"image": path.name, "same_stream": on_cpu == on_gpu}
        for name, (bits, enc_stats), decoder in (("gpu->cpu", (on_gpu, gpu_stats), cpu),
                                                  ("cpu->gpu", (on_cpu, cpu_stats), gpu)):
            try:
                image, dec_stats = decoder.decode_with_stats(bits)
                row[name] = {"latents_equal": bool(torch.equal(dec_stats["y_hat"].cpu().long(),
                                                               enc_stats["y_hat"].cpu().long())),
                             "pixels_differing": int((image != decoder.reconstruct(rgb, **rate)).any(-1).sum())}
            except ecf_engine.ECFError as e:
                row[name] = {"error": str(e)}
        row["cpu_vs_gpu_image_pixels_differing"] = int((cpu.decode(on_cpu) != gpu.decode(on_gpu)).any(-1).sum())
        rows.append(row)
    ok = all(r["same_stream"] and all(r[k].get("latents_equal") for k in ("gpu->cpu", "cpu->gpu")) for r in rows)
    return {"gpu": torch.cuda.get_device_name(), "model": model, "model_id": cpu.model_id.hex(), "quality": quality,
            "images": len(rows), "all_streams_equal_and_cross_decoded": ok, "rows": rows}


def add_arguments(p) -> None:
    p.add_argument("--folder", type=Path, default=KODAK)
    p.add_argument("--model", default="default", help="shipped name or .safetensors path")
    p.add_argument("--quality", type=float, help="quality of a variable-rate model (default: its default)")
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--cross-device", action="store_true", help="encode on the GPU, decode on the CPU and back")
    p.add_argument("--out", type=Path, help="output JSON (default benchmarks/results/roundtrip-<model>.json "
                   "or cross-device.json)")


def run(args) -> int:
    import ecf_engine
    from ecf_engine.train import image_files
    if args.limit is not None and args.limit < 1:
        raise SystemExit("--limit must be >= 1")
    files = image_files(args.folder)[:args.limit]
    if not files:
        raise SystemExit(f"no images in {args.folder}")
    if args.cross_device:
        if not torch.cuda.is_available():
            print("exact --cross-device needs a CUDA GPU; none is available here", file=sys.stderr)
            return 2
        result = cross_device(args.model, files, args.quality)
        write_result(args.out or RESULTS / "cross-device.json", result, "cuda")
        worst = max(r["cpu_vs_gpu_image_pixels_differing"] for r in result["rows"])
        print(f"{result['images']} images on {result['gpu']}: streams equal and cross-decoded to the coded latents: "
              f"{result['all_streams_equal_and_cross_decoded']}; max pixels differing between CPU and GPU images: {worst}")
        return 0 if result["all_streams_equal_and_cross_decoded"] else 1
    engine = ecf_engine.load(args.model)
    quality = args.quality if args.quality is not None or not engine.variable_rate else engine.default_quality
    if quality is not None and not engine.variable_rate:
        raise SystemExit(f"--quality: {args.model} is a fixed-rate model")
    result = roundtrip(engine, files, args.model, quality)
    write_result(args.out or RESULTS / f"roundtrip-{args.model}.json", result)
    exact = sum(r["bit_exact"] for r in result["per_image"])
    print(f"{exact}/{result['images']} images decoded bit-exactly via the CLI "
          f"(encode {ENCODE_THREADS} threads, decode {DECODE_THREADS})")
    return 0 if result["all_bit_exact"] else 1
